//! Reason codes: MQTT 5.0 (section 2.4) and the CONNACK return codes and SUBACK failure code of
//! MQTT 3.1.1, as one type that carries the byte written on the wire.

use std::fmt;

/// A reason code as written on the wire. MQTT 5.0 names are associated constants; the 3.1.1
/// CONNACK return codes are the `V3_` ones. Any byte is representable, so a code received from
/// a peer is kept as it was sent.
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
    /// 0x80: unspecified error; also the 3.1.1 SUBACK failure code.
    pub const UNSPECIFIED_ERROR: ReasonCode = ReasonCode(0x80);
    /// 0x81: malformed packet.
    pub const MALFORMED_PACKET: ReasonCode = ReasonCode(0x81);
    /// 0x82: protocol error.
    pub const PROTOCOL_ERROR: ReasonCode = ReasonCode(0x82);
    /// 0x84: unsupported protocol version (CONNACK).
    pub const UNSUPPORTED_PROTOCOL_VERSION: ReasonCode = ReasonCode(0x84);
    /// 0x86: bad user name or password (CONNACK).
    pub const BAD_USER_NAME_OR_PASSWORD: ReasonCode = ReasonCode(0x86);
    /// 0x87: not authorized.
    pub const NOT_AUTHORIZED: ReasonCode = ReasonCode(0x87);
    /// 0x8B: server shutting down (DISCONNECT).
    pub const SERVER_SHUTTING_DOWN: ReasonCode = ReasonCode(0x8B);
    /// 0x8C: bad authentication method.
    pub const BAD_AUTHENTICATION_METHOD: ReasonCode = ReasonCode(0x8C);
    /// 0x8D: keep alive timeout (DISCONNECT).
    pub const KEEP_ALIVE_TIMEOUT: ReasonCode = ReasonCode(0x8D);
    /// 0x8E: session taken over (DISCONNECT).
    pub const SESSION_TAKEN_OVER: ReasonCode = ReasonCode(0x8E);
    /// 0x90: topic name invalid.
    pub const TOPIC_NAME_INVALID: ReasonCode = ReasonCode(0x90);
    /// 0x92: packet identifier not found (PUBREL, PUBCOMP).
    pub const PACKET_IDENTIFIER_NOT_FOUND: ReasonCode = ReasonCode(0x92);
    /// 0x93: receive maximum exceeded (DISCONNECT).
    pub const RECEIVE_MAXIMUM_EXCEEDED: ReasonCode = ReasonCode(0x93);
    /// 0x94: topic alias invalid (DISCONNECT).
    pub const TOPIC_ALIAS_INVALID: ReasonCode = ReasonCode(0x94);
    /// 0x95: packet too large.
    pub const PACKET_TOO_LARGE: ReasonCode = ReasonCode(0x95);
    /// 0x97: quota exceeded.
    pub const QUOTA_EXCEEDED: ReasonCode = ReasonCode(0x97);
    /// 0x9E: shared subscriptions not supported (SUBACK).
    pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: ReasonCode = ReasonCode(0x9E);

    /// 3.1.1 CONNACK 0x01: unacceptable protocol version (MQTT-3.1.2-2).
    pub const V3_UNACCEPTABLE_PROTOCOL_VERSION: ReasonCode = ReasonCode(0x01);
    /// 3.1.1 CONNACK 0x02: identifier rejected (MQTT-3.1.3-8).
    pub const V3_IDENTIFIER_REJECTED: ReasonCode = ReasonCode(0x02);
    /// 3.1.1 CONNACK 0x04: bad user name or password.
    pub const V3_BAD_USER_NAME_OR_PASSWORD: ReasonCode = ReasonCode(0x04);
    /// 3.1.1 CONNACK 0x05: not authorized.
    pub const V3_NOT_AUTHORIZED: ReasonCode = ReasonCode(0x05);
    /// 3.1.1 SUBACK 0x80: failure.
    pub const V3_SUBSCRIBE_FAILURE: ReasonCode = ReasonCode(0x80);

    /// True for codes of 0x80 and above, which report a failure (MQTT 5.0 section 2.4).
    pub fn is_error(self) -> bool {
        self.0 >= 0x80
    }

    /// The MQTT 5.0 name of the code, if it has one.
    pub fn name(self) -> Option<&'static str> {
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
    fn from(code: u8) -> Self {
        ReasonCode(code)
    }
}

impl From<ReasonCode> for u8 {
    fn from(code: ReasonCode) -> Self {
        code.0
    }
}

/// Compares with the byte on the wire (convenient where codes arrive as numbers, e.g. tests).
impl PartialEq<u8> for ReasonCode {
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
    }
}
