//! The cluster engine over three nodes (each a node service on a runtime of its own,
//! holding a lease in a private redis-server): agents are spread one per node, handle
//! what is published to them through Redis, and are listed for the whole cluster; they
//! are placed only where what they ask for is free, or on the nodes a static list names;
//! a crashed agent cleaned up is forgotten by its node.

use std::sync::Arc;

use conformance::harness::{guild, publish, unique_namespace, wait_until};
use conformance::redis_server::RedisServer;
use engine_cluster::proto::ListAgentsRequest;
use engine_cluster::{ClusterSpec, Policy, Resources, connect};
use engine_core::{AgentSpec, AgentState, ErrorKind, ExecutionEngine, MessagingBackend};
use engine_threads::ThreadsEngine;
use messaging_redis::RedisMessaging;
use support::{TestNode, cluster, placing, token};

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

/// What the node at `address` lists of `guild`.
fn listed_on(address: &str, guild: &str) -> Vec<String> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut client = runtime
        .block_on(connect(address, Some(token()), None))
        .unwrap();
    let listed = runtime
        .block_on(client.list_agents(ListAgentsRequest {
            guild: guild.to_owned(),
        }))
        .unwrap()
        .into_inner();
    listed.agents.into_iter().map(|agent| agent.id).collect()
}

#[test]
fn agents_are_placed_only_where_what_they_ask_for_is_free() {
    let redis = RedisServer::start();
    let gpu = Resources::from([("gpu".to_owned(), 1.0), ("cpu".to_owned(), 4.0)]);
    let _with_gpu = TestNode::offering("n1", &redis.url(), Arc::new(ThreadsEngine::new()), gpu);
    let _without = TestNode::start("n2", &redis.url(), Arc::new(ThreadsEngine::new()));
    let engine = cluster(&redis.url(), Policy::Spread, &[]);
    let bus: Arc<dyn MessagingBackend> = Arc::new(RedisMessaging::connect(&redis.url()).unwrap());
    let namespace = unique_namespace("resources");
    let context = guild(&namespace, bus);
    let needing_gpu = |id: &str| {
        let mut spec = AgentSpec::new(id, "counter").with_topic("work");
        spec.resources.insert("gpu".into(), 1.0);
        spec
    };
    engine.run_agent(&context, needing_gpu("a")).unwrap();
    assert_eq!(engine.node_of(&namespace, "a").as_deref(), Some("n1"));
    let refused = engine.run_agent(&context, needing_gpu("b")).unwrap_err();
    let said = refused.to_string();
    assert!(said.contains("needing gpu=1"), "{said}");
    assert!(said.contains("n1 has gpu 0 free of 1"), "{said}");
    assert!(said.contains("n2 has no gpu"), "{said}");
    // A need no node can meet at all, and a bad amount, are refused too.
    let mut greedy = AgentSpec::new("c", "counter");
    greedy.resources.insert("cpu".into(), 1e6);
    assert!(engine.run_agent(&context, greedy).is_err());
    let mut negative = AgentSpec::new("d", "counter");
    negative.resources.insert("cpu".into(), -1.0);
    let refused = engine.run_agent(&context, negative).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::InvalidSpec, "{refused}");
    // Once the first has stopped, its GPU is free again.
    engine.stop_agent(&namespace, "a").unwrap();
    engine.run_agent(&context, needing_gpu("b")).unwrap();
    assert_eq!(engine.node_of(&namespace, "b").as_deref(), Some("n1"));
    engine.shutdown().unwrap();
}

#[test]
fn a_crashed_agent_cleaned_up_is_forgotten_by_its_node() {
    let redis = RedisServer::start();
    let node = TestNode::start("n1", &redis.url(), Arc::new(ThreadsEngine::new()));
    let engine = cluster(&redis.url(), Policy::Spread, &[]);
    let bus: Arc<dyn MessagingBackend> = Arc::new(RedisMessaging::connect(&redis.url()).unwrap());
    let namespace = unique_namespace("cleanup");
    let context = guild(&namespace, bus.clone());
    let spec = AgentSpec::new("fragile", "fragile").with_topic("work");
    engine.run_agent(&context, spec).unwrap();
    publish(&*bus, &namespace, "publisher", "work", "panic");
    wait_until(&[], "the agent crashed", || {
        engine
            .agent_info(&namespace, "fragile")
            .is_some_and(|info| info.state == AgentState::Crashed)
    });
    assert_eq!(listed_on(&node.address, &namespace), ["fragile"]);
    let cleaned: Vec<String> = engine.cleanup_dead().into_iter().map(|a| a.id).collect();
    assert_eq!(cleaned, ["fragile"]);
    assert!(listed_on(&node.address, &namespace).is_empty());
    engine.shutdown().unwrap();
}

#[test]
fn a_static_list_of_nodes_is_all_the_engine_uses() {
    let redis = RedisServer::start();
    let _n1 = TestNode::start("n1", &redis.url(), Arc::new(ThreadsEngine::new()));
    let n2 = TestNode::start("n2", &redis.url(), Arc::new(ThreadsEngine::new()));
    let engine = placing(
        &redis.url(),
        ClusterSpec {
            nodes: vec![n2.address.clone()],
            ..ClusterSpec::default()
        },
    );
    let bus: Arc<dyn MessagingBackend> = Arc::new(RedisMessaging::connect(&redis.url()).unwrap());
    let namespace = unique_namespace("static");
    let context = guild(&namespace, bus.clone());
    for n in 0..3 {
        let spec = AgentSpec::new(format!("counter-{n}"), "counter");
        engine.run_agent(&context, spec).unwrap();
        assert_eq!(
            engine
                .node_of(&namespace, &format!("counter-{n}"))
                .as_deref(),
            Some("n2")
        );
    }
    engine.shutdown().unwrap();
    // A listed address where nothing answers, and no lease names it: nothing is live.
    let free_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = free_port.local_addr().unwrap().to_string();
    drop(free_port);
    let engine = placing(
        &redis.url(),
        ClusterSpec {
            nodes: vec![nowhere],
            ..ClusterSpec::default()
        },
    );
    let refused = engine
        .run_agent(&context, AgentSpec::new("lost", "counter"))
        .unwrap_err();
    assert!(
        refused.to_string().contains("no live node fits among 0"),
        "{refused}"
    );
}

#[test]
fn an_agent_whose_lost_node_nothing_else_fits_is_reported_crashed() {
    let redis = RedisServer::start();
    let gpu = Resources::from([("gpu".to_owned(), 1.0)]);
    let with_gpu = TestNode::offering("n1", &redis.url(), Arc::new(ThreadsEngine::new()), gpu);
    let _without = TestNode::start("n2", &redis.url(), Arc::new(ThreadsEngine::new()));
    let engine = cluster(&redis.url(), Policy::Spread, &[]);
    let events = engine.events();
    let bus: Arc<dyn MessagingBackend> = Arc::new(RedisMessaging::connect(&redis.url()).unwrap());
    let namespace = unique_namespace("lost");
    let mut spec = AgentSpec::new("trainer", "counter");
    spec.resources.insert("gpu".into(), 1.0);
    engine.run_agent(&guild(&namespace, bus), spec).unwrap();
    // The only node with a GPU leaves (its lease goes at once).
    drop(with_gpu);
    let reason = loop {
        let event = events
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("an event within 30 s");
        if let engine_core::LifecycleKind::Crashed { reason } = event.kind {
            assert_eq!(event.agent_id, "trainer");
            break reason;
        }
    };
    assert!(reason.contains("its node n1 was lost"), "{reason}");
    assert!(reason.contains("n2 has no gpu"), "{reason}");
    assert!(engine.agent_info(&namespace, "trainer").is_none());
    engine.shutdown().unwrap();
}
