//! Limits that protect the broker from clients that never authenticate: the CONNECT size read
//! before authentication, the memory all such connections may hold, and connections per
//! address; and the open-file limit, which bounds the connections the process can hold.

mod common;

use bytes::Bytes;
use common::*;
use roost::codec::{Packet, QoS, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// True if the broker closes `s` within the wait (it reads end of stream).
async fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(WAIT, s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_connect_is_refused_before_authentication_but_not_a_large_publish_after() {
    let broker = start_broker_with(|c| c.max_connect_packet_size = 1024).await;
    let addr = broker.local_addr();
    let mut big = connect_packet(Version::V5, "big-will");
    big.will = Some(roost::codec::Will {
        topic: "w".into(),
        payload: Bytes::from(vec![7u8; 4096]),
        qos: QoS::AtMostOnce,
        retain: false,
        delay_interval: 0,
        properties: Default::default(),
    });
    let mut c = RawClient::open(addr, Version::V5).await;
    c.send(&Packet::Connect(Box::new(big))).await;
    assert!(c.until_closed().await.is_empty(), "closed without CONNACK");

    let (mut ok, connack) = RawClient::connect(addr, connect_packet(Version::V5, "small")).await;
    assert_eq!(connack.code, 0);
    ok.send(&publish("t", QoS::AtLeastOnce, 1, &vec![1u8; 100_000]))
        .await;
    assert!(
        matches!(ok.recv().await, Some(Packet::Ack(_))),
        "max_packet_size applies now"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_awaiting_connect_share_a_memory_budget() {
    let broker = start_broker_with(|c| c.max_pending_connect_bytes = 64 * 1024).await;
    let addr = broker.local_addr();
    // Each sends most of a 60 KB CONNECT and stops.
    let mut partial = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut head = vec![0x10, 0xe0, 0xd4, 0x03]; // CONNECT, remaining length 60,000
        head.extend(std::iter::repeat_n(0u8, 30_000));
        s.write_all(&head).await.unwrap();
        partial.push(s);
    }
    // Those that went over the budget are closed; one or two fit.
    wait_until(|| broker.metrics().connections_open <= 4).await;
    let open = broker.metrics().connections_open;
    assert!(open >= 1, "the first ones fit: {open} open");
    drop(partial);
    // The budget is given back: a real client connects.
    wait_until(|| broker.metrics().connections_open == 0).await;
    let (_, connack) = RawClient::connect(addr, connect_packet(Version::V311, "after")).await;
    assert_eq!(connack.code, 0);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_connection() {
    let broker = start_broker_with(|c| c.max_connections_per_address = 2).await;
    let addr = broker.local_addr();
    let from = |ip: [u8; 4]| async move {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind((ip, 0).into()).unwrap();
        socket.connect(addr).await.unwrap()
    };
    let _a = from([127, 0, 0, 1]).await;
    let _b = from([127, 0, 0, 1]).await;
    let mut third = from([127, 0, 0, 1]).await;
    assert!(
        closed(&mut third).await,
        "a third from the same address is refused"
    );
    let mut other = from([127, 0, 0, 2]).await;
    let connect = connect_packet(Version::V311, "other-host");
    let mut buf = bytes::BytesMut::new();
    roost::codec::encode(
        &Packet::Connect(Box::new(connect)),
        Version::V311,
        None,
        &mut buf,
    )
    .unwrap();
    other.write_all(&buf).await.unwrap();
    let mut answer = [0u8; 4];
    tokio::time::timeout(WAIT, other.read_exact(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        answer,
        [0x20, 0x02, 0x00, 0x00],
        "another address still gets in"
    );
    assert!(broker.metrics().connections_refused >= 1);
    broker.shutdown().await;
}

/// Every connection holds a file descriptor: the binary raises its soft open-file limit to the
/// hard one at start (and says so), and then serves as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_file_limit_is_raised_to_the_hard_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut args: Vec<std::ffi::OsString> = ["--port", "0", "--log-level", "info", "--data-dir"]
        .map(Into::into)
        .to_vec();
    args.push(dir.path().join("data").into());
    let broker = common::binary::BrokerProcess::spawn_with_nofile(1024, 4096, &args);
    broker.wait_log("open-file limit raised from 1024 to 4096");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", broker.child.id())).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a line for open files");
    let numbers: Vec<&str> = open_files.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers, ["4096", "4096"], "{open_files}");
    let (_client, ack) =
        RawClient::connect(broker.addr, connect_packet(Version::V311, "after-raise")).await;
    assert_eq!(ack.code.0, 0);
}
