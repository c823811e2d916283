//! `guild run`: launch every agent, send the spec's inputs, follow the guild until the
//! spec says the run is complete, then stop everything and print a summary.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use guild::telemetry::MetricsPush;
use guild::{
    AgentExitPolicy, DeadLetter, ERROR_TOPIC, GuildBuilder, LifecycleKind, LoadedSpec, Message,
    Payload, builtin,
};

use crate::report;

/// Command-line choices that override the spec.
pub(crate) struct RunOptions {
    pub engine: Option<String>,
    pub messaging: Option<String>,
    pub quiet: bool,
    /// Where to serve metrics, if anywhere.
    pub metrics: Option<String>,
    /// Where to push metrics over OTLP, if anywhere.
    pub push: Option<String>,
}

/// The client id under which the command follows the guild.
const OBSERVER: &str = "guild-cli";

/// The longest the loop waits for a message before it looks at the guild again (for
/// a signal, a dead agent, quiet, the deadline). Messages wake it at once.
const TICK: Duration = Duration::from_millis(20);

/// How long running handlers get to finish once the run is over, before the command
/// exits without them (a thread that cannot be stopped dies with the process).
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How often progress is reported on long runs.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// How a run ended.
enum End {
    Complete,
    TimedOut,
    /// Stopped by this signal.
    Signalled(i32),
    /// This agent ended, and nothing restarts it.
    AgentEnded(String),
    /// The supervisor gave up on a group.
    GroupFailed(String),
}

pub(crate) fn run(
    loaded: LoadedSpec,
    options: RunOptions,
    stop_signal: &AtomicI32,
) -> anyhow::Result<ExitCode> {
    let spec = loaded.spec.clone();
    let run = spec.run.clone();
    let metrics = options
        .metrics
        .as_deref()
        .map(crate::serve::listen)
        .transpose()?;
    let push = match options.push.as_deref() {
        Some(endpoint) => MetricsPush::start(endpoint)?,
        None => None,
    };
    // Building checks the spec as it will run, naming the file's lines.
    let mut builder = GuildBuilder::from_loaded(loaded)
        .registry(builtin::builtin_registry())
        .timing(metrics.is_some() || push.is_some());
    if let Some(engine) = options.engine {
        builder = builder.engine(engine);
    }
    if let Some(messaging) = options.messaging {
        builder = builder.messaging(messaging);
    }
    let mut guild = builder.build()?;
    let messaging_name = guild.context().messaging.name().to_owned();
    say!(
        "guild {:?}: {} agents, messaging {messaging_name}",
        spec.id,
        spec.expanded_agents().len()
    );

    // Follow the guild before anything can be published, so nothing is missed.
    let mut followed: BTreeSet<String> = run.show.iter().cloned().collect();
    followed.extend(run.until.topic.clone());
    followed.insert(ERROR_TOPIC.to_owned());
    let mut observer = guild.observe(OBSERVER, followed.into_iter().collect())?;

    for agent in spec.expanded_agents() {
        let engine = guild.engine_for(&agent);
        let (id, agent_type) = (agent.id.clone(), agent.agent_type.clone());
        guild.launch(agent)?;
        let node = guild
            .agents()
            .into_iter()
            .find(|info| info.id == id)
            .and_then(|info| info.node)
            .map(|node| format!(", node {node}"))
            .unwrap_or_default();
        say!("  started {id} ({agent_type}) on {engine}{node}");
    }
    // Shared from here on with whoever reads it (the metrics server).
    let guild = std::sync::Arc::new(guild);
    if let Some(listener) = metrics {
        let bound = crate::serve::metrics(listener, guild.clone())?;
        say!("  metrics at http://{bound}/metrics");
    }

    let started = Instant::now();
    for send in &run.send {
        let mut message = Message::builder(send.topic.clone(), Payload::from(send.payload.clone()));
        if let Some(reply_to) = &send.reply_to {
            message = message.reply_to(reply_to.clone());
        }
        guild.publish(message)?;
    }

    let deadline = started + Duration::from_secs(run.timeout_secs);
    // A handler on this thread (the sync engine) that never returns cannot be waited
    // out: past the deadline and the grace, the process ends.
    let watchdog = Watchdog::arm(
        deadline + STOP_GRACE,
        format!(
            "timed out after {}s, and a handler on the command's own thread is still running: \
             exiting without it",
            run.timeout_secs
        ),
    );
    let show: BTreeSet<&str> = run.show.iter().map(String::as_str).collect();
    let mut progress = report::Progress::new(std::io::stderr().is_terminal());
    let mut completions = 0;
    let mut errors = 0;
    let mut quiet_since: Option<(Instant, u64)> = None;
    let mut pushed = Instant::now();
    let end = loop {
        // Waiting on the observer drives the sync engine's agents meanwhile.
        let mut next = observer.recv_timeout(TICK)?;
        while let Some(delivery) = next {
            let message = &delivery.message;
            if &*delivery.topic == ERROR_TOPIC {
                errors += 1;
                match DeadLetter::from_message(message) {
                    Ok(letter) => say!(
                        "  error in {} on {}: {}",
                        letter.client,
                        letter.topic,
                        letter.failure.text
                    ),
                    Err(_) => say!("  error: {}", report::payload_text(message)),
                }
            } else {
                if show.contains(&*delivery.topic) && !options.quiet {
                    say!(
                        "  [{}] {} -> {}",
                        delivery.topic,
                        message.sender,
                        report::payload_text(message)
                    );
                }
                if run.until.topic.as_deref() == Some(&*delivery.topic) {
                    completions += 1;
                }
            }
            next = observer.try_recv()?;
        }

        let signal = stop_signal.load(Ordering::SeqCst);
        if signal != 0 {
            break End::Signalled(signal);
        }
        if let Some(ended) = agent_ended(&guild, run.on_agent_exit) {
            break ended;
        }
        if run.until.topic.is_some() && completions >= run.until.count {
            break End::Complete;
        }
        if run.until.topic.is_none() {
            let stats = guild.stats();
            let activity = stats.messages_in + stats.messages_out;
            let idle = stats.busy == 0 && stats.queued == 0;
            quiet_since = match quiet_since {
                Some((since, seen)) if idle && seen == activity => Some((since, seen)),
                _ if idle => Some((Instant::now(), activity)),
                _ => None,
            };
            if let Some((since, _)) = quiet_since
                && since.elapsed() >= Duration::from_millis(run.until.quiet_ms)
            {
                break End::Complete;
            }
        }
        if Instant::now() >= deadline {
            break End::TimedOut;
        }
        progress.tick(started, PROGRESS_EVERY, guild.stats().messages_in);
        if let Some(push) = &push
            && pushed.elapsed() >= PROGRESS_EVERY
        {
            push.update(guild.figures());
            pushed = Instant::now();
        }
    };
    progress.finish();
    drop(watchdog);

    let elapsed = started.elapsed();
    // Agents in other processes report what they handled a moment after they publish:
    // let the counts settle (bounded) so the summary and the last push are whole.
    let settle_by = Instant::now() + Duration::from_millis(500);
    let mut last = guild.stats().messages_in;
    while Instant::now() < settle_by {
        std::thread::sleep(Duration::from_millis(25));
        let now = guild.stats().messages_in;
        if now == last && !guild.agents().iter().any(|agent| agent.busy) {
            break;
        }
        last = now;
    }
    // The last push carries the figures the summary prints.
    if let Some(push) = &push {
        push.update(guild.figures());
    }
    let agents = guild.agents();
    let restarts = |agent: &str| guild.restarts(agent);
    report::summary(
        &agents,
        guild
            .is_supervised()
            .then_some(&restarts as &dyn Fn(&str) -> u64),
        elapsed,
        errors,
    );
    let busy: Vec<&str> = agents
        .iter()
        .filter(|agent| agent.busy)
        .map(|agent| agent.id.as_str())
        .collect();
    // An outage explains most ends that are not complete: name it last, where it is seen.
    let outage = guild.context().messaging.unavailable();
    let code = match end {
        End::Complete => ExitCode::SUCCESS,
        End::TimedOut => {
            eprintln!(
                "error: timed out after {}s waiting for the run to complete ({}){}",
                run.timeout_secs,
                match &run.until.topic {
                    Some(topic) => format!(
                        "{} message(s) on {topic:?}, saw {completions}",
                        run.until.count
                    ),
                    None => "the guild to go quiet".to_owned(),
                },
                if busy.is_empty() {
                    String::new()
                } else {
                    format!("; still busy: {}", busy.join(", "))
                }
            );
            ExitCode::FAILURE
        }
        End::Signalled(signal) => {
            eprintln!("stopped by a signal: the guild was stopped");
            ExitCode::from((128 + signal) as u8)
        }
        End::GroupFailed(why) => {
            eprintln!("error: {why}; the supervisor gave up, so the run stops");
            ExitCode::FAILURE
        }
        End::AgentEnded(why) => {
            eprintln!(
                "error: {why}; nothing restarts it, so the run stops \
                 (set on_agent_exit = \"continue\" under [run] to carry on)"
            );
            ExitCode::FAILURE
        }
    };
    if let Some(outage) = &outage {
        eprintln!("error: the messaging backend is unavailable: {outage}");
    }
    let watchdog = Watchdog::arm(
        Instant::now() + STOP_GRACE,
        format!(
            "handlers still running {}s after the run ended{}: exiting without them",
            STOP_GRACE.as_secs(),
            if busy.is_empty() {
                String::new()
            } else {
                format!(" (busy: {})", busy.join(", "))
            }
        ),
    );
    guild.shutdown()?;
    drop(watchdog);
    if let Some(push) = push {
        push.shutdown();
    }
    Ok(code)
}

/// Reports what happened to agents since the last look; the end of the run, if an
/// agent ended and nothing restarts it (and the spec says to stop then), or the
/// supervisor gave up on a group.
fn agent_ended(guild: &guild::Guild, policy: AgentExitPolicy) -> Option<End> {
    for event in guild.take_events() {
        let agent = &event.agent_id;
        let why = match &event.kind {
            LifecycleKind::Started | LifecycleKind::Stopped => continue,
            LifecycleKind::Restarted { attempt, delay_ms } => {
                say!("  restarted {agent} (restart {attempt} in a row, after {delay_ms} ms)");
                continue;
            }
            LifecycleKind::GroupFailed { group, reason } => {
                return Some(End::GroupFailed(format!(
                    "supervision group {group:?} failed: agent {agent} {reason}"
                )));
            }
            LifecycleKind::Stuck { busy_ms } => {
                say!(
                    "  agent {agent} is stuck: a handler has run for {busy_ms} ms, past its watchdog"
                );
                continue;
            }
            LifecycleKind::BreakerOpened { failures } => {
                say!("  agent {agent}: circuit breaker opened after {failures} failures");
                continue;
            }
            LifecycleKind::BreakerHalfOpen => {
                say!("  agent {agent}: circuit breaker half-open, trying one delivery");
                continue;
            }
            LifecycleKind::BreakerClosed => {
                say!("  agent {agent}: circuit breaker closed");
                continue;
            }
            LifecycleKind::Exited => format!("agent {agent} exited"),
            LifecycleKind::Crashed { reason } => format!("agent {agent} crashed: {reason}"),
            LifecycleKind::KilledByLimit { reason } => {
                format!("agent {agent} was killed by a limit: {reason}")
            }
        };
        if guild.will_restart(agent, &event.kind) {
            say!("  {why}; its supervisor restarts it");
            continue;
        }
        match policy {
            AgentExitPolicy::Stop => return Some(End::AgentEnded(why)),
            AgentExitPolicy::Continue => say!("  {why}; carrying on"),
        }
    }
    None
}

/// Ends the process with an error if it is still running at a given time, unless
/// dropped first.
struct Watchdog {
    _disarm: std::sync::mpsc::SyncSender<()>,
}

impl Watchdog {
    fn arm(at: Instant, message: String) -> Self {
        let (disarm, disarmed) = std::sync::mpsc::sync_channel::<()>(0);
        std::thread::Builder::new()
            .name("guild-watchdog".into())
            .spawn(move || {
                let left = at.saturating_duration_since(Instant::now());
                if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = disarmed.recv_timeout(left)
                {
                    eprintln!("error: {message}");
                    std::process::exit(1);
                }
            })
            .expect("a thread for the watchdog");
        Self { _disarm: disarm }
    }
}
