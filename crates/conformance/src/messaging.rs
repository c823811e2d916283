//! The delivery contract of [`engine_core::MessagingBackend`], one scenario per promise.
//!
//! Each scenario takes a function that makes a fresh backend instance and uses
//! namespaces of its own, so scenarios can run in parallel on one shared bus.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use engine_core::{
    DeadLetter, ERROR_TOPIC, ErrorKind, Failure, HistoryQuery, IdGenerator, Message, MessageId,
    Notify, Outcome, Payload, Priority, StartFrom, SubscribeRequest, Subscription,
};

use crate::harness::{
    MakeMessaging, publish, publish_with, subscribe, text, unique_namespace, wait_until,
};

/// A client's queue drained one delivery at a time, completing each as handled.
fn drain(subscription: &mut dyn Subscription) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    while let Some(delivery) = subscription.next().expect("next") {
        seen.push((delivery.topic.to_string(), text(&delivery.message)));
        subscription.complete(Outcome::Handled).expect("complete");
    }
    seen
}

/// The payload texts of a drained queue.
fn texts(seen: &[(String, String)]) -> Vec<&str> {
    seen.iter().map(|(_, text)| text.as_str()).collect()
}

/// Counts notifications.
#[derive(Default)]
struct Counted(AtomicUsize);

impl Notify for Counted {
    fn notify(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Waits until a subscription has `n` deliveries queued (backends that deliver through
/// a network may take a moment).
fn wait_queued(subscription: &dyn Subscription, n: usize) {
    wait_until(&[], &format!("{n} deliveries are queued"), || {
        subscription.pending() >= n
    });
}

/// One client's handler runs one delivery at a time across all its topics: until the
/// delivery is completed, `next` hands out the same one again.
pub fn one_delivery_at_a_time_across_topics(make: MakeMessaging<'_>) {
    let bus = make();
    let ns = unique_namespace("one-at-a-time");
    let mut client = subscribe(&*bus, &ns, "c", &["a", "b"], StartFrom::Latest);
    publish(&*bus, &ns, "p", "a", "a1");
    publish(&*bus, &ns, "p", "b", "b1");
    wait_queued(&*client, 2);
    let first = client.next().unwrap().expect("a delivery");
    let again = client.next().unwrap().expect("the same delivery");
    assert_eq!(
        first.message.id, again.message.id,
        "a second next before completing must not hand out another"
    );
    client.complete(Outcome::Handled).unwrap();
    let second = client.next().unwrap().expect("the second delivery");
    assert_ne!(first.message.id, second.message.id);
    client.complete(Outcome::Handled).unwrap();
    assert!(client.next().unwrap().is_none());
}

/// What is queued comes out in id order: priority first, then time.
pub fn queued_deliveries_come_out_in_id_order(make: MakeMessaging<'_>) {
    let bus = make();
    let ns = unique_namespace("id-order");
    let mut client = subscribe(&*bus, &ns, "c", &["a", "b"], StartFrom::Latest);
    publish_with(&*bus, &ns, "p", &["a"], "low", Priority::Low);
    publish_with(&*bus, &ns, "p", &["b"], "normal", Priority::Normal);
    publish_with(&*bus, &ns, "p", &["a"], "urgent", Priority::Urgent);
    wait_queued(&*client, 3);
    assert_eq!(texts(&drain(&mut *client)), ["urgent", "normal", "low"]);
}

/// A more urgent message published while the client is busy overtakes everything still
/// queued for it, even what a backend may already have fetched for it in advance.
pub fn an_urgent_message_overtakes_what_is_still_queued(make: MakeMessaging<'_>) {
    let bus = make();
    let ns = unique_namespace("urgent-overtakes");
    let mut client = subscribe(&*bus, &ns, "c", &["t"], StartFrom::Latest);
    for text in ["one", "two", "three"] {
        publish(&*bus, &ns, "p", "t", text);
    }
    wait_queued(&*client, 3);
    let first = client.next().unwrap().expect("a delivery");
    assert_eq!(text(&first.message), "one");
    publish_with(&*bus, &ns, "p", &["t"], "urgent", Priority::Urgent);
    wait_queued(&*client, 4);
    client.complete(Outcome::Handled).unwrap();
    assert_eq!(texts(&drain(&mut *client)), ["urgent", "two", "three"]);
}

/// A new client starting from the latest position receives only what comes after.
pub fn new_client_from_latest_gets_only_new_messages(make: MakeMessaging<'_>) {
    let bus = make();
    let ns = unique_namespace("latest");
    publish(&*bus, &ns, "p", "t", "before");
    let mut client = subscribe(&*bus, &ns, "c", &["t"], StartFrom::Latest);
    publish(&*bus, &ns, "p", "t", "after");
    wait_queued(&*client, 1);
    assert_eq!(texts(&drain(&mut *client)), ["after"]);
}

/// A new client starting from the earliest position gets the retained backlog first.
pub fn new_client_from_earliest_replays_the_backlog(make: MakeMessaging<'_>) {
    let bus = make();
    let ns = unique_namespace("earliest");
    publish(&*bus, &ns, "p", "t", "one");
    publish(&*bus, &ns, "p", "t", "two");
    let mut client = subscribe(&*bus, &ns, "c", &["t"], StartFrom::Earliest);
    publish(&*bus, &ns, "p", "t", "three");
    wait_queued(&*client, 3);
    assert_eq!(texts(&drain(&mut *client)), ["one", "two", "three"]);
}

/// Subscribing again with the same client id resumes after the last completed message,
/// including what was published while the client was away, and replays nothing handled.
pub fn resubscribing_resumes_after_the_last_position(make: MakeMessaging<'_>) {
    let bus = make();
    let ns = unique_namespace("resume");
    let mut client = subscribe(&*bus, &ns, "c", &["t"], StartFrom::Earliest);
    publish(&*bus, &ns, "p", "t", "one");
    wait_queued(&*client, 1);
    assert_eq!(texts(&drain(&mut *client)), ["one"]);
    client.close().unwrap();
    publish(&*bus, &ns, "p", "t", "two");
    publish(&*bus, &ns, "p", "t", "three");
    let mut client = subscribe(&*make(), &ns, "c", &["t"], StartFrom::Earliest);
    wait_queued(&*client, 2);
    assert_eq!(texts(&drain(&mut *client)), ["two", "three"]);
}

/// A delivery handed out but never completed is handed out again after resubscribing.
pub fn an_unfinished_delivery_is_handed_out_again(make: MakeMessaging<'_>) {
    let bus = make();
    let ns = unique_namespace("unfinished");
    let mut client = subscribe(&*bus, &ns, "c", &["t"], StartFrom::Latest);
    publish(&*bus, &ns, "p", "t", "one");
    publish(&*bus, &ns, "p", "t", "two");
    wait_queued(&*client, 2);
    let taken = client.next().unwrap().expect("a delivery");
    assert_eq!(text(&taken.message), "one");
    drop(client);
    let mut client = subscribe(&*bus, &ns, "c", &["t"], StartFrom::Latest);
    wait_queued(&*client, 2);
    assert_eq!(texts(&drain(&mut *client)), ["one", "two"]);
}

/// A consumer working ahead gets the deliveries after the one in flight in order,
/// completes them oldest first, and gets what it worked ahead on but never completed
/// again after resubscribing. (A backend that cannot work ahead hands out nothing ahead.)
pub fn working_ahead_completes_in_order_and_resumes(make: MakeMessaging<'_>) {
    let bus = make();
    let ns = unique_namespace("work-ahead");
    let mut client = subscribe(&*bus, &ns, "c", &["t"], StartFrom::Latest);
    for word in ["one", "two", "three"] {
        publish(&*bus, &ns, "p", "t", word);
    }
    wait_queued(&*client, 3);
    let first = client.next().unwrap().expect("a delivery");
    assert_eq!(text(&first.message), "one");
    let Some(second) = client.next_ahead().unwrap() else {
        // One at a time: the in-flight delivery is still the one `next` returns.
        assert_eq!(
            text(&client.next().unwrap().expect("a delivery").message),
            "one"
        );
        return;
    };
    assert_eq!(text(&second.message), "two");
    assert_eq!(client.pending(), 3);
    client.complete(Outcome::Handled).unwrap();
    let oldest = client
        .next()
        .unwrap()
        .expect("the delivery still in flight");
    assert_eq!(text(&oldest.message), "two");
    drop(client);
    let mut client = subscribe(&*bus, &ns, "c", &["t"], StartFrom::Latest);
    wait_queued(&*client, 2);
    assert_eq!(texts(&drain(&mut *client)), ["two", "three"]);
}

/// A failed delivery is dead-lettered with who, where, what and why, and the position
/// advances past it.
pub fn a_failure_is_dead_lettered_and_the_position_advances(make: MakeMessaging<'_>) {
    let bus = make();
    let ns = unique_namespace("dead-letter");
    let mut watcher = subscribe(&*bus, &ns, "watcher", &[ERROR_TOPIC], StartFrom::Latest);
    let mut client = subscribe(&*bus, &ns, "c", &["t"], StartFrom::Latest);
    let bad = publish(&*bus, &ns, "p", "t", "bad");
    publish(&*bus, &ns, "p", "t", "good");
    wait_queued(&*client, 2);
    client.next().unwrap().expect("the bad message");
    let failure = Failure {
        kind: "error".into(),
        text: "cannot parse".into(),
    };
    client.complete(Outcome::Failed(failure.clone())).unwrap();
    assert_eq!(texts(&drain(&mut *client)), ["good"]);

    wait_queued(&*watcher, 1);
    let letter = watcher.next().unwrap().expect("a dead letter");
    let letter = DeadLetter::from_message(&letter.message).expect("a dead letter payload");
    assert_eq!(letter.client, "c");
    assert_eq!(letter.topic, "t");
    assert_eq!(letter.message.id, bad);
    assert_eq!(letter.failure, failure);
}

/// A failure while handling a dead letter is not dead-lettered again.
pub fn a_dead_letter_never_dead_letters(make: MakeMessaging<'_>) {
    let bus = make();
    let ns = unique_namespace("no-dead-dead-letters");
    let mut errors = subscribe(&*bus, &ns, "errors", &[ERROR_TOPIC], StartFrom::Latest);
    let mut client = subscribe(&*bus, &ns, "c", &["t"], StartFrom::Latest);
    publish(&*bus, &ns, "p", "t", "bad");
    wait_queued(&*client, 1);
    client.next().unwrap().expect("the message");
    let failure = Failure {
        kind: "error".into(),
        text: "first".into(),
    };
    client.complete(Outcome::Failed(failure)).unwrap();
    wait_queued(&*errors, 1);
    errors.next().unwrap().expect("the dead letter");
    let failure = Failure {
        kind: "error".into(),
        text: "second".into(),
    };
    errors.complete(Outcome::Failed(failure)).unwrap();
    publish(&*bus, &ns, "p", "t", "marker");
    wait_queued(&*client, 1);
    let letters = bus
        .history(&ns, &HistoryQuery::Topic(ERROR_TOPIC.into()))
        .unwrap();
    assert_eq!(letters.len(), 1, "only the first failure is a dead letter");
}

/// Namespaces never see each other's messages or history.
pub fn namespaces_are_isolated(make: MakeMessaging<'_>) {
    let bus = make();
    let one = unique_namespace("isolated-one");
    let two = unique_namespace("isolated-two");
    let mut in_two = subscribe(&*bus, &two, "c", &["t"], StartFrom::Latest);
    publish(&*bus, &one, "p", "t", "for one");
    publish(&*bus, &two, "p", "t", "for two");
    wait_queued(&*in_two, 1);
    assert_eq!(texts(&drain(&mut *in_two)), ["for two"]);
    let history = bus.history(&one, &HistoryQuery::Topic("t".into())).unwrap();
    assert_eq!(
        history.iter().map(|m| text(m)).collect::<Vec<_>>(),
        ["for one"]
    );
}

/// A sender never receives its own broadcast; other subscribers do.
pub fn a_sender_never_receives_its_own_message(make: MakeMessaging<'_>) {
    let bus = make();
    let ns = unique_namespace("own-message");
    let mut me = subscribe(&*bus, &ns, "me", &["t"], StartFrom::Latest);
    let mut other = subscribe(&*bus, &ns, "other", &["t"], StartFrom::Latest);
    publish(&*bus, &ns, "me", "t", "mine");
    publish(&*bus, &ns, "other", "t", "theirs");
    wait_queued(&*me, 1);
    wait_queued(&*other, 1);
    assert_eq!(texts(&drain(&mut *me)), ["theirs"]);
    assert_eq!(texts(&drain(&mut *other)), ["mine"]);
}

/// A message published to several topics is delivered once per topic to each of their
/// subscribers, and is in the history of each.
pub fn a_message_to_several_topics_is_delivered_once_per_topic(make: MakeMessaging<'_>) {
    let bus = make();
    let ns = unique_namespace("several-topics");
    let mut only_a = subscribe(&*bus, &ns, "only-a", &["a"], StartFrom::Latest);
    let mut both = subscribe(&*bus, &ns, "both", &["a", "b"], StartFrom::Latest);
    publish_with(&*bus, &ns, "p", &["a", "b"], "x", Priority::Normal);
    publish(&*bus, &ns, "p", "a", "marker");
    wait_queued(&*only_a, 2);
    wait_queued(&*both, 3);
    assert_eq!(
        drain(&mut *only_a),
        [("a".into(), "x".into()), ("a".into(), "marker".into())]
    );
    let mut seen = drain(&mut *both);
    seen.sort();
    let expected: Vec<(String, String)> = vec![
        ("a".into(), "marker".into()),
        ("a".into(), "x".into()),
        ("b".into(), "x".into()),
    ];
    assert_eq!(seen, expected);
    for topic in ["a", "b"] {
        let history = bus
            .history(&ns, &HistoryQuery::Topic(topic.into()))
            .unwrap();
        assert!(
            history.iter().any(|m| text(m) == "x"),
            "x is in the history of {topic}"
        );
    }
}

/// History of a topic: every retained message, in publish order.
pub fn history_of_a_topic_is_in_publish_order(make: MakeMessaging<'_>) {
    let bus = make();
    let ns = unique_namespace("history-order");
    let sent = ["one", "two", "three", "four", "five"];
    for text in sent {
        publish(&*bus, &ns, "p", "t", text);
    }
    publish(&*bus, &ns, "p", "other", "elsewhere");
    let history = bus.history(&ns, &HistoryQuery::Topic("t".into())).unwrap();
    assert_eq!(history.iter().map(|m| text(m)).collect::<Vec<_>>(), sent);
}

/// History after an id is by time, so a newer message of higher priority (whose id
/// sorts lower) is not skipped.
pub fn history_after_an_id_is_by_time(make: MakeMessaging<'_>) {
    let bus = make();
    let ns = unique_namespace("history-after");
    publish(&*bus, &ns, "p", "t", "old");
    let low = publish_with(&*bus, &ns, "p", &["t"], "low", Priority::Lowest);
    let urgent = publish_with(&*bus, &ns, "p", &["t"], "urgent", Priority::Urgent);
    assert!(
        urgent < low,
        "the urgent id sorts before the lowest-priority id"
    );
    let after = bus
        .history(
            &ns,
            &HistoryQuery::After {
                topic: "t".into(),
                after: low,
            },
        )
        .unwrap();
    assert_eq!(
        after.iter().map(|m| text(m)).collect::<Vec<_>>(),
        ["urgent"]
    );
}

/// History by ids answers in the order asked and leaves out unknown ids.
pub fn history_by_ids_keeps_the_requested_order(make: MakeMessaging<'_>) {
    let bus = make();
    let ns = unique_namespace("history-ids");
    let one = publish(&*bus, &ns, "p", "t", "one");
    publish(&*bus, &ns, "p", "t", "two");
    let three = publish(&*bus, &ns, "p", "u", "three");
    let unknown = MessageId::from_raw(42);
    let found = bus
        .history(&ns, &HistoryQuery::Ids(vec![three, unknown, one]))
        .unwrap();
    assert_eq!(
        found.iter().map(|m| text(m)).collect::<Vec<_>>(),
        ["three", "one"]
    );
}

/// A message that reaches the backend after a newer one (two threads or processes
/// racing to publish) is delivered and found by id like any other.
pub fn a_message_published_after_a_newer_one_is_delivered_and_found(make: MakeMessaging<'_>) {
    let bus = make();
    let ns = unique_namespace("late");
    let mut client = subscribe(&*bus, &ns, "c", &["t"], StartFrom::Latest);
    let ids = IdGenerator::process();
    let older =
        Message::builder("t", Payload::encode_json("older").unwrap()).build(&ids, ns.as_str(), "p");
    let newer =
        Message::builder("t", Payload::encode_json("newer").unwrap()).build(&ids, ns.as_str(), "p");
    let (older_id, newer_id) = (older.id, newer.id);
    bus.publish(newer).unwrap();
    wait_queued(&*client, 1);
    bus.publish(older).unwrap();
    wait_queued(&*client, 2);
    // Both are queued by now, and what is queued comes out in id order.
    assert_eq!(texts(&drain(&mut *client)), ["older", "newer"]);
    let found = bus
        .history(&ns, &HistoryQuery::Ids(vec![older_id, newer_id]))
        .unwrap();
    assert_eq!(
        found.iter().map(|m| text(m)).collect::<Vec<_>>(),
        ["older", "newer"]
    );
}

/// A burst published at once is found by id message by message, and a client that
/// closes part way through it resumes with exactly the rest.
pub fn a_burst_is_found_by_id_and_resumed_exactly(make: MakeMessaging<'_>) {
    const BURST: usize = 2_000;
    const FIRST: usize = 700;
    let bus = make();
    let ns = unique_namespace("burst");
    let mut client = subscribe(&*bus, &ns, "c", &["t"], StartFrom::Latest);
    let ids: Vec<MessageId> = (0..BURST)
        .map(|n| publish(&*bus, &ns, "p", "t", &n.to_string()))
        .collect();
    let sample: Vec<MessageId> = ids.iter().copied().step_by(7).collect();
    let found = bus
        .history(&ns, &HistoryQuery::Ids(sample.clone()))
        .unwrap();
    assert_eq!(found.iter().map(|m| m.id).collect::<Vec<_>>(), sample);

    let mut handled = Vec::new();
    while handled.len() < FIRST {
        wait_queued(&*client, 1);
        let delivery = client.next().unwrap().expect("a delivery");
        handled.push(text(&delivery.message));
        client.complete(Outcome::Handled).unwrap();
    }
    client.close().unwrap();
    let mut again = subscribe(&*bus, &ns, "c", &["t"], StartFrom::Latest);
    wait_queued(&*again, BURST - FIRST);
    handled.extend(texts(&drain(&mut *again)).into_iter().map(str::to_owned));
    let expected: Vec<String> = (0..BURST).map(|n| n.to_string()).collect();
    assert_eq!(
        handled, expected,
        "every message once, in order, across the resubscribe"
    );
}

/// Nothing one client or backend instance does removes another's messages, positions
/// or history.
pub fn nothing_one_client_does_wipes_another(make: MakeMessaging<'_>) {
    let first = make();
    let second = make();
    let ns = unique_namespace("no-wipe");
    let other_ns = unique_namespace("no-wipe-other");
    let mut keeper = subscribe(&*first, &ns, "keeper", &["t"], StartFrom::Latest);
    let mut leaver = subscribe(&*second, &ns, "leaver", &["t"], StartFrom::Latest);
    publish(&*first, &ns, "p", "t", "one");
    publish(&*first, &other_ns, "p", "t", "elsewhere");
    wait_queued(&*leaver, 1);
    assert_eq!(texts(&drain(&mut *leaver)), ["one"]);
    leaver.close().unwrap();
    drop(second);
    wait_queued(&*keeper, 1);
    assert_eq!(texts(&drain(&mut *keeper)), ["one"]);
    for (namespace, expected) in [(&ns, "one"), (&other_ns, "elsewhere")] {
        let history = first
            .history(namespace, &HistoryQuery::Topic("t".into()))
            .unwrap();
        assert_eq!(
            history.iter().map(|m| text(m)).collect::<Vec<_>>(),
            [expected]
        );
    }
}

/// The consumer is notified when work arrives, so it need not poll.
pub fn the_consumer_is_notified_when_work_arrives(make: MakeMessaging<'_>) {
    let bus = make();
    let ns = unique_namespace("notify");
    let notified = Arc::new(Counted::default());
    let mut client = bus
        .subscribe(
            SubscribeRequest {
                namespace: ns.clone(),
                client_id: "c".into(),
                topics: vec!["t".into()],
                start: StartFrom::Latest,
                limit: None,
            },
            notified.clone(),
        )
        .unwrap();
    publish(&*bus, &ns, "p", "t", "one");
    wait_until(&[], "the consumer is notified", || {
        notified.0.load(Ordering::SeqCst) > 0
    });
    assert_eq!(texts(&drain(&mut *client)), ["one"]);
}

/// Two live subscriptions with one client id are refused with a conflict.
pub fn a_client_id_has_one_live_subscription(make: MakeMessaging<'_>) {
    let bus = make();
    let ns = unique_namespace("one-live");
    let _first = subscribe(&*bus, &ns, "c", &["t"], StartFrom::Latest);
    let second = bus.subscribe(
        SubscribeRequest {
            namespace: ns,
            client_id: "c".into(),
            topics: vec!["t".into()],
            start: StartFrom::Latest,
            limit: None,
        },
        Arc::new(Counted::default()),
    );
    let error = second.err().expect("a second live subscription is refused");
    assert_eq!(error.kind(), ErrorKind::Conflict);
}
