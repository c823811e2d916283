//! Generator ids leased to live agent processes: each agent process mints message ids
//! under a generator id no other live agent process of this program holds, taken when
//! it is started and given back once it is reaped, so ids never collide however many
//! agents a long-lived guild starts and stops.
//!
//! The table is process-wide, not per engine, so two engines in one program cannot
//! hand out the same id either. The parent's own generator id is never leased.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};

use engine_core::{GENERATOR_ID_MAX, Result};

use crate::error::ProcessError;

/// Ids held by live agent processes, and where the next search starts (ids are
/// handed out round the ring, so a freed id is not taken again at once).
static LEASED: Mutex<(BTreeSet<u16>, u16)> = Mutex::new((BTreeSet::new(), 0));

/// A generator id held for one agent process; given back when dropped.
#[derive(Debug)]
pub(crate) struct Lease(u16);

impl Lease {
    /// Leases a generator id other than `own` (the parent's), or fails when every id
    /// is held by a live agent process.
    pub(crate) fn take(own: u16) -> Result<Self> {
        let mut guard = LEASED.lock().unwrap_or_else(PoisonError::into_inner);
        let (leased, next) = &mut *guard;
        let span = u32::from(GENERATOR_ID_MAX) + 1;
        for step in 0..span {
            let id = ((u32::from(*next) + step) % span) as u16;
            if id != own && leased.insert(id) {
                *next = ((u32::from(id) + 1) % span) as u16;
                return Ok(Self(id));
            }
        }
        Err(ProcessError::GeneratorIds { held: leased.len() }.into())
    }

    /// The id.
    pub(crate) fn id(&self) -> u16 {
        self.0
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        LEASED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .remove(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine_core::ErrorKind;

    #[test]
    fn leases_are_unique_until_given_back_and_never_the_parents() {
        let own = 5;
        let held: Vec<Lease> = (0..GENERATOR_ID_MAX)
            .map(|_| Lease::take(own).unwrap())
            .collect();
        let ids: BTreeSet<u16> = held.iter().map(Lease::id).collect();
        assert_eq!(ids.len(), held.len(), "no id twice");
        assert!(!ids.contains(&own));
        let refused = Lease::take(own).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::LimitExceeded);
        drop(held);
        Lease::take(own).unwrap();
    }
}
