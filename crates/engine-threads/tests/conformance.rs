//! The engine contract, proven for the threads engine over every messaging backend.

mod memory {
    use std::sync::Arc;

    use engine_threads::ThreadsEngine;
    use messaging_memory::MemoryMessaging;

    conformance::engine_suite!(
        engine: || Arc::new(ThreadsEngine::new()),
        messaging: || Arc::new(MemoryMessaging::new()),
    );
}
