//! Lifecycle events: what engines and supervisors report about agents, and the hub
//! that fans them out to every listener (the supervisor, the command line, tests).
//! Receivers are crossbeam channels, so a listener can wait on several hubs at once.

use std::sync::Mutex;

use crossbeam_channel::{Receiver, Sender, unbounded as channel};

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
    /// Started again by its supervisor after it ended (reported by the supervisor).
    Restarted {
        /// Restarts in a row, 1 for the first since it last ran cleanly.
        attempt: u32,
        /// How long the supervisor waited first, in milliseconds.
        delay_ms: u64,
    },
    /// Its supervision group restarted too often, so the supervisor stopped every agent
    /// of the group and gave up (reported by the supervisor, naming the agent whose
    /// end was one too many).
    GroupFailed {
        /// The group.
        group: String,
        /// How the agent last ended, and the intensity that was passed.
        reason: String,
    },
    /// A handler has run longer than the agent's watchdog allows, on an engine that
    /// cannot end it: reported, not restarted (reported by the supervisor).
    Stuck {
        /// How long the handler had been running, in milliseconds.
        busy_ms: u64,
    },
    /// Its circuit breaker opened: deliveries are dead-lettered with kind
    /// `circuit_open` until the cool-down has passed.
    BreakerOpened {
        /// Failed deliveries within the window.
        failures: u32,
    },
    /// Its circuit breaker lets one delivery through to try the handler again.
    BreakerHalfOpen,
    /// Its circuit breaker closed: the trial delivery succeeded.
    BreakerClosed,
}

impl LifecycleKind {
    /// Whether the agent ended (on request or on its own).
    pub fn is_end(&self) -> bool {
        matches!(
            self,
            Self::Stopped | Self::Exited | Self::Crashed { .. } | Self::KilledByLimit { .. }
        )
    }

    /// For an end on the agent's own: whether it failed (crashed or was killed) rather
    /// than exited. `None` for anything that is not such an end.
    pub fn failed(&self) -> Option<bool> {
        match self {
            Self::Exited => Some(false),
            Self::Crashed { .. } | Self::KilledByLimit { .. } => Some(true),
            _ => None,
        }
    }
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
