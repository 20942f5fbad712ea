//! PUBACK, PUBREC, PUBREL and PUBCOMP from a client: advance the session's QoS 1/2 flows.

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use crate::codec::{AckKind, PubAckLike};
use crate::session::AckOutcome;

use super::{Close, Connection};

/// MQTT 5.0 reason code: packet identifier not found.
const PACKET_ID_NOT_FOUND: u8 = 0x92;

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    pub(super) fn handle_ack(&mut self, ack: PubAckLike) -> Result<(), Close> {
        let Some(attached) = &self.state else {
            return Err(Close::Io);
        };
        let id = ack.packet_id;
        let outcome = {
            let mut slot = attached.session.slot.lock();
            let session = &mut slot.session;
            match ack.kind {
                AckKind::PubAck => session.outbound.on_puback(id),
                AckKind::PubRec => session.outbound.on_pubrec(id, ack.reason >= 0x80),
                AckKind::PubComp => session.outbound.on_pubcomp(id),
                AckKind::PubRel => {
                    if session.inbound.on_pubrel(id) {
                        AckOutcome::Done
                    } else {
                        AckOutcome::UnknownPacketId
                    }
                }
            }
        };
        if outcome == AckOutcome::UnknownPacketId {
            debug!(peer = %self.peer, kind = ?ack.kind, id, "acknowledgement for an unknown packet id");
        }
        let reason = match outcome {
            AckOutcome::Done => 0,
            AckOutcome::UnknownPacketId => PACKET_ID_NOT_FOUND,
        };
        match ack.kind {
            AckKind::PubAck | AckKind::PubComp => Ok(()),
            // A failed PUBREC ends the flow; otherwise PUBREL follows (MQTT-4.3.3-4).
            AckKind::PubRec if ack.reason >= 0x80 => Ok(()),
            AckKind::PubRec => self.send_ack(AckKind::PubRel, id, reason),
            // PUBCOMP is owed even for an id we no longer hold (MQTT-4.3.3-11).
            AckKind::PubRel => self.send_ack(AckKind::PubComp, id, reason),
        }
    }
}
