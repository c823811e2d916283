//! Agent processes under a supervisor, killed with `SIGKILL` at random every few
//! hundred milliseconds while 100,000 numbered messages flow through a chain of three
//! of them, over the embedded broker fronting the in-memory bus and over a private
//! Redis: every number reaches the end of the chain, none is missing, and the
//! duplicates (deliveries in flight at a kill, handed out again) are counted and
//! reported.
//!
//! This binary is its own agent host, so it has no standard test harness.

use std::sync::Arc;

use conformance::chaos::{MESSAGES, chain_under_faults};
use conformance::redis_server::RedisServer;
use engine_core::{ExecutionEngine, MessagingBackend};
use engine_process::ProcessEngine;
use libtest_mimic::{Arguments, Trial};
use messaging_memory::MemoryMessaging;
use messaging_redis::RedisMessaging;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn main() {
    engine_process::run_if_agent_host(conformance::agents::registry);
    let trials = vec![
        Trial::test(
            "process::kills_in_a_supervised_chain_lose_nothing_over_memory",
            || {
                run("memory", &|| {
                    Arc::new(MemoryMessaging::process_wide(Default::default()))
                });
                Ok(())
            },
        ),
        Trial::test(
            "process::kills_in_a_supervised_chain_lose_nothing_over_redis",
            || {
                let server = RedisServer::start();
                let url = format!("{}?maxlen={MESSAGES}", server.url());
                run("redis", &|| {
                    Arc::new(RedisMessaging::connect(&url).expect("the test server answers"))
                });
                Ok(())
            },
        ),
    ];
    libtest_mimic::run(&Arguments::from_args(), trials).exit();
}

fn run(backend: &str, make_messaging: &dyn Fn() -> Arc<dyn MessagingBackend>) {
    let report = chain_under_faults(
        Arc::new(ProcessEngine::new()),
        make_messaging,
        MESSAGES,
        |engine: &dyn ExecutionEngine, guild: &str, relay: &str| {
            if let Some(pid) = engine.agent_info(guild, relay).and_then(|info| info.pid) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        },
    );
    eprintln!("over {backend}, SIGKILL at random: {report:?}");
    assert!(report.restarts > 0, "{report:?}");
    assert_eq!(report.dead_lettered, 0, "a kill dead-letters nothing");
}
