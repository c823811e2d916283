//! One guild's part of the bus: its topics (retained logs and subscribers), its clients
//! (queues and positions), and the index that answers history-by-id.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use engine_core::{Delivery, Message, MessageId, Notify, Overflow, QueueLimit, StartFrom};

use crate::MemoryConfig;
use crate::fast_hash::FastMap;

/// A guild's topics and clients behind one lock, so that publishing is atomic across
/// topics and queues fill in publish order.
#[derive(Debug)]
pub(crate) struct Namespace {
    pub(crate) config: MemoryConfig,
    state: Mutex<State>,
    /// Publishers waiting for room in a full queue, and where they wait: consumers
    /// that take from a queue ring it when someone waits.
    blocked: AtomicUsize,
    room: (Mutex<()>, Condvar),
}

#[derive(Debug, Default)]
pub(crate) struct State {
    topics: FastMap<Arc<str>, Topic>,
    clients: HashMap<String, Arc<Client>>,
}

#[derive(Debug)]
struct Topic {
    /// The topic's name, shared by every delivery on it.
    name: Arc<str>,
    log: VecDeque<Arc<Message>>,
    subscribers: Vec<Arc<Client>>,
}

impl Topic {
    fn new(name: Arc<str>) -> Self {
        Self {
            name,
            log: VecDeque::new(),
            subscribers: Vec::new(),
        }
    }
}

/// A client: its queue survives detaching, so a later subscription resumes from it.
#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) id: String,
    queue: Mutex<Queue>,
    /// How many deliveries are in the queue (not counting what a subscription has taken);
    /// written under the lock, read without it.
    pub(crate) backlog: AtomicUsize,
    /// The backlog at which a publish must wait or fail, read without the queue's lock
    /// on every publish: the attached limit's capacity, or `usize::MAX` while nothing
    /// refuses (detached, or dropping the oldest instead).
    pub(crate) refuse_at: AtomicUsize,
    /// Set when a delivery is queued that sorts before one already queued or taken (a
    /// more urgent message): the subscription then gives back what it has taken, so the
    /// urgent one goes first.
    pub(crate) reordered: AtomicBool,
}

pub(crate) struct Queue {
    pub(crate) items: VecDeque<Delivery>,
    pub(crate) notify: Option<Arc<dyn Notify>>,
    topics: Vec<Arc<str>>,
    /// Bounds the queue while a consumer is attached.
    limit: QueueLimit,
    dropped: u64,
    /// The largest id ever queued for the client.
    newest: Option<MessageId>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("items", &self.items.len())
            .field("attached", &self.notify.is_some())
            .finish_non_exhaustive()
    }
}

impl Queue {
    fn new(limit: QueueLimit) -> Self {
        Self {
            items: VecDeque::new(),
            notify: None,
            topics: Vec::new(),
            limit,
            dropped: 0,
            newest: None,
        }
    }
}

/// A receiver's queue was full and the publish could not go in.
#[derive(Debug)]
pub(crate) struct Full {
    /// The client whose queue was full.
    pub(crate) client: String,
    /// Its capacity.
    pub(crate) capacity: usize,
    /// How long the publish waited for room, if it waited.
    pub(crate) waited: Option<Duration>,
}

/// How long a blocked publish waits at most before it looks for room again.
const BLOCKED_POLL: Duration = Duration::from_millis(10);

/// Why a subscription could not be made.
pub(crate) enum SubscribeError {
    AlreadySubscribed,
}

impl Namespace {
    pub(crate) fn new(config: MemoryConfig) -> Self {
        Self {
            config,
            state: Mutex::new(State::default()),
            blocked: AtomicUsize::new(0),
            room: (Mutex::new(()), Condvar::new()),
        }
    }

    /// Appends `message` to each of its topics and queues it for their subscribers (but
    /// not its sender); once the namespace is unlocked, notifies each subscriber that has
    /// a consumer. (Waking consumers while the lock is held measured slower: they wake
    /// into contention with the publisher.)
    ///
    /// A subscriber whose queue is full decides what happens, by its [`QueueLimit`]: the
    /// publish waits for room (polling, as blocking is the exception), fails before any
    /// subscriber gets it, or pushes that subscriber's oldest delivery out: those are
    /// returned, with the client's id, to be dead-lettered.
    pub(crate) fn publish(&self, message: Arc<Message>) -> Result<Vec<(String, Delivery)>, Full> {
        let mut deadline: Option<Instant> = None;
        let mut state = loop {
            let state = self.lock();
            let Some((client, limit)) = Self::full_receiver(&state, &message) else {
                break state;
            };
            let full = |waited| Full {
                client,
                capacity: limit.capacity,
                waited,
            };
            match limit.overflow {
                Overflow::Reject => return Err(full(None)),
                // A client that drops its oldest is never reported full.
                Overflow::Block | Overflow::DropOldest => {
                    let waited = Duration::from_millis(limit.block_ms);
                    // A limit built in code may ask for a wait past any clock: cap it.
                    let deadline = *deadline.get_or_insert_with(|| {
                        let now = Instant::now();
                        now.checked_add(waited)
                            .unwrap_or_else(|| now + Duration::from_secs(u32::MAX.into()))
                    });
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(full(Some(waited)));
                    }
                    // Told when a consumer takes; the timeout covers a take that came
                    // between the check and the wait.
                    self.blocked.fetch_add(1, Ordering::AcqRel);
                    let room = self.room.0.lock().unwrap_or_else(PoisonError::into_inner);
                    drop(state);
                    let _ = self.room.1.wait_timeout(room, left.min(BLOCKED_POLL));
                    self.blocked.fetch_sub(1, Ordering::AcqRel);
                }
            }
        };
        // Most publishes wake a few subscribers: kept inline, without allocating.
        let mut wake: smallvec::SmallVec<[Arc<dyn Notify>; 4]> = smallvec::SmallVec::new();
        let mut dropped = Vec::new();
        for name in &message.topics {
            let retention = self.config.retention_of(name);
            let topic = match state.topics.get_mut(&**name) {
                Some(topic) => topic,
                None => state
                    .topics
                    .entry(name.clone())
                    .or_insert_with(|| Topic::new(name.clone())),
            };
            if retention > 0 {
                topic.log.push_back(message.clone());
                while topic.log.len() > retention {
                    topic.log.pop_front();
                }
            }
            for client in &topic.subscribers {
                if *client.id == *message.sender {
                    continue;
                }
                let delivery = Delivery {
                    topic: topic.name.clone(),
                    message: message.clone(),
                };
                let (notify, pushed_out) =
                    client.enqueue(delivery, self.config.detached_queue_limit);
                wake.extend(notify);
                dropped.extend(pushed_out.map(|old| (client.id.clone(), old)));
            }
        }
        drop(state);
        for notify in wake {
            notify.notify();
        }
        Ok(dropped)
    }

    /// A subscriber of `message` whose queue is full and who does not make room by
    /// dropping, with its limit.
    fn full_receiver(state: &State, message: &Message) -> Option<(String, QueueLimit)> {
        for name in &message.topics {
            let Some(topic) = state.topics.get(&**name) else {
                continue;
            };
            for client in &topic.subscribers {
                if *client.id == *message.sender
                    || client.backlog.load(Ordering::Relaxed)
                        < client.refuse_at.load(Ordering::Relaxed)
                {
                    continue;
                }
                let queue = client.lock();
                if queue.notify.is_some() && queue.items.len() >= queue.limit.capacity {
                    return Some((client.id.clone(), queue.limit));
                }
            }
        }
        None
    }

    /// Attaches (creating if new) the client `client_id` to `topics`.
    pub(crate) fn subscribe(
        &self,
        client_id: &str,
        topics: &[String],
        start: StartFrom,
        limit: QueueLimit,
        notify: Arc<dyn Notify>,
    ) -> Result<(Arc<Client>, bool), SubscribeError> {
        let mut state = self.lock();
        let State {
            topics: all_topics,
            clients,
            ..
        } = &mut *state;
        let wanted: Vec<Arc<str>> = topics.iter().map(|t| Arc::from(t.as_str())).collect();
        let existing = clients.get(client_id).cloned();
        let client = existing.clone().unwrap_or_else(|| {
            Arc::new(Client {
                id: client_id.to_owned(),
                queue: Mutex::new(Queue::new(limit)),
                backlog: AtomicUsize::new(0),
                refuse_at: AtomicUsize::new(usize::MAX),
                reordered: AtomicBool::new(false),
            })
        });
        let mut queue = client.lock();
        if queue.notify.is_some() {
            return Err(SubscribeError::AlreadySubscribed);
        }
        for gone in queue.topics.iter().filter(|t| !wanted.contains(t)) {
            if let Some(topic) = all_topics.get_mut(gone) {
                topic.subscribers.retain(|c| !Arc::ptr_eq(c, &client));
            }
        }
        let added: Vec<Arc<str>> = wanted
            .iter()
            .filter(|t| !queue.topics.contains(t))
            .cloned()
            .collect();
        for added in added {
            let topic = all_topics
                .entry(added.clone())
                .or_insert_with(|| Topic::new(added.clone()));
            topic.subscribers.push(client.clone());
            if existing.is_none() && start == StartFrom::Earliest {
                for message in topic.log.iter().filter(|m| *m.sender != *client.id) {
                    queue.insert_sorted(Delivery {
                        topic: added.clone(),
                        message: message.clone(),
                    });
                }
            }
        }
        if queue.dropped > 0 {
            tracing::warn!(
                client = client_id,
                dropped = queue.dropped,
                limit = self.config.detached_queue_limit,
                "client missed messages while detached: its queue was over the limit"
            );
            queue.dropped = 0;
        }
        queue.newest = queue.newest.max(queue.items.back().map(|d| d.message.id));
        queue.topics = wanted;
        queue.limit = limit;
        queue.notify = Some(notify);
        client.refuse_at.store(
            match limit.overflow {
                Overflow::DropOldest => usize::MAX,
                Overflow::Block | Overflow::Reject => limit.capacity,
            },
            Ordering::Relaxed,
        );
        let has_work = !queue.items.is_empty();
        client.backlog.store(queue.items.len(), Ordering::Relaxed);
        drop(queue);
        clients.insert(client_id.to_owned(), client.clone());
        Ok((client, has_work))
    }

    /// A consumer took deliveries: wakes publishers waiting for room, if any.
    pub(crate) fn room_made(&self) {
        if self.blocked.load(Ordering::Acquire) > 0 {
            let _room = self.room.0.lock().unwrap_or_else(PoisonError::into_inner);
            self.room.1.notify_all();
        }
    }

    /// Runs `f` with the namespace locked.
    pub(crate) fn with_state<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// The retained messages of `topic`, in publish order.
    pub(crate) fn log(&self, topic: &str) -> impl Iterator<Item = &Arc<Message>> {
        self.topics
            .get(topic)
            .into_iter()
            .flat_map(|t| t.log.iter())
    }

    /// A retained message by id: a scan of the retained logs, as lookups by id are rare
    /// and an index would cost every publish.
    pub(crate) fn by_id(&self, id: MessageId) -> Option<&Arc<Message>> {
        self.topics
            .values()
            .find_map(|topic| topic.log.iter().find(|m| m.id == id))
    }
}

impl Client {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a delivery; returns the consumer to notify, if one is attached, and the
    /// delivery pushed out to make room, if the client's limit says so.
    fn enqueue(
        &self,
        delivery: Delivery,
        detached_limit: usize,
    ) -> (Option<Arc<dyn Notify>>, Option<Delivery>) {
        let mut queue = self.lock();
        let mut pushed_out = None;
        if queue.notify.is_none() && queue.items.len() >= detached_limit {
            queue.items.pop_front();
            queue.dropped += 1;
        } else if queue.notify.is_some()
            && queue.limit.overflow == Overflow::DropOldest
            && queue.items.len() >= queue.limit.capacity
        {
            pushed_out = queue.items.pop_front();
        }
        let id = delivery.message.id;
        match queue.newest {
            Some(newest) if id < newest => self.reordered.store(true, Ordering::Release),
            _ => queue.newest = Some(id),
        }
        queue.insert_sorted(delivery);
        self.backlog.store(queue.items.len(), Ordering::Relaxed);
        (queue.notify.clone(), pushed_out)
    }
}

impl Queue {
    /// Inserts keeping id order; a new message usually goes at the back.
    pub(crate) fn insert_sorted(&mut self, delivery: Delivery) {
        let id = delivery.message.id;
        let at = self
            .items
            .iter()
            .rposition(|queued| queued.message.id <= id)
            .map_or(0, |i| i + 1);
        self.items.insert(at, delivery);
    }

    /// Gives back deliveries a subscription took and did not complete, keeping id order.
    pub(crate) fn give_back(&mut self, taken: impl DoubleEndedIterator<Item = Delivery>) {
        for delivery in taken.rev() {
            self.items.push_front(delivery);
        }
        self.items
            .make_contiguous()
            .sort_by_key(|delivery| delivery.message.id);
    }
}
