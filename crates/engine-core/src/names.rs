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

/// How many of the names last handed out a thread compares with before it looks in its
/// table: the messages of one frame mostly repeat one namespace, sender and topic.
const RECENT: usize = 4;

thread_local! {
    static NAMES: RefCell<Names> = RefCell::new(Names::default());
}

/// One thread's interned names.
#[derive(Default)]
pub(crate) struct Names {
    table: HashSet<Arc<str>>,
    recent: [Option<Arc<str>>; RECENT],
    next: usize,
}

impl Names {
    /// The shared form of `name`.
    fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.recently(name.as_bytes()) {
            return shared;
        }
        let shared = match self.table.get(name) {
            Some(shared) => shared.clone(),
            None => {
                if self.table.len() >= NAMES_PER_THREAD {
                    self.table.clear();
                }
                let shared: Arc<str> = Arc::from(name);
                self.table.insert(shared.clone());
                shared
            }
        };
        self.remember(&shared);
        shared
    }

    /// The shared form of the name whose UTF-8 encoding is `bytes`, or `None` when they
    /// are not UTF-8. A name seen lately is found without checking its bytes again.
    pub(crate) fn intern_bytes(&mut self, bytes: &[u8]) -> Option<Arc<str>> {
        match self.recently(bytes) {
            Some(shared) => Some(shared),
            None => std::str::from_utf8(bytes)
                .ok()
                .map(|name| self.intern(name)),
        }
    }

    fn recently(&self, bytes: &[u8]) -> Option<Arc<str>> {
        self.recent
            .iter()
            .flatten()
            .find(|name| name.as_bytes() == bytes)
            .cloned()
    }

    fn remember(&mut self, shared: &Arc<str>) {
        self.recent[self.next] = Some(shared.clone());
        self.next = (self.next + 1) % RECENT;
    }
}

/// The shared form of `name`: the same `Arc` as the last time this thread asked for
/// it, when it did.
pub fn intern(name: &str) -> Arc<str> {
    with_names(|names| names.intern(name))
}

/// Runs `f` with this thread's names, for a caller that interns several at once (one
/// thread-local access for a whole message). `f` must not call [`intern`].
pub(crate) fn with_names<R>(f: impl FnOnce(&mut Names) -> R) -> R {
    NAMES.with(|names| f(&mut names.borrow_mut()))
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
        // Past the recent names, the table still shares it.
        for name in ["a", "b", "c", "d", "e"] {
            intern(name);
        }
        assert!(Arc::ptr_eq(&first, &intern("orders")));
        let bytes = with_names(|names| names.intern_bytes(b"orders")).unwrap();
        assert!(Arc::ptr_eq(&first, &bytes));
        assert!(with_names(|names| names.intern_bytes(&[0xff])).is_none());
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
