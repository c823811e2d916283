//! The execution engine contract: run, stop and query agents, report their lifecycle.

use std::sync::Arc;
use std::time::Duration;

use crate::core_error::CoreError;
use crate::{
    AgentRegistry, AgentSpec, EventReceiver, HistoryOrder, HistoryQuery, IdGenerator, Message,
    MessagingBackend, Resources, Result, Timers,
};

/// Everything an engine needs to run agents of one guild. Cheap to clone.
#[derive(Clone)]
pub struct GuildContext {
    /// The guild id, which is also its messaging namespace.
    pub namespace: Arc<str>,
    /// The bus its agents talk over.
    pub messaging: Arc<dyn MessagingBackend>,
    /// How agents are built from specs.
    pub registry: Arc<AgentRegistry>,
    /// The guild's shared resources.
    pub resources: Arc<Resources>,
    /// Where message ids come from.
    pub ids: Arc<IdGenerator>,
    /// Where the agents' timers run.
    pub timers: Timers,
    /// Whether hosts record how long handlers take and deliveries wait (three clock
    /// reads per message; off unless asked for).
    pub timing: bool,
}

impl GuildContext {
    /// A context for guild `namespace` with no shared resources, using this process's
    /// id generator.
    pub fn new(
        namespace: impl Into<Arc<str>>,
        messaging: Arc<dyn MessagingBackend>,
        registry: Arc<AgentRegistry>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            messaging,
            registry,
            resources: Arc::new(Resources::default()),
            ids: IdGenerator::process(),
            timers: Timers::real(),
            timing: false,
        }
    }
}

impl GuildContext {
    /// Queries the guild's retained messages, arranged in `order`.
    pub fn history(&self, query: &HistoryQuery, order: HistoryOrder) -> Result<Vec<Arc<Message>>> {
        let mut messages = self.messaging.history(&self.namespace, query)?;
        order.arrange(&mut messages);
        Ok(messages)
    }
}

impl std::fmt::Debug for GuildContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuildContext")
            .field("namespace", &self.namespace)
            .field("messaging", &self.messaging.name())
            .finish_non_exhaustive()
    }
}

/// An execution engine: where and how agents run.
///
/// The same promises hold for every engine, and `crates/conformance` proves them:
///
/// - [`run_agent`](Self::run_agent) returns only once the agent is subscribed to its
///   topics and its start hook has finished; running an agent that runs already is a no-op.
/// - After [`stop_agent`](Self::stop_agent) returns, the agent handles nothing more and
///   no query lists it; stopping an unknown agent is a no-op.
/// - "Running" means one thing everywhere: started, subscribed, not stopped and not dead.
/// - A crashed agent stays visible (state [`AgentState::Crashed`]) until
///   [`cleanup_dead`](Self::cleanup_dead) removes it.
/// - [`shutdown`](Self::shutdown) stops every agent the engine owns and leaves no thread
///   or process behind; the engine runs nothing afterwards.
pub trait ExecutionEngine: Send + Sync {
    /// The engine's name, such as `"threads"`.
    fn name(&self) -> &str;

    /// What the engine provides.
    fn capabilities(&self) -> EngineCapabilities;

    /// Builds, subscribes and starts the agent described by `spec` in `guild`.
    fn run_agent(&self, guild: &GuildContext, spec: AgentSpec) -> Result<()>;

    /// Stops an agent: it handles nothing more once this returns.
    fn stop_agent(&self, guild: &str, agent_id: &str) -> Result<()>;

    /// Pauses an agent: once this returns it handles nothing more until
    /// [`resume_agent`](Self::resume_agent), and what is published to it waits in its
    /// queue (within the queue's limit). A handler running when it is called finishes
    /// first. Pausing a paused agent is a no-op; an agent that is not running (unknown,
    /// starting or ended) is `NotFound`. Engines whose capabilities do not list `pause`
    /// refuse with `Unsupported`, which is what this default does.
    fn pause_agent(&self, guild: &str, agent_id: &str) -> Result<()> {
        let _ = agent_id;
        let _ = guild;
        Err(pausing_unsupported(self.name()))
    }

    /// Resumes a paused agent, which handles what waited for it, in order. Resuming a
    /// running agent is a no-op; an agent that is neither running nor paused is
    /// `NotFound`.
    fn resume_agent(&self, guild: &str, agent_id: &str) -> Result<()> {
        let _ = agent_id;
        let _ = guild;
        Err(pausing_unsupported(self.name()))
    }

    /// Ends an agent at once, whatever it is doing (a handler stuck past its watchdog):
    /// it is recorded as crashed, and what it had taken but not completed is handed
    /// out again when it runs again. Engines whose capabilities do not list `kill`
    /// refuse with `Unsupported`, which is what this default does; an unknown agent is
    /// `NotFound`.
    fn kill_agent(&self, guild: &str, agent_id: &str, reason: &str) -> Result<()> {
        let _ = (guild, agent_id, reason);
        Err(CoreError::KillUnsupported {
            engine: self.name().to_owned(),
        }
        .into())
    }

    /// The agents of a guild (running, or dead and not yet cleaned up), in launch order.
    fn agents_in_guild(&self, guild: &str) -> Vec<AgentInfo>;

    /// What is known about one agent.
    fn agent_info(&self, guild: &str, agent_id: &str) -> Option<AgentInfo>;

    /// Totals over every agent the engine owns.
    fn stats(&self) -> EngineStats;

    /// Forgets agents that crashed or exited, returning what was known of them.
    fn cleanup_dead(&self) -> Vec<AgentInfo>;

    /// Stops everything the engine owns.
    fn shutdown(&self) -> Result<()>;

    /// Lifecycle events from now on.
    fn events(&self) -> EventReceiver;

    /// Handles whatever is queued, on the caller's thread, until nothing is left; returns
    /// how many messages were handled. Only engines that run agents on the caller's
    /// thread (the sync engine) do anything here; the others drive themselves.
    fn drive(&self) -> usize {
        0
    }

    /// Moves the engine's clock on by `by`, sending the agents' timers that fall due on
    /// the way; returns how many messages they sent. Only engines on a clock of their
    /// own (the sync engine: see [`EngineCapabilities::virtual_clock`]) do anything
    /// here; the others run timers on real time.
    fn advance_clock(&self, by: Duration) -> usize {
        let _ = by;
        0
    }

    /// Like [`drive`](Self::drive), but returns once `slice` has passed even if work
    /// remains (between two messages: a handler is never interrupted), so a caller
    /// can keep a deadline or notice a signal while a cyclic topology never runs out of
    /// work.
    fn drive_for(&self, slice: std::time::Duration) -> usize {
        let _ = slice;
        0
    }
}

fn pausing_unsupported(engine: &str) -> crate::Error {
    CoreError::PauseUnsupported {
        engine: engine.to_owned(),
    }
    .into()
}

/// What every engine can answer from the methods it implements: conveniences, written
/// once here rather than in each engine (as object_store's `ObjectStoreExt`).
pub trait ExecutionEngineExt: ExecutionEngine {
    /// The agents of a guild with the given name, in launch order.
    fn find_agents_by_name(&self, guild: &str, name: &str) -> Vec<AgentInfo> {
        let mut found = self.agents_in_guild(guild);
        found.retain(|agent| agent.name == name);
        found
    }

    /// Whether the agent is started, subscribed, and neither stopped nor dead.
    fn is_agent_running(&self, guild: &str, agent_id: &str) -> bool {
        self.agent_info(guild, agent_id)
            .is_some_and(|agent| agent.state == AgentState::Running)
    }
}

impl<E: ExecutionEngine + ?Sized> ExecutionEngineExt for E {}

/// What an engine provides, declared as data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct EngineCapabilities {
    /// Agents run in parallel with each other.
    pub parallel: bool,
    /// A crash, leak or hostile agent cannot affect other agents' memory.
    pub isolated: bool,
    /// [`ResourceLimits`](crate::ResourceLimits) are enforced.
    pub enforces_limits: bool,
    /// Agents run on the caller's thread and need [`ExecutionEngine::drive`].
    pub driven_by_caller: bool,
    /// Agents can be paused and resumed ([`ExecutionEngine::pause_agent`]).
    pub pause: bool,
    /// Timers run on a clock the caller moves ([`ExecutionEngine::advance_clock`]),
    /// not on real time.
    pub virtual_clock: bool,
    /// An agent stuck in a handler can be ended from outside
    /// ([`ExecutionEngine::kill_agent`]); elsewhere a stuck handler can only be reported.
    pub kill: bool,
}

/// The lifecycle state of an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentState {
    /// Being built, subscribed and started.
    Starting,
    /// Started, subscribed, handling messages.
    Running,
    /// Started and subscribed, but handling nothing until resumed; messages wait.
    Paused,
    /// Stopped on request.
    Stopped,
    /// Ended on its own without error.
    Exited,
    /// Ended by a panic, error or signal.
    Crashed,
    /// Ended because it breached a resource limit.
    KilledByLimit,
}

impl AgentState {
    /// Whether the agent has ended (and will handle nothing more).
    pub fn is_dead(self) -> bool {
        matches!(
            self,
            Self::Stopped | Self::Exited | Self::Crashed | Self::KilledByLimit
        )
    }
}

impl std::fmt::Display for AgentState {
    /// The state as the docs and specs write it: `running`, `killed_by_limit`, …
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopped => "stopped",
            Self::Exited => "exited",
            Self::Crashed => "crashed",
            Self::KilledByLimit => "killed_by_limit",
        })
    }
}

/// How an agent ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExitStatus {
    /// Why, in words (the panic text, the signal, the limit).
    pub reason: String,
    /// The process exit code, where there was a process.
    pub code: Option<i32>,
    /// The signal that ended the process, where there was one.
    pub signal: Option<i32>,
}

/// What is known about one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    /// The guild.
    pub guild: String,
    /// The agent's id.
    pub id: String,
    /// The agent's name.
    pub name: String,
    /// The agent type.
    pub agent_type: String,
    /// The engine that runs it.
    pub engine: String,
    /// Its state.
    pub state: AgentState,
    /// How it ended, once it has.
    pub exit: Option<ExitStatus>,
    /// Its process id, where it has a process of its own.
    pub pid: Option<u32>,
    /// The machine (node) that runs it, on engines that spread agents over several.
    pub node: Option<String>,
    /// Resident memory in bytes, where measured per agent.
    pub memory_bytes: Option<u64>,
    /// CPU time used, where measured per agent.
    pub cpu_time: Option<Duration>,
    /// Messages delivered to it.
    pub messages_in: u64,
    /// Messages it published.
    pub messages_out: u64,
    /// Deliveries whose handler failed.
    pub errors: u64,
    /// Deliveries queued for it.
    pub queued: u64,
    /// Whether a handler is running now.
    pub busy: bool,
    /// How long its handler took and its deliveries waited, where recorded (see
    /// [`GuildContext::timing`]).
    pub timings: crate::TimingsSnapshot,
}

/// Totals over the agents an engine owns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Agents running now.
    pub running: usize,
    /// Agents paused now.
    pub paused: usize,
    /// Agents that crashed or exited and are not cleaned up yet.
    pub dead: usize,
    /// Messages delivered.
    pub messages_in: u64,
    /// Messages published.
    pub messages_out: u64,
    /// Failed deliveries.
    pub errors: u64,
    /// Deliveries queued and not yet handled.
    pub queued: u64,
    /// Agents inside a handler now.
    pub busy: usize,
}

impl std::iter::Sum for EngineStats {
    /// Totals over several engines.
    fn sum<I: Iterator<Item = EngineStats>>(all: I) -> Self {
        all.fold(EngineStats::default(), |total, stats| EngineStats {
            running: total.running + stats.running,
            paused: total.paused + stats.paused,
            dead: total.dead + stats.dead,
            messages_in: total.messages_in + stats.messages_in,
            messages_out: total.messages_out + stats.messages_out,
            errors: total.errors + stats.errors,
            queued: total.queued + stats.queued,
            busy: total.busy + stats.busy,
        })
    }
}
