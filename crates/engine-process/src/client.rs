//! The agent process's side of the broker: a [`MessagingBackend`] that speaks frames
//! to the parent over the process's connection.
//!
//! Publishing buffers a frame; the buffer is sent when the agent runs out of queued
//! deliveries, when it fills, and at once for a publish made outside a handler (from a
//! start hook or a spawned task). Acknowledgements are batched the same way. A publish
//! the broker refuses comes back as an error from the next publish.

use std::collections::{HashMap, VecDeque};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crossbeam_channel::Sender;
use engine_core::{
    Capabilities, Delivery, Error, ErrorKind, HistoryQuery, Message, MessagingBackend, Notify,
    Outcome, Result, SubscribeRequest, Subscription,
};

use crate::protocol::{FrameError, FrameReader, FrameWriter, Reply, ToChild, ToParent, WireError};

/// The backend's name.
pub const NAME: &str = "broker";

/// Acknowledgements sent together at most.
const ACK_BATCH: usize = 256;

/// What the connection tells the agent's loop, besides deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Deliveries may be queued.
    Wake,
    /// Stop after the current message.
    Stop,
    /// The connection to the parent is gone.
    Disconnected(String),
}

/// The messaging backend of an agent process.
#[derive(Clone)]
pub struct BrokerClient {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for BrokerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerClient").finish_non_exhaustive()
    }
}

struct Shared {
    output: Mutex<Output>,
    inbox: Mutex<Inbox>,
    replies: Mutex<HashMap<u64, Sender<std::result::Result<Reply, WireError>>>>,
    next_request: AtomicU64,
    refused: Mutex<Option<Error>>,
    /// A delivery is handed out and not yet completed: a handler is running.
    in_handler: AtomicBool,
    connected: AtomicBool,
}

struct Output {
    frames: FrameWriter,
    acks: Vec<Outcome>,
}

impl Output {
    fn send_acks(&mut self) -> std::result::Result<(), FrameError> {
        if !self.acks.is_empty() {
            let acks = std::mem::take(&mut self.acks);
            self.frames.send(&ToParent::Acks(acks))?;
        }
        Ok(())
    }

    /// Sends everything buffered, acknowledgements last (they follow what the handlers
    /// published).
    fn flush(&mut self) -> std::result::Result<(), FrameError> {
        self.send_acks()?;
        self.frames.flush()
    }
}

#[derive(Default)]
struct Inbox {
    queue: VecDeque<Delivery>,
    /// Deliveries queued at the broker behind those received.
    backlog: u64,
    notify: Option<Arc<dyn Notify>>,
}

impl BrokerClient {
    /// A client writing to `stream`; the caller reads the stream and hands every frame
    /// that is not a control frame to [`receive`](Self::receive).
    pub fn new(stream: UnixStream) -> Self {
        Self {
            shared: Arc::new(Shared {
                output: Mutex::new(Output {
                    frames: FrameWriter::new(stream),
                    acks: Vec::new(),
                }),
                inbox: Mutex::new(Inbox::default()),
                replies: Mutex::new(HashMap::new()),
                next_request: AtomicU64::new(1),
                refused: Mutex::new(None),
                in_handler: AtomicBool::new(false),
                connected: AtomicBool::new(true),
            }),
        }
    }

    /// Sends one control frame at once.
    pub fn send_now(&self, frame: &ToParent) -> Result<()> {
        let mut output = self.shared.output();
        output
            .flush()
            .and_then(|()| output.frames.send_now(frame))
            .map_err(|e| e.into_error(NAME))
    }

    /// Sends everything buffered.
    pub fn flush(&self) -> Result<()> {
        self.shared.output().flush().map_err(|e| e.into_error(NAME))
    }

    /// Reads frames from the parent until the connection ends, passing deliveries and
    /// replies to their takers and everything else to `control`.
    pub fn read_loop(&self, reader: &mut FrameReader<UnixStream>, control: &Sender<Control>) {
        let ended = loop {
            match reader.read::<ToChild>() {
                Ok(Some(frame)) => {
                    if let Some(signal) = self.receive(frame) {
                        let _ = control.send(signal);
                    }
                }
                Ok(None) => break "the parent closed the connection".to_owned(),
                Err(error) => break format!("the connection to the parent failed: {error}"),
            }
        };
        self.shared.connected.store(false, Ordering::Release);
        // Dropping the senders fails every request still waiting.
        self.shared
            .replies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        let _ = control.send(Control::Disconnected(ended));
    }

    /// Takes one frame from the parent.
    fn receive(&self, frame: ToChild) -> Option<Control> {
        match frame {
            ToChild::Deliveries { batch, backlog } => {
                let mut inbox = self.shared.inbox();
                // Sent before the broker saw the agent detach, it has them back.
                inbox.notify.as_ref()?;
                inbox.queue.extend(batch.into_iter().map(|d| Delivery {
                    topic: d.topic,
                    message: d.message,
                }));
                inbox.backlog = backlog;
                if let Some(notify) = &inbox.notify {
                    notify.notify();
                }
                None
            }
            ToChild::Reply { request, result } => {
                let taker = self
                    .shared
                    .replies
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&request);
                if let Some(taker) = taker {
                    let _ = taker.send(result);
                }
                None
            }
            ToChild::PublishFailed { id, error } => {
                tracing::warn!(message = %id, error = %error.message, "the broker refused a publish");
                *self
                    .shared
                    .refused
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(error.into_error(NAME));
                None
            }
            ToChild::Stop => Some(Control::Stop),
            ToChild::Launch(_) => Some(Control::Disconnected(
                "the parent sent a second launch frame".to_owned(),
            )),
        }
    }

    /// Sends a request and waits for its reply.
    fn request(&self, make: impl FnOnce(u64) -> ToParent) -> Result<Reply> {
        let request = self.shared.next_request.fetch_add(1, Ordering::Relaxed);
        let (taker, reply) = crossbeam_channel::bounded(1);
        self.shared
            .replies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(request, taker);
        self.check_connected()?;
        self.send_now(&make(request))?;
        match reply.recv() {
            Ok(result) => result.map_err(|e| e.into_error(NAME)),
            Err(_) => Err(self.disconnected()),
        }
    }

    fn check_connected(&self) -> Result<()> {
        if self.shared.connected.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(self.disconnected())
        }
    }

    fn disconnected(&self) -> Error {
        Error::new(
            ErrorKind::Unavailable,
            NAME,
            "the connection to the engine is gone",
        )
    }
}

impl Shared {
    fn output(&self) -> MutexGuard<'_, Output> {
        self.output.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn inbox(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl MessagingBackend for BrokerClient {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        let mut capabilities = Capabilities::in_process();
        capabilities.cross_process = true;
        capabilities
    }

    fn publish(&self, message: Message) -> Result<()> {
        self.check_connected()?;
        if let Some(error) = self
            .shared
            .refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            return Err(error);
        }
        let mut output = self.shared.output();
        let frame = ToParent::Publish(message);
        let sent = if self.shared.in_handler.load(Ordering::Acquire) {
            output.frames.send(&frame)
        } else {
            output.frames.send(&frame).and_then(|()| output.flush())
        };
        sent.map_err(|e| e.into_error(NAME))
    }

    fn subscribe(
        &self,
        request: SubscribeRequest,
        notify: Arc<dyn Notify>,
    ) -> Result<Box<dyn Subscription>> {
        // Attached before asking: the broker may push deliveries before its reply.
        self.shared.inbox().notify = Some(notify);
        let reply = self.request(|request_id| ToParent::Subscribe {
            request: request_id,
            subscription: request,
        });
        match reply {
            Ok(Reply::Subscribed) => Ok(Box::new(RemoteSubscription {
                client: self.clone(),
                attached: true,
            })),
            other => {
                self.shared.inbox().notify = None;
                Err(other.err().unwrap_or_else(|| {
                    Error::new(
                        ErrorKind::Internal,
                        NAME,
                        "the broker answered a subscription with history",
                    )
                }))
            }
        }
    }

    fn history(&self, namespace: &str, query: &HistoryQuery) -> Result<Vec<Arc<Message>>> {
        match self.request(|request| ToParent::History {
            request,
            namespace: namespace.to_owned(),
            query: query.clone(),
        })? {
            Reply::History(messages) => Ok(messages),
            Reply::Subscribed => Err(Error::new(
                ErrorKind::Internal,
                NAME,
                "the broker answered a history query with a subscription",
            )),
        }
    }
}

/// The agent's subscription: deliveries the broker pushed, handed out one at a time.
struct RemoteSubscription {
    client: BrokerClient,
    attached: bool,
}

impl Subscription for RemoteSubscription {
    fn next(&mut self) -> Result<Option<Delivery>> {
        let shared = &self.client.shared;
        if let Some(delivery) = shared.inbox().queue.front() {
            shared.in_handler.store(true, Ordering::Release);
            return Ok(Some(delivery.clone()));
        }
        // Out of work: what the handlers published and acknowledged goes now.
        self.client.flush()?;
        Ok(None)
    }

    fn complete(&mut self, outcome: Outcome) -> Result<()> {
        let shared = &self.client.shared;
        if shared.inbox().queue.pop_front().is_none() {
            return Err(Error::new(
                ErrorKind::Conflict,
                NAME,
                "completed a delivery that was not handed out",
            ));
        }
        shared.in_handler.store(false, Ordering::Release);
        let mut output = shared.output();
        output.acks.push(outcome);
        if output.acks.len() >= ACK_BATCH {
            output.flush().map_err(|e| e.into_error(NAME))?;
        }
        Ok(())
    }

    fn pending(&self) -> usize {
        let inbox = self.client.shared.inbox();
        inbox.queue.len() + inbox.backlog as usize
    }

    fn close(mut self: Box<Self>) -> Result<()> {
        self.detach()
    }
}

impl RemoteSubscription {
    fn detach(&mut self) -> Result<()> {
        if !std::mem::take(&mut self.attached) {
            return Ok(());
        }
        let shared = &self.client.shared;
        {
            let mut inbox = shared.inbox();
            inbox.queue.clear();
            inbox.backlog = 0;
            inbox.notify = None;
        }
        shared.in_handler.store(false, Ordering::Release);
        if !shared.connected.load(Ordering::Acquire) {
            return Ok(());
        }
        // Acknowledgements go first, so the broker gives back only what was not handled.
        self.client.send_now(&ToParent::Unsubscribe)
    }
}

impl Drop for RemoteSubscription {
    fn drop(&mut self) {
        let _ = self.detach();
    }
}
