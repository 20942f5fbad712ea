//! Helpers shared by the bridge tests.

use std::time::Duration;

use roost::codec::{AckKind, Packet, Publish, QoS, Version};
use roost::config::{BridgeDirection, BridgeTopic};
use roost::{BridgeState, BrokerHandle};

use super::{RawClient, WAIT, ack, connect_packet, subscribe};

/// A bridge topic line.
pub fn line(
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

/// Waits (bounded) until the first bridge of `broker` is in `state`.
pub async fn wait_state(broker: &BrokerHandle, state: BridgeState) {
    let deadline = tokio::time::Instant::now() + WAIT * 2;
    while broker.bridges()[0].state != state {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bridge {state:?} in time: {:?}",
            broker.bridges()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A raw 3.1.1 client on `broker` subscribed to `filter`.
pub async fn subscriber(broker: &BrokerHandle, id: &str, filter: &str, qos: QoS) -> RawClient {
    let (mut c, _) =
        RawClient::connect(broker.local_addr(), connect_packet(Version::V311, id)).await;
    c.send(&subscribe(filter, qos)).await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    c
}

/// The next PUBLISH on `c` within `wait`, acknowledged as a receiver (PUBACK, or PUBREC and
/// then PUBCOMP for the PUBREL that follows); `None` if none came.
pub async fn next_within(c: &mut RawClient, wait: Duration) -> Option<Publish> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, c.recv()).await {
            Err(_) => return None,
            Ok(Some(Packet::Publish(p))) => {
                match p.qos {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => c.send(&ack(AckKind::PubAck, p.packet_id)).await,
                    QoS::ExactlyOnce => c.send(&ack(AckKind::PubRec, p.packet_id)).await,
                }
                return Some(p);
            }
            Ok(Some(Packet::Ack(a))) if a.kind == AckKind::PubRel => {
                c.send(&ack(AckKind::PubComp, a.packet_id)).await;
            }
            Ok(Some(other)) => panic!("expected PUBLISH, got {other:?}"),
            Ok(None) => panic!("connection closed while waiting for a PUBLISH"),
        }
    }
}

/// The next PUBLISH on `c`, acknowledged (see [`next_within`]); it must come within
/// [`WAIT`].
pub async fn next_message(c: &mut RawClient) -> Publish {
    next_within(c, WAIT).await.expect("a PUBLISH in time")
}
