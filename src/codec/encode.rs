//! The encoder entry point: one hand-written encoder per packet type, for both versions.
//!
//! mqttbytes' encoders are not used: CONNACK without properties lacks the property length,
//! packet id 0 leaves a partial packet, and long strings get a truncated length.

use bytes::BytesMut;

use super::ack::AckBody;
use super::auth::AuthBody;
use super::connack::ConnAckBody;
use super::connect::ConnectBody;
use super::disconnect::DisconnectBody;
use super::error::EncodeError;
use super::packet::{Packet, Version};
use super::publish::{PublishView, encode_publish};
use super::subscribe::{SubAckBody, SubscribeBody};
use super::unsubscribe::{UnsubAckBody, UnsubscribeBody};
use super::writer::{Encode, emit};
use roost_wire::first_byte;
use roost_wire::packet_type::{
    AUTH, CONNACK, CONNECT, DISCONNECT, PINGREQ, PINGRESP, SUBACK, SUBSCRIBE, UNSUBACK, UNSUBSCRIBE,
};

/// An empty body (PINGREQ, PINGRESP).
struct Empty;

impl Encode for Empty {
    fn put<S: roost_wire::Sink>(&self, _: &mut S) -> Result<(), EncodeError> {
        Ok(())
    }
}

/// Appends the encoding of `packet` for `version` to `buf` and returns the number of bytes
/// appended.
///
/// Fields that do not exist in 3.1.1 are dropped. If `max_size` is `Some` and the encoded
/// packet would be larger, nothing is appended and [`EncodeError::TooLarge`] is returned (the
/// server must not send a packet larger than the client's Maximum Packet Size,
/// MQTT-3.1.2-24). Strings over 65535 bytes fail with [`EncodeError::StringTooLong`] (never
/// truncated); packet id 0 where one is needed fails with [`EncodeError::PacketIdZero`]; AUTH
/// in 3.1.1 fails with [`EncodeError::UnsupportedInVersion`]. Nothing is appended on any
/// error.
pub fn encode(
    packet: &Packet,
    version: Version,
    max_size: Option<u32>,
    buf: &mut BytesMut,
) -> Result<usize, EncodeError> {
    match packet {
        Packet::Connect(c) => emit(first_byte(CONNECT), &ConnectBody(c, version), max_size, buf),
        Packet::ConnAck(c) => emit(first_byte(CONNACK), &ConnAckBody(c, version), max_size, buf),
        Packet::Publish(p) => encode_publish(&PublishView::from(p), version, max_size, buf),
        Packet::Ack(a) => emit(
            super::ack::first_byte(a.kind),
            &AckBody(a, version),
            max_size,
            buf,
        ),
        Packet::Subscribe(s) => emit(
            first_byte(SUBSCRIBE),
            &SubscribeBody(s, version),
            max_size,
            buf,
        ),
        Packet::SubAck(s) => emit(first_byte(SUBACK), &SubAckBody(s, version), max_size, buf),
        Packet::Unsubscribe(u) => emit(
            first_byte(UNSUBSCRIBE),
            &UnsubscribeBody(u, version),
            max_size,
            buf,
        ),
        Packet::UnsubAck(u) => emit(
            first_byte(UNSUBACK),
            &UnsubAckBody(u, version),
            max_size,
            buf,
        ),
        Packet::PingReq => emit(first_byte(PINGREQ), &Empty, max_size, buf),
        Packet::PingResp => emit(first_byte(PINGRESP), &Empty, max_size, buf),
        Packet::Disconnect(d) => emit(
            first_byte(DISCONNECT),
            &DisconnectBody(d, version),
            max_size,
            buf,
        ),
        Packet::Auth(a) => match version {
            Version::V5 => emit(first_byte(AUTH), &AuthBody(a), max_size, buf),
            Version::V311 => Err(EncodeError::UnsupportedInVersion),
        },
    }
}
