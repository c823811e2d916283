//! The node side: a service that runs agents of any guild on this machine, on the engine
//! it is given (the process engine in `guild node`), for whoever holds the cluster's
//! token.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use engine_core::{
    AgentInfo, AgentRegistry, AgentSpec, ErrorKind, ExecutionEngine, GuildContext, LifecycleEvent,
    LifecycleKind,
};
use messaging_redis::{RedisConfig, RedisMessaging};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::auth::Token;
use crate::proto;
use crate::resources::{self, Resources};

/// The largest request a node accepts (a spec is data of a few kilobytes).
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// Who a node is and what it offers.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    /// The node's id, unique in the cluster.
    pub id: String,
    /// Where other machines reach its service, as `host:port`.
    pub address: String,
    /// Labels placement selects on.
    pub labels: std::collections::BTreeMap<String, String>,
    /// What it offers agents, by resource ([`machine_capacity`](crate::machine_capacity)
    /// and the operator's own).
    pub capacity: Resources,
    /// The cluster's Redis (a guild messaging URL): the node runs agents only of guilds
    /// on this server, database and key prefix, so no caller can point it elsewhere.
    pub messaging: String,
}

/// A guild's context on this node, made on the guild's first agent here.
type Guilds = HashMap<(String, String), GuildContext>;

/// The node service: runs agents on `engine`, building them with `registry`.
pub struct NodeService {
    identity: NodeIdentity,
    token: Token,
    engine: Arc<dyn ExecutionEngine>,
    registry: Arc<AgentRegistry>,
    guilds: Mutex<Guilds>,
    /// The highest placement generation seen per (guild, agent).
    generations: Mutex<HashMap<(String, String), u64>>,
    /// What each agent the node runs asked for; held while checking that a new agent
    /// fits, so two cannot both take the last of a resource.
    reserved: Mutex<HashMap<(String, String), Resources>>,
    /// Ended agents taken from the engine by a cleanup of another guild, kept until
    /// their own guild cleans up.
    ended: Mutex<HashMap<String, Vec<AgentInfo>>>,
    /// Where the cluster's Redis is, as the node compares guilds' URLs with it.
    cluster_redis: Option<RedisConfig>,
    /// The generation of the node's lease, once it holds one.
    lease_generation: std::sync::atomic::AtomicU64,
    /// The certificate and key the service proves itself with, when it speaks TLS.
    tls: Option<tonic::transport::Identity>,
    /// Set when the node stops: event streams end.
    stopping: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for NodeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeService")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl NodeService {
    /// A service for the node `identity`, running agents on `engine`.
    pub fn new(
        identity: NodeIdentity,
        token: Token,
        engine: Arc<dyn ExecutionEngine>,
        registry: Arc<AgentRegistry>,
    ) -> Self {
        Self {
            cluster_redis: RedisConfig::from_url(&identity.messaging).ok(),
            identity,
            token,
            engine,
            registry,
            guilds: Mutex::new(HashMap::new()),
            generations: Mutex::new(HashMap::new()),
            reserved: Mutex::new(HashMap::new()),
            ended: Mutex::new(HashMap::new()),
            lease_generation: std::sync::atomic::AtomicU64::new(0),
            tls: None,
            stopping: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    /// Serves over TLS with this certificate chain and private key (PEM).
    #[must_use]
    pub fn with_tls(mut self, cert_pem: &[u8], key_pem: &[u8]) -> Self {
        self.tls = Some(tonic::transport::Identity::from_pem(cert_pem, key_pem));
        self
    }

    /// Ends the event streams the node serves, so it can stop: call before stopping
    /// the server.
    pub fn begin_stop(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Records the generation of the lease the node holds.
    pub fn set_lease_generation(&self, generation: u64) {
        self.lease_generation
            .store(generation, std::sync::atomic::Ordering::Release);
    }

    /// Stops every agent the node runs: what a node does when its lease ran out, since
    /// the cluster has placed its agents elsewhere by then.
    pub fn stop_all(&self) {
        let guilds: Vec<String> = lock(&self.guilds).keys().map(|key| key.0.clone()).collect();
        for guild in guilds {
            for agent in self.engine.agents_in_guild(&guild) {
                if !agent.state.is_dead()
                    && let Err(error) = self.engine.stop_agent(&guild, &agent.id)
                {
                    tracing::warn!(%guild, agent = %agent.id, %error, "cannot stop the agent");
                }
            }
        }
    }

    /// How loaded the node is now, as its lease announces it.
    pub fn snapshot(&self) -> proto::NodeStats {
        let stats = self.engine.stats();
        proto::NodeStats {
            node: self.identity.id.clone(),
            address: self.identity.address.clone(),
            labels: self.identity.labels.clone(),
            capacity: self.identity.capacity.clone(),
            used: self.used(),
            agents_running: stats.running as u64,
            messages_in: stats.messages_in,
            messages_out: stats.messages_out,
            lease_generation: self
                .lease_generation
                .load(std::sync::atomic::Ordering::Acquire),
        }
    }

    /// Serves the node service on `listener` until `shutdown` completes.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let token = self.token.clone();
        let mut server = tonic::transport::Server::builder();
        if let Some(identity) = &self.tls {
            server = server
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity.clone()))?;
        }
        let service = proto::node_server::NodeServer::from_arc(self)
            .max_decoding_message_size(MAX_REQUEST_BYTES);
        let service = tonic::service::interceptor::InterceptedService::new(
            service,
            move |request: Request<()>| token.check(&request).map(|()| request),
        );
        server
            .add_service(service)
            .serve_with_incoming_shutdown(
                // Without Nagle's delay: a small reply must not wait for an
                // acknowledgement (40 ms against a delayed ACK).
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                shutdown,
            )
            .await
    }

    /// What the node's live agents asked for, by resource.
    fn used(&self) -> Resources {
        let mut used = Resources::new();
        for ((guild, agent), need) in lock(&self.reserved).iter() {
            if self
                .engine
                .agent_info(guild, agent)
                .is_some_and(|info| !info.state.is_dead())
            {
                resources::add(&mut used, need);
            }
        }
        used
    }

    /// Runs `spec` if what it asks for is free, reserving it; refuses it otherwise.
    fn run_fitted(&self, guild: &GuildContext, mut spec: AgentSpec) -> Result<(), Status> {
        resources::check_agent(&spec).map_err(status)?;
        let need = std::mem::take(&mut spec.resources);
        let key = (guild.namespace.to_string(), spec.id.clone());
        let mut reserved = lock(&self.reserved);
        if !need.is_empty() {
            let mut used = Resources::new();
            for (held, amounts) in reserved.iter() {
                if *held != key
                    && self
                        .engine
                        .agent_info(&held.0, &held.1)
                        .is_some_and(|info| !info.state.is_dead())
                {
                    resources::add(&mut used, amounts);
                }
            }
            if let Some(short) = resources::shortfall(&self.identity.capacity, &used, &need) {
                return Err(status(engine_core::Error::new(
                    ErrorKind::Unavailable,
                    crate::NAME,
                    format!(
                        "agent {:?} needs {}; this node has {short}",
                        spec.id,
                        resources::describe(&need)
                    ),
                )));
            }
        }
        self.engine.run_agent(guild, spec).map_err(status)?;
        if let Some(ended) = lock(&self.ended).get_mut(&key.0) {
            ended.retain(|info| info.id != key.1);
        }
        reserved.insert(key, need);
        Ok(())
    }

    /// The guild's context on this node, made (connecting to its Redis) on first use.
    fn guild(&self, guild: &str, messaging: &str) -> Result<GuildContext, Status> {
        let key = (guild.to_owned(), messaging.to_owned());
        if let Some(context) = lock(&self.guilds).get(&key) {
            return Ok(context.clone());
        }
        let same_redis = |theirs: &RedisConfig| {
            self.cluster_redis.as_ref().is_some_and(|ours| {
                (&ours.host, ours.port, ours.database, &ours.key_prefix)
                    == (
                        &theirs.host,
                        theirs.port,
                        theirs.database,
                        &theirs.key_prefix,
                    )
            })
        };
        match RedisConfig::from_url(messaging) {
            Ok(theirs) if same_redis(&theirs) => {}
            _ => {
                return Err(Status::permission_denied(format!(
                    "guild {guild:?}: this node serves the cluster whose Redis is {}, not {}",
                    messaging_redis::redact(&self.identity.messaging),
                    messaging_redis::redact(messaging)
                )));
            }
        }
        let bus = RedisMessaging::connect(messaging).map_err(status)?;
        let context = GuildContext::new(guild, Arc::new(bus), self.registry.clone());
        Ok(lock(&self.guilds).entry(key).or_insert(context).clone())
    }

    /// Refuses a placement older than one seen for the same agent (fencing), and
    /// records a newer one.
    fn fence(&self, guild: &str, agent: &str, generation: u64) -> Result<(), Status> {
        let mut generations = lock(&self.generations);
        let seen = generations
            .entry((guild.to_owned(), agent.to_owned()))
            .or_insert(0);
        if generation < *seen {
            return Err(Status::failed_precondition(format!(
                "agent {agent:?} of guild {guild:?} was placed again (generation {seen}); \
                 generation {generation} is stale"
            )));
        }
        *seen = generation;
        Ok(())
    }

    /// Runs `call` (which blocks on the engine) off the service's runtime threads.
    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        call: impl FnOnce(&Self) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let node = self.clone();
        tokio::task::spawn_blocking(move || call(&node))
            .await
            .map_err(|e| Status::internal(format!("the node's call failed: {e}")))?
    }

    /// Runs `call` on the engine off the service's runtime threads, answering `reply`
    /// when it succeeds.
    async fn on_engine<R>(
        self: &Arc<Self>,
        reply: R,
        call: impl FnOnce(&dyn ExecutionEngine) -> engine_core::Result<()> + Send + 'static,
    ) -> Result<Response<R>, Status> {
        self.blocking(move |node| call(&*node.engine).map_err(status))
            .await?;
        Ok(Response::new(reply))
    }

    /// Forgets the node's ended agents of `guild`, and answers with them. The engine
    /// cleans up every guild at once, so the ended agents of other guilds are kept for
    /// their own guild's cleanup (and still listed until then).
    fn cleanup(&self, guild: &str) -> Vec<proto::AgentInfo> {
        let mut ended = lock(&self.ended);
        for info in self.engine.cleanup_dead() {
            ended.entry(info.guild.clone()).or_default().push(info);
        }
        let mine = ended.remove(guild).unwrap_or_default();
        drop(ended);
        let mut reserved = lock(&self.reserved);
        let mut generations = lock(&self.generations);
        for info in &mine {
            let key = (info.guild.clone(), info.id.clone());
            reserved.remove(&key);
            generations.remove(&key);
        }
        drop((reserved, generations));
        mine.into_iter().map(|info| self.info(info)).collect()
    }

    fn info(&self, info: AgentInfo) -> proto::AgentInfo {
        let generation = lock(&self.generations)
            .get(&(info.guild.clone(), info.id.clone()))
            .copied()
            .unwrap_or(0);
        proto::AgentInfo {
            guild: info.guild,
            id: info.id,
            name: info.name,
            agent_type: info.agent_type,
            state: info.state.to_string(),
            messages_in: info.messages_in,
            messages_out: info.messages_out,
            errors: info.errors,
            pid: info.pid,
            memory_bytes: info.memory_bytes,
            node: self.identity.id.clone(),
            generation,
            exit: info.exit.map(|exit| proto::Exit {
                reason: exit.reason,
                code: exit.code,
                signal: exit.signal,
            }),
            busy: info.busy,
            queued: info.queued,
        }
    }
}

#[tonic::async_trait]
impl proto::node_server::Node for NodeService {
    async fn run_agent(
        self: Arc<Self>,
        request: Request<proto::RunAgentRequest>,
    ) -> Result<Response<proto::RunAgentReply>, Status> {
        let request = request.into_inner();
        let spec: AgentSpec = serde_json::from_str(&request.spec_json)
            .map_err(|e| Status::invalid_argument(format!("the agent spec: {e}")))?;
        let node = self.identity.id.clone();
        self.blocking(move |node| {
            let guild = node.guild(&request.guild, &request.messaging)?;
            node.fence(&request.guild, &spec.id, request.generation)?;
            node.run_fitted(&guild, spec)
        })
        .await?;
        Ok(Response::new(proto::RunAgentReply { node }))
    }

    async fn stop_agent(
        self: Arc<Self>,
        request: Request<proto::StopAgentRequest>,
    ) -> Result<Response<proto::StopAgentReply>, Status> {
        let request = request.into_inner();
        self.on_engine(proto::StopAgentReply {}, move |engine| {
            engine.stop_agent(&request.guild, &request.agent)
        })
        .await
    }

    async fn pause_agent(
        self: Arc<Self>,
        request: Request<proto::AgentRequest>,
    ) -> Result<Response<proto::AgentReply>, Status> {
        let request = request.into_inner();
        self.on_engine(proto::AgentReply {}, move |engine| {
            engine.pause_agent(&request.guild, &request.agent)
        })
        .await
    }

    async fn resume_agent(
        self: Arc<Self>,
        request: Request<proto::AgentRequest>,
    ) -> Result<Response<proto::AgentReply>, Status> {
        let request = request.into_inner();
        self.on_engine(proto::AgentReply {}, move |engine| {
            engine.resume_agent(&request.guild, &request.agent)
        })
        .await
    }

    async fn kill_agent(
        self: Arc<Self>,
        request: Request<proto::KillAgentRequest>,
    ) -> Result<Response<proto::AgentReply>, Status> {
        let request = request.into_inner();
        self.on_engine(proto::AgentReply {}, move |engine| {
            engine.kill_agent(&request.guild, &request.agent, &request.reason)
        })
        .await
    }

    async fn cleanup_dead(
        self: Arc<Self>,
        request: Request<proto::ListAgentsRequest>,
    ) -> Result<Response<proto::ListAgentsReply>, Status> {
        let guild = request.into_inner().guild;
        let agents = self.blocking(move |node| Ok(node.cleanup(&guild))).await?;
        Ok(Response::new(proto::ListAgentsReply { agents }))
    }

    async fn list_agents(
        self: Arc<Self>,
        request: Request<proto::ListAgentsRequest>,
    ) -> Result<Response<proto::ListAgentsReply>, Status> {
        let guild = request.into_inner().guild;
        let guilds: Vec<String> = if guild.is_empty() {
            let mut names: Vec<String> = lock(&self.guilds).keys().map(|k| k.0.clone()).collect();
            names.sort();
            names.dedup();
            names
        } else {
            vec![guild]
        };
        let ended = lock(&self.ended).clone();
        let agents = guilds
            .iter()
            .flat_map(|guild| {
                let mut agents = self.engine.agents_in_guild(guild);
                agents.extend(ended.get(guild).into_iter().flatten().cloned());
                agents
            })
            .map(|info| self.info(info))
            .collect();
        Ok(Response::new(proto::ListAgentsReply { agents }))
    }

    async fn describe_agent(
        self: Arc<Self>,
        request: Request<proto::DescribeAgentRequest>,
    ) -> Result<Response<proto::DescribeAgentReply>, Status> {
        let request = request.into_inner();
        let agent = self
            .engine
            .agent_info(&request.guild, &request.agent)
            .map(|info| self.info(info));
        Ok(Response::new(proto::DescribeAgentReply { agent }))
    }

    async fn stats(
        self: Arc<Self>,
        _request: Request<proto::StatsRequest>,
    ) -> Result<Response<proto::NodeStats>, Status> {
        Ok(Response::new(self.snapshot()))
    }

    type EventsStream = Pin<Box<dyn Stream<Item = Result<proto::LifecycleEvent, Status>> + Send>>;

    async fn events(
        self: Arc<Self>,
        _request: Request<proto::EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let receiver = self.engine.events();
        let (sender, events) = tokio::sync::mpsc::channel(1024);
        let node = self.identity.id.clone();
        // The engine's events come on a crossbeam channel; a thread hands them on until
        // the caller hangs up.
        let stopping = self.stopping.clone();
        std::thread::Builder::new()
            .name("node-events".into())
            .spawn(move || {
                // Until the caller hangs up, or the node stops (which ends the stream,
                // so the server's graceful stop does not wait on it forever).
                loop {
                    match receiver.recv_timeout(std::time::Duration::from_millis(100)) {
                        Ok(event) => {
                            if sender.blocking_send(Ok(event_of(&node, event))).is_err() {
                                break;
                            }
                        }
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                            if stopping.load(std::sync::atomic::Ordering::Acquire)
                                || sender.is_closed()
                            {
                                break;
                            }
                        }
                        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                    }
                }
            })
            .map_err(|e| Status::internal(format!("cannot follow events: {e}")))?;
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(events),
        )))
    }

    async fn health(
        self: Arc<Self>,
        _request: Request<proto::HealthRequest>,
    ) -> Result<Response<proto::HealthReply>, Status> {
        Ok(Response::new(proto::HealthReply {
            node: self.identity.id.clone(),
            lease_generation: self
                .lease_generation
                .load(std::sync::atomic::Ordering::Acquire),
        }))
    }
}

fn event_of(node: &str, event: LifecycleEvent) -> proto::LifecycleEvent {
    let mut wire = proto::LifecycleEvent {
        guild: event.guild,
        agent: event.agent_id,
        kind: event.kind.name().to_owned(),
        exit_code: event.exit.as_ref().and_then(|exit| exit.code),
        signal: event.exit.as_ref().and_then(|exit| exit.signal),
        unix_ms: engine_core::unix_ms_now(),
        node: node.to_owned(),
        ..Default::default()
    };
    match event.kind {
        LifecycleKind::Crashed { reason } | LifecycleKind::KilledByLimit { reason } => {
            wire.reason = reason;
        }
        LifecycleKind::GroupFailed { group, reason } => {
            wire.group = group;
            wire.reason = reason;
        }
        LifecycleKind::Restarted { attempt, delay_ms } => {
            wire.attempt = attempt;
            wire.delay_ms = delay_ms;
        }
        LifecycleKind::Stuck { busy_ms } => wire.busy_ms = busy_ms,
        LifecycleKind::BreakerOpened { failures } => wire.failures = failures,
        LifecycleKind::Started
        | LifecycleKind::Stopped
        | LifecycleKind::Exited
        | LifecycleKind::BreakerHalfOpen
        | LifecycleKind::BreakerClosed => {}
    }
    if let Some(exit) = event.exit
        && wire.reason.is_empty()
    {
        wire.reason = exit.reason;
    }
    wire
}

/// The metadata key that carries a guild error's kind across the wire.
pub(crate) const ERROR_KIND: &str = "guild-error-kind";

/// A guild error as a gRPC status: a code by its kind, and the kind itself in the
/// metadata, so the engine's side gives its caller the same error.
fn status(error: engine_core::Error) -> Status {
    let kind = serde_json::to_string(&error.kind()).unwrap_or_default();
    let mut status = code_of(&error);
    if let Ok(value) = kind.trim_matches('"').parse() {
        status.metadata_mut().insert(ERROR_KIND, value);
    }
    status
}

fn code_of(error: &engine_core::Error) -> Status {
    let text = error.to_string();
    match error.kind() {
        ErrorKind::InvalidSpec | ErrorKind::InvalidInput | ErrorKind::InvalidConfig => {
            Status::invalid_argument(text)
        }
        ErrorKind::UnknownAgentType => Status::invalid_argument(text),
        ErrorKind::NotFound => Status::not_found(text),
        ErrorKind::Conflict => Status::already_exists(text),
        ErrorKind::Unavailable => Status::unavailable(text),
        ErrorKind::LimitExceeded => Status::resource_exhausted(text),
        _ => Status::internal(text),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
