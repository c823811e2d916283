//! The engine contract, proven for the sync engine over every messaging backend.

mod memory {
    use std::sync::Arc;

    use engine_sync::SyncEngine;
    use messaging_memory::MemoryMessaging;

    conformance::engine_suite!(
        engine: || Arc::new(SyncEngine::new()),
        messaging: || Arc::new(MemoryMessaging::new()),
    );
}
