//! The node wires store, hub and bus together and implements each operation once, for the HTTP
//! API and the WebSocket protocol alike. Nothing here knows HTTP.

use std::sync::Arc;

use serde_json::value::RawValue;
use switchboard_protocol::ServerFrame;

use crate::{
    bus::{Bus, BusError, Event},
    error::AppError,
    hub::{Frame, Hub, Target},
    relay::Relay,
    store::{Client, ClientId, Store, StoreError, TopicInfo, valid_name},
};

pub struct Node {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub hub: Hub,
    pub relay: Arc<Relay>,
    api_keys: Vec<String>,
    max_message_bytes: usize,
    /// Topics that exist from the start (`--topic`), restored whenever the store comes back.
    configured_topics: Vec<String>,
}

impl From<BusError> for AppError {
    fn from(err: BusError) -> Self {
        AppError::Unavailable(err.to_string())
    }
}

impl Node {
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        hub: Hub,
        relay: Arc<Relay>,
        api_keys: Vec<String>,
        max_message_bytes: usize,
        configured_topics: Vec<String>,
    ) -> Self {
        Node { store, bus, hub, relay, api_keys, max_message_bytes, configured_topics }
    }

    /// Creates the configured topics that do not exist.
    pub async fn create_configured_topics(&self) -> Result<(), StoreError> {
        for topic in &self.configured_topics {
            match self.store.create_topic(topic).await {
                Ok(()) | Err(StoreError::TopicExists(_)) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Whether `key` is one of the configured API keys (compared in constant time).
    pub fn key_is_valid(&self, key: Option<&str>) -> bool {
        key_in(&self.api_keys, key)
    }

    pub fn require_key(&self, key: Option<&str>) -> Result<(), AppError> {
        if self.key_is_valid(key) {
            Ok(())
        } else if key.is_none() {
            Err(AppError::Forbidden("missing X-Api-Key header"))
        } else {
            Err(AppError::Forbidden("invalid API key"))
        }
    }

    /// Who sends a message: the client `id` names (unknown id: 409), else the API key holder
    /// (`None`), else nobody (403).
    pub async fn sender(
        &self,
        key: Option<&str>,
        id: Option<ClientId>,
    ) -> Result<Option<Client>, AppError> {
        match id {
            Some(id) => Ok(Some(self.store.client(id).await?)),
            None => {
                self.require_key(key).map_err(|_| {
                    AppError::Forbidden("send with a valid X-Api-Key header or a registered id")
                })?;
                Ok(None)
            }
        }
    }

    pub async fn register(&self, name: Option<&str>) -> Result<Client, AppError> {
        if let Some(name) = name {
            check_name("client name", name)?;
        }
        Ok(self.store.register(name).await?)
    }

    /// Closes (4001) the sockets here of clients the store no longer knows: after an outage,
    /// Redis may have come back empty. Returns how many were closed.
    pub async fn close_unknown_clients(&self) -> Result<usize, StoreError> {
        let unknown = self.store.unknown_clients(&self.hub.client_ids()).await?;
        Ok(unknown.into_iter().map(|client| self.hub.unregistered(client)).sum())
    }

    /// Unregisters the client and closes its sockets (4001); returns how many were closed, on
    /// every node.
    pub async fn unregister(&self, id: ClientId) -> Result<usize, AppError> {
        self.store.unregister(id).await?;
        self.emit(Event::Unregistered { client: id }).await
    }

    /// Sends `data` to the target from `from` (a client name; `None` for the API key holder).
    /// Returns the number of clients targeted: registered clients for a broadcast, subscribers
    /// for a topic.
    pub async fn publish(
        &self,
        from: Option<&str>,
        target: Target,
        data: &RawValue,
    ) -> Result<u64, AppError> {
        let size = data.get().len();
        if size > self.max_message_bytes {
            return Err(AppError::MessageTooLarge { size, limit: self.max_message_bytes });
        }
        let (recipients, topic) = match &target {
            Target::Broadcast => (self.store.client_count().await?, None),
            Target::Topic(topic) => {
                (self.store.subscriber_count(topic).await?, Some(topic.as_str()))
            }
        };
        // Encoded once; every recipient gets a clone of these bytes.
        let frame = Frame::json(&ServerFrame::Message { topic, from, data })
            .map_err(|err| AppError::BadRequest(format!("cannot encode the message: {err}")))?;
        self.emit(Event::Deliver { target, frame }).await?;
        Ok(recipients)
    }

    pub async fn subscribe(&self, id: ClientId, topics: Vec<String>) -> Result<(), AppError> {
        self.store.subscribe(id, &topics).await?;
        self.emit(Event::Subscribed { client: id, topics }).await?;
        Ok(())
    }

    pub async fn unsubscribe(&self, id: ClientId, topics: Vec<String>) -> Result<(), AppError> {
        self.store.unsubscribe(id, &topics).await?;
        self.emit(Event::Unsubscribed { client: id, topics }).await?;
        Ok(())
    }

    pub async fn topics(&self) -> Result<Vec<TopicInfo>, AppError> {
        Ok(self.store.topics().await?)
    }

    pub async fn create_topic(&self, name: &str) -> Result<(), AppError> {
        check_name("topic name", name)?;
        Ok(self.store.create_topic(name).await?)
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), AppError> {
        self.store.delete_topic(name).await?;
        self.emit(Event::TopicDeleted { topic: name.to_owned() }).await?;
        Ok(())
    }

    pub async fn ready(&self) -> Result<(), AppError> {
        self.store.ping().await?;
        Ok(self.bus.check()?)
    }

    /// Applies the event here, then tells the other nodes. Returns what it did (sockets reached
    /// here, or closed on every node).
    async fn emit(&self, event: Event) -> Result<usize, AppError> {
        let local = match &event {
            // The publisher waits for the sockets, so it cannot outrun them.
            Event::Deliver { target, frame } => self.hub.deliver_written(target, frame).await,
            _ => self.apply(&event),
        };
        self.listen_for(&event).await?;
        let remote = self.bus.announce(event).await?;
        Ok(local + remote)
    }

    /// After a subscription reached sockets here: makes sure this node hears the topics'
    /// deliveries from other nodes before anyone is told the subscription holds.
    pub async fn listen_for(&self, event: &Event) -> Result<(), BusError> {
        match event {
            Event::Subscribed { client, topics } if self.hub.has_client(*client) => {
                self.bus.listen(topics).await
            }
            _ => Ok(()),
        }
    }

    /// Applies an event to this node's hub, whichever node it came from.
    pub fn apply(&self, event: &Event) -> usize {
        match event {
            Event::Deliver { target, frame } => self.hub.deliver(target, frame),
            Event::Subscribed { client, topics } => {
                self.hub.subscribed(*client, topics);
                0
            }
            Event::Unsubscribed { client, topics } => {
                self.hub.unsubscribed(*client, topics);
                0
            }
            Event::Unregistered { client } => self.hub.unregistered(*client),
            Event::TopicDeleted { topic } => {
                self.hub.topic_deleted(topic);
                0
            }
        }
    }
}

fn check_name(what: &str, name: &str) -> Result<(), AppError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(AppError::BadRequest(format!("{what} must be 1-64 of A-Za-z0-9_.- (got `{name}`)")))
    }
}

/// Whether `key` is one of `keys`, each compared in constant time.
pub fn key_in(keys: &[String], key: Option<&str>) -> bool {
    let Some(key) = key else { return false };
    keys.iter().fold(false, |found, candidate| found | constant_time_eq(candidate, key))
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
