//! `exec`: an agent that is a program in any language, speaking newline-delimited JSON
//! over its standard input and output (`docs/exec-protocol.md`).
//!
//! The agent starts the program in its start hook and waits for it to say it is ready.
//! It reads the program's output on the handler's own thread.
//! Each delivery goes to the program as one line; the agent then reads the program's
//! lines, answering its publishes, replies and history queries, until the program says
//! the delivery is done (the message is handled) or failed (it is dead-lettered). A
//! line that breaks the protocol, a program that exits, and one that does not answer
//! within the handler timeout end the agent with a reason naming what happened. The
//! program's standard error is logged with the agent's id.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use engine_core::{
    Agent, AgentContext, AgentEnded, AgentResult, BoxError, HistoryOrder, HistoryQuery, Message,
    Payload, Priority,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// Why an agent ends when its program closes its output.
const CLOSED: &str = "the program closed its output";

/// The protocol version guild speaks.
pub const EXEC_PROTOCOL: u32 = 1;

/// Properties of an `exec` agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    /// The program and its arguments.
    pub command: Vec<String>,
    /// Variables added to the program's environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The directory it runs in; the host's when not set.
    #[serde(default)]
    pub cwd: Option<String>,
    /// The longest line the program may write, in bytes.
    #[serde(default = "default_max_line")]
    pub max_line_bytes: usize,
    /// How long the program has to say it is ready, in milliseconds.
    #[serde(default = "default_ready_ms")]
    pub ready_timeout_ms: u64,
    /// The program's own settings, handed to it in the hello.
    #[serde(default = "empty_object")]
    pub settings: Value,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

fn default_max_line() -> usize {
    1024 * 1024
}

fn default_ready_ms() -> u64 {
    10_000
}

impl ExecConfig {
    /// Checks the settings, naming the wrong one.
    pub fn check(&self) -> Result<(), BoxError> {
        match self.command.first() {
            None => return Err("exec: `command` needs the program to run".into()),
            Some(program) if program.is_empty() => {
                return Err("exec: `command` starts with an empty program name".into());
            }
            _ => {}
        }
        if !(64..=64 * 1024 * 1024).contains(&self.max_line_bytes) {
            return Err("exec: `max_line_bytes` is from 64 to 64 MiB".into());
        }
        if !(1..=600_000).contains(&self.ready_timeout_ms) {
            return Err("exec: `ready_timeout_ms` is from 1 ms to 10 minutes".into());
        }
        Ok(())
    }
}

/// What one line of the program's output was.
enum Line {
    /// One JSON object the program wrote.
    Object(serde_json::Map<String, Value>),
    /// A line that ends the agent: why.
    Broken(String),
    /// The program closed its output (it exited, most likely).
    Closed,
}

/// The program, while it runs. Its output is read on the handler's thread, waiting
/// with `poll` until the deadline, so a line costs no thread switch.
struct Running {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// An agent that is a program; see the module docs.
pub struct Exec {
    config: ExecConfig,
    running: Option<Running>,
    /// The first failure of a publish or reply no one waited for, during the delivery
    /// that is out: it fails that delivery.
    failed: Option<String>,
}

impl std::fmt::Debug for Exec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exec")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Exec {
    /// An exec agent with the given properties, checked.
    pub fn new(config: ExecConfig) -> Result<Self, BoxError> {
        config.check()?;
        Ok(Self {
            config,
            running: None,
            failed: None,
        })
    }

    fn spawn(&mut self, ctx: &AgentContext) -> Result<(), BoxError> {
        let (program, args) = self
            .config
            .command
            .split_first()
            .ok_or("exec: no command")?;
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(&self.config.env)
            .env("GUILD_AGENT_ID", ctx.id())
            .env("GUILD_EXEC_PROTOCOL", EXEC_PROTOCOL.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(cwd) = &self.config.cwd {
            command.current_dir(cwd);
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("exec: cannot start {program:?}: {e}"))?;
        let stdin = child.stdin.take().ok_or("exec: no stdin")?;
        let stdout = child.stdout.take().ok_or("exec: no stdout")?;
        let stderr = child.stderr.take().ok_or("exec: no stderr")?;
        let agent = ctx.id().to_owned();
        std::thread::Builder::new()
            .name(format!("exec-stderr-{agent}"))
            .spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    tracing::warn!(target: "guild::exec", agent = %agent, "{line}");
                }
            })?;
        self.running = Some(Running {
            child,
            stdin,
            stdout: BufReader::with_capacity(64 * 1024, stdout),
        });
        Ok(())
    }

    /// Writes one line to the program, waiting for room in its input until `deadline`
    /// at most (a program that stops reading cannot hold the agent past it).
    fn write(&mut self, line: &Value, deadline: Option<Instant>) -> AgentResult {
        let running = self.running.as_mut().ok_or_else(gone)?;
        let mut text = serde_json::to_vec(line)?;
        text.push(b'\n');
        match write_until(&mut running.stdin, &text, deadline) {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.ended("the program did not read its input in time")),
            Err(error) => Err(self.ended(&format!("cannot write to the program: {error}"))),
        }
    }

    /// The program's next line, waiting until `deadline` at most.
    fn next(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<serde_json::Map<String, Value>, BoxError> {
        let max = self.config.max_line_bytes;
        let running = self.running.as_mut().ok_or_else(gone)?;
        let line = if wait_readable(&running.stdout, deadline) {
            read_line(&mut running.stdout, max)
        } else {
            return Err(self.ended("the program did not answer in time"));
        };
        match line {
            Line::Object(object) => Ok(object),
            Line::Broken(why) => Err(self.ended(&why)),
            Line::Closed => Err(self.ended(CLOSED)),
        }
    }

    /// Ends the program, and the agent with it: crashed, for `why` and how the program
    /// ended; exited, when the program closed its output and exited with code 0.
    fn ended(&mut self, why: &str) -> BoxError {
        let (status, how) = self.reap();
        let reason = format!("exec: {why}{how}");
        let exited_cleanly = status.is_some_and(|status| status.success());
        Box::new(if exited_cleanly && why == CLOSED {
            AgentEnded::exited(reason)
        } else {
            AgentEnded::crashed(reason)
        })
    }

    /// Ends the program, and the agent with it, as killed by its limit on `resource`.
    fn exhausted(
        &mut self,
        ctx: &AgentContext,
        object: &serde_json::Map<String, Value>,
    ) -> BoxError {
        let resource = object
            .get("resource")
            .and_then(Value::as_str)
            .unwrap_or("memory")
            .to_owned();
        let error = object
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let cap = match (resource.as_str(), ctx.spec().limits.memory_bytes) {
            ("memory", Some(cap)) => format!(" past its cap of {cap} bytes"),
            _ => String::new(),
        };
        let (_, how) = self.reap();
        Box::new(AgentEnded::killed_by_limit(format!(
            "exec: the program ran out of {resource}{cap} ({error}){how}"
        )))
    }

    /// Closes the program's input and reaps it (killing it if it does not exit at
    /// once), answering its exit status and how it ended, in words.
    fn reap(&mut self) -> (Option<std::process::ExitStatus>, String) {
        let Some(mut running) = self.running.take() else {
            return (None, String::new());
        };
        drop(running.stdin);
        // A program that already exited is reaped at once; one that is still running
        // after breaking the protocol is killed.
        let status = match running.child.try_wait() {
            Ok(Some(status)) => Some(status),
            _ => wait_briefly(&mut running.child, Duration::from_millis(200)),
        };
        let status = status.or_else(|| {
            let _ = running.child.kill();
            running.child.wait().ok()
        });
        (status, status.map(describe_exit).unwrap_or_default())
    }

    /// Answers a request the program made while a delivery was out.
    fn answer(
        &mut self,
        ctx: &AgentContext,
        delivery: &Message,
        kind: &str,
        object: &serde_json::Map<String, Value>,
        deadline: Option<Instant>,
    ) -> AgentResult {
        let request = object.get("request").cloned();
        if request.is_none() && kind == "history" {
            return Err(self.ended("a history query without its request number"));
        }
        let answered = match kind {
            "publish" => publish(ctx, None, object),
            "reply" => {
                let to = object.get("to").and_then(value_id);
                if to.as_deref() != Some(&delivery.id.to_string()) {
                    return Err(self.ended(&format!(
                        "a reply to {}, which is not the delivery handed out ({})",
                        object
                            .get("to")
                            .map_or("nothing".to_owned(), Value::to_string),
                        delivery.id
                    )));
                }
                publish(ctx, Some(delivery), object)
            }
            "history" => history(ctx, object),
            _ => unreachable!("kinds are matched by the caller"),
        };
        let Some(request) = request else {
            // Nobody waits for the answer: a failure fails the delivery instead.
            if let Err(error) = answered {
                self.failed
                    .get_or_insert_with(|| format!("{kind} failed: {error}"));
            }
            return Ok(());
        };
        let line = match answered {
            Ok(mut answer) => {
                answer.insert("kind".into(), json!("ok"));
                answer.insert("request".into(), request);
                Value::Object(answer)
            }
            Err(error) => {
                json!({ "kind": "failed", "request": request, "error": error.to_string() })
            }
        };
        self.write(&line, deadline)
    }
}

impl Agent for Exec {
    async fn start(&mut self, ctx: &AgentContext) -> AgentResult {
        blocking(|| self.start_now(ctx))
    }

    async fn handle(&mut self, ctx: &AgentContext, message: &Message) -> AgentResult {
        blocking(|| self.handle_now(ctx, message))
    }

    async fn stop(&mut self, _ctx: &AgentContext) -> AgentResult {
        blocking(|| self.stop_now());
        Ok(())
    }
}

/// The hooks' work, which waits on the program: on a pool engine's worker it runs as
/// blocking work, so the pool moves its other agents to another worker meanwhile.
impl Exec {
    fn start_now(&mut self, ctx: &AgentContext) -> AgentResult {
        self.spawn(ctx)?;
        let hello = json!({
            "kind": "hello",
            "protocol": EXEC_PROTOCOL,
            "agent": ctx.id(),
            "name": ctx.name(),
            "guild": ctx.namespace(),
            "settings": self.config.settings,
        });
        let deadline = Instant::now() + Duration::from_millis(self.config.ready_timeout_ms);
        self.write(&hello, Some(deadline))?;
        let ready = self.next(Some(deadline))?;
        match ready.get("kind").and_then(Value::as_str) {
            Some("ready") => Ok(()),
            other => Err(self.ended(&format!(
                "the program answered its hello with {} rather than ready",
                other.map_or("a line without a kind".to_owned(), |kind| format!(
                    "{kind:?}"
                ))
            ))),
        }
    }

    fn handle_now(&mut self, ctx: &AgentContext, message: &Message) -> AgentResult {
        let timeout = ctx.spec().handler_timeout_ms.map(Duration::from_millis);
        let deadline = timeout.map(|timeout| Instant::now() + timeout);
        self.failed = None;
        self.write(&delivery_line(message), deadline)?;
        let id = message.id.to_string();
        loop {
            let object = self.next(deadline)?;
            let kind = object
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            match kind.as_str() {
                "done" | "error" => {
                    let about = object.get("id").and_then(value_id);
                    if about.as_deref() != Some(&id) {
                        return Err(self.ended(&format!(
                            "{kind} for {}, which is not the delivery handed out ({id})",
                            object
                                .get("id")
                                .map_or("nothing".to_owned(), Value::to_string)
                        )));
                    }
                    if let Some(failed) = self.failed.take() {
                        return Err(failed.into());
                    }
                    if kind == "done" {
                        return Ok(());
                    }
                    let error = object
                        .get("error")
                        .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_owned))
                        .unwrap_or_else(|| "the program failed the delivery".to_owned());
                    return Err(error.into());
                }
                "publish" | "reply" | "history" => {
                    self.answer(ctx, message, &kind, &object, deadline)?;
                }
                "exhausted" => return Err(self.exhausted(ctx, &object)),
                "" => return Err(self.ended("a line without a kind")),
                other => return Err(self.ended(&format!("a line of unknown kind {other:?}"))),
            }
        }
    }

    fn stop_now(&mut self) {
        if let Some(mut running) = self.running.take() {
            // Closing its input asks the program to exit; it gets two seconds.
            drop(running.stdin);
            if wait_briefly(&mut running.child, Duration::from_secs(2)).is_none() {
                let _ = running.child.kill();
                let _ = running.child.wait();
            }
        }
    }
}

/// Runs `work`, which blocks: as blocking work when on a multi-threaded tokio runtime
/// (the pool engine's workers), else as it is (the other engines drive handlers on
/// threads of their own).
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

impl Drop for Exec {
    fn drop(&mut self) {
        if let Some(mut running) = self.running.take() {
            let _ = running.child.kill();
            let _ = running.child.wait();
        }
    }
}

fn gone() -> BoxError {
    Box::new(AgentEnded::crashed("exec: the program is not running"))
}

/// Writes all of `bytes` to the program's input, which is non-blocking when there is a
/// deadline: false when the program has not made room for them by `deadline`.
fn write_until(
    stdin: &mut ChildStdin,
    bytes: &[u8],
    deadline: Option<Instant>,
) -> std::io::Result<bool> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd as _;
    let Some(deadline) = deadline else {
        stdin.write_all(bytes)?;
        return Ok(true);
    };
    set_nonblocking(stdin, true)?;
    let mut written = 0;
    let result = loop {
        if written == bytes.len() {
            break Ok(true);
        }
        match stdin.write(&bytes[written..]) {
            Ok(n) => written += n,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break Ok(false);
                }
                let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
                let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLOUT)];
                match poll(&mut fds, timeout) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(errno) => break Err(std::io::Error::from(errno)),
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => break Err(error),
        }
    };
    set_nonblocking(stdin, false)?;
    result
}

/// Sets or clears `O_NONBLOCK` on the program's input.
fn set_nonblocking(stdin: &ChildStdin, on: bool) -> std::io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(stdin, FcntlArg::F_GETFL)?);
    let flags = if on {
        flags | OFlag::O_NONBLOCK
    } else {
        flags - OFlag::O_NONBLOCK
    };
    fcntl(stdin, FcntlArg::F_SETFL(flags))?;
    Ok(())
}

/// How long the agent looks for the program's answer before sleeping until it comes.
const SPIN: Duration = Duration::from_micros(50);

/// Whether the program's output has something to read before `deadline` (or has
/// closed); always, without a deadline.
fn wait_readable(stdout: &BufReader<ChildStdout>, deadline: Option<Instant>) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd as _;
    if !stdout.buffer().is_empty() {
        return true;
    }
    let ready = |timeout: PollTimeout| {
        let mut fds = [PollFd::new(stdout.get_ref().as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, timeout).map(|ready| ready > 0)
    };
    // A program answers a small delivery in tens of microseconds: looking for its
    // answer that long before sleeping saves the wake-up after a sleep.
    let spin_until = Instant::now() + SPIN;
    while Instant::now() < spin_until {
        if ready(PollTimeout::ZERO).unwrap_or(true) {
            return true;
        }
        std::hint::spin_loop();
    }
    let Some(deadline) = deadline else {
        return true;
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        match ready(timeout) {
            Ok(false) => return false,
            // Readable, closed or broken: the read says which.
            Ok(true) => return true,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return true,
        }
    }
}

/// Reads one line of at most `max` bytes and parses it as a JSON object.
fn read_line(reader: &mut impl BufRead, max: usize) -> Line {
    let mut bytes = Vec::new();
    match reader.take(max as u64 + 1).read_until(b'\n', &mut bytes) {
        Ok(0) => return Line::Closed,
        Ok(_) => {}
        Err(error) => return Line::Broken(format!("cannot read the program's output: {error}")),
    }
    // A line without its newline is the last, unless it is too long.
    if bytes.last() != Some(&b'\n') && bytes.len() > max {
        return Line::Broken(format!("a line of over {max} bytes"));
    }
    let text = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    if text.iter().all(u8::is_ascii_whitespace) {
        return Line::Broken("an empty line".into());
    }
    match serde_json::from_slice::<Value>(text) {
        Ok(Value::Object(object)) => Line::Object(object),
        Ok(_) => Line::Broken("a line that is JSON but not an object".into()),
        Err(error) => {
            let shown = String::from_utf8_lossy(&text[..text.len().min(80)]).into_owned();
            Line::Broken(format!("a line that is not JSON ({error}): {shown:?}"))
        }
    }
}

/// The line that hands `message` to the program.
fn delivery_line(message: &Message) -> Value {
    let mut line = json!({
        "kind": "deliver",
        "id": message.id.to_string(),
        "topic": message.topics.first().map(|t| t.to_string()),
        "sender": &*message.sender,
        "priority": message.priority(),
        "reply_to": message.reply_topic(),
        "headers": message.headers,
    });
    let object = line.as_object_mut().expect("an object");
    if let Some(thread) = message.thread {
        object.insert("thread".into(), json!(thread.to_string()));
    }
    if let Some(answers) = message.in_reply_to {
        object.insert("in_reply_to".into(), json!(answers.to_string()));
    }
    match message.decode_json::<Value>() {
        Ok(value) => {
            object.insert("payload".into(), value);
        }
        Err(_) => {
            object.insert("format".into(), json!(message.payload.format));
            object.insert(
                "payload_base64".into(),
                json!(base64::engine::general_purpose::STANDARD.encode(&message.payload.bytes[..])),
            );
        }
    }
    line
}

/// A message id given as a string or a number.
fn value_id(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// The payload of a publish or reply line.
fn payload_of(object: &serde_json::Map<String, Value>) -> Result<Payload, BoxError> {
    if let Some(encoded) = object.get("payload_base64") {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().ok_or("payload_base64 is a string")?)
            .map_err(|e| format!("payload_base64: {e}"))?;
        let format = object
            .get("format")
            .and_then(Value::as_str)
            .ok_or("a payload_base64 needs its format")?;
        return Ok(Payload::new(format.to_owned(), bytes));
    }
    Ok(Payload::from(
        object.get("payload").cloned().unwrap_or(Value::Null),
    ))
}

/// Publishes what a publish line asks (or, with `to`, replies to it).
fn publish(
    ctx: &AgentContext,
    to: Option<&Message>,
    object: &serde_json::Map<String, Value>,
) -> Result<serde_json::Map<String, Value>, BoxError> {
    let payload = payload_of(object)?;
    let id = match to {
        Some(message) => ctx.reply(message, payload)?,
        None => {
            let topic = object
                .get("topic")
                .and_then(Value::as_str)
                .filter(|topic| !topic.is_empty())
                .ok_or("a publish needs its topic")?;
            let mut builder = Message::builder(topic, payload);
            if let Some(reply_to) = object.get("reply_to").and_then(Value::as_str) {
                builder = builder.reply_to(reply_to);
            }
            if let Some(priority) = object.get("priority") {
                let priority: Priority = serde_json::from_value(priority.clone())
                    .map_err(|e| format!("priority: {e}"))?;
                builder = builder.priority(priority);
            }
            ctx.publish(builder)?
        }
    };
    let mut answer = serde_json::Map::new();
    answer.insert("id".into(), json!(id.to_string()));
    Ok(answer)
}

/// Answers a history line: a topic's retained messages, the last `limit` of them.
fn history(
    ctx: &AgentContext,
    object: &serde_json::Map<String, Value>,
) -> Result<serde_json::Map<String, Value>, BoxError> {
    let topic = object
        .get("topic")
        .and_then(Value::as_str)
        .ok_or("a history query needs its topic")?;
    let limit = object.get("limit").and_then(Value::as_u64).unwrap_or(100) as usize;
    let messages = ctx.history(
        &HistoryQuery::Topic(topic.to_owned()),
        HistoryOrder::Published,
    )?;
    let start = messages.len().saturating_sub(limit);
    let lines: Vec<Value> = messages[start..]
        .iter()
        .map(|message| {
            let mut line = delivery_line(message);
            let object = line.as_object_mut().expect("an object");
            object.remove("kind");
            line
        })
        .collect();
    let mut answer = serde_json::Map::new();
    answer.insert("messages".into(), Value::Array(lines));
    Ok(answer)
}

/// Waits up to `limit` for the program to exit.
fn wait_briefly(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let until = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(5)),
            _ => return None,
        }
    }
}

/// How a program ended, as the tail of a reason.
fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!(" (the program exited with code {code})"),
        (None, Some(signal)) => format!(" (the program was killed by signal {signal})"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lines(bytes: &[u8], max: usize) -> Vec<String> {
        let mut reader = BufReader::new(bytes);
        let mut seen = Vec::new();
        loop {
            match read_line(&mut reader, max) {
                Line::Object(object) => seen.push(format!("object {}", object.len())),
                Line::Broken(why) => {
                    seen.push(format!("broken {why}"));
                    break;
                }
                Line::Closed => break,
            }
        }
        seen
    }

    #[test]
    fn lines_are_objects_until_one_is_not() {
        let input = b"{\"kind\":\"done\",\"id\":\"1\"}\r\n{}\n[1]\n{}\n";
        assert_eq!(
            lines(input, 64),
            [
                "object 2",
                "object 0",
                "broken a line that is JSON but not an object"
            ]
        );
        assert_eq!(lines(b"\n", 64), ["broken an empty line"]);
        assert_eq!(
            lines(b"{\"a\":1}", 64),
            ["object 1"],
            "a last line without newline"
        );
        let long = format!("{{\"a\":\"{}\"}}\n", "x".repeat(100));
        assert_eq!(
            lines(long.as_bytes(), 64),
            ["broken a line of over 64 bytes"]
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5_000))]

        /// Whatever a program writes, reading it never panics, and every line either
        /// parses as an object or ends the agent.
        #[test]
        fn arbitrary_output_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let seen = lines(&bytes, 128);
            prop_assert!(seen.iter().filter(|line| line.starts_with("broken")).count() <= 1);
        }

        /// Lines of JSON objects, cut and spliced at random, are read as objects or
        /// refused by name.
        #[test]
        fn damaged_protocol_lines_never_panic(cut in 0usize..200, insert in any::<u8>()) {
            let mut bytes = b"{\"kind\":\"publish\",\"request\":1,\"topic\":\"t\",\"payload\":{\"a\":[1,2]}}\n{\"kind\":\"done\",\"id\":\"9\"}\n".to_vec();
            let at = cut % bytes.len();
            bytes.insert(at, insert);
            let seen = lines(&bytes, 1024);
            prop_assert!(!seen.is_empty() || bytes.iter().all(u8::is_ascii_whitespace));
        }
    }
}
