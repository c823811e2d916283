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
use messaging_redis::RedisMessaging;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::auth::Token;
use crate::proto;

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
    /// The generation of the node's lease, once it holds one.
    lease_generation: std::sync::atomic::AtomicU64,
    /// The certificate and key the service proves itself with, when it speaks TLS.
    tls: Option<tonic::transport::Identity>,
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
            identity,
            token,
            engine,
            registry,
            guilds: Mutex::new(HashMap::new()),
            generations: Mutex::new(HashMap::new()),
            lease_generation: std::sync::atomic::AtomicU64::new(0),
            tls: None,
        }
    }

    /// Serves over TLS with this certificate chain and private key (PEM).
    #[must_use]
    pub fn with_tls(mut self, cert_pem: &[u8], key_pem: &[u8]) -> Self {
        self.tls = Some(tonic::transport::Identity::from_pem(cert_pem, key_pem));
        self
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
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                shutdown,
            )
            .await
    }

    /// The guild's context on this node, made (connecting to its Redis) on first use.
    fn guild(&self, guild: &str, messaging: &str) -> Result<GuildContext, Status> {
        let key = (guild.to_owned(), messaging.to_owned());
        if let Some(context) = lock(&self.guilds).get(&key) {
            return Ok(context.clone());
        }
        if !messaging.starts_with("redis://") && !messaging.starts_with("rediss://") {
            return Err(Status::invalid_argument(format!(
                "guild {guild:?}: a node reaches its guild through Redis, not {messaging:?}"
            )));
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
        self.fence(&request.guild, &spec.id, request.generation)?;
        let node = self.identity.id.clone();
        tokio::task::spawn_blocking(move || {
            let guild = self.guild(&request.guild, &request.messaging)?;
            self.engine.run_agent(&guild, spec).map_err(status)
        })
        .await
        .map_err(|e| Status::internal(format!("running the agent: {e}")))??;
        Ok(Response::new(proto::RunAgentReply { node }))
    }

    async fn stop_agent(
        self: Arc<Self>,
        request: Request<proto::StopAgentRequest>,
    ) -> Result<Response<proto::StopAgentReply>, Status> {
        let request = request.into_inner();
        tokio::task::spawn_blocking(move || {
            self.engine
                .stop_agent(&request.guild, &request.agent)
                .map_err(status)
        })
        .await
        .map_err(|e| Status::internal(format!("stopping the agent: {e}")))??;
        Ok(Response::new(proto::StopAgentReply {}))
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
        let agents = guilds
            .iter()
            .flat_map(|guild| self.engine.agents_in_guild(guild))
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
        std::thread::Builder::new()
            .name("node-events".into())
            .spawn(move || {
                while let Ok(event) = receiver.recv() {
                    if sender.blocking_send(Ok(event_of(&node, event))).is_err() {
                        break;
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
