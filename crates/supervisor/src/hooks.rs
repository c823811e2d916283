//! Guild-level lifecycle hooks: Rust code called as the supervisor sees agents start,
//! stop, fail, restart, and as it gives up on a group.

use std::time::Duration;

/// Called from the supervisor's thread, in the order things happen. Every method has
/// a default that does nothing; a hook must not block for long (restarts wait on it).
pub trait SupervisionHooks: Send + Sync {
    /// `agent` started (the first time, or again after a restart).
    fn on_start(&self, agent: &str) {
        let _ = agent;
    }

    /// `agent` was stopped on request, or exited on its own.
    fn on_stop(&self, agent: &str) {
        let _ = agent;
    }

    /// `agent` crashed or was killed by a limit; `reason` says how.
    fn on_error(&self, agent: &str, reason: &str) {
        let _ = (agent, reason);
    }

    /// `agent` was started again after `delay`, the `attempt`-th restart in a row.
    fn on_restart(&self, agent: &str, attempt: u32, delay: Duration) {
        let _ = (agent, attempt, delay);
    }

    /// Group `group` restarted more often than its intensity allows when `agent` ended
    /// (`reason`); every agent of the group has been stopped.
    fn on_give_up(&self, group: &str, agent: &str, reason: &str) {
        let _ = (group, agent, reason);
    }
}

/// Hooks that do nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHooks;

impl SupervisionHooks for NoHooks {}
