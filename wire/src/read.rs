//! A bounds-checked cursor over received bytes: the MQTT data representations of MQTT 5.0
//! section 1.5, read as borrowed slices.

use crate::{DecodeError, varint};

/// Reads MQTT data types from the front of a packet body (or any part of one); nothing
/// panics. A read that would run past the end fails with [`DecodeError::Truncated`] and
/// consumes nothing; a field that is all there but invalid (a string with U+0000, packet
/// identifier 0) fails with its own error after it has been consumed. Either way the packet
/// is malformed and decoding stops there.
#[derive(Debug, Clone, Default)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    #[inline]
    pub const fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    /// The bytes not read yet.
    #[inline]
    pub const fn as_slice(&self) -> &'a [u8] {
        self.buf
    }

    /// How many bytes are left.
    #[inline]
    pub const fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// True when everything has been read.
    #[inline]
    pub const fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Fails with [`DecodeError::TrailingBytes`] unless everything has been read: the
    /// content must end where the remaining length (or property length) says.
    #[inline]
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }

    /// The next `n` bytes.
    #[inline]
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let (head, tail) = self.buf.split_at_checked(n).ok_or(DecodeError::Truncated)?;
        self.buf = tail;
        Ok(head)
    }

    /// Everything not read yet (for instance a PUBLISH payload).
    #[inline]
    pub fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.buf)
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, tail) = self
            .buf
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Truncated)?;
        self.buf = tail;
        Ok(*head)
    }

    /// A byte.
    #[inline]
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let [b] = self.array()?;
        Ok(b)
    }

    /// A two byte integer, big-endian (MQTT 5.0 section 1.5.2).
    #[inline]
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_be_bytes)
    }

    /// A four byte integer, big-endian (MQTT 5.0 section 1.5.3).
    #[inline]
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_be_bytes)
    }

    /// A variable byte integer (MQTT 5.0 section 1.5.5): at most four bytes, minimally
    /// encoded (MQTT-1.5.5-1). One that runs past the end is [`DecodeError::Truncated`].
    pub fn varint(&mut self) -> Result<u32, DecodeError> {
        let (value, n) = varint::decode(self.buf)?.ok_or(DecodeError::Truncated)?;
        self.take(n)?;
        Ok(value)
    }

    /// A packet identifier, which must not be 0 (MQTT-2.2.1-3; MQTT-2.3.1-1 in 3.1.1).
    pub fn packet_id(&mut self) -> Result<u16, DecodeError> {
        match self.u16()? {
            0 => Err(DecodeError::PacketIdZero),
            id => Ok(id),
        }
    }

    /// Binary data: a two byte length, then that many bytes (MQTT 5.0 section 1.5.6).
    pub fn binary(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// A UTF-8 encoded string: a two byte length, then well-formed UTF-8 without U+0000
    /// (MQTT 5.0 section 1.5.4; see [`utf8_string`]).
    pub fn string(&mut self) -> Result<&'a str, DecodeError> {
        let raw = self.binary()?;
        utf8_string(raw)
    }

    /// A property block: a variable byte integer length, then that many bytes of properties
    /// (MQTT 5.0 section 2.2.2.1), returned without the length for
    /// [`Properties`](crate::property::Properties).
    pub fn properties(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.varint()?;
        self.take(len as usize)
    }
}

/// Checks the rules of a UTF-8 encoded string's content and returns it as `&str`:
/// well-formed UTF-8 without encoded surrogates (MQTT-1.5.4-1) and without U+0000
/// (MQTT-1.5.4-2). A byte order mark is kept as the character U+FEFF, never stripped
/// (MQTT-1.5.4-3). In 3.1.1 these are MQTT-1.5.3-1, -2 and -3.
pub fn utf8_string(raw: &[u8]) -> Result<&str, DecodeError> {
    let s = core::str::from_utf8(raw).map_err(|_| DecodeError::InvalidUtf8)?;
    // A plain loop rather than `contains`, whose word-at-a-time search costs about 180 bytes
    // of flash on Cortex-M; MQTT strings are short.
    for &b in raw {
        if b == 0 {
            return Err(DecodeError::NullCharacter);
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_big_endian() {
        let mut r = Reader::new(&[1, 0x12, 0x34, 0xDE, 0xAD, 0xBE, 0xEF, 9]);
        assert_eq!(r.u8(), Ok(1));
        assert_eq!(r.u16(), Ok(0x1234));
        assert_eq!(r.u32(), Ok(0xDEAD_BEEF));
        assert_eq!(r.remaining(), 1);
        assert_eq!(r.finish(), Err(DecodeError::TrailingBytes));
        assert_eq!(r.rest(), &[9]);
        assert!(r.is_empty());
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn short_reads_fail_and_consume_nothing() {
        let mut r = Reader::new(&[0xAB]);
        assert_eq!(r.u16(), Err(DecodeError::Truncated));
        assert_eq!(r.u32(), Err(DecodeError::Truncated));
        assert_eq!(r.take(2), Err(DecodeError::Truncated));
        assert_eq!(r.take(usize::MAX), Err(DecodeError::Truncated));
        assert_eq!(r.remaining(), 1);
        assert_eq!(r.u8(), Ok(0xAB));
        assert_eq!(r.u8(), Err(DecodeError::Truncated));
        assert_eq!(r.take(0), Ok(&[][..]));
    }

    #[test]
    fn varints_in_a_body() {
        let mut r = Reader::new(&[0xC1, 0x02, 0x00, 0x80]);
        assert_eq!(r.varint(), Ok(321));
        assert_eq!(r.varint(), Ok(0));
        // Cut short inside a complete packet: truncated, not "need more".
        assert_eq!(r.varint(), Err(DecodeError::Truncated));
        let mut r = Reader::new(&[0x80, 0x00]);
        assert_eq!(r.varint(), Err(DecodeError::VarIntNotMinimal));
        let mut r = Reader::new(&[0x80, 0x80, 0x80, 0x80, 0x01]);
        assert_eq!(r.varint(), Err(DecodeError::VarIntTooLong));
        assert_eq!(r.remaining(), 5);
    }

    #[test]
    fn packet_id_zero_is_refused() {
        assert_eq!(
            Reader::new(&[0, 0]).packet_id(),
            Err(DecodeError::PacketIdZero)
        );
        assert_eq!(Reader::new(&[0, 1]).packet_id(), Ok(1));
        assert_eq!(Reader::new(&[0]).packet_id(), Err(DecodeError::Truncated));
    }

    #[test]
    fn binary_and_strings_borrow() {
        let bytes = [0, 3, b'a', b'/', b'b', 0, 0, 0, 2, 0xFF, 0x00, 7];
        let mut r = Reader::new(&bytes);
        let s = r.string().unwrap();
        assert_eq!(s, "a/b");
        assert_eq!(s.as_ptr(), bytes[2..].as_ptr());
        assert_eq!(r.string(), Ok(""));
        assert_eq!(r.binary(), Ok(&[0xFF, 0x00][..]));
        assert_eq!(r.rest(), &[7]);
    }

    #[test]
    fn length_past_the_end_is_truncated() {
        let mut r = Reader::new(&[0, 5, b'a', b'b']);
        assert_eq!(r.binary(), Err(DecodeError::Truncated));
        let mut r = Reader::new(&[0, 5, b'a', b'b']);
        assert_eq!(r.string(), Err(DecodeError::Truncated));
        assert_eq!(Reader::new(&[0]).binary(), Err(DecodeError::Truncated));
        assert_eq!(Reader::new(&[]).string(), Err(DecodeError::Truncated));
    }

    /// MQTT-1.5.4-1: well-formed UTF-8, no surrogates; MQTT-1.5.4-2: no U+0000.
    #[test]
    fn string_rules() {
        assert_eq!(utf8_string(b"caf\xC3\xA9"), Ok("café"));
        assert_eq!(utf8_string(&[0xFF]), Err(DecodeError::InvalidUtf8));
        assert_eq!(utf8_string(&[0xC3]), Err(DecodeError::InvalidUtf8)); // cut sequence
        assert_eq!(utf8_string(&[0xC0, 0x80]), Err(DecodeError::InvalidUtf8)); // overlong NUL
        assert_eq!(
            utf8_string(&[0xED, 0xA0, 0x80]),
            Err(DecodeError::InvalidUtf8)
        ); // U+D800
        assert_eq!(utf8_string(b"a\0b"), Err(DecodeError::NullCharacter));
        assert_eq!(utf8_string(&[0]), Err(DecodeError::NullCharacter));
        let mut r = Reader::new(&[0, 2, b'a', 0]);
        assert_eq!(r.string(), Err(DecodeError::NullCharacter));
        // Other control characters and non-characters are allowed (MQTT 5.0 section 1.5.4).
        assert_eq!(utf8_string(b"\x01\x7F"), Ok("\u{1}\u{7F}"));
        assert_eq!(utf8_string("\u{FFFF}".as_bytes()), Ok("\u{FFFF}"));
    }

    /// MQTT-1.5.4-3: a byte order mark is U+FEFF and stays in the string.
    #[test]
    fn byte_order_mark_is_kept() {
        let mut r = Reader::new(&[0, 4, 0xEF, 0xBB, 0xBF, b'x']);
        assert_eq!(r.string(), Ok("\u{FEFF}x"));
    }

    #[test]
    fn property_block() {
        let mut r = Reader::new(&[3, 0x23, 0, 1, 0xAA]);
        assert_eq!(r.properties(), Ok(&[0x23, 0, 1][..]));
        assert_eq!(r.rest(), &[0xAA]);
        assert_eq!(Reader::new(&[0]).properties(), Ok(&[][..]));
        assert_eq!(
            Reader::new(&[4, 0x23, 0, 1]).properties(),
            Err(DecodeError::Truncated)
        );
        assert_eq!(Reader::new(&[]).properties(), Err(DecodeError::Truncated));
    }
}
