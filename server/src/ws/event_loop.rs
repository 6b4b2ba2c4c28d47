//! The readiness loops that serve plain-TCP sockets. Each loop is one task owning a slab of
//! sockets and one edge-triggered epoll set (mio): it reads a socket when it is readable, writes
//! a socket's backlog when the socket has room again after pushing back, and acts on what a
//! socket's outlet calls it for (close, write, its session's work). So an idle socket holds only
//! its own state: no task, no timer, no registration with the async runtime.

use std::{
    collections::HashMap,
    future::poll_fn,
    io::{self, Read},
    os::fd::{AsRawFd, RawFd},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use mio::{Events, Interest, Poll, Token, unix::SourceFd};
use slab::Slab;
use tokio::{
    io::unix::AsyncFd,
    sync::mpsc,
    time::{Instant, sleep},
};
use tokio_util::sync::CancellationToken;

use super::{
    Ctx,
    socket::{CLOSE_TIMEOUT, Socket},
};
use crate::delivery::{CloseReason, Flush, Outlet, Owner};

/// Bytes read at once, into a buffer each loop shares among its sockets.
const READ_BUFFER: usize = 64 * 1024;
/// Reads of one socket per readiness before the loop serves the others (it comes back).
const READS_PER_TURN: usize = 16;
/// Readiness events taken from the epoll set at once.
const EVENTS: usize = 1024;
/// Sockets waiting to be taken by a loop.
const ADOPTIONS: usize = 1024;
/// A socket whose writes wait this long for room has a peer that stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a loop with sockets closing or waiting for room checks their deadlines.
const TICK: Duration = Duration::from_millis(100);

/// A socket for a loop to take over.
pub(super) struct Adoption {
    pub socket: Socket,
    pub tcp: DirectTcp,
    /// Bytes read from it before (by the HTTP stack).
    pub leftover: Vec<u8>,
}

/// A plain-TCP socket's descriptor, tied to its outlet: the outlet is retired before the
/// descriptor closes, however it goes, so nothing writes to a descriptor number the system may
/// have handed to another socket since.
pub(super) struct DirectTcp {
    tcp: Option<std::net::TcpStream>,
    outlet: Arc<Outlet>,
}

impl DirectTcp {
    pub fn new(tcp: std::net::TcpStream, outlet: Arc<Outlet>) -> DirectTcp {
        DirectTcp { tcp: Some(tcp), outlet }
    }

    fn fd(&self) -> RawFd {
        self.tcp.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }

    /// The descriptor, for an [`Entry`] (which retires the outlet itself) to hold.
    fn into_inner(mut self) -> Option<std::net::TcpStream> {
        self.tcp.take()
    }
}

impl Drop for DirectTcp {
    fn drop(&mut self) {
        if self.tcp.is_some() {
            self.outlet.retire();
        }
    }
}

/// The node's readiness loops; new sockets are spread over them in turn.
pub struct Loops {
    loops: Vec<LoopHandle>,
    next: AtomicUsize,
}

struct LoopHandle {
    owner: Arc<Owner>,
    adoptions: mpsc::Sender<Adoption>,
}

impl Loops {
    /// Starts `count` loops as tasks of `ctx`'s tracker; they end once `shutdown` is cancelled
    /// and their last socket closed.
    pub fn start(count: usize, ctx: &Ctx, shutdown: &CancellationToken) -> io::Result<Loops> {
        let mut loops = Vec::with_capacity(count);
        for _ in 0..count.max(1) {
            let owner = Arc::new(Owner::default());
            let (adoptions, waiting) = mpsc::channel(ADOPTIONS);
            // SAFETY: a mio `Poll` owns its epoll descriptor until it is dropped and always
            // answers `as_raw_fd` with it.
            let epoll = unsafe {
                AsyncFd::register_with_interest(Poll::new()?, tokio::io::Interest::READABLE)
            }?;
            let event_loop = EventLoop {
                epoll,
                sockets: Slab::new(),
                owner: owner.clone(),
                adoptions: waiting,
                ctx: ctx.clone(),
                closing: HashMap::new(),
                stalled: HashMap::new(),
                again: Vec::new(),
                read_buffer: vec![0; READ_BUFFER].into_boxed_slice(),
            };
            ctx.tasks.spawn(event_loop.run(shutdown.clone()));
            loops.push(LoopHandle { owner, adoptions });
        }
        Ok(Loops { loops, next: AtomicUsize::new(0) })
    }

    /// The loop a new socket goes to: its number, and the owner to make its outlet with.
    /// Sockets that talk to each other (relay peers with one id) share a `group`, and so a loop:
    /// what one sends the other is then written within one turn of that loop, without waking
    /// another. Any other socket goes to the loops in turn.
    pub(super) fn pick(&self, group: Option<&str>) -> (usize, Arc<Owner>) {
        let turn = match group {
            Some(group) => {
                let mut hasher = std::hash::DefaultHasher::new();
                std::hash::Hash::hash(group, &mut hasher);
                std::hash::Hasher::finish(&hasher) as usize
            }
            None => self.next.fetch_add(1, Ordering::Relaxed),
        };
        let index = turn % self.loops.len();
        (index, self.loops[index].owner.clone())
    }

    /// Hands a socket to loop `index` (from [`pick`](Self::pick)); it waits while that loop
    /// has many sockets to take already. Gives it back when that loop has ended.
    pub(super) async fn adopt(&self, index: usize, adoption: Adoption) -> Result<(), Adoption> {
        self.loops[index].adoptions.send(adoption).await.map_err(|refused| refused.0)
    }
}

/// One loop's sockets, by their token (their key in the slab).
struct EventLoop {
    epoll: AsyncFd<Poll>,
    sockets: Slab<Box<Entry>>,
    owner: Arc<Owner>,
    adoptions: mpsc::Receiver<Adoption>,
    ctx: Ctx,
    /// Sockets in their close handshake, and when it gives up.
    closing: HashMap<usize, Instant>,
    /// Sockets that pushed back, and since when their writes wait for room.
    stalled: HashMap<usize, Instant>,
    /// Sockets that stopped reading for others' turn: they read again after this turn.
    again: Vec<usize>,
    read_buffer: Box<[u8]>,
}

/// One socket of a loop: what it means and the descriptor it is read from.
struct Entry {
    socket: Socket,
    tcp: std::net::TcpStream,
}

impl Drop for Entry {
    fn drop(&mut self) {
        // Before the descriptor closes (see `DirectTcp`).
        self.socket.outlet().retire();
    }
}

/// What woke a loop.
enum Wake {
    Adoption(Option<Adoption>),
    Called,
    Ready(io::Result<()>),
    Tick,
    ReadAgain,
    Shutdown,
}

impl EventLoop {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut events = Events::with_capacity(EVENTS);
        let mut calls = Vec::new();
        let (mut shutting_down, mut adoptions_open, mut ticking) = (false, true, false);
        // Made once: a wait made anew on every turn would register with the runtime each time.
        let cancelled = shutdown.cancelled();
        let tick = sleep(TICK);
        tokio::pin!(cancelled, tick);
        loop {
            if shutting_down && self.sockets.is_empty() {
                break;
            }
            let has_deadlines = !self.closing.is_empty() || !self.stalled.is_empty();
            if has_deadlines && !ticking {
                tick.as_mut().reset(Instant::now() + TICK);
                ticking = true;
            }
            let read_again = !self.again.is_empty();
            let owner = &self.owner;
            let wake = tokio::select! {
                () = &mut cancelled, if !shutting_down => Wake::Shutdown,
                () = poll_fn(|cx| owner.poll_called(cx)) => Wake::Called,
                ready = wait_for_events(&mut self.epoll, &mut events) => Wake::Ready(ready),
                adoption = self.adoptions.recv(), if adoptions_open => Wake::Adoption(adoption),
                () = &mut tick, if ticking => {
                    ticking = false;
                    Wake::Tick
                }
                // Sockets that stopped reading for the others' turn go on, in turn with the rest.
                () = std::future::ready(()), if read_again => Wake::ReadAgain,
            };
            // Calls from here on are taken below, before the next wait.
            self.owner.serving();
            match wake {
                Wake::Adoption(Some(adoption)) => self.adopt(adoption),
                Wake::Adoption(None) => adoptions_open = false,
                // Served below, with the calls made while serving anything else.
                Wake::Called => {}
                Wake::Ready(Ok(())) => {
                    for event in events.iter() {
                        let token = event.token().0;
                        if event.is_writable() && self.stalled.contains_key(&token) {
                            self.flush(token);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read(token);
                        }
                        self.settle(token);
                    }
                }
                Wake::Ready(Err(err)) => {
                    tracing::error!(%err, "a readiness loop cannot wait for its sockets");
                    break;
                }
                Wake::Tick => self.check_deadlines(),
                Wake::ReadAgain => {
                    for token in std::mem::take(&mut self.again) {
                        self.read(token);
                        self.settle(token);
                    }
                }
                Wake::Shutdown => shutting_down = true,
            }
            // Calls made while serving (a socket's job had its partner here called, a write
            // pushed back) are served now rather than after another wait.
            while self.owner.take_calls(&mut calls) {
                for token in calls.drain(..) {
                    self.called(token as usize);
                }
            }
        }
        for mut entry in self.sockets.drain() {
            entry.socket.abandon(&self.ctx);
        }
    }

    /// Takes a socket over: registers it, gives it what was read before, starts it.
    fn adopt(&mut self, adoption: Adoption) {
        let Adoption { mut socket, tcp, leftover } = adoption;
        let slot = self.sockets.vacant_entry();
        let token = slot.key();
        let registered = u32::try_from(token).map_err(io::Error::other).and_then(|number| {
            let interest = Interest::READABLE | Interest::WRITABLE;
            let registry = self.epoll.get_ref().registry();
            registry.register(&mut SourceFd(&tcp.fd()), Token(token), interest).map(|()| number)
        });
        let number = match registered {
            Ok(number) => number,
            Err(err) => {
                tracing::warn!(%err, "cannot watch a socket: dropping it");
                return socket.abandon(&self.ctx);
            }
        };
        let Some(tcp) = tcp.into_inner() else {
            return socket.abandon(&self.ctx);
        };
        socket.outlet().set_token(number);
        let entry = slot.insert(Box::new(Entry { socket, tcp }));
        if !leftover.is_empty() {
            entry.socket.received(&leftover, &self.ctx);
        }
        entry.socket.start(&self.ctx);
        // What was asked of the socket before it had a token.
        self.called(token);
    }

    /// Acts on what a socket's outlet called this loop for.
    fn called(&mut self, token: usize) {
        let Some(entry) = self.sockets.get_mut(token) else {
            // Called after it ended (its token may be another socket's by now: harmless).
            return;
        };
        let wanted = entry.socket.outlet().take_wanted();
        if wanted.write {
            self.flush(token);
        }
        if let Some(entry) = self.sockets.get_mut(token) {
            entry.socket.wanted(wanted, &self.ctx);
            if wanted.resume {
                // It read nothing while its job ran: what came meanwhile waits unannounced.
                self.read(token);
            }
        }
        self.settle(token);
    }

    /// Reads a socket while it wants to, until it has nothing more (or had its share).
    fn read(&mut self, token: usize) {
        let Some(entry) = self.sockets.get_mut(token) else {
            return;
        };
        for _ in 0..READS_PER_TURN {
            if !entry.socket.wants_read() {
                return;
            }
            match (&entry.tcp).read(&mut self.read_buffer) {
                Ok(0) => return entry.socket.read_ended(&self.ctx),
                Ok(read) => {
                    entry.socket.received(&self.read_buffer[..read], &self.ctx);
                    if read < self.read_buffer.len() {
                        // Edge-triggered: a short read took everything there was.
                        return;
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    tracing::debug!(%err, "read failed");
                    return entry.socket.read_ended(&self.ctx);
                }
            }
        }
        self.again.push(token);
    }

    /// Writes a socket's backlog, for a socket that pushed back.
    fn flush(&mut self, token: usize) {
        let Some(entry) = self.sockets.get_mut(token) else {
            return;
        };
        match entry.socket.outlet().write_backlog() {
            Flush::Done => {
                self.stalled.remove(&token);
                entry.socket.flushed(&self.ctx);
            }
            Flush::Blocked => {
                self.stalled.entry(token).or_insert_with(Instant::now);
            }
            Flush::Failed => {
                self.stalled.remove(&token);
                entry.socket.lost(&self.ctx);
            }
        }
    }

    /// After a socket was served: drops it once it ended, or notes when its close handshake
    /// gives up.
    fn settle(&mut self, token: usize) {
        let Some(entry) = self.sockets.get(token) else {
            return;
        };
        if entry.socket.is_ended() {
            self.remove(token);
        } else if entry.socket.is_closing() {
            self.closing.entry(token).or_insert_with(|| Instant::now() + CLOSE_TIMEOUT);
        }
    }

    fn remove(&mut self, token: usize) {
        let Some(entry) = self.sockets.try_remove(token) else {
            return;
        };
        self.closing.remove(&token);
        self.stalled.remove(&token);
        let fd = entry.tcp.as_raw_fd();
        if let Err(err) = self.epoll.get_ref().registry().deregister(&mut SourceFd(&fd)) {
            tracing::debug!(%err, "cannot unwatch a socket");
        }
        // Dropping the entry retires the outlet, then closes the descriptor.
    }

    /// Ends close handshakes that took too long, and closes sockets whose writes have waited
    /// too long for room (their peers stopped reading).
    fn check_deadlines(&mut self) {
        let now = Instant::now();
        let expired: Vec<usize> =
            self.closing.iter().filter(|(_, until)| **until <= now).map(|(t, _)| *t).collect();
        for token in expired {
            self.closing.remove(&token);
            if let Some(entry) = self.sockets.get_mut(token) {
                entry.socket.timed_out(&self.ctx);
            }
            self.settle(token);
        }
        let stalled: Vec<usize> = self
            .stalled
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= WRITE_TIMEOUT)
            .map(|(token, _)| *token)
            .collect();
        for token in stalled {
            self.stalled.remove(&token);
            if let Some(entry) = self.sockets.get(token) {
                tracing::debug!("write stalled");
                entry.socket.outlet().close(CloseReason::SlowConsumer);
            }
        }
    }
}

/// Waits until the epoll set has events and takes them into `events`.
async fn wait_for_events(epoll: &mut AsyncFd<Poll>, events: &mut Events) -> io::Result<()> {
    loop {
        let mut ready = epoll.readable_mut().await?;
        ready.get_inner_mut().poll(events, Some(Duration::ZERO))?;
        let taken = events.iter().count();
        if taken < events.capacity() {
            // All taken: the next wait waits for new ones (unless some came meanwhile, which
            // the runtime notices and keeps the set ready for).
            ready.clear_ready();
        }
        if taken > 0 {
            return Ok(());
        }
    }
}
