//! Server-to-client flows: QoS 1 and 2 deliveries, the inflight window, resend on resume,
//! overlapping subscriptions and the client's Maximum Packet Size.

use super::*;

/// A publisher and a subscriber of `t` at `qos`, both `version`.
fn pair(w: &mut World, version: Version, qos: QoS, sub: Connect) -> (Client, Client) {
    let s = subscriber(w, sub, "t", qos);
    let p = w.connect(connect(version, "p"));
    (p, s)
}

#[test]
fn qos1_delivery_is_resent_with_dup_on_resume_until_acknowledged() {
    // MQTT-4.4.0-1: unacknowledged PUBLISH packets are resent, DUP=1 (MQTT-3.3.1-1).
    let mut w = World::memory();
    let (mut p, mut s) = pair(
        &mut w,
        Version::V311,
        QoS::AtLeastOnce,
        durable(Version::V311, "s"),
    );
    p.send(&[publish("t", QoS::AtLeastOnce, 1, b"m")], w.now)
        .unwrap();
    let first = as_publish(only(s.step(w.now).unwrap()));
    assert!(!first.dup);
    assert_eq!(first.qos, QoS::AtLeastOnce);
    s.close(&w, Close::Io);
    let mut s = w.connect(durable(Version::V311, "s"));
    let again = as_publish(only(s.step(w.now).unwrap()));
    assert!(again.dup);
    assert_eq!(again.packet_id, first.packet_id, "same packet id");
    s.send(&[ack(AckKind::PubAck, again.packet_id)], w.now)
        .unwrap();
    s.close(&w, Close::Io);
    let mut s = w.connect(durable(Version::V311, "s"));
    assert!(
        s.step(w.now).unwrap().is_empty(),
        "acknowledged: not resent"
    );
}

#[test]
fn qos2_delivery_runs_the_whole_handshake() {
    // MQTT-4.3.3: PUBLISH, PUBREC in, PUBREL out, PUBCOMP in.
    let mut w = World::memory();
    let (mut p, mut s) = pair(
        &mut w,
        Version::V5,
        QoS::ExactlyOnce,
        connect(Version::V5, "s"),
    );
    p.send(&[publish("t", QoS::ExactlyOnce, 1, b"m")], w.now)
        .unwrap();
    let m = as_publish(only(s.step(w.now).unwrap()));
    assert_eq!(m.qos, QoS::ExactlyOnce);
    let rel = as_ack(only(
        s.send(&[ack(AckKind::PubRec, m.packet_id)], w.now).unwrap(),
    ));
    assert_eq!((rel.kind, rel.packet_id), (AckKind::PubRel, m.packet_id));
    assert!(
        s.send(&[ack(AckKind::PubComp, m.packet_id)], w.now)
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.core.session().slot.lock().session.outbound.inflight(), 0);
}

#[test]
fn after_pubrec_a_resume_resends_pubrel_not_the_message() {
    // MQTT-4.4.0-1: PUBREL is resent for ids that got PUBREC; the PUBLISH is not.
    let mut w = World::memory();
    let (mut p, mut s) = pair(
        &mut w,
        Version::V311,
        QoS::ExactlyOnce,
        durable(Version::V311, "s"),
    );
    p.send(&[publish("t", QoS::ExactlyOnce, 1, b"m")], w.now)
        .unwrap();
    let m = as_publish(only(s.step(w.now).unwrap()));
    s.send(&[ack(AckKind::PubRec, m.packet_id)], w.now).unwrap();
    s.close(&w, Close::Io);
    let mut s = w.connect(durable(Version::V311, "s"));
    let rel = as_ack(only(s.step(w.now).unwrap()));
    assert_eq!((rel.kind, rel.packet_id), (AckKind::PubRel, m.packet_id));
}

#[test]
fn a_failed_pubrec_ends_the_flow() {
    // MQTT 5.0 4.3.3: a PUBREC with a reason code >= 0x80 ends the exchange, no PUBREL.
    let mut w = World::memory();
    let (mut p, mut s) = pair(
        &mut w,
        Version::V5,
        QoS::ExactlyOnce,
        connect(Version::V5, "s"),
    );
    p.send(&[publish("t", QoS::ExactlyOnce, 1, b"m")], w.now)
        .unwrap();
    let m = as_publish(only(s.step(w.now).unwrap()));
    let refused = Packet::Ack(PubAckLike {
        kind: AckKind::PubRec,
        packet_id: m.packet_id,
        reason: ReasonCode::UNSPECIFIED_ERROR,
        reason_string: None,
    });
    assert!(s.send(&[refused], w.now).unwrap().is_empty());
    assert_eq!(s.core.session().slot.lock().session.outbound.inflight(), 0);
}

#[test]
fn the_inflight_window_is_the_clients_receive_maximum() {
    // MQTT-3.3.4-9: no more unacknowledged QoS 1/2 PUBLISH than the client's Receive Maximum.
    let mut w = World::memory();
    let mut c = connect(Version::V5, "s");
    c.receive_maximum = 2;
    let (mut p, mut s) = pair(&mut w, Version::V5, QoS::AtLeastOnce, c);
    for id in 1..=3 {
        p.send(&[publish("t", QoS::AtLeastOnce, id, b"m")], w.now)
            .unwrap();
    }
    let got = s.step(w.now).unwrap();
    assert_eq!(got.len(), 2, "window of 2");
    let first = as_publish(got[0].clone());
    let third = s
        .send(&[ack(AckKind::PubAck, first.packet_id)], w.now)
        .unwrap();
    assert_eq!(third.len(), 1, "one acknowledged, one more sent");
}

#[test]
fn overlapping_subscriptions_deliver_one_copy_at_the_highest_qos() {
    // MQTT-3.3.5-1 (3.1.1): one message, at the maximum QoS of the matching subscriptions.
    let mut w = World::memory();
    let mut s = subscriber(&mut w, connect(Version::V311, "s"), "a/#", QoS::AtMostOnce);
    s.send(&[subscribe(2, "a/b", QoS::AtLeastOnce)], w.now)
        .unwrap();
    let mut p = w.connect(connect(Version::V311, "p"));
    p.send(&[publish("a/b", QoS::ExactlyOnce, 1, b"m")], w.now)
        .unwrap();
    let got = as_publish(only(s.step(w.now).unwrap()));
    assert_eq!(got.qos, QoS::AtLeastOnce);
}

#[test]
fn messages_over_the_clients_maximum_packet_size_are_dropped() {
    // MQTT-3.1.2-25: not sent, and treated as delivered.
    let mut w = World::memory();
    let mut c = connect(Version::V5, "s");
    c.maximum_packet_size = Some(64);
    let (mut p, mut s) = pair(&mut w, Version::V5, QoS::AtLeastOnce, c);
    p.send(&[publish("t", QoS::AtLeastOnce, 1, &[7u8; 100])], w.now)
        .unwrap();
    p.send(&[publish("t", QoS::AtLeastOnce, 2, b"small")], w.now)
        .unwrap();
    let got = as_publish(only(s.step(w.now).unwrap()));
    assert_eq!(&got.payload[..], b"small");
    assert_eq!(w.broker.metrics.snapshot().dropped_too_large, 1);
    assert_eq!(s.core.session().slot.lock().session.outbound.inflight(), 1);
}

fn with_alias(mut p: Packet, topic: &str, alias: u16) -> Packet {
    if let Packet::Publish(p) = &mut p {
        p.topic = topic.to_string();
        p.topic_alias = Some(alias);
    }
    p
}

#[test]
fn topic_aliases_from_the_client_are_set_then_used() {
    // MQTT 5.0 3.3.2.3.4: CONNACK offers Topic Alias Maximum; an alias is set with a topic
    // and then used with an empty one.
    let mut w = World::memory();
    let mut s = subscriber(
        &mut w,
        connect(Version::V5, "s"),
        "sensors/#",
        QoS::AtMostOnce,
    );
    let (mut p, connack) = w.try_connect(connect(Version::V5, "p"));
    let Packet::ConnAck(ack) = connack else {
        panic!("CONNACK")
    };
    assert_eq!(ack.properties.topic_alias_maximum, Some(10));
    let first = with_alias(publish("x", QoS::AtMostOnce, 0, b"1"), "sensors/t", 3);
    let again = with_alias(publish("x", QoS::AtMostOnce, 0, b"2"), "", 3);
    p.send(&[first, again], w.now).unwrap();
    let got: Vec<String> = s
        .step(w.now)
        .unwrap()
        .into_iter()
        .map(|m| as_publish(m).topic)
        .collect();
    assert_eq!(
        got,
        vec!["sensors/t", "sensors/t"],
        "the subscriber sees the topic"
    );
    let unset = with_alias(publish("x", QoS::AtMostOnce, 0, b"3"), "", 4);
    let close = p.send(&[unset], w.now).expect_err("closes");
    assert!(
        matches!(close, Close::Violation { reason, .. } if reason == ReasonCode::PROTOCOL_ERROR)
    );
}

#[test]
fn topics_go_out_as_aliases_when_the_client_allows_them() {
    // MQTT-3.3.2-10: never more aliases than the client's Topic Alias Maximum.
    let mut w = World::memory();
    let mut c = connect(Version::V5, "s");
    c.topic_alias_maximum = 1;
    let mut s = subscriber(&mut w, c, "a/#", QoS::AtMostOnce);
    let mut p = w.connect(connect(Version::V5, "p"));
    for topic in ["a/1", "a/1", "a/2", "a/2", "a/1"] {
        p.send(&[publish(topic, QoS::AtMostOnce, 0, b"m")], w.now)
            .unwrap();
    }
    let got: Vec<(String, Option<u16>)> = s
        .step(w.now)
        .unwrap()
        .into_iter()
        .map(|m| {
            let m = as_publish(m);
            (m.topic, m.topic_alias)
        })
        .collect();
    let expected = [
        ("a/1", Some(1)),
        ("", Some(1)),
        ("a/2", Some(1)),
        ("", Some(1)),
        ("a/1", Some(1)),
    ];
    let expected: Vec<(String, Option<u16>)> =
        expected.iter().map(|(t, a)| (t.to_string(), *a)).collect();
    assert_eq!(got, expected);
    // A v3.1.1 client never gets aliases.
    let mut old = subscriber(
        &mut w,
        connect(Version::V311, "old"),
        "a/#",
        QoS::AtMostOnce,
    );
    p.send(&[publish("a/1", QoS::AtMostOnce, 0, b"m")], w.now)
        .unwrap();
    assert_eq!(as_publish(only(old.step(w.now).unwrap())).topic, "a/1");
}

#[test]
fn a_new_alias_is_not_used_when_it_would_make_the_message_too_large() {
    // The 3 bytes of a Topic Alias must not cost the client a message that fits without it.
    let mut w = World::memory();
    let mut c = connect(Version::V5, "s");
    c.topic_alias_maximum = 2;
    c.maximum_packet_size = Some(40);
    let mut s = subscriber(&mut w, c, "a/#", QoS::AtMostOnce);
    let mut p = w.connect(connect(Version::V5, "p"));
    // 1 + 1 + (2 + 3) + 1 (no properties) + 32 = 40 bytes without an alias.
    let payload = b"0123456789abcdef0123456789abcdef";
    p.send(&[publish("a/b", QoS::AtMostOnce, 0, payload)], w.now)
        .unwrap();
    let m = as_publish(only(s.step(w.now).unwrap()));
    assert_eq!((m.topic.as_str(), m.topic_alias), ("a/b", None));
    assert_eq!(w.broker.metrics.snapshot().dropped_too_large, 0);
}
