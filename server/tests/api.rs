//! Every row of the HTTP API table, success and every error code, over real HTTP.

mod support;

use serde_json::{Value, json};
use support::{KEY, TestServer, try_connect};
use switchboard_protocol::ServerEvent;

fn error_code(body: &Value) -> &str {
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "error has a message: {body}");
    body["error"].as_str().unwrap_or_else(|| panic!("error body: {body}"))
}

#[tokio::test]
async fn register() {
    let server = TestServer::start().await;
    let (status, body) = server.post("/register", Some(KEY), json!({"name": "alice"})).await;
    assert_eq!(status, 201);
    let id = body["id"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 4);
    assert_eq!(body["name"], "alice");
    assert_eq!(body["ws_url"], server.ws_url(id));

    let (status, body) = server.post("/register", Some(KEY), json!({})).await;
    assert_eq!(status, 201, "name is optional");
    let (_, other) = server.post("/register", Some(KEY), json!({})).await;
    assert_ne!(body["name"], other["name"], "assigned names are unique");

    let (status, body) = server.post("/register", None, json!({"name": "bob"})).await;
    assert_eq!((status, error_code(&body)), (403, "forbidden"), "missing key");
    let (status, body) = server.post("/register", Some("wrong"), json!({"name": "bob"})).await;
    assert_eq!((status, error_code(&body)), (403, "forbidden"), "wrong key");
    let (status, body) = server.post("/register", Some(KEY), json!({"name": "alice"})).await;
    assert_eq!((status, error_code(&body)), (409, "name_taken"));
    for bad in [json!({"name": "has space"}), json!({"name": ""}), json!({"name": "x".repeat(65)})]
    {
        let (status, body) = server.post("/register", Some(KEY), bad.clone()).await;
        assert_eq!((status, error_code(&body)), (400, "bad_request"), "{bad}");
    }
    let response = server
        .http
        .post(server.url("/register"))
        .header("X-Api-Key", KEY)
        .body(r#"{"name": "carol"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415, "no Content-Type");
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "unsupported_media_type");
    let response = server
        .http
        .post(server.url("/register"))
        .header("X-Api-Key", KEY)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "bad_request");
}

#[tokio::test]
async fn ws_url_uses_the_public_url_when_configured() {
    let server =
        TestServer::start_with(|c| c.public_url = Some("https://push.example.com/".into())).await;
    let (_, body) = server.post("/register", Some(KEY), json!({})).await;
    let id = body["id"].as_str().unwrap();
    assert_eq!(body["ws_url"], format!("wss://push.example.com/ws/{id}"));
}

#[tokio::test]
async fn unregister() {
    let server = TestServer::start().await;
    let (id, _) = server.register(Some("alice")).await;
    let (status, body) = server.delete(&format!("/register/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"id": id, "closed_connections": 0}));
    let (status, body) = server.delete(&format!("/register/{id}"), None).await;
    assert_eq!((status, error_code(&body)), (409, "unknown_client"), "already gone");
    let (status, body) = server.delete("/register/not-a-uuid", None).await;
    assert_eq!((status, error_code(&body)), (400, "bad_request"));
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with("invalid path parameter") && !message.contains("param0"),
        "{message}"
    );
    // The name is free again.
    server.register(Some("alice")).await;
}

#[tokio::test]
async fn broadcast() {
    let server = TestServer::start().await;
    let (id, _) = server.register(Some("alice")).await;
    server.register(Some("bob")).await;
    let (status, body) = server.post("/broadcast", Some(KEY), json!({"message": {"hi": 1}})).await;
    assert_eq!((status, body), (200, json!({"recipients": 2})), "registered clients");
    let (status, _) =
        server.post("/broadcast", None, json!({"id": id, "message": "from alice"})).await;
    assert_eq!(status, 200, "a registered sender id authorizes");

    let (status, body) = server.post("/broadcast", None, json!({"message": 1})).await;
    assert_eq!((status, error_code(&body)), (403, "forbidden"));
    let (status, body) = server.post("/broadcast", Some("wrong"), json!({"message": 1})).await;
    assert_eq!((status, error_code(&body)), (403, "forbidden"));
    let unknown = uuid::Uuid::new_v4().to_string();
    let (status, body) =
        server.post("/broadcast", None, json!({"id": unknown, "message": 1})).await;
    assert_eq!((status, error_code(&body)), (409, "unknown_client"));
    let (status, body) = server.post("/broadcast", Some(KEY), json!({"nothing": 1})).await;
    assert_eq!((status, error_code(&body)), (400, "bad_request"), "message is required");
    let (status, _) = server.post("/broadcast", Some(KEY), json!({"message": null})).await;
    assert_eq!(status, 200, "null is a JSON value like any other");
    let big = "x".repeat(70_000);
    let (status, body) = server.post("/broadcast", Some(KEY), json!({"message": big})).await;
    assert_eq!((status, error_code(&body)), (413, "message_too_large"));
}

#[tokio::test]
async fn subscribe_and_unsubscribe() {
    let server = TestServer::start().await;
    let (id, _) = server.register(Some("alice")).await;
    for path in ["/subscribe", "/unsubscribe"] {
        let (status, body) = server.post(path, None, json!({"id": id, "topics": ["news"]})).await;
        assert_eq!((status, body), (202, Value::Null), "{path}");
        let unknown = uuid::Uuid::new_v4();
        let (status, body) =
            server.post(path, None, json!({"id": unknown, "topics": ["news"]})).await;
        assert_eq!((status, error_code(&body)), (403, "forbidden"), "{path}");
        let (status, body) =
            server.post(path, None, json!({"id": id, "topics": ["news", "nope"]})).await;
        assert_eq!((status, error_code(&body)), (404, "topic_not_found"), "{path}");
        let (status, body) = server.post(path, None, json!({"id": id})).await;
        assert_eq!((status, error_code(&body)), (400, "bad_request"), "{path}");
    }
    // A failed subscribe applies nothing.
    server.post("/subscribe", None, json!({"id": id, "topics": ["sports", "nope"]})).await;
    let (_, topics) = server.get("/topics").await;
    assert_eq!(
        topics,
        json!([{"name": "news", "subscribers": 0}, {"name": "sports", "subscribers": 0}])
    );
    server.post("/subscribe", None, json!({"id": id, "topics": ["sports", "news"]})).await;
    let (_, topics) = server.get("/topics").await;
    assert_eq!(
        topics,
        json!([{"name": "news", "subscribers": 1}, {"name": "sports", "subscribers": 1}])
    );
}

#[tokio::test]
async fn topics_list_create_delete() {
    let server = TestServer::start().await;
    let (status, body) = server.get("/topics").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!([{"name": "news", "subscribers": 0}, {"name": "sports", "subscribers": 0}])
    );

    let (status, body) = server.post("/topics", Some(KEY), json!({"name": "weather"})).await;
    assert_eq!((status, body), (201, json!({"name": "weather", "subscribers": 0})));
    let (status, body) = server.post("/topics", Some(KEY), json!({"name": "weather"})).await;
    assert_eq!((status, error_code(&body)), (409, "topic_exists"));
    let (status, body) = server.post("/topics", None, json!({"name": "x"})).await;
    assert_eq!((status, error_code(&body)), (403, "forbidden"));
    let (status, body) = server.post("/topics", Some(KEY), json!({"name": "bad/name"})).await;
    assert_eq!((status, error_code(&body)), (400, "bad_request"));

    let (status, body) = server.delete("/topics/weather", None).await;
    assert_eq!((status, error_code(&body)), (403, "forbidden"));
    let (status, body) = server.delete("/topics/weather", Some(KEY)).await;
    assert_eq!((status, body), (200, json!({"name": "weather"})));
    let (status, body) = server.delete("/topics/weather", Some(KEY)).await;
    assert_eq!((status, error_code(&body)), (404, "topic_not_found"));
}

#[tokio::test]
async fn publish() {
    let server = TestServer::start().await;
    let (id, _) = server.register(Some("alice")).await;
    server.post("/subscribe", None, json!({"id": id, "topics": ["news"]})).await;
    let (status, body) =
        server.post("/topics/news/publish", Some(KEY), json!({"message": [1, 2]})).await;
    assert_eq!((status, &body["recipients"], &body["offset"]), (200, &json!(1), &json!(1)));
    assert!(body["epoch"].as_str().is_some_and(|epoch| !epoch.is_empty()), "{body}");
    let (status, body) =
        server.post("/topics/sports/publish", None, json!({"id": id, "message": 1})).await;
    assert_eq!((status, &body["recipients"], &body["offset"]), (200, &json!(0), &json!(1)));

    let (status, body) = server.post("/topics/news/publish", None, json!({"message": 1})).await;
    assert_eq!((status, error_code(&body)), (403, "forbidden"));
    let (status, body) =
        server.post("/topics/nope/publish", Some(KEY), json!({"message": 1})).await;
    assert_eq!((status, error_code(&body)), (404, "topic_not_found"));
    let unknown = uuid::Uuid::new_v4().to_string();
    let (status, body) =
        server.post("/topics/news/publish", None, json!({"id": unknown, "message": 1})).await;
    assert_eq!((status, error_code(&body)), (409, "unknown_client"));
    let big = json!({"message": "y".repeat(65_536)});
    let (status, body) = server.post("/topics/news/publish", Some(KEY), big).await;
    assert_eq!((status, error_code(&body)), (413, "message_too_large"));
}

#[tokio::test]
async fn health_ready_stats_and_unknown_routes() {
    let server = TestServer::start().await;
    assert_eq!(server.get("/health").await, (200, json!({"status": "ok"})));
    assert_eq!(server.get("/ready").await, (200, json!({"status": "ready"})));
    let (status, body) = server.get("/stats").await;
    assert_eq!((status, error_code(&body)), (403, "forbidden"));
    let stats = server.stats().await;
    assert_eq!(stats["connections"], 0);
    // The spec says the cluster's part is absent on a single node: absent, not null.
    assert!(stats.get("cluster").is_none(), "{stats}");
    let (status, body) = server.get("/no/such/route").await;
    assert_eq!((status, error_code(&body)), (404, "not_found"));
}

#[tokio::test]
async fn docs_spec_and_the_test_page_are_served() {
    let server = TestServer::start().await;
    let docs = server.http.get(server.url("/docs")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    let html = docs.text().await.unwrap();
    assert!(html.contains("swagger") && !html.contains("cdn"), "Swagger UI is bundled, no CDN");
    let (status, spec) = server.get("/openapi.json").await;
    assert_eq!(status, 200);
    for (path, method) in
        [("/register", "post"), ("/register/{id}", "delete"), ("/broadcast", "post")]
    {
        assert!(
            spec["paths"][path][method]["operationId"].is_string(),
            "{method} {path} has an operationId"
        );
    }
    let page = server.http.get(server.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("href=\"docs\"") && html.contains("startTestPage"), "{html}");
    for (asset, content_type, magic) in [
        ("switchboard_wasm_client_bg.wasm", "application/wasm", &b"\0asm"[..]),
        ("switchboard_wasm_client.js", "text/javascript; charset=utf-8", b"/**"),
    ] {
        let response =
            server.http.get(server.url(&format!("/assets/{asset}"))).send().await.unwrap();
        assert_eq!(response.status(), 200, "{asset}");
        assert_eq!(response.headers()["content-type"], content_type, "{asset}");
        assert!(response.bytes().await.unwrap().starts_with(magic), "{asset}");
    }
    let (status, body) = server.get("/assets/other.js").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
}

#[tokio::test]
async fn cors_allows_listed_origins_and_refuses_others() {
    let server =
        TestServer::start_with(|c| c.cors_origins = vec!["https://app.example".into()]).await;
    let allowed = server
        .http
        .get(server.url("/topics"))
        .header("Origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.example");

    let preflight = server
        .http
        .request(reqwest::Method::OPTIONS, server.url("/register"))
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "x-api-key, content-type")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "preflight: {}", preflight.status());

    let refused = server
        .http
        .get(server.url("/topics"))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(error_code(&body), "forbidden");

    let no_origin = server.http.get(server.url("/topics")).send().await.unwrap();
    assert_eq!(no_origin.status(), 200, "non-browser requests carry no Origin");

    // The server's own pages (the test page) are not cross-origin.
    let own_origin = server.base.clone();
    let same = server.http.get(server.url("/topics")).header("Origin", &own_origin).send();
    assert_eq!(same.await.unwrap().status(), 200, "same-origin request from {own_origin}");
    let (id, _) = server.register(None).await;
    let socket = try_connect(&server.ws_url(&id), &[("Origin", own_origin.as_str())]).await;
    assert!(socket.is_ok(), "same-origin WebSocket");
}

#[tokio::test]
async fn a_malformed_redis_url_is_refused_at_start() {
    let mut config = switchboard::Config::ephemeral();
    config.redis_url = Some("http://127.0.0.1:6379".into());
    let err = switchboard::start(config).await.err().expect("refused");
    assert!(err.to_string().contains("invalid --redis-url"), "{err}");
}

#[tokio::test]
async fn request_bodies_are_bounded() {
    let server = TestServer::start_with(|c| c.max_message_bytes = 1024).await;
    // Body limit: twice the message limit plus 64 KiB.
    let huge = json!({"message": 1, "padding": "x".repeat(80 * 1024)});
    let (status, body) = server.post("/broadcast", Some(KEY), huge).await;
    assert_eq!((status, error_code(&body)), (413, "payload_too_large"));

    let chunks = (0..100).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024]));
    let streamed = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let response = server.post_raw("/broadcast", streamed).await;
    assert_eq!(response.status(), 400, "a streamed body is cut off at the limit");
    let body: Value = response.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("over"), "{body}");
}

#[tokio::test]
async fn a_path_prefix_mounts_every_route_under_it() {
    let server = TestServer::start_with(|config| config.path_prefix = "/x".into()).await;
    assert_eq!(server.get("/x/health").await.0, 200);
    assert_eq!(server.get("/health").await.0, 404, "nothing at the root");

    let (status, registered) = server.post("/x/register", Some(KEY), json!({"name": "p"})).await;
    assert_eq!(status, 201);
    let ws_url = registered["ws_url"].as_str().unwrap();
    assert!(ws_url.starts_with(&server.ws_url("").replace("/ws/", "/x/ws/")), "{ws_url}");
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.expect("the socket opens");
    assert!(matches!(support::next_event(&mut ws).await, ServerEvent::Welcome { .. }));
    let relay = server.relay_url("room").replace("/relay/", "/x/relay/");
    assert!(try_connect(&relay, &[]).await.is_ok(), "the relay is under the prefix too");

    let (status, spec) = server.get("/x/openapi.json").await;
    assert_eq!((status, spec["servers"][0]["url"].as_str()), (200, Some("/x")));
    let docs = server.http.get(server.url("/x/docs")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("\"/x\""), "Swagger UI calls the prefixed API");
    for page in ["/x/", "/x"] {
        let response = server.http.get(server.url(page)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{page}");
        assert!(response.url().path().ends_with("/x/"), "{page} ends at {}", response.url());
        assert!(response.text().await.unwrap().contains("startTestPage"), "{page}");
    }
    let asset = server.http.get(server.url("/x/assets/switchboard_wasm_client.js"));
    assert_eq!(asset.send().await.unwrap().status(), 200);
}

/// A message nested 100,000 deep is refused as a bad request, over HTTP and over a socket, and
/// the server goes on serving (no stack overflow): JSON is read with a depth limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_nested_too_deep_is_refused_and_nothing_else_is_disturbed() {
    let server = TestServer::start_with(|config| config.max_message_bytes = 1 << 20).await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let body = format!(r#"{{"message": {deep}}}"#);
    let response = server.post_raw("/topics/news/publish", body).await;
    assert_eq!(response.status(), 400);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"], "bad_request", "{answer}");

    let (id, mut ws) = server.client("deep").await;
    let frame = format!(r#"{{"type":"publish","topic":"news","data":{deep},"ref":1}}"#);
    support::send_text(&mut ws, &frame).await;
    let event = support::next_event(&mut ws).await;
    let ServerEvent::Error { error, .. } = event else { panic!("an error frame, got {event:?}") };
    assert_eq!(error, "malformed_frame");
    support::send_json(&mut ws, json!({"type": "ping", "ref": 2})).await;
    assert_eq!(support::next_event(&mut ws).await, ServerEvent::Ack { reference: Some(json!(2)) });
    let (status, _) =
        server.post("/topics/news/publish", Some(KEY), json!({"id": id, "message": 1})).await;
    assert_eq!(status, 200, "still serving");
}
