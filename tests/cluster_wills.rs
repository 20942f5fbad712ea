//! Wills in cluster mode: a will outlives its node (published by another node, exactly once)
//! and a will with a delay waits for the cluster, cancelled if the client comes back on any
//! node. Skipped when `nats-server` is not installed, unless `ROOST_CLUSTER=require`.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::binary::BrokerProcess;
use common::bridge::{next_within, subscriber};
use common::cluster::{cluster_toml, start_node};
use common::nats::{self, ELECTION_WAIT, NatsCluster};
use common::{RawClient, connect_packet};
use roost::codec::{Connect, QoS, ReasonCode, Version, Will};

/// A 5.0 CONNECT for `id` with a will to `status/{id}` saying `offline` after `delay`
/// seconds, and a Session that lives `expiry` seconds.
fn with_will(id: &str, delay: u32, expiry: u32) -> Connect {
    Connect {
        will: Some(Will {
            topic: format!("status/{id}"),
            payload: Bytes::from_static(b"offline"),
            qos: QoS::AtLeastOnce,
            retain: false,
            delay_interval: delay,
            properties: Default::default(),
        }),
        session_expiry_interval: expiry,
        ..connect_packet(Version::V5, id)
    }
}

/// The wills that reach `c` within `wait`, as topics.
async fn wills_within(c: &mut RawClient, wait: Duration) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut got = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return got;
        }
        // In steps shorter than the client's own bound on one read.
        if let Some(m) = next_within(c, left.min(Duration::from_secs(5))).await {
            assert_eq!(&m.payload[..], b"offline");
            got.push(m.topic);
        }
    }
}

/// `kill -9` of the node a client with a will is connected to: another node publishes the
/// will once its heartbeats stop, exactly once for the whole cluster (each subscriber gets
/// one copy), since only one node's compare-and-set removal of the record succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn the_will_of_a_client_on_a_killed_node_is_published_once_by_another_node() {
    if nats::skip_without_nats() {
        return;
    }
    let cluster = NatsCluster::start(3);
    let urls = cluster.urls();
    let dir = tempfile::tempdir().expect("tempdir");
    let n1 = BrokerProcess::start_with(dir.path(), &cluster_toml(&urls, "n1"));
    let (n2, n3) = (start_node(&urls, "n2").await, start_node(&urls, "n3").await);
    let mut s2 = subscriber(&n2, "s2", "status/#", QoS::AtLeastOnce).await;
    let mut s3 = subscriber(&n3, "s3", "status/#", QoS::AtLeastOnce).await;

    let (_device, ack) = RawClient::connect(n1.addr, with_will("dev", 0, 0)).await;
    assert_eq!(ack.code, ReasonCode::SUCCESS);
    n1.kill9();

    // Dead after 10 s without heartbeats, then swept within a second.
    let deadline = tokio::time::Instant::now() + ELECTION_WAIT;
    let mut all = Vec::new();
    while all.is_empty() && tokio::time::Instant::now() < deadline {
        all = wills_within(&mut s2, Duration::from_secs(1)).await;
    }
    assert_eq!(all, ["status/dev"], "published by a node that lives on");
    all.extend(wills_within(&mut s2, Duration::from_secs(2)).await);
    assert_eq!(all, ["status/dev"], "one copy on n2");
    assert_eq!(
        wills_within(&mut s3, Duration::from_secs(1)).await,
        ["status/dev"],
        "one copy on n3"
    );
}

/// A connection lost with a delayed will leaves it to the cluster: published once the delay
/// has passed (MQTT-3.1.3-9), unless the client connects again first, on any node.
#[tokio::test(flavor = "multi_thread")]
async fn a_delayed_will_waits_and_is_cancelled_by_a_return_on_another_node() {
    if nats::skip_without_nats() {
        return;
    }
    let cluster = NatsCluster::start(3);
    let urls = cluster.urls();
    let (n1, n2) = (start_node(&urls, "n1").await, start_node(&urls, "n2").await);
    let mut s = subscriber(&n2, "s", "status/#", QoS::AtLeastOnce).await;

    // Lost connection, nobody comes back: published after the 2 s delay.
    let (gone, _) = RawClient::connect(n1.local_addr(), with_will("gone", 2, 60)).await;
    drop(gone);
    assert!(
        wills_within(&mut s, Duration::from_millis(1500))
            .await
            .is_empty(),
        "not before its delay"
    );
    assert_eq!(
        wills_within(&mut s, Duration::from_secs(5)).await,
        ["status/gone"]
    );

    // Lost connection, back on another node within the delay, resuming its session:
    // never published.
    let (back, _) = RawClient::connect(n1.local_addr(), with_will("back", 2, 60)).await;
    drop(back);
    let resume = Connect {
        clean_start: false,
        ..with_will("back", 2, 60)
    };
    let (_again, ack) = RawClient::connect(n2.local_addr(), resume).await;
    assert_eq!(ack.code, ReasonCode::SUCCESS);
    assert!(
        wills_within(&mut s, Duration::from_secs(4))
            .await
            .is_empty(),
        "the client came back: no will"
    );

    // Back with a clean start: the old session ends, so its will goes at once, before its
    // delay (MQTT-3.1.2-8).
    let (fresh, _) = RawClient::connect(n1.local_addr(), with_will("fresh", 30, 60)).await;
    drop(fresh);
    let (_new, ack) =
        RawClient::connect(n2.local_addr(), connect_packet(Version::V5, "fresh")).await;
    assert_eq!(ack.code, ReasonCode::SUCCESS);
    assert_eq!(
        wills_within(&mut s, Duration::from_secs(3)).await,
        ["status/fresh"]
    );
}
