//! Reason codes: MQTT 5.0 (section 2.4), and the CONNACK return codes and SUBACK failure code
//! of MQTT 3.1.1, as one type that carries the byte written on the wire.

use core::fmt;

use crate::packet_type::{
    AUTH, CONNACK, DISCONNECT, PUBACK, PUBCOMP, PUBREC, PUBREL, SUBACK, UNSUBACK,
};

/// A reason code as written on the wire. MQTT 5.0 names are associated constants; the 3.1.1
/// CONNACK return codes are the `V3_` ones. Any byte is representable, so a code received
/// from a peer is kept as it was sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReasonCode(pub u8);

impl ReasonCode {
    /// 0x00: success, normal disconnection, granted QoS 0.
    pub const SUCCESS: ReasonCode = ReasonCode(0x00);
    /// 0x01: granted QoS 1 (SUBACK).
    pub const GRANTED_QOS_1: ReasonCode = ReasonCode(0x01);
    /// 0x02: granted QoS 2 (SUBACK).
    pub const GRANTED_QOS_2: ReasonCode = ReasonCode(0x02);
    /// 0x04: disconnect with will message (DISCONNECT).
    pub const DISCONNECT_WITH_WILL: ReasonCode = ReasonCode(0x04);
    /// 0x10: no matching subscribers (PUBACK, PUBREC).
    pub const NO_MATCHING_SUBSCRIBERS: ReasonCode = ReasonCode(0x10);
    /// 0x11: no subscription existed (UNSUBACK).
    pub const NO_SUBSCRIPTION_EXISTED: ReasonCode = ReasonCode(0x11);
    /// 0x18: continue authentication (AUTH).
    pub const CONTINUE_AUTHENTICATION: ReasonCode = ReasonCode(0x18);
    /// 0x19: re-authenticate (AUTH).
    pub const RE_AUTHENTICATE: ReasonCode = ReasonCode(0x19);
    /// 0x80: unspecified error; also the 3.1.1 SUBACK failure code.
    pub const UNSPECIFIED_ERROR: ReasonCode = ReasonCode(0x80);
    /// 0x81: malformed packet.
    pub const MALFORMED_PACKET: ReasonCode = ReasonCode(0x81);
    /// 0x82: protocol error.
    pub const PROTOCOL_ERROR: ReasonCode = ReasonCode(0x82);
    /// 0x83: implementation specific error.
    pub const IMPLEMENTATION_SPECIFIC_ERROR: ReasonCode = ReasonCode(0x83);
    /// 0x84: unsupported protocol version (CONNACK).
    pub const UNSUPPORTED_PROTOCOL_VERSION: ReasonCode = ReasonCode(0x84);
    /// 0x85: client identifier not valid (CONNACK).
    pub const CLIENT_IDENTIFIER_NOT_VALID: ReasonCode = ReasonCode(0x85);
    /// 0x86: bad user name or password (CONNACK).
    pub const BAD_USER_NAME_OR_PASSWORD: ReasonCode = ReasonCode(0x86);
    /// 0x87: not authorized.
    pub const NOT_AUTHORIZED: ReasonCode = ReasonCode(0x87);
    /// 0x88: server unavailable (CONNACK).
    pub const SERVER_UNAVAILABLE: ReasonCode = ReasonCode(0x88);
    /// 0x89: server busy.
    pub const SERVER_BUSY: ReasonCode = ReasonCode(0x89);
    /// 0x8A: banned (CONNACK).
    pub const BANNED: ReasonCode = ReasonCode(0x8A);
    /// 0x8B: server shutting down (DISCONNECT).
    pub const SERVER_SHUTTING_DOWN: ReasonCode = ReasonCode(0x8B);
    /// 0x8C: bad authentication method.
    pub const BAD_AUTHENTICATION_METHOD: ReasonCode = ReasonCode(0x8C);
    /// 0x8D: keep alive timeout (DISCONNECT).
    pub const KEEP_ALIVE_TIMEOUT: ReasonCode = ReasonCode(0x8D);
    /// 0x8E: session taken over (DISCONNECT).
    pub const SESSION_TAKEN_OVER: ReasonCode = ReasonCode(0x8E);
    /// 0x8F: topic filter invalid.
    pub const TOPIC_FILTER_INVALID: ReasonCode = ReasonCode(0x8F);
    /// 0x90: topic name invalid.
    pub const TOPIC_NAME_INVALID: ReasonCode = ReasonCode(0x90);
    /// 0x91: packet identifier in use.
    pub const PACKET_IDENTIFIER_IN_USE: ReasonCode = ReasonCode(0x91);
    /// 0x92: packet identifier not found (PUBREL, PUBCOMP).
    pub const PACKET_IDENTIFIER_NOT_FOUND: ReasonCode = ReasonCode(0x92);
    /// 0x93: receive maximum exceeded (DISCONNECT).
    pub const RECEIVE_MAXIMUM_EXCEEDED: ReasonCode = ReasonCode(0x93);
    /// 0x94: topic alias invalid (DISCONNECT).
    pub const TOPIC_ALIAS_INVALID: ReasonCode = ReasonCode(0x94);
    /// 0x95: packet too large.
    pub const PACKET_TOO_LARGE: ReasonCode = ReasonCode(0x95);
    /// 0x96: message rate too high (DISCONNECT).
    pub const MESSAGE_RATE_TOO_HIGH: ReasonCode = ReasonCode(0x96);
    /// 0x97: quota exceeded.
    pub const QUOTA_EXCEEDED: ReasonCode = ReasonCode(0x97);
    /// 0x98: administrative action (DISCONNECT).
    pub const ADMINISTRATIVE_ACTION: ReasonCode = ReasonCode(0x98);
    /// 0x99: payload format invalid.
    pub const PAYLOAD_FORMAT_INVALID: ReasonCode = ReasonCode(0x99);
    /// 0x9A: retain not supported.
    pub const RETAIN_NOT_SUPPORTED: ReasonCode = ReasonCode(0x9A);
    /// 0x9B: QoS not supported.
    pub const QOS_NOT_SUPPORTED: ReasonCode = ReasonCode(0x9B);
    /// 0x9C: use another server.
    pub const USE_ANOTHER_SERVER: ReasonCode = ReasonCode(0x9C);
    /// 0x9D: server moved.
    pub const SERVER_MOVED: ReasonCode = ReasonCode(0x9D);
    /// 0x9E: shared subscriptions not supported (SUBACK, DISCONNECT).
    pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: ReasonCode = ReasonCode(0x9E);
    /// 0x9F: connection rate exceeded.
    pub const CONNECTION_RATE_EXCEEDED: ReasonCode = ReasonCode(0x9F);
    /// 0xA0: maximum connect time (DISCONNECT).
    pub const MAXIMUM_CONNECT_TIME: ReasonCode = ReasonCode(0xA0);
    /// 0xA1: subscription identifiers not supported.
    pub const SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED: ReasonCode = ReasonCode(0xA1);
    /// 0xA2: wildcard subscriptions not supported.
    pub const WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED: ReasonCode = ReasonCode(0xA2);

    /// 3.1.1 CONNACK 0x01: unacceptable protocol version (3.1.1 MQTT-3.1.2-2).
    pub const V3_UNACCEPTABLE_PROTOCOL_VERSION: ReasonCode = ReasonCode(0x01);
    /// 3.1.1 CONNACK 0x02: identifier rejected (3.1.1 MQTT-3.1.3-8).
    pub const V3_IDENTIFIER_REJECTED: ReasonCode = ReasonCode(0x02);
    /// 3.1.1 CONNACK 0x03: server unavailable.
    pub const V3_SERVER_UNAVAILABLE: ReasonCode = ReasonCode(0x03);
    /// 3.1.1 CONNACK 0x04: bad user name or password.
    pub const V3_BAD_USER_NAME_OR_PASSWORD: ReasonCode = ReasonCode(0x04);
    /// 3.1.1 CONNACK 0x05: not authorized.
    pub const V3_NOT_AUTHORIZED: ReasonCode = ReasonCode(0x05);
    /// 3.1.1 SUBACK 0x80: failure.
    pub const V3_SUBSCRIBE_FAILURE: ReasonCode = ReasonCode(0x80);

    /// True for codes of 0x80 and above, which report a failure (MQTT 5.0 section 2.4).
    #[inline]
    pub const fn is_error(self) -> bool {
        self.0 >= 0x80
    }

    /// True if an MQTT 5.0 packet of type `packet_type` may carry this code (the reason code
    /// tables of sections 3.2.2.2, 3.4.2.1, 3.5.2.1, 3.6.2.1, 3.7.2.1, 3.9.3, 3.11.3,
    /// 3.14.2.1 and 3.15.2.1). False for packet types without a reason code.
    pub fn is_valid_v5(self, packet_type: u8) -> bool {
        let allowed: &[u8] = match packet_type {
            CONNACK => &[
                0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90,
                0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
            ],
            PUBACK | PUBREC => &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99],
            PUBREL | PUBCOMP => &[0x00, 0x92],
            SUBACK => &[
                0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
            ],
            UNSUBACK => &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91],
            DISCONNECT => &[
                0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93,
                0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1,
                0xA2,
            ],
            AUTH => &[0x00, 0x18, 0x19],
            _ => &[],
        };
        allowed.contains(&self.0)
    }

    /// True if this is a valid MQTT 3.1.1 SUBACK return code: a granted QoS (0, 1, 2) or
    /// failure (0x80) (3.1.1 section 3.9.3).
    #[inline]
    pub const fn is_valid_v311_suback(self) -> bool {
        matches!(self.0, 0x00 | 0x01 | 0x02 | 0x80)
    }

    /// The MQTT 5.0 name of the code, if it has one.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x00 => "success",
            0x01 => "granted QoS 1",
            0x02 => "granted QoS 2",
            0x04 => "disconnect with will message",
            0x10 => "no matching subscribers",
            0x11 => "no subscription existed",
            0x18 => "continue authentication",
            0x19 => "re-authenticate",
            0x80 => "unspecified error",
            0x81 => "malformed packet",
            0x82 => "protocol error",
            0x83 => "implementation specific error",
            0x84 => "unsupported protocol version",
            0x85 => "client identifier not valid",
            0x86 => "bad user name or password",
            0x87 => "not authorized",
            0x88 => "server unavailable",
            0x89 => "server busy",
            0x8A => "banned",
            0x8B => "server shutting down",
            0x8C => "bad authentication method",
            0x8D => "keep alive timeout",
            0x8E => "session taken over",
            0x8F => "topic filter invalid",
            0x90 => "topic name invalid",
            0x91 => "packet identifier in use",
            0x92 => "packet identifier not found",
            0x93 => "receive maximum exceeded",
            0x94 => "topic alias invalid",
            0x95 => "packet too large",
            0x96 => "message rate too high",
            0x97 => "quota exceeded",
            0x98 => "administrative action",
            0x99 => "payload format invalid",
            0x9A => "retain not supported",
            0x9B => "QoS not supported",
            0x9C => "use another server",
            0x9D => "server moved",
            0x9E => "shared subscriptions not supported",
            0x9F => "connection rate exceeded",
            0xA0 => "maximum connect time",
            0xA1 => "subscription identifiers not supported",
            0xA2 => "wildcard subscriptions not supported",
            _ => return None,
        })
    }
}

impl From<u8> for ReasonCode {
    #[inline]
    fn from(code: u8) -> Self {
        ReasonCode(code)
    }
}

impl From<ReasonCode> for u8 {
    #[inline]
    fn from(code: ReasonCode) -> Self {
        code.0
    }
}

/// Compares with the byte on the wire (convenient where codes arrive as numbers).
impl PartialEq<u8> for ReasonCode {
    #[inline]
    fn eq(&self, other: &u8) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "0x{:02X} ({name})", self.0),
            None => write!(f, "0x{:02X}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString;

    use super::*;

    #[test]
    fn display_names_the_code() {
        assert_eq!(
            ReasonCode::QUOTA_EXCEEDED.to_string(),
            "0x97 (quota exceeded)"
        );
        assert_eq!(ReasonCode(0x7F).to_string(), "0x7F");
        assert!(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED.is_error());
        assert!(!ReasonCode::NO_MATCHING_SUBSCRIBERS.is_error());
        assert_eq!(ReasonCode::from(0x87), 0x87);
        assert_eq!(u8::from(ReasonCode::BANNED), 0x8A);
    }

    #[test]
    fn every_named_code_is_valid_somewhere_and_every_valid_code_is_named() {
        let types = [
            CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, DISCONNECT, AUTH,
        ];
        for b in 0..=255u8 {
            let code = ReasonCode(b);
            let somewhere = types.iter().any(|&t| code.is_valid_v5(t));
            assert_eq!(somewhere, code.name().is_some(), "{code}");
        }
    }

    #[test]
    fn per_packet_tables() {
        assert!(ReasonCode::NO_MATCHING_SUBSCRIBERS.is_valid_v5(PUBACK));
        assert!(ReasonCode::NO_MATCHING_SUBSCRIBERS.is_valid_v5(PUBREC));
        assert!(!ReasonCode::NO_MATCHING_SUBSCRIBERS.is_valid_v5(PUBREL));
        assert!(ReasonCode::PACKET_IDENTIFIER_NOT_FOUND.is_valid_v5(PUBCOMP));
        assert!(!ReasonCode::PACKET_IDENTIFIER_NOT_FOUND.is_valid_v5(PUBACK));
        assert!(ReasonCode::GRANTED_QOS_2.is_valid_v5(SUBACK));
        assert!(!ReasonCode::GRANTED_QOS_2.is_valid_v5(UNSUBACK));
        assert!(ReasonCode::NO_SUBSCRIPTION_EXISTED.is_valid_v5(UNSUBACK));
        assert!(ReasonCode::DISCONNECT_WITH_WILL.is_valid_v5(DISCONNECT));
        assert!(!ReasonCode::DISCONNECT_WITH_WILL.is_valid_v5(AUTH));
        assert!(ReasonCode::RE_AUTHENTICATE.is_valid_v5(AUTH));
        assert!(ReasonCode::BANNED.is_valid_v5(CONNACK));
        assert!(!ReasonCode::SUCCESS.is_valid_v5(crate::packet_type::PUBLISH));
        for b in 0..=255u8 {
            assert_eq!(
                ReasonCode(b).is_valid_v311_suback(),
                [0, 1, 2, 0x80].contains(&b)
            );
        }
    }
}
