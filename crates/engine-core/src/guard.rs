//! What an agent's host checks around each delivery, wherever the agent runs: health
//! probes (messages a supervisor sends, answered by the agent's health hook instead of
//! its handler) and the agent's circuit breaker.

use std::collections::VecDeque;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::{BreakerSpec, LifecycleKind, Message, supervision_ms};

/// The payload format of a health probe. A probe goes to an agent's inbox from
/// [`PROBE_SENDER`]; its host answers it with the agent's health hook and a
/// [`ProbeAnswer`] to the probe's reply topic, and the agent's handler never sees it.
pub const PROBE_FORMAT: &str = "guild/probe";

/// The sender of health probes (a supervisor).
pub const PROBE_SENDER: &str = "guild.supervisor";

/// How an agent answered a health probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeAnswer {
    /// Whether its health hook returned `Ok` in time.
    pub healthy: bool,
    /// Why not, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Whether `message` is a health probe.
pub fn is_probe(message: &Message) -> bool {
    message.payload.format == PROBE_FORMAT && &*message.sender == PROBE_SENDER
}

/// A circuit breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open {
        until: Instant,
    },
    /// One delivery is on trial.
    HalfOpen,
}

/// The circuit breaker of one agent (see [`BreakerSpec`]).
#[derive(Debug)]
pub(crate) struct Breaker {
    spec: BreakerSpec,
    /// When recent failures happened, within the window.
    failures: VecDeque<Instant>,
    state: State,
}

impl Breaker {
    pub(crate) fn new(spec: BreakerSpec) -> Self {
        Self {
            spec,
            failures: VecDeque::new(),
            state: State::Closed,
        }
    }

    /// Whether the next delivery may reach the handler at `now`, and the state change
    /// that deciding made (open to half-open once the cool-down has passed).
    pub(crate) fn admit(&mut self, now: Instant) -> (bool, Option<LifecycleKind>) {
        match self.state {
            State::Closed | State::HalfOpen => (true, None),
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen;
                (true, Some(LifecycleKind::BreakerHalfOpen))
            }
            State::Open { .. } => (false, None),
        }
    }

    /// Records how a delivery the handler got ended, and the state change it made.
    pub(crate) fn record(&mut self, failed: bool, now: Instant) -> Option<LifecycleKind> {
        let window = supervision_ms(self.spec.window_ms);
        let cooldown = supervision_ms(self.spec.cooldown_ms);
        match (self.state, failed) {
            (State::HalfOpen, false) => {
                self.state = State::Closed;
                self.failures.clear();
                Some(LifecycleKind::BreakerClosed)
            }
            (State::HalfOpen, true) => {
                self.state = State::Open {
                    until: now + cooldown,
                };
                Some(LifecycleKind::BreakerOpened {
                    failures: self.failures.len() as u32,
                })
            }
            (_, false) => None,
            (_, true) => {
                self.failures.push_back(now);
                while self
                    .failures
                    .front()
                    .is_some_and(|at| now.duration_since(*at) > window)
                {
                    self.failures.pop_front();
                }
                if self.failures.len() < self.spec.failures as usize {
                    return None;
                }
                self.state = State::Open {
                    until: now + cooldown,
                };
                Some(LifecycleKind::BreakerOpened {
                    failures: self.failures.len() as u32,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerSpec {
            failures: 2,
            window_ms: 1_000,
            cooldown_ms: 500,
        })
    }

    #[test]
    fn opens_after_enough_failures_within_the_window() {
        let mut b = breaker();
        let t0 = Instant::now();
        assert_eq!(b.record(true, t0), None);
        // The first failure has left the window: still one.
        assert_eq!(b.record(true, t0 + Duration::from_secs(2)), None);
        assert_eq!(
            b.record(true, t0 + Duration::from_millis(2_100)),
            Some(LifecycleKind::BreakerOpened { failures: 2 })
        );
        assert_eq!(b.admit(t0 + Duration::from_millis(2_200)), (false, None));
    }

    #[test]
    fn half_open_lets_one_through_and_its_outcome_decides() {
        let mut b = breaker();
        let t0 = Instant::now();
        b.record(true, t0);
        b.record(true, t0);
        let later = t0 + Duration::from_millis(600);
        assert_eq!(b.admit(later), (true, Some(LifecycleKind::BreakerHalfOpen)));
        assert_eq!(
            b.record(true, later),
            Some(LifecycleKind::BreakerOpened { failures: 2 })
        );
        assert_eq!(b.admit(later), (false, None));
        let again = later + Duration::from_millis(600);
        assert_eq!(b.admit(again), (true, Some(LifecycleKind::BreakerHalfOpen)));
        assert_eq!(b.record(false, again), Some(LifecycleKind::BreakerClosed));
        assert_eq!(b.record(true, again), None, "the count starts over");
    }
}
