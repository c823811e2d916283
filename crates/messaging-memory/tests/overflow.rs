//! A client's queue is bounded while it is attached, and a publish that finds it full
//! meets the client's overflow policy: it waits for room (then fails), fails at once
//! without reaching anyone, or pushes the oldest delivery out into the dead letters.

use std::sync::Arc;

use engine_core::{
    DeadLetter, ERROR_TOPIC, ErrorKind, IdGenerator, Message, MessagingBackend, NoNotify, Outcome,
    Overflow, Payload, QueueLimit, Result, StartFrom, SubscribeRequest, Subscription,
};
use messaging_memory::{MemoryConfig, MemoryMessaging};

fn bus() -> MemoryMessaging {
    MemoryMessaging::with_config(MemoryConfig::default())
}

fn publish(bus: &MemoryMessaging, topic: &str, n: u64) -> Result<()> {
    let message = Message::builder(topic, Payload::encode_json(&n).unwrap()).build(
        &IdGenerator::process(),
        "overflow",
        "publisher",
    );
    bus.publish(message)
}

fn subscribe(
    bus: &MemoryMessaging,
    client: &str,
    topic: &str,
    limit: Option<QueueLimit>,
) -> Box<dyn Subscription> {
    bus.subscribe(
        SubscribeRequest {
            namespace: "overflow".into(),
            client_id: client.into(),
            topics: vec![topic.into()],
            start: StartFrom::Latest,
            limit,
        },
        Arc::new(NoNotify),
    )
    .unwrap()
}

fn limit(capacity: usize, overflow: Overflow, block_ms: u64) -> Option<QueueLimit> {
    Some(QueueLimit {
        capacity,
        overflow,
        block_ms,
    })
}

/// Takes and completes everything queued, returning the numbers.
fn drain(subscription: &mut Box<dyn Subscription>) -> Vec<u64> {
    let mut seen = Vec::new();
    while let Some(delivery) = subscription.next().unwrap() {
        seen.push(delivery.message.decode_json().unwrap());
        subscription.complete(Outcome::Handled).unwrap();
    }
    seen
}

#[test]
fn reject_fails_at_once_and_reaches_no_one() {
    let bus = bus();
    let mut small = subscribe(&bus, "small", "t", limit(3, Overflow::Reject, 0));
    let mut roomy = subscribe(&bus, "roomy", "t", None);
    for n in 0..3 {
        publish(&bus, "t", n).unwrap();
    }
    let refused = publish(&bus, "t", 3).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::LimitExceeded);
    assert!(refused.is_retryable());
    assert!(refused.to_string().contains("\"small\""), "{refused}");
    assert_eq!(drain(&mut small), [0, 1, 2]);
    assert_eq!(drain(&mut roomy), [0, 1, 2], "all or none");
    publish(&bus, "t", 4).unwrap();
    assert_eq!(drain(&mut small), [4]);
}

#[test]
fn drop_oldest_makes_room_and_dead_letters_what_it_drops() {
    let bus = bus();
    let mut errors = subscribe(&bus, "watcher", ERROR_TOPIC, None);
    let mut small = subscribe(&bus, "small", "t", limit(3, Overflow::DropOldest, 0));
    for n in 0..5 {
        publish(&bus, "t", n).unwrap();
    }
    assert_eq!(drain(&mut small), [2, 3, 4]);
    let mut letters = Vec::new();
    while let Some(delivery) = errors.next().unwrap() {
        letters.push(DeadLetter::from_message(&delivery.message).unwrap());
        errors.complete(Outcome::Handled).unwrap();
    }
    let dropped: Vec<u64> = letters
        .iter()
        .map(|letter| letter.message.decode_json().unwrap())
        .collect();
    assert_eq!(dropped, [0, 1]);
    assert!(
        letters
            .iter()
            .all(|l| l.client == "small" && l.failure.kind == "overflow")
    );
}

#[test]
fn block_waits_for_room_then_fails_when_none_comes() {
    let bus = bus();
    let mut small = subscribe(&bus, "small", "t", limit(2, Overflow::Block, 60_000));
    publish(&bus, "t", 0).unwrap();
    publish(&bus, "t", 1).unwrap();
    // The third waits until the consumer takes one.
    let blocked = {
        let bus = bus.clone();
        std::thread::spawn(move || publish(&bus, "t", 2))
    };
    let first = small.next().unwrap().unwrap();
    assert_eq!(first.message.decode_json::<u64>().unwrap(), 0);
    small.complete(Outcome::Handled).unwrap();
    blocked.join().unwrap().unwrap();
    assert_eq!(drain(&mut small), [1, 2]);

    // With nobody taking, the wait ends in an error naming the client.
    let _stuck = subscribe(&bus, "stuck", "u", limit(1, Overflow::Block, 20));
    publish(&bus, "u", 0).unwrap();
    let refused = publish(&bus, "u", 1).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::LimitExceeded);
    assert!(refused.to_string().contains("\"stuck\""), "{refused}");
    assert!(refused.to_string().contains("for 20ms"), "{refused}");
}
