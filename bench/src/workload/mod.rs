//! The workloads, each a subcommand, and what they share: the options that pick and start a
//! target, and the driver that runs one workload against one or several targets, then prints a
//! table and writes JSON and a chart.

pub mod fanout;
pub mod idle;
pub mod relay;
pub mod shootout;

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::{
    chart::Chart,
    table::Table,
    target::{Launch, Servers, Target, default_peers_dir, default_switchboard_bin},
};

/// Options every workload takes.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// The server under test (`compare` runs several).
    #[arg(long, value_enum, default_value = "switchboard")]
    pub target: Target,
    /// Switchboard nodes; more than one share a private redis-server, and clients are spread
    /// over them.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// Measure a server that is already running at this base URL (repeatable, one per node)
    /// instead of starting one.
    #[arg(long)]
    pub url: Vec<String>,
    /// PIDs of the `--url` servers, to read their CPU and memory.
    #[arg(long)]
    pub pid: Vec<u32>,
    /// Client processes (default: one per 15,000 clients).
    #[arg(long)]
    pub agents: Option<usize>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a chart of the results to this SVG file.
    #[arg(long)]
    pub chart: Option<PathBuf>,
    /// The switchboard binary (default: the one next to this binary).
    #[arg(long)]
    pub switchboard_bin: Option<PathBuf>,
    /// Peers' scripts and node_modules (default: bench/peers of this checkout).
    #[arg(long)]
    pub peers_dir: Option<PathBuf>,
    /// Extra option for every Switchboard node (repeatable), e.g. --switchboard-arg=--send-queue=4096.
    #[arg(long = "switchboard-arg", allow_hyphen_values = true)]
    pub switchboard_args: Vec<String>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

impl Common {
    /// Starts the target (or adopts the `--url` servers).
    pub fn servers(&self, target: Target) -> Result<Servers> {
        if !self.url.is_empty() {
            return Ok(Servers::external(target, self.url.clone(), self.pid.clone()));
        }
        if target != Target::Switchboard && self.nodes > 1 {
            bail!("--nodes applies to switchboard only");
        }
        let launch = Launch {
            nodes: self.nodes,
            switchboard_bin: self.switchboard_bin.clone().unwrap_or_else(default_switchboard_bin),
            peers_dir: self.peers_dir.clone().unwrap_or_else(default_peers_dir),
            switchboard_args: self.switchboard_args.clone(),
        };
        // Starting waits for ports and processes with blocking calls.
        tokio::task::block_in_place(|| Servers::start(target, &launch))
    }

    /// A progress bar of `length` steps (hidden with --quiet).
    pub fn progress(&self, what: &str, length: u64) -> ProgressBar {
        if self.quiet {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(length);
        let style = ProgressStyle::with_template("{msg:>24} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(what.to_owned());
        bar
    }

    /// How a target is named in tables: with its node count when there are several.
    pub fn label(&self, target: Target) -> String {
        match (target, self.nodes) {
            (Target::Switchboard, n) if n > 1 => format!("switchboard x{n} (redis)"),
            _ => target.name().to_owned(),
        }
    }
}

/// One workload: runs against a target and presents a set of outcomes.
// Only this crate drives workloads, awaiting them in place, so the futures need no `Send` bound.
#[allow(async_fn_in_trait)]
pub trait Workload {
    type Outcome: Serialize;
    fn name(&self) -> &'static str;
    fn common(&self) -> &Common;
    async fn run(&self, target: Target) -> Result<Self::Outcome>;
    fn table(&self, outcomes: &[Self::Outcome]) -> Table;
    fn chart(&self, outcomes: &[Self::Outcome]) -> Chart;
}

/// Runs `workload` against each target in turn (a failing target is reported and skipped),
/// then prints the table and writes the JSON and chart asked for.
pub async fn drive<W: Workload>(workload: &W, targets: &[Target]) -> Result<Vec<W::Outcome>> {
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    for &target in targets {
        eprintln!("== {} against {}", workload.name(), workload.common().label(target));
        match workload.run(target).await {
            Ok(outcome) => outcomes.push(outcome),
            Err(error) => {
                eprintln!("{}: {error:#}", target.name());
                failures.push(
                    serde_json::json!({"target": target.name(), "error": format!("{error:#}")}),
                );
            }
        }
    }
    if outcomes.is_empty() {
        bail!("{}: no target completed", workload.name());
    }
    print!("{}", workload.table(&outcomes));
    let common = workload.common();
    if let Some(path) = &common.json {
        let json = serde_json::json!({
            "workload": workload.name(),
            "results": outcomes,
            "failures": failures,
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    if let Some(path) = &common.chart {
        workload.chart(&outcomes).write_svg(path)?;
    }
    Ok(outcomes)
}
