//! The test page's logic: wires the markup of `www/index.html` to a [`SwitchboardClient`].
//! Every failure is shown in the page's error banner, not only in the console.

use std::{cell::RefCell, collections::BTreeSet, rc::Rc};

use serde::Deserialize;
use wasm_bindgen::{JsCast, prelude::*};
use wasm_bindgen_futures::{JsFuture, spawn_local};
use web_sys::{
    Document, Element, Event, HtmlButtonElement, HtmlElement, HtmlInputElement, HtmlSelectElement,
    HtmlTextAreaElement,
};

use crate::{client::SwitchboardClient, http::describe};

#[derive(Debug, Deserialize)]
struct Topic {
    name: String,
    subscribers: u64,
}

struct Page {
    doc: Document,
    client: SwitchboardClient,
    /// Topics the connected socket is subscribed to (from the welcome, then our changes).
    subscribed: RefCell<BTreeSet<String>>,
}

/// Starts the test page (called by `index.html` once the module is loaded).
#[wasm_bindgen(js_name = startTestPage)]
pub fn start_test_page() -> Result<(), JsValue> {
    let window = web_sys::window().ok_or("no window")?;
    let doc = window.document().ok_or("no document")?;
    // The server's base is where the page is: `/` or its `--path-prefix`.
    let location = window.location();
    let base = format!("{}{}", location.origin()?, location.pathname()?.trim_end_matches('/'));
    let page = Rc::new(Page {
        doc,
        client: SwitchboardClient::new(base),
        subscribed: RefCell::new(BTreeSet::new()),
    });
    page.wire()?;
    spawn_local(page.clone().refresh_topics());
    Ok(())
}

impl Page {
    fn el<T: JsCast>(&self, id: &str) -> Result<T, JsValue> {
        self.doc
            .get_element_by_id(id)
            .ok_or_else(|| JsValue::from_str(&format!("the page has no #{id}")))?
            .dyn_into::<T>()
            .map_err(|_| JsValue::from_str(&format!("#{id} is not the expected element")))
    }

    fn text(&self, id: &str, text: &str) {
        if let Ok(element) = self.el::<Element>(id) {
            element.set_text_content(Some(text));
        }
    }

    fn enable(&self, id: &str, enabled: bool) {
        if let Ok(button) = self.el::<HtmlButtonElement>(id) {
            button.set_disabled(!enabled);
        }
    }

    fn show_error(&self, text: &str) {
        if let Ok(banner) = self.el::<Element>("error") {
            banner.set_text_content(Some(text));
            let _ = banner.class_list().add_1("shown");
        }
    }

    fn clear_error(&self) {
        if let Ok(banner) = self.el::<Element>("error") {
            banner.set_text_content(None);
            let _ = banner.class_list().remove_1("shown");
        }
    }

    /// Runs `handler` on `event` of element `id`; the handler lives as long as the page.
    fn on(
        self: &Rc<Self>,
        id: &str,
        event: &str,
        handler: fn(Rc<Page>, Event),
    ) -> Result<(), JsValue> {
        let page = self.clone();
        let closure = Closure::<dyn FnMut(Event)>::new(move |e: Event| handler(page.clone(), e));
        self.el::<Element>(id)?
            .add_event_listener_with_callback(event, closure.as_ref().unchecked_ref())?;
        closure.forget();
        Ok(())
    }

    fn wire(self: &Rc<Self>) -> Result<(), JsValue> {
        self.on("register", "click", |page, _| spawn_local(page.register()))?;
        self.on("unregister", "click", |page, _| spawn_local(page.unregister()))?;
        self.on("connect", "click", |page, _| {
            page.clear_error();
            let connected = JsFuture::from(page.client.connect());
            spawn_local(async move {
                // Progress shows in the state badge; a connect that ends disconnected is an error.
                if let Err(err) = connected.await {
                    page.show_error(&format!("Connect failed: {}", describe(&err)));
                }
            });
        })?;
        self.on("disconnect", "click", |page, _| page.client.close())?;
        self.on("refresh-topics", "click", |page, _| spawn_local(page.refresh_topics()))?;
        self.on("send", "click", |page, _| spawn_local(page.send()))?;
        self.on("clear-log", "click", |page, _| {
            if let Ok(log) = page.el::<Element>("log") {
                log.set_text_content(None);
            }
        })?;
        self.on("topics", "change", |page, event| {
            let input = event.target().and_then(|t| t.dyn_into::<HtmlInputElement>().ok());
            if let Some(input) = input {
                spawn_local(page.toggle(input));
            }
        })?;

        let page = Rc::downgrade(self);
        let on_state =
            Closure::<dyn Fn(String, JsValue)>::new(move |state: String, detail: JsValue| {
                if let Some(page) = page.upgrade() {
                    page.state_changed(&state, &detail);
                }
            });
        self.client.on_state(on_state.into_js_value().unchecked_into());
        let page = Rc::downgrade(self);
        let on_message = Closure::<dyn Fn(JsValue, JsValue, JsValue)>::new(
            move |topic: JsValue, from: JsValue, data: JsValue| {
                if let Some(page) = page.upgrade() {
                    page.log_message(topic.as_string(), from.as_string(), &data);
                }
            },
        );
        self.client.on_message(on_message.into_js_value().unchecked_into());
        let page = Rc::downgrade(self);
        let on_error = Closure::<dyn Fn(String)>::new(move |problem: String| {
            if let Some(page) = page.upgrade() {
                page.show_error(&format!("The server reported: {problem}"));
            }
        });
        self.client.on_error(on_error.into_js_value().unchecked_into());
        Ok(())
    }

    async fn register(self: Rc<Self>) {
        self.clear_error();
        let key = self.el::<HtmlInputElement>("api-key").map(|i| i.value()).unwrap_or_default();
        let name =
            self.el::<HtmlInputElement>("client-name").map(|i| i.value()).unwrap_or_default();
        if key.trim().is_empty() {
            self.show_error("Enter the server's API key to register.");
            return;
        }
        // A new registration replaces the old one on this page.
        self.client.close();
        match self.client.register(key, Some(name)).await {
            Ok(registered) => {
                let field = |key: &str| {
                    js_sys::Reflect::get(&registered, &JsValue::from_str(key))
                        .ok()
                        .and_then(|v| v.as_string())
                        .unwrap_or_default()
                };
                self.text("client-label", &field("name"));
                self.text("client-id", &field("id"));
                self.text("ws-url", &field("ws_url"));
                if let Ok(section) = self.el::<HtmlElement>("registration") {
                    section.set_hidden(false);
                }
                self.enable("unregister", true);
                self.enable("connect", true);
                self.text("state-detail", "registered; not connected");
            }
            Err(err) => self.show_error(&format!("Register failed: {}", describe(&err.into()))),
        }
    }

    async fn unregister(self: Rc<Self>) {
        self.clear_error();
        match self.client.unregister().await {
            Ok(_) => {
                let name = self.el::<Element>("client-label").ok().and_then(|e| e.text_content());
                self.text("client-label", &format!("{} (unregistered)", name.unwrap_or_default()));
                self.enable("unregister", false);
                self.enable("connect", false);
                spawn_local(self.clone().refresh_topics());
            }
            Err(err) => self.show_error(&format!("Unregister failed: {}", describe(&err.into()))),
        }
    }

    fn state_changed(&self, state: &str, detail: &JsValue) {
        if let Ok(badge) = self.el::<Element>("state") {
            badge.set_text_content(Some(state));
            let _ = badge.set_attribute("data-state", state);
        }
        let detail_text = if state == "connected" {
            *self.subscribed.borrow_mut() =
                js_sys::Array::from(detail).iter().filter_map(|t| t.as_string()).collect();
            self.sync_checkboxes();
            self.subscriptions_text()
        } else {
            detail.as_string().unwrap_or_default()
        };
        self.text("state-detail", &detail_text);
        let registered = self.client.id().is_some();
        self.enable("connect", registered && state == "disconnected");
        self.enable("disconnect", state != "disconnected");
        self.enable("send", state == "connected");
        if !registered {
            // Unregistered (here or elsewhere): the client and its subscriptions are gone.
            self.subscribed.borrow_mut().clear();
            self.sync_checkboxes();
            self.enable("unregister", false);
        }
    }

    fn subscriptions_text(&self) -> String {
        let topics = self.subscribed.borrow();
        if topics.is_empty() {
            "subscribed to no topics".to_owned()
        } else {
            format!("subscribed to {}", topics.iter().cloned().collect::<Vec<_>>().join(", "))
        }
    }

    fn log_message(&self, topic: Option<String>, from: Option<String>, data: &JsValue) {
        let Ok(log) = self.el::<Element>("log") else { return };
        let Ok(item) = self.doc.create_element("li") else { return };
        let now = js_sys::Date::new_0();
        let time = format!(
            "{:02}:{:02}:{:02}.{:03}",
            now.get_hours(),
            now.get_minutes(),
            now.get_seconds(),
            now.get_milliseconds()
        );
        let sender = from.unwrap_or_else(|| "the server (API key)".to_owned());
        let data =
            js_sys::JSON::stringify(data).ok().and_then(|s| s.as_string()).unwrap_or_default();
        let parts = [
            ("meta", format!("{time} · from {sender} · ")),
            ("topic", topic.map_or_else(|| "broadcast".to_owned(), |t| format!("#{t}"))),
            ("data mono", data),
        ];
        for (class, text) in parts {
            if let Ok(span) =
                self.doc.create_element(if class == "data mono" { "div" } else { "span" })
            {
                span.set_class_name(class);
                span.set_text_content(Some(&text));
                let _ = item.append_child(&span);
            }
        }
        let _ = log.insert_before(&item, log.first_child().as_ref());
    }

    async fn refresh_topics(self: Rc<Self>) {
        let topics = match self.client.topics().await {
            Ok(topics) => serde_json::from_str::<Vec<Topic>>(
                &js_sys::JSON::stringify(&topics)
                    .ok()
                    .and_then(|s| s.as_string())
                    .unwrap_or_default(),
            )
            .unwrap_or_default(),
            Err(err) => {
                self.show_error(&format!("Cannot list topics: {}", describe(&err.into())));
                return;
            }
        };
        let (Ok(list), Ok(target)) =
            (self.el::<Element>("topics"), self.el::<HtmlSelectElement>("target"))
        else {
            return;
        };
        list.set_text_content(None);
        let selected = target.value();
        target.set_text_content(None);
        self.add_option(&target, "", "everyone (broadcast)");
        if topics.is_empty() {
            self.text("topics", "No topics yet: create one with POST /topics.");
        }
        for topic in &topics {
            let _ = self.topic_row(&list, topic);
            self.add_option(&target, &topic.name, &format!("topic #{}", topic.name));
        }
        target.set_value(&selected);
        self.sync_checkboxes();
    }

    fn topic_row(&self, list: &Element, topic: &Topic) -> Result<(), JsValue> {
        let item = self.doc.create_element("li")?;
        let label = self.doc.create_element("label")?;
        let checkbox: HtmlInputElement = self.doc.create_element("input")?.dyn_into()?;
        checkbox.set_type("checkbox");
        checkbox.set_attribute("data-topic", &topic.name)?;
        checkbox.set_id(&format!("topic-{}", topic.name));
        label.append_child(&checkbox)?;
        let name = self.doc.create_element("span")?;
        name.set_text_content(Some(&topic.name));
        label.append_child(&name)?;
        item.append_child(&label)?;
        let count = self.doc.create_element("span")?;
        count.set_class_name("count");
        let plural = if topic.subscribers == 1 { "" } else { "s" };
        count.set_text_content(Some(&format!("{} subscriber{plural}", topic.subscribers)));
        item.append_child(&count)?;
        list.append_child(&item)?;
        Ok(())
    }

    fn add_option(&self, select: &HtmlSelectElement, value: &str, text: &str) {
        if let Ok(option) = self.doc.create_element("option") {
            let _ = option.set_attribute("value", value);
            option.set_text_content(Some(text));
            let _ = select.append_child(&option);
        }
    }

    /// Checks exactly the boxes of the subscribed topics.
    fn sync_checkboxes(&self) {
        let Ok(boxes) = self.doc.query_selector_all("#topics input[data-topic]") else { return };
        let subscribed = self.subscribed.borrow();
        for index in 0..boxes.length() {
            if let Some(input) =
                boxes.item(index).and_then(|n| n.dyn_into::<HtmlInputElement>().ok())
            {
                let topic = input.get_attribute("data-topic").unwrap_or_default();
                input.set_checked(subscribed.contains(&topic));
            }
        }
    }

    async fn toggle(self: Rc<Self>, input: HtmlInputElement) {
        self.clear_error();
        let Some(topic) = input.get_attribute("data-topic") else { return };
        let subscribe = input.checked();
        let answer = if subscribe {
            self.client.subscribe(vec![topic.clone()])
        } else {
            self.client.unsubscribe(vec![topic.clone()])
        };
        match JsFuture::from(answer).await {
            Ok(_) => {
                if subscribe {
                    self.subscribed.borrow_mut().insert(topic);
                } else {
                    self.subscribed.borrow_mut().remove(&topic);
                }
                self.text("state-detail", &self.subscriptions_text());
                spawn_local(self.clone().refresh_topics());
            }
            Err(err) => {
                input.set_checked(!subscribe);
                let what = if subscribe { "Subscribe to" } else { "Unsubscribe from" };
                self.show_error(&format!("{what} {topic} failed: {}", describe(&err)));
            }
        }
    }

    async fn send(self: Rc<Self>) {
        self.clear_error();
        let target = self.el::<HtmlSelectElement>("target").map(|s| s.value()).unwrap_or_default();
        let text = self.el::<HtmlTextAreaElement>("message").map(|t| t.value()).unwrap_or_default();
        // JSON when it parses, else the text as a JSON string.
        let data = js_sys::JSON::parse(&text).unwrap_or_else(|_| JsValue::from_str(&text));
        let answer = if target.is_empty() {
            self.client.broadcast(data)
        } else {
            self.client.publish(target.clone(), data)
        };
        if let Err(err) = JsFuture::from(answer).await {
            let to = if target.is_empty() { "everyone".to_owned() } else { format!("#{target}") };
            self.show_error(&format!("Sending to {to} failed: {}", describe(&err)));
        }
    }
}
