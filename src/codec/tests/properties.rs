//! MQTT 5.0 property rules, checked through CONNECT and PUBLISH (one parser serves all).

use super::*;

/// A v5 CONNECT carrying `props` (already including the property length).
fn connect_with(props: &[u8]) -> Vec<u8> {
    pkt(0x10, &cat(&[&s("MQTT"), &[5, 0x02, 0, 60], props, &s("c")]))
}

fn decode_connect(bytes: &[u8]) -> Result<Option<Packet>, DecodeError> {
    decode_all(&mut Decoder::server(MAX), bytes)
}

fn publish_with(props: &[u8]) -> Vec<u8> {
    pkt(0x30, &cat(&[&s("t"), props, b"x"]))
}

#[test]
fn connect_properties_are_decoded() {
    let props = cat(&[
        &[
            0x11, 0, 0, 0, 10, 0x21, 0, 20, 0x27, 0, 0, 1, 0, 0x22, 0, 5, 0x19, 1, 0x17, 0,
        ],
        &[0x26],
        &s("k"),
        &s("v"),
        &[0x15],
        &s("m"),
        &[0x16, 0, 1, 9],
    ]);
    let bytes = connect_with(&cat(&[&[props.len() as u8], &props]));
    match decode_connect(&bytes) {
        Ok(Some(Packet::Connect(c))) => {
            assert_eq!(c.session_expiry_interval, 10);
            assert_eq!(c.receive_maximum, 20);
            assert_eq!(c.maximum_packet_size, Some(256));
            assert_eq!(c.topic_alias_maximum, 5);
            assert!(c.request_response_information);
            assert!(!c.request_problem_information);
            assert_eq!(c.user_properties, vec![("k".into(), "v".into())]);
            assert_eq!(c.authentication_method.as_deref(), Some("m"));
            assert_eq!(c.authentication_data.as_deref(), Some(&[9][..]));
        }
        other => panic!("{other:?}"),
    }
}

/// MQTT 5.0 3.1.2.11: each property at most once (mqttbytes keeps the last one).
#[test]
fn duplicate_property_is_protocol_error() {
    assert_protocol(decode_connect(&connect_with(&[
        10, 0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2,
    ])));
    assert_protocol(from_client(
        Version::V5,
        &publish_with(&[4, 0x01, 0, 0x01, 1]),
    ));
}

/// User Property may repeat (and keeps its order).
#[test]
fn user_property_may_repeat() {
    let props = cat(&[&[0x26], &s("a"), &s("1"), &[0x26], &s("a"), &s("2")]);
    match from_client(
        Version::V5,
        &publish_with(&cat(&[&[props.len() as u8], &props])),
    ) {
        Ok(Some(Packet::Publish(p))) => assert_eq!(
            p.properties.user_properties,
            vec![("a".into(), "1".into()), ("a".into(), "2".into())]
        ),
        other => panic!("{other:?}"),
    }
}

/// A property that the packet type does not allow, or an unknown identifier, is malformed.
#[test]
fn property_not_allowed_in_packet_is_malformed() {
    assert_malformed(decode_connect(&connect_with(&[3, 0x23, 0, 1]))); // topic alias
    assert_malformed(from_client(
        Version::V5,
        &publish_with(&[5, 0x11, 0, 0, 0, 1]),
    ));
    assert_malformed(from_client(Version::V5, &publish_with(&[2, 0x7F, 0]))); // unknown
    assert_malformed(from_client(Version::V5, &[0x40, 5, 0, 1, 0, 2, 0x01, 1])); // PUBACK
}

/// Receive Maximum 0, Maximum Packet Size 0, Topic Alias 0 are protocol errors.
#[test]
fn zero_valued_properties_are_protocol_errors() {
    assert_protocol(decode_connect(&connect_with(&[3, 0x21, 0, 0])));
    assert_protocol(decode_connect(&connect_with(&[5, 0x27, 0, 0, 0, 0])));
    assert_protocol(from_client(Version::V5, &publish_with(&[3, 0x23, 0, 0])));
}

/// Flag properties take 0 or 1 only.
#[test]
fn flag_property_out_of_range_is_protocol_error() {
    assert_protocol(decode_connect(&connect_with(&[2, 0x17, 2])));
    assert_protocol(from_client(Version::V5, &publish_with(&[2, 0x01, 2])));
}

/// A property length running past the end of the packet, or a property running past the
/// property length into the payload (mqttbytes lets it), is malformed.
#[test]
fn property_length_overruns_are_malformed() {
    assert_malformed(from_client(
        Version::V5,
        &pkt(0x30, &cat(&[&s("t"), &[9, 0x01]])),
    ));
    // Property length 2 but the Message Expiry Interval needs 5 bytes.
    assert_malformed(from_client(
        Version::V5,
        &publish_with(&[2, 0x02, 0, 0, 0, 1]),
    ));
    // A string property with U+0000.
    assert_malformed(from_client(
        Version::V5,
        &publish_with(&[5, 0x03, 0, 2, b'a', 0]),
    ));
}
