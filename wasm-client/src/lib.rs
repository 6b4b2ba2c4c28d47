//! Switchboard's browser client, compiled to WebAssembly with wasm-bindgen and web-sys.
//!
//! - [`client`]: `SwitchboardClient`, the library exported to JavaScript (register, connect with
//!   automatic reconnect and backoff, subscribe, unsubscribe, publish, broadcast, callbacks,
//!   close, unregister).
//! - [`page`]: the logic of the test page the server serves at `/` (markup in `www/index.html`).
//! - [`frames`]: encoding requests with the protocol crate the server uses.
//! - [`backoff`]: the reconnect schedule and which closes end it.
//! - [`http`]: calls to the HTTP API with `fetch`.
//!
//! `frames` and `backoff` are plain Rust and unit-tested natively; the rest needs a browser and
//! is tested end to end in headless Chromium (`server/tests/browser.rs`). `scripts/wasm` builds
//! the `.wasm` and its JS glue into `pkg/`, which is committed so the server embeds it without
//! the wasm toolchain.

pub mod backoff;
pub mod client;
pub mod frames;
pub mod http;
pub mod page;

pub use client::SwitchboardClient;
