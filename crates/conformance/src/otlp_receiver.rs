//! A real OTLP receiver for tests and benchmarks: a gRPC server on 127.0.0.1
//! implementing the OpenTelemetry collector's trace and metrics services (generated
//! from the published protocol definitions), keeping every span and the last value of
//! every metric series it is sent.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};

/// One span as the receiver got it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// The trace it belongs to.
    pub trace_id: Vec<u8>,
    /// Its own id.
    pub span_id: Vec<u8>,
    /// Its parent's id; empty for a root span.
    pub parent_span_id: Vec<u8>,
    /// Its name.
    pub name: String,
    /// Its kind, as the protocol numbers them (4 producer, 5 consumer).
    pub kind: i32,
    /// Its attributes, as text.
    pub attributes: BTreeMap<String, String>,
    /// The attributes of the process that sent it (`service.name`, `process.pid`).
    pub resource: BTreeMap<String, String>,
    /// Its events: each one's name and attributes.
    pub events: Vec<(String, BTreeMap<String, String>)>,
}

impl ReceivedSpan {
    /// The attribute `name`, if the span has it.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).map(String::as_str)
    }

    /// The pid of the process that sent it.
    pub fn pid(&self) -> Option<&str> {
        self.resource.get("process.pid").map(String::as_str)
    }
}

#[derive(Default)]
struct Received {
    spans: Mutex<Vec<ReceivedSpan>>,
    arrived: Condvar,
    points: Mutex<Vec<ReceivedPoint>>,
}

/// A running receiver; it stops when dropped.
pub struct OtlpReceiver {
    endpoint: String,
    received: Arc<Received>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for OtlpReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpReceiver")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl OtlpReceiver {
    /// Starts a receiver on a free port of 127.0.0.1.
    pub fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-receiver")
            .enable_all()
            .build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let received = Arc::new(Received::default());
        let service = TraceServiceServer::new(Collector(received.clone()))
            .max_decoding_message_size(64 << 20);
        let metrics = MetricsServiceServer::new(Collector(received.clone()));
        runtime.spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .add_service(metrics)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        Ok(Self {
            endpoint,
            received,
            runtime: Some(runtime),
        })
    }

    /// Where exporters send to, such as `http://127.0.0.1:43117`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.lock().clone()
    }

    /// The last value of every metric series pushed so far.
    pub fn metric_points(&self) -> Vec<ReceivedPoint> {
        self.received
            .points
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits up to `timeout` until the spans received satisfy `done`, and returns them
    /// (satisfying it or not).
    pub fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + timeout;
        let mut received = self.lock();
        while !done(&received) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            received = self
                .received
                .arrived
                .wait_timeout(received, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        received.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ReceivedSpan>> {
        self.received
            .spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

struct Collector(Arc<Received>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans
                .resource
                .map(|resource| text_map(&resource.attributes))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(ReceivedSpan {
                        trace_id: span.trace_id,
                        span_id: span.span_id,
                        parent_span_id: span.parent_span_id,
                        name: span.name,
                        kind: span.kind,
                        attributes: text_map(&span.attributes),
                        resource: resource.clone(),
                        events: span
                            .events
                            .iter()
                            .map(|event| (event.name.clone(), text_map(&event.attributes)))
                            .collect(),
                    });
                }
            }
        }
        let mut received = self.0.spans.lock().unwrap_or_else(PoisonError::into_inner);
        received.extend(spans);
        self.0.arrived.notify_all();
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// One data point of a pushed metric: the last value the receiver got for it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedPoint {
    /// The metric's name.
    pub name: String,
    /// The point's attributes, as text.
    pub attributes: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
        let mut points = Vec::new();
        for resource_metrics in request.into_inner().resource_metrics {
            for scope in resource_metrics.scope_metrics {
                for metric in scope.metrics {
                    let data_points = match metric.data {
                        Some(metric::Data::Sum(sum)) => sum.data_points,
                        Some(metric::Data::Gauge(gauge)) => gauge.data_points,
                        _ => continue,
                    };
                    for point in data_points {
                        let value = match point.value {
                            Some(number_data_point::Value::AsInt(value)) => value as f64,
                            Some(number_data_point::Value::AsDouble(value)) => value,
                            None => continue,
                        };
                        points.push(ReceivedPoint {
                            name: metric.name.clone(),
                            attributes: text_map(&point.attributes),
                            value,
                        });
                    }
                }
            }
        }
        let mut received = self.0.points.lock().unwrap_or_else(PoisonError::into_inner);
        for point in points {
            // The last value of each series replaces the one before.
            match received
                .iter_mut()
                .find(|old| old.name == point.name && old.attributes == point.attributes)
            {
                Some(old) => *old = point,
                None => received.push(point),
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

fn text_map(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .map(|pair| (pair.key.clone(), text(pair.value.as_ref())))
        .collect()
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|value| value.value.as_ref()) {
        Some(any_value::Value::StringValue(text)) => text.clone(),
        Some(any_value::Value::IntValue(number)) => number.to_string(),
        Some(any_value::Value::BoolValue(flag)) => flag.to_string(),
        Some(any_value::Value::DoubleValue(number)) => number.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}
