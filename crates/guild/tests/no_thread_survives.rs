//! After a guild on the threads engine shuts down, no thread of it is left. (A test binary
//! of its own, so no other test's threads are counted.)

use std::time::{Duration, Instant};

use conformance::harness::thread_count as threads_of_this_process;
use guild::{AgentSpec, GuildBuilder, GuildSpec, Message, Payload, builtin::builtin_registry};

#[test]
fn shutdown_joins_every_agent_thread() {
    let before = threads_of_this_process();
    let mut spec = GuildSpec::new("thread-count");
    let mut worker = AgentSpec::new("echo", "responder").with_topic("in");
    worker.replicas = 12;
    spec.agents.push(worker);
    let mut guild = GuildBuilder::new(spec)
        .registry(builtin_registry())
        .engine("threads")
        .build()
        .unwrap();
    guild.launch_all().unwrap();
    assert_eq!(
        threads_of_this_process(),
        before + 12,
        "one thread per agent"
    );
    guild
        .publish(Message::builder("in", Payload::encode_json("ping").unwrap()).reply_to("out"))
        .unwrap();
    guild.shutdown().unwrap();
    // A joined thread can stay listed in /proc for a moment after `join` returns (the
    // kernel clears its id before it removes the task), so wait for the listing to
    // settle; a thread that was not joined never leaves it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while threads_of_this_process() > before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(threads_of_this_process(), before);
}
