//! The engine's hold on one agent process: its connection (control frames and the
//! broker's messaging frames on one socket), the thread that reads it and notices the
//! process's end at once, and the thread that forwards its standard error.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::process::{Child, ChildStderr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use engine_core::{
    AgentCell, AgentState, EventHub, LifecycleEvent, LifecycleKind, ResourceLimits, Result,
};
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;

use crate::NAME;
use crate::broker::{Out, Session};
use crate::error::{AGENT_PROCESS, ProcessError};
use crate::exit::{Last, classify};
use crate::lease::Lease;
use crate::protocol::{FrameError, FrameReader, ToChild, ToParent};

/// How long a process whose connection ended gets to exit on its own.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// Lines of an agent process's standard error kept for error reports.
const KEPT_LINES: usize = 8;

/// What an allocation failure looks like on standard error (Rust's own words).
const ALLOCATION_FAILED: &str = "memory allocation of ";

/// The engine's hold on one agent process.
#[derive(Debug)]
pub(crate) struct Link {
    pid: u32,
    out: Sender<Out>,
    stop_requested: AtomicBool,
    /// Told when the agent says it has paused; dropped when its connection ends.
    paused: Mutex<Option<Sender<()>>>,
    /// Set once the process is reaped; its pid may then belong to another process.
    reaped: Mutex<bool>,
    last_lines: Mutex<VecDeque<String>>,
    allocation_failure: Mutex<Option<String>>,
    /// Why the engine killed the process on purpose (`kill_agent`), if it did.
    kill_reason: Mutex<Option<String>>,
}

impl Link {
    /// A link to process `pid`, whose connection's writer takes frames from `out`.
    pub(crate) fn new(pid: u32, out: Sender<Out>) -> Self {
        Self {
            pid,
            out,
            stop_requested: AtomicBool::new(false),
            paused: Mutex::new(None),
            reaped: Mutex::new(false),
            last_lines: Mutex::new(VecDeque::new()),
            allocation_failure: Mutex::new(None),
            kill_reason: Mutex::new(None),
        }
    }

    /// Kills the process at once, saying why in how its end is reported.
    pub(crate) fn kill(&self, reason: &str) {
        lock(&self.kill_reason).get_or_insert_with(|| reason.to_owned());
        self.signal(Signal::SIGKILL);
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Asks the agent to stop after its current message.
    pub(crate) fn request_stop(&self) {
        self.stop_requested.store(true, Ordering::Release);
        // Queued, never waited for: the agent may not be reading.
        if self.out.send(Out::Frame(ToChild::Stop)).is_err() {
            tracing::debug!(
                pid = self.pid,
                "the stop request did not reach the agent process"
            );
        }
    }

    /// Asks the agent to pause between messages; the returned channel is told once it
    /// has, and ends without a word if its connection ends first.
    pub(crate) fn request_pause(&self) -> crossbeam_channel::Receiver<()> {
        let (paused, answer) = crossbeam_channel::bounded(1);
        *lock(&self.paused) = Some(paused);
        let _ = self.out.send(Out::Frame(ToChild::Pause));
        answer
    }

    /// Asks a paused agent to carry on.
    pub(crate) fn request_resume(&self) {
        let _ = self.out.send(Out::Frame(ToChild::Resume));
    }

    /// Sends `signal` to the agent's process group, unless the process is reaped.
    pub(crate) fn signal(&self, signal: Signal) {
        let reaped = lock(&self.reaped);
        if !*reaped {
            let _ = killpg(Pid::from_raw(self.pid as i32), signal);
        }
    }

    /// The last lines the process wrote to standard error.
    pub(crate) fn last_words(&self) -> String {
        let lines = lock(&self.last_lines);
        lines.iter().cloned().collect::<Vec<_>>().join(" | ")
    }

    /// Forwards the process's standard error to ours, one line at a time, each marked
    /// with the agent's id; keeps the last lines and notes an allocation failure.
    pub(crate) fn forward_stderr(&self, agent_id: &str, stderr: ChildStderr) {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            eprintln!("[agent {agent_id}] {line}");
            if line.contains(ALLOCATION_FAILED) {
                *lock(&self.allocation_failure) = Some(line.clone());
            }
            let mut lines = lock(&self.last_lines);
            if lines.len() == KEPT_LINES {
                lines.pop_front();
            }
            lines.push_back(line);
        }
    }
}

/// Everything the watcher of one agent process needs.
pub(crate) struct Watch {
    /// The link.
    pub link: Arc<Link>,
    /// The process.
    pub child: Child,
    /// The read side of its connection.
    pub reader: FrameReader<UnixStream>,
    /// Its broker session.
    pub session: Arc<Session>,
    /// Its live state.
    pub cell: Arc<AgentCell>,
    /// Where lifecycle events go.
    pub events: Arc<EventHub>,
    /// The guild.
    pub guild: String,
    /// The agent.
    pub agent_id: String,
    /// Its caps, to tell a limit from a crash.
    pub limits: ResourceLimits,
    /// Told once, whether the agent became ready.
    pub ready: Sender<Result<()>>,
    /// Ends (dropped) when the standard-error forwarder is done.
    pub stderr_done: crossbeam_channel::Receiver<()>,
    /// The process's generator id, given back when the watch ends (after the reap).
    pub lease: Lease,
}

impl Watch {
    /// Reads the agent process's frames until its connection ends, then reaps it and
    /// reports how it ended. Runs on a thread of its own.
    pub(crate) fn run(mut self) {
        let mut ready = Some(self.ready.clone());
        let mut last = Last::default();
        let broken = loop {
            match self.reader.read::<ToParent>() {
                Ok(Some(ToParent::Ready)) => match ready.take() {
                    Some(ready) => {
                        self.cell.set_state(AgentState::Running, None);
                        self.emit(LifecycleKind::Started);
                        let _ = ready.send(Ok(()));
                    }
                    None => break Some("reported ready twice".to_owned()),
                },
                Ok(Some(ToParent::LaunchFailed(error))) => {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Err(error.into_error(AGENT_PROCESS)));
                    }
                }
                Ok(Some(ToParent::Stopped { stop_error })) => {
                    if let Some(error) = stop_error {
                        tracing::warn!(agent = %self.agent_id, %error, "the agent's stop hook failed");
                    }
                }
                Ok(Some(ToParent::Ended(ending))) => last.ending = Some(ending),
                Ok(Some(ToParent::Lifecycle(kind))) => self.emit(kind),
                Ok(Some(ToParent::Timings(timings))) => self.cell.timings().set(&timings),
                Ok(Some(ToParent::Paused)) => {
                    self.cell.set_state(AgentState::Paused, None);
                    if let Some(paused) = lock(&self.link.paused).take() {
                        let _ = paused.send(());
                    }
                }
                Ok(Some(frame)) => {
                    if let Err(error) = self.session.handle(frame) {
                        break Some(error.to_string());
                    }
                }
                Ok(None) => break None,
                // A connection cut mid-frame or reset is how a killed process looks
                // from here: its end is classified from its exit status, below.
                Err(FrameError::Io(_) | FrameError::Truncated) => break None,
                Err(error) => break Some(error.to_string()),
            }
        };
        self.session.close();
        // Whoever waits for a pause hears that none will come.
        lock(&self.link.paused).take();
        if let Some(error) = &broken {
            tracing::error!(
                agent = %self.agent_id,
                pid = self.link.pid,
                %error,
                "closing an agent process's connection: it broke the protocol"
            );
            self.link.signal(Signal::SIGKILL);
        }
        let status = self.reap();
        // Its last words, such as an allocation failure, arrive on standard error.
        let _ = self.stderr_done.recv_timeout(EXIT_GRACE);
        last.stop_requested = self.link.stop_requested.load(Ordering::Acquire);
        last.allocation_failure = lock(&self.link.allocation_failure).clone();
        let (state, mut exit, mut kind) = classify(status, &last, &self.limits);
        if let Some(why) = lock(&self.link.kill_reason).clone()
            && let LifecycleKind::Crashed { reason } = &mut kind
        {
            *reason = format!("killed: {why} ({reason})");
            exit.reason.clone_from(reason);
        }
        if let Some(ready) = ready.take() {
            let mut reason = format!("the agent process {} before it was ready", exit.reason);
            let words = self.link.last_words();
            if !words.is_empty() {
                reason.push_str(&format!("; it wrote: {words}"));
            }
            if exit.code != Some(crate::host::exit_code::LAUNCH_FAILED) {
                reason.push_str(
                    "; does the program call engine_process::run_if_agent_host at the top of main?",
                );
            }
            let _ = ready.send(Err(ProcessError::EndedEarly { reason }.into()));
            self.cell.set_state(state, Some(exit));
            return;
        }
        tracing::debug!(agent = %self.agent_id, generator = self.lease.id(), reason = %exit.reason, "agent process ended");
        self.cell.set_state(state, Some(exit.clone()));
        self.emit_ended(kind, Some(exit));
    }

    /// Waits for the process to end (killing it if it lingers with its connection
    /// closed) and reaps it, marking the link reaped in the same step.
    fn reap(&mut self) -> std::process::ExitStatus {
        let pid = || Id::Pid(Pid::from_raw(self.link.pid as i32));
        let deadline = Instant::now() + EXIT_GRACE;
        // The connection closes as the process exits, a moment before it can be
        // reaped: look again soon, then less and less often.
        let mut pause = Duration::from_micros(50);
        loop {
            let peek = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG;
            match waitid(pid(), peek) {
                Ok(nix::sys::wait::WaitStatus::StillAlive) if Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(5));
                }
                Ok(nix::sys::wait::WaitStatus::StillAlive) => {
                    tracing::warn!(agent = %self.agent_id, "the agent process closed its connection but lives on; killing it");
                    self.link.signal(Signal::SIGKILL);
                    let _ = waitid(pid(), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT);
                    break;
                }
                _ => break,
            }
        }
        let mut reaped = lock(&self.link.reaped);
        let status = self.child.wait();
        *reaped = true;
        drop(reaped);
        status.unwrap_or_else(|error| {
            tracing::error!(agent = %self.agent_id, %error, "cannot reap the agent process");
            std::os::unix::process::ExitStatusExt::from_raw(0)
        })
    }

    fn emit(&self, kind: LifecycleKind) {
        self.emit_ended(kind, None);
    }

    /// Emits `kind`, with how the process ended when it did.
    fn emit_ended(&self, kind: LifecycleKind, exit: Option<engine_core::ExitStatus>) {
        self.events.emit(LifecycleEvent {
            exit,
            ..LifecycleEvent::new(&self.guild, &self.agent_id, NAME, kind)
        });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
