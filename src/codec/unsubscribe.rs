//! UNSUBSCRIBE and UNSUBACK.
//!
//! 3.1.1 UNSUBSCRIBE bodies are read by mqttbytes (`v4::Unsubscribe::read`) and then
//! validated; 5.0 ones by hand, because mqttbytes' `v5::Unsubscribe::read` contains a `dbg!`
//! that prints every packet id to stderr.

use super::error::{DecodeError, EncodeError};
use super::frame::Frame;
use super::packet::{Packet, UnsubAck, Unsubscribe, Version};
use super::properties::{self as prop, Context};
use super::writer::{self, Encode};
use crate::topic::{shared, valid_topic_filter};
use roost_wire::packet_type::UNSUBACK;
use roost_wire::{ReasonCode, Sink};

/// Decodes an UNSUBSCRIBE whose fixed-header flags were already checked.
pub(crate) fn decode(f: &Frame, version: Version) -> Result<Packet, DecodeError> {
    let mut r = f.body();
    let packet_id = r.packet_id()?;
    let (filters, user_properties) = match version {
        Version::V311 => {
            let u = mqttbytes::v4::Unsubscribe::read(f.header, f.bytes.clone())
                .map_err(|_| DecodeError::Malformed("invalid UNSUBSCRIBE content"))?;
            (u.topics, Vec::new())
        }
        Version::V5 => {
            let props = prop::parse(&mut r, Context::Unsubscribe, false)?;
            let mut filters = Vec::new();
            while !r.is_empty() {
                filters.push(r.string()?);
            }
            (filters, props.user_properties)
        }
    };
    if filters.is_empty() {
        return Err(DecodeError::Malformed("UNSUBSCRIBE without filters")); // MQTT-3.10.3-2
    }
    for filter in &filters {
        roost_wire::utf8_string(filter.as_bytes())?; // U+0000, which mqttbytes lets through
        // An invalid Shared Subscription filter is simply not subscribed (0x11).
        if !valid_topic_filter(filter) && shared(filter).is_none() {
            return Err(DecodeError::Malformed("invalid topic filter"));
        }
    }
    Ok(Packet::Unsubscribe(Unsubscribe {
        packet_id,
        filters,
        user_properties,
    }))
}

/// Decodes an UNSUBACK (client side): packet id only in 3.1.1; properties and at least one
/// valid reason code in 5.0.
pub(crate) fn decode_unsuback(f: &Frame, version: Version) -> Result<Packet, DecodeError> {
    let mut r = f.body();
    let packet_id = r.packet_id()?;
    let codes = match version {
        Version::V311 => {
            r.finish()?;
            Vec::new()
        }
        Version::V5 => {
            prop::parse(&mut r, Context::UnsubAck, false)?;
            let codes: Vec<ReasonCode> = r.rest().iter().map(|&c| ReasonCode(c)).collect();
            if codes.is_empty() || !codes.iter().all(|c| c.is_valid_v5(UNSUBACK)) {
                return Err(DecodeError::Malformed("invalid UNSUBACK reason codes"));
            }
            codes
        }
    };
    Ok(Packet::UnsubAck(UnsubAck { packet_id, codes }))
}

/// Encodes an UNSUBSCRIBE body.
pub(crate) struct UnsubscribeBody<'a>(pub &'a Unsubscribe, pub Version);

impl Encode for UnsubscribeBody<'_> {
    fn put<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        let u = self.0;
        if u.packet_id == 0 {
            return Err(EncodeError::PacketIdZero);
        }
        s.u16(u.packet_id)?;
        if self.1 == Version::V5 {
            writer::put_props(s, &UserProps(&u.user_properties))?;
        }
        for filter in &u.filters {
            s.string(filter)?;
        }
        Ok(())
    }
}

struct UserProps<'a>(&'a [super::packet::UserProperty]);

impl Encode for UserProps<'_> {
    fn put<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        writer::prop_user(s, self.0)
    }
}

/// Encodes an UNSUBACK body: packet id only in 3.1.1; empty properties and codes in 5.0.
pub(crate) struct UnsubAckBody<'a>(pub &'a UnsubAck, pub Version);

impl Encode for UnsubAckBody<'_> {
    fn put<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        if self.0.packet_id == 0 {
            return Err(EncodeError::PacketIdZero);
        }
        s.u16(self.0.packet_id)?;
        if self.1 == Version::V5 {
            s.u8(0)?; // property length
            for code in &self.0.codes {
                s.u8(code.0)?;
            }
        }
        Ok(())
    }
}
