//! `GET /topics/{name}/presence`: the subscribed clients with live sockets, on one node and
//! across nodes, and a node killed without a goodbye dropping out within the stated bound.

mod support;

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use support::{KEY, TestServer, cluster, free_port, redis_server::RedisServer};
use switchboard::PRESENCE_TTL;
use tokio::process::Command;

async fn presence(node: &TestServer, query: &str) -> (u16, Value) {
    let path = format!("/topics/news/presence{query}");
    node.call(reqwest::Method::GET, &path, Some(KEY), None).await
}

/// Polls the presence of `news` on `node` until it is `wanted`; returns how long it took.
async fn wait_for_presence(node: &TestServer, wanted: Value, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let (_, answer) = presence(node, "").await;
        if answer["clients"] == wanted {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "presence is still {answer} after {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_subscribed_clients_with_live_sockets() {
    let server = TestServer::start().await;
    let (alice, _) = server.register(Some("alice")).await;
    let (bob, _) = server.register(Some("bob")).await;
    for id in [&alice, &bob] {
        server.post("/subscribe", None, json!({"id": id, "topics": ["news"]})).await;
    }
    let (mut first, _) = server.connect(&alice).await;
    let (_second, _) = server.connect(&alice).await;
    let (_carol, _) = server.client("carol").await;
    wait_for_presence(
        &server,
        json!([{"name": "alice", "connections": 2}]),
        Duration::from_secs(5),
    )
    .await;
    let (status, answer) = presence(&server, "?count_only=true").await;
    assert_eq!((status, answer), (200, json!({"topic": "news", "count": 1})));

    first.close(None).await.unwrap();
    wait_for_presence(
        &server,
        json!([{"name": "alice", "connections": 1}]),
        Duration::from_secs(5),
    )
    .await;
    let path = "/topics/news/presence";
    assert_eq!(server.call(reqwest::Method::GET, path, None, None).await.0, 403);
    let missing = server.call(reqwest::Method::GET, "/topics/none/presence", Some(KEY), None).await;
    assert_eq!((missing.0, missing.1["error"].as_str()), (404, Some("topic_not_found")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_the_sockets_on_every_node() {
    let (_redis, nodes) = cluster(3).await;
    let (id, _on_a) = nodes[0].client("alice").await;
    let (_on_b, _) = nodes[1].connect(&id).await;
    nodes[2].post("/subscribe", None, json!({"id": id, "topics": ["news"]})).await;
    let everywhere = json!([{"name": "alice", "connections": 2}]);
    for node in &nodes {
        wait_for_presence(node, everywhere.clone(), Duration::from_secs(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_drops_out_within_the_bound() {
    let redis = RedisServer::start().await;
    let prefix = "presence-kill:";
    let survivor = TestServer::start_with(|config| {
        config.redis_url = Some(redis.url());
        config.redis_prefix = prefix.into();
    })
    .await;
    let port = free_port().await;
    let mut doomed = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["--bind", &format!("127.0.0.1:{port}"), "--api-key", KEY, "--topic", "news"])
        .args(["--redis-url", &redis.url(), "--redis-prefix", prefix])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let base = format!("http://127.0.0.1:{port}");
    while !support::http_client()
        .get(format!("{base}/ready"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (id, _) = survivor.register(Some("dora")).await;
    survivor.post("/subscribe", None, json!({"id": id, "topics": ["news"]})).await;
    let ws_url = format!("ws://127.0.0.1:{port}/ws/{id}");
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url).await.expect("connects");
    let present = json!([{"name": "dora", "connections": 1}]);
    wait_for_presence(&survivor, present, Duration::from_secs(5)).await;

    doomed.start_kill().expect("SIGKILL");
    doomed.wait().await.unwrap();
    let bound = PRESENCE_TTL + Duration::from_secs(1);
    let took = wait_for_presence(&survivor, json!([]), bound).await;
    eprintln!("a killed node's sockets left presence after {took:?} (bound {PRESENCE_TTL:?})");
    let _ = socket.close(None).await;
}
