//! The messaging backend contract: publish, subscribe, history, and the delivery
//! promises every backend keeps.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{IdGenerator, Message, MessageId, Priority, QueueLimit, Result};

/// The reserved topic, in every namespace, where dead letters (failed deliveries) and
/// agent errors are published as [`DeadLetter`] payloads (read them with
/// [`DeadLetter::from_message`]).
pub const ERROR_TOPIC: &str = "guild.errors";

/// A messaging backend: the bus agents of a guild talk over.
///
/// # The delivery contract
///
/// Every backend keeps these promises; `crates/conformance` proves them, one test each:
///
/// 1. **One at a time, in order.** A client's [`Subscription`] hands out one message at a
///    time, across all of its topics; the next is available only after the previous one
///    is [completed](Subscription::complete). What is queued comes out in [`MessageId`]
///    order (priority first, then time).
/// 2. **Replay and resume.** A new client receives what is published after it subscribes,
///    plus the retained history of its topics when it asks for it with
///    [`StartFrom::Earliest`]. Subscribing again with the same client id resumes after the
///    last completed message: nothing completed is delivered again, nothing published
///    while the client was away is lost (within the backend's retention), and a message
///    handed out but never completed is handed out again.
/// 3. **Dead letters.** A delivery completed with [`Outcome::Failed`] is published to
///    [`ERROR_TOPIC`] as a [`DeadLetter`] naming the client, the topic, the original
///    message, and the failure; the position advances past it. A failure while handling
///    a dead letter is logged, never dead-lettered again.
/// 4. **Isolation.** Namespaces (guilds) never see each other's messages; a sender never
///    receives its own message; a message published to several topics is delivered once
///    per topic to each subscriber of that topic.
/// 5. **History.** All retained messages of a topic in publish order; those after a given
///    id *by time* (so a newer message of higher priority is not skipped); and messages
///    by id, in the order asked.
/// 6. **No collateral damage.** Nothing one client or one backend instance does (closing,
///    dropping, re-subscribing) removes another's messages, positions or history.
///
/// Backends declare what they support in [`Capabilities`] rather than failing at run time.
pub trait MessagingBackend: Send + Sync + 'static {
    /// The backend's name, such as `"memory"` or `"redis"`.
    fn name(&self) -> &str;

    /// What this backend supports.
    fn capabilities(&self) -> Capabilities;

    /// Why the backend cannot reach what it depends on right now (a server, say), for
    /// how long, and what waits: one line for a person, or `None` while it works.
    fn unavailable(&self) -> Option<String> {
        None
    }

    /// Publishes `message` to each of its topics in its namespace.
    fn publish(&self, message: Message) -> Result<()>;

    /// Subscribes a client to topics. `notify` is called, from any thread, whenever
    /// something is queued for the client; the consumer then drains the subscription with
    /// [`Subscription::next`].
    fn subscribe(
        &self,
        request: SubscribeRequest,
        notify: Arc<dyn Notify>,
    ) -> Result<Box<dyn Subscription>>;

    /// Answers a history query within one namespace.
    fn history(&self, namespace: &str, query: &HistoryQuery) -> Result<Vec<Arc<Message>>>;
}

/// A wake-up call from a backend to the consumer of a subscription.
///
/// Backends call it on the publishing thread, possibly with their own locks held, once
/// per queued delivery: it must be cheap, must not block, and must not call back into
/// the backend. (An engine typically sets a flag and wakes its consumer.)
pub trait Notify: Send + Sync {
    /// Something may be ready to hand out.
    fn notify(&self);
}

/// A [`Notify`] that does nothing, for consumers that poll (the sync engine).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoNotify;

impl Notify for NoNotify {
    fn notify(&self) {}
}

/// Who subscribes to what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeRequest {
    /// The guild namespace.
    pub namespace: String,
    /// The client id; positions are kept per client id.
    pub client_id: String,
    /// The topics to receive.
    pub topics: Vec<String>,
    /// Where a client that has never subscribed before starts.
    pub start: StartFrom,
    /// The client's queue limit; the backend's default when `None`. A backend whose
    /// capabilities say it cannot bound queues per client refuses `Some`.
    #[serde(default)]
    pub limit: Option<QueueLimit>,
}

/// Where a new client's subscription starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// Only messages published after subscribing.
    #[default]
    Latest,
    /// The retained history of its topics first, then everything after.
    Earliest,
}

/// One message handed to a client, with the topic it arrived on.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The topic the message was delivered on.
    pub topic: Arc<str>,
    /// The message, shared (never copied) between subscribers.
    pub message: Arc<Message>,
}

/// How handling a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Handled; the position advances.
    Handled,
    /// Failed; the message is dead-lettered and the position advances.
    Failed(Failure),
}

/// Why a handler failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// `"error"` for a returned error, `"panic"` for a panic.
    pub kind: String,
    /// The error or panic text.
    pub text: String,
}

/// The payload published to [`ERROR_TOPIC`] for a failed delivery: a
/// `guild.v1.DeadLetter` in protocol buffers (format
/// [`DEAD_LETTER_FORMAT`](crate::wire::DEAD_LETTER_FORMAT)), which programs in any
/// language can read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The client whose handler failed.
    pub client: String,
    /// The topic the message was delivered on.
    pub topic: String,
    /// The message that failed.
    pub message: Message,
    /// What went wrong.
    pub failure: Failure,
}

impl DeadLetter {
    /// The message that dead-letters `delivery`, which `client` failed to handle, or
    /// `None` (with a warning logged) when the delivery was itself a dead letter: those
    /// are never dead-lettered again. Backends publish what this returns.
    pub fn for_delivery(
        client: &str,
        delivery: &Delivery,
        failure: Failure,
        ids: &IdGenerator,
        namespace: &str,
    ) -> Result<Option<Message>> {
        if &*delivery.topic == ERROR_TOPIC {
            tracing::warn!(
                client,
                message = %delivery.message.id,
                error = %failure.text,
                "handling a dead letter failed; dead letters are not dead-lettered again"
            );
            return Ok(None);
        }
        let letter = DeadLetter {
            client: client.to_owned(),
            topic: delivery.topic.to_string(),
            message: Message::clone(&delivery.message),
            failure,
        };
        let mut builder =
            Message::builder(ERROR_TOPIC, letter.to_payload()).priority(Priority::Normal);
        // The dead letter belongs to the failed message's trace.
        for name in [crate::TRACEPARENT, crate::TRACESTATE] {
            if let Some(value) = delivery.message.headers.get(name) {
                builder = builder.header(name, value);
            }
        }
        let message = builder.build(ids, namespace, client);
        Ok(Some(message))
    }
}

/// A client's live subscription. Dropping it (or calling [`close`](Self::close)) detaches
/// the client: its position is kept, and a later subscription with the same client id
/// resumes from it.
pub trait Subscription: Send {
    /// The next delivery in order, or `None` when nothing is queued now. Until it is
    /// completed, calling `next` again returns the same delivery.
    fn next(&mut self) -> Result<Option<Delivery>>;

    /// Completes the oldest delivery handed out and not yet completed (the one
    /// [`next`](Self::next) returns), advancing the position; a failure is dead-lettered
    /// first.
    fn complete(&mut self, outcome: Outcome) -> Result<()>;

    /// Hands out the delivery after those already handed out and not yet completed, so a
    /// consumer can work ahead (a consumer in another process, pipelining over a socket).
    /// Deliveries handed out this way are completed in order, oldest first, and like any
    /// delivery handed out and never completed they are handed out again when the client
    /// resubscribes.
    ///
    /// With nothing in flight this is [`next`](Self::next). A backend that cannot work
    /// ahead returns `None` while a delivery is in flight, which is what this default
    /// does: its consumers then go one at a time.
    fn next_ahead(&mut self) -> Result<Option<Delivery>> {
        Ok(None)
    }

    /// How many deliveries are queued for this client, including one in flight.
    fn pending(&self) -> usize;

    /// Detaches the client, keeping its position.
    fn close(self: Box<Self>) -> Result<()>;
}

/// A question about a namespace's retained messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HistoryQuery {
    /// Every retained message of a topic, in publish order.
    Topic(String),
    /// The retained messages of a topic minted after `after`, by time (ignoring priority).
    After {
        /// The topic.
        topic: String,
        /// The id to start after.
        after: MessageId,
    },
    /// Retained messages by id, in the order given; unknown ids are left out.
    Ids(Vec<MessageId>),
}

/// The order a history answer is arranged in, once the backend has answered in
/// publish order.
///
/// Publish order is the default because it is what a topic's log is: what a reader
/// replaying it, or comparing two backends, expects, and the only order in which two
/// answers for the same topic line up. Priority order (most urgent first, publish order
/// within a priority) is what the system guild re-implements returns, and what a
/// reader catching up on what matters most wants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryOrder {
    /// As published (for [`HistoryQuery::Ids`], as asked).
    #[default]
    Published,
    /// Most urgent first; within one priority, as published.
    Priority,
}

impl HistoryOrder {
    /// Arranges an answer given in publish order (or, for ids, the order asked).
    pub fn arrange(self, messages: &mut [Arc<Message>]) {
        if self == Self::Priority {
            // Stable, so one priority keeps publish order.
            messages.sort_by_key(|message| message.priority());
        }
    }
}

/// What a backend supports, declared as data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Capabilities {
    /// Messages and positions survive a restart of the process that published them.
    pub durable: bool,
    /// Agents in other processes can use the same bus.
    pub cross_process: bool,
    /// History queries are answered.
    pub history: bool,
    /// Messages are retained per topic up to a configured bound.
    pub bounded_retention: bool,
    /// The largest payload accepted, if bounded.
    pub max_payload_bytes: Option<usize>,
    /// Each client's queue is bounded as its subscription's [`QueueLimit`] says.
    pub queue_limits: bool,
}

impl Capabilities {
    /// Capabilities of a backend that answers history and retains a bounded amount of it.
    pub fn in_process() -> Self {
        Self {
            durable: false,
            cross_process: false,
            history: true,
            bounded_retention: true,
            max_payload_bytes: None,
            queue_limits: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Payload;

    #[test]
    fn a_dead_letter_keeps_the_trace_context_of_the_message_that_failed() {
        let ids = IdGenerator::new(1).unwrap();
        let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let message = Message::builder("work", Payload::encode_json(&1).unwrap())
            .header(crate::TRACEPARENT, traceparent)
            .header(crate::TRACESTATE, "vendor=1")
            .header("other", "not carried")
            .build(&ids, "guild", "publisher");
        let delivery = Delivery {
            topic: "work".into(),
            message: Arc::new(message),
        };
        let failure = Failure {
            kind: "error".into(),
            text: "no".into(),
        };
        let letter = DeadLetter::for_delivery("worker", &delivery, failure, &ids, "guild")
            .unwrap()
            .expect("a dead letter");
        assert_eq!(
            letter.headers.get(crate::TRACEPARENT).map(String::as_str),
            Some(traceparent)
        );
        assert_eq!(
            letter.headers.get(crate::TRACESTATE).map(String::as_str),
            Some("vendor=1")
        );
        assert!(!letter.headers.contains_key("other"));
        let read = DeadLetter::from_message(&letter).unwrap();
        assert_eq!(read.client, "worker");
        assert_eq!(read.topic, "work");
        assert_eq!(read.message, *delivery.message);
        assert_eq!(read.failure.text, "no");
    }
}
