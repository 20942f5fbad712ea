//! Idle plain-TCP connections parked without a task: each way a parked connection must be
//! resumed (a packet, a delivery, a takeover, its keep-alive deadline, the client going away,
//! shutdown), with brokers that park a connection as soon as it is idle, so every wait in
//! these tests crosses a park and a resume.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use roost::codec::{AckKind, Packet, Publish, PublishProperties, QoS, ReasonCode, Version, Will};
use roost::{BrokerHandle, Clock, Config};

/// A broker that parks connections the moment they are idle.
async fn parking_broker(adjust: impl FnOnce(&mut Config)) -> BrokerHandle {
    start_broker_with(|c| {
        c.park_after = Some(Duration::ZERO);
        adjust(c);
    })
    .await
}

async fn wait_parked(broker: &BrokerHandle, n: u64) {
    wait_until(|| broker.metrics().connections_parked == n).await;
}

fn will(topic: &str, payload: &'static [u8]) -> Will {
    Will {
        topic: topic.to_string(),
        payload: Bytes::from_static(payload),
        qos: QoS::AtLeastOnce,
        retain: false,
        delay_interval: 0,
        properties: PublishProperties::default(),
    }
}

async fn subscriber(
    addr: std::net::SocketAddr,
    version: Version,
    id: &str,
    filter: &str,
) -> RawClient {
    let (mut c, _) = RawClient::connect(addr, connect_packet(version, id)).await;
    c.send(&subscribe(filter, QoS::ExactlyOnce)).await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    c
}

async fn expect_publish(c: &mut RawClient) -> Publish {
    match c.recv().await {
        Some(Packet::Publish(p)) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

async fn expect_ack(c: &mut RawClient, kind: AckKind, packet_id: u16) {
    match c.recv().await {
        Some(Packet::Ack(a)) if a.kind == kind && a.packet_id == packet_id => {}
        other => panic!("expected {kind:?} {packet_id}, got {other:?}"),
    }
}

/// A parked subscriber is resumed by each delivery and by each of its acknowledgements, at
/// every QoS, and parks again in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_subscriber_gets_every_qos_and_acknowledges() {
    let broker = parking_broker(|_| {}).await;
    let addr = broker.local_addr();
    let mut sub = subscriber(addr, Version::V5, "sub", "a/#").await;
    wait_parked(&broker, 1).await;
    let (mut publisher, _) = RawClient::connect(addr, connect_packet(Version::V311, "pub")).await;
    wait_parked(&broker, 2).await;

    publisher
        .send(&publish("a/0", QoS::AtMostOnce, 0, b"zero"))
        .await;
    let p = expect_publish(&mut sub).await;
    assert_eq!((p.topic.as_str(), &p.payload[..]), ("a/0", &b"zero"[..]));
    wait_parked(&broker, 2).await;

    publisher
        .send(&publish("a/1", QoS::AtLeastOnce, 1, b"one"))
        .await;
    expect_ack(&mut publisher, AckKind::PubAck, 1).await;
    let p = expect_publish(&mut sub).await;
    assert_eq!((p.qos, &p.payload[..]), (QoS::AtLeastOnce, &b"one"[..]));
    wait_parked(&broker, 2).await;
    sub.send(&ack(AckKind::PubAck, p.packet_id)).await;
    wait_parked(&broker, 2).await;

    publisher
        .send(&publish("a/2", QoS::ExactlyOnce, 2, b"two"))
        .await;
    expect_ack(&mut publisher, AckKind::PubRec, 2).await;
    wait_parked(&broker, 2).await;
    publisher.send(&ack(AckKind::PubRel, 2)).await;
    expect_ack(&mut publisher, AckKind::PubComp, 2).await;
    let p = expect_publish(&mut sub).await;
    assert_eq!((p.qos, &p.payload[..]), (QoS::ExactlyOnce, &b"two"[..]));
    wait_parked(&broker, 2).await;
    sub.send(&ack(AckKind::PubRec, p.packet_id)).await;
    expect_ack(&mut sub, AckKind::PubRel, p.packet_id).await;
    wait_parked(&broker, 2).await;
    sub.send(&ack(AckKind::PubComp, p.packet_id)).await;
    wait_parked(&broker, 2).await;

    // Nothing more was sent: one copy of each (no duplicate from a resume).
    sub.send(&Packet::PingReq).await;
    assert_eq!(sub.recv().await, Some(Packet::PingResp));
    assert_eq!(broker.metrics().connections_open, 2);
    broker.shutdown().await;
}

/// A packet moves the keep-alive deadline of a parked connection, and the deadline, on the
/// broker's clock, closes it and publishes its will (MQTT-3.1.2-24).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keep_alive_of_a_parked_connection_runs_out() {
    let clock = Clock::manual();
    let broker = parking_broker(|c| c.clock = clock.clone()).await;
    let addr = broker.local_addr();
    let mut watcher = subscriber(addr, Version::V311, "watcher", "wills/#").await;
    let mut c = connect_packet(Version::V311, "sleepy");
    c.keep_alive = 10;
    c.will = Some(will("wills/sleepy", b"gone quiet"));
    let (mut sleepy, _) = RawClient::connect(addr, c).await;
    wait_parked(&broker, 2).await;

    // 14 s of 15: a PINGREQ in time starts the 15 s again.
    clock.advance(Duration::from_secs(14));
    sleepy.send(&Packet::PingReq).await;
    assert_eq!(sleepy.recv().await, Some(Packet::PingResp));
    wait_parked(&broker, 2).await;
    clock.advance(Duration::from_secs(14));
    sleepy.send(&Packet::PingReq).await;
    assert_eq!(sleepy.recv().await, Some(Packet::PingResp));
    wait_parked(&broker, 2).await;

    // Then silence: the watcher's keep alive is 30 s, only the sleepy client's 15 s run out.
    clock.advance(Duration::from_secs(16));
    let w = expect_publish(&mut watcher).await;
    assert_eq!(
        (w.topic.as_str(), &w.payload[..]),
        ("wills/sleepy", &b"gone quiet"[..])
    );
    assert_eq!(sleepy.until_closed().await, vec![], "closed by the broker");
    broker.shutdown().await;
}

/// A client whose socket closes while it is parked is seen at once: its will goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_while_parked_leaves_its_will() {
    let broker = parking_broker(|_| {}).await;
    let addr = broker.local_addr();
    let mut watcher = subscriber(addr, Version::V311, "watcher", "wills/#").await;
    let mut c = connect_packet(Version::V5, "dropper");
    c.will = Some(will("wills/dropper", b"dropped"));
    let (dropper, _) = RawClient::connect(addr, c).await;
    wait_parked(&broker, 2).await;
    drop(dropper);
    let w = expect_publish(&mut watcher).await;
    assert_eq!(
        (w.topic.as_str(), &w.payload[..]),
        ("wills/dropper", &b"dropped"[..])
    );
    wait_until(|| broker.metrics().clients_connected == 1).await;
    wait_parked(&broker, 1).await;
    broker.shutdown().await;
}

/// A takeover resumes the parked connection to close it with DISCONNECT 0x8E, which the old
/// client can read; the Session goes on with the new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_closes_the_parked_connection() {
    let broker = parking_broker(|_| {}).await;
    let addr = broker.local_addr();
    let mut c = connect_packet(Version::V5, "device");
    c.clean_start = false;
    c.session_expiry_interval = 600;
    let (mut old, _) = RawClient::connect(addr, c.clone()).await;
    old.send(&subscribe("cmd/#", QoS::AtLeastOnce)).await;
    assert!(matches!(old.recv().await, Some(Packet::SubAck(_))));
    wait_parked(&broker, 1).await;

    let (mut new, connack) = RawClient::connect(addr, c).await;
    assert!(connack.session_present);
    match old.until_closed().await.as_slice() {
        [Packet::Disconnect(d)] => assert_eq!(d.reason, ReasonCode(0x8E)),
        other => panic!("expected DISCONNECT 0x8E, got {other:?}"),
    }
    wait_parked(&broker, 1).await;
    let (mut publisher, _) = RawClient::connect(addr, connect_packet(Version::V311, "pub")).await;
    publisher
        .send(&publish("cmd/1", QoS::AtLeastOnce, 1, b"go"))
        .await;
    expect_ack(&mut publisher, AckKind::PubAck, 1).await;
    let p = expect_publish(&mut new).await;
    assert_eq!(&p.payload[..], b"go");
    broker.shutdown().await;
}

/// Shutdown resumes every parked connection to close it (MQTT 5.0: DISCONNECT 0x8B).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_parked_connections() {
    let broker = parking_broker(|_| {}).await;
    let addr = broker.local_addr();
    let mut clients = Vec::new();
    for i in 0..5 {
        let (c, _) = RawClient::connect(addr, connect_packet(Version::V5, &format!("c{i}"))).await;
        clients.push(c);
    }
    wait_parked(&broker, 5).await;
    tokio::time::timeout(WAIT, broker.shutdown())
        .await
        .expect("shutdown in time");
    for c in &mut clients {
        match c.until_closed().await.as_slice() {
            [Packet::Disconnect(d)] => assert_eq!(d.reason, ReasonCode(0x8B)),
            other => panic!("expected DISCONNECT 0x8B, got {other:?}"),
        }
    }
}

/// A durable subscriber parked between messages gets each committed QoS 1 message once, in
/// order, across a reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_durable_subscriber_gets_its_backlog() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data_dir = dir.path().to_path_buf();
    let broker = parking_broker(|c| {
        c.in_memory = false;
        c.data_dir = data_dir;
    })
    .await;
    let addr = broker.local_addr();
    let mut c = connect_packet(Version::V311, "durable");
    c.clean_start = false;
    let (mut sub, _) = RawClient::connect(addr, c.clone()).await;
    sub.send(&subscribe("d/#", QoS::AtLeastOnce)).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    let (mut publisher, _) = RawClient::connect(addr, connect_packet(Version::V311, "pub")).await;
    wait_parked(&broker, 2).await;
    for i in 1..=10u16 {
        publisher
            .send(&publish(
                "d/x",
                QoS::AtLeastOnce,
                i,
                format!("m{i}").as_bytes(),
            ))
            .await;
        expect_ack(&mut publisher, AckKind::PubAck, i).await;
    }
    for i in 1..=5 {
        let p = expect_publish(&mut sub).await;
        assert_eq!(p.payload, format!("m{i}").as_bytes());
        sub.send(&ack(AckKind::PubAck, p.packet_id)).await;
    }
    // Offline for the rest, then back: the backlog, in order.
    let unacked: Vec<Publish> = {
        let mut seen = Vec::new();
        for _ in 6..=10 {
            seen.push(expect_publish(&mut sub).await);
        }
        seen
    };
    drop(sub);
    wait_detached(&broker, "durable").await;
    let (mut sub, connack) = RawClient::connect(addr, c).await;
    assert!(connack.session_present);
    for (i, first) in (6..=10).zip(unacked) {
        let p = expect_publish(&mut sub).await;
        assert_eq!(p.payload, format!("m{i}").as_bytes());
        assert_eq!(p.payload, first.payload);
        sub.send(&ack(AckKind::PubAck, p.packet_id)).await;
    }
    sub.send(&Packet::PingReq).await;
    assert_eq!(sub.recv().await, Some(Packet::PingResp), "no further copy");
    broker.shutdown().await;
}

/// Many connections park and resume all the time while messages flow to all of them: none
/// is lost, none comes twice, none is out of order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_park_and_resume_without_loss() {
    const SUBSCRIBERS: usize = 40;
    const ROUNDS: u16 = 25;
    let broker = parking_broker(|_| {}).await;
    let addr = broker.local_addr();
    let mut subs = Vec::new();
    for i in 0..SUBSCRIBERS {
        let version = if i % 2 == 0 {
            Version::V311
        } else {
            Version::V5
        };
        subs.push(subscriber(addr, version, &format!("s{i}"), "all").await);
    }
    let (mut publisher, _) = RawClient::connect(addr, connect_packet(Version::V5, "pub")).await;
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                for round in 1..=ROUNDS {
                    let p = expect_publish(&mut s).await;
                    assert_eq!(p.payload, format!("r{round}").as_bytes());
                    if p.qos == QoS::AtLeastOnce {
                        s.send(&ack(AckKind::PubAck, p.packet_id)).await;
                    }
                }
                s.send(&Packet::PingReq).await;
                assert_eq!(s.recv().await, Some(Packet::PingResp), "no extra copy");
            })
        })
        .collect();
    for round in 1..=ROUNDS {
        let qos = if round % 2 == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        let id = if qos == QoS::AtMostOnce { 0 } else { round };
        publisher
            .send(&publish("all", qos, id, format!("r{round}").as_bytes()))
            .await;
        if qos == QoS::AtLeastOnce {
            expect_ack(&mut publisher, AckKind::PubAck, round).await;
        }
        // Let some connections park between rounds.
        tokio::time::sleep(Duration::from_millis(u64::from(round % 3) * 5)).await;
    }
    for r in readers {
        tokio::time::timeout(WAIT, r)
            .await
            .expect("every subscriber done in time")
            .expect("every subscriber got every message once, in order");
    }
    broker.shutdown().await;
}

/// TLS and WebSocket connections keep their tasks (their streams hold state the table cannot
/// watch); plain TCP parks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_plain_tcp_connections_park() {
    let broker = parking_broker(|c| {
        c.listeners.push(roost::config::ListenerConfig::new(
            roost::config::ListenerKind::Ws,
            "127.0.0.1".parse().expect("address"),
            0,
        ));
    })
    .await;
    let ws = broker
        .addr_of(roost::config::ListenerKind::Ws)
        .expect("WebSocket listener");
    let mut o = rumqttc::MqttOptions::new("ws-client", format!("ws://{ws}/mqtt"), ws.port());
    o.set_transport(rumqttc::Transport::Ws);
    o.set_keep_alive(Duration::from_secs(30));
    let (_ws_client, _) = v4_connect(o).await;
    let (_tcp, _) =
        RawClient::connect(broker.local_addr(), connect_packet(Version::V311, "tcp")).await;
    wait_parked(&broker, 1).await;
    wait_until(|| broker.metrics().clients_connected == 2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        broker.metrics().connections_parked,
        1,
        "only the TCP client parked"
    );
    broker.shutdown().await;
}

/// A connection that read large packets (its read buffer grew) parks as well once idle, and
/// goes on with the smallest buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_read_large_packets_parks() {
    let broker = parking_broker(|_| {}).await;
    let addr = broker.local_addr();
    let mut sub = subscriber(addr, Version::V311, "sub", "big/#").await;
    let (mut publisher, _) = RawClient::connect(addr, connect_packet(Version::V311, "pub")).await;
    wait_parked(&broker, 2).await;
    let payload = vec![b'x'; 300 * 1024];
    for i in 1..=3u16 {
        publisher
            .send(&publish("big/x", QoS::AtLeastOnce, i, &payload))
            .await;
        expect_ack(&mut publisher, AckKind::PubAck, i).await;
        let p = expect_publish(&mut sub).await;
        assert_eq!(p.payload.len(), payload.len());
        sub.send(&ack(AckKind::PubAck, p.packet_id)).await;
        wait_parked(&broker, 2).await;
    }
    publisher
        .send(&publish("big/y", QoS::AtMostOnce, 0, b"small"))
        .await;
    assert_eq!(&expect_publish(&mut sub).await.payload[..], b"small");
    wait_parked(&broker, 2).await;
    broker.shutdown().await;
}

/// A delivery queued while the subscriber parks, is resumed by its own next packet before its
/// markers are set, and parks again, still reaches it without any further packet from it
/// (the first park must neither leave stale markers nor swallow the delivery's wake-up).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delivery_racing_a_park_and_a_resume_is_not_lost() {
    let broker = parking_broker(|_| {}).await;
    let addr = broker.local_addr();
    let mut c = connect_packet(Version::V311, "racer");
    c.keep_alive = 0;
    let (mut sub, _) = RawClient::connect(addr, c).await;
    sub.send(&subscribe("race/#", QoS::AtMostOnce)).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    let (mut publisher, _) = RawClient::connect(addr, connect_packet(Version::V311, "pub")).await;
    wait_parked(&broker, 2).await;
    for round in 0..20u32 {
        // Two packets close together (the second arrives while the first's park is under
        // way), then a delivery; then the subscriber only reads.
        sub.send(&Packet::PingReq).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
        sub.send(&Packet::PingReq).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
        let payload = format!("r{round}");
        publisher
            .send(&publish("race/x", QoS::AtMostOnce, 0, payload.as_bytes()))
            .await;
        let (mut pongs, mut got) = (0, false);
        while pongs < 2 || !got {
            match tokio::time::timeout(Duration::from_secs(3), sub.recv()).await {
                Ok(Some(Packet::PingResp)) => pongs += 1,
                Ok(Some(Packet::Publish(p))) => {
                    assert_eq!(p.payload, payload.as_bytes());
                    got = true;
                }
                other => {
                    panic!("round {round}: delivery lost ({pongs} PINGRESP, got {got}): {other:?}")
                }
            }
        }
    }
    broker.shutdown().await;
}

/// On a single-threaded runtime too, a connection resumed because its socket is readable
/// reads before it could park again.
#[tokio::test]
async fn a_resumed_connection_reads_on_a_current_thread_runtime() {
    let broker = parking_broker(|_| {}).await;
    let (mut c, _) =
        RawClient::connect(broker.local_addr(), connect_packet(Version::V5, "single")).await;
    for _ in 0..5 {
        wait_parked(&broker, 1).await;
        c.send(&Packet::PingReq).await;
        assert_eq!(c.recv().await, Some(Packet::PingResp));
    }
    broker.shutdown().await;
}
