//! PUBACK, PUBREC, PUBREL and PUBCOMP from a client: advance the session's QoS 1/2 flows.

use tracing::debug;

use crate::codec::{AckKind, PubAckLike, ReasonCode};
use crate::session::AckOutcome;
use crate::store::{EntryState, Op};

use super::{Close, Connected};

impl Connected {
    pub(super) fn handle_ack(&mut self, ack: PubAckLike) -> Result<(), Close> {
        let id = ack.packet_id;
        let failed = ack.reason.is_error();
        let (outcome, persisted) = {
            let mut slot = self.session.slot.lock();
            let persisted = slot.persisted;
            let session = &mut slot.session;
            let outcome = match ack.kind {
                AckKind::PubAck => session.outbound.on_puback(id),
                AckKind::PubRec => session.outbound.on_pubrec(id, failed),
                AckKind::PubComp => session.outbound.on_pubcomp(id),
                AckKind::PubRel => {
                    if session.inbound.on_pubrel(id) {
                        AckOutcome::Done { seq: None }
                    } else {
                        AckOutcome::UnknownPacketId
                    }
                }
            };
            (outcome, persisted)
        };
        if persisted && ack.kind == AckKind::PubRel {
            // PUBCOMP must not go out while the id could still look pending after a crash: the
            // client may reuse it for a new message. Deleted even when memory no longer has
            // it (a retry after a failed commit).
            self.pending.push(Op::DeleteIncoming {
                session: self.session.store_key(),
                packet_id: id,
            });
        } else if persisted && let AckOutcome::Done { seq } = outcome {
            let session = self.session.store_key();
            let p = &mut self.pending;
            match ack.kind {
                // PUBREL must not go out before the released state is durable, or a
                // restart would resend the PUBLISH the client already released.
                AckKind::PubRec if !failed && let Some(seq) = seq => {
                    p.push_done_in_memory(Op::UpdateEntry {
                        session,
                        seq,
                        state: EntryState::Released,
                        packet_id: id,
                    })
                }
                _ if let Some(seq) = seq => p.push_async(Op::DeleteEntry { session, seq }),
                _ => {}
            }
        }
        let frees = match ack.kind {
            AckKind::PubAck | AckKind::PubComp => true,
            AckKind::PubRec => failed,
            AckKind::PubRel => false,
        };
        if frees && outcome != AckOutcome::UnknownPacketId {
            // Publishers paused on this session's full queue may go on.
            self.session.notify_room();
        }
        if outcome == AckOutcome::UnknownPacketId {
            debug!(peer = %self.peer, kind = ?ack.kind, id, "acknowledgement for an unknown packet id");
        }
        let reason = match outcome {
            AckOutcome::Done { .. } => ReasonCode::SUCCESS,
            AckOutcome::UnknownPacketId => ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
        };
        match ack.kind {
            AckKind::PubAck | AckKind::PubComp => Ok(()),
            // A failed PUBREC ends the flow; otherwise PUBREL follows (MQTT-4.3.3-4).
            AckKind::PubRec if failed => Ok(()),
            AckKind::PubRec => self.send_ack(AckKind::PubRel, id, reason),
            // PUBCOMP is owed even for an id we no longer hold (MQTT-4.3.3-11).
            AckKind::PubRel => self.send_ack(AckKind::PubComp, id, reason),
        }
    }
}
