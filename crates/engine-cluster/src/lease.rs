//! Membership: each node holds a lease in the guild's Redis, its announcement (a
//! `NodeStats`, protobuf) under `<prefix>:cluster:node:<id>`, set with a time to live and
//! renewed every third of it. A node that dies is gone from the cluster when its lease
//! runs out; no consensus of guild's own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use engine_core::{Error, ErrorKind, Result};
use messaging_redis::RedisConfig;
use prost::Message as _;

use crate::proto;

/// The key of node `id`'s lease.
fn lease_key(prefix: &str, id: &str) -> String {
    format!("{prefix}:cluster:node:{id}")
}

/// A connection to the Redis at `url` (a guild messaging URL).
pub(crate) fn connect(url: &str) -> Result<(redis::Connection, String)> {
    let config = RedisConfig::from_url(url)?;
    let connection = redis::Client::open(config.connection_info()?)
        .and_then(|client| client.get_connection())
        .map_err(|e| unavailable(&config, e))?;
    Ok((connection, config.key_prefix))
}

fn unavailable(config: &RedisConfig, error: redis::RedisError) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        "cluster",
        format!("cannot reach Redis at {}: {error}", config.address()),
    )
    .retryable(true)
}

fn refused(error: redis::RedisError) -> Error {
    Error::new(ErrorKind::Unavailable, "cluster", format!("Redis: {error}")).retryable(true)
}

/// A node's lease, renewed by a thread until dropped (which gives it up at once).
#[derive(Debug)]
pub struct Lease {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// This lease's generation: a number from Redis, higher than every earlier lease's.
    pub generation: u64,
}

impl Lease {
    /// Takes node `id`'s lease in the Redis at `url` for `ttl`, renewing it with what
    /// `stats` says each time. When a renewal finds the lease gone (it ran out while
    /// the node could not reach Redis, so the cluster has placed the node's agents
    /// elsewhere), `lapsed` runs (it stops the node's agents), and the node takes a
    /// new lease of a new generation.
    pub fn take(
        url: &str,
        id: &str,
        ttl: Duration,
        stats: impl Fn() -> proto::NodeStats + Send + 'static,
        lapsed: impl Fn() + Send + 'static,
    ) -> Result<Self> {
        let (mut connection, prefix) = connect(url)?;
        let generation_key = format!("{prefix}:cluster:generation");
        let next_generation = move |connection: &mut redis::Connection| {
            redis::cmd("INCR")
                .arg(&generation_key)
                .query::<u64>(connection)
        };
        let mut generation = next_generation(&mut connection).map_err(refused)?;
        let first_generation = generation;
        let key = lease_key(&prefix, id);
        let release = key.clone();
        // `XX` renews only a lease that still exists; `NX` takes a new one.
        let set = move |connection: &mut redis::Connection, generation: u64, mode: &str| {
            let mut announced = stats();
            announced.lease_generation = generation;
            redis::cmd("SET")
                .arg(&key)
                .arg(announced.encode_to_vec())
                .arg("PX")
                .arg(ttl.as_millis() as u64)
                .arg(mode)
                .query::<Option<String>>(connection)
                .map(|reply| reply.is_some())
        };
        if !set(&mut connection, generation, "NX").map_err(refused)? {
            return Err(Error::new(
                ErrorKind::Conflict,
                "cluster",
                format!("a live node already holds the lease of node id {id:?}"),
            ));
        }
        let mut renew = move |connection: &mut redis::Connection| -> redis::RedisResult<()> {
            if set(connection, generation, "XX")? {
                return Ok(());
            }
            tracing::warn!(generation, "the node's lease ran out: stopping its agents");
            lapsed();
            generation = next_generation(connection)?;
            set(connection, generation, "NX").map(|_| ())
        };
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let url = url.to_owned();
        let thread = std::thread::Builder::new()
            .name("node-lease".into())
            .spawn(move || {
                let mut connection = Some(connection);
                let nap = Duration::from_millis(50).min(ttl / 3);
                let mut slept = Duration::ZERO;
                while !stopping.load(Ordering::Acquire) {
                    std::thread::sleep(nap);
                    slept += nap;
                    if slept < ttl / 3 {
                        continue;
                    }
                    slept = Duration::ZERO;
                    if connection.is_none() {
                        connection = connect(&url).ok().map(|(c, _)| c);
                    }
                    if let Some(open) = connection.as_mut()
                        && let Err(error) = renew(open)
                    {
                        tracing::warn!(%error, "cannot renew the node's lease");
                        connection = None;
                    }
                }
                // Leaving: the cluster sees the node gone at once.
                if let Some(open) = connection.as_mut() {
                    let _ = redis::cmd("DEL").arg(&release).query::<u64>(open);
                }
            })
            .map_err(|e| Error::new(ErrorKind::Io, "cluster", format!("lease thread: {e}")))?;
        Ok(Self {
            stop,
            thread: Some(thread),
            generation: first_generation,
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The nodes whose leases are live in the Redis reached by `connection`.
pub(crate) fn live_nodes(
    connection: &mut redis::Connection,
    prefix: &str,
) -> Result<Vec<proto::NodeStats>> {
    let keys: Vec<String> = redis::cmd("SCAN")
        .cursor_arg(0)
        .arg("MATCH")
        .arg(lease_key(prefix, "*"))
        .arg("COUNT")
        .arg(1000)
        .clone()
        .iter(connection)
        .map_err(refused)?
        .collect();
    let mut nodes = Vec::new();
    for key in keys {
        // A lease may lapse between the scan and the read.
        let value: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&key)
            .query(connection)
            .map_err(refused)?;
        match value.map(|bytes| proto::NodeStats::decode(&bytes[..])) {
            Some(Ok(stats)) => nodes.push(stats),
            Some(Err(error)) => tracing::warn!(%key, %error, "a node lease that does not decode"),
            None => {}
        }
    }
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(nodes)
}

/// A live node, as its lease announces it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSummary {
    /// The node's id.
    pub id: String,
    /// Where its service listens.
    pub address: String,
    /// Its labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Agents running on it.
    pub agents_running: u64,
    /// Messages its agents handled.
    pub messages_in: u64,
    /// Messages its agents sent.
    pub messages_out: u64,
    /// Its lease's generation.
    pub lease_generation: u64,
    /// What it offers agents, by resource.
    pub capacity: crate::Resources,
    /// What its agents asked for, by resource.
    pub used: crate::Resources,
}

/// The live nodes of the cluster whose Redis is at `url`, sorted by id.
pub fn nodes(url: &str) -> Result<Vec<NodeSummary>> {
    let (mut connection, prefix) = connect(url)?;
    Ok(live_nodes(&mut connection, &prefix)?
        .into_iter()
        .map(summary)
        .collect())
}

/// A node's announcement, as the public summary.
pub(crate) fn summary(node: proto::NodeStats) -> NodeSummary {
    NodeSummary {
        id: node.node,
        address: node.address,
        labels: node.labels,
        agents_running: node.agents_running,
        messages_in: node.messages_in,
        messages_out: node.messages_out,
        lease_generation: node.lease_generation,
        capacity: node.capacity.into_iter().collect(),
        used: node.used.into_iter().collect(),
    }
}
