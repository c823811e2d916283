//! The agent types the engine scenarios run, registered under fixed names.

use std::time::Duration;

use engine_core::{Agent, AgentContext, AgentRegistry, AgentResult, BoxError, Message, Payload};

/// A registry with every agent type the scenarios use:
///
/// - `counter`: handles everything and does nothing (its engine counts what it handled);
/// - `responder`: replies to every message with `{"reply": <payload>}`;
/// - `requester`: on a message on topic `go`, sends a request to `requests` asking for
///   replies on `replies`; ignores replies;
/// - `fragile`: a handler that returns an error for the payload `"fail"` and panics for
///   the payload `"panic"`;
/// - `announcer`: publishes `"hello"` to `announcements` from its start hook;
/// - `broken`: its start hook fails;
/// - `stalling`: waits forever on the payload `"stall"`, replies to any other;
/// - `moody`: healthy until a message says `"sicken"`, then its health hook fails;
/// - `sickly`: its health hook always fails;
/// - `relay`: forwards to the topic its `to` property names (see [`crate::chaos`]);
/// - `quitter`: on `"quit"`, ends its whole process with exit code 0 a moment after the
///   handler returns (for agents in a process of their own only);
/// - `timed`: on `"after"`, sends `"later"` to `timed.out` 30 ms on; on `"every"`,
///   sends `"tick"` to `ticks` every 10 ms; on `"cancel"`, cancels that.
pub fn registry() -> AgentRegistry {
    let mut registry = AgentRegistry::new();
    registry
        .register("counter", |_| Ok(Counter))
        .register("responder", |_| Ok(Responder))
        .register("requester", |_| Ok(Requester))
        .register("fragile", |_| Ok(Fragile))
        .register("announcer", |_| Ok(Announcer))
        .register("broken", |_| Ok(Broken))
        .register("stalling", |_| Ok(Stalling))
        .register("timed", |_| Ok(Timed { every: None }))
        .register("moody", |_| Ok(Moody { sick: false }))
        .register("sickly", |_| Ok(Sickly))
        .register("quitter", |_| Ok(Quitter))
        .register("relay", |spec| {
            let to = spec.properties["to"].as_str().unwrap_or("out").to_owned();
            Ok(crate::chaos::Relay { to })
        });
    registry
}

struct Counter;

/// Sends messages later, through its timers.
struct Timed {
    every: Option<engine_core::TimerId>,
}

impl Agent for Timed {
    async fn handle(&mut self, ctx: &AgentContext, message: &Message) -> AgentResult {
        let text: String = message.decode_json()?;
        let later = |topic: &str, text: &str| -> Result<_, BoxError> {
            Ok(Message::builder(topic, Payload::encode_json(text)?))
        };
        match text.as_str() {
            "after" => {
                ctx.send_after(Duration::from_millis(30), later("timed.out", "later")?)?;
            }
            "every" => {
                self.every =
                    Some(ctx.send_every(Duration::from_millis(10), later("ticks", "tick")?)?);
            }
            "cancel" => {
                if let Some(every) = self.every.take() {
                    ctx.cancel_timer(every);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Waits forever on a message saying `"stall"` (until its handler timeout cancels it);
/// replies to any other.
struct Stalling;

impl Agent for Stalling {
    async fn handle(&mut self, ctx: &AgentContext, message: &Message) -> AgentResult {
        let text: String = message.decode_json()?;
        if text == "stall" {
            std::future::pending::<()>().await;
        }
        ctx.reply(message, Payload::encode_json(&text)?)?;
        Ok(())
    }
}

impl Agent for Counter {
    async fn handle(&mut self, _ctx: &AgentContext, _message: &Message) -> AgentResult {
        Ok(())
    }
}

struct Responder;

impl Agent for Responder {
    async fn handle(&mut self, ctx: &AgentContext, message: &Message) -> AgentResult {
        let request: serde_json::Value = message.decode_json()?;
        ctx.reply(
            message,
            Payload::encode_json(&serde_json::json!({ "reply": request }))?,
        )?;
        Ok(())
    }
}

struct Requester;

impl Agent for Requester {
    async fn handle(&mut self, ctx: &AgentContext, message: &Message) -> AgentResult {
        if message.topics.iter().any(|t| &**t == "go") {
            let request = Message::builder("requests", message.payload.clone()).reply_to("replies");
            ctx.publish(request)?;
        }
        Ok(())
    }
}

struct Fragile;

impl Agent for Fragile {
    async fn handle(&mut self, _ctx: &AgentContext, message: &Message) -> AgentResult {
        match message.decode_json::<String>()?.as_str() {
            "fail" => Err("asked to fail".into()),
            "panic" => panic!("asked to panic"),
            _ => Ok(()),
        }
    }
}

struct Announcer;

impl Agent for Announcer {
    async fn start(&mut self, ctx: &AgentContext) -> AgentResult {
        ctx.send("announcements", Payload::encode_json("hello")?)?;
        Ok(())
    }

    async fn handle(&mut self, _ctx: &AgentContext, _message: &Message) -> AgentResult {
        Ok(())
    }
}

struct Broken;

impl Agent for Broken {
    async fn start(&mut self, _ctx: &AgentContext) -> AgentResult {
        Err(BoxError::from("the database is not there"))
    }

    async fn handle(&mut self, _ctx: &AgentContext, _message: &Message) -> AgentResult {
        Ok(())
    }
}

/// Healthy until told `"sicken"`.
struct Moody {
    sick: bool,
}

impl Agent for Moody {
    async fn handle(&mut self, _ctx: &AgentContext, message: &Message) -> AgentResult {
        if message.decode_json::<String>()? == "sicken" {
            self.sick = true;
        }
        Ok(())
    }

    async fn health(&mut self, _ctx: &AgentContext) -> AgentResult {
        if self.sick {
            return Err("told to be sick".into());
        }
        Ok(())
    }
}

/// Never healthy, so never ready.
struct Sickly;

impl Agent for Sickly {
    async fn handle(&mut self, _ctx: &AgentContext, _message: &Message) -> AgentResult {
        Ok(())
    }

    async fn health(&mut self, _ctx: &AgentContext) -> AgentResult {
        Err("born sick".into())
    }
}

/// Ends its process, cleanly, when told to: an agent that exits on its own.
struct Quitter;

impl Agent for Quitter {
    async fn handle(&mut self, _ctx: &AgentContext, message: &Message) -> AgentResult {
        if message.decode_json::<String>()? == "quit" {
            // After the handler has returned and its delivery is acknowledged.
            std::thread::spawn(|| {
                std::thread::sleep(Duration::from_millis(100));
                std::process::exit(0);
            });
        }
        Ok(())
    }
}
