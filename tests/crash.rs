//! Crash tests: the real `roost` binary is killed with SIGKILL mid-stream and restarted on the
//! same data directory. Nothing acknowledged may be lost, and QoS 2 may not duplicate.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use common::binary::BrokerProcess;
use common::*;
use parking_lot::Mutex;
use rand::RngExt;
use roost::codec::{self, AckKind, Decoder, Packet, Publish, QoS, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// A PUBLISH whose payload is the message index, for loss and duplicate counting.
fn numbered(topic: &str, qos: QoS, packet_id: u16, index: u32, dup: bool) -> Packet {
    let mut packet = publish(topic, qos, packet_id, &index.to_be_bytes());
    if let Packet::Publish(p) = &mut packet {
        p.dup = dup;
    }
    packet
}

fn index_of(p: &Publish) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&p.payload[..4]);
    u32::from_be_bytes(b)
}

fn persistent(id: &str) -> roost::codec::Connect {
    let mut c = connect_packet(Version::V311, id);
    c.clean_start = false;
    c
}

#[tokio::test]
async fn qos1_acknowledged_messages_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let (mut sub, _) = RawClient::connect(broker.addr, persistent("offline-sub")).await;
    sub.send(&subscribe("crash/q1", QoS::AtLeastOnce)).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    sub.send(&Packet::Disconnect(Default::default())).await;
    assert!(sub.until_closed().await.is_empty());

    // The publisher streams without waiting; its PUBACKs are recorded as they arrive.
    // Far beyond any in-memory window: the backlog is in the store when the kill comes.
    const TOTAL: u32 = 20_000;
    let kill_at = rand::rng().random_range(200..18_000usize);
    eprintln!("killing after {kill_at} PUBACKs (of {TOTAL})");
    let stream = TcpStream::connect(broker.addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let mut out = BytesMut::new();
    let connect = Packet::Connect(Box::new(connect_packet(Version::V311, "streamer")));
    codec::encode(&connect, Version::V311, None, &mut out).unwrap();
    wr.write_all(&out).await.unwrap();
    let writer = tokio::spawn(async move {
        let mut buf = BytesMut::new();
        for i in 0..TOTAL {
            let id = (i % 60_000 + 1) as u16;
            codec::encode(
                &numbered("crash/q1", QoS::AtLeastOnce, id, i, false),
                Version::V311,
                None,
                &mut buf,
            )
            .unwrap();
            if buf.len() > 4096 || i + 1 == TOTAL {
                if wr.write_all(&buf).await.is_err() {
                    return;
                }
                buf.clear();
            }
        }
    });
    let mut acked = HashSet::new();
    let mut decoder = Decoder::client(Version::V311, 1 << 20);
    let mut rbuf = BytesMut::new();
    let mut broker = Some(broker);
    loop {
        match decoder.decode(&mut rbuf) {
            Ok(Some(Packet::Ack(a))) if a.kind == AckKind::PubAck => {
                // Ids are unique below 60000, so the id tells the message.
                acked.insert(u32::from(a.packet_id) - 1);
                if acked.len() == kill_at
                    && let Some(b) = broker.take()
                {
                    b.kill9();
                }
                continue;
            }
            Ok(Some(_)) => continue,
            Ok(None) => {}
            Err(e) => panic!("{e:?}"),
        }
        match tokio::time::timeout(WAIT, rd.read_buf(&mut rbuf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => break,
        }
    }
    let _ = writer.await;
    assert!(broker.is_none(), "the broker was killed mid-stream");
    assert!(acked.len() >= kill_at);
    if acked.len() == TOTAL as usize {
        // Acknowledgements already on their way when the kill came covered the rest.
        eprintln!("every message was acknowledged before the kill took effect");
    }

    let broker = BrokerProcess::start(dir.path());
    let (mut sub, connack) = RawClient::connect(broker.addr, persistent("offline-sub")).await;
    assert!(connack.session_present);
    let mut received = HashSet::new();
    while !acked.is_subset(&received) {
        match sub.recv().await {
            Some(Packet::Publish(p)) => {
                received.insert(index_of(&p));
                sub.send(&ack(AckKind::PubAck, p.packet_id)).await;
            }
            other => panic!("expected the queued messages, got {other:?}"),
        }
    }
    eprintln!(
        "{} acknowledged before the kill, {} delivered after restart",
        acked.len(),
        received.len()
    );
}

/// Connects a persistent session to the broker now running; a broker killed before its
/// CONNACK is waited out until the next one reports its address.
async fn connect_to_current(
    addr: &mut watch::Receiver<SocketAddr>,
    id: &str,
) -> (RawClient, codec::ConnAck) {
    loop {
        let current = *addr.borrow_and_update();
        if let Some(connected) = RawClient::try_connect(current, persistent(id)).await {
            return connected;
        }
        tokio::time::timeout(WAIT, addr.changed())
            .await
            .expect("broker restarted in time")
            .expect("address channel open");
    }
}

/// A QoS 2 publisher that resumes its handshakes after every reconnect.
async fn qos2_publisher(mut addr: watch::Receiver<SocketAddr>, total: u32, done: Arc<AtomicUsize>) {
    const WINDOW: usize = 20;
    // 0 unsent, 1 PUBLISH sent, 2 PUBREL sent, 3 complete.
    let mut state = vec![0u8; total as usize];
    let mut next = 0usize;
    loop {
        let (mut c, _) = connect_to_current(&mut addr, "qos2-pub").await;
        for (i, s) in state.iter().enumerate() {
            let id = i as u16 + 1;
            match s {
                1 => {
                    c.send(&numbered("crash/q2", QoS::ExactlyOnce, id, i as u32, true))
                        .await
                }
                2 => c.send(&ack(AckKind::PubRel, id)).await,
                _ => {}
            }
        }
        loop {
            let inflight = state.iter().filter(|s| matches!(s, 1 | 2)).count();
            for _ in inflight..WINDOW {
                if next < state.len() {
                    state[next] = 1;
                    let id = next as u16 + 1;
                    c.send(&numbered(
                        "crash/q2",
                        QoS::ExactlyOnce,
                        id,
                        next as u32,
                        false,
                    ))
                    .await;
                    next += 1;
                }
            }
            if done.load(Ordering::SeqCst) == total as usize {
                return;
            }
            match c.recv().await {
                Some(Packet::Ack(a)) if a.kind == AckKind::PubRec => {
                    let i = usize::from(a.packet_id) - 1;
                    if state[i] == 1 {
                        state[i] = 2;
                    }
                    c.send(&ack(AckKind::PubRel, a.packet_id)).await;
                }
                Some(Packet::Ack(a)) if a.kind == AckKind::PubComp => {
                    let i = usize::from(a.packet_id) - 1;
                    if state[i] == 2 {
                        state[i] = 3;
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Some(other) => panic!("publisher got {other:?}"),
                None => break,
            }
        }
        tokio::time::timeout(WAIT, addr.changed())
            .await
            .expect("broker restarted in time")
            .expect("address channel open");
    }
}

/// A QoS 2 subscriber with a persistent session that suppresses duplicates by packet id until
/// PUBREL, as a client must (MQTT-4.3.3-9).
async fn qos2_subscriber(
    mut addr: watch::Receiver<SocketAddr>,
    delivered: Arc<Mutex<HashMap<u32, u32>>>,
    subscribed: Arc<tokio::sync::Notify>,
) {
    let mut awaiting_rel: HashSet<u16> = HashSet::new();
    let mut first = true;
    loop {
        let (mut c, connack) = connect_to_current(&mut addr, "qos2-sub").await;
        if first {
            c.send(&subscribe("crash/q2", QoS::ExactlyOnce)).await;
            assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
            subscribed.notify_one();
            first = false;
        } else {
            assert!(connack.session_present, "subscription survived the crash");
        }
        loop {
            match c.recv().await {
                Some(Packet::Publish(p)) => {
                    if awaiting_rel.insert(p.packet_id) {
                        *delivered.lock().entry(index_of(&p)).or_default() += 1;
                    }
                    c.send(&ack(AckKind::PubRec, p.packet_id)).await;
                }
                Some(Packet::Ack(a)) if a.kind == AckKind::PubRel => {
                    awaiting_rel.remove(&a.packet_id);
                    c.send(&ack(AckKind::PubComp, a.packet_id)).await;
                }
                Some(other) => panic!("subscriber got {other:?}"),
                None => break,
            }
        }
        if tokio::time::timeout(WAIT, addr.changed()).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_exactly_once_across_five_kill_9() {
    const TOTAL: u32 = 400;
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(dir.path());
    let (addr_tx, addr_rx) = watch::channel(broker.addr);
    let delivered = Arc::new(Mutex::new(HashMap::new()));
    let subscribed = Arc::new(tokio::sync::Notify::new());
    let done = Arc::new(AtomicUsize::new(0));
    let sub = tokio::spawn(qos2_subscriber(
        addr_rx.clone(),
        Arc::clone(&delivered),
        Arc::clone(&subscribed),
    ));
    tokio::time::timeout(WAIT, subscribed.notified())
        .await
        .expect("subscribed");
    let publisher = tokio::spawn(qos2_publisher(addr_rx, TOTAL, Arc::clone(&done)));

    let mut rng = rand::rng();
    for round in 0..5 {
        let kill_at = done.load(Ordering::SeqCst) + rng.random_range(5..60usize);
        wait_until(|| done.load(Ordering::SeqCst) >= kill_at).await;
        eprintln!("round {round}: SIGKILL after {kill_at} PUBCOMPs");
        broker.kill9();
        broker = BrokerProcess::start(dir.path());
        addr_tx.send(broker.addr).unwrap();
    }
    tokio::time::timeout(Duration::from_secs(120), publisher)
        .await
        .expect("publisher finished")
        .expect("publisher did not panic");
    wait_until(|| delivered.lock().len() == TOTAL as usize).await;
    let counts = delivered.lock().clone();
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert!((0..TOTAL).all(|i| counts.get(&i) == Some(&1)));
    sub.abort();
    drop(broker);
}

#[tokio::test]
async fn subscription_and_retained_message_survive_kill_9_with_mosquitto_clients() {
    let have = std::process::Command::new("mosquitto_sub")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !have {
        if std::env::var("ROOST_INTEROP").as_deref() == Ok("require") {
            panic!("mosquitto clients required");
        }
        eprintln!("NOTICE: mosquitto clients not installed; test skipped");
        return;
    }
    let run = |tool: &str, addr: SocketAddr, args: &[&str]| {
        let out = std::process::Command::new(tool)
            .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
            .args(if tool == "mosquitto_sub" {
                &["-W", "10"][..]
            } else {
                &[]
            })
            .args(args)
            .output()
            .expect("mosquitto tool runs");
        assert!(out.status.success(), "{tool} {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let addr = broker.addr;
    let no_wait = |tool: &str, args: &[&str]| {
        let out = std::process::Command::new(tool)
            .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
            .args(args)
            .output()
            .expect("mosquitto tool runs");
        assert!(out.status.success(), "{tool} {args:?}: {out:?}");
    };
    no_wait(
        "mosquitto_sub",
        &["-c", "-i", "survivor", "-q", "1", "-t", "dur/t", "-E"],
    );
    no_wait(
        "mosquitto_pub",
        &["-q", "1", "-r", "-t", "dur/retained", "-m", "kept"],
    );
    broker.kill9();

    let broker = BrokerProcess::start(dir.path());
    // Queued for the restored session while it is offline.
    run(
        "mosquitto_pub",
        broker.addr,
        &["-q", "1", "-t", "dur/t", "-m", "after restart"],
    );
    let got = run(
        "mosquitto_sub",
        broker.addr,
        &["-c", "-i", "survivor", "-q", "1", "-t", "dur/t", "-C", "1"],
    );
    assert_eq!(got, "after restart\n");
    let got = run(
        "mosquitto_sub",
        broker.addr,
        &["-t", "dur/retained", "-C", "1", "-v"],
    );
    assert_eq!(got, "dur/retained kept\n");
}
