//! PUBLISH: the hot path in both directions.
//!
//! 3.1.1 bodies are read by mqttbytes (`v4::Publish::read`) after the fixed-header checks, then
//! the topic is validated. 5.0 bodies are read by hand: mqttbytes' property extractor lets a
//! property run past the property length into the payload and accepts duplicates and zero
//! values, and re-parsing its output would cost a second pass on every message.
//! The payload is a zero-copy slice of the frame in both versions.

use bytes::BytesMut;

use super::decode::Role;
use super::error::{DecodeError, EncodeError};
use super::frame::{Frame, qos};
use super::packet::{Packet, Publish, PublishProperties, QoS, Version};
use super::properties::{self as prop, Context};
use super::writer::{self, Encode};
use crate::topic::valid_topic_name;
use roost_wire::Sink;

/// Decodes a PUBLISH whose fixed-header flags were already checked.
pub(crate) fn decode(f: &Frame, version: Version, role: Role) -> Result<Packet, DecodeError> {
    match version {
        Version::V311 => decode_v4(f),
        Version::V5 => decode_v5(f, role),
    }
    .map(Packet::Publish)
}

fn decode_v4(f: &Frame) -> Result<Publish, DecodeError> {
    let p = mqttbytes::v4::Publish::read(f.header, f.bytes.clone()).map_err(|e| match e {
        mqttbytes::Error::PacketIdZero => DecodeError::Malformed("packet identifier 0"),
        mqttbytes::Error::TopicNotUtf8 => DecodeError::Malformed("string is not valid UTF-8"),
        _ => DecodeError::Malformed("PUBLISH shorter than its content"),
    })?;
    if p.topic.as_bytes().contains(&0) {
        // mqttbytes checks UTF-8 but not U+0000 (MQTT-1.5.4-2).
        return Err(roost_wire::DecodeError::NullCharacter.into());
    }
    check_topic(&p.topic, false)?;
    Ok(Publish {
        dup: p.dup,
        qos: qos(p.qos),
        retain: p.retain,
        topic: p.topic,
        packet_id: p.pkid,
        payload: p.payload,
        properties: PublishProperties::default(),
        topic_alias: None,
        subscription_identifiers: Vec::new(),
    })
}

fn decode_v5(f: &Frame, role: Role) -> Result<Publish, DecodeError> {
    let qos = QoS::from_publish_byte(f.byte1).ok_or(roost_wire::DecodeError::InvalidQoS)?;
    let mut r = f.body();
    let raw_topic = r.binary_raw()?;
    let packet_id = match qos {
        QoS::AtMostOnce => 0,
        _ => r.packet_id()?, // MQTT-2.2.1-3
    };
    // A client may not send subscription identifiers; a server may send several.
    let mut props = prop::parse(&mut r, Context::Publish, role == Role::Client)?;
    if role == Role::Server && !props.subscription_identifiers.is_empty() {
        return Err(DecodeError::Protocol(
            "subscription identifier from a client",
        )); // MQTT-3.3.4-6
    }
    let topic = roost_wire::utf8_string(raw_topic)?;
    check_topic(topic, props.topic_alias.is_some())?;
    if let Some(t) = &props.response_topic
        && !valid_topic_name(t)
    {
        return Err(DecodeError::Protocol(
            "response topic is not a valid topic name",
        ));
    }
    Ok(Publish {
        dup: f.byte1 & roost_wire::flags::DUP != 0,
        qos,
        retain: f.byte1 & roost_wire::flags::RETAIN != 0,
        topic: topic.to_owned(),
        packet_id,
        payload: r.rest(),
        topic_alias: props.topic_alias,
        subscription_identifiers: std::mem::take(&mut props.subscription_identifiers),
        properties: props.take_publish(),
    })
}

/// A topic name must be valid (no wildcards, MQTT-3.3.2-2); it may be empty only in 5.0 with a
/// topic alias.
fn check_topic(topic: &str, has_alias: bool) -> Result<(), DecodeError> {
    match (topic.is_empty(), has_alias) {
        (true, true) => Ok(()),
        // MQTT 5.0 3.3.2.1: no topic name and no alias is a protocol error (0x82).
        (true, false) => Err(DecodeError::Protocol(
            "empty topic name without a topic alias",
        )),
        _ if valid_topic_name(topic) => Ok(()),
        _ => Err(DecodeError::TopicNameInvalid),
    }
}

/// A borrowed PUBLISH for the fan-out hot path: the broker encodes one shared message for many
/// subscribers without cloning its topic or properties.
#[derive(Debug, Clone, Copy)]
pub struct PublishView<'a> {
    /// DUP flag.
    pub dup: bool,
    /// QoS level.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic name (empty with a topic alias in 5.0).
    pub topic: &'a str,
    /// Packet identifier; ignored for QoS 0, must not be 0 otherwise.
    pub packet_id: u16,
    /// Application payload.
    pub payload: &'a [u8],
    /// Message properties (5.0 only).
    pub properties: &'a PublishProperties,
    /// Topic alias (5.0 only).
    pub topic_alias: Option<u16>,
    /// Subscription identifiers (5.0 only, server to client).
    pub subscription_identifiers: &'a [u32],
}

impl<'a> From<&'a Publish> for PublishView<'a> {
    fn from(p: &'a Publish) -> PublishView<'a> {
        PublishView {
            dup: p.dup,
            qos: p.qos,
            retain: p.retain,
            topic: &p.topic,
            packet_id: p.packet_id,
            payload: &p.payload,
            properties: &p.properties,
            topic_alias: p.topic_alias,
            subscription_identifiers: &p.subscription_identifiers,
        }
    }
}

/// The body of a PUBLISH in one version.
struct PublishBody<'a, 'b>(&'b PublishView<'a>, Version);

impl Encode for PublishBody<'_, '_> {
    fn put<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        let p = self.0;
        s.string(p.topic)?;
        if p.qos != QoS::AtMostOnce {
            s.u16(p.packet_id)?;
        }
        if self.1 == Version::V5 {
            let props = PublishPropsEnc {
                props: p.properties,
                topic_alias: p.topic_alias,
                subscription_identifiers: p.subscription_identifiers,
            };
            writer::put_props(s, &props)?;
        }
        s.put(p.payload)?;
        Ok(())
    }
}

/// Message properties of a PUBLISH or a will, plus the PUBLISH-only ones.
pub(crate) struct PublishPropsEnc<'a> {
    pub props: &'a PublishProperties,
    pub topic_alias: Option<u16>,
    pub subscription_identifiers: &'a [u32],
}

impl Encode for PublishPropsEnc<'_> {
    fn put<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        let p = self.props;
        writer::prop_u8(
            s,
            prop::PAYLOAD_FORMAT_INDICATOR,
            p.payload_format_indicator,
        )?;
        writer::prop_u32(s, prop::MESSAGE_EXPIRY_INTERVAL, p.message_expiry_interval)?;
        writer::prop_str(s, prop::CONTENT_TYPE, p.content_type.as_deref())?;
        writer::prop_str(s, prop::RESPONSE_TOPIC, p.response_topic.as_deref())?;
        writer::prop_bin(s, prop::CORRELATION_DATA, p.correlation_data.as_deref())?;
        writer::prop_u16(s, prop::TOPIC_ALIAS, self.topic_alias)?;
        for &id in self.subscription_identifiers {
            s.u8(prop::SUBSCRIPTION_IDENTIFIER)?;
            s.varint(id)?;
        }
        writer::prop_user(s, &p.user_properties)
    }
}

fn first_byte(p: &PublishView<'_>) -> Result<u8, EncodeError> {
    if p.qos != QoS::AtMostOnce && p.packet_id == 0 {
        return Err(EncodeError::PacketIdZero);
    }
    Ok(roost_wire::publish_first_byte(p.dup, p.qos, p.retain))
}

/// Appends the encoding of a borrowed PUBLISH for `version` to `buf`, directly (no temporary
/// buffer). Fields that do not exist in 3.1.1 are dropped. Nothing is appended on error:
/// packet id 0 with QoS > 0 ([`EncodeError::PacketIdZero`]), a string over 65535 bytes, or a
/// packet larger than `max_size` ([`EncodeError::TooLarge`], MQTT-3.1.2-24).
/// Returns the number of bytes appended.
pub fn encode_publish(
    p: &PublishView<'_>,
    version: Version,
    max_size: Option<u32>,
    buf: &mut BytesMut,
) -> Result<usize, EncodeError> {
    writer::emit(first_byte(p)?, &PublishBody(p, version), max_size, buf)
}

/// The size in bytes of the whole encoded PUBLISH (fixed header included), without encoding
/// it; fails as [`encode_publish`] would (except for `max_size`).
pub fn publish_len(p: &PublishView<'_>, version: Version) -> Result<usize, EncodeError> {
    first_byte(p)?;
    let remaining = writer::measure(&PublishBody(p, version))?;
    writer::packet_len(remaining)
}
