//! What tracing costs: the pool engine's `tell` and `ask` workloads run with tracing set
//! up in this process as each system name says. `trace-off` installs no subscriber at
//! all; `trace-unconfigured` installs what `guild run` does when no OTLP endpoint is
//! configured (warnings to stderr); `trace-spans` makes and samples an OpenTelemetry
//! span per handled message and drops it; `trace-otlp` and `trace-otlp-1pct` export to
//! a real OTLP/gRPC receiver in this process, keeping every trace or one in a hundred.

use guild::telemetry::{Export, Tracing, TracingConfig};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use conformance::otlp_receiver::OtlpReceiver;

/// The systems of this section.
pub(crate) const SYSTEMS: &[&str] = &[
    "trace-off",
    "trace-unconfigured",
    "trace-spans",
    "trace-otlp",
    "trace-otlp-1pct",
];

/// Tracing as set up for one system, kept until the cell ends.
pub(crate) struct Setup {
    tracing: Option<Tracing>,
    receiver: Option<OtlpReceiver>,
}

impl Setup {
    /// Sets tracing up for `system` (one of [`SYSTEMS`]).
    pub(crate) fn new(system: &str) -> Self {
        let (export, ratio, receiver) = match system {
            "trace-off" => {
                return Self {
                    tracing: None,
                    receiver: None,
                };
            }
            "trace-unconfigured" => (Export::FromEnvironment, None, None),
            "trace-spans" => (Export::Nowhere, Some(1.0), None),
            "trace-otlp" | "trace-otlp-1pct" => {
                let receiver = OtlpReceiver::start().expect("an OTLP receiver starts");
                let ratio = if system == "trace-otlp" { 1.0 } else { 0.01 };
                (
                    Export::Otlp(receiver.endpoint().to_owned()),
                    Some(ratio),
                    Some(receiver),
                )
            }
            other => panic!("unknown tracing system {other:?}"),
        };
        let tracing = Tracing::start(&TracingConfig {
            export,
            sample_ratio: ratio,
        })
        .expect("tracing starts");
        let exported = tracing
            .as_ref()
            .map(|tracing| tracing.layer().expect("the default filter parses"));
        let logged = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(tracing_subscriber::EnvFilter::new("warn"));
        tracing_subscriber::registry()
            .with(logged)
            .with(exported)
            .init();
        Self { tracing, receiver }
    }

    /// Flushes what is buffered and says how many spans the receiver got.
    pub(crate) fn finish(self) {
        if let Some(tracing) = self.tracing {
            tracing.shutdown();
        }
        if let Some(receiver) = self.receiver {
            eprintln!("the receiver got {} spans", receiver.spans().len());
        }
    }
}
