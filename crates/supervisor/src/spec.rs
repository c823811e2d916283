//! What a guild's `[supervision]` table says: the strategy and intensity of its
//! groups, and the defaults its agents' own settings override.

use std::collections::BTreeMap;
use std::time::Duration;

use engine_core::{
    AgentSpec, Backoff, BreakerSpec, HealthCheck, MAX_SUPERVISION_MS, RestartPolicy, supervision_ms,
};
use serde::{Deserialize, Serialize};

/// Which agents of a group are restarted when one of them ends and is to be restarted
/// (Erlang/OTP's strategies). "Order" is the order agents were added to the group (a
/// spec's order); stops go in reverse order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Only that agent.
    #[default]
    OneForOne,
    /// Every agent of the group: the others are stopped, then all start again.
    OneForAll,
    /// That agent and those after it in order.
    RestForOne,
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::OneForOne => "one_for_one",
            Self::OneForAll => "one_for_all",
            Self::RestForOne => "rest_for_one",
        })
    }
}

/// A group of agents supervised together: its strategy and its intensity (at most
/// `max_restarts` restarts within `within_ms`; one more and the group is stopped and
/// the failure escalates).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// The agents in the group, in order (ids as launched, so a replicated agent's
    /// copies are `<id>-1`, `<id>-2`, …, or its id for all of them).
    #[serde(default)]
    pub agents: Vec<String>,
    /// The strategy; the guild's when not set.
    #[serde(default)]
    pub strategy: Option<Strategy>,
    /// Restarts allowed within the period; the guild's when not set.
    #[serde(default)]
    pub max_restarts: Option<u32>,
    /// The period, in milliseconds; the guild's when not set.
    #[serde(default)]
    pub within_ms: Option<u64>,
}

/// A guild's supervision: the default group's strategy and intensity, the defaults for
/// every agent's supervision settings, and further groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisionSpec {
    /// The strategy of the default group (and of groups that set none).
    #[serde(default)]
    pub strategy: Strategy,
    /// Restarts allowed within `within_ms` per group.
    #[serde(default = "default_max_restarts")]
    pub max_restarts: u32,
    /// The intensity's period, in milliseconds.
    #[serde(default = "default_within_ms")]
    pub within_ms: u64,
    /// The restart policy of agents that set none.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// The backoff of agents that set none.
    #[serde(default)]
    pub backoff: Backoff,
    /// Health probes for agents that set none; none when not set.
    #[serde(default)]
    pub health: Option<HealthCheck>,
    /// A circuit breaker for agents that set none; none when not set.
    #[serde(default)]
    pub breaker: Option<BreakerSpec>,
    /// The watchdog of agents that set none, in milliseconds; none when not set.
    #[serde(default)]
    pub watchdog_ms: Option<u64>,
    /// Further groups by name; agents in none of them make up the default group.
    #[serde(default)]
    pub groups: BTreeMap<String, GroupSpec>,
}

/// The most restarts a group's intensity may allow: the supervisor remembers each
/// restart within the period, so the bound keeps a crash loop's memory bounded too.
pub const MAX_RESTARTS: u32 = 100_000;

/// The name of the group of agents that the spec puts in no other.
pub const DEFAULT_GROUP: &str = "default";

impl Default for SupervisionSpec {
    fn default() -> Self {
        Self {
            strategy: Strategy::default(),
            max_restarts: default_max_restarts(),
            within_ms: default_within_ms(),
            restart: RestartPolicy::default(),
            backoff: Backoff::default(),
            health: None,
            breaker: None,
            watchdog_ms: None,
            groups: BTreeMap::new(),
        }
    }
}

/// A group as it runs: name, strategy and intensity resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Its name.
    pub name: String,
    /// Its strategy.
    pub strategy: Strategy,
    /// Restarts allowed within `within`.
    pub max_restarts: u32,
    /// The intensity's period.
    pub within: Duration,
}

impl Group {
    /// A one-for-one group allowing `max_restarts` within `within`.
    pub fn new(
        name: impl Into<String>,
        strategy: Strategy,
        max_restarts: u32,
        within: Duration,
    ) -> Self {
        Self {
            name: name.into(),
            strategy,
            max_restarts,
            within,
        }
    }
}

impl SupervisionSpec {
    /// `agent` with every supervision setting it leaves out taken from here.
    pub fn apply(&self, agent: &AgentSpec) -> AgentSpec {
        let mut agent = agent.clone();
        agent.restart.get_or_insert(self.restart);
        agent.backoff.get_or_insert(self.backoff);
        if agent.health.is_none() {
            agent.health = self.health;
        }
        if agent.breaker.is_none() {
            agent.breaker = self.breaker;
        }
        if agent.watchdog_ms.is_none() {
            agent.watchdog_ms = self.watchdog_ms;
        }
        agent
    }

    /// The group agent `agent_id` (as launched: a group naming a replicated agent's
    /// spec id holds all its copies, `<id>-1`, `<id>-2`, …) belongs to.
    pub fn group_of(&self, agent_id: &str) -> Group {
        let copy_of = |member: &str| {
            agent_id
                .strip_prefix(member)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        };
        let named = self.groups.iter().find(|(_, group)| {
            group
                .agents
                .iter()
                .any(|member| member == agent_id || copy_of(member))
        });
        match named {
            Some((name, group)) => Group {
                name: name.clone(),
                strategy: group.strategy.unwrap_or(self.strategy),
                max_restarts: group.max_restarts.unwrap_or(self.max_restarts),
                within: supervision_ms(group.within_ms.unwrap_or(self.within_ms)),
            },
            None => Group {
                name: DEFAULT_GROUP.to_owned(),
                strategy: self.strategy,
                max_restarts: self.max_restarts,
                within: supervision_ms(self.within_ms),
            },
        }
    }

    /// Every problem with the guild-level settings, as `(field, problem)`, fields
    /// written as in the spec (`backoff.jitter`, `groups.db.within_ms`).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if let Some(problem) = within_problem(self.within_ms) {
            problems.push(("within_ms".to_owned(), problem));
        }
        if let Some(problem) = restarts_problem(self.max_restarts) {
            problems.push(("max_restarts".to_owned(), problem));
        }
        for (name, group) in &self.groups {
            if let Some(problem) = group.within_ms.and_then(within_problem) {
                problems.push((format!("groups.{name}.within_ms"), problem));
            }
            if let Some(problem) = group.max_restarts.and_then(restarts_problem) {
                problems.push((format!("groups.{name}.max_restarts"), problem));
            }
            if group.agents.is_empty() {
                problems.push((
                    format!("groups.{name}.agents"),
                    "a group needs at least one agent".to_owned(),
                ));
            }
            if name == DEFAULT_GROUP {
                problems.push((
                    format!("groups.{name}"),
                    format!(
                        "{DEFAULT_GROUP:?} is the group of agents in no other: pick another name"
                    ),
                ));
            }
        }
        problems.extend(agent_problems(
            Some(self.backoff),
            self.health,
            self.breaker,
            self.watchdog_ms,
        ));
        problems
    }
}

/// Every problem with one agent's own supervision settings, as `(field, problem)`.
pub fn agent_problems(
    backoff: Option<Backoff>,
    health: Option<HealthCheck>,
    breaker: Option<BreakerSpec>,
    watchdog_ms: Option<u64>,
) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let mut add = |table: &str, found: Option<(&'static str, String)>| {
        if let Some((field, problem)) = found {
            problems.push((format!("{table}.{field}"), problem));
        }
    };
    add("backoff", backoff.and_then(|b| b.problem()));
    add("health", health.and_then(|h| h.problem()));
    add("breaker", breaker.and_then(|b| b.problem()));
    if let Some(ms) = watchdog_ms
        && !(1..=MAX_SUPERVISION_MS).contains(&ms)
    {
        problems.push((
            "watchdog_ms".to_owned(),
            format!("{ms} is not from 1 to {MAX_SUPERVISION_MS} (leave it out for no watchdog)"),
        ));
    }
    problems
}

fn restarts_problem(restarts: u32) -> Option<String> {
    (restarts > MAX_RESTARTS).then(|| format!("{restarts} is more than {MAX_RESTARTS}"))
}

fn within_problem(ms: u64) -> Option<String> {
    (!(1..=MAX_SUPERVISION_MS).contains(&ms))
        .then(|| format!("{ms} is not from 1 to {MAX_SUPERVISION_MS} milliseconds"))
}

fn default_max_restarts() -> u32 {
    3
}

fn default_within_ms() -> u64 {
    5_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> SupervisionSpec {
        serde_json::from_str(text).expect("a supervision table")
    }

    #[test]
    fn an_agent_keeps_its_own_settings_and_takes_the_rest() {
        let supervision = spec(
            r#"{"restart": "permanent", "watchdog_ms": 500,
                "breaker": {"failures": 2}, "backoff": {"kind": "fixed", "initial_ms": 7}}"#,
        );
        let mut agent = AgentSpec::new("a", "t");
        agent.restart = Some(RestartPolicy::Temporary);
        let applied = supervision.apply(&agent);
        assert_eq!(applied.restart, Some(RestartPolicy::Temporary));
        assert_eq!(applied.watchdog_ms, Some(500));
        assert_eq!(applied.breaker.map(|b| b.failures), Some(2));
        assert_eq!(applied.backoff.map(|b| b.initial_ms), Some(7));
        assert_eq!(applied.health, None);
    }

    #[test]
    fn a_group_naming_a_replicated_agent_holds_its_copies_only() {
        let supervision = spec(
            r#"{"strategy": "one_for_all",
                "groups": {"db": {"agents": ["worker"], "strategy": "rest_for_one", "max_restarts": 9}}}"#,
        );
        for id in ["worker", "worker-1", "worker-12"] {
            let group = supervision.group_of(id);
            assert_eq!(
                (group.name.as_str(), group.strategy, group.max_restarts),
                ("db", Strategy::RestForOne, 9)
            );
        }
        for id in ["worker-", "worker-x", "workers", "other"] {
            let group = supervision.group_of(id);
            assert_eq!(
                (group.name.as_str(), group.strategy),
                (DEFAULT_GROUP, Strategy::OneForAll),
                "{id}"
            );
        }
    }

    #[test]
    fn every_problem_is_named_with_its_field() {
        let supervision = spec(
            r#"{"within_ms": 0, "watchdog_ms": 0, "backoff": {"jitter": -1},
                "max_restarts": 4294967295,
                "groups": {"default": {"agents": []}}}"#,
        );
        let fields: Vec<String> = supervision
            .problems()
            .into_iter()
            .map(|(field, _)| field)
            .collect();
        assert_eq!(
            fields,
            [
                "within_ms",
                "max_restarts",
                "groups.default.agents",
                "groups.default",
                "backoff.jitter",
                "watchdog_ms"
            ]
        );
    }
}
