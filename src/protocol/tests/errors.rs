//! Each protocol error closes the connection with its reason code.

use super::*;

fn violation(close: Close) -> ReasonCode {
    match close {
        Close::Violation { reason, .. } => reason,
        other => panic!("expected a protocol violation, got {other:?}"),
    }
}

#[test]
fn a_topic_alias_over_the_maximum_is_refused_with_0x94() {
    // MQTT-3.3.2-9: no alias above the Topic Alias Maximum of CONNACK (here 10).
    let mut w = World::memory();
    let mut c = w.connect(connect(Version::V5, "a"));
    let mut p = publish("t", QoS::AtMostOnce, 0, b"x");
    if let Packet::Publish(p) = &mut p {
        p.topic_alias = Some(11);
    }
    let close = c.send(&[p], w.now).expect_err("closes");
    assert_eq!(violation(close), ReasonCode::TOPIC_ALIAS_INVALID);
}

#[test]
fn auth_without_a_method_is_a_protocol_error() {
    let mut w = World::memory();
    let mut c = w.connect(connect(Version::V5, "a"));
    let close = c
        .send(&[Packet::Auth(codec::Auth::default())], w.now)
        .expect_err("closes");
    assert_eq!(violation(close), ReasonCode::PROTOCOL_ERROR);
}

#[test]
fn a_second_connect_is_a_protocol_error() {
    // MQTT-3.1.0-2.
    let mut w = World::memory();
    let mut c = w.connect(connect(Version::V5, "a"));
    let again = Packet::Connect(Box::new(connect(Version::V5, "a")));
    let close = c.send(&[again], w.now).expect_err("closes");
    assert_eq!(violation(close), ReasonCode::PROTOCOL_ERROR);
}

#[test]
fn reserved_flag_bits_are_malformed() {
    // MQTT-2.2.2-2: PUBREL's flags must be 0010.
    let mut w = World::memory();
    let mut c = w.connect(connect(Version::V5, "a"));
    let mut input = BytesMut::from(&[0x60, 0x02, 0x00, 0x01][..]);
    let close = c.send_bytes(&mut input, w.now).expect_err("closes");
    assert_eq!(violation(close), ReasonCode::MALFORMED_PACKET);
}

#[test]
fn a_packet_over_the_maximum_size_is_refused_with_0x95() {
    // MQTT-3.2.2-15 / MQTT 5.0 4.13: Packet too large.
    let mut w = World::new(false, |c| c.max_packet_size = 64);
    let mut c = w.connect(connect(Version::V5, "a"));
    let close = c
        .send(&[publish("t", QoS::AtMostOnce, 0, &[0u8; 100])], w.now)
        .expect_err("closes");
    assert_eq!(violation(close), ReasonCode::PACKET_TOO_LARGE);
}

#[test]
fn packets_only_a_server_sends_are_refused() {
    let mut w = World::memory();
    let mut c = w.connect(connect(Version::V5, "a"));
    let close = c.send(&[Packet::PingResp], w.now).expect_err("closes");
    assert!(violation(close).is_error());
}

#[test]
fn packets_after_the_error_are_not_handled() {
    let mut w = World::memory();
    let _s = subscriber(&mut w, connect(Version::V5, "s"), "t", QoS::AtMostOnce);
    let mut c = w.connect(connect(Version::V5, "a"));
    let mut input = BytesMut::new();
    codec::encode(&Packet::PingReq, Version::V5, None, &mut input).unwrap();
    input.extend_from_slice(&[0x60, 0x02, 0x00, 0x01]);
    codec::encode(
        &publish("t", QoS::AtMostOnce, 0, b"x"),
        Version::V5,
        None,
        &mut input,
    )
    .unwrap();
    c.send_bytes(&mut input, w.now).expect_err("closes");
    assert_eq!(w.broker.metrics.snapshot().publish_received, 0);
}
