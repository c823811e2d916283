//! 64-bit message ids that sort by priority, then time, and the generator that mints them.
//!
//! Layout, most significant bit first:
//!
//! | bits | field |
//! |------|-------|
//! | 3    | priority (0 = most urgent) |
//! | 41   | milliseconds since 2025-01-01T00:00:00Z (about 69 years) |
//! | 10   | generator id (one per process or node, leased and reused, never one per agent) |
//! | 10   | sequence within the millisecond |
//!
//! Sorting ids therefore sorts messages by priority, then by time. A generator is
//! monotonic: when its sequence runs out within a millisecond it moves on to the next
//! millisecond, and when the wall clock goes backwards it keeps counting from the last
//! time it used, so ids from one generator never repeat and never go down.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::Result;
use crate::core_error::CoreError;

/// Unix milliseconds of the id epoch, 2025-01-01T00:00:00Z.
pub const ID_EPOCH_UNIX_MS: u64 = 1_735_689_600_000;

const SEQUENCE_BITS: u32 = 10;
const GENERATOR_BITS: u32 = 10;
const TIME_BITS: u32 = 41;
const PRIORITY_SHIFT: u32 = SEQUENCE_BITS + GENERATOR_BITS + TIME_BITS;
const TIME_SHIFT: u32 = SEQUENCE_BITS + GENERATOR_BITS;
const SEQUENCE_MAX: u64 = (1 << SEQUENCE_BITS) - 1;
const TIME_MAX: u64 = (1 << TIME_BITS) - 1;

/// The largest generator id a [`IdGenerator`] accepts.
pub const GENERATOR_ID_MAX: u16 = (1 << GENERATOR_BITS) - 1;

/// Delivery priority of a message; smaller is more urgent and is delivered first.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Priority {
    /// Delivered before anything else.
    Urgent = 0,
    /// Delivered before high.
    Important = 1,
    /// Delivered before above normal.
    High = 2,
    /// Delivered before normal.
    AboveNormal = 3,
    /// The default.
    #[default]
    Normal = 4,
    /// Delivered after normal.
    Low = 5,
    /// Delivered after low.
    VeryLow = 6,
    /// Delivered last.
    Lowest = 7,
}

impl Priority {
    fn from_bits(bits: u64) -> Self {
        match bits & 0b111 {
            0 => Self::Urgent,
            1 => Self::Important,
            2 => Self::High,
            3 => Self::AboveNormal,
            4 => Self::Normal,
            5 => Self::Low,
            6 => Self::VeryLow,
            _ => Self::Lowest,
        }
    }
}

/// A message id: unique per generator, ordered by priority then time.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct MessageId(u64);

impl MessageId {
    /// Wraps a raw 64-bit id (as stored by a backend).
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw 64-bit value.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The priority encoded in the id.
    pub fn priority(self) -> Priority {
        Priority::from_bits(self.0 >> PRIORITY_SHIFT)
    }

    /// Unix milliseconds at which the id was minted (the generator's logical clock).
    pub fn unix_ms(self) -> u64 {
        ((self.0 >> TIME_SHIFT) & TIME_MAX) + ID_EPOCH_UNIX_MS
    }

    /// The generator that minted the id.
    pub fn generator(self) -> u16 {
        ((self.0 >> SEQUENCE_BITS) & u64::from(GENERATOR_ID_MAX)) as u16
    }

    /// The id with its priority removed: comparing these keys compares by time alone,
    /// which is how "messages after an id" is answered so that a newer high-priority
    /// message is not skipped.
    pub fn time_key(self) -> u64 {
        self.0 & ((1 << PRIORITY_SHIFT) - 1)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// This process's generator, made on first use.
static PROCESS: OnceLock<Arc<IdGenerator>> = OnceLock::new();

/// Mints [`MessageId`]s for one generator id. Lock-free and shared by every agent of a
/// process: launching agents never consumes generator ids.
#[derive(Debug)]
pub struct IdGenerator {
    generator: u64,
    /// `(milliseconds since the epoch << SEQUENCE_BITS) | sequence` of the last id minted.
    last: AtomicU64,
}

impl IdGenerator {
    /// A generator with the given id (at most [`GENERATOR_ID_MAX`]).
    pub fn new(generator_id: u16) -> Result<Self> {
        if generator_id > GENERATOR_ID_MAX {
            return Err(CoreError::GeneratorId {
                id: generator_id,
                max: GENERATOR_ID_MAX,
            }
            .into());
        }
        Ok(Self {
            generator: u64::from(generator_id),
            last: AtomicU64::new(0),
        })
    }

    /// The generator shared by everything in this process: the one
    /// [`init_process`](Self::init_process) made, or else one with a generator id
    /// drawn at random.
    pub fn process() -> Arc<IdGenerator> {
        PROCESS
            .get_or_init(|| {
                let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
                hasher.write_u32(std::process::id());
                let id = (hasher.finish() & u64::from(GENERATOR_ID_MAX)) as u16;
                Arc::new(IdGenerator::new(id).expect("generator id is masked to its range"))
            })
            .clone()
    }

    /// Makes this process's generator mint ids under `generator_id` (an engine that
    /// starts other processes hands each one of its own). It must come before anything
    /// in the process asks for [`process`](Self::process); afterwards it fails with
    /// `Conflict` unless the id is the one already in use.
    pub fn init_process(generator_id: u16) -> Result<Arc<IdGenerator>> {
        let fresh = Arc::new(IdGenerator::new(generator_id)?);
        let chosen = PROCESS.get_or_init(|| fresh).clone();
        if chosen.generator_id() == generator_id {
            Ok(chosen)
        } else {
            Err(CoreError::GeneratorTaken {
                wanted: generator_id,
                taken: chosen.generator_id(),
            }
            .into())
        }
    }

    /// This generator's id.
    pub fn generator_id(&self) -> u16 {
        self.generator as u16
    }

    /// Mints the next id with `priority`, reading the wall clock.
    pub fn next(&self, priority: Priority) -> MessageId {
        self.next_at(priority, unix_ms_now())
    }

    /// Mints the next id as if the wall clock read `unix_ms`. Ids stay strictly
    /// increasing (for one priority) whatever the clock does.
    pub fn next_at(&self, priority: Priority, unix_ms: u64) -> MessageId {
        let now = unix_ms.saturating_sub(ID_EPOCH_UNIX_MS).min(TIME_MAX);
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let last_ms = last >> SEQUENCE_BITS;
            let last_seq = last & SEQUENCE_MAX;
            let next = if now > last_ms {
                now << SEQUENCE_BITS
            } else if last_seq < SEQUENCE_MAX {
                last + 1
            } else {
                (last_ms + 1) << SEQUENCE_BITS
            };
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    let ms = (next >> SEQUENCE_BITS) & TIME_MAX;
                    let seq = next & SEQUENCE_MAX;
                    return MessageId(
                        ((priority as u64) << PRIORITY_SHIFT)
                            | (ms << TIME_SHIFT)
                            | (self.generator << SEQUENCE_BITS)
                            | seq,
                    );
                }
                Err(actual) => last = actual,
            }
        }
    }
}

/// The wall clock in Unix milliseconds.
pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = ID_EPOCH_UNIX_MS + 1_000_000;

    #[test]
    fn ids_sort_by_priority_then_time() {
        let ids = IdGenerator::new(7).unwrap();
        let early_low = ids.next_at(Priority::Low, T0);
        let late_urgent = ids.next_at(Priority::Urgent, T0 + 10);
        let late_low = ids.next_at(Priority::Low, T0 + 10);
        assert!(late_urgent < early_low);
        assert!(early_low < late_low);
        assert!(early_low.time_key() < late_urgent.time_key());
        assert_eq!(late_urgent.priority(), Priority::Urgent);
        assert_eq!(late_urgent.unix_ms(), T0 + 10);
        assert_eq!(late_urgent.generator(), 7);
    }

    #[test]
    fn clock_going_backwards_keeps_ids_increasing() {
        let ids = IdGenerator::new(1).unwrap();
        let a = ids.next_at(Priority::Normal, T0);
        let b = ids.next_at(Priority::Normal, T0 - 5_000);
        let c = ids.next_at(Priority::Normal, T0 - 4_000);
        assert!(a < b && b < c);
    }

    #[test]
    fn sequence_overflow_moves_to_the_next_millisecond() {
        let ids = IdGenerator::new(2).unwrap();
        let mut previous = ids.next_at(Priority::Normal, T0);
        for _ in 0..5_000 {
            let id = ids.next_at(Priority::Normal, T0);
            assert!(id > previous);
            previous = id;
        }
        assert!(previous.unix_ms() > T0);
    }

    #[test]
    fn the_process_generator_keeps_the_id_it_started_with() {
        let current = IdGenerator::process().generator_id();
        assert!(IdGenerator::init_process(current).is_ok());
        let other = (current + 1) % (GENERATOR_ID_MAX + 1);
        let refused = IdGenerator::init_process(other).unwrap_err();
        assert_eq!(refused.kind(), crate::ErrorKind::Conflict);
        assert_eq!(IdGenerator::process().generator_id(), current);
    }

    #[test]
    fn generator_ids_are_bounded_and_reusable() {
        assert!(IdGenerator::new(GENERATOR_ID_MAX + 1).is_err());
        let a = IdGenerator::new(GENERATOR_ID_MAX).unwrap();
        assert_eq!(a.next(Priority::Normal).generator(), GENERATOR_ID_MAX);
    }
}
