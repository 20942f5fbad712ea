//! Protocol corners driven packet by packet with a raw client (Roost's codec over TCP):
//! QoS 2 in both directions, wills, keepalive, takeover, limits and malformed input.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use roost::Clock;
use roost::codec::{
    AckKind, Disconnect, Packet, Publish, PublishProperties, QoS, ReasonCode, Version, Will,
};

fn will(topic: &str, payload: &'static [u8], delay: u32) -> Will {
    Will {
        topic: topic.to_string(),
        payload: Bytes::from_static(payload),
        qos: QoS::AtLeastOnce,
        retain: false,
        delay_interval: delay,
        properties: PublishProperties::default(),
    }
}

/// A raw subscriber on `filter`, with its SUBACK consumed.
async fn raw_subscriber(
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_qos2_retransmission_is_not_delivered_twice() {
    // MQTT-4.3.3-9 (method B): a PUBLISH with the id of one awaiting PUBREL is the same message.
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let mut sub = raw_subscriber(addr, Version::V311, "sub", "q2").await;
    let (mut p, _) = RawClient::connect(addr, connect_packet(Version::V311, "pub")).await;
    p.send(&publish("q2", QoS::ExactlyOnce, 9, b"once")).await;
    assert_eq!(p.recv().await, Some(ack(AckKind::PubRec, 9)));
    let mut again = publish("q2", QoS::ExactlyOnce, 9, b"once");
    if let Packet::Publish(p) = &mut again {
        p.dup = true;
    }
    p.send(&again).await;
    assert_eq!(p.recv().await, Some(ack(AckKind::PubRec, 9)));
    p.send(&ack(AckKind::PubRel, 9)).await;
    assert_eq!(p.recv().await, Some(ack(AckKind::PubComp, 9)));

    let first = expect_publish(&mut sub).await;
    assert_eq!(&first.payload[..], b"once");
    sub.send(&ack(AckKind::PubRec, first.packet_id)).await;
    assert_eq!(
        sub.recv().await,
        Some(ack(AckKind::PubRel, first.packet_id)),
        "broker answers PUBREC with PUBREL"
    );
    sub.send(&ack(AckKind::PubComp, first.packet_id)).await;
    p.send(&publish("q2", QoS::AtMostOnce, 0, b"marker")).await;
    let next = expect_publish(&mut sub).await;
    assert_eq!(
        &next.payload[..],
        b"marker",
        "no second copy of the QoS 2 message"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_qos2_resumes_after_reconnect_with_dup_and_pubrel() {
    // MQTT-4.4.0-1: on session resume, unacknowledged PUBLISH is resent with DUP=1 and
    // PUBREL is resent for ids whose PUBREC arrived.
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let mut persistent = connect_packet(Version::V311, "resumer");
    persistent.clean_start = false;
    let (mut sub, _) = RawClient::connect(addr, persistent.clone()).await;
    sub.send(&subscribe("r", QoS::ExactlyOnce)).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));

    let (mut p, _) = RawClient::connect(addr, connect_packet(Version::V311, "pub")).await;
    p.send(&publish("r", QoS::ExactlyOnce, 1, b"exactly")).await;
    assert_eq!(p.recv().await, Some(ack(AckKind::PubRec, 1)));
    p.send(&ack(AckKind::PubRel, 1)).await;
    assert_eq!(p.recv().await, Some(ack(AckKind::PubComp, 1)));

    let first = expect_publish(&mut sub).await;
    assert!(!first.dup);
    drop(sub); // cut before PUBREC

    let (mut sub, connack) = RawClient::connect(addr, persistent.clone()).await;
    assert!(connack.session_present);
    let resent = expect_publish(&mut sub).await;
    assert!(resent.dup, "MQTT-3.3.1-1: a resend has DUP=1");
    assert_eq!(resent.packet_id, first.packet_id);
    assert_eq!(&resent.payload[..], b"exactly");
    sub.send(&ack(AckKind::PubRec, resent.packet_id)).await;
    assert_eq!(
        sub.recv().await,
        Some(ack(AckKind::PubRel, resent.packet_id))
    );
    drop(sub); // cut before PUBCOMP

    let (mut sub, connack) = RawClient::connect(addr, persistent).await;
    assert!(connack.session_present);
    assert_eq!(
        sub.recv().await,
        Some(ack(AckKind::PubRel, resent.packet_id)),
        "PUBREL resent, not the PUBLISH"
    );
    sub.send(&ack(AckKind::PubComp, resent.packet_id)).await;
    p.send(&publish("r", QoS::AtMostOnce, 0, b"after")).await;
    assert_eq!(&expect_publish(&mut sub).await.payload[..], b"after");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_is_published_on_keepalive_timeout() {
    // MQTT-3.1.2-24: no packet within 1.5 x keep alive closes the connection; the will follows.
    let clock = Clock::manual();
    let broker = start_broker_with(|c| c.clock = clock.clone()).await;
    let addr = broker.local_addr();
    let mut watcher = raw_subscriber(addr, Version::V311, "watcher", "wills/#").await;
    let mut c = connect_packet(Version::V311, "sleepy");
    c.keep_alive = 10;
    c.will = Some(will("wills/sleepy", b"gone quiet", 0));
    let (mut silent, _) = RawClient::connect(addr, c).await;
    // The watcher's keep alive is 30 s: only the silent client's 15 s run out.
    clock.advance(Duration::from_secs(16));
    let w = expect_publish(&mut watcher).await;
    assert_eq!(w.topic, "wills/sleepy");
    assert_eq!(&w.payload[..], b"gone quiet");
    assert_eq!(w.qos, QoS::AtLeastOnce);
    assert_eq!(silent.until_closed().await, vec![], "closed by the broker");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_is_published_when_the_socket_drops_and_after_a_malformed_packet() {
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let mut watcher = raw_subscriber(addr, Version::V311, "watcher", "wills/#").await;

    let mut c = connect_packet(Version::V311, "dropper");
    c.will = Some(will("wills/dropper", b"dropped", 0));
    let (dropper, _) = RawClient::connect(addr, c).await;
    drop(dropper);
    assert_eq!(expect_publish(&mut watcher).await.topic, "wills/dropper");

    let mut c = connect_packet(Version::V311, "garbler");
    c.will = Some(will("wills/garbler", b"malformed", 0));
    let (mut garbler, _) = RawClient::connect(addr, c).await;
    // PINGREQ with a reserved flag bit set (MQTT-2.2.2-2): malformed.
    garbler.send_raw(&[0xC1, 0x00]).await;
    assert_eq!(garbler.until_closed().await, vec![]);
    assert_eq!(expect_publish(&mut watcher).await.topic, "wills/garbler");
    assert_eq!(broker.metrics().protocol_errors, 1);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_is_not_published_after_a_normal_disconnect() {
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let mut watcher = raw_subscriber(addr, Version::V5, "watcher", "wills/#").await;
    for version in [Version::V311, Version::V5] {
        let mut c = connect_packet(version, "polite");
        c.will = Some(will("wills/polite", b"never", 0));
        let (mut polite, _) = RawClient::connect(addr, c).await;
        polite
            .send(&Packet::Disconnect(Disconnect::default()))
            .await;
        assert_eq!(polite.until_closed().await, vec![]);
    }
    // MQTT 5.0 reason 0x04 asks for the will on a normal disconnect.
    let mut c = connect_packet(Version::V5, "asker");
    c.will = Some(will("wills/asker", b"please", 0));
    let (mut asker, _) = RawClient::connect(addr, c).await;
    asker
        .send(&Packet::Disconnect(Disconnect {
            reason: roost::codec::ReasonCode::DISCONNECT_WITH_WILL,
            ..Default::default()
        }))
        .await;
    // The first will to arrive is the asker's: the polite ones were discarded.
    let w = expect_publish(&mut watcher).await;
    assert_eq!(w.topic, "wills/asker");
    assert_eq!(broker.metrics().wills_published, 1);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_sends_v5_disconnect_0x8e_and_publishes_the_old_will() {
    // MQTT-3.1.4-3
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let mut watcher = raw_subscriber(addr, Version::V5, "watcher", "wills/#").await;
    let mut c = connect_packet(Version::V5, "dup-id");
    c.will = Some(will("wills/dup-id", b"taken over", 0));
    let (mut first, _) = RawClient::connect(addr, c).await;
    let (_second, _) = RawClient::connect(addr, connect_packet(Version::V5, "dup-id")).await;
    let seen = first.until_closed().await;
    assert!(
        matches!(seen.as_slice(), [Packet::Disconnect(d)] if d.reason == 0x8E),
        "{seen:?}"
    );
    assert_eq!(expect_publish(&mut watcher).await.topic, "wills/dup-id");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_delay_waits_and_is_cancelled_by_a_reconnect() {
    let clock = Clock::manual();
    let broker = start_broker_with(|c| c.clock = clock.clone()).await;
    let addr = broker.local_addr();
    let mut watcher = raw_subscriber(addr, Version::V5, "watcher", "wills/#").await;

    // Reconnects within the (long) delay: its will never comes (MQTT-3.1.3-9).
    let mut c = connect_packet(Version::V5, "flaky");
    c.clean_start = false;
    c.session_expiry_interval = 60;
    c.will = Some(will("wills/flaky", b"should not appear", 1));
    let (flaky, _) = RawClient::connect(addr, c.clone()).await;
    drop(flaky);
    wait_detached(&broker, "flaky").await;
    c.will = None;
    let (mut flaky, connack) = RawClient::connect(addr, c).await;
    assert!(connack.session_present);

    // Does not reconnect: its will comes after the delay.
    let mut c = connect_packet(Version::V5, "gone");
    c.session_expiry_interval = 60;
    c.will = Some(will("wills/gone", b"late", 2));
    let (gone, _) = RawClient::connect(addr, c).await;
    drop(gone);
    wait_detached(&broker, "gone").await;
    // Past the flaky client's delay, short of the other's.
    clock.advance(Duration::from_secs(1));
    flaky.send(&Packet::PingReq).await;
    assert_eq!(flaky.recv().await, Some(Packet::PingResp));
    assert_eq!(broker.metrics().wills_published, 0);
    clock.advance(Duration::from_secs(1));
    let w = expect_publish(&mut watcher).await;
    assert_eq!(
        w.topic, "wills/gone",
        "the flaky client's will was cancelled"
    );
    // The flaky client is still connected, so its will cannot have been held back by chance.
    flaky.send(&Packet::PingReq).await;
    assert_eq!(flaky.recv().await, Some(Packet::PingResp));
    assert_eq!(broker.metrics().wills_published, 1);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_is_sent_when_the_session_ends_before_the_will_delay() {
    // MQTT-3.1.2-8 / MQTT-3.1.3-9: the will goes out at the earlier of will delay and session end.
    let clock = Clock::manual();
    let broker = start_broker_with(|c| c.clock = clock.clone()).await;
    let addr = broker.local_addr();
    let mut watcher = raw_subscriber(addr, Version::V5, "watcher", "wills/#").await;
    let mut c = connect_packet(Version::V5, "short-session");
    c.session_expiry_interval = 1;
    c.will = Some(will("wills/short", b"session over", 3600));
    let (client, _) = RawClient::connect(addr, c).await;
    drop(client);
    wait_detached(&broker, "short-session").await;
    clock.advance(Duration::from_secs(1));
    let w = expect_publish(&mut watcher).await;
    assert_eq!(w.topic, "wills/short");
    assert!(broker.session_info("short-session").is_none());
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_session_expires_after_its_interval() {
    let clock = Clock::manual();
    let broker = start_broker_with(|c| c.clock = clock.clone()).await;
    let addr = broker.local_addr();
    let mut c = connect_packet(Version::V5, "brief");
    c.clean_start = false;
    c.session_expiry_interval = 1;
    let (client, connack) = RawClient::connect(addr, c.clone()).await;
    assert!(!connack.session_present);
    drop(client);
    wait_detached(&broker, "brief").await;
    clock.advance(Duration::from_secs(1));
    wait_until(|| broker.session_info("brief").is_none()).await;
    let (_client, connack) = RawClient::connect(addr, c).await;
    assert!(!connack.session_present);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_connack_carries_assigned_id_and_limits() {
    let broker = start_broker_with(|c| {
        c.receive_maximum = 20;
        c.max_packet_size = 4096;
    })
    .await;
    let (_c, connack) =
        RawClient::connect(broker.local_addr(), connect_packet(Version::V5, "")).await;
    assert_eq!(connack.code, 0);
    let props = &connack.properties;
    let id = props.assigned_client_identifier.as_deref().unwrap_or("");
    assert!(!id.is_empty(), "MQTT-3.2.2-16: assigned client identifier");
    assert_eq!(props.receive_maximum, Some(20));
    assert_eq!(props.maximum_packet_size, Some(4096));
    assert_eq!(props.retain_available, Some(true));
    assert_eq!(props.wildcard_subscription_available, Some(true));
    assert_eq!(props.shared_subscription_available, Some(true));
    assert!(broker.session_info(id).is_some());
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_empty_client_id_needs_clean_session() {
    // MQTT-3.1.3-8: empty id with clean_session=0 gets CONNACK 0x02 and the connection closes.
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let mut c = connect_packet(Version::V311, "");
    c.clean_start = false;
    let (mut client, connack) = RawClient::connect(addr, c).await;
    assert_eq!(connack.code, 0x02);
    assert_eq!(client.until_closed().await, vec![]);
    let (_client, connack) = RawClient::connect(addr, connect_packet(Version::V311, "")).await;
    assert_eq!(
        connack.code, 0x00,
        "clean session with an empty id is accepted"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_protocol_level_gets_connack_0x01() {
    // MQTT-3.1.2-2: a level the broker does not speak (here "MQTT" level 6) is answered with
    // return code 0x01.
    let broker = start_broker().await;
    let mut c = RawClient::open(broker.local_addr(), Version::V311).await;
    let mut connect = vec![0x10, 0x00];
    connect.extend_from_slice(&[0x00, 0x04]);
    connect.extend_from_slice(b"MQTT");
    connect.extend_from_slice(&[0x06, 0x02, 0x00, 0x3C, 0x00, 0x01, b'x']);
    connect[1] = (connect.len() - 2) as u8;
    c.send_raw(&connect).await;
    assert_eq!(c.raw_until_closed().await, vec![0x20, 0x02, 0x00, 0x01]);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_packet_must_be_connect() {
    // MQTT-3.1.0-1
    let broker = start_broker().await;
    let mut c = RawClient::open(broker.local_addr(), Version::V311).await;
    c.send_raw(&[0xC0, 0x00]).await; // PINGREQ
    assert!(c.raw_until_closed().await.is_empty());
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_must_arrive_within_the_connect_timeout() {
    let broker = start_broker_with(|c| c.connect_timeout = Duration::from_secs(1)).await;
    let mut c = RawClient::open(broker.local_addr(), Version::V311).await;
    assert!(
        c.raw_until_closed().await.is_empty(),
        "closed without a CONNECT"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_packet_is_refused_from_its_header_with_0x95() {
    let broker = start_broker_with(|c| c.max_packet_size = 1024).await;
    let (mut c, _) =
        RawClient::connect(broker.local_addr(), connect_packet(Version::V5, "big")).await;
    // A PUBLISH header announcing 10 MB; the body is never sent.
    c.send_raw(&[0x30, 0x80, 0xAD, 0xE2, 0x04]).await;
    let seen = c.until_closed().await;
    assert!(
        matches!(seen.as_slice(), [Packet::Disconnect(d)] if d.reason == 0x95),
        "{seen:?}"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packet_gets_v5_disconnect_0x81_and_only_that_connection_closes() {
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let mut bystander = raw_subscriber(addr, Version::V5, "bystander", "b").await;
    let (mut bad, _) = RawClient::connect(addr, connect_packet(Version::V5, "bad")).await;
    // QoS 0 PUBLISH with DUP=1 (MQTT-3.3.1-2).
    bad.send_raw(&[0x38, 0x04, 0x00, 0x01, b'b', b'x']).await;
    let seen = bad.until_closed().await;
    assert!(
        matches!(seen.as_slice(), [Packet::Disconnect(d)] if d.reason == 0x81),
        "{seen:?}"
    );
    let (mut p, _) = RawClient::connect(addr, connect_packet(Version::V5, "good")).await;
    p.send(&publish("b", QoS::AtMostOnce, 0, b"still here"))
        .await;
    assert_eq!(
        &expect_publish(&mut bystander).await.payload[..],
        b"still here"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceeding_receive_maximum_gets_disconnect_0x93() {
    // MQTT-3.3.4-9
    let broker = start_broker_with(|c| c.receive_maximum = 2).await;
    let (mut c, _) =
        RawClient::connect(broker.local_addr(), connect_packet(Version::V5, "greedy")).await;
    for id in 1..=3 {
        c.send(&publish("t", QoS::ExactlyOnce, id, b"x")).await;
    }
    let seen = c.until_closed().await;
    assert!(
        matches!(seen.as_slice(), [
            Packet::Ack(a), Packet::Ack(b), Packet::Disconnect(d)
        ] if a.kind == AckKind::PubRec && b.kind == AckKind::PubRec && d.reason == 0x93),
        "{seen:?}"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_inflight_window_follows_client_receive_maximum() {
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let mut c = connect_packet(Version::V5, "window");
    c.receive_maximum = 2;
    let (mut sub, _) = RawClient::connect(addr, c).await;
    sub.send(&subscribe("w", QoS::AtLeastOnce)).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    let (mut p, _) = RawClient::connect(addr, connect_packet(Version::V5, "pub")).await;
    for i in 1..=3u16 {
        p.send(&publish("w", QoS::AtLeastOnce, i, b"m")).await;
        assert!(matches!(p.recv().await, Some(Packet::Ack(_))));
    }
    let a = expect_publish(&mut sub).await;
    let b = expect_publish(&mut sub).await;
    assert_ne!(a.packet_id, b.packet_id);
    // The third waits in the queue for a PUBACK (MQTT-3.3.4-9).
    wait_until(|| {
        let backlog = broker.session_info("window").unwrap().backlog;
        backlog.inflight == 2 && backlog.messages == 3
    })
    .await;
    assert_eq!(broker.metrics().publish_sent, 2);
    sub.send(&ack(AckKind::PubAck, a.packet_id)).await;
    let c3 = expect_publish(&mut sub).await;
    assert_eq!(&c3.payload[..], b"m");
    assert_eq!(broker.metrics().publish_sent, 3);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_0x93_is_readable_by_a_client_still_sending() {
    // MQTT-3.3.4-9 with the default Receive Maximum (100): the client has written far more
    // than the broker reads before it closes; the DISCONNECT must still reach it, not a reset.
    let broker = start_broker().await;
    let (c, _) =
        RawClient::connect(broker.local_addr(), connect_packet(Version::V5, "flood")).await;
    let mut burst = bytes::BytesMut::new();
    for id in 1..=400u16 {
        roost::codec::encode(
            &publish("t", QoS::ExactlyOnce, id, &[7u8; 512]),
            Version::V5,
            None,
            &mut burst,
        )
        .unwrap();
    }
    // The client keeps writing while it reads, as a fast publisher does.
    let (mut rd, mut wr) = c.stream.into_split();
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        for _ in 0..200 {
            if wr.write_all(&burst).await.is_err() {
                break;
            }
        }
    });
    let mut decoder = roost::codec::Decoder::client(Version::V5, 1 << 20);
    let mut rbuf = bytes::BytesMut::new();
    let mut seen = Vec::new();
    let reset = loop {
        while let Ok(Some(p)) = decoder.decode(&mut rbuf) {
            seen.push(p);
        }
        use tokio::io::AsyncReadExt;
        match tokio::time::timeout(WAIT, rd.read_buf(&mut rbuf)).await {
            Ok(Ok(0)) => break false,
            Ok(Ok(_)) => {}
            Ok(Err(_)) => break true,
            Err(_) => panic!("no close in time"),
        }
    };
    writer.abort();
    eprintln!("reset: {reset}");
    let pubrecs = seen
        .iter()
        .filter(|p| matches!(p, Packet::Ack(a) if a.kind == AckKind::PubRec))
        .count();
    assert_eq!(pubrecs, 100, "{} packets", seen.len());
    assert!(
        matches!(seen.last(), Some(Packet::Disconnect(d)) if d.reason == 0x93),
        "last of {} packets: {:?}",
        seen.len(),
        seen.last()
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_gets_no_local_and_retain_as_published_so_bridged_brokers_do_not_loop() {
    // The bridge bit of the protocol level (0x80 | 4), as mosquitto bridges send it.
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let mut c = connect_packet(Version::V311, "bridge-to-cloud");
    c.bridge = true;
    let (mut bridge, connack) = RawClient::connect(addr, c).await;
    assert_eq!(connack.code, ReasonCode::SUCCESS);
    bridge.send(&subscribe("site/#", QoS::AtLeastOnce)).await;
    assert!(matches!(bridge.recv().await, Some(Packet::SubAck(_))));
    // Its own message does not come back to it...
    bridge
        .send(&publish_with(
            "site/a",
            QoS::AtLeastOnce,
            1,
            b"from the cloud",
            true,
        ))
        .await;
    assert!(matches!(bridge.recv().await, Some(Packet::Ack(_))));
    // ...and a local client's retained message keeps its RETAIN flag on the way out.
    let (mut local, _) = RawClient::connect(addr, connect_packet(Version::V311, "local")).await;
    local
        .send(&publish_with("site/b", QoS::AtLeastOnce, 1, b"local", true))
        .await;
    assert!(matches!(local.recv().await, Some(Packet::Ack(_))));
    let got = expect_publish(&mut bridge).await;
    assert_eq!((got.topic.as_str(), got.retain), ("site/b", true));
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_client_ids_are_1_to_23_characters_and_connack_has_no_session_present() {
    let broker = start_broker().await;
    let addr = broker.local_addr();
    for id in ["", "abcdefghijklmnopqrstuvwx"] {
        let mut c = connect_packet(Version::V311, id);
        c.mqtt31 = true;
        let (_c, connack) = RawClient::connect(addr, c).await;
        assert_eq!(connack.code, ReasonCode::V3_IDENTIFIER_REJECTED, "{id:?}");
    }
    let mut c = connect_packet(Version::V311, "abcdefghijklmnopqrstuvw");
    c.mqtt31 = true;
    c.clean_start = false;
    let (first, connack) = RawClient::connect(addr, c.clone()).await;
    assert_eq!(connack.code, ReasonCode::SUCCESS);
    drop(first);
    wait_detached(&broker, "abcdefghijklmnopqrstuvw").await;
    let (_again, connack) = RawClient::connect(addr, c).await;
    assert_eq!(connack.code, ReasonCode::SUCCESS);
    assert!(!connack.session_present, "3.1's CONNACK has no such flag");
    assert!(broker.session_info("abcdefghijklmnopqrstuvw").is_some());
    broker.shutdown().await;
}
