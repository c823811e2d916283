//! Agents on the pool engine under a supervisor, panicking at random every few
//! hundred milliseconds while 100,000 numbered messages flow through a chain of three
//! of them, over the in-memory bus and over a private Redis: every number reaches the
//! end of the chain or the dead-letter topic (the message a relay panicked on), none is
//! missing, and the duplicates are counted and reported.

conformance::panic_chaos_suite!(engine: engine_pool::PoolEngine::new().expect("the pool starts"));
