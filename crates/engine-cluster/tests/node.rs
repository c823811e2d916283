//! A node's service over real gRPC on 127.0.0.1: agents run, are listed, described and
//! stopped through it, with their messages on a private redis-server; calls without the
//! cluster's token, or with another, are refused.

use std::sync::Arc;

use conformance::redis_server::RedisServer;
use engine_cluster::proto::{
    DescribeAgentRequest, ListAgentsRequest, RunAgentRequest, StopAgentRequest,
};
use engine_cluster::{ClientTls, NodeIdentity, NodeService, Token, connect};
use engine_core::AgentSpec;
use engine_threads::ThreadsEngine;

mod support;

use support::token;

/// A node on a free port, serving until the returned sender is dropped.
async fn node(id: &str) -> (String, tokio::sync::oneshot::Sender<()>) {
    serve(id, None).await
}

/// A node on a free port, over TLS with `tls` (certificate and key, PEM) when given.
async fn serve(
    id: &str,
    tls: Option<(&[u8], &[u8])>,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let registry = Arc::new(conformance::agents::registry());
    let mut service = NodeService::new(
        NodeIdentity {
            id: id.to_owned(),
            address: address.to_string(),
            labels: Default::default(),
        },
        token(),
        Arc::new(ThreadsEngine::new()),
        registry,
    );
    if let Some((cert, key)) = tls {
        service = service.with_tls(cert, key);
    }
    let service = Arc::new(service);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(service.serve(listener, async {
        let _ = stopped.await;
    }));
    (address.to_string(), stop)
}

fn spec_json(id: &str) -> String {
    serde_json::to_string(&AgentSpec::new(id, "responder").with_topic("ping")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_run_are_listed_and_stop_through_the_node() {
    let redis = RedisServer::start();
    let (address, _stop) = node("n1").await;
    let mut client = connect(&address, Some(token()), None).await.unwrap();
    let reply = client
        .run_agent(RunAgentRequest {
            guild: "g".into(),
            messaging: redis.url(),
            spec_json: spec_json("echo-1"),
            generation: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.node, "n1");
    let listed = client
        .list_agents(ListAgentsRequest { guild: "g".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.agents.len(), 1);
    assert_eq!(listed.agents[0].id, "echo-1");
    assert_eq!(listed.agents[0].state, "running");
    assert_eq!(listed.agents[0].generation, 1);
    // A stale placement of the same agent is refused (fencing).
    let stale = client
        .run_agent(RunAgentRequest {
            guild: "g".into(),
            messaging: redis.url(),
            spec_json: spec_json("echo-1"),
            generation: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), tonic::Code::FailedPrecondition, "{stale}");
    client
        .stop_agent(StopAgentRequest {
            guild: "g".into(),
            agent: "echo-1".into(),
        })
        .await
        .unwrap();
    let described = client
        .describe_agent(DescribeAgentRequest {
            guild: "g".into(),
            agent: "echo-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    // Stopped: gone from the node, or listed as stopped.
    assert!(
        described
            .agent
            .as_ref()
            .is_none_or(|agent| agent.state == "stopped"),
        "{described:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_the_token_are_refused() {
    let (address, _stop) = node("n1").await;
    for token in [
        None,
        Some(Token::new("another-token-that-is-long").unwrap()),
    ] {
        let mut client = connect(&address, token, None).await.unwrap();
        let refused = client
            .list_agents(ListAgentsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_naming_an_unregistered_type_is_refused_by_name() {
    let redis = RedisServer::start();
    let (address, _stop) = node("n1").await;
    let mut client = connect(&address, Some(token()), None).await.unwrap();
    let spec = serde_json::to_string(&AgentSpec::new("x", "no-such-type")).unwrap();
    let refused = client
        .run_agent(RunAgentRequest {
            guild: "g".into(),
            messaging: redis.url(),
            spec_json: spec,
            generation: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused}");
    assert!(refused.message().contains("no-such-type"), "{refused}");
    let refused = client
        .run_agent(RunAgentRequest {
            guild: "g".into(),
            messaging: "memory".into(),
            spec_json: spec_json("e"),
            generation: 1,
        })
        .await
        .unwrap_err();
    assert!(refused.message().contains("Redis"), "{refused}");
}

/// A certificate for 127.0.0.1, signed by itself, and its key (PEM).
fn certificate() -> (String, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    (certified.cert.pem(), certified.signing_key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_only_a_client_that_trusts_the_node_gets_through() {
    let (cert, key) = certificate();
    let (address, _stop) = serve("n1", Some((cert.as_bytes(), key.as_bytes()))).await;
    let trusting = ClientTls {
        ca_pem: cert.clone().into_bytes(),
        domain: None,
    };
    let mut client = connect(&address, Some(token()), Some(&trusting))
        .await
        .unwrap();
    let listed = client
        .list_agents(ListAgentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.agents.is_empty());
    // Without TLS, or trusting another certificate, no call gets through.
    let (other, _) = certificate();
    let distrusting = ClientTls {
        ca_pem: other.into_bytes(),
        domain: None,
    };
    for tls in [None, Some(&distrusting)] {
        let refused = match connect(&address, Some(token()), tls).await {
            Err(_) => true,
            Ok(mut client) => client
                .list_agents(ListAgentsRequest::default())
                .await
                .is_err(),
        };
        assert!(refused, "a call got through with tls {:?}", tls.is_some());
    }
}
