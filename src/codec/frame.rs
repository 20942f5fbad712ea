//! Framing: find one complete packet at the front of the read buffer.
//!
//! mqttbytes' `check()` decides whether the frame is complete. Before that, the fixed header
//! is parsed here too, so an oversized packet is refused as soon as its remaining length is
//! readable, before its body arrives (`check()` compares the limit with the remaining length
//! only and cannot report the header length).

use bytes::{Bytes, BytesMut};
use mqttbytes::FixedHeader;

use super::error::DecodeError;
use super::reader::{Reader, parse_varint};

/// One complete packet, split off the read buffer.
pub(crate) struct Frame {
    /// The fixed header as mqttbytes sees it, for its `read` functions.
    pub header: FixedHeader,
    /// The first byte: packet type and flags.
    pub byte1: u8,
    /// The whole packet, fixed header included; payloads are slices of it.
    pub bytes: Bytes,
    /// Where the variable header starts in `bytes`.
    pub body_start: usize,
}

impl Frame {
    /// The packet type (upper four bits of the first byte).
    pub(crate) fn kind(&self) -> u8 {
        self.byte1 >> 4
    }

    /// The remaining length: variable header plus payload.
    pub(crate) fn remaining_len(&self) -> usize {
        self.bytes.len() - self.body_start
    }

    /// A reader over the variable header and payload.
    pub(crate) fn body(&self) -> Reader {
        Reader::new(self.bytes.slice(self.body_start..))
    }
}

/// Splits the next complete packet off `buf`.
///
/// `Ok(None)`: more bytes are needed and nothing was consumed. A packet larger than `max`
/// bytes (whole packet, as MQTT 5.0 Maximum Packet Size counts) fails with
/// [`DecodeError::TooLarge`] as soon as its fixed header is readable.
pub(crate) fn split(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, DecodeError> {
    let Some((remaining, len_len)) = buf.get(1..).map(parse_varint).transpose()?.flatten() else {
        return Ok(None);
    };
    let total = 1 + len_len + remaining;
    if total > max {
        return Err(DecodeError::TooLarge { size: total, max });
    }
    let header = match mqttbytes::check(buf.iter(), usize::MAX) {
        Ok(header) => header,
        Err(mqttbytes::Error::InsufficientBytes(_)) => return Ok(None),
        Err(_) => return Err(DecodeError::Malformed("invalid remaining length")),
    };
    if header.frame_length() != total {
        return Err(DecodeError::Malformed("invalid remaining length"));
    }
    let bytes = buf.split_to(total).freeze();
    Ok(Some(Frame {
        header,
        byte1: bytes[0], // the frame is at least 2 bytes long
        bytes,
        body_start: 1 + len_len,
    }))
}
