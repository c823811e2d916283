//! The agent process's side of the broker: a [`MessagingBackend`] that speaks frames
//! to the parent over the process's connection.
//!
//! No thread of its own reads the connection: whoever needs something from it (the
//! agent's loop waiting for work, a caller waiting for a reply) reads frames, one at a
//! time under a lock, and files each where it belongs (deliveries in the inbox, replies
//! by request number, a stop request as a flag). A message pushed by the parent is
//! therefore read by the very thread that handles it, with no hand-off between threads.
//!
//! Publishing buffers a frame; the buffer is sent when the agent runs out of queued
//! deliveries, when it fills, at most a millisecond after a handler of a busy agent
//! ends, and at once for a publish made outside a handler (from a start hook or a
//! spawned task). Acknowledgements are batched the same way. While the broker reports
//! the guild's backend down, `publish` fails in the call, as it would in the parent;
//! what was sent before the news arrived is the broker's to deliver.

use std::collections::{HashMap, VecDeque};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use engine_core::{
    Capabilities, Delivery, Error, HistoryQuery, Message, MessagingBackend, Notify, Outcome,
    Result, SubscribeRequest, Subscription,
};

use crate::error::ProcessError;
use crate::protocol::{FrameError, FrameReader, FrameWriter, Reply, ToChild, ToParent, WireError};

/// The backend's name.
pub(crate) const NAME: &str = "broker";

/// Acknowledgements sent together at most.
const ACK_BATCH: usize = 1024;

/// How often a busy agent sends what is buffered and looks for a stop request.
const STOP_CHECK: Duration = Duration::from_millis(1);

/// What the agent's loop is to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next {
    /// Deliveries are queued.
    Work,
    /// Stop after the current message.
    Stop,
    /// The connection to the parent is gone.
    Disconnected(String),
}

/// The messaging backend of an agent process.
#[derive(Clone)]
pub(crate) struct BrokerClient {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for BrokerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerClient").finish_non_exhaustive()
    }
}

struct Shared {
    /// The engine's messaging backend, which this client stands in for.
    messaging: String,
    output: Mutex<Output>,
    reader: Mutex<FrameReader<UnixStream>>,
    state: Mutex<State>,
    next_request: AtomicU64,
    /// A delivery is handed out and not yet completed: a handler is running.
    in_handler: AtomicBool,
    /// When the agent last looked for a stop request while busy.
    last_check: Mutex<Instant>,
}

struct Output {
    frames: FrameWriter,
    acks: Vec<Outcome>,
}

impl Output {
    /// Sends everything buffered, acknowledgements last (they follow what the handlers
    /// published).
    fn flush(&mut self) -> std::result::Result<(), FrameError> {
        if !self.acks.is_empty() {
            let acks = std::mem::take(&mut self.acks);
            self.frames.send(&ToParent::Acks(acks))?;
        }
        self.frames.flush()
    }
}

#[derive(Default)]
struct State {
    queue: VecDeque<Delivery>,
    /// Deliveries queued at the broker behind those received.
    backlog: u64,
    /// Set while subscribed.
    notify: Option<Arc<dyn Notify>>,
    replies: HashMap<u64, std::result::Result<Reply, WireError>>,
    stop: bool,
    /// Between a pause and a resume.
    paused: bool,
    /// Why the guild's backend refuses messages, while it does.
    outage: Option<WireError>,
    disconnected: Option<String>,
}

impl BrokerClient {
    /// A client writing to `stream` and reading frames through `reader` (the same
    /// connection, after its launch frame).
    /// A client over `stream` for an agent whose engine uses the messaging backend
    /// named `messaging`.
    pub(crate) fn new(
        stream: UnixStream,
        reader: FrameReader<UnixStream>,
        messaging: String,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                messaging,
                output: Mutex::new(Output {
                    frames: FrameWriter::new(stream),
                    acks: Vec::new(),
                }),
                reader: Mutex::new(reader),
                state: Mutex::new(State::default()),
                next_request: AtomicU64::new(1),
                in_handler: AtomicBool::new(false),
                last_check: Mutex::new(Instant::now()),
            }),
        }
    }

    /// Sends everything buffered, then `frame`, at once.
    pub(crate) fn send_now(&self, frame: &ToParent) -> Result<()> {
        let mut output = lock(&self.shared.output);
        output
            .flush()
            .and_then(|()| output.frames.send_now(frame))
            .map_err(|e| e.into_error(NAME))
    }

    /// Sends everything buffered.
    pub(crate) fn flush(&self) -> Result<()> {
        lock(&self.shared.output)
            .flush()
            .map_err(|e| e.into_error(NAME))
    }

    /// Waits until deliveries are queued, a stop is requested, or the connection ends.
    pub(crate) fn wait_for_work(&self) -> Next {
        self.read_until(|state| !state.queue.is_empty() || state.paused);
        self.after_wait()
    }

    /// What the agent does next, once a wait is over.
    fn after_wait(&self) -> Next {
        let state = lock(&self.shared.state);
        if let Some(why) = &state.disconnected {
            Next::Disconnected(why.clone())
        } else if state.stop {
            Next::Stop
        } else {
            Next::Work
        }
    }

    /// Whether the engine asked for a pause (looked at between messages).
    pub(crate) fn pause_requested(&self) -> bool {
        lock(&self.shared.state).paused
    }

    /// Waits, handling nothing, until the engine resumes the agent, stops it, or goes.
    pub(crate) fn wait_while_paused(&self) -> Next {
        self.read_until(|state| !state.paused);
        self.after_wait()
    }

    /// Whether a stop was requested; called between the messages of a busy agent. At
    /// most once a millisecond it also sends what is buffered (so a slow agent's
    /// acknowledgements and messages leave within about a millisecond of its handler)
    /// and looks at the connection without blocking.
    pub(crate) fn stop_requested(&self) -> bool {
        self.poll();
        let state = lock(&self.shared.state);
        state.stop || state.disconnected.is_some()
    }

    /// At most once a millisecond, sends what is buffered and files what has arrived,
    /// without blocking.
    fn poll(&self) {
        let mut last = lock(&self.shared.last_check);
        if last.elapsed() >= STOP_CHECK {
            *last = Instant::now();
            drop(last);
            if let Err(error) = self.flush() {
                tracing::debug!(%error, "sending to the engine failed");
            }
            self.read_available();
        }
    }

    /// Fails while the connection is gone or the broker reports an outage.
    fn check_publishable(&self) -> Result<()> {
        let state = lock(&self.shared.state);
        if state.disconnected.is_some() {
            return Err(disconnected());
        }
        match &state.outage {
            Some(outage) => Err(outage.clone().into_error(NAME)),
            None => Ok(()),
        }
    }

    /// Reads frames until `done` holds (or a stop or disconnection, which end every
    /// wait). Whoever holds the reader files every frame it reads, so a waiter checks
    /// `done` again each time it gets the reader.
    fn read_until(&self, done: impl Fn(&State) -> bool) {
        loop {
            let finished =
                |state: &State| done(state) || state.stop || state.disconnected.is_some();
            if finished(&lock(&self.shared.state)) {
                return;
            }
            let mut reader = lock(&self.shared.reader);
            if finished(&lock(&self.shared.state)) {
                return;
            }
            let frame = reader.read::<ToChild>();
            drop(reader);
            self.file(frame);
        }
    }

    /// Reads whatever frames have arrived, without blocking for more. When another
    /// thread holds the reader (the agent's, waiting for work, while a timer publishes)
    /// it files whatever arrives, so this returns at once rather than wait for it.
    fn read_available(&self) {
        let mut reader = match self.shared.reader.try_lock() {
            Ok(reader) => reader,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        loop {
            if !reader.has_buffered() && !readable(reader.get_ref()) {
                return;
            }
            let frame = reader.read::<ToChild>();
            let ended = !matches!(frame, Ok(Some(_)));
            self.file(frame);
            if ended {
                return;
            }
        }
    }

    /// Files one frame (or the end of the connection) where it belongs.
    fn file(&self, frame: std::result::Result<Option<ToChild>, FrameError>) {
        let mut state = lock(&self.shared.state);
        match frame {
            Ok(Some(ToChild::Deliveries { batch, backlog })) => {
                // Without a subscription the batch was sent before the broker saw the
                // agent detach; the broker has it back.
                let Some(notify) = state.notify.clone() else {
                    return;
                };
                state.queue.extend(batch.into_iter().map(|d| Delivery {
                    topic: d.topic,
                    message: d.message,
                }));
                state.backlog = backlog;
                notify.notify();
            }
            Ok(Some(ToChild::Reply { request, result })) => {
                state.replies.insert(request, result);
            }
            Ok(Some(ToChild::Outage(outage))) => state.outage = outage,
            Ok(Some(ToChild::Stop)) => state.stop = true,
            Ok(Some(ToChild::Pause)) => state.paused = true,
            Ok(Some(ToChild::Resume)) => state.paused = false,
            Ok(Some(ToChild::Launch(_))) => {
                state.disconnected = Some("the engine sent a second launch frame".into());
            }
            Ok(None) => state.disconnected = Some("the engine closed the connection".into()),
            Err(error) => {
                state.disconnected = Some(format!("the connection to the engine failed: {error}"));
            }
        }
    }

    /// Sends a request and waits for its reply.
    fn request(&self, make: impl FnOnce(u64) -> ToParent) -> Result<Reply> {
        let request = self.shared.next_request.fetch_add(1, Ordering::Relaxed);
        self.check_connected()?;
        self.send_now(&make(request))?;
        self.read_reply(request)
    }

    /// Reads frames until the reply to `request` (or the end of the connection).
    fn read_reply(&self, request: u64) -> Result<Reply> {
        loop {
            {
                let mut state = lock(&self.shared.state);
                if let Some(result) = state.replies.remove(&request) {
                    return result.map_err(|e| e.into_error(NAME));
                }
                if state.disconnected.is_some() {
                    return Err(disconnected());
                }
            }
            let mut reader = lock(&self.shared.reader);
            if lock(&self.shared.state).replies.contains_key(&request) {
                continue;
            }
            let frame = reader.read::<ToChild>();
            drop(reader);
            self.file(frame);
        }
    }

    fn check_connected(&self) -> Result<()> {
        if lock(&self.shared.state).disconnected.is_some() {
            Err(disconnected())
        } else {
            Ok(())
        }
    }
}

fn disconnected() -> Error {
    ProcessError::Disconnected.into()
}

/// Whether `socket` has bytes to read now.
fn readable(socket: &UnixStream) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MessagingBackend for BrokerClient {
    /// The name of the backend behind the broker, which is where messages really go.
    fn name(&self) -> &str {
        &self.shared.messaging
    }

    fn capabilities(&self) -> Capabilities {
        let mut capabilities = Capabilities::in_process();
        capabilities.cross_process = true;
        capabilities
    }

    fn publish(&self, message: Message) -> Result<()> {
        if message.topics.is_empty() {
            return Err(ProcessError::NoTopic { id: message.id }.into());
        }
        // News of an outage, or of its end, is read here too: a handler that publishes
        // in a loop hears of it within a millisecond, and one that retries hears when
        // it is over.
        self.poll();
        if self.check_publishable().is_err() {
            self.read_available();
            self.check_publishable()?;
        }
        let mut output = lock(&self.shared.output);
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
        // Subscribed before asking: the broker may push deliveries before its reply.
        lock(&self.shared.state).notify = Some(notify);
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
                lock(&self.shared.state).notify = None;
                Err(other.err().unwrap_or_else(|| {
                    ProcessError::BrokerConfused("the broker answered a subscription with history")
                        .into()
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
            Reply::Subscribed => Err(ProcessError::BrokerConfused(
                "the broker answered a history query with a subscription",
            )
            .into()),
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
        if let Some(delivery) = lock(&shared.state).queue.front() {
            shared.in_handler.store(true, Ordering::Release);
            return Ok(Some(delivery.clone()));
        }
        // Out of work: what the handlers published and acknowledged goes now.
        self.client.flush()?;
        Ok(None)
    }

    fn complete(&mut self, outcome: Outcome) -> Result<()> {
        let shared = &self.client.shared;
        if lock(&shared.state).queue.pop_front().is_none() {
            return Err(ProcessError::NotHanded.into());
        }
        shared.in_handler.store(false, Ordering::Release);
        let mut output = lock(&shared.output);
        output.acks.push(outcome);
        if output.acks.len() >= ACK_BATCH {
            output.flush().map_err(|e| e.into_error(NAME))?;
        }
        Ok(())
    }

    fn pending(&self) -> usize {
        let state = lock(&self.client.shared.state);
        state.queue.len() + state.backlog as usize
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
        let connected = {
            let mut state = lock(&shared.state);
            state.queue.clear();
            state.backlog = 0;
            state.notify = None;
            state.disconnected.is_none()
        };
        shared.in_handler.store(false, Ordering::Release);
        if !connected {
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
