//! A wake-up sent at most once until its taker has answered it, however often it rings:
//! the [`Notify`] both ends of a connection hand the messaging backend.

use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::Sender;
use engine_core::Notify;

/// Sends `signal` on a channel when rung, unless a ring is still unanswered.
#[derive(Debug)]
pub struct Doorbell<T> {
    pending: AtomicBool,
    sender: Sender<T>,
    signal: T,
}

impl<T: Clone + Send + Sync> Doorbell<T> {
    /// A doorbell that sends `signal` on `sender`.
    pub fn new(sender: Sender<T>, signal: T) -> Self {
        Self {
            pending: AtomicBool::new(false),
            sender,
            signal,
        }
    }

    /// Called by the taker once it has received the signal, before it looks for work.
    pub fn answered(&self) {
        self.pending.store(false, Ordering::Release);
    }

    /// Sends the signal even if a ring is unanswered (to make the taker look again).
    pub fn ring_always(&self) {
        let _ = self.sender.send(self.signal.clone());
    }
}

impl<T: Clone + Send + Sync> Notify for Doorbell<T> {
    fn notify(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            let _ = self.sender.send(self.signal.clone());
        }
    }
}
