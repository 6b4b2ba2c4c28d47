//! One relay peer's socket (`GET /relay/{id}`): meets a partner with the same id, relays every
//! frame it sends to that partner and writes what the partner sends, and tells the partner when
//! it leaves. The strings it writes are the relay protocol's (openapi/PROTOCOL.md).
//!
//! The peer's session works in jobs, one at a time and in order: meeting, forwarding the frames
//! its socket read, and working through the items in its inbox (see [`crate::relay`]). Between
//! jobs a peer has no task.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use poem::{
    Request, Response, handler,
    web::{Data, Path, Query},
};

use super::{
    Ctx, WsSettings,
    decode::Incoming,
    handshake::{self, Upgraded, drive},
    socket::{Session, Socket},
};
use crate::{
    delivery::{CloseReason, Frame},
    error::AppError,
    node::Node,
    relay::{ID_RULE, PeerHandle, Reach, Relay, RelayItem, valid_id},
    store::PeerAddr,
};

use switchboard_protocol::relay::{
    CONNECTED, NOT_RECEIVED, REMOTE_CLOSE, REMOTE_OPEN, RESERVED, RESERVED_PREFIX, WAITING,
};

/// Most of the partner's frames written at once.
const PARTNER_BATCH: usize = 64;

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
    handshake::handshake_key(req)?;
    if !valid_id(&id) {
        return Err(AppError::BadRequest(format!("relay id must be {ID_RULE} (got `{id}`)")).into());
    }
    if !node.relay.key_is_valid(query.key.as_deref()) {
        let why = if query.key.is_none() { "missing relay key" } else { "invalid relay key" };
        return Err(AppError::Forbidden(why).into());
    }
    super::room_for_a_socket(&node, &settings)?;
    node.bus.check().map_err(AppError::from)?;
    let ctx = settings.ctx(&node);
    let settings = settings.clone();
    handshake::accept(req, &settings.clone(), move |upgraded| serve(ctx, id, upgraded, settings))
}

/// Takes an upgraded peer over, registers it and hands it to its driver.
async fn serve(ctx: Ctx, id: String, upgraded: Upgraded, settings: WsSettings) {
    let (transport, outlet) = match upgraded.take_over(&settings, Some(&id)) {
        Ok(taken) => taken,
        Err(err) => return tracing::warn!(%err, "cannot take a relay socket over"),
    };
    let handle = ctx.node.relay.attach(outlet.clone());
    outlet.open(None);
    let peer = Peer { id, state: State::Unmet };
    let session = Arc::new(PeerSession {
        handle,
        met: AtomicBool::new(false),
        peer: tokio::sync::Mutex::new(peer),
    });
    let socket = Socket::new(outlet, Ok(Session::RelayPeer(session)));
    drive(transport, socket, ctx, &settings).await;
}

/// The session of one relay peer.
pub(super) struct PeerSession {
    handle: Arc<PeerHandle>,
    /// Whether the first meeting was tried (the first job's work).
    met: AtomicBool,
    /// The peer's state, held by the one job that runs (and by leaving, which waits for it).
    peer: tokio::sync::Mutex<Peer>,
}

struct Peer {
    id: String,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not met yet: the first job meets.
    Unmet,
    /// Waiting in the store for a partner; `rejoined` once it waited again after a Redis
    /// reconnect, when a stale second entry of it may exist.
    Waiting {
        rejoined: bool,
    },
    Paired(PeerAddr),
    /// Left the rendezvous: nothing more is done.
    Left,
}

/// The socket is ending (its outlet was closed or refused a write): a job stops.
struct Stop;

type Step = Result<(), Stop>;

impl PeerSession {
    /// Whether a job has something to do besides the socket's own frames.
    pub fn has_work(&self) -> bool {
        !self.met.load(Ordering::Acquire) || self.handle.has_items()
    }

    /// A job: meets first (the first time), forwards the frames the socket read, then works
    /// through the inbox until it is empty.
    pub async fn work(self: Arc<Self>, messages: Vec<Incoming>, ctx: Ctx) {
        let mut peer = self.peer.lock().await;
        let mut job = Job { relay: &ctx.node.relay, handle: &self.handle, peer: &mut peer };
        let _ = job.run(&self.met, messages).await;
    }

    /// The socket is closing: the peer takes no more frames and leaves the rendezvous (once a
    /// job that runs has ended).
    pub fn end(self: Arc<Self>, slow: bool, ctx: &Ctx) {
        self.handle.outlet.seal();
        let relay = ctx.node.relay.clone();
        if slow {
            relay.stats.slow_consumer_closes.fetch_add(1, Ordering::Relaxed);
        }
        ctx.tasks.spawn(async move {
            let mut peer = self.peer.lock().await;
            Job { relay: &relay, handle: &self.handle, peer: &mut peer }.leave().await;
        });
    }
}

/// One job's view of the peer: its registry, its handle and its state.
struct Job<'a> {
    relay: &'a Arc<Relay>,
    handle: &'a PeerHandle,
    peer: &'a mut Peer,
}

impl Job<'_> {
    async fn run(&mut self, met: &AtomicBool, messages: Vec<Incoming>) -> Step {
        if self.peer.state == State::Left {
            return Ok(());
        }
        if !met.swap(true, Ordering::AcqRel) {
            self.meet(true).await?;
        }
        for message in messages {
            let frame = match message {
                Incoming::Text(text) => Frame::from_payload(text.as_bytes()),
                Incoming::Binary(data) => Frame::binary(&data),
                _ => continue,
            };
            self.forward(frame).await?;
        }
        loop {
            let items = self.handle.take_items();
            if items.is_empty() {
                return Ok(());
            }
            let mut partner_frames = Vec::new();
            for item in items {
                match (item, self.peer.state) {
                    // The partner's frames queued one after another go out in one write.
                    (RelayItem::Data { from, frame }, State::Paired(partner))
                        if from == partner && partner_frames.len() < PARTNER_BATCH =>
                    {
                        partner_frames.push(frame);
                    }
                    (item, _) => {
                        self.write_frames(std::mem::take(&mut partner_frames))?;
                        self.handle(item).await?;
                    }
                }
            }
            self.write_frames(partner_frames)?;
        }
    }

    /// Finds a partner: takes the peer waiting with this id, or waits (saying so when
    /// `announce`). A waiting peer whose node is gone is skipped.
    async fn meet(&mut self, announce: bool) -> Step {
        let me = self.handle.addr;
        loop {
            let waiting = match self.relay.meet(&self.peer.id, me).await {
                Ok(waiting) => waiting,
                Err(err) => {
                    tracing::warn!(peer = me.peer, %err, "relay rendezvous failed");
                    self.handle.outlet.close(CloseReason::RelayUnavailable);
                    return Err(Stop);
                }
            };
            let Some(partner) = waiting else {
                self.peer.state = State::Waiting { rejoined: !announce };
                return if announce { self.write(&[WAITING]) } else { Ok(()) };
            };
            match self.relay.send(partner, RelayItem::Paired { from: me }).await {
                Ok(Reach::Delivered) => {
                    self.peer.state = State::Paired(partner);
                    return self.write(&[CONNECTED]);
                }
                // It left meanwhile: it no longer waits, so the next meet finds another or none.
                Ok(Reach::Refused | Reach::NodeGone) => continue,
                Err(err) => {
                    tracing::warn!(peer = me.peer, %err, "cannot reach a waiting relay peer");
                    self.handle.outlet.close(CloseReason::RelayUnavailable);
                    return Err(Stop);
                }
            }
        }
    }

    /// Applies one item from the inbox (the partner's frames are batched by the caller).
    async fn handle(&mut self, item: RelayItem) -> Step {
        match (item, self.peer.state) {
            (RelayItem::Paired { from }, State::Waiting { rejoined }) => {
                if rejoined {
                    // Waiting again may have left a second entry of this peer behind.
                    let _ = self.relay.leave(&self.peer.id, self.handle.addr).await;
                }
                self.peer.state = State::Paired(from);
                self.write(&[REMOTE_OPEN, CONNECTED])
            }
            (RelayItem::Paired { from }, State::Paired(_)) => {
                // Cannot happen while the rendezvous holds; refuse rather than pair twice.
                tracing::warn!(peer = self.handle.addr.peer, "refused a second pairing");
                let refusal = RelayItem::RemoteClosed { from: self.handle.addr };
                let _ = self.relay.send(from, refusal).await;
                Ok(())
            }
            (RelayItem::RemoteClosed { from }, State::Paired(partner)) if from == partner => {
                self.partner_left().await
            }
            (RelayItem::Data { from, frame }, State::Paired(partner)) if from == partner => {
                self.write_frames(vec![frame])
            }
            (RelayItem::Rejoin, State::Waiting { .. }) => self.meet(false).await,
            // From a former partner, or a rejoin while paired: nothing to do.
            _ => Ok(()),
        }
    }

    /// Sends a frame this peer wrote to its partner, or answers why it cannot.
    async fn forward(&mut self, frame: Frame) -> Step {
        if frame.is_text()
            && RESERVED.iter().any(|prefix| frame.payload().starts_with(prefix.as_bytes()))
        {
            return self.write_error(RESERVED_PREFIX, &frame);
        }
        let State::Paired(partner) = self.peer.state else {
            return self.write_error(NOT_RECEIVED, &frame);
        };
        let data = RelayItem::Data { from: self.handle.addr, frame };
        match self.relay.send(partner, data).await {
            // A partner that refuses is leaving and tells us so itself.
            Ok(Reach::Delivered | Reach::Refused) => Ok(()),
            Ok(Reach::NodeGone) => self.partner_left().await,
            Err(err) => {
                let peer = self.handle.addr.peer;
                tracing::warn!(peer, %err, "cannot relay to the partner's node");
                self.partner_left().await
            }
        }
    }

    /// The partner is gone: say so and meet the next one (or wait).
    async fn partner_left(&mut self) -> Step {
        self.peer.state = State::Waiting { rejoined: false };
        self.write(&[REMOTE_CLOSE])?;
        self.meet(true).await
    }

    /// Leaves the rendezvous and tells whoever counts on this peer that it is gone.
    async fn leave(&mut self) {
        let me = self.handle.addr;
        if let State::Waiting { .. } = self.peer.state
            && let Err(err) = self.relay.leave(&self.peer.id, me).await
        {
            tracing::warn!(peer = me.peer, %err, "cannot leave the relay rendezvous");
        }
        self.relay.detach(self.handle);
        // From here every item is refused; a pairing that waited is answered.
        let mut told: Vec<PeerAddr> = self
            .handle
            .close_inbox()
            .into_iter()
            .filter_map(|item| match item {
                RelayItem::Paired { from } => Some(from),
                _ => None,
            })
            .collect();
        if let State::Paired(partner) = self.peer.state {
            told.push(partner);
        }
        self.peer.state = State::Left;
        for partner in told {
            if let Err(err) = self.relay.send(partner, RelayItem::RemoteClosed { from: me }).await {
                tracing::debug!(%err, "cannot tell the partner this peer left");
            }
        }
    }

    /// Writes protocol texts.
    fn write(&self, texts: &[&str]) -> Step {
        let frames = texts.iter().map(|text| Frame::from_payload(text.as_bytes())).collect();
        self.write_frames(frames)
    }

    /// Writes frames through the outlet: at once when the socket has room, else they wait
    /// (bounded) for the socket's owner.
    fn write_frames(&self, frames: Vec<Frame>) -> Step {
        if frames.is_empty() || self.handle.outlet.send_all(frames) { Ok(()) } else { Err(Stop) }
    }

    /// Writes `/error:<code>:<text>:` followed by the refused message (binary as lossy UTF-8).
    fn write_error(&self, error: &str, refused: &Frame) -> Step {
        let text = format!("{error}{}", String::from_utf8_lossy(refused.payload()));
        self.write(&[&text])
    }
}
