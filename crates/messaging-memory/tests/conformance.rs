//! The delivery contract, proven for the in-memory backend.

use std::sync::Arc;

use messaging_memory::MemoryMessaging;

conformance::messaging_suite!(|| Arc::new(MemoryMessaging::process_wide(Default::default())));
