//! `guild run --metrics ADDR`: the guild's figures over HTTP at `/metrics`, for a
//! Prometheus to scrape, served by axum on the command's tokio runtime.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use guild::{Guild, METRICS_CONTENT_TYPE};

/// Listens for metrics scrapes on `addr` (port 0: any free port), before anything is
/// started, so a bad address fails the run at once.
pub(crate) fn listen(addr: &str) -> anyhow::Result<std::net::TcpListener> {
    let parsed: SocketAddr = addr
        .parse()
        .with_context(|| format!("--metrics {addr:?} is not an address such as 127.0.0.1:9464"))?;
    let listener = std::net::TcpListener::bind(parsed)
        .with_context(|| format!("cannot listen for metrics scrapes on {parsed}"))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves `guild`'s metrics on `listener` until the command exits; returns the address.
pub(crate) fn metrics(
    listener: std::net::TcpListener,
    guild: Arc<Guild>,
) -> anyhow::Result<SocketAddr> {
    let bound = listener.local_addr()?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let guild = guild.clone();
            async move {
                // Reading the engines may wait on their locks: off the runtime's workers.
                let text = tokio::task::spawn_blocking(move || guild.metrics_text())
                    .await
                    .unwrap_or_default();
                ([(CONTENT_TYPE, METRICS_CONTENT_TYPE)], text)
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the metrics server stopped");
        }
    });
    Ok(bound)
}
