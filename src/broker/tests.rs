//! Unit tests of the shared broker state: routing (overlaps, No Local, all-or-nothing, the
//! queue-full policies, retained messages), the session registry (attach, resume, clean
//! start, detach), and session expiry and will delay on the manual clock.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::codec::{PublishProperties, QoS, RetainHandling, Version, Will};
use crate::session::{Message, SubOptions};

fn broker(adjust: impl FnOnce(&mut Config)) -> Arc<Broker> {
    let mut config = Config {
        in_memory: true,
        clock: Clock::manual(),
        ..Config::default()
    };
    adjust(&mut config);
    let access = AccessControl::load(&config).expect("no auth files");
    Broker::new(config, None, access)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Attaches a connection to the session of `client_id`; returns it, Session Present and the
/// connection's link.
fn attach(
    rt: &tokio::runtime::Runtime,
    b: &Broker,
    client_id: &str,
    clean_start: bool,
    expiry_interval: u32,
) -> (Arc<SessionHandle>, bool, ConnLink) {
    let link = ConnLink::new(b.next_connection_id());
    let request = AttachRequest {
        client_id: Arc::from(client_id),
        clean_start,
        expiry_interval,
        version: Version::V5,
        window: 10,
        owner: None,
    };
    let mut pending = Pending::new(false);
    let (session, present) = rt
        .block_on(b.attach(&request, &link, &mut pending))
        .expect("attaches");
    (session, present, link)
}

fn options(qos: QoS) -> SubOptions {
    SubOptions::with_qos(qos)
}

fn message(topic: &str, qos: QoS, retain: bool, payload: &'static [u8]) -> Arc<Message> {
    Arc::new(Message {
        id: None,
        topic: Arc::from(topic),
        payload: Bytes::from_static(payload),
        qos,
        retain,
        properties: PublishProperties::default(),
        stream_seq: None,
        expires_at: None,
    })
}

/// The QoS, RETAIN flag and subscription ids of what is queued for `s`.
fn queued(s: &SessionHandle) -> Vec<(QoS, bool, Vec<u32>)> {
    let mut slot = s.slot.lock();
    let mut expired = Vec::new();
    let now = std::time::Instant::now();
    let mut out = Vec::new();
    while let Some(crate::session::Transmit::Publish { delivery, .. }) =
        slot.session.outbound.next_transmit(now, &mut expired)
    {
        out.push((delivery.qos, delivery.retain, delivery.subscription_ids));
    }
    out
}

fn publish(
    b: &Broker,
    m: &Arc<Message>,
    publisher: Option<&SessionHandle>,
    policy: QueueFullPolicy,
) -> Routed {
    b.publish(m, publisher, policy, None)
}

#[test]
fn overlapping_subscriptions_give_one_copy_at_the_highest_qos_with_every_identifier() {
    // MQTT-3.3.5-1; MQTT 5.0 3.3.4: every matching subscription identifier is sent.
    let rt = runtime();
    let b = broker(|_| {});
    let (s, _, _link) = attach(&rt, &b, "s", true, 0);
    let mut low = options(QoS::AtMostOnce);
    low.subscription_id = Some(1);
    let mut high = options(QoS::ExactlyOnce);
    high.subscription_id = Some(2);
    b.router.subscribe("a/#", &s, low);
    b.router.subscribe("a/+", &s, high);
    let routed = publish(
        &b,
        &message("a/b", QoS::AtLeastOnce, false, b"m"),
        None,
        QueueFullPolicy::Backpressure,
    );
    assert!(matches!(routed, Routed::Delivered { matched: 1 }));
    let got = queued(&s);
    assert_eq!(got.len(), 1, "one copy");
    let (qos, _, mut ids) = got[0].clone();
    ids.sort_unstable();
    assert_eq!(
        qos,
        QoS::AtLeastOnce,
        "the lower of published and highest granted QoS"
    );
    assert_eq!(ids, vec![1, 2]);
}

#[test]
fn no_local_skips_the_publishers_own_session() {
    // MQTT-3.8.3-3.
    let rt = runtime();
    let b = broker(|_| {});
    let (s, _, _link) = attach(&rt, &b, "s", true, 0);
    let mut o = options(QoS::AtMostOnce);
    o.no_local = true;
    b.router.subscribe("t", &s, o);
    publish(
        &b,
        &message("t", QoS::AtMostOnce, false, b"m"),
        Some(&s),
        QueueFullPolicy::Backpressure,
    );
    assert!(queued(&s).is_empty());
    publish(
        &b,
        &message("t", QoS::AtMostOnce, false, b"m"),
        None,
        QueueFullPolicy::Backpressure,
    );
    assert_eq!(queued(&s).len(), 1);
}

#[test]
fn the_retain_flag_is_cleared_unless_retain_as_published() {
    // MQTT-3.3.1-12 / MQTT-3.3.1-13.
    let rt = runtime();
    let b = broker(|_| {});
    let (plain, _, _l1) = attach(&rt, &b, "plain", true, 0);
    let (rap, _, _l2) = attach(&rt, &b, "rap", true, 0);
    b.router.subscribe("t", &plain, options(QoS::AtMostOnce));
    let mut o = options(QoS::AtMostOnce);
    o.retain_as_published = true;
    b.router.subscribe("t", &rap, o);
    publish(
        &b,
        &message("t", QoS::AtMostOnce, true, b"m"),
        None,
        QueueFullPolicy::Backpressure,
    );
    assert!(!queued(&plain)[0].1);
    assert!(queued(&rap)[0].1);
}

#[test]
fn back_pressure_is_all_or_nothing() {
    // Promise 4: a message refused at one full queue is queued nowhere, and a retained
    // message is not updated.
    let rt = runtime();
    let b = broker(|c| c.max_queued_messages = 1);
    let (roomy, _, _l1) = attach(&rt, &b, "roomy", true, 0);
    let (full, _, _l2) = attach(&rt, &b, "full", true, 0);
    b.router.subscribe("t", &roomy, options(QoS::AtLeastOnce));
    b.router.subscribe("t", &full, options(QoS::AtLeastOnce));
    b.router.unsubscribe("t", roomy.key);
    publish(
        &b,
        &message("t", QoS::AtLeastOnce, false, b"1"),
        None,
        QueueFullPolicy::Backpressure,
    );
    b.router.subscribe("t", &roomy, options(QoS::AtLeastOnce));
    let routed = publish(
        &b,
        &message("t", QoS::AtLeastOnce, true, b"2"),
        None,
        QueueFullPolicy::Backpressure,
    );
    let Routed::Full { session, .. } = routed else {
        panic!("expected Full, got {routed:?}")
    };
    assert_eq!(&*session.client_id, "full");
    assert_eq!(
        roomy.slot.lock().session.outbound.backlog_messages(),
        0,
        "nothing queued"
    );
    assert_eq!(b.router.retained_count(), 0, "retained unchanged");
}

#[test]
fn drop_new_and_drop_oldest_keep_the_others_flowing() {
    let rt = runtime();
    for policy in [QueueFullPolicy::DropNew, QueueFullPolicy::DropOldest] {
        let b = broker(|c| c.max_queued_messages = 1);
        let (s, _, _link) = attach(&rt, &b, "s", true, 0);
        b.router.subscribe("t", &s, options(QoS::AtLeastOnce));
        publish(
            &b,
            &message("t", QoS::AtLeastOnce, false, b"old"),
            None,
            policy,
        );
        let routed = publish(
            &b,
            &message("t", QoS::AtLeastOnce, false, b"new"),
            None,
            policy,
        );
        assert!(
            matches!(routed, Routed::Delivered { matched: 1 }),
            "{policy:?}"
        );
        let slot = s.slot.lock();
        assert_eq!(slot.session.dropped, 1, "{policy:?}: counted");
        assert_eq!(slot.session.outbound.backlog_messages(), 1);
    }
}

#[test]
fn qos0_for_a_session_without_a_connection_is_discarded() {
    let rt = runtime();
    let b = broker(|_| {});
    let (s, _, link) = attach(&rt, &b, "s", false, 60);
    b.router.subscribe("t", &s, options(QoS::AtLeastOnce));
    let _away = rt.block_on(async { b.detach(&s, link.id) });
    publish(
        &b,
        &message("t", QoS::AtMostOnce, false, b"m"),
        None,
        QueueFullPolicy::Backpressure,
    );
    publish(
        &b,
        &message("t", QoS::AtLeastOnce, false, b"m"),
        None,
        QueueFullPolicy::Backpressure,
    );
    assert_eq!(
        s.slot.lock().session.outbound.backlog_messages(),
        1,
        "only the QoS 1"
    );
}

#[test]
fn a_retained_message_with_an_empty_payload_deletes_it() {
    // MQTT-3.3.1-10 / MQTT-3.3.1-11.
    let b = broker(|_| {});
    publish(
        &b,
        &message("r", QoS::AtMostOnce, true, b"kept"),
        None,
        QueueFullPolicy::Backpressure,
    );
    assert_eq!(b.router.retained_matching("#").len(), 1);
    publish(
        &b,
        &message("r", QoS::AtMostOnce, true, b""),
        None,
        QueueFullPolicy::Backpressure,
    );
    assert_eq!(b.router.retained_count(), 0);
}

#[test]
fn attach_resumes_or_starts_clean() {
    // MQTT-3.1.2-4 / MQTT-3.1.2-5 / MQTT-3.2.2-2.
    let rt = runtime();
    let b = broker(|_| {});
    let (s, present, link) = attach(&rt, &b, "c", false, 60);
    assert!(!present);
    b.router.subscribe("t", &s, options(QoS::AtLeastOnce));
    s.slot
        .lock()
        .session
        .subscriptions
        .insert("t".into(), options(QoS::AtLeastOnce));
    rt.block_on(async { b.detach(&s, link.id) });
    let (again, present, link) = attach(&rt, &b, "c", false, 60);
    assert!(present);
    assert!(Arc::ptr_eq(&s, &again), "the same session");
    rt.block_on(async { b.detach(&again, link.id) });
    let (fresh, present, _link) = attach(&rt, &b, "c", true, 60);
    assert!(!present);
    assert!(!Arc::ptr_eq(&s, &fresh));
    assert_eq!(
        b.router.subscription_count(),
        0,
        "the old subscriptions ended with it"
    );
}

#[test]
fn an_ephemeral_session_ends_with_its_connection() {
    let rt = runtime();
    let b = broker(|_| {});
    let (s, _, link) = attach(&rt, &b, "e", true, 0);
    b.router.subscribe("t", &s, options(QoS::AtMostOnce));
    s.slot
        .lock()
        .session
        .subscriptions
        .insert("t".into(), options(QoS::AtMostOnce));
    let away = rt.block_on(async { b.detach(&s, link.id) });
    assert!(away.is_none());
    assert!(b.registry.get("e").is_none());
    assert_eq!(b.router.subscription_count(), 0);
}

/// Runs the runtime until `done` holds (the timers it waits on are the manual clock's).
fn run_until(rt: &tokio::runtime::Runtime, mut done: impl FnMut() -> bool) {
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !done() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("in time");
    });
}

#[test]
fn a_session_expires_when_its_interval_has_passed_on_the_clock() {
    // MQTT-3.1.2-23 (3.1.1: never; 5.0: Session Expiry Interval).
    let rt = runtime();
    let b = broker(|_| {});
    let (s, _, link) = attach(&rt, &b, "x", false, 30);
    rt.block_on(async { b.detach(&s, link.id) });
    b.clock.advance(Duration::from_secs(29));
    rt.block_on(async { tokio::task::yield_now().await });
    assert!(b.registry.get("x").is_some(), "not yet");
    b.clock.advance(Duration::from_secs(1));
    run_until(&rt, || b.registry.get("x").is_none());
}

fn will(delay: u32) -> Will {
    Will {
        topic: "wills/w".into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
        delay_interval: delay,
        properties: PublishProperties::default(),
    }
}

#[test]
fn a_delayed_will_goes_out_after_the_delay_unless_the_session_resumes() {
    // MQTT-3.1.3-9.
    let rt = runtime();
    let b = broker(|_| {});
    let (watcher, _, _l) = attach(&rt, &b, "watcher", true, 0);
    let mut o = options(QoS::AtMostOnce);
    o.retain_handling = RetainHandling::Never;
    b.router.subscribe("wills/#", &watcher, o);

    let (s, _, link) = attach(&rt, &b, "w", false, 600);
    let away = rt.block_on(async { b.detach(&s, link.id) });
    rt.block_on(async { b.schedule_will(will(10), &s, away, None) });
    b.clock.advance(Duration::from_secs(10));
    run_until(&rt, || b.metrics.snapshot().wills_published == 1);
    assert_eq!(queued(&watcher).len(), 1);

    // Resumed within the delay: no will.
    let (s, _, link) = attach(&rt, &b, "w", false, 600);
    let away = rt.block_on(async { b.detach(&s, link.id) });
    rt.block_on(async { b.schedule_will(will(10), &s, away, None) });
    let (_s, present, _link) = attach(&rt, &b, "w", false, 600);
    assert!(present);
    b.clock.advance(Duration::from_secs(20));
    rt.block_on(async {
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
    });
    assert_eq!(
        b.metrics.snapshot().wills_published,
        1,
        "not published again"
    );
}
