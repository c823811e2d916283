//! The wire protocol between the engine (the parent) and an agent process (the child):
//! length-prefixed, versioned frames with a size cap, behind this one module.
//!
//! Messages cross in their protobuf encoding (`proto/guild/v1/message.proto`, the one
//! definition of a message on any wire), as byte strings inside the frames. The frames
//! themselves are bincode: only this program reads them, on both ends.
//!
//! A frame is `[length: u32 little-endian][version: u8][body]`, where `length` counts
//! the version byte and the body, and the body is one [`ToChild`] or [`ToParent`] value.
//! A frame longer than [`MAX_FRAME_BYTES`], of another version, or whose body does not
//! decode exactly is an error: the connection that sent it is closed, nothing else.

use crate::error::ProcessError;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use engine_core::{
    Error, ErrorKind, HistoryQuery, LifecycleKind, Message, Outcome, SubscribeRequest,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The protocol version every frame carries.
pub(crate) const VERSION: u8 = 4;

/// The largest frame accepted or sent, version byte and body included.
pub(crate) const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// bincode's settings; the limit stops a hostile length inside a body from allocating
/// more than a frame may hold.
fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME_BYTES>()
}

/// What is wrong with a frame or the connection it came on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// Reading or writing the socket failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The length prefix is above the cap.
    #[error("a frame of {bytes} bytes exceeds the cap of {cap} bytes")]
    TooLarge {
        /// The announced length.
        bytes: usize,
        /// The cap.
        cap: usize,
    },
    /// The length prefix is zero: not even a version byte.
    #[error("an empty frame")]
    Empty,
    /// The frame speaks another protocol version.
    #[error("protocol version {found}, expected {VERSION}")]
    Version {
        /// The version the frame carries.
        found: u8,
    },
    /// The body does not decode, or does not decode exactly.
    #[error("a corrupt frame: {0}")]
    Corrupt(String),
    /// The connection ended in the middle of a frame.
    #[error("the connection ended in the middle of a frame")]
    Truncated,
}

impl FrameError {
    /// This error as a guild error from `component`.
    pub(crate) fn into_error(self, component: &'static str) -> Error {
        ProcessError::Frame {
            component,
            source: self,
        }
        .into()
    }
}

/// Decodes one frame's version byte and body (everything after the length prefix).
pub(crate) fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<T, FrameError> {
    let (&version, body) = frame.split_first().ok_or(FrameError::Empty)?;
    if version != VERSION {
        return Err(FrameError::Version { found: version });
    }
    // Borrowing from the frame lets a message's bytes be decoded where they lie,
    // without copying them out first.
    let (value, used) = bincode::serde::borrow_decode_from_slice(body, config())
        .map_err(|e| FrameError::Corrupt(e.to_string()))?;
    if used != body.len() {
        return Err(FrameError::Corrupt(format!(
            "{} bytes left over after the body",
            body.len() - used
        )));
    }
    Ok(value)
}

/// Appends `value` to `out` as one frame.
pub(crate) fn encode<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, VERSION]);
    if let Err(error) = bincode::serde::encode_into_std_write(value, out, config()) {
        out.truncate(start);
        return Err(FrameError::Corrupt(error.to_string()));
    }
    let length = out.len() - start - 4;
    if length > MAX_FRAME_BYTES {
        out.truncate(start);
        return Err(FrameError::TooLarge {
            bytes: length,
            cap: MAX_FRAME_BYTES,
        });
    }
    out[start..start + 4].copy_from_slice(&(length as u32).to_le_bytes());
    Ok(())
}

/// Reads frames off a byte stream.
#[derive(Debug)]
pub(crate) struct FrameReader<R> {
    reader: BufReader<R>,
    frame: Vec<u8>,
}

impl<R: Read> FrameReader<R> {
    /// A reader of frames from `reader`.
    pub(crate) fn new(reader: R) -> Self {
        Self {
            reader: BufReader::with_capacity(64 * 1024, reader),
            frame: Vec::new(),
        }
    }

    /// Whether bytes of a frame are buffered already (so reading will not block long).
    pub(crate) fn has_buffered(&self) -> bool {
        !self.reader.buffer().is_empty()
    }

    /// The stream frames are read from.
    pub(crate) fn get_ref(&self) -> &R {
        self.reader.get_ref()
    }

    /// The next frame, or `None` when the stream ends cleanly between frames.
    pub(crate) fn read<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        let mut prefix = [0u8; 4];
        match read_full(&mut self.reader, &mut prefix)? {
            0 => return Ok(None),
            4 => {}
            _ => return Err(FrameError::Truncated),
        }
        let length = u32::from_le_bytes(prefix) as usize;
        if length > MAX_FRAME_BYTES {
            return Err(FrameError::TooLarge {
                bytes: length,
                cap: MAX_FRAME_BYTES,
            });
        }
        self.frame.resize(length, 0);
        if read_full(&mut self.reader, &mut self.frame)? != length {
            return Err(FrameError::Truncated);
        }
        decode(&self.frame).map(Some)
    }
}

/// Reads until `buf` is full or the stream ends, returning how much was read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Writes frames to a socket through a buffer; nothing reaches the peer before
/// [`flush`](Self::flush) (or a full buffer).
#[derive(Debug)]
pub(crate) struct FrameWriter {
    writer: BufWriter<UnixStream>,
    scratch: Vec<u8>,
}

impl FrameWriter {
    /// A writer of frames to `stream`.
    pub(crate) fn new(stream: UnixStream) -> Self {
        Self {
            writer: BufWriter::with_capacity(64 * 1024, stream),
            scratch: Vec::new(),
        }
    }

    /// Buffers one frame.
    pub(crate) fn send<T: Serialize>(&mut self, value: &T) -> Result<(), FrameError> {
        self.scratch.clear();
        encode(value, &mut self.scratch)?;
        self.writer.write_all(&self.scratch)?;
        Ok(())
    }

    /// Sends everything buffered.
    pub(crate) fn flush(&mut self) -> Result<(), FrameError> {
        self.writer.flush()?;
        Ok(())
    }

    /// Buffers one frame and sends everything buffered.
    pub(crate) fn send_now<T: Serialize>(&mut self, value: &T) -> Result<(), FrameError> {
        self.send(value)?;
        self.flush()
    }
}

/// An error as it crosses the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireError {
    /// What kind of error.
    pub kind: ErrorKind,
    /// The error's text, as the side that had it wrote it.
    pub message: String,
    /// Whether retrying may help.
    pub retryable: bool,
}

impl From<&Error> for WireError {
    fn from(error: &Error) -> Self {
        Self {
            kind: error.kind(),
            message: error.to_string(),
            retryable: error.is_retryable(),
        }
    }
}

impl WireError {
    /// The guild error this stands for, reported by `component`.
    pub(crate) fn into_error(self, component: &'static str) -> Error {
        ProcessError::Remote {
            component,
            wire: self,
        }
        .into()
    }
}

/// What the engine tells an agent process to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Launch {
    /// The guild namespace.
    pub namespace: String,
    /// The agent's spec, as JSON (data, never code).
    pub spec_json: String,
    /// Whether to run in a network namespace of its own.
    pub isolate_network: bool,
    /// The generator id the agent process mints message ids under, leased to it alone.
    pub generator_id: u16,
    /// The name of the engine's messaging backend (for the agent's spans).
    pub messaging: String,
    /// Whether to record how long handlers take and deliveries wait, and report it.
    pub timing: bool,
}

/// One delivery as it crosses the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct WireDelivery {
    /// The topic it was delivered on.
    pub topic: Arc<str>,
    /// The message.
    #[serde(with = "proto_message")]
    pub message: Arc<Message>,
}

/// The answer to a request an agent process made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Reply {
    /// The subscription is live.
    Subscribed,
    /// The messages a history query found.
    History(#[serde(with = "proto_messages")] Vec<Arc<Message>>),
}

/// Frames from the engine to an agent process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum ToChild {
    /// Build, subscribe and start this agent. Always the first frame.
    Launch(Launch),
    /// Stop after the current message.
    Stop,
    /// Handle nothing more until [`ToChild::Resume`]; say [`ToParent::Paused`] once
    /// between messages.
    Pause,
    /// Carry on after a pause.
    Resume,
    /// The answer to request `request`.
    Reply {
        /// The request's number.
        request: u64,
        /// What it found.
        result: Result<Reply, WireError>,
    },
    /// Deliveries for the agent's subscription, in order, with how many more are
    /// queued behind them.
    Deliveries {
        /// The deliveries.
        batch: Vec<WireDelivery>,
        /// How many more are queued at the broker.
        backlog: u64,
    },
    /// The guild's messaging backend refuses the agent's messages for now (`Some`,
    /// why), or takes them again (`None`). What the agent sent before it heard of
    /// the outage is held by the broker and sent when the backend is back; what it
    /// publishes during the outage fails in the call.
    Outage(Option<WireError>),
}

/// Frames from an agent process to the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum ToParent {
    /// The agent is subscribed and started.
    Ready,
    /// The agent could not be launched; the text is the agent process's own.
    LaunchFailed(WireError),
    /// Publish this message.
    Publish(#[serde(with = "proto_message")] Message),
    /// Subscribe the agent (answered by a [`Reply`]).
    Subscribe {
        /// The request's number.
        request: u64,
        /// The subscription.
        subscription: SubscribeRequest,
    },
    /// How the oldest deliveries handed out were handled, oldest first.
    Acks(Vec<Outcome>),
    /// Answer a history query (answered by a [`Reply`]).
    History {
        /// The request's number.
        request: u64,
        /// The namespace.
        namespace: String,
        /// The query.
        query: HistoryQuery,
    },
    /// Detach the subscription, keeping its position.
    Unsubscribe,
    /// How long handlers took and deliveries waited so far (sent now and then while
    /// the guild's timing is on).
    Timings(engine_core::TimingsSnapshot),
    /// The agent stopped on request; its stop hook's error, if it failed.
    Stopped {
        /// The stop hook's error.
        stop_error: Option<String>,
    },
    /// The agent ended on its own (a handler panicked, or ended it); the process exits
    /// next.
    Ended(engine_core::Ending),
    /// The agent is between messages and handles nothing until resumed.
    Paused,
    /// Something the agent's host saw (a circuit breaker's change), to report as a
    /// lifecycle event of the agent.
    Lifecycle(LifecycleKind),
}

/// One message as the byte string of its protobuf encoding.
mod proto_message {
    use std::borrow::Borrow;
    use std::cell::RefCell;
    use std::fmt;

    use engine_core::Message;
    use engine_core::wire::{decode_message, encode_message};
    use serde::{Deserializer, Serializer, de};

    thread_local! {
        /// Where a message is encoded before the frame copies it: reused, not allocated
        /// per message.
        static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }

    pub(crate) fn serialize<M: Borrow<Message>, S: Serializer>(
        message: &M,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            encode_message(message.borrow(), scratch);
            serializer.serialize_bytes(scratch)
        })
    }

    pub(crate) fn deserialize<'de, M: From<Message>, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<M, D::Error> {
        deserializer.deserialize_bytes(Encoded).map(M::from)
    }

    /// Reads a byte string as an encoded message.
    pub(super) struct Encoded;

    impl de::Visitor<'_> for Encoded {
        type Value = Message;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a guild.v1.Message")
        }

        fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Message, E> {
            decode_message(bytes).map_err(E::custom)
        }
    }
}

/// A list of messages, each the byte string of its protobuf encoding.
mod proto_messages {
    use std::fmt;
    use std::sync::Arc;

    use engine_core::Message;
    use serde::ser::SerializeSeq;
    use serde::{Deserializer, Serializer, de};

    /// One message of the list, serialized as [`super::proto_message`] does.
    struct One<'a>(&'a Arc<Message>);

    impl serde::Serialize for One<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            super::proto_message::serialize(self.0, serializer)
        }
    }

    pub(crate) fn serialize<S: Serializer>(
        messages: &[Arc<Message>],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(messages.len()))?;
        for message in messages {
            seq.serialize_element(&One(message))?;
        }
        seq.end()
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Arc<Message>>, D::Error> {
        deserializer.deserialize_seq(List)
    }

    struct List;

    impl<'de> de::Visitor<'de> for List {
        type Value = Vec<Arc<Message>>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of guild.v1.Message")
        }

        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut messages = Vec::new();
            while let Some(message) = seq.next_element_seed(Seed)? {
                messages.push(Arc::new(message));
            }
            Ok(messages)
        }
    }

    /// Reads one element of the list.
    struct Seed;

    impl<'de> de::DeserializeSeed<'de> for Seed {
        type Value = Message;

        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Message, D::Error> {
            deserializer.deserialize_bytes(super::proto_message::Encoded)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use engine_core::{Failure, IdGenerator, Payload, Priority, StartFrom};
    use proptest::prelude::*;

    use super::*;

    /// Cases each property runs; the note on the process engine issue quotes the total.
    const CASES: u32 = 10_000;

    fn message(text: &str) -> Message {
        Message::builder("topic", Payload::encode_json(text).unwrap())
            .priority(Priority::High)
            .header("trace", "abc")
            .build(&IdGenerator::new(7).unwrap(), "guild", "sender")
    }

    fn frames() -> Vec<ToParent> {
        vec![
            ToParent::Ready,
            ToParent::Publish(message("hello")),
            ToParent::Subscribe {
                request: 3,
                subscription: SubscribeRequest {
                    namespace: "guild".into(),
                    client_id: "a".into(),
                    topics: vec!["t".into(), "inbox:a".into()],
                    start: StartFrom::Earliest,
                    limit: None,
                },
            },
            ToParent::Acks(vec![
                Outcome::Handled,
                Outcome::Failed(Failure {
                    kind: "error".into(),
                    text: "bad".into(),
                }),
            ]),
            ToParent::History {
                request: 9,
                namespace: "guild".into(),
                query: HistoryQuery::Topic("t".into()),
            },
            ToParent::Ended(engine_core::Ending::Crashed("boom".into())),
        ]
    }

    fn stream_of(frames: &[ToParent]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for frame in frames {
            encode(frame, &mut bytes).unwrap();
        }
        bytes
    }

    /// Reads every frame of `bytes`, stopping at the first error.
    fn read_all(bytes: &[u8]) -> (Vec<ToParent>, Option<FrameError>) {
        let mut reader = FrameReader::new(Cursor::new(bytes));
        let mut frames = Vec::new();
        loop {
            match reader.read::<ToParent>() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => return (frames, None),
                Err(error) => return (frames, Some(error)),
            }
        }
    }

    #[test]
    fn frames_round_trip() {
        let frames = frames();
        let (read, error) = read_all(&stream_of(&frames));
        assert!(error.is_none(), "{error:?}");
        assert_eq!(read, frames);
    }

    #[test]
    fn an_oversized_length_is_refused_before_reading_the_body() {
        let mut bytes = ((MAX_FRAME_BYTES + 1) as u32).to_le_bytes().to_vec();
        bytes.push(VERSION);
        let (_, error) = read_all(&bytes);
        assert!(
            matches!(error, Some(FrameError::TooLarge { .. })),
            "{error:?}"
        );
    }

    #[test]
    fn another_version_is_refused() {
        let mut bytes = stream_of(&[ToParent::Ready]);
        bytes[4] = VERSION + 1;
        let (_, error) = read_all(&bytes);
        assert!(
            matches!(error, Some(FrameError::Version { found }) if found == VERSION + 1),
            "{error:?}"
        );
    }

    #[test]
    fn a_stream_cut_inside_a_frame_is_truncated() {
        let bytes = stream_of(&frames());
        let (read, error) = read_all(&bytes[..bytes.len() - 3]);
        assert_eq!(read.len(), frames().len() - 1);
        assert!(matches!(error, Some(FrameError::Truncated)), "{error:?}");
    }

    #[test]
    fn a_hostile_length_inside_a_body_allocates_nothing_large() {
        // An acks frame whose list claims 2^60 entries (253 marks a u64 length).
        let mut body = vec![VERSION, 4, 253];
        body.extend_from_slice(&(1u64 << 60).to_le_bytes());
        let mut bytes = (body.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(&body);
        let (_, error) = read_all(&bytes);
        assert!(matches!(error, Some(FrameError::Corrupt(_))), "{error:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        /// Arbitrary bytes never panic the decoder: they decode or are refused.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = read_all(&bytes);
            let _ = decode::<ToChild>(&bytes);
        }

        /// Valid streams with bytes flipped, cut or inserted never panic the decoder, and
        /// the frames before the damage still come out intact.
        #[test]
        fn damaged_streams_keep_the_frames_before_the_damage(
            at in 0usize..4096,
            flip in 1u8..=255,
            cut in any::<bool>(),
        ) {
            let frames = frames();
            let mut bytes = stream_of(&frames);
            let at = at % bytes.len();
            if cut {
                bytes.truncate(at);
            } else {
                bytes[at] ^= flip;
            }
            let (read, _) = read_all(&bytes);
            let intact = frames.iter().zip(&read).take_while(|(a, b)| a == b).count();
            // Every frame wholly before the damaged byte decodes as sent.
            let mut end = 0;
            let mut before = 0;
            for frame in &frames {
                end += stream_of(std::slice::from_ref(frame)).len();
                if end <= at {
                    before += 1;
                }
            }
            prop_assert!(intact >= before);
        }
    }
}
