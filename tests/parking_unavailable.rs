//! When idle connections cannot be parked (here: no file descriptor left for the parked table's
//! epoll instance when the first connection goes idle), each keeps its task, as if never
//! idle: it must not try again and again, each try nesting the connection's future one level
//! deeper (memory, then the worker thread's stack, grew until the process aborted).
//!
//! A test binary of its own: the parked table is process-wide and starts once.

mod common;

use std::time::Duration;

use common::*;
use roost::codec::{Packet, QoS, Version};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_keep_their_tasks_when_parking_is_unavailable() {
    let broker = start_broker_with(|c| c.park_after = Some(Duration::ZERO)).await;
    let addr = broker.local_addr();
    // Connected, CONNECT not yet sent: nothing has parked yet.
    let mut sub = RawClient::open(addr, Version::V311).await;
    let mut publisher = RawClient::open(addr, Version::V311).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // No descriptor left: the parked table's epoll instance cannot be made.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let open = std::fs::read_dir("/proc/self/fd").expect("fd list").count() as u64;
    // SAFETY: a system call writing to a local struct.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    let saved = limit;
    limit.rlim_cur = open.saturating_sub(2);
    // SAFETY: a system call reading a local struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    sub.send(&Packet::Connect(Box::new(connect_packet(
        Version::V311,
        "sub",
    ))))
    .await;
    assert!(matches!(sub.recv().await, Some(Packet::ConnAck(_))));
    publisher
        .send(&Packet::Connect(Box::new(connect_packet(
            Version::V311,
            "pub",
        ))))
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::ConnAck(_))));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // SAFETY: as above.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &saved) }, 0);
    // Idle for a while (with `park_after` 0 each failed park used to nest at once), then
    // still served.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(broker.metrics().connections_parked, 0);
    sub.send(&subscribe("t", QoS::AtLeastOnce)).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    tokio::time::sleep(Duration::from_millis(500)).await;
    publisher
        .send(&publish("t", QoS::AtMostOnce, 0, b"still served"))
        .await;
    match sub.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(&p.payload[..], b"still served"),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    broker.shutdown().await;
}
