//! # engine-threads
//!
//! Runs every agent on an OS thread of its own. Each thread owns a mailbox (a
//! crossbeam channel of wake-ups and stop requests) and loops: take the next queued
//! message from the agent's subscription, hand it to the agent, repeat, and sleep on the
//! mailbox when nothing is queued. Agents run in parallel; one agent's messages are
//! handled one at a time.
//!
//! A panic in a handler is caught at [`engine_core::AgentHost`], the one boundary, and
//! ends only that agent, which is then reported crashed with the panic text. Stopping
//! an agent or shutting the engine down joins the threads, so none outlives the engine.
//!
//! When `run_agent` is called from inside a tokio runtime, the agent's thread enters
//! that runtime, so handlers can await tokio IO and timers.

mod error;
mod worker;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use engine_core::{
    Admission, AgentCell, AgentInfo, AgentSpec, AgentState, AgentTable, Doorbell,
    EngineCapabilities, EngineStats, Error, EventHub, EventReceiver, ExecutionEngine, GuildContext,
    LifecycleEvent, LifecycleKind, Result,
};

use error::ThreadsError;
use worker::{Signal, Worker};

/// The engine's name.
pub const NAME: &str = "threads";

/// Settings of a [`ThreadsEngine`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThreadsConfig {
    /// Stack size of each agent's thread; the platform default when `None`.
    pub stack_size: Option<usize>,
}

/// Runs every agent on an OS thread of its own; see the crate docs.
#[derive(Debug)]
pub struct ThreadsEngine {
    config: ThreadsConfig,
    inner: Mutex<Inner>,
    events: Arc<EventHub>,
}

#[derive(Debug)]
struct Inner {
    table: AgentTable<Thread>,
}

/// The engine's handle on one agent's thread.
#[derive(Debug)]
struct Thread {
    signals: Sender<Signal>,
    join: Option<JoinHandle<()>>,
}

impl Default for ThreadsEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl ThreadsEngine {
    /// An engine with the default settings.
    pub fn new() -> Self {
        Self::with_config(ThreadsConfig::default())
    }

    /// An engine with the given settings.
    pub fn with_config(config: ThreadsConfig) -> Self {
        Self {
            config,
            inner: Mutex::new(Inner {
                table: AgentTable::new(NAME),
            }),
            events: Arc::new(EventHub::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Joins a thread that was asked to stop, and reports the agent stopped if it had
    /// not ended otherwise.
    fn finish(&self, guild: &str, agent_id: &str, cell: &AgentCell, mut thread: Thread) {
        if let Some(join) = thread.join.take()
            && join.join().is_err()
        {
            tracing::error!(
                agent = agent_id,
                "the agent's thread panicked outside its handler"
            );
        }
        if !cell.state().is_dead() {
            cell.set_state(AgentState::Stopped, None);
            self.events.emit(LifecycleEvent::new(
                guild,
                agent_id,
                NAME,
                LifecycleKind::Stopped,
            ));
        }
    }
}

impl ExecutionEngine for ThreadsEngine {
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
        let mut inner = self.lock();
        match inner.table.admit(&guild.namespace, &spec.id)? {
            Admission::Running => return Ok(()),
            Admission::Start(Some(ended)) => {
                self.finish(&guild.namespace, &spec.id, &ended.cell, ended.handle);
            }
            Admission::Start(None) => {}
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
        let (signals_tx, signals_rx) = crossbeam_channel::unbounded();
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        let worker = Worker {
            guild: guild.clone(),
            spec: spec.clone(),
            cell: cell.clone(),
            mailbox: Arc::new({
                let signals = signals_tx.clone();
                Doorbell::new(move || {
                    let _ = signals.send(Signal::Wake);
                })
            }),
            signals: signals_rx,
            events: self.events.clone(),
            runtime: tokio::runtime::Handle::try_current().ok(),
        };
        let mut builder = std::thread::Builder::new().name(format!("agent:{}", spec.id));
        if let Some(stack_size) = self.config.stack_size {
            builder = builder.stack_size(stack_size);
        }
        let join = builder.spawn(move || worker.run(ready_tx)).map_err(|e| {
            Error::from(ThreadsError::Spawn {
                agent: spec.id.clone(),
                source: e,
            })
        })?;
        // Recorded as starting, and the table let go of while the start hook runs: it
        // may query the engine, and other agents may be started and stopped meanwhile.
        // Stopping it now joins its thread, which sees the stop before any message.
        let thread = Thread {
            signals: signals_tx,
            join: Some(join),
        };
        inner
            .table
            .insert(&guild.namespace, spec.clone(), cell.clone(), thread);
        drop(inner);
        let ready = ready_rx.recv().unwrap_or_else(|_| {
            Err(ThreadsError::Vanished {
                agent: spec.id.clone(),
            }
            .into())
        });
        if let Err(error) = ready {
            let ours = self
                .lock()
                .table
                .remove_if_same(&guild.namespace, &spec.id, &cell);
            if let Some(mut record) = ours
                && let Some(join) = record.handle.join.take()
            {
                let _ = join.join();
            }
            return Err(error);
        }
        Ok(())
    }

    fn stop_agent(&self, guild: &str, agent_id: &str) -> Result<()> {
        let Some(record) = self.lock().table.remove(guild, agent_id) else {
            return Ok(());
        };
        let _ = record.handle.signals.send(Signal::Stop);
        self.finish(guild, agent_id, &record.cell, record.handle);
        Ok(())
    }

    fn pause_agent(&self, guild: &str, agent_id: &str) -> Result<()> {
        let Some(signals) = self
            .lock()
            .table
            .to_pause(guild, agent_id)?
            .map(|record| record.handle.signals.clone())
        else {
            return Ok(());
        };
        let (paused, answer) = crossbeam_channel::bounded(1);
        // The table is let go of while the agent finishes its handler: the handler may
        // call into the engine.
        if signals.send(Signal::Pause(paused)).is_ok() && answer.recv().is_ok() {
            return Ok(());
        }
        // Its thread ended (it crashed or was stopped) before it paused.
        self.lock().table.check_pausable(guild, agent_id)
    }

    fn resume_agent(&self, guild: &str, agent_id: &str) -> Result<()> {
        if let Some(record) = self.lock().table.resume(guild, agent_id)? {
            let _ = record.handle.signals.send(Signal::Resume);
        }
        Ok(())
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
        for record in &records {
            let _ = record.handle.signals.send(Signal::Stop);
        }
        for record in records {
            self.finish(&record.guild, &record.spec.id, &record.cell, record.handle);
        }
        Ok(())
    }

    fn events(&self) -> EventReceiver {
        self.events.subscribe()
    }
}

impl Drop for ThreadsEngine {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
