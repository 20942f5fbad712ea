//! DISCONNECT: decoded and encoded by hand.
//!
//! mqttbytes fails to parse a 5.0 DISCONNECT with remaining length 0 or 1, which are the
//! normal forms (MQTT 5.0 3.14.2.1: no reason code means 0x00, no property length means none).

use super::decode::Role;
use super::error::{DecodeError, EncodeError};
use super::frame::Frame;
use super::packet::{Disconnect, Packet, Version};
use super::properties::{self as prop, Context};
use super::writer::{self, Encode};
use roost_wire::packet_type::DISCONNECT;
use roost_wire::{ReasonCode, Sink};

/// Decodes a DISCONNECT. In 3.1.1 the remaining length must be 0.
pub(crate) fn decode(f: &Frame, version: Version, role: Role) -> Result<Packet, DecodeError> {
    let mut r = f.body();
    let mut d = Disconnect::default();
    if version == Version::V5 && !r.is_empty() {
        d.reason = ReasonCode(r.u8()?);
        if !d.reason.is_valid_v5(DISCONNECT) {
            return Err(DecodeError::Malformed("invalid reason code"));
        }
        if !r.is_empty() {
            let p = prop::parse(&mut r, Context::Disconnect, false)?;
            if role == Role::Client && p.session_expiry_interval.is_some() {
                // MQTT-3.14.2-2
                return Err(DecodeError::Protocol(
                    "session expiry in a server's DISCONNECT",
                ));
            }
            d.session_expiry_interval = p.session_expiry_interval;
            d.reason_string = p.reason_string;
            d.server_reference = p.server_reference;
        }
    }
    r.finish()?;
    Ok(Packet::Disconnect(d))
}

/// Encodes a DISCONNECT body: empty in 3.1.1; in 5.0 the shortest form that carries the
/// reason code and properties.
pub(crate) struct DisconnectBody<'a>(pub &'a Disconnect, pub Version);

impl Encode for DisconnectBody<'_> {
    fn put<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        let d = self.0;
        if self.1 == Version::V311 {
            return Ok(());
        }
        let props = DisconnectProps(d);
        let has_props = writer::measure(&props)? > 0;
        if d.reason != ReasonCode::SUCCESS || has_props {
            s.u8(d.reason.0)?;
        }
        if has_props {
            writer::put_props(s, &props)?;
        }
        Ok(())
    }
}

struct DisconnectProps<'a>(&'a Disconnect);

impl Encode for DisconnectProps<'_> {
    fn put<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        let d = self.0;
        writer::prop_u32(s, prop::SESSION_EXPIRY_INTERVAL, d.session_expiry_interval)?;
        writer::prop_str(s, prop::REASON_STRING, d.reason_string.as_deref())?;
        writer::prop_str(s, prop::SERVER_REFERENCE, d.server_reference.as_deref())
    }
}
