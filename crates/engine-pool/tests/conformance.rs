//! The engine contract, proven for the pool engine over every messaging backend.

mod memory {
    use std::sync::Arc;

    use engine_pool::PoolEngine;
    use messaging_memory::MemoryMessaging;

    conformance::engine_suite!(
        engine: || Arc::new(PoolEngine::new().expect("the pool starts")),
        messaging: || Arc::new(MemoryMessaging::process_wide(Default::default())),
    );
}

mod redis {
    use std::sync::Arc;

    use conformance::redis_server::RedisServer;
    use engine_pool::PoolEngine;
    use messaging_redis::RedisMessaging;

    conformance::engine_suite!(
        engine: || Arc::new(PoolEngine::new().expect("the pool starts")),
        messaging: {
            let server = RedisServer::start();
            move || Arc::new(RedisMessaging::connect(&server.url()).expect("the test server answers"))
        },
    );
}
