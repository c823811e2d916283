//! # engine-pool
//!
//! Runs agents as tasks on a fixed pool of worker threads (one per core unless set).
//! Each agent is one long-lived future ([`engine_core::AgentTask`]): it handles its
//! queued messages one at a time, awaiting its handler, and parks, holding no thread,
//! while nothing is queued. A hundred thousand idle agents cost memory, not threads.
//!
//! The workers are a tokio multi-threaded runtime: each worker has its own run queue,
//! idle workers steal, and an agent woken by an agent on the same worker runs next on
//! that worker without a thread switch. Handlers may await tokio IO and timers. A busy
//! agent yields its worker after its budget (messages, or a time slice), so it cannot
//! starve the others on that worker; a handler that holds a worker past
//! `long_handler_ms` in one go is logged. `docs/decisions.md` says why tokio.
//!
//! Scheduling policies (`fifo`, `priority`, `fair_share`, `rate`, and a cap on
//! concurrent handlers) are in `sched.rs`. An agent with `placement = "dedicated"` runs
//! the same task on a thread of its own, for code that blocks.
//!
//! A panic in a handler is caught at the one boundary in engine-core and ends only
//! that agent. Stopping an agent waits for its task to end; shutting the engine down
//! stops every agent and joins every thread.

mod config;
mod engine;
mod error;
mod running;
mod sched;

pub use config::{MAX_WORKERS, Policy, PoolConfig, check_rate};
pub use engine::{PoolEngine, check_agent};

/// The engine's name.
pub const NAME: &str = "pool";
