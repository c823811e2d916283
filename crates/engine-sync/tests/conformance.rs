//! The engine contract and the supervisor's promises (`supervision::`), proven for the
//! sync engine over every messaging backend.

use std::sync::Arc;

/// A fresh engine for each scenario.
fn engine() -> Arc<engine_sync::SyncEngine> {
    Arc::new(engine_sync::SyncEngine::new())
}

conformance::engine_row!(engine: crate::engine);
