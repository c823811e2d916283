//! The cluster engine's workloads, beside the same work on one machine in the same run,
//! each cell with a private `redis-server`:
//!
//! - `spawn`: start one agent on a node daemon (this program started again as a node,
//!   hosting agents with the process engine) until it is subscribed and ready, through
//!   the node service over gRPC, the agents spread over two nodes (`cluster`); beside starting the same agent with the
//!   process engine in this process, over the same Redis (`local`);
//! - `rtt`: request/reply between an agent on one node and an agent on another, through
//!   Redis, timed by the requesting agent (`cluster`); beside the same two agents on one
//!   threads engine in this process, over the same Redis (`local`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conformance::redis_server::RedisServer;
use engine_cluster::{ClusterConfig, ClusterEngine, ClusterSpec, Node, NodeOptions, Token};
use engine_core::{
    Agent, AgentContext, AgentResult, AgentSpec, ExecutionEngine, GuildContext, Message,
    MessagingBackend, Outcome, Payload,
};
use engine_process::ProcessEngine;
use engine_threads::ThreadsEngine;
use messaging_redis::RedisMessaging;

use crate::Sample;

/// Set (to the node's id) when this program runs as a node.
const NODE: &str = "BENCH_NODE";
/// The Redis the node joins.
const NODE_REDIS: &str = "BENCH_NODE_REDIS";
/// A resource the node offers one of, so each agent of `rtt` lands on its own node.
const NODE_OFFERS: &str = "BENCH_NODE_OFFERS";

const TOKEN: &str = "a-benchmark-cluster-token";

/// Agents started per `spawn` repetition.
const SPAWNS: usize = crate::process::SPAWNS;

/// Requests from one agent to another, each answered before the next: the number of
/// round trips it was told to make, and where to send them.
pub(crate) struct Pinger {
    pub(crate) to: String,
    pub(crate) n: u64,
    sent: Option<Instant>,
    took: Vec<u64>,
}

impl Pinger {
    pub(crate) fn new(to: String, n: u64) -> Self {
        Self {
            to,
            n,
            sent: None,
            took: Vec::new(),
        }
    }

    fn ping(&mut self, ctx: &AgentContext) -> AgentResult {
        self.sent = Some(Instant::now());
        ctx.send(&self.to, Payload::new("bytes", vec![7u8; 64]))?;
        Ok(())
    }
}

impl Agent for Pinger {
    async fn handle(&mut self, ctx: &AgentContext, message: &Message) -> AgentResult {
        if message.in_reply_to.is_none() {
            // Told to go.
            self.took.clear();
            return self.ping(ctx);
        }
        let sent = self.sent.take().ok_or("a reply to no request")?;
        self.took.push(sent.elapsed().as_nanos() as u64);
        if (self.took.len() as u64) < self.n {
            return self.ping(ctx);
        }
        ctx.send("results", Payload::encode_json(&self.took)?)?;
        Ok(())
    }
}

/// Runs this program as a node when it was started as one; never returns then.
pub(crate) fn serve_if_node() {
    let Ok(id) = std::env::var(NODE) else {
        return;
    };
    let redis = std::env::var(NODE_REDIS).expect("the node's Redis");
    let mut options = NodeOptions::new(&redis, Token::new(TOKEN).expect("a token"));
    options.id = Some(id);
    if let Ok(offer) = std::env::var(NODE_OFFERS) {
        options.capacity.insert(offer, 1.0);
    }
    let node = Node::start(
        options,
        Arc::new(ProcessEngine::new()),
        Arc::new(crate::process::registry()),
    )
    .expect("the node starts");
    eprintln!("serving {}", node.address());
    loop {
        std::thread::park();
    }
}

/// A node daemon: this program started again, killed when dropped.
struct NodeProcess(Child);

impl NodeProcess {
    fn start(id: &str, redis: &str, offers: &str) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("this program"))
            .env(NODE, id)
            .env(NODE_REDIS, redis)
            .env(NODE_OFFERS, offers)
            .stderr(Stdio::piped())
            .spawn()
            .expect("a node starts");
        let mut line = String::new();
        BufReader::new(child.stderr.as_mut().expect("its stderr"))
            .read_line(&mut line)
            .expect("the node says where it serves");
        assert!(line.starts_with("serving"), "{line}");
        Self(child)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A spec asking for one of `resource`, which one node offers.
fn on(spec: AgentSpec, resource: &str) -> AgentSpec {
    let mut spec = spec;
    spec.resources.insert(resource.to_owned(), 1.0);
    spec
}

/// The cluster engine over two nodes, one offering `ping` and the other `echo`.
pub(crate) fn guild(workload: &str, n: u64) -> Sample {
    let server = RedisServer::start();
    let url = server.url();
    let _nodes = [
        NodeProcess::start("n1", &url, "ping"),
        NodeProcess::start("n2", &url, "echo"),
    ];
    let engine = ClusterEngine::new(ClusterConfig {
        redis: url.clone(),
        token: Token::new(TOKEN).expect("a token"),
        tls: None,
        placement: ClusterSpec::default(),
    })
    .expect("the cluster's Redis answers");
    let messaging: Arc<dyn MessagingBackend> =
        Arc::new(RedisMessaging::connect(&url).expect("connect"));
    let guild = GuildContext::new("bench", messaging, Arc::new(crate::process::registry()));
    let sample = match workload {
        "spawn" => spawn(&engine, &guild, |i| {
            AgentSpec::new(format!("idle-{i}"), "idle")
        }),
        _ => rtt(
            &engine,
            &guild,
            n,
            |spec| on(spec, "ping"),
            |spec| on(spec, "echo"),
        ),
    };
    engine.shutdown().expect("shutdown");
    sample
}

/// The same work on one machine: agent processes of the process engine (`spawn`), or
/// both agents on one threads engine (`rtt`), over the same kind of Redis.
pub(crate) fn local(workload: &str, n: u64) -> Sample {
    let server = RedisServer::start();
    let messaging: Arc<dyn MessagingBackend> =
        Arc::new(RedisMessaging::connect(&server.url()).expect("connect"));
    let guild = GuildContext::new("bench", messaging, Arc::new(crate::process::registry()));
    let engine: Box<dyn ExecutionEngine> = match workload {
        "spawn" => Box::new(ProcessEngine::new()),
        _ => Box::new(ThreadsEngine::new()),
    };
    let sample = match workload {
        "spawn" => spawn(&*engine, &guild, |i| {
            AgentSpec::new(format!("idle-{i}"), "idle")
        }),
        _ => rtt(&*engine, &guild, n, |spec| spec, |spec| spec),
    };
    engine.shutdown().expect("shutdown");
    sample
}

/// Starts agents one after another, timing each until it is ready.
fn spawn(
    engine: &dyn ExecutionEngine,
    guild: &GuildContext,
    spec: impl Fn(usize) -> AgentSpec,
) -> Sample {
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(SPAWNS);
    for i in 0..SPAWNS {
        let begin = Instant::now();
        engine.run_agent(guild, spec(i)).expect("run");
        latencies.push(begin.elapsed());
    }
    Sample::Latencies(latencies, started.elapsed())
}

/// A pinger and an echo, placed as `pinger` and `echo` say; the pinger makes `n`
/// round trips and reports how long each took.
fn rtt(
    engine: &dyn ExecutionEngine,
    guild: &GuildContext,
    n: u64,
    pinger: impl Fn(AgentSpec) -> AgentSpec,
    echo: impl Fn(AgentSpec) -> AgentSpec,
) -> Sample {
    let (mut results, rx) = crate::process::subscribe_pinging(&*guild.messaging, "results");
    engine
        .run_agent(
            guild,
            echo(AgentSpec::new("echo", "echo").with_topic("pings")),
        )
        .expect("run");
    let mut spec = AgentSpec::new("pinger", "pinger").with_topic("go");
    spec.properties = serde_json::json!({ "to": "pings", "n": n });
    engine.run_agent(guild, pinger(spec)).expect("run");
    let started = Instant::now();
    let go = Message::builder("go", Payload::new("bytes", Vec::new()))
        .build(&guild.ids, "bench", "bench");
    guild.messaging.publish(go).expect("publish");
    let took: Vec<u64> = loop {
        if let Some(delivery) = results.next().expect("next") {
            let took = delivery
                .message
                .decode_json()
                .expect("the pinger's figures");
            results.complete(Outcome::Handled).expect("complete");
            break took;
        }
        rx.recv_timeout(Duration::from_secs(120))
            .expect("the pinger's figures within two minutes");
    };
    let elapsed = started.elapsed();
    Sample::Latencies(
        took.into_iter().map(Duration::from_nanos).collect(),
        elapsed,
    )
}
