//! MQTT 5.0 behaviour with a real third-party client (rumqttc v5) over TCP.

mod common;

use common::*;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_1_2_publish_and_subscribe() {
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let (mut sub, _) = v5_connect(v5_options("sub5", addr)).await;
    sub.subscribe("v5/#", QoS::ExactlyOnce).await;
    let (publisher, _) = v5_connect(v5_options("pub5", addr)).await;
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        publisher
            .client
            .publish(format!("v5/{i}"), qos, false, vec![i as u8])
            .await
            .unwrap();
        let p = sub.next_publish().await;
        assert_eq!(&p.topic[..], format!("v5/{i}").as_bytes());
        assert_eq!(p.qos, qos);
        assert_eq!(&p.payload[..], &[i as u8]);
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_properties_and_message_properties_are_forwarded() {
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let (mut sub, _) = v5_connect(v5_options("sub5", addr)).await;
    sub.subscribe("props", QoS::AtLeastOnce).await;
    let (publisher, _) = v5_connect(v5_options("pub5", addr)).await;
    let props = PublishProperties {
        content_type: Some("text/plain".into()),
        response_topic: Some("reply/here".into()),
        correlation_data: Some(bytes::Bytes::from_static(b"corr")),
        user_properties: vec![("k".into(), "v".into())],
        message_expiry_interval: Some(600),
        ..Default::default()
    };
    publisher
        .client
        .publish_with_properties("props", QoS::AtLeastOnce, false, "body", props)
        .await
        .unwrap();
    let p = sub.next_publish().await;
    let got = p.properties.expect("properties forwarded");
    assert_eq!(got.content_type.as_deref(), Some("text/plain"));
    assert_eq!(got.response_topic.as_deref(), Some("reply/here"));
    assert_eq!(got.correlation_data.as_deref(), Some(&b"corr"[..]));
    assert_eq!(
        got.user_properties,
        vec![("k".to_string(), "v".to_string())]
    );
    // MQTT-3.3.2-6: the expiry forwarded is what is left of it.
    let left = got.message_expiry_interval.expect("expiry forwarded");
    assert!((1..=600).contains(&left), "{left}");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_keeps_subscriptions_for_a_returning_client() {
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let mut opts = v5_options("returning", addr);
    opts.set_clean_start(false);
    opts.set_session_expiry_interval(Some(300));
    let (mut sub, connack) = v5_connect(opts.clone()).await;
    assert!(!connack.session_present);
    sub.subscribe("back/+", QoS::AtLeastOnce).await;
    drop(sub);
    wait_detached(&broker, "returning").await;
    let (publisher, _) = v5_connect(v5_options("pub5", addr)).await;
    publisher
        .client
        .publish("back/1", QoS::AtLeastOnce, false, "queued")
        .await
        .unwrap();
    wait_until(|| broker.metrics().deliveries_enqueued == 1).await;
    let (mut sub, connack) = v5_connect(opts).await;
    assert!(connack.session_present);
    let p = sub.next_publish().await;
    assert_eq!(&p.payload[..], b"queued");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_reports_missing_subscription() {
    let broker = start_broker().await;
    let (mut c, _) = v5_connect(v5_options("unsub", broker.local_addr())).await;
    c.subscribe("here", QoS::AtMostOnce).await;
    c.client.unsubscribe("here").await.unwrap();
    c.client.unsubscribe("never").await.unwrap();
    let mut reasons = Vec::new();
    while reasons.len() < 2 {
        let r = c
            .next(|p| match p {
                Packet::UnsubAck(u) => Some(u.reasons),
                _ => None,
            })
            .await;
        reasons.extend(r);
    }
    use rumqttc::v5::mqttbytes::v5::UnsubAckReason;
    assert_eq!(
        reasons,
        vec![
            UnsubAckReason::Success,
            UnsubAckReason::NoSubscriptionExisted
        ]
    );
    broker.shutdown().await;
}
