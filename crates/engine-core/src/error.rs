//! The portable error type that every guild crate converts its own errors into.

use std::borrow::Cow;
use std::fmt;

/// The result type used across guild's contracts.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, in terms a caller can act on without knowing the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A spec (guild or agent) is malformed or inconsistent.
    InvalidSpec,
    /// A setting of an engine or backend (a URL, a generator id, a size) is malformed
    /// or out of range.
    InvalidConfig,
    /// An argument of a call is malformed (a message without a topic, say).
    InvalidInput,
    /// The engine or backend cannot do what was asked, with any settings.
    Unsupported,
    /// The operating system refused for want of a privilege (root, a capability).
    PermissionDenied,
    /// No agent type is registered under the requested name.
    UnknownAgentType,
    /// An agent's start hook failed, so the agent never became ready.
    StartFailed,
    /// The named agent, client, topic or resource does not exist.
    NotFound,
    /// The operation conflicts with current state (for example a client that is already subscribed).
    Conflict,
    /// A backend or service could not be reached.
    Unavailable,
    /// The component has been shut down or closed.
    Closed,
    /// A configured limit (agent cap, size cap, resource limit) was reached.
    LimitExceeded,
    /// An operation did not finish in the time it was given (a request without a reply).
    TimedOut,
    /// A frame, payload or value could not be encoded or decoded.
    Codec,
    /// An agent's handler returned an error.
    Handler,
    /// An operating system call failed.
    Io,
    /// A bug or broken invariant inside guild itself.
    Internal,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Self::InvalidSpec => "invalid spec",
            Self::InvalidConfig => "invalid config",
            Self::InvalidInput => "invalid input",
            Self::Unsupported => "unsupported",
            Self::PermissionDenied => "permission denied",
            Self::UnknownAgentType => "unknown agent type",
            Self::StartFailed => "start failed",
            Self::NotFound => "not found",
            Self::Conflict => "conflict",
            Self::Unavailable => "unavailable",
            Self::Closed => "closed",
            Self::LimitExceeded => "limit exceeded",
            Self::TimedOut => "timed out",
            Self::Codec => "codec",
            Self::Handler => "handler",
            Self::Io => "io",
            Self::Internal => "internal",
        };
        f.write_str(text)
    }
}

/// The one error type of guild's contracts: a kind, the component that raised it, a
/// one-line message naming what failed, an optional source, and whether a retry may help.
#[derive(Debug, thiserror::Error)]
#[error("{component}: {message}")]
pub struct Error {
    kind: ErrorKind,
    component: Cow<'static, str>,
    message: String,
    retryable: bool,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// An error of `kind` raised by `component` (a backend or engine name such as `"memory"`).
    pub fn new(
        kind: ErrorKind,
        component: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        let retryable = matches!(kind, ErrorKind::Unavailable | ErrorKind::TimedOut);
        Self {
            kind,
            component: component.into(),
            message: message.into(),
            retryable,
            source: None,
        }
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Attaches the underlying cause, already boxed (as agents' errors are).
    pub fn with_boxed_source(
        mut self,
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    ) -> Self {
        self.source = Some(source);
        self
    }

    /// Overrides whether retrying the operation may help.
    pub fn retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The backend or engine that raised the error.
    pub fn component(&self) -> &str {
        &self.component
    }

    /// The one-line message, without the component prefix.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The first cause of type `T` in the chain of sources below this error: how a
    /// caller reaches the underlying error (the redis client's, an I/O error, an
    /// agent's own) without knowing which crate raised it.
    pub fn find_cause<T: std::error::Error + 'static>(&self) -> Option<&T> {
        let mut next = std::error::Error::source(self);
        while let Some(cause) = next {
            if let Some(found) = cause.downcast_ref::<T>() {
                return Some(found);
            }
            next = cause.source();
        }
        None
    }

    /// Whether retrying the same operation later may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}
