//! Durable sessions on redb, in process: what survives a restart, what is never written, and
//! that acknowledged entries are deleted so the file does not grow without bound.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use roost::Clock;
use roost::codec::{AckKind, Packet, QoS, Version};
use roost::store::table_sizes;

async fn durable_broker(dir: &Path) -> roost::BrokerHandle {
    durable_broker_on(dir, &Clock::system()).await
}

/// A broker on the store in `dir` whose timers and stored times follow `clock`.
async fn durable_broker_on(dir: &Path, clock: &Clock) -> roost::BrokerHandle {
    let dir = dir.to_path_buf();
    start_broker_with(move |c| {
        c.in_memory = false;
        c.data_dir = dir;
        c.clock = clock.clone();
    })
    .await
}

fn size(sizes: &[(&str, u64)], table: &str) -> u64 {
    sizes
        .iter()
        .find(|(name, _)| *name == table)
        .map_or(0, |(_, n)| *n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_sessions_make_no_write_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let broker = durable_broker(dir.path()).await;
    let addr = broker.local_addr();
    for version in [Version::V311, Version::V5] {
        let (mut sub, _) = RawClient::connect(addr, connect_packet(version, "eph-sub")).await;
        sub.send(&subscribe("eph/#", QoS::ExactlyOnce)).await;
        assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
        let (mut p, _) = RawClient::connect(addr, connect_packet(version, "eph-pub")).await;
        p.send(&publish_with("eph/1", QoS::AtLeastOnce, 1, b"a", false))
            .await;
        assert!(matches!(p.recv().await, Some(Packet::Ack(_))));
        p.send(&publish_with("eph/2", QoS::ExactlyOnce, 2, b"b", false))
            .await;
        assert_eq!(p.recv().await, Some(ack(AckKind::PubRec, 2)));
        p.send(&ack(AckKind::PubRel, 2)).await;
        assert_eq!(p.recv().await, Some(ack(AckKind::PubComp, 2)));
        for _ in 0..2 {
            match sub.recv().await {
                Some(Packet::Publish(m)) if m.qos == QoS::AtLeastOnce => {
                    sub.send(&ack(AckKind::PubAck, m.packet_id)).await
                }
                Some(Packet::Publish(m)) => {
                    sub.send(&ack(AckKind::PubRec, m.packet_id)).await;
                    assert!(matches!(sub.recv().await, Some(Packet::Ack(_))));
                    sub.send(&ack(AckKind::PubComp, m.packet_id)).await;
                }
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(
        broker.store_stats().write_transactions,
        0,
        "ephemeral sessions never touch the disk"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_session_and_retained_message_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut durable = connect_packet(Version::V5, "keeper");
    durable.clean_start = false;
    durable.session_expiry_interval = 3600;
    {
        let broker = durable_broker(dir.path()).await;
        let addr = broker.local_addr();
        let (mut sub, connack) = RawClient::connect(addr, durable.clone()).await;
        assert!(!connack.session_present);
        sub.send(&subscribe("keep/#", QoS::AtLeastOnce)).await;
        assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
        drop(sub);
        wait_detached(&broker, "keeper").await;
        let (mut p, _) = RawClient::connect(addr, connect_packet(Version::V311, "pub")).await;
        for i in 0..3u16 {
            p.send(&publish_with(
                "keep/q",
                QoS::AtLeastOnce,
                i + 1,
                &[i as u8],
                false,
            ))
            .await;
            assert_eq!(p.recv().await, Some(ack(AckKind::PubAck, i + 1)));
        }
        p.send(&publish_with(
            "keep/r",
            QoS::AtMostOnce,
            0,
            b"retained",
            true,
        ))
        .await;
        p.send(&Packet::PingReq).await;
        assert_eq!(p.recv().await, Some(Packet::PingResp));
        broker.shutdown().await;
    }
    let sizes = table_sizes(&dir.path().join(roost::store::DB_FILE)).unwrap();
    assert_eq!(size(&sizes, "sessions"), 1, "{sizes:?}");
    assert_eq!(size(&sizes, "queue"), 3, "{sizes:?}");
    // Queued for one session only, each message is kept in its queue entry.
    assert_eq!(size(&sizes, "messages"), 0, "{sizes:?}");
    assert_eq!(size(&sizes, "retained"), 1, "{sizes:?}");

    let broker = durable_broker(dir.path()).await;
    let (mut sub, connack) = RawClient::connect(broker.local_addr(), durable).await;
    assert!(
        connack.session_present,
        "the session came back from the store"
    );
    for i in 0..3u8 {
        match sub.recv().await {
            Some(Packet::Publish(m)) => {
                assert_eq!(&m.payload[..], &[i]);
                sub.send(&ack(AckKind::PubAck, m.packet_id)).await;
            }
            other => panic!("{other:?}"),
        }
    }
    // The subscription came back too: a new message reaches it.
    let (mut p, _) =
        RawClient::connect(broker.local_addr(), connect_packet(Version::V311, "p2")).await;
    p.send(&publish_with(
        "keep/new",
        QoS::AtLeastOnce,
        1,
        b"new",
        false,
    ))
    .await;
    assert_eq!(p.recv().await, Some(ack(AckKind::PubAck, 1)));
    match sub.recv().await {
        Some(Packet::Publish(m)) => {
            assert_eq!(&m.payload[..], b"new");
            sub.send(&ack(AckKind::PubAck, m.packet_id)).await;
        }
        other => panic!("{other:?}"),
    }
    // And the retained message.
    let (mut late, _) =
        RawClient::connect(broker.local_addr(), connect_packet(Version::V311, "late")).await;
    late.send(&subscribe("keep/r", QoS::AtMostOnce)).await;
    assert!(matches!(late.recv().await, Some(Packet::SubAck(_))));
    match late.recv().await {
        Some(Packet::Publish(m)) => {
            assert!(m.retain);
            assert_eq!(&m.payload[..], b"retained");
        }
        other => panic!("{other:?}"),
    }
    sub.send(&Packet::PingReq).await;
    assert_eq!(sub.recv().await, Some(Packet::PingResp));
    broker.shutdown().await;
    let sizes = table_sizes(&dir.path().join(roost::store::DB_FILE)).unwrap();
    assert_eq!(
        size(&sizes, "queue"),
        0,
        "acknowledged entries are deleted: {sizes:?}"
    );
    assert_eq!(size(&sizes, "messages"), 0, "{sizes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_session_is_removed_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual();
    let mut c = connect_packet(Version::V5, "short");
    c.clean_start = false;
    c.session_expiry_interval = 1;
    {
        let broker = durable_broker_on(dir.path(), &clock).await;
        let (client, _) = RawClient::connect(broker.local_addr(), c.clone()).await;
        drop(client);
        wait_detached(&broker, "short").await;
        // The clock stands still, so the expiry timer cannot fire: the record stays on disk.
        broker.shutdown().await;
    }
    let path = dir.path().join(roost::store::DB_FILE);
    assert_eq!(size(&table_sizes(&path).unwrap(), "sessions"), 1);
    // The broker is down while the expiry passes.
    clock.advance(Duration::from_secs(2));
    let broker = durable_broker_on(dir.path(), &clock).await;
    assert!(broker.session_info("short").is_none());
    let (_c, connack) = RawClient::connect(broker.local_addr(), c).await;
    assert!(!connack.session_present);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_session_expires_when_the_rest_of_its_interval_passes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual();
    let mut c = connect_packet(Version::V5, "later");
    c.clean_start = false;
    c.session_expiry_interval = 10;
    {
        let broker = durable_broker_on(dir.path(), &clock).await;
        let (client, _) = RawClient::connect(broker.local_addr(), c.clone()).await;
        drop(client);
        wait_detached(&broker, "later").await;
        broker.shutdown().await;
    }
    // Four of its ten seconds pass while the broker is down.
    clock.advance(Duration::from_secs(4));
    let broker = durable_broker_on(dir.path(), &clock).await;
    assert!(broker.session_info("later").is_some(), "restored");
    clock.advance(Duration::from_secs(5));
    assert!(broker.session_info("later").is_some(), "nine seconds in");
    clock.advance(Duration::from_secs(1));
    wait_until(|| broker.session_info("later").is_none()).await;
    let (_c, connack) = RawClient::connect(broker.local_addr(), c).await;
    assert!(!connack.session_present);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_store_stops_startup_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(roost::store::DB_FILE),
        b"this is not a redb file",
    )
    .unwrap();
    let config = roost::Config {
        port: 0,
        data_dir: dir.path().to_path_buf(),
        ..roost::Config::default()
    };
    let err = roost::start(config)
        .await
        .expect_err("corrupt file refused");
    assert!(err.to_string().contains("roost.redb"), "{err}");
}

/// Pushes QoS 1 messages through an online durable subscriber and checks that the file stays
/// bounded and the queue and message tables end empty. `ROOST_BOUNDED_COUNT` raises the count
/// (the README quotes a 100,000-message run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_entries_are_deleted_and_the_file_stays_bounded() {
    let total: u32 = std::env::var("ROOST_BOUNDED_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().unwrap();
    let broker = durable_broker(dir.path()).await;
    let addr = broker.local_addr();
    let (mut sub, _) = RawClient::connect(addr, {
        let mut c = connect_packet(Version::V311, "bounded-sub");
        c.clean_start = false;
        c
    })
    .await;
    sub.send(&subscribe("bounded", QoS::AtLeastOnce)).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    let reader = tokio::spawn(async move {
        let mut got = 0u32;
        while got < total {
            match sub.recv().await {
                Some(Packet::Publish(p)) => {
                    got += 1;
                    sub.send(&ack(AckKind::PubAck, p.packet_id)).await;
                }
                other => panic!("{other:?}"),
            }
        }
        sub.send(&Packet::PingReq).await;
        assert_eq!(sub.recv().await, Some(Packet::PingResp));
        got
    });
    let (mut p, _) = RawClient::connect(addr, connect_packet(Version::V311, "bounded-pub")).await;
    const WINDOW: u32 = 200;
    let mut acked = 0u32;
    let mut sent = 0u32;
    while acked < total {
        while sent < total && sent - acked < WINDOW {
            let id = (sent % 60_000 + 1) as u16;
            p.send(&publish_with(
                "bounded",
                QoS::AtLeastOnce,
                id,
                &[7; 64],
                false,
            ))
            .await;
            sent += 1;
        }
        match p.recv().await {
            Some(Packet::Ack(_)) => acked += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        tokio::time::timeout(WAIT * 6, reader)
            .await
            .unwrap()
            .unwrap(),
        total
    );
    let stats = broker.store_stats();
    broker.shutdown().await;
    let path = dir.path().join(roost::store::DB_FILE);
    let bytes = std::fs::metadata(&path).unwrap().len();
    let sizes = table_sizes(&path).unwrap();
    eprintln!(
        "{total} messages: file {bytes} bytes, {} commits, largest batch {} requests",
        stats.write_transactions, stats.max_batch
    );
    assert_eq!(size(&sizes, "queue"), 0, "{sizes:?}");
    assert_eq!(size(&sizes, "messages"), 0, "{sizes:?}");
    assert!(bytes < 16 * 1024 * 1024, "file grew to {bytes} bytes");
}
