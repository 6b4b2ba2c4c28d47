//! A client's WebSocket connection (`GET /ws/{id}`): it connects (the node attaches it and
//! syncs its topics), opens with the welcome, then answers the client's frames (subscribe,
//! publish, ...) with acks and errors. Deliveries never pass here: the hub writes them to the
//! socket's outlet.

use std::{future::Future, sync::Arc};

use serde_json::value::RawValue;
use switchboard_protocol::{ClientFrame, ServerFrame};

use super::{
    Ctx, WsSettings,
    decode::Incoming,
    handshake::{Upgraded, drive},
    socket::{Session, Socket},
};
use crate::{
    delivery::{Frame, Outlet},
    hub::{ConnId, Target},
    node::{Connected, Node},
    store::{Client, ClientId},
};

/// The session of one client connection: who it is, and its id in the hub.
pub(super) struct ClientSession {
    client: ClientId,
    /// The client's name, the `from` of what it sends.
    name: Box<str>,
    conn: ConnId,
}

/// Takes an upgraded connection of `client` over, connects it and hands it to its driver.
pub(super) async fn serve(ctx: Ctx, client: Client, upgraded: Upgraded, settings: WsSettings) {
    let (transport, outlet) = match upgraded.take_over(&settings, None) {
        Ok(taken) => taken,
        Err(err) => return tracing::warn!(client = %client.name, %err, "cannot take a socket over"),
    };
    let session = match ctx.node.connect(client.id, outlet.clone()).await {
        Ok(Connected { conn, topics }) => {
            // The welcome goes first, ahead of any delivery that arrived meanwhile.
            let id = client.id.to_string();
            let welcome = ServerFrame::Welcome { id: &id, topics }.to_json();
            outlet.open(Some(Frame::from_payload(welcome.as_bytes())));
            let name = client.name.into_boxed_str();
            Ok(Session::Client(ClientSession { client: client.id, name, conn }))
        }
        Err(reason) => {
            tracing::debug!(client = %client.name, reason = reason.reason(), "cannot connect");
            Err(reason)
        }
    };
    let socket = Socket::new(outlet, session);
    drive(transport, socket, ctx, &settings).await;
}

impl ClientSession {
    /// Answers the client's messages in order, each with its ack or error.
    pub fn answer(
        &self,
        messages: Vec<Incoming>,
        ctx: &Ctx,
        outlet: &Arc<Outlet>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let (node, outlet) = (ctx.node.clone(), outlet.clone());
        let (client, name) = (self.client, self.name.clone());
        async move {
            for message in messages {
                let reply = match message {
                    Incoming::Text(text) => answer(&node, client, &name, &text).await,
                    _ => error_frame(
                        None,
                        "binary_frame",
                        "binary frames are not part of the protocol; send JSON text",
                    ),
                };
                if !outlet.send(Frame::from_payload(reply.as_bytes())) {
                    // The socket is ending.
                    return;
                }
            }
        }
    }

    /// The socket is closing: it leaves the hub (which seals its outlet), and takes no delivery
    /// from now on.
    pub fn end(self, slow: bool, ctx: &Ctx) {
        let hub = &ctx.node.hub;
        hub.detach(self.client, self.conn);
        let (node, client) = (ctx.node.clone(), self.client);
        ctx.tasks.spawn(async move { node.disconnected(client).await });
        if slow {
            hub.stats.slow_consumer_closes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Applies one client frame and returns the ack or error frame to send back.
async fn answer(node: &Node, client: ClientId, name: &str, text: &str) -> String {
    let frame = match ClientFrame::parse(text) {
        Ok(frame) => frame,
        Err(err) => return error_frame(err.reference, err.code, &err.message),
    };
    let reference = frame.reference();
    let result = match frame {
        ClientFrame::Subscribe { topics, .. } => node.subscribe(client, topics).await,
        ClientFrame::Unsubscribe { topics, .. } => node.unsubscribe(client, topics).await,
        ClientFrame::Publish { topic, data, idempotency_key, .. } => {
            let key = idempotency_key.as_deref();
            node.publish(Some(name), Target::Topic(topic), data, key).await.map(drop)
        }
        ClientFrame::Broadcast { data, .. } => {
            node.publish(Some(name), Target::Broadcast, data, None).await.map(drop)
        }
        ClientFrame::Ping { .. } => Ok(()),
    };
    match result {
        Ok(()) => ServerFrame::Ack { reference }.to_json(),
        Err(err) => error_frame(reference, err.code(), &err.to_string()),
    }
}

fn error_frame(reference: Option<&RawValue>, error: &str, message: &str) -> String {
    ServerFrame::Error { reference, error, message }.to_json()
}
