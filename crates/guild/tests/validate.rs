//! `guild validate` is the run's own check: every spec below is one `guild run` would
//! refuse (or, before, crashed on), and `validate` refuses it with the file, the line
//! and the field, exits 1, and never panics. `run` refuses the same spec the same way.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};

fn spec_file(spec: &str, extension: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "guild-validate-{}-{}.{extension}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, spec).expect("the spec is written");
    path
}

fn guild(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_guild"))
        .args(args)
        .env_remove("GUILD_ENGINE")
        .output()
        .expect("guild runs")
}

/// Checks that both `validate` and `run` refuse `spec` with a message holding every
/// one of `expected`.
fn check(spec: &str, expected: &[&str]) {
    let path = spec_file(spec, "toml");
    for command in ["validate", "run"] {
        let output = guild(&[command.as_ref(), path.as_os_str()]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{command} on\n{spec}\n{stderr}"
        );
        for text in expected {
            assert!(
                stderr.contains(text),
                "{command}: expected {text:?} in\n{stderr}"
            );
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// One agent of type `agent_type` with `extra` lines, and a run that sends it nothing.
fn one_agent(agent_type: &str, extra: &str) -> String {
    format!(
        "id = \"g\"\n\n[[agents]]\nid = \"a\"\ntype = \"{agent_type}\"\ntopics = [\"t\"]\n{extra}\n"
    )
}

#[test]
fn agent_properties_are_checked_through_the_registry() {
    check(
        &one_agent("monte_carlo", "properties = { samples = -5, to = \"x\" }"),
        &[":5:", "agents[0].properties", "samples"],
    );
    check(
        &one_agent("relay", "properties = { to = [\"x\"], colour = 1 }"),
        &["agents[0].properties", "colour"],
    );
}

#[test]
fn messaging_urls_are_checked_as_connecting_would() {
    for (url, why) in [
        ("redis://127.0.0.1:99999", "port"),
        ("redis://127.0.0.1:6379?maxlen=x", "maxlen"),
        ("redis://127.0.0.1:6379?readers=1000000", "readers"),
        ("memory://elsewhere", "takes no settings"),
        ("rediss://127.0.0.1:6379", "TLS"),
    ] {
        let spec = format!("messaging = \"{url}\"\n{}", one_agent("responder", ""));
        check(&spec, &["messaging", why]);
    }
}

#[test]
fn limits_outside_their_bounds_are_refused() {
    for limits in [
        "limits = { memory_bytes = 0 }",
        "limits = { cpu_seconds = 0 }",
        "limits = { open_files = 18446744073709551615 }",
        "limits = { memory_bytes = 1000 }",
    ] {
        let spec = one_agent("responder", &format!("engine = \"process\"\n{limits}"));
        check(&spec, &["agents[0].limits.", "must be from"]);
    }
}

#[test]
fn limits_an_engine_cannot_enforce_are_refused_unless_best_effort() {
    let spec = one_agent("responder", "limits = { cpu_seconds = 5 }");
    check(&spec, &["agents[0].limits", "pool engine cannot enforce"]);
    let spec = one_agent(
        "responder",
        "limits = { cpu_seconds = 5, best_effort = true }",
    );
    let path = spec_file(&spec, "toml");
    let output = guild(&["validate".as_ref(), path.as_os_str()]);
    assert!(output.status.success(), "{output:?}");
}

#[test]
fn pool_settings_nothing_would_honour_are_refused() {
    check(
        &one_agent(
            "responder",
            "engine = \"threads\"\nplacement = \"dedicated\"",
        ),
        &[
            ".toml:8:1: agents[0].placement",
            "setting of the pool engine",
        ],
    );
    check(
        &one_agent("responder", "weight = 2"),
        &["agents[0].weight", "\"fair_share\" policy"],
    );
    check(
        &format!(
            "{}\n[pool]\npolicy = \"rate\"\n",
            one_agent("responder", "rate = { per_second = -1.0 }")
        ),
        &["agents[0].rate", "above zero"],
    );
    check(
        &format!(
            "{}\n[pool]\nworkers = 0\n",
            one_agent("responder", "engine = \"threads\"")
        ),
        &[
            ":1: pool.workers: pool setting workers",
            ":1: pool: the [pool] table",
            "runs none of this guild's agents",
        ],
    );
}

#[test]
fn cluster_settings_nothing_would_honour_are_refused() {
    check(
        &one_agent("responder", "resources = { cpu = 1 }"),
        &["agents[0].resources", "setting of the cluster engine"],
    );
    let on_cluster = |extra: &str| {
        format!(
            "messaging = \"redis://127.0.0.1:6379\"\n{}",
            one_agent("responder", &format!("engine = \"cluster\"\n{extra}"))
        )
    };
    check(
        &on_cluster("resources = { cpu = -1 }"),
        &["agents[0].resources", "cpu = -1: give a positive number"],
    );
    check(
        &format!("{}\n[cluster]\nnodes = [\"nohost\"]\n", on_cluster("")),
        &["cluster.nodes", "\"nohost\": write host:port"],
    );
    check(
        &format!(
            "{}\n[cluster]\npolicy = \"pack\"\n",
            one_agent("responder", "")
        ),
        &["the [cluster] table", "runs none of this guild's agents"],
    );
    check(
        &format!("{}\n[cluster]\npolicy = \"random\"\n", on_cluster("")),
        &["cluster", "random"],
    );
}

#[test]
fn ids_with_control_characters_are_refused() {
    check(
        "id = \"g\"\n[[agents]]\nid = \"a\\u0000b\"\ntype = \"responder\"\n",
        &["agents[0].id", "control character"],
    );
}

#[test]
fn sizes_and_timeouts_beyond_their_bounds_are_refused() {
    check(
        &one_agent("responder", "replicas = 1000000000"),
        &["agents[0].replicas", "from 1 to 10000"],
    );
    check(
        &format!(
            "{}\n[run]\ntimeout_secs = 18446744073709551615\n",
            one_agent("responder", "")
        ),
        &["run.timeout_secs", "30 days"],
    );
    check(
        &one_agent("responder", "handler_timeout_ms = 0"),
        &["agents[0].handler_timeout_ms", "from 1 to 2592000000"],
    );
}

#[test]
fn supervision_settings_out_of_range_are_refused_on_their_lines() {
    check(
        &one_agent("responder", "backoff = { initial_ms = 100, jitter = 1.5 }"),
        &["agents[0].backoff.jitter", ":7:", "between 0 and 1"],
    );
    check(
        &one_agent("responder", "restart = \"sometimes\""),
        &["restart", "unknown variant", "permanent"],
    );
    check(
        &one_agent("responder", "breaker = { failures = 0 }"),
        &["agents[0].breaker.failures", "at least 1"],
    );
    // A replica count far out of range is refused, not allocated, by the table checks.
    check(
        &one_agent("responder", "replicas = 1000000000").replacen(
            "id = \"g\"\n",
            "id = \"g\"\n[pool]\nworkers = 1\n[supervision.groups.x]\nagents = [\"a-7\"]\n",
            1,
        ),
        &["agents[0].replicas"],
    );
    check(
        &one_agent("responder", "engine = \"sync\"\nwatchdog_ms = 100"),
        &["agents[0].watchdog_ms", "sync engine", "handler_timeout_ms"],
    );
    check(
        &one_agent("responder", "").replacen(
            "id = \"g\"\n",
            "id = \"g\"\n[supervision]\nwithin_ms = 0\nbackoff = { initial_ms = 500, max_ms = 100 }\n\
             [supervision.groups.db]\nagents = [\"nobody\"]\n",
            1,
        ),
        &[
            "supervision.within_ms",
            "supervision.backoff.max_ms",
            "less than initial_ms",
            "supervision.groups.db.agents[0]",
            "\"nobody\", which is no agent",
        ],
    );
}

#[test]
fn the_dead_letter_topic_and_other_inboxes_are_guarded() {
    check(
        &format!(
            "{}\n[run]\nsend = [{{ topic = \"guild.errors\", payload = 1 }}]\n",
            one_agent("responder", "")
        ),
        &["run.send[0].topic", "dead letters"],
    );
    let spec = "id = \"g\"\n\
        [[agents]]\nid = \"a\"\ntype = \"responder\"\n\
        [[agents]]\nid = \"b\"\ntype = \"responder\"\ntopics = [\"inbox:a\", \"guild.errors\"]\n";
    check(spec, &["agents[1].topics[0]", "inbox"]);
}

#[test]
fn a_json_array_is_not_a_spec() {
    let path = spec_file("[\"g\", \"\", \"\", null, null, {}, []]", "json");
    let output = guild(&["validate".as_ref(), path.as_os_str()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("must be a JSON object"), "{stderr}");
}

#[test]
fn pipes_devices_and_huge_files_are_refused_without_reading_them() {
    let dir = std::env::temp_dir().join(format!("guild-validate-fifo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("spec.toml");
    let _ = std::fs::remove_file(&fifo);
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let zero = dir.join("zero.toml");
    let _ = std::fs::remove_file(&zero);
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let huge = spec_file(&"# padding\n".repeat(200_000), "toml");
    for (path, why) in [
        (&fifo, "not a regular file"),
        (&zero, "not a regular file"),
        (&huge, "over the cap"),
    ] {
        let output = guild(&["validate".as_ref(), path.as_os_str()]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(why), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn queue_limits_are_bounded_and_refused_where_the_backend_cannot_keep_them() {
    check(
        &one_agent("responder", "queue = { capacity = 0 }"),
        &["agents[0].queue", "capacity must be from 1"],
    );
    check(
        &format!(
            "messaging = \"redis://127.0.0.1:6379\"\n{}",
            one_agent(
                "responder",
                "queue = { capacity = 10, overflow = \"reject\" }"
            )
        ),
        &["agents[0].queue", "redis backend does not bound queues"],
    );
}

#[test]
fn validate_checks_the_engine_and_backend_the_command_line_chooses() {
    // Limits are kept on the process engine the spec names, and on no other.
    let spec = "id = \"g\"\nengine = \"process\"\n\n[[agents]]\nid = \"a\"\ntype = \"responder\"\n\
                topics = [\"t\"]\nlimits = { memory_bytes = 268435456 }\n";
    let path = spec_file(spec, "toml");
    let ok = guild(&["validate".as_ref(), path.as_os_str()]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    for command in ["validate", "run"] {
        let forced = guild(&[
            command.as_ref(),
            path.as_os_str(),
            "--engine".as_ref(),
            "threads".as_ref(),
        ]);
        let stderr = String::from_utf8_lossy(&forced.stderr);
        assert_eq!(forced.status.code(), Some(1), "{command}: {stderr}");
        assert!(stderr.contains("limits"), "{command}: {stderr}");
    }
    // The variable the command reads counts as much as the option.
    let from_variable = Command::new(env!("CARGO_BIN_EXE_guild"))
        .args(["validate".as_ref(), path.as_os_str()])
        .env("GUILD_ENGINE", "threads")
        .output()
        .expect("guild runs");
    assert_eq!(from_variable.status.code(), Some(1));
    // A backend URL given on the command line is checked without connecting.
    let bad_url = guild(&[
        "validate".as_ref(),
        path.as_os_str(),
        "--messaging".as_ref(),
        "redis://".as_ref(),
    ]);
    let stderr = String::from_utf8_lossy(&bad_url.stderr);
    assert_eq!(bad_url.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("redis://"), "{stderr}");
}
