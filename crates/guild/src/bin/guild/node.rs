//! `guild node`: a daemon that hosts agents on this machine for the cluster engine, each
//! in a process of its own by default; and `guild nodes`, the cluster's live nodes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use engine_cluster::{Node, NodeOptions, Token};

/// The variable that holds the cluster's token when no file is given.
pub(crate) const TOKEN_VARIABLE: &str = "GUILD_CLUSTER_TOKEN";

/// How a node joins its cluster.
#[derive(Debug, clap::Args)]
pub(crate) struct NodeArgs {
    /// The address to serve the node service on (port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: String,
    /// Where other machines reach the service, as host:port (the listening address when
    /// not given; give it when listening on 0.0.0.0).
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// The cluster's Redis, where the node holds its lease and agents exchange messages.
    #[arg(long, env = "GUILD_MESSAGING", value_name = "URL")]
    messaging: String,
    /// The node's id; the host name and port when not given.
    #[arg(long)]
    id: Option<String>,
    /// A label placement can select on, as key=value (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// A resource the node offers agents, as name=amount (repeatable): a custom one such
    /// as gpu=2, or cpu or memory_bytes to offer other than the machine's cores and
    /// memory.
    #[arg(long = "resource", value_name = "NAME=AMOUNT")]
    resources: Vec<String>,
    /// The engine that hosts the node's agents: process (each agent in a process of its
    /// own, with limits), threads or pool.
    #[arg(long, value_name = "ENGINE", default_value = "process")]
    engine: String,
    /// A file holding the cluster's token (else GUILD_CLUSTER_TOKEN).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// How long the node's lease lasts without renewal, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 3000)]
    lease_ms: u64,
    /// Serve over TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// The cluster's token, from `file` or the environment.
pub(crate) fn token(file: Option<&PathBuf>) -> anyhow::Result<Token> {
    let text = match file {
        Some(file) => std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the token file {}", file.display()))?,
        None => std::env::var(TOKEN_VARIABLE).with_context(|| {
            format!("no cluster token: give --token-file or set {TOKEN_VARIABLE}")
        })?,
    };
    Token::new(&text).map_err(anyhow::Error::msg)
}

/// Serves until a stop signal, then stops the node's agents and gives up its lease.
pub(crate) fn serve(args: &NodeArgs, stop_signal: &AtomicI32) -> anyhow::Result<ExitCode> {
    let mut options = NodeOptions::new(&args.messaging, token(args.token_file.as_ref())?);
    options.listen.clone_from(&args.listen);
    options.advertise.clone_from(&args.advertise);
    options.id.clone_from(&args.id);
    options.lease = Duration::from_millis(args.lease_ms);
    for label in &args.labels {
        let Some((key, value)) = label.split_once('=') else {
            bail!("--label {label:?}: write key=value");
        };
        options.labels.insert(key.to_owned(), value.to_owned());
    }
    for resource in &args.resources {
        let parsed = resource
            .split_once('=')
            .and_then(|(name, amount)| Some((name.trim(), amount.trim().parse::<f64>().ok()?)));
        let Some((name, amount)) = parsed else {
            bail!("--resource {resource:?}: write name=amount, such as gpu=2");
        };
        let one = engine_cluster::Resources::from([(name.to_owned(), amount)]);
        if let Err(why) = engine_cluster::check_amounts(&one) {
            bail!("--resource {resource:?}: {why}");
        }
        options.capacity.extend(one);
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let read = |path: &PathBuf| {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
        };
        options.tls = Some((read(cert)?, read(key)?));
    }
    if !["process", "threads", "pool"].contains(&args.engine.as_str()) {
        bail!(
            "--engine {:?}: a node hosts agents with the process, threads or pool engine",
            args.engine
        );
    }
    let engine = guild::select::engine(&args.engine, &guild::GuildSpec::new("node"))?;
    let node = Node::start(
        options,
        engine,
        Arc::new(guild::builtin::builtin_registry()),
    )?;
    eprintln!("guild node {}: serving on {}", node.id(), node.address());
    while stop_signal.load(Ordering::SeqCst) == 0 && !node.failed() {
        std::thread::sleep(Duration::from_millis(50));
    }
    node.stop()?;
    Ok(ExitCode::SUCCESS)
}

/// Prints the cluster's live nodes with their load.
pub(crate) fn list(messaging: &str) -> anyhow::Result<ExitCode> {
    let nodes = engine_cluster::nodes(messaging)?;
    if nodes.is_empty() {
        say!("no live node in {}", guild::messaging::redact(messaging));
        return Ok(ExitCode::SUCCESS);
    }
    let width = nodes.iter().map(|n| n.id.len()).max().unwrap_or(4).max(4);
    say!(
        "  {:<width$}  {:<21}  {:>6}  {:>10}  {:>10}  {:<38}  labels",
        "node",
        "address",
        "agents",
        "in",
        "out",
        "free of capacity"
    );
    for node in nodes {
        let labels: Vec<String> = node
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        say!(
            "  {:<width$}  {:<21}  {:>6}  {:>10}  {:>10}  {:<38}  {}",
            node.id,
            node.address,
            node.agents_running,
            node.messages_in,
            node.messages_out,
            free_of_capacity(&node),
            labels.join(",")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What a node has free of what it offers, as `cpu 3/4, memory 12.5/15.6 GiB, gpu 1/1`.
fn free_of_capacity(node: &engine_cluster::NodeSummary) -> String {
    node.capacity
        .iter()
        .map(|(name, offered)| {
            let free = offered - node.used.get(name).copied().unwrap_or(0.0);
            if name == engine_cluster::MEMORY {
                let gib = |bytes: f64| bytes / f64::from(1u32 << 30);
                format!("memory {:.1}/{:.1} GiB", gib(free), gib(*offered))
            } else {
                format!("{name} {}/{}", trim(free), trim(*offered))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// An amount without its fraction when it has none.
fn trim(amount: f64) -> String {
    if amount.fract() == 0.0 {
        format!("{amount:.0}")
    } else {
        format!("{amount:.2}")
    }
}
