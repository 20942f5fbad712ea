//! Time, given by the test: keep alive and message expiry.

use super::*;

#[test]
fn keep_alive_closes_after_one_and_a_half_times_the_interval() {
    // MQTT-3.1.2-24.
    let mut w = World::memory();
    let mut c = connect(Version::V5, "k");
    c.keep_alive = 10;
    let mut k = w.connect(c);
    let start = w.now;
    assert_eq!(k.core.poll_timeout(), Some(start + Duration::from_secs(15)));
    w.advance(Duration::from_secs(10));
    k.send(&[Packet::PingReq], w.now).unwrap();
    assert_eq!(k.core.poll_timeout(), Some(start + Duration::from_secs(25)));
    w.advance(Duration::from_millis(14_999));
    assert_eq!(k.core.handle_timeout(w.now), Ok(()));
    w.advance(Duration::from_millis(1));
    assert_eq!(k.core.handle_timeout(w.now), Err(Close::KeepAlive));
    let (_, last) = k.close(&w, Close::KeepAlive);
    let Packet::Disconnect(d) = only(last) else {
        panic!("DISCONNECT")
    };
    assert_eq!(d.reason, ReasonCode::KEEP_ALIVE_TIMEOUT);
}

#[test]
fn keep_alive_zero_means_no_timer() {
    // MQTT-3.1.2-23... a keep alive of 0 turns the mechanism off.
    let mut w = World::memory();
    let k = w.connect(connect(Version::V311, "k"));
    assert_eq!(k.core.poll_timeout(), None);
    w.advance(Duration::from_secs(86_400));
}

/// A subscriber with a window of one, its window filled by a first message, and a second
/// message published with a 10 s expiry interval queued behind it.
fn queued_with_expiry(w: &mut World) -> Client {
    let mut c = connect(Version::V5, "s");
    c.receive_maximum = 1;
    let mut s = subscriber(w, c, "t", QoS::AtLeastOnce);
    let mut p = w.connect(connect(Version::V5, "p"));
    let mut expiring = publish("t", QoS::AtLeastOnce, 2, b"expiring");
    if let Packet::Publish(m) = &mut expiring {
        m.properties.message_expiry_interval = Some(10);
    }
    p.send(
        &[publish("t", QoS::AtLeastOnce, 1, b"first"), expiring],
        w.now,
    )
    .unwrap();
    assert_eq!(s.step(w.now).unwrap().len(), 1);
    s
}

#[test]
fn a_queued_message_is_forwarded_with_what_is_left_of_its_expiry() {
    // MQTT-3.3.2-6.
    let mut w = World::memory();
    let mut s = queued_with_expiry(&mut w);
    w.advance(Duration::from_secs(4));
    let m = as_publish(only(s.send(&[ack(AckKind::PubAck, 1)], w.now).unwrap()));
    assert_eq!(m.properties.message_expiry_interval, Some(6));
}

#[test]
fn an_expired_message_is_not_delivered() {
    // MQTT-3.3.2-5.
    let mut w = World::memory();
    let mut s = queued_with_expiry(&mut w);
    w.advance(Duration::from_secs(11));
    assert!(
        s.send(&[ack(AckKind::PubAck, 1)], w.now)
            .unwrap()
            .is_empty()
    );
    assert_eq!(w.broker.metrics.snapshot().expired, 1);
}
