//! The guild's figures as Prometheus metrics, in the OpenMetrics text format: what
//! `guild run --metrics` serves, read from the engines at the moment of the scrape, so
//! they are the numbers `guild run` prints in its summary.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::TypedMetric;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::{AgentInfo, AgentState, EngineStats, Guild, HistogramSnapshot};

/// A guild's figures at one moment: what [`Guild::metrics_text`] encodes for
/// Prometheus and what an OTLP push sends.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// The guild's id.
    pub guild: String,
    /// Each launched agent, with how often its supervisor restarted it.
    pub agents: Vec<(AgentInfo, u64)>,
    /// Each engine in use, by name, with its totals.
    pub engines: Vec<(String, EngineStats)>,
}

impl Guild {
    /// The guild's figures now.
    pub fn figures(&self) -> Figures {
        Figures {
            guild: self.spec().id.clone(),
            agents: self
                .agents()
                .into_iter()
                .map(|agent| {
                    let restarts = self.restarts(&agent.id);
                    (agent, restarts)
                })
                .collect(),
            engines: self
                .engines()
                .map(|(name, engine)| (name.to_owned(), engine.stats()))
                .collect(),
        }
    }
}

/// A histogram read from an agent's timings at the moment of the scrape.
#[derive(Debug, Default)]
struct Durations(std::sync::Mutex<HistogramSnapshot>);

impl Durations {
    fn set(&self, snapshot: HistogramSnapshot) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = snapshot;
    }
}

impl TypedMetric for Durations {
    const TYPE: prometheus_client::metrics::MetricType =
        prometheus_client::metrics::MetricType::Histogram;
}

impl EncodeMetric for Durations {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder<'_>,
    ) -> std::fmt::Result {
        let snapshot = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // The encoder adds the counts up, and names the bound f64::MAX "+Inf".
        let buckets: Vec<(f64, u64)> = snapshot
            .buckets()
            .into_iter()
            .map(|(bound, count)| (bound.min(f64::MAX), count))
            .collect();
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            snapshot.sum_seconds(),
            snapshot.count(),
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        Self::TYPE
    }
}

/// The content type of [`Guild::metrics_text`], for an HTTP response.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The labels of an agent's figures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentLabels {
    guild: String,
    agent: String,
    agent_type: String,
    engine: String,
}

/// The labels of an engine's figures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EngineLabels {
    guild: String,
    engine: String,
}

/// One family of per-agent figures, registered under `name`.
fn agent_family<M>(registry: &mut Registry, name: &str, help: &str) -> Family<AgentLabels, M>
where
    M: EncodeMetric + TypedMetric + Default + std::fmt::Debug + Send + Sync + 'static,
{
    let family = Family::<AgentLabels, M>::default();
    registry.register(name, help, family.clone());
    family
}

impl Guild {
    /// The guild's figures, per agent and per engine, in the OpenMetrics text format
    /// (which Prometheus scrapes): messages in and out, failed deliveries (each one
    /// dead-lettered), restarts, queue depth, whether a handler runs, resident memory of
    /// agents in processes of their own, and CPU or handler time where measured. Counters count since the
    /// agent last started; `guild_agent_restarts_total` says how often that was.
    pub fn metrics_text(&self) -> String {
        let mut registry = Registry::default();
        let messages_in = agent_family::<Counter>(
            &mut registry,
            "guild_agent_messages_in",
            "Messages delivered to the agent since it last started",
        );
        let messages_out = agent_family::<Counter>(
            &mut registry,
            "guild_agent_messages_out",
            "Messages the agent published since it last started",
        );
        let errors = agent_family::<Counter>(
            &mut registry,
            "guild_agent_errors",
            "Deliveries to the agent that failed (each dead-lettered) since it last started",
        );
        let restarts = agent_family::<Counter>(
            &mut registry,
            "guild_agent_restarts",
            "Times the supervisor started the agent again",
        );
        let queued = agent_family::<Gauge>(
            &mut registry,
            "guild_agent_queued",
            "Deliveries waiting for the agent",
        );
        let busy = agent_family::<Gauge>(
            &mut registry,
            "guild_agent_busy",
            "1 while a handler of the agent runs",
        );
        let running = agent_family::<Gauge>(
            &mut registry,
            "guild_agent_running",
            "1 while the agent is started and not paused, stopped or dead",
        );
        let memory = agent_family::<Gauge>(
            &mut registry,
            "guild_agent_resident_memory_bytes",
            "Resident memory of the agent's process, where it has one",
        );
        let cpu = agent_family::<Gauge<f64, std::sync::atomic::AtomicU64>>(
            &mut registry,
            "guild_agent_cpu_seconds",
            "CPU time of the agent's process (process engine), or time in its handlers (pool \
             engine), where the engine measures it",
        );
        let handling = agent_family::<Durations>(
            &mut registry,
            "guild_agent_handler_duration_seconds",
            "How long the agent's handler ran per delivery, since it last started (recorded \
             while timing is on, as under guild run --metrics)",
        );
        let waiting = agent_family::<Durations>(
            &mut registry,
            "guild_agent_queue_wait_seconds",
            "How long deliveries waited between publishing and the agent's handler, to the \
             millisecond, since it last started (recorded while timing is on)",
        );
        let figures = self.figures();
        for (agent, agent_restarts) in &figures.agents {
            let labels = AgentLabels {
                guild: agent.guild.clone(),
                agent: agent.id.clone(),
                agent_type: agent.agent_type.clone(),
                engine: agent.engine.clone(),
            };
            messages_in.get_or_create(&labels).inc_by(agent.messages_in);
            messages_out
                .get_or_create(&labels)
                .inc_by(agent.messages_out);
            errors.get_or_create(&labels).inc_by(agent.errors);
            restarts.get_or_create(&labels).inc_by(*agent_restarts);
            queued.get_or_create(&labels).set(gauge(agent.queued));
            busy.get_or_create(&labels).set(i64::from(agent.busy));
            running
                .get_or_create(&labels)
                .set(i64::from(agent.state == AgentState::Running));
            handling
                .get_or_create(&labels)
                .set(agent.timings.handling.clone());
            waiting
                .get_or_create(&labels)
                .set(agent.timings.waiting.clone());
            if let Some(bytes) = agent.memory_bytes {
                memory.get_or_create(&labels).set(gauge(bytes));
            }
            if let Some(time) = agent.cpu_time {
                cpu.get_or_create(&labels).set(time.as_secs_f64());
            }
        }
        let engine_running = Family::<EngineLabels, Gauge>::default();
        registry.register(
            "guild_engine_running_agents",
            "Agents running on the engine (of every guild it runs)",
            engine_running.clone(),
        );
        let engine_dead = Family::<EngineLabels, Gauge>::default();
        registry.register(
            "guild_engine_dead_agents",
            "Agents that crashed or exited and are not cleaned up yet",
            engine_dead.clone(),
        );
        let engine_counter = |registry: &mut Registry, name: &str, help: &str| {
            let family = Family::<EngineLabels, Counter>::default();
            registry.register(name, help, family.clone());
            family
        };
        let engine_in = engine_counter(
            &mut registry,
            "guild_engine_messages_in",
            "Messages delivered to the engine's agents (those now listed)",
        );
        let engine_out = engine_counter(
            &mut registry,
            "guild_engine_messages_out",
            "Messages the engine's agents published (those now listed)",
        );
        let engine_dead_letters = engine_counter(
            &mut registry,
            "guild_engine_dead_letters",
            "Deliveries to the engine's agents that failed and were dead-lettered (those now listed)",
        );
        for (name, stats) in &figures.engines {
            let labels = EngineLabels {
                guild: figures.guild.clone(),
                engine: name.clone(),
            };
            engine_running
                .get_or_create(&labels)
                .set(gauge(stats.running as u64));
            engine_dead
                .get_or_create(&labels)
                .set(gauge(stats.dead as u64));
            engine_in.get_or_create(&labels).inc_by(stats.messages_in);
            engine_out.get_or_create(&labels).inc_by(stats.messages_out);
            engine_dead_letters
                .get_or_create(&labels)
                .inc_by(stats.errors);
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &registry);
        text
    }
}

fn gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
