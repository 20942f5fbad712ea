//! MQTT 5 properties sent by roost-client, observed at real subscribers through the real
//! brokers: Roost (in-process) and mosquitto. `mosquitto_sub -V 5 -F` is an independent
//! decoder of the PUBLISH properties; roost-client's own subscriber checks subscription
//! identifiers and options.
#![cfg(feature = "v5")]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use roost_client::{
    Error, Event, Protocol, PublishProperties, QoS, SubscribeProperties, Subscription,
    TopicAliasSlot,
};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// A running `mosquitto_sub`, killed (by its own PID) on drop.
struct Sub {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Sub {
    /// `mosquitto_sub -V 5` on `filter`, printing topic and properties, or `None` when the
    /// mosquitto clients are missing (a failure with `ROOST_INTEROP=require`).
    fn start(broker: &RunningBroker, filter: &str) -> Option<Sub> {
        let spawned = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &broker.addr.port().to_string()])
            .args(["-V", "5", "-q", "1", "-t", filter])
            // topic|content type|correlation data|expiry|payload format|response topic|
            // user properties|payload
            .args(["-F", "%t|%C|%D|%E|%F|%R|%P|%p"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(_) if std::env::var("ROOST_INTEROP").as_deref() != Ok("require") => {
                eprintln!("NOTICE: mosquitto_sub not installed; test skipped");
                return None;
            }
            Err(e) => panic!("mosquitto_sub required (ROOST_INTEROP=require): {e}"),
        };
        let stdout = child.stdout.take().expect("stdout");
        Some(Sub {
            _child: child,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// The next line within `limit`, `None` if none came.
    async fn line_within(&mut self, limit: Duration) -> Option<String> {
        match tokio::time::timeout(limit, self.lines.next_line()).await {
            Ok(Ok(Some(l))) => Some(l),
            Ok(other) => panic!("mosquitto_sub ended: {other:?}"),
            Err(_) => None,
        }
    }

    /// The next line whose topic is `topic` (others are skipped), failing after [`WAIT`].
    async fn line_for(&mut self, topic: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let line = self
                .line_within(left)
                .await
                .unwrap_or_else(|| panic!("no message on {topic} within {WAIT:?}"));
            if line.split('|').next() == Some(topic) {
                return line;
            }
        }
    }
}

/// Publishes QoS 0 to `topic` until `sub` prints it: the subscription is then active.
async fn until_subscribed(c: &mut TestClient<'_>, sub: &mut Sub, topic: &str) {
    for _ in 0..50 {
        c.publish(topic, b"ready", QoS::AtMostOnce, false)
            .await
            .expect("publish");
        if let Some(line) = sub.line_within(Duration::from_millis(100)).await {
            if line.starts_with(topic) {
                return;
            }
        }
    }
    panic!("mosquitto_sub did not subscribe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_properties_and_topic_aliases_reach_a_real_subscriber() {
    for broker in brokers().await {
        let Some(mut sub) = Sub::start(&broker, "props/#") else {
            return;
        };
        let mut b = Bufs::std();
        let mut aliases = [TopicAliasSlot::EMPTY; 2];
        let mut c = b.client::<Tcp>();
        c.set_topic_aliases(&mut aliases);
        c.connect(tcp(broker.addr).await, &opts("props-pub", Protocol::V5))
            .await
            .expect("connect");
        until_subscribed(&mut c, &mut sub, "props/ready").await;

        let props = PublishProperties {
            payload_utf8: true,
            message_expiry_secs: Some(3600),
            content_type: Some("text/plain"),
            response_topic: Some("props/reply"),
            correlation_data: Some(b"c-7"),
            user_properties: &[("site", "7"), ("fw", "1.2")],
            topic_alias: Some(1),
        };
        for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce].into_iter().enumerate() {
            // The first message sets alias 1 up, the second one sends an empty topic with it
            // (MQTT 5.0 section 3.3.2.3.4); the broker delivers both with the full topic.
            let payload = format!("hello {i}");
            c.publish_with("props/a", payload.as_bytes(), qos, false, &props)
                .await
                .expect("publish");
            let line = sub.line_for("props/a").await;
            let f: Vec<&str> = line.split('|').collect();
            assert_eq!(f.len(), 8, "{line}");
            assert_eq!(
                (f[1], f[2], f[4], f[5]),
                ("text/plain", "c-7", "1", "props/reply"),
                "{:?}: {line}",
                broker.backend
            );
            // The broker forwards the remaining lifetime (MQTT-3.3.2-6).
            let expiry: u32 = f[3].parse().expect("expiry");
            assert!((3590..=3600).contains(&expiry), "{line}");
            assert!(f[6].contains("site:7") && f[6].contains("fw:1.2"), "{line}");
            assert_eq!(f[7], payload);
        }
        // With the alias known, the second PUBLISH carried an empty topic; poll the QoS 1
        // acknowledgement so the broker accepted it (no protocol error).
        assert!(matches!(next(&mut c).await, Ok(Ev::PubAck(_))));
        assert!(c.is_connected());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_identifier_and_options_at_the_broker() {
    for broker in brokers().await {
        let name = format!("{:?}", broker.backend);
        let mut b = Bufs::std();
        let mut c = b.client::<Tcp>();
        c.connect(tcp(broker.addr).await, &opts("subopt", Protocol::V5))
            .await
            .expect("connect");
        let mut pb = Bufs::std();
        let mut other = pb.client::<Tcp>();
        other
            .connect(tcp(broker.addr).await, &opts("subopt-2", Protocol::V5))
            .await
            .expect("connect");
        // A retained message exists before the subscriptions.
        other
            .publish("opt/r/1", b"old", QoS::AtLeastOnce, true)
            .await
            .unwrap();
        assert!(matches!(next(&mut other).await, Ok(Ev::PubAck(_))));

        // no local + subscription identifier 7 on opt/l; retain as published + retain
        // handling 2 (no retained messages at subscribe) + identifier 9 on opt/r/#.
        let mut local = Subscription::new("opt/l", QoS::AtLeastOnce);
        local.no_local = true;
        let mut rap = Subscription::new("opt/r/#", QoS::AtLeastOnce);
        rap.retain_as_published = true;
        rap.retain_handling = 2;
        for (s, id) in [(local, 7), (rap, 9)] {
            let props = SubscribeProperties {
                subscription_id: Some(id),
                user_properties: &[("why", "test")],
            };
            let pid = c.subscribe_with(&[s], &props).await.unwrap();
            assert_eq!(next(&mut c).await, Ok(Ev::SubAck(pid, vec![1])));
        }
        // Own message on opt/l is not delivered back (MQTT-3.8.3-3); the other client's is,
        // with identifier 7 (MQTT-3.3.4-3).
        c.publish("opt/l", b"mine", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        other
            .publish("opt/l", b"theirs", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        // A live retained message keeps its retain flag with retain as published
        // (MQTT-3.3.1-13), and the old retained one was not sent (retain handling 2,
        // MQTT-3.3.1-11).
        other
            .publish("opt/r/2", b"live", QoS::AtLeastOnce, true)
            .await
            .unwrap();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let ev = tokio::time::timeout(WAIT, c.poll())
                .await
                .expect("event in time")
                .expect("poll");
            if let Event::Message(m) = ev {
                let ids: Vec<u32> = m.subscription_ids().collect();
                seen.push((m.topic.to_string(), m.payload.to_vec(), m.retain, ids));
            }
        }
        assert_eq!(
            seen,
            vec![
                ("opt/l".into(), b"theirs".to_vec(), false, vec![7]),
                ("opt/r/2".into(), b"live".to_vec(), true, vec![9]),
            ],
            "{name}"
        );
    }
}

/// Properties a roost-client publisher sends arrive at a roost-client subscriber through the
/// broker, read with the typed accessors of `Message`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn received_properties_through_the_broker() {
    for broker in brokers().await {
        let name = format!("{:?}", broker.backend);
        let mut b = Bufs::std();
        let mut c = b.client::<Tcp>();
        c.connect(tcp(broker.addr).await, &opts("rprops-sub", Protocol::V5))
            .await
            .expect("connect");
        let props = SubscribeProperties {
            subscription_id: Some(21),
            user_properties: &[],
        };
        let pid = c
            .subscribe_with(&[Subscription::new("rprops/#", QoS::AtLeastOnce)], &props)
            .await
            .unwrap();
        assert_eq!(next(&mut c).await, Ok(Ev::SubAck(pid, vec![1])));
        let mut pb = Bufs::std();
        let mut other = pb.client::<Tcp>();
        other
            .connect(tcp(broker.addr).await, &opts("rprops-pub", Protocol::V5))
            .await
            .expect("connect");
        let sent = PublishProperties {
            payload_utf8: true,
            message_expiry_secs: Some(3600),
            content_type: Some("application/json"),
            response_topic: Some("rprops/reply"),
            correlation_data: Some(&[0, 0xff, 7]),
            user_properties: &[("unit", "C"), ("site", "7"), ("unit", "K")],
            topic_alias: None,
        };
        other
            .publish_with("rprops/t", b"{}", QoS::AtLeastOnce, false, &sent)
            .await
            .unwrap();
        other
            .publish("rprops/plain", b"x", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        let mut got = 0;
        while got < 2 {
            let ev = tokio::time::timeout(WAIT, c.poll())
                .await
                .expect("event in time")
                .expect("poll");
            let Event::Message(m) = ev else { continue };
            got += 1;
            assert_eq!(m.subscription_ids().collect::<Vec<_>>(), [21], "{name}");
            if m.topic == "rprops/plain" {
                assert_eq!(m.payload_format(), None, "{name}");
                assert_eq!(m.content_type(), None, "{name}");
                assert_eq!(m.response_topic(), None, "{name}");
                assert_eq!(m.correlation_data(), None, "{name}");
                assert_eq!(m.message_expiry_secs(), None, "{name}");
                assert_eq!(m.user_properties().count(), 0, "{name}");
                continue;
            }
            assert_eq!((m.topic, m.payload), ("rprops/t", &b"{}"[..]), "{name}");
            assert!(m.payload_utf8(), "{name}");
            assert_eq!(m.content_type(), Some("application/json"), "{name}");
            assert_eq!(m.response_topic(), Some("rprops/reply"), "{name}");
            assert_eq!(m.correlation_data(), Some(&[0, 0xff, 7][..]), "{name}");
            // The broker forwards what is left of the lifetime (MQTT-3.3.2-6).
            let expiry = m.message_expiry_secs().expect("expiry");
            assert!((3590..=3600).contains(&expiry), "{name}: {expiry}");
            // In the order sent (MQTT-3.3.2-18), repeated names kept.
            let user: Vec<_> = m.user_properties().collect();
            assert_eq!(
                user,
                [("unit", "C"), ("site", "7"), ("unit", "K")],
                "{name}"
            );
        }
        assert!(c.is_connected());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maximum_packet_size_is_honoured_by_the_broker() {
    for broker in brokers().await {
        let mut b = Bufs::std();
        let mut c = b.client::<Tcp>();
        let mut o = opts("maxpkt", Protocol::V5);
        // The receive buffer is 1 KiB; announce 100 bytes instead (MQTT-3.1.2-25: the server
        // must not send larger packets, it drops them for this client).
        o.maximum_packet_size = 100;
        c.connect(tcp(broker.addr).await, &o)
            .await
            .expect("connect");
        subscribe(&mut c, "max/#", QoS::AtLeastOnce).await;
        let mut pb = Bufs::std();
        let mut other = pb.client::<Tcp>();
        other
            .connect(tcp(broker.addr).await, &opts("maxpkt-2", Protocol::V5))
            .await
            .expect("connect");
        other
            .publish("max/big", &[b'x'; 200], QoS::AtLeastOnce, false)
            .await
            .unwrap();
        other
            .publish("max/small", b"end", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        let skipped = messages_until(&mut c, b"end").await;
        assert!(skipped.is_empty(), "{:?}: {skipped:?}", broker.backend);
        assert!(c.is_connected());
        // The client still refuses to send more than the server allows itself.
        let r = c.publish("max/x", &[0; 2000], QoS::AtMostOnce, false).await;
        assert_eq!(r, Err(Error::BufferTooSmall));
    }
}

/// The client announces a Topic Alias Maximum when given alias storage; a broker that sends
/// topic aliases (Roost does, MQTT-3.3.2-10; mosquitto 2.0 does not) has its aliased
/// messages delivered with their full topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_aliases_from_the_broker_are_resolved() {
    for broker in brokers().await {
        let log: TapLog = Default::default();
        let mut b = Bufs::std();
        let mut storage = [0u8; 4 * (2 + 32)];
        let mut c = b.client::<Tap>();
        c.set_inbound_topic_aliases(&mut storage, 32);
        let tap = Tap {
            inner: tcp(broker.addr).await,
            log: log.clone(),
        };
        c.connect(tap, &opts("alias-in", Protocol::V5))
            .await
            .expect("connect");
        subscribe(&mut c, "alias/#", QoS::AtLeastOnce).await;
        let mut pb = Bufs::std();
        let mut other = pb.client::<Tcp>();
        other
            .connect(tcp(broker.addr).await, &opts("alias-pub", Protocol::V5))
            .await
            .expect("connect");
        for i in 0..4u8 {
            other
                .publish("alias/t", &[b'0' + i], QoS::AtLeastOnce, false)
                .await
                .unwrap();
        }
        other
            .publish("alias/t", b"end", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        let got = messages_until(&mut c, b"end").await;
        let want: Vec<Ev> = (0..4u8)
            .map(|i| Ev::msg("alias/t", &[b'0' + i], 1))
            .collect();
        assert_eq!(got, want, "{:?}", broker.backend);
        // How many PUBLISH packets arrived with an empty topic (alias only).
        let mut split = Splitter::default();
        let mut empty = 0;
        for (read, bytes) in log.lock().unwrap().iter() {
            if !*read {
                continue;
            }
            for p in split.push(bytes) {
                let h = roost_wire::FixedHeader::parse(&p).unwrap().unwrap();
                if p[0] >> 4 == 3 && p[h.header_len..h.header_len + 2] == [0, 0] {
                    empty += 1;
                }
            }
        }
        if broker.backend == Backend::Roost {
            assert_eq!(empty, 4, "Roost sends the topic once, then the alias");
        }
        assert!(c.is_connected());
    }
}
