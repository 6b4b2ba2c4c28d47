//! What every server socket shares, client connections and relay peers alike: the handshake,
//! guarded and batched writes of shared frames, pings, and closing with the right code.

use std::{
    future::{Future, poll_fn},
    io,
    pin::pin,
    sync::Arc,
    task::Poll,
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use poem::{
    Request, Response, Upgraded,
    http::{HeaderMap, StatusCode, header},
};
use tokio::{
    net::TcpStream,
    time::{Instant, Interval, MissedTickBehavior, interval_at, sleep, timeout},
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Error as WsError, Message,
        handshake::derive_accept_key,
        protocol::{CloseFrame, Role, WebSocketConfig},
    },
};
use tokio_util::sync::CancellationToken;

use super::{
    Frame, WsSettings,
    outlet::{Outlet, OutletIo},
};
use crate::{
    error::AppError,
    hub::{CloseReason, SLOW_CONSUMER},
};
use switchboard_protocol::{CLOSE_PING_TIMEOUT, CLOSE_SLOW_CONSUMER};

/// A server socket: tungstenite reads it; every write goes through its [`Outlet`].
pub(super) type Socket = WebSocketStream<OutletIo>;

/// A write that cannot progress for this long means the peer stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long closing (our close frame out, the peer's answer in) may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) const GOING_AWAY: CloseReason =
    CloseReason { code: 1001, reason: "server shutting down" };
pub(super) const PING_TIMEOUT: CloseReason =
    CloseReason { code: CLOSE_PING_TIMEOUT, reason: "ping timeout" };

/// How a socket's task ends: closed by us with a reason, or already gone.
pub(super) enum End {
    Close(CloseReason),
    Gone,
}

/// An upgraded connection, before its socket is made.
pub(super) struct Upgrade {
    io: Upgraded,
    /// The raw socket under it, when it is plain TCP (see [`crate::listener`]).
    pub direct: Option<Arc<TcpStream>>,
    config: WebSocketConfig,
}

impl Upgrade {
    /// The socket, writing through `outlet`.
    pub async fn into_socket(self, outlet: Arc<Outlet>) -> Socket {
        let io = OutletIo::new(self.io, outlet);
        WebSocketStream::from_raw_socket(io, Role::Server, Some(self.config)).await
    }
}

/// Answers a valid WebSocket upgrade with 101 and runs `serve` on the upgraded connection as a
/// tracked task (shutdown waits for it). The caller has checked everything else first, so every
/// refusal is a plain HTTP answer.
pub(super) fn accept<F, Fut>(
    req: &Request,
    settings: &WsSettings,
    serve: F,
) -> poem::Result<Response>
where
    F: FnOnce(Upgrade) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let key = handshake_key(req)?;
    let accept_key = derive_accept_key(key.as_bytes());
    let on_upgrade =
        req.take_upgrade().map_err(|err| AppError::BadRequest(format!("cannot upgrade: {err}")))?;
    let direct = settings
        .direct_sockets
        .as_ref()
        .and_then(|sockets| sockets.find(req.local_addr(), req.remote_addr()));
    let config = settings.socket_config();
    settings.tasks.spawn(async move {
        match on_upgrade.await {
            Ok(io) => serve(Upgrade { io, direct, config }).await,
            Err(err) => tracing::debug!(%err, "WebSocket upgrade failed"),
        }
    });
    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept_key)
        .finish())
}

/// The Sec-WebSocket-Key of a valid version-13 upgrade request (RFC 6455 4.2.1); anything else
/// is a bad request. Handlers call it first, so a plain GET is told so before other checks.
pub(super) fn handshake_key(req: &Request) -> Result<&str, AppError> {
    valid_handshake_key(req.headers())
        .ok_or_else(|| AppError::BadRequest("not a WebSocket upgrade request".into()))
}

fn valid_handshake_key(headers: &HeaderMap) -> Option<&str> {
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

/// The ping timer of one socket: first tick one period from now, late ticks not bunched.
pub(super) fn ping_timer(period: Duration) -> Interval {
    let mut ping = interval_at(Instant::now() + period, period);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ping
}

/// Writes what waits in the socket's backlog unless the socket is told to close, the server
/// shuts down, or the writing stalls (the peer stopped reading: a slow consumer).
///
/// Almost every time the socket has room and this completes at once: then no timer is armed
/// and no cancellation token is waited on. Only a write that has to wait gets the guard, boxed,
/// so the guard takes no room in the task of every idle connection.
pub(super) async fn drain(socket: &mut Socket, shutdown: &CancellationToken) -> Result<(), End> {
    let io = socket.get_mut();
    let outlet = io.outlet().clone();
    let mut write = pin!(io.drain());
    let at_once = poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
    match at_once {
        Poll::Ready(result) => result.map_err(|_| End::Gone),
        Poll::Pending => Box::pin(guard(write, &outlet, shutdown)).await,
    }
}

async fn guard(
    write: impl Future<Output = io::Result<()>>,
    outlet: &Outlet,
    shutdown: &CancellationToken,
) -> Result<(), End> {
    tokio::select! {
        result = write => result.map_err(|_| End::Gone),
        reason = outlet.close.closing() => Err(End::Close(reason)),
        () = shutdown.cancelled() => Err(End::Close(GOING_AWAY)),
        () = sleep(WRITE_TIMEOUT) => {
            outlet.close_slow_consumer("write stalled");
            Err(End::Close(SLOW_CONSUMER))
        }
    }
}

/// The close a read error calls for (RFC 6455 7.4.1), or none when the peer is gone.
pub(super) fn ended_by(err: WsError) -> End {
    let reason = match err {
        WsError::Capacity(_) => CloseReason { code: 1009, reason: "message too big" },
        WsError::Utf8(_) => CloseReason { code: 1007, reason: "invalid UTF-8" },
        WsError::Protocol(_) => CloseReason { code: 1002, reason: "protocol error" },
        _ => return End::Gone,
    };
    End::Close(reason)
}

/// Sends one message through tungstenite (ack, error, ping): it goes through the outlet, so it
/// never waits.
pub(super) async fn send_message(socket: &mut Socket, message: Message) -> Result<(), End> {
    socket.send(message).await.map_err(|err| match err {
        WsError::Io(err) => write_failed(&err),
        _ => End::Gone,
    })
}

/// Sends frames of our own through the outlet, in one write when the socket has room.
pub(super) fn send_frames(outlet: &Outlet, frames: Vec<Frame>) -> Result<(), End> {
    let frames = frames.into_iter().map(Frame::into_bytes);
    outlet.send_all(frames).map_err(|err| write_failed(&err))
}

/// How a socket whose outlet refused a frame ends: gone, or closed for not keeping up.
fn write_failed(err: &io::Error) -> End {
    if err.kind() == io::ErrorKind::BrokenPipe { End::Gone } else { End::Close(SLOW_CONSUMER) }
}

/// Ends a socket: nothing if the stream is cut (a frame half written, or the peer gone), else
/// our close frame behind what waits (unless the peer is unresponsive anyway: ping timeout,
/// slow consumer) and a brief wait for the peer's answer so the close is clean.
pub(super) async fn finish(socket: &mut Socket, end: End) {
    let outlet = socket.get_ref().outlet().clone();
    if outlet.is_cut() {
        tracing::debug!("the stream is cut: dropping without a close frame");
        return;
    }
    let End::Close(reason) = end else {
        tracing::debug!("disconnected");
        return;
    };
    tracing::debug!(code = reason.code, reason = reason.reason, "closing");
    let frame = CloseFrame { code: reason.code.into(), reason: reason.reason.into() };
    let peer_is_responsive = !matches!(reason.code, CLOSE_PING_TIMEOUT | CLOSE_SLOW_CONSUMER);
    if !peer_is_responsive {
        outlet.discard();
    }
    let _ = timeout(CLOSE_TIMEOUT, async {
        if socket.send(Message::Close(Some(frame))).await.is_ok()
            && socket.get_mut().drain().await.is_ok()
            && peer_is_responsive
        {
            while let Some(Ok(_)) = socket.next().await {}
        }
    })
    .await;
}
