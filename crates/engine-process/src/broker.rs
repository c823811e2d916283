//! The embedded broker: the parent's end of one agent process's connection, serving
//! its messaging frames from the guild's own backend (the in-memory bus, by default),
//! so an agent in another process gets the whole delivery contract without Redis.
//!
//! Deliveries are pushed, not polled: a pump thread works ahead on the agent's
//! subscription ([`Subscription::next_ahead`]) up to [`WINDOW`] deliveries and sends
//! them in batches; the agent acknowledges them in batches, oldest first, and the
//! broker completes them on the backend in the same order. What was pushed and never
//! acknowledged is handed out again when the agent subscribes again, by the backend's
//! own promise. The broker checks that an agent publishes and subscribes only as
//! itself and only in its own guild.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crossbeam_channel::Receiver;
use engine_core::{
    AgentCell, Error, ErrorKind, MessagingBackend, Notify, Outcome, Result, SubscribeRequest,
    Subscription,
};

use crate::doorbell::Doorbell;
use crate::protocol::{FrameWriter, Reply, ToChild, ToParent, WireDelivery, WireError};

/// How many deliveries the broker sends ahead of the agent's acknowledgements.
pub const WINDOW: usize = 4096;

/// How many deliveries go in one frame at most.
const BATCH: usize = 1024;

const COMPONENT: &str = "broker";

/// The broker's side of one agent process's connection.
pub struct Session {
    messaging: Arc<dyn MessagingBackend>,
    namespace: String,
    agent_id: String,
    cell: Arc<AgentCell>,
    writer: Arc<Mutex<FrameWriter>>,
    state: Mutex<State>,
    wake: Arc<Doorbell<()>>,
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
    /// Deliveries sent and not yet acknowledged.
    in_flight: usize,
    closed: bool,
}

impl Session {
    /// A session for agent `agent_id` of guild `namespace`, writing to the agent through
    /// `writer`; run [`pump`](Self::pump) with the returned receiver on a thread of its
    /// own, and hand every frame the agent sends to [`handle`](Self::handle).
    pub fn new(
        messaging: Arc<dyn MessagingBackend>,
        namespace: &str,
        agent_id: &str,
        cell: Arc<AgentCell>,
        writer: Arc<Mutex<FrameWriter>>,
    ) -> (Arc<Self>, Receiver<()>) {
        let (signal, signals) = crossbeam_channel::unbounded();
        let session = Arc::new(Self {
            messaging,
            namespace: namespace.to_owned(),
            agent_id: agent_id.to_owned(),
            cell,
            writer,
            state: Mutex::new(State::default()),
            wake: Arc::new(Doorbell::new(signal, ())),
        });
        (session, signals)
    }

    /// Sends deliveries whenever there are some and the window has room, until the
    /// session is closed or the connection fails.
    pub fn pump(&self, signals: &Receiver<()>) {
        while signals.recv().is_ok() {
            self.wake.answered();
            if let Err(error) = self.push() {
                tracing::debug!(agent = %self.agent_id, %error, "the broker stops sending deliveries");
                return;
            }
            if self.lock().closed {
                return;
            }
        }
    }

    /// Serves one messaging frame from the agent. An error means the agent broke the
    /// protocol and its connection must be closed.
    pub fn handle(&self, frame: ToParent) -> Result<()> {
        match frame {
            ToParent::Publish(message) => {
                let id = message.id;
                let refused =
                    if message.namespace != self.namespace || message.sender != self.agent_id {
                        Some(Error::new(
                            ErrorKind::Conflict,
                            COMPONENT,
                            format!(
                                "agent {:?} may publish only as itself in guild {:?}",
                                self.agent_id, self.namespace
                            ),
                        ))
                    } else {
                        self.messaging.publish(message).err()
                    };
                match refused {
                    None => self.cell.count_out(),
                    Some(error) => {
                        tracing::warn!(agent = %self.agent_id, %error, "a publish was refused");
                        let error = WireError::from(&error);
                        self.send(&ToChild::PublishFailed { id, error })?;
                    }
                }
            }
            ToParent::Subscribe {
                request,
                subscription,
            } => {
                let result = self.subscribe(subscription);
                let result = result
                    .map(|()| Reply::Subscribed)
                    .map_err(|e| WireError::from(&e));
                self.send(&ToChild::Reply { request, result })?;
                self.wake.notify();
            }
            ToParent::Acks(outcomes) => self.acknowledge(outcomes)?,
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
                self.send(&ToChild::Reply { request, result })?;
            }
            ToParent::Unsubscribe => self.detach(),
            other => {
                return Err(Error::new(
                    ErrorKind::Codec,
                    COMPONENT,
                    format!("unexpected frame {other:?} on a running agent's connection"),
                ));
            }
        }
        Ok(())
    }

    /// Detaches the subscription (what was sent and not acknowledged goes back to the
    /// backend) and stops the pump.
    pub fn close(&self) {
        self.lock().closed = true;
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
            return Err(Error::new(
                ErrorKind::Conflict,
                COMPONENT,
                format!(
                    "agent {:?} may subscribe only as itself, not as {:?}",
                    self.agent_id, request.client_id
                ),
            ));
        }
        let mut state = self.lock();
        if state.subscription.is_some() {
            return Err(Error::new(
                ErrorKind::Conflict,
                COMPONENT,
                format!("agent {:?} is subscribed already", self.agent_id),
            ));
        }
        let notify: Arc<dyn Notify> = self.wake.clone();
        state.subscription = Some(self.messaging.subscribe(request, notify)?);
        state.in_flight = 0;
        Ok(())
    }

    fn acknowledge(&self, outcomes: Vec<Outcome>) -> Result<()> {
        let mut guard = self.lock();
        let state = &mut *guard;
        if outcomes.len() > state.in_flight {
            return Err(Error::new(
                ErrorKind::Codec,
                COMPONENT,
                format!(
                    "agent {:?} acknowledged {} deliveries with {} in flight",
                    self.agent_id,
                    outcomes.len(),
                    state.in_flight
                ),
            ));
        }
        let Some(subscription) = state.subscription.as_mut() else {
            return Err(Error::new(
                ErrorKind::Codec,
                COMPONENT,
                format!(
                    "agent {:?} acknowledged without a subscription",
                    self.agent_id
                ),
            ));
        };
        for outcome in outcomes {
            let failed = outcome != Outcome::Handled;
            subscription.complete(outcome)?;
            state.in_flight -= 1;
            self.cell.begin_handling();
            self.cell.end_handling(failed, subscription.pending());
        }
        self.cell.set_busy(state.in_flight > 0);
        drop(guard);
        self.wake.notify();
        Ok(())
    }

    /// Sends what the window has room for, batch by batch.
    fn push(&self) -> Result<()> {
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
            self.send(&ToChild::Deliveries { batch, backlog })?;
        }
    }

    fn detach(&self) {
        let subscription = {
            let mut state = self.lock();
            state.in_flight = 0;
            state.subscription.take()
        };
        if let Some(subscription) = subscription
            && let Err(error) = subscription.close()
        {
            tracing::warn!(agent = %self.agent_id, %error, "detaching the subscription failed");
        }
    }

    fn send(&self, frame: &ToChild) -> Result<()> {
        self.writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send_now(frame)
            .map_err(|e| e.into_error(COMPONENT))
    }

    fn foreign(&self, namespace: &str) -> Error {
        Error::new(
            ErrorKind::Conflict,
            COMPONENT,
            format!(
                "agent {:?} of guild {:?} may not use guild {namespace:?}",
                self.agent_id, self.namespace
            ),
        )
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
