//! The bus carries events between the nodes of a cluster: deliveries and the control events that
//! change which local sockets receive what.
//!
//! A node applies every event to its own sockets first (local clients never wait for a round
//! trip) and then announces it on the bus; each other node applies what it hears, through the
//! [`BusHandler`] its node registered (as centrifuge's broker calls its node back through
//! `BrokerEventHandler`), so the bus never names the node. The bus of a lone node,
//! [`SingleNodeBus`], has nobody to tell; [`RedisBus`] tells the nodes that share a Redis.

mod redis;
mod wire;

use async_trait::async_trait;
use uuid::Uuid;

pub use self::redis::RedisBus;

use crate::{delivery::Frame, hub::Target, store::ClientId};

/// Something every node must apply to its sockets.
#[derive(Debug, Clone)]
pub enum Event {
    /// Deliver an encoded frame to the target's sockets.
    Deliver { target: Target, frame: Frame },
    /// A client subscribed to topics.
    Subscribed { client: ClientId, topics: Vec<String> },
    /// A client unsubscribed from topics.
    Unsubscribed { client: ClientId, topics: Vec<String> },
    /// A client was unregistered: its sockets close with 4001.
    Unregistered { client: ClientId },
    /// A topic was deleted.
    TopicDeleted { topic: String },
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    #[error("the bus is unavailable: {0}")]
    Unavailable(String),
}

/// What applying an event did on one node.
#[derive(Debug, Default)]
pub struct Applied {
    /// Sockets it reached (a delivery) or closed (an unregistration).
    pub sockets: usize,
    /// Topics sockets here now subscribe to: the node must hear their deliveries before the
    /// event counts as applied.
    pub topics_to_hear: Vec<String>,
}

/// Announces events to the other nodes of the cluster and hears theirs.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Sends the event to every other node; they apply it to their sockets. A control event (all
    /// but `Deliver`) returns once every other node has applied it, with the number of sockets
    /// they closed.
    async fn announce(&self, event: Event) -> Result<usize, BusError>;

    /// Makes this node hear deliveries to these topics (it now has sockets subscribed to them);
    /// returns once it does.
    async fn listen(&self, topics: &[String]) -> Result<(), BusError>;

    /// Sends a relay message to one node (see [`crate::relay`]); false when that node does not
    /// listen (it is gone).
    async fn relay(&self, node: Uuid, message: Vec<u8>) -> Result<bool, BusError>;

    /// Whether events can cross nodes now.
    fn check(&self) -> Result<(), BusError>;

    /// This node's cluster membership; `None` for a node alone.
    fn membership(&self) -> Option<Membership> {
        None
    }
}

/// What a bus asks of the node it serves: the node implements it, the bus calls it.
#[async_trait]
pub trait BusHandler: Send + Sync + 'static {
    /// Applies an event another node announced.
    fn apply(&self, event: &Event) -> Applied;

    /// The topics sockets here are subscribed to (the bus hears their deliveries).
    fn topics_heard(&self) -> Vec<String>;

    /// Whether a socket here is subscribed to `topic`.
    fn hears_topic(&self, topic: &str) -> bool;

    /// A relay message from a peer on node `origin` for a relay peer here.
    fn relay_message(&self, origin: Uuid, message: &[u8]);

    /// The bus (re)connected to a Redis that may have come back empty: restores what this node
    /// needs there (the configured topics; its sockets belong to registered clients; its
    /// waiting relay peers wait again).
    async fn rejoined(&self) -> Result<(), BusError>;
}

/// A cluster member's view of its bus, for `/stats`.
#[derive(Debug, Clone, Copy)]
pub struct Membership {
    pub node_id: Uuid,
    pub connected: bool,
    /// Pub/sub connections lost and made again since start.
    pub reconnects: u64,
}

/// The bus of a node that runs alone: there are no other nodes to tell.
#[derive(Debug, Default)]
pub struct SingleNodeBus;

#[async_trait]
impl Bus for SingleNodeBus {
    async fn announce(&self, _event: Event) -> Result<usize, BusError> {
        Ok(0)
    }

    async fn listen(&self, _topics: &[String]) -> Result<(), BusError> {
        Ok(())
    }

    async fn relay(&self, _node: Uuid, _message: Vec<u8>) -> Result<bool, BusError> {
        Ok(false)
    }

    fn check(&self) -> Result<(), BusError> {
        Ok(())
    }
}
