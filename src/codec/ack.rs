//! PUBACK, PUBREC, PUBREL, PUBCOMP: decoded and encoded by hand.
//!
//! mqttbytes' 3.1.1 readers ignore bytes after the packet id, and its 5.0 readers use the
//! per-packet property extractors; a packet id and a reason code need no library anyway.

use super::error::{DecodeError, EncodeError};
use super::frame::Frame;
use super::packet::{AckKind, Packet, PubAckLike, Version};
use super::properties::{self as prop, Context};
use super::writer::{self, Encode};
use roost_wire::packet_type::{PUBACK, PUBCOMP, PUBREC, PUBREL};
use roost_wire::{ReasonCode, Sink};

/// Decodes one of the four acknowledgements. Packet id 0 is malformed (MQTT-2.2.1-3); in
/// 3.1.1 the remaining length must be exactly 2.
pub(crate) fn decode(f: &Frame, kind: AckKind, version: Version) -> Result<Packet, DecodeError> {
    let mut r = f.body();
    let packet_id = r.packet_id()?;
    let mut ack = PubAckLike {
        kind,
        packet_id,
        reason: ReasonCode::SUCCESS,
        reason_string: None,
    };
    if version == Version::V5 && !r.is_empty() {
        ack.reason = ReasonCode(r.u8()?);
        if !ack.reason.is_valid_v5(packet_type(kind)) {
            return Err(DecodeError::Malformed("invalid reason code"));
        }
        // Remaining length 3: no property length, no properties.
        if !r.is_empty() {
            ack.reason_string = prop::parse(&mut r, Context::Ack, false)?.reason_string;
        }
    }
    r.finish()?;
    Ok(Packet::Ack(ack))
}

/// The packet type of an acknowledgement.
fn packet_type(kind: AckKind) -> u8 {
    match kind {
        AckKind::PubAck => PUBACK,
        AckKind::PubRec => PUBREC,
        AckKind::PubRel => PUBREL,
        AckKind::PubComp => PUBCOMP,
    }
}

/// The fixed-header byte of an acknowledgement (PUBREL carries flags 0010).
pub(crate) fn first_byte(kind: AckKind) -> u8 {
    roost_wire::first_byte(packet_type(kind))
}

/// Encodes an acknowledgement body. In 5.0 the short forms are used: packet id only for
/// reason 0 without properties, packet id and reason without properties.
pub(crate) struct AckBody<'a>(pub &'a PubAckLike, pub Version);

impl Encode for AckBody<'_> {
    fn put<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        let a = self.0;
        if a.packet_id == 0 {
            return Err(EncodeError::PacketIdZero);
        }
        s.u16(a.packet_id)?;
        if self.1 == Version::V5 && (a.reason != ReasonCode::SUCCESS || a.reason_string.is_some()) {
            s.u8(a.reason.0)?;
            if a.reason_string.is_some() {
                writer::put_props(s, &ReasonProps(a.reason_string.as_deref()))?;
            }
        }
        Ok(())
    }
}

/// A property block holding at most a reason string (acks, SUBACK, UNSUBACK, DISCONNECT).
pub(crate) struct ReasonProps<'a>(pub Option<&'a str>);

impl Encode for ReasonProps<'_> {
    fn put<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        writer::prop_str(s, prop::REASON_STRING, self.0)
    }
}
