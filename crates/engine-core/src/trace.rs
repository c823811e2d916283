//! Trace context in messages: the seam through which one trace follows a request from
//! agent to agent, across threads, processes and machines.
//!
//! A message carries its publisher's W3C trace context (`traceparent`, `tracestate`) in
//! its headers, and the span in which a delivery is handled takes that context as its
//! parent. This crate does no tracing of its own: it calls a [`TraceContext`] installed
//! once per process (by the program, when it exports traces; the `guild` facade does
//! it for OpenTelemetry). With none installed, publishing does not touch the headers
//! and handling costs one relaxed load more than with no tracing at all.
//!
//! Whether a delivery is traced is decided before its span is made: a delivery left out
//! by sampling gets no span at all (making one and dropping it costs microseconds), and
//! what its handler publishes carries the context that says "not sampled", so nothing
//! downstream traces that request either.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use crate::Message;

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

    /// Decides whether a delivery carrying `headers` is traced: as its publisher's
    /// context says when it carries one, else by this process's sampling.
    fn sampled(&self, headers: &BTreeMap<String, String>) -> bool;

    /// A `traceparent` marked not sampled, for what a handler publishes while handling
    /// an untraced delivery that carried no context.
    fn unsampled_root(&self) -> String;
}

static INSTALLED: OnceLock<Box<dyn TraceContext>> = OnceLock::new();

thread_local! {
    /// The untraced delivery whose handler runs on this thread, whose context its
    /// messages carry on.
    static UNTRACED: RefCell<Option<Arc<Message>>> = const { RefCell::new(None) };
}

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
        match UNTRACED.with_borrow(Clone::clone) {
            Some(untraced) => {
                let traceparent = untraced
                    .headers
                    .get(TRACEPARENT)
                    .cloned()
                    .unwrap_or_else(|| context.unsampled_root());
                headers.insert(TRACEPARENT.to_owned(), traceparent);
            }
            None => context.inject(headers),
        }
    }
}

/// For a delivery of `message`: `None` when it is to be traced (or nothing is
/// installed), else the message whose context its handler passes on.
pub(crate) fn untraced(message: &Arc<Message>) -> Option<Arc<Message>> {
    let context = INSTALLED.get()?;
    (!context.sampled(&message.headers)).then(|| message.clone())
}

/// Runs `body` with `untraced`'s context passed on by handlers on this thread.
pub(crate) fn passing_on<T>(untraced: Option<&Arc<Message>>, body: impl FnOnce() -> T) -> T {
    let Some(untraced) = untraced else {
        return body();
    };
    let previous = UNTRACED.replace(Some(untraced.clone()));
    let _restore = Restore(previous);
    body()
}

/// Puts back the context that was passed on before, even when the body panics.
struct Restore(Option<Arc<Message>>);

impl Drop for Restore {
    fn drop(&mut self) {
        UNTRACED.set(self.0.take());
    }
}

/// A handler's future that passes on an untraced delivery's context whenever it is polled.
pub(crate) struct PassingOn<F> {
    pub(crate) inner: F,
    pub(crate) untraced: Option<Arc<Message>>,
}

impl<F: Future + Unpin> Future for PassingOn<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        passing_on(this.untraced.as_ref(), || {
            Pin::new(&mut this.inner).poll(cx)
        })
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
