//! The Redis backend leaves no thread behind: dropped with nothing subscribed, its
//! writer and readers are joined; dropped while a subscription lives, they end after
//! that subscription; `close` joins them at once and stores what was queued.
//!
//! One test in this binary, so no other test's threads come and go while it counts.

use std::time::{Duration, Instant};

use conformance::harness::{publish, unique_namespace};
use conformance::redis_server::RedisServer;
use engine_core::{ErrorKind, HistoryQuery, MessagingBackend, StartFrom};
use messaging_redis::RedisMessaging;

/// The threads of this process now.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Waits (bounded) until the process has `expected` threads.
fn wait_for_threads(expected: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while threads() != expected {
        assert!(
            Instant::now() < deadline,
            "{what}: {} threads, expected {expected}",
            threads()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn no_thread_outlives_the_backend_and_its_subscriptions() {
    let server = RedisServer::start();
    let url = format!("{}?readers=2", server.url());
    let before = threads();

    // Dropped, used or not, with nothing subscribed: joined in the drop.
    for _ in 0..5 {
        let bus = RedisMessaging::connect(&url).unwrap();
        assert_eq!(threads(), before + 3, "a writer and two readers");
        publish(&bus, &unique_namespace("threads"), "p", "t", "hello");
        drop(bus);
        assert_eq!(threads(), before, "joined when dropped");
    }

    // A subscription keeps them running after the backend is dropped; they end after it.
    let bus = RedisMessaging::connect(&url).unwrap();
    let ns = unique_namespace("threads");
    let subscription = conformance::harness::subscribe(&bus, &ns, "c", &["t"], StartFrom::Earliest);
    drop(bus);
    assert_eq!(threads(), before + 3, "alive for the subscription");
    drop(subscription);
    wait_for_threads(before, "after the last subscription");

    // `close` stores what was queued and joins at once, subscribed or not.
    let bus = RedisMessaging::connect(&url).unwrap();
    let ns = unique_namespace("threads");
    let _subscription =
        conformance::harness::subscribe(&bus, &ns, "c", &["t"], StartFrom::Earliest);
    for n in 0..100 {
        publish(&bus, &ns, "p", "t", &n.to_string());
    }
    bus.close().unwrap();
    assert_eq!(threads(), before, "joined by close");
    let refused = bus
        .publish(
            engine_core::Message::builder("t", engine_core::Payload::encode_json("late").unwrap())
                .build(&engine_core::IdGenerator::process(), ns.as_str(), "p"),
        )
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Closed);
    let reader = RedisMessaging::connect(&url).unwrap();
    let stored = reader
        .history(&ns, &HistoryQuery::Topic("t".into()))
        .unwrap();
    assert_eq!(stored.len(), 100, "close stored everything queued");
}
