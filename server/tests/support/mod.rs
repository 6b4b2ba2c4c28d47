//! Test support: a real server on an ephemeral port, a real HTTP client, real WebSockets.
#![allow(dead_code)] // each test binary uses a different part

pub mod redis_server;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard::{Config, Running};
use switchboard_protocol::ServerEvent;
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue, protocol::CloseFrame},
};

pub const KEY: &str = "test-key";
pub const WAIT: Duration = Duration::from_secs(5);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct TestServer {
    pub running: Option<Running>,
    pub base: String,
    pub http: reqwest::Client,
}

impl TestServer {
    /// A server with API key [`KEY`] and topics `news` and `sports`.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::ephemeral();
        config.api_keys = vec![KEY.into()];
        config.topics = vec!["news".into(), "sports".into()];
        configure(&mut config);
        Self::serving(switchboard::start(config).await.expect("server starts"))
    }

    /// A server with API key [`KEY`] on the given store (no topics created).
    pub async fn start_on(store: std::sync::Arc<dyn switchboard::store::Store>) -> Self {
        Self::start_on_with(store, |_| {}).await
    }

    /// A server with API key [`KEY`] on the given store, configured further by `configure`.
    pub async fn start_on_with(
        store: std::sync::Arc<dyn switchboard::store::Store>,
        configure: impl FnOnce(&mut Config),
    ) -> Self {
        let mut config = Config::ephemeral();
        config.api_keys = vec![KEY.into()];
        configure(&mut config);
        let running = switchboard::start_with_store(config, store).await.expect("server starts");
        Self::serving(running)
    }

    fn serving(running: Running) -> Self {
        let base = format!("http://{}", running.local_addr);
        TestServer { running: Some(running), base, http: http_client() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn ws_url(&self, id: &str) -> String {
        format!("{}/ws/{id}", self.base.replacen("http", "ws", 1))
    }

    pub fn relay_url(&self, id: &str) -> String {
        format!("{}/relay/{id}", self.base.replacen("http", "ws", 1))
    }

    /// Sends a request; returns the status and the JSON body (Null when empty).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(key) = key {
            request = request.header("X-Api-Key", key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request is answered");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("JSON body")
        };
        (status, value)
    }

    /// POSTs `body` as it is (JSON content type, the API key), for bodies `post` cannot build.
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        let request = self.http.post(self.url(path)).header("X-Api-Key", KEY);
        let request = request.header("content-type", "application/json").body(body);
        request.send().await.expect("request is answered")
    }

    pub async fn post(&self, path: &str, key: Option<&str>, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, key, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None, None).await
    }

    pub async fn delete(&self, path: &str, key: Option<&str>) -> (u16, Value) {
        self.call(reqwest::Method::DELETE, path, key, None).await
    }

    /// Registers `name` (or an assigned name); returns (id, name).
    pub async fn register(&self, name: Option<&str>) -> (String, String) {
        let body = match name {
            Some(name) => json!({"name": name}),
            None => json!({}),
        };
        let (status, body) = self.post("/register", Some(KEY), body).await;
        assert_eq!(status, 201, "register: {body}");
        (body["id"].as_str().unwrap().to_owned(), body["name"].as_str().unwrap().to_owned())
    }

    /// Opens a WebSocket for `id` and reads the welcome; returns it with its topics.
    pub async fn connect(&self, id: &str) -> (Ws, Vec<String>) {
        let (mut ws, _) = connect_async(self.ws_url(id)).await.expect("WebSocket opens");
        match next_event(&mut ws).await {
            ServerEvent::Welcome { id: welcome_id, topics } => {
                assert_eq!(welcome_id, id);
                (ws, topics)
            }
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    /// Registers a client and connects it.
    pub async fn client(&self, name: &str) -> (String, Ws) {
        let (id, _) = self.register(Some(name)).await;
        let (ws, _) = self.connect(&id).await;
        (id, ws)
    }

    /// The node's `/metrics`, read with a Prometheus text parser (and checked to be served as
    /// that format).
    pub async fn metrics(&self) -> Vec<prometheus_parse::Sample> {
        let response = self.http.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        let text = response.text().await.unwrap();
        let lines = text.lines().map(|line| Ok(line.to_owned()));
        prometheus_parse::Scrape::parse(lines).expect("the Prometheus text format").samples
    }

    pub async fn stats(&self) -> Value {
        let (status, body) = self.call(reqwest::Method::GET, "/stats", Some(KEY), None).await;
        assert_eq!(status, 200);
        body
    }

    pub async fn shutdown(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await.expect("clean shutdown");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(running) = &self.running {
            running.trigger_shutdown();
        }
    }
}

/// An HTTP client. reqwest's TLS is built without a crypto provider of its own; the process
/// uses the one the server's TLS uses (aws-lc-rs).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::new()
}

/// `count` nodes on one Redis under a fresh key prefix, each with API key KEY and topics `news`
/// and `sports`.
pub async fn nodes(redis: &redis_server::RedisServer, count: usize) -> Vec<TestServer> {
    let prefix = format!("test-{}:", uuid::Uuid::new_v4().simple());
    nodes_with_prefix(redis, count, &prefix).await
}

pub async fn nodes_with_prefix(
    redis: &redis_server::RedisServer,
    count: usize,
    prefix: &str,
) -> Vec<TestServer> {
    let mut nodes = Vec::new();
    for _ in 0..count {
        let url = redis.url();
        let prefix = prefix.to_owned();
        nodes.push(
            TestServer::start_with(move |config| {
                config.redis_url = Some(url);
                config.redis_prefix = prefix;
            })
            .await,
        );
    }
    nodes
}

/// A fresh Redis and `count` nodes on it.
pub async fn cluster(count: usize) -> (redis_server::RedisServer, Vec<TestServer>) {
    let redis = redis_server::RedisServer::start().await;
    let nodes = nodes(&redis, count).await;
    (redis, nodes)
}

/// A loopback port nothing listens on (for a process the test starts itself).
pub async fn free_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// Opens a WebSocket with extra request headers; returns the HTTP status on refusal.
pub async fn try_connect(url: &str, headers: &[(&'static str, &str)]) -> Result<Ws, u16> {
    let mut request = url.into_client_request().expect("request");
    for (name, value) in headers {
        request.headers_mut().insert(*name, HeaderValue::from_str(value).expect("header"));
    }
    match connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(err) => panic!("unexpected WebSocket error: {err}"),
    }
}

/// The next server event, skipping control frames; fails after [`WAIT`].
/// The next server frame, a message without its position (offset and epoch), so it compares
/// equal to [`message`]; tests of positions read them with [`next_positioned_event`].
pub async fn next_event(ws: &mut Ws) -> ServerEvent {
    match next_positioned_event(ws).await {
        ServerEvent::Message { topic, from, data, .. } => message_of(topic, from, data),
        other => other,
    }
}

/// The next server frame as it came.
pub async fn next_positioned_event(ws: &mut Ws) -> ServerEvent {
    let text = next_text(ws).await;
    ServerEvent::parse(&text).unwrap_or_else(|err| panic!("bad server frame {text}: {err}"))
}

pub async fn next_text(ws: &mut Ws) -> String {
    match next_frame(ws).await {
        Message::Text(text) => text.to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// The next frame that is not a ping or pong; fails after [`WAIT`].
pub async fn next_frame(ws: &mut Ws) -> Message {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame arrives in time")
            .expect("the socket stays open")
            .expect("a valid frame");
        match message {
            Message::Ping(_) | Message::Pong(_) => continue,
            other => return other,
        }
    }
}

/// Reads until the server closes; returns the close frame (None: closed without one).
pub async fn close_frame(ws: &mut Ws) -> Option<CloseFrame> {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("the server closes in time") {
            Some(Ok(Message::Close(frame))) => return frame,
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

pub async fn close_code(ws: &mut Ws) -> Option<u16> {
    close_frame(ws).await.map(|frame| frame.code.into())
}

/// Nothing arrives within `window` (control frames aside).
pub async fn assert_silent(ws: &mut Ws, window: Duration) {
    let deadline = tokio::time::Instant::now() + window;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(other) => panic!("expected silence, got {other:?}"),
        }
    }
}

pub async fn send_json(ws: &mut Ws, value: Value) {
    send_text(ws, &value.to_string()).await;
}

pub async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
}

/// A message frame without a position (see [`next_event`]).
pub fn message(topic: Option<&str>, from: Option<&str>, data: Value) -> ServerEvent {
    message_of(topic.map(str::to_owned), from.map(str::to_owned), data)
}

fn message_of(topic: Option<String>, from: Option<String>, data: Value) -> ServerEvent {
    ServerEvent::Message { topic, from, data, offset: None, epoch: None }
}

/// The value of metric `name` with these labels among `samples` (a histogram: its count);
/// 0 when there is none.
pub fn metric(samples: &[prometheus_parse::Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    use prometheus_parse::Value;
    let matching = samples.iter().find(|sample| {
        sample.metric == name
            && labels.iter().all(|(key, value)| sample.labels.get(key) == Some(*value))
    });
    match matching.map(|sample| &sample.value) {
        Some(Value::Counter(value) | Value::Gauge(value) | Value::Untyped(value)) => *value,
        Some(Value::Histogram(buckets)) => buckets.last().map_or(0.0, |bucket| bucket.count),
        Some(other) => panic!("{name}: unexpected {other:?}"),
        None => 0.0,
    }
}

/// Checks that the committed file at `path` (relative to the workspace root) holds exactly
/// `generated`; with the environment variable `write_var` set, writes it instead.
pub fn committed_file_matches(path: &str, generated: &str, write_var: &str) {
    let path = format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os(write_var).is_some() {
        std::fs::write(&path, generated).unwrap_or_else(|e| panic!("write {path}: {e}"));
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{path} differs from what the code generates; regenerate it with `{write_var}=1 cargo \
         test -p switchboard --test <this test>` and review the diff"
    );
}
