//! The writer thread: stores what `publish` queued, in batches of one script call each
//! (`publish.lua`), idempotently, and with the batch's messages for one topic packed
//! into one stream entry.
//!
//! - **Frames.** Redis's work per stream entry is what bounds throughput, so the
//!   messages a batch holds for one stream go into one entry (a frame: each message
//!   behind its length). Subscriptions track a message's place as its entry and its
//!   index there ([`crate::subscription::Pos`]).
//! - **Stored once.** Every backend instance is a publisher with a random id and numbers
//!   its publishes in order. The script keeps, per publisher, the number of the last
//!   publish it stored, in the same atomic call that stores the batch. After a failure
//!   the writer asks for that number and drops what it covers before sending again, so
//!   a batch whose reply was lost (a killed connection, a restart) is not stored twice:
//!   one `SET` per batch, and a `GET` per retry, not a record per message.
//! - **Findable by id.** A frame is stored under the entry id [`entry_of`] maps its
//!   first message's id to, and the stream's last id is then moved to its last
//!   message's, so a stream's entries split the entry id space between them. A frame
//!   only takes messages with growing entry ids. A frame that reaches Redis after a
//!   newer entry (another publisher's) is stored under a fresh entry id instead, and
//!   only then is each message's location recorded, in an hourly hash of its guild that
//!   expires.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use engine_core::{MessageId, Result};
use redis::Connection;

use crate::conn::Backoff;
use crate::outbox::Publish;
use crate::position::EntryId;
use crate::{READ_BLOCK, Shared};
use std::fmt::Write as _;

/// The publish script.
pub(crate) const PUBLISH: &str = include_str!("publish.lua");

/// Bytes of messages one frame holds at most (a larger message has a frame of its own).
const FRAME_BYTES: usize = 256 * 1024;

/// Milliseconds of message time one frame spans at most. A frame is trimmed by age as
/// a unit, under its first message's time, so trimming allows for this span and a
/// message is kept for at least the configured age.
const FRAME_SPAN_MS: u64 = 1_000;

/// The stream entry id a message is stored under when its stream allows: its Unix
/// milliseconds, then the low 20 bits of its id (generator and sequence), which are
/// unique within a millisecond for one generator whatever the priority.
pub(crate) fn entry_of(id: MessageId) -> EntryId {
    EntryId(id.unix_ms(), id.time_key() & 0xF_FFFF)
}

/// A random id for one backend instance as a publisher.
pub(crate) fn publisher_id() -> String {
    let random = std::collections::hash_map::RandomState::new();
    let mut hasher = random.build_hasher();
    hasher.write_u32(std::process::id());
    let high = hasher.finish();
    hasher.write_u64(high);
    format!("{high:016x}{:016x}", hasher.finish())
}

/// Sends queued publishes in batches, in order, retrying a failed batch (after a
/// backoff) until Redis takes it; ends when the backend and all its subscriptions are
/// gone (the backend stores what is queued first) or the backend is closed.
pub(crate) fn write_loop(shared: &Arc<Shared>) {
    let mut writer = Writer::default();
    let mut backoff = Backoff::new();
    let mut retrying = false;
    while shared.in_use() {
        let batch = shared.outbox.take(READ_BLOCK);
        if batch.is_empty() {
            continue;
        }
        match write(shared, &mut writer, &batch, retrying) {
            Ok(()) => {
                backoff.reset();
                retrying = false;
                shared.outbox.stored(batch);
                shared.outage.recovered();
            }
            Err(error) => {
                writer = Writer::default();
                retrying = true;
                let wait = backoff.next_wait();
                tracing::debug!(%error, ?wait, unsent = batch.len(), "cannot publish to Redis; retrying");
                shared
                    .outage
                    .failed(&error.to_string(), shared.outbox.unsent());
                shared.outbox.failed(batch, error.to_string());
                std::thread::sleep(wait);
            }
        }
    }
}

/// The writer's connection, and the streams it has listed among their guilds' topics.
#[derive(Default)]
struct Writer {
    connection: Option<Connection>,
    listed: HashSet<String>,
}

/// Sends one batch of publishes as one script call, on the writer's connection; when
/// `retrying`, first leaves out what an earlier, failed-looking call stored.
fn write(shared: &Shared, writer: &mut Writer, batch: &[Publish], retrying: bool) -> Result<()> {
    let live = match &mut writer.connection {
        Some(live) => live,
        None => {
            let mut fresh = shared.connector.connect()?;
            redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(PUBLISH)
                .query::<String>(&mut fresh)
                .map_err(|e| shared.connector.unavailable(e))?;
            writer.connection.insert(fresh)
        }
    };
    let config = shared.connector.config();
    let mut batch = batch;
    if retrying {
        let stored: Option<u64> = redis::cmd("GET")
            .arg(&shared.keys.publisher)
            .query(live)
            .map_err(|e| shared.connector.unavailable(e))?;
        let stored = stored.unwrap_or(0);
        batch = &batch[batch.partition_point(|p| p.seq <= stored)..];
    }
    let Some(last) = batch.last() else {
        return Ok(());
    };
    let mut command = redis::cmd("EVALSHA");
    command
        .arg(shared.publish.get_hash())
        .arg(1)
        .arg(&shared.keys.publisher)
        .arg(config.max_len)
        .arg(min_id(config.max_age))
        .arg(config.record_ttl.as_secs().max(1))
        .arg(last.seq);
    let frames = frames(batch);
    for frame in &frames {
        let list = !writer.listed.contains(frame.stream);
        command
            .arg(frame.stream)
            .arg(frame.guild)
            .arg(if list { "1" } else { "0" })
            .arg(frame.low.to_string())
            .arg(frame.high.to_string())
            .arg(&frame.ids)
            .arg(&frame.bytes);
    }
    let refused: Vec<String> = command
        .query(live)
        .map_err(|e| shared.connector.unavailable(e))?;
    for frame in &frames {
        writer.listed.insert(frame.stream.to_owned());
    }
    for error in refused {
        // Stored as far as Redis allowed; sending it again would not change that.
        tracing::error!(%error, "Redis refused part of a publish (a key of another type under the prefix?)");
    }
    Ok(())
}

/// The entry id below which age retention trims (`0`: none), allowing for a frame's
/// span so that every message is kept for at least `max_age`.
fn min_id(max_age: Option<std::time::Duration>) -> String {
    let Some(age) = max_age else {
        return "0".to_owned();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let oldest = now.saturating_sub(age).as_millis() as u64;
    EntryId(oldest.saturating_sub(FRAME_SPAN_MS), 0).to_string()
}

/// The messages of a batch for one stream, packed.
struct Frame<'a> {
    stream: &'a str,
    guild: &'a str,
    /// The entry ids of its first and last messages.
    low: EntryId,
    high: EntryId,
    /// The entry ids of all its messages, joined by commas.
    ids: String,
    bytes: Vec<u8>,
}

/// Packs `batch` into frames: per stream, in publish order, a new frame wherever entry
/// ids would not grow, the frame is full, or it would span more than
/// [`FRAME_SPAN_MS`]. A stream's frames keep their order.
fn frames(batch: &[Publish]) -> Vec<Frame<'_>> {
    let mut frames: Vec<Frame<'_>> = Vec::new();
    // The frame still open per stream, by index into `frames`.
    let mut open: HashMap<&str, usize> = HashMap::new();
    for publish in batch {
        for stream in &publish.streams {
            let joins = open.get(stream.as_str()).copied().filter(|&i| {
                let frame = &frames[i];
                frame.high < publish.entry
                    && publish.entry.0 - frame.low.0 <= FRAME_SPAN_MS
                    && frame.bytes.len() + publish.bytes.len() <= FRAME_BYTES
            });
            let frame = match joins {
                Some(i) => {
                    let frame = &mut frames[i];
                    frame.ids.push(',');
                    frame
                }
                None => {
                    open.insert(stream, frames.len());
                    frames.push(Frame {
                        stream,
                        guild: &publish.guild,
                        low: publish.entry,
                        high: publish.entry,
                        ids: String::new(),
                        bytes: Vec::with_capacity(publish.bytes.len()),
                    });
                    frames.last_mut().expect("pushed just above")
                }
            };
            frame.high = publish.entry;
            frame.bytes.extend_from_slice(&publish.bytes);
            let _ = write!(frame.ids, "{}", publish.entry);
        }
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine_core::{IdGenerator, Priority};

    fn publish(stream: &str, entry: EntryId, bytes: usize) -> Publish {
        Publish {
            seq: 0,
            entry,
            guild: "g".into(),
            streams: vec![stream.into()],
            bytes: vec![0; bytes],
        }
    }

    #[test]
    fn frames_take_growing_ids_within_a_span_and_a_size_per_stream() {
        let at = |ms, seq| EntryId(1_800_000_000_000 + ms, seq);
        let batch = [
            publish("a", at(0, 1), 10),
            publish("b", at(0, 2), 10),
            publish("a", at(0, 3), 10),
            publish("a", at(0, 2), 10), // not after the frame's last: a new frame
            publish("a", at(FRAME_SPAN_MS + 1, 0), 10), // past the span: a new frame
            publish("b", at(0, 4), FRAME_BYTES), // past the size: a new frame
        ];
        let frames = frames(&batch);
        let shape: Vec<(&str, String, String, &str, usize)> = frames
            .iter()
            .map(|f| {
                (
                    f.stream,
                    f.low.to_string(),
                    f.high.to_string(),
                    f.ids.as_str(),
                    f.bytes.len(),
                )
            })
            .collect();
        let t = |ms: u64, seq: u64| at(ms, seq).to_string();
        assert_eq!(
            shape,
            [
                (
                    "a",
                    t(0, 1),
                    t(0, 3),
                    &*format!("{},{}", t(0, 1), t(0, 3)),
                    20
                ),
                ("b", t(0, 2), t(0, 2), &*t(0, 2), 10),
                ("a", t(0, 2), t(0, 2), &*t(0, 2), 10),
                (
                    "a",
                    t(FRAME_SPAN_MS + 1, 0),
                    t(FRAME_SPAN_MS + 1, 0),
                    &*t(FRAME_SPAN_MS + 1, 0),
                    10
                ),
                ("b", t(0, 4), t(0, 4), &*t(0, 4), FRAME_BYTES),
            ]
        );
    }

    #[test]
    fn entry_ids_follow_message_time_and_ignore_priority() {
        let ids = IdGenerator::new(5).unwrap();
        let a = ids.next_at(Priority::Normal, 1_800_000_000_000);
        let b = ids.next_at(Priority::Urgent, 1_800_000_000_000);
        let (ea, eb) = (entry_of(a), entry_of(b));
        assert_eq!(ea.0, 1_800_000_000_000);
        assert_eq!(eb.0, 1_800_000_000_000);
        assert!(ea < eb, "{ea} then {eb}: minted in that order");
        assert_eq!(ea.1 >> 10, 5, "the generator's bits");
    }
}
