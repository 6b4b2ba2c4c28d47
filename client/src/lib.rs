//! Switchboard's native client.
//!
//! - [`api`]: the HTTP API, generated at build time from the committed `openapi/openapi.json`
//!   (progenitor); [`http_client`] makes one that sends the API key with every call.
//! - [`socket`]: a client's WebSocket, kept open: typed frames from the protocol crate, requests
//!   answered by the server's `ack` or `error` (matched by `ref`), reconnect with backoff,
//!   never after an unregister (4001).
//!
//! ```no_run
//! use switchboard_client::{http_client, socket::{Event, Socket}, types::RegisterRequest};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let api = http_client("http://127.0.0.1:8080", Some("dev-key"))?;
//! let client = api.register(&RegisterRequest { name: Some("alice".parse()?) }).await?.into_inner();
//! let (socket, mut events) = Socket::connect(&client.ws_url);
//! socket.subscribe(&["news"]).await?;
//! socket.publish("news", &serde_json::json!({"hello": "world"})).await?;
//! while let Some(event) = events.recv().await {
//!     if let Event::Message { topic, from, data, .. } = event {
//!         println!("{topic:?} {from:?} {data}");
//!     }
//! }
//! # Ok(())
//! # }
//! ```

pub mod socket;

#[allow(clippy::all, missing_docs)]
pub mod api {
    //! The HTTP API as the committed spec describes it (generated; see the crate docs).
    progenitor::generate_api!(spec = "../openapi/openapi.json", interface = Positional);
}

pub use api::{Client as HttpClient, types};
pub use switchboard_protocol::{CLOSE_UNREGISTERED, ServerEvent};

/// What a call of this crate can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error; its JSON body says what went wrong.
    #[error("{} ({})", .0.message, .0.error)]
    Server(types::ErrorBody),
    /// The request did not get a documented answer (connection refused, bad body, ...).
    #[error("{0}")]
    Http(String),
    /// The API key is not a valid header value.
    #[error("the API key cannot be sent as a header: {0}")]
    BadKey(String),
}

impl From<api::Error<types::ErrorBody>> for ClientError {
    fn from(err: api::Error<types::ErrorBody>) -> Self {
        match err {
            api::Error::ErrorResponse(body) => ClientError::Server(body.into_inner()),
            other => ClientError::Http(other.to_string()),
        }
    }
}

/// The HTTP API at `base_url` (e.g. `http://127.0.0.1:8080`, with any path prefix), sending
/// `api_key` as `X-Api-Key` with every call when given.
pub fn http_client(base_url: &str, api_key: Option<&str>) -> Result<HttpClient, ClientError> {
    install_crypto_provider();
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = api_key {
        let mut value = reqwest::header::HeaderValue::from_str(key)
            .map_err(|err| ClientError::BadKey(err.to_string()))?;
        value.set_sensitive(true);
        headers.insert("X-Api-Key", value);
    }
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .map_err(|err| ClientError::Http(err.to_string()))?;
    Ok(HttpClient::new_with_client(base_url.trim_end_matches('/'), http))
}

/// TLS (https, wss) through rustls with aws-lc-rs, the provider the server uses too.
fn install_crypto_provider() {
    // Fails only when a provider is installed already, which is as good.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
