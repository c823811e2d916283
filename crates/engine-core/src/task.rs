//! Agents as tasks: the contract for engines that poll agents on a pool of workers
//! instead of giving each a thread.
//!
//! [`AgentHost::into_task`](crate::AgentHost::into_task) turns a started agent into one
//! long-lived future, an [`AgentTask`]. It loops: take the next delivery, wait for the
//! engine's go-ahead ([`TaskEnv::poll_turn`], where scheduling policies live), await the
//! handler, complete the delivery, and yield its worker once its budget is spent
//! ([`TaskEnv::end_message`]). With nothing queued it parks until its [`TaskControl`]
//! (the subscription's [`Notify`]) is rung. The future is built where the agent's type
//! is known, so the handler's future lives inside it: nothing is allocated per message.
//!
//! Panics, errors and timeouts are judged by the same code as
//! [`AgentHost::step`](crate::AgentHost::step), so both ways of running an agent keep the
//! same promises.

use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use tracing::Instrument;

use crate::host::{HostCore, Screen};
use crate::{Agent, AgentState, Message, Notify, Result, Step};

/// An agent turned into a task: poll it to completion on any worker.
pub type AgentTask = Pin<Box<dyn Future<Output = TaskEnd> + Send>>;

/// How an [`AgentTask`] ended.
#[derive(Debug)]
pub enum TaskEnd {
    /// It was stopped: its stop hook ran (with this result) and its subscription is
    /// detached.
    Stopped(Result<()>),
    /// It ended on its own (a handler panicked or ended it, or its delivery failed):
    /// it is recorded as the ending says.
    Ended(crate::Ending),
}

/// The engine's side of running an agent task: scheduling and time. One per agent,
/// owned by its task.
pub trait TaskEnv: Send {
    /// Polled before each message: ready when the agent may handle `next` now. Where a
    /// scheduling policy makes agents take turns, the agent holds its turn from here
    /// until [`release`](Self::release).
    fn poll_turn(&mut self, next: &Message, cx: &mut Context<'_>) -> Poll<()>;

    /// Called after each message: true when the agent has spent its budget and must
    /// yield its worker before the next.
    fn end_message(&mut self) -> bool;

    /// The agent is idle, paused or ending: it gives back its turn.
    fn release(&mut self);

    /// A future that completes at `deadline` on the engine's clock (handler timeouts).
    fn sleep_until(&mut self, deadline: Instant) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

const WAKE: u8 = 1;
const STOP: u8 = 2;
const PAUSE: u8 = 4;

/// Where a task is in its life, as the engine waits on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Paused,
    Ended,
}

/// How an engine wakes, pauses, resumes and stops an agent task, and waits for it.
///
/// It is also the [`Notify`] the bus rings when a message is queued for the agent: a
/// ring while one is unanswered costs one atomic operation.
#[derive(Debug)]
pub struct TaskControl {
    flags: AtomicU8,
    waker: Mutex<Option<Waker>>,
    phase: Mutex<Phase>,
    phase_changed: Condvar,
}

impl Default for TaskControl {
    fn default() -> Self {
        Self {
            flags: AtomicU8::new(0),
            waker: Mutex::new(None),
            phase: Mutex::new(Phase::Running),
            phase_changed: Condvar::new(),
        }
    }
}

impl Notify for TaskControl {
    fn notify(&self) {
        if self.flags.fetch_or(WAKE, Ordering::AcqRel) & WAKE == 0 {
            self.wake();
        }
    }
}

impl TaskControl {
    /// Asks the task to stop after the message in hand.
    pub fn stop(&self) {
        self.flags.fetch_or(STOP, Ordering::AcqRel);
        self.wake();
    }

    /// Asks the task to handle nothing more until [`resume`](Self::resume).
    pub fn pause(&self) {
        self.flags.fetch_or(PAUSE, Ordering::AcqRel);
        self.wake();
    }

    /// Lets a paused task carry on.
    pub fn resume(&self) {
        self.flags.fetch_and(!PAUSE, Ordering::AcqRel);
        self.wake();
    }

    /// Waits until the task has paused between messages (true), or has ended (false).
    /// Blocks the calling thread.
    pub fn wait_paused(&self) -> bool {
        let phase = self.wait_phase(|phase| phase != Phase::Running || !self.pausing());
        phase == Phase::Paused
    }

    /// Waits until the task has ended. Blocks the calling thread.
    pub fn wait_ended(&self) {
        self.wait_phase(|phase| phase == Phase::Ended);
    }

    /// Called by the engine once the task's future has completed (or was dropped), to
    /// release whoever waits on it.
    pub fn set_ended(&self) {
        self.set_phase(Phase::Ended);
    }

    fn pausing(&self) -> bool {
        self.flags.load(Ordering::Acquire) & PAUSE != 0
    }

    fn wake(&self) {
        let waker = self.lock_waker().clone();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Clears the wake-up and returns what was asked.
    fn take(&self) -> u8 {
        self.flags.fetch_and(!WAKE, Ordering::AcqRel)
    }

    /// Parks the task until `ready` holds for the flags.
    async fn until(&self, ready: impl Fn(u8) -> bool) {
        poll_fn(|cx| {
            self.register(cx);
            // Looked at after the waker is in place, so a ring in between is not lost.
            if ready(self.flags.load(Ordering::Acquire)) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }

    /// Makes the task's current waker the one a ring wakes.
    fn register(&self, cx: &Context<'_>) {
        let mut slot = self.lock_waker();
        match &*slot {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => *slot = Some(cx.waker().clone()),
        }
    }

    fn set_phase(&self, phase: Phase) {
        let mut current = self.lock_phase();
        if *current != Phase::Ended {
            *current = phase;
        }
        self.phase_changed.notify_all();
    }

    fn wait_phase(&self, done: impl Fn(Phase) -> bool) -> Phase {
        let mut phase = self.lock_phase();
        while !done(*phase) {
            phase = self
                .phase_changed
                .wait(phase)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *phase
    }

    fn lock_waker(&self) -> MutexGuard<'_, Option<Waker>> {
        self.waker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_phase(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A started agent's host, handed to [`DynAgent::into_task`](crate::DynAgent::into_task)
/// to be turned into the agent's task.
pub struct TaskHost {
    pub(crate) core: HostCore,
    pub(crate) control: std::sync::Arc<TaskControl>,
    pub(crate) env: Box<dyn TaskEnv>,
}

impl std::fmt::Debug for TaskHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskHost")
            .field("agent", &self.core.ctx.id())
            .finish_non_exhaustive()
    }
}

impl TaskHost {
    /// Runs `agent` until it is stopped or crashes: the body of its task.
    pub async fn run<A: Agent>(mut self, mut agent: A) -> TaskEnd {
        let ended = self.serve(&mut agent).await;
        self.env.release();
        match ended {
            None => {
                let stopped = caught(pin!(agent.stop(&self.core.ctx))).await;
                TaskEnd::Stopped(self.core.stopped(stopped))
            }
            Some(ending) => {
                self.core.end(&ending);
                TaskEnd::Ended(ending)
            }
        }
    }

    /// Handles messages until told to stop (`None`) or the agent ends on its own (`Some(ending)`).
    async fn serve<A: Agent>(&mut self, agent: &mut A) -> Option<crate::Ending> {
        loop {
            let asked = self.control.take();
            if asked & STOP != 0 {
                return None;
            }
            if asked & PAUSE != 0 {
                if !self.paused().await {
                    return None;
                }
                continue;
            }
            let delivery = match self.core.next() {
                Ok(Some(delivery)) => delivery,
                Ok(None) => {
                    self.env.release();
                    self.control.until(|asked| asked != 0).await;
                    continue;
                }
                Err(error) => return Some(format!("delivery failed: {error}").into()),
            };
            match self.core.screen(&delivery) {
                Ok(Screen::Handle) => {}
                Ok(Screen::Rejected) => continue,
                Ok(Screen::Probe) => {
                    let deadline = Instant::now().checked_add(self.core.probe_timeout);
                    // Boxed: probes are rare, and the task's own future stays the
                    // size it is without them.
                    let probed = {
                        let mut probe = Box::pin(agent.health(&self.core.ctx));
                        until(probe.as_mut(), deadline, &mut self.env).await
                    };
                    if let Err(error) = self.core.answer(&delivery, probed) {
                        return Some(format!("delivery failed: {error}").into());
                    }
                    continue;
                }
                Err(error) => return Some(format!("delivery failed: {error}").into()),
            }
            let control = &self.control;
            let env = &mut self.env;
            let go = poll_fn(|cx| {
                if env.poll_turn(&delivery.message, cx).is_ready() {
                    return Poll::Ready(true);
                }
                // Waiting for a turn: a stop or pause must still reach it.
                control.register(cx);
                if control.flags.load(Ordering::Acquire) & (STOP | PAUSE) != 0 {
                    return Poll::Ready(false);
                }
                Poll::Pending
            })
            .await;
            if !go {
                continue;
            }
            let (span, untraced) = self.core.span(&delivery);
            self.core.begin(&delivery);
            let deadline = self
                .core
                .timeout
                .and_then(|timeout| Instant::now().checked_add(timeout));
            let result = {
                let handler = pin!(agent.handle(&self.core.ctx, &delivery.message));
                let handler = pin!(crate::trace::PassingOn {
                    inner: handler,
                    untraced,
                });
                until(handler, deadline, &mut self.env)
                    .instrument(span)
                    .await
            };
            match self.core.finish(&delivery, result) {
                Ok(Step::Handled | Step::Idle) => {}
                Ok(Step::Ended(ending)) => return Some(ending),
                Err(error) => return Some(format!("delivery failed: {error}").into()),
            }
            if self.env.end_message() {
                yield_now().await;
            }
        }
    }

    /// Between messages: records the pause, tells whoever waits, and parks until
    /// resumed (true) or stopped (false). What arrives meanwhile waits in the queue.
    async fn paused(&mut self) -> bool {
        self.env.release();
        self.core.cell.set_state(AgentState::Paused, None);
        self.control.set_phase(Phase::Paused);
        self.control
            .until(|asked| asked & STOP != 0 || asked & PAUSE == 0)
            .await;
        if self.control.flags.load(Ordering::Acquire) & STOP != 0 {
            return false;
        }
        self.core.cell.set_state(AgentState::Running, None);
        self.control.set_phase(Phase::Running);
        true
    }
}

/// Awaits `future` until `deadline` on the engine's clock: `Ok(None)` when the deadline
/// passed first (the future is dropped, which cancels it at its await), `Err` for a
/// panic.
async fn until<F: Future>(
    mut future: Pin<&mut F>,
    deadline: Option<Instant>,
    env: &mut Box<dyn TaskEnv>,
) -> std::thread::Result<Option<F::Output>> {
    let Some(deadline) = deadline else {
        return caught(future).await.map(Some);
    };
    let mut late = env.sleep_until(deadline);
    poll_fn(|cx| {
        if let Poll::Ready(result) = poll_caught(future.as_mut(), cx) {
            return Poll::Ready(result.map(Some));
        }
        late.as_mut().poll(cx).map(|()| Ok(None))
    })
    .await
}

/// Polls `future`, catching a panic as `Err`.
fn poll_caught<F: Future>(
    future: Pin<&mut F>,
    cx: &mut Context<'_>,
) -> Poll<std::thread::Result<F::Output>> {
    match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
        Ok(Poll::Pending) => Poll::Pending,
        Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
        Err(panic) => Poll::Ready(Err(panic)),
    }
}

/// Awaits `future`, catching a panic as `Err`.
async fn caught<F: Future>(mut future: Pin<&mut F>) -> std::thread::Result<F::Output> {
    poll_fn(|cx| poll_caught(future.as_mut(), cx)).await
}

/// Gives the worker to whatever else is ready: wakes itself and returns pending once.
async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
}
