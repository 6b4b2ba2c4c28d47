//! What a client sends: requests tagged with the numeric `ref` their answer carries, and the
//! socket URL of a client. Shared by the Wasm and the native client.

use crate::ClientFrame;
use serde_json::value::RawValue;

/// A request sent over the socket; answered by an `ack` or `error` carrying its `ref`.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    Subscribe(&'a [String]),
    Unsubscribe(&'a [String]),
    /// `data` is JSON text.
    Publish {
        topic: &'a str,
        data: &'a str,
    },
    Broadcast {
        data: &'a str,
    },
    Ping,
}

/// The text frame for `request` with the numeric `ref` its answer will carry. Fails only when
/// `data` is not JSON.
pub fn encode(request: Request<'_>, reference: u64) -> Result<String, String> {
    let reference = RawValue::from_string(reference.to_string()).map_err(|e| e.to_string())?;
    let reference = Some(reference.as_ref());
    let data = match request {
        Request::Publish { data, .. } | Request::Broadcast { data } => Some(
            RawValue::from_string(data.to_owned())
                .map_err(|err| format!("the message is not JSON: {err}"))?,
        ),
        _ => None,
    };
    let frame = match (request, data.as_deref()) {
        (Request::Subscribe(topics), _) => {
            ClientFrame::Subscribe { topics: topics.to_vec(), reference }
        }
        (Request::Unsubscribe(topics), _) => {
            ClientFrame::Unsubscribe { topics: topics.to_vec(), reference }
        }
        (Request::Publish { topic, .. }, Some(data)) => {
            ClientFrame::Publish { topic: topic.to_owned(), data, idempotency_key: None, reference }
        }
        (Request::Broadcast { .. }, Some(data)) => ClientFrame::Broadcast { data, reference },
        (Request::Ping, _) => ClientFrame::Ping { reference },
        _ => return Err("a message needs data".into()),
    };
    Ok(frame.to_json())
}

/// The WebSocket URL of client `id` on the server at `base` (http -> ws, https -> wss).
pub fn ws_url(base: &str, id: &str) -> String {
    socket_url(base, &format!("/ws/{id}"))
}

/// The URL of the socket at `path` (e.g. `/relay/{id}`) on the server at `base`, `base` being
/// the HTTP address with any path prefix: http becomes ws, https becomes wss.
pub fn socket_url(base: &str, path: &str) -> String {
    let base = base.trim_end_matches('/');
    let socket_base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_owned()
    };
    format!("{socket_base}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> ClientFrame<'_> {
        ClientFrame::parse(text).unwrap_or_else(|err| panic!("{text}: {}", err.message))
    }

    #[test]
    fn every_request_encodes_as_a_frame_the_server_reads() {
        let topics = vec!["news".to_owned(), "sports".to_owned()];
        let text = encode(Request::Subscribe(&topics), 1).unwrap();
        assert_eq!(text, r#"{"type":"subscribe","topics":["news","sports"],"ref":1}"#);
        assert!(matches!(parsed(&text), ClientFrame::Subscribe { topics: t, .. } if t == topics));

        let text = encode(Request::Unsubscribe(&topics[..1]), 2).unwrap();
        assert!(matches!(parsed(&text), ClientFrame::Unsubscribe { .. }));

        let text = encode(Request::Publish { topic: "news", data: r#"{"a": [1, 2]}"# }, 3).unwrap();
        let frame = parsed(&text);
        assert!(matches!(frame, ClientFrame::Publish { ref topic, data, .. }
            if topic == "news" && data.get() == r#"{"a": [1, 2]}"#));
        assert_eq!(frame.reference().map(RawValue::get), Some("3"));

        let text = encode(Request::Broadcast { data: "null" }, 4).unwrap();
        assert!(
            matches!(parsed(&text), ClientFrame::Broadcast { data, .. } if data.get() == "null")
        );
        assert_eq!(encode(Request::Ping, 5).unwrap(), r#"{"type":"ping","ref":5}"#);
    }

    #[test]
    fn data_must_be_json() {
        let err = encode(Request::Broadcast { data: "hello" }, 1).unwrap_err();
        assert!(err.contains("not JSON"), "{err}");
    }

    #[test]
    fn socket_urls_follow_the_page_scheme() {
        assert_eq!(ws_url("http://localhost:8080", "x"), "ws://localhost:8080/ws/x");
        assert_eq!(ws_url("https://push.example.com/", "x"), "wss://push.example.com/ws/x");
        assert_eq!(socket_url("http://h/p/", "/relay/r"), "ws://h/p/relay/r");
    }
}
