//! A running node: the node service listening on a runtime of its own and holding its
//! lease, as `guild node` runs it (and the tests and benchmarks, in processes of their
//! own).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use engine_core::{AgentRegistry, Error, ErrorKind, ExecutionEngine, Result};
use tokio::runtime::Runtime;

use crate::auth::Token;
use crate::lease::Lease;
use crate::node::{NodeIdentity, NodeService};
use crate::resources::Resources;

/// How long a stopping node lets calls in flight finish.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How a node joins its cluster.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The address to listen on (port 0 picks a free one).
    pub listen: String,
    /// Where other machines reach it, as `host:port`; the listening address when `None`.
    pub advertise: Option<String>,
    /// Its id; the host name and port when `None`.
    pub id: Option<String>,
    /// Labels placement selects on.
    pub labels: std::collections::BTreeMap<String, String>,
    /// What it offers agents.
    pub capacity: Resources,
    /// The cluster's Redis.
    pub messaging: String,
    /// The cluster's token.
    pub token: Token,
    /// How long its lease lasts without renewal.
    pub lease: Duration,
    /// Its certificate chain and private key (PEM), to serve over TLS.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
}

impl NodeOptions {
    /// A node of the cluster whose Redis is `messaging`, on a free port of 127.0.0.1,
    /// offering this machine's cores and memory, with a 3-second lease.
    pub fn new(messaging: &str, token: Token) -> Self {
        Self {
            listen: "127.0.0.1:0".to_owned(),
            advertise: None,
            id: None,
            labels: Default::default(),
            capacity: crate::resources::machine_capacity(),
            messaging: messaging.to_owned(),
            token,
            lease: Duration::from_secs(3),
            tls: None,
        }
    }
}

/// A node serving and holding its lease until [`stop`](Self::stop)ped or dropped.
pub struct Node {
    id: String,
    address: SocketAddr,
    engine: Arc<dyn ExecutionEngine>,
    service: Arc<NodeService>,
    lease: Option<Lease>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::result::Result<(), tonic::transport::Error>>>,
    runtime: Runtime,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Listens, takes the node's lease, and serves, running agents on `engine` built
    /// with `registry`.
    pub fn start(
        options: NodeOptions,
        engine: Arc<dyn ExecutionEngine>,
        registry: Arc<AgentRegistry>,
    ) -> Result<Self> {
        let io = |what: String| Error::new(ErrorKind::Io, crate::NAME, what);
        if options.lease < Duration::from_millis(300) {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                crate::NAME,
                format!(
                    "a lease of {} ms cannot be renewed reliably: give at least 300 ms",
                    options.lease.as_millis()
                ),
            ));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("node-io")
            .enable_all()
            .build()
            .map_err(|e| io(format!("cannot start the node's runtime: {e}")))?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(&options.listen))
            .map_err(|e| io(format!("cannot listen on {}: {e}", options.listen)))?;
        let address = listener
            .local_addr()
            .map_err(|e| io(format!("cannot tell where it listens: {e}")))?;
        let id = options
            .id
            .clone()
            .unwrap_or_else(|| format!("{}:{}", hostname(), address.port()));
        let mut service = NodeService::new(
            NodeIdentity {
                id: id.clone(),
                address: options.advertise.unwrap_or_else(|| address.to_string()),
                labels: options.labels,
                capacity: options.capacity,
                messaging: options.messaging.clone(),
            },
            options.token,
            engine.clone(),
            registry,
        );
        if let Some((cert, key)) = &options.tls {
            service = service.with_tls(cert, key);
        }
        let service = Arc::new(service);
        let (announced, fenced) = (service.clone(), service.clone());
        let lease = Lease::take(
            &options.messaging,
            &id,
            options.lease,
            move || announced.snapshot(),
            move || fenced.stop_all(),
        )?;
        service.set_lease_generation(lease.generation);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = runtime.spawn(service.clone().serve(listener, async {
            let _ = stopped.await;
        }));
        Ok(Self {
            id,
            address,
            engine,
            service: service.clone(),
            lease: Some(lease),
            stop: Some(stop),
            server: Some(server),
            runtime,
        })
    }

    /// The node's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Whether its service has stopped on its own (it failed).
    pub fn failed(&self) -> bool {
        self.server
            .as_ref()
            .is_none_or(|server| server.is_finished())
    }

    /// Gives up the lease (the cluster sees the node gone at once), stops serving, and
    /// stops its agents.
    pub fn stop(mut self) -> Result<()> {
        self.halt()
    }

    fn halt(&mut self) -> Result<()> {
        drop(self.lease.take());
        self.service.begin_stop();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let stopped = self.engine.shutdown();
        if let Some(mut server) = self.server.take() {
            // Calls in flight get a few seconds to finish; then the server is dropped.
            let finished = self
                .runtime
                .block_on(async { tokio::time::timeout(STOP_GRACE, &mut server).await });
            let Ok(finished) = finished else {
                server.abort();
                tracing::warn!(node = %self.id, "calls still open after the grace period: dropped");
                return stopped;
            };
            match finished {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    return Err(Error::new(
                        ErrorKind::Io,
                        crate::NAME,
                        format!("the node service failed: {error}"),
                    ));
                }
                Err(error) => {
                    return Err(Error::new(
                        ErrorKind::Internal,
                        crate::NAME,
                        format!("the node service panicked: {error}"),
                    ));
                }
            }
        }
        stopped
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "node".to_owned())
}
