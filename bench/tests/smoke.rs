//! A short `fanout` run of the real harness binary (its agents and publisher) against a
//! Switchboard started in this process: 200 subscribers, 2 s of publishes, nothing lost.

use std::process::Command;

use switchboard::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_smoke_run_loses_nothing() {
    let mut config = Config::ephemeral();
    config.api_keys = vec![switchboard_bench::target::API_KEY.into()];
    config.topics = vec![switchboard_bench::target::TOPIC.into()];
    let server = switchboard::start(config).await.expect("server starts");
    let url = format!("http://{}", server.local_addr);
    let json = std::env::temp_dir().join(format!("fanout-smoke-{}.json", std::process::id()));
    let chart = json.with_extension("svg");

    let bench = env!("CARGO_BIN_EXE_switchboard-bench");
    let (url, pid, json_arg, chart_arg) = (
        url.clone(),
        std::process::id().to_string(),
        json.display().to_string(),
        chart.display().to_string(),
    );
    let output = tokio::task::spawn_blocking(move || {
        Command::new(bench)
            .args(["fanout", "--quiet", "--clients", "200", "--seconds", "2", "--rate", "25"])
            .args(["--url", &url, "--pid", &pid, "--json", &json_arg, "--chart", &chart_arg])
            .output()
    })
    .await
    .expect("joined")
    .expect("the harness runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "harness failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("deliveries/s"), "a table is printed:\n{stdout}");

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("JSON written")).expect("JSON");
    let result = &report["results"][0];
    assert_eq!(report["workload"], "fanout");
    assert_eq!(result["clients"], 200);
    assert_eq!(result["published"], 50);
    assert_eq!(result["expected"], 10_000);
    assert_eq!(result["deliveries"], 10_000, "{result}");
    assert_eq!(result["lost"], 0, "{result}");
    assert_eq!(result["duplicates"], 0, "{result}");
    let p99 = result["latency"]["p99_ms"].as_f64().expect("p99");
    assert!(p99 > 0.0 && p99 < 2_000.0, "p99 {p99} ms");
    assert!(result["server_cpu_us_per_delivery"].as_f64().is_some_and(|cpu| cpu > 0.0));
    let svg = std::fs::read_to_string(&chart).expect("chart written");
    assert!(svg.starts_with("<svg") && svg.contains("server CPU"), "an SVG chart");

    let _ = std::fs::remove_file(&json);
    let _ = std::fs::remove_file(&chart);
    server.shutdown().await.expect("shuts down");
}
