//! Handlers on the threads engine can await tokio IO and timers when the agent was
//! launched from inside a tokio runtime: here a handler answers each message with a line
//! read from a real TCP server on loopback.

use std::sync::Arc;
use std::time::Duration;

use conformance::tcp::ShoutServer;
use engine_core::{
    AgentRegistry, AgentSpec, ExecutionEngine, GuildContext, HistoryQuery, IdGenerator, Message,
    MessagingBackend, Payload,
};
use engine_threads::ThreadsEngine;
use messaging_memory::MemoryMessaging;

#[test]
fn a_handler_awaits_tokio_io() {
    // The runtime the agent's thread enters, as a program's `#[tokio::main]` would be.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = ShoutServer::start(1);
    let mut registry = AgentRegistry::new();
    server.register_caller(&mut registry);
    let messaging: Arc<dyn MessagingBackend> = Arc::new(MemoryMessaging::new());
    let namespace = format!("tokio-io-{}", std::process::id());
    let guild = GuildContext::new(namespace.as_str(), messaging.clone(), Arc::new(registry));
    let engine = ThreadsEngine::new();
    {
        let _inside = runtime.enter();
        engine
            .run_agent(
                &guild,
                AgentSpec::new("caller", "caller").with_topic("questions"),
            )
            .unwrap();
    }
    let question = Message::builder("questions", Payload::encode_json("hello").unwrap()).build(
        &IdGenerator::process(),
        namespace.as_str(),
        "test",
    );
    messaging.publish(question).unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let answers = loop {
        let answers = messaging
            .history(&namespace, &HistoryQuery::Topic("answers".into()))
            .unwrap();
        if !answers.is_empty() || std::time::Instant::now() > deadline {
            break answers;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let answer: String = answers
        .first()
        .expect("an answer before the deadline")
        .decode_json()
        .unwrap();
    assert_eq!(answer, "HELLO");
    assert_eq!(engine.agent_info(&namespace, "caller").unwrap().errors, 0);
    engine.shutdown().unwrap();
    server.join();
}
