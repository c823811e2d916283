//! The graph runner's workloads, beside calling the same functions directly in
//! dependency order:
//!
//! - `nodes`: a 10,000-node graph of trivial components (100 layers of 100, each node
//!   adding two nodes of the layer before), with one hook; the runner's own cost per
//!   node is the difference of the two times over 10,000;
//! - `wide`: 64 CPU-bound nodes in one layer between an input and a join; run in
//!   parallel they should use every core.
//!
//! Systems: `graph-parallel` (the runner on a pool engine's workers), `graph` (the
//! runner's sequential path) and `graph-direct` (the baseline).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use graph::{
    BoxError, Component, ComponentRegistry, Declared, ExecutionContext, GraphRunner, GraphSchema,
    Hook, HookData, Inputs, LoadedSchema, NodeContext, NodeInfo, NodeSpec,
};
use serde_json::{Value, json};

use crate::Sample;

/// Nodes of the `nodes` workload.
pub(crate) const NODES: usize = 10_000;
/// Nodes in the layer of the `wide` workload.
pub(crate) const WIDE: usize = 64;
const LAYER: usize = 100;

/// Adds its inputs.
struct Add;

fn add(inputs: impl Iterator<Item = i64>) -> i64 {
    inputs.fold(1, i64::wrapping_add)
}

impl Component for Add {
    async fn run(&self, inputs: Inputs, _ctx: &NodeContext) -> Result<Value, BoxError> {
        Ok(json!(add(inputs.iter().filter_map(|(_, v)| v.as_i64()))))
    }
}

/// Spins for a while, deterministically.
struct Spin;

fn spin(seed: i64) -> i64 {
    let mut x = seed as u64 | 1;
    for _ in 0..5_000_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    (x >> 1) as i64
}

impl Component for Spin {
    async fn run(&self, inputs: Inputs, ctx: &NodeContext) -> Result<Value, BoxError> {
        let seed: i64 = inputs.get("x")?;
        Ok(json!(spin(seed ^ ctx.node.len() as i64)))
    }
}

/// Counts the nodes it sees, as a hook that does a little.
#[derive(Default)]
struct Counting(AtomicU64);

impl Hook for Counting {
    fn after(
        &self,
        _node: &NodeInfo<'_>,
        _output: &Value,
        _took: Duration,
        _data: Option<HookData>,
    ) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn registry() -> ComponentRegistry {
    let mut registry = ComponentRegistry::new();
    registry
        .register("add", Declared::Any, |_| Ok(Add))
        .register("spin", Declared::Any, |_| Ok(Spin));
    registry
}

/// The name of node `i` of layer `layer`.
fn name(layer: usize, i: usize) -> String {
    format!("n{layer}_{i}")
}

/// 100 layers of 100 nodes; a node of layer L > 0 adds nodes i and (i * 7 + 3) % 100
/// of layer L - 1; the first layer adds the input.
fn layered() -> GraphSchema {
    let mut nodes = vec![NodeSpec::input("x")];
    for layer in 0..NODES / LAYER {
        for i in 0..LAYER {
            let mut node = NodeSpec::component(name(layer, i), "add");
            node = if layer == 0 {
                node.needs("a", "x")
            } else {
                node.needs("a", name(layer - 1, i))
                    .needs("b", name(layer - 1, (i * 7 + 3) % LAYER))
            };
            if layer == NODES / LAYER - 1 {
                node = node.target();
            }
            nodes.push(node);
        }
    }
    GraphSchema::new(nodes)
}

fn wide() -> GraphSchema {
    let mut nodes = vec![NodeSpec::input("x")];
    let mut join = NodeSpec::component("join", "add").target();
    for i in 0..WIDE {
        nodes.push(NodeSpec::component(format!("spin{i}"), "spin").needs("x", "x"));
        join = join.needs(format!("s{i}"), format!("spin{i}"));
    }
    nodes.push(join);
    GraphSchema::new(nodes)
}

/// One run of `workload` by `system`.
pub(crate) fn run(system: &str, workload: &str) -> Sample {
    let schema = if workload == "wide" {
        wide()
    } else {
        layered()
    };
    if system == "graph-direct" {
        return direct(workload);
    }
    let pool = (system == "graph-parallel").then(|| engine_pool::PoolEngine::new().expect("pool"));
    let context = match &pool {
        Some(pool) => ExecutionContext::parallel(pool.workers()),
        None => ExecutionContext::sequential(),
    };
    let runner = GraphRunner::create(
        LoadedSchema::built(workload, schema),
        &registry(),
        None,
        context,
        vec![Arc::new(Counting::default())],
    )
    .expect("a valid graph");
    let started = Instant::now();
    let result = runner
        .run(BTreeMap::from([("x".to_owned(), json!(1))]), &[])
        .expect("a run");
    let elapsed = started.elapsed();
    assert!(result.succeeded(), "{:?}", result.failed);
    if let Some(pool) = pool {
        engine_core::ExecutionEngine::shutdown(&pool).expect("shutdown");
    }
    Sample::Elapsed(elapsed)
}

/// The same functions called directly, in dependency order, with the same values.
fn direct(workload: &str) -> Sample {
    let started = Instant::now();
    if workload == "wide" {
        let outputs: Vec<i64> = (0..WIDE)
            .map(|i| spin(1 ^ format!("spin{i}").len() as i64))
            .collect();
        std::hint::black_box(add(outputs.into_iter()));
        return Sample::Elapsed(started.elapsed());
    }
    let mut previous: Vec<Value> = vec![json!(1); LAYER];
    for layer in 0..NODES / LAYER {
        let current: Vec<Value> = (0..LAYER)
            .map(|i| {
                let inputs = if layer == 0 {
                    vec![json!(1)]
                } else {
                    vec![previous[i].clone(), previous[(i * 7 + 3) % LAYER].clone()]
                };
                json!(add(inputs.iter().filter_map(Value::as_i64)))
            })
            .collect();
        previous = current;
    }
    std::hint::black_box(previous);
    Sample::Elapsed(started.elapsed())
}
