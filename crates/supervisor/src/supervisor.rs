//! The supervisor: one thread that listens to the lifecycle events of the engines its
//! agents run on, and restarts agents through the engine contract (`run_agent`,
//! `stop_agent`) as their policies, groups and backoff say.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, unbounded};
use engine_core::{
    AgentSpec, EventHub, EventReceiver, ExecutionEngine, GuildContext, Jitter, LifecycleEvent,
    LifecycleKind, RestartPolicy,
};

use crate::hooks::SupervisionHooks;
use crate::probes::ProbeState;
use crate::restarts;
use crate::spec::Group;
use crate::watchdog::Sighting;

/// Supervises agents of one guild on any engines: restarts them by policy, strategy and
/// backoff, escalates past a group's intensity, and reports what it does as lifecycle
/// events and through [`SupervisionHooks`]. Dropping it (or [`shutdown`](Self::shutdown))
/// ends supervision; the agents keep running.
pub struct Supervisor {
    shared: Arc<Shared>,
    control: Sender<Control>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("guild", &self.shared.context.namespace)
            .finish_non_exhaustive()
    }
}

/// What the supervisor's thread is told.
pub(crate) enum Control {
    /// Listen to this engine's events too.
    Watch(EventReceiver),
    /// Look at the state again (something was added).
    Wake,
    Stop,
}

/// What both the thread and the callers see.
pub(crate) struct Shared {
    pub(crate) context: GuildContext,
    pub(crate) hooks: Arc<dyn SupervisionHooks>,
    events: EventHub,
    state: Mutex<State>,
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) children: HashMap<String, Child>,
    pub(crate) groups: BTreeMap<String, GroupState>,
    pub(crate) jitter: Jitter,
}

/// One supervised agent.
pub(crate) struct Child {
    pub(crate) spec: AgentSpec,
    pub(crate) engine: Arc<dyn ExecutionEngine>,
    pub(crate) group: String,
    pub(crate) phase: Phase,
    /// Restarts in a row (reset once it has run cleanly for its backoff's reset time).
    pub(crate) attempt: u32,
    /// Restarts since it was first supervised.
    pub(crate) restarts: u64,
    /// Stops the supervisor asked for whose `Stopped` event has not come yet.
    pub(crate) expected_stops: u32,
    /// What the watchdog last saw of it.
    pub(crate) sighting: Sighting,
    /// Its health probes.
    pub(crate) probe: ProbeState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Running since then, as far as the supervisor knows.
    Running(Instant),
    /// Ended (or stopped by its group), to be started again then.
    Waiting { due: Instant, delay: Duration },
    /// Ended for good: stopped by someone else, or its policy says no restart, or its
    /// group gave up.
    Done,
}

pub(crate) struct GroupState {
    pub(crate) group: Group,
    /// In order.
    pub(crate) members: Vec<String>,
    /// When its recent restarts were decided.
    pub(crate) restarts: VecDeque<Instant>,
    pub(crate) failed: bool,
}

impl Supervisor {
    /// A supervisor for agents of `context`'s guild, calling `hooks` as things happen.
    /// It starts its thread at once and supervises nothing until given agents.
    pub fn start(context: GuildContext, hooks: Arc<dyn SupervisionHooks>) -> Self {
        let shared = Arc::new(Shared {
            context,
            hooks,
            events: EventHub::new(),
            state: Mutex::default(),
        });
        let (control, commands) = unbounded();
        let thread_shared = shared.clone();
        let wake = control.clone();
        let thread = std::thread::Builder::new()
            .name("guild-supervisor".into())
            .spawn(move || restarts::run(&thread_shared, &commands, wake))
            .expect("a thread for the supervisor");
        Self {
            shared,
            control,
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Listens to `engine`'s lifecycle events. Call it before running any agent there
    /// that the supervisor is to supervise, so no end is missed.
    pub fn watch(&self, engine: &Arc<dyn ExecutionEngine>) {
        let _ = self.control.send(Control::Watch(engine.events()));
    }

    /// Supervises `spec` (its `restart` and `backoff` say how; `transient` and the
    /// default backoff when not set), running on `engine`, as the next member of
    /// `group`. Call it before running the agent; the supervisor counts it running.
    pub fn supervise(&self, group: &Group, spec: AgentSpec, engine: Arc<dyn ExecutionEngine>) {
        let mut state = self.shared.lock();
        let id = spec.id.clone();
        let entry = state
            .groups
            .entry(group.name.clone())
            .or_insert_with(|| GroupState {
                group: group.clone(),
                members: Vec::new(),
                restarts: VecDeque::new(),
                failed: false,
            });
        if !entry.members.contains(&id) {
            entry.members.push(id.clone());
        }
        state.children.insert(
            id,
            Child {
                spec,
                engine,
                group: group.name.clone(),
                phase: Phase::Running(Instant::now()),
                attempt: 0,
                restarts: 0,
                expected_stops: 0,
                sighting: Sighting::default(),
                probe: ProbeState::default(),
            },
        );
        drop(state);
        let _ = self.control.send(Control::Wake);
    }

    /// Stops supervising `agent_id` (before stopping it on purpose). Unknown ids are a
    /// no-op.
    pub fn forget(&self, agent_id: &str) {
        let mut state = self.shared.lock();
        if let Some(child) = state.children.remove(agent_id)
            && let Some(group) = state.groups.get_mut(&child.group)
        {
            group.members.retain(|member| member != agent_id);
        }
    }

    /// Whether the supervisor restarts `agent_id` after an end of this kind: it
    /// supervises the agent and its policy says so. (Past its group's intensity it
    /// gives up instead, and says so with a `GroupFailed` event.)
    pub fn will_restart(&self, agent_id: &str, kind: &LifecycleKind) -> bool {
        let state = self.shared.lock();
        state.children.get(agent_id).is_some_and(|child| {
            kind.failed()
                .is_some_and(|failed| policy(&child.spec).restarts(failed))
        })
    }

    /// How many times `agent_id` has been restarted.
    pub fn restarts(&self, agent_id: &str) -> u64 {
        self.shared
            .lock()
            .children
            .get(agent_id)
            .map_or(0, |child| child.restarts)
    }

    /// The supervisor's own lifecycle events (restarted, group failed, stuck) from now on.
    pub fn events(&self) -> EventReceiver {
        self.shared.events.subscribe()
    }

    /// Ends supervision: nothing is restarted after this returns, and the thread is
    /// gone. The agents keep running.
    pub fn shutdown(&self) {
        let _ = self.control.send(Control::Stop);
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

pub(crate) fn policy(spec: &AgentSpec) -> RestartPolicy {
    spec.restart.unwrap_or_default()
}

impl Shared {
    pub(crate) fn context_namespace(&self) -> &str {
        &self.context.namespace
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn emit(&self, agent: &str, engine: &str, kind: LifecycleKind) {
        self.events.emit(LifecycleEvent::new(
            &self.context.namespace,
            agent,
            engine,
            kind,
        ));
    }
}
