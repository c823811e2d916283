//! The engine contract on the cluster engine over Redis: every engine and supervision
//! scenario, each
//! with a private redis-server and three node daemons (this binary started again as a
//! node, hosting agents with the process engine).
//!
//! This binary is the node daemon and the agent host too, so it has no standard test
//! harness: `main` first offers to be those, then runs the tests through
//! `libtest-mimic`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use conformance::redis_server::RedisServer;
use engine_core::{ExecutionEngine, MessagingBackend};
use engine_process::ProcessEngine;
use libtest_mimic::{Arguments, Trial};
use messaging_redis::RedisMessaging;
use support::{TestNode, cluster};

mod support;

/// Set (to the node's id) when this binary runs as a node.
const NODE: &str = "GUILD_TEST_NODE";
/// The Redis a node joins.
const REDIS: &str = "GUILD_TEST_NODE_REDIS";

fn main() {
    engine_process::run_if_agent_host(conformance::agents::registry);
    if let Ok(id) = std::env::var(NODE) {
        serve_node(&id, &std::env::var(REDIS).expect("the node's Redis"));
        return;
    }
    let arguments = Arguments::from_args();
    let mut trials = Vec::new();
    let suites = [
        ("", conformance::engine::scenarios()),
        ("supervision::", conformance::supervision::scenarios()),
    ];
    for (suite, name, scenario) in suites
        .into_iter()
        .flat_map(|(suite, scenarios)| scenarios.into_iter().map(move |(n, s)| (suite, n, s)))
    {
        trials.push(Trial::test(format!("{suite}redis::{name}"), move || {
            let server = RedisServer::start();
            let url = server.url();
            let _nodes: Vec<NodeProcess> = ["n1", "n2", "n3"]
                .iter()
                .map(|id| NodeProcess::start(id, &url))
                .collect();
            let engine =
                || -> Arc<dyn ExecutionEngine> { Arc::new(cluster(&url, Default::default(), &[])) };
            let messaging = || -> Arc<dyn MessagingBackend> {
                Arc::new(RedisMessaging::connect(&url).expect("the test server answers"))
            };
            scenario(&engine, &messaging);
            Ok(())
        }));
    }
    libtest_mimic::run(&arguments, trials).exit();
}

/// A node daemon: this binary started again, killed when dropped.
struct NodeProcess(Child);

impl NodeProcess {
    fn start(id: &str, redis: &str) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(NODE, id)
            .env(REDIS, redis)
            .stderr(Stdio::piped())
            .spawn()
            .expect("a node starts");
        let mut line = String::new();
        BufReader::new(child.stderr.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("serving"), "{line}");
        Self(child)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a node, hosting agents with the process engine, until killed.
fn serve_node(id: &str, redis: &str) {
    let node = TestNode::start(id, redis, Arc::new(ProcessEngine::new()));
    eprintln!("node {id} serving on {}", node.address);
    loop {
        std::thread::park();
    }
}
