//! The `guild` command: run a guild from a spec file, or check a spec file.

/// Prints a line to stdout; a closed stdout (`guild run … | head`) is not an error, the
/// run goes on and stops as usual.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

#[cfg(feature = "graph")]
mod graph;
#[cfg(feature = "engine-cluster")]
mod node;
mod report;
mod run;
mod serve;
#[cfg(feature = "messaging-redis")]
mod tail;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use clap::{Parser, Subcommand};
use guild::telemetry::{Export, Tracing, TracingConfig};
use guild::{LoadedSpec, builtin, select};

#[derive(Debug, Parser)]
#[command(
    name = "guild",
    version,
    about = "Run message-driven agents from a spec file"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a guild until its spec says it is complete, or Ctrl-C.
    Run {
        /// The spec file (TOML or JSON).
        spec: PathBuf,
        #[command(flatten)]
        choice: Choice,
        /// Print no message contents, only the summary.
        #[arg(long, short)]
        quiet: bool,
        /// Serve the guild's metrics over HTTP at this address (such as
        /// 127.0.0.1:9464; port 0 picks a free one), at /metrics, for Prometheus.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<String>,
        /// Export a trace of every handled message, and push the guild's metrics,
        /// over OTLP/gRPC to this endpoint (such as http://127.0.0.1:4317), overriding
        /// OTEL_EXPORTER_OTLP_ENDPOINT.
        #[arg(long, value_name = "URL")]
        otlp: Option<String>,
    },
    /// Check a spec file and report every problem in it: everything `run` with the
    /// same options would refuse.
    Validate {
        /// The spec file (TOML or JSON).
        spec: PathBuf,
        #[command(flatten)]
        choice: Choice,
    },
    /// Print a running guild's messages on topics as JSON lines as they arrive, until
    /// Ctrl-C (read from the guild's Redis).
    #[cfg(feature = "messaging-redis")]
    Tail {
        /// The topics to watch.
        #[arg(required = true)]
        topics: Vec<String>,
        #[command(flatten)]
        source: tail::Source,
        /// Where to start: the retained messages first, or only what arrives.
        #[arg(long, value_enum, default_value = "latest")]
        from: tail::From,
        /// Stop after printing this many messages.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Host agents on this machine for the cluster engine: serve the node service over
    /// gRPC and hold a lease in the cluster's Redis, until Ctrl-C.
    #[cfg(feature = "engine-cluster")]
    Node(node::NodeArgs),
    /// List the cluster's live nodes with their load.
    #[cfg(feature = "engine-cluster")]
    Nodes {
        /// The cluster's Redis.
        #[arg(long, env = "GUILD_MESSAGING", value_name = "URL")]
        messaging: String,
    },
    /// Check or run a graph of components (a DAG schema).
    #[cfg(feature = "graph")]
    #[command(subcommand)]
    Graph(graph::GraphCommand),
    /// Print the retained messages of a guild's topic as JSON lines (read from the
    /// guild's Redis).
    #[cfg(feature = "messaging-redis")]
    History {
        /// The topic.
        topic: String,
        #[command(flatten)]
        source: tail::Source,
        /// Publish order, or the most urgent first.
        #[arg(long, value_enum, default_value = "published")]
        order: Order,
    },
}

/// The order `guild history` prints in.
#[cfg(feature = "messaging-redis")]
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Order {
    /// As published.
    Published,
    /// Most urgent first; within one priority, as published.
    Priority,
}

/// Where the guild runs, when the command line overrides the spec.
#[derive(Debug, clap::Args)]
struct Choice {
    /// The engine for every agent, overriding the spec.
    #[arg(long, env = guild::select::ENGINE_VARIABLE)]
    engine: Option<String>,
    /// The messaging backend, by name or URL (overrides the spec).
    #[arg(long)]
    messaging: Option<String>,
}

fn main() -> ExitCode {
    // The process engine runs each agent in this program started again: serve it, with
    // its spans exported where the engine's were (the endpoint is in its environment).
    #[cfg(feature = "engine-process")]
    if guild::is_agent_host() {
        let tracing = start_logging(Export::FromEnvironment).unwrap_or_else(|error| {
            eprintln!("guild agent host: {error}");
            None
        });
        let code = guild::serve_if_agent_host(builtin::builtin_registry).unwrap_or_default();
        if let Some(tracing) = tracing {
            tracing.shutdown();
        }
        std::process::exit(code);
    }
    let cli = Cli::parse();
    let (export, push) = match &cli.command {
        Command::Run {
            otlp: Some(endpoint),
            ..
        } => (Export::Otlp(endpoint.clone()), Some(endpoint.clone())),
        Command::Run { otlp: None, .. } => (
            Export::FromEnvironment,
            guild::telemetry::configured_metrics_endpoint(),
        ),
        _ => (Export::FromEnvironment, None),
    };
    let tracing = match start_logging(export) {
        Ok(tracing) => tracing,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match cli.command {
        Command::Validate { spec, choice } => validate(&spec, &choice),
        Command::Run {
            spec,
            choice,
            quiet,
            metrics,
            otlp: _,
        } => with_runtime(|stop_signal| {
            let loaded = LoadedSpec::from_file(&spec)?;
            run::run(
                loaded,
                run::RunOptions {
                    engine: choice.engine,
                    messaging: choice.messaging,
                    quiet,
                    metrics,
                    push,
                },
                &stop_signal,
            )
        }),
        #[cfg(feature = "messaging-redis")]
        Command::Tail {
            topics,
            source,
            from,
            count,
        } => with_runtime(|stop_signal| tail::tail(topics, &source, from, count, &stop_signal)),
        #[cfg(feature = "engine-cluster")]
        Command::Node(args) => with_runtime(|stop_signal| node::serve(&args, &stop_signal)),
        #[cfg(feature = "engine-cluster")]
        Command::Nodes { messaging } => node::list(&messaging),
        #[cfg(feature = "graph")]
        Command::Graph(command) => graph::command(command),
        #[cfg(feature = "messaging-redis")]
        Command::History {
            topic,
            source,
            order,
        } => tail::history(
            &topic,
            &source,
            match order {
                Order::Published => guild::HistoryOrder::Published,
                Order::Priority => guild::HistoryOrder::Priority,
            },
        ),
    };
    if let Some(tracing) = tracing {
        tracing.shutdown();
    }
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", report(&error));
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr (filtered by `GUILD_LOG`, warnings by default) and, when `export`
/// names an endpoint, exports spans over OTLP; the tracing to shut down before exiting.
fn start_logging(export: Export) -> Result<Option<Tracing>, guild::telemetry::TracingError> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let tracing = Tracing::start(&TracingConfig {
        export,
        sample_ratio: None,
    })?;
    let exported = tracing.as_ref().map(Tracing::layer).transpose()?;
    let logged = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(
            tracing_subscriber::EnvFilter::try_from_env("GUILD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        );
    tracing_subscriber::registry()
        .with(logged)
        .with(exported)
        .init();
    Ok(tracing)
}

/// The error and its causes on one line, leaving out a cause whose text the error
/// already gives (guild's errors name their cause in their message and keep it as the
/// source too).
fn report(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// Checks a spec as `run` with the same choices would, without starting anything.
fn validate(path: &Path, choice: &Choice) -> anyhow::Result<ExitCode> {
    let loaded = LoadedSpec::from_file(path)?;
    loaded.check_as_run(
        &builtin::builtin_registry(),
        &select::known_names(),
        choice.engine.as_deref().filter(|engine| !engine.is_empty()),
        choice.messaging.as_deref(),
    )?;
    let agents = loaded.spec.expanded_agents().len();
    say!("{}: ok ({agents} agents)", path.display());
    Ok(ExitCode::SUCCESS)
}

/// Runs `body` on this thread inside a tokio runtime (so agents can await tokio IO),
/// with the number of the first stop signal (`SIGINT` or `SIGTERM`) received, 0 until
/// then. A second signal of either kind exits at once.
fn with_runtime(
    body: impl FnOnce(Arc<AtomicI32>) -> anyhow::Result<ExitCode>,
) -> anyhow::Result<ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("guild-io")
        .enable_all()
        .build()?;
    let _entered = runtime.enter();
    let stop_signal = Arc::new(AtomicI32::new(0));
    for (kind, number) in [
        (SignalKind::interrupt(), libc_signal::SIGINT),
        (SignalKind::terminate(), libc_signal::SIGTERM),
    ] {
        let mut signals = signal(kind)?;
        let flag = stop_signal.clone();
        runtime.spawn(async move {
            while signals.recv().await.is_some() {
                if flag.swap(number, Ordering::SeqCst) != 0 {
                    eprintln!("stopped again: exiting without waiting for handlers");
                    std::process::exit(128 + number);
                }
                eprintln!(
                    "stopping: waiting for running handlers to finish (signal again to force)"
                );
            }
        });
    }
    let outcome = body(stop_signal);
    runtime.shutdown_background();
    outcome
}

/// The numbers of the signals that stop a run (the same on every Unix).
mod libc_signal {
    pub(crate) const SIGINT: i32 = 2;
    pub(crate) const SIGTERM: i32 = 15;
}
