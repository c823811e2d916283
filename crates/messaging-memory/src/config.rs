//! Settings of the in-memory backend: how much history each topic retains and how much
//! a detached client may accumulate.

use std::collections::HashMap;

use engine_core::QueueLimit;

/// Retention and queue bounds, applied to each namespace by the backend instance that
/// first uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryConfig {
    /// Messages retained per topic for history queries, unless `topic_retention` says otherwise.
    pub retention: usize,
    /// Per-topic retention, by topic name.
    pub topic_retention: HashMap<String, usize>,
    /// The most deliveries kept for a detached client (one that closed its subscription
    /// and may resume); beyond it the oldest are dropped and counted.
    pub detached_queue_limit: usize,
    /// The queue limit of a subscription that does not set its own.
    pub queue_limit: QueueLimit,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            retention: 10_000,
            topic_retention: HashMap::new(),
            detached_queue_limit: 100_000,
            queue_limit: QueueLimit::default(),
        }
    }
}

impl MemoryConfig {
    /// The retention of `topic`.
    pub fn retention_of(&self, topic: &str) -> usize {
        self.topic_retention
            .get(topic)
            .copied()
            .unwrap_or(self.retention)
    }
}
