//! The one boundary at which every engine runs agent code: build the agent from its
//! spec, subscribe it, start it, hand it messages one at a time, and stop it. Handler
//! errors and panics are caught here and nowhere else.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::core_error::CoreError;
use crate::guard::{Breaker, ProbeAnswer, is_probe};
use crate::task::{AgentTask, TaskControl, TaskEnv};
use crate::{
    AgentCell, AgentContext, AgentResult, AgentSpec, Delivery, DynAgent, Error, ExitStatus,
    Failure, GuildContext, Message, Notify, Outcome, Result, SubscribeRequest, Subscription,
    message::inbox_topic,
};

/// What one [`AgentHost::step`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing was queued.
    Idle,
    /// One message was handled (successfully or dead-lettered after an error).
    Handled,
    /// The handler panicked, or ended its agent ([`AgentEnded`](crate::AgentEnded)):
    /// the agent has ended and must not be stepped again.
    Ended(crate::Ending),
}

/// A started agent together with its subscription and context.
pub struct AgentHost {
    agent: Box<dyn DynAgent>,
    core: HostCore,
}

/// Everything of a started agent but the agent itself: what both ways of running it
/// (stepped on a thread, or polled as a task) share.
pub(crate) struct HostCore {
    pub(crate) ctx: AgentContext,
    subscription: Option<Box<dyn Subscription>>,
    pub(crate) cell: Arc<AgentCell>,
    /// How long one handler may take.
    pub(crate) timeout: Option<Duration>,
    /// How long one health probe may take.
    pub(crate) probe_timeout: Duration,
    breaker: Option<Breaker>,
    /// Whether to record how long handlers take and deliveries wait.
    timing: bool,
    /// When the running handler started, while timing.
    started: Option<Instant>,
}

/// What the host does with a delivery before any handler sees it.
pub(crate) enum Screen {
    /// Hand it to the handler.
    Handle,
    /// A health probe: answer it with the health hook.
    Probe,
    /// The circuit breaker is open: it was dead-lettered (kind `circuit_open`).
    Rejected,
}

impl std::fmt::Debug for AgentHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentHost")
            .field("agent", &self.core.ctx.id())
            .finish_non_exhaustive()
    }
}

impl AgentHost {
    /// Builds the agent from `spec`, subscribes it to its topics and its inbox, and runs
    /// its start hook. When this returns `Ok`, the agent is ready.
    pub fn start(
        guild: &GuildContext,
        spec: Arc<AgentSpec>,
        cell: Arc<AgentCell>,
        notify: Arc<dyn Notify>,
    ) -> Result<Self> {
        if let Some(foreign) = spec.topics.iter().find(|topic| {
            topic.starts_with(crate::INBOX_PREFIX) && **topic != inbox_topic(&spec.id)
        }) {
            return Err(CoreError::ForeignInbox {
                agent: spec.id.clone(),
                topic: foreign.clone(),
            }
            .into());
        }
        let agent = guild.registry.build(&spec)?;
        let mut topics = spec.topics.clone();
        topics.push(inbox_topic(&spec.id));
        let subscription = guild.messaging.subscribe(
            SubscribeRequest {
                namespace: guild.namespace.to_string(),
                client_id: spec.id.clone(),
                topics,
                start: spec.start_from,
                limit: spec.queue,
            },
            notify,
        )?;
        let timeout = spec.handler_timeout_ms.map(Duration::from_millis);
        let health = spec.health;
        let probe_timeout = crate::supervision_ms(health.unwrap_or_default().timeout_ms);
        let breaker = spec.breaker.map(Breaker::new);
        let ctx = AgentContext::new(spec, guild.clone(), cell.clone());
        let mut host = Self {
            agent,
            core: HostCore {
                ctx,
                subscription: Some(subscription),
                cell,
                timeout,
                probe_timeout,
                breaker,
                timing: guild.timing,
                started: None,
            },
        };
        let started = catch_unwind(AssertUnwindSafe(|| host.agent.run_start(&host.core.ctx)));
        let agent = host.core.ctx.id().to_owned();
        let mut failure = match started {
            Ok(Ok(())) => None,
            Ok(Err(source)) => Some(CoreError::StartHook { agent, source }),
            Err(panic) => Some(CoreError::StartPanic {
                agent,
                text: panic_text(&*panic),
            }),
        };
        // Ready only once the first probe has passed too.
        if failure.is_none() && health.is_some() {
            let deadline = Instant::now().checked_add(probe_timeout);
            let probed = catch_unwind(AssertUnwindSafe(|| {
                host.agent.run_health(&host.core.ctx, deadline)
            }));
            if let ProbeAnswer {
                healthy: false,
                reason: Some(text),
            } = host.core.probe_answer(probed)
            {
                failure = Some(CoreError::NotReady {
                    agent: host.core.ctx.id().to_owned(),
                    text,
                });
            }
        }
        if let Some(failure) = failure {
            host.core.close();
            return Err(failure.into());
        }
        Ok(host)
    }

    /// The agent's id.
    pub fn id(&self) -> &str {
        self.core.ctx.id()
    }

    /// Hands the next queued message, if any, to the agent's handler.
    ///
    /// An error returned by the handler dead-letters the message and the agent goes on.
    /// A panic dead-letters the message too (so a restarted agent does not meet the same
    /// poison message) and reports the agent crashed.
    pub fn step(&mut self) -> Result<Step> {
        let core = &mut self.core;
        let Some(delivery) = core.next()? else {
            return Ok(Step::Idle);
        };
        match core.screen(&delivery)? {
            Screen::Handle => {}
            Screen::Rejected => return Ok(Step::Handled),
            Screen::Probe => {
                let deadline = Instant::now().checked_add(core.probe_timeout);
                let probed = catch_unwind(AssertUnwindSafe(|| {
                    self.agent.run_health(&core.ctx, deadline)
                }));
                core.answer(&delivery, probed)?;
                return Ok(Step::Handled);
            }
        }
        let (span, untraced) = core.span(&delivery);
        let _entered = span.entered();
        core.begin(&delivery);
        let deadline = core
            .timeout
            .and_then(|timeout| Instant::now().checked_add(timeout));
        let result = catch_unwind(AssertUnwindSafe(|| {
            crate::trace::passing_on(untraced.as_ref(), || {
                self.agent
                    .run_handle(&core.ctx, &delivery.message, deadline)
            })
        }));
        core.finish(&delivery, result)
    }

    /// Runs the agent's stop hook and detaches its subscription (keeping its position).
    pub fn stop(mut self) -> Result<()> {
        let stopped = catch_unwind(AssertUnwindSafe(|| self.agent.run_stop(&self.core.ctx)));
        self.core.stopped(stopped)
    }

    /// Ends the agent after a crash: detaches its subscription without running the stop
    /// hook (its position is kept, so a restart resumes) and records it as crashed.
    pub fn crash(self, reason: &str) {
        self.core.end(&crate::Ending::Crashed(reason.to_owned()));
    }

    /// Ends the agent as `ending` says, as [`crash`](Self::crash) does a crash.
    pub fn end(self, ending: &crate::Ending) {
        self.core.end(ending);
    }

    /// Turns the started agent into one long-lived future that handles its messages as
    /// they come and parks, holding no thread, while nothing is queued: for engines that
    /// run agents as tasks on a pool of workers. `control` is how the engine wakes,
    /// pauses and stops it (hand the same one to the bus as the subscription's
    /// [`Notify`] when starting); `env` is the engine's side of scheduling.
    pub fn into_task(self, control: Arc<TaskControl>, env: Box<dyn TaskEnv>) -> AgentTask {
        self.agent.into_task(crate::task::TaskHost {
            core: self.core,
            control,
            env,
        })
    }
}

impl HostCore {
    /// The next delivery, or `None` (recording an empty queue) when nothing is queued.
    pub(crate) fn next(&mut self) -> Result<Option<Delivery>> {
        let delivery = self.subscription_mut()?.next()?;
        if delivery.is_none() {
            self.cell.set_queued(0);
        }
        Ok(delivery)
    }

    /// The span a delivery is handled in, named and described as OpenTelemetry's
    /// messaging conventions ask, and parented on the publisher's trace context when
    /// the message carries one. For a delivery that sampling leaves out: no span, and
    /// the context its handler is to pass on.
    pub(crate) fn span(&self, delivery: &Delivery) -> (tracing::Span, Option<Arc<Message>>) {
        let message = &delivery.message;
        if let Some(untraced) = crate::trace::untraced(message) {
            return (tracing::Span::none(), Some(untraced));
        }
        let span = tracing::info_span!(
            target: "guild",
            "handle",
            otel.name = %format_args!("process {}", delivery.topic),
            otel.kind = "consumer",
            messaging.system = %self.ctx.guild().messaging.name(),
            messaging.destination.name = %delivery.topic,
            messaging.message.id = %message.id,
            messaging.operation.type = "process",
            messaging.operation.name = "handle",
            guild.id = %self.ctx.namespace(),
            guild.agent.id = %self.ctx.id(),
            guild.engine = %self.cell.engine(),
            guild.sender = %message.sender,
        );
        crate::trace::adopt(&span, &message.headers);
        (span, None)
    }

    /// Marks the agent busy with `delivery`, about to run its handler, and (when
    /// timing) records how long the delivery waited.
    pub(crate) fn begin(&mut self, delivery: &Delivery) {
        self.cell.begin_handling();
        if self.timing {
            let waited = crate::unix_ms_now().saturating_sub(delivery.message.timestamp_ms);
            self.cell
                .timings()
                .waiting
                .record(Duration::from_millis(waited));
            self.started = Some(Instant::now());
        }
    }

    /// Completes `delivery` as its handler's `result` says and records how it ended.
    pub(crate) fn finish(
        &mut self,
        delivery: &Delivery,
        result: std::thread::Result<Option<AgentResult>>,
    ) -> Result<Step> {
        if let Some(started) = self.started.take() {
            self.cell.timings().handling.record(started.elapsed());
        }
        let (outcome, step) = judge(&self.ctx, self.timeout, delivery, result);
        let failed = outcome != Outcome::Handled;
        if let Some(breaker) = &mut self.breaker
            && let Some(change) = breaker.record(failed, Instant::now())
        {
            self.breaker_changed(change);
        }
        let subscription = self.subscription_mut()?;
        subscription.complete(outcome)?;
        let queued = subscription.pending();
        self.cell.end_handling(failed, queued);
        Ok(step)
    }

    /// Decides what becomes of `delivery` before any handler sees it: probes go to the
    /// health hook, and an open circuit breaker dead-letters the delivery at once.
    pub(crate) fn screen(&mut self, delivery: &Delivery) -> Result<Screen> {
        if is_probe(&delivery.message) {
            return Ok(Screen::Probe);
        }
        let Some(breaker) = &mut self.breaker else {
            return Ok(Screen::Handle);
        };
        let (admitted, change) = breaker.admit(Instant::now());
        if let Some(change) = change {
            self.breaker_changed(change);
        }
        if admitted {
            return Ok(Screen::Handle);
        }
        let failure = Failure {
            kind: "circuit_open".into(),
            text: format!(
                "agent {} has its circuit breaker open after repeated failures; \
                 the message waits on the dead-letter topic for replay",
                self.ctx.id()
            ),
        };
        let subscription = self.subscription_mut()?;
        subscription.complete(Outcome::Failed(failure))?;
        let queued = subscription.pending();
        // Delivered and failed, as every engine counts it.
        self.cell.begin_handling();
        self.cell.end_handling(true, queued);
        Ok(Screen::Rejected)
    }

    fn breaker_changed(&self, change: crate::LifecycleKind) {
        tracing::warn!(agent = %self.ctx.id(), ?change, "circuit breaker");
        self.ctx.report(change);
    }

    /// How a health hook's run ended, as the answer to a probe. `probed` is `Err` for
    /// a panic and `Ok(None)` when the probe's time ran out.
    pub(crate) fn probe_answer(
        &self,
        probed: std::thread::Result<Option<AgentResult>>,
    ) -> ProbeAnswer {
        let reason = match probed {
            Ok(Some(Ok(()))) => None,
            Ok(Some(Err(error))) => Some(error.to_string()),
            Ok(None) => Some(format!(
                "the health hook did not answer within {} ms",
                self.probe_timeout.as_millis()
            )),
            Err(panic) => Some(format!("the health hook panicked: {}", panic_text(&*panic))),
        };
        ProbeAnswer {
            healthy: reason.is_none(),
            reason,
        }
    }

    /// Answers the probe `delivery` with how the health hook ended, and completes it.
    /// Probes are not counted as messages handled.
    pub(crate) fn answer(
        &mut self,
        delivery: &Delivery,
        probed: std::thread::Result<Option<AgentResult>>,
    ) -> Result<()> {
        let answer = self.probe_answer(probed);
        if let Err(error) = self.ctx.answer_probe(&delivery.message, &answer) {
            tracing::warn!(agent = %self.ctx.id(), %error, "answering a health probe failed");
        }
        let subscription = self.subscription_mut()?;
        subscription.complete(Outcome::Handled)?;
        let queued = subscription.pending();
        self.cell.set_queued(queued);
        Ok(())
    }

    /// Detaches the subscription after the stop hook ran, and reports how the hook ended.
    pub(crate) fn stopped(mut self, stopped: std::thread::Result<AgentResult>) -> Result<()> {
        self.close();
        let agent = self.ctx.id().to_owned();
        match stopped {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(CoreError::StopHook { agent, source }.into()),
            Err(panic) => Err(CoreError::StopPanic {
                agent,
                text: panic_text(&*panic),
            }
            .into()),
        }
    }

    /// See [`AgentHost::end`].
    pub(crate) fn end(mut self, ending: &crate::Ending) {
        self.close();
        let exit = ExitStatus {
            reason: ending.reason().to_owned(),
            code: None,
            signal: None,
        };
        self.cell.set_state(ending.state(), Some(exit));
    }

    fn close(&mut self) {
        // The agent's timers end with it.
        self.ctx
            .timers()
            .cancel_agent(self.ctx.namespace(), self.ctx.id());
        if let Some(subscription) = self.subscription.take()
            && let Err(error) = subscription.close()
        {
            tracing::warn!(agent = %self.ctx.id(), %error, "closing the subscription failed");
        }
    }

    fn subscription_mut(&mut self) -> Result<&mut Box<dyn Subscription>> {
        self.subscription.as_mut().ok_or_else(|| {
            Error::from(CoreError::Unsubscribed {
                agent: self.ctx.id().to_owned(),
            })
        })
    }
}

/// Classifies how a handler ended: the delivery's outcome and what it means for the
/// agent. `result` is `Err` for a panic and `Ok(None)` when the deadline passed.
pub(crate) fn judge(
    ctx: &AgentContext,
    timeout: Option<Duration>,
    delivery: &Delivery,
    result: std::thread::Result<Option<AgentResult>>,
) -> (Outcome, Step) {
    let message = &delivery.message;
    match result {
        Ok(Some(Ok(()))) => (Outcome::Handled, Step::Handled),
        Ok(None) => {
            let text = format!(
                "the handler did not finish within {}ms and was cancelled",
                timeout.unwrap_or_default().as_millis()
            );
            tracing::warn!(agent = %ctx.id(), topic = %delivery.topic, "{text}");
            let failure = Failure {
                kind: "timeout".into(),
                text,
            };
            (Outcome::Failed(failure), Step::Handled)
        }
        Ok(Some(Err(error))) if error.is::<crate::AgentEnded>() => {
            let ending = error
                .downcast_ref::<crate::AgentEnded>()
                .map(|ended| ended.0.clone())
                .unwrap_or_else(|| crate::Ending::Crashed(error.to_string()));
            tracing::error!(agent = %ctx.id(), topic = %delivery.topic, reason = %ending.reason(), "the agent ended");
            let failure = Failure {
                kind: "ended".into(),
                text: ending.reason().to_owned(),
            };
            (Outcome::Failed(failure), Step::Ended(ending))
        }
        Ok(Some(Err(error))) => {
            tracing::warn!(agent = %ctx.id(), topic = %delivery.topic, %error, "handler failed");
            let failure = Failure {
                kind: "error".into(),
                text: error.to_string(),
            };
            (Outcome::Failed(failure), Step::Handled)
        }
        Err(panic) => {
            let text = panic_text(&*panic);
            tracing::error!(agent = %ctx.id(), topic = %delivery.topic, panic = %text, "handler panicked");
            let reason = format!(
                "panicked handling message {} on topic {:?}: {text}",
                message.id, delivery.topic
            );
            let failure = Failure {
                kind: "panic".into(),
                text,
            };
            (
                Outcome::Failed(failure),
                Step::Ended(crate::Ending::Crashed(reason)),
            )
        }
    }
}

/// The text of a panic payload.
pub fn panic_text(panic: &(dyn Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic with a non-text payload".to_owned()
    }
}
