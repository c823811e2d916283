//! # engine-core
//!
//! The contracts of guild, written down: what an [`Agent`] is, how it is described as
//! data ([`AgentSpec`]) and built from a name ([`AgentRegistry`]), what a
//! [`Message`] and its [`MessageId`] are, what every [`MessagingBackend`] promises (the
//! delivery contract), and what every [`ExecutionEngine`] promises.
//!
//! This crate has no async runtime, does no IO of its own, and names no backend's types.
//! Every engine and backend depends on it; it depends on nothing of theirs.
//!
//! The shared machinery engines need so they keep the same promises in the same way also
//! lives here: [`AgentHost`] (the one place agent code runs and panics are caught),
//! [`AgentTable`] (the bookkeeping behind the query methods) and [`EventHub`].
#![doc = ""]
#![doc = include_str!("../README.md")]

mod agent;
mod block_on;
mod core_error;
mod doorbell;
mod engine;
mod error;
mod events;
mod guard;

mod host;
mod id;
mod message;
mod messaging;
mod names;
mod registry;
mod spec;
mod supervision;
mod table;
mod task;
mod timers;
mod timing;
mod trace;
pub mod wire;

pub use agent::{Agent, AgentContext, AgentEnded, AgentResult, BoxError, DynAgent};
pub use doorbell::Doorbell;
pub use engine::{
    AgentInfo, AgentState, EngineCapabilities, EngineStats, ExecutionEngine, ExecutionEngineExt,
    ExitStatus, GuildContext,
};
pub use error::{Error, ErrorKind, Result};
pub use events::{Ending, EventHub, EventReceiver, LifecycleEvent, LifecycleKind};
pub use guard::{PROBE_FORMAT, PROBE_SENDER, ProbeAnswer, is_probe};
pub use host::{AgentHost, Step, panic_text};
pub use id::{GENERATOR_ID_MAX, ID_EPOCH_UNIX_MS, IdGenerator, MessageId, Priority, unix_ms_now};
pub use message::{INBOX_PREFIX, JSON_FORMAT, Message, MessageBuilder, Payload, inbox_topic};
pub use messaging::{
    Capabilities, DeadLetter, Delivery, ERROR_TOPIC, Failure, HistoryOrder, HistoryQuery,
    MessagingBackend, NoNotify, Notify, Outcome, StartFrom, SubscribeRequest, Subscription,
};
pub use names::{INLINE_PAYLOAD, PayloadBytes, Topics, intern};
pub use registry::{AgentRegistry, Resources};
pub use spec::{
    AgentSpec, DependencySpec, Overflow, Placement, QueueLimit, RateLimit, ResourceLimits,
};
pub use supervision::{
    Backoff, BackoffKind, BreakerSpec, HealthCheck, Jitter, MAX_SUPERVISION_MS, RestartPolicy,
    supervision_ms,
};
pub use table::{Admission, AgentCell, AgentRecord, AgentTable, Reporter};
pub use task::{AgentTask, TaskControl, TaskEnd, TaskEnv, TaskHost};
pub use timers::{MAX_TIMERS_PER_AGENT, TimerId, Timers};
pub use timing::{BUCKETS_SECONDS, Histogram, HistogramSnapshot, Timings, TimingsSnapshot};
pub use trace::{TRACEPARENT, TRACESTATE, TraceContext, install_trace_context};
