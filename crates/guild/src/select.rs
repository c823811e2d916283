//! Choosing engines and messaging backends by name, among those compiled in through
//! cargo features.

use std::sync::Arc;

use crate::error::GuildError;
use crate::{GuildSpec, KnownNames};
use engine_core::{Error, ExecutionEngine, MessagingBackend, Result};

/// The engine used when neither the caller nor the spec names one: the pool, where it
/// is compiled in.
pub const DEFAULT_ENGINE: &str = if cfg!(feature = "engine-pool") {
    "pool"
} else {
    "threads"
};

/// The messaging backend used when neither the caller nor the spec names one.
pub const DEFAULT_MESSAGING: &str = "memory";

/// The environment variable the `guild` command reads to choose the engine for every
/// agent (as the default of `--engine`).
pub const ENGINE_VARIABLE: &str = "GUILD_ENGINE";

/// The engines compiled into this build.
pub fn engine_names() -> Vec<String> {
    let mut names = Vec::new();
    if cfg!(feature = "engine-sync") {
        names.push("sync".to_owned());
    }
    if cfg!(feature = "engine-threads") {
        names.push("threads".to_owned());
    }
    if cfg!(feature = "engine-process") {
        names.push("process".to_owned());
    }
    if cfg!(feature = "engine-pool") {
        names.push("pool".to_owned());
    }
    if cfg!(feature = "engine-cluster") {
        names.push("cluster".to_owned());
    }
    names
}

/// The messaging backends compiled into this build.
pub fn messaging_names() -> Vec<String> {
    let mut names = Vec::new();
    if cfg!(feature = "messaging-memory") {
        names.push("memory".to_owned());
    }
    #[cfg(feature = "messaging-redis")]
    {
        names.push("redis".to_owned());
        if messaging_redis::TLS {
            names.push("rediss".to_owned());
        }
    }
    names
}

/// Checks a messaging backend name or URL the way [`messaging`] would take it, without
/// connecting.
pub fn check_messaging(url: &str) -> std::result::Result<(), String> {
    let scheme = url.split("://").next().unwrap_or(url);
    match scheme {
        #[cfg(feature = "messaging-memory")]
        "memory" if url == "memory" => Ok(()),
        #[cfg(feature = "messaging-memory")]
        "memory" => Err("the in-memory backend takes no settings: write \"memory\"".to_owned()),
        #[cfg(feature = "messaging-redis")]
        "redis" | "rediss" => messaging_redis::RedisConfig::from_url(url)
            .map(|_| ())
            .map_err(|error| error.message().to_owned()),
        _ => Err(format!(
            "unknown messaging backend {scheme:?}; this build has: {}",
            messaging_names().join(", ")
        )),
    }
}

/// Every name a spec may use in this build.
pub fn known_names() -> KnownNames {
    KnownNames {
        engines: engine_names(),
        messaging: messaging_names(),
        default_engine: DEFAULT_ENGINE.to_owned(),
        enforcing_limits: engine_names()
            .into_iter()
            .filter(|name| name == "process" || name == "cluster")
            .collect(),
        check_messaging: Some(check_messaging),
        queue_limits: messaging_names()
            .into_iter()
            .filter(|name| name == "memory")
            .collect(),
    }
}

/// A new instance of the engine called `name`, with the settings `spec` gives it.
pub fn engine(name: &str, spec: &GuildSpec) -> Result<Arc<dyn ExecutionEngine>> {
    engine_for(name, spec, spec.messaging.as_deref())
}

/// The variable that holds the cluster's token for the cluster engine.
pub const CLUSTER_TOKEN_VARIABLE: &str = "GUILD_CLUSTER_TOKEN";

/// The variable that names the certificate (PEM) of the authority that signed the
/// nodes' certificates; the cluster engine calls its nodes over TLS when it is set.
pub const CLUSTER_CA_VARIABLE: &str = "GUILD_CLUSTER_CA";

/// How the cluster engine checks its nodes over TLS, from [`CLUSTER_CA_VARIABLE`].
#[cfg(feature = "engine-cluster")]
fn cluster_tls() -> Result<Option<engine_cluster::ClientTls>> {
    let Some(path) = std::env::var_os(CLUSTER_CA_VARIABLE) else {
        return Ok(None);
    };
    let ca_pem = std::fs::read(&path).map_err(|e| {
        Error::new(
            engine_core::ErrorKind::InvalidConfig,
            "cluster",
            format!(
                "{CLUSTER_CA_VARIABLE}: cannot read {}: {e}",
                path.to_string_lossy()
            ),
        )
    })?;
    Ok(Some(engine_cluster::ClientTls {
        ca_pem,
        domain: None,
    }))
}

/// As [`engine`], for a guild whose messaging backend is at `messaging` (the cluster
/// engine hands that URL to its nodes).
pub fn engine_for(
    name: &str,
    spec: &GuildSpec,
    messaging: Option<&str>,
) -> Result<Arc<dyn ExecutionEngine>> {
    let _ = (spec, messaging);
    match name {
        #[cfg(feature = "engine-cluster")]
        "cluster" => {
            let redis = messaging
                .filter(|url| url.starts_with("redis://") || url.starts_with("rediss://"))
                .ok_or_else(|| {
                    Error::new(
                        engine_core::ErrorKind::InvalidConfig,
                        "cluster",
                        "the cluster engine carries messages between machines through Redis: \
                         run with --messaging redis://…",
                    )
                })?;
            let token = std::env::var(CLUSTER_TOKEN_VARIABLE).map_err(|_| {
                Error::new(
                    engine_core::ErrorKind::InvalidConfig,
                    "cluster",
                    format!(
                        "the cluster engine needs the cluster's token in {CLUSTER_TOKEN_VARIABLE}"
                    ),
                )
            })?;
            let token = engine_cluster::Token::new(&token)
                .map_err(|why| Error::new(engine_core::ErrorKind::InvalidConfig, "cluster", why))?;
            Ok(Arc::new(engine_cluster::ClusterEngine::new(
                engine_cluster::ClusterConfig {
                    redis: redis.to_owned(),
                    token,
                    tls: cluster_tls()?,
                    placement: spec.cluster.clone().unwrap_or_default(),
                },
            )?))
        }
        #[cfg(feature = "engine-pool")]
        "pool" => Ok(Arc::new(engine_pool::PoolEngine::with_config(
            spec.pool.clone().unwrap_or_default(),
        )?)),
        #[cfg(feature = "engine-sync")]
        "sync" => Ok(Arc::new(engine_sync::SyncEngine::new())),
        #[cfg(feature = "engine-threads")]
        "threads" => Ok(Arc::new(engine_threads::ThreadsEngine::new())),
        #[cfg(feature = "engine-process")]
        "process" => Ok(Arc::new(engine_process::ProcessEngine::with_config(
            engine_process::ProcessConfig {
                // Agent processes export their spans where this process does.
                #[cfg(feature = "otlp")]
                env: crate::telemetry::agent_environment(),
                ..Default::default()
            },
        ))),
        _ => Err(GuildError::UnknownEngine {
            name: name.to_owned(),
            known: engine_names().join(", "),
        }
        .into()),
    }
}

/// A handle on the messaging backend named by `url`: a backend name such as `memory`, or
/// a URL whose scheme names the backend.
pub fn messaging(url: &str) -> Result<Arc<dyn MessagingBackend>> {
    let scheme = url.split("://").next().unwrap_or(url);
    check_messaging(url).map_err(|why| Error::from(GuildError::BadMessaging { why }))?;
    match scheme {
        #[cfg(feature = "messaging-memory")]
        // "memory" names the process's one bus, as a Redis URL names one server.
        "memory" => Ok(Arc::new(messaging_memory::MemoryMessaging::process_wide(
            Default::default(),
        ))),
        #[cfg(feature = "messaging-redis")]
        "redis" | "rediss" => Ok(Arc::new(messaging_redis::RedisMessaging::connect(url)?)),
        _ => Err(GuildError::UnknownMessaging {
            scheme: scheme.to_owned(),
            known: messaging_names().join(", "),
        }
        .into()),
    }
}
