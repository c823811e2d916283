//! The promises of [`engine_core::ExecutionEngine`], one scenario each.
//!
//! Each scenario takes a function that makes a fresh engine instance and one that makes
//! a fresh messaging backend instance (instances of one backend must share a bus, as
//! agents in different engines or processes do).

use std::time::Instant;

use engine_core::{
    AgentSpec, AgentState, DeadLetter, ERROR_TOPIC, ErrorKind, ExecutionEngine, ExecutionEngineExt,
    GuildContext, HistoryQuery, LifecycleKind, StartFrom,
};

use crate::harness::{
    DEADLINE, MakeEngine, MakeMessaging, guild, publish, settle, text, unique_namespace, wait_until,
};

/// One engine scenario, as [`scenarios`] lists them.
pub type Scenario = fn(MakeEngine<'_>, MakeMessaging<'_>);

/// Every engine scenario with its name, for test binaries that run them without the
/// standard test harness.
pub fn scenarios() -> Vec<(&'static str, Scenario)> {
    crate::__with_engine_scenarios!([scenario_list])
}

/// The messages `agent` has handled, as whichever of `engines` runs it reports.
fn handled(engines: &[&dyn ExecutionEngine], guild: &GuildContext, agent: &str) -> u64 {
    engines
        .iter()
        .find_map(|engine| engine.agent_info(&guild.namespace, agent))
        .map_or(0, |info| info.messages_in)
}

/// Waits until `agent` has handled `expected` messages, lets the engines settle, and
/// checks that it handled exactly that many: none arrive late.
fn check_handled(
    engines: &[&dyn ExecutionEngine],
    guild: &GuildContext,
    agent: &str,
    expected: u64,
) {
    let what = format!("{agent} has handled {expected} messages");
    wait_until(engines, &what, || {
        handled(engines, guild, agent) >= expected
    });
    settle(engines);
    assert_eq!(
        handled(engines, guild, agent),
        expected,
        "messages handled by {agent}"
    );
}

/// Publishes each text to `topic` as the test.
pub(crate) fn send(guild: &GuildContext, topic: &str, texts: &[&str]) {
    for text in texts {
        publish(&*guild.messaging, &guild.namespace, "test", topic, text);
    }
}

/// The dead letters on the guild's error topic, in publish order.
pub(crate) fn dead_letters(guild: &GuildContext) -> Vec<DeadLetter> {
    guild
        .messaging
        .history(&guild.namespace, &HistoryQuery::Topic(ERROR_TOPIC.into()))
        .unwrap()
        .iter()
        .map(|letter| DeadLetter::from_message(letter).unwrap())
        .collect()
}

/// The one dead letter on the guild's error topic.
fn the_one_dead_letter(guild: &GuildContext) -> DeadLetter {
    let mut letters = dead_letters(guild);
    assert_eq!(letters.len(), 1, "one dead letter");
    letters.remove(0)
}

pub(crate) fn spec(id: &str, agent_type: &str, topics: &[&str]) -> AgentSpec {
    topics
        .iter()
        .fold(AgentSpec::new(id, agent_type), |spec, topic| {
            spec.with_topic(*topic)
        })
}

/// A requester and a responder exchange requests and replies on one engine while an
/// observer on another engine instance sees both sides; the counts are exact before and
/// after the responder is stopped.
pub fn request_response_observed_from_another_engine(
    make_engine: MakeEngine<'_>,
    make_messaging: MakeMessaging<'_>,
) {
    let ns = unique_namespace("exchange");
    let (first, second) = (make_engine(), make_engine());
    let guild_one = guild(&ns, make_messaging());
    let guild_two = guild(&ns, make_messaging());
    let requester = spec("requester", "requester", &["go", "replies"]);
    first.run_agent(&guild_one, requester).unwrap();
    first
        .run_agent(&guild_one, spec("responder", "responder", &["requests"]))
        .unwrap();
    let observer = spec("observer", "counter", &["requests", "replies"]);
    second.run_agent(&guild_two, observer).unwrap();
    let engines: [&dyn ExecutionEngine; 2] = [&*first, &*second];

    send(&guild_one, "go", &["request 0", "request 1", "request 2"]);
    check_handled(&engines, &guild_two, "observer", 6); // 3 requests + 3 replies
    check_handled(&engines, &guild_one, "requester", 6); // 3 go + 3 replies
    check_handled(&engines, &guild_one, "responder", 3);
    let replies = guild_one
        .messaging
        .history(&ns, &HistoryQuery::Topic("replies".into()))
        .unwrap();
    assert_eq!(replies.len(), 3);
    for reply in &replies {
        let body: serde_json::Value = reply.decode_json().unwrap();
        let request = body["reply"]
            .as_str()
            .expect("the reply echoes the request");
        assert!(request.starts_with("request "));
        assert!(
            reply.in_reply_to.is_some(),
            "a reply names the request it answers"
        );
    }

    first.stop_agent(&ns, "responder").unwrap();
    send(&guild_one, "go", &["request 3", "request 4"]);
    check_handled(&engines, &guild_two, "observer", 8); // 2 more requests, no replies
    check_handled(&engines, &guild_one, "requester", 8); // 2 more go, no replies
    assert!(first.agent_info(&ns, "responder").is_none());
    first.shutdown().unwrap();
    second.shutdown().unwrap();
}

/// A stopped agent handles nothing more and is gone from every query; run again, it
/// resumes with what was published while it was stopped.
pub fn a_stopped_agent_handles_nothing_and_disappears(
    make_engine: MakeEngine<'_>,
    make_messaging: MakeMessaging<'_>,
) {
    let ns = unique_namespace("stopped");
    let engine = make_engine();
    let guild = guild(&ns, make_messaging());
    let worker = spec("worker", "counter", &["work"]).with_name("busy");
    engine.run_agent(&guild, worker).unwrap();
    send(&guild, "work", &["one"]);
    check_handled(&[&*engine], &guild, "worker", 1);

    engine.stop_agent(&ns, "worker").unwrap();
    assert!(!engine.is_agent_running(&ns, "worker"));
    assert!(engine.agent_info(&ns, "worker").is_none());
    assert!(engine.agents_in_guild(&ns).is_empty());
    assert!(engine.find_agents_by_name(&ns, "busy").is_empty());
    assert_eq!(engine.stats().running, 0);

    send(&guild, "work", &["while stopped"]);
    settle(&[&*engine]);
    assert!(
        engine.agent_info(&ns, "worker").is_none(),
        "nothing handled it"
    );

    engine
        .run_agent(&guild, spec("worker", "counter", &["work"]))
        .unwrap();
    // The restarted agent gets only the message sent while it was stopped.
    check_handled(&[&*engine], &guild, "worker", 1);
    engine.shutdown().unwrap();
}

/// A handler that outlives the agent's `handler_timeout_ms` is cancelled, its message
/// dead-lettered with kind `timeout`, and the agent handles the next message.
pub fn a_handler_past_its_timeout_is_cancelled_and_the_agent_goes_on(
    make_engine: MakeEngine<'_>,
    make_messaging: MakeMessaging<'_>,
) {
    let ns = unique_namespace("handler-timeout");
    let engine = make_engine();
    let guild = guild(&ns, make_messaging());
    let mut stalling = spec("stalling", "stalling", &["t"]);
    stalling.handler_timeout_ms = Some(50);
    engine.run_agent(&guild, stalling).unwrap();
    send(&guild, "t", &["stall", "fine"]);
    check_handled(&[&*engine], &guild, "stalling", 2);
    let info = engine.agent_info(&ns, "stalling").unwrap();
    assert_eq!((info.state, info.errors), (AgentState::Running, 1));
    let letter = the_one_dead_letter(&guild);
    assert_eq!(text(&letter.message), "stall");
    assert_eq!(letter.failure.kind, "timeout", "{}", letter.failure.text);
    let replies = guild
        .messaging
        .history(&ns, &HistoryQuery::Topic(engine_core::inbox_topic("test")))
        .unwrap();
    let replied: Vec<String> = replies.iter().map(|reply| text(reply)).collect();
    assert_eq!(replied, ["fine"], "the agent went on with the next message");
    engine.shutdown().unwrap();
}

/// An agent's timers send once after a delay, or every period until cancelled, on the
/// engine's clock (the sync engine's moves only when advanced), and end with the agent.
pub fn timers_send_later_and_stop_when_cancelled(
    make_engine: MakeEngine<'_>,
    make_messaging: MakeMessaging<'_>,
) {
    let ns = unique_namespace("timers");
    let engine = make_engine();
    let guild = guild(&ns, make_messaging());
    let engines: [&dyn ExecutionEngine; 1] = [&*engine];
    let virtual_clock = engine.capabilities().virtual_clock;
    // On a virtual clock, each look moves time on by 10 ms; real time moves itself.
    let tick = || {
        if virtual_clock {
            engine.advance_clock(std::time::Duration::from_millis(10));
        }
    };
    let count = |topic: &str| {
        guild
            .messaging
            .history(&ns, &HistoryQuery::Topic(topic.into()))
            .unwrap()
            .len()
    };
    // Once the engine is quiet no more ticks come, however far the clock moves.
    let no_more_ticks = |why: &str| {
        settle(&engines);
        let ticks = count("ticks");
        if virtual_clock {
            assert_eq!(engine.advance_clock(std::time::Duration::from_secs(1)), 0);
        }
        settle(&engines);
        assert_eq!(count("ticks"), ticks, "{why}");
    };
    engine
        .run_agent(&guild, spec("timed", "timed", &["timers"]))
        .unwrap();

    send(&guild, "timers", &["after"]);
    check_handled(&engines, &guild, "timed", 1);
    wait_until(&engines, "the delayed message is sent", || {
        tick();
        count("timed.out") == 1
    });

    send(&guild, "timers", &["every"]);
    // Not `check_handled`, which waits for the engine to go quiet: a running timer
    // keeps its counters moving.
    wait_until(&engines, "the timer is set", || {
        handled(&engines, &guild, "timed") == 2
    });
    wait_until(&engines, "three ticks are sent", || {
        tick();
        count("ticks") >= 3
    });
    send(&guild, "timers", &["cancel"]);
    check_handled(&engines, &guild, "timed", 3);
    no_more_ticks("a cancelled timer sends nothing more");
    assert_eq!(count("timed.out"), 1, "a delayed message is sent once");

    // A timer ends with its agent.
    send(&guild, "timers", &["every"]);
    wait_until(&engines, "the timer is set again", || {
        handled(&engines, &guild, "timed") == 4
    });
    engine.stop_agent(&ns, "timed").unwrap();
    no_more_ticks("a stopped agent's timers send nothing");
    engine.shutdown().unwrap();
}

/// A paused agent handles nothing until it is resumed, while the bus and the other
/// agents go on; resumed, it handles what waited for it, in order. Engines that cannot
/// pause say so.
pub fn a_paused_agent_handles_nothing_until_resumed(
    make_engine: MakeEngine<'_>,
    make_messaging: MakeMessaging<'_>,
) {
    let ns = unique_namespace("paused");
    let engine = make_engine();
    let guild = guild(&ns, make_messaging());
    let engines: [&dyn ExecutionEngine; 1] = [&*engine];
    engine
        .run_agent(&guild, spec("sleeper", "responder", &["work"]))
        .unwrap();
    engine
        .run_agent(&guild, spec("witness", "counter", &["witness"]))
        .unwrap();
    if !engine.capabilities().pause {
        let refused = engine.pause_agent(&ns, "sleeper").unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::Unsupported, "{refused}");
        engine.shutdown().unwrap();
        return;
    }
    send(&guild, "work", &["before"]);
    check_handled(&engines, &guild, "sleeper", 1);

    engine.pause_agent(&ns, "sleeper").unwrap();
    engine.pause_agent(&ns, "sleeper").unwrap(); // a no-op
    let paused = engine.agent_info(&ns, "sleeper").unwrap();
    assert_eq!(paused.state, AgentState::Paused);
    assert!(!paused.state.is_dead());
    assert!(!engine.is_agent_running(&ns, "sleeper"));
    assert_eq!(engine.stats().paused, 1);
    send(&guild, "work", &["one", "two", "three"]);
    // The bus and the other agents go on meanwhile.
    send(&guild, "witness", &["after them"]);
    // Not `check_handled`: with messages waiting for the paused agent the engine is
    // not idle, and is not meant to be.
    wait_until(&engines, "the witness has handled its message", || {
        handled(&engines, &guild, "witness") == 1
    });
    assert_eq!(
        handled(&engines, &guild, "sleeper"),
        1,
        "a paused agent handles nothing"
    );

    engine.resume_agent(&ns, "sleeper").unwrap();
    engine.resume_agent(&ns, "sleeper").unwrap(); // a no-op
    assert!(engine.is_agent_running(&ns, "sleeper"));
    check_handled(&engines, &guild, "sleeper", 4);
    let replies: Vec<String> = guild
        .messaging
        .history(&ns, &HistoryQuery::Topic(engine_core::inbox_topic("test")))
        .unwrap()
        .iter()
        .filter(|reply| &*reply.sender == "sleeper")
        .map(|reply| {
            let body: serde_json::Value = reply.decode_json().unwrap();
            body["reply"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    assert_eq!(replies, ["before", "one", "two", "three"], "in order");

    let unknown = engine.pause_agent(&ns, "nobody").unwrap_err();
    assert_eq!(unknown.kind(), ErrorKind::NotFound, "{unknown}");
    engine.stop_agent(&ns, "sleeper").unwrap();
    assert_eq!(
        engine.resume_agent(&ns, "sleeper").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    engine.shutdown().unwrap();
}

/// Shutdown stops every agent of a guild of several, and the engine runs nothing after.
pub fn shutdown_stops_every_agent(make_engine: MakeEngine<'_>, make_messaging: MakeMessaging<'_>) {
    let ns = unique_namespace("shutdown");
    let engine = make_engine();
    let guild = guild(&ns, make_messaging());
    let events = engine.events();
    for n in 0..6 {
        engine
            .run_agent(&guild, spec(&format!("agent-{n}"), "counter", &["t"]))
            .unwrap();
    }
    assert_eq!(engine.agents_in_guild(&ns).len(), 6);
    engine.shutdown().unwrap();
    assert!(engine.agents_in_guild(&ns).is_empty());
    for n in 0..6 {
        assert!(!engine.is_agent_running(&ns, &format!("agent-{n}")));
    }
    assert_eq!(engine.stats().running, 0);
    let stopped = events
        .try_iter()
        .filter(|event| event.kind == LifecycleKind::Stopped)
        .count();
    assert_eq!(stopped, 6, "every agent is reported stopped");
    let refused = engine.run_agent(&guild, spec("late", "counter", &["t"]));
    assert_eq!(refused.unwrap_err().kind(), ErrorKind::Closed);
}

/// Running an agent that runs already is a no-op: one agent, each message handled once.
pub fn running_a_running_agent_again_is_a_no_op(
    make_engine: MakeEngine<'_>,
    make_messaging: MakeMessaging<'_>,
) {
    let ns = unique_namespace("idempotent");
    let engine = make_engine();
    let guild = guild(&ns, make_messaging());
    engine
        .run_agent(&guild, spec("once", "counter", &["t"]))
        .unwrap();
    engine
        .run_agent(&guild, spec("once", "counter", &["t"]))
        .unwrap();
    assert_eq!(engine.agents_in_guild(&ns).len(), 1);
    send(&guild, "t", &["one"]);
    check_handled(&[&*engine], &guild, "once", 1);
    engine.shutdown().unwrap();
}

/// Several agents may share a name; each is found by it and each gets a broadcast.
pub fn agents_may_share_a_name(make_engine: MakeEngine<'_>, make_messaging: MakeMessaging<'_>) {
    let ns = unique_namespace("shared-name");
    let engine = make_engine();
    let guild = guild(&ns, make_messaging());
    for n in 0..3 {
        let agent = spec(&format!("worker-{n}"), "counter", &["t"]).with_name("worker");
        engine.run_agent(&guild, agent).unwrap();
    }
    engine
        .run_agent(&guild, spec("loner", "counter", &["t"]))
        .unwrap();
    let workers = engine.find_agents_by_name(&ns, "worker");
    let mut ids: Vec<_> = workers.iter().map(|info| info.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["worker-0", "worker-1", "worker-2"]);
    send(&guild, "t", &["to all"]);
    for agent in ["worker-0", "worker-1", "worker-2", "loner"] {
        check_handled(&[&*engine], &guild, agent, 1);
    }
    engine.shutdown().unwrap();
}

/// A panic ends only the agent that panicked: it is reported crashed with the panic
/// text, its message is dead-lettered, the others carry on, and `cleanup_dead` forgets it.
pub fn a_panic_crashes_only_its_agent(
    make_engine: MakeEngine<'_>,
    make_messaging: MakeMessaging<'_>,
) {
    let ns = unique_namespace("crash");
    let engine = make_engine();
    let guild = guild(&ns, make_messaging());
    let events = engine.events();
    engine
        .run_agent(&guild, spec("fragile", "fragile", &["risky"]))
        .unwrap();
    engine
        .run_agent(&guild, spec("steady", "counter", &["risky", "calm"]))
        .unwrap();
    send(&guild, "risky", &["panic"]);
    wait_until(&[&*engine], "the fragile agent is reported crashed", || {
        engine
            .agent_info(&ns, "fragile")
            .is_some_and(|info| info.state == AgentState::Crashed)
    });
    let info = engine.agent_info(&ns, "fragile").unwrap();
    let reason = info.exit.expect("a crashed agent has an exit").reason;
    assert!(
        reason.contains("asked to panic"),
        "the reason carries the panic text: {reason}"
    );
    assert!(!engine.is_agent_running(&ns, "fragile"));

    let deadline = Instant::now() + DEADLINE;
    let crashed = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(event) if event.agent_id == "fragile" => {
                if let LifecycleKind::Crashed { reason } = event.kind {
                    break reason;
                }
            }
            Ok(_) => {}
            Err(_) => {
                panic!("no crashed event for the fragile agent")
            }
        }
    };
    assert!(crashed.contains("asked to panic"));

    send(&guild, "calm", &["still there?"]);
    check_handled(&[&*engine], &guild, "steady", 2);
    let letters = guild
        .messaging
        .history(&ns, &HistoryQuery::Topic(ERROR_TOPIC.into()))
        .unwrap();
    let letter = DeadLetter::from_message(letters.first().expect("a dead letter")).unwrap();
    assert_eq!(
        (letter.client.as_str(), letter.failure.kind.as_str()),
        ("fragile", "panic")
    );

    let cleaned = engine.cleanup_dead();
    assert_eq!(
        cleaned
            .iter()
            .map(|info| info.id.as_str())
            .collect::<Vec<_>>(),
        ["fragile"]
    );
    assert!(engine.agent_info(&ns, "fragile").is_none());
    assert!(engine.is_agent_running(&ns, "steady"));
    engine.shutdown().unwrap();
}

/// A handler error dead-letters that message, is counted, and the agent goes on.
pub fn a_handler_error_is_dead_lettered_and_the_agent_goes_on(
    make_engine: MakeEngine<'_>,
    make_messaging: MakeMessaging<'_>,
) {
    let ns = unique_namespace("handler-error");
    let engine = make_engine();
    let guild = guild(&ns, make_messaging());
    engine
        .run_agent(&guild, spec("fragile", "fragile", &["t"]))
        .unwrap();
    send(&guild, "t", &["fail", "fine"]);
    check_handled(&[&*engine], &guild, "fragile", 2);
    let info = engine.agent_info(&ns, "fragile").unwrap();
    assert_eq!((info.state, info.errors), (AgentState::Running, 1));
    let letter = the_one_dead_letter(&guild);
    assert_eq!(text(&letter.message), "fail");
    assert_eq!(letter.failure.text, "asked to fail");
    engine.shutdown().unwrap();
}

/// `run_agent` returns only once the agent is subscribed: a message published right
/// after it returns is handled, and what the start hook publishes is delivered.
pub fn an_agent_is_subscribed_when_run_returns(
    make_engine: MakeEngine<'_>,
    make_messaging: MakeMessaging<'_>,
) {
    let ns = unique_namespace("ready");
    let engine = make_engine();
    let guild = guild(&ns, make_messaging());
    let listener = spec("listener", "counter", &["t", "announcements"]);
    engine.run_agent(&guild, listener).unwrap();
    send(&guild, "t", &["right away"]);
    engine
        .run_agent(&guild, spec("announcer", "announcer", &[]))
        .unwrap();
    check_handled(&[&*engine], &guild, "listener", 2);
    engine.shutdown().unwrap();
}

/// An unknown agent type and a failing start hook are errors that name the problem, and
/// leave nothing behind.
pub fn launch_failures_name_the_problem(
    make_engine: MakeEngine<'_>,
    make_messaging: MakeMessaging<'_>,
) {
    let ns = unique_namespace("launch-failures");
    let engine = make_engine();
    let guild = guild(&ns, make_messaging());
    let unknown = engine
        .run_agent(&guild, spec("ghost", "no-such-type", &["t"]))
        .unwrap_err();
    assert_eq!(unknown.kind(), ErrorKind::UnknownAgentType);
    assert!(unknown.to_string().contains("no-such-type"), "{unknown}");
    let broken = engine
        .run_agent(&guild, spec("broken", "broken", &["t"]))
        .unwrap_err();
    assert_eq!(broken.kind(), ErrorKind::StartFailed);
    assert!(
        broken.to_string().contains("the database is not there"),
        "{broken}"
    );
    assert!(engine.agents_in_guild(&ns).is_empty());
    engine.stop_agent(&ns, "never-existed").unwrap();
    engine.shutdown().unwrap();
}

/// Lifecycle events report starts and stops, and "running" means started, subscribed,
/// not stopped and not dead.
pub fn lifecycle_events_and_running_agree(
    make_engine: MakeEngine<'_>,
    make_messaging: MakeMessaging<'_>,
) {
    let ns = unique_namespace("lifecycle");
    let engine = make_engine();
    let guild = guild(&ns, make_messaging());
    let events = engine.events();
    engine
        .run_agent(&guild, spec("a", "counter", &["t"]))
        .unwrap();
    assert!(engine.is_agent_running(&ns, "a"));
    assert_eq!(
        engine.agent_info(&ns, "a").unwrap().state,
        AgentState::Running
    );
    engine.stop_agent(&ns, "a").unwrap();
    let kinds: Vec<_> = events
        .try_iter()
        .filter(|event| event.agent_id == "a")
        .map(|event| event.kind)
        .collect();
    assert_eq!(kinds, [LifecycleKind::Started, LifecycleKind::Stopped]);
    engine.shutdown().unwrap();
}

/// An agent whose spec asks for the backlog gets the history of its topics first.
pub fn an_agent_can_start_from_the_backlog(
    make_engine: MakeEngine<'_>,
    make_messaging: MakeMessaging<'_>,
) {
    let ns = unique_namespace("backlog");
    let engine = make_engine();
    let guild = guild(&ns, make_messaging());
    send(&guild, "t", &["early"]);
    let mut late = spec("late", "counter", &["t"]);
    late.start_from = StartFrom::Earliest;
    engine.run_agent(&guild, late).unwrap();
    check_handled(&[&*engine], &guild, "late", 1);
    engine.shutdown().unwrap();
}

/// Engines instances are independent: shutting one down leaves another's agents running.
pub fn engine_instances_are_independent(
    make_engine: MakeEngine<'_>,
    make_messaging: MakeMessaging<'_>,
) {
    let ns = unique_namespace("independent");
    let (one, two) = (make_engine(), make_engine());
    let guild = guild(&ns, make_messaging());
    one.run_agent(&guild, spec("on-one", "counter", &["t"]))
        .unwrap();
    two.run_agent(&guild, spec("on-two", "counter", &["t"]))
        .unwrap();
    one.shutdown().unwrap();
    assert!(two.is_agent_running(&ns, "on-two"));
    assert!(two.agent_info(&ns, "on-one").is_none());
    send(&guild, "t", &["still there"]);
    check_handled(&[&*two], &guild, "on-two", 1);
    two.shutdown().unwrap();
}
