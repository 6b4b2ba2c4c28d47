//! The AsyncAPI 3.0 document of the WebSocket protocol (`openapi/asyncapi.yaml`), generated from
//! this crate's types so it cannot drift from them: the frames' schemas come from
//! [`ServerFrame`] and [`ClientFrame`] (schemars), the relay strings from [`crate::relay`], the
//! close codes from [`SERVER_CLOSE_CODES`].

use schemars::generate::SchemaSettings;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::{ClientFrame, SERVER_CLOSE_CODES, ServerFrame, reconnect::describe_close, relay};

/// The document as YAML.
pub fn yaml() -> String {
    serde_yaml_ng::to_string(&document()).unwrap_or_default()
}

/// The top level, in the order readers expect (the maps below it are sorted by key).
#[derive(Serialize)]
struct Document {
    asyncapi: &'static str,
    info: Value,
    #[serde(rename = "defaultContentType")]
    default_content_type: &'static str,
    channels: Value,
    operations: Value,
    components: Value,
}

/// One frame type: its message key, schema name and schema.
struct Frame {
    key: String,
    schema_name: String,
    schema: Value,
}

fn document() -> Document {
    let server = frames::<ServerFrame>(true);
    let client = frames::<ClientFrame>(false);
    let mut messages = Map::new();
    let mut schemas = Map::new();
    for frame in server.iter().chain(&client) {
        let summary = frame.schema["description"].as_str().unwrap_or_default().replace('\n', " ");
        let message = json!({
            "name": frame.key,
            "summary": summary,
            "payload": {"$ref": format!("#/components/schemas/{}", frame.schema_name)},
        });
        messages.insert(frame.key.clone(), message);
        schemas.insert(frame.schema_name.clone(), frame.schema.clone());
    }
    for (key, message, schema_name, schema) in relay_messages() {
        messages.insert(key.into(), message);
        schemas.insert(schema_name.into(), schema);
    }

    let refs = |keys: &mut dyn Iterator<Item = &str>| -> Map<String, Value> {
        keys.map(|key| (key.to_owned(), json!({"$ref": format!("#/components/messages/{key}")})))
            .collect()
    };
    let client_keys: Vec<&str> = server.iter().chain(&client).map(|f| f.key.as_str()).collect();
    let relay_keys = ["relayData", "relayNotice", "relayError"];
    let server_keys: Vec<&str> = server.iter().map(|f| f.key.as_str()).collect();
    let client_sent: Vec<&str> = client.iter().map(|f| f.key.as_str()).collect();

    Document {
        asyncapi: "3.0.0",
        info: json!({
            "title": "Switchboard WebSocket protocol",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The sockets of Switchboard: a registered client's (`/ws/{id}`) and \
                the relay's (`/relay/{id}`). Generated from the `switchboard-protocol` crate; \
                openapi/PROTOCOL.md tells the same in prose, openapi/openapi.json the HTTP API. \
                Operations are the server's: it sends server frames and receives client frames.",
        }),
        default_content_type: "application/json",
        channels: json!({
            "client": {
                "address": "/ws/{id}",
                "title": "A registered client's socket",
                "description": "Every frame is a JSON text frame with a `type`. Open it with the \
                    `ws_url` that `POST /register` returns; an unknown id is refused with 403 \
                    before the upgrade. A client may hold several sockets; each receives every \
                    delivery, and subscriptions belong to the client. Each client frame may \
                    carry a `ref` (any JSON) that its `ack` or `error` echoes.",
                "parameters": {"id": {"description": "The client's id from `POST /register`."}},
                "messages": refs(&mut client_keys.iter().copied()),
                "bindings": {"ws": {"method": "GET", "bindingVersion": "0.1.0"}},
                "x-close-codes": close_codes(),
            },
            "relay": {
                "address": "/relay/{id}",
                "title": "A relay peer's socket",
                "description": "Two peers that open the same id are paired; every text and \
                    binary frame one sends reaches the other unchanged. The server speaks only \
                    in the fixed texts of `relayNotice` and `relayError`, which a peer cannot send.",
                "parameters": {"id": {"description": "The pair's id: 1-128 of `A-Za-z0-9_.:-`."}},
                "messages": refs(&mut relay_keys.iter().copied()),
                "bindings": {"ws": {
                    "method": "GET",
                    "query": {"type": "object", "properties": {"key": {
                        "type": "string",
                        "description": "One of the server's relay keys, when it has any (`--relay-key`).",
                    }}},
                    "bindingVersion": "0.1.0",
                }},
                "x-close-codes": close_codes(),
            },
        }),
        operations: json!({
            "sendServerFrames": operation("send", "client", "What the server sends a client.", &server_keys),
            "receiveClientFrames": operation(
                "receive",
                "client",
                "What a client sends; each is answered by an `ack` or an `error`.",
                &client_sent,
            ),
            "relayToPeer": operation(
                "send",
                "relay",
                "What a relay peer receives: its partner's frames and the server's notices.",
                &relay_keys,
            ),
            "relayFromPeer": operation(
                "receive",
                "relay",
                "What a relay peer sends to its partner.",
                &relay_keys[..1],
            ),
        }),
        components: json!({"messages": messages, "schemas": schemas}),
    }
}

/// An operation of the server: it `action`s (sends or receives) the messages `keys` of `channel`.
fn operation(action: &str, channel: &str, summary: &str, keys: &[&str]) -> Value {
    let messages: Vec<Value> = keys
        .iter()
        .map(|key| json!({"$ref": format!("#/channels/{channel}/messages/{key}")}))
        .collect();
    json!({
        "action": action,
        "channel": {"$ref": format!("#/channels/{channel}")},
        "summary": summary,
        "messages": messages,
    })
}

/// The frames of `T`, an enum tagged by `type`: one schema per variant, named after its tag.
/// `sent_by_server`: described as serde writes them (every field that is not skipped is
/// there, null included), else as they are read.
fn frames<T: schemars::JsonSchema>(sent_by_server: bool) -> Vec<Frame> {
    let settings = SchemaSettings::draft07();
    let settings =
        if sent_by_server { settings.for_serialize() } else { settings.for_deserialize() };
    let root = settings.into_generator().into_root_schema_for::<T>();
    let root = any_for_true(root.to_value());
    let variants = root["oneOf"].as_array().cloned().unwrap_or_default();
    variants
        .into_iter()
        .map(|mut schema| {
            let key = schema["properties"]["type"]["const"].as_str().unwrap_or_default().to_owned();
            let schema_name = capitalized(&key);
            schema["title"] = json!(schema_name);
            Frame { key, schema_name, schema }
        })
        .collect()
}

/// Replaces the boolean schema `true` ("any value") with `{}`, which every tool reads.
fn any_for_true(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| {
                    let value = if value == Value::Bool(true) && key != "const" {
                        json!({})
                    } else {
                        any_for_true(value)
                    };
                    (key, value)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(any_for_true).collect()),
        other => other,
    }
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// The relay's messages: (key, message, schema name, schema).
fn relay_messages() -> [(&'static str, Value, &'static str, Value); 3] {
    let error_patterns: Vec<Value> = [relay::NOT_RECEIVED, relay::RESERVED_PREFIX]
        .iter()
        .map(|prefix| json!({"pattern": format!("^{}", regex_escaped(prefix))}))
        .collect();
    [
        (
            "relayData",
            json!({
                "name": "relayData",
                "summary": "A frame for the partner, text or binary, relayed unchanged and in order.",
                "contentType": "text/plain",
                "payload": {"$ref": "#/components/schemas/RelayData"},
            }),
            "RelayData",
            json!({
                "title": "RelayData",
                "description": format!(
                    "Any text or binary frame. A text starting with one of {} is refused \
                     (`relayError`).",
                    relay::RESERVED.map(|prefix| format!("`{prefix}`")).join(", ")
                ),
            }),
        ),
        (
            "relayNotice",
            json!({
                "name": "relayNotice",
                "summary": "Pairing news from the server: waiting, paired, the partner came or left.",
                "contentType": "text/plain",
                "payload": {"$ref": "#/components/schemas/RelayNotice"},
            }),
            "RelayNotice",
            json!({
                "title": "RelayNotice",
                "type": "string",
                "enum": [relay::WAITING, relay::CONNECTED, relay::REMOTE_OPEN, relay::REMOTE_CLOSE],
                "description": "The first peer of an id gets `/status:waiting`. When a partner \
                    comes, the newcomer gets `/status:connected` and the waiting peer \
                    `/remote:open` then `/status:connected`. When a partner leaves, the other \
                    gets `/remote:close`, then `/status:waiting` or a new pairing.",
            }),
        ),
        (
            "relayError",
            json!({
                "name": "relayError",
                "summary": "A frame of this peer was not relayed; the text ends with that frame.",
                "contentType": "text/plain",
                "payload": {"$ref": "#/components/schemas/RelayError"},
            }),
            "RelayError",
            json!({
                "title": "RelayError",
                "type": "string",
                "description": "`/error:<code>:<text>:<the frame>`: 0001 when no partner \
                    received it, 0002 when it used a reserved prefix.",
                "oneOf": error_patterns,
            }),
        ),
    ]
}

/// Every close code the server sends, with its meaning.
fn close_codes() -> Value {
    SERVER_CLOSE_CODES
        .iter()
        .map(|&code| json!({"code": code, "meaning": describe_close(code)}))
        .collect()
}

fn regex_escaped(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let special = ".^$*+?()[]{}|\\/".contains(c);
            special.then_some('\\').into_iter().chain(std::iter::once(c))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_type_has_its_message_and_schema() {
        let document = document();
        let messages = document.components["messages"].as_object().unwrap();
        for key in ["welcome", "message", "ack", "error", "subscribe", "unsubscribe", "publish"] {
            assert!(messages.contains_key(key), "{key}");
        }
        let message = &document.components["schemas"]["Message"];
        assert_eq!(
            message["required"],
            json!(["type", "topic", "from", "data"]),
            "offset optional"
        );
        assert_eq!(message["properties"]["topic"]["type"], json!(["string", "null"]));
        let publish = &document.components["schemas"]["Publish"];
        assert_eq!(publish["required"], json!(["type", "topic", "data"]), "ref is optional");
        assert_eq!(publish["properties"]["ref"], json!({}));
    }

    #[test]
    fn relay_errors_match_what_the_server_sends() {
        let pattern = regex_escaped(relay::NOT_RECEIVED);
        assert_eq!(pattern, r"\/error:0001:The message was not received by anyone\.:");
    }
}
