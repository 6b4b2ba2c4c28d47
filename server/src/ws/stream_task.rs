//! The task that serves one TLS socket: it reads the socket's stream (TLS is decrypted in user
//! space, so no readiness loop can read the raw socket for it), writes what waits in the
//! socket's outlet to the stream, and acts on what the outlet calls it for, as a readiness loop
//! does for its plain-TCP sockets.

use std::{
    future::poll_fn,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWriteExt, ReadBuf},
    time::{sleep_until, timeout},
};

use super::{
    Ctx,
    socket::{CLOSE_TIMEOUT, Socket},
};
use crate::delivery::{CloseReason, Outlet, Owner};

/// Bytes read at once, into a buffer on the polling stack (not kept while idle).
const READ_CHUNK: usize = 8 * 1024;
/// A write that cannot progress for this long means the peer stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `socket` on `stream` until it ends; `owner` is the socket's own.
pub(super) async fn serve(
    mut socket: Socket,
    mut stream: Box<poem::Upgraded>,
    owner: Arc<Owner>,
    ctx: Ctx,
) {
    let outlet = socket.outlet().clone();
    outlet.set_token(0);
    socket.start(&ctx);
    let mut calls = Vec::new();
    // What was asked of the socket before it was taken.
    let mut called = true;
    let mut closing_until = None;
    while !socket.is_ended() {
        if socket.is_closing() && closing_until.is_none() {
            closing_until = Some(tokio::time::Instant::now() + CLOSE_TIMEOUT);
        }
        if std::mem::take(&mut called) {
            let wanted = outlet.take_wanted();
            if wanted.write {
                match timeout(WRITE_TIMEOUT, write_backlog(&outlet, &mut stream)).await {
                    Ok(Ok(())) => socket.flushed(&ctx),
                    Ok(Err(_)) => socket.lost(&ctx),
                    Err(_) => {
                        tracing::debug!("write stalled");
                        outlet.close(CloseReason::SlowConsumer);
                        called = true;
                    }
                }
            }
            socket.wanted(wanted, &ctx);
            continue;
        }
        let deadline = closing_until;
        tokio::select! {
            () = poll_fn(|cx| owner.poll_called(cx)) => {
                owner.take_calls(&mut calls);
                calls.clear();
                called = true;
            }
            () = poll_fn(|cx| read(&mut stream, &mut socket, &ctx, cx)), if socket.wants_read() => {}
            () = sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                socket.timed_out(&ctx);
            }
        }
    }
}

/// Reads what the peer sent into the socket (or tells it reading ended).
fn read(
    stream: &mut poem::Upgraded,
    socket: &mut Socket,
    ctx: &Ctx,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let mut buf = [0u8; READ_CHUNK];
    let mut read = ReadBuf::new(&mut buf);
    match ready!(Pin::new(stream).poll_read(cx, &mut read)) {
        Ok(()) if !read.filled().is_empty() => socket.received(read.filled(), ctx),
        _ => socket.read_ended(ctx),
    }
    Poll::Ready(())
}

/// Writes what waits in the outlet to the stream until nothing does.
async fn write_backlog(outlet: &Outlet, stream: &mut poem::Upgraded) -> io::Result<()> {
    loop {
        let frames = outlet.take_for_stream();
        match frames.as_slice() {
            [] => return Ok(()),
            [frame] => stream.write_all(frame).await?,
            _ => stream.write_all(&frames.concat()).await?,
        }
        stream.flush().await?;
        outlet.stream_written();
    }
}
