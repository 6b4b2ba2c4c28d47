//! The store conformance suite: the behaviour every `Store` must have, written once.
//!
//! `conformance_suite!(module, factory)` expands to one test per check; `factory` is an async
//! block that yields a fresh, empty store and whatever must live as long as the test (the
//! Redis store's own `redis-server`). Add a line at the bottom for every new store.

mod support;

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use support::redis_server::RedisServer;

use switchboard::store::{
    ClientId, HistoryEntry, HistorySettings, Idempotency, NewMessage, PeerAddr, Store, StoreError,
    TopicInfo,
};

type DynStore = Arc<dyn Store>;

fn topics(list: &[&str]) -> Vec<String> {
    list.iter().map(|t| t.to_string()).collect()
}

fn info(name: &str, subscribers: u64) -> TopicInfo {
    TopicInfo { name: name.into(), subscribers }
}

pub async fn registers_with_unique_ids_and_names(store: DynStore) {
    let alice = store.register(Some("alice")).await.unwrap();
    assert_eq!(alice.name, "alice");
    assert_eq!(alice.id.get_version_num(), 4);
    let assigned = store.register(None).await.unwrap();
    let other = store.register(None).await.unwrap();
    assert_ne!(assigned.name, other.name);
    assert_ne!(assigned.id, other.id);
    assert!(switchboard::store::valid_name(&assigned.name));
    assert_eq!(store.client(alice.id).await.unwrap(), alice);
    assert_eq!(store.client_count().await.unwrap(), 3);
}

pub async fn names_are_reserved_until_unregistered(store: DynStore) {
    let alice = store.register(Some("alice")).await.unwrap();
    assert_eq!(store.register(Some("alice")).await, Err(StoreError::NameTaken("alice".into())));
    assert_eq!(store.unregister(alice.id).await.unwrap(), alice);
    assert_eq!(store.unregister(alice.id).await, Err(StoreError::UnknownClient));
    assert_eq!(store.client(alice.id).await, Err(StoreError::UnknownClient));
    let again = store.register(Some("alice")).await.unwrap();
    assert_ne!(again.id, alice.id);
    assert_eq!(store.client_count().await.unwrap(), 1);
}

pub async fn racing_registrations_of_one_name_give_exactly_one_winner(store: DynStore) {
    let attempts = (0..16).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.register(Some("contested")).await })
    });
    let mut winners = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(_) => winners += 1,
            Err(err) => assert_eq!(err, StoreError::NameTaken("contested".into())),
        }
    }
    assert_eq!(winners, 1);
}

pub async fn topics_are_created_listed_and_deleted(store: DynStore) {
    store.create_topic("sports", HistorySettings::default()).await.unwrap();
    store.create_topic("news", HistorySettings::default()).await.unwrap();
    assert_eq!(
        store.create_topic("news", HistorySettings::default()).await,
        Err(StoreError::TopicExists("news".into()))
    );
    assert_eq!(store.topics().await.unwrap(), [info("news", 0), info("sports", 0)]);
    assert_eq!(store.topic_count().await.unwrap(), 2);
    let alice = store.register(Some("alice")).await.unwrap();
    store.subscribe(alice.id, &topics(&["news", "sports"])).await.unwrap();
    assert_eq!(store.delete_topic("news").await.unwrap(), [alice.id]);
    assert_eq!(store.delete_topic("news").await, Err(StoreError::TopicNotFound("news".into())));
    assert_eq!(store.subscriptions(alice.id).await.unwrap(), ["sports"]);
    assert_eq!(store.topic_count().await.unwrap(), 1);
    store.create_topic("news", HistorySettings::default()).await.unwrap();
    assert_eq!(store.subscriber_count("news").await.unwrap(), 0, "a new topic starts empty");
}

pub async fn subscriptions_are_all_or_nothing(store: DynStore) {
    store.create_topic("news", HistorySettings::default()).await.unwrap();
    store.create_topic("sports", HistorySettings::default()).await.unwrap();
    let alice = store.register(Some("alice")).await.unwrap();
    let result = store.subscribe(alice.id, &topics(&["news", "missing", "sports"])).await;
    assert_eq!(result, Err(StoreError::TopicNotFound("missing".into())));
    assert!(store.subscriptions(alice.id).await.unwrap().is_empty(), "nothing applied");

    store.subscribe(alice.id, &topics(&["sports", "news"])).await.unwrap();
    store.subscribe(alice.id, &topics(&["news"])).await.unwrap();
    assert_eq!(store.subscriptions(alice.id).await.unwrap(), ["news", "sports"]);
    assert_eq!(store.subscriber_count("news").await.unwrap(), 1, "subscribing twice counts once");

    let result = store.unsubscribe(alice.id, &topics(&["news", "missing"])).await;
    assert_eq!(result, Err(StoreError::TopicNotFound("missing".into())));
    assert_eq!(store.subscriptions(alice.id).await.unwrap(), ["news", "sports"], "nothing applied");
    store.unsubscribe(alice.id, &topics(&["news"])).await.unwrap();
    assert_eq!(store.topics().await.unwrap(), [info("news", 0), info("sports", 1)]);
}

pub async fn unknown_clients_and_topics_are_refused(store: DynStore) {
    store.create_topic("news", HistorySettings::default()).await.unwrap();
    let nobody: ClientId = uuid::Uuid::new_v4();
    assert_eq!(store.subscribe(nobody, &topics(&["news"])).await, Err(StoreError::UnknownClient));
    assert_eq!(store.unsubscribe(nobody, &topics(&["news"])).await, Err(StoreError::UnknownClient));
    assert_eq!(store.subscriptions(nobody).await, Err(StoreError::UnknownClient));
    assert_eq!(store.subscriber_count("none").await, Err(StoreError::TopicNotFound("none".into())));
    assert_eq!(store.subscriber_count("news").await.unwrap(), 0);
}

pub async fn unregistering_ends_subscriptions(store: DynStore) {
    store.create_topic("news", HistorySettings::default()).await.unwrap();
    let alice = store.register(Some("alice")).await.unwrap();
    let bob = store.register(Some("bob")).await.unwrap();
    store.subscribe(alice.id, &topics(&["news"])).await.unwrap();
    store.subscribe(bob.id, &topics(&["news"])).await.unwrap();
    assert_eq!(store.subscriber_count("news").await.unwrap(), 2);
    store.unregister(alice.id).await.unwrap();
    assert_eq!(store.subscriber_count("news").await.unwrap(), 1);
    assert_eq!(store.client_count().await.unwrap(), 1);
}

pub async fn unknown_clients_are_told_apart(store: DynStore) {
    let alice = store.register(Some("alice")).await.unwrap();
    let bob = store.register(Some("bob")).await.unwrap();
    let nobody: ClientId = uuid::Uuid::new_v4();
    store.unregister(bob.id).await.unwrap();
    let unknown = store.unknown_clients(&[alice.id, bob.id, nobody]).await.unwrap();
    assert_eq!(unknown, [bob.id, nobody]);
    assert!(store.unknown_clients(&[]).await.unwrap().is_empty());
}

pub async fn relay_peers_meet_one_waiting_peer_at_a_time(store: DynStore) {
    let node = uuid::Uuid::new_v4();
    let [a, b, c, d] = [1, 2, 3, 4].map(|peer| PeerAddr { node, peer });
    assert_eq!(store.relay_meet("room", a).await, Ok(None), "the first waits");
    assert_eq!(store.relay_meet("room", a).await, Ok(None), "waiting again changes nothing");
    assert_eq!(store.relay_meet("other", c).await, Ok(None), "ids are separate");
    assert_eq!(store.relay_meet("room", b).await, Ok(Some(a)), "the next takes the waiting one");
    assert_eq!(store.relay_leave("room", a).await, Ok(false), "a taken peer no longer waits");
    assert_eq!(store.relay_meet("room", d).await, Ok(None), "then the next waits again");
    assert_eq!(store.relay_leave("room", b).await, Ok(false), "only the waiting peer leaves");
    assert_eq!(store.relay_leave("room", d).await, Ok(true));
    assert_eq!(store.relay_meet("room", b).await, Ok(None), "nobody waited any more");
    // Racing arrivals: every peer either waits alone or takes exactly one other.
    let arrivals = (10..30).map(|peer| {
        let store = store.clone();
        tokio::spawn(async move { store.relay_meet("race", PeerAddr { node, peer }).await })
    });
    let mut taken = Vec::new();
    let mut waited = 0;
    for arrival in arrivals {
        match arrival.await.unwrap().unwrap() {
            Some(peer) => taken.push(peer.peer),
            None => waited += 1,
        }
    }
    taken.sort();
    taken.dedup();
    assert_eq!((taken.len(), waited), (10, 10), "20 arrivals make 10 pairs");
}

fn message<'a>(
    from: Option<&'a str>,
    data: &'a str,
    idempotency: Option<Idempotency<'a>>,
) -> NewMessage<'a> {
    NewMessage { from, data, idempotency }
}

fn kept(offset: u64, from: Option<&str>, data: &str) -> HistoryEntry {
    HistoryEntry { offset, from: from.map(str::to_owned), data: data.to_owned() }
}

pub async fn publishes_get_offsets_without_gaps_and_the_history_keeps_the_last(store: DynStore) {
    store
        .create_topic("news", HistorySettings { size: 3, ttl: Duration::from_secs(60) })
        .await
        .unwrap();
    let alice = store.register(Some("alice")).await.unwrap();
    store.subscribe(alice.id, &topics(&["news"])).await.unwrap();
    let mut epochs = BTreeSet::new();
    for n in 1..=5u64 {
        let from = (n % 2 == 0).then_some("alice");
        let published =
            store.publish("news", message(from, &format!("{{\"n\":{n}}}"), None)).await.unwrap();
        assert_eq!((published.subscribers, published.position.offset), (1, n));
        epochs.insert(published.position.epoch);
    }
    assert_eq!(epochs.len(), 1, "one epoch while the topic lives");
    let page = store.history("news", 0, 100).await.unwrap();
    assert_eq!(page.position.offset, 5);
    assert_eq!(Some(&page.position.epoch), epochs.first());
    assert_eq!(page.oldest, 3, "three kept");
    assert_eq!(
        page.messages,
        [
            kept(3, None, r#"{"n":3}"#),
            kept(4, Some("alice"), r#"{"n":4}"#),
            kept(5, None, r#"{"n":5}"#)
        ]
    );
    assert_eq!(
        store.history("news", 4, 100).await.unwrap().messages,
        [kept(5, None, r#"{"n":5}"#)]
    );
    assert_eq!(store.history("news", 0, 1).await.unwrap().messages.len(), 1, "limit");
    assert!(store.history("news", 5, 100).await.unwrap().messages.is_empty());
    assert_eq!(
        store.publish("none", message(None, "1", None)).await,
        Err(StoreError::TopicNotFound("none".into()))
    );
    assert_eq!(store.history("none", 0, 1).await, Err(StoreError::TopicNotFound("none".into())));
}

pub async fn the_history_forgets_by_age(store: DynStore) {
    let history = HistorySettings { size: 10, ttl: Duration::from_millis(400) };
    store.create_topic("news", history).await.unwrap();
    store.publish("news", message(None, "1", None)).await.unwrap();
    store.publish("news", message(None, "2", None)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let page = store.history("news", 0, 100).await.unwrap();
    assert!(page.messages.is_empty(), "aged out: {page:?}");
    assert_eq!((page.position.offset, page.oldest), (2, 3));
    store.publish("news", message(None, "3", None)).await.unwrap();
    let page = store.history("news", 0, 100).await.unwrap();
    assert_eq!((page.oldest, page.messages), (3, vec![kept(3, None, "3")]));
}

pub async fn without_history_offsets_still_count(store: DynStore) {
    store
        .create_topic("news", HistorySettings { size: 0, ttl: Duration::from_secs(60) })
        .await
        .unwrap();
    store.create_topic("sports", HistorySettings { size: 10, ttl: Duration::ZERO }).await.unwrap();
    for topic in ["news", "sports"] {
        for n in 1..=3 {
            assert_eq!(
                store.publish(topic, message(None, "null", None)).await.unwrap().position.offset,
                n
            );
        }
        let page = store.history(topic, 0, 100).await.unwrap();
        assert!(page.messages.is_empty(), "{topic} keeps nothing");
        assert_eq!((page.position.offset, page.oldest), (3, 4));
    }
}

pub async fn a_topic_made_again_has_a_new_epoch_and_starts_over(store: DynStore) {
    store.create_topic("news", HistorySettings::default()).await.unwrap();
    store.create_topic("sports", HistorySettings::default()).await.unwrap();
    let first = store.publish("news", message(None, "1", None)).await.unwrap().position;
    let other = store.publish("sports", message(None, "1", None)).await.unwrap().position;
    assert_ne!(first.epoch, other.epoch, "each topic has its own epoch");
    store.delete_topic("news").await.unwrap();
    store.create_topic("news", HistorySettings::default()).await.unwrap();
    let page = store.history("news", 0, 100).await.unwrap();
    assert!(page.messages.is_empty(), "the old history is gone");
    assert_ne!(page.position.epoch, first.epoch);
    let again = store.publish("news", message(None, "2", None)).await.unwrap().position;
    assert_eq!(again.offset, 1);
    assert_eq!(again.epoch, page.position.epoch);
}

pub async fn racing_publishes_get_distinct_offsets(store: DynStore) {
    store.create_topic("news", HistorySettings::default()).await.unwrap();
    let publishes = (0..20).map(|n| {
        let store = store.clone();
        tokio::spawn(
            async move { store.publish("news", message(None, &n.to_string(), None)).await },
        )
    });
    let mut offsets = BTreeSet::new();
    for publish in publishes {
        offsets.insert(publish.await.unwrap().unwrap().position.offset);
    }
    assert_eq!(offsets, (1..=20).collect(), "each offset once, none skipped");
    let kept: Vec<u64> =
        store.history("news", 0, 100).await.unwrap().messages.iter().map(|m| m.offset).collect();
    assert_eq!(kept, (1..=20).collect::<Vec<_>>(), "kept in offset order");
}

pub async fn an_idempotency_key_publishes_once_within_its_window(store: DynStore) {
    store.create_topic("news", HistorySettings::default()).await.unwrap();
    store.create_topic("sports", HistorySettings::default()).await.unwrap();
    let long = |key| Some(Idempotency { key, window: Duration::from_secs(60) });
    let first = store.publish("news", message(None, "1", long("k1"))).await.unwrap();
    assert_eq!((first.position.offset, first.duplicate), (1, false));
    let again = store.publish("news", message(None, "1", long("k1"))).await.unwrap();
    assert_eq!(
        (again.position.clone(), again.subscribers, again.duplicate),
        (first.position, 0, true)
    );
    assert_eq!(store.history("news", 0, 100).await.unwrap().messages.len(), 1, "kept once");
    let other = store.publish("news", message(None, "2", long("k2"))).await.unwrap();
    assert_eq!((other.position.offset, other.duplicate), (2, false), "another key");
    let elsewhere = store.publish("sports", message(None, "1", long("k1"))).await.unwrap();
    assert!(!elsewhere.duplicate, "a key is per topic");

    let short = Some(Idempotency { key: "k3", window: Duration::from_millis(300) });
    assert!(!store.publish("news", message(None, "3", short)).await.unwrap().duplicate);
    assert!(store.publish("news", message(None, "3", short)).await.unwrap().duplicate);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = store.publish("news", message(None, "3", short)).await.unwrap();
    assert_eq!((later.position.offset, later.duplicate), (4, false), "the window passed");
}

pub async fn presence_counts_live_sockets_of_subscribers_on_live_nodes(store: DynStore) {
    store.create_topic("news", HistorySettings::default()).await.unwrap();
    let [alice, bob, carol] = [
        store.register(Some("alice")).await.unwrap(),
        store.register(Some("bob")).await.unwrap(),
        store.register(Some("carol")).await.unwrap(),
    ];
    for client in [&alice, &bob] {
        store.subscribe(client.id, &topics(&["news"])).await.unwrap();
    }
    let (steady, brief, silent) = (ClientId::new_v4(), ClientId::new_v4(), ClientId::new_v4());
    store.node_alive(steady, Duration::from_secs(60)).await.unwrap();
    store.node_alive(brief, Duration::from_millis(400)).await.unwrap();
    store.sockets_changed(steady, alice.id, 1).await.unwrap();
    store.sockets_changed(steady, alice.id, 1).await.unwrap();
    store.sockets_changed(brief, alice.id, 1).await.unwrap();
    store.sockets_changed(steady, carol.id, 1).await.unwrap();
    store.sockets_changed(silent, bob.id, 1).await.unwrap();
    let counts = |present: Vec<switchboard::store::Present>| -> Vec<(String, u64)> {
        present.into_iter().map(|p| (p.name, p.connections)).collect()
    };
    // Carol is not subscribed; bob's socket is on a node that never said it is alive.
    assert_eq!(counts(store.presence("news").await.unwrap()), [("alice".into(), 3)]);
    store.sockets_changed(steady, alice.id, -1).await.unwrap();
    assert_eq!(counts(store.presence("news").await.unwrap()), [("alice".into(), 2)]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(counts(store.presence("news").await.unwrap()), [("alice".into(), 1)], "expired");
    store.node_alive(silent, Duration::from_secs(60)).await.unwrap();
    let both = [("alice".into(), 1), ("bob".into(), 1)];
    assert_eq!(counts(store.presence("news").await.unwrap()), both);
    store.node_gone(steady).await.unwrap();
    assert_eq!(counts(store.presence("news").await.unwrap()), [("bob".into(), 1)]);
    store.sockets_changed(silent, bob.id, -1).await.unwrap();
    assert!(store.presence("news").await.unwrap().is_empty());
    assert_eq!(store.presence("none").await, Err(StoreError::TopicNotFound("none".into())));
}

pub async fn is_ready(store: DynStore) {
    store.ping().await.unwrap();
}

/// One test per check, each on a fresh store from `$factory`.
macro_rules! conformance_suite {
    ($module:ident, $factory:expr) => {
        mod $module {
            use super::*;

            conformance_suite!(@tests $factory;
                registers_with_unique_ids_and_names,
                names_are_reserved_until_unregistered,
                racing_registrations_of_one_name_give_exactly_one_winner,
                topics_are_created_listed_and_deleted,
                subscriptions_are_all_or_nothing,
                unknown_clients_and_topics_are_refused,
                unregistering_ends_subscriptions,
                unknown_clients_are_told_apart,
                relay_peers_meet_one_waiting_peer_at_a_time,
                publishes_get_offsets_without_gaps_and_the_history_keeps_the_last,
                the_history_forgets_by_age,
                without_history_offsets_still_count,
                a_topic_made_again_has_a_new_epoch_and_starts_over,
                racing_publishes_get_distinct_offsets,
                an_idempotency_key_publishes_once_within_its_window,
                presence_counts_live_sockets_of_subscribers_on_live_nodes,
                is_ready,
            );
        }
    };
    (@tests $factory:expr; $($check:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let (store, _keep_alive): (DynStore, _) = $factory.await;
                super::$check(store).await;
            }
        )+
    };
}

conformance_suite!(memory, async {
    (Arc::new(switchboard::store::MemoryStore::new()) as DynStore, ())
});

conformance_suite!(redis, async {
    let server = RedisServer::start().await;
    let pool = switchboard::redis_pool::RedisPool::new(&server.url()).expect("valid URL");
    (Arc::new(switchboard::store::RedisStore::new(pool, "conformance:")) as DynStore, server)
});
