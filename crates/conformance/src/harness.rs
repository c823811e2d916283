//! What the scenarios share: unique namespaces, publishing, and waiting with a deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use engine_core::{
    AgentSpec, ExecutionEngine, GuildContext, IdGenerator, Message, MessageId, MessagingBackend,
    NoNotify, Payload, Priority, StartFrom, SubscribeRequest, Subscription,
};

/// How long a scenario waits for something that should happen before it fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Makes a fresh backend instance.
pub type MakeMessaging<'a> = &'a dyn Fn() -> Arc<dyn MessagingBackend>;

/// Makes a fresh engine instance.
pub type MakeEngine<'a> = &'a dyn Fn() -> Arc<dyn ExecutionEngine>;

/// A namespace no other scenario (in this process or another) uses.
pub fn unique_namespace(scenario: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{scenario}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Publishes a JSON string payload to `topic` as `sender`, returning its id.
pub fn publish(
    messaging: &dyn MessagingBackend,
    namespace: &str,
    sender: &str,
    topic: &str,
    text: &str,
) -> MessageId {
    publish_with(
        messaging,
        namespace,
        sender,
        &[topic],
        text,
        Priority::Normal,
    )
}

/// Publishes a JSON string payload to `topics` at `priority`, returning its id.
pub fn publish_with(
    messaging: &dyn MessagingBackend,
    namespace: &str,
    sender: &str,
    topics: &[&str],
    text: &str,
    priority: Priority,
) -> MessageId {
    let mut builder = Message::builder(
        topics[0],
        Payload::encode_json(text).expect("a string encodes"),
    )
    .priority(priority);
    for topic in &topics[1..] {
        builder = builder.topic(*topic);
    }
    let message = builder.build(&IdGenerator::process(), namespace, sender);
    let id = message.id;
    messaging.publish(message).expect("publish");
    id
}

/// Subscribes `client` to `topics`; the test polls, so nothing is notified.
pub fn subscribe(
    messaging: &dyn MessagingBackend,
    namespace: &str,
    client: &str,
    topics: &[&str],
    start: StartFrom,
) -> Box<dyn Subscription> {
    messaging
        .subscribe(
            SubscribeRequest {
                namespace: namespace.into(),
                client_id: client.into(),
                topics: topics.iter().map(|t| (*t).to_owned()).collect(),
                start,
                limit: None,
            },
            Arc::new(NoNotify),
        )
        .expect("subscribe")
}

/// The JSON string payload of a message.
pub fn text(message: &Message) -> String {
    message
        .decode_json::<String>()
        .expect("a json string payload")
}

/// Polls `condition` (driving `engines` first, for engines that run on the caller's
/// thread) until it holds, failing the scenario with `what` at the deadline.
pub fn wait_until(
    engines: &[&dyn ExecutionEngine],
    what: &str,
    mut condition: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        for engine in engines {
            engine.drive();
        }
        if condition() {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits until no agent of `engines` has anything queued or is handling a message, and
/// their counters have stopped moving.
pub fn settle(engines: &[&dyn ExecutionEngine]) {
    let mut last = None;
    let mut stable = 0;
    wait_until(engines, "the engines are idle", || {
        let now: Vec<_> = engines.iter().map(|e| e.stats()).collect();
        let idle = now.iter().all(|s| s.busy == 0 && s.queued == 0);
        stable = if idle && last.as_ref() == Some(&now) {
            stable + 1
        } else {
            0
        };
        last = Some(now);
        stable >= 5
    });
}

/// Publishes the numbers `0..count` (as JSON) to `topic` as `publisher`, each retried
/// as the same message (the same id, so a retry after a lost reply is not stored twice)
/// until the backend takes it, and runs `fault` on a thread of its own once a third are
/// published, while publishing goes on. Returns how many publishes were refused. For
/// the fault tests: fails if the backend refuses for three minutes.
pub fn publish_numbers_through_fault(
    messaging: &dyn MessagingBackend,
    namespace: &str,
    topic: &str,
    count: u64,
    fault: impl FnOnce() + Send + 'static,
) -> u64 {
    let published = Arc::new(AtomicU64::new(0));
    let faulting = {
        let published = published.clone();
        std::thread::spawn(move || {
            while published.load(Ordering::Relaxed) < count / 3 {
                std::thread::sleep(Duration::from_millis(5));
            }
            fault();
        })
    };
    let ids = IdGenerator::process();
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut refused = 0;
    for number in 0..count {
        let payload = Payload::encode_json(&number).expect("a number encodes");
        let message = Message::builder(topic, payload).build(&ids, namespace, "publisher");
        while let Err(error) = messaging.publish(message.clone()) {
            refused += 1;
            assert!(
                Instant::now() < deadline,
                "the backend never came back: {error}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        published.store(number + 1, Ordering::Relaxed);
    }
    faulting.join().expect("the fault ran");
    refused
}

/// Starts `spec` on `engine` from a thread of its own, for tests that act while an
/// agent starts; [`Starting::finish`] waits (bounded) for `run_agent` to return.
pub fn start_in_background(
    engine: Arc<dyn ExecutionEngine>,
    guild: &GuildContext,
    spec: AgentSpec,
) -> Starting {
    let (done, finished) = std::sync::mpsc::sync_channel(1);
    let guild = guild.clone();
    std::thread::spawn(move || {
        let _ = done.send(engine.run_agent(&guild, spec));
    });
    Starting(finished)
}

/// An agent being started by [`start_in_background`].
#[derive(Debug)]
pub struct Starting(std::sync::mpsc::Receiver<engine_core::Result<()>>);

impl Starting {
    /// Waits until `run_agent` returned, failing the test if it did not by the deadline
    /// or failed.
    pub fn finish(self) {
        self.0
            .recv_timeout(DEADLINE)
            .expect("run_agent returned by the deadline")
            .expect("the agent started");
    }
}

/// How many threads this process has now (from `/proc/self/task`).
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc is mounted")
        .count()
}

/// A guild context over `messaging` with the scenario agents registered.
pub fn guild(namespace: &str, messaging: Arc<dyn MessagingBackend>) -> GuildContext {
    GuildContext::new(namespace, messaging, Arc::new(crate::agents::registry()))
}
