//! `idle`: N idle subscribers held; the server's memory per connection (RSS, and PSS, which
//! splits pages shared between processes such as nginx's workers).

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

use super::{Common, Workload};
use crate::{
    chart::Chart,
    fleet::Fleet,
    procstat,
    table::{Table, num},
    target::Target,
};

#[derive(Debug, Clone, Args)]
pub struct Idle {
    #[command(flatten)]
    pub common: Common,
    /// Idle connections to hold.
    #[arg(long, default_value_t = 10_000)]
    pub clients: usize,
    /// Seconds to let the servers settle before measuring.
    #[arg(long, default_value_t = 2.0)]
    pub settle: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct IdleOutcome {
    pub target: String,
    pub nodes: usize,
    pub connections: usize,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub pss_before_kib: u64,
    pub pss_after_kib: u64,
    pub rss_kib_per_connection: f64,
    pub pss_kib_per_connection: f64,
}

impl Workload for Idle {
    type Outcome = IdleOutcome;

    fn name(&self) -> &'static str {
        "idle"
    }

    fn common(&self) -> &Common {
        &self.common
    }

    async fn run(&self, target: Target) -> Result<IdleOutcome> {
        let servers = self.common.servers(target)?;
        let settle = Duration::from_secs_f64(self.settle);
        tokio::time::sleep(settle).await;
        let before = procstat::usage(&servers.pids).context("server memory")?;
        let mut fleet = Fleet::spawn(&servers, self.clients, self.common.agents)?;
        let bar = self.common.progress("idle connections", self.clients as u64);
        fleet.connect_up_to(self.clients, &bar).await?;
        bar.finish_and_clear();
        tokio::time::sleep(settle).await;
        let after = procstat::usage(&servers.pids).context("server memory")?;
        let per =
            |after: u64, before: u64| after.saturating_sub(before) as f64 / self.clients as f64;
        Ok(IdleOutcome {
            target: self.common.label(target),
            nodes: servers.urls.len(),
            connections: fleet.connected(),
            rss_before_kib: before.rss_kib,
            rss_after_kib: after.rss_kib,
            pss_before_kib: before.pss_kib,
            pss_after_kib: after.pss_kib,
            rss_kib_per_connection: per(after.rss_kib, before.rss_kib),
            pss_kib_per_connection: per(after.pss_kib, before.pss_kib),
        })
    }

    fn table(&self, outcomes: &[IdleOutcome]) -> Table {
        let mut table = Table::new(&[
            "target",
            "connections",
            "RSS before MiB",
            "RSS after MiB",
            "RSS KiB/conn",
            "PSS KiB/conn",
        ]);
        for o in outcomes {
            table.row(vec![
                o.target.clone(),
                o.connections.to_string(),
                num(Some(o.rss_before_kib as f64 / 1024.0), 1),
                num(Some(o.rss_after_kib as f64 / 1024.0), 1),
                num(Some(o.rss_kib_per_connection), 2),
                num(Some(o.pss_kib_per_connection), 2),
            ]);
        }
        table
    }

    fn chart(&self, outcomes: &[IdleOutcome]) -> Chart {
        Chart::bars_of(
            outcomes,
            |o| &o.target,
            &[
                ("RSS KiB per idle connection", |o| o.rss_kib_per_connection),
                ("PSS KiB per idle connection", |o| o.pss_kib_per_connection),
            ],
        )
    }
}
