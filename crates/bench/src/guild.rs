//! The workloads on guild: the pool or threads engine with in-memory messaging, agents
//! built from specs through a registry, messages published through the backend as a
//! user would.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use engine_core::{
    Agent, AgentContext, AgentRegistry, AgentResult, AgentSpec, ExecutionEngine, GuildContext,
    Message, MessagingBackend, Notify, Outcome, Payload, StartFrom, SubscribeRequest, inbox_topic,
};
use engine_pool::PoolEngine;
use engine_threads::ThreadsEngine;
use messaging_memory::MemoryMessaging;
use serde_json::json;

use crate::{Sample, System, resident_bytes};

/// guild over the in-memory bus, on one of its engines.
#[derive(Clone, Copy)]
pub(crate) enum Guild {
    /// The pool engine with its defaults: a worker per core.
    Pool,
    /// The threads engine: a thread per agent.
    Threads,
}

/// Counts messages and says when it has seen `expect` of them.
struct Sink {
    expect: u64,
    seen: u64,
    done: Sender<()>,
}

impl Agent for Sink {
    async fn handle(&mut self, _ctx: &AgentContext, _message: &Message) -> AgentResult {
        self.seen += 1;
        if self.seen == self.expect {
            self.done.send(())?;
        }
        Ok(())
    }
}

/// Replies to every message with its payload.
struct Echo;

impl Agent for Echo {
    async fn handle(&mut self, ctx: &AgentContext, message: &Message) -> AgentResult {
        ctx.reply(message, message.payload.clone())?;
        Ok(())
    }
}

/// Passes the token (the hops left) to the next agent's inbox.
struct RingNode {
    next: String,
    done: Sender<()>,
}

impl Agent for RingNode {
    async fn handle(&mut self, ctx: &AgentContext, message: &Message) -> AgentResult {
        let hops = decode(&message.payload);
        if hops == 0 {
            self.done.send(())?;
        } else {
            ctx.send(self.next.clone(), encode(hops - 1))?;
        }
        Ok(())
    }
}

/// Does nothing.
struct Idle;

impl Agent for Idle {
    async fn handle(&mut self, _ctx: &AgentContext, _message: &Message) -> AgentResult {
        Ok(())
    }
}

fn encode(n: u64) -> Payload {
    Payload::copy_of("u64", &n.to_le_bytes())
}

fn decode(payload: &Payload) -> u64 {
    u64::from_le_bytes(payload.bytes[..8].try_into().expect("an 8-byte payload"))
}

/// A registry of the benchmark agents, reporting completions on the returned channel.
fn registry() -> (AgentRegistry, Receiver<()>) {
    let (done, finished) = crossbeam_channel::unbounded();
    let mut registry = AgentRegistry::new();
    let sink_done = done.clone();
    registry
        .register("sink", move |spec| {
            let expect = spec.properties["expect"]
                .as_u64()
                .ok_or("sink needs `expect`")?;
            Ok(Sink {
                expect,
                seen: 0,
                done: sink_done.clone(),
            })
        })
        .register("echo", |_| Ok(Echo))
        .register("ring", move |spec| {
            let next = spec.properties["next"]
                .as_str()
                .ok_or("ring needs `next`")?
                .to_owned();
            Ok(RingNode {
                next,
                done: done.clone(),
            })
        })
        .register("idle", |_| Ok(Idle));
    (registry, finished)
}

struct Run {
    guild: GuildContext,
    engine: Box<dyn ExecutionEngine>,
    finished: Receiver<()>,
}

impl Run {
    fn new(on: Guild) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let (registry, finished) = registry();
        let namespace = format!("bench-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let messaging: Arc<dyn MessagingBackend> = Arc::new(MemoryMessaging::new());
        Self {
            guild: GuildContext::new(namespace.as_str(), messaging, Arc::new(registry)),
            engine: match on {
                Guild::Pool => Box::new(PoolEngine::new().expect("the pool starts")),
                Guild::Threads => Box::new(ThreadsEngine::new()),
            },
            finished,
        }
    }

    fn launch(&self, spec: AgentSpec) {
        self.engine
            .run_agent(&self.guild, spec)
            .expect("the agent starts");
    }

    /// Publishes as `sender`, shared as agents share their ids.
    fn publish(&self, topic: &str, sender: &Arc<str>, payload: Payload) {
        let message = Message::builder(topic, payload).build(
            &self.guild.ids,
            self.guild.namespace.clone(),
            sender.clone(),
        );
        self.guild.messaging.publish(message).expect("publish");
    }

    fn wait(&self, completions: usize) {
        for _ in 0..completions {
            self.finished.recv().expect("a completion");
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.engine.shutdown();
    }
}

/// Wakes the thread that waits for replies.
struct Unpark(Thread);

impl Notify for Unpark {
    fn notify(&self) {
        self.0.unpark();
    }
}

impl System for Guild {
    fn tell(&self, n: u64) -> Sample {
        let run = Run::new(*self);
        run.launch(AgentSpec::new("sink", "sink").with_properties(json!({ "expect": n })));
        let inbox = inbox_topic("sink");
        let producer: Arc<str> = "producer".into();
        let started = Instant::now();
        for i in 0..n {
            run.publish(&inbox, &producer, encode(i));
        }
        run.wait(1);
        Sample::Elapsed(started.elapsed())
    }

    fn ask(&self, n: u64) -> Sample {
        let run = Run::new(*self);
        run.launch(AgentSpec::new("echo", "echo"));
        let mut replies = run
            .guild
            .messaging
            .subscribe(
                SubscribeRequest {
                    namespace: run.guild.namespace.to_string(),
                    client_id: "asker".into(),
                    topics: vec![inbox_topic("asker")],
                    start: StartFrom::Latest,
                    limit: None,
                },
                Arc::new(Unpark(std::thread::current())),
            )
            .expect("subscribe");
        let inbox = inbox_topic("echo");
        let asker: Arc<str> = "asker".into();
        let mut latencies = Vec::with_capacity(n as usize);
        let started = Instant::now();
        for i in 0..n {
            let asked = Instant::now();
            run.publish(&inbox, &asker, encode(i));
            loop {
                if replies.next().expect("next").is_some() {
                    replies.complete(Outcome::Handled).expect("complete");
                    break;
                }
                std::thread::park();
            }
            latencies.push(asked.elapsed());
        }
        Sample::Latencies(latencies, started.elapsed())
    }

    fn fanout(&self, agents: usize, n: u64) -> Sample {
        let run = Run::new(*self);
        for a in 0..agents {
            let spec = AgentSpec::new(format!("sink-{a}"), "sink")
                .with_topic("fan")
                .with_properties(json!({ "expect": n }));
            run.launch(spec);
        }
        let producer: Arc<str> = "producer".into();
        let started = Instant::now();
        for i in 0..n {
            run.publish("fan", &producer, encode(i));
        }
        run.wait(agents);
        Sample::Elapsed(started.elapsed())
    }

    fn ring(&self, agents: usize, hops: u64) -> Sample {
        let run = Run::new(*self);
        for a in 0..agents {
            let next = inbox_topic(&format!("node-{}", (a + 1) % agents));
            run.launch(
                AgentSpec::new(format!("node-{a}"), "ring")
                    .with_properties(json!({ "next": next })),
            );
        }
        let started = Instant::now();
        run.publish(&inbox_topic("node-0"), &"bench".into(), encode(hops));
        run.wait(1);
        Sample::Elapsed(started.elapsed())
    }

    fn start(&self, n: usize) -> Sample {
        let run = Run::new(*self);
        let before = resident_bytes();
        let started = Instant::now();
        for a in 0..n {
            run.launch(AgentSpec::new(format!("idle-{a}"), "idle"));
        }
        let elapsed = started.elapsed();
        std::thread::sleep(Duration::from_millis(100));
        let resident = resident_bytes().saturating_sub(before);
        let stopping = Instant::now();
        run.engine.shutdown().expect("the engine stops");
        Sample::StartedAndStopped(elapsed, resident, stopping.elapsed())
    }
}
