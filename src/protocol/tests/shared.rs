//! Shared Subscriptions (MQTT 5.0 4.8.2): one member of each group gets each message, chosen
//! by the configured strategy; unacknowledged messages of a member whose session ends go to
//! another member.

use std::collections::HashMap;

use super::*;
use crate::codec::SubscribeFilter;
use crate::config::SharedSubscriptionStrategy;

/// Packets a client has been sent, as (topic, payload) of each PUBLISH.
fn received(c: &mut Client, now: Instant) -> Vec<Publish> {
    c.step(now)
        .expect("open")
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p),
            _ => None,
        })
        .collect()
}

/// Publishes `n` messages on `topic` at `qos`, payloads "0", "1", ...; checks each is
/// acknowledged with success.
fn publish_n(w: &World, p: &mut Client, topic: &str, qos: QoS, n: usize) {
    const PAYLOADS: [&[u8]; 10] = [b"0", b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"8", b"9"];
    for i in 0..n {
        let got = p
            .send(
                &[publish(topic, qos, (i + 1) as u16, PAYLOADS[i % 10])],
                w.now,
            )
            .unwrap();
        for packet in got {
            if let Packet::Ack(a) = packet {
                assert!(a.reason.0 < 0x80, "accepted: {a:?}");
            }
        }
    }
}

fn payloads_of(v: &[&'static str]) -> Vec<Bytes> {
    v.iter().map(|s| Bytes::from_static(s.as_bytes())).collect()
}

/// Ephemeral clients subscribed to `filter` at QoS 0.
fn clients<const N: usize>(w: &mut World, who: [(Version, &str); N], filter: &str) -> [Client; N] {
    who.map(|(version, id)| subscriber(w, connect(version, id), filter, QoS::AtMostOnce))
}

/// A member of `$share/g/t` at QoS 1.
fn member(w: &mut World, c: Connect) -> Client {
    subscriber(w, c, "$share/g/t", QoS::AtLeastOnce)
}

fn group(w: &World) -> crate::SharedSubscriptionInfo {
    let mut groups = w.broker.router.shared_info();
    assert_eq!(groups.len(), 1, "{groups:?}");
    groups.remove(0)
}

#[test]
fn each_message_goes_to_one_member_of_each_group_in_turn() {
    let mut w = World::memory();
    // A 5.0 and a 3.1.1 member (3.1.1 clients may use `$share/` too).
    let [mut a, mut b] = clients(
        &mut w,
        [(Version::V5, "a"), (Version::V311, "b")],
        "$share/g/t/+",
    );
    let [mut h] = clients(&mut w, [(Version::V5, "h")], "$share/h/t/#");
    let [mut plain] = clients(&mut w, [(Version::V5, "plain")], "t/+");
    let mut p = w.connect(connect(Version::V5, "p"));
    publish_n(&w, &mut p, "t/x", QoS::AtMostOnce, 6);
    let (ga, gb) = (received(&mut a, w.now), received(&mut b, w.now));
    assert_eq!((ga.len(), gb.len()), (3, 3), "round robin");
    let mut payloads: Vec<_> = ga.iter().chain(&gb).map(|p| p.payload.clone()).collect();
    payloads.sort();
    assert_eq!(payloads, payloads_of(&["0", "1", "2", "3", "4", "5"]));
    assert_eq!(
        received(&mut h, w.now).len(),
        6,
        "every group gets every message"
    );
    assert_eq!(received(&mut plain, w.now).len(), 6);
    let mut groups = w.broker.router.shared_info();
    groups.sort_by(|x, y| x.share_name.cmp(&y.share_name));
    assert_eq!(
        (groups[0].share_name.as_str(), groups[0].filter.as_str()),
        ("g", "t/+")
    );
    assert_eq!((groups[0].members, groups[0].online), (2, 2));
    assert_eq!(groups[0].delivered, 6);
    assert_eq!(groups[1].delivered, 6);
    assert_eq!(w.broker.router.subscription_count(), 4);
}

#[test]
fn a_member_with_its_own_subscription_too_gets_two_copies() {
    // MQTT 5.0 4.8.2: the non-shared subscription gets its copy, the group its own.
    let mut w = World::memory();
    let mut a = subscriber(
        &mut w,
        connect(Version::V5, "a"),
        "$share/g/t",
        QoS::AtMostOnce,
    );
    a.send(&[subscribe(2, "t", QoS::AtMostOnce)], w.now)
        .unwrap();
    let mut p = w.connect(connect(Version::V5, "p"));
    publish_n(&w, &mut p, "t", QoS::AtMostOnce, 1);
    assert_eq!(received(&mut a, w.now).len(), 2);
}

#[test]
fn a_shared_subscription_gets_no_retained_messages() {
    // MQTT 5.0 4.8.2: retained messages are not sent on a new Shared Subscription.
    let mut w = World::memory();
    let mut p = w.connect(connect(Version::V5, "p"));
    let mut retained = publish("r", QoS::AtMostOnce, 0, b"kept");
    if let Packet::Publish(p) = &mut retained {
        p.retain = true;
    }
    p.send(&[retained], w.now).unwrap();
    let mut a = w.connect(connect(Version::V5, "a"));
    let got = a
        .send(&[subscribe(1, "$share/g/r", QoS::AtMostOnce)], w.now)
        .unwrap();
    assert!(matches!(only(got), Packet::SubAck(_)), "SUBACK alone");
}

#[test]
fn invalid_share_names_are_refused_per_filter() {
    // MQTT-4.8.2-1, MQTT-4.8.2-2: 0x8F (Topic Filter invalid) in 5.0, 0x80 in 3.1.1.
    let mut w = World::memory();
    for (version, code) in [
        (Version::V5, ReasonCode::TOPIC_FILTER_INVALID),
        (Version::V311, ReasonCode::V3_SUBSCRIBE_FAILURE),
    ] {
        let mut c = w.connect(connect(version, "s"));
        let filters = [
            "$share//t",
            "$share/g+/t",
            "$share/g",
            "$share/g/a/#/b",
            "$share/g/t",
        ];
        let sub = Packet::Subscribe(Subscribe {
            filters: filters
                .iter()
                .map(|f| SubscribeFilter {
                    filter: f.to_string(),
                    qos: QoS::AtLeastOnce,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: codec::RetainHandling::OnSubscribe,
                })
                .collect(),
            ..Subscribe::single(1, "x", QoS::AtMostOnce)
        });
        let Packet::SubAck(s) = only(c.send(&[sub], w.now).unwrap()) else {
            panic!("SUBACK")
        };
        assert_eq!(s.codes, vec![code, code, code, code, ReasonCode(1)]);
        c.close(&w, Close::Io);
    }
}

#[test]
fn no_local_on_a_shared_subscription_is_a_protocol_error() {
    // MQTT-3.8.3-4.
    let mut w = World::memory();
    let mut c = w.connect(connect(Version::V5, "s"));
    let mut sub = Subscribe::single(1, "$share/g/t", QoS::AtMostOnce);
    sub.filters[0].no_local = true;
    match c.send(&[Packet::Subscribe(sub)], w.now) {
        Err(Close::Violation { reason, .. }) => assert_eq!(reason, ReasonCode::PROTOCOL_ERROR),
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[test]
fn unsubscribing_leaves_the_group() {
    let mut w = World::memory();
    let mut a = subscriber(
        &mut w,
        connect(Version::V5, "a"),
        "$share/g/t",
        QoS::AtMostOnce,
    );
    let mut b = subscriber(
        &mut w,
        connect(Version::V5, "b"),
        "$share/g/t",
        QoS::AtMostOnce,
    );
    let unsub = Packet::Unsubscribe(codec::Unsubscribe {
        packet_id: 2,
        filters: vec!["$share/g/t".to_string()],
        user_properties: Vec::new(),
    });
    let Packet::UnsubAck(u) = only(a.send(std::slice::from_ref(&unsub), w.now).unwrap()) else {
        panic!("UNSUBACK")
    };
    assert_eq!(u.codes, vec![ReasonCode::SUCCESS]);
    let mut p = w.connect(connect(Version::V5, "p"));
    publish_n(&w, &mut p, "t", QoS::AtMostOnce, 4);
    assert_eq!(received(&mut a, w.now).len(), 0);
    assert_eq!(received(&mut b, w.now).len(), 4);
    b.send(&[unsub], w.now).unwrap();
    assert!(
        w.broker.router.shared_info().is_empty(),
        "an empty group is gone"
    );
}

#[test]
fn unacknowledged_messages_of_an_ended_member_go_to_another() {
    // MQTT 5.0 4.8.2: the session ends (an ephemeral one with its connection), so its QoS 1
    // message not yet acknowledged goes to another member. A QoS 2 message once sent does
    // not, acknowledged or not (MQTT-4.8.2-5): exactly once would be broken.
    let mut w = World::memory();
    let [mut a, mut b] = ["a", "b"].map(|id| {
        subscriber(
            &mut w,
            connect(Version::V5, id),
            "$share/g/t",
            QoS::ExactlyOnce,
        )
    });
    let mut p = w.connect(connect(Version::V5, "p"));
    publish_n(&w, &mut p, "t", QoS::AtLeastOnce, 4);
    for (id, payload) in [(9, &b"q2-sent"[..]), (10, &b"q2"[..])] {
        let mut q2 = publish("t", QoS::ExactlyOnce, id, b"");
        if let Packet::Publish(x) = &mut q2 {
            x.payload = Bytes::copy_from_slice(payload);
        }
        p.send(&[q2, ack(AckKind::PubRel, id)], w.now).unwrap();
    }
    let to_a = received(&mut a, w.now);
    let to_b = received(&mut b, w.now);
    let names = |v: &[Publish]| v.iter().map(|p| p.payload.clone()).collect::<Vec<_>>();
    assert_eq!(names(&to_a), payloads_of(&["0", "2", "q2-sent"]));
    assert_eq!(names(&to_b), payloads_of(&["1", "3", "q2"]));
    // `a` acknowledges "0" only, then goes away.
    a.send(&[ack(AckKind::PubAck, to_a[0].packet_id)], w.now)
        .unwrap();
    a.close(&w, Close::Io);
    let moved = received(&mut b, w.now);
    assert_eq!(names(&moved), payloads_of(&["2"]), "the QoS 2 one stays");
    assert!(!moved[0].dup, "a first delivery to this client");
    let g = group(&w);
    assert_eq!((g.members, g.redistributed), (1, 1));
}

#[test]
fn a_queued_qos2_message_moves_and_keeps_the_new_members_retain_flag() {
    // Not yet sent, a QoS 2 message may go to another member; the RETAIN flag follows the new
    // member's Retain As Published (MQTT-3.3.1-12).
    let mut w = World::memory();
    let one_at_a_time = Connect {
        receive_maximum: 1,
        ..connect(Version::V5, "a")
    };
    let mut a = subscriber(&mut w, one_at_a_time, "$share/g/t", QoS::ExactlyOnce);
    let mut sub = Subscribe::single(1, "$share/g/t", QoS::ExactlyOnce);
    sub.filters[0].retain_as_published = false;
    let mut b = w.connect(connect(Version::V5, "b"));
    b.send(&[Packet::Subscribe(sub)], w.now).unwrap();
    let mut p = w.connect(connect(Version::V5, "p"));
    for id in 1..=4u16 {
        let mut m = publish("t", QoS::ExactlyOnce, id, b"m");
        if let Packet::Publish(x) = &mut m {
            x.retain = true;
        }
        p.send(&[m, ack(AckKind::PubRel, id)], w.now).unwrap();
    }
    // Round robin: a gets the 1st and 3rd; with a window of one, the 3rd waits in its queue.
    assert_eq!(received(&mut a, w.now).len(), 1);
    let _ = received(&mut b, w.now);
    a.close(&w, Close::Io);
    let moved = received(&mut b, w.now);
    assert_eq!(
        moved.len(),
        1,
        "the queued one moves, the sent one does not"
    );
    assert!(!moved[0].retain, "b did not ask for Retain As Published");
}

#[test]
fn a_durable_member_that_is_away_keeps_what_it_was_sent() {
    // MQTT 5.0 4.8.2: the server may wait for the client to come back; new messages go to the
    // members that are connected.
    let mut w = World::durable();
    let mut a = member(&mut w, durable(Version::V5, "a"));
    let mut b = member(&mut w, connect(Version::V5, "b"));
    let mut p = w.connect(connect(Version::V5, "p"));
    publish_n(&w, &mut p, "t", QoS::AtLeastOnce, 1);
    assert_eq!(received(&mut a, w.now).len(), 1);
    a.close(&w, Close::Io);
    publish_n(&w, &mut p, "t", QoS::AtLeastOnce, 3);
    assert_eq!(
        received(&mut b, w.now).len(),
        3,
        "all to the member that is connected"
    );
    let mut a = w.connect(durable(Version::V5, "a"));
    let resent = received(&mut a, w.now);
    assert_eq!(resent.len(), 1);
    assert!(resent[0].dup, "the same delivery, resent");
    assert_eq!(group(&w).redistributed, 0);
}

#[test]
fn a_durable_member_starting_clean_hands_its_messages_on() {
    // Its old session ends (MQTT-3.1.2-4); the new connection waits until the messages the
    // old one held have moved, then gets a session of its own.
    let mut w = World::durable();
    let mut a = member(&mut w, durable(Version::V5, "a"));
    let mut b = member(&mut w, connect(Version::V5, "b"));
    let mut p = w.connect(connect(Version::V5, "p"));
    publish_n(&w, &mut p, "t", QoS::AtLeastOnce, 2);
    let held = received(&mut a, w.now);
    assert_eq!(held.len(), 1);
    assert_eq!(received(&mut b, w.now).len(), 1);
    a.close(&w, Close::Io);
    let (_a, connack) = w.try_connect(connect(Version::V5, "a"));
    let Packet::ConnAck(connack) = connack else {
        panic!("CONNACK")
    };
    assert!(!connack.session_present);
    let moved = received(&mut b, w.now);
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].payload, held[0].payload);
    assert_eq!(group(&w).redistributed, 1);
}

#[test]
fn connected_members_share_evenly_whoever_is_away() {
    let mut w = World::durable();
    let away = member(&mut w, durable(Version::V5, "away"));
    away.close(&w, Close::Io);
    let mut b = member(&mut w, connect(Version::V5, "b"));
    let mut c = member(&mut w, connect(Version::V5, "c"));
    let mut p = w.connect(connect(Version::V5, "p"));
    publish_n(&w, &mut p, "t", QoS::AtLeastOnce, 6);
    assert_eq!(received(&mut b, w.now).len(), 3);
    assert_eq!(received(&mut c, w.now).len(), 3);
    let g = group(&w);
    assert_eq!((g.members, g.online, g.delivered), (3, 2, 6));
}

#[test]
fn with_no_member_connected_messages_queue_to_the_durable_members() {
    let mut w = World::durable();
    for id in ["a", "b"] {
        let c = subscriber(
            &mut w,
            durable(Version::V5, id),
            "$share/g/t",
            QoS::AtLeastOnce,
        );
        c.close(&w, Close::Io);
    }
    let mut p = w.connect(connect(Version::V5, "p"));
    publish_n(&w, &mut p, "t", QoS::AtLeastOnce, 4);
    publish_n(&w, &mut p, "t", QoS::AtMostOnce, 2);
    let backlog = |id: &str| {
        let s = w.broker.registry.get(id).expect("session");
        s.slot.lock().session.outbound.backlog_messages()
    };
    assert_eq!(
        (backlog("a"), backlog("b")),
        (2, 2),
        "QoS 1 shared out, QoS 0 dropped"
    );
    assert_eq!(w.broker.metrics.snapshot().dropped_qos0_offline, 2);
}

#[test]
fn a_full_member_is_passed_over() {
    let mut w = World::new(false, |c| c.max_queued_messages = 2);
    let mut a = member(&mut w, connect(Version::V5, "a"));
    let mut b = member(&mut w, connect(Version::V5, "b"));
    let mut p = w.connect(connect(Version::V5, "p"));
    let mut to_a = 0;
    for _ in 0..8 {
        publish_n(&w, &mut p, "t", QoS::AtLeastOnce, 1);
        // `a` acknowledges at once; `b` never does, so it is full after two.
        for m in received(&mut a, w.now) {
            to_a += 1;
            a.send(&[ack(AckKind::PubAck, m.packet_id)], w.now).unwrap();
        }
    }
    assert_eq!(received(&mut b, w.now).len(), 2);
    assert_eq!(to_a, 6, "every message found a member");
    // `a` stops acknowledging: two more fill it, and then the 5.0 publisher is refused with
    // 0x97 (nothing is lost).
    publish_n(&w, &mut p, "t", QoS::AtLeastOnce, 2);
    let got = p
        .send(&[publish("t", QoS::AtLeastOnce, 99, b"x")], w.now)
        .unwrap();
    assert_eq!(as_ack(only(got)).reason, ReasonCode::QUOTA_EXCEEDED);
}

fn with_strategy(strategy: SharedSubscriptionStrategy, members: usize) -> (World, Vec<Client>) {
    let mut w = World::new(false, |c| c.shared_subscription_strategy = strategy);
    let clients = (0..members)
        .map(|i| {
            let id = format!("m{i}");
            subscriber(
                &mut w,
                connect(Version::V5, &id),
                "$share/g/t/#",
                QoS::AtMostOnce,
            )
        })
        .collect();
    (w, clients)
}

/// Which member got each topic's messages, by topic.
fn receivers(w: &World, members: &mut [Client]) -> HashMap<String, Vec<usize>> {
    let mut by_topic: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, m) in members.iter_mut().enumerate() {
        for p in received(m, w.now) {
            by_topic.entry(p.topic).or_default().push(i);
        }
    }
    by_topic
}

#[test]
fn hash_topic_sends_a_topic_to_one_member() {
    let (w, mut members) = with_strategy(SharedSubscriptionStrategy::HashTopic, 3);
    let mut p = w_connect(&w, "p");
    for topic in ["t/1", "t/2", "t/3", "t/4", "t/5", "t/6"] {
        publish_n(&w, &mut p, topic, QoS::AtMostOnce, 5);
    }
    let by_topic = receivers(&w, &mut members);
    assert_eq!(by_topic.len(), 6);
    for (topic, got) in by_topic {
        assert_eq!(got.len(), 5, "{topic}");
        assert!(got.iter().all(|m| *m == got[0]), "{topic}: {got:?}");
    }
}

#[test]
fn hash_client_id_sends_a_publisher_to_one_member() {
    let (mut w, mut members) = with_strategy(SharedSubscriptionStrategy::HashClientId, 3);
    for publisher in ["p1", "p2", "p3", "p4"] {
        let mut p = w.connect(connect(Version::V5, publisher));
        publish_n(&w, &mut p, &format!("t/{publisher}"), QoS::AtMostOnce, 4);
        for topic in ["t/a", "t/b"] {
            publish_n(
                &w,
                &mut p,
                &format!("{topic}/{publisher}"),
                QoS::AtMostOnce,
                2,
            );
        }
    }
    let mut by_publisher: HashMap<String, Vec<usize>> = HashMap::new();
    for (topic, got) in receivers(&w, &mut members) {
        let publisher = topic.rsplit('/').next().unwrap_or_default().to_string();
        by_publisher.entry(publisher).or_default().extend(got);
    }
    assert_eq!(by_publisher.len(), 4);
    for (publisher, got) in by_publisher {
        assert_eq!(got.len(), 8, "{publisher}");
        assert!(got.iter().all(|m| *m == got[0]), "{publisher}: {got:?}");
    }
}

#[test]
fn sticky_stays_with_one_member_until_it_leaves() {
    let (w, mut members) = with_strategy(SharedSubscriptionStrategy::Sticky, 3);
    let mut p = w_connect(&w, "p");
    publish_n(&w, &mut p, "t/x", QoS::AtMostOnce, 10);
    let got = receivers(&w, &mut members)
        .remove("t/x")
        .unwrap_or_default();
    assert_eq!(got.len(), 10);
    let first = got[0];
    assert!(got.iter().all(|m| *m == first), "{got:?}");
    members.remove(first).close(&w, Close::Io);
    publish_n(&w, &mut p, "t/x", QoS::AtMostOnce, 10);
    let got = receivers(&w, &mut members)
        .remove("t/x")
        .unwrap_or_default();
    assert_eq!(got.len(), 10);
    assert!(
        got.iter().all(|m| *m == got[0]),
        "another member, again alone: {got:?}"
    );
}

#[test]
fn random_gives_each_message_to_one_member() {
    let (w, mut members) = with_strategy(SharedSubscriptionStrategy::Random, 3);
    let mut p = w_connect(&w, "p");
    for _ in 0..10 {
        publish_n(&w, &mut p, "t/x", QoS::AtMostOnce, 10);
    }
    let got = receivers(&w, &mut members)
        .remove("t/x")
        .unwrap_or_default();
    assert_eq!(got.len(), 100, "exactly one copy of each");
}

/// A 5.0 publisher on a world that is not mutably borrowed elsewhere.
fn w_connect(w: &World, id: &str) -> Client {
    // `World::connect` needs `&mut`; the link ids only have to differ from the members'.
    let mut w2 = World {
        broker: Arc::clone(&w.broker),
        clock: w.clock.clone(),
        now: w.now,
        next_link: 1_000,
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime"),
    };
    w2.connect(connect(Version::V5, id))
}
