//! Everything that goes wrong in this crate, as one private enum, and the one place it
//! becomes the public [`Error`]: with the component that raised it, its kind, and its
//! cause kept as the source.

use crate::{BoxError, Error, ErrorKind};

#[derive(Debug, thiserror::Error)]
pub(crate) enum CoreError {
    #[error("generator id {id} is above the maximum {max}")]
    GeneratorId { id: u16, max: u16 },
    #[error("this process already mints ids under generator {taken}, so it cannot take {wanted}")]
    GeneratorTaken { wanted: u16, taken: u16 },
    #[error("agent {agent:?}: a timer's period must be above zero")]
    ZeroPeriod { agent: String },
    #[error("agent {agent:?} has {cap} timers waiting already, the most it may")]
    TooManyTimers { agent: String, cap: usize },
    #[error("cannot start the timer thread: {source}")]
    TimerThread { source: std::io::Error },
    #[error("cannot encode json: {0}")]
    EncodeJson(#[source] serde_json::Error),
    #[error("expected a json payload, found format {format:?}")]
    NotJson { format: String },
    #[error("cannot decode json: {0}")]
    DecodeJson(#[source] serde_json::Error),
    #[error("not a guild.v1 protobuf encoding: {why}")]
    Wire { why: String },
    #[error("expected a dead letter (format \"guild.v1.DeadLetter\"), found format {format:?}")]
    NotDeadLetter { format: String },
    #[error("agent {agent:?}: properties.{path}: {source}")]
    Properties {
        agent: String,
        path: String,
        source: serde_json::Error,
    },
    #[error(
        "agent {agent:?} sets resource limits, which the {engine} engine cannot enforce: run it \
         on the process engine, or mark the limits best_effort"
    )]
    Unenforced { engine: &'static str, agent: String },
    #[error(
        "agent {agent:?}: `{setting}` is a setting of the {owner} engine, and the {engine} \
         engine runs this agent; remove it or run the agent with engine = \"{owner}\""
    )]
    ForeignSetting {
        engine: String,
        agent: String,
        setting: &'static str,
        owner: &'static str,
    },
    #[error("agent {agent:?} could not answer a health probe: {text}")]
    Probe { agent: String, text: String },
    #[error("agent {agent:?} is not ready: its first health probe failed: {text}")]
    NotReady { agent: String, text: String },
    #[error("the {engine} engine cannot pause agents")]
    PauseUnsupported { engine: String },
    #[error(
        "the {engine} engine cannot end an agent from outside (a stuck handler is reported, \
         not killed); the process engine can"
    )]
    KillUnsupported { engine: String },
    #[error(
        "agent {agent:?} cannot be paused or resumed: {}",
        match state {
            Some(state) => format!("it is {state}"),
            None => "the engine runs no such agent".to_owned(),
        }
    )]
    NotPausable {
        engine: String,
        agent: String,
        state: Option<crate::AgentState>,
    },
    #[error("agent {agent:?} not started: the engine is shut down")]
    EngineClosed { engine: String, agent: String },
    #[error("agent {agent:?} may not subscribe to {topic:?}: an inbox is its owner's alone")]
    ForeignInbox { agent: String, topic: String },
    #[error("agent {agent:?}: start failed: {source}")]
    StartHook { agent: String, source: BoxError },
    #[error("agent {agent:?}: start failed: panicked: {text}")]
    StartPanic { agent: String, text: String },
    #[error("agent {agent:?}: stop hook failed: {source}")]
    StopHook { agent: String, source: BoxError },
    #[error("agent {agent:?}: stop hook panicked: {text}")]
    StopPanic { agent: String, text: String },
    #[error("agent {agent:?} is no longer subscribed")]
    Unsubscribed { agent: String },
    #[error("agent {agent:?} may not publish to {topic:?}: it carries the guild's dead letters")]
    ErrorTopic { agent: String, topic: &'static str },
    #[error("agent {agent:?} does not list {name:?} among its dependencies")]
    NotADependency { agent: String, name: String },
    #[error("agent {agent:?}: unknown agent type {agent_type:?}; registered: {registered}")]
    UnknownType {
        agent: String,
        agent_type: String,
        registered: String,
    },
    #[error("agent {agent:?} ({agent_type}): {source}")]
    BadAgent {
        agent: String,
        agent_type: String,
        source: BoxError,
    },
    #[error("dependency {name:?}: unknown resource kind {kind:?}")]
    UnknownResourceKind { name: String, kind: String },
    #[error("dependency {name:?} ({kind}): {source}")]
    ResourceFailed {
        name: String,
        kind: String,
        source: BoxError,
    },
    #[error("no resource is named {name:?}")]
    NoResource { name: String },
    #[error("resource {name:?} is not a {wanted}")]
    ResourceType { name: String, wanted: &'static str },
}

impl CoreError {
    fn component(&self) -> String {
        use CoreError as F;
        match self {
            F::GeneratorId { .. } | F::GeneratorTaken { .. } => "ids".into(),
            F::EncodeJson(_) | F::NotJson { .. } | F::DecodeJson(_) | F::NotDeadLetter { .. } => {
                "payload".into()
            }
            F::Wire { .. } => "wire".into(),
            F::Properties { .. } => "spec".into(),
            F::TimerThread { .. } => "timers".into(),
            F::Unenforced { engine, .. } => (*engine).into(),
            F::ForeignSetting { engine, .. } => engine.clone(),
            F::EngineClosed { engine, .. }
            | F::PauseUnsupported { engine }
            | F::KillUnsupported { engine }
            | F::NotPausable { engine, .. } => engine.clone(),
            F::UnknownType { .. }
            | F::BadAgent { .. }
            | F::UnknownResourceKind { .. }
            | F::ResourceFailed { .. } => "registry".into(),
            F::NoResource { .. } | F::ResourceType { .. } => "resources".into(),
            _ => "agent".into(),
        }
    }

    fn kind(&self) -> ErrorKind {
        use CoreError as F;
        match self {
            F::GeneratorId { .. } => ErrorKind::InvalidConfig,
            F::GeneratorTaken { .. } => ErrorKind::Conflict,
            F::ZeroPeriod { .. } => ErrorKind::InvalidInput,
            F::TooManyTimers { .. } => ErrorKind::LimitExceeded,
            F::TimerThread { .. } => ErrorKind::Io,
            F::EncodeJson(_)
            | F::NotJson { .. }
            | F::DecodeJson(_)
            | F::Wire { .. }
            | F::NotDeadLetter { .. } => ErrorKind::Codec,
            F::Properties { .. }
            | F::Unenforced { .. }
            | F::ForeignSetting { .. }
            | F::ForeignInbox { .. }
            | F::BadAgent { .. }
            | F::UnknownResourceKind { .. }
            | F::ResourceType { .. } => ErrorKind::InvalidSpec,
            F::EngineClosed { .. } | F::Unsubscribed { .. } => ErrorKind::Closed,
            F::StartHook { .. }
            | F::StartPanic { .. }
            | F::ResourceFailed { .. }
            | F::NotReady { .. } => ErrorKind::StartFailed,
            F::Probe { .. } => ErrorKind::Codec,
            F::StopHook { .. } | F::StopPanic { .. } => ErrorKind::Handler,
            F::ErrorTopic { .. } => ErrorKind::Conflict,
            F::NotADependency { .. } | F::NoResource { .. } | F::NotPausable { .. } => {
                ErrorKind::NotFound
            }
            F::PauseUnsupported { .. } | F::KillUnsupported { .. } => ErrorKind::Unsupported,
            F::UnknownType { .. } => ErrorKind::UnknownAgentType,
        }
    }
}

impl From<CoreError> for Error {
    fn from(failure: CoreError) -> Self {
        use CoreError as F;
        let converted = Error::new(failure.kind(), failure.component(), failure.to_string());
        match failure {
            F::EncodeJson(source) | F::DecodeJson(source) | F::Properties { source, .. } => {
                converted.with_source(source)
            }
            F::TimerThread { source } => converted.with_source(source),
            F::StartHook { source, .. }
            | F::StopHook { source, .. }
            | F::BadAgent { source, .. }
            | F::ResourceFailed { source, .. } => converted.with_boxed_source(source),
            _ => converted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_survive_and_kinds_match() {
        let decode = serde_json::from_str::<u8>("x").unwrap_err();
        let error = Error::from(CoreError::DecodeJson(decode));
        assert_eq!(error.kind(), ErrorKind::Codec);
        let source = std::error::Error::source(&error).expect("a source");
        assert!(source.downcast_ref::<serde_json::Error>().is_some());

        let factory: BoxError = "no such colour".into();
        let error = Error::from(CoreError::BadAgent {
            agent: "a".into(),
            agent_type: "painter".into(),
            source: factory,
        });
        assert_eq!(error.kind(), ErrorKind::InvalidSpec);
        let source = std::error::Error::source(&error).expect("a source");
        assert_eq!(source.to_string(), "no such colour");

        let error = Error::from(CoreError::GeneratorId {
            id: 5000,
            max: 4095,
        });
        assert_eq!(error.kind(), ErrorKind::InvalidConfig);
        assert_eq!(error.component(), "ids");
    }
}
