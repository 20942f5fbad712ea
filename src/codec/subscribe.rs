//! SUBSCRIBE and SUBACK.
//!
//! SUBSCRIBE bodies are read by mqttbytes (`v4::Subscribe::read`, `v5::Subscribe::read`),
//! wrapped with what it does not check: packet id 0, an empty filter list, invalid filters,
//! U+0000, reserved subscription-option bits, and (5.0) the properties, which go through our
//! parser first so mqttbytes only ever sees a well-formed property block.

use super::error::{DecodeError, EncodeError};
use super::frame::{Frame, qos};
use super::packet::{Packet, RetainHandling, SubAck, Subscribe, SubscribeFilter, Version};
use super::properties::{self as prop, Context};
use super::writer::{self, Encode};
use crate::topic::{shared, valid_topic_filter};
use roost_wire::flags::{
    NO_LOCAL, RETAIN_AS_PUBLISHED, RETAIN_HANDLING_SHIFT, SUBSCRIPTION_RESERVED_V5,
    SUBSCRIPTION_RESERVED_V311,
};
use roost_wire::packet_type::SUBACK;
use roost_wire::{ReasonCode, Sink};

fn malformed(_: mqttbytes::Error) -> DecodeError {
    DecodeError::Malformed("invalid SUBSCRIBE content")
}

/// Decodes a SUBSCRIBE whose fixed-header flags were already checked.
pub(crate) fn decode(f: &Frame, version: Version) -> Result<Packet, DecodeError> {
    let mut r = f.body();
    let packet_id = r.packet_id()?; // MQTT-2.2.1-3
    let mut props = match version {
        Version::V5 => prop::parse(&mut r, Context::Subscribe, false)?,
        Version::V311 => prop::Properties::default(),
    };
    let payload_start = f.bytes.len() - r.remaining();
    let filters: Vec<SubscribeFilter> = match version {
        Version::V311 => mqttbytes::v4::Subscribe::read(f.header, f.bytes.clone())
            .map_err(malformed)?
            .filters
            .into_iter()
            .map(|sf| SubscribeFilter {
                filter: sf.path,
                qos: qos(sf.qos),
                no_local: false,
                retain_as_published: false,
                retain_handling: RetainHandling::OnSubscribe,
            })
            .collect(),
        Version::V5 => mqttbytes::v5::Subscribe::read(f.header, f.bytes.clone())
            .map_err(malformed)?
            .filters
            .into_iter()
            .map(|sf| SubscribeFilter {
                filter: sf.path,
                qos: qos(sf.qos),
                no_local: sf.nolocal,
                retain_as_published: sf.preserve_retain,
                retain_handling: match sf.retain_forward_rule {
                    mqttbytes::v5::RetainForwardRule::OnEverySubscribe => {
                        RetainHandling::OnSubscribe
                    }
                    mqttbytes::v5::RetainForwardRule::OnNewSubscribe => {
                        RetainHandling::OnNewSubscribe
                    }
                    mqttbytes::v5::RetainForwardRule::Never => RetainHandling::Never,
                },
            })
            .collect(),
    };
    if filters.is_empty() {
        return Err(DecodeError::Malformed("SUBSCRIBE without filters")); // MQTT-3.8.3-3
    }
    check_options(f, payload_start, &filters, version)?;
    for sf in &filters {
        // A Shared Subscription with an invalid ShareName or filter is refused in SUBACK
        // (0x8F), not as a malformed packet.
        if !valid_topic_filter(&sf.filter) && shared(&sf.filter).is_none() {
            return Err(DecodeError::Malformed("invalid topic filter")); // MQTT-4.7.1-2/3
        }
        if sf.no_local && sf.filter.starts_with("$share/") {
            return Err(DecodeError::Protocol("no local on a shared subscription")); // MQTT-3.8.3-4
        }
    }
    Ok(Packet::Subscribe(Subscribe {
        packet_id,
        filters,
        subscription_identifier: props.subscription_identifiers.first().copied(),
        user_properties: std::mem::take(&mut props.user_properties),
    }))
}

/// Walks the raw option byte after each filter: reserved bits must be 0 (3.1.1: the upper six,
/// MQTT-3-8.3-4; 5.0: bits 6-7, MQTT-3.8.3-5), QoS 3 and retain handling 3 are malformed.
fn check_options(
    f: &Frame,
    mut at: usize,
    filters: &[SubscribeFilter],
    version: Version,
) -> Result<(), DecodeError> {
    let reserved = match version {
        Version::V311 => SUBSCRIPTION_RESERVED_V311,
        Version::V5 => SUBSCRIPTION_RESERVED_V5,
    };
    for sf in filters {
        at += 2 + sf.filter.len();
        let options = *f
            .bytes
            .get(at)
            .ok_or(DecodeError::Malformed("missing subscription options"))?;
        at += 1;
        if options & reserved != 0 {
            return Err(DecodeError::Malformed(
                "reserved subscription option bits set",
            ));
        }
        if options & 0b11 == 3 || (options >> RETAIN_HANDLING_SHIFT) & 0b11 == 3 {
            return Err(DecodeError::Malformed("QoS 3 or retain handling 3"));
        }
    }
    Ok(())
}

/// Decodes a SUBACK (client side): at least one code, each a valid one for the version.
pub(crate) fn decode_suback(f: &Frame, version: Version) -> Result<Packet, DecodeError> {
    let mut r = f.body();
    let packet_id = r.packet_id()?;
    if version == Version::V5 {
        prop::parse(&mut r, Context::SubAck, false)?;
    }
    let codes: Vec<ReasonCode> = r.rest().iter().map(|&c| ReasonCode(c)).collect();
    if codes.is_empty() {
        return Err(DecodeError::Malformed("SUBACK without return codes"));
    }
    let valid = |c: &ReasonCode| match version {
        Version::V311 => c.is_valid_v311_suback(),
        Version::V5 => c.is_valid_v5(SUBACK),
    };
    if !codes.iter().all(valid) {
        return Err(DecodeError::Malformed("invalid SUBACK return code"));
    }
    Ok(Packet::SubAck(SubAck { packet_id, codes }))
}

/// Encodes a SUBSCRIBE body.
pub(crate) struct SubscribeBody<'a>(pub &'a Subscribe, pub Version);

impl Encode for SubscribeBody<'_> {
    fn put<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        let sub = self.0;
        if sub.packet_id == 0 {
            return Err(EncodeError::PacketIdZero);
        }
        s.u16(sub.packet_id)?;
        if self.1 == Version::V5 {
            writer::put_props(s, &SubscribeProps(sub))?;
        }
        for sf in &sub.filters {
            s.string(&sf.filter)?;
            let mut options = sf.qos as u8;
            if self.1 == Version::V5 {
                if sf.no_local {
                    options |= NO_LOCAL;
                }
                if sf.retain_as_published {
                    options |= RETAIN_AS_PUBLISHED;
                }
                options |= (sf.retain_handling as u8) << RETAIN_HANDLING_SHIFT;
            }
            s.u8(options)?;
        }
        Ok(())
    }
}

struct SubscribeProps<'a>(&'a Subscribe);

impl Encode for SubscribeProps<'_> {
    fn put<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        if let Some(id) = self.0.subscription_identifier {
            s.u8(prop::SUBSCRIPTION_IDENTIFIER)?;
            s.varint(id)?;
        }
        writer::prop_user(s, &self.0.user_properties)
    }
}

/// Encodes a SUBACK body: codes as given, with an empty property block in 5.0.
pub(crate) struct SubAckBody<'a>(pub &'a SubAck, pub Version);

impl Encode for SubAckBody<'_> {
    fn put<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        if self.0.packet_id == 0 {
            return Err(EncodeError::PacketIdZero);
        }
        s.u16(self.0.packet_id)?;
        if self.1 == Version::V5 {
            s.u8(0)?; // property length
        }
        for code in &self.0.codes {
            s.u8(code.0)?;
        }
        Ok(())
    }
}
