//! # engine-process
//!
//! Runs every agent in an OS process of its own, for isolation and limits: a crashing,
//! leaking or hostile agent cannot take others down, and each agent's memory, CPU time
//! and open files can be capped.
//!
//! An agent process is the engine's own program started again (spawn, not fork) with
//! [`HOST_VARIABLE`] set; [`run_if_agent_host`], called at the top of `main`, makes it
//! build the agent from its spec through the registry and serve it. The two processes
//! talk over a private Unix socket pair, in versioned, length-prefixed frames:
//! control (launch, ready, stop, crash) and messaging, which the parent serves from the
//! guild's own backend through the embedded broker, so agents in different processes
//! share the in-memory bus with its whole delivery contract and no external service.
//!
//! Hygiene: each agent process dies when the engine's process dies (a parent-death
//! signal, checked against the race at start), runs in its own process group, and is
//! stopped by a stop request, then `SIGTERM`, then `SIGKILL`, each after a grace
//! period. Its end is noticed at once (its connection closes) and reported as stopped,
//! exited, crashed (with the panic text, exit code or signal) or killed by a limit.

mod broker;
mod client;
mod error;
mod exit;
mod host;
mod lease;
mod link;
mod procfs;
mod protocol;
mod spawn;

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use engine_core::{
    Admission, AgentCell, AgentInfo, AgentSpec, AgentTable, EngineCapabilities, EngineStats, Error,
    EventHub, EventReceiver, ExecutionEngine, GuildContext, Result,
};
use nix::sys::signal::Signal;

pub use exit::signal_name;
pub use host::{
    HOST_VARIABLE, PARENT_VARIABLE, exit_code, is_agent_host, run_if_agent_host,
    serve_if_agent_host,
};
pub use procfs::{Usage, usage};

use broker::Session;
use error::ProcessError;
use lease::Lease;
use link::{Link, Watch};
use protocol::{FrameReader, FrameWriter, Launch, ToChild};
use spawn::Spawner;

/// The engine's name.
pub const NAME: &str = "process";

/// Settings of a [`ProcessEngine`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessConfig {
    /// The program agent processes run; this process's own executable when `None`.
    pub program: Option<PathBuf>,
    /// Arguments for the program (it sees [`HOST_VARIABLE`] before it reads them).
    pub args: Vec<OsString>,
    /// How many agent processes may run at once.
    pub max_processes: usize,
    /// How long an agent process may take to report ready.
    pub ready_timeout: Duration,
    /// How long a stop request is given before `SIGTERM`.
    pub stop_grace: Duration,
    /// How long `SIGTERM` is given before `SIGKILL`.
    pub term_grace: Duration,
    /// Run each agent in a network namespace of its own (no network at all). Needs
    /// root; without it, starting an agent fails rather than run it unisolated.
    pub isolate_network: bool,
    /// Variables set in every agent process's environment, beside what it inherits
    /// (where to export traces, say).
    pub env: Vec<(OsString, OsString)>,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            program: None,
            args: Vec::new(),
            max_processes: 1024,
            ready_timeout: Duration::from_secs(30),
            stop_grace: Duration::from_secs(5),
            term_grace: Duration::from_secs(2),
            isolate_network: false,
            env: Vec::new(),
        }
    }
}

/// Runs every agent in an OS process of its own; see the crate docs.
#[derive(Debug)]
pub struct ProcessEngine {
    config: ProcessConfig,
    inner: Mutex<Inner>,
    events: Arc<EventHub>,
    spawner: Spawner,
}

#[derive(Debug)]
struct Inner {
    table: AgentTable<AgentProcess>,
}

/// The engine's handle on one agent process.
#[derive(Debug)]
struct AgentProcess {
    link: Arc<Link>,
    /// The live state its watcher and broker session update.
    cell: Arc<AgentCell>,
    /// Disconnects when the watcher has reaped the process and reported its end.
    ended: Receiver<()>,
    threads: Vec<JoinHandle<()>>,
}

impl Default for ProcessEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessEngine {
    /// An engine with the default settings.
    pub fn new() -> Self {
        Self::with_config(ProcessConfig::default())
    }

    /// An engine with the given settings.
    pub fn with_config(config: ProcessConfig) -> Self {
        Self {
            config,
            inner: Mutex::new(Inner {
                table: AgentTable::new(NAME),
            }),
            events: Arc::new(EventHub::new()),
            spawner: Spawner::start(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Refuses what cannot be started, before anything is spawned.
    fn check_launch(&self, inner: &Inner, spec: &AgentSpec) -> Result<()> {
        if is_agent_host() {
            return Err(ProcessError::HostingElsewhere.into());
        }
        let live = inner
            .table
            .records()
            .iter()
            .filter(|record| !record.cell.state().is_dead())
            .count();
        if live >= self.config.max_processes {
            return Err(ProcessError::ProcessCap {
                agent: spec.id.clone(),
                cap: self.config.max_processes,
            }
            .into());
        }
        if self.config.isolate_network && !nix::unistd::Uid::effective().is_root() {
            return Err(ProcessError::NeedsRoot {
                agent: spec.id.clone(),
                uid: nix::unistd::Uid::effective().as_raw(),
            }
            .into());
        }
        Ok(())
    }

    /// Starts the agent process and its threads; its readiness (or why it will never
    /// be ready) arrives on the returned channel.
    fn launch(
        &self,
        guild: &GuildContext,
        spec: Arc<AgentSpec>,
    ) -> Result<(AgentProcess, Receiver<Result<()>>)> {
        let io = |what: &'static str, e: std::io::Error| {
            Error::from(ProcessError::AgentIo {
                agent: spec.id.clone(),
                what,
                source: e,
            })
        };
        let (ours, theirs) = UnixStream::pair().map_err(|e| io("cannot make a socket pair", e))?;
        // Each agent process mints message ids under a generator id of its own, held
        // until it is reaped.
        let lease = Lease::take(guild.ids.generator_id())?;
        let mut command = spawn::command(&self.config)?;
        command.stdin(Stdio::from(OwnedFd::from(theirs)));
        let mut child = self
            .spawner
            .spawn(command)
            .map_err(|e| io("cannot start the agent process", e))?;
        let pid = child.id();
        let (out, outgoing) = crossbeam_channel::unbounded();
        let link = Arc::new(Link::new(pid, out.clone()));
        let mut writer = FrameWriter::new(
            ours.try_clone()
                .map_err(|e| io("cannot share the socket", e))?,
        );
        let launch = ToChild::Launch(Launch {
            namespace: guild.namespace.to_string(),
            spec_json: serde_json::to_string(&*spec).map_err(ProcessError::EncodeSpec)?,
            isolate_network: self.config.isolate_network,
            generator_id: lease.id(),
            messaging: guild.messaging.name().to_owned(),
            timing: guild.timing,
        });
        if let Err(error) = writer.send_now(&launch) {
            link.signal(Signal::SIGKILL);
            let _ = child.wait();
            return Err(error.into_error(NAME));
        }

        let cell = Arc::new(AgentCell::default());
        let session = Session::new(
            guild.messaging.clone(),
            &guild.namespace,
            &spec.id,
            cell.clone(),
            out,
        );
        let (ready_tx, ready) = crossbeam_channel::bounded(1);
        let (ended_tx, ended) = crossbeam_channel::bounded::<()>(0);
        let (stderr_tx, stderr_done) = crossbeam_channel::bounded::<()>(0);
        let mut threads = Vec::with_capacity(3);
        let stderr = child.stderr.take();
        let watch = Watch {
            link: link.clone(),
            child,
            reader: FrameReader::new(ours),
            session: session.clone(),
            cell: cell.clone(),
            events: self.events.clone(),
            guild: guild.namespace.to_string(),
            agent_id: spec.id.clone(),
            limits: spec.limits,
            ready: ready_tx,
            stderr_done,
            lease,
        };
        threads.push(thread(&spec.id, "write", move || {
            session.pump(writer, &outgoing)
        })?);
        if let Some(stderr) = stderr {
            let (link, id) = (link.clone(), spec.id.clone());
            threads.push(thread(&spec.id, "stderr", move || {
                link.forward_stderr(&id, stderr);
                drop(stderr_tx);
            })?);
        }
        threads.push(thread(&spec.id, "watch", move || {
            watch.run();
            drop(ended_tx);
        })?);
        let process = AgentProcess {
            link,
            cell,
            ended,
            threads,
        };
        Ok((process, ready))
    }

    /// Waits for a launched agent process to report ready; on failure, says whether
    /// it must be killed (it did not answer in time) as well as stopped.
    fn await_ready(
        &self,
        agent_id: &str,
        ready: &Receiver<Result<()>>,
    ) -> std::result::Result<(), (Error, bool)> {
        match ready.recv_timeout(self.config.ready_timeout) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err((error, false)),
            Err(RecvTimeoutError::Timeout) => Err((
                ProcessError::NotReady {
                    agent: agent_id.to_owned(),
                    timeout: self.config.ready_timeout,
                }
                .into(),
                true,
            )),
            Err(RecvTimeoutError::Disconnected) => Err((
                ProcessError::WatcherSilent {
                    agent: agent_id.to_owned(),
                }
                .into(),
                false,
            )),
        }
    }

    /// Stops an agent process: a stop request, then `SIGTERM`, then `SIGKILL`, each
    /// after its grace period; returns once it is reaped and its threads are joined.
    fn finish(&self, process: AgentProcess) {
        let grace = [
            (self.config.stop_grace, Signal::SIGTERM),
            (self.config.term_grace, Signal::SIGKILL),
        ];
        for (wait, signal) in grace {
            match process.ended.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => {
                    tracing::warn!(pid = process.link.pid(), signal = %signal, "the agent process did not stop in time");
                    process.link.signal(signal);
                }
                _ => break,
            }
        }
        let _ = process.ended.recv();
        for thread in process.threads {
            let _ = thread.join();
        }
    }

    /// `info` with the agent process's resident memory and CPU time filled in.
    fn with_usage(mut info: AgentInfo) -> AgentInfo {
        if !info.state.is_dead()
            && let Some(usage) = info.pid.and_then(usage)
        {
            info.memory_bytes = Some(usage.resident_bytes);
            info.cpu_time = Some(usage.cpu_time);
        }
        info
    }
}

fn thread(
    agent: &str,
    role: &'static str,
    run: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("{role}:{agent}"))
        .stack_size(256 * 1024)
        .spawn(run)
        .map_err(|e| {
            ProcessError::Thread {
                agent: agent.to_owned(),
                role,
                source: e,
            }
            .into()
        })
}

impl ExecutionEngine for ProcessEngine {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> EngineCapabilities {
        let mut capabilities = EngineCapabilities::default();
        capabilities.parallel = true;
        capabilities.isolated = true;
        capabilities.enforces_limits = true;
        capabilities.pause = true;
        capabilities.kill = true;
        capabilities
    }

    fn run_agent(&self, guild: &GuildContext, spec: AgentSpec) -> Result<()> {
        let mut inner = self.lock();
        match inner.table.admit(&guild.namespace, &spec.id)? {
            Admission::Running => return Ok(()),
            Admission::Start(Some(ended)) => self.finish(ended.handle),
            Admission::Start(None) => {}
        }
        self.check_launch(&inner, &spec)?;
        spec.refuse_settings_of_other_engines(NAME)?;
        let spec = Arc::new(spec);
        let (process, ready) = self.launch(guild, spec.clone())?;
        let pid = process.link.pid();
        let cell = process.cell.clone();
        // Recorded as starting, and the table let go of while the agent starts: its
        // start hook may take long, and other agents may be started, stopped and
        // queried meanwhile. Stopping it now stops it right after its start.
        inner
            .table
            .insert(&guild.namespace, spec.clone(), cell.clone(), process);
        if let Some(record) = inner.table.get_mut(&guild.namespace, &spec.id) {
            record.pid = Some(pid);
        }
        drop(inner);
        let Err((error, kill)) = self.await_ready(&spec.id, &ready) else {
            return Ok(());
        };
        let ours = self
            .lock()
            .table
            .remove_if_same(&guild.namespace, &spec.id, &cell);
        if let Some(record) = ours {
            if kill {
                record.handle.link.signal(Signal::SIGKILL);
            }
            self.finish(record.handle);
        }
        Err(error)
    }

    fn stop_agent(&self, guild: &str, agent_id: &str) -> Result<()> {
        let Some(record) = self.lock().table.remove(guild, agent_id) else {
            return Ok(());
        };
        record.handle.link.request_stop();
        self.finish(record.handle);
        Ok(())
    }

    fn kill_agent(&self, guild: &str, agent_id: &str, reason: &str) -> Result<()> {
        let inner = self.lock();
        let Some(record) = inner.table.get(guild, agent_id) else {
            return Err(ProcessError::NoSuchAgent {
                agent: agent_id.to_owned(),
            }
            .into());
        };
        tracing::warn!(
            agent = agent_id,
            pid = record.handle.link.pid(),
            "killing the agent process: {reason}"
        );
        record.handle.link.kill(reason);
        Ok(())
    }

    fn pause_agent(&self, guild: &str, agent_id: &str) -> Result<()> {
        let Some(link) = self
            .lock()
            .table
            .to_pause(guild, agent_id)?
            .map(|record| record.handle.link.clone())
        else {
            return Ok(());
        };
        // The table is let go of while the agent finishes its handler.
        if link.request_pause().recv().is_ok() {
            return Ok(());
        }
        // Its connection ended (it crashed or was stopped) before it paused.
        self.lock().table.check_pausable(guild, agent_id)
    }

    fn resume_agent(&self, guild: &str, agent_id: &str) -> Result<()> {
        if let Some(record) = self.lock().table.resume(guild, agent_id)? {
            record.handle.link.request_resume();
        }
        Ok(())
    }

    fn agents_in_guild(&self, guild: &str) -> Vec<AgentInfo> {
        let infos = self.lock().table.in_guild(guild);
        infos.into_iter().map(Self::with_usage).collect()
    }

    fn agent_info(&self, guild: &str, agent_id: &str) -> Option<AgentInfo> {
        let info = self.lock().table.info(guild, agent_id);
        info.map(Self::with_usage)
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
            record.handle.link.request_stop();
        }
        for record in records {
            self.finish(record.handle);
        }
        Ok(())
    }

    fn events(&self) -> EventReceiver {
        self.events.subscribe()
    }
}

impl Drop for ProcessEngine {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
