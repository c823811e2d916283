//! A node's service over real gRPC on 127.0.0.1: agents run, are listed, described and
//! stopped through it, with their messages on a private redis-server; calls without the
//! cluster's token, or with another, are refused; a node runs agents only of its own
//! cluster's Redis, and only where what they ask for is free.

use std::sync::Arc;

use conformance::redis_server::RedisServer;
use engine_cluster::proto::{
    DescribeAgentRequest, ListAgentsRequest, RunAgentRequest, StatsRequest, StopAgentRequest,
};
use engine_cluster::{
    ClientTls, NodeIdentity, NodeService, Resources, Token, connect, machine_capacity,
};
use engine_core::AgentSpec;
use engine_threads::ThreadsEngine;

mod support;

use support::token;

/// A node on a free port, serving until the returned sender is dropped.
async fn node(id: &str, redis: &str) -> (String, tokio::sync::oneshot::Sender<()>) {
    serve(id, redis, machine_capacity(), None).await
}

/// A Redis URL for a node whose test never has it run an agent.
const NO_REDIS: &str = "redis://127.0.0.1:1";

/// A node on a free port, over TLS with `tls` (certificate and key, PEM) when given.
async fn serve(
    id: &str,
    redis: &str,
    capacity: Resources,
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
            capacity,
            messaging: redis.to_owned(),
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
    let (address, _stop) = node("n1", &redis.url()).await;
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
    let (address, _stop) = node("n1", NO_REDIS).await;
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
    let (address, _stop) = node("n1", &redis.url()).await;
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
    let (address, _stop) = serve(
        "n1",
        NO_REDIS,
        machine_capacity(),
        Some((cert.as_bytes(), key.as_bytes())),
    )
    .await;
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

fn run_request(redis: &str, spec: &AgentSpec, generation: u64) -> RunAgentRequest {
    RunAgentRequest {
        guild: "g".into(),
        messaging: redis.to_owned(),
        spec_json: serde_json::to_string(spec).unwrap(),
        generation,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_runs_agents_only_of_its_own_cluster_redis() {
    let redis = RedisServer::start();
    let (address, _stop) = node("n1", &redis.url()).await;
    let mut client = connect(&address, Some(token()), None).await.unwrap();
    let spec = AgentSpec::new("e", "responder").with_topic("ping");
    for elsewhere in [
        "redis://127.0.0.1:1".to_owned(),
        format!("{}?prefix=other", redis.url()),
        format!("{}/3", redis.url()),
    ] {
        let refused = client
            .run_agent(run_request(&elsewhere, &spec, 1))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused}");
        assert!(refused.message().contains("this node serves"), "{refused}");
    }
    client
        .run_agent(run_request(&redis.url(), &spec, 1))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_runs_an_agent_only_where_what_it_asks_for_is_free() {
    let redis = RedisServer::start();
    let capacity = Resources::from([("cpu".to_owned(), 2.0), ("gpu".to_owned(), 1.0)]);
    let (address, _stop) = serve("n1", &redis.url(), capacity, None).await;
    let mut client = connect(&address, Some(token()), None).await.unwrap();
    let needing = |id: &str, gpu: f64| {
        let mut spec = AgentSpec::new(id, "responder").with_topic("ping");
        spec.resources.insert("gpu".into(), gpu);
        spec.resources.insert("cpu".into(), 1.0);
        spec
    };
    client
        .run_agent(run_request(&redis.url(), &needing("a", 1.0), 1))
        .await
        .unwrap();
    let stats = client.stats(StatsRequest {}).await.unwrap().into_inner();
    assert_eq!(stats.used.get("gpu"), Some(&1.0));
    assert_eq!(stats.capacity.get("cpu"), Some(&2.0));
    let refused = client
        .run_agent(run_request(&redis.url(), &needing("b", 0.5), 2))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused}");
    assert!(
        refused.message().contains("gpu 0 free of 1"),
        "{}",
        refused.message()
    );
    // Once the first has ended, its share is free again.
    client
        .stop_agent(StopAgentRequest {
            guild: "g".into(),
            agent: "a".into(),
        })
        .await
        .unwrap();
    client
        .run_agent(run_request(&redis.url(), &needing("b", 0.5), 3))
        .await
        .unwrap();
    let stats = client.stats(StatsRequest {}).await.unwrap().into_inner();
    assert_eq!(stats.used.get("gpu"), Some(&0.5));
}
