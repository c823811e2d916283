//! A connection to one node's service, carrying the cluster's token on every call.

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

use crate::auth::Token;
use crate::node::MAX_REQUEST_BYTES;
use crate::proto;

/// Adds the token to each request.
#[derive(Clone, Debug)]
pub struct WithToken(Option<Token>);

impl tonic::service::Interceptor for WithToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.0 {
            token.attach(&mut request)?;
        }
        Ok(request)
    }
}

/// The generated client, with the token attached.
pub type NodeClient = proto::node_client::NodeClient<InterceptedService<Channel, WithToken>>;

/// How a client checks the nodes it calls over TLS.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// The certificate (PEM) of the authority that signed the nodes' certificates.
    pub ca_pem: Vec<u8>,
    /// The name the nodes' certificates carry; the node's host when `None`.
    pub domain: Option<String>,
}

/// How long connecting to a node may take before it counts as unreachable.
pub(crate) const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Connects to the node at `address` (`host:port`), over TLS when `tls` is given;
/// `token` is `None` only to prove a node refuses such calls.
pub async fn connect(
    address: &str,
    token: Option<Token>,
    tls: Option<&ClientTls>,
) -> Result<NodeClient, tonic::transport::Error> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint =
        Endpoint::from_shared(format!("{scheme}://{address}"))?.connect_timeout(CONNECT_TIMEOUT);
    if let Some(tls) = tls {
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
        if let Some(domain) = &tls.domain {
            config = config.domain_name(domain.clone());
        }
        endpoint = endpoint.tls_config(config)?;
    }
    let channel = endpoint.connect().await?;
    Ok(
        proto::node_client::NodeClient::with_interceptor(channel, WithToken(token))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
    )
}
