//! The WebSocket handshake and taking the upgraded socket over from the HTTP stack: a plain-TCP
//! socket leaves the async runtime for a readiness loop (what the HTTP stack read past the
//! request comes along), a TLS socket keeps its stream and a task of its own.

use std::{
    future::Future,
    io,
    os::fd::AsRawFd,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
};

use futures_util::{FutureExt, future::Either};
use poem::{
    Request, Response,
    http::{HeaderMap, StatusCode, header},
};
use tokio::{
    io::{AsyncRead, ReadBuf},
    net::TcpStream,
};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::{
    Ctx, WsSettings,
    event_loop::{Adoption, DirectTcp},
    socket::Socket,
    stream_task,
};
use crate::{
    delivery::{Outlet, Owner, closed_if_shutting_down},
    error::AppError,
};

/// Bytes read at once from what the HTTP stack kept (on the stack, not kept while idle).
const READ_CHUNK: usize = 8 * 1024;

/// An upgraded connection, as the HTTP stack hands it over.
pub(super) struct Upgraded {
    io: poem::Upgraded,
    /// The raw socket under it, when it is plain TCP (see [`crate::listener`]).
    direct: Option<Arc<TcpStream>>,
}

/// Where a socket taken over is read and written.
pub(super) enum Transport {
    /// A plain-TCP socket for readiness loop `index`, with what was read before.
    Direct { tcp: DirectTcp, leftover: Vec<u8>, index: usize },
    /// A TLS socket's stream, read by a task that is its owner.
    Stream { io: Box<poem::Upgraded>, owner: Arc<Owner> },
}

impl Upgraded {
    /// Takes the socket over and makes its outlet (closed at once if shutdown began); sockets
    /// of one `group` are served together (see [`Loops::pick`](super::Loops)).
    pub fn take_over(
        self,
        settings: &WsSettings,
        group: Option<&str>,
    ) -> io::Result<(Transport, Arc<Outlet>)> {
        let bound = settings.send_queue;
        let (transport, outlet) = match (self.direct, &settings.loops) {
            (Some(tcp), Some(loops)) => {
                let mut io = self.io;
                let leftover = read_buffered(&mut io);
                // The HTTP stack's IO held the socket too: once it is gone, the socket is ours.
                drop(io);
                let tcp = Arc::try_unwrap(tcp)
                    .map_err(|_| io::Error::other("the upgraded socket is still shared"))?
                    .into_std()?;
                let (index, owner) = loops.pick(group);
                let outlet = Outlet::new(Some(tcp.as_raw_fd()), owner, bound);
                let tcp = DirectTcp::new(tcp, outlet.clone());
                (Transport::Direct { tcp, leftover, index }, outlet)
            }
            _ => {
                let owner = Arc::new(Owner::default());
                let outlet = Outlet::new(None, owner.clone(), bound);
                (Transport::Stream { io: Box::new(self.io), owner }, outlet)
            }
        };
        closed_if_shutting_down(&outlet, &settings.shutdown);
        Ok((transport, outlet))
    }
}

/// Hands `socket` to its driver: its readiness loop, or (TLS) this task, until it ends.
pub(super) async fn drive(transport: Transport, socket: Socket, ctx: Ctx, settings: &WsSettings) {
    match (transport, &settings.loops) {
        (Transport::Direct { tcp, leftover, index }, Some(loops)) => {
            if let Err(mut refused) = loops.adopt(index, Adoption { socket, tcp, leftover }).await {
                tracing::debug!("a socket arrived after its loop ended");
                refused.socket.abandon(&ctx);
            }
        }
        (Transport::Stream { io, owner }, _) => stream_task::serve(socket, io, owner, ctx).await,
        (Transport::Direct { .. }, None) => {
            let mut socket = socket;
            socket.abandon(&ctx);
        }
    }
}

/// Takes what the HTTP stack read past the request (it is still in the upgraded stream), up
/// to what is there now.
fn read_buffered(io: &mut poem::Upgraded) -> Vec<u8> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut leftover = Vec::new();
    loop {
        let mut buf = [0u8; READ_CHUNK];
        let mut read = ReadBuf::new(&mut buf);
        match Pin::new(&mut *io).poll_read(&mut cx, &mut read) {
            Poll::Ready(Ok(())) if !read.filled().is_empty() => {
                leftover.extend_from_slice(read.filled());
            }
            _ => return leftover,
        }
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
    F: FnOnce(Upgraded) -> Fut + Send + 'static,
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
    let connection = on_upgrade.then(move |upgraded| match upgraded {
        Ok(io) => Either::Left(serve(Upgraded { io, direct })),
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
