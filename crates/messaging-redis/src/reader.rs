//! Live delivery: a few reader threads per backend instance, each with one blocking
//! `XREAD` connection over its share of the subscribed streams, hand what they fetch to
//! the subscriptions. Not a connection per agent.

use std::sync::Arc;

use redis::{Connection, RedisResult};

use crate::conn::Backoff;
use crate::frame::decode_fields;
use crate::position::EntryId;
use crate::subscription::ClientState;
use crate::{Batch, READ_BLOCK, Shared};

/// Entries one `XREAD` fetches per stream at most (each holds one or more messages).
const READ_COUNT: usize = 64;

/// One reader thread: fetches new entries of its share of the streams (those whose key
/// hashes to `reader` of `readers`) and hands them to their subscribers, until the
/// backend and all its subscriptions are gone.
pub(crate) fn read_loop(shared: &Arc<Shared>, reader: usize, readers: usize) {
    let mut connection: Option<Connection> = None;
    let mut backoff = Backoff::new();
    while shared.in_use() {
        read_once(shared, &mut connection, &mut backoff, reader, readers);
    }
}

/// One turn of a reader: waits for subscriptions, or reads once and dispatches.
fn read_once(
    shared: &Shared,
    connection: &mut Option<Connection>,
    backoff: &mut Backoff,
    reader: usize,
    readers: usize,
) {
    let wanted = wanted(shared, reader, readers);
    if wanted.is_empty() {
        let streams = shared.lock_streams();
        let _ = shared.changed.wait_timeout(streams, READ_BLOCK);
        return;
    }
    if connection.is_none() {
        match shared.connector.connect() {
            Ok(fresh) => *connection = Some(fresh),
            Err(error) => {
                let wait = backoff.next_wait();
                tracing::debug!(%error, ?wait, "reader cannot connect; retrying");
                shared
                    .outage
                    .failed(&error.to_string(), shared.outbox.unsent());
                std::thread::sleep(wait);
                return;
            }
        }
    }
    let Some(live) = connection.as_mut() else {
        return;
    };
    match read(live, &wanted) {
        Ok(batches) => {
            backoff.reset();
            shared.outage.recovered();
            dispatch(shared, &wanted, batches);
        }
        Err(error) => {
            *connection = None;
            let wait = backoff.next_wait();
            tracing::debug!(%error, ?wait, "reader lost its Redis connection; reconnecting");
            shared
                .outage
                .failed(&error.to_string(), shared.outbox.unsent());
            std::thread::sleep(wait);
        }
    }
}

/// The streams of this reader's share with the position to read after: the lowest
/// cursor among their subscribers that have room for more.
fn wanted(shared: &Shared, reader: usize, readers: usize) -> Vec<(String, EntryId)> {
    let streams = shared.lock_streams();
    streams
        .iter()
        .filter(|(key, _)| share(key, readers) == reader)
        .filter_map(|(key, clients)| {
            let lowest = clients
                .iter()
                .filter_map(|(topic, client)| client.upgrade()?.wants(*topic))
                .min()?;
            Some((key.clone(), lowest))
        })
        .collect()
}

/// Hands each stream's entries to its subscribers. `wanted` says where each read
/// started: a subscriber whose own cursor is behind that (one that subscribed, or
/// resubscribed from its stored position, while the read was waiting) would miss what
/// lies between, so it is left out and reads from its own cursor next turn.
fn dispatch(shared: &Shared, wanted: &[(String, EntryId)], batches: Vec<Batch>) {
    for (key, entries) in batches {
        let Some(after) = wanted
            .iter()
            .find(|(wanted, _)| *wanted == key)
            .map(|(_, after)| *after)
        else {
            continue;
        };
        let clients: Vec<(usize, Arc<ClientState>)> = shared
            .lock_streams()
            .get(&key)
            .map(|clients| {
                clients
                    .iter()
                    .filter_map(|(topic, client)| Some((*topic, client.upgrade()?)))
                    .collect()
            })
            .unwrap_or_default();
        for (topic, client) in clients {
            client.receive(topic, after, &entries);
        }
    }
}

/// Which reader reads stream `key`.
fn share(key: &str, readers: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % readers.max(1) as u64) as usize
}

/// One blocking `XREAD` over `wanted`.
fn read(connection: &mut Connection, wanted: &[(String, EntryId)]) -> RedisResult<Vec<Batch>> {
    let mut command = redis::cmd("XREAD");
    command
        .arg("COUNT")
        .arg(READ_COUNT)
        .arg("BLOCK")
        .arg(READ_BLOCK.as_millis() as u64)
        .arg("STREAMS");
    for (key, _) in wanted {
        command.arg(key);
    }
    for (_, after) in wanted {
        command.arg(after.to_string());
    }
    type Reply = Option<Vec<(String, Vec<(String, Vec<Vec<u8>>)>)>>;
    let reply: Reply = command.query(connection)?;
    let mut batches = Vec::new();
    for (key, entries) in reply.unwrap_or_default() {
        let mut decoded = Vec::with_capacity(entries.len());
        for (id, fields) in entries {
            let Some(entry) = EntryId::parse(&id) else {
                tracing::error!(stream = %key, entry = %id, "skipping an entry with a foreign id");
                continue;
            };
            match decode_fields(&fields) {
                Ok(messages) => decoded.push((entry, messages)),
                Err(error) => {
                    tracing::error!(stream = %key, entry = %id, %error, "skipping an entry that does not decode");
                    // Passed over, so the read moves on.
                    decoded.push((entry, Vec::new()));
                }
            }
        }
        batches.push((key, decoded));
    }
    Ok(batches)
}
