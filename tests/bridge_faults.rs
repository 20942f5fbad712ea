//! Bridges against remote brokers that misbehave or meet limits: a scripted remote (`Fake`)
//! for what a real broker will not do on demand (lost sessions, reused Packet Identifiers,
//! floods, oversize packets, MQTT 5.0 limits), and in-process Roost brokers.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::BytesMut;
use common::bridge::*;
use common::*;
use roost::BridgeState;
use roost::codec::{
    self, AckKind, ConnAck, ConnAckProperties, Connect, Decoder, Packet, QoS, ReasonCode, SubAck,
    Version,
};
use roost::config::{BridgeConfig, BridgeDirection, BridgeProtocol, BridgeTopic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn bridge_at(port: u16, topics: Vec<BridgeTopic>) -> BridgeConfig {
    let mut b = BridgeConfig::new("edge", "127.0.0.1", port, topics);
    b.remote_clientid = Some("edge-bridge".into());
    b.restart_base = Duration::from_secs(1);
    b.restart_cap = None;
    b.try_private = false;
    b
}

/// A scripted remote broker.
struct Fake {
    listener: TcpListener,
}

struct FakeConn {
    stream: TcpStream,
    rbuf: BytesMut,
    dec: Decoder,
    version: Version,
}

impl Fake {
    async fn new() -> Fake {
        Fake {
            listener: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        }
    }
    fn port(&self) -> u16 {
        self.listener.local_addr().unwrap().port()
    }
    /// Accepts the next connection and reads its CONNECT (no answer yet).
    async fn accept_raw(&self, wait: Duration) -> (FakeConn, Box<Connect>) {
        let (stream, _) = tokio::time::timeout(wait, self.listener.accept())
            .await
            .expect("bridge connects in time")
            .unwrap();
        let mut c = FakeConn {
            stream,
            rbuf: BytesMut::new(),
            dec: Decoder::server(1 << 28),
            version: Version::V311,
        };
        match c.recv().await {
            Some(Packet::Connect(connect)) => {
                c.version = connect.version;
                (c, connect)
            }
            other => panic!("expected CONNECT, got {other:?}"),
        }
    }
    /// Accepts, answers CONNACK, and answers the SUBSCRIBE if one comes (returns packets seen
    /// before the SUBSCRIBE too).
    async fn accept(
        &self,
        session_present: bool,
        properties: ConnAckProperties,
        expect_subscribe: bool,
    ) -> FakeConn {
        let (mut c, _) = self.accept_raw(Duration::from_secs(15)).await;
        c.send(&Packet::ConnAck(ConnAck {
            session_present,
            code: ReasonCode::SUCCESS,
            properties,
        }))
        .await;
        if expect_subscribe {
            match c.recv().await {
                Some(Packet::Subscribe(s)) => {
                    let codes = s.filters.iter().map(|f| ReasonCode(f.qos as u8)).collect();
                    c.send(&Packet::SubAck(SubAck {
                        packet_id: s.packet_id,
                        codes,
                    }))
                    .await;
                }
                Some(other) => panic!("before SUBSCRIBE: {other:?}"),
                None => panic!("closed before SUBSCRIBE"),
            }
        }
        c
    }
}

impl FakeConn {
    async fn send(&mut self, p: &Packet) {
        let mut buf = BytesMut::new();
        codec::encode(p, self.version, None, &mut buf).expect("encodable");
        let _ = self.stream.write_all(&buf).await;
    }
    async fn recv(&mut self) -> Option<Packet> {
        self.recv_within(WAIT).await.expect("packet in time")
    }
    /// `Err(())` on timeout, `Ok(None)` on close.
    async fn recv_within(&mut self, wait: Duration) -> Result<Option<Packet>, ()> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.dec.decode(&mut self.rbuf) {
                Ok(Some(p)) => return Ok(Some(p)),
                Ok(None) => {}
                Err(e) => panic!("bridge sent garbage: {e:?}"),
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.rbuf)).await {
                Err(_) => return Err(()),
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
                Ok(Ok(_)) => {}
            }
        }
    }
}

fn pubp(topic: &str, qos: QoS, id: u16, payload: &[u8]) -> Packet {
    publish(topic, qos, id, payload)
}

// ---------------------------------------------------------------------------------------
// 1. The remote lost the bridge's session (CONNACK session present 0): a new QoS 2 message
//    reusing a packet id that was PUBREC'd on the old session is lost.
#[tokio::test]
async fn a_remote_that_lost_its_session_may_reuse_qos2_ids() {
    let fake = Fake::new().await;
    let edge = start_broker_with(|c| {
        c.bridges = vec![bridge_at(
            fake.port(),
            vec![line("cmd/#", BridgeDirection::In, QoS::ExactlyOnce, "", "")],
        )];
    })
    .await;
    let mut sub = subscriber(&edge, "sub", "cmd/#", QoS::ExactlyOnce).await;
    let mut r = fake.accept(false, Default::default(), true).await;
    wait_state(&edge, BridgeState::Connected).await;
    r.send(&pubp("cmd/a", QoS::ExactlyOnce, 1, b"first")).await;
    match r.recv().await {
        Some(Packet::Ack(a)) if a.kind == AckKind::PubRec => {}
        other => panic!("PUBREC expected: {other:?}"),
    }
    assert_eq!(
        &next_within(&mut sub, WAIT).await.unwrap().payload[..],
        b"first"
    );
    // The remote restarts without persistence: the link drops before its PUBREL.
    drop(r);
    let mut r = fake.accept(false, Default::default(), true).await;
    wait_state(&edge, BridgeState::Connected).await;
    // New session at the remote: its packet ids start over.
    r.send(&pubp("cmd/b", QoS::ExactlyOnce, 1, b"second")).await;
    match r.recv().await {
        Some(Packet::Ack(a)) if a.kind == AckKind::PubRec => {}
        other => panic!("PUBREC expected: {other:?}"),
    }
    r.send(&ack(AckKind::PubRel, 1)).await;
    match r.recv().await {
        Some(Packet::Ack(a)) if a.kind == AckKind::PubComp => {}
        other => panic!("PUBCOMP expected: {other:?}"),
    }
    let got = next_within(&mut sub, Duration::from_secs(3)).await;
    assert!(
        got.is_some(),
        "the second message, PUBREC'd and PUBCOMP'd to the remote, never reached the subscriber"
    );
}

// 2. Stale inbound QoS 2 ids (remote session lost) count against receive_maximum: once the
//    local session holds enough of them, every link is cut by DISCONNECT 0x93.
#[tokio::test]
async fn stale_qos2_ids_do_not_fill_the_receive_maximum() {
    let fake = Fake::new().await;
    let edge = start_broker_with(|c| {
        c.receive_maximum = 10;
        c.bridges = vec![bridge_at(
            fake.port(),
            vec![line("cmd/#", BridgeDirection::In, QoS::ExactlyOnce, "", "")],
        )];
    })
    .await;
    let mut r = fake.accept(false, Default::default(), true).await;
    wait_state(&edge, BridgeState::Connected).await;
    for id in 1..=8u16 {
        r.send(&pubp("cmd/a", QoS::ExactlyOnce, 1000 + id, b"x"))
            .await;
    }
    for _ in 1..=8 {
        match r.recv().await {
            Some(Packet::Ack(a)) if a.kind == AckKind::PubRec => {}
            other => panic!("PUBREC expected: {other:?}"),
        }
    }
    drop(r);
    // New remote session, fresh ids; three QoS 2 messages in flight.
    let mut r = fake.accept(false, Default::default(), true).await;
    wait_state(&edge, BridgeState::Connected).await;
    for id in 1..=3u16 {
        r.send(&pubp("cmd/b", QoS::ExactlyOnce, id, b"y")).await;
    }
    let mut recs = 0;
    loop {
        match r.recv_within(Duration::from_secs(3)).await {
            Ok(Some(Packet::Ack(a))) if a.kind == AckKind::PubRec => recs += 1,
            Ok(Some(other)) => println!("remote got {other:?}"),
            Ok(None) => break,
            Err(()) => break,
        }
        if recs == 3 {
            break;
        }
    }
    println!("bridges: {:?}", edge.bridges());
    assert_eq!(recs, 3, "all three PUBRECs; bridge: {:?}", edge.bridges());
}

// 3. max_keepalive applies to the bridge's local connection, which never pings.
#[tokio::test]
async fn max_keepalive_does_not_drop_an_idle_bridge() {
    let cloud = start_broker().await;
    let addr = cloud.local_addr();
    let edge = start_broker_with(|c| {
        c.max_keepalive = 2;
        c.bridges = vec![bridge_at(
            addr.port(),
            vec![line("t/#", BridgeDirection::Both, QoS::AtLeastOnce, "", "")],
        )];
    })
    .await;
    wait_state(&edge, BridgeState::Connected).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let info = edge.bridges()[0].clone();
    println!("{info:?}");
    assert_eq!(info.connects, 1, "idle link stays up: {info:?}");
}

// 4. A message on the prefix topic itself ("site" for "site/#").
#[tokio::test]
async fn the_parent_level_of_a_prefix_crosses() {
    let cloud = start_broker().await;
    let addr = cloud.local_addr();
    let edge = start_broker_with(|c| {
        c.bridges = vec![bridge_at(
            addr.port(),
            vec![
                line(
                    "#",
                    BridgeDirection::Out,
                    QoS::AtLeastOnce,
                    "site/",
                    "fleet/",
                ),
                line(
                    "#",
                    BridgeDirection::In,
                    QoS::AtLeastOnce,
                    "cmd/",
                    "fleetcmd/",
                ),
            ],
        )];
    })
    .await;
    wait_state(&edge, BridgeState::Connected).await;
    let mut at_cloud = subscriber(&cloud, "c", "#", QoS::AtLeastOnce).await;
    let mut at_edge = subscriber(&edge, "e", "cmd/#", QoS::AtLeastOnce).await;
    let (mut p, _) =
        RawClient::connect(edge.local_addr(), connect_packet(Version::V311, "p")).await;
    p.send(&pubp("site", QoS::AtLeastOnce, 1, b"parent")).await;
    assert!(matches!(p.recv().await, Some(Packet::Ack(_))));
    p.send(&pubp("site/x", QoS::AtLeastOnce, 2, b"child")).await;
    assert!(matches!(p.recv().await, Some(Packet::Ack(_))));
    let mut seen = Vec::new();
    while let Some(m) = next_within(&mut at_cloud, Duration::from_secs(2)).await {
        seen.push(m.topic);
    }
    let (mut q, _) =
        RawClient::connect(cloud.local_addr(), connect_packet(Version::V311, "q")).await;
    q.send(&pubp("fleetcmd", QoS::AtLeastOnce, 1, b"parent"))
        .await;
    assert!(matches!(q.recv().await, Some(Packet::Ack(_))));
    q.send(&pubp("fleetcmd/x", QoS::AtLeastOnce, 2, b"child"))
        .await;
    assert!(matches!(q.recv().await, Some(Packet::Ack(_))));
    let mut seen_edge = Vec::new();
    while let Some(m) = next_within(&mut at_edge, Duration::from_secs(2)).await {
        seen_edge.push(m.topic);
    }
    // `#` matches the parent level (MQTT-4.7.1-2): `site` is `fleet` on the other side.
    assert_eq!(seen, ["fleet", "fleet/x"]);
    assert_eq!(seen_edge, ["cmd", "cmd/x"]);
}

// 5. The renamed topic makes the packet larger than the remote's Maximum Packet Size: the
//    local broker thinks it fits.
#[tokio::test]
async fn a_message_the_remote_prefix_makes_too_large_does_not_stop_the_others() {
    let cloud = start_broker_with(|c| c.max_packet_size = 1000).await;
    let addr = cloud.local_addr();
    let edge = start_broker_with(|c| {
        c.bridges = vec![{
            let mut b = bridge_at(
                addr.port(),
                vec![line(
                    "#",
                    BridgeDirection::Out,
                    QoS::AtLeastOnce,
                    "",
                    "fleet/site-0001/gateway-0001/",
                )],
            );
            b.protocol = BridgeProtocol::Mqtt5;
            b
        }];
    })
    .await;
    wait_state(&edge, BridgeState::Connected).await;
    let mut at_cloud = subscriber(&cloud, "c", "#", QoS::AtLeastOnce).await;
    let (mut p, _) =
        RawClient::connect(edge.local_addr(), connect_packet(Version::V311, "p")).await;
    // Local PUBLISH to the bridge: 2 + 2 + 3 ("t/a") + 2 + ~4 (sub id) + payload.
    p.send(&pubp("t/a", QoS::AtLeastOnce, 1, &[b'x'; 975]))
        .await;
    assert!(matches!(p.recv().await, Some(Packet::Ack(_))));
    p.send(&pubp("t/b", QoS::AtLeastOnce, 2, b"small")).await;
    assert!(matches!(p.recv().await, Some(Packet::Ack(_))));
    let mut seen = Vec::new();
    while let Some(m) = next_within(&mut at_cloud, Duration::from_secs(8)).await {
        seen.push(m.topic);
    }
    let info = edge.bridges()[0].clone();
    println!("cloud saw {seen:?}; {info:?}");
    assert!(
        seen.iter().any(|t| t.ends_with("t/b")),
        "the small message after it crosses: {info:?}"
    );
}

// 6. A 3.1.1 remote (which cannot be told a Maximum Packet Size) sends one message larger than
//    this broker's max_packet_size.
#[tokio::test]
async fn an_oversize_message_from_a_311_remote_is_refused_not_fatal() {
    let fake = Fake::new().await;
    let edge = start_broker_with(|c| {
        c.max_packet_size = 2000;
        c.bridges = vec![bridge_at(
            fake.port(),
            vec![line("cmd/#", BridgeDirection::In, QoS::AtLeastOnce, "", "")],
        )];
    })
    .await;
    let mut r = fake.accept(false, Default::default(), true).await;
    wait_state(&edge, BridgeState::Connected).await;
    r.send(&pubp("cmd/big", QoS::AtLeastOnce, 1, &[0u8; 3000]))
        .await;
    // Acknowledged, dropped and counted: the link stays (a persistent remote would send it
    // again after every reconnect).
    let got = r.recv_within(Duration::from_secs(3)).await;
    assert!(matches!(got, Ok(Some(Packet::Ack(_)))), "{got:?}");
    assert_eq!(edge.bridges()[0].refused, 1);
    assert_eq!(edge.bridges()[0].connects, 1);
}

// 7. MQTT 5 remote with Maximum QoS 1 and Retain Available 0 (MQTT-3.2.2-11, -14).
#[tokio::test]
async fn maximum_qos_and_retain_available_of_the_remote() {
    let fake = Fake::new().await;
    let edge = start_broker_with(|c| {
        c.bridges = vec![{
            let mut b = bridge_at(
                fake.port(),
                vec![line("t/#", BridgeDirection::Out, QoS::ExactlyOnce, "", "")],
            );
            b.protocol = BridgeProtocol::Mqtt5;
            b
        }];
    })
    .await;
    let props = ConnAckProperties {
        maximum_qos: Some(1),
        retain_available: Some(false),
        ..Default::default()
    };
    let mut r = fake.accept(false, props, false).await;
    wait_state(&edge, BridgeState::Connected).await;
    let (mut p, _) =
        RawClient::connect(edge.local_addr(), connect_packet(Version::V311, "p")).await;
    p.send(&publish_with("t/a", QoS::ExactlyOnce, 1, b"q2", true))
        .await;
    let got = r.recv().await;
    println!("remote got {got:?}");
    match got {
        Some(Packet::Publish(m)) => {
            assert!(
                m.qos != QoS::ExactlyOnce && !m.retain,
                "QoS {:?} retain {} sent to a remote with Maximum QoS 1 / Retain Available 0",
                m.qos,
                m.retain
            )
        }
        other => panic!("{other:?}"),
    }
}

fn rss_mb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

// 10. A 3.1.1 remote (no Receive Maximum) sends faster than this broker takes messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_311_remote_meets_back_pressure() {
    let fake = Fake::new().await;
    let edge = start_broker_with(|c| {
        c.max_queued_messages = 10;
        c.bridges = vec![bridge_at(
            fake.port(),
            vec![line("cmd/#", BridgeDirection::In, QoS::AtLeastOnce, "", "")],
        )];
    })
    .await;
    // A durable subscriber that is away: its queue fills after 10 messages, then this broker
    // refuses (0x97) further ones from the bridge.
    let mut c = connect_packet(Version::V311, "away");
    c.clean_start = false;
    let (mut away, _) = RawClient::connect(edge.local_addr(), c).await;
    away.send(&subscribe("cmd/#", QoS::AtLeastOnce)).await;
    assert!(matches!(away.recv().await, Some(Packet::SubAck(_))));
    drop(away);
    wait_detached(&edge, "away").await;
    let r = fake.accept(false, Default::default(), true).await;
    wait_state(&edge, BridgeState::Connected).await;
    let before = rss_mb();
    let FakeConn { stream, .. } = r;
    let (mut rd, mut wr) = stream.into_split();
    tokio::spawn(async move {
        let mut b = vec![0u8; 65536];
        while rd.read(&mut b).await.unwrap_or(0) > 0 {}
    });
    let written = Arc::new(AtomicU64::new(0));
    let w2 = Arc::clone(&written);
    tokio::spawn(async move {
        let payload = vec![7u8; 10_000];
        for i in 0..40_000u32 {
            let mut buf = BytesMut::new();
            codec::encode(
                &pubp("cmd/x", QoS::AtLeastOnce, (i % 65535 + 1) as u16, &payload),
                Version::V311,
                None,
                &mut buf,
            )
            .unwrap();
            if wr.write_all(&buf).await.is_err() {
                return;
            }
            w2.fetch_add(buf.len() as u64, Relaxed);
        }
    });
    for s in 0..10 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        println!(
            "{s}s: remote wrote {} MB; RSS {} MB (was {before}); {:?}",
            written.load(Relaxed) >> 20,
            rss_mb(),
            edge.bridges()[0].state
        );
    }
    assert!(
        written.load(Relaxed) < 50 << 20,
        "the remote's writes meet back-pressure"
    );
}

// 12. Odd packets from an MQTT 5 remote, Receive Maximum 1, small Maximum Packet Size.
#[tokio::test]
async fn odd_remote_v5() {
    let fake = Fake::new().await;
    let edge = start_broker_with(|c| {
        c.bridges = vec![{
            let mut b = bridge_at(
                fake.port(),
                vec![
                    line("t/#", BridgeDirection::Out, QoS::AtLeastOnce, "", ""),
                    line("cmd/#", BridgeDirection::In, QoS::ExactlyOnce, "", ""),
                ],
            );
            b.protocol = BridgeProtocol::Mqtt5;
            b
        }];
    })
    .await;
    let props = ConnAckProperties {
        receive_maximum: Some(1),
        maximum_packet_size: Some(200),
        ..Default::default()
    };
    let mut r = fake.accept(false, props, true).await;
    wait_state(&edge, BridgeState::Connected).await;
    // Unknown acknowledgements.
    r.send(&ack(AckKind::PubAck, 777)).await;
    r.send(&ack(AckKind::PubComp, 778)).await;
    r.send(&ack(AckKind::PubRec, 779)).await;
    r.send(&ack(AckKind::PubRel, 780)).await;
    // An unknown PUBREL is completed (by this broker, which does not know it either).
    assert!(
        matches!(r.recv().await, Some(Packet::Ack(a)) if a.kind == AckKind::PubComp && a.packet_id == 780)
    );
    // Receive Maximum 1: three local messages; only one may be unacknowledged.
    let (mut p, _) =
        RawClient::connect(edge.local_addr(), connect_packet(Version::V311, "p")).await;
    for i in 1..=3u16 {
        p.send(&pubp("t/a", QoS::AtLeastOnce, i, b"m")).await;
    }
    let Some(Packet::Publish(first)) = r.recv().await else {
        panic!("the first message");
    };
    assert_eq!(
        r.recv_within(Duration::from_millis(500)).await,
        Err(()),
        "no second message before the first is acknowledged"
    );
    r.send(&ack(AckKind::PubAck, first.packet_id)).await;
    assert!(matches!(
        r.recv_within(WAIT).await,
        Ok(Some(Packet::Publish(_)))
    ));
    // Topic alias from the remote (none allowed): the link ends.
    let mut m = match pubp("cmd/x", QoS::AtLeastOnce, 5, b"a") {
        Packet::Publish(m) => m,
        _ => unreachable!(),
    };
    m.topic_alias = Some(1);
    r.send(&Packet::Publish(m)).await;
    assert!(matches!(
        r.recv_within(WAIT).await,
        Ok(Some(Packet::Disconnect(_)) | None)
    ));
    wait_until(|| {
        edge.bridges()[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("topic alias"))
    })
    .await;
}

// 14. A topic line added to the configuration while the remote is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_out_line_collects_while_the_remote_is_away() {
    let edge_dir = tempfile::tempdir().unwrap();
    let cloud = start_broker().await;
    let port = cloud.local_addr().port();
    let edge = start_broker_with(|c| {
        c.in_memory = false;
        c.data_dir = edge_dir.path().to_path_buf();
        c.bridges = vec![bridge_at(
            port,
            vec![line("a/#", BridgeDirection::Out, QoS::AtLeastOnce, "", "")],
        )];
    })
    .await;
    wait_state(&edge, BridgeState::Connected).await;
    edge.shutdown().await;
    cloud.shutdown().await;
    // Restarted with one more line; the remote is down.
    let edge = start_broker_with(|c| {
        c.in_memory = false;
        c.data_dir = edge_dir.path().to_path_buf();
        c.bridges = vec![bridge_at(
            port,
            vec![
                line("a/#", BridgeDirection::Out, QoS::AtLeastOnce, "", ""),
                line("b/#", BridgeDirection::Out, QoS::AtLeastOnce, "", ""),
            ],
        )];
    })
    .await;
    // The Session subscribes the added line before the remote is back.
    wait_until(|| edge.subscription_count() == 2).await;
    let (mut p, _) =
        RawClient::connect(edge.local_addr(), connect_packet(Version::V311, "p")).await;
    p.send(&pubp("a/x", QoS::AtLeastOnce, 1, b"a")).await;
    assert!(matches!(p.recv().await, Some(Packet::Ack(_))));
    p.send(&pubp("b/x", QoS::AtLeastOnce, 2, b"b")).await;
    assert!(matches!(p.recv().await, Some(Packet::Ack(_))));
    println!(
        "queued while the remote is down: {}",
        edge.bridges()[0].queued
    );
    let cloud = start_broker_with(|c| c.port = port).await;
    let mut at_cloud = subscriber(&cloud, "c", "#", QoS::AtLeastOnce).await;
    wait_state(&edge, BridgeState::Connected).await;
    let mut seen = Vec::new();
    while let Some(m) = next_within(&mut at_cloud, Duration::from_secs(3)).await {
        seen.push(m.topic);
    }
    println!("remote got {seen:?}");
    assert_eq!(seen, ["a/x", "b/x"]);
}

/// mosquitto 2.0 sends QoS 2 messages to a bridge well beyond any window before their
/// PUBRELs: the bridge keeps reading (the PUBRELs that free its window are behind them)
/// instead of stopping and waiting for ever.
#[tokio::test]
async fn qos2_messages_beyond_the_window_do_not_hide_the_pubrels_behind_them() {
    let fake = Fake::new().await;
    let edge = start_broker_with(|c| {
        c.receive_maximum = 5;
        c.bridges = vec![bridge_at(
            fake.port(),
            vec![line("cmd/#", BridgeDirection::In, QoS::ExactlyOnce, "", "")],
        )];
    })
    .await;
    let mut sub = subscriber(&edge, "sub", "cmd/#", QoS::ExactlyOnce).await;
    let mut r = fake.accept(false, Default::default(), true).await;
    wait_state(&edge, BridgeState::Connected).await;
    const N: u16 = 40;
    for id in 1..=N {
        r.send(&pubp("cmd/a", QoS::ExactlyOnce, id, &id.to_be_bytes()))
            .await;
    }
    // Every PUBREC is answered with PUBREL; all must complete.
    let mut completed = 0;
    while completed < N {
        match r.recv().await {
            Some(Packet::Ack(a)) if a.kind == AckKind::PubRec => {
                r.send(&ack(AckKind::PubRel, a.packet_id)).await;
            }
            Some(Packet::Ack(a)) if a.kind == AckKind::PubComp => completed += 1,
            Some(Packet::PingReq) => r.send(&Packet::PingResp).await,
            other => panic!("after {completed} PUBCOMPs: {other:?}"),
        }
    }
    // Delivered once each, in order.
    for id in 1..=N {
        let p = next_within(&mut sub, WAIT).await.expect("delivered");
        assert_eq!(&p.payload[..], id.to_be_bytes());
    }
}
