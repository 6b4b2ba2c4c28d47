//! The WebSocket frames Switchboard and its clients exchange: JSON text frames tagged by `"type"`.
//!
//! Shared by the server, native clients and the Wasm client so all agree on one encoding.
//! [`ClientFrame::parse`] reads a client frame and says exactly what is wrong with a bad one;
//! [`ServerFrame`] is what the server sends. `data` stays raw JSON end to end: the server never
//! re-encodes a payload, it copies the bytes it was given into the one frame every recipient shares.

#[cfg(feature = "asyncapi")]
pub mod asyncapi;
pub mod reconnect;
pub mod relay;
pub mod request;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Close code when a client is unregistered while connected.
pub const CLOSE_UNREGISTERED: u16 = 4001;
/// Close code when a client did not answer the server's ping in time.
pub const CLOSE_PING_TIMEOUT: u16 = 4002;
/// Close code when a client reads too slowly and its bounded send queue overflowed.
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;
/// Every close code the server sends, client and relay sockets alike; what each means is
/// [`reconnect::describe_close`].
pub const SERVER_CLOSE_CODES: [u16; 8] =
    [1001, 1002, 1007, 1009, 1013, CLOSE_UNREGISTERED, CLOSE_PING_TIMEOUT, CLOSE_SLOW_CONSUMER];

/// The deepest nesting of arrays and objects a message may have: what serde_json's limit (128
/// for a whole document) leaves a message inside the HTTP body's object, so a message refused
/// over HTTP is refused over a socket too, and no recipient has to parse deeper.
pub const MAX_NESTING: usize = 127;

/// Whether `json` (valid JSON text) nests arrays and objects at most `limit` deep. A byte scan:
/// no recursion, whatever the depth.
pub fn nesting_within(json: &str, limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for byte in json.bytes() {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// A frame a client sends. `reference` is the optional `ref` echoed by the ack or error answer.
#[derive(Debug, Clone)]
#[cfg_attr(
    feature = "asyncapi",
    derive(schemars::JsonSchema),
    schemars(tag = "type", rename_all = "snake_case")
)]
pub enum ClientFrame<'a> {
    /// Subscribe the client (all its sockets) to topics; all must exist, else nothing is applied.
    Subscribe {
        topics: Vec<String>,
        #[cfg_attr(feature = "asyncapi", schemars(rename = "ref"))]
        reference: Option<&'a RawValue>,
    },
    /// Unsubscribe the client from topics; the same rule.
    Unsubscribe {
        topics: Vec<String>,
        #[cfg_attr(feature = "asyncapi", schemars(rename = "ref"))]
        reference: Option<&'a RawValue>,
    },
    /// Send `data` (any JSON) to the topic's subscribers, `from` being this client's name. With
    /// `idempotency_key`, the same key on the topic within the server's window publishes once.
    Publish {
        topic: String,
        data: &'a RawValue,
        idempotency_key: Option<String>,
        #[cfg_attr(feature = "asyncapi", schemars(rename = "ref"))]
        reference: Option<&'a RawValue>,
    },
    /// Send `data` to every connected socket, this client's own included.
    Broadcast {
        data: &'a RawValue,
        #[cfg_attr(feature = "asyncapi", schemars(rename = "ref"))]
        reference: Option<&'a RawValue>,
    },
    /// Answered with an `ack`: an application-level liveness check.
    Ping {
        #[cfg_attr(feature = "asyncapi", schemars(rename = "ref"))]
        reference: Option<&'a RawValue>,
    },
}

/// Why a client frame could not be read; `reference` is kept when it could be read.
#[derive(Debug, Clone)]
pub struct FrameError<'a> {
    pub code: &'static str,
    pub message: String,
    pub reference: Option<&'a RawValue>,
}

/// Every field any client frame may carry; `type` picks which must be present.
/// (serde's internally tagged enums cannot hold a borrowed `RawValue`, hence this flat form.)
#[derive(Deserialize)]
struct WireClientFrame<'a> {
    #[serde(rename = "type")]
    kind: Option<&'a str>,
    topics: Option<Vec<String>>,
    topic: Option<String>,
    idempotency_key: Option<String>,
    /// `null` is data like any other; only a missing field is `None`.
    #[serde(default, borrow, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(rename = "ref", borrow)]
    reference: Option<&'a RawValue>,
}

/// Reads a field that is present, `null` included (plain `Option` would read `null` as absent).
fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

impl<'a> ClientFrame<'a> {
    /// Parses one text frame.
    pub fn parse(text: &'a str) -> Result<Self, FrameError<'a>> {
        let wire: WireClientFrame<'a> = serde_json::from_str(text).map_err(|err| FrameError {
            code: "malformed_frame",
            message: format!("frame is not a JSON object of the protocol: {err}"),
            reference: None,
        })?;
        let reference = wire.reference;
        if let Some(data) = wire.data
            && !nesting_within(data.get(), MAX_NESTING)
        {
            return Err(FrameError {
                code: "malformed_frame",
                message: format!("`data` nests deeper than {MAX_NESTING} arrays or objects"),
                reference,
            });
        }
        let missing = |field: &str, kind: &str| FrameError {
            code: "malformed_frame",
            message: format!("a `{kind}` frame needs `{field}`"),
            reference,
        };
        match wire.kind {
            Some(kind @ ("subscribe" | "unsubscribe")) => {
                let topics = wire.topics.ok_or_else(|| missing("topics", kind))?;
                Ok(if kind == "subscribe" {
                    ClientFrame::Subscribe { topics, reference }
                } else {
                    ClientFrame::Unsubscribe { topics, reference }
                })
            }
            Some("publish") => Ok(ClientFrame::Publish {
                topic: wire.topic.ok_or_else(|| missing("topic", "publish"))?,
                data: wire.data.ok_or_else(|| missing("data", "publish"))?,
                idempotency_key: wire.idempotency_key,
                reference,
            }),
            Some("broadcast") => Ok(ClientFrame::Broadcast {
                data: wire.data.ok_or_else(|| missing("data", "broadcast"))?,
                reference,
            }),
            Some("ping") => Ok(ClientFrame::Ping { reference }),
            Some(other) => Err(FrameError {
                code: "unknown_frame",
                message: format!(
                    "unknown frame type `{other}`; expected subscribe, unsubscribe, publish, broadcast or ping"
                ),
                reference,
            }),
            None => Err(missing("type", "client")),
        }
    }

    /// The `ref` the client attached, if any.
    pub fn reference(&self) -> Option<&'a RawValue> {
        match self {
            ClientFrame::Subscribe { reference, .. }
            | ClientFrame::Unsubscribe { reference, .. }
            | ClientFrame::Publish { reference, .. }
            | ClientFrame::Broadcast { reference, .. }
            | ClientFrame::Ping { reference } => *reference,
        }
    }

    /// Encodes the frame as a client would send it.
    pub fn to_json(&self) -> String {
        let (kind, topics, topic, data) = match self {
            ClientFrame::Subscribe { topics, .. } => ("subscribe", Some(topics), None, None),
            ClientFrame::Unsubscribe { topics, .. } => ("unsubscribe", Some(topics), None, None),
            ClientFrame::Publish { topic, data, .. } => ("publish", None, Some(topic), Some(*data)),
            ClientFrame::Broadcast { data, .. } => ("broadcast", None, None, Some(*data)),
            ClientFrame::Ping { .. } => ("ping", None, None, None),
        };
        let idempotency_key = match self {
            ClientFrame::Publish { idempotency_key, .. } => idempotency_key.as_ref(),
            _ => None,
        };
        #[derive(Serialize)]
        struct Out<'b> {
            #[serde(rename = "type")]
            kind: &'b str,
            #[serde(skip_serializing_if = "Option::is_none")]
            topics: Option<&'b Vec<String>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            topic: Option<&'b String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            data: Option<&'b RawValue>,
            #[serde(skip_serializing_if = "Option::is_none")]
            idempotency_key: Option<&'b String>,
            #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
            reference: Option<&'b RawValue>,
        }
        let out = Out { kind, topics, topic, data, idempotency_key, reference: self.reference() };
        serde_json::to_string(&out).unwrap_or_default()
    }
}

/// A frame the server sends.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "asyncapi", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    /// First frame on every connection: the client's id and current subscriptions (sorted).
    Welcome { id: &'a str, topics: Vec<String> },
    /// A delivery. `topic` is null for a broadcast; `from` is null when sent with the API key.
    /// A topic's message carries its position: `offset` (1, 2, ... per topic, no gaps) and the
    /// topic's `epoch`, which changes when the topic's history is lost; a broadcast has neither.
    Message {
        topic: Option<&'a str>,
        from: Option<&'a str>,
        /// Any JSON, exactly as sent.
        #[serde(borrow)]
        data: &'a RawValue,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<&'a str>,
    },
    /// A client frame was applied; `ref` is the frame's (null if it had none).
    Ack {
        #[serde(rename = "ref", borrow)]
        reference: Option<&'a RawValue>,
    },
    /// A client frame was refused; the connection stays open.
    Error {
        #[serde(rename = "ref", borrow)]
        reference: Option<&'a RawValue>,
        /// A stable code: malformed_frame, unknown_frame, binary_frame, topic_not_found,
        /// unknown_client, message_too_large or unavailable.
        error: &'a str,
        /// What went wrong, for people.
        message: &'a str,
    },
}

impl ServerFrame<'_> {
    /// Encodes the frame. Encoding these types cannot fail (no maps with non-string keys).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// An owned server frame, as a client decodes it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerEvent {
    Welcome {
        id: String,
        topics: Vec<String>,
    },
    Message {
        topic: Option<String>,
        from: Option<String>,
        data: serde_json::Value,
        /// The message's position in its topic (none for a broadcast).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<String>,
    },
    Ack {
        #[serde(rename = "ref", default)]
        reference: Option<serde_json::Value>,
    },
    Error {
        #[serde(rename = "ref", default)]
        reference: Option<serde_json::Value>,
        error: String,
        message: String,
    },
}

impl ServerEvent {
    /// Decodes one server text frame.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_client_frame() {
        let f = ClientFrame::parse(r#"{"type":"subscribe","topics":["a","b"],"ref":7}"#).unwrap();
        assert_eq!(f.reference().map(RawValue::get), Some("7"));
        assert!(matches!(f, ClientFrame::Subscribe { ref topics, .. } if topics == &["a", "b"]));
        let f = ClientFrame::parse(r#"{"type":"publish","topic":"t","data":{"x":[1,2]}}"#).unwrap();
        assert!(matches!(f, ClientFrame::Publish { data, .. } if data.get() == r#"{"x":[1,2]}"#));
        let f = ClientFrame::parse(r#"{"type":"broadcast","data":"hi","ref":"r1"}"#).unwrap();
        assert!(matches!(f, ClientFrame::Broadcast { data, .. } if data.get() == r#""hi""#));
        assert!(matches!(
            ClientFrame::parse(r#"{"type":"ping"}"#),
            Ok(ClientFrame::Ping { reference: None })
        ));
        let f = ClientFrame::parse(r#"{"type":"broadcast","data":null}"#).unwrap();
        assert!(
            matches!(f, ClientFrame::Broadcast { data, .. } if data.get() == "null"),
            "null is data"
        );
    }

    #[test]
    fn bad_frames_say_what_is_wrong_and_keep_the_ref() {
        let e = ClientFrame::parse("not json").unwrap_err();
        assert_eq!(e.code, "malformed_frame");
        let e = ClientFrame::parse(r#"{"type":"publish","topic":"t","ref":3}"#).unwrap_err();
        assert_eq!((e.code, e.reference.map(RawValue::get)), ("malformed_frame", Some("3")));
        assert!(e.message.contains("data"));
        let e = ClientFrame::parse(r#"{"type":"dance"}"#).unwrap_err();
        assert_eq!(e.code, "unknown_frame");
        let e = ClientFrame::parse(r#"{"topics":[]}"#).unwrap_err();
        assert!(e.message.contains("type"));
    }

    #[test]
    fn nesting_is_counted_outside_strings_only() {
        assert!(nesting_within(r#"{"a":[1,{"b":[]}]}"#, 4));
        assert!(!nesting_within(r#"{"a":[1,{"b":[]}]}"#, 3));
        assert!(nesting_within(r#"["[[[[", "\"[[["]"#, 1), "brackets in strings do not count");
        let deep = format!("{}{}", "[".repeat(MAX_NESTING + 1), "]".repeat(MAX_NESTING + 1));
        assert!(
            !nesting_within(&deep, MAX_NESTING)
                && nesting_within(&deep[1..deep.len() - 1], MAX_NESTING)
        );
        let frame = format!(r#"{{"type":"broadcast","data":{deep},"ref":4}}"#);
        let err = ClientFrame::parse(&frame).unwrap_err();
        assert_eq!((err.code, err.reference.map(RawValue::get)), ("malformed_frame", Some("4")));
    }

    #[test]
    fn client_frames_round_trip() {
        let data = RawValue::from_string("{\"n\":1}".into()).unwrap();
        let frame = ClientFrame::Publish {
            topic: "news".into(),
            data: &data,
            idempotency_key: Some("k-1".into()),
            reference: None,
        };
        let text = frame.to_json();
        assert_eq!(ClientFrame::parse(&text).unwrap().to_json(), text);
    }

    #[test]
    fn server_frames_decode_as_events() {
        let data = RawValue::from_string("[1,2]".into()).unwrap();
        let broadcast = ServerFrame::Message {
            topic: None,
            from: Some("alice"),
            data: &data,
            offset: None,
            epoch: None,
        };
        let text = broadcast.to_json();
        assert_eq!(text, r#"{"type":"message","topic":null,"from":"alice","data":[1,2]}"#);
        assert_eq!(
            ServerEvent::parse(&text).unwrap(),
            ServerEvent::Message {
                topic: None,
                from: Some("alice".into()),
                data: serde_json::json!([1, 2]),
                offset: None,
                epoch: None,
            }
        );
        let published = ServerFrame::Message {
            topic: Some("t"),
            from: None,
            data: &data,
            offset: Some(7),
            epoch: Some("e1"),
        };
        let text = published.to_json();
        assert_eq!(
            text,
            r#"{"type":"message","topic":"t","from":null,"data":[1,2],"offset":7,"epoch":"e1"}"#
        );
        assert!(matches!(ServerEvent::parse(&text).unwrap(),
            ServerEvent::Message { offset: Some(7), epoch: Some(e), .. } if e == "e1"));
    }
}
