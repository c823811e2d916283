//! Everything that goes wrong in the facade itself, as one private enum, and the one
//! place it becomes the public [`Error`].

use std::time::Duration;

use engine_core::{Error, ErrorKind, MessageId};

use crate::SpecErrors;

/// The component name of errors the facade raises.
const COMPONENT: &str = "guild";

#[derive(Debug, thiserror::Error)]
pub(crate) enum GuildError {
    #[error("unknown engine {name:?}; this build has: {known}")]
    UnknownEngine { name: String, known: String },
    #[error("unknown messaging backend {scheme:?}; this build has: {known}")]
    UnknownMessaging { scheme: String, known: String },
    #[error("{why}")]
    BadMessaging { why: String },
    #[error("agent {agent:?} is not one this guild launched")]
    NotLaunched { agent: String },
    #[error("no reply to request {id} within {timeout:?}")]
    NoReply { id: MessageId, timeout: Duration },
    #[error("{0}")]
    Spec(#[source] SpecErrors),
    #[error(
        "the spec's [{engine}] table would be ignored: a {engine} engine with its own \
         settings was supplied with with_engine; remove the table or build the engine from it"
    )]
    #[cfg(any(feature = "engine-pool", feature = "engine-cluster"))]
    TableIgnored { engine: &'static str },
}

impl From<GuildError> for Error {
    fn from(error: GuildError) -> Self {
        let (component, kind, retryable) = match &error {
            GuildError::UnknownEngine { .. }
            | GuildError::UnknownMessaging { .. }
            | GuildError::BadMessaging { .. } => (COMPONENT, ErrorKind::InvalidConfig, false),
            #[cfg(any(feature = "engine-pool", feature = "engine-cluster"))]
            GuildError::TableIgnored { .. } => (COMPONENT, ErrorKind::InvalidConfig, false),
            // The reply may come on a later try; the request may have been handled.
            GuildError::NoReply { .. } => (COMPONENT, ErrorKind::TimedOut, true),
            GuildError::Spec(_) => ("spec", ErrorKind::InvalidSpec, false),
            GuildError::NotLaunched { .. } => (COMPONENT, ErrorKind::NotFound, false),
        };
        let converted = Error::new(kind, component, error.to_string()).retryable(retryable);
        match error {
            GuildError::Spec(errors) => converted.with_source(errors),
            _ => converted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SpecError;

    #[test]
    fn every_problem_of_a_spec_survives_as_the_source() {
        let problem = SpecError {
            file: "g.toml".into(),
            line: Some(3),
            column: None,
            field: "agents[0].type".into(),
            message: "unknown agent type".into(),
        };
        let error = Error::from(GuildError::Spec(SpecErrors(vec![problem.clone()])));
        assert_eq!(error.kind(), ErrorKind::InvalidSpec);
        let source = std::error::Error::source(&error).expect("a source");
        let errors = source
            .downcast_ref::<SpecErrors>()
            .expect("the spec's errors");
        assert_eq!(errors.0, [problem]);
        let unknown = Error::from(GuildError::UnknownEngine {
            name: "warp".into(),
            known: "sync".into(),
        });
        assert_eq!(unknown.kind(), ErrorKind::InvalidConfig);
        assert!(!unknown.is_retryable());
    }
}
