//! The harness's side of the agents: starts the client processes, spreads subscribers over
//! them and merges what they report.

use std::{process::Stdio, time::Duration};

use anyhow::{Context, Result, bail};
use indicatif::ProgressBar;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout, Command},
};

use crate::{
    agent::{AgentSpec, Command as AgentCommand, Receipts, Reply},
    target::Servers,
};

/// Subscribers one agent process holds at most (the file limit here is ~20,000 per process).
pub const PER_AGENT: usize = 15_000;

struct AgentProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    connected: usize,
}

pub struct Fleet {
    agents: Vec<AgentProcess>,
}

impl Fleet {
    /// Starts `count` agents (at least enough for `clients` subscribers) against `servers`.
    pub fn spawn(servers: &Servers, clients: usize, count: Option<usize>) -> Result<Fleet> {
        let count = count.unwrap_or_else(|| clients.div_ceil(PER_AGENT)).max(1);
        let exe = std::env::current_exe()?;
        let mut agents = Vec::with_capacity(count);
        for index in 0..count {
            let spec = AgentSpec { target: servers.target, urls: servers.urls.clone(), index };
            let mut child = Command::new(&exe)
                .arg("agent")
                .arg(serde_json::to_string(&spec)?)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .context("cannot start an agent process")?;
            let stdin = child.stdin.take().context("agent stdin")?;
            let stdout = BufReader::new(child.stdout.take().context("agent stdout")?).lines();
            agents.push(AgentProcess { child, stdin, stdout, connected: 0 });
        }
        Ok(Fleet { agents })
    }

    /// Subscribers held by all agents.
    pub fn connected(&self) -> usize {
        self.agents.iter().map(|a| a.connected).sum()
    }

    /// PIDs of the agent processes.
    pub fn pids(&self) -> Vec<u32> {
        self.agents.iter().filter_map(|a| a.child.id()).collect()
    }

    /// Brings the subscriber count up to `total`, spread evenly; the progress bar counts them.
    pub async fn connect_up_to(&mut self, total: usize, progress: &ProgressBar) -> Result<()> {
        let agents = self.agents.len();
        for (index, agent) in self.agents.iter_mut().enumerate() {
            let share = total / agents + usize::from(index < total % agents);
            let count = share.saturating_sub(agent.connected);
            send(&mut agent.stdin, &AgentCommand::Connect { count }).await?;
        }
        let base = self.connected();
        let mut progress_of = vec![0; agents];
        for (index, agent) in self.agents.iter_mut().enumerate() {
            loop {
                match receive(&mut agent.stdout).await? {
                    Reply::Progress { connected } => {
                        progress_of[index] = connected - agent.connected;
                        progress.set_position((base + progress_of.iter().sum::<usize>()) as u64);
                    }
                    Reply::Connected { total, error } => {
                        progress_of[index] = total - agent.connected;
                        agent.connected = total;
                        progress.set_position((base + progress_of.iter().sum::<usize>()) as u64);
                        if let Some(error) = error {
                            bail!("agent {index}: {error}");
                        }
                        break;
                    }
                    Reply::Collected(_) => bail!("agent {index} answered out of turn"),
                }
            }
        }
        Ok(())
    }

    /// What every agent's subscribers received of `from..to`, waiting up to `timeout`.
    pub async fn collect(&mut self, from: u64, to: u64, timeout: Duration) -> Result<Receipts> {
        let timeout_ms = timeout.as_millis() as u64;
        for agent in &mut self.agents {
            send(&mut agent.stdin, &AgentCommand::Collect { from, to, timeout_ms }).await?;
        }
        let mut all = Receipts::default();
        for agent in &mut self.agents {
            match receive(&mut agent.stdout).await? {
                Reply::Collected(receipts) => all.merge(receipts),
                other => bail!("agent answered {other:?} to collect"),
            }
        }
        Ok(all)
    }
}

async fn send(stdin: &mut ChildStdin, command: &AgentCommand) -> Result<()> {
    let mut line = serde_json::to_vec(command)?;
    line.push(b'\n');
    stdin.write_all(&line).await.context("agent is gone")?;
    stdin.flush().await?;
    Ok(())
}

async fn receive(stdout: &mut Lines<BufReader<ChildStdout>>) -> Result<Reply> {
    let line = stdout.next_line().await?.context("agent exited")?;
    serde_json::from_str(&line).with_context(|| format!("agent said {line:?}"))
}
