//! Bridges between brokers: a Roost bridged to another Roost (in process) here; against the
//! real mosquitto in `bridge_mosquitto.rs`.

mod common;

use std::time::Duration;

use common::*;
use roost::codec::{AckKind, Packet, QoS, Version};
use roost::config::{BridgeConfig, BridgeDirection, BridgeTopic};
use roost::{BridgeState, BrokerHandle};

fn line(
    pattern: &str,
    direction: BridgeDirection,
    qos: QoS,
    local: &str,
    remote: &str,
) -> BridgeTopic {
    BridgeTopic {
        pattern: pattern.into(),
        direction,
        qos,
        local_prefix: local.into(),
        remote_prefix: remote.into(),
    }
}

/// A bridge to `remote` that reconnects quickly.
fn bridge_to(remote: &BrokerHandle, topics: Vec<BridgeTopic>) -> BridgeConfig {
    let addr = remote.local_addr();
    let mut b = BridgeConfig::new("edge", &addr.ip().to_string(), addr.port(), topics);
    b.remote_clientid = Some("edge-bridge".into());
    b.restart_base = Duration::from_millis(200);
    b.restart_cap = Some(Duration::from_secs(1));
    b
}

async fn wait_connected(broker: &BrokerHandle) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while broker.bridges()[0].state != BridgeState::Connected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bridge connects in time: {:?}",
            broker.bridges()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Subscribes a raw 3.1.1 client to `filter` on `broker`.
async fn subscriber(broker: &BrokerHandle, id: &str, filter: &str, qos: QoS) -> RawClient {
    let (mut c, _) =
        RawClient::connect(broker.local_addr(), connect_packet(Version::V311, id)).await;
    c.send(&subscribe(filter, qos)).await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    c
}

/// The next PUBLISH on `c`, acknowledged.
async fn next_message(c: &mut RawClient) -> roost::codec::Publish {
    loop {
        match c.recv().await {
            Some(Packet::Publish(p)) => {
                match p.qos {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => c.send(&ack(AckKind::PubAck, p.packet_id)).await,
                    QoS::ExactlyOnce => c.send(&ack(AckKind::PubRec, p.packet_id)).await,
                }
                return p;
            }
            Some(Packet::Ack(a)) if a.kind == AckKind::PubRel => {
                c.send(&ack(AckKind::PubComp, a.packet_id)).await;
            }
            Some(other) => panic!("unexpected {other:?}"),
            None => panic!("closed"),
        }
    }
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
