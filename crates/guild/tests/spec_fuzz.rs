//! The spec loader and checks, fuzzed: the examples, mutated at random (lines replaced
//! by hostile ones, deleted or doubled, numbers swapped for extremes, bytes inserted),
//! never make loading or checking panic; and a mutated spec that passes the checks
//! never fails to launch for a spec reason (it is launched on the sync engine over the
//! in-memory bus, its inputs published, then stopped).
//!
//! The case count is printed, and quoted in the note on the reliability issue.

use std::path::Path;

use guild::{ErrorKind, GuildBuilder, LoadedSpec, Message, Payload, SpecFormat, builtin, select};
use proptest::prelude::*;

/// Mutated specs each run checks.
const CASES: u32 = 10_000;

/// Lines a hostile user might write.
const HOSTILE_LINES: &[&str] = &[
    "replicas = 1000000000",
    "replicas = 0",
    "replicas = 10000",
    "timeout_secs = 18446744073709551615",
    "timeout_secs = 0",
    "id = \"\\u0000\"",
    "id = \"\"",
    "id = \"a\\nb\"",
    "type = \"nope\"",
    "engine = \"process\"",
    "engine = \"warp\"",
    "messaging = \"redis://h:99999\"",
    "messaging = \"redis://h:1?maxlen=x\"",
    "messaging = \"rediss://h:1\"",
    "messaging = \"memory://x\"",
    "limits = { memory_bytes = 0 }",
    "limits = { cpu_seconds = 18446744073709551615 }",
    "limits = { open_files = 1, best_effort = true }",
    "restart = \"never\"",
    "topics = [\"inbox:worker-1\", \"guild.errors\", \"\"]",
    "properties = { samples = -1 }",
    "properties = { to = 5 }",
    "properties = { expect = 0, to = \"x\" }",
    "send = [{ topic = \"guild.errors\" }]",
    "until = { topic = \"estimate\", count = 0 }",
    "until = { quiet_ms = 18446744073709551615 }",
    "start_from = \"earliest\"",
    "priority = \"urgent\"",
    "[[agents]]",
    "[run]",
    "dependencies = [\"x\"]",
    "\"agents\": [],",
    "\"replicas\": 99999999999,",
    "placement = \"dedicated\"",
    "weight = 0",
    "weight = 4294967295",
    "rate = { per_second = 1e308, burst = 0 }",
    "rate = { per_second = -0.0 }",
    "[pool]",
    "workers = 100000",
    "policy = \"priority\"",
    "policy = \"rate\"",
    "budget = 0",
    "time_slice_ms = 18446744073709551615",
    "max_concurrent = 0",
    "[supervision]",
    "strategy = \"rest_for_one\"",
    "max_restarts = 0",
    "within_ms = 0",
    "restart = \"permanent\"",
    "backoff = { kind = \"linear\", initial_ms = 18446744073709551615, jitter = nan }",
    "backoff = { initial_ms = 0, max_ms = 0, jitter = 1.0 }",
    "health = { interval_ms = 0, failures = 0 }",
    "health = { interval_ms = 1, timeout_ms = 1, failures = 4294967295 }",
    "breaker = { failures = 1, window_ms = 1, cooldown_ms = 86400001 }",
    "watchdog_ms = 0",
    "[supervision.groups.g]",
    "agents = [\"worker\", \"worker\", \"nobody\"]",
];

/// Numbers that break naive arithmetic.
const HOSTILE_NUMBERS: &[&str] = &[
    "0",
    "-1",
    "18446744073709551615",
    "18446744073709551616",
    "4294967296",
    "1e308",
    "nan",
];

#[derive(Debug, Clone)]
enum Mutation {
    Replace(usize, usize),
    Insert(usize, usize),
    Delete(usize),
    Double(usize),
    Number(usize, usize),
    Byte(usize, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0..HOSTILE_LINES.len()).prop_map(|(at, l)| Mutation::Replace(at, l)),
        (any::<usize>(), 0..HOSTILE_LINES.len()).prop_map(|(at, l)| Mutation::Insert(at, l)),
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Double),
        (any::<usize>(), 0..HOSTILE_NUMBERS.len()).prop_map(|(at, n)| Mutation::Number(at, n)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Byte(at, b)),
    ]
}

fn apply(source: &str, mutations: &[Mutation]) -> String {
    let mut lines: Vec<String> = source.lines().map(str::to_owned).collect();
    for mutation in mutations {
        if lines.is_empty() {
            lines.push(String::new());
        }
        let n = lines.len();
        match *mutation {
            Mutation::Replace(at, l) => lines[at % n] = HOSTILE_LINES[l].to_owned(),
            Mutation::Insert(at, l) => lines.insert(at % (n + 1), HOSTILE_LINES[l].to_owned()),
            Mutation::Delete(at) => {
                lines.remove(at % n);
            }
            Mutation::Double(at) => {
                let line = lines[at % n].clone();
                lines.insert(at % n, line);
            }
            Mutation::Number(at, k) => {
                let line = &mut lines[at % n];
                if let Some(start) = line.find(|c: char| c.is_ascii_digit()) {
                    let end = line[start..]
                        .find(|c: char| !c.is_ascii_digit() && c != '_')
                        .map_or(line.len(), |e| start + e);
                    line.replace_range(start..end, HOSTILE_NUMBERS[k]);
                }
            }
            Mutation::Byte(at, byte) => {
                let line = &mut lines[at % n];
                let mut bytes = std::mem::take(line).into_bytes();
                bytes.insert(at % (bytes.len() + 1), byte);
                *line = String::from_utf8_lossy(&bytes).into_owned();
            }
        }
    }
    lines.join("\n")
}

fn examples() -> Vec<(String, SpecFormat)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    [
        "monte-carlo-pi.toml",
        "request-response.toml",
        "pipeline.json",
    ]
    .iter()
    .map(|name| {
        let source = std::fs::read_to_string(dir.join(name)).expect("the example reads");
        let format = if name.ends_with(".json") {
            SpecFormat::Json
        } else {
            SpecFormat::Toml
        };
        (source, format)
    })
    .collect()
}

/// Loads and checks `source`; when it passes, launches it. Returns whether it passed.
fn load_check_launch(source: String, format: SpecFormat) -> Result<bool, TestCaseError> {
    let Ok(loaded) = LoadedSpec::parse("fuzz", source, format) else {
        return Ok(false);
    };
    let registry = builtin::builtin_registry();
    let known = select::known_names();
    // Checked as written (on the default engine, the pool), then as it is launched here.
    let _ = loaded.check(&registry, &known);
    if loaded
        .check_as_run(&registry, &known, Some("sync"), Some("memory"))
        .is_err()
    {
        return Ok(false);
    }
    let spec = loaded.spec;
    let sends = spec.run.send.clone();
    let mut guild = GuildBuilder::new(spec)
        .registry(registry)
        .engine("sync")
        .messaging("memory")
        .build()
        .map_err(|e| TestCaseError::fail(format!("a checked spec did not build: {e}")))?;
    let launched = guild.launch_all().and_then(|()| {
        sends.iter().try_for_each(|send| {
            let mut message =
                Message::builder(send.topic.clone(), Payload::from(send.payload.clone()));
            if let Some(reply_to) = &send.reply_to {
                message = message.reply_to(reply_to.clone());
            }
            guild.publish(message).map(|_| ())
        })
    });
    let _ = guild.shutdown();
    match launched {
        Ok(()) => Ok(true),
        Err(error)
            if matches!(
                error.kind(),
                ErrorKind::InvalidSpec | ErrorKind::UnknownAgentType | ErrorKind::StartFailed
            ) =>
        {
            Err(TestCaseError::fail(format!(
                "a checked spec failed at run time for a spec reason: {error}"
            )))
        }
        Err(_) => Ok(true),
    }
}

#[test]
fn mutated_specs_never_panic_and_checked_ones_launch() {
    let examples = examples();
    let mut config = ProptestConfig::with_cases(CASES);
    config.failure_persistence = None;
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let passed = std::cell::Cell::new(0u32);
    let strategy = (0..examples.len(), prop::collection::vec(mutation(), 1..4));
    let result = runner.run(&strategy, |(example, mutations)| {
        let (source, format) = &examples[example];
        if load_check_launch(apply(source, &mutations), *format)? {
            passed.set(passed.get() + 1);
        }
        Ok(())
    });
    if let Err(error) = result {
        panic!("{error}");
    }
    eprintln!(
        "{CASES} mutated specs loaded and checked without a panic; {} passed the checks and launched",
        passed.get()
    );
}
