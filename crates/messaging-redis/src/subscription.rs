//! One client's subscription: what the readers fetched for it, ordered by message id,
//! and its positions, which it stores in Redis so it resumes wherever it restarts.
//!
//! Positions are kept per topic as a *watermark*: the stream entry up to which
//! everything has been completed. Deliveries are handed out in message-id order across
//! topics (priority first), so within one topic they may complete out of stream order;
//! the watermark then stays below the oldest entry not yet completed. Watermarks are
//! written to Redis when the client runs out of work, every [`FLUSH_EVERY`]
//! completions, and when it detaches.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use engine_core::{
    DeadLetter, Delivery, Error, ErrorKind, Message, MessageId, Notify, Outcome, Result,
    Subscription,
};

use crate::{NAME, Shared};

/// Completions between two writes of a busy client's positions.
pub const FLUSH_EVERY: u64 = 256;

/// A stream entry id, `ms-seq`, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EntryId(pub u64, pub u64);

impl EntryId {
    /// Parses `ms-seq`.
    pub fn parse(text: &str) -> Option<Self> {
        let (ms, seq) = text.split_once('-')?;
        Some(Self(ms.parse().ok()?, seq.parse().ok()?))
    }

    /// The entry just before this one.
    fn before(self) -> Self {
        match self {
            Self(ms, 0) => Self(ms.saturating_sub(1), u64::MAX),
            Self(ms, seq) => Self(ms, seq - 1),
        }
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// A delivery fetched for a client and not yet completed.
#[derive(Debug, Clone)]
struct Fetched {
    /// Which of the client's topics.
    topic: usize,
    entry: EntryId,
    message: Arc<Message>,
}

/// Orders fetched deliveries by message id, then stream entry (a message published to
/// two topics is two entries).
#[derive(Debug)]
struct ByMessageId(Fetched);

impl ByMessageId {
    fn key(&self) -> (MessageId, EntryId, usize) {
        (self.0.message.id, self.0.entry, self.0.topic)
    }
}

impl PartialEq for ByMessageId {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for ByMessageId {}

impl PartialOrd for ByMessageId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByMessageId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

/// What the readers and the subscription share about one client.
pub struct ClientState {
    pub(crate) namespace: String,
    pub(crate) client_id: String,
    /// The topic names, by index.
    pub(crate) topics: Vec<Arc<str>>,
    /// The stream keys, by topic index.
    pub(crate) keys: Vec<String>,
    notify: Arc<dyn Notify>,
    inner: Mutex<Inner>,
}

struct Inner {
    queue: BinaryHeap<Reverse<ByMessageId>>,
    in_flight: VecDeque<Fetched>,
    /// The last entry fetched, per topic.
    cursor: Vec<EntryId>,
    /// Entries fetched and not completed, per topic.
    open: Vec<BTreeSet<EntryId>>,
    /// Everything up to here is completed, per topic.
    watermark: Vec<EntryId>,
    /// Watermarks not yet written to Redis.
    dirty: Vec<bool>,
    completed_since_flush: u64,
}

impl ClientState {
    /// A client starting at `start` (one position per topic).
    pub fn new(
        namespace: &str,
        client_id: &str,
        topics: Vec<Arc<str>>,
        keys: Vec<String>,
        start: Vec<EntryId>,
        notify: Arc<dyn Notify>,
    ) -> Self {
        let n = topics.len();
        Self {
            namespace: namespace.to_owned(),
            client_id: client_id.to_owned(),
            topics,
            keys,
            notify,
            inner: Mutex::new(Inner {
                queue: BinaryHeap::new(),
                in_flight: VecDeque::new(),
                cursor: start.clone(),
                open: vec![BTreeSet::new(); n],
                watermark: start,
                dirty: vec![false; n],
                completed_since_flush: 0,
            }),
        }
    }

    /// Where the readers should read `topic` from for this client.
    pub fn cursor(&self, topic: usize) -> EntryId {
        self.lock().cursor[topic]
    }

    /// Takes entries the readers fetched from `topic`'s stream, in stream order.
    pub fn receive(&self, topic: usize, entries: &[(EntryId, Arc<Message>)]) {
        let mut inner = self.lock();
        let mut queued = false;
        for (entry, message) in entries {
            if *entry <= inner.cursor[topic] {
                continue;
            }
            inner.cursor[topic] = *entry;
            if message.sender == self.client_id {
                // Never delivered to its sender: complete at once.
                inner.advance(topic);
                continue;
            }
            inner.open[topic].insert(*entry);
            inner.queue.push(Reverse(ByMessageId(Fetched {
                topic,
                entry: *entry,
                message: message.clone(),
            })));
            queued = true;
        }
        drop(inner);
        if queued {
            self.notify.notify();
        }
    }

    /// The watermarks not yet written, as (topic index, entry).
    fn dirty(&self) -> Vec<(usize, EntryId)> {
        let inner = self.lock();
        (0..self.topics.len())
            .filter(|&t| inner.dirty[t])
            .map(|t| (t, inner.watermark[t]))
            .collect()
    }

    fn mark_written(&self, written: &[(usize, EntryId)]) {
        let mut inner = self.lock();
        for (topic, entry) in written {
            if inner.watermark[*topic] == *entry {
                inner.dirty[*topic] = false;
            }
        }
        inner.completed_since_flush = 0;
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    /// Moves `topic`'s watermark up to just below its oldest open entry.
    fn advance(&mut self, topic: usize) {
        let mark = match self.open[topic].first() {
            Some(oldest) => oldest.before(),
            None => self.cursor[topic],
        };
        if mark > self.watermark[topic] {
            self.watermark[topic] = mark;
            self.dirty[topic] = true;
        }
    }
}

/// A live subscription to the Redis backend.
pub struct RedisSubscription {
    pub(crate) shared: Arc<Shared>,
    pub(crate) state: Arc<ClientState>,
    pub(crate) attached: bool,
}

impl RedisSubscription {
    /// Writes the client's changed positions to Redis.
    fn flush_positions(&self) -> Result<()> {
        let dirty = self.state.dirty();
        if dirty.is_empty() {
            return Ok(());
        }
        let key = self
            .shared
            .keys
            .positions(&self.state.namespace, &self.state.client_id);
        let fields: Vec<(String, String)> = dirty
            .iter()
            .map(|(topic, entry)| (self.state.topics[*topic].to_string(), entry.to_string()))
            .collect();
        self.shared.run(|connection| {
            redis::cmd("HSET")
                .arg(&key)
                .arg(&fields)
                .query::<()>(connection)
        })?;
        self.state.mark_written(&dirty);
        Ok(())
    }

    fn to_delivery(&self, fetched: &Fetched) -> Delivery {
        Delivery {
            topic: self.state.topics[fetched.topic].clone(),
            message: fetched.message.clone(),
        }
    }

    fn detach(&mut self) -> Result<()> {
        if !std::mem::take(&mut self.attached) {
            return Ok(());
        }
        self.shared.forget(&self.state);
        // What was fetched and not completed is fetched again on resubscribing: the
        // positions only cover completed entries.
        self.flush_positions()
    }
}

impl Subscription for RedisSubscription {
    fn next(&mut self) -> Result<Option<Delivery>> {
        if let Some(fetched) = self.state.lock().in_flight.front() {
            return Ok(Some(self.to_delivery(fetched)));
        }
        self.next_ahead()
    }

    fn next_ahead(&mut self) -> Result<Option<Delivery>> {
        let fetched = {
            let mut inner = self.state.lock();
            let Some(Reverse(ByMessageId(fetched))) = inner.queue.pop() else {
                drop(inner);
                // Out of work: a good moment to store positions.
                if let Err(error) = self.flush_positions() {
                    tracing::warn!(client = %self.state.client_id, %error, "cannot store positions yet");
                }
                return Ok(None);
            };
            inner.in_flight.push_back(fetched.clone());
            fetched
        };
        Ok(Some(self.to_delivery(&fetched)))
    }

    fn complete(&mut self, outcome: Outcome) -> Result<()> {
        let Some(fetched) = self.state.lock().in_flight.front().cloned() else {
            return Err(Error::new(
                ErrorKind::Conflict,
                NAME,
                format!(
                    "client {:?} completed a delivery it was not handed",
                    self.state.client_id
                ),
            ));
        };
        if let Outcome::Failed(failure) = outcome {
            let delivery = self.to_delivery(&fetched);
            let letter = DeadLetter::for_delivery(
                &self.state.client_id,
                &delivery,
                failure,
                &self.shared.ids,
                &self.state.namespace,
            )?;
            if let Some(letter) = letter {
                // Not completed unless the dead letter is stored.
                self.shared.publish_message(&letter)?;
            }
        }
        let flush = {
            let mut inner = self.state.lock();
            inner.in_flight.pop_front();
            inner.open[fetched.topic].remove(&fetched.entry);
            inner.advance(fetched.topic);
            inner.completed_since_flush += 1;
            inner.completed_since_flush >= FLUSH_EVERY
        };
        if flush && let Err(error) = self.flush_positions() {
            tracing::warn!(client = %self.state.client_id, %error, "cannot store positions yet");
        }
        Ok(())
    }

    fn pending(&self) -> usize {
        let inner = self.state.lock();
        inner.queue.len() + inner.in_flight.len()
    }

    fn close(mut self: Box<Self>) -> Result<()> {
        self.detach()
    }
}

impl Drop for RedisSubscription {
    fn drop(&mut self) {
        if let Err(error) = self.detach() {
            tracing::warn!(client = %self.state.client_id, %error, "cannot store positions on detaching");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_parse_order_and_step_back() {
        let a = EntryId::parse("1700000000000-0").unwrap();
        let b = EntryId::parse("1700000000000-1").unwrap();
        assert!(a < b);
        assert_eq!(b.before(), a);
        assert_eq!(a.before(), EntryId(1_699_999_999_999, u64::MAX));
        assert_eq!(a.to_string(), "1700000000000-0");
        assert_eq!(EntryId::parse("nope"), None);
    }
}
