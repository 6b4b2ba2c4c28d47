//! Request and response bodies of the HTTP API, as they appear in the OpenAPI spec.

use std::borrow::Cow;

use poem_openapi::{
    Object,
    registry::{MetaSchema, MetaSchemaRef},
    types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type},
};
use serde_json::Value;
use uuid::Uuid;

use crate::{
    relay::{ID_PATTERN, ID_RULE, valid_id},
    store::{NAME_PATTERN, NAME_RULE, valid_name},
};

/// The body of `register`.
#[derive(Debug, Object)]
pub struct RegisterRequest {
    /// Unique client name, 1-64 of `A-Za-z0-9_.-`. Absent or null: the server assigns a unique
    /// one.
    #[oai(nullable)]
    pub name: Option<Name>,
}

/// A registered client.
#[derive(Debug, Object)]
pub struct Registered {
    /// The client's id. A bearer secret: it connects, subscribes, sends and unregisters.
    pub id: Uuid,
    /// The client's unique name: the one asked for, or the one the server assigned. Messages
    /// the client sends carry it as `from`.
    pub name: String,
    /// Where the client opens its WebSocket.
    pub ws_url: String,
}

/// The answer to `unregister`.
#[derive(Debug, Object)]
pub struct Unregistered {
    /// The id that was unregistered.
    pub id: Uuid,
    /// Live WebSocket connections of the client that were closed (code 4001), on every node of
    /// the cluster.
    pub closed_connections: u64,
}

/// The body of `publish`.
#[derive(Debug, Object)]
pub struct SendRequest {
    /// Sender id. Without it (or null) the X-Api-Key header is required and `from` is null.
    #[oai(nullable)]
    pub id: Option<Uuid>,
    /// Any JSON value (null included); delivered as the `data` of each message frame.
    pub message: Message,
    /// Publish at most once: the same key on the same topic within the server's
    /// `--idempotency-window` (default 2 min) publishes nothing and answers as the first time,
    /// on every node. 1-128 of `A-Za-z0-9_.:-`.
    #[oai(nullable)]
    pub idempotency_key: Option<IdempotencyKey>,
}

/// The body of `broadcast`.
#[derive(Debug, Object)]
pub struct BroadcastRequest {
    /// Sender id. Without it (or null) the X-Api-Key header is required and `from` is null.
    #[oai(nullable)]
    pub id: Option<Uuid>,
    /// Any JSON value (null included); delivered as the `data` of each message frame.
    pub message: Message,
}

/// A message: any JSON value, null included. Unlike a plain `serde_json::Value` field, a
/// missing `message` is refused instead of being read as null.
#[derive(Debug, Clone)]
pub struct Message(pub Value);

impl Type for Message {
    const IS_REQUIRED: bool = true;
    type RawValueType = Value;
    type RawElementValueType = Value;

    fn name() -> Cow<'static, str> {
        "any".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema::ANY))
    }

    fn as_raw_value(&self) -> Option<&Value> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Value> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl ParseFromJSON for Message {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        value.map(Message).ok_or_else(|| ParseError::custom("`message` is required"))
    }
}

impl ToJSON for Message {
    fn to_json(&self) -> Option<Value> {
        Some(self.0.clone())
    }
}

/// A string checked as it is parsed (a JSON string, nothing poem-openapi would coerce into
/// one), whose schema shows the rule's pattern, so each rule is written once:
/// `checked_string!(Type, PATTERN, RULE, valid, "what it is")`.
macro_rules! checked_string {
    ($(#[$meta:meta])* $name:ident, $pattern:expr, $rule:expr, $valid:path, $what:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        pub struct $name(pub String);

        impl Type for $name {
            const IS_REQUIRED: bool = true;
            type RawValueType = String;
            type RawElementValueType = String;

            fn name() -> Cow<'static, str> {
                "string".into()
            }

            fn schema_ref() -> MetaSchemaRef {
                let schema =
                    MetaSchema { pattern: Some($pattern.to_owned()), ..MetaSchema::new("string") };
                MetaSchemaRef::Inline(Box::new(schema))
            }

            fn as_raw_value(&self) -> Option<&String> {
                Some(&self.0)
            }

            fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
                Box::new(self.as_raw_value().into_iter())
            }
        }

        impl ParseFromJSON for $name {
            fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
                match value {
                    Some(Value::String(text)) if $valid(&text) => Ok($name(text)),
                    Some(Value::String(text)) => Err(ParseError::custom(format!(
                        "{} is {} (got `{text}`)",
                        $what, $rule
                    ))),
                    _ => Err(ParseError::expected_type(value.unwrap_or_default())),
                }
            }
        }

        impl ToJSON for $name {
            fn to_json(&self) -> Option<Value> {
                Some(Value::String(self.0.clone()))
            }
        }
    };
}

checked_string!(
    /// A client or topic name: the store's rule.
    Name, NAME_PATTERN, NAME_RULE, valid_name, "a name"
);

checked_string!(
    /// A publish's idempotency key: the relay id's rule.
    IdempotencyKey, ID_PATTERN, ID_RULE, valid_id, "an idempotency key"
);

/// How many clients a message was sent to.
#[derive(Debug, Object)]
pub struct Recipients {
    /// Clients targeted at publish time: registered clients for a broadcast, subscribers for a
    /// topic. Counted when the message is sent, not acknowledged deliveries.
    pub recipients: u64,
    /// The message's offset in its topic: 1, 2, ... with no gap (absent for a broadcast).
    #[oai(skip_serializing_if_is_none)]
    pub offset: Option<u64>,
    /// The topic's epoch, which changes whenever the topic's history is lost (absent for a
    /// broadcast).
    #[oai(skip_serializing_if_is_none)]
    pub epoch: Option<String>,
}

/// The body of `subscribe` and `unsubscribe`.
#[derive(Debug, Object)]
pub struct SubscriptionRequest {
    /// The client's id.
    pub id: Uuid,
    /// Topics to (un)subscribe; all must exist, otherwise nothing is applied.
    pub topics: Vec<Name>,
}

/// A topic and how many clients subscribe to it.
#[derive(Debug, Object)]
pub struct Topic {
    /// The topic's name.
    pub name: String,
    /// Clients subscribed to the topic.
    pub subscribers: u64,
}

/// The body of `createTopic`.
#[derive(Debug, Object)]
pub struct CreateTopicRequest {
    /// 1-64 of `A-Za-z0-9_.-`.
    pub name: Name,
    /// Messages the topic keeps for clients that catch up (0: none). Absent or null: the
    /// server's `--history-size`.
    #[oai(nullable, validator(minimum(value = "0"), maximum(value = "100000")))]
    pub history_size: Option<u32>,
    /// Seconds the topic keeps a message (0: none). Absent or null: the server's
    /// `--history-ttl`.
    #[oai(nullable, validator(minimum(value = "0"), maximum(value = "604800")))]
    pub history_ttl_seconds: Option<u64>,
}

/// A topic's kept messages after an offset (`getTopicHistory`).
#[derive(Debug, Object)]
pub struct TopicHistory {
    /// The topic's name.
    pub topic: String,
    /// The offset of the topic's last message (0 before the first).
    pub offset: u64,
    /// The topic's epoch; offsets of another epoch belong to a history that is gone.
    pub epoch: String,
    /// Whether `messages` are every message after `since` (up to `limit`): false when the
    /// history no longer reaches back that far or `epoch` was not the topic's.
    pub complete: bool,
    /// Oldest first.
    pub messages: Vec<HistoryMessage>,
}

/// A message a topic kept.
#[derive(Debug, Object)]
pub struct HistoryMessage {
    /// Its offset in the topic.
    pub offset: u64,
    /// The sender's name; absent when it was sent with the API key.
    #[oai(skip_serializing_if_is_none)]
    pub from: Option<String>,
    /// The message, exactly as published.
    pub data: Message,
}

/// The topic an operation acted on.
#[derive(Debug, Object)]
pub struct TopicName {
    /// The topic's name.
    pub name: String,
}

/// The answer of the health probes.
#[derive(Debug, Object)]
pub struct Status {
    /// `ok` (process up) or `ready` (store reachable).
    pub status: String,
}

/// This node's counters.
#[derive(Debug, Object)]
pub struct Stats {
    /// Live WebSocket connections on this node.
    pub connections: u64,
    /// Clients with at least one live connection on this node.
    pub connected_clients: u64,
    /// Frames queued to sockets on this node since start.
    pub deliveries: u64,
    /// Connections and relay peers closed (4008) because they did not keep up.
    pub slow_consumer_closes: u64,
    /// Relay peers (`/relay/{id}` sockets) on this node, waiting or paired.
    pub relay_peers: u64,
    /// Frames relay peers on this node sent to their partners since start.
    pub relayed_frames: u64,
    // No doc comment: poem-openapi would wrap the reference in an `allOf` to carry it, which
    // generators turn into a second, anonymous type. `ClusterStats` says it.
    #[oai(skip_serializing_if_is_none)]
    pub cluster: Option<ClusterStats>,
}

/// This node's membership of a cluster; absent from `Stats` on a single node.
#[derive(Debug, Object)]
pub struct ClusterStats {
    /// This node's id on the Redis bus.
    pub node_id: Uuid,
    /// Whether the node's pub/sub connection to Redis is up.
    pub bus_connected: bool,
    /// How many times the pub/sub connection was lost and made again since start.
    pub bus_reconnects: u64,
}

/// Who is present in a topic (`getTopicPresence`).
#[derive(Debug, Object)]
pub struct TopicPresence {
    /// The topic's name.
    pub topic: String,
    /// How many subscribed clients have a live socket.
    pub count: u64,
    /// Those clients, by name (absent with `count_only`).
    #[oai(skip_serializing_if_is_none)]
    pub clients: Option<Vec<PresentClient>>,
}

/// A subscribed client with live sockets.
#[derive(Debug, Object)]
pub struct PresentClient {
    /// The client's name.
    pub name: String,
    /// Its live sockets, on every node together.
    pub connections: u64,
}
