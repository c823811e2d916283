//! Supervision settings that travel with an agent's spec: when a supervisor restarts
//! it, how long it waits first, how its health is probed and when its circuit breaker
//! opens. The supervisor (crates/supervisor) acts on the first two; the agent's host
//! enforces the last two wherever the agent runs, in whichever process.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// When a supervisor restarts an agent that ended (Erlang/OTP's restart types).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartPolicy {
    /// Whenever it ends on its own: crashed, killed by a limit, or exited.
    #[serde(alias = "always")]
    Permanent,
    /// Only when it crashed or was killed by a limit; an exit is final.
    #[default]
    #[serde(alias = "on_failure")]
    Transient,
    /// Never: its end is reported and final.
    #[serde(alias = "never")]
    Temporary,
}

impl RestartPolicy {
    /// Whether an agent that ended this way (`failed`: crashed or killed, rather than
    /// exited) is restarted under this policy.
    pub fn restarts(self, failed: bool) -> bool {
        match self {
            Self::Permanent => true,
            Self::Transient => failed,
            Self::Temporary => false,
        }
    }
}

/// How the delay before a restart grows with consecutive failures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackoffKind {
    /// `initial_ms` every time.
    Fixed,
    /// `initial_ms` times the attempt number.
    Linear,
    /// `initial_ms` doubled on each attempt.
    #[default]
    Exponential,
}

/// The wait before a restart (Akka's restart-with-backoff): grows with each restart
/// in a row, never past `max_ms`, spread by `jitter`, and starts over once the agent has
/// run cleanly for `reset_after_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// How the delay grows.
    #[serde(default)]
    pub kind: BackoffKind,
    /// The first delay, in milliseconds (0: restart at once).
    #[serde(default = "default_initial_ms")]
    pub initial_ms: u64,
    /// The longest delay, in milliseconds.
    #[serde(default = "default_max_ms")]
    pub max_ms: u64,
    /// A fraction in `[0, 1]`: each delay is moved by up to this share of itself, at
    /// random, so agents that failed together do not restart together.
    #[serde(default)]
    pub jitter: f64,
    /// After running this long without ending, the next failure counts as the first.
    #[serde(default = "default_reset_after_ms")]
    pub reset_after_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            kind: BackoffKind::default(),
            initial_ms: default_initial_ms(),
            max_ms: default_max_ms(),
            jitter: 0.0,
            reset_after_ms: default_reset_after_ms(),
        }
    }
}

impl Backoff {
    /// No wait at all.
    pub fn none() -> Self {
        Self {
            initial_ms: 0,
            ..Self::default()
        }
    }

    /// The delay before restart number `attempt` (1 for the first in a row), before
    /// jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let attempt = attempt.max(1);
        let millis = match self.kind {
            BackoffKind::Fixed => self.initial_ms,
            BackoffKind::Linear => self.initial_ms.saturating_mul(u64::from(attempt)),
            BackoffKind::Exponential => self
                .initial_ms
                .saturating_mul(1u64.checked_shl(attempt - 1).unwrap_or(u64::MAX)),
        };
        supervision_ms(millis.min(self.max_ms))
    }

    /// The delay before restart number `attempt`, with jitter applied from `unit`, a
    /// number in `[0, 1)` (the caller's randomness): never negative, never over the cap.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let base = self.base_delay(attempt).as_secs_f64();
        // A NaN (settings made in code are not checked) spreads nothing.
        let share = |x: f64| if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) };
        let spread = base * share(self.jitter) * (2.0 * share(unit) - 1.0);
        let cap = supervision_ms(self.max_ms).as_secs_f64();
        Duration::from_secs_f64((base + spread).clamp(0.0, cap))
    }

    /// What is wrong with these settings, if anything, as `(field, problem)`.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if !(0.0..=1.0).contains(&self.jitter) {
            return Some(("jitter", format!("{} is not between 0 and 1", self.jitter)));
        }
        if self.max_ms < self.initial_ms {
            return Some((
                "max_ms",
                format!(
                    "{} is less than initial_ms ({}): the cap must allow the first delay",
                    self.max_ms, self.initial_ms
                ),
            ));
        }
        if self.max_ms > MAX_SUPERVISION_MS {
            return Some(("max_ms", too_long(self.max_ms)));
        }
        if self.reset_after_ms > MAX_SUPERVISION_MS {
            return Some(("reset_after_ms", too_long(self.reset_after_ms)));
        }
        None
    }
}

/// The randomness behind backoff jitter: numbers in `[0, 1)` from a xorshift generator
/// seeded from the process's hash seed, so processes that fail together spread apart.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Default for Jitter {
    fn default() -> Self {
        use std::hash::{BuildHasher, RandomState};
        Self(RandomState::new().hash_one(std::time::Instant::now()) | 1)
    }
}

impl Jitter {
    /// The next number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The longest wait any supervision setting accepts, in milliseconds (one day).
pub const MAX_SUPERVISION_MS: u64 = 24 * 60 * 60 * 1000;

/// A supervision setting in milliseconds as a duration, never longer than
/// [`MAX_SUPERVISION_MS`]: specs are checked against that bound, and settings made in
/// code are held to it here, so no deadline computed from one can overflow.
pub fn supervision_ms(millis: u64) -> Duration {
    Duration::from_millis(millis.min(MAX_SUPERVISION_MS))
}

fn too_long(millis: u64) -> String {
    format!("{millis} ms is longer than a day ({MAX_SUPERVISION_MS} ms)")
}

/// How an agent's health hook is probed. A probe that fails or takes longer than
/// `timeout_ms` counts as a failure; `failures` in a row crash the agent (reason
/// `unhealthy`), which a supervisor then restarts. The first probe runs right after
/// the start hook, before the agent counts as ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// How often, in milliseconds.
    #[serde(default = "default_probe_interval_ms")]
    pub interval_ms: u64,
    /// How long one probe may take, in milliseconds.
    #[serde(default = "default_probe_timeout_ms")]
    pub timeout_ms: u64,
    /// Failed probes in a row that crash the agent.
    #[serde(default = "default_probe_failures")]
    pub failures: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            interval_ms: default_probe_interval_ms(),
            timeout_ms: default_probe_timeout_ms(),
            failures: default_probe_failures(),
        }
    }
}

impl HealthCheck {
    /// What is wrong with these settings, if anything, as `(field, problem)`.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        positive_within_a_day("interval_ms", self.interval_ms)
            .or_else(|| positive_within_a_day("timeout_ms", self.timeout_ms))
            .or_else(|| (self.failures == 0).then(|| ("failures", "must be at least 1".into())))
    }
}

/// A circuit breaker on an agent's handler: after `failures` failed deliveries within
/// `window_ms` it opens, and deliveries are dead-lettered (kind `circuit_open`) without
/// reaching the handler; after `cooldown_ms` one delivery goes through (half-open), and
/// its outcome closes the breaker or opens it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSpec {
    /// Failed deliveries within the window that open it.
    #[serde(default = "default_breaker_failures")]
    pub failures: u32,
    /// The window, in milliseconds.
    #[serde(default = "default_breaker_window_ms")]
    pub window_ms: u64,
    /// How long it stays open before letting one delivery try, in milliseconds.
    #[serde(default = "default_breaker_cooldown_ms")]
    pub cooldown_ms: u64,
}

impl Default for BreakerSpec {
    fn default() -> Self {
        Self {
            failures: default_breaker_failures(),
            window_ms: default_breaker_window_ms(),
            cooldown_ms: default_breaker_cooldown_ms(),
        }
    }
}

impl BreakerSpec {
    /// What is wrong with these settings, if anything, as `(field, problem)`.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        (self.failures == 0)
            .then(|| ("failures", "must be at least 1".to_owned()))
            .or_else(|| positive_within_a_day("window_ms", self.window_ms))
            .or_else(|| positive_within_a_day("cooldown_ms", self.cooldown_ms))
    }
}

fn positive_within_a_day(field: &'static str, millis: u64) -> Option<(&'static str, String)> {
    if millis == 0 {
        Some((field, "must be at least 1".to_owned()))
    } else if millis > MAX_SUPERVISION_MS {
        Some((field, too_long(millis)))
    } else {
        None
    }
}

fn default_initial_ms() -> u64 {
    100
}
fn default_max_ms() -> u64 {
    10_000
}
fn default_reset_after_ms() -> u64 {
    30_000
}
fn default_probe_interval_ms() -> u64 {
    5_000
}
fn default_probe_timeout_ms() -> u64 {
    1_000
}
fn default_probe_failures() -> u32 {
    3
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_window_ms() -> u64 {
    10_000
}
fn default_breaker_cooldown_ms() -> u64 {
    5_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff(kind: BackoffKind) -> Backoff {
        Backoff {
            kind,
            initial_ms: 100,
            max_ms: 1_000,
            jitter: 0.0,
            reset_after_ms: 0,
        }
    }

    #[test]
    fn delays_grow_by_kind_and_stop_at_the_cap() {
        let ms = |b: Backoff, n| b.base_delay(n).as_millis();
        let fixed = backoff(BackoffKind::Fixed);
        assert_eq!([1, 2, 5].map(|n| ms(fixed, n)), [100, 100, 100]);
        let linear = backoff(BackoffKind::Linear);
        assert_eq!([1, 2, 5, 20].map(|n| ms(linear, n)), [100, 200, 500, 1000]);
        let exp = backoff(BackoffKind::Exponential);
        assert_eq!(
            [1, 2, 3, 4, 5].map(|n| ms(exp, n)),
            [100, 200, 400, 800, 1000]
        );
        // Far past 64 doublings, still the cap rather than an overflow.
        assert_eq!(ms(exp, 200), 1000);
    }

    #[test]
    fn jitter_spreads_within_its_share_and_the_cap() {
        let b = Backoff {
            jitter: 0.5,
            ..backoff(BackoffKind::Fixed)
        };
        assert_eq!(b.delay(1, 0.0).as_millis(), 50);
        assert_eq!(b.delay(1, 0.5).as_millis(), 100);
        assert_eq!(b.delay(1, 0.999_999).as_millis(), 149);
        let at_cap = Backoff {
            jitter: 1.0,
            initial_ms: 1_000,
            ..b
        };
        assert!(at_cap.delay(1, 0.99) <= Duration::from_secs(1));
        // Settings no spec would pass, made in code: no panic, no overflow.
        let wild = Backoff {
            jitter: f64::NAN,
            initial_ms: u64::MAX,
            max_ms: u64::MAX,
            ..b
        };
        assert_eq!(wild.delay(70, f64::NAN), supervision_ms(u64::MAX));
    }

    #[test]
    fn jitter_units_are_in_range_and_spread() {
        let mut jitter = Jitter::default();
        let draws: Vec<f64> = (0..10_000).map(|_| jitter.unit()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        let low = draws.iter().filter(|u| **u < 0.5).count();
        assert!(
            (4_000..6_000).contains(&low),
            "{low} of 10000 below one half"
        );
    }

    #[test]
    fn old_names_of_the_policies_still_read() {
        for (text, policy) in [
            ("\"always\"", RestartPolicy::Permanent),
            ("\"on_failure\"", RestartPolicy::Transient),
            ("\"never\"", RestartPolicy::Temporary),
            ("\"permanent\"", RestartPolicy::Permanent),
        ] {
            assert_eq!(serde_json::from_str::<RestartPolicy>(text).unwrap(), policy);
        }
        assert!(!RestartPolicy::Transient.restarts(false));
        assert!(RestartPolicy::Permanent.restarts(false));
    }

    #[test]
    fn settings_that_cannot_work_are_named() {
        let bad = Backoff {
            jitter: 2.0,
            ..Backoff::default()
        };
        assert_eq!(bad.problem().unwrap().0, "jitter");
        let zero = HealthCheck {
            failures: 0,
            ..HealthCheck::default()
        };
        assert_eq!(zero.problem().unwrap().0, "failures");
        assert!(BreakerSpec::default().problem().is_none());
    }
}
