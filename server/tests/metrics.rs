//! `GET /metrics`, read with a Prometheus text parser: each counter moves when its event
//! happens, the gauges say what the node holds, and every answer carries a request id.

mod support;

use futures_util::SinkExt;
use serde_json::json;
use support::*;
use switchboard_protocol::CLOSE_UNREGISTERED;
use tokio_tungstenite::{connect_async, tungstenite::Message};

#[tokio::test]
async fn every_counter_moves_when_its_event_happens() {
    let server = TestServer::start().await;
    let before = server.metrics().await;
    assert_eq!(metric(&before, "switchboard_topics", &[]), 2.0, "news and sports");
    assert_eq!(metric(&before, "switchboard_connections", &[]), 0.0);

    let (alice, mut ws) = server.client("alice").await;
    server.post("/subscribe", None, json!({"id": alice, "topics": ["news"]})).await;
    let (status, _) = server.post("/topics/news/publish", Some(KEY), json!({"message": 1})).await;
    assert_eq!(status, 200);
    server.post("/broadcast", Some(KEY), json!({"message": 2})).await;
    next_event(&mut ws).await;
    next_event(&mut ws).await;
    let (status, _) = server.post("/register", Some("wrong key"), json!({})).await;
    assert_eq!(status, 403);
    let (mut first, _) = connect_async(server.relay_url("pair")).await.unwrap();
    let (mut second, _) = connect_async(server.relay_url("pair")).await.unwrap();
    for _ in 0..3 {
        next_frame(&mut first).await;
    }
    next_frame(&mut second).await;
    second.send(Message::text("hello")).await.unwrap();
    assert_eq!(next_frame(&mut first).await, Message::text("hello"));

    let during = server.metrics().await;
    assert_eq!(metric(&during, "switchboard_connections", &[]), 1.0);
    assert_eq!(metric(&during, "switchboard_connected_clients", &[]), 1.0);
    assert_eq!(metric(&during, "switchboard_registered_clients", &[]), 1.0);
    assert_eq!(metric(&during, "switchboard_relay_peers", &[]), 2.0);
    let moved = |name: &str, labels: &[(&str, &str)]| {
        metric(&during, name, labels) - metric(&before, name, labels)
    };
    assert_eq!(moved("switchboard_messages_published_total", &[("kind", "topic")]), 1.0);
    assert_eq!(moved("switchboard_messages_published_total", &[("kind", "broadcast")]), 1.0);
    assert_eq!(moved("switchboard_deliveries_total", &[]), 2.0);
    assert_eq!(moved("switchboard_relay_frames_total", &[]), 1.0);
    let register_refused = [("operation", "register"), ("status", "403")];
    assert_eq!(moved("switchboard_http_requests_total", &register_refused), 1.0);
    let published = [("operation", "publish"), ("status", "200")];
    assert_eq!(moved("switchboard_http_requests_total", &published), 1.0);
    let timed = [("operation", "publish")];
    assert_eq!(moved("switchboard_http_request_duration_seconds", &timed), 1.0);

    server.delete(&format!("/register/{alice}"), None).await;
    assert_eq!(close_code(&mut ws).await, Some(CLOSE_UNREGISTERED));
    drop(first);
    let closes = [("code", "4001"), ("by", "server")];
    let mut after = server.metrics().await;
    for _ in 0..50 {
        if metric(&after, "switchboard_websocket_closes_total", &closes) == 1.0
            && metric(&after, "switchboard_relay_peers", &[]) == 1.0
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        after = server.metrics().await;
    }
    assert_eq!(metric(&after, "switchboard_websocket_closes_total", &closes), 1.0);
    assert_eq!(metric(&after, "switchboard_connections", &[]), 0.0);
    assert_eq!(metric(&after, "switchboard_registered_clients", &[]), 0.0);
    assert_eq!(metric(&after, "switchboard_relay_peers", &[]), 1.0, "one peer left");
    assert!(metric(&after, "switchboard_websocket_closes_total", &[("by", "client")]) >= 1.0);
}

#[tokio::test]
async fn every_answer_carries_a_request_id_and_a_given_one_is_kept() {
    let server = TestServer::start().await;
    let given = server.http.get(server.url("/health")).header("x-request-id", "trace-42");
    let response = given.send().await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-42");
    let made = server.http.get(server.url("/no/such/route")).send().await.unwrap();
    assert_eq!(made.status(), 404, "errors carry one too");
    let id = made.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 32, "a new one: {id}");
    let unusable = server.http.get(server.url("/health")).header("x-request-id", "a b");
    let response = unusable.send().await.unwrap();
    assert_ne!(response.headers()["x-request-id"], "a b", "not a usable id: replaced");
}
