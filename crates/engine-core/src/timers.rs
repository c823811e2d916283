//! Timers: messages an agent sends later, once or every period, until cancelled.
//!
//! A [`Timers`] runs on real time, on a thread of its own that sleeps until the next
//! timer is due, or on a clock the caller advances by hand ([`Timers::manual`]), which
//! is how the sync engine makes timer tests deterministic and free of wall time. Each
//! timer belongs to an agent and ends with it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::core_error::CoreError;
use crate::{AgentContext, MessageBuilder, Result};

/// The most timers one agent may have waiting at once.
pub const MAX_TIMERS_PER_AGENT: usize = 10_000;

/// One timer, as [`AgentContext::send_after`] and [`AgentContext::send_every`] return
/// it, for [`AgentContext::cancel_timer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerId(u64);

/// Where timers run; cheap to clone (clones share the timers).
#[derive(Clone)]
pub struct Timers {
    shared: Arc<Shared>,
    /// Dropped with the last handle, which ends the real-time thread (which holds
    /// `shared` but not this).
    _alive: Arc<Alive>,
}

struct Alive(Arc<Shared>);

impl Drop for Alive {
    fn drop(&mut self) {
        let thread = {
            let mut state = self.0.lock();
            state.dropped = true;
            state.thread.take()
        };
        self.0.changed.notify_all();
        if let Some(thread) = thread
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for Timers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("Timers")
            .field("manual", &self.shared.manual)
            .field("waiting", &state.timers.len())
            .finish_non_exhaustive()
    }
}

struct Shared {
    /// True for a clock the caller advances; false for real time.
    manual: bool,
    state: Mutex<State>,
    /// Rung when a timer is added or the timers are dropped, for the real-time thread.
    changed: Condvar,
}

/// A point on the timers' clock: time since the clock started.
type At = Duration;

struct State {
    /// When the clock started (real time); the manual clock's now is `advanced`.
    started: Instant,
    advanced: Duration,
    next_id: u64,
    due: BinaryHeap<Reverse<(At, TimerId)>>,
    timers: HashMap<TimerId, Timer>,
    /// Live timers per agent (namespace, agent id).
    per_agent: HashMap<(String, String), usize>,
    thread: Option<JoinHandle<()>>,
    dropped: bool,
}

struct Timer {
    at: At,
    period: Option<Duration>,
    ctx: AgentContext,
    message: MessageBuilder,
    owner: (String, String),
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self, state: &State) -> At {
        if self.manual {
            state.advanced
        } else {
            state.started.elapsed()
        }
    }
}

impl Timers {
    fn new(manual: bool) -> Self {
        let shared = Arc::new(Shared {
            manual,
            state: Mutex::new(State {
                started: Instant::now(),
                advanced: Duration::ZERO,
                next_id: 0,
                due: BinaryHeap::new(),
                timers: HashMap::new(),
                per_agent: HashMap::new(),
                thread: None,
                dropped: false,
            }),
            changed: Condvar::new(),
        });
        Self {
            _alive: Arc::new(Alive(shared.clone())),
            shared,
        }
    }

    /// Timers on real time. Their thread starts with the first timer and ends when
    /// the last handle on them is dropped.
    pub fn real() -> Self {
        Self::new(false)
    }

    /// Timers on a clock that stands still until [`advance`](Self::advance) moves it.
    pub fn manual() -> Self {
        Self::new(true)
    }

    /// Schedules `message` to be published as the agent of `ctx` after `delay`, and
    /// then every `period` if one is given.
    pub(crate) fn schedule(
        &self,
        ctx: &AgentContext,
        delay: Duration,
        period: Option<Duration>,
        message: MessageBuilder,
    ) -> Result<TimerId> {
        if period.is_some_and(|period| period.is_zero()) {
            return Err(CoreError::ZeroPeriod {
                agent: ctx.id().to_owned(),
            }
            .into());
        }
        let owner = (ctx.namespace().to_owned(), ctx.id().to_owned());
        let mut state = self.shared.lock();
        let live = state.per_agent.get(&owner).copied().unwrap_or(0);
        if live >= MAX_TIMERS_PER_AGENT {
            return Err(CoreError::TooManyTimers {
                agent: owner.1,
                cap: MAX_TIMERS_PER_AGENT,
            }
            .into());
        }
        let at = self.shared.now(&state).saturating_add(delay);
        let id = TimerId(state.next_id);
        state.next_id += 1;
        state.due.push(Reverse((at, id)));
        *state.per_agent.entry(owner.clone()).or_insert(0) += 1;
        state.timers.insert(
            id,
            Timer {
                at,
                period,
                ctx: ctx.clone(),
                message,
                owner,
            },
        );
        if !self.shared.manual && state.thread.is_none() {
            state.thread = Some(self.start_thread()?);
        }
        drop(state);
        self.shared.changed.notify_all();
        Ok(id)
    }

    /// Cancels `timer`: it sends nothing from now on. False when it was not waiting
    /// (it fired for the last time, was cancelled, or belongs to another agent).
    pub(crate) fn cancel(&self, ctx: &AgentContext, timer: TimerId) -> bool {
        let mut state = self.shared.lock();
        let ours = state
            .timers
            .get(&timer)
            .is_some_and(|found| found.owner.0 == ctx.namespace() && found.owner.1 == ctx.id());
        if ours {
            remove(&mut state, timer);
        }
        ours
    }

    /// Cancels every timer of agent `agent_id` of `namespace` (when it ends).
    pub fn cancel_agent(&self, namespace: &str, agent_id: &str) {
        let mut state = self.shared.lock();
        let theirs: Vec<TimerId> = state
            .timers
            .iter()
            .filter(|(_, timer)| timer.owner.0 == namespace && timer.owner.1 == agent_id)
            .map(|(id, _)| *id)
            .collect();
        for id in theirs {
            remove(&mut state, id);
        }
    }

    /// Moves a manual clock on by `by`, sending every timer that falls due on the
    /// way, in order (a periodic one once per period passed); returns how many
    /// messages were sent. Does nothing on real time.
    pub fn advance(&self, by: Duration) -> usize {
        if !self.shared.manual {
            return 0;
        }
        let target = {
            let mut state = self.shared.lock();
            state.advanced = state.advanced.saturating_add(by);
            state.advanced
        };
        fire_due(&self.shared, target)
    }

    fn start_thread(&self) -> Result<JoinHandle<()>> {
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name("guild-timers".into())
            .stack_size(256 * 1024)
            .spawn(move || run_real_time(&shared))
            .map_err(|source| CoreError::TimerThread { source }.into())
    }
}

fn remove(state: &mut State, id: TimerId) {
    if let Some(timer) = state.timers.remove(&id)
        && let Some(live) = state.per_agent.get_mut(&timer.owner)
    {
        *live -= 1;
        if *live == 0 {
            state.per_agent.remove(&timer.owner);
        }
    }
}

/// Sends every timer due at or before `now`, oldest first; returns how many were sent.
fn fire_due(shared: &Shared, now: At) -> usize {
    let mut sent = 0;
    loop {
        let (ctx, message) = {
            let mut state = shared.lock();
            let Some(Reverse((at, id))) = state.due.peek().copied() else {
                return sent;
            };
            if at > now {
                return sent;
            }
            state.due.pop();
            // Cancelled, or rescheduled under a later time: skip the stale entry.
            let Some(timer) = state.timers.get_mut(&id) else {
                continue;
            };
            if timer.at != at {
                continue;
            }
            let fired = (timer.ctx.clone(), timer.message.clone());
            match timer.period {
                Some(period) => {
                    timer.at = at.saturating_add(period);
                    let next = timer.at;
                    state.due.push(Reverse((next, id)));
                }
                None => remove(&mut state, id),
            }
            fired
        };
        // Published outside the lock: the bus may wake agents that schedule timers.
        if let Err(error) = ctx.publish(message) {
            tracing::warn!(agent = %ctx.id(), %error, "a timer's message could not be sent");
        }
        sent += 1;
    }
}

/// The real-time thread: sleeps until the next timer is due, sends it, and ends when
/// every handle on the timers is gone.
fn run_real_time(shared: &Shared) {
    loop {
        let now = {
            let state = shared.lock();
            if state.dropped {
                return;
            }
            let now = shared.now(&state);
            match state.due.peek().map(|Reverse((at, _))| *at) {
                Some(at) if at <= now => now,
                Some(at) => {
                    drop(shared.changed.wait_timeout(state, at - now));
                    continue;
                }
                None => {
                    drop(shared.changed.wait(state));
                    continue;
                }
            }
        };
        fire_due(shared, now);
    }
}
