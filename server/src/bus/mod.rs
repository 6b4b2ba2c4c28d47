//! The bus carries events between the nodes of a cluster: deliveries and the control events that
//! change which local sockets receive what.
//!
//! A node applies every event to its own [`Hub`](crate::hub::Hub) first (local clients never wait
//! for a round trip) and then announces it on the bus; each other node applies what it hears. So
//! the bus of a lone node, [`SingleNodeBus`], has nobody to tell; [`RedisBus`] tells the nodes
//! that share a Redis.

mod redis;

use async_trait::async_trait;

pub use self::redis::RedisBus;

use crate::{
    hub::{Frame, Target},
    store::ClientId,
};

/// Something every node must apply to its hub.
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

/// Announces events to the other nodes of the cluster and hears theirs.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Sends the event to every other node; they apply it to their hubs. A control event (all
    /// but `Deliver`) returns once every other node has applied it, with the number of sockets
    /// they closed.
    async fn announce(&self, event: Event) -> Result<usize, BusError>;

    /// Makes this node hear deliveries to these topics (it now has sockets subscribed to them);
    /// returns once it does.
    async fn listen(&self, topics: &[String]) -> Result<(), BusError>;

    /// Sends a relay message to one node (see [`crate::relay`]); false when that node does not
    /// listen (it is gone).
    async fn relay(&self, node: uuid::Uuid, message: Vec<u8>) -> Result<bool, BusError>;

    /// Whether events can cross nodes now.
    fn check(&self) -> Result<(), BusError>;

    /// This node's cluster membership; `None` for a node alone.
    fn membership(&self) -> Option<Membership> {
        None
    }
}

/// A cluster member's view of its bus, for `/stats`.
#[derive(Debug, Clone, Copy)]
pub struct Membership {
    pub node_id: uuid::Uuid,
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

    async fn relay(&self, _node: uuid::Uuid, _message: Vec<u8>) -> Result<bool, BusError> {
        Ok(false)
    }

    fn check(&self) -> Result<(), BusError> {
        Ok(())
    }
}
