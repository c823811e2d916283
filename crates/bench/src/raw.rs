//! The baselines: the same workloads as hand-written loops over raw channels, with no
//! runtime around them: crossbeam channels between OS threads, and tokio mpsc channels
//! between tasks.

use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::Instant;

use crossbeam_channel::{Sender, unbounded};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot};

use crate::{Sample, System, resident_bytes};

/// A thread per consumer, crossbeam channels between them.
pub(crate) struct Crossbeam;

impl System for Crossbeam {
    fn tell(&self, n: u64) -> Sample {
        let (tx, rx) = unbounded::<u64>();
        let consumer = thread::spawn(move || {
            for _ in 0..n {
                rx.recv().expect("a message");
            }
        });
        let started = Instant::now();
        for i in 0..n {
            tx.send(i).expect("send");
        }
        consumer.join().expect("the consumer ends");
        Sample::Elapsed(started.elapsed())
    }

    fn ask(&self, n: u64) -> Sample {
        let (requests, incoming) = unbounded::<(u64, Sender<u64>)>();
        let responder = thread::spawn(move || {
            while let Ok((n, reply)) = incoming.recv() {
                let _ = reply.send(n);
            }
        });
        let (reply, replies) = unbounded();
        let mut latencies = Vec::with_capacity(n as usize);
        let started = Instant::now();
        for i in 0..n {
            let asked = Instant::now();
            requests.send((i, reply.clone())).expect("send");
            assert_eq!(replies.recv().expect("a reply"), i);
            latencies.push(asked.elapsed());
        }
        let elapsed = started.elapsed();
        drop(requests);
        responder.join().expect("the responder ends");
        Sample::Latencies(latencies, elapsed)
    }

    fn fanout(&self, agents: usize, n: u64) -> Sample {
        let (senders, consumers): (Vec<_>, Vec<_>) = (0..agents)
            .map(|_| {
                let (tx, rx) = unbounded::<u64>();
                let consumer = thread::spawn(move || {
                    for _ in 0..n {
                        rx.recv().expect("a message");
                    }
                });
                (tx, consumer)
            })
            .unzip();
        let started = Instant::now();
        for i in 0..n {
            for tx in &senders {
                tx.send(i).expect("send");
            }
        }
        consumers
            .into_iter()
            .for_each(|c| c.join().expect("the consumer ends"));
        Sample::Elapsed(started.elapsed())
    }

    fn ring(&self, agents: usize, hops: u64) -> Sample {
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..agents).map(|_| unbounded::<u64>()).unzip();
        let senders = Arc::new(senders);
        let (done, finished) = unbounded();
        let nodes: Vec<_> = receivers
            .into_iter()
            .enumerate()
            .map(|(index, rx)| {
                let (senders, done) = (senders.clone(), done.clone());
                thread::spawn(move || {
                    while let Ok(hops) = rx.recv() {
                        if hops == u64::MAX {
                            return;
                        }
                        if hops == 0 {
                            done.send(()).expect("done");
                        } else {
                            senders[(index + 1) % senders.len()]
                                .send(hops - 1)
                                .expect("send");
                        }
                    }
                })
            })
            .collect();
        let started = Instant::now();
        senders[0].send(hops).expect("send");
        finished.recv().expect("the token comes home");
        let elapsed = started.elapsed();
        senders
            .iter()
            .for_each(|tx| tx.send(u64::MAX).expect("stop"));
        nodes
            .into_iter()
            .for_each(|n| n.join().expect("the node ends"));
        Sample::Elapsed(elapsed)
    }

    fn start(&self, n: usize) -> Sample {
        let (ready, started_up) = unbounded();
        let before = resident_bytes();
        let started = Instant::now();
        let mut stops = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for _ in 0..n {
            let (stop, stopped) = unbounded::<()>();
            let ready = ready.clone();
            threads.push(thread::spawn(move || {
                ready.send(()).expect("ready");
                let _ = stopped.recv();
            }));
            stops.push(stop);
            started_up.recv().expect("the thread runs");
        }
        let elapsed = started.elapsed();
        thread::sleep(std::time::Duration::from_millis(100));
        let resident = resident_bytes().saturating_sub(before);
        drop(stops);
        threads
            .into_iter()
            .for_each(|t| t.join().expect("the thread ends"));
        Sample::Started(elapsed, resident)
    }
}

/// A task per consumer on a multi-threaded tokio runtime, tokio mpsc channels between them.
pub(crate) struct Tokio {
    runtime: Runtime,
}

impl Tokio {
    pub(crate) fn new() -> Self {
        Self {
            runtime: crate::tokio_runtime(),
        }
    }
}

impl System for Tokio {
    fn tell(&self, n: u64) -> Sample {
        self.runtime.block_on(async {
            let (tx, mut rx) = mpsc::unbounded_channel::<u64>();
            let consumer = tokio::spawn(async move {
                for _ in 0..n {
                    rx.recv().await.expect("a message");
                }
            });
            let started = Instant::now();
            for i in 0..n {
                tx.send(i).expect("send");
            }
            consumer.await.expect("the consumer ends");
            Sample::Elapsed(started.elapsed())
        })
    }

    fn ask(&self, n: u64) -> Sample {
        self.runtime.block_on(async {
            let (requests, mut incoming) = mpsc::unbounded_channel::<(u64, oneshot::Sender<u64>)>();
            tokio::spawn(async move {
                while let Some((n, reply)) = incoming.recv().await {
                    let _ = reply.send(n);
                }
            });
            let mut latencies = Vec::with_capacity(n as usize);
            let started = Instant::now();
            for i in 0..n {
                let asked = Instant::now();
                let (reply, answer) = oneshot::channel();
                requests.send((i, reply)).expect("send");
                assert_eq!(answer.await.expect("a reply"), i);
                latencies.push(asked.elapsed());
            }
            Sample::Latencies(latencies, started.elapsed())
        })
    }

    fn fanout(&self, agents: usize, n: u64) -> Sample {
        self.runtime.block_on(async {
            let mut senders = Vec::new();
            let mut consumers = Vec::new();
            for _ in 0..agents {
                let (tx, mut rx) = mpsc::unbounded_channel::<u64>();
                senders.push(tx);
                consumers.push(tokio::spawn(async move {
                    for _ in 0..n {
                        rx.recv().await.expect("a message");
                    }
                }));
            }
            let started = Instant::now();
            for i in 0..n {
                for tx in &senders {
                    tx.send(i).expect("send");
                }
            }
            for consumer in consumers {
                consumer.await.expect("the consumer ends");
            }
            Sample::Elapsed(started.elapsed())
        })
    }

    fn ring(&self, agents: usize, hops: u64) -> Sample {
        self.runtime.block_on(async {
            let ring: Arc<OnceLock<Vec<mpsc::UnboundedSender<u64>>>> = Arc::new(OnceLock::new());
            let (done, mut finished) = mpsc::unbounded_channel();
            let mut senders = Vec::new();
            for index in 0..agents {
                let (tx, mut rx) = mpsc::unbounded_channel::<u64>();
                senders.push(tx);
                let (ring, done) = (ring.clone(), done.clone());
                tokio::spawn(async move {
                    while let Some(hops) = rx.recv().await {
                        if hops == 0 {
                            let _ = done.send(());
                        } else {
                            let nodes = ring.get().expect("the ring is complete");
                            let _ = nodes[(index + 1) % nodes.len()].send(hops - 1);
                        }
                    }
                });
            }
            let _ = ring.set(senders);
            let started = Instant::now();
            ring.get().expect("the ring")[0].send(hops).expect("send");
            finished.recv().await;
            Sample::Elapsed(started.elapsed())
        })
    }

    fn start(&self, n: usize) -> Sample {
        self.runtime.block_on(async {
            let before = resident_bytes();
            let started = Instant::now();
            let mut stops = Vec::with_capacity(n);
            for _ in 0..n {
                let (stop, mut stopped) = mpsc::unbounded_channel::<()>();
                let (ready, running) = oneshot::channel();
                tokio::spawn(async move {
                    let _ = ready.send(());
                    let _ = stopped.recv().await;
                });
                running.await.expect("the task runs");
                stops.push(stop);
            }
            let elapsed = started.elapsed();
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            Sample::Started(elapsed, resident_bytes().saturating_sub(before))
        })
    }
}
