//! The embedded broker: the parent's end of one agent process's connection, serving
//! its messaging frames from the guild's own backend (the in-memory bus, by default),
//! so an agent in another process gets the whole delivery contract without Redis.
//!
//! Deliveries are pushed, not polled: the connection's writer thread ([`Session::pump`])
//! works ahead on the agent's subscription ([`Subscription::next_ahead`]) up to
//! [`WINDOW`] deliveries and sends them in batches; the agent acknowledges them in
//! batches, oldest first, and the broker completes them on the backend in the same
//! order. What was pushed and never acknowledged is handed out again when the agent
//! subscribes again, by the backend's own promise. The broker checks that an agent
//! publishes and subscribes only as itself and only in its own guild.
//!
//! Two threads serve a connection and neither ever waits for the other across a
//! socket operation. The watcher reads the agent's frames and never writes: whatever it
//! has to say (a reply, an outage notice) goes on the writer's channel. The writer is
//! the only thread that writes to the socket. So an agent blocked writing to us is
//! always read, and a full socket towards the agent delays only the writer.
//!
//! A publish or acknowledgement the backend refuses for a while (Redis is down) is
//! held, in order with what follows it, and retried by the writer until the backend
//! takes it: the agent's call to `publish` succeeded, so the broker owes it the
//! message, as the Redis backend's own outbox does. The agent is told of the outage at
//! once, and its later publishes fail in the calling handler until it ends, exactly as
//! they would on the threads engine.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use engine_core::{
    AgentCell, Doorbell, Error, Message, MessagingBackend, Notify, Outcome, Result,
    SubscribeRequest, Subscription,
};

use crate::error::{BROKER, ProcessError};
use crate::protocol::{FrameWriter, Reply, ToChild, ToParent, WireDelivery, WireError};

/// How many deliveries the broker sends ahead of the agent's acknowledgements.
pub(crate) const WINDOW: usize = 4096;

/// How many deliveries go in one frame at most.
const BATCH: usize = 1024;

/// How many refused publishes and acknowledgements are held before the broker stops
/// reading the agent (which then waits in its writes).
const HELD_LIMIT: usize = 65_536;

/// The first and the longest wait between retries of what the backend refused.
const RETRY_FIRST: Duration = Duration::from_millis(20);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// How often an outage that goes on is reported.
const OUTAGE_REPORT: Duration = Duration::from_secs(5);

/// What the connection's writer thread is asked to do.
#[derive(Debug, Clone)]
pub(crate) enum Out {
    /// Look for deliveries to send.
    Wake,
    /// Send this frame.
    Frame(ToChild),
}

/// The broker's side of one agent process's connection.
pub(crate) struct Session {
    messaging: Arc<dyn MessagingBackend>,
    namespace: String,
    agent_id: String,
    cell: Arc<AgentCell>,
    out: Sender<Out>,
    state: Mutex<State>,
    /// Signalled when held items are taken, for a watcher waiting for room.
    room: Condvar,
    wake: Arc<Doorbell>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("namespace", &self.namespace)
            .field("agent_id", &self.agent_id)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    subscription: Option<Box<dyn Subscription>>,
    /// Deliveries sent and not yet completed on the backend.
    in_flight: usize,
    /// What the backend refused for now, oldest first; nothing passes it.
    held: VecDeque<Held>,
    /// Acknowledgements among `held`.
    held_acks: usize,
    outage: Option<Outage>,
    closed: bool,
}

/// A publish or an acknowledgement the backend has yet to take.
enum Held {
    Publish(Message),
    Ack(Outcome),
}

/// The backend refuses what the agent sends, since `since`.
struct Outage {
    since: Instant,
    reported: Instant,
    why: String,
}

impl Session {
    /// A session for agent `agent_id` of guild `namespace`, whose frames to the agent
    /// go through `out`: run [`pump`](Self::pump) with the channel's receiver on a
    /// thread of its own, and hand every frame the agent sends to
    /// [`handle`](Self::handle).
    pub(crate) fn new(
        messaging: Arc<dyn MessagingBackend>,
        namespace: &str,
        agent_id: &str,
        cell: Arc<AgentCell>,
        out: Sender<Out>,
    ) -> Arc<Self> {
        Arc::new(Self {
            messaging,
            namespace: namespace.to_owned(),
            agent_id: agent_id.to_owned(),
            cell,
            wake: Arc::new({
                let out = out.clone();
                Doorbell::new(move || {
                    let _ = out.send(Out::Wake);
                })
            }),
            out,
            state: Mutex::new(State::default()),
            room: Condvar::new(),
        })
    }

    /// The connection's writer: sends deliveries whenever there are some and the
    /// window has room, the frames others queued, and retries what the backend refused,
    /// until the session is closed or the connection fails.
    pub(crate) fn pump(&self, mut writer: FrameWriter, outgoing: &Receiver<Out>) {
        let mut retry = RETRY_FIRST;
        let mut next_retry = Instant::now();
        loop {
            let holding = !self.lock().held.is_empty();
            let next = if holding {
                outgoing.recv_deadline(next_retry)
            } else {
                outgoing.recv().map_err(|_| RecvTimeoutError::Disconnected)
            };
            let mut written = match next {
                Ok(first) => std::iter::once(first)
                    .chain(outgoing.try_iter())
                    .try_for_each(|out| self.write(&mut writer, out)),
                Err(RecvTimeoutError::Timeout) => Ok(()),
                Err(RecvTimeoutError::Disconnected) => return,
            };
            // Retried on time even while the channel is busy.
            if holding && written.is_ok() && Instant::now() >= next_retry {
                retry = if self.retry_held() {
                    RETRY_FIRST
                } else {
                    (retry * 2).min(RETRY_MAX)
                };
                next_retry = Instant::now() + retry;
                // Acknowledgements taken make room in the window.
                written = self.push(&mut writer);
            }
            let flushed = written.and_then(|()| writer.flush().map_err(|e| e.into_error(BROKER)));
            if let Err(error) = flushed {
                tracing::debug!(agent = %self.agent_id, %error, "the broker stops writing to the agent");
                return;
            }
            if self.lock().closed {
                return;
            }
        }
    }

    /// Serves one messaging frame from the agent. An error means the agent broke the
    /// protocol and its connection must be closed.
    pub(crate) fn handle(&self, frame: ToParent) -> Result<()> {
        match frame {
            ToParent::Publish(message) => {
                if *message.namespace != *self.namespace || *message.sender != *self.agent_id {
                    return Err(ProcessError::Impersonation {
                        agent: self.agent_id.clone(),
                        namespace: self.namespace.clone(),
                    }
                    .into());
                }
                self.offer([Held::Publish(message)])?;
            }
            ToParent::Subscribe {
                request,
                subscription,
            } => {
                let result = self.subscribe(subscription);
                let result = result
                    .map(|()| Reply::Subscribed)
                    .map_err(|e| WireError::from(&e));
                self.send(ToChild::Reply { request, result });
                self.wake.notify();
            }
            ToParent::Acks(outcomes) => {
                {
                    let state = self.lock();
                    let unacknowledged = state.in_flight - state.held_acks;
                    if outcomes.len() > unacknowledged {
                        return Err(ProcessError::AckMismatch {
                            agent: self.agent_id.clone(),
                            acked: outcomes.len(),
                            in_flight: unacknowledged,
                        }
                        .into());
                    }
                    if state.subscription.is_none() {
                        return Err(ProcessError::AckUnsubscribed {
                            agent: self.agent_id.clone(),
                        }
                        .into());
                    }
                }
                self.offer(outcomes.into_iter().map(Held::Ack))?;
                self.wake.notify();
            }
            ToParent::History {
                request,
                namespace,
                query,
            } => {
                let result = if namespace == self.namespace {
                    self.messaging.history(&namespace, &query)
                } else {
                    Err(self.foreign(&namespace))
                };
                let result = result.map(Reply::History).map_err(|e| WireError::from(&e));
                self.send(ToChild::Reply { request, result });
            }
            ToParent::Unsubscribe => self.detach(),
            other => {
                return Err(ProcessError::UnexpectedFrame {
                    frame: format!("{other:?}"),
                }
                .into());
            }
        }
        Ok(())
    }

    /// Queues `frame` for the writer; never waits.
    pub(crate) fn send(&self, frame: ToChild) {
        // The writer is gone only once the connection failed, which the watcher sees.
        let _ = self.out.send(Out::Frame(frame));
    }

    /// Gives what is held one last try, detaches the subscription (what was sent and
    /// not acknowledged goes back to the backend) and stops the writer.
    pub(crate) fn close(&self) {
        let lost = {
            let mut state = self.lock();
            state.closed = true;
            self.drain_held(&mut state);
            // Held acknowledgements are not lost: those deliveries are handed out again.
            let lost = state.held.len() - state.held_acks;
            state.held.clear();
            state.held_acks = 0;
            self.room.notify_all();
            if lost > 0 {
                state.outage.take().map(|outage| (lost, outage))
            } else {
                None
            }
        };
        if let Some((lost, outage)) = lost {
            tracing::error!(
                agent = %self.agent_id,
                lost,
                outage = ?outage.since.elapsed(),
                why = %outage.why,
                "the agent ended while the messaging backend was refusing its messages: \
                 its unsent publishes are lost and its unacknowledged deliveries will be \
                 handed out again"
            );
        }
        self.detach();
        // What is queued stays with the backend for the agent's client id; none of it
        // is this process's any more.
        self.cell.set_busy(false);
        self.cell.set_queued(0);
        self.wake.ring_always();
    }

    fn subscribe(&self, request: SubscribeRequest) -> Result<()> {
        if request.namespace != self.namespace {
            return Err(self.foreign(&request.namespace));
        }
        if request.client_id != self.agent_id {
            return Err(ProcessError::SubscribeAs {
                agent: self.agent_id.clone(),
                client: request.client_id,
            }
            .into());
        }
        let mut state = self.lock();
        if state.subscription.is_some() {
            return Err(ProcessError::Subscribed {
                agent: self.agent_id.clone(),
            }
            .into());
        }
        let notify: Arc<dyn Notify> = self.wake.clone();
        state.subscription = Some(self.messaging.subscribe(request, notify)?);
        state.in_flight = 0;
        Ok(())
    }

    /// Hands `items` to the backend in order, or holds them behind what is held
    /// already, under one lock. Waits for room while too much is held, so an agent that
    /// goes on publishing into an outage is slowed down by its own socket rather than
    /// grow our memory.
    fn offer(&self, items: impl IntoIterator<Item = Held>) -> Result<()> {
        let mut state = self.lock();
        for item in items {
            while state.held.len() >= HELD_LIMIT && !state.closed {
                state = self
                    .room
                    .wait_timeout(state, RETRY_MAX)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            if state.held.is_empty() {
                match self.apply(&mut state, &item) {
                    Ok(()) => continue,
                    Err(error) if error.is_retryable() => {
                        tracing::warn!(
                            agent = %self.agent_id,
                            %error,
                            "the messaging backend refuses the agent's messages; holding them and retrying"
                        );
                        let now = Instant::now();
                        state.outage = Some(Outage {
                            since: now,
                            reported: now,
                            why: error.to_string(),
                        });
                        self.send(ToChild::Outage(Some(WireError::from(&error))));
                    }
                    Err(error) => {
                        self.refused(item, error)?;
                        continue;
                    }
                }
            }
            if matches!(item, Held::Ack(_)) {
                state.held_acks += 1;
            }
            state.held.push_back(item);
        }
        self.cell.set_busy(state.in_flight > 0);
        Ok(())
    }

    /// A refusal that retrying will not mend: a publish is reported and dropped, an
    /// acknowledgement the backend rejects breaks the protocol.
    fn refused(&self, item: Held, error: Error) -> Result<()> {
        match item {
            Held::Publish(message) => {
                tracing::error!(
                    agent = %self.agent_id,
                    message = %message.id,
                    %error,
                    "the messaging backend refused a publish for good; it is dropped"
                );
                Ok(())
            }
            Held::Ack(_) => Err(error),
        }
    }

    /// The writer's retry of what is held: whether nothing is held any more. When that
    /// ends an outage, the agent is told.
    fn retry_held(&self) -> bool {
        let mut state = self.lock();
        self.drain_held(&mut state);
        self.room.notify_all();
        if !state.held.is_empty() {
            let waiting = state.held.len();
            if let Some(outage) = state.outage.as_mut()
                && outage.reported.elapsed() >= OUTAGE_REPORT
            {
                outage.reported = Instant::now();
                tracing::warn!(
                    agent = %self.agent_id,
                    outage = ?outage.since.elapsed(),
                    waiting,
                    why = %outage.why,
                    "the messaging backend is still refusing the agent's messages"
                );
            }
            return false;
        }
        if let Some(outage) = state.outage.take() {
            tracing::info!(
                agent = %self.agent_id,
                outage = ?outage.since.elapsed(),
                "the messaging backend takes the agent's messages again"
            );
            self.send(ToChild::Outage(None));
        }
        true
    }

    /// Hands the backend what is held, oldest first, until it refuses one.
    fn drain_held(&self, state: &mut State) {
        while let Some(item) = state.held.pop_front() {
            match self.apply(state, &item) {
                Ok(()) => {
                    if matches!(item, Held::Ack(_)) {
                        state.held_acks -= 1;
                    }
                }
                Err(error) if error.is_retryable() => {
                    if let Some(outage) = state.outage.as_mut() {
                        outage.why = error.to_string();
                    }
                    state.held.push_front(item);
                    return;
                }
                Err(error) => {
                    if matches!(item, Held::Ack(_)) {
                        state.held_acks -= 1;
                    }
                    if let Err(error) = self.refused(item, error) {
                        tracing::error!(agent = %self.agent_id, %error, "an acknowledgement was refused");
                    }
                }
            }
        }
    }

    /// Hands one publish or acknowledgement to the backend.
    fn apply(&self, state: &mut State, item: &Held) -> Result<()> {
        match item {
            Held::Publish(message) => {
                self.messaging.publish(message.clone())?;
                self.cell.count_out();
            }
            Held::Ack(outcome) => {
                let Some(subscription) = state.subscription.as_mut() else {
                    // Detached: the backend hands the delivery out again.
                    return Ok(());
                };
                let failed = *outcome != Outcome::Handled;
                subscription.complete(outcome.clone())?;
                state.in_flight -= 1;
                self.cell.begin_handling();
                self.cell.end_handling(failed, subscription.pending());
            }
        }
        Ok(())
    }

    /// Sends one thing the writer was asked for.
    fn write(&self, writer: &mut FrameWriter, out: Out) -> Result<()> {
        match out {
            Out::Wake => {
                self.wake.answered();
                self.push(writer)
            }
            Out::Frame(frame) => writer.send(&frame).map_err(|e| e.into_error(BROKER)),
        }
    }

    /// Sends what the window has room for, batch by batch.
    fn push(&self, writer: &mut FrameWriter) -> Result<()> {
        loop {
            let (batch, backlog) = {
                let mut state = self.lock();
                let state = &mut *state;
                let Some(subscription) = state.subscription.as_mut() else {
                    return Ok(());
                };
                let room = WINDOW.saturating_sub(state.in_flight).min(BATCH);
                let mut batch = Vec::with_capacity(room.min(16));
                while batch.len() < room {
                    let delivery = if state.in_flight == 0 {
                        subscription.next()?
                    } else {
                        subscription.next_ahead()?
                    };
                    let Some(delivery) = delivery else { break };
                    state.in_flight += 1;
                    batch.push(WireDelivery {
                        topic: delivery.topic,
                        message: delivery.message,
                    });
                }
                let pending = subscription.pending();
                self.cell.set_queued(pending);
                self.cell.set_busy(state.in_flight > 0);
                (batch, (pending - state.in_flight.min(pending)) as u64)
            };
            if batch.is_empty() {
                return Ok(());
            }
            writer
                .send(&ToChild::Deliveries { batch, backlog })
                .map_err(|e| e.into_error(BROKER))?;
        }
    }

    fn detach(&self) {
        let subscription = {
            let mut state = self.lock();
            state.in_flight = 0;
            // Held acknowledgements are for deliveries the backend now hands out again.
            state.held.retain(|item| matches!(item, Held::Publish(_)));
            state.held_acks = 0;
            state.subscription.take()
        };
        if let Some(subscription) = subscription
            && let Err(error) = subscription.close()
        {
            tracing::warn!(agent = %self.agent_id, %error, "detaching the subscription failed");
        }
    }

    fn foreign(&self, namespace: &str) -> Error {
        ProcessError::ForeignGuild {
            agent: self.agent_id.clone(),
            namespace: self.namespace.clone(),
            asked: namespace.to_owned(),
        }
        .into()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
