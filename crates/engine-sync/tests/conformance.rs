//! The engine contract and the supervisor's promises (`supervision::`), proven for the sync engine over every messaging backend.

mod memory {
    use std::sync::Arc;

    use engine_sync::SyncEngine;
    use messaging_memory::MemoryMessaging;

    conformance::engine_suite!(
        engine: || Arc::new(SyncEngine::new()),
        messaging: || Arc::new(MemoryMessaging::process_wide(Default::default())),
    );
}

mod redis {
    use std::sync::Arc;

    use conformance::redis_server::RedisServer;
    use engine_sync::SyncEngine;
    use messaging_redis::RedisMessaging;

    conformance::engine_suite!(
        engine: || Arc::new(SyncEngine::new()),
        messaging: {
            let server = RedisServer::start();
            move || Arc::new(RedisMessaging::connect(&server.url()).expect("the test server answers"))
        },
    );
}

/// The supervisor's promises on this engine, over each backend.
mod supervision {
    mod memory {
        use std::sync::Arc;

        use engine_sync::SyncEngine;
        use messaging_memory::MemoryMessaging;

        conformance::supervision_suite!(
            engine: || Arc::new(SyncEngine::new()),
            messaging: || Arc::new(MemoryMessaging::process_wide(Default::default())),
        );
    }

    mod redis {
        use std::sync::Arc;

        use conformance::redis_server::RedisServer;
        use engine_sync::SyncEngine;
        use messaging_redis::RedisMessaging;

        conformance::supervision_suite!(
            engine: || Arc::new(SyncEngine::new()),
            messaging: {
                let server = RedisServer::start();
                move || Arc::new(RedisMessaging::connect(&server.url()).expect("the test server answers"))
            },
        );
    }
}
