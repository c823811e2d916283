//! Lifecycle events: what engines report about agents, and the hub that fans them out
//! to every listener (the supervisor, the command line, tests).

use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender, channel};

use serde::{Deserialize, Serialize};

/// Something that happened to an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleEvent {
    /// The guild namespace.
    pub guild: String,
    /// The agent.
    pub agent_id: String,
    /// The engine that runs it.
    pub engine: String,
    /// What happened.
    pub kind: LifecycleKind,
}

/// The kinds of [`LifecycleEvent`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleKind {
    /// Subscribed, started, ready for messages.
    Started,
    /// Stopped on request.
    Stopped,
    /// Ended on its own without error.
    Exited,
    /// Ended by a panic, an error or a signal.
    Crashed {
        /// Why.
        reason: String,
    },
    /// Ended because it breached a resource limit.
    KilledByLimit {
        /// Which limit and by how much.
        reason: String,
    },
}

/// A receiver of lifecycle events.
pub type EventReceiver = Receiver<LifecycleEvent>;

/// Fans lifecycle events out to every subscriber; subscribers that went away are dropped.
#[derive(Debug, Default)]
pub struct EventHub {
    subscribers: Mutex<Vec<Sender<LifecycleEvent>>>,
}

impl EventHub {
    /// A hub with no subscribers.
    pub fn new() -> Self {
        Self::default()
    }

    /// A receiver of every event emitted from now on.
    pub fn subscribe(&self) -> EventReceiver {
        let (sender, receiver) = channel();
        self.lock().push(sender);
        receiver
    }

    /// Sends `event` to every live subscriber.
    pub fn emit(&self, event: LifecycleEvent) {
        tracing::debug!(guild = %event.guild, agent = %event.agent_id, kind = ?event.kind, "lifecycle");
        self.lock()
            .retain(|subscriber| subscriber.send(event.clone()).is_ok());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Sender<LifecycleEvent>>> {
        self.subscribers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
