//! Subscribers: durable ones (3.1.1 `clean_session=0`, 5.0 Session Expiry > 0) that keep
//! their subscription across disconnects and broker restarts, and clean ones that subscribe
//! anew on every connection.
//!
//! Every delivery is checked as it arrives (payload intact, topic and QoS match the
//! publisher, no QoS 2 or QoS 0 repeat, first deliveries in order) and recorded in a
//! [`Tally`]. QoS 2 deliveries follow the receiver's side of the handshake: a packet id
//! awaiting PUBREL is delivered once however often it is sent, and a durable subscriber
//! keeps those ids across reconnects as its session state.
//!
//! A clean subscriber checks each connection (a "window") it ends itself: every QoS 1/2
//! message sent after its SUBACK and acknowledged to its publisher before the end must have
//! arrived. A window the broker's death ends is not checked.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::RngExt;
use rand::rngs::StdRng;
use tokio::time::Instant;

use super::conn::Conn;
use super::ledger;
use super::publisher::{PING_EVERY, PING_WAIT};
use super::shared::{Phase, Shared};
use super::tally::{Delivery, Tally};
use super::wire::{AckKind, ConnectSpec, Incoming, Publish, Version};

/// How long a subscriber waits for what it is owed before it ends a window.
const WINDOW_WAIT: Duration = Duration::from_secs(20);

/// What a subscriber does.
#[derive(Debug, Clone)]
pub struct SubscriberSpec {
    /// Client id.
    pub name: String,
    /// Protocol version.
    pub version: Version,
    /// Durable session or clean session.
    pub durable: bool,
    /// Filters and their maximum QoS.
    pub filters: Vec<(String, u8)>,
    /// Seconds between voluntary disconnects (min, max), if it makes any.
    pub reconnect_every: Option<(f64, f64)>,
    /// Seconds offline after a voluntary disconnect (min, max).
    pub offline: (f64, f64),
}

/// What a subscriber reports at the end.
#[derive(Debug, Clone)]
pub struct SubscriberResult {
    /// Its spec.
    pub spec: SubscriberSpec,
    /// Granted QoS per filter, from its first SUBACK.
    pub granted: Vec<u8>,
    /// Its deliveries.
    pub tally: Tally,
    /// Deliveries with DUP=1.
    pub dup_flag: u64,
    /// Connections made.
    pub connections: u64,
    /// Clean subscriber: windows checked, windows ended by the broker's death, messages
    /// asserted in checked windows.
    pub windows: (u64, u64, u64),
    /// Durable subscriber: whether it received everything owed before the drain ended.
    pub drained: bool,
}

/// A subscriber with its session state.
struct Sub {
    spec: SubscriberSpec,
    shared: Arc<Shared>,
    tally: Tally,
    /// QoS 2 packet ids received and not yet released, with the stamp they carried.
    awaiting_release: HashMap<u16, Option<(u32, u64)>>,
    granted: Vec<u8>,
    dup_flag: u64,
    connections: u64,
    windows: (u64, u64, u64),
}

/// Connects a durable subscriber for the first time (a fresh session) and subscribes.
/// Called before any publisher starts, so its subscriptions predate every message.
pub async fn setup(shared: &Shared, spec: &SubscriberSpec) -> Result<(Conn, Vec<u8>), String> {
    let connect = ConnectSpec {
        client_id: spec.name.clone(),
        // 3.1.1 has no way to ask for a fresh durable session; the store is new anyway.
        clean: spec.version == Version::V5,
        keep_alive: 60,
        session_expiry: if spec.durable { 3600 } else { 0 },
    };
    let (mut conn, _) = Conn::open(shared.addr, spec.version, &connect)
        .await
        .map_err(|e| format!("{}: {e}", spec.name))?;
    let (granted, early) = conn
        .subscribe(&spec.filters)
        .await
        .map_err(|e| format!("{}: {e}", spec.name))?;
    if !early.is_empty() || granted.iter().any(|g| *g > 2) {
        return Err(format!("{}: SUBACK {granted:?} after {early:?}", spec.name));
    }
    Ok((conn, granted))
}

/// Runs a subscriber: `first` is the connection made by [`setup`] (durable subscribers) or
/// `None` (clean subscribers connect themselves).
pub async fn run(
    shared: Arc<Shared>,
    spec: SubscriberSpec,
    first: Option<(Conn, Vec<u8>)>,
    mut rng: StdRng,
) -> SubscriberResult {
    let publishers = shared.ledger.publishers.len();
    let mut sub = Sub {
        spec: spec.clone(),
        shared: Arc::clone(&shared),
        tally: Tally::new(publishers),
        awaiting_release: HashMap::new(),
        granted: Vec::new(),
        dup_flag: 0,
        connections: 0,
        windows: (0, 0, 0),
    };
    let connect = ConnectSpec {
        client_id: spec.name.clone(),
        clean: !spec.durable,
        keep_alive: 60,
        session_expiry: if spec.durable { 3600 } else { 0 },
    };
    let mut pending = first;
    let mut drained = false;
    loop {
        let (mut conn, suback_ms) = match pending.take() {
            Some((conn, granted)) => {
                sub.granted = granted;
                sub.connections += 1;
                (conn, shared.now_ms())
            }
            None => {
                if shared.phase() == Phase::Done {
                    break;
                }
                let Some((conn, present)) = shared.connect(spec.version, &connect).await else {
                    break;
                };
                sub.connections += 1;
                match sub.resume(conn, present).await {
                    Some(c) => c,
                    None => continue,
                }
            }
        };
        match sub.connected(&mut conn, &mut rng, suback_ms).await {
            End::Lost => continue,
            End::Drained(ok) => {
                drained = ok;
                conn.close().await;
                break;
            }
            End::Voluntary { polite } => {
                if polite {
                    conn.close().await;
                } else {
                    drop(conn);
                }
                if shared.phase() >= Phase::Drain {
                    break;
                }
                let (lo, hi) = spec.offline;
                tokio::time::sleep(Duration::from_secs_f64(rng.random_range(lo..hi))).await;
            }
        }
    }
    SubscriberResult {
        spec,
        granted: sub.granted,
        tally: sub.tally,
        dup_flag: sub.dup_flag,
        connections: sub.connections,
        windows: sub.windows,
        drained,
    }
}

/// A clean subscriber's window being closed.
struct Closing {
    /// Messages (publisher, sequence number) it still waits for.
    missing: Vec<(u32, u64)>,
    /// When it stops waiting.
    until: Instant,
    /// Messages the window asserts.
    asserted: u64,
}

/// How a connection ended.
enum End {
    /// The connection failed.
    Lost,
    /// A planned disconnect, with DISCONNECT (`polite`) or by closing the socket.
    Voluntary { polite: bool },
    /// The run is over; whether everything owed arrived.
    Drained(bool),
}

impl Sub {
    /// After a (re)connect: a durable session must still be there; a clean one subscribes.
    /// Returns the connection and the time its subscription took effect.
    async fn resume(&mut self, mut conn: Conn, present: bool) -> Option<(Conn, u32)> {
        let name = &self.spec.name;
        if self.spec.durable && present {
            return Some((conn, 0));
        }
        if self.spec.durable {
            self.shared.findings.violation(
                "durable session lost",
                format!(
                    "{name} reconnected at {} ms with Session Present 0",
                    self.shared.now_ms()
                ),
            );
        } else if present {
            self.shared.findings.violation(
                "clean session resumed",
                format!("{name} got Session Present 1 for a clean session"),
            );
        }
        self.awaiting_release.clear();
        match conn.subscribe(&self.spec.filters).await {
            Ok((granted, early)) => {
                let at = self.shared.now_ms();
                if self.granted.is_empty() {
                    self.granted = granted;
                }
                for packet in early {
                    self.on_packet(&mut conn, packet);
                }
                if conn.flush().await.is_err() {
                    return None;
                }
                Some((conn, at))
            }
            Err(e) => {
                self.shared.connection_lost(name, &e);
                None
            }
        }
    }

    /// One connection's life. `suback_ms` is when a clean subscription took effect.
    async fn connected(&mut self, conn: &mut Conn, rng: &mut StdRng, suback_ms: u32) -> End {
        let far = Instant::now() + Duration::from_secs(1 << 20);
        let mut leave_at = self.spec.reconnect_every.map_or(far, |(lo, hi)| {
            Instant::now() + Duration::from_secs_f64(rng.random_range(lo..hi))
        });
        let mut ticker = tokio::time::interval(Duration::from_millis(250));
        let mut last_ping = Instant::now();
        let mut ping_outstanding: Option<Instant> = None;
        // While a window closes: the messages it still waits for, and until when.
        let mut closing: Option<Closing> = None;
        let mut drain_since: Option<(Instant, u64)> = None;
        loop {
            tokio::select! {
                r = conn.recv() => match r {
                    Ok(packet) => {
                        ping_outstanding = None;
                        self.on_packet(conn, packet);
                    }
                    Err(e) => {
                        self.shared.connection_lost(&self.spec.name, &e);
                        if closing.is_some() {
                            self.windows.1 += 1;
                        }
                        return End::Lost;
                    }
                },
                _ = ticker.tick() => {
                    if let Some(since) = ping_outstanding
                        && since.elapsed() > PING_WAIT
                    {
                        self.shared.findings.violation(
                            "broker unresponsive",
                            format!("{}: no PINGRESP within {PING_WAIT:?} at {} ms",
                                self.spec.name, self.shared.now_ms()),
                        );
                        return End::Lost;
                    }
                    if last_ping.elapsed() > PING_EVERY {
                        conn.queue_ping();
                        last_ping = Instant::now();
                        ping_outstanding.get_or_insert(last_ping);
                    }
                    if let Some(c) = &mut closing {
                        c.missing.retain(|(p, s)| !self.tally.streams[*p as usize].has(*s));
                        if c.missing.is_empty() || Instant::now() > c.until {
                            if !c.missing.is_empty() {
                                self.window_loss(&c.missing, suback_ms);
                            }
                            self.windows.0 += 1;
                            self.windows.2 += c.asserted;
                            return End::Voluntary { polite: rng.random_bool(0.5) };
                        }
                    }
                    if self.shared.phase() >= Phase::Drain {
                        if !self.spec.durable && closing.is_none() {
                            closing = Some(self.window_start(suback_ms));
                            leave_at = far;
                            continue;
                        }
                        if self.spec.durable {
                            let missing = self.missing_all();
                            let (since, best) = drain_since.get_or_insert((Instant::now(), missing));
                            if missing == 0 {
                                return End::Drained(true);
                            }
                            if missing < *best {
                                *since = Instant::now();
                                *best = missing;
                            }
                            if since.elapsed() > WINDOW_WAIT * 3 {
                                return End::Drained(false);
                            }
                        }
                    }
                },
                _ = tokio::time::sleep_until(leave_at), if closing.is_none() && self.shared.phase() == Phase::Run => {
                    if self.spec.durable {
                        return End::Voluntary { polite: rng.random_bool(0.5) };
                    }
                    closing = Some(self.window_start(suback_ms));
                }
            }
            if let Err(e) = conn.flush().await {
                self.shared.connection_lost(&self.spec.name, &e);
                if closing.is_some() {
                    self.windows.1 += 1;
                }
                return End::Lost;
            }
        }
    }

    /// Begins closing a clean subscriber's window: the messages it must still receive.
    fn window_start(&self, suback_ms: u32) -> Closing {
        let now = self.shared.now_ms();
        let mut owed = Vec::new();
        for p in &self.shared.ledger.publishers {
            if p.qos == 0 || self.max_qos_for(&p.topic) == 0 {
                continue;
            }
            for seq in self.shared.ledger.acked_window(p.id, suback_ms, now) {
                owed.push((p.id, seq));
            }
        }
        let asserted = owed.len() as u64;
        owed.retain(|(p, s)| !self.tally.streams[*p as usize].has(*s));
        Closing {
            missing: owed,
            until: Instant::now() + WINDOW_WAIT,
            asserted,
        }
    }

    fn window_loss(&self, missing: &[(u32, u64)], suback_ms: u32) {
        let name = |p: u32| self.shared.ledger.publishers[p as usize].name.clone();
        let examples: Vec<String> = missing
            .iter()
            .take(5)
            .map(|(p, s)| format!("{} #{s}", name(*p)))
            .collect();
        self.shared.findings.violation(
            "acknowledged message lost (clean subscriber, while connected)",
            format!(
                "{}: {} messages acknowledged after its SUBACK at {suback_ms} ms never \
                 arrived within {WINDOW_WAIT:?}, e.g. {examples:?}",
                self.spec.name,
                missing.len()
            ),
        );
    }

    /// Durable subscriber: acknowledged messages not received yet.
    fn missing_all(&self) -> u64 {
        let mut missing = 0;
        for p in &self.shared.ledger.publishers {
            if p.qos == 0 || self.max_qos_for(&p.topic) == 0 {
                continue;
            }
            let stream = &self.tally.streams[p.id as usize];
            missing += self.shared.ledger.count_acked(p.id, |seq| !stream.has(seq));
        }
        missing
    }

    /// The highest QoS among this subscriber's filters that match `topic`, capped by what
    /// was granted; 0 if none matches (then QoS 0 is the most it can get).
    fn max_qos_for(&self, topic: &str) -> u8 {
        effective_qos(&self.spec.filters, &self.granted, topic)
    }

    /// Handles a packet from the broker, queueing the answer.
    fn on_packet(&mut self, conn: &mut Conn, packet: Incoming) {
        match packet {
            Incoming::Publish(p) => {
                let deliver = match p.qos {
                    0 => true,
                    1 => {
                        conn.queue_ack(AckKind::Puback, p.packet_id);
                        true
                    }
                    _ => {
                        conn.queue_ack(AckKind::Pubrec, p.packet_id);
                        let stamp = ledger::read_stamp(&p.payload);
                        match self.awaiting_release.insert(p.packet_id, stamp) {
                            None => true,
                            Some(before) => {
                                if !p.dup || before != stamp {
                                    self.shared.findings.violation(
                                        "QoS 2 packet id reused before PUBREL",
                                        format!(
                                            "{}: packet id {} carried {before:?}, then {stamp:?} with DUP={}",
                                            self.spec.name, p.packet_id, p.dup
                                        ),
                                    );
                                }
                                false
                            }
                        }
                    }
                };
                if p.dup {
                    self.dup_flag += 1;
                }
                if deliver {
                    self.deliver(&p);
                }
            }
            Incoming::Ack {
                kind: AckKind::Pubrel,
                packet_id,
                ..
            } => {
                self.awaiting_release.remove(&packet_id);
                conn.queue_ack(AckKind::Pubcomp, packet_id);
            }
            Incoming::PingResp => {}
            Incoming::Disconnect { reason } => self.shared.findings.note(
                "DISCONNECT from the broker",
                format!("{}: reason 0x{reason:02x}", self.spec.name),
            ),
            other => self.shared.findings.note(
                "unexpected packet",
                format!("{}: {other:?}", self.spec.name),
            ),
        }
    }

    /// Checks and records one delivery.
    fn deliver(&mut self, p: &Publish) {
        let name = &self.spec.name;
        let findings = &self.shared.findings;
        self.shared
            .counters
            .delivered
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some((publisher, seq)) = ledger::read_stamp(&p.payload) else {
            findings.violation(
                "corrupt payload",
                format!("{name}: {} bytes on {}", p.payload.len(), p.topic),
            );
            return;
        };
        let Some(info) = self.shared.ledger.publishers.get(publisher as usize) else {
            findings.violation(
                "corrupt payload",
                format!("{name}: unknown publisher {publisher}"),
            );
            return;
        };
        if info.topic != p.topic || p.qos > info.qos.min(self.max_qos_for(&p.topic)) || p.retain {
            findings.violation(
                "wrong topic, QoS or retain flag",
                format!(
                    "{name}: {} #{seq} (QoS {} on {}) arrived on {} at QoS {} retain {}",
                    info.name, info.qos, info.topic, p.topic, p.qos, p.retain
                ),
            );
        }
        if seq >= self.shared.ledger.sent_count(publisher) {
            findings.violation(
                "message never sent",
                format!("{name}: {} #{seq}", info.name),
            );
            return;
        }
        match self.tally.record(publisher, seq, p.qos) {
            Delivery::First => {}
            Delivery::Repeat if p.qos == 1 => {}
            Delivery::Repeat => findings.violation(
                if p.qos == 2 {
                    "QoS 2 duplicate"
                } else {
                    "QoS 0 duplicate"
                },
                format!(
                    "{name}: {} #{seq} again at {} ms (DUP={}, packet id {})",
                    info.name,
                    self.shared.now_ms(),
                    p.dup,
                    p.packet_id
                ),
            ),
            Delivery::OutOfOrder { after } => findings.violation(
                "out of order",
                format!(
                    "{name}: {} #{seq} first arrived after #{after} (QoS {}, DUP={})",
                    info.name, p.qos, p.dup
                ),
            ),
        }
    }
}

/// The highest QoS among `filters` that match `topic`, each capped by its `granted` QoS;
/// 0 if none matches.
pub fn effective_qos(filters: &[(String, u8)], granted: &[u8], topic: &str) -> u8 {
    filters
        .iter()
        .zip(granted.iter().chain(std::iter::repeat(&0)))
        .filter(|((f, _), _)| matches(f, topic))
        .map(|((_, asked), granted)| (*asked).min(*granted))
        .max()
        .unwrap_or(0)
}

/// MQTT topic matching for the filters the soak uses (`+`, `#`, no `$` topics).
pub fn matches(filter: &str, topic: &str) -> bool {
    let mut t = topic.split('/');
    for f in filter.split('/') {
        match (f, t.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (f, Some(level)) if f == level => {}
            _ => return false,
        }
    }
    t.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn topic_matching() {
        assert!(matches("soak/#", "soak/q1/p2"));
        assert!(matches("soak/+/+", "soak/q1/p2"));
        assert!(matches("soak/q2/+", "soak/q2/p5"));
        assert!(!matches("soak/q2/+", "soak/q1/p5"));
        assert!(!matches("soak/+", "soak/q1/p5"));
        assert!(matches("soak/#", "soak"));
    }
}
