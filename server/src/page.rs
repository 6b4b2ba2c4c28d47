//! The test page at `/`: its HTML and the browser client (Wasm and JS glue), embedded at build
//! time from `wasm-client/`. The built client is committed, so serving the page needs no wasm
//! toolchain; `scripts/wasm check` (in the test command) fails when it is stale.

use poem::{
    Endpoint, IntoResponse, Response,
    endpoint::make_sync,
    handler,
    http::header,
    web::{Html, Path},
};

/// The page's markup; its logic is the Wasm client's `startTestPage`.
pub const INDEX_HTML: &str = include_str!("../../wasm-client/www/index.html");

/// The icon the page and Swagger UI link to, so neither asks for a missing `/favicon.ico`.
const FAVICON_SVG: &[u8] = include_bytes!("../../wasm-client/www/favicon.svg");

const CLIENT_JS: &[u8] = include_bytes!("../../wasm-client/pkg/switchboard_wasm_client.js");
const CLIENT_WASM: &[u8] = include_bytes!("../../wasm-client/pkg/switchboard_wasm_client_bg.wasm");

/// `GET /assets/{file}`: the browser client's files.
#[handler]
pub fn asset(Path(file): Path<String>) -> poem::Result<Response> {
    let (body, content_type) = match file.as_str() {
        "switchboard_wasm_client.js" => (CLIENT_JS, "text/javascript; charset=utf-8"),
        "switchboard_wasm_client_bg.wasm" => (CLIENT_WASM, "application/wasm"),
        _ => return Err(poem::error::NotFoundError.into()),
    };
    Ok(body
        .with_content_type(content_type)
        // Revalidate: a new server version may carry a new client.
        .with_header(header::CACHE_CONTROL, "no-cache")
        .into_response())
}

/// `GET /favicon.svg`, and `GET /favicon.ico` for browsers that ask without a link.
#[handler]
pub fn favicon() -> Response {
    FAVICON_SVG
        .with_content_type("image/svg+xml")
        .with_header(header::CACHE_CONTROL, "max-age=86400")
        .into_response()
}

/// Swagger UI (poem-openapi's page, `html`) with a link to the icon under `prefix`, which
/// its own page lacks.
pub fn swagger_ui(html: String, prefix: &str) -> impl Endpoint + 'static {
    let link =
        format!(r#"<head><link rel="icon" type="image/svg+xml" href="{prefix}/favicon.svg">"#);
    let html = html.replacen("<head>", &link, 1);
    make_sync(move |_| Html(html.clone()))
}
