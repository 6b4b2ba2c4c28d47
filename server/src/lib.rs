//! Switchboard: real-time messaging over a typed HTTP API and WebSockets.
//!
//! The modules in layer order: each uses only modules listed after it (a test checks it, see
//! `tests/layers.rs`). Reading down follows a request in; reading up follows the bytes out.
//!
//! - [`server`]: builds the app from a `Config`, serves it, shuts it down gracefully.
//! - [`api`]: the poem-openapi HTTP operations, thin over [`node`].
//! - [`ws`]: the inbound WebSocket transport: handshakes, reading and decoding each socket,
//!   client connections and relay peers.
//! - [`node`]: every operation once, for HTTP and WebSocket alike, a socket's connect
//!   included; the handler its bus calls with what other nodes announce.
//! - [`error`]: typed errors and the one place they become JSON error answers.
//! - [`relay`]: relay mode's registry: peers paired by a shared id, on any nodes, and what they
//!   send each other.
//! - [`bus`]: events for the other nodes of a cluster, and the handler trait it calls back.
//! - [`hub`]: this node's live sockets (sharded) and the fan-out of one encoded frame.
//! - [`store`]: registrations, names, topics, subscriptions: a trait and its stores.
//! - [`delivery`]: bytes out: encoded frames, close reasons, each socket's outlet, the fan-out's
//!   writer, the keep-alive sweep.
//!
//! Leaves, used from anywhere above and using none of the above:
//! - [`auth`]: API and relay keys, compared in constant time.
//! - [`config`]: command-line and environment options (clap).
//! - [`listener`]: the plain-TCP listener that keeps sockets reachable for direct writes.
//! - [`tls`]: the listener's certificate and key, checked at start.
//! - [`page`]: the test page at `/` and its Wasm client (built in `wasm-client/`).
//! - [`redis_pool`]: the Redis connections of a cluster member (command pool, pub/sub).
//! - [`metrics`]: what `/metrics` exposes (Prometheus text format).
//!
//! Embedding (as the tests do): `switchboard::start(Config::ephemeral()).await`.

pub(crate) mod server;
pub(crate) mod api;
pub(crate) mod ws;
pub(crate) mod node;
pub(crate) mod error;
pub(crate) mod relay;
pub(crate) mod bus;
pub(crate) mod hub;
pub mod store;
pub(crate) mod delivery;

pub(crate) mod auth;
pub mod config;
pub(crate) mod listener;
pub(crate) mod tls;
pub(crate) mod page;
pub mod redis_pool;
pub(crate) mod metrics;

pub use config::Config;
pub use node::PRESENCE_TTL;
pub use server::{Running, StartError, start, start_with_store};
