//! Errors reported by the decoder and the encoder.

use roost_wire::ReasonCode;
use thiserror::Error;

/// Why an incoming byte stream could not be decoded into a packet.
///
/// Every decode error is fatal for the connection: the caller answers (CONNACK or, in MQTT
/// 5.0, DISCONNECT with [`DecodeError::reason_code`]) where the protocol allows it, then
/// closes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes do not form a valid packet (MQTT 5.0 reason code 0x81).
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// The packet is well formed but breaks a protocol rule (MQTT 5.0 reason code 0x82).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The packet is larger than the maximum accepted size (MQTT 5.0 reason code 0x95).
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Size of the whole packet announced by its fixed header.
        size: usize,
        /// The limit it exceeds.
        max: usize,
    },
    /// CONNECT with an unknown protocol name or level (3 for "MQIsdp"). The caller answers
    /// CONNACK 0x01 in the 3.1.1 form, or 0x84 in the 5.0 form when `level` is 5, then closes.
    #[error("unsupported protocol level {level}")]
    UnsupportedProtocol {
        /// The protocol level byte as received.
        level: u8,
    },
    /// A PUBLISH (or will) topic name that is empty without a topic alias, or contains a
    /// wildcard (MQTT 5.0 reason code 0x90).
    #[error("invalid topic name")]
    TopicNameInvalid,
}

impl DecodeError {
    /// The MQTT 5.0 reason code that describes this error in a CONNACK or DISCONNECT.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::Malformed(_) => ReasonCode::MALFORMED_PACKET,
            DecodeError::Protocol(_) => ReasonCode::PROTOCOL_ERROR,
            DecodeError::TooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            DecodeError::UnsupportedProtocol { .. } => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            DecodeError::TopicNameInvalid => ReasonCode::TOPIC_NAME_INVALID,
        }
    }
}

/// The wire primitives' errors: a packet that arrives in the wrong direction (or state) is a
/// protocol error, an invalid topic name keeps its own variant, everything else is malformed.
impl From<roost_wire::DecodeError> for DecodeError {
    fn from(e: roost_wire::DecodeError) -> Self {
        match e {
            roost_wire::DecodeError::UnexpectedPacket => DecodeError::Protocol(e.as_str()),
            roost_wire::DecodeError::InvalidTopicName => DecodeError::TopicNameInvalid,
            _ => DecodeError::Malformed(e.as_str()),
        }
    }
}

/// Why a packet could not be encoded. Nothing is appended to the buffer when encoding fails.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded packet would exceed the receiver's maximum packet size (MQTT-3.1.2-24) or
    /// the largest size the remaining-length field can express.
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Size of the whole encoded packet.
        size: usize,
        /// The limit it exceeds.
        max: usize,
    },
    /// A string or binary field is longer than 65535 bytes.
    #[error("string or binary field longer than 65535 bytes")]
    StringTooLong,
    /// A packet that needs a packet identifier has 0.
    #[error("packet identifier 0")]
    PacketIdZero,
    /// A variable byte integer (subscription identifier) is above 268,435,455.
    #[error("value too large for a variable byte integer")]
    ValueTooLarge,
    /// The packet does not exist in the chosen protocol version (AUTH in 3.1.1).
    #[error("packet type not supported in this protocol version")]
    UnsupportedInVersion,
}

/// The wire primitives' errors. The broker encodes into growing buffers and frames packets
/// itself (see `writer::emit`), so a full buffer or an oversized remaining length only shows
/// up here as [`EncodeError::TooLarge`] without a known size.
impl From<roost_wire::EncodeError> for EncodeError {
    fn from(e: roost_wire::EncodeError) -> Self {
        match e {
            roost_wire::EncodeError::TooLong => EncodeError::StringTooLong,
            roost_wire::EncodeError::ValueTooLarge => EncodeError::ValueTooLarge,
            roost_wire::EncodeError::BufferTooSmall | roost_wire::EncodeError::PacketTooLarge => {
                EncodeError::TooLarge {
                    size: usize::MAX,
                    max: MAX_PACKET_LEN,
                }
            }
        }
    }
}

/// The largest packet MQTT can express: first byte, four remaining-length bytes and the
/// largest remaining length.
pub(crate) const MAX_PACKET_LEN: usize = 1 + 4 + roost_wire::varint::MAX as usize;
