//! `flaky`: a relay that crashes on purpose, for trying out supervision.

use engine_core::{Agent, AgentContext, AgentResult, Message};
use serde::Deserialize;

/// Properties of a `flaky` agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlakyConfig {
    /// It panics on every message whose number since it (re)started is a multiple
    /// of this (at least 1).
    pub crash_every: u64,
    /// Where it forwards the messages it does not crash on.
    pub to: String,
}

/// Forwards each message's payload to `to`, except that the `crash_every`-th message
/// since it started makes it panic. The message it panicked on is dead-lettered (so it
/// is not met again), and a supervisor restarts it; without one it stays crashed.
#[derive(Debug)]
pub struct Flaky {
    config: FlakyConfig,
    handled: u64,
}

impl Flaky {
    /// A flaky agent with the given properties.
    pub fn new(config: FlakyConfig) -> Result<Self, String> {
        if config.crash_every == 0 {
            return Err("crash_every must be at least 1".into());
        }
        Ok(Self { config, handled: 0 })
    }
}

impl Agent for Flaky {
    async fn handle(&mut self, ctx: &AgentContext, message: &Message) -> AgentResult {
        self.handled += 1;
        if self.handled.is_multiple_of(self.config.crash_every) {
            panic!(
                "flaky on purpose: message {} since it started",
                self.handled
            );
        }
        let forward = Message::builder(self.config.to.clone(), message.payload.clone())
            .reply_to(message.reply_topic());
        ctx.publish(forward)?;
        Ok(())
    }
}
