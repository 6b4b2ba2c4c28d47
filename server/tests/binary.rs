//! The `switchboard` binary itself: flags, the generated API key, JSON logs that never contain a
//! client id, and SIGTERM closing sockets with 1001 before a clean exit.

mod support;

use std::{process::Stdio, time::Duration};

use serde_json::{Value, json};
use support::{close_code, next_event};
use switchboard_protocol::ServerEvent;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::mpsc,
};

const BINARY: &str = env!("CARGO_BIN_EXE_switchboard");

/// A running binary, its log lines so far and to come, and its base URL.
struct Spawned {
    child: Child,
    early_logs: Vec<Value>,
    logs: mpsc::UnboundedReceiver<Value>,
    base: String,
}

/// Starts the binary on a free port with JSON logs and waits for it to log its address.
async fn spawn(args: &[&str]) -> Spawned {
    let mut child = Command::new(BINARY)
        .args(["--bind", "127.0.0.1:0", "--log-format", "json"])
        .args(args)
        .env("RUST_LOG", "info,switchboard=debug")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (sender, mut logs) = mpsc::unbounded_channel::<Value>();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let value =
                serde_json::from_str(&line).unwrap_or_else(|_| panic!("JSON log line: {line}"));
            if sender.send(value).is_err() {
                break;
            }
        }
    });
    let mut early_logs = Vec::new();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(10), logs.recv())
            .await
            .expect("the server logs its address in time")
            .expect("the server is running");
        let addr = line["fields"]["local_addr"].as_str().map(str::to_owned);
        early_logs.push(line);
        if let Some(addr) = addr {
            return Spawned { child, early_logs, logs, base: format!("http://{addr}") };
        }
    }
}

fn drain(logs: &mut mpsc::UnboundedReceiver<Value>) -> Vec<Value> {
    std::iter::from_fn(|| logs.try_recv().ok()).collect()
}

#[tokio::test]
async fn generated_key_sigterm_and_logs_without_ids() {
    let Spawned { mut child, early_logs: early, mut logs, base } =
        spawn(&["--topic", "news"]).await;
    let key_lines: Vec<&Value> = early
        .iter()
        .filter(|line| {
            line["fields"]["message"].as_str().unwrap_or("").contains("generated API key")
        })
        .collect();
    assert_eq!(key_lines.len(), 1, "the generated key is logged once: {early:?}");
    let message = key_lines[0]["fields"]["message"].as_str().unwrap();
    let key = message.rsplit(' ').next().unwrap().to_owned();
    assert!(early.iter().any(|l| l["fields"]["message"] == "store: in-memory (single node)"));

    let http = support::http_client();
    let registered: Value = http
        .post(format!("{base}/register"))
        .header("X-Api-Key", &key)
        .json(&json!({"name": "alice"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = registered["id"].as_str().unwrap().to_owned();
    let ws_url = registered["ws_url"].as_str().unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    assert!(matches!(next_event(&mut ws).await, ServerEvent::Welcome { .. }));
    http.post(format!("{base}/subscribe"))
        .json(&json!({"id": id, "topics": ["news"]}))
        .send()
        .await
        .unwrap();
    http.delete(format!("{base}/register/{}", uuid::Uuid::new_v4())).send().await.unwrap();

    let pid = child.id().unwrap().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
    assert!(status.success());
    assert_eq!(close_code(&mut ws).await, Some(1001));
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "clean exit: {exit:?}");

    tokio::time::sleep(Duration::from_millis(100)).await;
    let all: Vec<String> =
        early.iter().chain(drain(&mut logs).iter()).map(Value::to_string).collect();
    assert!(all.iter().any(|l| l.contains("stopped")), "logged the stop: {all:?}");
    assert!(!all.iter().any(|l| l.contains(&id)), "a client id never reaches the logs");
}

#[tokio::test]
async fn redis_url_and_bad_flags_fail_fast_with_a_message() {
    for (args, expected) in [
        (&["--redis-url", "localhost:6379"][..], "invalid --redis-url"),
        (&["--ping-interval", "soon"][..], "invalid value 'soon'"),
        (&["--topic", "bad topic"][..], "invalid --topic"),
        (
            &["--tls-cert", "/nonexistent/c.pem", "--tls-key", "/nonexistent/k.pem"][..],
            "TLS: cannot read --tls-cert /nonexistent/c.pem",
        ),
        (&["--tls-cert", "/nonexistent/c.pem"][..], "--tls-key <TLS_KEY>"),
        (&["--path-prefix", "no-slash"][..], "invalid value 'no-slash'"),
    ] {
        let output =
            Command::new(BINARY).args(args).args(["--bind", "127.0.0.1:0"]).output().await.unwrap();
        assert!(!output.status.success(), "{args:?} fails");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let output = Command::new(BINARY).arg("--version").output().await.unwrap();
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert_eq!(version, format!("switchboard {}", env!("CARGO_PKG_VERSION")));
    let output = Command::new(BINARY).arg("--help").output().await.unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for option in ["--relay-key", "--no-relay", "--tls-cert", "--tls-key", "--path-prefix"] {
        assert!(help.contains(option), "--help lists {option}");
    }
    assert!(help.contains("[env: SWITCHBOARD_TLS_CERT=]"), "{help}");
}

/// CPU seconds the process has used so far (user + system, from /proc).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the process runs");
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

#[tokio::test]
async fn with_redis_the_log_says_so_and_an_outage_neither_kills_nor_spins_the_node() {
    let mut redis = support::redis_server::RedisServer::start().await;
    let url = redis.url();
    // `_logs` keeps the log reader alive: the node must never write into a closed pipe.
    let Spawned { mut child, early_logs, base, logs: _logs } =
        spawn(&["--redis-url", &url, "--api-key", "k", "--topic", "news"]).await;
    let store_line = early_logs
        .iter()
        .find(|l| l["fields"]["message"] == "store: redis (cluster member)")
        .unwrap_or_else(|| panic!("the store is logged: {early_logs:?}"));
    assert_eq!(store_line["fields"]["server"], format!("127.0.0.1:{}", redis.port));
    assert_eq!(store_line["fields"]["prefix"], "switchboard:");
    let http = support::http_client();
    let ready = |http: reqwest::Client, base: String| async move {
        http.get(format!("{base}/ready")).send().await.unwrap().status().as_u16()
    };
    assert_eq!(ready(http.clone(), base.clone()).await, 200);

    redis.kill().await;
    let pid = child.id().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = cpu_seconds(pid) - before;
    assert!(used < 0.3, "an idle node waiting for Redis used {used:.2} s of CPU in 3 s");
    assert_eq!(ready(http.clone(), base.clone()).await, 503);
    assert!(child.try_wait().unwrap().is_none(), "still running");

    redis.restart().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ready(http.clone(), base.clone()).await != 200 {
        assert!(tokio::time::Instant::now() < deadline, "ready again without a restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().await.unwrap();
}
