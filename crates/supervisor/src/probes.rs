//! Health probes: for each running agent whose spec has `health`, a probe message to
//! its inbox every interval (sent at `urgent` priority, so it overtakes queued work);
//! its host answers with the agent's health hook on this supervisor's own inbox. A
//! probe unanswered within its timeout counts as failed; `failures` in a row and the
//! agent is ended (killed where the engine can, else stopped between messages) and
//! restarted like any agent that crashed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use engine_core::{
    AgentState, HealthCheck, Message, MessageId, Notify, PROBE_FORMAT, PROBE_SENDER, Payload,
    Priority, ProbeAnswer, StartFrom, SubscribeRequest, Subscription, inbox_topic, supervision_ms,
};

use crate::restarts;
use crate::supervisor::{Control, Phase, Shared, State};

/// Where one agent's probing stands.
#[derive(Debug, Default)]
pub(crate) struct ProbeState {
    /// When the next probe goes out.
    next: Option<Instant>,
    /// The probe waiting for its answer, and when it went out.
    waiting: Option<(MessageId, Instant)>,
    /// Failed probes in a row.
    failures: u32,
}

/// The supervisor's side of probing: its inbox for answers, subscribed on first use.
pub(crate) struct Prober {
    subscription: Option<Box<dyn Subscription>>,
    inbox: String,
    wake: Sender<Control>,
}

/// Wakes the supervisor's thread when an answer arrives.
struct Wake(Sender<Control>);

impl Notify for Wake {
    fn notify(&self) {
        let _ = self.0.try_send(Control::Wake);
    }
}

impl Prober {
    pub(crate) fn new(wake: Sender<Control>) -> Self {
        Self {
            subscription: None,
            inbox: String::new(),
            wake,
        }
    }

    /// Reads answers, counts probes that timed out, sends the probes that are due, and
    /// ends agents that failed too many in a row.
    pub(crate) fn tick(&mut self, shared: &Shared, now: Instant) {
        if !shared
            .lock()
            .children
            .values()
            .any(|c| c.spec.health.is_some())
        {
            return;
        }
        if self.subscription.is_none() && !self.subscribe(shared) {
            return;
        }
        self.read_answers(shared);
        let mut unhealthy = Vec::new();
        let mut due = Vec::new();
        {
            let mut state = shared.lock();
            for (id, child) in &mut state.children {
                let (Some(health), Phase::Running(_)) = (child.spec.health, child.phase) else {
                    continue;
                };
                let probe = &mut child.probe;
                let next = *probe.next.get_or_insert(now + interval(health));
                match probe.waiting {
                    Some((_, sent)) if now >= sent + timeout(health) => {
                        probe.waiting = None;
                        let why =
                            format!("it did not answer a probe within {} ms", health.timeout_ms);
                        if failed(probe, health) {
                            unhealthy.push((id.clone(), why));
                        }
                    }
                    None if now >= next => due.push((id.clone(), child.engine.clone())),
                    _ => {}
                }
            }
        }
        for (id, engine) in due {
            // A paused or starting agent is not probed.
            let running = engine
                .agent_info(&shared.context.namespace, &id)
                .is_some_and(|info| info.state == AgentState::Running);
            let sent = if running {
                self.send(shared, &id)
            } else {
                None
            };
            if let Some(child) = shared.lock().children.get_mut(&id)
                && let Some(health) = child.spec.health
            {
                child.probe.next = Some(now + interval(health));
                child.probe.waiting = sent.map(|probe| (probe, now));
            }
        }
        for (id, why) in unhealthy {
            restarts::unhealthy(shared, &id, &why);
        }
    }

    fn subscribe(&mut self, shared: &Shared) -> bool {
        let unique = shared.context.ids.next(Priority::default());
        let client = format!("{PROBE_SENDER}.{unique}");
        let inbox = inbox_topic(&client);
        let request = SubscribeRequest {
            namespace: shared.context.namespace.to_string(),
            client_id: client,
            topics: vec![inbox.clone()],
            start: StartFrom::Latest,
            limit: None,
        };
        match shared
            .context
            .messaging
            .subscribe(request, Arc::new(Wake(self.wake.clone())))
        {
            Ok(subscription) => {
                self.subscription = Some(subscription);
                self.inbox = inbox;
                true
            }
            Err(error) => {
                tracing::warn!(%error, "the supervisor cannot subscribe to health answers; probing waits");
                false
            }
        }
    }

    fn send(&self, shared: &Shared, agent: &str) -> Option<MessageId> {
        let message = Message::builder(inbox_topic(agent), Payload::new(PROBE_FORMAT, Vec::new()))
            .priority(Priority::Urgent)
            .reply_to(self.inbox.clone())
            .build(
                &shared.context.ids,
                shared.context.namespace.clone(),
                PROBE_SENDER,
            );
        let id = message.id;
        match shared.context.messaging.publish(message) {
            Ok(()) => Some(id),
            Err(error) => {
                tracing::warn!(agent, %error, "sending a health probe failed");
                None
            }
        }
    }

    fn read_answers(&mut self, shared: &Shared) {
        let Some(subscription) = &mut self.subscription else {
            return;
        };
        let mut unhealthy = Vec::new();
        while let Ok(Some(delivery)) = subscription.next() {
            let _ = subscription.complete(engine_core::Outcome::Handled);
            let Some(probe) = delivery.message.in_reply_to else {
                continue;
            };
            let answer: ProbeAnswer = match delivery.message.decode_json() {
                Ok(answer) => answer,
                Err(_) => continue,
            };
            let mut state = shared.lock();
            let State { children, .. } = &mut *state;
            let Some((id, child)) = children
                .iter_mut()
                .find(|(_, child)| child.probe.waiting.is_some_and(|(sent, _)| sent == probe))
            else {
                continue;
            };
            child.probe.waiting = None;
            let Some(health) = child.spec.health else {
                continue;
            };
            if answer.healthy {
                child.probe.failures = 0;
            } else if failed(&mut child.probe, health) {
                let why = answer.reason.unwrap_or_else(|| "unhealthy".into());
                unhealthy.push((id.clone(), why));
            }
        }
        for (id, why) in unhealthy {
            restarts::unhealthy(shared, &id, &why);
        }
    }
}

/// Counts one failed probe; true once `failures` have failed in a row (and starts the
/// count over).
fn failed(probe: &mut ProbeState, health: HealthCheck) -> bool {
    probe.failures += 1;
    if probe.failures >= health.failures {
        probe.failures = 0;
        return true;
    }
    false
}

/// When the next probe goes out or times out, for any agent.
pub(crate) fn next_due(state: &State) -> Option<Instant> {
    state
        .children
        .values()
        .filter(|child| matches!(child.phase, Phase::Running(_)))
        .filter_map(|child| {
            let health = child.spec.health?;
            match child.probe.waiting {
                Some((_, sent)) => Some(sent + timeout(health)),
                None => child.probe.next,
            }
        })
        .min()
}

fn interval(health: HealthCheck) -> Duration {
    supervision_ms(health.interval_ms)
}

fn timeout(health: HealthCheck) -> Duration {
    supervision_ms(health.timeout_ms)
}
