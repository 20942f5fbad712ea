//! Client-to-server flows: PUBLISH at each QoS, PUBREL, PINGREQ, SUBSCRIBE, UNSUBSCRIBE.

use super::*;

#[test]
fn qos0_publish_gets_no_answer_and_reaches_the_subscriber() {
    let mut w = World::memory();
    let mut sub = subscriber(&mut w, connect(Version::V311, "s"), "t/#", QoS::AtMostOnce);
    let mut p = w.connect(connect(Version::V311, "p"));
    assert!(
        p.send(&[publish("t/1", QoS::AtMostOnce, 0, b"x")], w.now)
            .unwrap()
            .is_empty()
    );
    let got = as_publish(only(sub.step(w.now).unwrap()));
    assert_eq!((got.topic.as_str(), &got.payload[..]), ("t/1", &b"x"[..]));
    assert_eq!(got.qos, QoS::AtMostOnce);
}

#[test]
fn qos1_publish_is_acknowledged_with_its_packet_id() {
    // MQTT-4.3.2-2 (PUBACK with the same id); MQTT 5.0 3.4.2.1: 0x10 without a subscriber.
    let mut w = World::memory();
    let mut p = w.connect(connect(Version::V5, "p"));
    let a = as_ack(only(
        p.send(&[publish("t", QoS::AtLeastOnce, 9, b"x")], w.now)
            .unwrap(),
    ));
    assert_eq!((a.kind, a.packet_id), (AckKind::PubAck, 9));
    assert_eq!(a.reason, ReasonCode::NO_MATCHING_SUBSCRIBERS);
    let _s = subscriber(&mut w, connect(Version::V5, "s"), "t", QoS::AtLeastOnce);
    let a = as_ack(only(
        p.send(&[publish("t", QoS::AtLeastOnce, 10, b"x")], w.now)
            .unwrap(),
    ));
    assert_eq!(a.reason, ReasonCode::SUCCESS);
}

#[test]
fn qos2_publish_is_delivered_once_however_often_it_is_resent() {
    // MQTT-4.3.3-9: a PUBLISH with an id awaiting PUBREL is answered, not delivered again.
    let mut w = World::memory();
    let mut sub = subscriber(&mut w, connect(Version::V311, "s"), "t", QoS::AtMostOnce);
    let mut p = w.connect(connect(Version::V311, "p"));
    let rec = as_ack(only(
        p.send(&[publish("t", QoS::ExactlyOnce, 3, b"x")], w.now)
            .unwrap(),
    ));
    assert_eq!((rec.kind, rec.packet_id), (AckKind::PubRec, 3));
    let mut again = publish("t", QoS::ExactlyOnce, 3, b"x");
    if let Packet::Publish(p) = &mut again {
        p.dup = true;
    }
    let rec = as_ack(only(p.send(&[again], w.now).unwrap()));
    assert_eq!(rec.kind, AckKind::PubRec);
    assert_eq!(sub.step(w.now).unwrap().len(), 1, "one delivery");
    let comp = as_ack(only(p.send(&[ack(AckKind::PubRel, 3)], w.now).unwrap()));
    assert_eq!((comp.kind, comp.packet_id), (AckKind::PubComp, 3));
    // Released: the same id now starts a new message.
    p.send(&[publish("t", QoS::ExactlyOnce, 3, b"y")], w.now)
        .unwrap();
    let got = as_publish(only(sub.step(w.now).unwrap()));
    assert_eq!(&got.payload[..], b"y");
}

#[test]
fn pubrel_for_an_unknown_id_still_gets_pubcomp() {
    // MQTT-4.3.3-11; MQTT 5.0 says which: 0x92.
    let mut w = World::memory();
    let mut v5 = w.connect(connect(Version::V5, "a"));
    let comp = as_ack(only(v5.send(&[ack(AckKind::PubRel, 44)], w.now).unwrap()));
    assert_eq!(comp.kind, AckKind::PubComp);
    assert_eq!(comp.reason, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND);
    let mut v3 = w.connect(connect(Version::V311, "b"));
    let comp = as_ack(only(v3.send(&[ack(AckKind::PubRel, 44)], w.now).unwrap()));
    assert_eq!(
        (comp.kind, comp.reason),
        (AckKind::PubComp, ReasonCode::SUCCESS)
    );
}

#[test]
fn pingreq_gets_pingresp() {
    // MQTT-3.12.4-1.
    let mut w = World::memory();
    let mut c = w.connect(connect(Version::V311, "a"));
    assert_eq!(
        only(c.send(&[Packet::PingReq], w.now).unwrap()),
        Packet::PingResp
    );
}

#[test]
fn unsubscribe_answers_per_filter_and_stops_delivery() {
    let mut w = World::memory();
    let mut s = subscriber(&mut w, connect(Version::V5, "s"), "a/+", QoS::AtLeastOnce);
    let unsub = Packet::Unsubscribe(codec::Unsubscribe {
        packet_id: 2,
        filters: vec!["a/+".into(), "never".into()],
        user_properties: Vec::new(),
    });
    let Packet::UnsubAck(u) = only(s.send(&[unsub], w.now).unwrap()) else {
        panic!("UNSUBACK")
    };
    assert_eq!(u.packet_id, 2);
    assert_eq!(
        u.codes,
        vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED]
    );
    let mut p = w.connect(connect(Version::V5, "p"));
    p.send(&[publish("a/b", QoS::AtMostOnce, 0, b"x")], w.now)
        .unwrap();
    assert!(s.step(w.now).unwrap().is_empty());
}

#[test]
fn retained_message_follows_the_suback_with_retain_set() {
    // MQTT-3.3.1-6: a retained message sent for a new subscription has RETAIN=1; it is sent
    // at the lower of its QoS and the granted QoS (MQTT-3.8.4-6).
    let mut w = World::memory();
    let mut p = w.connect(connect(Version::V311, "p"));
    let mut retained = publish("r/1", QoS::AtLeastOnce, 1, b"kept");
    if let Packet::Publish(p) = &mut retained {
        p.retain = true;
    }
    p.send(&[retained], w.now).unwrap();
    let mut s = w.connect(connect(Version::V311, "s"));
    let got = s
        .send(&[subscribe(1, "r/#", QoS::AtMostOnce)], w.now)
        .unwrap();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(matches!(got[0], Packet::SubAck(_)), "SUBACK first");
    let m = as_publish(got[1].clone());
    assert!(m.retain);
    assert_eq!((m.qos, &m.payload[..]), (QoS::AtMostOnce, &b"kept"[..]));
}
