//! Builds the app from a [`Config`], serves it, and shuts it down gracefully: stop accepting,
//! close every WebSocket with 1001, wait a bounded time for them.

use std::{io, net::SocketAddr, sync::Arc, time::Instant};

use futures_util::StreamExt;
use poem::{
    Body, Endpoint, EndpointExt, IntoResponse, Request, Response, Route, get,
    http::{HeaderValue, StatusCode, header},
    listener::{Acceptor, Listener, TcpListener},
    middleware::Cors,
};
use poem_openapi::{OpenApiService, OperationId};
use tokio::task::JoinHandle;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

use crate::{
    api::Api,
    auth::Keys,
    bus::{Bus, RedisBus, SingleNodeBus},
    config::Config,
    delivery::keep_alive,
    error::{AppError, error_response},
    hub::Hub,
    listener::{DirectListener, DirectSockets},
    metrics::Metrics,
    node::{Node, NodeSettings},
    redis_pool::RedisPool,
    relay::Relay,
    store::{HistorySettings, MemoryStore, RedisStore, Store, StoreError},
    tls::{self, TlsError},
    ws::{self, Loops, WsSettings},
};

/// The header that carries a request's id, both ways.
const REQUEST_ID: &str = "x-request-id";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid --redis-url: {0}")]
    RedisUrl(redis::RedisError),
    #[error("invalid --topic `{0}`: topic names are {rule}", rule = crate::store::NAME_RULE)]
    BadTopic(String),
    #[error("cannot create the --topic topics: {0}")]
    Topics(StoreError),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, io::Error),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot start the readiness loops: {0}")]
    Loops(io::Error),
}

/// A running server.
pub struct Running {
    /// The address it listens on (the real port when bound to port 0).
    pub local_addr: SocketAddr,
    /// The API keys it accepts (generated when none was configured).
    pub api_keys: Vec<String>,
    shutdown: CancellationToken,
    task: JoinHandle<io::Result<()>>,
}

impl Running {
    /// Begins a graceful shutdown without waiting for it.
    pub fn trigger_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Shuts down gracefully and waits until it is done.
    pub async fn shutdown(self) -> io::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the server stops (after a shutdown was triggered).
    pub async fn wait(self) -> io::Result<()> {
        self.task.await.map_err(io::Error::other)?
    }
}

/// Builds the node and the app, binds, and serves in the background: on the in-memory store
/// alone, or as a cluster member on Redis with `--redis-url`.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let Some(url) = &config.redis_url else {
        tracing::info!("store: in-memory (single node)");
        return start_with_store(config, Arc::new(MemoryStore::new())).await;
    };
    let metrics = Arc::new(Metrics::new());
    let pool = RedisPool::new(url).map_err(StartError::RedisUrl)?.with_metrics(metrics.redis());
    let store = Arc::new(
        RedisStore::new(pool.clone(), &config.redis_prefix)
            .with_default_history(history_settings(&config)),
    );
    let bus = Arc::new(RedisBus::new(pool.clone(), &config.redis_prefix));
    tracing::info!(
        server = %pool.server(),
        prefix = %config.redis_prefix,
        node = %bus.node_id(),
        "store: redis (cluster member)"
    );
    launch(config, store, Some(bus), metrics).await
}

/// Like [`start`], on a store the caller built, as a single node (embedding, tests).
pub async fn start_with_store(
    config: Config,
    store: Arc<dyn Store>,
) -> Result<Running, StartError> {
    launch(config, store, None, Arc::new(Metrics::new())).await
}

async fn launch(
    config: Config,
    store: Arc<dyn Store>,
    redis_bus: Option<Arc<RedisBus>>,
    metrics: Arc<Metrics>,
) -> Result<Running, StartError> {
    if let Some(bad) = config.topics.iter().find(|topic| !crate::store::valid_name(topic)) {
        return Err(StartError::BadTopic(bad.clone()));
    }

    let api_keys = if config.api_keys.is_empty() {
        let key = format!("sk_{}", Uuid::new_v4().simple());
        tracing::warn!("no --api-key given; generated API key for this run: {key}");
        vec![key]
    } else {
        config.api_keys.clone()
    };

    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(tls::load(cert, key).await?),
        _ => None,
    };

    let hub = Hub::new();
    let max_message_bytes = config.max_message_bytes as usize;
    let (bus, node_id): (Arc<dyn Bus>, Uuid) = match &redis_bus {
        Some(bus) => (bus.clone(), bus.node_id()),
        None => (Arc::new(SingleNodeBus), Uuid::new_v4()),
    };
    let relay = Relay::new(
        node_id,
        store.clone(),
        bus.clone(),
        config.send_queue as usize,
        Keys::new(config.relay_keys.clone()),
    );
    let settings = NodeSettings {
        api_keys: Keys::new(api_keys.clone()),
        max_message_bytes,
        configured_topics: config.topics.clone(),
        history: history_settings(&config),
        idempotency_window: config.idempotency_window,
    };
    let node = Arc::new(Node::new(store, bus, hub, Arc::new(relay), metrics, settings));
    let shutdown = CancellationToken::new();
    // Plain TCP sockets are written to directly and read by the readiness loops; TLS ones only
    // through their stream, each by a task of its own.
    let direct_sockets = tls.is_none().then(|| Arc::new(DirectSockets::default()));
    let mut settings = WsSettings {
        max_message_bytes,
        max_connections: max_connections(&config),
        send_queue: config.send_queue as usize,
        shutdown: shutdown.clone(),
        tasks: TaskTracker::new(),
        direct_sockets: direct_sockets.clone(),
        loops: None,
    };
    if direct_sockets.is_some() {
        let loops = Loops::start(loop_count(), &settings.ctx(&node), &shutdown);
        settings.loops = Some(Arc::new(loops.map_err(StartError::Loops)?));
    }
    settings.tasks.spawn(node.clone().presence_heartbeat(shutdown.clone()));
    let sockets = node.clone();
    settings.tasks.spawn(keep_alive(
        config.ping_interval,
        shutdown.clone(),
        move |slice, slices| {
            let mut outlets = sockets.hub.outlets(slice, slices);
            outlets.extend(sockets.relay.outlets(slice, slices));
            outlets
        },
    ));
    match redis_bus {
        // Joining creates the configured topics, and again after every reconnection (Redis may
        // come back empty); a Redis that is down at start does not stop the node.
        Some(bus) => {
            let membership = bus.join(node.clone(), shutdown.clone()).await;
            settings.tasks.spawn(membership);
        }
        None => node.create_configured_topics().await.map_err(StartError::Topics)?,
    }
    let app = app(&config, node, settings.clone(), tls.is_some());
    let (local_addr, task) = match (tls, direct_sockets) {
        (Some(tls), _) => {
            let listener = TcpListener::bind(config.bind).rustls(tls);
            serve(listener, app, &config, shutdown.clone(), settings).await?
        }
        (None, sockets) => {
            let listener = DirectListener::bind(config.bind, sockets.unwrap_or_default());
            serve(listener, app, &config, shutdown.clone(), settings).await?
        }
    };
    Ok(Running { local_addr, api_keys, shutdown, task })
}

/// How many readiness loops serve plain-TCP sockets: one per core, as the runtime has one worker
/// per core, so reading sockets spreads over the cores like the rest of the work.
fn loop_count() -> usize {
    std::thread::available_parallelism().map_or(1, |cores| cores.get())
}

/// Binds and serves `app` in the background until `shutdown`, then waits (bounded) for the
/// WebSocket tasks. Returns the address it listens on and the serving task.
async fn serve(
    listener: impl Listener + 'static,
    app: impl Endpoint + 'static,
    config: &Config,
    shutdown: CancellationToken,
    settings: WsSettings,
) -> Result<(SocketAddr, JoinHandle<io::Result<()>>), StartError> {
    let acceptor =
        listener.into_acceptor().await.map_err(|err| StartError::Bind(config.bind, err))?;
    let local_addr = acceptor
        .local_addr()
        .first()
        .and_then(|addr| addr.as_socket_addr().copied())
        .unwrap_or(config.bind);
    let scheme = if config.tls_cert.is_some() { "https" } else { "http" };
    let docs = format!("{scheme}://{local_addr}{}/docs", config.path_prefix);
    tracing::info!(%local_addr, "listening; Swagger UI at {docs}");

    let grace = config.shutdown_timeout;
    let task = tokio::spawn(async move {
        let server = poem::Server::new_with_acceptor(acceptor);
        let result =
            server.run_with_graceful_shutdown(app, shutdown.cancelled_owned(), Some(grace)).await;
        // poem does not wait for upgraded connections: they close themselves (1001) on the
        // same signal; wait for them, bounded.
        settings.tasks.close();
        if tokio::time::timeout(grace, settings.tasks.wait()).await.is_err() {
            tracing::warn!("shutdown: some WebSocket connections did not close in time");
        }
        tracing::info!("stopped");
        result
    });
    Ok((local_addr, task))
}

/// The whole HTTP surface: API, WebSockets, relay, docs, spec and the test page, under
/// `--path-prefix` when one is given.
pub fn app(
    config: &Config,
    node: Arc<Node>,
    settings: WsSettings,
    tls: bool,
) -> impl Endpoint + 'static {
    let prefix = config.path_prefix.as_str();
    let api = Api::new(node.clone(), config.public_url.as_deref(), tls, prefix);
    let mut api = api_service(api);
    if !prefix.is_empty() {
        // Swagger UI's "try it out" must call the prefixed routes.
        api = api.server(prefix);
    }
    let swagger_ui = crate::page::swagger_ui(api.swagger_ui_html(), prefix);
    let spec = api.spec_endpoint();
    // Every route but the API's, which the spec lists: the methods a 405 names in `Allow`.
    let mut other_routes = vec![
        "/",
        "/ws/{id}",
        "/assets/{file}",
        "/favicon.svg",
        "/favicon.ico",
        "/openapi.json",
        "/docs",
    ];
    let mut route = Route::new()
        .at("/ws/:id", get(ws::upgrade))
        .at("/assets/:file", get(crate::page::asset))
        .at("/favicon.svg", get(crate::page::favicon))
        .at("/favicon.ico", get(crate::page::favicon))
        .at("/openapi.json", get(spec))
        .nest("/docs", get(swagger_ui));
    if !config.no_relay {
        route = route.at("/relay/:id", get(ws::relay_upgrade));
        other_routes.push("/relay/{id}");
    }
    let allowed = Arc::new(AllowedMethods::new(&api.spec(), &other_routes, prefix));
    let route = route.nest("/", api);
    let route = if prefix.is_empty() { route } else { Route::new().nest(prefix, route) };
    let prefix_root: Arc<str> = Arc::from(prefix);
    let metrics = node.metrics.clone();
    // The message's own limit is checked exactly later (413 message_too_large); the body may be
    // larger than the message's compact JSON (whitespace, escapes, other fields).
    let body_limit = (config.max_message_bytes as usize).saturating_mul(2) + 64 * 1024;
    let cors = config
        .cors_origins
        .iter()
        .fold(Cors::new(), |cors, origin| cors.allow_origin(origin.as_str()));
    route
        .with(cors)
        .data(node)
        .data(settings)
        .around(same_origin_is_not_cross_origin)
        .around(move |next, req| slash_after_prefix(next, req, prefix_root.clone()))
        .around(move |next, req| limit_body(next, req, body_limit))
        .around(move |next, req| request_span(next, req, metrics.clone(), allowed.clone()))
        .catch_all_error(|err| async move { error_response(err) })
}

/// `--max-connections`, or when 0 the open-file limit less what HTTP requests, Redis and files
/// need (every socket is a file; past the limit, accepting fails without an answer).
fn max_connections(config: &Config) -> usize {
    if config.max_connections > 0 {
        return config.max_connections as usize;
    }
    let files = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft);
    (files.saturating_sub(256) as usize).max(64)
}

/// What a topic keeps unless `createTopic` says otherwise.
fn history_settings(config: &Config) -> HistorySettings {
    HistorySettings { size: config.history_size, ttl: config.history_ttl }
}

/// The OpenAPI service: operations, `/docs` and `/openapi.json`.
pub fn api_service(api: Api) -> OpenApiService<Api, ()> {
    OpenApiService::new(api, "Switchboard", env!("CARGO_PKG_VERSION")).description(
        "Real-time messaging: register clients, hold WebSockets, fan messages out to \
             everyone, to topics, or to a client's sockets. The WebSocket protocol is described \
             in openapi/PROTOCOL.md. Every error is JSON {\"error\": code, \"message\": text}.",
    )
}

/// Bounds a request body: a declared length over `limit` is refused with 413 before anything is
/// read; a streamed body is cut off (and fails to parse) once it passes `limit`.
async fn limit_body<E: Endpoint>(
    next: E,
    mut req: Request,
    limit: usize,
) -> poem::Result<Response> {
    let declared = req.header(header::CONTENT_LENGTH).and_then(|len| len.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(AppError::PayloadTooLarge(limit).into());
    }
    let mut seen = 0usize;
    let body = req.take_body().into_bytes_stream().map(move |chunk| {
        let chunk = chunk?;
        seen += chunk.len();
        if seen > limit {
            return Err(io::Error::other(format!("request body over {limit} bytes")));
        }
        Ok(chunk)
    });
    req.set_body(Body::from_bytes_stream(body));
    next.call(req).await.map(IntoResponse::into_response)
}

/// `/prefix` answers 308 to `/prefix/` (the test page's relative links need the slash). With no
/// prefix, nothing to do.
async fn slash_after_prefix<E: Endpoint>(
    next: E,
    req: Request,
    prefix: Arc<str>,
) -> poem::Result<Response> {
    if !prefix.is_empty() && req.uri().path() == &*prefix {
        let location = match req.uri().query() {
            Some(query) => format!("{prefix}/?{query}"),
            None => format!("{prefix}/"),
        };
        return Ok(Response::builder()
            .status(StatusCode::PERMANENT_REDIRECT)
            .header(header::LOCATION, location)
            .finish());
    }
    next.call(req).await.map(IntoResponse::into_response)
}

/// A request from a page this server served (the test page) carries an `Origin` naming the
/// server itself; it is not cross-origin, so the CORS allow-list must not refuse it. Such an
/// `Origin` (same host and port as the `Host` header) is dropped before the CORS check.
async fn same_origin_is_not_cross_origin<E: Endpoint>(
    next: E,
    mut req: Request,
) -> poem::Result<Response> {
    let host = req.header(header::HOST).map(str::to_owned);
    let same_origin = match (req.header(header::ORIGIN), host) {
        (Some(origin), Some(host)) => {
            origin.split_once("://").is_some_and(|(_, authority)| authority == host)
        }
        _ => false,
    };
    if same_origin {
        req.headers_mut().remove(header::ORIGIN);
    }
    next.call(req).await.map(IntoResponse::into_response)
}

/// One span per request, carrying its request id: the client's `X-Request-Id` when it sent a
/// usable one (1-128 visible ASCII characters), else a new one; the answer carries it back.
/// Every answer is counted by operation and status. The path is logged with ids redacted: a
/// client id is a secret.
async fn request_span<E: Endpoint>(
    next: E,
    req: Request,
    metrics: Arc<Metrics>,
    allowed: Arc<AllowedMethods>,
) -> poem::Result<Response> {
    // Kept for a 405, which must say what the resource allows (RFC 9110 15.5.6).
    let uri = req.uri().clone();
    let request_id = match req.header(REQUEST_ID) {
        Some(id) if (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()) => {
            id.to_owned()
        }
        _ => Uuid::new_v4().simple().to_string(),
    };
    let path = redact_ids(req.uri().path());
    let span = tracing::info_span!("http", method = %req.method(), path = %path, %request_id);
    let started = Instant::now();
    let result = tracing::Instrument::instrument(next.call(req), span.clone()).await;
    // Rendered here rather than by the app's last handler, so errors are counted and carry the
    // request id too.
    let mut response = match result {
        Ok(response) => response.into_response(),
        Err(err) => {
            let operation = err.data::<OperationId>().copied();
            let mut response = error_response(err);
            if let Some(operation) = operation {
                response.set_data(operation);
            }
            response
        }
    };
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && let Some(allow) = allowed.for_path(uri.path())
        && let Ok(allow) = HeaderValue::from_str(&allow)
    {
        response.headers_mut().insert(header::ALLOW, allow);
    }
    let operation = response.data::<OperationId>().map_or("other", |operation| operation.0);
    let (status, took) = (response.status().as_u16(), started.elapsed());
    metrics.request(operation, status, took);
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let elapsed_us = took.as_micros() as u64;
    span.in_scope(|| tracing::debug!(status, elapsed_us, "request"));
    Ok(response)
}

/// The methods each route answers, for the `Allow` header of a 405: the API's from its spec,
/// the others' (all GET) as listed; GET implies HEAD.
struct AllowedMethods {
    prefix: String,
    /// Route templates split at `/` (`{name}` matches any one segment), with their methods.
    routes: Vec<(Vec<String>, String)>,
}

impl AllowedMethods {
    fn new(spec: &str, get_routes: &[&str], prefix: &str) -> Self {
        let spec: serde_json::Value = serde_json::from_str(spec).unwrap_or_default();
        let mut routes: Vec<(String, Vec<String>)> =
            get_routes.iter().map(|path| (path.to_string(), vec!["GET".to_owned()])).collect();
        if let Some(paths) = spec["paths"].as_object() {
            for (path, operations) in paths {
                let methods = operations
                    .as_object()
                    .map(|ops| ops.keys().map(|m| m.to_uppercase()).collect());
                routes.push((path.clone(), methods.unwrap_or_default()));
            }
        }
        let routes = routes
            .into_iter()
            .map(|(path, mut methods)| {
                if methods.iter().any(|m| m == "GET") {
                    methods.push("HEAD".to_owned());
                }
                methods.sort();
                let segments = path.split('/').map(str::to_owned).collect();
                (segments, methods.join(", "))
            })
            .collect();
        AllowedMethods { prefix: prefix.to_owned(), routes }
    }

    /// The `Allow` value for a request to `path`, when a route matches it.
    fn for_path(&self, path: &str) -> Option<String> {
        let path = path.strip_prefix(self.prefix.as_str()).unwrap_or(path);
        let path = if path.is_empty() { "/" } else { path };
        let segments: Vec<&str> = path.split('/').collect();
        self.routes.iter().find_map(|(template, methods)| {
            let matches = template.len() == segments.len()
                && template.iter().zip(&segments).all(|(expected, got)| {
                    expected == got || (expected.starts_with('{') && !got.is_empty())
                });
            matches.then(|| methods.clone())
        })
    }
}

fn redact_ids(path: &str) -> String {
    path.split('/')
        .map(|segment| if Uuid::parse_str(segment).is_ok() { ":id" } else { segment })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_redacted_from_logged_paths() {
        let path = "/register/6f9619ff-8b86-4d01-b42d-00cf4fc964ff";
        assert_eq!(super::redact_ids(path), "/register/:id");
        assert_eq!(super::redact_ids("/topics/news/publish"), "/topics/news/publish");
    }
}
