//! roost-client driven by a hostile server: the fuzzer's bytes are the server's side of the
//! connection and a script of what the application and the network do (connect, publish at
//! each QoS, subscribe, unsubscribe, poll, disconnect; deliver bytes, move the clock, limit
//! writes, close or break the connection). Futures left pending are dropped, as a `select`
//! would. Checked: no panic or endless loop, every byte the client writes is a packet the
//! broker's decoder accepts, and the events agree with the messages in flight (see
//! `roost_fuzz::ledger`).
//!
//! Input: a flags byte (bit 0 MQTT 5.0, bit 1 clean session, bit 2 answer the first CONNECT
//! with a CONNACK, bit 3 session present in it, bit 4 limited write room, bits 5-7 keep alive
//! in steps of 3 s), receive buffer, transmit buffer, store and read sizes, then one
//! operation per byte (see [`Op`]).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use roost::codec::{AckKind, Decoder, Packet, ReasonCode};
use roost_client::{Client, ConnectOptions, Protocol, QoS, RamStore, Subscription, Will};
use roost_fuzz::decoding::{End, LARGE, drain};
use roost_fuzz::exec::drive;
use roost_fuzz::hostile::{ManualClock, Server, Transport};
use roost_fuzz::input::Input;
use roost_fuzz::ledger::Ledger;

type Fuzzed<'b> = Client<'b, Transport, ManualClock, RamStore<'b>>;

/// Operations 0 to 4 happen around the client (and may happen while one of its futures is
/// pending); 5 to 11 are calls on the client. The byte's value divided by 12 is the argument.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// The server sends the next `n` bytes of input (`n` is the next byte).
    Send,
    /// The clock moves by (argument + 1) * 700 ms.
    Advance,
    /// The client may write argument * 4 + 1 more bytes (with limited write room).
    Grant,
    /// The server closes the connection.
    Close,
    /// The connection breaks.
    Break,
    Poll,
    Publish,
    Subscribe,
    Unsubscribe,
    /// A new connection and `connect`; argument bit 0: the server answers CONNACK, bit 1: with
    /// session present.
    Connect,
    Disconnect,
    TakeTransport,
}

impl Op {
    fn from(b: u8) -> (Op, u8) {
        const OPS: [Op; 12] = [
            Op::Send,
            Op::Advance,
            Op::Grant,
            Op::Close,
            Op::Break,
            Op::Poll,
            Op::Publish,
            Op::Subscribe,
            Op::Unsubscribe,
            Op::Connect,
            Op::Disconnect,
            Op::TakeTransport,
        ];
        (OPS[usize::from(b % 12)], b / 12)
    }

    fn is_around(self) -> bool {
        matches!(
            self,
            Op::Send | Op::Advance | Op::Grant | Op::Close | Op::Break
        )
    }
}

/// The settings from the input's first bytes.
struct Setup {
    v5: bool,
    clean: bool,
    first_connack: Option<bool>,
    write_room: Option<usize>,
    keep_alive: u16,
    rx: usize,
    tx: usize,
    store: usize,
    read_max: usize,
}

impl Setup {
    fn read(input: &mut Input<'_>) -> Setup {
        let flags = input.byte();
        Setup {
            v5: flags & 1 != 0,
            clean: flags & 2 != 0,
            first_connack: (flags & 4 != 0).then_some(flags & 8 != 0),
            write_room: (flags & 16 != 0).then_some(64),
            keep_alive: u16::from(flags >> 5) * 3,
            rx: 16 + usize::from(input.byte()),
            tx: 16 + usize::from(input.byte()),
            store: usize::from(input.byte()) * 8,
            read_max: usize::from(input.byte()) + 1,
        }
    }

    fn options(&self) -> ConnectOptions<'static> {
        let mut o = ConnectOptions::new("fuzz");
        o.protocol = if self.v5 {
            Protocol::V5
        } else {
            Protocol::V311
        };
        o.keep_alive_secs = self.keep_alive;
        o.clean_session = self.clean;
        o.session_expiry_secs = if self.clean { 0 } else { 60 };
        o.username = Some("u");
        o.password = Some(b"p");
        o.will = Some(Will {
            topic: "w",
            payload: b"x",
            qos: QoS::AtLeastOnce,
            retain: false,
        });
        o.connect_timeout_ms = 1000;
        o
    }

    /// A successful CONNACK in the client's version.
    fn connack(&self, session_present: bool) -> Vec<u8> {
        let mut p = vec![0x20, 2, u8::from(session_present), 0];
        if self.v5 {
            p[1] = 3;
            p.push(0);
        }
        p
    }
}

/// Everything around the client: the input, the connection, the clock, and the checks.
struct World<'a> {
    input: Input<'a>,
    setup: Setup,
    input_len: usize,
    server: Server,
    clock: ManualClock,
    /// What the client wrote on this connection and the broker decoder that reads it.
    written: BytesMut,
    reader: Decoder,
    ledger: Ledger,
}

impl World<'_> {
    /// Applies the next operation if it happens around the client; `false` otherwise.
    fn around(&mut self) -> bool {
        let Some((op, arg)) = self.input.peek().map(Op::from) else {
            return false;
        };
        if !op.is_around() {
            return false;
        }
        self.input.byte();
        match op {
            Op::Send => {
                let n = usize::from(self.input.byte());
                self.server.send(self.input.take(n));
            }
            Op::Advance => self.clock.advance((u64::from(arg) + 1) * 700),
            Op::Grant => self.server.grant(usize::from(arg) * 4 + 1),
            Op::Close => self.server.close(),
            _ => self.server.break_link(),
        }
        true
    }

    /// A new connection, whose server first sends a CONNACK if `connack` says so.
    fn new_server(&mut self, connack: Option<bool>) -> Server {
        let s = &self.setup;
        self.server = Server::new(s.read_max, s.write_room, self.input_len);
        if let Some(session_present) = connack {
            self.server.send(&self.setup.connack(session_present));
        }
        self.written.clear();
        self.reader = Decoder::server(LARGE);
        self.ledger.connection_lost();
        self.server.clone()
    }

    /// Reads what the client wrote: it must decode; PUBCOMP completes an incoming message.
    fn check_written(&mut self) {
        self.written.extend_from_slice(&self.server.written());
        let mut packets = Vec::new();
        if let Some(End::Failed(e)) = drain(&mut self.reader, &mut self.written, &mut packets) {
            panic!("the client wrote a packet the broker rejects: {e}");
        }
        for p in packets {
            if let Packet::Ack(a) = p
                && a.kind == AckKind::PubComp
                && a.reason == ReasonCode::SUCCESS
            {
                self.ledger.completed_incoming(a.packet_id);
            }
        }
    }
}

fn connect(c: &mut Fuzzed<'_>, w: &mut World<'_>, connack: Option<bool>) {
    let opts = w.setup.options();
    let transport = w.new_server(connack).transport();
    if opts.clean_session {
        w.ledger.session_discarded();
    }
    let r = drive(c.connect(transport, &opts), || w.around());
    if let Some(Ok(ack)) = r
        && !ack.session_present
    {
        w.ledger.session_discarded();
    }
}

/// Runs one call on the client.
fn call(c: &mut Fuzzed<'_>, w: &mut World<'_>, op: Op, arg: u8) {
    const TOPICS: [&str; 3] = ["t/#", "+/x", "t/x"];
    let qos = match arg % 3 {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    };
    match op {
        Op::Poll => {
            let inflight = c.inflight();
            let r = drive(c.poll(), || w.around());
            w.check_written();
            if let Some(r) = r {
                w.ledger.polled(&r, inflight);
            }
        }
        Op::Publish => {
            let payload = [0x5a; 96];
            let payload = &payload[..usize::from(arg / 3) * 12];
            let r = drive(c.publish("t/x", payload, qos, arg & 1 != 0), || w.around());
            if let Some(Ok(pid)) = r {
                w.ledger.published(qos, pid);
            }
        }
        Op::Subscribe => {
            let first = Subscription::new(TOPICS[usize::from(arg / 3) % 3], qos);
            let subs = [first, Subscription::new("a/b", QoS::AtLeastOnce)];
            let n = 1 + usize::from(arg >= 9);
            let _ = drive(c.subscribe(&subs[..n]), || w.around());
        }
        Op::Unsubscribe => {
            let _ = drive(c.unsubscribe(&TOPICS[..1 + usize::from(arg) % 3]), || {
                w.around()
            });
        }
        Op::Connect => connect(c, w, (arg & 1 != 0).then_some(arg & 2 != 0)),
        Op::Disconnect => {
            let _ = drive(c.disconnect(), || w.around());
        }
        Op::TakeTransport => drop(c.take_transport()),
        _ => unreachable!("operations around the client are not calls"),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let setup = Setup::read(&mut input);
    let (mut rx, mut tx, mut store) = (vec![0; setup.rx], vec![0; setup.tx], vec![0; setup.store]);
    let first_connack = setup.first_connack;
    let mut w = World {
        input,
        input_len: data.len(),
        server: Server::new(1, None, 0),
        clock: ManualClock::default(),
        written: BytesMut::new(),
        reader: Decoder::server(LARGE),
        ledger: Ledger::default(),
        setup,
    };
    let mut c = Client::new(w.clock.clone(), RamStore::new(&mut store), &mut tx, &mut rx);
    connect(&mut c, &mut w, first_connack);
    while !w.input.is_empty() {
        if !w.around() {
            let (op, arg) = Op::from(w.input.byte());
            call(&mut c, &mut w, op, arg);
        }
        w.check_written();
        if !c.is_connected() {
            w.ledger.connection_lost();
        }
        w.ledger.check(c.inflight());
    }
});
