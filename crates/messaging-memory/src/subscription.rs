//! A client's live subscription to the in-memory bus.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use engine_core::{DeadLetter, Delivery, Error, IdGenerator, Outcome, Result, Subscription};

use crate::error::MemoryError;
use crate::namespace::{Client, Namespace};

/// How many deliveries a subscription takes from its client's queue under one lock.
const BATCH: usize = 256;

/// A client's subscription; dropping it detaches the client and keeps its queue.
///
/// It takes deliveries from the client's queue in batches (one lock per batch, not per
/// message) and completes them without locking; what it has taken and not completed
/// goes back to the queue when it detaches, and back into order when a more urgent
/// message arrives.
#[derive(Debug)]
pub struct MemorySubscription {
    pub(crate) namespace_name: String,
    pub(crate) namespace: Arc<Namespace>,
    pub(crate) client: Arc<Client>,
    pub(crate) ids: Arc<IdGenerator>,
    pub(crate) attached: bool,
    pub(crate) taken: VecDeque<Delivery>,
    /// Handed out and not yet completed, oldest first.
    pub(crate) in_flight: VecDeque<Delivery>,
}

impl Subscription for MemorySubscription {
    fn next(&mut self) -> Result<Option<Delivery>> {
        if let Some(delivery) = self.in_flight.front() {
            return Ok(Some(delivery.clone()));
        }
        self.next_ahead()
    }

    fn next_ahead(&mut self) -> Result<Option<Delivery>> {
        // Load first: a plain read keeps the flag's cache line shared with the publisher.
        if self.client.reordered.load(Ordering::Relaxed)
            && self.client.reordered.swap(false, Ordering::Acquire)
        {
            let mut queue = self.client.lock();
            queue.give_back(self.taken.drain(..));
            self.client
                .backlog
                .store(queue.items.len(), Ordering::Relaxed);
        }
        if self.taken.is_empty() && self.client.backlog.load(Ordering::Relaxed) > 0 {
            let mut queue = self.client.lock();
            let n = queue.items.len().min(BATCH);
            self.taken.extend(queue.items.drain(..n));
            self.client
                .backlog
                .store(queue.items.len(), Ordering::Relaxed);
            drop(queue);
            self.namespace.room_made();
        }
        let Some(delivery) = self.taken.pop_front() else {
            return Ok(None);
        };
        self.in_flight.push_back(delivery.clone());
        Ok(Some(delivery))
    }

    fn complete(&mut self, outcome: Outcome) -> Result<()> {
        let delivery = self.in_flight.pop_front().ok_or_else(|| {
            Error::from(MemoryError::NotHanded {
                client: self.client.id.clone(),
            })
        })?;
        let Outcome::Failed(failure) = outcome else {
            return Ok(());
        };
        let letter = DeadLetter::for_delivery(
            &self.client.id,
            &delivery,
            failure,
            &self.ids,
            &self.namespace_name,
        )?;
        if let Some(message) = letter
            && let Err(full) = self.namespace.publish(Arc::new(message))
        {
            // The watchers of dead letters are not keeping up: this one is lost, and
            // said so, rather than stop the agent that failed.
            tracing::warn!(client = %self.client.id, watcher = %full.client, "a dead letter found its watcher's queue full; it is dropped");
        }
        Ok(())
    }

    fn pending(&self) -> usize {
        self.taken.len() + self.in_flight.len() + self.client.backlog.load(Ordering::Relaxed)
    }

    fn close(mut self: Box<Self>) -> Result<()> {
        self.detach();
        Ok(())
    }
}

impl MemorySubscription {
    fn detach(&mut self) {
        if std::mem::take(&mut self.attached) {
            let mut queue = self.client.lock();
            let unfinished = self.in_flight.drain(..).chain(self.taken.drain(..));
            queue.give_back(unfinished.collect::<Vec<_>>().into_iter());
            self.client
                .backlog
                .store(queue.items.len(), Ordering::Relaxed);
            queue.notify = None;
            self.client.refuse_at.store(usize::MAX, Ordering::Relaxed);
        }
    }
}

impl Drop for MemorySubscription {
    fn drop(&mut self) {
        self.detach();
    }
}
