//! PUBLISH from a client: QoS 2 duplicate suppression, routing, retained update, and the
//! PUBACK or PUBREC answer; at a full queue, 0x97 (MQTT 5.0) or a pause (MQTT 3.1.1).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::debug;

use crate::auth::Access;
use crate::broker::{Metrics, Routed, SessionHandle};
use crate::codec::{AckKind, Publish, QoS, ReasonCode, Version};
use crate::session::{Message, Qos2Publish, kept_payload, kept_properties};
use crate::store::Op;

use super::{Close, Connected};

/// A QoS 1/2 PUBLISH from a 3.1.1 client that a full queue holds back: not acknowledged, and
/// the connection's further PUBLISH packets wait behind it until there is room.
#[derive(Debug)]
pub(super) struct Stall {
    /// The message, built once (its store id stays the same across retries).
    message: Arc<Message>,
    /// Its packet id.
    packet_id: u16,
    /// The full session.
    pub(super) session: Arc<SessionHandle>,
    /// That session's backlog generation when it was found full.
    pub(super) room_seq: u64,
    /// Other sessions whose room would let it through too (members of a Shared
    /// Subscription group), with their generations.
    pub(super) also: Vec<(Arc<SessionHandle>, u64)>,
}

/// Makes a PUBLISH decoded from a read buffer of `buffer` bytes hold its own bytes (see
/// [`kept_payload`]): whatever it becomes (a queued, in-flight or retained message, a packet
/// held behind a paused one) then keeps no more of the buffer than it needs.
pub(super) fn detach_from_buffer(publish: &mut Publish, buffer: usize) {
    publish.payload = kept_payload(std::mem::take(&mut publish.payload), buffer);
    kept_properties(&mut publish.properties);
}

impl Connected {
    pub(super) fn handle_publish(&mut self, publish: Publish, now: Instant) -> Result<(), Close> {
        Metrics::inc(&self.broker.metrics.publish_received);
        let mut publish = publish;
        let topic: Arc<str> = match publish.topic_alias {
            Some(alias) => self
                .aliases_in
                .resolve(alias, std::mem::take(&mut publish.topic))?,
            None => Arc::from(std::mem::take(&mut publish.topic)),
        };
        let packet_id = publish.packet_id;
        // A denied PUBLISH is not routed. MQTT 5.0 says so with 0x87; 3.1.1 has no way to, so
        // it is acknowledged as usual (as mosquitto does).
        if !self.allowed(&topic, Access::Write) {
            crate::broker::Metrics::inc(&self.broker.metrics.acl_denied);
            debug!(
                client_id = &*self.session.client_id,
                topic = &*topic,
                "PUBLISH denied by ACL"
            );
            return match (self.version, publish.qos) {
                (_, QoS::AtMostOnce) => Ok(()),
                (Version::V5, QoS::AtLeastOnce) => {
                    self.send_ack(AckKind::PubAck, packet_id, ReasonCode::NOT_AUTHORIZED)
                }
                (Version::V5, QoS::ExactlyOnce) => {
                    self.send_ack(AckKind::PubRec, packet_id, ReasonCode::NOT_AUTHORIZED)
                }
                (Version::V311, QoS::AtLeastOnce) => {
                    self.send_ack(AckKind::PubAck, packet_id, ReasonCode::SUCCESS)
                }
                (Version::V311, QoS::ExactlyOnce) => {
                    self.record_incoming(packet_id);
                    self.send_ack(AckKind::PubRec, packet_id, ReasonCode::SUCCESS)
                }
            };
        }
        // In cluster mode a topic without a NATS subject could not reach the other nodes:
        // refused rather than delivered on this node alone.
        if let Some(cluster) = &self.broker.cluster
            && let Err(why) = cluster.can_carry(&topic)
        {
            debug!(
                client_id = &*self.session.client_id,
                topic = &*topic,
                %why,
                "PUBLISH refused: the topic has no NATS subject"
            );
            return match (self.version, publish.qos) {
                (Version::V5, QoS::AtLeastOnce) => {
                    self.send_ack(AckKind::PubAck, packet_id, ReasonCode::TOPIC_NAME_INVALID)
                }
                (Version::V5, QoS::ExactlyOnce) => {
                    self.send_ack(AckKind::PubRec, packet_id, ReasonCode::TOPIC_NAME_INVALID)
                }
                _ => Err(Close::Violation {
                    reason: ReasonCode::TOPIC_NAME_INVALID,
                    why: "topic cannot be carried across the cluster (white space, DEL, a level `*` or `>`, or over 3,328 bytes as a NATS subject)",
                }),
            };
        }
        if let Some(cluster) = &self.broker.cluster {
            let p = &publish.properties;
            let properties = p.content_type.as_ref().map_or(0, String::len)
                + p.response_topic.as_ref().map_or(0, String::len)
                + p.correlation_data.as_ref().map_or(0, |d| d.len() * 2)
                + p.user_properties
                    .iter()
                    .map(|(k, v)| k.len() + v.len() + 1)
                    .sum::<usize>()
                + topic.len();
            if !cluster.fits(publish.payload.len(), properties) {
                // Larger than a NATS message may be (the servers' max_payload).
                debug!(
                    client_id = &*self.session.client_id,
                    topic = &*topic,
                    payload = publish.payload.len(),
                    "PUBLISH refused: larger than NATS carries"
                );
                // PUBACK and PUBREC have no "packet too large" (MQTT 5.0 3.4.2.1): refused as
                // implementation specific, so that the client drops it rather than resends.
                return match (self.version, publish.qos) {
                    (Version::V5, QoS::AtLeastOnce) => self.send_ack(
                        AckKind::PubAck,
                        packet_id,
                        ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR,
                    ),
                    (Version::V5, QoS::ExactlyOnce) => self.send_ack(
                        AckKind::PubRec,
                        packet_id,
                        ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR,
                    ),
                    _ => Err(Close::Violation {
                        reason: ReasonCode::PACKET_TOO_LARGE,
                        why: "message larger than the NATS servers' max_payload",
                    }),
                };
            }
        }
        if publish.qos == QoS::ExactlyOnce {
            let limit = usize::from(self.broker.config.receive_maximum);
            let slot = self.session.slot.lock();
            let inbound = &slot.session.inbound;
            if inbound.is_pending(packet_id) {
                // A retransmission awaiting PUBREL: not delivered again (MQTT-4.3.3-9).
                drop(slot);
                return self.send_ack(AckKind::PubRec, packet_id, ReasonCode::SUCCESS);
            }
            if self.version == Version::V5 && inbound.pending() >= limit {
                // MQTT-3.3.4-7: more unacknowledged QoS 2 than our Receive Maximum
                // (0x93, section 3.3.4). MQTT 3.1.1 has no such limit.
                return Err(Close::Violation {
                    reason: ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                    why: "receive maximum exceeded",
                });
            }
        }
        let message = self.message_of(publish, topic, now);
        self.publish_message(message, packet_id)
    }

    /// Routes a message and acknowledges it, or, at a full queue, refuses it (MQTT 5.0: 0x97)
    /// or pauses (MQTT 3.1.1).
    fn publish_message(&mut self, message: Arc<Message>, packet_id: u16) -> Result<(), Close> {
        let broker = Arc::clone(&self.broker);
        let qos = message.qos;
        let routed = broker.publish(
            &message,
            Some(&self.session),
            self.queue_full,
            Some(&mut self.pending),
        );
        let matched = match routed {
            Routed::Delivered { matched } => {
                // Through, even if it had been paused.
                self.stall = None;
                matched
            }
            Routed::Full {
                session,
                room_seq,
                also,
            } => {
                let metrics = &broker.metrics;
                // A store that cannot write refuses like a full queue; it logs its own
                // failure, so the queue-full line is only for queues.
                let queue_full = broker.store_healthy();
                if self.version == Version::V5 {
                    // Refused whole: nothing was queued anywhere, the retained message is
                    // unchanged and a QoS 2 packet id is not kept (the flow ends here).
                    Metrics::inc(&metrics.rejected_quota_exceeded);
                    if queue_full {
                        metrics.log_queue_full(&session.client_id, 0, 1, 0);
                    }
                    let kind = match qos {
                        QoS::ExactlyOnce => AckKind::PubRec,
                        _ => AckKind::PubAck,
                    };
                    return self.send_ack(kind, packet_id, ReasonCode::QUOTA_EXCEEDED);
                }
                if self.stall.is_none() {
                    // A first pause (a retry that meets a full queue again is not counted).
                    Metrics::inc(&metrics.backpressure_pauses);
                    if queue_full {
                        metrics.log_queue_full(&session.client_id, 0, 0, 1);
                    }
                }
                self.stall = Some(Box::new(Stall {
                    message,
                    packet_id,
                    session,
                    room_seq,
                    also,
                }));
                return Ok(());
            }
        };
        match qos {
            QoS::AtMostOnce => Ok(()),
            QoS::AtLeastOnce => {
                let code = self.success_code(matched);
                self.send_ack(AckKind::PubAck, packet_id, code)
            }
            QoS::ExactlyOnce => {
                self.record_incoming(packet_id);
                let code = self.success_code(matched);
                self.send_ack(AckKind::PubRec, packet_id, code)
            }
        }
    }

    /// Tries the paused PUBLISH again. Returns true if it is no longer paused.
    ///
    /// Tried whatever woke the connection: routing again is cheap, and room can come from
    /// places that do not notify the full session (the store freeing bytes, a failed commit).
    pub(super) fn retry_stalled(&mut self) -> Result<bool, Close> {
        let Some(stall) = &self.stall else {
            return Ok(true);
        };
        let (message, packet_id) = (Arc::clone(&stall.message), stall.packet_id);
        self.publish_message(message, packet_id)?;
        Ok(self.stall.is_none())
    }

    /// Records an inbound QoS 2 packet id as awaiting PUBREL (durably for a durable session,
    /// before PUBREC goes out, so a retry after a crash is recognised).
    fn record_incoming(&mut self, packet_id: u16) {
        let (first, persisted) = {
            let mut slot = self.session.slot.lock();
            let first = slot.session.inbound.on_publish_qos2(packet_id) == Qos2Publish::Deliver;
            (first, slot.persisted)
        };
        // Forgotten again if the batch fails (the store, or in cluster mode JetStream): the
        // client's resend is then a new message, not a retransmission. Only batches that
        // commit something keep such a list.
        if first && (persisted || self.broker.cluster.is_some()) {
            self.pending.incoming_added.push(packet_id);
        }
        if first && persisted {
            let session = self.session.store_key();
            self.pending.push(Op::PutIncoming { session, packet_id });
        }
    }

    /// Builds the application message of a PUBLISH (to `topic`, its alias resolved) received
    /// at `now`.
    fn message_of(&self, publish: Publish, topic: Arc<str>, now: Instant) -> Arc<Message> {
        let expires_at = if self.version == Version::V5 {
            publish
                .properties
                .message_expiry_interval
                .map(|s| now + Duration::from_secs(u64::from(s)))
        } else {
            None
        };
        let id = match publish.qos {
            QoS::AtMostOnce => None,
            _ => self.broker.message_id(),
        };
        Arc::new(Message {
            id,
            topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties: publish.properties,
            stream_seq: None,
            expires_at,
        })
    }
}

impl Connected {
    /// v5 PUBACK/PUBREC reason: 0x10 only when no subscription matched (MQTT 5.0 3.4.2.1).
    /// In cluster mode the other nodes' subscriptions are not known here: always 0x00.
    fn success_code(&self, matched: usize) -> ReasonCode {
        if matched == 0 && self.broker.cluster.is_none() {
            ReasonCode::NO_MATCHING_SUBSCRIBERS
        } else {
            ReasonCode::SUCCESS
        }
    }
}
