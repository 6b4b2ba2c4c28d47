//! Switchboard's browser client, compiled to WebAssembly with wasm-bindgen and web-sys.
//!
//! - [`client`]: `SwitchboardClient`, the library exported to JavaScript (register, connect with
//!   automatic reconnect and backoff, subscribe, unsubscribe, publish, broadcast, callbacks,
//!   close, unregister).
//! - [`page`]: the logic of the test page the server serves at `/` (markup in `www/index.html`).
//! - [`http`]: calls to the HTTP API with `fetch`.
//!
//! Encoding requests and the reconnect schedule live in the protocol crate
//! (`switchboard_protocol::{request, reconnect}`), shared with the native client and unit-tested
//! natively there; the rest needs a browser and
//! is tested end to end in headless Chromium (`server/tests/browser.rs`). `scripts/wasm` builds
//! the `.wasm` and its JS glue into `pkg/`, which is committed so the server embeds it without
//! the wasm toolchain.

pub mod client;
pub mod http;
pub mod page;

pub use client::SwitchboardClient;
