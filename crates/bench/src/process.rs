//! The process engine's workloads, beside raw baselines measured in the same run:
//!
//! - `spawn`: start-to-ready latency of one agent process (`process`), beside starting
//!   this program and reading one byte it writes back over a socket pair (`unix`);
//! - `rtt`: a request from this process to an agent in another process and its reply,
//!   beside a 64-byte echo over a Unix socket pair with a child process;
//! - `oneway`: messages from this process to an agent in another process, counted by
//!   the agent, beside 64-byte frames written through a buffered Unix socket.
//!
//! Both sides run this same program, so both pay the same exec and page-fault costs.

use std::io::{BufReader, BufWriter, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use engine_core::{
    Agent, AgentContext, AgentRegistry, AgentResult, AgentSpec, ExecutionEngine, GuildContext,
    Message, MessagingBackend, Outcome, Payload, StartFrom, SubscribeRequest, inbox_topic,
};
use engine_process::{ProcessConfig, ProcessEngine};
use messaging_memory::{MemoryConfig, MemoryMessaging};

use crate::Sample;

/// Set in the environment of a raw baseline's child: what it does.
pub(crate) const RAW_CHILD: &str = "BENCH_RAW_CHILD";

/// Agent processes started per `spawn` repetition.
pub(crate) const SPAWNS: usize = 20;

/// The agent types agent processes of this benchmark run.
pub(crate) fn registry() -> AgentRegistry {
    let mut registry = AgentRegistry::new();
    registry
        .register("echo", |_| Ok(Echo))
        .register("idle", |_| Ok(Idle))
        .register("pinger", |spec| {
            let to = spec.properties["to"].as_str().unwrap_or("pings").to_owned();
            let n = spec.properties["n"].as_u64().unwrap_or(1);
            Ok(crate::cluster::Pinger::new(to, n))
        })
        .register("sink", |spec| {
            let expect = spec.properties["expect"].as_u64().unwrap_or(1);
            Ok(Sink { expect, seen: 0 })
        });
    registry
}

struct Echo;

impl Agent for Echo {
    async fn handle(&mut self, ctx: &AgentContext, message: &Message) -> AgentResult {
        ctx.reply(message, message.payload.clone())?;
        Ok(())
    }
}

struct Idle;

impl Agent for Idle {
    async fn handle(&mut self, _ctx: &AgentContext, _message: &Message) -> AgentResult {
        Ok(())
    }
}

/// Counts messages and tells the sender of the last one when it has seen `expect`.
struct Sink {
    expect: u64,
    seen: u64,
}

impl Agent for Sink {
    async fn handle(&mut self, ctx: &AgentContext, message: &Message) -> AgentResult {
        self.seen += 1;
        if self.seen.is_multiple_of(self.expect) {
            ctx.reply(
                message,
                Payload::new("u64", self.seen.to_le_bytes().to_vec()),
            )?;
        }
        Ok(())
    }
}

/// Runs a raw baseline's child when this process is one; returns otherwise.
pub(crate) fn run_if_raw_child() {
    let Ok(role) = std::env::var(RAW_CHILD) else {
        return;
    };
    let connection = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .expect("the socket on standard input");
    let mut socket = UnixStream::from(connection);
    match role.as_str() {
        // Say ready, then wait for the parent to hang up.
        "ready" => {
            socket.write_all(&[1]).expect("write");
            let _ = socket.read(&mut [0u8; 1]);
        }
        // Echo 64-byte messages until the parent hangs up.
        "echo" => {
            let mut message = [0u8; 64];
            while socket.read_exact(&mut message).is_ok() {
                socket.write_all(&message).expect("write");
            }
        }
        // Count 64-byte frames; answer with one byte per `n` read, `n` given first.
        "drain" => {
            let mut reader = BufReader::with_capacity(64 * 1024, socket.try_clone().unwrap());
            let mut count = [0u8; 8];
            reader.read_exact(&mut count).expect("count");
            let n = u64::from_le_bytes(count);
            let mut frame = [0u8; 64];
            let mut seen = 0u64;
            while reader.read_exact(&mut frame).is_ok() {
                seen += 1;
                if seen.is_multiple_of(n) {
                    socket.write_all(&[1]).expect("write");
                }
            }
        }
        other => panic!("unknown raw child role {other:?}"),
    }
    std::process::exit(0);
}

pub(crate) fn raw_child(role: &str) -> (Child, UnixStream) {
    let (ours, theirs) = UnixStream::pair().expect("a socket pair");
    let child = Command::new(std::env::current_exe().expect("this program"))
        .env(RAW_CHILD, role)
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .spawn()
        .expect("spawn");
    (child, ours)
}

/// The raw baselines.
pub(crate) fn raw(workload: &str, n: u64) -> Sample {
    match workload {
        "spawn" => {
            let started = Instant::now();
            let mut latencies = Vec::with_capacity(SPAWNS);
            let mut children = Vec::with_capacity(SPAWNS);
            for _ in 0..SPAWNS {
                let begin = Instant::now();
                let (child, mut socket) = raw_child("ready");
                socket.read_exact(&mut [0u8; 1]).expect("ready");
                latencies.push(begin.elapsed());
                children.push((child, socket));
            }
            let elapsed = started.elapsed();
            for (mut child, socket) in children {
                drop(socket);
                child.wait().expect("wait");
            }
            Sample::Latencies(latencies, elapsed)
        }
        "rtt" => {
            let (mut child, mut socket) = raw_child("echo");
            let mut latencies = Vec::with_capacity(n as usize);
            let mut message = [7u8; 64];
            let started = Instant::now();
            for _ in 0..n {
                let begin = Instant::now();
                socket.write_all(&message).expect("write");
                socket.read_exact(&mut message).expect("read");
                latencies.push(begin.elapsed());
            }
            let elapsed = started.elapsed();
            drop(socket);
            child.wait().expect("wait");
            Sample::Latencies(latencies, elapsed)
        }
        _ => {
            let (mut child, socket) = raw_child("drain");
            let mut answer = socket.try_clone().expect("clone");
            let mut writer = BufWriter::with_capacity(64 * 1024, socket);
            writer.write_all(&n.to_le_bytes()).expect("write");
            let started = Instant::now();
            for i in 0..n {
                let mut frame = [0u8; 64];
                frame[..8].copy_from_slice(&i.to_le_bytes());
                writer.write_all(&frame).expect("write");
            }
            writer.flush().expect("flush");
            answer.read_exact(&mut [0u8; 1]).expect("done");
            let elapsed = started.elapsed();
            drop(writer);
            drop(answer);
            child.wait().expect("wait");
            Sample::Elapsed(elapsed)
        }
    }
}

/// A guild whose test client `bench` receives replies in its inbox.
pub(crate) struct Bench {
    pub(crate) engine: Arc<ProcessEngine>,
    pub(crate) guild: GuildContext,
}

impl Bench {
    pub(crate) fn new() -> Self {
        let messaging: Arc<dyn MessagingBackend> =
            Arc::new(MemoryMessaging::with_config(MemoryConfig::default()));
        let guild = GuildContext::new("bench", messaging, Arc::new(registry()));
        let engine = Arc::new(ProcessEngine::with_config(ProcessConfig::default()));
        Self { engine, guild }
    }

    /// The bench's own inbox, and a channel that says when something arrived.
    pub(crate) fn inbox(&self) -> (Box<dyn engine_core::Subscription>, Receiver<()>) {
        subscribe_pinging(&*self.guild.messaging, &inbox_topic("bench"))
    }

    pub(crate) fn send(&self, topic: &str, payload: Payload) {
        let message = Message::builder(topic, payload).build(&self.guild.ids, "bench", "bench");
        self.guild.messaging.publish(message).expect("publish");
    }
}

/// Subscribes the client `bench` of the namespace `bench` to `topic`, with a channel
/// that says when something arrived.
pub(crate) fn subscribe_pinging(
    messaging: &dyn MessagingBackend,
    topic: &str,
) -> (Box<dyn engine_core::Subscription>, Receiver<()>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let subscription = messaging
        .subscribe(
            SubscribeRequest {
                namespace: "bench".into(),
                client_id: "bench".into(),
                topics: vec![topic.to_owned()],
                start: StartFrom::Latest,
                limit: None,
            },
            Arc::new(Ping(tx)),
        )
        .expect("subscribe");
    (subscription, rx)
}

/// Says on a channel when a subscription has something.
struct Ping(crossbeam_channel::Sender<()>);

impl engine_core::Notify for Ping {
    fn notify(&self) {
        let _ = self.0.send(());
    }
}

/// Waits for the next delivery on `inbox` and completes it.
pub(crate) fn receive(inbox: &mut Box<dyn engine_core::Subscription>, ping: &Receiver<()>) {
    loop {
        if inbox.next().expect("next").is_some() {
            inbox.complete(Outcome::Handled).expect("complete");
            return;
        }
        ping.recv_timeout(Duration::from_secs(30))
            .expect("a reply within 30 s");
    }
}

/// The process engine's workloads.
pub(crate) fn guild(workload: &str, n: u64) -> Sample {
    let bench = Bench::new();
    let sample = match workload {
        "spawn" => {
            let started = Instant::now();
            let mut latencies = Vec::with_capacity(SPAWNS);
            for i in 0..SPAWNS {
                let begin = Instant::now();
                bench
                    .engine
                    .run_agent(&bench.guild, AgentSpec::new(format!("idle-{i}"), "idle"))
                    .expect("run");
                latencies.push(begin.elapsed());
            }
            Sample::Latencies(latencies, started.elapsed())
        }
        "rtt" => {
            let echo = AgentSpec::new("echo", "echo").with_topic("requests");
            bench.engine.run_agent(&bench.guild, echo).expect("run");
            let (mut inbox, ping) = bench.inbox();
            let mut latencies = Vec::with_capacity(n as usize);
            let started = Instant::now();
            for _ in 0..n {
                let begin = Instant::now();
                bench.send("requests", Payload::new("bytes", vec![7u8; 64]));
                receive(&mut inbox, &ping);
                latencies.push(begin.elapsed());
            }
            Sample::Latencies(latencies, started.elapsed())
        }
        _ => {
            let mut sink = AgentSpec::new("sink", "sink").with_topic("items");
            sink.properties = serde_json::json!({ "expect": n });
            bench.engine.run_agent(&bench.guild, sink).expect("run");
            let (mut inbox, ping) = bench.inbox();
            let started = Instant::now();
            for _ in 0..n {
                bench.send("items", Payload::new("bytes", vec![7u8; 64]));
            }
            receive(&mut inbox, &ping);
            Sample::Elapsed(started.elapsed())
        }
    };
    bench.engine.shutdown().expect("shutdown");
    sample
}
