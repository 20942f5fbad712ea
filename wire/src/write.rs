//! Encoding: a [`Sink`] takes the bytes of a packet; [`Writer`] is the sink over a caller's
//! buffer, which also has a counting mode. Packets are encoded in two passes, measuring the
//! body first so the fixed header (whose remaining length comes first on the wire) can be
//! written before the body, and a packet that exactly fits its buffer is accepted.

use crate::{EncodeError, varint};

/// Where encoded bytes go. Only [`Sink::put`] is required; the MQTT data types are written
/// through it.
pub trait Sink {
    /// Appends raw bytes.
    fn put(&mut self, bytes: &[u8]) -> Result<(), EncodeError>;

    /// A byte.
    #[inline]
    fn u8(&mut self, v: u8) -> Result<(), EncodeError> {
        self.put(&[v])
    }

    /// A two byte integer, big-endian (MQTT 5.0 section 1.5.2).
    #[inline]
    fn u16(&mut self, v: u16) -> Result<(), EncodeError> {
        self.put(&v.to_be_bytes())
    }

    /// A four byte integer, big-endian (MQTT 5.0 section 1.5.3).
    #[inline]
    fn u32(&mut self, v: u32) -> Result<(), EncodeError> {
        self.put(&v.to_be_bytes())
    }

    /// A variable byte integer (MQTT 5.0 section 1.5.5); above 268,435,455 fails with
    /// [`EncodeError::ValueTooLarge`].
    fn varint(&mut self, v: u32) -> Result<(), EncodeError> {
        let mut tmp = [0u8; varint::MAX_LEN];
        let n = varint::encode(v, &mut tmp)?;
        let (head, _) = tmp.split_at_checked(n).ok_or(EncodeError::ValueTooLarge)?;
        self.put(head)
    }

    /// Binary data: a two byte length, then the bytes (MQTT 5.0 section 1.5.6). Over 65,535
    /// bytes fails with [`EncodeError::TooLong`]; nothing is truncated.
    fn binary(&mut self, b: &[u8]) -> Result<(), EncodeError> {
        let len = u16::try_from(b.len()).map_err(|_| EncodeError::TooLong)?;
        self.u16(len)?;
        self.put(b)
    }

    /// A UTF-8 encoded string (MQTT 5.0 section 1.5.4): as binary data. The caller keeps
    /// U+0000 out of it (MQTT-1.5.4-2); `&str` is well-formed UTF-8 already (MQTT-1.5.4-1).
    #[inline]
    fn string(&mut self, s: &str) -> Result<(), EncodeError> {
        self.binary(s.as_bytes())
    }

    /// A fixed header: the first byte, then the remaining length (MQTT 5.0 section 2.1.1).
    /// A remaining length above 268,435,455 fails with [`EncodeError::PacketTooLarge`].
    fn fixed_header(&mut self, byte1: u8, remaining: usize) -> Result<(), EncodeError> {
        let remaining = u32::try_from(remaining).map_err(|_| EncodeError::PacketTooLarge)?;
        if remaining > varint::MAX {
            return Err(EncodeError::PacketTooLarge);
        }
        self.u8(byte1)?;
        self.varint(remaining)
    }
}

/// A [`Sink`] over a caller's buffer, or (from [`Writer::counter`]) one that only counts.
///
/// One type serves both passes, so code that describes a packet body against `&mut Writer`
/// is compiled once, not once per pass.
#[derive(Debug)]
pub struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
    counting: bool,
}

impl<'a> Writer<'a> {
    /// A writer that fills `buf` from its start; writing past its end fails with
    /// [`EncodeError::BufferTooSmall`].
    #[inline]
    pub fn new(buf: &'a mut [u8]) -> Writer<'a> {
        Writer {
            buf,
            pos: 0,
            counting: false,
        }
    }

    /// A writer that stores nothing and only counts (the measuring pass).
    #[inline]
    pub fn counter() -> Writer<'static> {
        Writer {
            buf: &mut [],
            pos: 0,
            counting: true,
        }
    }

    /// How many bytes have been written (or counted) so far.
    #[inline]
    pub const fn position(&self) -> usize {
        self.pos
    }
}

impl Sink for Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        let end = self
            .pos
            .checked_add(bytes.len())
            .ok_or(EncodeError::BufferTooSmall)?;
        if !self.counting {
            let dst = self
                .buf
                .get_mut(self.pos..end)
                .ok_or(EncodeError::BufferTooSmall)?;
            dst.copy_from_slice(bytes);
        }
        self.pos = end;
        Ok(())
    }
}

/// The size of a whole packet whose remaining length is `remaining`: first byte, remaining
/// length and body. A remaining length above 268,435,455 fails with
/// [`EncodeError::PacketTooLarge`] (MQTT 5.0 section 2.1.4).
pub fn packet_len(remaining: usize) -> Result<usize, EncodeError> {
    match u32::try_from(remaining) {
        Ok(r) if r <= varint::MAX => Ok(1 + varint::len(r) + remaining),
        _ => Err(EncodeError::PacketTooLarge),
    }
}

/// Encodes a packet into the front of `buf` and returns its length: fixed header byte
/// `byte1`, the remaining length, then the body that `body` writes.
///
/// `body` runs twice, first on a counting [`Writer`] to size the packet, then on one over
/// `buf`, so it must write the same bytes both times. A packet larger than `buf` fails with
/// [`EncodeError::BufferTooSmall`] before anything is written; any error of `body` is
/// returned as it is.
pub fn encode_packet(
    buf: &mut [u8],
    byte1: u8,
    body: impl Fn(&mut Writer<'_>) -> Result<(), EncodeError>,
) -> Result<usize, EncodeError> {
    let mut counter = Writer::counter();
    body(&mut counter)?;
    let remaining = counter.position();
    // The remaining length is encoded once, here, and its size gives the packet's.
    let mut len = [0u8; varint::MAX_LEN];
    let n = u32::try_from(remaining)
        .ok()
        .and_then(|r| varint::encode(r, &mut len).ok())
        .ok_or(EncodeError::PacketTooLarge)?;
    let (len, _) = len.split_at_checked(n).ok_or(EncodeError::PacketTooLarge)?;
    // At most 1 + 4 + 268,435,455: no overflow.
    if 1 + n + remaining > buf.len() {
        return Err(EncodeError::BufferTooSmall);
    }
    let mut w = Writer::new(buf);
    w.u8(byte1)?;
    w.put(len)?;
    body(&mut w)?;
    Ok(w.position())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_types_exact_bytes() {
        let mut buf = [0u8; 32];
        let mut w = Writer::new(&mut buf);
        w.u8(0xAB).unwrap();
        w.u16(0x1234).unwrap();
        w.u32(0xDEAD_BEEF).unwrap();
        w.varint(321).unwrap();
        w.string("a/b").unwrap();
        w.binary(&[0, 0xFF]).unwrap();
        w.put(b"xy").unwrap();
        let n = w.position();
        assert_eq!(
            &buf[..n],
            &[
                0xAB, 0x12, 0x34, 0xDE, 0xAD, 0xBE, 0xEF, 0xC1, 0x02, 0, 3, b'a', b'/', b'b', 0, 2,
                0, 0xFF, b'x', b'y'
            ]
        );
    }

    #[test]
    fn counter_counts_what_writer_writes() {
        let write = |w: &mut Writer<'_>| -> Result<(), EncodeError> {
            w.u8(1)?;
            w.u16(2)?;
            w.u32(3)?;
            w.varint(varint::MAX)?;
            w.string("hello")?;
            w.binary(&[])
        };
        let mut c = Writer::counter();
        write(&mut c).unwrap();
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf);
        write(&mut w).unwrap();
        assert_eq!(c.position(), w.position());
        assert_eq!(c.position(), 1 + 2 + 4 + 4 + 7 + 2);
    }

    #[test]
    fn overflow_is_an_error_and_writes_nothing_more() {
        let mut buf = [0u8; 3];
        let mut w = Writer::new(&mut buf);
        w.u16(0x0102).unwrap();
        assert_eq!(w.u16(0x0304), Err(EncodeError::BufferTooSmall));
        assert_eq!(w.position(), 2);
        w.u8(3).unwrap();
        assert_eq!(w.u8(4), Err(EncodeError::BufferTooSmall));
        assert_eq!(buf, [1, 2, 3]);
    }

    #[test]
    fn long_fields_are_refused_not_truncated() {
        let big = [b'x'; 65_536];
        let mut c = Writer::counter();
        assert_eq!(c.binary(&big), Err(EncodeError::TooLong));
        assert_eq!(c.position(), 0);
        c.binary(&big[..65_535]).unwrap();
        assert_eq!(c.position(), 65_537);
        let s = core::str::from_utf8(&big).unwrap();
        assert_eq!(c.string(s), Err(EncodeError::TooLong));
        assert_eq!(c.varint(varint::MAX + 1), Err(EncodeError::ValueTooLarge));
    }

    #[test]
    fn fixed_header_and_packet_len() {
        let mut buf = [0u8; 8];
        let mut w = Writer::new(&mut buf);
        w.fixed_header(0x30, 321).unwrap();
        assert_eq!(&buf[..3], &[0x30, 0xC1, 0x02]);
        let mut c = Writer::counter();
        assert_eq!(
            c.fixed_header(0x30, varint::MAX as usize + 1),
            Err(EncodeError::PacketTooLarge)
        );
        assert_eq!(c.position(), 0);
        assert_eq!(packet_len(0), Ok(2));
        assert_eq!(packet_len(127), Ok(129));
        assert_eq!(packet_len(128), Ok(131));
        assert_eq!(
            packet_len(varint::MAX as usize),
            Ok(5 + varint::MAX as usize)
        );
        assert_eq!(
            packet_len(varint::MAX as usize + 1),
            Err(EncodeError::PacketTooLarge)
        );
        assert_eq!(packet_len(usize::MAX), Err(EncodeError::PacketTooLarge));
    }

    #[test]
    fn encode_packet_exact_fit_and_too_small() {
        let body = |w: &mut Writer<'_>| w.string("topic");
        let mut buf = [0xEEu8; 9];
        assert_eq!(encode_packet(&mut buf, 0x30, body), Ok(9));
        assert_eq!(buf, [0x30, 7, 0, 5, b't', b'o', b'p', b'i', b'c']);
        for len in 0..9 {
            let mut buf = [0xEEu8; 9];
            assert_eq!(
                encode_packet(&mut buf[..len], 0x30, body),
                Err(EncodeError::BufferTooSmall),
                "len {len}"
            );
            assert_eq!(buf, [0xEE; 9], "len {len}: nothing written");
        }
        // An empty body: PINGREQ.
        let mut buf = [0u8; 2];
        assert_eq!(encode_packet(&mut buf, 0xC0, |_| Ok(())), Ok(2));
        assert_eq!(buf, [0xC0, 0]);
    }

    #[test]
    fn encode_packet_two_byte_remaining_length() {
        let payload = [7u8; 200];
        let mut buf = [0u8; 256];
        let n = encode_packet(&mut buf, 0x30, |w| {
            w.string("t")?;
            w.put(&payload)
        })
        .unwrap();
        // 203 = 0x4B | 0x80, then 1.
        assert_eq!(&buf[..4], &[0x30, 0xCB, 0x01, 0]);
        assert_eq!(n, 206);
    }

    #[test]
    fn body_errors_pass_through() {
        let mut buf = [0u8; 16];
        assert_eq!(
            encode_packet(&mut buf, 0x30, |w| w.varint(u32::MAX)),
            Err(EncodeError::ValueTooLarge)
        );
    }
}
