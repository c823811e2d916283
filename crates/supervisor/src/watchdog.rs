//! The watchdog: looks at supervised agents that have one and finds handlers that have
//! run longer than it allows. On an engine that can end an agent (`kill`), the agent is
//! killed, which its engine reports as a crash and the supervisor restarts like any
//! other; elsewhere it is reported as stuck, once per stall.

use std::time::{Duration, Instant};

use engine_core::{LifecycleKind, supervision_ms};

use crate::supervisor::{Phase, Shared, State};

/// The shortest and longest time between two looks.
const LOOK_MIN: Duration = Duration::from_millis(10);
const LOOK_MAX: Duration = Duration::from_secs(1);

/// When the watchdog next looks, if any running agent has one: a quarter of the
/// shortest watchdog, within [`LOOK_MIN`, `LOOK_MAX`].
pub(crate) fn next_look(state: &State, now: Instant) -> Option<Instant> {
    state
        .children
        .values()
        .filter(|child| matches!(child.phase, Phase::Running(_)))
        .filter_map(|child| child.spec.watchdog_ms)
        .min()
        .map(|ms| now + (supervision_ms(ms) / 4).clamp(LOOK_MIN, LOOK_MAX))
}

/// Looks at every running agent that has a watchdog.
pub(crate) fn check(shared: &Shared, _now: Instant) {
    let watched: Vec<_> = {
        let state = shared.lock();
        state
            .children
            .iter()
            .filter(|(_, child)| matches!(child.phase, Phase::Running(_)))
            .filter_map(|(id, child)| {
                let limit = supervision_ms(child.spec.watchdog_ms?);
                Some((
                    id.clone(),
                    child.engine.clone(),
                    limit,
                    child.reported_stuck,
                ))
            })
            .collect()
    };
    let guild = shared.context_namespace();
    for (id, engine, limit, reported) in watched {
        let busy_for = engine.agent_info(guild, &id).and_then(|info| info.busy_for);
        let stuck = busy_for.filter(|busy| *busy > limit);
        set_reported(shared, &id, stuck.is_some());
        let Some(busy) = stuck else { continue };
        if reported {
            continue;
        }
        let busy_ms = busy.as_millis() as u64;
        tracing::warn!(agent = %id, busy_ms, "a handler has run past the agent's watchdog");
        shared.emit(&id, engine.name(), LifecycleKind::Stuck { busy_ms });
        if engine.capabilities().kill {
            let reason = format!(
                "its handler ran {busy_ms} ms, past its watchdog of {} ms",
                limit.as_millis()
            );
            if let Err(error) = engine.kill_agent(guild, &id, &reason) {
                tracing::warn!(agent = %id, %error, "the watchdog could not kill a stuck agent");
            }
        }
    }
}

fn set_reported(shared: &Shared, id: &str, stuck: bool) {
    if let Some(child) = shared.lock().children.get_mut(id) {
        child.reported_stuck = stuck;
    }
}
