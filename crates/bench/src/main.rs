//! `bench`: runs one benchmark cell (one system, one workload) in this process and prints
//! its result as one JSON line. `cargo xtask bench` runs every cell, each in a fresh
//! process, and prints the table.
//!
//! ```text
//! bench <system> <workload> [--quick]
//! ```
//!
//! Systems: `guild-pool` and `guild-threads` (guild's pool and threads engines over
//! in-memory messaging), `ractor`, `kameo`, `actix`, `crossbeam` and `tokio`
//! (hand-written loops over raw channels, the baselines). Workloads: `tell`, `ask`,
//! `fanout`, `ring`, `start`, and `scale` (`start` with a million agents, for the systems
//! that do not give each agent a thread).
//!
//! The process engine's cells: systems `process` (guild's process engine over its
//! embedded broker) and `unix` (raw Unix socket pairs with a child process, the
//! baseline), workloads `spawn`, `rtt` and `oneway`; see [`process`].
//!
//! The tracing cells: systems `trace-off`, `trace-unconfigured`, `trace-spans`,
//! `trace-otlp` and `trace-otlp-1pct` (guild's pool engine with tracing set up as each
//! says), workloads `tell` and `ask`; see [`tracing_cost`].
//!
//! The Redis backend's cells: systems `redis` (guild over Redis) and `redis-raw` (the
//! `redis` crate alone), workloads `throughput` and `latency`; see [`redis`]. Each cell
//! starts a private `redis-server`.
//!
//! The graph runner's cells: systems `graph-parallel`, `graph` (sequential) and
//! `graph-direct` (the functions called directly), workloads `nodes` and `wide`; see
//! [`graph_cost`].
//!
//! The exec agent's cells: systems `exec` (a Python exec agent) and `pipe` (a raw
//! Python echo over a pipe), workloads `rtt` and `throughput`; see [`exec_cost`].
//!
//! The cluster engine's cells: systems `cluster` (two node daemons) and `local` (the
//! same work on one machine), workloads `spawn` and `rtt`; see [`cluster`].
#![allow(
    clippy::print_stdout,
    reason = "a benchmark program prints its results"
)]

mod cluster;
mod exec_cost;
mod graph_cost;
mod guild;
mod peer_actix;
mod peer_kameo;
mod peer_ractor;
mod process;
mod raw;
mod redis;
mod sizes;
mod supervision;
mod tracing_cost;

use std::process::ExitCode;
use std::time::Duration;

use sizes::Sizes;

/// What one repetition of a workload measured.
pub enum Sample {
    /// How long the whole workload took.
    Elapsed(Duration),
    /// One latency per request, plus the total time.
    Latencies(Vec<Duration>, Duration),
    /// How long starting took, and the resident bytes the started agents hold.
    Started(Duration, u64),
    /// As [`Sample::Started`], and how long stopping them all took.
    StartedAndStopped(Duration, u64, Duration),
}

/// The workloads every system implements.
pub trait System {
    /// `n` small messages from one producer to one agent.
    fn tell(&self, n: u64) -> Sample;
    /// `n` sequential request/replies.
    fn ask(&self, n: u64) -> Sample;
    /// `n` messages from one producer, each delivered to all of `agents` agents.
    fn fanout(&self, agents: usize, n: u64) -> Sample;
    /// `agents` agents pass a token around a ring `hops` times in all.
    fn ring(&self, agents: usize, hops: u64) -> Sample;
    /// Start `n` agents and leave them idle.
    fn start(&self, n: usize) -> Sample;
}

/// An actor's seat in a ring: its index, and every actor of the ring once all are spawned.
pub type RingSeat<R> = Option<(usize, std::sync::Arc<std::sync::OnceLock<Vec<R>>>)>;

const REPETITIONS: usize = 5;

fn main() -> ExitCode {
    // The process cells start this program again, as an agent host or a raw child.
    engine_process::run_if_agent_host(process::registry);
    process::run_if_raw_child();
    cluster::serve_if_node();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let positional: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    let [system_name, workload] = positional[..] else {
        eprintln!(
            "usage: bench <guild-pool|guild-threads|ractor|kameo|actix|crossbeam|tokio> <tell|ask|fanout|ring|start|scale> [--quick]\n       bench <process|unix> <spawn|rtt|oneway|detect|restart> [--quick]\n       bench <redis|redis-raw> <throughput|latency> [--quick]\n       bench <cluster|local> <spawn|rtt> [--quick]\n       bench <graph-parallel|graph|graph-direct> <nodes|wide>\n       bench <exec|pipe-json|pipe> <rtt|throughput>"
        );
        return ExitCode::from(2);
    };
    let sizes = Sizes::new(quick);
    if let "graph" | "graph-parallel" | "graph-direct" = system_name {
        let run = || graph_cost::run(system_name, workload);
        run(); // warm-up
        let samples: Vec<Sample> = (0..REPETITIONS).map(|_| run()).collect();
        println!("{}", sizes.report(system_name, workload, &samples));
        return ExitCode::SUCCESS;
    }
    if let "exec" | "pipe" | "pipe-json" = system_name {
        let n = if workload == "rtt" {
            sizes.redis_latency
        } else {
            sizes.redis_throughput
        };
        let run = || match system_name {
            "exec" => exec_cost::guild(workload, n),
            "pipe-json" => exec_cost::raw(workload, n, true),
            _ => exec_cost::raw(workload, n, false),
        };
        run(); // warm-up
        let samples: Vec<Sample> = (0..REPETITIONS).map(|_| run()).collect();
        println!("{}", sizes.report(system_name, workload, &samples));
        return ExitCode::SUCCESS;
    }
    if let "process" | "unix" | "redis" | "redis-raw" | "cluster" | "local" = system_name {
        return process_cell(system_name, workload, &sizes);
    }
    let tracing = tracing_cost::SYSTEMS
        .contains(&system_name)
        .then(|| tracing_cost::Setup::new(system_name));
    let system: Box<dyn System> = match system_name {
        "guild-pool" => Box::new(guild::Guild::Pool),
        _ if tracing.is_some() => Box::new(guild::Guild::Pool),
        "guild-threads" => Box::new(guild::Guild::Threads),
        "ractor" => Box::new(peer_ractor::Ractor::new()),
        "kameo" => Box::new(peer_kameo::Kameo::new()),
        "actix" => Box::new(peer_actix::Actix),
        "crossbeam" => Box::new(raw::Crossbeam),
        "tokio" => Box::new(raw::Tokio::new()),
        other => {
            eprintln!("unknown system {other:?}");
            return ExitCode::from(2);
        }
    };
    let run = |system: &dyn System| -> Option<Sample> {
        Some(match workload {
            "tell" => system.tell(sizes.tell),
            "ask" => system.ask(sizes.ask),
            "fanout" => system.fanout(sizes.fanout_agents, sizes.fanout),
            "ring" => system.ring(sizes.ring_agents, sizes.ring_hops),
            // Starting agents is measured once per process: a second batch would start
            // on a warmed, larger heap.
            "start" => system.start(sizes.start),
            "scale" => system.start(sizes.scale),
            _ => return None,
        })
    };
    let once = matches!(workload, "start" | "scale");
    let repetitions = if once { 1 } else { REPETITIONS };
    if !once {
        run(&*system); // warm-up
    }
    let mut samples = Vec::new();
    for _ in 0..repetitions {
        match run(&*system) {
            Some(sample) => samples.push(sample),
            None => {
                eprintln!("unknown workload {workload:?}");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(tracing) = tracing {
        tracing.finish();
    }
    println!("{}", sizes.report(system_name, workload, &samples));
    ExitCode::SUCCESS
}

/// Runs one cell of the process engine's or the Redis backend's workloads.
fn process_cell(system: &str, workload: &str, sizes: &Sizes) -> ExitCode {
    let n = match workload {
        "spawn" => process::SPAWNS as u64,
        "detect" | "restart" => supervision::KILLS as u64,
        "rtt" if matches!(system, "cluster" | "local") => sizes.redis_latency,
        "rtt" => sizes.rtt,
        "oneway" => sizes.oneway,
        "throughput" => sizes.redis_throughput,
        "latency" => sizes.redis_latency,
        other => {
            eprintln!("unknown workload {other:?}");
            return ExitCode::from(2);
        }
    };
    let run = || match (system, workload) {
        ("process", "detect" | "restart") => supervision::guild(workload),
        ("unix", "detect" | "restart") => supervision::raw(workload),
        ("process", _) => process::guild(workload, n),
        ("unix", _) => process::raw(workload, n),
        ("redis", _) => redis::guild(workload, n),
        ("cluster", _) => cluster::guild(workload, n),
        ("local", _) => cluster::local(workload, n),
        _ => redis::raw(workload, n),
    };
    run(); // warm-up
    let samples: Vec<Sample> = (0..REPETITIONS).map(|_| run()).collect();
    println!("{}", sizes.report(system, workload, &samples));
    ExitCode::SUCCESS
}

/// The median of `values` (which must not be empty).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The multi-threaded tokio runtime the tokio-based systems run on, with the default
/// number of workers (one per core), as `#[tokio::main]` would make it.
pub fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Resident memory of this process in bytes, from /proc.
pub fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}
