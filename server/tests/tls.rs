//! TLS: with a certificate generated here (rcgen), the port serves HTTPS and `wss://` (client
//! sockets and relay peers), `ws_url` says `wss://`; bad files stop the start with a message.

mod support;

use std::{path::PathBuf, sync::Arc};

use futures_util::{SinkExt, StreamExt};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, ServerName},
};
use serde_json::{Value, json};
use support::{KEY, TestServer, WAIT};
use switchboard::{Config, StartError};
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};
use tokio_tungstenite::{WebSocketStream, client_async, tungstenite::Message};

type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// A self-signed certificate for `localhost` written as PEM files; returns (cert, key, DER).
fn certificate(dir: &str) -> (PathBuf, PathBuf, CertificateDer<'static>) {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("a certificate is generated");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(dir);
    std::fs::create_dir_all(&dir).expect("a directory for the PEM files");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, generated.cert.pem()).expect("cert written");
    std::fs::write(&key, generated.signing_key.serialize_pem()).expect("key written");
    (cert, key, generated.cert.der().clone())
}

/// A client that trusts only `root`.
fn client_config(root: CertificateDer<'static>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(root).expect("the root is usable");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// Opens `wss://localhost:port/...` over our own TLS connection.
async fn connect_wss(url: &str, port: u16, tls: &Arc<ClientConfig>) -> Wss {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("TCP connects");
    let name = ServerName::try_from("localhost").expect("server name");
    let stream = TlsConnector::from(tls.clone()).connect(name, tcp).await.expect("TLS handshake");
    let (ws, _) = client_async(url, stream).await.expect("the WebSocket opens over TLS");
    ws
}

async fn next_text(ws: &mut Wss) -> String {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next()).await.expect("in time");
        match message.expect("open").expect("frame") {
            Message::Text(text) => return text.to_string(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn https_and_wss_serve_the_api_client_sockets_and_the_relay() {
    let (cert, key, root) = certificate("tls-ok");
    let server = TestServer::start_with(|config| {
        config.tls_cert = Some(cert);
        config.tls_key = Some(key);
    })
    .await;
    let port = server.running.as_ref().expect("running").local_addr.port();
    let base = format!("https://localhost:{port}");
    let tls = client_config(root);
    let https = reqwest::Client::builder()
        .use_preconfigured_tls((*tls).clone())
        .build()
        .expect("an HTTPS client");

    let register = https
        .post(format!("{base}/register"))
        .header("X-Api-Key", KEY)
        .json(&json!({"name": "secure"}))
        .send()
        .await
        .expect("HTTPS answers");
    assert_eq!(register.status(), 201);
    let registered: Value = register.json().await.expect("JSON");
    let ws_url = registered["ws_url"].as_str().expect("ws_url");
    assert!(ws_url.starts_with(&format!("wss://localhost:{port}/ws/")), "{ws_url}");

    let mut ws = connect_wss(ws_url, port, &tls).await;
    assert!(next_text(&mut ws).await.contains("\"welcome\""));
    let broadcast = https
        .post(format!("{base}/broadcast"))
        .header("X-Api-Key", KEY)
        .json(&json!({"message": "over tls"}))
        .send()
        .await
        .expect("HTTPS answers");
    assert_eq!(broadcast.status(), 200);
    assert!(next_text(&mut ws).await.contains("over tls"));

    let relay_url = format!("wss://localhost:{port}/relay/secure-room");
    let mut first = connect_wss(&relay_url, port, &tls).await;
    assert_eq!(next_text(&mut first).await, "/status:waiting");
    let mut second = connect_wss(&relay_url, port, &tls).await;
    assert_eq!(next_text(&mut second).await, "/status:connected");
    assert_eq!(next_text(&mut first).await, "/remote:open");
    assert_eq!(next_text(&mut first).await, "/status:connected");
    second.send(Message::text("offer")).await.expect("send");
    assert_eq!(next_text(&mut first).await, "offer");

    // Plain HTTP on the TLS port gets no API answer.
    let plain = support::http_client().get(format!("http://127.0.0.1:{port}/health")).send().await;
    assert!(plain.is_err() || plain.is_ok_and(|response| response.status() != 200));
}

async fn start_error(cert: PathBuf, key: PathBuf) -> String {
    let mut config = Config::ephemeral();
    config.tls_cert = Some(cert);
    config.tls_key = Some(key);
    match switchboard::start(config).await {
        Err(err @ StartError::Tls(_)) => err.to_string(),
        Err(other) => panic!("expected a TLS error, got {other}"),
        Ok(_) => panic!("the server started with bad TLS files"),
    }
}

#[tokio::test]
async fn bad_certificate_files_fail_the_start_with_a_message() {
    let (cert, key, _) = certificate("tls-bad");
    let missing = PathBuf::from("/nonexistent/cert.pem");
    let message = start_error(missing, key.clone()).await;
    assert!(message.contains("cannot read --tls-cert /nonexistent/cert.pem"), "{message}");
    let message = start_error(cert.clone(), PathBuf::from("/nonexistent/key.pem")).await;
    assert!(message.contains("cannot read --tls-key /nonexistent/key.pem"), "{message}");

    let junk = cert.with_file_name("junk.pem");
    std::fs::write(&junk, "not a certificate\n").expect("junk written");
    let message = start_error(junk.clone(), key.clone()).await;
    assert!(message.contains("no PEM certificate in --tls-cert"), "{message}");
    let message = start_error(cert.clone(), junk).await;
    assert!(message.contains("no PEM private key"), "{message}");
    // The key of the certificate is swapped for another one.
    let (_, other_key, _) = certificate("tls-other");
    let message = start_error(cert, other_key).await;
    assert!(message.contains("do not make a usable pair"), "{message}");
}
