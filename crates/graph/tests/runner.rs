//! The graph runner on small graphs: a diamond whose middle nodes overlap in time when
//! run in parallel and take turns on the sequential path; a failing branch; cycles and
//! other schema problems with their lines; the cache on a second run; an archive round
//! trip.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use graph::{
    BoxError, Component, ComponentRegistry, Declared, ExecutionContext, GraphRunner, GraphSchema,
    Hook, Inputs, LoadedSchema, ModelStorage, NodeContext, NodeInfo, NodeSpec, exactly,
};
use serde_json::{Value, json};

/// Who has started, so each middle node of the diamond can wait for the other.
#[derive(Default)]
struct Meeting {
    started: Mutex<Vec<String>>,
    changed: Condvar,
    /// What happened, in order: "<node> start" and "<node> end".
    log: Mutex<Vec<String>>,
}

/// Records its start, waits (at most 10 s) until `partner` has started too, then
/// answers its input with its name.
struct Meet {
    meeting: Arc<Meeting>,
    partner: Option<String>,
}

impl Component for Meet {
    async fn run(&self, inputs: Inputs, ctx: &NodeContext) -> Result<Value, BoxError> {
        self.meeting
            .log
            .lock()
            .unwrap()
            .push(format!("{} start", ctx.node));
        let mut started = self.meeting.started.lock().unwrap();
        started.push(ctx.node.clone());
        self.meeting.changed.notify_all();
        if let Some(partner) = &self.partner {
            let (started, waited) = self
                .meeting
                .changed
                .wait_timeout_while(started, Duration::from_secs(10), |started| {
                    !started.contains(partner)
                })
                .unwrap();
            drop(started);
            if waited.timed_out() {
                return Err(format!("{} never saw {partner} start", ctx.node).into());
            }
        } else {
            drop(started);
        }
        self.meeting
            .log
            .lock()
            .unwrap()
            .push(format!("{} end", ctx.node));
        Ok(json!({ "by": ctx.node, "from": inputs.value("x")? }))
    }
}

struct Fail;

impl Component for Fail {
    async fn run(&self, _inputs: Inputs, _ctx: &NodeContext) -> Result<Value, BoxError> {
        Err("the disk is full".into())
    }
}

struct Panic;

impl Component for Panic {
    async fn run(&self, _inputs: Inputs, _ctx: &NodeContext) -> Result<Value, BoxError> {
        panic!("out of range")
    }
}

/// Adds one to its input, and writes it into its artifacts.
struct AddOne;

impl Component for AddOne {
    async fn run(&self, inputs: Inputs, ctx: &NodeContext) -> Result<Value, BoxError> {
        let n: i64 = inputs.get("n")?;
        std::fs::write(ctx.artifacts()?.join("seen"), n.to_string())?;
        Ok(json!(n + 1))
    }
}

fn registry(meeting: &Arc<Meeting>) -> ComponentRegistry {
    let mut registry = ComponentRegistry::new();
    let met = meeting.clone();
    registry
        .register("meet", exactly(&["x"]), move |config| {
            Ok(Meet {
                meeting: met.clone(),
                partner: config["partner"].as_str().map(str::to_owned),
            })
        })
        .register("fail", Declared::Any, |_| Ok(Fail))
        .register("panic", Declared::Any, |_| Ok(Panic))
        .register("add_one", exactly(&["n"]), |_| Ok(AddOne));
    registry.register("join", Declared::Any, |_| Ok(Join));
    registry
}

struct Join;

impl Component for Join {
    async fn run(&self, inputs: Inputs, _ctx: &NodeContext) -> Result<Value, BoxError> {
        Ok(inputs
            .iter()
            .map(|(name, value)| (name.to_owned(), value.clone()))
            .collect::<serde_json::Map<_, _>>()
            .into())
    }
}

/// a -> (b, c) -> d, where b and c each wait for the other when `meet` is set.
fn diamond(meet: bool) -> GraphSchema {
    let middle = |name: &str, partner: &str| {
        let config = if meet {
            json!({ "partner": partner })
        } else {
            json!({})
        };
        NodeSpec::component(name, "meet")
            .needs("x", "a")
            .config(config)
    };
    GraphSchema::new(vec![
        NodeSpec::input("a"),
        middle("b", "c"),
        middle("c", "b"),
        NodeSpec::component("d", "join")
            .needs("left", "b")
            .needs("right", "c")
            .target(),
    ])
}

fn runner(schema: GraphSchema, meeting: &Arc<Meeting>, context: ExecutionContext) -> GraphRunner {
    GraphRunner::create(
        LoadedSchema::built("test", schema),
        &registry(meeting),
        None,
        context,
        Vec::new(),
    )
    .unwrap()
}

fn inputs(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), value.clone()))
        .collect()
}

#[test]
fn the_middle_of_a_diamond_runs_at_once_in_parallel() {
    let workers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let meeting = Arc::new(Meeting::default());
    let runner = runner(
        diamond(true),
        &meeting,
        ExecutionContext::parallel(workers.handle().clone()),
    );
    let result = runner.run(inputs(&[("a", json!(7))]), &[]).unwrap();
    assert!(result.succeeded(), "{result:?}");
    assert_eq!(
        result.output("d").unwrap(),
        &json!({
            "left": { "by": "b", "from": 7 },
            "right": { "by": "c", "from": 7 }
        })
    );
    assert_eq!(result.completed.last().map(String::as_str), Some("d"));
}

#[test]
fn on_the_sequential_path_the_middle_nodes_take_turns_in_schema_order() {
    let meeting = Arc::new(Meeting::default());
    let runner = runner(diamond(false), &meeting, ExecutionContext::sequential());
    let result = runner.run(inputs(&[("a", json!(1))]), &[]).unwrap();
    assert!(result.succeeded(), "{result:?}");
    assert_eq!(
        *meeting.log.lock().unwrap(),
        ["b start", "b end", "c start", "c end"]
    );
    assert_eq!(result.completed, ["b", "c", "d"]);
}

#[test]
fn a_failing_branch_stops_only_what_needs_it() {
    // a -> bad -> after_bad; a -> good; both feed `both`, and `good` is a target too.
    let schema = GraphSchema::new(vec![
        NodeSpec::input("a"),
        NodeSpec::component("bad", "fail").needs("x", "a"),
        NodeSpec::component("after_bad", "join").needs("x", "bad"),
        NodeSpec::component("good", "add_one").needs("n", "a"),
        NodeSpec::component("worse", "panic").needs("x", "a"),
        NodeSpec::component("both", "join")
            .needs("bad", "after_bad")
            .needs("good", "good"),
    ]);
    let meeting = Arc::new(Meeting::default());
    for context in [ExecutionContext::sequential(), parallel()] {
        let storage = tempfile::tempdir().unwrap();
        let runner = GraphRunner::create(
            LoadedSchema::built("test", schema.clone()),
            &registry(&meeting),
            Some(ModelStorage::at(storage.path()).unwrap()),
            context,
            Vec::new(),
        )
        .unwrap();
        let targets = ["both".to_owned(), "good".to_owned(), "worse".to_owned()];
        let result = runner.run(inputs(&[("a", json!(1))]), &targets).unwrap();
        assert!(!result.succeeded());
        let mut failed: Vec<(String, String)> = result
            .failed
            .iter()
            .map(|f| (f.node.clone(), f.error.clone()))
            .collect();
        failed.sort();
        assert_eq!(
            failed,
            [
                ("bad".to_owned(), "the disk is full".to_owned()),
                ("worse".to_owned(), "panicked: out of range".to_owned())
            ]
        );
        assert_eq!(result.skipped, ["after_bad", "both"]);
        assert_eq!(result.completed, ["good"]);
        assert_eq!(result.output("good"), Some(&json!(2)));
        assert!(result.output("both").is_none());
    }
}

fn parallel() -> ExecutionContext {
    // The runtime lives as long as the test process: its handle is all a runner keeps.
    static WORKERS: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    let workers = WORKERS.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap()
    });
    ExecutionContext::parallel(workers.handle().clone())
}

const BROKEN: &str = r#"name = "broken"

[[nodes]]
name = "text"
input = true

[[nodes]]
name = "x"
component = "join"
needs = { a = "z" }

[[nodes]]
name = "y"
component = "no_such_thing"

[[nodes]]
name = "z"
component = "join"
needs = { a = "w" }

[[nodes]]
name = "w"
component = "join"
needs = { a = "z", b = "text" }

[[nodes]]
name = "n"
component = "add_one"
needs = { m = "text" }

[[nodes]]
name = "text"
input = true
"#;

#[test]
fn every_problem_of_a_schema_is_named_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, BROKEN).unwrap();
    let loaded = LoadedSchema::from_file(&path).unwrap();
    let meeting = Arc::new(Meeting::default());
    let errors = graph::check(&loaded, &registry(&meeting)).unwrap_err();
    let said = errors.to_string();
    let file = path.display().to_string();
    for expected in [
        format!("{file}:32: node \"text\": a second node of this name"),
        format!(
            "{file}:13: node \"y\": unknown component type \"no_such_thing\"; known: add_one, fail, join, meet, panic"
        ),
        format!(
            "{file}:27: node \"n\": component \"add_one\" reads n: the node needs no node for input n, and needs input m, which it does not read"
        ),
        format!("{file}:17: node \"z\": a cycle: z -> w -> z"),
    ] {
        assert!(said.contains(&expected), "missing {expected:?} in\n{said}");
    }
    assert_eq!(errors.0.len(), 4, "{said}");
    // A `needs` naming no node.
    let schema = GraphSchema::new(vec![NodeSpec::component("x", "join").needs("a", "ghost")]);
    let errors = graph::check(&LoadedSchema::built("built", schema), &registry(&meeting))
        .unwrap_err()
        .to_string();
    assert!(
        errors.contains("node \"x\": input \"a\" needs node \"ghost\", which is not in the graph"),
        "{errors}"
    );
}

#[test]
fn inputs_and_targets_a_run_cannot_use_are_refused_before_anything_runs() {
    let meeting = Arc::new(Meeting::default());
    let runner = runner(diamond(false), &meeting, ExecutionContext::sequential());
    let refused = runner
        .run(
            inputs(&[("b", json!(1)), ("nope", json!(2))]),
            &["d".into(), "e".into()],
        )
        .unwrap_err()
        .to_string();
    for expected in [
        "node \"e\": a target that is not in the graph",
        "node \"b\": an input given for a node that is not an input node",
        "node \"nope\": an input given for no node of the graph",
        "node \"a\": an input node the targets need (through b, c) but not given",
    ] {
        assert!(
            refused.contains(expected),
            "missing {expected:?} in\n{refused}"
        );
    }
    // An input the targets do not need.
    let refused = runner
        .run(inputs(&[("a", json!(1))]), &["a".into()])
        .map(|result| result.output("a").cloned());
    assert_eq!(refused.unwrap(), Some(json!(1)));
    assert!(meeting.log.lock().unwrap().is_empty(), "nothing ran");
}

/// Counts what the hooks see.
#[derive(Default)]
struct Counting {
    before: AtomicUsize,
    after: AtomicUsize,
    cached: Mutex<Vec<String>>,
    /// Whether `after` got what `before` handed it.
    handed: AtomicUsize,
}

impl Hook for Counting {
    fn before(&self, node: &NodeInfo<'_>, _inputs: &Inputs) -> Option<graph::HookData> {
        self.before.fetch_add(1, Ordering::SeqCst);
        Some(Box::new(node.node.to_owned()))
    }

    fn after(
        &self,
        node: &NodeInfo<'_>,
        _output: &Value,
        _took: Duration,
        data: Option<graph::HookData>,
    ) {
        self.after.fetch_add(1, Ordering::SeqCst);
        if data
            .and_then(|d| d.downcast::<String>().ok())
            .is_some_and(|d| *d == node.node)
        {
            self.handed.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn cached(&self, node: &NodeInfo<'_>, _output: &Value) {
        self.cached.lock().unwrap().push(node.node.to_owned());
    }
}

/// n -> one -> two, and n -> other.
fn chain() -> GraphSchema {
    GraphSchema::new(vec![
        NodeSpec::input("n"),
        NodeSpec::component("one", "add_one").needs("n", "n"),
        NodeSpec::component("two", "add_one")
            .needs("n", "one")
            .target(),
        NodeSpec::component("other", "add_one")
            .needs("n", "n")
            .target(),
    ])
}

fn cached_runner(storage: &std::path::Path, hook: &Arc<Counting>) -> GraphRunner {
    let meeting = Arc::new(Meeting::default());
    GraphRunner::create(
        LoadedSchema::built("chain", chain()),
        &registry(&meeting),
        Some(ModelStorage::at(storage).unwrap()),
        ExecutionContext::sequential(),
        vec![hook.clone()],
    )
    .unwrap()
}

#[test]
fn a_second_run_takes_unchanged_nodes_from_the_cache() {
    let storage = tempfile::tempdir().unwrap();
    let first = Arc::new(Counting::default());
    let result = cached_runner(storage.path(), &first)
        .run(inputs(&[("n", json!(1))]), &[])
        .unwrap();
    assert_eq!(result.output("two"), Some(&json!(3)));
    assert!(result.cached.is_empty());
    assert_eq!(first.before.load(Ordering::SeqCst), 3);
    assert_eq!(
        first.handed.load(Ordering::SeqCst),
        3,
        "before handed data to after"
    );
    let seen = std::fs::read_dir(storage.path().join("nodes"))
        .unwrap()
        .count();
    assert_eq!(seen, 3, "each node wrote its artifacts");

    let second = Arc::new(Counting::default());
    let result = cached_runner(storage.path(), &second)
        .run(inputs(&[("n", json!(1))]), &[])
        .unwrap();
    assert_eq!(result.output("two"), Some(&json!(3)));
    assert_eq!(result.cached, ["one", "two", "other"]);
    assert_eq!(second.before.load(Ordering::SeqCst), 0, "nothing executed");
    assert_eq!(*second.cached.lock().unwrap(), ["one", "two", "other"]);

    // Another input changes every fingerprint downstream of it.
    let third = Arc::new(Counting::default());
    let result = cached_runner(storage.path(), &third)
        .run(inputs(&[("n", json!(10))]), &[])
        .unwrap();
    assert_eq!(result.output("two"), Some(&json!(12)));
    assert!(result.cached.is_empty());
    assert_eq!(third.after.load(Ordering::SeqCst), 3);
}

#[test]
fn an_archive_of_a_run_loads_again_with_its_outputs_and_metadata() {
    let storage = tempfile::tempdir().unwrap();
    let hook = Arc::new(Counting::default());
    let runner = cached_runner(storage.path(), &hook);
    let result = runner.run(inputs(&[("n", json!(5))]), &[]).unwrap();
    let archive = tempfile::tempdir().unwrap();
    let file = archive.path().join("model.tar.gz");
    let metadata = json!({ "model_id": "m1", "fingerprints": result.fingerprints });
    runner.storage().unwrap().package(&file, &metadata).unwrap();

    let elsewhere = tempfile::tempdir().unwrap();
    let (unpacked, read) = ModelStorage::unpack(&file, elsewhere.path()).unwrap();
    assert_eq!(read, metadata);
    let again = Arc::new(Counting::default());
    let meeting = Arc::new(Meeting::default());
    let loaded = GraphRunner::create(
        LoadedSchema::built("chain", chain()),
        &registry(&meeting),
        Some(unpacked),
        ExecutionContext::sequential(),
        vec![again.clone()],
    )
    .unwrap();
    let rerun = loaded.run(inputs(&[("n", json!(5))]), &[]).unwrap();
    assert_eq!(rerun.outputs, result.outputs);
    assert_eq!(rerun.cached.len(), 3);
    assert_eq!(again.before.load(Ordering::SeqCst), 0);
    assert_eq!(
        std::fs::read_dir(elsewhere.path().join("storage/nodes"))
            .unwrap()
            .count(),
        3,
        "the nodes' artifacts came along"
    );
}
