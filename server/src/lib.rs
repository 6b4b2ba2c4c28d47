//! Switchboard: real-time messaging over a typed HTTP API and WebSockets.
//!
//! Data flows one way: request or frame in, [`node`] (the operations), [`store`] and [`bus`],
//! [`hub`], sockets out.
//!
//! - [`config`]: command-line and environment options (clap).
//! - [`server`]: builds the app from a `Config`, serves it, shuts it down gracefully.
//! - [`api`]: the poem-openapi HTTP operations, thin over [`node`].
//! - [`ws`]: the WebSocket transport: handshake, one task per socket reading it, writes
//!   straight to the socket from the fan-out (queued only on push-back); client connections and
//!   relay peers.
//! - [`node`]: every operation once, for HTTP and WebSocket alike.
//! - [`hub`]: this node's live sockets (sharded) and the fan-out of one encoded frame.
//! - [`store`]: registrations, names, topics, subscriptions: a trait and its stores.
//! - [`bus`]: events for the other nodes of a cluster.
//! - [`redis_pool`]: the Redis connections of a cluster member (command pool, pub/sub).
//! - [`relay`]: relay mode: peers paired by a shared id, on any nodes, and what they send.
//! - [`page`]: the test page at `/` and its Wasm client (built in `wasm-client/`).
//! - [`listener`]: the plain-TCP listener that keeps sockets reachable for direct writes.
//! - [`tls`]: the listener's certificate and key, checked at start.
//! - [`error`]: typed errors and the one place they become JSON error answers.
//!
//! Embedding (as the tests do): `switchboard::start(Config::ephemeral()).await`.

pub mod api;
pub mod bus;
pub mod config;
pub mod error;
pub mod hub;
pub mod listener;
pub mod node;
pub mod page;
pub mod redis_pool;
pub mod relay;
pub mod server;
pub mod store;
pub mod tls;
pub mod ws;

pub use config::Config;
pub use server::{Running, StartError, start, start_with_store};
