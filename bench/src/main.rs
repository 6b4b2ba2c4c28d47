//! `switchboard-bench`: parses the command line and runs a workload, a comparison, the report,
//! or (internally) a client agent.

use anyhow::Result;
use clap::{Parser, Subcommand};
use switchboard_bench::{
    agent,
    report::{self, Report},
    target::Target,
    workload::{Workload, drive, fanout::Fanout, idle::Idle, relay::Relay, shootout::Shootout},
};

#[derive(Parser)]
#[command(name = "switchboard-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Workload(WorkloadCommand),
    /// Run one workload against several targets, one after another.
    Compare {
        /// Targets to compare (comma-separated).
        #[arg(long, value_enum, value_delimiter = ',', default_value = "switchboard,nchan,uws,ws")]
        targets: Vec<Target>,
        #[command(subcommand)]
        workload: WorkloadCommand,
    },
    /// Run every workload against every target and write docs/performance.md with its charts.
    Report(Report),
    /// A client process of a run (started by the harness itself).
    #[command(hide = true)]
    Agent { spec: String },
}

#[derive(Subcommand)]
enum WorkloadCommand {
    /// Subscribers of one topic, publishes at a rate or saturating: throughput, latency, loss, CPU.
    Fanout(Fanout),
    /// Idle connections held: server memory per connection.
    Idle(Idle),
    /// Clients added in steps until every client no longer has a message within 500 ms (p95).
    Shootout(Shootout),
    /// Pairs echoing through /relay/{id}: round trips per second and RTT.
    Relay(Relay),
}

impl WorkloadCommand {
    async fn run(self, targets: Option<Vec<Target>>) -> Result<()> {
        async fn go<W: Workload>(w: W, targets: Option<Vec<Target>>) -> Result<()> {
            let targets = targets.unwrap_or_else(|| vec![w.common().target]);
            drive(&w, &targets).await.map(drop)
        }
        match self {
            WorkloadCommand::Fanout(w) => go(w, targets).await,
            WorkloadCommand::Idle(w) => go(w, targets).await,
            WorkloadCommand::Shootout(w) => go(w, targets).await,
            WorkloadCommand::Relay(w) => go(w, targets).await,
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    switchboard_bench::raise_file_limit();
    match Cli::parse().command {
        Command::Workload(workload) => workload.run(None).await,
        Command::Compare { targets, workload } => workload.run(Some(targets)).await,
        Command::Report(options) => report::run(options).await,
        Command::Agent { spec } => agent::run(serde_json::from_str(&spec)?).await,
    }
}
