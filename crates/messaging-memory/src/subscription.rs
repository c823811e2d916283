//! A client's live subscription to the in-memory bus.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use engine_core::{
    DeadLetter, Delivery, ERROR_TOPIC, Error, ErrorKind, IdGenerator, Message, Outcome, Payload,
    Priority, Result, Subscription,
};

use crate::namespace::{Client, Namespace};

/// A client's subscription; dropping it detaches the client and keeps its queue.
#[derive(Debug)]
pub struct MemorySubscription {
    pub(crate) namespace_name: String,
    pub(crate) namespace: Arc<Namespace>,
    pub(crate) client: Arc<Client>,
    pub(crate) ids: Arc<IdGenerator>,
    pub(crate) attached: bool,
}

impl Subscription for MemorySubscription {
    fn next(&mut self) -> Result<Option<Delivery>> {
        let mut queue = self.client.lock();
        if let Some(delivery) = &queue.in_flight {
            return Ok(Some(delivery.clone()));
        }
        let Some(delivery) = queue.items.pop_front() else {
            return Ok(None);
        };
        queue.in_flight = Some(delivery.clone());
        Ok(Some(delivery))
    }

    fn complete(&mut self, outcome: Outcome) -> Result<()> {
        let delivery = {
            let mut queue = self.client.lock();
            let delivery = queue.in_flight.take().ok_or_else(|| {
                Error::new(
                    ErrorKind::Conflict,
                    "memory",
                    format!(
                        "client {:?} completed a delivery it was not handed",
                        self.client.id
                    ),
                )
            })?;
            self.client.queued.store(queue.len(), Ordering::Relaxed);
            delivery
        };
        let Outcome::Failed(failure) = outcome else {
            return Ok(());
        };
        if &*delivery.topic == ERROR_TOPIC {
            tracing::warn!(
                client = %self.client.id,
                message = %delivery.message.id,
                error = %failure.text,
                "handling a dead letter failed; dead letters are not dead-lettered again"
            );
            return Ok(());
        }
        let letter = DeadLetter {
            client: self.client.id.clone(),
            topic: delivery.topic.to_string(),
            message: Message::clone(&delivery.message),
            failure,
        };
        let message = Message::builder(ERROR_TOPIC, Payload::json(&letter)?)
            .priority(Priority::Normal)
            .build(&self.ids, &self.namespace_name, &self.client.id);
        for notify in self.namespace.publish(Arc::new(message)) {
            notify.notify();
        }
        Ok(())
    }

    fn pending(&self) -> usize {
        self.client.queued.load(Ordering::Relaxed)
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
            queue.detach();
            self.client.queued.store(queue.len(), Ordering::Relaxed);
        }
    }
}

impl Drop for MemorySubscription {
    fn drop(&mut self) {
        self.detach();
    }
}
