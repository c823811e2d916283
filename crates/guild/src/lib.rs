//! # guild
//!
//! The crate users depend on: the contracts agents and programs use (re-exported from
//! `engine-core`), the engines and messaging backends enabled by cargo features, a
//! [`Guild`] that runs a [`GuildSpec`], and the built-in agent types. The `guild`
//! command-line program lives in this package too (feature `cli`).
//!
//! | feature | what it adds |
//! |---------|--------------|
//! | `engine-sync` | the deterministic engine, [`engines::SyncEngine`] |
//! | `engine-threads` | a thread per agent, [`engines::ThreadsEngine`] |
//! | `engine-process` | a process per agent, with limits, [`engines::ProcessEngine`]; call [`run_if_agent_host`] at the top of `main` |
//! | `messaging-memory` | the in-memory bus, [`messaging::MemoryMessaging`] |
//! | `messaging-redis` | Redis Streams, [`messaging::RedisMessaging`], from `redis://` or `rediss://` URLs |
//! | `otlp` | trace export over OTLP/gRPC, [`telemetry::Tracing`] |
//! | `cli` | the `guild` program |
#![doc = ""]
#![doc = include_str!("../../../README.md")]

pub mod builtin;
mod error;
mod guild;
mod metrics;
mod observer;
pub mod select;
mod spec;
#[cfg(feature = "otlp")]
pub mod telemetry;

// What a user of guild writes agents and programs with. Engine and backend authors,
// who need the machinery behind them (`AgentHost`, `AgentTable`, `EventHub`,
// `Doorbell`), depend on `engine-core` itself.
/// Messages on the wire: the protobuf encoding of `proto/guild/v1/message.proto`.
pub use engine_core::wire;
pub use engine_core::{
    Agent, AgentContext, AgentInfo, AgentRegistry, AgentResult, AgentSpec, AgentState, Backoff,
    BackoffKind, BoxError, BreakerSpec, Capabilities, DeadLetter, Delivery, DependencySpec,
    DynAgent, ERROR_TOPIC, EngineCapabilities, EngineStats, Error, ErrorKind, EventReceiver,
    ExecutionEngine, ExecutionEngineExt, ExitStatus, Failure, GuildContext, HealthCheck,
    HistogramSnapshot, HistoryOrder, HistoryQuery, INBOX_PREFIX, IdGenerator, JSON_FORMAT,
    LifecycleEvent, LifecycleKind, Message, MessageBuilder, MessageId, MessagingBackend, Notify,
    Outcome, Overflow, Payload, Placement, Priority, QueueLimit, RateLimit, ResourceLimits,
    Resources, RestartPolicy, Result, StartFrom, SubscribeRequest, Subscription, TimingsSnapshot,
    inbox_topic, unix_ms_now,
};
pub use guild::{GUILD_SENDER, Guild, GuildBuilder};
pub use metrics::{Figures, METRICS_CONTENT_TYPE};
pub use observer::Observer;
pub use spec::check::{
    MAX_BLOCK_MS, MAX_CPU_SECONDS, MAX_MEMORY_BYTES, MAX_NAME_BYTES, MAX_OPEN_FILES,
    MAX_QUEUE_CAPACITY, MAX_QUIET_MS, MAX_REPLICAS, MAX_TIMEOUT_SECS, MIN_MEMORY_BYTES,
};
pub use spec::load::{
    KnownNames, LoadedSpec, MAX_SPEC_BYTES, MessagingCheck, SpecError, SpecErrors, SpecFormat,
};
pub use spec::{AgentExitPolicy, GuildSpec, RunSpec, SendSpec, UntilSpec};
/// Supervision: restart policies, strategies, intensity and backoff, on any engine.
pub use supervisor::{
    DEFAULT_GROUP, Group, GroupSpec, NoHooks, Strategy, SupervisionHooks, SupervisionSpec,
    Supervisor,
};

/// The execution engines compiled into this build.
pub mod engines {
    #[cfg(feature = "engine-cluster")]
    pub use engine_cluster::{ClusterConfig, ClusterEngine, ClusterSpec, Node, NodeOptions, Token};
    #[cfg(feature = "engine-pool")]
    pub use engine_pool::{Policy, PoolConfig, PoolEngine};
    #[cfg(feature = "engine-process")]
    pub use engine_process::{ProcessConfig, ProcessEngine};
    #[cfg(feature = "engine-sync")]
    pub use engine_sync::SyncEngine;
    #[cfg(feature = "engine-threads")]
    pub use engine_threads::{ThreadsConfig, ThreadsEngine};
}

/// Graphs of components: schemas, the runner, hooks, storage (`docs/graph.md`).
#[cfg(feature = "graph")]
pub use graph;

/// Makes this program an agent host for the process engine: when the engine started
/// this process to run an agent, runs it (built through `registry`) and exits;
/// otherwise returns at once. Call it first thing in `main`; see
/// [`engine_process::run_if_agent_host`].
#[cfg(feature = "engine-process")]
pub use engine_process::{is_agent_host, run_if_agent_host, serve_if_agent_host};

/// The messaging backends compiled into this build.
pub mod messaging {
    #[cfg(feature = "messaging-memory")]
    pub use messaging_memory::{MemoryConfig, MemoryMessaging};
    #[cfg(feature = "messaging-redis")]
    pub use messaging_redis::{RedisConfig, RedisMessaging, redact};
}
