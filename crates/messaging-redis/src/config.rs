//! How to reach Redis and how much to keep there: a URL plus settings, with the password
//! kept out of every `Debug` and log line.

use std::time::Duration;

use engine_core::{Error, Result};

use crate::error::BackendError;

/// Settings of a [`RedisMessaging`](crate::RedisMessaging).
///
/// Parsed from a URL: `redis://[user[:password]@]host[:port][/db][?key=value&...]`, or
/// `rediss://` for TLS (with the `tls` feature). Query keys: `prefix` (default `guild`),
/// `maxlen` (entries kept per topic, default 100000; 0 for no length limit), `maxage`
/// (seconds a message is kept, by the time in its id; default none), `ttl` (seconds
/// the bookkeeping records live, default 86400), `connect_timeout_ms` (default 2000),
/// `io_timeout_ms` (default 5000), `readers` (blocking connections for live delivery,
/// default 1).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis` or `rediss`.
    pub scheme: String,
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// User name for `AUTH`.
    pub username: Option<String>,
    /// Password for `AUTH`; never printed.
    pub password: Option<String>,
    /// Database number.
    pub database: i64,
    /// Prefix of every key.
    pub key_prefix: String,
    /// Entries kept per topic stream (approximately: trimming is `MAXLEN ~`); 0 keeps
    /// any number.
    pub max_len: u64,
    /// How long a message is kept at least, by the time in its id: older messages are
    /// trimmed at each publish to their topic, up to a second late (messages published
    /// together are stored, and trimmed, together). `None` keeps messages of any age.
    pub max_age: Option<Duration>,
    /// How long the bookkeeping records live: a publisher's record of what it stored
    /// (which makes retried publishes idempotent) and the record of where a message
    /// stored out of id order went (which finds it by id). Longer than any outage a
    /// publisher should retry through.
    pub record_ttl: Duration,
    /// Connecting gives up after this.
    pub connect_timeout: Duration,
    /// A command gives up after this.
    pub io_timeout: Duration,
    /// Blocking connections that read live deliveries for every subscription of this
    /// backend instance.
    pub readers: usize,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("address", &self.address())
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("database", &self.database)
            .field("key_prefix", &self.key_prefix)
            .field("max_len", &self.max_len)
            .field("max_age", &self.max_age)
            .field("record_ttl", &self.record_ttl)
            .field("connect_timeout", &self.connect_timeout)
            .field("io_timeout", &self.io_timeout)
            .field("readers", &self.readers)
            .finish()
    }
}

/// The longest age or record lifetime a URL may set, in seconds (ten years).
const MAX_SECS: u64 = 10 * 365 * 24 * 3600;

/// The longest timeout a URL may set, in milliseconds (an hour).
const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// The most reader threads a URL may ask for.
const MAX_READERS: u64 = 64;

impl RedisConfig {
    /// Settings from a `redis://` or `rediss://` URL.
    pub fn from_url(url: &str) -> Result<Self> {
        let invalid = |why: &str| {
            Error::from(BackendError::BadUrl {
                url: redact(url),
                why: why.to_owned(),
            })
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("expected redis://host:port"))?;
        if scheme != "redis" && scheme != "rediss" {
            return Err(invalid("the scheme must be redis or rediss"));
        }
        if scheme == "rediss" && !crate::TLS {
            return Err(invalid(
                "rediss:// needs TLS, which this build lacks (the tls feature of messaging-redis)",
            ));
        }
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (credentials, host_port) = match authority.rsplit_once('@') {
            Some((credentials, host_port)) => (Some(credentials), host_port),
            None => (None, authority),
        };
        let (username, password) = match credentials {
            None => (None, None),
            Some(credentials) => {
                let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
                let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
                (non_empty(user), non_empty(password))
            }
        };
        let (host, port) = match host_port.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .map_err(|_| invalid(&format!("port {port:?} is not a number")))?,
            ),
            None => (host_port, 6379),
        };
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        let database = if path.is_empty() {
            0
        } else {
            path.parse()
                .map_err(|_| invalid(&format!("database {path:?} is not a number")))?
        };
        let mut config = Self {
            scheme: scheme.to_owned(),
            host: host.to_owned(),
            port,
            username,
            password,
            database,
            key_prefix: "guild".to_owned(),
            max_len: 100_000,
            max_age: None,
            record_ttl: Duration::from_secs(86_400),
            connect_timeout: Duration::from_millis(2_000),
            io_timeout: Duration::from_millis(5_000),
            readers: 1,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let number = |min: u64, max: u64| -> Result<u64> {
                let number: u64 = value
                    .parse()
                    .map_err(|_| invalid(&format!("{key}={value:?} is not a number")))?;
                if (min..=max).contains(&number) {
                    Ok(number)
                } else {
                    Err(invalid(&format!("{key} must be from {min} to {max}")))
                }
            };
            match key {
                "prefix" if !value.is_empty() && !value.contains(char::is_control) => {
                    config.key_prefix = value.to_owned();
                }
                "prefix" => return Err(invalid("the prefix must be non-empty and printable")),
                "maxlen" => config.max_len = number(1, u64::from(u32::MAX))?,
                "maxage" => config.max_age = Some(Duration::from_secs(number(1, MAX_SECS)?)),
                "ttl" => config.record_ttl = Duration::from_secs(number(1, MAX_SECS)?),
                "connect_timeout_ms" => {
                    config.connect_timeout = Duration::from_millis(number(1, MAX_TIMEOUT_MS)?);
                }
                "io_timeout_ms" => {
                    config.io_timeout = Duration::from_millis(number(1, MAX_TIMEOUT_MS)?);
                }
                "readers" => config.readers = number(1, MAX_READERS)? as usize,
                other => return Err(invalid(&format!("unknown setting {other:?}"))),
            }
        }
        Ok(config)
    }

    /// `host:port`, for messages.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The redis crate's connection settings, for a program that keeps keys of its own
    /// beside the backend's (the cluster's node leases).
    pub fn connection_info(&self) -> Result<redis::ConnectionInfo> {
        let addr = if self.scheme == "rediss" {
            if !cfg!(feature = "tls") {
                return Err(BackendError::NoTls.into());
            }
            redis::ConnectionAddr::TcpTls {
                host: self.host.clone(),
                port: self.port,
                insecure: false,
                tls_params: None,
            }
        } else {
            redis::ConnectionAddr::Tcp(self.host.clone(), self.port)
        };
        Ok(redis::ConnectionInfo {
            addr,
            redis: redis::RedisConnectionInfo {
                db: self.database,
                username: self.username.clone(),
                password: self.password.clone(),
                ..Default::default()
            },
        })
    }
}

/// `url` with any password replaced, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split_once(':').map_or(credentials, |(u, _)| u);
            format!("{scheme}://{user}:<redacted>@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_url_parses_and_hides_its_password() {
        let config = RedisConfig::from_url(
            "redis://app:s3cret@cache.example:6380/2?prefix=team&maxlen=500&maxage=60&readers=2",
        )
        .unwrap();
        assert_eq!(config.address(), "cache.example:6380");
        assert_eq!(config.username.as_deref(), Some("app"));
        assert_eq!(config.password.as_deref(), Some("s3cret"));
        assert_eq!(config.database, 2);
        assert_eq!(config.key_prefix, "team");
        assert_eq!(config.max_len, 500);
        assert_eq!(config.max_age, Some(Duration::from_secs(60)));
        assert_eq!(config.readers, 2);
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }

    #[test]
    fn defaults_and_bad_urls() {
        let config = RedisConfig::from_url("redis://localhost").unwrap();
        assert_eq!(
            (config.port, config.database, config.max_len),
            (6379, 0, 100_000)
        );
        for bad in [
            "http://x",
            "redis://:1",
            "redis://h:port",
            "redis://h/db",
            "redis://h?nope=1",
        ] {
            assert!(RedisConfig::from_url(bad).is_err(), "{bad}");
        }
        let error = RedisConfig::from_url("redis://u:hunter2@h:x").unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }
}
