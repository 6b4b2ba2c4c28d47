//! The inbound WebSocket transport of client connections (`GET /ws/{id}`) and relay peers
//! (`GET /relay/{id}`): each checks its request before upgrading and answers the handshake
//! itself, then takes the socket over from the HTTP stack. A plain-TCP socket goes to one of the
//! node's readiness loops ([`Loops`]), which read it when it is readable, so an idle one holds
//! no task; a TLS socket keeps a task that reads its stream. Either way a [`socket`] decides what
//! the peer's frames mean and writes through the socket's [`Outlet`](crate::delivery::Outlet).

mod connection;
mod decode;
mod event_loop;
mod relay_peer;
mod socket;
mod stream_task;
mod handshake;

pub use event_loop::Loops;
pub use relay_peer::upgrade as relay_upgrade;

use std::sync::Arc;

use poem::{
    Request, Response, handler,
    web::{Data, Path},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

use crate::{error::AppError, listener::DirectSockets, node::Node};

/// What sockets' sessions and their drivers need: the node, the tracker whose tasks shutdown
/// waits for, and the largest message a peer may send.
#[derive(Clone)]
pub struct Ctx {
    pub node: Arc<Node>,
    pub tasks: TaskTracker,
    pub max_message_bytes: usize,
}

/// What the WebSocket routes need besides the node.
#[derive(Clone)]
pub struct WsSettings {
    pub max_message_bytes: usize,
    /// Sockets this node holds at most (client and relay); a handshake past it answers 503.
    pub max_connections: usize,
    /// Frames that may wait for one socket before it is closed as a slow consumer.
    pub send_queue: usize,
    /// Cancelled at shutdown: every socket closes with 1001 (see
    /// [`keep_alive`](crate::delivery::keep_alive)).
    pub shutdown: CancellationToken,
    /// Tracks the tasks of sockets (upgrades, TLS sockets, sessions' jobs, the loops) so
    /// shutdown can wait for them.
    pub tasks: TaskTracker,
    /// The raw sockets of plain-TCP connections (none with TLS).
    pub direct_sockets: Option<Arc<DirectSockets>>,
    /// The readiness loops that serve plain-TCP sockets (none with TLS).
    pub loops: Option<Arc<Loops>>,
}

/// Refuses (503) a handshake when the node holds its maximum of sockets. Checked before the
/// upgrade, so a refused client gets an answer it can read; handshakes racing for the last
/// place may pass it together, by at most their number.
pub(crate) fn room_for_a_socket(node: &Node, settings: &WsSettings) -> Result<(), AppError> {
    let held = node.hub.connection_count() + node.relay.peer_count();
    if held >= settings.max_connections {
        let max = settings.max_connections;
        return Err(AppError::Unavailable(format!(
            "this node holds its maximum of {max} connections; try again later or another node"
        )));
    }
    Ok(())
}

impl WsSettings {
    /// The context of the sockets of `node`.
    pub fn ctx(&self, node: &Arc<Node>) -> Ctx {
        let (node, tasks) = (node.clone(), self.tasks.clone());
        Ctx { node, tasks, max_message_bytes: self.max_message_bytes }
    }
}

/// `GET /ws/:id`: upgrades only for a registered id (403 otherwise, before the upgrade).
#[handler]
pub async fn upgrade(
    req: &Request,
    Path(id): Path<String>,
    node: Data<&Arc<Node>>,
    settings: Data<&WsSettings>,
) -> poem::Result<Response> {
    handshake::handshake_key(req)?;
    room_for_a_socket(&node, &settings)?;
    let id = Uuid::parse_str(&id).map_err(|_| AppError::Forbidden("unknown client id"))?;
    let client = node
        .store
        .client(id)
        .await
        .map_err(|err| AppError::from(err).unknown_client_forbidden())?;
    let ctx = settings.ctx(&node);
    let settings = settings.clone();
    handshake::accept(req, &settings.clone(), move |upgraded| {
        connection::serve(ctx, client, upgraded, settings)
    })
}
