//! Everything that goes wrong in this crate, as one private enum, and the one place it
//! becomes guild's public [`Error`]: with the component that raised it (the engine, the
//! broker, the agent host), its kind, whether a retry can help, and its cause kept as
//! the source.

use std::io;
use std::time::Duration;

use engine_core::{Error, ErrorKind, MessageId};
use nix::errno::Errno;

use crate::NAME;
use crate::protocol::{FrameError, WireError};

/// The component name of the broker, which serves agent processes in the parent.
pub(crate) const BROKER: &str = "broker";
/// The component name of the agent host, the agent's side of the connection.
pub(crate) const HOST: &str = "agent host";
/// The component name of an agent process, as the engine reports what it said.
pub(crate) const AGENT_PROCESS: &str = "agent process";

#[derive(Debug, thiserror::Error)]
pub(crate) enum ProcessError {
    // The engine, in the parent.
    #[error("cannot find this program to start agent processes: {0}")]
    NoProgram(#[source] io::Error),
    #[error(
        "this process was started to host an agent but is running its program instead: call \
         engine_process::run_if_agent_host at the top of main"
    )]
    HostingElsewhere,
    #[error("agent {agent:?} not started: the cap of {cap} agent processes is reached")]
    ProcessCap { agent: String, cap: usize },
    #[error(
        "agent {agent:?} not started: network isolation needs a network namespace, which \
         needs root, and this process runs as uid {uid}"
    )]
    NeedsRoot { agent: String, uid: u32 },
    #[error("agent {agent:?}: {what}: {source}")]
    AgentIo {
        agent: String,
        what: &'static str,
        source: io::Error,
    },
    #[error("cannot encode the spec: {0}")]
    EncodeSpec(#[source] serde_json::Error),
    #[error("agent {agent:?} did not report ready within {timeout:?}")]
    NotReady { agent: String, timeout: Duration },
    #[error("{reason}")]
    EndedEarly { reason: String },
    #[error("agent {agent:?}: its watcher ended without a word")]
    WatcherSilent { agent: String },
    #[error("agent {agent:?}: cannot start its {role} thread: {source}")]
    Thread {
        agent: String,
        role: &'static str,
        source: io::Error,
    },
    #[error(
        "every generator id is held by a live agent process ({held} of them): stop some agents \
         first"
    )]
    GeneratorIds { held: usize },

    // Either side of a connection.
    #[error("{source}")]
    Frame {
        component: &'static str,
        source: FrameError,
    },
    /// An error the other side had, as it crossed the connection (its cause stayed there).
    #[error("{}", wire.message)]
    Remote {
        component: &'static str,
        wire: WireError,
    },

    // The agent's side: the client of the broker, and the host.
    #[error("the connection to the engine is gone")]
    Disconnected,
    #[error("message {id} has no topic")]
    NoTopic { id: MessageId },
    #[error("{0}")]
    BrokerConfused(&'static str),
    #[error("completed a delivery that was not handed out")]
    NotHanded,
    #[error("expected a launch frame first, got {got}")]
    NoLaunch { got: String },
    #[error("the engine sent a spec that does not parse: {0}")]
    BadSpec(#[source] serde_json::Error),
    #[error("{0}")]
    HostIo(#[source] io::Error),
    #[error("{what}: {source}")]
    Os { what: String, source: Errno },

    // The broker.
    #[error("agent {agent:?} may publish only as itself in guild {namespace:?}")]
    Impersonation { agent: String, namespace: String },
    #[error("agent {agent:?} acknowledged {acked} deliveries with {in_flight} in flight")]
    AckMismatch {
        agent: String,
        acked: usize,
        in_flight: usize,
    },
    #[error("agent {agent:?} acknowledged without a subscription")]
    AckUnsubscribed { agent: String },
    #[error("unexpected frame {frame} on a running agent's connection")]
    UnexpectedFrame { frame: String },
    #[error("the process engine runs no agent {agent:?}")]
    NoSuchAgent { agent: String },
    #[error("agent {agent:?} may subscribe only as itself, not as {client:?}")]
    SubscribeAs { agent: String, client: String },
    #[error("agent {agent:?} is subscribed already")]
    Subscribed { agent: String },
    #[error("agent {agent:?} of guild {namespace:?} may not use guild {asked:?}")]
    ForeignGuild {
        agent: String,
        namespace: String,
        asked: String,
    },
}

impl ProcessError {
    fn component(&self) -> &'static str {
        use ProcessError as E;
        match self {
            E::Frame { component, .. } | E::Remote { component, .. } => component,
            E::NoLaunch { .. } | E::BadSpec(_) | E::HostIo(_) | E::Os { .. } => HOST,
            E::Impersonation { .. }
            | E::AckMismatch { .. }
            | E::AckUnsubscribed { .. }
            | E::UnexpectedFrame { .. }
            | E::SubscribeAs { .. }
            | E::Subscribed { .. }
            | E::ForeignGuild { .. } => BROKER,
            _ => NAME,
        }
    }

    /// What went wrong, and whether trying again later can help.
    fn kind(&self) -> (ErrorKind, bool) {
        use ProcessError as E;
        match self {
            E::NoProgram(_) | E::AgentIo { .. } | E::HostIo(_) => (ErrorKind::Io, false),
            // Out of threads or memory now; another try later may find room.
            E::Thread { .. } => (ErrorKind::Io, true),
            E::Os { source, .. } if *source == Errno::EPERM => (ErrorKind::PermissionDenied, false),
            E::Os { .. } => (ErrorKind::Io, false),
            E::HostingElsewhere | E::WatcherSilent { .. } | E::BrokerConfused(_) => {
                (ErrorKind::Internal, false)
            }
            // Room comes back as agents stop.
            E::ProcessCap { .. } | E::GeneratorIds { .. } => (ErrorKind::LimitExceeded, true),
            E::NeedsRoot { .. } => (ErrorKind::PermissionDenied, false),
            E::EncodeSpec(_) | E::BadSpec(_) | E::NoLaunch { .. } => (ErrorKind::Codec, false),
            E::NotReady { .. } | E::EndedEarly { .. } => (ErrorKind::StartFailed, false),
            E::Frame { source, .. } => match source {
                FrameError::Io(_) | FrameError::Truncated => (ErrorKind::Io, false),
                FrameError::TooLarge { .. } => (ErrorKind::LimitExceeded, false),
                _ => (ErrorKind::Codec, false),
            },
            E::Remote { wire, .. } => (wire.kind, wire.retryable),
            // The engine that started this process is gone, and will not come back.
            E::Disconnected => (ErrorKind::Closed, false),
            E::NoTopic { .. } => (ErrorKind::InvalidInput, false),
            E::NoSuchAgent { .. } => (ErrorKind::NotFound, false),
            E::NotHanded
            | E::Impersonation { .. }
            | E::SubscribeAs { .. }
            | E::Subscribed { .. }
            | E::ForeignGuild { .. } => (ErrorKind::Conflict, false),
            E::AckMismatch { .. } | E::AckUnsubscribed { .. } | E::UnexpectedFrame { .. } => {
                (ErrorKind::Codec, false)
            }
        }
    }
}

impl From<ProcessError> for Error {
    fn from(error: ProcessError) -> Self {
        use ProcessError as E;
        let (kind, retryable) = error.kind();
        let converted = Error::new(kind, error.component(), error.to_string()).retryable(retryable);
        match error {
            E::NoProgram(source)
            | E::AgentIo { source, .. }
            | E::Thread { source, .. }
            | E::HostIo(source) => converted.with_source(source),
            E::EncodeSpec(source) | E::BadSpec(source) => converted.with_source(source),
            E::Os { source, .. } => converted.with_source(source),
            E::Frame { source, .. } => converted.with_source(source),
            _ => converted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_decoders_cause_survives() {
        let broken = FrameError::Io(io::Error::from(io::ErrorKind::BrokenPipe));
        let error = broken.into_error(BROKER);
        assert_eq!(error.kind(), ErrorKind::Io);
        assert_eq!(error.component(), BROKER);
        assert_eq!(
            error.find_cause::<io::Error>().map(io::Error::kind),
            Some(io::ErrorKind::BrokenPipe)
        );
    }

    #[test]
    fn kinds_say_truthfully_whether_a_retry_can_help() {
        let root = Error::from(ProcessError::NeedsRoot {
            agent: "a".into(),
            uid: 1000,
        });
        assert_eq!(root.kind(), ErrorKind::PermissionDenied);
        assert!(!root.is_retryable(), "no retry makes this process root");
        let gone = Error::from(ProcessError::Disconnected);
        assert_eq!(gone.kind(), ErrorKind::Closed);
        assert!(!gone.is_retryable());
        let denied = Error::from(ProcessError::Os {
            what: "cannot enter a network namespace of its own".into(),
            source: Errno::EPERM,
        });
        assert_eq!(denied.kind(), ErrorKind::PermissionDenied);
        assert_eq!(denied.find_cause::<Errno>(), Some(&Errno::EPERM));
        let cap = Error::from(ProcessError::ProcessCap {
            agent: "a".into(),
            cap: 1,
        });
        assert!(cap.is_retryable(), "room comes back as agents stop");
    }
}
