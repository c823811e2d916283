//! How the Redis backend stores messages, seen from outside: frames from several
//! publishers on one stream, retention by age, and entries it cannot read.

use std::time::{SystemTime, UNIX_EPOCH};

use conformance::harness::{publish, text, unique_namespace, wait_until};
use conformance::redis_server::RedisServer;
use engine_core::{
    HistoryQuery, IdGenerator, Message, MessageId, MessagingBackend, Outcome, Payload, Priority,
    StartFrom, Subscription,
};
use messaging_redis::RedisMessaging;

/// Subscribes `client` to `topic` from the earliest message.
fn subscribe(bus: &RedisMessaging, ns: &str, client: &str, topic: &str) -> Box<dyn Subscription> {
    conformance::harness::subscribe(bus, ns, client, &[topic], StartFrom::Earliest)
}

/// A private server, a backend on it (with `settings`, a URL query), and a namespace.
fn setup(scenario: &str, settings: &str) -> (RedisServer, RedisMessaging, String) {
    let server = RedisServer::start();
    let bus = RedisMessaging::connect(&format!("{}{settings}", server.url())).unwrap();
    (server, bus, unique_namespace(scenario))
}

/// A connection of the test's own, beside the backend's.
fn raw_connection(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

/// Handles deliveries until `n` have come, returning their texts.
fn take(subscription: &mut dyn Subscription, n: usize) -> Vec<String> {
    let mut seen = Vec::new();
    wait_until(&[], &format!("{n} deliveries"), || {
        while let Some(delivery) = subscription.next().unwrap() {
            seen.push(text(&delivery.message));
            subscription.complete(Outcome::Handled).unwrap();
        }
        seen.len() >= n
    });
    seen
}

/// Two backend instances (two publishers, as two processes would be) publish to one
/// topic at once while Redis holds writes back for a moment, so both send large
/// batches whose frames span overlapping id ranges, some reaching Redis after newer
/// messages of the other. Every message is delivered once and found by id.
#[test]
fn two_publishers_on_one_stream_lose_repeat_and_hide_nothing() {
    const EACH: usize = 5_000;
    let (server, reader, ns) = setup("two-publishers", "");
    let mut client = subscribe(&reader, &ns, "c", "t");
    let mut raw = raw_connection(&server);
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1_000)
        .arg("WRITE")
        .query::<()>(&mut raw)
        .unwrap();
    let ids: Vec<Vec<MessageId>> = std::thread::scope(|scope| {
        let handles: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|name| {
                let (url, ns) = (server.url(), ns.clone());
                scope.spawn(move || {
                    let bus = RedisMessaging::connect(&url).unwrap();
                    (0..EACH)
                        .map(|n| publish(&bus, &ns, name, "t", &format!("{name}{n}")))
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut seen = take(&mut *client, 2 * EACH);
    seen.sort();
    let mut expected: Vec<String> = ["a", "b"]
        .iter()
        .flat_map(|name| (0..EACH).map(move |n| format!("{name}{n}")))
        .collect();
    expected.sort();
    assert_eq!(seen, expected);
    let all: Vec<MessageId> = ids.concat();
    let found = reader
        .history(&ns, &HistoryQuery::Ids(all.clone()))
        .unwrap();
    let found: Vec<MessageId> = found.iter().map(|m| m.id).collect();
    let missing = all.iter().filter(|id| !found.contains(id)).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} messages not found by id",
        all.len()
    );
    assert_eq!(found, all, "found in the order asked");
}

/// With `maxage`, messages older than the age (by the time in their ids) are trimmed
/// as newer ones are published.
#[test]
fn retention_by_age_trims_old_messages() {
    let (_server, bus, ns) = setup("age", "?maxage=60");
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut old = Message::builder("t", Payload::encode_json("old").unwrap()).build(
        &IdGenerator::process(),
        ns.as_str(),
        "p",
    );
    old.id = IdGenerator::new(7)
        .unwrap()
        .next_at(Priority::Normal, now_ms - 120_000);
    old.timestamp_ms = old.id.unix_ms();
    bus.publish(old).unwrap();
    publish(&bus, &ns, "p", "t", "new");
    let kept = bus.history(&ns, &HistoryQuery::Topic("t".into())).unwrap();
    assert_eq!(kept.iter().map(|m| text(m)).collect::<Vec<_>>(), ["new"]);
}

/// An entry that is not a message (written by something else under the prefix), and
/// an entry in the bincode format of guild before protobuf frames, are passed over, with
/// an error logged, by live delivery and by history alike; what comes before and after
/// them is delivered, and they stay in the stream.
#[test]
fn an_entry_that_does_not_decode_is_passed_over() {
    let (server, bus, ns) = setup("corrupt", "");
    let mut client = subscribe(&bus, &ns, "c", "t");
    publish(&bus, &ns, "p", "t", "before");
    assert_eq!(take(&mut *client, 1), ["before"]);
    let mut raw = raw_connection(&server);
    let stream = format!("guild:{ns}:topic:t");
    for (field, junk) in [
        ("frame", &b"\x0a\x05abc"[..]),
        ("frame", b"\xff"),
        ("frame", b""),
        ("other", b"\x0a\x00"),
        // A bincode frame as guild wrote them before: a length, then the message.
        ("m", b"\x05\0\0\0\x01\x02\x03\x04\x05"),
    ] {
        redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg(field)
            .arg(junk)
            .query::<String>(&mut raw)
            .unwrap();
    }
    publish(&bus, &ns, "p", "t", "after");
    assert_eq!(take(&mut *client, 1), ["after"]);
    let history = bus.history(&ns, &HistoryQuery::Topic("t".into())).unwrap();
    assert_eq!(
        history.iter().map(|m| text(m)).collect::<Vec<_>>(),
        ["before", "after"]
    );
    let kept: usize = redis::cmd("XLEN").arg(&stream).query(&mut raw).unwrap();
    assert_eq!(kept, 7);
}

/// An entry written by a later version, whose frame and messages carry fields this
/// version does not know, is delivered and found by history like any other.
#[test]
fn an_entry_with_fields_from_a_later_version_is_delivered() {
    let (server, bus, ns) = setup("later", "");
    let mut client = subscribe(&bus, &ns, "c", "t");
    let message = Message::builder("t", Payload::encode_json("from the future").unwrap()).build(
        &IdGenerator::process(),
        ns.as_str(),
        "p",
    );
    let mut encoded = engine_core::wire::message_to_vec(&message);
    // Field 30 (a string) in the message.
    encoded.extend_from_slice(&[0xf2, 0x01, 3]);
    encoded.extend_from_slice(b"new");
    // The frame: field 1 (the message), then field 2 (a varint) of the frame itself.
    let mut frame = vec![0x0a, encoded.len() as u8];
    frame.extend_from_slice(&encoded);
    frame.extend_from_slice(&[2 << 3, 7]);
    redis::cmd("XADD")
        .arg(format!("guild:{ns}:topic:t"))
        .arg("*")
        .arg("frame")
        .arg(frame)
        .query::<String>(&mut raw_connection(&server))
        .unwrap();
    assert_eq!(take(&mut *client, 1), ["from the future"]);
    let history = bus.history(&ns, &HistoryQuery::Topic("t".into())).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(*history[0], message);
}

/// A slow client holds a bounded number of fetched deliveries; the rest waits in Redis
/// and comes, in order, as it catches up.
#[test]
fn a_slow_client_fetches_a_bounded_window() {
    const MESSAGES: usize = 30_000;
    let (_server, bus, ns) = setup("window", "");
    let mut client = subscribe(&bus, &ns, "c", "t");
    for n in 0..MESSAGES {
        publish(&bus, &ns, "p", "t", &n.to_string());
    }
    let mut most = 0;
    let mut seen = Vec::with_capacity(MESSAGES);
    wait_until(&[], "every message is handled", || {
        for _ in 0..1_000 {
            most = most.max(client.pending());
            let Some(delivery) = client.next().unwrap() else {
                break;
            };
            seen.push(text(&delivery.message));
            client.complete(Outcome::Handled).unwrap();
        }
        seen.len() == MESSAGES
    });
    let expected: Vec<String> = (0..MESSAGES).map(|n| n.to_string()).collect();
    assert_eq!(seen, expected);
    let window = messaging_redis::FETCH_AHEAD;
    assert!(
        (window / 2..=window).contains(&most),
        "{most} deliveries were held at once; the window is {window}"
    );
}
