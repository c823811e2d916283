//! The engine contract on the process engine over the embedded broker, fronting the
//! in-memory bus (`memory::`) or Redis (`redis::`, a private `redis-server` per test),
//! and what only the process engine promises (`process::`): distinct processes, crash
//! isolation, limits, the process cap, no process left behind, a hostile connection
//! closed without collateral damage, and network isolation.
//!
//! This binary is its own agent host (the engine re-executes it to run each agent), so
//! it has no standard test harness: `main` first offers to host an agent, then runs
//! the tests through `libtest-mimic`, which takes the usual test arguments.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use conformance::harness::{
    DEADLINE, guild, publish, settle, start_in_background, unique_namespace, wait_until,
};
use conformance::redis_server::RedisServer;
use engine_core::{
    Agent, AgentContext, AgentRegistry, AgentResult, AgentSpec, AgentState, ErrorKind,
    ExecutionEngine, ExecutionEngineExt, GuildContext, HistoryQuery, LifecycleKind, Message,
    MessagingBackend, Payload, ResourceLimits,
};
use engine_process::{ProcessConfig, ProcessEngine};
use libtest_mimic::{Arguments, Failed, Trial};
use messaging_memory::MemoryMessaging;
use messaging_redis::RedisMessaging;

/// Set when this binary runs as the engine process of the parent-killed test.
const ORPHAN_PARENT: &str = "GUILD_TEST_ORPHAN_PARENT";

fn main() {
    engine_process::run_if_agent_host(registry);
    if std::env::var_os(ORPHAN_PARENT).is_some() {
        orphan_parent();
    }
    let arguments = Arguments::from_args();
    let mut trials = Vec::new();
    let suites = [
        ("", conformance::engine::scenarios()),
        ("supervision::", conformance::supervision::scenarios()),
    ];
    for (suite, scenarios) in suites {
        for (name, scenario) in scenarios {
            trials.push(Trial::test(format!("{suite}memory::{name}"), move || {
                let messaging = || -> Arc<dyn MessagingBackend> {
                    Arc::new(MemoryMessaging::process_wide(Default::default()))
                };
                scenario(&process_engine, &messaging);
                Ok(())
            }));
            trials.push(Trial::test(format!("{suite}redis::{name}"), move || {
                let server = RedisServer::start();
                let messaging = || -> Arc<dyn MessagingBackend> {
                    Arc::new(
                        RedisMessaging::connect(&server.url()).expect("the test server answers"),
                    )
                };
                scenario(&process_engine, &messaging);
                Ok(())
            }));
        }
    }
    let specific: [(&str, fn()); 13] = [
        (
            "an_exit_restarts_a_permanent_agent_only",
            exits_under_a_supervisor,
        ),
        (
            "others_are_started_stopped_and_queried_while_one_starts_slowly",
            slow_start,
        ),
        (
            "generator_ids_are_leased_to_live_agents_only",
            generator_leases,
        ),
        ("agents_have_distinct_pids_not_the_parents", distinct_pids),
        ("a_kill_9_is_a_crash_by_signal_9_and_others_go_on", kill_9),
        (
            "a_killed_agent_restarted_gets_what_it_had_not_finished",
            redelivery,
        ),
        (
            "an_agent_past_its_memory_cap_is_killed_by_the_limit",
            memory_cap,
        ),
        ("an_agent_past_its_cpu_cap_is_killed_by_the_limit", cpu_cap),
        ("the_process_cap_is_enforced", process_cap),
        ("no_agent_process_survives_shutdown", none_survive_shutdown),
        (
            "no_agent_process_survives_its_parent_killed",
            none_survive_parent,
        ),
        ("a_corrupt_frame_closes_only_that_connection", corrupt_frame),
        (
            "network_isolation_cuts_the_network_or_is_refused",
            network_isolation,
        ),
    ];
    for (name, test) in specific {
        trials.push(Trial::test(format!("process::{name}"), move || {
            test();
            Ok::<(), Failed>(())
        }));
    }
    libtest_mimic::run(&arguments, trials).exit();
}

/// A fresh process engine with the default settings, for each scenario.
fn process_engine() -> Arc<dyn ExecutionEngine> {
    Arc::new(ProcessEngine::new())
}

/// The scenario agents, and those only these tests use:
///
/// - `sleeper`: takes 5 ms over each message;
/// - `hog`: on a message, allocates 16 MiB blocks until it dies;
/// - `spinner`: on a message, burns CPU until it dies;
/// - `saboteur`: on a message, writes a frame with an impossible length onto its own
///   connection, as a hostile agent could;
/// - `prober`: on a message naming a TCP address, tries to connect and replies with what
///   happened.
fn registry() -> AgentRegistry {
    let mut registry = conformance::agents::registry();
    registry
        .register("sleeper", |_| Ok(Sleeper))
        .register("hog", |_| Ok(Hog))
        .register("spinner", |_| Ok(Spinner))
        .register("saboteur", |_| Ok(Saboteur))
        .register("prober", |_| Ok(Prober))
        .register("slow", |spec| {
            let gate = spec.properties["gate"]
                .as_str()
                .ok_or("slow needs a gate")?;
            Ok(Slow(gate.into()))
        });
    registry
}

struct Sleeper;

impl Agent for Sleeper {
    async fn handle(&mut self, _ctx: &AgentContext, _message: &Message) -> AgentResult {
        std::thread::sleep(Duration::from_millis(5));
        Ok(())
    }
}

struct Hog;

impl Agent for Hog {
    async fn handle(&mut self, _ctx: &AgentContext, _message: &Message) -> AgentResult {
        let mut eaten: Vec<Vec<u8>> = Vec::new();
        loop {
            eaten.push(vec![1u8; 16 << 20]);
        }
    }
}

struct Spinner;

impl Agent for Spinner {
    async fn handle(&mut self, _ctx: &AgentContext, _message: &Message) -> AgentResult {
        let mut x = 0u64;
        loop {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
    }
}

struct Saboteur;

impl Agent for Saboteur {
    async fn handle(&mut self, _ctx: &AgentContext, _message: &Message) -> AgentResult {
        use std::io::Write;
        use std::os::fd::FromRawFd;
        for entry in std::fs::read_dir("/proc/self/fd")? {
            let entry = entry?;
            let target = std::fs::read_link(entry.path()).unwrap_or_default();
            if !target.to_string_lossy().starts_with("socket:") {
                continue;
            }
            let fd: i32 = entry.file_name().to_string_lossy().parse()?;
            // SAFETY: `fd` is an open socket of this process (the agent's connection);
            // the `File` is forgotten below, so it is never closed twice.
            #[allow(unsafe_code)]
            let mut socket = unsafe { std::fs::File::from_raw_fd(fd) };
            socket.write_all(&[0xFF, 0xFF, 0xFF, 0x7F, 1, 2, 3])?;
            std::mem::forget(socket);
            return Ok(());
        }
        Err("no socket found".into())
    }
}

/// Starts only once the file its `gate` property names exists (bounded).
struct Slow(std::path::PathBuf);

impl Agent for Slow {
    async fn start(&mut self, _ctx: &AgentContext) -> AgentResult {
        let deadline = std::time::Instant::now() + DEADLINE;
        while !self.0.exists() {
            if std::time::Instant::now() > deadline {
                return Err("the gate never opened".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    async fn handle(&mut self, _ctx: &AgentContext, _message: &Message) -> AgentResult {
        Ok(())
    }
}

struct Prober;

impl Agent for Prober {
    async fn handle(&mut self, ctx: &AgentContext, message: &Message) -> AgentResult {
        let address: String = message.decode_json()?;
        let outcome =
            match std::net::TcpStream::connect_timeout(&address.parse()?, Duration::from_secs(2)) {
                Ok(_) => "connected".to_owned(),
                Err(error) => format!("failed: {error}"),
            };
        ctx.reply(message, Payload::encode_json(&outcome)?)?;
        Ok(())
    }
}

/// 2,500 agent processes started one after another, most stopped at once and some kept
/// running: each mints ids under a generator no live agent holds, so no two messages
/// share an id. (Counting launches modulo the generator space, as before, hands a kept
/// agent's generator to the 1,024th launch after it.)
fn generator_leases() {
    const LAUNCHES: usize = 2_500;
    const KEEP_EVERY: usize = 250;
    let (engine, guild) = setup("leases");
    let mut kept: Vec<String> = Vec::new();
    for n in 0..LAUNCHES {
        let id = format!("a{n}");
        engine
            .run_agent(&guild, AgentSpec::new(&id, "announcer"))
            .unwrap();
        if n % KEEP_EVERY == 0 {
            kept.push(id);
        } else {
            engine.stop_agent(&guild.namespace, &id).unwrap();
        }
    }
    let messages = guild
        .messaging
        .history(
            &guild.namespace,
            &HistoryQuery::Topic("announcements".into()),
        )
        .unwrap();
    assert_eq!(messages.len(), LAUNCHES, "one announcement per launch");
    let ids: std::collections::BTreeSet<_> = messages.iter().map(|m| m.id).collect();
    assert_eq!(ids.len(), LAUNCHES, "no message id repeated");
    let generator_of = |sender: &str| {
        messages
            .iter()
            .find(|m| &*m.sender == sender)
            .map(|m| m.id.generator())
            .unwrap()
    };
    // While kept agent k lived, no later agent may have had its generator.
    for (i, keeper) in kept.iter().enumerate() {
        let theirs = generator_of(keeper);
        let launched_at = i * KEEP_EVERY;
        for n in launched_at + 1..LAUNCHES {
            let sender = format!("a{n}");
            assert_ne!(
                generator_of(&sender),
                theirs,
                "{sender} minted under the generator of {keeper}, which was still running"
            );
        }
    }
    engine.shutdown().unwrap();
}

/// The engine is not held while an agent process starts: it is seen as starting, and
/// other agents are started, stopped and queried before it is ready. The slow start
/// waits for a file the test creates afterwards, so the order is certain.
fn slow_start() {
    let (engine, guild) = setup("slow");
    let engine = Arc::new(engine);
    let gate = std::env::temp_dir().join(format!("guild-gate-{}", guild.namespace));
    let mut slow = AgentSpec::new("slow", "slow");
    slow.properties = serde_json::json!({ "gate": gate.display().to_string() });
    let starting = start_in_background(engine.clone(), &guild, slow);
    wait_until(&[], "the slow agent is seen starting", || {
        engine
            .agent_info(&guild.namespace, "slow")
            .is_some_and(|info| info.state == AgentState::Starting)
    });
    engine
        .run_agent(&guild, spec("quick", "counter", &["t"]))
        .unwrap();
    assert!(engine.is_agent_running(&guild.namespace, "quick"));
    engine.stop_agent(&guild.namespace, "quick").unwrap();
    assert_eq!(engine.agents_in_guild(&guild.namespace).len(), 1);
    assert!(!engine.is_agent_running(&guild.namespace, "slow"));

    std::fs::write(&gate, b"open").unwrap();
    starting.finish();
    assert!(engine.is_agent_running(&guild.namespace, "slow"));
    engine.shutdown().unwrap();
    let _ = std::fs::remove_file(&gate);
}

fn spec(id: &str, agent_type: &str, topics: &[&str]) -> AgentSpec {
    topics
        .iter()
        .fold(AgentSpec::new(id, agent_type), |spec, topic| {
            spec.with_topic(*topic)
        })
}

fn setup(scenario: &str) -> (ProcessEngine, GuildContext) {
    let namespace = unique_namespace(scenario);
    let engine = ProcessEngine::new();
    (
        engine,
        guild(
            &namespace,
            Arc::new(MemoryMessaging::process_wide(Default::default())),
        ),
    )
}

fn handled(engine: &ProcessEngine, guild: &GuildContext, agent: &str) -> u64 {
    engine
        .agent_info(&guild.namespace, agent)
        .map_or(0, |info| info.messages_in)
}

fn pid_of(engine: &ProcessEngine, guild: &GuildContext, agent: &str) -> u32 {
    engine
        .agent_info(&guild.namespace, agent)
        .and_then(|info| info.pid)
        .expect("a process agent has a pid")
}

/// Whether process `pid` is running (present in /proc and not a zombie).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits until `agent` has ended, and returns what the engine says of it.
fn wait_dead(engine: &ProcessEngine, guild: &GuildContext, agent: &str) -> engine_core::AgentInfo {
    wait_until(&[engine], &format!("{agent} ends"), || {
        engine
            .agent_info(&guild.namespace, agent)
            .is_some_and(|info| info.state.is_dead())
    });
    engine
        .agent_info(&guild.namespace, agent)
        .expect("a dead agent stays listed")
}

/// Publishes the numbers `0..count` to `topic`, as the test.
fn send_numbers(guild: &GuildContext, topic: &str, count: u64) {
    for i in 0..count {
        publish(
            &*guild.messaging,
            &guild.namespace,
            "test",
            topic,
            &i.to_string(),
        );
    }
}

/// Kills process `pid` with `SIGKILL`.
fn sigkill(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

/// Sends `count` messages to `topic` and checks `agent` handled exactly that many more.
fn exchange(engine: &ProcessEngine, guild: &GuildContext, agent: &str, topic: &str, count: u64) {
    let before = handled(engine, guild, agent);
    send_numbers(guild, topic, count);
    wait_until(&[engine], &format!("{agent} handles {count} more"), || {
        handled(engine, guild, agent) >= before + count
    });
    settle(&[engine]);
    assert_eq!(handled(engine, guild, agent), before + count);
}

fn distinct_pids() {
    let (engine, guild) = setup("pids");
    for id in ["a", "b", "c"] {
        engine
            .run_agent(&guild, spec(id, "counter", &["t"]))
            .unwrap();
    }
    let mut pids: Vec<u32> = ["a", "b", "c"]
        .iter()
        .map(|id| pid_of(&engine, &guild, id))
        .collect();
    assert!(!pids.contains(&std::process::id()));
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 3, "three agents, three processes");
    for info in engine.agents_in_guild(&guild.namespace) {
        assert!(info.memory_bytes.is_some_and(|bytes| bytes > 0), "{info:?}");
        assert!(info.cpu_time.is_some(), "{info:?}");
    }
    engine.shutdown().unwrap();
}

fn kill_9() {
    let (engine, guild) = setup("kill-9");
    let events = engine.events();
    engine
        .run_agent(&guild, spec("victim", "counter", &["t"]))
        .unwrap();
    engine
        .run_agent(&guild, spec("responder", "responder", &["requests"]))
        .unwrap();
    engine
        .run_agent(&guild, spec("requester", "requester", &["go"]))
        .unwrap();
    engine
        .run_agent(&guild, spec("listener", "counter", &["replies"]))
        .unwrap();
    let victim = pid_of(&engine, &guild, "victim");
    sigkill(victim);
    let crashed = loop {
        let event = events
            .recv_timeout(DEADLINE)
            .expect("an event for the kill");
        if event.agent_id == "victim" && event.kind != LifecycleKind::Started {
            break event;
        }
    };
    match crashed.kind {
        LifecycleKind::Crashed { reason } => assert!(reason.contains("signal 9"), "{reason}"),
        other => panic!("expected a crash, got {other:?}"),
    }
    let info = engine.agent_info(&guild.namespace, "victim").unwrap();
    assert_eq!(info.state, AgentState::Crashed);
    assert_eq!(info.exit.as_ref().and_then(|exit| exit.signal), Some(9));
    assert!(!engine.is_agent_running(&guild.namespace, "victim"));
    exchange(&engine, &guild, "listener", "go", 20);
    assert_eq!(engine.cleanup_dead().len(), 1);
    engine.shutdown().unwrap();
}

/// Messages pushed to an agent process and not yet acknowledged when it is killed are
/// handed to it again when it is run again: between the two lives, every message is
/// completed exactly once.
fn exits_under_a_supervisor() {
    let messaging = || -> Arc<dyn MessagingBackend> {
        Arc::new(MemoryMessaging::process_wide(Default::default()))
    };
    conformance::supervision::an_exit_restarts_a_permanent_agent_only(&process_engine, &messaging);
}

fn redelivery() {
    let (engine, guild) = setup("redelivery");
    engine
        .run_agent(&guild, spec("slow", "sleeper", &["t"]))
        .unwrap();
    send_numbers(&guild, "t", 60);
    wait_until(&[&engine], "slow handles a few", || {
        handled(&engine, &guild, "slow") >= 5
    });
    let pid = pid_of(&engine, &guild, "slow");
    sigkill(pid);
    let first = wait_dead(&engine, &guild, "slow").messages_in;
    assert!(first < 60, "the kill came after everything was handled");
    engine
        .run_agent(&guild, spec("slow", "sleeper", &["t"]))
        .unwrap();
    wait_until(&[&engine], "the second life handles the rest", || {
        first + handled(&engine, &guild, "slow") >= 60
    });
    settle(&[&engine]);
    assert_eq!(first + handled(&engine, &guild, "slow"), 60);
    engine.shutdown().unwrap();
}

fn memory_cap() {
    let (engine, guild) = setup("memory-cap");
    let mut hog = spec("hog", "hog", &["eat"]);
    hog.limits = ResourceLimits {
        memory_bytes: Some(256 << 20),
        ..ResourceLimits::default()
    };
    engine.run_agent(&guild, hog).unwrap();
    engine
        .run_agent(&guild, spec("bystander", "counter", &["t"]))
        .unwrap();
    publish(&*guild.messaging, &guild.namespace, "test", "eat", "now");
    let info = wait_dead(&engine, &guild, "hog");
    assert_eq!(info.state, AgentState::KilledByLimit, "{info:?}");
    let reason = info.exit.unwrap().reason;
    assert!(reason.contains("memory cap of 268435456 bytes"), "{reason}");
    exchange(&engine, &guild, "bystander", "t", 10);
    engine.shutdown().unwrap();
}

fn cpu_cap() {
    let (engine, guild) = setup("cpu-cap");
    let mut spinner = spec("spinner", "spinner", &["spin"]);
    spinner.limits = ResourceLimits {
        cpu_seconds: Some(1),
        ..ResourceLimits::default()
    };
    engine.run_agent(&guild, spinner).unwrap();
    publish(&*guild.messaging, &guild.namespace, "test", "spin", "now");
    let info = wait_dead(&engine, &guild, "spinner");
    assert_eq!(info.state, AgentState::KilledByLimit, "{info:?}");
    assert!(info.exit.unwrap().reason.contains("CPU-time cap of 1 s"));
    engine.shutdown().unwrap();
}

fn process_cap() {
    let namespace = unique_namespace("process-cap");
    let engine = ProcessEngine::with_config(ProcessConfig {
        max_processes: 2,
        ..ProcessConfig::default()
    });
    let guild = guild(
        &namespace,
        Arc::new(MemoryMessaging::process_wide(Default::default())),
    );
    engine
        .run_agent(&guild, spec("a", "counter", &["t"]))
        .unwrap();
    engine
        .run_agent(&guild, spec("b", "counter", &["t"]))
        .unwrap();
    let refused = engine
        .run_agent(&guild, spec("c", "counter", &["t"]))
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::LimitExceeded);
    assert!(
        refused.to_string().contains("cap of 2 agent processes"),
        "{refused}"
    );
    engine.stop_agent(&namespace, "a").unwrap();
    engine
        .run_agent(&guild, spec("c", "counter", &["t"]))
        .unwrap();
    engine.shutdown().unwrap();
}

fn none_survive_shutdown() {
    let (engine, guild) = setup("shutdown");
    for id in ["a", "b", "c"] {
        engine
            .run_agent(&guild, spec(id, "counter", &["t"]))
            .unwrap();
    }
    let pids: Vec<u32> = ["a", "b", "c"]
        .iter()
        .map(|id| pid_of(&engine, &guild, id))
        .collect();
    assert!(pids.iter().all(|pid| alive(*pid)));
    engine.shutdown().unwrap();
    let left: Vec<_> = pids.into_iter().filter(|pid| alive(*pid)).collect();
    assert!(left.is_empty(), "processes left after shutdown: {left:?}");
}

/// The engine process of [`none_survive_parent`]: starts two agents, prints their pids,
/// and waits to be killed.
fn orphan_parent() -> ! {
    let (engine, guild) = setup("orphans");
    engine
        .run_agent(&guild, spec("a", "counter", &["t"]))
        .unwrap();
    engine
        .run_agent(&guild, spec("b", "counter", &["t"]))
        .unwrap();
    let pids: Vec<String> = ["a", "b"]
        .iter()
        .map(|id| pid_of(&engine, &guild, id).to_string())
        .collect();
    {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{}", pids.join(" "));
        let _ = stdout.flush();
    }
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

fn none_survive_parent() {
    let mut parent = Command::new(std::env::current_exe().unwrap())
        .env(ORPHAN_PARENT, "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(parent.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pids: Vec<u32> = line
        .split_whitespace()
        .map(|pid| pid.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "the parent printed {line:?}");
    assert!(pids.iter().all(|pid| alive(*pid)));
    parent.kill().unwrap();
    parent.wait().unwrap();
    wait_until(&[], "the orphaned agent processes are gone", || {
        pids.iter().all(|pid| !alive(*pid))
    });
}

fn corrupt_frame() {
    let (engine, guild) = setup("corrupt-frame");
    engine
        .run_agent(&guild, spec("saboteur", "saboteur", &["sabotage"]))
        .unwrap();
    engine
        .run_agent(&guild, spec("bystander", "counter", &["t"]))
        .unwrap();
    // Messages queued for the bystander around the sabotage are all handled.
    send_numbers(&guild, "t", 50);
    publish(
        &*guild.messaging,
        &guild.namespace,
        "test",
        "sabotage",
        "now",
    );
    let info = wait_dead(&engine, &guild, "saboteur");
    assert_eq!(info.state, AgentState::Crashed, "{info:?}");
    // The first fifty may still be on their way when the saboteur is found dead.
    wait_until(&[&engine], "bystander handles the first 50", || {
        handled(&engine, &guild, "bystander") >= 50
    });
    exchange(&engine, &guild, "bystander", "t", 50);
    assert_eq!(handled(&engine, &guild, "bystander"), 100);
    engine.shutdown().unwrap();
}

fn network_isolation() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let namespace = unique_namespace("network");
    let engine = ProcessEngine::with_config(ProcessConfig {
        isolate_network: true,
        ..ProcessConfig::default()
    });
    let guild = guild(
        &namespace,
        Arc::new(MemoryMessaging::process_wide(Default::default())),
    );
    let launched = engine.run_agent(&guild, spec("prober", "prober", &["probe"]));
    if !nix::unistd::Uid::effective().is_root() {
        let refused = launched.unwrap_err();
        assert!(refused.to_string().contains("needs root"), "{refused}");
        return;
    }
    launched.unwrap();
    // The same probe from an agent without isolation connects: the listener is there.
    let open = ProcessEngine::new();
    open.run_agent(&guild, spec("open-prober", "prober", &["probe"]))
        .unwrap();
    engine
        .run_agent(&guild, spec("listener", "counter", &[]))
        .unwrap();
    let replies = guild.messaging.subscribe(
        engine_core::SubscribeRequest {
            namespace: namespace.clone(),
            client_id: "test".into(),
            topics: vec![engine_core::inbox_topic("test")],
            start: engine_core::StartFrom::Latest,
            limit: None,
        },
        Arc::new(engine_core::NoNotify),
    );
    let mut replies = replies.unwrap();
    publish(&*guild.messaging, &namespace, "test", "probe", &address);
    let mut outcomes = std::collections::BTreeMap::new();
    wait_until(&[], "both probers reply", || {
        while let Some(delivery) = replies.next().unwrap() {
            let outcome: String = delivery.message.decode_json().unwrap();
            outcomes.insert(delivery.message.sender.clone(), outcome);
            replies.complete(engine_core::Outcome::Handled).unwrap();
        }
        outcomes.len() == 2
    });
    assert_eq!(outcomes["open-prober"], "connected");
    assert!(outcomes["prober"].starts_with("failed"), "{outcomes:?}");
    drop(listener);
    open.shutdown().unwrap();
    engine.shutdown().unwrap();
}
