//! The pool engine itself: its workers, its table of agents, and the engine contract.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use engine_core::{
    Admission, AgentCell, AgentHost, AgentInfo, AgentRecord, AgentSpec, AgentState, AgentTable,
    AgentTask, EngineCapabilities, EngineStats, EventHub, EventReceiver, ExecutionEngine,
    GuildContext, LifecycleEvent, LifecycleKind, Placement, Result, TaskControl,
};

use crate::NAME;
use crate::config::{self, Policy, PoolConfig};
use crate::error::PoolError;
use crate::running::{Timed, Watch, blocking, is_current, mark_worker, on_worker};
use crate::sched::Scheduler;

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
            .on_thread_start(mark_worker)
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

    /// The pool's workers, for running other tasks beside its agents (a graph's
    /// nodes). Tasks spawned on them are not agents: no policy schedules them.
    pub fn workers(&self) -> tokio::runtime::Handle {
        self.handle.clone()
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
                    Err(error) => run
                        .watch
                        .crash(format!("cannot start its thread's runtime: {error}")),
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
        let cell = Arc::new(AgentCell::reporting_to(
            self.events.clone(),
            &guild.namespace,
            &spec.id,
            NAME,
        ));
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
            if on_worker() {
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
    spec.refuse_settings_of_other_engines("pool")?;
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

pub(crate) fn event(guild: &str, agent_id: &str, kind: LifecycleKind) -> LifecycleEvent {
    LifecycleEvent::new(guild, agent_id, NAME, kind)
}
