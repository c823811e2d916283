//! `cargo xtask bench [--quick] [--runs N] [--only in-process|process|redis|cluster|graph|exec|tracing]`: every benchmark
//! cell (system x workload), each in a fresh process, repeated `runs` times (median of
//! the per-run medians), printed as tables of figures with their ratios to the best peer
//! framework and to the best raw baseline, and written into `docs/benchmarks.md`.
//!
//! The sections: the in-process workloads (guild's pool and threads engines against
//! peer actor frameworks and raw channels), the process engine's workloads (against raw Unix
//! socket pairs with a child process), the Redis backend's (against the `redis`
//! crate alone on the same kind of private server), the cluster engine's (two node
//! daemons, against the same work on one machine), and what tracing costs (the pool
//! engine with tracing set up four ways, against tracing off).

use std::fmt::Write as _;

use anyhow::{Context, bail};

use crate::cmd;

const GUILD: &[&str] = &["guild-pool", "guild-threads"];
const PEERS: &[&str] = &["ractor", "kameo", "actix"];
const BASELINES: &[&str] = &["crossbeam", "tokio"];
const WORKLOADS: &[(&str, &str)] = &[
    ("tell", "1 producer -> 1 agent, messages/s"),
    (
        "ask",
        "sequential request/reply: asks/s, p50 and p99 latency",
    ),
    ("fanout", "1 producer -> 64 agents, deliveries/s"),
    ("ring", "1,000 agents pass a token, hops/s"),
    (
        "start",
        "start 10,000 agents: starts/s and resident bytes per idle agent",
    ),
    (
        "scale",
        "start 1,000,000 idle agents: starts/s, resident bytes per agent, seconds to stop them all \
         (systems with a thread per agent sit this one out)",
    ),
];

/// Systems that give every agent an OS thread, which cannot start a million.
const THREAD_PER_AGENT: &[&str] = &["guild-threads", "crossbeam"];

/// A section that sets guild systems beside one baseline, workload by workload.
struct Paired {
    /// Its name for `--only`, and its marker in `docs/benchmarks.md`.
    name: &'static str,
    /// `(system, label)` per row; the last row is the baseline the others are compared to.
    rows: &'static [(&'static str, &'static str)],
    /// (workload, what it measures, whether the ratio compares p50 latencies rather
    /// than rates).
    workloads: &'static [(&'static str, &'static str, bool)],
}

const PAIRED: &[Paired] = &[
    Paired {
        name: "process",
        rows: &[("process", "guild process"), ("unix", "raw unix")],
        workloads: PROCESS_WORKLOADS,
    },
    Paired {
        name: "redis",
        rows: &[("redis", "guild redis"), ("redis-raw", "redis crate")],
        workloads: REDIS_WORKLOADS,
    },
    Paired {
        name: "cluster",
        rows: &[
            ("cluster", "guild cluster, 2 nodes"),
            ("local", "one machine"),
        ],
        workloads: CLUSTER_WORKLOADS,
    },
    Paired {
        name: "graph",
        rows: &[
            ("graph-parallel", "runner, parallel"),
            ("graph", "runner, sequential"),
            ("graph-direct", "direct calls"),
        ],
        workloads: GRAPH_WORKLOADS,
    },
    Paired {
        name: "exec",
        rows: &[
            ("exec", "guild exec (Python)"),
            ("pipe-json", "Python JSON echo, no guild"),
            ("pipe", "raw Python pipe"),
        ],
        workloads: EXEC_WORKLOADS,
    },
    Paired {
        name: "tracing",
        rows: &[
            ("trace-unconfigured", "not configured"),
            ("trace-spans", "spans, no exporter"),
            ("trace-otlp", "OTLP, 100% sampled"),
            ("trace-otlp-1pct", "OTLP, 1% sampled"),
            ("trace-off", "tracing off"),
        ],
        workloads: TRACING_WORKLOADS,
    },
];

const TRACING_WORKLOADS: &[(&str, &str, bool)] = &[
    (
        "tell",
        "messages from one producer to one agent on the pool engine, messages/s",
        false,
    ),
    (
        "ask",
        "sequential request/replies with one agent on the pool engine",
        true,
    ),
];

const EXEC_WORKLOADS: &[(&str, &str, bool)] = &[
    (
        "rtt",
        "request/reply through an echo agent in Python (raw: a 64-byte line through a Python echo over a pipe)",
        true,
    ),
    (
        "throughput",
        "requests as fast as they go, replies/s (raw: lines through the same echo)",
        false,
    ),
];

const GRAPH_WORKLOADS: &[(&str, &str, bool)] = &[
    (
        "nodes",
        "a 10,000-node graph of trivial components with one hook, nodes/s (direct: the same functions called in dependency order)",
        false,
    ),
    (
        "wide",
        "64 CPU-bound nodes in one layer, nodes/s (direct: called one after the other)",
        false,
    ),
];

const CLUSTER_WORKLOADS: &[(&str, &str, bool)] = &[
    (
        "spawn",
        "start one agent process on a node daemon through gRPC until it is ready (one machine: the process engine in the same program), over Redis",
        true,
    ),
    (
        "rtt",
        "request/reply between agents on two nodes through Redis, timed by the requester (one machine: the same agents on one threads engine)",
        true,
    ),
];

const REDIS_WORKLOADS: &[(&str, &str, bool)] = &[
    (
        "throughput",
        "publish to handled between two agents, messages/s (raw: pipelined XADD)",
        false,
    ),
    (
        "latency",
        "one message at a time, publish to handled (raw: PUBLISH to a SUBSCRIBEd connection)",
        true,
    ),
];

/// The process engine's workloads.
const PROCESS_WORKLOADS: &[(&str, &str, bool)] = &[
    (
        "spawn",
        "start one agent process until it is subscribed and ready (raw: spawn, connect, one byte back)",
        true,
    ),
    (
        "rtt",
        "request/reply between this process and an agent in another (raw: 64-byte echo over a socket pair)",
        true,
    ),
    (
        "oneway",
        "messages to an agent in another process, batched (raw: 64-byte frames through a buffered socket)",
        false,
    ),
    (
        "detect",
        "from an agent process's SIGKILL to its engine reporting the crash (raw: kill a child and reap it)",
        true,
    ),
    (
        "restart",
        "from an agent process's SIGKILL to its supervised restart answering a request, no backoff (raw: kill, reap, spawn the same program, one byte back)",
        true,
    ),
];

/// One cell's figures, as the bench binary reports them.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    rate: f64,
    p50_us: Option<f64>,
    p90_us: Option<f64>,
    p99_us: Option<f64>,
    bytes_per_agent: Option<f64>,
    stop_s: Option<f64>,
}

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let runs: usize = match args.iter().position(|a| a == "--runs") {
        Some(i) => args.get(i + 1).context("--runs needs a number")?.parse()?,
        None => 3,
    };
    let only = match args.iter().position(|a| a == "--only") {
        Some(i) => Some(args.get(i + 1).context("--only needs a section")?.as_str()),
        None => None,
    };
    if let Some(section) = only
        && section != "in-process"
        && !PAIRED.iter().any(|paired| paired.name == section)
    {
        bail!(
            "unknown section {section:?}: in-process, process, redis, cluster, graph, exec or tracing"
        );
    }
    cmd::run(&["build", "--release", "--quiet", "--package", "bench"])?;
    let measure = |system: &str, workload: &str| -> anyhow::Result<Figures> {
        let mut samples = Vec::new();
        for _ in 0..runs {
            samples.push(cell(system, workload, quick)?);
        }
        Ok(median_figures(samples))
    };
    let command = format!(
        "cargo xtask bench{}{}{}",
        if quick { " --quick" } else { "" },
        format_args!(" --runs {runs}"),
        only.map_or(String::new(), |section| format!(" --only {section}"))
    );
    if only.is_none_or(|section| section == "in-process") {
        let systems: Vec<&str> = GUILD
            .iter()
            .chain(PEERS)
            .chain(BASELINES)
            .copied()
            .collect();
        let mut table = String::new();
        for (workload, what) in WORKLOADS {
            let mut cells = Vec::new();
            for system in &systems {
                if *workload == "scale" && THREAD_PER_AGENT.contains(system) {
                    continue;
                }
                cells.push((*system, measure(system, workload)?));
            }
            render(&mut table, workload, what, &cells);
        }
        print!("{table}");
        write_docs("bench", &table, &command)?;
    }
    for paired in PAIRED {
        if only.is_some_and(|section| section != paired.name) {
            continue;
        }
        let mut table = String::new();
        for (workload, what, by_latency) in paired.workloads {
            // Runs take the systems in turn, so a slow spell of the machine falls on
            // all of them rather than on one.
            let mut samples: Vec<Vec<Figures>> = vec![Vec::new(); paired.rows.len()];
            for _ in 0..runs {
                for ((system, _), taken) in paired.rows.iter().zip(&mut samples) {
                    taken.push(cell(system, workload, quick)?);
                }
            }
            let rows: Vec<(&str, Figures)> = paired
                .rows
                .iter()
                .zip(samples)
                .map(|((_, label), taken)| (*label, median_figures(taken)))
                .collect();
            render_paired(&mut table, workload, what, *by_latency, &rows);
        }
        print!("{table}");
        write_docs(&format!("bench-{}", paired.name), &table, &command)?;
    }
    Ok(())
}

/// One paired workload: guild's figures beside the baseline's (the last row).
fn render_paired(
    out: &mut String,
    workload: &str,
    what: &str,
    by_latency: bool,
    rows: &[(&str, Figures)],
) {
    let raw = rows[rows.len() - 1].1;
    let _ = writeln!(out, "\n### {workload}: {what}\n");
    let _ = writeln!(
        out,
        "| system | rate/s | p50 µs | p90 µs | p99 µs | vs {} |\n|---|---:|---:|---:|---:|---:|",
        rows[rows.len() - 1].0
    );
    let micros = |value: Option<f64>| value.map_or("-".to_owned(), |v| format!("{v:.1}"));
    for (system, figures) in rows.iter().copied() {
        let ratio = if by_latency {
            format!(
                "{:.2}x p50",
                figures.p50_us.unwrap_or(f64::NAN) / raw.p50_us.unwrap_or(f64::NAN)
            )
        } else {
            format!("{:.2}x rate", figures.rate / raw.rate)
        };
        let _ = writeln!(
            out,
            "| {system} | {} | {} | {} | {} | {ratio} |",
            human(figures.rate),
            micros(figures.p50_us),
            micros(figures.p90_us),
            micros(figures.p99_us),
        );
    }
}

/// Runs one cell in a fresh process.
fn cell(system: &str, workload: &str, quick: bool) -> anyhow::Result<Figures> {
    let mut args = vec![
        "run",
        "--release",
        "--quiet",
        "--package",
        "bench",
        "--",
        system,
        workload,
    ];
    if quick {
        args.push("--quick");
    }
    eprintln!("  {system} {workload}");
    let output = cmd::capture(&args)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "bench {system} {workload} failed ({}): {stdout}",
            output.status
        );
    }
    let line = stdout.lines().last().unwrap_or_default();
    Ok(Figures {
        rate: field(line, "rate").with_context(|| format!("no rate in {line:?}"))?,
        p50_us: field(line, "p50_us"),
        p90_us: field(line, "p90_us"),
        p99_us: field(line, "p99_us"),
        bytes_per_agent: field(line, "bytes_per_agent"),
        stop_s: field(line, "stop_s"),
    })
}

/// A number field of a flat JSON object.
fn field(line: &str, name: &str) -> Option<f64> {
    let start = line.find(&format!("\"{name}\":"))? + name.len() + 3;
    let rest = &line[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

fn median_figures(mut samples: Vec<Figures>) -> Figures {
    let median = |values: &mut Vec<f64>| -> Option<f64> {
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied()
    };
    let collect = |pick: fn(&Figures) -> Option<f64>, samples: &[Figures]| -> Vec<f64> {
        samples.iter().filter_map(pick).collect()
    };
    let figures = Figures {
        rate: median(&mut collect(|f| Some(f.rate), &samples)).unwrap_or(0.0),
        p50_us: median(&mut collect(|f| f.p50_us, &samples)),
        p90_us: median(&mut collect(|f| f.p90_us, &samples)),
        p99_us: median(&mut collect(|f| f.p99_us, &samples)),
        bytes_per_agent: median(&mut collect(|f| f.bytes_per_agent, &samples)),
        stop_s: median(&mut collect(|f| f.stop_s, &samples)),
    };
    samples.clear();
    figures
}

fn render(out: &mut String, workload: &str, what: &str, cells: &[(&str, Figures)]) {
    let best = |names: &[&str],
                pick: &dyn Fn(&Figures) -> Option<f64>,
                lower_is_better: bool|
     -> Option<f64> {
        let values = cells
            .iter()
            .filter(|(s, _)| names.contains(s))
            .filter_map(|(_, f)| pick(f));
        if lower_is_better {
            values.min_by(f64::total_cmp)
        } else {
            values.max_by(f64::total_cmp)
        }
    };
    let best_peer_rate = best(PEERS, &|f| Some(f.rate), false).unwrap_or(f64::NAN);
    let best_raw_rate = best(BASELINES, &|f| Some(f.rate), false).unwrap_or(f64::NAN);
    let _ = writeln!(out, "\n### {workload}: {what}\n");
    let mut header = "| system | rate/s | vs best peer | vs best raw |".to_owned();
    let mut rule = "|---|---:|---:|---:|".to_owned();
    let latency = cells.iter().any(|(_, f)| f.p50_us.is_some());
    let memory = cells.iter().any(|(_, f)| f.bytes_per_agent.is_some());
    let stopping = cells.iter().any(|(_, f)| f.stop_s.is_some());
    if latency {
        header.push_str(" p50 µs | p50 vs best peer | p99 µs |");
        rule.push_str("---:|---:|---:|");
    }
    if memory {
        header.push_str(" bytes/agent |");
        rule.push_str("---:|");
    }
    if stopping {
        header.push_str(" stop s |");
        rule.push_str("---:|");
    }
    let _ = writeln!(out, "{header}\n{rule}");
    let best_peer_p50 = best(PEERS, &|f| f.p50_us, true).unwrap_or(f64::NAN);
    for (system, figures) in cells {
        let mut row = format!(
            "| {system} | {} | {:.2}x | {:.2}x |",
            human(figures.rate),
            figures.rate / best_peer_rate,
            figures.rate / best_raw_rate
        );
        if latency {
            let p50 = figures.p50_us.unwrap_or(f64::NAN);
            let _ = write!(
                row,
                " {p50:.2} | {:.2}x | {:.2} |",
                p50 / best_peer_p50,
                figures.p99_us.unwrap_or(f64::NAN)
            );
        }
        if memory {
            let _ = write!(row, " {:.0} |", figures.bytes_per_agent.unwrap_or(f64::NAN));
        }
        if stopping {
            let stop = figures.stop_s.map_or("-".to_owned(), |s| format!("{s:.2}"));
            let _ = write!(row, " {stop} |");
        }
        let _ = writeln!(out, "{row}");
    }
}

fn human(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.2}M", rate / 1e6)
    } else {
        format!("{:.1}k", rate / 1e3)
    }
}

/// Replaces one generated part of `docs/benchmarks.md` (between the `<!-- marker:start
/// -->` and `<!-- marker:end -->` lines), keeping the hand-written analysis around it.
fn write_docs(marker: &str, table: &str, command: &str) -> anyhow::Result<()> {
    let start_marker = format!("<!-- {marker}:start -->");
    let end_marker = format!("<!-- {marker}:end -->");
    let path = cmd::root().join("docs/benchmarks.md");
    let existing = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| format!("# Benchmarks\n\n{start_marker}\n{end_marker}\n"));
    let (Some(start), Some(end)) = (existing.find(&start_marker), existing.find(&end_marker))
    else {
        bail!(
            "{} lacks the {start_marker} / {end_marker} markers",
            path.display()
        );
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let generated = format!(
        "{start_marker}\nLatest run: `{command}` on {cores} cores of {cpu}. Each figure is the median over runs of the \
         per-process median of 5 repetitions after a warm-up; every cell runs in a fresh process.\n{table}\n{end_marker}"
    );
    let updated = format!(
        "{}{generated}{}",
        &existing[..start],
        &existing[end + end_marker.len()..]
    );
    std::fs::write(&path, updated).with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_number_fields_of_a_report_line() {
        let line =
            r#"{"p50_us":8.4,"p99_us":20.1,"rate":108795.06,"system":"guild","workload":"ask"}"#;
        assert_eq!(field(line, "rate"), Some(108795.06));
        assert_eq!(field(line, "p99_us"), Some(20.1));
        assert_eq!(field(line, "bytes_per_agent"), None);
    }
}
