//! Publishing without a round trip per message: `publish` queues the message, numbered,
//! and one writer thread per backend instance ([`crate::writer`]) sends what is queued in
//! batches (one call of the publish script each), in publish order.
//!
//! Nothing is dropped silently. A batch that fails is sent again, first, until Redis
//! takes it, with the same numbers, so the writer can leave out what was stored before
//! the reply was lost. While a batch is failing, Redis counts as down and `publish`
//! returns the error to the caller; when the queue is full, `publish` waits
//! for room and then fails rather than grow without bound. `settle` waits until what
//! was queued before it is stored: history and new subscriptions call it first, so a
//! backend instance reads its own writes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use engine_core::{Error, Result};

use crate::error::BackendError;
use crate::position::EntryId;

/// Publishes queued at most before `publish` waits for room.
pub(crate) const LIMIT: usize = 65_536;

/// Publishes sent in one batch at most.
pub(crate) const BATCH: usize = 512;

/// One queued publish: where and under which entry id to store which message.
#[derive(Debug, Clone)]
pub(crate) struct Publish {
    /// Its number among this instance's publishes, from 1, set when it is queued: after
    /// a failure the writer leaves out what the publisher's record says is stored.
    pub seq: u64,
    /// The stream entry id it maps to ([`crate::writer::entry_of`]).
    pub entry: EntryId,
    /// The key prefix of its guild.
    pub guild: String,
    /// One stream key per topic.
    pub streams: Vec<String>,
    /// The encoded message, behind its length (a frame member).
    pub bytes: Vec<u8>,
}

/// The queue between publishers and the writer.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Publish>,
    /// Publishes taken by the writer and not yet stored.
    sending: usize,
    queued: u64,
    stored: u64,
    /// The number of each sender's last publish not yet stored: what a client's
    /// positions wait for ([`Outbox::settle_sender`]).
    last_by_sender: HashMap<Arc<str>, u64>,
    /// Why Redis counts as down, while it does.
    down: Option<String>,
}

impl Outbox {
    /// Queues a publish of `sender`'s; fails while Redis is down, or when the queue stays
    /// full for `timeout`.
    pub(crate) fn push(
        &self,
        mut publish: Publish,
        sender: &Arc<str>,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if let Some(why) = &state.down {
                return Err(unavailable(why));
            }
            if state.queue.len() + state.sending < LIMIT {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(BackendError::Backlogged { waiting: LIMIT }.into());
            }
            state = self.wait(state, left);
        }
        state.queued += 1;
        publish.seq = state.queued;
        let seq = publish.seq;
        match state.last_by_sender.get_mut(sender) {
            Some(last) => *last = seq,
            None => {
                state.last_by_sender.insert(sender.clone(), seq);
            }
        }
        state.queue.push_back(publish);
        self.changed.notify_all();
        Ok(())
    }

    /// Waits until everything queued before the call is stored.
    pub(crate) fn settle(&self, timeout: Duration) -> Result<()> {
        let state = self.lock();
        let target = state.queued;
        self.settle_to(state, target, timeout)
    }

    /// Waits until what `sender` queued before the call is stored: a client's
    /// positions are written only after what its handler published.
    pub(crate) fn settle_sender(&self, sender: &str, timeout: Duration) -> Result<()> {
        let state = self.lock();
        let Some(&target) = state.last_by_sender.get(sender) else {
            return Ok(());
        };
        self.settle_to(state, target, timeout)
    }

    /// Waits until publishes up to number `target` are stored.
    fn settle_to(
        &self,
        mut state: MutexGuard<'_, State>,
        target: u64,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while state.stored < target {
            if let Some(why) = &state.down {
                return Err(unavailable(why));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(BackendError::Unsent {
                    unsent: target - state.stored,
                    timeout,
                }
                .into());
            }
            state = self.wait(state, left);
        }
        Ok(())
    }

    /// The writer's next batch, waiting up to `wait` for one.
    pub(crate) fn take(&self, wait: Duration) -> Vec<Publish> {
        let mut state = self.lock();
        if state.queue.is_empty() {
            state = self.wait(state, wait);
        }
        let n = state.queue.len().min(BATCH);
        state.sending += n;
        state.queue.drain(..n).collect()
    }

    /// The writer stored `batch`.
    pub(crate) fn stored(&self, batch: Vec<Publish>) {
        let mut state = self.lock();
        state.sending -= batch.len();
        state.stored += batch.len() as u64;
        let stored = state.stored;
        state.last_by_sender.retain(|_, last| *last > stored);
        state.down = None;
        self.changed.notify_all();
    }

    /// The writer failed to store `batch`: it goes back to the front, and Redis counts
    /// as down until a batch is stored.
    pub(crate) fn failed(&self, batch: Vec<Publish>, why: String) {
        let mut state = self.lock();
        state.sending -= batch.len();
        for publish in batch.into_iter().rev() {
            state.queue.push_front(publish);
        }
        state.down = Some(why);
        self.changed.notify_all();
    }

    /// How many publishes are queued or being sent.
    pub(crate) fn unsent(&self) -> usize {
        let state = self.lock();
        state.queue.len() + state.sending
    }

    fn wait<'a>(&self, state: MutexGuard<'a, State>, timeout: Duration) -> MutexGuard<'a, State> {
        self.changed
            .wait_timeout(state, timeout)
            .unwrap_or_else(PoisonError::into_inner)
            .0
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn unavailable(why: &str) -> Error {
    BackendError::Down {
        why: why.to_owned(),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(n: u8) -> Publish {
        Publish {
            seq: 0,
            entry: EntryId(1, n.into()),
            guild: "g".into(),
            streams: vec!["s".into()],
            bytes: vec![n],
        }
    }

    #[test]
    fn a_sender_settles_once_its_own_publishes_are_stored() {
        let outbox = Outbox::default();
        let (mine, theirs): (Arc<str>, Arc<str>) = ("mine".into(), "theirs".into());
        outbox.push(publish(1), &mine, Duration::ZERO).unwrap();
        outbox.push(publish(2), &theirs, Duration::ZERO).unwrap();
        // Nothing is stored: neither sender settles.
        assert!(outbox.settle_sender("mine", Duration::ZERO).is_err());
        // A sender that published nothing waits for nothing.
        outbox.settle_sender("idle", Duration::ZERO).unwrap();
        let first = outbox.take(Duration::ZERO);
        assert_eq!(first.len(), 2);
        let (one, two) = (first[..1].to_vec(), first[1..].to_vec());
        outbox.stored(one);
        // Its own publish is stored, the other sender's is not.
        outbox.settle_sender("mine", Duration::ZERO).unwrap();
        assert!(outbox.settle_sender("theirs", Duration::ZERO).is_err());
        outbox.stored(two);
        outbox.settle_sender("theirs", Duration::ZERO).unwrap();
    }

    #[test]
    fn a_failed_batch_goes_back_first_and_refuses_publishes_until_stored() {
        let outbox = Outbox::default();
        for n in 0..3 {
            outbox
                .push(publish(n), &"p".into(), Duration::ZERO)
                .unwrap();
        }
        let batch = outbox.take(Duration::ZERO);
        assert_eq!(batch.len(), 3);
        outbox.failed(batch, "cannot reach Redis at h:1".into());
        let refused = outbox
            .push(publish(9), &"p".into(), Duration::ZERO)
            .unwrap_err();
        assert!(refused.to_string().contains("h:1"), "{refused}");
        assert!(outbox.settle(Duration::ZERO).is_err());
        let again = outbox.take(Duration::ZERO);
        let order: Vec<(u8, u64)> = again.iter().map(|p| (p.bytes[0], p.seq)).collect();
        assert_eq!(
            order,
            [(0, 1), (1, 2), (2, 3)],
            "the same numbers when retried"
        );
        outbox.stored(again);
        outbox.settle(Duration::ZERO).unwrap();
        outbox
            .push(publish(3), &"p".into(), Duration::ZERO)
            .unwrap();
        assert_eq!(outbox.unsent(), 1);
    }
}
