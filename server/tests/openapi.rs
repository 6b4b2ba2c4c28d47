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

/// Every route answers a method it does not serve with 405 and an `Allow` header naming the
/// ones it does (RFC 9110 15.5.6): the API's as its spec lists them, the others GET; under a
/// path prefix too.
#[tokio::test]
async fn a_405_says_what_is_allowed() {
    for prefix in ["", "/push"] {
        let server = TestServer::start_with(|config| config.path_prefix = prefix.into()).await;
        let (status, spec) = server.get(&format!("{prefix}/openapi.json")).await;
        assert_eq!(status, 200);
        let mut expected: Vec<(String, Vec<String>)> = spec["paths"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(path, operations)| {
                let methods =
                    operations.as_object().unwrap().keys().map(|m| m.to_uppercase()).collect();
                (
                    path.replace("{id}", &uuid::Uuid::new_v4().to_string())
                        .replace("{name}", "news"),
                    methods,
                )
            })
            .collect();
        for path in
            ["/", "/ws/x", "/relay/x", "/assets/x", "/favicon.ico", "/openapi.json", "/docs"]
        {
            expected.push((path.to_owned(), vec!["GET".to_owned()]));
        }
        assert!(expected.len() > 15, "every route: {expected:?}");
        for (path, mut methods) in expected {
            if methods.iter().any(|m| m == "GET") {
                methods.push("HEAD".into());
            }
            methods.sort();
            let url = server.url(&format!("{prefix}{path}"));
            let response = server.http.request(reqwest::Method::TRACE, &url).send().await.unwrap();
            assert_eq!(response.status(), 405, "TRACE {url}");
            let allow = response.headers().get("allow").map(|v| v.to_str().unwrap().to_owned());
            assert_eq!(allow, Some(methods.join(", ")), "Allow of {url}");
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["error"], "method_not_allowed");
        }
    }
}
