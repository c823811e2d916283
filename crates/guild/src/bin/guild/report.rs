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

/// The table printed at the end of a run.
pub(crate) fn summary(agents: &[AgentInfo], elapsed: Duration, errors_seen: u64) {
    let width = agents.iter().map(|a| a.id.len()).max().unwrap_or(5).max(5);
    say!("summary after {:.2}s:", elapsed.as_secs_f64());
    say!(
        "  {:<width$}  {:<12}  {:<8}  {:>10}  {:>10}  {:>6}  state",
        "agent",
        "type",
        "engine",
        "in",
        "out",
        "errors"
    );
    let (mut total_in, mut total_out, mut total_errors) = (0, 0, 0);
    for agent in agents {
        total_in += agent.messages_in;
        total_out += agent.messages_out;
        total_errors += agent.errors;
        let state = match (&agent.state, &agent.exit) {
            (AgentState::Crashed | AgentState::KilledByLimit, Some(exit)) => {
                format!("{}: {}", agent.state, exit.reason)
            }
            (state, _) => state.to_string(),
        };
        say!(
            "  {:<width$}  {:<12}  {:<8}  {:>10}  {:>10}  {:>6}  {}",
            agent.id,
            agent.agent_type,
            agent.engine,
            agent.messages_in,
            agent.messages_out,
            agent.errors,
            state
        );
    }
    say!(
        "  {:<width$}  {:<12}  {:<8}  {:>10}  {:>10}  {:>6}",
        "total",
        "",
        "",
        total_in,
        total_out,
        total_errors
    );
    if errors_seen > 0 {
        say!("  {errors_seen} error(s) were published to the guild's error topic");
    }
}
