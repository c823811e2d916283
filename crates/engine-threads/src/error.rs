//! Everything that goes wrong in this crate, as one private enum, and the one place it
//! becomes guild's public [`Error`].

use engine_core::{Error, ErrorKind};

use crate::NAME;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ThreadsError {
    #[error("agent {agent:?}: cannot start its thread: {source}")]
    Spawn {
        agent: String,
        source: std::io::Error,
    },
    #[error("agent {agent:?}: its thread ended before reporting")]
    Vanished { agent: String },
}

impl From<ThreadsError> for Error {
    fn from(error: ThreadsError) -> Self {
        let message = error.to_string();
        match error {
            // Out of threads or memory now; another try later may find room.
            ThreadsError::Spawn { source, .. } => Error::new(ErrorKind::Io, NAME, message)
                .retryable(true)
                .with_source(source),
            ThreadsError::Vanished { .. } => Error::new(ErrorKind::Internal, NAME, message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_survives() {
        let error = Error::from(ThreadsError::Spawn {
            agent: "a".into(),
            source: std::io::Error::from(std::io::ErrorKind::OutOfMemory),
        });
        assert_eq!(error.kind(), ErrorKind::Io);
        let source = std::error::Error::source(&error).expect("a source");
        assert!(source.downcast_ref::<std::io::Error>().is_some());
    }
}
