//! A connection to one node's service, carrying the cluster's token on every call.

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
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

/// Connects to the node at `address` (`host:port`); `token` is `None` only to prove a
/// node refuses such calls.
pub async fn connect(
    address: &str,
    token: Option<Token>,
) -> Result<NodeClient, tonic::transport::Error> {
    let channel = Endpoint::from_shared(format!("http://{address}"))?
        .connect()
        .await?;
    Ok(
        proto::node_client::NodeClient::with_interceptor(channel, WithToken(token))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
    )
}
