//! # engine-pool
//!
//! Runs agents as tasks on a fixed pool of worker threads (one per core unless set).
//! Each agent is one long-lived future ([`engine_core::AgentTask`]): it handles its
//! queued messages one at a time, awaiting its handler, and parks, holding no thread,
//! while nothing is queued. A hundred thousand idle agents cost memory, not threads.
//!
//! The workers are a tokio multi-threaded runtime: each worker has its own run queue,
//! idle workers steal, and an agent woken by an agent on the same worker runs next on
//! that worker without a thread switch. Handlers may await tokio IO and timers. A busy
//! agent yields its worker after its budget (messages, or a time slice), so it cannot
//! starve the others on that worker; a handler that holds a worker past
//! `long_handler_ms` in one go is logged. `docs/decisions.md` says why tokio.
//!
//! Scheduling policies (`fifo`, `priority`, `fair_share`, `rate`, and a cap on
//! concurrent handlers) are in `sched.rs`. An agent with `placement = "dedicated"` runs
//! the same task on a thread of its own, for code that blocks.
//!
//! A panic in a handler is caught at the one boundary in engine-core and ends only
//! that agent. Stopping an agent waits for its task to end; shutting the engine down
//! stops every agent and joins every thread.

mod config;
mod error;
mod sched;

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use engine_core::{
    Admission, AgentCell, AgentHost, AgentInfo, AgentRecord, AgentSpec, AgentState, AgentTable,
    AgentTask, EngineCapabilities, EngineStats, EventHub, EventReceiver, ExecutionEngine,
    GuildContext, LifecycleEvent, LifecycleKind, Placement, Result, TaskControl, TaskEnd,
};

pub use config::{MAX_WORKERS, Policy, PoolConfig, check_rate};
use error::PoolError;
use sched::Scheduler;

/// The engine's name.
pub const NAME: &str = "pool";

/// Runs agents as tasks on a fixed pool of workers; see the crate docs.
pub struct PoolEngine {
    config: PoolConfig,
    /// Taken at shutdown, to join the workers.
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    scheduler: Arc<Scheduler>,
    table: Mutex<AgentTable<Task>>,
    events: Arc<EventHub>,
}

impl std::fmt::Debug for PoolEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolEngine")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The engine's handle on one agent's task.
#[derive(Debug)]
struct Task {
    control: Arc<TaskControl>,
    /// The thread of an agent placed on one of its own.
    thread: Option<JoinHandle<()>>,
}

thread_local! {
    /// The task this thread is polling, so an agent that stops or pauses itself is not
    /// waited for (it would wait for itself).
    static CURRENT: Cell<usize> = const { Cell::new(0) };
    /// Whether this thread is one of a pool's workers.
    static ON_WORKER: Cell<bool> = const { Cell::new(false) };
}

impl PoolEngine {
    /// An engine with the default settings: one worker per core, `fifo`.
    pub fn new() -> Result<Self> {
        Self::with_config(PoolConfig::default())
    }

    /// An engine with the given settings, which it checks first.
    pub fn with_config(config: PoolConfig) -> Result<Self> {
        config.check()?;
        let scheduler = Arc::new(Scheduler::new(&config));
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder
            .worker_threads(config.worker_count())
            .thread_name("guild-pool")
            .on_thread_start(|| ON_WORKER.with(|on| on.set(true)))
            .enable_all();
        if scheduler.gated() {
            // An agent woken from outside the pool reaches its gate at the next tick,
            // not up to 61 ticks later, so a policy ranks it among the waiting.
            builder.global_queue_interval(1);
        }
        let runtime = builder.build().map_err(PoolError::Runtime)?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Mutex::new(Some(runtime)),
            scheduler,
            config,
            table: Mutex::new(AgentTable::new(NAME)),
            events: Arc::new(EventHub::new()),
        })
    }

    /// The engine's settings.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, AgentTable<Task>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a task to end, then records the agent stopped (unless it ended
    /// otherwise) and joins its thread if it has one.
    fn finish(&self, guild: &str, agent_id: &str, cell: &AgentCell, mut task: Task) {
        if !is_current(&task.control) {
            blocking(|| task.control.wait_ended());
            if let Some(thread) = task.thread.take()
                && thread.join().is_err()
            {
                tracing::error!(agent = agent_id, "the agent's thread panicked");
            }
        }
        if !cell.state().is_dead() {
            cell.set_state(AgentState::Stopped, None);
            self.events
                .emit(event(guild, agent_id, LifecycleKind::Stopped));
        }
    }

    fn describe(table: &AgentTable<Task>, record: &AgentRecord<Task>) -> AgentInfo {
        let mut info = table.describe(record);
        info.cpu_time = Some(record.cell.busy_time());
        info
    }

    /// Starts the agent's task on the workers, or on a thread of its own.
    fn spawn(
        &self,
        spec: &AgentSpec,
        task: AgentTask,
        watch: Watch,
    ) -> Result<Option<JoinHandle<()>>> {
        let run = Timed {
            task,
            watch,
            long: Duration::from_millis(self.config.long_handler_ms),
        };
        if spec.placement == Placement::Shared {
            self.handle.spawn(run);
            return Ok(None);
        }
        let thread = std::thread::Builder::new()
            .name(format!("agent:{}", spec.id))
            .spawn(move || {
                // A runtime of its own, so its handlers can await tokio IO and timers.
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(run),
                    Err(error) => {
                        let reason = format!("cannot start its thread's runtime: {error}");
                        tracing::error!(agent = %run.watch.spec.id, "{reason}");
                        run.watch.cell.set_state(
                            AgentState::Crashed,
                            Some(engine_core::ExitStatus {
                                reason,
                                code: None,
                                signal: None,
                            }),
                        );
                    }
                }
            })
            .map_err(|source| PoolError::Spawn {
                agent: spec.id.clone(),
                source,
            })?;
        Ok(Some(thread))
    }
}

impl ExecutionEngine for PoolEngine {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> EngineCapabilities {
        let mut capabilities = EngineCapabilities::default();
        capabilities.parallel = true;
        capabilities.pause = true;
        capabilities
    }

    fn run_agent(&self, guild: &GuildContext, spec: AgentSpec) -> Result<()> {
        let mut table = self.lock();
        match table.admit(&guild.namespace, &spec.id)? {
            Admission::Running => return Ok(()),
            Admission::Start(Some(ended)) => {
                self.finish(&guild.namespace, &spec.id, &ended.cell, ended.handle);
            }
            Admission::Start(None) => {}
        }
        spec.limits.refuse_unenforced(NAME, &spec.id)?;
        check_agent(&self.config, &spec)?;
        let spec = Arc::new(spec);
        let cell = Arc::new(AgentCell::default());
        let control = Arc::new(TaskControl::default());
        let task = Task {
            control: control.clone(),
            thread: None,
        };
        // Recorded as starting, and the table let go of while the start hook runs: it
        // may query the engine, and other agents may be started and stopped meanwhile.
        table.insert(&guild.namespace, spec.clone(), cell.clone(), task);
        drop(table);

        // The start hook runs here, on the caller's thread, inside the pool's runtime
        // (so it may use tokio): an agent that starts at once costs no thread switch.
        // (Whether the caller may block is decided before entering the pool's runtime.)
        let started = blocking(|| {
            let _runtime = self.handle.enter();
            AgentHost::start(guild, spec.clone(), cell.clone(), control.clone())
        });
        let host = match started {
            Ok(host) => host,
            Err(error) => {
                control.set_ended();
                self.lock()
                    .remove_if_same(&guild.namespace, &spec.id, &cell);
                return Err(error);
            }
        };
        cell.set_state(AgentState::Running, None);
        self.events
            .emit(event(&guild.namespace, &spec.id, LifecycleKind::Started));
        let dedicated = spec.placement == Placement::Dedicated;
        let env = self.scheduler.env(&spec, cell.clone(), !dedicated);
        let task = host.into_task(control.clone(), Box::new(env));
        let watch = Watch {
            guild: guild.namespace.clone(),
            spec: spec.clone(),
            control: control.clone(),
            cell: cell.clone(),
            events: self.events.clone(),
        };
        match self.spawn(&spec, task, watch) {
            Ok(None) => Ok(()),
            Ok(Some(thread)) => {
                if let Some(record) = self.lock().get_mut(&guild.namespace, &spec.id)
                    && Arc::ptr_eq(&record.cell, &cell)
                {
                    record.handle.thread = Some(thread);
                } else {
                    // Stopped while it started: its task sees the stop and ends.
                    let _ = thread.join();
                }
                Ok(())
            }
            Err(error) => {
                // The task was dropped unrun, which marked it ended.
                cell.set_state(AgentState::Crashed, None);
                self.lock()
                    .remove_if_same(&guild.namespace, &spec.id, &cell);
                Err(error)
            }
        }
    }

    fn stop_agent(&self, guild: &str, agent_id: &str) -> Result<()> {
        let Some(record) = self.lock().remove(guild, agent_id) else {
            return Ok(());
        };
        record.handle.control.stop();
        self.finish(guild, agent_id, &record.cell, record.handle);
        Ok(())
    }

    fn pause_agent(&self, guild: &str, agent_id: &str) -> Result<()> {
        let Some(control) = self
            .lock()
            .to_pause(guild, agent_id)?
            .map(|record| record.handle.control.clone())
        else {
            return Ok(());
        };
        control.pause();
        // An agent pausing itself pauses once its handler returns.
        if is_current(&control) || blocking(|| control.wait_paused()) {
            return Ok(());
        }
        // Its task ended (it crashed or was stopped) before it paused.
        self.lock().check_pausable(guild, agent_id)
    }

    fn resume_agent(&self, guild: &str, agent_id: &str) -> Result<()> {
        if let Some(record) = self.lock().resume(guild, agent_id)? {
            record.handle.control.resume();
        }
        Ok(())
    }

    fn agents_in_guild(&self, guild: &str) -> Vec<AgentInfo> {
        let table = self.lock();
        table
            .records()
            .into_iter()
            .filter(|record| record.guild == guild)
            .map(|record| Self::describe(&table, record))
            .collect()
    }

    fn agent_info(&self, guild: &str, agent_id: &str) -> Option<AgentInfo> {
        let table = self.lock();
        table
            .get(guild, agent_id)
            .map(|record| Self::describe(&table, record))
    }

    fn stats(&self) -> EngineStats {
        self.lock().stats()
    }

    fn cleanup_dead(&self) -> Vec<AgentInfo> {
        self.lock().remove_dead()
    }

    fn shutdown(&self) -> Result<()> {
        let records = self.lock().close();
        for record in &records {
            record.handle.control.stop();
        }
        for record in records {
            self.finish(&record.guild, &record.spec.id, &record.cell, record.handle);
        }
        let runtime = self
            .runtime
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(runtime) = runtime {
            if ON_WORKER.with(Cell::get) {
                // A handler shutting down its own pool: the worker it runs on cannot
                // be joined from itself, so the workers end on their own.
                runtime.shutdown_background();
            } else {
                // Joined from a thread of its own, which no runtime has entered, so
                // this works from async callers too (where dropping a runtime panics).
                let joined = std::thread::Builder::new()
                    .name("guild-pool-stop".into())
                    .spawn(move || runtime.shutdown_timeout(Duration::from_secs(10)))
                    .map(|stopping| stopping.join().is_ok());
                if !matches!(joined, Ok(true)) {
                    tracing::warn!("the pool's workers could not be joined");
                }
            }
        }
        Ok(())
    }

    fn events(&self) -> EventReceiver {
        self.events.subscribe()
    }
}

impl Drop for PoolEngine {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Refuses an agent's pool settings that a pool with `config` would not honour:
/// `weight` outside `fair_share`, `rate` outside `rate`, and values out of range.
pub fn check_agent(config: &PoolConfig, spec: &AgentSpec) -> Result<()> {
    let policy = config.policy;
    let needs = |setting, wanted: Policy| {
        Err(PoolError::NeedsPolicy {
            agent: spec.id.clone(),
            setting,
            policy: wanted.name(),
            current: policy.name(),
        }
        .into())
    };
    if spec.weight.is_some() && policy != Policy::FairShare {
        return needs("weight", Policy::FairShare);
    }
    if spec.weight == Some(0) {
        return Err(PoolError::BadConfig {
            setting: "weight",
            why: format!("agent {:?}: must be at least 1", spec.id),
        }
        .into());
    }
    if let Some(rate) = &spec.rate {
        if policy != Policy::Rate {
            return needs("rate", Policy::Rate);
        }
        config::check_rate(rate).map_err(|why| PoolError::BadConfig {
            setting: "rate",
            why: format!("agent {:?}: {why}", spec.id),
        })?;
    }
    Ok(())
}

fn event(guild: &str, agent_id: &str, kind: LifecycleKind) -> LifecycleEvent {
    LifecycleEvent {
        guild: guild.to_owned(),
        agent_id: agent_id.to_owned(),
        engine: NAME.to_owned(),
        kind,
    }
}

fn is_current(control: &Arc<TaskControl>) -> bool {
    CURRENT.with(Cell::get) == Arc::as_ptr(control) as usize
}

/// Runs `wait`, which blocks, handing this thread's worker duties to another thread
/// first when it is one of the pool's workers (a handler that stops or starts an
/// agent), so the task it waits for can still run.
fn blocking<T>(wait: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}

/// What the pool keeps watching of one task: who it is, and what to do when it ends.
struct Watch {
    guild: Arc<str>,
    spec: Arc<AgentSpec>,
    control: Arc<TaskControl>,
    cell: Arc<AgentCell>,
    events: Arc<EventHub>,
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
struct Timed {
    task: AgentTask,
    watch: Watch,
    long: Duration,
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
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| this.task.as_mut().poll(cx)))
                .unwrap_or_else(|panic| {
                    let reason = format!(
                        "the pool failed running it: {}",
                        engine_core::panic_text(&*panic)
                    );
                    tracing::error!(agent = %this.watch.spec.id, "{reason}");
                    this.watch.cell.set_state(
                        AgentState::Crashed,
                        Some(engine_core::ExitStatus {
                            reason: reason.clone(),
                            code: None,
                            signal: None,
                        }),
                    );
                    Poll::Ready(TaskEnd::Crashed(reason))
                });
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
        let Poll::Ready(end) = polled else {
            return Poll::Pending;
        };
        match end {
            TaskEnd::Stopped(Ok(())) => {}
            TaskEnd::Stopped(Err(error)) => {
                tracing::warn!(agent = %this.watch.spec.id, %error, "stopping the agent");
            }
            TaskEnd::Crashed(reason) => {
                this.watch.events.emit(event(
                    &this.watch.guild,
                    &this.watch.spec.id,
                    LifecycleKind::Crashed { reason },
                ));
            }
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
