//! A bounds-checked cursor over one frame's bytes: [`roost_wire::Reader`] for the MQTT data
//! types, plus what the owned packet model needs from the frame: binary data and payloads as
//! zero-copy [`Bytes`] slices of it, strings as `String`.

use bytes::Bytes;

use super::error::DecodeError;

/// Reads MQTT data types from the front of (part of) a frame; every read fails with a
/// [`DecodeError`] instead of running past the end.
pub(crate) struct Reader<'a> {
    /// The whole frame, which the slices returned by `inner` point into.
    frame: &'a Bytes,
    inner: roost_wire::Reader<'a>,
}

impl<'a> Reader<'a> {
    /// A reader over `frame[start..]`.
    pub(crate) fn new(frame: &'a Bytes, start: usize) -> Reader<'a> {
        Reader {
            frame,
            inner: roost_wire::Reader::new(frame.get(start..).unwrap_or_default()),
        }
    }

    /// Bytes left to read.
    pub(crate) fn remaining(&self) -> usize {
        self.inner.remaining()
    }

    /// True when everything has been read.
    pub(crate) fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Fails unless everything has been read: the remaining length must match the content.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        Ok(self.inner.finish()?)
    }

    /// One byte.
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.inner.u8()?)
    }

    /// A big-endian two byte integer.
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(self.inner.u16()?)
    }

    /// A variable byte integer: at most four bytes, minimally encoded (MQTT-1.5.5-1).
    pub(crate) fn varint(&mut self) -> Result<usize, DecodeError> {
        Ok(self.inner.varint()? as usize)
    }

    /// A packet identifier, which must not be 0 (MQTT-2.2.1-3).
    pub(crate) fn packet_id(&mut self) -> Result<u16, DecodeError> {
        Ok(self.inner.packet_id()?)
    }

    /// The next `n` bytes, borrowed.
    pub(crate) fn take_raw(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        Ok(self.inner.take(n)?)
    }

    /// Binary data (a two byte length then that many bytes), borrowed.
    pub(crate) fn binary_raw(&mut self) -> Result<&'a [u8], DecodeError> {
        Ok(self.inner.binary()?)
    }

    /// Binary data, shared with the frame (no copy).
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let raw = self.binary_raw()?;
        Ok(self.shared(raw))
    }

    /// A UTF-8 encoded string: valid UTF-8 without U+0000 (MQTT-1.5.4-1, MQTT-1.5.4-2).
    pub(crate) fn string(&mut self) -> Result<String, DecodeError> {
        Ok(self.inner.string()?.to_owned())
    }

    /// Everything not read yet, shared with the frame (no copy).
    pub(crate) fn rest(mut self) -> Bytes {
        let rest = self.inner.rest();
        self.shared(rest)
    }

    /// `part` (a slice of this frame, as the readers return them) as a shared [`Bytes`].
    pub(crate) fn shared(&self, part: &[u8]) -> Bytes {
        self.frame.slice_ref(part)
    }
}
