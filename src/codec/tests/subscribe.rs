//! SUBSCRIBE and UNSUBSCRIBE: filters, options, packet ids.

use super::*;

/// A SUBSCRIBE body: packet id, properties (v5), then (filter, options) pairs.
fn sub(v: Version, pkid: u16, props: &[u8], filters: &[(&str, u8)]) -> Vec<u8> {
    let mut b = pkid.to_be_bytes().to_vec();
    if v == Version::V5 {
        b.extend_from_slice(props);
    }
    for (f, o) in filters {
        b.extend(s(f));
        b.push(*o);
    }
    pkt(0x82, &b)
}

/// An UNSUBSCRIBE body: packet id, properties (v5), filters.
fn unsub(v: Version, pkid: u16, filters: &[&str]) -> Vec<u8> {
    let mut b = pkid.to_be_bytes().to_vec();
    if v == Version::V5 {
        b.push(0);
    }
    for f in filters {
        b.extend(s(f));
    }
    pkt(0xA2, &b)
}

fn subscribe_of(r: Result<Option<Packet>, DecodeError>) -> Subscribe {
    match r {
        Ok(Some(Packet::Subscribe(s))) => s,
        other => panic!("expected SUBSCRIBE, got {other:?}"),
    }
}

#[test]
fn subscribe_decodes_in_both_versions() {
    let s4 = subscribe_of(from_client(
        Version::V311,
        &sub(Version::V311, 5, &[], &[("a/+", 1), ("#", 2)]),
    ));
    assert_eq!(s4.packet_id, 5);
    assert_eq!(s4.filters.len(), 2);
    assert_eq!(
        (s4.filters[1].filter.as_str(), s4.filters[1].qos),
        ("#", QoS::ExactlyOnce)
    );
    let s5 = subscribe_of(from_client(
        Version::V5,
        &sub(Version::V5, 6, &[2, 0x0B, 42], &[("a/b", 0b0010_1101)]),
    ));
    let f = &s5.filters[0];
    assert_eq!(s5.subscription_identifier, Some(42));
    assert_eq!(f.qos, QoS::AtLeastOnce);
    assert!(f.no_local && f.retain_as_published);
    assert_eq!(f.retain_handling, RetainHandling::Never);
}

/// MQTT-3.8.3-3: at least one filter (mqttbytes accepts an empty list).
#[test]
fn subscribe_without_filters_is_malformed() {
    for v in VERSIONS {
        assert_malformed(from_client(v, &sub(v, 1, &[0], &[])));
    }
}

/// MQTT-4.7.1-2 / MQTT-4.7.1-3: wildcards must occupy whole levels (mqttbytes accepts "a+/b").
#[test]
fn subscribe_invalid_filter_is_malformed() {
    for v in VERSIONS {
        for f in ["a+/b", "a/#/b", "a#", "", "a\0b"] {
            assert_malformed(from_client(v, &sub(v, 1, &[0], &[("ok", 0), (f, 0)])));
        }
    }
}

/// MQTT-2.2.1-3: packet id 0 is malformed.
#[test]
fn subscribe_packet_id_zero_is_malformed() {
    for v in VERSIONS {
        assert_malformed(from_client(v, &sub(v, 0, &[0], &[("a", 0)])));
    }
}

/// 3.1.1: the upper six option bits are reserved (MQTT-3-8.3-4); 5.0: bits 6-7
/// (MQTT-3.8.3-5) and retain handling 3 is malformed. mqttbytes ignores the reserved bits.
#[test]
fn subscribe_reserved_option_bits_are_malformed() {
    assert_malformed(from_client(
        Version::V311,
        &sub(Version::V311, 1, &[], &[("a", 0x04)]),
    ));
    assert_malformed(from_client(
        Version::V311,
        &sub(Version::V311, 1, &[], &[("a", 0x80)]),
    ));
    assert_malformed(from_client(
        Version::V5,
        &sub(Version::V5, 1, &[0], &[("a", 0x40)]),
    ));
    assert_malformed(from_client(
        Version::V5,
        &sub(Version::V5, 1, &[0], &[("a", 0x80)]),
    ));
    assert_malformed(from_client(
        Version::V5,
        &sub(Version::V5, 1, &[0], &[("a", 0x30)]),
    ));
}

#[test]
fn subscribe_qos_3_is_malformed() {
    for v in VERSIONS {
        assert_malformed(from_client(v, &sub(v, 1, &[0], &[("a", 3)])));
    }
}

/// MQTT 5.0 3.8.2.1.2: Subscription Identifier 0 is a protocol error; twice too.
#[test]
fn subscribe_subscription_identifier_zero_or_repeated() {
    let v = Version::V5;
    assert_protocol(from_client(v, &sub(v, 1, &[2, 0x0B, 0], &[("a", 0)])));
    assert_protocol(from_client(
        v,
        &sub(v, 1, &[4, 0x0B, 1, 0x0B, 2], &[("a", 0)]),
    ));
}

/// MQTT-3.8.3-4: No Local on a shared subscription is a protocol error.
#[test]
fn subscribe_no_local_on_shared_subscription() {
    let v = Version::V5;
    assert_protocol(from_client(v, &sub(v, 1, &[0], &[("$share/g/a", 0x04)])));
}

/// A trailing byte that is not a whole filter is malformed.
#[test]
fn subscribe_with_trailing_byte_is_malformed() {
    for v in VERSIONS {
        let mut b = sub(v, 1, &[0], &[("a", 0)]);
        b.push(0);
        b[1] += 1;
        assert_malformed(from_client(v, &b));
    }
}

/// UNSUBSCRIBE (5.0 by hand: mqttbytes prints with `dbg!`).
#[test]
fn unsubscribe_decodes_in_both_versions() {
    for v in VERSIONS {
        match from_client(v, &unsub(v, 3, &["a/+", "#"])) {
            Ok(Some(Packet::Unsubscribe(u))) => {
                assert_eq!(u.packet_id, 3);
                assert_eq!(u.filters, vec!["a/+".to_string(), "#".to_string()]);
            }
            other => panic!("{other:?}"),
        }
    }
}

/// MQTT-3.10.3-2: at least one filter.
#[test]
fn unsubscribe_without_filters_is_malformed() {
    for v in VERSIONS {
        assert_malformed(from_client(v, &unsub(v, 1, &[])));
    }
}

#[test]
fn unsubscribe_invalid_filter_or_packet_id_zero_is_malformed() {
    for v in VERSIONS {
        assert_malformed(from_client(v, &unsub(v, 1, &["a+"])));
        assert_malformed(from_client(v, &unsub(v, 1, &["a\0"])));
        assert_malformed(from_client(v, &unsub(v, 0, &["a"])));
        let mut b = unsub(v, 1, &["a"]);
        b.push(0);
        b[1] += 1;
        assert_malformed(from_client(v, &b));
    }
}
