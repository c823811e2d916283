//! Traces and metrics out of a guild: OpenTelemetry spans for every handled message,
//! exported over OTLP/gRPC, with the W3C trace context carried in message headers so
//! one trace follows a request across agents, threads, agent processes and Redis; and
//! the guild's figures pushed over OTLP ([`MetricsPush`]).
//!
//! Configured the standard way (`OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`, `OTEL_BSP_*`), or in code with
//! [`TracingConfig`]. With no endpoint configured nothing is set up and nothing is
//! exported. The process engine's agent processes export too: they get the endpoint in
//! their environment and call [`Tracing::start`] through the program's `main`, as the
//! `guild` command does.

mod push;

pub use push::MetricsPush;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::sync::OnceLock;

use engine_core::TraceContext;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// The standard variable naming where OTLP data goes.
pub const ENDPOINT_VARIABLE: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The standard variable naming where OTLP traces go (over [`ENDPOINT_VARIABLE`]).
pub const TRACES_ENDPOINT_VARIABLE: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// The service name spans are reported under when `OTEL_SERVICE_NAME` does not say.
pub const DEFAULT_SERVICE_NAME: &str = "guild";
/// Which spans and events go to the exporter, as a `tracing` filter; by default,
/// everything at `info` and above except the exporter's own machinery.
pub const FILTER_VARIABLE: &str = "GUILD_TRACE";
const DEFAULT_FILTER: &str = "info,h2=off,hyper=off,hyper_util=off,tonic=off,tower=off,opentelemetry=off,opentelemetry_sdk=off";

/// Where spans go.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Export {
    /// Where the standard `OTEL_*` variables say; nowhere (tracing stays off) when they
    /// name no endpoint.
    #[default]
    FromEnvironment,
    /// To this OTLP/gRPC endpoint, such as `http://127.0.0.1:4317`.
    Otlp(String),
    /// Nowhere: spans are made and sampled, then dropped (to measure their cost).
    Nowhere,
}

/// How a process traces.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TracingConfig {
    /// Where spans go.
    pub export: Export,
    /// The share of traces kept, in [0, 1], overriding `OTEL_TRACES_SAMPLER`. A trace
    /// begun elsewhere keeps its sampling decision.
    pub sample_ratio: Option<f64>,
}

/// The endpoint tracing was started with, which agent processes are given.
static STARTED_ENDPOINT: OnceLock<String> = OnceLock::new();

/// Tracing as started in this process: hand its [`layer`](Self::layer) to the
/// `tracing` subscriber, and call [`shutdown`](Self::shutdown) before the process
/// exits, so the last spans are sent.
pub struct Tracing {
    provider: SdkTracerProvider,
    /// Drives the gRPC connection; it must outlive the provider.
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing").finish_non_exhaustive()
    }
}

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
pub enum TracingError {
    /// The endpoint is not an `http://` URL.
    #[error(
        "OTLP endpoint {endpoint:?} is not supported: guild exports OTLP over gRPC to an \
         http:// URL such as http://127.0.0.1:4317"
    )]
    Endpoint {
        /// The endpoint given.
        endpoint: String,
    },
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` asks for a protocol other than gRPC.
    #[error("{variable}={value:?} is not supported: guild exports OTLP over gRPC (\"grpc\")")]
    Protocol {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
    },
    /// The sample ratio is outside [0, 1].
    #[error("the sample ratio must be between 0 and 1, not {0}")]
    Ratio(f64),
    /// `OTEL_TRACES_SAMPLER` names a sampler guild does not offer, or its argument is
    /// not a ratio.
    #[error(
        "OTEL_TRACES_SAMPLER={sampler:?} (OTEL_TRACES_SAMPLER_ARG={argument:?}) is not \
         supported: use always_on, always_off, traceidratio or parentbased_traceidratio \
         with a ratio in [0, 1] (guild samples parent-based in every case)"
    )]
    Sampler {
        /// The sampler named.
        sampler: String,
        /// Its argument, if any.
        argument: Option<String>,
    },
    /// A `tracing` filter does not parse.
    #[error("{FILTER_VARIABLE}={value:?} is not a tracing filter: {source}")]
    Filter {
        /// The filter.
        value: String,
        /// Why it does not parse.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// The exporter (or the runtime that drives it) could not be built.
    #[error("cannot set up OTLP export to {endpoint:?}: {reason}")]
    Exporter {
        /// Where it was to export to.
        endpoint: String,
        /// Why it could not.
        reason: String,
    },
}

impl Tracing {
    /// Starts tracing as `config` says; `None` when it names no endpoint (nothing is
    /// set up then, and tracing costs nothing). Installs the W3C trace context in
    /// message headers for this process.
    pub fn start(config: &TracingConfig) -> Result<Option<Self>, TracingError> {
        let endpoint = match &config.export {
            Export::FromEnvironment => match configured_endpoint() {
                Some(endpoint) => Some(endpoint),
                None => return Ok(None),
            },
            Export::Otlp(endpoint) => Some(endpoint.clone()),
            Export::Nowhere => None,
        };
        for variable in [
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ] {
            if let Ok(value) = std::env::var(variable)
                && value != "grpc"
                && endpoint.is_some()
            {
                return Err(TracingError::Protocol { variable, value });
            }
        }
        let ratio = sample_ratio(config.sample_ratio)?;
        let mut provider = SdkTracerProvider::builder()
            .with_resource(resource())
            .with_sampler(DecidedUpFront(Sampler::ParentBased(Box::new(
                Sampler::TraceIdRatioBased(ratio),
            ))));
        let mut runtime = None;
        if let Some(endpoint) = &endpoint {
            if !endpoint.starts_with("http://") {
                return Err(TracingError::Endpoint {
                    endpoint: endpoint.clone(),
                });
            }
            let driver = exporter_runtime(endpoint)?;
            let exporter = {
                let _entered = driver.enter();
                opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint)
                    .build()
                    .map_err(|error| exporter_error(endpoint, error))?
            };
            provider = provider.with_batch_exporter(exporter);
            runtime = Some(driver);
            let _ = STARTED_ENDPOINT.set(endpoint.clone());
        }
        engine_core::install_trace_context(Box::new(W3c { ratio }));
        Ok(Some(Self {
            provider: provider.build(),
            runtime,
        }))
    }

    /// The `tracing` layer that turns spans into OpenTelemetry spans for this exporter,
    /// filtered by [`FILTER_VARIABLE`].
    pub fn layer<S>(&self) -> Result<impl Layer<S> + use<S>, TracingError>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        let value = std::env::var(FILTER_VARIABLE).unwrap_or_else(|_| DEFAULT_FILTER.to_owned());
        let filter = tracing_subscriber::EnvFilter::builder()
            .parse(&value)
            .map_err(|source| TracingError::Filter { value, source })?;
        let tracer = self.provider.tracer("guild");
        Ok(tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_threads(false)
            .with_filter(filter))
    }

    /// Sends what is buffered and stops exporting.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("guild: exporting the last spans failed: {error}");
        }
        if let Some(runtime) = self.runtime {
            runtime.shutdown_background();
        }
    }
}

/// The runtime that drives an exporter's gRPC channel: one of its own, whatever the
/// program runs.
fn exporter_runtime(endpoint: &str) -> Result<tokio::runtime::Runtime, TracingError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("guild-otlp")
        .enable_all()
        .build()
        .map_err(|error| exporter_error(endpoint, error))
}

/// Why export to `endpoint` could not be set up.
fn exporter_error(endpoint: &str, error: impl std::fmt::Display) -> TracingError {
    TracingError::Exporter {
        endpoint: endpoint.to_owned(),
        reason: error.to_string(),
    }
}

/// The OTLP endpoint for metrics the standard variables name, if any
/// (`OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`, else `OTEL_EXPORTER_OTLP_ENDPOINT`;
/// `OTEL_SDK_DISABLED=true` or `OTEL_METRICS_EXPORTER=none` turn the push off).
pub fn configured_metrics_endpoint() -> Option<String> {
    let set = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|value| value.eq_ignore_ascii_case("true"))
        || set("OTEL_METRICS_EXPORTER").is_some_and(|value| value == "none")
    {
        return None;
    }
    set("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT").or_else(|| set(ENDPOINT_VARIABLE))
}

/// The OTLP endpoint the standard variables name, if any (`OTEL_SDK_DISABLED=true` or
/// `OTEL_TRACES_EXPORTER=none` turn export off).
pub fn configured_endpoint() -> Option<String> {
    let set = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|value| value.eq_ignore_ascii_case("true"))
        || set("OTEL_TRACES_EXPORTER").is_some_and(|value| value == "none")
    {
        return None;
    }
    set(TRACES_ENDPOINT_VARIABLE).or_else(|| set(ENDPOINT_VARIABLE))
}

/// What an agent process needs in its environment to export where this process does.
pub(crate) fn agent_environment() -> Vec<(OsString, OsString)> {
    STARTED_ENDPOINT
        .get()
        .map(|endpoint| vec![(TRACES_ENDPOINT_VARIABLE.into(), endpoint.into())])
        .unwrap_or_default()
}

/// This process in OpenTelemetry's terms: the service (from the standard variables,
/// else `guild`) and its pid, so spans from agent processes can be told apart.
fn resource() -> Resource {
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(DEFAULT_SERVICE_NAME);
    }
    resource
        .with_attribute(KeyValue::new("process.pid", i64::from(std::process::id())))
        .build()
}

/// The share of traces kept: `ratio` when given, else what `OTEL_TRACES_SAMPLER` and
/// `OTEL_TRACES_SAMPLER_ARG` say (every trace when they say nothing).
fn sample_ratio(ratio: Option<f64>) -> Result<f64, TracingError> {
    let ratio = match ratio {
        Some(ratio) => ratio,
        None => {
            let Ok(sampler) = std::env::var("OTEL_TRACES_SAMPLER") else {
                return Ok(1.0);
            };
            let argument = std::env::var("OTEL_TRACES_SAMPLER_ARG").ok();
            let refused = || TracingError::Sampler {
                sampler: sampler.clone(),
                argument: argument.clone(),
            };
            match sampler.as_str() {
                "" | "always_on" | "parentbased_always_on" => 1.0,
                "always_off" | "parentbased_always_off" => 0.0,
                "traceidratio" | "parentbased_traceidratio" => match &argument {
                    None => 1.0,
                    Some(text) => text.trim().parse().map_err(|_| refused())?,
                },
                _ => return Err(refused()),
            }
        }
    };
    if (0.0..=1.0).contains(&ratio) {
        Ok(ratio)
    } else {
        Err(TracingError::Ratio(ratio))
    }
}

/// Samples as `0` does, except for the span of a delivery that starts a trace: guild
/// decided to trace it before making it (see [`W3c::untraced`]), so it is kept.
#[derive(Debug, Clone)]
struct DecidedUpFront(Sampler);

impl opentelemetry_sdk::trace::ShouldSample for DecidedUpFront {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: opentelemetry::trace::TraceId,
        name: &str,
        span_kind: &opentelemetry::trace::SpanKind,
        attributes: &[KeyValue],
        links: &[opentelemetry::trace::Link],
    ) -> opentelemetry_sdk::trace::SamplingResult {
        let root = parent_context.is_none_or(|parent| !parent.has_active_span());
        let delivery = attributes.iter().any(|pair| {
            pair.key.as_str() == "messaging.operation.type" && pair.value.as_str() == "process"
        });
        if root && delivery {
            return opentelemetry_sdk::trace::SamplingResult {
                decision: opentelemetry_sdk::trace::SamplingDecision::RecordAndSample,
                attributes: Vec::new(),
                trace_state: Default::default(),
            };
        }
        self.0
            .should_sample(parent_context, trace_id, name, span_kind, attributes, links)
    }
}

/// W3C trace context between the current `tracing` span and message headers, and the
/// up-front sampling decision for each delivery.
struct W3c {
    /// The share of deliveries that start a trace which are traced.
    ratio: f64,
}

thread_local! {
    /// Random numbers for sampling decisions and the ids of untraced requests.
    static RANDOM: std::cell::Cell<u64> = std::cell::Cell::new(seed());
}

/// A per-thread seed: the clock mixed with the thread's identity.
fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.finish() | 1
}

/// The next number of this thread's xorshift64* sequence.
fn random() -> u64 {
    RANDOM.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

impl TraceContext for W3c {
    fn inject(&self, headers: &mut BTreeMap<String, String>) {
        // Most messages are built outside any span (by a program, or by an untraced
        // handler): asking the subscriber whether there is one costs a thread-local read,
        // where building the OpenTelemetry context to find out costs far more.
        if !tracing::dispatcher::get_default(|dispatch| dispatch.current_span().is_known()) {
            return;
        }
        let context = tracing::Span::current().context();
        if context.span().span_context().is_valid() {
            TraceContextPropagator::new().inject_context(&context, &mut Headers(headers));
        }
    }

    fn sampled(&self, headers: &BTreeMap<String, String>) -> bool {
        match headers.get(engine_core::TRACEPARENT) {
            // The publisher decided: its flags' low bit says sampled.
            Some(traceparent) => traceparent
                .rsplit('-')
                .next()
                .and_then(|flags| u8::from_str_radix(flags, 16).ok())
                .is_some_and(|flags| flags & 1 == 1),
            // A request that starts here.
            None => {
                self.ratio >= 1.0 || ((random() >> 11) as f64 / (1u64 << 53) as f64) < self.ratio
            }
        }
    }

    fn unsampled_root(&self) -> String {
        format!(
            "00-{:016x}{:016x}-{:016x}-00",
            random(),
            random(),
            random() | 1
        )
    }

    fn adopt(&self, span: &tracing::Span, headers: &BTreeMap<String, String>) {
        let parent: Context = TraceContextPropagator::new().extract(&Received(headers));
        if parent.span().span_context().is_valid() {
            // Fails only for a span no OpenTelemetry layer records, which has no parent to set.
            let _ = span.set_parent(parent);
        }
    }
}

struct Headers<'a>(&'a mut BTreeMap<String, String>);

impl Injector for Headers<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct Received<'a>(&'a BTreeMap<String, String>);

impl Extractor for Received<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}
