//! Retained message churn and its check.
//!
//! A durable 3.1.1 client sets, overwrites and deletes (empty payload) retained messages on
//! a small set of topics at QoS 1, resending what is unacknowledged after a lost connection.
//! Every message it sends is applied to a model in order. Now and then, and after every
//! broker restart, it stops, waits until nothing is in flight (so the model is exactly what
//! the broker must hold), and a fresh clean-session client subscribes to the topics: it must
//! receive one retained message per topic the model holds, with the model's payload, and
//! none for a deleted topic.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::RngExt;
use rand::rngs::StdRng;
use tokio::time::Instant;

use super::conn::Conn;
use super::ledger;
use super::shared::{Phase, Shared};
use super::wire::{AckKind, ConnectSpec, Incoming, Publish, Version};

/// Publisher id in the stamps of retained payloads (outside the ledger).
const RETAIN_ID: u32 = u32::MAX;
/// Unacknowledged retained publishes at most.
const WINDOW: usize = 4;
/// Bound on one check.
const CHECK_WAIT: Duration = Duration::from_secs(15);
/// How long the check listens for unexpected retained messages after the expected ones.
const QUIET: Duration = Duration::from_millis(500);

/// What the retainer reports.
#[derive(Debug, Default, Clone)]
pub struct RetainResult {
    /// Retained messages set (first time on a topic or after a delete).
    pub sets: u64,
    /// Retained messages replaced.
    pub overwrites: u64,
    /// Retained messages deleted (empty payload).
    pub deletes: u64,
    /// Checks that compared the broker's retained set with the model.
    pub checks: u64,
    /// Checks cut short by a broker restart.
    pub checks_void: u64,
}

struct Retainer {
    shared: Arc<Shared>,
    topics: Vec<String>,
    /// What the broker must hold once everything sent is acknowledged.
    model: Vec<Option<Bytes>>,
    /// Sent and not acknowledged, by sequence: (packet id, topic index, payload).
    inflight: BTreeMap<u64, (u16, usize, Bytes)>,
    by_packet_id: HashMap<u16, u64>,
    next_seq: u64,
    result: RetainResult,
}

/// Runs the retainer until the end of the workload; `rate` is messages per second and
/// `check_every` the time between checks.
pub async fn run(
    shared: Arc<Shared>,
    keys: usize,
    rate: f64,
    check_every: Duration,
    mut rng: StdRng,
) -> RetainResult {
    let mut r = Retainer {
        shared: Arc::clone(&shared),
        topics: (0..keys).map(|k| format!("retained/k{k:02}")).collect(),
        model: vec![None; keys],
        inflight: BTreeMap::new(),
        by_packet_id: HashMap::new(),
        next_seq: 0,
        result: RetainResult::default(),
    };
    let connect = ConnectSpec {
        client_id: "soak-retain".into(),
        clean: false,
        keep_alive: 60,
        session_expiry: 0,
    };
    let mut check_due = Instant::now() + check_every;
    loop {
        let Some((mut conn, _)) = shared.connect(Version::V4, &connect).await else {
            return r.result;
        };
        for (packet_id, key, payload) in r.inflight.values() {
            conn.queue_publish(&r.publish(*packet_id, *key, payload.clone(), true));
        }
        // A check right after every reconnect: retained messages must survive the restart.
        let mut check_now = r.next_seq > 0;
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        let mut retry_at = Instant::now();
        let finished = loop {
            tokio::select! {
                p = conn.recv() => match p {
                    Ok(Incoming::Ack { kind: AckKind::Puback, packet_id, .. }) => {
                        if let Some(seq) = r.by_packet_id.remove(&packet_id) {
                            r.inflight.remove(&seq);
                        }
                    }
                    Ok(Incoming::PingResp) => {}
                    Ok(other) => shared.findings.note("unexpected packet", format!("soak-retain: {other:?}")),
                    Err(e) => {
                        shared.connection_lost("soak-retain", &e);
                        break false;
                    }
                },
                _ = ticker.tick() => {
                    let finishing = shared.phase() >= Phase::Finish;
                    let due = check_now || finishing || Instant::now() > check_due;
                    if due && r.inflight.is_empty() {
                        if Instant::now() >= retry_at {
                            match r.check(&mut rng).await {
                                Some(()) => {
                                    check_now = false;
                                    check_due = Instant::now() + check_every;
                                    if finishing {
                                        break true;
                                    }
                                }
                                None => {
                                    r.result.checks_void += 1;
                                    retry_at = Instant::now() + Duration::from_secs(1);
                                }
                            }
                        }
                    } else if !check_now && !finishing && Instant::now() <= check_due && r.inflight.len() < WINDOW {
                        let (packet_id, key, payload) = r.next_op(&mut rng);
                        conn.queue_publish(&r.publish(packet_id, key, payload, false));
                    }
                }
            }
            if let Err(e) = conn.flush().await {
                shared.connection_lost("soak-retain", &e);
                break false;
            }
        };
        if finished {
            conn.close().await;
            return r.result;
        }
    }
}

impl Retainer {
    fn publish(&self, packet_id: u16, key: usize, payload: Bytes, dup: bool) -> Publish {
        Publish {
            dup,
            qos: 1,
            retain: true,
            topic: self.topics[key].clone(),
            packet_id,
            payload,
        }
    }

    /// Chooses the next operation, applies it to the model and records it as in flight.
    fn next_op(&mut self, rng: &mut StdRng) -> (u16, usize, Bytes) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let key = rng.random_range(0..self.topics.len());
        let payload = if rng.random_bool(0.3) {
            self.result.deletes += u64::from(self.model[key].is_some());
            Bytes::new()
        } else {
            if self.model[key].is_some() {
                self.result.overwrites += 1;
            } else {
                self.result.sets += 1;
            }
            ledger::payload(RETAIN_ID, seq, rng.random_range(16..200))
        };
        self.model[key] = (!payload.is_empty()).then(|| payload.clone());
        let packet_id = (seq % 60_000 + 1) as u16;
        self.inflight.insert(seq, (packet_id, key, payload.clone()));
        self.by_packet_id.insert(packet_id, seq);
        (packet_id, key, payload)
    }

    /// Compares the broker's retained messages with the model. `None` when the check could
    /// not finish (the broker was killed meanwhile).
    async fn check(&mut self, rng: &mut StdRng) -> Option<()> {
        let shared = &self.shared;
        let version = if rng.random_bool(0.5) {
            Version::V4
        } else {
            Version::V5
        };
        let spec = ConnectSpec {
            client_id: "soak-retain-check".into(),
            clean: true,
            keep_alive: 60,
            session_expiry: 0,
        };
        let (mut conn, _) = Conn::open(shared.addr, version, &spec).await.ok()?;
        let (granted, early) = conn.subscribe(&[("retained/#".into(), 1)]).await.ok()?;
        if granted != [1] {
            shared
                .findings
                .violation("SUBACK", format!("retained check granted {granted:?}"));
        }
        let expected = self.model.iter().filter(|m| m.is_some()).count();
        let mut got: BTreeMap<String, Vec<Bytes>> = BTreeMap::new();
        let mut received = 0;
        let deadline = Instant::now() + CHECK_WAIT;
        let mut quiet_until: Option<Instant> = None;
        let mut pending = early;
        loop {
            for packet in pending.drain(..) {
                match packet {
                    Incoming::Publish(p) => {
                        if p.qos == 1 {
                            conn.queue_ack(AckKind::Puback, p.packet_id);
                        }
                        if !p.retain {
                            shared.findings.violation(
                                "retained message without RETAIN flag",
                                format!("{} on a new subscription", p.topic),
                            );
                        }
                        received += 1;
                        got.entry(p.topic).or_default().push(p.payload);
                    }
                    Incoming::Ack {
                        kind: AckKind::Pubrel,
                        packet_id,
                        ..
                    } => conn.queue_ack(AckKind::Pubcomp, packet_id),
                    _ => {}
                }
            }
            conn.flush().await.ok()?;
            if received >= expected && quiet_until.is_none() {
                quiet_until = Some(Instant::now() + QUIET);
            }
            let until = quiet_until.unwrap_or(deadline).min(deadline);
            match tokio::time::timeout_at(until, conn.recv()).await {
                Ok(Ok(p)) => pending.push(p),
                Ok(Err(_)) => return None,
                Err(_) => break,
            }
        }
        conn.close().await;
        self.compare(&got);
        self.result.checks += 1;
        Some(())
    }

    /// Records a violation for every topic whose retained message differs from the model.
    fn compare(&self, got: &BTreeMap<String, Vec<Bytes>>) {
        let findings = &self.shared.findings;
        let at = self.shared.now_ms();
        for (k, topic) in self.topics.iter().enumerate() {
            let received = got.get(topic).map_or(&[][..], |v| &v[..]);
            match (&self.model[k], received) {
                (None, []) => {}
                (Some(want), [one]) if one == want => {}
                (None, _) => findings.violation(
                    "deleted retained message delivered",
                    format!("{topic} at {at} ms: {} messages", received.len()),
                ),
                (Some(want), []) => findings.violation(
                    "retained message missing",
                    format!(
                        "{topic} at {at} ms: expected {:?}",
                        ledger::read_stamp(want)
                    ),
                ),
                (Some(want), _) => findings.violation(
                    "wrong retained message",
                    format!(
                        "{topic} at {at} ms: expected {:?}, got {:?}",
                        ledger::read_stamp(want),
                        received
                            .iter()
                            .map(|p| ledger::read_stamp(p))
                            .collect::<Vec<_>>()
                    ),
                ),
            }
        }
        for topic in got.keys() {
            if !self.topics.contains(topic) {
                findings.violation("unknown retained topic", topic.clone());
            }
        }
    }
}
