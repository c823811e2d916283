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
    /// For an end, how it ended (exit code, signal) where the engine knows.
    #[serde(default)]
    pub exit: Option<crate::ExitStatus>,
}

impl LifecycleEvent {
    /// An event with no exit status.
    pub fn new(guild: &str, agent_id: &str, engine: &str, kind: LifecycleKind) -> Self {
        Self {
            guild: guild.to_owned(),
            agent_id: agent_id.to_owned(),
            engine: engine.to_owned(),
            kind,
            exit: None,
        }
    }

    /// Logs the event (target `guild::lifecycle`, level info) in a span of its own, so
    /// a trace exporter sends it too: the agent, the engine, what happened and, for an
    /// end, its reason, exit code and signal.
    fn log(&self) {
        let span = tracing::info_span!(
            target: "guild::lifecycle",
            "lifecycle",
            otel.name = %format_args!("agent {}", self.kind.name()),
            guild.id = %self.guild,
            guild.agent.id = %self.agent_id,
            guild.engine = %self.engine,
        );
        let _entered = span.enter();
        let exit = self.exit.as_ref();
        tracing::info!(
            target: "guild::lifecycle",
            event = self.kind.name(),
            reason = self.kind.reason().as_deref().or(exit.map(|exit| exit.reason.as_str())),
            exit.code = exit.and_then(|exit| exit.code),
            exit.signal = exit.and_then(|exit| exit.signal),
            "agent {} {}",
            self.agent_id,
            self.kind.name(),
        );
    }
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
    /// The kind's name, as it is serialized (`crashed`, `killed_by_limit`…).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Stopped => "stopped",
            Self::Exited => "exited",
            Self::Crashed { .. } => "crashed",
            Self::KilledByLimit { .. } => "killed_by_limit",
            Self::Restarted { .. } => "restarted",
            Self::GroupFailed { .. } => "group_failed",
            Self::Stuck { .. } => "stuck",
            Self::BreakerOpened { .. } => "breaker_opened",
            Self::BreakerHalfOpen => "breaker_half_open",
            Self::BreakerClosed => "breaker_closed",
        }
    }

    /// What the kind says about why, in words.
    pub fn reason(&self) -> Option<String> {
        match self {
            Self::Crashed { reason } | Self::KilledByLimit { reason } => Some(reason.clone()),
            Self::GroupFailed { group, reason } => Some(format!("group {group}: {reason}")),
            Self::Restarted { attempt, delay_ms } => {
                Some(format!("attempt {attempt} after {delay_ms} ms"))
            }
            Self::Stuck { busy_ms } => Some(format!("busy on one message for {busy_ms} ms")),
            Self::BreakerOpened { failures } => Some(format!("{failures} failures")),
            _ => None,
        }
    }

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
        event.log();
        self.lock()
            .retain(|subscriber| subscriber.send(event.clone()).is_ok());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Sender<LifecycleEvent>>> {
        self.subscribers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// How an agent ended on its own (not stopped), as its engine reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ending {
    /// It crashed: a handler panicked, a delivery failed, or it could not go on.
    Crashed(String),
    /// It finished on its own: the program behind an `exec` agent exited with code 0.
    Exited(String),
    /// It went past a resource limit.
    KilledByLimit(String),
}

impl Ending {
    /// Why, in words.
    pub fn reason(&self) -> &str {
        match self {
            Self::Crashed(reason) | Self::Exited(reason) | Self::KilledByLimit(reason) => reason,
        }
    }

    /// The state the agent is left in.
    pub fn state(&self) -> crate::AgentState {
        match self {
            Self::Crashed(_) => crate::AgentState::Crashed,
            Self::Exited(_) => crate::AgentState::Exited,
            Self::KilledByLimit(_) => crate::AgentState::KilledByLimit,
        }
    }

    /// The lifecycle event that reports it.
    pub fn lifecycle(&self) -> LifecycleKind {
        match self {
            Self::Crashed(reason) => LifecycleKind::Crashed {
                reason: reason.clone(),
            },
            Self::Exited(_) => LifecycleKind::Exited,
            Self::KilledByLimit(reason) => LifecycleKind::KilledByLimit {
                reason: reason.clone(),
            },
        }
    }
}

impl From<String> for Ending {
    /// A crash, for this reason.
    fn from(reason: String) -> Self {
        Self::Crashed(reason)
    }
}
