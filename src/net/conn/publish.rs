//! PUBLISH from a client: QoS 2 duplicate suppression, routing, retained update, and the
//! PUBACK or PUBREC answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::debug;

use crate::auth::Access;
use crate::broker::Metrics;
use crate::codec::{AckKind, Publish, QoS, Version};
use crate::session::{Message, Qos2Publish};
use crate::store::Op;

use super::{Close, Connection, Transport};

/// MQTT 5.0 reason code: success, but no subscriber matched.
const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;
/// MQTT 5.0 reason code: not authorized.
const NOT_AUTHORIZED: u8 = 0x87;

impl<S: Transport> Connection<S> {
    pub(super) fn handle_publish(&mut self, publish: Publish) -> Result<(), Close> {
        Metrics::inc(&self.broker.metrics.publish_received);
        let Some(attached) = &self.state else {
            return Err(Close::Io);
        };
        if publish.topic_alias.is_some() {
            // Our Topic Alias Maximum is 0 (MQTT-3.3.2-9).
            return Err(Close::Violation {
                reason: 0x94,
                why: "topic alias not allowed",
            });
        }
        let packet_id = publish.packet_id;
        let version = attached.version;
        // A denied PUBLISH is not routed. MQTT 5.0 says so with 0x87; 3.1.1 has no way to, so
        // it is acknowledged as usual (as mosquitto does).
        let permitted = self.allowed(&publish.topic, Access::Write);
        let Some(attached) = &self.state else {
            return Err(Close::Io);
        };
        if !permitted {
            debug!(client_id = %attached.session.client_id, topic = %publish.topic, "PUBLISH denied by ACL");
            if version == Version::V5 {
                return match publish.qos {
                    QoS::AtMostOnce => Ok(()),
                    QoS::AtLeastOnce => self.send_ack(AckKind::PubAck, packet_id, NOT_AUTHORIZED),
                    QoS::ExactlyOnce => self.send_ack(AckKind::PubRec, packet_id, NOT_AUTHORIZED),
                };
            }
        }
        match publish.qos {
            QoS::AtMostOnce => {
                if permitted {
                    self.route(publish);
                }
                Ok(())
            }
            QoS::AtLeastOnce => {
                let queued = if permitted { self.route(publish) } else { 1 };
                self.send_ack(AckKind::PubAck, packet_id, success_code(queued))
            }
            QoS::ExactlyOnce => {
                let limit = usize::from(self.broker.config.receive_maximum);
                let (first, persisted) = {
                    let mut slot = attached.session.slot.lock();
                    let persisted = slot.persisted;
                    let inbound = &mut slot.session.inbound;
                    if attached.version == Version::V5
                        && !inbound.is_pending(packet_id)
                        && inbound.pending() >= limit
                    {
                        // MQTT-3.3.4-7: more unacknowledged QoS 2 than our Receive Maximum
                        // (0x93, section 3.3.4). MQTT 3.1.1 has no such limit.
                        return Err(Close::Violation {
                            reason: 0x93,
                            why: "receive maximum exceeded",
                        });
                    }
                    (
                        inbound.on_publish_qos2(packet_id) == Qos2Publish::Deliver,
                        persisted,
                    )
                };
                if first && persisted {
                    // The id is durable before PUBREC, so a retry after a crash is recognised.
                    let session = attached.session.store_key();
                    self.pending.push(Op::PutIncoming { session, packet_id });
                    self.pending.incoming_added.push(packet_id);
                }
                let code = if first && permitted {
                    success_code(self.route(publish))
                } else {
                    0
                };
                self.send_ack(AckKind::PubRec, packet_id, code)
            }
        }
    }

    /// Hands a message to the broker. Returns the number of deliveries queued.
    fn route(&mut self, publish: Publish) -> usize {
        let Some(attached) = &self.state else {
            return 0;
        };
        let expires_at = match attached.version {
            Version::V5 => publish
                .properties
                .message_expiry_interval
                .map(|s| Instant::now() + Duration::from_secs(u64::from(s))),
            Version::V311 => None,
        };
        let id = match publish.qos {
            QoS::AtMostOnce => 0,
            _ => self.broker.message_id(),
        };
        let key = attached.session.key;
        let message = Arc::new(Message {
            id,
            topic: Arc::from(publish.topic),
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties: publish.properties,
            expires_at,
        });
        let broker = Arc::clone(&self.broker);
        broker.publish(&message, Some(key), Some(&mut self.pending))
    }
}

fn success_code(queued: usize) -> u8 {
    if queued == 0 {
        NO_MATCHING_SUBSCRIBERS
    } else {
        0
    }
}
