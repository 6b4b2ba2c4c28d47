//! The write side of a server socket, and what its owner is wanted for. On plain TCP, frames are
//! written straight to the socket by whoever has them: the fan-out writes each recipient's
//! frames once every recipient has taken them (so frames published together leave in one
//! write). Only when a socket pushes back (or is TLS, or is not yet open) do frames wait in its
//! bounded backlog for the socket's [`Owner`] (its readiness loop, or its task for TLS), called
//! once, to write. Every write of a socket happens under its lock, so whole frames never
//! interleave.

use std::{
    collections::VecDeque,
    io::{self, IoSlice},
    os::fd::{BorrowedFd, RawFd},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use bytes::{Buf, Bytes};
use parking_lot::Mutex;
use rustix::net::{SendAncillaryBuffer, SendFlags};

use super::{CloseReason, Frame, Owner, PendingWrites};

/// Most frames in one write.
const MAX_FRAMES_PER_WRITE: usize = 64;

/// Bits of [`Outlet::state`]: the close reason's number in the low byte, then flags, and the
/// socket's token at its owner in the high half (one word, so a call reads the token it calls
/// with in the same step that marks the socket called).
const REASON_MASK: u64 = 0xFF;
/// The backlog is the owner's to write.
const WANT_WRITE: u64 = 1 << 8;
/// The socket's session has work for the owner (see [`Outlet::call_for_work`]).
const WANT_WORK: u64 = 1 << 9;
/// A job of the socket's session ended (see [`Outlet::job_done`]).
const JOB_DONE: u64 = 1 << 10;
/// The owner has been called and has not taken the call yet.
const CALLED: u64 = 1 << 11;
/// Pinged, and nothing heard from the peer since.
const AWAITING_PONG: u64 = 1 << 12;
/// The owner took the socket: the token is set.
const TAKEN: u64 = 1 << 13;
/// Everything [`Outlet::take_wanted`] takes.
const WANTS: u64 = WANT_WRITE | WANT_WORK | JOB_DONE | CALLED;
const TOKEN_SHIFT: u32 = 32;

/// One socket's writes: its descriptor (plain TCP), its backlog, its owner, and one word of
/// state (why it is to close, what its owner is wanted for, whether it answered its last ping).
/// Every socket has one, so it holds no more than that.
pub struct Outlet {
    /// The socket's descriptor on plain TCP; its owner keeps the descriptor open until it
    /// [retires](Self::retire) the outlet, after which nothing is written to it.
    direct: Option<RawFd>,
    backlog: Mutex<Backlog>,
    owner: Arc<Owner>,
    state: AtomicU64,
    /// Most frames that may wait.
    bound: u32,
}

/// What the owner of a socket is wanted for, taken with [`Outlet::take_wanted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    /// The socket is to close, for this reason (it stays set).
    pub close: Option<CloseReason>,
    /// The backlog waits for the owner to write it.
    pub write: bool,
    /// The socket's session has work for the owner.
    pub work: bool,
    /// A job of the socket's session ended: the owner resumes the socket.
    pub resume: bool,
}

/// How far the owner's write of the backlog got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Everything is written; others write directly again.
    Done,
    /// The socket has no room: the owner writes the rest once it has.
    Blocked,
    /// The socket is gone.
    Failed,
}

#[derive(Default)]
struct Backlog {
    /// Whole frames not yet written; the front one may be partly written.
    frames: VecDeque<Bytes>,
    /// The front frame is partly written (or, on TLS, frames are out being written): the
    /// stream is cut if the socket ends now.
    mid_frame: bool,
    /// In a [`PendingWrites`] that will write the backlog out.
    pending: bool,
    /// The owner writes the backlog: the socket pushed back, has no direct socket, or is not
    /// open yet.
    owner_writes: bool,
    /// Deliveries are refused: the socket is ending.
    sealed: bool,
    /// The close frame is queued: nothing more is written after it.
    finished: bool,
    /// A write failed (the peer is gone), or the owner retired the socket.
    broken: bool,
}

/// How far one attempt to write a backlog got.
enum Progress {
    Empty,
    Blocked,
    Failed(io::Error),
}

/// Sends `frames` straight to the socket: a raw system call, not a cancellation point, and
/// without stopping at an async runtime's readiness for every recipient of a fan-out.
fn send(fd: RawFd, frames: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: the owner keeps the descriptor open until it retires the outlet, and every send
    // happens under the backlog's lock after checking that it has not (`Backlog::broken`).
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let sent = match frames {
        [frame] => rustix::net::send(fd, frame, SendFlags::NOSIGNAL),
        _ => {
            let mut control = SendAncillaryBuffer::default();
            rustix::net::sendmsg(fd, frames, &mut control, SendFlags::NOSIGNAL)
        }
    };
    sent.map_err(io::Error::from)
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

    /// Writes frames to `fd` until none is left or the socket has no room.
    fn write_to(&mut self, fd: RawFd) -> Progress {
        loop {
            if self.broken {
                return Progress::Failed(io::ErrorKind::BrokenPipe.into());
            }
            let result = match self.frames.len() {
                0 => return Progress::Empty,
                1 => send(fd, &[IoSlice::new(&self.frames[0])]),
                count => {
                    let mut slices = [IoSlice::new(&[]); MAX_FRAMES_PER_WRITE];
                    for (slice, frame) in slices.iter_mut().zip(&self.frames) {
                        *slice = IoSlice::new(frame);
                    }
                    send(fd, &slices[..count.min(MAX_FRAMES_PER_WRITE)])
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

    /// The socket is gone: nothing more is written or kept.
    fn break_off(&mut self) {
        self.broken = true;
        self.sealed = true;
        self.finished = true;
        self.frames = VecDeque::new();
    }
}

impl Outlet {
    /// An outlet writing to `direct` when given (plain TCP), else only through its owner. At
    /// most `bound` frames wait; a socket that needs more is closed as a slow consumer. Nothing
    /// is written directly before [`open`](Self::open), nor called for before the owner
    /// [took](Self::set_token) the socket.
    pub fn new(direct: Option<RawFd>, owner: Arc<Owner>, bound: usize) -> Arc<Outlet> {
        let backlog = Backlog { owner_writes: true, ..Backlog::default() };
        Arc::new(Outlet {
            direct,
            backlog: Mutex::new(backlog),
            owner,
            state: AtomicU64::new(0),
            bound: u32::try_from(bound.max(1)).unwrap_or(u32::MAX),
        })
    }

    /// The owner took the socket as number `token`: calls reach it from now on. The owner then
    /// [takes](Self::take_wanted) what was wanted before.
    pub fn set_token(&self, token: u32) {
        self.state.fetch_or(TAKEN | (u64::from(token) << TOKEN_SHIFT), Ordering::AcqRel);
    }

    /// Lets frames out, `first` ahead of any delivery offered before.
    pub fn open(&self, first: Option<Frame>) {
        let mut backlog = self.backlog.lock();
        if let Some(first) = first {
            backlog.frames.push_front(first.into_bytes());
        }
        if backlog.frames.is_empty() {
            backlog.owner_writes = self.direct.is_none();
        } else {
            self.call(WANT_WRITE);
        }
    }

    /// Appends frames, calling the owner if it writes and had nothing to; false (the socket is
    /// then closed as a slow consumer) when the backlog is full. `last` (the close frame) is
    /// taken even then: it ends what is written.
    fn append(&self, backlog: &mut Backlog, frame: Bytes, last: bool) -> bool {
        if backlog.frames.len() >= self.bound as usize && !last {
            self.close(CloseReason::SlowConsumer);
            return false;
        }
        backlog.frames.push_back(frame);
        if backlog.owner_writes && backlog.frames.len() == 1 {
            self.call(WANT_WRITE);
        }
        true
    }

    /// Offers a delivery. It is written when `pending` is written out, or by the owner. False
    /// when the socket is ending, or its backlog is full.
    pub fn offer(self: &Arc<Self>, frame: &Frame, pending: &mut PendingWrites) -> bool {
        let mut backlog = self.backlog.lock();
        if backlog.sealed || !self.append(&mut backlog, frame.bytes().clone(), false) {
            return false;
        }
        if !backlog.owner_writes && !backlog.pending {
            backlog.pending = true;
            pending.push(self.clone());
        }
        true
    }

    /// Writes a frame of the socket's own (an ack, a ping, a pong) behind what waits: at once
    /// when the socket has room and nobody else is about to write. False when the socket is
    /// ending or gone, or its backlog is full (then it is closed as a slow consumer).
    pub fn send(&self, frame: Frame) -> bool {
        self.write_own(frame, false)
    }

    /// Writes the close frame behind what waits: the last frame of the socket. False when it
    /// is gone or a close frame went before.
    pub fn send_close(&self, frame: Frame) -> bool {
        self.write_own(frame, true)
    }

    /// Like [`send`](Self::send) for several frames, written together.
    pub fn send_all(&self, frames: impl IntoIterator<Item = Frame>) -> bool {
        let mut backlog = self.backlog.lock();
        if backlog.finished {
            return false;
        }
        for frame in frames {
            if !self.append(&mut backlog, frame.into_bytes(), false) {
                return false;
            }
        }
        self.write_now(&mut backlog);
        true
    }

    fn write_own(&self, frame: Frame, last: bool) -> bool {
        let mut backlog = self.backlog.lock();
        if backlog.finished {
            return false;
        }
        if last {
            backlog.finished = true;
            backlog.sealed = true;
        }
        match self.direct {
            // Nothing waits: the frame is sent as it is, so a socket that only ever gets its own
            // frames (an ack, a ping) keeps no room for a queue.
            Some(fd) if !backlog.owner_writes && !backlog.pending && backlog.frames.is_empty() => {
                let progress = match send(fd, &[IoSlice::new(frame.bytes())]) {
                    Ok(written) if written == frame.bytes().len() => Progress::Empty,
                    Ok(written) => {
                        let mut rest = frame.into_bytes();
                        rest.advance(written);
                        backlog.frames.push_back(rest);
                        backlog.mid_frame = written > 0;
                        Progress::Blocked
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                        backlog.frames.push_back(frame.into_bytes());
                        Progress::Blocked
                    }
                    Err(err) => Progress::Failed(err),
                };
                self.settle(&mut backlog, progress);
                true
            }
            _ => {
                let appended = self.append(&mut backlog, frame.into_bytes(), last);
                self.write_now(&mut backlog);
                appended
            }
        }
    }

    /// Writes what waits straight to the socket, unless the owner or a pending write will.
    fn write_now(&self, backlog: &mut Backlog) {
        if !backlog.owner_writes
            && !backlog.pending
            && let Some(fd) = self.direct
        {
            let progress = backlog.write_to(fd);
            self.settle(backlog, progress);
        }
    }

    /// Writes the backlog out for a [`PendingWrites`] that gathered this outlet.
    pub(super) fn write_pending(&self) {
        let mut backlog = self.backlog.lock();
        backlog.pending = false;
        self.write_now(&mut backlog);
    }

    /// After a write outside the owner: a socket that pushed back is the owner's to write; one
    /// that failed is gone.
    fn settle(&self, backlog: &mut Backlog, progress: Progress) {
        match progress {
            Progress::Empty => {}
            Progress::Blocked => {
                backlog.owner_writes = true;
                self.call(WANT_WRITE);
            }
            Progress::Failed(err) => {
                tracing::debug!(%err, "write failed");
                backlog.break_off();
                self.close(CloseReason::Lost);
            }
        }
    }

    /// Writes the backlog to the direct socket, for its owner; then, once it is empty, others
    /// write directly again. A socket without a direct one has nothing to write here.
    pub fn write_backlog(&self) -> Flush {
        let Some(fd) = self.direct else {
            return Flush::Done;
        };
        let mut backlog = self.backlog.lock();
        backlog.owner_writes = true;
        match backlog.write_to(fd) {
            Progress::Empty => {
                backlog.owner_writes = false;
                // A socket that pushed back once keeps no room for frames while idle.
                backlog.frames = VecDeque::new();
                Flush::Done
            }
            Progress::Blocked => Flush::Blocked,
            Progress::Failed(err) => {
                tracing::debug!(%err, "write failed");
                backlog.break_off();
                Flush::Failed
            }
        }
    }

    /// Takes the frames that wait, at most a write's worth, for an owner that writes them to
    /// its stream itself (TLS). Until [`stream_written`](Self::stream_written), the stream is
    /// cut if the socket ends.
    pub fn take_for_stream(&self) -> Vec<Bytes> {
        let mut backlog = self.backlog.lock();
        let count = backlog.frames.len().min(MAX_FRAMES_PER_WRITE);
        backlog.mid_frame = count > 0;
        backlog.frames.drain(..count).collect()
    }

    /// The frames taken with [`take_for_stream`](Self::take_for_stream) are written whole.
    pub fn stream_written(&self) {
        self.backlog.lock().mid_frame = false;
    }

    /// Whether no frame waits.
    pub fn is_drained(&self) -> bool {
        self.backlog.lock().frames.is_empty()
    }

    /// Asks the owner to close the socket with `reason`; the first reason given wins (true for
    /// it).
    pub fn close(&self, reason: CloseReason) -> bool {
        let number = u64::from(reason.number());
        let set = |state: u64| (state & REASON_MASK == 0).then_some(state | number);
        let first = self.state.fetch_update(Ordering::AcqRel, Ordering::Acquire, set).is_ok();
        if first {
            self.call(0);
        }
        first
    }

    /// Why the socket is to close, once [`close`](Self::close) was called (tests: the owner
    /// [takes](Self::take_wanted) it).
    #[cfg(test)]
    pub fn close_reason(&self) -> Option<CloseReason> {
        CloseReason::from_number((self.state.load(Ordering::Acquire) & REASON_MASK) as u8)
    }

    /// Tells the owner the socket's session has work for it (items arrived for it).
    pub fn call_for_work(&self) {
        self.call(WANT_WORK);
    }

    /// Tells the owner a job of the socket's session ended.
    pub fn job_done(&self) {
        self.call(JOB_DONE);
    }

    /// Sets `bits` and calls the owner, unless it was called and has not taken that call yet.
    fn call(&self, bits: u64) {
        let before = self.state.fetch_or(bits | CALLED, Ordering::AcqRel);
        // Not taken yet: the owner takes what was wanted right after taking the socket.
        if before & CALLED == 0 && before & TAKEN != 0 {
            self.owner.call((before >> TOKEN_SHIFT) as u32);
        }
    }

    /// What the owner is wanted for (for the owner, once called); the next want calls it again.
    pub fn take_wanted(&self) -> Wanted {
        let before = self.state.fetch_and(!WANTS, Ordering::AcqRel);
        Wanted {
            close: CloseReason::from_number((before & REASON_MASK) as u8),
            write: before & WANT_WRITE != 0,
            work: before & WANT_WORK != 0,
            resume: before & JOB_DONE != 0,
        }
    }

    /// One keep-alive round: a socket that sent nothing since its last ping is closed (ping
    /// timeout); any other is pinged.
    pub fn ping(&self) {
        if self.state.fetch_or(AWAITING_PONG, Ordering::Relaxed) & AWAITING_PONG != 0 {
            self.close(CloseReason::PingTimeout);
        } else {
            // A failed write closes the socket itself.
            self.send(Frame::ping());
        }
    }

    /// The peer sent something: it is alive.
    pub fn heard_from_peer(&self) {
        // Read first: most reads find it clear, and a write would dirty a shared cache line.
        if self.state.load(Ordering::Relaxed) & AWAITING_PONG != 0 {
            self.state.fetch_and(!AWAITING_PONG, Ordering::Relaxed);
        }
    }

    /// Refuses deliveries from now on (the socket is ending).
    pub fn seal(&self) {
        self.backlog.lock().sealed = true;
    }

    /// Drops the frames that wait, but for one partly written.
    pub fn discard(&self) {
        let mut backlog = self.backlog.lock();
        let keep = usize::from(backlog.mid_frame && self.direct.is_some());
        backlog.frames.truncate(keep);
    }

    /// Whether the stream is cut: a frame was partly written and cannot be finished, or the
    /// peer is gone. Nothing more may be written then.
    pub fn is_cut(&self) -> bool {
        let backlog = self.backlog.lock();
        // With a direct socket a partly written frame stays in the backlog to be finished.
        backlog.broken || (backlog.mid_frame && self.direct.is_none())
    }

    /// The owner is done with the socket: nothing is written to it from now on, so the owner
    /// may close its descriptor.
    pub fn retire(&self) {
        self.backlog.lock().break_off();
    }

    /// Takes the payloads waiting in the backlog (tests, with no socket).
    #[cfg(test)]
    pub fn take_waiting(&self) -> Vec<Vec<u8>> {
        let frames = std::mem::take(&mut self.backlog.lock().frames);
        frames.into_iter().map(|bytes| Frame::from_wire(bytes).payload().to_vec()).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::Read,
        os::{fd::AsRawFd, unix::net::UnixStream},
        task::{Context, Waker},
    };

    use super::*;

    /// An outlet writing to one end of a socket pair, and the other end, the peer.
    struct Pair {
        outlet: Arc<Outlet>,
        owner: Arc<Owner>,
        peer: UnixStream,
        _socket: UnixStream,
    }

    fn pair(bound: usize) -> Pair {
        let (socket, peer) = UnixStream::pair().unwrap();
        socket.set_nonblocking(true).unwrap();
        peer.set_nonblocking(true).unwrap();
        // Small buffers, so a few frames fill them.
        socket2::SockRef::from(&socket).set_send_buffer_size(4096).unwrap();
        socket2::SockRef::from(&peer).set_recv_buffer_size(4096).unwrap();
        let owner = Arc::new(Owner::default());
        let outlet = Outlet::new(Some(socket.as_raw_fd()), owner.clone(), bound);
        outlet.set_token(7);
        Pair { outlet, owner, peer, _socket: socket }
    }

    impl Pair {
        /// The tokens the owner was called with since last asked.
        fn calls(&self) -> Vec<u32> {
            let mut calls = Vec::new();
            self.owner.take_calls(&mut calls);
            calls
        }

        /// Everything the peer can read now.
        fn received(&mut self) -> Vec<u8> {
            let mut received = Vec::new();
            let mut buf = [0u8; 65536];
            loop {
                match self.peer.read(&mut buf) {
                    Ok(0) => return received,
                    Ok(read) => received.extend_from_slice(&buf[..read]),
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => return received,
                    Err(err) => panic!("{err}"),
                }
            }
        }
    }

    fn text(payload: &str) -> Frame {
        Frame::text(payload)
    }

    fn wire(frames: &[&str]) -> Vec<u8> {
        frames.iter().flat_map(|payload| text(payload).bytes().to_vec()).collect()
    }

    #[test]
    fn nothing_goes_out_before_open_then_the_first_frame_leads() {
        let mut pair = pair(8);
        assert!(pair.outlet.send(text("ack")));
        assert!(pair.received().is_empty(), "the owner writes until the socket opens");
        assert_eq!(pair.calls(), [7], "the owner is called to write");
        pair.outlet.open(Some(text("welcome")));
        let wanted = pair.outlet.take_wanted();
        assert!(wanted.write && !wanted.work && !wanted.resume && wanted.close.is_none());
        assert_eq!(pair.outlet.write_backlog(), Flush::Done);
        assert_eq!(pair.received(), wire(&["welcome", "ack"]));
        // Open and caught up: its own frames go straight out, no owner needed.
        assert!(pair.outlet.send(text("pong")));
        assert_eq!(pair.received(), wire(&["pong"]));
        assert!(pair.calls().is_empty());
    }

    #[test]
    fn offers_leave_together_when_their_pending_writes_go() {
        let mut pair = pair(8);
        pair.outlet.open(None);
        let mut pending = PendingWrites::default();
        assert!(pair.outlet.offer(&text("one"), &mut pending));
        assert!(pair.outlet.offer(&text("two"), &mut pending));
        assert!(pair.received().is_empty(), "written once every recipient has the frame");
        // Its own frame waits behind them rather than overtaking.
        assert!(pair.outlet.send(text("ack")));
        assert!(pair.received().is_empty());
        drop(pending);
        assert_eq!(pair.received(), wire(&["one", "two", "ack"]));
        assert!(pair.calls().is_empty());
    }

    #[test]
    fn a_socket_that_pushes_back_is_its_owners_to_write_until_it_caught_up() {
        let mut pair = pair(1024);
        pair.outlet.open(None);
        let big = "x".repeat(1000);
        let mut sent = 0;
        while pair.calls().is_empty() {
            assert!(pair.outlet.send(text(&big)));
            sent += 1;
            assert!(sent < 1000, "the socket never pushed back");
        }
        assert!(pair.outlet.take_wanted().write);
        // While the owner writes, nobody else does: frames queue behind the partial one.
        assert!(pair.outlet.send(text("last")));
        assert!(!pair.outlet.is_drained());
        assert!(!pair.outlet.is_cut(), "a partly written frame is finished, not cut");
        let mut received = Vec::new();
        loop {
            received.extend(pair.received());
            match pair.outlet.write_backlog() {
                Flush::Done => break,
                Flush::Blocked => {}
                Flush::Failed => panic!("the peer is there"),
            }
        }
        received.extend(pair.received());
        let mut expected = Vec::new();
        for _ in 0..sent {
            expected.extend(wire(&[&big]));
        }
        expected.extend(wire(&["last"]));
        assert_eq!(received, expected, "every frame whole and in order");
        // Caught up: straight out again.
        assert!(pair.outlet.send(text("direct")));
        assert_eq!(pair.received(), wire(&["direct"]));
        assert!(pair.calls().is_empty());
    }

    #[test]
    fn a_full_backlog_closes_the_socket_as_a_slow_consumer_and_calls_once() {
        let pair = pair(2);
        let mut pending = PendingWrites::default();
        assert!(pair.outlet.offer(&text("0"), &mut pending));
        assert!(pair.outlet.offer(&text("1"), &mut pending));
        assert!(!pair.outlet.offer(&text("2"), &mut pending), "over the bound");
        assert!(!pair.outlet.send(text("3")));
        assert_eq!(pair.calls(), [7], "called once, however often it was wanted");
        let wanted = pair.outlet.take_wanted();
        assert_eq!(wanted.close, Some(CloseReason::SlowConsumer));
        assert!(wanted.write);
        assert_eq!(pair.outlet.take_waiting(), [b"0", b"1"]);
    }

    #[test]
    fn the_first_close_reason_wins_and_stays() {
        let pair = pair(4);
        assert!(pair.outlet.close(CloseReason::Unregistered));
        assert!(!pair.outlet.close(CloseReason::GoingAway));
        assert_eq!(pair.calls(), [7]);
        assert_eq!(pair.outlet.take_wanted().close, Some(CloseReason::Unregistered));
        assert_eq!(pair.outlet.take_wanted().close, Some(CloseReason::Unregistered));
        assert!(pair.calls().is_empty(), "taking the call does not call again");
    }

    #[test]
    fn calls_before_the_owner_took_the_socket_are_taken_with_it() {
        let owner = Arc::new(Owner::default());
        let outlet = Outlet::new(None, owner.clone(), 4);
        outlet.call_for_work();
        outlet.job_done();
        let mut calls = Vec::new();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(owner.poll_called(&mut cx).is_pending(), "no token to call with");
        outlet.set_token(3);
        let wanted = outlet.take_wanted();
        assert!(wanted.work && wanted.resume && !wanted.write);
        outlet.call_for_work();
        assert!(owner.poll_called(&mut cx).is_ready());
        assert!(owner.take_calls(&mut calls));
        assert_eq!(calls, [3]);
    }

    #[test]
    fn after_the_close_frame_or_retirement_nothing_more_is_written() {
        let mut pair = pair(4);
        pair.outlet.open(None);
        assert!(pair.outlet.send_close(CloseReason::GoingAway.frame()));
        assert!(!pair.outlet.send(text("late")));
        assert!(!pair.outlet.send_close(CloseReason::GoingAway.frame()));
        assert!(!pair.outlet.offer(&text("late"), &mut PendingWrites::default()));
        assert_eq!(pair.received(), CloseReason::GoingAway.frame().bytes().to_vec());
        pair.outlet.retire();
        assert!(pair.outlet.is_cut());
        assert_eq!(pair.outlet.write_backlog(), Flush::Failed);
    }

    #[test]
    fn a_peer_silent_for_a_whole_ping_round_times_out() {
        let mut pair = pair(4);
        pair.outlet.open(None);
        pair.outlet.ping();
        assert_eq!(pair.received(), Frame::ping().bytes().to_vec());
        pair.outlet.heard_from_peer();
        pair.outlet.ping();
        assert!(pair.calls().is_empty(), "it answered: pinged again, not closed");
        pair.outlet.ping();
        assert_eq!(pair.outlet.take_wanted().close, Some(CloseReason::PingTimeout));
    }

    #[test]
    fn a_write_to_a_peer_that_is_gone_breaks_the_outlet() {
        let mut pair = pair(4);
        pair.outlet.open(None);
        drop(std::mem::replace(&mut pair.peer, UnixStream::pair().unwrap().0));
        assert!(pair.outlet.send(text("into the void")));
        assert_eq!(pair.outlet.take_wanted().close, Some(CloseReason::Lost));
        assert!(pair.outlet.is_cut());
        assert!(!pair.outlet.send(text("more")), "nothing after the break");
    }
}
