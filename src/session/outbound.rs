//! Server-to-client message flow: the bounded queue, the inflight window and packet ids.
//!
//! Sans-IO: the caller enqueues deliveries, asks for the next packet to transmit, and feeds
//! acknowledgements back. Nothing here touches a socket or a clock other than the `now` passed in.

use std::collections::VecDeque;
use std::time::Instant;

use crate::codec::QoS;

use super::message::{Delivery, GateState};

/// State of an outbound QoS 1/2 message that has been sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflightState {
    /// PUBLISH sent; waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Published,
    /// PUBREC received and PUBREL sent; waiting for PUBCOMP.
    Released,
}

/// An outbound message holding a packet id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inflight {
    /// Packet identifier in use.
    pub packet_id: u16,
    /// What was sent.
    pub delivery: Delivery,
    /// Where the handshake stands.
    pub state: InflightState,
}

/// What the connection must send next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// A PUBLISH. `packet_id` is 0 for QoS 0.
    Publish {
        /// The delivery to encode.
        delivery: Delivery,
        /// Packet identifier (0 for QoS 0).
        packet_id: u16,
        /// DUP flag: set when this is a resend (MQTT-3.3.1-1).
        dup: bool,
    },
    /// A PUBREL for a message whose PUBREC arrived.
    PubRel {
        /// Packet identifier.
        packet_id: u16,
    },
}

/// Result of offering a delivery to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Accepted.
    Queued,
    /// Dropped because the queue is at its limit.
    QueueFull,
    /// A QoS 0 message for a session with no connection: discarded, as the spec allows.
    OfflineQoS0,
}

/// Outcome of a PUBACK / PUBREC / PUBCOMP from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// The packet id was in flight in the expected state and the step was applied. `seq` is
    /// the delivery's position in the persisted queue (0 if not persisted).
    Done {
        /// Persisted queue position of the message.
        seq: u64,
    },
    /// No message is in flight with that packet id in that state.
    UnknownPacketId,
}

/// The outbound half of a session.
#[derive(Debug)]
pub struct Outbound {
    queue: VecDeque<Delivery>,
    inflight: VecDeque<Inflight>,
    max_queued: usize,
    window: usize,
    next_id: u16,
    /// The last `resends` inflight entries still have to be sent again after a reconnect.
    resends: usize,
}

impl Outbound {
    /// An empty flow with a queue limit and an inflight window.
    pub fn new(max_queued: usize, window: u16) -> Outbound {
        Outbound {
            queue: VecDeque::new(),
            inflight: VecDeque::new(),
            max_queued,
            window: usize::from(window.max(1)),
            next_id: 1,
            resends: 0,
        }
    }

    /// Changes the inflight window, e.g. to a reconnecting client's Receive Maximum.
    pub fn set_window(&mut self, window: u16) {
        self.window = usize::from(window.max(1));
    }

    /// Number of queued (not yet sent) deliveries.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Number of messages holding a packet id.
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Offers a delivery. QoS 0 messages are not kept for a session without a connection.
    pub fn enqueue(&mut self, delivery: Delivery, online: bool) -> Enqueued {
        if !online && delivery.qos == QoS::AtMostOnce {
            return Enqueued::OfflineQoS0;
        }
        if self.queue.len() >= self.max_queued {
            return Enqueued::QueueFull;
        }
        self.queue.push_back(delivery);
        Enqueued::Queued
    }

    /// The next PUBLISH to send, if the window allows. Expired messages are skipped
    /// (MQTT-3.3.2-5) and their queue positions pushed to `expired` so the caller can count
    /// them and delete them from the store. A delivery whose commit is pending holds the queue
    /// (order is kept); one whose commit failed is dropped.
    pub fn next_transmit(&mut self, now: Instant, expired: &mut Vec<u64>) -> Option<Transmit> {
        if self.resends > 0 {
            let sent = self.inflight.len() - self.resends;
            if sent >= self.window {
                return None;
            }
            self.resends -= 1;
            let f = &self.inflight[sent];
            return Some(match f.state {
                InflightState::Published => Transmit::Publish {
                    delivery: f.delivery.clone(),
                    packet_id: f.packet_id,
                    dup: true,
                },
                InflightState::Released => Transmit::PubRel {
                    packet_id: f.packet_id,
                },
            });
        }
        loop {
            let front = self.queue.front()?;
            match front.gate.as_ref().map(|g| g.state()) {
                Some(GateState::Pending) => return None,
                Some(GateState::Failed) => {
                    self.queue.pop_front();
                    continue;
                }
                Some(GateState::Open) | None => {}
            }
            if front.message.is_expired(now) {
                expired.push(front.seq);
                self.queue.pop_front();
                continue;
            }
            if front.qos == QoS::AtMostOnce {
                let delivery = self.queue.pop_front()?;
                return Some(Transmit::Publish {
                    delivery,
                    packet_id: 0,
                    dup: false,
                });
            }
            if self.inflight.len() >= self.window {
                return None;
            }
            let packet_id = self.allocate_id()?;
            let delivery = self.queue.pop_front()?;
            self.inflight.push_back(Inflight {
                packet_id,
                delivery: delivery.clone(),
                state: InflightState::Published,
            });
            return Some(Transmit::Publish {
                delivery,
                packet_id,
                dup: false,
            });
        }
    }

    /// After a reconnect: everything in flight is to be sent again, unacknowledged PUBLISH with
    /// DUP=1 and PUBREL for PUBREC'd ids, in the original order (MQTT-4.4.0-1), by
    /// [`Outbound::next_transmit`] and within the client's current window (MQTT-3.3.4-9).
    pub fn resend_inflight(&mut self) {
        self.resends = self.inflight.len();
    }

    /// PUBACK: completes a QoS 1 delivery.
    pub fn on_puback(&mut self, packet_id: u16) -> AckOutcome {
        self.complete(packet_id, QoS::AtLeastOnce, InflightState::Published)
    }

    /// PUBREC: moves a QoS 2 delivery to the released state, after which a PUBREL is due.
    /// A PUBREC with a failure reason code (`failed`) ends the delivery instead (MQTT 5.0).
    pub fn on_pubrec(&mut self, packet_id: u16, failed: bool) -> AckOutcome {
        if failed {
            return self.complete(packet_id, QoS::ExactlyOnce, InflightState::Published);
        }
        match self.position(packet_id) {
            Some(i) if self.inflight[i].delivery.qos == QoS::ExactlyOnce => {
                // A repeated PUBREC for a released id is answered with PUBREL again.
                self.inflight[i].state = InflightState::Released;
                AckOutcome::Done {
                    seq: self.inflight[i].delivery.seq,
                }
            }
            _ => AckOutcome::UnknownPacketId,
        }
    }

    /// PUBCOMP: completes a QoS 2 delivery.
    pub fn on_pubcomp(&mut self, packet_id: u16) -> AckOutcome {
        self.complete(packet_id, QoS::ExactlyOnce, InflightState::Released)
    }

    /// Forgets an inflight message without an acknowledgement, e.g. one that could not be sent
    /// because it exceeds the client's Maximum Packet Size (MQTT-3.1.2-25).
    /// Returns the persisted queue position of the discarded message, if it was in flight.
    pub fn discard(&mut self, packet_id: u16) -> Option<u64> {
        let i = self.position(packet_id)?;
        self.remove_at(i).map(|f| f.delivery.seq)
    }

    /// Removes an inflight entry, keeping the count of entries still to be resent right.
    fn remove_at(&mut self, i: usize) -> Option<Inflight> {
        if i >= self.inflight.len() - self.resends {
            self.resends -= 1;
        }
        self.inflight.remove(i)
    }

    /// Drops every queued and inflight message, returning how many there were.
    pub fn clear(&mut self) -> usize {
        let n = self.queue.len() + self.inflight.len();
        self.queue.clear();
        self.inflight.clear();
        self.resends = 0;
        n
    }

    fn complete(&mut self, packet_id: u16, qos: QoS, state: InflightState) -> AckOutcome {
        match self.position(packet_id) {
            Some(i) if self.inflight[i].delivery.qos == qos && self.inflight[i].state == state => {
                match self.remove_at(i) {
                    Some(f) => AckOutcome::Done {
                        seq: f.delivery.seq,
                    },
                    None => AckOutcome::UnknownPacketId,
                }
            }
            _ => AckOutcome::UnknownPacketId,
        }
    }

    /// Acks normally arrive in order, so the front is checked first.
    fn position(&self, packet_id: u16) -> Option<usize> {
        if self.inflight.front().map(|f| f.packet_id) == Some(packet_id) {
            return Some(0);
        }
        self.inflight.iter().position(|f| f.packet_id == packet_id)
    }

    /// The next packet id not held by an inflight message (never 0).
    fn allocate_id(&mut self) -> Option<u16> {
        if self.inflight.len() >= usize::from(u16::MAX) {
            return None;
        }
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if id != 0 && !self.inflight.iter().any(|f| f.packet_id == id) {
                return Some(id);
            }
        }
    }

    /// Restores an inflight entry (used when a session is loaded from storage).
    pub fn restore_inflight(&mut self, entry: Inflight) {
        self.next_id = entry.packet_id.checked_add(1).unwrap_or(1);
        self.inflight.push_back(entry);
    }

    /// Restores a queued delivery (used when a session is loaded from storage).
    pub fn restore_queued(&mut self, delivery: Delivery) {
        self.queue.push_back(delivery);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::session::message::Message;

    fn delivery(qos: QoS) -> Delivery {
        Delivery::new(
            Arc::new(Message {
                id: 0,
                topic: Arc::from("t"),
                payload: Bytes::from_static(b"x"),
                qos,
                retain: false,
                properties: Default::default(),
                expires_at: None,
            }),
            qos,
            false,
            Vec::new(),
        )
    }

    fn send(o: &mut Outbound) -> Option<Transmit> {
        let mut expired = Vec::new();
        o.next_transmit(Instant::now(), &mut expired)
    }

    const DONE: AckOutcome = AckOutcome::Done { seq: 0 };

    fn publish_id(t: Option<Transmit>) -> u16 {
        match t {
            Some(Transmit::Publish { packet_id, .. }) => packet_id,
            other => panic!("expected a publish, got {other:?}"),
        }
    }

    #[test]
    fn qos1_window_limits_inflight_and_puback_frees_it() {
        let mut o = Outbound::new(10, 2);
        for _ in 0..3 {
            assert_eq!(
                o.enqueue(delivery(QoS::AtLeastOnce), true),
                Enqueued::Queued
            );
        }
        assert_eq!(publish_id(send(&mut o)), 1);
        assert_eq!(publish_id(send(&mut o)), 2);
        assert_eq!(send(&mut o), None, "window of 2 is full");
        assert_eq!(o.on_puback(1), DONE);
        assert_eq!(publish_id(send(&mut o)), 3);
        assert_eq!(o.on_puback(1), AckOutcome::UnknownPacketId);
    }

    #[test]
    fn qos2_handshake_pubrec_then_pubcomp() {
        let mut o = Outbound::new(10, 10);
        o.enqueue(delivery(QoS::ExactlyOnce), true);
        let id = publish_id(send(&mut o));
        // PUBCOMP before PUBREC is out of order.
        assert_eq!(o.on_pubcomp(id), AckOutcome::UnknownPacketId);
        assert_eq!(o.on_pubrec(id, false), DONE);
        // A PUBACK for a QoS 2 id is wrong.
        assert_eq!(o.on_puback(id), AckOutcome::UnknownPacketId);
        assert_eq!(o.inflight(), 1);
        assert_eq!(o.on_pubcomp(id), DONE);
        assert_eq!(o.inflight(), 0);
    }

    #[test]
    fn failed_pubrec_ends_delivery() {
        let mut o = Outbound::new(10, 10);
        o.enqueue(delivery(QoS::ExactlyOnce), true);
        let id = publish_id(send(&mut o));
        assert_eq!(o.on_pubrec(id, true), DONE);
        assert_eq!(o.inflight(), 0);
    }

    #[test]
    fn resend_after_reconnect_sets_dup_and_repeats_pubrel() {
        // MQTT-4.4.0-1: resend unacknowledged PUBLISH (DUP=1) and PUBREL in order.
        let mut o = Outbound::new(10, 10);
        o.enqueue(delivery(QoS::ExactlyOnce), true);
        o.enqueue(delivery(QoS::AtLeastOnce), true);
        let a = publish_id(send(&mut o));
        let b = publish_id(send(&mut o));
        o.on_pubrec(a, false);
        o.resend_inflight();
        let resend: Vec<_> = std::iter::from_fn(|| send(&mut o)).collect();
        assert_eq!(resend.len(), 2);
        assert_eq!(resend[0], Transmit::PubRel { packet_id: a });
        match &resend[1] {
            Transmit::Publish { packet_id, dup, .. } => {
                assert_eq!(*packet_id, b);
                assert!(*dup);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn resend_after_reconnect_respects_a_smaller_window() {
        // MQTT-3.3.4-9: never more unacknowledged PUBLISH than the client's Receive Maximum.
        let mut o = Outbound::new(10, 3);
        for _ in 0..3 {
            o.enqueue(delivery(QoS::AtLeastOnce), true);
            send(&mut o);
        }
        o.enqueue(delivery(QoS::AtLeastOnce), true);
        o.set_window(1);
        o.resend_inflight();
        assert_eq!(publish_id(send(&mut o)), 1);
        assert_eq!(send(&mut o), None, "window of 1 is full");
        assert_eq!(o.on_puback(1), DONE);
        assert_eq!(publish_id(send(&mut o)), 2);
        // An ack for an entry not yet resent frees nothing on the wire but drops it.
        assert_eq!(o.on_puback(3), DONE);
        assert_eq!(send(&mut o), None);
        assert_eq!(o.on_puback(2), DONE);
        assert_eq!(publish_id(send(&mut o)), 4, "then new messages");
    }

    #[test]
    fn packet_ids_skip_ids_in_use_and_never_zero() {
        let mut o = Outbound::new(100_000, u16::MAX);
        o.next_id = u16::MAX - 1;
        o.enqueue(delivery(QoS::AtLeastOnce), true);
        o.enqueue(delivery(QoS::AtLeastOnce), true);
        assert_eq!(publish_id(send(&mut o)), u16::MAX - 1);
        assert_eq!(publish_id(send(&mut o)), u16::MAX);
        // Wraps past 0 to 1.
        o.enqueue(delivery(QoS::AtLeastOnce), true);
        assert_eq!(publish_id(send(&mut o)), 1);
        // 2 becomes busy out of turn; the allocator skips it.
        o.on_puback(u16::MAX - 1);
        o.next_id = u16::MAX;
        o.enqueue(delivery(QoS::AtLeastOnce), true);
        o.enqueue(delivery(QoS::AtLeastOnce), true);
        assert_eq!(publish_id(send(&mut o)), 2, "MAX and 1 are in flight");
        assert_eq!(publish_id(send(&mut o)), 3);
    }

    #[test]
    fn queue_limit_drops_and_offline_qos0_is_discarded() {
        let mut o = Outbound::new(2, 1);
        assert_eq!(
            o.enqueue(delivery(QoS::AtLeastOnce), false),
            Enqueued::Queued
        );
        assert_eq!(
            o.enqueue(delivery(QoS::AtLeastOnce), false),
            Enqueued::Queued
        );
        assert_eq!(
            o.enqueue(delivery(QoS::AtLeastOnce), false),
            Enqueued::QueueFull
        );
        assert_eq!(
            o.enqueue(delivery(QoS::AtMostOnce), false),
            Enqueued::OfflineQoS0
        );
    }

    #[test]
    fn qos0_needs_no_packet_id_but_keeps_order() {
        let mut o = Outbound::new(10, 1);
        o.enqueue(delivery(QoS::AtLeastOnce), true);
        o.enqueue(delivery(QoS::AtLeastOnce), true);
        o.enqueue(delivery(QoS::AtMostOnce), true);
        assert_eq!(publish_id(send(&mut o)), 1);
        // The QoS 0 message waits behind the blocked QoS 1 one: order is kept.
        assert_eq!(send(&mut o), None);
        o.on_puback(1);
        assert_eq!(publish_id(send(&mut o)), 2);
        assert_eq!(publish_id(send(&mut o)), 0);
    }

    #[test]
    fn pending_commit_holds_the_queue_and_failed_commit_drops() {
        use crate::session::message::CommitGate;
        let mut o = Outbound::new(10, 10);
        let gate = Arc::new(CommitGate::default());
        let mut d = delivery(QoS::AtLeastOnce);
        d.gate = Some(Arc::clone(&gate));
        o.enqueue(d.clone(), true);
        o.enqueue(delivery(QoS::AtMostOnce), true);
        assert_eq!(
            send(&mut o),
            None,
            "held until the publisher's state is committed"
        );
        gate.resolve(true);
        assert_eq!(publish_id(send(&mut o)), 1);
        assert_eq!(publish_id(send(&mut o)), 0);

        let failed = Arc::new(CommitGate::default());
        d.gate = Some(Arc::clone(&failed));
        o.enqueue(d, true);
        o.enqueue(delivery(QoS::AtMostOnce), true);
        failed.resolve(false);
        assert_eq!(publish_id(send(&mut o)), 0, "the failed one is dropped");
    }

    #[test]
    fn expired_messages_are_skipped_and_counted() {
        let mut o = Outbound::new(10, 10);
        let mut d = delivery(QoS::AtLeastOnce);
        let past = Instant::now();
        Arc::get_mut(&mut d.message).unwrap().expires_at = Some(past);
        o.enqueue(d, true);
        let mut expired = Vec::new();
        assert_eq!(o.next_transmit(Instant::now(), &mut expired), None);
        assert_eq!(expired, vec![0]);
    }
}
