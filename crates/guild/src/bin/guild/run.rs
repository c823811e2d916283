//! `guild run`: launch every agent, send the spec's inputs, follow the guild until the
//! spec says the run is complete, then stop everything and print a summary.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use guild::{
    DeadLetter, ERROR_TOPIC, GuildBuilder, LoadedSpec, Message, Outcome, Payload, builtin,
};

use crate::report;

/// Command-line choices that override the spec.
pub struct RunOptions {
    pub engine: Option<String>,
    pub messaging: Option<String>,
    pub quiet: bool,
}

/// The client id under which the command follows the guild.
const OBSERVER: &str = "guild-cli";

/// How often the loop looks at the guild.
const TICK: Duration = Duration::from_millis(5);

/// How often progress is reported on long runs.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// How a run ended.
enum End {
    Complete,
    TimedOut,
    Interrupted,
}

pub fn run(
    loaded: LoadedSpec,
    options: RunOptions,
    interrupted: &AtomicBool,
) -> anyhow::Result<ExitCode> {
    let spec = loaded.spec;
    let run = spec.run.clone();
    let mut builder = GuildBuilder::new(spec.clone()).registry(builtin::builtin_registry());
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
        say!("  started {id} ({agent_type}) on {engine}");
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
    let show: BTreeSet<&str> = run.show.iter().map(String::as_str).collect();
    let mut progress = report::Progress::new(std::io::stderr().is_terminal());
    let mut completions = 0;
    let mut errors = 0;
    let mut quiet_since: Option<(Instant, u64)> = None;
    let end = loop {
        guild.drive();
        while let Some(delivery) = observer.next()? {
            let message = &delivery.message;
            if &*delivery.topic == ERROR_TOPIC {
                errors += 1;
                match message.json::<DeadLetter>() {
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
            observer.complete(Outcome::Handled)?;
        }

        if interrupted.load(Ordering::SeqCst) {
            break End::Interrupted;
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
        std::thread::sleep(TICK);
    };
    progress.finish();

    let elapsed = started.elapsed();
    let agents = guild.agents();
    guild.shutdown()?;
    report::summary(&agents, elapsed, errors);
    Ok(match end {
        End::Complete => ExitCode::SUCCESS,
        End::TimedOut => {
            eprintln!(
                "error: timed out after {}s waiting for the run to complete ({})",
                run.timeout_secs,
                match &run.until.topic {
                    Some(topic) => format!(
                        "{} message(s) on {topic:?}, saw {completions}",
                        run.until.count
                    ),
                    None => "the guild to go quiet".to_owned(),
                }
            );
            ExitCode::FAILURE
        }
        End::Interrupted => {
            eprintln!("interrupted: the guild was stopped");
            ExitCode::from(130)
        }
    })
}
