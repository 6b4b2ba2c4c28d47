//! The node wires store, hub and bus together and implements each operation once, for the HTTP
//! API and the WebSocket protocol alike, a socket's connect included; it is also the handler
//! its bus calls with what other nodes announce. Nothing here knows HTTP.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use async_trait::async_trait;
use serde_json::value::RawValue;
use switchboard_protocol::ServerFrame;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    auth::Keys,
    bus::{Applied, Bus, BusError, BusHandler, Event},
    delivery::{CloseReason, Frame, Outlet},
    error::AppError,
    hub::{ConnId, Hub, Target},
    metrics::{Metrics, State},
    relay::Relay,
    store::{
        Client, ClientId, HistoryPage, HistorySettings, Idempotency, NAME_RULE, NewMessage,
        Position, Present, Store, StoreError, TopicInfo, valid_name,
    },
};

/// Store reads tried while subscription changes keep racing a connect.
const SYNC_ATTEMPTS: usize = 8;

pub struct Node {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub hub: Hub,
    pub relay: Arc<Relay>,
    pub metrics: Arc<Metrics>,
    settings: NodeSettings,
    /// Who this node is in the store's presence counts (its bus id in a cluster).
    presence_id: Uuid,
}

/// How long a node's sockets count in presence after its last heartbeat: a node that dies
/// without saying so drops out of presence within this (it beats every third of it).
pub const PRESENCE_TTL: Duration = Duration::from_secs(6);

/// What the operator configured for a node's operations.
pub struct NodeSettings {
    pub api_keys: Keys,
    pub max_message_bytes: usize,
    /// Topics that exist from the start (`--topic`), restored whenever the store comes back.
    pub configured_topics: Vec<String>,
    /// What a topic keeps unless it was created with its own settings.
    pub history: HistorySettings,
    /// How long a topic remembers a publish's idempotency key (zero: keys are ignored).
    pub idempotency_window: Duration,
}

/// What sending a message did: the clients it targets, and its position in its topic (none
/// for a broadcast, which no history keeps).
pub struct Sent {
    pub recipients: u64,
    pub position: Option<Position>,
}

/// A client's socket once connected: its id in the hub and the client's topics, sorted.
pub struct Connected {
    pub conn: ConnId,
    pub topics: Vec<String>,
}

impl Node {
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        hub: Hub,
        relay: Arc<Relay>,
        metrics: Arc<Metrics>,
        settings: NodeSettings,
    ) -> Self {
        let presence_id = bus.membership().map_or_else(Uuid::new_v4, |bus| bus.node_id);
        Node { store, bus, hub, relay, metrics, settings, presence_id }
    }

    /// Creates the configured topics that do not exist.
    pub async fn create_configured_topics(&self) -> Result<(), StoreError> {
        for topic in &self.settings.configured_topics {
            match self.store.create_topic(topic, self.settings.history).await {
                Ok(()) | Err(StoreError::TopicExists(_)) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Succeeds when `key` is one of the configured API keys; says why not otherwise.
    pub fn require_key(&self, key: Option<&str>) -> Result<(), AppError> {
        if self.settings.api_keys.accepts(key) {
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

    /// A socket of `client` joins this node, writing through `outlet`: it is attached to the hub
    /// (broadcasts reach it at once), the client's topics are read from the store only after
    /// that, so no subscription change can fall between the read and the attach (see
    /// [`Hub::sync_topics`]), and then this node hears those topics' deliveries from the other
    /// nodes. Nothing is written to the socket yet (see [`Outlet::open`]). On failure the socket
    /// has left the hub again, and the reason says how to close it.
    pub async fn connect(
        &self,
        client: ClientId,
        outlet: Arc<Outlet>,
    ) -> Result<Connected, CloseReason> {
        let (conn, generation) = self.hub.attach(client, outlet);
        let topics = self.sync_subscriptions(client, generation).await;
        match topics {
            Ok(topics) => {
                self.count_socket(client, 1).await;
                Ok(Connected { conn, topics })
            }
            Err(reason) => {
                self.hub.detach(client, conn);
                Err(reason)
            }
        }
    }

    /// A connected socket of `client` ended (paired with its connect).
    pub async fn disconnected(&self, client: ClientId) {
        self.count_socket(client, -1).await;
    }

    /// Counts a socket in or out of presence. A store out of reach only makes presence lag: it
    /// never fails the socket, and a node that dies drops out with its heartbeat.
    async fn count_socket(&self, client: ClientId, delta: i64) {
        if let Err(err) = self.store.sockets_changed(self.presence_id, client, delta).await {
            tracing::warn!(%err, "presence not updated");
        }
    }

    /// The clients subscribed to `topic` with live sockets, on every node that is alive.
    pub async fn presence(&self, topic: &str) -> Result<Vec<Present>, AppError> {
        Ok(self.store.presence(topic).await?)
    }

    /// Tells the store this node is alive every third of [`PRESENCE_TTL`] until `shutdown`,
    /// then that it is gone.
    pub async fn presence_heartbeat(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            if let Err(err) = self.store.node_alive(self.presence_id, PRESENCE_TTL).await {
                tracing::warn!(%err, "presence heartbeat not recorded");
            }
            tokio::select! {
                _ = tokio::time::sleep(PRESENCE_TTL / 3) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        if let Err(err) = self.store.node_gone(self.presence_id).await {
            tracing::warn!(%err, "could not take this node out of presence");
        }
    }

    async fn sync_subscriptions(
        &self,
        client: ClientId,
        mut generation: u64,
    ) -> Result<Vec<String>, CloseReason> {
        for _ in 0..SYNC_ATTEMPTS {
            let stored = match self.store.subscriptions(client).await {
                Ok(stored) => stored,
                Err(StoreError::UnknownClient) => return Err(CloseReason::Unregistered),
                Err(err) => {
                    tracing::warn!(%err, "cannot read a connecting client's subscriptions");
                    return Err(CloseReason::StoreUnavailable);
                }
            };
            match self.hub.sync_topics(client, generation, stored) {
                Ok(topics) => {
                    // Deliveries published on other nodes reach this one only once it listens.
                    if let Err(err) = self.bus.listen(&topics).await {
                        tracing::warn!(%err, "cannot listen to a connecting client's topics");
                        return Err(CloseReason::BusUnavailable);
                    }
                    return Ok(topics);
                }
                Err(newer) => generation = newer,
            }
        }
        Err(CloseReason::SubscriptionsChanging)
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
        idempotency_key: Option<&str>,
    ) -> Result<Sent, AppError> {
        let size = data.get().len();
        let limit = self.settings.max_message_bytes;
        if size > limit {
            return Err(AppError::MessageTooLarge { size, limit });
        }
        let (recipients, topic, position) = match &target {
            Target::Broadcast => (self.store.client_count().await?, None, None),
            Target::Topic(topic) => {
                let idempotency = self.idempotency(idempotency_key)?;
                let message = NewMessage { from, data: data.get(), idempotency };
                let published = self.store.publish(topic, message).await?;
                if published.duplicate {
                    // Published once already within the window: its answer, nothing sent.
                    let position = Some(published.position);
                    return Ok(Sent { recipients: published.subscribers, position });
                }
                (published.subscribers, Some(topic.as_str()), Some(published.position))
            }
        };
        let (offset, epoch) = match &position {
            Some(position) => (Some(position.offset), Some(position.epoch.as_str())),
            None => (None, None),
        };
        // Encoded once; every recipient gets a clone of these bytes.
        let message = ServerFrame::Message { topic, from, data, offset, epoch };
        let frame = Frame::json(&message)
            .map_err(|err| AppError::BadRequest(format!("cannot encode the message: {err}")))?;
        self.metrics.published(target == Target::Broadcast);
        self.emit(Event::Deliver { target, frame }).await?;
        Ok(Sent { recipients, position })
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

    /// What a topic keeps unless created with its own settings.
    pub fn default_history(&self) -> HistorySettings {
        self.settings.history
    }

    /// Creates a topic keeping `history`, or the configured history when `None`.
    pub async fn create_topic(
        &self,
        name: &str,
        history: Option<HistorySettings>,
    ) -> Result<HistorySettings, AppError> {
        check_name("topic name", name)?;
        let history = history.unwrap_or(self.settings.history);
        self.store.create_topic(name, history).await?;
        Ok(history)
    }

    /// The topic's kept messages after `since` (at most `limit`), and whether they are all
    /// the messages after it: not when the history no longer reaches back that far, or when
    /// `epoch` (the one the caller's offset belongs to) is not the topic's.
    pub async fn history(
        &self,
        topic: &str,
        since: u64,
        epoch: Option<&str>,
        limit: usize,
    ) -> Result<(HistoryPage, bool), AppError> {
        let page = self.store.history(topic, since, limit).await?;
        let same_epoch = epoch.is_none_or(|epoch| epoch == page.position.epoch);
        let reaches = since.saturating_add(1) >= page.oldest || since >= page.position.offset;
        Ok((page, same_epoch && reaches))
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), AppError> {
        self.store.delete_topic(name).await?;
        self.emit(Event::TopicDeleted { topic: name.to_owned() }).await?;
        Ok(())
    }

    /// This node's metrics in the Prometheus text format, with its state now (the store's
    /// counts are left out while it cannot be read).
    pub async fn metrics_text(&self) -> String {
        let state = State {
            connections: self.hub.connection_count() as u64,
            connected_clients: self.hub.connected_client_count() as u64,
            registered_clients: self.store.client_count().await.ok(),
            topics: self.store.topic_count().await.ok(),
            deliveries: self.hub.stats.deliveries.load(Ordering::Relaxed),
            slow_consumer_closes: self.slow_consumer_closes(),
            relay_peers: self.relay.peer_count() as u64,
            relayed_frames: self.relay.stats.relayed_frames.load(Ordering::Relaxed),
            bus: self.bus.membership().map(|bus| (bus.connected, bus.reconnects)),
        };
        self.metrics.render(state)
    }

    /// Sockets and relay peers closed for not keeping up.
    pub fn slow_consumer_closes(&self) -> u64 {
        self.hub.stats.slow_consumer_closes.load(Ordering::Relaxed)
            + self.relay.stats.slow_consumer_closes.load(Ordering::Relaxed)
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
            _ => {
                let applied = self.apply(&event);
                // Nobody is told a subscription holds before this node hears its topics.
                self.bus.listen(&applied.topics_to_hear).await?;
                applied.sockets
            }
        };
        let remote = self.bus.announce(event).await?;
        Ok(local + remote)
    }

    /// Applies an event to this node's hub, whichever node it came from.
    fn apply(&self, event: &Event) -> Applied {
        let mut applied = Applied::default();
        match event {
            Event::Deliver { target, frame } => applied.sockets = self.hub.deliver(target, frame),
            Event::Subscribed { client, topics } => {
                self.hub.subscribed(*client, topics);
                // Sockets of the client here receive these topics now.
                if self.hub.has_client(*client) {
                    applied.topics_to_hear = topics.clone();
                }
            }
            Event::Unsubscribed { client, topics } => self.hub.unsubscribed(*client, topics),
            Event::Unregistered { client } => applied.sockets = self.hub.unregistered(*client),
            Event::TopicDeleted { topic } => self.hub.topic_deleted(topic),
        }
        applied
    }
}

#[async_trait]
impl BusHandler for Node {
    fn apply(&self, event: &Event) -> Applied {
        Node::apply(self, event)
    }

    fn topics_heard(&self) -> Vec<String> {
        self.hub.topic_names()
    }

    fn hears_topic(&self, topic: &str) -> bool {
        self.hub.has_topic(topic)
    }

    fn relay_message(&self, origin: Uuid, message: &[u8]) {
        self.relay.receive(origin, message);
    }

    async fn rejoined(&self) -> Result<(), BusError> {
        self.create_configured_topics()
            .await
            .map_err(|err| BusError::Unavailable(format!("cannot restore topics: {err}")))?;
        let closed = self
            .close_unknown_clients()
            .await
            .map_err(|err| BusError::Unavailable(format!("cannot check clients: {err}")))?;
        if closed > 0 {
            tracing::warn!(closed, "closed sockets of clients the store no longer knows");
        }
        // Redis may have lost who waits: relay peers waiting here wait again.
        self.relay.rejoin();
        Ok(())
    }
}

impl Node {
    /// The idempotency of a topic's publish with `key` (the WebSocket frame's is not checked
    /// as it is read), while the window is on.
    fn idempotency<'k>(&self, key: Option<&'k str>) -> Result<Option<Idempotency<'k>>, AppError> {
        let Some(key) = key else { return Ok(None) };
        if !crate::relay::valid_id(key) {
            let rule = crate::relay::ID_RULE;
            return Err(AppError::BadRequest(format!(
                "idempotency_key must be {rule} (got `{key}`)"
            )));
        }
        let window = self.settings.idempotency_window;
        Ok((!window.is_zero()).then_some(Idempotency { key, window }))
    }
}

fn check_name(what: &str, name: &str) -> Result<(), AppError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(AppError::BadRequest(format!("{what} must be {NAME_RULE} (got `{name}`)")))
    }
}
