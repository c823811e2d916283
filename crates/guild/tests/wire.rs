//! What flows through a guild's Redis can be read without writing Rust: `guild history`
//! and `guild tail` print it as JSON lines, and a Python program reads it with the
//! module `protoc` generates from `proto/guild/v1/message.proto`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use conformance::redis_server::RedisServer;
use serde_json::Value;

const QUESTIONS: [&str; 3] = ["what is a guild?", "who answers?", "when is it done?"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn guild(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_guild"))
        .args(args)
        .env_remove("GUILD_ENGINE")
        .env_remove("GUILD_MESSAGING")
        .output()
        .expect("guild runs")
}

fn succeeded(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn failed(output: &Output) -> String {
    assert!(!output.status.success(), "succeeded unexpectedly");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect()
}

/// Runs the request-response example on `redis` to completion.
fn run_example(redis: &RedisServer) {
    let example = root().join("examples/request-response.toml");
    succeeded(&guild(&[
        "run",
        "--quiet",
        "--messaging",
        &redis.url(),
        example.to_str().unwrap(),
    ]));
}

/// The keys of `redis` matching `pattern`.
fn keys(redis: &RedisServer, pattern: &str) -> Vec<String> {
    let output = Command::new("redis-cli")
        .args([
            "-p",
            &redis.port().to_string(),
            "--scan",
            "--pattern",
            pattern,
        ])
        .output()
        .expect("redis-cli runs (it comes with redis-server)");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn payloads(messages: &[Value]) -> Vec<&str> {
    messages
        .iter()
        .map(|m| m["payload"].as_str().expect("a text payload"))
        .collect()
}

#[test]
fn history_and_tail_print_a_guild_s_messages_as_json() {
    let redis = RedisServer::start();
    run_example(&redis);
    let url = redis.url();

    let questions = lines(&succeeded(&guild(&[
        "history",
        "questions",
        "--messaging",
        &url,
    ])));
    assert_eq!(payloads(&questions), QUESTIONS);
    for question in &questions {
        assert_eq!(question["topic"], "questions");
        assert_eq!(question["reply_to"], "answers");
        assert_eq!(question["format"], "json");
        assert_eq!(question["priority"], "normal");
        let id: u64 = question["id"].as_str().unwrap().parse().unwrap();
        assert!(id > 0);
    }
    let answers = lines(&succeeded(&guild(&[
        "history",
        "answers",
        "--messaging",
        &url,
        "--guild",
        "request-response",
    ])));
    assert_eq!(answers.len(), 3);
    for answer in &answers {
        assert_eq!(answer["sender"], "responder");
        assert!(questions.iter().any(|q| q["id"] == answer["in_reply_to"]));
    }

    let tailed = lines(&succeeded(&guild(&[
        "tail",
        "questions",
        "--messaging",
        &url,
        "--from",
        "earliest",
        "--count",
        "3",
    ])));
    assert_eq!(tailed, questions);
    assert_eq!(keys(&redis, "*:pos:guild-tail-*"), Vec::<String>::new());
}

#[test]
fn tail_follows_a_running_guild_and_stops_on_sigterm() {
    let redis = RedisServer::start();
    let url = redis.url();
    let mut tail = Command::new(env!("CARGO_BIN_EXE_guild"))
        .args([
            "tail",
            "questions",
            "answers",
            "--guild",
            "request-response",
        ])
        .args(["--messaging", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("guild tail runs");
    let (sent, received) = mpsc::channel();
    for (name, stream) in [
        (
            "stdout",
            Box::new(tail.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        ),
        ("stderr", Box::new(tail.stderr.take().unwrap())),
    ] {
        let sent = sent.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = sent.send((name, line));
            }
        });
    }
    let next = |what: &str| {
        received
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no {what} from guild tail"))
    };
    // Subscribed: what is published from now on is followed.
    let (_, watching) = next("announcement");
    assert!(
        watching.contains("watching questions, answers"),
        "{watching}"
    );
    run_example(&redis);
    let mut followed = Vec::new();
    while followed.len() < 6 {
        let (stream, line) = next("message");
        assert_eq!(stream, "stdout", "{line}");
        followed.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    let topics: Vec<&str> = followed
        .iter()
        .map(|m| m["topic"].as_str().unwrap())
        .collect();
    assert_eq!(topics.iter().filter(|t| **t == "questions").count(), 3);
    assert_eq!(topics.iter().filter(|t| **t == "answers").count(), 3);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tail.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tail.wait().unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(keys(&redis, "*:pos:guild-tail-*"), Vec::<String>::new());
}

#[test]
fn tail_and_history_name_what_they_cannot_read() {
    let error = failed(&guild(&["tail", "t", "--messaging", "memory"]));
    assert!(error.contains("memory backend lives inside"), "{error}");
    let error = failed(&guild(&[
        "history",
        "t",
        "--messaging",
        "redis://127.0.0.1:1",
    ]));
    assert!(error.contains("127.0.0.1:1"), "{error}");
    let error = failed(&guild(&["history", "t", "--messaging", "kafka://x"]));
    assert!(error.contains("unknown messaging backend"), "{error}");

    let redis = RedisServer::start();
    let error = failed(&guild(&["history", "t", "--messaging", &redis.url()]));
    assert!(error.contains("no guild has published"), "{error}");
    run_example(&redis);
    let pipeline = root().join("examples/pipeline.json");
    succeeded(&guild(&[
        "run",
        "--quiet",
        "--messaging",
        &redis.url(),
        pipeline.to_str().unwrap(),
    ]));
    let error = failed(&guild(&["history", "t", "--messaging", &redis.url()]));
    assert!(
        error.contains("2 guilds") && error.contains("request-response"),
        "{error}"
    );
}

/// `examples/python/read_topic.py` reads the questions with the generated module and
/// finds what `guild history` shows.
#[test]
fn a_python_program_reads_a_guild_topic_with_the_generated_module() {
    let generated = std::env::temp_dir().join(format!("guild-python-{}", std::process::id()));
    std::fs::create_dir_all(&generated).unwrap();
    let protoc = Command::new("python3")
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(root().join("proto"))
        .arg(format!("--python_out={}", generated.display()))
        .arg(root().join("proto/guild/v1/message.proto"))
        .output()
        .expect("python3 runs");
    assert!(
        protoc.status.success(),
        "generating the Python module needs grpcio-tools (`python3 -m pip install \
         grpcio-tools redis`; .ci/run installs it): {}",
        String::from_utf8_lossy(&protoc.stderr)
    );

    let redis = RedisServer::start();
    run_example(&redis);
    let read = Command::new("python3")
        .arg(root().join("examples/python/read_topic.py"))
        .args([&redis.url(), "request-response", "questions"])
        .env("PYTHONPATH", &generated)
        .output()
        .expect("python3 runs");
    let _ = std::fs::remove_dir_all(&generated);
    let python = lines(&succeeded(&read));
    let guild = lines(&succeeded(&guild(&[
        "history",
        "questions",
        "--messaging",
        &redis.url(),
    ])));
    assert_eq!(python.len(), 3);
    for (python, guild) in python.iter().zip(&guild) {
        for field in [
            "id",
            "sender",
            "topics",
            "payload",
            "reply_to",
            "timestamp_ms",
        ] {
            assert_eq!(python[field], guild[field], "{field}");
        }
        assert_eq!(python["priority"], "PRIORITY_NORMAL");
    }
}
