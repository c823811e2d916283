//! `guild run --metrics`: a real scrape over HTTP during a run, parsed with a
//! Prometheus text parser, matches the run's own summary, agent by agent.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Three questions to a responder, whose answers an aggregator collects; the run then
/// waits (for a topic nothing publishes) until it is stopped.
const SPEC: &str = r#"
id = "scraped"

[[agents]]
id = "responder"
type = "responder"
topics = ["questions"]

[[agents]]
id = "collector"
type = "aggregator"
topics = ["answers"]
properties = { expect = 3, to = "results" }

[run]
send = [
    { topic = "questions", payload = "one", reply_to = "answers" },
    { topic = "questions", payload = "two", reply_to = "answers" },
    { topic = "questions", payload = "three", reply_to = "answers" },
]
until = { topic = "never", count = 1 }
timeout_secs = 60
"#;

/// GETs `/metrics` from `addr`: the status line and the body.
fn scrape(addr: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).expect("the metrics server answers");
    stream
        .write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a response");
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

/// The value of `metric` for `agent` in a parsed scrape.
fn value(scrape: &prometheus_parse::Scrape, metric: &str, agent: &str) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|sample| sample.metric == metric && sample.labels.get("agent") == Some(agent))
        .map(|sample| match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

/// How many durations the histogram `metric` of `agent` counted.
fn histogram_count(scrape: &prometheus_parse::Scrape, metric: &str, agent: &str) -> Option<f64> {
    let count = value(scrape, &format!("{metric}_count"), agent)?;
    // Its buckets add up to the same count.
    let buckets = scrape
        .samples
        .iter()
        .find(|sample| sample.metric == metric && sample.labels.get("agent") == Some(agent))
        .map(|sample| match &sample.value {
            prometheus_parse::Value::Histogram(buckets) => buckets
                .iter()
                .find(|bucket| bucket.less_than == f64::INFINITY)
                .map_or(f64::NAN, |bucket| bucket.count),
            _ => f64::NAN,
        });
    (buckets == Some(count)).then_some(count)
}

#[test]
fn a_scrape_during_a_run_matches_its_summary_on_threads() {
    a_scrape_during_a_run_matches_its_summary("threads");
}

/// On the process engine, handler timings come back from the agent processes.
#[test]
fn a_scrape_during_a_run_matches_its_summary_on_processes() {
    a_scrape_during_a_run_matches_its_summary("process");
}

fn a_scrape_during_a_run_matches_its_summary(engine: &str) {
    let path = std::env::temp_dir().join(format!(
        "guild-metrics-{engine}-{}.toml",
        std::process::id()
    ));
    std::fs::write(&path, SPEC).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_guild"))
        .arg("run")
        .arg(&path)
        .args(["--metrics", "127.0.0.1:0", "--engine", engine])
        .env_remove("GUILD_ENGINE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("guild starts");
    let (lines, from_child) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut seen = Vec::new();
    let addr = loop {
        let line = from_child
            .recv_timeout(Duration::from_secs(30))
            .expect("guild says where its metrics are");
        seen.push(line.clone());
        if let Some(rest) = line.trim().strip_prefix("metrics at http://") {
            break rest.trim_end_matches("/metrics").to_owned();
        }
    };

    // Scrape until the three questions have been answered and the answers collected.
    let deadline = Instant::now() + Duration::from_secs(30);
    let scrape = loop {
        let (status, body) = scrape(&addr);
        assert!(status.contains("200"), "{status}");
        let parsed = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
            .expect("Prometheus text");
        // Done and idle: three answers out of the responder, one result out of the
        // collector, no handler running.
        let done = value(&parsed, "guild_agent_messages_out_total", "responder") == Some(3.0)
            && value(&parsed, "guild_agent_messages_out_total", "collector") == Some(1.0)
            && ["responder", "collector"]
                .iter()
                .all(|agent| value(&parsed, "guild_agent_busy", agent) == Some(0.0))
            && histogram_count(&parsed, "guild_agent_handler_duration_seconds", "collector")
                == Some(3.0);
        if done {
            break parsed;
        }
        assert!(
            Instant::now() < deadline,
            "the run never got through: {body}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    seen.extend(from_child.iter());
    // The summary: "  <agent>  <type>  <engine>  <in>  <out>  <errors>  <state>".
    let summary: HashMap<String, Vec<String>> = seen
        .iter()
        .skip_while(|line| !line.starts_with("summary after"))
        .map(|line| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|fields| fields.len() >= 6)
        .map(|fields| (fields[0].clone(), fields))
        .collect();
    for agent in ["responder", "collector"] {
        let row = &summary[agent];
        for (column, metric) in [
            (3, "guild_agent_messages_in_total"),
            (4, "guild_agent_messages_out_total"),
            (5, "guild_agent_errors_total"),
        ] {
            let printed: f64 = row[column].parse().unwrap();
            assert_eq!(
                value(&scrape, metric, agent),
                Some(printed),
                "{metric} of {agent}: {row:?}"
            );
        }
        assert_eq!(value(&scrape, "guild_agent_running", agent), Some(1.0));
        // Every delivery handled was timed, and its wait in the queue too.
        let handled = Some(row[3].parse::<f64>().unwrap());
        for histogram in [
            "guild_agent_handler_duration_seconds",
            "guild_agent_queue_wait_seconds",
        ] {
            assert_eq!(
                histogram_count(&scrape, histogram, agent),
                handled,
                "{histogram} of {agent}"
            );
        }
    }
    assert_eq!(
        value(&scrape, "guild_agent_messages_in_total", "responder"),
        Some(3.0)
    );
}

#[test]
fn a_bad_metrics_address_fails_before_anything_starts() {
    let path = std::env::temp_dir().join(format!("guild-metrics-bad-{}.toml", std::process::id()));
    std::fs::write(&path, SPEC).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_guild"))
        .arg("run")
        .arg(&path)
        .args(["--metrics", "localhost:nine"])
        .env_remove("GUILD_ENGINE")
        .output()
        .expect("guild runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--metrics \"localhost:nine\" is not an address"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&output.stdout).contains("started"));
}
