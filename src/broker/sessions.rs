//! The session registry: attach a connection to a session (new, resumed or taken over),
//! detach it, and end sessions when they expire.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::codec::Version;
use crate::config::QueueFullPolicy;
use crate::session::{Delivery, GateState, LoadRequest, NEVER_EXPIRES, Session};
use crate::store::{Op, SessionKey, SessionRecord, record::unix_secs};

use super::Broker;
use super::Metrics;
use super::handle::{Absence, ConnLink, KickReason, SessionHandle, Slot};
use super::pending::Pending;

/// Bytes of an ended session's stored backlog read (and moved to other members of its Shared
/// Subscriptions) per commit.
const MOVE_CHUNK_BYTES: u64 = 4 * 1024 * 1024;

/// How long a takeover waits for the previous connection to finish before forcing it off.
/// A guard against a stuck connection task, not protocol time: it stays on tokio's clock.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// What a connecting client asks for.
#[derive(Debug, Clone)]
pub(crate) struct AttachRequest {
    /// Client identifier (already assigned if the client sent none).
    pub client_id: Arc<str>,
    /// Clean session / clean start.
    pub clean_start: bool,
    /// Session expiry interval requested.
    pub expiry_interval: u32,
    /// Protocol version.
    pub version: Version,
    /// Outbound inflight window for this connection.
    pub window: u16,
    /// The authenticated username, which owns a session it creates.
    pub owner: Option<Arc<str>>,
}

/// Why a connection may not attach to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttachError {
    /// The session belongs to another user (`session_owner_check`).
    NotOwner,
}

/// What ending a session leaves for [`Broker::finish_end`].
#[derive(Debug)]
pub(super) struct Ended {
    /// Its subscriptions, to remove from the router.
    filters: Vec<String>,
    /// Its unacknowledged Shared Subscription deliveries, for other members.
    moving: Vec<Delivery>,
    /// Set when the session's deletion from the store waits until its Shared Subscription
    /// messages (in `moving` and in its stored-only backlog) have moved.
    deferred: Option<Deferred>,
}

/// A durable session whose deletion from the store waits (see [`Ended::deferred`]).
#[derive(Debug)]
pub(super) struct Deferred {
    /// Its store key.
    key: SessionKey,
    /// Its stored-only backlog: first position and count.
    stored: Option<(u64, usize)>,
    /// Pending commits of entries in that backlog.
    unsettled: Vec<Arc<crate::session::CommitGate>>,
    /// Cancelled when done (the client id's entry in [`Registry::ending`]).
    done: CancellationToken,
}

/// Removes a client id from [`Registry::ending`] and wakes whoever waits for it when dropped.
struct Finished {
    broker: Arc<Broker>,
    client_id: Arc<str>,
    done: CancellationToken,
}

impl Drop for Finished {
    fn drop(&mut self) {
        // Under the registry lock, like every change of `ending`. One entry per client id at
        // a time: no session for the id can begin while it is there.
        let _sessions = self.broker.registry.sessions.lock();
        self.broker.registry.ending.lock().remove(&self.client_id);
        self.done.cancel();
    }
}

/// Logs the outcome of moving an ended session's Shared Subscription messages: `moved` found
/// another member, `left` did not (their group had no other member, or they expired).
fn log_moved(client_id: &str, moved: usize, left: usize) {
    if moved > 0 {
        info!(
            client_id,
            moved, "unacknowledged shared subscription messages moved to other members"
        );
    }
    if left > 0 {
        info!(
            client_id,
            left, "unacknowledged shared subscription messages had no other member to go to"
        );
    }
}

/// Counts over every session (see [`Registry::summary`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SessionsSummary {
    /// Sessions.
    pub total: usize,
    /// Sessions with a connection.
    pub connected: usize,
    /// Messages in their backlogs (queued, in flight, in the store).
    pub queued_messages: usize,
}

/// Sessions by client id: sets of handles keyed by their own client id, 8 bytes an entry
/// where a map from client id to handle takes 24 (a hundred thousand idle clients each have
/// one).
///
/// The handles are spread over [`SHARDS`] sets by a hash of the client id. A hash set grows
/// by rehashing every entry at once, which for one set of all sessions stalls every connect
/// behind the registry's lock (measured: 3-8 ms as it passed 3,584, 7,168 and 14,336
/// sessions, a two-pointer walk per entry); a shard rehashes a sixty-fourth of them.
#[derive(Debug)]
pub(crate) struct SessionMap {
    /// Picks the shard; each set hashes with its own keys.
    shard_of: RandomState,
    shards: Box<[HashSet<ByClientId>]>,
}

/// Shards of [`SessionMap`]: 64 empty sets take 3 KiB.
const SHARDS: usize = 64;

impl Default for SessionMap {
    fn default() -> Self {
        Self {
            shard_of: RandomState::new(),
            shards: (0..SHARDS).map(|_| HashSet::new()).collect(),
        }
    }
}

/// A handle that hashes and compares as its client id.
#[derive(Debug)]
struct ByClientId(Arc<SessionHandle>);

impl PartialEq for ByClientId {
    fn eq(&self, other: &Self) -> bool {
        self.0.client_id == other.0.client_id
    }
}

impl Eq for ByClientId {}

impl std::hash::Hash for ByClientId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `str` hashes, which `Borrow<str>` requires.
        (*self.0.client_id).hash(state);
    }
}

impl std::borrow::Borrow<str> for ByClientId {
    fn borrow(&self) -> &str {
        &self.0.client_id
    }
}

// A handle hashes as its client id, which never changes; its interior mutability is elsewhere.
#[allow(clippy::mutable_key_type)]
impl SessionMap {
    /// The set that holds `client_id`, if anything does.
    fn shard(&self, client_id: &str) -> &HashSet<ByClientId> {
        &self.shards[self.index(client_id)]
    }

    fn shard_mut(&mut self, client_id: &str) -> &mut HashSet<ByClientId> {
        let i = self.index(client_id);
        &mut self.shards[i]
    }

    fn index(&self, client_id: &str) -> usize {
        // The remainder of a 64-bit hash by 64: any bits of a keyed hash do.
        (self.shard_of.hash_one(client_id) % SHARDS as u64) as usize
    }

    /// The session of `client_id`.
    pub(crate) fn get(&self, client_id: &str) -> Option<&Arc<SessionHandle>> {
        self.shard(client_id).get(client_id).map(|h| &h.0)
    }

    /// Whether `client_id` has a session.
    pub(crate) fn contains_key(&self, client_id: &str) -> bool {
        self.shard(client_id).contains(client_id)
    }

    /// Adds `handle` under its client id, replacing the session that had it.
    pub(crate) fn insert(&mut self, handle: Arc<SessionHandle>) {
        let handle = ByClientId(handle);
        self.shard_mut(&handle.0.client_id).replace(handle);
    }

    /// Removes the session of `client_id`.
    pub(crate) fn remove(&mut self, client_id: &str) -> Option<Arc<SessionHandle>> {
        self.shard_mut(client_id).take(client_id).map(|h| h.0)
    }

    /// Every session, in no particular order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &Arc<SessionHandle>> {
        self.shards.iter().flat_map(|s| s.iter().map(|h| &h.0))
    }
}

/// Client id to session.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    sessions: Mutex<SessionMap>,
    /// Client ids whose ended session is still being taken apart in the store (its Shared
    /// Subscription messages moving to other members): a new session for the id waits for
    /// the token. Changed only under the `sessions` lock.
    ending: Mutex<HashMap<Arc<str>, CancellationToken>>,
}

impl Registry {
    /// The token of an ended session of `client_id` still being taken apart, if any.
    fn ending(&self, client_id: &str) -> Option<CancellationToken> {
        self.ending.lock().get(client_id).cloned()
    }

    /// The session of a client id, if one exists.
    pub(crate) fn get(&self, client_id: &str) -> Option<Arc<SessionHandle>> {
        self.sessions.lock().get(client_id).cloned()
    }

    /// Adds a session restored from the store.
    pub(super) fn insert(&self, handle: Arc<SessionHandle>) {
        self.sessions.lock().insert(handle);
    }

    /// Registers `handle` unless its client id has a Session (or one ending); true if it did.
    pub(super) fn insert_if_absent(&self, handle: &Arc<SessionHandle>) -> bool {
        let mut sessions = self.sessions.lock();
        if sessions.contains_key(&handle.client_id)
            || self.ending.lock().contains_key(&handle.client_id)
        {
            return false;
        }
        sessions.insert(Arc::clone(handle));
        true
    }

    /// Every session, in no particular order.
    pub(crate) fn handles(&self) -> Vec<Arc<SessionHandle>> {
        self.sessions.lock().values().cloned().collect()
    }

    /// Counts over every session: how many there are, how many have a connection, and the
    /// messages in their backlogs.
    pub(crate) fn summary(&self) -> SessionsSummary {
        // Each session is looked at without holding the registry (connects wait on it).
        let sessions = self.handles();
        let mut summary = SessionsSummary {
            total: sessions.len(),
            ..SessionsSummary::default()
        };
        for handle in &sessions {
            let slot = handle.slot.lock();
            summary.connected += usize::from(slot.conn.is_some());
            summary.queued_messages += slot.session.outbound.backlog_messages();
        }
        summary
    }

    /// A key for a new session incarnation. It also names the incarnation in the store, so it
    /// must not repeat across restarts: random, never 0.
    pub(super) fn new_key(&self) -> u64 {
        use rand::RngExt;
        rand::rng().random::<u64>() | 1
    }
}

impl Broker {
    /// Attaches connection `link` to the session of `req.client_id`, taking over a connection
    /// already attached (MQTT-3.1.4-3). Returns the session and the Session Present flag; the
    /// store changes to commit before CONNACK go to `pending`.
    pub(crate) async fn attach(
        &self,
        req: &AttachRequest,
        link: &ConnLink,
        pending: &mut Pending,
    ) -> Result<(Arc<SessionHandle>, bool), AttachError> {
        loop {
            if let Some(ending) = self.registry.ending(&req.client_id) {
                ending.cancelled().await;
                continue;
            }
            if let Some(existing) = self.registry.get(&req.client_id) {
                // Before anything is taken over or ended.
                self.check_owner(&existing.slot.lock(), req)?;
                let current = existing.slot.lock().conn.clone();
                if let Some(old) = current {
                    info!(
                        client_id = &*req.client_id,
                        "session taken over by a new connection"
                    );
                    old.kick(KickReason::TakenOver);
                    if tokio::time::timeout(TAKEOVER_WAIT, old.gone())
                        .await
                        .is_err()
                    {
                        warn!(
                            client_id = &*req.client_id,
                            "previous connection did not finish; detaching it"
                        );
                        self.detach(&existing, old.id);
                    }
                    continue;
                }
            }
            if let Some(attached) = self.try_attach(req, link, pending)? {
                return Ok(attached);
            }
        }
    }

    /// With `session_owner_check`, a session created by an authenticated user may be resumed,
    /// taken over or replaced only by that user.
    fn check_owner(&self, slot: &Slot, req: &AttachRequest) -> Result<(), AttachError> {
        match &slot.session.owner {
            Some(owner) if self.config.session_owner_check && req.owner.as_ref() != Some(owner) => {
                Err(AttachError::NotOwner)
            }
            _ => Ok(()),
        }
    }

    /// One attempt under the registry lock; `None` if another connection got there first.
    fn try_attach(
        &self,
        req: &AttachRequest,
        link: &ConnLink,
        pending: &mut Pending,
    ) -> Result<Option<(Arc<SessionHandle>, bool)>, AttachError> {
        let mut sessions = self.registry.sessions.lock();
        if self.registry.ending.lock().contains_key(&req.client_id) {
            return Ok(None);
        }
        let mut replaced = None;
        if let Some(existing) = sessions.get(&req.client_id).cloned() {
            let mut slot = existing.slot.lock();
            self.check_owner(&slot, req)?;
            if slot.conn.is_some() {
                return Ok(None);
            }
            if !req.clean_start {
                existing.set_conn(&mut slot, Some(link.clone()));
                slot.epoch += 1;
                if let Some(away) = slot.away.take() {
                    // The expiry and will-delay timers of the absence stop here.
                    away.cancel();
                }
                slot.session.version = req.version;
                slot.session.expiry_interval = req.expiry_interval;
                slot.session.outbound.set_window(req.window);
                if let Some(cluster) = &self.cluster
                    && req.expiry_interval != 0
                {
                    existing.start_following(
                        cluster.applied.load(std::sync::atomic::Ordering::Relaxed),
                    );
                }
                self.record_session(existing.store_key(), &mut slot, pending);
                drop(slot);
                return Ok(Some((existing, true)));
            }
            // Clean start: the old session ends here (MQTT-3.1.2-4). Its deletion is
            // submitted now, ahead of the new session's record.
            let ended = self.end_locked(&mut sessions, &mut slot, &existing);
            drop(slot);
            if ended.deferred.is_some() {
                // Its store entries move to other members first; the new session waits.
                drop(sessions);
                self.finish_end(&existing, ended);
                return Ok(None);
            }
            replaced = Some((existing, ended));
        }
        let mut session = Session::new(
            req.version,
            req.expiry_interval,
            self.config.queue_limits(),
            req.window,
        );
        session.owner = req.owner.clone();
        let handle = Arc::new(SessionHandle::new(
            self.registry.new_key(),
            Arc::clone(&req.client_id),
            session,
            Some(link.clone()),
        ));
        if let Some(cluster) = &self.cluster
            && req.expiry_interval != 0
        {
            handle.start_following(cluster.applied.load(std::sync::atomic::Ordering::Relaxed));
        }
        self.record_session(handle.store_key(), &mut handle.slot.lock(), pending);
        sessions.insert(Arc::clone(&handle));
        drop(sessions);
        if let Some((old, ended)) = replaced {
            self.finish_end(&old, ended);
        }
        Ok(Some((handle, false)))
    }

    /// Records a connected session in the store if it is durable (or was, until now).
    fn record_session(&self, key: SessionKey, slot: &mut Slot, pending: &mut Pending) {
        if !self.persistent() || !(slot.session.is_durable() || slot.persisted) {
            return;
        }
        // A session no longer durable (MQTT 5.0 resume with expiry 0) keeps its record, and the
        // backlog it may hold in the store, until it ends with this connection; a restart
        // discards it (expiry 0).
        let incarnation = key.incarnation;
        pending.push(Op::PutSession {
            session: key,
            record: SessionRecord {
                version: slot.session.version,
                expiry_interval: slot.session.expiry_interval,
                disconnected_at: 0,
                incarnation,
                owner: slot.session.owner.clone(),
            },
        });
        slot.persisted = true;
    }

    /// Detaches connection `conn_id` from its session. An ephemeral session ends now; a
    /// durable one is recorded as disconnected and, with a finite expiry, gets a timer.
    /// Returns the absence that begins (for the will delay), or `None` if the connection was
    /// no longer attached (it was taken over) or the session ended.
    pub(crate) fn detach(&self, handle: &Arc<SessionHandle>, conn_id: u64) -> Option<Absence> {
        // The registry lock keeps a reconnect from slipping between detach and end.
        let mut sessions = self.registry.sessions.lock();
        let mut slot = handle.slot.lock();
        if slot.conn.as_ref().map(|c| c.id) != Some(conn_id) {
            return None;
        }
        handle.set_conn(&mut slot, None);
        // Read under the lock that makes the detach visible, so anyone who sees it can count
        // on the timers below starting from no later than now.
        let since = self.clock.now();
        let expiry = slot.session.expiry_interval;
        if expiry == 0 {
            let ended = self.end_locked(&mut sessions, &mut slot, handle);
            drop(slot);
            drop(sessions);
            self.finish_end(handle, ended);
            return None;
        }
        drop(sessions);
        if self.persistent() {
            self.submit(vec![Op::PutSession {
                session: handle.store_key(),
                record: SessionRecord {
                    version: slot.session.version,
                    expiry_interval: expiry,
                    disconnected_at: unix_secs(self.clock.wall()),
                    incarnation: handle.key,
                    owner: slot.session.owner.clone(),
                },
            }]);
            slot.persisted = true;
        }
        let token = self.mark_away(&mut slot);
        drop(slot);
        if expiry != NEVER_EXPIRES {
            let deadline = since + Duration::from_secs(u64::from(expiry));
            self.schedule_expiry(handle, token.clone(), deadline);
        }
        Some(Absence { since, token })
    }

    /// A fresh token for the session's current absence.
    pub(super) fn mark_away(&self, slot: &mut Slot) -> CancellationToken {
        let away = CancellationToken::new();
        if let Some(old) = slot.away.replace(away.clone()) {
            old.cancel();
        }
        away
    }

    /// Ends a session unless `still` says otherwise, judged under the registry and slot locks
    /// so that no connection can attach in between.
    pub(crate) fn end_session_if(
        &self,
        handle: &Arc<SessionHandle>,
        still: impl FnOnce(&Slot) -> bool,
    ) {
        let mut sessions = self.registry.sessions.lock();
        let mut slot = handle.slot.lock();
        if slot.ended || !still(&slot) {
            return;
        }
        let ended = self.end_locked(&mut sessions, &mut slot, handle);
        drop(slot);
        drop(sessions);
        self.finish_end(handle, ended);
    }

    /// Marks a session ended, removes it from the registry and deletes it from the store;
    /// returns what [`Broker::finish_end`] does once the locks are released. A durable session
    /// holding Shared Subscription messages is deleted from the store only once those have
    /// moved to other members (see [`Ended::deferred`]).
    fn end_locked(
        &self,
        sessions: &mut MutexGuard<'_, SessionMap>,
        slot: &mut Slot,
        handle: &Arc<SessionHandle>,
    ) -> Ended {
        slot.ended = true;
        if let Some(away) = slot.away.take() {
            away.cancel();
        }
        let shared = slot.session.outbound.holds_shared();
        let stored = slot.session.outbound.stored_range().filter(|_| shared);
        // Entries of the stored-only part whose commit has not returned yet: the store is
        // read only once they have (or they would be missed, though acknowledged).
        let unsettled = if stored.is_some() {
            slot.session.outbound.unsettled_gates()
        } else {
            Vec::new()
        };
        let (discarded, moving) = slot.session.outbound.close();
        // Publishers paused on this session's queue retry (and find it gone).
        handle.notify_room();
        let mut deferred = None;
        if slot.persisted {
            slot.persisted = false;
            let key = handle.store_key();
            if moving.is_empty() && stored.is_none() {
                self.submit(vec![Op::DeleteSession { session: key }]);
            } else {
                let done = CancellationToken::new();
                self.registry
                    .ending
                    .lock()
                    .insert(Arc::clone(&handle.client_id), done.clone());
                deferred = Some(Deferred {
                    key,
                    stored,
                    unsettled,
                    done,
                });
            }
        }
        if sessions
            .get(&handle.client_id)
            .is_some_and(|h| Arc::ptr_eq(h, handle))
        {
            sessions.remove(&handle.client_id);
        }
        debug!(client_id = &*handle.client_id, discarded, "session ended");
        Ended {
            filters: slot.session.subscriptions.keys().cloned().collect(),
            moving,
            deferred,
        }
    }

    /// The part of ending a session done without locks: wake will timers, drop subscriptions,
    /// and move its unacknowledged Shared Subscription messages to other members.
    fn finish_end(&self, handle: &Arc<SessionHandle>, ended: Ended) {
        handle.end();
        if handle.follows_stream() {
            crate::cluster::follow::ended(self, handle);
        }
        self.router
            .unsubscribe_all(ended.filters.iter(), handle.key);
        if ended.moving.is_empty() && ended.deferred.is_none() {
            return;
        }
        let Some(broker) = self.me.upgrade() else {
            return;
        };
        if !broker.persistent() {
            let ctx = broker.route_context(QueueFullPolicy::Backpressure);
            let total = ended.moving.len();
            let (moved, elsewhere) = broker.router.redistribute(ended.moving, &ctx, None);
            if elsewhere.is_empty() {
                log_moved(&handle.client_id, moved, total - moved);
                return;
            }
            let client_id = Arc::clone(&handle.client_id);
            let elsewhere = broker.give_back_ids(None, elsewhere.into_iter().map(|(_, d)| d));
            tokio::spawn(async move {
                // Held nowhere else: tried until JetStream has them (or the broker stops),
                // under the same ids, so that a write JetStream took is not made twice.
                let given = elsewhere.len();
                let mut given_back = broker.give_back(&elsewhere).await;
                while !given_back {
                    error!(
                        client_id = &*client_id,
                        "could not give an ended session's shared subscription messages back to the cluster; retrying"
                    );
                    if !broker.pause_before_retry().await {
                        break;
                    }
                    given_back = broker.give_back(&elsewhere).await;
                }
                let moved = moved + if given_back { given } else { 0 };
                log_moved(&client_id, moved, total - moved);
            });
            return;
        }
        let client_id = Arc::clone(&handle.client_id);
        tokio::spawn(async move {
            broker
                .move_shared(client_id, ended.moving, ended.deferred)
                .await;
        });
    }

    /// Moves the unacknowledged Shared Subscription messages of an ended session to other
    /// members, `moving` (from memory) first, then those in its stored-only backlog, a chunk
    /// per commit; each commit also deletes the moved entries from the old session, so a crash
    /// neither loses nor repeats one. Then the old session is deleted from the store. A store
    /// error is retried every second until it succeeds or the broker stops (meanwhile a new
    /// session for the client id waits): giving up would lose acknowledged messages.
    async fn move_shared(
        self: Arc<Broker>,
        client_id: Arc<str>,
        moving: Vec<Delivery>,
        deferred: Option<Deferred>,
    ) {
        // Lets a new session for the client id go ahead, however this ends.
        let _finished = deferred.as_ref().map(|d| Finished {
            broker: Arc::clone(&self),
            client_id: Arc::clone(&client_id),
            done: d.done.clone(),
        });
        // Every publisher's commit these deliveries depend on must have returned: an entry
        // still on its way to the store would be missed by the read, and a delivery whose
        // publisher was never acknowledged must not move at all.
        let mut gates: Vec<Arc<crate::session::CommitGate>> =
            moving.iter().filter_map(|d| d.gate.clone()).collect();
        gates.extend(deferred.iter().flat_map(|d| d.unsettled.iter().cloned()));
        for gate in gates {
            tokio::select! {
                _ = gate.settled() => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
        let moving: Vec<Delivery> = moving
            .into_iter()
            .filter(|d| d.gate.as_ref().is_none_or(|g| g.state() == GateState::Open))
            .collect();
        let old = deferred.as_ref().map(|d| d.key.clone());
        let (mut moved, mut left) = (0, 0);
        let mut chunk = Some(moving);
        let mut next = deferred
            .as_ref()
            .and_then(|d| d.stored)
            .map(|(from, _)| from);
        while let Some(deliveries) = chunk.take() {
            let Some((m, l)) = self.move_chunk(&client_id, old.as_ref(), deliveries).await else {
                return;
            };
            moved += m;
            left += l;
            let (Some(old), Some(from), Some(store)) = (&old, next, &self.store) else {
                continue;
            };
            let request = LoadRequest {
                from,
                before: u64::MAX,
                max_bytes: MOVE_CHUNK_BYTES,
            };
            let read = loop {
                match store.read_queue(old.clone(), request).await {
                    Ok(read) => break read,
                    Err(e) => {
                        error!(client_id = &*client_id, error = %e, "could not read the backlog of an ended session; retrying");
                        if !self.pause_before_retry().await {
                            return;
                        }
                    }
                }
            };
            next = read.last().and_then(|d| d.seq).map(|seq| seq.get() + 1);
            chunk = (!read.is_empty()).then_some(read);
        }
        log_moved(&client_id, moved, left);
        let Some(old) = old else {
            return;
        };
        while !self
            .commit(vec![Op::DeleteSession {
                session: old.clone(),
            }])
            .await
        {
            error!(
                client_id = &*client_id,
                "could not delete an ended session from the store; retrying"
            );
            if !self.pause_before_retry().await {
                return;
            }
        }
    }

    /// Moves one chunk of an ended session's deliveries (see [`Broker::move_shared`]) and
    /// deletes their entries from the old session `old`, in one commit. Returns how many found
    /// a member and how many did not, or `None` if the broker stopped first (a durable session then stays in the
    /// store and hands its messages on after the restart, see `store::load::drop_expired`).
    async fn move_chunk(
        &self,
        client_id: &str,
        old: Option<&SessionKey>,
        deliveries: Vec<Delivery>,
    ) -> Option<(usize, usize)> {
        let shared: Vec<Delivery> = deliveries
            .iter()
            .filter(|d| d.group.is_some() && d.qos != crate::codec::QoS::AtMostOnce)
            .cloned()
            .collect();
        let total = shared.len();
        // Those not given back to the cluster yet.
        let mut rest = shared;
        // Those given back (or being given back): never handed to a member here after that,
        // nor written again once JetStream confirmed them (`confirmed`), though the commit
        // fails and all this is tried again. A write tried again carries the same id, so
        // that JetStream drops one it took already.
        let mut given: Vec<(Delivery, String)> = Vec::new();
        let mut confirmed = 0;
        loop {
            if self.shutdown.is_cancelled() {
                // The other members are going too.
                return None;
            }
            let mut pending = Pending::new(true);
            if let Some(old) = old {
                for seq in deliveries.iter().filter_map(|d| d.seq) {
                    pending.push_async(Op::DeleteEntry {
                        session: old.clone(),
                        seq,
                    });
                }
            }
            let ctx = self.route_context(QueueFullPolicy::Backpressure);
            let (mut moved, elsewhere) =
                self.router
                    .redistribute(rest.clone(), &ctx, Some(&mut pending));
            if !elsewhere.is_empty() {
                let mut out = vec![false; rest.len()];
                for (i, _) in &elsewhere {
                    out[*i] = true;
                }
                let mut i = 0;
                rest.retain(|_| {
                    i += 1;
                    !out[i - 1]
                });
                given.extend(self.give_back_ids(old, elsewhere.into_iter().map(|(_, d)| d)));
            }
            // To the group's members on other nodes, before the old entries go.
            if confirmed < given.len() {
                if !self.give_back(&given[confirmed..]).await {
                    pending.release(false);
                    error!(
                        client_id,
                        "could not give an ended session's shared subscription messages back to the cluster; retrying"
                    );
                    if !self.pause_before_retry().await {
                        return None;
                    }
                    continue;
                }
                confirmed = given.len();
            }
            moved += given.len();
            let committed = self.commit(std::mem::take(&mut pending.ops)).await;
            // A failed commit drops the copies just placed (their gate fails).
            pending.release(committed);
            if committed {
                return Some((moved, total - moved));
            }
            error!(
                client_id,
                "could not commit the move of an ended session's shared subscription messages; retrying"
            );
            if !self.pause_before_retry().await {
                return None;
            }
        }
    }

    /// Waits a second (real time: it paces retries against the store) before a retry; false
    /// if the broker is shutting down.
    async fn pause_before_retry(&self) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => true,
            _ = self.shutdown.cancelled() => false,
        }
    }

    /// Ends the session at `deadline` (on the broker's clock) unless a connection attaches
    /// first (which cancels `away`).
    pub(super) fn schedule_expiry(
        &self,
        handle: &Arc<SessionHandle>,
        away: CancellationToken,
        deadline: Instant,
    ) {
        let Some(broker) = self.me.upgrade() else {
            return;
        };
        let handle = Arc::clone(handle);
        tokio::spawn(async move {
            tokio::select! {
                _ = broker.clock.sleep_until(deadline) => {}
                _ = away.cancelled() => return,
                _ = broker.shutdown.cancelled() => return,
            }
            broker.end_session_if(&handle, |slot| {
                let expired = slot.conn.is_none() && !away.is_cancelled();
                if expired {
                    Metrics::inc(&broker.metrics.sessions_expired);
                    info!(client_id = &*handle.client_id, "session expired");
                }
                expired
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::QueueLimits;

    fn handle(key: u64, client_id: &str) -> Arc<SessionHandle> {
        let session = Session::new(Version::V311, 0, QueueLimits::UNLIMITED, 10);
        Arc::new(SessionHandle::new(key, Arc::from(client_id), session, None))
    }

    #[test]
    fn the_session_map_finds_replaces_and_removes_across_its_shards() {
        let mut map = SessionMap::default();
        let n = 10 * SHARDS as u64;
        for i in 0..n {
            map.insert(handle(i, &format!("client-{i}")));
        }
        assert_eq!(map.values().count() as u64, n);
        assert!(
            map.shards.iter().all(|s| !s.is_empty()),
            "every shard holds some"
        );
        for i in 0..n {
            let id = format!("client-{i}");
            assert!(map.contains_key(&id));
            assert_eq!(map.get(&id).map(|h| h.key), Some(i));
        }
        // A second session for a client id replaces the first.
        map.insert(handle(n, "client-7"));
        assert_eq!(map.get("client-7").map(|h| h.key), Some(n));
        assert_eq!(map.values().count() as u64, n);

        assert_eq!(map.remove("client-7").map(|h| h.key), Some(n));
        assert!(map.remove("client-7").is_none());
        assert!(!map.contains_key("client-7"));
        assert!(map.get("nobody").is_none());
        assert_eq!(map.values().count() as u64, n - 1);
    }
}
