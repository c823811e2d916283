//! Everything that goes wrong in this crate, as one private enum, and the one place it
//! becomes guild's public [`Error`].

use engine_core::{Error, ErrorKind};

use crate::NAME;

#[derive(Debug, thiserror::Error)]
pub(crate) enum PoolError {
    #[error("cannot start the pool's worker threads: {0}")]
    Runtime(std::io::Error),
    #[error("agent {agent:?}: cannot start its dedicated thread: {source}")]
    Spawn {
        agent: String,
        source: std::io::Error,
    },
    #[error("pool setting {setting}: {why}")]
    BadConfig { setting: &'static str, why: String },
    #[error(
        "agent {agent:?}: `{setting}` takes effect only under the pool's {policy:?} policy, \
         and this pool's policy is {current:?}; remove it or set the pool's policy"
    )]
    NeedsPolicy {
        agent: String,
        setting: &'static str,
        policy: &'static str,
        current: &'static str,
    },
}

impl From<PoolError> for Error {
    fn from(error: PoolError) -> Self {
        let message = error.to_string();
        match error {
            // Out of threads or memory now; another try later may find room.
            PoolError::Runtime(source) | PoolError::Spawn { source, .. } => {
                Error::new(ErrorKind::Io, NAME, message)
                    .retryable(true)
                    .with_source(source)
            }
            PoolError::BadConfig { .. } => Error::new(ErrorKind::InvalidConfig, NAME, message),
            PoolError::NeedsPolicy { .. } => Error::new(ErrorKind::InvalidSpec, NAME, message),
        }
    }
}
