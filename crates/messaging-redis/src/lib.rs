//! # messaging-redis
//!
//! The delivery contract on Redis Streams, so agents in different processes and on
//! different machines share a bus that survives restarts.
//!
//! - **Topics** are streams, one per namespaced topic (`<prefix>:<guild>:topic:<topic>`),
//!   trimmed to a configured length (`MAXLEN ~`).
//! - **Publishing** runs one Lua script that adds the message (bincode) to each topic's
//!   stream and records where it went under its message id. The id record makes a
//!   publish idempotent: a publish retried after a lost reply is not stored twice. It
//!   also answers history by id, for as long as the id record lives (`ttl`). Publishes
//!   are queued and sent in batches, one script call each, by a writer thread
//!   ([`outbox`]): no round trip per message, nothing dropped, errors to the caller
//!   while Redis is down.
//! - **Live delivery** is read by a small, fixed number of reader threads per backend
//!   instance (`readers`, default 1), each with one blocking `XREAD` connection shared
//!   by every subscription of the instance: not a connection per agent.
//! - **Positions** are stored per client in a hash (`<prefix>:<guild>:pos:<client>`),
//!   so a client restarted anywhere resumes where it left off.
//! - **Faults.** A broken connection is remade (readers back off exponentially with
//!   jitter); readers resume from what they last fetched, so nothing is lost or fetched
//!   twice while the process lives. Publishing while Redis is down returns the error.
//!
//! What remains at-least-once: a client that *restarts* gets again what it completed
//! after its positions were last stored (at most [`subscription::FLUSH_EVERY`]
//! completions, or since it last ran out of work), and anything it completed out of
//! stream order because a more urgent message overtook it. Handlers that must not see a
//! message twice deduplicate on its [`MessageId`](engine_core::MessageId), which is
//! stable across redeliveries.

pub mod config;
mod conn;
pub mod outbox;
pub mod subscription;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use engine_core::{
    Capabilities, Error, ErrorKind, HistoryQuery, IdGenerator, Message, MessagingBackend, Notify,
    Result, StartFrom, SubscribeRequest, Subscription,
};
use redis::{Connection, RedisResult};

pub use config::RedisConfig;
use conn::{Backoff, Commands, Connector};
use outbox::{Outbox, Publish};
use subscription::{ClientState, EntryId, RedisSubscription};

/// The backend's name.
pub const NAME: &str = "redis";

/// Entries one `XREAD` fetches per stream at most.
const READ_COUNT: usize = 1024;

/// How long one `XREAD` blocks; new subscriptions join the read after at most this.
const READ_BLOCK: Duration = Duration::from_millis(100);

/// Stores a batch of messages, each unless its id record exists, recording where each
/// went. ARGV: the streams' length cap, the id records' lifetime in seconds, then per
/// message its topic count and its encoding. KEYS: per message its id record, then one
/// stream per topic. One call per batch keeps the script's overhead off each message.
const PUBLISH: &str = r"
local max_len, ttl = ARGV[1], ARGV[2]
local k, a, stored = 1, 3, 0
while a <= #ARGV do
  local topics, bytes = tonumber(ARGV[a]), ARGV[a + 1]
  local record = KEYS[k]
  if redis.call('EXISTS', record) == 0 then
    local entries = {}
    for i = 1, topics do
      local stream = KEYS[k + i]
      entries[i] = stream .. '\n' .. redis.call('XADD', stream, 'MAXLEN', '~', max_len, '*', 'm', bytes)
    end
    redis.call('SET', record, table.concat(entries, '\n'), 'EX', ttl)
    stored = stored + 1
  end
  k, a = k + 1 + topics, a + 2
end
return stored
";

/// The live subscriptions by stream key: each with the index of that topic among the
/// client's topics.
type Subscribers = HashMap<String, Vec<(usize, Weak<ClientState>)>>;

/// Entries fetched from one stream, decoded, by stream key.
type Batch = (String, Vec<(EntryId, Arc<Message>)>);

/// The key names of one backend instance.
pub struct Keys {
    prefix: String,
}

impl Keys {
    fn stream(&self, namespace: &str, topic: &str) -> String {
        format!("{}:{namespace}:topic:{topic}", self.prefix)
    }

    fn positions(&self, namespace: &str, client: &str) -> String {
        format!("{}:{namespace}:pos:{client}", self.prefix)
    }

    fn id_record(&self, namespace: &str, id: engine_core::MessageId) -> String {
        format!("{}:{namespace}:id:{id}", self.prefix)
    }
}

/// What the backend's handles, subscriptions and reader threads share.
pub struct Shared {
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
}

/// The Redis messaging backend; see the crate docs.
///
/// Its reader threads live as long as the backend or any of its subscriptions: they
/// end within one blocking read (100 ms) of the last one being dropped.
pub struct RedisMessaging {
    shared: Arc<Shared>,
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
            prefix: config.key_prefix.clone(),
        };
        let connector = Connector::new(config)?;
        let shared = Arc::new(Shared {
            connector,
            commands: Commands::new(),
            keys,
            publish: redis::Script::new(PUBLISH),
            ids: IdGenerator::process(),
            streams: Mutex::new(HashMap::new()),
            changed: Condvar::new(),
            live: Mutex::new(HashSet::new()),
            outbox: Outbox::default(),
        });
        shared.run(|connection| redis::cmd("PING").query::<String>(connection))?;
        {
            let shared = Arc::downgrade(&shared);
            std::thread::Builder::new()
                .name("redis-writer".into())
                .spawn(move || write_loop(&shared))
                .map_err(|e| {
                    Error::new(ErrorKind::Io, NAME, format!("cannot start the writer: {e}"))
                })?;
        }
        for reader in 0..readers {
            let shared = Arc::downgrade(&shared);
            std::thread::Builder::new()
                .name(format!("redis-reader-{reader}"))
                .spawn(move || read_loop(&shared, reader, readers))
                .map_err(|e| {
                    Error::new(ErrorKind::Io, NAME, format!("cannot start a reader: {e}"))
                })?;
        }
        Ok(Self { shared })
    }
}

impl Drop for RedisMessaging {
    /// Waits (up to the I/O timeout) for queued publishes to be stored.
    fn drop(&mut self) {
        let timeout = self.shared.connector.config().io_timeout;
        if let Err(error) = self.shared.outbox.settle(timeout) {
            tracing::error!(%error, unsent = self.shared.outbox.unsent(), "publishes not stored when the Redis backend was dropped");
        }
    }
}

/// The writer thread: sends queued publishes in batches, in order, retrying a failed
/// batch (after a backoff) until Redis takes it; ends when the backend and all its
/// subscriptions are gone and nothing is left to send.
fn write_loop(shared: &Weak<Shared>) {
    let mut connection: Option<Connection> = None;
    let mut backoff = Backoff::new();
    while let Some(shared) = shared.upgrade() {
        let batch = shared.outbox.take(READ_BLOCK);
        if batch.is_empty() {
            continue;
        }
        match shared.write(&mut connection, &batch) {
            Ok(()) => {
                backoff.reset();
                shared.outbox.stored(batch);
            }
            Err(error) => {
                connection = None;
                let wait = backoff.next_wait();
                tracing::warn!(%error, ?wait, unsent = batch.len(), "cannot publish to Redis; retrying");
                shared.outbox.failed(batch, error.to_string());
                drop(shared);
                std::thread::sleep(wait);
            }
        }
    }
}

/// One reader thread: fetches new entries of its share of the streams (those whose key
/// hashes to `reader` of `readers`) and hands them to their subscribers, until the
/// backend and all its subscriptions are gone.
fn read_loop(shared: &Weak<Shared>, reader: usize, readers: usize) {
    let mut connection: Option<Connection> = None;
    let mut backoff = Backoff::new();
    while let Some(shared) = shared.upgrade() {
        shared.read_once(&mut connection, &mut backoff, reader, readers);
    }
}

impl Shared {
    /// Runs a command on the command connection.
    fn run<T>(&self, command: impl FnMut(&mut Connection) -> RedisResult<T>) -> Result<T> {
        self.commands.run(&self.connector, command)
    }

    /// Queues `message` for the writer.
    fn publish_message(&self, message: &Message) -> Result<()> {
        if message.topics.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidSpec,
                NAME,
                "a message needs at least one topic",
            ));
        }
        let namespace = &message.namespace;
        let publish = Publish {
            record: self.keys.id_record(namespace, message.id),
            streams: message
                .topics
                .iter()
                .map(|topic| self.keys.stream(namespace, topic))
                .collect(),
            bytes: encode(message)?,
        };
        self.outbox
            .push(publish, self.connector.config().io_timeout)
    }

    /// Waits until this instance's queued publishes are stored, so that what follows
    /// reads them.
    fn settle(&self) -> Result<()> {
        self.outbox.settle(self.connector.config().io_timeout)
    }

    /// Sends one batch of publishes as one script call, on the writer's connection.
    fn write(&self, connection: &mut Option<Connection>, batch: &[Publish]) -> Result<()> {
        let live = match connection {
            Some(live) => live,
            None => {
                let mut fresh = self.connector.connect()?;
                redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(PUBLISH)
                    .query::<String>(&mut fresh)
                    .map_err(|e| self.connector.unavailable(&e))?;
                connection.insert(fresh)
            }
        };
        let config = self.connector.config();
        let (max_len, ttl) = (config.max_len, config.id_ttl.as_secs().max(1));
        let keys: usize = batch.iter().map(|p| 1 + p.streams.len()).sum();
        let mut command = redis::cmd("EVALSHA");
        command.arg(self.publish.get_hash()).arg(keys);
        for publish in batch {
            command.arg(&publish.record).arg(&publish.streams);
        }
        command.arg(max_len).arg(ttl);
        for publish in batch {
            command.arg(publish.streams.len()).arg(&publish.bytes);
        }
        command
            .query::<i64>(live)
            .map(|_| ())
            .map_err(|e| self.connector.unavailable(&e))
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

    /// One turn of a reader: waits for subscriptions, or reads once and dispatches.
    fn read_once(
        &self,
        connection: &mut Option<Connection>,
        backoff: &mut Backoff,
        reader: usize,
        readers: usize,
    ) {
        let wanted = self.wanted(reader, readers);
        if wanted.is_empty() {
            let streams = self.lock_streams();
            let _ = self.changed.wait_timeout(streams, READ_BLOCK);
            return;
        }
        if connection.is_none() {
            match self.connector.connect() {
                Ok(fresh) => *connection = Some(fresh),
                Err(error) => {
                    let wait = backoff.next_wait();
                    tracing::warn!(%error, ?wait, "reader cannot connect; retrying");
                    std::thread::sleep(wait);
                    return;
                }
            }
        }
        let Some(live) = connection.as_mut() else {
            return;
        };
        match read(live, &wanted) {
            Ok(batches) => {
                backoff.reset();
                self.dispatch(batches);
            }
            Err(error) => {
                *connection = None;
                let wait = backoff.next_wait();
                tracing::warn!(%error, ?wait, "reader lost its Redis connection; reconnecting");
                std::thread::sleep(wait);
            }
        }
    }

    /// The streams of this reader's share with the position to read after: the lowest
    /// cursor among their subscribers.
    fn wanted(&self, reader: usize, readers: usize) -> Vec<(String, EntryId)> {
        let streams = self.lock_streams();
        streams
            .iter()
            .filter(|(key, _)| share(key, readers) == reader)
            .filter_map(|(key, clients)| {
                let lowest = clients
                    .iter()
                    .filter_map(|(topic, client)| Some(client.upgrade()?.cursor(*topic)))
                    .min()?;
                Some((key.clone(), lowest))
            })
            .collect()
    }

    fn dispatch(&self, batches: Vec<Batch>) {
        for (key, entries) in batches {
            let clients: Vec<(usize, Arc<ClientState>)> = self
                .lock_streams()
                .get(&key)
                .map(|clients| {
                    clients
                        .iter()
                        .filter_map(|(topic, client)| Some((*topic, client.upgrade()?)))
                        .collect()
                })
                .unwrap_or_default();
            for (topic, client) in clients {
                client.receive(topic, &entries);
            }
        }
    }

    fn lock_streams(&self) -> MutexGuard<'_, Subscribers> {
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
    ) -> Result<(EntryId, bool)> {
        if let Some(entry) = stored.get(topic).and_then(|s| EntryId::parse(s)) {
            return Ok((entry, false));
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
        Ok((entry, true))
    }

    /// The retained messages of one topic stream, in stream order.
    fn range(&self, namespace: &str, topic: &str) -> Result<Vec<Arc<Message>>> {
        let key = self.keys.stream(namespace, topic);
        let entries: Vec<(String, Vec<Vec<u8>>)> = self.run(|connection| {
            redis::cmd("XRANGE")
                .arg(&key)
                .arg("-")
                .arg("+")
                .query(connection)
        })?;
        entries
            .iter()
            .map(|(_, fields)| decode_fields(fields))
            .collect()
    }

    /// A message by id, while its id record and stream entry live.
    fn by_id(&self, namespace: &str, id: engine_core::MessageId) -> Result<Option<Arc<Message>>> {
        let record: Option<String> = self.run(|connection| {
            redis::cmd("GET")
                .arg(self.keys.id_record(namespace, id))
                .query(connection)
        })?;
        let Some(record) = record else {
            return Ok(None);
        };
        let mut lines = record.lines();
        let (Some(key), Some(entry)) = (lines.next(), lines.next()) else {
            return Ok(None);
        };
        let found: Vec<(String, Vec<Vec<u8>>)> = self.run(|connection| {
            redis::cmd("XRANGE")
                .arg(key)
                .arg(entry)
                .arg(entry)
                .query(connection)
        })?;
        found
            .first()
            .map(|(_, fields)| decode_fields(fields))
            .transpose()
    }
}

/// Which reader reads stream `key`.
fn share(key: &str, readers: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % readers.max(1) as u64) as usize
}

/// One blocking `XREAD` over `wanted`.
fn read(connection: &mut Connection, wanted: &[(String, EntryId)]) -> RedisResult<Vec<Batch>> {
    let mut command = redis::cmd("XREAD");
    command
        .arg("COUNT")
        .arg(READ_COUNT)
        .arg("BLOCK")
        .arg(READ_BLOCK.as_millis() as u64)
        .arg("STREAMS");
    for (key, _) in wanted {
        command.arg(key);
    }
    for (_, after) in wanted {
        command.arg(after.to_string());
    }
    type Reply = Option<Vec<(String, Vec<(String, Vec<Vec<u8>>)>)>>;
    let reply: Reply = command.query(connection)?;
    let mut batches = Vec::new();
    for (key, entries) in reply.unwrap_or_default() {
        let mut decoded = Vec::with_capacity(entries.len());
        for (id, fields) in entries {
            let (Some(entry), Ok(message)) = (EntryId::parse(&id), decode_fields(&fields)) else {
                tracing::error!(stream = %key, entry = %id, "skipping an entry that does not decode");
                continue;
            };
            decoded.push((entry, message));
        }
        batches.push((key, decoded));
    }
    Ok(batches)
}

fn encode(message: &Message) -> Result<Vec<u8>> {
    bincode::serde::encode_to_vec(message, bincode::config::standard()).map_err(|e| {
        Error::new(
            ErrorKind::Codec,
            NAME,
            format!("cannot encode a message: {e}"),
        )
    })
}

/// The message in an entry's fields (`m`, the encoded message).
fn decode_fields(fields: &[Vec<u8>]) -> Result<Arc<Message>> {
    let bytes = fields
        .chunks(2)
        .find(|pair| pair[0] == b"m")
        .and_then(|pair| pair.get(1))
        .ok_or_else(|| Error::new(ErrorKind::Codec, NAME, "an entry without a message"))?;
    let (message, _) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map_err(|e| Error::new(ErrorKind::Codec, NAME, format!("a corrupt entry: {e}")))?;
    Ok(Arc::new(message))
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
        capabilities
    }

    fn publish(&self, message: Message) -> Result<()> {
        self.shared.publish_message(&message)
    }

    fn subscribe(
        &self,
        request: SubscribeRequest,
        notify: Arc<dyn Notify>,
    ) -> Result<Box<dyn Subscription>> {
        let shared = &self.shared;
        let who = (request.namespace.clone(), request.client_id.clone());
        if !lock(&shared.live).insert(who.clone()) {
            return Err(Error::new(
                ErrorKind::Conflict,
                NAME,
                format!(
                    "client {:?} of guild {:?} is subscribed already",
                    request.client_id, request.namespace
                ),
            ));
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
            HistoryQuery::Ids(ids) => {
                let mut found = Vec::with_capacity(ids.len());
                for id in ids {
                    if let Some(message) = self.shared.by_id(namespace, *id)? {
                        found.push(message);
                    }
                }
                Ok(found)
            }
        }
    }
}
