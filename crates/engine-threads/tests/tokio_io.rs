//! Handlers on the threads engine can await tokio IO and timers when the agent was
//! launched from inside a tokio runtime: here a handler answers each message with a line
//! read from a real TCP server on loopback.

use std::sync::Arc;
use std::time::Duration;

use engine_core::{
    Agent, AgentContext, AgentRegistry, AgentResult, AgentSpec, ExecutionEngine, GuildContext,
    HistoryQuery, IdGenerator, Message, MessagingBackend, Payload,
};
use engine_threads::ThreadsEngine;
use messaging_memory::MemoryMessaging;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Asks the server at `address` to shout each message, then replies with the answer.
struct Caller {
    address: String,
}

impl Agent for Caller {
    async fn handle(&mut self, ctx: &AgentContext, message: &Message) -> AgentResult {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let mut stream = TcpStream::connect(&self.address).await?;
        let text: String = message.decode_json()?;
        stream.write_all(format!("{text}\n").as_bytes()).await?;
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).await?;
        ctx.send("answers", Payload::encode_json(answer.trim())?)?;
        Ok(())
    }
}

#[test]
fn a_handler_awaits_tokio_io() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let address = listener.local_addr().unwrap().to_string();
    runtime.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            BufReader::new(read).read_line(&mut line).await.unwrap();
            write
                .write_all(line.to_uppercase().as_bytes())
                .await
                .unwrap();
        }
    });

    let mut registry = AgentRegistry::new();
    registry.register("caller", move |_| {
        Ok(Caller {
            address: address.clone(),
        })
    });
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
}
