//! Fault injection: a transport that fails after N bytes (read + written), swept over every
//! N of a full session. The client must never panic, must report an error, and must recover
//! by reconnecting with no QoS 2 loss or duplicate (QoS 1: no loss).
// These tests exercise QoS 2; they need the (default) `qos2` feature.
#![cfg(feature = "qos2")]

mod common;

use common::*;
use roost_client::{Protocol, QoS};

struct Outcome {
    a_stored: bool,
    b_stored: bool,
    received: Vec<Ev>,
}

/// The faulty phase: connect, publish "a" (QoS 1) and "b" (QoS 2), receive the queued "c"
/// (QoS 2) and "d" (QoS 1), and see both acknowledgements. Stops at the first error.
async fn faulty_phase(
    c: &mut TestClient<'_, FaultyTcp>,
    io: FaultyTcp,
    o: &roost_client::ConnectOptions<'_>,
    out: &str,
) -> Outcome {
    let mut res = Outcome {
        a_stored: false,
        b_stored: false,
        received: Vec::new(),
    };
    if c.connect(io, o).await.is_err() {
        assert!(!c.is_connected());
        return res;
    }
    let before = c.inflight();
    let r = c.publish(out, b"a", QoS::AtLeastOnce, false).await;
    res.a_stored = r.is_ok() || c.inflight() > before;
    let Ok(pa) = r else { return res };
    let before = c.inflight();
    let r = c.publish(out, b"b", QoS::ExactlyOnce, false).await;
    res.b_stored = r.is_ok() || c.inflight() > before;
    let Ok(pb) = r else { return res };
    let (mut acked_a, mut acked_b) = (false, false);
    while !(acked_a && acked_b && res.received.len() >= 2) {
        match next(c).await {
            Ok(Ev::PubAck(p)) if p == pa => acked_a = true,
            Ok(Ev::PubComp(p)) if p == pb => acked_b = true,
            Ok(m @ Ev::Msg { .. }) => res.received.push(m.plain()),
            Ok(_) => {}
            Err(_) => {
                assert!(!c.is_connected());
                return res;
            }
        }
    }
    res
}

async fn sweep(broker: &RunningBroker, p: Protocol) {
    let t = tag(p);
    let mut bo = Bufs::std();
    let mut obs = bo.client();
    obs.connect(tcp(broker.addr).await, &opts(&format!("obs-{t}"), p))
        .await
        .unwrap();
    subscribe(&mut obs, &format!("f/{t}/#"), QoS::ExactlyOnce).await;

    let mut total = None;
    let mut n = 0usize;
    loop {
        let id = format!("fault-{t}-{n}");
        let out = format!("f/{t}/{n}");
        let inbox = format!("in/{t}/{n}");
        let o = persistent(&id, p);
        let mut bf = Bufs::std();
        let mut f = bf.client::<FaultyTcp>();

        // Set up F's session and subscription, then queue two messages for it while offline.
        let (io, _) = faulty(broker.addr, usize::MAX).await;
        f.connect(io, &opts(&id, p)).await.unwrap();
        f.disconnect().await.unwrap();
        let (io, _) = faulty(broker.addr, usize::MAX).await;
        f.connect(io, &o).await.unwrap();
        subscribe(&mut f, &inbox, QoS::ExactlyOnce).await;
        f.disconnect().await.unwrap();
        let pc = obs
            .publish(&inbox, b"c", QoS::ExactlyOnce, false)
            .await
            .unwrap();
        until(&mut obs, &Ev::PubComp(pc)).await;
        let pd = obs
            .publish(&inbox, b"d", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        until(&mut obs, &Ev::PubAck(pd)).await;

        // Faulty phase with a budget of n bytes (unlimited on the first, measuring run).
        let budget = if total.is_some() { n } else { usize::MAX };
        let (io, handle) = faulty(broker.addr, budget).await;
        let res = faulty_phase(&mut f, io, &o, &out).await;
        if total.is_none() {
            let used = usize::MAX - handle.budget.load(std::sync::atomic::Ordering::SeqCst);
            assert!(res.a_stored && res.b_stored && res.received.len() == 2);
            total = Some(used);
        }
        drop(f.take_transport());

        // Recovery on a healthy connection.
        let (io, _) = faulty(broker.addr, usize::MAX).await;
        let ack = f.connect(io, &o).await.unwrap();
        assert!(ack.session_present, "{t} n={n}");
        if !res.a_stored {
            f.publish(&out, b"a", QoS::AtLeastOnce, false)
                .await
                .unwrap();
        }
        if !res.b_stored {
            f.publish(&out, b"b", QoS::ExactlyOnce, false)
                .await
                .unwrap();
        }
        let mut received = res.received;
        let has_c = |r: &Vec<Ev>| r.contains(&Ev::msg(&inbox, b"c", 2));
        let has_d = |r: &Vec<Ev>| r.contains(&Ev::msg(&inbox, b"d", 1));
        while f.inflight() > 0 || !has_c(&received) || !has_d(&received) {
            if let m @ Ev::Msg { .. } = next(&mut f).await.expect("recovery poll") {
                received.push(m.plain());
            }
        }
        f.publish(&out, b"end", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        while f.inflight() > 0 {
            if let m @ Ev::Msg { .. } = next(&mut f).await.unwrap() {
                received.push(m.plain());
            }
        }
        // The observer got "b" exactly once and "a" at least once, before "end".
        let got = messages_until(&mut obs, b"end").await;
        let bs = got
            .iter()
            .filter(|e| e.plain() == Ev::msg(&out, b"b", 2))
            .count();
        let as_ = got
            .iter()
            .filter(|e| e.plain() == Ev::msg(&out, b"a", 1))
            .count();
        assert_eq!(bs, 1, "{t} n={n}: {got:?}");
        assert!(as_ >= 1, "{t} n={n}: {got:?}");
        let pe = obs
            .publish(&inbox, b"end", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        until(&mut obs, &Ev::PubAck(pe)).await;
        received.extend(messages_until(&mut f, b"end").await.iter().map(Ev::plain));

        // F received "c" exactly once and "d" at least once.
        let cs = received
            .iter()
            .filter(|e| **e == Ev::msg(&inbox, b"c", 2))
            .count();
        assert_eq!(cs, 1, "{t} n={n}: {received:?}");
        assert!(has_d(&received), "{t} n={n}");
        assert!(f.store().is_empty(), "{t} n={n}");
        f.disconnect().await.unwrap();

        if let Some(tot) = total {
            if n >= tot {
                break;
            }
            n += 1;
        }
    }
    eprintln!("{t}: swept failure points 0..={}", total.unwrap());
}

#[tokio::test]
async fn transport_failure_at_every_byte_recovers_without_loss() {
    for broker in brokers().await {
        for p in protocols() {
            sweep(&broker, p).await;
        }
    }
}
