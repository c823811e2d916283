//! Where an agent's time goes: how long its handler took and how long each delivery
//! waited in the queue first, as histograms with fixed buckets.
//!
//! Recording reads the clock three times per message, so hosts record only for guilds
//! whose [`GuildContext::timing`](crate::GuildContext::timing) is on (the `guild`
//! facade turns it on when metrics are served). Buckets are counted with relaxed
//! atomics; a snapshot is plain data that crosses process boundaries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The upper bounds of the buckets, in seconds; one more bucket counts the rest.
pub const BUCKETS_SECONDS: [f64; 19] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Bucket upper bounds in nanoseconds, for recording without floating point.
const BUCKETS_NS: [u64; 19] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// A histogram of durations, updated concurrently.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS_SECONDS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Counts one duration.
    pub fn record(&self, duration: Duration) {
        let ns = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKETS_NS.partition_point(|&bound| bound < ns);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// What it holds now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: self
                .counts
                .iter()
                .map(|count| count.load(Ordering::Relaxed))
                .collect(),
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
        }
    }

    /// Makes it hold `snapshot` (for an engine that mirrors a histogram kept elsewhere,
    /// such as in an agent process). Buckets the snapshot lacks read zero.
    pub fn set(&self, snapshot: &HistogramSnapshot) {
        for (index, count) in self.counts.iter().enumerate() {
            count.store(
                snapshot.counts.get(index).copied().unwrap_or(0),
                Ordering::Relaxed,
            );
        }
        self.sum_ns.store(snapshot.sum_ns, Ordering::Relaxed);
    }
}

/// A histogram's contents at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistogramSnapshot {
    /// How many durations fell in each bucket of [`BUCKETS_SECONDS`] (not cumulative),
    /// and last, how many were longer than every bound.
    pub counts: Vec<u64>,
    /// The sum of every duration counted, in nanoseconds.
    pub sum_ns: u64,
}

impl HistogramSnapshot {
    /// How many durations were counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The sum of every duration counted, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_ns as f64 / 1e9
    }

    /// `(upper bound in seconds, count)` per bucket, the last bound infinite.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        BUCKETS_SECONDS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts.iter().copied().chain(std::iter::repeat(0)))
            .collect()
    }
}

/// The two histograms a host keeps per agent.
#[derive(Debug, Default)]
pub struct Timings {
    /// How long the handler ran per delivery.
    pub handling: Histogram,
    /// How long each delivery waited between being published and being handed to the
    /// handler (millisecond resolution: a message's timestamp is in milliseconds).
    pub waiting: Histogram,
}

/// Snapshots of [`Timings`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimingsSnapshot {
    /// See [`Timings::handling`].
    pub handling: HistogramSnapshot,
    /// See [`Timings::waiting`].
    pub waiting: HistogramSnapshot,
}

impl Timings {
    /// What they hold now.
    pub fn snapshot(&self) -> TimingsSnapshot {
        TimingsSnapshot {
            handling: self.handling.snapshot(),
            waiting: self.waiting.snapshot(),
        }
    }

    /// Makes them hold `snapshot`.
    pub fn set(&self, snapshot: &TimingsSnapshot) {
        self.handling.set(&snapshot.handling);
        self.waiting.set(&snapshot.waiting);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_the_first_bucket_whose_bound_holds_them() {
        let histogram = Histogram::default();
        histogram.record(Duration::from_micros(10)); // on the bound: first bucket
        histogram.record(Duration::from_micros(11));
        histogram.record(Duration::from_millis(3));
        histogram.record(Duration::from_secs(60));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count(), 4);
        assert_eq!(snapshot.counts[0], 1);
        assert_eq!(snapshot.counts[1], 1);
        assert_eq!(snapshot.counts[8], 1); // 2.5 ms < 3 ms <= 5 ms
        assert_eq!(snapshot.counts[19], 1);
        let buckets = snapshot.buckets();
        assert_eq!(buckets.len(), 20);
        assert_eq!(buckets[8], (0.005, 1));
        assert_eq!(buckets[19], (f64::INFINITY, 1));
        assert_eq!(snapshot.sum_ns, 60_003_021_000);
    }

    #[test]
    fn a_snapshot_set_elsewhere_reads_back() {
        let source = Histogram::default();
        source.record(Duration::from_millis(1));
        let mirror = Histogram::default();
        mirror.set(&source.snapshot());
        assert_eq!(mirror.snapshot(), source.snapshot());
        assert_eq!(mirror.snapshot().sum_ns, 1_000_000);
    }
}
