//! An agent that is starting is recorded as `Starting` and visible to queries, and the
//! engine is not held while it starts: its start hook may call back into the engine,
//! and other agents are started, stopped and queried meanwhile.
//!
//! The slow start is a gate the test opens, not a sleep, so what happens "meanwhile"
//! is certain; every wait is bounded, so a deadlock fails the test instead of hanging.

use std::sync::{Arc, Condvar, Mutex, OnceLock};

use conformance::harness::{DEADLINE, guild, start_in_background, unique_namespace, wait_until};
use engine_core::{
    Agent, AgentContext, AgentRegistry, AgentResult, AgentSpec, AgentState, ExecutionEngine,
    ExecutionEngineExt, GuildContext, Message,
};
use engine_threads::ThreadsEngine;
use messaging_memory::MemoryMessaging;

/// A gate a start hook waits at until the test opens it.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn wait(&self) {
        let open = self.open.lock().unwrap();
        let (open, _) = self
            .opened
            .wait_timeout_while(open, DEADLINE, |open| !*open)
            .unwrap();
        assert!(*open, "the gate was never opened");
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

/// Waits at the gate in its start hook.
struct Slow(Arc<Gate>);

impl Agent for Slow {
    async fn start(&mut self, _ctx: &AgentContext) -> AgentResult {
        self.0.wait();
        Ok(())
    }

    async fn handle(&mut self, _ctx: &AgentContext, _message: &Message) -> AgentResult {
        Ok(())
    }
}

/// Asks the engine about its guild from its start hook.
struct Curious(Arc<OnceLock<Arc<ThreadsEngine>>>);

impl Agent for Curious {
    async fn start(&mut self, ctx: &AgentContext) -> AgentResult {
        let engine = self.0.get().expect("the engine is set");
        let me = engine
            .agent_info(ctx.namespace(), ctx.id())
            .ok_or("the engine does not know the agent that is starting")?;
        if me.state != AgentState::Starting {
            return Err(format!("seen as {:?} while starting", me.state).into());
        }
        Ok(())
    }

    async fn handle(&mut self, _ctx: &AgentContext, _message: &Message) -> AgentResult {
        Ok(())
    }
}

fn setup(scenario: &str, registry: AgentRegistry) -> (Arc<ThreadsEngine>, GuildContext) {
    let mut guild = guild(
        &unique_namespace(scenario),
        Arc::new(MemoryMessaging::new()),
    );
    guild.registry = Arc::new(registry);
    (Arc::new(ThreadsEngine::new()), guild)
}

/// Runs `run_agent` on another thread, failing if it has not returned by the deadline.
fn run_bounded(engine: &Arc<ThreadsEngine>, guild: &GuildContext, spec: AgentSpec) {
    start_in_background(engine.clone(), guild, spec).finish();
}

#[test]
fn a_start_hook_may_query_the_engine() {
    let slot: Arc<OnceLock<Arc<ThreadsEngine>>> = Arc::default();
    let mut registry = AgentRegistry::new();
    let for_agent = slot.clone();
    registry.register("curious", move |_| Ok(Curious(for_agent.clone())));
    let (engine, guild) = setup("curious", registry);
    slot.set(engine.clone()).ok().unwrap();
    run_bounded(&engine, &guild, AgentSpec::new("c", "curious"));
    assert!(engine.is_agent_running(&guild.namespace, "c"));
    engine.shutdown().unwrap();
}

#[test]
fn others_are_started_stopped_and_queried_while_one_starts_slowly() {
    let gate = Arc::new(Gate::default());
    let mut registry = conformance::agents::registry();
    let for_agent = gate.clone();
    registry.register("slow", move |_| Ok(Slow(for_agent.clone())));
    let (engine, guild) = setup("slow", registry);

    let slow = start_in_background(engine.clone(), &guild, AgentSpec::new("slow", "slow"));
    wait_until(&[], "the slow agent is seen starting", || {
        engine
            .agent_info(&guild.namespace, "slow")
            .is_some_and(|info| info.state == AgentState::Starting)
    });
    assert!(!engine.is_agent_running(&guild.namespace, "slow"));

    run_bounded(
        &engine,
        &guild,
        AgentSpec::new("quick", "counter").with_topic("t"),
    );
    assert!(engine.is_agent_running(&guild.namespace, "quick"));
    engine.stop_agent(&guild.namespace, "quick").unwrap();
    assert!(!engine.is_agent_running(&guild.namespace, "quick"));
    assert_eq!(engine.agents_in_guild(&guild.namespace).len(), 1);

    gate.open();
    slow.finish();
    assert!(engine.is_agent_running(&guild.namespace, "slow"));
    engine.shutdown().unwrap();
}
