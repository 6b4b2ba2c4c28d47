//! A real Switchboard (the server crate, in-process) on a free loopback port for the client's
//! tests, and a loopback TCP proxy whose connections a test can cut.
#![allow(dead_code)] // each test binary uses a different part

use std::{sync::Arc, time::Duration};

use switchboard::{Config, Running};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Notify,
};

pub const KEY: &str = "client-test-key";
pub const WAIT: Duration = Duration::from_secs(10);

/// A server with API key [`KEY`] and topic `news`; shut down when dropped.
pub async fn server() -> Running {
    let mut config = Config::ephemeral();
    config.api_keys = vec![KEY.into()];
    config.topics = vec!["news".into()];
    switchboard::start(config).await.expect("the server starts")
}

pub fn base_url(server: &Running) -> String {
    format!("http://{}", server.local_addr)
}

/// Forwards every connection on its own port to `target`; [`Proxy::cut`] drops the ones
/// open now (as a network failure would) and keeps accepting new ones.
pub struct Proxy {
    pub port: u16,
    cut: Arc<Notify>,
}

impl Proxy {
    pub async fn start(target: std::net::SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(Notify::new());
        let cuts = cut.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let Ok(mut outbound) = TcpStream::connect(target).await else { continue };
                let cuts = cuts.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cuts.notified() => {}
                    }
                });
            }
        });
        Proxy { port, cut }
    }

    /// Drops every connection open through the proxy.
    pub fn cut(&self) {
        self.cut.notify_waiters();
    }
}
