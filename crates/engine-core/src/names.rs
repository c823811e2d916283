//! Shared names and small inline buffers, so that a message costs as few allocations as
//! it can: topic names are interned (a name this thread has used before is shared, not
//! copied), a message's topic list holds one topic inline, and a payload holds up to
//! [`INLINE_PAYLOAD`] bytes inline.

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::Arc;

use serde::de::{SeqAccess, Visitor};
use serde::{Deserializer, Serializer};
use smallvec::SmallVec;

/// The bytes a payload holds without allocating.
pub const INLINE_PAYLOAD: usize = 32;

/// A message's topics: one is held inline.
pub type Topics = SmallVec<[Arc<str>; 1]>;

/// A payload's bytes: up to [`INLINE_PAYLOAD`] are held inline.
pub type PayloadBytes = SmallVec<[u8; INLINE_PAYLOAD]>;

/// How many names one thread keeps; past it the table starts over, so names that are
/// used once each (reply topics made per request) cannot grow it without bound.
const NAMES_PER_THREAD: usize = 4096;

thread_local! {
    static NAMES: RefCell<HashSet<Arc<str>>> = RefCell::new(HashSet::new());
}

/// The shared form of `name`: the same `Arc` as the last time this thread asked for
/// it, when it did.
pub fn intern(name: &str) -> Arc<str> {
    NAMES.with(|names| {
        let mut names = names.borrow_mut();
        if let Some(shared) = names.get(name) {
            return shared.clone();
        }
        if names.len() >= NAMES_PER_THREAD {
            names.clear();
        }
        let shared: Arc<str> = Arc::from(name);
        names.insert(shared.clone());
        shared
    })
}

/// Serializes payload bytes as a byte string (what `serde_bytes` does for a `Vec<u8>`,
/// so the encoding is unchanged), and reads them from a byte string or a sequence.
pub(crate) mod payload_bytes {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(bytes: &PayloadBytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PayloadBytes, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = PayloadBytes;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("payload bytes")
        }

        fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<PayloadBytes, E> {
            Ok(PayloadBytes::from_slice(bytes))
        }

        fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<PayloadBytes, E> {
            Ok(PayloadBytes::from_vec(bytes))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PayloadBytes, A::Error> {
            let mut bytes = PayloadBytes::new();
            // A hostile length hint must not reserve memory: grow as bytes arrive.
            while let Some(byte) = seq.next_element::<u8>()? {
                bytes.push(byte);
            }
            Ok(bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_used_again_is_shared() {
        let first = intern("orders");
        let again = intern(&String::from("orders"));
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(&*intern("other"), "other");
    }

    #[test]
    fn payload_bytes_keep_their_encoding() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Old {
            #[serde(with = "serde_bytes")]
            bytes: Vec<u8>,
        }
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct New {
            #[serde(with = "payload_bytes")]
            bytes: PayloadBytes,
        }
        let old = Old {
            bytes: b"hello".to_vec(),
        };
        let json = serde_json::to_string(&old).unwrap();
        let new: New = serde_json::from_str(&json).unwrap();
        assert_eq!(&new.bytes[..], b"hello");
        assert_eq!(serde_json::to_string(&new).unwrap(), json);
    }
}
