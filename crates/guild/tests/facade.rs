//! The `Guild` facade: launching, stopping, asking and observing, engines and backends
//! given as instances, and the spec checked when the guild is built.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use guild::engines::{ProcessConfig, ProcessEngine, ThreadsEngine};
use guild::messaging::MemoryMessaging;
use guild::{
    AgentSpec, ErrorKind, ExecutionEngine, ExecutionEngineExt, GuildBuilder, GuildSpec,
    HistoryOrder, HistoryQuery, Message, MessagingBackend, Payload, Priority, StartFrom,
    builtin::builtin_registry, inbox_topic,
};

/// A guild id no other test uses.
fn unique_spec() -> GuildSpec {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    GuildSpec::new(format!("facade-{}-{n}", std::process::id()))
}

fn guild_on(engine: &str) -> guild::Guild {
    GuildBuilder::new(unique_spec())
        .registry(builtin_registry())
        .engine(engine)
        .build()
        .unwrap()
}

fn guild() -> guild::Guild {
    guild_on("threads")
}

/// A process engine whose agents run in the `guild` program, which hosts the built-in
/// types; the tests pass it in configured, as an instance.
fn process_engine() -> Arc<dyn ExecutionEngine> {
    Arc::new(ProcessEngine::with_config(ProcessConfig {
        program: Some(env!("CARGO_BIN_EXE_guild").into()),
        ..ProcessConfig::default()
    }))
}

/// A guild forced onto `engine`, with `process` as its process engine.
fn guild_on_instance(engine: &str, process: &Arc<dyn ExecutionEngine>) -> guild::Guild {
    GuildBuilder::new(unique_spec())
        .registry(builtin_registry())
        .engine(engine)
        .with_engine(process.clone())
        .build()
        .unwrap()
}

fn text(text: &str) -> Payload {
    Payload::encode_json(text).unwrap()
}

#[test]
fn launching_twice_is_one_agent() {
    let mut guild = guild();
    let responder = AgentSpec::new("r", "responder").with_topic("q");
    guild.launch(responder.clone()).unwrap();
    guild.launch(responder).unwrap();
    assert_eq!(guild.agents().len(), 1);
    guild.shutdown().unwrap();
}

#[test]
fn stop_ends_one_agent_and_leaves_the_others() {
    let mut guild = guild();
    guild
        .launch(AgentSpec::new("a", "responder").with_topic("q"))
        .unwrap();
    guild
        .launch(AgentSpec::new("b", "responder").with_topic("q"))
        .unwrap();
    guild.stop("a").unwrap();
    guild.stop("never-launched").unwrap();
    let namespace = guild.spec().id.clone();
    let running = |id: &str| {
        guild
            .engines()
            .any(|(_, engine)| engine.is_agent_running(&namespace, id))
    };
    assert!(!running("a"), "a was stopped");
    assert!(running("b"), "b runs on");
    guild.shutdown().unwrap();
}

#[test]
fn stopped_agents_are_no_longer_listed() {
    let mut guild = guild();
    guild.launch(AgentSpec::new("a", "responder")).unwrap();
    guild.launch(AgentSpec::new("b", "responder")).unwrap();
    guild.stop("a").unwrap();
    let left: Vec<String> = guild.agents().into_iter().map(|a| a.id).collect();
    assert_eq!(left, ["b"]);
    guild.shutdown().unwrap();
}

#[test]
fn request_returns_the_reply_on_every_engine() {
    let process = process_engine();
    for engine in ["sync", "threads", "pool", "process"] {
        let mut guild = guild_on_instance(engine, &process);
        guild.launch(AgentSpec::new("r", "responder")).unwrap();
        for question in ["one", "two"] {
            let message = Message::builder(inbox_topic("r"), text(question));
            let reply = guild.request(message, Duration::from_secs(30)).unwrap();
            assert_eq!(reply.decode_json::<String>().unwrap(), question, "{engine}");
        }
        guild.shutdown().unwrap();
    }
}

#[test]
fn request_without_a_reply_times_out() {
    let mut guild = guild();
    guild.launch(AgentSpec::new("r", "responder")).unwrap();
    // Nobody listens on this topic.
    let message = Message::builder("nowhere", text("hello?"));
    let error = guild
        .request(message, Duration::from_millis(50))
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::TimedOut, "{error}");
    assert!(error.is_retryable());
    // The inbox still works for the next request.
    let message = Message::builder(inbox_topic("r"), text("still there?"));
    let reply = guild.request(message, Duration::from_secs(30)).unwrap();
    assert_eq!(reply.decode_json::<String>().unwrap(), "still there?");
    guild.shutdown().unwrap();
}

#[test]
fn requests_from_several_threads_each_get_their_own_reply() {
    let mut guild = guild();
    guild.launch(AgentSpec::new("r", "responder")).unwrap();
    std::thread::scope(|scope| {
        for thread in 0..4 {
            let guild = &guild;
            scope.spawn(move || {
                for n in 0..25 {
                    let question = format!("{thread}/{n}");
                    let message = Message::builder(inbox_topic("r"), text(&question));
                    let reply = guild.request(message, Duration::from_secs(30)).unwrap();
                    assert_eq!(reply.decode_json::<String>().unwrap(), question);
                }
            });
        }
    });
    guild.shutdown().unwrap();
}

#[test]
fn an_observer_waits_acknowledges_and_can_start_from_the_backlog() {
    let guild = guild();
    guild
        .publish(Message::builder("news", text("before")))
        .unwrap();
    let mut latest = guild.observe("latest", vec!["news".into()]).unwrap();
    let mut backlog = guild
        .observe_from("backlog", vec!["news".into()], StartFrom::Earliest)
        .unwrap();
    assert!(latest.try_recv().unwrap().is_none());
    let publisher = std::thread::scope(|scope| {
        let guild = &guild;
        let waiting = scope.spawn(move || latest.recv_timeout(Duration::from_secs(30)));
        guild
            .publish(Message::builder("news", text("after")))
            .unwrap();
        let seen = waiting
            .join()
            .unwrap()
            .unwrap()
            .expect("the message published after");
        seen.message.decode_json::<String>().unwrap()
    });
    assert_eq!(publisher, "after");
    let mut from_backlog = Vec::new();
    while let Some(delivery) = backlog.recv_timeout(Duration::ZERO).unwrap() {
        from_backlog.push(delivery.message.decode_json::<String>().unwrap());
    }
    assert_eq!(from_backlog, ["before", "after"]);
    // Each was acknowledged as it was handed out.
    assert_eq!(backlog.pending(), 0);
    guild.shutdown().unwrap();
}

#[test]
fn an_engine_instance_is_shared_and_outlives_each_guild() {
    let engine: Arc<dyn ExecutionEngine> = Arc::new(ThreadsEngine::new());
    let build = || {
        GuildBuilder::new(unique_spec())
            .registry(builtin_registry())
            .engine("threads")
            .with_engine(engine.clone())
            .build()
            .unwrap()
    };
    let (mut first, mut second) = (build(), build());
    first.launch(AgentSpec::new("r", "responder")).unwrap();
    second.launch(AgentSpec::new("r", "responder")).unwrap();
    assert_eq!(
        engine.stats().running,
        2,
        "both guilds run on the one engine"
    );
    first.shutdown().unwrap();
    assert!(!engine.is_agent_running(&first.spec().id, "r"));
    assert!(engine.is_agent_running(&second.spec().id, "r"));
    let message = Message::builder(inbox_topic("r"), text("alive?"));
    let reply = second.request(message, Duration::from_secs(30)).unwrap();
    assert_eq!(reply.decode_json::<String>().unwrap(), "alive?");
    drop(second);
    assert_eq!(engine.stats().running, 0);
    engine.shutdown().unwrap();
}

#[test]
fn a_backend_instance_is_shared_between_guilds() {
    let bus: Arc<dyn MessagingBackend> = Arc::new(MemoryMessaging::new());
    let spec = unique_spec();
    let build = || {
        GuildBuilder::new(spec.clone())
            .registry(builtin_registry())
            .with_messaging(bus.clone())
            .build()
            .unwrap()
    };
    let (mut answering, asking) = (build(), build());
    answering.launch(AgentSpec::new("r", "responder")).unwrap();
    let message = Message::builder(inbox_topic("r"), text("across"));
    let reply = asking.request(message, Duration::from_secs(30)).unwrap();
    assert_eq!(reply.decode_json::<String>().unwrap(), "across");
}

#[test]
fn build_checks_the_spec() {
    let mut spec = unique_spec();
    spec.agents.push(AgentSpec::new("a", "no-such-type"));
    spec.agents.push(AgentSpec::new("a", "responder"));
    let error = GuildBuilder::new(spec)
        .registry(builtin_registry())
        .build()
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidSpec);
    let text = error.to_string();
    assert!(text.contains("no-such-type"), "{text}");
    assert!(text.contains("\"a\""), "names the duplicate id: {text}");

    // The engine chosen in code is the one checked: limits the threads engine cannot
    // keep are refused when it is forced, though the spec names the process engine.
    let mut spec = unique_spec();
    spec.engine = Some("process".into());
    let mut agent = AgentSpec::new("a", "responder");
    agent.limits.memory_bytes = Some(256 * 1024 * 1024);
    spec.agents.push(agent);
    let forced = GuildBuilder::new(spec.clone())
        .registry(builtin_registry())
        .engine("threads")
        .build();
    assert_eq!(forced.unwrap_err().kind(), ErrorKind::InvalidSpec);
    assert!(
        GuildBuilder::new(spec)
            .registry(builtin_registry())
            .build()
            .is_ok()
    );
}

#[test]
fn history_comes_in_publish_order_or_in_priority_order() {
    let guild = guild();
    let published = [
        Priority::Normal,
        Priority::High,
        Priority::Low,
        Priority::Normal,
        Priority::Urgent,
        Priority::Low,
    ];
    let mut ids = Vec::new();
    for (n, priority) in published.iter().enumerate() {
        let message = Message::builder("h", Payload::encode_json(&n).unwrap()).priority(*priority);
        ids.push(guild.publish(message).unwrap());
    }
    let numbers = |query: &HistoryQuery, order| -> Vec<usize> {
        guild
            .history(query, order)
            .unwrap()
            .iter()
            .map(|message| message.decode_json().unwrap())
            .collect()
    };
    let topic = HistoryQuery::Topic("h".into());
    assert_eq!(numbers(&topic, HistoryOrder::Published), [0, 1, 2, 3, 4, 5]);
    // Urgent, high, normal, normal, low, low.
    assert_eq!(numbers(&topic, HistoryOrder::Priority), [4, 1, 0, 3, 2, 5]);
    let since = HistoryQuery::After {
        topic: "h".into(),
        after: ids[1],
    };
    assert_eq!(numbers(&since, HistoryOrder::Published), [2, 3, 4, 5]);
    // The newer urgent message comes first.
    assert_eq!(numbers(&since, HistoryOrder::Priority), [4, 3, 2, 5]);
    guild.shutdown().unwrap();
}

#[test]
fn request_and_observe_over_a_real_redis() {
    let redis = conformance::redis_server::RedisServer::start();
    let mut guild = GuildBuilder::new(unique_spec())
        .registry(builtin_registry())
        .messaging(redis.url())
        .build()
        .unwrap();
    guild.launch(AgentSpec::new("r", "responder")).unwrap();
    let mut watching = guild.observe("watcher", vec![inbox_topic("r")]).unwrap();
    let message = Message::builder(inbox_topic("r"), text("over redis"));
    let reply = guild.request(message, Duration::from_secs(30)).unwrap();
    assert_eq!(reply.decode_json::<String>().unwrap(), "over redis");
    let seen = watching
        .recv_timeout(Duration::from_secs(30))
        .unwrap()
        .expect("the observer sees the request");
    assert_eq!(seen.message.decode_json::<String>().unwrap(), "over redis");
    guild.shutdown().unwrap();
}

#[test]
fn a_dead_redis_is_a_retryable_error_that_keeps_its_cause() {
    let mut redis = conformance::redis_server::RedisServer::start();
    let url = redis.url();
    redis.kill();
    let error = GuildBuilder::new(unique_spec())
        .registry(builtin_registry())
        .messaging(url)
        .build()
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
    assert!(error.is_retryable());
    assert!(
        std::error::Error::source(&error).is_some(),
        "the redis client's error is kept: {error:?}"
    );
}

#[test]
fn a_paused_agent_answers_once_resumed_on_every_engine() {
    let process = process_engine();
    for engine in ["sync", "threads", "pool", "process"] {
        let mut guild = guild_on_instance(engine, &process);
        guild.launch(AgentSpec::new("r", "responder")).unwrap();
        guild.pause("r").unwrap();
        let state = |guild: &guild::Guild| guild.agents()[0].state;
        assert_eq!(state(&guild), guild::AgentState::Paused, "{engine}");
        let message = Message::builder(inbox_topic("r"), text("wait for me"));
        let waited = guild
            .request(message, Duration::from_millis(50))
            .unwrap_err();
        assert_eq!(
            waited.kind(),
            ErrorKind::TimedOut,
            "{engine}: paused, no reply"
        );
        guild.resume("r").unwrap();
        assert_eq!(state(&guild), guild::AgentState::Running, "{engine}");
        let message = Message::builder(inbox_topic("r"), text("now"));
        let reply = guild.request(message, Duration::from_secs(30)).unwrap();
        // The request that waited was handled first; its late reply was dropped.
        assert_eq!(reply.decode_json::<String>().unwrap(), "now", "{engine}");
        let unknown = guild.pause("nobody").unwrap_err();
        assert_eq!(unknown.kind(), ErrorKind::NotFound);
        guild.shutdown().unwrap();
    }
}

#[test]
fn a_settings_table_a_supplied_engine_would_ignore_is_refused() {
    let engine: Arc<dyn ExecutionEngine> = Arc::new(guild::engines::PoolEngine::new().unwrap());
    let mut spec = unique_spec();
    spec.pool = Some(guild::engines::PoolConfig::default());
    let refused = GuildBuilder::new(spec)
        .registry(builtin_registry())
        .engine("pool")
        .with_engine(engine)
        .build()
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("the spec's [pool] table would be ignored"),
        "{refused}"
    );
}
