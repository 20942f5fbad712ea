//! A bounds-checked cursor over one frame's bytes: the MQTT primitive data types.

use bytes::{Buf, Bytes};

use super::error::DecodeError;

/// The largest value a variable byte integer can hold (four bytes).
pub(crate) const MAX_VARINT: usize = 268_435_455;

/// Reads MQTT primitive types from the front of a frame; every read fails with
/// [`DecodeError::Malformed`] instead of running past the end.
pub(crate) struct Reader {
    buf: Bytes,
}

const SHORT: DecodeError = DecodeError::Malformed("packet shorter than its content");

impl Reader {
    /// A reader over `buf`.
    pub(crate) fn new(buf: Bytes) -> Reader {
        Reader { buf }
    }

    /// Bytes left to read.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// True when everything has been read.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Fails unless everything has been read: the remaining length must match the content.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed(
                "bytes left after the packet's content",
            ))
        }
    }

    /// One byte.
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        if self.buf.is_empty() {
            return Err(SHORT);
        }
        Ok(self.buf.get_u8())
    }

    /// A big-endian two byte integer.
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        if self.buf.len() < 2 {
            return Err(SHORT);
        }
        Ok(self.buf.get_u16())
    }

    /// A big-endian four byte integer.
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        if self.buf.len() < 4 {
            return Err(SHORT);
        }
        Ok(self.buf.get_u32())
    }

    /// A variable byte integer: at most four bytes, minimally encoded (MQTT-1.5.5-1).
    pub(crate) fn varint(&mut self) -> Result<usize, DecodeError> {
        match parse_varint(&self.buf)? {
            Some((value, len)) => {
                self.buf.advance(len);
                Ok(value)
            }
            None => Err(SHORT),
        }
    }

    /// The next `n` bytes, shared with the frame (no copy).
    pub(crate) fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if self.buf.len() < n {
            return Err(SHORT);
        }
        Ok(self.buf.split_to(n))
    }

    /// Binary data: a two byte length then that many bytes.
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()? as usize;
        self.take(len)
    }

    /// A UTF-8 encoded string: valid UTF-8 without U+0000 (MQTT-1.5.3-1, MQTT-1.5.3-2).
    pub(crate) fn string(&mut self) -> Result<String, DecodeError> {
        let raw = self.binary()?;
        to_string(&raw)
    }

    /// Everything not read yet, shared with the frame (no copy).
    pub(crate) fn rest(self) -> Bytes {
        self.buf
    }
}

/// Checks MQTT string rules on `raw` and copies it into a `String`.
pub(crate) fn to_string(raw: &[u8]) -> Result<String, DecodeError> {
    let s = std::str::from_utf8(raw)
        .map_err(|_| DecodeError::Malformed("string is not valid UTF-8"))?;
    if s.as_bytes().contains(&0) {
        return Err(DecodeError::Malformed("string contains U+0000"));
    }
    Ok(s.to_owned())
}

/// Parses a variable byte integer at the front of `buf`: `Ok(None)` if it is incomplete,
/// otherwise its value and how many bytes it took. More than four bytes, or a non-minimal
/// encoding, is malformed (MQTT-1.5.5-1).
pub(crate) fn parse_varint(buf: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
    let mut value = 0usize;
    for (i, &byte) in buf.iter().take(4).enumerate() {
        value |= ((byte & 0x7F) as usize) << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return Err(DecodeError::Malformed(
                    "variable byte integer not minimally encoded",
                ));
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= 4 {
        Err(DecodeError::Malformed(
            "variable byte integer longer than 4 bytes",
        ))
    } else {
        Ok(None)
    }
}
