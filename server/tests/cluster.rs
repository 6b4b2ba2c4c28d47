//! Several nodes on one Redis behave as one service: deliveries from any node reach every
//! matching socket on every node exactly once, control changes cross nodes, a name race across
//! nodes has one winner, and a Redis outage is survived without a restart. Each test starts
//! its own `redis-server` on a free port.

mod support;

use std::{collections::HashMap, time::Duration};

use futures_util::future::join_all;
use serde_json::{Value, json};
use support::{
    KEY, TestServer, Ws, assert_silent, close_code, cluster, message, metric, next_event, nodes,
    nodes_with_prefix, redis_server::RedisServer, send_json, try_connect,
};
use switchboard_protocol::{CLOSE_UNREGISTERED, ServerEvent};
use tokio::time::{Instant, sleep};

/// How long a test waits to be sure no extra copy of a message arrives.
const QUIET: Duration = Duration::from_millis(300);

/// Every message event that arrives until the socket has been quiet for [`QUIET`].
async fn drain(ws: &mut Ws) -> Vec<ServerEvent> {
    let mut events = Vec::new();
    while let Ok(event) = tokio::time::timeout(QUIET, next_event(ws)).await {
        events.push(event);
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_and_topic_publishes_from_every_node_reach_every_socket_exactly_once() {
    let (_redis, nodes) = cluster(3).await;
    // Two clients on each node; the first of each subscribes to `news` through its own node.
    let mut sockets = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for c in 0..2 {
            let (id, ws) = node.client(&format!("n{n}c{c}")).await;
            if c == 0 {
                let (status, _) =
                    node.post("/subscribe", None, json!({"id": id, "topics": ["news"]})).await;
                assert_eq!(status, 202);
            }
            sockets.push((n, c, ws));
        }
    }

    for (n, node) in nodes.iter().enumerate() {
        let (status, body) = node.post("/broadcast", Some(KEY), json!({"message": {"b": n}})).await;
        assert_eq!((status, body["recipients"].as_u64()), (200, Some(6)), "broadcast via {n}");
        let publish = node.post("/topics/news/publish", Some(KEY), json!({"message": {"p": n}}));
        let (status, body) = publish.await;
        assert_eq!((status, body["recipients"].as_u64()), (200, Some(3)), "publish via {n}");
    }
    // And one broadcast sent over a WebSocket, from the client n2c1.
    send_json(&mut sockets[5].2, json!({"type": "broadcast", "data": "ws"})).await;

    for (n, c, ws) in &mut sockets {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for event in drain(ws).await {
            match event {
                ServerEvent::Message { data, .. } => {
                    *counts.entry(data.to_string()).or_default() += 1
                }
                ServerEvent::Ack { .. } => {}
                other => panic!("n{n}c{c}: unexpected {other:?}"),
            }
        }
        let mut expected: HashMap<String, usize> =
            (0..3).map(|b| (json!({"b": b}).to_string(), 1)).collect();
        expected.insert(json!("ws").to_string(), 1);
        if *c == 0 {
            expected.extend((0..3).map(|p| (json!({"p": p}).to_string(), 1)));
        }
        assert_eq!(counts, expected, "n{n}c{c} got every message once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_publish_through_every_node_is_delivered_once() {
    let (_redis, nodes) = cluster(3).await;
    let (id, mut ws) = nodes[0].client("alice").await;
    nodes[0].post("/subscribe", None, json!({"id": id, "topics": ["news"]})).await;
    let body = json!({"message": "once", "idempotency_key": "order-42"});
    let mut answers = Vec::new();
    for node in &nodes {
        let (status, answer) = node.post("/topics/news/publish", Some(KEY), body.clone()).await;
        assert_eq!(status, 200, "{answer}");
        answers.push(answer);
    }
    assert!(answers.iter().all(|answer| *answer == answers[0]), "the first answer: {answers:?}");
    assert_eq!(answers[0]["offset"], 1);
    assert_eq!(drain(&mut ws).await, [message(Some("news"), None, json!("once"))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_via_one_node_applies_to_a_socket_on_another() {
    let (_redis, nodes) = cluster(3).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let (id, mut ws) = a.client("alice").await;

    // No waiting between the calls: a 202 from B means A already listens.
    let (status, _) = b.post("/subscribe", None, json!({"id": id, "topics": ["news"]})).await;
    assert_eq!(status, 202);
    let (status, body) = c.post("/topics/news/publish", Some(KEY), json!({"message": 1})).await;
    assert_eq!((status, body["recipients"].as_u64()), (200, Some(1)));
    assert_eq!(next_event(&mut ws).await, message(Some("news"), None, json!(1)));

    let (status, _) = c.post("/unsubscribe", None, json!({"id": id, "topics": ["news"]})).await;
    assert_eq!(status, 202);
    let (status, body) = b.post("/topics/news/publish", Some(KEY), json!({"message": 2})).await;
    assert_eq!((status, body["recipients"].as_u64()), (200, Some(0)));
    assert_silent(&mut ws, QUIET).await;

    // A socket that connects later gets the subscriptions made elsewhere.
    b.post("/subscribe", None, json!({"id": id, "topics": ["sports"]})).await;
    let (mut second, topics) = c.connect(&id).await;
    assert_eq!(topics, ["sports"]);
    a.post("/topics/sports/publish", Some(KEY), json!({"message": 3})).await;
    for ws in [&mut ws, &mut second] {
        assert_eq!(next_event(ws).await, message(Some("sports"), None, json!(3)));
    }

    // A subscribe over the socket on A (acked) applies to the client's socket on C too.
    send_json(&mut ws, json!({"type": "subscribe", "topics": ["news"], "ref": 9})).await;
    assert_eq!(next_event(&mut ws).await, ServerEvent::Ack { reference: Some(json!(9)) });
    b.post("/topics/news/publish", Some(KEY), json!({"message": 4})).await;
    for ws in [&mut ws, &mut second] {
        assert_eq!(next_event(ws).await, message(Some("news"), None, json!(4)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregister_via_one_node_closes_sockets_on_every_node() {
    let (_redis, nodes) = cluster(3).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let (id, mut on_a) = a.client("alice").await;
    let (mut on_b, _) = b.connect(&id).await;
    let (_, mut bystander) = b.client("bob").await;

    let (status, body) = c.delete(&format!("/register/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(body["closed_connections"], 2, "counted on every node: {body}");
    assert_eq!(close_code(&mut on_a).await, Some(CLOSE_UNREGISTERED));
    assert_eq!(close_code(&mut on_b).await, Some(CLOSE_UNREGISTERED));
    // Gone for all: no node knows the id any more, and the name is free again.
    for node in &nodes {
        assert_eq!(try_connect(&node.ws_url(&id), &[]).await.err(), Some(403));
    }
    assert_eq!(a.post("/register", Some(KEY), json!({"name": "alice"})).await.0, 201);
    assert_silent(&mut bystander, QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_raced_across_nodes_has_exactly_one_winner() {
    let (_redis, nodes) = cluster(3).await;
    for round in 0..20 {
        let name = format!("contested-{round}");
        let attempts = nodes
            .iter()
            .flat_map(|node| [node, node])
            .map(|node| node.post("/register", Some(KEY), json!({"name": name})));
        let mut statuses: Vec<u16> = join_all(attempts).await.into_iter().map(|(s, _)| s).collect();
        statuses.sort();
        assert_eq!(statuses, [201, 409, 409, 409, 409, 409], "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_deleted_on_one_node_is_gone_for_everyone_everywhere() {
    let (_redis, nodes) = cluster(3).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    assert_eq!(a.post("/topics", Some(KEY), json!({"name": "live"})).await.0, 201);
    assert_eq!(b.post("/topics", Some(KEY), json!({"name": "live"})).await.0, 409);
    let (alice, mut alice_ws) = a.client("alice").await;
    let (bob, mut bob_ws) = b.client("bob").await;
    for id in [&alice, &bob] {
        assert_eq!(c.post("/subscribe", None, json!({"id": id, "topics": ["live"]})).await.0, 202);
    }
    assert_eq!(c.delete("/topics/live", Some(KEY)).await.0, 200);
    assert_eq!(a.post("/topics/live/publish", Some(KEY), json!({"message": 1})).await.0, 404);
    // Recreated, it starts empty on every node.
    assert_eq!(b.post("/topics", Some(KEY), json!({"name": "live"})).await.0, 201);
    let (status, body) = a.post("/topics/live/publish", Some(KEY), json!({"message": 2})).await;
    assert_eq!((status, body["recipients"].as_u64()), (200, Some(0)));
    assert_silent(&mut alice_ws, QUIET).await;
    assert_silent(&mut bob_ws, QUIET).await;
    let (_, topics) = c.get("/topics").await;
    assert!(
        topics.as_array().unwrap().iter().any(|t| t["name"] == "live" && t["subscribers"] == 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_another_prefix_are_another_cluster() {
    let redis = RedisServer::start().await;
    let first = nodes_with_prefix(&redis, 1, "first:").await;
    let second = nodes_with_prefix(&redis, 1, "second:").await;
    let (_, mut ws) = first[0].client("alice").await;
    assert_eq!(second[0].post("/register", Some(KEY), json!({"name": "alice"})).await.0, 201);
    second[0].post("/broadcast", Some(KEY), json!({"message": 1})).await;
    assert_silent(&mut ws, QUIET).await;

    let keys: Vec<String> = redis_query(&redis, redis::cmd("KEYS").arg("*")).await;
    assert!(!keys.is_empty());
    for key in keys {
        assert!(key.starts_with("first:") || key.starts_with("second:"), "{key} is under a prefix");
    }
}

async fn redis_query<T: redis::FromRedisValue>(redis: &RedisServer, cmd: &redis::Cmd) -> T {
    let client = redis::Client::open(redis.url()).expect("valid URL");
    let mut conn = client.get_multiplexed_async_connection().await.expect("Redis is up");
    cmd.query_async(&mut conn).await.expect("the command succeeds")
}

/// The topic channels somebody listens to, and how many listen to each.
async fn topic_listeners(redis: &RedisServer) -> Vec<(String, u64)> {
    listeners(redis, "*bus:topic:*").await
}

/// The channels matching `pattern` that somebody listens to (by their last `:` part), and how
/// many listen to each.
async fn listeners(redis: &RedisServer, pattern: &str) -> Vec<(String, u64)> {
    let channels: Vec<String> =
        redis_query(redis, redis::cmd("PUBSUB").arg("CHANNELS").arg(pattern)).await;
    let mut listeners: Vec<(String, u64)> = Vec::new();
    for channel in channels {
        let (_, count): (String, u64) =
            redis_query(redis, redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel)).await;
        let topic = channel.rsplit(':').next().unwrap_or_default().to_owned();
        listeners.push((topic, count));
    }
    listeners.sort();
    listeners
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_listens_only_to_the_topics_its_sockets_need() {
    let (redis, nodes) = cluster(3).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    assert_eq!(listeners(&redis, "*bus:all").await, [("all".into(), 3)]);
    assert_eq!(listeners(&redis, "*bus:control").await, [("control".into(), 3)]);
    assert_eq!(listeners(&redis, "*bus:node:*").await.len(), 3, "one own channel per node");
    assert_eq!(topic_listeners(&redis).await, [], "no sockets, no topic channels");

    let (alice, alice_ws) = a.client("alice").await;
    a.post("/subscribe", None, json!({"id": alice, "topics": ["news"]})).await;
    let (bob, _bob_ws) = b.client("bob").await;
    assert_eq!(topic_listeners(&redis).await, [("news".into(), 1)]);
    // A subscribe answered by A means B, which holds bob's socket, listens already.
    assert_eq!(
        a.post("/subscribe", None, json!({"id": bob, "topics": ["news", "sports"]})).await.0,
        202
    );
    assert_eq!(topic_listeners(&redis).await, [("news".into(), 2), ("sports".into(), 1)]);

    // Once alice's socket is gone, A stops listening to `news` (checked every 5 s).
    drop(alice_ws);
    let deadline = Instant::now() + Duration::from_secs(10);
    while topic_listeners(&redis).await != [("news".into(), 1), ("sports".into(), 1)] {
        assert!(
            Instant::now() < deadline,
            "A unsubscribes `news`: {:?}",
            topic_listeners(&redis).await
        );
        sleep(Duration::from_millis(200)).await;
    }
    // That check (and a ping of the pub/sub connection) ran without losing the connection.
    for node in &nodes {
        let cluster = &node.stats().await["cluster"];
        assert_eq!(
            (&cluster["bus_connected"], &cluster["bus_reconnects"]),
            (&json!(true), &json!(0))
        );
    }
}

/// Polls `path` on `node` until it answers `status`; panics after `limit`.
async fn wait_for(node: &TestServer, path: &str, status: u16, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let (now, _) = node.get(path).await;
        if now == status {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{path} answers {status} within {limit:?} (got {now})");
        sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_answers_503_and_the_cluster_recovers_without_a_restart() {
    let (mut redis, nodes) = cluster(2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let (alice, mut alice_ws) = a.client("alice").await;

    redis.kill().await;
    for node in &nodes {
        wait_for(node, "/ready", 503, Duration::from_secs(5)).await;
        assert_eq!(node.get("/health").await.0, 200, "the process stays up");
    }
    let id = alice.clone();
    let post = reqwest::Method::POST;
    let answers = join_all([
        a.call(post.clone(), "/register", Some(KEY), Some(json!({"name": "carol"}))),
        b.call(post.clone(), "/broadcast", Some(KEY), Some(json!({"message": 1}))),
        a.call(post.clone(), "/topics/news/publish", Some(KEY), Some(json!({"message": 1}))),
        b.call(post.clone(), "/subscribe", None, Some(json!({"id": id, "topics": ["news"]}))),
        a.call(reqwest::Method::GET, "/topics", None, None),
        b.call(post.clone(), "/topics", Some(KEY), Some(json!({"name": "t"}))),
    ])
    .await;
    for (status, body) in answers {
        assert_eq!((status, body["error"].as_str()), (503, Some("unavailable")), "{body}");
        assert!(body["message"].as_str().unwrap().contains("redis"), "{body}");
    }
    assert_eq!(try_connect(&b.ws_url(&alice), &[]).await.err(), Some(503));
    // The socket stays open through the outage (pings included: the interval is 30 s).
    send_json(&mut alice_ws, json!({"type": "ping", "ref": 1})).await;
    assert_eq!(next_event(&mut alice_ws).await, ServerEvent::Ack { reference: Some(json!(1)) });

    // Redis comes back empty (no persistence): a fresh start for the data.
    redis.restart().await;
    let mut recovery = Duration::ZERO;
    for node in &nodes {
        recovery = recovery.max(wait_for(node, "/ready", 200, Duration::from_secs(10)).await);
    }
    println!("both nodes ready again {recovery:?} after Redis restarted");
    for node in &nodes {
        assert_eq!(node.stats().await["cluster"]["bus_reconnects"], 1, "one reconnection");
    }
    // Alice's registration was lost with Redis's data: her socket is told so.
    assert_eq!(close_code(&mut alice_ws).await, Some(CLOSE_UNREGISTERED));
    for node in &nodes {
        let (status, topics) = node.get("/topics").await;
        assert_eq!(status, 200);
        let names: Vec<&Value> = topics.as_array().unwrap().iter().map(|t| &t["name"]).collect();
        assert_eq!(names, [&json!("news"), &json!("sports")], "--topic topics are back");
    }
    let (carol, mut carol_ws) = a.client("carol").await;
    let (dave, mut dave_ws) = b.client("dave").await;
    assert_eq!(b.post("/subscribe", None, json!({"id": carol, "topics": ["news"]})).await.0, 202);
    assert_eq!(a.post("/subscribe", None, json!({"id": dave, "topics": ["news"]})).await.0, 202);
    let (status, body) =
        b.post("/topics/news/publish", Some(KEY), json!({"message": "back"})).await;
    assert_eq!((status, body["recipients"].as_u64()), (200, Some(2)));
    a.post("/broadcast", Some(KEY), json!({"message": "all"})).await;
    // Sent via different nodes, the two may arrive in either order.
    for ws in [&mut carol_ws, &mut dave_ws] {
        let mut got = vec![next_event(ws).await, next_event(ws).await];
        got.sort_by_key(|event| format!("{event:?}"));
        assert_eq!(
            got,
            [message(None, None, json!("all")), message(Some("news"), None, json!("back"))]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_commands_and_the_bus_show_in_the_metrics() {
    let (mut redis, nodes) = cluster(2).await;
    let a = &nodes[0];
    let (alice, _alice_ws) = a.client("alice").await;
    let up = a.metrics().await;
    assert!(
        metric(&up, "switchboard_redis_command_duration_seconds", &[]) >= 3.0,
        "register, read, subscribe"
    );
    assert_eq!(metric(&up, "switchboard_redis_command_errors_total", &[]), 0.0);
    assert_eq!(metric(&up, "switchboard_bus_connected", &[]), 1.0);
    assert_eq!(metric(&up, "switchboard_bus_reconnects_total", &[]), 0.0);
    assert_eq!(metric(&up, "switchboard_registered_clients", &[]), 1.0);

    redis.kill().await;
    wait_for(a, "/ready", 503, Duration::from_secs(5)).await;
    let id = alice.clone();
    assert_eq!(a.post("/subscribe", None, json!({"id": id, "topics": ["news"]})).await.0, 503);
    let down = a.metrics().await;
    assert!(metric(&down, "switchboard_redis_command_errors_total", &[]) >= 1.0);
    assert_eq!(metric(&down, "switchboard_bus_connected", &[]), 0.0);
    let unknown = metric(&down, "switchboard_registered_clients", &[]);
    assert_eq!(unknown, 0.0, "left out while the store cannot be read");

    redis.restart().await;
    wait_for(a, "/ready", 200, Duration::from_secs(10)).await;
    let back = a.metrics().await;
    assert_eq!(metric(&back, "switchboard_bus_connected", &[]), 1.0);
    assert_eq!(metric(&back, "switchboard_bus_reconnects_total", &[]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_while_redis_is_down_joins_once_it_is_up() {
    let mut redis = RedisServer::start().await;
    redis.kill().await;
    let nodes = nodes(&redis, 1).await;
    let node = &nodes[0];
    assert_eq!(node.get("/ready").await.0, 503);
    assert_eq!(node.post("/register", Some(KEY), json!({"name": "alice"})).await.0, 503);

    redis.restart().await;
    wait_for(node, "/ready", 200, Duration::from_secs(10)).await;
    assert_eq!(node.stats().await["cluster"]["bus_reconnects"], 0, "joined, never lost");
    let (_, topics) = node.get("/topics").await;
    assert_eq!(topics.as_array().map(Vec::len), Some(2), "--topic topics created: {topics}");
    let (_, mut ws) = node.client("alice").await;
    let (status, body) = node.post("/topics/news/publish", Some(KEY), json!({"message": 1})).await;
    assert_eq!((status, body["recipients"].as_u64()), (200, Some(0)));
    node.post("/broadcast", Some(KEY), json!({"message": 2})).await;
    assert_eq!(next_event(&mut ws).await, message(None, None, json!(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_pubsub_connection_is_made_again_with_every_channel() {
    let (redis, nodes) = cluster(2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let (alice, mut alice_ws) = a.client("alice").await;
    assert_eq!(b.post("/subscribe", None, json!({"id": alice, "topics": ["news"]})).await.0, 202);

    // Redis keeps its data; only the nodes' pub/sub connections are cut.
    let killed: u64 =
        redis_query(&redis, redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub")).await;
    assert_eq!(killed, 2, "one pub/sub connection per node");
    let deadline = Instant::now() + Duration::from_secs(10);
    for node in &nodes {
        while node.stats().await["cluster"]["bus_reconnects"] != 1 {
            assert!(Instant::now() < deadline, "the node reconnects its bus");
            sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(topic_listeners(&redis).await, [("news".into(), 1)], "A listens to news again");
    let (status, body) = b.post("/topics/news/publish", Some(KEY), json!({"message": 1})).await;
    assert_eq!((status, body["recipients"].as_u64()), (200, Some(1)));
    assert_eq!(next_event(&mut alice_ws).await, message(Some("news"), None, json!(1)));
    b.post("/broadcast", Some(KEY), json!({"message": 2})).await;
    assert_eq!(next_event(&mut alice_ws).await, message(None, None, json!(2)));
}
