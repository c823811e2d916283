//! The pool holds its threads fixed: a hundred thousand agents start, each handles a
//! message, and all stop, while the process has the pool's workers plus a constant
//! number of threads; and once the engine shuts down none of its threads is left.
//!
//! One test in this file, so no other test's threads are counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use conformance::harness::{publish, thread_count as threads, unique_namespace, wait_until};
use engine_core::{
    Agent, AgentContext, AgentRegistry, AgentResult, AgentSpec, ExecutionEngine, GuildContext,
    Message, MessagingBackend, inbox_topic,
};
use engine_pool::{PoolConfig, PoolEngine};
use messaging_memory::MemoryMessaging;

const AGENTS: usize = 100_000;
const WORKERS: usize = 2;

struct Count(Arc<AtomicU64>);

impl Agent for Count {
    async fn handle(&mut self, _ctx: &AgentContext, _message: &Message) -> AgentResult {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[test]
fn a_hundred_thousand_agents_run_on_a_fixed_set_of_threads_and_none_is_left() {
    let before = threads();
    let handled = Arc::new(AtomicU64::new(0));
    let mut registry = AgentRegistry::new();
    let counter = handled.clone();
    registry.register("count", move |_| Ok(Count(counter.clone())));
    let messaging: Arc<dyn MessagingBackend> = Arc::new(MemoryMessaging::new());
    let namespace = unique_namespace("pool-threads");
    let guild = GuildContext::new(namespace.as_str(), messaging.clone(), Arc::new(registry));
    let engine = PoolEngine::with_config(PoolConfig {
        workers: Some(WORKERS),
        ..PoolConfig::default()
    })
    .unwrap();
    // The workers, the timer thread the guild's timers start on first use, and a
    // little slack for the runtime's own.
    let ceiling = before + WORKERS + 4;
    let mut most = threads();

    for i in 0..AGENTS {
        engine
            .run_agent(&guild, AgentSpec::new(format!("a{i}"), "count"))
            .unwrap();
        if i % 10_000 == 0 {
            most = most.max(threads());
        }
    }
    assert_eq!(engine.stats().running, AGENTS);
    for i in 0..AGENTS {
        publish(
            &*messaging,
            &namespace,
            "test",
            &inbox_topic(&format!("a{i}")),
            "hi",
        );
        if i % 10_000 == 0 {
            most = most.max(threads());
        }
    }
    wait_until(&[], "every agent handled its message", || {
        most = most.max(threads());
        handled.load(Ordering::Relaxed) == AGENTS as u64
    });
    for i in 0..AGENTS {
        engine.stop_agent(&namespace, &format!("a{i}")).unwrap();
        if i % 10_000 == 0 {
            most = most.max(threads());
        }
    }
    assert_eq!(engine.stats().running, 0);
    assert!(
        most <= ceiling,
        "{most} threads at most, over {before} before plus {WORKERS} workers and 4"
    );

    engine.shutdown().unwrap();
    drop(engine);
    assert_eq!(threads(), before, "every thread of the pool has ended");
}
