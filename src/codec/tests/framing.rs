//! Framing (`roost_wire::FixedHeader`), remaining length, maximum packet size, packet-type
//! direction and fixed-header flags.

use super::*;

#[test]
fn every_prefix_needs_more_and_consumes_nothing() {
    let bytes = pkt(0x32, &cat(&[&s("a/b"), &[0, 7], b"payload"]));
    for n in 0..bytes.len() {
        let mut d = server(Version::V311);
        let mut buf = BytesMut::from(&bytes[..n]);
        assert_eq!(d.decode(&mut buf), Ok(None), "prefix {n}");
        assert_eq!(buf.len(), n, "prefix {n} consumed bytes");
    }
    assert!(matches!(
        from_client(Version::V311, &bytes),
        Ok(Some(Packet::Publish(_)))
    ));
}

/// Once the frame is complete, any failure while reading it is malformed, never "need more".
#[test]
fn complete_frame_with_short_content_is_malformed() {
    // Topic length says 5 bytes, the frame holds 1.
    assert_malformed(from_client(Version::V311, &pkt(0x30, &[0, 5, b'a'])));
    assert_malformed(from_client(Version::V5, &pkt(0x30, &[0, 5, b'a'])));
    // SUBSCRIBE with a packet id only half there.
    assert_malformed(from_client(Version::V311, &pkt(0x82, &[0])));
    // v5 PUBLISH without its property length.
    assert_malformed(from_client(Version::V5, &pkt(0x30, &s("a"))));
}

#[test]
fn remaining_length_over_four_bytes_is_malformed() {
    let mut d = server(Version::V311);
    assert_malformed(decode_all(&mut d, &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]));
    let mut d = server(Version::V311);
    assert_malformed(decode_all(&mut d, &[0x30, 0x80, 0x80, 0x80, 0x80]));
    // Three continuation bytes: a fourth may still end it, so wait.
    let mut d = server(Version::V311);
    assert_eq!(decode_all(&mut d, &[0x30, 0x80, 0x80, 0x80]), Ok(None));
}

/// MQTT-1.5.5-1: a variable byte integer uses the minimum number of bytes.
#[test]
fn non_minimal_remaining_length_is_malformed() {
    assert_malformed(from_client(Version::V311, &[0xC0, 0x80, 0x00]));
}

/// TooLarge is reported from the fixed header alone (2 to 5 bytes), before the body.
#[test]
fn too_large_from_fixed_header_alone() {
    let cases: [&[u8]; 4] = [
        &[0x30, 0x7F],
        &[0x30, 0xFF, 0x7F],
        &[0x30, 0xFF, 0xFF, 0x7F],
        &[0x30, 0xFF, 0xFF, 0xFF, 0x7F],
    ];
    for (i, header) in cases.iter().enumerate() {
        let mut d = Decoder::server(64);
        d.decode(&mut BytesMut::from(&connect_bytes(Version::V311)[..]))
            .expect("connect");
        let mut buf = BytesMut::from(*header);
        match d.decode(&mut buf) {
            Err(DecodeError::TooLarge { size, max: 64 }) => assert!(size > 64, "case {i}"),
            other => panic!("case {i}: {other:?}"),
        }
    }
    // Even the first packet (before CONNECT is known to be one).
    let mut d = Decoder::server(100);
    assert!(matches!(
        d.decode(&mut BytesMut::from(&[0x10, 0xFF, 0x01][..])),
        Err(DecodeError::TooLarge {
            size: 258,
            max: 100
        })
    ));
}

/// The limit counts the whole packet (MQTT 5.0 Maximum Packet Size): exactly max is fine.
#[test]
fn max_packet_size_counts_the_whole_packet() {
    let publish = pkt(0x30, &cat(&[&s("t"), b"12345"])); // 2 + 3 + 5 = 10 bytes
    assert_eq!(publish.len(), 10);
    let mut exact = Decoder::client(Version::V311, 10);
    assert!(matches!(
        decode_all(&mut exact, &publish),
        Ok(Some(Packet::Publish(_)))
    ));
    let mut small = Decoder::client(Version::V311, 9);
    assert_eq!(
        decode_all(&mut small, &publish),
        Err(DecodeError::TooLarge { size: 10, max: 9 })
    );
}

/// Several packets in one read are decoded one after the other.
#[test]
fn decodes_batched_packets() {
    let mut d = Decoder::server(MAX);
    let mut all = connect_bytes(Version::V5);
    all.extend(pkt(0xC0, &[]));
    all.extend(pkt(0x30, &cat(&[&s("x"), &[0], b"p"])));
    all.extend(&[0xE0, 0x00]);
    all.extend(&[0xC0]); // incomplete tail
    let mut buf = BytesMut::from(&all[..]);
    let mut got = Vec::new();
    while let Some(p) = d.decode(&mut buf).expect("valid") {
        got.push(p);
    }
    assert_eq!(got.len(), 4);
    assert_eq!(got[1], Packet::PingReq);
    assert_eq!(got[3], Packet::Disconnect(Disconnect::default()));
    assert_eq!(&buf[..], &[0xC0]);
}

/// MQTT-3.1.0-1: the first packet from a client must be CONNECT.
#[test]
fn packet_before_connect_is_protocol_error() {
    assert_protocol(decode_all(&mut Decoder::server(MAX), &[0xC0, 0x00]));
    assert_protocol(decode_all(
        &mut Decoder::server(MAX),
        &pkt(0x30, &cat(&[&s("a"), b"x"])),
    ));
    assert_eq!(Decoder::server(MAX).version(), None);
}

/// MQTT-3.1.0-2: a second CONNECT is a protocol error.
#[test]
fn second_connect_is_protocol_error() {
    for v in VERSIONS {
        assert_protocol(from_client(v, &connect_bytes(v)));
    }
}

/// A client never sends CONNACK, SUBACK, UNSUBACK or PINGRESP (mqttbytes accepts them).
#[test]
fn server_only_packet_types_from_a_client_are_protocol_errors() {
    for v in VERSIONS {
        assert_protocol(from_client(v, &[0x20, 0x02, 0x00, 0x00]));
        assert_protocol(from_client(v, &[0x90, 0x03, 0x00, 0x01, 0x00]));
        assert_protocol(from_client(v, &[0xB0, 0x02, 0x00, 0x01]));
        assert_protocol(from_client(v, &[0xD0, 0x00]));
    }
}

/// A server never sends CONNECT, SUBSCRIBE, UNSUBSCRIBE or PINGREQ.
#[test]
fn client_only_packet_types_from_a_server_are_protocol_errors() {
    for v in VERSIONS {
        assert_protocol(from_server(v, &connect_bytes(v)));
        assert_protocol(from_server(v, &pkt(0x82, &cat(&[&[0, 1], &s("a"), &[0]]))));
        assert_protocol(from_server(v, &pkt(0xA2, &cat(&[&[0, 1], &s("a")]))));
        assert_protocol(from_server(v, &[0xC0, 0x00]));
    }
}

#[test]
fn packet_type_zero_is_malformed() {
    assert_malformed(from_client(Version::V5, &[0x00, 0x00]));
    assert_malformed(decode_all(&mut Decoder::server(MAX), &[0x00, 0x00]));
}

/// MQTT 2.1.3 / MQTT-2.2.2-2: reserved fixed-header flags; PUBREL, SUBSCRIBE and UNSUBSCRIBE
/// need 0010 (MQTT-3.6.1-1, MQTT-3.8.1-1, MQTT-3.10.1-1), others 0000. mqttbytes ignores them.
#[test]
fn reserved_fixed_header_flags_are_malformed() {
    for v in VERSIONS {
        assert_malformed(from_client(v, &[0x60, 0x02, 0x00, 0x01])); // PUBREL 0000
        assert_malformed(from_client(v, &[0x63, 0x02, 0x00, 0x01])); // PUBREL 0011
        let sub = cat(&[
            &[0, 1],
            if v == Version::V5 { &[0] } else { &[] },
            &s("a"),
            &[0],
        ]);
        assert_malformed(from_client(v, &pkt(0x80, &sub)));
        assert!(matches!(from_client(v, &pkt(0x82, &sub)), Ok(Some(_))));
        let unsub = cat(&[&[0, 1], if v == Version::V5 { &[0] } else { &[] }, &s("a")]);
        assert_malformed(from_client(v, &pkt(0xA0, &unsub)));
        assert!(matches!(from_client(v, &pkt(0xA2, &unsub)), Ok(Some(_))));
        assert_malformed(from_client(v, &[0x41, 0x02, 0x00, 0x01])); // PUBACK
        assert_malformed(from_client(v, &[0x52, 0x02, 0x00, 0x01])); // PUBREC
        assert_malformed(from_client(v, &[0x78, 0x02, 0x00, 0x01])); // PUBCOMP
        assert_malformed(from_client(v, &[0xC1, 0x00])); // PINGREQ
        assert_malformed(from_client(v, &[0xE2, 0x00])); // DISCONNECT
        assert_malformed(from_server(v, &[0x21, 0x02, 0x00, 0x00])); // CONNACK
        assert_malformed(from_server(v, &[0xD4, 0x00])); // PINGRESP
    }
    let mut c = connect_bytes(Version::V311);
    c[0] = 0x11;
    assert_malformed(decode_all(&mut Decoder::server(MAX), &c));
}

/// PINGREQ/PINGRESP and 3.1.1 DISCONNECT have no content: extra bytes are malformed.
#[test]
fn trailing_bytes_after_empty_packets_are_malformed() {
    for v in VERSIONS {
        assert_malformed(from_client(v, &[0xC0, 0x01, 0x00]));
        assert_malformed(from_server(v, &[0xD0, 0x01, 0x00]));
    }
    assert_malformed(from_client(Version::V311, &[0xE0, 0x01, 0x00]));
}

#[test]
fn reason_codes_of_errors() {
    assert_eq!(DecodeError::Malformed("x").reason_code(), 0x81);
    assert_eq!(DecodeError::Protocol("x").reason_code(), 0x82);
    assert_eq!(
        DecodeError::TooLarge { size: 2, max: 1 }.reason_code(),
        0x95
    );
    assert_eq!(
        DecodeError::UnsupportedProtocol { level: 3 }.reason_code(),
        0x84
    );
    assert_eq!(DecodeError::TopicNameInvalid.reason_code(), 0x90);
    assert!(
        DecodeError::TooLarge { size: 2, max: 1 }
            .to_string()
            .contains("exceeds")
    );
}
