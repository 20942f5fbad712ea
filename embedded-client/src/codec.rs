//! The packets the client sends and receives, on top of `roost_wire`: encoders write into
//! caller buffers, decoders borrow from them.
//!
//! Nothing here allocates or panics. Encoders report [`Error::BufferTooSmall`] (and
//! [`Error::InvalidArgument`] for fields MQTT cannot carry); decoders report the wire error,
//! which the client treats as [`Error::Protocol`] (see [`protocol`]).

#[cfg(feature = "v5")]
use roost_wire::Writer;
use roost_wire::connect::{LEVEL_3_1_1, LEVEL_5, PROTOCOL_NAME};
use roost_wire::flags::{CLEAN_START, PASSWORD, USER_NAME, WILL, WILL_QOS_SHIFT, WILL_RETAIN};
pub(crate) use roost_wire::packet_type::{
    CONNACK, CONNECT, DISCONNECT, PINGREQ, PINGRESP, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL,
    SUBACK, SUBSCRIBE, UNSUBACK, UNSUBSCRIBE,
};
#[cfg(feature = "v5")]
use roost_wire::property::{
    CONTENT_TYPE, CORRELATION_DATA, MAXIMUM_PACKET_SIZE, MAXIMUM_QOS, MESSAGE_EXPIRY_INTERVAL,
    PAYLOAD_FORMAT_INDICATOR, Properties, Property, RECEIVE_MAXIMUM, RESPONSE_TOPIC,
    SERVER_KEEP_ALIVE, SESSION_EXPIRY_INTERVAL, SUBSCRIPTION_IDENTIFIER, TOPIC_ALIAS,
    TOPIC_ALIAS_MAXIMUM, USER_PROPERTY,
};
use roost_wire::{
    DecodeError, EncodeError, Reader, Sink, check_flags, encode_packet, first_byte,
    publish_first_byte,
};

use crate::{Error, QoS};

/// The client's error for malformed or unexpected input from the server.
#[inline]
pub(crate) fn protocol(_: DecodeError) -> Error {
    Error::Protocol
}

/// The client's error for a packet that cannot be encoded: too big for the transmit buffer,
/// or a field MQTT cannot carry (a string over 64 KiB).
#[inline]
pub(crate) fn encoding(e: EncodeError) -> Error {
    match e {
        EncodeError::BufferTooSmall => Error::BufferTooSmall,
        EncodeError::PacketTooLarge => Error::PacketTooLarge,
        EncodeError::TooLong | EncodeError::ValueTooLarge => Error::InvalidArgument,
    }
}

/// The highest QoS this build handles.
pub(crate) const MAX_QOS: u8 = if cfg!(feature = "qos2") { 2 } else { 1 };

/// Options for the CONNECT packet, gathered by the client.
pub(crate) struct ConnectFields<'a> {
    pub(crate) v5: bool,
    pub(crate) client_id: &'a str,
    pub(crate) keep_alive: u16,
    pub(crate) clean: bool,
    pub(crate) will: Option<&'a crate::Will<'a>>,
    pub(crate) username: Option<&'a str>,
    pub(crate) password: Option<&'a [u8]>,
    #[cfg(feature = "v5")]
    pub(crate) session_expiry: u32,
    #[cfg(feature = "v5")]
    pub(crate) receive_max: u16,
    #[cfg(feature = "v5")]
    pub(crate) max_packet: u32,
    #[cfg(feature = "v5")]
    pub(crate) user_properties: &'a [(&'a str, &'a str)],
    /// Topic Alias Maximum the client accepts (0 = none, not sent).
    #[cfg(feature = "v5")]
    pub(crate) topic_alias_max: u16,
}

/// Writes a v5 property block: its length (a variable byte integer), then what `body`
/// writes. `body` runs twice (to count, then to write), so it must write the same bytes.
#[cfg(feature = "v5")]
fn property_block(
    w: &mut Writer<'_>,
    body: impl Fn(&mut Writer<'_>) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let mut counter = Writer::counter();
    body(&mut counter)?;
    let len = u32::try_from(counter.position()).map_err(|_| EncodeError::ValueTooLarge)?;
    w.varint(len)?;
    body(w)
}

/// User properties (MQTT 5.0 section 3.1.2.11.8 and others): name/value string pairs.
#[cfg(feature = "v5")]
fn user_properties(w: &mut Writer<'_>, pairs: &[(&str, &str)]) -> Result<(), EncodeError> {
    for (k, v) in pairs {
        w.u8(USER_PROPERTY)?;
        w.string(k)?;
        w.string(v)?;
    }
    Ok(())
}

/// `true` if `s` contains U+0000, which no MQTT string may carry (MQTT-1.5.4-2).
fn has_nul(s: &str) -> bool {
    s.bytes().any(|b| b == 0)
}

/// Checks user properties for what MQTT cannot carry.
#[cfg(feature = "v5")]
pub(crate) fn check_pairs(pairs: &[(&str, &str)]) -> Result<(), Error> {
    if pairs.iter().any(|(k, v)| has_nul(k) || has_nul(v)) {
        return Err(Error::InvalidArgument);
    }
    Ok(())
}

pub(crate) fn connect(buf: &mut [u8], c: &ConnectFields<'_>) -> Result<usize, Error> {
    if c.password.is_some() && c.username.is_none() && !c.v5 {
        // MQTT 3.1.1 forbids a password without a user name (3.1.1 MQTT-3.1.2-22).
        return Err(Error::InvalidArgument);
    }
    // MQTT-1.5.4-2; a will topic is a topic name (MQTT-3.1.3-11, MQTT-4.7.3-1).
    if has_nul(c.client_id)
        || c.username.is_some_and(has_nul)
        || c.will
            .is_some_and(|w| has_nul(w.topic) || w.topic.is_empty() || w.topic.contains(['+', '#']))
    {
        return Err(Error::InvalidArgument);
    }
    #[cfg(feature = "v5")]
    check_pairs(c.user_properties)?;
    encode_packet(buf, first_byte(CONNECT), |w| {
        w.string(PROTOCOL_NAME)?;
        w.u8(if c.v5 { LEVEL_5 } else { LEVEL_3_1_1 })?;
        let mut flags = if c.clean { CLEAN_START } else { 0 };
        if let Some(will) = c.will {
            flags |= WILL | (will.qos as u8) << WILL_QOS_SHIFT;
            if will.retain {
                flags |= WILL_RETAIN;
            }
        }
        if c.password.is_some() {
            flags |= PASSWORD;
        }
        if c.username.is_some() {
            flags |= USER_NAME;
        }
        w.u8(flags)?;
        w.u16(c.keep_alive)?;
        #[cfg(feature = "v5")]
        if c.v5 {
            property_block(w, |w| {
                if c.session_expiry != 0 {
                    w.u8(SESSION_EXPIRY_INTERVAL)?;
                    w.u32(c.session_expiry)?;
                }
                w.u8(RECEIVE_MAXIMUM)?;
                w.u16(c.receive_max)?;
                w.u8(MAXIMUM_PACKET_SIZE)?;
                w.u32(c.max_packet)?;
                if c.topic_alias_max != 0 {
                    w.u8(TOPIC_ALIAS_MAXIMUM)?;
                    w.u16(c.topic_alias_max)?;
                }
                user_properties(w, c.user_properties)
            })?;
        }
        w.string(c.client_id)?;
        if let Some(will) = c.will {
            #[cfg(feature = "v5")]
            if c.v5 {
                w.u8(0)?; // no will properties
            }
            w.string(will.topic)?;
            w.binary(will.payload)?;
        }
        if let Some(u) = c.username {
            w.string(u)?;
        }
        if let Some(p) = c.password {
            w.binary(p)?;
        }
        Ok(())
    })
    .map_err(encoding)
}

/// What a PUBLISH carries besides topic, payload and flags (v5 only).
#[cfg(feature = "v5")]
#[derive(Clone, Copy)]
pub(crate) struct PublishExtra<'a> {
    pub(crate) props: &'a crate::PublishProperties<'a>,
    /// Topic alias to send (0 = none).
    pub(crate) alias: u16,
}

/// Encodes a PUBLISH. `pid` is ignored for QoS 0. With v5, `extra` adds the message
/// properties and a topic alias; `topic` may then be empty (an alias already set up on this
/// connection, MQTT 5.0 section 3.3.2.3.4).
#[allow(clippy::too_many_arguments)]
pub(crate) fn publish(
    buf: &mut [u8],
    v5: bool,
    topic: &str,
    payload: &[u8],
    qos: QoS,
    retain: bool,
    pid: u16,
    #[cfg(feature = "v5")] extra: Option<PublishExtra<'_>>,
) -> Result<usize, Error> {
    #[cfg(feature = "v5")]
    let aliased = matches!(extra, Some(e) if e.alias != 0);
    #[cfg(not(feature = "v5"))]
    let aliased = false;
    // MQTT-4.7.3-1 (unless a topic alias stands for it), MQTT-3.3.2-2, MQTT-1.5.4-2.
    if (topic.is_empty() && !aliased) || topic.contains(['+', '#']) || has_nul(topic) {
        return Err(Error::InvalidArgument);
    }
    #[cfg(feature = "v5")]
    if let Some(e) = extra {
        e.props.check()?;
    }
    let _ = v5;
    encode_packet(buf, publish_first_byte(false, qos, retain), |w| {
        w.string(topic)?;
        if qos != QoS::AtMostOnce {
            w.u16(pid)?;
        }
        #[cfg(feature = "v5")]
        if v5 {
            match extra {
                None => w.u8(0)?, // no properties
                Some(e) => property_block(w, |w| {
                    let p = e.props;
                    if p.payload_utf8 {
                        w.u8(PAYLOAD_FORMAT_INDICATOR)?;
                        w.u8(1)?;
                    }
                    if let Some(secs) = p.message_expiry_secs {
                        w.u8(MESSAGE_EXPIRY_INTERVAL)?;
                        w.u32(secs)?;
                    }
                    if e.alias != 0 {
                        w.u8(TOPIC_ALIAS)?;
                        w.u16(e.alias)?;
                    }
                    if let Some(t) = p.response_topic {
                        w.u8(RESPONSE_TOPIC)?;
                        w.string(t)?;
                    }
                    if let Some(d) = p.correlation_data {
                        w.u8(CORRELATION_DATA)?;
                        w.binary(d)?;
                    }
                    user_properties(w, p.user_properties)?;
                    if let Some(t) = p.content_type {
                        w.u8(CONTENT_TYPE)?;
                        w.string(t)?;
                    }
                    Ok(())
                })?,
            }
        }
        w.put(payload)
    })
    .map_err(encoding)
}

/// Encodes PUBACK/PUBREC/PUBREL/PUBCOMP. `reason` is only sent for v5 when non-zero.
pub(crate) fn ack(buf: &mut [u8], kind: u8, pid: u16, reason: u8) -> Result<usize, Error> {
    let first = first_byte(kind);
    let [hi, lo] = pid.to_be_bytes();
    let (pkt, n): ([u8; 5], usize) = if reason == 0 {
        ([first, 2, hi, lo, 0], 4)
    } else {
        ([first, 3, hi, lo, reason], 5)
    };
    let dst = buf.get_mut(..n).ok_or(Error::BufferTooSmall)?;
    dst.copy_from_slice(&pkt[..n]);
    Ok(n)
}

/// Copies a packet without content (PINGREQ, DISCONNECT) into `buf`.
pub(crate) fn short(buf: &mut [u8], kind: u8) -> Result<usize, Error> {
    let dst = buf.get_mut(..2).ok_or(Error::BufferTooSmall)?;
    dst.copy_from_slice(&[first_byte(kind), 0]);
    Ok(2)
}

pub(crate) fn subscribe(
    buf: &mut [u8],
    v5: bool,
    pid: u16,
    subs: &[crate::Subscription<'_>],
    #[cfg(feature = "v5")] props: &crate::SubscribeProperties<'_>,
) -> Result<usize, Error> {
    // MQTT-4.7.3-1, MQTT-1.5.4-2.
    if subs.is_empty()
        || subs
            .iter()
            .any(|s| s.qos as u8 > MAX_QOS || s.filter.is_empty() || has_nul(s.filter))
    {
        return Err(Error::InvalidArgument);
    }
    #[cfg(feature = "v5")]
    {
        // MQTT 5.0 section 3.8.2.1.2: 1 to 268,435,455; retain handling 3 is a protocol error.
        if matches!(props.subscription_id, Some(id) if id == 0 || id > roost_wire::varint::MAX)
            || subs.iter().any(|s| s.retain_handling > 2)
        {
            return Err(Error::InvalidArgument);
        }
        check_pairs(props.user_properties)?;
    }
    encode_packet(buf, first_byte(SUBSCRIBE), |w| {
        w.u16(pid)?;
        #[cfg(feature = "v5")]
        if v5 {
            property_block(w, |w| {
                if let Some(id) = props.subscription_id {
                    w.u8(SUBSCRIPTION_IDENTIFIER)?;
                    w.varint(id)?;
                }
                user_properties(w, props.user_properties)
            })?;
        }
        for s in subs {
            w.string(s.filter)?;
            w.u8(s.options(v5))?;
        }
        Ok(())
    })
    .map_err(encoding)
}

pub(crate) fn unsubscribe(
    buf: &mut [u8],
    v5: bool,
    pid: u16,
    filters: &[&str],
) -> Result<usize, Error> {
    if filters.is_empty() || filters.iter().any(|f| f.is_empty() || has_nul(f)) {
        return Err(Error::InvalidArgument);
    }
    let _ = v5;
    encode_packet(buf, first_byte(UNSUBSCRIBE), |w| {
        w.u16(pid)?;
        #[cfg(feature = "v5")]
        if v5 {
            w.u8(0)?; // no properties
        }
        for f in filters {
            w.string(f)?;
        }
        Ok(())
    })
    .map_err(encoding)
}

/// A decoded inbound packet, reduced to what the state machine needs (no borrows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inbound {
    ConnAck {
        session_present: bool,
        code: u8,
        #[cfg(feature = "v5")]
        limits: ServerLimits,
    },
    Publish {
        qos: u8,
        pid: u16,
    },
    /// PUBACK, PUBREC, PUBREL or PUBCOMP.
    Ack {
        kind: u8,
        pid: u16,
        reason: u8,
    },
    SubAck {
        pid: u16,
    },
    UnsubAck {
        pid: u16,
    },
    PingResp,
    Disconnect {
        reason: u8,
    },
}

/// Limits a v5 server announces in CONNACK.
#[cfg(feature = "v5")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ServerLimits {
    pub(crate) receive_max: u16,
    pub(crate) max_packet: u32,
    pub(crate) keep_alive: Option<u16>,
    pub(crate) max_qos: u8,
    /// The highest topic alias the client may send (0 = none, MQTT-3.3.2-8).
    pub(crate) topic_alias_max: u16,
}

/// A received PUBLISH, borrowing from the receive buffer.
pub(crate) struct PublishView<'a> {
    pub(crate) qos: QoS,
    pub(crate) topic: &'a str,
    pub(crate) pid: u16,
    #[cfg(feature = "v5")]
    pub(crate) props: &'a [u8],
    /// Topic Alias (0 = none); the topic is empty when the alias stands for it.
    #[cfg(feature = "v5")]
    pub(crate) alias: u16,
    pub(crate) payload: &'a [u8],
}

/// Decodes the body of a PUBLISH whose first byte is `first` (flags already checked by
/// [`decode`] or [`check_flags`]).
pub(crate) fn decode_publish(
    first: u8,
    body: &[u8],
    v5: bool,
) -> Result<PublishView<'_>, DecodeError> {
    let qos = match QoS::from_publish_byte(first) {
        Some(q) if q as u8 <= MAX_QOS => q,
        _ => return Err(DecodeError::InvalidQoS),
    };
    let mut r = Reader::new(body);
    let topic = r.string()?;
    let pid = if qos != QoS::AtMostOnce {
        r.packet_id()?
    } else {
        0
    };
    #[cfg(feature = "v5")]
    let props = if v5 { r.properties()? } else { &[] };
    let _ = v5;
    // The Topic Alias, if any; the properties must all be well formed.
    #[cfg(feature = "v5")]
    let alias = {
        let mut alias = 0;
        let mut it = Properties::new(props);
        let mut seen = 0;
        while let Some(p) = it.next_prop()? {
            once(&mut seen, p.id())?;
            match p {
                // MQTT 5.0 section 3.3.2.3.4: 0 is not a valid alias.
                Property::U16(TOPIC_ALIAS, 0) => return Err(DecodeError::InvalidTopicName),
                Property::U16(TOPIC_ALIAS, a) => alias = a,
                // Section 3.3.2.3.8: a Subscription Identifier of 0 is a protocol error.
                Property::VarInt(SUBSCRIPTION_IDENTIFIER, 0) => return Err(INVALID_PROPERTY),
                _ => {}
            }
        }
        alias
    };
    #[cfg(not(feature = "v5"))]
    let alias = 0u16;
    if topic.is_empty() && alias == 0 {
        // An empty topic is only valid with a topic alias (MQTT-4.7.3-1).
        return Err(DecodeError::InvalidTopicName);
    }
    let _ = alias;
    Ok(PublishView {
        qos,
        topic,
        pid,
        #[cfg(feature = "v5")]
        props,
        #[cfg(feature = "v5")]
        alias,
        payload: r.rest(),
    })
}

/// Decodes the fixed-size parts of any packet a client may receive: checks the fixed-header
/// flags, the packet type for this direction and version, and the content.
pub(crate) fn decode(first: u8, body: &[u8], v5: bool) -> Result<Inbound, DecodeError> {
    check_flags(first)?;
    let kind = first >> 4;
    let mut r = Reader::new(body);
    let pk = match kind {
        CONNACK => {
            let session_present = match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(DecodeError::ReservedFlags), // MQTT-3.2.2-1
            };
            let code = r.u8()?;
            #[cfg(feature = "v5")]
            let mut limits = ServerLimits {
                receive_max: u16::MAX,
                max_packet: u32::MAX,
                keep_alive: None,
                max_qos: 2,
                topic_alias_max: 0,
            };
            #[cfg(feature = "v5")]
            if v5 && !r.is_empty() {
                let mut props = Properties::new(r.properties()?);
                let mut seen = 0;
                while let Some(p) = props.next_prop()? {
                    once(&mut seen, p.id())?;
                    // MQTT 5.0 section 3.2.2.3: Receive Maximum and Maximum Packet Size 0, a
                    // Maximum QoS other than 0 or 1 are protocol errors.
                    match p {
                        Property::U16(RECEIVE_MAXIMUM, 0)
                        | Property::U32(MAXIMUM_PACKET_SIZE, 0)
                        | Property::Byte(MAXIMUM_QOS, 2..) => return Err(INVALID_PROPERTY),
                        Property::U16(RECEIVE_MAXIMUM, v) => limits.receive_max = v,
                        Property::U32(MAXIMUM_PACKET_SIZE, v) => limits.max_packet = v,
                        Property::U16(SERVER_KEEP_ALIVE, v) => limits.keep_alive = Some(v),
                        Property::Byte(MAXIMUM_QOS, v) => limits.max_qos = v,
                        Property::U16(TOPIC_ALIAS_MAXIMUM, v) => limits.topic_alias_max = v,
                        _ => {}
                    }
                }
            }
            Inbound::ConnAck {
                session_present,
                code,
                #[cfg(feature = "v5")]
                limits,
            }
        }
        PUBLISH => {
            let p = decode_publish(first, body, v5)?;
            return Ok(Inbound::Publish {
                qos: p.qos as u8,
                pid: p.pid,
            });
        }
        PUBACK | PUBREC | PUBREL | PUBCOMP => {
            let pid = r.packet_id()?;
            // v5 may append a reason code and properties; 3.1.1 must not.
            let reason = if v5 && !r.is_empty() { r.u8()? } else { 0 };
            #[cfg(feature = "v5")]
            if v5 && !r.is_empty() {
                check_properties(r.properties()?)?;
            }
            r.finish()?;
            return Ok(Inbound::Ack { kind, pid, reason });
        }
        SUBACK => {
            let pid = r.packet_id()?;
            #[cfg(feature = "v5")]
            if v5 {
                check_properties(r.properties()?)?;
            }
            if r.is_empty() {
                // At least one return code (MQTT 5.0 section 3.9.3).
                return Err(DecodeError::Truncated);
            }
            r.rest();
            Inbound::SubAck { pid }
        }
        UNSUBACK => {
            let pid = r.packet_id()?;
            #[cfg(feature = "v5")]
            if v5 {
                check_properties(r.properties()?)?;
            }
            r.rest();
            Inbound::UnsubAck { pid }
        }
        PINGRESP => Inbound::PingResp,
        DISCONNECT if v5 => {
            let reason = if r.is_empty() { 0 } else { r.u8()? };
            #[cfg(feature = "v5")]
            if !r.is_empty() {
                check_properties(r.properties()?)?;
            }
            Inbound::Disconnect { reason }
        }
        _ => return Err(DecodeError::UnexpectedPacket),
    };
    r.finish()?;
    Ok(pk)
}

/// Checks that every property of `block` is well formed and none but User Property repeats.
#[cfg(feature = "v5")]
fn check_properties(block: &[u8]) -> Result<(), DecodeError> {
    let mut props = Properties::new(block);
    let mut seen = 0;
    while let Some(p) = props.next_prop()? {
        once(&mut seen, p.id())?;
    }
    Ok(())
}

/// The error for a property a packet may not carry (again, or with that value); the client
/// reports every decoding error as [`Error::Protocol`].
#[cfg(feature = "v5")]
const INVALID_PROPERTY: DecodeError = DecodeError::UnexpectedPacket;

/// Records property `id` in `seen` (a bit per identifier); a second one is a protocol error
/// (MQTT 5.0 section 2.2.2.2), except User Property and, in a PUBLISH, Subscription
/// Identifier, which may repeat.
#[cfg(feature = "v5")]
fn once(seen: &mut u64, id: u8) -> Result<(), DecodeError> {
    if id == USER_PROPERTY || id == SUBSCRIPTION_IDENTIFIER || id >= 64 {
        return Ok(());
    }
    let bit = 1u64 << id;
    if *seen & bit != 0 {
        return Err(INVALID_PROPERTY);
    }
    *seen |= bit;
    Ok(())
}

/// The v5 property block of a CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK or
/// DISCONNECT body (empty when the packet has none), as [`decode`] validated it.
#[cfg(feature = "v5")]
pub(crate) fn control_properties(kind: u8, body: &[u8]) -> Result<&[u8], DecodeError> {
    let mut r = Reader::new(body);
    // What comes before the properties: CONNACK flags and code, an id and a reason code, an
    // id, or a reason code.
    let before = match kind {
        CONNACK => 2,
        PUBACK | PUBREC | PUBREL | PUBCOMP => 3,
        SUBACK | UNSUBACK => 2,
        DISCONNECT => 1,
        _ => return Ok(&[]),
    };
    r.take(before.min(body.len()))?;
    if r.is_empty() {
        return Ok(&[]);
    }
    r.properties()
}

/// Return codes of a SUBACK / UNSUBACK (v5), borrowing from the packet body.
pub(crate) fn ack_codes(body: &[u8], v5: bool) -> Result<&[u8], DecodeError> {
    let mut r = Reader::new(body);
    r.u16()?;
    #[cfg(feature = "v5")]
    if v5 {
        r.properties()?;
    }
    let _ = v5;
    Ok(r.rest())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Subscription, Will};
    use roost_wire::FixedHeader;

    /// [`publish`] without v5 extras.
    fn pub0(
        buf: &mut [u8],
        v5: bool,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
        pid: u16,
    ) -> Result<usize, Error> {
        publish(
            buf,
            v5,
            topic,
            payload,
            qos,
            retain,
            pid,
            #[cfg(feature = "v5")]
            None,
        )
    }

    /// [`subscribe`] without v5 properties.
    fn sub0(buf: &mut [u8], v5: bool, pid: u16, subs: &[Subscription<'_>]) -> Result<usize, Error> {
        subscribe(
            buf,
            v5,
            pid,
            subs,
            #[cfg(feature = "v5")]
            &crate::SubscribeProperties::default(),
        )
    }

    fn fields<'a>(v5: bool, id: &'a str) -> ConnectFields<'a> {
        ConnectFields {
            v5,
            client_id: id,
            keep_alive: 60,
            clean: true,
            will: None,
            username: None,
            password: None,
            #[cfg(feature = "v5")]
            session_expiry: 0,
            #[cfg(feature = "v5")]
            receive_max: 16,
            #[cfg(feature = "v5")]
            max_packet: 1024,
            #[cfg(feature = "v5")]
            user_properties: &[],
            #[cfg(feature = "v5")]
            topic_alias_max: 0,
        }
    }

    /// The fixed header of what the encoders write frames as the client reads it.
    fn framed(pkt: &[u8]) -> (u8, &[u8]) {
        let h = FixedHeader::parse(pkt).unwrap().unwrap();
        assert_eq!(h.packet_len(), pkt.len());
        (h.byte1, h.body(pkt).unwrap())
    }

    #[test]
    fn connect_311_exact_bytes() {
        let mut buf = [0u8; 64];
        let f = fields(false, "ab");
        let n = connect(&mut buf, &f).unwrap();
        assert_eq!(
            &buf[..n],
            &[
                0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 2, b'a', b'b'
            ]
        );
    }

    #[test]
    fn connect_with_will_user_password() {
        let mut buf = [0u8; 96];
        let will = Will {
            topic: "w",
            payload: b"bye",
            qos: QoS::AtLeastOnce,
            retain: true,
        };
        let mut f = fields(false, "c");
        f.will = Some(&will);
        f.username = Some("u");
        f.password = Some(b"pw");
        f.clean = false;
        let n = connect(&mut buf, &f).unwrap();
        // flags: user | password | will retain | will qos 1 | will
        assert_eq!(buf[9], 0x80 | 0x40 | 0x20 | 0x08 | 0x04);
        assert_eq!(
            &buf[12..n],
            &[
                0, 1, b'c', 0, 1, b'w', 0, 3, b'b', b'y', b'e', 0, 1, b'u', 0, 2, b'p', b'w'
            ]
        );
        f.username = None;
        assert_eq!(connect(&mut buf, &f), Err(Error::InvalidArgument));
    }

    #[cfg(feature = "v5")]
    #[test]
    fn connect_v5_properties() {
        let mut buf = [0u8; 64];
        let mut f = fields(true, "x");
        f.session_expiry = 300;
        let n = connect(&mut buf, &f).unwrap();
        assert_eq!(buf[8], 5);
        // properties: length 13, expiry, receive max, max packet size
        assert_eq!(
            &buf[12..26],
            &[13, 0x11, 0, 0, 1, 44, 0x21, 0, 16, 0x27, 0, 0, 4, 0]
        );
        assert_eq!(&buf[26..n], &[0, 1, b'x']);
    }

    #[test]
    fn buffer_too_small_never_truncates() {
        let f = fields(false, "client");
        for len in 0..20 {
            let mut buf = [0u8; 20];
            assert_eq!(
                connect(&mut buf[..len], &f),
                Err(Error::BufferTooSmall),
                "len {len}"
            );
        }
        let mut buf = [0u8; 16];
        assert_eq!(
            pub0(&mut buf, false, "t", &[0u8; 12], QoS::AtMostOnce, false, 0),
            Err(Error::BufferTooSmall)
        );
        assert_eq!(
            pub0(&mut buf, false, "t", &[0u8; 11], QoS::AtMostOnce, false, 0),
            Ok(16)
        );
    }

    #[test]
    fn fields_mqtt_cannot_carry_are_invalid_arguments() {
        let long = [b'a'; 65_536];
        let topic = core::str::from_utf8(&long).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(
            pub0(&mut buf, false, topic, b"", QoS::AtMostOnce, false, 0),
            Err(Error::InvalidArgument)
        );
        let subs = [Subscription::new(topic, QoS::AtMostOnce)];
        assert_eq!(sub0(&mut buf, false, 1, &subs), Err(Error::InvalidArgument));
        assert_eq!(
            unsubscribe(&mut buf, false, 1, &[topic]),
            Err(Error::InvalidArgument)
        );
        // QoS 2 subscriptions need the qos2 feature.
        let q2 = [Subscription::new("a", QoS::ExactlyOnce)];
        let r = sub0(&mut buf, false, 1, &q2);
        if cfg!(feature = "qos2") {
            assert_eq!(r, Ok(8));
        } else {
            assert_eq!(r, Err(Error::InvalidArgument));
        }
    }

    #[test]
    fn publish_roundtrip_both_versions() {
        for v5 in [false, cfg!(feature = "v5")] {
            let mut buf = [0u8; 64];
            let n = pub0(&mut buf, v5, "a/b", b"hello", QoS::AtLeastOnce, true, 7).unwrap();
            let (first, body) = framed(&buf[..n]);
            assert_eq!(first, 0x33);
            let p = decode_publish(first, body, v5).unwrap();
            assert_eq!((p.topic, p.pid, p.payload), ("a/b", 7, &b"hello"[..]));
            assert_eq!(p.qos, QoS::AtLeastOnce);
            assert_eq!(
                decode(first, body, v5).unwrap(),
                Inbound::Publish { qos: 1, pid: 7 }
            );
        }
        let mut buf = [0u8; 300];
        let big = [7u8; 200];
        let n = pub0(&mut buf, false, "t", &big, QoS::AtMostOnce, false, 0).unwrap();
        assert_eq!(&buf[..3], &[0x30, 0xcb, 0x01]); // 203 = 0x4b + 0x80, 1
        assert_eq!(n, 206);
        assert_eq!(
            pub0(&mut buf, false, "a/+", b"", QoS::AtMostOnce, false, 0),
            Err(Error::InvalidArgument)
        );
    }

    #[test]
    fn inbound_publish_validation() {
        // QoS 1 with pid 0
        assert_eq!(
            decode(0x32, &[0, 1, b't', 0, 0], false),
            Err(DecodeError::PacketIdZero)
        );
        // QoS 3
        assert_eq!(
            decode(0x36, &[0, 1, b't', 0, 1], false),
            Err(DecodeError::InvalidQoS)
        );
        // DUP with QoS 0
        assert_eq!(
            decode(0x38, &[0, 1, b't'], false),
            Err(DecodeError::DupWithQoS0)
        );
        // topic longer than body
        assert_eq!(
            decode(0x30, &[0, 9, b't'], false),
            Err(DecodeError::Truncated)
        );
        // invalid UTF-8 topic, U+0000 in the topic, empty topic
        assert_eq!(
            decode(0x30, &[0, 1, 0xff], false),
            Err(DecodeError::InvalidUtf8)
        );
        assert_eq!(
            decode(0x30, &[0, 1, 0], false),
            Err(DecodeError::NullCharacter)
        );
        assert_eq!(
            decode(0x30, &[0, 0, b'x'], false),
            Err(DecodeError::InvalidTopicName)
        );
        // QoS 2 needs the qos2 feature.
        let q2 = decode(0x34, &[0, 1, b't', 0, 1], false);
        if cfg!(feature = "qos2") {
            assert_eq!(q2, Ok(Inbound::Publish { qos: 2, pid: 1 }));
        } else {
            assert_eq!(q2, Err(DecodeError::InvalidQoS));
        }
    }

    #[test]
    fn acks() {
        let mut buf = [0u8; 8];
        assert_eq!(ack(&mut buf, PUBREL, 0x1234, 0), Ok(4));
        assert_eq!(&buf[..4], &[0x62, 2, 0x12, 0x34]);
        assert_eq!(ack(&mut buf, PUBCOMP, 1, 0x92), Ok(5));
        assert_eq!(&buf[..5], &[0x70, 3, 0, 1, 0x92]);
        assert_eq!(ack(&mut buf[..3], PUBACK, 1, 0), Err(Error::BufferTooSmall));
        assert_eq!(
            decode(0x40, &[0, 5], false),
            Ok(Inbound::Ack {
                kind: PUBACK,
                pid: 5,
                reason: 0
            })
        );
        // PUBREL must have flags 2, the others 0
        assert_eq!(
            decode(0x60, &[0, 5], false),
            Err(DecodeError::ReservedFlags)
        );
        assert_eq!(
            decode(0x41, &[0, 5], false),
            Err(DecodeError::ReservedFlags)
        );
        assert_eq!(
            decode(0x62, &[0, 5], false),
            Ok(Inbound::Ack {
                kind: PUBREL,
                pid: 5,
                reason: 0
            })
        );
        // 3.1.1 acks have no reason code
        assert_eq!(
            decode(0x50, &[0, 5, 0x80], false),
            Err(DecodeError::TrailingBytes)
        );
        assert_eq!(decode(0x40, &[0, 0], false), Err(DecodeError::PacketIdZero));
        #[cfg(feature = "v5")]
        assert_eq!(
            decode(0x50, &[0, 5, 0x87, 0], true),
            Ok(Inbound::Ack {
                kind: PUBREC,
                pid: 5,
                reason: 0x87
            })
        );
    }

    #[test]
    fn subscribe_and_suback() {
        let mut buf = [0u8; 64];
        let subs = [
            Subscription::new("a/#", QoS::AtLeastOnce),
            Subscription::new("b", QoS::AtMostOnce),
        ];
        let n = sub0(&mut buf, false, 3, &subs).unwrap();
        assert_eq!(
            &buf[..n],
            &[0x82, 12, 0, 3, 0, 3, b'a', b'/', b'#', 1, 0, 1, b'b', 0]
        );
        assert_eq!(
            decode(0x90, &[0, 3, 1, 0x80], false),
            Ok(Inbound::SubAck { pid: 3 })
        );
        assert_eq!(ack_codes(&[0, 3, 1, 0x80], false), Ok(&[1u8, 0x80][..]));
        assert_eq!(decode(0x90, &[0, 3], false), Err(DecodeError::Truncated));
        let n = unsubscribe(&mut buf, false, 4, &["a/#"]).unwrap();
        assert_eq!(&buf[..n], &[0xa2, 7, 0, 4, 0, 3, b'a', b'/', b'#']);
        assert_eq!(sub0(&mut buf, false, 1, &[]), Err(Error::InvalidArgument));
    }

    #[test]
    fn connack_and_misc() {
        assert_eq!(
            decode(0x20, &[1, 0], false),
            Ok(Inbound::ConnAck {
                session_present: true,
                code: 0,
                #[cfg(feature = "v5")]
                limits: ServerLimits {
                    receive_max: u16::MAX,
                    max_packet: u32::MAX,
                    keep_alive: None,
                    max_qos: 2,
                    topic_alias_max: 0,
                }
            })
        );
        assert_eq!(
            decode(0x20, &[2, 0], false),
            Err(DecodeError::ReservedFlags)
        );
        assert_eq!(decode(0xd0, &[], false), Ok(Inbound::PingResp));
        assert_eq!(decode(0xd0, &[1], false), Err(DecodeError::TrailingBytes));
        assert_eq!(decode(0xd1, &[], false), Err(DecodeError::ReservedFlags));
        // DISCONNECT from a server is a protocol error in 3.1.1
        assert_eq!(decode(0xe0, &[], false), Err(DecodeError::UnexpectedPacket));
        // CONNECT is never sent to a client; type 0 is reserved
        assert_eq!(decode(0x10, &[], false), Err(DecodeError::UnexpectedPacket));
        assert_eq!(
            decode(0x00, &[], false),
            Err(DecodeError::ReservedPacketType)
        );
        assert_eq!(protocol(DecodeError::Truncated), Error::Protocol);
    }

    #[cfg(feature = "v5")]
    #[test]
    fn connack_v5_limits() {
        // receive max 5, max packet 200, server keep alive 10, max qos 1, a user property,
        // topic alias maximum 3
        let body = [
            0, 0, 23, 0x21, 0, 5, 0x27, 0, 0, 0, 200, 0x13, 0, 10, 0x24, 1, 0x26, 0, 1, b'k', 0, 1,
            b'v', 0x22, 0, 3,
        ];
        match decode(0x20, &body, true).unwrap() {
            Inbound::ConnAck { limits, .. } => assert_eq!(
                limits,
                ServerLimits {
                    receive_max: 5,
                    max_packet: 200,
                    keep_alive: Some(10),
                    max_qos: 1,
                    topic_alias_max: 3,
                }
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            decode(0xe0, &[0x8e, 0], true),
            Ok(Inbound::Disconnect { reason: 0x8e })
        );
        // property block longer than the packet
        assert_eq!(
            decode(0x20, &[0, 0, 9, 0x21], true),
            Err(DecodeError::Truncated)
        );
        // an unknown property
        assert_eq!(
            decode(0x20, &[0, 0, 2, 0x7f, 0], true),
            Err(DecodeError::UnknownProperty)
        );
    }

    #[cfg(feature = "v5")]
    #[test]
    fn connect_v5_user_properties_and_limits() {
        let mut buf = [0u8; 96];
        let mut f = fields(true, "x");
        f.receive_max = 2;
        f.max_packet = 300;
        f.user_properties = &[("k", "v"), ("site", "7")];
        let n = connect(&mut buf, &f).unwrap();
        // property length 3 + 5 + 7 + 10 = 25, then receive max, max packet size, user properties
        assert_eq!(
            &buf[12..41],
            &[
                25, 0x21, 0, 2, 0x27, 0, 0, 1, 44, 0x26, 0, 1, b'k', 0, 1, b'v', 0x26, 0, 4, b's',
                b'i', b't', b'e', 0, 1, b'7', 0, 1, b'x'
            ][..29]
        );
        assert_eq!(n, 41);
        // U+0000 in a user property (MQTT-1.5.4-2)
        f.user_properties = &[("k\0", "v")];
        assert_eq!(connect(&mut buf, &f), Err(Error::InvalidArgument));
    }

    #[cfg(feature = "v5")]
    #[test]
    fn publish_v5_properties_exact_bytes() {
        let props = crate::PublishProperties {
            payload_utf8: true,
            message_expiry_secs: Some(60),
            content_type: Some("t/p"),
            response_topic: Some("r"),
            correlation_data: Some(&[9, 8]),
            user_properties: &[("a", "b")],
            topic_alias: Some(2),
        };
        let extra = PublishExtra {
            props: &props,
            alias: 2,
        };
        let mut buf = [0u8; 96];
        let n = publish(
            &mut buf,
            true,
            "",
            b"hi",
            QoS::AtLeastOnce,
            false,
            5,
            Some(extra),
        )
        .unwrap();
        let (first, body) = framed(&buf[..n]);
        assert_eq!(first, 0x32);
        assert_eq!(
            body,
            &[
                0, 0, 0, 5, 32, 0x01, 1, 0x02, 0, 0, 0, 60, 0x23, 0, 2, 0x08, 0, 1, b'r', 0x09, 0,
                2, 9, 8, 0x26, 0, 1, b'a', 0, 1, b'b', 0x03, 0, 3, b't', b'/', b'p', b'h', b'i'
            ]
        );
        // An empty topic needs an alias (MQTT-3.3.2-... section 3.3.2.3.4).
        let no_alias = PublishExtra { alias: 0, ..extra };
        assert_eq!(
            publish(
                &mut buf,
                true,
                "",
                b"",
                QoS::AtMostOnce,
                false,
                0,
                Some(no_alias)
            ),
            Err(Error::InvalidArgument)
        );
        // A response topic must not contain wildcards (MQTT-3.3.2-14).
        let bad = crate::PublishProperties {
            response_topic: Some("r/#"),
            ..props
        };
        let bad = PublishExtra {
            props: &bad,
            alias: 0,
        };
        assert_eq!(
            publish(
                &mut buf,
                true,
                "t",
                b"",
                QoS::AtMostOnce,
                false,
                0,
                Some(bad)
            ),
            Err(Error::InvalidArgument)
        );
        // The properties never truncate: every shorter buffer is refused.
        for len in 0..n {
            assert_eq!(
                publish(
                    &mut buf[..len],
                    true,
                    "",
                    b"hi",
                    QoS::AtLeastOnce,
                    false,
                    5,
                    Some(extra)
                ),
                Err(Error::BufferTooSmall)
            );
        }
    }

    #[cfg(feature = "v5")]
    #[test]
    fn subscribe_v5_identifier_and_options() {
        let mut s = Subscription::new("a/+", QoS::AtLeastOnce);
        s.no_local = true;
        s.retain_as_published = true;
        s.retain_handling = 2;
        let props = crate::SubscribeProperties {
            subscription_id: Some(200),
            user_properties: &[("u", "1")],
        };
        let mut buf = [0u8; 64];
        let n = subscribe(&mut buf, true, 3, &[s], &props).unwrap();
        let (first, body) = framed(&buf[..n]);
        assert_eq!(first, 0x82);
        assert_eq!(
            body,
            &[
                0,
                3,
                10,
                0x0b,
                0xc8,
                0x01,
                0x26,
                0,
                1,
                b'u',
                0,
                1,
                b'1',
                0,
                3,
                b'a',
                b'/',
                b'+',
                0x01 | 0x04 | 0x08 | 0x20
            ]
        );
        // Subscription identifier 0 is a protocol error (MQTT 5.0 section 3.8.2.1.2).
        let zero = crate::SubscribeProperties {
            subscription_id: Some(0),
            ..props
        };
        assert_eq!(
            subscribe(&mut buf, true, 3, &[s], &zero),
            Err(Error::InvalidArgument)
        );
        s.retain_handling = 3;
        assert_eq!(
            subscribe(&mut buf, true, 3, &[s], &props),
            Err(Error::InvalidArgument)
        );
    }

    #[cfg(feature = "v5")]
    #[test]
    fn ack_properties_are_validated_and_found() {
        // PUBACK with reason 0x87 and a reason string
        let body = [0, 1, 0x87, 5, 0x1f, 0, 2, b'n', b'o'];
        assert_eq!(
            decode(0x40, &body, true),
            Ok(Inbound::Ack {
                kind: PUBACK,
                pid: 1,
                reason: 0x87
            })
        );
        assert_eq!(control_properties(PUBACK, &body), Ok(&body[4..]));
        // truncated or unknown properties are protocol errors
        assert_eq!(
            decode(0x40, &[0, 1, 0x87, 5, 0x1f, 0, 9, b'n'], true),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode(0x40, &[0, 1, 0x87, 2, 0x7f, 0], true),
            Err(DecodeError::UnknownProperty)
        );
        // SUBACK, UNSUBACK, DISCONNECT, CONNACK carry them too
        let suback = [0, 2, 3, 0x1f, 0, 0, 0x80];
        assert!(decode(0x90, &suback, true).is_ok());
        assert_eq!(control_properties(SUBACK, &suback), Ok(&suback[3..6]));
        let disc = [0x8e, 4, 0x1f, 0, 1, b'x'];
        assert!(decode(0xe0, &disc, true).is_ok());
        assert_eq!(control_properties(DISCONNECT, &disc), Ok(&disc[2..]));
        assert_eq!(control_properties(DISCONNECT, &[]), Ok(&[][..]));
        assert!(decode(0xb0, &[0, 2, 1, 0x7f, 0], true).is_err());
    }
}
