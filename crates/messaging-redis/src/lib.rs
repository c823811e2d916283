//! # messaging-redis
//!
//! The delivery contract on Redis Streams, so agents in different processes and on
//! different machines share a bus that survives restarts.
//!
//! - **Topics** are streams, one per namespaced topic (`<prefix>:<guild>:topic:<topic>`).
//!   Retention is by length (`MAXLEN ~`), by age (`MINID`), or both.
//! - **Publishing** queues the message (`outbox.rs`); a writer thread (`writer.rs`) stores
//!   queued messages in batches, one script call each: no round trip per message,
//!   nothing dropped, errors to the caller while Redis is down. Each backend instance
//!   numbers its publishes and the script keeps the last number stored, so a batch
//!   retried after a lost reply is not stored twice. A message's stream entry id is
//!   derived from its message id, which is how it is found by id (`history.rs`).
//! - **Live delivery** is read by a small, fixed number of reader threads per backend
//!   instance (`readers`, default 1), each with one blocking `XREAD` connection shared
//!   by every subscription of the instance: not a connection per agent (`reader.rs`).
//! - **Positions** are stored per client in a hash (`<prefix>:<guild>:pos:<client>`),
//!   so a client restarted anywhere resumes where it left off. They are written only
//!   once what the client itself published (as the sender) is stored, so a process
//!   killed between a handler's publish and its position redelivers the message
//!   instead of losing what it published.
//! - **Faults.** A broken connection is remade (readers back off exponentially with
//!   jitter); readers resume from what they last fetched, so nothing is lost or fetched
//!   twice while the process lives. Publishing while Redis is down returns the error.
//!
//! What remains at-least-once: a client that *restarts* gets again what it completed
//! after its positions were last stored (at most [`FLUSH_EVERY`]
//! completions, or since it last ran out of work), and anything it completed out of
//! stream order because a more urgent message overtook it. Handlers that must not see a
//! message twice deduplicate on its [`MessageId`](engine_core::MessageId), which is
//! stable across redeliveries.

mod config;
mod conn;
mod error;
mod frame;
mod history;
mod keys;
mod outage;
mod outbox;
mod position;
mod reader;
mod subscription;
mod writer;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use engine_core::{
    Capabilities, Error, HistoryQuery, IdGenerator, Message, MessagingBackend, Notify, Result,
    StartFrom, SubscribeRequest, Subscription,
};
use redis::{Connection, RedisResult};

pub use config::{RedisConfig, redact};
use conn::{Commands, Connector};
use error::BackendError;
use frame::encode;
use keys::Keys;
use outbox::{Outbox, Publish};
use position::{EntryId, Pos};
use subscription::{ClientState, RedisSubscription};
pub use subscription::{FETCH_AHEAD, FLUSH_EVERY};

/// Whether this build speaks TLS (`rediss://` URLs): the `tls` feature.
pub const TLS: bool = cfg!(feature = "tls");

/// The backend's name.
pub const NAME: &str = "redis";

/// How long one `XREAD` blocks; new subscriptions join the read after at most this.
pub(crate) const READ_BLOCK: Duration = Duration::from_millis(100);

/// The live subscriptions by stream key: each with the index of that topic among the
/// client's topics.
type Subscribers = HashMap<String, Vec<(usize, Weak<ClientState>)>>;

/// Entries fetched from one stream, each with the messages it holds, by stream key.
pub(crate) type Batch = (String, Vec<(EntryId, Vec<Arc<Message>>)>);

/// What the backend's handles, subscriptions and reader threads share.
pub(crate) struct Shared {
    connector: Connector,
    commands: Commands,
    keys: Keys,
    publish: redis::Script,
    ids: Arc<IdGenerator>,
    /// Live subscriptions by stream key.
    streams: Mutex<Subscribers>,
    /// Rung when subscriptions change, so idle readers look again.
    changed: Condvar,
    /// Clients with a live subscription through this instance.
    live: Mutex<HashSet<(String, String)>>,
    /// Publishes on their way to Redis.
    outbox: Outbox,
    /// Alive while the backend or any of its subscriptions is.
    users: Weak<()>,
    /// Set by [`RedisMessaging::close`].
    closed: AtomicBool,
    /// Whether Redis is out of reach, told once, not per retry.
    outage: outage::Outage,
}

/// The Redis messaging backend; see the crate docs.
///
/// Its writer and reader threads live as long as the backend or any of its
/// subscriptions: dropping the backend with no subscription left stores what is queued
/// (waiting up to the I/O timeout) and joins them; otherwise they end within one
/// blocking read (100 ms) of the last subscription being dropped. [`close`](Self::close)
/// ends them at once, whatever is still subscribed.
pub struct RedisMessaging {
    shared: Arc<Shared>,
    /// Shared with every subscription; the threads run while any holder lives.
    user: Arc<()>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for RedisMessaging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisMessaging")
            .field("config", self.shared.connector.config())
            .finish_non_exhaustive()
    }
}

impl RedisMessaging {
    /// Connects to the Redis at `url` (see [`RedisConfig::from_url`]).
    pub fn connect(url: &str) -> Result<Self> {
        Self::with_config(RedisConfig::from_url(url)?)
    }

    /// Connects with `config`; fails with an error naming the address when the server
    /// cannot be reached.
    pub fn with_config(config: RedisConfig) -> Result<Self> {
        let readers = config.readers;
        let keys = Keys {
            publisher: format!("{}:publisher:{}", config.key_prefix, writer::publisher_id()),
            prefix: config.key_prefix.clone(),
        };
        let address = config.address();
        let connector = Connector::new(config)?;
        let user = Arc::new(());
        let shared = Arc::new(Shared {
            connector,
            commands: Commands::new(),
            keys,
            publish: redis::Script::new(writer::PUBLISH),
            ids: IdGenerator::process(),
            streams: Mutex::new(HashMap::new()),
            changed: Condvar::new(),
            live: Mutex::new(HashSet::new()),
            outbox: Outbox::default(),
            users: Arc::downgrade(&user),
            closed: AtomicBool::new(false),
            outage: outage::Outage::new(address),
        });
        shared.run(|connection| redis::cmd("PING").query::<String>(connection))?;
        let backend = Self {
            shared,
            user,
            threads: Mutex::new(Vec::with_capacity(readers + 1)),
        };
        let spawn = |name: String, run: Box<dyn FnOnce() + Send>| {
            let thread = std::thread::Builder::new()
                .name(name.clone())
                .spawn(run)
                .map_err(|e| {
                    Error::from(BackendError::Thread {
                        name: name.to_owned(),
                        source: e,
                    })
                })?;
            lock(&backend.threads).push(thread);
            Ok::<(), Error>(())
        };
        let shared = backend.shared.clone();
        spawn(
            "redis-writer".into(),
            Box::new(move || writer::write_loop(&shared)),
        )?;
        for reader in 0..readers {
            let shared = backend.shared.clone();
            spawn(
                format!("redis-reader-{reader}"),
                Box::new(move || reader::read_loop(&shared, reader, readers)),
            )?;
        }
        Ok(backend)
    }

    /// Stores what is queued (waiting up to the I/O timeout), then ends the backend's
    /// threads and waits for them: subscriptions get nothing more, and publishing
    /// fails. Fails if queued publishes could not be stored in time (they are lost).
    pub fn close(&self) -> Result<()> {
        let settled = self.settle_for_close();
        self.shared.closed.store(true, Ordering::Release);
        self.shared.changed.notify_all();
        for thread in lock(&self.threads).drain(..) {
            let _ = thread.join();
        }
        settled
    }

    /// The guilds (namespaces) that have published on this server under this backend's
    /// key prefix, sorted.
    pub fn guilds(&self) -> Result<Vec<String>> {
        let pattern = format!("{}:*:topics", self.shared.keys.prefix);
        let keys: Vec<String> = self.shared.run(|connection| {
            redis::cmd("SCAN")
                .cursor_arg(0)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .clone()
                .iter(connection)
                .map(|keys| keys.collect())
        })?;
        let mut guilds: Vec<String> = keys
            .iter()
            .filter_map(|key| {
                key.strip_prefix(&self.shared.keys.prefix)?
                    .strip_prefix(':')?
                    .strip_suffix(":topics")
                    .map(str::to_owned)
            })
            .collect();
        guilds.sort();
        guilds.dedup();
        Ok(guilds)
    }

    /// Removes what Redis keeps for client `client` of guild `namespace` (its
    /// positions), for a client that will not come back, such as a `guild tail` that
    /// ended. Its next subscription, if any, starts as a new client's.
    pub fn forget(&self, namespace: &str, client: &str) -> Result<()> {
        let key = self.shared.keys.positions(namespace, client);
        self.shared
            .run(|connection| redis::cmd("DEL").arg(&key).query::<u64>(connection))?;
        Ok(())
    }

    fn settle_for_close(&self) -> Result<()> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        let timeout = self.shared.connector.config().io_timeout;
        self.shared.outbox.settle(timeout).inspect_err(|error| {
            tracing::error!(%error, unsent = self.shared.outbox.unsent(), "publishes not stored when the Redis backend was closed");
        })
    }
}

impl Drop for RedisMessaging {
    /// Closes the backend, unless subscriptions outlive it: then only stores what is
    /// queued, and the threads end after the last subscription.
    fn drop(&mut self) {
        if Arc::strong_count(&self.user) == 1 {
            let _ = self.close();
        } else {
            let _ = self.settle_for_close();
        }
    }
}

impl Shared {
    /// Whether the threads have work: the backend or a subscription lives, and the
    /// backend is not closed.
    pub(crate) fn in_use(&self) -> bool {
        self.users.strong_count() > 0 && !self.closed()
    }

    /// Whether [`RedisMessaging::close`] was called.
    pub(crate) fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Runs a command on the command connection.
    fn run<T>(&self, command: impl FnMut(&mut Connection) -> RedisResult<T>) -> Result<T> {
        self.commands.run(&self.connector, command)
    }

    /// Queues `message` for the writer.
    fn publish_message(&self, message: &Message) -> Result<()> {
        if message.topics.is_empty() {
            return Err(BackendError::NoTopic.into());
        }
        let namespace = &message.namespace;
        let publish = Publish {
            seq: 0,
            entry: writer::entry_of(message.id),
            guild: self.keys.guild(namespace),
            streams: message
                .topics
                .iter()
                .map(|topic| self.keys.stream(namespace, topic))
                .collect(),
            bytes: encode(message),
        };
        self.outbox
            .push(publish, &message.sender, self.connector.config().io_timeout)
    }

    /// Waits until this instance's queued publishes are stored, so that what follows
    /// reads them.
    fn settle(&self) -> Result<()> {
        self.outbox.settle(self.connector.config().io_timeout)
    }

    /// Forgets a subscription that detached.
    fn forget(&self, state: &Arc<ClientState>) {
        let mut streams = self.lock_streams();
        for key in &state.keys {
            if let Some(clients) = streams.get_mut(key) {
                clients.retain(|(_, client)| {
                    client.upgrade().is_some_and(|c| !Arc::ptr_eq(&c, state))
                });
                if clients.is_empty() {
                    streams.remove(key);
                }
            }
        }
        drop(streams);
        lock(&self.live).remove(&(state.namespace.clone(), state.client_id.clone()));
    }

    pub(crate) fn lock_streams(&self) -> MutexGuard<'_, Subscribers> {
        lock(&self.streams)
    }

    /// Where a new subscription of `client` starts on `topic`: its stored position,
    /// else the beginning or the stream's last entry.
    fn start(
        &self,
        stored: &HashMap<String, String>,
        topic: &str,
        key: &str,
        start: StartFrom,
    ) -> Result<(Pos, bool)> {
        if let Some(pos) = stored.get(topic).and_then(|s| Pos::parse(s)) {
            return Ok((pos, false));
        }
        let entry = match start {
            StartFrom::Earliest => EntryId::default(),
            StartFrom::Latest => {
                let last: Vec<(String, Vec<Vec<u8>>)> = self.run(|connection| {
                    redis::cmd("XREVRANGE")
                        .arg(key)
                        .arg("+")
                        .arg("-")
                        .arg("COUNT")
                        .arg(1)
                        .query(connection)
                })?;
                last.first()
                    .and_then(|(id, _)| EntryId::parse(id))
                    .unwrap_or_default()
            }
        };
        Ok((Pos::whole(entry), true))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MessagingBackend for RedisMessaging {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        let mut capabilities = Capabilities::in_process();
        capabilities.durable = true;
        capabilities.cross_process = true;
        // What waits for a client is bounded by each stream's retention instead.
        capabilities.queue_limits = false;
        capabilities
    }

    fn unavailable(&self) -> Option<String> {
        self.shared.outage.describe(self.shared.outbox.unsent())
    }

    fn publish(&self, message: Message) -> Result<()> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(BackendError::Closed.into());
        }
        self.shared.publish_message(&message)
    }

    fn subscribe(
        &self,
        request: SubscribeRequest,
        notify: Arc<dyn Notify>,
    ) -> Result<Box<dyn Subscription>> {
        let shared = &self.shared;
        if request.limit.is_some() {
            return Err(BackendError::QueueLimit {
                client: request.client_id,
            }
            .into());
        }
        let who = (request.namespace.clone(), request.client_id.clone());
        if !lock(&shared.live).insert(who.clone()) {
            return Err(BackendError::Subscribed {
                client: request.client_id,
                namespace: request.namespace,
            }
            .into());
        }
        let subscribed = (|| {
            shared.settle()?;
            let positions = shared
                .keys
                .positions(&request.namespace, &request.client_id);
            let stored: HashMap<String, String> =
                shared.run(|connection| redis::cmd("HGETALL").arg(&positions).query(connection))?;
            let mut topics = Vec::new();
            let mut keys = Vec::new();
            let mut starts = Vec::new();
            let mut new_positions = Vec::new();
            for topic in &request.topics {
                let key = shared.keys.stream(&request.namespace, topic);
                let (entry, new) = shared.start(&stored, topic, &key, request.start)?;
                if new {
                    new_positions.push((topic.clone(), entry.to_string()));
                }
                topics.push(Arc::<str>::from(topic.as_str()));
                keys.push(key);
                starts.push(entry);
            }
            if !new_positions.is_empty() {
                shared.run(|connection| {
                    redis::cmd("HSET")
                        .arg(&positions)
                        .arg(&new_positions)
                        .query::<()>(connection)
                })?;
            }
            let state = Arc::new(ClientState::new(
                &request.namespace,
                &request.client_id,
                topics,
                keys,
                starts,
                notify,
            ));
            let mut streams = shared.lock_streams();
            for (topic, key) in state.keys.iter().enumerate() {
                streams
                    .entry(key.clone())
                    .or_default()
                    .push((topic, Arc::downgrade(&state)));
            }
            drop(streams);
            shared.changed.notify_all();
            Ok(state)
        })();
        match subscribed {
            Ok(state) => Ok(Box::new(RedisSubscription {
                shared: shared.clone(),
                state,
                attached: true,
                _user: self.user.clone(),
            })),
            Err(error) => {
                lock(&shared.live).remove(&who);
                Err(error)
            }
        }
    }

    fn history(&self, namespace: &str, query: &HistoryQuery) -> Result<Vec<Arc<Message>>> {
        self.shared.settle()?;
        match query {
            HistoryQuery::Topic(topic) => self.shared.range(namespace, topic),
            HistoryQuery::After { topic, after } => {
                let mut messages = self.shared.range(namespace, topic)?;
                messages.retain(|m| m.id.time_key() > after.time_key());
                Ok(messages)
            }
            HistoryQuery::Ids(ids) => self.shared.by_ids(namespace, ids),
        }
    }
}
