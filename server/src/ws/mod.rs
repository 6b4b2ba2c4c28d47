//! The inbound WebSocket transport of client connections (`GET /ws/{id}`) and relay peers
//! (`GET /relay/{id}`): each checks its request before upgrading and answers the handshake
//! itself, so the connection runs on the raw upgraded socket: it reads and decodes the peer's
//! frames itself (no read buffer while idle) and writes through the socket's
//! [`Outlet`](crate::delivery::Outlet).

mod connection;
mod decode;
mod relay_peer;
mod socket;

pub use relay_peer::upgrade as relay_upgrade;

use std::sync::Arc;

use poem::{
    Request, Response, handler,
    web::{Data, Path},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

use crate::{error::AppError, listener::DirectSockets, node::Node};

/// What every connection task needs besides the node.
#[derive(Clone)]
pub struct WsSettings {
    pub max_message_bytes: usize,
    /// Cancelled at shutdown: every connection closes with 1001 (see
    /// [`keep_alive`](crate::delivery::keep_alive)).
    pub shutdown: CancellationToken,
    /// Tracks connection tasks so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// The raw sockets of plain-TCP connections (none with TLS), for direct writes.
    pub direct_sockets: Option<Arc<DirectSockets>>,
}

/// `GET /ws/:id`: upgrades only for a registered id (403 otherwise, before the upgrade).
#[handler]
pub async fn upgrade(
    req: &Request,
    Path(id): Path<String>,
    node: Data<&Arc<Node>>,
    settings: Data<&WsSettings>,
) -> poem::Result<Response> {
    socket::handshake_key(req)?;
    let id = Uuid::parse_str(&id).map_err(|_| AppError::Forbidden("unknown client id"))?;
    let client = node
        .store
        .client(id)
        .await
        .map_err(|err| AppError::from(err).unknown_client_forbidden())?;
    let (node, shutdown) = (Arc::clone(&node), settings.shutdown.clone());
    socket::accept(req, &settings, move |upgrade| connection::run(node, client, upgrade, shutdown))
}
