//! One relay peer's socket (`GET /relay/{id}`): meets a partner with the same id, relays every
//! frame it sends to that partner and writes what the partner sends, and tells the partner when
//! it leaves. The strings it writes are the relay protocol's (openapi/PROTOCOL.md).

use std::sync::{Arc, atomic::AtomicBool};

use futures_util::StreamExt;
use poem::{
    Request, Response, handler,
    web::{Data, Path, Query},
};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::Instrument;

use super::{
    Frame, WsSettings,
    socket::{
        self, BATCH, End, GOING_AWAY, PING_TIMEOUT, Socket, ended_by, finish, guarded, ping_timer,
        write_frames,
    },
};
use crate::{
    error::AppError,
    hub::CloseReason,
    node::Node,
    relay::{PeerHandle, Reach, Relay, RelayItem, valid_id},
    store::PeerAddr,
};

const WAITING: &str = "/status:waiting";
const CONNECTED: &str = "/status:connected";
const REMOTE_OPEN: &str = "/remote:open";
const REMOTE_CLOSE: &str = "/remote:close";
/// Texts starting with these are the server's; a peer cannot send them.
const RESERVED: [&str; 3] = ["/remote:", "/status:", "/error:"];
const NOT_RECEIVED: &str = "/error:0001:The message was not received by anyone.:";
const RESERVED_PREFIX: &str = "/error:0002:Reserved prefix.:";

const UNAVAILABLE: CloseReason = CloseReason { code: 1013, reason: "relay unavailable" };

#[derive(serde::Deserialize)]
pub struct RelayQuery {
    key: Option<String>,
}

/// `GET /relay/:id`: checks the id (400), the key when relay keys are configured (403) and that
/// peers can meet now (503), all before the upgrade.
#[handler]
pub async fn upgrade(
    req: &Request,
    Path(id): Path<String>,
    Query(query): Query<RelayQuery>,
    node: Data<&Arc<Node>>,
    settings: Data<&WsSettings>,
) -> poem::Result<Response> {
    socket::handshake_key(req)?;
    if !valid_id(&id) {
        return Err(AppError::BadRequest(format!(
            "relay id must be 1-128 of A-Za-z0-9_.:- (got `{id}`)"
        ))
        .into());
    }
    if !node.relay.key_is_valid(query.key.as_deref()) {
        let why = if query.key.is_none() { "missing relay key" } else { "invalid relay key" };
        return Err(AppError::Forbidden(why).into());
    }
    node.bus.check().map_err(AppError::from)?;
    let (relay, peer_settings) = (node.relay.clone(), settings.clone());
    socket::accept(req, &settings, move |socket| run(relay, id, socket, peer_settings))
}

async fn run(relay: Arc<Relay>, id: String, socket: Socket, settings: WsSettings) {
    let (me, queue) = relay.attach();
    // The id is the peers' shared secret: spans carry the peer number only.
    let span = tracing::info_span!("relay", peer = me.addr.peer);
    let peer = Peer {
        relay,
        id,
        me,
        settings,
        mid_frame: AtomicBool::new(false),
        state: State::Waiting { rejoined: false },
        stash: None,
        control_pending: false,
    };
    peer.serve(socket, queue).instrument(span).await;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting in the store for a partner; `rejoined` once it waited again after a Redis
    /// reconnect, when a stale second entry of it may exist.
    Waiting {
        rejoined: bool,
    },
    Paired(PeerAddr),
}

struct Peer {
    relay: Arc<Relay>,
    id: String,
    me: Arc<PeerHandle>,
    settings: WsSettings,
    mid_frame: AtomicBool,
    state: State,
    /// An item taken from the queue while batching frames, handled next.
    stash: Option<RelayItem>,
    /// tungstenite has a pong or close reply to flush before our next write.
    control_pending: bool,
}

impl Peer {
    async fn serve(mut self, mut socket: Socket, mut queue: mpsc::Receiver<RelayItem>) {
        tracing::debug!("relay peer connected");
        let end = match self.meet(&mut socket, true).await {
            Ok(()) => self.pump(&mut socket, &mut queue).await,
            Err(end) => end,
        };
        self.leave(queue).await;
        finish(&mut socket, end, &self.mid_frame).await;
    }

    async fn pump(&mut self, socket: &mut Socket, queue: &mut mpsc::Receiver<RelayItem>) -> End {
        let mut ping = ping_timer(self.settings.ping_interval);
        let mut awaiting_pong = false;
        loop {
            if let Some(item) = self.stash.take() {
                if let Err(end) = self.handle(item, socket, queue).await {
                    return end;
                }
                continue;
            }
            let result = tokio::select! {
                biased;
                () = self.settings.shutdown.cancelled() => return End::Close(GOING_AWAY),
                reason = self.me.outbox.closing() => return End::Close(reason),
                item = queue.recv() => match item {
                    Some(item) => self.handle(item, socket, queue).await,
                    None => return End::Gone,
                },
                incoming = socket.next() => {
                    awaiting_pong = false;
                    match incoming {
                        None => return End::Gone,
                        Some(Ok(Message::Text(text))) => {
                            self.forward(socket, Frame::from_payload(text.as_bytes())).await
                        }
                        Some(Ok(Message::Binary(data))) => {
                            self.forward(socket, Frame::binary(&data)).await
                        }
                        // Pings are answered and close frames acknowledged by tungstenite.
                        Some(Ok(Message::Ping(_) | Message::Close(_))) => {
                            self.control_pending = true;
                            Ok(())
                        }
                        Some(Ok(_)) => Ok(()),
                        Some(Err(err)) => return ended_by(err),
                    }
                }
                _ = ping.tick() => {
                    if awaiting_pong {
                        return End::Close(PING_TIMEOUT);
                    }
                    awaiting_pong = true;
                    let ping = socket::send_message(socket, Message::Ping(Default::default()));
                    self.guarded(ping).await
                }
            };
            if let Err(end) = result {
                return end;
            }
        }
    }

    /// Finds a partner: takes the peer waiting with this id, or waits (saying so when
    /// `announce`). A waiting peer whose node is gone is skipped.
    async fn meet(&mut self, socket: &mut Socket, announce: bool) -> Result<(), End> {
        let me = self.me.addr;
        loop {
            let waiting = self.relay.meet(&self.id, me).await.map_err(|err| {
                tracing::warn!(%err, "relay rendezvous failed");
                End::Close(UNAVAILABLE)
            })?;
            let Some(partner) = waiting else {
                if announce {
                    self.state = State::Waiting { rejoined: false };
                    return self.write(socket, &[WAITING]).await;
                }
                self.state = State::Waiting { rejoined: true };
                return Ok(());
            };
            match self.relay.send(partner, RelayItem::Paired { from: me }).await {
                Ok(Reach::Delivered) => {
                    self.state = State::Paired(partner);
                    return self.write(socket, &[CONNECTED]).await;
                }
                // It left meanwhile: it no longer waits, so the next meet finds another or none.
                Ok(Reach::Refused | Reach::NodeGone) => continue,
                Err(err) => {
                    tracing::warn!(%err, "cannot reach a waiting relay peer");
                    return Err(End::Close(UNAVAILABLE));
                }
            }
        }
    }

    /// Applies one item from the queue.
    async fn handle(
        &mut self,
        item: RelayItem,
        socket: &mut Socket,
        queue: &mut mpsc::Receiver<RelayItem>,
    ) -> Result<(), End> {
        match (item, self.state) {
            (RelayItem::Paired { from }, State::Waiting { rejoined }) => {
                if rejoined {
                    // Waiting again may have left a second entry of this peer behind.
                    let _ = self.relay.leave(&self.id, self.me.addr).await;
                }
                self.state = State::Paired(from);
                self.write(socket, &[REMOTE_OPEN, CONNECTED]).await
            }
            (RelayItem::Paired { from }, State::Paired(_)) => {
                // Cannot happen while the rendezvous holds; refuse rather than pair twice.
                tracing::warn!("refused a second pairing");
                let refusal = RelayItem::RemoteClosed { from: self.me.addr };
                let _ = self.relay.send(from, refusal).await;
                Ok(())
            }
            (RelayItem::RemoteClosed { from }, State::Paired(partner)) if from == partner => {
                self.partner_left(socket).await
            }
            (RelayItem::Data { from, frame }, State::Paired(partner)) if from == partner => {
                // The partner's frames already queued behind this one go out in one batch.
                let mut batch = vec![frame];
                while batch.len() < BATCH {
                    match queue.try_recv() {
                        Ok(RelayItem::Data { from, frame }) if from == partner => batch.push(frame),
                        Ok(other) => {
                            self.stash = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                self.write_frames(socket, batch).await
            }
            (RelayItem::Rejoin, State::Waiting { .. }) => self.meet(socket, false).await,
            // From a former partner, or a rejoin while paired: nothing to do.
            _ => Ok(()),
        }
    }

    /// Sends a frame this peer wrote to its partner, or answers why it cannot.
    async fn forward(&mut self, socket: &mut Socket, frame: Frame) -> Result<(), End> {
        if frame.is_text()
            && RESERVED.iter().any(|prefix| frame.payload().starts_with(prefix.as_bytes()))
        {
            return self.write_error(socket, RESERVED_PREFIX, &frame).await;
        }
        let State::Paired(partner) = self.state else {
            return self.write_error(socket, NOT_RECEIVED, &frame).await;
        };
        let data = RelayItem::Data { from: self.me.addr, frame };
        match self.relay.send(partner, data).await {
            // A partner that refuses is leaving and tells us so itself.
            Ok(Reach::Delivered | Reach::Refused) => Ok(()),
            Ok(Reach::NodeGone) => self.partner_left(socket).await,
            Err(err) => {
                tracing::warn!(%err, "cannot relay to the partner's node");
                self.partner_left(socket).await
            }
        }
    }

    /// The partner is gone: say so and meet the next one (or wait).
    async fn partner_left(&mut self, socket: &mut Socket) -> Result<(), End> {
        self.state = State::Waiting { rejoined: false };
        self.write(socket, &[REMOTE_CLOSE]).await?;
        self.meet(socket, true).await
    }

    /// Leaves the rendezvous and tells whoever counts on this peer that it is gone.
    async fn leave(&mut self, mut queue: mpsc::Receiver<RelayItem>) {
        let me = self.me.addr;
        if let State::Waiting { .. } = self.state
            && let Err(err) = self.relay.leave(&self.id, me).await
        {
            tracing::warn!(%err, "cannot leave the relay rendezvous");
        }
        self.relay.detach(&self.me);
        // From here every item is refused; a pairing already queued is answered.
        queue.close();
        let mut told = Vec::new();
        while let Ok(item) = queue.try_recv() {
            if let RelayItem::Paired { from } = item {
                told.push(from);
            }
        }
        if let State::Paired(partner) = self.state {
            told.push(partner);
        }
        for partner in told {
            if let Err(err) = self.relay.send(partner, RelayItem::RemoteClosed { from: me }).await {
                tracing::debug!(%err, "cannot tell the partner this peer left");
            }
        }
    }

    /// Writes protocol texts.
    async fn write(&mut self, socket: &mut Socket, texts: &[&str]) -> Result<(), End> {
        let frames = texts.iter().map(|text| Frame::from_payload(text.as_bytes())).collect();
        self.write_frames(socket, frames).await
    }

    async fn write_frames(&mut self, socket: &mut Socket, frames: Vec<Frame>) -> Result<(), End> {
        let flush_control = std::mem::take(&mut self.control_pending);
        let write = write_frames(socket, frames.into_iter(), flush_control, &self.mid_frame);
        self.guarded(write).await
    }

    /// Writes `/error:<code>:<text>:` followed by the refused message (binary as lossy UTF-8).
    async fn write_error(
        &mut self,
        socket: &mut Socket,
        error: &str,
        refused: &Frame,
    ) -> Result<(), End> {
        let text = format!("{error}{}", String::from_utf8_lossy(refused.payload()));
        self.write(socket, &[&text]).await
    }

    async fn guarded(
        &self,
        write: impl std::future::Future<Output = Result<(), WsError>>,
    ) -> Result<(), End> {
        let slow = &self.relay.stats.slow_consumer_closes;
        guarded(write, &self.me.outbox, &self.settings.shutdown, slow).await
    }
}
