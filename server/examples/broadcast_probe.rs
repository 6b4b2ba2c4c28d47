//! A quick hand measurement of fan-out against running servers: registers N clients, connects
//! them, sends M broadcasts (or topic publishes) at a set rate and prints what it measured
//! (deliveries/s, loss, latency from a timestamp in each payload, per node; given the servers'
//! PIDs, their CPU time and memory per connection from /proc; given the Redis URL, the Redis
//! commands per message). The full benchmark harness is a later issue.
//!
//! cargo run --release --example broadcast_probe -- --key K --clients 1000 --messages 200
//!
//! A cluster: repeat `--url` (clients are spread over the nodes round-robin; messages are sent
//! to the first), `--server-pid`, and add `--redis-url`.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use clap::Parser;
use futures_util::StreamExt;
use serde_json::json;
use switchboard_protocol::ServerEvent;
use tokio::sync::Mutex;
use tokio_tungstenite::{connect_async, tungstenite::Message};

#[derive(Parser)]
struct Args {
    /// A node's base URL (repeatable).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: Vec<String>,
    #[arg(long)]
    key: String,
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    #[arg(long, default_value_t = 200)]
    messages: usize,
    /// Messages per second.
    #[arg(long, default_value_t = 50)]
    rate: u32,
    /// Subscribe every client to this (existing) topic and publish to it instead of
    /// broadcasting.
    #[arg(long)]
    topic: Option<String>,
    /// Server PIDs (repeatable), to read CPU time and RSS from /proc.
    #[arg(long)]
    server_pid: Vec<u32>,
    /// The cluster's Redis, to count the commands it served per message (INFO commandstats).
    #[arg(long)]
    redis_url: Option<String>,
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// (CPU seconds, RSS KiB) of the processes together.
fn proc_usage(pids: &[u32]) -> Option<(f64, u64)> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().try_fold((0.0, 0), |(cpu, rss), &pid| {
        let (more_cpu, more_rss) = one_proc_usage(pid)?;
        Some((cpu + more_cpu, rss + more_rss))
    })
}

fn one_proc_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((ticks as f64 / 100.0, rss))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let http = reqwest::Client::new();
    let before_connect = proc_usage(&args.server_pid);

    let mut sockets = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let node = i % args.url.len();
        let url = &args.url[node];
        let body: serde_json::Value = http
            .post(format!("{url}/register"))
            .header("X-Api-Key", &args.key)
            .json(&json!({}))
            .send()
            .await?
            .json()
            .await?;
        let ws_url = body["ws_url"].as_str().ok_or("no ws_url")?.to_owned();
        let (mut ws, _) = connect_async(ws_url).await?;
        ws.next().await.ok_or("no welcome")??;
        if let Some(topic) = &args.topic {
            let response = http
                .post(format!("{url}/subscribe"))
                .json(&json!({"id": body["id"], "topics": [topic]}))
                .send()
                .await?;
            if !response.status().is_success() {
                return Err(format!("subscribe answered {}", response.status()).into());
            }
        }
        sockets.push((node, ws));
    }
    let after_connect = proc_usage(&args.server_pid);
    println!("connected {} clients over {} node(s)", args.clients, args.url.len());

    // Latencies per node the receiving client is on.
    let latencies: Vec<_> = (0..args.url.len()).map(|_| Arc::new(Mutex::new(Vec::new()))).collect();
    let mut readers = Vec::new();
    for (node, mut ws) in sockets {
        let latencies = latencies[node].clone();
        let expected = args.messages;
        readers.push(tokio::spawn(async move {
            let mut seen = vec![0u32; expected];
            let mut mine = Vec::with_capacity(expected);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while mine.len() < expected {
                // Pings (and pongs) are answered by tungstenite; only the end of the socket or
                // the deadline stops the count.
                let text = match tokio::time::timeout_at(deadline, ws.next()).await {
                    Ok(Some(Ok(Message::Text(text)))) => text,
                    Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                    _ => break,
                };
                if let Ok(ServerEvent::Message { data, .. }) = ServerEvent::parse(&text) {
                    let (seq, sent) = (
                        data["seq"].as_u64().unwrap_or(0) as usize,
                        data["sent_us"].as_u64().unwrap_or(0),
                    );
                    if let Some(count) = seen.get_mut(seq) {
                        *count += 1;
                    }
                    mine.push(now_us().saturating_sub(sent));
                }
            }
            latencies.lock().await.extend(mine);
            let duplicates: u32 = seen.iter().map(|&n| n.saturating_sub(1)).sum();
            let lost = seen.iter().filter(|&&n| n == 0).count();
            (lost, duplicates, ws)
        }));
    }

    let redis_before = redis_commands(args.redis_url.as_deref()).await?;
    let cpu_before = proc_usage(&args.server_pid);
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate)));
    let padding = "x".repeat(40);
    let endpoint = match &args.topic {
        Some(topic) => format!("{}/topics/{topic}/publish", args.url[0]),
        None => format!("{}/broadcast", args.url[0]),
    };
    for seq in 0..args.messages {
        tick.tick().await;
        let response = http
            .post(&endpoint)
            .header("X-Api-Key", &args.key)
            .json(&json!({"message": {"seq": seq, "sent_us": now_us(), "pad": padding}}))
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(format!("{endpoint} answered {}", response.status()).into());
        }
    }
    let redis_after = redis_commands(args.redis_url.as_deref()).await?;
    let (mut lost, mut duplicates) = (0, 0);
    let mut keep = Vec::new();
    for reader in readers {
        let (l, d, ws) = reader.await?;
        lost += l;
        duplicates += d;
        keep.push(ws);
    }
    let elapsed = started.elapsed();
    let cpu_after = proc_usage(&args.server_pid);

    let what = if args.topic.is_some() { "publishes" } else { "broadcasts" };
    println!(
        "{what} {} at {}/s via node 0 to {} clients, payload ~{} B",
        args.messages, args.rate, args.clients, 80
    );
    let mut deliveries = 0;
    for (node, latencies) in latencies.iter().enumerate() {
        let mut latencies = latencies.lock().await.clone();
        latencies.sort_unstable();
        deliveries += latencies.len();
        let pick = |q: f64| {
            let index = ((latencies.len() as f64 - 1.0) * q) as usize;
            latencies.get(index).copied().unwrap_or(0) as f64 / 1000.0
        };
        println!(
            "node {node}: {} deliveries, latency ms p50 {:.2} p90 {:.2} p99 {:.2} max {:.2}",
            latencies.len(),
            pick(0.5),
            pick(0.9),
            pick(0.99),
            pick(1.0)
        );
    }
    println!(
        "deliveries {deliveries} in {:.2}s = {:.0}/s; lost {lost}; duplicates {duplicates}",
        elapsed.as_secs_f64(),
        deliveries as f64 / elapsed.as_secs_f64()
    );
    if let (Some(before), Some(after)) = (redis_before, redis_after) {
        let mut used: Vec<(String, u64)> = after
            .iter()
            .map(|(name, calls)| (name.clone(), calls - before.get(name).copied().unwrap_or(0)))
            .filter(|(_, calls)| *calls > 0)
            .collect();
        used.sort_by_key(|(_, calls)| std::cmp::Reverse(*calls));
        let total: u64 = used.iter().map(|(_, calls)| calls).sum();
        let per_message = total as f64 / args.messages as f64;
        println!("redis commands while sending: {total} = {per_message:.2} per message {used:?}");
    }
    if let (Some((_, rss0)), Some((_, rss1))) = (before_connect, after_connect) {
        println!(
            "server RSS {rss0} KiB -> {rss1} KiB with {} connections: {:.2} KiB/connection",
            args.clients,
            (rss1.saturating_sub(rss0)) as f64 / args.clients as f64
        );
    }
    if let (Some((cpu0, _)), Some((cpu1, _))) = (cpu_before, cpu_after) {
        let cpu = cpu1 - cpu0;
        println!(
            "server CPU {cpu:.2}s for {deliveries} deliveries = {:.2} us/delivery",
            cpu * 1e6 / deliveries.max(1) as f64
        );
    }
    drop(keep);
    Ok(())
}

/// Calls per command from Redis's INFO commandstats (one extra INFO is counted in each).
async fn redis_commands(
    url: Option<&str>,
) -> Result<Option<std::collections::HashMap<String, u64>>, Box<dyn std::error::Error>> {
    let Some(url) = url else { return Ok(None) };
    let mut conn = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await?;
    // Lines look like: cmdstat_publish:calls=200,usec=...,...
    let calls = info
        .lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats.strip_prefix("calls=")?.split(',').next()?.parse().ok()?;
            Some((name.to_owned(), calls))
        })
        .collect();
    Ok(Some(calls))
}
