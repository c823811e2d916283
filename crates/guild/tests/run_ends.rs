//! Every `guild run` ends when it should: by its timeout on a cyclic topology on the
//! sync engine and with a handler that never returns, gracefully on `SIGINT` and
//! `SIGTERM` alike, and at once (non-zero) when an agent dies and nothing restarts it,
//! or its supervision group gives up.
//!
//! Each test runs the real command on a spec written to a temporary file. The timeouts
//! are short so the tests are, and the assertions are on exit codes and output, never
//! on how long anything took.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Writes `spec` to a file of its own and returns its path.
fn spec_file(spec: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "guild-run-ends-{}-{}.toml",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, spec).expect("the spec is written");
    path
}

fn start(spec: &str, args: &[&str]) -> Child {
    let path = spec_file(spec);
    Command::new(env!("CARGO_BIN_EXE_guild"))
        .arg("run")
        .arg(&path)
        .args(args)
        .env_remove("GUILD_ENGINE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("guild starts")
}

/// Waits for the command, failing (and killing it) if it is still running after a
/// minute: a hang is the bug these tests look for.
fn finish(mut child: Child) -> Output {
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("waitable").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("guild run did not end");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    Output {
        status,
        stdout: stdout.into_bytes(),
        stderr: stderr.into_bytes(),
    }
}

fn text(output: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Two relays that pass one message back and forth forever.
const CYCLE: &str = r#"
id = "cycle"
engine = "sync"

[[agents]]
id = "ping"
type = "relay"
topics = ["ping"]
properties = { to = ["pong"] }

[[agents]]
id = "pong"
type = "relay"
topics = ["pong"]
properties = { to = ["ping"] }

[run]
send = [{ topic = "ping", payload = 1 }]
until = { topic = "never", count = 1 }
timeout_secs = 2
"#;

#[test]
fn a_cycle_on_the_sync_engine_ends_at_its_timeout() {
    let output = finish(start(CYCLE, &[]));
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(all.contains("timed out after 2s"), "{all}");
    assert!(all.contains("summary after"), "{all}");
}

/// A worker whose one message takes far longer than the run may.
fn busy(engine: &str) -> String {
    format!(
        r#"
id = "busy"
engine = "{engine}"

[[agents]]
id = "worker"
type = "monte_carlo"
topics = ["tasks"]
properties = {{ samples = 100_000_000_000, to = "counts" }}

[run]
send = [{{ topic = "tasks", payload = {{}} }}]
until = {{ topic = "counts", count = 1 }}
timeout_secs = 1
"#
    )
}

#[test]
fn a_handler_that_never_returns_on_threads_ends_the_run_with_its_name() {
    let output = finish(start(&busy("threads"), &[]));
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(all.contains("timed out after 1s"), "{all}");
    assert!(all.contains("worker"), "{all}");
}

#[test]
fn a_handler_that_never_returns_on_the_sync_engine_ends_the_run() {
    let output = finish(start(&busy("sync"), &[]));
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(all.contains("timed out after 1s"), "{all}");
}

/// Reads the cycle's output until it has started its last agent (the run is then under
/// way), returning what it read.
fn wait_for_start(child: &mut Child) -> Vec<u8> {
    let mut seen = Vec::new();
    let stdout = child.stdout.as_mut().unwrap();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&seen).contains("started pong") {
        assert_eq!(stdout.read(&mut byte).unwrap(), 1, "guild ended early");
        seen.push(byte[0]);
    }
    seen
}

/// A guild that would run for a long time on `engine`, stopped by `signal`.
fn stopped_by(engine: &str, signal: nix::sys::signal::Signal) -> Output {
    let spec = CYCLE
        .replace("engine = \"sync\"", &format!("engine = \"{engine}\""))
        .replace("timeout_secs = 2", "timeout_secs = 600");
    let mut child = start(&spec, &[]);
    let seen = wait_for_start(&mut child);
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, signal).unwrap();
    let mut output = finish(child);
    output.stdout = [seen, output.stdout].concat();
    output
}

#[test]
fn sigterm_stops_the_run_gracefully_with_143() {
    let output = stopped_by("threads", nix::sys::signal::Signal::SIGTERM);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(143), "{all}");
    assert!(all.contains("summary after"), "{all}");
}

#[test]
fn sigint_stops_a_cycle_on_the_sync_engine_gracefully_with_130() {
    let output = stopped_by("sync", nix::sys::signal::Signal::SIGINT);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(130), "{all}");
    assert!(all.contains("summary after"), "{all}");
}

/// A worker killed by its CPU limit on the process engine.
fn dying(policy: &str) -> String {
    format!(
        r#"
id = "dying"
engine = "process"

[[agents]]
id = "worker"
type = "monte_carlo"
topics = ["tasks"]
properties = {{ samples = 100_000_000_000, to = "counts" }}
limits = {{ cpu_seconds = 1 }}

[[agents]]
id = "bystander"
type = "responder"
topics = ["questions"]

[run]
send = [{{ topic = "tasks", payload = {{}} }}]
until = {{ topic = "counts", count = 1 }}
timeout_secs = 30
on_agent_exit = "{policy}"
"#
    )
}

#[test]
fn an_agent_that_dies_ends_the_run_at_once_with_its_reason() {
    let output = finish(start(&dying("stop"), &[]));
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(all.contains("agent worker was killed by a limit"), "{all}");
    assert!(!all.contains("timed out"), "{all}");
}

#[test]
fn a_spec_may_ask_to_carry_on_when_an_agent_dies() {
    // Carrying on, the guild goes quiet once the worker is dead, and that completes it.
    let spec = dying("continue").replace(
        "until = { topic = \"counts\", count = 1 }",
        "until = { quiet_ms = 500 }",
    );
    let output = finish(start(&spec, &[]));
    let all = text(&output);
    assert!(all.contains("agent worker was killed by a limit"), "{all}");
    assert!(all.contains("carrying on"), "{all}");
    assert_eq!(output.status.code(), Some(0), "{all}");
}

#[test]
fn a_redis_outage_is_named_once_not_per_retry() {
    let mut server = conformance::redis_server::RedisServer::start();
    let spec = CYCLE
        .replace("engine = \"sync\"", "engine = \"threads\"")
        .replace("timeout_secs = 2", "timeout_secs = 3");
    let mut child = start(&spec, &["--messaging", &server.url()]);
    wait_for_start(&mut child);
    server.kill();
    let output = finish(child);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    let address = format!("127.0.0.1:{}", server.port());
    assert!(
        all.contains(&format!("Redis at {address} has been out of reach for")),
        "{all}"
    );
    let warnings = all.lines().filter(|line| line.contains("WARN")).count();
    // One for the outage, the rest from handlers and shutdown; a warning per retry
    // would be hundreds.
    assert!(
        warnings <= 10,
        "{warnings} warnings in a 3 s outage:\n{all}"
    );
}

#[test]
fn a_doubling_fan_out_ends_in_named_errors_not_out_of_memory() {
    // Each message on `t` reaches the two other relays, and each passes it on: the
    // work doubles every hop, and only the queue bound holds memory.
    let spec = r#"
id = "doubling"

[[agents]]
id = "r"
type = "relay"
replicas = 3
topics = ["t"]
properties = { to = ["t"] }
queue = { capacity = 1000, block_ms = 200 }

[run]
send = [{ topic = "t", payload = 1 }]
until = { topic = "never", count = 1 }
timeout_secs = 3
"#;
    let output = finish(start(spec, &[]));
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(all.contains("is full (1000 deliveries wait)"), "{all}");
    let peak = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .unwrap()
        .max_rss();
    assert!(
        peak < 512 * 1024,
        "a child's peak resident memory was {peak} KiB"
    );
}

#[test]
fn a_group_past_its_intensity_ends_the_run_naming_the_agent() {
    let spec = r#"
id = "giving-up"

[supervision]
max_restarts = 2
within_ms = 60_000
backoff = { initial_ms = 0 }

[[agents]]
id = "doomed"
type = "flaky"
topics = ["jobs"]
properties = { crash_every = 1, to = "done" }

[run]
send = [
    { topic = "jobs", payload = 1 }, { topic = "jobs", payload = 2 },
    { topic = "jobs", payload = 3 }, { topic = "jobs", payload = 4 },
]
until = { topic = "done", count = 1 }
timeout_secs = 30
"#;
    let output = finish(start(spec, &[]));
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        all.contains("supervision group \"default\" failed: agent doomed crashed"),
        "{all}"
    );
    assert!(all.contains("more than 2 restart(s)"), "{all}");
    assert!(all.contains("the supervisor gave up"), "{all}");
    assert!(!all.contains("timed out"), "{all}");
}
