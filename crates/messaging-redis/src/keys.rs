//! The key schema: every Redis key the backend reads or writes, named in one place.
//!
//! Under a configurable prefix (default `guild`), each guild (namespace) has
//! `<prefix>:<guild>:topic:<topic>` streams, a `<prefix>:<guild>:topics` set of them,
//! `<prefix>:<guild>:pos:<client>` position hashes and `<prefix>:<guild>:late:<hour>`
//! records of late stores.

/// The key names of one backend instance.
pub(crate) struct Keys {
    pub(crate) prefix: String,
    /// This instance's record as a publisher.
    pub(crate) publisher: String,
}

impl Keys {
    pub(crate) fn stream(&self, namespace: &str, topic: &str) -> String {
        format!("{}:{namespace}:topic:{topic}", self.prefix)
    }

    pub(crate) fn positions(&self, namespace: &str, client: &str) -> String {
        format!("{}:{namespace}:pos:{client}", self.prefix)
    }

    /// The prefix of every key of one guild.
    pub(crate) fn guild(&self, namespace: &str) -> String {
        format!("{}:{namespace}", self.prefix)
    }

    /// The set of a guild's topic streams.
    pub(crate) fn topics(&self, namespace: &str) -> String {
        format!("{}:{namespace}:topics", self.prefix)
    }

    /// Where a guild records the messages of one hour that were stored late.
    pub(crate) fn late(&self, namespace: &str, unix_ms: u64) -> String {
        format!("{}:{namespace}:late:{}", self.prefix, unix_ms / 3_600_000)
    }
}
