//! What every server socket shares, client connections and relay peers alike: the handshake,
//! guarded and batched writes of shared frames, pings, and closing with the right code.

use std::{
    future::{Future, poll_fn},
    io,
    pin::pin,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    task::Poll,
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use poem::{
    Request, Response, Upgraded,
    http::{HeaderMap, StatusCode, header},
};
use tokio::{
    io::AsyncWriteExt,
    time::{Instant, Interval, MissedTickBehavior, interval_at, sleep, timeout},
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Error as WsError, Message, handshake::derive_accept_key, protocol::CloseFrame,
        protocol::Role,
    },
};
use tokio_util::sync::CancellationToken;

use super::{Frame, WsSettings};
use crate::{
    error::AppError,
    hub::{CloseReason, Outbox, SLOW_CONSUMER},
};
use switchboard_protocol::{CLOSE_PING_TIMEOUT, CLOSE_SLOW_CONSUMER};

pub(super) type Socket = WebSocketStream<Upgraded>;

/// Most queued frames written before one flush.
pub(super) const BATCH: usize = 64;
/// Frames below this size are coalesced into one write; the coalesced run stays below it too.
const COALESCE_LIMIT: usize = 16 * 1024;
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

/// Answers a valid WebSocket upgrade with 101 and runs `serve` on the upgraded socket as a
/// tracked task (shutdown waits for it). The caller has checked everything else first, so every
/// refusal is a plain HTTP answer.
pub(super) fn accept<F, Fut>(
    req: &Request,
    settings: &WsSettings,
    serve: F,
) -> poem::Result<Response>
where
    F: FnOnce(Socket) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let key = handshake_key(req)?;
    let accept_key = derive_accept_key(key.as_bytes());
    let on_upgrade =
        req.take_upgrade().map_err(|err| AppError::BadRequest(format!("cannot upgrade: {err}")))?;
    let config = settings.socket_config();
    settings.tasks.spawn(async move {
        match on_upgrade.await {
            Ok(io) => {
                let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
                serve(socket).await;
            }
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

/// Runs a write unless the socket is told to close, the server shuts down, or the write stalls
/// (the peer stopped reading: a slow consumer, counted in `slow_closes`).
///
/// Almost every write completes at once (the socket buffer has room): then no timer is armed
/// and no cancellation token is waited on. Only a write that has to wait gets the guard, boxed,
/// so the guard takes no room in the task of every idle connection.
pub(super) async fn guarded<T>(
    write: impl Future<Output = Result<(), WsError>>,
    outbox: &Outbox<T>,
    shutdown: &CancellationToken,
    slow_closes: &AtomicU64,
) -> Result<(), End> {
    let mut write = pin!(write);
    let at_once = poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
    match at_once {
        Poll::Ready(result) => result.map_err(|_| End::Gone),
        Poll::Pending => Box::pin(guard(write, outbox, shutdown, slow_closes)).await,
    }
}

async fn guard<T>(
    write: impl Future<Output = Result<(), WsError>>,
    outbox: &Outbox<T>,
    shutdown: &CancellationToken,
    slow_closes: &AtomicU64,
) -> Result<(), End> {
    tokio::select! {
        result = write => result.map_err(|_| End::Gone),
        reason = outbox.closing() => Err(End::Close(reason)),
        () = shutdown.cancelled() => Err(End::Close(GOING_AWAY)),
        () = sleep(WRITE_TIMEOUT) => {
            outbox.close_slow_consumer(slow_closes, "write stalled");
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

/// Sends one message through tungstenite (welcome, ack, error, ping).
pub(super) async fn send_message(socket: &mut Socket, message: Message) -> Result<(), WsError> {
    socket.send(message).await
}

/// Writes `frames` (at most [`BATCH`] are taken) straight to the socket as the bytes encoded
/// once for every recipient. poem's upgraded IO has no vectored write, so runs of small frames
/// are coalesced into one write; a frame that is alone or large is written from its shared
/// bytes. With `flush_control`, tungstenite's pending control frames go out first so they never
/// interleave with ours. `mid_frame` stays set if this future is dropped while a frame is half
/// written: the stream is then cut and must not carry a close frame.
pub(super) async fn write_frames(
    socket: &mut Socket,
    frames: impl Iterator<Item = Frame>,
    flush_control: bool,
    mid_frame: &AtomicBool,
) -> Result<(), WsError> {
    if flush_control {
        socket.flush().await?;
    }
    let io = socket.get_mut();
    let mut coalesced = Vec::new();
    let mut frames = frames.take(BATCH).peekable();
    while let Some(frame) = frames.next() {
        let more = frames.peek().is_some();
        let small = frame.len() < COALESCE_LIMIT;
        if small && (more || !coalesced.is_empty()) {
            coalesced.extend_from_slice(frame.as_bytes());
            if !more || coalesced.len() >= COALESCE_LIMIT {
                write_whole(io, &coalesced, mid_frame).await?;
                coalesced.clear();
            }
        } else {
            if !coalesced.is_empty() {
                write_whole(io, &coalesced, mid_frame).await?;
                coalesced.clear();
            }
            write_whole(io, frame.as_bytes(), mid_frame).await?;
        }
    }
    io.flush().await?;
    Ok(())
}

async fn write_whole(io: &mut Upgraded, bytes: &[u8], mid_frame: &AtomicBool) -> io::Result<()> {
    mid_frame.store(true, Ordering::Relaxed);
    io.write_all(bytes).await?;
    mid_frame.store(false, Ordering::Relaxed);
    Ok(())
}

/// Ends a socket: nothing if a write was cut mid-frame (the stream is broken), else our close
/// frame and, unless the peer is unresponsive anyway (ping timeout, slow consumer), a brief wait
/// for its answer so the close is clean.
pub(super) async fn finish(socket: &mut Socket, end: End, mid_frame: &AtomicBool) {
    if mid_frame.load(Ordering::Relaxed) {
        tracing::debug!("a write was cut mid-frame: dropping without a close frame");
        return;
    }
    let End::Close(reason) = end else {
        tracing::debug!("disconnected");
        return;
    };
    tracing::debug!(code = reason.code, reason = reason.reason, "closing");
    let frame = CloseFrame { code: reason.code.into(), reason: reason.reason.into() };
    let peer_is_responsive = !matches!(reason.code, CLOSE_PING_TIMEOUT | CLOSE_SLOW_CONSUMER);
    let _ = timeout(CLOSE_TIMEOUT, async {
        if socket.send(Message::Close(Some(frame))).await.is_ok() && peer_is_responsive {
            while let Some(Ok(_)) = socket.next().await {}
        }
    })
    .await;
}
