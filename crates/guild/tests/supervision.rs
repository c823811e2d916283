//! Supervision through the facade: `GuildBuilder::hooks` hears of crashes and restarts
//! in order, the guild counts restarts, and what the flaky agent did not crash on is
//! all delivered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use conformance::supervision::Recorder;
use guild::{
    AgentSpec, Backoff, GuildBuilder, GuildSpec, Message, Payload, RestartPolicy, builtin,
};

#[test]
fn hooks_hear_of_each_crash_and_restart_and_the_guild_counts_them() -> guild::Result<()> {
    let mut spec = GuildSpec::new(format!("hooks-{}", std::process::id()));
    let mut flaky = AgentSpec::new("flaky", "flaky")
        .with_topic("jobs")
        .with_properties(serde_json::json!({ "crash_every": 2, "to": "done" }));
    flaky.restart = Some(RestartPolicy::Permanent);
    flaky.backoff = Some(Backoff::none());
    spec.agents.push(flaky);
    let hooks = Arc::new(Recorder::default());
    let mut guild = GuildBuilder::new(spec)
        .registry(builtin::builtin_registry())
        .hooks(hooks.clone())
        .build()?;
    let mut done = guild.observe("test", vec!["done".into()])?;
    guild.launch_all()?;
    // It crashes on every second job since it (re)started: jobs 1, 3, 5 go through,
    // 2, 4 and 6 each crash it once.
    for job in 1..=6 {
        guild.publish(Message::builder("jobs", Payload::encode_json(&job)?))?;
    }
    let mut through = Vec::new();
    while through.len() < 3 {
        let delivery = done
            .recv_timeout(Duration::from_secs(20))?
            .expect("the jobs it did not crash on come through");
        through.push(delivery.message.decode_json::<u32>()?);
    }
    through.sort_unstable();
    assert_eq!(through, [1, 3, 5]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while guild.restarts("flaky") < 3 {
        assert!(Instant::now() < deadline, "three restarts");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(hooks.starting_with("error "), ["error flaky"; 3]);
    assert_eq!(
        hooks.starting_with("restart "),
        [
            "restart flaky 1 0",
            "restart flaky 2 0",
            "restart flaky 3 0"
        ]
    );
    guild.shutdown()
}
