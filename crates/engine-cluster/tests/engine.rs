//! The cluster engine over three nodes (each a node service on a runtime of its own,
//! holding a lease in a private redis-server): agents are spread one per node, handle
//! what is published to them through Redis, and are listed for the whole cluster.

use std::sync::Arc;

use conformance::harness::{guild, publish, unique_namespace, wait_until};
use conformance::redis_server::RedisServer;
use engine_cluster::proto::ListAgentsRequest;
use engine_cluster::{Policy, connect};
use engine_core::{AgentSpec, ExecutionEngine, MessagingBackend};
use engine_threads::ThreadsEngine;
use messaging_redis::RedisMessaging;
use support::{TestNode, cluster, token};

mod support;

#[test]
fn agents_spread_over_three_nodes_and_handle_messages_through_redis() {
    let redis = RedisServer::start();
    let nodes: Vec<TestNode> = ["n1", "n2", "n3"]
        .iter()
        .map(|id| TestNode::start(id, &redis.url(), Arc::new(ThreadsEngine::new())))
        .collect();
    let engine = cluster(&redis.url(), Policy::Spread, &[]);
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
            .block_on(connect(&node.address, Some(token()), None))
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
    let _node = TestNode::start("n1", &redis.url(), Arc::new(ThreadsEngine::new()));
    let engine = cluster(&redis.url(), Policy::Spread, &[]);
    let memory: Arc<dyn MessagingBackend> = Arc::new(messaging_memory::MemoryMessaging::new());
    let error = engine
        .run_agent(&guild("g", memory), AgentSpec::new("a", "counter"))
        .unwrap_err();
    assert!(error.to_string().contains("Redis"), "{error}");
}

#[test]
fn nothing_fits_a_selector_no_node_matches() {
    let redis = RedisServer::start();
    let _node = TestNode::start("n1", &redis.url(), Arc::new(ThreadsEngine::new()));
    let engine = cluster(&redis.url(), Policy::Pack, &[("zone", "mars")]);
    let bus: Arc<dyn MessagingBackend> = Arc::new(RedisMessaging::connect(&redis.url()).unwrap());
    let error = engine
        .run_agent(&guild("g", bus), AgentSpec::new("a", "counter"))
        .unwrap_err();
    assert!(error.to_string().contains("no live node fits"), "{error}");
}
