//! The typed HTTP API (poem-openapi). Handlers are thin: parse, call [`Node`], shape the answer.
//! Errors are [`AppError`]s, documented per operation and rendered by [`crate::error`].

mod key;
mod models;

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use poem::Request;
use poem_openapi::{
    ApiResponse, OpenApi, Tags,
    param::{Path, Query},
    payload::{Html, Json, PlainText},
};
use serde_json::value::{RawValue, to_raw_value};
use uuid::Uuid;

use key::{ApiKey, ApiKeyOrSender};
pub use models::*;

use crate::{
    error::{ApiError, AppError, error_statuses},
    hub::Target,
    node::Node,
    store::HistorySettings,
};

fn default_history_limit() -> u32 {
    100
}

#[derive(Tags)]
enum Tag {
    /// Register and unregister clients.
    Clients,
    /// Send messages.
    Messages,
    /// Topics and subscriptions.
    Topics,
    /// Health and statistics.
    Operations,
}

error_statuses!(RegisterErrors:
    400 "Bad body or name", 403 "Missing or wrong API key", 409 "Name already registered",
    415 "Body is not application/json", 503 "Store unavailable");
error_statuses!(UnregisterErrors:
    400 "Malformed id", 409 "Unknown id", 503 "Store unavailable");
error_statuses!(BroadcastErrors:
    400 "Bad body", 403 "Neither a valid API key nor a sender id", 409 "Unknown sender id",
    413 "Message or body over the size limit", 415 "Body is not application/json",
    503 "Store unavailable");
error_statuses!(PublishErrors:
    400 "Bad body", 403 "Neither a valid API key nor a sender id", 404 "Topic does not exist",
    409 "Unknown sender id", 413 "Message or body over the size limit",
    415 "Body is not application/json", 503 "Store unavailable");
error_statuses!(SubscriptionErrors:
    400 "Bad body", 403 "Unknown client id", 404 "A topic does not exist (nothing was applied)",
    415 "Body is not application/json", 503 "Store unavailable");
error_statuses!(ListErrors: 503 "Store unavailable");
error_statuses!(CreateTopicErrors:
    400 "Bad body or topic name", 403 "Missing or wrong API key", 409 "Topic exists",
    415 "Body is not application/json", 503 "Store unavailable");
error_statuses!(TopicReadErrors:
    400 "Bad query", 403 "Missing or wrong API key", 404 "Topic does not exist",
    503 "Store unavailable");
error_statuses!(DeleteTopicErrors:
    403 "Missing or wrong API key", 404 "Topic does not exist", 503 "Store unavailable");
error_statuses!(StatsErrors: 403 "Missing or wrong API key");
error_statuses!(ReadyErrors: 503 "The store is unreachable");

type ApiResult<T, S> = Result<T, ApiError<S>>;

#[derive(ApiResponse)]
enum RegisterResponse {
    /// Registered.
    #[oai(status = 201)]
    Created(Json<Registered>),
}

#[derive(ApiResponse)]
enum Accepted {
    /// Applied.
    #[oai(status = 202)]
    Accepted,
}

#[derive(ApiResponse)]
enum MetricsText {
    /// The metrics, in the Prometheus text format.
    #[oai(status = 200, content_type = "text/plain; version=0.0.4; charset=utf-8")]
    Ok(PlainText<String>),
}

#[derive(ApiResponse)]
enum TopicCreated {
    /// Created.
    #[oai(status = 201)]
    Created(Json<Topic>),
}

pub struct Api {
    node: Arc<Node>,
    /// `ws://host` or `wss://host` (no trailing slash) when configured.
    public_ws_base: Option<String>,
    /// `wss` when this server speaks TLS itself.
    ws_scheme: &'static str,
    /// Where the routes are mounted (`--path-prefix`), empty at the root.
    path_prefix: String,
}

impl Api {
    /// The API of `node`. `ws_url`s start with `public_url` (then `wss://` for `https://`), or
    /// else with the request's host and `wss://` when `tls`; the path prefix follows either.
    pub fn new(node: Arc<Node>, public_url: Option<&str>, tls: bool, path_prefix: &str) -> Self {
        let public_ws_base = public_url.map(|url| {
            let url = url.trim_end_matches('/');
            match url.split_once("://") {
                Some(("https", rest)) => format!("wss://{rest}"),
                Some(("http", rest)) => format!("ws://{rest}"),
                _ => url.to_owned(),
            }
        });
        let ws_scheme = if tls { "wss" } else { "ws" };
        Api { node, public_ws_base, ws_scheme, path_prefix: path_prefix.to_owned() }
    }

    fn ws_url(&self, req: &Request, id: Uuid) -> String {
        let prefix = &self.path_prefix;
        match &self.public_ws_base {
            Some(base) => format!("{base}{prefix}/ws/{id}"),
            None => {
                let host = req
                    .uri()
                    .host()
                    .map(str::to_owned)
                    .or_else(|| req.header(poem::http::header::HOST).map(str::to_owned));
                let host = host.unwrap_or_else(|| "localhost".into());
                format!("{}://{host}{prefix}/ws/{id}", self.ws_scheme)
            }
        }
    }
}

fn topic_names(topics: Vec<Name>) -> Vec<String> {
    topics.into_iter().map(|Name(name)| name).collect()
}

/// The message of a send request, encoded once.
fn message_json(message: &Message) -> Result<Box<RawValue>, AppError> {
    to_raw_value(&message.0).map_err(|err| AppError::BadRequest(err.to_string()))
}

#[OpenApi]
impl Api {
    /// Register a client
    ///
    /// Returns the client's id (keep it secret) and the URL of its WebSocket.
    #[oai(path = "/register", method = "post", operation_id = "register", tag = "Tag::Clients")]
    async fn register(
        &self,
        req: &Request,
        api_key: ApiKey,
        body: Json<RegisterRequest>,
    ) -> ApiResult<RegisterResponse, RegisterErrors> {
        self.node.require_key(api_key.as_deref())?;
        let name = body.0.name.as_ref().map(|name| name.0.as_str());
        let client = self.node.register(name).await?;
        let ws_url = self.ws_url(req, client.id);
        Ok(RegisterResponse::Created(Json(Registered { id: client.id, name: client.name, ws_url })))
    }

    /// Unregister a client
    ///
    /// The id in the path authorizes the call. The client's live sockets close with 4001.
    #[oai(
        path = "/register/:id",
        method = "delete",
        operation_id = "unregister",
        tag = "Tag::Clients"
    )]
    async fn unregister(
        &self,
        /// The client's id.
        id: Path<Uuid>,
    ) -> ApiResult<Json<Unregistered>, UnregisterErrors> {
        let closed = self.node.unregister(id.0).await?;
        Ok(Json(Unregistered { id: id.0, closed_connections: closed as u64 }))
    }

    /// Broadcast to every connected socket
    ///
    /// Authorized by X-Api-Key or by a registered sender `id`; the sender's own sockets
    /// receive it too.
    #[oai(path = "/broadcast", method = "post", operation_id = "broadcast", tag = "Tag::Messages")]
    async fn broadcast(
        &self,
        api_key: ApiKeyOrSender,
        body: Json<BroadcastRequest>,
    ) -> ApiResult<Json<Recipients>, BroadcastErrors> {
        let BroadcastRequest { id, message } = body.0;
        let body = SendRequest { id, message, idempotency_key: None };
        self.send(api_key.as_deref(), body, Target::Broadcast).await
    }

    /// Publish to a topic's subscribers
    #[oai(
        path = "/topics/:name/publish",
        method = "post",
        operation_id = "publish",
        tag = "Tag::Messages"
    )]
    async fn publish(
        &self,
        /// The topic's name.
        name: Path<String>,
        api_key: ApiKeyOrSender,
        body: Json<SendRequest>,
    ) -> ApiResult<Json<Recipients>, PublishErrors> {
        self.send(api_key.as_deref(), body.0, Target::Topic(name.0)).await
    }

    /// Subscribe a client to topics
    #[oai(path = "/subscribe", method = "post", operation_id = "subscribe", tag = "Tag::Topics")]
    async fn subscribe(
        &self,
        body: Json<SubscriptionRequest>,
    ) -> ApiResult<Accepted, SubscriptionErrors> {
        let result = self.node.subscribe(body.0.id, topic_names(body.0.topics)).await;
        result.map_err(AppError::unknown_client_forbidden)?;
        Ok(Accepted::Accepted)
    }

    /// Unsubscribe a client from topics
    #[oai(
        path = "/unsubscribe",
        method = "post",
        operation_id = "unsubscribe",
        tag = "Tag::Topics"
    )]
    async fn unsubscribe(
        &self,
        body: Json<SubscriptionRequest>,
    ) -> ApiResult<Accepted, SubscriptionErrors> {
        let result = self.node.unsubscribe(body.0.id, topic_names(body.0.topics)).await;
        result.map_err(AppError::unknown_client_forbidden)?;
        Ok(Accepted::Accepted)
    }

    /// List topics with their subscriber counts
    #[oai(path = "/topics", method = "get", operation_id = "listTopics", tag = "Tag::Topics")]
    async fn list_topics(&self) -> ApiResult<Json<Vec<Topic>>, ListErrors> {
        let topics = self.node.topics().await?;
        Ok(Json(
            topics
                .into_iter()
                .map(|t| Topic { name: t.name, subscribers: t.subscribers })
                .collect(),
        ))
    }

    /// Create a topic
    #[oai(path = "/topics", method = "post", operation_id = "createTopic", tag = "Tag::Topics")]
    async fn create_topic(
        &self,
        api_key: ApiKey,
        body: Json<CreateTopicRequest>,
    ) -> ApiResult<TopicCreated, CreateTopicErrors> {
        self.node.require_key(api_key.as_deref())?;
        let CreateTopicRequest { name: Name(name), history_size, history_ttl_seconds } = body.0;
        let history = match (history_size, history_ttl_seconds) {
            (None, None) => None,
            (size, ttl) => {
                let default = self.node.default_history();
                Some(HistorySettings {
                    size: size.unwrap_or(default.size),
                    ttl: ttl.map_or(default.ttl, Duration::from_secs),
                })
            }
        };
        self.node.create_topic(&name, history).await?;
        Ok(TopicCreated::Created(Json(Topic { name, subscribers: 0 })))
    }

    /// Read a topic's history
    ///
    /// The messages the topic kept after offset `since`, oldest first, and whether they are
    /// all of them. A client that was away passes the offset and epoch of the last message it
    /// got; `complete: false` tells it that it missed messages it can no longer get.
    #[oai(
        path = "/topics/:name/history",
        method = "get",
        operation_id = "getTopicHistory",
        tag = "Tag::Topics"
    )]
    async fn history(
        &self,
        /// The topic's name.
        name: Path<String>,
        /// Messages after this offset (0: from the oldest kept). At most 2^53-1, which every
        /// JSON client reads exactly; offsets never get that far.
        #[oai(default, validator(minimum(value = "0"), maximum(value = "9007199254740991")))]
        since: Query<u64>,
        /// The epoch `since` belongs to; a different one makes the answer incomplete.
        epoch: Query<Option<String>>,
        /// At most this many messages.
        #[oai(
            default = "default_history_limit",
            validator(minimum(value = "1"), maximum(value = "1000"))
        )]
        limit: Query<u32>,
        api_key: ApiKey,
    ) -> ApiResult<Json<TopicHistory>, TopicReadErrors> {
        self.node.require_key(api_key.as_deref())?;
        let (page, complete) =
            self.node.history(&name.0, since.0, epoch.0.as_deref(), limit.0 as usize).await?;
        let messages = page
            .messages
            .into_iter()
            .map(|kept| {
                // Kept as it was published, which was JSON.
                let data = serde_json::from_str(&kept.data).unwrap_or(serde_json::Value::Null);
                HistoryMessage { offset: kept.offset, from: kept.from, data: Message(data) }
            })
            .collect();
        Ok(Json(TopicHistory {
            topic: name.0,
            offset: page.position.offset,
            epoch: page.position.epoch,
            complete,
            messages,
        }))
    }

    /// Who is present in a topic
    ///
    /// The clients subscribed to the topic that have a live socket, on every node of the
    /// cluster, with their socket counts. A node that died without shutting down drops out
    /// within 6 seconds.
    #[oai(
        path = "/topics/:name/presence",
        method = "get",
        operation_id = "getTopicPresence",
        tag = "Tag::Topics"
    )]
    async fn presence(
        &self,
        /// The topic's name.
        name: Path<String>,
        /// Only the count, without the clients.
        #[oai(default)]
        count_only: Query<bool>,
        api_key: ApiKey,
    ) -> ApiResult<Json<TopicPresence>, TopicReadErrors> {
        self.node.require_key(api_key.as_deref())?;
        let present = self.node.presence(&name.0).await?;
        let count = present.len() as u64;
        let clients = (!count_only.0).then(|| {
            present
                .into_iter()
                .map(|p| PresentClient { name: p.name, connections: p.connections })
                .collect()
        });
        Ok(Json(TopicPresence { topic: name.0, count, clients }))
    }

    /// Delete a topic
    ///
    /// Every subscription to it ends.
    #[oai(
        path = "/topics/:name",
        method = "delete",
        operation_id = "deleteTopic",
        tag = "Tag::Topics"
    )]
    async fn delete_topic(
        &self,
        /// The topic's name.
        name: Path<String>,
        api_key: ApiKey,
    ) -> ApiResult<Json<TopicName>, DeleteTopicErrors> {
        self.node.require_key(api_key.as_deref())?;
        self.node.delete_topic(&name.0).await?;
        Ok(Json(TopicName { name: name.0 }))
    }

    /// The test page
    #[oai(path = "/", method = "get", hidden)]
    async fn index(&self) -> Html<&'static str> {
        Html(crate::page::INDEX_HTML)
    }

    /// Liveness: the process is up
    #[oai(path = "/health", method = "get", operation_id = "health", tag = "Tag::Operations")]
    async fn health(&self) -> Json<Status> {
        Json(Status { status: "ok".into() })
    }

    /// Readiness: the store is reachable (in a cluster, the Redis pub/sub bus is connected too)
    #[oai(path = "/ready", method = "get", operation_id = "ready", tag = "Tag::Operations")]
    async fn ready(&self) -> ApiResult<Json<Status>, ReadyErrors> {
        self.node.ready().await?;
        Ok(Json(Status { status: "ready".into() }))
    }

    /// Prometheus metrics of this node
    ///
    /// Counters of publishes, deliveries, closes by code, HTTP requests by operation and status
    /// (with a latency histogram), Redis commands, and gauges of connections, clients, topics
    /// and relay peers. Open like `/health`: keep it from the public at the proxy (see deploy/).
    #[oai(path = "/metrics", method = "get", operation_id = "metrics", tag = "Tag::Operations")]
    async fn metrics(&self) -> MetricsText {
        MetricsText::Ok(PlainText(self.node.metrics_text().await))
    }

    /// This node's connection and delivery counters
    #[oai(path = "/stats", method = "get", operation_id = "stats", tag = "Tag::Operations")]
    async fn stats(&self, api_key: ApiKey) -> ApiResult<Json<Stats>, StatsErrors> {
        self.node.require_key(api_key.as_deref())?;
        let (hub, relay) = (&self.node.hub, &self.node.relay);
        Ok(Json(Stats {
            connections: hub.connection_count() as u64,
            connected_clients: hub.connected_client_count() as u64,
            deliveries: hub.stats.deliveries.load(Ordering::Relaxed),
            slow_consumer_closes: self.node.slow_consumer_closes(),
            relay_peers: relay.peer_count() as u64,
            relayed_frames: relay.stats.relayed_frames.load(Ordering::Relaxed),
            cluster: self.node.bus.membership().map(|bus| ClusterStats {
                node_id: bus.node_id,
                bus_connected: bus.connected,
                bus_reconnects: bus.reconnects,
            }),
        }))
    }
}

impl Api {
    async fn send<S>(
        &self,
        api_key: Option<&str>,
        body: SendRequest,
        target: Target,
    ) -> ApiResult<Json<Recipients>, S> {
        let sender = self.node.sender(api_key, body.id).await?;
        let data = message_json(&body.message)?;
        let from = sender.as_ref().map(|client| client.name.as_str());
        let key = body.idempotency_key.as_ref().map(|key| key.0.as_str());
        let sent = self.node.publish(from, target, &data, key).await?;
        let (offset, epoch) = match sent.position {
            Some(position) => (Some(position.offset), Some(position.epoch)),
            None => (None, None),
        };
        Ok(Json(Recipients { recipients: sent.recipients, offset, epoch }))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn metrics_are_served_as_the_prometheus_text_format() {
        // The content type `MetricsText` declares (an attribute takes only a literal).
        let declared = "text/plain; version=0.0.4; charset=utf-8";
        assert_eq!(declared, prometheus_client::encoding::prometheus_text::CONTENT_TYPE);
    }
}
