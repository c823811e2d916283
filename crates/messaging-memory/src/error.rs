//! Everything that goes wrong in this crate, as one private enum, and the one place it
//! becomes guild's public [`Error`].

use std::time::Duration;

use engine_core::{Error, ErrorKind};

use crate::NAME;

#[derive(Debug, thiserror::Error)]
pub(crate) enum MemoryError {
    #[error("message {id} has no topic")]
    NoTopic { id: engine_core::MessageId },
    #[error("a subscription needs a client id")]
    NoClientId,
    #[error(
        "the queue of {client:?} is full ({capacity} deliveries wait) and stayed full{}: it is \
         not keeping up",
        waited.map(|waited| format!(" for {}ms", waited.as_millis())).unwrap_or_default()
    )]
    QueueFull {
        client: String,
        capacity: usize,
        waited: Option<Duration>,
    },
    #[error("client {client:?} is already subscribed in namespace {namespace:?}")]
    Subscribed { client: String, namespace: String },
    #[error("client {client:?} completed a delivery it was not handed")]
    NotHanded { client: String },
}

impl From<MemoryError> for Error {
    fn from(error: MemoryError) -> Self {
        let (kind, retryable) = match &error {
            MemoryError::NoTopic { .. } | MemoryError::NoClientId => {
                (ErrorKind::InvalidInput, false)
            }
            // The receiver may catch up: a later publish may find room.
            MemoryError::QueueFull { .. } => (ErrorKind::LimitExceeded, true),
            MemoryError::Subscribed { .. } | MemoryError::NotHanded { .. } => {
                (ErrorKind::Conflict, false)
            }
        };
        // Nothing here has a cause below it: the in-memory bus calls nothing that fails.
        Error::new(kind, NAME, error.to_string()).retryable(retryable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_say_whether_to_retry() {
        let full = Error::from(MemoryError::QueueFull {
            client: "slow".into(),
            capacity: 2,
            waited: Some(Duration::from_millis(5)),
        });
        assert_eq!(full.kind(), ErrorKind::LimitExceeded);
        assert!(full.is_retryable());
        assert!(full.message().contains("stayed full for 5ms"), "{full}");
        let no_topic = Error::from(MemoryError::NoClientId);
        assert_eq!(no_topic.kind(), ErrorKind::InvalidInput);
        assert!(!no_topic.is_retryable());
    }
}
