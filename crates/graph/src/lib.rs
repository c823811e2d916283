//! # graph
//!
//! Runs DAG schemas of components, as Rasa's `GraphRunner` does: a [`GraphSchema`] of
//! named nodes (read from TOML or JSON, or built in code), each an input or a
//! registered [`Component`] with its config and the upstream node of each of its inputs.
//!
//! - `schema.rs`: [`GraphSchema`], [`NodeSpec`], [`LoadedSchema`] (with the text, for
//!   lines in errors).
//! - `component.rs`: the [`Component`] trait, [`Inputs`], [`NodeContext`], and
//!   [`ComponentRegistry`] (types by name, with the inputs each reads).
//! - `validate.rs`: [`check`], every problem of a schema with its file, line and node
//!   (unknown types, `needs` naming no node, inputs that differ from the declared ones,
//!   cycles with their path).
//! - `runner.rs`: [`GraphRunner`]: `create(schema, registry, storage, context, hooks)`
//!   and `run(inputs, targets)`, which runs only what the targets need, independent
//!   nodes at the same time on tokio workers (a pool engine's) or one at a time on the
//!   caller's thread, and says what completed, failed, was skipped and came from the
//!   cache.
//! - `hooks.rs`: [`Hook`] (before, after, failed, cached; data from before to after)
//!   and [`TracingHook`].
//! - `storage.rs`: [`ModelStorage`]: each node's artifacts, outputs cached by
//!   fingerprint, and archives.
//! - `builtin.rs`: text components for the example.
//!
//! See `docs/graph.md`.

mod builtin;
mod component;
mod error;
mod hooks;
mod runner;
mod schema;
mod storage;
mod validate;

pub use builtin::builtin_registry;
pub use component::{Component, ComponentRegistry, Declared, Inputs, NodeContext, exactly};
pub use error::{BoxError, GraphError, GraphErrors};
pub use hooks::{Hook, HookData, NodeInfo, TracingHook};
pub use runner::{Execution, ExecutionContext, GraphRunner, NodeFailure, RunResult};
pub use schema::{GraphSchema, LoadedSchema, NodeSpec};
pub use storage::ModelStorage;
pub use validate::check;
