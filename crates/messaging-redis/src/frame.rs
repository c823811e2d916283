//! The frame: how a stream entry holds the messages one batch published to its topic.
//! Field `m` of the entry is each message's bincode encoding behind its length as four
//! little-endian bytes. The writer concatenates what [`encode`] made; readers and
//! history take it apart.

use std::sync::Arc;

use engine_core::{Error, Message, MessageId, Result};

use crate::error::BackendError;

/// `message` encoded as one frame member: its length, then its bincode encoding.
pub(crate) fn encode(message: &Message) -> Result<Vec<u8>> {
    let mut bytes = vec![0; 4];
    bincode::serde::encode_into_std_write(message, &mut bytes, bincode::config::standard())
        .map_err(BackendError::Encode)?;
    let length = u32::try_from(bytes.len() - 4).map_err(|_| BackendError::TooLarge)?;
    bytes[..4].copy_from_slice(&length.to_le_bytes());
    Ok(bytes)
}

/// The messages in an entry's fields (`m`, a frame: each message encoded, behind its
/// length as four little-endian bytes).
pub(crate) fn decode_fields(fields: &[Vec<u8>]) -> Result<Vec<Arc<Message>>> {
    let mut messages = Vec::new();
    for member in frame_members(fields)? {
        messages.push(decode_member(member?)?);
    }
    if messages.is_empty() {
        return Err(corrupt("no message"));
    }
    Ok(messages)
}

/// The message `id` among an entry's, decoding only that one.
pub(crate) fn find_in_fields(fields: &[Vec<u8>], id: MessageId) -> Result<Option<Arc<Message>>> {
    for member in frame_members(fields)? {
        let member = member?;
        // The id is the first field of the encoding.
        let (first, _): (MessageId, _) =
            bincode::serde::decode_from_slice(member, bincode::config::standard())
                .map_err(corrupt_decode)?;
        if first == id {
            return decode_member(member).map(Some);
        }
    }
    Ok(None)
}

/// The encoded messages of an entry's frame.
fn frame_members(fields: &[Vec<u8>]) -> Result<impl Iterator<Item = Result<&[u8]>>> {
    let mut frame = fields
        .chunks(2)
        .find(|pair| pair[0] == b"m")
        .and_then(|pair| pair.get(1))
        .ok_or_else(|| corrupt("no message field"))?
        .as_slice();
    Ok(std::iter::from_fn(move || {
        if frame.is_empty() {
            return None;
        }
        let Some((length, rest)) = frame.split_first_chunk::<4>() else {
            frame = &[];
            return Some(Err(corrupt("a cut length")));
        };
        let length = u32::from_le_bytes(*length) as usize;
        if rest.len() < length {
            frame = &[];
            return Some(Err(corrupt("a cut message")));
        }
        let (member, rest) = rest.split_at(length);
        frame = rest;
        Some(Ok(member))
    }))
}

fn decode_member(member: &[u8]) -> Result<Arc<Message>> {
    let (message, _) = bincode::serde::decode_from_slice(member, bincode::config::standard())
        .map_err(corrupt_decode)?;
    Ok(Arc::new(message))
}

fn corrupt(why: &str) -> Error {
    BackendError::Corrupt {
        why: why.to_owned(),
        source: None,
    }
    .into()
}

fn corrupt_decode(error: bincode::error::DecodeError) -> Error {
    BackendError::Corrupt {
        why: error.to_string(),
        source: Some(error),
    }
    .into()
}
