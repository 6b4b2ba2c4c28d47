//! The HTTP client generated from the committed spec drives the whole flow against a live
//! server, errors read as the typed error body.

mod support;

use serde_json::json;
use support::{KEY, base_url, server};
use switchboard_client::{ClientError, http_client, types};

#[tokio::test]
async fn the_generated_client_drives_every_operation() {
    let server = server().await;
    let api = http_client(&base_url(&server), Some(KEY)).unwrap();

    let body = types::RegisterRequest { name: Some("alice".parse().unwrap()) };
    let alice = api.register(&body).await.expect("registers").into_inner();
    assert_eq!(alice.name, "alice");
    assert!(alice.ws_url.ends_with(&format!("/ws/{}", alice.id)), "{}", alice.ws_url);

    // A 409 and a 403, read as the error body.
    let taken = ClientError::from(api.register(&body).await.unwrap_err());
    let ClientError::Server(taken) = taken else { panic!("a typed error: {taken:?}") };
    assert_eq!(taken.error, "name_taken");
    let stranger = http_client(&base_url(&server), Some("wrong-key")).unwrap();
    let refused = ClientError::from(stranger.register(&body).await.unwrap_err());
    assert!(
        matches!(&refused, ClientError::Server(e) if e.error == "forbidden" && e.message == "invalid API key"),
        "{refused:?}"
    );
    let keyless = http_client(&base_url(&server), None).unwrap();
    let missing = ClientError::from(keyless.stats().await.unwrap_err());
    assert!(
        matches!(&missing, ClientError::Server(e) if e.message.contains("missing")),
        "{missing:?}"
    );

    let created = types::CreateTopicRequest {
        name: "sports".parse().unwrap(),
        history_size: Some(10),
        history_ttl_seconds: None,
    };
    let topic = api.create_topic(&created).await.expect("creates").into_inner();
    assert_eq!((topic.name.as_str(), topic.subscribers), ("sports", 0));
    let subscription =
        types::SubscriptionRequest { id: alice.id, topics: vec!["sports".parse().unwrap()] };
    api.subscribe(&subscription).await.expect("subscribes");

    let message = types::SendRequest {
        id: Some(alice.id),
        message: json!({"goal": 1}),
        idempotency_key: Some("goal-1".parse().unwrap()),
    };
    let sent = api.publish("sports", &message).await.unwrap().into_inner();
    assert_eq!((sent.recipients, sent.offset), (1, Some(1)));
    let again = api.publish("sports", &message).await.unwrap().into_inner();
    assert_eq!(again.offset, Some(1), "the same idempotency key publishes once");
    let history = api.get_topic_history("sports", None, None, None).await.unwrap().into_inner();
    assert!(history.complete && history.epoch == sent.epoch.unwrap_or_default());
    assert_eq!(history.messages.len(), 1);
    assert_eq!(history.messages[0].data, json!({"goal": 1}));
    let missing_topic = ClientError::from(api.publish("nope", &message).await.unwrap_err());
    assert!(matches!(&missing_topic, ClientError::Server(e) if e.error == "topic_not_found"));
    let anonymous = types::BroadcastRequest { id: None, message: json!(null) };
    assert_eq!(api.broadcast(&anonymous).await.unwrap().into_inner().recipients, 1);

    let topics = api.list_topics().await.expect("lists").into_inner();
    let listed: Vec<_> = topics.iter().map(|t| (t.name.as_str(), t.subscribers)).collect();
    assert_eq!(listed, [("news", 0), ("sports", 1)]);
    let stats = api.stats().await.expect("stats").into_inner();
    assert!(stats.cluster.is_none(), "a single node has no cluster section");

    let gone = api.unregister(&alice.id).await.expect("unregisters").into_inner();
    assert_eq!((gone.id, gone.closed_connections), (alice.id, 0));
    let again = ClientError::from(api.unregister(&alice.id).await.unwrap_err());
    assert!(matches!(&again, ClientError::Server(e) if e.error == "unknown_client"));
    api.delete_topic("sports").await.expect("deletes");
}
