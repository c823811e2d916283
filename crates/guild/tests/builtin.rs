//! The built-in agent types, run on the sync engine so every step is deterministic.

use guild::{AgentSpec, GuildBuilder, GuildSpec, Message, Payload, builtin::builtin_registry};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};

/// Runs `agents` on the sync engine, publishes `input` to `topic` (replies to `replies`),
/// and returns every payload seen on `watch`.
fn check(agents: Vec<AgentSpec>, topic: &str, inputs: &[Value], watch: &str) -> Vec<Value> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut spec = GuildSpec::new(format!("builtin-{}-{n}", std::process::id()));
    spec.agents = agents;
    let mut guild = GuildBuilder::new(spec)
        .registry(builtin_registry())
        .engine("sync")
        .build()
        .unwrap();
    guild.launch_all().unwrap();
    let mut seen = guild.observe("test", vec![watch.into()]).unwrap();
    for input in inputs {
        let message = Message::builder(topic, Payload::from(input.clone())).reply_to("replies");
        guild.publish(message).unwrap();
    }
    guild.drive();
    let mut payloads = Vec::new();
    while let Some(delivery) = seen.try_recv().unwrap() {
        payloads.push(delivery.message.decode_json().unwrap());
    }
    guild.shutdown().unwrap();
    payloads
}

fn agent(id: &str, agent_type: &str, topic: &str, properties: Value) -> AgentSpec {
    AgentSpec::new(id, agent_type)
        .with_topic(topic)
        .with_properties(properties)
}

#[test]
fn a_responder_answers_text_and_echoes_the_rest() {
    let responder = agent("r", "responder", "in", json!({ "prefix": "re: " }));
    let replies = check(
        vec![responder],
        "in",
        &[json!("hi"), json!({ "n": 1 })],
        "replies",
    );
    assert_eq!(replies, [json!("re: hi"), json!({ "echo": { "n": 1 } })]);
}

#[test]
fn a_relay_picks_wraps_and_sets() {
    let properties =
        json!({ "to": ["out"], "pick": "/order/item", "wrap": "dish", "set": { "hot": true } });
    let relay = agent("relay", "relay", "in", properties);
    let out = check(
        vec![relay],
        "in",
        &[json!({ "order": { "item": "soup" } })],
        "out",
    );
    assert_eq!(out, [json!({ "dish": "soup", "hot": true })]);
}

#[test]
fn an_aggregator_sums_batches_and_computes_a_ratio() {
    let properties = json!({
        "expect": 2, "to": "out", "collect": true,
        "ratio": { "numerator": "a", "denominator": "b", "scale": 10.0, "field": "r" }
    });
    let aggregator = agent("agg", "aggregator", "in", properties);
    let inputs = [
        json!({ "a": 1, "b": 4 }),
        json!({ "a": 2, "b": 4 }),
        json!({ "a": 5, "b": 5 }),
    ];
    let out = check(vec![aggregator], "in", &inputs, "out");
    assert_eq!(out.len(), 1, "the third message starts a new batch");
    assert_eq!(out[0]["count"], 2);
    assert_eq!(out[0]["sum"], json!({ "a": 3.0, "b": 8.0 }));
    assert_eq!(out[0]["r"], 3.75);
    assert_eq!(out[0]["items"].as_array().unwrap().len(), 2);
}

#[test]
fn monte_carlo_runs_are_reproducible_and_land_near_pi() {
    let workers = || -> Vec<AgentSpec> {
        (1..=2)
            .map(|n| {
                agent(
                    &format!("w{n}"),
                    "monte_carlo",
                    "go",
                    json!({ "samples": 100_000, "to": "out" }),
                )
            })
            .collect()
    };
    let first = check(workers(), "go", &[json!({})], "out");
    let second = check(workers(), "go", &[json!({})], "out");
    assert_eq!(first, second, "the same ids draw the same points");
    assert_eq!(first.len(), 2);
    for result in &first {
        assert_eq!(result["samples"], 100_000);
        let pi = 4.0 * result["inside"].as_f64().unwrap() / 100_000.0;
        assert!((pi - std::f64::consts::PI).abs() < 0.05, "{pi}");
    }
}

#[test]
fn bad_properties_are_an_error_that_names_the_agent_and_field() {
    let mut spec = GuildSpec::new("builtin-bad-properties");
    spec.agents.push(agent(
        "agg",
        "aggregator",
        "in",
        json!({ "expect": "two", "to": "out" }),
    ));
    // Building the guild checks the spec, which builds each agent once.
    let error = GuildBuilder::new(spec)
        .registry(builtin_registry())
        .engine("sync")
        .build()
        .unwrap_err()
        .to_string();
    assert!(error.contains("agent \"agg\""), "{error}");
    assert!(
        error.contains("properties.expect: invalid type: string \"two\""),
        "{error}"
    );
}
