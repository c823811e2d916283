//! Redis going away mid-stream loses nothing and duplicates nothing: 100,000 numbered
//! messages go from a publisher to an agent while the server restarts (with append-only
//! persistence), or while every client connection is killed; every number is handled
//! exactly once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conformance::harness::{publish_numbers_through_fault, unique_namespace};
use conformance::redis_server::RedisServer;
use engine_core::{
    Agent, AgentContext, AgentRegistry, AgentResult, AgentSpec, ExecutionEngine, GuildContext,
    Message, MessagingBackend, StartFrom,
};
use engine_threads::ThreadsEngine;
use messaging_redis::RedisMessaging;

const MESSAGES: u64 = 100_000;

/// Counts how often each number was handled.
struct Tally(Arc<Mutex<Vec<u32>>>);

impl Agent for Tally {
    async fn handle(&mut self, _ctx: &AgentContext, message: &Message) -> AgentResult {
        let number: u64 = message.decode_json()?;
        self.0.lock().unwrap()[number as usize] += 1;
        Ok(())
    }
}

/// Publishes every number once, retrying each until Redis takes it; `fault` runs once
/// a third of the way through, on another thread, while publishing goes on.
fn run_through(server: &Arc<Mutex<RedisServer>>, fault: impl FnOnce() + Send + 'static) {
    // Retention above the stream's length: a consumer that lags is never trimmed past.
    let url = format!("{}?maxlen={MESSAGES}", server.lock().unwrap().url());
    let counts = Arc::new(Mutex::new(vec![0u32; MESSAGES as usize]));
    let mut registry = AgentRegistry::new();
    let shared = counts.clone();
    registry.register("tally", move |_| Ok(Tally(shared.clone())));
    let messaging: Arc<dyn MessagingBackend> = Arc::new(RedisMessaging::connect(&url).unwrap());
    let namespace = unique_namespace("faults");
    let guild = GuildContext::new(namespace.as_str(), messaging.clone(), Arc::new(registry));
    let engine = ThreadsEngine::new();
    let mut tally = AgentSpec::new("tally", "tally").with_topic("numbers");
    tally.start_from = StartFrom::Earliest;
    engine.run_agent(&guild, tally).unwrap();

    let refused =
        publish_numbers_through_fault(&*messaging, &namespace, "numbers", MESSAGES, fault);

    let deadline = Instant::now() + Duration::from_secs(120);
    let handled = || {
        engine
            .agent_info(&namespace, "tally")
            .map_or(0, |info| info.messages_in)
    };
    while handled() < MESSAGES {
        assert!(
            Instant::now() < deadline,
            "only {} of {MESSAGES} handled",
            handled()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Anything handled twice would show up now.
    std::thread::sleep(Duration::from_millis(300));
    engine.shutdown().unwrap();
    let counts = counts.lock().unwrap();
    let missing: Vec<usize> = (0..counts.len()).filter(|&n| counts[n] == 0).collect();
    let twice: Vec<usize> = (0..counts.len()).filter(|&n| counts[n] > 1).collect();
    assert!(
        missing.is_empty() && twice.is_empty(),
        "{} missing (first {:?}), {} handled more than once (first {:?})",
        missing.len(),
        missing.first(),
        twice.len(),
        twice.first()
    );
    eprintln!("{MESSAGES} numbers handled once each; {refused} publishes refused and retried");
}

#[test]
fn a_redis_restart_mid_stream_loses_and_repeats_nothing() {
    let server = Arc::new(Mutex::new(RedisServer::start_persistent()));
    let restarting = server.clone();
    run_through(&server, move || {
        let mut server = restarting.lock().unwrap();
        server.stop();
        // Down long enough for publishes to be refused and readers to back off.
        std::thread::sleep(Duration::from_millis(500));
        server.restart();
    });
}

#[test]
fn killed_connections_mid_stream_lose_and_repeat_nothing() {
    let server = Arc::new(Mutex::new(RedisServer::start()));
    let url = server.lock().unwrap().url();
    run_through(&server, move || {
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut admin = client.get_connection().unwrap();
        for _ in 0..3 {
            let killed: u64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("normal")
                .arg("SKIPME")
                .arg("yes")
                .query(&mut admin)
                .unwrap();
            assert!(killed > 0, "no connection was killed");
            std::thread::sleep(Duration::from_millis(100));
        }
    });
}
