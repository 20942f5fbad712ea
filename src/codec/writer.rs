//! Encoding primitives: a [`Sink`] that either measures or writes, so each packet's layout is
//! described once and used for both its length and its bytes.

use bytes::{BufMut, BytesMut};

use super::error::EncodeError;
use super::packet::UserProperty;
use super::reader::MAX_VARINT;

/// Where encoded bytes go: a [`Counter`] (measuring pass) or a `BytesMut` (writing pass).
pub(crate) trait Sink {
    /// One byte.
    fn u8(&mut self, v: u8);
    /// A big-endian two byte integer.
    fn u16(&mut self, v: u16);
    /// A big-endian four byte integer.
    fn u32(&mut self, v: u32);
    /// Raw bytes.
    fn slice(&mut self, v: &[u8]);
}

/// A [`Sink`] that only counts bytes.
#[derive(Default)]
pub(crate) struct Counter(pub usize);

impl Sink for Counter {
    fn u8(&mut self, _: u8) {
        self.0 += 1;
    }
    fn u16(&mut self, _: u16) {
        self.0 += 2;
    }
    fn u32(&mut self, _: u32) {
        self.0 += 4;
    }
    fn slice(&mut self, v: &[u8]) {
        self.0 += v.len();
    }
}

impl Sink for BytesMut {
    fn u8(&mut self, v: u8) {
        self.put_u8(v);
    }
    fn u16(&mut self, v: u16) {
        self.put_u16(v);
    }
    fn u32(&mut self, v: u32) {
        self.put_u32(v);
    }
    fn slice(&mut self, v: &[u8]) {
        self.extend_from_slice(v);
    }
}

/// A packet body or a property block, described once for both passes.
pub(crate) trait Encode {
    /// Writes (or measures) the content into `s`.
    fn put<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError>;
}

/// The encoded length of `e`, validating it on the way (string lengths, values).
pub(crate) fn measure<E: Encode>(e: &E) -> Result<usize, EncodeError> {
    let mut c = Counter::default();
    e.put(&mut c)?;
    Ok(c.0)
}

/// Number of bytes of the variable byte integer for `v` (`v` <= 268,435,455).
pub(crate) fn varint_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// A variable byte integer.
pub(crate) fn put_varint<S: Sink>(s: &mut S, mut v: usize) -> Result<(), EncodeError> {
    if v > MAX_VARINT {
        return Err(EncodeError::ValueTooLarge);
    }
    loop {
        let mut byte = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            byte |= 0x80;
        }
        s.u8(byte);
        if v == 0 {
            return Ok(());
        }
    }
}

/// Binary data with its two byte length; over 65535 bytes is an error, never truncated.
pub(crate) fn put_bin<S: Sink>(s: &mut S, v: &[u8]) -> Result<(), EncodeError> {
    let len = u16::try_from(v.len()).map_err(|_| EncodeError::StringTooLong)?;
    s.u16(len);
    s.slice(v);
    Ok(())
}

/// A UTF-8 string with its two byte length.
pub(crate) fn put_str<S: Sink>(s: &mut S, v: &str) -> Result<(), EncodeError> {
    put_bin(s, v.as_bytes())
}

/// A property block: its length, then the properties described by `props`.
pub(crate) fn put_props<S: Sink, E: Encode>(s: &mut S, props: &E) -> Result<(), EncodeError> {
    let len = measure(props)?;
    put_varint(s, len)?;
    props.put(s)
}

/// Optional one-byte property.
pub(crate) fn prop_u8<S: Sink>(s: &mut S, id: u8, v: Option<u8>) {
    if let Some(v) = v {
        s.u8(id);
        s.u8(v);
    }
}

/// Optional two-byte property.
pub(crate) fn prop_u16<S: Sink>(s: &mut S, id: u8, v: Option<u16>) {
    if let Some(v) = v {
        s.u8(id);
        s.u16(v);
    }
}

/// Optional four-byte property.
pub(crate) fn prop_u32<S: Sink>(s: &mut S, id: u8, v: Option<u32>) {
    if let Some(v) = v {
        s.u8(id);
        s.u32(v);
    }
}

/// Optional string property.
pub(crate) fn prop_str<S: Sink>(s: &mut S, id: u8, v: Option<&str>) -> Result<(), EncodeError> {
    match v {
        Some(v) => {
            s.u8(id);
            put_str(s, v)
        }
        None => Ok(()),
    }
}

/// Optional binary property.
pub(crate) fn prop_bin<S: Sink>(s: &mut S, id: u8, v: Option<&[u8]>) -> Result<(), EncodeError> {
    match v {
        Some(v) => {
            s.u8(id);
            put_bin(s, v)
        }
        None => Ok(()),
    }
}

/// User properties, in order.
pub(crate) fn prop_user<S: Sink>(s: &mut S, v: &[UserProperty]) -> Result<(), EncodeError> {
    for (key, value) in v {
        s.u8(super::properties::USER_PROPERTY);
        put_str(s, key)?;
        put_str(s, value)?;
    }
    Ok(())
}

/// Appends a whole packet: fixed header byte `byte1`, remaining length, then `body`.
///
/// The body is measured first, so nothing is appended when it is invalid or the packet would
/// be larger than `max_size`. Returns the number of bytes appended.
pub(crate) fn emit<E: Encode>(
    byte1: u8,
    body: &E,
    max_size: Option<u32>,
    buf: &mut BytesMut,
) -> Result<usize, EncodeError> {
    let remaining = measure(body)?;
    if remaining > MAX_VARINT {
        return Err(EncodeError::TooLarge {
            size: 1 + 4 + remaining,
            max: 1 + 4 + MAX_VARINT,
        });
    }
    let total = 1 + varint_len(remaining) + remaining;
    check_max(total, max_size)?;
    let start = buf.len();
    buf.reserve(total);
    buf.u8(byte1);
    let written = put_varint(buf, remaining).and_then(|()| body.put(buf));
    if let Err(e) = written {
        buf.truncate(start);
        return Err(e);
    }
    debug_assert_eq!(buf.len() - start, total);
    Ok(total)
}

/// Fails when a `total`-byte packet exceeds the receiver's maximum packet size.
pub(crate) fn check_max(total: usize, max_size: Option<u32>) -> Result<(), EncodeError> {
    match max_size {
        Some(max) if total > max as usize => Err(EncodeError::TooLarge {
            size: total,
            max: max as usize,
        }),
        _ => Ok(()),
    }
}
