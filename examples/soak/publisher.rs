//! A publisher: one topic, one QoS, a dense sequence number in every payload, a bounded
//! window of unacknowledged messages, and a session that survives its disconnects.
//!
//! A durable publisher resumes after every lost connection as MQTT asks: unacknowledged
//! PUBLISH packets are sent again with DUP=1 and the same packet id, and a PUBREL is sent
//! again for every QoS 2 message whose PUBREC arrived, all in their original order. A
//! clean-session publisher gives up what was in flight (recorded as abandoned).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::RngExt;
use rand::rngs::StdRng;
use tokio::time::{Instant, MissedTickBehavior};

use super::conn::Conn;
use super::ledger::{self, Fate};
use super::shared::{Phase, Shared};
use super::wire::{AckKind, ConnectSpec, Incoming, Publish, Version};

/// How often an idle client pings, and how long it waits for any answer.
pub const PING_EVERY: Duration = Duration::from_secs(5);
/// Silence after a PINGREQ that counts as an unresponsive broker.
pub const PING_WAIT: Duration = Duration::from_secs(30);

/// What a publisher does.
#[derive(Debug, Clone)]
pub struct PublisherSpec {
    /// Ledger id.
    pub id: u32,
    /// Client id.
    pub name: String,
    /// Protocol version.
    pub version: Version,
    /// QoS of its messages.
    pub qos: u8,
    /// Durable session (resumes its handshakes) or clean session.
    pub durable: bool,
    /// Its topic.
    pub topic: String,
    /// Messages per second.
    pub rate: f64,
    /// Largest number of unacknowledged messages.
    pub window: usize,
    /// Seconds between voluntary disconnects (min, max), if it makes any.
    pub reconnect_every: Option<(f64, f64)>,
    /// Payload sizes (min, max), bytes.
    pub payload: (usize, usize),
}

/// One unacknowledged message.
struct InFlight {
    packet_id: u16,
    /// PUBREC received, PUBREL sent.
    released: bool,
    payload: Bytes,
}

/// The publisher's session state.
struct Session {
    inflight: BTreeMap<u64, InFlight>,
    by_packet_id: HashMap<u16, u64>,
    next_packet_id: u16,
    next_seq: u64,
}

impl Session {
    fn packet_id(&mut self) -> u16 {
        loop {
            self.next_packet_id = self.next_packet_id.wrapping_add(1).max(1);
            if !self.by_packet_id.contains_key(&self.next_packet_id) {
                return self.next_packet_id;
            }
        }
    }
}

/// Runs a publisher until the run reaches [`Phase::Finish`] and everything it sent is
/// settled. Returns the number of connections it made.
pub async fn run(shared: Arc<Shared>, spec: PublisherSpec, mut rng: StdRng) -> u64 {
    let mut session = Session {
        inflight: BTreeMap::new(),
        by_packet_id: HashMap::new(),
        next_packet_id: 0,
        next_seq: 0,
    };
    let connect = ConnectSpec {
        client_id: spec.name.clone(),
        clean: !spec.durable,
        keep_alive: 60,
        session_expiry: if spec.durable { 3600 } else { 0 },
    };
    let mut connections = 0u64;
    loop {
        if shared.phase() >= Phase::Finish && session.inflight.is_empty() {
            return connections;
        }
        let Some((mut conn, present)) = shared.connect(spec.version, &connect).await else {
            return connections;
        };
        connections += 1;
        if spec.durable && connections > 1 && !present {
            shared.findings.violation(
                "durable session lost",
                format!(
                    "{} reconnected at {} ms with Session Present 0; {} in flight given up",
                    spec.name,
                    shared.now_ms(),
                    session.inflight.len()
                ),
            );
            abandon(&shared, &spec, &mut session);
        }
        // Resume in the original order.
        for f in session.inflight.values() {
            if f.released {
                conn.queue_ack(AckKind::Pubrel, f.packet_id);
            } else {
                conn.queue_publish(&message(&spec, f, true));
            }
        }
        let end = connected(&shared, &spec, &mut rng, &mut session, &mut conn).await;
        match end {
            End::Finished => {
                conn.close().await;
                return connections;
            }
            End::Lost => {}
            End::Voluntary { polite } => {
                if polite {
                    conn.close().await;
                } else {
                    drop(conn);
                }
                let offline = rng.random_range(0.2..2.0);
                tokio::time::sleep(Duration::from_secs_f64(offline)).await;
            }
        }
        if !spec.durable {
            abandon(&shared, &spec, &mut session);
        }
    }
}

/// How a connection ended.
enum End {
    /// Everything settled after the workload stopped.
    Finished,
    /// The connection failed (the broker was killed, most likely).
    Lost,
    /// A planned disconnect: with DISCONNECT (`polite`) or by closing the socket.
    Voluntary { polite: bool },
}

fn message(spec: &PublisherSpec, f: &InFlight, dup: bool) -> Publish {
    Publish {
        dup,
        qos: spec.qos,
        retain: false,
        topic: spec.topic.clone(),
        packet_id: f.packet_id,
        payload: f.payload.clone(),
    }
}

/// Gives up everything in flight: it may or may not have been delivered.
fn abandon(shared: &Shared, spec: &PublisherSpec, session: &mut Session) {
    let now = shared.now_ms();
    for seq in session.inflight.keys() {
        shared.ledger.settle(spec.id, *seq, Fate::Abandoned, now);
    }
    session.inflight.clear();
    session.by_packet_id.clear();
}

/// One connection's life.
async fn connected(
    shared: &Shared,
    spec: &PublisherSpec,
    rng: &mut StdRng,
    session: &mut Session,
    conn: &mut Conn,
) -> End {
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / spec.rate));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let far = Instant::now() + Duration::from_secs(1 << 20);
    let leave_at = spec.reconnect_every.map_or(far, |(lo, hi)| {
        Instant::now() + Duration::from_secs_f64(rng.random_range(lo..hi))
    });
    let mut last_ping = Instant::now();
    let mut ping_outstanding: Option<Instant> = None;
    if let Err(e) = conn.flush().await {
        shared.connection_lost(&spec.name, &e);
        return End::Lost;
    }
    loop {
        tokio::select! {
            r = conn.recv() => match r {
                Ok(packet) => {
                    ping_outstanding = None;
                    on_packet(shared, spec, session, conn, packet);
                }
                Err(e) => {
                    shared.connection_lost(&spec.name, &e);
                    return End::Lost;
                }
            },
            _ = ticker.tick() => {
                let phase = shared.phase();
                if phase >= Phase::Finish && session.inflight.is_empty() {
                    return End::Finished;
                }
                if phase == Phase::Run && session.inflight.len() < spec.window {
                    send_new(shared, spec, rng, session, conn);
                }
                if let Some(since) = ping_outstanding
                    && since.elapsed() > PING_WAIT
                {
                    shared.findings.violation(
                        "broker unresponsive",
                        format!("{}: no PINGRESP within {PING_WAIT:?} at {} ms", spec.name, shared.now_ms()),
                    );
                    return End::Lost;
                }
                if last_ping.elapsed() > PING_EVERY {
                    conn.queue_ping();
                    last_ping = Instant::now();
                    ping_outstanding.get_or_insert(last_ping);
                }
            },
            _ = tokio::time::sleep_until(leave_at), if shared.phase() == Phase::Run => {
                return End::Voluntary { polite: rng.random_bool(0.5) };
            }
        }
        if let Err(e) = conn.flush().await {
            shared.connection_lost(&spec.name, &e);
            return End::Lost;
        }
    }
}

/// Sends the next sequence number.
fn send_new(
    shared: &Shared,
    spec: &PublisherSpec,
    rng: &mut StdRng,
    session: &mut Session,
    conn: &mut Conn,
) {
    let seq = session.next_seq;
    session.next_seq += 1;
    let len = rng.random_range(spec.payload.0..=spec.payload.1);
    let payload = ledger::payload(spec.id, seq, len);
    let packet_id = if spec.qos > 0 { session.packet_id() } else { 0 };
    let f = InFlight {
        packet_id,
        released: false,
        payload,
    };
    conn.queue_publish(&message(spec, &f, false));
    shared.ledger.sent(spec.id, seq, shared.now_ms());
    if spec.qos > 0 {
        session.by_packet_id.insert(packet_id, seq);
        session.inflight.insert(seq, f);
    }
}

/// Handles a packet from the broker.
fn on_packet(
    shared: &Shared,
    spec: &PublisherSpec,
    session: &mut Session,
    conn: &mut Conn,
    packet: Incoming,
) {
    let Incoming::Ack {
        kind,
        packet_id,
        reason,
    } = packet
    else {
        if let Incoming::Disconnect { reason } = packet {
            shared.findings.note(
                "DISCONNECT from the broker",
                format!("{}: reason 0x{reason:02x}", spec.name),
            );
        } else if packet != Incoming::PingResp {
            shared
                .findings
                .note("unexpected packet", format!("{}: {packet:?}", spec.name));
        }
        return;
    };
    let Some(&seq) = session.by_packet_id.get(&packet_id) else {
        shared.findings.note(
            "acknowledgement for an unknown packet id",
            format!("{}: {kind:?} {packet_id}", spec.name),
        );
        return;
    };
    let now = shared.now_ms();
    let settle = |session: &mut Session, fate: Fate| {
        session.by_packet_id.remove(&packet_id);
        session.inflight.remove(&seq);
        shared.ledger.settle(spec.id, seq, fate, now);
    };
    match (kind, spec.qos) {
        (AckKind::Puback, 1) if reason < 0x80 => settle(session, Fate::Acked),
        (AckKind::Puback, 1) | (AckKind::Pubrec, 2) if reason >= 0x80 => {
            settle(session, Fate::Refused);
        }
        (AckKind::Pubrec, 2) => {
            if let Some(f) = session.inflight.get_mut(&seq) {
                f.released = true;
            }
            conn.queue_ack(AckKind::Pubrel, packet_id);
        }
        (AckKind::Pubcomp, 2) if session.inflight.get(&seq).is_some_and(|f| f.released) => {
            settle(session, Fate::Acked);
        }
        _ => shared.findings.violation(
            "acknowledgement out of protocol",
            format!(
                "{} (QoS {}): {kind:?} 0x{reason:02x} for packet id {packet_id} (seq {seq})",
                spec.name, spec.qos
            ),
        ),
    }
}
