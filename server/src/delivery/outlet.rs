//! The write side of a server socket. On plain TCP, frames are written straight to the socket by
//! whoever has them: the fan-out writes each recipient's frames once every recipient has taken
//! them (so frames published together leave in one write), without waking the socket's task.
//! Only when a socket pushes back (or is TLS, or is not yet open) do frames wait in its bounded
//! backlog for its task, woken once, to write. Every write of a socket happens under its lock, so
//! whole frames never interleave.

use std::{
    collections::VecDeque,
    future::poll_fn,
    io::{self, IoSlice},
    os::fd::{AsRawFd, BorrowedFd, RawFd},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use bytes::{Buf, Bytes};
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use poem::Upgraded;
use rustix::net::{SendAncillaryBuffer, SendFlags};
use tokio::{
    io::{AsyncWriteExt, Interest},
    net::TcpStream,
};

use super::{CloseReason, Frame, PendingWrites};

/// Most frames in one write.
const MAX_FRAMES_PER_WRITE: usize = 64;

/// Why a socket's task is wanted.
pub enum Attention {
    /// Close with this reason.
    Close(CloseReason),
    /// Write what waits in the backlog.
    Write,
}

/// One socket's writes: its direct socket (plain TCP), its backlog, how it is closed, and
/// whether it answered its last ping. Every socket has one, so it holds no more than that.
pub struct Outlet {
    direct: Option<Direct>,
    backlog: Mutex<Backlog>,
    /// The socket's task, woken when it has frames to write or is to close (see
    /// [`Outlet::poll_attention`]).
    task: AtomicWaker,
    /// The socket's task has frames to write.
    write_wanted: AtomicBool,
    /// Why the socket is to close; set once, the first reason wins.
    closed: OnceLock<CloseReason>,
    /// Pinged, and nothing heard from the peer since.
    awaiting_pong: AtomicBool,
    bound: usize,
    /// Counts the sockets closed for not keeping up.
    slow_closes: Arc<AtomicU64>,
}

#[derive(Default)]
struct Backlog {
    /// Whole frames not yet written; the front one may be partly written.
    frames: VecDeque<Bytes>,
    /// The front frame is partly written: the stream is cut if the socket ends now.
    mid_frame: bool,
    /// In a [`PendingWrites`] that will write the backlog out.
    pending: bool,
    /// The socket's task writes the backlog: the socket pushed back, has no direct socket, or
    /// is not open yet.
    task_writes: bool,
    /// Deliveries are refused: the socket is ending.
    sealed: bool,
    /// A write failed: the peer is gone.
    broken: bool,
}

/// A plain-TCP socket that others write to directly.
struct Direct {
    /// Owns the descriptor; its readiness is what the socket's task waits on.
    tcp: Arc<TcpStream>,
    /// `tcp`'s descriptor, read without following `tcp` (and tokio's readiness behind it) to
    /// another cache line for each recipient of a fan-out.
    fd: RawFd,
}

impl Direct {
    fn new(tcp: Arc<TcpStream>) -> Direct {
        let fd = tcp.as_raw_fd();
        Direct { tcp, fd }
    }

    /// Sends `frames` straight to the socket (a raw system call, not a cancellation point).
    /// Tokio's readiness is left as it was: the socket's task writes through
    /// [`send_in_task`](Self::send_in_task), which clears it when the socket pushes back.
    fn send(&self, frames: &[IoSlice<'_>]) -> io::Result<usize> {
        // SAFETY: `tcp` owns the descriptor and lives as long as `self`.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let sent = match frames {
            [frame] => rustix::net::send(fd, frame, SendFlags::NOSIGNAL),
            _ => {
                let mut control = SendAncillaryBuffer::default();
                rustix::net::sendmsg(fd, frames, &mut control, SendFlags::NOSIGNAL)
            }
        };
        sent.map_err(io::Error::from)
    }

    /// Like [`send`](Self::send), for the socket's task: a socket that pushes back is marked
    /// not writable, so the task's next wait for room really waits.
    fn send_in_task(&self, frames: &[IoSlice<'_>]) -> io::Result<usize> {
        self.tcp.try_io(Interest::WRITABLE, || self.send(frames))
    }
}

/// How far one attempt to write a backlog got.
enum Progress {
    Empty,
    Blocked,
    Failed(io::Error),
}

impl Backlog {
    /// Drops `written` bytes from the front.
    fn consume(&mut self, mut written: usize) {
        while let Some(front) = self.frames.front_mut() {
            if written < front.len() {
                front.advance(written);
                self.mid_frame = written > 0 || self.mid_frame;
                return;
            }
            written -= front.len();
            self.frames.pop_front();
            self.mid_frame = false;
        }
    }

    /// Writes frames with `send` until none is left or the socket has no room.
    fn write_with(&mut self, send: impl Fn(&[IoSlice<'_>]) -> io::Result<usize>) -> Progress {
        loop {
            let result = match self.frames.len() {
                0 => return Progress::Empty,
                1 => send(&[IoSlice::new(&self.frames[0])]),
                count => {
                    let mut slices = [IoSlice::new(&[]); MAX_FRAMES_PER_WRITE];
                    for (slice, frame) in slices.iter_mut().zip(&self.frames) {
                        *slice = IoSlice::new(frame);
                    }
                    send(&slices[..count.min(MAX_FRAMES_PER_WRITE)])
                }
            };
            match result {
                Ok(written) => {
                    self.consume(written);
                    if self.mid_frame {
                        // The kernel took less than offered: its buffer is full.
                        return Progress::Blocked;
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Progress::Blocked,
                Err(err) => return Progress::Failed(err),
            }
        }
    }
}

impl Outlet {
    /// An outlet writing to `direct` when given (plain TCP), else only from its socket's task.
    /// At most `bound` frames wait; a socket that needs more is closed as a slow consumer,
    /// counted in `slow_closes`. Nothing is written before [`open`](Self::open).
    pub fn new(
        direct: Option<Arc<TcpStream>>,
        bound: usize,
        slow_closes: Arc<AtomicU64>,
    ) -> Arc<Outlet> {
        let backlog = Backlog { task_writes: true, ..Backlog::default() };
        Arc::new(Outlet {
            direct: direct.map(Direct::new),
            backlog: Mutex::new(backlog),
            task: AtomicWaker::new(),
            write_wanted: AtomicBool::new(false),
            closed: OnceLock::new(),
            awaiting_pong: AtomicBool::new(false),
            bound: bound.max(1),
            slow_closes,
        })
    }

    /// Lets frames out, `first` ahead of any delivery offered before.
    pub fn open(&self, first: Option<Frame>) {
        let mut backlog = self.backlog.lock();
        if let Some(first) = first {
            backlog.frames.push_front(first.into_bytes());
        }
        if backlog.frames.is_empty() {
            backlog.task_writes = self.direct.is_none();
        } else {
            self.wake_writer();
        }
    }

    /// Appends a frame, waking the socket's task if it writes and had nothing to; false (the
    /// socket is then closed as a slow consumer) when the backlog is full.
    fn append(&self, backlog: &mut Backlog, frame: Bytes) -> bool {
        if backlog.frames.len() >= self.bound {
            self.close_slow_consumer("send queue full");
            return false;
        }
        backlog.frames.push_back(frame);
        if backlog.task_writes && backlog.frames.len() == 1 {
            self.wake_writer();
        }
        true
    }

    /// Offers a delivery. It is written when `pending` is written out, or by the socket's task.
    /// False when the socket is ending, or its backlog is full.
    pub fn offer(self: &Arc<Self>, frame: &Frame, pending: &mut PendingWrites) -> bool {
        let mut backlog = self.backlog.lock();
        if backlog.sealed || !self.append(&mut backlog, frame.bytes().clone()) {
            return false;
        }
        if !backlog.task_writes && !backlog.pending {
            backlog.pending = true;
            pending.push(self.clone());
        }
        true
    }

    /// Writes frames of the socket's own (acks, pings, close) behind what waits: at once when the
    /// socket has room and nobody else is about to write. Fails when the socket is gone or its
    /// backlog is full (then closed as a slow consumer).
    pub fn send(&self, frame: Bytes) -> io::Result<()> {
        self.send_all(std::iter::once(frame))
    }

    /// Like [`send`](Self::send) for several frames, written together.
    pub fn send_all(&self, frames: impl IntoIterator<Item = Bytes>) -> io::Result<()> {
        let mut backlog = self.backlog.lock();
        if backlog.broken {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        for frame in frames {
            if !self.append(&mut backlog, frame) {
                return Err(io::Error::other("send queue full"));
            }
        }
        if !backlog.task_writes
            && !backlog.pending
            && let Some(direct) = &self.direct
        {
            let progress = backlog.write_with(|frames| direct.send(frames));
            self.settle(&mut backlog, progress);
        }
        Ok(())
    }

    /// Writes the backlog out for a [`PendingWrites`](super::PendingWrites) that gathered this
    /// outlet.
    pub(super) fn write_pending(&self) {
        let mut backlog = self.backlog.lock();
        backlog.pending = false;
        if backlog.task_writes {
            return;
        }
        if let Some(direct) = &self.direct {
            let progress = backlog.write_with(|frames| direct.send(frames));
            self.settle(&mut backlog, progress);
        }
    }

    /// After a write outside the socket's task: a socket that pushed back is the task's to
    /// write; one that failed is gone.
    fn settle(&self, backlog: &mut Backlog, progress: Progress) {
        match progress {
            Progress::Empty => {}
            Progress::Blocked => {
                backlog.task_writes = true;
                self.wake_writer();
            }
            Progress::Failed(err) => {
                tracing::debug!(%err, "write failed");
                backlog.broken = true;
                backlog.sealed = true;
                backlog.frames.clear();
                self.close(CloseReason::Lost);
            }
        }
    }

    /// Asks the socket's task to close with `reason`; the first reason given wins (true for it).
    pub fn close(&self, reason: CloseReason) -> bool {
        let first = self.closed.set(reason).is_ok();
        if first {
            self.task.wake();
        }
        first
    }

    /// Why the socket is to close, once [`close`](Self::close) was called.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.closed.get().copied()
    }

    /// Resolves once [`close`](Self::close) was called (in the socket's task: one task waits).
    pub async fn closing(&self) -> CloseReason {
        poll_fn(|cx| {
            // Registered before the check: a close in between still wakes it.
            self.task.register(cx.waker());
            self.close_reason().map_or(Poll::Pending, Poll::Ready)
        })
        .await
    }

    /// Closes the socket with 4008 because it does not keep up (`why`); counted once.
    pub fn close_slow_consumer(&self, why: &'static str) {
        if self.close(CloseReason::SlowConsumer) {
            self.slow_closes.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("{why}: closing slow consumer");
        }
    }

    /// Whether the socket's task is wanted (polled in that task): it is to close, or has frames
    /// to write ([`Outlet::drain`]). A flag and a waker, so an idle socket's task holds no
    /// future for it.
    pub fn poll_attention(&self, cx: &mut Context<'_>) -> Poll<Attention> {
        self.task.register(cx.waker());
        if let Some(reason) = self.close_reason() {
            return Poll::Ready(Attention::Close(reason));
        }
        // Read first: most polls find it clear.
        if self.write_wanted.load(Ordering::Acquire)
            && self.write_wanted.swap(false, Ordering::AcqRel)
        {
            return Poll::Ready(Attention::Write);
        }
        Poll::Pending
    }

    pub async fn attention(&self) -> Attention {
        poll_fn(|cx| self.poll_attention(cx)).await
    }

    fn wake_writer(&self) {
        self.write_wanted.store(true, Ordering::Release);
        self.task.wake();
    }

    /// One keep-alive round: a socket that sent nothing since its last ping is closed (ping
    /// timeout); any other is pinged.
    pub fn ping(&self) {
        if self.awaiting_pong.swap(true, Ordering::Relaxed) {
            self.close(CloseReason::PingTimeout);
        } else {
            // A failed write closes the socket itself.
            let _ = self.send(Frame::ping().into_bytes());
        }
    }

    /// The peer sent something: it is alive.
    pub fn heard_from_peer(&self) {
        // Read first: most reads find it clear, and a store would dirty a shared cache line.
        if self.awaiting_pong.load(Ordering::Relaxed) {
            self.awaiting_pong.store(false, Ordering::Relaxed);
        }
    }

    /// The raw socket, on plain TCP.
    pub fn direct(&self) -> Option<&Arc<TcpStream>> {
        self.direct.as_ref().map(|direct| &direct.tcp)
    }

    /// Writes the backlog until it is empty, waiting for room as long as it takes (the caller
    /// bounds it); then, with a direct socket, others write again. Without a direct socket it
    /// writes to `stream`, the upgraded one.
    pub async fn drain(&self, stream: Option<&mut Upgraded>) -> io::Result<()> {
        match (&self.direct, stream) {
            (Some(direct), _) => loop {
                {
                    let mut backlog = self.backlog.lock();
                    backlog.task_writes = true;
                    match backlog.write_with(|frames| direct.send_in_task(frames)) {
                        Progress::Empty => {
                            backlog.task_writes = false;
                            // A socket that pushed back once keeps no room for frames while idle.
                            backlog.frames = VecDeque::new();
                            return Ok(());
                        }
                        Progress::Blocked => {}
                        Progress::Failed(err) => {
                            backlog.broken = true;
                            return Err(err);
                        }
                    }
                }
                direct.tcp.writable().await?;
            },
            (None, None) => Ok(()),
            (None, Some(io)) => loop {
                let batch: Vec<Bytes> = {
                    let mut backlog = self.backlog.lock();
                    if backlog.frames.is_empty() {
                        return Ok(());
                    }
                    // Taken out before written: if the write is cut, so is the stream.
                    backlog.mid_frame = true;
                    let count = backlog.frames.len().min(MAX_FRAMES_PER_WRITE);
                    backlog.frames.drain(..count).collect()
                };
                if let [frame] = batch.as_slice() {
                    io.write_all(frame).await?;
                } else {
                    io.write_all(&batch.concat()).await?;
                }
                io.flush().await?;
                self.backlog.lock().mid_frame = false;
            },
        }
    }

    /// Refuses deliveries from now on (the socket is ending).
    pub fn seal(&self) {
        self.backlog.lock().sealed = true;
    }

    /// Drops the frames that wait, but for one partly written.
    pub fn discard(&self) {
        let mut backlog = self.backlog.lock();
        let keep = usize::from(backlog.mid_frame);
        backlog.frames.truncate(keep);
    }

    /// Takes the payloads waiting in the backlog (hub tests, with no socket).
    #[cfg(test)]
    pub fn take_waiting(&self) -> Vec<Vec<u8>> {
        let frames = std::mem::take(&mut self.backlog.lock().frames);
        frames.into_iter().map(|bytes| Frame::from_wire(bytes).payload().to_vec()).collect()
    }

    /// Whether the stream is cut: a frame was partly written and cannot be finished, or the
    /// peer is gone. Nothing more may be written then.
    pub fn is_cut(&self) -> bool {
        let backlog = self.backlog.lock();
        // With a direct socket a partly written frame stays in the backlog to be finished.
        backlog.broken || (backlog.mid_frame && self.direct.is_none())
    }
}
