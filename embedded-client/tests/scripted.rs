//! Deterministic state-machine tests against a scripted peer over an in-memory pipe
//! (tokio duplex): no sockets, no broker.
// These tests exercise QoS 2; they need the (default) `qos2` feature.
#![cfg(feature = "qos2")]

mod common;

use std::time::Duration;

use common::*;
use embedded_io_adapters::tokio_1::FromTokio;
use roost_client::{Client, Error, MAX_INFLIGHT, Protocol, QoS, Record, SessionStore, StoreError};
use roost_wire::FixedHeader;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

type Pipe = FromTokio<DuplexStream>;

/// The server side of the pipe.
struct Peer(DuplexStream);

impl Peer {
    /// Reads one whole packet.
    async fn packet(&mut self) -> Vec<u8> {
        // Long enough for the paused-clock keepalive test, whose client timers come first.
        tokio::time::timeout(Duration::from_secs(60), async {
            let mut pkt = vec![self.0.read_u8().await.unwrap()];
            let header = loop {
                pkt.push(self.0.read_u8().await.unwrap());
                if let Some(h) = FixedHeader::parse(&pkt).expect("fixed header") {
                    break h;
                }
            };
            pkt.resize(header.packet_len(), 0);
            self.0
                .read_exact(&mut pkt[header.header_len..])
                .await
                .unwrap();
            pkt
        })
        .await
        .expect("peer: no packet")
    }

    async fn send(&mut self, b: &[u8]) {
        self.0.write_all(b).await.unwrap();
    }

    /// Reads CONNECT, answers with `connack`.
    async fn accept(&mut self, connack: &[u8]) -> Vec<u8> {
        let c = self.packet().await;
        assert_eq!(c[0], 0x10);
        self.send(connack).await;
        c
    }
}

fn pipe(max_buf: usize) -> (Pipe, Peer) {
    let (a, b) = tokio::io::duplex(max_buf);
    (FromTokio::new(a), Peer(b))
}

/// Lets the client write what it owes (the PUBACK / PUBREC of the message it returned last,
/// which goes out with the next call) through a short `poll`, and reads that packet.
async fn ack_of(c: &mut TestClient<'_, Pipe>, peer: &mut Peer) -> Vec<u8> {
    let (r, p) = tokio::join!(
        tokio::time::timeout(Duration::from_millis(100), c.poll()),
        peer.packet()
    );
    assert!(r.is_err(), "unexpected event");
    p
}

const CONNACK: [u8; 4] = [0x20, 2, 0, 0];
const CONNACK_SP: [u8; 4] = [0x20, 2, 1, 0];

async fn connected<'b>(
    b: &'b mut Bufs,
    o: &roost_client::ConnectOptions<'_>,
) -> (TestClient<'b, Pipe>, Peer) {
    let mut c = b.client();
    let (io, mut peer) = pipe(4096);
    let v5 = o.protocol != Protocol::V311;
    let connack: &[u8] = if v5 { &[0x20, 3, 0, 0, 0] } else { &CONNACK };
    let (r, _) = tokio::join!(c.connect(io, o), peer.accept(connack));
    r.unwrap();
    (c, peer)
}

/// A QoS 2 PUBLISH from the server.
fn q2(pid: u16, dup: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![
        0x34 | if dup { 8 } else { 0 },
        (5 + payload.len()) as u8,
        0,
        1,
        b't',
    ];
    p.extend_from_slice(&pid.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

#[tokio::test]
async fn inbound_qos2_duplicates_suppressed_until_pubrel() {
    let mut b = Bufs::std();
    let (mut c, mut peer) = connected(&mut b, &opts("c", Protocol::V311)).await;
    peer.send(&q2(5, false, b"x")).await;
    assert_eq!(next(&mut c).await.unwrap(), Ev::msg("t", b"x", 2));
    // The server resends (it did not see PUBREC): suppressed, PUBREC again. (The first
    // PUBREC goes out with this poll, after the message was returned.)
    peer.send(&q2(5, true, b"x")).await;
    let quiet = tokio::time::timeout(Duration::from_millis(100), c.poll()).await;
    assert!(quiet.is_err(), "duplicate delivered");
    assert_eq!(peer.packet().await, [0x50, 2, 0, 5]);
    assert_eq!(peer.packet().await, [0x50, 2, 0, 5]);
    assert_eq!(c.store().len(), 1);
    // PUBREL releases the id; PUBCOMP answers.
    peer.send(&[0x62, 2, 0, 5]).await;
    // The same id is now a new message.
    peer.send(&q2(5, false, b"y")).await;
    assert_eq!(next(&mut c).await.unwrap(), Ev::msg("t", b"y", 2));
    assert_eq!(peer.packet().await, [0x70, 2, 0, 5]);
    // PUBREL for an unknown id is still completed.
    peer.send(&[0x62, 2, 0, 5, 0x62, 2, 0, 9]).await;
    peer.send(&[0x30, 4, 0, 1, b'm', b'!']).await;
    assert_eq!(next(&mut c).await.unwrap(), Ev::msg("m", b"!", 0));
    assert_eq!(peer.packet().await, [0x50, 2, 0, 5]);
    assert_eq!(peer.packet().await, [0x70, 2, 0, 5]);
    assert_eq!(peer.packet().await, [0x70, 2, 0, 9]);
    assert!(c.store().is_empty());
}

#[tokio::test]
async fn outbound_qos1_and_qos2_handshakes() {
    let mut b = Bufs::std();
    let (mut c, mut peer) = connected(&mut b, &opts("c", Protocol::V311)).await;
    let p1 = c.publish("a", b"1", QoS::AtLeastOnce, true).await.unwrap();
    assert_eq!(
        peer.packet().await,
        [0x33, 6, 0, 1, b'a', 0, p1 as u8, b'1']
    );
    let p2 = c.publish("a", b"2", QoS::ExactlyOnce, false).await.unwrap();
    assert_ne!(p1, p2);
    assert_eq!(
        peer.packet().await,
        [0x34, 6, 0, 1, b'a', 0, p2 as u8, b'2']
    );
    assert_eq!(c.inflight(), 2);
    peer.send(&[0x40, 2, 0, p1 as u8, 0x50, 2, 0, p2 as u8])
        .await;
    assert_eq!(next(&mut c).await.unwrap(), Ev::PubAck(p1));
    assert_eq!(next(&mut c).await.unwrap(), Ev::PubRec(p2));
    assert_eq!(peer.packet().await, [0x62, 2, 0, p2 as u8]);
    // A repeated PUBREC is answered with PUBREL again, no event.
    peer.send(&[0x50, 2, 0, p2 as u8, 0x70, 2, 0, p2 as u8])
        .await;
    assert_eq!(next(&mut c).await.unwrap(), Ev::PubComp(p2));
    assert_eq!(peer.packet().await, [0x62, 2, 0, p2 as u8]);
    assert_eq!(c.inflight(), 0);
    assert!(c.store().is_empty());
}

#[tokio::test]
async fn packet_ids_never_reused_while_in_flight() {
    let mut b = Bufs::new(64, 64, 64 * 1024);
    let (mut c, mut peer) = connected(&mut b, &opts("c", Protocol::V311)).await;
    let mut ids = Vec::new();
    for _ in 0..MAX_INFLIGHT {
        ids.push(c.publish("t", b"", QoS::AtLeastOnce, false).await.unwrap());
        peer.packet().await;
    }
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), MAX_INFLIGHT);
    assert!(!ids.contains(&0));
    assert_eq!(
        c.publish("t", b"", QoS::AtLeastOnce, false).await,
        Err(Error::InflightFull)
    );
    assert!(c.is_connected());
    // Keep ids[0] in flight and cycle through the whole id space (wrap-around) with the rest.
    let held = ids[0];
    for id in &ids[1..] {
        peer.send(&[0x40, 2, (id >> 8) as u8, *id as u8]).await;
        assert_eq!(next(&mut c).await.unwrap(), Ev::PubAck(*id));
    }
    for _ in 0..70_000u32 {
        let id = c.publish("t", b"", QoS::AtLeastOnce, false).await.unwrap();
        assert_ne!(id, held);
        assert_ne!(id, 0);
        peer.packet().await;
        peer.send(&[0x40, 2, (id >> 8) as u8, id as u8]).await;
        assert_eq!(next(&mut c).await.unwrap(), Ev::PubAck(id));
    }
    assert_eq!(c.inflight(), 1);
}

#[tokio::test(start_paused = true)]
async fn keepalive_pings_while_idle_and_detects_dead_server() {
    let mut b = Bufs::std();
    let mut o = opts("c", Protocol::V311);
    o.keep_alive_secs = 10;
    let (mut c, mut peer) = connected(&mut b, &o).await;
    let t0 = tokio::time::Instant::now();
    let (r, ping) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(15), c.poll()),
        async {
            let p = peer.packet().await;
            let at = t0.elapsed();
            peer.send(&[0xd0, 0]).await;
            (p, at)
        }
    );
    assert!(r.is_err(), "poll returned while idle");
    assert_eq!(ping.0, [0xc0, 0]);
    assert_eq!(ping.1.as_secs(), 10);
    // Next PINGREQ goes unanswered: Timeout one keepalive later, connection dropped.
    let (r, p) = tokio::join!(c.poll(), peer.packet());
    assert_eq!(p, [0xc0, 0]);
    assert_eq!(r.err(), Some(Error::Timeout));
    assert!(!c.is_connected());
    assert!(t0.elapsed() >= Duration::from_secs(30));
}

#[tokio::test]
async fn poll_is_cancel_safe_mid_packet_and_mid_ack() {
    let mut b = Bufs::std();
    let mut c = b.client();
    // A 2-byte pipe: every write blocks until the peer reads.
    let (io, mut peer) = pipe(2);
    let o = opts("c", Protocol::V311);
    let (r, _) = tokio::join!(c.connect(io, &o), peer.accept(&CONNACK));
    r.unwrap();
    let msg = [0x32, 8, 0, 1, b't', 0, 7, b'a', b'b', b'c'];
    // Half a packet, then the poll is cancelled.
    peer.send(&msg[..2]).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(50), c.poll())
            .await
            .is_err()
    );
    peer.send(&msg[2..4]).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(50), c.poll())
            .await
            .is_err()
    );
    // The rest: the message is returned before its PUBACK is written.
    let (r, _) = tokio::join!(next(&mut c), peer.send(&msg[4..]));
    assert_eq!(r.unwrap(), Ev::msg("t", b"abc", 1));
    // The PUBACK (4 bytes) goes out with the next call, which is cancelled while writing it.
    assert!(
        tokio::time::timeout(Duration::from_millis(50), c.poll())
            .await
            .is_err()
    );
    let (r, ack) = tokio::join!(
        tokio::time::timeout(Duration::from_millis(50), c.poll()),
        peer.packet()
    );
    assert!(r.is_err());
    assert_eq!(ack, [0x40, 2, 0, 7]);
    // Publish cancelled mid-write: the rest goes out before the next packet.
    let big = [9u8; 20];
    assert!(
        tokio::time::timeout(
            Duration::from_millis(50),
            c.publish("t", &big, QoS::AtMostOnce, false)
        )
        .await
        .is_err()
    );
    let (r, (p1, p2)) = tokio::join!(c.publish("u", b"", QoS::AtMostOnce, false), async {
        (peer.packet().await, peer.packet().await)
    });
    r.unwrap();
    assert_eq!(&p1[..5], &[0x30, 23, 0, 1, b't']);
    assert_eq!(p2, [0x30, 3, 0, 1, b'u']);
}

#[tokio::test]
async fn oversized_inbound_publish_is_skipped_and_acknowledged() {
    let mut b = Bufs::new(64, 32, 256);
    let (mut c, mut peer) = connected(&mut b, &opts("c", Protocol::V311)).await;
    let mut big = vec![0x34, 105, 0, 1, b't', 0, 3];
    big.extend_from_slice(&[1u8; 100]);
    peer.send(&big).await;
    peer.send(&[0x30, 4, 0, 1, b't', b'k']).await;
    assert_eq!(next(&mut c).await, Err(Error::MessageTooLarge { len: 107 }));
    assert!(c.is_connected());
    assert_eq!(next(&mut c).await.unwrap(), Ev::msg("t", b"k", 0));
    assert_eq!(peer.packet().await, [0x50, 2, 0, 3]);
    // A non-PUBLISH packet that does not fit is fatal.
    let mut suback = vec![0x90, 40, 0, 1];
    suback.extend_from_slice(&[0u8; 38]);
    peer.send(&suback).await;
    assert_eq!(next(&mut c).await, Err(Error::Protocol));
    assert!(!c.is_connected());
    assert_eq!(c.poll().await.err(), Some(Error::NotConnected));
}

#[tokio::test]
async fn malformed_input_is_an_error_not_a_panic() {
    let bad: &[&[u8]] = &[
        &[0x30, 0xff, 0xff, 0xff, 0xff, 0x01],
        &[0x32, 3, 0, 1, b't'],
        &[0x36, 5, 0, 1, b't', 0, 1],
        &[0x20, 2, 0, 0],
        &[0x00, 0],
        &[0xf0, 0],
        &[0x40, 1, 0],
        &[0x30, 3, 0, 1, 0xff],
    ];
    for pkt in bad {
        let mut b = Bufs::new(64, 64, 64);
        let (mut c, mut peer) = connected(&mut b, &opts("c", Protocol::V311)).await;
        peer.send(pkt).await;
        assert_eq!(next(&mut c).await, Err(Error::Protocol), "{pkt:?}");
        assert!(!c.is_connected());
    }
    // Server closes the stream.
    let mut b = Bufs::std();
    let (mut c, peer) = connected(&mut b, &opts("c", Protocol::V311)).await;
    drop(peer);
    assert_eq!(next(&mut c).await, Err(Error::ConnectionClosed));
}

#[tokio::test]
async fn connect_refused_and_timeout() {
    let mut b = Bufs::std();
    let mut c = b.client();
    let (io, mut peer) = pipe(256);
    let o = opts("c", Protocol::V311);
    let (r, _) = tokio::join!(c.connect(io, &o), peer.accept(&[0x20, 2, 0, 5]));
    assert_eq!(r, Err(Error::Refused(5)));
    assert!(!c.is_connected());
    let (io, mut peer) = pipe(256);
    let mut o = opts("c", Protocol::V311);
    o.connect_timeout_ms = 100;
    let (r, _) = tokio::join!(c.connect(io, &o), peer.packet());
    assert_eq!(r, Err(Error::Timeout));
    // Buffers below 16 bytes are refused up front.
    let mut small = Bufs::new(8, 64, 0);
    let mut c = small.client();
    let (io, _peer) = pipe(256);
    assert_eq!(c.connect(io, &o).await, Err(Error::BufferTooSmall));
}

/// A "flash" store for the reboot test: records in a Vec that outlives the client.
#[derive(Default, Clone)]
struct Flash(Vec<(Record, Vec<u8>)>);

impl SessionStore for Flash {
    fn save(&mut self, record: Record, data: &[u8]) -> Result<(), StoreError> {
        match self.0.iter_mut().find(|(r, _)| r.same_key(record)) {
            Some(e) => *e = (record, data.to_vec()),
            None => self.0.push((record, data.to_vec())),
        }
        Ok(())
    }
    fn remove(&mut self, record: Record) {
        self.0.retain(|(r, _)| !r.same_key(record));
    }
    fn load(
        &mut self,
        index: usize,
        buf: &mut [u8],
    ) -> Result<Option<(Record, usize)>, StoreError> {
        Ok(self.0.get(index).map(|(r, d)| {
            buf[..d.len()].copy_from_slice(d);
            (*r, d.len())
        }))
    }
    fn clear(&mut self) {
        self.0.clear();
    }
}

#[tokio::test]
async fn session_survives_reboot_through_store() {
    let mut flash = Flash::default();
    let o = {
        let mut o = opts("dev", Protocol::V311);
        o.clean_session = false;
        o
    };
    let (p1, p2, p3);
    {
        let (mut tx, mut rx) = ([0u8; 128], [0u8; 128]);
        let mut c: Client<'_, Pipe, _, _> =
            Client::new(TokioClock::new(), &mut flash, &mut tx, &mut rx);
        let (io, mut peer) = pipe(1024);
        let (r, _) = tokio::join!(c.connect(io, &o), peer.accept(&CONNACK));
        r.unwrap();
        p1 = c.publish("a", b"1", QoS::AtLeastOnce, false).await.unwrap();
        p2 = c.publish("a", b"2", QoS::ExactlyOnce, false).await.unwrap();
        p3 = c.publish("a", b"3", QoS::ExactlyOnce, false).await.unwrap();
        for _ in 0..3 {
            peer.packet().await;
        }
        peer.send(&[0x50, 2, 0, p2 as u8]).await;
        assert_eq!(next(&mut c).await.unwrap(), Ev::PubRec(p2));
        // An inbound QoS 2 message delivered, PUBREL not yet seen.
        peer.send(&q2(40, false, b"in")).await;
        assert_eq!(next(&mut c).await.unwrap(), Ev::msg("t", b"in", 2));
        // "Reboot": the client and its RAM are gone; the flash store remains.
    }
    assert_eq!(flash.0.len(), 4);
    let (mut tx, mut rx) = ([0u8; 128], [0u8; 128]);
    let mut c: Client<'_, Pipe, _, _> =
        Client::new(TokioClock::new(), &mut flash, &mut tx, &mut rx);
    let (io, mut peer) = pipe(1024);
    let (r, _) = tokio::join!(c.connect(io, &o), peer.accept(&CONNACK_SP));
    assert_eq!(r.unwrap().resent, 3);
    assert_eq!(c.inflight(), 3);
    // Resent in the original order, PUBLISH with DUP, PUBREL for the released one.
    assert_eq!(
        peer.packet().await,
        [0x3a, 6, 0, 1, b'a', 0, p1 as u8, b'1']
    );
    assert_eq!(peer.packet().await, [0x62, 2, 0, p2 as u8]);
    assert_eq!(
        peer.packet().await,
        [0x3c, 6, 0, 1, b'a', 0, p3 as u8, b'3']
    );
    // The inbound id is still known: a resent PUBLISH is suppressed.
    peer.send(&q2(40, true, b"in")).await;
    peer.send(&[0x62, 2, 0, 40]).await;
    peer.send(&[0x40, 2, 0, p1 as u8]).await;
    assert_eq!(next(&mut c).await.unwrap(), Ev::PubAck(p1));
    assert_eq!(peer.packet().await, [0x50, 2, 0, 40]);
    assert_eq!(peer.packet().await, [0x70, 2, 0, 40]);
    // A new id does not collide with ids in flight.
    let p4 = c.publish("a", b"4", QoS::AtLeastOnce, false).await.unwrap();
    assert!(p4 != p2 && p4 != p3);
    drop(c);
    // A server without the session: state is discarded.
    let (mut tx, mut rx) = ([0u8; 128], [0u8; 128]);
    let mut c: Client<'_, Pipe, _, _> =
        Client::new(TokioClock::new(), &mut flash, &mut tx, &mut rx);
    let (io, mut peer) = pipe(1024);
    let (r, _) = tokio::join!(c.connect(io, &o), peer.accept(&CONNACK));
    let ack = r.unwrap();
    assert!(ack.discarded && !ack.session_present);
    assert_eq!(c.inflight(), 0);
    drop(c);
    assert!(flash.0.is_empty());
}

#[cfg(feature = "v5")]
mod v5 {
    use super::*;

    #[tokio::test]
    async fn reason_codes_surface_as_errors() {
        let mut b = Bufs::std();
        let o = opts("c", Protocol::V5);
        let (mut c, mut peer) = connected(&mut b, &o).await;
        let p = c.publish("t", b"x", QoS::AtLeastOnce, false).await.unwrap();
        peer.packet().await;
        peer.send(&[0x40, 4, 0, p as u8, 0x87, 0]).await;
        assert_eq!(
            next(&mut c).await,
            Err(Error::Rejected {
                pid: p,
                reason: 0x87
            })
        );
        assert!(c.is_connected());
        assert_eq!(c.inflight(), 0);
        let p = c.publish("t", b"x", QoS::ExactlyOnce, false).await.unwrap();
        peer.packet().await;
        peer.send(&[0x50, 3, 0, p as u8, 0x97]).await;
        assert_eq!(
            next(&mut c).await,
            Err(Error::Rejected {
                pid: p,
                reason: 0x97
            })
        );
        // Success with a reason code byte of 0 and properties.
        let p = c.publish("t", b"x", QoS::AtLeastOnce, false).await.unwrap();
        peer.packet().await;
        peer.send(&[0x40, 4, 0, p as u8, 0x10, 0]).await;
        assert_eq!(next(&mut c).await.unwrap(), Ev::PubAck(p));
        // Server DISCONNECT.
        peer.send(&[0xe0, 2, 0x8e, 0]).await;
        assert_eq!(next(&mut c).await, Err(Error::ServerDisconnect(0x8e)));
        assert!(!c.is_connected());
        // CONNACK with a v5 reason code.
        let (io, mut peer) = pipe(256);
        let (r, _) = tokio::join!(c.connect(io, &o), peer.accept(&[0x20, 3, 0, 0x87, 0]));
        assert_eq!(r, Err(Error::Refused(0x87)));
    }

    #[tokio::test]
    async fn server_limits_are_enforced() {
        let mut b = Bufs::std();
        let mut c = b.client();
        let (io, mut peer) = pipe(4096);
        // receive maximum 2, maximum packet size 40, maximum QoS 1, server keep alive 7
        let connack = [
            0x20, 16, 0, 0, 13, 0x21, 0, 2, 0x27, 0, 0, 0, 40, 0x24, 1, 0x13, 0, 7,
        ];
        let o = opts("c", Protocol::V5);
        let (r, conn) = tokio::join!(c.connect(io, &o), peer.accept(&connack));
        r.unwrap();
        // The client announced receive maximum and its maximum packet size (rx buffer).
        assert_eq!(conn[8], 5);
        assert_eq!(
            &conn[12..21],
            &[
                8,
                0x21,
                0,
                roost_client::MAX_INBOUND as u8,
                0x27,
                0,
                0,
                4,
                0
            ]
        );
        assert_eq!(c.next_deadline_ms().unwrap() / 1000, 7);
        assert_eq!(
            c.publish("t", &[0u8; 40], QoS::AtMostOnce, false).await,
            Err(Error::PacketTooLarge)
        );
        assert_eq!(
            c.publish("t", b"", QoS::ExactlyOnce, false).await,
            Err(Error::InvalidArgument)
        );
        c.publish("t", b"", QoS::AtLeastOnce, false).await.unwrap();
        c.publish("t", b"", QoS::AtLeastOnce, false).await.unwrap();
        assert_eq!(
            c.publish("t", b"", QoS::AtLeastOnce, false).await,
            Err(Error::InflightFull)
        );
        assert!(c.is_connected());
        assert_eq!(c.store().len(), 2);
    }

    #[tokio::test]
    async fn message_properties_are_exposed() {
        let mut b = Bufs::std();
        let (mut c, mut peer) = connected(&mut b, &opts("c", Protocol::V5)).await;
        // QoS 0 publish with content type "j" and a user property.
        let pkt = [
            0x30, 16, 0, 1, b't', 11, 0x03, 0, 1, b'j', 0x26, 0, 1, b'k', 0, 1, b'v', b'!',
        ];
        peer.send(&pkt).await;
        let ev = tokio::time::timeout(WAIT, c.poll()).await.unwrap().unwrap();
        let roost_client::Event::Message(m) = ev else {
            panic!("{ev:?}")
        };
        assert_eq!(m.payload, b"!");
        let props: Vec<_> = m.properties().collect();
        assert_eq!(
            props,
            vec![
                roost_client::Property::Str(3, "j"),
                roost_client::Property::Pair("k", "v")
            ]
        );
    }

    /// The typed accessors of a received message read each property the server sent;
    /// the identifiers come from `roost_client::property`.
    #[tokio::test]
    async fn message_properties_have_typed_accessors() {
        use roost_client::property::*;
        let mut b = Bufs::std();
        let (mut c, mut peer) = connected(&mut b, &opts("c", Protocol::V5)).await;
        let string = |v: &mut Vec<u8>, s: &str| {
            v.extend_from_slice(&(s.len() as u16).to_be_bytes());
            v.extend_from_slice(s.as_bytes());
        };
        let mut props = vec![PAYLOAD_FORMAT_INDICATOR, 1];
        props.extend([MESSAGE_EXPIRY_INTERVAL, 0, 0, 2, 0x58]);
        props.push(CONTENT_TYPE);
        string(&mut props, "application/json");
        props.push(RESPONSE_TOPIC);
        string(&mut props, "reply/7");
        props.extend([CORRELATION_DATA, 0, 3, 0, 0xff, 7]);
        for (k, v) in [("unit", "C"), ("site", "7"), ("unit", "K")] {
            props.push(USER_PROPERTY);
            string(&mut props, k);
            string(&mut props, v);
        }
        props.extend([SUBSCRIPTION_IDENTIFIER, 0x80, 0x01]);
        // QoS 1, topic "t", packet id 9.
        let mut body = vec![0, 1, b't', 0, 9, props.len() as u8];
        body.extend_from_slice(&props);
        body.extend_from_slice(b"{}");
        assert!(body.len() < 128);
        let mut pkt = vec![0x32, body.len() as u8];
        pkt.extend_from_slice(&body);
        peer.send(&pkt).await;
        // A QoS 0 message without properties.
        peer.send(&[0x30, 5, 0, 1, b'u', 0, b'x']).await;
        let ev = tokio::time::timeout(WAIT, c.poll()).await.unwrap().unwrap();
        let roost_client::Event::Message(m) = ev else {
            panic!("{ev:?}")
        };
        assert_eq!((m.topic, m.payload, m.pid), ("t", &b"{}"[..], 9));
        assert_eq!(m.payload_format(), Some(1));
        assert!(m.payload_utf8());
        assert_eq!(m.message_expiry_secs(), Some(600));
        assert_eq!(m.content_type(), Some("application/json"));
        assert_eq!(m.response_topic(), Some("reply/7"));
        assert_eq!(m.correlation_data(), Some(&[0, 0xff, 7][..]));
        let user: Vec<_> = m.user_properties().collect();
        assert_eq!(user, [("unit", "C"), ("site", "7"), ("unit", "K")]);
        assert_eq!(m.subscription_ids().collect::<Vec<_>>(), [128]);
        assert_eq!(
            m.properties().next().map(|p| p.id()),
            Some(PAYLOAD_FORMAT_INDICATOR)
        );
        let ev = tokio::time::timeout(WAIT, c.poll()).await.unwrap().unwrap();
        let roost_client::Event::Message(m) = ev else {
            panic!("{ev:?}")
        };
        assert_eq!((m.topic, m.payload), ("u", &b"x"[..]));
        assert_eq!(m.payload_format(), None);
        assert!(!m.payload_utf8());
        assert_eq!(m.message_expiry_secs(), None);
        assert_eq!(m.content_type(), None);
        assert_eq!(m.response_topic(), None);
        assert_eq!(m.correlation_data(), None);
        assert_eq!(m.user_properties().count(), 0);
        assert_eq!(m.subscription_ids().count(), 0);
        assert!(c.is_connected());
    }

    /// On a 3.1.1 connection a message has no properties.
    #[tokio::test]
    async fn a_v311_message_has_no_properties() {
        let mut b = Bufs::std();
        let (mut c, mut peer) = connected(&mut b, &opts("c", Protocol::V311)).await;
        peer.send(&[0x30, 4, 0, 1, b'u', b'x']).await;
        let ev = tokio::time::timeout(WAIT, c.poll()).await.unwrap().unwrap();
        let roost_client::Event::Message(m) = ev else {
            panic!("{ev:?}")
        };
        assert_eq!(m.payload, b"x");
        assert_eq!((m.content_type(), m.payload_format()), (None, None));
        assert_eq!(m.properties().count(), 0);
    }

    /// Parses a PUBLISH from the client: (topic, property block, payload).
    fn split_publish(pkt: &[u8]) -> (String, Vec<u8>, Vec<u8>) {
        let h = FixedHeader::parse(pkt).unwrap().unwrap();
        let body = &pkt[h.header_len..];
        let tlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
        let topic = String::from_utf8(body[2..2 + tlen].to_vec()).unwrap();
        let mut at = 2 + tlen;
        if (pkt[0] >> 1) & 3 > 0 {
            at += 2;
        }
        // Property lengths in these tests are below 128: one byte.
        let plen = usize::from(body[at]);
        assert!(plen < 128);
        let props = body[at + 1..at + 1 + plen].to_vec();
        (topic, props, body[at + 1 + plen..].to_vec())
    }

    #[tokio::test]
    async fn connect_sends_caller_properties() {
        let mut b = Bufs::new(256, 200, 1024);
        let mut c: Client<'_, Pipe, _, _, 4, 3> = Client::with_windows(
            TokioClock::new(),
            roost_client::RamStore::new(&mut b.store),
            &mut b.tx,
            &mut b.rx,
        );
        let mut o = opts("c", Protocol::V5);
        o.session_expiry_secs = 10;
        o.user_properties = &[("fw", "1.2")];
        o.maximum_packet_size = 150;
        let (io, mut peer) = pipe(4096);
        let (r, conn) = tokio::join!(c.connect(io, &o), peer.accept(&[0x20, 3, 0, 0, 0]));
        r.unwrap();
        // Session expiry 10, receive maximum = IN window (3), maximum packet size 150,
        // then the user property (MQTT 5.0 section 3.1.2.11).
        assert_eq!(
            &conn[12..37],
            &[
                23, 0x11, 0, 0, 0, 10, 0x21, 0, 3, 0x27, 0, 0, 0, 150, 0x26, 0, 2, b'f', b'w', 0,
                3, b'1', b'.', b'2', 0
            ]
        );
        // A maximum packet size above the receive buffer is capped to it; a receive maximum
        // above the window is capped to the window.
        o.maximum_packet_size = 100_000;
        o.receive_maximum = 50;
        o.user_properties = &[];
        let (io, mut peer) = pipe(4096);
        let (r, conn) = tokio::join!(c.connect(io, &o), peer.accept(&[0x20, 3, 0, 0, 0]));
        r.unwrap();
        assert_eq!(
            &conn[12..26],
            &[13, 0x11, 0, 0, 0, 10, 0x21, 0, 3, 0x27, 0, 0, 0, 200]
        );
    }

    #[tokio::test]
    async fn outgoing_window_is_the_const_generic() {
        let mut b = Bufs::std();
        let mut c: Client<'_, Pipe, _, _, 2, 1> = Client::with_windows(
            TokioClock::new(),
            roost_client::RamStore::new(&mut b.store),
            &mut b.tx,
            &mut b.rx,
        );
        let o = opts("c", Protocol::V5);
        let (io, mut peer) = pipe(4096);
        let (r, conn) = tokio::join!(c.connect(io, &o), peer.accept(&[0x20, 3, 0, 0, 0]));
        r.unwrap();
        assert_eq!(&conn[12..16], &[8, 0x21, 0, 1], "receive maximum = IN = 1");
        let p1 = c.publish("t", b"1", QoS::AtLeastOnce, false).await.unwrap();
        c.publish("t", b"2", QoS::ExactlyOnce, false).await.unwrap();
        assert_eq!(
            c.publish("t", b"3", QoS::AtLeastOnce, false).await,
            Err(Error::InflightFull)
        );
        // A SUBSCRIBE needs a slot too.
        assert_eq!(
            c.subscribe(&[roost_client::Subscription::new("a", QoS::AtMostOnce)])
                .await,
            Err(Error::InflightFull)
        );
        peer.packet().await;
        peer.packet().await;
        peer.send(&[0x40, 2, 0, p1 as u8]).await;
        assert_eq!(next(&mut c).await.unwrap(), Ev::PubAck(p1));
        c.publish("t", b"3", QoS::AtLeastOnce, false).await.unwrap();
        // Incoming: one QoS 2 message may wait for PUBREL; a second one is refused.
        // (v5 QoS 2 PUBLISH "t", id 7 / 8, no properties)
        peer.send(&[0x34, 7, 0, 1, b't', 0, 7, 0, b'a']).await;
        assert!(matches!(next(&mut c).await.unwrap(), Ev::Msg { .. }));
        peer.send(&[0x34, 7, 0, 1, b't', 0, 8, 0, b'b']).await;
        assert_eq!(next(&mut c).await, Err(Error::InflightFull));
    }

    #[tokio::test]
    async fn topic_aliases_respect_the_server_maximum() {
        let mut b = Bufs::std();
        let mut aliases = [roost_client::TopicAliasSlot::EMPTY; 4];
        let mut c = b.client();
        c.set_topic_aliases(&mut aliases);
        let (io, mut peer) = pipe(4096);
        // CONNACK: Topic Alias Maximum 2.
        let o = persistent("c", Protocol::V5);
        let (r, _) = tokio::join!(
            c.connect(io, &o),
            peer.accept(&[0x20, 6, 0, 0, 3, 0x22, 0, 2])
        );
        r.unwrap();
        let with = |a| roost_client::PublishProperties {
            topic_alias: Some(a),
            ..Default::default()
        };
        // First use of alias 1: topic and alias.
        c.publish_with("s/temp", b"1", QoS::AtMostOnce, false, &with(1))
            .await
            .unwrap();
        let (t, props, _) = split_publish(&peer.packet().await);
        assert_eq!(
            (t.as_str(), props.as_slice()),
            ("s/temp", &[0x23, 0, 1][..])
        );
        // Again: empty topic, alias only.
        c.publish_with("s/temp", b"2", QoS::AtMostOnce, false, &with(1))
            .await
            .unwrap();
        let (t, props, payload) = split_publish(&peer.packet().await);
        assert_eq!((t.as_str(), props.as_slice()), ("", &[0x23, 0, 1][..]));
        assert_eq!(payload, b"2");
        // Alias 1 for another topic: the topic goes out again and rebinds it.
        c.publish_with("s/hum", b"3", QoS::AtMostOnce, false, &with(1))
            .await
            .unwrap();
        let (t, _, _) = split_publish(&peer.packet().await);
        assert_eq!(t, "s/hum");
        // MQTT-3.3.2-8: alias 3 is above the server's maximum (2): never sent.
        c.publish_with("s/x", b"4", QoS::AtMostOnce, false, &with(3))
            .await
            .unwrap();
        let (t, props, _) = split_publish(&peer.packet().await);
        assert_eq!((t.as_str(), props.as_slice()), ("s/x", &[][..]));
        // QoS 1 with a known alias: sent short, stored in full without the alias.
        c.publish_with("s/hum", b"5", QoS::AtLeastOnce, false, &with(1))
            .await
            .unwrap();
        let (t, props, _) = split_publish(&peer.packet().await);
        assert_eq!((t.as_str(), props.as_slice()), ("", &[0x23, 0, 1][..]));
        // Reconnect (session present): the resent PUBLISH carries its topic and no alias,
        // since aliases end with the connection (MQTT 5.0 section 3.3.2.3.4); this server
        // allows no aliases at all now.
        drop(peer);
        let (io, mut peer) = pipe(4096);
        let (r, _) = tokio::join!(c.connect(io, &o), peer.accept(&[0x20, 3, 1, 0, 0]));
        assert_eq!(r.unwrap().resent, 1);
        let resent = peer.packet().await;
        assert_eq!(resent[0] & 0x08, 0x08, "DUP");
        let (t, props, payload) = split_publish(&resent);
        assert_eq!((t.as_str(), props.as_slice()), ("s/hum", &[][..]));
        assert_eq!(payload, b"5");
        c.publish_with("s/hum", b"6", QoS::AtMostOnce, false, &with(1))
            .await
            .unwrap();
        let (t, props, _) = split_publish(&peer.packet().await);
        assert_eq!((t.as_str(), props.as_slice()), ("s/hum", &[][..]));
    }

    #[tokio::test]
    async fn reason_strings_are_surfaced() {
        let mut b = Bufs::std();
        let o = opts("c", Protocol::V5);
        let (mut c, mut peer) = connected(&mut b, &o).await;
        assert_eq!(c.reason_string(), None);
        // PUBACK 0x87 "quota" with a user property.
        let p = c.publish("t", b"x", QoS::AtLeastOnce, false).await.unwrap();
        peer.packet().await;
        peer.send(&[
            0x40, 19, 0, p as u8, 0x87, 15, 0x1f, 0, 5, b'q', b'u', b'o', b't', b'a', 0x26, 0, 1,
            b'k', 0, 1, b'v',
        ])
        .await;
        assert_eq!(
            next(&mut c).await,
            Err(Error::Rejected {
                pid: p,
                reason: 0x87
            })
        );
        assert_eq!(c.reason_string(), Some("quota"));
        assert!(
            c.last_properties()
                .any(|p| p == roost_client::Property::Pair("k", "v"))
        );
        // SUBACK with a reason string, returned with the event.
        let s = c
            .subscribe(&[roost_client::Subscription::new("a", QoS::AtLeastOnce)])
            .await
            .unwrap();
        peer.packet().await;
        peer.send(&[0x90, 8, 0, s as u8, 4, 0x1f, 0, 1, b'!', 0x01])
            .await;
        assert_eq!(next(&mut c).await.unwrap(), Ev::SubAck(s, vec![1]));
        assert_eq!(c.reason_string(), Some("!"));
        // Server DISCONNECT with a reason string.
        peer.send(&[0xe0, 7, 0x8e, 5, 0x1f, 0, 2, b't', b'o']).await;
        assert_eq!(next(&mut c).await, Err(Error::ServerDisconnect(0x8e)));
        assert_eq!(c.reason_string(), Some("to"));
        // CONNACK refusal with a reason string.
        let (io, mut peer) = pipe(256);
        let (r, _) = tokio::join!(
            c.connect(io, &o),
            peer.accept(&[0x20, 8, 0, 0x87, 5, 0x1f, 0, 2, b'n', b'o'])
        );
        assert_eq!(r, Err(Error::Refused(0x87)));
        assert_eq!(c.reason_string(), Some("no"));
    }

    #[tokio::test]
    async fn malformed_ack_properties_are_a_protocol_error() {
        let mut b = Bufs::std();
        let o = opts("c", Protocol::V5);
        for bad in [
            // property block longer than the packet
            vec![0x40, 6, 0, 1, 0x87, 9, 0x1f, 0],
            // unknown property identifier
            vec![0x40, 6, 0, 1, 0x87, 2, 0x7f, 0],
            // reason string that is not UTF-8
            vec![0x40, 8, 0, 1, 0x87, 4, 0x1f, 0, 1, 0xff],
        ] {
            let (mut c, mut peer) = connected(&mut b, &o).await;
            c.publish("t", b"x", QoS::AtLeastOnce, false).await.unwrap();
            peer.packet().await;
            peer.send(&bad).await;
            assert_eq!(next(&mut c).await, Err(Error::Protocol), "{bad:?}");
            assert!(!c.is_connected());
        }
    }

    #[tokio::test]
    async fn inbound_topic_aliases() {
        let mut b = Bufs::std();
        let mut storage = [0u8; 3 * (2 + 8)];
        let mut c = b.client();
        // Three slots of up to 8 bytes: Topic Alias Maximum 3 in CONNECT.
        c.set_inbound_topic_aliases(&mut storage, 8);
        let o = opts("c", Protocol::V5);
        let (io, mut peer) = pipe(4096);
        let (r, conn) = tokio::join!(c.connect(io, &o), peer.accept(&[0x20, 3, 0, 0, 0]));
        r.unwrap();
        assert_eq!(
            &conn[12..25],
            &[11, 0x21, 0, 16, 0x27, 0, 0, 4, 0, 0x22, 0, 3, 0]
        );
        // QoS 0 PUBLISH "a/b" setting alias 2, then one with an empty topic and alias 2.
        peer.send(&[0x30, 10, 0, 3, b'a', b'/', b'b', 3, 0x23, 0, 2, b'1'])
            .await;
        peer.send(&[0x30, 7, 0, 0, 3, 0x23, 0, 2, b'2']).await;
        for want in [b"1", b"2"] {
            let ev = tokio::time::timeout(WAIT, c.poll()).await.unwrap().unwrap();
            let roost_client::Event::Message(m) = ev else {
                panic!("{ev:?}")
            };
            assert_eq!((m.topic, m.payload), ("a/b", &want[..]));
        }
        // Alias 2 rebound to another topic; QoS 1 with the alias is acknowledged.
        peer.send(&[0x30, 8, 0, 1, b'z', 3, 0x23, 0, 2, b'3']).await;
        assert_eq!(next(&mut c).await.unwrap(), Ev::msg("z", b"3", 0));
        peer.send(&[0x32, 9, 0, 0, 0, 9, 3, 0x23, 0, 2, b'4']).await;
        assert_eq!(next(&mut c).await.unwrap(), Ev::msg("z", b"4", 1));
        assert_eq!(ack_of(&mut c, &mut peer).await, [0x40, 2, 0, 9]);

        // Each of these is a protocol error and closes the connection: an alias never set,
        // an alias above the maximum sent (MQTT 5.0 section 3.3.2.3.4), alias 0, a topic
        // longer than the slots.
        for bad in [
            vec![0x30, 7, 0, 0, 3, 0x23, 0, 1, b'x'],
            vec![0x30, 8, 0, 1, b't', 3, 0x23, 0, 4, b'x'],
            vec![0x30, 8, 0, 1, b't', 3, 0x23, 0, 0, b'x'],
            vec![
                0x30, 16, 0, 9, b'l', b'o', b'n', b'g', b'/', b'l', b'o', b'n', b'g', 3, 0x23, 0,
                1, b'x',
            ],
        ] {
            let (io, mut peer) = pipe(4096);
            let (r, _) = tokio::join!(c.connect(io, &o), peer.accept(&[0x20, 3, 0, 0, 0]));
            r.unwrap();
            peer.send(&bad).await;
            assert_eq!(next(&mut c).await, Err(Error::Protocol), "{bad:?}");
            assert!(!c.is_connected());
        }
        // Aliases last one connection: after a reconnect alias 2 is unknown again.
        let (io, mut peer) = pipe(4096);
        let (r, _) = tokio::join!(c.connect(io, &o), peer.accept(&[0x20, 3, 0, 0, 0]));
        r.unwrap();
        peer.send(&[0x30, 7, 0, 0, 3, 0x23, 0, 2, b'2']).await;
        assert_eq!(next(&mut c).await, Err(Error::Protocol));
    }
}

/// Every error has a short English message (`Display`) and is a `core::error::Error`.
#[test]
fn errors_display_a_short_message() {
    let all = [
        Error::Transport(embedded_io::ErrorKind::ConnectionReset),
        Error::ConnectionClosed,
        Error::NotConnected,
        Error::Timeout,
        Error::Protocol,
        Error::Refused(0x87),
        Error::ServerDisconnect(0x8e),
        Error::BufferTooSmall,
        Error::PacketTooLarge,
        Error::MessageTooLarge { len: 2000 },
        Error::InflightFull,
        Error::StoreFull,
        Error::Rejected {
            pid: 7,
            reason: 0x95,
        },
        Error::InvalidArgument,
    ];
    let texts: Vec<String> = all.iter().map(|e| e.to_string()).collect();
    for (e, t) in all.iter().zip(&texts) {
        assert!(!t.is_empty() && t.len() < 80, "{e:?}: {t}");
    }
    let unique: std::collections::HashSet<_> = texts.iter().collect();
    assert_eq!(unique.len(), texts.len(), "{texts:?}");
    assert_eq!(
        texts[5], "server refused the connection (reason 0x87)",
        "{texts:?}"
    );
    assert_eq!(
        texts[9],
        "incoming message of 2000 bytes skipped: receive buffer too small"
    );
    assert_eq!(texts[12], "message 7 rejected (reason 0x95)");
    let boxed: Box<dyn std::error::Error> = Box::new(Error::Timeout);
    assert_eq!(boxed.to_string(), "timed out waiting for the server");
}
