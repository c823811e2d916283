//! On the sync engine, timers run on a clock the caller moves by hand: which timers
//! fire, and how often, is exact, and no wall time passes.

use std::sync::Arc;
use std::time::Duration;

use engine_core::{
    Agent, AgentContext, AgentRegistry, AgentResult, AgentSpec, ExecutionEngine, GuildContext,
    HistoryQuery, Message, MessagingBackend, Payload,
};
use engine_sync::SyncEngine;
use messaging_memory::MemoryMessaging;

/// Sets a one-shot timer of a minute and a periodic one of ten seconds when told.
struct Alarm;

impl Agent for Alarm {
    async fn handle(&mut self, ctx: &AgentContext, _: &Message) -> AgentResult {
        let ring = Message::builder("rings", Payload::encode_json("ring")?);
        ctx.send_after(Duration::from_secs(60), ring)?;
        let tick = Message::builder("ticks", Payload::encode_json("tick")?);
        ctx.send_every(Duration::from_secs(10), tick)?;
        Ok(())
    }
}

#[test]
fn timers_fire_exactly_when_the_clock_is_advanced() {
    let mut registry = AgentRegistry::new();
    registry.register("alarm", |_| Ok(Alarm));
    let messaging = Arc::new(MemoryMessaging::new());
    let guild = GuildContext::new("virtual-clock", messaging.clone(), Arc::new(registry));
    let engine = SyncEngine::new();
    assert!(engine.capabilities().virtual_clock);
    engine
        .run_agent(&guild, AgentSpec::new("alarm", "alarm").with_topic("set"))
        .unwrap();
    let set = Message::builder("set", Payload::encode_json("now").unwrap()).build(
        &guild.ids,
        "virtual-clock",
        "test",
    );
    messaging.publish(set).unwrap();
    assert_eq!(engine.drive(), 1);
    let count = |topic: &str| {
        messaging
            .history("virtual-clock", &HistoryQuery::Topic(topic.into()))
            .unwrap()
            .len()
    };

    assert_eq!(engine.advance_clock(Duration::from_secs(9)), 0);
    assert_eq!(
        engine.advance_clock(Duration::from_secs(1)),
        1,
        "the first tick"
    );
    // 35 seconds more: ticks at 20, 30 and 40 seconds.
    assert_eq!(engine.advance_clock(Duration::from_secs(35)), 3);
    assert_eq!((count("ticks"), count("rings")), (4, 0));
    // To 60 seconds: ticks at 50 and 60, and the ring, once.
    assert_eq!(engine.advance_clock(Duration::from_secs(15)), 3);
    assert_eq!((count("ticks"), count("rings")), (6, 1));

    // Stopping the agent ends its timers.
    engine.stop_agent("virtual-clock", "alarm").unwrap();
    assert_eq!(engine.advance_clock(Duration::from_secs(3600)), 0);
    assert_eq!(count("ticks"), 6);
    engine.shutdown().unwrap();
}
