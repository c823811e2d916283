//! `guild tail` and `guild history`: a guild's messages as JSON lines, as they arrive or
//! as retained, so an operator sees what flows without writing code. Both read the
//! guild's Redis; the in-memory backend lives inside the process that runs the guild.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use guild::messaging::RedisMessaging;
use guild::wire::DEAD_LETTER_FORMAT;
use guild::{
    DeadLetter, HistoryOrder, HistoryQuery, JSON_FORMAT, Message, MessagingBackend, Notify,
    Outcome, StartFrom, SubscribeRequest,
};
use serde_json::{Map, Value, json};

/// Which guild's messages, where.
#[derive(Debug, clap::Args)]
pub(crate) struct Source {
    /// The guild's messaging backend: its Redis URL (such as redis://127.0.0.1:6379).
    #[arg(long, env = "GUILD_MESSAGING", value_name = "URL")]
    messaging: String,
    /// The guild's id; needed only when the server holds more than one guild.
    #[arg(long, value_name = "ID")]
    guild: Option<String>,
}

/// Where `guild tail` starts.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum From {
    /// With the retained messages of the topics, then what arrives.
    Earliest,
    /// With what arrives after it starts.
    Latest,
}

/// Prints every message on `topics` as one JSON line as it arrives, until `count` have
/// been printed, stdout closes, or a stop signal comes. The client it reads as is
/// forgotten when it ends, so nothing of it stays in Redis.
pub(crate) fn tail(
    topics: Vec<String>,
    source: &Source,
    from: From,
    count: Option<u64>,
    stop_signal: &AtomicI32,
) -> anyhow::Result<ExitCode> {
    let bus = connect(&source.messaging)?;
    let namespace = guild_of(&bus, source)?;
    let client = format!("guild-tail-{}-{}", std::process::id(), guild::unix_ms_now());
    let (wake, woken) = sync_channel(1);
    let request_topics = topics.clone();
    let mut subscription = bus.subscribe(
        SubscribeRequest {
            namespace: namespace.clone(),
            client_id: client.clone(),
            topics,
            start: match from {
                From::Earliest => StartFrom::Earliest,
                From::Latest => StartFrom::Latest,
            },
            limit: None,
        },
        Arc::new(Wake(wake)),
    )?;
    eprintln!(
        "guild tail: watching {} of guild {namespace:?}",
        request_topics.join(", ")
    );
    let printed = follow(&mut *subscription, &woken, count, stop_signal);
    let closed = subscription.close();
    bus.forget(&namespace, &client)?;
    printed?;
    closed?;
    Ok(ExitCode::SUCCESS)
}

/// Prints deliveries until `count`, a closed stdout, or a stop signal.
fn follow(
    subscription: &mut dyn guild::Subscription,
    woken: &Receiver<()>,
    count: Option<u64>,
    stop_signal: &AtomicI32,
) -> anyhow::Result<()> {
    let mut printed = 0;
    let mut stdout = std::io::stdout().lock();
    while count.is_none_or(|count| printed < count) && stop_signal.load(Ordering::SeqCst) == 0 {
        let Some(delivery) = subscription.next()? else {
            let _ = woken.recv_timeout(Duration::from_millis(100));
            continue;
        };
        let line = render(&delivery.topic, &delivery.message).to_string();
        subscription.complete(Outcome::Handled)?;
        if writeln!(stdout, "{line}").is_err() {
            // Whoever read the lines is gone (`guild tail … | head`).
            break;
        }
        printed += 1;
    }
    Ok(())
}

/// Prints the retained messages of `topic` as JSON lines.
pub(crate) fn history(
    topic: &str,
    source: &Source,
    order: HistoryOrder,
) -> anyhow::Result<ExitCode> {
    let bus = connect(&source.messaging)?;
    let namespace = guild_of(&bus, source)?;
    let mut messages = bus.history(&namespace, &HistoryQuery::Topic(topic.to_owned()))?;
    order.arrange(&mut messages);
    let mut stdout = std::io::stdout().lock();
    for message in &messages {
        if writeln!(stdout, "{}", render(topic, message)).is_err() {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Wakes the loop waiting for deliveries.
struct Wake(SyncSender<()>);

impl Notify for Wake {
    fn notify(&self) {
        let _ = self.0.try_send(());
    }
}

fn connect(url: &str) -> anyhow::Result<RedisMessaging> {
    if url == "memory" {
        bail!(
            "the memory backend lives inside the process that runs the guild, so nothing \
             else can read it: run the guild with --messaging redis://… and give the same URL"
        );
    }
    if let Err(why) = guild::select::check_messaging(url) {
        bail!("--messaging {url}: {why}");
    }
    Ok(RedisMessaging::connect(url)?)
}

/// The guild to read: the one named, or the only one on the server.
fn guild_of(bus: &RedisMessaging, source: &Source) -> anyhow::Result<String> {
    if let Some(guild) = &source.guild {
        return Ok(guild.clone());
    }
    let guilds = bus
        .guilds()
        .context("cannot list the guilds on the server")?;
    match guilds.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "no guild has published on {} yet; name one with --guild",
            source.messaging
        ),
        many => bail!(
            "{} guilds on {}: name one with --guild ({})",
            many.len(),
            source.messaging,
            many.join(", ")
        ),
    }
}

/// A message as JSON, delivered on `topic`: ids as strings (they exceed what a JSON
/// number holds exactly in most readers), the payload as JSON when it is JSON, as text
/// when it is text, a dead letter opened up, anything else in base64.
pub(crate) fn render(topic: &str, message: &Message) -> Value {
    let mut line = Map::new();
    line.insert("topic".into(), topic.into());
    line.insert("id".into(), message.id.to_string().into());
    line.insert("sender".into(), (*message.sender).into());
    line.insert(
        "topics".into(),
        message.topics.iter().map(|t| Value::from(&**t)).collect(),
    );
    line.insert("priority".into(), json!(message.priority()));
    line.insert("timestamp_ms".into(), message.timestamp_ms.into());
    if let Some(reply_to) = &message.reply_to {
        line.insert("reply_to".into(), reply_to.as_str().into());
    }
    for (name, id) in [
        ("in_reply_to", message.in_reply_to),
        ("thread", message.thread),
    ] {
        if let Some(id) = id {
            line.insert(name.into(), id.to_string().into());
        }
    }
    if !message.headers.is_empty() {
        line.insert("headers".into(), json!(message.headers));
    }
    line.insert("format".into(), (*message.payload.format).into());
    let (name, payload) = payload(message);
    line.insert(name.into(), payload);
    Value::Object(line)
}

/// The payload's field name and value in a rendered message.
fn payload(message: &Message) -> (&'static str, Value) {
    let payload = &message.payload;
    if payload.format == JSON_FORMAT
        && let Ok(value) = serde_json::from_slice(&payload.bytes)
    {
        return ("payload", value);
    }
    if payload.format == DEAD_LETTER_FORMAT
        && let Ok(letter) = DeadLetter::from_message(message)
    {
        let value = json!({
            "client": letter.client,
            "topic": letter.topic,
            "failure": { "kind": letter.failure.kind, "text": letter.failure.text },
            "message": render(&letter.topic, &letter.message),
        });
        return ("payload", value);
    }
    if payload.format != JSON_FORMAT
        && let Ok(text) = std::str::from_utf8(&payload.bytes)
    {
        return ("payload", text.into());
    }
    (
        "payload_base64",
        base64::engine::general_purpose::STANDARD
            .encode(&payload.bytes)
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use guild::{Failure, IdGenerator, Payload};

    use super::*;

    fn message(payload: Payload) -> Message {
        Message::builder("t", payload).build(&IdGenerator::new(1).unwrap(), "g", "s")
    }

    #[test]
    fn payloads_are_shown_as_json_text_or_base64() {
        let json = render(
            "t",
            &message(Payload::encode_json(&json!({"a": 1})).unwrap()),
        );
        assert_eq!(json["payload"], json!({"a": 1}));
        let text = render("t", &message(Payload::new("text", b"hi".to_vec())));
        assert_eq!(text["payload"], "hi");
        let binary = render("t", &message(Payload::new("bin", vec![0xff, 0])));
        assert_eq!(binary["payload_base64"], "/wA=");
        assert!(binary.get("payload").is_none());
        // JSON that does not parse is shown in base64 rather than lost.
        let broken = render("t", &message(Payload::new("json", b"{".to_vec())));
        assert_eq!(broken["payload_base64"], "ew==");
    }

    #[test]
    fn a_dead_letter_is_opened_up() {
        let failed = message(Payload::encode_json("work").unwrap());
        let letter = DeadLetter {
            client: "worker".into(),
            topic: "t".into(),
            message: failed.clone(),
            failure: Failure {
                kind: "error".into(),
                text: "no".into(),
            },
        };
        let shown = render(guild::ERROR_TOPIC, &message(letter.to_payload()));
        assert_eq!(shown["format"], DEAD_LETTER_FORMAT);
        assert_eq!(shown["payload"]["client"], "worker");
        assert_eq!(shown["payload"]["failure"]["text"], "no");
        assert_eq!(shown["payload"]["message"]["payload"], "work");
        assert_eq!(
            shown["payload"]["message"]["id"],
            Value::from(failed.id.to_string())
        );
    }
}
