//! The native WebSocket client against a live server: requests answered by `ack` or `error`,
//! messages as events, reconnect after a lost connection (subscriptions kept), no reconnect
//! after an unregister (4001).

mod support;

use std::time::Duration;

use serde_json::json;
use support::{KEY, Proxy, WAIT, base_url, server};
use switchboard::Running;
use switchboard_client::{
    CLOSE_UNREGISTERED, HttpClient, http_client,
    socket::{Event, Socket, SocketError},
    types,
};
use tokio::{sync::mpsc::Receiver, time::timeout};

async fn next(events: &mut Receiver<Event>) -> Event {
    timeout(WAIT, events.recv()).await.expect("an event in time").expect("the socket's events")
}

/// A live server, its API with the key, and client `name` registered on it.
async fn with_client(name: &str) -> (Running, HttpClient, types::Registered) {
    let server = server().await;
    let api = http_client(&base_url(&server), Some(KEY)).unwrap();
    let body = types::RegisterRequest { name: Some(name.parse().unwrap()) };
    let client = api.register(&body).await.expect("registers").into_inner();
    (server, api, client)
}

#[tokio::test]
async fn requests_are_acknowledged_or_refused_and_messages_arrive() {
    let (_server, _api, alice) = with_client("alice").await;
    let (socket, mut events) = Socket::connect(&alice.ws_url);
    assert_eq!(next(&mut events).await, Event::Connected { topics: vec![] });

    socket.subscribe(&["news"]).await.expect("subscribe is acknowledged");
    let refused = socket.subscribe(&["nope"]).await.unwrap_err();
    assert!(
        matches!(&refused, SocketError::Refused { code, .. } if code == "topic_not_found"),
        "{refused:?}"
    );
    socket.publish("news", &json!({"n": 1})).await.expect("publish is acknowledged");
    let Event::Message { topic, from, data, offset, epoch } = next(&mut events).await else {
        panic!("a message")
    };
    assert_eq!(
        (topic.as_deref(), from.as_deref(), data),
        (Some("news"), Some("alice"), json!({"n": 1}))
    );
    assert_eq!(offset, Some(1), "the topic's first message");
    assert!(epoch.is_some_and(|epoch| !epoch.is_empty()));
    socket.broadcast(&json!(null)).await.expect("broadcast is acknowledged");
    assert_eq!(
        next(&mut events).await,
        Event::Message {
            topic: None,
            from: Some("alice".into()),
            data: json!(null),
            offset: None,
            epoch: None
        }
    );
    socket.ping().await.expect("ping is acknowledged");

    socket.close().await;
    assert!(matches!(next(&mut events).await, Event::Closed { code: 1000, .. }));
    assert_eq!(socket.ping().await, Err(SocketError::Closed));
    assert!(events.recv().await.is_none(), "nothing follows Closed");
}

#[tokio::test]
async fn a_lost_connection_is_made_again_with_its_subscriptions() {
    let (server, api, bob) = with_client("bob").await;
    let proxy = Proxy::start(server.local_addr).await;
    let url = format!("ws://127.0.0.1:{}/ws/{}", proxy.port, bob.id);
    let (socket, mut events) = Socket::connect(&url);
    assert_eq!(next(&mut events).await, Event::Connected { topics: vec![] });
    socket.subscribe(&["news"]).await.unwrap();

    proxy.cut();
    let Event::Disconnected { code, retry_in, .. } = next(&mut events).await else {
        panic!("a lost connection is reported")
    };
    assert_eq!(code, 1006);
    assert!(retry_in <= Duration::from_secs(1), "the first retry comes soon: {retry_in:?}");
    assert_eq!(next(&mut events).await, Event::Connected { topics: vec!["news".into()] });

    let body = types::SendRequest { id: None, message: json!("after"), idempotency_key: None };
    api.publish("news", &body).await.expect("publish");
    let Event::Message { data, .. } = next(&mut events).await else { panic!("a message") };
    assert_eq!(data, json!("after"));
    socket.close().await;
}

#[tokio::test]
async fn an_unregistered_client_does_not_reconnect() {
    let (_server, api, carol) = with_client("carol").await;
    let (socket, mut events) = Socket::connect(&carol.ws_url);
    assert!(matches!(next(&mut events).await, Event::Connected { .. }));

    api.unregister(&carol.id).await.expect("unregisters");
    let Event::Closed { code, .. } = next(&mut events).await else { panic!("closed for good") };
    assert_eq!(code, CLOSE_UNREGISTERED);
    assert!(events.recv().await.is_none(), "no reconnect follows");
    assert_eq!(socket.ping().await, Err(SocketError::Closed));
}

#[tokio::test]
async fn an_unknown_id_is_refused_without_retrying() {
    let server = server().await;
    let url = format!("ws://{}/ws/{}", server.local_addr, uuid::Uuid::new_v4());
    let (_socket, mut events) = Socket::connect(&url);
    let Event::Closed { reason, .. } = next(&mut events).await else { panic!("refused") };
    assert!(reason.contains("403"), "{reason}");
}
