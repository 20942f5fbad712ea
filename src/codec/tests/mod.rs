//! Codec tests: raw bytes in, expected outcome out. One test per mqttbytes gap listed in
//! ARCHITECTURE.md, spec rules cited by their normative statement ids, round trips for every
//! packet type in both versions, and a no-panic fuzz pass.

mod connect;
mod encode;
mod framing;
mod fuzz;
mod other;
mod properties;
mod publish;
mod roundtrip;
mod subscribe;

use bytes::BytesMut;

use super::*;

/// Default maximum packet size for tests.
pub(super) const MAX: usize = 1 << 20;

/// A packet from its first byte and body: computes the remaining length.
pub(super) fn pkt(byte1: u8, body: &[u8]) -> Vec<u8> {
    let mut len = [0u8; 4];
    let n = roost_wire::varint::encode(body.len() as u32, &mut len).expect("remaining length");
    [&[byte1][..], &len[..n], body].concat()
}

/// A two-byte-length-prefixed string.
pub(super) fn s(v: &str) -> Vec<u8> {
    let mut out = (v.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(v.as_bytes());
    out
}

/// Concatenates byte pieces.
pub(super) fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A minimal valid CONNECT for `version` (client id "c", clean start, keep alive 60).
pub(super) fn connect_bytes(version: Version) -> Vec<u8> {
    match version {
        Version::V311 => pkt(0x10, &cat(&[&s("MQTT"), &[4, 0x02, 0, 60], &s("c")])),
        Version::V5 => pkt(0x10, &cat(&[&s("MQTT"), &[5, 0x02, 0, 60, 0], &s("c")])),
    }
}

/// A server decoder that has already accepted a CONNECT of `version`.
pub(super) fn server(version: Version) -> Decoder {
    let mut d = Decoder::server(MAX);
    let r = decode_all(&mut d, &connect_bytes(version));
    assert!(matches!(r, Ok(Some(Packet::Connect(_)))), "{r:?}");
    d
}

/// Decodes one packet from `bytes` with `d`; a successfully decoded packet must consume all
/// of `bytes`.
pub(super) fn decode_all(d: &mut Decoder, bytes: &[u8]) -> Result<Option<Packet>, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let r = d.decode(&mut buf);
    if let Ok(Some(_)) = r {
        assert!(buf.is_empty(), "packet left {} bytes", buf.len());
    }
    r
}

/// Decodes `bytes` as a client-to-server packet after a CONNECT of `version`.
pub(super) fn from_client(version: Version, bytes: &[u8]) -> Result<Option<Packet>, DecodeError> {
    decode_all(&mut server(version), bytes)
}

/// Decodes `bytes` as a server-to-client packet for `version`.
pub(super) fn from_server(version: Version, bytes: &[u8]) -> Result<Option<Packet>, DecodeError> {
    decode_all(&mut Decoder::client(version, MAX), bytes)
}

/// Asserts the outcome is `Malformed`.
#[track_caller]
pub(super) fn assert_malformed(r: Result<Option<Packet>, DecodeError>) {
    assert!(
        matches!(r, Err(DecodeError::Malformed(_))),
        "expected Malformed, got {r:?}"
    );
}

/// Asserts the outcome is `Protocol`.
#[track_caller]
pub(super) fn assert_protocol(r: Result<Option<Packet>, DecodeError>) {
    assert!(
        matches!(r, Err(DecodeError::Protocol(_))),
        "expected Protocol, got {r:?}"
    );
}

/// Both versions, for tests that hold in each.
pub(super) const VERSIONS: [Version; 2] = [Version::V311, Version::V5];
