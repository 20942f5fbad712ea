//! The `pubsub` scenario: P publishers, S subscribers, one task per client.
//!
//! Subscribers connect and get their SUBACK before any publisher starts. Publishers stamp
//! every payload (send time, publisher index, sequence number); subscribers check the stamps
//! (lost, duplicated, out of order, per publisher) and record end-to-end latency.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use roost::codec::{AckKind, Packet, QoS, Subscribe, Version};
use tokio::task::JoinSet;

use crate::client::{Conn, ConnectOptions, Incoming, Stamp};
use crate::hist::Histogram;
use crate::report::Json;
use crate::{Common, PubSubArgs};

/// State shared by every task of a run.
struct Ctx {
    /// The instant stamps are measured from.
    base: Instant,
    /// Hard end of the run.
    deadline: tokio::time::Instant,
    /// Messages published so far (all publishers).
    sent: AtomicU64,
    /// Unique messages delivered so far (all subscribers).
    received: AtomicU64,
}

impl Ctx {
    /// Nanoseconds since the base instant.
    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
}

/// What one publisher did.
#[derive(Debug, Default)]
struct PubResult {
    sent: u64,
    acked: u64,
    unexpected_acks: u64,
    last_send_ns: u64,
    timed_out: bool,
    error: Option<String>,
}

/// Per-publisher bookkeeping in a subscriber.
#[derive(Debug, Default, Clone)]
struct Track {
    seen: Vec<u64>,
    unique: u64,
    duplicated: u64,
    out_of_order: u64,
    next_expected: u64,
}

/// What one subscriber saw.
#[derive(Debug, Default)]
struct SubResult {
    /// Indexed by publisher.
    tracks: Vec<Track>,
    /// Expected deliveries from each publisher (0 = not subscribed to it).
    expected_per_pub: Vec<u64>,
    unexpected: u64,
    /// Deliveries with the DUP flag set.
    redelivered: u64,
    latency: Histogram,
    first_recv_ns: Option<u64>,
    last_recv_ns: u64,
    timed_out: bool,
    error: Option<String>,
}

/// The topic publisher `i` publishes to.
fn topic(run: &str, i: usize) -> String {
    format!("lg/{run}/{i}")
}

/// Runs the scenario and prints the JSON result line.
pub async fn run(common: &Common, args: &PubSubArgs) -> Result<(), String> {
    let (pubs, subs) = (args.pubs, args.subs);
    if pubs == 0 || args.count == 0 {
        return Err("--pubs and --count must be at least 1".into());
    }
    if args.pairs && pubs != subs {
        return Err("--pairs needs as many publishers as subscribers".into());
    }
    if args.pairs && args.share.is_some() {
        return Err("--pairs and --share do not go together".into());
    }
    if args.size < Stamp::LEN {
        return Err(format!("--size must be at least {} bytes", Stamp::LEN));
    }
    let qos = QoS::from_u8(args.qos).ok_or("--qos must be 0, 1 or 2")?;
    let sub_qos = QoS::from_u8(args.sub_qos.unwrap_or(args.qos)).ok_or("--sub-qos must be 0..2")?;
    let version = common.version()?;
    let addr = common.addr()?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let run_id = format!("{:x}{nanos:x}", std::process::id());
    let delivered_qos = qos.min(sub_qos);

    let sub_addr = args
        .sub_port
        .map_or(addr, |port| SocketAddr::new(addr.ip(), port));
    let opts = |id: String, clean: bool, addr: SocketAddr| ConnectOptions {
        addr,
        version,
        client_id: id,
        clean_start: clean,
        session_expiry: 0,
        keep_alive: 600,
        timeout: Duration::from_secs(common.connect_timeout),
    };

    // Subscribers first, each with its SUBACK.
    let mut set = JoinSet::new();
    for s in 0..subs {
        let filter = if args.pairs {
            topic(&run_id, s)
        } else if pubs == 1 {
            topic(&run_id, 0)
        } else {
            format!("lg/{run_id}/+")
        };
        let filter = match &args.share {
            Some(name) => format!("$share/{name}/{filter}"),
            None => filter,
        };
        let sub_addr = match args.sub_ports.get(s % args.sub_ports.len().max(1)) {
            Some(&port) => SocketAddr::new(addr.ip(), port),
            None => sub_addr,
        };
        let mut o = opts(format!("lg-{run_id}-sub-{s}"), true, sub_addr);
        let persistent = args.persistent_subs;
        set.spawn(async move {
            let conn = if persistent {
                // Start from an empty session, then open a durable one.
                let (c, _) = Conn::connect(&o).await?;
                c.disconnect().await;
                o.clean_start = version == Version::V5;
                o.session_expiry = 3600;
                Conn::connect(&o).await?.0
            } else {
                Conn::connect(&o).await?.0
            };
            subscribe(conn, &filter, sub_qos).await.map(|c| (s, c))
        });
    }
    let mut sub_conns: Vec<Option<Conn>> = (0..subs).map(|_| None).collect();
    while let Some(r) = set.join_next().await {
        let (s, c) = r.map_err(|e| format!("subscriber setup task: {e}"))??;
        sub_conns[s] = Some(c);
    }
    let mut pset = JoinSet::new();
    for p in 0..pubs {
        let o = opts(format!("lg-{run_id}-pub-{p}"), true, addr);
        pset.spawn(async move { Conn::connect(&o).await.map(|(c, _)| (p, c)) });
    }
    let mut pub_conns: Vec<Option<Conn>> = (0..pubs).map(|_| None).collect();
    while let Some(r) = pset.join_next().await {
        let (p, c) = r.map_err(|e| format!("publisher setup task: {e}"))??;
        pub_conns[p] = Some(c);
    }

    // Go.
    let ctx = Arc::new(Ctx {
        base: Instant::now(),
        deadline: tokio::time::Instant::now() + Duration::from_secs(common.max_secs),
        sent: AtomicU64::new(0),
        received: AtomicU64::new(0),
    });
    let mut sub_tasks = Vec::new();
    for (s, conn) in sub_conns.into_iter().enumerate() {
        let conn = conn.ok_or("subscriber missing")?;
        let mut expected = vec![0u64; pubs];
        if args.pairs {
            expected[s] = args.count;
        } else {
            expected.iter_mut().for_each(|e| *e = args.count);
        }
        let sub = Subscriber {
            conn,
            ctx: Arc::clone(&ctx),
            idle: Duration::from_secs_f64(args.idle_timeout),
            group_total: args.share.as_ref().map(|_| args.count * pubs as u64),
        };
        sub_tasks.push(tokio::spawn(sub.run(expected)));
    }
    let rate_per_pub = args.rate / pubs as f64;
    let mut pub_tasks = Vec::new();
    for (p, conn) in pub_conns.into_iter().enumerate() {
        let publisher = Publisher {
            id: p as u32,
            conn: conn.ok_or("publisher missing")?,
            ctx: Arc::clone(&ctx),
            topic: topic(&run_id, p),
            qos,
            count: args.count,
            size: args.size,
            rate: rate_per_pub,
            window: u32::from(args.inflight.max(1)),
            batch: args.batch.max(1),
        };
        pub_tasks.push(tokio::spawn(publisher.run()));
    }
    let expected_total = if args.pairs || args.share.is_some() {
        args.count * pubs as u64
    } else {
        args.count * pubs as u64 * subs as u64
    };
    let progress =
        (!common.quiet).then(|| tokio::spawn(progress(Arc::clone(&ctx), expected_total)));

    let mut pub_results = Vec::new();
    let mut pub_conns = Vec::new();
    for t in pub_tasks {
        let (r, c) = t.await.map_err(|e| format!("publisher task: {e}"))?;
        pub_results.push(r);
        pub_conns.push(c);
    }
    let mut sub_results = Vec::new();
    let mut sub_conns = Vec::new();
    for t in sub_tasks {
        let (r, c) = t.await.map_err(|e| format!("subscriber task: {e}"))?;
        sub_results.push(r);
        sub_conns.push(c);
    }
    if let Some(p) = progress {
        p.abort();
    }
    for c in pub_conns.into_iter().chain(sub_conns) {
        c.disconnect().await;
    }

    // Results.
    let published: u64 = pub_results.iter().map(|r| r.sent).sum();
    let mut lat = Histogram::default();
    let (mut unique, mut dup, mut ooo, mut unexpected) = (0u64, 0u64, 0u64, 0u64);
    let mut per_pub = vec![(0u64, 0u64, 0u64); pubs];
    let mut last_recv = 0u64;
    let mut first_recv = u64::MAX;
    for r in &sub_results {
        lat.merge(&r.latency);
        unexpected += r.unexpected;
        last_recv = last_recv.max(r.last_recv_ns);
        first_recv = first_recv.min(r.first_recv_ns.unwrap_or(u64::MAX));
        for (p, t) in r.tracks.iter().enumerate() {
            unique += t.unique;
            dup += t.duplicated;
            ooo += t.out_of_order;
            let lost = r.expected_per_pub[p].saturating_sub(t.unique);
            per_pub[p].0 += lost;
            per_pub[p].1 += t.duplicated;
            per_pub[p].2 += t.out_of_order;
        }
    }
    if args.share.is_some() {
        // One copy among all subscribers: what one got is not missing from the others.
        (unique, dup) = (0, 0);
        per_pub.iter_mut().for_each(|a| (a.0, a.1) = (0, 0));
        for (p, anomalies) in per_pub.iter_mut().enumerate() {
            let mut union = vec![0u64; args.count.div_ceil(64) as usize];
            let mut copies = 0u64;
            for r in &sub_results {
                let t = &r.tracks[p];
                copies += t.unique + t.duplicated;
                for (u, w) in union.iter_mut().zip(&t.seen) {
                    *u |= w;
                }
            }
            let got: u64 = union.iter().map(|w| u64::from(w.count_ones())).sum();
            unique += got;
            dup += copies - got;
            anomalies.0 = pub_results[p].sent.min(args.count).saturating_sub(got);
            anomalies.1 = copies - got;
        }
    }
    // Deliveries expected for what was actually published (a timed-out publisher sent less).
    let copies_each = if args.pairs || args.share.is_some() {
        1
    } else {
        subs as u64
    };
    let expected: u64 = pub_results
        .iter()
        .map(|r| r.sent.min(args.count) * copies_each)
        .sum();
    let lost = expected.saturating_sub(unique);
    let last_send = pub_results
        .iter()
        .map(|r| r.last_send_ns)
        .max()
        .unwrap_or(0);
    let secs = |ns: u64| ns as f64 / 1e9;
    let delivered_per_sec = if last_recv > 0 {
        unique as f64 / secs(last_recv)
    } else {
        0.0
    };
    let errors: Vec<String> = pub_results
        .iter()
        .filter_map(|r| r.error.clone())
        .chain(sub_results.iter().filter_map(|r| r.error.clone()))
        .collect();
    let timed_out =
        pub_results.iter().any(|r| r.timed_out) || sub_results.iter().any(|r| r.timed_out);

    let mut j = Json::new();
    j.str("scenario", "pubsub")
        .str("label", &common.label)
        .str(
            "mqtt",
            if version == Version::V5 {
                "5.0"
            } else {
                "3.1.1"
            },
        )
        .num("pubs", pubs as f64)
        .num("subs", subs as f64)
        .bool("pairs", args.pairs)
        .num("qos", f64::from(args.qos))
        .num("sub_qos", f64::from(sub_qos as u8))
        .num("delivered_qos", f64::from(delivered_qos as u8))
        .num("size", args.size as f64)
        .num("count_per_pub", args.count as f64)
        .num("rate", args.rate)
        .num("inflight", f64::from(args.inflight))
        .bool("persistent_subs", args.persistent_subs)
        .str("share", args.share.as_deref().unwrap_or(""))
        .num("published", published as f64)
        .num("expected", expected as f64)
        .num("received", unique as f64)
        .num("lost", lost as f64)
        .num("duplicated", dup as f64)
        .num("out_of_order", ooo as f64)
        .num("unexpected", unexpected as f64)
        .num(
            "redelivered",
            sub_results.iter().map(|r| r.redelivered).sum::<u64>() as f64,
        )
        .num(
            "unexpected_acks",
            pub_results.iter().map(|r| r.unexpected_acks).sum::<u64>() as f64,
        )
        .num(
            "acked",
            pub_results.iter().map(|r| r.acked).sum::<u64>() as f64,
        )
        .num("publish_secs", secs(last_send))
        .num("duration_secs", secs(last_recv))
        .num("first_delivery_secs", secs(first_recv.min(last_recv)))
        .num(
            "publish_per_sec",
            if last_send > 0 {
                published as f64 / secs(last_send)
            } else {
                0.0
            },
        )
        .num("delivered_per_sec", delivered_per_sec)
        .num("latency_p50_us", lat.percentile(50.0) as f64 / 1e3)
        .num("latency_p90_us", lat.percentile(90.0) as f64 / 1e3)
        .num("latency_p99_us", lat.percentile(99.0) as f64 / 1e3)
        .num("latency_p999_us", lat.percentile(99.9) as f64 / 1e3)
        .num("latency_max_us", lat.max() as f64 / 1e3)
        .num("latency_samples", lat.len() as f64)
        .bool("timed_out", timed_out);
    let anomalies: Vec<String> = per_pub
        .iter()
        .enumerate()
        .filter(|(_, a)| a.0 + a.1 + a.2 > 0)
        .take(20)
        .map(|(p, a)| {
            let mut o = Json::new();
            o.num("publisher", p as f64)
                .num("lost", a.0 as f64)
                .num("duplicated", a.1 as f64)
                .num("out_of_order", a.2 as f64);
            o.finish()
        })
        .collect();
    j.raw(
        "per_publisher_anomalies",
        &format!("[{}]", anomalies.join(",")),
    );
    j.str_list("errors", &errors);
    println!("{}", j.finish());
    if !errors.is_empty() {
        return Err(format!(
            "{} client error(s), first: {}",
            errors.len(),
            errors[0]
        ));
    }
    Ok(())
}

/// Sends SUBSCRIBE for `filter` and waits for a SUBACK that grants it.
async fn subscribe(mut conn: Conn, filter: &str, qos: QoS) -> Result<Conn, String> {
    conn.queue(&Packet::Subscribe(Subscribe::single(1, filter, qos)))?;
    conn.flush().await?;
    let wait = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match conn.next_packet().await? {
                Packet::SubAck(ack) if ack.packet_id == 1 => return Ok(ack.codes),
                Packet::PingResp => {}
                other => return Err(format!("expected SUBACK, got {other:?}")),
            }
        }
    });
    let codes = wait
        .await
        .map_err(|_| "no SUBACK within 30 s".to_string())??;
    match codes.first() {
        Some(&c) if c.0 <= 2 => Ok(conn),
        other => Err(format!("subscription to {filter} refused: {other:?}")),
    }
}

/// Prints a progress line to stderr every second once the run is longer than two seconds.
async fn progress(ctx: Arc<Ctx>, expected: u64) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = 0u64;
    loop {
        tick.tick().await;
        let elapsed = ctx.base.elapsed().as_secs_f64();
        let recv = ctx.received.load(Ordering::Relaxed);
        if elapsed >= 1.5 {
            eprintln!(
                "loadgen: {elapsed:5.1}s published {} delivered {recv}/{expected} ({} msg/s)",
                ctx.sent.load(Ordering::Relaxed),
                recv - last
            );
        }
        last = recv;
    }
}

/// One publishing client.
struct Publisher {
    id: u32,
    conn: Conn,
    ctx: Arc<Ctx>,
    topic: String,
    qos: QoS,
    count: u64,
    size: usize,
    /// Messages per second for this publisher; 0 = as fast as possible.
    rate: f64,
    window: u32,
    batch: usize,
}

/// Packet id states in a publisher.
const FREE: u8 = 0;
/// PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
const SENT: u8 = 1;
/// PUBREL sent, waiting for PUBCOMP.
const RELEASED: u8 = 2;

impl Publisher {
    async fn run(mut self) -> (PubResult, Conn) {
        let mut r = PubResult::default();
        if let Err(e) = self.publish(&mut r).await {
            r.error = Some(format!("publisher {}: {e}", self.id));
        }
        (r, self.conn)
    }

    async fn publish(&mut self, r: &mut PubResult) -> Result<(), String> {
        let mut payload = vec![0u8; self.size];
        for (i, b) in payload.iter_mut().enumerate().skip(Stamp::LEN) {
            *b = b'a' + (i % 26) as u8;
        }
        let mut ids = vec![FREE; 65536];
        let mut next_id: u16 = 1;
        let mut inflight: u32 = 0;
        let mut seq: u64 = 0;
        let start = self.ctx.base;
        loop {
            // Acks already here (QoS 1/2).
            if self.qos != QoS::AtMostOnce {
                while let Some(n) = self.conn.try_read_more()? {
                    if n == 0 {
                        return Err("connection closed by the broker".into());
                    }
                }
                self.handle_acks(&mut ids, &mut inflight, r)?;
            }
            // Publish what the window, the rate and the batch size allow.
            let mut allowed = (self.count - seq).min(self.batch as u64);
            if self.qos != QoS::AtMostOnce {
                allowed = allowed.min(u64::from(self.window.saturating_sub(inflight)));
            }
            if self.rate > 0.0 {
                let due = ((start.elapsed().as_secs_f64() * self.rate) as u64 + 1).min(self.count);
                allowed = allowed.min(due.saturating_sub(seq));
            }
            if allowed > 0 {
                let now = self.ctx.now_ns();
                for _ in 0..allowed {
                    Stamp {
                        sent_ns: now,
                        publisher: self.id,
                        seq,
                    }
                    .write(&mut payload);
                    let packet_id = if self.qos == QoS::AtMostOnce {
                        0
                    } else {
                        while ids[usize::from(next_id)] != FREE {
                            next_id = next_id.checked_add(1).unwrap_or(1);
                        }
                        let id = next_id;
                        ids[usize::from(id)] = SENT;
                        inflight += 1;
                        next_id = next_id.checked_add(1).unwrap_or(1);
                        id
                    };
                    self.conn
                        .queue_publish(&self.topic, self.qos, packet_id, &payload)?;
                    seq += 1;
                }
                r.sent = seq;
                r.last_send_ns = now;
                self.ctx.sent.fetch_add(allowed, Ordering::Relaxed);
            }
            self.conn.flush().await?;
            if seq == self.count && inflight == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= self.ctx.deadline {
                r.timed_out = true;
                return Ok(());
            }
            // Wait for whatever unblocks us: acks, the next rate tick, or nothing.
            let window_full = self.qos != QoS::AtMostOnce && inflight >= self.window;
            let all_sent = seq == self.count;
            let next_due = (self.rate > 0.0 && !all_sent).then(|| {
                let at = start + Duration::from_secs_f64(seq as f64 / self.rate);
                tokio::time::Instant::from_std(at)
            });
            if window_full || all_sent {
                self.wait_read(self.ctx.deadline).await?;
            } else if let Some(at) = next_due.filter(|_| allowed == 0) {
                if self.qos == QoS::AtMostOnce {
                    tokio::time::sleep_until(at).await;
                } else {
                    self.wait_read(at.min(self.ctx.deadline)).await?;
                }
            } else {
                tokio::task::yield_now().await;
            }
        }
    }

    /// Waits for incoming bytes until `until`; returns normally on timeout.
    async fn wait_read(&mut self, until: tokio::time::Instant) -> Result<(), String> {
        match tokio::time::timeout_at(until, self.conn.read_more()).await {
            Ok(Ok(0)) => Err("connection closed by the broker".into()),
            Ok(Ok(_)) | Err(_) => Ok(()),
            Ok(Err(e)) => Err(e),
        }
    }

    /// Applies every buffered PUBACK / PUBREC / PUBCOMP; queues PUBRELs.
    fn handle_acks(
        &mut self,
        ids: &mut [u8],
        inflight: &mut u32,
        r: &mut PubResult,
    ) -> Result<(), String> {
        while let Some(incoming) = self.conn.next_buffered()? {
            let ack = match incoming {
                Incoming::Packet(Packet::Ack(a)) => a,
                Incoming::Packet(Packet::PingResp) => continue,
                Incoming::Packet(Packet::Disconnect(d)) => {
                    return Err(format!("DISCONNECT from the broker, reason {}", d.reason));
                }
                other => return Err(format!("unexpected packet for a publisher: {other:?}")),
            };
            let slot = &mut ids[usize::from(ack.packet_id)];
            if ack.reason.is_error() {
                return Err(format!("{:?} with failure reason {}", ack.kind, ack.reason));
            }
            match (ack.kind, self.qos, *slot) {
                (AckKind::PubAck, QoS::AtLeastOnce, SENT)
                | (AckKind::PubComp, QoS::ExactlyOnce, RELEASED) => {
                    *slot = FREE;
                    *inflight -= 1;
                    r.acked += 1;
                }
                (AckKind::PubRec, QoS::ExactlyOnce, SENT | RELEASED) => {
                    *slot = RELEASED;
                    self.conn.queue_ack(AckKind::PubRel, ack.packet_id)?;
                }
                _ => r.unexpected_acks += 1,
            }
        }
        Ok(())
    }
}

/// One subscribing client.
struct Subscriber {
    conn: Conn,
    ctx: Arc<Ctx>,
    idle: Duration,
    /// As a member of a Shared Subscription: the messages expected among all members (the
    /// subscriber stops once they all arrived, wherever).
    group_total: Option<u64>,
}

impl Subscriber {
    async fn run(mut self, expected_per_pub: Vec<u64>) -> (SubResult, Conn) {
        let mut r = SubResult {
            tracks: expected_per_pub
                .iter()
                .map(|&n| Track {
                    seen: vec![0; n.div_ceil(64) as usize],
                    ..Track::default()
                })
                .collect(),
            expected_per_pub,
            ..SubResult::default()
        };
        if let Err(e) = self.receive(&mut r).await {
            r.error = Some(format!("subscriber: {e}"));
        }
        (r, self.conn)
    }

    async fn receive(&mut self, r: &mut SubResult) -> Result<(), String> {
        let expected: u64 = r.expected_per_pub.iter().sum();
        let mut unique = 0u64;
        let mut awaiting_rel = 0u64;
        let mut last_progress = tokio::time::Instant::now();
        loop {
            let before = unique;
            while let Some(incoming) = self.conn.next_buffered()? {
                match incoming {
                    Incoming::Publish(p) => {
                        r.redelivered += u64::from(p.dup);
                        match p.qos {
                            QoS::AtMostOnce => {}
                            QoS::AtLeastOnce => {
                                self.conn.queue_ack(AckKind::PubAck, p.packet_id)?
                            }
                            QoS::ExactlyOnce => {
                                self.conn.queue_ack(AckKind::PubRec, p.packet_id)?;
                                awaiting_rel += 1;
                            }
                        }
                        let Some(stamp) = p.stamp else {
                            r.unexpected += 1;
                            continue;
                        };
                        if self.record(r, stamp) {
                            unique += 1;
                        }
                    }
                    Incoming::Packet(Packet::Ack(a)) if a.kind == AckKind::PubRel => {
                        self.conn.queue_ack(AckKind::PubComp, a.packet_id)?;
                        awaiting_rel = awaiting_rel.saturating_sub(1);
                    }
                    Incoming::Packet(Packet::PingResp) => {}
                    Incoming::Packet(Packet::Disconnect(d)) => {
                        return Err(format!("DISCONNECT from the broker, reason {}", d.reason));
                    }
                    Incoming::Packet(other) => {
                        return Err(format!("unexpected packet for a subscriber: {other:?}"));
                    }
                }
            }
            if unique != before {
                self.ctx
                    .received
                    .fetch_add(unique - before, Ordering::Relaxed);
                r.last_recv_ns = self.ctx.now_ns();
                r.first_recv_ns.get_or_insert(r.last_recv_ns);
                last_progress = tokio::time::Instant::now();
            }
            self.conn.flush().await?;
            let all_here = match self.group_total {
                Some(total) => self.ctx.received.load(Ordering::Relaxed) >= total,
                None => unique >= expected,
            };
            if all_here && awaiting_rel == 0 {
                return Ok(());
            }
            let until = (last_progress + self.idle).min(self.ctx.deadline);
            // A group member looks at the others' progress now and then.
            let wake = match self.group_total {
                Some(_) => until.min(tokio::time::Instant::now() + Duration::from_millis(50)),
                None => until,
            };
            let seen_before = self.ctx.received.load(Ordering::Relaxed);
            match tokio::time::timeout_at(wake, self.conn.read_more()).await {
                Ok(Ok(0)) => return Err("connection closed by the broker".into()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) if wake < until => {
                    if self.ctx.received.load(Ordering::Relaxed) != seen_before {
                        last_progress = tokio::time::Instant::now();
                    }
                }
                Err(_) => {
                    r.timed_out = until >= self.ctx.deadline;
                    return Ok(());
                }
            }
        }
    }

    /// Checks one stamp; true when it is a new message.
    fn record(&self, r: &mut SubResult, stamp: Stamp) -> bool {
        let now = self.ctx.now_ns();
        let Some(t) = r.tracks.get_mut(stamp.publisher as usize) else {
            r.unexpected += 1;
            return false;
        };
        let (word, bit) = ((stamp.seq / 64) as usize, 1u64 << (stamp.seq % 64));
        let Some(w) = t
            .seen
            .get_mut(word)
            .filter(|_| stamp.seq < r.expected_per_pub[stamp.publisher as usize])
        else {
            r.unexpected += 1;
            return false;
        };
        r.latency.record(now.saturating_sub(stamp.sent_ns));
        if *w & bit != 0 {
            t.duplicated += 1;
            return false;
        }
        *w |= bit;
        t.unique += 1;
        if stamp.seq < t.next_expected {
            t.out_of_order += 1;
        } else {
            t.next_expected = stamp.seq + 1;
        }
        true
    }
}
