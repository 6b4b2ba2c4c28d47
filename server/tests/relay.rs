//! Relay mode over real WebSockets: pairing by id, re-pairing with a waiting peer, text and
//! binary relayed in order, the unpaired and reserved-prefix errors, a slow partner, keys and
//! refusals before the upgrade; and across two nodes sharing a real Redis.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt, future::join_all};
use support::{TestServer, Ws, assert_silent, cluster, next_frame, try_connect};
use tokio_tungstenite::{connect_async, tungstenite::Message};

async fn peer(server: &TestServer, id: &str) -> Ws {
    let (ws, _) = connect_async(server.relay_url(id)).await.expect("relay socket opens");
    ws
}

async fn expect_texts(ws: &mut Ws, expected: &[&str]) {
    for text in expected {
        match next_frame(ws).await {
            Message::Text(got) => assert_eq!(got.as_str(), *text),
            other => panic!("expected {text}, got {other:?}"),
        }
    }
}

async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
}

/// A waiting peer and a newcomer on `id`, paired; returns (first, second).
async fn pair(first_server: &TestServer, second_server: &TestServer, id: &str) -> (Ws, Ws) {
    let mut first = peer(first_server, id).await;
    expect_texts(&mut first, &["/status:waiting"]).await;
    let mut second = peer(second_server, id).await;
    expect_texts(&mut second, &["/status:connected"]).await;
    expect_texts(&mut first, &["/remote:open", "/status:connected"]).await;
    (first, second)
}

/// Text and binary frames both ways, unchanged and in order.
async fn relays_both_ways(a: &mut Ws, b: &mut Ws) {
    for i in 0..100 {
        send_text(a, &format!("a{i}")).await;
    }
    b.send(Message::binary(vec![0u8, 159, 146, 150, 255])).await.expect("send");
    for i in 0..100 {
        expect_texts(b, &[&format!("a{i}")]).await;
    }
    match next_frame(a).await {
        Message::Binary(data) => assert_eq!(data.as_ref(), &[0u8, 159, 146, 150, 255]),
        other => panic!("expected the binary frame, got {other:?}"),
    }
    send_text(b, "{\"json\": true}").await;
    expect_texts(a, &["{\"json\": true}"]).await;
}

#[tokio::test]
async fn two_peers_with_one_id_are_paired_and_relay_text_and_binary_in_order() {
    let server = TestServer::start().await;
    let (mut a, mut b) = pair(&server, &server, "room:1").await;
    relays_both_ways(&mut a, &mut b).await;
    // Another id is another pair: nothing crosses.
    let (mut c, mut d) = pair(&server, &server, "room:2").await;
    send_text(&mut c, "for d").await;
    expect_texts(&mut d, &["for d"]).await;
    assert_silent(&mut a, Duration::from_millis(200)).await;
    assert_silent(&mut b, Duration::from_millis(200)).await;
    assert_eq!(server.stats().await["relay_peers"], 4);
}

#[tokio::test]
async fn a_peer_whose_partner_leaves_waits_or_pairs_with_the_waiting_one() {
    let server = TestServer::start().await;
    let (mut a, mut b) = pair(&server, &server, "call").await;
    // A third peer with the same id starts a new wait; a fourth pairs with it.
    let mut c = peer(&server, "call").await;
    expect_texts(&mut c, &["/status:waiting"]).await;

    b.close(None).await.expect("b leaves");
    expect_texts(&mut a, &["/remote:close", "/status:connected"]).await;
    expect_texts(&mut c, &["/remote:open", "/status:connected"]).await;
    relays_both_ways(&mut a, &mut c).await;

    // Nobody waits now: when c leaves, a waits.
    c.close(None).await.expect("c leaves");
    expect_texts(&mut a, &["/remote:close", "/status:waiting"]).await;
    let mut d = peer(&server, "call").await;
    expect_texts(&mut d, &["/status:connected"]).await;
    expect_texts(&mut a, &["/remote:open", "/status:connected"]).await;
    send_text(&mut d, "hello a").await;
    expect_texts(&mut a, &["hello a"]).await;
}

#[tokio::test]
async fn unpaired_and_reserved_prefix_frames_are_answered_with_errors_and_not_relayed() {
    let server = TestServer::start().await;
    let mut alone = peer(&server, "solo").await;
    expect_texts(&mut alone, &["/status:waiting"]).await;
    send_text(&mut alone, "anyone?").await;
    expect_texts(&mut alone, &["/error:0001:The message was not received by anyone.:anyone?"])
        .await;

    let mut partner = peer(&server, "solo").await;
    expect_texts(&mut partner, &["/status:connected"]).await;
    expect_texts(&mut alone, &["/remote:open", "/status:connected"]).await;
    for forged in ["/status:waiting", "/remote:close", "/error:0001:x:y"] {
        send_text(&mut alone, forged).await;
        let refusal = format!("/error:0002:Reserved prefix.:{forged}");
        expect_texts(&mut alone, &[&refusal]).await;
    }
    // Only the real message arrives; texts that merely contain the prefixes are fine.
    send_text(&mut alone, "see /status:x").await;
    expect_texts(&mut partner, &["see /status:x"]).await;
    assert_silent(&mut partner, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_partner_that_stops_reading_is_closed_and_the_sender_learns_remote_close() {
    let server = TestServer::start_with(|config| config.send_queue = 4).await;
    let (sender, stalled) = pair(&server, &server, "slow").await;
    let (mut sink, mut stream) = sender.split();
    // `stalled` never reads: its socket buffers fill, then its queue, and it is closed.
    let flood = tokio::spawn(async move {
        let payload = "x".repeat(60_000);
        for _ in 0..2_000 {
            if sink.send(Message::text(payload.clone())).await.is_err() {
                break;
            }
        }
        sink
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let message = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("the sender learns its partner left")
            .expect("open")
            .expect("frame");
        if message.to_text().is_ok_and(|text| text == "/remote:close") {
            break;
        }
    }
    flood.abort();
    assert_eq!(server.stats().await["slow_consumer_closes"], 1);
    drop(stalled);
}

#[tokio::test]
async fn bad_ids_keys_and_a_disabled_relay_are_refused_before_the_upgrade() {
    let server = TestServer::start().await;
    let long = "a".repeat(129);
    for bad in [long.as_str(), "a%20b", "a%2Fb", "caf%C3%A9"] {
        assert_eq!(try_connect(&server.relay_url(bad), &[]).await.err(), Some(400), "{bad}");
    }
    let ok = "A-z_0.9:x".to_owned() + &"a".repeat(119);
    assert!(try_connect(&server.relay_url(&ok), &[]).await.is_ok());
    // A plain GET is not an upgrade.
    let (status, body) = server.get("/relay/plain").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")));

    let keyed =
        TestServer::start_with(|config| config.relay_keys = vec!["k1".into(), "k2".into()]).await;
    let url = keyed.relay_url("room");
    assert_eq!(try_connect(&url, &[]).await.err(), Some(403));
    assert_eq!(try_connect(&format!("{url}?key=nope"), &[]).await.err(), Some(403));
    let mut ws = try_connect(&format!("{url}?key=k2"), &[]).await.expect("a valid key opens");
    expect_texts(&mut ws, &["/status:waiting"]).await;

    let off = TestServer::start_with(|config| config.no_relay = true).await;
    assert_eq!(try_connect(&off.relay_url("room"), &[]).await.err(), Some(404));
}

#[tokio::test]
async fn peers_on_two_nodes_sharing_redis_are_paired_and_relay_in_order() {
    let (_redis, nodes) = cluster(2).await;
    let (mut a, mut b) = pair(&nodes[0], &nodes[1], "cross").await;
    relays_both_ways(&mut a, &mut b).await;

    // A third peer waits on node 0; when b (node 1) leaves, a pairs with it.
    let mut c = peer(&nodes[0], "cross").await;
    expect_texts(&mut c, &["/status:waiting"]).await;
    b.close(None).await.expect("b leaves");
    expect_texts(&mut a, &["/remote:close", "/status:connected"]).await;
    expect_texts(&mut c, &["/remote:open", "/status:connected"]).await;

    // A peer on a node that shuts down leaves too: its partner on the other node learns it.
    let (mut d, e) = pair(&nodes[0], &nodes[1], "node-leaves").await;
    let mut nodes = nodes;
    nodes.pop().expect("node 1").shutdown().await;
    expect_texts(&mut d, &["/remote:close", "/status:waiting"]).await;
    drop(e);
    drop((a, c));
}

#[tokio::test]
async fn fifty_pairs_connecting_at_once_across_nodes_are_each_paired_exactly_once() {
    let (_redis, nodes) = cluster(2).await;
    // 100 peers at once: 25 ids, four peers (two pairs) per id, spread over both nodes.
    const PEERS: usize = 100;
    const IDS: usize = 25;
    let connects = (0..PEERS).map(|i| {
        let node = &nodes[(i + i / IDS) % 2];
        let id = format!("pair-{}", i % IDS);
        async move { (id.clone(), peer(node, &id).await) }
    });
    let mut peers = join_all(connects).await;

    // Each peer: waiting then paired (remote:open, connected) or directly connected.
    for (_, ws) in &mut peers {
        match next_frame(ws).await.into_text().expect("text").as_str() {
            "/status:connected" => {}
            "/status:waiting" => expect_texts(ws, &["/remote:open", "/status:connected"]).await,
            other => panic!("unexpected {other}"),
        }
    }
    // Each peer names itself; exactly one other peer of its id hears it, and that is the one it
    // hears: the pairing is a perfect matching within each id.
    for (i, (id, ws)) in peers.iter_mut().enumerate() {
        send_text(ws, &format!("{id}/{i}")).await;
    }
    let mut partner = vec![usize::MAX; PEERS];
    for (i, (id, ws)) in peers.iter_mut().enumerate() {
        let heard = next_frame(ws).await.into_text().expect("text").to_string();
        let (heard_id, heard_peer) = heard.split_once('/').expect("id/peer");
        assert_eq!(heard_id, id, "peer {i} heard a peer of another id");
        partner[i] = heard_peer.parse().expect("a peer number");
        assert_ne!(partner[i], i, "peer {i} heard itself");
    }
    for (i, &j) in partner.iter().enumerate() {
        assert_eq!(partner[j], i, "peer {i} hears {j}, but {j} hears {}", partner[j]);
    }
    // Nobody is paired twice, told anything more, or left waiting.
    join_all(peers.iter_mut().map(|(_, ws)| assert_silent(ws, Duration::from_millis(300)))).await;
    let peers_on = |stats: serde_json::Value| stats["relay_peers"].as_u64().unwrap_or_default();
    assert_eq!(peers_on(nodes[0].stats().await) + peers_on(nodes[1].stats().await), 100);
}
