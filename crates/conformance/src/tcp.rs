//! Real TCP for the tests that prove handlers can await tokio IO: a loopback server that
//! shouts back each line it is sent, and an agent that asks it.

use std::thread::JoinHandle;
use std::time::Duration;

use engine_core::{Agent, AgentContext, AgentRegistry, AgentResult, Message, Payload};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A server on 127.0.0.1 that answers each connection's one line in upper case, on a
/// thread and a tokio runtime of its own, for a given number of connections.
#[derive(Debug)]
pub struct ShoutServer {
    address: String,
    thread: Option<JoinHandle<()>>,
}

impl ShoutServer {
    /// Starts the server; it ends after `connections` connections.
    pub fn start(connections: usize) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("a loopback port");
        let address = listener.local_addr().expect("its address").to_string();
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                for _ in 0..connections {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let (read, mut write) = stream.into_split();
                    let mut line = String::new();
                    if BufReader::new(read).read_line(&mut line).await.is_ok() {
                        let _ = write.write_all(line.to_uppercase().as_bytes()).await;
                    }
                }
            });
        });
        Self {
            address,
            thread: Some(thread),
        }
    }

    /// Where it listens.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Registers agent type `caller`: for each message (a JSON string), it awaits a
    /// timer, asks this server over a new connection, and sends the answer to
    /// `answers`.
    pub fn register_caller(&self, registry: &mut AgentRegistry) {
        let address = self.address.clone();
        registry.register("caller", move |_| {
            Ok(Caller {
                address: address.clone(),
            })
        });
    }

    /// Waits for the server to have served all its connections.
    pub fn join(mut self) {
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the server thread ends");
        }
    }
}

/// Asks the server at `address` to shout each message, then sends the answer on.
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
