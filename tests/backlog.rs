//! Backlog and flow control: a success acknowledgement is a promise. At a full queue an MQTT 5.0
//! publisher is refused with 0x97 and an MQTT 3.1.1 publisher is paused; nothing acknowledged
//! is dropped unless an operator chose a dropping policy; memory stays within its bounds.

mod common;

use std::collections::HashSet;
use std::path::Path;

use bytes::BytesMut;
use common::*;
use roost::codec::{self, AckKind, Packet, QoS, Version};
use roost::config::QueueFullPolicy;
use roost::{BrokerHandle, Config};
use tokio::io::AsyncWriteExt;

/// A broker with a store in `dir` (the default configuration otherwise) after `adjust`.
async fn store_broker(dir: &Path, adjust: impl FnOnce(&mut Config)) -> BrokerHandle {
    let dir = dir.to_path_buf();
    start_broker_with(move |c| {
        c.in_memory = false;
        c.data_dir = dir;
        adjust(c);
    })
    .await
}

/// Subscribes a raw client to `filter` at `qos` and waits for the SUBACK.
async fn raw_subscriber(
    addr: std::net::SocketAddr,
    connect: codec::Connect,
    filter: &str,
    qos: QoS,
) -> RawClient {
    let (mut sub, connack) = RawClient::connect(addr, connect).await;
    assert_eq!(connack.code, 0);
    sub.send(&subscribe(filter, qos)).await;
    match sub.recv().await {
        Some(Packet::SubAck(s)) => assert_eq!(s.codes, vec![qos as u8]),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    sub
}

/// Encodes `count` QoS `qos` PUBLISH packets to `topic` (ids 1..=count, payload = index) in
/// one buffer.
fn pipelined(version: Version, topic: &str, qos: QoS, count: u16) -> BytesMut {
    let mut buf = BytesMut::new();
    for i in 1..=count {
        let packet = publish(topic, qos, i, &u32::from(i).to_be_bytes());
        codec::encode(&packet, version, None, &mut buf).unwrap();
    }
    buf
}

fn index(p: &codec::Publish) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&p.payload[..4]);
    u32::from_be_bytes(b)
}

/// Receives PUBLISH packets, acknowledging each (QoS 1), until `count` arrived; returns their
/// indexes in arrival order.
async fn receive_acking(sub: &mut RawClient, count: usize) -> Vec<u32> {
    let mut seen = Vec::with_capacity(count);
    while seen.len() < count {
        match sub.recv().await {
            Some(Packet::Publish(p)) => {
                seen.push(index(&p));
                if p.qos == QoS::AtLeastOnce {
                    sub.send(&ack(AckKind::PubAck, p.packet_id)).await;
                }
            }
            other => panic!("expected PUBLISH #{}, got {other:?}", seen.len()),
        }
    }
    seen
}

/// Reads the publisher's acknowledgements until `count` arrived; returns (packet id, reason).
async fn acks(publisher: &mut RawClient, count: usize) -> Vec<(u16, u8)> {
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        match publisher.recv().await {
            Some(Packet::Ack(a)) => out.push((a.packet_id, a.reason.0)),
            other => panic!("expected an acknowledgement, got {other:?}"),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_1200_qos1_are_all_delivered_with_the_default_configuration() {
    for version in [Version::V311, Version::V5] {
        let dir = tempfile::tempdir().unwrap();
        let broker = store_broker(dir.path(), |_| {}).await;
        let addr = broker.local_addr();
        let mut sub =
            raw_subscriber(addr, connect_packet(version, "sub"), "t", QoS::AtLeastOnce).await;
        let mut publisher = RawClient::open(addr, version).await;
        let mut bytes = BytesMut::new();
        let connect = Packet::Connect(Box::new(connect_packet(version, "pub")));
        codec::encode(&connect, version, None, &mut bytes).unwrap();
        bytes.extend_from_slice(&pipelined(version, "t", QoS::AtLeastOnce, 1200));
        publisher.stream.write_all(&bytes).await.unwrap();
        assert!(matches!(publisher.recv().await, Some(Packet::ConnAck(_))));
        let (got, acked) = tokio::join!(receive_acking(&mut sub, 1200), acks(&mut publisher, 1200));
        assert!(
            acked.iter().all(|(_, reason)| *reason == 0),
            "{version:?}: every PUBACK is a success with a matching subscriber (not 0x10)"
        );
        assert_eq!(
            got,
            (1..=1200).collect::<Vec<_>>(),
            "{version:?}: all, in order"
        );
        assert_eq!(broker.metrics().dropped_queue_full, 0);
        broker.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_durable_backlog_waits_in_the_store_not_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let memory = 64 * 1024;
    let broker = store_broker(dir.path(), |c| c.max_queued_memory_bytes = memory).await;
    let addr = broker.local_addr();
    let mut durable = connect_packet(Version::V311, "device");
    durable.clean_start = false;
    let sub = raw_subscriber(addr, durable.clone(), "d", QoS::AtLeastOnce).await;
    drop(sub);
    wait_detached(&broker, "device").await;

    const TOTAL: u16 = 20_000;
    let (mut publisher, _) = RawClient::connect(addr, connect_packet(Version::V311, "pub")).await;
    for chunk in pipelined(Version::V311, "d", QoS::AtLeastOnce, TOTAL).chunks(64 * 1024) {
        publisher.send_raw(chunk).await;
    }
    let acked = acks(&mut publisher, usize::from(TOTAL)).await;
    assert_eq!(acked.len(), usize::from(TOTAL));
    let info = broker.session_info("device").unwrap();
    assert_eq!(info.backlog.messages, usize::from(TOTAL));
    assert_eq!(
        info.backlog.stored_messages,
        usize::from(TOTAL),
        "an offline session's backlog is in the store"
    );
    assert_eq!(
        info.backlog.peak_memory_bytes, 0,
        "and none of it in memory"
    );

    // Back online, it drains everything in order, a memory window at a time.
    let (mut sub, connack) = RawClient::connect(addr, durable).await;
    assert!(connack.session_present);
    let got = receive_acking(&mut sub, usize::from(TOTAL)).await;
    assert_eq!(got, (1..=u32::from(TOTAL)).collect::<Vec<_>>());
    let info = broker.session_info("device").unwrap();
    assert!(
        info.backlog.peak_memory_bytes <= memory,
        "memory held {} bytes, bound {memory}",
        info.backlog.peak_memory_bytes
    );
    assert!(broker.metrics().store_reads > 1, "read back in windows");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_beyond_any_queue_bound_are_all_sent_on_subscribe() {
    let dir = tempfile::tempdir().unwrap();
    // A queue bound far below the number of retained messages: they are streamed, not queued.
    let broker = store_broker(dir.path(), |c| c.max_queued_messages = 50).await;
    let addr = broker.local_addr();
    let (mut publisher, _) = RawClient::connect(addr, connect_packet(Version::V311, "pub")).await;
    let mut buf = BytesMut::new();
    for i in 1..=1100u32 {
        let packet = publish_with(
            &format!("r/{i}"),
            QoS::AtLeastOnce,
            (i % 60_000) as u16 + 1,
            &i.to_be_bytes(),
            true,
        );
        codec::encode(&packet, Version::V311, None, &mut buf).unwrap();
    }
    publisher.send_raw(&buf).await;
    acks(&mut publisher, 1100).await;
    assert_eq!(broker.retained_count(), 1100);
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        let mut durable = connect_packet(Version::V311, &format!("reader-{}", qos as u8));
        durable.clean_start = false;
        let mut sub = raw_subscriber(addr, durable, "r/#", qos).await;
        let got: HashSet<u32> = receive_acking(&mut sub, 1100).await.into_iter().collect();
        assert_eq!(
            got.len(),
            1100,
            "{qos:?}: every retained message arrives once"
        );
    }
    broker.shutdown().await;
}

/// A subscriber that never acknowledges: its backlog fills at `max_queued_messages`.
async fn stuck_subscriber(broker: &BrokerHandle, version: Version) -> RawClient {
    raw_subscriber(
        broker.local_addr(),
        connect_packet(version, "stuck"),
        "s",
        QoS::AtLeastOnce,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_publisher_gets_0x97_at_the_limit_and_nothing_is_delivered() {
    let broker = start_broker_with(|c| c.max_queued_messages = 5).await;
    let addr = broker.local_addr();
    let mut sub = stuck_subscriber(&broker, Version::V5).await;
    let (mut publisher, _) = RawClient::connect(addr, connect_packet(Version::V5, "pub")).await;
    publisher
        .send_raw(&pipelined(Version::V5, "s", QoS::AtLeastOnce, 8))
        .await;
    let acked = acks(&mut publisher, 8).await;
    let codes: Vec<u8> = acked.iter().map(|(_, r)| *r).collect();
    assert_eq!(codes, [0, 0, 0, 0, 0, 0x97, 0x97, 0x97]);
    // QoS 2 at the limit: PUBREC 0x97 ends the flow; the id is not kept as awaiting PUBREL.
    publisher
        .send(&publish("s", QoS::ExactlyOnce, 100, &100u32.to_be_bytes()))
        .await;
    assert_eq!(acks(&mut publisher, 1).await, [(100, 0x97)]);
    // A retained message refused at the limit is not retained either (all or nothing).
    publisher
        .send(&publish_with(
            "s",
            QoS::AtLeastOnce,
            101,
            &101u32.to_be_bytes(),
            true,
        ))
        .await;
    assert_eq!(acks(&mut publisher, 1).await, [(101, 0x97)]);
    assert_eq!(broker.retained_count(), 0);
    assert_eq!(broker.metrics().rejected_quota_exceeded, 5);

    // The subscriber has exactly the five accepted messages.
    let got = receive_acking(&mut sub, 5).await;
    assert_eq!(got, [1, 2, 3, 4, 5]);
    wait_until(|| broker.session_info("stuck").unwrap().backlog.messages == 0).await;
    // Room again: the same QoS 2 packet id is a new message now, delivered exactly once.
    publisher
        .send(&publish("s", QoS::ExactlyOnce, 100, &100u32.to_be_bytes()))
        .await;
    assert_eq!(acks(&mut publisher, 1).await, [(100, 0)]);
    publisher.send(&ack(AckKind::PubRel, 100)).await;
    assert_eq!(acks(&mut publisher, 1).await, [(100, 0)], "PUBCOMP");
    match sub.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(index(&p), 100),
        other => panic!("{other:?}"),
    }
    let info = broker.session_info("stuck").unwrap();
    assert!(info.backlog.messages <= 5 && info.backlog.peak_bytes > 0);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_publisher_is_paused_then_completes_every_message() {
    let broker = start_broker_with(|c| c.max_queued_messages = 5).await;
    let addr = broker.local_addr();
    let mut sub = stuck_subscriber(&broker, Version::V311).await;
    let (mut publisher, _) = RawClient::connect(addr, connect_packet(Version::V311, "pub")).await;
    publisher
        .send_raw(&pipelined(Version::V311, "s", QoS::AtLeastOnce, 30))
        .await;
    // Five fit; the sixth is held without an acknowledgement.
    let first = acks(&mut publisher, 5).await;
    assert_eq!(
        first.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    wait_until(|| broker.metrics().backpressure_pauses == 1).await;
    // A paused connection is still alive: PINGREQ is answered.
    publisher.send(&Packet::PingReq).await;
    assert_eq!(publisher.recv().await, Some(Packet::PingResp));
    // The subscriber starts reading: the publisher resumes by itself and every message
    // arrives once, in order.
    let (got, rest) = tokio::join!(receive_acking(&mut sub, 30), acks(&mut publisher, 25));
    assert_eq!(got, (1..=30).collect::<Vec<_>>());
    assert_eq!(
        rest.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        (6..=30).collect::<Vec<_>>()
    );
    let m = broker.metrics();
    assert_eq!(m.dropped_queue_full, 0);
    assert_eq!(m.rejected_quota_exceeded, 0);
    let info = broker.session_info("stuck").unwrap();
    assert!(info.backlog.peak_bytes > 0);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_publisher_that_is_also_the_subscriber_does_not_deadlock() {
    // The client publishes to a topic it subscribes to; its own PUBACKs free the room its
    // paused PUBLISH waits for, so they are read while it is paused.
    let broker = start_broker_with(|c| c.max_queued_messages = 4).await;
    let addr = broker.local_addr();
    let mut me = raw_subscriber(
        addr,
        connect_packet(Version::V311, "loop"),
        "me",
        QoS::AtLeastOnce,
    )
    .await;
    me.send_raw(&pipelined(Version::V311, "me", QoS::AtLeastOnce, 40))
        .await;
    let mut delivered = Vec::new();
    let mut acked = 0;
    while delivered.len() < 40 || acked < 40 {
        match me.recv().await {
            Some(Packet::Publish(p)) => {
                delivered.push(index(&p));
                me.send(&ack(AckKind::PubAck, p.packet_id)).await;
            }
            Some(Packet::Ack(_)) => acked += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(delivered, (1..=40).collect::<Vec<_>>());
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_policy_keeps_the_newest_and_counts() {
    let broker = start_broker_with(|c| {
        c.max_queued_messages = 3;
        c.queue_full = QueueFullPolicy::DropOldest;
    })
    .await;
    let addr = broker.local_addr();
    let mut durable = connect_packet(Version::V5, "late");
    durable.clean_start = false;
    durable.session_expiry_interval = 600;
    drop(raw_subscriber(addr, durable.clone(), "o", QoS::AtLeastOnce).await);
    wait_detached(&broker, "late").await;
    let (mut publisher, _) = RawClient::connect(addr, connect_packet(Version::V5, "pub")).await;
    publisher
        .send_raw(&pipelined(Version::V5, "o", QoS::AtLeastOnce, 10))
        .await;
    let acked = acks(&mut publisher, 10).await;
    assert!(
        acked.iter().all(|(_, r)| *r == 0),
        "acknowledged: the operator chose to drop"
    );
    assert_eq!(broker.metrics().dropped_queue_full, 7);
    assert_eq!(broker.session_info("late").unwrap().dropped, 7);
    let (mut sub, _) = RawClient::connect(addr, durable).await;
    assert_eq!(receive_acking(&mut sub, 3).await, [8, 9, 10]);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_policy_overrides_the_global_one() {
    let broker = start_broker_with(|c| {
        c.max_queued_messages = 2;
        let mut extra = roost::config::ListenerConfig::new(
            roost::config::ListenerKind::Tcp,
            std::net::IpAddr::from([127, 0, 0, 1]),
            0,
        );
        extra.queue_full = Some(QueueFullPolicy::DropNew);
        c.listeners.push(extra);
    })
    .await;
    let mut sub = stuck_subscriber(&broker, Version::V311).await;
    let dropping = broker.listener_addrs()[1].1;
    let (mut publisher, _) = RawClient::connect(dropping, connect_packet(Version::V5, "pub")).await;
    publisher
        .send_raw(&pipelined(Version::V5, "s", QoS::AtLeastOnce, 5))
        .await;
    let acked = acks(&mut publisher, 5).await;
    // Dropped by the listener's policy, yet matched: success, not 0x10 (no subscribers).
    assert!(acked.iter().all(|(_, r)| *r == 0), "{acked:?}");
    assert_eq!(broker.metrics().dropped_queue_full, 3);
    assert_eq!(receive_acking(&mut sub, 2).await, [1, 2]);
    // The main listener keeps the lossless default.
    let (mut v5, _) =
        RawClient::connect(broker.local_addr(), connect_packet(Version::V5, "p2")).await;
    v5.send_raw(&pipelined(Version::V5, "nobody", QoS::AtLeastOnce, 1))
        .await;
    assert_eq!(
        acks(&mut v5, 1).await,
        [(1, 0x10)],
        "0x10 only when nothing matched"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_beyond_the_memory_bound_is_dropped_and_counted() {
    let broker = start_broker_with(|c| c.max_queued_memory_bytes = 4096).await;
    let addr = broker.local_addr();
    // Subscribed, but never reads: the socket buffers fill, then the queue.
    let _sub = raw_subscriber(
        addr,
        connect_packet(Version::V311, "deaf"),
        "z",
        QoS::AtMostOnce,
    )
    .await;
    let (mut publisher, _) = RawClient::connect(addr, connect_packet(Version::V311, "pub")).await;
    let payload = vec![7u8; 16 * 1024];
    let mut buf = BytesMut::new();
    for _ in 0..2000 {
        codec::encode(
            &publish("z", QoS::AtMostOnce, 0, &payload),
            Version::V311,
            None,
            &mut buf,
        )
        .unwrap();
    }
    publisher.send_raw(&buf).await;
    publisher.send(&Packet::PingReq).await;
    assert_eq!(
        publisher.recv().await,
        Some(Packet::PingResp),
        "QoS 0 never pauses"
    );
    wait_until(|| broker.metrics().dropped_qos0_queue_full > 0).await;
    let info = broker.session_info("deaf").unwrap();
    // The bound, or one message admitted into an empty queue, whichever is larger.
    assert!(
        info.backlog.peak_memory_bytes <= 16 * 1024 + 256,
        "{info:?}"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_holds_memory_within_its_bounds() {
    // Ephemeral subscriber: its whole queue is in memory, bounded by bytes.
    let dir = tempfile::tempdir().unwrap();
    let memory = 256 * 1024;
    let broker = store_broker(dir.path(), |c| c.max_queued_memory_bytes = memory).await;
    let addr = broker.local_addr();
    let _deaf = raw_subscriber(
        addr,
        connect_packet(Version::V311, "deaf"),
        "big",
        QoS::AtLeastOnce,
    )
    .await;
    let mut durable = connect_packet(Version::V311, "deaf-durable");
    durable.clean_start = false;
    let _deaf_durable = raw_subscriber(addr, durable, "big", QoS::AtLeastOnce).await;
    let (mut v5, _) = RawClient::connect(addr, connect_packet(Version::V5, "pub")).await;
    let payload = vec![1u8; 32 * 1024];
    let mut refused = 0;
    let mut id = 0u16;
    // Publish one at a time until the ephemeral subscriber's queue refuses (0x97).
    while refused == 0 {
        id += 1;
        assert!(id < 2000, "the bound was never reached");
        v5.send(&publish("big", QoS::AtLeastOnce, id, &payload))
            .await;
        let (_, reason) = acks(&mut v5, 1).await[0];
        if reason == 0x97 {
            refused += 1;
        }
    }
    let ephemeral = broker.session_info("deaf").unwrap();
    assert!(
        ephemeral.backlog.peak_memory_bytes <= memory,
        "{ephemeral:?}"
    );
    assert!(ephemeral.backlog.peak_bytes <= memory, "{ephemeral:?}");
    // The durable one holds its window in memory and the rest in the store.
    let durable = broker.session_info("deaf-durable").unwrap();
    assert!(durable.backlog.peak_memory_bytes <= memory, "{durable:?}");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_wide_bound_refuses_what_would_go_to_the_store_only() {
    let dir = tempfile::tempdir().unwrap();
    let broker = store_broker(dir.path(), |c| c.max_store_bytes = 64 * 1024).await;
    let addr = broker.local_addr();
    let mut durable = connect_packet(Version::V5, "away");
    durable.clean_start = false;
    durable.session_expiry_interval = 600;
    drop(raw_subscriber(addr, durable, "w", QoS::AtLeastOnce).await);
    wait_detached(&broker, "away").await;
    let (mut publisher, _) = RawClient::connect(addr, connect_packet(Version::V5, "pub")).await;
    let payload = vec![3u8; 4096];
    let mut accepted = 0u32;
    for id in 1..=100u16 {
        publisher
            .send(&publish("w", QoS::AtLeastOnce, id, &payload))
            .await;
        match acks(&mut publisher, 1).await[0] {
            (_, 0) => accepted += 1,
            (_, 0x97) => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(accepted > 0 && accepted < 100, "accepted {accepted}");
    assert!(broker.store_stats().message_bytes >= 60 * 1024);
    assert_eq!(broker.metrics().rejected_quota_exceeded, 1);
    // An online durable subscriber's messages must be written to the store too: refused.
    let mut online = connect_packet(Version::V5, "online");
    online.clean_start = false;
    online.session_expiry_interval = 600;
    let _online = raw_subscriber(addr, online, "w2", QoS::AtLeastOnce).await;
    publisher
        .send(&publish("w2", QoS::AtLeastOnce, 500, b"x"))
        .await;
    assert_eq!(acks(&mut publisher, 1).await, [(500, 0x97)]);
    broker.shutdown().await;

    // Every accepted message survives a restart.
    let broker = store_broker(dir.path(), |c| c.max_store_bytes = 64 * 1024).await;
    let mut durable = connect_packet(Version::V5, "away");
    durable.clean_start = false;
    durable.session_expiry_interval = 600;
    let (mut sub, connack) = RawClient::connect(broker.local_addr(), durable).await;
    assert!(connack.session_present);
    receive_acking(&mut sub, accepted as usize).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_with_session_expiry_0_keeps_the_stored_backlog_for_this_connection() {
    let dir = tempfile::tempdir().unwrap();
    let broker = store_broker(dir.path(), |c| c.max_queued_memory_bytes = 4096).await;
    let addr = broker.local_addr();
    let mut durable = connect_packet(Version::V5, "fickle");
    durable.clean_start = false;
    durable.session_expiry_interval = 600;
    drop(raw_subscriber(addr, durable.clone(), "f", QoS::AtLeastOnce).await);
    wait_detached(&broker, "fickle").await;
    let (mut publisher, _) = RawClient::connect(addr, connect_packet(Version::V5, "pub")).await;
    publisher
        .send_raw(&pipelined(Version::V5, "f", QoS::AtLeastOnce, 100))
        .await;
    assert!(acks(&mut publisher, 100).await.iter().all(|(_, r)| *r == 0));
    // MQTT-3.1.2-4 / 3.1.2.11.2: the session resumes; it now ends with this connection.
    durable.session_expiry_interval = 0;
    let (mut sub, connack) = RawClient::connect(addr, durable).await;
    assert!(connack.session_present);
    assert_eq!(
        receive_acking(&mut sub, 100).await,
        (1..=100).collect::<Vec<_>>()
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_subscribes_hold_each_retained_topic_once() {
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let (mut publisher, _) = RawClient::connect(addr, connect_packet(Version::V311, "pub")).await;
    for i in 1..=50u16 {
        publisher
            .send(&publish_with(
                &format!("k/{i}"),
                QoS::AtLeastOnce,
                i,
                b"v",
                true,
            ))
            .await;
    }
    acks(&mut publisher, 50).await;
    // A client that subscribes over and over and never reads.
    let (mut greedy, _) = RawClient::connect(addr, connect_packet(Version::V311, "greedy")).await;
    for _ in 0..100 {
        greedy.send(&subscribe("k/#", QoS::AtLeastOnce)).await;
        greedy.send(&subscribe("#", QoS::AtLeastOnce)).await;
    }
    greedy.send(&Packet::PingReq).await;
    loop {
        match greedy.recv().await {
            Some(Packet::PingResp) => break,
            Some(_) => {}
            None => panic!("closed"),
        }
    }
    let info = broker.session_info("greedy").unwrap();
    assert!(
        info.backlog.retained_pending <= 50,
        "one waiting entry per retained topic at most: {info:?}"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_larger_than_the_memory_bound_is_still_accepted_into_an_empty_queue() {
    let broker = start_broker_with(|c| c.max_queued_memory_bytes = 4096).await;
    let addr = broker.local_addr();
    let mut sub = raw_subscriber(
        addr,
        connect_packet(Version::V311, "small"),
        "l",
        QoS::AtLeastOnce,
    )
    .await;
    let (mut publisher, _) = RawClient::connect(addr, connect_packet(Version::V311, "pub")).await;
    let big = vec![5u8; 16 * 1024];
    publisher
        .send(&publish("l", QoS::AtLeastOnce, 1, &big))
        .await;
    assert_eq!(acks(&mut publisher, 1).await, [(1, 0)]);
    match sub.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(p.payload.len(), big.len()),
        other => panic!("{other:?}"),
    }
    broker.shutdown().await;
}

/// A 3.1.1 client that pipelines `count` QoS 1 PUBLISH packets to `to` while acknowledging
/// whatever it receives on its own subscription `own`. Returns (PUBACKs, deliveries, closed by
/// the broker) once every PUBLISH is acknowledged or the broker closed the connection, or
/// `None` if nothing happened within the bound.
async fn pipelining_peer(
    addr: std::net::SocketAddr,
    id: &str,
    own: &str,
    to: &str,
    count: u16,
) -> Option<(usize, usize, bool)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sub = raw_subscriber(
        addr,
        connect_packet(Version::V311, id),
        own,
        QoS::AtLeastOnce,
    )
    .await;
    let (mut rd, mut wr) = sub.stream.into_split();
    let (ack_tx, mut ack_rx) = tokio::sync::mpsc::unbounded_channel::<BytesMut>();
    let burst = pipelined(Version::V311, to, QoS::AtLeastOnce, count);
    let writer = tokio::spawn(async move {
        if wr.write_all(&burst).await.is_err() {
            return;
        }
        while let Some(bytes) = ack_rx.recv().await {
            if wr.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    let mut decoder = codec::Decoder::client(Version::V311, 1 << 20);
    let mut rbuf = BytesMut::new();
    let (mut acked, mut delivered) = (0, 0);
    let outcome = loop {
        while let Ok(Some(p)) = decoder.decode(&mut rbuf) {
            match p {
                Packet::Publish(p) => {
                    delivered += 1;
                    let mut b = BytesMut::new();
                    codec::encode(
                        &ack(AckKind::PubAck, p.packet_id),
                        Version::V311,
                        None,
                        &mut b,
                    )
                    .unwrap();
                    let _ = ack_tx.send(b);
                }
                Packet::Ack(_) => acked += 1,
                _ => {}
            }
        }
        if acked == usize::from(count) {
            // All published (the peer may have been closed, so not all delivered).
            break Some((acked, delivered, false));
        }
        match tokio::time::timeout(WAIT, rd.read_buf(&mut rbuf)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => break Some((acked, delivered, true)),
            Err(_) => break None,
        }
    };
    writer.abort();
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_publishers_paused_on_each_other_do_not_hang() {
    // Each publishes far more than the held allowance to the other while the other's queue is
    // full: neither can read the acknowledgements the other waits for. The broker closes
    // rather than leave them stuck; they would reconnect and resend.
    let broker = start_broker_with(|c| c.max_queued_messages = 4).await;
    let addr = broker.local_addr();
    let (a, b) = tokio::join!(
        pipelining_peer(addr, "A", "toA", "toB", 2000),
        pipelining_peer(addr, "B", "toB", "toA", 2000)
    );
    eprintln!("A {a:?}, B {b:?}");
    assert!(a.is_some() && b.is_some(), "stuck: A {a:?}, B {b:?}");
    broker.shutdown().await;
}
