//! guild's codec (`engine_core::wire`) is the protobuf encoding of
//! `proto/guild/v1/message.proto`: for arbitrary messages, it writes the very bytes the
//! types `prost` generates from the file write, and each side reads what the other
//! wrote. Arbitrary and damaged bytes are refused, never a panic.

use std::sync::Arc;

use conformance::proto;
use engine_core::wire::{
    DEAD_LETTER_FORMAT, append_to_frame, decode_frame, decode_message, encode_message, message_id,
};
use engine_core::{DeadLetter, Failure, Message, MessageId, Payload};
use proptest::prelude::*;
use prost::Message as _;

/// Cases each property runs.
const CASES: u32 = 3_000;

/// `message` as the generated type holds it.
fn reference(message: &Message) -> proto::Message {
    proto::Message {
        id: message.id.raw(),
        namespace: message.namespace.to_string(),
        topics: message.topics.iter().map(|t| t.to_string()).collect(),
        sender: message.sender.to_string(),
        payload: Some(proto::Payload {
            format: message.payload.format.to_string(),
            bytes: message.payload.bytes.to_vec(),
        }),
        priority: message.priority() as i32 + 1,
        reply_to: message.reply_to.clone(),
        in_reply_to: message.in_reply_to.map(MessageId::raw),
        thread: message.thread.map(MessageId::raw),
        headers: message.headers.clone(),
        timestamp_ms: message.timestamp_ms,
    }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z:.-]{1,12}", any::<String>()]
}

fn id() -> impl Strategy<Value = MessageId> {
    any::<u64>().prop_map(MessageId::from_raw)
}

prop_compose! {
    fn message()(
        id in id(),
        namespace in text(),
        topics in proptest::collection::vec(text(), 1..4),
        sender in text(),
        format in text(),
        bytes in proptest::collection::vec(any::<u8>(), 0..80),
        reply_to in proptest::option::of(text()),
        in_reply_to in proptest::option::of(id()),
        thread in proptest::option::of(id()),
        headers in proptest::collection::btree_map(text(), text(), 0..4),
        timestamp_ms in prop_oneof![Just(0u64), any::<u64>()],
    ) -> Message {
        Message {
            id,
            namespace: namespace.into(),
            topics: topics.into_iter().map(Arc::from).collect(),
            sender: sender.into(),
            payload: Payload::new(format, bytes),
            reply_to,
            in_reply_to,
            thread,
            headers,
            timestamp_ms,
        }
    }
}

fn encoded(message: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    encode_message(message, &mut out);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Byte for byte what prost writes, read back by prost, and prost's bytes read back
    /// by guild.
    #[test]
    fn messages_are_the_generated_types_encoding(message in message()) {
        let ours = encoded(&message);
        let theirs = reference(&message).encode_to_vec();
        prop_assert_eq!(&ours, &theirs);
        prop_assert_eq!(engine_core::wire::encoded_len(&message), ours.len());
        prop_assert_eq!(proto::Message::decode(&ours[..]).unwrap(), reference(&message));
        prop_assert_eq!(decode_message(&theirs).unwrap(), message.clone());
        prop_assert_eq!(message_id(&theirs).unwrap(), message.id);
    }

    /// A frame is prost's `Frame` of the same messages, and reads back in order.
    #[test]
    fn frames_are_the_generated_types_encoding(
        messages in proptest::collection::vec(message(), 1..4),
    ) {
        let mut ours = Vec::new();
        for message in &messages {
            append_to_frame(message, &mut ours);
        }
        let theirs = proto::Frame {
            messages: messages.iter().map(reference).collect(),
        };
        prop_assert_eq!(&ours, &theirs.encode_to_vec());
        prop_assert_eq!(decode_frame(&ours).unwrap(), messages);
    }

    /// A dead letter's payload is prost's `DeadLetter`, both ways.
    #[test]
    fn dead_letters_are_the_generated_types_encoding(
        message in message(),
        client in text(),
        topic in text(),
        kind in text(),
        failure in text(),
    ) {
        let letter = DeadLetter {
            client,
            topic,
            message,
            failure: Failure { kind, text: failure },
        };
        let payload = letter.to_payload();
        let theirs = proto::DeadLetter {
            client: letter.client.clone(),
            topic: letter.topic.clone(),
            message: Some(reference(&letter.message)),
            failure: Some(proto::Failure {
                kind: letter.failure.kind.clone(),
                text: letter.failure.text.clone(),
            }),
        };
        prop_assert_eq!(&payload.bytes[..], &theirs.encode_to_vec()[..]);
        let mut carrier = letter.message.clone();
        carrier.payload = Payload::new(DEAD_LETTER_FORMAT, theirs.encode_to_vec());
        prop_assert_eq!(DeadLetter::from_message(&carrier).unwrap(), letter);
    }

    /// Arbitrary bytes decode or are refused; they never panic the decoder.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_message(&bytes);
        let _ = decode_frame(&bytes);
        let _ = message_id(&bytes);
        let carrier = Message::builder("t", Payload::new(DEAD_LETTER_FORMAT, bytes))
            .build(&engine_core::IdGenerator::process(), "g", "s");
        let _ = DeadLetter::from_message(&carrier);
    }

    /// A valid message with one byte changed, or cut short, decodes (to something) or
    /// is refused; whatever prost refuses, guild refuses too.
    #[test]
    fn damaged_messages_are_refused_where_prost_refuses_them(
        message in message(),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
        cut in any::<bool>(),
    ) {
        let mut bytes = encoded(&message);
        let at = at.index(bytes.len());
        if cut {
            bytes.truncate(at);
        } else {
            bytes[at] ^= flip;
        }
        let ours = decode_message(&bytes);
        if proto::Message::decode(&bytes[..]).is_err() {
            prop_assert!(ours.is_err(), "guild read what prost refuses: {:?}", ours);
        }
    }
}
