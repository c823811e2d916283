//! History queries: a topic's retained messages, and messages by id.
//!
//! A message is looked up by id where the writer stores it (see [`crate::writer`]): in
//! one of its guild's topic streams, in the entry with the greatest id not above the
//! entry id its message id maps to, or, if it reached Redis after a newer message,
//! wherever its guild's late record for that hour says.

use std::sync::Arc;

use engine_core::{Message, MessageId, Result};

use crate::Shared;
use crate::frame::{decode_fields, find_in_fields};
use crate::writer::entry_of;

type Entries = Vec<(String, Vec<Vec<u8>>)>;

impl Shared {
    /// The retained messages of one topic stream, in stream order.
    pub(crate) fn range(&self, namespace: &str, topic: &str) -> Result<Vec<Arc<Message>>> {
        let key = self.keys.stream(namespace, topic);
        let entries: Entries = self.run(|connection| {
            redis::cmd("XRANGE")
                .arg(&key)
                .arg("-")
                .arg("+")
                .query(connection)
        })?;
        let mut messages = Vec::with_capacity(entries.len());
        for (entry, fields) in &entries {
            match decode_fields(fields) {
                Ok(decoded) => messages.extend(decoded),
                // Passed over as live delivery passes it over.
                Err(error) => {
                    tracing::error!(stream = %key, %entry, %error, "skipping an entry that does not decode");
                }
            }
        }
        Ok(messages)
    }

    /// The messages with these ids that are still retained, in the order asked.
    pub(crate) fn by_ids(&self, namespace: &str, ids: &[MessageId]) -> Result<Vec<Arc<Message>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let streams: Vec<String> = self.run(|connection| {
            redis::cmd("SMEMBERS")
                .arg(self.keys.topics(namespace))
                .query(connection)
        })?;
        // One round trip: in every stream the entry that would hold each id, and each
        // id's late record.
        let (candidates, late): (Vec<Entries>, Vec<Option<String>>) = self.run(|connection| {
            let mut pipe = redis::pipe();
            for id in ids {
                let entry = entry_of(*id).to_string();
                for stream in &streams {
                    pipe.cmd("XREVRANGE")
                        .arg(stream)
                        .arg(&entry)
                        .arg("-")
                        .arg("COUNT")
                        .arg(1);
                }
            }
            let mut late = redis::pipe();
            for id in ids {
                late.cmd("HGET")
                    .arg(self.keys.late(namespace, id.unix_ms()))
                    .arg(entry_of(*id).to_string());
            }
            Ok((pipe.query(connection)?, late.query(connection)?))
        })?;
        let mut found: Vec<Option<Arc<Message>>> = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            let entries = &candidates[i * streams.len()..(i + 1) * streams.len()];
            found.push(first_with_id(entries.iter().flatten(), *id));
        }
        // Those stored late, where their records say: one more round trip.
        let moved: Vec<(usize, &str, &str)> = (0..ids.len())
            .filter(|&i| found[i].is_none())
            .filter_map(|i| {
                let (stream, entry) = late[i].as_deref()?.split_once('\n')?;
                Some((i, stream, entry))
            })
            .collect();
        if !moved.is_empty() {
            let entries: Vec<Entries> = self.run(|connection| {
                let mut pipe = redis::pipe();
                for (_, stream, entry) in &moved {
                    pipe.cmd("XRANGE").arg(*stream).arg(*entry).arg(*entry);
                }
                pipe.query(connection)
            })?;
            for ((i, _, _), entries) in moved.iter().zip(&entries) {
                found[*i] = first_with_id(entries.iter(), ids[*i]);
            }
        }
        Ok(found.into_iter().flatten().collect())
    }
}

/// The message `id` in the first of `entries` that holds it; entries that do not
/// decode are passed over.
fn first_with_id<'a>(
    mut entries: impl Iterator<Item = &'a (String, Vec<Vec<u8>>)>,
    id: MessageId,
) -> Option<Arc<Message>> {
    entries.find_map(|(_, fields)| find_in_fields(fields, id).ok().flatten())
}
