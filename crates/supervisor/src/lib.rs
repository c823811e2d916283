//! # supervisor
//!
//! Erlang/OTP-style supervision for guild agents, on any engine, through the engine
//! contract alone: it listens to engines' lifecycle events and restarts agents with
//! `run_agent`, so it has no code for any one engine.
//!
//! - **Restart policy**, per agent (`AgentSpec::restart`): `permanent` (restart
//!   whenever it ends on its own), `transient` (only after a crash or a limit; the
//!   default), `temporary` (never).
//! - **Strategy**, per [`Group`]: [`Strategy::OneForOne`] restarts the agent that
//!   ended; [`Strategy::OneForAll`] stops the others (in reverse order) and restarts
//!   all; [`Strategy::RestForOne`] does so for the agent and those after it.
//! - **Intensity**, per group: more than `max_restarts` restarts within `within`, and
//!   the group is stopped (in reverse order) and a
//!   [`LifecycleKind::GroupFailed`](engine_core::LifecycleKind::GroupFailed) event
//!   names the agent and how it last ended.
//! - **Backoff**, per agent (`AgentSpec::backoff`): fixed, linear or exponential, with a
//!   cap, jitter, and a reset once the agent has run cleanly for a while.
//! - **Watchdog**, per agent (`AgentSpec::watchdog_ms`): a handler running longer is
//!   killed where the engine can (`EngineCapabilities::kill`), else reported
//!   ([`LifecycleKind::Stuck`](engine_core::LifecycleKind::Stuck)).
//!
//! Nothing is lost across a restart: an agent restarts under its own id, which is its
//! messaging client id, so what was queued for it, and what it had taken but not
//! completed, is delivered again (the delivery contract); the message whose handler
//! panicked was dead-lettered by its host and is not.
//!
//! Health probes and circuit breakers (`AgentSpec::health`, `AgentSpec::breaker`) run
//! in the agent's host, wherever the agent runs; an unhealthy agent crashes, and is
//! restarted here like any other.

mod hooks;
mod probes;
mod restarts;
mod spec;
mod supervisor;
mod watchdog;

pub use hooks::{NoHooks, SupervisionHooks};
pub use spec::{
    DEFAULT_GROUP, Group, GroupSpec, MAX_RESTARTS, Strategy, SupervisionSpec, agent_problems,
};
pub use supervisor::Supervisor;
