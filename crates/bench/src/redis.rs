//! The Redis backend's workloads, beside raw baselines measured in the same run against
//! the same private `redis-server`:
//!
//! - `throughput`: messages from one agent to another through Redis, publish to handled
//!   (`redis`), beside pipelined `XADD`s of the same size with the `redis` crate
//!   (`redis-raw`);
//! - `latency`: one message at a time, from publish until the receiving agent handles
//!   it, beside `PUBLISH` until a `SUBSCRIBE`d connection receives it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use conformance::redis_server::RedisServer;
use crossbeam_channel::Sender;
use engine_core::{
    Agent, AgentContext, AgentRegistry, AgentResult, AgentSpec, ExecutionEngine, GuildContext,
    IdGenerator, Message, MessagingBackend, Payload,
};
use engine_threads::ThreadsEngine;
use messaging_redis::RedisMessaging;

use crate::Sample;

/// Tells the bench each time it has handled `every` messages.
struct Counter {
    every: u64,
    seen: u64,
    done: Sender<()>,
}

impl Agent for Counter {
    async fn handle(&mut self, _ctx: &AgentContext, _message: &Message) -> AgentResult {
        self.seen += 1;
        if self.seen.is_multiple_of(self.every) {
            self.done.send(())?;
        }
        Ok(())
    }
}

fn payload() -> Payload {
    Payload::new("bytes", vec![7u8; 64])
}

/// guild over Redis: a publisher and a counting agent on the threads engine.
pub(crate) fn guild(workload: &str, n: u64) -> Sample {
    let server = RedisServer::start();
    let messaging: Arc<dyn MessagingBackend> =
        Arc::new(RedisMessaging::connect(&server.url()).expect("connect"));
    let every = if workload == "throughput" { n } else { 1 };
    let (done_tx, done) = crossbeam_channel::unbounded();
    let mut registry = AgentRegistry::new();
    registry.register("counter", move |_| {
        Ok(Counter {
            every,
            seen: 0,
            done: done_tx.clone(),
        })
    });
    let guild = GuildContext::new("bench", messaging.clone(), Arc::new(registry));
    let engine = ThreadsEngine::new();
    engine
        .run_agent(
            &guild,
            AgentSpec::new("counter", "counter").with_topic("items"),
        )
        .expect("run");
    let ids = IdGenerator::process();
    let send = || {
        let message = Message::builder("items", payload()).build(&ids, "bench", "publisher");
        messaging.publish(message).expect("publish");
    };
    let wait = || done.recv_timeout(Duration::from_secs(60)).expect("handled");
    let sample = if workload == "throughput" {
        let started = Instant::now();
        for _ in 0..n {
            send();
        }
        wait();
        Sample::Elapsed(started.elapsed())
    } else {
        let started = Instant::now();
        let mut latencies = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let begin = Instant::now();
            send();
            wait();
            latencies.push(begin.elapsed());
        }
        Sample::Latencies(latencies, started.elapsed())
    };
    engine.shutdown().expect("shutdown");
    sample
}

/// The `redis` crate alone: pipelined `XADD`s, and `PUBLISH` to a subscriber.
pub(crate) fn raw(workload: &str, n: u64) -> Sample {
    let server = RedisServer::start();
    let client = redis::Client::open(server.url()).expect("client");
    let mut connection = client.get_connection().expect("connect");
    let bytes = vec![7u8; 64];
    if workload == "throughput" {
        let started = Instant::now();
        let mut sent = 0;
        while sent < n {
            let batch = (n - sent).min(1_000);
            let mut pipe = redis::pipe();
            for _ in 0..batch {
                pipe.cmd("XADD")
                    .arg("items")
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(10_000)
                    .arg("*")
                    .arg("m")
                    .arg(&bytes)
                    .ignore();
            }
            pipe.query::<()>(&mut connection).expect("xadd");
            sent += batch;
        }
        return Sample::Elapsed(started.elapsed());
    }
    let (received_tx, received) = crossbeam_channel::unbounded();
    let mut subscriber = client.get_connection().expect("connect");
    let listening = std::thread::spawn(move || {
        let mut pubsub = subscriber.as_pubsub();
        pubsub.subscribe("items").expect("subscribe");
        let _ = received_tx.send(());
        for _ in 0..n {
            pubsub.get_message().expect("message");
            let _ = received_tx.send(());
        }
    });
    received.recv().expect("subscribed");
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let begin = Instant::now();
        redis::cmd("PUBLISH")
            .arg("items")
            .arg(&bytes)
            .query::<i64>(&mut connection)
            .expect("publish");
        received.recv().expect("received");
        latencies.push(begin.elapsed());
    }
    let elapsed = started.elapsed();
    listening.join().expect("listener");
    Sample::Latencies(latencies, elapsed)
}
