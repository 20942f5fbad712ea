//! A small MQTT 3.1.1 / 5.0 codec of the soak's own, for the packets its clients use.
//!
//! It shares no code with the broker's codec, so a fault in one is not hidden by the same
//! fault in the other. Outgoing packets carry no MQTT 5.0 properties except the CONNECT's
//! Session Expiry Interval and Receive Maximum; incoming properties are skipped.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Protocol level of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (level 4).
    V4,
    /// MQTT 5.0 (level 5).
    V5,
}

/// The four publish acknowledgements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckKind {
    /// PUBACK (QoS 1).
    Puback,
    /// PUBREC (QoS 2, first half).
    Pubrec,
    /// PUBREL (QoS 2, release).
    Pubrel,
    /// PUBCOMP (QoS 2, complete).
    Pubcomp,
}

impl AckKind {
    fn packet_type(self) -> u8 {
        match self {
            AckKind::Puback => 4,
            AckKind::Pubrec => 5,
            AckKind::Pubrel => 6,
            AckKind::Pubcomp => 7,
        }
    }
}

/// What a CONNECT says.
#[derive(Debug, Clone)]
pub struct ConnectSpec {
    /// Client identifier.
    pub client_id: String,
    /// Clean session (3.1.1) / clean start (5.0).
    pub clean: bool,
    /// Keep alive in seconds.
    pub keep_alive: u16,
    /// MQTT 5.0 Session Expiry Interval (ignored for 3.1.1).
    pub session_expiry: u32,
}

/// An outgoing or incoming PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// DUP flag.
    pub dup: bool,
    /// QoS 0, 1 or 2.
    pub qos: u8,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic name.
    pub topic: String,
    /// Packet identifier (0 for QoS 0).
    pub packet_id: u16,
    /// Application payload.
    pub payload: Bytes,
}

/// A packet received from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// CONNACK: session present and return / reason code.
    ConnAck {
        /// Session Present flag.
        session_present: bool,
        /// Return code (3.1.1) or reason code (5.0).
        code: u8,
    },
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK, PUBREC, PUBREL or PUBCOMP with its reason code (0 when absent).
    Ack {
        /// Which acknowledgement.
        kind: AckKind,
        /// Packet identifier.
        packet_id: u16,
        /// Reason code.
        reason: u8,
    },
    /// SUBACK with one return / reason code per filter.
    SubAck {
        /// Packet identifier.
        packet_id: u16,
        /// One code per filter of the SUBSCRIBE.
        codes: Vec<u8>,
    },
    /// PINGRESP.
    PingResp,
    /// DISCONNECT from the broker (5.0) with its reason code.
    Disconnect {
        /// Reason code (0 when absent).
        reason: u8,
    },
}

/// A packet the broker sent that this codec cannot read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed packet from the broker: {}", self.0)
    }
}

fn put_varint(buf: &mut BytesMut, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if n == 0 {
            return;
        }
    }
}

fn put_str(buf: &mut BytesMut, s: &str) {
    buf.put_u16(s.len() as u16);
    buf.put_slice(s.as_bytes());
}

/// Writes a fixed header and `body` into `out`.
fn frame(out: &mut BytesMut, first: u8, body: &[u8]) {
    out.put_u8(first);
    put_varint(out, body.len());
    out.put_slice(body);
}

/// Encodes CONNECT.
pub fn connect(v: Version, spec: &ConnectSpec, out: &mut BytesMut) {
    let mut body = BytesMut::new();
    put_str(&mut body, "MQTT");
    body.put_u8(match v {
        Version::V4 => 4,
        Version::V5 => 5,
    });
    body.put_u8(if spec.clean { 0x02 } else { 0 });
    body.put_u16(spec.keep_alive);
    if v == Version::V5 {
        let mut props = BytesMut::new();
        if spec.session_expiry > 0 {
            props.put_u8(0x11);
            props.put_u32(spec.session_expiry);
        }
        put_varint(&mut body, props.len());
        body.put_slice(&props);
    }
    put_str(&mut body, &spec.client_id);
    frame(out, 0x10, &body);
}

/// Encodes PUBLISH.
pub fn publish(v: Version, p: &Publish, out: &mut BytesMut) {
    let mut body = BytesMut::with_capacity(p.topic.len() + p.payload.len() + 8);
    put_str(&mut body, &p.topic);
    if p.qos > 0 {
        body.put_u16(p.packet_id);
    }
    if v == Version::V5 {
        body.put_u8(0);
    }
    body.put_slice(&p.payload);
    let first = 0x30 | (u8::from(p.dup) << 3) | (p.qos << 1) | u8::from(p.retain);
    frame(out, first, &body);
}

/// Encodes PUBACK, PUBREC, PUBREL or PUBCOMP with reason "success".
pub fn ack(kind: AckKind, packet_id: u16, out: &mut BytesMut) {
    let flags = if kind == AckKind::Pubrel { 0x02 } else { 0 };
    frame(
        out,
        (kind.packet_type() << 4) | flags,
        &packet_id.to_be_bytes(),
    );
}

/// Encodes SUBSCRIBE with `(filter, maximum QoS)` pairs.
pub fn subscribe(v: Version, packet_id: u16, filters: &[(String, u8)], out: &mut BytesMut) {
    let mut body = BytesMut::new();
    body.put_u16(packet_id);
    if v == Version::V5 {
        body.put_u8(0);
    }
    for (filter, qos) in filters {
        put_str(&mut body, filter);
        body.put_u8(*qos);
    }
    frame(out, 0x82, &body);
}

/// Encodes PINGREQ.
pub fn pingreq(out: &mut BytesMut) {
    frame(out, 0xC0, &[]);
}

/// Encodes a normal DISCONNECT (reason 0x00 in 5.0, sent as the short form).
pub fn disconnect(out: &mut BytesMut) {
    frame(out, 0xE0, &[]);
}

/// Reads a Variable Byte Integer from the start of `buf`: `(value, bytes used)`, or `None`
/// when more bytes are needed.
fn read_varint(buf: &[u8]) -> Result<Option<(usize, usize)>, WireError> {
    let mut value = 0usize;
    for (i, byte) in buf.iter().enumerate().take(4) {
        value |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= 4 {
        return Err(WireError("remaining length longer than 4 bytes".into()));
    }
    Ok(None)
}

/// Reads a Variable Byte Integer from a complete body.
fn take_varint(body: &mut Bytes) -> Result<usize, WireError> {
    match read_varint(body)? {
        Some((n, used)) => {
            body.advance(used);
            Ok(n)
        }
        None => Err(WireError("truncated variable byte integer".into())),
    }
}

fn need(body: &Bytes, n: usize, what: &str) -> Result<(), WireError> {
    if body.remaining() < n {
        return Err(WireError(format!("truncated {what}")));
    }
    Ok(())
}

/// Skips a 5.0 property block.
fn skip_properties(body: &mut Bytes) -> Result<(), WireError> {
    let len = take_varint(body)?;
    need(body, len, "properties")?;
    body.advance(len);
    Ok(())
}

/// Decodes one packet from the start of `buf`, removing it; `Ok(None)` when `buf` does not
/// yet hold a whole packet.
pub fn decode(v: Version, buf: &mut BytesMut) -> Result<Option<Incoming>, WireError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let Some((len, used)) = read_varint(&buf[1..])? else {
        return Ok(None);
    };
    if buf.len() < 1 + used + len {
        return Ok(None);
    }
    let first = buf[0];
    buf.advance(1 + used);
    let mut body = buf.split_to(len).freeze();
    let kind = first >> 4;
    let packet = match kind {
        2 => {
            need(&body, 2, "CONNACK")?;
            let flags = body.get_u8();
            let code = body.get_u8();
            Incoming::ConnAck {
                session_present: flags & 1 == 1,
                code,
            }
        }
        3 => {
            let qos = (first >> 1) & 3;
            if qos == 3 {
                return Err(WireError("PUBLISH with QoS 3".into()));
            }
            need(&body, 2, "topic length")?;
            let topic_len = usize::from(body.get_u16());
            need(&body, topic_len, "topic")?;
            let topic = String::from_utf8(body.split_to(topic_len).to_vec())
                .map_err(|_| WireError("topic is not UTF-8".into()))?;
            let packet_id = if qos > 0 {
                need(&body, 2, "packet id")?;
                body.get_u16()
            } else {
                0
            };
            if v == Version::V5 {
                skip_properties(&mut body)?;
            }
            Incoming::Publish(Publish {
                dup: first & 0x08 != 0,
                qos,
                retain: first & 1 == 1,
                topic,
                packet_id,
                payload: body,
            })
        }
        4..=7 => {
            need(&body, 2, "acknowledgement")?;
            let packet_id = body.get_u16();
            let reason = if body.has_remaining() {
                body.get_u8()
            } else {
                0
            };
            let kind = match kind {
                4 => AckKind::Puback,
                5 => AckKind::Pubrec,
                6 => AckKind::Pubrel,
                _ => AckKind::Pubcomp,
            };
            Incoming::Ack {
                kind,
                packet_id,
                reason,
            }
        }
        9 => {
            need(&body, 2, "SUBACK")?;
            let packet_id = body.get_u16();
            if v == Version::V5 {
                skip_properties(&mut body)?;
            }
            Incoming::SubAck {
                packet_id,
                codes: body.to_vec(),
            }
        }
        13 => Incoming::PingResp,
        14 => Incoming::Disconnect {
            reason: if body.has_remaining() {
                body.get_u8()
            } else {
                0
            },
        },
        other => return Err(WireError(format!("unexpected packet type {other}"))),
    };
    Ok(Some(packet))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip_publish(v: Version) {
        let p = Publish {
            dup: true,
            qos: 2,
            retain: true,
            topic: "a/b".into(),
            packet_id: 513,
            payload: Bytes::from_static(b"hello"),
        };
        let mut buf = BytesMut::new();
        publish(v, &p, &mut buf);
        // A partial packet is not decoded and not consumed.
        let mut part = BytesMut::from(&buf[..buf.len() - 1]);
        assert_eq!(decode(v, &mut part), Ok(None));
        assert_eq!(part.len(), buf.len() - 1);
        assert_eq!(decode(v, &mut buf), Ok(Some(Incoming::Publish(p))));
        assert!(buf.is_empty());
    }

    #[test]
    fn publish_roundtrips_in_both_versions() {
        roundtrip_publish(Version::V4);
        roundtrip_publish(Version::V5);
    }

    #[test]
    fn long_remaining_length() {
        let p = Publish {
            dup: false,
            qos: 0,
            retain: false,
            topic: "t".into(),
            packet_id: 0,
            payload: Bytes::from(vec![7u8; 20_000]),
        };
        let mut buf = BytesMut::new();
        publish(Version::V4, &p, &mut buf);
        assert_eq!(buf[1] & 0x80, 0x80, "two length bytes or more");
        assert_eq!(
            decode(Version::V4, &mut buf),
            Ok(Some(Incoming::Publish(p)))
        );
    }

    #[test]
    fn acks_with_and_without_reason() {
        let mut buf = BytesMut::from(&[0x40, 0x02, 0x00, 0x05][..]);
        assert_eq!(
            decode(Version::V4, &mut buf),
            Ok(Some(Incoming::Ack {
                kind: AckKind::Puback,
                packet_id: 5,
                reason: 0
            }))
        );
        let mut buf = BytesMut::from(&[0x50, 0x04, 0x00, 0x06, 0x97, 0x00][..]);
        assert_eq!(
            decode(Version::V5, &mut buf),
            Ok(Some(Incoming::Ack {
                kind: AckKind::Pubrec,
                packet_id: 6,
                reason: 0x97
            }))
        );
        let mut out = BytesMut::new();
        ack(AckKind::Pubrel, 9, &mut out);
        assert_eq!(&out[..], &[0x62, 0x02, 0x00, 0x09]);
    }

    #[test]
    fn connect_and_subscribe_bytes() {
        let mut out = BytesMut::new();
        let spec = ConnectSpec {
            client_id: "c".into(),
            clean: false,
            keep_alive: 30,
            session_expiry: 60,
        };
        connect(Version::V5, &spec, &mut out);
        let expected: &[u8] = &[
            0x10, 19, 0, 4, b'M', b'Q', b'T', b'T', 5, 0, 0, 30, 5, 0x11, 0, 0, 0, 60, 0, 1, b'c',
        ];
        assert_eq!(&out[..], expected);
        let mut out = BytesMut::new();
        subscribe(Version::V4, 1, &[("a/#".into(), 2)], &mut out);
        assert_eq!(&out[..], &[0x82, 8, 0, 1, 0, 3, b'a', b'/', b'#', 2]);
    }

    #[test]
    fn v5_suback_and_connack_skip_properties() {
        let mut buf = BytesMut::from(&[0x90, 0x05, 0x00, 0x01, 0x00, 0x02, 0x01][..]);
        assert_eq!(
            decode(Version::V5, &mut buf),
            Ok(Some(Incoming::SubAck {
                packet_id: 1,
                codes: vec![2, 1]
            }))
        );
        let mut buf = BytesMut::from(&[0x20, 0x06, 0x01, 0x00, 0x03, 0x21, 0x00, 0x10][..]);
        assert_eq!(
            decode(Version::V5, &mut buf),
            Ok(Some(Incoming::ConnAck {
                session_present: true,
                code: 0
            }))
        );
    }
}
