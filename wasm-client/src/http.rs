//! Calls to the HTTP API with `fetch`. A failed call becomes an error whose text is the API's
//! own `message`, so people see why.

use serde_json::Value;
use wasm_bindgen::{JsCast, prelude::*};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Request, RequestInit, Response};

/// Sends a request with an optional API key and JSON body; returns the JSON answer (`null`
/// when empty).
pub async fn call(
    method: &str,
    url: &str,
    api_key: Option<&str>,
    body: Option<&Value>,
) -> Result<Value, JsError> {
    let init = RequestInit::new();
    init.set_method(method);
    if let Some(body) = body {
        init.set_body(&JsValue::from_str(&body.to_string()));
    }
    let request = Request::new_with_str_and_init(url, &init).map_err(js_error)?;
    let headers = request.headers();
    if body.is_some() {
        headers.set("Content-Type", "application/json").map_err(js_error)?;
    }
    if let Some(key) = api_key {
        headers.set("X-Api-Key", key).map_err(js_error)?;
    }
    let window = web_sys::window().ok_or_else(|| JsError::new("no window"))?;
    let response = JsFuture::from(window.fetch_with_request(&request))
        .await
        .map_err(|err| JsError::new(&format!("cannot reach the server: {}", describe(&err))))?;
    let response: Response = response.dyn_into().map_err(js_error)?;
    let text = JsFuture::from(response.text().map_err(js_error)?).await.map_err(js_error)?;
    let text = text.as_string().unwrap_or_default();
    let value: Value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    if response.ok() { Ok(value) } else { Err(JsError::new(&api_error(response.status(), &value))) }
}

/// The text of an API error answer: its message, then status and code.
pub fn api_error(status: u16, body: &Value) -> String {
    match (body["message"].as_str(), body["error"].as_str()) {
        (Some(message), Some(code)) => format!("{message} (HTTP {status} {code})"),
        _ => format!("the server answered HTTP {status}"),
    }
}

/// A JSON value as a JavaScript value.
pub fn to_js(value: &Value) -> Result<JsValue, JsError> {
    js_sys::JSON::parse(&value.to_string()).map_err(js_error)
}

fn js_error(err: JsValue) -> JsError {
    JsError::new(&describe(&err))
}

/// The message of a JavaScript error (or its string form).
pub fn describe(err: &JsValue) -> String {
    err.dyn_ref::<js_sys::Error>()
        .map(|err| String::from(err.message()))
        .or_else(|| err.as_string())
        .or_else(|| js_sys::JSON::stringify(err).ok().and_then(|text| text.as_string()))
        .unwrap_or_else(|| "unknown error".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_read_as_their_message() {
        let body = serde_json::json!({"error": "forbidden", "message": "invalid API key"});
        assert_eq!(api_error(403, &body), "invalid API key (HTTP 403 forbidden)");
        assert_eq!(
            api_error(502, &Value::String("Bad Gateway".into())),
            "the server answered HTTP 502"
        );
    }
}
