//! One account of Redis being out of reach, shared by everything of a backend instance
//! that talks to it (the writer, the readers, position updates): a warning when the
//! outage begins, one every [`REPORT_EVERY`] while it lasts, saying for how long and
//! how many publishes wait, and a note when it ends. Not a warning per retry.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often an outage that goes on is reported.
pub(crate) const REPORT_EVERY: Duration = Duration::from_secs(10);

/// The outage of one backend instance, while there is one.
#[derive(Debug)]
pub(crate) struct Outage {
    address: String,
    state: Mutex<Option<Down>>,
}

#[derive(Debug)]
struct Down {
    since: Instant,
    reported: Instant,
    why: String,
}

impl Outage {
    /// No outage yet, of the server at `address`.
    pub(crate) fn new(address: String) -> Self {
        Self {
            address,
            state: Mutex::new(None),
        }
    }

    /// Talking to Redis failed with `why`; `waiting` publishes are queued.
    pub(crate) fn failed(&self, why: &str, waiting: usize) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut *state {
            None => {
                tracing::warn!(address = %self.address, error = why, waiting, "Redis is out of reach; retrying");
                let now = Instant::now();
                *state = Some(Down {
                    since: now,
                    reported: now,
                    why: why.to_owned(),
                });
            }
            Some(down) => {
                down.why = why.to_owned();
                if down.reported.elapsed() >= REPORT_EVERY {
                    down.reported = Instant::now();
                    tracing::warn!(
                        address = %self.address,
                        error = why,
                        waiting,
                        "Redis has been out of reach for {}s",
                        down.since.elapsed().as_secs()
                    );
                }
            }
        }
    }

    /// Talking to Redis worked.
    pub(crate) fn recovered(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(down) = state.take() {
            tracing::info!(address = %self.address, "Redis is back after {:.1}s", down.since.elapsed().as_secs_f64());
        }
    }

    /// The outage in one line, while there is one.
    pub(crate) fn describe(&self, waiting: usize) -> Option<String> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.as_ref().map(|down| {
            format!(
                "Redis at {} has been out of reach for {}s ({}); {waiting} publishes wait",
                self.address,
                down.since.elapsed().as_secs(),
                down.why
            )
        })
    }
}
