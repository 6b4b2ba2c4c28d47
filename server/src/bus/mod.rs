//! The bus carries events between the nodes of a cluster: deliveries and the control events that
//! change which local sockets receive what.
//!
//! A node applies every event to its own [`Hub`](crate::hub::Hub) first (local clients never wait
//! for a round trip) and then announces it on the bus; each other node applies what it hears. So
//! the bus of a lone node, [`SingleNodeBus`], has nobody to tell. A Redis pub/sub bus slots in
//! behind the same trait.

use async_trait::async_trait;

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

/// Announces events to the other nodes of the cluster.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Sends the event to every other node; they apply it to their hubs.
    async fn announce(&self, event: Event) -> Result<(), BusError>;
}

/// The bus of a node that runs alone: there are no other nodes to tell.
#[derive(Debug, Default)]
pub struct SingleNodeBus;

#[async_trait]
impl Bus for SingleNodeBus {
    async fn announce(&self, _event: Event) -> Result<(), BusError> {
        Ok(())
    }
}
