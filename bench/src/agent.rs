//! A client process: holds a share of a run's WebSocket subscribers and reports what they
//! received. The harness starts several (one process may hold only ~20,000 files here) and
//! talks to each over stdin/stdout, one JSON line per command and per reply.

use std::{
    net::{Ipv4Addr, SocketAddr},
    os::fd::AsFd,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpSocket,
    task::JoinSet,
};
use tokio_tungstenite::{
    WebSocketStream, client_async_with_config,
    tungstenite::{Message, protocol::WebSocketConfig},
};

use crate::{
    receiver::{Log, Receiver},
    target::{API_KEY, TOPIC, Target},
};

/// What an agent is started with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentSpec {
    pub target: Target,
    /// Base URLs of the nodes; clients are spread over them round-robin.
    pub urls: Vec<String>,
    /// This agent's number: its sockets come from 127.0.0.(2 + index), so that several agents
    /// are not limited to one source address's ~28,000 ports per server.
    pub index: usize,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Command {
    /// Connect this many more subscribers.
    Connect { count: usize },
    /// Wait until every subscriber has every sequence in `from..to` (or the timeout), report
    /// and forget those receipts.
    Collect { from: u64, to: u64, timeout_ms: u64 },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    Progress { connected: usize },
    Connected { total: usize, error: Option<String> },
    Collected(Receipts),
}

/// What subscribers received of a range of sequences.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Receipts {
    pub clients: u64,
    pub deliveries: u64,
    pub lost: u64,
    pub duplicates: u64,
    /// Publish-to-receive time of every delivery.
    pub latencies_us: Vec<u64>,
    /// Per sequence of the range: when the last subscriber had it (µs after publish), or
    /// `u64::MAX` if some subscriber never did.
    pub all_have_it_us: Vec<u64>,
    /// Receive time (µs since the epoch) of the latest delivery.
    pub last_receive_us: u64,
}

impl Receipts {
    /// Adds another agent's receipts of the same range.
    pub fn merge(&mut self, other: Receipts) {
        self.clients += other.clients;
        self.deliveries += other.deliveries;
        self.lost += other.lost;
        self.duplicates += other.duplicates;
        self.latencies_us.extend(other.latencies_us);
        if self.all_have_it_us.is_empty() {
            self.all_have_it_us = other.all_have_it_us;
        } else {
            for (mine, theirs) in self.all_have_it_us.iter_mut().zip(other.all_have_it_us) {
                *mine = (*mine).max(theirs);
            }
        }
        self.last_receive_us = self.last_receive_us.max(other.last_receive_us);
    }
}

type Socket = WebSocketStream<tokio::net::TcpStream>;

struct Agent {
    spec: AgentSpec,
    http: reqwest::Client,
    logs: Vec<Arc<Log>>,
    received: Arc<AtomicU64>,
    receiver: Receiver,
}

/// Runs an agent: commands from stdin, replies to stdout, until stdin ends.
pub async fn run(spec: AgentSpec) -> Result<()> {
    crate::raise_file_limit();
    let received = Arc::new(AtomicU64::new(0));
    let mut agent = Agent {
        spec,
        http: crate::http_client()?,
        logs: Vec::new(),
        receiver: Receiver::start(received.clone())?,
        received,
    };
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    while let Some(line) = lines.next_line().await? {
        match serde_json::from_str::<Command>(&line).context("bad command")? {
            Command::Connect { count } => {
                let error = agent.connect(count, &mut out).await.err().map(|e| format!("{e:#}"));
                let total = agent.logs.len();
                reply(&mut out, &Reply::Connected { total, error }).await?;
            }
            Command::Collect { from, to, timeout_ms } => {
                let receipts = agent.collect(from, to, Duration::from_millis(timeout_ms)).await;
                reply(&mut out, &Reply::Collected(receipts)).await?;
            }
        }
    }
    drop(agent);
    Ok(())
}

async fn reply(out: &mut tokio::io::Stdout, reply: &Reply) -> Result<()> {
    let mut line = serde_json::to_vec(reply)?;
    line.push(b'\n');
    out.write_all(&line).await?;
    out.flush().await?;
    Ok(())
}

/// Connections opened at once by one agent.
const CONNECT_CONCURRENCY: usize = 64;

impl Agent {
    async fn connect(&mut self, count: usize, out: &mut tokio::io::Stdout) -> Result<()> {
        let first = self.logs.len();
        let mut pending = JoinSet::new();
        let mut next = first;
        let end = first + count;
        let mut last_report = first;
        while next < end || !pending.is_empty() {
            while next < end && pending.len() < CONNECT_CONCURRENCY {
                let (spec, http) = (self.spec.clone(), self.http.clone());
                let index = next;
                pending.spawn(async move { (index, subscriber(&spec, &http, index).await) });
                next += 1;
            }
            let Some(joined) = pending.join_next().await else { break };
            let (_, socket) = joined?;
            let socket = match socket {
                Ok(socket) => socket,
                Err(error) => {
                    pending.abort_all();
                    return Err(error.context(format!("after {} connections", self.logs.len())));
                }
            };
            let log = Arc::new(Log::default());
            self.logs.push(log.clone());
            // The receiver reads a duplicate of the socket; dropping tungstenite's closes only
            // the original descriptor. Nothing is buffered in it: the server sends nothing
            // after the subscribe ack (or, for a peer, after the handshake) until a publish.
            let socket = std::net::TcpStream::from(socket.get_ref().as_fd().try_clone_to_owned()?);
            self.receiver.add(socket, log)?;
            if self.logs.len() - last_report >= 500 {
                last_report = self.logs.len();
                reply(out, &Reply::Progress { connected: last_report }).await?;
            }
        }
        Ok(())
    }

    async fn collect(&mut self, from: u64, to: u64, timeout: Duration) -> Receipts {
        let range = to.saturating_sub(from);
        let wanted = range * self.logs.len() as u64;
        let deadline = tokio::time::Instant::now() + timeout;
        let received = || self.received.load(Ordering::Relaxed);
        while received() < wanted && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Late duplicates are counted too.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut receipts = Receipts {
            clients: self.logs.len() as u64,
            all_have_it_us: vec![0; range as usize],
            ..Receipts::default()
        };
        let mut seen = vec![0u32; range as usize];
        for log in &self.logs {
            let mine: Vec<_> = {
                let mut all = log.receipts.lock();
                let (mine, rest) = all.drain(..).partition(|(seq, _, _)| (from..to).contains(seq));
                *all = rest;
                mine
            };
            seen.iter_mut().for_each(|n| *n = 0);
            for (seq, latency, at) in mine {
                let slot = (seq - from) as usize;
                seen[slot] += 1;
                receipts.deliveries += 1;
                receipts.latencies_us.push(latency);
                receipts.last_receive_us = receipts.last_receive_us.max(at);
                let last = &mut receipts.all_have_it_us[slot];
                *last = (*last).max(latency);
            }
            for (slot, &count) in seen.iter().enumerate() {
                if count == 0 {
                    receipts.lost += 1;
                    receipts.all_have_it_us[slot] = u64::MAX;
                }
                receipts.duplicates += u64::from(count.saturating_sub(1));
            }
        }
        self.received.fetch_sub(receipts.deliveries.min(received()), Ordering::Relaxed);
        receipts
    }
}

/// Opens subscriber `index`: for Switchboard, register, connect, subscribe over the socket
/// and wait for the ack; for a peer, connect to its topic URL.
async fn subscriber(spec: &AgentSpec, http: &reqwest::Client, index: usize) -> Result<Socket> {
    let base = &spec.urls[index % spec.urls.len()];
    let source = Ipv4Addr::new(127, 0, 0, 2 + (spec.index % 250) as u8);
    if spec.target != Target::Switchboard {
        return open(&spec.target.subscribe_url(base), source).await;
    }
    let registered: serde_json::Value = http
        .post(format!("{base}/register"))
        .header("X-Api-Key", API_KEY)
        .json(&serde_json::json!({}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let ws_url = registered["ws_url"].as_str().context("register: no ws_url")?;
    let mut socket = open(ws_url, source).await?;
    next_text(&mut socket).await.context("no welcome")?;
    let subscribe = serde_json::json!({"type": "subscribe", "topics": [TOPIC], "ref": 1});
    socket.send(Message::text(subscribe.to_string())).await?;
    let ack = next_text(&mut socket).await?;
    if !ack.contains(r#""type":"ack""#) {
        bail!("subscribe answered {ack}");
    }
    Ok(socket)
}

async fn next_text(socket: &mut Socket) -> Result<String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return Ok(text.to_string()),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(other) => bail!("expected a text frame, got {other:?}"),
            Err(_) => bail!("no frame within 10 s"),
        }
    }
}

/// A WebSocket to `url` (`ws://<ip>:<port>/...`) from `source`.
async fn open(url: &str, source: Ipv4Addr) -> Result<Socket> {
    let address: SocketAddr = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| anyhow!("not a ws:// URL: {url}"))?
        .parse()
        .with_context(|| format!("not an ip:port URL: {url}"))?;
    let socket = TcpSocket::new_v4()?;
    // Ports of an earlier run's sockets may still be in TIME_WAIT: they may be reused.
    socket.set_reuseaddr(true)?;
    bind_address_no_port(&socket)?;
    socket.bind(SocketAddr::from((source, 0)))?;
    let stream = socket.connect(address).await.with_context(|| format!("connect {address}"))?;
    stream.set_nodelay(true)?;
    // Small buffers: the agents hold tens of thousands of sockets too.
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let (socket, _) = client_async_with_config(url, stream, Some(config)).await?;
    Ok(socket)
}

/// Binding to port 0 would take a port for this source address at `bind`, for any destination
/// and not shared with a TIME_WAIT socket: a run after a run of 19,000 sockets from the same
/// address then ran out of ports. With this option `connect` picks the port for the whole
/// address quadruple, and may reuse one in TIME_WAIT on loopback (`tcp_tw_reuse`).
fn bind_address_no_port(socket: &TcpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let enable: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and a c_int option of the given length.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const enable).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}
