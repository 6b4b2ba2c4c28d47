//! A private `redis-server` on a free loopback port, stopped (by its PID) when dropped.

use std::{process::Stdio, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    process::{Child, Command},
    time::{Instant, sleep},
};

/// The child is killed when this is dropped (`kill_on_drop`), also when a test panics.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server with no persistence on a free port.
    pub async fn start() -> Self {
        for _ in 0..5 {
            let port = super::free_port().await;
            if let Some(server) = Self::start_on(port).await {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// Starts a server on `port`; None if it exits (the port was taken meanwhile).
    async fn start_on(port: u16) -> Option<Self> {
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|err| {
                panic!("cannot run redis-server ({err}); install it: apt-get install redis-server")
            });
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return None;
            }
            if ping(port).await {
                return Some(RedisServer { port, child: Some(child) });
            }
            sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill().await;
        None
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (SIGKILL: an outage, not a shutdown) and waits for it to exit.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("redis-server is killed");
        }
    }

    /// Starts a new, empty server on the same port.
    pub async fn restart(&mut self) {
        self.kill().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(server) = Self::start_on(self.port).await {
                self.child = server.child;
                return;
            }
            assert!(Instant::now() < deadline, "redis-server restarts on port {}", self.port);
            sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Whether a Redis answers PING on the port.
async fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").await.is_ok()
        && tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut reply))
            .await
            .is_ok_and(|read| read.is_ok())
        && &reply == b"+PONG\r\n"
}
