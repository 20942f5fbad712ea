//! A small message that arrives in the same read as a lot of other traffic keeps only its own
//! bytes once it is retained, queued or in flight, not the whole read buffer it came in.
//!
//! Each small PUBLISH is written together with a large QoS 0 PUBLISH to a topic nobody
//! subscribes to, in one write, over a real socket. The heap the process holds is counted by
//! the allocator of this test binary, which is exact where RSS is noisy: a message that kept
//! its read buffer would hold tens of KiB instead of a few hundred bytes.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

use bytes::BytesMut;
use common::{RawClient, connect_packet, publish_with, start_broker, subscribe, wait_until};
use roost::codec::{self, Packet, QoS, Version};

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is the system allocator's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The tests count one process-wide heap: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Small messages published in each test.
const MESSAGES: usize = 400;
/// Bytes of the large PUBLISH written with each of them.
const JUNK: usize = 60_000;
/// Heap growth allowed for all of them together: about 1 KiB each, where a kept read buffer
/// would be about 64 KiB each.
const ALLOWED: isize = (MESSAGES * 1024) as isize + (2 << 20);

fn encode(packet: &Packet) -> BytesMut {
    let mut buf = BytesMut::new();
    codec::encode(packet, Version::V311, None, &mut buf).expect("encodable");
    buf
}

/// Publishes MESSAGES 16-byte messages to `topic(i)`, each in one write with a large QoS 0
/// PUBLISH nobody receives, then closes the publisher (its own read buffer goes with it) and
/// waits until `done` says the broker holds them all.
async fn publish_pairs(
    broker: &roost::BrokerHandle,
    qos: QoS,
    retain: bool,
    topic: impl Fn(usize) -> String,
    done: impl FnMut() -> bool,
) {
    let addr = broker.local_addr();
    let (mut publisher, _) =
        RawClient::connect(addr, connect_packet(Version::V311, "pin-pub")).await;
    let junk = encode(&publish_with(
        "pin/nobody",
        QoS::AtMostOnce,
        0,
        &[b'j'; JUNK],
        false,
    ));
    for i in 0..MESSAGES {
        let payload = format!("small-{i:010}");
        let id = (i % 60_000 + 1) as u16;
        let mut write = encode(&publish_with(
            &topic(i),
            qos,
            id,
            payload.as_bytes(),
            retain,
        ));
        write.extend_from_slice(&junk);
        publisher.send_raw(&write).await;
    }
    wait_until(done).await;
    publisher
        .send(&Packet::Disconnect(Default::default()))
        .await;
    drop(publisher);
    common::wait_until(|| broker.session_info("pin-pub").is_none()).await;
}

/// The heap the process gained since `before`.
fn grown_since(before: isize) -> isize {
    LIVE.load(Relaxed) - before
}

#[tokio::test]
async fn retained_messages_keep_only_their_own_bytes() {
    let _serial = SERIAL.lock().await;
    let broker = start_broker().await;
    let before = LIVE.load(Relaxed);
    publish_pairs(
        &broker,
        QoS::AtMostOnce,
        true,
        |i| format!("pin/r/{i}"),
        || broker.retained_count() == MESSAGES,
    )
    .await;
    let grown = grown_since(before);
    assert!(
        grown < ALLOWED,
        "{MESSAGES} retained messages hold {grown} bytes"
    );
    broker.shutdown().await;
}

/// A subscriber that never reads: the messages wait in flight and in its queue. Then, for a
/// durable session, the subscriber goes away and they wait for its return.
async fn queued_for_a_subscriber_that_does_not_read(durable: bool) {
    let _serial = SERIAL.lock().await;
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let mut connect = connect_packet(Version::V311, "pin-sub");
    connect.clean_start = !durable;
    let (mut subscriber, _) = RawClient::connect(addr, connect).await;
    subscriber.send(&subscribe("pin/q", QoS::AtLeastOnce)).await;
    assert!(matches!(subscriber.recv().await, Some(Packet::SubAck(_))));
    let before = LIVE.load(Relaxed);
    let backlog = || {
        broker
            .session_info("pin-sub")
            .map_or(0, |s| s.backlog.messages)
    };
    publish_pairs(
        &broker,
        QoS::AtLeastOnce,
        false,
        |_| "pin/q".to_string(),
        || backlog() == MESSAGES,
    )
    .await;
    let grown = grown_since(before);
    assert!(
        grown < ALLOWED,
        "{MESSAGES} queued messages hold {grown} bytes"
    );
    if durable {
        drop(subscriber);
        common::wait_detached(&broker, "pin-sub").await;
        assert_eq!(backlog(), MESSAGES);
        let grown = grown_since(before);
        assert!(
            grown < ALLOWED,
            "{MESSAGES} messages of a session away hold {grown} bytes"
        );
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn messages_queued_for_a_connected_subscriber_keep_only_their_own_bytes() {
    queued_for_a_subscriber_that_does_not_read(false).await;
}

#[tokio::test]
async fn messages_kept_for_a_durable_session_keep_only_their_own_bytes() {
    queued_for_a_subscriber_that_does_not_read(true).await;
}
