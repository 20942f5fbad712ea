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

#[test]
fn informative_parts_are_left_out_when_the_client_cannot_take_them() {
    // MQTT-3.4.2-2 / MQTT-3.14.2-3 / MQTT-3.2.2-19: a Reason String (or Response
    // Information) that would exceed the client's Maximum Packet Size is left out; the packet
    // itself still goes.
    let mut w = World::memory();
    let mut c = connect(Version::V5, "small");
    c.maximum_packet_size = Some(40);
    c.request_response_information = true;
    let (mut small, connack) = w.try_connect(c);
    let Packet::ConnAck(connack) = connack else {
        panic!("CONNACK")
    };
    assert_eq!(connack.code, ReasonCode::SUCCESS);
    assert_eq!(
        connack.properties.response_information, None,
        "left out to fit"
    );
    let comp = as_ack(only(small.send(&[ack(AckKind::PubRel, 9)], w.now).unwrap()));
    assert_eq!(comp.reason, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND);
    assert_eq!(comp.reason_string, None);
    let (_, last) = small.close(&w, Close::KeepAlive);
    let Packet::Disconnect(d) = only(last) else {
        panic!("DISCONNECT")
    };
    assert_eq!(
        (d.reason, d.reason_string),
        (ReasonCode::KEEP_ALIVE_TIMEOUT, None)
    );
}

#[test]
fn an_empty_topic_without_an_alias_is_a_protocol_error() {
    // MQTT 5.0 3.3.2.1.
    let mut w = World::memory();
    let mut c = w.connect(connect(Version::V5, "a"));
    let close = c
        .send(&[publish("", QoS::AtMostOnce, 0, b"x")], w.now)
        .expect_err("closes");
    assert_eq!(violation(close), ReasonCode::PROTOCOL_ERROR);
}

#[test]
fn aliases_holding_too_many_bytes_close_with_0x97() {
    let mut w = World::new(false, |c| c.topic_alias_maximum = 1024);
    let mut c = w.connect(connect(Version::V5, "a"));
    let long = "t".repeat(60_000);
    let mut result = Ok(Vec::new());
    for alias in 1..=5u16 {
        let mut p = publish(&long, QoS::AtMostOnce, 0, b"x");
        if let Packet::Publish(p) = &mut p {
            p.topic_alias = Some(alias);
        }
        result = c.send(&[p], w.now);
        if result.is_err() {
            break;
        }
    }
    assert_eq!(
        violation(result.expect_err("over the budget")),
        ReasonCode::QUOTA_EXCEEDED
    );
}
