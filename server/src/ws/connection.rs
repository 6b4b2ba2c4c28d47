//! One WebSocket connection: a single task that drains the connection's queue in batches (one
//! flush per batch), answers client frames, pings, and closes with the right code.

use std::{
    future::Future,
    io,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use poem::Upgraded;
use tokio::{
    io::AsyncWriteExt,
    time::{Instant, MissedTickBehavior, interval_at, sleep, timeout},
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Error as WsError, Message, protocol::CloseFrame},
};
use tracing::Instrument;

use super::{Frame, WsSettings};
use crate::{
    hub::{CloseReason, ConnHandle, ConnQueue, SLOW_CONSUMER, Target},
    node::Node,
    store::{Client, StoreError},
};
use switchboard_protocol::{
    CLOSE_PING_TIMEOUT, CLOSE_SLOW_CONSUMER, CLOSE_UNREGISTERED, ClientFrame, ServerFrame,
};

type Socket = WebSocketStream<Upgraded>;

/// Most queued frames written before one flush.
const BATCH: usize = 64;
/// Frames below this size are coalesced into one write; the coalesced run stays below it too.
const COALESCE_LIMIT: usize = 16 * 1024;
/// A write that cannot progress for this long means the peer stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long closing (our close frame out, the peer's answer in) may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Store reads tried while subscription changes keep racing the connect.
const SYNC_ATTEMPTS: usize = 8;

const GOING_AWAY: CloseReason = CloseReason { code: 1001, reason: "server shutting down" };

/// How a connection ends: closed by us with a reason, or already gone.
enum End {
    Close(CloseReason),
    Gone,
}

pub(super) async fn run(node: Arc<Node>, client: Client, socket: Socket, settings: WsSettings) {
    let (conn, queue, generation) = node.hub.attach(client.id);
    // The id is a secret: spans carry the name and a connection number only.
    let span = tracing::info_span!("ws", conn = conn.id, client = %client.name);
    let connection = Connection { mid_frame: AtomicBool::new(false), node, client, conn, settings };
    connection.serve(socket, queue, generation).instrument(span).await;
}

struct Connection {
    /// Set while a delivery frame is partly written (see [`write_frames`]).
    mid_frame: AtomicBool,
    node: Arc<Node>,
    client: Client,
    conn: Arc<ConnHandle>,
    settings: WsSettings,
}

impl Connection {
    async fn serve(self, mut socket: Socket, mut queue: ConnQueue, generation: u64) {
        tracing::debug!("connected");
        let end = match self.subscriptions(generation).await {
            Ok(topics) => {
                let id = self.client.id.to_string();
                let welcome = ServerFrame::Welcome { id: &id, topics }.to_json();
                match self.guarded(send_message(&mut socket, Message::text(welcome))).await {
                    Ok(()) => self.pump(&mut socket, &mut queue).await,
                    Err(end) => end,
                }
            }
            Err(reason) => End::Close(reason),
        };
        self.node.hub.detach(&self.conn);
        if self.mid_frame.load(Ordering::Relaxed) {
            tracing::debug!("a write was cut mid-frame: dropping without a close frame");
        } else if let End::Close(reason) = end {
            tracing::debug!(code = reason.code, reason = reason.reason, "closing");
            close(&mut socket, reason).await;
        } else {
            tracing::debug!("disconnected");
        }
    }

    async fn pump(&self, socket: &mut Socket, queue: &mut ConnQueue) -> End {
        let period = self.settings.ping_interval;
        let mut ping = interval_at(Instant::now() + period, period);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut awaiting_pong = false;
        // tungstenite holds output of its own only after reading a ping (the pong) or a close
        // (the reply); our sends through it always flush fully.
        let mut control_pending = false;
        loop {
            let written = tokio::select! {
                biased;
                () = self.settings.shutdown.cancelled() => return End::Close(GOING_AWAY),
                reason = self.conn.closing() => return End::Close(reason),
                frame = queue.recv() => match frame {
                    Some(frame) => {
                        let flush_control = std::mem::take(&mut control_pending);
                        let frames = write_frames(socket, frame, queue, flush_control, &self.mid_frame);
                        self.guarded(frames).await
                    }
                    None => return End::Gone,
                },
                incoming = socket.next() => {
                    awaiting_pong = false;
                    let reply = match incoming {
                        None => return End::Gone,
                        Some(Ok(Message::Text(text))) => self.answer(text.as_str()).await,
                        Some(Ok(Message::Binary(_))) => error_frame(
                            None,
                            "binary_frame",
                            "binary frames are not part of the protocol; send JSON text",
                        ),
                        // Pings are answered and close frames acknowledged by tungstenite.
                        Some(Ok(Message::Ping(_) | Message::Close(_))) => {
                            control_pending = true;
                            continue;
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(err)) => return ended_by(err),
                    };
                    self.guarded(send_message(socket, Message::text(reply))).await
                }
                _ = ping.tick() => {
                    if awaiting_pong {
                        return End::Close(CloseReason { code: CLOSE_PING_TIMEOUT, reason: "ping timeout" });
                    }
                    awaiting_pong = true;
                    self.guarded(send_message(socket, Message::Ping(Default::default()))).await
                }
            };
            if let Err(end) = written {
                return end;
            }
        }
    }

    /// The client's topics, read from the store only after the socket joined the hub so that
    /// no subscription change can fall between the two (see [`crate::hub::Hub::sync_topics`]).
    async fn subscriptions(&self, mut generation: u64) -> Result<Vec<String>, CloseReason> {
        for _ in 0..SYNC_ATTEMPTS {
            let stored = match self.node.store.subscriptions(self.client.id).await {
                Ok(stored) => stored,
                Err(StoreError::UnknownClient) => {
                    return Err(CloseReason { code: CLOSE_UNREGISTERED, reason: "unregistered" });
                }
                Err(err) => {
                    tracing::warn!(%err, "cannot read subscriptions");
                    return Err(CloseReason { code: 1013, reason: "store unavailable" });
                }
            };
            match self.node.hub.sync_topics(self.client.id, generation, stored) {
                Ok(topics) => {
                    // Deliveries published on other nodes reach this one only once it listens.
                    if let Err(err) = self.node.bus.listen(&topics).await {
                        tracing::warn!(%err, "cannot listen to the client's topics");
                        return Err(CloseReason { code: 1013, reason: "cluster bus unavailable" });
                    }
                    return Ok(topics);
                }
                Err(newer) => generation = newer,
            }
        }
        Err(CloseReason { code: 1013, reason: "subscriptions kept changing; reconnect" })
    }

    /// Runs a write unless the connection is told to close, the server shuts down, or the
    /// write stalls (the peer stopped reading: a slow consumer).
    async fn guarded(&self, write: impl Future<Output = Result<(), WsError>>) -> Result<(), End> {
        tokio::select! {
            result = write => result.map_err(|_| End::Gone),
            reason = self.conn.closing() => Err(End::Close(reason)),
            () = self.settings.shutdown.cancelled() => Err(End::Close(GOING_AWAY)),
            () = sleep(WRITE_TIMEOUT) => {
                self.conn.close_slow_consumer(&self.node.hub.stats, "write stalled");
                Err(End::Close(SLOW_CONSUMER))
            }
        }
    }

    /// Applies one client frame and returns the ack or error frame to send back.
    async fn answer(&self, text: &str) -> String {
        let frame = match ClientFrame::parse(text) {
            Ok(frame) => frame,
            Err(err) => return error_frame(err.reference, err.code, &err.message),
        };
        let reference = frame.reference();
        let (node, name) = (&self.node, Some(self.client.name.as_str()));
        let result = match frame {
            ClientFrame::Subscribe { topics, .. } => node.subscribe(self.client.id, topics).await,
            ClientFrame::Unsubscribe { topics, .. } => {
                node.unsubscribe(self.client.id, topics).await
            }
            ClientFrame::Publish { topic, data, .. } => {
                node.publish(name, Target::Topic(topic), data).await.map(drop)
            }
            ClientFrame::Broadcast { data, .. } => {
                node.publish(name, Target::Broadcast, data).await.map(drop)
            }
            ClientFrame::Ping { .. } => Ok(()),
        };
        match result {
            Ok(()) => ServerFrame::Ack { reference }.to_json(),
            Err(err) => error_frame(reference, err.code(), &err.to_string()),
        }
    }
}

fn error_frame(
    reference: Option<&serde_json::value::RawValue>,
    error: &str,
    message: &str,
) -> String {
    ServerFrame::Error { reference, error, message }.to_json()
}

/// The close a read error calls for (RFC 6455 7.4.1), or none when the peer is gone.
fn ended_by(err: WsError) -> End {
    let reason = match err {
        WsError::Capacity(_) => CloseReason { code: 1009, reason: "message too big" },
        WsError::Utf8(_) => CloseReason { code: 1007, reason: "invalid UTF-8" },
        WsError::Protocol(_) => CloseReason { code: 1002, reason: "protocol error" },
        _ => return End::Gone,
    };
    End::Close(reason)
}

/// Sends one message through tungstenite (welcome, ack, error, ping).
async fn send_message(socket: &mut Socket, message: Message) -> Result<(), WsError> {
    socket.send(message).await
}

/// Writes `first` and the frames already queued behind it (up to [`BATCH`]) straight to the
/// socket as the bytes encoded once for every recipient. poem's upgraded IO has no vectored
/// write, so runs of small frames are coalesced into one write; a frame that is alone or large
/// is written from its shared bytes. With `flush_control`, tungstenite's pending control frames
/// go out first so they never interleave with ours. `mid_frame` stays set if this future is dropped while a
/// frame is half written: the stream is then cut and must not carry a close frame.
async fn write_frames(
    socket: &mut Socket,
    first: Frame,
    queue: &mut ConnQueue,
    flush_control: bool,
    mid_frame: &AtomicBool,
) -> Result<(), WsError> {
    if flush_control {
        socket.flush().await?;
    }
    let io = socket.get_mut();
    let mut coalesced = Vec::new();
    let mut next = Some(first);
    let mut written = 0;
    while let Some(frame) = next.take() {
        written += 1;
        next = if written < BATCH { queue.try_recv().ok() } else { None };
        let small = frame.len() < COALESCE_LIMIT;
        if small && (next.is_some() || !coalesced.is_empty()) {
            coalesced.extend_from_slice(frame.as_bytes());
            if next.is_none() || coalesced.len() >= COALESCE_LIMIT {
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

/// Sends our close frame and, unless the peer is unresponsive anyway (ping timeout, slow
/// consumer), waits briefly for its answer so the close is clean.
async fn close(socket: &mut Socket, reason: CloseReason) {
    let frame = CloseFrame { code: reason.code.into(), reason: reason.reason.into() };
    let peer_is_responsive = !matches!(reason.code, CLOSE_PING_TIMEOUT | CLOSE_SLOW_CONSUMER);
    let _ = timeout(CLOSE_TIMEOUT, async {
        if socket.send(Message::Close(Some(frame))).await.is_ok() && peer_is_responsive {
            while let Some(Ok(_)) = socket.next().await {}
        }
    })
    .await;
}
