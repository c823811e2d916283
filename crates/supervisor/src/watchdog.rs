//! The watchdog: finds handlers that have run longer than their agent's `watchdog_ms`
//! allows. It samples what every engine reports anyway (whether the agent is busy, and
//! how many deliveries it has taken), so the message path pays nothing for it: an agent
//! seen busy with the same count for longer than its watchdog is stuck. On an engine
//! that can end an agent (`kill`), the agent is killed, which its engine reports as a
//! crash and the supervisor restarts like any other; elsewhere it is reported as stuck,
//! once per stall.

use std::time::{Duration, Instant};

use engine_core::{LifecycleKind, supervision_ms};

use crate::supervisor::{Phase, Shared, State};

/// The shortest and longest time between two looks.
const LOOK_MIN: Duration = Duration::from_millis(10);
const LOOK_MAX: Duration = Duration::from_secs(1);

/// What the watchdog last saw of one agent.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Sighting {
    /// Busy with this many deliveries taken, first seen so then; `None` while idle.
    busy: Option<(u64, Instant)>,
    /// This stall has been reported.
    reported: bool,
}

impl Sighting {
    /// Records a look at `now`; how long the agent has been stuck on one delivery.
    fn look(&mut self, busy: bool, taken: u64, now: Instant) -> Option<Duration> {
        match self.busy {
            Some((seen, since)) if busy && seen == taken => Some(now.duration_since(since)),
            _ => {
                self.busy = busy.then_some((taken, now));
                self.reported = false;
                None
            }
        }
    }
}

/// When the watchdog next looks, if any running agent has one: a quarter of the
/// shortest watchdog, within [`LOOK_MIN`, `LOOK_MAX`].
pub(crate) fn next_look(state: &State, now: Instant) -> Option<Instant> {
    state
        .children
        .values()
        .filter(|child| matches!(child.phase, Phase::Running(_)))
        .filter_map(|child| child.spec.watchdog_ms)
        .min()
        .map(|ms| now + (supervision_ms(ms) / 4).clamp(LOOK_MIN, LOOK_MAX))
}

/// Looks at every running agent that has a watchdog.
pub(crate) fn check(shared: &Shared, now: Instant) {
    let watched: Vec<_> = {
        let state = shared.lock();
        state
            .children
            .iter()
            .filter(|(_, child)| matches!(child.phase, Phase::Running(_)))
            .filter_map(|(id, child)| {
                let limit = supervision_ms(child.spec.watchdog_ms?);
                Some((id.clone(), child.engine.clone(), limit))
            })
            .collect()
    };
    let guild = shared.context_namespace();
    for (id, engine, limit) in watched {
        let info = engine.agent_info(guild, &id);
        let (busy, taken) = info.map_or((false, 0), |info| (info.busy, info.messages_in));
        let stuck = {
            let mut state = shared.lock();
            let Some(child) = state.children.get_mut(&id) else {
                continue;
            };
            let sighting = &mut child.sighting;
            match sighting.look(busy, taken, now) {
                Some(busy_for) if busy_for > limit && !sighting.reported => {
                    sighting.reported = true;
                    busy_for
                }
                _ => continue,
            }
        };
        let busy_ms = stuck.as_millis() as u64;
        tracing::warn!(agent = %id, busy_ms, "a handler has run past the agent's watchdog");
        shared.emit(&id, engine.name(), LifecycleKind::Stuck { busy_ms });
        if engine.capabilities().kill {
            let reason = format!(
                "its handler ran {busy_ms} ms, past its watchdog of {} ms",
                limit.as_millis()
            );
            if let Err(error) = engine.kill_agent(guild, &id, &reason) {
                tracing::warn!(agent = %id, %error, "the watchdog could not kill a stuck agent");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuck_means_busy_on_the_same_delivery_since_the_first_sighting() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut sighting = Sighting::default();
        assert_eq!(sighting.look(true, 5, at(0)), None);
        assert_eq!(
            sighting.look(true, 5, at(40)),
            Some(Duration::from_millis(40))
        );
        // It moved on: the count starts over.
        assert_eq!(sighting.look(true, 6, at(50)), None);
        assert_eq!(
            sighting.look(true, 6, at(80)),
            Some(Duration::from_millis(30))
        );
        assert_eq!(sighting.look(false, 6, at(90)), None);
        assert_eq!(sighting.look(true, 6, at(95)), None);
    }
}
