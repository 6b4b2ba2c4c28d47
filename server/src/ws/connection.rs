//! One client's WebSocket connection: a single task that answers the client's frames, writes
//! what waits when the socket pushed back, and closes with the right code when told to (see
//! [`super::keepalive`] for pings and shutdown).

use std::{
    future::{Future, poll_fn},
    sync::Arc,
    task::Poll,
};

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{
    Frame,
    decode::Incoming,
    keepalive::closed_if_shutting_down,
    outlet::Attention,
    socket::{End, Socket, Upgrade, drain, finish},
};
use crate::{
    hub::{CloseReason, ConnHandle, Target},
    node::Node,
    store::{Client, StoreError},
};
use switchboard_protocol::{CLOSE_UNREGISTERED, ClientFrame, ServerFrame};

/// Store reads tried while subscription changes keep racing the connect.
const SYNC_ATTEMPTS: usize = 8;

/// The task of one upgraded connection.
pub(super) fn run(
    node: Arc<Node>,
    client: Client,
    mut upgrade: Upgrade,
    shutdown: &CancellationToken,
) -> impl Future<Output = ()> + Send + use<> {
    let (conn, generation) = node.hub.attach(client.id, upgrade.direct.take());
    closed_if_shutting_down(&conn.outlet, shutdown);
    let socket = upgrade.into_socket(conn.outlet.clone());
    // The id is a secret: spans carry the name and a connection number only.
    // Debug level: a span kept per idle connection costs ~0.45 KiB in the log subscriber, so
    // warnings name the client themselves.
    let span = tracing::debug_span!("ws", conn = conn.id, client = %client.name);
    // The connection's state is one allocation the task refers to: an async fn keeps a copy of
    // every argument it moves, and every idle connection would pay for those copies.
    let connection = Box::new(Connection { node, client, conn, socket });
    connection.serve(generation).instrument(span)
}

struct Connection {
    node: Arc<Node>,
    client: Client,
    conn: Arc<ConnHandle>,
    socket: Socket,
}

impl Connection {
    async fn serve(mut self: Box<Self>, generation: u64) {
        tracing::debug!("connected");
        // What runs once or rarely is boxed, so that it takes no room in the task of every idle
        // connection (a task is as large as its largest state).
        let (end, opened) = match Box::pin(self.subscriptions(generation)).await {
            Ok(topics) => {
                self.open(topics);
                (self.pump().await, true)
            }
            Err(reason) => (End::Close(reason), false),
        };
        self.node.hub.detach(&self.conn);
        if !opened {
            self.conn.outlet.discard();
        }
        Box::pin(finish(&mut self.socket, end)).await;
    }

    /// Lets frames out, the welcome first: ahead of any delivery that arrived meanwhile.
    fn open(&self, topics: Vec<String>) {
        let id = self.client.id.to_string();
        let welcome = ServerFrame::Welcome { id: &id, topics }.to_json();
        self.conn.outlet.open(Some(Frame::from_payload(welcome.as_bytes())));
    }

    async fn pump(&mut self) -> End {
        loop {
            // One poll function over the outlet's flags and the socket, no timer: this is all
            // an idle connection's task holds.
            let event = poll_fn(|cx| match self.conn.outlet.poll_attention(cx) {
                Poll::Ready(attention) => Poll::Ready(Event::Attention(attention)),
                Poll::Pending => self.socket.poll_next(cx).map(Event::Incoming),
            })
            .await;
            let written = match event {
                Event::Attention(Attention::Close(reason)) => return End::Close(reason),
                // Deliveries are written by the fan-out; this task writes only when the socket
                // pushed back (or is TLS).
                Event::Attention(Attention::Write) => Box::pin(drain(&mut self.socket)).await,
                Event::Incoming(incoming) => {
                    let reply = match incoming {
                        None => return End::Gone,
                        Some(Ok(Incoming::Text(text))) => Box::pin(self.answer(&text)).await,
                        Some(Ok(Incoming::Binary(_))) => error_frame(
                            None,
                            "binary_frame",
                            "binary frames are not part of the protocol; send JSON text",
                        ),
                        // Pings are answered by the socket.
                        Some(Ok(_)) => continue,
                        Some(Err(end)) => return end,
                    };
                    self.socket.send(Frame::from_payload(reply.as_bytes()))
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
                    tracing::warn!(client = %self.client.name, %err, "cannot read subscriptions");
                    return Err(CloseReason { code: 1013, reason: "store unavailable" });
                }
            };
            match self.node.hub.sync_topics(self.client.id, generation, stored) {
                Ok(topics) => {
                    // Deliveries published on other nodes reach this one only once it listens.
                    if let Err(err) = self.node.bus.listen(&topics).await {
                        tracing::warn!(client = %self.client.name, %err, "cannot listen to the client's topics");
                        return Err(CloseReason { code: 1013, reason: "cluster bus unavailable" });
                    }
                    return Ok(topics);
                }
                Err(newer) => generation = newer,
            }
        }
        Err(CloseReason { code: 1013, reason: "subscriptions kept changing; reconnect" })
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

/// What woke a connection's task.
enum Event {
    Attention(Attention),
    Incoming(Option<Result<Incoming, End>>),
}

fn error_frame(
    reference: Option<&serde_json::value::RawValue>,
    error: &str,
    message: &str,
) -> String {
    ServerFrame::Error { reference, error, message }.to_json()
}
