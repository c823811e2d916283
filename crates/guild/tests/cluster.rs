//! The cluster engine over three `guild node` daemons (real processes on 127.0.0.1)
//! and a private redis-server: a node killed with SIGKILL in the middle of 100,000
//! numbered messages through a chain of two relays loses none of them; its agent is
//! placed again on a surviving node. The examples run with `--engine cluster` across
//! three nodes, and `guild nodes` lists them with what they offer.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conformance::harness::{publish_numbers_through_fault, subscribe, unique_namespace};
use conformance::redis_server::RedisServer;
use guild::engines::{ClusterConfig, ClusterEngine, Token};
use guild::messaging::RedisMessaging;
use guild::{AgentSpec, ExecutionEngine, GuildContext, MessagingBackend, Outcome, StartFrom};

const TOKEN: &str = "a-cluster-token-of-some-length";
const MESSAGES: u64 = 100_000;

/// A `guild node` daemon, killed when dropped.
struct Node {
    id: String,
    child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node(id: &str, redis: &str, extra: &[&str]) -> Node {
    let mut child = Command::new(env!("CARGO_BIN_EXE_guild"))
        .args([
            "node",
            "--id",
            id,
            "--messaging",
            redis,
            "--lease-ms",
            "1000",
        ])
        .args(extra)
        .env("GUILD_CLUSTER_TOKEN", TOKEN)
        .stderr(Stdio::piped())
        .spawn()
        .expect("guild node starts");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("serving on"), "{line}");
    // Keep draining its log, so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in stderr.lines() {});
    Node {
        id: id.to_owned(),
        child,
    }
}

/// A cluster engine over the nodes of the Redis at `url`.
fn cluster_engine(url: &str) -> ClusterEngine {
    ClusterEngine::new(ClusterConfig {
        redis: url.to_owned(),
        token: Token::new(TOKEN).unwrap(),
        tls: None,
        placement: Default::default(),
    })
    .unwrap()
}

#[test]
fn a_node_killed_mid_stream_loses_no_message() {
    let redis = RedisServer::start();
    let url = format!("{}?maxlen={MESSAGES}", redis.url());
    let nodes: Arc<Mutex<Vec<Node>>> = Arc::new(Mutex::new(
        ["n1", "n2", "n3"]
            .iter()
            .map(|id| start_node(id, &url, &[]))
            .collect(),
    ));
    let engine = cluster_engine(&url);
    let bus: Arc<dyn MessagingBackend> = Arc::new(RedisMessaging::connect(&url).unwrap());
    let namespace = unique_namespace("node-loss");
    let guild = GuildContext::new(
        namespace.as_str(),
        bus.clone(),
        Arc::new(guild::builtin::builtin_registry()),
    );
    for (id, from, to) in [("first", "numbers", "middle"), ("second", "middle", "out")] {
        let mut spec = AgentSpec::new(id, "relay").with_topic(from);
        spec.properties = serde_json::json!({ "to": [to] });
        spec.start_from = StartFrom::Earliest;
        engine.run_agent(&guild, spec).unwrap();
    }
    let mut out = subscribe(
        &*bus,
        &namespace,
        "collector",
        &["out"],
        StartFrom::Earliest,
    );

    let doomed = engine.node_of(&namespace, "first").unwrap();
    let killing = nodes.clone();
    let victim = doomed.clone();
    publish_numbers_through_fault(&*bus, &namespace, "numbers", MESSAGES, move || {
        let mut nodes = killing.lock().unwrap();
        let node = nodes.iter_mut().find(|node| node.id == victim).unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(node.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    });

    let mut seen = vec![false; MESSAGES as usize];
    let mut missing = MESSAGES;
    let deadline = Instant::now() + Duration::from_secs(180);
    while missing > 0 {
        assert!(
            Instant::now() < deadline,
            "{missing} numbers never came out"
        );
        match out.next().unwrap() {
            Some(delivery) => {
                let number: u64 = delivery.message.decode_json().unwrap();
                if !std::mem::replace(&mut seen[number as usize], true) {
                    missing -= 1;
                }
                out.complete(Outcome::Handled).unwrap();
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    let moved = engine.node_of(&namespace, "first").unwrap();
    assert_ne!(
        moved, doomed,
        "the relay of the killed node was placed again"
    );
    engine.shutdown().unwrap();
}

/// Runs the `guild` command with the cluster's token, and its output.
fn guild_command(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_guild"))
        .args(args)
        .env("GUILD_CLUSTER_TOKEN", TOKEN)
        .output()
        .expect("guild runs")
}

#[test]
fn the_examples_run_across_three_nodes_which_guild_nodes_lists() {
    let redis = RedisServer::start();
    let url = redis.url();
    // The third node hosts its agents on the pool engine rather than in processes.
    let _nodes: Vec<Node> = [("n1", "process"), ("n2", "process"), ("n3", "pool")]
        .iter()
        .map(|(id, engine)| {
            let flags = [
                "--resource",
                "gpu=2",
                "--label",
                "zone=a",
                "--engine",
                engine,
            ];
            start_node(id, &url, &flags)
        })
        .collect();
    let listed = guild_command(&["nodes", "--messaging", &url]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{listed:?}");
    for id in ["n1", "n2", "n3"] {
        let line = text
            .lines()
            .find(|line| line.contains(id))
            .unwrap_or_default();
        assert!(line.contains("gpu 2/2"), "{text}");
        assert!(line.contains("zone=a"), "{text}");
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for example in ["request-response.toml", "flaky-supervised.toml"] {
        let path = root.join("examples").join(example);
        let run = guild_command(&[
            "run",
            path.to_str().unwrap(),
            "--engine",
            "cluster",
            "--messaging",
            &url,
        ]);
        let out = String::from_utf8_lossy(&run.stdout);
        assert!(run.status.success(), "{example}: {run:?}");
        assert!(
            out.contains("cluster@n"),
            "{example}: no agent's node shown\n{out}"
        );
    }
}

#[test]
fn a_node_stops_on_sigterm_while_an_engine_follows_its_events() {
    let redis = RedisServer::start();
    let url = redis.url();
    let mut node = start_node("n1", &url, &[]);
    let engine = cluster_engine(&url);
    let bus: Arc<dyn MessagingBackend> = Arc::new(RedisMessaging::connect(&url).unwrap());
    let namespace = unique_namespace("sigterm");
    let guild = GuildContext::new(
        namespace.as_str(),
        bus,
        Arc::new(guild::builtin::builtin_registry()),
    );
    // Placing an agent connects the engine, which follows the node's event stream.
    engine
        .run_agent(&guild, AgentSpec::new("echo", "responder").with_topic("q"))
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(node.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = node.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the node did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    // The node is gone, so stopping its agent fails: only the engine's own end counts.
    let _ = engine.shutdown();
}
