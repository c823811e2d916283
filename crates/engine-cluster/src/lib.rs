//! # engine-cluster
//!
//! Agents on node daemons across machines. A node (`guild node`) runs agents on its
//! machine and serves the node service (`proto/guild/v1/node.proto`) over gRPC to
//! whoever holds the cluster's token; messages cross machines through the guild's Redis.
//!
//! - `node.rs`: [`NodeService`], the node side, which runs agents on the engine it is
//!   given and refuses callers without the token ([`Token`], `auth.rs`).
//! - `daemon.rs`: [`Node`], the service listening on a runtime of its own and holding
//!   its lease, as `guild node` runs it.
//! - `lease.rs`: membership, a [`Lease`] per node in Redis, renewed, and fenced when it
//!   lapsed; [`nodes`] lists the live ones.
//! - `resources.rs`: what nodes offer and agents ask for (`cpu`, `memory_bytes`,
//!   custom ones), and whether a need fits.
//! - `engine.rs`: [`ClusterEngine`], which places agents on live nodes by [`Policy`],
//!   label selector and resource fit, runs and queries them through `client.rs`, and places again
//!   the agents of a node whose lease ran out.
//!
//! See `docs/cluster.md`.

mod auth;
mod client;
mod daemon;
mod engine;
mod lease;
mod node;
/// The node service's generated types and gRPC client and server (for this crate's
/// tests and tools; programs use [`ClusterEngine`]).
pub mod proto;
mod resources;

pub use auth::{MIN_TOKEN_BYTES, Token};
pub use client::{ClientTls, NodeClient, WithToken, connect};
pub use daemon::{Node, NodeOptions};
pub use engine::{ClusterConfig, ClusterEngine, ClusterSpec, NAME, Policy};
pub use lease::{Lease, NodeSummary, nodes};
pub use node::{MAX_REQUEST_BYTES, NodeIdentity, NodeService};
pub use resources::{CPU, MEMORY, Resources, check_agent, check_amounts, machine_capacity};
