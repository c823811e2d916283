//! One client's subscription: what the readers fetched for it, ordered by message id,
//! and its positions, which it stores in Redis so it resumes wherever it restarts.
//!
//! A stream entry holds the messages one batch published to that topic (a frame), so a
//! message's place in a topic is a [`Pos`]: its entry and its index there. Positions
//! are kept per topic as a *watermark*: the place up to which everything has been
//! completed. Deliveries are handed out in message-id order across topics (priority
//! first), so within one topic they may complete out of stream order; the watermark
//! then stays below the oldest place not yet completed. Watermarks are
//! written to Redis when the client runs out of work, every [`FLUSH_EVERY`]
//! completions, and when it detaches.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use engine_core::{
    DeadLetter, Delivery, Message, MessageId, Notify, Outcome, Result, Subscription,
};

use crate::Shared;
use crate::error::BackendError;
use crate::position::{EntryId, Pos};

/// Completions between two writes of a busy client's positions.
pub const FLUSH_EVERY: u64 = 256;

/// Deliveries fetched ahead for one client at most; beyond this the readers leave the
/// rest in Redis until the client catches up, so a slow agent holds bounded memory.
pub const FETCH_AHEAD: usize = 8_192;

/// A delivery fetched for a client and not yet completed.
#[derive(Debug, Clone)]
struct Fetched {
    /// Which of the client's topics.
    topic: usize,
    pos: Pos,
    message: Arc<Message>,
}

/// Orders fetched deliveries by message id, then stream entry (a message published to
/// two topics is two entries).
#[derive(Debug)]
struct ByMessageId(Fetched);

impl ByMessageId {
    fn key(&self) -> (MessageId, Pos, usize) {
        (self.0.message.id, self.0.pos, self.0.topic)
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
pub(crate) struct ClientState {
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
    /// The last place fetched, per topic.
    cursor: Vec<Pos>,
    /// Places fetched and not completed, per topic.
    open: Vec<BTreeSet<Pos>>,
    /// Everything up to here is completed, per topic.
    watermark: Vec<Pos>,
    /// Watermarks not yet written to Redis.
    dirty: Vec<bool>,
    completed_since_flush: u64,
}

impl ClientState {
    /// A client starting at `start` (one position per topic).
    pub(crate) fn new(
        namespace: &str,
        client_id: &str,
        topics: Vec<Arc<str>>,
        keys: Vec<String>,
        start: Vec<Pos>,
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

    /// The entry after which the readers should read `topic` for this client, or
    /// `None` while it has [`FETCH_AHEAD`] deliveries waiting already.
    pub(crate) fn wants(&self, topic: usize) -> Option<EntryId> {
        let inner = self.lock();
        (inner.queue.len() < FETCH_AHEAD).then(|| inner.cursor[topic].read_after())
    }

    /// Takes entries the readers fetched from `topic`'s stream, in stream order, read
    /// after entry `after`. Entries read from beyond where this client has fetched to
    /// are left for its own next read: taking them would skip what lies between.
    pub(crate) fn receive(
        &self,
        topic: usize,
        after: EntryId,
        entries: &[(EntryId, Vec<Arc<Message>>)],
    ) {
        let mut inner = self.lock();
        if after > inner.cursor[topic].read_after() {
            return;
        }
        let mut queued = false;
        'entries: for (entry, messages) in entries {
            if messages.is_empty() && Pos::whole(*entry) > inner.cursor[topic] {
                // An entry the reader could not decode: passed over.
                inner.cursor[topic] = Pos::whole(*entry);
                inner.advance(topic);
            }
            for (index, message) in messages.iter().enumerate() {
                let pos = Pos {
                    entry: *entry,
                    index: if index + 1 == messages.len() {
                        Pos::LAST
                    } else {
                        index as u32
                    },
                };
                if pos <= inner.cursor[topic] {
                    continue;
                }
                if inner.queue.len() >= FETCH_AHEAD {
                    // The rest stays in Redis; the cursor says where to fetch it from.
                    break 'entries;
                }
                inner.cursor[topic] = pos;
                if *message.sender == *self.client_id {
                    // Never delivered to its sender: complete at once.
                    inner.advance(topic);
                    continue;
                }
                inner.open[topic].insert(pos);
                inner.queue.push(Reverse(ByMessageId(Fetched {
                    topic,
                    pos,
                    message: message.clone(),
                })));
                queued = true;
            }
        }
        drop(inner);
        if queued {
            self.notify.notify();
        }
    }

    /// The watermarks not yet written, as (topic index, place).
    fn dirty(&self) -> Vec<(usize, Pos)> {
        let inner = self.lock();
        (0..self.topics.len())
            .filter(|&t| inner.dirty[t])
            .map(|t| (t, inner.watermark[t]))
            .collect()
    }

    fn mark_written(&self, written: &[(usize, Pos)]) {
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
pub(crate) struct RedisSubscription {
    pub(crate) shared: Arc<Shared>,
    pub(crate) state: Arc<ClientState>,
    pub(crate) attached: bool,
    /// Keeps the backend's threads running while the subscription lives.
    pub(crate) _user: Arc<()>,
}

impl RedisSubscription {
    /// Writes the client's changed positions to Redis, once what the client published
    /// (as the sender) is stored: a position never gets ahead of the messages its
    /// handler published, so a process killed between the two redelivers the message
    /// rather than losing what it published.
    fn flush_positions(&self) -> Result<()> {
        let dirty = self.state.dirty();
        if dirty.is_empty() {
            return Ok(());
        }
        self.shared.outbox.settle_sender(
            &self.state.client_id,
            self.shared.connector.config().io_timeout,
        )?;
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
                    tracing::debug!(client = %self.state.client_id, %error, "cannot store positions yet");
                }
                return Ok(None);
            };
            inner.in_flight.push_back(fetched.clone());
            if inner.queue.len() == FETCH_AHEAD / 2 {
                // Room again: a reader that left this client's streams alone may fetch.
                self.shared.changed.notify_all();
            }
            fetched
        };
        Ok(Some(self.to_delivery(&fetched)))
    }

    fn complete(&mut self, outcome: Outcome) -> Result<()> {
        let Some(fetched) = self.state.lock().in_flight.front().cloned() else {
            return Err(BackendError::NotHanded {
                client: self.state.client_id.clone(),
            }
            .into());
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
            inner.open[fetched.topic].remove(&fetched.pos);
            inner.advance(fetched.topic);
            inner.completed_since_flush += 1;
            inner.completed_since_flush >= FLUSH_EVERY
        };
        if flush && let Err(error) = self.flush_positions() {
            tracing::debug!(client = %self.state.client_id, %error, "cannot store positions yet");
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
    fn places_order_within_and_across_entries_and_round_trip() {
        let (a, b) = (EntryId(5, 0), EntryId(5, 1));
        let first = Pos { entry: b, index: 0 };
        assert!(Pos::whole(a) < first && first < Pos::whole(b));
        assert_eq!(first.before(), Pos::whole(a));
        assert_eq!(
            Pos::whole(b).before(),
            Pos {
                entry: b,
                index: Pos::LAST - 1
            }
        );
        assert_eq!(first.read_after(), a, "entry b is not wholly behind");
        assert_eq!(Pos::whole(b).read_after(), b);
        for pos in [first, Pos::whole(b)] {
            assert_eq!(Pos::parse(&pos.to_string()), Some(pos));
        }
    }

    #[test]
    fn a_read_from_beyond_the_cursor_is_left_for_the_next() {
        let topics = vec![Arc::<str>::from("t")];
        let start = Pos::whole(EntryId(5, 0));
        let client = ClientState::new(
            "ns",
            "c",
            topics,
            vec!["k".into()],
            vec![start],
            Arc::new(engine_core::NoNotify),
        );
        let message = Arc::new(
            Message::builder("t", engine_core::Payload::encode_json(&1).unwrap()).build(
                &engine_core::IdGenerator::process(),
                "ns",
                "publisher",
            ),
        );
        let entries = vec![(EntryId(9, 0), vec![message.clone()])];
        // Read after entry 8 while this client has only fetched up to 5: a gap.
        client.receive(0, EntryId(8, 0), &entries);
        assert_eq!(client.lock().queue.len(), 0);
        assert_eq!(client.lock().cursor[0], start);
        client.receive(0, EntryId(5, 0), &entries);
        assert_eq!(client.lock().queue.len(), 1);
    }

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
