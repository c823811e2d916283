//! The workloads on kameo, written as its documentation shows: `#[derive(Actor)]`, one
//! `Message` impl per message type, `tell` and `ask`, on a multi-threaded tokio runtime.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use kameo::Actor;
use kameo::actor::{ActorRef, Spawn};
use kameo::mailbox;
use kameo::message::{Context, Message};
use tokio::runtime::Runtime;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

use crate::{RingSeat, Sample, System, resident_bytes};

/// kameo on a tokio runtime with the default number of workers.
pub(crate) struct Kameo {
    runtime: Runtime,
}

impl Kameo {
    pub(crate) fn new() -> Self {
        Self {
            runtime: crate::tokio_runtime(),
        }
    }
}

#[derive(Actor)]
struct Node {
    expect: u64,
    seen: u64,
    done: UnboundedSender<()>,
    ring: RingSeat<ActorRef<Node>>,
}

struct Tell(#[allow(dead_code, reason = "the payload is carried, not read")] u64);
struct Ask(u64);
struct Token(u64);

impl Message<Tell> for Node {
    type Reply = ();

    async fn handle(&mut self, _msg: Tell, _ctx: &mut Context<Self, Self::Reply>) -> Self::Reply {
        self.seen += 1;
        if self.seen == self.expect {
            let _ = self.done.send(());
        }
    }
}

impl Message<Ask> for Node {
    type Reply = u64;

    async fn handle(&mut self, msg: Ask, _ctx: &mut Context<Self, Self::Reply>) -> Self::Reply {
        msg.0
    }
}

impl Message<Token> for Node {
    type Reply = ();

    async fn handle(&mut self, msg: Token, _ctx: &mut Context<Self, Self::Reply>) -> Self::Reply {
        if msg.0 == 0 {
            let _ = self.done.send(());
            return;
        }
        let (index, ring) = self.ring.as_ref().expect("a ring node");
        let nodes = ring.get().expect("the ring is complete");
        nodes[(index + 1) % nodes.len()]
            .tell(Token(msg.0 - 1))
            .await
            .expect("tell");
    }
}

fn spawn(
    expect: u64,
    done: &UnboundedSender<()>,
    ring: RingSeat<ActorRef<Node>>,
) -> ActorRef<Node> {
    let node = Node {
        expect,
        seen: 0,
        done: done.clone(),
        ring,
    };
    Node::spawn_with_mailbox(node, mailbox::unbounded())
}

impl System for Kameo {
    fn tell(&self, n: u64) -> Sample {
        self.runtime.block_on(async {
            let (done, mut finished) = unbounded_channel();
            let sink = spawn(n, &done, None);
            let started = Instant::now();
            for i in 0..n {
                sink.tell(Tell(i)).await.expect("tell");
            }
            finished.recv().await;
            let elapsed = started.elapsed();
            sink.kill();
            Sample::Elapsed(elapsed)
        })
    }

    fn ask(&self, n: u64) -> Sample {
        self.runtime.block_on(async {
            let (done, _finished) = unbounded_channel();
            let echo = spawn(0, &done, None);
            let mut latencies = Vec::with_capacity(n as usize);
            let started = Instant::now();
            for i in 0..n {
                let asked = Instant::now();
                let reply = echo.ask(Ask(i)).await.expect("a reply");
                assert_eq!(reply, i);
                latencies.push(asked.elapsed());
            }
            let elapsed = started.elapsed();
            echo.kill();
            Sample::Latencies(latencies, elapsed)
        })
    }

    fn fanout(&self, agents: usize, n: u64) -> Sample {
        self.runtime.block_on(async {
            let (done, mut finished) = unbounded_channel();
            let sinks: Vec<_> = (0..agents).map(|_| spawn(n, &done, None)).collect();
            let started = Instant::now();
            for i in 0..n {
                for sink in &sinks {
                    sink.tell(Tell(i)).await.expect("tell");
                }
            }
            for _ in 0..agents {
                finished.recv().await;
            }
            let elapsed = started.elapsed();
            sinks.iter().for_each(|sink| sink.kill());
            Sample::Elapsed(elapsed)
        })
    }

    fn ring(&self, agents: usize, hops: u64) -> Sample {
        self.runtime.block_on(async {
            let (done, mut finished) = unbounded_channel();
            let ring = Arc::new(OnceLock::new());
            let nodes: Vec<_> = (0..agents)
                .map(|index| spawn(0, &done, Some((index, ring.clone()))))
                .collect();
            let _ = ring.set(nodes.clone());
            let started = Instant::now();
            nodes[0].tell(Token(hops)).await.expect("tell");
            finished.recv().await;
            let elapsed = started.elapsed();
            nodes.iter().for_each(|node| node.kill());
            Sample::Elapsed(elapsed)
        })
    }

    fn start(&self, n: usize) -> Sample {
        self.runtime.block_on(async {
            let (done, _finished) = unbounded_channel();
            let before = resident_bytes();
            let started = Instant::now();
            let mut nodes = Vec::with_capacity(n);
            for _ in 0..n {
                let node = spawn(0, &done, None);
                node.wait_for_startup().await;
                nodes.push(node);
            }
            let elapsed = started.elapsed();
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let resident = resident_bytes().saturating_sub(before);
            nodes.iter().for_each(|node| node.kill());
            Sample::Started(elapsed, resident)
        })
    }
}
