//! Agent specs: serializable data from which any engine, in any process or on
//! any machine, builds the same agents through an [`AgentRegistry`](crate::AgentRegistry).

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::core_error::CoreError;
use crate::{Backoff, BreakerSpec, HealthCheck, Priority, RestartPolicy, Result, StartFrom};

/// One agent: what to build, what it listens to, and how it is run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// Unique within the guild.
    pub id: String,
    /// Human-readable name; several agents may share one. Defaults to the id.
    #[serde(default)]
    pub name: String,
    /// What the agent is for.
    #[serde(default)]
    pub description: String,
    /// The registered agent type that builds it.
    #[serde(rename = "type")]
    pub agent_type: String,
    /// Type-specific settings, as JSON.
    #[serde(default = "empty_object")]
    pub properties: serde_json::Value,
    /// Topics it subscribes to (besides its own inbox).
    #[serde(default)]
    pub topics: Vec<String>,
    /// Where its subscription starts the first time it runs.
    #[serde(default)]
    pub start_from: StartFrom,
    /// Names of guild dependencies (shared resources) it may use.
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// Resource limits, enforced by engines whose capabilities say so.
    #[serde(default)]
    pub limits: ResourceLimits,
    /// When a supervisor restarts it; the guild's supervision default (`transient`)
    /// when not set.
    #[serde(default)]
    pub restart: Option<RestartPolicy>,
    /// How long a supervisor waits before restarting it; the guild's default when not
    /// set.
    #[serde(default)]
    pub backoff: Option<Backoff>,
    /// Its health probes, none when not set: the first runs where the agent runs, right
    /// after its start hook (it is not ready until it passes); a supervisor sends the
    /// rest and restarts it after failures in a row.
    #[serde(default)]
    pub health: Option<HealthCheck>,
    /// Its handler's circuit breaker, run where the agent runs; none when not set.
    #[serde(default)]
    pub breaker: Option<BreakerSpec>,
    /// How long one handler may run before a supervisor counts the agent as stuck, in
    /// milliseconds: on engines that can end a stuck handler it is killed and
    /// restarted, elsewhere reported. No watchdog when not set.
    #[serde(default)]
    pub watchdog_ms: Option<u64>,
    /// Default priority of the messages it sends.
    #[serde(default)]
    pub priority: Priority,
    /// The engine to run it on, overriding the guild's.
    #[serde(default)]
    pub engine: Option<String>,
    /// How many copies to run; copies get ids `<id>-1`, `<id>-2`, ….
    #[serde(default = "one")]
    pub replicas: u32,
    /// How many deliveries may wait for the agent, and what a publish meets beyond
    /// that; the messaging backend's default when not set.
    #[serde(default)]
    pub queue: Option<QueueLimit>,
    /// How long one handler may take, in milliseconds: past it the handler is
    /// cancelled at its next await, its message dead-lettered with kind `timeout`, and
    /// the agent goes on with the next. No limit when not set.
    #[serde(default)]
    pub handler_timeout_ms: Option<u64>,
    /// On the pool engine: on its shared workers (the default), or on a thread of its
    /// own for code that blocks.
    #[serde(default)]
    pub placement: Placement,
    /// On the pool engine under the `fair_share` policy: its share of handler time
    /// relative to other busy agents (1 when not set).
    #[serde(default)]
    pub weight: Option<u32>,
    /// On the pool engine under the `rate` policy: its cap on messages handled per
    /// second (the pool's default rate when not set).
    #[serde(default)]
    pub rate: Option<RateLimit>,
    /// On the cluster engine: what the agent needs of a node, by resource (`cpu`,
    /// `memory_bytes`, or a custom resource nodes announce, such as `gpu`). It is placed
    /// only on a node with that much free; nothing is reserved when empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, f64>,
}

impl AgentSpec {
    /// Refuses the settings of engines other than `engine`, so none is accepted and
    /// ignored: the pool's scheduling settings (`placement = "dedicated"`, `weight`,
    /// `rate`) and the cluster's `resources`.
    pub fn refuse_settings_of_other_engines(&self, engine: &str) -> Result<()> {
        let pool = if self.placement != Placement::Shared {
            Some("placement")
        } else if self.weight.is_some() {
            Some("weight")
        } else if self.rate.is_some() {
            Some("rate")
        } else {
            None
        };
        let cluster = (!self.resources.is_empty()).then_some("resources");
        let (setting, owner) = match (pool, cluster) {
            (Some(setting), _) if engine != "pool" => (setting, "pool"),
            (_, Some(setting)) if engine != "cluster" => (setting, "cluster"),
            _ => return Ok(()),
        };
        Err(CoreError::ForeignSetting {
            engine: engine.to_owned(),
            agent: self.id.clone(),
            setting,
            owner,
        }
        .into())
    }

    /// A spec with the given id and agent type and every other field at its default.
    pub fn new(id: impl Into<String>, agent_type: impl Into<String>) -> Self {
        let id = id.into();
        Self {
            name: id.clone(),
            id,
            description: String::new(),
            agent_type: agent_type.into(),
            properties: empty_object(),
            topics: Vec::new(),
            start_from: StartFrom::default(),
            dependencies: Vec::new(),
            limits: ResourceLimits::default(),
            restart: None,
            backoff: None,
            health: None,
            breaker: None,
            watchdog_ms: None,
            priority: Priority::default(),
            engine: None,
            queue: None,
            handler_timeout_ms: None,
            placement: Placement::Shared,
            weight: None,
            rate: None,
            resources: BTreeMap::new(),
            replicas: 1,
        }
    }

    /// Sets the name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Adds a topic to subscribe to.
    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topics.push(topic.into());
        self
    }

    /// Sets the properties.
    pub fn with_properties(mut self, properties: serde_json::Value) -> Self {
        self.properties = properties;
        self
    }

    /// Decodes the properties into `T`, with an error naming the agent and the field.
    pub fn properties_as<T: DeserializeOwned>(&self) -> Result<T> {
        serde_path_to_error::deserialize(&self.properties).map_err(|e| {
            let path = e.path().to_string();
            CoreError::Properties {
                agent: self.id.clone(),
                path,
                source: e.into_inner(),
            }
            .into()
        })
    }

    /// The copies this spec stands for: itself when `replicas` is 1, otherwise one spec
    /// per replica with ids `<id>-1` … `<id>-N` (names stay shared).
    pub fn expand(&self) -> Vec<AgentSpec> {
        if self.replicas <= 1 {
            return vec![self.normalized()];
        }
        (1..=self.replicas)
            .map(|n| {
                let mut copy = self.normalized();
                copy.id = format!("{}-{n}", self.id);
                copy.replicas = 1;
                copy
            })
            .collect()
    }

    fn normalized(&self) -> AgentSpec {
        let mut spec = self.clone();
        if spec.name.is_empty() {
            spec.name = spec.id.clone();
        }
        spec
    }
}

/// Where the pool engine runs an agent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// As a task on the pool's shared workers.
    #[default]
    Shared,
    /// On a thread of its own, for handlers that block.
    Dedicated,
}

/// A cap on how many messages an agent handles per second, with a burst allowance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Messages per second, sustained (above zero).
    pub per_second: f64,
    /// Messages that may be handled at once after a quiet spell (at least 1).
    #[serde(default = "one")]
    pub burst: u32,
}

/// Per-agent resource caps. Engines that cannot enforce a cap say so in their capabilities.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceLimits {
    /// Address-space cap in bytes.
    pub memory_bytes: Option<u64>,
    /// CPU-time cap in seconds.
    pub cpu_seconds: Option<u64>,
    /// Open-files cap.
    pub open_files: Option<u64>,
    /// Whether the caps may go unenforced on an engine that cannot enforce them (the
    /// sync and threads engines); without it such a spec is refused.
    #[serde(default)]
    pub best_effort: bool,
}

impl ResourceLimits {
    /// Whether any cap is set.
    pub fn is_set(&self) -> bool {
        self.memory_bytes.is_some() || self.cpu_seconds.is_some() || self.open_files.is_some()
    }

    /// For an engine that cannot enforce caps: refuses caps that are set unless they
    /// are marked best effort (then only warns), so no cap is accepted and ignored.
    pub fn refuse_unenforced(&self, engine: &'static str, agent_id: &str) -> crate::Result<()> {
        if !self.is_set() {
            return Ok(());
        }
        if self.best_effort {
            tracing::warn!(
                agent = agent_id,
                engine,
                "resource limits are not enforced on this engine (best effort)"
            );
            return Ok(());
        }
        Err(CoreError::Unenforced {
            engine,
            agent: agent_id.to_owned(),
        }
        .into())
    }
}

/// How many deliveries may wait for one client of the bus, and what happens to a
/// publish that finds that many waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueLimit {
    /// Deliveries that may wait (queued, not yet handed out).
    #[serde(default = "default_queue_capacity")]
    pub capacity: usize,
    /// What a publish meets when the queue is full.
    #[serde(default)]
    pub overflow: Overflow,
    /// How long a blocked publish waits for room before it fails, in milliseconds.
    #[serde(default = "default_block_ms")]
    pub block_ms: u64,
}

impl Default for QueueLimit {
    /// 100,000 deliveries, and a publisher that finds them waiting waits up to 5 s for
    /// room, then fails: back-pressure that keeps memory bounded (about 100 bytes a
    /// delivery besides the shared message) without losing anything silently.
    fn default() -> Self {
        Self {
            capacity: default_queue_capacity(),
            overflow: Overflow::default(),
            block_ms: default_block_ms(),
        }
    }
}

fn default_queue_capacity() -> usize {
    100_000
}

fn default_block_ms() -> u64 {
    5_000
}

/// What a publish meets when a receiver's queue is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// The publisher waits for room, up to `block_ms`, then the publish fails.
    #[default]
    Block,
    /// The publish fails at once (a retryable error); no receiver gets it.
    Reject,
    /// The oldest waiting delivery is dropped to make room, and dead-lettered.
    DropOldest,
}

/// A named shared resource that agents can ask for by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DependencySpec {
    /// The registered resource kind that builds it.
    pub kind: String,
    /// Kind-specific settings, as JSON.
    #[serde(default = "empty_object")]
    pub properties: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

fn one() -> u32 {
    1
}
