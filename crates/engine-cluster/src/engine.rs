//! The engine side: `ClusterEngine` places each agent on a live node (found through the
//! nodes' leases in Redis), runs, stops and queries agents through the nodes' service,
//! and merges the nodes' lifecycle events into one hub.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use engine_core::{
    AgentInfo, AgentSpec, AgentState, EngineCapabilities, EngineStats, Error, ErrorKind, EventHub,
    EventReceiver, ExecutionEngine, GuildContext, LifecycleEvent, LifecycleKind, Result,
};
use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;

use crate::auth::Token;
use crate::client::{ClientTls, NodeClient, connect};
use crate::lease::{self, live_nodes};
use crate::proto;
use crate::resources::{self, Resources};

/// The engine's name.
pub const NAME: &str = "cluster";

/// How agents are spread over nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// On the node running the fewest agents.
    #[default]
    Spread,
    /// On the node running the most agents, so others stay free.
    Pack,
}

/// Where the cluster is and how to reach it.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The Redis that holds the nodes' leases and carries the guild's messages.
    pub redis: String,
    /// The cluster's token.
    pub token: Token,
    /// How to check the nodes over TLS; plain HTTP/2 when `None`.
    pub tls: Option<ClientTls>,
    /// How agents are placed, and on which nodes.
    pub placement: ClusterSpec,
}

/// How a guild's agents are placed: a spec's `[cluster]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// How agents are spread (`spread`, the default, or `pack`).
    #[serde(default)]
    pub policy: Policy,
    /// Labels a node must have (all of them) to be chosen.
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// The nodes to use, as `host:port` of their service. When empty, every node with a
    /// live lease in the cluster's Redis; when given, only these, each live while it
    /// answers or its lease is live.
    #[serde(default)]
    pub nodes: Vec<String>,
}

impl ClusterSpec {
    /// What is wrong with the table, naming the setting; `None` when nothing is.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        for address in &self.nodes {
            let port = address
                .rsplit_once(':')
                .map(|(host, port)| (host, port.parse::<u16>()));
            if !matches!(port, Some((host, Ok(port))) if !host.is_empty() && port != 0) {
                return Some(("nodes", format!("{address:?}: write host:port")));
            }
        }
        if let Some((key, _)) = self.selector.iter().find(|(key, _)| key.is_empty()) {
            return Some(("selector", format!("{key:?}: a label needs a name")));
        }
        None
    }
}

/// Where an agent was placed, and what to place it again with.
#[derive(Clone)]
struct Placed {
    node: String,
    address: String,
    guild: GuildContext,
    spec: AgentSpec,
    /// Times it was placed again after its node was lost.
    replaced: u32,
}

/// How often the engine looks for nodes whose lease has run out.
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// The cluster engine; see the module docs.
pub struct ClusterEngine {
    inner: Arc<Inner>,
    watcher: Mutex<Option<std::thread::JoinHandle<()>>>,
}

struct Inner {
    config: ClusterConfig,
    runtime: Runtime,
    /// A client per node address.
    clients: Arc<Mutex<HashMap<String, NodeClient>>>,
    placed: Mutex<HashMap<(String, String), Placed>>,
    hub: Arc<EventHub>,
    closed: AtomicBool,
    /// Held while an agent is placed, so two placements of it cannot race.
    placing: Mutex<()>,
    /// The engine's connection to the cluster's Redis, with its key prefix.
    connection: Mutex<Option<(redis::Connection, String)>>,
}

impl std::fmt::Debug for ClusterEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterEngine")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl ClusterEngine {
    /// An engine for the cluster `config` describes; fails when its Redis cannot be
    /// reached.
    pub fn new(config: ClusterConfig) -> Result<Self> {
        let connection = lease::connect(&config.redis)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cluster-io")
            .enable_all()
            .build()
            .map_err(|e| {
                Error::new(
                    ErrorKind::Io,
                    NAME,
                    format!("cannot start its runtime: {e}"),
                )
            })?;
        let inner = Arc::new(Inner {
            config,
            runtime,
            clients: Arc::new(Mutex::new(HashMap::new())),
            placed: Mutex::new(HashMap::new()),
            hub: Arc::new(EventHub::new()),
            closed: AtomicBool::new(false),
            placing: Mutex::new(()),
            connection: Mutex::new(Some(connection)),
        });
        let watched = Arc::downgrade(&inner);
        let watcher = std::thread::Builder::new()
            .name("cluster-watch".into())
            .spawn(move || {
                while let Some(inner) = watched.upgrade() {
                    if inner.closed.load(Ordering::Acquire) {
                        break;
                    }
                    inner.replace_lost();
                    drop(inner);
                    std::thread::sleep(WATCH_EVERY);
                }
            })
            .map_err(|e| Error::new(ErrorKind::Io, NAME, format!("cannot watch nodes: {e}")))?;
        Ok(Self {
            inner,
            watcher: Mutex::new(Some(watcher)),
        })
    }

    /// The live nodes, as their leases announce them.
    pub fn nodes(&self) -> Result<Vec<lease::NodeSummary>> {
        Ok(self
            .inner
            .nodes()?
            .into_iter()
            .map(lease::summary)
            .collect())
    }

    /// The node agent `agent_id` of `guild` was last placed on.
    pub fn node_of(&self, guild: &str, agent_id: &str) -> Option<String> {
        self.inner.placed(guild, agent_id).map(|placed| placed.node)
    }
}

impl Inner {
    /// Places again every agent whose node's lease has run out, on the live nodes, and
    /// reports each as restarted.
    fn replace_lost(&self) {
        let Ok(live) = self.nodes() else {
            return;
        };
        let lost: Vec<Placed> = lock(&self.placed)
            .values()
            .filter(|placed| !live.iter().any(|node| node.node == placed.node))
            .cloned()
            .collect();
        for placed in lost {
            let agent = placed.spec.id.clone();
            tracing::warn!(node = %placed.node, %agent, "node lost: placing its agent again");
            match self.place(&placed.guild, placed.spec.clone(), placed.replaced + 1) {
                Ok(()) => self.hub.emit(LifecycleEvent::new(
                    &placed.guild.namespace,
                    &agent,
                    NAME,
                    LifecycleKind::Restarted {
                        attempt: placed.replaced + 1,
                        delay_ms: 0,
                    },
                )),
                // A node or Redis out of reach for now: the next look tries again.
                Err(error) if error.is_retryable() => {
                    tracing::warn!(%agent, %error, "cannot place the agent of a lost node again yet");
                }
                // Nothing fits: the agent is gone, and a supervisor, if any, decides.
                Err(error) => {
                    tracing::error!(%agent, %error, "cannot place the agent of a lost node again");
                    lock(&self.placed).remove(&(placed.guild.namespace.to_string(), agent.clone()));
                    self.hub.emit(LifecycleEvent::new(
                        &placed.guild.namespace,
                        &agent,
                        NAME,
                        LifecycleKind::Crashed {
                            reason: format!(
                                "its node {} was lost, and it could not be placed again: {}",
                                placed.node,
                                error.message()
                            ),
                        },
                    ));
                }
            }
        }
    }

    /// The live nodes: those whose lease is live in the cluster's Redis or, when the
    /// spec lists nodes, those of the list that answer or whose lease is live.
    fn nodes(&self) -> Result<Vec<proto::NodeStats>> {
        let leased = self.redis(live_nodes)?;
        let listed = &self.config.placement.nodes;
        if listed.is_empty() {
            return Ok(leased);
        }
        let mut nodes: Vec<proto::NodeStats> = leased
            .into_iter()
            .filter(|node| listed.contains(&node.address))
            .collect();
        for address in listed {
            if nodes.iter().any(|node| node.address == *address) {
                continue;
            }
            if let Some(stats) = self.ask_stats(address) {
                nodes.push(stats);
            }
        }
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        nodes.dedup_by(|a, b| a.node == b.node);
        Ok(nodes)
    }

    /// What the node at `address` says of itself, if it answers in time.
    fn ask_stats(&self, address: &str) -> Option<proto::NodeStats> {
        let mut client = self.client(address).ok()?;
        let call = async {
            tokio::time::timeout(
                crate::client::CONNECT_TIMEOUT,
                client.stats(proto::StatsRequest {}),
            )
            .await
        };
        match self.runtime.block_on(call) {
            Ok(Ok(reply)) => Some(reply.into_inner()),
            Ok(Err(error)) => {
                tracing::warn!(%address, %error, "a listed node refused its stats");
                None
            }
            Err(_) => None,
        }
    }

    /// Runs `command` on the engine's Redis connection (with the key prefix), made on
    /// first use and made again after it failed.
    fn redis<T>(
        &self,
        command: impl FnOnce(&mut redis::Connection, &str) -> Result<T>,
    ) -> Result<T> {
        let mut connection = lock(&self.connection);
        let (open, prefix) = match connection.as_mut() {
            Some(open) => open,
            None => connection.insert(lease::connect(&self.config.redis)?),
        };
        let result = command(open, prefix);
        if result.is_err() {
            *connection = None;
        }
        result
    }

    /// Places `spec` on a live node and runs it there, unless it runs on a live node
    /// already (placed again after a node was lost, say).
    fn place(&self, guild: &GuildContext, spec: AgentSpec, replaced: u32) -> Result<()> {
        let _placing = lock(&self.placing);
        let key = (guild.namespace.to_string(), spec.id.clone());
        if let Some(placed) = lock(&self.placed).get(&key).cloned()
            && self.nodes()?.iter().any(|node| node.node == placed.node)
            && self
                .describe(&placed, &spec.id)
                .is_some_and(|info| !info.state.is_dead())
        {
            return Ok(());
        }
        let node = self.choose(&spec)?;
        let mut client = self.client(&node.address)?;
        let generation: u64 = self.redis(|connection, prefix| {
            redis::cmd("INCR")
                .arg(format!("{prefix}:cluster:placements"))
                .query(connection)
                .map_err(|e| Error::new(ErrorKind::Unavailable, NAME, format!("Redis: {e}")))
        })?;
        let spec_json = serde_json::to_string(&spec)
            .map_err(|e| Error::new(ErrorKind::Codec, NAME, e.to_string()))?;
        let request = proto::RunAgentRequest {
            guild: guild.namespace.to_string(),
            messaging: self.config.redis.clone(),
            spec_json,
            generation,
        };
        self.runtime
            .block_on(client.run_agent(request))
            .map_err(|status| status_error(&node.node, &status))?;
        self.hub.emit(LifecycleEvent::new(
            &guild.namespace,
            &spec.id,
            NAME,
            LifecycleKind::Started,
        ));
        lock(&self.placed).insert(
            key,
            Placed {
                node: node.node,
                address: node.address,
                guild: guild.clone(),
                spec,
                replaced,
            },
        );
        Ok(())
    }

    /// Makes `call` to the node that runs agent `agent` of `guild`; `NotFound` when the
    /// engine placed no such agent.
    fn on_node<F>(&self, guild: &str, agent: &str, call: impl FnOnce(NodeClient) -> F) -> Result<()>
    where
        F: std::future::Future<Output = std::result::Result<(), tonic::Status>>,
    {
        let placed = self.placed(guild, agent).ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                NAME,
                format!("no agent {agent:?} in guild {guild:?}"),
            )
        })?;
        let client = self.client(&placed.address)?;
        self.runtime
            .block_on(call(client))
            .map_err(|status| status_error(&placed.node, &status))
    }

    fn clients_handle(&self) -> std::sync::Weak<Mutex<HashMap<String, NodeClient>>> {
        Arc::downgrade(&self.clients)
    }

    /// What the agent's node says of it.
    fn describe(&self, placed: &Placed, agent_id: &str) -> Option<AgentInfo> {
        let mut client = self.client(&placed.address).ok()?;
        let request = proto::DescribeAgentRequest {
            guild: placed.guild.namespace.to_string(),
            agent: agent_id.to_owned(),
        };
        let reply = self.runtime.block_on(client.describe_agent(request)).ok()?;
        reply.into_inner().agent.map(info_of)
    }

    /// A client of the node at `address`, made (and its events followed) on first use
    /// and again after its event stream ended (the node died or restarted).
    fn client(&self, address: &str) -> Result<NodeClient> {
        if let Some(client) = lock(&self.clients).get(address) {
            return Ok(client.clone());
        }
        let client = self
            .runtime
            .block_on(connect(
                address,
                Some(self.config.token.clone()),
                self.config.tls.as_ref(),
            ))
            .map_err(|e| unreachable_node(address, &with_causes(&e)))?;
        let mut clients = lock(&self.clients);
        if let Some(raced) = clients.get(address) {
            return Ok(raced.clone());
        }
        clients.insert(address.to_owned(), client.clone());
        drop(clients);
        self.follow_events(address, client.clone());
        Ok(client)
    }

    /// Hands the lifecycle events of the node at `address` to the hub until its stream
    /// ends, then forgets the client, so the next call connects afresh.
    fn follow_events(&self, address: &str, mut client: NodeClient) {
        let hub = self.hub.clone();
        let address = address.to_owned();
        let clients = self.clients_handle();
        self.runtime.spawn(async move {
            match client.events(proto::EventsRequest {}).await {
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    while let Ok(Some(event)) = stream.message().await {
                        // Starts and stops happen through the engine, which reports them
                        // itself before `run_agent` and `stop_agent` return.
                        if matches!(event.kind.as_str(), "started" | "stopped") {
                            continue;
                        }
                        if let Some(event) = lifecycle_of(event) {
                            hub.emit(event);
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%address, %error, "cannot follow the node's events");
                }
            }
            if let Some(clients) = clients.upgrade() {
                lock(&clients).remove(&address);
            }
        });
    }

    /// The node to run `spec` on, by policy among those the selector allows and with
    /// what the agent asks for free.
    fn choose(&self, spec: &AgentSpec) -> Result<proto::NodeStats> {
        let placement = &self.config.placement;
        let live = self.nodes()?;
        let announced = live.len();
        // A node's lease tells its load as of its last renewal; what this engine placed
        // since may not be in it yet.
        let placed: Vec<Placed> = lock(&self.placed).values().cloned().collect();
        let ours = |node: &proto::NodeStats| {
            let mut count = 0;
            let mut used = Resources::new();
            for placed in placed.iter().filter(|placed| placed.node == node.node) {
                count += 1;
                resources::add(&mut used, &placed.spec.resources);
            }
            (count, used)
        };
        let mut refusals = Vec::new();
        let mut fitting = Vec::new();
        for mut node in live {
            if let Some((key, wanted)) = placement
                .selector
                .iter()
                .find(|(key, value)| node.labels.get(*key) != Some(*value))
            {
                refusals.push(format!("{} is not {key}={wanted}", node.node));
                continue;
            }
            // What a node has free changes as agents end; for an agent that asks for
            // resources, ask the node itself rather than trust its last renewal.
            if !spec.resources.is_empty() {
                match self.ask_stats(&node.address) {
                    Some(fresh) => node = fresh,
                    None => {
                        refusals.push(format!("{} does not answer", node.node));
                        continue;
                    }
                }
            }
            let (count, mut used) = ours(&node);
            for (name, amount) in &node.used {
                let held = used.entry(name.clone()).or_insert(0.0);
                *held = held.max(*amount);
            }
            if let Some(short) = resources::shortfall(&node.capacity, &used, &spec.resources) {
                refusals.push(format!("{} has {short}", node.node));
                continue;
            }
            let load = node.agents_running.max(count);
            fitting.push((load, node));
        }
        let chosen = match placement.policy {
            Policy::Spread => fitting.into_iter().min_by_key(|(load, _)| *load),
            Policy::Pack => fitting.into_iter().max_by_key(|(load, _)| *load),
        };
        chosen.map(|(_, node)| node).ok_or_else(|| {
            let needs = if spec.resources.is_empty() {
                String::new()
            } else {
                format!(" needing {}", resources::describe(&spec.resources))
            };
            let why = if refusals.is_empty() {
                String::new()
            } else {
                format!(": {}", refusals.join("; "))
            };
            Error::new(
                ErrorKind::Unavailable,
                NAME,
                format!(
                    "agent {:?}{needs}: no live node fits among {announced} in {}{why}",
                    spec.id,
                    messaging_redis::redact(&self.config.redis)
                ),
            )
            // Until the cluster changes, asking again gets the same answer.
            .retryable(false)
        })
    }

    fn placed(&self, guild: &str, agent: &str) -> Option<Placed> {
        lock(&self.placed)
            .get(&(guild.to_owned(), agent.to_owned()))
            .cloned()
    }

    /// What the nodes say of every agent this engine placed, in placement order of
    /// nodes (one call per node that runs any).
    fn own_agents(&self) -> Vec<AgentInfo> {
        let placed: Vec<((String, String), Placed)> = lock(&self.placed)
            .iter()
            .map(|(key, placed)| (key.clone(), placed.clone()))
            .collect();
        let mut by_node: BTreeMap<String, (String, Vec<(String, String)>)> = BTreeMap::new();
        for (key, placed) in placed {
            by_node
                .entry(placed.node.clone())
                .or_insert_with(|| (placed.address.clone(), Vec::new()))
                .1
                .push(key);
        }
        let mut agents = Vec::new();
        for (address, keys) in by_node.into_values() {
            let Ok(mut client) = self.client(&address) else {
                continue;
            };
            let Ok(reply) = self
                .runtime
                .block_on(client.list_agents(proto::ListAgentsRequest::default()))
            else {
                continue;
            };
            agents.extend(
                reply
                    .into_inner()
                    .agents
                    .into_iter()
                    .filter(|agent| keys.contains(&(agent.guild.clone(), agent.id.clone())))
                    .map(info_of),
            );
        }
        agents
    }
}

impl ExecutionEngine for ClusterEngine {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> EngineCapabilities {
        let mut capabilities = EngineCapabilities::default();
        capabilities.parallel = true;
        capabilities.isolated = true;
        capabilities.enforces_limits = true;
        // Where the nodes' engine can (the process engine of `guild node` can).
        capabilities.pause = true;
        capabilities.kill = true;
        capabilities
    }

    fn run_agent(&self, guild: &GuildContext, spec: AgentSpec) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::new(
                ErrorKind::Closed,
                NAME,
                "the engine is shut down",
            ));
        }
        if guild.messaging.name() != "redis" {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                NAME,
                format!(
                    "agent {:?}: the cluster engine carries messages between machines through \
                     Redis; the guild uses {} messaging",
                    spec.id,
                    guild.messaging.name()
                ),
            ));
        }
        resources::check_agent(&spec)?;
        self.inner.place(guild, spec, 0)
    }

    fn stop_agent(&self, guild: &str, agent_id: &str) -> Result<()> {
        // Stopping an agent the engine does not run is a no-op, as on every engine.
        if self.inner.placed(guild, agent_id).is_none() {
            return Ok(());
        }
        let request = proto::StopAgentRequest {
            guild: guild.to_owned(),
            agent: agent_id.to_owned(),
        };
        self.inner
            .on_node(guild, agent_id, |mut client| async move {
                client.stop_agent(request).await.map(|_| ())
            })?;
        lock(&self.inner.placed).remove(&(guild.to_owned(), agent_id.to_owned()));
        self.inner.hub.emit(LifecycleEvent::new(
            guild,
            agent_id,
            NAME,
            LifecycleKind::Stopped,
        ));
        Ok(())
    }

    fn pause_agent(&self, guild: &str, agent_id: &str) -> Result<()> {
        let request = agent_request(guild, agent_id);
        self.inner
            .on_node(guild, agent_id, |mut client| async move {
                client.pause_agent(request).await.map(|_| ())
            })
    }

    fn resume_agent(&self, guild: &str, agent_id: &str) -> Result<()> {
        let request = agent_request(guild, agent_id);
        self.inner
            .on_node(guild, agent_id, |mut client| async move {
                client.resume_agent(request).await.map(|_| ())
            })
    }

    fn kill_agent(&self, guild: &str, agent_id: &str, reason: &str) -> Result<()> {
        let request = proto::KillAgentRequest {
            guild: guild.to_owned(),
            agent: agent_id.to_owned(),
            reason: reason.to_owned(),
        };
        self.inner
            .on_node(guild, agent_id, |mut client| async move {
                client.kill_agent(request).await.map(|_| ())
            })
    }

    fn agents_in_guild(&self, guild: &str) -> Vec<AgentInfo> {
        self.inner
            .own_agents()
            .into_iter()
            .filter(|info| info.guild == guild)
            .collect()
    }

    fn agent_info(&self, guild: &str, agent_id: &str) -> Option<AgentInfo> {
        let placed = self.inner.placed(guild, agent_id)?;
        self.inner.describe(&placed, agent_id)
    }

    fn stats(&self) -> EngineStats {
        self.inner
            .own_agents()
            .iter()
            .map(|info| {
                let mut stats = EngineStats::default();
                match info.state {
                    AgentState::Running | AgentState::Starting => stats.running = 1,
                    AgentState::Paused => stats.paused = 1,
                    _ => stats.dead = 1,
                }
                stats.messages_in = info.messages_in;
                stats.messages_out = info.messages_out;
                stats.errors = info.errors;
                stats
            })
            .sum()
    }

    fn cleanup_dead(&self) -> Vec<AgentInfo> {
        // Each node forgets the ended agents of each guild this engine placed there.
        let mut asked: Vec<(String, String)> = lock(&self.inner.placed)
            .iter()
            .map(|((guild, _), placed)| (placed.address.clone(), guild.clone()))
            .collect();
        asked.sort();
        asked.dedup();
        let mut dead = Vec::new();
        for (address, guild) in asked {
            let Ok(mut client) = self.inner.client(&address) else {
                continue;
            };
            let request = proto::ListAgentsRequest { guild };
            if let Ok(reply) = self.inner.runtime.block_on(client.cleanup_dead(request)) {
                dead.extend(reply.into_inner().agents.into_iter().map(info_of));
            }
        }
        let mut placed = lock(&self.inner.placed);
        dead.retain(|info| {
            placed
                .remove(&(info.guild.clone(), info.id.clone()))
                .is_some()
        });
        dead
    }

    fn shutdown(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        if let Some(watcher) = lock(&self.watcher).take() {
            let _ = watcher.join();
        }
        let placed: Vec<(String, String)> = lock(&self.inner.placed).keys().cloned().collect();
        let mut first_error = None;
        for (guild, agent) in placed {
            if let Err(error) = self.stop_agent(&guild, &agent) {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn events(&self) -> EventReceiver {
        self.inner.hub.subscribe()
    }
}

fn agent_request(guild: &str, agent: &str) -> proto::AgentRequest {
    proto::AgentRequest {
        guild: guild.to_owned(),
        agent: agent.to_owned(),
    }
}

fn info_of(agent: proto::AgentInfo) -> AgentInfo {
    let state = match agent.state.as_str() {
        "starting" => AgentState::Starting,
        "running" => AgentState::Running,
        "paused" => AgentState::Paused,
        "exited" => AgentState::Exited,
        "crashed" => AgentState::Crashed,
        "killed by limit" | "killed_by_limit" => AgentState::KilledByLimit,
        _ => AgentState::Stopped,
    };
    AgentInfo {
        guild: agent.guild,
        id: agent.id,
        name: agent.name,
        agent_type: agent.agent_type,
        engine: NAME.to_owned(),
        state,
        pid: agent.pid,
        node: Some(agent.node),
        memory_bytes: agent.memory_bytes,
        cpu_time: None,
        messages_in: agent.messages_in,
        messages_out: agent.messages_out,
        errors: agent.errors,
        exit: agent.exit.map(|exit| engine_core::ExitStatus {
            reason: exit.reason,
            code: exit.code,
            signal: exit.signal,
        }),
        queued: agent.queued,
        busy: agent.busy,
        timings: Default::default(),
    }
}

/// A node's event as the engine reports it; `None` for a kind this version does not
/// know (a newer node's).
fn lifecycle_of(event: proto::LifecycleEvent) -> Option<LifecycleEvent> {
    let kind = match event.kind.as_str() {
        "started" => LifecycleKind::Started,
        "stopped" => LifecycleKind::Stopped,
        "exited" => LifecycleKind::Exited,
        "crashed" => LifecycleKind::Crashed {
            reason: event.reason.clone(),
        },
        "killed_by_limit" => LifecycleKind::KilledByLimit {
            reason: event.reason.clone(),
        },
        "restarted" => LifecycleKind::Restarted {
            attempt: event.attempt,
            delay_ms: event.delay_ms,
        },
        "group_failed" => LifecycleKind::GroupFailed {
            group: event.group.clone(),
            reason: event.reason.clone(),
        },
        "stuck" => LifecycleKind::Stuck {
            busy_ms: event.busy_ms,
        },
        "breaker_opened" => LifecycleKind::BreakerOpened {
            failures: event.failures,
        },
        "breaker_half_open" => LifecycleKind::BreakerHalfOpen,
        "breaker_closed" => LifecycleKind::BreakerClosed,
        other => {
            tracing::warn!(kind = other, "a node reported an event of an unknown kind");
            return None;
        }
    };
    let ended = kind.is_end();
    let mut lifecycle = LifecycleEvent::new(&event.guild, &event.agent, NAME, kind);
    if ended {
        lifecycle.exit = Some(engine_core::ExitStatus {
            reason: event.reason,
            code: event.exit_code,
            signal: event.signal,
        });
    }
    Some(lifecycle)
}

/// An error's text followed by its causes' (a transport error alone says little: the
/// TLS or connection failure is among its causes).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let said = inner.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = inner.source();
    }
    text
}

fn unreachable_node(address: &str, why: &str) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        NAME,
        format!("cannot reach the node at {address}: {why}"),
    )
    .retryable(true)
}

fn status_error(node: &str, status: &tonic::Status) -> Error {
    let sent = status
        .metadata()
        .get(crate::node::ERROR_KIND)
        .and_then(|value| value.to_str().ok())
        .and_then(|kind| serde_json::from_str::<ErrorKind>(&format!("\"{kind}\"")).ok());
    let kind = sent.unwrap_or(match status.code() {
        tonic::Code::InvalidArgument => ErrorKind::InvalidSpec,
        tonic::Code::NotFound => ErrorKind::NotFound,
        tonic::Code::Unauthenticated => ErrorKind::InvalidConfig,
        tonic::Code::Unavailable => ErrorKind::Unavailable,
        tonic::Code::FailedPrecondition | tonic::Code::AlreadyExists => ErrorKind::Conflict,
        _ => ErrorKind::Internal,
    });
    Error::new(kind, NAME, format!("node {node:?}: {}", status.message()))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
