//! `switchboard-cli` end to end, as a person or a script runs it, against a live server.

mod support;

use std::process::{Output, Stdio};

use serde_json::{Value, json};
use support::{KEY, WAIT, base_url, server};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
    time::timeout,
};

const CLI: &str = env!("CARGO_BIN_EXE_switchboard-cli");

fn cli(base: &str, key: &str) -> Command {
    let mut command = Command::new(CLI);
    command.env("SWITCHBOARD_URL", base).env("SWITCHBOARD_API_KEY", key).kill_on_drop(true);
    command
}

async fn run(base: &str, args: &[&str]) -> Output {
    cli(base, KEY).args(args).output().await.expect("the CLI runs")
}

/// Runs a command that must succeed with `--json`; returns its output line as JSON.
async fn json_of(base: &str, args: &[&str]) -> Value {
    let out = run(base, &[&["--json"], args].concat()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
}

#[tokio::test]
async fn listen_prints_each_message_as_a_json_line() {
    let server = server().await;
    let base = base_url(&server);
    let dora = json_of(&base, &["register", "dora"]).await;
    let id = dora["id"].as_str().unwrap();

    let mut listener = cli(&base, KEY)
        .args(["listen", id, "--topic", "news", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut status = BufReader::new(listener.stderr.take().unwrap()).lines();
    let connected = timeout(WAIT, status.next_line()).await.unwrap().unwrap().unwrap();
    assert_eq!(serde_json::from_str::<Value>(&connected).unwrap()["type"], "connected");

    let published = json_of(&base, &["publish", "news", r#"{"n":1}"#]).await;
    assert_eq!((&published["recipients"], &published["offset"]), (&json!(1), &json!(1)));
    let epoch = published["epoch"].as_str().expect("the topic's epoch").to_owned();
    assert_eq!(
        json_of(&base, &["broadcast", "plain text", "--id", id]).await,
        json!({"recipients": 1})
    );
    let mut lines = BufReader::new(listener.stdout.take().unwrap()).lines();
    let mut received = Vec::new();
    for _ in 0..2 {
        let line = timeout(WAIT, lines.next_line()).await.unwrap().unwrap().unwrap();
        received.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    assert_eq!(
        received,
        [
            json!({"type": "message", "topic": "news", "from": null, "data": {"n": 1},
                   "offset": 1, "epoch": epoch}),
            json!({"type": "message", "topic": null, "from": "dora", "data": "plain text"}),
        ]
    );

    let history = json_of(&base, &["history", "news", "--epoch", &epoch]).await;
    assert_eq!((&history["complete"], &history["offset"]), (&json!(true), &json!(1)));
    assert_eq!(history["messages"], json!([{"offset": 1, "data": {"n": 1}}]));

    // Unregistered: the listener says so and exits non-zero instead of reconnecting.
    let gone = json_of(&base, &["unregister", id]).await;
    assert_eq!(gone["closed_connections"], 1);
    let exit = timeout(WAIT, listener.wait()).await.expect("listen exits").unwrap();
    assert!(!exit.success());
    let closed = timeout(WAIT, status.next_line()).await.unwrap().unwrap().unwrap();
    assert_eq!(serde_json::from_str::<Value>(&closed).unwrap()["code"], 4001);
}

#[tokio::test]
async fn every_operation_and_readable_output() {
    let server = server().await;
    let base = base_url(&server);
    let out = run(&base, &["register", "erin"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.starts_with("registered erin\n  id: "), "{text}");
    let id = text.lines().nth(1).unwrap().trim_start_matches("  id: ").to_owned();

    assert_eq!(
        json_of(&base, &["create-topic", "sports"]).await,
        json!({"name": "sports", "subscribers": 0})
    );
    assert_eq!(
        json_of(&base, &["subscribe", &id, "sports"]).await,
        json!({"subscribed": ["sports"]})
    );
    let topics = json_of(&base, &["topics"]).await;
    assert_eq!(
        topics,
        json!([{"name": "news", "subscribers": 0}, {"name": "sports", "subscribers": 1}])
    );
    let out = run(&base, &["topics"]).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "news\t0 subscriber(s)\nsports\t1 subscriber(s)\n"
    );
    assert_eq!(
        json_of(&base, &["unsubscribe", &id, "sports"]).await,
        json!({"unsubscribed": ["sports"]})
    );
    assert_eq!(json_of(&base, &["stats"]).await["connections"], 0);
    assert_eq!(json_of(&base, &["delete-topic", "sports"]).await, json!({"name": "sports"}));
    assert_eq!(json_of(&base, &["unregister", &id]).await["closed_connections"], 0);
}

#[tokio::test]
async fn errors_print_the_servers_message_and_exit_non_zero() {
    let server = server().await;
    let base = base_url(&server);
    let out = cli(&base, "wrong-key").args(["register", "fred"]).output().await.unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim(), "error: invalid API key (forbidden)");
    assert!(out.stdout.is_empty());

    let out = run(&base, &["publish", "nope", "1"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("topic `nope` does not exist"));
}

#[tokio::test]
async fn relay_pairs_two_terminals() {
    let server = server().await;
    let base = base_url(&server);
    let spawn = || {
        cli(&base, KEY)
            .args(["relay", "pair-1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut first = spawn();
    let mut first_out = BufReader::new(first.stdout.take().unwrap()).lines();
    let waiting = timeout(WAIT, first_out.next_line()).await.unwrap().unwrap().unwrap();
    assert_eq!(waiting, "/status:waiting");
    let mut second = spawn();
    let mut second_out = BufReader::new(second.stdout.take().unwrap()).lines();
    assert_eq!(
        timeout(WAIT, second_out.next_line()).await.unwrap().unwrap().unwrap(),
        "/status:connected"
    );

    use tokio::io::AsyncWriteExt;
    let mut second_in = second.stdin.take().unwrap();
    second_in.write_all(b"hello over the relay\n").await.unwrap();
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l == "hello over the relay") {
        seen.push(timeout(WAIT, first_out.next_line()).await.unwrap().unwrap().unwrap());
    }
    // End of input leaves the pair; the partner hears it.
    drop(second_in);
    assert!(timeout(WAIT, second.wait()).await.unwrap().unwrap().success());
    while !seen.iter().any(|l| l == "/remote:close") {
        seen.push(timeout(WAIT, first_out.next_line()).await.unwrap().unwrap().unwrap());
    }
    first.kill().await.unwrap();
}
