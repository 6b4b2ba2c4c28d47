//! `report`: every workload against every target; writes docs/performance.md and its charts.

use anyhow::Result;
use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct Report {}

pub async fn run(_options: Report) -> Result<()> {
    anyhow::bail!("not yet")
}
