//! `exec` agents: Python programs on the threads engine, over the in-memory bus, built
//! with `clients/python/guild_agent.py`. A program that raises has its message
//! dead-lettered and goes on; one that prints garbage, answers for another delivery,
//! writes a line over the cap, stops answering or dies ends its agent with a reason
//! naming what happened, and other agents carry on; a request/response exchange works
//! through `reply` and `history`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use conformance::harness::{publish, subscribe, unique_namespace, wait_until};
use guild::engines::ThreadsEngine;
use guild::messaging::MemoryMessaging;
use guild::{
    AgentSpec, AgentState, DeadLetter, ERROR_TOPIC, ExecutionEngine, ExecutionEngineExt,
    GuildContext, MessagingBackend, Outcome, StartFrom, builtin,
};
use serde_json::{Value, json};

/// A Python program that handles each delivery with `body` (Python, indented by
/// four spaces, with `ctx` and `delivery` in scope), written into `dir`.
fn program(dir: &Path, name: &str, body: &str) -> PathBuf {
    let clients = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/python");
    let path = dir.join(format!("{name}.py"));
    let source = format!(
        "import os, sys, time\nsys.path.insert(0, {clients:?})\nimport guild_agent\n\n\
         def handle(ctx, delivery):\n{body}\n\nguild_agent.run(handle)\n",
        clients = clients.display().to_string(),
    );
    std::fs::write(&path, source).unwrap();
    path
}

struct Setup {
    engine: ThreadsEngine,
    bus: Arc<dyn MessagingBackend>,
    guild: GuildContext,
    namespace: String,
    _dir: tempfile::TempDir,
    dir: PathBuf,
}

fn setup(scenario: &str) -> Setup {
    let bus: Arc<dyn MessagingBackend> = Arc::new(MemoryMessaging::new());
    let namespace = unique_namespace(scenario);
    let guild = GuildContext::new(
        namespace.as_str(),
        bus.clone(),
        Arc::new(builtin::builtin_registry()),
    );
    let dir = tempfile::tempdir().unwrap();
    Setup {
        engine: ThreadsEngine::new(),
        bus,
        guild,
        namespace,
        dir: dir.path().to_owned(),
        _dir: dir,
    }
}

impl Setup {
    /// Runs an exec agent `id` on `topic`, running `program`.
    fn run(&self, id: &str, topic: &str, program: &Path, extra: Value) {
        let mut properties = json!({ "command": ["python3", program] });
        if let (Some(properties), Value::Object(extra)) = (properties.as_object_mut(), extra) {
            properties.extend(extra);
        }
        let mut spec = AgentSpec::new(id, "exec").with_topic(topic);
        spec.properties = properties;
        spec.start_from = StartFrom::Earliest;
        spec.handler_timeout_ms = Some(5_000);
        self.engine.run_agent(&self.guild, spec).unwrap();
    }

    /// Waits for agent `id` to end in `state`, answering why it ended.
    fn ended(&self, id: &str, state: AgentState) -> String {
        wait_until(&[&self.engine], "the agent ended", || {
            self.engine
                .agent_info(&self.namespace, id)
                .is_some_and(|info| info.state == state)
        });
        let info = self.engine.agent_info(&self.namespace, id).unwrap();
        info.exit.map(|exit| exit.reason).unwrap_or_default()
    }
}

/// Takes `n` messages from `topics`, as their JSON payloads.
fn take(setup: &Setup, topics: &[&str], n: usize) -> Vec<Value> {
    let mut subscription = subscribe(
        &*setup.bus,
        &setup.namespace,
        "reader",
        topics,
        StartFrom::Earliest,
    );
    let mut taken = Vec::new();
    wait_until(&[&setup.engine], "the messages arrived", || {
        while let Some(delivery) = subscription.next().unwrap() {
            let value = match DeadLetter::from_message(&delivery.message) {
                Ok(letter) => json!({ "dead": letter.failure.text }),
                Err(_) => delivery.message.decode_json().unwrap(),
            };
            taken.push(value);
            subscription.complete(Outcome::Handled).unwrap();
        }
        taken.len() >= n
    });
    taken
}

#[test]
fn a_program_that_raises_has_its_message_dead_lettered_and_goes_on() {
    let setup = setup("exec-raises");
    let path = program(
        &setup.dir,
        "picky",
        "    if delivery.payload == 'bad':\n        raise ValueError('not that one')\n    \
         if delivery.payload == 'nowhere':\n        ctx.publish('', 'lost')\n        return\n    \
         assert ctx.publish('out', delivery.payload.upper(), wait=True)",
    );
    setup.run("picky", "in", &path, json!({}));
    for text in ["a", "bad", "nowhere", "b"] {
        publish(&*setup.bus, &setup.namespace, "test", "in", text);
    }
    let got = take(&setup, &["out", ERROR_TOPIC], 4);
    assert!(
        got.contains(&json!("A")) && got.contains(&json!("B")),
        "{got:?}"
    );
    assert!(
        got.contains(&json!({ "dead": "ValueError: not that one" })),
        "{got:?}"
    );
    // A publish nobody waited for, refused: its delivery fails.
    assert!(
        got.contains(&json!({ "dead": "publish failed: a publish needs its topic" })),
        "{got:?}"
    );
    assert!(setup.engine.is_agent_running(&setup.namespace, "picky"));
    setup.engine.shutdown().unwrap();
}

#[test]
fn a_program_that_breaks_the_protocol_ends_only_its_agent_with_the_reason() {
    let setup = setup("exec-broken");
    let cases = [
        (
            "garbage",
            "    print('hello there', file=sys.__stdout__, flush=True)",
            "a line that is not JSON",
        ),
        (
            "other_id",
            "    sys.__stdout__.write('{\"kind\": \"done\", \"id\": \"42\"}\\n'); sys.__stdout__.flush()",
            "done for \"42\", which is not the delivery handed out",
        ),
        (
            "long_line",
            "    sys.__stdout__.write('{\"kind\": \"x\", \"pad\": \"' + 'x' * 5000 + '\"}\\n'); sys.__stdout__.flush()",
            "a line of over 1024 bytes",
        ),
        (
            "unknown_kind",
            "    ctx._ask({'kind': 'teleport'})",
            "a line of unknown kind \"teleport\"",
        ),
        ("dies", "    os.kill(os.getpid(), 9)", "killed by signal 9"),
        ("exits", "    sys.exit(3)", "exited with code 3"),
        (
            "finishes",
            "    sys.exit(0)",
            "closed its output (the program exited with code 0)",
        ),
        ("sleeps", "    time.sleep(30)", "did not answer in time"),
    ];
    for (name, body, _) in &cases {
        let path = program(&setup.dir, name, body);
        let mut extra = json!({ "max_line_bytes": 1024 });
        if *name == "sleeps" {
            extra = json!({});
        }
        setup.run(name, &format!("to-{name}"), &path, extra);
    }
    let steady = program(&setup.dir, "steady", "    ctx.reply('fine')");
    setup.run("steady", "steady", &steady, json!({}));
    for (name, _, _) in &cases {
        publish(
            &*setup.bus,
            &setup.namespace,
            "test",
            &format!("to-{name}"),
            "go",
        );
    }
    for (name, _, expected) in &cases {
        // A program that exits with code 0 has finished: its agent exited.
        let state = if *name == "finishes" {
            AgentState::Exited
        } else {
            AgentState::Crashed
        };
        let reason = setup.ended(name, state);
        assert!(reason.starts_with("exec: "), "{name}: {reason}");
        assert!(reason.contains(expected), "{name}: {reason}");
    }
    // The others were not affected.
    let asked = publish(&*setup.bus, &setup.namespace, "test", "steady", "ok?");
    let mut inbox = subscribe(
        &*setup.bus,
        &setup.namespace,
        "test",
        &["inbox:test"],
        StartFrom::Earliest,
    );
    wait_until(&[&setup.engine], "steady answered", || {
        inbox
            .next()
            .unwrap()
            .is_some_and(|delivery| delivery.message.in_reply_to == Some(asked))
    });
    setup.engine.shutdown().unwrap();
}

#[test]
fn requests_and_replies_cross_between_a_program_and_the_guild() {
    let setup = setup("exec-request");
    // Answers each question with how many questions the topic holds so far.
    let path = program(
        &setup.dir,
        "answerer",
        "    seen = ctx.history('questions')\n    \
         ctx.reply({'question': delivery.payload, 'seen': len(seen), 'sender': delivery.sender})",
    );
    // Both asked before the agent starts, so each sees both in the history.
    let first = publish(&*setup.bus, &setup.namespace, "asker", "questions", "one?");
    let second = publish(&*setup.bus, &setup.namespace, "asker", "questions", "two?");
    setup.run("answerer", "questions", &path, json!({}));
    let mut inbox = subscribe(
        &*setup.bus,
        &setup.namespace,
        "asker",
        &["inbox:asker"],
        StartFrom::Earliest,
    );
    let mut answers = Vec::new();
    wait_until(&[&setup.engine], "both answers arrived", || {
        while let Some(delivery) = inbox.next().unwrap() {
            answers.push((
                delivery.message.in_reply_to,
                delivery.message.decode_json::<Value>().unwrap(),
            ));
            inbox.complete(Outcome::Handled).unwrap();
        }
        answers.len() == 2
    });
    assert_eq!(
        answers,
        [
            (
                Some(first),
                json!({ "question": "one?", "seen": 2, "sender": "asker" })
            ),
            (
                Some(second),
                json!({ "question": "two?", "seen": 2, "sender": "asker" })
            ),
        ]
    );
    setup.engine.shutdown().unwrap();
}

#[test]
fn bad_exec_settings_are_refused_by_name() {
    let setup = setup("exec-settings");
    for (properties, expected) in [
        (json!({ "command": [] }), "`command` needs the program"),
        (
            json!({ "command": ["python3"], "colour": 1 }),
            "unknown field `colour`",
        ),
        (
            json!({ "command": ["python3"], "max_line_bytes": 1 }),
            "`max_line_bytes` is from 64",
        ),
        (
            json!({ "command": ["/no/such/program"] }),
            "cannot start \"/no/such/program\"",
        ),
    ] {
        let mut spec = AgentSpec::new("x", "exec");
        spec.properties = properties;
        let refused = setup.engine.run_agent(&setup.guild, spec).unwrap_err();
        assert!(refused.to_string().contains(expected), "{refused}");
    }
}

/// A spec file in `dir` of one supervised exec agent `id` running `<id>.py` on topic
/// `in` (with `extra` lines in its table), sent `inputs`, complete after `outputs`
/// messages on `out`.
fn supervised_spec(dir: &Path, id: &str, extra: &str, inputs: &[&str], outputs: u64) -> PathBuf {
    let sends: Vec<String> = inputs
        .iter()
        .map(|input| format!("    {{ topic = \"in\", payload = \"{input}\" }},"))
        .collect();
    let spec = format!(
        "id = \"{id}-exec\"\n\n[supervision]\nrestart = \"transient\"\n\
         backoff = {{ kind = \"fixed\", initial_ms = 10 }}\n\n[[agents]]\nid = \"{id}\"\n\
         type = \"exec\"\ntopics = [\"in\"]\n{extra}\n\
         properties = {{ command = [\"python3\", \"{id}.py\"] }}\n\n[run]\nsend = [\n{}\n]\n\
         until = {{ topic = \"out\", count = {outputs} }}\nshow = [\"out\"]\ntimeout_secs = 60\n",
        sends.join("\n")
    );
    let path = dir.join(format!("{id}.toml"));
    std::fs::write(&path, spec).unwrap();
    path
}

/// `guild run <spec> --engine <engine>`, which must succeed: what it printed.
fn run_guild(spec: &Path, engine: &str) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_guild"))
        .args(["run", spec.to_str().unwrap(), "--engine", engine])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{engine}: {said}");
    said
}

#[test]
fn a_killed_program_is_restarted_by_its_supervisor_and_resumes() {
    let setup = setup("exec-supervised");
    // Kills itself (SIGKILL) the first time it meets "die"; a file remembers it did.
    program(
        &setup.dir,
        "fragile",
        "    if delivery.payload == 'die' and not os.path.exists('died'):\n        \
         open('died', 'w').close()\n        os.kill(os.getpid(), 9)\n    \
         ctx.publish('out', delivery.payload)",
    );
    let spec = supervised_spec(&setup.dir, "fragile", "", &["a", "die", "b", "c"], 3);
    for engine in ["threads", "process"] {
        let _ = std::fs::remove_file(setup.dir.join("died"));
        let said = run_guild(&spec, engine);
        for line in [
            "[out] fragile -> \"a\"",
            "[out] fragile -> \"b\"",
            "[out] fragile -> \"c\"",
        ] {
            assert!(said.contains(line), "{engine}: no {line:?} in\n{said}");
        }
        assert!(said.contains("killed by signal 9"), "{engine}: {said}");
        assert!(said.contains("restart"), "{engine}: {said}");
    }
}

#[test]
fn a_program_past_its_memory_cap_is_killed_by_the_limit_and_restarted() {
    let setup = setup("exec-memory");
    // Asks for 1 GiB under a 256 MiB cap: Python's allocation fails (MemoryError), the
    // client reports it, and the agent is killed by its limit; its supervisor restarts
    // it, and it goes on without the message.
    program(
        &setup.dir,
        "greedy",
        "    if delivery.payload == 'eat':\n        ctx.publish('out', len(bytearray(1 << 30)))\n    \
         ctx.publish('out', delivery.payload)",
    );
    let spec = supervised_spec(
        &setup.dir,
        "greedy",
        "limits = { memory_bytes = 268435456 }",
        &["a", "eat", "b"],
        2,
    );
    let said = run_guild(&spec, "process");
    assert!(
        said.contains(
            "agent greedy was killed by a limit: exec: the program ran out of memory past its \
             cap of 268435456 bytes (MemoryError"
        ),
        "{said}"
    );
    assert!(said.contains("its supervisor restarts it"), "{said}");
    assert!(said.contains("[out] greedy -> \"b\""), "{said}");
}

#[test]
fn a_program_that_stops_reading_cannot_hold_its_agent_past_the_timeout() {
    let setup = setup("exec-deaf");
    // Says it is ready, then never reads again.
    let path = setup.dir.join("deaf.py");
    std::fs::write(
        &path,
        "import sys, time\nsys.stdin.readline()\nprint('{\"kind\": \"ready\"}', flush=True)\ntime.sleep(60)\n",
    )
    .unwrap();
    setup.run("deaf", "in", &path, json!({}));
    // Far more than a pipe holds.
    let big = "x".repeat(1 << 20);
    publish(&*setup.bus, &setup.namespace, "test", "in", &big);
    let reason = setup.ended("deaf", AgentState::Crashed);
    assert!(
        reason.contains("the program did not read its input in time"),
        "{reason}"
    );
    setup.engine.shutdown().unwrap();
}

#[test]
fn on_the_pool_a_waiting_program_does_not_hold_the_only_worker() {
    let setup = setup("exec-pool");
    // Waits (10 s at most) until the Rust responder, on the same one-worker pool, has
    // answered a ping: it could not if this agent's wait held the worker.
    program(
        &setup.dir,
        "waiter",
        "    for _ in range(1000):\n        if ctx.history('pong'):\n            \
         ctx.publish('out', 'saw the pong')\n            return\n        \
         time.sleep(0.01)\n    raise RuntimeError('no pong: the worker was held')",
    );
    let spec = setup.dir.join("pool.toml");
    std::fs::write(
        &spec,
        r#"id = "pool-exec"

[pool]
workers = 1

[[agents]]
id = "waiter"
type = "exec"
topics = ["start"]
properties = { command = ["python3", "waiter.py"] }

[[agents]]
id = "responder"
type = "responder"
topics = ["ping"]

[run]
send = [
    { topic = "start", payload = "go" },
    { topic = "ping", payload = "hi", reply_to = "pong" },
]
until = { topic = "out", count = 1 }
show = ["out"]
timeout_secs = 30
"#,
    )
    .unwrap();
    let said = run_guild(&spec, "pool");
    assert!(said.contains("[out] waiter -> \"saw the pong\""), "{said}");
}
