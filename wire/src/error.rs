//! Errors of the wire primitives: small, `Copy`, without payloads, so they cost nothing on a
//! microcontroller; [`DecodeError::as_str`] and `Display` describe them for logs.

use core::fmt;

/// Why received bytes break the MQTT wire format.
///
/// In MQTT 5.0 terms every variant except [`DecodeError::UnexpectedPacket`] makes the packet
/// a Malformed Packet (reason code 0x81); an unexpected packet is a Protocol Error (0x82).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecodeError {
    /// The content ends before a field does: a length, an integer or a string runs past the
    /// end of the packet (or of its property block).
    Truncated,
    /// Bytes are left after the content of the packet.
    TrailingBytes,
    /// A variable byte integer whose fourth byte still has the continuation bit set: at most
    /// four bytes are allowed (MQTT 5.0 section 1.5.5, MQTT 3.1.1 section 2.2.3).
    VarIntTooLong,
    /// A variable byte integer that uses more bytes than its value needs (MQTT-1.5.5-1).
    VarIntNotMinimal,
    /// A UTF-8 encoded string that is not well-formed UTF-8, including encoded surrogates
    /// (MQTT-1.5.4-1; MQTT-1.5.3-1 in 3.1.1).
    InvalidUtf8,
    /// A UTF-8 encoded string that contains U+0000 (MQTT-1.5.4-2; MQTT-1.5.3-2 in 3.1.1).
    NullCharacter,
    /// Packet type 0, which is reserved (MQTT 5.0 section 2.1.2).
    ReservedPacketType,
    /// Reserved flag bits that are not as the specification fixes them: in the fixed header
    /// (MQTT-2.1.3-1, MQTT 3.1.1 MQTT-2.2.2-1/2), the CONNECT flags (MQTT-3.1.2-3), the
    /// CONNACK flags (MQTT-3.2.2-1) or subscription options (MQTT-3.8.3-5).
    ReservedFlags,
    /// A QoS of 3 (MQTT-3.3.1-4), or a QoS the receiver does not support.
    InvalidQoS,
    /// A PUBLISH with the DUP flag set and QoS 0 (MQTT-3.3.1-2).
    DupWithQoS0,
    /// A packet identifier of 0 where one is required (MQTT-2.2.1-3).
    PacketIdZero,
    /// A property identifier MQTT 5.0 does not define (section 2.2.2.2).
    UnknownProperty,
    /// A topic name that is empty without a topic alias or contains a wildcard character
    /// (MQTT-3.3.2-2, MQTT-4.7.3-1). The primitives here do not produce it; it is for
    /// receivers that check topic names.
    InvalidTopicName,
    /// A packet the receiver does not accept here: its direction of flow (MQTT 5.0 section
    /// 2.1.2), the protocol version or the connection state rules it out.
    UnexpectedPacket,
}

impl DecodeError {
    /// A short description, for logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            DecodeError::Truncated => "packet shorter than its content",
            DecodeError::TrailingBytes => "bytes left after the packet's content",
            DecodeError::VarIntTooLong => "variable byte integer longer than 4 bytes",
            DecodeError::VarIntNotMinimal => "variable byte integer not minimally encoded",
            DecodeError::InvalidUtf8 => "string is not valid UTF-8",
            DecodeError::NullCharacter => "string contains U+0000",
            DecodeError::ReservedPacketType => "reserved packet type 0",
            DecodeError::ReservedFlags => "reserved flag bits set",
            DecodeError::InvalidQoS => "QoS 3",
            DecodeError::DupWithQoS0 => "PUBLISH with DUP set and QoS 0",
            DecodeError::PacketIdZero => "packet identifier 0",
            DecodeError::UnknownProperty => "unknown property",
            DecodeError::InvalidTopicName => "invalid topic name",
            DecodeError::UnexpectedPacket => "unexpected packet type",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::error::Error for DecodeError {}

/// Why a value or a packet could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncodeError {
    /// The output buffer is too small for the packet.
    BufferTooSmall,
    /// A UTF-8 string or binary data field is longer than 65,535 bytes (MQTT 5.0 sections
    /// 1.5.4 and 1.5.6); it is refused, never truncated.
    TooLong,
    /// A variable byte integer above 268,435,455 (MQTT 5.0 section 1.5.5).
    ValueTooLarge,
    /// A remaining length above 268,435,455: the packet is larger than MQTT can express
    /// (MQTT 5.0 section 2.1.4).
    PacketTooLarge,
}

impl EncodeError {
    /// A short description, for logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            EncodeError::BufferTooSmall => "buffer too small for the packet",
            EncodeError::TooLong => "string or binary field longer than 65535 bytes",
            EncodeError::ValueTooLarge => "value too large for a variable byte integer",
            EncodeError::PacketTooLarge => "packet larger than the remaining length can express",
        }
    }
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::error::Error for EncodeError {}
