//! Encoding on top of [`roost_wire::Sink`]: each packet's layout is described once (an
//! [`Encode`] impl) and used for both its length ([`roost_wire::Writer::counter`]) and its
//! bytes (appended to a `BytesMut` through [`Append`]).

use bytes::{BufMut, BytesMut};
use roost_wire::{Sink, Writer};

use super::error::{EncodeError, MAX_PACKET_LEN};
use super::packet::UserProperty;

/// A [`Sink`] that appends to a `BytesMut`; it never fails.
pub(crate) struct Append<'a>(pub &'a mut BytesMut);

impl Sink for Append<'_> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) -> Result<(), roost_wire::EncodeError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    #[inline]
    fn u8(&mut self, v: u8) -> Result<(), roost_wire::EncodeError> {
        self.0.put_u8(v);
        Ok(())
    }

    #[inline]
    fn u16(&mut self, v: u16) -> Result<(), roost_wire::EncodeError> {
        self.0.put_u16(v);
        Ok(())
    }

    #[inline]
    fn u32(&mut self, v: u32) -> Result<(), roost_wire::EncodeError> {
        self.0.put_u32(v);
        Ok(())
    }
}

/// A packet body or a property block, described once for both passes.
pub(crate) trait Encode {
    /// Writes (or measures) the content into `s`.
    fn put<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError>;
}

/// The encoded length of `e`, validating it on the way (string lengths, values).
pub(crate) fn measure<E: Encode>(e: &E) -> Result<usize, EncodeError> {
    let mut c = Writer::counter();
    e.put(&mut c)?;
    Ok(c.position())
}

/// A property block: its length, then the properties described by `props`.
pub(crate) fn put_props<S: Sink, E: Encode>(s: &mut S, props: &E) -> Result<(), EncodeError> {
    let len = measure(props)?;
    s.varint(u32::try_from(len).map_err(|_| EncodeError::ValueTooLarge)?)?;
    props.put(s)
}

/// Optional one-byte property.
pub(crate) fn prop_u8<S: Sink>(s: &mut S, id: u8, v: Option<u8>) -> Result<(), EncodeError> {
    if let Some(v) = v {
        s.u8(id)?;
        s.u8(v)?;
    }
    Ok(())
}

/// Optional two-byte property.
pub(crate) fn prop_u16<S: Sink>(s: &mut S, id: u8, v: Option<u16>) -> Result<(), EncodeError> {
    if let Some(v) = v {
        s.u8(id)?;
        s.u16(v)?;
    }
    Ok(())
}

/// Optional four-byte property.
pub(crate) fn prop_u32<S: Sink>(s: &mut S, id: u8, v: Option<u32>) -> Result<(), EncodeError> {
    if let Some(v) = v {
        s.u8(id)?;
        s.u32(v)?;
    }
    Ok(())
}

/// Optional string property.
pub(crate) fn prop_str<S: Sink>(s: &mut S, id: u8, v: Option<&str>) -> Result<(), EncodeError> {
    if let Some(v) = v {
        s.u8(id)?;
        s.string(v)?;
    }
    Ok(())
}

/// Optional binary property.
pub(crate) fn prop_bin<S: Sink>(s: &mut S, id: u8, v: Option<&[u8]>) -> Result<(), EncodeError> {
    if let Some(v) = v {
        s.u8(id)?;
        s.binary(v)?;
    }
    Ok(())
}

/// User properties, in order.
pub(crate) fn prop_user<S: Sink>(s: &mut S, v: &[UserProperty]) -> Result<(), EncodeError> {
    for (key, value) in v {
        s.u8(roost_wire::property::USER_PROPERTY)?;
        s.string(key)?;
        s.string(value)?;
    }
    Ok(())
}

/// The size of a whole packet with `remaining` bytes after the fixed header; too large for
/// the remaining-length field is [`EncodeError::TooLarge`].
pub(crate) fn packet_len(remaining: usize) -> Result<usize, EncodeError> {
    roost_wire::packet_len(remaining).map_err(|_| EncodeError::TooLarge {
        size: remaining.saturating_add(5),
        max: MAX_PACKET_LEN,
    })
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
    let total = packet_len(remaining)?;
    check_max(total, max_size)?;
    let start = buf.len();
    buf.reserve(total);
    let mut out = Append(buf);
    let written = match out.fixed_header(byte1, remaining) {
        Ok(()) => body.put(&mut out),
        Err(e) => Err(e.into()),
    };
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
