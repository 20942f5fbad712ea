//! A hostile or buggy server, and a careless caller, against a scripted peer over an in-memory
//! pipe (tokio duplex): the client must never panic, never lose a message it acknowledged,
//! and never send what MQTT cannot carry.
#![cfg(feature = "qos2")]

mod common;

use std::time::Duration;

use common::*;
use embedded_io_adapters::tokio_1::FromTokio;
use roost_client::{Client, Error, Event, Protocol, QoS, Record, SessionStore, StoreError};
use roost_wire::FixedHeader;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

type Pipe = FromTokio<DuplexStream>;

/// The server side of the pipe.
struct Peer(DuplexStream);

impl Peer {
    /// Reads one whole packet.
    async fn packet(&mut self) -> Vec<u8> {
        tokio::time::timeout(Duration::from_secs(5), async {
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

    /// `true` if nothing arrives within 100 ms.
    async fn silent(&mut self) -> bool {
        let mut b = [0u8; 1];
        tokio::time::timeout(Duration::from_millis(100), self.0.read(&mut b))
            .await
            .is_err()
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

/// Connects `c` over `io` while `peer` answers CONNECT with `connack`.
async fn handshake<T, S, const O: usize, const I: usize>(
    c: &mut Client<'_, T, TokioClock, S, O, I>,
    io: T,
    o: &roost_client::ConnectOptions<'_>,
    peer: &mut Peer,
    connack: &[u8],
) -> Result<roost_client::ConnAck, Error>
where
    T: embedded_io_async::Read + embedded_io_async::Write,
    S: SessionStore,
{
    let (r, _) = tokio::join!(c.connect(io, o), peer.accept(connack));
    r
}

fn pipe(max_buf: usize) -> (Pipe, Peer) {
    let (a, b) = tokio::io::duplex(max_buf);
    (FromTokio::new(a), Peer(b))
}

fn connack(p: Protocol, session_present: bool) -> Vec<u8> {
    let sp = u8::from(session_present);
    if p == Protocol::V311 {
        vec![0x20, 2, sp, 0]
    } else {
        vec![0x20, 3, sp, 0, 0]
    }
}

/// A PUBLISH from the server to topic "t" (v5: with an empty property block).
fn publish(p: Protocol, qos: u8, pid: u16, dup: bool, payload: &[u8]) -> Vec<u8> {
    let v5 = p != Protocol::V311;
    let mut body = vec![0, 1, b't'];
    if qos > 0 {
        body.extend_from_slice(&pid.to_be_bytes());
    }
    if v5 {
        body.push(0);
    }
    body.extend_from_slice(payload);
    let mut pkt = vec![0x30 | qos << 1 | if dup { 8 } else { 0 }, body.len() as u8];
    pkt.extend_from_slice(&body);
    pkt
}

/// A "flash" store whose records outlive the client.
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

/// A `poll` dropped while its acknowledgement is still being written (the transport takes
/// two bytes at a time), then `disconnect`: the acknowledgement must never reach the server
/// for a message the application was not given, or the message is lost (the server counts
/// it as delivered and never sends it again). QoS 1 (PUBACK) and QoS 2 (PUBREC), both
/// protocol versions.
#[tokio::test]
async fn an_acknowledged_message_is_always_delivered() {
    for p in protocols() {
        for qos in [1u8, 2] {
            let mut b = Bufs::std();
            let mut c = b.client();
            let (io, mut peer) = pipe(2);
            let o = persistent("c", p);
            let r = handshake(&mut c, io, &o, &mut peer, &connack(p, false)).await;
            r.unwrap();
            let msg = publish(p, qos, 7, false, b"abc");
            let (_, polled) = tokio::join!(peer.send(&msg), async {
                tokio::time::timeout(Duration::from_millis(100), c.poll())
                    .await
                    .map(|r| r.map(|e| Ev::from(&e)))
            });
            // Either the message (its acknowledgement not yet written), or nothing yet.
            let delivered = match polled {
                Ok(Ok(ev)) => {
                    assert_eq!(ev, Ev::msg("t", b"abc", qos), "{p:?} QoS {qos}");
                    true
                }
                Err(_) => false,
                Ok(Err(e)) => panic!("{p:?} QoS {qos}: {e:?}"),
            };
            let (r, (ack, disc)) = tokio::join!(c.disconnect(), async {
                (peer.packet().await, peer.packet().await)
            });
            r.unwrap();
            let kind = if qos == 1 { 0x40 } else { 0x50 };
            assert_eq!(ack, [kind, 2, 0, 7], "{p:?} QoS {qos}");
            assert_eq!(disc[0], 0xe0);
            assert!(
                delivered,
                "{p:?} QoS {qos}: the server got the acknowledgement of a message the \
                 application never received"
            );
        }
    }
}

/// The same through `publish`: a dropped `poll` leaves the acknowledgement half written,
/// `publish` writes the rest and then fails on the transport. The message whose
/// acknowledgement went out must have been delivered.
#[tokio::test]
async fn an_acknowledged_message_survives_a_failed_publish() {
    let p = Protocol::V311;
    let mut b = Bufs::std();
    let mut c: Client<'_, Faulty<Pipe>, _, _> = b.client();
    let (io, mut peer) = pipe(2);
    // Bytes for CONNECT (15), CONNACK (4), the PUBLISH (10) and its PUBACK (4), no more.
    let (io, fault) = Faulty::new(io, 15 + 4 + 10 + 4);
    let o = persistent("c", p);
    let r = handshake(&mut c, io, &o, &mut peer, &connack(p, false)).await;
    r.unwrap();
    let msg = publish(p, 1, 7, false, b"abc");
    assert_eq!(msg.len(), 10);
    let (_, polled) = tokio::join!(peer.send(&msg), async {
        tokio::time::timeout(Duration::from_millis(100), c.poll())
            .await
            .map(|r| r.map(|e| Ev::from(&e)))
    });
    let delivered = matches!(polled, Ok(Ok(_)));
    // The budget is spent once the PUBACK is out: the PUBLISH itself fails.
    let (r, ack) = tokio::join!(c.publish("u", b"x", QoS::AtMostOnce, false), peer.packet());
    assert_eq!(ack, [0x40, 2, 0, 7]);
    assert!(r.is_err());
    assert!(!c.is_connected());
    drop(fault);
    assert!(
        delivered,
        "PUBACK sent for a message the application never received"
    );
}

/// After the fix above the acknowledgement follows delivery; if the connection fails in
/// between, a QoS 2 message is still recorded, so the server's resend is not delivered twice,
/// and a QoS 1 message is delivered again (at least once).
#[tokio::test]
async fn a_connection_lost_between_delivery_and_acknowledgement() {
    for p in protocols() {
        let mut flash = Flash::default();
        let (mut tx, mut rx) = ([0u8; 256], [0u8; 256]);
        let mut c: Client<'_, Pipe, _, _> =
            Client::new(TokioClock::new(), &mut flash, &mut tx, &mut rx);
        let o = persistent("c", p);
        let (io, mut peer) = pipe(4096);
        let r = handshake(&mut c, io, &o, &mut peer, &connack(p, false)).await;
        r.unwrap();
        peer.send(&publish(p, 2, 9, false, b"q2")).await;
        assert_eq!(next(&mut c).await.unwrap(), Ev::msg("t", b"q2", 2));
        // The connection goes before (or just after) PUBREC.
        drop(c.take_transport());
        drop(peer);
        let (io, mut peer) = pipe(4096);
        let r = handshake(&mut c, io, &o, &mut peer, &connack(p, true)).await;
        r.unwrap();
        // The server resends the PUBLISH (it may not have seen PUBREC): not delivered again.
        peer.send(&publish(p, 2, 9, true, b"q2")).await;
        peer.send(&[0x62, 2, 0, 9]).await;
        peer.send(&publish(p, 0, 0, false, b"end")[..]).await;
        let seen = messages_until(&mut c, b"end").await;
        assert!(seen.is_empty(), "{p:?}: delivered twice: {seen:?}");
        assert_eq!(peer.packet().await, [0x50, 2, 0, 9]);
        assert_eq!(peer.packet().await, [0x70, 2, 0, 9]);
        drop(c);
        assert!(flash.0.is_empty(), "{p:?}: {:?}", flash.0);
    }
}

/// MQTT strings cannot carry U+0000 (MQTT-1.5.4-2). A topic with one is refused up front:
/// sent, the server closes the connection, and a stored QoS 1/2 message would be resent, and
/// refused, at every reconnect.
#[tokio::test]
async fn nul_in_a_topic_or_filter_is_refused_and_nothing_is_sent() {
    for p in protocols() {
        let mut b = Bufs::std();
        let mut c = b.client();
        let (io, mut peer) = pipe(4096);
        let o = persistent("c", p);
        let r = handshake(&mut c, io, &o, &mut peer, &connack(p, false)).await;
        r.unwrap();
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            assert_eq!(
                c.publish("a\0b", b"x", qos, false).await,
                Err(Error::InvalidArgument),
                "{p:?}"
            );
        }
        assert_eq!(
            c.subscribe(&[roost_client::Subscription::new("a/\0", QoS::AtMostOnce)])
                .await,
            Err(Error::InvalidArgument)
        );
        assert_eq!(
            c.unsubscribe(&["\0"]).await,
            Err(Error::InvalidArgument),
            "{p:?}"
        );
        assert_eq!(c.inflight(), 0);
        assert!(c.store().is_empty());
        assert!(c.is_connected());
        assert!(peer.silent().await, "{p:?}: something was sent");
        // A client identifier, user name or will topic with U+0000: no CONNECT at all.
        for bad in 0..3 {
            let mut o = opts("c", p);
            let will = roost_client::Will {
                topic: "w\0",
                payload: b"",
                qos: QoS::AtMostOnce,
                retain: false,
            };
            match bad {
                0 => o.client_id = "c\0",
                1 => o.username = Some("u\0"),
                _ => o.will = Some(will),
            }
            let (io, mut peer) = pipe(4096);
            assert_eq!(c.connect(io, &o).await, Err(Error::InvalidArgument));
            assert!(peer.silent().await, "{p:?} {bad}: CONNECT sent");
        }
    }
}

/// 3.1.1 packets have no properties: `reason_string` and `last_properties` must not read
/// SUBACK return codes as a property block.
#[cfg(feature = "v5")]
#[tokio::test]
async fn v311_acknowledgements_have_no_properties() {
    let mut b = Bufs::std();
    let mut c = b.client();
    let (io, mut peer) = pipe(4096);
    let r = handshake(
        &mut c,
        io,
        &opts("c", Protocol::V311),
        &mut peer,
        &connack(Protocol::V311, false),
    )
    .await;
    r.unwrap();
    let s = c
        .subscribe(&[roost_client::Subscription::new("a", QoS::AtMostOnce)])
        .await
        .unwrap();
    peer.packet().await;
    // Six return codes that happen to read as a property block with a reason string.
    peer.send(&[0x90, 8, 0, s as u8, 5, 0x1f, 0, 2, b'h', b'i'])
        .await;
    let ev = tokio::time::timeout(WAIT, c.poll()).await.unwrap().unwrap();
    assert!(matches!(ev, Event::SubAck { .. }), "{ev:?}");
    assert_eq!(c.reason_string(), None);
    assert_eq!(c.last_properties().count(), 0);
}

/// MQTT 5.0 section 3.2.2.3: a CONNACK whose Receive Maximum or Maximum Packet Size is 0,
/// whose Maximum QoS is above 1, or that repeats a property, is malformed: connect fails
/// with `Error::Protocol` instead of ignoring the value (Receive Maximum 0 read as "no
/// limit" lets the client flood the server).
#[cfg(feature = "v5")]
#[tokio::test]
async fn malformed_connack_limits_are_protocol_errors() {
    let bad: &[&[u8]] = &[
        // Receive Maximum 0
        &[0x20, 6, 0, 0, 3, 0x21, 0, 0],
        // Maximum Packet Size 0
        &[0x20, 8, 0, 0, 5, 0x27, 0, 0, 0, 0],
        // Maximum QoS 2 (only 0 or 1 may be sent)
        &[0x20, 5, 0, 0, 2, 0x24, 2],
        // Receive Maximum twice
        &[0x20, 9, 0, 0, 6, 0x21, 0, 5, 0x21, 0, 9],
        // Topic Alias Maximum twice
        &[0x20, 9, 0, 0, 6, 0x22, 0, 5, 0x22, 0, 9],
    ];
    for connack in bad {
        let mut b = Bufs::std();
        let mut c = b.client();
        let (io, mut peer) = pipe(4096);
        let r = handshake(&mut c, io, &opts("c", Protocol::V5), &mut peer, connack).await;
        assert_eq!(r, Err(Error::Protocol), "{connack:?}");
        assert!(!c.is_connected());
    }
}

/// MQTT 5.0 section 3.3.2.3.4: a PUBLISH with two Topic Alias properties is a protocol error
/// (not "the last one wins").
#[cfg(feature = "v5")]
#[tokio::test]
async fn a_publish_with_two_topic_aliases_is_a_protocol_error() {
    let mut b = Bufs::std();
    let mut storage = [0u8; 2 * (2 + 8)];
    let mut c = b.client();
    c.set_inbound_topic_aliases(&mut storage, 8);
    let (io, mut peer) = pipe(4096);
    let r = handshake(
        &mut c,
        io,
        &opts("c", Protocol::V5),
        &mut peer,
        &[0x20, 3, 0, 0, 0],
    )
    .await;
    r.unwrap();
    peer.send(&[0x30, 11, 0, 1, b'a', 6, 0x23, 0, 1, 0x23, 0, 2, b'x'])
        .await;
    assert_eq!(next(&mut c).await, Err(Error::Protocol));
    assert!(!c.is_connected());
}

/// Caller errors with v5 properties: properties that do not fit the transmit buffer, a
/// Subscription Identifier out of range. Nothing is sent or stored, the connection stays.
#[cfg(feature = "v5")]
#[tokio::test]
async fn oversized_properties_and_bad_identifiers_send_nothing() {
    let mut b = Bufs::new(128, 128, 1024);
    let mut c = b.client();
    let (io, mut peer) = pipe(4096);
    let o = persistent("c", Protocol::V5);
    let r = handshake(&mut c, io, &o, &mut peer, &[0x20, 3, 0, 0, 0]).await;
    r.unwrap();
    let big = "v".repeat(200);
    let pairs = [("k", big.as_str())];
    let props = roost_client::PublishProperties {
        user_properties: &pairs,
        ..Default::default()
    };
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        assert_eq!(
            c.publish_with("t", b"x", qos, false, &props).await,
            Err(Error::BufferTooSmall)
        );
    }
    let nul = [("k\0", "v")];
    let props = roost_client::PublishProperties {
        user_properties: &nul,
        ..Default::default()
    };
    assert_eq!(
        c.publish_with("t", b"x", QoS::AtLeastOnce, false, &props)
            .await,
        Err(Error::InvalidArgument)
    );
    let sub = [roost_client::Subscription::new("a", QoS::AtMostOnce)];
    for id in [0, 268_435_456, u32::MAX] {
        let props = roost_client::SubscribeProperties {
            subscription_id: Some(id),
            user_properties: &[],
        };
        assert_eq!(
            c.subscribe_with(&sub, &props).await,
            Err(Error::InvalidArgument),
            "{id}"
        );
    }
    let props = roost_client::SubscribeProperties {
        subscription_id: None,
        user_properties: &pairs,
    };
    assert_eq!(
        c.subscribe_with(&sub, &props).await,
        Err(Error::BufferTooSmall)
    );
    assert_eq!(c.inflight(), 0);
    assert!(c.store().is_empty());
    assert!(c.is_connected());
    assert!(peer.silent().await, "something was sent");
    // The largest identifier is fine, and the client still works.
    let props = roost_client::SubscribeProperties {
        subscription_id: Some(268_435_455),
        user_properties: &[],
    };
    let pid = c.subscribe_with(&sub, &props).await.unwrap();
    let pkt = peer.packet().await;
    assert_eq!(&pkt[4..10], &[5, 0x0b, 0xff, 0xff, 0xff, 0x7f]);
    peer.send(&[0x90, 4, 0, pid as u8, 0, 0]).await;
    assert_eq!(next(&mut c).await.unwrap(), Ev::SubAck(pid, vec![0]));
}

/// A hostile server: acknowledgements for ids never used, a PUBREL flood beyond the IN window,
/// ids reused, garbage after valid packets. No panic, no state change, the connection stays
/// where MQTT allows it.
#[tokio::test]
async fn unknown_ids_and_pubrel_floods_change_nothing() {
    for p in protocols() {
        let mut b = Bufs::std();
        let mut c: Client<'_, Pipe, _, _, 1, 1> = Client::with_windows(
            TokioClock::new(),
            roost_client::RamStore::new(&mut b.store),
            &mut b.tx,
            &mut b.rx,
        );
        let (io, mut peer) = pipe(1 << 16);
        let r = handshake(
            &mut c,
            io,
            &persistent("c", p),
            &mut peer,
            &connack(p, false),
        )
        .await;
        r.unwrap();
        let pid = c.publish("a", b"1", QoS::ExactlyOnce, false).await.unwrap();
        peer.packet().await;
        let mut flood = Vec::new();
        for id in 1..=200u16 {
            if id == pid {
                continue;
            }
            let [hi, lo] = id.to_be_bytes();
            // PUBACK, PUBCOMP, SUBACK, UNSUBACK for ids not in flight, and PUBREL.
            flood.extend_from_slice(&[0x40, 2, hi, lo, 0x70, 2, hi, lo, 0x62, 2, hi, lo]);
            flood.extend_from_slice(&[0xb0, 2 + u8::from(p != Protocol::V311), hi, lo]);
            if p != Protocol::V311 {
                flood.push(0);
            }
        }
        peer.send(&flood).await;
        peer.send(&publish(p, 0, 0, false, b"end")).await;
        let (seen, comps) = tokio::join!(messages_until(&mut c, b"end"), async {
            let mut n = 0;
            loop {
                let pkt = peer.packet().await;
                // PUBCOMP for each PUBREL; PUBREL for the PUBREC of unknown ids never came.
                assert_eq!(pkt[0], 0x70, "{pkt:?}");
                n += 1;
                if n == 199 {
                    return n;
                }
            }
        });
        assert!(seen.is_empty());
        assert_eq!(comps, 199);
        assert_eq!(c.inflight(), 1);
        assert!(c.is_connected());
        // The real handshake still completes.
        let [hi, lo] = pid.to_be_bytes();
        peer.send(&[0x50, 2, hi, lo]).await;
        assert_eq!(next(&mut c).await.unwrap(), Ev::PubRec(pid));
        assert_eq!(peer.packet().await, [0x62, 2, hi, lo]);
        peer.send(&[0x70, 2, hi, lo]).await;
        assert_eq!(next(&mut c).await.unwrap(), Ev::PubComp(pid));
        assert_eq!(c.inflight(), 0);
        // Reused inbound QoS 1 id: delivered again (QoS 1 allows duplicates); QoS 2 reuse
        // before PUBREL is a duplicate and suppressed.
        for _ in 0..2 {
            peer.send(&publish(p, 1, 3, false, b"r")).await;
            assert_eq!(next(&mut c).await.unwrap(), Ev::msg("t", b"r", 1));
        }
        peer.send(&publish(p, 2, 4, false, b"s")).await;
        peer.send(&publish(p, 2, 4, false, b"s")).await;
        peer.send(&publish(p, 0, 0, false, b"end")).await;
        let seen = messages_until(&mut c, b"end").await;
        assert_eq!(seen, vec![Ev::msg("t", b"s", 2)]);
    }
}

/// A session saved with more messages in flight than the client's window (firmware updated
/// to a smaller `OUT`, or a store shared by two builds): the first persistent connect fails
/// with `InflightFull`, and so does every later one, since the store is never shrunk; only a
/// clean connect gets the device online again. This documents the behaviour.
#[tokio::test]
async fn a_stored_session_larger_than_the_window_blocks_every_persistent_connect() {
    let mut flash = Flash::default();
    let o = persistent("dev", Protocol::V311);
    {
        let (mut tx, mut rx) = ([0u8; 128], [0u8; 128]);
        let mut c: Client<'_, Pipe, _, _, 4, 1> =
            Client::with_windows(TokioClock::new(), &mut flash, &mut tx, &mut rx);
        let (io, mut peer) = pipe(4096);
        let r = handshake(&mut c, io, &o, &mut peer, &[0x20, 2, 0, 0]).await;
        r.unwrap();
        for _ in 0..3 {
            c.publish("a", b"1", QoS::AtLeastOnce, false).await.unwrap();
        }
    }
    assert_eq!(flash.0.len(), 3);
    let (mut tx, mut rx) = ([0u8; 128], [0u8; 128]);
    let mut c: Client<'_, Pipe, _, _, 2, 1> =
        Client::with_windows(TokioClock::new(), &mut flash, &mut tx, &mut rx);
    for _ in 0..2 {
        let (io, _peer) = pipe(4096);
        assert_eq!(c.connect(io, &o).await, Err(Error::InflightFull));
    }
}

/// A stored message larger than the new server's Maximum Packet Size is never sent to it
/// (MQTT-3.2.2-15): it is removed from the session, counted in `ConnAck::dropped`, and the
/// next `poll` reports it as `Rejected` with 0x95 (packet too large) before anything else.
/// The messages that fit are resent as usual, in order.
#[cfg(feature = "v5")]
#[tokio::test]
async fn a_resend_respects_the_new_maximum_packet_size() {
    let mut b = Bufs::std();
    let mut c = b.client();
    let o = persistent("c", Protocol::V5);
    let (io, mut peer) = pipe(4096);
    handshake(&mut c, io, &o, &mut peer, &[0x20, 3, 0, 0, 0])
        .await
        .unwrap();
    let big = c
        .publish("t", &[7u8; 100], QoS::AtLeastOnce, false)
        .await
        .unwrap();
    assert!(peer.packet().await.len() > 100);
    let small = c.publish("t", b"s", QoS::AtLeastOnce, false).await.unwrap();
    let first = peer.packet().await;
    drop(c.take_transport());
    assert_eq!(c.store().len(), 2);

    // Session present, Maximum Packet Size 50.
    let (io, mut peer) = pipe(4096);
    let connack = [0x20, 8, 1, 0, 5, 0x27, 0, 0, 0, 50];
    let ack = handshake(&mut c, io, &o, &mut peer, &connack)
        .await
        .unwrap();
    assert_eq!((ack.resent, ack.dropped), (1, 1), "{ack:?}");
    // Only the small message, with DUP.
    let mut dup = first.clone();
    dup[0] |= 0x08;
    assert_eq!(peer.packet().await, dup);
    assert!(
        peer.silent().await,
        "a packet above the server's maximum was sent"
    );
    assert_eq!(c.store().len(), 1, "the dropped message left the session");
    assert_eq!(c.inflight(), 1);
    // A message from the server is queued, but the report comes first.
    peer.send(&publish(Protocol::V5, 0, 0, false, b"m")).await;
    assert_eq!(
        next(&mut c).await,
        Err(Error::Rejected {
            pid: big,
            reason: 0x95
        })
    );
    assert!(c.is_connected());
    assert_eq!(next(&mut c).await.unwrap(), Ev::msg("t", b"m", 0));
    let [hi, lo] = small.to_be_bytes();
    peer.send(&[0x40, 2, hi, lo]).await;
    assert_eq!(next(&mut c).await.unwrap(), Ev::PubAck(small));
    assert_eq!((c.inflight(), c.store().len()), (0, 0));
    // Nothing else is reported, and the next reconnect resends nothing.
    drop(c.take_transport());
    let (io, mut peer) = pipe(4096);
    let ack = handshake(&mut c, io, &o, &mut peer, &connack)
        .await
        .unwrap();
    assert_eq!((ack.resent, ack.dropped), (0, 0));
    assert!(peer.silent().await);
}

/// A stored message above the new server's Maximum QoS (MQTT-3.2.2-11) is dropped the same
/// way, with 0x9B (QoS not supported); a QoS 2 message already at PUBREL continues.
#[cfg(feature = "v5")]
#[tokio::test]
async fn a_resend_respects_the_new_maximum_qos() {
    let mut flash = Flash::default();
    let (mut tx, mut rx) = ([0u8; 256], [0u8; 256]);
    let mut c: Client<'_, Pipe, _, _> =
        Client::new(TokioClock::new(), &mut flash, &mut tx, &mut rx);
    let o = persistent("c", Protocol::V5);
    let (io, mut peer) = pipe(4096);
    handshake(&mut c, io, &o, &mut peer, &[0x20, 3, 0, 0, 0])
        .await
        .unwrap();
    let released = c.publish("t", b"r", QoS::ExactlyOnce, false).await.unwrap();
    peer.packet().await;
    let [hi, lo] = released.to_be_bytes();
    peer.send(&[0x50, 2, hi, lo]).await;
    assert_eq!(next(&mut c).await.unwrap(), Ev::PubRec(released));
    assert_eq!(peer.packet().await, [0x62, 2, hi, lo]);
    let two = c.publish("t", b"2", QoS::ExactlyOnce, false).await.unwrap();
    peer.packet().await;
    let one = c.publish("t", b"1", QoS::AtLeastOnce, false).await.unwrap();
    let sent_one = peer.packet().await;
    drop(c.take_transport());

    // Session present, Maximum QoS 1.
    let (io, mut peer) = pipe(4096);
    let connack = [0x20, 5, 1, 0, 2, 0x24, 1];
    let ack = handshake(&mut c, io, &o, &mut peer, &connack)
        .await
        .unwrap();
    assert_eq!((ack.resent, ack.dropped), (2, 1), "{ack:?}");
    assert_eq!(peer.packet().await, [0x62, 2, hi, lo]);
    let mut dup = sent_one.clone();
    dup[0] |= 0x08;
    assert_eq!(peer.packet().await, dup);
    assert!(
        peer.silent().await,
        "a QoS 2 PUBLISH went to a QoS 1 server"
    );
    assert_eq!(
        next(&mut c).await,
        Err(Error::Rejected {
            pid: two,
            reason: 0x9B
        })
    );
    peer.send(&[0x70, 2, hi, lo]).await;
    assert_eq!(next(&mut c).await.unwrap(), Ev::PubComp(released));
    let [ohi, olo] = one.to_be_bytes();
    peer.send(&[0x40, 2, ohi, olo]).await;
    assert_eq!(next(&mut c).await.unwrap(), Ev::PubAck(one));
    assert_eq!(c.inflight(), 0);
    drop(c);
    assert!(flash.0.is_empty(), "{:?}", flash.0);
}

/// Stored messages beyond the new server's Receive Maximum wait (MQTT-4.9.0-2): the first
/// ones are resent at connect, each later one by `poll` once an acknowledgement makes room,
/// in the original order; new QoS 1/2 messages wait behind them.
#[cfg(feature = "v5")]
#[tokio::test]
async fn a_resend_respects_the_new_receive_maximum() {
    let mut b = Bufs::std();
    let mut c = b.client();
    let o = persistent("c", Protocol::V5);
    let (io, mut peer) = pipe(4096);
    handshake(&mut c, io, &o, &mut peer, &[0x20, 3, 0, 0, 0])
        .await
        .unwrap();
    let mut sent = Vec::new();
    for i in 0..4u8 {
        let pid = c.publish("t", &[i], QoS::AtLeastOnce, false).await.unwrap();
        let mut pkt = peer.packet().await;
        pkt[0] |= 0x08;
        sent.push((pid, pkt));
    }
    drop(c.take_transport());

    // Session present, Receive Maximum 2.
    let (io, mut peer) = pipe(4096);
    let connack = [0x20, 6, 1, 0, 3, 0x21, 0, 2];
    let ack = handshake(&mut c, io, &o, &mut peer, &connack)
        .await
        .unwrap();
    assert_eq!((ack.resent, ack.dropped), (2, 0), "{ack:?}");
    assert_eq!(peer.packet().await, sent[0].1);
    assert_eq!(peer.packet().await, sent[1].1);
    assert!(peer.silent().await, "more than Receive Maximum in flight");
    assert_eq!(c.inflight(), 4);
    assert_eq!(
        c.publish("t", b"new", QoS::AtLeastOnce, false).await,
        Err(Error::InflightFull)
    );
    for (i, (pid, _)) in sent.iter().enumerate() {
        let [hi, lo] = pid.to_be_bytes();
        peer.send(&[0x40, 2, hi, lo]).await;
        assert_eq!(next(&mut c).await.unwrap(), Ev::PubAck(*pid));
        if let Some((_, pkt)) = sent.get(i + 2) {
            // The next call sends the next stored message.
            let (r, p) = tokio::join!(
                tokio::time::timeout(Duration::from_millis(100), c.poll()),
                peer.packet()
            );
            assert!(r.is_err(), "unexpected event");
            assert_eq!(&p, pkt);
            assert!(peer.silent().await);
        }
    }
    assert_eq!(c.inflight(), 0);
    let pid = c
        .publish("t", b"new", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    assert_eq!(peer.packet().await[0], 0x32);
    assert!(!sent.iter().any(|(p, _)| *p == pid));
}
