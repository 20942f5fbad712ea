//! The MQTT wire codec: encoders write into caller buffers, decoders borrow from them.
//!
//! Nothing here allocates or panics: every write is bounds checked and reports
//! [`Error::BufferTooSmall`], every read reports [`Error::Protocol`] on malformed input.

use crate::{Error, QoS};

pub(crate) const CONNACK: u8 = 2;
pub(crate) const PUBLISH: u8 = 3;
pub(crate) const PUBACK: u8 = 4;
pub(crate) const PUBREC: u8 = 5;
pub(crate) const PUBREL: u8 = 6;
pub(crate) const PUBCOMP: u8 = 7;
pub(crate) const SUBACK: u8 = 9;
pub(crate) const UNSUBACK: u8 = 11;
pub(crate) const PINGRESP: u8 = 13;
pub(crate) const DISCONNECT: u8 = 14;

/// Largest value of the variable byte integer (remaining length).
const VARINT_MAX: usize = 268_435_455;

/// Encodes `v` (at most [`VARINT_MAX`]) into `out`, returning the number of bytes used.
fn varint_encode(mut v: usize, out: &mut [u8; 4]) -> usize {
    let mut n = 0;
    loop {
        let mut b = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            b |= 0x80;
        }
        out[n] = b;
        n += 1;
        if v == 0 || n == 4 {
            return n;
        }
    }
}

/// A bounds-checked packet body writer. Packets are encoded in two passes (see [`packet`]):
/// one that only counts, so the fixed header can be written first and a packet that exactly
/// fits the buffer is accepted, then one that writes.
pub(crate) struct Enc<'a> {
    buf: &'a mut [u8],
    pos: usize,
    count: bool,
}

impl Enc<'_> {
    pub(crate) fn put(&mut self, b: &[u8]) -> Result<(), Error> {
        let end = self.pos.checked_add(b.len()).ok_or(Error::BufferTooSmall)?;
        if !self.count {
            let dst = self
                .buf
                .get_mut(self.pos..end)
                .ok_or(Error::BufferTooSmall)?;
            dst.copy_from_slice(b);
        }
        self.pos = end;
        Ok(())
    }

    pub(crate) fn u8(&mut self, v: u8) -> Result<(), Error> {
        self.put(&[v])
    }

    pub(crate) fn u16(&mut self, v: u16) -> Result<(), Error> {
        self.put(&v.to_be_bytes())
    }

    #[cfg(feature = "v5")]
    pub(crate) fn u32(&mut self, v: u32) -> Result<(), Error> {
        self.put(&v.to_be_bytes())
    }

    /// Two-byte length prefixed binary data (also used for UTF-8 strings).
    pub(crate) fn bin(&mut self, b: &[u8]) -> Result<(), Error> {
        let len = u16::try_from(b.len()).map_err(|_| Error::InvalidArgument)?;
        self.u16(len)?;
        self.put(b)
    }

    pub(crate) fn str(&mut self, s: &str) -> Result<(), Error> {
        self.bin(s.as_bytes())
    }

    #[cfg(feature = "v5")]
    pub(crate) fn varint(&mut self, v: usize) -> Result<(), Error> {
        if v > VARINT_MAX {
            return Err(Error::InvalidArgument);
        }
        let mut tmp = [0u8; 4];
        let n = varint_encode(v, &mut tmp);
        self.put(&tmp[..n])
    }
}

/// Encodes a packet with fixed header byte `first` and the body written by `body` into `buf`.
/// Returns the total length; the packet starts at `buf[0]`.
pub(crate) fn packet(
    buf: &mut [u8],
    first: u8,
    body: impl Fn(&mut Enc<'_>) -> Result<(), Error>,
) -> Result<usize, Error> {
    let mut counter = Enc {
        buf: &mut [],
        pos: 0,
        count: true,
    };
    body(&mut counter)?;
    let len = counter.pos;
    if len > VARINT_MAX {
        return Err(Error::PacketTooLarge);
    }
    let mut hdr = [0u8; 4];
    let n = varint_encode(len, &mut hdr);
    let total = 1 + n + len;
    if total > buf.len() {
        return Err(Error::BufferTooSmall);
    }
    let head = buf.get_mut(..1 + n).ok_or(Error::BufferTooSmall)?;
    head[0] = first;
    head[1..].copy_from_slice(&hdr[..n]);
    let mut e = Enc {
        buf,
        pos: 1 + n,
        count: false,
    };
    body(&mut e)?;
    Ok(total)
}

/// A bounds-checked reader over a received packet body.
pub(crate) struct Dec<'a> {
    b: &'a [u8],
    p: usize,
}

impl<'a> Dec<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Dec { b, p: 0 }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self.p.checked_add(n).ok_or(Error::Protocol)?;
        let s = self.b.get(self.p..end).ok_or(Error::Protocol)?;
        self.p = end;
        Ok(s)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, Error> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }

    #[cfg(feature = "v5")]
    pub(crate) fn u32(&mut self) -> Result<u32, Error> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }

    #[cfg(feature = "v5")]
    pub(crate) fn varint(&mut self) -> Result<usize, Error> {
        let mut v = 0usize;
        for i in 0..4 {
            let b = self.u8()?;
            v |= usize::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Error::Protocol)
    }

    pub(crate) fn bin(&mut self) -> Result<&'a [u8], Error> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }

    pub(crate) fn str(&mut self) -> Result<&'a str, Error> {
        core::str::from_utf8(self.bin()?).map_err(|_| Error::Protocol)
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let s = self.b.get(self.p..).unwrap_or(&[]);
        self.p = self.b.len();
        s
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.p >= self.b.len()
    }

    /// Reads a v5 property block and returns it raw.
    #[cfg(feature = "v5")]
    pub(crate) fn props(&mut self) -> Result<&'a [u8], Error> {
        let n = self.varint()?;
        self.take(n)
    }
}

/// Parses a fixed header at the start of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, else `(header length, remaining length)`.
pub(crate) fn frame(buf: &[u8]) -> Result<Option<(usize, usize)>, Error> {
    let mut rem = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        rem |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((2 + i, rem)));
        }
    }
    Err(Error::Protocol)
}

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
        // MQTT 3.1.1 forbids a password without a user name.
        return Err(Error::InvalidArgument);
    }
    packet(buf, 0x10, |e| {
        e.str("MQTT")?;
        e.u8(if c.v5 { 5 } else { 4 })?;
        let mut flags = u8::from(c.clean) << 1;
        if let Some(w) = c.will {
            flags |= 0x04 | (w.qos as u8) << 3 | u8::from(w.retain) << 5;
        }
        flags |= u8::from(c.password.is_some()) << 6 | u8::from(c.username.is_some()) << 7;
        e.u8(flags)?;
        e.u16(c.keep_alive)?;
        #[cfg(feature = "v5")]
        if c.v5 {
            let expiry = c.session_expiry != 0;
            e.varint(if expiry { 5 } else { 0 } + 3 + 5)?;
            if expiry {
                e.u8(0x11)?;
                e.u32(c.session_expiry)?;
            }
            e.u8(0x21)?;
            e.u16(c.receive_max)?;
            e.u8(0x27)?;
            e.u32(c.max_packet)?;
        }
        e.str(c.client_id)?;
        if let Some(w) = c.will {
            #[cfg(feature = "v5")]
            if c.v5 {
                e.varint(0)?;
            }
            e.str(w.topic)?;
            e.bin(w.payload)?;
        }
        if let Some(u) = c.username {
            e.str(u)?;
        }
        if let Some(p) = c.password {
            e.bin(p)?;
        }
        Ok(())
    })
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
    if topic.is_empty() || topic.contains(['+', '#']) {
        return Err(Error::InvalidArgument);
    }
    let _ = v5;
    packet(buf, 0x30 | (qos as u8) << 1 | u8::from(retain), |e| {
        e.str(topic)?;
        if qos != QoS::AtMostOnce {
            e.u16(pid)?;
        }
        #[cfg(feature = "v5")]
        if v5 {
            e.varint(0)?;
        }
        e.put(payload)
    })
}

/// Encodes PUBACK/PUBREC/PUBREL/PUBCOMP. `reason` is only sent for v5 when non-zero.
pub(crate) fn ack(buf: &mut [u8], kind: u8, pid: u16, reason: u8) -> Result<usize, Error> {
    let flags = if kind == PUBREL { 2 } else { 0 };
    let [hi, lo] = pid.to_be_bytes();
    let (pkt, n): ([u8; 5], usize) = if reason == 0 {
        ([kind << 4 | flags, 2, hi, lo, 0], 4)
    } else {
        ([kind << 4 | flags, 3, hi, lo, reason], 5)
    };
    let dst = buf.get_mut(..n).ok_or(Error::BufferTooSmall)?;
    dst.copy_from_slice(&pkt[..n]);
    Ok(n)
}

/// Copies a fixed two-byte packet (PINGREQ, DISCONNECT) into `buf`.
pub(crate) fn short(buf: &mut [u8], first: u8) -> Result<usize, Error> {
    let dst = buf.get_mut(..2).ok_or(Error::BufferTooSmall)?;
    dst.copy_from_slice(&[first, 0]);
    Ok(2)
}

pub(crate) fn subscribe(
    buf: &mut [u8],
    v5: bool,
    pid: u16,
    subs: &[crate::Subscription<'_>],
) -> Result<usize, Error> {
    if subs.is_empty() {
        return Err(Error::InvalidArgument);
    }
    packet(buf, 0x82, |e| {
        e.u16(pid)?;
        #[cfg(feature = "v5")]
        if v5 {
            e.varint(0)?;
        }
        for s in subs {
            e.str(s.filter)?;
            e.u8(s.options(v5))?;
        }
        Ok(())
    })
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
    packet(buf, 0xa2, |e| {
        e.u16(pid)?;
        #[cfg(feature = "v5")]
        if v5 {
            e.varint(0)?;
        }
        for f in filters {
            e.str(f)?;
        }
        Ok(())
    })
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
    pub(crate) first: u8,
    pub(crate) topic: &'a str,
    pub(crate) pid: u16,
    #[cfg(feature = "v5")]
    pub(crate) props: &'a [u8],
    pub(crate) payload: &'a [u8],
}

pub(crate) fn decode_publish(first: u8, body: &[u8], v5: bool) -> Result<PublishView<'_>, Error> {
    let qos = (first >> 1) & 3;
    if qos == 3 || (qos == 2 && !cfg!(feature = "qos2")) {
        return Err(Error::Protocol);
    }
    let mut d = Dec::new(body);
    let topic = d.str()?;
    let pid = if qos > 0 { d.u16()? } else { 0 };
    if qos > 0 && pid == 0 {
        return Err(Error::Protocol);
    }
    #[cfg(feature = "v5")]
    let props = if v5 { d.props()? } else { &[] };
    let _ = v5;
    if topic.is_empty() {
        // An empty topic is only valid with a topic alias, which this client never allows.
        return Err(Error::Protocol);
    }
    Ok(PublishView {
        first,
        topic,
        pid,
        #[cfg(feature = "v5")]
        props,
        payload: d.rest(),
    })
}

/// Decodes the fixed-size parts of any packet a client may receive.
pub(crate) fn decode(first: u8, body: &[u8], v5: bool) -> Result<Inbound, Error> {
    let kind = first >> 4;
    let flags = first & 0x0f;
    let mut d = Dec::new(body);
    let pk = match kind {
        CONNACK => {
            let sp = d.u8()?;
            if sp > 1 {
                return Err(Error::Protocol);
            }
            let code = d.u8()?;
            #[cfg(feature = "v5")]
            let mut limits = ServerLimits {
                receive_max: u16::MAX,
                max_packet: u32::MAX,
                keep_alive: None,
                max_qos: 2,
            };
            #[cfg(feature = "v5")]
            if v5 && !d.is_empty() {
                let mut it = crate::Properties::new(d.props()?);
                while let Some(p) = it.next_prop()? {
                    match p {
                        crate::Property::U16(0x21, v) if v > 0 => limits.receive_max = v,
                        crate::Property::U32(0x27, v) if v > 0 => limits.max_packet = v,
                        crate::Property::U16(0x13, v) => limits.keep_alive = Some(v),
                        crate::Property::Byte(0x24, v) => limits.max_qos = v,
                        _ => {}
                    }
                }
            }
            Inbound::ConnAck {
                session_present: sp == 1,
                code,
                #[cfg(feature = "v5")]
                limits,
            }
        }
        PUBLISH => {
            let p = decode_publish(first, body, v5)?;
            return Ok(Inbound::Publish {
                qos: (first >> 1) & 3,
                pid: p.pid,
            });
        }
        PUBACK | PUBREC | PUBREL | PUBCOMP => {
            let want = if kind == PUBREL { 2 } else { 0 };
            if flags != want {
                return Err(Error::Protocol);
            }
            let pid = d.u16()?;
            // v5 may append a reason code (and properties); 3.1.1 must not.
            let reason = if v5 && !d.is_empty() { d.u8()? } else { 0 };
            if !v5 && !d.is_empty() {
                return Err(Error::Protocol);
            }
            let _ = d.rest();
            return Ok(Inbound::Ack { kind, pid, reason });
        }
        SUBACK => {
            let pid = d.u16()?;
            #[cfg(feature = "v5")]
            if v5 {
                d.props()?;
            }
            if d.is_empty() {
                return Err(Error::Protocol);
            }
            let _ = d.rest();
            Inbound::SubAck { pid }
        }
        UNSUBACK => {
            let pid = d.u16()?;
            let _ = d.rest();
            Inbound::UnsubAck { pid }
        }
        PINGRESP => Inbound::PingResp,
        DISCONNECT if v5 => {
            let reason = if d.is_empty() { 0 } else { d.u8()? };
            let _ = d.rest();
            Inbound::Disconnect { reason }
        }
        _ => return Err(Error::Protocol),
    };
    if flags != 0 || !d.is_empty() {
        return Err(Error::Protocol);
    }
    Ok(pk)
}

/// Return codes of a SUBACK / UNSUBACK (v5), borrowing from the packet body.
pub(crate) fn ack_codes(body: &[u8], v5: bool) -> Result<&[u8], Error> {
    let mut d = Dec::new(body);
    d.u16()?;
    #[cfg(feature = "v5")]
    if v5 {
        d.props()?;
    }
    let _ = v5;
    Ok(d.rest())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Subscription, Will};

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

    #[test]
    fn varint_roundtrip_and_limits() {
        for v in [
            0usize, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, VARINT_MAX,
        ] {
            let mut out = [0u8; 4];
            let n = varint_encode(v, &mut out);
            let mut pkt = [0u8; 5];
            pkt[0] = 0x30;
            pkt[1..1 + n].copy_from_slice(&out[..n]);
            assert_eq!(frame(&pkt[..1 + n]).unwrap(), Some((1 + n, v)));
            // Truncated length bytes need more input rather than failing.
            if n > 1 {
                assert_eq!(frame(&pkt[..n]).unwrap(), None);
            }
        }
        assert_eq!(frame(&[0x30, 0xff, 0xff, 0xff, 0xff]), Err(Error::Protocol));
        assert_eq!(frame(&[0x30]).unwrap(), None);
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
    fn publish_roundtrip_both_versions() {
        for v5 in [false, cfg!(feature = "v5")] {
            let mut buf = [0u8; 64];
            let n = publish(&mut buf, v5, "a/b", b"hello", QoS::AtLeastOnce, true, 7).unwrap();
            let (h, rem) = frame(&buf[..n]).unwrap().unwrap();
            assert_eq!(h + rem, n);
            assert_eq!(buf[0], 0x33);
            let p = decode_publish(buf[0], &buf[h..n], v5).unwrap();
            assert_eq!((p.topic, p.pid, p.payload), ("a/b", 7, &b"hello"[..]));
            assert_eq!(
                decode(buf[0], &buf[h..n], v5).unwrap(),
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
            Err(Error::Protocol)
        );
        // QoS 3
        assert_eq!(
            decode(0x36, &[0, 1, b't', 0, 1], false),
            Err(Error::Protocol)
        );
        // topic longer than body
        assert_eq!(decode(0x30, &[0, 9, b't'], false), Err(Error::Protocol));
        // invalid UTF-8 topic
        assert_eq!(decode(0x30, &[0, 1, 0xff], false), Err(Error::Protocol));
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
        // PUBREL must have flags 2
        assert_eq!(decode(0x60, &[0, 5], false), Err(Error::Protocol));
        // 3.1.1 acks have no reason code
        assert_eq!(decode(0x50, &[0, 5, 0x80], false), Err(Error::Protocol));
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
        assert_eq!(decode(0x90, &[0, 3], false), Err(Error::Protocol));
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
        assert_eq!(decode(0x20, &[2, 0], false), Err(Error::Protocol));
        assert_eq!(decode(0xd0, &[], false), Ok(Inbound::PingResp));
        assert_eq!(decode(0xd0, &[1], false), Err(Error::Protocol));
        // DISCONNECT from a server is a protocol error in 3.1.1
        assert_eq!(decode(0xe0, &[], false), Err(Error::Protocol));
        // CONNECT is never sent to a client
        assert_eq!(decode(0x10, &[], false), Err(Error::Protocol));
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
        assert_eq!(decode(0x20, &[0, 0, 9, 0x21], true), Err(Error::Protocol));
    }
}
