//! Positions and history over HTTP and WebSocket, on the in-memory store and on Redis: every
//! topic message gets the next offset and the topic's epoch, the topic keeps the last ones by
//! count and age, and `GET /topics/{name}/history` says when it no longer reaches back far
//! enough.

mod support;

use std::{sync::Arc, time::Duration};

use serde_json::{Value, json};
use support::{
    KEY, TestServer, assert_silent, message, next_event, next_positioned_event,
    redis_server::RedisServer, send_json,
};
use switchboard::store::{RedisStore, Store};
use switchboard_protocol::ServerEvent;

async fn history(server: &TestServer, query: &str) -> (u16, Value) {
    let path = format!("/topics/news/history{query}");
    server.call(reqwest::Method::GET, &path, Some(KEY), None).await
}

/// Publishes `n` messages `{"n": i}` to `news`; returns the epoch they got.
async fn publish_numbered(server: &TestServer, n: u64) -> String {
    let mut epoch = String::new();
    for i in 1..=n {
        let (status, body) =
            server.post("/topics/news/publish", Some(KEY), json!({"message": {"n": i}})).await;
        assert_eq!(status, 200, "{body}");
        assert!(body["offset"].as_u64().is_some(), "{body}");
        epoch = body["epoch"].as_str().expect("an epoch").to_owned();
    }
    epoch
}

async fn positions_and_history_hold(server: TestServer) {
    let (status, body) =
        server.post("/topics", Some(KEY), json!({"name": "news", "history_size": 3})).await;
    assert_eq!(status, 201, "{body}");
    let (id, _) = server.register(Some("alice")).await;
    server.post("/subscribe", None, json!({"id": id, "topics": ["news"]})).await;
    let (mut ws, _) = server.connect(&id).await;

    let epoch = publish_numbered(&server, 5).await;
    for offset in 1..=5 {
        let event = next_positioned_event(&mut ws).await;
        let ServerEvent::Message { topic, offset: got, epoch: got_epoch, data, .. } = event else {
            panic!("a message, got {event:?}")
        };
        assert_eq!(
            (topic.as_deref(), got, data),
            (Some("news"), Some(offset), json!({"n": offset}))
        );
        assert_eq!(got_epoch.as_deref(), Some(epoch.as_str()));
    }
    let (_, broadcast) = server.post("/broadcast", Some(KEY), json!({"message": 0})).await;
    assert_eq!(broadcast, json!({"recipients": 1}), "a broadcast has no position");
    let event = next_positioned_event(&mut ws).await;
    assert!(matches!(event, ServerEvent::Message { offset: None, epoch: None, .. }), "{event:?}");

    // Three kept: after offset 2 they are complete, after 1 they are not.
    let (status, page) = history(&server, &format!("?since=2&epoch={epoch}")).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        (&page["offset"], &page["epoch"], &page["complete"]),
        (&json!(5), &json!(epoch), &json!(true))
    );
    let offsets: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [3, 4, 5]);
    assert_eq!(page["messages"][0], json!({"offset": 3, "data": {"n": 3}}));
    assert_eq!(history(&server, "?since=1").await.1["complete"], false, "offset 2 is gone");
    assert_eq!(history(&server, "?since=5").await.1["complete"], true, "nothing missed");
    assert_eq!(
        history(&server, "?since=4&epoch=other").await.1["complete"],
        false,
        "another epoch"
    );
    assert_eq!(
        history(&server, "?since=2&limit=1").await.1["messages"].as_array().unwrap().len(),
        1
    );

    for bad in ["?limit=0", "?limit=1001", "?since=-1", "?since=x"] {
        assert_eq!(history(&server, bad).await.0, 400, "{bad}");
    }
    let path = "/topics/news/history";
    assert_eq!(server.call(reqwest::Method::GET, path, None, None).await.0, 403);
    let (status, body) =
        server.call(reqwest::Method::GET, "/topics/none/history", Some(KEY), None).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("topic_not_found")));

    // Deleted and made again: a new epoch, offsets start over, the old history is gone.
    server.delete("/topics/news", Some(KEY)).await;
    server.post("/topics", Some(KEY), json!({"name": "news"})).await;
    let (_, page) = history(&server, &format!("?since=5&epoch={epoch}")).await;
    assert_eq!((&page["offset"], &page["complete"]), (&json!(0), &json!(false)));
    assert_ne!(page["epoch"], json!(epoch));
    let (_, sent) = server.post("/topics/news/publish", Some(KEY), json!({"message": 1})).await;
    assert_eq!(sent["offset"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_and_history_on_the_memory_store() {
    positions_and_history_hold(TestServer::start_with(|config| config.topics.clear()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_and_history_on_redis() {
    let redis = RedisServer::start().await;
    let pool = switchboard::redis_pool::RedisPool::new(&redis.url()).expect("valid URL");
    let store: Arc<dyn Store> = Arc::new(RedisStore::new(pool, "history:"));
    positions_and_history_hold(TestServer::start_on(store).await).await;
}

#[tokio::test]
async fn a_topic_keeps_messages_for_its_time_to_live() {
    let server = TestServer::start_with(|config| {
        config.topics = vec!["news".into()];
        config.history_ttl = Duration::from_millis(500);
    })
    .await;
    publish_numbered(&server, 2).await;
    assert_eq!(history(&server, "").await.1["messages"].as_array().unwrap().len(), 2);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (_, page) = history(&server, "?since=1").await;
    assert_eq!((page["messages"].as_array().unwrap().len(), &page["complete"]), (0, &json!(false)));

    let (status, body) = server
        .post("/topics", Some(KEY), json!({"name": "long", "history_ttl_seconds": 604801}))
        .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")), "over a week");
}

#[tokio::test]
async fn an_idempotency_key_publishes_once_over_http_and_websocket() {
    let server = TestServer::start().await;
    let (id, _) = server.register(Some("alice")).await;
    server.post("/subscribe", None, json!({"id": id, "topics": ["news"]})).await;
    let (mut ws, _) = server.connect(&id).await;

    let body = json!({"message": 1, "idempotency_key": "order-1"});
    let (_, first) = server.post("/topics/news/publish", Some(KEY), body.clone()).await;
    let (_, again) = server.post("/topics/news/publish", Some(KEY), body).await;
    assert_eq!(first, again, "the first answer");
    assert_eq!(next_event(&mut ws).await, message(Some("news"), None, json!(1)));
    assert_silent(&mut ws, Duration::from_millis(300)).await;

    for reference in [1, 2] {
        let frame = json!({"type": "publish", "topic": "news", "data": 2,
                           "idempotency_key": "order-2", "ref": reference});
        send_json(&mut ws, frame).await;
    }
    let mut events = Vec::new();
    for _ in 0..3 {
        events.push(next_event(&mut ws).await);
    }
    let acks = events.iter().filter(|e| matches!(e, ServerEvent::Ack { .. })).count();
    assert_eq!(acks, 2, "both acknowledged: {events:?}");
    assert!(events.contains(&message(Some("news"), Some("alice"), json!(2))));
    assert_silent(&mut ws, Duration::from_millis(300)).await;

    let (status, _) = server
        .post("/topics/news/publish", Some(KEY), json!({"message": 1, "idempotency_key": "a b"}))
        .await;
    assert_eq!(status, 400, "a key outside the rule");
    let (status, _) = server
        .post("/topics/news/publish", Some(KEY), json!({"message": 1, "idempotency_key": 5}))
        .await;
    assert_eq!(status, 400, "a key that is not a string (poem-openapi would coerce it)");
}
