//! The `switchboard` binary: parse options, set up logging, run until SIGINT or SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use switchboard::{Config, config::LogFormat};
use tracing_subscriber::EnvFilter;

/// Many small, long-lived allocations per connection between short-lived large ones (the HTTP
/// handshake's buffers): glibc's malloc fragments on that pattern, jemalloc much less (the
/// figures: docs/performance.md, "The allocator").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start (`_RJEM_MALLOC_CONF` in the environment overrides
/// them). One arena: with an arena per thread, each kept its own partly used pages of the
/// connections it set up (docs/performance.md, "The allocator"); the hot path hardly allocates,
/// and the per-thread caches keep the arena's lock off it.
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_OPTIONS: &[u8; 10] = b"narenas:1\0";

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }

    // Every WebSocket is a file: allow as many as the hard limit permits, not the soft default.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!("open file limit: {limit}"),
        Err(err) => tracing::warn!("cannot raise the open file limit: {err}"),
    }

    let running = match switchboard::start(config).await {
        Ok(running) => running,
        Err(err) => {
            tracing::error!("{err}");
            eprintln!("switchboard: {err}");
            return ExitCode::FAILURE;
        }
    };
    wait_for_signal().await;
    tracing::info!("shutting down");
    match running.shutdown().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("server error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(err) => {
                    tracing::warn!("cannot listen for SIGTERM: {err}");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
