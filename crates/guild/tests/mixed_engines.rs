//! One guild may mix engines: here a responder runs on the threads engine and an
//! aggregator on the sync engine, and they exchange messages over the guild's bus.

use std::time::Duration;

use guild::{AgentSpec, GuildBuilder, GuildSpec, Message, Payload, builtin::builtin_registry};
use serde_json::{Value, json};

#[test]
fn agents_on_different_engines_of_one_guild_talk() {
    let mut spec = GuildSpec::new(format!("mixed-engines-{}", std::process::id()));
    let mut responder = AgentSpec::new("responder", "responder").with_topic("questions");
    responder.engine = Some("threads".into());
    let mut collector = AgentSpec::new("collector", "aggregator")
        .with_topic("answers")
        .with_properties(json!({ "expect": 2, "to": "results", "collect": true }));
    collector.engine = Some("sync".into());
    spec.agents = vec![responder, collector];
    let mut guild = GuildBuilder::new(spec)
        .registry(builtin_registry())
        .build()
        .unwrap();
    guild.launch_all().unwrap();
    let engines: Vec<&str> = guild.engines().map(|(name, _)| name).collect();
    assert_eq!(engines, ["sync", "threads"]);

    let mut results = guild.observe("test", vec!["results".into()]).unwrap();
    for question in ["one", "two"] {
        let message = Message::builder("questions", Payload::encode_json(question).unwrap())
            .reply_to("answers");
        guild.publish(message).unwrap();
    }
    // Waiting on the observer drives the sync engine.
    let summary: Value = results
        .recv_timeout(Duration::from_secs(20))
        .unwrap()
        .expect("a summary before the deadline")
        .message
        .decode_json()
        .unwrap();
    let mut items: Vec<String> = serde_json::from_value(summary["items"].clone()).unwrap();
    items.sort();
    assert_eq!(items, ["one", "two"]);
    let on: Vec<(String, String)> = guild
        .agents()
        .into_iter()
        .map(|a| (a.id, a.engine))
        .collect();
    assert_eq!(
        on,
        [
            ("responder".into(), "threads".into()),
            ("collector".into(), "sync".into())
        ]
    );
    guild.shutdown().unwrap();
}
