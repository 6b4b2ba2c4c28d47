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
    decode::Incoming,
    socket::{End, Socket, Upgrade, drain, finish},
};
use crate::{
    delivery::{Attention, Frame, closed_if_shutting_down},
    hub::Target,
    node::{Connected, Node},
    store::Client,
};
use switchboard_protocol::{ClientFrame, ServerFrame};

/// The task of one upgraded connection.
pub(super) fn run(
    node: Arc<Node>,
    client: Client,
    mut upgrade: Upgrade,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + use<> {
    let outlet = node.hub.new_outlet(upgrade.direct.take());
    closed_if_shutting_down(&outlet, &shutdown);
    let socket = upgrade.into_socket(outlet);
    // The id is a secret: spans carry the name only.
    // Debug level: a span kept per idle connection costs memory in the log subscriber
    // (docs/performance.md, "Log spans"), so warnings name the client themselves.
    let span = tracing::debug_span!("ws", client = %client.name);
    // The connection's state is one allocation the task refers to: an async fn keeps a copy of
    // every argument it moves, and every idle connection would pay for those copies.
    let connection = Box::new(Connection { node, client, socket });
    connection.serve().instrument(span)
}

struct Connection {
    node: Arc<Node>,
    client: Client,
    socket: Socket,
}

impl Connection {
    async fn serve(mut self: Box<Self>) {
        tracing::debug!("connected");
        // What runs once or rarely is boxed, so that it takes no room in the task of every idle
        // connection (a task is as large as its largest state).
        let outlet = self.socket.outlet().clone();
        let end = match Box::pin(self.node.connect(self.client.id, outlet.clone())).await {
            Ok(Connected { conn, topics }) => {
                self.open(topics);
                let end = self.pump().await;
                self.node.hub.detach(&conn);
                end
            }
            Err(reason) => {
                outlet.discard();
                End::Close(reason)
            }
        };
        Box::pin(finish(&mut self.socket, end)).await;
    }

    /// Lets frames out, the welcome first: ahead of any delivery that arrived meanwhile.
    fn open(&self, topics: Vec<String>) {
        let id = self.client.id.to_string();
        let welcome = ServerFrame::Welcome { id: &id, topics }.to_json();
        self.socket.outlet().open(Some(Frame::from_payload(welcome.as_bytes())));
    }

    async fn pump(&mut self) -> End {
        loop {
            // One poll function over the outlet's flags and the socket, no timer: this is all
            // an idle connection's task holds.
            let event = poll_fn(|cx| match self.socket.outlet().poll_attention(cx) {
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
