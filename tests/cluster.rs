//! Cluster mode: Roost nodes on a three-server NATS JetStream cluster (replicas 3) act as one
//! broker. Skipped when `nats-server` is not installed, unless `ROOST_CLUSTER=require`.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::bridge::{next_message, next_within};
use common::cluster::{start_node, start_three};
use common::nats::{self, NatsCluster};
use common::{RawClient, WAIT, ack, connect_packet, publish, publish_with, subscribe};
use futures_util::StreamExt;
use roost::BrokerHandle;
use roost::codec::{
    AckKind, Packet, Publish, PublishProperties, QoS, ReasonCode, Subscribe, Version,
};
use tokio::time::timeout;

/// Sends `packet` (a QoS 1/2 PUBLISH) and completes its handshake: the PUBACK, or the PUBREC,
/// PUBREL and PUBCOMP. Returns the reason code of the PUBACK or PUBREC.
async fn publish_acked(c: &mut RawClient, packet: Packet) -> u8 {
    let Packet::Publish(p) = &packet else {
        panic!("a PUBLISH")
    };
    let (qos, pid) = (p.qos, p.packet_id);
    c.send(&packet).await;
    let reason = match c.recv().await {
        Some(Packet::Ack(a)) if a.packet_id == pid => a.reason.0,
        other => panic!("expected the acknowledgement of {pid}, got {other:?}"),
    };
    if qos == QoS::ExactlyOnce && reason < 0x80 {
        c.send(&ack(AckKind::PubRel, pid)).await;
        match c.recv().await {
            Some(Packet::Ack(a)) if a.kind == AckKind::PubComp => {}
            other => panic!("expected PUBCOMP, got {other:?}"),
        }
    }
    reason
}

/// A raw client of `version` connected to `node` as `id`.
async fn client(node: &BrokerHandle, version: Version, id: &str) -> RawClient {
    let (c, ack) = RawClient::connect(node.local_addr(), connect_packet(version, id)).await;
    assert_eq!(ack.code, ReasonCode::SUCCESS, "{id}");
    c
}

/// Publishes QoS 0 probes to `topic` from `publisher` until `subscriber` gets one: NATS
/// spreads a new subscription's interest to the other servers asynchronously.
async fn await_interest(publisher: &mut RawClient, subscriber: &mut RawClient, topic: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        publisher
            .send(&publish(topic, QoS::AtMostOnce, 0, b"probe"))
            .await;
        if let Some(p) = next_within(subscriber, Duration::from_millis(100)).await {
            assert_eq!(&p.payload[..], b"probe");
            // Drain probes already on their way.
            while next_within(subscriber, Duration::from_millis(200))
                .await
                .is_some()
            {}
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "interest in {topic} reached the publisher's node in time"
        );
    }
}

fn start_nats() -> Option<NatsCluster> {
    if nats::skip_without_nats() {
        return None;
    }
    Some(NatsCluster::start(3))
}

/// Overlapping subscriptions on another node get one copy per session at the highest granted
/// QoS (MQTT-3.3.5-1), QoS 0, 1 and 2 alike; a 5.0 publisher is told 0x00, not 0x10 (No
/// matching subscribers), since this node cannot know the other nodes' subscriptions.
#[tokio::test(flavor = "multi_thread")]
async fn messages_cross_nodes_once_per_session_at_the_granted_qos() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let (n1, n2, n3) = start_three(&urls).await;

    // On n2, a 3.1.1 session with two overlapping filters.
    let mut a = client(&n2, Version::V311, "a").await;
    let mut both = Subscribe::single(1, "a/#", QoS::ExactlyOnce);
    let mut plus = both.filters[0].clone();
    plus.filter = "a/+".into();
    plus.qos = QoS::AtLeastOnce;
    both.filters.push(plus);
    a.send(&Packet::Subscribe(both)).await;
    assert!(matches!(a.recv().await, Some(Packet::SubAck(_))));
    // On n3, a 5.0 session at QoS 1.
    let mut b = client(&n3, Version::V5, "b").await;
    b.send(&subscribe("a/b", QoS::AtLeastOnce)).await;
    assert!(matches!(b.recv().await, Some(Packet::SubAck(_))));

    let mut p = client(&n1, Version::V5, "p").await;
    await_interest(&mut p, &mut a, "a/b").await;
    await_interest(&mut p, &mut b, "a/b").await;

    p.send(&publish("a/b", QoS::AtMostOnce, 0, b"m0")).await;
    assert_eq!(
        publish_acked(&mut p, publish("a/b", QoS::AtLeastOnce, 1, b"m1")).await,
        0x00
    );
    assert_eq!(
        publish_acked(&mut p, publish("a/b", QoS::ExactlyOnce, 2, b"m2")).await,
        0x00
    );

    // Late probes are left out.
    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    for (c, got) in [(&mut a, &mut got_a), (&mut b, &mut got_b)] {
        while got.len() < 3 {
            let m = next_message(c).await;
            if &m.payload[..] != b"probe" {
                got.push((m.payload.clone(), m.qos));
            }
        }
    }
    got_a.sort();
    got_b.sort();
    let m = |s: &'static str| Bytes::from_static(s.as_bytes());
    assert_eq!(
        got_a,
        [
            (m("m0"), QoS::AtMostOnce),
            (m("m1"), QoS::AtLeastOnce),
            (m("m2"), QoS::ExactlyOnce)
        ]
    );
    assert_eq!(
        got_b,
        [
            (m("m0"), QoS::AtMostOnce),
            (m("m1"), QoS::AtLeastOnce),
            (m("m2"), QoS::AtLeastOnce)
        ]
    );
    // No second copy.
    for c in [&mut a, &mut b] {
        while let Some(m) = next_within(c, Duration::from_millis(300)).await {
            assert_eq!(&m.payload[..], b"probe", "a second copy");
        }
    }
}

/// Retained messages live in a stream: set on one node, read on another, deleted from a third
/// (MQTT-3.3.1-10), and loaded by a node that starts later.
#[tokio::test(flavor = "multi_thread")]
async fn retained_messages_are_shared_by_every_node() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let (n1, n2, n3) = start_three(&urls).await;
    let mut p = client(&n1, Version::V311, "p").await;
    for (topic, payload) in [("r/1", "one"), ("r/2", "two")] {
        publish_acked(
            &mut p,
            publish_with(topic, QoS::AtLeastOnce, 1, payload.as_bytes(), true),
        )
        .await;
    }

    let retained_at = |node: &BrokerHandle, id: &'static str| {
        let addr = node.local_addr();
        async move {
            let (mut s, _) = RawClient::connect(addr, connect_packet(Version::V311, id)).await;
            s.send(&subscribe("r/#", QoS::AtLeastOnce)).await;
            assert!(matches!(s.recv().await, Some(Packet::SubAck(_))));
            let mut got = Vec::new();
            while let Some(m) = next_within(&mut s, Duration::from_millis(300)).await {
                // Sent on subscribe as retained (MQTT-3.3.1-8); a message still travelling
                // from another node comes as a live one, RETAIN 0 (MQTT-3.3.1-9).
                if m.retain {
                    got.push((m.topic, String::from_utf8_lossy(&m.payload).into_owned()));
                }
            }
            got.sort();
            got
        }
    };
    // The write is acknowledged once the stream has it; the other nodes follow the stream.
    let wanted = vec![
        ("r/1".to_string(), "one".to_string()),
        ("r/2".into(), "two".into()),
    ];
    wait_for(|| async { retained_at(&n2, "s2").await == wanted }).await;

    // Deleted on n3: gone everywhere.
    let mut q = client(&n3, Version::V5, "q").await;
    publish_acked(&mut q, publish_with("r/1", QoS::AtLeastOnce, 1, b"", true)).await;
    let left = vec![("r/2".to_string(), "two".to_string())];
    wait_for(|| async { retained_at(&n1, "s1").await == left }).await;

    // A node that starts later loads what the stream holds.
    let n4 = start_node(&urls, "n4").await;
    assert_eq!(retained_at(&n4, "s4").await, left);
    drop(n2);
}

/// Retries `cond` (bounded) until it holds.
async fn wait_for<F, Fut>(mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A CONNECT on one node takes over the client id connected to another: the first connection
/// is closed, with DISCONNECT 0x8E (Session taken over) for 5.0 (MQTT-3.1.4-3).
#[tokio::test(flavor = "multi_thread")]
async fn a_connect_on_another_node_takes_the_session_over() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let (n1, n2, n3) = start_three(&urls).await;
    let mut first = client(&n1, Version::V5, "dev").await;
    let mut second = client(&n2, Version::V5, "dev").await;
    match first.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, ReasonCode::SESSION_TAKEN_OVER),
        other => panic!("expected DISCONNECT 0x8E, got {other:?}"),
    }
    assert!(first.recv().await.is_none(), "then closed");
    // The new owner stays.
    second.send(&Packet::PingReq).await;
    assert!(matches!(second.recv().await, Some(Packet::PingResp)));

    // 3.1.1 has no DISCONNECT from the server: the connection closes.
    let mut old = client(&n2, Version::V311, "dev311").await;
    let _new = client(&n3, Version::V311, "dev311").await;
    assert!(old.until_closed().await.is_empty());
}

/// Two CONNECTs with one client id on two nodes at once: both claims read the same revision,
/// so exactly one wins; the other is refused as busy (0x89) or, if its claim came first,
/// taken over. Either way one connection remains.
#[tokio::test(flavor = "multi_thread")]
async fn of_two_racing_connects_exactly_one_wins() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let (n1, n2) = (start_node(&urls, "n1").await, start_node(&urls, "n2").await);
    for round in 0..20 {
        let id = format!("race-{round}");
        let (x, y) = tokio::join!(
            RawClient::connect(n1.local_addr(), connect_packet(Version::V5, &id)),
            RawClient::connect(n2.local_addr(), connect_packet(Version::V5, &id)),
        );
        let mut accepted: Vec<RawClient> = Vec::new();
        for (c, ack) in [x, y] {
            match ack.code {
                ReasonCode::SUCCESS => accepted.push(c),
                ReasonCode::SERVER_BUSY => {}
                other => panic!("round {round}: unexpected CONNACK {other:?}"),
            }
        }
        assert!(!accepted.is_empty(), "round {round}: one connect wins");
        if accepted.len() == 2 {
            // Both claims succeeded one after the other: the earlier one is taken over.
            let (c0, c1) = accepted.split_at_mut(1);
            let closed = tokio::select! {
                p = c0[0].recv() => (0, p),
                p = c1[0].recv() => (1, p),
            };
            match closed.1 {
                Some(Packet::Disconnect(d)) => {
                    assert_eq!(d.reason, ReasonCode::SESSION_TAKEN_OVER, "round {round}")
                }
                other => panic!("round {round}: expected a takeover, got {other:?}"),
            }
            accepted.remove(closed.0);
        }
        let mut winner = accepted.pop().expect("a winner");
        winner.send(&Packet::PingReq).await;
        assert!(
            matches!(winner.recv().await, Some(Packet::PingResp)),
            "round {round}: the winner stays connected"
        );
    }
}

/// NATS applications read MQTT messages on `mqtt.<topic>` with their properties as headers,
/// and publish to MQTT clients: on a subject (QoS 0) or to the stream (QoS 1).
#[tokio::test(flavor = "multi_thread")]
async fn nats_applications_and_mqtt_clients_see_each_others_messages() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let (n1, n2) = (start_node(&urls, "n1").await, start_node(&urls, "n2").await);
    let nats = nats::connect(&urls).await;
    let mut sub = nats.subscribe("mqtt.sensors.>").await.expect("subscribe");
    nats.flush().await.expect("flush");

    let mut p = client(&n1, Version::V5, "sensor").await;
    let mut message = Publish {
        properties: PublishProperties {
            content_type: Some("text/plain".into()),
            user_properties: vec![("site".into(), "7".into())],
            ..Default::default()
        },
        ..match publish("sensors/t1", QoS::AtLeastOnce, 1, b"21.5") {
            Packet::Publish(p) => p,
            _ => unreachable!(),
        }
    };
    message.retain = false;
    publish_acked(&mut p, Packet::Publish(message)).await;
    let got = timeout(WAIT, sub.next())
        .await
        .expect("in time")
        .expect("a message");
    assert_eq!(got.subject.as_str(), "mqtt.sensors.t1");
    assert_eq!(&got.payload[..], b"21.5");
    let h = got.headers.expect("headers");
    assert_eq!(h.get("Roost-QoS").map(|v| v.as_str()), Some("1"));
    assert_eq!(h.get("Roost-Origin").map(|v| v.as_str()), Some("n1"));
    assert_eq!(
        h.get("Roost-Content-Type").map(|v| v.as_str()),
        Some("text/plain")
    );
    assert_eq!(
        h.get("Roost-User-Property").map(|v| v.as_str()),
        Some("site=7")
    );

    // From NATS to MQTT: a subject (QoS 0), and the stream (QoS 1, durable).
    let mut s = client(&n2, Version::V311, "device").await;
    s.send(&subscribe("cmd/#", QoS::AtLeastOnce)).await;
    assert!(matches!(s.recv().await, Some(Packet::SubAck(_))));
    let deadline = tokio::time::Instant::now() + WAIT;
    let first = loop {
        nats.publish("mqtt.cmd.dev1", "on".into())
            .await
            .expect("publish");
        if let Some(m) = next_within(&mut s, Duration::from_millis(100)).await {
            break m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "NATS message in time"
        );
    };
    assert_eq!(
        (first.topic.as_str(), first.qos),
        ("cmd/dev1", QoS::AtMostOnce)
    );
    while next_within(&mut s, Duration::from_millis(200))
        .await
        .is_some()
    {}
    let js = async_nats::jetstream::new(nats.clone());
    js.publish("roost.messages.cmd.dev1", "off".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    let m = next_message(&mut s).await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..], m.qos),
        ("cmd/dev1", &b"off"[..], QoS::AtLeastOnce)
    );
}

/// A topic NATS cannot carry is refused, never altered: 5.0 PUBACK 0x90 (Topic Name invalid)
/// and SUBACK 0x8F (Topic Filter invalid); a 3.1.1 publisher is disconnected.
#[tokio::test(flavor = "multi_thread")]
async fn topics_nats_cannot_carry_are_refused() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let n1 = start_node(&urls, "n1").await;
    let mut c = client(&n1, Version::V5, "c").await;
    assert_eq!(
        publish_acked(&mut c, publish("a b", QoS::AtLeastOnce, 1, b"x")).await,
        0x90
    );
    assert_eq!(
        publish_acked(&mut c, publish("a/*/b", QoS::ExactlyOnce, 2, b"x")).await,
        0x90
    );
    c.send(&subscribe("x/>/y", QoS::AtLeastOnce)).await;
    match c.recv().await {
        Some(Packet::SubAck(a)) => assert_eq!(a.codes, [ReasonCode::TOPIC_FILTER_INVALID]),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    // The connection is still fine.
    assert_eq!(
        publish_acked(&mut c, publish("a/b", QoS::AtLeastOnce, 3, b"x")).await,
        0x00
    );
    // QoS 0 has no acknowledgement: 5.0 gets DISCONNECT 0x90.
    c.send(&publish("a\tb", QoS::AtMostOnce, 0, b"x")).await;
    match c.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, ReasonCode::TOPIC_NAME_INVALID),
        other => panic!("expected DISCONNECT 0x90, got {other:?}"),
    }
    let mut old = client(&n1, Version::V311, "old").await;
    old.send(&publish("a b", QoS::AtLeastOnce, 1, b"x")).await;
    assert!(old.until_closed().await.is_empty());
}

/// A second node with a running node's name refuses to start, naming the key: two nodes
/// with one name would share one consumer of the stream and lose each other's messages.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_node_with_a_running_nodes_name_does_not_start() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let _first = start_node(&urls, "twin").await;
    let config = roost::Config {
        port: 0,
        in_memory: true,
        sys_interval: 0,
        cluster: Some(common::cluster::cluster_config(&urls, "twin")),
        ..roost::Config::default()
    };
    let error = match roost::start(config).await {
        Ok(_) => panic!("a second node named twin started"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("cluster.node"), "{error}");
}

/// Of two nodes given one name and started at the same moment, exactly one starts: each
/// writes its first heartbeat only over the one it saw (none here), so the second write fails.
#[tokio::test(flavor = "multi_thread")]
async fn of_two_nodes_started_together_with_one_name_one_starts() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let config = || roost::Config {
        port: 0,
        in_memory: true,
        sys_interval: 0,
        cluster: Some(common::cluster::cluster_config(&urls, "twin")),
        ..roost::Config::default()
    };
    let (a, b) = tokio::join!(roost::start(config()), roost::start(config()));
    let errors: Vec<String> = [&a, &b]
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "exactly one of the two is refused: {errors:?}"
    );
    assert!(errors[0].contains("cluster.node"), "{}", errors[0]);
}
