//! PUBLISH: flags, topic names, packet ids, zero-copy payload.

use super::*;

fn publish_of(r: Result<Option<Packet>, DecodeError>) -> Publish {
    match r {
        Ok(Some(Packet::Publish(p))) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

/// A PUBLISH body: topic, packet id when `pkid` is Some, properties (v5), payload.
fn body(v: Version, topic: &[u8], pkid: Option<u16>, props: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut b = (topic.len() as u16).to_be_bytes().to_vec();
    b.extend_from_slice(topic);
    if let Some(id) = pkid {
        b.extend_from_slice(&id.to_be_bytes());
    }
    if v == Version::V5 {
        b.extend_from_slice(props);
    }
    b.extend_from_slice(payload);
    b
}

#[test]
fn publish_decodes_in_both_versions() {
    for v in VERSIONS {
        let p = publish_of(from_client(
            v,
            &pkt(0x3B, &body(v, b"a/b", Some(9), &[0], b"hello")),
        ));
        assert!(p.dup && p.retain);
        assert_eq!(p.qos, QoS::AtLeastOnce);
        assert_eq!((p.topic.as_str(), p.packet_id), ("a/b", 9));
        assert_eq!(&p.payload[..], b"hello");
    }
}

/// MQTT-3.3.1-4: QoS 3 is malformed.
#[test]
fn publish_qos_3_is_malformed() {
    for v in VERSIONS {
        assert_malformed(from_client(
            v,
            &pkt(0x36, &body(v, b"t", Some(1), &[0], b"")),
        ));
    }
}

/// MQTT-3.3.1-2: DUP must be 0 for QoS 0.
#[test]
fn publish_dup_with_qos_0_is_malformed() {
    for v in VERSIONS {
        assert_malformed(from_client(v, &pkt(0x38, &body(v, b"t", None, &[0], b""))));
    }
}

/// MQTT-3.3.2-2 / MQTT-4.7.3-1: no wildcards, not empty (mqttbytes accepts both).
#[test]
fn publish_wildcard_or_empty_topic_is_invalid() {
    for v in VERSIONS {
        for topic in [&b"a/+"[..], b"#", b"a/#"] {
            assert_eq!(
                from_client(v, &pkt(0x30, &body(v, topic, None, &[0], b"x"))),
                Err(DecodeError::TopicNameInvalid),
                "{topic:?}"
            );
        }
        // Empty without a topic alias: a protocol error (MQTT 5.0 3.3.2.1).
        assert_protocol(from_client(v, &pkt(0x30, &body(v, b"", None, &[0], b"x"))));
    }
}

/// MQTT 5.0 3.3.2.3.4: an empty topic is allowed only with a Topic Alias.
#[test]
fn v5_empty_topic_with_alias_is_allowed() {
    let p = publish_of(from_client(
        Version::V5,
        &pkt(0x30, &body(Version::V5, b"", None, &[3, 0x23, 0, 4], b"x")),
    ));
    assert_eq!((p.topic.as_str(), p.topic_alias), ("", Some(4)));
}

/// MQTT-1.5.4-2: U+0000 in a string (here the topic) is malformed; so is invalid UTF-8.
#[test]
fn publish_topic_with_nul_or_bad_utf8_is_malformed() {
    for v in VERSIONS {
        assert_malformed(from_client(
            v,
            &pkt(0x30, &body(v, b"a\0b", None, &[0], b"")),
        ));
        assert_malformed(from_client(
            v,
            &pkt(0x30, &body(v, b"a\xFF", None, &[0], b"")),
        ));
    }
}

/// MQTT-2.2.1-3: QoS > 0 needs a non-zero packet id.
#[test]
fn publish_packet_id_zero_is_malformed() {
    for v in VERSIONS {
        for byte1 in [0x32, 0x34] {
            assert_malformed(from_client(
                v,
                &pkt(byte1, &body(v, b"t", Some(0), &[0], b"")),
            ));
        }
    }
}

/// The payload is a slice of the read buffer, not a copy.
#[test]
fn publish_payload_is_zero_copy() {
    let bytes = pkt(0x30, &body(Version::V5, b"t", None, &[0], &[7u8; 100]));
    for v in VERSIONS {
        let bytes = if v == Version::V5 {
            bytes.clone()
        } else {
            pkt(0x30, &body(v, b"t", None, &[], &[7u8; 100]))
        };
        let mut d = server(v);
        let mut buf = BytesMut::from(&bytes[..]);
        let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
        let p = publish_of(d.decode(&mut buf));
        assert_eq!(p.payload.len(), 100);
        assert!(
            range.contains(&(p.payload.as_ptr() as usize)),
            "{v:?} copied"
        );
    }
}

/// MQTT-3.3.4-6: a client must not send a Subscription Identifier; a server may send several.
#[test]
fn subscription_identifiers_only_from_the_server() {
    let b = body(Version::V5, b"t", None, &[4, 0x0B, 1, 0x0B, 2], b"x");
    assert_protocol(from_client(Version::V5, &pkt(0x30, &b)));
    let p = publish_of(from_server(Version::V5, &pkt(0x30, &b)));
    assert_eq!(p.subscription_identifiers, vec![1, 2]);
    let single = body(Version::V5, b"t", None, &[2, 0x0B, 1], b"x");
    assert_protocol(from_client(Version::V5, &pkt(0x30, &single)));
}

#[test]
fn v5_publish_properties_are_decoded() {
    let props = cat(&[
        &[0x01, 1, 0x02, 0, 0, 0, 60, 0x03],
        &s("text/plain"),
        &[0x08],
        &s("resp/t"),
        &[0x09, 0, 2, 0xAB, 0xCD, 0x26],
        &s("k"),
        &s("v"),
    ]);
    let b = cat(&[&s("t"), &[props.len() as u8], &props, b"x"]);
    let p = publish_of(from_client(Version::V5, &pkt(0x30, &b)));
    let pp = &p.properties;
    assert_eq!(pp.payload_format_indicator, Some(1));
    assert_eq!(pp.message_expiry_interval, Some(60));
    assert_eq!(pp.content_type.as_deref(), Some("text/plain"));
    assert_eq!(pp.response_topic.as_deref(), Some("resp/t"));
    assert_eq!(pp.correlation_data.as_deref(), Some(&[0xAB, 0xCD][..]));
    assert_eq!(pp.user_properties, vec![("k".into(), "v".into())]);
    assert_eq!(&p.payload[..], b"x");
}

/// MQTT-3.3.2-14: the Response Topic must not contain wildcards.
#[test]
fn v5_response_topic_with_wildcard_is_protocol_error() {
    let props = cat(&[&[0x08], &s("r/#")]);
    let b = cat(&[&s("t"), &[props.len() as u8], &props]);
    assert_protocol(from_client(Version::V5, &pkt(0x30, &b)));
}
