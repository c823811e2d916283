//! `guild graph validate` and `guild graph run`: check and run DAG schemas of
//! components (the `graph` crate) with the built-in text components.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use graph::{
    ExecutionContext, GraphRunner, Hook, HookData, Inputs, LoadedSchema, ModelStorage, NodeInfo,
    TracingHook,
};
use serde_json::{Value, json};

/// What `guild graph` does.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum GraphCommand {
    /// Check a graph schema and report every problem in it, with its line and node.
    Validate {
        /// The schema file (TOML or JSON).
        schema: PathBuf,
    },
    /// Run what the targets need of a graph, printing each node as it completes and
    /// then the targets' outputs.
    Run(RunArgs),
}

/// How `guild graph run` runs.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The schema file (TOML or JSON).
    schema: PathBuf,
    /// An input node's value, as name=value: JSON when it parses as JSON, else the text;
    /// name=@FILE reads the text of a file (repeatable).
    #[arg(long = "input", value_name = "NAME=VALUE")]
    inputs: Vec<String>,
    /// A node to compute (repeatable); the schema's default targets when none.
    #[arg(long = "target", value_name = "NODE")]
    targets: Vec<String>,
    /// The model storage directory: the nodes' artifacts, and their outputs by
    /// fingerprint, so a rerun reuses what did not change.
    #[arg(long, value_name = "DIR")]
    storage: Option<PathBuf>,
    /// Run every node, even those whose output the storage holds.
    #[arg(long)]
    no_cache: bool,
    /// One node at a time on this thread, in schema order, rather than independent
    /// nodes at once on the pool engine's workers.
    #[arg(long)]
    sequential: bool,
    /// After the run, package the storage and what the run was into this archive
    /// (.tar.gz); needs --storage.
    #[arg(long, value_name = "FILE", requires = "storage")]
    archive: Option<PathBuf>,
}

pub(crate) fn command(command: GraphCommand) -> anyhow::Result<ExitCode> {
    match command {
        GraphCommand::Validate { schema } => validate(&schema),
        GraphCommand::Run(args) => run(&args),
    }
}

fn validate(path: &PathBuf) -> anyhow::Result<ExitCode> {
    let loaded = LoadedSchema::from_file(path)?;
    graph::check(&loaded, &graph::builtin_registry())?;
    say!(
        "{}: graph {:?}, {} nodes, targets {}",
        path.display(),
        loaded.schema.name,
        loaded.schema.nodes.len(),
        loaded.schema.default_targets().join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let loaded = LoadedSchema::from_file(&args.schema)?;
    let inputs = parse_inputs(&args.inputs)?;
    let storage = args
        .storage
        .as_ref()
        .map(|dir| {
            ModelStorage::at(dir)
                .with_context(|| format!("cannot use {} as the model storage", dir.display()))
        })
        .transpose()?;
    // The pool engine's workers run the nodes; it lives for the run.
    let pool = if args.sequential {
        None
    } else {
        Some(guild::engines::PoolEngine::new()?)
    };
    let mut context = match &pool {
        Some(pool) => ExecutionContext::parallel(pool.workers()),
        None => ExecutionContext::sequential(),
    };
    context.cache = !args.no_cache;
    context.model_id = loaded.schema.name.clone();
    let name = loaded.schema.name.clone();
    let hooks: Vec<Arc<dyn Hook>> = vec![Arc::new(Progress), Arc::new(TracingHook)];
    let runner = GraphRunner::create(loaded, &graph::builtin_registry(), storage, context, hooks)?;
    say!("graph {name:?}: running");
    let result = runner.run(inputs, &args.targets)?;
    for (target, output) in &result.outputs {
        say!("{target} = {output}");
    }
    for failure in &result.failed {
        say!("failed {}: {}", failure.node, failure.error);
    }
    if !result.skipped.is_empty() {
        say!(
            "not run, as what they need failed: {}",
            result.skipped.join(", ")
        );
    }
    say!(
        "{} nodes completed ({} from the cache), {} failed, {} not run",
        result.completed.len(),
        result.cached.len(),
        result.failed.len(),
        result.skipped.len()
    );
    if let (Some(archive), Some(storage)) = (&args.archive, runner.storage()) {
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let metadata = json!({
            "graph": runner.schema().schema,
            "model_id": name,
            "targets": result.outputs.keys().collect::<Vec<_>>(),
            "completed": result.completed,
            "fingerprints": result.fingerprints,
            "created_unix_ms": created,
            "guild": env!("CARGO_PKG_VERSION"),
        });
        storage
            .package(archive, &metadata)
            .with_context(|| format!("cannot write the archive {}", archive.display()))?;
        say!("packaged the storage into {}", archive.display());
    }
    drop(runner);
    if let Some(pool) = pool {
        guild::ExecutionEngine::shutdown(&pool)?;
    }
    Ok(if result.succeeded() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `name=value` pairs as input values.
fn parse_inputs(pairs: &[String]) -> anyhow::Result<BTreeMap<String, Value>> {
    let mut inputs = BTreeMap::new();
    for pair in pairs {
        let Some((name, value)) = pair.split_once('=') else {
            bail!("--input {pair:?}: write name=value");
        };
        let value = match value.strip_prefix('@') {
            Some(file) => Value::String(
                std::fs::read_to_string(file)
                    .with_context(|| format!("--input {name}: cannot read {file}"))?,
            ),
            None => serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.into())),
        };
        if inputs.insert(name.to_owned(), value).is_some() {
            bail!("--input {name}: given twice");
        }
    }
    Ok(inputs)
}

/// Prints each node as it completes.
struct Progress;

impl Hook for Progress {
    fn after(&self, node: &NodeInfo<'_>, _output: &Value, took: Duration, _data: Option<HookData>) {
        say!(
            "  {} ({}) done in {:.2} ms",
            node.node,
            node.component,
            took.as_secs_f64() * 1e3
        );
    }

    fn failed(&self, node: &NodeInfo<'_>, error: &str, _took: Duration, _data: Option<HookData>) {
        say!("  {} ({}) failed: {error}", node.node, node.component);
    }

    fn cached(&self, node: &NodeInfo<'_>, _output: &Value) {
        say!("  {} ({}) from the cache", node.node, node.component);
    }

    fn before(&self, _node: &NodeInfo<'_>, _inputs: &Inputs) -> Option<HookData> {
        None
    }
}
