//! Interop tests over real TCP against every available broker backend (Roost in-process and
//! mosquitto; see `common::Backend`). Each test skips with a notice when mosquitto is missing,
//! unless `ROOST_INTEROP=require`.
// These tests exercise QoS 2; they need the (default) `qos2` feature.
#![cfg(feature = "qos2")]

mod common;

use std::time::Duration;

use common::*;
use roost_client::{Error, Protocol, QoS, Will};

#[tokio::test]
async fn qos_0_1_2_both_directions_both_versions() {
    for broker in brokers().await {
        for p in protocols() {
            let t = tag(p);
            let (mut bs, mut bp) = (Bufs::std(), Bufs::std());
            let mut sub = bs.client();
            let mut publ = bp.client();
            let sid = format!("sub-{t}");
            let pid_ = format!("pub-{t}");
            let ack = sub
                .connect(tcp(broker.addr).await, &opts(&sid, p))
                .await
                .unwrap();
            assert!(!ack.session_present);
            publ.connect(tcp(broker.addr).await, &opts(&pid_, p))
                .await
                .unwrap();
            let filter = format!("q/{t}/#");
            assert_eq!(
                subscribe(&mut sub, &filter, QoS::ExactlyOnce).await,
                vec![2]
            );

            let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];
            for q in qos {
                let topic = format!("q/{t}/{}", q as u8);
                let pid = publ.publish(&topic, b"reading", q, false).await.unwrap();
                match q {
                    QoS::AtMostOnce => assert_eq!(pid, 0),
                    QoS::AtLeastOnce => {
                        assert!(until(&mut publ, &Ev::PubAck(pid)).await.is_empty());
                    }
                    QoS::ExactlyOnce => {
                        assert!(until(&mut publ, &Ev::PubRec(pid)).await.is_empty());
                        assert!(until(&mut publ, &Ev::PubComp(pid)).await.is_empty());
                    }
                }
                let got = next(&mut sub).await.unwrap();
                assert_eq!(got, Ev::msg(&topic, b"reading", q as u8), "{t}");
            }
            assert_eq!(publ.inflight(), 0);
            assert!(publ.store().is_empty());
            // Inbound QoS 2 leaves no state once PUBREL/PUBCOMP are done: prove with a marker.
            publ.publish(&format!("q/{t}/end"), b"end", QoS::AtLeastOnce, false)
                .await
                .unwrap();
            assert!(messages_until(&mut sub, b"end").await.is_empty());
            // The broker may send the marker before the PUBREL of the QoS 2 message (ordering is
            // only per QoS flow), so keep polling until the PUBREL has released the id.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !sub.store().is_empty() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "inbound QoS 2 state not released"
                );
                let _ =
                    tokio::time::timeout(std::time::Duration::from_millis(100), sub.poll()).await;
            }

            // Unsubscribe, then nothing more arrives on that filter.
            let upid = sub.unsubscribe(&[&filter]).await.unwrap();
            until(&mut sub, &Ev::UnsubAck(upid)).await;
            sub.disconnect().await.unwrap();
            publ.disconnect().await.unwrap();
            assert_eq!(publ.poll().await.err(), Some(Error::NotConnected));
        }
    }
}

#[tokio::test]
async fn retained_flag_round_trips() {
    for broker in brokers().await {
        for p in protocols() {
            let t = tag(p);
            let topic = format!("ret/{t}");
            let mut bp = Bufs::std();
            let mut publ = bp.client();
            publ.connect(tcp(broker.addr).await, &opts("ret-pub", p))
                .await
                .unwrap();
            let pid = publ
                .publish(&topic, b"last", QoS::AtLeastOnce, true)
                .await
                .unwrap();
            until(&mut publ, &Ev::PubAck(pid)).await;

            let mut bs = Bufs::std();
            let mut sub = bs.client();
            sub.connect(tcp(broker.addr).await, &opts("ret-sub", p))
                .await
                .unwrap();
            subscribe(&mut sub, &topic, QoS::AtLeastOnce).await;
            match next(&mut sub).await.unwrap() {
                Ev::Msg {
                    topic: tp,
                    payload,
                    retain,
                    ..
                } => {
                    assert_eq!(
                        (tp.as_str(), payload.as_slice(), retain),
                        (topic.as_str(), &b"last"[..], true)
                    );
                }
                e => panic!("{e:?}"),
            }
            // Clear the retained message.
            publ.publish(&topic, b"", QoS::AtMostOnce, true)
                .await
                .unwrap();
        }
    }
}

#[tokio::test]
async fn will_is_delivered_after_connection_cut() {
    for broker in brokers().await {
        for p in protocols() {
            let t = tag(p);
            let topic = format!("will/{t}");
            let mut bo = Bufs::std();
            let mut obs = bo.client();
            obs.connect(tcp(broker.addr).await, &opts("observer", p))
                .await
                .unwrap();
            subscribe(&mut obs, &topic, QoS::AtLeastOnce).await;

            let mut bd = Bufs::std();
            let mut dev = bd.client();
            let mut o = opts("device", p);
            o.will = Some(Will {
                topic: &topic,
                payload: b"offline",
                qos: QoS::AtLeastOnce,
                retain: false,
            });
            dev.connect(tcp(broker.addr).await, &o).await.unwrap();
            // Cut the TCP connection without DISCONNECT.
            drop(dev.take_transport());
            assert!(!dev.is_connected());
            assert_eq!(
                next(&mut obs).await.unwrap(),
                Ev::msg(&topic, b"offline", 1)
            );

            // A clean DISCONNECT suppresses the will.
            dev.connect(tcp(broker.addr).await, &o).await.unwrap();
            dev.disconnect().await.unwrap();
            drop(dev.take_transport());
            obs.publish(&topic, b"marker", QoS::AtLeastOnce, false)
                .await
                .unwrap();
            assert!(messages_until(&mut obs, b"marker").await.is_empty());
        }
    }
}

#[tokio::test]
async fn keepalive_keeps_idle_connection_alive() {
    for broker in brokers().await {
        for p in protocols() {
            let t = tag(p);
            let mut b = Bufs::std();
            let mut c = b.client();
            let mut o = opts("idle", p);
            o.keep_alive_secs = 1;
            c.connect(tcp(broker.addr).await, &o).await.unwrap();
            let topic = format!("idle/{t}");
            subscribe(&mut c, &topic, QoS::AtMostOnce).await;
            // Idle for 3 x keepalive (the broker drops a silent client after 1.5 x): poll must
            // neither fail nor return anything; it sends PINGREQ by itself.
            let idle = tokio::time::timeout(Duration::from_millis(3200), c.poll()).await;
            assert!(
                idle.is_err(),
                "{t}: poll returned during idle: {:?}",
                idle.map(|r| r.map(|e| Ev::from(&e)))
            );
            assert!(c.is_connected());
            // The connection still works.
            let mut b2 = Bufs::std();
            let mut other = b2.client();
            other
                .connect(tcp(broker.addr).await, &opts("poker", p))
                .await
                .unwrap();
            other
                .publish(&topic, b"still there?", QoS::AtMostOnce, false)
                .await
                .unwrap();
            assert_eq!(
                next(&mut c).await.unwrap(),
                Ev::msg(&topic, b"still there?", 0)
            );
        }
    }
}

/// Publisher cut right after sending a QoS 2 PUBLISH (before PUBREC) and right after PUBREC
/// (before PUBCOMP): after reconnecting the message arrives exactly once.
#[tokio::test]
async fn session_resume_outbound_qos2_no_loss_no_duplicate() {
    for broker in brokers().await {
        for p in protocols() {
            let t = tag(p);
            let topic = format!("resume/out/{t}");
            let mut bs = Bufs::std();
            let mut sub = bs.client();
            sub.connect(tcp(broker.addr).await, &opts("resume-sub", p))
                .await
                .unwrap();
            subscribe(&mut sub, &topic, QoS::ExactlyOnce).await;

            let mut bp = Bufs::std();
            let mut publ = bp.client();
            let o = persistent("resume-pub", p);
            publ.connect(tcp(broker.addr).await, &opts("resume-pub", p))
                .await
                .unwrap(); // clean slate
            publ.disconnect().await.unwrap();
            publ.connect(tcp(broker.addr).await, &o).await.unwrap();

            // Cut 1: before PUBREC.
            let pid1 = publ
                .publish(&topic, b"one", QoS::ExactlyOnce, false)
                .await
                .unwrap();
            drop(publ.take_transport());
            let ack = publ.connect(tcp(broker.addr).await, &o).await.unwrap();
            assert!(ack.session_present, "{t}");
            assert_eq!(ack.resent, 1);
            until(&mut publ, &Ev::PubComp(pid1)).await;

            // Cut 2: after PUBREC (PUBREL sent), before PUBCOMP.
            let pid2 = publ
                .publish(&topic, b"two", QoS::ExactlyOnce, false)
                .await
                .unwrap();
            until(&mut publ, &Ev::PubRec(pid2)).await;
            drop(publ.take_transport());
            let ack = publ.connect(tcp(broker.addr).await, &o).await.unwrap();
            assert_eq!(ack.resent, 1);
            until(&mut publ, &Ev::PubComp(pid2)).await;

            // Cut 3: QoS 1 before PUBACK.
            let pid3 = publ
                .publish(&topic, b"three", QoS::AtLeastOnce, false)
                .await
                .unwrap();
            drop(publ.take_transport());
            publ.connect(tcp(broker.addr).await, &o).await.unwrap();
            until(&mut publ, &Ev::PubAck(pid3)).await;
            assert!(publ.store().is_empty());

            publ.publish(&topic, b"end", QoS::AtLeastOnce, false)
                .await
                .unwrap();
            let mut got: Vec<Ev> = messages_until(&mut sub, b"end")
                .await
                .iter()
                .map(Ev::plain)
                .collect();
            // QoS 1 is at least once: the resend after the cut may be delivered too.
            got.dedup_by(|a, b| a == b && matches!(a, Ev::Msg { qos: 1, .. }));
            assert_eq!(
                got,
                vec![
                    Ev::msg(&topic, b"one", 2),
                    Ev::msg(&topic, b"two", 2),
                    Ev::msg(&topic, b"three", 1)
                ],
                "{t}"
            );
        }
    }
}

/// Subscriber cut while receiving QoS 2: (a) before the PUBLISH is read: the broker resends
/// it and it is delivered once; (b) delivered, then cut before its PUBREC (which goes out
/// with the call after the one that returned the message): the broker resends the PUBLISH,
/// which is acknowledged but not delivered again, and no state is left.
#[tokio::test]
async fn session_resume_inbound_qos2_no_loss_no_duplicate() {
    for broker in brokers().await {
        for p in protocols() {
            let t = tag(p);
            let topic = format!("resume/in/{t}");
            let mut bp = Bufs::std();
            let mut publ = bp.client();
            publ.connect(tcp(broker.addr).await, &opts("in-pub", p))
                .await
                .unwrap();

            let mut bs = Bufs::std();
            let mut sub = bs.client::<FaultyTcp>();
            let o = persistent("in-sub", p);
            let (io, _) = faulty(broker.addr, usize::MAX).await;
            sub.connect(io, &opts("in-sub", p)).await.unwrap();
            sub.disconnect().await.unwrap();
            let (io, fault) = faulty(broker.addr, usize::MAX).await;
            sub.connect(io, &o).await.unwrap();
            subscribe(&mut sub, &topic, QoS::ExactlyOnce).await;

            // (a) the transport fails from now on: "a" cannot be read.
            fault.kill();
            let pid = publ
                .publish(&topic, b"a", QoS::ExactlyOnce, false)
                .await
                .unwrap();
            until(&mut publ, &Ev::PubRec(pid)).await;
            assert!(next(&mut sub).await.is_err());
            assert!(!sub.is_connected());
            let (io, fault) = faulty(broker.addr, usize::MAX).await;
            let ack = sub.connect(io, &o).await.unwrap();
            assert!(ack.session_present);
            let first = next(&mut sub).await.unwrap();
            assert_eq!(first.plain(), Ev::msg(&topic, b"a", 2), "{t}");

            // (b) "b" delivered, then the connection is cut before its PUBREC.
            let pid = publ
                .publish(&topic, b"b", QoS::ExactlyOnce, false)
                .await
                .unwrap();
            until(&mut publ, &Ev::PubComp(pid)).await;
            let got = next(&mut sub).await.unwrap();
            assert_eq!(got.plain(), Ev::msg(&topic, b"b", 2), "{t}");
            fault.kill();
            drop(sub.take_transport());
            let (io, _) = faulty(broker.addr, usize::MAX).await;
            sub.connect(io, &o).await.unwrap();

            publ.publish(&topic, b"end", QoS::AtLeastOnce, false)
                .await
                .unwrap();
            let rest = messages_until(&mut sub, b"end").await;
            assert!(rest.is_empty(), "{t}: duplicates {rest:?}");
            // The resent "b" was answered with PUBREC; the broker's PUBREL, which may come
            // after "end", clears its record.
            for _ in 0..100 {
                if sub.store().is_empty() {
                    break;
                }
                let r = tokio::time::timeout(std::time::Duration::from_millis(20), sub.poll());
                if let Ok(r) = r.await {
                    panic!("{t}: unexpected {:?}", r.map(|e| Ev::from(&e)));
                }
            }
            assert!(sub.store().is_empty(), "{t}: inbound QoS 2 state left");
        }
    }
}

#[tokio::test]
async fn buffer_too_small_errors() {
    for broker in brokers().await {
        for p in protocols() {
            let t = tag(p);
            let topic = format!("small/{t}");
            // 64-byte buffers: outgoing too large fails cleanly, incoming too large is skipped.
            let mut b = Bufs::new(64, 64, 512);
            let mut c = b.client();
            c.connect(tcp(broker.addr).await, &opts("small", p))
                .await
                .unwrap();
            subscribe(&mut c, &topic, QoS::AtLeastOnce).await;
            assert_eq!(
                c.publish(&topic, &[0u8; 100], QoS::AtLeastOnce, false)
                    .await,
                Err(Error::BufferTooSmall)
            );
            assert!(c.is_connected());
            assert_eq!(c.inflight(), 0);
            assert!(c.store().is_empty());

            let mut b2 = Bufs::std();
            let mut big = b2.client();
            big.connect(tcp(broker.addr).await, &opts("big", p))
                .await
                .unwrap();
            big.publish(&topic, &[7u8; 300], QoS::AtLeastOnce, false)
                .await
                .unwrap();
            big.publish(&topic, b"fits", QoS::AtLeastOnce, false)
                .await
                .unwrap();
            match p {
                // 3.1.1: the broker sends it; the client skips it (and acknowledges it).
                Protocol::V311 => match next(&mut c).await {
                    Err(Error::MessageTooLarge { len }) => assert!(len > 300),
                    other => panic!("{other:?}"),
                },
                // 5.0: the client announced its maximum packet size; the broker drops it.
                #[cfg(feature = "v5")]
                Protocol::V5 => {}
            }
            assert!(c.is_connected());
            assert_eq!(next(&mut c).await.unwrap(), Ev::msg(&topic, b"fits", 1));
            // The skipped QoS 1 message was acknowledged: not redelivered on a persistent resume.
        }
    }
}
