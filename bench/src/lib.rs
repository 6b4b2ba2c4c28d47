//! The Switchboard benchmark harness: measures Switchboard the way users compare push services,
//! against the servers they would pick instead, in the same run on the same machine.
//!
//! - `workload/`: the subcommands (`fanout`, `idle`, `shootout`, `relay`) and the driver that
//!   runs one against one or several targets, then prints a table and writes JSON and a chart.
//! - `target`: starts and stops the servers under test (Switchboard nodes, Redis, the peers).
//! - `agent`: a client process holding a share of the subscribers, read by its `receiver`
//!   thread; `fleet` drives the agents.
//! - `publisher`: HTTP publishes at a rate or saturating; `marker`: the sequence number and send
//!   time each payload carries; `stats`: percentiles; `procstat`: CPU and memory from /proc.
//! - `table`, `chart`: text/Markdown tables and SVG charts; `report`: docs/performance.md.

pub mod agent;
pub mod chart;
pub mod fleet;
pub mod marker;
pub mod procstat;
pub mod publisher;
pub mod receiver;
pub mod report;
pub mod stats;
pub mod table;
pub mod target;
pub mod workload;

/// An HTTP client for loopback servers (rustls needs its provider chosen first).
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    Ok(reqwest::Client::builder().pool_max_idle_per_host(64).build()?)
}

/// Raises this process's open-file limit to the hard limit: agents hold thousands of sockets.
pub fn raise_file_limit() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
}
