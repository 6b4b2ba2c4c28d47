//! This node's live WebSocket connections and the fan-out of one encoded frame to them.
//!
//! Maps are sharded ([`DashMap`]) so no single lock is taken per message: a topic delivery reads
//! one topic's shard, a broadcast walks the connection shards one after another. A delivery hands
//! every recipient's [`Outlet`] a clone of the same [`Frame`] (a reference-count bump, no copy);
//! once all have it, each recipient's frames are written straight to its socket. A socket whose
//! bounded backlog is full is closed (4008) instead of slowing anyone else.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use dashmap::DashMap;

use crate::{
    delivery::{CloseReason, Frame, Outlet, PendingWrites, Writer},
    store::{ClientId, TopicSet},
};

pub type ConnId = u64;

/// Who a delivery is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every connected socket.
    Broadcast,
    /// Every socket of every client subscribed to the topic.
    Topic(String),
}

#[derive(Default)]
struct LocalClient {
    /// The client's live connections here and their outlets.
    conns: Vec<(ConnId, Arc<Outlet>)>,
    topics: TopicSet,
    /// Bumped by every subscription change applied here; see [`Hub::sync_topics`].
    generation: u64,
}

/// Counters of this node's hub.
#[derive(Debug, Default)]
pub struct HubStats {
    pub deliveries: AtomicU64,
    /// Connections closed because they did not keep up.
    pub slow_consumer_closes: AtomicU64,
}

/// This node's live connections. Lock order where two maps are touched: `clients`, then
/// `topics`, then `conns`; fan-out holds one shard at a time and never waits while holding it.
pub struct Hub {
    /// Every live connection's outlet, for broadcasts.
    conns: DashMap<ConnId, Arc<Outlet>>,
    /// Clients with at least one live connection here, with their subscriptions.
    clients: DashMap<ClientId, LocalClient>,
    /// Topic to the outlets of the live connections subscribed to it.
    topics: DashMap<String, HashMap<ConnId, Arc<Outlet>>>,
    next_conn_id: AtomicU64,
    /// Writes deliveries out; none outside a runtime (they are then written where made).
    writer: Option<Writer>,
    pub stats: HubStats,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

impl Hub {
    /// An empty hub; its writer task starts on the current runtime (none outside one).
    pub fn new() -> Self {
        Hub {
            conns: DashMap::new(),
            clients: DashMap::new(),
            topics: DashMap::new(),
            next_conn_id: AtomicU64::new(1),
            writer: tokio::runtime::Handle::try_current().is_ok().then(Writer::start),
            stats: HubStats::default(),
        }
    }

    /// Adds a connection of `client` writing through `outlet`; it receives broadcasts at once
    /// and the client's topics once [`sync_topics`](Self::sync_topics) has set them. Returns the
    /// connection's id and the generation to pass to `sync_topics`.
    pub fn attach(&self, client: ClientId, outlet: Arc<Outlet>) -> (ConnId, u64) {
        let id = self.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let mut local = self.clients.entry(client).or_default();
        for topic in &local.topics {
            self.topics.entry(topic.clone()).or_default().insert(id, outlet.clone());
        }
        local.conns.push((id, outlet.clone()));
        let generation = local.generation;
        drop(local);
        self.conns.insert(id, outlet);
        (id, generation)
    }

    /// Sets the client's topics to `stored` (read from the store after `generation` was taken),
    /// unless a subscription change was applied here meanwhile: then `stored` may be stale and
    /// `Err` carries the generation to read again with. Reading the store only after attaching
    /// means no change can slip between the read and the socket joining the hub. Returns the
    /// client's topics, sorted.
    pub fn sync_topics(
        &self,
        client: ClientId,
        generation: u64,
        stored: Vec<String>,
    ) -> Result<Vec<String>, u64> {
        let Some(mut local) = self.clients.get_mut(&client) else {
            return Ok(Vec::new());
        };
        if local.generation != generation {
            return Err(local.generation);
        }
        let stored = TopicSet::from(stored);
        for topic in local.topics.iter().filter(|topic| !stored.contains(topic)) {
            for (conn, _) in &local.conns {
                self.remove_from_topic(topic, *conn);
            }
        }
        for topic in stored.iter().filter(|topic| !local.topics.contains(topic)) {
            let mut subscribers = self.topics.entry(topic.clone()).or_default();
            for (conn, outlet) in &local.conns {
                subscribers.insert(*conn, outlet.clone());
            }
        }
        local.topics = stored;
        Ok(local.topics.to_vec())
    }

    /// Removes connection `conn` of `client`, which ended; it takes no delivery from now on.
    /// Safe to call for one already removed.
    pub fn detach(&self, client: ClientId, conn: ConnId) {
        if let Some((_, outlet)) = self.conns.remove(&conn) {
            outlet.seal();
        }
        if let dashmap::Entry::Occupied(mut local) = self.clients.entry(client) {
            local.get_mut().conns.retain(|(id, _)| *id != conn);
            for topic in &local.get().topics {
                self.remove_from_topic(topic, conn);
            }
            if local.get().conns.is_empty() {
                local.remove();
            }
        }
    }

    fn remove_from_topic(&self, topic: &str, conn: ConnId) {
        if let dashmap::Entry::Occupied(mut subscribers) = self.topics.entry(topic.to_owned()) {
            subscribers.get_mut().remove(&conn);
            if subscribers.get().is_empty() {
                subscribers.remove();
            }
        }
    }

    /// Fans `frame` out to the target's live connections here and has it written without
    /// waiting (deliveries from other nodes); returns how many took it.
    pub fn deliver(&self, target: &Target, frame: &Frame) -> usize {
        let mut pending = PendingWrites::default();
        let delivered = self.deliver_into(target, frame, &mut pending);
        match &self.writer {
            Some(writer) => writer.write_later(pending),
            None => drop(pending),
        }
        delivered
    }

    /// Fans `frame` out to the target's live connections here and resolves once it is written
    /// (or waits in the backlog of a socket that pushed back); returns how many took it.
    pub async fn deliver_written(&self, target: &Target, frame: &Frame) -> usize {
        let mut pending = PendingWrites::default();
        let delivered = self.deliver_into(target, frame, &mut pending);
        match &self.writer {
            Some(writer) if delivered > 0 => writer.write(pending).await,
            _ => drop(pending),
        }
        delivered
    }

    /// Hands `frame` to the target's live connections here; what can be written directly is
    /// written with `pending`. Returns how many took it.
    fn deliver_into(&self, target: &Target, frame: &Frame, pending: &mut PendingWrites) -> usize {
        let delivered = match target {
            Target::Broadcast => {
                self.conns.iter().filter(|outlet| outlet.offer(frame, pending)).count()
            }
            Target::Topic(topic) => match self.topics.get(topic) {
                Some(subscribers) => {
                    subscribers.values().filter(|outlet| outlet.offer(frame, pending)).count()
                }
                None => 0,
            },
        };
        self.stats.deliveries.fetch_add(delivered as u64, Ordering::Relaxed);
        delivered
    }

    /// The client subscribed to `topics`: its live connections here start receiving them.
    pub fn subscribed(&self, client: ClientId, topics: &[String]) {
        let Some(mut local) = self.clients.get_mut(&client) else {
            return;
        };
        local.generation += 1;
        for topic in topics {
            if local.topics.insert(topic) {
                let mut subscribers = self.topics.entry(topic.clone()).or_default();
                for (conn, outlet) in &local.conns {
                    subscribers.insert(*conn, outlet.clone());
                }
            }
        }
    }

    /// The client unsubscribed from `topics`.
    pub fn unsubscribed(&self, client: ClientId, topics: &[String]) {
        let Some(mut local) = self.clients.get_mut(&client) else {
            return;
        };
        local.generation += 1;
        for topic in topics {
            if local.topics.remove(topic) {
                for (conn, _) in &local.conns {
                    self.remove_from_topic(topic, *conn);
                }
            }
        }
    }

    /// The client was unregistered: close its connections here with 4001; returns how many.
    pub fn unregistered(&self, client: ClientId) -> usize {
        let Some((_, local)) = self.clients.remove(&client) else {
            return 0;
        };
        for (conn, outlet) in &local.conns {
            for topic in &local.topics {
                self.remove_from_topic(topic, *conn);
            }
            self.conns.remove(conn);
            outlet.seal();
            outlet.close(CloseReason::Unregistered);
        }
        local.conns.len()
    }

    /// The outlets of the live connections whose id is `slice` modulo `slices`.
    pub fn outlets(&self, slice: u64, slices: u64) -> Vec<Arc<Outlet>> {
        crate::delivery::outlets_in_slice(&self.conns, slice, slices, |outlet| outlet)
    }

    /// The topic was deleted: nobody here receives it any more.
    pub fn topic_deleted(&self, topic: &str) {
        self.topics.remove(topic);
        for mut local in self.clients.iter_mut() {
            if local.topics.remove(topic) {
                local.generation += 1;
            }
        }
    }

    /// Whether the client has a live connection on this node.
    pub fn has_client(&self, client: ClientId) -> bool {
        self.clients.contains_key(&client)
    }

    /// The clients with a live connection here.
    pub fn client_ids(&self) -> Vec<ClientId> {
        self.clients.iter().map(|entry| *entry.key()).collect()
    }

    /// Whether a live connection here is subscribed to the topic.
    pub fn has_topic(&self, topic: &str) -> bool {
        self.topics.contains_key(topic)
    }

    /// The topics live connections here are subscribed to.
    pub fn topic_names(&self) -> Vec<String> {
        self.topics.iter().map(|entry| entry.key().clone()).collect()
    }

    /// Live connections on this node.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Clients with at least one live connection on this node.
    pub fn connected_client_count(&self) -> usize {
        self.clients.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::Owner;
    use uuid::Uuid;

    fn frame(text: &str) -> Frame {
        Frame::text(text)
    }

    /// An outlet with no socket (nothing is written) holding at most `bound` frames.
    fn outlet(bound: usize) -> Arc<Outlet> {
        Outlet::new(None, Arc::new(Owner::default()), bound)
    }

    #[tokio::test]
    async fn topic_delivery_reaches_only_subscribers_and_every_socket_of_a_client() {
        let hub = Hub::new();
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let (a1, a2, b) = (outlet(8), outlet(8), outlet(8));
        let (_, generation) = hub.attach(alice, a1.clone());
        let synced = hub.sync_topics(alice, generation, vec!["news".into()]);
        assert_eq!(synced, Ok(vec!["news".into()]));
        hub.attach(alice, a2.clone());
        hub.attach(bob, b.clone());
        assert_eq!(hub.deliver(&Target::Topic("news".into()), &frame("n1")), 2);
        assert_eq!(a1.take_waiting(), [b"n1"]);
        assert_eq!(a2.take_waiting(), [b"n1"]);
        assert!(b.take_waiting().is_empty());
        hub.subscribed(bob, &["news".into()]);
        assert_eq!(hub.deliver(&Target::Topic("news".into()), &frame("n2")), 3);
        hub.unsubscribed(alice, &["news".into()]);
        assert_eq!(hub.deliver(&Target::Topic("news".into()), &frame("n3")), 1);
        assert_eq!(hub.deliver(&Target::Broadcast, &frame("all")), 3);
        assert_eq!(b.take_waiting(), [&b"n2"[..], b"n3", b"all"]);
    }

    #[tokio::test]
    async fn a_change_during_the_store_read_makes_the_read_retry() {
        let hub = Hub::new();
        let client = Uuid::new_v4();
        let conn = outlet(4);
        let (_, generation) = hub.attach(client, conn.clone());
        // The store was read (no topics) just before an HTTP subscribe reached this hub.
        hub.subscribed(client, &["news".into()]);
        let retry = hub.sync_topics(client, generation, vec![]).unwrap_err();
        let synced = hub.sync_topics(client, retry, vec!["news".into()]);
        assert_eq!(synced, Ok(vec!["news".into()]));
        assert_eq!(hub.deliver(&Target::Topic("news".into()), &frame("n")), 1);
        assert_eq!(conn.take_waiting(), [b"n"]);
        // A later read says unsubscribed: the socket stops receiving.
        assert_eq!(hub.sync_topics(client, retry, vec![]), Ok(vec![]));
        assert_eq!(hub.deliver(&Target::Topic("news".into()), &frame("n")), 0);
    }

    #[tokio::test]
    async fn a_full_backlog_closes_that_connection_only() {
        let hub = Hub::new();
        let (slow, fast) = (outlet(2), outlet(2));
        hub.attach(Uuid::new_v4(), slow.clone());
        hub.attach(Uuid::new_v4(), fast.clone());
        for i in 0..3 {
            hub.deliver(&Target::Broadcast, &frame(&i.to_string()));
            fast.take_waiting();
        }
        assert_eq!(slow.close_reason(), Some(CloseReason::SlowConsumer));
        assert_eq!(fast.close_reason(), None);
        assert_eq!(slow.take_waiting(), [b"0", b"1"]);
    }

    #[tokio::test]
    async fn publishers_wait_once_the_writer_is_a_full_queue_behind() {
        use crate::delivery::WRITER_QUEUE;
        use futures_util::FutureExt;

        let hub = Hub::new();
        // Not open, so nothing is for the writer to write; each delivery still takes a place
        // in its queue, or publishers would run ahead of it without bound.
        let conn = outlet(4 * WRITER_QUEUE);
        hub.attach(Uuid::new_v4(), conn.clone());
        // One thread, and no await yet: the writer task has not run.
        for i in 0..WRITER_QUEUE {
            let message = frame(&i.to_string());
            let delivered = hub.deliver_written(&Target::Broadcast, &message);
            assert_eq!(delivered.now_or_never(), Some(1), "delivery {i} found room");
        }
        let message = frame("over");
        let mut over = std::pin::pin!(hub.deliver_written(&Target::Broadcast, &message));
        assert_eq!((&mut over).now_or_never(), None, "one more waits for the writer");
        assert_eq!(over.await, 1);
        assert_eq!(conn.take_waiting().len(), WRITER_QUEUE + 1);
    }

    #[tokio::test]
    async fn unregister_and_detach_leave_no_trace() {
        let hub = Hub::new();
        let client = Uuid::new_v4();
        let (o1, o2) = (outlet(4), outlet(4));
        let (c1, generation) = hub.attach(client, o1.clone());
        let (c2, _) = hub.attach(client, o2.clone());
        assert!(hub.sync_topics(client, generation, vec!["t".into()]).is_ok());
        assert_eq!(hub.unregistered(client), 2);
        assert_eq!(o1.close_reason(), Some(CloseReason::Unregistered));
        hub.detach(client, c1);
        hub.detach(client, c2);
        assert_eq!((hub.connection_count(), hub.connected_client_count()), (0, 0));
        assert!(hub.topics.is_empty());

        // A detached connection takes nothing more, even from a fan-out that still holds it.
        assert!(!o1.offer(&frame("late"), &mut PendingWrites::default()));
    }
}
