//! The WebSocket transport: `GET /ws/{id}` checks the id before upgrading and answers the
//! handshake itself, so the connection runs on the raw upgraded socket: tokio-tungstenite reads
//! and sends control frames, while deliveries go out as [`Frame`]s encoded once for every
//! recipient (poem's own WebSocket type would copy each payload per recipient).

mod connection;
mod frame;

pub use frame::Frame;

use std::{sync::Arc, time::Duration};

use poem::{
    Request, Response, handler,
    http::{HeaderMap, StatusCode, header},
    web::{Data, Path},
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{handshake::derive_accept_key, protocol::Role, protocol::WebSocketConfig},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

use crate::{error::AppError, node::Node};

/// What every connection task needs besides the node.
#[derive(Clone)]
pub struct WsSettings {
    pub ping_interval: Duration,
    pub max_message_bytes: usize,
    /// Cancelled at shutdown: every connection closes with 1001.
    pub shutdown: CancellationToken,
    /// Tracks connection tasks so shutdown can wait for them.
    pub tasks: TaskTracker,
}

impl WsSettings {
    fn socket_config(&self) -> WebSocketConfig {
        // Small buffers: idle connections must stay cheap. Limits apply to the whole message and
        // to each frame, so an oversize message is refused before it is buffered.
        WebSocketConfig::default()
            .read_buffer_size(1024)
            .write_buffer_size(8 * 1024)
            .max_message_size(Some(self.max_message_bytes))
            .max_frame_size(Some(self.max_message_bytes))
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
    let key = handshake_key(req.headers())
        .ok_or_else(|| AppError::BadRequest("not a WebSocket upgrade request".into()))?;
    let id = Uuid::parse_str(&id).map_err(|_| AppError::Forbidden("unknown client id"))?;
    let client = node
        .store
        .client(id)
        .await
        .map_err(|err| AppError::from(err).unknown_client_forbidden())?;
    let on_upgrade =
        req.take_upgrade().map_err(|err| AppError::BadRequest(format!("cannot upgrade: {err}")))?;

    let node = Arc::clone(&node);
    let settings = settings.clone();
    settings.tasks.clone().spawn(async move {
        match on_upgrade.await {
            Ok(io) => {
                let socket = WebSocketStream::from_raw_socket(
                    io,
                    Role::Server,
                    Some(settings.socket_config()),
                )
                .await;
                connection::run(node, client, socket, settings).await;
            }
            Err(err) => tracing::debug!(%err, "WebSocket upgrade failed"),
        }
    });

    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, derive_accept_key(key.as_bytes()))
        .finish())
}

/// The Sec-WebSocket-Key of a valid version-13 upgrade request (RFC 6455 4.2.1).
fn handshake_key(headers: &HeaderMap) -> Option<&str> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .any(|value| value.split(',').any(|part| part.trim().eq_ignore_ascii_case(token)))
    };
    let version_13 = headers.get(header::SEC_WEBSOCKET_VERSION).is_some_and(|v| v == "13");
    if !(has_token(header::UPGRADE, "websocket")
        && has_token(header::CONNECTION, "upgrade")
        && version_13)
    {
        return None;
    }
    headers.get(header::SEC_WEBSOCKET_KEY)?.to_str().ok()
}
