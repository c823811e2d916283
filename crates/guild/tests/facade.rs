//! The `Guild` facade: an agent launched twice is one agent, listed once, and
//! `Guild::stop` stops one agent on whichever engine runs it.

use std::sync::atomic::{AtomicU64, Ordering};

use guild::{AgentSpec, GuildBuilder, GuildSpec, builtin::builtin_registry};

fn guild() -> guild::Guild {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let spec = GuildSpec::new(format!("facade-{}-{n}", std::process::id()));
    GuildBuilder::new(spec)
        .registry(builtin_registry())
        .engine("threads")
        .build()
        .unwrap()
}

#[test]
fn launching_twice_is_one_agent() {
    let mut guild = guild();
    let responder = AgentSpec::new("r", "responder").with_topic("q");
    guild.launch(responder.clone()).unwrap();
    guild.launch(responder).unwrap();
    assert_eq!(guild.agents().len(), 1);
    guild.shutdown().unwrap();
}

#[test]
fn stop_ends_one_agent_and_leaves_the_others() {
    let mut guild = guild();
    guild
        .launch(AgentSpec::new("a", "responder").with_topic("q"))
        .unwrap();
    guild
        .launch(AgentSpec::new("b", "responder").with_topic("q"))
        .unwrap();
    guild.stop("a").unwrap();
    guild.stop("never-launched").unwrap();
    let namespace = guild.spec().id.clone();
    let running = |id: &str| {
        guild
            .engines()
            .any(|(_, engine)| engine.is_agent_running(&namespace, id))
    };
    assert!(!running("a"), "a was stopped");
    assert!(running("b"), "b runs on");
    guild.shutdown().unwrap();
}
