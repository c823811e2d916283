//! The workloads on actix, written as its documentation shows: `Actor` + `Handler`,
//! `do_send` to tell, `send(..).await` to ask, inside an actix `System`.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use actix::{Actor, Addr, Context, Handler, Message, System};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

use crate::{RingSeat, Sample, System as Workloads, resident_bytes};

/// actix on its own single-threaded system.
pub(crate) struct Actix;

struct Node {
    expect: u64,
    seen: u64,
    done: UnboundedSender<()>,
    ring: RingSeat<Addr<Node>>,
}

impl Actor for Node {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
struct Tell(#[allow(dead_code, reason = "the payload is carried, not read")] u64);

#[derive(Message)]
#[rtype(result = "u64")]
struct Ask(u64);

#[derive(Message)]
#[rtype(result = "()")]
struct Token(u64);

impl Handler<Tell> for Node {
    type Result = ();

    fn handle(&mut self, _msg: Tell, _ctx: &mut Context<Self>) {
        self.seen += 1;
        if self.seen == self.expect {
            let _ = self.done.send(());
        }
    }
}

impl Handler<Ask> for Node {
    type Result = u64;

    fn handle(&mut self, msg: Ask, _ctx: &mut Context<Self>) -> u64 {
        msg.0
    }
}

impl Handler<Token> for Node {
    type Result = ();

    fn handle(&mut self, msg: Token, _ctx: &mut Context<Self>) {
        if msg.0 == 0 {
            let _ = self.done.send(());
            return;
        }
        let (index, ring) = self.ring.as_ref().expect("a ring node");
        let nodes = ring.get().expect("the ring is complete");
        nodes[(index + 1) % nodes.len()].do_send(Token(msg.0 - 1));
    }
}

fn node(expect: u64, done: &UnboundedSender<()>) -> Node {
    Node {
        expect,
        seen: 0,
        done: done.clone(),
        ring: None,
    }
}

impl Workloads for Actix {
    fn tell(&self, n: u64) -> Sample {
        System::new().block_on(async {
            let (done, mut finished) = unbounded_channel();
            let sink = node(n, &done).start();
            let started = Instant::now();
            for i in 0..n {
                sink.do_send(Tell(i));
            }
            finished.recv().await;
            Sample::Elapsed(started.elapsed())
        })
    }

    fn ask(&self, n: u64) -> Sample {
        System::new().block_on(async {
            let (done, _finished) = unbounded_channel();
            let echo = node(0, &done).start();
            let mut latencies = Vec::with_capacity(n as usize);
            let started = Instant::now();
            for i in 0..n {
                let asked = Instant::now();
                let reply = echo.send(Ask(i)).await.expect("a reply");
                assert_eq!(reply, i);
                latencies.push(asked.elapsed());
            }
            Sample::Latencies(latencies, started.elapsed())
        })
    }

    fn fanout(&self, agents: usize, n: u64) -> Sample {
        System::new().block_on(async {
            let (done, mut finished) = unbounded_channel();
            let sinks: Vec<_> = (0..agents).map(|_| node(n, &done).start()).collect();
            let started = Instant::now();
            for i in 0..n {
                for sink in &sinks {
                    sink.do_send(Tell(i));
                }
            }
            for _ in 0..agents {
                finished.recv().await;
            }
            Sample::Elapsed(started.elapsed())
        })
    }

    fn ring(&self, agents: usize, hops: u64) -> Sample {
        System::new().block_on(async {
            let (done, mut finished) = unbounded_channel();
            let ring = Arc::new(OnceLock::new());
            let nodes: Vec<_> = (0..agents)
                .map(|index| {
                    let mut node = node(0, &done);
                    node.ring = Some((index, ring.clone()));
                    node.start()
                })
                .collect();
            let _ = ring.set(nodes.clone());
            let started = Instant::now();
            nodes[0].do_send(Token(hops));
            finished.recv().await;
            Sample::Elapsed(started.elapsed())
        })
    }

    fn start(&self, n: usize) -> Sample {
        System::new().block_on(async {
            let (done, _finished) = unbounded_channel();
            let before = resident_bytes();
            let started = Instant::now();
            let nodes: Vec<_> = (0..n).map(|_| node(0, &done).start()).collect();
            // Let every actor run its start-up before measuring.
            for node in &nodes {
                node.send(Ask(0)).await.expect("the actor runs");
            }
            let elapsed = started.elapsed();
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            Sample::Started(elapsed, resident_bytes().saturating_sub(before))
        })
    }
}
