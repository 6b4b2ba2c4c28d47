//! What every server socket shares, client connections and relay peers alike: the handshake,
//! reading and decoding client frames without a buffer of its own (answering pings), guarded
//! writes through the outlet, and closing with the right code.

use std::{
    collections::VecDeque,
    future::{Future, poll_fn},
    io,
    pin::{Pin, pin},
    sync::Arc,
    task::{Context, Poll, Waker, ready},
    time::Duration,
};

use futures_util::{FutureExt, future::Either};
use poem::{
    Request, Response, Upgraded,
    http::{HeaderMap, StatusCode, header},
};
use sync_wrapper::SyncWrapper;
use tokio::{
    io::{AsyncRead, ReadBuf},
    net::TcpStream,
    time::{sleep, timeout},
};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::{
    WsSettings,
    decode::{Decoder, Incoming},
};
use crate::{
    delivery::{CloseReason, Frame, Outlet, close_echo},
    error::AppError,
};

/// A write that cannot progress for this long means the peer stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long closing (our close frame out, the peer's answer in) may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes read at once, into a buffer on the reading task's stack (not kept while idle).
const READ_CHUNK: usize = 8 * 1024;

/// How a socket's task ends: closed by us with a reason, or already gone (or closed by the
/// peer, whose close was answered).
pub(super) enum End {
    Close(CloseReason),
    Gone,
}

/// An upgraded connection, before its socket is made.
pub(super) struct Upgrade {
    io: Upgraded,
    /// The raw socket under it, when it is plain TCP (see [`crate::listener`]).
    pub direct: Option<Arc<TcpStream>>,
    max_message_bytes: usize,
}

impl Upgrade {
    /// The socket, writing through `outlet` (made with [`Upgrade::direct`]).
    pub fn into_socket(self, outlet: Arc<Outlet>) -> Socket {
        let mut socket = Socket {
            stream: Some(Box::new(SyncWrapper::new(self.io))),
            decoder: Decoder::new(self.max_message_bytes),
            ready: VecDeque::new(),
            outlet,
            close_sent: false,
            read_done: false,
        };
        if socket.outlet.direct().is_some() {
            // The HTTP stack may have read bytes past the request: they are still in the
            // upgraded stream. Take them, then read the raw socket and let the stream go.
            let mut cx = Context::from_waker(Waker::noop());
            let _ = socket.fill(&mut cx);
            socket.stream = None;
        }
        socket
    }
}

/// A server socket: what the peer sends is read and decoded here; every write goes through
/// its [`Outlet`].
pub(super) struct Socket {
    /// The upgraded stream, kept only when there is no direct socket (TLS); boxed, as most
    /// sockets have none.
    stream: Option<Box<SyncWrapper<Upgraded>>>,
    decoder: Decoder,
    /// Decoded, not yet taken.
    ready: VecDeque<Incoming>,
    outlet: Arc<Outlet>,
    /// Our close frame is out: the peer's close completes the handshake, unanswered.
    close_sent: bool,
    /// Nothing more is read: the peer closed or left, or sent what cannot be decoded.
    read_done: bool,
}

impl Socket {
    /// The next message or ping/pong from the peer; none once it closed (its close is answered)
    /// or left. Pings are answered here.
    pub async fn next(&mut self) -> Option<Result<Incoming, End>> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Incoming, End>>> {
        loop {
            if let Some(incoming) = self.ready.pop_front() {
                if self.ready.is_empty() {
                    // Several messages in one read are rare: keep no room for them.
                    self.ready = VecDeque::new();
                }
                let answered = match &incoming {
                    Incoming::Ping(payload) => self.send(Frame::pong(payload)),
                    Incoming::Close(code) => {
                        self.read_done = true;
                        self.ready.clear();
                        if !self.close_sent {
                            self.close_sent = true;
                            let _ = self.send(close_echo(*code));
                        }
                        return Poll::Ready(None);
                    }
                    _ => Ok(()),
                };
                return Poll::Ready(Some(answered.map(|()| incoming)));
            }
            if self.read_done {
                return Poll::Ready(None);
            }
            if let Err(end) = ready!(self.fill(cx)) {
                return Poll::Ready(Some(Err(end)));
            }
        }
    }

    /// Reads what the peer sent and decodes it into `ready`; an error ends reading.
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), End>> {
        let mut buf = [0u8; READ_CHUNK];
        let read = match (&mut self.stream, self.outlet.direct()) {
            (Some(stream), _) => {
                let mut read_buf = ReadBuf::new(&mut buf);
                ready!(Pin::new(stream.get_mut()).poll_read(cx, &mut read_buf))
                    .map(|()| read_buf.filled().len())
            }
            (None, Some(tcp)) => loop {
                if let Err(err) = ready!(tcp.poll_read_ready(cx)) {
                    break Err(err);
                }
                match tcp.try_read(&mut buf) {
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                    result => break result,
                }
            },
            (None, None) => Ok(0),
        };
        let len = match read {
            Ok(0) | Err(_) => {
                self.read_done = true;
                return Poll::Ready(Ok(()));
            }
            Ok(len) => len,
        };
        // Any bytes show the peer is there, as a pong would.
        self.outlet.heard_from_peer();
        let result = self.decoder.decode(&buf[..len], &mut self.ready);
        Poll::Ready(result.map_err(|err| {
            tracing::debug!(%err, "refused the peer's frame");
            self.read_done = true;
            End::Close(err.close_reason())
        }))
    }

    pub fn outlet(&self) -> &Arc<Outlet> {
        &self.outlet
    }

    /// Writes a frame of this socket's own (ack, error, ping, pong) behind what waits.
    pub fn send(&self, frame: Frame) -> Result<(), End> {
        self.outlet.send(frame.into_bytes()).map_err(|err| write_failed(&err))
    }

    /// Writes what waits in the outlet until it is empty (see [`Outlet::drain`]).
    async fn drain_all(&mut self) -> io::Result<()> {
        self.outlet.drain(self.stream.as_deref_mut().map(SyncWrapper::get_mut)).await
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
    let max_message_bytes = settings.max_message_bytes;
    // A combinator, not an async block: an async block keeps what it captured for as long as
    // it runs, and every idle connection's task would carry that.
    let connection = on_upgrade.then(move |upgraded| match upgraded {
        Ok(io) => Either::Left(serve(Upgrade { io, direct, max_message_bytes })),
        Err(err) => {
            tracing::debug!(%err, "WebSocket upgrade failed");
            Either::Right(std::future::ready(()))
        }
    });
    settings.tasks.spawn(connection);
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

/// Writes what waits in the socket's backlog unless the socket is told to close (shutdown too),
/// or the writing stalls (the peer stopped reading: a slow consumer).
///
/// Almost every time the socket has room and this completes at once: then no timer is armed.
/// Only a write that has to wait gets the guard, boxed, so the guard takes no room in the task
/// of every idle connection.
pub(super) async fn drain(socket: &mut Socket) -> Result<(), End> {
    let outlet = socket.outlet.clone();
    let mut write = pin!(socket.drain_all());
    let at_once = poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
    match at_once {
        Poll::Ready(result) => result.map_err(|_| End::Gone),
        Poll::Pending => Box::pin(guard(write, &outlet)).await,
    }
}

async fn guard(write: impl Future<Output = io::Result<()>>, outlet: &Outlet) -> Result<(), End> {
    tokio::select! {
        result = write => result.map_err(|_| End::Gone),
        reason = outlet.closing() => Err(End::Close(reason)),
        () = sleep(WRITE_TIMEOUT) => {
            outlet.close_slow_consumer("write stalled");
            Err(End::Close(CloseReason::SlowConsumer))
        }
    }
}

/// Sends frames of our own through the outlet, in one write when the socket has room.
pub(super) fn send_frames(outlet: &Outlet, frames: Vec<Frame>) -> Result<(), End> {
    let frames = frames.into_iter().map(Frame::into_bytes);
    outlet.send_all(frames).map_err(|err| write_failed(&err))
}

/// How a socket whose outlet refused a frame ends: gone, or closed for not keeping up.
fn write_failed(err: &io::Error) -> End {
    if err.kind() == io::ErrorKind::BrokenPipe {
        End::Gone
    } else {
        End::Close(CloseReason::SlowConsumer)
    }
}

/// Ends a socket: nothing if the stream is cut (a frame half written, or the peer gone), else
/// our close frame behind what waits (unless the peer is unresponsive anyway: ping timeout,
/// slow consumer) and a brief wait for the peer's answer so the close is clean. A socket the
/// peer closed gets its answer written out.
pub(super) async fn finish(socket: &mut Socket, end: End) {
    if socket.outlet.is_cut() {
        tracing::debug!("the stream is cut: dropping without a close frame");
        return;
    }
    let _ = Box::pin(timeout(CLOSE_TIMEOUT, close(socket, end))).await;
}

async fn close(socket: &mut Socket, end: End) {
    let End::Close(reason) = end else {
        tracing::debug!("disconnected");
        let _ = socket.drain_all().await;
        return;
    };
    tracing::debug!(code = reason.code(), reason = reason.reason(), "closing");
    let peer_is_responsive = reason.peer_is_responsive();
    if !peer_is_responsive {
        socket.outlet.discard();
    }
    if socket.close_sent {
        let _ = socket.drain_all().await;
        return;
    }
    socket.close_sent = true;
    if socket.send(reason.frame()).is_ok() && socket.drain_all().await.is_ok() && peer_is_responsive
    {
        while let Some(Ok(_)) = socket.next().await {}
    }
}
