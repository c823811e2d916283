//! Checking a loaded spec against what is registered and what a run can do: everything
//! a run would refuse is refused here first, with the file, the line and the field, so
//! `guild validate` and `guild run` agree.

use std::collections::{BTreeSet, HashMap};

use crate::{
    AgentRegistry, AgentSpec, ERROR_TOPIC, INBOX_PREFIX, KnownNames, LoadedSpec, SpecError,
    SpecErrors,
};
use spec_file::{bump, locate};

/// The most copies of one agent a spec may ask for.
pub const MAX_REPLICAS: u32 = 10_000;

/// The longest id (guild or agent) and topic name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// The longest a run may be given, in seconds (30 days).
pub const MAX_TIMEOUT_SECS: u64 = 30 * 24 * 3600;

/// The longest quiet period a run may wait for, in milliseconds (one day).
pub const MAX_QUIET_MS: u64 = 24 * 3600 * 1000;

/// The smallest address-space cap an agent process can start under: the agent host
/// maps its program, its libraries, a tokio runtime and its threads' stacks first.
pub const MIN_MEMORY_BYTES: u64 = 64 * 1024 * 1024;

/// The largest cap of each kind: beyond these a cap means nothing (address space of
/// 2^47 bytes is all a process has on x86-64; ten years of CPU; a million files).
pub const MAX_MEMORY_BYTES: u64 = 1 << 47;
/// See [`MAX_MEMORY_BYTES`].
pub const MAX_CPU_SECONDS: u64 = 10 * 365 * 24 * 3600;
/// See [`MAX_MEMORY_BYTES`].
pub const MAX_OPEN_FILES: u64 = 1 << 20;

/// The most deliveries an agent's queue may be given room for.
pub const MAX_QUEUE_CAPACITY: usize = 10_000_000;

/// The longest a blocked publish may be told to wait, in milliseconds (an hour).
pub const MAX_BLOCK_MS: u64 = 3_600_000;

impl LoadedSpec {
    /// Checks what parsing cannot: unique agent ids, known agent types (and properties
    /// they accept, by building each agent once through the registry without starting
    /// it), engines, messaging backends and their settings, dependencies, ids and
    /// topics, sizes and limits within their bounds, settings nothing would honour, and
    /// a sensible run section. Reports every problem, not just the first.
    pub fn check(&self, registry: &AgentRegistry, known: &KnownNames) -> Result<(), SpecErrors> {
        let mut check = Checker {
            loaded: self,
            errors: Vec::new(),
        };
        check.guild(known);
        #[cfg(feature = "engine-pool")]
        check.pool_table(known);
        #[cfg(feature = "engine-cluster")]
        check.cluster_table(known);
        check.agents(registry, known);
        check.supervision_table();
        check.run();
        if check.errors.is_empty() {
            Ok(())
        } else {
            Err(SpecErrors(check.errors))
        }
    }
}

impl LoadedSpec {
    /// Checks the spec as it will run when `engine` is forced for every agent and
    /// `messaging` replaces the spec's backend (what `--engine` and `--messaging` do),
    /// keeping the file's lines for the errors.
    pub fn check_as_run(
        &self,
        registry: &AgentRegistry,
        known: &KnownNames,
        engine: Option<&str>,
        messaging: Option<&str>,
    ) -> Result<(), SpecErrors> {
        if engine.is_none() && messaging.is_none() {
            return self.check(registry, known);
        }
        let mut as_run = self.clone();
        if let Some(engine) = engine {
            as_run.spec.engine = Some(engine.to_owned());
            for agent in &mut as_run.spec.agents {
                agent.engine = None;
            }
        }
        if let Some(messaging) = messaging {
            as_run.spec.messaging = Some(messaging.to_owned());
        }
        as_run.check(registry, known)
    }
}

struct Checker<'a> {
    loaded: &'a LoadedSpec,
    errors: Vec<SpecError>,
}

impl<'a> Checker<'a> {
    /// The spec, borrowed for as long as the checker's own borrow, not from it.
    fn loaded_spec(&self) -> &'a LoadedSpec {
        self.loaded
    }

    /// Records a problem with `field`, placed on the `nth` line that sets `key` to
    /// `value`.
    fn error(&mut self, field: String, key: &str, value: &str, nth: usize, message: String) {
        let (line, column) = locate(&self.loaded.source, key, value, nth).unzip();
        self.errors.push(SpecError {
            file: self.loaded.file.display().to_string(),
            line,
            column,
            field,
            message,
        });
    }

    /// Refuses an id or topic that is empty, too long, or holds control characters
    /// (they end up in thread names, Redis keys and terminals).
    fn name(&mut self, field: String, key: &str, value: &str, what: &str) {
        let problem = if value.trim().is_empty() {
            Some(format!("the {what} must not be empty"))
        } else if value.len() > MAX_NAME_BYTES {
            Some(format!(
                "the {what} has {} bytes, over the cap of {MAX_NAME_BYTES}",
                value.len()
            ))
        } else if value.chars().any(char::is_control) {
            Some(format!("the {what} {value:?} holds a control character"))
        } else {
            None
        };
        if let Some(message) = problem {
            self.error(field, key, value, 0, message);
        }
    }

    fn guild(&mut self, known: &KnownNames) {
        let spec = &self.loaded_spec().spec;
        self.name("id".into(), "id", &spec.id, "guild id");
        if let Some(engine) = &spec.engine
            && !known.engines.contains(engine)
        {
            self.error(
                "engine".into(),
                "engine",
                engine,
                0,
                format!(
                    "unknown engine {engine:?}; known: {}",
                    known.engines.join(", ")
                ),
            );
        }
        if let Some(messaging) = &spec.messaging {
            let scheme = messaging.split("://").next().unwrap_or(messaging);
            // The facade's own check knows most (a scheme this build lacks, say why).
            let problem = match known.check_messaging {
                Some(check) => check(messaging).err(),
                None if !known.messaging.iter().any(|m| m == scheme) => Some(format!(
                    "unknown messaging backend {scheme:?}; known: {}",
                    known.messaging.join(", ")
                )),
                None => None,
            };
            if let Some(message) = problem {
                self.error("messaging".into(), "messaging", messaging, 0, message);
            }
        }
    }

    fn agents(&mut self, registry: &AgentRegistry, known: &KnownNames) {
        let spec = &self.loaded_spec().spec;
        for (name, dependency) in &spec.dependencies {
            if !registry.has_resource_kind(&dependency.kind) {
                self.error(
                    format!("dependencies.{name}.kind"),
                    "kind",
                    &dependency.kind,
                    0,
                    format!("unknown resource kind {:?}", dependency.kind),
                );
            }
        }
        let mut seen_ids: HashMap<String, usize> = HashMap::new();
        let mut seen_types: HashMap<&str, usize> = HashMap::new();
        let mut uses_cluster = false;
        for (i, agent) in spec.agents.iter().enumerate() {
            let nth_type = bump(&mut seen_types, &agent.agent_type);
            self.name(format!("agents[{i}].id"), "id", &agent.id, "agent id");
            if agent.replicas == 0 || agent.replicas > MAX_REPLICAS {
                self.error(
                    format!("agents[{i}].replicas"),
                    "replicas",
                    &agent.replicas.to_string(),
                    0,
                    format!("replicas must be from 1 to {MAX_REPLICAS}"),
                );
            } else {
                for copy in agent.expand() {
                    let nth = seen_ids.entry(copy.id.clone()).or_insert(0);
                    *nth += 1;
                    if *nth == 2 {
                        self.error(
                            format!("agents[{i}].id"),
                            "id",
                            &agent.id,
                            0,
                            format!("duplicate agent id {:?}", copy.id),
                        );
                    }
                }
            }
            if !registry.has_agent_type(&agent.agent_type) {
                self.error(
                    format!("agents[{i}].type"),
                    "type",
                    &agent.agent_type,
                    nth_type,
                    format!(
                        "unknown agent type {:?}; registered: {}",
                        agent.agent_type,
                        registry.agent_types().join(", ")
                    ),
                );
            } else if (1..=MAX_REPLICAS).contains(&agent.replicas)
                && let Some(copy) = agent.expand().into_iter().next()
                && let Err(error) = registry.build(&copy)
            {
                // The factory is what reads the properties: building once (without
                // starting) is the only check that cannot disagree with a run.
                self.error(
                    format!("agents[{i}].properties"),
                    "type",
                    &agent.agent_type,
                    nth_type,
                    error.message().to_owned(),
                );
            }
            let engine = agent
                .engine
                .as_ref()
                .or(spec.engine.as_ref())
                .unwrap_or(&known.default_engine);
            if let Some(name) = &agent.engine
                && !known.engines.contains(name)
            {
                self.error(
                    format!("agents[{i}].engine"),
                    "engine",
                    name,
                    0,
                    format!(
                        "unknown engine {name:?}; known: {}",
                        known.engines.join(", ")
                    ),
                );
            }
            uses_cluster |= engine == "cluster";
            self.limits(i, agent, engine, known);
            self.engine_settings(i, agent, engine);
            self.queue(i, agent, known);
            if let Some(ms) = agent.handler_timeout_ms
                && !(1..=MAX_TIMEOUT_SECS * 1000).contains(&ms)
            {
                self.error(
                    format!("agents[{i}].handler_timeout_ms"),
                    "handler_timeout_ms",
                    &ms.to_string(),
                    0,
                    format!(
                        "handler_timeout_ms must be from 1 to {} (leave it out for no limit)",
                        MAX_TIMEOUT_SECS * 1000
                    ),
                );
            }
            self.supervision(i, agent, engine);
            for (d, name) in agent.dependencies.iter().enumerate() {
                if !spec.dependencies.contains_key(name) {
                    self.error(
                        format!("agents[{i}].dependencies[{d}]"),
                        "dependencies",
                        name,
                        0,
                        format!("no guild dependency is named {name:?}"),
                    );
                }
            }
            for (t, topic) in agent.topics.iter().enumerate() {
                let field = format!("agents[{i}].topics[{t}]");
                self.name(field.clone(), "topics", topic, "topic name");
                if let Some(owner) = topic.strip_prefix(INBOX_PREFIX)
                    && (1..=MAX_REPLICAS).contains(&agent.replicas)
                    && agent.expand().iter().any(|copy| copy.id != owner)
                {
                    self.error(
                        field,
                        "topics",
                        topic,
                        0,
                        format!(
                            "{topic:?} is the inbox of {owner:?}: only it may subscribe, and \
                             every agent is subscribed to its own already"
                        ),
                    );
                }
            }
        }
        // The cluster engine's agents run on other machines: in-process messaging
        // cannot reach them.
        let messaging = spec.messaging.as_deref().unwrap_or("memory");
        if uses_cluster
            && !(messaging.starts_with("redis://") || messaging.starts_with("rediss://"))
        {
            self.error(
                "messaging".into(),
                "messaging",
                messaging,
                0,
                format!(
                    "the cluster engine carries messages between machines through Redis, and \
                     this guild's messaging is {messaging:?}: set messaging = \"redis://…\" \
                     (or --messaging)"
                ),
            );
        }
    }

    /// The settings of one engine (the pool's scheduling, the cluster's resources):
    /// refused on other engines, and checked by the engine they belong to.
    fn engine_settings(&mut self, i: usize, agent: &AgentSpec, engine: &str) {
        let problem = match engine {
            #[cfg(feature = "engine-pool")]
            "pool" => engine_pool::check_agent(
                &self.loaded_spec().spec.pool.clone().unwrap_or_default(),
                agent,
            ),
            #[cfg(feature = "engine-cluster")]
            "cluster" => engine_cluster::check_agent(agent),
            _ => agent.refuse_settings_of_other_engines(engine),
        };
        if let Err(error) = problem {
            let key = ["placement", "weight", "rate", "resources"]
                .into_iter()
                .find(|key| error.message().contains(&format!("`{key}`")))
                .unwrap_or("rate");
            // Placed on this agent's line: count the earlier agents that set the key.
            let sets = |agent: &AgentSpec| match key {
                "placement" => agent.placement != engine_core::Placement::Shared,
                "weight" => agent.weight.is_some(),
                "resources" => !agent.resources.is_empty(),
                _ => agent.rate.is_some(),
            };
            let nth = self.loaded_spec().spec.agents[..i]
                .iter()
                .filter(|a| sets(a))
                .count();
            self.error(
                format!("agents[{i}].{key}"),
                key,
                "",
                nth,
                error.message().to_owned(),
            );
        }
    }

    /// One agent's own supervision settings in range, and a watchdog only where it can
    /// watch.
    fn supervision(&mut self, i: usize, agent: &AgentSpec, engine: &str) {
        let guild_watchdog = self
            .loaded_spec()
            .spec
            .supervision
            .as_ref()
            .and_then(|supervision| supervision.watchdog_ms);
        if engine == "sync" && (agent.watchdog_ms.is_some() || guild_watchdog.is_some()) {
            let (field, nth) = match agent.watchdog_ms {
                Some(_) => (
                    format!("agents[{i}].watchdog_ms"),
                    self.nth_setting(i, "watchdog_ms"),
                ),
                None => ("supervision.watchdog_ms".to_owned(), 0),
            };
            self.error(
                field,
                "watchdog_ms",
                "",
                nth,
                format!(
                    "agent {:?} runs on the sync engine, whose handlers run on the caller's \
                     thread under its lock, where no watchdog can see them: use \
                     handler_timeout_ms to end a handler that takes too long",
                    agent.id
                ),
            );
        }
        for (field, problem) in supervisor::agent_problems(
            agent.backoff,
            agent.health,
            agent.breaker,
            agent.watchdog_ms,
        ) {
            let key = field.rsplit('.').next().unwrap_or(&field).to_owned();
            let nth = self.nth_setting(i, &field);
            self.error(format!("agents[{i}].{field}"), &key, "", nth, problem);
        }
    }

    /// How many agents before agent `i` set the supervision setting `field`, so an
    /// error lands on agent `i`'s own line.
    fn nth_setting(&self, i: usize, field: &str) -> usize {
        let table = field.split('.').next().unwrap_or(field);
        let sets = |agent: &AgentSpec| match table {
            "backoff" => agent.backoff.is_some(),
            "health" => agent.health.is_some(),
            "breaker" => agent.breaker.is_some(),
            _ => agent.watchdog_ms.is_some(),
        };
        let supervision_sets = self
            .loaded_spec()
            .spec
            .supervision
            .as_ref()
            .is_some_and(|s| match table {
                "health" => s.health.is_some(),
                "breaker" => s.breaker.is_some(),
                "watchdog_ms" => s.watchdog_ms.is_some(),
                _ => false,
            });
        let before = self.loaded_spec().spec.agents[..i]
            .iter()
            .filter(|a| sets(a))
            .count();
        // Tables are written before agents in a spec, so the guild's own comes first.
        before + usize::from(supervision_sets)
    }

    /// The `[supervision]` table: its settings in range, and groups that name agents
    /// of the guild, each in one group only.
    fn supervision_table(&mut self) {
        let spec = &self.loaded_spec().spec;
        let Some(supervision) = &spec.supervision else {
            return;
        };
        for (field, problem) in supervision.problems() {
            let key = field.rsplit('.').next().unwrap_or(&field).to_owned();
            self.error(
                format!("supervision.{field}"),
                &key,
                "",
                0,
                format!("supervision setting {field}: {problem}"),
            );
        }
        // Membership by id or copy id, without expanding replicas (a replica count
        // out of range is refused elsewhere and must not be allocated here).
        let is_agent = |member: &str| {
            spec.agents.iter().any(|agent| {
                member == agent.id
                    || member
                        .strip_prefix(agent.id.as_str())
                        .and_then(|rest| rest.strip_prefix('-'))
                        .and_then(|n| n.parse::<u32>().ok())
                        .is_some_and(|n| n >= 1 && n <= agent.replicas)
            })
        };
        let mut seen: HashMap<&str, &str> = HashMap::new();
        for (name, group) in &supervision.groups {
            for (m, member) in group.agents.iter().enumerate() {
                let field = format!("supervision.groups.{name}.agents[{m}]");
                if !is_agent(member) {
                    self.error(
                        field,
                        "agents",
                        member,
                        0,
                        format!("supervision group {name:?} names {member:?}, which is no agent of this guild"),
                    );
                } else if let Some(other) = seen.insert(member, name) {
                    self.error(
                        field,
                        "agents",
                        member,
                        0,
                        format!("agent {member:?} is in supervision groups {other:?} and {name:?}: an agent has one supervisor"),
                    );
                }
            }
        }
    }

    /// The `[pool]` table: its settings in range, and a pool that runs some agent.
    #[cfg(feature = "engine-pool")]
    fn pool_table(&mut self, known: &KnownNames) {
        if let Some(pool) = &self.loaded_spec().spec.pool {
            let problem = pool.problem();
            self.engine_table("pool", problem, known);
        }
    }

    /// The `[cluster]` table: its settings well formed, and a cluster that runs some
    /// agent.
    #[cfg(feature = "engine-cluster")]
    fn cluster_table(&mut self, known: &KnownNames) {
        if let Some(cluster) = &self.loaded_spec().spec.cluster {
            let problem = cluster.problem();
            self.engine_table("cluster", problem, known);
        }
    }

    /// The table of settings of engine `name`, which the spec has: `problem` reported
    /// on its setting, and an error when the engine runs none of the guild's agents,
    /// since the table would then be ignored.
    #[cfg(any(feature = "engine-pool", feature = "engine-cluster"))]
    fn engine_table(
        &mut self,
        name: &str,
        problem: Option<(&'static str, String)>,
        known: &KnownNames,
    ) {
        if let Some((setting, why)) = problem {
            self.error(
                format!("{name}.{setting}"),
                setting,
                "",
                0,
                format!("{name} setting {setting}: {why}"),
            );
        }
        let spec = &self.loaded_spec().spec;
        // Copies run where their agent does: no need to expand replicas.
        let runs = spec.agents.iter().any(|agent| {
            agent
                .engine
                .as_ref()
                .or(spec.engine.as_ref())
                .unwrap_or(&known.default_engine)
                == name
        });
        if !runs {
            self.error(
                name.into(),
                name,
                "",
                0,
                format!(
                    "the [{name}] table sets up the {name} engine, which runs none of this \
                     guild's agents: remove the table or run agents with engine = \"{name}\""
                ),
            );
        }
    }

    fn limits(&mut self, i: usize, agent: &AgentSpec, engine: &str, known: &KnownNames) {
        let limits = &agent.limits;
        let caps = [
            (
                "memory_bytes",
                limits.memory_bytes,
                MIN_MEMORY_BYTES,
                MAX_MEMORY_BYTES,
            ),
            ("cpu_seconds", limits.cpu_seconds, 1, MAX_CPU_SECONDS),
            ("open_files", limits.open_files, 16, MAX_OPEN_FILES),
        ];
        for (name, value, min, max) in caps {
            if let Some(value) = value
                && !(min..=max).contains(&value)
            {
                self.error(
                    format!("agents[{i}].limits.{name}"),
                    name,
                    &value.to_string(),
                    0,
                    format!(
                        "{name} must be from {min} to {max} (leave it out for no cap){}",
                        if name == "memory_bytes" {
                            ": an agent process cannot start in less"
                        } else {
                            ""
                        }
                    ),
                );
            }
        }
        if limits.is_set()
            && !limits.best_effort
            && !known.enforcing_limits.iter().any(|e| e == engine)
        {
            self.error(
                format!("agents[{i}].limits"),
                "limits",
                "",
                0,
                format!(
                    "the {engine} engine cannot enforce limits (engines that can: {}); \
                     run the agent on one of those, or set best_effort = true in its limits",
                    known.enforcing_limits.join(", ")
                ),
            );
        }
    }

    fn queue(&mut self, i: usize, agent: &AgentSpec, known: &KnownNames) {
        let Some(queue) = agent.queue else {
            return;
        };
        let field = format!("agents[{i}].queue");
        if !(1..=MAX_QUEUE_CAPACITY).contains(&queue.capacity) {
            self.error(
                field.clone(),
                "capacity",
                &queue.capacity.to_string(),
                0,
                format!("capacity must be from 1 to {MAX_QUEUE_CAPACITY}"),
            );
        }
        if queue.block_ms > MAX_BLOCK_MS {
            self.error(
                field.clone(),
                "block_ms",
                &queue.block_ms.to_string(),
                0,
                format!("block_ms must be at most {MAX_BLOCK_MS} (an hour)"),
            );
        }
        let messaging = self
            .loaded_spec()
            .spec
            .messaging
            .as_deref()
            .unwrap_or("memory");
        let scheme = messaging.split("://").next().unwrap_or(messaging);
        if !known.queue_limits.iter().any(|m| m == scheme) {
            self.error(
                field,
                "queue",
                "",
                0,
                format!(
                    "the {scheme} backend does not bound queues per agent (it bounds what waits \
                     by its own retention); those that do: {}",
                    known.queue_limits.join(", ")
                ),
            );
        }
    }

    fn run(&mut self) {
        let spec = &self.loaded_spec().spec;
        let run = &spec.run;
        if run.until.count == 0 {
            self.error(
                "run.until.count".into(),
                "count",
                "0",
                0,
                "count must be at least 1".into(),
            );
        }
        if run.timeout_secs == 0 || run.timeout_secs > MAX_TIMEOUT_SECS {
            self.error(
                "run.timeout_secs".into(),
                "timeout_secs",
                &run.timeout_secs.to_string(),
                0,
                format!("timeout_secs must be from 1 to {MAX_TIMEOUT_SECS} (30 days)"),
            );
        }
        if run.until.quiet_ms > MAX_QUIET_MS {
            self.error(
                "run.until.quiet_ms".into(),
                "quiet_ms",
                &run.until.quiet_ms.to_string(),
                0,
                format!("quiet_ms must be at most {MAX_QUIET_MS} (a day)"),
            );
        }
        let topics: BTreeSet<&str> = spec
            .agents
            .iter()
            .flat_map(|a| a.topics.iter().map(String::as_str))
            .collect();
        for (s, send) in run.send.iter().enumerate() {
            let field = format!("run.send[{s}].topic");
            if send.topic == ERROR_TOPIC {
                self.error(
                    field,
                    "topic",
                    &send.topic,
                    0,
                    format!("{ERROR_TOPIC:?} carries the guild's dead letters; nothing else may be sent there"),
                );
            } else if !topics.contains(send.topic.as_str()) && !send.topic.starts_with(INBOX_PREFIX)
            {
                self.error(
                    field,
                    "topic",
                    &send.topic,
                    0,
                    format!("no agent subscribes to topic {:?}", send.topic),
                );
            }
        }
    }
}
