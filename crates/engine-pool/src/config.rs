//! The pool's settings: how many workers, which scheduling policy, and the budget after
//! which a busy agent yields its worker. A guild spec sets them in its `[pool]` table.

use engine_core::{RateLimit, Result};
use serde::{Deserialize, Serialize};

use crate::error::PoolError;

/// The most worker threads a pool may have.
pub const MAX_WORKERS: usize = 1024;

/// Settings of a [`PoolEngine`](crate::PoolEngine).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Worker threads; one per core when not set.
    pub workers: Option<usize>,
    /// How ready agents take turns on the workers.
    pub policy: Policy,
    /// Messages a busy agent handles before it yields its worker.
    pub budget: u32,
    /// Milliseconds of handling after which a busy agent yields its worker even within
    /// its message budget (checked between messages).
    pub time_slice_ms: u64,
    /// At most this many handlers run at once on the shared workers; the number of
    /// workers under `priority` and `fair_share` when not set, no cap otherwise.
    pub max_concurrent: Option<usize>,
    /// Under `priority`: a ready agent gains one priority level for each this many
    /// milliseconds it has waited, so nothing starves.
    pub aging_ms: u64,
    /// Under `rate`: the cap of agents that set none of their own.
    pub rate: Option<RateLimit>,
    /// A handler that holds a worker this many milliseconds in one go is logged with
    /// the agent's id and how long.
    pub long_handler_ms: u64,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            workers: None,
            policy: Policy::Fifo,
            budget: 64,
            time_slice_ms: 10,
            max_concurrent: None,
            aging_ms: 100,
            rate: None,
            long_handler_ms: 1000,
        }
    }
}

/// How ready agents take turns on the workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// In the order they became ready.
    #[default]
    Fifo,
    /// The agent whose next message is most urgent first (its own priority when that
    /// is more urgent), aged so that nothing starves.
    Priority,
    /// The busy agent that has had the least handler time, per unit of its `weight`,
    /// first.
    FairShare,
    /// In order, each agent at most its `rate` of messages per second.
    Rate,
}

impl Policy {
    /// The policy's name as a spec writes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fifo => "fifo",
            Self::Priority => "priority",
            Self::FairShare => "fair_share",
            Self::Rate => "rate",
        }
    }
}

impl PoolConfig {
    /// The number of workers: as set, else one per core.
    pub fn worker_count(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }

    /// Refuses settings out of range, naming the setting.
    pub fn check(&self) -> Result<()> {
        match self.problem() {
            Some((setting, why)) => Err(PoolError::BadConfig { setting, why }.into()),
            None => Ok(()),
        }
    }

    /// The first setting out of range, and why.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if let Some(workers) = self.workers
            && !(1..=MAX_WORKERS).contains(&workers)
        {
            return Some((
                "workers",
                format!("{workers} is not within 1..={MAX_WORKERS}"),
            ));
        }
        let at_least_one = [
            ("budget", u64::from(self.budget)),
            ("time_slice_ms", self.time_slice_ms),
            (
                "max_concurrent",
                self.max_concurrent.map_or(1, |n| n as u64),
            ),
            ("aging_ms", self.aging_ms),
            ("long_handler_ms", self.long_handler_ms),
        ];
        if let Some((setting, _)) = at_least_one.iter().find(|(_, value)| *value == 0) {
            return Some((setting, "must be at least 1".into()));
        }
        let rate = self.rate.as_ref()?;
        if self.policy != Policy::Rate {
            return Some((
                "rate",
                format!(
                    "takes effect only under policy = \"rate\", and the policy is {:?}",
                    self.policy.name()
                ),
            ));
        }
        check_rate(rate).err().map(|why| ("rate", why))
    }
}

/// Checks a rate cap: a positive, finite rate and a burst of at least one.
pub fn check_rate(rate: &RateLimit) -> std::result::Result<(), String> {
    if !(rate.per_second.is_finite() && rate.per_second > 0.0) {
        return Err(format!(
            "per_second must be a number above zero, not {}",
            rate.per_second
        ));
    }
    if rate.burst == 0 {
        return Err("burst must be at least 1".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_settings_are_named() {
        let zero_workers = PoolConfig {
            workers: Some(0),
            ..PoolConfig::default()
        };
        let error = zero_workers.check().unwrap_err().to_string();
        assert!(error.contains("workers"), "{error}");
        let stray_rate = PoolConfig {
            rate: Some(RateLimit {
                per_second: 5.0,
                burst: 1,
            }),
            ..PoolConfig::default()
        };
        let error = stray_rate.check().unwrap_err().to_string();
        assert!(error.contains("policy = \"rate\""), "{error}");
        assert!(PoolConfig::default().check().is_ok());
    }
}
