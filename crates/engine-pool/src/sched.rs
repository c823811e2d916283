//! Scheduling policies: each agent's [`TaskEnv`], and the gate that hands out turns.
//!
//! Workers poll agent tasks in the order tokio's scheduler keeps (each worker's own run
//! queue, stealing when idle, a task woken from its own worker run next). That order is
//! `fifo`. The other policies put a [`Gate`] in front of handling: at most `permits`
//! agents hold a turn at once, and when one gives its turn back the gate hands it to the
//! waiting agent the policy ranks first. An agent that spends its budget yields its
//! worker *before* giving its turn back, so an agent woken meanwhile is waiting at the
//! gate when the turn is handed on.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use engine_core::{AgentCell, Message, RateLimit, TaskEnv};

use crate::config::{Policy, PoolConfig};

/// The pool-wide part of scheduling.
#[derive(Debug)]
pub(crate) struct Scheduler {
    policy: Policy,
    budget: u32,
    time_slice: Duration,
    aging: Duration,
    default_rate: Option<RateLimit>,
    gate: Option<Gate>,
    /// Numbers agents, so the gate tells them apart.
    next_token: AtomicU64,
}

impl Scheduler {
    pub(crate) fn new(config: &PoolConfig) -> Self {
        let permits = match config.policy {
            Policy::Priority | Policy::FairShare => {
                Some(config.max_concurrent.unwrap_or(config.worker_count()))
            }
            Policy::Fifo | Policy::Rate => config.max_concurrent,
        };
        Self {
            policy: config.policy,
            budget: config.budget,
            time_slice: Duration::from_millis(config.time_slice_ms),
            aging: Duration::from_millis(config.aging_ms),
            default_rate: config.rate,
            gate: permits.map(Gate::new),
            next_token: AtomicU64::new(0),
        }
    }

    /// Whether ready agents queue at a gate (tokio's global queue should then be
    /// looked at every tick, so an agent woken from outside reaches the gate at once).
    pub(crate) fn gated(&self) -> bool {
        self.gate.is_some()
    }

    /// The environment of one agent's task. `gated` is false for an agent on a thread
    /// of its own, which takes no turns on the shared workers.
    pub(crate) fn env(
        self: &Arc<Self>,
        spec: &engine_core::AgentSpec,
        cell: Arc<AgentCell>,
        gated: bool,
    ) -> AgentEnv {
        let rate = match self.policy {
            Policy::Rate => spec.rate.or(self.default_rate),
            _ => None,
        };
        AgentEnv {
            scheduler: self.clone(),
            token: self.next_token.fetch_add(1, Ordering::Relaxed),
            class: spec.priority as u8,
            weight: u64::from(spec.weight.unwrap_or(1).max(1)),
            cell,
            gated: gated && self.gate.is_some(),
            holding: false,
            yielded: false,
            handled: 0,
            turn_started: None,
            bucket: rate.map(Bucket::new),
            has_token: false,
            sleep: None,
        }
    }

    fn gate(&self) -> &Gate {
        match &self.gate {
            Some(gate) => gate,
            None => unreachable!("only gated agents ask for turns"),
        }
    }
}

/// One agent's side of scheduling, owned by its task.
pub(crate) struct AgentEnv {
    scheduler: Arc<Scheduler>,
    token: u64,
    /// Its own priority (0 is most urgent).
    class: u8,
    weight: u64,
    /// Its handler time, which `fair_share` shares out.
    cell: Arc<AgentCell>,
    gated: bool,
    /// It holds a turn at the gate.
    holding: bool,
    /// It spent its budget and yielded; it gives its turn back before the next message.
    yielded: bool,
    handled: u32,
    turn_started: Option<Instant>,
    bucket: Option<Bucket>,
    /// Under a rate cap: a token is taken for the next message.
    has_token: bool,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl TaskEnv for AgentEnv {
    fn poll_turn(&mut self, next: &Message, cx: &mut Context<'_>) -> Poll<()> {
        if self.bucket.is_some() && !self.has_token {
            loop {
                let now = Instant::now();
                let Some(Err(at)) = self.bucket.as_mut().map(|bucket| bucket.take(now)) else {
                    break;
                };
                // Out of tokens: others take turns while it waits for one.
                self.give_back();
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::ZERO)));
                sleep.as_mut().reset(tokio::time::Instant::from_std(at));
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
            self.has_token = true;
        }
        if !self.gated {
            return Poll::Ready(());
        }
        if self.holding && !self.yielded {
            return Poll::Ready(());
        }
        let waiter = Waiter {
            token: self.token,
            class: self.class.min(next.priority() as u8),
            weight: self.weight,
            cell: self.cell.clone(),
            waker: cx.waker().clone(),
            since: Instant::now(),
            seq: 0,
        };
        let gate = self.scheduler.gate();
        let go = if self.yielded {
            // Its budget is spent: it keeps its turn only if it still ranks first.
            self.yielded = false;
            gate.yield_turn(waiter, &self.scheduler)
        } else {
            gate.acquire(waiter)
        };
        self.holding = go;
        if go { Poll::Ready(()) } else { Poll::Pending }
    }

    fn end_message(&mut self) -> bool {
        self.has_token = false;
        self.handled += 1;
        let now = Instant::now();
        let started = *self.turn_started.get_or_insert(now);
        if self.handled < self.scheduler.budget && now - started < self.scheduler.time_slice {
            return false;
        }
        self.handled = 0;
        self.turn_started = None;
        self.yielded = self.holding;
        true
    }

    fn release(&mut self) {
        self.yielded = false;
        self.handled = 0;
        self.turn_started = None;
        self.give_back();
    }

    fn sleep_until(&mut self, deadline: Instant) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(
            deadline,
        )))
    }
}

impl AgentEnv {
    /// Gives back the turn it holds, or its place in the queue for one.
    fn give_back(&mut self) {
        if !self.gated {
            return;
        }
        let gate = self.scheduler.gate();
        self.yielded = false;
        if self.holding {
            self.holding = false;
            gate.release(self.token, &self.scheduler);
        } else {
            gate.leave(self.token, &self.scheduler);
        }
    }
}

impl Drop for AgentEnv {
    fn drop(&mut self) {
        self.give_back();
    }
}

/// Hands out at most `permits` turns at once, to waiting agents in the policy's order.
#[derive(Debug)]
pub(crate) struct Gate {
    state: Mutex<GateState>,
}

#[derive(Debug)]
struct GateState {
    free: usize,
    waiting: Vec<Waiter>,
    /// Agents handed a turn while they waited, which have not yet taken it.
    granted: Vec<u64>,
    seq: u64,
}

#[derive(Debug)]
struct Waiter {
    token: u64,
    class: u8,
    weight: u64,
    cell: Arc<AgentCell>,
    waker: Waker,
    since: Instant,
    seq: u64,
}

impl Gate {
    fn new(permits: usize) -> Self {
        Self {
            state: Mutex::new(GateState {
                free: permits,
                waiting: Vec::new(),
                granted: Vec::new(),
                seq: 0,
            }),
        }
    }

    /// True when the agent may go now; otherwise it waits, and `waiter.waker` is woken
    /// when it is handed a turn.
    fn acquire(&self, mut waiter: Waiter) -> bool {
        let mut state = self.lock();
        if let Some(at) = state.granted.iter().position(|&t| t == waiter.token) {
            state.granted.swap_remove(at);
            return true;
        }
        if state.free > 0 && state.waiting.is_empty() {
            state.free -= 1;
            return true;
        }
        if let Some(known) = state.waiting.iter_mut().find(|w| w.token == waiter.token) {
            // Still waiting: keep its place and its age, take the newest waker and class.
            known.waker = waiter.waker;
            known.class = waiter.class;
            return false;
        }
        waiter.seq = state.seq;
        state.seq += 1;
        state.waiting.push(waiter);
        false
    }

    /// Between two of its messages, an agent holding a turn lines up with the waiters:
    /// true when it still ranks first and keeps its turn, otherwise the turn goes to
    /// the first waiter and it waits.
    fn yield_turn(&self, mut me: Waiter, scheduler: &Scheduler) -> bool {
        let mut state = self.lock();
        if state.waiting.is_empty() {
            return true;
        }
        let token = me.token;
        me.seq = state.seq;
        state.seq += 1;
        state.waiting.push(me);
        let first = Self::first(&state, scheduler);
        if state.waiting[first].token == token {
            state.waiting.swap_remove(first);
            return true;
        }
        let waiter = state.waiting.swap_remove(first);
        state.granted.push(waiter.token);
        waiter.waker.wake();
        false
    }

    /// Gives a turn back: to the waiter the policy ranks first, or to the free pool.
    fn release(&self, token: u64, scheduler: &Scheduler) {
        let mut state = self.lock();
        debug_assert!(!state.waiting.iter().any(|w| w.token == token));
        Self::hand_on(&mut state, scheduler);
    }

    /// An agent stops waiting (paused, stopped, or rate-limited): it leaves the queue,
    /// passing on a turn it was handed and had not taken.
    fn leave(&self, token: u64, scheduler: &Scheduler) {
        let mut state = self.lock();
        state.waiting.retain(|w| w.token != token);
        if let Some(at) = state.granted.iter().position(|&t| t == token) {
            state.granted.swap_remove(at);
            Self::hand_on(&mut state, scheduler);
        }
    }

    fn hand_on(state: &mut GateState, scheduler: &Scheduler) {
        if state.waiting.is_empty() {
            state.free += 1;
            return;
        }
        let first = Self::first(state, scheduler);
        let waiter = state.waiting.swap_remove(first);
        state.granted.push(waiter.token);
        waiter.waker.wake();
    }

    /// Where the waiter the policy ranks first is (`waiting` is not empty).
    fn first(state: &GateState, scheduler: &Scheduler) -> usize {
        let now = Instant::now();
        state
            .waiting
            .iter()
            .enumerate()
            .min_by_key(|(_, w)| rank(w, scheduler, now))
            .map_or(0, |(at, _)| at)
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A waiter's place in the policy's order: lowest first.
fn rank(waiter: &Waiter, scheduler: &Scheduler, now: Instant) -> (i64, u64) {
    match scheduler.policy {
        Policy::Priority => {
            let waited = now.saturating_duration_since(waiter.since);
            let aged = (waited.as_nanos() / scheduler.aging.as_nanos().max(1)) as i64;
            (i64::from(waiter.class) - aged, waiter.seq)
        }
        Policy::FairShare => {
            let busy = u64::try_from(waiter.cell.busy_time().as_nanos()).unwrap_or(u64::MAX);
            let share = busy / waiter.weight;
            (i64::try_from(share).unwrap_or(i64::MAX), waiter.seq)
        }
        Policy::Fifo | Policy::Rate => (0, waiter.seq),
    }
}

/// The longest a rate-capped agent sleeps before looking at its bucket again.
const MAX_TOKEN_WAIT: Duration = Duration::from_secs(86_400);

/// A token bucket: `per_second` tokens a second, holding at most `burst`.
#[derive(Debug)]
struct Bucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: RateLimit) -> Self {
        Self {
            per_second: rate.per_second,
            burst: f64::from(rate.burst),
            tokens: f64::from(rate.burst),
            at: Instant::now(),
        }
    }

    /// Takes a token, or says when the next one will be there.
    fn take(&mut self, now: Instant) -> Result<(), Instant> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.at = now.max(self.at);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        // A rate so low the next token is past any clock waits a day at a time.
        let wait = Duration::try_from_secs_f64((1.0 - self.tokens) / self.per_second)
            .unwrap_or(MAX_TOKEN_WAIT)
            .min(MAX_TOKEN_WAIT);
        Err(self.at + wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_its_burst_then_one_token_per_period() {
        let mut bucket = Bucket::new(RateLimit {
            per_second: 10.0,
            burst: 3,
        });
        let start = bucket.at;
        for _ in 0..3 {
            assert!(bucket.take(start).is_ok());
        }
        let next = bucket.take(start).unwrap_err();
        assert_eq!(next - start, Duration::from_millis(100));
        assert!(bucket.take(next).is_ok());
        assert!(bucket.take(next).is_err());
    }

    #[test]
    fn a_vanishing_rate_waits_a_day_at_a_time_instead_of_overflowing() {
        let mut bucket = Bucket::new(RateLimit {
            per_second: 1e-300,
            burst: 1,
        });
        let start = bucket.at;
        assert!(bucket.take(start).is_ok());
        assert_eq!(bucket.take(start).unwrap_err() - start, MAX_TOKEN_WAIT);
    }
}
