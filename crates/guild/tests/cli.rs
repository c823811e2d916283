//! The `guild` command, run as a real process on the repository's examples.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// Runs `guild` with `args` (and `GUILD_ENGINE` unset unless given), returning its output.
fn guild(args: &[&str], engine_variable: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_guild"));
    command.args(args).env_remove("GUILD_ENGINE");
    if let Some(engine) = engine_variable {
        command.env("GUILD_ENGINE", engine);
    }
    command.output().expect("guild runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn example(name: &str) -> String {
    examples().join(name).display().to_string()
}

#[test]
fn the_request_response_example_shows_the_exchange_and_exits_zero() {
    let output = guild(&["run", &example("request-response.toml")], None);
    let out = stdout(&output);
    assert!(output.status.success(), "{out}\n{}", stderr(&output));
    assert!(
        out.contains("started responder (responder) on pool"),
        "{out}"
    );
    assert!(
        out.contains("[questions] guild -> \"who answers?\""),
        "{out}"
    );
    assert!(
        out.contains("[answers] responder -> \"answer: WHO ANSWERS?\""),
        "{out}"
    );
    assert!(out.contains("[results] collector -> {\"count\":3"), "{out}");
    let summary = out.split("summary after").nth(1).expect("a summary");
    let responder = summary
        .lines()
        .find(|l| l.trim_start().starts_with("responder"))
        .unwrap();
    let counts: Vec<&str> = responder.split_whitespace().collect();
    assert_eq!(
        &counts[3..6],
        ["3", "3", "0"],
        "in, out and errors of the responder: {responder}"
    );
}

#[test]
fn the_monte_carlo_example_estimates_pi_within_a_hundredth() {
    for engine in ["threads", "pool", "process"] {
        let spec = example("monte-carlo-pi.toml");
        let output = guild(&["run", &spec, "--engine", engine], None);
        let out = stdout(&output);
        assert!(output.status.success(), "{out}\n{}", stderr(&output));
        assert!(out.contains(&format!("started worker-4 (monte_carlo) on {engine}")));
        let line = out
            .lines()
            .find(|l| l.contains("[estimate]"))
            .expect("an estimate");
        let json = &line[line.find('{').unwrap()..];
        let estimate: serde_json::Value = serde_json::from_str(json).unwrap();
        let pi = estimate["pi"].as_f64().expect("a number");
        assert!(
            (pi - std::f64::consts::PI).abs() < 0.01,
            "estimate {pi} on {engine}"
        );
        assert_eq!(estimate["sum"]["samples"], 40_000_000.0);
    }
}

#[test]
fn the_flaky_example_is_restarted_with_backoff_and_completes() {
    let output = guild(&["run", &example("flaky-supervised.toml")], None);
    let out = stdout(&output);
    assert!(output.status.success(), "{out}{}", stderr(&output));
    for attempt in 1..=3 {
        assert!(
            out.contains(&format!("restarted flaky (restart {attempt} in a row")),
            "{out}"
        );
    }
    assert!(out.contains("its supervisor restarts it"), "{out}");
    let header = out
        .lines()
        .find(|line| line.trim_start().starts_with("agent ") && line.ends_with("restarts  state"))
        .expect("a restarts column");
    let row = out
        .lines()
        .find(|line| line.trim_start().starts_with("flaky "))
        .expect("a summary row");
    // Jobs 3, 6 and 9 crashed it before the eighth job was done (12 may have too).
    let column = header.find("restarts").unwrap();
    let restarts: u32 = row[column..column + 8].trim().parse().unwrap();
    assert!((3..=4).contains(&restarts), "{out}");
}

#[test]
fn every_example_completes_on_every_engine() {
    let mut specs = 0;
    for entry in std::fs::read_dir(examples()).unwrap() {
        let path = entry.unwrap().path();
        // Spec files; examples/ also holds programs in other languages.
        if !path
            .extension()
            .is_some_and(|extension| extension == "toml" || extension == "json")
        {
            continue;
        }
        specs += 1;
        let path = path.display().to_string();
        for engine in ["sync", "threads", "pool", "process"] {
            let output = guild(&["run", "--quiet", &path, "--engine", engine], None);
            assert!(
                output.status.success(),
                "{path} on {engine}: {}",
                stderr(&output)
            );
            assert!(stdout(&output).contains(&format!("on {engine}")));
        }
    }
    assert!(specs >= 4, "only {specs} example specs found");
}

#[test]
fn the_engine_variable_chooses_the_engine_and_the_flag_overrides_it() {
    let spec = example("request-response.toml");
    let by_variable = stdout(&guild(&["run", "-q", &spec], Some("sync")));
    assert!(by_variable.contains("on sync") && !by_variable.contains("on threads"));
    let by_flag = stdout(&guild(
        &["run", "-q", &spec, "--engine", "threads"],
        Some("sync"),
    ));
    assert!(by_flag.contains("on threads") && !by_flag.contains("on sync"));
}

#[test]
fn a_misspelt_field_is_rejected_with_file_line_and_field() {
    let dir = std::env::temp_dir().join(format!("guild-cli-typo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = std::fs::read_to_string(examples().join("request-response.toml")).unwrap();
    let typo = dir.join("typo.toml");
    std::fs::write(
        &typo,
        spec.replacen("topics = [\"answers\"]", "topcs = [\"answers\"]", 1),
    )
    .unwrap();
    let output = guild(&["run", &typo.display().to_string()], None);
    assert!(!output.status.success());
    let err = stderr(&output);
    let line = spec
        .lines()
        .position(|l| l.starts_with("topics = [\"answers\"]"))
        .unwrap()
        + 1;
    let expected = format!(
        "{}:{line}:1: agents[1].topcs: unknown field `topcs`",
        typo.display()
    );
    assert!(err.contains(&expected), "{err}\nshould contain\n{expected}");
    assert!(stdout(&output).is_empty(), "nothing was started");
}

#[test]
fn validate_reports_every_problem() {
    let dir = std::env::temp_dir().join(format!("guild-cli-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        r#"{"id": "g", "engine": "warp", "agents": [{"id": "a", "type": "nope", "topics": ["t"]}]}"#,
    )
    .unwrap();
    let output = guild(&["validate", &bad.display().to_string()], None);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("engine: unknown engine \"warp\""), "{err}");
    assert!(
        err.contains("agents[0].type: unknown agent type \"nope\""),
        "{err}"
    );
    let good = guild(&["validate", &example("pipeline.json")], None);
    assert!(good.status.success());
    assert!(stdout(&good).contains("ok (2 agents)"));
}

#[test]
fn an_unknown_engine_or_backend_is_named() {
    let spec = example("request-response.toml");
    let engine = guild(&["run", &spec, "--engine", "warp"], None);
    assert!(!engine.status.success());
    assert!(
        stderr(&engine).contains("unknown engine \"warp\""),
        "{}",
        stderr(&engine)
    );
    let messaging = guild(
        &["run", &spec, "--messaging", "carrier-pigeon://loft"],
        None,
    );
    assert!(!messaging.status.success());
    assert!(stderr(&messaging).contains("unknown messaging backend \"carrier-pigeon\""));
}

#[test]
fn the_examples_run_over_a_real_redis() {
    let server = conformance::redis_server::RedisServer::start();
    let url = server.url();
    for engine in ["threads", "process"] {
        let spec = example("request-response.toml");
        let output = guild(
            &["run", &spec, "--engine", engine, "--messaging", &url],
            None,
        );
        let out = stdout(&output);
        assert!(output.status.success(), "{out}\n{}", stderr(&output));
        assert!(out.contains("messaging redis"), "{out}");
        assert!(out.contains("[results] collector -> {\"count\":3"), "{out}");
    }
}

#[test]
fn an_unreachable_redis_is_named_and_its_password_kept_secret() {
    // Nothing listens on port 1.
    let url = "redis://app:hunter2@127.0.0.1:1";
    let spec = example("request-response.toml");
    let output = guild(&["run", &spec, "--messaging", url], None);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("cannot reach Redis at 127.0.0.1:1"), "{err}");
    assert!(
        !err.contains("hunter2") && !stdout(&output).contains("hunter2"),
        "{err}"
    );
}
