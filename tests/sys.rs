//! `$SYS` topics: retained, refreshed every `sys_interval` seconds on the broker's clock (a
//! manual one here), with mosquitto's names; not matched by `#`; readable subject to the ACL.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use roost::Clock;
use roost::codec::{Packet, QoS, Version};

/// Reads PUBLISH packets into `values` (topic -> payload) until `done` holds.
async fn read_until(
    c: &mut RawClient,
    values: &mut HashMap<String, String>,
    done: impl Fn(&HashMap<String, String>) -> bool,
) {
    while !done(values) {
        match c.recv().await {
            Some(Packet::Publish(p)) => {
                let value = String::from_utf8_lossy(&p.payload).into_owned();
                values.insert(p.topic, value);
            }
            Some(_) => {}
            None => panic!("closed; seen so far: {values:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_topics_are_retained_and_refreshed_every_interval() {
    let clock = Clock::manual();
    let broker = start_broker_with(|c| {
        c.sys_interval = 10;
        c.clock = clock.clone();
    })
    .await;
    let addr = broker.local_addr();
    let (mut watcher, _) = RawClient::connect(addr, connect_packet(Version::V311, "watcher")).await;
    watcher.send(&subscribe("$SYS/#", QoS::AtMostOnce)).await;
    let counters = [
        "clients/connected",
        "clients/total",
        "clients/maximum",
        "messages/received",
        "messages/sent",
        "messages/stored",
        "publish/messages/received",
        "publish/messages/sent",
        "bytes/received",
        "bytes/sent",
        "subscriptions/count",
        "roost/dropped/queue_full",
        "roost/rejected/quota_exceeded",
        "roost/backpressure/pauses",
        "roost/store/commits",
        "retained messages/count",
    ];
    let mut values = HashMap::new();
    read_until(&mut watcher, &mut values, |v| {
        v.contains_key("$SYS/broker/uptime")
            && v.contains_key("$SYS/broker/version")
            && counters
                .iter()
                .all(|t| v.contains_key(&format!("$SYS/broker/{t}")))
    })
    .await;
    let version = format!("roost {}", env!("CARGO_PKG_VERSION"));
    assert_eq!(values["$SYS/broker/version"], version);
    assert_eq!(values["$SYS/broker/uptime"], "0 seconds");
    for topic in counters {
        let value = &values[&format!("$SYS/broker/{topic}")];
        assert!(value.parse::<u64>().is_ok(), "{topic}: {value:?}");
    }

    let (mut publisher, _) = RawClient::connect(addr, connect_packet(Version::V311, "p")).await;
    for i in 1..=3u16 {
        publisher
            .send(&publish("t", QoS::AtLeastOnce, i, b"x"))
            .await;
        assert!(matches!(publisher.recv().await, Some(Packet::Ack(_))));
    }
    values.clear();
    clock.advance(Duration::from_secs(10));
    read_until(&mut watcher, &mut values, |v| {
        v.get("$SYS/broker/uptime").map(String::as_str) == Some("10 seconds")
            && v.contains_key("$SYS/broker/load/publish/received/15min")
            && v.contains_key("$SYS/broker/roost/acl_denied")
    })
    .await;
    assert_eq!(values["$SYS/broker/publish/messages/received"], "3");
    assert_eq!(values["$SYS/broker/clients/connected"], "2");
    assert_eq!(values["$SYS/broker/clients/maximum"], "2");
    assert_eq!(values["$SYS/broker/subscriptions/count"], "1");
    // 3 PUBLISH in 10 s: 18 per minute, the first rate seen.
    assert_eq!(values["$SYS/broker/load/publish/received/1min"], "18.00");

    // A late subscriber gets the current values at once (retained).
    let (mut late, _) = RawClient::connect(addr, connect_packet(Version::V5, "late")).await;
    late.send(&subscribe("$SYS/broker/uptime", QoS::AtMostOnce))
        .await;
    let mut got = HashMap::new();
    read_until(&mut late, &mut got, |v| {
        v.contains_key("$SYS/broker/uptime")
    })
    .await;
    assert_eq!(got["$SYS/broker/uptime"], "10 seconds");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_filter_does_not_match_sys_topics() {
    // MQTT-4.7.2-1.
    let broker = start_broker_with(|c| c.sys_interval = 10).await;
    let addr = broker.local_addr();
    let (mut all, _) = RawClient::connect(addr, connect_packet(Version::V311, "all")).await;
    all.send(&subscribe("#", QoS::AtMostOnce)).await;
    assert!(matches!(all.recv().await, Some(Packet::SubAck(_))));
    let (mut p, _) = RawClient::connect(addr, connect_packet(Version::V311, "p")).await;
    p.send(&publish("plain", QoS::AtMostOnce, 0, b"x")).await;
    match all.recv().await {
        Some(Packet::Publish(m)) => assert_eq!(m.topic, "plain", "no $SYS topic first"),
        other => panic!("expected the plain message, got {other:?}"),
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_topics_are_read_subject_to_the_acl() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        "user ops\ntopic read $SYS/#\n\nuser device\ntopic readwrite d/#\n",
    )
    .unwrap();
    let broker = start_broker_with(|c| {
        c.sys_interval = 10;
        c.acl_file = Some(acl.clone());
    })
    .await;
    let addr = broker.local_addr();
    for (user, granted) in [("ops", true), ("device", false)] {
        let mut connect = connect_packet(Version::V5, user);
        connect.username = Some(user.to_string());
        let (mut c, _) = RawClient::connect(addr, connect).await;
        c.send(&subscribe("$SYS/broker/version", QoS::AtMostOnce))
            .await;
        match c.recv().await {
            Some(Packet::SubAck(s)) => assert_eq!(s.codes == vec![0], granted, "{user}: {s:?}"),
            other => panic!("expected SUBACK, got {other:?}"),
        }
        if granted {
            assert!(
                matches!(c.recv().await, Some(Packet::Publish(p)) if p.topic == "$SYS/broker/version")
            );
        }
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_write_sys_topics() {
    let broker = start_broker_with(|c| c.sys_interval = 10).await;
    let addr = broker.local_addr();
    let (mut p, _) = RawClient::connect(addr, connect_packet(Version::V5, "spoofer")).await;
    p.send(&publish_with(
        "$SYS/broker/version",
        QoS::AtLeastOnce,
        1,
        b"spoofed 9.9",
        true,
    ))
    .await;
    match p.recv().await {
        Some(Packet::Ack(a)) => assert_eq!(a.reason.0, 0x87, "not authorized"),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    let (mut w, _) = RawClient::connect(addr, connect_packet(Version::V311, "w")).await;
    w.send(&subscribe("$SYS/broker/version", QoS::AtMostOnce))
        .await;
    let mut got = HashMap::new();
    read_until(&mut w, &mut got, |v| v.contains_key("$SYS/broker/version")).await;
    assert!(got["$SYS/broker/version"].starts_with("roost "), "{got:?}");
    broker.shutdown().await;
}
