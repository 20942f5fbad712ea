//! MQTT 3.1.1 behaviour with a real third-party client (rumqttc) over TCP.

mod common;

use common::*;
use rumqttc::QoS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_1_2_publish_and_subscribe() {
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let (mut sub, _) = v4_connect(v4_options("sub", addr)).await;
    let ack = sub.subscribe("sensors/+/temp", QoS::ExactlyOnce).await;
    assert_eq!(
        ack.return_codes,
        vec![rumqttc::SubscribeReasonCode::Success(QoS::ExactlyOnce)]
    );
    let (publisher, _) = v4_connect(v4_options("pub", addr)).await;
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        publisher
            .client
            .publish(format!("sensors/{i}/temp"), qos, false, vec![i as u8; 3])
            .await
            .unwrap();
        let p = sub.next_publish().await;
        assert_eq!(p.topic, format!("sensors/{i}/temp"));
        assert_eq!(p.qos, qos, "delivery QoS = min(published, granted)");
        assert_eq!(&p.payload[..], &[i as u8; 3]);
        assert!(!p.retain, "MQTT-3.3.1-9: forwarded messages have RETAIN=0");
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_qos_is_min_of_published_and_granted() {
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let (mut sub, _) = v4_connect(v4_options("sub", addr)).await;
    sub.subscribe("a", QoS::AtLeastOnce).await;
    let (publisher, _) = v4_connect(v4_options("pub", addr)).await;
    publisher
        .client
        .publish("a", QoS::ExactlyOnce, false, "x")
        .await
        .unwrap();
    assert_eq!(sub.next_publish().await.qos, QoS::AtLeastOnce);
    publisher
        .client
        .publish("a", QoS::AtMostOnce, false, "y")
        .await
        .unwrap();
    assert_eq!(sub.next_publish().await.qos, QoS::AtMostOnce);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_subscriptions_deliver_one_copy_at_highest_qos() {
    // MQTT-3.3.5-1
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let (mut sub, _) = v4_connect(v4_options("sub", addr)).await;
    sub.subscribe("home/#", QoS::AtMostOnce).await;
    sub.subscribe("home/+/light", QoS::ExactlyOnce).await;
    sub.subscribe("home/kitchen/light", QoS::AtLeastOnce).await;
    let (publisher, _) = v4_connect(v4_options("pub", addr)).await;
    publisher
        .client
        .publish("home/kitchen/light", QoS::ExactlyOnce, false, "on")
        .await
        .unwrap();
    publisher
        .client
        .publish("home/end", QoS::AtMostOnce, false, "marker")
        .await
        .unwrap();
    let first = sub.next_publish().await;
    assert_eq!(first.topic, "home/kitchen/light");
    assert_eq!(first.qos, QoS::ExactlyOnce);
    // The next message is the marker: no second copy of the light message came in between.
    let second = sub.next_publish().await;
    assert_eq!(second.topic, "home/end");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dollar_topics_are_not_matched_by_leading_wildcards() {
    // MQTT-4.7.2-1
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let (mut all, _) = v4_connect(v4_options("all", addr)).await;
    all.subscribe("#", QoS::AtMostOnce).await;
    all.subscribe("+/status", QoS::AtMostOnce).await;
    let (mut sys, _) = v4_connect(v4_options("sys", addr)).await;
    // Any topic starting with `$` (clients may not write `$SYS` itself).
    sys.subscribe("$app/#", QoS::AtMostOnce).await;
    let (publisher, _) = v4_connect(v4_options("pub", addr)).await;
    publisher
        .client
        .publish("$app/status", QoS::AtMostOnce, false, "hidden")
        .await
        .unwrap();
    publisher
        .client
        .publish("plain/status", QoS::AtMostOnce, false, "seen")
        .await
        .unwrap();
    assert_eq!(sys.next_publish().await.topic, "$app/status");
    let p = all.next_publish().await;
    assert_eq!(
        p.topic, "plain/status",
        "the $app message must not reach # or +/status"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_message_is_delivered_on_subscribe_and_cleared_by_empty_payload() {
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let (publisher, _) = v4_connect(v4_options("pub", addr)).await;
    publisher
        .client
        .publish("state/door", QoS::AtLeastOnce, true, "open")
        .await
        .unwrap();
    // Waiting for the retained message to be visible: a subscriber that keeps resubscribing
    // would be a sleep in disguise, so we wait on the broker's own counter instead.
    wait_until(|| broker.retained_count() == 1).await;

    let (mut late, _) = v4_connect(v4_options("late", addr)).await;
    late.subscribe("state/+", QoS::AtLeastOnce).await;
    let p = late.next_publish().await;
    assert_eq!(p.topic, "state/door");
    assert!(
        p.retain,
        "MQTT-3.3.1-8: retained delivery on subscribe has RETAIN=1"
    );
    assert_eq!(&p.payload[..], b"open");

    // A live subscriber gets the update with RETAIN=0 (MQTT-3.3.1-9).
    publisher
        .client
        .publish("state/door", QoS::AtLeastOnce, true, "closed")
        .await
        .unwrap();
    let p = late.next_publish().await;
    assert!(!p.retain);

    // MQTT-3.3.1-10: an empty retained payload removes the retained message.
    publisher
        .client
        .publish("state/door", QoS::AtLeastOnce, true, "")
        .await
        .unwrap();
    wait_until(|| broker.retained_count() == 0).await;
    let (mut later, _) = v4_connect(v4_options("later", addr)).await;
    later.subscribe("state/+", QoS::AtLeastOnce).await;
    // The first message is the live marker: no retained message came before it.
    publisher
        .client
        .publish("state/marker", QoS::AtLeastOnce, false, "m")
        .await
        .unwrap();
    assert_eq!(later.next_publish().await.topic, "state/marker");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_delivery() {
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let (mut sub, _) = v4_connect(v4_options("sub", addr)).await;
    sub.subscribe("t/1", QoS::AtMostOnce).await;
    sub.subscribe("t/2", QoS::AtMostOnce).await;
    sub.client.unsubscribe("t/1").await.unwrap();
    sub.next(|p| matches!(p, rumqttc::Packet::UnsubAck(_)).then_some(()))
        .await;
    let (publisher, _) = v4_connect(v4_options("pub", addr)).await;
    publisher
        .client
        .publish("t/1", QoS::AtMostOnce, false, "gone")
        .await
        .unwrap();
    publisher
        .client
        .publish("t/2", QoS::AtMostOnce, false, "kept")
        .await
        .unwrap();
    assert_eq!(sub.next_publish().await.topic, "t/2");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_queues_while_away_and_delivers_on_reconnect() {
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let mut opts = v4_options("keeper", addr);
    opts.set_clean_session(false);
    let (mut sub, connack) = v4_connect(opts.clone()).await;
    assert!(!connack.session_present);
    sub.subscribe("jobs/#", QoS::AtLeastOnce).await;
    sub.client.disconnect().await.unwrap();
    drop(sub);
    wait_detached(&broker, "keeper").await;

    let (publisher, _) = v4_connect(v4_options("pub", addr)).await;
    for i in 0..5 {
        publisher
            .client
            .publish(format!("jobs/{i}"), QoS::AtLeastOnce, false, "work")
            .await
            .unwrap();
    }
    publisher
        .client
        .publish("jobs/qos0", QoS::AtMostOnce, false, "not kept offline")
        .await
        .unwrap();
    wait_until(|| broker.metrics().dropped_qos0_offline == 1).await;

    let (mut sub, connack) = v4_connect(opts).await;
    assert!(connack.session_present, "MQTT-3.2.2-2");
    for i in 0..5 {
        let p = sub.next_publish().await;
        assert_eq!(p.topic, format!("jobs/{i}"));
        assert_eq!(p.qos, QoS::AtLeastOnce);
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_session_discards_previous_session() {
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let mut opts = v4_options("c1", addr);
    opts.set_clean_session(false);
    let (mut sub, _) = v4_connect(opts.clone()).await;
    sub.subscribe("x", QoS::AtLeastOnce).await;
    drop(sub);
    opts.set_clean_session(true);
    let (_sub, connack) = v4_connect(opts).await;
    assert!(!connack.session_present, "MQTT-3.2.2-1");
    wait_until(|| broker.subscription_count() == 0).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_new_policy_drops_at_the_limit_and_counts() {
    // The mosquitto-like policy, chosen explicitly; the default never drops (tests/backlog.rs).
    let broker = start_broker_with(|c| {
        c.max_queued_messages = 3;
        c.queue_full = roost::config::QueueFullPolicy::DropNew;
    })
    .await;
    let addr = broker.local_addr();
    let mut opts = v4_options("slow", addr);
    opts.set_clean_session(false);
    let (mut sub, _) = v4_connect(opts.clone()).await;
    sub.subscribe("q", QoS::AtLeastOnce).await;
    sub.client.disconnect().await.unwrap();
    drop(sub);
    wait_detached(&broker, "slow").await;
    let (publisher, _) = v4_connect(v4_options("pub", addr)).await;
    for i in 0..10u8 {
        publisher
            .client
            .publish("q", QoS::AtLeastOnce, false, vec![i])
            .await
            .unwrap();
    }
    wait_until(|| broker.metrics().dropped_queue_full == 7).await;
    let (mut sub, _) = v4_connect(opts).await;
    for i in 0..3u8 {
        assert_eq!(&sub.next_publish().await.payload[..], &[i]);
    }
    // rumqttc acknowledges each; once the broker has them all, the queue has room again.
    wait_until(|| broker.session_info("slow").unwrap().backlog.messages == 0).await;
    // Next comes a live marker, not one of the dropped messages.
    publisher
        .client
        .publish("q", QoS::AtLeastOnce, false, vec![99])
        .await
        .unwrap();
    assert_eq!(&sub.next_publish().await.payload[..], &[99]);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_closes_the_first_connection_and_keeps_the_session() {
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let mut opts = v4_options("twin", addr);
    opts.set_clean_session(false);
    let (mut first, _) = v4_connect(opts.clone()).await;
    first.subscribe("t", QoS::AtLeastOnce).await;
    let (mut second, connack) = v4_connect(opts).await;
    assert!(connack.session_present);
    // The first connection's event loop ends once the broker closes it.
    let closed =
        tokio::time::timeout(WAIT, async { while first.events.recv().await.is_some() {} }).await;
    assert!(closed.is_ok(), "first connection closed by takeover");
    let (publisher, _) = v4_connect(v4_options("pub", addr)).await;
    publisher
        .client
        .publish("t", QoS::AtLeastOnce, false, "to the new one")
        .await
        .unwrap();
    assert_eq!(&second.next_publish().await.payload[..], b"to the new one");
    broker.shutdown().await;
}
