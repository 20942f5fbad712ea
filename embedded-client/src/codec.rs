//! The packets the client sends and receives, on top of `roost_wire`: encoders write into
//! caller buffers, decoders borrow from them.
//!
//! Nothing here allocates or panics. Encoders report [`Error::BufferTooSmall`] (and
//! [`Error::InvalidArgument`] for fields MQTT cannot carry); decoders report the wire error,
//! which the client treats as [`Error::Protocol`] (see [`protocol`]).

use roost_wire::connect::{LEVEL_3_1_1, LEVEL_5, PROTOCOL_NAME};
use roost_wire::flags::{CLEAN_START, PASSWORD, USER_NAME, WILL, WILL_QOS_SHIFT, WILL_RETAIN};
pub(crate) use roost_wire::packet_type::{
    CONNACK, CONNECT, DISCONNECT, PINGREQ, PINGRESP, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL,
    SUBACK, SUBSCRIBE, UNSUBACK, UNSUBSCRIBE,
};
#[cfg(feature = "v5")]
use roost_wire::property::{
    MAXIMUM_PACKET_SIZE, MAXIMUM_QOS, Properties, Property, RECEIVE_MAXIMUM, SERVER_KEEP_ALIVE,
    SESSION_EXPIRY_INTERVAL,
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
}

pub(crate) fn connect(buf: &mut [u8], c: &ConnectFields<'_>) -> Result<usize, Error> {
    if c.password.is_some() && c.username.is_none() && !c.v5 {
        // MQTT 3.1.1 forbids a password without a user name (3.1.1 MQTT-3.1.2-22).
        return Err(Error::InvalidArgument);
    }
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
            let expiry = c.session_expiry != 0;
            // Property length: at most 13, a one-byte variable byte integer.
            w.u8(if expiry { 5 } else { 0 } + 3 + 5)?;
            if expiry {
                w.u8(SESSION_EXPIRY_INTERVAL)?;
                w.u32(c.session_expiry)?;
            }
            w.u8(RECEIVE_MAXIMUM)?;
            w.u16(c.receive_max)?;
            w.u8(MAXIMUM_PACKET_SIZE)?;
            w.u32(c.max_packet)?;
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

/// Encodes a PUBLISH. `pid` is ignored for QoS 0.
pub(crate) fn publish(
    buf: &mut [u8],
    v5: bool,
    topic: &str,
    payload: &[u8],
    qos: QoS,
    retain: bool,
    pid: u16,
) -> Result<usize, Error> {
    // MQTT-4.7.3-1, MQTT-3.3.2-2.
    if topic.is_empty() || topic.contains(['+', '#']) {
        return Err(Error::InvalidArgument);
    }
    let _ = v5;
    encode_packet(buf, publish_first_byte(false, qos, retain), |w| {
        w.string(topic)?;
        if qos != QoS::AtMostOnce {
            w.u16(pid)?;
        }
        #[cfg(feature = "v5")]
        if v5 {
            w.u8(0)?; // no properties
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
) -> Result<usize, Error> {
    if subs.is_empty() || subs.iter().any(|s| s.qos as u8 > MAX_QOS) {
        return Err(Error::InvalidArgument);
    }
    encode_packet(buf, first_byte(SUBSCRIBE), |w| {
        w.u16(pid)?;
        #[cfg(feature = "v5")]
        if v5 {
            w.u8(0)?; // no properties
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
    if filters.is_empty() {
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
}

/// A received PUBLISH, borrowing from the receive buffer.
pub(crate) struct PublishView<'a> {
    pub(crate) qos: QoS,
    pub(crate) topic: &'a str,
    pub(crate) pid: u16,
    #[cfg(feature = "v5")]
    pub(crate) props: &'a [u8],
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
    if topic.is_empty() {
        // An empty topic is only valid with a topic alias, which this client never allows.
        return Err(DecodeError::InvalidTopicName);
    }
    Ok(PublishView {
        qos,
        topic,
        pid,
        #[cfg(feature = "v5")]
        props,
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
            };
            #[cfg(feature = "v5")]
            if v5 && !r.is_empty() {
                let mut props = Properties::new(r.properties()?);
                while let Some(p) = props.next_prop()? {
                    match p {
                        Property::U16(RECEIVE_MAXIMUM, v) if v > 0 => limits.receive_max = v,
                        Property::U32(MAXIMUM_PACKET_SIZE, v) if v > 0 => limits.max_packet = v,
                        Property::U16(SERVER_KEEP_ALIVE, v) => limits.keep_alive = Some(v),
                        Property::Byte(MAXIMUM_QOS, v) => limits.max_qos = v,
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
            // v5 may append a reason code (and properties, not read); 3.1.1 must not.
            let reason = if v5 && !r.is_empty() { r.u8()? } else { 0 };
            if !v5 {
                r.finish()?;
            }
            return Ok(Inbound::Ack { kind, pid, reason });
        }
        SUBACK => {
            let pid = r.packet_id()?;
            #[cfg(feature = "v5")]
            if v5 {
                r.properties()?;
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
            r.rest();
            Inbound::UnsubAck { pid }
        }
        PINGRESP => Inbound::PingResp,
        DISCONNECT if v5 => {
            let reason = if r.is_empty() { 0 } else { r.u8()? };
            r.rest();
            Inbound::Disconnect { reason }
        }
        _ => return Err(DecodeError::UnexpectedPacket),
    };
    r.finish()?;
    Ok(pk)
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
            publish(&mut buf, false, "t", &[0u8; 12], QoS::AtMostOnce, false, 0),
            Err(Error::BufferTooSmall)
        );
        assert_eq!(
            publish(&mut buf, false, "t", &[0u8; 11], QoS::AtMostOnce, false, 0),
            Ok(16)
        );
    }

    #[test]
    fn fields_mqtt_cannot_carry_are_invalid_arguments() {
        let long = [b'a'; 65_536];
        let topic = core::str::from_utf8(&long).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(
            publish(&mut buf, false, topic, b"", QoS::AtMostOnce, false, 0),
            Err(Error::InvalidArgument)
        );
        let subs = [Subscription::new(topic, QoS::AtMostOnce)];
        assert_eq!(
            subscribe(&mut buf, false, 1, &subs),
            Err(Error::InvalidArgument)
        );
        assert_eq!(
            unsubscribe(&mut buf, false, 1, &[topic]),
            Err(Error::InvalidArgument)
        );
        // QoS 2 subscriptions need the qos2 feature.
        let q2 = [Subscription::new("a", QoS::ExactlyOnce)];
        let r = subscribe(&mut buf, false, 1, &q2);
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
            let n = publish(&mut buf, v5, "a/b", b"hello", QoS::AtLeastOnce, true, 7).unwrap();
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
        let n = publish(&mut buf, false, "t", &big, QoS::AtMostOnce, false, 0).unwrap();
        assert_eq!(&buf[..3], &[0x30, 0xcb, 0x01]); // 203 = 0x4b + 0x80, 1
        assert_eq!(n, 206);
        assert_eq!(
            publish(&mut buf, false, "a/+", b"", QoS::AtMostOnce, false, 0),
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
        let n = subscribe(&mut buf, false, 3, &subs).unwrap();
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
        assert_eq!(
            subscribe(&mut buf, false, 1, &[]),
            Err(Error::InvalidArgument)
        );
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
                    max_qos: 2
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
        // receive max 5, max packet 200, server keep alive 10, max qos 1, a user property
        let body = [
            0, 0, 20, 0x21, 0, 5, 0x27, 0, 0, 0, 200, 0x13, 0, 10, 0x24, 1, 0x26, 0, 1, b'k', 0, 1,
            b'v',
        ];
        match decode(0x20, &body, true).unwrap() {
            Inbound::ConnAck { limits, .. } => assert_eq!(
                limits,
                ServerLimits {
                    receive_max: 5,
                    max_packet: 200,
                    keep_alive: Some(10),
                    max_qos: 1
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
}
