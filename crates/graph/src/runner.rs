//! `GraphRunner`: runs what a run's targets need of a graph, in dependency order,
//! independent nodes at the same time (or one at a time on the caller's thread), with
//! hooks around each node and a fingerprint cache in the model storage.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use serde_json::Value;

use crate::component::{BoxFuture, ComponentRegistry, DynComponent, Inputs, NodeContext};
use crate::error::{GraphError, GraphErrors};
use crate::hooks::{Hook, NodeInfo};
use crate::schema::LoadedSchema;
use crate::storage::{Fingerprint, ModelStorage};

/// Where a run's nodes run.
#[derive(Debug, Clone)]
pub enum Execution {
    /// Independent nodes at the same time, each a task on these workers (a pool
    /// engine's, from `PoolEngine::workers`, or any multi-threaded tokio runtime's).
    /// `run` must be called from outside them.
    Parallel(tokio::runtime::Handle),
    /// One node at a time on the caller's thread, the earliest ready node in schema
    /// order first: the same order on every run.
    Sequential,
}

/// How the runner runs: where, and under which model id.
#[derive(Debug, Clone)]
pub struct ExecutionContext {
    /// Where nodes run.
    pub execution: Execution,
    /// A name for what the runs produce, given to components and written into
    /// archives.
    pub model_id: String,
    /// Whether a node whose fingerprint has an output in the model storage is taken
    /// from it rather than run (needs a storage).
    pub cache: bool,
}

impl ExecutionContext {
    /// Runs on the caller's thread, caching when there is a storage.
    pub fn sequential() -> Self {
        Self {
            execution: Execution::Sequential,
            model_id: String::new(),
            cache: true,
        }
    }

    /// Runs independent nodes at the same time on `workers`, caching when there is a
    /// storage.
    pub fn parallel(workers: tokio::runtime::Handle) -> Self {
        Self {
            execution: Execution::Parallel(workers),
            ..Self::sequential()
        }
    }
}

/// A node that failed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFailure {
    /// The node.
    pub node: String,
    /// Its component's error, or its panic's text.
    pub error: String,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunResult {
    /// The targets' outputs (of those computed).
    pub outputs: BTreeMap<String, Arc<Value>>,
    /// The component nodes that completed, in the order they did, whether they ran or
    /// came from the cache.
    pub completed: Vec<String>,
    /// Those of them taken from the cache.
    pub cached: Vec<String>,
    /// The nodes that failed.
    pub failed: Vec<NodeFailure>,
    /// The nodes that did not run because a node they need failed.
    pub skipped: Vec<String>,
    /// Each computed node's fingerprint (when the runner caches).
    pub fingerprints: BTreeMap<String, String>,
}

impl RunResult {
    /// Whether every node the targets need completed.
    pub fn succeeded(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty()
    }

    /// Target `name`'s output.
    pub fn output(&self, name: &str) -> Option<&Value> {
        self.outputs.get(name).map(|value| &**value)
    }
}

/// One node, ready to run.
struct Compiled {
    name: String,
    component_name: String,
    config: Value,
    /// The canonical form of the config, fingerprinted with each run's inputs.
    config_print: String,
    component: Option<Arc<dyn DynComponent>>,
    /// (input name, upstream node) per input.
    needs: Vec<(String, usize)>,
    dependents: Vec<usize>,
    input: bool,
    cache: bool,
    target: bool,
}

/// Runs a graph; see the module docs.
pub struct GraphRunner {
    loaded: LoadedSchema,
    nodes: Arc<Vec<Compiled>>,
    /// Each node's place in `nodes`, by name.
    index: std::collections::HashMap<String, usize>,
    hooks: Arc<Vec<Arc<dyn Hook>>>,
    storage: Option<ModelStorage>,
    context: ExecutionContext,
    /// Drives the sequential path's futures (timers and IO included).
    local: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for GraphRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphRunner")
            .field("file", &self.loaded.file)
            .field("nodes", &self.nodes.len())
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

impl GraphRunner {
    /// Checks `schema` against `registry` (every problem, with its line) and builds
    /// each node's component from its config.
    pub fn create(
        schema: LoadedSchema,
        registry: &ComponentRegistry,
        storage: Option<ModelStorage>,
        context: ExecutionContext,
        hooks: Vec<Arc<dyn Hook>>,
    ) -> Result<Self, GraphErrors> {
        crate::validate::check(&schema, registry)?;
        let index: BTreeMap<&str, usize> = schema
            .schema
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| (node.name.as_str(), i))
            .collect();
        let mut errors = Vec::new();
        let mut nodes: Vec<Compiled> = Vec::with_capacity(schema.schema.nodes.len());
        for spec in &schema.schema.nodes {
            let component = match (&spec.component, spec.input) {
                (Some(name), false) => {
                    let registered = registry.get(name).expect("checked above");
                    match (registered.build)(&spec.config) {
                        Ok(component) => Some(component),
                        Err(error) => {
                            errors.push(schema.error(
                                &spec.name,
                                format!("component {name:?} refused its config: {error}"),
                            ));
                            None
                        }
                    }
                }
                _ => None,
            };
            nodes.push(Compiled {
                name: spec.name.clone(),
                component_name: spec.component.clone().unwrap_or_default(),
                config_print: Fingerprint::new("config").value(&spec.config).finish(),
                config: spec.config.clone(),
                component,
                needs: spec
                    .needs
                    .iter()
                    .map(|(input, from)| (input.clone(), index[from.as_str()]))
                    .collect(),
                dependents: Vec::new(),
                input: spec.input,
                cache: spec.cache,
                target: spec.target,
            });
        }
        if !errors.is_empty() {
            return Err(GraphErrors(errors));
        }
        for i in 0..nodes.len() {
            for (_, from) in nodes[i].needs.clone() {
                if !nodes[from].dependents.contains(&i) {
                    nodes[from].dependents.push(i);
                }
            }
        }
        let local = match context.execution {
            Execution::Sequential => Some(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| {
                        GraphErrors(vec![GraphError {
                            file: schema.file.display().to_string(),
                            line: None,
                            node: String::new(),
                            message: format!("cannot start a runtime for the nodes: {e}"),
                        }])
                    })?,
            ),
            Execution::Parallel(_) => None,
        };
        let index = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| (node.name.clone(), i))
            .collect();
        Ok(Self {
            loaded: schema,
            nodes: Arc::new(nodes),
            index,
            hooks: Arc::new(hooks),
            storage,
            context,
            local,
        })
    }

    /// The schema it runs.
    pub fn schema(&self) -> &LoadedSchema {
        &self.loaded
    }

    /// The model storage, if it has one.
    pub fn storage(&self) -> Option<&ModelStorage> {
        self.storage.as_ref()
    }

    /// Runs what `targets` need (the default targets when empty), with `inputs` as the
    /// values of input nodes, and answers what happened. Problems with the inputs or
    /// targets are refused before anything runs; a node's failure is in the result.
    pub fn run(
        &self,
        inputs: BTreeMap<String, Value>,
        targets: &[String],
    ) -> Result<RunResult, GraphErrors> {
        let Plan {
            needed,
            given,
            targets,
        } = self.plan(inputs, targets)?;
        let caching = self.context.cache && self.storage.is_some();
        let mut state = State::new(&self.nodes, &needed, caching);
        for (i, value) in given {
            state.provide(&self.nodes, i, value);
        }
        let shared = Arc::new(Shared {
            nodes: self.nodes.clone(),
            hooks: self.hooks.clone(),
            storage: self.storage.clone().filter(|_| caching),
            model_id: self.context.model_id.clone(),
            state: Mutex::new(state),
        });
        let ready = lock(&shared.state).take_ready();
        match &self.context.execution {
            Execution::Sequential => {
                let local = self.local.as_ref().expect("made for the sequential path");
                let mut queue: BinaryHeap<Reverse<usize>> =
                    ready.into_iter().map(Reverse).collect();
                while let Some(Reverse(i)) = queue.pop() {
                    let job = lock(&shared.state).job(&shared.nodes, i);
                    let outcome = local.block_on(shared.execute(job));
                    let next = lock(&shared.state).complete(&shared.nodes, i, outcome);
                    queue.extend(next.into_iter().map(Reverse));
                }
            }
            Execution::Parallel(workers) => {
                let (done, finished) = std::sync::mpsc::channel();
                {
                    let mut state = lock(&shared.state);
                    state.running = ready.len();
                    state.done = Some(done);
                    if ready.is_empty() {
                        state.finish();
                    }
                }
                for i in ready {
                    workers.spawn(shared.clone().drive(i));
                }
                // Every path through the tasks ends by sending; a closed channel means
                // the runtime dropped them, which `state.done` being gone tells apart.
                let _ = finished.recv();
            }
        }
        let state = std::mem::take(&mut *lock(&shared.state));
        Ok(state.into_result(&self.nodes, &targets))
    }

    /// The nodes `targets` need and the input nodes' values, or every problem with
    /// them.
    fn plan(
        &self,
        inputs: BTreeMap<String, Value>,
        targets: &[String],
    ) -> Result<Plan, GraphErrors> {
        let find = |name: &str| self.index.get(name).copied();
        let error = |node: &str, message: String| {
            if find(node).is_some() {
                self.loaded.error(node, message)
            } else {
                GraphError {
                    file: self.loaded.file.display().to_string(),
                    line: None,
                    node: node.to_owned(),
                    message,
                }
            }
        };
        let mut errors = Vec::new();
        let defaults: Vec<String>;
        let targets = if targets.is_empty() {
            defaults = self
                .nodes
                .iter()
                .filter(|node| node.target)
                .map(|node| node.name.clone())
                .collect();
            if defaults.is_empty() {
                errors.push(error(
                    "",
                    "no targets: name some, or mark nodes `target = true`".into(),
                ));
            }
            &defaults[..]
        } else {
            targets
        };
        let mut needed = vec![false; self.nodes.len()];
        let mut wanted = Vec::new();
        for target in targets {
            match find(target) {
                Some(i) => wanted.push(i),
                None => errors.push(error(target, "a target that is not in the graph".into())),
            }
        }
        let mut stack = wanted.clone();
        while let Some(i) = stack.pop() {
            if !std::mem::replace(&mut needed[i], true) {
                stack.extend(self.nodes[i].needs.iter().map(|(_, from)| *from));
            }
        }
        let mut given = Vec::new();
        for (name, value) in inputs {
            match find(&name) {
                None => errors.push(error(
                    &name,
                    "an input given for no node of the graph".into(),
                )),
                Some(i) if !self.nodes[i].input => errors.push(error(
                    &name,
                    "an input given for a node that is not an input node".into(),
                )),
                Some(i) if !needed[i] => errors.push(error(
                    &name,
                    "an input given that no node the targets need reads".into(),
                )),
                Some(i) => given.push((i, value)),
            }
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if needed[i] && node.input && !given.iter().any(|(g, _)| *g == i) {
                let readers: Vec<&str> = node
                    .dependents
                    .iter()
                    .filter(|d| needed[**d])
                    .map(|d| self.nodes[*d].name.as_str())
                    .collect();
                errors.push(error(
                    &node.name,
                    format!(
                        "an input node the targets need (through {}) but not given",
                        readers.join(", ")
                    ),
                ));
            }
        }
        if errors.is_empty() {
            Ok(Plan {
                needed,
                given,
                targets: wanted,
            })
        } else {
            Err(GraphErrors(errors))
        }
    }
}

/// What a run computes: the nodes its targets need, the input nodes' values, and the
/// targets.
struct Plan {
    needed: Vec<bool>,
    given: Vec<(usize, Value)>,
    targets: Vec<usize>,
}

/// What the nodes of a run share.
struct Shared {
    nodes: Arc<Vec<Compiled>>,
    hooks: Arc<Vec<Arc<dyn Hook>>>,
    /// Where outputs are cached, when the run caches.
    storage: Option<ModelStorage>,
    model_id: String,
    state: Mutex<State>,
}

/// A node's inputs and fingerprint, taken when it became ready.
struct Job {
    index: usize,
    inputs: Inputs,
    fingerprint: String,
}

/// How a node ended.
enum Outcome {
    Ran(Arc<Value>),
    Cached(Arc<Value>),
    Failed(String),
}

impl Shared {
    /// Runs a node on a worker, and then, while they become ready one at a time, the
    /// nodes after it, spawning the rest.
    fn drive(self: Arc<Self>, first: usize) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(self.drive_from(first))
    }

    async fn drive_from(self: Arc<Self>, first: usize) {
        let mut next = Some(first);
        while let Some(i) = next.take() {
            let job = lock(&self.state).job(&self.nodes, i);
            let outcome = self.execute(job).await;
            let mut state = lock(&self.state);
            let mut ready = state.complete(&self.nodes, i, outcome).into_iter();
            next = ready.next();
            let spawned: Vec<usize> = ready.collect();
            state.running += spawned.len();
            if next.is_none() {
                state.running -= 1;
                if state.running == 0 {
                    state.finish();
                }
            }
            drop(state);
            for i in spawned {
                tokio::spawn(self.clone().drive(i));
            }
        }
    }

    /// Takes the node's output from the cache, or runs its component between the
    /// hooks (a panic counts as its failure).
    async fn execute(&self, job: Job) -> Outcome {
        let node = &self.nodes[job.index];
        let info = NodeInfo {
            node: &node.name,
            component: &node.component_name,
            config: &node.config,
            fingerprint: &job.fingerprint,
        };
        let cacheable = node.cache && !job.fingerprint.is_empty();
        if cacheable
            && let Some(storage) = &self.storage
            && let Some(output) = storage.cached(&job.fingerprint)
        {
            for hook in self.hooks.iter() {
                hook.cached(&info, &output);
            }
            return Outcome::Cached(Arc::new(output));
        }
        let Some(component) = &node.component else {
            return Outcome::Failed("no component".into());
        };
        let data: Vec<_> = self
            .hooks
            .iter()
            .map(|hook| hook.before(&info, &job.inputs))
            .collect();
        let ctx = NodeContext {
            node: node.name.clone(),
            component: node.component_name.clone(),
            model_id: self.model_id.clone(),
            artifacts: self.storage_dir(&node.name),
        };
        let started = Instant::now();
        let result = CatchUnwind(component.run_boxed(job.inputs, &ctx)).await;
        let took = started.elapsed();
        match result {
            Ok(Ok(output)) => {
                if cacheable
                    && let Some(storage) = &self.storage
                    && let Err(error) = storage.store(&job.fingerprint, &node.name, &output)
                {
                    tracing::warn!(node = %node.name, %error, "cannot cache the node's output");
                }
                for (hook, data) in self.hooks.iter().zip(data) {
                    hook.after(&info, &output, took, data);
                }
                Outcome::Ran(Arc::new(output))
            }
            failed => {
                let error = match failed {
                    Ok(Err(error)) => error.to_string(),
                    Err(panic) => format!("panicked: {}", panic_text(&*panic)),
                    Ok(Ok(_)) => unreachable!("matched above"),
                };
                for (hook, data) in self.hooks.iter().zip(data) {
                    hook.failed(&info, &error, took, data);
                }
                Outcome::Failed(error)
            }
        }
    }

    fn storage_dir(&self, node: &str) -> Option<std::path::PathBuf> {
        self.storage.as_ref().map(|storage| storage.node_dir(node))
    }
}

/// Where a run stands.
#[derive(Default)]
struct State {
    /// Nodes still to complete before each node is ready; `usize::MAX` for a node the
    /// targets do not need.
    remaining: Vec<usize>,
    outputs: Vec<Option<Arc<Value>>>,
    fingerprints: Vec<String>,
    caching: bool,
    /// Became ready, not yet handed out.
    ready: Vec<usize>,
    result: RunResult,
    /// Parallel runs: tasks running, and how to say the run is over.
    running: usize,
    done: Option<std::sync::mpsc::Sender<()>>,
}

const NOT_NEEDED: usize = usize::MAX;

impl State {
    fn new(nodes: &[Compiled], needed: &[bool], caching: bool) -> Self {
        let mut state = Self {
            remaining: nodes
                .iter()
                .zip(needed)
                .map(|(node, needed)| {
                    if *needed {
                        node.needs.len()
                    } else {
                        NOT_NEEDED
                    }
                })
                .collect(),
            outputs: vec![None; nodes.len()],
            fingerprints: vec![String::new(); nodes.len()],
            caching,
            ..Self::default()
        };
        state.ready = (0..nodes.len())
            .filter(|i| needed[*i] && !nodes[*i].input && nodes[*i].needs.is_empty())
            .collect();
        state
    }

    /// Gives input node `i` its value.
    fn provide(&mut self, nodes: &[Compiled], i: usize, value: Value) {
        if self.caching {
            self.fingerprints[i] = Fingerprint::new("input").value(&value).finish();
        }
        self.outputs[i] = Some(Arc::new(value));
        self.release(nodes, i);
    }

    fn take_ready(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.ready)
    }

    /// Node `i`'s inputs and fingerprint, from its upstream nodes' outputs.
    fn job(&mut self, nodes: &[Compiled], i: usize) -> Job {
        let node = &nodes[i];
        let mut inputs = BTreeMap::new();
        // The node's name is in it: its artifacts are its own, so two nodes computing
        // the same thing each run once.
        let mut print = self.caching.then(|| {
            Fingerprint::new("node")
                .text(&node.name)
                .text(&node.component_name)
                .text(&node.config_print)
        });
        for (input, from) in &node.needs {
            if let Some(output) = &self.outputs[*from] {
                inputs.insert(input.clone(), output.clone());
            }
            print = print.map(|print| print.text(input).text(&self.fingerprints[*from]));
        }
        let fingerprint = print.map(Fingerprint::finish).unwrap_or_default();
        self.fingerprints[i].clone_from(&fingerprint);
        Job {
            index: i,
            inputs: Inputs(inputs),
            fingerprint,
        }
    }

    /// Records how node `i` ended, answering the nodes that became ready.
    fn complete(&mut self, nodes: &[Compiled], i: usize, outcome: Outcome) -> Vec<usize> {
        let name = &nodes[i].name;
        match outcome {
            Outcome::Ran(output) => {
                self.result.completed.push(name.clone());
                self.outputs[i] = Some(output);
            }
            Outcome::Cached(output) => {
                self.result.completed.push(name.clone());
                self.result.cached.push(name.clone());
                self.outputs[i] = Some(output);
            }
            Outcome::Failed(error) => {
                self.result.failed.push(NodeFailure {
                    node: name.clone(),
                    error,
                });
                return Vec::new();
            }
        }
        self.release(nodes, i);
        self.take_ready()
    }

    /// Counts node `i` done for the nodes that need it.
    fn release(&mut self, nodes: &[Compiled], i: usize) {
        if self.caching {
            self.result
                .fingerprints
                .insert(nodes[i].name.clone(), self.fingerprints[i].clone());
        }
        for &dependent in &nodes[i].dependents {
            let remaining = &mut self.remaining[dependent];
            if *remaining == NOT_NEEDED {
                continue;
            }
            // A node may take two of its inputs from the same node.
            *remaining -= nodes[dependent]
                .needs
                .iter()
                .filter(|(_, from)| *from == i)
                .count();
            if *remaining == 0 {
                self.ready.push(dependent);
            }
        }
    }

    fn finish(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
    }

    fn into_result(mut self, nodes: &[Compiled], targets: &[usize]) -> RunResult {
        for (i, node) in nodes.iter().enumerate() {
            let ended =
                self.outputs[i].is_some() || self.result.failed.iter().any(|f| f.node == node.name);
            if self.remaining[i] != NOT_NEEDED && !node.input && !ended {
                self.result.skipped.push(node.name.clone());
            }
        }
        for &target in targets {
            if let Some(output) = self.outputs[target].take() {
                self.result
                    .outputs
                    .insert(nodes[target].name.clone(), output);
            }
        }
        self.result
    }
}

/// A component's future, with a panic inside it caught as its failure.
struct CatchUnwind<'a>(BoxFuture<'a>);

impl Future for CatchUnwind<'_> {
    type Output = std::thread::Result<Result<Value, crate::error::BoxError>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.0.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(result)) => Poll::Ready(Ok(result)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without text".to_owned())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
