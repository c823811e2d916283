//! Hooks: code that runs before and after each node, on its failure, and when its
//! output comes from the cache; a hook may hand data from before a node to after it.

use std::any::Any;
use std::time::Duration;

use serde_json::Value;

use crate::component::Inputs;

/// What a hook sees of a node.
#[derive(Debug, Clone, Copy)]
pub struct NodeInfo<'a> {
    /// The node's name.
    pub node: &'a str,
    /// Its component type.
    pub component: &'a str,
    /// Its config.
    pub config: &'a Value,
    /// Its fingerprint (of its component type, config and inputs' fingerprints).
    pub fingerprint: &'a str,
}

/// What a hook hands from before a node to after it.
pub type HookData = Box<dyn Any + Send>;

/// Runs around each node. Hooks run on the thread that runs the node, in the order
/// they were given; they should be quick.
pub trait Hook: Send + Sync {
    /// Before the node's component runs; what it returns comes back to
    /// [`after`](Self::after) or [`failed`](Self::failed).
    fn before(&self, node: &NodeInfo<'_>, inputs: &Inputs) -> Option<HookData> {
        let _ = (node, inputs);
        None
    }

    /// After the component returned `output`, which took `took`.
    fn after(&self, node: &NodeInfo<'_>, output: &Value, took: Duration, data: Option<HookData>) {
        let _ = (node, output, took, data);
    }

    /// After the component failed (or panicked) with `error`.
    fn failed(&self, node: &NodeInfo<'_>, error: &str, took: Duration, data: Option<HookData>) {
        let _ = (node, error, took, data);
    }

    /// Instead of the others, when the node's output was taken from the cache and its
    /// component did not run.
    fn cached(&self, node: &NodeInfo<'_>, output: &Value) {
        let _ = (node, output);
    }
}

/// Records each node as a tracing span (`graph node`, with the node, its component,
/// and how long it took), and a failure as an error event inside it.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingHook;

impl Hook for TracingHook {
    fn before(&self, node: &NodeInfo<'_>, _inputs: &Inputs) -> Option<HookData> {
        let span = tracing::info_span!(
            "graph node",
            node = node.node,
            component = node.component,
            took_us = tracing::field::Empty,
            cached = false,
        );
        Some(Box::new(span))
    }

    fn after(&self, _node: &NodeInfo<'_>, _output: &Value, took: Duration, data: Option<HookData>) {
        if let Some(span) = data.and_then(|data| data.downcast::<tracing::Span>().ok()) {
            span.record("took_us", took.as_micros() as u64);
        }
    }

    fn failed(&self, node: &NodeInfo<'_>, error: &str, took: Duration, data: Option<HookData>) {
        if let Some(span) = data.and_then(|data| data.downcast::<tracing::Span>().ok()) {
            span.record("took_us", took.as_micros() as u64);
            span.in_scope(|| tracing::error!(node = node.node, error, "the node failed"));
        }
    }

    fn cached(&self, node: &NodeInfo<'_>, _output: &Value) {
        let _span = tracing::info_span!(
            "graph node",
            node = node.node,
            component = node.component,
            cached = true
        )
        .entered();
    }
}
