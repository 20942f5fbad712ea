//! CONNECT: protocol name and level, connect flags, strings, will, login.

use super::*;

/// CONNECT body after the protocol name and level: flags, keep alive 60, props (v5), rest.
fn connect(level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    let props: &[u8] = if level == 5 { &[0] } else { &[] };
    pkt(
        0x10,
        &cat(&[&s("MQTT"), &[level, flags, 0, 60], props, rest]),
    )
}

fn decode_connect(bytes: &[u8]) -> Result<Option<Packet>, DecodeError> {
    decode_all(&mut Decoder::server(MAX), bytes)
}

fn connect_of(r: Result<Option<Packet>, DecodeError>) -> Connect {
    match r {
        Ok(Some(Packet::Connect(c))) => *c,
        other => panic!("expected CONNECT, got {other:?}"),
    }
}

#[test]
fn connect_locks_the_version() {
    let mut d = Decoder::server(MAX);
    decode_all(&mut d, &connect_bytes(Version::V311)).expect("v4");
    assert_eq!(d.version(), Some(Version::V311));
    let mut d = Decoder::server(MAX);
    let c = connect_of(decode_all(&mut d, &connect_bytes(Version::V5)));
    assert_eq!(d.version(), Some(Version::V5));
    assert_eq!(c.version, Version::V5);
    assert_eq!(c.client_id, "c");
    assert!(c.clean_start);
    assert_eq!(c.keep_alive, 60);
    assert_eq!(c.receive_maximum, 65535);
    assert!(c.request_problem_information);
}

/// mqttbytes `v4::read` accepts a level-5 CONNECT and misparses its properties as the client
/// id; we read the level ourselves, so the session expiry property lands where it belongs.
#[test]
fn level_5_connect_is_parsed_as_v5() {
    let bytes = pkt(
        0x10,
        &cat(&[
            &s("MQTT"),
            &[5, 0x00, 0, 10, 5, 0x11, 0, 0, 0, 30],
            &s("dev"),
        ]),
    );
    let c = connect_of(decode_connect(&bytes));
    assert_eq!(c.version, Version::V5);
    assert_eq!(c.session_expiry_interval, 30);
    assert_eq!(c.client_id, "dev");
    assert!(!c.clean_start);
    // And a level-4 CONNECT is not read as v5 (no property length).
    let c = connect_of(decode_connect(&connect(4, 0x02, &s("dev"))));
    assert_eq!((c.version, c.client_id.as_str()), (Version::V311, "dev"));
}

#[test]
fn mqtt_3_1_is_read_with_the_3_1_1_wire_format() {
    let mqisdp = pkt(0x10, &cat(&[&s("MQIsdp"), &[3, 0x02, 0, 60], &s("c")]));
    let c = connect_of(decode_connect(&mqisdp));
    assert_eq!(
        (c.version, c.mqtt31, c.bridge),
        (Version::V311, true, false)
    );
    assert_eq!((c.client_id.as_str(), c.keep_alive), ("c", 60));
    // Encoded back the same way.
    let mut out = BytesMut::new();
    crate::codec::encode(&Packet::Connect(Box::new(c)), Version::V311, None, &mut out).unwrap();
    assert_eq!(&out[..], &mqisdp[..]);
}

#[test]
fn the_bridge_bit_is_read_on_levels_3_and_4_only() {
    for (name, level, mqtt31) in [("MQTT", 4u8, false), ("MQIsdp", 3, true)] {
        let bytes = pkt(
            0x10,
            &cat(&[&s(name), &[0x80 | level, 0x02, 0, 60], &s("b")]),
        );
        let c = connect_of(decode_connect(&bytes));
        assert!(c.bridge, "{name}");
        assert_eq!((c.version, c.mqtt31), (Version::V311, mqtt31));
        let mut out = BytesMut::new();
        crate::codec::encode(&Packet::Connect(Box::new(c)), Version::V311, None, &mut out).unwrap();
        assert_eq!(&out[..], &bytes[..], "{name}");
    }
    let v5_bridge = pkt(0x10, &cat(&[&s("MQTT"), &[0x85, 0x02, 0, 60, 0], &s("b")]));
    assert_eq!(
        decode_connect(&v5_bridge),
        Err(DecodeError::UnsupportedProtocol { level: 0x85 })
    );
}

#[test]
fn unsupported_protocol_levels_and_names() {
    let wrong_level = pkt(0x10, &cat(&[&s("MQIsdp"), &[4, 0x02, 0, 60], &s("c")]));
    assert_eq!(
        decode_connect(&wrong_level),
        Err(DecodeError::UnsupportedProtocol { level: 4 })
    );
    let mqtt_3 = pkt(0x10, &cat(&[&s("MQTT"), &[3, 0x02, 0, 60], &s("c")]));
    assert_eq!(
        decode_connect(&mqtt_3),
        Err(DecodeError::UnsupportedProtocol { level: 3 })
    );
    assert_eq!(
        decode_connect(&connect(6, 0x02, &s("c"))),
        Err(DecodeError::UnsupportedProtocol { level: 6 })
    );
    let wrong_name = pkt(0x10, &cat(&[&s("MQTX"), &[4, 0x02, 0, 60], &s("c")]));
    assert_eq!(
        decode_connect(&wrong_name),
        Err(DecodeError::UnsupportedProtocol { level: 4 })
    );
    // A CONNECT cut before the level byte is just malformed.
    assert_malformed(decode_connect(&pkt(0x10, &s("MQTT"))));
}

/// MQTT-3.1.2-3: the reserved connect flag must be 0.
#[test]
fn connect_reserved_flag_is_malformed() {
    for level in [4, 5] {
        assert_malformed(decode_connect(&connect(level, 0x03, &s("c"))));
    }
}

/// MQTT-3.1.2-11, MQTT-3.1.2-13, MQTT-3.1.2-15: without the will flag, will QoS and will
/// retain must be 0. MQTT-3.1.2-14: will QoS 3 is malformed.
#[test]
fn will_flag_rules() {
    for level in [4, 5] {
        assert_malformed(decode_connect(&connect(level, 0x02 | 0x08, &s("c"))));
        assert_malformed(decode_connect(&connect(level, 0x02 | 0x20, &s("c"))));
        let props: &[u8] = if level == 5 { &[0] } else { &[] };
        let will = cat(&[&s("c"), props, &s("w/t"), &s("bye")]);
        assert_malformed(decode_connect(&connect(level, 0x02 | 0x04 | 0x18, &will)));
        let c = connect_of(decode_connect(&connect(level, 0x04 | 0x10 | 0x20, &will)));
        let w = c.will.expect("will");
        assert_eq!((w.topic.as_str(), &w.payload[..]), ("w/t", &b"bye"[..]));
        assert_eq!((w.qos, w.retain), (QoS::ExactlyOnce, true));
    }
}

/// The will topic must be a valid topic name (no wildcards, not empty).
#[test]
fn will_topic_must_be_a_topic_name() {
    for level in [4, 5] {
        let props: &[u8] = if level == 5 { &[0] } else { &[] };
        for topic in ["w/#", "+", ""] {
            let will = cat(&[&s("c"), props, &s(topic), &s("bye")]);
            assert_eq!(
                decode_connect(&connect(level, 0x04, &will)),
                Err(DecodeError::TopicNameInvalid),
                "{topic:?}"
            );
        }
    }
}

#[test]
fn v5_will_properties() {
    // Property length 7: will delay interval 5, payload format indicator 1.
    let will_props = [7, 0x18, 0, 0, 0, 5, 0x01, 1];
    let w = cat(&[&s("c"), &will_props, &s("w"), &s("p")]);
    let c = connect_of(decode_connect(&connect(5, 0x04, &w)));
    let will = c.will.expect("will");
    assert_eq!(will.delay_interval, 5);
    assert_eq!(will.properties.payload_format_indicator, Some(1));
    // Receive Maximum is not a will property.
    let bad = cat(&[&s("c"), &[3, 0x21, 0, 1], &s("w"), &s("p")]);
    assert_malformed(decode_connect(&connect(5, 0x04, &bad)));
}

/// MQTT-3.1.2-22: in 3.1.1 a password needs a user name; 5.0 allows it alone.
#[test]
fn password_without_username() {
    let rest = cat(&[&s("c"), &s("pw")]);
    assert_malformed(decode_connect(&connect(4, 0x42, &rest)));
    let c = connect_of(decode_connect(&connect(5, 0x42, &rest)));
    assert_eq!(
        (c.username, c.password.as_deref()),
        (None, Some(&b"pw"[..]))
    );
}

/// Passwords are binary data: non-UTF-8 bytes are accepted (mqttbytes rejects them).
#[test]
fn binary_password_is_accepted() {
    let password = [0u8, 0xFF, 0xFE, 0x80];
    for level in [4, 5] {
        let rest = cat(&[&s("c"), &s("user"), &[0, 4], &password]);
        let c = connect_of(decode_connect(&connect(level, 0xC2, &rest)));
        assert_eq!(c.username.as_deref(), Some("user"));
        assert_eq!(c.password.as_deref(), Some(&password[..]));
    }
}

/// MQTT-1.5.3-1 / MQTT-1.5.3-2 (MQTT-1.5.4-1/2 in 5.0): strings are valid UTF-8 without U+0000.
#[test]
fn client_id_and_username_must_be_clean_utf8() {
    for level in [4, 5] {
        assert_malformed(decode_connect(&connect(level, 0x02, &[0, 2, b'a', 0])));
        assert_malformed(decode_connect(&connect(level, 0x02, &[0, 2, 0xC3, 0x28])));
        let bad_user = cat(&[&s("c"), &[0, 2, 0xFF, b'a']]);
        assert_malformed(decode_connect(&connect(level, 0x82, &bad_user)));
        let nul_user = cat(&[&s("c"), &[0, 1, 0]]);
        assert_malformed(decode_connect(&connect(level, 0x82, &nul_user)));
    }
}

/// An empty client id with clean_session=0 is decoded: answering CONNACK 0x02 is the
/// broker's decision, not the codec's.
#[test]
fn v4_empty_client_id_without_clean_session_decodes() {
    let c = connect_of(decode_connect(&connect(4, 0x00, &s(""))));
    assert_eq!(c.client_id, "");
    assert!(!c.clean_start);
}

/// The remaining length must match the content exactly.
#[test]
fn connect_with_trailing_bytes_is_malformed() {
    for level in [4, 5] {
        assert_malformed(decode_connect(&connect(
            level,
            0x02,
            &cat(&[&s("c"), &[0]]),
        )));
    }
    // A user name flag without the user name is malformed too.
    assert_malformed(decode_connect(&connect(4, 0x82, &s("c"))));
}

/// The version is locked once the level is read, so a malformed v5 CONNECT can still be
/// answered with a v5 CONNACK 0x81.
#[test]
fn version_is_known_after_a_malformed_connect() {
    let mut d = Decoder::server(MAX);
    assert_malformed(decode_all(&mut d, &connect(5, 0x03, &s("c"))));
    assert_eq!(d.version(), Some(Version::V5));
}

#[test]
fn mqtt_3_1_is_read_as_leniently_as_mosquitto_reads_it() {
    // 3.1: the reserved flag is not checked, a password may come without a user name, and
    // a flagged user name or password missing at the end counts as absent.
    let body = |flags: u8, rest: &[u8]| {
        pkt(
            0x10,
            &cat(&[&s("MQIsdp"), &[3, flags, 0, 60], &s("c"), rest]),
        )
    };
    let c = connect_of(decode_connect(&body(0x03, &[])));
    assert!(c.clean_start && c.mqtt31);
    let c = connect_of(decode_connect(&body(0x42, &[0, 2, b'p', b'w'])));
    assert_eq!(
        (c.username, c.password.as_deref()),
        (None, Some(&b"pw"[..]))
    );
    let c = connect_of(decode_connect(&body(0xC2, &[])));
    assert_eq!((c.username, c.password), (None, None));
    // 3.1.1 keeps the strict rules.
    assert_malformed(decode_connect(&connect(
        4,
        0x42,
        &cat(&[&s("c"), &[0, 2, b'p', b'w']]),
    )));
}
