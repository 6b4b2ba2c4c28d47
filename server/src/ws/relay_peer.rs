//! One relay peer's socket (`GET /relay/{id}`): meets a partner with the same id, relays every
//! frame it sends to that partner and writes what the partner sends, and tells the partner when
//! it leaves. The strings it writes are the relay protocol's (openapi/PROTOCOL.md).

use std::sync::Arc;

use poem::{
    Request, Response, handler,
    web::{Data, Path, Query},
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{
    WsSettings,
    decode::Incoming,
    socket::{End, Socket, Upgrade, drain, finish, send_frames},
};
use crate::{
    delivery::{Attention, CloseReason, Frame, closed_if_shutting_down},
    error::AppError,
    node::Node,
    relay::{ID_RULE, PeerHandle, Reach, Relay, RelayItem, valid_id},
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
    super::socket::handshake_key(req)?;
    if !valid_id(&id) {
        return Err(AppError::BadRequest(format!("relay id must be {ID_RULE} (got `{id}`)")).into());
    }
    if !node.relay.key_is_valid(query.key.as_deref()) {
        let why = if query.key.is_none() { "missing relay key" } else { "invalid relay key" };
        return Err(AppError::Forbidden(why).into());
    }
    node.bus.check().map_err(AppError::from)?;
    let (relay, shutdown) = (node.relay.clone(), settings.shutdown.clone());
    super::socket::accept(req, &settings, move |upgrade| run(relay, id, upgrade, shutdown))
}

/// Most of the partner's frames taken from the queue at once.
const PARTNER_BATCH: usize = 64;

async fn run(relay: Arc<Relay>, id: String, mut upgraded: Upgrade, shutdown: CancellationToken) {
    let (me, queue) = relay.attach(upgraded.direct.take());
    closed_if_shutting_down(&me.outlet, &shutdown);
    drop(shutdown);
    let socket = upgraded.into_socket(me.outlet.clone());
    me.outlet.open(None);
    // The id is the peers' shared secret: spans carry the peer number only.
    // Debug level: a span kept per idle socket costs memory in the log subscriber
    // (docs/performance.md, "Log spans"), so warnings name the peer themselves.
    let span = tracing::debug_span!("relay", peer = me.addr.peer);
    let peer = Peer { relay, id, me, state: State::Waiting { rejoined: false }, stash: None };
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
    state: State,
    /// An item taken from the queue while batching frames, handled next.
    stash: Option<RelayItem>,
}

impl Peer {
    async fn serve(mut self, mut socket: Socket, mut queue: mpsc::Receiver<RelayItem>) {
        tracing::debug!("relay peer connected");
        let end = match self.meet(true).await {
            Ok(()) => self.pump(&mut socket, &mut queue).await,
            Err(end) => end,
        };
        self.me.outlet.seal();
        self.leave(queue).await;
        finish(&mut socket, end).await;
    }

    async fn pump(&mut self, socket: &mut Socket, queue: &mut mpsc::Receiver<RelayItem>) -> End {
        loop {
            if let Some(item) = self.stash.take() {
                if let Err(end) = self.handle(item, queue).await {
                    return end;
                }
                continue;
            }
            let result = tokio::select! {
                biased;
                attention = self.me.outlet.attention() => match attention {
                    Attention::Close(reason) => return End::Close(reason),
                    // The socket pushed back: write what waits before taking more.
                    Attention::Write => Box::pin(drain(socket)).await,
                },
                item = queue.recv() => match item {
                    Some(item) => self.handle(item, queue).await,
                    None => return End::Gone,
                },
                incoming = socket.next() => {
                    match incoming {
                        None => return End::Gone,
                        Some(Ok(Incoming::Text(text))) => {
                            self.forward(Frame::from_payload(text.as_bytes())).await
                        }
                        Some(Ok(Incoming::Binary(data))) => {
                            self.forward(Frame::binary(&data)).await
                        }
                        // Pings are answered by the socket.
                        Some(Ok(_)) => Ok(()),
                        Some(Err(end)) => return end,
                    }
                }
            };
            if let Err(end) = result {
                return end;
            }
        }
    }

    /// Finds a partner: takes the peer waiting with this id, or waits (saying so when
    /// `announce`). A waiting peer whose node is gone is skipped.
    async fn meet(&mut self, announce: bool) -> Result<(), End> {
        let me = self.me.addr;
        loop {
            let waiting = self.relay.meet(&self.id, me).await.map_err(|err| {
                tracing::warn!(peer = self.me.addr.peer, %err, "relay rendezvous failed");
                End::Close(CloseReason::RelayUnavailable)
            })?;
            let Some(partner) = waiting else {
                if announce {
                    self.state = State::Waiting { rejoined: false };
                    return self.write(&[WAITING]);
                }
                self.state = State::Waiting { rejoined: true };
                return Ok(());
            };
            match self.relay.send(partner, RelayItem::Paired { from: me }).await {
                Ok(Reach::Delivered) => {
                    self.state = State::Paired(partner);
                    return self.write(&[CONNECTED]);
                }
                // It left meanwhile: it no longer waits, so the next meet finds another or none.
                Ok(Reach::Refused | Reach::NodeGone) => continue,
                Err(err) => {
                    tracing::warn!(peer = self.me.addr.peer, %err, "cannot reach a waiting relay peer");
                    return Err(End::Close(CloseReason::RelayUnavailable));
                }
            }
        }
    }

    /// Applies one item from the queue.
    async fn handle(
        &mut self,
        item: RelayItem,
        queue: &mut mpsc::Receiver<RelayItem>,
    ) -> Result<(), End> {
        match (item, self.state) {
            (RelayItem::Paired { from }, State::Waiting { rejoined }) => {
                if rejoined {
                    // Waiting again may have left a second entry of this peer behind.
                    let _ = self.relay.leave(&self.id, self.me.addr).await;
                }
                self.state = State::Paired(from);
                self.write(&[REMOTE_OPEN, CONNECTED])
            }
            (RelayItem::Paired { from }, State::Paired(_)) => {
                // Cannot happen while the rendezvous holds; refuse rather than pair twice.
                tracing::warn!(peer = self.me.addr.peer, "refused a second pairing");
                let refusal = RelayItem::RemoteClosed { from: self.me.addr };
                let _ = self.relay.send(from, refusal).await;
                Ok(())
            }
            (RelayItem::RemoteClosed { from }, State::Paired(partner)) if from == partner => {
                self.partner_left().await
            }
            (RelayItem::Data { from, frame }, State::Paired(partner)) if from == partner => {
                // The partner's frames already queued behind this one go out in one batch.
                let mut batch = vec![frame];
                while batch.len() < PARTNER_BATCH {
                    match queue.try_recv() {
                        Ok(RelayItem::Data { from, frame }) if from == partner => batch.push(frame),
                        Ok(other) => {
                            self.stash = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                self.write_frames(batch)
            }
            (RelayItem::Rejoin, State::Waiting { .. }) => self.meet(false).await,
            // From a former partner, or a rejoin while paired: nothing to do.
            _ => Ok(()),
        }
    }

    /// Sends a frame this peer wrote to its partner, or answers why it cannot.
    async fn forward(&mut self, frame: Frame) -> Result<(), End> {
        if frame.is_text()
            && RESERVED.iter().any(|prefix| frame.payload().starts_with(prefix.as_bytes()))
        {
            return self.write_error(RESERVED_PREFIX, &frame);
        }
        let State::Paired(partner) = self.state else {
            return self.write_error(NOT_RECEIVED, &frame);
        };
        let data = RelayItem::Data { from: self.me.addr, frame };
        match self.relay.send(partner, data).await {
            // A partner that refuses is leaving and tells us so itself.
            Ok(Reach::Delivered | Reach::Refused) => Ok(()),
            Ok(Reach::NodeGone) => self.partner_left().await,
            Err(err) => {
                tracing::warn!(peer = self.me.addr.peer, %err, "cannot relay to the partner's node");
                self.partner_left().await
            }
        }
    }

    /// The partner is gone: say so and meet the next one (or wait).
    async fn partner_left(&mut self) -> Result<(), End> {
        self.state = State::Waiting { rejoined: false };
        self.write(&[REMOTE_CLOSE])?;
        self.meet(true).await
    }

    /// Leaves the rendezvous and tells whoever counts on this peer that it is gone.
    async fn leave(&mut self, mut queue: mpsc::Receiver<RelayItem>) {
        let me = self.me.addr;
        if let State::Waiting { .. } = self.state
            && let Err(err) = self.relay.leave(&self.id, me).await
        {
            tracing::warn!(peer = self.me.addr.peer, %err, "cannot leave the relay rendezvous");
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
    fn write(&self, texts: &[&str]) -> Result<(), End> {
        let frames = texts.iter().map(|text| Frame::from_payload(text.as_bytes())).collect();
        self.write_frames(frames)
    }

    /// Writes frames through the outlet: at once when the socket has room, else they wait
    /// (bounded) for this task's next drain.
    fn write_frames(&self, frames: Vec<Frame>) -> Result<(), End> {
        send_frames(&self.me.outlet, frames)
    }

    /// Writes `/error:<code>:<text>:` followed by the refused message (binary as lossy UTF-8).
    fn write_error(&self, error: &str, refused: &Frame) -> Result<(), End> {
        let text = format!("{error}{}", String::from_utf8_lossy(refused.payload()));
        self.write(&[&text])
    }
}
