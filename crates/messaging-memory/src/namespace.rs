//! One guild's part of the bus: its topics (retained logs and subscribers), its clients
//! (queues and positions), and the index that answers history-by-id.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use engine_core::{Delivery, Message, MessageId, Notify, StartFrom};

use crate::MemoryConfig;

/// A guild's topics and clients behind one lock, so that publishing is atomic across
/// topics and queues fill in publish order.
#[derive(Debug)]
pub(crate) struct Namespace {
    pub(crate) config: MemoryConfig,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    topics: HashMap<Arc<str>, Topic>,
    clients: HashMap<String, Arc<Client>>,
    /// Retained messages by id, with the number of topic logs holding each.
    index: HashMap<MessageId, (Arc<Message>, usize)>,
}

#[derive(Debug, Default)]
struct Topic {
    log: VecDeque<Arc<Message>>,
    subscribers: Vec<Arc<Client>>,
}

/// A client: its queue survives detaching, so a later subscription resumes from it.
#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) id: String,
    queue: Mutex<Queue>,
    /// Deliveries queued, including one in flight; read without the lock.
    pub(crate) queued: AtomicUsize,
}

#[derive(Default)]
pub(crate) struct Queue {
    pub(crate) items: VecDeque<Delivery>,
    pub(crate) in_flight: Option<Delivery>,
    pub(crate) notify: Option<Arc<dyn Notify>>,
    topics: Vec<Arc<str>>,
    dropped: u64,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("items", &self.items.len())
            .field("attached", &self.notify.is_some())
            .finish_non_exhaustive()
    }
}

/// Why a subscription could not be made.
pub(crate) enum SubscribeError {
    AlreadySubscribed,
}

impl Namespace {
    pub(crate) fn new(config: MemoryConfig) -> Self {
        Self {
            config,
            state: Mutex::new(State::default()),
        }
    }

    /// Appends `message` to each of its topics and queues it for their subscribers (but
    /// not its sender). Returns the notifications to send once no lock is held.
    pub(crate) fn publish(&self, message: Arc<Message>) -> Vec<Arc<dyn Notify>> {
        let mut wake = Vec::new();
        let mut state = self.lock();
        let State { topics, index, .. } = &mut *state;
        for name in &message.topics {
            let topic_name: Arc<str> = Arc::from(name.as_str());
            let topic = topics.entry(topic_name.clone()).or_default();
            retain(
                topic,
                index,
                message.clone(),
                self.config.retention_of(name),
            );
            for client in &topic.subscribers {
                if client.id == message.sender {
                    continue;
                }
                let delivery = Delivery {
                    topic: topic_name.clone(),
                    message: message.clone(),
                };
                if let Some(notify) = client.enqueue(delivery, self.config.detached_queue_limit) {
                    wake.push(notify);
                }
            }
        }
        wake
    }

    /// Attaches (creating if new) the client `client_id` to `topics`.
    pub(crate) fn subscribe(
        &self,
        client_id: &str,
        topics: &[String],
        start: StartFrom,
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
                queue: Mutex::new(Queue::default()),
                queued: AtomicUsize::new(0),
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
            let topic = all_topics.entry(added.clone()).or_default();
            topic.subscribers.push(client.clone());
            if existing.is_none() && start == StartFrom::Earliest {
                for message in topic.log.iter().filter(|m| m.sender != client.id) {
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
        queue.topics = wanted;
        queue.notify = Some(notify);
        let has_work = queue.len() > 0;
        client.queued.store(queue.len(), Ordering::Relaxed);
        drop(queue);
        clients.insert(client_id.to_owned(), client.clone());
        Ok((client, has_work))
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

    /// A retained message by id.
    pub(crate) fn by_id(&self, id: MessageId) -> Option<&Arc<Message>> {
        self.index.get(&id).map(|(message, _)| message)
    }
}

impl Client {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a delivery; returns the notification to send when the client is attached.
    fn enqueue(&self, delivery: Delivery, detached_limit: usize) -> Option<Arc<dyn Notify>> {
        let mut queue = self.lock();
        if queue.notify.is_none() && queue.items.len() >= detached_limit {
            queue.items.pop_front();
            queue.dropped += 1;
        }
        queue.insert_sorted(delivery);
        self.queued.store(queue.len(), Ordering::Relaxed);
        queue.notify.clone()
    }
}

impl Queue {
    /// Deliveries queued, including one in flight.
    pub(crate) fn len(&self) -> usize {
        self.items.len() + usize::from(self.in_flight.is_some())
    }

    /// Inserts keeping id order; a new message usually goes at the back.
    fn insert_sorted(&mut self, delivery: Delivery) {
        let id = delivery.message.id;
        let at = self
            .items
            .iter()
            .rposition(|queued| queued.message.id <= id)
            .map_or(0, |i| i + 1);
        self.items.insert(at, delivery);
    }

    /// Puts an unfinished delivery back at the front and forgets the consumer.
    pub(crate) fn detach(&mut self) {
        if let Some(delivery) = self.in_flight.take() {
            self.items.push_front(delivery);
        }
        self.notify = None;
    }
}

fn retain(
    topic: &mut Topic,
    index: &mut HashMap<MessageId, (Arc<Message>, usize)>,
    message: Arc<Message>,
    retention: usize,
) {
    if retention == 0 {
        return;
    }
    index
        .entry(message.id)
        .or_insert_with(|| (message.clone(), 0))
        .1 += 1;
    topic.log.push_back(message);
    while topic.log.len() > retention {
        let Some(old) = topic.log.pop_front() else {
            break;
        };
        if let Some((_, holders)) = index.get_mut(&old.id) {
            *holders -= 1;
            if *holders == 0 {
                index.remove(&old.id);
            }
        }
    }
}
