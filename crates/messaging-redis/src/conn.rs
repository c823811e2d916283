//! Connections to Redis: made with timeouts, remade after a failure, and a backoff with
//! jitter for the threads that keep trying.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use engine_core::{BackoffKind, Error, Jitter, Result};
use redis::{Client, Connection, RedisError, RedisResult};

use crate::config::RedisConfig;
use crate::error::BackendError;

/// Makes connections to one Redis server.
pub(crate) struct Connector {
    client: Client,
    config: RedisConfig,
}

impl Connector {
    /// A connector for `config` (nothing is connected yet).
    pub(crate) fn new(config: RedisConfig) -> Result<Self> {
        let client = Client::open(config.connection_info()?).map_err(BackendError::Settings)?;
        Ok(Self { client, config })
    }

    /// A new connection, with the configured timeouts.
    pub(crate) fn connect(&self) -> Result<Connection> {
        let connection = self
            .client
            .get_connection_with_timeout(self.config.connect_timeout)
            .and_then(|connection| {
                connection.set_read_timeout(Some(self.config.io_timeout))?;
                connection.set_write_timeout(Some(self.config.io_timeout))?;
                Ok(connection)
            });
        connection.map_err(|e| self.unavailable(e))
    }

    /// The error for a failure to talk to the server, naming it.
    pub(crate) fn unavailable(&self, error: redis::RedisError) -> Error {
        BackendError::Unreachable {
            address: self.config.address(),
            source: error,
        }
        .into()
    }

    /// The settings.
    pub(crate) fn config(&self) -> &RedisConfig {
        &self.config
    }
}

/// Whether `error` means the connection is broken (rather than the command wrong).
pub(crate) fn is_broken(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || error.is_unrecoverable_error()
}

/// One connection for commands, remade when it breaks.
pub(crate) struct Commands {
    slot: Mutex<Option<Connection>>,
}

impl Commands {
    /// No connection yet.
    pub(crate) fn new() -> Self {
        Self {
            slot: Mutex::new(None),
        }
    }

    /// Runs `command` on the connection. Every command guild sends is idempotent, so a
    /// command whose connection broke is sent once more on a new connection; if that
    /// fails too, the error names the server.
    pub(crate) fn run<T>(
        &self,
        connector: &Connector,
        mut command: impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> Result<T> {
        let mut slot = self.lock();
        for attempt in 0..2 {
            if slot.is_none() {
                *slot = Some(connector.connect()?);
            }
            let connection = slot.as_mut().expect("connected just above");
            match command(connection) {
                Ok(value) => return Ok(value),
                Err(error) if is_broken(&error) => {
                    *slot = None;
                    if attempt == 1 {
                        return Err(connector.unavailable(error));
                    }
                    tracing::debug!(%error, "a Redis connection broke; reconnecting");
                }
                Err(error) => {
                    return Err(BackendError::Refused(error).into());
                }
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    fn lock(&self) -> MutexGuard<'_, Option<Connection>> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Exponential backoff with jitter: 50 ms doubling up to 2 s, each wait drawn from half
/// to one and a half times the step (never over 2 s), so that many clients do not retry
/// in step. The arithmetic is the supervisor's, [`engine_core::Backoff`].
#[derive(Debug)]
pub(crate) struct Backoff {
    attempt: u32,
    jitter: Jitter,
}

impl Backoff {
    const STEPS: engine_core::Backoff = engine_core::Backoff {
        kind: BackoffKind::Exponential,
        initial_ms: 50,
        max_ms: 2_000,
        jitter: 0.5,
        reset_after_ms: 0,
    };

    /// A backoff at its first step.
    pub(crate) fn new() -> Self {
        Self {
            attempt: 0,
            jitter: Jitter::default(),
        }
    }

    /// Back to the first step, after a success.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The next wait.
    pub(crate) fn next_wait(&mut self) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        Self::STEPS.delay(self.attempt, self.jitter.unit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_grows_to_its_cap_with_jitter() {
        let mut backoff = Backoff::new();
        let waits: Vec<Duration> = (0..10).map(|_| backoff.next_wait()).collect();
        assert!(waits[0] >= Duration::from_millis(25) && waits[0] < Duration::from_millis(75));
        assert!(waits[9] >= Duration::from_secs(1) && waits[9] <= Duration::from_secs(2));
        backoff.reset();
        assert!(backoff.next_wait() < Duration::from_millis(75));
    }
}
