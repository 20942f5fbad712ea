//! The decoder: framing, connection state (CONNECT first, version lock), packet-type and
//! fixed-header flag checks, then dispatch to each packet's module.

use bytes::BytesMut;
use roost_wire::{check_flags, packet_type as kind};

use super::error::DecodeError;
use super::frame::{self, Frame};
use super::packet::{AckKind, Packet, Version};
use super::{ack, auth, connack, connect, disconnect, publish, subscribe, unsubscribe};

/// Which side of the connection the decoder is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Decodes client-to-server packets (the broker).
    Server,
    /// Decodes server-to-client packets (load generator, tests).
    Client,
}

/// A strict, incremental MQTT decoder for one connection.
#[derive(Debug, Clone)]
pub struct Decoder {
    role: Role,
    version: Option<Version>,
    /// MQTT packets are under 256 MiB: a larger limit is kept as `u32::MAX`, which admits
    /// every packet just the same.
    max_packet_size: u32,
}

/// A packet size limit as [`Decoder`] keeps it.
fn clamp(max_packet_size: usize) -> u32 {
    u32::try_from(max_packet_size).unwrap_or(u32::MAX)
}

impl Decoder {
    /// A server-side decoder that does not yet know the version: only CONNECT is accepted
    /// first (MQTT-3.1.0-1); its protocol level locks the version; a later CONNECT is a
    /// protocol error (MQTT-3.1.0-2).
    ///
    /// The version is locked as soon as the CONNECT's protocol name and level are read, even
    /// if the rest of that CONNECT is then rejected, so the caller knows which CONNACK form
    /// to answer an error with.
    pub fn server(max_packet_size: usize) -> Decoder {
        Decoder {
            role: Role::Server,
            version: None,
            max_packet_size: clamp(max_packet_size),
        }
    }

    /// A client-side decoder for a known version.
    pub fn client(version: Version, max_packet_size: usize) -> Decoder {
        Decoder {
            role: Role::Client,
            version: Some(version),
            max_packet_size: clamp(max_packet_size),
        }
    }

    /// The protocol version, once known.
    pub fn version(&self) -> Option<Version> {
        self.version
    }

    /// Which side this decoder is on.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Changes the largest packet accepted (e.g. once a client has authenticated).
    pub fn set_max_packet_size(&mut self, max_packet_size: usize) {
        self.max_packet_size = clamp(max_packet_size);
    }

    /// The largest packet (whole packet, in bytes) this decoder accepts.
    pub fn max_packet_size(&self) -> usize {
        self.max_packet_size as usize
    }

    /// Decodes the next complete packet at the front of `buf`, removing its bytes.
    ///
    /// `Ok(None)` means more bytes are needed (nothing consumed). [`DecodeError::TooLarge`] is
    /// reported as soon as the fixed header (remaining length) is readable, before the body
    /// arrives. Never panics on any input. After an error the connection must be closed;
    /// the bytes of a complete but invalid packet have been removed from `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        match frame::split(buf, self.max_packet_size as usize)? {
            Some(frame) => self.dispatch(&frame).map(Some),
            None => Ok(None),
        }
    }

    fn dispatch(&mut self, f: &Frame) -> Result<Packet, DecodeError> {
        let kind = f.kind();
        check_direction(kind, self.role)?;
        let version = match self.version {
            None if kind == kind::CONNECT => return self.connect(f),
            None => return Err(DecodeError::Protocol("first packet must be CONNECT")),
            Some(_) if kind == kind::CONNECT => {
                return Err(DecodeError::Protocol("second CONNECT"));
            }
            Some(version) => version,
        };
        if kind == kind::AUTH && version == Version::V311 {
            return Err(DecodeError::Protocol("AUTH does not exist in MQTT 3.1.1"));
        }
        check_flags(f.byte1)?; // MQTT-2.1.3-1, MQTT-3.3.1-2, MQTT-3.3.1-4
        let role = self.role;
        match kind {
            kind::CONNACK => connack::decode(f, version),
            kind::PUBLISH => publish::decode(f, version, role),
            kind::PUBACK => ack::decode(f, AckKind::PubAck, version),
            kind::PUBREC => ack::decode(f, AckKind::PubRec, version),
            kind::PUBREL => ack::decode(f, AckKind::PubRel, version),
            kind::PUBCOMP => ack::decode(f, AckKind::PubComp, version),
            kind::SUBSCRIBE => subscribe::decode(f, version),
            kind::SUBACK => subscribe::decode_suback(f, version),
            kind::UNSUBSCRIBE => unsubscribe::decode(f, version),
            kind::UNSUBACK => unsubscribe::decode_unsuback(f, version),
            kind::PINGREQ => empty(f, Packet::PingReq),
            kind::PINGRESP => empty(f, Packet::PingResp),
            kind::DISCONNECT => disconnect::decode(f, version, role),
            kind::AUTH => auth::decode(f),
            _ => Err(roost_wire::DecodeError::ReservedPacketType.into()),
        }
    }

    /// CONNECT: reads the protocol name and level, locks the version, then the rest.
    fn connect(&mut self, f: &Frame) -> Result<Packet, DecodeError> {
        check_flags(f.byte1)?;
        let mut r = f.body();
        let protocol = connect::read_protocol(&mut r)?;
        self.version = Some(protocol.version);
        connect::decode(r, protocol).map(|c| Packet::Connect(Box::new(c)))
    }
}

/// Rejects packet types the peer may not send (MQTT 5.0 section 2.1.2): a client never sends
/// CONNACK, SUBACK, UNSUBACK or PINGRESP, a server never sends CONNECT, SUBSCRIBE,
/// UNSUBSCRIBE or PINGREQ. Type 0 is malformed.
fn check_direction(kind: u8, role: Role) -> Result<(), DecodeError> {
    if kind == 0 {
        return Err(roost_wire::DecodeError::ReservedPacketType.into());
    }
    let allowed = match role {
        Role::Server => roost_wire::sent_by_client(kind),
        Role::Client => roost_wire::sent_by_server(kind),
    };
    if !allowed {
        return Err(DecodeError::Protocol(
            "packet type not allowed in this direction",
        ));
    }
    Ok(())
}

/// PINGREQ and PINGRESP: no content allowed.
fn empty(f: &Frame, packet: Packet) -> Result<Packet, DecodeError> {
    f.body().finish()?;
    Ok(packet)
}
