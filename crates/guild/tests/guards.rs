//! What a guild refuses at run time, for specs built in code that no validation saw:
//! publishing to the dead-letter topic, subscribing to another agent's inbox, and
//! resource limits on an engine that cannot enforce them (unless marked best effort).

use std::sync::atomic::{AtomicU64, Ordering};

use guild::{
    Agent, AgentContext, AgentResult, AgentSpec, ERROR_TOPIC, ErrorKind, GuildBuilder, GuildSpec,
    Message, Payload, ResourceLimits, builtin::builtin_registry,
};

/// Tries to publish to the dead-letter topic, and replies with how that went.
struct Forger;

impl Agent for Forger {
    async fn handle(&mut self, ctx: &AgentContext, message: &Message) -> AgentResult {
        let outcome = match ctx.send(ERROR_TOPIC, Payload::encode_json("forged")?) {
            Ok(_) => "accepted".to_owned(),
            Err(error) => format!("{:?}: {error}", error.kind()),
        };
        ctx.reply(message, Payload::encode_json(&outcome)?)?;
        Ok(())
    }
}

fn guild(engine: &str) -> guild::Guild {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let spec = GuildSpec::new(format!("guards-{}-{n}", std::process::id()));
    let mut registry = builtin_registry();
    registry.register("forger", |_| Ok(Forger));
    GuildBuilder::new(spec)
        .registry(registry)
        .engine(engine)
        .build()
        .unwrap()
}

#[test]
fn an_agent_may_not_publish_dead_letters() {
    let mut guild = guild("sync");
    guild
        .launch(AgentSpec::new("forger", "forger").with_topic("in"))
        .unwrap();
    let mut errors = guild
        .observe("watcher", vec![ERROR_TOPIC.into(), "replies".into()])
        .unwrap();
    guild
        .publish(Message::builder("in", Payload::encode_json("go").unwrap()).reply_to("replies"))
        .unwrap();
    guild.drive();
    let mut seen = Vec::new();
    while let Some(delivery) = errors.try_recv().unwrap() {
        seen.push((
            delivery.topic.to_string(),
            delivery.message.decode_json::<String>().ok(),
        ));
    }
    assert_eq!(
        seen.len(),
        1,
        "only the reply, no forged dead letter: {seen:?}"
    );
    let (topic, reply) = &seen[0];
    assert_eq!(topic, "replies");
    let reply = reply.as_deref().unwrap();
    assert!(reply.starts_with("Conflict"), "{reply}");
    assert!(reply.contains("dead letters"), "{reply}");
    guild.shutdown().unwrap();
}

#[test]
fn an_agent_may_not_subscribe_to_another_agents_inbox() {
    let mut guild = guild("threads");
    let refused = guild
        .launch(AgentSpec::new("spy", "responder").with_topic("inbox:victim"))
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::InvalidSpec);
    assert!(refused.to_string().contains("inbox:victim"), "{refused}");
    guild.shutdown().unwrap();
}

#[test]
fn limits_are_refused_where_they_cannot_be_enforced_unless_best_effort() {
    for engine in ["sync", "threads"] {
        let mut guild = guild(engine);
        let mut capped = AgentSpec::new("capped", "responder");
        capped.limits = ResourceLimits {
            cpu_seconds: Some(5),
            ..ResourceLimits::default()
        };
        let refused = guild.launch(capped.clone()).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::InvalidSpec);
        assert!(refused.to_string().contains("cannot"), "{refused}");
        capped.limits.best_effort = true;
        guild.launch(capped).unwrap();
        guild.shutdown().unwrap();
    }
}
