//! What the cluster tests share: the token, a node on a runtime of its own holding its
//! lease, and an engine over a test's Redis.

// Each test binary uses part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use engine_cluster::{ClusterConfig, ClusterEngine, ClusterSpec, Node, NodeOptions, Policy, Token};
use engine_core::ExecutionEngine;

/// The test cluster's token.
pub(crate) const TOKEN: &str = "a-cluster-token-of-some-length";

/// The test cluster's token, parsed.
pub(crate) fn token() -> Token {
    Token::new(TOKEN).unwrap()
}

/// A node serving on a free port of 127.0.0.1, on a runtime of its own, holding its
/// lease in `redis` (labelled `zone=<id>`); it stops when dropped.
pub(crate) struct TestNode {
    pub(crate) address: String,
    _node: Node,
}

impl TestNode {
    /// Starts node `id`, running agents on `engine` with the scenario agents registered.
    pub(crate) fn start(id: &str, redis: &str, engine: Arc<dyn ExecutionEngine>) -> Self {
        Self::offering(id, redis, engine, engine_cluster::machine_capacity())
    }

    /// As [`start`](Self::start), offering `capacity`.
    pub(crate) fn offering(
        id: &str,
        redis: &str,
        engine: Arc<dyn ExecutionEngine>,
        capacity: engine_cluster::Resources,
    ) -> Self {
        let mut options = NodeOptions::new(redis, token());
        options.id = Some(id.to_owned());
        options.labels = BTreeMap::from([("zone".to_owned(), id.to_owned())]);
        options.capacity = capacity;
        options.lease = Duration::from_secs(2);
        let node = Node::start(options, engine, Arc::new(conformance::agents::registry()))
            .expect("the node starts");
        Self {
            address: node.address().to_string(),
            _node: node,
        }
    }
}

/// A cluster engine over the nodes of `redis`.
pub(crate) fn cluster(redis: &str, policy: Policy, selector: &[(&str, &str)]) -> ClusterEngine {
    placing(
        redis,
        ClusterSpec {
            policy,
            selector: selector
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
            nodes: Vec::new(),
        },
    )
}

/// A cluster engine over the nodes of `redis`, placing agents as `placement` says.
pub(crate) fn placing(redis: &str, placement: ClusterSpec) -> ClusterEngine {
    ClusterEngine::new(ClusterConfig {
        redis: redis.to_owned(),
        token: token(),
        tls: None,
        placement,
    })
    .expect("the cluster's Redis answers")
}
