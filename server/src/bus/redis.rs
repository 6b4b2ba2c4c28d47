//! The Redis bus: nodes sharing a Redis tell each other events over pub/sub.
//!
//! Each node holds one dedicated pub/sub connection and subscribes to broadcasts, control
//! events, its own two channels and the topics its sockets are subscribed to, so a node hears
//! only what it serves (channel names and message formats: [`super::wire`]). A node skips its
//! own messages: it applied them before announcing. A control event is acknowledged by every
//! node once applied (and once that node hears any topic the event added), so a subscribe or
//! unregister answered on one node holds on all of them.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use dashmap::DashMap;
use futures_util::StreamExt;
use redis::{
    Msg,
    aio::{PubSubSink, PubSubStream},
    cmd,
};
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    Bus, BusError, BusHandler, Event, Membership,
    wire::{self, Ack, Channel, Channels, Control, ControlMessage},
};
use crate::{
    delivery::Frame,
    hub::Target,
    redis_pool::{RedisPool, RedisUnavailable},
};

/// How long an announcing node waits for the others' acknowledgements.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a SUBSCRIBE, UNSUBSCRIBE or PING on the pub/sub connection may take.
const PUBSUB_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the pub/sub connection is pinged (a Redis that stopped answering is left) and
/// topics without local subscribers are unsubscribed.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(5);
/// Reconnect delays: doubling from the first to the last.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// Acknowledgements collected for one announced control event.
#[derive(Default)]
struct Acks {
    count: AtomicUsize,
    closed: AtomicU64,
    arrived: Notify,
}

/// The pub/sub connection's sink and the topic channels it is subscribed to; one lock orders
/// every (un)subscription, so a topic a socket needs is never dropped by a concurrent prune.
#[derive(Default)]
struct Listener {
    sink: Option<PubSubSink>,
    topics: HashSet<String>,
}

/// The bus of a node that shares a Redis with others.
pub struct RedisBus {
    node_id: Uuid,
    pool: RedisPool,
    channels: Channels,
    listener: Mutex<Listener>,
    connected: AtomicBool,
    reconnects: AtomicU64,
    pending: DashMap<u64, Arc<Acks>>,
    next_seq: AtomicU64,
}

impl RedisBus {
    pub fn new(pool: RedisPool, prefix: &str) -> Self {
        let node_id = Uuid::new_v4();
        RedisBus {
            node_id,
            pool,
            channels: Channels::new(prefix, node_id),
            listener: Mutex::new(Listener::default()),
            connected: AtomicBool::new(false),
            reconnects: AtomicU64::new(0),
            pending: DashMap::new(),
            next_seq: AtomicU64::new(1),
        }
    }

    /// This node's id on the bus.
    pub fn node_id(&self) -> Uuid {
        self.node_id
    }

    /// Connects (once, now, so a node that starts with Redis up is a member when this returns)
    /// and then hears the cluster in the background, reconnecting after outages, until
    /// `shutdown`.
    pub async fn join(
        self: Arc<Self>,
        node: Arc<dyn BusHandler>,
        shutdown: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        let first = match self.connect(node.as_ref()).await {
            Ok(stream) => Some(stream),
            Err(err) => {
                tracing::warn!(%err, "cannot join the cluster yet; retrying in the background");
                None
            }
        };
        async move { self.run(node, shutdown, first).await }
    }

    async fn run(
        self: Arc<Self>,
        node: Arc<dyn BusHandler>,
        shutdown: CancellationToken,
        mut stream: Option<PubSubStream>,
    ) {
        let mut delay = RECONNECT_FIRST;
        let mut ever_connected = false;
        loop {
            if let Some(stream) = stream.take() {
                if ever_connected {
                    self.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                ever_connected = true;
                delay = RECONNECT_FIRST;
                self.connected.store(true, Ordering::Release);
                tracing::info!("joined the cluster bus");
                let lost = self.serve(stream, &node, &shutdown).await;
                self.connected.store(false, Ordering::Release);
                // The command connections most likely died with this one: replace them all
                // rather than fail a request on each.
                self.pool.discard_connections();
                // Nothing is listened to until the next connection subscribes again.
                *self.listener.lock().await = Listener::default();
                if !lost {
                    return;
                }
                tracing::warn!("lost the cluster bus connection; reconnecting");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(RECONNECT_MAX);
            match self.connect(node.as_ref()).await {
                Ok(connected) => stream = Some(connected),
                Err(err) => tracing::debug!(%err, "reconnecting to the cluster bus"),
            }
        }
    }

    /// Opens the pub/sub connection, subscribes every channel this node needs, and lets the
    /// node restore what it needs in Redis (which may have come back empty).
    async fn connect(&self, node: &dyn BusHandler) -> Result<PubSubStream, BusError> {
        let (mut sink, stream) = self.pool.pubsub().await?.split();
        let mut listener = self.listener.lock().await;
        let topics: HashSet<String> = node.topics_heard().into_iter().collect();
        within(PUBSUB_TIMEOUT, sink.subscribe(self.channels.listened(&topics))).await?;
        node.rejoined().await?;
        *listener = Listener { sink: Some(sink), topics };
        Ok(stream)
    }

    /// Handles messages until the connection is lost (true) or the node shuts down (false).
    async fn serve(
        self: &Arc<Self>,
        mut stream: PubSubStream,
        node: &Arc<dyn BusHandler>,
        shutdown: &CancellationToken,
    ) -> bool {
        let mut maintenance = tokio::time::interval(MAINTENANCE_EVERY);
        maintenance.reset();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return false,
                message = stream.next() => match message {
                    Some(message) => self.receive(&message, node),
                    None => return true,
                },
                _ = maintenance.tick() => {
                    if let Err(err) = self.maintain(node.as_ref()).await {
                        tracing::warn!(%err, "cluster bus connection failed its check");
                        return true;
                    }
                }
            }
        }
    }

    /// Pings the pub/sub connection and unsubscribes topics no local socket needs any more.
    async fn maintain(&self, node: &dyn BusHandler) -> Result<(), BusError> {
        let mut listener = self.listener.lock().await;
        let unused: Vec<String> =
            listener.topics.iter().filter(|topic| !node.hears_topic(topic)).cloned().collect();
        let Some(sink) = listener.sink.as_mut() else {
            return Err(BusError::Unavailable("not connected".into()));
        };
        // Any answer will do (subscribed, RESP2 answers ["pong", ""]).
        let _: redis::Value = within(PUBSUB_TIMEOUT, sink.ping()).await?;
        if !unused.is_empty() {
            let channels: Vec<String> = unused.iter().map(|t| self.channels.topic(t)).collect();
            within(PUBSUB_TIMEOUT, sink.unsubscribe(channels)).await?;
            for topic in &unused {
                listener.topics.remove(topic);
            }
        }
        Ok(())
    }

    /// Applies one message from another node. Never waits: acknowledgements go out from a task
    /// of their own, so the connection keeps being read.
    fn receive(self: &Arc<Self>, message: &Msg, node: &Arc<dyn BusHandler>) {
        let channel = message.get_channel_name();
        let Some((origin, body)) = wire::open(message.get_payload_bytes()) else {
            tracing::warn!(channel, "dropped a bus message of another format");
            return;
        };
        if origin == self.node_id {
            return;
        }
        let delivery = |target| Event::Deliver { target, frame: Frame::from_payload(body) };
        match self.channels.classify(channel) {
            Some(Channel::Broadcast) => drop(node.apply(&delivery(Target::Broadcast))),
            Some(Channel::Topic(topic)) => drop(node.apply(&delivery(Target::Topic(topic.into())))),
            Some(Channel::Control) => match serde_json::from_slice::<ControlMessage>(body) {
                Ok(message) => self.apply_control(origin, message, node),
                Err(err) => tracing::warn!(%err, "dropped a malformed control event"),
            },
            Some(Channel::Relay) => node.relay_message(origin, body),
            Some(Channel::Ack) => match serde_json::from_slice::<Ack>(body) {
                Ok(ack) => self.acknowledged(ack),
                Err(err) => tracing::warn!(%err, "dropped a malformed acknowledgement"),
            },
            None => {}
        }
    }

    fn apply_control(
        self: &Arc<Self>,
        origin: Uuid,
        message: ControlMessage,
        node: &Arc<dyn BusHandler>,
    ) {
        // Applied here, in arrival order; only the listening and the ack wait.
        let applied = node.apply(&message.control.into_event());
        let bus = self.clone();
        tokio::spawn(async move {
            if let Err(err) = bus.listen(&applied.topics_to_hear).await {
                tracing::warn!(%err, "cannot listen to a subscribed topic");
                return;
            }
            let ack = Ack { seq: message.seq, closed: applied.sockets as u64 };
            if let Err(err) = bus.publish(&bus.channels.acks(origin), &wire::json(&ack)).await {
                tracing::warn!(%err, "cannot acknowledge a control event");
            }
        });
    }

    fn acknowledged(&self, ack: Ack) {
        if let Some(acks) = self.pending.get(&ack.seq) {
            acks.closed.fetch_add(ack.closed, Ordering::Relaxed);
            acks.count.fetch_add(1, Ordering::Release);
            acks.arrived.notify_one();
        }
    }

    /// PUBLISHes an envelope; returns how many subscribers heard it.
    async fn publish(&self, channel: &str, body: &[u8]) -> Result<usize, BusError> {
        let payload = wire::seal(self.node_id, body);
        Ok(self.pool.query(cmd("PUBLISH").arg(channel).arg(payload)).await?)
    }

    /// Publishes a control event and waits for every other node's acknowledgement.
    async fn announce_control(&self, control: Control) -> Result<usize, BusError> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let acks = Arc::new(Acks::default());
        // Registered before publishing: an ack may arrive before PUBLISH returns. Removed by
        // the guard even when the request is dropped mid-wait (its client went away).
        self.pending.insert(seq, acks.clone());
        scopeguard::defer! {
            self.pending.remove(&seq);
        }
        self.await_acks(seq, control, &acks).await
    }

    async fn await_acks(&self, seq: u64, control: Control, acks: &Acks) -> Result<usize, BusError> {
        let message = wire::json(&ControlMessage { seq, control });
        let heard_by = self.publish(self.channels.control(), &message).await?;
        // Our own pub/sub connection hears it too and does not answer.
        let expected = heard_by.saturating_sub(usize::from(self.connected.load(Ordering::Acquire)));
        let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
        loop {
            let arrived = acks.arrived.notified();
            let count = acks.count.load(Ordering::Acquire);
            if count >= expected {
                break;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                tracing::warn!(expected, acknowledged = count, "some nodes did not acknowledge");
                break;
            }
        }
        Ok(acks.closed.load(Ordering::Relaxed) as usize)
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn announce(&self, event: Event) -> Result<usize, BusError> {
        match Control::from_event(event) {
            Ok(control) => self.announce_control(control).await,
            Err((target, frame)) => {
                self.publish(&self.channels.deliveries(&target), frame.payload()).await?;
                Ok(0)
            }
        }
    }

    async fn listen(&self, topics: &[String]) -> Result<(), BusError> {
        let mut listener = self.listener.lock().await;
        let missing: Vec<&String> =
            topics.iter().filter(|topic| !listener.topics.contains(*topic)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let Some(sink) = listener.sink.as_mut() else {
            return Err(BusError::Unavailable("not connected to Redis pub/sub".into()));
        };
        let channels: Vec<String> =
            missing.iter().map(|topic| self.channels.topic(topic)).collect();
        within(PUBSUB_TIMEOUT, sink.subscribe(channels)).await?;
        let missing: Vec<String> = missing.into_iter().cloned().collect();
        listener.topics.extend(missing);
        Ok(())
    }

    async fn relay(&self, node: Uuid, message: Vec<u8>) -> Result<bool, BusError> {
        Ok(self.publish(&self.channels.relay(node), &message).await? > 0)
    }

    fn check(&self) -> Result<(), BusError> {
        if self.connected.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(BusError::Unavailable("not connected to Redis pub/sub".into()))
        }
    }

    fn membership(&self) -> Option<Membership> {
        Some(Membership {
            node_id: self.node_id,
            connected: self.connected.load(Ordering::Acquire),
            reconnects: self.reconnects.load(Ordering::Relaxed),
        })
    }
}

impl From<RedisUnavailable> for BusError {
    fn from(err: RedisUnavailable) -> Self {
        BusError::Unavailable(err.to_string())
    }
}

/// Runs a pub/sub request with a deadline.
async fn within<T>(
    limit: Duration,
    request: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, BusError> {
    match tokio::time::timeout(limit, request).await {
        Ok(result) => result.map_err(|err| RedisUnavailable::from(err).into()),
        Err(_) => Err(BusError::Unavailable(format!("redis: no answer within {limit:?}"))),
    }
}
