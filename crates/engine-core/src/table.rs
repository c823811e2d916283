//! The bookkeeping every engine keeps about its agents: a shared live cell per agent
//! (counters and lifecycle state) and a table that answers the engine contract's queries.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::core_error::CoreError;
use crate::{AgentInfo, AgentSpec, AgentState, EngineStats, ExitStatus, Result};

/// The live state of one agent, shared by the host that runs it (which counts and
/// reports) and the engine that answers queries about it.
pub struct AgentCell {
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    errors: AtomicU64,
    queued: AtomicU64,
    busy: AtomicBool,
    /// Nanoseconds spent running the agent's code, where the engine measures it.
    busy_ns: AtomicU64,
    status: Mutex<(AgentState, Option<ExitStatus>)>,
    /// Where changes the host sees (a circuit breaker's) are reported.
    reporter: Option<Reporter>,
    /// The name of the engine that runs the agent, for its spans.
    engine: Arc<str>,
    /// How long its handler took and its deliveries waited, where recorded.
    timings: crate::Timings,
}

/// Reports lifecycle changes of one agent as its engine does: set by the engine on the
/// agent's cell.
pub type Reporter = Box<dyn Fn(crate::LifecycleKind) + Send + Sync>;

impl std::fmt::Debug for AgentCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCell")
            .field("status", &*self.status())
            .field("messages_in", &self.messages_in)
            .finish_non_exhaustive()
    }
}

impl Default for AgentCell {
    fn default() -> Self {
        Self {
            messages_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            busy: AtomicBool::new(false),
            busy_ns: AtomicU64::new(0),
            status: Mutex::new((AgentState::Starting, None)),
            reporter: None,
            engine: Arc::from(""),
            timings: crate::Timings::default(),
        }
    }
}

impl AgentCell {
    /// A cell whose host reports what it sees (circuit breaker changes) through
    /// `reporter`; a default cell reports nothing.
    pub fn reporting(reporter: Reporter) -> Self {
        Self {
            reporter: Some(reporter),
            ..Self::default()
        }
    }

    /// A cell that reports to `events` as agent `agent_id` of `guild` on `engine`.
    pub fn reporting_to(
        events: std::sync::Arc<crate::EventHub>,
        guild: &str,
        agent_id: &str,
        engine: &str,
    ) -> Self {
        let name = Arc::from(engine);
        let (guild, agent_id, engine) = (guild.to_owned(), agent_id.to_owned(), engine.to_owned());
        Self::reporting(Box::new(move |kind| {
            events.emit(crate::LifecycleEvent::new(&guild, &agent_id, &engine, kind));
        }))
        .on_engine(name)
    }

    /// The same cell, recording that engine `engine` runs the agent.
    pub fn on_engine(self, engine: impl Into<Arc<str>>) -> Self {
        Self {
            engine: engine.into(),
            ..self
        }
    }

    /// How long its handler took and its deliveries waited (recorded by its host when
    /// the guild's timing is on, or mirrored from an agent process).
    pub fn timings(&self) -> &crate::Timings {
        &self.timings
    }

    /// The name of the engine that runs the agent (empty when the cell was not told).
    pub fn engine(&self) -> &str {
        &self.engine
    }

    /// Reports a change through the cell's reporter, if it has one.
    pub fn report(&self, kind: crate::LifecycleKind) {
        if let Some(reporter) = &self.reporter {
            reporter(kind);
        }
    }

    /// The agent's lifecycle state.
    pub fn state(&self) -> AgentState {
        self.status().0
    }

    /// Records a new lifecycle state and, for an ending, how it ended.
    pub fn set_state(&self, state: AgentState, exit: Option<ExitStatus>) {
        *self.status() = (state, exit);
    }

    /// Counts one message the agent published.
    pub fn count_out(&self) {
        self.messages_out.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one delivery handed to the agent and marks it busy.
    pub fn begin_handling(&self) {
        self.messages_in.fetch_add(1, Ordering::Relaxed);
        self.busy.store(true, Ordering::Relaxed);
    }

    /// Records how handling ended and how much is still queued, and marks it idle.
    pub fn end_handling(&self, failed: bool, queued: usize) {
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.queued.store(queued as u64, Ordering::Relaxed);
        self.busy.store(false, Ordering::Relaxed);
    }

    /// Records how many deliveries are queued for the agent.
    pub fn set_queued(&self, queued: usize) {
        self.queued.store(queued as u64, Ordering::Relaxed);
    }

    /// Records whether the agent is handling a message (for agents whose handler runs
    /// elsewhere, such as in another process).
    pub fn set_busy(&self, busy: bool) {
        self.busy.store(busy, Ordering::Relaxed);
    }

    /// Adds time spent running the agent's code (for engines that measure it).
    pub fn add_busy_time(&self, time: std::time::Duration) {
        let nanos = u64::try_from(time.as_nanos()).unwrap_or(u64::MAX);
        self.busy_ns.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The time spent running the agent's code, as the engine measured it.
    pub fn busy_time(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.busy_ns.load(Ordering::Relaxed))
    }

    fn status(&self) -> MutexGuard<'_, (AgentState, Option<ExitStatus>)> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One agent as an engine knows it; `H` is the engine's own handle (a thread, a host, a
/// process).
#[derive(Debug)]
pub struct AgentRecord<H> {
    /// The guild it belongs to.
    pub guild: String,
    /// The spec it was launched from.
    pub spec: Arc<AgentSpec>,
    /// Its live state.
    pub cell: Arc<AgentCell>,
    /// The engine's handle on it.
    pub handle: H,
    /// The process that runs it, where it has one of its own.
    pub pid: Option<u32>,
    order: u64,
}

/// The agents of one engine instance, by guild and id, in launch order.
#[derive(Debug)]
pub struct AgentTable<H> {
    engine: String,
    guilds: HashMap<String, HashMap<String, AgentRecord<H>>>,
    launched: u64,
    /// Set by [`close`](Self::close): the engine runs nothing more.
    closed: bool,
}

/// What [`AgentTable::admit`] decided about an agent asked to run.
#[derive(Debug)]
pub enum Admission<H> {
    /// It runs (or is starting) already: running it again is a no-op.
    Running,
    /// It may be started. The record of an earlier run that has ended, if there was
    /// one, is handed back for the engine to finish (join its thread, reap its process).
    Start(Option<AgentRecord<H>>),
}

impl<H> AgentTable<H> {
    /// An empty table for the engine named `engine`.
    pub fn new(engine: impl Into<String>) -> Self {
        Self {
            engine: engine.into(),
            guilds: HashMap::new(),
            launched: 0,
            closed: false,
        }
    }

    /// The one place every engine decides whether an agent may be started: refused
    /// once the engine is shut down, a no-op for an agent that is not dead, and a
    /// fresh start (handing back the old record) for one that ended.
    pub fn admit(&mut self, guild: &str, agent_id: &str) -> Result<Admission<H>> {
        if self.closed {
            return Err(CoreError::EngineClosed {
                engine: self.engine.clone(),
                agent: agent_id.to_owned(),
            }
            .into());
        }
        match self.get(guild, agent_id) {
            Some(record) if !record.cell.state().is_dead() => Ok(Admission::Running),
            Some(_) => Ok(Admission::Start(self.remove(guild, agent_id))),
            None => Ok(Admission::Start(None)),
        }
    }

    /// The record of a running agent that `pause_agent` is to pause (the engine then
    /// asks it to, and waits); `None` when it is paused already; `NotFound` for one
    /// that is unknown, starting or ended.
    pub fn to_pause(&self, guild: &str, agent_id: &str) -> Result<Option<&AgentRecord<H>>> {
        let record = self.pausable(guild, agent_id)?;
        Ok((record.cell.state() == AgentState::Running).then_some(record))
    }

    /// For `resume_agent`: marks a paused agent running again and returns its record,
    /// for the engine to tell it; `None` when it was running already; `NotFound` for
    /// one that is unknown, starting or ended.
    pub fn resume(&self, guild: &str, agent_id: &str) -> Result<Option<&AgentRecord<H>>> {
        let record = self.pausable(guild, agent_id)?;
        if record.cell.state() != AgentState::Paused {
            return Ok(None);
        }
        record.cell.set_state(AgentState::Running, None);
        Ok(Some(record))
    }

    /// The record of a running or paused agent, or `NotFound`.
    fn pausable(&self, guild: &str, agent_id: &str) -> Result<&AgentRecord<H>> {
        match self.get(guild, agent_id) {
            Some(record)
                if matches!(
                    record.cell.state(),
                    AgentState::Running | AgentState::Paused
                ) =>
            {
                Ok(record)
            }
            found => Err(CoreError::NotPausable {
                engine: self.engine.clone(),
                agent: agent_id.to_owned(),
                state: found.map(|record| record.cell.state()),
            }
            .into()),
        }
    }

    /// Whether an agent that has not paused by the time its engine stopped waiting for
    /// it is gone: `NotFound` then, as for an agent that never ran.
    pub fn check_pausable(&self, guild: &str, agent_id: &str) -> Result<()> {
        self.pausable(guild, agent_id).map(|_| ())
    }

    /// Shuts the table: [`admit`](Self::admit) refuses from now on. Returns every
    /// record, in launch order, for the engine to stop.
    pub fn close(&mut self) -> Vec<AgentRecord<H>> {
        self.closed = true;
        self.drain()
    }

    /// The record of one agent.
    pub fn get(&self, guild: &str, agent_id: &str) -> Option<&AgentRecord<H>> {
        self.guilds.get(guild)?.get(agent_id)
    }

    /// The record of one agent, mutably.
    pub fn get_mut(&mut self, guild: &str, agent_id: &str) -> Option<&mut AgentRecord<H>> {
        self.guilds.get_mut(guild)?.get_mut(agent_id)
    }

    /// Adds an agent, replacing any dead record with the same id.
    pub fn insert(&mut self, guild: &str, spec: Arc<AgentSpec>, cell: Arc<AgentCell>, handle: H) {
        self.launched += 1;
        let record = AgentRecord {
            guild: guild.to_owned(),
            spec,
            cell,
            handle,
            pid: None,
            order: self.launched,
        };
        self.guilds
            .entry(guild.to_owned())
            .or_default()
            .insert(record.spec.id.clone(), record);
    }

    /// Removes one agent's record.
    pub fn remove(&mut self, guild: &str, agent_id: &str) -> Option<AgentRecord<H>> {
        let agents = self.guilds.get_mut(guild)?;
        let record = agents.remove(agent_id);
        if agents.is_empty() {
            self.guilds.remove(guild);
        }
        record
    }

    /// Removes the record of `agent_id` only if it is still the one whose live state is
    /// `cell`: how an engine takes back an agent whose start failed, unless it was
    /// stopped (and perhaps started again) meanwhile.
    pub fn remove_if_same(
        &mut self,
        guild: &str,
        agent_id: &str,
        cell: &Arc<AgentCell>,
    ) -> Option<AgentRecord<H>> {
        let same = self
            .get(guild, agent_id)
            .is_some_and(|record| Arc::ptr_eq(&record.cell, cell));
        if same {
            self.remove(guild, agent_id)
        } else {
            None
        }
    }

    /// Removes every record, in launch order.
    pub fn drain(&mut self) -> Vec<AgentRecord<H>> {
        let mut all: Vec<_> = self
            .guilds
            .drain()
            .flat_map(|(_, agents)| agents.into_values())
            .collect();
        all.sort_by_key(|record| record.order);
        all
    }

    /// Every record, in launch order.
    pub fn records(&self) -> Vec<&AgentRecord<H>> {
        let mut all: Vec<_> = self.guilds.values().flat_map(HashMap::values).collect();
        all.sort_by_key(|record| record.order);
        all
    }

    /// Every record, mutably, in launch order.
    pub fn records_mut(&mut self) -> Vec<&mut AgentRecord<H>> {
        let mut all: Vec<_> = self
            .guilds
            .values_mut()
            .flat_map(HashMap::values_mut)
            .collect();
        all.sort_by_key(|record| record.order);
        all
    }

    /// What is known about one agent.
    pub fn info(&self, guild: &str, agent_id: &str) -> Option<AgentInfo> {
        self.get(guild, agent_id).map(|r| self.describe(r))
    }

    /// The agents of a guild, in launch order.
    pub fn in_guild(&self, guild: &str) -> Vec<AgentInfo> {
        let Some(agents) = self.guilds.get(guild) else {
            return Vec::new();
        };
        let mut records: Vec<_> = agents.values().collect();
        records.sort_by_key(|record| record.order);
        records.into_iter().map(|r| self.describe(r)).collect()
    }

    /// Totals over every agent.
    pub fn stats(&self) -> EngineStats {
        let mut stats = EngineStats::default();
        for record in self.guilds.values().flat_map(HashMap::values) {
            let info = self.describe(record);
            match info.state {
                AgentState::Running => stats.running += 1,
                AgentState::Paused => stats.paused += 1,
                state if state.is_dead() => stats.dead += 1,
                _ => {}
            }
            stats.messages_in += info.messages_in;
            stats.messages_out += info.messages_out;
            stats.errors += info.errors;
            stats.queued += info.queued;
            stats.busy += usize::from(info.busy);
        }
        stats
    }

    /// Removes the agents that have ended, returning what was known of them.
    pub fn remove_dead(&mut self) -> Vec<AgentInfo> {
        let dead: Vec<(String, String)> = self
            .records()
            .into_iter()
            .filter(|r| r.cell.state().is_dead())
            .map(|r| (r.guild.clone(), r.spec.id.clone()))
            .collect();
        let removed: Vec<AgentRecord<H>> = dead
            .into_iter()
            .filter_map(|(guild, id)| self.remove(&guild, &id))
            .collect();
        removed.iter().map(|record| self.describe(record)).collect()
    }

    /// What is known about the agent in `record`.
    pub fn describe(&self, record: &AgentRecord<H>) -> AgentInfo {
        let cell = &record.cell;
        let (state, exit) = cell.status().clone();
        AgentInfo {
            guild: record.guild.clone(),
            id: record.spec.id.clone(),
            name: record.spec.name.clone(),
            agent_type: record.spec.agent_type.clone(),
            engine: self.engine.clone(),
            state,
            exit,
            pid: record.pid,
            node: None,
            memory_bytes: None,
            cpu_time: None,
            messages_in: cell.messages_in.load(Ordering::Relaxed),
            messages_out: cell.messages_out.load(Ordering::Relaxed),
            errors: cell.errors.load(Ordering::Relaxed),
            queued: cell.queued.load(Ordering::Relaxed),
            // A paused agent may hold deliveries (pushed to its process) but runs none.
            busy: cell.busy.load(Ordering::Relaxed) && state != AgentState::Paused,
            timings: cell.timings.snapshot(),
        }
    }
}
