//! A running guild: its messaging, its engines, and the agents it launched on them.

use std::collections::BTreeMap;
use std::sync::Arc;

use engine_core::{
    AgentInfo, AgentRegistry, AgentSpec, EngineStats, EventReceiver, ExecutionEngine, GuildContext,
    IdGenerator, LifecycleEvent, MessageBuilder, MessageId, NoNotify, Notify, Result, StartFrom,
    SubscribeRequest, Subscription,
};

use crate::{GuildSpec, select};

/// The sender id of messages the guild itself publishes (run inputs, for example).
pub const GUILD_SENDER: &str = "guild";

/// Builds a [`Guild`] from a spec.
#[derive(Debug)]
#[must_use]
pub struct GuildBuilder {
    spec: GuildSpec,
    registry: AgentRegistry,
    engine: Option<String>,
    messaging: Option<String>,
}

impl GuildBuilder {
    /// A builder for the guild described by `spec`, with an empty registry.
    pub fn new(spec: GuildSpec) -> Self {
        Self {
            spec,
            registry: AgentRegistry::new(),
            engine: None,
            messaging: None,
        }
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

    /// Uses the messaging backend `url` instead of the spec's.
    pub fn messaging(mut self, url: impl Into<String>) -> Self {
        self.messaging = Some(url.into());
        self
    }

    /// Connects the messaging backend and builds the guild's resources; launches nothing.
    pub fn build(self) -> Result<Guild> {
        let forced = self.engine.filter(|name| !name.is_empty());
        let default_engine = forced
            .clone()
            .or_else(|| self.spec.engine.clone())
            .unwrap_or_else(|| select::DEFAULT_ENGINE.to_owned());
        let messaging_url = self
            .messaging
            .or_else(|| self.spec.messaging.clone())
            .unwrap_or_else(|| select::DEFAULT_MESSAGING.to_owned());
        let messaging = select::messaging(&messaging_url)?;
        let resources = self.registry.build_resources(&self.spec.dependencies)?;
        let context = GuildContext {
            namespace: self.spec.id.as_str().into(),
            messaging,
            registry: Arc::new(self.registry),
            resources: Arc::new(resources),
            ids: IdGenerator::process(),
        };
        Ok(Guild {
            spec: self.spec,
            context,
            forced_engine: forced,
            default_engine,
            engines: BTreeMap::new(),
            events: Vec::new(),
            launched: Vec::new(),
        })
    }
}

/// A guild: one namespace on one messaging backend, with agents on one or more engines.
pub struct Guild {
    spec: GuildSpec,
    context: GuildContext,
    forced_engine: Option<String>,
    default_engine: String,
    engines: BTreeMap<String, Arc<dyn ExecutionEngine>>,
    /// Each engine's lifecycle events, subscribed to before it ran anything.
    events: Vec<EventReceiver>,
    launched: Vec<(String, String)>,
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

    /// Launches one agent on its engine; returns once it is ready.
    pub fn launch(&mut self, agent: AgentSpec) -> Result<()> {
        let engine_name = self.engine_for(&agent);
        let engine = match self.engines.get(&engine_name) {
            Some(engine) => engine.clone(),
            None => {
                let engine = select::engine(&engine_name)?;
                self.events.push(engine.events());
                self.engines.insert(engine_name.clone(), engine.clone());
                engine
            }
        };
        let id = agent.id.clone();
        engine.run_agent(&self.context, agent)?;
        // Launching a running agent again is one agent, listed once.
        if !self.launched.iter().any(|(launched, _)| *launched == id) {
            self.launched.push((id, engine_name));
        }
        Ok(())
    }

    /// Stops agent `agent_id`, on whichever engine runs it: after this returns it
    /// handles nothing more. An id that was never launched is a no-op.
    pub fn stop(&self, agent_id: &str) -> Result<()> {
        let Some((_, engine)) = self.launched.iter().find(|(id, _)| id == agent_id) else {
            return Ok(());
        };
        match self.engines.get(engine) {
            Some(engine) => engine.stop_agent(&self.spec.id, agent_id),
            None => Ok(()),
        }
    }

    /// Launches every agent of the spec, replicas expanded, in spec order.
    pub fn launch_all(&mut self) -> Result<()> {
        for agent in self.spec.expanded_agents() {
            self.launch(agent)?;
        }
        Ok(())
    }

    /// Publishes a message into the guild as [`GUILD_SENDER`].
    pub fn publish(&self, builder: MessageBuilder) -> Result<MessageId> {
        let message = builder.build(&self.context.ids, &self.context.namespace, GUILD_SENDER);
        let id = message.id;
        self.context.messaging.publish(message)?;
        Ok(id)
    }

    /// Subscribes an observer (not an agent) to topics of the guild.
    pub fn observe(&self, client_id: &str, topics: Vec<String>) -> Result<Box<dyn Subscription>> {
        let notify: Arc<dyn Notify> = Arc::new(NoNotify);
        self.context.messaging.subscribe(
            SubscribeRequest {
                namespace: self.context.namespace.to_string(),
                client_id: client_id.to_owned(),
                topics,
                start: StartFrom::Latest,
                limit: None,
            },
            notify,
        )
    }

    /// Handles what is queued for agents on engines that run on the caller's thread.
    pub fn drive(&self) -> usize {
        self.engines.values().map(|engine| engine.drive()).sum()
    }

    /// Like [`drive`](Self::drive), but returns once `slice` has passed even if work
    /// remains.
    pub fn drive_for(&self, slice: std::time::Duration) -> usize {
        self.engines
            .values()
            .map(|engine| engine.drive_for(slice))
            .sum()
    }

    /// The lifecycle events of this guild's agents (started, stopped, exited, crashed,
    /// killed by a limit) since the last call, on every engine, without waiting.
    pub fn take_events(&self) -> Vec<LifecycleEvent> {
        self.events
            .iter()
            .flat_map(|events| events.try_iter())
            .filter(|event| event.guild == self.spec.id)
            .collect()
    }

    /// Every agent launched, in launch order, with what its engine knows of it.
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

    /// Stops every agent and shuts every engine down.
    pub fn shutdown(&self) -> Result<()> {
        let mut first_error = None;
        for engine in self.engines.values() {
            if let Err(error) = engine.shutdown() {
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
