//! Agent-host mode: what an agent process runs. The engine re-executes its own program
//! with [`HOST_VARIABLE`] set and the connection to the parent on standard input;
//! [`run_if_agent_host`], called at the top of `main`, notices and never returns.
//!
//! In order, before any agent code runs: ask to be killed when the parent dies and
//! check the parent is still the one that spawned us (the race the death signal
//! leaves), take the connection off standard input, read the launch frame, leave the
//! network namespace if asked, and apply the spec's limits. Then build, subscribe and
//! start the agent, report ready (or the error, in the agent process's own words), and
//! hand it messages until told to stop.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine_core::{
    AgentCell, AgentHost, AgentRegistry, AgentSpec, Error, GuildContext, IdGenerator,
    LifecycleKind, NoNotify, Notify, ResourceLimits, Result, Step, Timers,
};
use nix::sys::resource::{Resource, setrlimit};

use crate::client::{BrokerClient, Next};
use crate::error::{HOST, ProcessError};
use crate::protocol::{FrameReader, Launch, ToChild, ToParent, WireError};

/// Set in an agent process's environment: it is to host an agent.
pub const HOST_VARIABLE: &str = "GUILD_AGENT_HOST";

/// Set in an agent process's environment: the pid of the engine's process.
pub const PARENT_VARIABLE: &str = "GUILD_AGENT_PARENT";

/// How an agent process exits.
pub mod exit_code {
    /// Stopped on request.
    pub const STOPPED: i32 = 0;
    /// The agent could not be launched (it reported why).
    pub const LAUNCH_FAILED: i32 = 3;
    /// A handler panicked (it reported why).
    pub const CRASHED: i32 = 70;
    /// The connection to the engine broke.
    pub const DISCONNECTED: i32 = 71;
    /// The engine was gone before the agent started.
    pub const ORPHANED: i32 = 72;
}

/// Makes this program an agent host: when the process engine started it to run an
/// agent, runs that agent, built through the registry `registry` returns, and exits;
/// otherwise returns at once and does nothing.
///
/// Call it first thing in `main` (after setting up logging, if the agents' logs should
/// be kept), before parsing arguments or starting anything else:
///
/// ```no_run
/// fn main() {
///     engine_process::run_if_agent_host(my_registry);
///     // ... the program as usual; it may now use the process engine.
/// }
/// # fn my_registry() -> engine_core::AgentRegistry { engine_core::AgentRegistry::new() }
/// ```
pub fn run_if_agent_host(registry: impl FnOnce() -> AgentRegistry) {
    if let Some(code) = serve_if_agent_host(registry) {
        std::process::exit(code);
    }
}

/// As [`run_if_agent_host`], but hands back the code the process is to exit with
/// instead of exiting, so the program can finish what must outlive the agent (flush
/// its exported traces, say) first. `None` when this process is no agent host.
pub fn serve_if_agent_host(registry: impl FnOnce() -> AgentRegistry) -> Option<i32> {
    if !is_agent_host() {
        return None;
    }
    Some(match host(registry) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("guild agent host: {error}");
            exit_code::LAUNCH_FAILED
        }
    })
}

/// Whether this process is an agent host (the process engine started it to run an agent).
pub fn is_agent_host() -> bool {
    std::env::var_os(HOST_VARIABLE).is_some()
}

fn host(registry: impl FnOnce() -> AgentRegistry) -> Result<i32> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| os_error("cannot ask to die with the engine", e))?;
    let parent: Option<u32> = std::env::var(PARENT_VARIABLE)
        .ok()
        .and_then(|v| v.parse().ok());
    let actual = nix::unistd::getppid().as_raw() as u32;
    if parent != Some(actual) {
        eprintln!("guild agent host: the engine that started this agent is gone");
        return Ok(exit_code::ORPHANED);
    }

    let stream = take_connection()?;
    let mut reader = FrameReader::new(stream.try_clone().map_err(io_error)?);
    let launch = match reader.read::<ToChild>() {
        Ok(Some(ToChild::Launch(launch))) => launch,
        Ok(other) => {
            return Err(ProcessError::NoLaunch {
                got: format!("{other:?}"),
            }
            .into());
        }
        Err(error) => return Err(error.into_error(HOST)),
    };

    let client = BrokerClient::new(stream, reader, launch.messaging.clone());
    let (guild, spec, runtime) = match prepare(&launch, &client, registry) {
        Ok(prepared) => prepared,
        Err(error) => return report_launch_failure(&client, &error),
    };
    let _runtime = runtime.enter();

    // This thread reads the connection itself whenever it waits for work.
    let notify: Arc<dyn Notify> = Arc::new(NoNotify);
    // What the host reports (a circuit breaker's changes) goes to the engine between
    // messages.
    let reported: Reported = Arc::default();
    let reporter = reported.clone();
    let cell = AgentCell::reporting(Box::new(move |kind| {
        reporter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(kind);
    }))
    .on_engine(crate::NAME);
    let cell = Arc::new(cell);
    let timings = guild.timing.then(|| TimingReport::new(cell.clone()));
    let host = match AgentHost::start(&guild, spec, cell, notify) {
        Ok(host) => host,
        Err(error) => return report_launch_failure(&client, &error),
    };
    client.send_now(&ToParent::Ready)?;
    Ok(serve(host, &client, &reported, timings))
}

/// How often, at most, an agent process busy with messages reports its timings.
const TIMINGS_EVERY: Duration = Duration::from_millis(100);

/// Sends the engine the agent's timings: while busy, now and then; when idle or ending,
/// whatever is new.
struct TimingReport {
    cell: Arc<AgentCell>,
    sent_at: Instant,
    sent_count: u64,
}

impl TimingReport {
    fn new(cell: Arc<AgentCell>) -> Self {
        Self {
            cell,
            sent_at: Instant::now(),
            sent_count: 0,
        }
    }

    fn send(&mut self, client: &BrokerClient, now: bool) -> Result<()> {
        if !now && self.sent_at.elapsed() < TIMINGS_EVERY {
            return Ok(());
        }
        let timings = self.cell.timings().snapshot();
        let count = timings.handling.count();
        if count == self.sent_count {
            return Ok(());
        }
        self.sent_count = count;
        self.sent_at = Instant::now();
        client.send_now(&ToParent::Timings(timings))
    }
}

/// Reads the spec, applies isolation and limits, and builds the agent's guild context.
fn prepare(
    launch: &Launch,
    client: &BrokerClient,
    registry: impl FnOnce() -> AgentRegistry,
) -> Result<(GuildContext, Arc<AgentSpec>, tokio::runtime::Runtime)> {
    let spec: AgentSpec = serde_json::from_str(&launch.spec_json).map_err(ProcessError::BadSpec)?;
    if launch.isolate_network {
        // Before any thread starts: a namespace is left by the calling thread alone.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| os_error("cannot enter a network namespace of its own", e))?;
    }
    apply_limits(&spec.limits)?;
    // Handlers may await tokio IO and timers; one worker drives them.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("guild-io")
        .enable_all()
        .build()
        .map_err(io_error)?;
    let guild = GuildContext {
        namespace: launch.namespace.as_str().into(),
        messaging: Arc::new(client.clone()),
        registry: Arc::new(registry()),
        resources: Arc::default(),
        ids: IdGenerator::init_process(launch.generator_id)?,
        // The agent's timers run in its own process, on real time.
        timers: Timers::real(),
        timing: launch.timing,
    };
    Ok((guild, Arc::new(spec), runtime))
}

/// Sets the spec's caps as soft and hard limits, so the agent cannot lift them. The
/// CPU-time hard limit is one second above the cap: at the cap the agent gets
/// `SIGXCPU`, which names the reason, and a second later `SIGKILL` if it caught that.
fn apply_limits(limits: &ResourceLimits) -> Result<()> {
    let caps = [
        (Resource::RLIMIT_AS, limits.memory_bytes, 0, "memory"),
        (Resource::RLIMIT_CPU, limits.cpu_seconds, 1, "CPU-time"),
        (Resource::RLIMIT_NOFILE, limits.open_files, 0, "open-files"),
    ];
    for (resource, cap, headroom, what) in caps {
        if let Some(cap) = cap {
            setrlimit(resource, cap, cap.saturating_add(headroom))
                .map_err(|e| os_error(&format!("cannot set the {what} cap to {cap}"), e))?;
        }
    }
    Ok(())
}

/// Lifecycle changes the agent's host reported, not yet sent to the engine.
type Reported = Arc<std::sync::Mutex<Vec<LifecycleKind>>>;

/// Sends what the host reported to the engine.
fn send_reported(reported: &Reported, client: &BrokerClient) -> Result<()> {
    let kinds = std::mem::take(
        &mut *reported
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    kinds
        .into_iter()
        .try_for_each(|kind| client.send_now(&ToParent::Lifecycle(kind)))
}

/// Why an agent process's loop ended.
enum Ending {
    Stop,
    Ended(engine_core::Ending),
    Disconnected(String),
}

/// Handles messages until told to stop, the agent crashes, or the engine goes away;
/// returns the exit code.
fn serve(
    mut host: AgentHost,
    client: &BrokerClient,
    reported: &Reported,
    mut timings: Option<TimingReport>,
) -> i32 {
    let ending = loop {
        if let Err(error) = send_reported(reported, client) {
            break Ending::Disconnected(error.to_string());
        }
        if let Some(timings) = &mut timings
            && let Err(error) = timings.send(client, false)
        {
            break Ending::Disconnected(error.to_string());
        }
        if client.pause_requested() {
            if let Err(error) = client.send_now(&ToParent::Paused) {
                break Ending::Disconnected(error.to_string());
            }
            match client.wait_while_paused() {
                Next::Work => continue,
                Next::Stop => break Ending::Stop,
                Next::Disconnected(why) => break Ending::Disconnected(why),
            }
        }
        match host.step() {
            Ok(Step::Handled) => {
                if client.stop_requested() {
                    break match client.wait_for_work() {
                        Next::Disconnected(why) => Ending::Disconnected(why),
                        _ => Ending::Stop,
                    };
                }
            }
            Ok(Step::Idle) => {
                // Before waiting, the engine learns what the last messages took.
                if let Some(timings) = &mut timings
                    && let Err(error) = timings.send(client, true)
                {
                    break Ending::Disconnected(error.to_string());
                }
                match client.wait_for_work() {
                    Next::Work => {}
                    Next::Stop => break Ending::Stop,
                    Next::Disconnected(why) => break Ending::Disconnected(why),
                }
            }
            Ok(Step::Ended(ending)) => break Ending::Ended(ending),
            Err(error) => break Ending::Ended(format!("delivery failed: {error}").into()),
        }
    };
    if let Some(timings) = &mut timings {
        let _ = timings.send(client, true);
    }
    match ending {
        Ending::Stop => {
            let stop_error = host.stop().err().map(|e| e.to_string());
            let _ = client.send_now(&ToParent::Stopped { stop_error });
            exit_code::STOPPED
        }
        Ending::Ended(ending) => {
            host.end(&ending);
            let code = match ending {
                engine_core::Ending::Exited(_) => exit_code::STOPPED,
                _ => exit_code::CRASHED,
            };
            let _ = client.send_now(&ToParent::Ended(ending));
            code
        }
        Ending::Disconnected(why) => {
            eprintln!("guild agent host: {why}; exiting");
            exit_code::DISCONNECTED
        }
    }
}

fn report_launch_failure(client: &BrokerClient, error: &Error) -> Result<i32> {
    client.send_now(&ToParent::LaunchFailed(WireError::from(error)))?;
    Ok(exit_code::LAUNCH_FAILED)
}

/// Takes the connection the engine put on standard input, leaving `/dev/null` there.
fn take_connection() -> Result<UnixStream> {
    let connection = io::stdin().as_fd().try_clone_to_owned().map_err(io_error)?;
    let null = File::open("/dev/null").map_err(io_error)?;
    nix::unistd::dup2_stdin(&null).map_err(|e| os_error("cannot redirect standard input", e))?;
    Ok(UnixStream::from(connection))
}

fn io_error(error: io::Error) -> Error {
    ProcessError::HostIo(error).into()
}

fn os_error(what: &str, errno: nix::errno::Errno) -> Error {
    ProcessError::Os {
        what: what.to_owned(),
        source: errno,
    }
    .into()
}
