//! `openapi/openapi.json` must equal the spec the server serves.
//!
//! Regenerate it with: `SWITCHBOARD_WRITE_OPENAPI=1 cargo test -p switchboard --test openapi`

mod support;

use support::TestServer;

#[tokio::test]
async fn committed_spec_equals_the_served_spec() {
    let server = TestServer::start().await;
    let response = server.http.get(server.url("/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let served = format!("{}\n", response.text().await.unwrap().trim_end());
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/openapi.json");
    if std::env::var_os("SWITCHBOARD_WRITE_OPENAPI").is_some() {
        std::fs::write(path, &served).expect("write openapi/openapi.json");
        return;
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == served,
        "openapi/openapi.json differs from the served spec; regenerate it with \
         `SWITCHBOARD_WRITE_OPENAPI=1 cargo test -p switchboard --test openapi` and review the diff"
    );
}
