//! Shared resources: a guild's `dependencies` are built once from their kind and
//! properties, and an agent reaches those it lists, and only those.

use std::collections::BTreeMap;

use guild::{
    Agent, AgentContext, AgentRegistry, AgentResult, AgentSpec, DependencySpec, GuildBuilder,
    GuildSpec, Message, Payload,
};
use serde_json::json;

/// A resource: a fixed greeting.
struct Greeting(String);

/// Replies with the greeting resource named in its properties, followed by the request.
struct Greeter;

impl Agent for Greeter {
    async fn handle(&mut self, ctx: &AgentContext, message: &Message) -> AgentResult {
        let name = ctx.spec().properties["resource"]
            .as_str()
            .unwrap_or_default();
        let greeting = ctx.resource::<Greeting>(name)?;
        let who: String = message.decode_json()?;
        ctx.reply(
            message,
            Payload::encode_json(&format!("{} {who}", greeting.0))?,
        )?;
        Ok(())
    }
}

#[test]
fn an_agent_uses_the_resources_it_lists_and_no_others() {
    let mut registry = AgentRegistry::new();
    registry
        .register("greeter", |_| Ok(Greeter))
        .register_resource("greeting", |properties| {
            Ok(Greeting(
                properties["text"]
                    .as_str()
                    .ok_or("greeting needs `text`")?
                    .to_owned(),
            ))
        });
    let mut spec = GuildSpec::new(format!("resources-{}", std::process::id()));
    spec.dependencies = BTreeMap::from([
        (
            "hello".to_owned(),
            DependencySpec {
                kind: "greeting".into(),
                properties: json!({ "text": "hello" }),
            },
        ),
        (
            "secret".to_owned(),
            DependencySpec {
                kind: "greeting".into(),
                properties: json!({ "text": "psst" }),
            },
        ),
    ]);
    let mut polite = AgentSpec::new("polite", "greeter")
        .with_topic("polite")
        .with_properties(json!({ "resource": "hello" }));
    polite.dependencies = vec!["hello".into()];
    let mut nosy = AgentSpec::new("nosy", "greeter")
        .with_topic("nosy")
        .with_properties(json!({ "resource": "secret" }));
    nosy.dependencies = vec!["hello".into()];
    spec.agents = vec![polite, nosy];

    let mut guild = GuildBuilder::new(spec)
        .registry(registry)
        .engine("sync")
        .build()
        .unwrap();
    guild.launch_all().unwrap();
    let mut replies = guild.observe("test", vec!["replies".into()]).unwrap();
    for topic in ["polite", "nosy"] {
        let message =
            Message::builder(topic, Payload::encode_json("world").unwrap()).reply_to("replies");
        guild.publish(message).unwrap();
    }
    guild.drive();

    let reply = replies
        .try_recv()
        .unwrap()
        .expect("the polite agent replies");
    assert_eq!(
        reply.message.decode_json::<String>().unwrap(),
        "hello world"
    );
    assert!(
        replies.try_recv().unwrap().is_none(),
        "the nosy agent gets no resource it did not list"
    );
    let nosy = guild.agents().into_iter().find(|a| a.id == "nosy").unwrap();
    assert_eq!(nosy.errors, 1);
    guild.shutdown().unwrap();
}
