//! Durable Sessions that follow their client from node to node.
//!
//! In cluster mode a durable Session takes its QoS 1/2 messages only from the cluster's
//! stream, in the stream's order, whichever node published them (see
//! [`crate::broker::Audience`]). Where it stands is then a position in the stream: the
//! messages it has in flight (by stream sequence, with their Packet Identifiers) and the
//! sequence from which nothing was sent yet. Its node writes that state, with the Session's
//! subscriptions, to the key-value bucket `{sessions_bucket}_STATE` when a connection
//! attaches, when its subscriptions change, and when it ends (a Session that ends, or a
//! connection without a durable Session, leaves a state saying so). Writes are made one at
//! a time, in order, and never over the state of a later claim.
//!
//! When the client connects to another node with Clean Start 0, that node reads the state
//! (waiting, while the previous node is alive, for the state its connection left) and
//! rebuilds the Session: the in-flight messages are read back from the stream by sequence
//! and sent again with the same Packet Identifiers, and the stream is read again from the
//! position for the Session's subscriptions, in order, up to where this node's own reading
//! of the stream stands; from there on the Session takes messages as they come. The
//! previous node drops its copy once it has written the state. If the move fails, the state
//! taken up is passed on under the new claim, for the client's next try.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{consumer, kv};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::broker::{Audience, Broker, Pending, SessionHandle};
use crate::codec::{QoS, Version};
use crate::config::QueueFullPolicy;
use crate::session::{Delivery, Inflight, InflightState, PacketId, Session};
use crate::store::{Op, SessionRecord, record};

use super::{Cluster, inbound, owner, wire};

/// A durable Session's state as its node last wrote it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct State {
    client_id: String,
    /// The node that wrote it.
    node: String,
    /// The owner-bucket revision of the claim of the connection it describes.
    claim: u64,
    /// Written when that connection ended: final until the client connects again.
    ended: bool,
    v5: bool,
    expiry: u32,
    /// Unix seconds when the connection ended (0 while connected).
    disconnected_at: u64,
    owner: Option<String>,
    /// Topic Filter and its options (the store's encoding, base64).
    subscriptions: Vec<(String, String)>,
    inflight: Vec<Sent>,
    /// Inbound QoS 2 Packet Identifiers awaiting PUBREL.
    incoming: Vec<u16>,
    /// The first stream sequence not sent to the client (nor queued for it on purpose).
    next: u64,
}

/// A message in flight to the client.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Sent {
    packet_id: u16,
    seq: u64,
    qos: u8,
    retain: bool,
    ids: Vec<u32>,
    /// PUBREC received, PUBREL sent.
    released: bool,
    /// The Shared Subscription it came through (a QoS 2 message: once sent, it is the
    /// client's to complete, MQTT-4.8.2-4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group: Option<String>,
}

impl State {
    /// True if the Session it describes has expired by `now` (Unix seconds).
    fn expired(&self, now: u64) -> bool {
        self.expiry == 0
            || self.expiry != crate::session::NEVER_EXPIRES
                && self.disconnected_at != 0
                && self.disconnected_at.saturating_add(u64::from(self.expiry)) <= now
    }

    /// The state left for a claim after a failed move here: the one taken up, passed on.
    fn passed_on(mut self, node: &str, claim: u64) -> State {
        self.node = node.to_string();
        self.claim = claim;
        self.ended = true;
        self
    }
}

/// Reads the state of `client_id`.
async fn read_state(cluster: &Cluster, client_id: &str) -> Result<Option<State>, Error> {
    let Some(entry) = cluster.states.entry(owner::key_of(client_id)).await? else {
        return Ok(None);
    };
    if entry.operation != kv::Operation::Put {
        return Ok(None);
    }
    let Ok(mut state) = serde_json::from_slice::<State>(&entry.value) else {
        return Ok(None);
    };
    if state.client_id != client_id {
        return Ok(None);
    }
    if !state.ended {
        // Its connection's end was not recorded (its node died): it does not expire until
        // the client is back.
        state.disconnected_at = 0;
    }
    Ok(Some(state))
}

/// One write of a Session's state, in the order they were asked for.
pub(super) struct Write {
    key: String,
    /// The claim the state belongs to: a state of a later claim is never overwritten.
    claim: u64,
    value: Vec<u8>,
    done: Option<oneshot::Sender<bool>>,
}

/// A Session to rebuild here, handed to the task reading the stream.
pub(super) struct Adoption {
    state: State,
    window: u16,
    reply: oneshot::Sender<bool>,
}

/// The state of `handle`'s Session now, for connection claim `claim`; `None` unless it
/// follows the stream.
fn capture(broker: &Broker, handle: &SessionHandle, claim: u64, ended: bool) -> Option<State> {
    let cluster = broker.cluster.as_ref()?;
    // Read before the Session: everything up to it was queued for the Session already.
    let applied = cluster.applied.load(std::sync::atomic::Ordering::Relaxed);
    let slot = handle.slot.lock();
    if slot.ended || !handle.follows_stream() {
        return None;
    }
    let s = &slot.session;
    let position = s.outbound.stream_position();
    let next = match position.first_queued {
        Some(first) => first,
        None if position.stored_only => position.sent + 1,
        None => applied.max(s.stream_seen).max(position.sent) + 1,
    };
    let inflight = s
        .outbound
        .inflight_entries()
        // A Shared Subscription's QoS 1 message goes to the group again when the Session
        // ends here (MQTT 5.0 4.8.2); its QoS 2 one stays the client's.
        .filter(|f| f.delivery.group.is_none() || f.delivery.qos == QoS::ExactlyOnce)
        .filter_map(|f| {
            Some(Sent {
                packet_id: f.packet_id.get(),
                seq: f.delivery.message.stream_seq?,
                qos: f.delivery.qos as u8,
                retain: f.delivery.retain,
                ids: f.delivery.subscription_ids.clone(),
                released: f.state == InflightState::Released,
                group: f.delivery.group.as_deref().map(str::to_string),
            })
        })
        .collect();
    let subscriptions = s
        .subscriptions
        .iter()
        .map(|(f, o)| (f.clone(), STANDARD.encode(record::encode_subscription(o))))
        .collect();
    Some(State {
        client_id: handle.client_id.to_string(),
        node: cluster.config.node.clone(),
        claim,
        ended,
        v5: s.version == Version::V5,
        expiry: s.expiry_interval,
        disconnected_at: if ended {
            record::unix_secs(broker.clock.wall())
        } else {
            0
        },
        owner: s.owner.as_deref().map(str::to_string),
        subscriptions,
        inflight,
        incoming: s.inbound.pending_ids(),
        next,
    })
}

/// Queues a write of `state` (writes happen one at a time, in order).
fn save(cluster: &Cluster, state: &State) -> Option<oneshot::Receiver<bool>> {
    let value = serde_json::to_vec(state).ok()?;
    let (tx, rx) = oneshot::channel();
    let write = Write {
        key: owner::key_of(&state.client_id),
        claim: state.claim,
        value,
        done: Some(tx),
    };
    cluster.state_writes.send(write).ok()?;
    Some(rx)
}

/// Writes the queued states, one at a time, each tried for up to `ack_timeout`.
pub(super) async fn run_writer(
    states: kv::Store,
    ack_timeout: Duration,
    mut writes: mpsc::UnboundedReceiver<Write>,
) {
    while let Some(w) = writes.recv().await {
        let deadline = tokio::time::Instant::now() + ack_timeout;
        let ok = loop {
            match tokio::time::timeout_at(deadline, write_once(&states, &w)).await {
                Ok(Ok(())) => break true,
                Ok(Err(e)) if tokio::time::Instant::now() + RETRY < deadline => {
                    debug!(error = %e, "cluster: writing a Session's state failed; retrying");
                    tokio::time::sleep(RETRY).await;
                }
                Ok(Err(e)) => {
                    warn!(error = %e, "cluster: a Session's state was not written");
                    break false;
                }
                Err(_) => {
                    warn!("cluster: a Session's state was not written in time");
                    break false;
                }
            }
        };
        if let Some(done) = w.done {
            let _ = done.send(ok);
        }
    }
}

const RETRY: Duration = Duration::from_millis(250);

/// Writes `w` unless the bucket holds the state of a later claim (then there is nothing to
/// write: the Session went on elsewhere), comparing and setting so that no later state
/// written meanwhile is overwritten.
async fn write_once(states: &kv::Store, w: &Write) -> Result<(), Error> {
    loop {
        let current = states.entry(&w.key).await?;
        let written = match current {
            Some(entry) => {
                let later =
                    serde_json::from_slice::<State>(&entry.value).is_ok_and(|s| s.claim > w.claim);
                if later && entry.operation == kv::Operation::Put {
                    return Ok(());
                }
                states
                    .update(&w.key, w.value.clone().into(), entry.revision)
                    .await
                    .map(|_| ())
                    .map_err(|e| match e.kind() {
                        kv::UpdateErrorKind::WrongLastRevision => None,
                        _ => Some(Error::from(e)),
                    })
            }
            None => states
                .create(&w.key, w.value.clone().into())
                .await
                .map(|_| ())
                .map_err(|e| match e.kind() {
                    kv::CreateErrorKind::AlreadyExists => None,
                    _ => Some(Error::from(e)),
                }),
        };
        match written {
            Ok(()) => return Ok(()),
            // Written by another node meanwhile: look again.
            Err(None) => continue,
            Err(Some(e)) => return Err(e),
        }
    }
}

/// A connection attached to `handle`'s Session with claim `claim`: its state is written
/// (the subscriptions a client resumed with are readable by the other nodes). A Session
/// that is not durable leaves a state saying so: a node the client goes to next need not
/// wait for one.
pub(crate) fn connected(broker: &Broker, handle: &SessionHandle, claim: u64) {
    let Some(cluster) = &broker.cluster else {
        return;
    };
    // A connection without a durable Session writes nothing: its claim says so.
    if let Some(state) = capture(broker, handle, claim, false) {
        cluster.claims.remember(&handle.client_id, claim);
        let _ = save(cluster, &state);
    }
}

/// A connected durable Session's subscriptions changed: its state is written again, so a
/// node it resumes on after this one died knows them.
pub(crate) fn changed(broker: &Broker, handle: &SessionHandle) {
    let Some(cluster) = &broker.cluster else {
        return;
    };
    if !handle.follows_stream() {
        return;
    }
    if let Some(claim) = cluster.claims.last(&handle.client_id)
        && let Some(state) = capture(broker, handle, claim, false)
    {
        let _ = save(cluster, &state);
    }
}

/// The connection of claim `claim` left `handle`'s durable Session: its final state is
/// written. If another node claimed the client id (`moved`), the Session ends here once the
/// state is written: it goes on there.
pub(crate) fn left(broker: &Arc<Broker>, handle: &Arc<SessionHandle>, claim: u64, moved: bool) {
    let Some(cluster) = &broker.cluster else {
        return;
    };
    let Some(state) = capture(broker, handle, claim, true) else {
        return;
    };
    cluster.claims.remember(&handle.client_id, claim);
    let Some(written) = save(cluster, &state) else {
        return;
    };
    if !moved {
        return;
    }
    let broker = Arc::clone(broker);
    let handle = Arc::clone(handle);
    tokio::spawn(async move {
        if written.await.unwrap_or(false) {
            info!(
                client_id = &*handle.client_id,
                "cluster: Session moved to another node; ended here"
            );
            // Ends without a state of its own: the one just written is the one to take up.
            // (Unless the client came back here meanwhile: its new claim stays.)
            if let Some(cluster) = &broker.cluster {
                cluster.claims.forget_if(&handle.client_id, claim);
            }
            broker.end_session_if(&handle, |slot| slot.conn.is_none());
        }
    });
}

/// A durable Session that follows the stream ended here (expiry, a DISCONNECT with expiry 0,
/// a Clean Start): a node the client goes to next learns that there is nothing to take up.
/// (A Session that moved elsewhere ends without this: its last claim is forgotten first.)
pub(crate) fn ended(broker: &Broker, handle: &SessionHandle) {
    let Some(cluster) = &broker.cluster else {
        return;
    };
    let Some(claim) = cluster.claims.forget(&handle.client_id) else {
        return;
    };
    let _ = save(cluster, &tombstone(cluster, &handle.client_id, claim));
}

/// The state of a client id without a durable Session, for claim `claim`.
fn tombstone(cluster: &Cluster, client_id: &str, claim: u64) -> State {
    State {
        client_id: client_id.to_string(),
        node: cluster.config.node.clone(),
        claim,
        ended: true,
        v5: false,
        expiry: 0,
        disconnected_at: 0,
        owner: None,
        subscriptions: Vec::new(),
        inflight: Vec::new(),
        incoming: Vec::new(),
        next: 0,
    }
}

/// Another node claimed `client_id`: a copy of its Session held here without a connection
/// moves there (its state written again, in case the write when its connection ended was
/// lost), and ends here.
pub(super) fn claimed_elsewhere(broker: &Arc<Broker>, client_id: &str, revision: u64) {
    let Some(cluster) = &broker.cluster else {
        return;
    };
    let Some(handle) = broker.registry.get(client_id) else {
        return;
    };
    if !handle.follows_stream() || handle.slot.lock().conn.is_some() {
        return;
    }
    if cluster
        .claims
        .last(client_id)
        .is_some_and(|last| last >= revision)
    {
        // An old claim, seen late: the client has come back here since.
        return;
    }
    let Some(claim) = cluster.claims.forget(client_id) else {
        // Not connected here since this node started: its state was written before.
        broker.end_session_if(&handle, |slot| slot.conn.is_none());
        return;
    };
    left(broker, &handle, claim, true);
}

/// With `session_owner_check`: false if the client id's durable Session, as its node last
/// wrote it, belongs to a user other than `user` (a Session on this node is checked when it
/// attaches). True if the state cannot be read: the claim that follows fails then anyway
/// for a durable Session, and an ephemeral one connects on this node alone.
pub(crate) async fn owner_allows(broker: &Broker, client_id: &str, user: Option<&str>) -> bool {
    let Some(cluster) = &broker.cluster else {
        return true;
    };
    if let Some(local) = broker.registry.get(client_id) {
        // Held here: checked here, before the claim could disturb its connection.
        let owner = local.slot.lock().session.owner.clone();
        return owner.is_none_or(|o| user == Some(&*o));
    }
    let Ok(Some(state)) = read_state(cluster, client_id).await else {
        return true;
    };
    if state.expired(record::unix_secs(broker.clock.wall())) {
        return true;
    }
    match state.owner.as_deref() {
        Some(owner) => user == Some(owner),
        None => true,
    }
}

/// Before a connection with Clean Start 0 attaches on this node with claim `claimed`: if
/// the client's durable Session is not here, it is rebuilt here from the state its last node
/// wrote (waiting, while the node of the claim replaced is alive, for the state that claim's
/// connection leaves). False if it could not be: the CONNECT is then refused as
/// unavailable, and the state taken up is passed on under this claim, so that the client's
/// next try, here or on another node, takes it up without waiting.
pub(crate) async fn adopt(
    broker: &Arc<Broker>,
    client_id: &str,
    claimed: &super::Claimed,
    window: u16,
) -> bool {
    let Some(cluster) = &broker.cluster else {
        return true;
    };
    let Some(previous) = claimed.previous.clone() else {
        return true;
    };
    let (node, revision) = (previous.node, previous.revision);
    let me = cluster.config.node.as_str();
    let state = if !previous.durable {
        // Its last connection had no durable Session (a Clean Start, or expiry 0): any
        // state written before that claim belongs to a Session that ended with it.
        if let Some(stale) = broker.registry.get(client_id)
            && node != me
        {
            cluster.claims.forget(client_id);
            broker.end_session_if(&stale, |slot| slot.conn.is_none());
        }
        match read_state(cluster, client_id).await {
            Ok(state) => state.filter(|s| s.claim > revision),
            Err(_) => return false,
        }
    } else if node == me {
        if broker.registry.get(client_id).is_some() {
            return true;
        }
        // Claimed here last but not held here: a move here that failed after its claim, or
        // a node without a store that restarted. The last state written is the Session.
        match read_state(cluster, client_id).await {
            Ok(state) => state,
            Err(_) => return false,
        }
    } else {
        // A copy left here from an earlier visit is out of date.
        if let Some(stale) = broker.registry.get(client_id) {
            cluster.claims.forget(client_id);
            broker.end_session_if(&stale, |slot| slot.conn.is_none());
        }
        // Long enough for a node that just started to hear whether the previous one is alive.
        let limit = Duration::from_secs(cluster.config.ack_timeout.max(5) * 2)
            .max(super::wills::DEAD_AFTER + Duration::from_secs(2));
        match await_state(cluster, client_id, &node, revision, limit).await {
            Some(state) => state,
            None => {
                // Refused; the state still comes, and is passed on under this claim, so
                // that the node the client tries next need not wait for this one in vain.
                let broker = Arc::clone(broker);
                let client_id = client_id.to_string();
                let claim = claimed.revision;
                tokio::spawn(async move {
                    let Some(cluster) = &broker.cluster else {
                        return;
                    };
                    let state =
                        await_state(cluster, &client_id, &node, revision, PASS_ON_PATIENCE).await;
                    if let Some(Some(state)) = state {
                        let me = cluster.config.node.clone();
                        let _ = save(cluster, &state.passed_on(&me, claim));
                    }
                });
                return false;
            }
        }
    };
    let Some(state) = state.filter(|s| !s.expired(record::unix_secs(broker.clock.wall()))) else {
        return true;
    };
    if hand_over(cluster, state.clone(), window).await {
        return true;
    }
    let passed = state.passed_on(me, claimed.revision);
    if let Some(written) = save(cluster, &passed) {
        let _ = written.await;
    }
    false
}

/// The state left by the connection of claim `revision` on `node`, waiting for it while that
/// node is alive (bounded); the last state written if the node is gone. `None` if it cannot
/// be read, or the node did not leave it in time.
async fn await_state(
    cluster: &Cluster,
    client_id: &str,
    node: &str,
    revision: u64,
    limit: Duration,
) -> Option<Option<State>> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let read = match read_state(cluster, client_id).await {
            Ok(read) => read,
            Err(e) => {
                warn!(error = %e, client_id, "cluster: a Session's state cannot be read");
                return None;
            }
        };
        let final_state = read
            .as_ref()
            .is_some_and(|s| s.node == node && s.claim == revision && s.ended);
        if final_state {
            return Some(read);
        }
        if !cluster.node_alive(node) {
            if read.is_some() {
                warn!(
                    client_id,
                    node,
                    "cluster: the previous node is gone; the Session resumes from the state it last wrote (messages sent since may come again)"
                );
            }
            return Some(read);
        }
        if tokio::time::Instant::now() >= deadline {
            warn!(
                client_id,
                node, "cluster: the previous node did not hand the Session over in time"
            );
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Has the task reading the stream rebuild the Session of `state` here; true once it did.
async fn hand_over(cluster: &Cluster, state: State, window: u16) -> bool {
    let (reply, answer) = oneshot::channel();
    let adoption = Adoption {
        state,
        window,
        reply,
    };
    if cluster.adoptions.send(adoption).await.is_err() {
        return false;
    }
    let limit = Duration::from_secs(cluster.config.ack_timeout.max(5) * 4);
    matches!(tokio::time::timeout(limit, answer).await, Ok(Ok(true)))
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Rebuilds a Session here (called by the task reading the stream, between two batches, so
/// that the position it reached is exact).
pub(super) async fn adopt_here(
    broker: &Arc<Broker>,
    stream: &async_nats::jetstream::stream::Stream,
    adoption: Adoption,
) {
    let Adoption {
        state,
        window,
        reply,
    } = adoption;
    let client_id = state.client_id.clone();
    if reply.is_closed() {
        // The CONNECT gave up waiting (and passed the state on): nothing to rebuild.
        return;
    }
    let ok = match rebuild(broker, stream, state, window).await {
        Ok(replayed) => {
            info!(
                client_id = client_id.as_str(),
                replayed, "cluster: Session moved here from another node"
            );
            true
        }
        Err(e) => {
            warn!(error = %e, client_id = client_id.as_str(), "cluster: the Session could not be moved here");
            if let Some(handle) = broker.registry.get(&client_id) {
                broker.end_session_if(&handle, |slot| slot.conn.is_none());
            }
            false
        }
    };
    if !ok {
        let _ = reply.send(false);
    } else if reply.send(true).is_err() {
        // The CONNECT gave up while it was rebuilt: the Session goes on where the client
        // goes next, not here.
        if let Some(handle) = broker.registry.get(&client_id) {
            broker.end_session_if(&handle, |slot| slot.conn.is_none());
        }
    }
}

async fn rebuild(
    broker: &Arc<Broker>,
    stream: &async_nats::jetstream::stream::Stream,
    state: State,
    window: u16,
) -> Result<usize, Error> {
    let Some(cluster) = broker.cluster.as_ref() else {
        return Ok(0);
    };
    if broker.registry.get(&state.client_id).is_some() {
        // Rebuilt already (an earlier request for it that was given up waiting).
        return Ok(0);
    }
    let c = &cluster.config;
    // Read again up to the stream's end as it is now; this node's own reading delivers only
    // what comes after it to the Session (its floor).
    let info = stream.get_info().await?.state;
    let last = info.last_sequence;
    let reached = cluster
        .applied
        .load(std::sync::atomic::Ordering::Relaxed)
        .max(last);
    let version = if state.v5 { Version::V5 } else { Version::V311 };
    let mut session = Session::new(version, state.expiry, broker.config.queue_limits(), window);
    session.owner = state.owner.as_deref().map(Arc::from);
    for (filter, options) in &state.subscriptions {
        let bytes = STANDARD.decode(options)?;
        session
            .subscriptions
            .insert(filter.clone(), record::decode_subscription(&bytes)?);
    }
    for id in &state.incoming {
        session.inbound.on_publish_qos2(*id);
    }
    let floor = reached.max(state.next.saturating_sub(1));
    session.stream_seen = floor;
    session
        .outbound
        .set_stream_sent(state.next.saturating_sub(1));
    // Its expiry runs from when its connection ended (on whichever node).
    let now = record::unix_secs(broker.clock.wall());
    let since = if state.disconnected_at == 0 {
        now
    } else {
        state.disconnected_at
    };
    let expires_in = Duration::from_secs(
        since
            .saturating_add(u64::from(state.expiry))
            .saturating_sub(now),
    );
    let Some(handle) = broker.adopt(&state.client_id, session, expires_in) else {
        // A CONNECT here with a Clean Start got there first.
        return Ok(0);
    };
    handle.set_stream_floor(floor);
    let key = handle.store_key();
    let mut pending = Pending::new(broker.persistent());
    if broker.persistent() {
        pending.push(Op::PutSession {
            session: key.clone(),
            record: SessionRecord {
                version,
                expiry_interval: state.expiry,
                disconnected_at: record::unix_secs(broker.clock.wall()),
                incarnation: key.incarnation,
                owner: state.owner.as_deref().map(Arc::from),
            },
        });
        for (filter, options) in &handle.slot.lock().session.subscriptions {
            pending.push(Op::PutSubscription {
                session: key.clone(),
                filter: filter.clone(),
                options: *options,
            });
        }
        for id in &state.incoming {
            pending.push(Op::PutIncoming {
                session: key.clone(),
                packet_id: *id,
            });
        }
    }
    // The messages in flight, read back by sequence, sent again with their Packet Identifiers.
    for sent in &state.inflight {
        let (Some(packet_id), Some(qos)) = (PacketId::new(sent.packet_id), QoS::from_u8(sent.qos))
        else {
            continue;
        };
        let raw = match stream.get_raw_message(sent.seq).await {
            Ok(raw) => raw,
            Err(e) => {
                warn!(error = %e, sequence = sent.seq, "cluster: a message in flight is no longer in the stream");
                continue;
            }
        };
        let age = age_of(broker, raw.time.unix_timestamp());
        let Some(message) = inbound::stream_message(
            broker,
            &raw.subject,
            Some(&raw.headers),
            raw.payload,
            sent.seq,
            age,
        )
        .map(|r| r.message) else {
            continue;
        };
        let mut delivery = Delivery::new(message, qos, sent.retain, sent.ids.clone());
        delivery.group = sent.group.as_deref().map(Arc::from);
        let state = if sent.released {
            InflightState::Released
        } else {
            InflightState::Published
        };
        let mut slot = handle.slot.lock();
        if broker.persistent()
            && let Some(id) = delivery.message.id
        {
            let seq = slot.session.take_seq();
            delivery.seq = Some(seq);
            let mut entry = crate::store::delivery_entry(id, &delivery);
            entry.state = state.into();
            entry.packet_id = packet_id.get();
            pending.push(Op::Enqueue {
                session: key.clone(),
                seq,
                message: Arc::clone(&delivery.message),
                entry,
            });
        }
        slot.session.outbound.restore_inflight(Inflight {
            packet_id,
            delivery,
            state,
        });
    }
    if !broker.commit(std::mem::take(&mut pending.ops)).await {
        return Err("the store could not record the Session".into());
    }
    pending.release(true);
    // The rest of its position onwards, for its subscriptions, in order.
    let mut replayed = 0;
    // Messages the stream's limits removed are gone.
    let start = state.next.max(info.first_sequence);
    if start > state.next {
        warn!(
            client_id = &*handle.client_id,
            from = state.next,
            to = start - 1,
            "cluster: messages a moved Session had not received were removed by the stream's limits"
        );
    }
    if start <= reached && start <= last {
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: format!("{}.>", c.stream_subject),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                },
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        let mut pending = Pending::new(broker.persistent());
        let mut dropped = 0usize;
        loop {
            let Ok(next) = tokio::time::timeout(READ_PATIENCE, messages.next()).await else {
                // Nothing came: either the rest was removed by the stream's limits meanwhile
                // (then there is nothing more to read), or reading stalled (then the move
                // fails, and is tried again).
                let now = stream.get_info().await?.state;
                if now.first_sequence > reached || now.last_sequence < start {
                    warn!(
                        client_id = &*handle.client_id,
                        "cluster: the rest of a moved Session's messages were removed by the stream's limits"
                    );
                    break;
                }
                return Err("the stream was not read in time".into());
            };
            let Some(m) = next else {
                break;
            };
            let m = m?;
            let Ok(info) = m.info() else {
                continue;
            };
            let sequence = info.stream_sequence;
            if sequence > reached {
                break;
            }
            let age = super::stored_for(broker, &m);
            // For No Local: a message the client itself published.
            let own = m
                .headers
                .as_ref()
                .and_then(|h| h.get(wire::CLIENT))
                .is_some_and(|client| client.as_str() == &*handle.client_id);
            // A message for one Shared Subscription group only is not replayed.
            let for_group = wire::group_of(m.headers.as_ref()).is_some();
            if !for_group
                && let Some(message) = inbound::stream_message(
                    broker,
                    &m.subject,
                    m.headers.as_ref(),
                    m.payload.clone(),
                    sequence,
                    age,
                )
                .map(|r| r.message)
            {
                match broker.route_to(
                    &message,
                    QueueFullPolicy::DropNew,
                    Some(&mut pending),
                    Audience::Only(handle.key),
                    own.then_some(handle.key),
                ) {
                    crate::broker::Routed::Delivered { .. } => replayed += 1,
                    crate::broker::Routed::Full { .. } => dropped += 1,
                }
            }
            if pending.ops.len() >= REPLAY_BATCH {
                let ok = broker.commit(std::mem::take(&mut pending.ops)).await;
                pending.release(ok);
                if !ok {
                    return Err("the store could not record the Session's messages".into());
                }
            }
            if sequence >= reached {
                break;
            }
        }
        let ok = broker.commit(std::mem::take(&mut pending.ops)).await;
        pending.release(ok);
        if !ok {
            return Err("the store could not record the Session's messages".into());
        }
        if dropped > 0 {
            warn!(
                client_id = &*handle.client_id,
                dropped, "cluster: messages of a moved Session dropped at its queue limits"
            );
        }
    }
    Ok(replayed)
}

/// How long a node that refused a CONNECT for want of the previous node's state keeps
/// waiting for it, to pass it on.
const PASS_ON_PATIENCE: Duration = Duration::from_secs(300);

/// Messages recorded per store commit while a Session's messages are read again.
const REPLAY_BATCH: usize = 256;
/// The longest wait for the next message of the stream while reading it again.
const READ_PATIENCE: Duration = Duration::from_secs(10);

/// How long ago a message stored at `published` (Unix seconds) was stored.
fn age_of(broker: &Broker, published: i64) -> Duration {
    let now = record::unix_secs(broker.clock.wall());
    Duration::from_secs(now.saturating_sub(u64::try_from(published).unwrap_or(0)))
}
