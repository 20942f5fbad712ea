//! Cluster mode: a durable Session follows its client to another node (offline backlog in
//! order, in-flight messages sent again with their Packet Identifiers). Skipped when
//! `nats-server` is not installed, unless `ROOST_CLUSTER=require`.

mod common;

use std::time::{Duration, Instant};

use common::binary::BrokerProcess;
use common::bridge::next_within;
use common::cluster::{cluster_toml, start_node, start_node_with, wait_state};
use common::nats::{self, NatsCluster};
use common::{RawClient, WAIT, ack, connect_packet, publish, subscribe};
use roost::BrokerHandle;
use roost::codec::{AckKind, Connect, Packet, QoS, ReasonCode, Version};

fn start_nats() -> Option<NatsCluster> {
    if nats::skip_without_nats() {
        return None;
    }
    Some(NatsCluster::start(3))
}

/// A CONNECT that keeps its Session (3.1.1 clean session 0; 5.0 Clean Start 0, one hour).
fn durable(version: Version, id: &str) -> Connect {
    Connect {
        clean_start: false,
        session_expiry_interval: 3600,
        ..connect_packet(version, id)
    }
}

async fn connect(node: &BrokerHandle, connect: Connect) -> (RawClient, bool) {
    let id = connect.client_id.clone();
    let (c, ack) = RawClient::connect(node.local_addr(), connect).await;
    assert_eq!(ack.code, ReasonCode::SUCCESS, "{id}");
    (c, ack.session_present)
}

/// Publishes `count` QoS 1 messages `prefix-i` to `topic`, each acknowledged.
async fn publish_all(c: &mut RawClient, topic: &str, prefix: &str, count: usize) {
    for i in 0..count {
        let pid = u16::try_from(i % 60_000 + 1).expect("packet id");
        c.send(&publish(
            topic,
            QoS::AtLeastOnce,
            pid,
            format!("{prefix}-{i}").as_bytes(),
        ))
        .await;
        match c.recv().await {
            Some(Packet::Ack(a)) if a.packet_id == pid => {
                assert_eq!(a.reason.0, 0, "message {i} accepted")
            }
            other => panic!("expected the PUBACK of {pid}, got {other:?}"),
        }
    }
}

/// The next PUBLISH, not acknowledged.
async fn next_unacked(c: &mut RawClient) -> roost::codec::Publish {
    loop {
        match c.recv().await {
            Some(Packet::Publish(p)) => return p,
            Some(_) => {}
            None => panic!("closed while waiting for a PUBLISH"),
        }
    }
}

/// 1,000 QoS 1 messages queued for an offline durable Session on one node arrive, all and in
/// order, when its client connects to another node (session present); messages in flight
/// and not acknowledged there are sent again, with their Packet Identifiers and DUP
/// (MQTT-4.4.0-1), when it comes back to the first node; nothing arrives twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_durable_session_follows_its_client_to_another_node() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let n1 = start_node(&urls, "n1").await;
    let n2 = start_node(&urls, "n2").await;

    for version in [Version::V311, Version::V5] {
        let id = format!("follower-{version:?}");
        let topic = format!("follow/{version:?}");
        let (mut sub, present) = connect(&n1, durable(version, &id)).await;
        assert!(!present);
        sub.send(&subscribe(&format!("{topic}/#"), QoS::AtLeastOnce))
            .await;
        assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
        sub.send(&Packet::Disconnect(Default::default())).await;
        assert!(sub.until_closed().await.is_empty());
        common::wait_detached(&n1, &id).await;

        // Published on the other node while the client is away.
        let (mut publisher, _) = connect(&n2, connect_packet(version, &format!("pub-{id}"))).await;
        publish_all(&mut publisher, &format!("{topic}/a"), "offline", 1000).await;

        let (mut sub, present) = connect(&n2, durable(version, &id)).await;
        assert!(present, "{version:?}: the Session came along");
        for i in 0..1000 {
            let p = next_within(&mut sub, WAIT)
                .await
                .unwrap_or_else(|| panic!("{version:?}: message {i} of 1000 in time"));
            assert_eq!(
                std::str::from_utf8(&p.payload).expect("utf-8"),
                format!("offline-{i}"),
                "{version:?}: in order"
            );
        }
        assert!(
            next_within(&mut sub, Duration::from_millis(500))
                .await
                .is_none(),
            "{version:?}: nothing more"
        );

        // Two messages in flight, not acknowledged, when the client leaves for the first node.
        publish_all(&mut publisher, &format!("{topic}/b"), "inflight", 2).await;
        let first = next_unacked(&mut sub).await;
        let second = next_unacked(&mut sub).await;
        assert_eq!(&first.payload[..], b"inflight-0");
        assert_eq!(&second.payload[..], b"inflight-1");
        drop(sub);
        common::wait_detached(&n2, &id).await;
        publish_all(&mut publisher, &format!("{topic}/c"), "after", 3).await;

        let (mut sub, present) = connect(&n1, durable(version, &id)).await;
        assert!(present, "{version:?}: the Session came back");
        for (expected, payload) in [(&first, "inflight-0"), (&second, "inflight-1")] {
            let p = next_unacked(&mut sub).await;
            assert_eq!(&p.payload[..], payload.as_bytes(), "{version:?}");
            assert_eq!(
                p.packet_id, expected.packet_id,
                "{version:?}: same Packet Identifier"
            );
            assert!(p.dup, "{version:?}: DUP on the resend");
            sub.send(&ack(AckKind::PubAck, p.packet_id)).await;
        }
        for i in 0..3 {
            let p = next_within(&mut sub, WAIT)
                .await
                .unwrap_or_else(|| panic!("{version:?}: message after-{i} in time"));
            assert_eq!(
                &p.payload[..],
                format!("after-{i}").as_bytes(),
                "{version:?}"
            );
        }
        assert!(
            next_within(&mut sub, Duration::from_millis(500))
                .await
                .is_none(),
            "{version:?}: no copy twice"
        );
        sub.send(&Packet::Disconnect(Default::default())).await;
    }
}

/// A durable Session connected on one node moves when its client connects to another: the
/// first connection is taken over (5.0: DISCONNECT 0x8E) and the Session, with its
/// subscription, goes on at the new node; nodes with a store keep it across the move.
#[tokio::test(flavor = "multi_thread")]
async fn a_takeover_across_nodes_keeps_the_session() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let dir1 = tempfile::tempdir().expect("temp dir");
    let dir2 = tempfile::tempdir().expect("temp dir");
    let n1 = start_node_with(&urls, "n1", |c| {
        c.in_memory = false;
        c.data_dir = dir1.path().to_path_buf();
    })
    .await;
    let n2 = start_node_with(&urls, "n2", |c| {
        c.in_memory = false;
        c.data_dir = dir2.path().to_path_buf();
    })
    .await;

    let (mut first, _) = connect(&n1, durable(Version::V5, "mover")).await;
    first.send(&subscribe("move/#", QoS::ExactlyOnce)).await;
    assert!(matches!(first.recv().await, Some(Packet::SubAck(_))));
    let (mut publisher, _) = connect(&n1, connect_packet(Version::V5, "mover-pub")).await;
    publish_all(&mut publisher, "move/x", "before", 5).await;
    for i in 0..5 {
        let p = next_within(&mut first, WAIT).await.expect("delivered");
        assert_eq!(&p.payload[..], format!("before-{i}").as_bytes());
    }
    // The acknowledgements are handled before the client moves.
    first.send(&Packet::PingReq).await;
    assert!(matches!(first.recv().await, Some(Packet::PingResp)));

    let (mut second, present) = connect(&n2, durable(Version::V5, "mover")).await;
    assert!(present, "the Session moved with its client");
    match first.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, ReasonCode::SESSION_TAKEN_OVER),
        other => panic!("expected DISCONNECT 0x8E, got {other:?}"),
    }
    publish_all(&mut publisher, "move/x", "after", 5).await;
    for i in 0..5 {
        let p = next_within(&mut second, WAIT)
            .await
            .expect("delivered on the new node");
        assert_eq!(&p.payload[..], format!("after-{i}").as_bytes());
        if p.qos == QoS::ExactlyOnce {
            match second.recv().await {
                Some(Packet::Ack(a)) if a.kind == AckKind::PubRel => {
                    second.send(&ack(AckKind::PubComp, a.packet_id)).await
                }
                other => panic!("expected PUBREL, got {other:?}"),
            }
        }
    }
    assert!(
        next_within(&mut second, Duration::from_millis(500))
            .await
            .is_none(),
        "nothing twice"
    );
    // The first node no longer holds it.
    common::wait_until(|| n1.session_info("mover").is_none()).await;
}

/// A durable Session still receives QoS 0 messages, from its own node and from others, and
/// `$SYS`-free topics alike (they do not go through the stream).
#[tokio::test(flavor = "multi_thread")]
async fn a_durable_session_receives_qos0_from_every_node() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let n1 = start_node(&urls, "n1").await;
    let n2 = start_node(&urls, "n2").await;
    let (mut sub, _) = connect(&n1, durable(Version::V5, "q0sub")).await;
    sub.send(&subscribe("q0/#", QoS::AtLeastOnce)).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    let (mut local, _) = connect(&n1, connect_packet(Version::V5, "q0p1")).await;
    local
        .send(&publish("q0/local", QoS::AtMostOnce, 0, b"local"))
        .await;
    let p = next_within(&mut sub, WAIT)
        .await
        .expect("from its own node");
    assert_eq!(&p.payload[..], b"local");
    let (mut remote, _) = connect(&n2, connect_packet(Version::V5, "q0p2")).await;
    // NATS spreads the subscription's interest asynchronously: probe until one arrives.
    let deadline = Instant::now() + WAIT;
    loop {
        remote
            .send(&publish("q0/remote", QoS::AtMostOnce, 0, b"remote"))
            .await;
        if let Some(p) = next_within(&mut sub, Duration::from_millis(200)).await {
            assert_eq!(&p.payload[..], b"remote");
            break;
        }
        assert!(Instant::now() < deadline, "QoS 0 from another node in time");
    }
}

/// A durable CONNECT on another node after a connection without a durable Session is
/// answered at once (nothing to wait for), with a new Session.
#[tokio::test(flavor = "multi_thread")]
async fn after_an_ephemeral_connection_elsewhere_a_durable_connect_does_not_wait() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let n1 = start_node(&urls, "n1").await;
    let n2 = start_node(&urls, "n2").await;
    let (_first, _) = connect(&n1, connect_packet(Version::V5, "nd")).await;
    let started = Instant::now();
    let (_second, present) = connect(&n2, durable(Version::V5, "nd")).await;
    assert!(!present);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "CONNECT answered after {:?}",
        started.elapsed()
    );
}

/// A node started after messages were queued for an absent durable Session takes the
/// Session over with its backlog.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_started_later_takes_the_backlog_too() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let n1 = start_node(&urls, "n1").await;
    let (mut sub, _) = connect(&n1, durable(Version::V5, "late")).await;
    sub.send(&subscribe("late/#", QoS::AtLeastOnce)).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    sub.send(&Packet::Disconnect(Default::default())).await;
    assert!(sub.until_closed().await.is_empty());
    common::wait_detached(&n1, "late").await;
    let (mut publisher, _) = connect(&n1, connect_packet(Version::V5, "late-pub")).await;
    publish_all(&mut publisher, "late/x", "m", 5).await;

    let n3 = start_node(&urls, "n3").await;
    let (mut sub, present) = connect(&n3, durable(Version::V5, "late")).await;
    assert!(present);
    for i in 0..5 {
        let p = next_within(&mut sub, WAIT)
            .await
            .unwrap_or_else(|| panic!("message {i} of 5 in time"));
        assert_eq!(&p.payload[..], format!("m-{i}").as_bytes());
    }
}

/// The node holding a connected durable Session is killed with SIGKILL (the real binary):
/// the client resumes on another node with the subscriptions it made during that connection
/// (written when they changed), and messages acknowledged to their publishers while it was
/// away are all delivered (at least once).
#[tokio::test(flavor = "multi_thread")]
async fn after_kill_9_of_its_node_a_session_resumes_elsewhere_with_its_subscriptions() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let dir = tempfile::tempdir().expect("temp dir");
    let toml = cluster_toml(&urls, "doomed");
    let path = dir.path().to_path_buf();
    let doomed = tokio::task::spawn_blocking(move || {
        let p = BrokerProcess::start_with(&path, &toml);
        p.wait_log("cluster: reading the stream");
        p
    })
    .await
    .expect("node started");
    let n2 = start_node(&urls, "n2").await;

    let (mut sub, _) = RawClient::connect(doomed.addr, durable(Version::V5, "survivor")).await;
    sub.send(&subscribe("first/#", QoS::AtLeastOnce)).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    // Subscribed after the CONNECT: known elsewhere only if written when it changed.
    sub.send(&subscribe("second/#", QoS::AtLeastOnce)).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    // The state write is asynchronous: the kill comes once it holds both.
    wait_state(&urls, "survivor", |s| {
        s["subscriptions"]
            .as_array()
            .is_some_and(|subs| subs.len() == 2)
    })
    .await;
    tokio::task::spawn_blocking(move || doomed.kill9())
        .await
        .expect("killed");
    drop(sub);

    let (mut publisher, _) = connect(&n2, connect_packet(Version::V5, "survivor-pub")).await;
    publish_all(&mut publisher, "first/x", "one", 5).await;
    publish_all(&mut publisher, "second/x", "two", 5).await;

    let (mut sub, present) = connect(&n2, durable(Version::V5, "survivor")).await;
    assert!(present, "the Session resumed on another node");
    let mut got = Vec::new();
    while got.len() < 10 {
        let p = next_within(&mut sub, WAIT)
            .await
            .unwrap_or_else(|| panic!("only {got:?} arrived"));
        got.push(String::from_utf8_lossy(&p.payload).into_owned());
    }
    for prefix in ["one", "two"] {
        let mine: Vec<_> = got.iter().filter(|p| p.starts_with(prefix)).collect();
        let expected: Vec<_> = (0..5).map(|i| format!("{prefix}-{i}")).collect();
        assert_eq!(
            mine.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            expected,
            "{prefix}: all, in order"
        );
    }
}

/// No Local holds for a message the client published just before it moved to another node.
#[tokio::test(flavor = "multi_thread")]
async fn no_local_holds_across_a_move() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let n1 = start_node(&urls, "n1").await;
    let n2 = start_node(&urls, "n2").await;
    let (mut c, _) = connect(&n1, durable(Version::V5, "selfish")).await;
    let mut sub = roost::codec::Subscribe::single(1, "chat/#", QoS::AtLeastOnce);
    sub.filters[0].no_local = true;
    c.send(&Packet::Subscribe(sub)).await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    publish_all(&mut c, "chat/room", "mine", 3).await;
    c.send(&Packet::Disconnect(Default::default())).await;
    assert!(c.until_closed().await.is_empty());
    common::wait_detached(&n1, "selfish").await;

    let (mut other, _) = connect(&n1, connect_packet(Version::V5, "other")).await;
    publish_all(&mut other, "chat/room", "theirs", 1).await;
    let (mut c, present) = connect(&n2, durable(Version::V5, "selfish")).await;
    assert!(present);
    let p = next_within(&mut c, WAIT)
        .await
        .expect("the other client's message");
    assert_eq!(&p.payload[..], b"theirs-0");
    assert!(
        next_within(&mut c, Duration::from_millis(500))
            .await
            .is_none(),
        "none of its own"
    );
}

/// `session_owner_check` holds across nodes: a durable Session created by one verified user
/// cannot be taken over from another node by another user (5.0 CONNACK 0x87, 3.1.1 0x05);
/// its owner stays connected; the owner itself may move it.
#[tokio::test(flavor = "multi_thread")]
async fn another_user_cannot_take_a_session_over_from_another_node() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let dir = tempfile::tempdir().expect("temp dir");
    let passwd = dir.path().join("passwd");
    let mut file = roost::auth::PasswordFile::new();
    file.set("alice", b"a-secret").expect("set");
    file.set("bob", b"b-secret").expect("set");
    file.save(&passwd).expect("saved");
    let with_passwords = |c: &mut roost::Config| c.password_file = Some(passwd.clone());
    let n1 = start_node_with(&urls, "n1", with_passwords).await;
    let n2 = start_node_with(&urls, "n2", with_passwords).await;
    let as_user = |user: &str, password: &'static [u8], version| Connect {
        username: Some(user.to_string()),
        password: Some(bytes::Bytes::from_static(password)),
        ..durable(version, "shared-id")
    };
    let (mut alice, ack) =
        RawClient::connect(n1.local_addr(), as_user("alice", b"a-secret", Version::V5)).await;
    assert_eq!(ack.code, ReasonCode::SUCCESS);
    // Its state (with its owner) is written when it attaches.
    wait_state(&urls, "shared-id", |s| s["owner"] == "alice").await;
    for (version, refused) in [(Version::V5, 0x87), (Version::V311, 0x05)] {
        let (_, ack) =
            RawClient::connect(n2.local_addr(), as_user("bob", b"b-secret", version)).await;
        assert_eq!(ack.code.0, refused, "{version:?}");
    }
    alice.send(&Packet::PingReq).await;
    assert!(
        matches!(alice.recv().await, Some(Packet::PingResp)),
        "alice stays connected"
    );
    let (_, ack) =
        RawClient::connect(n2.local_addr(), as_user("alice", b"a-secret", Version::V5)).await;
    assert_eq!(ack.code, ReasonCode::SUCCESS);
    assert!(ack.session_present, "alice moved her Session");
}

/// QoS 2 across a move, both ways (MQTT-4.3.3): a subscriber that sent PUBREC and got
/// PUBREL on one node gets that PUBREL again (same Packet Identifier), not the message, on
/// the next; a publisher that got PUBREC on one node completes with PUBREL on the next, and
/// the message is delivered once.
#[tokio::test(flavor = "multi_thread")]
async fn qos2_handshakes_complete_on_the_next_node() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let n1 = start_node(&urls, "n1").await;
    let n2 = start_node(&urls, "n2").await;

    let (mut sub, _) = connect(&n1, durable(Version::V5, "q2sub")).await;
    sub.send(&subscribe("q2/#", QoS::ExactlyOnce)).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    let (mut publisher, _) = connect(&n1, durable(Version::V5, "q2pub")).await;
    publisher
        .send(&publish("q2/x", QoS::ExactlyOnce, 7, b"once"))
        .await;
    match publisher.recv().await {
        Some(Packet::Ack(a)) if a.kind == AckKind::PubRec && a.packet_id == 7 => {}
        other => panic!("expected PUBREC 7, got {other:?}"),
    }
    // The subscriber takes the message to PUBREL and stops there.
    let p = next_unacked(&mut sub).await;
    assert_eq!(&p.payload[..], b"once");
    sub.send(&ack(AckKind::PubRec, p.packet_id)).await;
    match sub.recv().await {
        Some(Packet::Ack(a)) if a.kind == AckKind::PubRel && a.packet_id == p.packet_id => {}
        other => panic!("expected PUBREL, got {other:?}"),
    }
    for c in [&mut sub, &mut publisher] {
        c.send(&Packet::Disconnect(Default::default())).await;
        assert!(c.until_closed().await.is_empty());
    }
    common::wait_detached(&n1, "q2sub").await;
    common::wait_detached(&n1, "q2pub").await;

    // The publisher completes on the other node: PUBREL 7 is known there.
    let (mut publisher, present) = connect(&n2, durable(Version::V5, "q2pub")).await;
    assert!(present);
    publisher.send(&ack(AckKind::PubRel, 7)).await;
    match publisher.recv().await {
        Some(Packet::Ack(a)) if a.kind == AckKind::PubComp && a.packet_id == 7 => {
            assert_eq!(a.reason.0, 0, "0x92 would mean the id was unknown there")
        }
        other => panic!("expected PUBCOMP 7, got {other:?}"),
    }
    // The subscriber gets the PUBREL again, and never the message a second time.
    let (mut sub, present) = connect(&n2, durable(Version::V5, "q2sub")).await;
    assert!(present);
    match sub.recv().await {
        Some(Packet::Ack(a)) if a.kind == AckKind::PubRel && a.packet_id == p.packet_id => {
            sub.send(&ack(AckKind::PubComp, a.packet_id)).await;
        }
        other => panic!("expected PUBREL {} again, got {other:?}", p.packet_id),
    }
    assert!(
        next_within(&mut sub, Duration::from_millis(800))
            .await
            .is_none(),
        "delivered once"
    );
}

/// A Session that ended on its node (5.0 DISCONNECT with Session Expiry Interval 0) is gone
/// on every node: a durable CONNECT on another node gets a new Session at once, and nothing
/// the old one received comes again.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_ended_on_one_node_is_not_brought_back_on_another() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let n1 = start_node(&urls, "n1").await;
    let n2 = start_node(&urls, "n2").await;
    let (mut sub, _) = connect(&n1, durable(Version::V5, "ending")).await;
    sub.send(&subscribe("ending/#", QoS::AtLeastOnce)).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    let (mut publisher, _) = connect(&n2, connect_packet(Version::V5, "ending-pub")).await;
    publish_all(&mut publisher, "ending/a", "m", 3).await;
    for i in 0..3 {
        let p = next_within(&mut sub, WAIT).await.expect("delivered");
        assert_eq!(&p.payload[..], format!("m-{i}").as_bytes());
    }
    sub.send(&Packet::PingReq).await;
    assert!(matches!(sub.recv().await, Some(Packet::PingResp)));
    sub.send(&Packet::Disconnect(roost::codec::Disconnect {
        session_expiry_interval: Some(0),
        ..Default::default()
    }))
    .await;
    assert!(sub.until_closed().await.is_empty());
    common::wait_until(|| n1.session_info("ending").is_none()).await;

    let started = Instant::now();
    let (mut sub, present) = connect(&n2, durable(Version::V5, "ending")).await;
    assert!(!present, "a new Session");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered after {:?}",
        started.elapsed()
    );
    assert!(
        next_within(&mut sub, Duration::from_millis(800))
            .await
            .is_none(),
        "nothing of the old Session"
    );
}

/// A durable subscriber moves between three nodes, back to nodes it was on before, while a
/// publisher keeps publishing: every message arrives, none twice (acknowledged ones are not
/// sent again), in order.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_moving_while_messages_flow_gets_each_once() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    // Nodes with stores (an absent Session's queue is then held in the store only).
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("temp dir"))
        .collect();
    let with_store = |i: usize| {
        let dir = dirs[i].path().to_path_buf();
        move |c: &mut roost::Config| {
            c.in_memory = false;
            c.data_dir = dir;
        }
    };
    let n1 = start_node_with(&urls, "n1", with_store(0)).await;
    let n2 = start_node_with(&urls, "n2", with_store(1)).await;
    let n3 = start_node_with(&urls, "n3", with_store(2)).await;
    let (mut sub, _) = connect(&n1, durable(Version::V5, "roamer")).await;
    sub.send(&subscribe("roam/#", QoS::AtLeastOnce)).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (mut publisher, _) = connect(&n2, connect_packet(Version::V5, "roam-pub")).await;
    let publishing = {
        let stop = std::sync::Arc::clone(&stop);
        tokio::spawn(async move {
            let mut sent = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                publish_all(&mut publisher, "roam/x", &format!("n{sent:05}"), 1).await;
                sent += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            sent
        })
    };
    let mut got: Vec<String> = Vec::new();
    let receive = |p: roost::codec::Publish, got: &mut Vec<String>| {
        got.push(String::from_utf8_lossy(&p.payload).into_owned());
    };
    let nodes = [&n3, &n1, &n2, &n3, &n1, &n3];
    for node in nodes {
        drop(sub);
        let (c, present) = connect(node, durable(Version::V5, "roamer")).await;
        assert!(present);
        sub = c;
        let until = Instant::now() + Duration::from_millis(700);
        while Instant::now() < until {
            if let Some(p) = next_within(&mut sub, Duration::from_millis(100)).await {
                receive(p, &mut got);
            }
        }
        // The acknowledgements reach the node before the client leaves.
        sub.send(&Packet::PingReq).await;
        loop {
            match sub.recv().await {
                Some(Packet::PingResp) => break,
                Some(Packet::Publish(p)) => {
                    sub.send(&ack(AckKind::PubAck, p.packet_id)).await;
                    receive(p, &mut got);
                }
                other => panic!("expected PINGRESP, got {other:?}"),
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = publishing.await.expect("publisher");
    while got.len() < sent {
        let Some(p) = next_within(&mut sub, WAIT).await else {
            break;
        };
        receive(p, &mut got);
    }
    let expected: Vec<String> = (0..sent).map(|i| format!("n{i:05}-0")).collect();
    let mut seen = std::collections::HashSet::new();
    let repeated: Vec<_> = got.iter().filter(|g| !seen.insert(*g)).collect();
    assert!(
        repeated.is_empty(),
        "{} repeated: {repeated:?}",
        repeated.len()
    );
    assert_eq!(got, expected, "all {sent}, once, in order");
}

/// A takeover on the same node (MQTT-3.1.4-3) keeps the durable Session there: it is not
/// taken for a move to another node.
#[tokio::test(flavor = "multi_thread")]
async fn a_takeover_on_the_same_node_keeps_the_session_there() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let n1 = start_node(&urls, "n1").await;
    let (mut first, _) = connect(&n1, durable(Version::V5, "local")).await;
    first.send(&subscribe("local/#", QoS::AtLeastOnce)).await;
    assert!(matches!(first.recv().await, Some(Packet::SubAck(_))));
    let before = wait_state(&urls, "local", |s| {
        s["subscriptions"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    let (mut second, present) = connect(&n1, durable(Version::V5, "local")).await;
    assert!(present);
    match first.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, ReasonCode::SESSION_TAKEN_OVER),
        other => panic!("expected DISCONNECT 0x8E, got {other:?}"),
    }
    // The first connection's final state is written before the second's (in order): once
    // the second's is there, a wrong "moved" would have ended the Session already.
    wait_state(&urls, "local", |s| {
        s["claim"].as_u64() > before["claim"].as_u64() && s["ended"] == false
    })
    .await;
    assert!(n1.session_info("local").is_some(), "still held here");
    let (mut publisher, _) = connect(&n1, connect_packet(Version::V5, "local-pub")).await;
    publish_all(&mut publisher, "local/x", "m", 2).await;
    for i in 0..2 {
        let p = next_within(&mut second, WAIT).await.expect("delivered");
        assert_eq!(&p.payload[..], format!("m-{i}").as_bytes());
    }
}
