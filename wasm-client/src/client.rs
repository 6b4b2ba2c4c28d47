//! `SwitchboardClient`, exported to JavaScript: register over HTTP, hold one WebSocket that
//! reconnects with backoff, send requests whose promises settle on the server's ack or error,
//! and call back on messages and on connection state changes.

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    rc::{Rc, Weak},
};

use js_sys::{Function, Promise};
use switchboard_protocol::{
    CLOSE_UNREGISTERED, ServerEvent,
    reconnect::{Backoff, describe_close, reconnect_helps},
    request::{self as frames, Request},
};
use wasm_bindgen::{JsCast, prelude::*};
use web_sys::{CloseEvent, MessageEvent, WebSocket};

use crate::http;

/// A connection state, as `onState` callbacks receive it (with a detail text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Disconnected,
    Connecting,
    Connected,
    Reconnecting,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Disconnected => "disconnected",
            State::Connecting => "connecting",
            State::Connected => "connected",
            State::Reconnecting => "reconnecting",
        }
    }
}

/// The socket and the closures that must live as long as it does.
struct Socket {
    ws: WebSocket,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

struct Inner {
    base_url: String,
    backoff: Backoff,
    id: RefCell<Option<String>>,
    ws_url: RefCell<Option<String>>,
    socket: RefCell<Option<Socket>>,
    state: Cell<State>,
    /// Whether the user wants a connection (false after `close`, or a final close code).
    wanted: Cell<bool>,
    /// Failed connection attempts since the last welcome.
    attempt: Cell<u32>,
    reconnect_timer: Cell<Option<i32>>,
    next_ref: Cell<u64>,
    /// Requests awaiting their ack: resolve, reject.
    pending: RefCell<HashMap<u64, (Function, Function)>>,
    /// `connect` promises awaiting the first `connected` (or a final `disconnected`).
    connecting: RefCell<Vec<(Function, Function)>>,
    on_message: RefCell<Option<Function>>,
    on_state: RefCell<Option<Function>>,
    on_error: RefCell<Option<Function>>,
}

/// A Switchboard client for browsers.
#[wasm_bindgen]
pub struct SwitchboardClient {
    inner: Rc<Inner>,
}

#[wasm_bindgen]
impl SwitchboardClient {
    /// A client of the server at `base_url` (e.g. `location.origin`).
    #[wasm_bindgen(constructor)]
    pub fn new(base_url: String) -> SwitchboardClient {
        SwitchboardClient {
            inner: Rc::new(Inner {
                base_url: base_url.trim_end_matches('/').to_owned(),
                backoff: Backoff::default(),
                id: RefCell::new(None),
                ws_url: RefCell::new(None),
                socket: RefCell::new(None),
                state: Cell::new(State::Disconnected),
                wanted: Cell::new(false),
                attempt: Cell::new(0),
                reconnect_timer: Cell::new(None),
                next_ref: Cell::new(1),
                pending: RefCell::new(HashMap::new()),
                connecting: RefCell::new(Vec::new()),
                on_message: RefCell::new(None),
                on_state: RefCell::new(None),
                on_error: RefCell::new(None),
            }),
        }
    }

    /// Registers a client (`name` optional) with the API key; resolves to `{id, name, ws_url}`
    /// and remembers it for `connect`. Rejects with the API's error message.
    pub async fn register(
        &self,
        api_key: String,
        name: Option<String>,
    ) -> Result<JsValue, JsError> {
        let body = match name.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
            Some(name) => serde_json::json!({ "name": name }),
            None => serde_json::json!({}),
        };
        let url = format!("{}/register", self.inner.base_url);
        let registered = http::call("POST", &url, Some(&api_key), Some(&body)).await?;
        let id = registered["id"].as_str().ok_or_else(|| JsError::new("no id in the answer"))?;
        let ws_url = registered["ws_url"].as_str().map(str::to_owned);
        self.use_client(id.to_owned());
        if let Some(ws_url) = ws_url {
            *self.inner.ws_url.borrow_mut() = Some(ws_url);
        }
        http::to_js(&registered)
    }

    /// Uses an id registered elsewhere (its socket URL derived from the base URL).
    #[wasm_bindgen(js_name = useClient)]
    pub fn use_client(&self, id: String) {
        *self.inner.ws_url.borrow_mut() = Some(frames::ws_url(&self.inner.base_url, &id));
        *self.inner.id.borrow_mut() = Some(id);
    }

    /// The registered id, if any.
    #[wasm_bindgen(getter)]
    pub fn id(&self) -> Option<String> {
        self.inner.id.borrow().clone()
    }

    /// The connection state: disconnected, connecting, connected or reconnecting.
    #[wasm_bindgen(getter)]
    pub fn state(&self) -> String {
        self.inner.state.get().name().to_owned()
    }

    /// Unregisters the client; its sockets (on every node) close with 4001. Resolves to
    /// `{id, closed_connections}`.
    pub async fn unregister(&self) -> Result<JsValue, JsError> {
        let id = self.inner.id.borrow().clone().ok_or_else(|| JsError::new("not registered"))?;
        let url = format!("{}/register/{id}", self.inner.base_url);
        let answer = http::call("DELETE", &url, None, None).await?;
        self.inner.id.borrow_mut().take();
        self.inner.ws_url.borrow_mut().take();
        http::to_js(&answer)
    }

    /// Every topic with its subscriber count: `[{name, subscribers}]`.
    pub async fn topics(&self) -> Result<JsValue, JsError> {
        let url = format!("{}/topics", self.inner.base_url);
        http::to_js(&http::call("GET", &url, None, None).await?)
    }

    /// `callback(topic, from, data)` for every message (`topic` and `from` may be null).
    #[wasm_bindgen(js_name = onMessage)]
    pub fn on_message(&self, callback: Function) {
        *self.inner.on_message.borrow_mut() = Some(callback);
    }

    /// `callback(state, detail)` on every connection state change; on `connected`, `detail` is
    /// the array of subscribed topics.
    #[wasm_bindgen(js_name = onState)]
    pub fn on_state(&self, callback: Function) {
        *self.inner.on_state.borrow_mut() = Some(callback);
    }

    /// `callback(message)` for problems no promise reports: an error frame the server sent
    /// unasked, or a frame that cannot be read. (Without it they go to the console.)
    #[wasm_bindgen(js_name = onError)]
    pub fn on_error(&self, callback: Function) {
        *self.inner.on_error.borrow_mut() = Some(callback);
    }

    /// Opens the socket and keeps it open: after a drop it reconnects with backoff, until
    /// `close`, an unregister, or too many failures in a row. Resolves with the subscribed
    /// topics once connected; rejects if it ends disconnected first.
    pub fn connect(&self) -> Promise {
        if self.inner.ws_url.borrow().is_none() {
            let err = js_sys::Error::new("register first (or useClient with an id)");
            return Promise::reject(&err);
        }
        let promise = Promise::new(&mut |resolve, reject| {
            self.inner.connecting.borrow_mut().push((resolve, reject));
        });
        self.inner.wanted.set(true);
        self.inner.attempt.set(0);
        Inner::open(&self.inner);
        promise
    }

    /// Closes the socket and stops reconnecting.
    pub fn close(&self) {
        self.inner.wanted.set(false);
        self.inner.cancel_reconnect();
        let socket = self.inner.socket.borrow_mut().take();
        if let Some(socket) = socket {
            let _ = socket.ws.close_with_code(1000);
        }
        self.inner.fail_pending("the connection was closed");
        if self.inner.state.get() != State::Disconnected {
            self.inner.set_state(State::Disconnected, &JsValue::from_str("closed by you"));
        }
    }

    /// Subscribes to topics; resolves on the server's ack.
    pub fn subscribe(&self, topics: Vec<String>) -> Promise {
        self.inner.request(Request::Subscribe(&topics))
    }

    /// Unsubscribes from topics; resolves on the server's ack.
    pub fn unsubscribe(&self, topics: Vec<String>) -> Promise {
        self.inner.request(Request::Unsubscribe(&topics))
    }

    /// Publishes `data` (any JSON-serializable value) to a topic; resolves on the ack.
    pub fn publish(&self, topic: String, data: JsValue) -> Promise {
        match json_text(&data) {
            Ok(data) => self.inner.request(Request::Publish { topic: &topic, data: &data }),
            Err(err) => Promise::reject(&err),
        }
    }

    /// Sends `data` to every connected socket; resolves on the ack.
    pub fn broadcast(&self, data: JsValue) -> Promise {
        match json_text(&data) {
            Ok(data) => self.inner.request(Request::Broadcast { data: &data }),
            Err(err) => Promise::reject(&err),
        }
    }
}

impl Drop for SwitchboardClient {
    fn drop(&mut self) {
        self.close();
    }
}

impl Inner {
    fn open(this: &Rc<Inner>) {
        this.cancel_reconnect();
        let Some(url) = this.ws_url.borrow().clone() else { return };
        let detail = JsValue::from_str(&format!("attempt {}", this.attempt.get() + 1));
        this.set_state(State::Connecting, &detail);
        let ws = match WebSocket::new(&url) {
            Ok(ws) => ws,
            Err(err) => {
                this.wanted.set(false);
                this.set_state(State::Disconnected, &err);
                return;
            }
        };
        let weak = Rc::downgrade(this);
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            if let (Some(inner), Some(text)) = (weak.upgrade(), event.data().as_string()) {
                inner.received(&text);
            }
        });
        let weak = Rc::downgrade(this);
        let socket_of_this_close = ws.clone();
        let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |event: CloseEvent| {
            if let Some(inner) = weak.upgrade() {
                Inner::closed(&inner, &socket_of_this_close, event.code(), &event.reason());
            }
        });
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        let old = this.socket.borrow_mut().replace(Socket {
            ws,
            _on_message: on_message,
            _on_close: on_close,
        });
        if let Some(old) = old {
            let _ = old.ws.close_with_code(1000);
        }
    }

    fn received(&self, text: &str) {
        match ServerEvent::parse(text) {
            Ok(ServerEvent::Welcome { topics, .. }) => {
                self.attempt.set(0);
                let topics: js_sys::Array = topics.iter().map(|t| JsValue::from_str(t)).collect();
                self.set_state(State::Connected, &topics);
            }
            Ok(ServerEvent::Message { topic, from, data, .. }) => {
                let callback = self.on_message.borrow().clone();
                if let Some(callback) = callback {
                    let data = http::to_js(&data).unwrap_or(JsValue::NULL);
                    let (topic, from) = (optional(topic), optional(from));
                    let _ = callback.call3(&JsValue::NULL, &topic, &from, &data);
                }
            }
            Ok(ServerEvent::Ack { reference }) => {
                if let Some((resolve, _)) = self.take_pending(reference.as_ref()) {
                    let _ = resolve.call0(&JsValue::NULL);
                }
            }
            Ok(ServerEvent::Error { reference, error, message }) => {
                let text = format!("{message} ({error})");
                match self.take_pending(reference.as_ref()) {
                    Some((_, reject)) => {
                        let _ = reject.call1(&JsValue::NULL, &js_sys::Error::new(&text));
                    }
                    None => self.report(&text),
                }
            }
            Err(err) => self.report(&format!("unreadable frame from the server: {err}")),
        }
    }

    fn report(&self, problem: &str) {
        let callback = self.on_error.borrow().clone();
        match callback {
            Some(callback) => {
                let _ = callback.call1(&JsValue::NULL, &JsValue::from_str(problem));
            }
            None => web_sys::console::warn_1(&JsValue::from_str(problem)),
        }
    }

    fn closed(this: &Rc<Inner>, socket: &WebSocket, code: u16, reason: &str) {
        // A close of a socket that was already replaced is not news.
        let current = this.socket.borrow().as_ref().is_some_and(|s| &s.ws == socket);
        if !current {
            return;
        }
        this.socket.borrow_mut().take();
        let why =
            if reason.is_empty() { describe_close(code).to_owned() } else { reason.to_owned() };
        this.fail_pending(&format!("disconnected: {why}"));
        if code == CLOSE_UNREGISTERED {
            // The id is gone for good (unregistered here or anywhere else).
            this.id.borrow_mut().take();
            this.ws_url.borrow_mut().take();
        }
        let detail = format!("{why} ({code})");
        if !this.wanted.get() || !reconnect_helps(code) {
            this.wanted.set(false);
            this.set_state(State::Disconnected, &JsValue::from_str(&detail));
            return;
        }
        let attempt = this.attempt.get() + 1;
        this.attempt.set(attempt);
        let Some(delay) = this.backoff.delay_ms(attempt, js_sys::Math::random()) else {
            this.wanted.set(false);
            let gave_up = format!("{detail}; gave up after {} attempts", attempt - 1);
            this.set_state(State::Disconnected, &JsValue::from_str(&gave_up));
            return;
        };
        // Tenths of a second, in integers: float formatting would add kilobytes to the .wasm.
        let tenths = delay.div_ceil(100);
        let detail = format!("{detail}; retrying in {}.{} s", tenths / 10, tenths % 10);
        this.set_state(State::Reconnecting, &JsValue::from_str(&detail));
        let weak: Weak<Inner> = Rc::downgrade(this);
        let retry = Closure::once_into_js(move || {
            if let Some(inner) = weak.upgrade() {
                inner.reconnect_timer.set(None);
                if inner.wanted.get() {
                    Inner::open(&inner);
                }
            }
        });
        let timer = web_sys::window().and_then(|window| {
            window
                .set_timeout_with_callback_and_timeout_and_arguments_0(
                    retry.unchecked_ref(),
                    delay as i32,
                )
                .ok()
        });
        this.reconnect_timer.set(timer);
    }

    fn cancel_reconnect(&self) {
        if let (Some(timer), Some(window)) = (self.reconnect_timer.take(), web_sys::window()) {
            window.clear_timeout_with_handle(timer);
        }
    }

    fn set_state(&self, state: State, detail: &JsValue) {
        self.state.set(state);
        if matches!(state, State::Connected | State::Disconnected) {
            let waiting: Vec<_> = self.connecting.borrow_mut().drain(..).collect();
            for (resolve, reject) in waiting {
                let _ = match state {
                    State::Connected => resolve.call1(&JsValue::NULL, detail),
                    _ => {
                        let why = detail.as_string().unwrap_or_else(|| "disconnected".into());
                        reject.call1(&JsValue::NULL, &js_sys::Error::new(&why))
                    }
                };
            }
        }
        let callback = self.on_state.borrow().clone();
        if let Some(callback) = callback {
            let _ = callback.call2(&JsValue::NULL, &JsValue::from_str(state.name()), detail);
        }
    }

    /// Sends a request; the promise settles with the answer carrying its `ref`.
    fn request(&self, request: Request<'_>) -> Promise {
        let reference = self.next_ref.get();
        self.next_ref.set(reference + 1);
        let text = match frames::encode(request, reference) {
            Ok(text) => text,
            Err(err) => return Promise::reject(&js_sys::Error::new(&err)),
        };
        let socket = self.socket.borrow();
        let Some(socket) = socket.as_ref().filter(|_| self.state.get() == State::Connected) else {
            return Promise::reject(&js_sys::Error::new("not connected"));
        };
        if let Err(err) = socket.ws.send_with_str(&text) {
            return Promise::reject(&err);
        }
        Promise::new(&mut |resolve, reject| {
            self.pending.borrow_mut().insert(reference, (resolve, reject));
        })
    }

    fn take_pending(&self, reference: Option<&serde_json::Value>) -> Option<(Function, Function)> {
        let reference = reference?.as_u64()?;
        self.pending.borrow_mut().remove(&reference)
    }

    fn fail_pending(&self, why: &str) {
        let pending: Vec<_> = self.pending.borrow_mut().drain().collect();
        for (_, (_, reject)) in pending {
            let _ = reject.call1(&JsValue::NULL, &js_sys::Error::new(why));
        }
    }
}

fn optional(text: Option<String>) -> JsValue {
    text.map_or(JsValue::NULL, |text| JsValue::from_str(&text))
}

/// `JSON.stringify(value)`; `undefined` (which has no JSON) is refused.
fn json_text(value: &JsValue) -> Result<String, JsValue> {
    js_sys::JSON::stringify(value)
        .ok()
        .and_then(|text| text.as_string())
        .ok_or_else(|| js_sys::Error::new("the message must be a JSON value").into())
}
