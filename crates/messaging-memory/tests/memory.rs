//! What the in-memory backend promises beyond the shared delivery contract: bounded
//! retention, bounded queues for detached clients, one shared copy of each message, and
//! one bus shared by every handle in a process.

use std::collections::HashMap;
use std::sync::Arc;

use engine_core::{
    HistoryQuery, IdGenerator, Message, MessagingBackend, Outcome, Payload, StartFrom, Subscription,
};
use messaging_memory::{MemoryConfig, MemoryMessaging};

fn publish(bus: &MemoryMessaging, namespace: &str, topic: &str, n: u64) {
    let message = Message::builder(topic, Payload::encode_json(&n).unwrap()).build(
        &IdGenerator::process(),
        namespace,
        "publisher",
    );
    bus.publish(message).unwrap();
}

fn subscribe(
    bus: &MemoryMessaging,
    namespace: &str,
    client: &str,
    topic: &str,
) -> Box<dyn Subscription> {
    conformance::harness::subscribe(bus, namespace, client, &[topic], StartFrom::Latest)
}

fn history(bus: &MemoryMessaging, namespace: &str, topic: &str) -> Vec<u64> {
    bus.history(namespace, &HistoryQuery::Topic(topic.into()))
        .unwrap()
        .iter()
        .map(|m| m.decode_json().unwrap())
        .collect()
}

#[test]
fn retention_is_bounded_per_topic() {
    let config = MemoryConfig {
        retention: 5,
        topic_retention: HashMap::from([("short".to_owned(), 2)]),
        ..MemoryConfig::default()
    };
    let bus = MemoryMessaging::with_config(config);
    for n in 0..20 {
        publish(&bus, "ns", "long", n);
        publish(&bus, "ns", "short", n);
    }
    assert_eq!(history(&bus, "ns", "long"), [15, 16, 17, 18, 19]);
    assert_eq!(history(&bus, "ns", "short"), [18, 19]);
    let trimmed = bus
        .history("ns", &HistoryQuery::Topic("long".into()))
        .unwrap()[0]
        .id;
    let old = MemoryMessaging::with_config(MemoryConfig::default());
    assert!(
        old.history("ns", &HistoryQuery::Ids(vec![trimmed]))
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        bus.history("ns", &HistoryQuery::Ids(vec![trimmed]))
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_detached_client_keeps_only_the_newest_messages_up_to_its_limit() {
    let config = MemoryConfig {
        detached_queue_limit: 3,
        ..MemoryConfig::default()
    };
    let bus = MemoryMessaging::with_config(config);
    subscribe(&bus, "ns", "away", "t").close().unwrap();
    for n in 0..10 {
        publish(&bus, "ns", "t", n);
    }
    let mut back = subscribe(&bus, "ns", "away", "t");
    let mut seen = Vec::new();
    while let Some(delivery) = back.next().unwrap() {
        seen.push(delivery.message.decode_json::<u64>().unwrap());
        back.complete(Outcome::Handled).unwrap();
    }
    assert_eq!(seen, [7, 8, 9]);
}

#[test]
fn subscribers_share_one_copy_of_each_message() {
    let bus = MemoryMessaging::with_config(MemoryConfig::default());
    let mut one = subscribe(&bus, "ns", "one", "t");
    let mut two = subscribe(&bus, "ns", "two", "t");
    publish(&bus, "ns", "t", 1);
    let a = one.next().unwrap().unwrap().message;
    let b = two.next().unwrap().unwrap().message;
    assert!(Arc::ptr_eq(&a, &b), "both clients hold the same allocation");
    let stored = &bus.history("ns", &HistoryQuery::Topic("t".into())).unwrap()[0];
    assert!(Arc::ptr_eq(&a, stored), "so does the history");
}

#[test]
fn process_wide_handles_share_one_bus_and_new_ones_do_not() {
    let namespace = format!("shared-bus-{}", std::process::id());
    let first = MemoryMessaging::process_wide(MemoryConfig::default());
    let second = MemoryMessaging::process_wide(MemoryConfig::default());
    let private = MemoryMessaging::new();
    let clone = private.clone();
    publish(&first, &namespace, "t", 1);
    assert_eq!(history(&second, &namespace, "t"), [1]);
    assert!(history(&private, &namespace, "t").is_empty());
    publish(&private, &namespace, "t", 2);
    assert_eq!(
        history(&clone, &namespace, "t"),
        [2],
        "clones share their bus"
    );
    assert_eq!(history(&first, &namespace, "t"), [1]);
}
