//! The promises of the supervisor, on any engine over any backend, one scenario each:
//! restart policies, the three strategies (with stops in reverse order and starts in
//! order), intensity escalation, backoff delays in order, and nothing lost across a
//! restart. The supervisor works through the engine contract alone, so the same
//! scenarios prove it on every engine.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use engine_core::{
    AgentSpec, AgentState, Backoff, BackoffKind, BreakerSpec, ErrorKind, ExecutionEngine,
    ExecutionEngineExt, GuildContext, HealthCheck, LifecycleKind, RestartPolicy,
};
use supervisor::{Group, Strategy, SupervisionHooks, Supervisor};

use crate::engine::{dead_letters, send, spec};
use crate::harness::{MakeEngine, MakeMessaging, guild, settle, unique_namespace, wait_until};

pub use crate::engine::Scenario;

/// Every supervision scenario with its name, for test binaries that run them without
/// the standard test harness.
pub fn scenarios() -> Vec<(&'static str, Scenario)> {
    crate::__with_supervision_scenarios!([scenario_list])
}

/// Records what the supervisor's hooks are told, one line each: `start a`, `stop a`,
/// `error a`, `restart a <attempt> <delay ms>`, `give_up <group> a`.
#[derive(Debug, Default)]
pub struct Recorder(Mutex<Vec<String>>);

impl Recorder {
    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The lines so far that start with `prefix`.
    pub fn starting_with(&self, prefix: &str) -> Vec<String> {
        let mut lines = self.lines();
        lines.retain(|line| line.starts_with(prefix));
        lines
    }

    fn push(&self, line: String) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    }
}

impl SupervisionHooks for Recorder {
    fn on_start(&self, agent: &str) {
        self.push(format!("start {agent}"));
    }
    fn on_stop(&self, agent: &str) {
        self.push(format!("stop {agent}"));
    }
    fn on_error(&self, agent: &str, _reason: &str) {
        self.push(format!("error {agent}"));
    }
    fn on_restart(&self, agent: &str, attempt: u32, delay: Duration) {
        self.push(format!("restart {agent} {attempt} {}", delay.as_millis()));
    }
    fn on_give_up(&self, group: &str, agent: &str, _reason: &str) {
        self.push(format!("give_up {group} {agent}"));
    }
}

/// One engine and guild under a supervisor that records its hooks.
struct Supervised {
    engine: Arc<dyn ExecutionEngine>,
    guild: GuildContext,
    supervisor: Supervisor,
    hooks: Arc<Recorder>,
    group: Group,
}

impl Supervised {
    fn new(
        make_engine: MakeEngine<'_>,
        make_messaging: MakeMessaging<'_>,
        scenario: &str,
        strategy: Strategy,
        max_restarts: u32,
    ) -> Self {
        let engine = make_engine();
        let guild = guild(&unique_namespace(scenario), make_messaging());
        let hooks = Arc::new(Recorder::default());
        let supervisor = Supervisor::start(guild.clone(), hooks.clone());
        supervisor.watch(&engine);
        let group = Group::new("crew", strategy, max_restarts, Duration::from_secs(60));
        Self {
            engine,
            guild,
            supervisor,
            hooks,
            group,
        }
    }

    /// Supervises and runs `spec` with `policy` and `backoff`.
    fn run(&self, spec: AgentSpec, policy: RestartPolicy, backoff: Backoff) {
        let mut spec = spec;
        spec.restart = Some(policy);
        spec.backoff = Some(backoff);
        self.supervisor
            .supervise(&self.group, spec.clone(), self.engine.clone());
        self.engine.run_agent(&self.guild, spec).unwrap();
    }

    fn wait_for(&self, what: &str, condition: impl FnMut() -> bool) {
        wait_until(&[&*self.engine], what, condition);
    }

    /// Waits until the hooks have recorded `count` lines starting with `prefix`.
    fn wait_lines(&self, prefix: &str, count: usize) {
        self.wait_for(&format!("{count} hook lines start {prefix:?}"), || {
            self.hooks.starting_with(prefix).len() >= count
        });
    }

    fn state(&self, agent: &str) -> Option<AgentState> {
        self.engine
            .agent_info(&self.guild.namespace, agent)
            .map(|info| info.state)
    }

    fn handled(&self, agent: &str) -> u64 {
        self.engine
            .agent_info(&self.guild.namespace, agent)
            .map_or(0, |info| info.messages_in)
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.supervisor.shutdown();
        let _ = self.engine.shutdown();
    }
}

/// A crash restarts a `permanent` and a `transient` agent and leaves a `temporary`
/// one crashed; the others of a one-for-one group are not touched.
pub fn each_restart_policy_decides_on_a_crash(
    make_engine: MakeEngine<'_>,
    make_messaging: MakeMessaging<'_>,
) {
    let s = Supervised::new(
        make_engine,
        make_messaging,
        "policies",
        Strategy::OneForOne,
        10,
    );
    let policies = [
        ("permanent", RestartPolicy::Permanent),
        ("transient", RestartPolicy::Transient),
        ("temporary", RestartPolicy::Temporary),
    ];
    for (id, policy) in policies {
        s.run(spec(id, "fragile", &[id]), policy, Backoff::none());
    }
    s.run(
        spec("bystander", "counter", &["calm"]),
        RestartPolicy::Permanent,
        Backoff::none(),
    );
    for (id, _) in policies {
        send(&s.guild, id, &["panic"]);
    }
    s.wait_lines("restart ", 2);
    s.wait_for("the temporary agent is crashed", || {
        s.state("temporary") == Some(AgentState::Crashed)
    });
    for (id, _) in policies {
        send(&s.guild, id, &["after"]);
    }
    send(&s.guild, "calm", &["still there?"]);
    s.wait_for("the restarted agents handle what came after", || {
        s.handled("permanent") == 1 && s.handled("transient") == 1 && s.handled("bystander") == 1
    });
    settle(&[&*s.engine]);
    let mut restarts = s.hooks.starting_with("restart ");
    restarts.sort();
    assert_eq!(restarts, ["restart permanent 1 0", "restart transient 1 0"]);
    assert_eq!(s.state("temporary"), Some(AgentState::Crashed));
    assert!(
        s.hooks.starting_with("stop ").is_empty(),
        "{:?}",
        s.hooks.lines()
    );
    assert_eq!(s.supervisor.restarts("bystander"), 0);
    assert_eq!(s.supervisor.restarts("permanent"), 1);
}

/// One-for-all: when the middle agent crashes, the others stop in reverse order and
/// all three start again in order.
pub fn one_for_all_stops_the_rest_in_reverse_and_restarts_all_in_order(
    make_engine: MakeEngine<'_>,
    make_messaging: MakeMessaging<'_>,
) {
    strategy_scenario(
        make_engine,
        make_messaging,
        Strategy::OneForAll,
        &["stop c", "stop a"],
        &["restart a 1 0", "restart b 1 0", "restart c 1 0"],
    );
}

/// Rest-for-one: when the middle agent crashes, the one after it stops, and both
/// start again in order; the one before is not touched.
pub fn rest_for_one_restarts_the_agent_and_those_after_it(
    make_engine: MakeEngine<'_>,
    make_messaging: MakeMessaging<'_>,
) {
    strategy_scenario(
        make_engine,
        make_messaging,
        Strategy::RestForOne,
        &["stop c"],
        &["restart b 1 0", "restart c 1 0"],
    );
}

/// One-for-one: only the agent that crashed restarts.
pub fn one_for_one_restarts_only_the_agent_that_crashed(
    make_engine: MakeEngine<'_>,
    make_messaging: MakeMessaging<'_>,
) {
    strategy_scenario(
        make_engine,
        make_messaging,
        Strategy::OneForOne,
        &[],
        &["restart b 1 0"],
    );
}

/// Agents a, b, c (b fragile) under `strategy`; b crashes; the stops and restarts the
/// hooks see are exactly `stops` and `restarts`, in that order, and every agent of
/// the group handles a message afterwards.
fn strategy_scenario(
    make_engine: MakeEngine<'_>,
    make_messaging: MakeMessaging<'_>,
    strategy: Strategy,
    stops: &[&str],
    restarts: &[&str],
) {
    let s = Supervised::new(make_engine, make_messaging, "strategy", strategy, 10);
    for (id, agent_type) in [("a", "counter"), ("b", "fragile"), ("c", "counter")] {
        s.run(
            spec(id, agent_type, &[id, "all"]),
            RestartPolicy::Permanent,
            Backoff::none(),
        );
    }
    s.wait_lines("start ", 3);
    send(&s.guild, "b", &["panic"]);
    s.wait_lines("restart ", restarts.len());
    s.wait_for("every agent runs again", || {
        ["a", "b", "c"]
            .iter()
            .all(|id| s.state(id) == Some(AgentState::Running))
    });
    send(&s.guild, "all", &["roll call"]);
    settle(&[&*s.engine]);
    assert_eq!(
        s.hooks.starting_with("stop "),
        stops,
        "{:?}",
        s.hooks.lines()
    );
    assert_eq!(
        s.hooks.starting_with("restart "),
        restarts,
        "{:?}",
        s.hooks.lines()
    );
    // Whoever was not restarted handled the roll call and what came before it.
    assert!(s.handled("a") >= 1 && s.handled("b") == 1 && s.handled("c") >= 1);
}

/// Past its intensity, the group is stopped (in reverse order) and a `GroupFailed`
/// event names the agent and how it ended; nothing is restarted after that.
pub fn past_its_intensity_a_group_is_stopped_and_the_failure_escalates(
    make_engine: MakeEngine<'_>,
    make_messaging: MakeMessaging<'_>,
) {
    let s = Supervised::new(
        make_engine,
        make_messaging,
        "intensity",
        Strategy::OneForOne,
        1,
    );
    let events = s.supervisor.events();
    s.run(
        spec("steady", "counter", &["calm"]),
        RestartPolicy::Permanent,
        Backoff::none(),
    );
    s.run(
        spec("fragile", "fragile", &["risky"]),
        RestartPolicy::Permanent,
        Backoff::none(),
    );
    send(&s.guild, "risky", &["panic"]);
    s.wait_lines("restart ", 1);
    send(&s.guild, "risky", &["panic"]);
    s.wait_lines("give_up ", 1);
    let failed = events
        .iter()
        .find_map(|event| match event.kind {
            LifecycleKind::GroupFailed { group, reason } => Some((event.agent_id, group, reason)),
            _ => None,
        })
        .expect("a group-failed event");
    assert_eq!(failed.0, "fragile");
    assert_eq!(failed.1, "crew");
    assert!(failed.2.contains("asked to panic"), "{}", failed.2);
    assert!(failed.2.contains("more than 1 restart"), "{}", failed.2);
    s.wait_for("the steady agent is stopped", || {
        s.state("steady").is_none()
    });
    assert_eq!(s.state("fragile"), Some(AgentState::Crashed));
    assert_eq!(s.hooks.starting_with("restart ").len(), 1);
    assert_eq!(s.hooks.starting_with("give_up "), ["give_up crew fragile"]);
}

/// Backoff: each restart in a row waits longer (exponential: 10, 20, 40 ms), and the
/// hooks hear of each crash before its restart.
pub fn backoff_delays_grow_in_order(
    make_engine: MakeEngine<'_>,
    make_messaging: MakeMessaging<'_>,
) {
    let s = Supervised::new(
        make_engine,
        make_messaging,
        "backoff",
        Strategy::OneForOne,
        10,
    );
    let backoff = Backoff {
        kind: BackoffKind::Exponential,
        initial_ms: 10,
        max_ms: 1_000,
        jitter: 0.0,
        reset_after_ms: 3_600_000,
    };
    s.run(
        spec("fragile", "fragile", &["risky"]),
        RestartPolicy::Transient,
        backoff,
    );
    for n in 1..=3 {
        send(&s.guild, "risky", &["panic"]);
        s.wait_lines("restart ", n);
    }
    let told: Vec<String> = s
        .hooks
        .lines()
        .into_iter()
        .filter(|line| line.starts_with("error ") || line.starts_with("restart "))
        .collect();
    assert_eq!(
        told,
        [
            "error fragile",
            "restart fragile 1 10",
            "error fragile",
            "restart fragile 2 20",
            "error fragile",
            "restart fragile 3 40",
        ]
    );
}

/// Nothing is lost across a restart: what was queued behind the message that crashed
/// the agent is handled by the restarted agent, and that message is dead-lettered once.
pub fn a_restarted_agent_gets_what_was_queued_and_the_poison_message_once(
    make_engine: MakeEngine<'_>,
    make_messaging: MakeMessaging<'_>,
) {
    let s = Supervised::new(
        make_engine,
        make_messaging,
        "no-loss",
        Strategy::OneForOne,
        10,
    );
    let backoff = Backoff {
        kind: BackoffKind::Fixed,
        initial_ms: 50,
        ..Backoff::none()
    };
    s.run(
        spec("fragile", "fragile", &["work"]),
        RestartPolicy::Transient,
        backoff,
    );
    let work: Vec<String> = (0..10).map(|n| format!("job {n}")).collect();
    let mut texts = vec!["panic"];
    texts.extend(work.iter().map(String::as_str));
    send(&s.guild, "work", &texts);
    s.wait_lines("restart ", 1);
    s.wait_for("the restarted agent handles the ten jobs", || {
        s.handled("fragile") >= 10
    });
    settle(&[&*s.engine]);
    assert_eq!(s.handled("fragile"), 10);
    let letters = dead_letters(&s.guild);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].failure.kind, "panic");
}

/// A circuit breaker opens after its failures, dead-letters what comes while open
/// (kind `circuit_open`, the handler never sees it), lets one delivery through after
/// the cool-down, and closes when that one succeeds; each change is a lifecycle event.
pub fn a_breaker_opens_then_half_opens_and_closes(
    make_engine: MakeEngine<'_>,
    make_messaging: MakeMessaging<'_>,
) {
    let engine = make_engine();
    let guild = guild(&unique_namespace("breaker"), make_messaging());
    let events = engine.events();
    let mut fragile = spec("fragile", "fragile", &["risky"]);
    fragile.breaker = Some(BreakerSpec {
        failures: 2,
        window_ms: 60_000,
        cooldown_ms: 100,
    });
    engine.run_agent(&guild, fragile).unwrap();
    let breaker_events = || -> Vec<LifecycleKind> {
        events
            .try_iter()
            .filter(|event| event.agent_id == "fragile")
            .map(|event| event.kind)
            .filter(|kind| {
                matches!(
                    kind,
                    LifecycleKind::BreakerOpened { .. }
                        | LifecycleKind::BreakerHalfOpen
                        | LifecycleKind::BreakerClosed
                )
            })
            .collect()
    };
    let mut seen = Vec::new();
    send(&guild, "risky", &["fail", "fail", "while open"]);
    wait_until(&[&*engine], "three dead letters", || {
        dead_letters(&guild).len() == 3
    });
    seen.extend(breaker_events());
    // All three were delivered and failed; the last never reached the handler.
    settle(&[&*engine]);
    let info = engine.agent_info(&guild.namespace, "fragile").unwrap();
    assert_eq!((info.messages_in, info.errors), (3, 3));
    // Past the cool-down (real time must pass for it), one delivery goes through.
    std::thread::sleep(Duration::from_millis(150));
    send(&guild, "risky", &["fine"]);
    wait_until(&[&*engine], "the trial delivery is handled", || {
        engine
            .agent_info(&guild.namespace, "fragile")
            .is_some_and(|info| info.messages_in == 4)
    });
    wait_until(&[&*engine], "the breaker closes", || {
        seen.extend(breaker_events());
        seen.contains(&LifecycleKind::BreakerClosed)
    });
    assert_eq!(
        seen,
        [
            LifecycleKind::BreakerOpened { failures: 2 },
            LifecycleKind::BreakerHalfOpen,
            LifecycleKind::BreakerClosed,
        ]
    );
    let kinds: Vec<String> = dead_letters(&guild)
        .into_iter()
        .map(|letter| letter.failure.kind)
        .collect();
    assert_eq!(kinds, ["error", "error", "circuit_open"]);
    engine.shutdown().unwrap();
}

/// An agent is ready only once its first health probe has passed: one that fails it
/// does not start, and the error says why.
pub fn an_agent_failing_its_first_probe_is_not_ready(
    make_engine: MakeEngine<'_>,
    make_messaging: MakeMessaging<'_>,
) {
    let engine = make_engine();
    let guild = guild(&unique_namespace("readiness"), make_messaging());
    let mut sickly = spec("sickly", "sickly", &["t"]);
    sickly.health = Some(HealthCheck::default());
    let error = engine.run_agent(&guild, sickly).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::StartFailed, "{error}");
    assert!(error.to_string().contains("born sick"), "{error}");
    assert!(!engine.is_agent_running(&guild.namespace, "sickly"));
    engine.shutdown().unwrap();
}

/// An agent that fails its health probes the set number of times in a row is ended
/// and restarted; the restarted one is healthy and handles messages again.
pub fn an_agent_failing_its_health_probes_is_restarted(
    make_engine: MakeEngine<'_>,
    make_messaging: MakeMessaging<'_>,
) {
    let s = Supervised::new(
        make_engine,
        make_messaging,
        "health",
        Strategy::OneForOne,
        10,
    );
    let mut moody = spec("moody", "moody", &["mood"]);
    moody.health = Some(HealthCheck {
        interval_ms: 20,
        timeout_ms: 5_000,
        failures: 2,
    });
    s.run(moody, RestartPolicy::Permanent, Backoff::none());
    send(&s.guild, "mood", &["sicken"]);
    s.wait_lines("restart moody", 1);
    s.wait_for("the restarted agent runs", || {
        s.state("moody") == Some(AgentState::Running)
    });
    send(&s.guild, "mood", &["cheerful"]);
    s.wait_for("the restarted agent handles a message", || {
        s.handled("moody") >= 1
    });
    assert!(
        s.hooks.starting_with("error moody").len() == 1,
        "{:?}",
        s.hooks.lines()
    );
}

/// A handler running past the agent's watchdog is reported stuck; on an engine that
/// can end it (`kill`), the agent is killed and restarted.
pub fn a_stuck_handler_is_killed_where_the_engine_can_and_reported_elsewhere(
    make_engine: MakeEngine<'_>,
    make_messaging: MakeMessaging<'_>,
) {
    let s = Supervised::new(
        make_engine,
        make_messaging,
        "watchdog",
        Strategy::OneForOne,
        100,
    );
    let events = s.supervisor.events();
    let mut stalling = spec("stalling", "stalling", &["work"]);
    stalling.watchdog_ms = Some(100);
    // Where the handler cannot be killed, its timeout ends it in the end.
    stalling.handler_timeout_ms = Some(2_000);
    s.run(stalling, RestartPolicy::Permanent, Backoff::none());
    send(&s.guild, "work", &["stall"]);
    if s.engine.capabilities().driven_by_caller {
        // The handler runs on the caller's thread under the engine's lock, so nothing
        // can look at it while it runs: its timeout is what ends it there.
        s.wait_for("the stalled handler times out", || {
            !dead_letters(&s.guild).is_empty()
        });
        assert_eq!(dead_letters(&s.guild)[0].failure.kind, "timeout");
        assert_eq!(s.state("stalling"), Some(AgentState::Running));
        return;
    }
    let mut stuck = false;
    s.wait_for("the stalled handler is reported stuck", || {
        stuck |= events
            .try_iter()
            .any(|event| matches!(event.kind, LifecycleKind::Stuck { busy_ms } if busy_ms >= 100));
        stuck
    });
    if s.engine.capabilities().kill {
        s.wait_lines("restart stalling", 1);
    } else {
        assert!(s.hooks.starting_with("restart ").is_empty());
    }
}

/// An agent that exits on its own (where that can happen: an agent process that ends
/// with code 0 unasked) is restarted when `permanent` and left exited when
/// `transient`. Not in the suite: only the process engine reports such exits.
pub fn an_exit_restarts_a_permanent_agent_only(
    make_engine: MakeEngine<'_>,
    make_messaging: MakeMessaging<'_>,
) {
    let s = Supervised::new(
        make_engine,
        make_messaging,
        "exits",
        Strategy::OneForOne,
        10,
    );
    let events = s.engine.events();
    for (id, policy) in [
        ("permanent", RestartPolicy::Permanent),
        ("transient", RestartPolicy::Transient),
    ] {
        s.run(spec(id, "quitter", &[id]), policy, Backoff::none());
        send(&s.guild, id, &["quit"]);
    }
    let mut exited = Vec::new();
    s.wait_for("both agents exit", || {
        exited.extend(
            events
                .try_iter()
                .filter(|event| event.kind == LifecycleKind::Exited)
                .map(|event| event.agent_id),
        );
        exited.len() >= 2
    });
    s.wait_lines("restart permanent", 1);
    s.wait_for("the permanent agent runs again", || {
        s.state("permanent") == Some(AgentState::Running)
    });
    assert_eq!(s.state("transient"), Some(AgentState::Exited));
    assert_eq!(s.hooks.starting_with("restart "), ["restart permanent 1 0"]);
    assert!(
        s.hooks.starting_with("error ").is_empty(),
        "an exit is no error"
    );
}
