//! The store when the disk fails it: a full disk (simulated with a file size limit on the real
//! binary) and a damaged file. Nothing acknowledged may be lost, a refusal is always a clean
//! MQTT answer, and the broker recovers by itself once it can write again.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::binary::BrokerProcess;
use common::*;
use roost::codec::{AckKind, Packet, Publish, QoS, ReasonCode, Version};

const PAYLOAD: usize = 16 * 1024;

fn persistent(version: Version, id: &str) -> roost::codec::Connect {
    let mut c = connect_packet(version, id);
    c.clean_start = false;
    if version == Version::V5 {
        c.session_expiry_interval = 3600;
    }
    c
}

fn numbered(packet_id: u16, index: u32) -> Packet {
    let mut payload = vec![0x5a; PAYLOAD];
    payload[..4].copy_from_slice(&index.to_be_bytes());
    publish("disk/full", QoS::AtLeastOnce, packet_id, &payload)
}

fn index_of(p: &Publish) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&p.payload[..4]);
    u32::from_be_bytes(b)
}

/// Sets the soft file size limit of process `pid` (`None`: no limit); false if `prlimit` is
/// not installed.
fn limit_file_size(pid: u32, soft: Option<u64>) -> bool {
    let soft = soft.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
    match Command::new("prlimit")
        .arg("--pid")
        .arg(pid.to_string())
        .arg(format!("--fsize={soft}:unlimited"))
        .status()
    {
        Ok(status) => {
            assert!(status.success(), "prlimit failed");
            true
        }
        Err(_) => false,
    }
}

/// One QoS 1 PUBLISH on a 5.0 connection: `Some(reason)` from its PUBACK, `None` if the
/// broker closed the connection instead (after a DISCONNECT, whose reason is checked).
async fn publish_once(client: &mut RawClient, packet_id: u16, index: u32) -> Option<ReasonCode> {
    client.send(&numbered(packet_id, index)).await;
    match client.recv().await {
        Some(Packet::Ack(ack)) if ack.kind == AckKind::PubAck => Some(ack.reason),
        Some(Packet::Disconnect(d)) => {
            // A commit that failed: nothing of it was acknowledged.
            assert_eq!(d.reason, ReasonCode::UNSPECIFIED_ERROR, "{d:?}");
            None
        }
        None => None,
        other => panic!("expected PUBACK or DISCONNECT, got {other:?}"),
    }
}

async fn publisher(addr: std::net::SocketAddr) -> RawClient {
    // Clean start, no expiry: an ephemeral session, which needs no store to connect.
    let (client, ack) = RawClient::connect(addr, connect_packet(Version::V5, "pub")).await;
    assert_eq!(ack.code, ReasonCode::SUCCESS);
    client
}

/// MQTT-3.2.0-1 (the first packet from the server is CONNACK) while the store cannot write;
/// 0x88/0x03 when the broker knows beforehand, 0x80 if the attach itself hit the failure.
async fn durable_connect_is_refused_with_a_connack(addr: std::net::SocketAddr) {
    let (_, ack) = RawClient::connect(addr, persistent(Version::V5, "late-v5")).await;
    assert!(
        [
            ReasonCode::SERVER_UNAVAILABLE,
            ReasonCode::UNSPECIFIED_ERROR
        ]
        .contains(&ack.code),
        "{ack:?}"
    );
    let (_, ack) = RawClient::connect(addr, persistent(Version::V311, "late-v3")).await;
    assert_eq!(ack.code, ReasonCode::V3_SERVER_UNAVAILABLE, "{ack:?}");
}

#[tokio::test]
async fn full_disk_refuses_cleanly_and_recovers_by_itself() {
    full_disk("").await;
}

/// Under a dropping policy too: a message the store cannot take is refused, never dropped
/// after a success acknowledgement.
#[tokio::test]
async fn full_disk_refuses_under_drop_policies_too() {
    full_disk("queue_full = \"drop_new\"\n").await;
}

async fn full_disk(config: &str) {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start_with(dir.path(), config);
    let pid = broker.child.id();

    // An offline durable subscriber: every message must be written to the store.
    let (mut sink, _) = RawClient::connect(broker.addr, persistent(Version::V311, "sink")).await;
    sink.send(&subscribe("disk/#", QoS::AtLeastOnce)).await;
    assert!(matches!(sink.recv().await, Some(Packet::SubAck(_))));
    sink.send(&Packet::Disconnect(Default::default())).await;
    assert!(sink.until_closed().await.is_empty());

    let size = std::fs::metadata(dir.path().join("roost.redb"))
        .unwrap()
        .len();
    if !limit_file_size(pid, Some(size)) {
        eprintln!("prlimit not installed: full-disk test skipped");
        return;
    }

    // Publish until the store fails: the first failure closes the connection (DISCONNECT
    // 0x80, nothing acknowledged), later ones are refused with PUBACK 0x97.
    let mut acked = BTreeSet::new();
    let mut index = 0u32;
    let mut client = publisher(broker.addr).await;
    let mut refused = false;
    while index < 2000 && !refused {
        index += 1;
        match publish_once(&mut client, (index % 60_000 + 1) as u16, index).await {
            Some(ReasonCode::SUCCESS) | Some(ReasonCode::NO_MATCHING_SUBSCRIBERS) => {
                acked.insert(index);
            }
            Some(ReasonCode::QUOTA_EXCEEDED) => refused = true,
            Some(other) => panic!("unexpected PUBACK reason {other:?}"),
            None => client = publisher(broker.addr).await,
        }
    }
    assert!(refused, "the file size limit never failed a commit");
    broker.wait_log("store commit failed");
    durable_connect_is_refused_with_a_connack(broker.addr).await;

    // Room again: the broker reopens the store by itself and acknowledges again.
    assert!(limit_file_size(pid, None));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut recovered = false;
    while tokio::time::Instant::now() < deadline {
        index += 1;
        match publish_once(&mut client, (index % 60_000 + 1) as u16, index).await {
            Some(ReasonCode::SUCCESS) => {
                acked.insert(index);
                recovered = true;
                break;
            }
            Some(ReasonCode::QUOTA_EXCEEDED) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Some(other) => panic!("unexpected PUBACK reason {other:?}"),
            None => client = publisher(broker.addr).await,
        }
    }
    assert!(recovered, "the store did not recover within 60 s");
    for _ in 0..10 {
        index += 1;
        let reason = publish_once(&mut client, (index % 60_000 + 1) as u16, index).await;
        assert_eq!(reason, Some(ReasonCode::SUCCESS));
        acked.insert(index);
    }
    let (_, ack) = RawClient::connect(broker.addr, persistent(Version::V5, "late-v5")).await;
    assert_eq!(ack.code, ReasonCode::SUCCESS, "durable sessions are back");

    // Everything acknowledged is in the store, also after a kill -9.
    broker.kill9();
    let broker = BrokerProcess::start_with(dir.path(), config);
    let (mut sink, connack) =
        RawClient::connect(broker.addr, persistent(Version::V311, "sink")).await;
    assert!(connack.session_present);
    let mut received = BTreeSet::new();
    while received.len() < acked.len() {
        match sink.recv().await {
            Some(Packet::Publish(p)) => {
                sink.send(&common::ack(AckKind::PubAck, p.packet_id)).await;
                received.insert(index_of(&p));
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    let lost: Vec<_> = acked.difference(&received).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
}

/// Zeroes a 4 KiB page of `path` that lies inside a message payload (a run of the filler
/// byte), about the middle of the file: damage that only the page checksums reveal.
fn zero_a_payload_page(path: &Path) {
    let mut data = std::fs::read(path).unwrap();
    let mut runs = Vec::new();
    let mut start = None;
    for (i, b) in data.iter().enumerate() {
        match (*b == 0x5a, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                if i - s >= 8192 {
                    runs.push(s);
                }
                start = None;
            }
            _ => {}
        }
    }
    assert!(!runs.is_empty(), "payloads are in the file");
    let page = runs[runs.len() / 2].div_ceil(4096) * 4096;
    data[page..page + 4096].fill(0);
    std::fs::write(path, data).unwrap();
}

/// Runs `roost` to its end (bounded).
fn run_to_end(command: &mut Command) -> std::process::Output {
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("roost runs");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.expect("output"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("roost did not exit in time");
        }
    }
}

fn roost(args: &[&str], dir: &Path) -> std::process::Output {
    run_to_end(
        Command::new(env!("CARGO_BIN_EXE_roost"))
            .args(args)
            .arg("--data-dir")
            .arg(dir),
    )
}

#[tokio::test]
async fn a_damaged_store_stops_the_broker_with_a_message_and_repair_keeps_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let (mut sink, _) = RawClient::connect(broker.addr, persistent(Version::V311, "sink")).await;
    sink.send(&subscribe("disk/#", QoS::AtLeastOnce)).await;
    assert!(matches!(sink.recv().await, Some(Packet::SubAck(_))));
    sink.send(&Packet::Disconnect(Default::default())).await;
    assert!(sink.until_closed().await.is_empty());
    let mut client = publisher(broker.addr).await;
    const TOTAL: u32 = 300;
    for i in 1..=TOTAL {
        let reason = publish_once(&mut client, i as u16, i).await;
        assert_eq!(reason, Some(ReasonCode::SUCCESS));
    }
    broker.signal("TERM");
    let mut child = broker;
    let status = child.child.wait().unwrap();
    assert!(status.success());
    let file = dir.path().join("roost.redb");
    zero_a_payload_page(&file);

    // The broker refuses to start: exit status 2, the file and the way out in the message.
    let out = roost(&["--port", "0"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is damaged"), "{stderr}");
    assert!(stderr.contains("roost.redb"), "{stderr}");
    assert!(stderr.contains("roost store repair"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let check = roost(&["store", "check"], dir.path());
    let report = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{report}");
    assert!(report.contains("damaged"), "{report}");

    let repair = roost(&["store", "repair"], dir.path());
    let report = String::from_utf8_lossy(&repair.stdout);
    assert!(repair.status.success(), "{report}");
    let kept_aside = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("roost.redb.damaged-")
        });
    assert!(kept_aside, "the damaged file is kept");
    let check = roost(&["store", "check"], dir.path());
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    // The repaired store serves every record: the damage was inside one payload, which
    // decodes (payload bytes carry no checksum of their own), so all are kept.
    let broker = BrokerProcess::start(dir.path());
    let (mut sink, connack) =
        RawClient::connect(broker.addr, persistent(Version::V311, "sink")).await;
    assert!(connack.session_present, "the session was readable");
    let mut received = BTreeSet::new();
    while received.len() < TOTAL as usize {
        match sink.recv().await {
            Some(Packet::Publish(p)) => {
                sink.send(&common::ack(AckKind::PubAck, p.packet_id)).await;
                assert_eq!(p.payload.len(), PAYLOAD, "a whole message");
                received.insert(index_of(&p));
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    assert_eq!(received, (1..=TOTAL).collect::<BTreeSet<_>>());
}
