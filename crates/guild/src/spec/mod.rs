//! A guild spec: its agents, where they run, what they talk over, and how `guild run`
//! drives it. The agents' own specs are engine-core's [`AgentSpec`]; this is the file a
//! user writes around them, with [`load`] reading it and [`check`] refusing what a run
//! would refuse.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use engine_core::{AgentSpec, DependencySpec};

pub(crate) mod check;
pub(crate) mod load;

/// A guild: its agents, where they run, what they talk over, and when a run is done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuildSpec {
    /// The guild id, also its messaging namespace.
    pub id: String,
    /// Human-readable name.
    #[serde(default)]
    pub name: String,
    /// What the guild does.
    #[serde(default)]
    pub description: String,
    /// The default execution engine for its agents (`"pool"`, `"threads"`, …).
    #[serde(default)]
    pub engine: Option<String>,
    /// The messaging backend (`"memory"`, …).
    #[serde(default)]
    pub messaging: Option<String>,
    /// Shared resources by name.
    #[serde(default)]
    pub dependencies: BTreeMap<String, DependencySpec>,
    /// The pool engine's settings (workers, scheduling policy, budget); the pool's
    /// defaults when not set.
    #[cfg(feature = "engine-pool")]
    #[serde(default)]
    pub pool: Option<engine_pool::PoolConfig>,
    /// How the cluster engine places the guild's agents (policy, label selector, a
    /// static list of nodes); spread over every live node when not set.
    #[cfg(feature = "engine-cluster")]
    #[serde(default)]
    pub cluster: Option<engine_cluster::ClusterSpec>,
    /// How the guild's agents are supervised (restart strategy, intensity, and the
    /// defaults of the agents' own supervision settings). Without it, agents are
    /// supervised only if one of them sets `restart`, `backoff`, `watchdog_ms` or
    /// `health`.
    #[serde(default)]
    pub supervision: Option<supervisor::SupervisionSpec>,
    /// The agents.
    #[serde(default)]
    pub agents: Vec<AgentSpec>,
    /// How `guild run` drives the guild.
    #[serde(default)]
    pub run: RunSpec,
}

impl GuildSpec {
    /// An empty guild with the given id.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            name: String::new(),
            description: String::new(),
            engine: None,
            messaging: None,
            dependencies: BTreeMap::new(),
            #[cfg(feature = "engine-pool")]
            pool: None,
            #[cfg(feature = "engine-cluster")]
            cluster: None,
            supervision: None,
            agents: Vec::new(),
            run: RunSpec::default(),
        }
    }

    /// Every agent to launch, with replicas expanded, in spec order, with the
    /// `[supervision]` table's defaults filled in where the agent sets nothing.
    pub fn expanded_agents(&self) -> Vec<AgentSpec> {
        let expanded = self.agents.iter().flat_map(AgentSpec::expand);
        match &self.supervision {
            Some(supervision) => expanded.map(|agent| supervision.apply(&agent)).collect(),
            None => expanded.collect(),
        }
    }

    /// Whether a supervisor watches the guild's agents: it has a `[supervision]`
    /// table, or an agent sets something only a supervisor acts on (`restart`,
    /// `backoff`, `watchdog_ms`, or `health`, whose probes a supervisor sends).
    pub fn supervised(&self) -> bool {
        self.supervision.is_some()
            || self.agents.iter().any(|agent| {
                agent.restart.is_some()
                    || agent.backoff.is_some()
                    || agent.watchdog_ms.is_some()
                    || agent.health.is_some()
            })
    }
}

/// How a run of the guild is driven from the command line: what to send at the start,
/// and when the run is complete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// Messages published once every agent is ready.
    #[serde(default)]
    pub send: Vec<SendSpec>,
    /// When the run is complete.
    #[serde(default)]
    pub until: UntilSpec,
    /// Give up (and fail) after this many seconds.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Topics whose messages are printed as they are published.
    #[serde(default)]
    pub show: Vec<String>,
    /// What the run does when an agent ends on its own (crashes, is killed by a limit,
    /// or exits) and nothing restarts it.
    #[serde(default)]
    pub on_agent_exit: AgentExitPolicy,
}

impl Default for RunSpec {
    fn default() -> Self {
        Self {
            send: Vec::new(),
            until: UntilSpec::default(),
            timeout_secs: default_timeout_secs(),
            show: Vec::new(),
            on_agent_exit: AgentExitPolicy::default(),
        }
    }
}

/// What a run does when an agent ends on its own and nothing restarts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentExitPolicy {
    /// Stop the run at once and fail: the guild cannot finish without the agent.
    #[default]
    Stop,
    /// Report it and carry on with the agents that are left.
    Continue,
}

/// A message published at the start of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendSpec {
    /// The topic.
    pub topic: String,
    /// The JSON payload.
    #[serde(default)]
    pub payload: serde_json::Value,
    /// Where replies should go.
    #[serde(default)]
    pub reply_to: Option<String>,
}

/// When a run is complete: after `count` messages on `topic`, or, without a topic, once
/// the guild has been quiet (nothing queued, nothing being handled) for `quiet_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UntilSpec {
    /// The topic whose messages complete the run.
    #[serde(default)]
    pub topic: Option<String>,
    /// How many messages on `topic` complete the run.
    #[serde(default = "one_u64")]
    pub count: u64,
    /// How long the guild must stay quiet to count as done.
    #[serde(default = "default_quiet_ms")]
    pub quiet_ms: u64,
}

impl Default for UntilSpec {
    fn default() -> Self {
        Self {
            topic: None,
            count: 1,
            quiet_ms: default_quiet_ms(),
        }
    }
}

fn one_u64() -> u64 {
    1
}

fn default_timeout_secs() -> u64 {
    300
}

fn default_quiet_ms() -> u64 {
    300
}
