//! The test page at `/`: its HTML and the browser client (Wasm and JS glue), embedded at build
//! time from `wasm-client/`. The built client is committed, so serving the page needs no wasm
//! toolchain; `scripts/wasm check` (in the test command) fails when it is stale.

use poem::{IntoResponse, Response, handler, http::header, web::Path};

/// The page's markup; its logic is the Wasm client's `startTestPage`.
pub const INDEX_HTML: &str = include_str!("../../wasm-client/www/index.html");

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
