//! The WebSocket protocol over real sockets: delivery, subscriptions, errors, limits, slow
//! consumers, pings, CORS and graceful shutdown.

mod support;

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use support::*;
use switchboard_protocol::{CLOSE_SLOW_CONSUMER, CLOSE_UNREGISTERED, ServerEvent};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::{
    connect_async,
    tungstenite::{
        Message,
        protocol::frame::{
            Frame,
            coding::{Data, OpCode},
        },
    },
};

const QUIET: Duration = Duration::from_millis(300);

/// A plain TCP socket that asks to upgrade to client `id`'s WebSocket (with RFC 6455's example
/// key) and does nothing else.
async fn raw_socket(server: &TestServer, id: &str) -> TcpStream {
    let mut raw = TcpStream::connect(server.running.as_ref().unwrap().local_addr).await.unwrap();
    let request = format!(
        "GET /ws/{id} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    raw.write_all(request.as_bytes()).await.unwrap();
    raw
}

#[tokio::test]
async fn welcome_names_the_client_and_its_topics() {
    let server = TestServer::start().await;
    let (id, _) = server.register(Some("alice")).await;
    server.post("/subscribe", None, json!({"id": id, "topics": ["sports", "news"]})).await;
    let (_ws, topics) = server.connect(&id).await;
    assert_eq!(topics, ["news", "sports"]);
}

#[tokio::test]
async fn upgrade_is_refused_before_it_happens_for_unknown_ids() {
    let server = TestServer::start().await;
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_eq!(try_connect(&server.ws_url(&unknown), &[]).await.err(), Some(403));
    assert_eq!(try_connect(&server.ws_url("garbage"), &[]).await.err(), Some(403));
    let (status, _) = server.get(&format!("/ws/{unknown}")).await;
    assert_eq!(status, 400, "a plain GET is not an upgrade");
}

#[tokio::test]
async fn broadcast_reaches_every_socket_including_the_senders() {
    let server = TestServer::start().await;
    let (alice, mut alice_1) = server.client("alice").await;
    let (mut alice_2, _) = server.connect(&alice).await;
    let (_, mut bob) = server.client("bob").await;

    let (status, body) = server.post("/broadcast", Some(KEY), json!({"message": {"n": 1}})).await;
    assert_eq!((status, body), (200, json!({"recipients": 2})));
    for ws in [&mut alice_1, &mut alice_2, &mut bob] {
        assert_eq!(next_event(ws).await, message(None, None, json!({"n": 1})));
    }
    server.post("/broadcast", None, json!({"id": alice, "message": "hi"})).await;
    for ws in [&mut alice_1, &mut alice_2, &mut bob] {
        assert_eq!(next_event(ws).await, message(None, Some("alice"), json!("hi")));
    }
}

#[tokio::test]
async fn topic_messages_reach_only_subscribers() {
    let server = TestServer::start().await;
    let (alice, mut alice_ws) = server.client("alice").await;
    let (_, mut bob_ws) = server.client("bob").await;
    server.post("/subscribe", None, json!({"id": alice, "topics": ["news"]})).await;

    let (_, body) =
        server.post("/topics/news/publish", Some(KEY), json!({"message": "headline"})).await;
    assert_eq!(body["recipients"], 1);
    assert_eq!(next_event(&mut alice_ws).await, message(Some("news"), None, json!("headline")));
    assert_silent(&mut bob_ws, QUIET).await;
    server.post("/topics/sports/publish", Some(KEY), json!({"message": "score"})).await;
    assert_silent(&mut alice_ws, QUIET).await;
}

#[tokio::test]
async fn subscribe_and_unsubscribe_over_the_socket() {
    let server = TestServer::start().await;
    let (_, mut ws) = server.client("alice").await;
    send_json(&mut ws, json!({"type": "subscribe", "topics": ["sports"], "ref": 1})).await;
    assert_eq!(next_event(&mut ws).await, ServerEvent::Ack { reference: Some(json!(1)) });
    server.post("/topics/sports/publish", Some(KEY), json!({"message": 1})).await;
    assert_eq!(next_event(&mut ws).await, message(Some("sports"), None, json!(1)));

    send_json(&mut ws, json!({"type": "unsubscribe", "topics": ["sports"], "ref": "u"})).await;
    assert_eq!(next_event(&mut ws).await, ServerEvent::Ack { reference: Some(json!("u")) });
    server.post("/topics/sports/publish", Some(KEY), json!({"message": 2})).await;
    assert_silent(&mut ws, QUIET).await;

    send_json(&mut ws, json!({"type": "subscribe", "topics": ["nope"], "ref": 2})).await;
    match next_event(&mut ws).await {
        ServerEvent::Error { reference, error, .. } => {
            assert_eq!((reference, error.as_str()), (Some(json!(2)), "topic_not_found"));
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_http_subscribe_applies_to_live_sockets() {
    let server = TestServer::start().await;
    let (id, mut ws) = server.client("alice").await;
    let (mut second, _) = server.connect(&id).await;
    let (status, _) = server.post("/subscribe", None, json!({"id": id, "topics": ["news"]})).await;
    assert_eq!(status, 202);
    server.post("/topics/news/publish", Some(KEY), json!({"message": "now"})).await;
    assert_eq!(next_event(&mut ws).await, message(Some("news"), None, json!("now")));
    assert_eq!(next_event(&mut second).await, message(Some("news"), None, json!("now")));

    server.post("/unsubscribe", None, json!({"id": id, "topics": ["news"]})).await;
    server.post("/topics/news/publish", Some(KEY), json!({"message": "later"})).await;
    assert_silent(&mut ws, QUIET).await;
}

#[tokio::test]
async fn deleting_a_topic_ends_its_subscriptions() {
    let server = TestServer::start().await;
    let (id, mut ws) = server.client("alice").await;
    server.post("/subscribe", None, json!({"id": id, "topics": ["news"]})).await;
    server.delete("/topics/news", Some(KEY)).await;
    server.post("/topics", Some(KEY), json!({"name": "news"})).await;
    let (_, body) = server.post("/topics/news/publish", Some(KEY), json!({"message": 1})).await;
    assert_eq!(body["recipients"], 0);
    assert_silent(&mut ws, QUIET).await;
}

#[tokio::test]
async fn publish_and_broadcast_over_the_socket() {
    let server = TestServer::start().await;
    let (alice, mut alice_ws) = server.client("alice").await;
    let (_, mut bob_ws) = server.client("bob").await;
    server.post("/subscribe", None, json!({"id": alice, "topics": ["news"]})).await;

    send_json(&mut bob_ws, json!({"type": "publish", "topic": "news", "data": {"x": 1}, "ref": 9}))
        .await;
    assert_eq!(next_event(&mut bob_ws).await, ServerEvent::Ack { reference: Some(json!(9)) });
    assert_eq!(
        next_event(&mut alice_ws).await,
        message(Some("news"), Some("bob"), json!({"x": 1}))
    );

    send_json(&mut bob_ws, json!({"type": "broadcast", "data": [true]})).await;
    let mut bob_got = vec![next_event(&mut bob_ws).await, next_event(&mut bob_ws).await];
    bob_got.sort_by_key(|event| matches!(event, ServerEvent::Message { .. }));
    assert_eq!(
        bob_got,
        [ServerEvent::Ack { reference: None }, message(None, Some("bob"), json!([true]))]
    );
    assert_eq!(next_event(&mut alice_ws).await, message(None, Some("bob"), json!([true])));

    send_json(&mut bob_ws, json!({"type": "publish", "topic": "nope", "data": 1})).await;
    assert!(
        matches!(next_event(&mut bob_ws).await, ServerEvent::Error { error, .. } if error == "topic_not_found")
    );
}

#[tokio::test]
async fn malformed_unknown_and_binary_frames_get_errors_and_the_socket_stays_open() {
    let server = TestServer::start().await;
    let (_, mut ws) = server.client("alice").await;
    let expect_error =
        |event: ServerEvent, code: &str, reference: Option<serde_json::Value>| match event {
            ServerEvent::Error { reference: got_ref, error, message } => {
                assert_eq!((error.as_str(), got_ref), (code, reference));
                assert!(!message.is_empty());
            }
            other => panic!("expected error {code}, got {other:?}"),
        };
    ws.send(Message::text("not json")).await.unwrap();
    expect_error(next_event(&mut ws).await, "malformed_frame", None);
    send_json(&mut ws, json!({"type": "dance", "ref": 1})).await;
    expect_error(next_event(&mut ws).await, "unknown_frame", Some(json!(1)));
    send_json(&mut ws, json!({"type": "publish", "data": 1, "ref": 2})).await;
    expect_error(next_event(&mut ws).await, "malformed_frame", Some(json!(2)));
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    expect_error(next_event(&mut ws).await, "binary_frame", None);

    send_json(&mut ws, json!({"type": "ping", "ref": "still here"})).await;
    assert_eq!(
        next_event(&mut ws).await,
        ServerEvent::Ack { reference: Some(json!("still here")) }
    );
}

#[tokio::test]
async fn oversize_message_closes_with_1009() {
    let server = TestServer::start_with(|c| c.max_message_bytes = 1024).await;
    let (_, mut ws) = server.client("alice").await;
    // Just under the limit passes: an ack and the client's own copy of its broadcast.
    send_json(&mut ws, json!({"type": "broadcast", "data": "z".repeat(900)})).await;
    let mut got = vec![next_event(&mut ws).await, next_event(&mut ws).await];
    got.sort_by_key(|event| matches!(event, ServerEvent::Message { .. }));
    assert_eq!(
        got,
        [
            ServerEvent::Ack { reference: None },
            message(None, Some("alice"), json!("z".repeat(900)))
        ]
    );
    ws.send(Message::text("x".repeat(2000))).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(1009));
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    let server = TestServer::start().await;
    let (_, mut ws) = server.client("alice").await;
    let frame = Frame::message(vec![b'"', 0xff, 0xfe, b'"'], OpCode::Data(Data::Text), true);
    ws.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(1007));
}

#[tokio::test]
async fn unregister_closes_every_socket_with_4001() {
    let server = TestServer::start().await;
    let (id, mut first) = server.client("alice").await;
    let (mut second, _) = server.connect(&id).await;
    let (_, mut bob) = server.client("bob").await;
    let (status, body) = server.delete(&format!("/register/{id}"), None).await;
    assert_eq!((status, body), (200, json!({"id": id, "closed_connections": 2})));
    assert_eq!(close_code(&mut first).await, Some(CLOSE_UNREGISTERED));
    assert_eq!(close_code(&mut second).await, Some(CLOSE_UNREGISTERED));
    assert_eq!(try_connect(&server.ws_url(&id), &[]).await.err(), Some(403));
    server.post("/broadcast", Some(KEY), json!({"message": "bob still served"})).await;
    assert_eq!(next_event(&mut bob).await, message(None, None, json!("bob still served")));
}

#[tokio::test]
async fn a_slow_consumer_is_closed_while_others_still_receive() {
    // 300 x 60 KB is far more than the socket buffers and a 4-frame queue hold.
    const MESSAGES: usize = 300;
    let server = TestServer::start_with(|c| c.send_queue = 4).await;
    let (_, mut slow) = server.client("slow").await; // never reads until the end
    let (_, mut fast) = server.client("fast").await;
    let payload = "p".repeat(60_000);
    let data = move |i: usize| json!({"i": i, "p": payload});

    let expected = data.clone();
    let reader = tokio::spawn(async move {
        for i in 0..MESSAGES {
            assert_eq!(
                next_event(&mut fast).await,
                message(None, None, expected(i)),
                "in order, none lost"
            );
        }
        fast
    });
    for i in 0..MESSAGES {
        let (status, _) = server.post("/broadcast", Some(KEY), json!({"message": data(i)})).await;
        assert_eq!(status, 200);
    }
    let _fast = reader.await.expect("the fast reader got every message in order");
    assert!(server.stats().await["slow_consumer_closes"].as_u64().unwrap() >= 1);
    // The slow socket ends: its queued frames, then a 4008 close (or a cut if it is too late).
    let code = close_code(&mut slow).await;
    assert!(code.is_none() || code == Some(CLOSE_SLOW_CONSUMER), "closed with {code:?}");
    assert_eq!(server.stats().await["connections"], 1, "only the fast reader is left");
}

#[tokio::test]
async fn a_socket_whose_peer_stopped_reading_is_closed_once_its_writes_stall() {
    // A queue far longer than the socket buffers hold: only the stalled writes can close it.
    let server = TestServer::start_with(|c| c.send_queue = 100_000).await;
    let (id, _) = server.register(Some("stuck")).await;
    // A raw socket: it completes the handshake and then never reads.
    let raw = raw_socket(&server, &id).await;
    let (_, mut lively) = server.client("lively").await;
    let payload = "p".repeat(60_000);
    for i in 0..100 {
        let (status, _) = server.post("/broadcast", Some(KEY), json!({"message": payload})).await;
        assert_eq!(status, 200, "broadcast {i}");
        next_event(&mut lively).await;
    }
    let started = tokio::time::Instant::now();
    while server.stats().await["slow_consumer_closes"] != 1 {
        assert!(started.elapsed() < Duration::from_secs(15), "not closed after its writes stalled");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(server.stats().await["connections"], 1, "only the reader is left");
    server.post("/broadcast", Some(KEY), json!({"message": "still served"})).await;
    assert_eq!(next_event(&mut lively).await, message(None, None, json!("still served")));
    drop(raw);
}

#[tokio::test]
async fn a_client_that_does_not_answer_pings_is_closed() {
    let server = TestServer::start_with(|c| c.ping_interval = Duration::from_millis(200)).await;
    let (id, _) = server.register(Some("silent")).await;
    // A raw socket: it completes the handshake and then never answers anything.
    let mut raw = raw_socket(&server, &id).await;
    let mut received = Vec::new();
    let started = tokio::time::Instant::now();
    let read_all = tokio::time::timeout(WAIT, raw.read_to_end(&mut received)).await;
    assert!(read_all.is_ok(), "the server closed the connection");
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    assert!(text.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "accept key of RFC 6455's example");
    assert!(received.windows(2).any(|w| w == [0x89, 0x00]), "the server pinged");
    let code = 4002u16.to_be_bytes();
    assert!(received.windows(4).any(|w| w[0] == 0x88 && w[2..4] == code), "close 4002");
    assert!(started.elapsed() < Duration::from_secs(2), "closed after {:?}", started.elapsed());

    // A client that answers pings stays connected across many intervals.
    let (_, mut ws) = server.client("lively").await;
    assert_silent(&mut ws, Duration::from_millis(1000)).await;
    send_json(&mut ws, json!({"type": "ping", "ref": 1})).await;
    assert_eq!(next_event(&mut ws).await, ServerEvent::Ack { reference: Some(json!(1)) });
}

#[tokio::test]
async fn websocket_origins_follow_the_cors_allow_list() {
    let server =
        TestServer::start_with(|c| c.cors_origins = vec!["https://app.example".into()]).await;
    let (id, _) = server.register(Some("alice")).await;
    let url = server.ws_url(&id);
    assert_eq!(try_connect(&url, &[("Origin", "https://evil.example")]).await.err(), Some(403));
    assert!(try_connect(&url, &[("Origin", "https://app.example")]).await.is_ok());
    assert!(try_connect(&url, &[]).await.is_ok(), "no Origin: not a browser");
}

#[tokio::test]
async fn graceful_shutdown_closes_every_socket_and_relay_peer_with_1001() {
    let mut server = TestServer::start().await;
    let (_, mut alice) = server.client("alice").await;
    let (_, mut bob) = server.client("bob").await;
    let (mut relay_peer, _) = connect_async(server.relay_url("waiting")).await.unwrap();
    assert_eq!(next_frame(&mut relay_peer).await, Message::text("/status:waiting"));
    let running = server.running.take().unwrap();
    let addr = running.local_addr;
    let stopping = tokio::spawn(running.shutdown());
    assert_eq!(close_code(&mut alice).await, Some(1001));
    assert_eq!(close_code(&mut bob).await, Some(1001));
    assert_eq!(close_code(&mut relay_peer).await, Some(1001));
    tokio::time::timeout(WAIT, stopping).await.expect("shutdown is bounded").unwrap().unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "no longer accepting");
}

#[tokio::test]
async fn frames_over_64_kib_arrive_intact() {
    let server = TestServer::start_with(|c| c.max_message_bytes = 200_000).await;
    let (_, mut ws) = server.client("alice").await;
    for size in [125, 126, 65_535, 65_536, 150_000] {
        let data = "d".repeat(size);
        server.post("/broadcast", Some(KEY), json!({"message": &data})).await;
        assert_eq!(next_event(&mut ws).await, message(None, None, json!(data)), "size {size}");
    }
}

#[tokio::test]
async fn a_burst_of_small_and_large_frames_arrives_complete_and_in_order() {
    const BURST: usize = 300;
    let server = TestServer::start().await;
    let (reader_id, mut reader) = server.client("reader").await;
    let (_, mut sender) = server.client("sender").await;
    server.post("/subscribe", None, json!({"id": reader_id, "topics": ["news"]})).await;
    let data = |i: usize| {
        let filler = if i.is_multiple_of(10) { 20_000 } else { i % 7 };
        json!({"i": i, "filler": "f".repeat(filler)})
    };
    // Sent in one flush: the server applies them back to back, so the reader's queue fills
    // faster than its task drains it and frames go out in batches.
    for i in 0..BURST {
        let frame = json!({"type": "publish", "topic": "news", "data": data(i)});
        sender.feed(Message::text(frame.to_string())).await.unwrap();
    }
    sender.flush().await.unwrap();
    for i in 0..BURST {
        assert_eq!(next_event(&mut reader).await, message(Some("news"), Some("sender"), data(i)));
    }
    for _ in 0..BURST {
        assert!(matches!(next_event(&mut sender).await, ServerEvent::Ack { .. }));
    }
}

#[tokio::test]
async fn client_pings_are_answered_between_deliveries() {
    use futures_util::StreamExt;
    let server = TestServer::start().await;
    let (_, mut ws) = server.client("alice").await;
    for round in 0..20 {
        ws.send(Message::Ping(format!("p{round}").into_bytes().into())).await.unwrap();
        server.post("/broadcast", Some(KEY), json!({"message": round})).await;
        let (mut pong, mut delivered) = (false, false);
        while !(pong && delivered) {
            let frame = tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
            match frame {
                Message::Pong(payload) => {
                    assert_eq!(&payload[..], format!("p{round}").as_bytes());
                    pong = true;
                }
                Message::Text(text) => {
                    let event = ServerEvent::parse(&text).unwrap();
                    assert_eq!(event, message(None, None, json!(round)));
                    delivered = true;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn fragmented_messages_interleaved_pings_and_protocol_errors() {
    use futures_util::StreamExt;
    let server = TestServer::start().await;
    let (_, mut ws) = server.client("alice").await;
    let text = json!({"type": "ping", "ref": "in pieces ü"}).to_string();
    // Split inside the two-byte character: only the whole message must be valid UTF-8.
    let split = text.find('ü').unwrap() + 1;
    let (first, rest) = text.as_bytes().split_at(split);
    let fragment = |bytes: &[u8], data, fin| {
        Message::Frame(Frame::message(bytes.to_vec(), OpCode::Data(data), fin))
    };
    ws.send(fragment(first, Data::Text, false)).await.unwrap();
    ws.send(Message::Ping(b"between".to_vec().into())).await.unwrap();
    ws.send(fragment(rest, Data::Continue, true)).await.unwrap();
    let pong = tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(pong, Message::Pong(b"between".to_vec().into()));
    assert_eq!(
        next_event(&mut ws).await,
        ServerEvent::Ack { reference: Some(json!("in pieces ü")) }
    );

    // A continuation with no message begun is a protocol error.
    ws.send(fragment(b"x", Data::Continue, true)).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(1002));
}

#[tokio::test]
async fn a_close_from_the_client_is_answered_with_its_code() {
    use tokio_tungstenite::tungstenite::protocol::{CloseFrame, frame::coding::CloseCode};
    let server = TestServer::start().await;
    let (_, mut ws) = server.client("alice").await;
    let close = CloseFrame { code: CloseCode::from(4321), reason: "bye".into() };
    ws.close(Some(close)).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(4321));
}

/// `--max-connections`: past it a handshake (client or relay) answers 503 with the JSON error,
/// the sockets held are not disturbed, and a freed place can be taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_holds_at_most_its_maximum_of_connections() {
    let server = TestServer::start_with(|config| config.max_connections = 2).await;
    let (id, mut first) = server.client("alice").await;
    let mut peer = try_connect(&server.relay_url("room"), &[]).await.expect("a relay peer fits");
    assert_eq!(try_connect(&server.ws_url(&id), &[]).await.err(), Some(503), "a third socket");
    assert_eq!(try_connect(&server.relay_url("room"), &[]).await.err(), Some(503), "a third peer");
    let handshake = server
        .http
        .get(server.ws_url(&id).replacen("ws", "http", 1))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    let response = handshake.send().await.unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("maximum of 2"), "{body}");

    // The sockets held go on as before.
    send_json(&mut first, json!({"type": "ping", "ref": 1})).await;
    assert_eq!(next_event(&mut first).await, ServerEvent::Ack { reference: Some(json!(1)) });
    let _ = peer.close(None).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match try_connect(&server.ws_url(&id), &[]).await {
            Ok(_) => break,
            Err(503) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("the freed place is not taken: {status}"),
        }
    }
}
