//! One server socket's protocol, whoever drives it (a readiness loop for plain TCP, a task for
//! TLS): decoding what the peer sends, answering its pings, handing its messages to the
//! socket's session (a client connection or a relay peer) one job at a time, and the close
//! handshake with the right code. The driver reads and writes; this decides.

use std::{
    collections::VecDeque,
    future::Future,
    pin::pin,
    sync::Arc,
    task::{Context, Waker},
    time::Duration,
};

use super::{
    Ctx,
    connection::ClientSession,
    decode::{Decoder, Incoming},
    relay_peer::PeerSession,
};
use crate::{
    delivery::{CloseReason, Frame, Outlet, Wanted, close_echo},
    metrics::ClosedBy,
};

/// How long closing (our close frame out, the peer's answer in) may take.
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a socket serves.
pub(super) enum Session {
    Client(ClientSession),
    RelayPeer(Arc<PeerSession>),
}

/// A server socket's state: its outlet, its decoder, its session and how far it is from closed.
pub(super) struct Socket {
    outlet: Arc<Outlet>,
    decoder: Decoder,
    /// Taken when the socket starts closing (the session ends there).
    session: Option<Session>,
    phase: Phase,
    /// A job of the session runs: the socket reads nothing more until it ends, so what the
    /// peer sends waits in the kernel, not here.
    busy: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    /// To close once the running job ends: what the peer sent before is answered first.
    CloseAfterJob(Closing),
    /// Our close frame is written or waiting (or the peer is gone); for at most
    /// [`CLOSE_TIMEOUT`] (the driver keeps the time), the peer's own close is awaited when
    /// `await_peer`, else only the backlog's last bytes.
    Closing {
        await_peer: bool,
    },
    Ended,
}

/// Why a socket closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// The peer sent its close frame (with this code, if any): it is answered.
    Peer(Option<u16>),
    /// The server closes it.
    Ours(CloseReason),
    /// The peer's side of the connection ended (or a read failed): nothing more arrives.
    ReadEnded,
}

impl Socket {
    /// A socket writing through `outlet`. Without a session it only closes, for `failed` (a
    /// connect that failed).
    pub fn new(outlet: Arc<Outlet>, session: Result<Session, CloseReason>) -> Socket {
        let (session, failed) = match session {
            Ok(session) => (Some(session), None),
            Err(reason) => (None, Some(reason)),
        };
        let socket = Socket {
            outlet,
            decoder: Decoder::default(),
            session,
            phase: Phase::Open,
            busy: false,
        };
        if let Some(reason) = failed {
            // Nothing that waited was meant for a socket that never opened.
            socket.outlet.discard();
            socket.outlet.close(reason);
        }
        socket
    }

    pub fn outlet(&self) -> &Arc<Outlet> {
        &self.outlet
    }

    /// The driver took the socket (and gave it what was read before): its session starts.
    /// The driver then takes what the outlet wants, as after any call.
    pub fn start(&mut self, ctx: &Ctx) {
        self.start_job(Vec::new(), ctx);
    }

    /// Whether the driver should read the socket now.
    pub fn wants_read(&self) -> bool {
        match self.phase {
            Phase::Open => !self.busy,
            Phase::Closing { await_peer, .. } => await_peer,
            Phase::CloseAfterJob(_) | Phase::Ended => false,
        }
    }

    /// Whether the socket is done: the driver drops it.
    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// Whether the socket is in its close handshake, which the driver gives up on after
    /// [`CLOSE_TIMEOUT`].
    pub fn is_closing(&self) -> bool {
        matches!(self.phase, Phase::Closing { .. })
    }

    /// Bytes the peer sent. The driver reads only while the socket [wants](Self::wants_read),
    /// but for what was read before it took the socket.
    pub fn received(&mut self, bytes: &[u8], ctx: &Ctx) {
        if !matches!(self.phase, Phase::Open | Phase::Closing { await_peer: true, .. }) {
            return;
        }
        self.outlet.heard_from_peer();
        let mut decoded = VecDeque::new();
        let result = self.decoder.decode(bytes, ctx.max_message_bytes, &mut decoded);
        let mut messages = Vec::new();
        for incoming in decoded {
            match (incoming, self.phase) {
                (Incoming::Ping(payload), Phase::Open) => {
                    // A failed write closes the socket itself.
                    self.outlet.send(Frame::pong(&payload));
                }
                (Incoming::Close(code), Phase::Open) => {
                    // What came before the close is answered before it.
                    self.start_job(std::mem::take(&mut messages), ctx);
                    self.close(Closing::Peer(code), ctx);
                }
                (Incoming::Close(_), Phase::Closing { await_peer: true, .. }) => {
                    self.finish(None, ctx);
                }
                (message @ (Incoming::Text(_) | Incoming::Binary(_)), Phase::Open) => {
                    messages.push(message);
                }
                _ => {}
            }
        }
        self.start_job(messages, ctx);
        if let Err(err) = result {
            tracing::debug!(%err, "refused the peer's frame");
            match self.phase {
                Phase::Open => self.close(Closing::Ours(err.close_reason()), ctx),
                Phase::Closing { .. } => self.finish(None, ctx),
                _ => {}
            }
        }
    }

    /// Nothing more can be read: the peer closed its side, or a read failed.
    pub fn read_ended(&mut self, ctx: &Ctx) {
        match self.phase {
            Phase::Open => self.close(Closing::ReadEnded, ctx),
            Phase::Closing { await_peer: true, .. } => self.finish(None, ctx),
            _ => {}
        }
    }

    /// Acts on what the owner was called for (the driver has written the backlog when asked).
    pub fn wanted(&mut self, wanted: Wanted, ctx: &Ctx) {
        if wanted.resume {
            self.busy = false;
            if let Phase::CloseAfterJob(closing) = self.phase {
                self.close(closing, ctx);
            }
        }
        if let Some(reason) = wanted.close
            && matches!(self.phase, Phase::Open | Phase::CloseAfterJob(_))
        {
            self.close(Closing::Ours(reason), ctx);
        }
        if wanted.work || wanted.resume {
            self.start_job(Vec::new(), ctx);
        }
    }

    /// The driver wrote the whole backlog.
    pub fn flushed(&mut self, ctx: &Ctx) {
        if let Phase::Closing { await_peer: false, .. } = self.phase {
            self.finish(None, ctx);
        }
    }

    /// A write failed: the peer is gone.
    pub fn lost(&mut self, ctx: &Ctx) {
        if matches!(self.phase, Phase::Open | Phase::CloseAfterJob(_)) {
            ctx.node.metrics.closed(CloseReason::Lost.code(), ClosedBy::Client);
        }
        self.finish(Some(CloseReason::Lost), ctx);
    }

    /// The driver cannot serve the socket (its loop is gone): it ends here, without a word.
    pub fn abandon(&mut self, ctx: &Ctx) {
        self.outlet.retire();
        self.finish(Some(CloseReason::Lost), ctx);
    }

    /// The close handshake took too long.
    pub fn timed_out(&mut self, ctx: &Ctx) {
        tracing::debug!("the close handshake timed out");
        self.finish(None, ctx);
    }

    /// Has the session work through `messages` (and whatever else it has waiting) in a job,
    /// unless one runs.
    fn start_job(&mut self, messages: Vec<Incoming>, ctx: &Ctx) {
        if self.busy || self.phase != Phase::Open {
            return;
        }
        let job = match &self.session {
            Some(Session::Client(client)) if !messages.is_empty() => {
                Some(Box::pin(client.answer(messages, ctx, &self.outlet)) as BoxedJob)
            }
            Some(Session::RelayPeer(peer)) if !messages.is_empty() || peer.has_work() => {
                Some(Box::pin(peer.clone().work(messages, ctx.clone())) as BoxedJob)
            }
            _ => None,
        };
        if let Some(job) = job {
            self.busy = !run_job(job, ctx, &self.outlet);
        }
    }

    /// Closes now, or once the running job has ended.
    fn close(&mut self, closing: Closing, ctx: &Ctx) {
        if self.busy && !matches!(closing, Closing::Ours(_)) {
            self.phase = Phase::CloseAfterJob(closing);
            return;
        }
        let (reason, code, by) = match closing {
            Closing::Ours(reason) => (Some(reason), reason.code(), ClosedBy::Server),
            // 1005: no code given; 1006: no close frame at all (RFC 6455 7.1.5).
            Closing::Peer(code) => (None, code.unwrap_or(1005), ClosedBy::Client),
            Closing::ReadEnded => (None, 1006, ClosedBy::Client),
        };
        ctx.node.metrics.closed(code, by);
        self.end_session(reason, ctx);
        let (frame, await_peer) = match closing {
            Closing::Peer(code) => (Some(close_echo(code)), false),
            Closing::Ours(reason) => {
                tracing::debug!(code = reason.code(), reason = reason.reason(), "closing");
                if !reason.peer_is_responsive() {
                    self.outlet.discard();
                }
                (Some(reason.frame()), reason.peer_is_responsive())
            }
            Closing::ReadEnded => (None, false),
        };
        let sent = frame.is_none_or(|frame| self.outlet.send_close(frame));
        if self.outlet.is_cut() {
            tracing::debug!("the stream is cut: dropping without a close frame");
            return self.finish(None, ctx);
        }
        self.phase = Phase::Closing { await_peer: await_peer && sent };
        if !await_peer && self.outlet.is_drained() {
            self.finish(None, ctx);
        }
    }

    fn end_session(&mut self, reason: Option<CloseReason>, ctx: &Ctx) {
        let Some(session) = self.session.take() else {
            return;
        };
        let slow = reason == Some(CloseReason::SlowConsumer);
        if slow {
            tracing::warn!("closing slow consumer");
        }
        match session {
            Session::Client(client) => client.end(slow, ctx),
            Session::RelayPeer(peer) => peer.end(slow, ctx),
        }
    }

    fn finish(&mut self, reason: Option<CloseReason>, ctx: &Ctx) {
        self.end_session(reason, ctx);
        self.phase = Phase::Ended;
    }
}

/// A session's job.
pub(super) type BoxedJob = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs `job` here as far as it goes without waiting (most jobs finish so: an ack, a local
/// relay frame); true when it finished. Otherwise it goes on in a task of its own, which calls
/// the socket's owner (`resume`) when it ends.
fn run_job(mut job: BoxedJob, ctx: &Ctx, outlet: &Arc<Outlet>) -> bool {
    // A job polled again later gets a real waker then: what it waits on takes the newest one.
    let mut cx = Context::from_waker(Waker::noop());
    if pin!(&mut job).poll(&mut cx).is_ready() {
        return true;
    }
    let outlet = outlet.clone();
    ctx.tasks.spawn(async move {
        job.await;
        outlet.job_done();
    });
    false
}
