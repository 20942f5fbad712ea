//! Flow control: the server's Receive Maximum, and a full queue (refusal or pause).

use super::*;

#[test]
fn more_qos2_in_flight_than_receive_maximum_closes_with_0x93() {
    // MQTT-3.3.4-7; the client can read the DISCONNECT that says so.
    let mut w = World::new(false, |c| c.receive_maximum = 2);
    let mut p = w.connect(connect(Version::V5, "p"));
    p.send(&[publish("t", QoS::ExactlyOnce, 1, b"m")], w.now)
        .unwrap();
    p.send(&[publish("t", QoS::ExactlyOnce, 2, b"m")], w.now)
        .unwrap();
    // A resend of an id already counted is not a new one.
    p.send(&[publish("t", QoS::ExactlyOnce, 2, b"m")], w.now)
        .unwrap();
    let close = p
        .send(&[publish("t", QoS::ExactlyOnce, 3, b"m")], w.now)
        .expect_err("over the limit");
    assert!(matches!(
        close,
        Close::Violation { reason, .. } if reason == ReasonCode::RECEIVE_MAXIMUM_EXCEEDED
    ));
    let (will, last) = p.close(&w, close);
    assert!(will.is_none(), "no will was set");
    let Packet::Disconnect(d) = only(last) else {
        panic!("DISCONNECT")
    };
    assert_eq!(d.reason, ReasonCode::RECEIVE_MAXIMUM_EXCEEDED);
}

/// A broker whose queues hold one message, a subscriber that does not acknowledge, and a
/// publisher of `version`.
fn full(version: Version) -> (World, Client, Client) {
    let mut w = World::new(false, |c| c.max_queued_messages = 1);
    let mut s = subscriber(&mut w, connect(Version::V5, "s"), "t", QoS::AtLeastOnce);
    let mut c = connect(version, "p");
    c.keep_alive = 10;
    let mut p = w.connect(c);
    assert!(p.core.poll_timeout().is_some(), "keep alive runs");
    p.send(&[publish("t", QoS::AtLeastOnce, 1, b"first")], w.now)
        .unwrap();
    assert_eq!(s.step(w.now).unwrap().len(), 1, "in flight, unacknowledged");
    (w, p, s)
}

#[test]
fn v5_publisher_meeting_a_full_queue_gets_0x97() {
    // Promise 4: refused, not acknowledged and dropped (MQTT 5.0 3.4.2.1, Quota exceeded).
    let (w, mut p, mut s) = full(Version::V5);
    let a = as_ack(only(
        p.send(&[publish("t", QoS::AtLeastOnce, 2, b"x")], w.now)
            .unwrap(),
    ));
    assert_eq!((a.packet_id, a.reason), (2, ReasonCode::QUOTA_EXCEEDED));
    assert_eq!(w.broker.metrics.snapshot().rejected_quota_exceeded, 1);
    // Room again once the subscriber acknowledges.
    s.send(&[ack(AckKind::PubAck, 1)], w.now).unwrap();
    let a = as_ack(only(
        p.send(&[publish("t", QoS::AtLeastOnce, 3, b"y")], w.now)
            .unwrap(),
    ));
    assert_eq!(a.reason, ReasonCode::SUCCESS);
}

#[test]
fn v311_publisher_meeting_a_full_queue_is_paused_until_there_is_room() {
    let (mut w, mut p, mut s) = full(Version::V311);
    // No acknowledgement: the publisher is paused; what depends on it waits, in order, and
    // what does not (PINGREQ) is answered.
    let got = p
        .send(
            &[
                publish("t", QoS::AtLeastOnce, 2, b"x"),
                subscribe(3, "other", QoS::AtMostOnce),
                Packet::PingReq,
            ],
            w.now,
        )
        .unwrap();
    assert_eq!(got, vec![Packet::PingResp]);
    let (full_session, _) = p.core.paused_on().expect("paused");
    assert_eq!(&*full_session.client_id, "s");
    assert_eq!(w.broker.metrics.snapshot().backpressure_pauses, 1);
    // Keep alive is not enforced while paused.
    assert_eq!(p.core.poll_timeout(), None);
    w.advance(Duration::from_secs(60));
    assert!(p.send(&[], w.now).unwrap().is_empty(), "still full");
    s.send(&[ack(AckKind::PubAck, 1)], w.now).unwrap();
    let got = p.send(&[], w.now).unwrap();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        as_ack(got[0].clone()).packet_id,
        2,
        "the paused PUBLISH first"
    );
    assert!(matches!(&got[1], Packet::SubAck(a) if a.packet_id == 3));
    assert!(p.core.paused_on().is_none());
    assert_eq!(
        p.core.poll_timeout(),
        Some(w.now + Duration::from_secs(15)),
        "keep alive restarts when the pause ends"
    );
    let m = as_publish(only(s.step(w.now).unwrap()));
    assert_eq!(&m.payload[..], b"x");
}

#[test]
fn a_paused_publisher_stops_reading_once_it_holds_enough() {
    let (w, mut p, _s) = full(Version::V311);
    let mut input = BytesMut::new();
    for id in 2..400u16 {
        let packet = publish("t", QoS::AtLeastOnce, id, b"x");
        codec::encode(&packet, Version::V311, None, &mut input).unwrap();
    }
    p.core.handle_input(&mut input, w.now).unwrap();
    assert!(!p.core.wants_read());
    assert!(!input.is_empty(), "the rest stays unread");
    assert!(!p.core.stuck(), "it owes nothing to its own client");
}

#[test]
fn a_refusal_says_why_unless_the_client_asked_for_no_problem_information() {
    // MQTT-3.1.2-29: with Request Problem Information 0, no Reason String on a PUBACK.
    let (w, mut p, _s) = full(Version::V5);
    let a = as_ack(only(
        p.send(&[publish("t", QoS::AtLeastOnce, 2, b"x")], w.now)
            .unwrap(),
    ));
    assert_eq!(a.reason, ReasonCode::QUOTA_EXCEEDED);
    assert!(a.reason_string.is_some());
    let mut w = w;
    let mut c = connect(Version::V5, "quiet");
    c.request_problem_information = false;
    let mut quiet = w.connect(c);
    let a = as_ack(only(
        quiet
            .send(&[publish("t", QoS::AtLeastOnce, 1, b"x")], w.now)
            .unwrap(),
    ));
    assert_eq!(a.reason, ReasonCode::QUOTA_EXCEEDED);
    assert_eq!(a.reason_string, None);
}
