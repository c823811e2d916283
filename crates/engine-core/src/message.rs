//! Messages, their payloads, and the builder agents use to send them.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::core_error::CoreError;
use crate::names::{PayloadBytes, Topics, intern};
use crate::{IdGenerator, MessageId, Priority, Result};

/// The payload format name for JSON, the common format.
pub const JSON_FORMAT: &str = "json";

/// The bytes a message carries, tagged with the name of their format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// The format of `bytes`, such as `"json"` or `"text"` (a static name costs no
    /// allocation).
    pub format: Cow<'static, str>,
    /// The encoded content (a byte string to binary codecs, an array of numbers in
    /// JSON); up to [`INLINE_PAYLOAD`](crate::INLINE_PAYLOAD) bytes are held inline.
    #[serde(with = "crate::names::payload_bytes")]
    pub bytes: PayloadBytes,
}

impl Payload {
    /// A payload of raw bytes in the named format, taking over `bytes` (a small one is
    /// moved inline).
    pub fn new(format: impl Into<Cow<'static, str>>, bytes: impl Into<Vec<u8>>) -> Self {
        Self {
            format: format.into(),
            bytes: PayloadBytes::from_vec(bytes.into()),
        }
    }

    /// A payload holding a copy of `bytes`: no allocation for a small one.
    pub fn copy_of(format: impl Into<Cow<'static, str>>, bytes: &[u8]) -> Self {
        Self {
            format: format.into(),
            bytes: PayloadBytes::from_slice(bytes),
        }
    }

    /// Encodes `value` as a JSON payload ([`decode_json`](Self::decode_json) is the
    /// way back); a small one is written inline, without allocating.
    pub fn encode_json<T: Serialize + ?Sized>(value: &T) -> Result<Self> {
        let mut bytes = PayloadBytes::new();
        serde_json::to_writer(&mut bytes, value).map_err(CoreError::EncodeJson)?;
        Ok(Self::json(bytes))
    }

    fn json(bytes: PayloadBytes) -> Self {
        Self {
            format: Cow::Borrowed(JSON_FORMAT),
            bytes,
        }
    }

    /// Decodes a JSON payload into `T`.
    pub fn decode_json<T: DeserializeOwned>(&self) -> Result<T> {
        if self.format != JSON_FORMAT {
            return Err(CoreError::NotJson {
                format: self.format.to_string(),
            }
            .into());
        }
        serde_json::from_slice(&self.bytes).map_err(|e| CoreError::DecodeJson(e).into())
    }
}

impl From<serde_json::Value> for Payload {
    fn from(value: serde_json::Value) -> Self {
        let mut bytes = PayloadBytes::new();
        // Writing a JSON value into memory cannot fail.
        let _ = serde_json::to_writer(&mut bytes, &value);
        Self::json(bytes)
    }
}

/// One message on a guild's bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Unique id; sorting by id sorts by priority, then time.
    pub id: MessageId,
    /// The guild (namespace) the message belongs to; shared, not copied, by every
    /// message of the guild.
    pub namespace: Arc<str>,
    /// The topics it was published to; it is delivered once per topic. Names are
    /// shared, and one topic is held inline.
    pub topics: Topics,
    /// The id of the agent or client that sent it; shared by every message it sends.
    pub sender: Arc<str>,
    /// The content.
    pub payload: Payload,
    /// Where replies to this message should go, when not to the sender's inbox.
    pub reply_to: Option<String>,
    /// The message this one answers.
    pub in_reply_to: Option<MessageId>,
    /// The first message of the conversation this one belongs to.
    pub thread: Option<MessageId>,
    /// Free-form headers; the trace context travels here.
    pub headers: BTreeMap<String, String>,
    /// Unix milliseconds at which it was built: the time its id was minted (one clock
    /// read per message).
    pub timestamp_ms: u64,
}

impl Message {
    /// Starts a message to `topic` carrying `payload`.
    pub fn builder(topic: impl AsRef<str>, payload: Payload) -> MessageBuilder {
        let mut topics = Topics::new();
        topics.push(intern(topic.as_ref()));
        MessageBuilder {
            topics,
            payload,
            priority: None,
            reply_to: None,
            in_reply_to: None,
            thread: None,
            headers: BTreeMap::new(),
        }
    }

    /// The message's priority (encoded in its id).
    pub fn priority(&self) -> Priority {
        self.id.priority()
    }

    /// Decodes the message's JSON payload into `T`.
    pub fn decode_json<T: DeserializeOwned>(&self) -> Result<T> {
        self.payload.decode_json()
    }

    /// The topic a reply to this message goes to: its `reply_to`, else the sender's inbox.
    pub fn reply_topic(&self) -> String {
        self.reply_to
            .clone()
            .unwrap_or_else(|| inbox_topic(&self.sender))
    }
}

/// Everything about a message that its sender chooses; the rest is filled in by
/// [`MessageBuilder::build`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MessageBuilder {
    topics: Topics,
    payload: Payload,
    priority: Option<Priority>,
    reply_to: Option<String>,
    in_reply_to: Option<MessageId>,
    thread: Option<MessageId>,
    headers: BTreeMap<String, String>,
}

impl MessageBuilder {
    /// The topics it is to be published to.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Also publishes to `topic`.
    pub fn topic(mut self, topic: impl AsRef<str>) -> Self {
        self.topics.push(intern(topic.as_ref()));
        self
    }

    /// Sets the delivery priority.
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Sets the priority unless one was set already.
    pub fn default_priority(mut self, priority: Priority) -> Self {
        self.priority.get_or_insert(priority);
        self
    }

    /// Asks receivers to send replies to `topic`.
    pub fn reply_to(mut self, topic: impl Into<String>) -> Self {
        self.reply_to = Some(topic.into());
        self
    }

    /// Marks the message as a reply to `original`, continuing its thread.
    pub fn in_reply_to(mut self, original: &Message) -> Self {
        self.in_reply_to = Some(original.id);
        self.thread = Some(original.thread.unwrap_or(original.id));
        self
    }

    /// Sets a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Stamps the message with an id from `ids`, its namespace and its sender (pass
    /// shared names, `Arc<str>`, to build without copying them). Built inside a traced
    /// span, it carries that span's trace context (see [`crate::TraceContext`]) unless
    /// it was given one.
    pub fn build(
        mut self,
        ids: &IdGenerator,
        namespace: impl Into<Arc<str>>,
        sender: impl Into<Arc<str>>,
    ) -> Message {
        crate::trace::inject(&mut self.headers);
        let id = ids.next(self.priority.unwrap_or_default());
        Message {
            id,
            namespace: namespace.into(),
            topics: self.topics,
            sender: sender.into(),
            payload: self.payload,
            reply_to: self.reply_to,
            in_reply_to: self.in_reply_to,
            thread: self.thread,
            headers: self.headers,
            timestamp_ms: id.unix_ms(),
        }
    }
}

/// What every inbox topic starts with.
pub const INBOX_PREFIX: &str = "inbox:";

/// The topic every agent is subscribed to for messages addressed to it alone.
pub fn inbox_topic(agent_id: &str) -> String {
    format!("{INBOX_PREFIX}{agent_id}")
}
