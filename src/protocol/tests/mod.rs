//! Unit tests of the protocol core: clients made of bytes, a broker without sockets or
//! store, and time that moves only when a test moves it. Store commits are carried out by the
//! test, so the order of commit and acknowledgement is visible.

mod ack_after_commit;
mod connect;
mod deliver;
mod ending;
mod errors;
mod flow;
mod inbound;
mod shared;
mod timers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::broker::AccessControl;
use crate::broker::{Broker, ConnLink};
use crate::clock::Clock;
use crate::codec::{
    self, AckKind, Connect, Decoder, Packet, PubAckLike, Publish, PublishProperties, QoS,
    ReasonCode, Subscribe, Version,
};
use crate::config::{Config, QueueFullPolicy};
use crate::store::Op;

use super::{AwaitingConnect, Close, Connected};

/// A broker for core tests; `durable` makes it record durable sessions (without a store).
struct World {
    broker: Arc<Broker>,
    /// The broker's clock, moved by hand...
    clock: Clock,
    /// ...and its time.
    now: Instant,
    next_link: u64,
    /// Timers the broker starts (session expiry, will delay) are spawned here; they never run,
    /// since nothing drives this runtime between the steps of a test.
    rt: tokio::runtime::Runtime,
}

impl World {
    fn new(durable: bool, adjust: impl FnOnce(&mut Config)) -> World {
        let clock = Clock::manual();
        let mut config = Config {
            in_memory: !durable,
            clock: clock.clone(),
            ..Config::default()
        };
        adjust(&mut config);
        let access = AccessControl::load(&config).expect("no auth files");
        let broker = if durable {
            Broker::recording(config, access)
        } else {
            Broker::new(config, None, access)
        };
        World {
            broker,
            now: clock.now(),
            clock,
            next_link: 1,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
        }
    }

    fn memory() -> World {
        World::new(false, |_| {})
    }

    fn durable() -> World {
        World::new(true, |_| {})
    }

    fn advance(&mut self, by: Duration) {
        self.clock.advance(by);
        self.now = self.clock.now();
    }

    /// Connects a client the way the connection task does, without authentication.
    fn connect(&mut self, connect: Connect) -> Client {
        let (client, connack) = self.try_connect(connect);
        match connack {
            Packet::ConnAck(c) => assert_eq!(c.code, ReasonCode::SUCCESS),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        client
    }

    /// Accepts `connect` (sent as bytes) the way the driver does, and hands back the core,
    /// before anything is committed or written, with the connection's link.
    fn accept_linked(&mut self, connect: Connect) -> (Connected, ConnLink) {
        let version = connect.version;
        let mut awaiting = AwaitingConnect::new(
            Arc::clone(&self.broker),
            peer(),
            QueueFullPolicy::Backpressure,
        );
        let mut input = BytesMut::new();
        codec::encode(
            &Packet::Connect(Box::new(connect)),
            version,
            None,
            &mut input,
        )
        .expect("encodes");
        let connect = awaiting
            .read_connect(&mut input)
            .expect("a CONNECT")
            .expect("complete");
        let plan = awaiting.plan(&connect).expect("acceptable");
        let link = ConnLink::new(self.next_link);
        self.next_link += 1;
        let (session, present) = self
            .rt
            .block_on(
                self.broker
                    .attach(&plan.request, &link, awaiting.pending_mut()),
            )
            .expect("attaches");
        let core = awaiting.accept(*connect, plan, session, present, None, self.now);
        (core, link)
    }

    /// [`World::accept_linked`] without the link.
    fn accept(&mut self, connect: Connect) -> Connected {
        self.accept_linked(connect).0
    }

    /// Connects and returns the client with its CONNACK.
    fn try_connect(&mut self, connect: Connect) -> (Client, Packet) {
        let version = connect.version;
        let (core, link) = self.accept_linked(connect);
        let mut client = Client {
            core,
            link,
            decoder: Decoder::client(version, usize::MAX),
            version,
            commits: Vec::new(),
            auto_commit: true,
            early: Vec::new(),
        };
        let mut packets = client.step(self.now).expect("CONNACK goes out");
        assert!(!packets.is_empty(), "CONNACK");
        let connack = packets.remove(0);
        client.early = packets;
        (client, connack)
    }
}

/// A client on the far side of a core: encodes what it sends, decodes what it gets.
struct Client {
    core: Connected,
    link: ConnLink,
    decoder: Decoder,
    version: Version,
    /// Every batch of store operations the core asked to commit.
    commits: Vec<Vec<Op>>,
    /// Commit every batch as soon as it is asked for.
    auto_commit: bool,
    /// Packets that came out with the CONNACK (resends), returned by the next `output`.
    early: Vec<Packet>,
}

impl Client {
    /// Sends packets (as bytes) and runs one cycle of the driver; returns what came out.
    fn send(&mut self, packets: &[Packet], now: Instant) -> Result<Vec<Packet>, Close> {
        let mut input = BytesMut::new();
        for p in packets {
            codec::encode(p, self.version, None, &mut input).expect("encodes");
        }
        self.send_bytes(&mut input, now)
    }

    fn send_bytes(&mut self, input: &mut BytesMut, now: Instant) -> Result<Vec<Packet>, Close> {
        self.core.handle_input(input, now)?;
        self.step(now)
    }

    /// One driver cycle without input: transmit, commit, and collect the output.
    fn step(&mut self, now: Instant) -> Result<Vec<Packet>, Close> {
        self.core.poll_transmit(now);
        if self.auto_commit
            && let Some(commit) = self.core.poll_commit()
        {
            self.commits.push(commit.ops);
            self.core.committed(true)?;
        }
        Ok(self.output())
    }

    /// Decodes the output the core lets out now.
    fn output(&mut self) -> Vec<Packet> {
        let mut packets = std::mem::take(&mut self.early);
        let Some(out) = self.core.output() else {
            return packets;
        };
        let mut bytes = std::mem::take(out);
        while let Some(p) = self
            .decoder
            .decode(&mut bytes)
            .expect("the core writes valid MQTT")
        {
            packets.push(p);
        }
        assert!(bytes.is_empty(), "no partial packet");
        packets
    }

    /// Ends the connection the way the driver does and detaches the session.
    fn close(mut self, world: &World, close: Close) -> (Option<codec::Will>, Vec<Packet>) {
        let ending = self.core.end(close);
        let last = self.output();
        let _inside = world.rt.enter();
        world.broker.detach(&ending.session, self.link.id);
        (ending.will, last)
    }
}

fn peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40000))
}

fn connect(version: Version, client_id: &str) -> Connect {
    Connect::new(version, client_id)
}

/// A CONNECT for a session that outlives its connection.
fn durable(version: Version, client_id: &str) -> Connect {
    Connect {
        clean_start: false,
        session_expiry_interval: 3600,
        ..connect(version, client_id)
    }
}

fn publish(topic: &str, qos: QoS, packet_id: u16, payload: &'static [u8]) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.to_string(),
        packet_id,
        payload: Bytes::from_static(payload),
        properties: PublishProperties::default(),
        topic_alias: None,
        subscription_identifiers: Vec::new(),
    })
}

fn subscribe(packet_id: u16, filter: &str, qos: QoS) -> Packet {
    Packet::Subscribe(Subscribe::single(packet_id, filter, qos))
}

fn ack(kind: AckKind, packet_id: u16) -> Packet {
    Packet::Ack(PubAckLike {
        kind,
        packet_id,
        reason: ReasonCode::SUCCESS,
        reason_string: None,
    })
}

/// The one packet in `packets`.
fn only(mut packets: Vec<Packet>) -> Packet {
    assert_eq!(packets.len(), 1, "exactly one packet: {packets:?}");
    packets.remove(0)
}

/// The acknowledgement in `packet`.
fn as_ack(packet: Packet) -> PubAckLike {
    match packet {
        Packet::Ack(a) => a,
        other => panic!("expected an acknowledgement, got {other:?}"),
    }
}

fn as_publish(packet: Packet) -> Publish {
    match packet {
        Packet::Publish(p) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

/// A subscriber on `filter` at `qos`, with its SUBACK checked.
fn subscriber(world: &mut World, c: Connect, filter: &str, qos: QoS) -> Client {
    let mut client = world.connect(c);
    let got = client
        .send(&[subscribe(1, filter, qos)], world.now)
        .expect("subscribes");
    match only(got) {
        Packet::SubAck(s) => assert_eq!(s.codes, vec![ReasonCode(qos as u8)]),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    client
}
