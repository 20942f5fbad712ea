//! CONNECT: decoded by hand, encoded by hand.
//!
//! mqttbytes is not used here: `v4::read` accepts a level-5 CONNECT (and `v5::read` a level-4
//! one) and misparses it, it checks none of the connect-flag rules, and it rejects binary
//! passwords.

use super::error::{DecodeError, EncodeError};
use super::packet::{Connect, QoS, Version, Will};
use super::properties::{self as prop, Context};
use super::publish::PublishPropsEnc;
use super::reader::Reader;
use super::writer::{self, Encode};
use crate::topic::valid_topic_name;
use roost_wire::Sink;
use roost_wire::connect::{
    BRIDGE, LEVEL_3_1, LEVEL_3_1_1, LEVEL_5, PROTOCOL_NAME, PROTOCOL_NAME_3_1,
};
use roost_wire::flags::{
    CLEAN_START, CONNECT_RESERVED, PASSWORD, USER_NAME, WILL, WILL_QOS_SHIFT, WILL_RETAIN,
};

/// What a CONNECT's protocol name and level say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Protocol {
    /// The wire format that follows (MQTT 3.1 shares 3.1.1's).
    pub(crate) version: Version,
    /// "MQIsdp" level 3: MQTT 3.1.
    pub(crate) mqtt31: bool,
    /// The bridge bit (0x80) was set on level 3 or 4.
    pub(crate) bridge: bool,
}

/// Reads the protocol name and level: "MQTT" with level 4 or 5, or "MQIsdp" with level 3
/// (MQTT 3.1); levels 3 and 4 may carry the bridge bit. Anything else is
/// [`DecodeError::UnsupportedProtocol`] (answered with CONNACK 0x01, MQTT-3.1.2-2).
pub(crate) fn read_protocol(r: &mut Reader<'_>) -> Result<Protocol, DecodeError> {
    let name = r.binary_raw()?;
    let raw = r.u8()?;
    let bridge = raw & BRIDGE != 0;
    let (version, mqtt31) = match (name, raw & !BRIDGE) {
        (n, LEVEL_3_1_1) if n == PROTOCOL_NAME.as_bytes() => (Version::V311, false),
        (n, LEVEL_5) if n == PROTOCOL_NAME.as_bytes() && !bridge => (Version::V5, false),
        (n, LEVEL_3_1) if n == PROTOCOL_NAME_3_1.as_bytes() => (Version::V311, true),
        _ => return Err(DecodeError::UnsupportedProtocol { level: raw }),
    };
    Ok(Protocol {
        version,
        mqtt31,
        bridge,
    })
}

/// Decodes the rest of a CONNECT, after the protocol level.
///
/// MQTT 3.1 is read as mosquitto reads it: its reserved flag is not checked, a password may
/// come without a user name, and a user name or password whose flag is set but that is
/// missing from the end of the packet counts as absent (the 3.1 specification allows it).
pub(crate) fn decode(mut r: Reader<'_>, protocol: Protocol) -> Result<Connect, DecodeError> {
    let version = protocol.version;
    let legacy = protocol.mqtt31;
    let flags = r.u8()?;
    if flags & CONNECT_RESERVED != 0 && !legacy {
        return Err(DecodeError::Malformed("CONNECT reserved flag set")); // MQTT-3.1.2-3
    }
    let will_flag = flags & WILL != 0;
    let will_qos = (flags >> WILL_QOS_SHIFT) & 0b11;
    let will_retain = flags & WILL_RETAIN != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        // MQTT-3.1.2-11, MQTT-3.1.2-13, MQTT-3.1.2-15
        return Err(DecodeError::Malformed(
            "will QoS or retain set without will flag",
        ));
    }
    let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::Malformed("will QoS 3"))?; // MQTT-3.1.2-14
    let has_username = flags & USER_NAME != 0;
    let has_password = flags & PASSWORD != 0;
    if version == Version::V311 && !legacy && has_password && !has_username {
        return Err(DecodeError::Malformed(
            "password flag without user name flag",
        )); // MQTT-3.1.2-22
    }
    let keep_alive = r.u16()?;
    let mut props = match version {
        Version::V5 => prop::parse(&mut r, Context::Connect, false)?,
        Version::V311 => prop::Properties::default(),
    };
    if props.authentication_data.is_some() && props.authentication_method.is_none() {
        return Err(DecodeError::Protocol("authentication data without method"));
    }
    let client_id = r.string()?;
    let will = if will_flag {
        Some(decode_will(&mut r, version, will_qos, will_retain)?)
    } else {
        None
    };
    let present = |r: &Reader<'_>, flag: bool| flag && !(legacy && r.is_empty());
    let username = present(&r, has_username).then(|| r.string()).transpose()?;
    let password = present(&r, has_password).then(|| r.binary()).transpose()?;
    r.finish()?;
    Ok(Connect {
        version,
        client_id,
        clean_start: flags & CLEAN_START != 0,
        keep_alive,
        will,
        username,
        password,
        session_expiry_interval: props.session_expiry_interval.unwrap_or(0),
        receive_maximum: props.receive_maximum.unwrap_or(u16::MAX),
        maximum_packet_size: props.maximum_packet_size,
        topic_alias_maximum: props.topic_alias_maximum.unwrap_or(0),
        request_response_information: props.request_response_information.unwrap_or(false),
        request_problem_information: props.request_problem_information.unwrap_or(true),
        user_properties: std::mem::take(&mut props.user_properties),
        authentication_method: props.authentication_method,
        authentication_data: props.authentication_data,
        mqtt31: protocol.mqtt31,
        bridge: protocol.bridge,
    })
}

/// The will: properties (5.0), topic, payload. The topic must be a valid topic name.
fn decode_will(
    r: &mut Reader<'_>,
    version: Version,
    qos: QoS,
    retain: bool,
) -> Result<Will, DecodeError> {
    let mut props = match version {
        Version::V5 => prop::parse(r, Context::Will, false)?,
        Version::V311 => prop::Properties::default(),
    };
    let topic = r.string()?;
    if !valid_topic_name(&topic) {
        return Err(DecodeError::TopicNameInvalid);
    }
    if let Some(t) = &props.response_topic
        && !valid_topic_name(t)
    {
        return Err(DecodeError::Protocol(
            "response topic is not a valid topic name",
        ));
    }
    let payload = r.binary()?;
    Ok(Will {
        topic,
        payload,
        qos,
        retain,
        delay_interval: props.will_delay_interval.unwrap_or(0),
        properties: props.take_publish(),
    })
}

/// Encodes a CONNECT body (everything after the fixed header).
pub(crate) struct ConnectBody<'a>(pub &'a Connect, pub Version);

impl Encode for ConnectBody<'_> {
    fn put<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        let (c, version) = (self.0, self.1);
        let bridge = if c.bridge { BRIDGE } else { 0 };
        match version {
            Version::V311 if c.mqtt31 => {
                s.string(PROTOCOL_NAME_3_1)?;
                s.u8(LEVEL_3_1 | bridge)?;
            }
            Version::V311 => {
                s.string(PROTOCOL_NAME)?;
                s.u8(LEVEL_3_1_1 | bridge)?;
            }
            Version::V5 => {
                s.string(PROTOCOL_NAME)?;
                s.u8(LEVEL_5)?;
            }
        }
        let mut flags = 0u8;
        if c.clean_start {
            flags |= CLEAN_START;
        }
        if let Some(w) = &c.will {
            flags |= WILL | ((w.qos as u8) << WILL_QOS_SHIFT);
            if w.retain {
                flags |= WILL_RETAIN;
            }
        }
        if c.username.is_some() {
            flags |= USER_NAME;
        }
        if c.password.is_some() {
            flags |= PASSWORD;
        }
        s.u8(flags)?;
        s.u16(c.keep_alive)?;
        if version == Version::V5 {
            writer::put_props(s, &ConnectProps(c))?;
        }
        s.string(&c.client_id)?;
        if let Some(w) = &c.will {
            if version == Version::V5 {
                writer::put_props(s, &WillProps(w))?;
            }
            s.string(&w.topic)?;
            s.binary(&w.payload)?;
        }
        if let Some(u) = &c.username {
            s.string(u)?;
        }
        if let Some(p) = &c.password {
            s.binary(p)?;
        }
        Ok(())
    }
}

/// CONNECT properties; defaults are left out.
struct ConnectProps<'a>(&'a Connect);

impl Encode for ConnectProps<'_> {
    fn put<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        let c = self.0;
        let nonzero = |v: u32| (v != 0).then_some(v);
        writer::prop_u32(
            s,
            prop::SESSION_EXPIRY_INTERVAL,
            nonzero(c.session_expiry_interval),
        )?;
        let receive_maximum = (c.receive_maximum != u16::MAX).then_some(c.receive_maximum);
        writer::prop_u16(s, prop::RECEIVE_MAXIMUM, receive_maximum)?;
        writer::prop_u32(s, prop::MAXIMUM_PACKET_SIZE, c.maximum_packet_size)?;
        let alias_max = (c.topic_alias_maximum != 0).then_some(c.topic_alias_maximum);
        writer::prop_u16(s, prop::TOPIC_ALIAS_MAXIMUM, alias_max)?;
        let response = c.request_response_information.then_some(1);
        writer::prop_u8(s, prop::REQUEST_RESPONSE_INFORMATION, response)?;
        let problem = (!c.request_problem_information).then_some(0);
        writer::prop_u8(s, prop::REQUEST_PROBLEM_INFORMATION, problem)?;
        writer::prop_user(s, &c.user_properties)?;
        let method = c.authentication_method.as_deref();
        writer::prop_str(s, prop::AUTHENTICATION_METHOD, method)?;
        let data = c.authentication_data.as_deref();
        writer::prop_bin(s, prop::AUTHENTICATION_DATA, data)
    }
}

/// Will properties: the delay interval (when not 0) and the message properties.
struct WillProps<'a>(&'a Will);

impl Encode for WillProps<'_> {
    fn put<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        let delay = (self.0.delay_interval != 0).then_some(self.0.delay_interval);
        writer::prop_u32(s, prop::WILL_DELAY_INTERVAL, delay)?;
        PublishPropsEnc {
            props: &self.0.properties,
            topic_alias: None,
            subscription_identifiers: &[],
        }
        .put(s)
    }
}
