//! Watching a guild from outside it: an [`Observer`] receives the messages of some
//! topics, waiting without polling, and acknowledges each one it hands out.

use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use engine_core::{
    Delivery, Doorbell, ExecutionEngine, GuildContext, Notify, Outcome, Result, StartFrom,
    SubscribeRequest, Subscription,
};

/// How long an observer waits for a wake-up before it drives an engine that runs on
/// the caller's thread again (a publish from another thread wakes no observer of
/// topics it does not reach).
const DRIVE_POLL: Duration = Duration::from_millis(5);

/// The engines a guild runs on the caller's thread, shared with its observers so that
/// waiting on one drives them.
pub(crate) type DrivenEngines = Arc<Mutex<Vec<Arc<dyn ExecutionEngine>>>>;

/// A client of the guild's bus that is not an agent: it receives the messages of its
/// topics in order and acknowledges each one as it hands it out.
///
/// Made by [`Guild::observe`](crate::Guild::observe) or
/// [`Guild::observe_from`](crate::Guild::observe_from). Waiting on it drives the
/// engines that run agents on the caller's thread (the sync engine), so a program
/// that only waits still sees its agents work.
pub struct Observer {
    subscription: Option<Box<dyn Subscription>>,
    doorbell: Arc<Doorbell>,
    wakes: Receiver<()>,
    driven: DrivenEngines,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("pending", &self.pending())
            .finish_non_exhaustive()
    }
}

impl Observer {
    /// Subscribes `client_id` to `topics` of the guild in `context`.
    pub(crate) fn subscribe(
        context: &GuildContext,
        driven: DrivenEngines,
        client_id: &str,
        topics: Vec<String>,
        start: StartFrom,
    ) -> Result<Self> {
        // A ring holds one token; a second ring while it is unread finds the channel
        // full, which is as good: the observer will look.
        let (ring, wakes) = sync_channel(1);
        let doorbell = Arc::new(Doorbell::new(move || {
            let _ = ring.try_send(());
        }));
        let notify: Arc<dyn Notify> = doorbell.clone();
        let subscription = context.messaging.subscribe(
            SubscribeRequest {
                namespace: context.namespace.to_string(),
                client_id: client_id.to_owned(),
                topics,
                start,
                limit: None,
            },
            notify,
        )?;
        Ok(Self {
            subscription: Some(subscription),
            doorbell,
            wakes,
            driven,
        })
    }

    fn subscription(&mut self) -> &mut dyn Subscription {
        self.subscription
            .as_deref_mut()
            .expect("the subscription is only taken when the observer is dropped")
    }

    /// The next message if one is queued now, acknowledged; `None` otherwise.
    pub fn try_recv(&mut self) -> Result<Option<Delivery>> {
        let subscription = self.subscription();
        let Some(delivery) = subscription.next()? else {
            return Ok(None);
        };
        subscription.complete(Outcome::Handled)?;
        Ok(Some(delivery))
    }

    /// The next message, waiting up to `timeout` for one; acknowledged before it is
    /// returned. `None` when none came in time.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Delivery>> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            // Answer first: a message published after the look below rings again.
            self.doorbell.answered();
            if let Some(delivery) = self.try_recv()? {
                return Ok(Some(delivery));
            }
            let remaining = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            if remaining.is_zero() {
                return Ok(None);
            }
            let engines = self
                .driven
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if engines.is_empty() {
                match self.wakes.recv_timeout(remaining) {
                    Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                    // The bus dropped the doorbell: nothing will ring again.
                    Err(RecvTimeoutError::Disconnected) => return self.try_recv(),
                }
            } else {
                let slice = remaining.min(DRIVE_POLL);
                let handled: usize = engines.iter().map(|engine| engine.drive_for(slice)).sum();
                if handled == 0 {
                    let _ = self.wakes.recv_timeout(slice);
                }
            }
        }
    }

    /// How many messages are queued for this observer.
    pub fn pending(&self) -> usize {
        self.subscription.as_ref().map_or(0, |s| s.pending())
    }

    /// Detaches from the bus, keeping the client's position (as dropping does, but
    /// reporting an error).
    pub fn close(mut self) -> Result<()> {
        match self.subscription.take() {
            Some(subscription) => subscription.close(),
            None => Ok(()),
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        if let Some(subscription) = self.subscription.take() {
            let _ = subscription.close();
        }
    }
}
