//! CONNACK: decoded (client side) and encoded by hand.
//!
//! mqttbytes writes a 5.0 CONNACK without a property length when its properties are `None`;
//! here the 5.0 form always carries the property length.

use super::error::{DecodeError, EncodeError};
use super::frame::Frame;
use super::packet::{ConnAck, ConnAckProperties, Packet, Version};
use super::properties::{self as prop, Context};
use super::writer::{self, Encode};
use roost_wire::flags::SESSION_PRESENT;
use roost_wire::{ReasonCode, Sink};

/// Decodes a CONNACK. Connect acknowledge flags other than bit 0 are malformed
/// (MQTT-3.2.2-1).
pub(crate) fn decode(f: &Frame, version: Version) -> Result<Packet, DecodeError> {
    let mut r = f.body();
    let flags = r.u8()?;
    if flags & !SESSION_PRESENT != 0 {
        return Err(DecodeError::Malformed("CONNACK reserved flags set"));
    }
    let code = r.u8()?;
    let properties = match version {
        Version::V311 => ConnAckProperties::default(),
        Version::V5 => {
            let p = prop::parse(&mut r, Context::ConnAck, false)?;
            ConnAckProperties {
                session_expiry_interval: p.session_expiry_interval,
                receive_maximum: p.receive_maximum,
                maximum_qos: p.maximum_qos,
                retain_available: p.retain_available,
                maximum_packet_size: p.maximum_packet_size,
                assigned_client_identifier: p.assigned_client_identifier,
                topic_alias_maximum: p.topic_alias_maximum,
                reason_string: p.reason_string,
                wildcard_subscription_available: p.wildcard_subscription_available,
                subscription_identifiers_available: p.subscription_identifiers_available,
                shared_subscription_available: p.shared_subscription_available,
                server_keep_alive: p.server_keep_alive,
                response_information: p.response_information,
            }
        }
    };
    r.finish()?;
    Ok(Packet::ConnAck(ConnAck {
        session_present: flags & SESSION_PRESENT != 0,
        code: ReasonCode(code),
        properties,
    }))
}

/// Encodes a CONNACK body; the 5.0 form always has a property length.
pub(crate) struct ConnAckBody<'a>(pub &'a ConnAck, pub Version);

impl Encode for ConnAckBody<'_> {
    fn put<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        s.u8(self.0.session_present as u8)?;
        s.u8(self.0.code.0)?;
        if self.1 == Version::V5 {
            writer::put_props(s, &ConnAckProps(&self.0.properties))?;
        }
        Ok(())
    }
}

struct ConnAckProps<'a>(&'a ConnAckProperties);

impl Encode for ConnAckProps<'_> {
    fn put<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        let p = self.0;
        let flag = |v: Option<bool>| v.map(u8::from);
        writer::prop_u32(s, prop::SESSION_EXPIRY_INTERVAL, p.session_expiry_interval)?;
        writer::prop_u16(s, prop::RECEIVE_MAXIMUM, p.receive_maximum)?;
        writer::prop_u8(s, prop::MAXIMUM_QOS, p.maximum_qos)?;
        writer::prop_u8(s, prop::RETAIN_AVAILABLE, flag(p.retain_available))?;
        writer::prop_u32(s, prop::MAXIMUM_PACKET_SIZE, p.maximum_packet_size)?;
        let assigned = p.assigned_client_identifier.as_deref();
        writer::prop_str(s, prop::ASSIGNED_CLIENT_IDENTIFIER, assigned)?;
        writer::prop_u16(s, prop::TOPIC_ALIAS_MAXIMUM, p.topic_alias_maximum)?;
        writer::prop_str(s, prop::REASON_STRING, p.reason_string.as_deref())?;
        let wildcard = flag(p.wildcard_subscription_available);
        writer::prop_u8(s, prop::WILDCARD_SUBSCRIPTION_AVAILABLE, wildcard)?;
        let sub_ids = flag(p.subscription_identifiers_available);
        writer::prop_u8(s, prop::SUBSCRIPTION_IDENTIFIER_AVAILABLE, sub_ids)?;
        let shared = flag(p.shared_subscription_available);
        writer::prop_u8(s, prop::SHARED_SUBSCRIPTION_AVAILABLE, shared)?;
        writer::prop_u16(s, prop::SERVER_KEEP_ALIVE, p.server_keep_alive)?;
        let response = p.response_information.as_deref();
        writer::prop_str(s, prop::RESPONSE_INFORMATION, response)?;
        Ok(())
    }
}
