//! The supervisor's workloads on the process engine, beside raw baselines measured in
//! the same run:
//!
//! - `detect`: from an agent process's `SIGKILL` to its engine reporting the crash,
//!   beside killing a child process and reaping it (`waitpid` returning);
//! - `restart`: from an agent process's `SIGKILL` to the supervised agent, started
//!   again with no backoff, answering a request sent right after the kill; beside
//!   killing a child, reaping it, starting the same program again and reading the one
//!   byte it writes when ready.

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine_core::{AgentSpec, Backoff, ExecutionEngine, LifecycleKind, Payload, RestartPolicy};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use supervisor::{Group, NoHooks, Strategy, Supervisor};

use crate::Sample;
use crate::process::{Bench, raw_child, receive};

/// Kills per repetition.
pub(crate) const KILLS: usize = 20;

/// The supervisor's workloads on the process engine.
pub(crate) fn guild(workload: &str) -> Sample {
    let bench = Bench::new();
    let engine: Arc<dyn ExecutionEngine> = bench.engine.clone();
    let supervisor = Supervisor::start(bench.guild.clone(), Arc::new(NoHooks));
    supervisor.watch(&engine);
    let events = engine.events();
    let mut echo = AgentSpec::new("echo", "echo").with_topic("requests");
    echo.restart = Some(RestartPolicy::Permanent);
    echo.backoff = Some(Backoff::none());
    let group = Group::new(
        "bench",
        Strategy::OneForOne,
        u32::MAX,
        Duration::from_secs(1),
    );
    supervisor.supervise(&group, echo.clone(), engine.clone());
    engine.run_agent(&bench.guild, echo).expect("run");
    let (mut inbox, ping) = bench.inbox();
    let mut latencies = Vec::with_capacity(KILLS);
    let started = Instant::now();
    for _ in 0..KILLS {
        let pid = engine
            .agent_info("bench", "echo")
            .and_then(|info| info.pid)
            .expect("the echo agent runs in a process");
        let begin = Instant::now();
        kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill");
        match workload {
            "detect" => {
                wait_for(&events, |kind| {
                    matches!(kind, LifecycleKind::Crashed { .. })
                });
                latencies.push(begin.elapsed());
            }
            _ => {
                bench.send("requests", Payload::new("bytes", vec![7u8; 64]));
                receive(&mut inbox, &ping);
                latencies.push(begin.elapsed());
            }
        }
        // The next kill waits until the agent is back.
        wait_for(&events, |kind| *kind == LifecycleKind::Started);
    }
    let elapsed = started.elapsed();
    supervisor.shutdown();
    engine.shutdown().expect("shutdown");
    Sample::Latencies(latencies, elapsed)
}

/// The raw baselines: kill a child and reap it, and (`restart`) start it again.
pub(crate) fn raw(workload: &str) -> Sample {
    let mut latencies = Vec::with_capacity(KILLS);
    let started = Instant::now();
    let (mut child, mut socket) = raw_child("ready");
    socket.read_exact(&mut [0u8; 1]).expect("ready");
    for _ in 0..KILLS {
        let begin = Instant::now();
        child.kill().expect("kill");
        child.wait().expect("reap");
        if workload == "detect" {
            latencies.push(begin.elapsed());
        }
        (child, socket) = raw_child("ready");
        socket.read_exact(&mut [0u8; 1]).expect("ready");
        if workload != "detect" {
            latencies.push(begin.elapsed());
        }
    }
    let elapsed = started.elapsed();
    drop(socket);
    child.wait().expect("reap");
    Sample::Latencies(latencies, elapsed)
}

/// Waits (30 s at most) for an event of the echo agent that `wanted` accepts.
fn wait_for(events: &engine_core::EventReceiver, wanted: impl Fn(&LifecycleKind) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = events.recv_timeout(left).expect("an event within 30 s");
        if event.agent_id == "echo" && wanted(&event.kind) {
            return;
        }
    }
}
