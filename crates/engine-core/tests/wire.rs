//! The wire format does not drift: golden files of encoded messages, frames and dead
//! letters, committed under `tests/fixtures/wire`, decode to the values they were made
//! from, and those values encode to the same bytes. A change to how an existing field is
//! encoded fails here; a new field needs new golden files beside these, never changes
//! to them. A message with fields this version does not know decodes all the same.
//!
//! After adding a fixture, `GUILD_WRITE_FIXTURES=1 cargo test -p engine-core --test wire`
//! writes its file (and only files that do not exist yet).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use engine_core::wire::{
    DEAD_LETTER_FORMAT, append_to_frame, decode_frame, decode_message, encode_message, message_id,
};
use engine_core::{DeadLetter, Failure, Message, MessageId, Payload, Topics};

/// Priority normal (4), 2026-01-01T00:00:00Z, generator 7, sequence 1.
const ID: u64 = (4 << 61) | (31_536_000_000 << 20) | (7 << 10) | 1;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/wire/{name}"))
}

/// The bytes of fixture `name`, which `made` encodes: written first when asked to.
fn golden(name: &str, made: &[u8]) -> Vec<u8> {
    let path = fixture(name);
    if std::env::var_os("GUILD_WRITE_FIXTURES").is_some() && !path.exists() {
        std::fs::write(&path, made).unwrap();
    }
    std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn topics(names: &[&str]) -> Topics {
    names.iter().map(|name| Arc::from(*name)).collect()
}

/// The fewest fields a message has: one topic, a JSON payload, no reply or headers.
fn minimal() -> Message {
    let id = MessageId::from_raw(ID);
    Message {
        id,
        namespace: "shop".into(),
        topics: topics(&["orders"]),
        sender: "till-1".into(),
        payload: Payload::new("json", br#"{"item":"tea","count":2}"#.to_vec()),
        reply_to: None,
        in_reply_to: None,
        thread: None,
        headers: BTreeMap::new(),
        timestamp_ms: id.unix_ms(),
    }
}

/// Every field set: several topics, a binary payload, a reply, a thread, headers with
/// trace context, an urgent priority, text outside ASCII.
fn full() -> Message {
    let id = MessageId::from_raw(ID & !(7 << 61) | 2);
    let mut headers = BTreeMap::new();
    headers.insert(
        "traceparent".to_owned(),
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned(),
    );
    headers.insert("tracestate".to_owned(), "vendor=1".to_owned());
    headers.insert("überschrift".to_owned(), String::new());
    Message {
        id,
        namespace: "shop".into(),
        topics: topics(&["orders", "audit", "inbox:kitchen"]),
        sender: "kassé".into(),
        payload: Payload::new("application/octet-stream", vec![0, 1, 2, 0xfe, 0xff]),
        reply_to: Some("replies:till-1".to_owned()),
        in_reply_to: Some(MessageId::from_raw(ID - 5)),
        thread: Some(MessageId::from_raw(ID - 9)),
        headers,
        timestamp_ms: id.unix_ms(),
    }
}

fn encoded(message: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    encode_message(message, &mut out);
    out
}

#[test]
fn messages_decode_from_and_encode_to_their_golden_files() {
    for (name, message) in [
        ("message-minimal.bin", minimal()),
        ("message-full.bin", full()),
    ] {
        let bytes = golden(name, &encoded(&message));
        assert_eq!(decode_message(&bytes).unwrap(), message, "{name}");
        assert_eq!(encoded(&message), bytes, "{name}: the encoding changed");
        assert_eq!(message_id(&bytes).unwrap(), message.id, "{name}");
    }
}

#[test]
fn a_frame_decodes_from_and_encodes_to_its_golden_file() {
    let messages = [minimal(), full()];
    let mut made = Vec::new();
    for message in &messages {
        append_to_frame(message, &mut made);
    }
    let bytes = golden("frame.bin", &made);
    assert_eq!(decode_frame(&bytes).unwrap(), messages);
    assert_eq!(made, bytes, "the encoding of frames changed");
}

#[test]
fn a_dead_letter_decodes_from_and_encodes_to_its_golden_file() {
    let letter = DeadLetter {
        client: "kitchen".to_owned(),
        topic: "orders".to_owned(),
        message: minimal(),
        failure: Failure {
            kind: "error".to_owned(),
            text: "out of tea".to_owned(),
        },
    };
    let payload = letter.to_payload();
    assert_eq!(payload.format, DEAD_LETTER_FORMAT);
    let bytes = golden("dead-letter.bin", &payload.bytes);
    let mut carrier = minimal();
    carrier.payload = Payload::new(DEAD_LETTER_FORMAT, bytes.clone());
    assert_eq!(DeadLetter::from_message(&carrier).unwrap(), letter);
    assert_eq!(&payload.bytes[..], &bytes[..], "the encoding changed");
}

/// Fields a later version may add (a varint, a string, a nested message, fixed-width
/// numbers), at the top level and inside the payload and a header, are skipped.
#[test]
fn fields_unknown_to_this_version_are_skipped() {
    let mut made = encoded(&minimal());
    // Field 12, a varint; field 40, a string; field 13, four fixed bytes; field 14,
    // eight fixed bytes.
    made.extend_from_slice(&[12 << 3, 0x96, 0x01]);
    // (The key of field 40 takes two bytes as a varint: 40 << 3 | 2 = 0x142.)
    made.extend_from_slice(&[0xc2, 0x02, 6]);
    made.extend_from_slice(b"future");
    made.extend_from_slice(&[(13 << 3) | 5, 1, 2, 3, 4]);
    made.extend_from_slice(&[(14 << 3) | 1, 1, 2, 3, 4, 5, 6, 7, 8]);
    // A second payload field with only an unknown field in it: merged, changing nothing.
    made.extend_from_slice(&[(5 << 3) | 2, 2, 3 << 3, 1]);
    let bytes = golden("message-unknown-fields.bin", &made);
    assert_eq!(decode_message(&bytes).unwrap(), minimal());
}

#[test]
fn damaged_bytes_are_refused_by_name() {
    let bytes = encoded(&full());
    for cut in 1..bytes.len() {
        // Every prefix either decodes (it ends between fields) or is refused; none panics.
        let _ = decode_message(&bytes[..cut]);
    }
    let mut wrong_type = bytes.clone();
    wrong_type[0] = (1 << 3) | 2;
    let error = decode_message(&wrong_type).unwrap_err();
    assert!(error.to_string().contains("guild.v1"), "{error}");
    let mut contradiction = encoded(&minimal());
    // The priority field (6) says urgent, the id says normal.
    contradiction.extend_from_slice(&[6 << 3, 1]);
    let error = decode_message(&contradiction).unwrap_err();
    assert!(error.to_string().contains("priority"), "{error}");
    let error = decode_message(&[(2 << 3) | 2, 2, 0xff, 0xfe]).unwrap_err();
    assert!(error.to_string().contains("UTF-8"), "{error}");
}
