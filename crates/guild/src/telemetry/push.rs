//! The guild's figures pushed over OTLP/gRPC: the counters and gauges of
//! [`Guild::metrics_text`](crate::Guild::metrics_text), as OpenTelemetry observable
//! instruments read from the last [`Figures`] the program handed in.

use std::sync::{Arc, Mutex, PoisonError};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{AsyncInstrument, Meter, MeterProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};

use super::{TracingError, resource};
use crate::{AgentInfo, AgentState, Figures};

/// Pushes a guild's figures to an OTLP endpoint, every `OTEL_METRIC_EXPORT_INTERVAL`
/// milliseconds (60 s unless set) and once more at [`shutdown`](Self::shutdown).
pub struct MetricsPush {
    provider: SdkMeterProvider,
    figures: Arc<Mutex<Figures>>,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for MetricsPush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsPush").finish_non_exhaustive()
    }
}

impl MetricsPush {
    /// Starts pushing to `endpoint` (an `http://` URL); `None` when
    /// `OTEL_METRICS_EXPORTER=none` turns metrics export off.
    pub fn start(endpoint: &str) -> Result<Option<Self>, TracingError> {
        if std::env::var("OTEL_METRICS_EXPORTER").is_ok_and(|value| value == "none") {
            return Ok(None);
        }
        if !endpoint.starts_with("http://") {
            return Err(TracingError::Endpoint {
                endpoint: endpoint.to_owned(),
            });
        }
        let runtime = super::exporter_runtime(endpoint)?;
        let exporter = {
            let _entered = runtime.enter();
            opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .map_err(|error| super::exporter_error(endpoint, error))?
        };
        let provider = SdkMeterProvider::builder()
            .with_resource(resource())
            .with_reader(PeriodicReader::builder(exporter).build())
            .build();
        let figures = Arc::new(Mutex::new(Figures::default()));
        register(&provider.meter("guild"), &figures);
        Ok(Some(Self {
            provider,
            figures,
            runtime,
        }))
    }

    /// Makes `figures` what the next push sends.
    pub fn update(&self, figures: Figures) {
        *self.figures.lock().unwrap_or_else(PoisonError::into_inner) = figures;
    }

    /// Pushes the last figures and stops.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("guild: pushing the last metrics failed: {error}");
        }
        self.runtime.shutdown_background();
    }
}

/// The attributes of an agent's figures, as the Prometheus labels.
fn agent_attributes(figures: &Figures, agent: &AgentInfo) -> [KeyValue; 4] {
    [
        KeyValue::new("guild", figures.guild.clone()),
        KeyValue::new("agent", agent.id.clone()),
        KeyValue::new("agent_type", agent.agent_type.clone()),
        KeyValue::new("engine", agent.engine.clone()),
    ]
}

/// One figure of an agent (given its restarts), where it has it.
type AgentValue = fn(&AgentInfo, u64) -> Option<u64>;

/// The callback that observes `value` for every agent in the shared `figures`.
fn each_agent(
    figures: &Arc<Mutex<Figures>>,
    value: AgentValue,
) -> impl Fn(&dyn AsyncInstrument<u64>) + Send + Sync + 'static {
    let figures = figures.clone();
    move |observer| {
        let figures = figures.lock().unwrap_or_else(PoisonError::into_inner);
        for (agent, restarts) in &figures.agents {
            if let Some(value) = value(agent, *restarts) {
                observer.observe(value, &agent_attributes(&figures, agent));
            }
        }
    }
}

/// Registers one instrument per figure, each reading the shared figures when the
/// reader collects.
fn register(meter: &Meter, figures: &Arc<Mutex<Figures>>) {
    let counters: [(&'static str, &'static str, &'static str, AgentValue); 4] = [
        (
            "guild.agent.messages_in",
            "Messages delivered to the agent since it last started",
            "{message}",
            |agent, _| Some(agent.messages_in),
        ),
        (
            "guild.agent.messages_out",
            "Messages the agent published since it last started",
            "{message}",
            |agent, _| Some(agent.messages_out),
        ),
        (
            "guild.agent.errors",
            "Deliveries to the agent that failed (each dead-lettered) since it last started",
            "{delivery}",
            |agent, _| Some(agent.errors),
        ),
        (
            "guild.agent.restarts",
            "Times the supervisor started the agent again",
            "{restart}",
            |_, restarts| Some(restarts),
        ),
    ];
    for (name, description, unit, value) in counters {
        meter
            .u64_observable_counter(name)
            .with_description(description)
            .with_unit(unit)
            .with_callback(each_agent(figures, value))
            .build();
    }
    let gauges: [(&'static str, &'static str, &'static str, AgentValue); 4] = [
        (
            "guild.agent.queued",
            "Deliveries waiting for the agent",
            "{delivery}",
            |agent, _| Some(agent.queued),
        ),
        (
            "guild.agent.busy",
            "1 while a handler of the agent runs",
            "1",
            |agent, _| Some(u64::from(agent.busy)),
        ),
        (
            "guild.agent.running",
            "1 while the agent is started and not paused, stopped or dead",
            "1",
            |agent, _| Some(u64::from(agent.state == AgentState::Running)),
        ),
        (
            "guild.agent.resident_memory",
            "Resident memory of the agent's process, where it has one",
            "By",
            |agent, _| agent.memory_bytes,
        ),
    ];
    for (name, description, unit, value) in gauges {
        meter
            .u64_observable_gauge(name)
            .with_description(description)
            .with_unit(unit)
            .with_callback(each_agent(figures, value))
            .build();
    }
    let cpu = figures.clone();
    meter
        .f64_observable_counter("guild.agent.cpu_time")
        .with_description(
            "CPU time of the agent's process (process engine), or time in its handlers (pool \
             engine), where the engine measures it",
        )
        .with_unit("s")
        .with_callback(move |observer| {
            let figures = cpu.lock().unwrap_or_else(PoisonError::into_inner);
            for (agent, _) in &figures.agents {
                if let Some(time) = agent.cpu_time {
                    observer.observe(time.as_secs_f64(), &agent_attributes(&figures, agent));
                }
            }
        })
        .build();
    let engines = figures.clone();
    meter
        .u64_observable_gauge("guild.engine.running_agents")
        .with_description("Agents running on the engine (of every guild it runs)")
        .with_unit("{agent}")
        .with_callback(move |observer| {
            let figures = engines.lock().unwrap_or_else(PoisonError::into_inner);
            for (engine, stats) in &figures.engines {
                observer.observe(
                    stats.running as u64,
                    &[
                        KeyValue::new("guild", figures.guild.clone()),
                        KeyValue::new("engine", engine.clone()),
                    ],
                );
            }
        })
        .build();
}
