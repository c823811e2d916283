//! # messaging-memory
//!
//! The in-memory messaging backend: the reference implementation of guild's delivery
//! contract (see [`engine_core::MessagingBackend`]) for agents in one process.
//!
//! [`MemoryMessaging::new`] makes a bus of its own, shared by the handle's clones and
//! no one else. [`MemoryMessaging::process_wide`] is a handle on the one bus of the
//! process, which every such handle shares (that is what the name `"memory"` means to
//! `guild`). On either, guilds are kept apart by namespace, and nothing an instance or a
//! client does removes another's data.
//!
//! Messages are stored once and shared (`Arc`) by every topic log and client queue that
//! holds them. History is bounded per topic ([`MemoryConfig`]).
#![doc = ""]
#![doc = include_str!("../README.md")]

mod config;
mod error;
mod fast_hash;
mod namespace;
mod subscription;

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use engine_core::{
    Capabilities, DeadLetter, Error, Failure, HistoryQuery, IdGenerator, Message, MessagingBackend,
    Notify, Result, SubscribeRequest, Subscription,
};

pub use config::MemoryConfig;
pub use subscription::MemorySubscription;

use error::MemoryError;
use fast_hash::FastMap;
use namespace::{Namespace, SubscribeError};

/// The backend's name.
pub const NAME: &str = "memory";

/// A handle on an in-memory bus. Cheap to clone; clones share the bus.
#[derive(Debug, Clone)]
pub struct MemoryMessaging {
    bus: Arc<Bus>,
    config: MemoryConfig,
    ids: Arc<IdGenerator>,
}

#[derive(Debug, Default)]
struct Bus {
    namespaces: RwLock<FastMap<String, Arc<Namespace>>>,
}

impl Default for MemoryMessaging {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryMessaging {
    /// A new bus that no other handle shares (except this one's clones), with the
    /// default configuration.
    pub fn new() -> Self {
        Self::with_config(MemoryConfig::default())
    }

    /// A new bus that no other handle shares (except this one's clones).
    pub fn with_config(config: MemoryConfig) -> Self {
        Self {
            bus: Arc::default(),
            config,
            ids: IdGenerator::process(),
        }
    }

    /// A handle on this process's one shared bus. `config` applies to the namespaces
    /// this handle is the first to use; a namespace that exists keeps the settings it
    /// was made with.
    pub fn process_wide(config: MemoryConfig) -> Self {
        static SHARED: OnceLock<Arc<Bus>> = OnceLock::new();
        Self {
            bus: SHARED.get_or_init(Arc::default).clone(),
            config,
            ids: IdGenerator::process(),
        }
    }

    fn namespace(&self, name: &str) -> Arc<Namespace> {
        if let Some(namespace) = self
            .bus
            .namespaces
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
        {
            return namespace.clone();
        }
        self.bus
            .namespaces
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(Namespace::new(self.config.clone())))
            .clone()
    }
}

impl MessagingBackend for MemoryMessaging {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::in_process()
    }

    fn publish(&self, message: Message) -> Result<()> {
        if message.topics.is_empty() {
            return Err(MemoryError::NoTopic { id: message.id }.into());
        }
        let message = Arc::new(message);
        let namespace = self.namespace(&message.namespace);
        let pushed_out = namespace.publish(message.clone()).map_err(|full| {
            Error::from(MemoryError::QueueFull {
                client: full.client,
                capacity: full.capacity,
                waited: full.waited,
            })
        })?;
        for (client, delivery) in pushed_out {
            let failure = Failure {
                kind: "overflow".into(),
                text: format!("dropped to make room: the queue of {client:?} was full"),
            };
            let letter = DeadLetter::for_delivery(
                &client,
                &delivery,
                failure,
                &self.ids,
                &message.namespace,
            )?;
            if let Some(letter) = letter {
                // What the dead letter pushes out in turn is dropped, not dead-lettered
                // again, so this ends.
                match namespace.publish(Arc::new(letter)) {
                    Ok(lost) if lost.is_empty() => {}
                    Ok(lost) => {
                        tracing::warn!(
                            lost = lost.len(),
                            "deliveries dropped for a dead letter's room"
                        );
                    }
                    Err(full) => {
                        tracing::warn!(client = %full.client, "a dead letter found its receiver's queue full; it is dropped");
                    }
                }
            }
        }
        Ok(())
    }

    fn subscribe(
        &self,
        request: SubscribeRequest,
        notify: Arc<dyn Notify>,
    ) -> Result<Box<dyn Subscription>> {
        if request.client_id.is_empty() {
            return Err(MemoryError::NoClientId.into());
        }
        let namespace = self.namespace(&request.namespace);
        let (client, has_work) = namespace
            .subscribe(
                &request.client_id,
                &request.topics,
                request.start,
                request.limit.unwrap_or(self.config.queue_limit),
                notify.clone(),
            )
            .map_err(|SubscribeError::AlreadySubscribed| {
                Error::from(MemoryError::Subscribed {
                    client: request.client_id.clone(),
                    namespace: request.namespace.clone(),
                })
            })?;
        if has_work {
            notify.notify();
        }
        Ok(Box::new(MemorySubscription {
            namespace_name: request.namespace,
            namespace,
            client,
            ids: self.ids.clone(),
            attached: true,
            taken: VecDeque::new(),
            in_flight: std::collections::VecDeque::new(),
        }))
    }

    fn history(&self, namespace: &str, query: &HistoryQuery) -> Result<Vec<Arc<Message>>> {
        let namespace = self.namespace(namespace);
        Ok(namespace.with_state(|state| match query {
            HistoryQuery::Topic(topic) => state.log(topic).cloned().collect(),
            HistoryQuery::After { topic, after } => state
                .log(topic)
                .filter(|m| m.id.time_key() > after.time_key())
                .cloned()
                .collect(),
            HistoryQuery::Ids(ids) => ids
                .iter()
                .filter_map(|id| state.by_id(*id).cloned())
                .collect(),
        }))
    }
}
