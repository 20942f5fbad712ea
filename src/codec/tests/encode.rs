//! Encoder rules: exact bytes of the short forms, errors leave the buffer untouched.

use crate::codec::ReasonCode;
use bytes::Bytes;

use super::*;

fn enc(p: &Packet, v: Version) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode(p, v, None, &mut buf).expect("encodes");
    buf.to_vec()
}

/// Encodes with a non-empty buffer and asserts the error left it as it was.
#[track_caller]
fn enc_err(p: &Packet, v: Version, max: Option<u32>) -> EncodeError {
    let mut buf = BytesMut::from(&b"keep"[..]);
    let e = encode(p, v, max, &mut buf).expect_err("must fail");
    assert_eq!(&buf[..], b"keep");
    e
}

fn qos1(topic: &str, packet_id: u16, payload: &'static [u8]) -> Publish {
    Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: topic.into(),
        packet_id,
        payload: Bytes::from_static(payload),
        properties: PublishProperties::default(),
        topic_alias: None,
        subscription_identifiers: Vec::new(),
    }
}

/// mqttbytes writes a v5 CONNACK without property length when properties are None.
#[test]
fn v5_connack_always_has_property_length() {
    let c = Packet::ConnAck(ConnAck {
        session_present: false,
        code: ReasonCode(0),
        properties: ConnAckProperties::default(),
    });
    assert_eq!(enc(&c, Version::V5), [0x20, 3, 0, 0, 0]);
    assert_eq!(enc(&c, Version::V311), [0x20, 2, 0, 0]);
}

#[test]
fn ack_short_forms() {
    let mut a = PubAckLike {
        kind: AckKind::PubRel,
        packet_id: 1,
        reason: ReasonCode(0),
        reason_string: None,
    };
    assert_eq!(enc(&Packet::Ack(a.clone()), Version::V5), [0x62, 2, 0, 1]);
    a.reason = ReasonCode(0x92);
    assert_eq!(
        enc(&Packet::Ack(a.clone()), Version::V5),
        [0x62, 3, 0, 1, 0x92]
    );
    assert_eq!(enc(&Packet::Ack(a), Version::V311), [0x62, 2, 0, 1]);
}

#[test]
fn disconnect_and_auth_short_forms() {
    let d = Disconnect::default();
    assert_eq!(enc(&Packet::Disconnect(d.clone()), Version::V5), [0xE0, 0]);
    assert_eq!(enc(&Packet::Disconnect(d), Version::V311), [0xE0, 0]);
    let d = Disconnect {
        reason: ReasonCode(0x8E),
        ..Disconnect::default()
    };
    assert_eq!(
        enc(&Packet::Disconnect(d.clone()), Version::V5),
        [0xE0, 1, 0x8E]
    );
    assert_eq!(enc(&Packet::Disconnect(d), Version::V311), [0xE0, 0]);
    assert_eq!(enc(&Packet::Auth(Auth::default()), Version::V5), [0xF0, 0]);
    assert_eq!(
        enc_err(&Packet::Auth(Auth::default()), Version::V311, None),
        EncodeError::UnsupportedInVersion
    );
}

#[test]
fn suback_and_unsuback_forms() {
    let s = Packet::SubAck(SubAck {
        packet_id: 7,
        codes: vec![
            ReasonCode(0),
            ReasonCode(1),
            ReasonCode(2),
            ReasonCode(0x80),
        ],
    });
    assert_eq!(enc(&s, Version::V311), [0x90, 6, 0, 7, 0, 1, 2, 0x80]);
    assert_eq!(enc(&s, Version::V5), [0x90, 7, 0, 7, 0, 0, 1, 2, 0x80]);
    let u = Packet::UnsubAck(UnsubAck {
        packet_id: 7,
        codes: vec![ReasonCode(0), ReasonCode(0x11)],
    });
    assert_eq!(enc(&u, Version::V311), [0xB0, 2, 0, 7]);
    assert_eq!(enc(&u, Version::V5), [0xB0, 5, 0, 7, 0, 0, 0x11]);
}

#[test]
fn publish_bytes_are_exact() {
    let p = Packet::Publish(qos1("a/b", 10, b"hi"));
    assert_eq!(
        enc(&p, Version::V311),
        [0x32, 9, 0, 3, b'a', b'/', b'b', 0, 10, b'h', b'i']
    );
    assert_eq!(
        enc(&p, Version::V5),
        [0x32, 10, 0, 3, b'a', b'/', b'b', 0, 10, 0, b'h', b'i']
    );
}

/// mqttbytes leaves a partial packet on packet id 0; we append nothing.
#[test]
fn packet_id_zero_appends_nothing() {
    let cases = [
        Packet::Publish(qos1("t", 0, b"x")),
        Packet::Ack(PubAckLike {
            kind: AckKind::PubAck,
            packet_id: 0,
            reason: ReasonCode(0),
            reason_string: None,
        }),
        Packet::Subscribe(Subscribe {
            packet_id: 0,
            filters: vec![],
            subscription_identifier: None,
            user_properties: vec![],
        }),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 0,
            filters: vec!["a".into()],
            user_properties: vec![],
        }),
        Packet::SubAck(SubAck {
            packet_id: 0,
            codes: vec![ReasonCode(0)],
        }),
    ];
    for v in VERSIONS {
        for p in &cases {
            assert_eq!(enc_err(p, v, None), EncodeError::PacketIdZero, "{p:?}");
        }
    }
    // QoS 0 has no packet id: 0 is fine.
    let mut p = qos1("t", 0, b"x");
    p.qos = QoS::AtMostOnce;
    assert_eq!(
        enc(&Packet::Publish(p), Version::V311),
        [0x30, 4, 0, 1, b't', b'x']
    );
}

/// mqttbytes truncates the length of strings over 65535 bytes; we refuse them.
#[test]
fn long_strings_are_refused_not_truncated() {
    let long = "a".repeat(65536);
    let p = Packet::Publish(qos1(&long, 1, b""));
    for v in VERSIONS {
        assert_eq!(enc_err(&p, v, None), EncodeError::StringTooLong);
    }
    let mut ok = qos1(&long[..65535], 1, b"");
    ok.qos = QoS::AtMostOnce;
    assert_eq!(
        enc(&Packet::Publish(ok), Version::V311).len(),
        1 + 3 + 2 + 65535
    );
    let mut props = qos1("t", 1, b"");
    props.properties.user_properties = vec![("k".into(), long)];
    assert_eq!(
        enc_err(&Packet::Publish(props), Version::V5, None),
        EncodeError::StringTooLong
    );
}

/// MQTT-3.1.2-24: never send a packet larger than the client's Maximum Packet Size.
#[test]
fn max_size_is_respected() {
    let p = Packet::Publish(qos1("t", 1, b"0123456789"));
    let size = enc(&p, Version::V5).len();
    let mut buf = BytesMut::new();
    assert_eq!(
        encode(&p, Version::V5, Some(size as u32), &mut buf),
        Ok(size)
    );
    assert_eq!(
        enc_err(&p, Version::V5, Some(size as u32 - 1)),
        EncodeError::TooLarge {
            size,
            max: size - 1
        }
    );
}

#[test]
fn subscription_identifier_out_of_range_is_refused() {
    let mut p = qos1("t", 1, b"");
    p.subscription_identifiers = vec![268_435_456];
    assert_eq!(
        enc_err(&Packet::Publish(p), Version::V5, None),
        EncodeError::ValueTooLarge
    );
}

/// The borrowed fan-out path writes the same bytes as `encode`, and `publish_len` predicts
/// its size.
#[test]
fn encode_publish_matches_encode_and_publish_len() {
    let mut p = qos1("x/y", 3, b"payload");
    p.properties.content_type = Some("text".into());
    p.topic_alias = Some(2);
    p.subscription_identifiers = vec![5, 300];
    for v in VERSIONS {
        let view = PublishView::from(&p);
        let mut buf = BytesMut::new();
        let n = encode_publish(&view, v, None, &mut buf).expect("encodes");
        assert_eq!(&buf[..], &enc(&Packet::Publish(p.clone()), v)[..]);
        assert_eq!(publish_len(&view, v), Ok(n));
        assert_eq!(n, buf.len());
    }
    let zero = PublishView {
        packet_id: 0,
        ..PublishView::from(&p)
    };
    assert_eq!(
        publish_len(&zero, Version::V5),
        Err(EncodeError::PacketIdZero)
    );
}

/// A payload long enough for a 3-byte remaining length.
#[test]
fn large_publish_roundtrips() {
    let mut big = qos1("big", 1, b"");
    big.payload = Bytes::from(vec![0xA5u8; 200_000]);
    let p = Packet::Publish(big);
    for v in VERSIONS {
        let bytes = enc(&p, v);
        assert_eq!(bytes[1] & 0x80, 0x80);
        assert_eq!(from_client(v, &bytes), Ok(Some(p.clone())));
    }
}
