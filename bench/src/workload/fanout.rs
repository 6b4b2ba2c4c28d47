//! `fanout`: N subscribers of one topic, HTTP publishes at a set rate (or as fast as the
//! publisher can): deliveries/s, latency, loss, duplicates and server CPU per delivery.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use serde::Serialize;

use super::{Common, Workload};
use crate::{
    chart::Chart,
    fleet::Fleet,
    marker, procstat,
    publisher::Publisher,
    stats::Latency,
    table::{Table, num},
    target::Target,
};

#[derive(Debug, Clone, Args)]
pub struct Fanout {
    #[command(flatten)]
    pub common: Common,
    /// Subscribers of the topic.
    #[arg(long, default_value_t = 2000)]
    pub clients: usize,
    /// Publishes per second; 0 publishes as fast as the publisher can (saturation).
    #[arg(long, default_value_t = 25.0)]
    pub rate: f64,
    /// How long to publish, in seconds.
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// Requests in flight when saturating.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct FanoutOutcome {
    pub target: String,
    pub nodes: usize,
    pub clients: usize,
    /// Asked rate (0: saturated).
    pub rate: f64,
    pub published: u64,
    pub expected: u64,
    pub deliveries: u64,
    pub lost: u64,
    pub duplicates: u64,
    /// Deliveries over the time from the first publish to the last receipt.
    pub deliveries_per_second: f64,
    pub latency: Latency,
    pub server_cpu_seconds: f64,
    pub server_cpu_us_per_delivery: Option<f64>,
    /// Cores the servers used on average while publishing and delivering.
    pub server_cores: Option<f64>,
}

impl Workload for Fanout {
    type Outcome = FanoutOutcome;

    fn name(&self) -> &'static str {
        "fanout"
    }

    fn common(&self) -> &Common {
        &self.common
    }

    async fn run(&self, target: Target) -> Result<FanoutOutcome> {
        if self.clients == 0 || self.seconds <= 0.0 {
            bail!("--clients and --seconds must be positive");
        }
        let servers = self.common.servers(target)?;
        let mut fleet = Fleet::spawn(&servers, self.clients, self.common.agents)?;
        let bar = self.common.progress("subscribers", self.clients as u64);
        fleet.connect_up_to(self.clients, &bar).await?;
        bar.finish_and_clear();
        tokio::time::sleep(Duration::from_millis(500)).await;

        let publisher = Publisher::new(target, &servers.urls[0], self.payload)?;
        let before = procstat::usage(&servers.pids).ok();
        let started_us = marker::now_us();
        let published = if self.rate > 0.0 {
            let count = (self.rate * self.seconds).round().max(1.0) as u64;
            let bar = self.common.progress("publishes", count);
            publisher.at_rate(0, count, self.rate, &bar).await?;
            bar.finish_and_clear();
            count
        } else {
            let bar = self.common.progress("publishes (saturating)", 0);
            let end = publisher
                .saturate(0, Duration::from_secs_f64(self.seconds), self.concurrency, &bar)
                .await?;
            bar.finish_and_clear();
            end
        };
        let receipts = fleet.collect(0, published, Duration::from_secs(60)).await?;
        let after = procstat::usage(&servers.pids).ok();
        let busy_seconds = (receipts.last_receive_us.saturating_sub(started_us)) as f64 / 1e6;
        let cpu = match (before, after) {
            (Some(before), Some(after)) => Some(after.cpu_seconds - before.cpu_seconds),
            _ => None,
        };
        Ok(FanoutOutcome {
            target: self.common.label(target),
            nodes: servers.urls.len(),
            clients: self.clients,
            rate: self.rate,
            published,
            expected: published * receipts.clients,
            deliveries: receipts.deliveries,
            lost: receipts.lost,
            duplicates: receipts.duplicates,
            deliveries_per_second: receipts.deliveries as f64 / busy_seconds.max(1e-6),
            latency: Latency::of(receipts.latencies_us),
            server_cpu_seconds: cpu.unwrap_or(0.0),
            server_cpu_us_per_delivery: cpu
                .filter(|_| receipts.deliveries > 0)
                .map(|cpu| cpu * 1e6 / receipts.deliveries as f64),
            server_cores: cpu.map(|cpu| cpu / busy_seconds.max(1e-6)),
        })
    }

    fn table(&self, outcomes: &[FanoutOutcome]) -> Table {
        let mut table = Table::new(&[
            "target",
            "clients",
            "published",
            "deliveries",
            "lost",
            "dup",
            "deliveries/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "CPU µs/delivery (= s/M)",
            "cores",
        ]);
        for o in outcomes {
            let mut row = vec![
                o.target.clone(),
                o.clients.to_string(),
                o.published.to_string(),
                o.deliveries.to_string(),
                o.lost.to_string(),
                o.duplicates.to_string(),
                format!("{:.0}", o.deliveries_per_second),
            ];
            row.extend(o.latency.table_cells());
            row.extend([num(o.server_cpu_us_per_delivery, 2), num(o.server_cores, 2)]);
            table.row(row);
        }
        table
    }

    fn chart(&self, outcomes: &[FanoutOutcome]) -> Chart {
        Chart::bars_of(
            outcomes,
            |o| &o.target,
            &[
                ("server CPU µs per delivery", |o| o.server_cpu_us_per_delivery.unwrap_or(0.0)),
                ("deliveries per second (thousands)", |o| o.deliveries_per_second / 1000.0),
                ("latency p99 (ms)", |o| o.latency.p99_ms),
            ],
        )
    }
}
