//! Everything the connection writes: direct responses, and deliveries taken from the session
//! queue up to the inflight window, all encoded into the one write buffer.

use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, warn};

use crate::broker::Metrics;
use crate::codec::{
    self, AckKind, EncodeError, Packet, PubAckLike, PublishProperties, PublishView, QoS,
    ReasonCode, Version,
};
use crate::session::{Delivery, PacketId, Transmit};
use crate::store::{EntryState, Op, delivery_entry};

use super::alias::Alias;
use super::{Close, Connected, WRITE_BUDGET};

impl Connected {
    /// Encodes a response packet into the write buffer.
    pub(super) fn send(&mut self, packet: &Packet) -> Result<(), Close> {
        Metrics::inc(&self.broker.metrics.control_packets_sent);
        send_within(
            packet,
            self.version,
            self.max_packet_out,
            &mut self.out,
            self.peer,
        );
        Ok(())
    }

    /// Encodes PUBACK, PUBREC, PUBREL or PUBCOMP. The reason code is dropped for 3.1.1.
    pub(super) fn send_ack(
        &mut self,
        kind: AckKind,
        packet_id: u16,
        reason: ReasonCode,
    ) -> Result<(), Close> {
        let reason = if self.version == Version::V5 {
            reason
        } else {
            ReasonCode::SUCCESS
        };
        // Only when the client did not turn problem information off (MQTT-3.1.2-29).
        let reason_string = if self.problem_information {
            explain(reason).map(str::to_owned)
        } else {
            None
        };
        self.send(&Packet::Ack(PubAckLike {
            kind,
            packet_id,
            reason,
            reason_string,
        }))
    }

    /// Moves deliveries from the session queue into the output, as far as the inflight
    /// window and the write budget allow. Messages whose expiry passed by `now` are dropped
    /// (MQTT-3.3.2-5).
    pub(crate) fn poll_transmit(&mut self, now: Instant) {
        let session = Arc::clone(&self.session);
        let mut expired = Vec::new();
        let mut budget = 0usize;
        self.more_to_send = false;
        let mut recorded = Vec::new();
        let mut freed = false;
        let persisted = {
            let mut slot = session.slot.lock();
            let persisted = slot.persisted;
            loop {
                if budget >= WRITE_BUDGET {
                    self.more_to_send = true;
                    break;
                }
                match slot.session.outbound.next_transmit(now, &mut expired) {
                    Some(mut t) => {
                        if let Transmit::Publish {
                            delivery,
                            packet_id,
                            dup,
                        } = &mut t
                        {
                            budget += delivery.message.payload.len() + delivery.message.topic.len();
                            freed |= packet_id.is_none();
                            if let (Some(id), Some(message_id)) = (*packet_id, delivery.message.id)
                                && persisted
                                && !*dup
                                && delivery.seq.is_none()
                            {
                                // A retained message sent on SUBSCRIBE enters the durable
                                // queue as it goes out (already sent, so never read back).
                                let seq = slot.session.take_seq();
                                slot.session.outbound.set_seq(id, seq);
                                delivery.seq = Some(seq);
                                let mut entry = delivery_entry(message_id, delivery);
                                entry.state = EntryState::Published;
                                entry.packet_id = id.get();
                                recorded.push(Op::Enqueue {
                                    session: session.store_key(),
                                    seq,
                                    message: Arc::clone(&delivery.message),
                                    entry,
                                });
                            }
                        }
                        self.transmits.push(t);
                    }
                    None => break,
                }
            }
            persisted
        };
        for op in recorded {
            // Durable before the PUBLISH leaves, like any recorded packet id.
            self.pending.push(op);
        }
        if !expired.is_empty() {
            self.broker
                .metrics
                .expired
                .fetch_add(expired.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        let mut transmits = std::mem::take(&mut self.transmits);
        let mut released = Vec::new();
        let acl = self.acl.clone();
        for t in transmits.drain(..) {
            if let (
                Some(acl),
                Transmit::Publish {
                    delivery,
                    packet_id,
                    dup: false,
                },
            ) = (&acl, &t)
                && !acl.check(&delivery.message.topic, crate::auth::Access::Read)
            {
                // Queued before this client's rules applied (a resumed session of another
                // user, or a reload): not delivered, its packet id released.
                released.extend(*packet_id);
                continue;
            }
            if persisted
                && let Transmit::Publish {
                    delivery,
                    packet_id: Some(id),
                    dup: false,
                } = &t
                && delivery.qos == QoS::ExactlyOnce
                && let Some(seq) = delivery.seq
            {
                let p = &mut self.pending;
                // The packet id is durable before the PUBLISH leaves, so a restart resends
                // the same id and the client can recognise the duplicate.
                p.push(Op::UpdateEntry {
                    session: session.store_key(),
                    seq,
                    state: EntryState::Published,
                    packet_id: id.get(),
                });
            }
            self.write_transmit(&t, now, &mut released);
        }
        self.transmits = transmits;
        let mut done = expired;
        if !released.is_empty() {
            let mut slot = session.slot.lock();
            done.extend(
                released
                    .iter()
                    .filter_map(|id| slot.session.outbound.discard(id.get())),
            );
        }
        if freed || !done.is_empty() {
            session.notify_room();
        }
        if persisted {
            let p = &mut self.pending;
            for seq in done.into_iter().flatten() {
                p.push_async(Op::DeleteEntry {
                    session: session.store_key(),
                    seq,
                });
            }
        }
    }

    /// Encodes one transmit. A PUBLISH over the client's Maximum Packet Size is discarded as if
    /// delivered (MQTT-3.1.2-25); its packet id is added to `released` to be released.
    fn write_transmit(&mut self, t: &Transmit, now: Instant, released: &mut Vec<PacketId>) {
        match t {
            Transmit::Publish {
                delivery,
                packet_id,
                dup,
            } => match self.write_publish(delivery, *packet_id, *dup, now) {
                Ok(()) => Metrics::inc(&self.broker.metrics.publish_sent),
                Err(EncodeError::TooLarge { size, max }) => {
                    Metrics::inc(&self.broker.metrics.dropped_too_large);
                    warn!(peer = %self.peer, size, max, "message larger than the client accepts: dropped");
                    released.extend(*packet_id);
                }
                Err(e) => {
                    warn!(peer = %self.peer, error = ?e, "message could not be encoded: dropped")
                }
            },
            Transmit::PubRel { packet_id } => {
                let _ = self.send_ack(AckKind::PubRel, packet_id.get(), ReasonCode::SUCCESS);
            }
        }
    }

    fn write_publish(
        &mut self,
        delivery: &Delivery,
        packet_id: Option<PacketId>,
        dup: bool,
        now: Instant,
    ) -> Result<(), EncodeError> {
        let message = &delivery.message;
        // MQTT-3.3.2-6: forward the expiry interval minus the time spent waiting.
        let adjusted;
        let properties = match message.remaining_expiry(now) {
            Some(left) if self.version == Version::V5 => {
                adjusted = PublishProperties {
                    message_expiry_interval: Some(left),
                    ..message.properties.clone()
                };
                &adjusted
            }
            _ => &message.properties,
        };
        // A topic the client knows by its alias goes out as the alias alone (MQTT 5.0
        // 3.3.2.3.4); the alias is learnt only if the packet is written.
        let mut alias = self.aliases_out.choose(&message.topic);
        loop {
            let (topic, topic_alias) = match alias {
                Alias::None => (&*message.topic, None),
                Alias::Known(a) => ("", Some(a)),
                Alias::New(a) => (&*message.topic, Some(a)),
            };
            let view = PublishView {
                dup,
                qos: delivery.qos,
                retain: delivery.retain,
                topic,
                packet_id: packet_id.map_or(0, PacketId::get),
                payload: &message.payload,
                properties,
                topic_alias,
                subscription_identifiers: &delivery.subscription_ids,
            };
            match codec::encode_publish(&view, self.version, self.max_packet_out, &mut self.out) {
                Ok(_) => break,
                // The alias property may be what makes it too large: try without.
                Err(EncodeError::TooLarge { .. }) if alias != Alias::None => alias = Alias::None,
                Err(e) => return Err(e),
            }
        }
        self.aliases_out.sent(&message.topic, alias);
        Ok(())
    }
}

/// The Reason String sent with an acknowledgement that reports a failure.
fn explain(reason: ReasonCode) -> Option<&'static str> {
    Some(match reason {
        ReasonCode::QUOTA_EXCEEDED => {
            "a subscriber's queue is full, or the store cannot take the message: nothing was queued, retry later"
        }
        ReasonCode::NOT_AUTHORIZED => "not authorized to publish to this topic",
        ReasonCode::PACKET_IDENTIFIER_NOT_FOUND => {
            "no message in flight has this packet identifier"
        }
        _ => return None,
    })
}

/// Encodes a packet the broker generates within the client's Maximum Packet Size. What is
/// only informative (Reason String, Response Information) is left out when it would make the
/// packet too large (MQTT-3.2.2-19, MQTT-3.4.2-2, MQTT-3.14.2-3); only a packet too large
/// without it is not sent.
pub(super) fn send_within(
    packet: &Packet,
    version: crate::codec::Version,
    max: Option<u32>,
    out: &mut bytes::BytesMut,
    peer: std::net::SocketAddr,
) {
    let Err(e) = codec::encode(packet, version, max, out) else {
        return;
    };
    let lean = match (&e, packet) {
        (EncodeError::TooLarge { .. }, Packet::Ack(a)) if a.reason_string.is_some() => {
            Some(Packet::Ack(PubAckLike {
                reason_string: None,
                ..a.clone()
            }))
        }
        (EncodeError::TooLarge { .. }, Packet::Disconnect(d)) if d.reason_string.is_some() => {
            Some(Packet::Disconnect(codec::Disconnect {
                reason_string: None,
                ..d.clone()
            }))
        }
        (EncodeError::TooLarge { .. }, Packet::ConnAck(c)) => {
            let mut c = c.clone();
            c.properties.reason_string = None;
            c.properties.response_information = None;
            Some(Packet::ConnAck(c))
        }
        _ => None,
    };
    let result = match &lean {
        Some(lean) => codec::encode(lean, version, max, out).map(|_| ()),
        None => Err(e),
    };
    if let Err(e) = result {
        // Only a client-imposed Maximum Packet Size can make a response unsendable.
        debug!(%peer, error = ?e, "response not sent");
    }
}
