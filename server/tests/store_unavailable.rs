//! What clients see while the store cannot be reached: 503 with the JSON error body from every
//! operation that needs it, `/ready` failing while `/health` holds. The store here is one of ours
//! that reports itself unreachable; the real outage (a stopped redis-server) is tested with the
//! Redis store.

mod support;

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;
use support::{KEY, TestServer, close_code, try_connect};
use switchboard::store::{
    Client, ClientId, HistoryPage, HistorySettings, NewMessage, PeerAddr, Present, Published,
    Store, StoreError, StoreResult, TopicInfo,
};

struct UnreachableStore;

fn down<T>() -> StoreResult<T> {
    Err(StoreError::Unavailable("connection refused".into()))
}

#[async_trait]
impl Store for UnreachableStore {
    async fn register(&self, _: Option<&str>) -> StoreResult<Client> {
        down()
    }
    async fn client(&self, _: ClientId) -> StoreResult<Client> {
        down()
    }
    async fn unregister(&self, _: ClientId) -> StoreResult<Client> {
        down()
    }
    async fn client_count(&self) -> StoreResult<u64> {
        down()
    }
    async fn unknown_clients(&self, _: &[ClientId]) -> StoreResult<Vec<ClientId>> {
        down()
    }
    async fn create_topic(&self, _: &str, _: HistorySettings) -> StoreResult<()> {
        down()
    }
    async fn publish(&self, _: &str, _: NewMessage<'_>) -> StoreResult<Published> {
        down()
    }
    async fn history(&self, _: &str, _: u64, _: usize) -> StoreResult<HistoryPage> {
        down()
    }
    async fn delete_topic(&self, _: &str) -> StoreResult<Vec<ClientId>> {
        down()
    }
    async fn topics(&self) -> StoreResult<Vec<TopicInfo>> {
        down()
    }
    async fn topic_count(&self) -> StoreResult<u64> {
        down()
    }
    async fn subscriber_count(&self, _: &str) -> StoreResult<u64> {
        down()
    }
    async fn subscribe(&self, _: ClientId, _: &[String]) -> StoreResult<()> {
        down()
    }
    async fn unsubscribe(&self, _: ClientId, _: &[String]) -> StoreResult<()> {
        down()
    }
    async fn subscriptions(&self, _: ClientId) -> StoreResult<Vec<String>> {
        down()
    }
    async fn sockets_changed(&self, _: uuid::Uuid, _: ClientId, _: i64) -> StoreResult<()> {
        down()
    }
    async fn presence(&self, _: &str) -> StoreResult<Vec<Present>> {
        down()
    }
    async fn node_alive(&self, _: uuid::Uuid, _: std::time::Duration) -> StoreResult<()> {
        down()
    }
    async fn node_gone(&self, _: uuid::Uuid) -> StoreResult<()> {
        down()
    }
    async fn relay_meet(&self, _: &str, _: PeerAddr) -> StoreResult<Option<PeerAddr>> {
        down()
    }
    async fn relay_leave(&self, _: &str, _: PeerAddr) -> StoreResult<bool> {
        down()
    }
    async fn ping(&self) -> StoreResult<()> {
        down()
    }
}

#[tokio::test]
async fn every_store_backed_operation_answers_503_with_the_json_error() {
    let server = TestServer::start_on(Arc::new(UnreachableStore)).await;
    let id = uuid::Uuid::new_v4().to_string();
    assert_eq!(server.get("/health").await.0, 200, "the process is up");

    let answers = [
        ("ready", server.get("/ready").await),
        ("register", server.post("/register", Some(KEY), json!({"name": "a"})).await),
        ("unregister", server.delete(&format!("/register/{id}"), None).await),
        ("broadcast", server.post("/broadcast", Some(KEY), json!({"message": 1})).await),
        ("publish", server.post("/topics/news/publish", Some(KEY), json!({"message": 1})).await),
        ("subscribe", server.post("/subscribe", None, json!({"id": id, "topics": ["news"]})).await),
        (
            "unsubscribe",
            server.post("/unsubscribe", None, json!({"id": id, "topics": ["a"]})).await,
        ),
        ("listTopics", server.get("/topics").await),
        ("createTopic", server.post("/topics", Some(KEY), json!({"name": "t"})).await),
        ("deleteTopic", server.delete("/topics/t", Some(KEY)).await),
        (
            "getTopicPresence",
            server.call(reqwest::Method::GET, "/topics/news/presence", Some(KEY), None).await,
        ),
        (
            "getTopicHistory",
            server.call(reqwest::Method::GET, "/topics/news/history", Some(KEY), None).await,
        ),
    ];
    for (operation, (status, body)) in answers {
        assert_eq!(
            (status, body["error"].as_str()),
            (503, Some("unavailable")),
            "{operation}: {body}"
        );
        assert!(body["message"].as_str().unwrap().contains("connection refused"), "{operation}");
    }
    assert_eq!(try_connect(&server.ws_url(&id), &[]).await.err(), Some(503), "no upgrade");
    // A relay peer cannot meet anyone: it is told to come back later (1013), nothing hangs.
    let mut peer = try_connect(&server.relay_url("room"), &[]).await.expect("the relay upgrades");
    assert_eq!(close_code(&mut peer).await, Some(1013));
}
