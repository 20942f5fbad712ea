//! The fixed header (MQTT 5.0 section 2.1): packet types, flag bits and their rules, and
//! remaining-length framing.

use crate::{DecodeError, QoS, varint};

/// Control packet types: the upper four bits of the first byte (MQTT 5.0 section 2.1.2).
/// 0 is reserved; AUTH exists only in MQTT 5.0 (15 is reserved in 3.1.1).
pub mod packet_type {
    /// Client to server: connection request.
    pub const CONNECT: u8 = 1;
    /// Server to client: connect acknowledgement.
    pub const CONNACK: u8 = 2;
    /// Both directions: publish message.
    pub const PUBLISH: u8 = 3;
    /// Both directions: publish acknowledgement (QoS 1).
    pub const PUBACK: u8 = 4;
    /// Both directions: publish received (QoS 2 part 1).
    pub const PUBREC: u8 = 5;
    /// Both directions: publish release (QoS 2 part 2).
    pub const PUBREL: u8 = 6;
    /// Both directions: publish complete (QoS 2 part 3).
    pub const PUBCOMP: u8 = 7;
    /// Client to server: subscribe request.
    pub const SUBSCRIBE: u8 = 8;
    /// Server to client: subscribe acknowledgement.
    pub const SUBACK: u8 = 9;
    /// Client to server: unsubscribe request.
    pub const UNSUBSCRIBE: u8 = 10;
    /// Server to client: unsubscribe acknowledgement.
    pub const UNSUBACK: u8 = 11;
    /// Client to server: ping request.
    pub const PINGREQ: u8 = 12;
    /// Server to client: ping response.
    pub const PINGRESP: u8 = 13;
    /// Client to server, and in MQTT 5.0 also server to client: disconnect notification.
    pub const DISCONNECT: u8 = 14;
    /// Both directions, MQTT 5.0 only: authentication exchange.
    pub const AUTH: u8 = 15;
}

/// Flag bits: of the PUBLISH fixed header (MQTT 5.0 section 3.3.1), the CONNECT flags (3.1.2.3),
/// the CONNACK flags (3.2.2.1) and the subscription options (3.8.3.1).
pub mod flags {
    /// PUBLISH: duplicate delivery.
    pub const DUP: u8 = 0b1000;
    /// PUBLISH: position of the two QoS bits.
    pub const QOS_SHIFT: u8 = 1;
    /// PUBLISH: retain.
    pub const RETAIN: u8 = 0b0001;

    /// CONNECT: the reserved bit, which must be 0 (MQTT-3.1.2-3).
    pub const CONNECT_RESERVED: u8 = 0x01;
    /// CONNECT: clean start (5.0) / clean session (3.1.1).
    pub const CLEAN_START: u8 = 0x02;
    /// CONNECT: a will message follows.
    pub const WILL: u8 = 0x04;
    /// CONNECT: position of the two will QoS bits.
    pub const WILL_QOS_SHIFT: u8 = 3;
    /// CONNECT: the will message is retained.
    pub const WILL_RETAIN: u8 = 0x20;
    /// CONNECT: a password follows.
    pub const PASSWORD: u8 = 0x40;
    /// CONNECT: a user name follows.
    pub const USER_NAME: u8 = 0x80;

    /// CONNACK: session present; the other bits are reserved (MQTT-3.2.2-1).
    pub const SESSION_PRESENT: u8 = 0x01;

    /// Subscription options: no local (5.0).
    pub const NO_LOCAL: u8 = 0x04;
    /// Subscription options: retain as published (5.0).
    pub const RETAIN_AS_PUBLISHED: u8 = 0x08;
    /// Subscription options: position of the two retain handling bits (5.0).
    pub const RETAIN_HANDLING_SHIFT: u8 = 4;
    /// Subscription options: bits reserved in 5.0 (MQTT-3.8.3-5).
    pub const SUBSCRIPTION_RESERVED_V5: u8 = 0b1100_0000;
    /// Subscription options: bits reserved in 3.1.1, all but the QoS (3.1.1 MQTT-3-8.3-4).
    pub const SUBSCRIPTION_RESERVED_V311: u8 = 0b1111_1100;
}

/// The protocol name and levels of CONNECT (MQTT 5.0 sections 3.1.2.1 and 3.1.2.2).
pub mod connect {
    /// The protocol name, "MQTT".
    pub const PROTOCOL_NAME: &str = "MQTT";
    /// Protocol level of MQTT 3.1.1.
    pub const LEVEL_3_1_1: u8 = 4;
    /// Protocol level of MQTT 5.0.
    pub const LEVEL_5: u8 = 5;
    /// The protocol name of MQTT 3.1, the version before 3.1.1.
    pub const PROTOCOL_NAME_3_1: &str = "MQIsdp";
    /// Protocol level of MQTT 3.1.
    pub const LEVEL_3_1: u8 = 3;
    /// Set in the protocol level by a broker connecting as a bridge (mosquitto's
    /// `try_private`), on top of level 3 or 4. Not part of the specifications.
    pub const BRIDGE: u8 = 0x80;
}

use packet_type::*;

/// The first byte of a packet of type `packet_type` with the flags the type requires: 0b0010
/// for PUBREL, SUBSCRIBE and UNSUBSCRIBE, 0 for the others (MQTT 5.0 section 2.1.3). For
/// PUBLISH use [`publish_first_byte`].
#[inline]
pub const fn first_byte(packet_type: u8) -> u8 {
    let flags = match packet_type {
        PUBREL | SUBSCRIBE | UNSUBSCRIBE => 0b0010,
        _ => 0,
    };
    packet_type << 4 | flags
}

/// The first byte of a PUBLISH (MQTT 5.0 section 3.3.1). DUP must be false for QoS 0
/// (MQTT-3.3.1-2); that is up to the caller.
#[inline]
pub const fn publish_first_byte(dup: bool, qos: QoS, retain: bool) -> u8 {
    PUBLISH << 4 | (dup as u8) << 3 | (qos as u8) << flags::QOS_SHIFT | retain as u8
}

/// Checks the flag bits of a first byte (MQTT 5.0 section 2.1.3, MQTT 3.1.1 section 2.2.2):
///
/// * packet type 0 is reserved: [`DecodeError::ReservedPacketType`];
/// * PUBREL, SUBSCRIBE and UNSUBSCRIBE must carry 0b0010 (MQTT-3.6.1-1, MQTT-3.8.1-1,
///   MQTT-3.10.1-1), all other types except PUBLISH 0 (MQTT-2.1.3-1; 3.1.1 MQTT-2.2.2-1):
///   [`DecodeError::ReservedFlags`];
/// * PUBLISH must not have QoS 3 (MQTT-3.3.1-4): [`DecodeError::InvalidQoS`], nor DUP with
///   QoS 0 (MQTT-3.3.1-2): [`DecodeError::DupWithQoS0`].
///
/// Whether AUTH (type 15) exists depends on the protocol version; that is for the caller.
pub const fn check_flags(byte1: u8) -> Result<(), DecodeError> {
    let bits = byte1 & 0x0F;
    match byte1 >> 4 {
        0 => Err(DecodeError::ReservedPacketType),
        PUBLISH => {
            let qos = (bits >> flags::QOS_SHIFT) & 0b11;
            if qos == 3 {
                Err(DecodeError::InvalidQoS)
            } else if qos == 0 && bits & flags::DUP != 0 {
                Err(DecodeError::DupWithQoS0)
            } else {
                Ok(())
            }
        }
        t => {
            if bits == first_byte(t) & 0x0F {
                Ok(())
            } else {
                Err(DecodeError::ReservedFlags)
            }
        }
    }
}

/// True if a client may send packets of this type (MQTT 5.0 section 2.1.2, direction of
/// flow). DISCONNECT and AUTH go both ways in 5.0.
#[inline]
pub const fn sent_by_client(packet_type: u8) -> bool {
    matches!(
        packet_type,
        CONNECT
            | PUBLISH
            | PUBACK
            | PUBREC
            | PUBREL
            | PUBCOMP
            | SUBSCRIBE
            | UNSUBSCRIBE
            | PINGREQ
            | DISCONNECT
            | AUTH
    )
}

/// True if a server may send packets of this type (MQTT 5.0 section 2.1.2, direction of
/// flow). In 3.1.1 a server never sends DISCONNECT or AUTH; that is for the caller.
#[inline]
pub const fn sent_by_server(packet_type: u8) -> bool {
    matches!(
        packet_type,
        CONNACK
            | PUBLISH
            | PUBACK
            | PUBREC
            | PUBREL
            | PUBCOMP
            | SUBACK
            | UNSUBACK
            | PINGRESP
            | DISCONNECT
            | AUTH
    )
}

/// A parsed fixed header: the first byte and the remaining length (MQTT 5.0 section 2.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FixedHeader {
    /// The first byte: packet type (upper four bits) and flags (lower four).
    pub byte1: u8,
    /// The length of the fixed header itself: 2 to 5 bytes.
    pub header_len: usize,
    /// The remaining length: variable header plus payload, in bytes.
    pub remaining_len: usize,
}

impl FixedHeader {
    /// Parses the fixed header at the front of `buf`, the framing step of a stream reader.
    ///
    /// `Ok(None)` means `buf` does not hold the whole fixed header yet. Otherwise the header
    /// is returned as soon as its remaining length is readable, whether the rest of the packet
    /// has arrived or not ([`FixedHeader::packet_len`] says how much is needed), so a size
    /// limit can be applied before the body is read. A remaining length of more than four
    /// bytes ([`DecodeError::VarIntTooLong`]) or not minimally encoded
    /// ([`DecodeError::VarIntNotMinimal`]) is malformed. The flags are not checked here; see
    /// [`check_flags`].
    pub fn parse(buf: &[u8]) -> Result<Option<FixedHeader>, DecodeError> {
        let Some((&byte1, rest)) = buf.split_first() else {
            return Ok(None);
        };
        Ok(varint::decode(rest)?.map(|(remaining, n)| FixedHeader {
            byte1,
            header_len: 1 + n,
            remaining_len: remaining as usize,
        }))
    }

    /// The packet type (upper four bits of the first byte).
    #[inline]
    pub const fn packet_type(&self) -> u8 {
        self.byte1 >> 4
    }

    /// The flags (lower four bits of the first byte).
    #[inline]
    pub const fn flags(&self) -> u8 {
        self.byte1 & 0x0F
    }

    /// The length of the whole packet: fixed header plus remaining length.
    #[inline]
    pub const fn packet_len(&self) -> usize {
        self.header_len + self.remaining_len
    }

    /// The variable header and payload, if `packet` (which starts with this header) holds
    /// all of them; `None` while bytes are missing. Bytes after the packet are not included.
    #[inline]
    pub fn body<'a>(&self, packet: &'a [u8]) -> Option<&'a [u8]> {
        packet.get(self.header_len..self.packet_len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes() {
        assert_eq!(first_byte(CONNECT), 0x10);
        assert_eq!(first_byte(PUBACK), 0x40);
        assert_eq!(first_byte(PUBREL), 0x62);
        assert_eq!(first_byte(SUBSCRIBE), 0x82);
        assert_eq!(first_byte(UNSUBSCRIBE), 0xA2);
        assert_eq!(first_byte(PINGREQ), 0xC0);
        assert_eq!(first_byte(DISCONNECT), 0xE0);
        assert_eq!(first_byte(AUTH), 0xF0);
        assert_eq!(publish_first_byte(false, QoS::AtMostOnce, false), 0x30);
        assert_eq!(publish_first_byte(true, QoS::AtLeastOnce, true), 0x3B);
        assert_eq!(publish_first_byte(false, QoS::ExactlyOnce, false), 0x34);
    }

    /// Every first byte: exactly the ones the fixed-header rules allow pass.
    #[test]
    fn flag_rules_for_every_first_byte() {
        for byte1 in 0..=255u8 {
            let (t, f) = (byte1 >> 4, byte1 & 0x0F);
            let expected = match t {
                0 => Err(DecodeError::ReservedPacketType),
                PUBLISH if (f >> 1) & 3 == 3 => Err(DecodeError::InvalidQoS),
                PUBLISH if (f >> 1) & 3 == 0 && f & 8 != 0 => Err(DecodeError::DupWithQoS0),
                PUBLISH => Ok(()),
                PUBREL | SUBSCRIBE | UNSUBSCRIBE if f == 2 => Ok(()),
                PUBREL | SUBSCRIBE | UNSUBSCRIBE => Err(DecodeError::ReservedFlags),
                _ if f == 0 => Ok(()),
                _ => Err(DecodeError::ReservedFlags),
            };
            assert_eq!(check_flags(byte1), expected, "{byte1:#04x}");
        }
        // Every first byte produced here passes.
        for t in 1..=15 {
            assert_eq!(check_flags(first_byte(t)), Ok(()), "type {t}");
        }
    }

    #[test]
    fn publish_flags_in_detail() {
        assert_eq!(check_flags(0x30), Ok(()));
        assert_eq!(check_flags(0x31), Ok(())); // retain
        assert_eq!(check_flags(0x3A), Ok(())); // DUP, QoS 1
        assert_eq!(check_flags(0x3C), Ok(())); // DUP, QoS 2
        assert_eq!(check_flags(0x36), Err(DecodeError::InvalidQoS));
        assert_eq!(check_flags(0x3F), Err(DecodeError::InvalidQoS));
        assert_eq!(check_flags(0x38), Err(DecodeError::DupWithQoS0));
        assert_eq!(check_flags(0x60), Err(DecodeError::ReservedFlags)); // PUBREL without 0010
        assert_eq!(check_flags(0x41), Err(DecodeError::ReservedFlags));
        assert_eq!(check_flags(0x00), Err(DecodeError::ReservedPacketType));
    }

    #[test]
    fn direction_of_flow() {
        let client: [u8; 11] = [1, 3, 4, 5, 6, 7, 8, 10, 12, 14, 15];
        let server: [u8; 11] = [2, 3, 4, 5, 6, 7, 9, 11, 13, 14, 15];
        for t in 0..=15u8 {
            assert_eq!(sent_by_client(t), client.contains(&t), "client {t}");
            assert_eq!(sent_by_server(t), server.contains(&t), "server {t}");
        }
    }

    #[test]
    fn parse_every_length() {
        let h = |byte1, header_len, remaining_len| {
            Ok(Some(FixedHeader {
                byte1,
                header_len,
                remaining_len,
            }))
        };
        assert_eq!(FixedHeader::parse(&[0xC0, 0x00]), h(0xC0, 2, 0));
        assert_eq!(FixedHeader::parse(&[0x30, 0x7F]), h(0x30, 2, 127));
        assert_eq!(FixedHeader::parse(&[0x30, 0xFF, 0x7F]), h(0x30, 3, 16_383));
        assert_eq!(
            FixedHeader::parse(&[0x30, 0xFF, 0xFF, 0x7F]),
            h(0x30, 4, 2_097_151)
        );
        assert_eq!(
            FixedHeader::parse(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F, 0xAA]),
            h(0x30, 5, 268_435_455)
        );
        let hdr = FixedHeader::parse(&[0x62, 0x02]).unwrap().unwrap();
        assert_eq!((hdr.packet_type(), hdr.flags()), (PUBREL, 2));
        assert_eq!(hdr.packet_len(), 4);
    }

    #[test]
    fn parse_needs_more_or_fails() {
        assert_eq!(FixedHeader::parse(&[]), Ok(None));
        assert_eq!(FixedHeader::parse(&[0x30]), Ok(None));
        assert_eq!(FixedHeader::parse(&[0x30, 0x80]), Ok(None));
        assert_eq!(FixedHeader::parse(&[0x30, 0x80, 0x80, 0x80]), Ok(None));
        assert_eq!(
            FixedHeader::parse(&[0x30, 0x80, 0x80, 0x80, 0x80]),
            Err(DecodeError::VarIntTooLong)
        );
        assert_eq!(
            FixedHeader::parse(&[0xC0, 0x80, 0x00]),
            Err(DecodeError::VarIntNotMinimal)
        );
    }

    #[test]
    fn body_of_a_complete_packet() {
        let packet = [0x40, 0x02, 0x00, 0x07, 0xC0];
        let hdr = FixedHeader::parse(&packet).unwrap().unwrap();
        assert_eq!(hdr.body(&packet), Some(&[0x00, 0x07][..]));
        assert_eq!(hdr.body(&packet[..3]), None);
        let empty = FixedHeader::parse(&[0xD0, 0x00]).unwrap().unwrap();
        assert_eq!(empty.body(&[0xD0, 0x00]), Some(&[][..]));
    }
}
