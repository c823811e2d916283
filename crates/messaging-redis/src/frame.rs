//! The frame: how a stream entry holds the messages one batch published to its topic.
//! Field `frame` of the entry is a `guild.v1.Frame` (`proto/guild/v1/message.proto`),
//! which any language's protobuf library reads. Frames concatenate, so the writer joins
//! what [`encode`] made for each message of a batch; readers and history take it apart.
//!
//! Entries written before frames were protobuf hold field `m` (guild's bincode frames);
//! they are refused with an error that says so, and stay in the stream untouched.

use std::sync::Arc;

use engine_core::wire::{append_to_frame, decode_message, frame_members, message_id};
use engine_core::{Error, Message, MessageId, Result};

use crate::error::BackendError;

/// The name of the entry field that holds the frame.
pub(crate) const FIELD: &[u8] = b"frame";

/// The field that held the frames of guild versions before protobuf frames.
const BINCODE_FIELD: &[u8] = b"m";

/// `message` encoded as one member of a frame.
pub(crate) fn encode(message: &Message) -> Vec<u8> {
    let mut bytes = Vec::new();
    append_to_frame(message, &mut bytes);
    bytes
}

/// The messages of an entry, given its fields.
pub(crate) fn decode_fields(fields: &[Vec<u8>]) -> Result<Vec<Arc<Message>>> {
    let mut messages = Vec::new();
    for member in frame_members(frame_of(fields)?) {
        let message = decode_message(member.map_err(corrupt)?).map_err(corrupt)?;
        messages.push(Arc::new(message));
    }
    if messages.is_empty() {
        return Err(BackendError::Corrupt {
            why: "a frame without messages".to_owned(),
            source: None,
        }
        .into());
    }
    Ok(messages)
}

/// The message `id` among an entry's, decoding only that one.
pub(crate) fn find_in_fields(fields: &[Vec<u8>], id: MessageId) -> Result<Option<Arc<Message>>> {
    for member in frame_members(frame_of(fields)?) {
        let member = member.map_err(corrupt)?;
        if message_id(member).map_err(corrupt)? == id {
            return Ok(Some(Arc::new(decode_message(member).map_err(corrupt)?)));
        }
    }
    Ok(None)
}

/// The frame among an entry's fields (name, value, name, value...).
fn frame_of(fields: &[Vec<u8>]) -> Result<&[u8]> {
    let value = |name: &[u8]| {
        fields
            .chunks(2)
            .find(|pair| pair[0] == name)
            .and_then(|pair| pair.get(1))
    };
    if let Some(frame) = value(FIELD) {
        return Ok(frame);
    }
    let why = if value(BINCODE_FIELD).is_some() {
        BackendError::OldFormat
    } else {
        BackendError::Corrupt {
            why: "no frame field".to_owned(),
            source: None,
        }
    };
    Err(why.into())
}

fn corrupt(error: Error) -> Error {
    BackendError::Corrupt {
        why: error.to_string(),
        source: Some(error),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use engine_core::{ErrorKind, IdGenerator, Payload};

    use super::*;

    #[test]
    fn members_joined_are_one_frame() {
        let ids = IdGenerator::new(3).unwrap();
        let messages: Vec<Message> = ["a", "b"]
            .iter()
            .map(|text| {
                Message::builder("t", Payload::encode_json(text).unwrap()).build(&ids, "g", "p")
            })
            .collect();
        let frame: Vec<u8> = messages.iter().flat_map(encode).collect();
        let fields = [FIELD.to_vec(), frame];
        let read = decode_fields(&fields).unwrap();
        assert_eq!(
            read.iter().map(|m| (**m).clone()).collect::<Vec<_>>(),
            messages
        );
        let second = find_in_fields(&fields, messages[1].id).unwrap();
        assert_eq!(second.as_deref(), Some(&messages[1]));
    }

    #[test]
    fn an_entry_in_the_old_bincode_format_is_refused_by_name() {
        let error = decode_fields(&[b"m".to_vec(), vec![1, 0, 0, 0, 0]]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Codec);
        assert!(error.to_string().contains("bincode format"), "{error}");
        let error = decode_fields(&[b"x".to_vec(), vec![]]).unwrap_err();
        assert!(error.to_string().contains("no frame field"), "{error}");
    }
}
