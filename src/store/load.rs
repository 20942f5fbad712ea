//! Reading durable state at startup, and removing sessions that expired while the broker was
//! down.

use std::collections::HashMap;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable};

use crate::session::{Message, NEVER_EXPIRES, SubOptions};

use super::StoreError;
use super::apply::{Op, SessionKey, Tables};
use super::record::{
    EntryRecord, SessionRecord, decode_entry, decode_message, decode_session, decode_subscription,
    unix_now,
};
use super::tables::{INCOMING_QOS2, MESSAGES, QUEUE, RETAINED, SESSIONS, SUBSCRIPTIONS};

/// A durable session as found in the store.
#[derive(Debug, Clone)]
pub struct LoadedSession {
    /// Client id.
    pub client_id: String,
    /// Its record.
    pub record: SessionRecord,
    /// Subscriptions.
    pub subscriptions: Vec<(String, SubOptions)>,
    /// Queue entries in order, with their messages.
    pub entries: Vec<(u64, EntryRecord, Arc<Message>)>,
    /// Inbound QoS 2 packet ids awaiting PUBREL.
    pub incoming: Vec<u16>,
}

impl LoadedSession {
    /// Seconds left before the session expires, counted from its disconnection (a session that
    /// was connected when the broker stopped counts from now). `None` = never expires.
    pub fn remaining_expiry(&self, now: u64) -> Option<u64> {
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
pub struct Loaded {
    /// Durable sessions that have not expired.
    pub sessions: Vec<LoadedSession>,
    /// Retained messages.
    pub retained: Vec<Message>,
    /// Highest message id in use.
    pub max_message_id: u64,
}

fn corrupt(path: &std::path::Path, what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        what: what.to_string(),
    }
}

/// Reads the whole store.
pub fn load(db: &Database, path: &std::path::Path) -> Result<Loaded, StoreError> {
    let err = |e: redb::Error| corrupt(path, e);
    let txn = db.begin_read().map_err(|e| err(e.into()))?;
    let sessions_t = txn.open_table(SESSIONS).map_err(|e| err(e.into()))?;
    let subs_t = txn.open_table(SUBSCRIPTIONS).map_err(|e| err(e.into()))?;
    let messages_t = txn.open_table(MESSAGES).map_err(|e| err(e.into()))?;
    let queue_t = txn.open_table(QUEUE).map_err(|e| err(e.into()))?;
    let incoming_t = txn.open_table(INCOMING_QOS2).map_err(|e| err(e.into()))?;
    let retained_t = txn.open_table(RETAINED).map_err(|e| err(e.into()))?;

    let mut sessions: HashMap<String, LoadedSession> = HashMap::new();
    for item in sessions_t.iter().map_err(|e| err(e.into()))? {
        let (k, v) = item.map_err(|e| err(e.into()))?;
        let record = decode_session(v.value()).map_err(|e| corrupt(path, e.0))?;
        let client_id = k.value().to_string();
        sessions.insert(
            client_id.clone(),
            LoadedSession {
                client_id,
                record,
                subscriptions: Vec::new(),
                entries: Vec::new(),
                incoming: Vec::new(),
            },
        );
    }
    for item in subs_t.iter().map_err(|e| err(e.into()))? {
        let (k, v) = item.map_err(|e| err(e.into()))?;
        let (client, filter) = k.value();
        let options = decode_subscription(v.value()).map_err(|e| corrupt(path, e.0))?;
        if let Some(s) = sessions.get_mut(client) {
            s.subscriptions.push((filter.to_string(), options));
        }
    }
    let mut messages: HashMap<u64, Arc<Message>> = HashMap::new();
    let mut max_message_id = 0;
    for item in queue_t.iter().map_err(|e| err(e.into()))? {
        let (k, v) = item.map_err(|e| err(e.into()))?;
        let (client, seq) = k.value();
        let entry = decode_entry(v.value()).map_err(|e| corrupt(path, e.0))?;
        max_message_id = max_message_id.max(entry.message_id);
        let message = match messages.get(&entry.message_id) {
            Some(m) => Arc::clone(m),
            None => {
                let body = messages_t
                    .get(entry.message_id)
                    .map_err(|e| err(e.into()))?
                    .ok_or_else(|| {
                        corrupt(path, format!("message {} missing", entry.message_id))
                    })?;
                let m = Arc::new(
                    decode_message(entry.message_id, body.value())
                        .map_err(|e| corrupt(path, e.0))?,
                );
                messages.insert(entry.message_id, Arc::clone(&m));
                m
            }
        };
        if let Some(s) = sessions.get_mut(client) {
            s.entries.push((seq, entry, message));
        }
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
        retained.push(decode_message(0, v.value()).map_err(|e| corrupt(path, e.0))?);
    }
    if let Some((k, _)) = messages_t.last().map_err(|e| err(e.into()))? {
        max_message_id = max_message_id.max(k.value());
    }
    let mut sessions: Vec<LoadedSession> = sessions.into_values().collect();
    sessions.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    Ok(Loaded {
        sessions,
        retained,
        max_message_id,
    })
}

/// Removes sessions whose expiry passed while the broker was down; returns the survivors.
pub fn drop_expired(
    db: &Database,
    path: &std::path::Path,
    loaded: &mut Loaded,
) -> Result<usize, StoreError> {
    let now = unix_now();
    let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut loaded.sessions)
        .into_iter()
        .partition(|s| s.record.disconnected_at != 0 && s.remaining_expiry(now) == Some(0));
    loaded.sessions = kept;
    if expired.is_empty() {
        return Ok(0);
    }
    let err = |e: redb::Error| StoreError::Commit(format!("{}: {e}", path.display()));
    let txn = db.begin_write().map_err(|e| err(e.into()))?;
    {
        let mut tables = Tables::open(&txn).map_err(err)?;
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
    }
    txn.commit().map_err(|e| err(e.into()))?;
    Ok(expired.len())
}
