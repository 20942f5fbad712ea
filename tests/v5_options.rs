//! MQTT 5.0 options driven with raw packets: subscription options, subscription identifiers,
//! Maximum Packet Size towards the client, message expiry and DISCONNECT semantics.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use roost::codec::{
    AckKind, Connect, Disconnect, Packet, PubAckLike, Publish, PublishProperties, QoS, ReasonCode,
    RetainHandling, Subscribe, SubscribeFilter, Version, Will,
};

fn publish_with(
    topic: &str,
    qos: QoS,
    id: u16,
    payload: &[u8],
    retain: bool,
    expiry: Option<u32>,
) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic: topic.to_string(),
        packet_id: id,
        payload: Bytes::copy_from_slice(payload),
        properties: PublishProperties {
            message_expiry_interval: expiry,
            ..Default::default()
        },
        topic_alias: None,
        subscription_identifiers: Vec::new(),
    })
}

fn publish(topic: &str, payload: &[u8], retain: bool) -> Packet {
    publish_with(topic, QoS::AtMostOnce, 0, payload, retain, None)
}

fn filter(f: &str) -> SubscribeFilter {
    SubscribeFilter {
        filter: f.to_string(),
        qos: QoS::AtLeastOnce,
        no_local: false,
        retain_as_published: false,
        retain_handling: RetainHandling::OnSubscribe,
    }
}

async fn subscribe(c: &mut RawClient, filters: Vec<SubscribeFilter>, id: Option<u32>) {
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: 7,
        filters,
        subscription_identifier: id,
        user_properties: Vec::new(),
    }))
    .await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
}

async fn next_publish(c: &mut RawClient) -> Publish {
    loop {
        match c.recv().await {
            Some(Packet::Publish(p)) => {
                if p.qos == QoS::AtLeastOnce {
                    c.send(&Packet::Ack(PubAckLike {
                        kind: AckKind::PubAck,
                        packet_id: p.packet_id,
                        reason: roost::codec::ReasonCode::SUCCESS,
                        reason_string: None,
                    }))
                    .await;
                }
                return p;
            }
            Some(_) => continue,
            None => panic!("connection closed"),
        }
    }
}

async fn v5(addr: std::net::SocketAddr, id: &str) -> RawClient {
    RawClient::connect(addr, connect_packet(Version::V5, id))
        .await
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_with_an_error_reason_still_publishes_the_will() {
    // MQTT-3.1.2-8 / MQTT-3.14.4-3: only reason 0x00 discards the will.
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let mut watcher = v5(addr, "watcher").await;
    subscribe(&mut watcher, vec![filter("wills/#")], None).await;
    let mut c: Connect = connect_packet(Version::V5, "erring");
    c.will = Some(Will {
        topic: "wills/erring".into(),
        payload: Bytes::from_static(b"error"),
        qos: QoS::AtMostOnce,
        retain: false,
        delay_interval: 0,
        properties: PublishProperties::default(),
    });
    let (mut erring, _) = RawClient::connect(addr, c).await;
    erring
        .send(&Packet::Disconnect(Disconnect {
            reason: roost::codec::ReasonCode::UNSPECIFIED_ERROR,
            ..Default::default()
        }))
        .await;
    assert_eq!(next_publish(&mut watcher).await.topic, "wills/erring");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_local_skips_the_publishers_own_messages() {
    // MQTT-3.8.3-3
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let mut me = v5(addr, "me").await;
    subscribe(
        &mut me,
        vec![SubscribeFilter {
            no_local: true,
            ..filter("chat")
        }],
        None,
    )
    .await;
    me.send(&publish("chat", b"mine", false)).await;
    let mut other = v5(addr, "other").await;
    other.send(&publish("chat", b"theirs", false)).await;
    assert_eq!(&next_publish(&mut me).await.payload[..], b"theirs");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_as_published_keeps_the_flag_on_live_messages() {
    // MQTT-3.3.1-12 / MQTT-3.3.1-13
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let mut keep = v5(addr, "keep").await;
    subscribe(
        &mut keep,
        vec![SubscribeFilter {
            retain_as_published: true,
            ..filter("r")
        }],
        None,
    )
    .await;
    let mut clear = v5(addr, "clear").await;
    subscribe(&mut clear, vec![filter("r")], None).await;
    let mut p = v5(addr, "p").await;
    p.send(&publish("r", b"x", true)).await;
    assert!(next_publish(&mut keep).await.retain);
    assert!(!next_publish(&mut clear).await.retain);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_handling_controls_retained_delivery_on_subscribe() {
    // MQTT-3.3.1-9 / MQTT-3.3.1-10 (5.0 numbering): 1 = only for a new subscription, 2 = never.
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let mut p = v5(addr, "p").await;
    p.send(&publish("rh", b"retained", true)).await;
    wait_until(|| broker.retained_count() == 1).await;
    let mut c = v5(addr, "c").await;
    let once = SubscribeFilter {
        retain_handling: RetainHandling::OnNewSubscribe,
        ..filter("rh")
    };
    subscribe(&mut c, vec![once.clone()], None).await;
    assert!(
        next_publish(&mut c).await.retain,
        "new subscription gets it"
    );
    subscribe(&mut c, vec![once], None).await;
    let never = SubscribeFilter {
        retain_handling: RetainHandling::Never,
        ..filter("rh/#")
    };
    subscribe(&mut c, vec![never], None).await;
    p.send(&publish("marker", b"m", false)).await;
    subscribe(&mut c, vec![filter("marker")], None).await;
    p.send(&publish("marker", b"m", false)).await;
    let next = next_publish(&mut c).await;
    assert_eq!(
        next.topic, "marker",
        "no retained copy for the repeat or the Never filter"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_subscriptions_send_one_copy_with_every_identifier() {
    // MQTT-3.3.4-3 / MQTT-3.3.4-5
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let mut c = v5(addr, "ids").await;
    subscribe(&mut c, vec![filter("a/+")], Some(1)).await;
    subscribe(&mut c, vec![filter("a/#")], Some(2)).await;
    subscribe(&mut c, vec![filter("z")], None).await;
    let mut p = v5(addr, "p").await;
    p.send(&publish("a/b", b"x", false)).await;
    p.send(&publish("z", b"marker", false)).await;
    let first = next_publish(&mut c).await;
    let mut ids = first.subscription_identifiers.clone();
    ids.sort();
    assert_eq!(ids, vec![1, 2]);
    assert_eq!(&next_publish(&mut c).await.payload[..], b"marker");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_over_the_clients_maximum_packet_size_are_dropped_and_counted() {
    // MQTT-3.1.2-24 / MQTT-3.1.2-25
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let mut small = connect_packet(Version::V5, "small");
    small.maximum_packet_size = Some(64);
    let (mut c, _) = RawClient::connect(addr, small).await;
    subscribe(&mut c, vec![filter("big/#")], None).await;
    let mut p = v5(addr, "p").await;
    p.send(&publish_with(
        "big/1",
        QoS::AtLeastOnce,
        1,
        &[0; 200],
        false,
        None,
    ))
    .await;
    assert!(matches!(p.recv().await, Some(Packet::Ack(_))));
    p.send(&publish("big/2", b"fits", false)).await;
    assert_eq!(&next_publish(&mut c).await.payload[..], b"fits");
    assert_eq!(broker.metrics().dropped_too_large, 1);
    let session = broker.session_info("small").unwrap();
    assert_eq!(session.backlog.inflight, 0, "its packet id was released");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_message_expires_while_the_client_is_away() {
    // MQTT-3.3.2-5
    let clock = roost::Clock::manual();
    let broker = start_broker_with(|c| c.clock = clock.clone()).await;
    let addr = broker.local_addr();
    let mut c = connect_packet(Version::V5, "away");
    c.clean_start = false;
    c.session_expiry_interval = 60;
    let (mut sub, _) = RawClient::connect(addr, c.clone()).await;
    subscribe(&mut sub, vec![filter("exp/#")], None).await;
    sub.send(&Packet::Disconnect(Disconnect::default())).await;
    assert!(sub.until_closed().await.is_empty());
    let mut p = v5(addr, "p").await;
    p.send(&publish_with(
        "exp/short",
        QoS::AtLeastOnce,
        1,
        b"stale",
        false,
        Some(1),
    ))
    .await;
    p.send(&publish_with(
        "exp/long",
        QoS::AtLeastOnce,
        2,
        b"fresh",
        false,
        Some(600),
    ))
    .await;
    assert!(matches!(p.recv().await, Some(Packet::Ack(_))));
    assert!(matches!(p.recv().await, Some(Packet::Ack(_))));
    clock.advance(Duration::from_secs(2));
    let (mut sub, _) = RawClient::connect(addr, c).await;
    let m = next_publish(&mut sub).await;
    assert_eq!(&m.payload[..], b"fresh");
    // MQTT-3.3.2-6: what is left of it, two seconds later.
    assert_eq!(m.properties.message_expiry_interval, Some(598));
    assert_eq!(broker.metrics().expired, 1);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_can_shorten_the_session_expiry_but_not_raise_it_from_zero() {
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let mut c = connect_packet(Version::V5, "shorten");
    c.clean_start = false;
    c.session_expiry_interval = 600;
    let (mut client, _) = RawClient::connect(addr, c).await;
    client
        .send(&Packet::Disconnect(Disconnect {
            session_expiry_interval: Some(0),
            ..Default::default()
        }))
        .await;
    assert!(client.until_closed().await.is_empty());
    wait_until(|| broker.session_info("shorten").is_none()).await;

    // MQTT-3.14.2-2: raising it from 0 is a protocol error.
    let (mut client, _) = RawClient::connect(addr, connect_packet(Version::V5, "raise")).await;
    client
        .send(&Packet::Disconnect(Disconnect {
            session_expiry_interval: Some(60),
            ..Default::default()
        }))
        .await;
    let seen = client.until_closed().await;
    assert!(
        matches!(seen.as_slice(), [Packet::Disconnect(d)] if d.reason == 0x82),
        "{seen:?}"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_maximum_does_not_apply_to_v311() {
    let broker = start_broker_with(|c| c.receive_maximum = 2).await;
    let (mut c, _) =
        RawClient::connect(broker.local_addr(), connect_packet(Version::V311, "old")).await;
    for id in 1..=5u16 {
        c.send(&publish_with("t", QoS::ExactlyOnce, id, b"x", false, None))
            .await;
        assert!(matches!(c.recv().await, Some(Packet::Ack(a)) if a.kind == AckKind::PubRec));
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_keepalive_is_announced_to_v5_and_enforced_refused_for_v311() {
    // MQTT 5.0 3.2.2.3.14 (Server Keep Alive); 3.1.1 has no way to say it: CONNACK 0x02.
    let clock = roost::Clock::manual();
    let broker = start_broker_with(|c| {
        c.max_keepalive = 20;
        c.clock = clock.clone();
    })
    .await;
    let addr = broker.local_addr();
    let mut c = connect_packet(Version::V5, "lazy");
    c.keep_alive = 0;
    let (mut lazy, connack) = RawClient::connect(addr, c).await;
    assert_eq!(connack.code, ReasonCode::SUCCESS);
    assert_eq!(connack.properties.server_keep_alive, Some(20));
    // Held to it: silent past 1.5 x 20 s, it is closed with 0x8D.
    clock.advance(Duration::from_secs(31));
    let last = lazy.until_closed().await;
    assert!(
        matches!(&last[..], [Packet::Disconnect(d)] if d.reason == ReasonCode::KEEP_ALIVE_TIMEOUT),
        "{last:?}"
    );
    let mut c = connect_packet(Version::V311, "old");
    c.keep_alive = 60;
    let (_old, connack) = RawClient::connect(addr, c).await;
    assert_eq!(connack.code, ReasonCode::V3_IDENTIFIER_REJECTED);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_aliases_work_both_ways_over_a_socket() {
    // MQTT 5.0 3.3.2.3.4: the broker offers Topic Alias Maximum (here 2) and resolves the
    // publisher's aliases; towards a subscriber that allows aliases it sends a known topic as
    // its alias alone, never above the subscriber's maximum (MQTT-3.3.2-10).
    let broker = start_broker_with(|c| c.topic_alias_maximum = 2).await;
    let addr = broker.local_addr();
    let mut c = connect_packet(Version::V5, "alias-sub");
    c.topic_alias_maximum = 5;
    let (mut sub, _) = RawClient::connect(addr, c).await;
    subscribe(&mut sub, vec![filter("alias/#")], None).await;
    let (mut p, connack) = RawClient::connect(addr, connect_packet(Version::V5, "alias-pub")).await;
    assert_eq!(connack.properties.topic_alias_maximum, Some(2));
    let aliased = |topic: &str, alias: u16, payload: &'static [u8]| {
        let mut m = publish(topic, payload, false);
        if let Packet::Publish(m) = &mut m {
            m.topic_alias = Some(alias);
        }
        m
    };
    p.send(&aliased("alias/long/topic/name", 2, b"1")).await;
    p.send(&aliased("", 2, b"2")).await;
    let first = next_publish(&mut sub).await;
    let second = next_publish(&mut sub).await;
    assert_eq!(
        (first.topic.as_str(), first.topic_alias),
        ("alias/long/topic/name", Some(1))
    );
    assert_eq!((second.topic.as_str(), second.topic_alias), ("", Some(1)));
    assert_eq!(&second.payload[..], b"2");
    // An alias over the maximum ends the publisher's connection with 0x94.
    p.send(&aliased("alias/x", 3, b"3")).await;
    let last = p.until_closed().await;
    assert!(
        matches!(&last[..], [Packet::Disconnect(d)] if d.reason == ReasonCode::TOPIC_ALIAS_INVALID),
        "{last:?}"
    );
    broker.shutdown().await;
}
