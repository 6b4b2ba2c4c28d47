//! `shootout`: clients added in steps; at each step a few sampled publishes, timed until every
//! client has each one. The result is the largest client count whose p95 of that time stays
//! under the bound (500 ms).

use std::time::Duration;

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use super::{Common, Workload};
use crate::{
    chart::Chart,
    fleet::Fleet,
    publisher::Publisher,
    stats::percentile,
    table::{Table, num},
    target::Target,
};

#[derive(Debug, Clone, Args)]
pub struct Shootout {
    #[command(flatten)]
    pub common: Common,
    /// Client counts to step through (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1000,2000,5000,10000,15000,19000")]
    pub steps: Vec<usize>,
    /// Sampled publishes per step.
    #[arg(long, default_value_t = 20)]
    pub samples: u64,
    /// Sampled publishes per second.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// The p95 bound, in milliseconds.
    #[arg(long, default_value_t = 500.0)]
    pub bound_ms: f64,
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub clients: usize,
    /// Time until every client had a sample: p50, p95, max over the samples (ms).
    pub all_p50_ms: f64,
    pub all_p95_ms: f64,
    pub all_max_ms: f64,
    pub lost: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShootoutOutcome {
    pub target: String,
    pub nodes: usize,
    pub steps: Vec<Step>,
    /// Largest step with p95 under the bound and nothing lost.
    pub best_clients: usize,
    /// Why the run stopped before the last step, if it did.
    pub stopped: Option<String>,
}

impl Workload for Shootout {
    type Outcome = ShootoutOutcome;

    fn name(&self) -> &'static str {
        "shootout"
    }

    fn common(&self) -> &Common {
        &self.common
    }

    async fn run(&self, target: Target) -> Result<ShootoutOutcome> {
        let servers = self.common.servers(target)?;
        let most = self.steps.iter().copied().max().unwrap_or(0);
        let mut fleet = Fleet::spawn(&servers, most, self.common.agents)?;
        let publisher = Publisher::new(target, &servers.urls[0], self.payload)?;
        let mut outcome = ShootoutOutcome {
            target: self.common.label(target),
            nodes: servers.urls.len(),
            steps: Vec::new(),
            best_clients: 0,
            stopped: None,
        };
        let mut next_seq = 0;
        for &clients in &self.steps {
            let bar = self.common.progress(&format!("step {clients}"), clients as u64);
            let connected = fleet.connect_up_to(clients, &bar).await;
            bar.finish_and_clear();
            if let Err(error) = connected {
                outcome.stopped = Some(format!("connecting {clients} clients: {error:#}"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (from, to) = (next_seq, next_seq + self.samples);
            next_seq = to;
            publisher.at_rate(from, to, self.rate, &indicatif::ProgressBar::hidden()).await?;
            let receipts = fleet.collect(from, to, Duration::from_secs(15)).await?;
            let mut all_have_it = receipts.all_have_it_us;
            all_have_it.sort_unstable();
            let ms = |q| match percentile(&all_have_it, q) {
                u64::MAX => f64::INFINITY,
                us => us as f64 / 1000.0,
            };
            let step = Step {
                clients,
                all_p50_ms: ms(0.5),
                all_p95_ms: ms(0.95),
                all_max_ms: ms(1.0),
                lost: receipts.lost,
            };
            eprintln!(
                "{clients} clients: every client had it after p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms; lost {}",
                step.all_p50_ms, step.all_p95_ms, step.all_max_ms, step.lost
            );
            let within = step.all_p95_ms < self.bound_ms && step.lost == 0;
            outcome.steps.push(step);
            if !within {
                outcome.stopped =
                    Some(format!("p95 over {} ms or loss at {clients}", self.bound_ms));
                break;
            }
            outcome.best_clients = clients;
        }
        Ok(outcome)
    }

    fn table(&self, outcomes: &[ShootoutOutcome]) -> Table {
        let mut table =
            Table::new(&["target", "clients", "all p50 ms", "all p95 ms", "all max ms", "lost"]);
        for o in outcomes {
            for step in &o.steps {
                table.row(vec![
                    o.target.clone(),
                    step.clients.to_string(),
                    num(Some(step.all_p50_ms), 1),
                    num(Some(step.all_p95_ms), 1),
                    num(Some(step.all_max_ms), 1),
                    step.lost.to_string(),
                ]);
            }
            let stopped = o.stopped.clone().unwrap_or_else(|| "completed every step".into());
            table.row(vec![
                o.target.clone(),
                format!("best: {}", o.best_clients),
                String::new(),
                String::new(),
                String::new(),
                stopped,
            ]);
        }
        table
    }

    fn chart(&self, outcomes: &[ShootoutOutcome]) -> Chart {
        Chart::Lines {
            title: "time until every client has a message (p95)".into(),
            x: "clients".into(),
            y: "ms".into(),
            series: outcomes
                .iter()
                .map(|o| {
                    let points = o
                        .steps
                        .iter()
                        .filter(|s| s.all_p95_ms.is_finite())
                        .map(|s| (s.clients as f64, s.all_p95_ms))
                        .collect();
                    (o.target.clone(), points)
                })
                .collect(),
        }
    }
}
