//! Relay mode's registry: the relay peers on this node, their rendezvous by id (in the store, so
//! peers on different nodes meet), and the items peers send each other, directly when the
//! partner is here and over the bus to its node otherwise. The socket side is
//! `ws::relay_peer`.
//!
//! Every item a peer receives goes through its one bounded inbox, in order: being paired, its
//! partner's frames, its partner leaving. A peer only ever tells its partner things, never waits
//! for it, so a full inbox closes that peer (4008) and its partner learns `/remote:close`. An
//! item that finds the inbox empty calls the peer socket's owner, which has the peer's session
//! work through the inbox; an idle peer has no task.

use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use dashmap::DashMap;
use parking_lot::Mutex;
use uuid::Uuid;

use crate::{
    auth::Keys,
    bus::{Bus, BusError},
    delivery::{CloseReason, Frame, Outlet},
    store::{PeerAddr, Store, StoreError},
};

/// What one peer tells another.
#[derive(Debug, Clone)]
pub enum RelayItem {
    /// `from` took this waiting peer as its partner.
    Paired { from: PeerAddr },
    /// `from`, the partner, left.
    RemoteClosed { from: PeerAddr },
    /// A frame `from` sent, ready for this peer's socket.
    Data { from: PeerAddr, frame: Frame },
    /// The store may have lost who waits (Redis came back): a waiting peer waits again.
    Rejoin,
}

/// How far an item got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Queued for the peer.
    Delivered,
    /// The peer is gone or closing; when it had a partner, it tells it so itself.
    Refused,
    /// No node of that id listens any more: nobody will answer for the peer.
    NodeGone,
}

/// This node's relay peers.
pub struct Relay {
    node_id: Uuid,
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    peers: DashMap<u64, Arc<PeerHandle>>,
    next_peer: AtomicU64,
    queue_bound: usize,
    /// Keys accepted in `?key=`; none: the relay is open.
    keys: Keys,
    pub stats: RelayStats,
}

/// Counters of this node's relay.
#[derive(Debug, Default)]
pub struct RelayStats {
    pub relayed_frames: AtomicU64,
    /// Relay peers closed because they did not keep up.
    pub slow_consumer_closes: AtomicU64,
}

/// The registry's side of one relay peer: where it is, its inbox, and its socket's writes.
pub struct PeerHandle {
    pub addr: PeerAddr,
    pub outlet: Arc<Outlet>,
    inbox: Mutex<Inbox>,
}

#[derive(Default)]
struct Inbox {
    items: VecDeque<RelayItem>,
    /// The peer left: items are refused.
    closed: bool,
}

impl PeerHandle {
    /// Queues `item` without waiting, calling the peer's owner when the inbox was empty; false
    /// when the peer left, or its inbox holds `bound` items (its socket is then closed).
    fn offer(&self, item: RelayItem, bound: usize) -> bool {
        let mut inbox = self.inbox.lock();
        if inbox.closed {
            return false;
        }
        if inbox.items.len() >= bound {
            self.outlet.close(CloseReason::SlowConsumer);
            return false;
        }
        inbox.items.push_back(item);
        if inbox.items.len() == 1 {
            self.outlet.call_for_work();
        }
        true
    }

    /// Whether items wait.
    pub fn has_items(&self) -> bool {
        !self.inbox.lock().items.is_empty()
    }

    /// The items that wait, in order.
    pub fn take_items(&self) -> VecDeque<RelayItem> {
        std::mem::take(&mut self.inbox.lock().items)
    }

    /// Refuses items from now on; returns those that waited.
    pub fn close_inbox(&self) -> VecDeque<RelayItem> {
        let mut inbox = self.inbox.lock();
        inbox.closed = true;
        std::mem::take(&mut inbox.items)
    }
}

/// The kinds of cross-node relay messages (the first byte of one).
const KIND_PAIRED: u8 = 1;
const KIND_REMOTE_CLOSED: u8 = 2;
const KIND_TEXT: u8 = 3;
const KIND_BINARY: u8 = 4;
/// Kind, receiving peer, sending peer (its node is the bus envelope's sender).
const MESSAGE_HEADER_LEN: usize = 1 + 8 + 8;

impl Relay {
    pub fn new(
        node_id: Uuid,
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        queue_bound: usize,
        keys: Keys,
    ) -> Self {
        Relay {
            node_id,
            store,
            bus,
            peers: DashMap::new(),
            next_peer: AtomicU64::new(1),
            queue_bound,
            keys,
            stats: RelayStats::default(),
        }
    }

    /// Whether `key` opens the relay: any key when none is configured.
    pub fn key_is_valid(&self, key: Option<&str>) -> bool {
        self.keys.is_empty() || self.keys.accepts(key)
    }

    /// A new peer here, writing through `outlet`.
    pub fn attach(&self, outlet: Arc<Outlet>) -> Arc<PeerHandle> {
        let peer = self.next_peer.fetch_add(1, Ordering::Relaxed);
        let addr = PeerAddr { node: self.node_id, peer };
        let handle = Arc::new(PeerHandle { addr, outlet, inbox: Mutex::default() });
        self.peers.insert(peer, handle.clone());
        handle
    }

    /// Removes a peer that ended; items sent to it from now on are refused.
    pub fn detach(&self, peer: &PeerHandle) {
        self.peers.remove(&peer.addr.peer);
    }

    /// The outlets of the peers here whose number is `slice` modulo `slices`.
    pub fn outlets(&self, slice: u64, slices: u64) -> Vec<Arc<Outlet>> {
        crate::delivery::outlets_in_slice(&self.peers, slice, slices, |peer| &peer.outlet)
    }

    /// Relay peers connected here.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// See [`Store::relay_meet`].
    pub async fn meet(&self, id: &str, me: PeerAddr) -> Result<Option<PeerAddr>, StoreError> {
        self.store.relay_meet(id, me).await
    }

    /// See [`Store::relay_leave`].
    pub async fn leave(&self, id: &str, me: PeerAddr) -> Result<bool, StoreError> {
        self.store.relay_leave(id, me).await
    }

    /// Gives `item` to the peer at `to`, here or on its node; never waits for the peer.
    pub async fn send(&self, to: PeerAddr, item: RelayItem) -> Result<Reach, BusError> {
        if matches!(item, RelayItem::Data { .. }) {
            self.stats.relayed_frames.fetch_add(1, Ordering::Relaxed);
        }
        if to.node == self.node_id {
            return Ok(self.deliver(to.peer, item));
        }
        let Some(message) = encode(to.peer, &item) else {
            return Ok(Reach::Delivered);
        };
        Ok(if self.bus.relay(to.node, message).await? { Reach::Delivered } else { Reach::NodeGone })
    }

    fn deliver(&self, peer: u64, item: RelayItem) -> Reach {
        let Some(handle) = self.peers.get(&peer).map(|handle| handle.clone()) else {
            return Reach::Refused;
        };
        if handle.offer(item, self.queue_bound) { Reach::Delivered } else { Reach::Refused }
    }

    /// A relay message from another node's peer. A pairing that reaches no peer here is
    /// answered with `RemoteClosed`, so the peer that paired does not wait for a ghost.
    pub fn receive(self: &Arc<Self>, origin: Uuid, message: &[u8]) {
        let Some((to, item)) = decode(origin, message) else {
            tracing::warn!("dropped a malformed relay message");
            return;
        };
        let paired_by = match item {
            RelayItem::Paired { from } => Some(from),
            _ => None,
        };
        if self.deliver(to, item) != Reach::Delivered
            && let Some(partner) = paired_by
        {
            let relay = self.clone();
            let me = PeerAddr { node: self.node_id, peer: to };
            tokio::spawn(async move {
                if let Err(err) = relay.send(partner, RelayItem::RemoteClosed { from: me }).await {
                    tracing::debug!(%err, "cannot refuse a pairing");
                }
            });
        }
    }

    /// Every waiting peer here waits again (after the store may have lost the waiting list).
    pub fn rejoin(&self) {
        for peer in self.peers.iter() {
            peer.offer(RelayItem::Rejoin, self.queue_bound);
        }
    }
}

/// The cross-node form of an item for peer `to`: kind, `to`, sending peer, payload. `Rejoin`
/// never crosses nodes.
fn encode(to: u64, item: &RelayItem) -> Option<Vec<u8>> {
    let (kind, from, payload): (u8, &PeerAddr, &[u8]) = match item {
        RelayItem::Paired { from } => (KIND_PAIRED, from, &[]),
        RelayItem::RemoteClosed { from } => (KIND_REMOTE_CLOSED, from, &[]),
        RelayItem::Data { from, frame } => {
            (if frame.is_text() { KIND_TEXT } else { KIND_BINARY }, from, frame.payload())
        }
        RelayItem::Rejoin => return None,
    };
    let mut message = Vec::with_capacity(MESSAGE_HEADER_LEN + payload.len());
    message.push(kind);
    message.extend_from_slice(&to.to_be_bytes());
    message.extend_from_slice(&from.peer.to_be_bytes());
    message.extend_from_slice(payload);
    Some(message)
}

/// The receiving peer and the item of a cross-node message sent by a peer on node `origin`.
fn decode(origin: Uuid, message: &[u8]) -> Option<(u64, RelayItem)> {
    let number = |at: usize| Some(u64::from_be_bytes(message.get(at..at + 8)?.try_into().ok()?));
    let (to, from) = (number(1)?, PeerAddr { node: origin, peer: number(9)? });
    let payload = message.get(MESSAGE_HEADER_LEN..)?;
    let item = match *message.first()? {
        KIND_PAIRED => RelayItem::Paired { from },
        KIND_REMOTE_CLOSED => RelayItem::RemoteClosed { from },
        KIND_TEXT => RelayItem::Data { from, frame: Frame::from_payload(payload) },
        KIND_BINARY => RelayItem::Data { from, frame: Frame::binary(payload) },
        _ => return None,
    };
    Some((to, item))
}

/// What a relay id may be, in words.
pub const ID_RULE: &str = "1-128 of A-Za-z0-9_.:-";
/// [`ID_RULE`] as a pattern (the OpenAPI spec).
pub const ID_PATTERN: &str = "^[A-Za-z0-9_.:-]{1,128}$";

/// Whether `id` names a relay rendezvous: [`ID_RULE`].
pub fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_messages_round_trip_and_junk_is_refused() {
        let origin = Uuid::new_v4();
        let from = PeerAddr { node: origin, peer: 7 };
        let text = RelayItem::Data { from, frame: Frame::from_payload(b"hello") };
        let binary = RelayItem::Data { from, frame: Frame::binary(&[0, 255, 1]) };
        for item in [RelayItem::Paired { from }, RelayItem::RemoteClosed { from }, text, binary] {
            let message = encode(42, &item).unwrap();
            let (to, decoded) = decode(origin, &message).unwrap();
            assert_eq!(to, 42);
            assert_eq!(format!("{decoded:?}"), format!("{item:?}"));
        }
        assert!(encode(1, &RelayItem::Rejoin).is_none());
        assert!(decode(origin, &[KIND_PAIRED, 0, 0]).is_none());
        assert!(decode(origin, &[9; MESSAGE_HEADER_LEN]).is_none());
    }

    #[test]
    fn ids() {
        assert!(valid_id("a") && valid_id("room:42_x.y-z") && valid_id(&"a".repeat(128)));
        assert!(!valid_id("") && !valid_id(&"a".repeat(129)) && !valid_id("a/b"));
        assert!(!valid_id("a b") && !valid_id("é"));
    }
}
