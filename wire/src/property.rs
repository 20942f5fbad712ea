//! MQTT 5.0 properties (section 2.2.2): identifiers, their data types, and a reader over a
//! property block.
//!
//! Which property a packet may carry, and the rules on their values (0 or 1 flags, non-zero
//! limits, repetition), are for the receiver; this module reads what is there.

use crate::{DecodeError, Reader};

/// Payload Format Indicator (byte): PUBLISH, will.
pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
/// Message Expiry Interval (four byte integer): PUBLISH, will.
pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
/// Content Type (UTF-8 string): PUBLISH, will.
pub const CONTENT_TYPE: u8 = 0x03;
/// Response Topic (UTF-8 string): PUBLISH, will.
pub const RESPONSE_TOPIC: u8 = 0x08;
/// Correlation Data (binary data): PUBLISH, will.
pub const CORRELATION_DATA: u8 = 0x09;
/// Subscription Identifier (variable byte integer): PUBLISH, SUBSCRIBE.
pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
/// Session Expiry Interval (four byte integer): CONNECT, CONNACK, DISCONNECT.
pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
/// Assigned Client Identifier (UTF-8 string): CONNACK.
pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
/// Server Keep Alive (two byte integer): CONNACK.
pub const SERVER_KEEP_ALIVE: u8 = 0x13;
/// Authentication Method (UTF-8 string): CONNECT, CONNACK, AUTH.
pub const AUTHENTICATION_METHOD: u8 = 0x15;
/// Authentication Data (binary data): CONNECT, CONNACK, AUTH.
pub const AUTHENTICATION_DATA: u8 = 0x16;
/// Request Problem Information (byte): CONNECT.
pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
/// Will Delay Interval (four byte integer): will.
pub const WILL_DELAY_INTERVAL: u8 = 0x18;
/// Request Response Information (byte): CONNECT.
pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
/// Response Information (UTF-8 string): CONNACK.
pub const RESPONSE_INFORMATION: u8 = 0x1A;
/// Server Reference (UTF-8 string): CONNACK, DISCONNECT.
pub const SERVER_REFERENCE: u8 = 0x1C;
/// Reason String (UTF-8 string): CONNACK, acknowledgements, DISCONNECT, AUTH.
pub const REASON_STRING: u8 = 0x1F;
/// Receive Maximum (two byte integer): CONNECT, CONNACK.
pub const RECEIVE_MAXIMUM: u8 = 0x21;
/// Topic Alias Maximum (two byte integer): CONNECT, CONNACK.
pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
/// Topic Alias (two byte integer): PUBLISH.
pub const TOPIC_ALIAS: u8 = 0x23;
/// Maximum QoS (byte): CONNACK.
pub const MAXIMUM_QOS: u8 = 0x24;
/// Retain Available (byte): CONNACK.
pub const RETAIN_AVAILABLE: u8 = 0x25;
/// User Property (UTF-8 string pair): every packet with properties, may repeat.
pub const USER_PROPERTY: u8 = 0x26;
/// Maximum Packet Size (four byte integer): CONNECT, CONNACK.
pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
/// Wildcard Subscription Available (byte): CONNACK.
pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
/// Subscription Identifier Available (byte): CONNACK.
pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
/// Shared Subscription Available (byte): CONNACK.
pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

/// One property with its identifier, typed by the identifier (MQTT 5.0 table 2-4); strings
/// and binary data borrow from the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Property<'a> {
    /// A one-byte property: (identifier, value).
    Byte(u8, u8),
    /// A two byte integer property.
    U16(u8, u16),
    /// A four byte integer property.
    U32(u8, u32),
    /// A variable byte integer property (subscription identifier).
    VarInt(u8, u32),
    /// A UTF-8 string property (content type, response topic, ...).
    Str(u8, &'a str),
    /// A binary data property (correlation data, authentication data).
    Bin(u8, &'a [u8]),
    /// A user property: (name, value).
    Pair(&'a str, &'a str),
}

impl<'a> Property<'a> {
    /// The property identifier.
    pub const fn id(&self) -> u8 {
        match *self {
            Property::Byte(id, _)
            | Property::U16(id, _)
            | Property::U32(id, _)
            | Property::VarInt(id, _)
            | Property::Str(id, _)
            | Property::Bin(id, _) => id,
            Property::Pair(..) => USER_PROPERTY,
        }
    }

    /// Reads one property: its identifier (a variable byte integer), then a value of the
    /// identifier's type (MQTT 5.0 section 2.2.2.2). An identifier MQTT 5.0 does not define
    /// is [`DecodeError::UnknownProperty`]; strings follow the rules of
    /// [`utf8_string`](crate::utf8_string).
    pub fn read(r: &mut Reader<'a>) -> Result<Property<'a>, DecodeError> {
        let id = match u8::try_from(r.varint()?) {
            Ok(id) => id,
            Err(_) => return Err(DecodeError::UnknownProperty),
        };
        Ok(match id {
            PAYLOAD_FORMAT_INDICATOR
            | REQUEST_PROBLEM_INFORMATION
            | REQUEST_RESPONSE_INFORMATION
            | MAXIMUM_QOS
            | RETAIN_AVAILABLE
            | WILDCARD_SUBSCRIPTION_AVAILABLE
            | SUBSCRIPTION_IDENTIFIER_AVAILABLE
            | SHARED_SUBSCRIPTION_AVAILABLE => Property::Byte(id, r.u8()?),
            SERVER_KEEP_ALIVE | RECEIVE_MAXIMUM | TOPIC_ALIAS_MAXIMUM | TOPIC_ALIAS => {
                Property::U16(id, r.u16()?)
            }
            MESSAGE_EXPIRY_INTERVAL
            | SESSION_EXPIRY_INTERVAL
            | WILL_DELAY_INTERVAL
            | MAXIMUM_PACKET_SIZE => Property::U32(id, r.u32()?),
            SUBSCRIPTION_IDENTIFIER => Property::VarInt(id, r.varint()?),
            CONTENT_TYPE
            | RESPONSE_TOPIC
            | ASSIGNED_CLIENT_IDENTIFIER
            | AUTHENTICATION_METHOD
            | RESPONSE_INFORMATION
            | SERVER_REFERENCE
            | REASON_STRING => Property::Str(id, r.string()?),
            CORRELATION_DATA | AUTHENTICATION_DATA => Property::Bin(id, r.binary()?),
            USER_PROPERTY => Property::Pair(r.string()?, r.string()?),
            _ => return Err(DecodeError::UnknownProperty),
        })
    }
}

/// The properties of a property block (without its length prefix, as
/// [`Reader::properties`] returns it), in order.
///
/// As an [`Iterator`] it yields `Ok` properties, then at most one `Err` for a malformed one,
/// then ends.
#[derive(Debug, Clone, Default)]
pub struct Properties<'a> {
    r: Reader<'a>,
}

impl<'a> Properties<'a> {
    /// The properties in `block`.
    #[inline]
    pub const fn new(block: &'a [u8]) -> Properties<'a> {
        Properties {
            r: Reader::new(block),
        }
    }

    /// The next property, `Ok(None)` at the end of the block. A property that runs past the
    /// end of the block is [`DecodeError::Truncated`].
    pub fn next_prop(&mut self) -> Result<Option<Property<'a>>, DecodeError> {
        if self.r.is_empty() {
            return Ok(None);
        }
        Property::read(&mut self.r).map(Some)
    }
}

impl<'a> Iterator for Properties<'a> {
    type Item = Result<Property<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.next_prop();
        if item.is_err() {
            self.r = Reader::default();
        }
        item.transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every defined identifier with one encoded value of its type.
    const ALL: [(&[u8], Property<'static>); 27] = [
        (&[0x01, 1], Property::Byte(0x01, 1)),
        (&[0x02, 0, 0, 1, 0], Property::U32(0x02, 256)),
        (&[0x03, 0, 1, b'a'], Property::Str(0x03, "a")),
        (&[0x08, 0, 1, b'r'], Property::Str(0x08, "r")),
        (&[0x09, 0, 2, 0, 0xFF], Property::Bin(0x09, &[0, 0xFF])),
        (&[0x0B, 0x80, 0x01], Property::VarInt(0x0B, 128)),
        (&[0x11, 0, 0, 0x0E, 0x10], Property::U32(0x11, 3600)),
        (&[0x12, 0, 1, b'c'], Property::Str(0x12, "c")),
        (&[0x13, 0, 30], Property::U16(0x13, 30)),
        (&[0x15, 0, 1, b'm'], Property::Str(0x15, "m")),
        (&[0x16, 0, 1, 7], Property::Bin(0x16, &[7])),
        (&[0x17, 0], Property::Byte(0x17, 0)),
        (&[0x18, 0, 0, 0, 5], Property::U32(0x18, 5)),
        (&[0x19, 1], Property::Byte(0x19, 1)),
        (&[0x1A, 0, 1, b'i'], Property::Str(0x1A, "i")),
        (&[0x1C, 0, 1, b's'], Property::Str(0x1C, "s")),
        (&[0x1F, 0, 2, b'o', b'k'], Property::Str(0x1F, "ok")),
        (&[0x21, 0, 16], Property::U16(0x21, 16)),
        (&[0x22, 0, 10], Property::U16(0x22, 10)),
        (&[0x23, 0, 1], Property::U16(0x23, 1)),
        (&[0x24, 1], Property::Byte(0x24, 1)),
        (&[0x25, 0], Property::Byte(0x25, 0)),
        (&[0x26, 0, 1, b'k', 0, 1, b'v'], Property::Pair("k", "v")),
        (&[0x27, 0, 0, 4, 0], Property::U32(0x27, 1024)),
        (&[0x28, 1], Property::Byte(0x28, 1)),
        (&[0x29, 1], Property::Byte(0x29, 1)),
        (&[0x2A, 0], Property::Byte(0x2A, 0)),
    ];

    #[test]
    fn every_identifier_reads_its_type() {
        for (bytes, expected) in ALL {
            let mut r = Reader::new(bytes);
            assert_eq!(Property::read(&mut r), Ok(expected), "{bytes:02x?}");
            assert!(r.is_empty(), "{bytes:02x?}");
            assert_eq!(expected.id(), bytes[0]);
            // Cut anywhere inside the value: truncated, never a panic or a short value.
            for cut in 1..bytes.len() {
                let mut r = Reader::new(&bytes[..cut]);
                assert_eq!(
                    Property::read(&mut r),
                    Err(DecodeError::Truncated),
                    "{bytes:02x?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn undefined_identifiers_are_unknown() {
        let defined: [u8; 27] = core::array::from_fn(|i| ALL[i].0[0]);
        for id in 0..=0x7Fu8 {
            if !defined.contains(&id) {
                let bytes = [id, 0, 0, 0, 0];
                let mut r = Reader::new(&bytes);
                assert_eq!(
                    Property::read(&mut r),
                    Err(DecodeError::UnknownProperty),
                    "{id:#04x}"
                );
            }
        }
        // Identifiers are variable byte integers: above 255 cannot be one of ours.
        let mut r = Reader::new(&[0x80, 0x02, 0]);
        assert_eq!(Property::read(&mut r), Err(DecodeError::UnknownProperty));
        // A non-minimal identifier is malformed as an integer.
        let mut r = Reader::new(&[0x81, 0x00, 0]);
        assert_eq!(Property::read(&mut r), Err(DecodeError::VarIntNotMinimal));
    }

    #[test]
    fn strings_in_properties_follow_the_string_rules() {
        let mut r = Reader::new(&[0x1F, 0, 1, 0]);
        assert_eq!(Property::read(&mut r), Err(DecodeError::NullCharacter));
        let mut r = Reader::new(&[0x26, 0, 1, b'k', 0, 1, 0xFF]);
        assert_eq!(Property::read(&mut r), Err(DecodeError::InvalidUtf8));
    }

    #[test]
    fn iterate_a_block() {
        let block = [
            0x01, 1, 0x03, 0, 2, b'a', b'b', 0x09, 0, 1, 7, 0x26, 0, 1, b'k', 0, 1, b'v', 0x0B,
            0x80, 0x01, 0x02, 0, 0, 0, 9,
        ];
        let mut it = Properties::new(&block);
        assert_eq!(it.next(), Some(Ok(Property::Byte(1, 1))));
        assert_eq!(it.next(), Some(Ok(Property::Str(3, "ab"))));
        assert_eq!(it.next(), Some(Ok(Property::Bin(9, &[7]))));
        assert_eq!(it.next(), Some(Ok(Property::Pair("k", "v"))));
        assert_eq!(it.next(), Some(Ok(Property::VarInt(0x0B, 128))));
        assert_eq!(it.next(), Some(Ok(Property::U32(2, 9))));
        assert_eq!(it.next(), None);
        assert_eq!(Properties::new(&[]).next_prop(), Ok(None));
    }

    #[test]
    fn iteration_stops_after_an_error() {
        let mut it = Properties::new(&[0x23, 0, 1, 0x7F, 0x23, 0, 2]);
        assert_eq!(it.next(), Some(Ok(Property::U16(0x23, 1))));
        assert_eq!(it.next(), Some(Err(DecodeError::UnknownProperty)));
        assert_eq!(it.next(), None);
        let mut it = Properties::new(&[0x21, 0]);
        assert_eq!(it.next_prop(), Err(DecodeError::Truncated));
    }
}
