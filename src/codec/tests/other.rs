//! Acknowledgements, DISCONNECT, AUTH, and the server-to-client CONNACK/SUBACK/UNSUBACK.

use super::*;
use crate::codec::ReasonCode;

fn ack(kind: AckKind, packet_id: u16, reason: u8) -> Packet {
    Packet::Ack(PubAckLike {
        kind,
        packet_id,
        reason: ReasonCode(reason),
        reason_string: None,
    })
}

const ACKS: [(u8, AckKind); 4] = [
    (0x40, AckKind::PubAck),
    (0x50, AckKind::PubRec),
    (0x62, AckKind::PubRel),
    (0x70, AckKind::PubComp),
];

/// MQTT-2.2.1-3: packet id 0 in PUBACK/PUBREC/PUBREL/PUBCOMP is malformed.
#[test]
fn ack_packet_id_zero_is_malformed() {
    for v in VERSIONS {
        for (byte1, _) in ACKS {
            assert_malformed(from_client(v, &[byte1, 2, 0, 0]));
            assert_malformed(from_server(v, &[byte1, 2, 0, 0]));
        }
    }
}

#[test]
fn acks_decode_in_short_and_long_forms() {
    for (byte1, kind) in ACKS {
        assert_eq!(
            from_client(Version::V311, &[byte1, 2, 0, 7]),
            Ok(Some(ack(kind, 7, 0)))
        );
        assert_eq!(
            from_client(Version::V5, &[byte1, 2, 0, 7]),
            Ok(Some(ack(kind, 7, 0)))
        );
        assert_eq!(
            from_client(Version::V5, &[byte1, 4, 0, 7, 0, 0]),
            Ok(Some(ack(kind, 7, 0)))
        );
    }
    assert_eq!(
        from_client(Version::V5, &[0x40, 3, 0, 7, 0x10]),
        Ok(Some(ack(AckKind::PubAck, 7, 0x10)))
    );
    let with_reason = pkt(0x50, &cat(&[&[0, 7, 0x80, 6, 0x1F], &s("bad")]));
    match from_client(Version::V5, &with_reason) {
        Ok(Some(Packet::Ack(a))) => assert_eq!(a.reason_string.as_deref(), Some("bad")),
        other => panic!("{other:?}"),
    }
}

/// 3.1.1 acks are exactly two bytes (mqttbytes ignores extra bytes); 5.0 reason codes must be
/// valid for the packet (MQTT-3.4.2-1 and siblings).
#[test]
fn ack_trailing_bytes_and_bad_reasons_are_malformed() {
    for (byte1, _) in ACKS {
        assert_malformed(from_client(Version::V311, &[byte1, 3, 0, 7, 0]));
        assert_malformed(from_client(Version::V5, &[byte1, 5, 0, 7, 0, 0, 0]));
    }
    assert_malformed(from_client(Version::V5, &[0x62, 3, 0, 7, 0x10])); // PUBREL 0x10
    assert_malformed(from_client(Version::V5, &[0x40, 3, 0, 7, 0x92])); // PUBACK 0x92
}

/// mqttbytes cannot parse a 5.0 DISCONNECT with remaining length 0 or 1.
#[test]
fn v5_disconnect_short_forms() {
    assert_eq!(
        from_client(Version::V5, &[0xE0, 0]),
        Ok(Some(Packet::Disconnect(Disconnect::default())))
    );
    assert_eq!(
        from_client(Version::V5, &[0xE0, 1, 0x04]),
        Ok(Some(Packet::Disconnect(Disconnect {
            reason: ReasonCode(0x04),
            ..Disconnect::default()
        })))
    );
    assert_eq!(
        from_client(Version::V5, &[0xE0, 7, 0x00, 5, 0x11, 0, 0, 0, 9]),
        Ok(Some(Packet::Disconnect(Disconnect {
            session_expiry_interval: Some(9),
            ..Disconnect::default()
        })))
    );
    assert_eq!(
        from_client(Version::V311, &[0xE0, 0]),
        Ok(Some(Packet::Disconnect(Disconnect::default())))
    );
}

#[test]
fn v5_disconnect_rules() {
    assert_malformed(from_client(Version::V5, &[0xE0, 1, 0x05])); // unknown reason
    assert_malformed(from_client(Version::V5, &[0xE0, 3, 0, 0, 0])); // trailing byte
    // MQTT-3.14.2-2: a server never sends Session Expiry Interval in DISCONNECT.
    assert_protocol(from_server(
        Version::V5,
        &[0xE0, 7, 0x00, 5, 0x11, 0, 0, 0, 9],
    ));
    let moved = pkt(0xE0, &cat(&[&[0x9C, 6, 0x1C], &s("srv")]));
    match from_server(Version::V5, &moved) {
        Ok(Some(Packet::Disconnect(d))) => {
            assert_eq!(
                (d.reason, d.server_reference.as_deref()),
                (ReasonCode(0x9C), Some("srv"))
            )
        }
        other => panic!("{other:?}"),
    }
}

/// AUTH (type 15) exists only in 5.0; mqttbytes has no AUTH at all.
#[test]
fn auth_v5_and_not_in_v311() {
    assert_eq!(
        from_client(Version::V5, &[0xF0, 0]),
        Ok(Some(Packet::Auth(Auth::default())))
    );
    let b = pkt(0xF0, &cat(&[&[0x18, 11, 0x15], &s("SCRAM"), &[0x16, 0, 0]]));
    match from_client(Version::V5, &b) {
        Ok(Some(Packet::Auth(a))) => {
            assert_eq!(a.reason, 0x18);
            assert_eq!(a.method.as_deref(), Some("SCRAM"));
            assert_eq!(a.data.as_deref(), Some(&[][..]));
        }
        other => panic!("{other:?}"),
    }
    assert_protocol(from_client(Version::V311, &[0xF0, 0]));
    assert_protocol(from_server(Version::V311, &[0xF0, 0]));
    assert_malformed(from_client(Version::V5, &[0xF1, 0])); // flags
    assert_malformed(from_client(Version::V5, &[0xF0, 1, 0x01])); // reason
    assert_protocol(from_client(Version::V5, &[0xF0, 5, 0x18, 3, 0x16, 0, 0])); // data, no method
}

#[test]
fn connack_decode_on_client() {
    assert_eq!(
        from_server(Version::V311, &[0x20, 2, 1, 0]),
        Ok(Some(Packet::ConnAck(ConnAck {
            session_present: true,
            code: ReasonCode(0),
            properties: ConnAckProperties::default(),
        })))
    );
    match from_server(Version::V5, &[0x20, 6, 0, 0, 3, 0x21, 0, 10]) {
        Ok(Some(Packet::ConnAck(c))) => assert_eq!(c.properties.receive_maximum, Some(10)),
        other => panic!("{other:?}"),
    }
    // MQTT-3.2.2-1: reserved acknowledge flags.
    assert_malformed(from_server(Version::V311, &[0x20, 2, 2, 0]));
    assert_malformed(from_server(Version::V311, &[0x20, 3, 0, 0, 0]));
    // A 5.0 CONNACK needs its property length.
    assert_malformed(from_server(Version::V5, &[0x20, 2, 0, 0]));
}

#[test]
fn suback_and_unsuback_decode_on_client() {
    assert_eq!(
        from_server(Version::V311, &[0x90, 4, 0, 1, 0, 0x80]),
        Ok(Some(Packet::SubAck(SubAck {
            packet_id: 1,
            codes: vec![ReasonCode(0), ReasonCode(0x80)]
        })))
    );
    assert_malformed(from_server(Version::V311, &[0x90, 3, 0, 1, 0x87])); // v5-only code
    assert_malformed(from_server(Version::V311, &[0x90, 2, 0, 1])); // no codes
    assert_eq!(
        from_server(Version::V5, &[0x90, 4, 0, 1, 0, 0x87]),
        Ok(Some(Packet::SubAck(SubAck {
            packet_id: 1,
            codes: vec![ReasonCode(0x87)]
        })))
    );
    assert_eq!(
        from_server(Version::V311, &[0xB0, 2, 0, 9]),
        Ok(Some(Packet::UnsubAck(UnsubAck {
            packet_id: 9,
            codes: vec![]
        })))
    );
    assert_malformed(from_server(Version::V311, &[0xB0, 3, 0, 9, 0]));
    assert_eq!(
        from_server(Version::V5, &[0xB0, 4, 0, 9, 0, 0x11]),
        Ok(Some(Packet::UnsubAck(UnsubAck {
            packet_id: 9,
            codes: vec![ReasonCode(0x11)]
        })))
    );
}
