//! MQTT 5.0 properties: one strict parser shared by every packet.
//!
//! mqttbytes has one extractor per packet that neither keeps a property inside the property
//! length nor rejects duplicates or forbidden zero values, so every v5 packet goes through
//! [`parse`] instead. Identifiers, value types and the reading of each property come from
//! [`roost_wire::property`]; this module adds which properties each packet allows, the value
//! rules, and the owned copies.

use bytes::Bytes;
pub(crate) use roost_wire::property::*;

use super::error::DecodeError;
use super::packet::UserProperty;
use super::reader::Reader;

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
fn flag(v: u8) -> Result<bool, DecodeError> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::Protocol("property value must be 0 or 1")),
    }
}

/// A two-byte property that must not be 0 (receive maximum, topic alias).
fn nonzero_u16(v: u16, what: &'static str) -> Result<u16, DecodeError> {
    match v {
        0 => Err(DecodeError::Protocol(what)),
        v => Ok(v),
    }
}

/// Parses a property length and the properties it covers, for a packet of kind `ctx`.
///
/// - A property length past the end of the packet, an unknown property or one not allowed in
///   `ctx` is malformed, as is a value that runs past the property length.
/// - A repeated property is a protocol error, except User Property, and Subscription
///   Identifier when `repeat_subscription_id` is set (server-to-client PUBLISH).
/// - Receive Maximum 0, Maximum Packet Size 0, Topic Alias 0, Subscription Identifier 0 and
///   flag properties other than 0 or 1 are protocol errors.
pub(crate) fn parse(
    r: &mut Reader<'_>,
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
    let mut block = roost_wire::property::Properties::new(r.take_raw(len)?);
    let mut seen = 0u64;
    while let Some(prop) = block.next_prop()? {
        let id = prop.id();
        if !allowed(id, ctx) {
            return Err(DecodeError::Malformed(
                "property not allowed in this packet",
            ));
        }
        let repeatable =
            id == USER_PROPERTY || (id == SUBSCRIPTION_IDENTIFIER && repeat_subscription_id);
        let bit = 1u64 << id; // every allowed id is below 64
        if seen & bit != 0 && !repeatable {
            return Err(DecodeError::Protocol("property included more than once"));
        }
        seen |= bit;
        match prop {
            Property::Byte(PAYLOAD_FORMAT_INDICATOR, v) => {
                p.payload_format_indicator = Some(flag(v)? as u8);
            }
            Property::Byte(REQUEST_PROBLEM_INFORMATION, v) => {
                p.request_problem_information = Some(flag(v)?);
            }
            Property::Byte(REQUEST_RESPONSE_INFORMATION, v) => {
                p.request_response_information = Some(flag(v)?);
            }
            Property::Byte(MAXIMUM_QOS, v) => p.maximum_qos = Some(flag(v)? as u8),
            Property::Byte(RETAIN_AVAILABLE, v) => p.retain_available = Some(flag(v)?),
            Property::Byte(WILDCARD_SUBSCRIPTION_AVAILABLE, v) => {
                p.wildcard_subscription_available = Some(flag(v)?);
            }
            Property::Byte(SUBSCRIPTION_IDENTIFIER_AVAILABLE, v) => {
                p.subscription_identifiers_available = Some(flag(v)?);
            }
            Property::Byte(SHARED_SUBSCRIPTION_AVAILABLE, v) => {
                p.shared_subscription_available = Some(flag(v)?);
            }
            Property::U16(SERVER_KEEP_ALIVE, v) => p.server_keep_alive = Some(v),
            Property::U16(RECEIVE_MAXIMUM, v) => {
                p.receive_maximum = Some(nonzero_u16(v, "receive maximum 0")?);
            }
            Property::U16(TOPIC_ALIAS_MAXIMUM, v) => p.topic_alias_maximum = Some(v),
            Property::U16(TOPIC_ALIAS, v) => p.topic_alias = Some(nonzero_u16(v, "topic alias 0")?),
            Property::U32(MESSAGE_EXPIRY_INTERVAL, v) => p.message_expiry_interval = Some(v),
            Property::U32(SESSION_EXPIRY_INTERVAL, v) => p.session_expiry_interval = Some(v),
            Property::U32(WILL_DELAY_INTERVAL, v) => p.will_delay_interval = Some(v),
            Property::U32(MAXIMUM_PACKET_SIZE, 0) => {
                return Err(DecodeError::Protocol("maximum packet size 0"));
            }
            Property::U32(MAXIMUM_PACKET_SIZE, v) => p.maximum_packet_size = Some(v),
            Property::VarInt(SUBSCRIPTION_IDENTIFIER, 0) => {
                return Err(DecodeError::Protocol("subscription identifier 0"));
            }
            Property::VarInt(SUBSCRIPTION_IDENTIFIER, v) => p.subscription_identifiers.push(v),
            Property::Str(CONTENT_TYPE, v) => p.content_type = Some(v.to_owned()),
            Property::Str(RESPONSE_TOPIC, v) => p.response_topic = Some(v.to_owned()),
            Property::Str(ASSIGNED_CLIENT_IDENTIFIER, v) => {
                p.assigned_client_identifier = Some(v.to_owned());
            }
            Property::Str(AUTHENTICATION_METHOD, v) => {
                p.authentication_method = Some(v.to_owned());
            }
            Property::Str(RESPONSE_INFORMATION, v) => p.response_information = Some(v.to_owned()),
            Property::Str(SERVER_REFERENCE, v) => p.server_reference = Some(v.to_owned()),
            Property::Str(REASON_STRING, v) => p.reason_string = Some(v.to_owned()),
            Property::Bin(CORRELATION_DATA, v) => p.correlation_data = Some(r.shared(v)),
            Property::Bin(AUTHENTICATION_DATA, v) => p.authentication_data = Some(r.shared(v)),
            Property::Pair(key, value) => {
                p.user_properties.push((key.to_owned(), value.to_owned()));
            }
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
