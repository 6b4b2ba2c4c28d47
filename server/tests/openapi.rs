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
    support::committed_file_matches("openapi/openapi.json", &served, "SWITCHBOARD_WRITE_OPENAPI");
}
