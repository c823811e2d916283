//! The engine contract and the supervisor's promises (`supervision::`), proven for the
//! threads engine over every messaging backend.

use std::sync::Arc;

/// A fresh engine for each scenario.
fn engine() -> Arc<engine_threads::ThreadsEngine> {
    Arc::new(engine_threads::ThreadsEngine::new())
}

conformance::engine_row!(engine: crate::engine);
