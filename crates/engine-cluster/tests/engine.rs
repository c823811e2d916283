//! The cluster engine over three nodes (each a node service on a runtime of its own,
//! holding a lease in a private redis-server): agents are spread one per node, handle
//! what is published to them through Redis, and are listed for the whole cluster.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use conformance::harness::{guild, publish, unique_namespace, wait_until};
use conformance::redis_server::RedisServer;
use engine_cluster::proto::ListAgentsRequest;
use engine_cluster::{
    ClusterConfig, ClusterEngine, Lease, NodeIdentity, NodeService, Policy, Token, connect,
};
use engine_core::{AgentSpec, ExecutionEngine, MessagingBackend};
use engine_threads::ThreadsEngine;
use messaging_redis::RedisMessaging;

const TOKEN: &str = "a-cluster-token-of-some-length";

/// A node serving on a free port of a runtime of its own, holding its lease.
struct TestNode {
    address: String,
    _lease: Lease,
    _runtime: tokio::runtime::Runtime,
}

fn node(id: &str, redis: &str) -> TestNode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let address = listener.local_addr().unwrap();
    let service = Arc::new(NodeService::new(
        NodeIdentity {
            id: id.to_owned(),
            address,
            labels: BTreeMap::from([("zone".to_owned(), id.to_owned())]),
        },
        Token::new(TOKEN).unwrap(),
        Arc::new(ThreadsEngine::new()),
        Arc::new(conformance::agents::registry()),
    ));
    runtime.spawn(service.clone().serve(listener, std::future::pending()));
    let (announced, fenced) = (service.clone(), service.clone());
    let lease = Lease::take(
        redis,
        id,
        Duration::from_secs(3),
        move || announced.snapshot(),
        move || fenced.stop_all(),
    )
    .unwrap();
    service.set_lease_generation(lease.generation);
    TestNode {
        address: address.to_string(),
        _lease: lease,
        _runtime: runtime,
    }
}

#[test]
fn agents_spread_over_three_nodes_and_handle_messages_through_redis() {
    let redis = RedisServer::start();
    let nodes: Vec<TestNode> = ["n1", "n2", "n3"]
        .iter()
        .map(|id| node(id, &redis.url()))
        .collect();
    let engine = ClusterEngine::new(ClusterConfig {
        redis: redis.url(),
        token: Token::new(TOKEN).unwrap(),
        policy: Policy::Spread,
        selector: BTreeMap::new(),
    })
    .unwrap();
    assert_eq!(engine.nodes().unwrap().len(), 3);
    let bus: Arc<dyn MessagingBackend> = Arc::new(RedisMessaging::connect(&redis.url()).unwrap());
    let namespace = unique_namespace("cluster");
    let context = guild(&namespace, bus.clone());
    for n in 0..3 {
        let spec = AgentSpec::new(format!("counter-{n}"), "counter").with_topic("work");
        engine.run_agent(&context, spec).unwrap();
    }
    // One agent per node.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for node in &nodes {
        let mut client = runtime
            .block_on(connect(&node.address, Some(Token::new(TOKEN).unwrap())))
            .unwrap();
        let listed = runtime
            .block_on(client.list_agents(ListAgentsRequest {
                guild: namespace.clone(),
            }))
            .unwrap()
            .into_inner();
        assert_eq!(listed.agents.len(), 1, "{listed:?}");
    }
    assert_eq!(engine.agents_in_guild(&namespace).len(), 3);
    publish(&*bus, &namespace, "publisher", "work", "hello");
    wait_until(&[], "every agent handled the message", || {
        (0..3).all(|n| {
            engine
                .agent_info(&namespace, &format!("counter-{n}"))
                .is_some_and(|info| info.messages_in == 1)
        })
    });
    engine.shutdown().unwrap();
}

#[test]
fn memory_messaging_is_refused_by_name() {
    let redis = RedisServer::start();
    let _node = node("n1", &redis.url());
    let engine = ClusterEngine::new(ClusterConfig {
        redis: redis.url(),
        token: Token::new(TOKEN).unwrap(),
        policy: Policy::Spread,
        selector: BTreeMap::new(),
    })
    .unwrap();
    let memory: Arc<dyn MessagingBackend> = Arc::new(messaging_memory::MemoryMessaging::new());
    let error = engine
        .run_agent(&guild("g", memory), AgentSpec::new("a", "counter"))
        .unwrap_err();
    assert!(error.to_string().contains("Redis"), "{error}");
}

#[test]
fn nothing_fits_a_selector_no_node_matches() {
    let redis = RedisServer::start();
    let _node = node("n1", &redis.url());
    let engine = ClusterEngine::new(ClusterConfig {
        redis: redis.url(),
        token: Token::new(TOKEN).unwrap(),
        policy: Policy::Pack,
        selector: BTreeMap::from([("zone".to_owned(), "mars".to_owned())]),
    })
    .unwrap();
    let bus: Arc<dyn MessagingBackend> = Arc::new(RedisMessaging::connect(&redis.url()).unwrap());
    let error = engine
        .run_agent(&guild("g", bus), AgentSpec::new("a", "counter"))
        .unwrap_err();
    assert!(error.to_string().contains("no live node fits"), "{error}");
}
