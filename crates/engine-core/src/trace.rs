//! Trace context in messages: the seam through which one trace follows a request from
//! agent to agent, across threads, processes and machines.
//!
//! A message carries its publisher's W3C trace context (`traceparent`, `tracestate`) in
//! its headers, and the span in which a delivery is handled takes that context as its
//! parent. This crate does no tracing of its own: it calls a [`TraceContext`] installed
//! once per process (by the program, when it exports traces; the `guild` facade does
//! it for OpenTelemetry). With none installed, publishing does not touch the headers
//! and handling costs one relaxed load more than with no tracing at all.

use std::collections::BTreeMap;
use std::sync::OnceLock;

/// The W3C header that carries the trace id, the parent span id and the sampling flag.
pub const TRACEPARENT: &str = "traceparent";

/// The W3C header that carries vendor-specific trace state.
pub const TRACESTATE: &str = "tracestate";

/// How trace context moves between the current span and a message's headers.
pub trait TraceContext: Send + Sync + 'static {
    /// Writes the context of the current span into `headers`, if it has one.
    fn inject(&self, headers: &mut BTreeMap<String, String>);

    /// Makes the context in `headers`, if any, the parent of `span`.
    fn adopt(&self, span: &tracing::Span, headers: &BTreeMap<String, String>);
}

static INSTALLED: OnceLock<Box<dyn TraceContext>> = OnceLock::new();

/// Installs `context` for this process; `false` (and nothing changes) when one was
/// installed already.
pub fn install_trace_context(context: Box<dyn TraceContext>) -> bool {
    INSTALLED.set(context).is_ok()
}

/// Records the current span's context in `headers` unless they carry one already (a
/// message forwarded as it is keeps its own).
pub(crate) fn inject(headers: &mut BTreeMap<String, String>) {
    if let Some(context) = INSTALLED.get()
        && !headers.contains_key(TRACEPARENT)
    {
        context.inject(headers);
    }
}

/// Parents `span` on the context in `headers`.
pub(crate) fn adopt(span: &tracing::Span, headers: &BTreeMap<String, String>) {
    if let Some(context) = INSTALLED.get()
        && !span.is_disabled()
        && headers.contains_key(TRACEPARENT)
    {
        context.adopt(span, headers);
    }
}
