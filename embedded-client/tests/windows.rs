//! The in-flight windows chosen at compile time (`Client<.., OUT, IN>`) against the real
//! Roost broker (in-process) and mosquitto.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::*;
use roost_client::{Client, Error, Protocol, QoS, RamStore};

/// A client with windows `O` / `I` over `b`.
fn windowed<T, const O: usize, const I: usize>(
    b: &mut Bufs,
) -> Client<'_, T, TokioClock, RamStore<'_>, O, I>
where
    T: embedded_io_async::Read + embedded_io_async::Write,
{
    Client::with_windows(
        TokioClock::new(),
        RamStore::new(&mut b.store),
        &mut b.tx,
        &mut b.rx,
    )
}

/// Publishes QoS 1 messages without polling until the window is full: exactly `O` go out,
/// the next one is refused with `InflightFull`; then every one is acknowledged by the broker
/// and the window opens again.
async fn fill_window<const O: usize>(broker: &RunningBroker, p: Protocol) {
    let mut b = Bufs::new(256, 1024, 64 * 64 + 1024);
    let mut c = windowed::<Tcp, O, 1>(&mut b);
    c.connect(tcp(broker.addr).await, &opts("win-out", p))
        .await
        .expect("connect");
    let mut pids = BTreeSet::new();
    for i in 0..O {
        let pid = c
            .publish("win/out", &[i as u8], QoS::AtLeastOnce, false)
            .await
            .expect("publish within the window");
        assert!(pids.insert(pid), "packet id {pid} reused");
    }
    assert_eq!(c.inflight(), O);
    assert_eq!(
        c.publish("win/out", b"x", QoS::AtLeastOnce, false).await,
        Err(Error::InflightFull),
        "window {O} ({:?}, {})",
        broker.backend,
        tag(p)
    );
    assert!(c.is_connected());
    while !pids.is_empty() {
        match next(&mut c).await.expect("poll") {
            Ev::PubAck(pid) => assert!(pids.remove(&pid), "unexpected PUBACK {pid}"),
            e => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(c.inflight(), 0);
    c.publish("win/out", b"again", QoS::AtLeastOnce, false)
        .await
        .expect("window open again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_window_of_1_and_64_bounds_what_is_in_flight() {
    for broker in brokers().await {
        for p in protocols() {
            // mosquitto is configured with a receive maximum of 10 (v5 honours it first).
            if broker.backend == Backend::Roost || p == Protocol::V311 {
                fill_window::<64>(&broker, p).await;
            }
            fill_window::<1>(&broker, p).await;
        }
    }
}

// ---- the incoming window is the v5 Receive Maximum --------------------------------------

/// The most QoS 1/2 PUBLISH packets the broker had sent that the client had not yet
/// acknowledged (PUBACK, or PUBREC for QoS 2), replaying the log in order.
fn max_unacknowledged(log: &[(bool, Vec<u8>)]) -> usize {
    let (mut from_broker, mut from_client) = (Splitter::default(), Splitter::default());
    let (mut open, mut max) = (0usize, 0usize);
    for (read, bytes) in log {
        if *read {
            for first in from_broker.push(bytes).into_iter().map(|p| p[0]) {
                if first >> 4 == 3 && (first >> 1) & 3 > 0 {
                    open += 1;
                    max = max.max(open);
                }
            }
        } else {
            for first in from_client.push(bytes).into_iter().map(|p| p[0]) {
                // MQTT-3.3.4-9 counts a QoS 2 message until PUBCOMP; QoS 1 until PUBACK.
                if first >> 4 == 4 || first >> 4 == 7 {
                    open = open.saturating_sub(1);
                }
            }
        }
    }
    max
}

/// The broker must not send more than the client's Receive Maximum (= the `IN` window)
/// of unacknowledged QoS 1/2 messages (MQTT-3.3.4-9): with `IN` = 1 it sends one at a time
/// although many are queued. Returns the most that were unacknowledged at once.
#[cfg(feature = "v5")]
async fn inbound_window<const I: usize>(broker: &RunningBroker, qos: QoS) -> usize {
    let log: TapLog = Arc::default();
    let mut b = Bufs::std();
    let mut c = windowed::<Tap, 4, I>(&mut b);
    let tap = Tap {
        inner: tcp(broker.addr).await,
        log: log.clone(),
    };
    c.connect(tap, &opts("win-in", Protocol::V5))
        .await
        .expect("connect");
    subscribe(&mut c, "win/in", qos).await;
    // Another client queues 12 messages and a marker.
    let mut pb = Bufs::std();
    let mut publisher = pb.client::<Tcp>();
    publisher
        .connect(tcp(broker.addr).await, &opts("win-pub", Protocol::V5))
        .await
        .expect("connect");
    let mut acks = 0;
    // The marker has the same QoS, so it queues behind the others (a QoS 0 one would not
    // wait for the window).
    for i in 0..13u8 {
        let payload: &[u8] = if i < 12 { &[i] } else { b"end" };
        loop {
            match publisher.publish("win/in", payload, qos, false).await {
                Ok(_) => break,
                Err(Error::InflightFull) => {
                    next(&mut publisher).await.expect("ack");
                    acks += 1;
                }
                Err(e) => panic!("{e:?}"),
            }
        }
    }
    // Finish the publisher's handshakes (mosquitto releases a QoS 2 message on PUBREL).
    while publisher.inflight() > 0 {
        next(&mut publisher).await.expect("publisher ack");
    }
    let got = match tokio::time::timeout(WAIT, messages_until(&mut c, b"end")).await {
        Ok(got) => got,
        Err(_) => {
            let log = log.lock().unwrap();
            let seq: Vec<String> = log
                .iter()
                .map(|(r, b)| format!("{}{:02x?}", if *r { "<" } else { ">" }, b))
                .collect();
            panic!("stalled: {}", seq.join(" "));
        }
    };
    assert_eq!(got.len(), 12, "{got:?} ({acks} acks seen by the publisher)");
    let max = max_unacknowledged(&log.lock().unwrap());
    assert!(max <= I, "{max} unacknowledged > receive maximum {I}");
    max
}

#[cfg(feature = "v5")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_window_is_the_receive_maximum_the_broker_honours() {
    let mut qos = vec![QoS::AtLeastOnce];
    if cfg!(feature = "qos2") {
        qos.push(QoS::from_u8(2).unwrap());
    }
    for broker in brokers().await {
        for &q in &qos {
            assert_eq!(inbound_window::<1>(&broker, q).await, 1);
            inbound_window::<16>(&broker, q).await;
        }
    }
}
