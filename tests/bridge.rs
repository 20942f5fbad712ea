//! Bridges between brokers: a Roost bridged to another Roost (in process) here; against the
//! real mosquitto in `bridge_mosquitto.rs`.

mod common;

use std::time::Duration;

use common::binary::BrokerProcess;
use common::bridge::*;
use common::*;
use roost::codec::{AckKind, Packet, QoS, Version};
use roost::config::{BridgeConfig, BridgeDirection, BridgeTopic};
use roost::{BridgeState, BrokerHandle};

/// Waits (bounded) until the bridge of `broker` is connected.
async fn wait_connected(broker: &BrokerHandle) {
    wait_state(broker, BridgeState::Connected).await;
}

/// A bridge to `remote` that reconnects quickly.
fn bridge_to(remote: &BrokerHandle, topics: Vec<BridgeTopic>) -> BridgeConfig {
    let addr = remote.local_addr();
    let mut b = BridgeConfig::new("edge", &addr.ip().to_string(), addr.port(), topics);
    b.remote_clientid = Some("edge-bridge".into());
    b.restart_base = Duration::from_secs(1);
    b.restart_cap = None;
    b
}

#[tokio::test]
async fn messages_cross_a_two_way_bridge_with_prefixes_and_do_not_come_back() {
    let cloud = start_broker().await;
    let edge = start_broker_with(|c| {
        c.bridges = vec![bridge_to(
            &cloud,
            vec![
                line(
                    "sensors/#",
                    BridgeDirection::Out,
                    QoS::AtLeastOnce,
                    "",
                    "site1/",
                ),
                line("cmd/#", BridgeDirection::In, QoS::ExactlyOnce, "", "site1/"),
                line("chat/#", BridgeDirection::Both, QoS::AtLeastOnce, "", ""),
            ],
        )]
    })
    .await;
    wait_connected(&edge).await;
    let mut at_cloud = subscriber(&cloud, "c-sub", "#", QoS::ExactlyOnce).await;
    let mut at_edge = subscriber(&edge, "e-sub", "#", QoS::ExactlyOnce).await;

    let (mut e_pub, _) =
        RawClient::connect(edge.local_addr(), connect_packet(Version::V311, "e-pub")).await;
    e_pub
        .send(&publish("sensors/t1", QoS::AtLeastOnce, 1, b"21.5"))
        .await;
    let p = next_message(&mut at_cloud).await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("site1/sensors/t1", &b"21.5"[..])
    );
    assert_eq!(next_message(&mut at_edge).await.topic, "sensors/t1");

    let (mut c_pub, _) =
        RawClient::connect(cloud.local_addr(), connect_packet(Version::V311, "c-pub")).await;
    c_pub
        .send(&publish("site1/cmd/reboot", QoS::ExactlyOnce, 1, b"now"))
        .await;
    assert_eq!(next_message(&mut at_cloud).await.topic, "site1/cmd/reboot");
    let p = next_message(&mut at_edge).await;
    assert_eq!((p.topic.as_str(), p.qos), ("cmd/reboot", QoS::ExactlyOnce));

    // Both ways: one copy on each side, none sent back over the bridge.
    e_pub
        .send(&publish("chat/a", QoS::AtLeastOnce, 2, b"from edge"))
        .await;
    c_pub
        .send(&publish("chat/b", QoS::AtLeastOnce, 2, b"from cloud"))
        .await;
    let mut seen_cloud = vec![
        next_message(&mut at_cloud).await.topic,
        next_message(&mut at_cloud).await.topic,
    ];
    let mut seen_edge = vec![
        next_message(&mut at_edge).await.topic,
        next_message(&mut at_edge).await.topic,
    ];
    seen_cloud.sort();
    seen_edge.sort();
    assert_eq!(seen_cloud, ["chat/a", "chat/b"]);
    assert_eq!(seen_edge, ["chat/a", "chat/b"]);
    // Nothing more arrives (a loop would bring the chat messages again).
    e_pub
        .send(&publish("sensors/end", QoS::AtLeastOnce, 3, b""))
        .await;
    assert_eq!(next_message(&mut at_cloud).await.topic, "site1/sensors/end");
    assert_eq!(next_message(&mut at_edge).await.topic, "sensors/end");
    // Counted once acknowledged by the far side.
    wait_until(|| {
        let info = &edge.bridges()[0];
        (info.forwarded_out, info.forwarded_in, info.queued) == (3, 2, 0)
    })
    .await;
}

/// Starts a broker with a store in `dir` on `port` (0: any).
async fn durable_broker(dir: &std::path::Path, port: u16) -> BrokerHandle {
    start_broker_with(|c| {
        c.port = port;
        c.in_memory = false;
        c.data_dir = dir.to_path_buf();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_wait_at_the_edge_while_the_remote_is_down_and_arrive_in_order() {
    let cloud_dir = tempfile::tempdir().unwrap();
    let edge_dir = tempfile::tempdir().unwrap();
    let cloud = durable_broker(cloud_dir.path(), 0).await;
    let port = cloud.local_addr().port();
    let edge = start_broker_with(|c| {
        c.in_memory = false;
        c.data_dir = edge_dir.path().to_path_buf();
        c.sys_interval = 1;
        c.http = Some(roost::config::HttpConfig::new([127, 0, 0, 1].into(), 0));
        c.bridges = vec![bridge_to(
            &cloud,
            vec![line("t/#", BridgeDirection::Out, QoS::ExactlyOnce, "", "")],
        )];
    })
    .await;
    wait_connected(&edge).await;
    // A durable subscriber at the remote, away while the messages travel.
    let mut sub = connect_packet(Version::V311, "far");
    sub.clean_start = false;
    let (mut far, _) = RawClient::connect(cloud.local_addr(), sub.clone()).await;
    far.send(&subscribe("t/#", QoS::ExactlyOnce)).await;
    assert!(matches!(far.recv().await, Some(Packet::SubAck(_))));
    drop(far);
    wait_detached(&cloud, "far").await;
    cloud.shutdown().await;

    // Acknowledged by the edge while the remote is down: they wait in its store.
    let (mut publisher, _) =
        RawClient::connect(edge.local_addr(), connect_packet(Version::V311, "p")).await;
    const N: u16 = 100;
    for i in 1..=N {
        let qos = if i % 2 == 0 {
            QoS::ExactlyOnce
        } else {
            QoS::AtLeastOnce
        };
        publisher
            .send(&publish("t/seq", qos, i, i.to_string().as_bytes()))
            .await;
        match publisher.recv().await {
            Some(Packet::Ack(a)) if a.packet_id == i && a.kind == AckKind::PubAck => {}
            Some(Packet::Ack(a)) if a.packet_id == i && a.kind == AckKind::PubRec => {
                publisher.send(&ack(AckKind::PubRel, i)).await;
                assert!(
                    matches!(publisher.recv().await, Some(Packet::Ack(c)) if c.kind == AckKind::PubComp)
                );
            }
            other => panic!("expected the acknowledgement of {i}, got {other:?}"),
        }
    }
    wait_until(|| {
        let b = &edge.bridges()[0];
        b.state != BridgeState::Connected && b.queued == usize::from(N)
    })
    .await;
    // No client can take the bridge's local Session over (and with it the queued messages).
    let local = edge.bridges()[0].local_client_id.clone();
    for (version, code) in [(Version::V5, 0x85), (Version::V311, 0x02)] {
        let mut thief = connect_packet(version, &local);
        thief.clean_start = true;
        let (_, connack) = RawClient::connect(edge.local_addr(), thief).await;
        assert_eq!(connack.code.0, code, "{version:?}");
    }
    assert_eq!(edge.bridges()[0].queued, usize::from(N));
    // Visible in the admin API, the metrics and `$SYS`.
    let base = format!("http://{}", edge.http_addr().unwrap());
    let (status, body) = http("GET", &format!("{base}/api/v1/bridges"), None).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["bridges"][0]["name"], "edge");
    assert_eq!(v["bridges"][0]["queued"], N);
    assert!(v["bridges"][0]["last_error"].as_str().is_some(), "{body}");
    let (_, metrics) = http("GET", &format!("{base}/metrics"), None).await;
    assert!(
        metrics.contains(&format!("roost_bridge_queued{{bridge=\"edge\"}} {N}")),
        "{metrics}"
    );
    assert!(
        metrics.contains("roost_bridge_connected{bridge=\"edge\"} 0"),
        "{metrics}"
    );
    let ctl = std::process::Command::new(env!("CARGO_BIN_EXE_roost"))
        .args(["ctl", "--url", &base, "bridges"])
        .output()
        .expect("roost ctl runs");
    let table = String::from_utf8_lossy(&ctl.stdout);
    let row = table
        .lines()
        .find(|l| l.starts_with("edge "))
        .unwrap_or_default();
    assert!(
        row.contains(&format!(" {N} ")),
        "roost ctl bridges: {table}"
    );
    let (mut sys, _) =
        RawClient::connect(edge.local_addr(), connect_packet(Version::V311, "sys")).await;
    sys.send(&subscribe(
        "$SYS/broker/roost/bridge/edge/queued",
        QoS::AtMostOnce,
    ))
    .await;
    assert!(matches!(sys.recv().await, Some(Packet::SubAck(_))));
    // Updated every `sys_interval` (the retained value may be from before the messages).
    loop {
        match sys.recv().await {
            Some(Packet::Publish(p)) if &p.payload[..] == N.to_string().as_bytes() => break,
            Some(Packet::Publish(_)) => {}
            other => panic!("expected the $SYS value, got {other:?}"),
        }
    }

    // The remote comes back on the same port: everything arrives, once, in order.
    let cloud = durable_broker(cloud_dir.path(), port).await;
    wait_connected(&edge).await;
    let (mut far, connack) = RawClient::connect(cloud.local_addr(), sub).await;
    assert!(connack.session_present);
    for i in 1..=N {
        let p = next_message(&mut far).await;
        assert_eq!(
            &p.payload[..],
            i.to_string().as_bytes(),
            "message {i} in order"
        );
    }
    wait_until(|| edge.bridges()[0].queued == 0).await;
    assert_eq!(edge.bridges()[0].forwarded_out, u64::from(N));
}

/// The `[[bridge]]` section of an edge binary bridged to `remote` with `topic` lines.
fn bridge_toml(remote: std::net::SocketAddr, topics: &[&str]) -> String {
    let topics: Vec<String> = topics.iter().map(|t| format!("{t:?}")).collect();
    format!(
        "[[bridge]]\nname = \"cloud\"\naddress = \"{remote}\"\nremote_clientid = \"edge-bridge\"\n\
         restart_timeout = 1\ntopic = [{}]\n",
        topics.join(", ")
    )
}

/// Sends `count` numbered messages on `topic` (QoS alternating 1 and 2, payload = index)
/// to `addr`, each acknowledged before the next; returns how many were acknowledged before
/// the connection went (all of them unless the broker dies).
async fn publish_numbered(
    addr: std::net::SocketAddr,
    id: &str,
    topic: &str,
    range: std::ops::Range<u32>,
) -> u32 {
    let (mut p, _) = RawClient::connect(addr, connect_packet(Version::V311, id)).await;
    let mut acknowledged = 0;
    for i in range {
        let packet_id = u16::try_from(i % 60_000 + 1).unwrap();
        let qos = if i % 2 == 0 {
            QoS::ExactlyOnce
        } else {
            QoS::AtLeastOnce
        };
        p.send(&publish(topic, qos, packet_id, &i.to_be_bytes()))
            .await;
        match p.recv().await {
            Some(Packet::Ack(a)) if a.kind == AckKind::PubAck => {}
            Some(Packet::Ack(a)) if a.kind == AckKind::PubRec => {
                p.send(&ack(AckKind::PubRel, packet_id)).await;
                match p.recv().await {
                    Some(Packet::Ack(c)) if c.kind == AckKind::PubComp => {}
                    None => return acknowledged + 1,
                    other => panic!("expected PUBCOMP, got {other:?}"),
                }
            }
            None => return acknowledged,
            other => panic!("expected an acknowledgement of {i}, got {other:?}"),
        }
        acknowledged += 1;
    }
    acknowledged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_queued_for_the_remote_survive_kill_9_of_the_edge() {
    let cloud_dir = tempfile::tempdir().unwrap();
    let edge_dir = tempfile::tempdir().unwrap();
    let cloud = durable_broker(cloud_dir.path(), 0).await;
    let remote = cloud.local_addr();
    let toml = bridge_toml(remote, &["t/# out 2 \"\" site1/"]);
    let edge = BrokerProcess::start_with(edge_dir.path(), &toml);
    edge.wait_log("bridge connected");
    let mut far_connect = connect_packet(Version::V311, "far");
    far_connect.clean_start = false;
    let (mut far, _) = RawClient::connect(remote, far_connect.clone()).await;
    far.send(&subscribe("site1/t/#", QoS::ExactlyOnce)).await;
    assert!(matches!(far.recv().await, Some(Packet::SubAck(_))));
    drop(far);
    wait_detached(&cloud, "far").await;

    // The remote goes away; the edge acknowledges 300 messages, then dies with them queued.
    cloud.shutdown().await;
    const N: u32 = 300;
    assert_eq!(publish_numbered(edge.addr, "p", "t/a", 0..N).await, N);
    edge.kill9();

    let cloud = durable_broker(cloud_dir.path(), remote.port()).await;
    let edge = BrokerProcess::start_with(edge_dir.path(), &toml);
    edge.wait_log("bridge connected");
    let (mut far, connack) = RawClient::connect(remote, far_connect).await;
    assert!(connack.session_present);
    for i in 0..N {
        let p = next_message(&mut far).await;
        let got = u32::from_be_bytes(p.payload[..4].try_into().unwrap());
        assert_eq!(got, i, "in order, none lost");
        assert_eq!(p.topic, "site1/t/a");
    }
    drop(edge);
    cloud.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_edge_mid_stream_loses_nothing_and_repeats_no_qos2_message() {
    use rand::RngExt;
    let cloud_dir = tempfile::tempdir().unwrap();
    let edge_dir = tempfile::tempdir().unwrap();
    let cloud = durable_broker(cloud_dir.path(), 0).await;
    let remote = cloud.local_addr();
    let (mut far, _) = RawClient::connect(remote, {
        let mut c = connect_packet(Version::V311, "far");
        c.clean_start = false;
        c
    })
    .await;
    far.send(&subscribe("t/#", QoS::ExactlyOnce)).await;
    assert!(matches!(far.recv().await, Some(Packet::SubAck(_))));
    let toml = bridge_toml(remote, &["t/# out 2"]);
    let edge = BrokerProcess::start_with(edge_dir.path(), &toml);
    edge.wait_log("bridge connected");

    // Messages stream through the live link; the edge is killed at a random moment while
    // the publisher is still sending.
    const N: u32 = 2000;
    let kill_after_ms = rand::rng().random_range(20..600u64);
    eprintln!("killing the edge {kill_after_ms} ms into the stream");
    let publisher = tokio::spawn(publish_numbered(edge.addr, "p", "t/s", 0..N));
    tokio::time::sleep(Duration::from_millis(kill_after_ms)).await;
    edge.kill9();
    let acknowledged = tokio::time::timeout(WAIT, publisher)
        .await
        .unwrap()
        .unwrap();
    eprintln!("{acknowledged} acknowledged before the kill");
    // The publisher sends again what it did not see acknowledged, as a client would.
    let edge = BrokerProcess::start_with(edge_dir.path(), &toml);
    let rest = publish_numbered(edge.addr, "p", "t/s", acknowledged..N).await;
    assert_eq!(rest, N - acknowledged);

    // Every acknowledged message arrives; QoS 2 ones (even indexes) exactly once.
    let mut seen = std::collections::HashMap::<u32, u32>::new();
    while (0..N).any(|i| !seen.contains_key(&i)) {
        let p = next_message(&mut far).await;
        *seen
            .entry(u32::from_be_bytes(p.payload[..4].try_into().unwrap()))
            .or_default() += 1;
    }
    // The one message in flight at the kill may come twice: its publisher sent it again.
    let repeated_qos2: Vec<u32> = seen
        .iter()
        .filter(|(i, n)| *i % 2 == 0 && **n > 1 && **i != acknowledged)
        .map(|(i, _)| *i)
        .collect();
    assert!(
        repeated_qos2.is_empty(),
        "QoS 2 messages delivered twice: {repeated_qos2:?}"
    );
    drop(edge);
    cloud.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_from_a_mosquitto_conf_runs() {
    // A mosquitto user's bridge block, as it stands, in the binary.
    let dir = tempfile::tempdir().unwrap();
    let cloud = start_broker().await;
    let remote = cloud.local_addr();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener 1883 127.0.0.1\n\
             allow_anonymous true\n\
             persistence true\n\
             persistence_location {data}\n\
             \n\
             connection cloud\n\
             address {remote}\n\
             remote_clientid gateway-7\n\
             cleansession false\n\
             restart_timeout 1 2\n\
             topic sensors/# out 1 \"\" gw7/\n\
             topic cmd/# in 1 \"\" gw7/\n",
            data = dir.path().join("data").display(),
        ),
    )
    .unwrap();
    let edge = BrokerProcess::spawn(&["--port".into(), "0".into(), "-c".into(), conf.into()]);
    edge.wait_log("bridge connected");
    let mut at_cloud = subscriber(&cloud, "c-sub", "gw7/#", QoS::AtLeastOnce).await;
    let (mut e, _) = RawClient::connect(edge.addr, connect_packet(Version::V311, "e")).await;
    e.send(&subscribe("cmd/#", QoS::AtLeastOnce)).await;
    assert!(matches!(e.recv().await, Some(Packet::SubAck(_))));
    e.send(&publish("sensors/door", QoS::AtLeastOnce, 2, b"open"))
        .await;
    let p = next_message(&mut at_cloud).await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("gw7/sensors/door", &b"open"[..])
    );
    let (mut c, _) = RawClient::connect(remote, connect_packet(Version::V311, "c-pub")).await;
    c.send(&publish("gw7/cmd/lock", QoS::AtLeastOnce, 1, b"now"))
        .await;
    loop {
        match e.recv().await {
            Some(Packet::Publish(p)) => {
                assert_eq!(p.topic, "cmd/lock");
                break;
            }
            Some(Packet::Ack(_)) => {}
            other => panic!("expected the command, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_line_removed_from_the_configuration_stops_collecting_messages() {
    let edge_dir = tempfile::tempdir().unwrap();
    let cloud = start_broker().await;
    let edge_with = |pattern: &'static str| {
        let b = bridge_to(
            &cloud,
            vec![line(
                pattern,
                BridgeDirection::Out,
                QoS::AtLeastOnce,
                "",
                "",
            )],
        );
        let dir = edge_dir.path().to_path_buf();
        start_broker_with(move |c| {
            c.in_memory = false;
            c.data_dir = dir;
            c.bridges = vec![b];
        })
    };
    let edge = edge_with("old/#").await;
    wait_connected(&edge).await;
    edge.shutdown().await;

    // The durable local Session still subscribes to old/# until the bridge starts again.
    let edge = edge_with("new/#").await;
    wait_connected(&edge).await;
    assert_eq!(
        edge.subscription_count(),
        1,
        "old/# unsubscribed, new/# subscribed"
    );
    let mut at_cloud = subscriber(&cloud, "c-sub", "#", QoS::AtLeastOnce).await;
    let (mut e, _) =
        RawClient::connect(edge.local_addr(), connect_packet(Version::V311, "e")).await;
    e.send(&publish("old/x", QoS::AtLeastOnce, 1, b"stale"))
        .await;
    e.send(&publish("new/y", QoS::AtLeastOnce, 2, b"fresh"))
        .await;
    assert_eq!(next_message(&mut at_cloud).await.topic, "new/y");
    // Once new/y is acknowledged, nothing is left: old/x was never collected.
    wait_until(|| edge.bridges()[0].forwarded_out == 1 && edge.bridges()[0].queued == 0).await;
}

#[tokio::test]
async fn shutdown_ends_the_link_with_disconnect() {
    use bytes::BytesMut;
    use roost::codec::{ConnAck, Decoder, ReasonCode, encode};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A remote broker reduced to what this needs: CONNACK, then read until the end.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let remote = listener.local_addr().unwrap();
    let edge = start_broker_with(|c| {
        let mut b = BridgeConfig::new(
            "edge",
            "127.0.0.1",
            remote.port(),
            vec![line("t/#", BridgeDirection::Out, QoS::AtLeastOnce, "", "")],
        );
        b.restart_base = Duration::from_secs(1);
        b.restart_cap = None;
        c.bridges = vec![b];
    })
    .await;
    let (mut stream, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .unwrap()
        .unwrap();
    let mut decoder = Decoder::server(1 << 20);
    let mut buf = BytesMut::new();
    let mut read_packet = async |stream: &mut tokio::net::TcpStream, buf: &mut BytesMut| loop {
        if let Some(p) = decoder.decode(buf).expect("well-formed") {
            return Some(p);
        }
        let n = tokio::time::timeout(WAIT, stream.read_buf(buf))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            return None;
        }
    };
    let connect = read_packet(&mut stream, &mut buf).await;
    assert!(
        matches!(&connect, Some(Packet::Connect(c)) if c.bridge),
        "{connect:?}"
    );
    let mut out = BytesMut::new();
    let connack = Packet::ConnAck(ConnAck {
        session_present: false,
        code: ReasonCode::SUCCESS,
        properties: Default::default(),
    });
    encode(&connack, Version::V311, None, &mut out).unwrap();
    stream.write_all(&out).await.unwrap();
    wait_connected(&edge).await;
    let stopping = tokio::spawn(edge.shutdown());
    // MQTT-3.14.4-1: the bridge's last packet is a DISCONNECT, then it closes.
    assert!(matches!(
        read_packet(&mut stream, &mut buf).await,
        Some(Packet::Disconnect(_))
    ));
    assert!(read_packet(&mut stream, &mut buf).await.is_none());
    tokio::time::timeout(WAIT, stopping).await.unwrap().unwrap();
}
