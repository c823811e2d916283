//! Redis crashing mid-stream under the process engine loses nothing and hangs nothing:
//! 100,000 numbered messages go from a publisher that runs ahead, through two relay
//! agents in processes of their own, to a counter in this process, while `redis-server`
//! is killed with `SIGKILL` and restarted, then killed again right after it is back.
//! Every number arrives; duplicates (allowed: delivery is at least once) are counted and
//! reported; shutdown returns promptly afterwards.
//!
//! The relays (`conformance`'s `relay` agents) do what a careful agent does on every
//! engine: retry a publish the backend refuses for now. The test proves the process engine gives them the chance, by
//! failing a publish in the call that made it, and never loses one it accepted.
//!
//! Like the conformance binary, this one is its own agent host, so it has no standard
//! test harness.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conformance::harness::{publish_numbers_through_fault, unique_namespace};
use conformance::redis_server::RedisServer;
use engine_core::{
    AgentSpec, ExecutionEngine, GuildContext, MessagingBackend, NoNotify, Outcome, StartFrom,
    SubscribeRequest,
};
use engine_process::ProcessEngine;
use libtest_mimic::{Arguments, Trial};
use messaging_redis::RedisMessaging;

const MESSAGES: u64 = 100_000;

/// How long anything in this test may take before it counts as a hang.
const HANG: Duration = Duration::from_secs(180);

fn main() {
    engine_process::run_if_agent_host(conformance::agents::registry);
    let trials = vec![Trial::test(
        "process::redis_killed_twice_mid_stream_loses_nothing",
        || {
            killed_mid_stream();
            Ok(())
        },
    )];
    libtest_mimic::run(&Arguments::from_args(), trials).exit();
}

fn killed_mid_stream() {
    let server = Arc::new(Mutex::new(RedisServer::start_persistent()));
    // Retention above the stream's length: a consumer that lags is never trimmed past.
    let url = format!("{}?maxlen={MESSAGES}", server.lock().unwrap().url());
    let messaging: Arc<dyn MessagingBackend> = Arc::new(RedisMessaging::connect(&url).unwrap());
    let namespace = unique_namespace("process-faults");
    let guild = GuildContext::new(
        namespace.as_str(),
        messaging.clone(),
        Arc::new(conformance::agents::registry()),
    );
    let engine = ProcessEngine::new();
    for (id, from, to) in [("first", "numbers", "middle"), ("second", "middle", "out")] {
        let mut spec = AgentSpec::new(id, "relay").with_topic(from);
        spec.properties = serde_json::json!({ "to": to });
        spec.start_from = StartFrom::Earliest;
        engine.run_agent(&guild, spec).unwrap();
    }

    // The counter at the end of the chain, in this process.
    let counts = Arc::new(Mutex::new(vec![0u32; MESSAGES as usize]));
    let finished = Arc::new(AtomicBool::new(false));
    let counter = {
        let (messaging, namespace) = (messaging.clone(), namespace.clone());
        let (counts, finished) = (counts.clone(), finished.clone());
        std::thread::spawn(move || count(&*messaging, &namespace, &counts, &finished))
    };

    let refused = {
        let server = server.clone();
        publish_numbers_through_fault(&*messaging, &namespace, "numbers", MESSAGES, move || {
            let mut server = server.lock().unwrap();
            server.kill();
            // Down long enough for publishes to be refused and readers to back off.
            std::thread::sleep(Duration::from_millis(1500));
            server.start_again();
            std::thread::sleep(Duration::from_millis(300));
            server.kill();
            std::thread::sleep(Duration::from_millis(500));
            server.start_again();
        })
    };

    let deadline = Instant::now() + HANG;
    let missing = || counts.lock().unwrap().iter().filter(|&&n| n == 0).count();
    while missing() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} of {MESSAGES} numbers never arrived; agents: {:?}",
            missing(),
            engine.agents_in_guild(&namespace)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    finished.store(true, Ordering::Relaxed);
    counter.join().unwrap();

    let stopping = Instant::now();
    let (done, stopped) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = done.send(engine.shutdown());
    });
    stopped
        .recv_timeout(HANG)
        .expect("shutdown returns")
        .unwrap();

    let counts = counts.lock().unwrap();
    let duplicates: u64 = counts.iter().map(|&n| u64::from(n.saturating_sub(1))).sum();
    eprintln!(
        "{MESSAGES} numbers through two process relays with Redis killed twice: none lost, \
         {duplicates} delivered more than once, {refused} publishes refused and retried by \
         the publisher; shutdown took {:?}",
        stopping.elapsed()
    );
}

/// Counts each number that reaches `out`, until `finished`.
fn count(
    messaging: &dyn MessagingBackend,
    namespace: &str,
    counts: &Mutex<Vec<u32>>,
    finished: &AtomicBool,
) {
    let request = SubscribeRequest {
        namespace: namespace.to_owned(),
        client_id: "counter".to_owned(),
        topics: vec!["out".to_owned()],
        start: StartFrom::Earliest,
        limit: None,
    };
    let mut subscription = loop {
        match messaging.subscribe(request.clone(), Arc::new(NoNotify)) {
            Ok(subscription) => break subscription,
            Err(error) if error.is_retryable() => std::thread::sleep(Duration::from_millis(10)),
            Err(error) => panic!("cannot subscribe the counter: {error}"),
        }
    };
    while !finished.load(Ordering::Relaxed) {
        match subscription.next() {
            Ok(Some(delivery)) => {
                let number: u64 = delivery.message.decode_json().unwrap();
                counts.lock().unwrap()[number as usize] += 1;
                // Completing may fail while Redis is down; the delivery is then handed
                // out again, which counts as a duplicate, never as a loss.
                while let Err(error) = subscription.complete(Outcome::Handled) {
                    assert!(error.is_retryable(), "{error}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(error) if error.is_retryable() => std::thread::sleep(Duration::from_millis(10)),
            Err(error) => panic!("the counter's subscription failed: {error}"),
        }
    }
}
