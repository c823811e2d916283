//! The delivery contract, proven for the Redis backend against a private
//! `redis-server` each test starts (and stops) for itself.

use std::sync::Arc;

use conformance::redis_server::RedisServer;
use messaging_redis::RedisMessaging;

conformance::messaging_suite!({
    let server = RedisServer::start();
    move || Arc::new(RedisMessaging::connect(&server.url()).expect("the test server answers"))
});
