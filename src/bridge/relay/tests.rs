use super::*;
use crate::config::BridgeDirection;
use bytes::Bytes;

fn relay(window: u16) -> Relay {
    let topics: Arc<[BridgeTopic]> = vec![
        BridgeTopic {
            pattern: "up/#".into(),
            direction: BridgeDirection::Out,
            qos: QoS::ExactlyOnce,
            local_prefix: "".into(),
            remote_prefix: "site1/".into(),
        },
        BridgeTopic {
            pattern: "down/#".into(),
            direction: BridgeDirection::In,
            qos: QoS::ExactlyOnce,
            local_prefix: "cmd/".into(),
            remote_prefix: "site1/".into(),
        },
    ]
    .into();
    Relay::new(topics, Version::V5, window)
}

fn publish(topic: &str, qos: QoS, packet_id: u16) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id,
        payload: Bytes::from_static(b"x"),
        properties: Default::default(),
        topic_alias: None,
        subscription_identifiers: vec![1],
    })
}

fn ack_with(kind: AckKind, packet_id: u16, reason: u8) -> Packet {
    Packet::Ack(PubAckLike {
        kind,
        packet_id,
        reason: ReasonCode(reason),
        reason_string: None,
    })
}

fn acks(packets: &[Packet]) -> Vec<(AckKind, u16)> {
    packets
        .iter()
        .map(|p| match p {
            Packet::Ack(a) => (a.kind, a.packet_id),
            other => panic!("not an ack: {other:?}"),
        })
        .collect()
}

fn topics_of(packets: &[Packet]) -> Vec<(String, u16)> {
    packets
        .iter()
        .map(|p| match p {
            Packet::Publish(p) => (p.topic.clone(), p.packet_id),
            other => panic!("not a publish: {other:?}"),
        })
        .collect()
}

#[test]
fn outgoing_qos1_is_acknowledged_locally_only_after_the_remote() {
    let mut r = relay(10);
    r.on_local(publish("up/t", QoS::AtLeastOnce, 7)).unwrap();
    assert!(
        r.take_local().is_empty(),
        "no local PUBACK before the remote's"
    );
    assert_eq!(topics_of(&r.take_remote()), [("site1/up/t".to_string(), 7)]);
    r.on_remote(ack_with(AckKind::PubAck, 7, 0)).unwrap();
    assert_eq!(acks(&r.take_local()), [(AckKind::PubAck, 7)]);
    assert_eq!(r.take_counts().out, 1);
    assert_eq!(r.outgoing_in_flight(), 0);
}

#[test]
fn outgoing_qos2_follows_the_remote_step_by_step() {
    let mut r = relay(10);
    r.on_local(publish("up/t", QoS::ExactlyOnce, 3)).unwrap();
    r.take_remote();
    r.on_remote(ack_with(AckKind::PubRec, 3, 0)).unwrap();
    assert_eq!(acks(&r.take_local()), [(AckKind::PubRec, 3)]);
    r.on_local(ack_with(AckKind::PubRel, 3, 0)).unwrap();
    assert_eq!(acks(&r.take_remote()), [(AckKind::PubRel, 3)]);
    assert!(r.take_local().is_empty());
    r.on_remote(ack_with(AckKind::PubComp, 3, 0)).unwrap();
    assert_eq!(acks(&r.take_local()), [(AckKind::PubComp, 3)]);
    assert_eq!(r.take_counts().out, 1);
}

#[test]
fn incoming_qos2_reaches_the_remote_acknowledgements_only_after_the_local_ones() {
    let mut r = relay(10);
    r.on_remote(publish("site1/down/reboot", QoS::ExactlyOnce, 40))
        .unwrap();
    assert_eq!(
        topics_of(&r.take_local()),
        [("cmd/down/reboot".to_string(), 40)]
    );
    assert!(r.take_remote().is_empty());
    // A resend from the remote while the local broker has not answered: not published twice.
    r.on_remote(publish("site1/down/reboot", QoS::ExactlyOnce, 40))
        .unwrap();
    assert!(r.take_local().is_empty());
    r.on_local(ack_with(AckKind::PubRec, 40, 0)).unwrap();
    assert_eq!(acks(&r.take_remote()), [(AckKind::PubRec, 40)]);
    r.on_remote(ack_with(AckKind::PubRel, 40, 0)).unwrap();
    assert_eq!(acks(&r.take_local()), [(AckKind::PubRel, 40)]);
    r.on_local(ack_with(AckKind::PubComp, 40, 0)).unwrap();
    assert_eq!(acks(&r.take_remote()), [(AckKind::PubComp, 40)]);
    assert_eq!(r.take_counts().r#in, 1);
}

#[test]
fn a_local_quota_refusal_is_retried_not_acknowledged() {
    let mut r = relay(10);
    r.on_remote(publish("site1/down/a", QoS::AtLeastOnce, 5))
        .unwrap();
    r.take_local();
    r.on_local(ack_with(AckKind::PubAck, 5, 0x97)).unwrap();
    assert!(
        r.take_remote().is_empty(),
        "nothing acknowledged to the remote"
    );
    let at = r.poll_timeout().expect("a retry is planned");
    r.handle_timeout(at);
    assert_eq!(topics_of(&r.take_local()), [("cmd/down/a".to_string(), 5)]);
    r.on_local(ack_with(AckKind::PubAck, 5, 0)).unwrap();
    assert_eq!(acks(&r.take_remote()), [(AckKind::PubAck, 5)]);
}

#[test]
fn incoming_messages_wait_for_the_local_receive_maximum() {
    let mut r = relay(2);
    for id in 1..=4 {
        r.on_remote(publish("site1/down/a", QoS::AtLeastOnce, id))
            .unwrap();
    }
    assert_eq!(r.take_local().len(), 2);
    r.on_local(ack_with(AckKind::PubAck, 1, 0)).unwrap();
    assert_eq!(topics_of(&r.take_local()), [("cmd/down/a".to_string(), 3)]);
    r.on_local(ack_with(AckKind::PubAck, 2, 0)).unwrap();
    r.on_local(ack_with(AckKind::PubAck, 3, 0)).unwrap();
    assert_eq!(topics_of(&r.take_local()), [("cmd/down/a".to_string(), 4)]);
    assert_eq!(acks(&r.take_remote()).len(), 3);
}

#[test]
fn a_remote_refusal_for_good_lets_the_local_session_go_on() {
    let mut r = relay(10);
    r.on_local(publish("up/t", QoS::ExactlyOnce, 9)).unwrap();
    r.take_remote();
    r.on_remote(ack_with(AckKind::PubRec, 9, 0x87)).unwrap();
    assert_eq!(acks(&r.take_local()), [(AckKind::PubRec, 9)]);
    r.on_local(ack_with(AckKind::PubRel, 9, 0)).unwrap();
    assert!(
        r.take_remote().is_empty(),
        "the remote holds no state for it"
    );
    assert_eq!(acks(&r.take_local()), [(AckKind::PubComp, 9)]);
    assert_eq!(r.take_counts().refused, 1);
    assert_eq!(r.outgoing_in_flight(), 0);
}

#[test]
fn a_remote_refusal_for_now_is_sent_again_on_the_same_link() {
    let mut r = relay(10);
    r.on_local(publish("up/t", QoS::AtLeastOnce, 2)).unwrap();
    r.take_remote();
    r.on_remote(ack_with(AckKind::PubAck, 2, 0x97)).unwrap();
    assert!(r.take_local().is_empty(), "not acknowledged locally");
    let at = r.poll_timeout().expect("a retry is planned");
    r.handle_timeout(at);
    assert_eq!(topics_of(&r.take_remote()), [("site1/up/t".to_string(), 2)]);
    r.on_remote(ack_with(AckKind::PubAck, 2, 0)).unwrap();
    assert_eq!(acks(&r.take_local()), [(AckKind::PubAck, 2)]);
}

#[test]
fn qos_and_retain_are_lowered_to_what_the_remote_accepts() {
    // MQTT-3.2.2-11, MQTT-3.2.2-14.
    let mut r = relay(10);
    r.set_remote_limits(QoS::AtLeastOnce, false);
    let mut p = publish("up/t", QoS::ExactlyOnce, 6);
    if let Packet::Publish(p) = &mut p {
        p.retain = true;
    }
    r.on_local(p).unwrap();
    match &r.take_remote()[..] {
        [Packet::Publish(p)] => assert_eq!((p.qos, p.retain), (QoS::AtLeastOnce, false)),
        other => panic!("{other:?}"),
    }
    // The remote's PUBACK completes the local QoS 2 flow from here.
    r.on_remote(ack_with(AckKind::PubAck, 6, 0)).unwrap();
    assert_eq!(acks(&r.take_local()), [(AckKind::PubRec, 6)]);
    r.on_local(ack_with(AckKind::PubRel, 6, 0)).unwrap();
    assert!(r.take_remote().is_empty());
    assert_eq!(acks(&r.take_local()), [(AckKind::PubComp, 6)]);
    assert_eq!(r.take_counts().out, 1);
}

#[test]
fn unmapped_messages_are_let_go_on_both_sides() {
    let mut r = relay(10);
    let mut p = publish("elsewhere/t", QoS::AtLeastOnce, 4);
    if let Packet::Publish(p) = &mut p {
        p.subscription_identifiers.clear();
    }
    r.on_local(p).unwrap();
    assert!(r.take_remote().is_empty());
    assert_eq!(acks(&r.take_local()), [(AckKind::PubAck, 4)]);
    r.on_remote(publish("site1/other", QoS::ExactlyOnce, 8))
        .unwrap();
    assert!(r.take_local().is_empty());
    assert_eq!(acks(&r.take_remote()), [(AckKind::PubRec, 8)]);
    // Its PUBREL is answered by the local broker, which does not know it.
    r.on_remote(ack_with(AckKind::PubRel, 8, 0)).unwrap();
    assert_eq!(acks(&r.take_local()), [(AckKind::PubRel, 8)]);
    r.on_local(ack_with(AckKind::PubComp, 8, 0x92)).unwrap();
    assert_eq!(acks(&r.take_remote()), [(AckKind::PubComp, 8)]);
}

#[test]
fn a_release_resent_after_a_restart_reaches_the_remote() {
    // The PUBREC came on an earlier link (or before a crash); the local Session resends its
    // PUBREL, and the remote may hold the message until it gets it.
    let mut r = relay(10);
    r.on_local(ack_with(AckKind::PubRel, 12, 0)).unwrap();
    assert_eq!(acks(&r.take_remote()), [(AckKind::PubRel, 12)]);
    assert!(r.take_local().is_empty());
    r.on_remote(ack_with(AckKind::PubComp, 12, 0)).unwrap();
    assert_eq!(acks(&r.take_local()), [(AckKind::PubComp, 12)]);
}

#[test]
fn a_release_resent_by_the_remote_after_a_restart_reaches_this_broker() {
    let mut r = relay(10);
    r.on_remote(ack_with(AckKind::PubRel, 30, 0)).unwrap();
    assert_eq!(acks(&r.take_local()), [(AckKind::PubRel, 30)]);
    r.on_local(ack_with(AckKind::PubComp, 30, 0)).unwrap();
    assert_eq!(acks(&r.take_remote()), [(AckKind::PubComp, 30)]);
}

#[test]
fn a_message_the_renaming_makes_too_large_is_refused_not_retried() {
    let mut r = relay(10);
    // "up/t" becomes "site1/up/t": six bytes more than the local packet.
    let len = |topic: &str| {
        let Packet::Publish(p) = publish(topic, QoS::AtLeastOnce, 1) else {
            unreachable!()
        };
        crate::codec::publish_len(&crate::codec::PublishView::from(&p), Version::V5).unwrap() as u32
    };
    r.set_max_packet_sizes(Some(len("up/t")), Some(len("site1/down/a")));
    r.on_local(publish("up/t", QoS::AtLeastOnce, 1)).unwrap();
    assert!(r.take_remote().is_empty());
    assert_eq!(acks(&r.take_local()), [(AckKind::PubAck, 1)]);
    // "site1/down/a" becomes "cmd/down/a": smaller, it fits.
    r.on_remote(publish("site1/down/a", QoS::AtLeastOnce, 2))
        .unwrap();
    assert_eq!(r.take_local().len(), 1);
    // (The test messages carry a Subscription Identifier, the forwarded ones do not.)
    r.set_max_packet_sizes(None, Some(len("site1/down/a") - 6));
    r.on_remote(publish("site1/down/a", QoS::AtLeastOnce, 3))
        .unwrap();
    assert!(r.take_local().is_empty());
    assert_eq!(acks(&r.take_remote()), [(AckKind::PubAck, 3)]);
    assert_eq!(r.take_counts().refused, 2);
}

#[test]
fn an_id_reused_before_pubcomp_waits_for_the_old_message() {
    // mosquitto 2.0 may send PUBREL m and a new PUBLISH m back to back (against
    // MQTT-2.2.1-4): the new one waits instead of ending the link.
    let mut r = relay(10);
    r.on_remote(publish("site1/down/a", QoS::ExactlyOnce, 5))
        .unwrap();
    r.take_local();
    r.on_local(ack_with(AckKind::PubRec, 5, 0)).unwrap();
    r.on_remote(ack_with(AckKind::PubRel, 5, 0)).unwrap();
    r.on_remote(publish("site1/down/b", QoS::ExactlyOnce, 5))
        .unwrap();
    assert_eq!(
        acks(&r.take_local()),
        [(AckKind::PubRel, 5)],
        "the new one waits"
    );
    r.on_local(ack_with(AckKind::PubComp, 5, 0)).unwrap();
    assert_eq!(topics_of(&r.take_local()), [("cmd/down/b".to_string(), 5)]);
}

#[test]
fn reading_from_the_remote_stops_while_messages_wait_for_room() {
    let mut r = relay(2);
    for id in 1..=3 {
        r.on_remote(publish("site1/down/a", QoS::AtLeastOnce, id))
            .unwrap();
    }
    assert!(r.wants_remote(), "one waiting of at most two");
    r.on_remote(publish("site1/down/a", QoS::AtLeastOnce, 4))
        .unwrap();
    assert!(!r.wants_remote());
    r.on_local(ack_with(AckKind::PubAck, 1, 0)).unwrap();
    assert!(r.wants_remote());
}

#[test]
fn messages_after_one_refused_for_now_do_not_overtake_it() {
    let mut r = relay(10);
    r.on_local(publish("up/a", QoS::AtLeastOnce, 1)).unwrap();
    r.take_remote();
    r.on_remote(ack_with(AckKind::PubAck, 1, 0x97)).unwrap();
    r.on_local(publish("up/b", QoS::AtLeastOnce, 2)).unwrap();
    r.on_local(publish("up/c", QoS::AtMostOnce, 0)).unwrap();
    assert!(r.take_remote().is_empty(), "held behind the refused one");
    let at = r.poll_timeout().expect("a retry is planned");
    r.handle_timeout(at);
    assert_eq!(
        topics_of(&r.take_remote()),
        [
            ("site1/up/a".to_string(), 1),
            ("site1/up/b".to_string(), 2),
            ("site1/up/c".to_string(), 0)
        ]
    );
}

#[test]
fn incoming_messages_after_one_refused_here_do_not_overtake_it() {
    let mut r = relay(10);
    r.on_remote(publish("site1/down/a", QoS::AtLeastOnce, 1))
        .unwrap();
    r.take_local();
    r.on_local(ack_with(AckKind::PubAck, 1, 0x97)).unwrap();
    r.on_remote(publish("site1/down/b", QoS::AtLeastOnce, 2))
        .unwrap();
    assert!(r.take_local().is_empty(), "waits behind the refused one");
    let at = r.poll_timeout().expect("a retry is planned");
    r.handle_timeout(at);
    assert_eq!(
        topics_of(&r.take_local()),
        [("cmd/down/a".to_string(), 1), ("cmd/down/b".to_string(), 2)]
    );
}
