//! MQTT 5.0 properties: one strict parser shared by every packet, and the identifiers.
//!
//! mqttbytes has one extractor per packet that neither keeps a property inside the property
//! length nor rejects duplicates or forbidden zero values, so every v5 packet goes through
//! [`parse`] instead.

use bytes::Bytes;

use super::error::DecodeError;
use super::packet::UserProperty;
use super::reader::Reader;

pub(crate) const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
pub(crate) const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
pub(crate) const CONTENT_TYPE: u8 = 0x03;
pub(crate) const RESPONSE_TOPIC: u8 = 0x08;
pub(crate) const CORRELATION_DATA: u8 = 0x09;
pub(crate) const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
pub(crate) const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
pub(crate) const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
pub(crate) const SERVER_KEEP_ALIVE: u8 = 0x13;
pub(crate) const AUTHENTICATION_METHOD: u8 = 0x15;
pub(crate) const AUTHENTICATION_DATA: u8 = 0x16;
pub(crate) const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
pub(crate) const WILL_DELAY_INTERVAL: u8 = 0x18;
pub(crate) const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
pub(crate) const RESPONSE_INFORMATION: u8 = 0x1A;
pub(crate) const SERVER_REFERENCE: u8 = 0x1C;
pub(crate) const REASON_STRING: u8 = 0x1F;
pub(crate) const RECEIVE_MAXIMUM: u8 = 0x21;
pub(crate) const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
pub(crate) const TOPIC_ALIAS: u8 = 0x23;
pub(crate) const MAXIMUM_QOS: u8 = 0x24;
pub(crate) const RETAIN_AVAILABLE: u8 = 0x25;
pub(crate) const USER_PROPERTY: u8 = 0x26;
pub(crate) const MAXIMUM_PACKET_SIZE: u8 = 0x27;
pub(crate) const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
pub(crate) const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
pub(crate) const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

/// Which property set is being parsed: each allows different properties (MQTT 5.0 table 2-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Context {
    Connect,
    Will,
    ConnAck,
    Publish,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    Ack,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

/// True if property `id` may appear in `ctx`.
fn allowed(id: u8, ctx: Context) -> bool {
    use Context::*;
    match id {
        USER_PROPERTY => true,
        PAYLOAD_FORMAT_INDICATOR
        | MESSAGE_EXPIRY_INTERVAL
        | CONTENT_TYPE
        | RESPONSE_TOPIC
        | CORRELATION_DATA => matches!(ctx, Publish | Will),
        SUBSCRIPTION_IDENTIFIER => matches!(ctx, Publish | Subscribe),
        SESSION_EXPIRY_INTERVAL => matches!(ctx, Connect | ConnAck | Disconnect),
        AUTHENTICATION_METHOD | AUTHENTICATION_DATA => matches!(ctx, Connect | ConnAck | Auth),
        REQUEST_PROBLEM_INFORMATION | REQUEST_RESPONSE_INFORMATION => ctx == Connect,
        WILL_DELAY_INTERVAL => ctx == Will,
        ASSIGNED_CLIENT_IDENTIFIER
        | SERVER_KEEP_ALIVE
        | RESPONSE_INFORMATION
        | MAXIMUM_QOS
        | RETAIN_AVAILABLE
        | WILDCARD_SUBSCRIPTION_AVAILABLE
        | SUBSCRIPTION_IDENTIFIER_AVAILABLE
        | SHARED_SUBSCRIPTION_AVAILABLE => ctx == ConnAck,
        SERVER_REFERENCE => matches!(ctx, ConnAck | Disconnect),
        REASON_STRING => !matches!(ctx, Connect | Will | Publish | Subscribe | Unsubscribe),
        RECEIVE_MAXIMUM | TOPIC_ALIAS_MAXIMUM | MAXIMUM_PACKET_SIZE => {
            matches!(ctx, Connect | ConnAck)
        }
        TOPIC_ALIAS => ctx == Publish,
        _ => false,
    }
}

/// Every property any packet can carry; each packet's decoder keeps the ones it models.
#[derive(Debug, Default)]
pub(crate) struct Properties {
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    pub subscription_identifiers: Vec<u32>,
    pub session_expiry_interval: Option<u32>,
    pub assigned_client_identifier: Option<String>,
    pub server_keep_alive: Option<u16>,
    pub authentication_method: Option<String>,
    pub authentication_data: Option<Bytes>,
    pub request_problem_information: Option<bool>,
    pub will_delay_interval: Option<u32>,
    pub request_response_information: Option<bool>,
    pub response_information: Option<String>,
    pub server_reference: Option<String>,
    pub reason_string: Option<String>,
    pub receive_maximum: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    pub topic_alias: Option<u16>,
    pub maximum_qos: Option<u8>,
    pub retain_available: Option<bool>,
    pub user_properties: Vec<UserProperty>,
    pub maximum_packet_size: Option<u32>,
    pub wildcard_subscription_available: Option<bool>,
    pub subscription_identifiers_available: Option<bool>,
    pub shared_subscription_available: Option<bool>,
}

/// A one-byte property that must be 0 or 1 (MQTT 5.0 section 3.1.2.11 and 3.2.2.3).
fn flag(r: &mut Reader) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::Protocol("property value must be 0 or 1")),
    }
}

/// A two-byte property that must not be 0 (receive maximum, topic alias).
fn nonzero_u16(r: &mut Reader, what: &'static str) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::Protocol(what)),
        v => Ok(v),
    }
}

/// Parses a property length and the properties it covers, for a packet of kind `ctx`.
///
/// - A property length past the end of the packet, an unknown property or one not allowed in
///   `ctx` is malformed.
/// - A repeated property is a protocol error, except User Property, and Subscription
///   Identifier when `repeat_subscription_id` is set (server-to-client PUBLISH).
/// - Receive Maximum 0, Maximum Packet Size 0, Topic Alias 0, Subscription Identifier 0 and
///   flag properties other than 0 or 1 are protocol errors.
pub(crate) fn parse(
    r: &mut Reader,
    ctx: Context,
    repeat_subscription_id: bool,
) -> Result<Properties, DecodeError> {
    let len = r.varint()?;
    if len > r.remaining() {
        return Err(DecodeError::Malformed(
            "property length past the end of the packet",
        ));
    }
    let mut p = Properties::default();
    if len == 0 {
        return Ok(p);
    }
    let mut r = Reader::new(r.take(len)?);
    let mut seen = 0u64;
    while !r.is_empty() {
        let id = r.varint()?;
        let id = match u8::try_from(id) {
            Ok(id) if allowed(id, ctx) => id,
            _ => {
                return Err(DecodeError::Malformed(
                    "property not allowed in this packet",
                ));
            }
        };
        let repeatable =
            id == USER_PROPERTY || (id == SUBSCRIPTION_IDENTIFIER && repeat_subscription_id);
        let bit = 1u64 << id;
        if seen & bit != 0 && !repeatable {
            return Err(DecodeError::Protocol("property included more than once"));
        }
        seen |= bit;
        match id {
            PAYLOAD_FORMAT_INDICATOR => p.payload_format_indicator = Some(flag(&mut r)? as u8),
            MESSAGE_EXPIRY_INTERVAL => p.message_expiry_interval = Some(r.u32()?),
            CONTENT_TYPE => p.content_type = Some(r.string()?),
            RESPONSE_TOPIC => p.response_topic = Some(r.string()?),
            CORRELATION_DATA => p.correlation_data = Some(r.binary()?),
            SUBSCRIPTION_IDENTIFIER => match r.varint()? {
                0 => return Err(DecodeError::Protocol("subscription identifier 0")),
                // A varint is at most 268,435,455, which fits a u32.
                v => p.subscription_identifiers.push(v as u32),
            },
            SESSION_EXPIRY_INTERVAL => p.session_expiry_interval = Some(r.u32()?),
            ASSIGNED_CLIENT_IDENTIFIER => p.assigned_client_identifier = Some(r.string()?),
            SERVER_KEEP_ALIVE => p.server_keep_alive = Some(r.u16()?),
            AUTHENTICATION_METHOD => p.authentication_method = Some(r.string()?),
            AUTHENTICATION_DATA => p.authentication_data = Some(r.binary()?),
            REQUEST_PROBLEM_INFORMATION => p.request_problem_information = Some(flag(&mut r)?),
            WILL_DELAY_INTERVAL => p.will_delay_interval = Some(r.u32()?),
            REQUEST_RESPONSE_INFORMATION => p.request_response_information = Some(flag(&mut r)?),
            RESPONSE_INFORMATION => p.response_information = Some(r.string()?),
            SERVER_REFERENCE => p.server_reference = Some(r.string()?),
            REASON_STRING => p.reason_string = Some(r.string()?),
            RECEIVE_MAXIMUM => {
                p.receive_maximum = Some(nonzero_u16(&mut r, "receive maximum 0")?);
            }
            TOPIC_ALIAS_MAXIMUM => p.topic_alias_maximum = Some(r.u16()?),
            TOPIC_ALIAS => p.topic_alias = Some(nonzero_u16(&mut r, "topic alias 0")?),
            MAXIMUM_QOS => p.maximum_qos = Some(flag(&mut r)? as u8),
            RETAIN_AVAILABLE => p.retain_available = Some(flag(&mut r)?),
            USER_PROPERTY => {
                let key = r.string()?;
                let value = r.string()?;
                p.user_properties.push((key, value));
            }
            MAXIMUM_PACKET_SIZE => match r.u32()? {
                0 => return Err(DecodeError::Protocol("maximum packet size 0")),
                v => p.maximum_packet_size = Some(v),
            },
            WILDCARD_SUBSCRIPTION_AVAILABLE => {
                p.wildcard_subscription_available = Some(flag(&mut r)?)
            }
            SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                p.subscription_identifiers_available = Some(flag(&mut r)?)
            }
            SHARED_SUBSCRIPTION_AVAILABLE => p.shared_subscription_available = Some(flag(&mut r)?),
            _ => return Err(DecodeError::Malformed("unknown property")),
        }
    }
    Ok(p)
}

impl Properties {
    /// The application-message properties (PUBLISH and will).
    pub(crate) fn take_publish(&mut self) -> super::packet::PublishProperties {
        super::packet::PublishProperties {
            payload_format_indicator: self.payload_format_indicator,
            message_expiry_interval: self.message_expiry_interval,
            content_type: self.content_type.take(),
            response_topic: self.response_topic.take(),
            correlation_data: self.correlation_data.take(),
            user_properties: std::mem::take(&mut self.user_properties),
        }
    }
}
