//! A quick hand measurement of broadcast fan-out against a running server: registers N clients,
//! connects them, sends M broadcasts at a set rate and prints what it measured (deliveries/s,
//! loss, latency from a timestamp in each payload, and, given the server's PID, its CPU time and
//! memory per connection from /proc). The full benchmark harness is a later issue.
//!
//! cargo run --release --example broadcast_probe -- --key K --clients 1000 --messages 200

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
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long)]
    key: String,
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    #[arg(long, default_value_t = 200)]
    messages: usize,
    /// Broadcasts per second.
    #[arg(long, default_value_t = 50)]
    rate: u32,
    /// Server PID, to read its CPU time and RSS from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// (CPU seconds, RSS KiB) of a process.
fn proc_usage(pid: Option<u32>) -> Option<(f64, u64)> {
    let pid = pid?;
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
    let before_connect = proc_usage(args.server_pid);

    let mut sockets = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        let body: serde_json::Value = http
            .post(format!("{}/register", args.url))
            .header("X-Api-Key", &args.key)
            .json(&json!({}))
            .send()
            .await?
            .json()
            .await?;
        let ws_url = body["ws_url"].as_str().ok_or("no ws_url")?.to_owned();
        let (mut ws, _) = connect_async(ws_url).await?;
        ws.next().await.ok_or("no welcome")??;
        sockets.push(ws);
    }
    let after_connect = proc_usage(args.server_pid);
    println!("connected {} clients", args.clients);

    let latencies = Arc::new(Mutex::new(Vec::with_capacity(args.clients * args.messages)));
    let mut readers = Vec::new();
    for mut ws in sockets {
        let latencies = latencies.clone();
        let expected = args.messages;
        readers.push(tokio::spawn(async move {
            let mut seen = vec![0u32; expected];
            let mut mine = Vec::with_capacity(expected);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while mine.len() < expected {
                let Ok(Some(Ok(Message::Text(text)))) =
                    tokio::time::timeout_at(deadline, ws.next()).await
                else {
                    break;
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

    let cpu_before = proc_usage(args.server_pid);
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate)));
    let padding = "x".repeat(40);
    for seq in 0..args.messages {
        tick.tick().await;
        let response = http
            .post(format!("{}/broadcast", args.url))
            .header("X-Api-Key", &args.key)
            .json(&json!({"message": {"seq": seq, "sent_us": now_us(), "pad": padding}}))
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(format!("broadcast answered {}", response.status()).into());
        }
    }
    let (mut lost, mut duplicates) = (0, 0);
    let mut keep = Vec::new();
    for reader in readers {
        let (l, d, ws) = reader.await?;
        lost += l;
        duplicates += d;
        keep.push(ws);
    }
    let elapsed = started.elapsed();
    let cpu_after = proc_usage(args.server_pid);

    let mut latencies = latencies.lock().await.clone();
    latencies.sort_unstable();
    let pick = |q: f64| {
        latencies.get(((latencies.len() as f64 - 1.0) * q) as usize).copied().unwrap_or(0) as f64
            / 1000.0
    };
    let deliveries = latencies.len();
    println!(
        "broadcasts {} at {}/s to {} clients, payload ~{} B",
        args.messages, args.rate, args.clients, 80
    );
    println!(
        "deliveries {deliveries} in {:.2}s = {:.0}/s; lost {lost}; duplicates {duplicates}",
        elapsed.as_secs_f64(),
        deliveries as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency ms p50 {:.2} p90 {:.2} p99 {:.2} max {:.2}",
        pick(0.5),
        pick(0.9),
        pick(0.99),
        pick(1.0)
    );
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
