//! One trace across processes: `guild run --otlp` on the request/response example, on
//! the process engine, exports to a real OTLP/gRPC receiver a trace per question in
//! which the responder's span (sent by its own agent process) is the child of the
//! publisher's span and the collector's span (sent by another process) follows it, over
//! the memory broker and over a private Redis.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use conformance::otlp_receiver::{OtlpReceiver, ReceivedSpan};
use conformance::redis_server::RedisServer;

/// Spans the OpenTelemetry protocol numbers as producer and consumer.
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;

/// Runs the example `name` with `messaging` on the process engine, exporting to
/// `receiver`, and returns the pid of the `guild` process.
fn run_example(receiver: &OtlpReceiver, name: &str, messaging: &str) -> u32 {
    run_example_with(receiver, name, messaging, &[])
}

/// As [`run_example`], with `env` set for `guild`.
fn run_example_with(
    receiver: &OtlpReceiver,
    name: &str,
    messaging: &str,
    env: &[(&str, &str)],
) -> u32 {
    let example = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name);
    let child = Command::new(env!("CARGO_BIN_EXE_guild"))
        .args([
            "run",
            "--quiet",
            "--engine",
            "process",
            "--messaging",
            messaging,
        ])
        .arg("--otlp")
        .arg(receiver.endpoint())
        .arg(&example)
        .env_remove("GUILD_ENGINE")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("GUILD_TRACE")
        .env_remove("OTEL_TRACES_SAMPLER")
        .env_remove("OTEL_TRACES_SAMPLER_ARG")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("guild runs");
    let pid = child.id();
    let output = child.wait_with_output().expect("guild runs");
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    pid
}

fn handled_by<'a>(spans: &'a [ReceivedSpan], agent: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|span| span.kind == CONSUMER && span.attribute("guild.agent.id") == Some(agent))
        .collect()
}

/// Checks that every question made one trace: publish (in `guild`) → responder (in its
/// process) → collector (in another).
fn check_traces(spans: &[ReceivedSpan], guild_pid: u32, messaging: &str) {
    let publishes: Vec<_> = spans.iter().filter(|span| span.kind == PRODUCER).collect();
    let responder = handled_by(spans, "responder");
    let collector = handled_by(spans, "collector");
    let summary = || {
        spans
            .iter()
            .map(|span| {
                format!(
                    "{} {:?} parent {:?}",
                    span.name, span.attributes, span.parent_span_id
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        publishes.len(),
        3,
        "one publish span per question:\n{}",
        summary()
    );
    assert_eq!(
        responder.len(),
        3,
        "one span per question handled:\n{}",
        summary()
    );
    assert_eq!(
        collector.len(),
        3,
        "one span per answer collected:\n{}",
        summary()
    );
    for publish in &publishes {
        assert_eq!(publish.pid(), Some(guild_pid.to_string().as_str()));
        assert!(
            publish.parent_span_id.is_empty(),
            "a question starts a trace"
        );
        assert_eq!(publish.name, "publish questions");
        let answered = responder
            .iter()
            .find(|span| span.parent_span_id == publish.span_id)
            .unwrap_or_else(|| {
                panic!(
                    "no responder span is the child of {publish:?}:\n{}",
                    summary()
                )
            });
        assert_eq!(answered.trace_id, publish.trace_id);
        assert_eq!(answered.name, "process questions");
        assert_eq!(answered.attribute("messaging.system"), Some(messaging));
        assert_eq!(
            answered.attribute("messaging.destination.name"),
            Some("questions")
        );
        assert_eq!(answered.attribute("guild.engine"), Some("process"));
        assert_eq!(answered.attribute("guild.id"), Some("request-response"));
        assert!(answered.attribute("messaging.message.id").is_some());
        let responder_pid = answered.pid().expect("spans say which process sent them");
        assert_ne!(
            responder_pid,
            guild_pid.to_string(),
            "the responder runs in a process of its own"
        );
        let collected = collector
            .iter()
            .find(|span| span.parent_span_id == answered.span_id)
            .unwrap_or_else(|| panic!("no collector span follows {answered:?}:\n{}", summary()));
        assert_eq!(collected.trace_id, publish.trace_id);
        assert_eq!(collected.name, "process answers");
        let collector_pid = collected.pid().expect("spans say which process sent them");
        assert_ne!(
            collector_pid, responder_pid,
            "the collector runs in another process"
        );
        assert_ne!(collector_pid, guild_pid.to_string());
    }
}

fn enough(spans: &[ReceivedSpan]) -> bool {
    spans.iter().filter(|span| span.kind == PRODUCER).count() >= 3
        && handled_by(spans, "responder").len() >= 3
        && handled_by(spans, "collector").len() >= 3
}

#[test]
fn one_trace_follows_each_question_through_agent_processes_over_the_memory_broker() {
    let receiver = OtlpReceiver::start().expect("an OTLP receiver starts");
    let pid = run_example(&receiver, "request-response.toml", "memory");
    // Every process flushes its spans before it exits; the wait only bounds a failure.
    let spans = receiver.wait_for(Duration::from_secs(30), enough);
    check_traces(&spans, pid, "memory");
}

#[test]
fn one_trace_follows_each_question_through_agent_processes_over_redis() {
    let redis = RedisServer::start();
    let receiver = OtlpReceiver::start().expect("an OTLP receiver starts");
    let pid = run_example(&receiver, "request-response.toml", &redis.url());
    let spans = receiver.wait_for(Duration::from_secs(30), enough);
    check_traces(&spans, pid, "redis");
}

#[test]
fn an_endpoint_that_is_not_http_is_refused_by_name() {
    let output = Command::new(env!("CARGO_BIN_EXE_guild"))
        .args(["run", "--otlp", "grpc://nowhere:4317", "no-such-spec.toml"])
        .output()
        .expect("guild runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("grpc://nowhere:4317"), "{stderr}");
}

/// The lifecycle span named `name` of `agent`, with its one event's attributes.
fn lifecycle<'a>(spans: &'a [ReceivedSpan], agent: &str, name: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|span| span.name == name && span.attribute("guild.agent.id") == Some(agent))
        .collect()
}

#[test]
fn lifecycle_events_are_exported_with_the_exit_code_and_reason() {
    let receiver = OtlpReceiver::start().expect("an OTLP receiver starts");
    run_example(&receiver, "flaky-supervised.toml", "memory");
    let spans = receiver.wait_for(Duration::from_secs(30), |spans| {
        lifecycle(spans, "flaky", "agent restarted").len() >= 3
            && !lifecycle(spans, "flaky", "agent stopped").is_empty()
    });
    assert!(lifecycle(&spans, "flaky", "agent started").len() >= 4);
    assert!(lifecycle(&spans, "flaky", "agent restarted").len() >= 3);
    let crashes = lifecycle(&spans, "flaky", "agent crashed");
    assert!(crashes.len() >= 3, "{spans:#?}");
    for crash in crashes {
        let (_, attributes) = &crash.events[0];
        // A panic ends an agent process with code 70, and the reason names the panic.
        assert_eq!(
            attributes.get("exit.code").map(String::as_str),
            Some("70"),
            "{crash:?}"
        );
        assert_eq!(attributes.get("event").map(String::as_str), Some("crashed"));
        assert!(
            attributes
                .get("reason")
                .is_some_and(|reason| reason.contains("panicked")),
            "{crash:?}"
        );
        assert_eq!(crash.attribute("guild.engine"), Some("process"));
    }
}

/// With sampling off nothing is exported, by the `guild` process or its agent
/// processes: the decision not to sample travels with the messages.
#[test]
fn a_sampler_that_keeps_nothing_exports_nothing() {
    let receiver = OtlpReceiver::start().expect("an OTLP receiver starts");
    run_example_with(
        &receiver,
        "request-response.toml",
        "memory",
        &[("OTEL_TRACES_SAMPLER", "always_off")],
    );
    // Every process has exited, and flushed what it had, before the run returned.
    assert_eq!(receiver.spans(), Vec::new());
}

#[test]
fn a_sampler_guild_does_not_offer_is_refused_by_name() {
    let output = Command::new(env!("CARGO_BIN_EXE_guild"))
        .args([
            "run",
            "--otlp",
            "http://127.0.0.1:4317",
            "no-such-spec.toml",
        ])
        .env("OTEL_TRACES_SAMPLER", "jaeger_remote")
        .output()
        .expect("guild runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("OTEL_TRACES_SAMPLER=\"jaeger_remote\""),
        "{stderr}"
    );
}

/// `--otlp` pushes the guild's metrics too: the last push carries the figures the run's
/// summary prints.
#[test]
fn metrics_are_pushed_over_otlp_with_the_figures_of_the_summary() {
    let receiver = OtlpReceiver::start().expect("an OTLP receiver starts");
    run_example_with(
        &receiver,
        "request-response.toml",
        "memory",
        &[("OTEL_METRIC_EXPORT_INTERVAL", "100")],
    );
    let points = receiver.metric_points();
    let value = |name: &str, agent: &str| {
        points
            .iter()
            .find(|point| {
                point.name == name
                    && point.attributes.get("agent").map(String::as_str) == Some(agent)
            })
            .map(|point| point.value)
    };
    // Three questions in and three answers out of the responder; three answers into the
    // collector and one result out.
    assert_eq!(
        value("guild.agent.messages_in", "responder"),
        Some(3.0),
        "{points:#?}"
    );
    assert_eq!(value("guild.agent.messages_out", "responder"), Some(3.0));
    assert_eq!(value("guild.agent.messages_in", "collector"), Some(3.0));
    assert_eq!(value("guild.agent.messages_out", "collector"), Some(1.0));
    assert_eq!(value("guild.agent.errors", "responder"), Some(0.0));
    assert_eq!(value("guild.agent.running", "collector"), Some(1.0));
    let point = points
        .iter()
        .find(|point| point.name == "guild.agent.messages_in")
        .expect("a point");
    assert_eq!(
        point.attributes.get("guild").map(String::as_str),
        Some("request-response")
    );
    assert_eq!(
        point.attributes.get("engine").map(String::as_str),
        Some("process")
    );
}
