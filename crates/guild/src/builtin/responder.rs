//! `responder`: replies to every message.

use engine_core::{Agent, AgentContext, AgentResult, Message, Payload};
use serde::Deserialize;
use serde_json::{Value, json};

/// Properties of a `responder`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponderConfig {
    /// Put before a text (JSON string) request to make the reply.
    pub prefix: String,
    /// Upper-case a text request in the reply.
    pub uppercase: bool,
}

/// Replies to every message, on the message's `reply_to` topic or else its sender's
/// inbox: a JSON string is answered with `prefix` + the string (upper-cased if asked),
/// anything else with `{"echo": <payload>}`.
#[derive(Debug)]
pub struct Responder {
    config: ResponderConfig,
}

impl Responder {
    /// A responder with the given properties.
    pub fn new(config: ResponderConfig) -> Self {
        Self { config }
    }
}

impl Agent for Responder {
    async fn handle(&mut self, ctx: &AgentContext, message: &Message) -> AgentResult {
        let request: Value = message.decode_json()?;
        let reply = match request {
            Value::String(text) => {
                let text = if self.config.uppercase {
                    text.to_uppercase()
                } else {
                    text
                };
                Value::String(format!("{}{text}", self.config.prefix))
            }
            other => json!({ "echo": other }),
        };
        ctx.reply(message, Payload::from(reply))?;
        Ok(())
    }
}
