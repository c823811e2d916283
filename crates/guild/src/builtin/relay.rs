//! `relay`: forwards messages to other topics, optionally reshaping them.

use engine_core::{Agent, AgentContext, AgentResult, Message, Payload};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Properties of a `relay`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// The topics to forward to.
    pub to: Vec<String>,
    /// A JSON pointer (such as `/result/text`) selecting the part of the payload to forward.
    #[serde(default)]
    pub pick: Option<String>,
    /// Wrap the forwarded value in an object under this key.
    #[serde(default)]
    pub wrap: Option<String>,
    /// Fields to set on the forwarded value when it is an object.
    #[serde(default)]
    pub set: Map<String, Value>,
}

/// Forwards each message's JSON payload to the `to` topics: `pick` selects a part of
/// it, `wrap` puts it in an object under a key, `set` adds fields. Replies to the
/// forwarded message go where replies to the original would have gone.
#[derive(Debug)]
pub struct Relay {
    config: RelayConfig,
}

impl Relay {
    /// A relay with the given properties.
    pub fn new(config: RelayConfig) -> Self {
        Self { config }
    }

    /// The payload to forward, reshaped as configured.
    pub fn reshape(&self, payload: Value) -> Result<Value, String> {
        let mut value = match &self.config.pick {
            Some(pointer) => payload
                .pointer(pointer)
                .cloned()
                .ok_or_else(|| format!("the payload has nothing at {pointer:?}"))?,
            None => payload,
        };
        if let Some(key) = &self.config.wrap {
            value = Value::Object(Map::from_iter([(key.clone(), value)]));
        }
        if !self.config.set.is_empty() {
            let Value::Object(fields) = &mut value else {
                return Err("`set` needs the forwarded value to be an object".into());
            };
            fields.extend(self.config.set.clone());
        }
        Ok(value)
    }
}

impl Agent for Relay {
    async fn handle(&mut self, ctx: &AgentContext, message: &Message) -> AgentResult {
        let Some((first, rest)) = self.config.to.split_first() else {
            return Ok(());
        };
        let value = self.reshape(message.decode_json()?)?;
        let mut forward = Message::builder(first.clone(), Payload::from(value))
            .reply_to(message.reply_topic())
            .priority(message.priority());
        for topic in rest {
            forward = forward.topic(topic.clone());
        }
        ctx.publish(forward)?;
        Ok(())
    }
}
