//! The fault test every engine runs under its supervisor: numbered messages flow
//! through a chain of supervised relays while a fault (a `SIGKILL` of an agent process,
//! or a panic) hits a random relay every few hundred milliseconds. Afterwards every
//! number has reached the end of the chain or the dead-letter topic (where a message
//! that crashed its handler waits for replay); none is missing; duplicates (allowed:
//! delivery is at least once, and a delivery in flight at a kill is handed out again)
//! are counted and reported.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use engine_core::{
    AgentContext, AgentResult, AgentSpec, Backoff, DeadLetter, ERROR_TOPIC, ExecutionEngine,
    IdGenerator, Message, MessagingBackend, NoNotify, Outcome, Payload, RestartPolicy, StartFrom,
    SubscribeRequest,
};
use supervisor::{Group, NoHooks, Strategy, Supervisor};

use crate::harness::{MakeMessaging, guild, unique_namespace};

/// How long the run may take before it counts as a hang.
const HANG: Duration = Duration::from_secs(180);

/// The relays of the chain, in order, from topic `numbers` to topic `out`.
pub const RELAYS: [&str; 3] = ["relay-1", "relay-2", "relay-3"];

/// Relays asked to panic on their next message (agents in this process only), by
/// guild and id: tests running at once have relays of the same ids.
static PANIC_NEXT: Mutex<Option<HashSet<(String, String)>>> = Mutex::new(None);

/// Makes relay `agent` of guild `guild` (in this process) panic on its next message.
pub fn panic_next(guild: &str, agent: &str) {
    PANIC_NEXT
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get_or_insert_with(HashSet::new)
        .insert((guild.to_owned(), agent.to_owned()));
}

fn take_panic(guild: &str, agent: &str) -> bool {
    PANIC_NEXT
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_mut()
        .is_some_and(|set| set.remove(&(guild.to_owned(), agent.to_owned())))
}

/// The `relay` agent type: passes each message on to the topic its `to` property
/// names, retrying while the backend refuses for now; panics first when
/// [`panic_next`] asked it to.
pub(crate) struct Relay {
    pub(crate) to: String,
}

impl engine_core::Agent for Relay {
    async fn handle(&mut self, ctx: &AgentContext, message: &Message) -> AgentResult {
        if take_panic(ctx.namespace(), ctx.id()) {
            panic!("a fault test asked {} to panic", ctx.id());
        }
        let deadline = Instant::now() + HANG;
        loop {
            match ctx.send(self.to.clone(), message.payload.clone()) {
                Ok(_) => return Ok(()),
                Err(error) if error.is_retryable() && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(error) => return Err(error.into()),
            }
        }
    }
}

/// What a run found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Numbers sent.
    pub messages: u64,
    /// Numbers that reached the end of the chain more than once, in total extra copies.
    pub duplicates: u64,
    /// Numbers whose message crashed a relay and waits on the dead-letter topic.
    pub dead_lettered: u64,
    /// Faults dealt.
    pub faults: u64,
    /// Restarts the supervisor made.
    pub restarts: u64,
    /// How long the run took.
    pub took: Duration,
}

/// Numbers each fault test sends through the chain.
pub const MESSAGES: u64 = 100_000;

/// Sends `messages` numbers through the chain on `engine` over a backend made by
/// `make_messaging`, dealing `fault(engine, guild, relay)` to a random relay every
/// 100–400 ms until every number is accounted for. Fails if any is missing after
/// three minutes.
pub fn chain_under_faults(
    engine: Arc<dyn ExecutionEngine>,
    make_messaging: MakeMessaging<'_>,
    messages: u64,
    fault: impl Fn(&dyn ExecutionEngine, &str, &str) + Send + 'static,
) -> Report {
    let started = Instant::now();
    let namespace = unique_namespace("chaos");
    let guild = guild(&namespace, make_messaging());
    let supervisor = Supervisor::start(guild.clone(), Arc::new(NoHooks));
    supervisor.watch(&engine);
    // Faults are the point here: the group never gives up.
    let group = Group::new(
        "chain",
        Strategy::OneForOne,
        u32::MAX,
        Duration::from_secs(1),
    );
    let topics = ["numbers", "stage-1", "stage-2", "out"];
    for (i, id) in RELAYS.iter().enumerate() {
        // Relay i listens on topic i and forwards to topic i + 1.
        let mut spec = AgentSpec::new(*id, "relay").with_topic(topics[i]);
        spec.properties = serde_json::json!({ "to": topics[i + 1] });
        spec.start_from = StartFrom::Earliest;
        spec.restart = Some(RestartPolicy::Permanent);
        spec.backoff = Some(Backoff::none());
        supervisor.supervise(&group, spec.clone(), engine.clone());
        engine.run_agent(&guild, spec).expect("the relay starts");
    }

    let counts = Arc::new(Mutex::new(vec![0u32; messages as usize]));
    let dead = Arc::new(Mutex::new(vec![false; messages as usize]));
    let done = Arc::new(AtomicBool::new(false));
    let counter = {
        let (messaging, namespace) = (guild.messaging.clone(), namespace.clone());
        let (counts, dead, done) = (counts.clone(), dead.clone(), done.clone());
        std::thread::spawn(move || count(&*messaging, &namespace, &counts, &dead, &done))
    };
    let faults = Arc::new(AtomicU64::new(0));
    let faulting = {
        let (engine, namespace, done, faults) = (
            engine.clone(),
            namespace.clone(),
            done.clone(),
            faults.clone(),
        );
        std::thread::spawn(move || {
            let mut seed = started.elapsed().as_nanos() as u64 | 1;
            let mut next = || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100 + next() % 300));
                let relay = RELAYS[(next() % RELAYS.len() as u64) as usize];
                fault(&*engine, &namespace, relay);
                faults.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    publish_numbers(&*guild.messaging, &namespace, messages);
    let deadline = Instant::now() + HANG;
    let missing = || {
        let counts = counts.lock().unwrap_or_else(PoisonError::into_inner);
        let dead = dead.lock().unwrap_or_else(PoisonError::into_inner);
        counts
            .iter()
            .zip(dead.iter())
            .filter(|(count, dead)| **count == 0 && !**dead)
            .count()
    };
    loop {
        let left = missing();
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} of {messages} numbers never arrived; agents: {:?}",
            engine.agents_in_guild(&namespace)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    done.store(true, Ordering::Relaxed);
    faulting.join().expect("the faults ran");
    counter.join().expect("the counter ran");
    let restarts = RELAYS.iter().map(|id| supervisor.restarts(id)).sum();
    supervisor.shutdown();
    engine.shutdown().expect("the engine shuts down");

    let counts = counts.lock().unwrap_or_else(PoisonError::into_inner);
    let dead = dead.lock().unwrap_or_else(PoisonError::into_inner);
    Report {
        messages,
        duplicates: counts.iter().map(|&n| u64::from(n.saturating_sub(1))).sum(),
        dead_lettered: dead.iter().filter(|&&d| d).count() as u64,
        faults: faults.load(Ordering::Relaxed),
        restarts,
        took: started.elapsed(),
    }
}

/// Publishes the numbers `0..count` to `numbers`, retrying what the backend refuses
/// for now.
fn publish_numbers(messaging: &dyn MessagingBackend, namespace: &str, count: u64) {
    let ids = IdGenerator::process();
    let deadline = Instant::now() + HANG;
    for number in 0..count {
        let payload = Payload::encode_json(&number).expect("a number encodes");
        let message = Message::builder("numbers", payload).build(&ids, namespace, "publisher");
        while let Err(error) = messaging.publish(message.clone()) {
            assert!(
                Instant::now() < deadline,
                "publishing failed for good: {error}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Counts each number that reaches `out`, and marks those dead-lettered, until `done`.
fn count(
    messaging: &dyn MessagingBackend,
    namespace: &str,
    counts: &Mutex<Vec<u32>>,
    dead: &Mutex<Vec<bool>>,
    done: &AtomicBool,
) {
    let request = SubscribeRequest {
        namespace: namespace.to_owned(),
        client_id: "counter".to_owned(),
        topics: vec!["out".to_owned(), ERROR_TOPIC.to_owned()],
        start: StartFrom::Earliest,
        limit: None,
    };
    let mut subscription = messaging
        .subscribe(request, Arc::new(NoNotify))
        .expect("the counter subscribes");
    while !done.load(Ordering::Relaxed) {
        match subscription.next() {
            Ok(Some(delivery)) => {
                if &*delivery.topic == ERROR_TOPIC {
                    let letter =
                        DeadLetter::from_message(&delivery.message).expect("a dead letter");
                    let number: u64 = letter.message.decode_json().expect("a number");
                    dead.lock().unwrap_or_else(PoisonError::into_inner)[number as usize] = true;
                } else {
                    let number: u64 = delivery.message.decode_json().expect("a number");
                    counts.lock().unwrap_or_else(PoisonError::into_inner)[number as usize] += 1;
                }
                subscription
                    .complete(Outcome::Handled)
                    .expect("the counter completes");
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(error) => panic!("the counter's subscription failed: {error}"),
        }
    }
}
