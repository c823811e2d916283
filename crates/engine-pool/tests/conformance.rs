//! The engine contract and the supervisor's promises (`supervision::`), proven for the
//! pool engine over every messaging backend.

use std::sync::Arc;

/// A fresh engine for each scenario.
fn engine() -> Arc<engine_pool::PoolEngine> {
    Arc::new(engine_pool::PoolEngine::new().expect("the pool starts"))
}

conformance::engine_row!(engine: crate::engine);
