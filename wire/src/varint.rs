//! Variable byte integers (MQTT 5.0 section 1.5.5, MQTT 3.1.1 section 2.2.3): seven bits per
//! byte, least significant group first, the top bit set on every byte but the last, at most
//! four bytes. They carry the remaining length, property lengths, property identifiers and
//! subscription identifiers.

use crate::{DecodeError, EncodeError};

/// The largest value a variable byte integer holds: 268,435,455 (`0xFF 0xFF 0xFF 0x7F`).
pub const MAX: u32 = 268_435_455;

/// The longest encoding, in bytes.
pub const MAX_LEN: usize = 4;

/// The number of bytes the encoding of `value` takes, 1 to 4. Values above [`MAX`] have no
/// encoding ([`encode`] refuses them); 4 is returned for them.
#[inline]
pub const fn len(value: u32) -> usize {
    if value < 1 << 7 {
        1
    } else if value < 1 << 14 {
        2
    } else if value < 1 << 21 {
        3
    } else {
        4
    }
}

/// Encodes `value` into the front of `out` in the minimum number of bytes (MQTT-1.5.5-1) and
/// returns how many it took. A value above [`MAX`] fails with [`EncodeError::ValueTooLarge`].
pub fn encode(value: u32, out: &mut [u8; MAX_LEN]) -> Result<usize, EncodeError> {
    let mut rest = value;
    for (i, slot) in out.iter_mut().enumerate() {
        let low = (rest & 0x7F) as u8;
        rest >>= 7;
        if rest == 0 {
            *slot = low;
            return Ok(i + 1);
        }
        *slot = low | 0x80;
    }
    Err(EncodeError::ValueTooLarge)
}

/// Decodes the variable byte integer at the front of `buf`.
///
/// * `Ok(None)`: `buf` ends before the integer does (it holds fewer than four bytes, all with
///   the continuation bit set); more input may complete it.
/// * `Ok(Some((value, len)))`: the value and the number of bytes it took.
/// * [`DecodeError::VarIntTooLong`]: the fourth byte has the continuation bit set.
/// * [`DecodeError::VarIntNotMinimal`]: more bytes than the value needs, that is a last byte
///   of 0 after a continuation (MQTT-1.5.5-1).
pub fn decode(buf: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value = 0u32;
    for (i, &byte) in buf.iter().take(MAX_LEN).enumerate() {
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return Err(DecodeError::VarIntNotMinimal);
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= MAX_LEN {
        Err(DecodeError::VarIntTooLong)
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(value: u32) -> ([u8; 4], usize) {
        let mut out = [0u8; 4];
        let n = encode(value, &mut out).expect("encodable");
        (out, n)
    }

    /// The boundaries of each length, with their exact bytes (MQTT 5.0 table 1-1).
    const CASES: [(u32, &[u8]); 10] = [
        (0, &[0x00]),
        (1, &[0x01]),
        (127, &[0x7F]),
        (128, &[0x80, 0x01]),
        (16_383, &[0xFF, 0x7F]),
        (16_384, &[0x80, 0x80, 0x01]),
        (2_097_151, &[0xFF, 0xFF, 0x7F]),
        (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
        (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
        (321, &[0xC1, 0x02]),
    ];

    #[test]
    fn exact_bytes_at_every_boundary() {
        for (value, bytes) in CASES {
            let (out, n) = enc(value);
            assert_eq!(&out[..n], bytes, "encode {value}");
            assert_eq!(len(value), bytes.len(), "len {value}");
            assert_eq!(
                decode(bytes),
                Ok(Some((value, bytes.len()))),
                "decode {value}"
            );
        }
    }

    #[test]
    fn above_max_is_refused() {
        let mut out = [0u8; 4];
        assert_eq!(encode(MAX + 1, &mut out), Err(EncodeError::ValueTooLarge));
        assert_eq!(encode(u32::MAX, &mut out), Err(EncodeError::ValueTooLarge));
        assert_eq!(len(MAX + 1), 4);
    }

    #[test]
    fn decode_stops_at_the_last_byte() {
        assert_eq!(decode(&[0x05, 0xFF, 0xFF]), Ok(Some((5, 1))));
        assert_eq!(decode(&[0x80, 0x01, 0x80]), Ok(Some((128, 2))));
    }

    #[test]
    fn incomplete_needs_more() {
        assert_eq!(decode(&[]), Ok(None));
        assert_eq!(decode(&[0x80]), Ok(None));
        assert_eq!(decode(&[0xFF, 0xFF]), Ok(None));
        // Three continuation bytes: a fourth byte may still end it.
        assert_eq!(decode(&[0x80, 0x80, 0x80]), Ok(None));
    }

    #[test]
    fn five_bytes_are_malformed() {
        assert_eq!(
            decode(&[0x80, 0x80, 0x80, 0x80]),
            Err(DecodeError::VarIntTooLong)
        );
        assert_eq!(
            decode(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
            Err(DecodeError::VarIntTooLong)
        );
    }

    /// MQTT-1.5.5-1: the minimum number of bytes.
    #[test]
    fn non_minimal_is_malformed() {
        for bytes in [
            &[0x80, 0x00][..],
            &[0x81, 0x00],
            &[0x80, 0x80, 0x00],
            &[0xFF, 0xFF, 0x80, 0x00],
        ] {
            assert_eq!(
                decode(bytes),
                Err(DecodeError::VarIntNotMinimal),
                "{bytes:?}"
            );
        }
        // A single zero byte is the minimal encoding of 0.
        assert_eq!(decode(&[0x00]), Ok(Some((0, 1))));
    }

    #[test]
    fn roundtrip_sweep() {
        let mut v = 0u32;
        while v <= MAX {
            let (out, n) = enc(v);
            assert_eq!(n, len(v));
            assert_eq!(decode(&out[..n]), Ok(Some((v, n))));
            // Every strict prefix needs more input.
            assert_eq!(decode(&out[..n - 1]), Ok(None));
            v = v * 3 + 1;
        }
    }
}
