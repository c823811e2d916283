//! What the supervisor's thread does: wait for an engine's event, a command or the next
//! thing due; decide, when an agent ends, what its policy, its group's intensity and
//! strategy, and its backoff say; and start agents again when their time comes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Select, Sender};
use engine_core::{
    AgentSpec, EventReceiver, ExecutionEngine, LifecycleEvent, LifecycleKind, supervision_ms,
};

use crate::probes::{self, ProbeState, Prober};
use crate::supervisor::{Child, Control, Phase, Shared, State, policy};
use crate::watchdog;

/// The longest the supervisor's thread sleeps when nothing is due.
const IDLE: Duration = Duration::from_secs(1);

/// The supervisor's thread: waits for an event, a command, or the next thing due.
pub(crate) fn run(shared: &Shared, commands: &Receiver<Control>, wake: Sender<Control>) {
    let mut engines: Vec<EventReceiver> = Vec::new();
    let mut prober = Prober::new(wake);
    loop {
        let now = Instant::now();
        let wait = next_due(shared, now).map_or(IDLE, |due| due.saturating_duration_since(now));
        let mut select = Select::new();
        select.recv(commands);
        for receiver in &engines {
            select.recv(receiver);
        }
        // What the wait found, acted on once the selection no longer borrows `engines`.
        let mut gone = None;
        let mut added = None;
        if let Ok(ready) = select.select_timeout(wait) {
            let index = ready.index();
            if index == 0 {
                match ready.recv(commands) {
                    Ok(Control::Watch(receiver)) => added = Some(receiver),
                    Ok(Control::Wake) => {}
                    Ok(Control::Stop) | Err(_) => return,
                }
            } else {
                match ready.recv(&engines[index - 1]) {
                    Ok(event) => on_event(shared, &event),
                    // The engine is gone.
                    Err(_) => gone = Some(index - 1),
                }
            }
        }
        if let Some(gone) = gone {
            engines.remove(gone);
        }
        engines.extend(added);
        restart_due(shared, Instant::now());
        watchdog::check(shared, Instant::now());
        prober.tick(shared, Instant::now());
    }
}

/// When the next restart or watchdog look is due.
fn next_due(shared: &Shared, now: Instant) -> Option<Instant> {
    let state = shared.lock();
    let restart = state
        .children
        .values()
        .filter_map(|child| match child.phase {
            Phase::Waiting { due, .. } => Some(due),
            _ => None,
        })
        .min();
    let look = watchdog::next_look(&state, now);
    let probe = probes::next_due(&state);
    restart.into_iter().chain(look).chain(probe).min()
}

/// Acts on one engine event about a supervised agent.
fn on_event(shared: &Shared, event: &LifecycleEvent) {
    if *event.guild != *shared.context.namespace {
        return;
    }
    let mut state = shared.lock();
    let Some(child) = state.children.get_mut(&event.agent_id) else {
        return;
    };
    match &event.kind {
        LifecycleKind::Started => {
            drop(state);
            shared.hooks.on_start(&event.agent_id);
        }
        LifecycleKind::Stopped => {
            if child.expected_stops > 0 {
                child.expected_stops -= 1;
                return;
            }
            if matches!(child.phase, Phase::Running(_)) {
                // Stopped by someone else: that is the end of it.
                child.phase = Phase::Done;
            }
            drop(state);
            shared.hooks.on_stop(&event.agent_id);
        }
        kind => {
            let Some(failed) = kind.failed() else {
                return;
            };
            let Phase::Running(since) = child.phase else {
                // Already being restarted (its group stopped it), or done.
                return;
            };
            let reason = describe(kind);
            drop(state);
            if failed {
                shared.hooks.on_error(&event.agent_id, &reason);
            } else {
                shared.hooks.on_stop(&event.agent_id);
            }
            ended(shared, &event.agent_id, failed, since, &reason);
        }
    }
}

/// An agent ended on its own: decide, by its policy, its group's intensity and
/// strategy and its backoff, what happens next.
fn ended(shared: &Shared, agent: &str, failed: bool, since: Instant, reason: &str) {
    let now = Instant::now();
    let mut state = shared.lock();
    let State {
        children,
        groups,
        jitter,
    } = &mut *state;
    let Some(child) = children.get_mut(agent) else {
        return;
    };
    if !policy(&child.spec).restarts(failed) {
        child.phase = Phase::Done;
        return;
    }
    let Some(group) = groups.get_mut(&child.group) else {
        return;
    };
    if group.failed {
        child.phase = Phase::Done;
        return;
    }
    let backoff = child.spec.backoff.unwrap_or_default();
    if now.duration_since(since) >= supervision_ms(backoff.reset_after_ms) {
        child.attempt = 0;
    }
    child.attempt += 1;
    let delay = backoff.delay(child.attempt, jitter.unit());
    let due = now + delay;

    group.restarts.push_back(now);
    while group
        .restarts
        .front()
        .is_some_and(|at| now.duration_since(*at) > group.group.within)
    {
        group.restarts.pop_front();
    }
    if group.restarts.len() > group.group.max_restarts as usize {
        group.failed = true;
        let why = format!(
            "{reason}; that is more than {} restart(s) within {} ms, so group {:?} is stopped",
            group.group.max_restarts,
            group.group.within.as_millis(),
            group.group.name
        );
        let members = group.members.clone();
        let name = group.group.name.clone();
        let engine = child.engine.name().to_owned();
        child.phase = Phase::Done;
        let stopping = take_members(children, members.iter().rev(), agent);
        // Members waiting for a restart of their own are not started again either.
        for member in &members {
            if let Some(waiting) = children.get_mut(member) {
                waiting.phase = Phase::Done;
            }
        }
        drop(state);
        stop_all(shared, &stopping);
        tracing::error!(group = %name, agent, "supervision gave up: {why}");
        shared.emit(
            agent,
            &engine,
            LifecycleKind::GroupFailed {
                group: name.clone(),
                reason: why.clone(),
            },
        );
        shared.hooks.on_give_up(&name, agent, &why);
        return;
    }

    // Which members restart with it, by the strategy.
    let position = group.members.iter().position(|m| m == agent).unwrap_or(0);
    let together: Vec<String> = match group.group.strategy {
        crate::Strategy::OneForOne => Vec::new(),
        crate::Strategy::OneForAll => group.members.clone(),
        crate::Strategy::RestForOne => group.members[position..].to_vec(),
    };
    child.phase = Phase::Waiting { due, delay };
    tracing::info!(
        agent,
        attempt = child.attempt,
        delay_ms = delay.as_millis() as u64,
        "restarting: {reason}"
    );
    let stopping = take_members(children, together.iter().rev(), agent);
    for member in &stopping {
        if let Some(sibling) = children.get_mut(&member.0) {
            sibling.phase = Phase::Waiting { due, delay };
            sibling.attempt = sibling.attempt.max(1);
        }
    }
    drop(state);
    stop_all(shared, &stopping);
}

/// The running members among `ids` other than `except`, counted as stopped by the
/// supervisor (their `Stopped` events expected), with their engines, in the given order.
fn take_members<'a>(
    children: &mut HashMap<String, Child>,
    ids: impl Iterator<Item = &'a String>,
    except: &str,
) -> Vec<(String, Arc<dyn ExecutionEngine>)> {
    let mut stopping = Vec::new();
    for id in ids {
        if id == except {
            continue;
        }
        if let Some(child) = children.get_mut(id)
            && matches!(child.phase, Phase::Running(_))
        {
            child.expected_stops += 1;
            child.phase = Phase::Done;
            stopping.push((id.clone(), child.engine.clone()));
        }
    }
    stopping
}

/// An agent failed its health probes: ends it (killed where its engine can, which
/// its engine reports as a crash; else stopped between messages) and restarts it like
/// any agent that crashed. An agent inside a handler on an engine that cannot end it
/// is reported and left running.
pub(crate) fn unhealthy(shared: &Shared, agent: &str, why: &str) {
    let reason = format!("unhealthy: {why}");
    let (engine, since) = {
        let state = shared.lock();
        let Some(child) = state.children.get(agent) else {
            return;
        };
        let Phase::Running(since) = child.phase else {
            return;
        };
        (child.engine.clone(), since)
    };
    tracing::warn!(agent, "{reason}");
    let guild = &shared.context.namespace;
    if engine.capabilities().kill && engine.kill_agent(guild, agent, &reason).is_ok() {
        return;
    }
    if engine
        .agent_info(guild, agent)
        .is_some_and(|info| info.busy)
    {
        // Stopping it would wait for a handler this engine cannot end.
        let left = format!(
            "{reason}; it is inside a handler its engine cannot end, so it is left running"
        );
        tracing::warn!(agent, "{left}");
        shared.hooks.on_error(agent, &left);
        return;
    }
    if let Some(child) = shared.lock().children.get_mut(agent) {
        child.expected_stops += 1;
    }
    if let Err(error) = engine.stop_agent(guild, agent) {
        tracing::warn!(agent, %error, "stopping an unhealthy agent failed");
    }
    shared.hooks.on_error(agent, &reason);
    ended(shared, agent, true, since, &reason);
}

/// Stops group members in the order given, telling the hooks of each as it stops
/// (its `Stopped` event, which comes later, is not told again).
fn stop_all(shared: &Shared, stopping: &[(String, Arc<dyn ExecutionEngine>)]) {
    for (id, engine) in stopping {
        match engine.stop_agent(&shared.context.namespace, id) {
            Ok(()) => shared.hooks.on_stop(id),
            Err(error) => {
                tracing::warn!(agent = %id, %error, "stopping a member of a supervised group failed");
            }
        }
    }
}

/// A restart that has fallen due.
struct DueRestart {
    id: String,
    spec: AgentSpec,
    engine: Arc<dyn ExecutionEngine>,
    attempt: u32,
    delay: Duration,
}

/// Starts again every agent whose restart is due, in group order.
fn restart_due(shared: &Shared, now: Instant) {
    let due: Vec<DueRestart> = {
        let state = shared.lock();
        state
            .groups
            .values()
            .flat_map(|group| group.members.iter())
            .filter_map(|id| {
                let child = state.children.get(id)?;
                match child.phase {
                    Phase::Waiting { due, delay } if due <= now => Some(DueRestart {
                        id: id.clone(),
                        spec: child.spec.clone(),
                        engine: child.engine.clone(),
                        attempt: child.attempt,
                        delay,
                    }),
                    _ => None,
                }
            })
            .collect()
    };
    for DueRestart {
        id,
        spec,
        engine,
        attempt,
        delay,
    } in due
    {
        // Counted running before it starts, so an end during its start hook is seen.
        let started_at = Instant::now();
        if let Some(child) = shared.lock().children.get_mut(&id) {
            if !matches!(child.phase, Phase::Waiting { .. }) {
                continue;
            }
            child.phase = Phase::Running(started_at);
            child.probe = ProbeState::default();
            child.sighting = Default::default();
        }
        match engine.run_agent(&shared.context, spec) {
            Ok(()) => {
                if let Some(child) = shared.lock().children.get_mut(&id) {
                    child.restarts += 1;
                }
                shared.emit(
                    &id,
                    engine.name(),
                    LifecycleKind::Restarted {
                        attempt,
                        delay_ms: delay.as_millis() as u64,
                    },
                );
                shared.hooks.on_restart(&id, attempt, delay);
            }
            Err(error) => {
                let reason = format!("restarting it failed: {error}");
                tracing::warn!(agent = %id, "{reason}");
                shared.hooks.on_error(&id, &reason);
                ended(shared, &id, true, started_at, &reason);
            }
        }
    }
}

/// How an end is described in reports.
fn describe(kind: &LifecycleKind) -> String {
    match kind {
        LifecycleKind::Exited => "exited".to_owned(),
        LifecycleKind::Crashed { reason } => format!("crashed: {reason}"),
        LifecycleKind::KilledByLimit { reason } => format!("killed by a limit: {reason}"),
        other => format!("{other:?}"),
    }
}
