//! Shared Subscriptions (MQTT 5.0 4.8.2) over real sockets: a consumer group of rumqttc
//! clients, messages of a member that goes away moving to another, and durable members across
//! a restart and a `kill -9`.

mod common;

use std::collections::BTreeSet;

use common::binary::BrokerProcess;
use common::*;
use roost::codec::{AckKind, Connect, Packet, Publish, QoS, ReasonCode, Version};

/// A durable 5.0 session (expiry one hour).
fn durable_v5(id: &str) -> Connect {
    Connect {
        clean_start: false,
        session_expiry_interval: 3600,
        ..connect_packet(Version::V5, id)
    }
}

/// Subscribes a raw client and checks the SUBACK grants QoS 1.
async fn join(c: &mut RawClient, filter: &str) {
    c.send(&subscribe(filter, QoS::AtLeastOnce)).await;
    match c.recv().await {
        Some(Packet::SubAck(s)) => assert_eq!(s.codes, vec![ReasonCode(1)], "{filter}"),
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

/// Publishes `payloads` at QoS 1 from a new raw 5.0 client; each must be acknowledged with
/// success (a group with members only away counts as matching).
async fn publish_all(addr: std::net::SocketAddr, topic: &str, payloads: &[String]) {
    let (mut p, _) = RawClient::connect(addr, connect_packet(Version::V5, "publisher")).await;
    for (i, payload) in payloads.iter().enumerate() {
        let id = u16::try_from(i + 1).expect("few");
        p.send(&publish(topic, QoS::AtLeastOnce, id, payload.as_bytes()))
            .await;
        match p.recv().await {
            Some(Packet::Ack(a)) => {
                assert_eq!((a.kind, a.packet_id), (AckKind::PubAck, id));
                assert_eq!(a.reason, ReasonCode::SUCCESS, "{payload}");
            }
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    p.send(&Packet::Disconnect(Default::default())).await;
}

/// Reads `n` PUBLISH packets, acknowledging each; returns their payloads.
async fn take(c: &mut RawClient, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        match c.recv().await {
            Some(Packet::Publish(p)) => {
                c.send(&ack(AckKind::PubAck, p.packet_id)).await;
                got.push(payload(&p));
            }
            Some(_) => {}
            None => panic!("closed after {got:?}"),
        }
    }
    got
}

fn payload(p: &Publish) -> String {
    String::from_utf8_lossy(&p.payload).into_owned()
}

fn jobs(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("job-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_group_shares_work_and_a_lost_member_leaves_it_to_another() {
    use rumqttc::v5::mqttbytes::QoS as Q;
    use rumqttc::v5::mqttbytes::v5::Packet as P;
    let broker = start_broker().await;
    let addr = broker.local_addr();
    // `slow` takes its messages and never acknowledges them; `steady` acknowledges.
    let mut options = v5_options("slow", addr);
    options.set_manual_acks(true);
    let (mut slow, connack) = v5_connect(options).await;
    let available = connack
        .properties
        .and_then(|p| p.shared_subscription_available);
    assert_eq!(available, Some(1), "CONNACK: Shared Subscription Available");
    let (mut steady, _) = v5_connect(v5_options("steady", addr)).await;
    for member in [&mut slow, &mut steady] {
        let ack = member
            .subscribe("$share/workers/jobs/+", Q::AtLeastOnce)
            .await;
        assert_eq!(ack.return_codes.len(), 1);
    }
    let all = jobs(10);
    publish_all(addr, "jobs/render", &all).await;
    let mut at_slow = BTreeSet::new();
    while at_slow.len() < 5 {
        at_slow.insert(String::from_utf8_lossy(&slow.next_publish().await.payload).into_owned());
    }
    let mut at_steady = BTreeSet::new();
    while at_steady.len() < 5 {
        at_steady
            .insert(String::from_utf8_lossy(&steady.next_publish().await.payload).into_owned());
    }
    assert!(at_slow.is_disjoint(&at_steady), "one member each");
    // `slow` is gone without a word: its session (clean start, no expiry) ends, and the five
    // messages it never acknowledged go to `steady`.
    drop(slow);
    while at_steady.len() < 10 {
        let p = steady.next_publish().await;
        assert!(
            at_steady.insert(String::from_utf8_lossy(&p.payload).into_owned()),
            "no second copy"
        );
    }
    assert_eq!(at_steady, all.iter().cloned().collect());
    let groups = broker.shared_subscriptions();
    assert_eq!(groups.len(), 1);
    let g = &groups[0];
    assert_eq!(
        (g.share_name.as_str(), g.filter.as_str()),
        ("workers", "jobs/+")
    );
    assert_eq!((g.members, g.online, g.redistributed), (1, 1, 5));
    // Nothing else is waiting.
    let nothing = tokio::time::timeout(std::time::Duration::from_millis(100), async {
        steady
            .next(|p| matches!(p, P::Publish(_)).then_some(()))
            .await
    })
    .await;
    assert!(nothing.is_err(), "no duplicates");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_shared_subscription_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = |c: &mut roost::Config| {
        c.in_memory = false;
        c.data_dir = dir.path().to_path_buf();
    };
    let broker = start_broker_with(config).await;
    let (mut worker, _) = RawClient::connect(broker.local_addr(), durable_v5("worker")).await;
    join(&mut worker, "$share/g/jobs").await;
    worker.send(&Packet::Disconnect(Default::default())).await;
    assert!(worker.until_closed().await.is_empty());
    broker.shutdown().await;

    let broker = start_broker_with(config).await;
    let groups = broker.shared_subscriptions();
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!((groups[0].members, groups[0].online), (1, 0));
    // Published while the only member is away: queued for it, acknowledged with success.
    publish_all(broker.local_addr(), "jobs", &jobs(3)).await;
    let (mut worker, connack) = RawClient::connect(broker.local_addr(), durable_v5("worker")).await;
    assert!(connack.session_present);
    assert_eq!(take(&mut worker, 3).await, jobs(3));
    broker.shutdown().await;
}

#[tokio::test]
async fn messages_of_a_durable_member_move_when_its_session_ends_after_kill_9() {
    // Two durable members are away, so the messages are shared out between their stored
    // queues. After a kill -9 and a restart, `b` is back and `a` starts clean: `a`'s old
    // session ends, and what it held (read back from the store) goes to `b`.
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    for id in ["a", "b"] {
        let (mut c, _) = RawClient::connect(broker.addr, durable_v5(id)).await;
        join(&mut c, "$share/g/jobs").await;
        c.send(&Packet::Disconnect(Default::default())).await;
        assert!(c.until_closed().await.is_empty());
    }
    let all = jobs(6);
    publish_all(broker.addr, "jobs", &all).await;
    broker.kill9();

    let broker = BrokerProcess::start(dir.path());
    let (mut b, connack) = RawClient::connect(broker.addr, durable_v5("b")).await;
    assert!(connack.session_present);
    let mut got = take(&mut b, 3).await;
    let (mut a, connack) = RawClient::connect(
        broker.addr,
        Connect {
            clean_start: true,
            ..durable_v5("a")
        },
    )
    .await;
    assert!(!connack.session_present, "a new session");
    got.extend(take(&mut b, 3).await);
    got.sort();
    assert_eq!(got, all, "every message once");
    broker.wait_log("moved to other members");
    // `a` rejoins with its new session and gets nothing old.
    join(&mut a, "$share/g/jobs").await;
    a.send(&Packet::PingReq).await;
    assert!(matches!(a.recv().await, Some(Packet::PingResp)));
}
