//! The workloads on ractor, written as its documentation shows: an `Actor` with a message
//! enum, `cast` to tell, `call` to ask, on a multi-threaded tokio runtime.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::runtime::Runtime;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

use crate::{RingSeat, Sample, System, resident_bytes};

/// ractor on a tokio runtime with the default number of workers.
pub(crate) struct Ractor {
    runtime: Runtime,
}

impl Ractor {
    pub(crate) fn new() -> Self {
        Self {
            runtime: crate::tokio_runtime(),
        }
    }
}

enum Msg {
    Tell(#[allow(dead_code, reason = "the payload is carried, not read")] u64),
    Ask(u64, RpcReplyPort<u64>),
    Token(u64),
}

struct Node;

struct State {
    expect: u64,
    seen: u64,
    done: UnboundedSender<()>,
    ring: RingSeat<ActorRef<Msg>>,
}

impl Actor for Node {
    type Msg = Msg;
    type State = State;
    type Arguments = State;

    async fn pre_start(
        &self,
        _myself: ActorRef<Msg>,
        args: State,
    ) -> Result<State, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Msg>,
        message: Msg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            Msg::Tell(_) => {
                state.seen += 1;
                if state.seen == state.expect {
                    state.done.send(())?;
                }
            }
            Msg::Ask(n, reply) => reply.send(n)?,
            Msg::Token(0) => state.done.send(())?,
            Msg::Token(hops) => {
                let (index, ring) = state.ring.as_ref().expect("a ring node");
                let nodes = ring.get().expect("the ring is complete");
                nodes[(index + 1) % nodes.len()].cast(Msg::Token(hops - 1))?;
            }
        }
        Ok(())
    }
}

fn state(expect: u64, done: &UnboundedSender<()>) -> State {
    State {
        expect,
        seen: 0,
        done: done.clone(),
        ring: None,
    }
}

async fn spawn(args: State) -> ActorRef<Msg> {
    Actor::spawn(None, Node, args)
        .await
        .expect("the actor starts")
        .0
}

impl System for Ractor {
    fn tell(&self, n: u64) -> Sample {
        self.runtime.block_on(async {
            let (done, mut finished) = unbounded_channel();
            let sink = spawn(state(n, &done)).await;
            let started = Instant::now();
            for i in 0..n {
                sink.cast(Msg::Tell(i)).expect("cast");
            }
            finished.recv().await;
            let elapsed = started.elapsed();
            sink.stop(None);
            Sample::Elapsed(elapsed)
        })
    }

    fn ask(&self, n: u64) -> Sample {
        self.runtime.block_on(async {
            let (done, _finished) = unbounded_channel();
            let echo = spawn(state(0, &done)).await;
            let mut latencies = Vec::with_capacity(n as usize);
            let started = Instant::now();
            for i in 0..n {
                let asked = Instant::now();
                let reply = ractor::call!(echo, Msg::Ask, i).expect("a reply");
                assert_eq!(reply, i);
                latencies.push(asked.elapsed());
            }
            let elapsed = started.elapsed();
            echo.stop(None);
            Sample::Latencies(latencies, elapsed)
        })
    }

    fn fanout(&self, agents: usize, n: u64) -> Sample {
        self.runtime.block_on(async {
            let (done, mut finished) = unbounded_channel();
            let mut sinks = Vec::new();
            for _ in 0..agents {
                sinks.push(spawn(state(n, &done)).await);
            }
            let started = Instant::now();
            for i in 0..n {
                for sink in &sinks {
                    sink.cast(Msg::Tell(i)).expect("cast");
                }
            }
            for _ in 0..agents {
                finished.recv().await;
            }
            let elapsed = started.elapsed();
            sinks.iter().for_each(|sink| sink.stop(None));
            Sample::Elapsed(elapsed)
        })
    }

    fn ring(&self, agents: usize, hops: u64) -> Sample {
        self.runtime.block_on(async {
            let (done, mut finished) = unbounded_channel();
            let ring = Arc::new(OnceLock::new());
            let mut nodes = Vec::new();
            for index in 0..agents {
                let mut args = state(0, &done);
                args.ring = Some((index, ring.clone()));
                nodes.push(spawn(args).await);
            }
            let _ = ring.set(nodes.clone());
            let started = Instant::now();
            nodes[0].cast(Msg::Token(hops)).expect("cast");
            finished.recv().await;
            let elapsed = started.elapsed();
            nodes.iter().for_each(|node| node.stop(None));
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
                nodes.push(spawn(state(0, &done)).await);
            }
            let elapsed = started.elapsed();
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let resident = resident_bytes().saturating_sub(before);
            nodes.iter().for_each(|node| node.stop(None));
            Sample::Started(elapsed, resident)
        })
    }
}
