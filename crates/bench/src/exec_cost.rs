//! The exec agent's workloads, beside a raw Python echo over a pipe in the same run:
//!
//! - `rtt`: a request from this process to an echo agent written in Python
//!   (`clients/python/guild_agent.py`, on the threads engine over the in-memory bus)
//!   and its reply (`exec`); beside writing a 64-byte line to a Python program that
//!   writes it back, and reading it (`pipe`); and beside the Python side of the
//!   protocol alone, decoding the line and writing the reply and done lines
//!   (`pipe-json`);
//! - `throughput`: as many requests as fast as they go, counting the replies.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine_core::{
    ExecutionEngine, GuildContext, Message, MessagingBackend, Outcome, Payload, inbox_topic,
};
use engine_threads::ThreadsEngine;
use messaging_memory::MemoryMessaging;

use crate::Sample;

const ECHO: &str = "
import sys
sys.path.insert(0, sys.argv[1])
import guild_agent

def handle(ctx, delivery):
    ctx.reply(delivery.payload)

guild_agent.run(handle)
";

const RAW_ECHO: &str = "
import sys
read = sys.stdin.buffer.readline
out = sys.stdout.buffer
while True:
    line = read()
    if not line:
        break
    out.write(line)
    out.flush()
";

/// The Python side of the protocol without guild: decode the delivery line, write the
/// reply and done lines, in one write.
const JSON_ECHO: &str = "
import sys, json
read = sys.stdin.buffer.readline
out = sys.stdout.buffer
while True:
    line = read()
    if not line:
        break
    d = json.loads(line)
    out.write(json.dumps({'kind': 'reply', 'to': d['id'], 'payload': d['payload']}).encode() + b'\\n')
    out.write(json.dumps({'kind': 'done', 'id': d['id']}).encode() + b'\\n')
    out.flush()
";

fn clients() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../clients/python")
}

/// A 64-byte text.
fn text() -> String {
    "x".repeat(64)
}

/// guild with an exec echo agent in Python.
pub(crate) fn guild(workload: &str, n: u64) -> Sample {
    let dir = std::env::temp_dir().join(format!("guild-bench-exec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let program = dir.join("echo.py");
    std::fs::write(&program, ECHO).expect("the program");
    let bus: Arc<dyn MessagingBackend> = Arc::new(MemoryMessaging::new());
    let guild = GuildContext::new(
        "bench",
        bus.clone(),
        Arc::new(guild::builtin::builtin_registry()),
    );
    let engine = ThreadsEngine::new();
    let mut spec = engine_core::AgentSpec::new("echo", "exec").with_topic("requests");
    spec.properties = serde_json::json!({
        "command": ["python3", program, clients()],
    });
    engine.run_agent(&guild, spec).expect("run");
    let (mut inbox, rx) = crate::process::subscribe_pinging(&*bus, &inbox_topic("bench"));
    let payload = Payload::encode_json(&text()).expect("a text");
    let send = || {
        let message =
            Message::builder("requests", payload.clone()).build(&guild.ids, "bench", "bench");
        bus.publish(message).expect("publish");
    };
    let mut receive = |count: u64| {
        let mut got = 0;
        while got < count {
            if inbox.next().expect("next").is_some() {
                inbox.complete(Outcome::Handled).expect("complete");
                got += 1;
            } else {
                rx.recv_timeout(Duration::from_secs(60))
                    .expect("a reply within a minute");
            }
        }
    };
    let started = Instant::now();
    let sample = if workload == "rtt" {
        let mut latencies = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let begin = Instant::now();
            send();
            receive(1);
            latencies.push(begin.elapsed());
        }
        Sample::Latencies(latencies, started.elapsed())
    } else {
        for _ in 0..n {
            send();
        }
        receive(n);
        Sample::Elapsed(started.elapsed())
    };
    engine.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(dir);
    sample
}

/// A raw Python echo over a pipe (`json`: decoding each line and writing the two lines
/// of the protocol's answer).
pub(crate) fn raw(workload: &str, n: u64, json: bool) -> Sample {
    let lines_per_answer = if json { 2 } else { 1 };
    let mut child = Command::new("python3")
        .args(["-c", if json { JSON_ECHO } else { RAW_ECHO }])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let line = format!(
        "{{\"kind\":\"deliver\",\"id\":\"1234567890\",\"topic\":\"requests\",\"sender\":\"bench\",\"payload\":\"{}\"}}\n",
        text()
    );
    let mut answer = String::new();
    let started = Instant::now();
    let sample = if workload == "rtt" {
        let mut latencies = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let begin = Instant::now();
            stdin.write_all(line.as_bytes()).expect("write");
            stdin.flush().expect("flush");
            for _ in 0..lines_per_answer {
                answer.clear();
                stdout.read_line(&mut answer).expect("read");
            }
            latencies.push(begin.elapsed());
        }
        Sample::Latencies(latencies, started.elapsed())
    } else {
        let writer = std::thread::spawn(move || {
            let mut stdin = std::io::BufWriter::new(stdin);
            for _ in 0..n {
                stdin.write_all(line.as_bytes()).expect("write");
            }
            stdin.flush().expect("flush");
            stdin
        });
        for _ in 0..n * lines_per_answer {
            answer.clear();
            stdout.read_line(&mut answer).expect("read");
        }
        let elapsed = started.elapsed();
        drop(writer.join().expect("writer"));
        let _ = child.wait();
        return Sample::Elapsed(elapsed);
    };
    drop(stdin);
    let _ = child.wait();
    sample
}
