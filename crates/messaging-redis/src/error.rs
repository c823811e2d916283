//! Everything that goes wrong in this crate, as one private enum, and the one place it
//! becomes guild's public [`Error`]: with its kind, whether a retry can help, and its
//! cause kept as the source.

use std::time::Duration;

use engine_core::{Error, ErrorKind};

use crate::NAME;

#[derive(Debug, thiserror::Error)]
pub(crate) enum BackendError {
    #[error("invalid Redis URL {url:?}: {why}")]
    BadUrl { url: String, why: String },
    #[error(
        "rediss:// needs TLS, which this build lacks: enable the `tls` feature of messaging-redis"
    )]
    NoTls,
    #[error("invalid Redis settings: {0}")]
    Settings(#[source] redis::RedisError),
    #[error("cannot reach Redis at {address}: {source}")]
    Unreachable {
        address: String,
        source: redis::RedisError,
    },
    /// The writer saw Redis go down; `why` is what it was told.
    #[error("{why}")]
    Down { why: String },
    #[error("Redis refused a command: {0}")]
    Refused(#[source] redis::RedisError),
    #[error("Redis is not keeping up: {waiting} publishes are waiting")]
    Backlogged { waiting: usize },
    #[error("{unsent} publishes still unsent after {timeout:?}")]
    Unsent { unsent: u64, timeout: Duration },
    #[error("cannot start the {name} thread: {source}")]
    Thread {
        name: String,
        source: std::io::Error,
    },
    #[error("a message needs at least one topic")]
    NoTopic,
    #[error("the Redis backend is closed")]
    Closed,
    #[error(
        "client {client:?} asks for a queue limit; on Redis what waits is bounded by each \
         stream's retention (maxlen, maxage) instead"
    )]
    QueueLimit { client: String },
    #[error("client {client:?} of guild {namespace:?} is subscribed already")]
    Subscribed { client: String, namespace: String },
    #[error("client {client:?} completed a delivery it was not handed")]
    NotHanded { client: String },
    #[error("a corrupt entry: {why}")]
    Corrupt {
        why: String,
        #[source]
        source: Option<Error>,
    },
    #[error(
        "an entry in the bincode format of guild before protobuf frames (field `m`), which \
         this version does not read: let the version that wrote it drain the stream, or \
         delete the stream (see docs/wire-format.md)"
    )]
    OldFormat,
}

impl From<BackendError> for Error {
    fn from(error: BackendError) -> Self {
        use BackendError as E;
        let (kind, retryable) = match &error {
            E::BadUrl { .. } | E::NoTls | E::Settings(_) => (ErrorKind::InvalidConfig, false),
            E::Unreachable { .. } | E::Down { .. } | E::Backlogged { .. } | E::Unsent { .. } => {
                (ErrorKind::Unavailable, true)
            }
            E::Refused(_) => (ErrorKind::Internal, false),
            E::Thread { .. } => (ErrorKind::Io, false),
            E::NoTopic => (ErrorKind::InvalidInput, false),
            E::Closed => (ErrorKind::Closed, false),
            E::QueueLimit { .. } => (ErrorKind::Unsupported, false),
            E::Subscribed { .. } | E::NotHanded { .. } => (ErrorKind::Conflict, false),
            E::Corrupt { .. } | E::OldFormat => (ErrorKind::Codec, false),
        };
        let converted = Error::new(kind, NAME, error.to_string()).retryable(retryable);
        match error {
            E::Settings(source) | E::Refused(source) | E::Unreachable { source, .. } => {
                converted.with_source(source)
            }
            E::Thread { source, .. } => converted.with_source(source),
            E::Corrupt {
                source: Some(source),
                ..
            } => converted.with_source(source),
            _ => converted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_survives_and_the_kind_says_whether_to_retry() {
        let refused =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let error = Error::from(BackendError::Unreachable {
            address: "127.0.0.1:1".into(),
            source: refused,
        });
        assert_eq!(error.kind(), ErrorKind::Unavailable);
        assert!(error.is_retryable());
        assert!(
            error.find_cause::<redis::RedisError>().is_some(),
            "{error:?}"
        );

        let corrupt = engine_core::wire::decode_message(&[0xff]).unwrap_err();
        let error = Error::from(BackendError::Corrupt {
            why: corrupt.to_string(),
            source: Some(corrupt),
        });
        assert_eq!(error.kind(), ErrorKind::Codec);
        assert!(error.find_cause::<Error>().is_some());

        let error = Error::from(BackendError::BadUrl {
            url: "redis://".into(),
            why: "no host".into(),
        });
        assert_eq!(error.kind(), ErrorKind::InvalidConfig);
        assert!(!error.is_retryable());
        assert_eq!(
            Error::from(BackendError::NoTopic).kind(),
            ErrorKind::InvalidInput
        );
    }
}
