//! An agent's receiving side: one thread reads every subscriber socket of the agent from one
//! epoll set (mio), parsing the server's frames in place, the way an event-loop server reads.
//! A tokio task per socket with tokio-tungstenite cost the agents about 5 µs per received
//! message, as much as the server under test, on the same two cores: the measuring tool then
//! took the CPU the servers were measured on.

use std::{
    io::{self, Read, Write},
    net::TcpStream,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
};

use mio::{Events, Interest, Poll, Token, Waker};
use parking_lot::Mutex;

use crate::marker;

/// The token that says new sockets wait in the channel.
const NEW_SOCKETS: Token = Token(usize::MAX);

/// Bytes read per `read` call (shared by all sockets of the thread).
const READ_BUFFER: usize = 64 * 1024;

/// One subscriber's receipts: (sequence, latency µs, receive time µs).
#[derive(Default)]
pub struct Log {
    pub receipts: Mutex<Vec<(u64, u64, u64)>>,
}

/// The reading thread of an agent; it ends when this is dropped.
pub struct Receiver {
    new_sockets: Option<mpsc::Sender<(TcpStream, Arc<Log>)>>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Starts the thread; every marked message any socket receives is logged and counted in
    /// `received`.
    pub fn start(received: Arc<AtomicU64>) -> io::Result<Receiver> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), NEW_SOCKETS)?);
        let (new_sockets, incoming) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("receiver".into())
            .spawn(move || read_loop(poll, &incoming, &received))?;
        Ok(Receiver { new_sockets: Some(new_sockets), waker, thread: Some(thread) })
    }

    /// Reads `socket` (an open WebSocket whose handshake is done and whose reader holds no
    /// buffered bytes) from now on, logging into `log`.
    pub fn add(&self, socket: TcpStream, log: Arc<Log>) -> io::Result<()> {
        socket.set_nonblocking(true)?;
        let sender = self.new_sockets.as_ref().ok_or(io::ErrorKind::BrokenPipe)?;
        sender.send((socket, log)).map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
        self.waker.wake()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // A closed channel ends the thread once it is woken.
        self.new_sockets = None;
        let _ = self.waker.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A socket being read.
struct Subscriber {
    stream: mio::net::TcpStream,
    log: Arc<Log>,
    /// Bytes of a frame not yet whole.
    partial: Vec<u8>,
    /// A fragmented message's payload so far.
    fragments: Vec<u8>,
}

fn read_loop(
    mut poll: Poll,
    incoming: &mpsc::Receiver<(TcpStream, Arc<Log>)>,
    received: &AtomicU64,
) {
    let mut events = Events::with_capacity(1024);
    let mut subscribers: Vec<Option<Subscriber>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut buffer = vec![0u8; READ_BUFFER];
    loop {
        if let Err(err) = poll.poll(&mut events, None) {
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            eprintln!("receiver: poll failed: {err}");
            return;
        }
        for event in &events {
            if event.token() == NEW_SOCKETS {
                loop {
                    match incoming.try_recv() {
                        Ok((socket, log)) => adopt(&poll, &mut subscribers, &mut free, socket, log),
                        Err(mpsc::TryRecvError::Empty) => break,
                        Err(mpsc::TryRecvError::Disconnected) => return,
                    }
                }
                continue;
            }
            let slot = event.token().0;
            let Some(subscriber) = subscribers.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            if !subscriber.read_available(&mut buffer, received) {
                let _ = poll.registry().deregister(&mut subscriber.stream);
                subscribers[slot] = None;
                free.push(slot);
            }
        }
    }
}

/// Registers `socket` in a free slot of `subscribers` (its token) and starts reading it.
fn adopt(
    poll: &Poll,
    subscribers: &mut Vec<Option<Subscriber>>,
    free: &mut Vec<usize>,
    socket: TcpStream,
    log: Arc<Log>,
) {
    let slot = free.pop().unwrap_or(subscribers.len());
    let mut stream = mio::net::TcpStream::from_std(socket);
    if let Err(err) = poll.registry().register(&mut stream, Token(slot), Interest::READABLE) {
        eprintln!("receiver: register failed: {err}");
        if slot < subscribers.len() {
            free.push(slot);
        }
        return;
    }
    let mut subscriber = Subscriber { stream, log, partial: Vec::new(), fragments: Vec::new() };
    // A ping read together with the subscribe ack stayed in the dropped reader, unanswered: an
    // unsolicited pong (RFC 6455 5.5.3) tells the server this socket is alive all the same.
    subscriber.pong(&[]);
    if slot == subscribers.len() {
        subscribers.push(Some(subscriber));
    } else {
        subscribers[slot] = Some(subscriber);
    }
}

impl Subscriber {
    /// Reads and handles what arrived; false once the socket ended.
    fn read_available(&mut self, buffer: &mut [u8], received: &AtomicU64) -> bool {
        loop {
            let read = match self.stream.read(buffer) {
                Ok(0) => return false,
                Ok(read) => read,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return true,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            };
            // Every frame of one read arrived by the time of that read.
            let now = marker::now_us();
            let open = if self.partial.is_empty() {
                let used = match self.handle_frames(&buffer[..read], now, received) {
                    Some(used) => used,
                    None => return false,
                };
                self.partial.extend_from_slice(&buffer[used..read]);
                true
            } else {
                let mut bytes = std::mem::take(&mut self.partial);
                bytes.extend_from_slice(&buffer[..read]);
                let used = self.handle_frames(&bytes, now, received);
                if let Some(used) = used {
                    bytes.drain(..used);
                    self.partial = bytes;
                }
                used.is_some()
            };
            if !open {
                return false;
            }
            // A short read emptied the socket: edge-triggered epoll reports the next bytes.
            if read < buffer.len() {
                return true;
            }
        }
    }

    /// Handles the whole frames at the start of `bytes`; how many bytes they took, or None
    /// once the socket is to end (a close frame, or a frame no server may send).
    fn handle_frames(&mut self, bytes: &[u8], now: u64, received: &AtomicU64) -> Option<usize> {
        let mut used = 0;
        let mut logged = 0;
        while let Some(frame) = ServerFrame::parse(&bytes[used..]) {
            let frame = frame.ok()?;
            let payload = &bytes[used + frame.header..used + frame.header + frame.length];
            used += frame.header + frame.length;
            let message = match (frame.opcode, frame.fin) {
                (OP_TEXT | OP_BINARY, true) if self.fragments.is_empty() => Some(payload),
                (OP_TEXT | OP_BINARY, false) | (OP_CONTINUATION, false) => {
                    self.fragments.extend_from_slice(payload);
                    None
                }
                (OP_CONTINUATION, true) => {
                    self.fragments.extend_from_slice(payload);
                    Some(&self.fragments[..])
                }
                (OP_PING, _) => {
                    self.pong(payload);
                    None
                }
                (OP_PONG, _) => None,
                _ => {
                    // A close frame (answered) or a protocol error: the socket ends.
                    let _ = self.stream.write(&[0x88, 0x80, 0, 0, 0, 0]);
                    return None;
                }
            };
            if let Some((seq, sent_us)) = message.and_then(marker::parse) {
                self.log.receipts.lock().push((seq, now.saturating_sub(sent_us), now));
                logged += 1;
            }
            if frame.fin && frame.opcode == OP_CONTINUATION {
                self.fragments.clear();
            }
        }
        if logged > 0 {
            received.fetch_add(logged, Ordering::Relaxed);
        }
        Some(used)
    }

    /// Answers a ping (a client's frames are masked; a zero key leaves the payload as is).
    fn pong(&mut self, payload: &[u8]) {
        let mut frame = vec![0x8A, 0x80 | payload.len() as u8, 0, 0, 0, 0];
        frame.extend_from_slice(payload);
        // A pong that finds the socket full is dropped: the server's next ping asks again.
        let _ = self.stream.write(&frame);
    }
}

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// The header of a frame from a server: unmasked (RFC 6455 5.1).
#[derive(Debug, PartialEq)]
struct ServerFrame {
    fin: bool,
    opcode: u8,
    /// Header bytes, then `length` payload bytes.
    header: usize,
    length: usize,
}

/// A frame a server may not send: masked, or a control frame over 125 bytes.
#[derive(Debug, PartialEq)]
struct BadFrame;

impl ServerFrame {
    /// The frame at the start of `bytes`, None until all of it is there.
    fn parse(bytes: &[u8]) -> Option<Result<ServerFrame, BadFrame>> {
        let [first, second, rest @ ..] = bytes else { return None };
        let (fin, opcode) = (first & 0x80 != 0, first & 0x0F);
        if second & 0x80 != 0 {
            return Some(Err(BadFrame));
        }
        let (header, length) = match second & 0x7F {
            126 => (4, u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize),
            127 => (10, u64::from_be_bytes(rest.get(..8)?.try_into().ok()?) as usize),
            short => (2, usize::from(short)),
        };
        if opcode >= 0x8 && length > 125 {
            return Some(Err(BadFrame));
        }
        (bytes.len() >= header + length).then_some(Ok(ServerFrame { fin, opcode, header, length }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_whole_only_once_every_byte_is_there() {
        let text = [0x81, 3, b'a', b'b', b'c'];
        let whole = ServerFrame { fin: true, opcode: OP_TEXT, header: 2, length: 3 };
        assert_eq!(ServerFrame::parse(&text), Some(Ok(whole)));
        assert_eq!(ServerFrame::parse(&text[..4]), None);
        assert_eq!(ServerFrame::parse(&text[..1]), None);

        let mut long = vec![0x02, 126, 0x01, 0x00];
        long.resize(4 + 256, b'x');
        let part = ServerFrame { fin: false, opcode: OP_BINARY, header: 4, length: 256 };
        assert_eq!(ServerFrame::parse(&long), Some(Ok(part)));
        assert_eq!(ServerFrame::parse(&long[..100]), None);

        let mut huge = vec![0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0];
        huge.resize(10 + 65536, b'x');
        assert_eq!(ServerFrame::parse(&huge).map(|f| f.map(|f| f.length)), Some(Ok(65536)));
    }

    #[test]
    fn masked_frames_and_long_control_frames_are_refused() {
        assert_eq!(ServerFrame::parse(&[0x81, 0x83, 1, 2, 3, 4, 5, 6, 7]), Some(Err(BadFrame)));
        assert_eq!(ServerFrame::parse(&[0x89, 126, 0, 200]), Some(Err(BadFrame)));
    }
}
