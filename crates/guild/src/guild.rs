//! A running guild: its messaging, its engines, and the agents it launched on them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use engine_core::{
    AgentInfo, AgentRegistry, AgentSpec, EngineStats, Error, EventReceiver, ExecutionEngine,
    GuildContext, HistoryOrder, HistoryQuery, IdGenerator, LifecycleEvent, Message, MessageBuilder,
    MessageId, MessagingBackend, Priority, Result, StartFrom, Timers, inbox_topic,
};

use supervisor::{NoHooks, SupervisionHooks, Supervisor};

use crate::error::GuildError;
use crate::observer::{DrivenEngines, Observer};
use crate::{GuildSpec, LoadedSpec, select};

/// How long one request waits on the shared reply inbox before letting another look.
const REQUEST_SLICE: Duration = Duration::from_millis(20);

/// The sender id of messages the guild itself publishes (run inputs, for example).
pub const GUILD_SENDER: &str = "guild";

/// Builds a [`Guild`] from a spec.
#[must_use]
pub struct GuildBuilder {
    /// The spec, with its file's text when it came from one (for lines in errors).
    loaded: LoadedSpec,
    registry: AgentRegistry,
    engine: Option<String>,
    engines: Vec<Arc<dyn ExecutionEngine>>,
    messaging: Option<Messaging>,
    hooks: Option<Arc<dyn SupervisionHooks>>,
    timing: bool,
}

/// The messaging backend a builder was given.
enum Messaging {
    Url(String),
    Instance(Arc<dyn MessagingBackend>),
}

impl std::fmt::Debug for Messaging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Url(url) => write!(f, "Url({url:?})"),
            Self::Instance(backend) => write!(f, "Instance({:?})", backend.name()),
        }
    }
}

impl std::fmt::Debug for GuildBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuildBuilder")
            .field("spec", &self.loaded.spec.id)
            .field("engine", &self.engine)
            .field(
                "engines",
                &self.engines.iter().map(|e| e.name()).collect::<Vec<_>>(),
            )
            .field("messaging", &self.messaging)
            .finish_non_exhaustive()
    }
}

impl GuildBuilder {
    /// A builder for the guild described by `spec`, with an empty registry.
    pub fn new(spec: GuildSpec) -> Self {
        Self::from_loaded(LoadedSpec::unparsed(
            format!("guild spec {:?}", spec.id),
            spec,
        ))
    }

    /// A builder for a spec read from a file: the check in [`build`](Self::build)
    /// names the file's lines, so the file need not be checked first.
    pub fn from_loaded(loaded: LoadedSpec) -> Self {
        Self {
            loaded,
            registry: AgentRegistry::new(),
            engine: None,
            engines: Vec::new(),
            messaging: None,
            hooks: None,
            timing: false,
        }
    }

    /// Supervises the guild's agents as `supervision` says, replacing the spec's
    /// `[supervision]` table.
    pub fn supervision(mut self, supervision: supervisor::SupervisionSpec) -> Self {
        self.loaded.spec.supervision = Some(supervision);
        self
    }

    /// Calls `hooks` as the supervisor sees agents start, stop, fail and restart, and
    /// when it gives up on a group. The guild is supervised from then on, with the
    /// spec's `[supervision]` table or its defaults.
    pub fn hooks(mut self, hooks: Arc<dyn SupervisionHooks>) -> Self {
        self.hooks = Some(hooks);
        self
    }

    /// Records how long every handler takes and every delivery waits, for the
    /// histograms in [`Guild::metrics_text`] (three clock reads per message; off by
    /// default, and turned on by `guild run --metrics`).
    pub fn timing(mut self, on: bool) -> Self {
        self.timing = on;
        self
    }

    /// The registry agents are built from.
    pub fn registry(mut self, registry: AgentRegistry) -> Self {
        self.registry = registry;
        self
    }

    /// Runs every agent on the engine `name`, whatever the spec says. Without it, the
    /// spec's engine is the default and each agent may name its own; without any,
    /// [`select::DEFAULT_ENGINE`]. (The library reads no environment variable: the
    /// `guild` command passes `GUILD_ENGINE` here.)
    pub fn engine(mut self, name: impl Into<String>) -> Self {
        self.engine = Some(name.into());
        self
    }

    /// Runs the agents that are to run on an engine called `engine.name()` on this
    /// instance (configured by the caller, and perhaps shared with other guilds)
    /// instead of a new one with default settings. The guild stops its own agents on
    /// it when it shuts down, and leaves the engine running.
    pub fn with_engine(mut self, engine: Arc<dyn ExecutionEngine>) -> Self {
        self.engines.retain(|known| known.name() != engine.name());
        self.engines.push(engine);
        self
    }

    /// Uses the messaging backend `url` instead of the spec's (replacing any backend
    /// given before).
    pub fn messaging(mut self, url: impl Into<String>) -> Self {
        self.messaging = Some(Messaging::Url(url.into()));
        self
    }

    /// Uses this messaging backend instance instead of the spec's (replacing any
    /// backend given before), for a backend configured in code or shared.
    pub fn with_messaging(mut self, backend: Arc<dyn MessagingBackend>) -> Self {
        self.messaging = Some(Messaging::Instance(backend));
        self
    }

    /// Checks the spec as `guild validate` does, against the registry and the engines
    /// and backend chosen here, then connects the messaging backend and builds the
    /// guild's resources; launches nothing.
    pub fn build(self) -> Result<Guild> {
        let forced = self.engine.clone().filter(|name| !name.is_empty());
        self.check(forced.as_deref())?;
        let default_engine = forced
            .clone()
            .or_else(|| self.loaded.spec.engine.clone())
            .unwrap_or_else(|| select::DEFAULT_ENGINE.to_owned());
        let (messaging, messaging_url) = match self.messaging {
            Some(Messaging::Instance(backend)) => (backend, None),
            Some(Messaging::Url(url)) => (select::messaging(&url)?, Some(url)),
            None => {
                let url = self
                    .loaded
                    .spec
                    .messaging
                    .clone()
                    .unwrap_or_else(|| select::DEFAULT_MESSAGING.to_owned());
                (select::messaging(&url)?, Some(url))
            }
        };
        let resources = self
            .registry
            .build_resources(&self.loaded.spec.dependencies)?;
        let context = GuildContext {
            namespace: self.loaded.spec.id.as_str().into(),
            messaging,
            registry: Arc::new(self.registry),
            resources: Arc::new(resources),
            ids: IdGenerator::process(),
            timers: Timers::real(),
            timing: self.timing,
        };
        let supervisor = (self.hooks.is_some() || self.loaded.spec.supervised()).then(|| {
            let hooks = self.hooks.unwrap_or_else(|| Arc::new(NoHooks));
            Supervisor::start(context.clone(), hooks)
        });
        let supervision = self.loaded.spec.supervision.clone().unwrap_or_default();
        // The supervisor's own events (restarted, group failed, stuck) come first.
        let events = supervisor.iter().map(Supervisor::events).collect();
        Ok(Guild {
            spec: self.loaded.spec,
            supervisor,
            supervision,
            context,
            forced_engine: forced,
            default_engine,
            messaging_url,
            supplied: self.engines,
            engines: BTreeMap::new(),
            driven: DrivenEngines::default(),
            events: Mutex::new(events),
            launched: Vec::new(),
            replies: Mutex::new(Replies::default()),
            sender: GUILD_SENDER.into(),
        })
    }

    /// The spec as it will run (with the engine and backend chosen here), checked
    /// against the registry and what this build and the supplied instances can do.
    fn check(&self, forced_engine: Option<&str>) -> Result<()> {
        #[cfg(feature = "engine-pool")]
        if self.loaded.spec.pool.is_some() && self.engines.iter().any(|e| e.name() == "pool") {
            return Err(GuildError::TableIgnored { engine: "pool" }.into());
        }
        #[cfg(feature = "engine-cluster")]
        if self.loaded.spec.cluster.is_some() && self.engines.iter().any(|e| e.name() == "cluster")
        {
            return Err(GuildError::TableIgnored { engine: "cluster" }.into());
        }
        let mut known = select::known_names();
        for engine in &self.engines {
            let name = engine.name().to_owned();
            if engine.capabilities().enforces_limits && !known.enforcing_limits.contains(&name) {
                known.enforcing_limits.push(name.clone());
            }
            if !known.engines.contains(&name) {
                known.engines.push(name);
            }
        }
        let messaging = match &self.messaging {
            Some(Messaging::Url(url)) => Some(url.clone()),
            Some(Messaging::Instance(backend)) => {
                // The instance is connected already: its name stands for it.
                let name = backend.name().to_owned();
                known.check_messaging = None;
                known.queue_limits.retain(|scheme| *scheme != name);
                if backend.capabilities().queue_limits {
                    known.queue_limits.push(name.clone());
                }
                if !known.messaging.contains(&name) {
                    known.messaging.push(name.clone());
                }
                Some(name)
            }
            None => None,
        };
        self.loaded
            .check_as_run(&self.registry, &known, forced_engine, messaging.as_deref())
            .map_err(Error::from)
    }
}

/// A guild: one namespace on one messaging backend, with agents on one or more engines.
pub struct Guild {
    spec: GuildSpec,
    /// Restarts agents, when the guild is supervised.
    supervisor: Option<Supervisor>,
    /// The spec's `[supervision]` table, or its defaults.
    supervision: supervisor::SupervisionSpec,
    context: GuildContext,
    forced_engine: Option<String>,
    default_engine: String,
    /// The messaging backend's URL, when the guild connected it (engines that hand it
    /// to other machines need it).
    messaging_url: Option<String>,
    /// Engines the caller supplied; the guild does not shut them down.
    supplied: Vec<Arc<dyn ExecutionEngine>>,
    engines: BTreeMap<String, Arc<dyn ExecutionEngine>>,
    /// The engines that run agents on the caller's thread, which waiting drives.
    driven: DrivenEngines,
    /// Each engine's lifecycle events, subscribed to before it ran anything.
    events: Mutex<Vec<EventReceiver>>,
    launched: Vec<(String, String)>,
    replies: Mutex<Replies>,
    /// [`GUILD_SENDER`], shared by every message the guild publishes.
    sender: Arc<str>,
}

/// The guild's own inbox for replies to [`Guild::request`], made on first use.
#[derive(Default)]
struct Replies {
    observer: Option<Observer>,
    topic: String,
    /// Requests still waiting, with the reply that came for one while another waited.
    waiting: HashMap<MessageId, Option<Message>>,
}

impl std::fmt::Debug for Guild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guild")
            .field("id", &self.spec.id)
            .field("engines", &self.engines.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Guild {
    /// The spec the guild was built from.
    pub fn spec(&self) -> &GuildSpec {
        &self.spec
    }

    /// What engines need to run the guild's agents.
    pub fn context(&self) -> &GuildContext {
        &self.context
    }

    /// The engine an agent runs on.
    pub fn engine_for(&self, agent: &AgentSpec) -> String {
        self.forced_engine
            .clone()
            .or_else(|| agent.engine.clone())
            .unwrap_or_else(|| self.default_engine.clone())
    }

    /// Launches one agent on its engine; returns once it is ready. Launching an agent
    /// that runs already is a no-op.
    pub fn launch(&mut self, agent: AgentSpec) -> Result<()> {
        let engine_name = self.engine_for(&agent);
        let engine = match self.engines.get(&engine_name) {
            Some(engine) => engine.clone(),
            None => {
                let engine = match self.supplied.iter().find(|e| e.name() == engine_name) {
                    Some(supplied) => supplied.clone(),
                    None => {
                        select::engine_for(&engine_name, &self.spec, self.messaging_url.as_deref())?
                    }
                };
                self.events
                    .get_mut()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(engine.events());
                if let Some(supervisor) = &self.supervisor {
                    supervisor.watch(&engine);
                }
                if engine.capabilities().driven_by_caller {
                    self.driven
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(engine.clone());
                }
                self.engines.insert(engine_name.clone(), engine.clone());
                engine
            }
        };
        let id = agent.id.clone();
        if let Some(supervisor) = &self.supervisor {
            let agent = self.supervision.apply(&agent);
            let group = self.supervision.group_of(&agent.id);
            supervisor.supervise(&group, agent, engine.clone());
        }
        if let Err(error) = engine.run_agent(&self.context, agent) {
            if let Some(supervisor) = &self.supervisor {
                supervisor.forget(&id);
            }
            return Err(error);
        }
        // Launching a running agent again is one agent, listed once.
        if !self.launched.iter().any(|(launched, _)| *launched == id) {
            self.launched.push((id, engine_name));
        }
        Ok(())
    }

    /// Launches every agent of the spec, replicas expanded, in spec order.
    pub fn launch_all(&mut self) -> Result<()> {
        for agent in self.spec.expanded_agents() {
            self.launch(agent)?;
        }
        Ok(())
    }

    /// Stops agent `agent_id`, on whichever engine runs it: after this returns it
    /// handles nothing more and [`agents`](Self::agents) no longer lists it. An id that
    /// was never launched is a no-op.
    pub fn stop(&mut self, agent_id: &str) -> Result<()> {
        let Some(at) = self.launched.iter().position(|(id, _)| id == agent_id) else {
            return Ok(());
        };
        if let Some(supervisor) = &self.supervisor {
            supervisor.forget(agent_id);
        }
        if let Some(engine) = self.engines.get(&self.launched[at].1) {
            engine.stop_agent(&self.spec.id, agent_id)?;
        }
        self.launched.remove(at);
        Ok(())
    }

    /// Pauses agent `agent_id`: once this returns it handles nothing until
    /// [`resume`](Self::resume), and what is published to it waits for it. Fails with
    /// `NotFound` for an agent this guild does not run, and with `Unsupported` on an
    /// engine that cannot pause.
    pub fn pause(&self, agent_id: &str) -> Result<()> {
        self.engine_running(agent_id)?
            .pause_agent(&self.spec.id, agent_id)
    }

    /// Resumes a paused agent, which then handles what waited for it, in order.
    pub fn resume(&self, agent_id: &str) -> Result<()> {
        self.engine_running(agent_id)?
            .resume_agent(&self.spec.id, agent_id)
    }

    /// The engine that runs `agent_id`, launched by this guild.
    fn engine_running(&self, agent_id: &str) -> Result<&Arc<dyn ExecutionEngine>> {
        self.launched
            .iter()
            .find(|(id, _)| id == agent_id)
            .and_then(|(_, engine)| self.engines.get(engine))
            .ok_or_else(|| {
                GuildError::NotLaunched {
                    agent: agent_id.to_owned(),
                }
                .into()
            })
    }

    /// Publishes a message into the guild as [`GUILD_SENDER`].
    pub fn publish(&self, builder: MessageBuilder) -> Result<MessageId> {
        // The root of the trace the message starts, when tracing is on.
        let topics = builder.topics();
        let span = tracing::info_span!(
            target: "guild",
            "publish",
            otel.name = %format_args!("publish {}", topics.join(",")),
            otel.kind = "producer",
            messaging.system = %self.context.messaging.name(),
            messaging.destination.name = %topics.join(","),
            messaging.message.id = tracing::field::Empty,
            messaging.operation.type = "send",
            messaging.operation.name = "publish",
            guild.id = %self.context.namespace,
        );
        let _entered = span.enter();
        let message = builder.build(
            &self.context.ids,
            self.context.namespace.clone(),
            self.sender.clone(),
        );
        span.record("messaging.message.id", tracing::field::display(message.id));
        let id = message.id;
        self.context.messaging.publish(message)?;
        Ok(id)
    }

    /// Publishes a message and waits up to `timeout` for the first reply to it, which
    /// is returned. The reply goes to the guild's own inbox, whatever `reply_to` the
    /// builder set.
    ///
    /// Fails with [`ErrorKind::TimedOut`](crate::ErrorKind::TimedOut) when no reply comes in time; the request may
    /// still have been handled, so retry only what is safe to repeat. A reply that
    /// comes later is dropped.
    pub fn request(&self, builder: MessageBuilder, timeout: Duration) -> Result<Message> {
        let deadline = Instant::now().checked_add(timeout);
        let id = {
            let mut replies = self.replies.lock().unwrap_or_else(PoisonError::into_inner);
            if replies.observer.is_none() {
                // Unique to this guild handle, so two handles never take each other's
                // replies, even in two processes on one Redis.
                let unique = self.context.ids.next(Priority::default());
                replies.topic = inbox_topic(&format!("{GUILD_SENDER}.requests.{unique}"));
                let topic = replies.topic.clone();
                replies.observer = Some(self.observe(&topic, vec![topic.clone()])?);
            }
            let id = self.publish(builder.reply_to(replies.topic.clone()))?;
            replies.waiting.insert(id, None);
            id
        };
        loop {
            let mut replies = self.replies.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(Some(reply)) = replies.waiting.get_mut(&id).map(Option::take) {
                replies.waiting.remove(&id);
                return Ok(reply);
            }
            let remaining = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            if remaining.is_zero() {
                replies.waiting.remove(&id);
                return Err(GuildError::NoReply { id, timeout }.into());
            }
            // Wait in slices, so other requests waiting on the same inbox get a turn.
            let Some(observer) = replies.observer.as_mut() else {
                continue;
            };
            if let Some(delivery) = observer.recv_timeout(remaining.min(REQUEST_SLICE))?
                && let Some(original) = delivery.message.in_reply_to
                && let Some(slot @ None) = replies.waiting.get_mut(&original)
            {
                *slot = Some(Message::clone(&delivery.message));
            }
        }
    }

    /// Queries the guild's retained messages, arranged in `order` (see
    /// [`HistoryOrder`] for why publish order is the default).
    pub fn history(&self, query: &HistoryQuery, order: HistoryOrder) -> Result<Vec<Arc<Message>>> {
        self.context.history(query, order)
    }

    /// Subscribes an observer (not an agent) to topics of the guild, from messages
    /// published after this call on.
    pub fn observe(&self, client_id: &str, topics: Vec<String>) -> Result<Observer> {
        self.observe_from(client_id, topics, StartFrom::Latest)
    }

    /// Subscribes an observer to topics of the guild, starting where `start` says:
    /// [`StartFrom::Earliest`] hands out the retained backlog first.
    pub fn observe_from(
        &self,
        client_id: &str,
        topics: Vec<String>,
        start: StartFrom,
    ) -> Result<Observer> {
        Observer::subscribe(&self.context, self.driven.clone(), client_id, topics, start)
    }

    /// Handles what is queued for agents on engines that run on the caller's thread.
    pub fn drive(&self) -> usize {
        self.engines.values().map(|engine| engine.drive()).sum()
    }

    /// Moves the clock of the engines that run on one of their own (the sync engine)
    /// on by `by`, sending the timers that fall due; returns how many messages they
    /// sent. Timers on other engines run on real time.
    pub fn advance_clock(&self, by: Duration) -> usize {
        self.engines
            .values()
            .map(|engine| engine.advance_clock(by))
            .sum()
    }

    /// Like [`drive`](Self::drive), but returns once `slice` has passed even if work
    /// remains.
    pub fn drive_for(&self, slice: Duration) -> usize {
        self.engines
            .values()
            .map(|engine| engine.drive_for(slice))
            .sum()
    }

    /// The lifecycle events of this guild's agents (started, stopped, exited, crashed,
    /// killed by a limit) since the last call, on every engine, without waiting.
    pub fn take_events(&self) -> Vec<LifecycleEvent> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .flat_map(|events| events.try_iter())
            .filter(|event| event.guild == self.spec.id)
            .collect()
    }

    /// Whether the guild's supervisor will restart `agent_id` after an end of this
    /// kind; false when the guild is not supervised.
    pub fn will_restart(&self, agent_id: &str, kind: &engine_core::LifecycleKind) -> bool {
        self.supervisor
            .as_ref()
            .is_some_and(|supervisor| supervisor.will_restart(agent_id, kind))
    }

    /// How many times the supervisor has restarted `agent_id`.
    pub fn restarts(&self, agent_id: &str) -> u64 {
        self.supervisor
            .as_ref()
            .map_or(0, |supervisor| supervisor.restarts(agent_id))
    }

    /// Whether a supervisor restarts this guild's agents.
    pub fn is_supervised(&self) -> bool {
        self.supervisor.is_some()
    }

    /// Every agent launched and not stopped through [`stop`](Self::stop), in launch
    /// order, with what its engine knows of it.
    pub fn agents(&self) -> Vec<AgentInfo> {
        self.launched
            .iter()
            .filter_map(|(id, engine)| self.engines.get(engine)?.agent_info(&self.spec.id, id))
            .collect()
    }

    /// Totals over every engine.
    pub fn stats(&self) -> EngineStats {
        self.engines.values().map(|engine| engine.stats()).sum()
    }

    /// The engines in use, by name.
    pub fn engines(&self) -> impl Iterator<Item = (&str, &Arc<dyn ExecutionEngine>)> {
        self.engines
            .iter()
            .map(|(name, engine)| (name.as_str(), engine))
    }

    /// Stops every agent: shuts down the engines the guild made, and stops this
    /// guild's agents on the engines it was given (which keep running).
    pub fn shutdown(&self) -> Result<()> {
        // Nothing is restarted once the guild is going down.
        if let Some(supervisor) = &self.supervisor {
            supervisor.shutdown();
        }
        let mut first_error = None;
        for (name, engine) in &self.engines {
            let result = if self.supplied.iter().any(|s| Arc::ptr_eq(s, engine)) {
                self.launched
                    .iter()
                    .filter(|(_, on)| on == name)
                    .try_for_each(|(id, _)| engine.stop_agent(&self.spec.id, id))
            } else {
                engine.shutdown()
            };
            if let Err(error) = result {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Guild {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
