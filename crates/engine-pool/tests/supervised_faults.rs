//! Agents on the pool engine under a supervisor, panicking at random every few
//! hundred milliseconds while 100,000 numbered messages flow through a chain of three
//! of them, over the in-memory bus and over a private Redis: every number reaches the
//! end of the chain or the dead-letter topic (the message a relay panicked on), none is
//! missing, and the duplicates are counted and reported.

use std::sync::Arc;

use conformance::chaos::{chain_under_faults, panic_next};
use conformance::redis_server::RedisServer;
use engine_pool::PoolEngine;
use messaging_memory::MemoryMessaging;
use messaging_redis::RedisMessaging;

const MESSAGES: u64 = 100_000;

#[test]
fn panics_in_a_supervised_chain_lose_nothing_over_memory() {
    let report = chain_under_faults(
        Arc::new(PoolEngine::new().expect("the pool starts")),
        &|| Arc::new(MemoryMessaging::process_wide(Default::default())),
        MESSAGES,
        |_, _, relay| panic_next(relay),
    );
    eprintln!("pool engine over memory: {report:?}");
    assert!(
        report.dead_lettered > 0 && report.restarts > 0,
        "{report:?}"
    );
}

#[test]
fn panics_in_a_supervised_chain_lose_nothing_over_redis() {
    let server = RedisServer::start();
    let url = format!("{}?maxlen={MESSAGES}", server.url());
    let report = chain_under_faults(
        Arc::new(PoolEngine::new().expect("the pool starts")),
        &|| Arc::new(RedisMessaging::connect(&url).expect("the test server answers")),
        MESSAGES,
        |_, _, relay| panic_next(relay),
    );
    eprintln!("pool engine over redis: {report:?}");
    assert!(
        report.dead_lettered > 0 && report.restarts > 0,
        "{report:?}"
    );
}
