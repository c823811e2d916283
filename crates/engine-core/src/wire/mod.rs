//! Messages on the wire: the protocol buffers encoding of `proto/guild/v1/message.proto`,
//! which is the one definition of a message in Redis, between processes and between
//! nodes, so that programs in other languages read it and guilds of different versions
//! read each other's messages.
//!
//! The encoder writes a [`Message`] straight from its shared names, and the decoder
//! reads one straight into them (interning names as it goes): no copy through
//! intermediate types on the hot path. `conformance` holds this codec to the types
//! `prost` generates from the `.proto` file, byte for byte in both directions, and the
//! golden files in `tests/fixtures/wire` hold every later version to the encoding of
//! today's fields. Fields this version does not know are skipped when reading.

mod buf;

use std::collections::BTreeMap;

use buf::{
    Fields, LEN, bytes_field_len, corrupt, key_len, put_bytes, put_fixed64, put_key, put_varint,
    put_varint_field, varint_len,
};

use crate::core_error::CoreError;
use crate::names::{Names, PayloadBytes, Topics, with_names};
use crate::{DeadLetter, Failure, Message, MessageId, Payload, Priority, Result};

/// The payload format of a [`DeadLetter`]: the protocol buffers message of that name.
pub const DEAD_LETTER_FORMAT: &str = "guild.v1.DeadLetter";

/// Field numbers of `guild.v1.Message`.
mod field {
    pub(super) const ID: u32 = 1;
    pub(super) const NAMESPACE: u32 = 2;
    pub(super) const TOPICS: u32 = 3;
    pub(super) const SENDER: u32 = 4;
    pub(super) const PAYLOAD: u32 = 5;
    pub(super) const PRIORITY: u32 = 6;
    pub(super) const REPLY_TO: u32 = 7;
    pub(super) const IN_REPLY_TO: u32 = 8;
    pub(super) const THREAD: u32 = 9;
    pub(super) const HEADERS: u32 = 10;
    pub(super) const TIMESTAMP_MS: u32 = 11;
}

/// How many bytes [`encode_message`] writes for `message`.
pub fn encoded_len(message: &Message) -> usize {
    // Each fixed64 field takes a one-byte key and eight bytes; the priority a one-byte
    // key and a one-byte varint.
    let mut len = if message.id.raw() == 0 { 0 } else { 9 }
        + str_len(field::NAMESPACE, &message.namespace)
        + str_len(field::SENDER, &message.sender)
        + bytes_field_len(field::PAYLOAD, payload_len(&message.payload))
        + 2
        + message
            .reply_to
            .as_ref()
            .map_or(0, |topic| bytes_field_len(field::REPLY_TO, topic.len()))
        + message.in_reply_to.map_or(0, |_| 9)
        + message.thread.map_or(0, |_| 9);
    for topic in &message.topics {
        len += bytes_field_len(field::TOPICS, topic.len());
    }
    for (name, value) in &message.headers {
        len += bytes_field_len(field::HEADERS, header_len(name, value));
    }
    if message.timestamp_ms != 0 {
        len += key_len(field::TIMESTAMP_MS) + varint_len(message.timestamp_ms);
    }
    len
}

/// Appends `message`, encoded as a `guild.v1.Message`, to `out`.
pub fn encode_message(message: &Message, out: &mut Vec<u8>) {
    out.reserve(encoded_len(message));
    encode_fields(message, out);
}

/// Appends the fields of `message`, room for them reserved or not.
fn encode_fields(message: &Message, out: &mut Vec<u8>) {
    if message.id.raw() != 0 {
        put_fixed64(out, field::ID, message.id.raw());
    }
    put_str(out, field::NAMESPACE, &message.namespace);
    for topic in &message.topics {
        put_bytes(out, field::TOPICS, topic.as_bytes());
    }
    put_str(out, field::SENDER, &message.sender);
    put_key(out, field::PAYLOAD, LEN);
    put_varint(out, payload_len(&message.payload) as u64);
    put_str(out, 1, &message.payload.format);
    if !message.payload.bytes.is_empty() {
        put_bytes(out, 2, &message.payload.bytes);
    }
    put_varint_field(out, field::PRIORITY, priority_number(message.priority()));
    if let Some(topic) = &message.reply_to {
        put_bytes(out, field::REPLY_TO, topic.as_bytes());
    }
    if let Some(id) = message.in_reply_to {
        put_fixed64(out, field::IN_REPLY_TO, id.raw());
    }
    if let Some(id) = message.thread {
        put_fixed64(out, field::THREAD, id.raw());
    }
    for (name, value) in &message.headers {
        put_key(out, field::HEADERS, LEN);
        put_varint(out, header_len(name, value) as u64);
        put_str(out, 1, name);
        put_str(out, 2, value);
    }
    if message.timestamp_ms != 0 {
        put_varint_field(out, field::TIMESTAMP_MS, message.timestamp_ms);
    }
}

/// `message` encoded as a `guild.v1.Message`.
pub fn message_to_vec(message: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    encode_message(message, &mut out);
    out
}

/// Decodes one `guild.v1.Message`.
pub fn decode_message(bytes: &[u8]) -> Result<Message> {
    with_names(|names| decode_with(bytes, names))
}

/// Decodes one message, interning its names in `names`.
fn decode_with(bytes: &[u8], names: &mut Names) -> Result<Message> {
    let mut name = |value: buf::Value<'_>, what: &str| {
        names
            .intern_bytes(value.bytes(what)?)
            .ok_or_else(|| corrupt(format!("field {what} is not UTF-8")))
    };
    let mut id = 0;
    let mut namespace = None;
    let mut topics = Topics::new();
    let mut sender = None;
    let mut payload = Payload::copy_of("", &[]);
    let mut priority = 0;
    let mut reply_to = None;
    let mut in_reply_to = None;
    let mut thread = None;
    let mut headers = BTreeMap::new();
    let mut timestamp_ms = 0;
    let mut fields = Fields::new(bytes);
    while let Some((number, value)) = fields.next_field()? {
        match number {
            field::ID => id = value.fixed64("id")?,
            field::NAMESPACE => namespace = Some(name(value, "namespace")?),
            field::TOPICS => topics.push(name(value, "topics")?),
            field::SENDER => sender = Some(name(value, "sender")?),
            field::PAYLOAD => merge_payload(&mut payload, value.bytes("payload")?)?,
            field::PRIORITY => priority = value.varint("priority")?,
            field::REPLY_TO => reply_to = Some(value.str("reply_to")?.to_owned()),
            field::IN_REPLY_TO => {
                in_reply_to = Some(MessageId::from_raw(value.fixed64("in_reply_to")?));
            }
            field::THREAD => thread = Some(MessageId::from_raw(value.fixed64("thread")?)),
            field::HEADERS => {
                let (name, value) = decode_header(value.bytes("headers")?)?;
                headers.insert(name, value);
            }
            field::TIMESTAMP_MS => timestamp_ms = value.varint("timestamp_ms")?,
            _ => {}
        }
    }
    let id = MessageId::from_raw(id);
    if priority != 0 && priority != priority_number(id.priority()) {
        return Err(corrupt(format!(
            "field priority is {priority}, but id {id} has priority {}",
            priority_number(id.priority())
        )));
    }
    Ok(Message {
        id,
        namespace: namespace.unwrap_or_else(|| "".into()),
        topics,
        sender: sender.unwrap_or_else(|| "".into()),
        payload,
        reply_to,
        in_reply_to,
        thread,
        headers,
        timestamp_ms,
    })
}

/// Appends `message` to the `guild.v1.Frame` being written in `out`: frames concatenate,
/// so a frame is its messages appended one after the other.
pub fn append_to_frame(message: &Message, out: &mut Vec<u8>) {
    let len = encoded_len(message);
    out.reserve(bytes_field_len(1, len));
    put_key(out, 1, LEN);
    put_varint(out, len as u64);
    encode_fields(message, out);
}

/// The encoded messages of a `guild.v1.Frame`, in order, each still to be decoded.
pub fn frame_members(frame: &[u8]) -> impl Iterator<Item = Result<&[u8]>> {
    let mut fields = Fields::new(frame);
    std::iter::from_fn(move || {
        loop {
            return match fields.next_field() {
                Ok(None) => None,
                Ok(Some((1, value))) => Some(value.bytes("messages")),
                // A field a later version added to frames.
                Ok(Some(_)) => continue,
                Err(error) => {
                    fields = Fields::new(&[]);
                    Some(Err(error))
                }
            };
        }
    })
}

/// Decodes every message of a `guild.v1.Frame`.
pub fn decode_frame(frame: &[u8]) -> Result<Vec<Message>> {
    frame_members(frame)
        .map(|member| decode_message(member?))
        .collect()
}

/// The id of an encoded message, reading no other field.
pub fn message_id(bytes: &[u8]) -> Result<MessageId> {
    let mut id = 0;
    let mut fields = Fields::new(bytes);
    while let Some((number, value)) = fields.next_field()? {
        if number == field::ID {
            id = value.fixed64("id")?;
        }
    }
    Ok(MessageId::from_raw(id))
}

impl DeadLetter {
    /// This dead letter as a payload (format [`DEAD_LETTER_FORMAT`]).
    pub fn to_payload(&self) -> Payload {
        let mut out = Vec::new();
        put_str(&mut out, 1, &self.client);
        put_str(&mut out, 2, &self.topic);
        let message_len = encoded_len(&self.message);
        out.reserve(bytes_field_len(3, message_len));
        put_key(&mut out, 3, LEN);
        put_varint(&mut out, message_len as u64);
        encode_fields(&self.message, &mut out);
        let failure_len = str_len(1, &self.failure.kind) + str_len(2, &self.failure.text);
        put_key(&mut out, 4, LEN);
        put_varint(&mut out, failure_len as u64);
        put_str(&mut out, 1, &self.failure.kind);
        put_str(&mut out, 2, &self.failure.text);
        Payload::new(DEAD_LETTER_FORMAT, out)
    }

    /// The dead letter a message on the error topic carries.
    pub fn from_message(message: &Message) -> Result<Self> {
        let payload = &message.payload;
        if payload.format != DEAD_LETTER_FORMAT {
            return Err(CoreError::NotDeadLetter {
                format: payload.format.to_string(),
            }
            .into());
        }
        let mut client = String::new();
        let mut topic = String::new();
        let mut letter = None;
        let mut failure = Failure {
            kind: String::new(),
            text: String::new(),
        };
        let mut fields = Fields::new(&payload.bytes);
        while let Some((number, value)) = fields.next_field()? {
            match number {
                1 => value.str("client")?.clone_into(&mut client),
                2 => value.str("topic")?.clone_into(&mut topic),
                3 => letter = Some(decode_message(value.bytes("message")?)?),
                4 => {
                    let mut fields = Fields::new(value.bytes("failure")?);
                    while let Some((number, value)) = fields.next_field()? {
                        match number {
                            1 => value.str("failure.kind")?.clone_into(&mut failure.kind),
                            2 => value.str("failure.text")?.clone_into(&mut failure.text),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        let message = letter.ok_or_else(|| corrupt("a dead letter without its message".into()))?;
        Ok(Self {
            client,
            topic,
            message,
            failure,
        })
    }
}

fn payload_len(payload: &Payload) -> usize {
    str_len(1, &payload.format)
        + if payload.bytes.is_empty() {
            0
        } else {
            bytes_field_len(2, payload.bytes.len())
        }
}

fn merge_payload(payload: &mut Payload, bytes: &[u8]) -> Result<()> {
    let mut fields = Fields::new(bytes);
    while let Some((number, value)) = fields.next_field()? {
        match number {
            1 => payload.format = known_format(value.str("payload.format")?),
            2 => payload.bytes = PayloadBytes::from_slice(value.bytes("payload.bytes")?),
            _ => {}
        }
    }
    Ok(())
}

/// A format name, without allocating for the common ones.
fn known_format(format: &str) -> std::borrow::Cow<'static, str> {
    match format {
        crate::JSON_FORMAT => crate::JSON_FORMAT.into(),
        "text" => "text".into(),
        DEAD_LETTER_FORMAT => DEAD_LETTER_FORMAT.into(),
        crate::PROBE_FORMAT => crate::PROBE_FORMAT.into(),
        other => other.to_owned().into(),
    }
}

fn header_len(name: &str, value: &str) -> usize {
    str_len(1, name) + str_len(2, value)
}

fn decode_header(bytes: &[u8]) -> Result<(String, String)> {
    let (mut name, mut text) = (String::new(), String::new());
    let mut fields = Fields::new(bytes);
    while let Some((number, value)) = fields.next_field()? {
        match number {
            1 => value.str("headers.key")?.clone_into(&mut name),
            2 => value.str("headers.value")?.clone_into(&mut text),
            _ => {}
        }
    }
    Ok((name, text))
}

/// Appends a string field, unless it is empty (proto3 leaves defaults out).
fn put_str(out: &mut Vec<u8>, field: u32, text: &str) {
    if !text.is_empty() {
        put_bytes(out, field, text.as_bytes());
    }
}

fn str_len(field: u32, text: &str) -> usize {
    if text.is_empty() {
        0
    } else {
        bytes_field_len(field, text.len())
    }
}

/// The priority's number in `guild.v1.Priority`: its own plus one, so that zero means
/// "not given".
fn priority_number(priority: Priority) -> u64 {
    priority as u64 + 1
}
