//! Wills that outlive their node.
//!
//! A connection with a will records it in a key-value bucket (`{sessions_bucket}_WILLS`, key
//! `{client key}.{node}`) before its CONNACK, and removes the record once its node has
//! published or cancelled the will. Each node writes a heartbeat with a run id (random per
//! process) to `{sessions_bucket}_NODES` every [`HEARTBEAT`]; records expire there after
//! [`NODE_TTL`] of silence.
//!
//! A record is **orphaned** when its node has sent no heartbeat for [`DEAD_AFTER`], or runs
//! again under another run id (it was restarted: its connections died with it). Every node
//! watches both buckets; an orphaned will falls due once the smaller of its Will Delay
//! Interval and its Session Expiry Interval has passed (MQTT-3.1.2-8, MQTT-3.1.3-9), and the
//! node whose compare-and-set delete of the record succeeds publishes it: exactly one. A
//! client that connects again before then cancels it the same way.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::broker::Broker;
use crate::codec::{PublishProperties, QoS, Will};

use super::Cluster;

/// Time between a node's heartbeats.
pub(super) const HEARTBEAT: Duration = Duration::from_secs(2);
/// A node silent this long is taken for dead.
pub(super) const DEAD_AFTER: Duration = Duration::from_secs(10);
/// Heartbeats expire from their bucket after this long.
pub(super) const NODE_TTL: Duration = Duration::from_secs(60);
/// How often a node looks for wills that fell due.
const SWEEP: Duration = Duration::from_secs(1);

/// A will as recorded in the bucket.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    client_id: String,
    node: String,
    run: u64,
    conn: u64,
    topic: String,
    payload: String,
    qos: u8,
    retain: bool,
    delay: u32,
    session_expiry: u32,
    /// The connection ended; the will waits for its delay.
    #[serde(default)]
    ended: bool,
    format: Option<u8>,
    message_expiry: Option<u32>,
    content_type: Option<String>,
    response_topic: Option<String>,
    correlation_data: Option<String>,
    user_properties: Vec<(String, String)>,
}

impl Record {
    fn will(&self) -> Option<Will> {
        Some(Will {
            topic: self.topic.clone(),
            payload: Bytes::from(STANDARD.decode(&self.payload).ok()?),
            qos: match self.qos {
                0 => QoS::AtMostOnce,
                1 => QoS::AtLeastOnce,
                2 => QoS::ExactlyOnce,
                _ => return None,
            },
            retain: self.retain,
            delay_interval: self.delay,
            properties: PublishProperties {
                payload_format_indicator: self.format,
                message_expiry_interval: self.message_expiry,
                content_type: self.content_type.clone(),
                response_topic: self.response_topic.clone(),
                correlation_data: match &self.correlation_data {
                    Some(d) => Some(Bytes::from(STANDARD.decode(d).ok()?)),
                    None => None,
                },
                user_properties: self.user_properties.clone(),
            },
        })
    }

    /// Seconds after its node's death that the will falls due.
    fn due_after(&self) -> Duration {
        Duration::from_secs(u64::from(self.delay.min(self.session_expiry)))
    }
}

/// What this node knows of the other nodes and of every recorded will.
#[derive(Debug)]
pub(super) struct Wills {
    /// This process's run id.
    run: u64,
    /// When this node started following the buckets (nodes never seen since count from
    /// here).
    started: Instant,
    records: Mutex<HashMap<String, (u64, Record)>>,
    /// Node -> (run id, when its last heartbeat was seen).
    nodes: Mutex<HashMap<String, (u64, Instant)>>,
    /// Record key -> when it was first found orphaned.
    orphaned: Mutex<HashMap<String, Instant>>,
    /// When this node's last heartbeat was written (by [`Heartbeats`]).
    beat: Arc<Mutex<Option<Instant>>>,
    /// Stops the heartbeats: at shutdown, or when the node's cluster link is dropped.
    beats: tokio_util::sync::CancellationToken,
    /// Since when both watches have run without a break.
    watching: Mutex<Option<Instant>>,
    wills: kv::Store,
    heartbeats: kv::Store,
}

impl Wills {
    /// The state of the run whose name [`claim_name`] claimed and whose heartbeats it
    /// started.
    pub(super) fn new(wills: kv::Store, heartbeats: kv::Store, claim: Heartbeats) -> Wills {
        Wills {
            run: claim.run,
            started: Instant::now(),
            records: Mutex::default(),
            nodes: Mutex::default(),
            orphaned: Mutex::default(),
            beat: claim.beat,
            beats: claim.stop,
            watching: Mutex::default(),
            wills,
            heartbeats,
        }
    }

    /// Stops this node's heartbeats (at shutdown).
    fn stop_beats(&self) {
        self.beats.cancel();
    }

    /// True if `node` sent a heartbeat within [`DEAD_AFTER`] (or may have: this node has
    /// not been following heartbeats that long yet).
    pub(super) fn node_alive(&self, node: &str) -> bool {
        let now = Instant::now();
        match self.nodes.lock().get(node) {
            Some((_, seen)) => now.duration_since(*seen) < DEAD_AFTER,
            None => now.duration_since(self.started) < DEAD_AFTER,
        }
    }

    /// True if `r`'s node is gone (silent, or running again under another run id).
    fn is_orphaned(&self, r: &Record, me: &str, now: Instant) -> bool {
        if r.node == me {
            return r.run != self.run;
        }
        match self.nodes.lock().get(&r.node) {
            Some((run, seen)) => *run != r.run || now.duration_since(*seen) >= DEAD_AFTER,
            None => now.duration_since(self.started) >= DEAD_AFTER,
        }
    }
}

fn key_of(client_id: &str, node: &str) -> String {
    format!("{}.{node}", super::owner::key_of(client_id))
}

/// A connection of `client_id` (`conn`) attached with `will` and a session that lives
/// `session_expiry` seconds after it. The wills of the client's earlier connections that
/// wait for their delay (on another node, alive or not, or left to the cluster here) are
/// settled first: cancelled, since the client is back (MQTT-3.1.3-9), or with a clean start,
/// which ends the old session, published now (MQTT-3.1.2-8). Then this connection's will
/// is recorded, if it has one.
pub(super) async fn connected(
    broker: &Arc<Broker>,
    cluster: &Cluster,
    client_id: &str,
    conn: u64,
    will: Option<&Will>,
    session_expiry: u32,
    clean_start: bool,
) -> bool {
    let w = &cluster.wills;
    let me = &cluster.config.node;
    // Read from the bucket itself (this node's copy of it may lag): the record of every node
    // known alive, and those of nodes gone that the copy holds.
    let now = Instant::now();
    let mut keys: Vec<String> = w
        .nodes
        .lock()
        .iter()
        .filter(|(_, (_, seen))| now.duration_since(*seen) < NODE_TTL)
        .map(|(node, _)| key_of(client_id, node))
        .collect();
    keys.extend(
        w.records
            .lock()
            .iter()
            .filter(|(_, (_, r))| r.client_id == client_id)
            .map(|(k, _)| k.clone()),
    );
    keys.sort();
    keys.dedup();
    let limit = Duration::from_secs(cluster.config.ack_timeout);
    let reads = keys.into_iter().map(|key| async move {
        let entry = w.wills.entry(key.clone()).await;
        (key, entry)
    });
    let entries = tokio::time::timeout(limit, futures_util::future::join_all(reads))
        .await
        .unwrap_or_default();
    let mut earlier = Vec::new();
    for (key, entry) in entries {
        let Ok(Some(entry)) = entry else {
            continue;
        };
        let Ok(r) = serde_json::from_slice::<Record>(&entry.value) else {
            continue;
        };
        // This node's live connections settle their own wills.
        let live_here = r.node == *me && r.run == w.run && !r.ended;
        if r.client_id == client_id && !r.due_after().is_zero() && !live_here {
            earlier.push((key, entry.revision, r));
        }
    }
    for (key, revision, record) in earlier {
        if w.wills
            .delete_expect_revision(&key, Some(revision))
            .await
            .is_err()
        {
            continue;
        }
        match record.will() {
            Some(will) if clean_start => {
                info!(
                    client_id,
                    "cluster: a clean start ends the old session: its will is published"
                );
                broker.publish_will(&will, None);
            }
            _ => info!(
                client_id,
                "cluster: the client is back: the will of its earlier connection is cancelled"
            ),
        }
    }
    let Some(will) = will else {
        return false;
    };
    let p = &will.properties;
    let record = Record {
        client_id: client_id.to_string(),
        node: me.clone(),
        run: w.run,
        conn,
        topic: will.topic.clone(),
        payload: STANDARD.encode(&will.payload),
        qos: will.qos as u8,
        retain: will.retain,
        delay: will.delay_interval,
        session_expiry,
        ended: false,
        format: p.payload_format_indicator,
        message_expiry: p.message_expiry_interval,
        content_type: p.content_type.clone(),
        response_topic: p.response_topic.clone(),
        correlation_data: p.correlation_data.as_ref().map(|d| STANDARD.encode(d)),
        user_properties: p.user_properties.clone(),
    };
    let Ok(value) = serde_json::to_vec(&record) else {
        return false;
    };
    let put = w.wills.put(key_of(client_id, me), value.into());
    match tokio::time::timeout(limit, put).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            warn!(client_id, error = %e, "cluster: the will could not be recorded; another node cannot publish it if this one dies");
            false
        }
        Err(_) => {
            warn!(
                client_id,
                "cluster: the will could not be recorded in time; another node cannot publish it if this one dies"
            );
            false
        }
    }
}

/// True if a compare-and-set write or delete failed because the key changed meanwhile.
fn changed_meanwhile(e: &kv::UpdateError) -> bool {
    e.kind() == kv::UpdateErrorKind::WrongLastRevision
        || e.to_string().contains("wrong last sequence")
}

/// The record of `conn`'s will on this node and its revision: `Ok(None)` if there is none
/// (removed, or a later connection of the client on this node wrote its own), `Err` if the
/// bucket cannot be read.
async fn own_record(
    w: &Wills,
    key: &str,
    conn: u64,
) -> Result<Option<(u64, Record)>, kv::EntryError> {
    let Some(entry) = w.wills.entry(key).await? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice::<Record>(&entry.value)
        .ok()
        .filter(|r| r.conn == conn && r.run == w.run)
        .map(|r| (entry.revision, r)))
}

/// Removes the record of `conn`'s will so that this node may publish it (see
/// [`Cluster::take_will`]).
pub(super) async fn take(cluster: &Cluster, client_id: &str, conn: u64) -> bool {
    let w = &cluster.wills;
    let key = key_of(client_id, &cluster.config.node);
    let limit = Duration::from_secs(cluster.config.ack_timeout);
    let removed = async {
        let Some((revision, _)) = own_record(w, &key, conn).await.ok()? else {
            return Some(false);
        };
        match w.wills.delete_expect_revision(&key, Some(revision)).await {
            Ok(()) => Some(true),
            Err(e) if changed_meanwhile(&e) => Some(false),
            Err(_) => None,
        }
    };
    match tokio::time::timeout(limit, removed).await {
        Ok(Some(taken)) => taken,
        // NATS cannot say: published here rather than lost.
        Ok(None) | Err(_) => true,
    }
}

/// What became of a will left to the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Left {
    /// Marked ended: the sweep of some node publishes it when due.
    ToCluster,
    /// Its record is gone: the client came back on another node, which cancelled it.
    Cancelled,
    /// NATS could not be reached: the caller schedules it itself.
    Failed,
}

/// The connection `conn` ended with a will that has a delay: its record is marked ended, for
/// the sweep of any node to publish when due (or a new connection of the client to cancel).
pub(super) async fn ended(cluster: &Cluster, client_id: &str, conn: u64) -> Left {
    let w = &cluster.wills;
    let key = key_of(client_id, &cluster.config.node);
    let limit = Duration::from_secs(cluster.config.ack_timeout);
    let update = async {
        let Some((revision, mut record)) =
            own_record(w, &key, conn).await.map_err(|_| Left::Failed)?
        else {
            // Removed (the client came back elsewhere), or a later connection of the client
            // on this node wrote its own.
            return Err(Left::Cancelled);
        };
        record.ended = true;
        let value = serde_json::to_vec(&record).map_err(|_| Left::Failed)?;
        match w.wills.update(&key, value.into(), revision).await {
            Ok(_) => Ok(Left::ToCluster),
            // Removed or replaced meanwhile: the client is back.
            Err(e) if changed_meanwhile(&e) => Err(Left::Cancelled),
            Err(_) => Err(Left::Failed),
        }
    };
    match tokio::time::timeout(limit, update).await {
        Ok(Ok(left) | Err(left)) => left,
        Err(_) => Left::Failed,
    }
}

/// The will of `conn` was published or cancelled on this node: its record goes.
pub(super) fn done(broker: &Arc<Broker>, client_id: &str, conn: u64) {
    let (broker, client_id) = (Arc::clone(broker), client_id.to_string());
    tokio::spawn(async move {
        if let Some(cluster) = &broker.cluster {
            take(cluster, &client_id, conn).await;
        }
    });
}

impl Drop for Wills {
    fn drop(&mut self) {
        self.stop_beats();
    }
}

/// Follows both buckets and publishes the orphaned wills that fall due, until shutdown,
/// which also stops this node's heartbeats.
pub(super) async fn run(broker: Arc<Broker>) {
    let shutdown = broker.shutdown.clone();
    tokio::select! {
        _ = async {
            tokio::join!(follow(&broker), sweep(&broker));
        } => {}
        _ = shutdown.cancelled() => {
            if let Some(cluster) = &broker.cluster {
                cluster.wills.stop_beats();
            }
        }
    }
}

/// This run's heartbeats, written every [`HEARTBEAT`] from the moment the name is claimed
/// until `stop` is cancelled (when the [`Wills`] holding it is dropped, or at shutdown).
#[derive(Debug)]
pub(super) struct Heartbeats {
    run: u64,
    beat: Arc<Mutex<Option<Instant>>>,
    stop: tokio_util::sync::CancellationToken,
}

/// Claims the node name by writing this run's first heartbeat, then keeps writing them (see
/// [`Heartbeats`]); refuses a name another running node uses. A recent heartbeat under
/// `node` (from an earlier run of this node, killed moments ago, or from another process)
/// is watched for two heartbeat intervals, and a newer one means a live node has the name.
/// The first heartbeat is written only over the one last seen (a compare-and-set on its
/// revision), so of two nodes given one name and started together, one is refused; the
/// winner's heartbeats go on from then, whatever its start still has to do. JetStream
/// errors are retried until `patience` runs out.
pub(super) async fn claim_name(
    heartbeats: &kv::Store,
    node: &str,
    patience: Duration,
) -> Result<Heartbeats, super::ClusterError> {
    use rand::RngExt;
    let run: u64 = rand::rng().random();
    let value = Bytes::from(run.to_string());
    let deadline = Instant::now() + patience;
    loop {
        match try_claim(heartbeats, node, &value).await {
            Ok(()) => break,
            Err(Claim::InUse) => return Err(super::ClusterError::NodeInUse(node.to_string())),
            Err(Claim::Failed(reason)) => {
                // A write that timed out may have landed: then the entry is this run's.
                if let Ok(Some(entry)) = heartbeats.entry(node).await
                    && entry.operation == kv::Operation::Put
                    && entry.value == value
                {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(super::ClusterError::JetStream {
                        what: "bucket",
                        name: heartbeats.name.clone(),
                        reason,
                    });
                }
                warn!(error = %reason, "cluster: claiming the node name failed; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    let beat = Arc::new(Mutex::new(Some(Instant::now())));
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn({
        let (heartbeats, node, beat, stop) = (
            heartbeats.clone(),
            node.to_string(),
            Arc::clone(&beat),
            stop.clone(),
        );
        async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(HEARTBEAT) => {}
                }
                match heartbeats.put(&node, value.clone()).await {
                    Ok(_) => *beat.lock() = Some(Instant::now()),
                    Err(e) => warn!(error = %e, "cluster: heartbeat not written"),
                }
            }
        }
    });
    Ok(Heartbeats { run, beat, stop })
}

/// Why a claim of the node name did not succeed.
enum Claim {
    /// Another running node has it.
    InUse,
    /// JetStream did not answer as it should.
    Failed(String),
}

/// One attempt of [`claim_name`].
async fn try_claim(heartbeats: &kv::Store, node: &str, value: &Bytes) -> Result<(), Claim> {
    let failed = |e: &dyn std::fmt::Display| Claim::Failed(e.to_string());
    let seen = heartbeats.entry(node).await.map_err(|e| failed(&e))?;
    if let Some(entry) = &seen {
        let now = crate::store::record::unix_secs(std::time::SystemTime::now());
        let written = u64::try_from(entry.created.unix_timestamp()).unwrap_or(0);
        if now.saturating_sub(written) < DEAD_AFTER.as_secs() {
            let deadline = Instant::now() + HEARTBEAT * 2 + Duration::from_millis(500);
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if let Ok(Some(later)) = heartbeats.entry(node).await
                    && later.revision > entry.revision
                {
                    return Err(Claim::InUse);
                }
            }
        }
    }
    match seen {
        // A deleted or purged entry is a tombstone that `create` writes over.
        Some(entry) if entry.operation == kv::Operation::Put => heartbeats
            .update(node, value.clone(), entry.revision)
            .await
            .map(|_| ())
            .map_err(|e| match e.kind() {
                kv::UpdateErrorKind::WrongLastRevision => Claim::InUse,
                _ => failed(&e),
            }),
        _ => heartbeats
            .create(node, value.clone())
            .await
            .map(|_| ())
            .map_err(|e| match e.kind() {
                kv::CreateErrorKind::AlreadyExists => Claim::InUse,
                _ => failed(&e),
            }),
    }
}

/// Keeps the maps of nodes and wills up to date (each watch starts with the current values).
async fn follow(broker: &Arc<Broker>) {
    let Some(cluster) = &broker.cluster else {
        return;
    };
    let w = &cluster.wills;
    loop {
        let result: Result<(), Box<dyn std::error::Error + Send + Sync>> = async {
            let mut nodes = w.heartbeats.watch_with_history(">").await?;
            let mut wills = w.wills.watch_with_history(">").await?;
            *w.watching.lock() = Some(Instant::now());
            loop {
                tokio::select! {
                    e = nodes.next() => {
                        let e = e.ok_or("the watch ended")??;
                        if e.operation == kv::Operation::Put
                            && let Ok(run) = std::str::from_utf8(&e.value).unwrap_or("").parse()
                        {
                            w.nodes.lock().insert(e.key, (run, Instant::now()));
                        }
                    }
                    e = wills.next() => {
                        let e = e.ok_or("the watch ended")??;
                        let mut records = w.records.lock();
                        match serde_json::from_slice::<Record>(&e.value) {
                            Ok(r) if e.operation == kv::Operation::Put => {
                                records.insert(e.key, (e.revision, r));
                            }
                            _ => {
                                records.remove(&e.key);
                                w.orphaned.lock().remove(&e.key);
                            }
                        }
                    }
                }
            }
        }
        .await;
        *w.watching.lock() = None;
        if let Err(e) = result {
            warn!(error = %e, "cluster: following wills and heartbeats failed; retrying");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Publishes the orphaned wills that fell due, each by the node that removes its record.
async fn sweep(broker: &Arc<Broker>) {
    let Some(cluster) = &broker.cluster else {
        return;
    };
    let w = &cluster.wills;
    let me = &cluster.config.node;
    loop {
        tokio::time::sleep(SWEEP).await;
        let now = Instant::now();
        // Silence is evidence only while this node hears NATS: its own heartbeat written
        // lately, and both watches running for longer than a node takes to look dead (after
        // a JetStream outage, the other nodes' heartbeats come back first).
        let hearing = w
            .beat
            .lock()
            .is_some_and(|t| now.duration_since(t) <= HEARTBEAT * 2)
            && w.watching
                .lock()
                .is_some_and(|t| now.duration_since(t) >= DEAD_AFTER);
        let due: Vec<(String, u64, Record)> = {
            let records = w.records.lock();
            let mut orphaned = w.orphaned.lock();
            // A node seen alive again clears its records' clocks.
            orphaned.retain(|k, _| {
                records
                    .get(k)
                    .is_some_and(|(_, r)| r.ended || w.is_orphaned(r, me, now))
            });
            records
                .iter()
                .filter(|(_, (_, r))| r.ended || (hearing && w.is_orphaned(r, me, now)))
                .filter(|(k, (_, r))| {
                    let since = *orphaned.entry((*k).clone()).or_insert(now);
                    now.duration_since(since) >= r.due_after()
                })
                .map(|(k, (rev, r))| (k.clone(), *rev, r.clone()))
                .collect()
        };
        for (key, revision, record) in due {
            if w.wills
                .delete_expect_revision(&key, Some(revision))
                .await
                .is_err()
            {
                // Another node took it, or the client came back.
                continue;
            }
            let Some(will) = record.will() else {
                continue;
            };
            info!(
                client_id = record.client_id.as_str(),
                node = record.node.as_str(),
                topic = will.topic.as_str(),
                "cluster: publishing the will of a client whose node is gone"
            );
            broker.publish_will(&will, None);
        }
    }
}
