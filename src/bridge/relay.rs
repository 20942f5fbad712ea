//! The rules of a bridge link, without I/O: what to send to each broker for each packet
//! received from the other.
//!
//! A QoS 1/2 message keeps its Packet Identifier across the bridge. Outgoing, the local
//! session's Packet Identifier is used towards the remote broker; incoming, the remote's is used
//! towards the local broker. Each acknowledgement is passed on only when the broker on the far
//! side sent its own:
//!
//! - out, QoS 1: local PUBLISH p → remote PUBLISH p → remote PUBACK p → local PUBACK p;
//! - out, QoS 2: local PUBLISH p → remote PUBLISH p → remote PUBREC p → local PUBREC p →
//!   local PUBREL p → remote PUBREL p → remote PUBCOMP p → local PUBCOMP p;
//! - in: the same with the sides swapped.
//!
//! So a message leaves the local session (durable, in the store) only once the remote broker
//! has it, and the remote broker is told it was received only once the local store has it.
//! After a link or process failure each side resends what it has not seen acknowledged, with
//! the same Packet Identifiers, which the other side's QoS 2 state recognises: no copy is
//! lost, and a QoS 2 message is not delivered twice.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::codec::{AckKind, Packet, PubAckLike, Publish, QoS, ReasonCode, Version};
use crate::config::BridgeTopic;

use super::topics;

/// How long an incoming message the local broker refused for now (quota exceeded, busy,
/// store unavailable) waits before it is published again.
pub(crate) const LOCAL_RETRY: Duration = Duration::from_secs(1);

/// Bytes of incoming messages that may wait for room here while the remote still owes the
/// PUBRELs that make that room: reading goes on (a PUBREL may be behind them) up to this.
pub(crate) const WAITING_BUDGET: usize = 32 * 1024 * 1024;

/// Why a link must be closed and opened again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Restart(pub String);

/// Counts of one link's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Forwarded {
    /// Messages delivered to the remote broker (QoS 0 sent, QoS 1/2 acknowledged).
    pub out: u64,
    /// Messages delivered to this broker.
    pub r#in: u64,
    /// Messages a broker refused for good (e.g. not authorized); acknowledged to the sender.
    pub refused: u64,
}

/// Where an outgoing QoS 1/2 message stands.
#[derive(Debug)]
enum Outgoing {
    /// Sent to the remote, waiting for its PUBACK (QoS 1 there) or PUBREC (QoS 2 there);
    /// `local` is the QoS the local Session delivered it at, which decides what the
    /// acknowledgement becomes here. The message is kept for a retry.
    Sent { local: QoS, message: Publish },
    /// Refused for now by the remote; sent again at the instant.
    Retry {
        local: QoS,
        message: Publish,
        at: Instant,
    },
    /// QoS 2 on both sides: PUBREC passed on, waiting for the local PUBREL and then the
    /// remote's PUBCOMP.
    Received,
    /// The remote holds nothing (more) for it: the local PUBREL is answered here.
    Done,
}

/// Where an incoming QoS 1/2 message stands.
#[derive(Debug)]
enum Incoming {
    /// Published locally, waiting for PUBACK or PUBREC.
    Published(Publish),
    /// Refused by the local broker for now; published again at the instant.
    Retry(Publish, Instant),
    /// QoS 2: received locally (PUBREC passed on), waiting for the remote's PUBREL.
    Received,
    /// QoS 2: PUBREL passed on, waiting for the local PUBCOMP.
    Released,
}

/// The state of one link: both connections up, CONNACKs received.
#[derive(Debug)]
pub(crate) struct Relay {
    topics: Arc<[BridgeTopic]>,
    /// The version spoken to the remote broker.
    remote_version: Version,
    /// Outgoing QoS 1/2 messages the remote has not completed, by Packet Identifier.
    outgoing: HashMap<u16, Outgoing>,
    /// The highest QoS the remote accepts (MQTT 5.0 Maximum QoS; 2 otherwise).
    remote_max_qos: QoS,
    /// Whether the remote accepts retained messages (MQTT 5.0 Retain Available).
    remote_retain: bool,
    /// Incoming QoS 1/2 messages the local broker has not completed.
    incoming: HashMap<u16, Incoming>,
    /// Incoming messages waiting for room in the local broker's Receive Maximum.
    waiting: VecDeque<Publish>,
    /// Bytes (topic and payload) of `waiting`.
    waiting_bytes: usize,
    /// Outgoing messages held back while an earlier one waits to be sent again, so that
    /// they do not overtake it.
    held: VecDeque<Publish>,
    /// The local broker's Receive Maximum.
    local_window: usize,
    /// The largest packet the remote broker accepts (its MQTT 5.0 Maximum Packet Size).
    remote_max: Option<u32>,
    /// The largest packet this broker accepts.
    local_max: Option<u32>,
    to_local: Vec<Packet>,
    to_remote: Vec<Packet>,
    counts: Forwarded,
}

impl Relay {
    /// A link carrying `topics`, speaking `remote_version` to the remote broker; the local
    /// broker accepts `local_window` unacknowledged QoS 1/2 messages.
    pub(crate) fn new(
        topics: Arc<[BridgeTopic]>,
        remote_version: Version,
        local_window: u16,
    ) -> Relay {
        Relay {
            topics,
            remote_version,
            outgoing: HashMap::new(),
            remote_max_qos: QoS::ExactlyOnce,
            remote_retain: true,
            incoming: HashMap::new(),
            waiting: VecDeque::new(),
            waiting_bytes: 0,
            held: VecDeque::new(),
            local_window: usize::from(local_window.max(1)),
            remote_max: None,
            local_max: None,
            to_local: Vec::new(),
            to_remote: Vec::new(),
            counts: Forwarded::default(),
        }
    }

    /// The largest packets each broker accepts. A message that the renaming of its topic makes
    /// larger cannot be forwarded: it is refused for good (dropped, counted) instead of
    /// breaking the link each time it is sent.
    pub(crate) fn set_max_packet_sizes(&mut self, remote: Option<u32>, local: Option<u32>) {
        self.remote_max = remote;
        self.local_max = local;
    }

    /// What the remote said it accepts in its MQTT 5.0 CONNACK: messages above its Maximum
    /// QoS go at that QoS (MQTT-3.2.2-11), and without Retain Available they go without the
    /// RETAIN flag (MQTT-3.2.2-14).
    pub(crate) fn set_remote_limits(&mut self, max_qos: QoS, retain: bool) {
        self.remote_max_qos = max_qos;
        self.remote_retain = retain;
    }

    /// Packets to send to the local broker, in order.
    pub(crate) fn take_local(&mut self) -> Vec<Packet> {
        std::mem::take(&mut self.to_local)
    }

    /// Packets to send to the remote broker, in order.
    pub(crate) fn take_remote(&mut self) -> Vec<Packet> {
        std::mem::take(&mut self.to_remote)
    }

    /// What was forwarded since the last call.
    pub(crate) fn take_counts(&mut self) -> Forwarded {
        std::mem::take(&mut self.counts)
    }

    /// Outgoing QoS 1/2 messages the remote broker has not completed.
    #[cfg(test)]
    pub(crate) fn outgoing_in_flight(&self) -> usize {
        self.outgoing.len()
    }

    /// A packet from the local broker.
    pub(crate) fn on_local(&mut self, packet: Packet) -> Result<(), Restart> {
        match packet {
            Packet::Publish(p) => self.local_publish(p),
            Packet::Ack(a) => match a.kind {
                // QoS 2 out: the local session released the message.
                AckKind::PubRel => {
                    let id = a.packet_id;
                    if matches!(self.outgoing.get(&id), Some(Outgoing::Done)) {
                        // Refused for good by the remote, not forwarded, or acknowledged at a
                        // lower QoS there: the remote holds nothing for it.
                        self.outgoing.remove(&id);
                        self.to_local.push(ack(AckKind::PubComp, id));
                    } else {
                        // Also when unknown here: a resend after a restart of either side,
                        // whose PUBREC the remote sent to an earlier link. The remote may
                        // still wait for this PUBREL before it delivers the message.
                        self.outgoing.insert(id, Outgoing::Received);
                        self.to_remote.push(ack(AckKind::PubRel, id));
                    }
                    Ok(())
                }
                AckKind::PubAck | AckKind::PubRec | AckKind::PubComp => self.local_ack(a),
            },
            Packet::SubAck(s) => {
                if let Some(code) = s.codes.iter().find(|c| c.0 >= 0x80) {
                    tracing::warn!(code = %code, "the local broker refused a bridge subscription");
                }
                Ok(())
            }
            Packet::PingResp | Packet::UnsubAck(_) => Ok(()),
            Packet::Disconnect(d) => Err(Restart(format!(
                "the local broker disconnected the bridge ({})",
                d.reason
            ))),
            other => Err(Restart(format!(
                "unexpected packet from the local broker: {other:?}"
            ))),
        }
    }

    /// A packet from the remote broker.
    pub(crate) fn on_remote(&mut self, packet: Packet) -> Result<(), Restart> {
        match packet {
            Packet::Publish(p) => self.remote_publish(p),
            Packet::Ack(a) => match a.kind {
                AckKind::PubAck | AckKind::PubRec | AckKind::PubComp => self.remote_ack(a),
                AckKind::PubRel => {
                    match self.incoming.get_mut(&a.packet_id) {
                        Some(state @ Incoming::Received) => {
                            *state = Incoming::Released;
                            self.to_local.push(ack(AckKind::PubRel, a.packet_id));
                        }
                        // Already passed on (a resend), or not ours: the local broker answers.
                        Some(Incoming::Released) => {
                            self.to_local.push(ack(AckKind::PubRel, a.packet_id));
                        }
                        Some(_) => {
                            return Err(Restart(format!(
                                "the remote broker released message {} before it was received",
                                a.packet_id
                            )));
                        }
                        // Unknown here (after a restart, or not forwarded): the local broker
                        // completes it if it has it and answers PUBCOMP in any case, which
                        // goes back to the remote.
                        None => {
                            self.incoming.insert(a.packet_id, Incoming::Released);
                            self.to_local.push(ack(AckKind::PubRel, a.packet_id));
                        }
                    }
                    Ok(())
                }
            },
            Packet::SubAck(s) => {
                if let Some(code) = s.codes.iter().find(|c| c.0 >= 0x80) {
                    tracing::warn!(code = %code, "the remote broker refused a bridge subscription");
                }
                Ok(())
            }
            Packet::PingResp | Packet::UnsubAck(_) => Ok(()),
            Packet::Disconnect(d) => Err(Restart(format!(
                "the remote broker disconnected the bridge ({})",
                d.reason
            ))),
            other => Err(Restart(format!(
                "unexpected packet from the remote broker: {other:?}"
            ))),
        }
    }

    /// The next instant at which [`Relay::handle_timeout`] has work.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let incoming = self.incoming.values().filter_map(|s| match s {
            Incoming::Retry(_, at) => Some(*at),
            _ => None,
        });
        let outgoing = self.outgoing.values().filter_map(|s| match s {
            Outgoing::Retry { at, .. } => Some(*at),
            _ => None,
        });
        incoming.chain(outgoing).min()
    }

    /// Sends again the messages whose retry time has come.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let mut due: Vec<u16> = self
            .outgoing
            .iter()
            .filter(|(_, s)| matches!(s, Outgoing::Retry { at, .. } if *at <= now))
            .map(|(id, _)| *id)
            .collect();
        due.sort_unstable();
        for id in due {
            if let Some(Outgoing::Retry { local, message, .. }) = self.outgoing.remove(&id) {
                self.to_remote.push(Packet::Publish(message.clone()));
                self.outgoing.insert(id, Outgoing::Sent { local, message });
            }
        }
        // What was held back follows, in order (unless another refusal holds it again).
        while !self.retrying_outgoing() {
            let Some(p) = self.held.pop_front() else {
                break;
            };
            // Cannot fail here: its id was free when it arrived and nothing took it since.
            let _ = self.local_publish(p);
        }
        self.retry_incoming(now);
        self.pump();
    }

    /// An outgoing message waits to be sent again.
    fn retrying_outgoing(&self) -> bool {
        self.outgoing
            .values()
            .any(|s| matches!(s, Outgoing::Retry { .. }))
    }

    /// Publishes again the incoming messages whose retry time has come.
    fn retry_incoming(&mut self, now: Instant) {
        let mut due: Vec<u16> = self
            .incoming
            .iter()
            .filter(|(_, s)| matches!(s, Incoming::Retry(_, at) if *at <= now))
            .map(|(id, _)| *id)
            .collect();
        due.sort_unstable();
        for id in due {
            if let Some(state) = self.incoming.get_mut(&id)
                && let Incoming::Retry(p, _) = std::mem::replace(state, Incoming::Received)
            {
                self.to_local.push(Packet::Publish(p.clone()));
                *state = Incoming::Published(p);
            }
        }
    }

    /// A message the local broker delivered to the bridge: sent on to the remote broker.
    fn local_publish(&mut self, p: Publish) -> Result<(), Restart> {
        let Some(topic) = topics::to_remote(&self.topics, &p.subscription_identifiers, &p.topic)
        else {
            // Not one of ours (a subscription left from an earlier configuration): taken off
            // the local session's hands.
            tracing::warn!(
                topic = p.topic.as_str(),
                "no bridge topic line gives this message a remote topic: dropped"
            );
            self.counts.refused += 1;
            self.acknowledge_local_delivery(&p);
            return Ok(());
        };
        let out = Publish {
            topic,
            topic_alias: None,
            subscription_identifiers: Vec::new(),
            properties: match self.remote_version {
                Version::V5 => p.properties.clone(),
                Version::V311 => Default::default(),
            },
            qos: p.qos.min(self.remote_max_qos),
            retain: p.retain && self.remote_retain,
            ..p.clone()
        };
        if !fits(&out, self.remote_version, self.remote_max) {
            tracing::warn!(
                topic = out.topic.as_str(),
                "a bridged message is larger than the remote broker accepts: dropped"
            );
            self.counts.refused += 1;
            self.acknowledge_local_delivery(&p);
            return Ok(());
        }
        let id = p.packet_id;
        if self.retrying_outgoing() {
            // An earlier message waits to be sent again: this one goes after it.
            self.held.push_back(p);
            return Ok(());
        }
        if out.qos == QoS::AtMostOnce {
            // Sent and done (the remote takes nothing higher): the local Session lets it go.
            self.counts.out += 1;
            self.to_remote.push(Packet::Publish(out));
            self.acknowledge_local_delivery(&p);
            return Ok(());
        }
        if let Some(Outgoing::Sent { .. } | Outgoing::Retry { .. } | Outgoing::Received) =
            self.outgoing.get(&id)
        {
            return Err(Restart(format!(
                "the local broker reused Packet Identifier {id} while it was in flight"
            )));
        }
        self.outgoing.insert(
            id,
            Outgoing::Sent {
                local: p.qos,
                message: out.clone(),
            },
        );
        self.to_remote.push(Packet::Publish(out));
        Ok(())
    }

    /// An acknowledgement from the remote broker for an outgoing message.
    fn remote_ack(&mut self, a: PubAckLike) -> Result<(), Restart> {
        let id = a.packet_id;
        let state = self.outgoing.get(&id);
        let sent_qos = match state {
            Some(Outgoing::Sent { message, .. }) => Some(message.qos),
            _ => None,
        };
        match (a.kind, state) {
            (AckKind::PubComp, Some(Outgoing::Received)) => {
                self.outgoing.remove(&id);
                self.counts.out += 1;
                self.to_local.push(ack(AckKind::PubComp, id));
                return Ok(());
            }
            (AckKind::PubAck, Some(Outgoing::Sent { .. }))
                if sent_qos == Some(QoS::AtLeastOnce) => {}
            (AckKind::PubRec, Some(Outgoing::Sent { .. }))
                if sent_qos == Some(QoS::ExactlyOnce) => {}
            _ => {
                tracing::debug!(packet_id = id, kind = ?a.kind, "acknowledgement for no message in flight: ignored");
                return Ok(());
            }
        }
        let Some(Outgoing::Sent { local, message }) = self.outgoing.remove(&id) else {
            return Ok(());
        };
        if a.reason.0 >= 0x80 {
            if transient(a.reason) {
                // Kept here and sent again shortly; the local Session keeps waiting.
                tracing::debug!(packet_id = id, reason = %a.reason, "the remote broker refused a bridged message for now: sending it again in a second");
                let at = Instant::now() + LOCAL_RETRY;
                self.outgoing
                    .insert(id, Outgoing::Retry { local, message, at });
                return Ok(());
            }
            // Refused for good: it cannot be delivered; the local Session lets it go.
            tracing::warn!(packet_id = id, reason = %a.reason, "the remote broker refused a bridged message: dropped");
            self.counts.refused += 1;
            self.finish_locally(id, local);
            return Ok(());
        }
        match (a.kind, local) {
            // The same QoS on both sides: the acknowledgement passes.
            (AckKind::PubAck, QoS::AtLeastOnce) => {
                self.counts.out += 1;
                self.to_local.push(ack(AckKind::PubAck, id));
            }
            (AckKind::PubRec, _) => {
                self.outgoing.insert(id, Outgoing::Received);
                self.to_local.push(ack(AckKind::PubRec, id));
            }
            // QoS 2 here, QoS 1 at the remote (its Maximum QoS): delivered there.
            _ => {
                self.counts.out += 1;
                self.finish_locally(id, local);
            }
        }
        Ok(())
    }

    /// Ends a local QoS 1/2 delivery that the remote will not (or no longer) acknowledge as
    /// such: PUBACK, or PUBREC with the PUBREL answered here.
    fn finish_locally(&mut self, id: u16, local: QoS) {
        match local {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.to_local.push(ack(AckKind::PubAck, id)),
            QoS::ExactlyOnce => {
                self.outgoing.insert(id, Outgoing::Done);
                self.to_local.push(ack(AckKind::PubRec, id));
            }
        }
    }

    /// A message the remote broker delivered to the bridge: published locally.
    fn remote_publish(&mut self, p: Publish) -> Result<(), Restart> {
        if p.topic_alias.is_some() {
            return Err(Restart(
                "the remote broker used a topic alias; none were allowed".into(),
            ));
        }
        let Some(topic) = topics::to_local(&self.topics, &p.topic) else {
            tracing::warn!(
                topic = p.topic.as_str(),
                "no bridge topic line gives this message a local topic: dropped"
            );
            self.counts.refused += 1;
            match p.qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => self.to_remote.push(ack(AckKind::PubAck, p.packet_id)),
                QoS::ExactlyOnce => {
                    // The remote's PUBREL for it is answered by the local broker (unknown there).
                    self.to_remote.push(ack(AckKind::PubRec, p.packet_id));
                }
            }
            return Ok(());
        };
        let p = Publish {
            topic,
            subscription_identifiers: Vec::new(),
            ..p
        };
        let id = p.packet_id;
        if !fits(&p, Version::V5, self.local_max) {
            tracing::warn!(
                topic = p.topic.as_str(),
                "a bridged message is larger than this broker accepts: dropped"
            );
            self.counts.refused += 1;
            match p.qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => self.to_remote.push(ack(AckKind::PubAck, id)),
                // Its PUBREL is then answered by the local broker (unknown there).
                QoS::ExactlyOnce => self.to_remote.push(ack(AckKind::PubRec, id)),
            }
            return Ok(());
        }
        if p.qos == QoS::AtMostOnce {
            self.counts.r#in += 1;
            self.to_local.push(Packet::Publish(p));
            return Ok(());
        }
        match self.incoming.get(&id) {
            // A resend of what is under way: it goes on as before.
            Some(Incoming::Published(_) | Incoming::Retry(..)) => return Ok(()),
            Some(Incoming::Received) => {
                self.to_remote.push(ack(AckKind::PubRec, id));
                return Ok(());
            }
            // A new message on an id whose PUBCOMP has not gone back yet (MQTT-2.2.1-4 says
            // the remote may not; mosquitto 2.0 does after a long outage): it waits below
            // until the old one is complete.
            Some(Incoming::Released) | None => {}
        }
        if p.dup && self.waiting.iter().any(|w| w.packet_id == id) {
            // A resend of one already waiting.
            return Ok(());
        }
        self.waiting_bytes += size(&p);
        self.waiting.push_back(p);
        self.pump();
        Ok(())
    }

    /// Publishes waiting incoming messages, in order, while the local Receive Maximum has
    /// room and the next one's Packet Identifier is free here.
    fn pump(&mut self) {
        // Nothing overtakes a message this broker refused for now.
        if self
            .incoming
            .values()
            .any(|s| matches!(s, Incoming::Retry(..)))
        {
            return;
        }
        while self.incoming.len() < self.local_window {
            let Some(front) = self.waiting.front() else {
                return;
            };
            if self.incoming.contains_key(&front.packet_id) {
                return;
            }
            let Some(p) = self.waiting.pop_front() else {
                return;
            };
            self.waiting_bytes -= size(&p);
            self.to_local.push(Packet::Publish(p.clone()));
            self.incoming.insert(p.packet_id, Incoming::Published(p));
        }
    }

    /// Whether more may be read from the remote: incoming messages waiting for room here are
    /// bounded (by the local Receive Maximum), so a flood meets TCP back-pressure instead of
    /// filling memory.
    pub(crate) fn wants_remote(&self) -> bool {
        if self.waiting.len() < self.local_window {
            return true;
        }
        // The window may be full of messages whose PUBREL the remote still owes; it may be
        // behind what waits in the socket, so reading goes on, within a budget.
        let owed = self
            .incoming
            .values()
            .any(|s| matches!(s, Incoming::Received));
        owed && self.waiting_bytes < WAITING_BUDGET
    }

    /// An acknowledgement from the local broker: for an incoming message (PUBACK, PUBREC,
    /// PUBCOMP).
    fn local_ack(&mut self, a: PubAckLike) -> Result<(), Restart> {
        let id = a.packet_id;
        let Some(state) = self.incoming.get_mut(&id) else {
            tracing::debug!(packet_id = id, kind = ?a.kind, "local acknowledgement for no message in flight: ignored");
            return Ok(());
        };
        match (a.kind, &*state) {
            (AckKind::PubAck | AckKind::PubRec, Incoming::Published(p)) if a.reason.0 >= 0x80 => {
                if transient(a.reason) {
                    // Not acknowledged to the remote: it stays there, and here it is tried
                    // again shortly (the remote's window fills meanwhile: back-pressure).
                    *state = Incoming::Retry(p.clone(), Instant::now() + LOCAL_RETRY);
                    return Ok(());
                }
                tracing::warn!(packet_id = id, reason = %a.reason, "this broker refused a bridged message: dropped");
                self.counts.refused += 1;
                self.incoming.remove(&id);
                // The remote's PUBREL is then answered by the local broker (unknown there).
                self.to_remote.push(ack(a.kind, id));
                self.pump();
            }
            (AckKind::PubAck, Incoming::Published(p)) if p.qos == QoS::AtLeastOnce => {
                self.incoming.remove(&id);
                self.counts.r#in += 1;
                self.to_remote.push(ack(AckKind::PubAck, id));
                self.pump();
            }
            (AckKind::PubRec, Incoming::Published(p)) if p.qos == QoS::ExactlyOnce => {
                *state = Incoming::Received;
                self.to_remote.push(ack(AckKind::PubRec, id));
            }
            (AckKind::PubComp, Incoming::Released) => {
                self.incoming.remove(&id);
                self.counts.r#in += 1;
                self.to_remote.push(ack(AckKind::PubComp, id));
                self.pump();
            }
            (kind, state) => {
                return Err(Restart(format!(
                    "the local broker sent {kind:?} for message {id} in state {}",
                    match state {
                        Incoming::Published(_) => "published",
                        Incoming::Retry(..) => "retry",
                        Incoming::Received => "received",
                        Incoming::Released => "released",
                    }
                )));
            }
        }
        Ok(())
    }

    /// Takes a message the bridge does not forward (or forwarded at QoS 0) off the local
    /// Session's hands.
    fn acknowledge_local_delivery(&mut self, p: &Publish) {
        self.finish_locally(p.packet_id, p.qos);
    }
}

/// The bytes a waiting message holds (topic and payload).
fn size(p: &Publish) -> usize {
    p.topic.len() + p.payload.len()
}

/// Whether `p` encoded for `version` is within `max` bytes.
fn fits(p: &Publish, version: Version, max: Option<u32>) -> bool {
    let len = crate::codec::publish_len(&crate::codec::PublishView::from(p), version);
    match (len, max) {
        (Err(_), _) => false,
        (Ok(len), Some(max)) => len <= max as usize,
        (Ok(_), None) => true,
    }
}

/// A refusal that may pass: the message is tried again instead of dropped.
fn transient(reason: ReasonCode) -> bool {
    matches!(
        reason.0,
        0x80 // unspecified error
            | 0x83 // implementation specific error
            | 0x88 // server unavailable
            | 0x89 // server busy
            | 0x91 // packet identifier in use
            | 0x97 // quota exceeded
    )
}

/// A successful acknowledgement of `kind` for `packet_id`.
fn ack(kind: AckKind, packet_id: u16) -> Packet {
    Packet::Ack(PubAckLike::new(kind, packet_id))
}

#[cfg(test)]
mod tests;
