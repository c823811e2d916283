//! # engine-sync
//!
//! The deterministic engine: every agent runs on the caller's thread. Nothing happens
//! until the caller calls [`ExecutionEngine::drive`], which hands queued messages to
//! agents in launch order, one message per agent per round, until a round finds nothing
//! to do. Given the same publishes, the same handlers run in the same order every time,
//! which makes it the engine for tests, tutorials and debugging.
//!
//! ```
//! use std::sync::Arc;
//! use engine_core::{AgentRegistry, AgentSpec, ExecutionEngine, ExecutionEngineExt, GuildContext};
//! use engine_sync::SyncEngine;
//! # use engine_core::{Agent, AgentContext, AgentResult, Message};
//! # struct Quiet;
//! # impl Agent for Quiet {
//! #     async fn handle(&mut self, _: &AgentContext, _: &Message) -> AgentResult { Ok(()) }
//! # }
//! let mut registry = AgentRegistry::new();
//! registry.register("quiet", |_| Ok(Quiet));
//! let messaging = Arc::new(messaging_memory::MemoryMessaging::new());
//! let guild = GuildContext::new("sync-doc", messaging, Arc::new(registry));
//! let engine = SyncEngine::new();
//! engine.run_agent(&guild, AgentSpec::new("q", "quiet").with_topic("t"))?;
//! assert!(engine.is_agent_running("sync-doc", "q"));
//! assert_eq!(engine.drive(), 0);
//! engine.shutdown()?;
//! # Ok::<(), engine_core::Error>(())
//! ```

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use engine_core::{
    Admission, AgentCell, AgentHost, AgentInfo, AgentSpec, AgentState, AgentTable,
    EngineCapabilities, EngineStats, EventHub, EventReceiver, ExecutionEngine, GuildContext,
    LifecycleEvent, LifecycleKind, NoNotify, Result, Step, Timers,
};

/// The engine's name.
pub const NAME: &str = "sync";

/// Runs every agent on the caller's thread; see the crate docs.
#[derive(Debug)]
pub struct SyncEngine {
    inner: Mutex<Inner>,
    events: Arc<EventHub>,
    /// The agents' timers, on a clock that moves only when the caller advances it.
    timers: Timers,
}

#[derive(Debug)]
struct Inner {
    /// A running agent has a host; a crashed one keeps its record without one.
    table: AgentTable<Option<AgentHost>>,
}

impl Default for SyncEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl SyncEngine {
    /// An engine with no agents.
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner {
                table: AgentTable::new(NAME),
            }),
            events: Arc::new(EventHub::new()),
            timers: Timers::manual(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn emit(&self, guild: &str, agent_id: &str, kind: LifecycleKind) {
        self.events
            .emit(LifecycleEvent::new(guild, agent_id, NAME, kind));
    }
}

impl ExecutionEngine for SyncEngine {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> EngineCapabilities {
        let mut capabilities = EngineCapabilities::default();
        capabilities.driven_by_caller = true;
        capabilities.pause = true;
        capabilities.virtual_clock = true;
        capabilities
    }

    fn run_agent(&self, guild: &GuildContext, spec: AgentSpec) -> Result<()> {
        let mut inner = self.lock();
        // An ended run's record holds no host: dropping it is all there is to finish.
        if let Admission::Running = inner.table.admit(&guild.namespace, &spec.id)? {
            return Ok(());
        }
        spec.limits.refuse_unenforced(NAME, &spec.id)?;
        spec.refuse_settings_of_other_engines(NAME)?;
        let spec = Arc::new(spec);
        let cell = Arc::new(AgentCell::reporting_to(
            self.events.clone(),
            &guild.namespace,
            &spec.id,
            NAME,
        ));
        // The agents' timers run on this engine's clock, not the guild's real-time one.
        let mut guild = guild.clone();
        guild.timers = self.timers.clone();
        let host = AgentHost::start(&guild, spec.clone(), cell.clone(), Arc::new(NoNotify))?;
        cell.set_state(AgentState::Running, None);
        inner
            .table
            .insert(&guild.namespace, spec.clone(), cell, Some(host));
        drop(inner);
        self.emit(&guild.namespace, &spec.id, LifecycleKind::Started);
        Ok(())
    }

    fn stop_agent(&self, guild: &str, agent_id: &str) -> Result<()> {
        let Some(record) = self.lock().table.remove(guild, agent_id) else {
            return Ok(());
        };
        let Some(host) = record.handle else {
            return Ok(());
        };
        if let Err(error) = host.stop() {
            tracing::warn!(agent = agent_id, %error, "stopping the agent");
        }
        record.cell.set_state(AgentState::Stopped, None);
        self.emit(guild, agent_id, LifecycleKind::Stopped);
        Ok(())
    }

    fn pause_agent(&self, guild: &str, agent_id: &str) -> Result<()> {
        // Handlers run under this lock, so none is running while it is held.
        if let Some(record) = self.lock().table.to_pause(guild, agent_id)? {
            record.cell.set_state(AgentState::Paused, None);
        }
        Ok(())
    }

    fn resume_agent(&self, guild: &str, agent_id: &str) -> Result<()> {
        self.lock().table.resume(guild, agent_id).map(|_| ())
    }

    fn agents_in_guild(&self, guild: &str) -> Vec<AgentInfo> {
        self.lock().table.in_guild(guild)
    }

    fn agent_info(&self, guild: &str, agent_id: &str) -> Option<AgentInfo> {
        self.lock().table.info(guild, agent_id)
    }

    fn stats(&self) -> EngineStats {
        self.lock().table.stats()
    }

    fn cleanup_dead(&self) -> Vec<AgentInfo> {
        self.lock().table.remove_dead()
    }

    fn shutdown(&self) -> Result<()> {
        let records = { self.lock().table.close() };
        for record in records {
            if let Some(host) = record.handle {
                if let Err(error) = host.stop() {
                    tracing::warn!(agent = %record.spec.id, %error, "stopping the agent");
                }
                record.cell.set_state(AgentState::Stopped, None);
                self.emit(&record.guild, &record.spec.id, LifecycleKind::Stopped);
            }
        }
        Ok(())
    }

    fn events(&self) -> EventReceiver {
        self.events.subscribe()
    }

    fn advance_clock(&self, by: std::time::Duration) -> usize {
        self.timers.advance(by)
    }

    fn drive(&self) -> usize {
        self.drive_until(None)
    }

    fn drive_for(&self, slice: std::time::Duration) -> usize {
        // A slice past any clock is no limit at all.
        self.drive_until(std::time::Instant::now().checked_add(slice))
    }
}

impl SyncEngine {
    /// Gives each agent one message per round, in launch order, until a round finds
    /// nothing or `deadline` has passed. Rounds are whole, so where a call ends does
    /// not change the order handlers run in.
    fn drive_until(&self, deadline: Option<std::time::Instant>) -> usize {
        let mut handled = 0;
        loop {
            let mut ended = Vec::new();
            let mut round = 0;
            {
                let mut inner = self.lock();
                for record in inner.table.records_mut() {
                    let Some(host) = record.handle.as_mut() else {
                        continue;
                    };
                    if record.cell.state() == AgentState::Paused {
                        continue;
                    }
                    let ending = match host.step() {
                        Ok(Step::Idle) => continue,
                        Ok(Step::Handled) => {
                            round += 1;
                            continue;
                        }
                        Ok(Step::Ended(ending)) => {
                            round += 1;
                            ending
                        }
                        Err(error) => format!("delivery failed: {error}").into(),
                    };
                    if let Some(host) = record.handle.take() {
                        host.end(&ending);
                    }
                    ended.push((record.guild.clone(), record.spec.id.clone(), ending));
                }
            }
            for (guild, agent_id, ending) in ended {
                self.emit(&guild, &agent_id, ending.lifecycle());
            }
            handled += round;
            if round == 0 || deadline.is_some_and(|deadline| std::time::Instant::now() >= deadline)
            {
                return handled;
            }
        }
    }
}

impl Drop for SyncEngine {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
