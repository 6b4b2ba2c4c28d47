//! The servers under test: Switchboard (one node, or several on a private Redis) and its peers
//! (nginx + nchan, uWebSockets.js, node `ws`), started on loopback and stopped when dropped.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

/// The API key and topic every Switchboard node of a run is started with.
pub const API_KEY: &str = "bench";
pub const TOPIC: &str = "bench";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Switchboard,
    /// nginx with the nchan module (memory store, 2 workers).
    Nchan,
    /// uWebSockets.js (its pub/sub).
    Uws,
    /// node's `ws`.
    Ws,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Switchboard => "switchboard",
            Target::Nchan => "nchan",
            Target::Uws => "uws",
            Target::Ws => "ws",
        }
    }

    pub const ALL: [Target; 4] = [Target::Switchboard, Target::Nchan, Target::Uws, Target::Ws];

    /// Where a subscriber of [`TOPIC`] connects, for the peers (Switchboard registers first).
    pub fn subscribe_url(self, base: &str) -> String {
        format!("{}/sub/{TOPIC}", base.replacen("http://", "ws://", 1))
    }

    /// Where a message for [`TOPIC`] is posted.
    pub fn publish_url(self, base: &str) -> String {
        match self {
            Target::Switchboard => format!("{base}/topics/{TOPIC}/publish"),
            _ => format!("{base}/pub/{TOPIC}"),
        }
    }
}

/// How to start a target.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Switchboard nodes; more than one share a private redis-server.
    pub nodes: usize,
    pub switchboard_bin: PathBuf,
    /// `bench/peers`: the peers' scripts, config and node_modules.
    pub peers_dir: PathBuf,
    /// Extra arguments for every Switchboard node.
    pub switchboard_args: Vec<String>,
}

/// Running servers of one target: base URLs (one per node) and the PIDs to measure.
pub struct Servers {
    pub target: Target,
    pub urls: Vec<String>,
    pub pids: Vec<u32>,
    /// Started here, so stopped here (None for servers started by someone else).
    children: Vec<Child>,
    redis: Option<Child>,
    scratch: Option<PathBuf>,
}

impl Servers {
    /// Servers someone else started (`--url`, `--pid`).
    pub fn external(target: Target, urls: Vec<String>, pids: Vec<u32>) -> Self {
        Servers { target, urls, pids, children: Vec::new(), redis: None, scratch: None }
    }

    pub fn start(target: Target, launch: &Launch) -> Result<Self> {
        let mut servers = Servers {
            target,
            urls: Vec::new(),
            pids: Vec::new(),
            children: Vec::new(),
            redis: None,
            scratch: None,
        };
        match target {
            Target::Switchboard => servers.start_switchboard(launch)?,
            Target::Nchan => servers.start_nchan(launch)?,
            Target::Uws => servers.start_node(launch, "uws.js")?,
            Target::Ws => servers.start_node(launch, "ws.js")?,
        }
        for url in &servers.urls {
            wait_ready(&format!("{url}/ready"), &mut servers.children)?;
        }
        Ok(servers)
    }

    fn start_switchboard(&mut self, launch: &Launch) -> Result<()> {
        let mut redis_args = Vec::new();
        if launch.nodes > 1 {
            let port = free_port()?;
            let redis = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
                .args(["--appendonly", "no", "--loglevel", "warning"])
                .stdout(Stdio::null())
                .spawn()
                .context("redis-server (Debian package redis-server) is needed for --nodes > 1")?;
            self.redis = Some(redis);
            wait_for_port(port)?;
            redis_args = vec!["--redis-url".to_owned(), format!("redis://127.0.0.1:{port}/")];
        }
        for _ in 0..launch.nodes.max(1) {
            let port = free_port()?;
            let child = Command::new(&launch.switchboard_bin)
                .args(["--bind", &format!("127.0.0.1:{port}"), "--api-key", API_KEY])
                .args(["--topic", TOPIC])
                .args(&redis_args)
                .args(&launch.switchboard_args)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .with_context(|| format!("cannot start {}", launch.switchboard_bin.display()))?;
            self.pids.push(child.id());
            self.children.push(child);
            self.urls.push(format!("http://127.0.0.1:{port}"));
        }
        Ok(())
    }

    fn start_node(&mut self, launch: &Launch, script: &str) -> Result<()> {
        let modules = launch.peers_dir.join("node_modules");
        if !modules.is_dir() {
            bail!(
                "{} is missing: run `npm ci` in {}",
                modules.display(),
                launch.peers_dir.display()
            );
        }
        let port = free_port()?;
        let child = Command::new("node")
            .arg(launch.peers_dir.join(script))
            .arg(port.to_string())
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start node")?;
        self.pids.push(child.id());
        self.children.push(child);
        self.urls.push(format!("http://127.0.0.1:{port}"));
        Ok(())
    }

    fn start_nchan(&mut self, launch: &Launch) -> Result<()> {
        let port = free_port()?;
        let scratch = std::env::temp_dir().join(format!("switchboard-bench-nchan-{port}"));
        std::fs::create_dir_all(&scratch)?;
        let template = std::fs::read_to_string(launch.peers_dir.join("nchan.conf"))
            .context("bench/peers/nchan.conf")?;
        let config = template
            .replace("{port}", &port.to_string())
            .replace("{dir}", &scratch.display().to_string());
        let config_path = scratch.join("nginx.conf");
        std::fs::write(&config_path, config)?;
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&config_path)
            .arg("-p")
            .arg(&scratch)
            .stdout(Stdio::null())
            .spawn()
            .context("nginx (Debian packages nginx and libnginx-mod-nchan) is needed")?;
        self.pids.push(child.id());
        self.children.push(child);
        self.scratch = Some(scratch);
        self.urls.push(format!("http://127.0.0.1:{port}"));
        Ok(())
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for child in self.children.iter_mut().chain(self.redis.as_mut()) {
            stop(child);
        }
        if let Some(scratch) = &self.scratch {
            let _ = std::fs::remove_dir_all(scratch);
        }
    }
}

/// SIGTERM (nginx's master then stops its workers), then SIGKILL after 5 s.
fn stop(child: &mut Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_for_port(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on port {port} after 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Polls `url` until it answers 200, failing early if a started process has exited.
fn wait_ready(url: &str, children: &mut [Child]) -> Result<()> {
    let address = url.trim_start_matches("http://").split('/').next().unwrap_or_default();
    let path = &url[url.find(address).map_or(0, |at| at + address.len())..];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for child in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("a server exited at start ({status})");
            }
        }
        if http_get_ok(address, path) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url} did not answer 200 within 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A minimal blocking GET: only used before a run starts.
fn http_get_ok(address: &str, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(address) else { return false };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    let mut answer = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut answer).is_ok()
        && answer.starts_with("HTTP/1.1 200")
}

/// `bench/peers` next to this crate's sources (the harness runs from the checkout).
pub fn default_peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers")
}

/// The `switchboard` binary built next to this one (same target dir and profile).
pub fn default_switchboard_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("switchboard")))
        .unwrap_or_else(|| PathBuf::from("switchboard"))
}
