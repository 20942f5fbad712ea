//! Reading durable state at startup, and removing sessions that expired while the broker was
//! down.

use std::collections::HashMap;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable};

use crate::clock::Clock;
use crate::session::{Delivery, Message, NEVER_EXPIRES, SubOptions, message_cost};

use super::StoreError;
use super::apply::{Op, SessionKey, Tables};
use super::record::{
    CorruptRecord, EntryRecord, EntryState, SessionRecord, decode_entry, decode_message,
    decode_session, decode_subscription, unix_secs,
};
use super::tables::{CLUSTER, INCOMING_QOS2, MESSAGES, QUEUE, RETAINED, SESSIONS, SUBSCRIPTIONS};

/// A durable session as found in the store.
#[derive(Debug, Clone)]
pub(crate) struct LoadedSession {
    /// Client id.
    pub client_id: String,
    /// Its record.
    pub record: SessionRecord,
    /// Subscriptions.
    pub subscriptions: Vec<(String, SubOptions)>,
    /// Queue entries that were in flight (sent, or released), in order, with their messages.
    pub entries: Vec<(u64, EntryRecord, Arc<Message>)>,
    /// Queue entries not sent yet, left in the store: first position, count and bytes (as
    /// counted by [`crate::session::delivery_cost`]). Read back as the client drains.
    pub stored: Option<(u64, usize, u64)>,
    /// Highest queue position in use.
    pub max_seq: u64,
    /// Inbound QoS 2 packet ids awaiting PUBREL.
    pub incoming: Vec<u16>,
    /// Some queue entry came through a Shared Subscription.
    pub holds_shared: bool,
}

impl LoadedSession {
    /// Seconds left before the session expires, counted from its disconnection (a session that
    /// was connected when the broker stopped counts from now). `None` = never expires.
    pub(crate) fn remaining_expiry(&self, now: u64) -> Option<u64> {
        if self.record.expiry_interval == NEVER_EXPIRES {
            return None;
        }
        let since = match self.record.disconnected_at {
            0 => 0,
            at => now.saturating_sub(at),
        };
        Some(u64::from(self.record.expiry_interval).saturating_sub(since))
    }
}

/// Everything the store holds, ready to rebuild the broker's memory.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// Durable sessions that have not expired.
    pub sessions: Vec<LoadedSession>,
    /// Retained messages.
    pub retained: Vec<Message>,
    /// The last sequence of each cluster stream whose messages are committed here, by
    /// stream name.
    pub cluster_sequences: HashMap<String, u64>,
    /// Highest message id in use.
    pub max_message_id: u64,
    /// Bytes of the messages table (the records of queued messages).
    pub message_bytes: u64,
}

/// Reads the whole store; message expiry comes back on `clock`.
pub(super) fn load(
    db: &Database,
    path: &std::path::Path,
    clock: &Clock,
) -> Result<Loaded, StoreError> {
    let err = |e: redb::Error| StoreError::read(path, e);
    let corrupt = |e: CorruptRecord| StoreError::corrupt(path, e);
    let txn = db.begin_read().map_err(|e| err(e.into()))?;
    let sessions_t = txn.open_table(SESSIONS).map_err(|e| err(e.into()))?;
    let subs_t = txn.open_table(SUBSCRIPTIONS).map_err(|e| err(e.into()))?;
    let messages_t = txn.open_table(MESSAGES).map_err(|e| err(e.into()))?;
    let queue_t = txn.open_table(QUEUE).map_err(|e| err(e.into()))?;
    let incoming_t = txn.open_table(INCOMING_QOS2).map_err(|e| err(e.into()))?;
    let retained_t = txn.open_table(RETAINED).map_err(|e| err(e.into()))?;
    // Made by the first commit in cluster mode: absent from other stores.
    let mut cluster_sequences = HashMap::new();
    match txn.open_table(CLUSTER) {
        Ok(t) => {
            for item in t.iter().map_err(|e| err(e.into()))? {
                let (k, v) = item.map_err(|e| err(e.into()))?;
                if let Some(stream) = k.value().strip_prefix("stream:") {
                    cluster_sequences.insert(stream.to_string(), v.value());
                }
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(err(e.into())),
    }

    let mut sessions: HashMap<String, LoadedSession> = HashMap::new();
    for item in sessions_t.iter().map_err(|e| err(e.into()))? {
        let (k, v) = item.map_err(|e| err(e.into()))?;
        let record = decode_session(v.value()).map_err(corrupt)?;
        let client_id = k.value().to_string();
        sessions.insert(
            client_id.clone(),
            LoadedSession {
                client_id,
                record,
                subscriptions: Vec::new(),
                entries: Vec::new(),
                stored: None,
                max_seq: 0,
                incoming: Vec::new(),
                holds_shared: false,
            },
        );
    }
    for item in subs_t.iter().map_err(|e| err(e.into()))? {
        let (k, v) = item.map_err(|e| err(e.into()))?;
        let (client, filter) = k.value();
        let options = decode_subscription(v.value()).map_err(corrupt)?;
        if let Some(s) = sessions.get_mut(client) {
            s.subscriptions.push((filter.to_string(), options));
        }
    }
    let mut messages: HashMap<u64, Arc<Message>> = HashMap::new();
    let mut max_message_id = 0;
    let mut inline_bytes = 0u64;
    for item in queue_t.iter().map_err(|e| err(e.into()))? {
        let (k, v) = item.map_err(|e| err(e.into()))?;
        let (client, seq) = k.value();
        let entry = decode_entry(v.value(), clock).map_err(corrupt)?;
        max_message_id = max_message_id.max(entry.message_id);
        let Some(s) = sessions.get_mut(client) else {
            continue;
        };
        if entry.inline.is_some() {
            inline_bytes += v.value().len() as u64;
        }
        let message = match (&entry.inline, messages.get(&entry.message_id)) {
            (Some(m), _) => Arc::clone(m),
            (None, Some(m)) => Arc::clone(m),
            (None, None) => {
                let m = Arc::new(read_message(&messages_t, entry.message_id, path, clock)?);
                messages.insert(entry.message_id, Arc::clone(&m));
                m
            }
        };
        s.max_seq = s.max_seq.max(seq);
        s.holds_shared |= entry.group.is_some();
        if entry.state == EntryState::Queued {
            // Not sent yet: stays in the store until the client is back and drains.
            let cost = message_cost(&message);
            let stored = s.stored.get_or_insert((seq, 0, 0));
            stored.1 += 1;
            stored.2 += cost;
        } else {
            s.entries.push((seq, entry, message));
        }
        if messages.len() > 4096 {
            // Only a cache: a message shared by many queues is decoded once in a while.
            messages.clear();
        }
    }
    let mut message_bytes = inline_bytes;
    for item in messages_t.iter().map_err(|e| err(e.into()))? {
        let (_, v) = item.map_err(|e| err(e.into()))?;
        message_bytes += v.value().len() as u64;
    }
    for item in incoming_t.iter().map_err(|e| err(e.into()))? {
        let (k, _) = item.map_err(|e| err(e.into()))?;
        let (client, packet_id) = k.value();
        if let Some(s) = sessions.get_mut(client) {
            s.incoming.push(packet_id);
        }
    }
    let mut retained = Vec::new();
    for item in retained_t.iter().map_err(|e| err(e.into()))? {
        let (_, v) = item.map_err(|e| err(e.into()))?;
        retained.push(decode_message(0, v.value(), clock).map_err(corrupt)?);
    }
    if let Some((k, _)) = messages_t.last().map_err(|e| err(e.into()))? {
        max_message_id = max_message_id.max(k.value());
    }
    let mut sessions: Vec<LoadedSession> = sessions.into_values().collect();
    sessions.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    Ok(Loaded {
        sessions,
        retained,
        cluster_sequences,
        max_message_id,
        message_bytes,
    })
}

/// Removes sessions whose expiry passed (by `clock`'s wall time) while the broker was down,
/// and those that were to end with their connection (expiry 0); returns how many.
pub(super) fn drop_expired(
    db: &Database,
    path: &std::path::Path,
    loaded: &mut Loaded,
    clock: &Clock,
) -> Result<usize, StoreError> {
    let now = unix_secs(clock.wall());
    let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut loaded.sessions)
        .into_iter()
        .partition(|s| {
            let over = s.record.expiry_interval == 0
                || (s.record.disconnected_at != 0 && s.remaining_expiry(now) == Some(0));
            // One holding Shared Subscription messages is restored and ends at once, so that
            // they go to other members of their groups (MQTT 5.0 4.8.2).
            over && !holds_shared_messages(s)
        });
    loaded.sessions = kept;
    if expired.is_empty() {
        return Ok(0);
    }
    let err = |e: redb::Error| StoreError::Commit {
        path: path.to_path_buf(),
        source: Arc::new(e),
    };
    let txn = db.begin_write().map_err(|e| err(e.into()))?;
    let delta = {
        let mut tables = Tables::open(&txn, clock).map_err(err)?;
        for s in &expired {
            tables
                .apply(&Op::DeleteSession {
                    session: SessionKey {
                        client: Arc::from(s.client_id.as_str()),
                        incarnation: s.record.incarnation,
                    },
                })
                .map_err(err)?;
        }
        tables.message_bytes_delta
    };
    txn.commit().map_err(|e| err(e.into()))?;
    loaded.message_bytes = loaded.message_bytes.saturating_add_signed(delta);
    Ok(expired.len())
}

/// True if a session holds messages that came through a Shared Subscription.
fn holds_shared_messages(s: &LoadedSession) -> bool {
    s.holds_shared
}

fn read_message(
    messages_t: &impl ReadableTable<u64, &'static [u8]>,
    id: u64,
    path: &std::path::Path,
    clock: &Clock,
) -> Result<Message, StoreError> {
    let body = messages_t
        .get(id)
        .map_err(|e| StoreError::read(path, e))?
        .ok_or_else(|| StoreError::MissingMessage {
            path: path.to_path_buf(),
            id,
        })?;
    decode_message(id, body.value(), clock).map_err(|e| StoreError::corrupt(path, e))
}

/// Reads not-yet-sent queue entries of a session, positions `from..before`, until `max_bytes`
/// (at least one entry). Nothing is read if `session` is no longer the stored incarnation.
/// Message expiry comes back on `clock`.
pub(super) fn read_queue(
    db: &Database,
    path: &std::path::Path,
    session: &SessionKey,
    (from, before): (u64, u64),
    max_bytes: u64,
    clock: &Clock,
) -> Result<Vec<Delivery>, StoreError> {
    let err = |e: redb::Error| StoreError::read(path, e);
    let txn = db.begin_read().map_err(|e| err(e.into()))?;
    let sessions_t = txn.open_table(SESSIONS).map_err(|e| err(e.into()))?;
    let current = sessions_t
        .get(&*session.client)
        .map_err(|e| err(e.into()))?
        .and_then(|g| decode_session(g.value()).ok())
        .is_some_and(|r| r.incarnation == session.incarnation);
    if !current || from >= before {
        return Ok(Vec::new());
    }
    let queue_t = txn.open_table(QUEUE).map_err(|e| err(e.into()))?;
    let messages_t = txn.open_table(MESSAGES).map_err(|e| err(e.into()))?;
    let client = &*session.client;
    let mut out = Vec::new();
    let mut bytes = 0u64;
    let mut cache: Option<(u64, Arc<Message>)> = None;
    for item in queue_t
        .range((client, from)..(client, before))
        .map_err(|e| err(e.into()))?
    {
        let (k, v) = item.map_err(|e| err(e.into()))?;
        let (_, seq) = k.value();
        let entry = decode_entry(v.value(), clock).map_err(|e| StoreError::corrupt(path, e))?;
        if entry.state != EntryState::Queued {
            // Sent already (a retained message recorded as it went out): in memory.
            continue;
        }
        let message = match (&entry.inline, &cache) {
            (Some(m), _) => Arc::clone(m),
            (None, Some((id, m))) if *id == entry.message_id => Arc::clone(m),
            _ => {
                let m = Arc::new(read_message(&messages_t, entry.message_id, path, clock)?);
                cache = Some((entry.message_id, Arc::clone(&m)));
                m
            }
        };
        let mut delivery = Delivery::new(message, entry.qos, entry.retain, entry.subscription_ids);
        delivery.seq = crate::session::Seq::new(seq);
        delivery.group = entry.group;
        let cost = crate::session::delivery_cost(&delivery);
        if bytes + cost > max_bytes && !out.is_empty() {
            break;
        }
        bytes += cost;
        out.push(delivery);
    }
    Ok(out)
}
