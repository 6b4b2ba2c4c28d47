//! The test page in a real headless Chromium (Debian's, driven over WebDriver by its
//! chromedriver) against a live server: two pages register, subscribe, publish, broadcast and
//! unregister through the Wasm client, and a wrong API key is shown to the person. Screenshots
//! go to `$CARGO_TARGET_TMPDIR/browser/`.

mod support;

use std::{path::PathBuf, process::Stdio, time::Duration};

use std::sync::Arc;

use fantoccini::{Client, ClientBuilder, Locator, elements::Element};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use support::{KEY, TestServer};
use switchboard::{
    Config,
    store::{MemoryStore, Store},
};
use tokio::{
    process::{Child, Command},
    time::{Instant, sleep},
};

const CHROMIUM: &str = "/usr/bin/chromium";
const WAIT: Duration = Duration::from_secs(15);

/// A chromedriver on a free port. It runs in a process group of its own with the browsers it
/// starts; dropping it kills the whole group, so no Chromium outlives a test, even a failed one.
struct Chromedriver {
    port: u16,
    child: Child,
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let group = format!("-{pid}");
            let _ = std::process::Command::new("kill").args(["-KILL", "--", &group]).status();
        }
    }
}

impl Chromedriver {
    async fn start() -> Self {
        let port = support::free_port().await;
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver runs (apt-get install chromium-driver; ./scripts/test does)");
        let status = format!("http://127.0.0.1:{port}/status");
        let deadline = Instant::now() + WAIT;
        while !support::http_client()
            .get(&status)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(Instant::now() < deadline, "chromedriver answers on {port}");
            sleep(Duration::from_millis(50)).await;
        }
        Chromedriver { port, child }
    }

    /// A new headless Chromium with its own fresh profile, offline but for loopback.
    async fn browser(&self) -> Client {
        let options = json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-quic", "--window-size=1280,1000",
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost",
            ],
        });
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), options);
        // Keeps the console, failed requests included, for `console_errors`.
        capabilities.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a Chromium session starts")
    }
}

impl Chromedriver {
    /// The errors `browser` logged to its console since the last call (a request that failed,
    /// e.g. a 404, is one), through chromedriver's log endpoint.
    async fn console_errors(&self, browser: &Client) -> Vec<String> {
        let session = browser.session_id().await.unwrap().expect("a session id");
        let url = format!("http://127.0.0.1:{}/session/{session}/se/log", self.port);
        let body = json!({"type": "browser"});
        let response = support::http_client().post(url).json(&body).send().await;
        let logs: serde_json::Value = response.unwrap().json().await.unwrap();
        let entries = logs["value"].as_array().cloned().unwrap_or_default();
        entries
            .iter()
            .filter(|entry| entry["level"] == "SEVERE")
            .map(|entry| entry["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

/// One browser tab on the test page.
struct Page {
    name: &'static str,
    browser: Client,
}

impl Page {
    async fn open(driver: &Chromedriver, server: &TestServer, name: &'static str) -> Self {
        Page::open_at(driver, &server.url("/"), name).await
    }

    async fn open_at(driver: &Chromedriver, url: &str, name: &'static str) -> Self {
        let page = Page { name, browser: driver.browser().await };
        page.browser.goto(url).await.expect("the page loads");
        // The Wasm module has started once it listed the topics.
        page.wait_for_text("topics", "news").await;
        page
    }

    async fn element(&self, id: &str) -> Element {
        self.browser
            .find(Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("{}: #{id}: {e}", self.name))
    }

    async fn text(&self, id: &str) -> String {
        self.element(id).await.text().await.unwrap_or_default()
    }

    async fn fill(&self, id: &str, text: &str) {
        let input = self.element(id).await;
        input.clear().await.expect("clear");
        input.send_keys(text).await.expect("type");
    }

    async fn click(&self, id: &str) {
        self.element(id)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("{}: click #{id}: {e}", self.name));
    }

    /// Picks the `<select id>` option with this value.
    async fn select(&self, id: &str, value: &str) {
        let option = format!("#{id} option[value='{value}']");
        self.browser
            .find(Locator::Css(&option))
            .await
            .expect("the option exists")
            .click()
            .await
            .expect("select");
    }

    /// Waits until the element's text satisfies `check`; returns it.
    async fn wait_until(&self, id: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = self.text(id).await;
            if check(&text) {
                return text;
            }
            if Instant::now() > deadline {
                let error = self.text("error").await;
                panic!("{}: #{id} {what}; it shows {text:?} (error banner: {error:?})", self.name);
            }
            sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_for_text(&self, id: &str, wanted: &str) -> String {
        self.wait_until(id, &format!("contains {wanted:?}"), |text| text.contains(wanted)).await
    }

    async fn wait_for_state(&self, state: &str) {
        self.wait_until("state", &format!("is {state:?}"), |text| text == state).await;
    }

    async fn register(&self, key: &str, client: &str) {
        self.fill("api-key", key).await;
        self.fill("client-name", client).await;
        self.click("register").await;
    }

    async fn screenshot(&self, file: &str) -> PathBuf {
        let folder = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
        std::fs::create_dir_all(&folder).expect("output folder");
        let path = folder.join(file);
        let png = self.browser.screenshot().await.expect("screenshot");
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pages_register_subscribe_publish_broadcast_and_unregister() {
    // With a CORS allow-list that does not name the page's origin: the page is the server's own.
    // The store outlives the server, which restarts on the same address midway.
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let configure = |config: &mut Config| {
        config.cors_origins = vec!["https://app.example".into()];
        config.topics = vec!["news".into(), "sports".into()];
    };
    let server = TestServer::start_on_with(store.clone(), configure).await;
    let driver = Chromedriver::start().await;
    let alice = Page::open(&driver, &server, "alice").await;
    let bob = Page::open(&driver, &server, "bob").await;

    // A wrong key is explained on the page.
    alice.register("not-the-key", "alice").await;
    let error = alice.wait_for_text("error", "invalid API key").await;
    assert!(error.starts_with("Register failed"), "{error}");
    assert!(alice.element("error").await.is_displayed().await.unwrap(), "the banner is visible");

    for (page, name) in [(&alice, "alice"), (&bob, "bob")] {
        page.register(KEY, name).await;
        page.wait_until("client-label", "names the client", |t| t == name).await;
        let id = page.text("client-id").await;
        assert_eq!(uuid::Uuid::parse_str(&id).map(|u| u.get_version_num()), Ok(4), "{id}");
        assert!(page.text("ws-url").await.ends_with(&format!("/ws/{id}")));
        assert_eq!(page.text("error").await, "", "the earlier error is cleared");
        page.click("connect").await;
        page.wait_for_state("connected").await;
        page.click("topic-news").await;
        page.wait_until("state-detail", "lists news", |t| t == "subscribed to news").await;
    }
    bob.wait_for_text("topics", "2 subscribers").await;

    alice.select("target", "news").await;
    alice.fill("message", r#"{"headline": "hi bob"}"#).await;
    alice.click("send").await;
    let log = bob.wait_for_text("log", "hi bob").await;
    assert!(log.contains("#news") && log.contains("from alice"), "{log}");
    alice.wait_for_text("log", "hi bob").await;

    bob.select("target", "").await;
    bob.fill("message", "hello everyone").await;
    bob.click("send").await;
    for page in [&alice, &bob] {
        let log = page.wait_for_text("log", "\"hello everyone\"").await;
        assert!(log.contains("broadcast") && log.contains("from bob"), "{}: {log}", page.name);
    }
    let shot = bob.screenshot("bob-after-broadcast.png").await;
    println!("screenshot: {}", shot.display());

    // The server restarts: both pages reconnect by themselves, subscriptions intact.
    let addr = server.running.as_ref().expect("running").local_addr;
    server.shutdown().await;
    for page in [&alice, &bob] {
        let detail = page.wait_for_text("state-detail", "retrying in").await;
        assert!(detail.contains("shutting down (1001)"), "{}: {detail}", page.name);
    }
    let _server = TestServer::start_on_with(store, |config| {
        configure(config);
        config.bind = addr;
    })
    .await;
    for page in [&alice, &bob] {
        page.wait_for_state("connected").await;
        assert_eq!(page.text("state-detail").await, "subscribed to news");
    }
    alice.fill("message", "after the restart").await;
    alice.click("send").await;
    bob.wait_for_text("log", "after the restart").await;

    alice.click("unregister").await;
    alice.wait_for_state("disconnected").await;
    let detail = alice.text("state-detail").await;
    assert!(detail.contains("unregistered (4001)"), "{detail}");
    assert!(!alice.element("connect").await.is_enabled().await.unwrap(), "nothing to connect");
    alice.screenshot("alice-unregistered.png").await;
    assert_eq!(bob.text("state").await, "connected", "bob is not affected");
    let news = alice.element("topic-news").await;
    assert!(!news.is_selected().await.unwrap(), "an unregistered client has no subscriptions");

    // A phone-sized window: the layout fits without sideways scrolling.
    bob.browser.set_window_size(390, 844).await.expect("resize");
    let fits = bob
        .browser
        .execute("return document.documentElement.scrollWidth <= window.innerWidth;", vec![]);
    assert_eq!(fits.await.expect("script runs"), json!(true), "no horizontal overflow at 390 px");
    bob.screenshot("bob-narrow.png").await;

    for page in [alice, bob] {
        page.browser.close().await.expect("the browser closes");
    }
}

/// The library as a page's own JavaScript uses it (the README's example).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_library_works_from_javascript() {
    let server = TestServer::start().await;
    let driver = Chromedriver::start().await;
    let page = Page::open(&driver, &server, "script").await;
    let script = r#"
        const [key, done] = arguments;
        const lib = await import("/assets/switchboard_wasm_client.js");
        await lib.default({ module_or_path: "/assets/switchboard_wasm_client_bg.wasm" });
        const seen = { states: [], messages: [] };
        const client = new lib.SwitchboardClient(location.origin);
        try {
            await client.register("wrong", "carol");
        } catch (err) {
            seen.wrongKey = String(err.message);
        }
        const registered = await client.register(key, "carol");
        seen.name = registered.name;
        client.onState((state) => seen.states.push(state));
        const received = new Promise((resolve) => client.onMessage((topic, from, data) => {
            seen.messages.push({ topic, from, data });
            if (seen.messages.length === 2) resolve();
        }));
        seen.welcomeTopics = await client.connect();
        try {
            await client.subscribe(["nope"]);
        } catch (err) {
            seen.missingTopic = String(err.message);
        }
        await client.subscribe(["sports"]);
        await client.publish("sports", { score: [2, 1] });
        await client.broadcast(null);
        await received;
        seen.topics = (await client.topics()).map((t) => `${t.name}:${t.subscribers}`);
        seen.unregistered = (await client.unregister()).closed_connections;
        client.close();
        seen.finalState = client.state;
        done(seen);
    "#;
    let seen = page
        .browser
        .execute_async(script, vec![json!(KEY)])
        .await
        .expect("the script runs to the end");
    assert_eq!(seen["name"], "carol");
    assert!(seen["wrongKey"].as_str().unwrap().contains("invalid API key"), "{seen}");
    assert!(seen["missingTopic"].as_str().unwrap().contains("topic_not_found"), "{seen}");
    assert_eq!(seen["states"], json!(["connecting", "connected", "disconnected"]), "{seen}");
    assert_eq!(seen["welcomeTopics"], json!([]), "connect() resolves with the subscriptions");
    assert_eq!(
        seen["messages"],
        json!([
            {"topic": "sports", "from": "carol", "data": {"score": [2, 1]}},
            {"topic": null, "from": "carol", "data": null},
        ])
    );
    assert_eq!(seen["topics"], json!(["news:0", "sports:1"]));
    assert_eq!(seen["unregistered"], 1);
    assert_eq!(seen["finalState"], "disconnected");
    page.browser.close().await.expect("the browser closes");
}

/// Under `--path-prefix` the page (opened without the trailing slash) finds its assets, the API
/// and its WebSocket under the prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_works_under_a_path_prefix() {
    let server = TestServer::start_with(|config| config.path_prefix = "/push/v1".into()).await;
    let driver = Chromedriver::start().await;
    let page = Page::open_at(&driver, &server.url("/push/v1"), "prefixed").await;
    page.register(KEY, "dora").await;
    page.wait_until("client-label", "names the client", |t| t == "dora").await;
    assert!(page.text("ws-url").await.contains("/push/v1/ws/"));
    page.click("connect").await;
    page.wait_for_state("connected").await;
    page.click("topic-news").await;
    page.wait_for_text("topics", "1 subscriber").await;
    page.browser.close().await.expect("the browser closes");
}

/// Neither the page nor Swagger UI makes a request that fails (a missing icon was one), at the
/// root and under a path prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_swagger_ui_load_without_a_failed_request() {
    let driver = Chromedriver::start().await;
    for prefix in ["", "/push/v1"] {
        let server = TestServer::start_with(|config| config.path_prefix = prefix.into()).await;
        let page = Page::open_at(&driver, &server.url(&format!("{prefix}/")), "console").await;
        // The icon is asked for after the page loaded.
        sleep(Duration::from_secs(1)).await;
        let errors = driver.console_errors(&page.browser).await;
        assert!(errors.is_empty(), "the page at {prefix}/ logged {errors:?}");
        page.browser.goto(&server.url(&format!("{prefix}/docs"))).await.expect("/docs loads");
        let operation = Locator::Css(".opblock-summary-path");
        page.browser.wait().for_element(operation).await.expect("Swagger UI lists operations");
        sleep(Duration::from_secs(1)).await;
        let errors = driver.console_errors(&page.browser).await;
        assert!(errors.is_empty(), "Swagger UI at {prefix}/docs logged {errors:?}");
        page.browser.close().await.expect("the browser closes");
    }
}
