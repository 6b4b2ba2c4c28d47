//! `relay`: P pairs of peers echoing through `/relay/{id}` (Switchboard only): round trips per
//! second and round-trip time percentiles. With several nodes, the two peers of a pair are on
//! different nodes.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async, tungstenite::Message};

use super::{Common, Workload};
use crate::{
    chart::Chart,
    marker, procstat,
    stats::Latency,
    table::{Table, num},
    target::Target,
};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Debug, Clone, Args)]
pub struct Relay {
    #[command(flatten)]
    pub common: Common,
    /// Pairs echoing at once.
    #[arg(long, default_value_t = 10)]
    pub pairs: usize,
    /// Round trips per pair, one at a time.
    #[arg(long, default_value_t = 2000)]
    pub round_trips: u64,
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct RelayOutcome {
    pub target: String,
    pub nodes: usize,
    pub pairs: usize,
    pub round_trips: u64,
    pub round_trips_per_second: f64,
    pub rtt: Latency,
    pub server_cpu_us_per_round_trip: Option<f64>,
}

impl Workload for Relay {
    type Outcome = RelayOutcome;

    fn name(&self) -> &'static str {
        "relay"
    }

    fn common(&self) -> &Common {
        &self.common
    }

    async fn run(&self, target: Target) -> Result<RelayOutcome> {
        if target != Target::Switchboard {
            bail!("{} has no relay mode", target.name());
        }
        let servers = self.common.servers(target)?;
        let ws_base: Vec<String> =
            servers.urls.iter().map(|u| u.replacen("http://", "ws://", 1)).collect();
        let run_id = format!("{}-{}", std::process::id(), marker::now_us());
        let mut pairs = Vec::new();
        for pair in 0..self.pairs {
            let id = format!("bench-{run_id}-{pair}");
            let (a, _) = connect_async(format!("{}/relay/{id}", ws_base[0])).await?;
            let (b, _) =
                connect_async(format!("{}/relay/{id}", ws_base[1 % ws_base.len()])).await?;
            pairs.push((a, b));
        }
        let mut ready = Vec::new();
        for (mut a, mut b) in pairs {
            until_connected(&mut a).await?;
            until_connected(&mut b).await?;
            ready.push((a, b));
        }

        let bar = self.common.progress("round trips", self.pairs as u64 * self.round_trips);
        let before = procstat::usage(&servers.pids).ok();
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for (a, b) in ready {
            let (count, size, bar) = (self.round_trips, self.payload, bar.clone());
            tasks.spawn(async move { ping_pong(a, b, count, size, &bar).await });
        }
        let mut rtts = Vec::new();
        while let Some(done) = tasks.join_next().await {
            rtts.extend(done??);
        }
        let elapsed = started.elapsed().as_secs_f64();
        let after = procstat::usage(&servers.pids).ok();
        bar.finish_and_clear();
        let total = rtts.len() as u64;
        Ok(RelayOutcome {
            target: self.common.label(target),
            nodes: servers.urls.len(),
            pairs: self.pairs,
            round_trips: total,
            round_trips_per_second: total as f64 / elapsed,
            rtt: Latency::of(rtts),
            server_cpu_us_per_round_trip: before
                .zip(after)
                .map(|(b, a)| (a.cpu_seconds - b.cpu_seconds) * 1e6 / total.max(1) as f64),
        })
    }

    fn table(&self, outcomes: &[RelayOutcome]) -> Table {
        let mut table = Table::new(&[
            "target",
            "pairs",
            "round trips",
            "round trips/s",
            "RTT p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "CPU µs/round trip",
        ]);
        for o in outcomes {
            let mut row = vec![
                o.target.clone(),
                o.pairs.to_string(),
                o.round_trips.to_string(),
                format!("{:.0}", o.round_trips_per_second),
            ];
            row.extend(o.rtt.table_cells());
            row.push(num(o.server_cpu_us_per_round_trip, 2));
            table.row(row);
        }
        table
    }

    fn chart(&self, outcomes: &[RelayOutcome]) -> Chart {
        Chart::bars_of(
            outcomes,
            |o| &o.target,
            &[
                ("relay round trips per second", |o| o.round_trips_per_second),
                ("round-trip time p99 (ms)", |o| o.rtt.p99_ms),
            ],
        )
    }
}

/// Reads until the relay says this peer is paired.
async fn until_connected(socket: &mut Socket) -> Result<()> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .context("not paired within 10 s")?
            .context("relay socket ended")??;
        if frame.to_text().is_ok_and(|text| text == "/status:connected") {
            return Ok(());
        }
    }
}

/// `a` sends marked payloads one at a time; `b` echoes them. Returns the RTTs in µs.
async fn ping_pong(
    mut a: Socket,
    mut b: Socket,
    count: u64,
    size: usize,
    bar: &indicatif::ProgressBar,
) -> Result<Vec<u64>> {
    let echo = tokio::spawn(async move {
        while let Some(Ok(frame)) = b.next().await {
            if frame.is_text() && !frame.to_text().is_ok_and(|t| t.starts_with('/')) {
                b.send(frame).await?;
            }
        }
        anyhow::Ok(())
    });
    let mut rtts = Vec::with_capacity(count as usize);
    for seq in 0..count {
        a.send(Message::text(marker::payload(seq, marker::now_us(), size))).await?;
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), a.next())
                .await
                .context("no echo within 10 s")?
                .context("relay socket ended")??;
            if let Some((echoed, sent)) = marker::parse(&frame.into_data())
                && echoed == seq
            {
                rtts.push(marker::now_us().saturating_sub(sent));
                break;
            }
        }
        bar.inc(1);
    }
    a.close(None).await.ok();
    echo.abort();
    Ok(rtts)
}
