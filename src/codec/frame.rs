//! Framing: find one complete packet at the front of the read buffer.
//!
//! The fixed header is parsed once, by [`roost_wire::FixedHeader::parse`], so an oversized
//! packet is refused as soon as its remaining length is readable, before its body arrives.
//! mqttbytes' `read` functions get the same header as an `mqttbytes::FixedHeader` built from
//! it, without parsing the bytes again.

use bytes::{Bytes, BytesMut};
use mqttbytes::FixedHeader;

use super::error::DecodeError;
use super::packet::QoS;
use super::reader::Reader;

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

    /// A reader over the variable header and payload.
    pub(crate) fn body(&self) -> Reader<'_> {
        Reader::new(&self.bytes, self.body_start)
    }
}

/// Splits the next complete packet off `buf`.
///
/// `Ok(None)`: more bytes are needed and nothing was consumed. A packet larger than `max`
/// bytes (whole packet, as MQTT 5.0 Maximum Packet Size counts) fails with
/// [`DecodeError::TooLarge`] as soon as its fixed header is readable.
pub(crate) fn split(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, DecodeError> {
    let Some(h) = roost_wire::FixedHeader::parse(buf)? else {
        return Ok(None);
    };
    let total = h.packet_len();
    if total > max {
        return Err(DecodeError::TooLarge { size: total, max });
    }
    if buf.len() < total {
        return Ok(None);
    }
    let bytes = buf.split_to(total).freeze();
    Ok(Some(Frame {
        header: FixedHeader::new(h.byte1, h.header_len - 1, h.remaining_len),
        byte1: h.byte1,
        bytes,
        body_start: h.header_len,
    }))
}

/// mqttbytes' QoS as ours, for the bodies its `read` functions decode.
pub(crate) fn qos(q: mqttbytes::QoS) -> QoS {
    match q {
        mqttbytes::QoS::AtMostOnce => QoS::AtMostOnce,
        mqttbytes::QoS::AtLeastOnce => QoS::AtLeastOnce,
        mqttbytes::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}
