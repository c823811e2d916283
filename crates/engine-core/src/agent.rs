//! The agent contract: user code with async start, handle and stop hooks, and the
//! context it uses to talk to its guild.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::core_error::CoreError;
use crate::message::MessageBuilder;
use crate::task::{AgentTask, TaskHost};
use crate::timers::TimerId;
use crate::{
    AgentCell, AgentSpec, GuildContext, HistoryOrder, HistoryQuery, Message, MessageId, Payload,
    Result,
};

/// The error an agent's hook may return: any error type, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What an agent's hook returns.
pub type AgentResult = std::result::Result<(), BoxError>;

/// A handler error that ends its agent: the message is dead-lettered (kind `ended`)
/// and the agent is reported as the [`Ending`](crate::Ending) says (crashed, exited or
/// killed by a limit), without panicking. For an agent that can no longer go on (the
/// program behind an `exec` agent exited, or broke its protocol).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentEnded(pub crate::Ending);

impl AgentEnded {
    /// The agent crashed, for `reason`.
    pub fn crashed(reason: impl Into<String>) -> Self {
        Self(crate::Ending::Crashed(reason.into()))
    }

    /// The agent finished on its own.
    pub fn exited(reason: impl Into<String>) -> Self {
        Self(crate::Ending::Exited(reason.into()))
    }

    /// The agent went past a resource limit.
    pub fn killed_by_limit(reason: impl Into<String>) -> Self {
        Self(crate::Ending::KilledByLimit(reason.into()))
    }
}

impl std::fmt::Display for AgentEnded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.reason())
    }
}

impl std::error::Error for AgentEnded {}

/// A message-driven worker.
///
/// Implement it with `async fn`s; the futures must be `Send` so any engine can drive
/// them. An engine calls [`start`](Agent::start) once after the agent has subscribed to
/// its topics, [`handle`](Agent::handle) for each delivered message (never two at once),
/// and [`stop`](Agent::stop) when it is stopped. A handler error dead-letters that one
/// message to the guild's error topic and the agent carries on; a panic, or an
/// [`AgentEnded`] error, ends the agent with a "crashed" exit.
///
/// ```
/// use engine_core::{Agent, AgentContext, AgentResult, Message};
///
/// struct Echo;
///
/// impl Agent for Echo {
///     async fn handle(&mut self, ctx: &AgentContext, message: &Message) -> AgentResult {
///         ctx.reply(message, message.payload.clone())?;
///         Ok(())
///     }
/// }
/// ```
pub trait Agent: Send + 'static {
    /// Runs once, after the agent is subscribed and before it handles any message.
    fn start(&mut self, ctx: &AgentContext) -> impl Future<Output = AgentResult> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// Handles one message.
    fn handle(
        &mut self,
        ctx: &AgentContext,
        message: &Message,
    ) -> impl Future<Output = AgentResult> + Send;

    /// Runs once when the agent is stopped (not after a crash).
    fn stop(&mut self, ctx: &AgentContext) -> impl Future<Output = AgentResult> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// Says whether the agent is healthy: `Ok` when it is, an error saying why when it
    /// is not. Called between messages, when the agent's spec has `health` probes: once
    /// right after [`start`](Agent::start) (the agent is not ready until it passes),
    /// then at the probe interval. An agent that fails too many in a row, or takes too
    /// long to answer, is restarted by its supervisor. Healthy unless overridden.
    fn health(&mut self, ctx: &AgentContext) -> impl Future<Output = AgentResult> + Send {
        let _ = ctx;
        async { Ok(()) }
    }
}

/// An [`Agent`] with its type erased, as built by the registry. Each method drives the
/// hook's future to completion on the calling thread, inside whatever async runtime
/// context that thread has entered, without allocating.
pub trait DynAgent: Send {
    /// Runs [`Agent::start`] to completion.
    fn run_start(&mut self, ctx: &AgentContext) -> AgentResult;
    /// Runs [`Agent::handle`] to completion, or until `deadline`: `None` when the
    /// deadline passed first and the handler was cancelled.
    fn run_handle(
        &mut self,
        ctx: &AgentContext,
        message: &Message,
        deadline: Option<std::time::Instant>,
    ) -> Option<AgentResult>;
    /// Runs [`Agent::stop`] to completion.
    fn run_stop(&mut self, ctx: &AgentContext) -> AgentResult;
    /// Runs [`Agent::health`] to completion, or until `deadline`: `None` when the
    /// deadline passed first.
    fn run_health(
        &mut self,
        ctx: &AgentContext,
        deadline: Option<std::time::Instant>,
    ) -> Option<AgentResult>;
    /// The started agent as one long-lived task (see [`TaskHost::run`]): one allocation,
    /// made here where the agent's type is known, holds it and every handler's future.
    fn into_task(self: Box<Self>, host: TaskHost) -> AgentTask;
}

impl<A: Agent> DynAgent for A {
    fn run_start(&mut self, ctx: &AgentContext) -> AgentResult {
        crate::block_on::block_on(self.start(ctx))
    }

    fn run_handle(
        &mut self,
        ctx: &AgentContext,
        message: &Message,
        deadline: Option<std::time::Instant>,
    ) -> Option<AgentResult> {
        crate::block_on::block_on_until(self.handle(ctx, message), deadline)
    }

    fn run_stop(&mut self, ctx: &AgentContext) -> AgentResult {
        crate::block_on::block_on(self.stop(ctx))
    }

    fn run_health(
        &mut self,
        ctx: &AgentContext,
        deadline: Option<std::time::Instant>,
    ) -> Option<AgentResult> {
        crate::block_on::block_on_until(self.health(ctx), deadline)
    }

    fn into_task(self: Box<Self>, host: TaskHost) -> AgentTask {
        Box::pin(host.run(*self))
    }
}

/// What an agent sees of its guild: its spec, publishing, replying, timers, history
/// and resources. Cheap to clone.
#[derive(Clone)]
pub struct AgentContext {
    spec: Arc<AgentSpec>,
    /// The agent's id, shared by every message it sends.
    id: Arc<str>,
    guild: GuildContext,
    cell: Arc<AgentCell>,
}

impl AgentContext {
    /// The context of the agent described by `spec` in `guild`.
    pub fn new(spec: Arc<AgentSpec>, guild: GuildContext, cell: Arc<AgentCell>) -> Self {
        Self {
            id: spec.id.as_str().into(),
            spec,
            guild,
            cell,
        }
    }

    /// The agent's id.
    pub fn id(&self) -> &str {
        &self.spec.id
    }

    /// The agent's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The agent's spec.
    pub fn spec(&self) -> &AgentSpec {
        &self.spec
    }

    /// The guild namespace.
    pub fn namespace(&self) -> &str {
        &self.guild.namespace
    }

    /// Publishes a message built by `builder`, as this agent, at the agent's default
    /// priority unless the builder set one.
    pub fn publish(&self, builder: MessageBuilder) -> Result<MessageId> {
        let message = builder.default_priority(self.spec.priority).build(
            &self.guild.ids,
            self.guild.namespace.clone(),
            self.id.clone(),
        );
        if message
            .topics
            .iter()
            .any(|topic| &**topic == crate::ERROR_TOPIC)
        {
            return Err(CoreError::ErrorTopic {
                agent: self.spec.id.clone(),
                topic: crate::ERROR_TOPIC,
            }
            .into());
        }
        let id = message.id;
        self.guild.messaging.publish(message)?;
        self.cell.count_out();
        Ok(id)
    }

    /// Publishes the message `message` builds, as this agent, once `delay` has passed
    /// (on the engine's clock: the sync engine's moves only when its caller advances
    /// it). The timer ends with the agent.
    pub fn send_after(&self, delay: Duration, message: MessageBuilder) -> Result<TimerId> {
        self.guild.timers.schedule(self, delay, None, message)
    }

    /// Publishes the message `message` builds every `period` (above zero), the first
    /// time one period from now, until [`cancel_timer`](Self::cancel_timer) or the
    /// agent ends.
    pub fn send_every(&self, period: Duration, message: MessageBuilder) -> Result<TimerId> {
        self.guild
            .timers
            .schedule(self, period, Some(period), message)
    }

    /// The guild's timers.
    pub(crate) fn guild(&self) -> &GuildContext {
        &self.guild
    }

    pub(crate) fn timers(&self) -> &crate::Timers {
        &self.guild.timers
    }

    /// Cancels one of this agent's timers: it sends nothing from now on. False when it
    /// was not waiting (it sent its one message, or was cancelled already).
    pub fn cancel_timer(&self, timer: TimerId) -> bool {
        self.guild.timers.cancel(self, timer)
    }

    /// Publishes `payload` to `topic`.
    pub fn send(&self, topic: impl AsRef<str>, payload: Payload) -> Result<MessageId> {
        self.publish(Message::builder(topic, payload))
    }

    /// Replies to `message` (to its `reply_to` topic, else its sender's inbox), continuing
    /// its thread.
    pub fn reply(&self, message: &Message, payload: Payload) -> Result<MessageId> {
        self.publish(Message::builder(message.reply_topic(), payload).in_reply_to(message))
    }

    /// Answers a health probe: published as the agent, not counted as its output.
    pub(crate) fn answer_probe(&self, probe: &Message, answer: &crate::ProbeAnswer) -> Result<()> {
        let payload = Payload::encode_json(answer).map_err(|error| CoreError::Probe {
            agent: self.spec.id.clone(),
            text: error.to_string(),
        })?;
        let message = Message::builder(probe.reply_topic(), payload)
            .in_reply_to(probe)
            .priority(probe.priority())
            .build(
                &self.guild.ids,
                self.guild.namespace.clone(),
                self.id.clone(),
            );
        self.guild.messaging.publish(message)
    }

    /// Reports a change the host saw (a circuit breaker's) as a lifecycle event of the
    /// agent, where its engine listens.
    pub(crate) fn report(&self, kind: crate::LifecycleKind) {
        self.cell.report(kind);
    }

    /// Queries the guild's message history, arranged in `order`.
    pub fn history(&self, query: &HistoryQuery, order: HistoryOrder) -> Result<Vec<Arc<Message>>> {
        self.guild.history(query, order)
    }

    /// The shared resource `name`, which the agent's spec must list as a dependency.
    pub fn resource<T: Any + Send + Sync>(&self, name: &str) -> Result<Arc<T>> {
        if !self.spec.dependencies.iter().any(|d| d == name) {
            return Err(CoreError::NotADependency {
                agent: self.spec.id.clone(),
                name: name.to_owned(),
            }
            .into());
        }
        self.guild.resources.get(name)
    }
}
