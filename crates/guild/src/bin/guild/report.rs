//! What `guild run` prints: message payloads, progress on long runs, the final summary.

use std::io::Write;
use std::time::{Duration, Instant};

use guild::{AgentInfo, AgentState, JSON_FORMAT, Message};

/// A payload as one line of text.
pub(crate) fn payload_text(message: &Message) -> String {
    let payload = &message.payload;
    if payload.format == JSON_FORMAT {
        String::from_utf8_lossy(&payload.bytes).into_owned()
    } else {
        format!("<{} bytes of {}>", payload.bytes.len(), payload.format)
    }
}

/// A live count of handled messages, once a run lasts longer than a moment: rewritten in
/// place on a terminal, one line per report otherwise.
pub(crate) struct Progress {
    terminal: bool,
    last: Option<Instant>,
    shown: bool,
}

impl Progress {
    pub(crate) fn new(terminal: bool) -> Self {
        Self {
            terminal,
            last: None,
            shown: false,
        }
    }

    pub(crate) fn tick(&mut self, started: Instant, every: Duration, handled: u64) {
        let now = Instant::now();
        let due = self
            .last
            .map_or(now - started >= every, |last| now - last >= every);
        if !due {
            return;
        }
        self.last = Some(now);
        let seconds = (now - started).as_secs_f64();
        let line = format!(
            "  ... {handled} messages handled in {seconds:.1}s ({:.0}/s)",
            handled as f64 / seconds
        );
        let mut stderr = std::io::stderr();
        if self.terminal {
            let _ = write!(stderr, "\r{line}");
            let _ = stderr.flush();
            self.shown = true;
        } else {
            let _ = writeln!(stderr, "{line}");
        }
    }

    pub(crate) fn finish(&mut self) {
        if self.shown {
            eprintln!();
        }
    }
}

/// The table printed at the end of a run; `restarts` gives each agent's restarts when
/// the guild is supervised (a `restarts` column), `None` otherwise.
pub(crate) fn summary(
    agents: &[AgentInfo],
    restarts: Option<&dyn Fn(&str) -> u64>,
    elapsed: Duration,
    errors_seen: u64,
) {
    let width = agents.iter().map(|a| a.id.len()).max().unwrap_or(5).max(5);
    let restarts_column = |value: String| match restarts {
        Some(_) => format!("  {value:>8}"),
        None => String::new(),
    };
    say!("summary after {:.2}s:", elapsed.as_secs_f64());
    say!(
        "  {:<width$}  {:<12}  {:<8}  {:>10}  {:>10}  {:>6}{}  state",
        "agent",
        "type",
        "engine",
        "in",
        "out",
        "errors",
        restarts_column("restarts".into())
    );
    let (mut total_in, mut total_out, mut total_errors, mut total_restarts) = (0, 0, 0, 0);
    for agent in agents {
        total_in += agent.messages_in;
        total_out += agent.messages_out;
        total_errors += agent.errors;
        let restarted = restarts.map_or(0, |restarts| restarts(&agent.id));
        total_restarts += restarted;
        let state = match (&agent.state, &agent.exit) {
            (AgentState::Crashed | AgentState::KilledByLimit, Some(exit)) => {
                format!("{}: {}", agent.state, exit.reason)
            }
            (state, _) => state.to_string(),
        };
        let engine = match &agent.node {
            Some(node) => format!("{}@{node}", agent.engine),
            None => agent.engine.clone(),
        };
        say!(
            "  {:<width$}  {:<12}  {:<8}  {:>10}  {:>10}  {:>6}{}  {}",
            agent.id,
            agent.agent_type,
            engine,
            agent.messages_in,
            agent.messages_out,
            agent.errors,
            restarts_column(restarted.to_string()),
            state
        );
    }
    say!(
        "  {:<width$}  {:<12}  {:<8}  {:>10}  {:>10}  {:>6}{}",
        "total",
        "",
        "",
        total_in,
        total_out,
        total_errors,
        restarts_column(total_restarts.to_string())
    );
    if restarts.is_some() {
        say!("  (in, out and errors count since each agent last started)");
    }
    if errors_seen > 0 {
        say!("  {errors_seen} error(s) were published to the guild's error topic");
    }
}
