//! An agent's task as the pool runs it (timed, and watched until it ends), which task
//! a thread is polling, and how the engine waits without stalling a worker.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use engine_core::{
    AgentCell, AgentSpec, AgentState, AgentTask, EventHub, ExitStatus, TaskControl, TaskEnd,
};

use crate::engine::event;

thread_local! {
    /// The task this thread is polling, so an agent that stops or pauses itself is not
    /// waited for (it would wait for itself).
    static CURRENT: Cell<usize> = const { Cell::new(0) };
    /// Whether this thread is one of a pool's workers.
    static ON_WORKER: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread as one of a pool's workers (run as each worker starts).
pub(crate) fn mark_worker() {
    ON_WORKER.with(|on| on.set(true));
}

/// Whether this thread is one of a pool's workers.
pub(crate) fn on_worker() -> bool {
    ON_WORKER.with(Cell::get)
}

/// Whether this thread is polling the task `control` belongs to (an agent acting on
/// itself).
pub(crate) fn is_current(control: &Arc<TaskControl>) -> bool {
    CURRENT.with(Cell::get) == Arc::as_ptr(control) as usize
}

/// Runs `wait`, which blocks, handing this thread's worker duties to another thread
/// first when it is one of the pool's workers (a handler that stops or starts an
/// agent), so the task it waits for can still run.
pub(crate) fn blocking<T>(wait: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}

/// What the pool keeps watching of one task: who it is, and what to do when it ends.
pub(crate) struct Watch {
    pub(crate) guild: Arc<str>,
    pub(crate) spec: Arc<AgentSpec>,
    pub(crate) control: Arc<TaskControl>,
    pub(crate) cell: Arc<AgentCell>,
    pub(crate) events: Arc<EventHub>,
}

impl Watch {
    /// Ends the agent as crashed for a reason of the pool's own (its code never ran,
    /// or the pool failed running it), and reports it.
    pub(crate) fn crash(&self, reason: String) {
        tracing::error!(agent = %self.spec.id, "{reason}");
        let exit = ExitStatus {
            reason: reason.clone(),
            code: None,
            signal: None,
        };
        self.cell.set_state(AgentState::Crashed, Some(exit));
        self.report_end(&engine_core::Ending::Crashed(reason));
    }

    fn report_end(&self, ending: &engine_core::Ending) {
        self.events
            .emit(event(&self.guild, &self.spec.id, ending.lifecycle()));
    }
}

impl Drop for Watch {
    /// Runs when the task ends, and also when it is dropped unfinished (the runtime
    /// shut down), so nobody waits for it forever.
    fn drop(&mut self) {
        self.control.set_ended();
    }
}

/// An agent's task, timed: each poll's duration counts as the agent's handler time,
/// and a poll that holds the worker past `long` is logged.
pub(crate) struct Timed {
    pub(crate) task: AgentTask,
    pub(crate) watch: Watch,
    pub(crate) long: Duration,
}

impl Future for Timed {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let started = Instant::now();
        let outer =
            CURRENT.with(|current| current.replace(Arc::as_ptr(&this.watch.control) as usize));
        // The handler's panics are caught inside the task; one here is the pool's own,
        // and ends this agent alone, reported crashed, rather than vanish with the task.
        let polled =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| this.task.as_mut().poll(cx)));
        CURRENT.with(|current| current.set(outer));
        let held = started.elapsed();
        this.watch.cell.add_busy_time(held);
        if held >= this.long {
            tracing::warn!(
                agent = %this.watch.spec.id,
                held_ms = held.as_millis() as u64,
                "a handler held a pool worker for {}ms without yielding; \
                 consider placement = \"dedicated\" for code that blocks",
                held.as_millis()
            );
        }
        match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(TaskEnd::Stopped(Ok(())))) => {}
            Ok(Poll::Ready(TaskEnd::Stopped(Err(error)))) => {
                tracing::warn!(agent = %this.watch.spec.id, %error, "stopping the agent");
            }
            // The host recorded the crash; the engine reports it.
            Ok(Poll::Ready(TaskEnd::Ended(ending))) => this.watch.report_end(&ending),
            Err(panic) => this.watch.crash(format!(
                "the pool failed running it: {}",
                engine_core::panic_text(&*panic)
            )),
        }
        Poll::Ready(())
    }
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("agent", &self.spec.id)
            .finish()
    }
}
