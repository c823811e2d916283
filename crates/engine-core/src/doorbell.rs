//! The one wake-up flag of guild: a [`Notify`] that rings at most once until whoever it
//! wakes has answered, however often the bus calls it.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::Notify;

/// Calls its `ring` function when notified, unless an earlier ring is unanswered.
///
/// The woken side calls [`answered`](Self::answered) once it has taken the wake-up and
/// before it looks for work, so a message that arrives while it works rings again and
/// none is missed. Engines hand one to the bus for each agent (the ring sends a wake-up
/// on the agent's channel); an observer waits on one.
pub struct Doorbell {
    pending: AtomicBool,
    ring: Box<dyn Fn() + Send + Sync>,
}

impl Doorbell {
    /// A doorbell that calls `ring` (which must be cheap and must not call back into
    /// the bus: it runs on the publishing thread).
    pub fn new(ring: impl Fn() + Send + Sync + 'static) -> Self {
        Self {
            pending: AtomicBool::new(false),
            ring: Box::new(ring),
        }
    }

    /// Called by the woken side once it has taken the wake-up, before it looks for work.
    pub fn answered(&self) {
        self.pending.store(false, Ordering::Release);
    }

    /// Rings even if a ring is unanswered (to make the woken side look again).
    pub fn ring_always(&self) {
        (self.ring)();
    }
}

impl Notify for Doorbell {
    fn notify(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            (self.ring)();
        }
    }
}

impl std::fmt::Debug for Doorbell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Doorbell")
            .field("pending", &self.pending.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[test]
    fn rings_once_until_answered() {
        let rings = Arc::new(AtomicUsize::new(0));
        let counted = rings.clone();
        let doorbell = Doorbell::new(move || {
            counted.fetch_add(1, Ordering::Relaxed);
        });
        doorbell.notify();
        doorbell.notify();
        assert_eq!(rings.load(Ordering::Relaxed), 1);
        doorbell.answered();
        doorbell.notify();
        assert_eq!(rings.load(Ordering::Relaxed), 2);
        doorbell.ring_always();
        assert_eq!(rings.load(Ordering::Relaxed), 3);
    }
}
