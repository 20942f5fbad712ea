//! Applying a batch of operations inside one write transaction.

use std::collections::HashMap;
use std::sync::Arc;

use redb::{ReadableTable, Table, WriteTransaction};

use crate::clock::Clock;
use crate::session::{Message, MessageId, Seq, SubOptions};

use super::record::{
    EntryRecord, EntryState, SessionRecord, decode_entry, decode_session, encode_entry,
    encode_message, encode_session, encode_subscription, entry_message,
};
use super::tables::{
    CLUSTER, INCOMING_QOS2, MESSAGE_REFS, MESSAGES, QUEUE, RETAINED, SESSIONS, SUBSCRIPTIONS,
};

/// Which session an operation is about: its client id and the incarnation of the session
/// under that id. An operation for an incarnation that is no longer the stored one (the session
/// ended, or a clean start replaced it, while the operation was in flight) is skipped, so late
/// writes never reach a later session with the same client id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionKey {
    /// Client id.
    pub client: Arc<str>,
    /// Unique id of this session incarnation.
    pub incarnation: u64,
}

/// One change to durable state.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// Creates or updates a session.
    PutSession {
        /// The session.
        session: SessionKey,
        /// The record.
        record: SessionRecord,
    },
    /// Deletes a session with its subscriptions, queue and inbound QoS 2 ids.
    DeleteSession {
        /// The session.
        session: SessionKey,
    },
    /// Adds or replaces a subscription.
    PutSubscription {
        /// The session.
        session: SessionKey,
        /// Topic filter.
        filter: String,
        /// Options.
        options: SubOptions,
    },
    /// Removes a subscription.
    DeleteSubscription {
        /// The session.
        session: SessionKey,
        /// Topic filter.
        filter: String,
    },
    /// Appends a message to a session's queue, storing the message if it is new.
    Enqueue {
        /// The session.
        session: SessionKey,
        /// Queue position.
        seq: Seq,
        /// The message (its `id` keys the messages table).
        message: Arc<Message>,
        /// The entry.
        entry: EntryRecord,
    },
    /// Records that a queued message was sent or released.
    UpdateEntry {
        /// The session.
        session: SessionKey,
        /// Queue position.
        seq: Seq,
        /// New state.
        state: EntryState,
        /// Packet id in use.
        packet_id: u16,
    },
    /// Removes a completed (or expired) queue entry.
    DeleteEntry {
        /// The session.
        session: SessionKey,
        /// Queue position.
        seq: Seq,
    },
    /// Records an inbound QoS 2 packet id awaiting PUBREL.
    PutIncoming {
        /// The session.
        session: SessionKey,
        /// Packet id.
        packet_id: u16,
    },
    /// Forgets an inbound QoS 2 packet id after PUBREL.
    DeleteIncoming {
        /// The session.
        session: SessionKey,
        /// Packet id.
        packet_id: u16,
    },
    /// Stores the retained message of its topic.
    PutRetained {
        /// The message.
        message: Arc<Message>,
    },
    /// Removes the retained message of a topic.
    DeleteRetained {
        /// Topic.
        topic: Arc<str>,
    },
    /// Records the last sequence of cluster stream `stream` whose messages are committed
    /// here (they are read in order).
    PutClusterSequence {
        /// The stream's name.
        stream: Arc<str>,
        /// The sequence.
        sequence: u64,
    },
}

impl Op {
    /// The session a per-session operation is about.
    fn session(&self) -> Option<&SessionKey> {
        match self {
            Op::PutSession { session, .. }
            | Op::DeleteSession { session }
            | Op::PutSubscription { session, .. }
            | Op::DeleteSubscription { session, .. }
            | Op::Enqueue { session, .. }
            | Op::UpdateEntry { session, .. }
            | Op::DeleteEntry { session, .. }
            | Op::PutIncoming { session, .. }
            | Op::DeleteIncoming { session, .. } => Some(session),
            Op::PutRetained { .. } | Op::DeleteRetained { .. } | Op::PutClusterSequence { .. } => {
                None
            }
        }
    }
}

/// The open tables of one write transaction.
pub(super) struct Tables<'txn> {
    sessions: Table<'txn, &'static str, &'static [u8]>,
    subscriptions: Table<'txn, (&'static str, &'static str), &'static [u8]>,
    messages: Table<'txn, u64, &'static [u8]>,
    refs: Table<'txn, u64, u32>,
    queue: Table<'txn, (&'static str, u64), &'static [u8]>,
    incoming: Table<'txn, (&'static str, u16), u8>,
    retained: Table<'txn, &'static str, &'static [u8]>,
    cluster: Table<'txn, &'static str, u64>,
    /// Change in the bytes of the messages table made through these tables.
    pub message_bytes_delta: i64,
    /// Stored incarnation per client id, as read or written in this transaction (`None`: no
    /// session), so a batch of operations for one session reads its record once.
    incarnations: HashMap<Arc<str>, Option<u64>>,
    /// Turns message expiry times into the wall-clock times that are stored.
    clock: Clock,
}

impl<'txn> Tables<'txn> {
    /// Opens (creating if needed) every table; message expiry is stored by `clock`.
    pub(super) fn open(
        txn: &'txn WriteTransaction,
        clock: &Clock,
    ) -> Result<Tables<'txn>, redb::Error> {
        Ok(Tables {
            sessions: txn.open_table(SESSIONS)?,
            subscriptions: txn.open_table(SUBSCRIPTIONS)?,
            messages: txn.open_table(MESSAGES)?,
            refs: txn.open_table(MESSAGE_REFS)?,
            queue: txn.open_table(QUEUE)?,
            incoming: txn.open_table(INCOMING_QOS2)?,
            retained: txn.open_table(RETAINED)?,
            cluster: txn.open_table(CLUSTER)?,
            message_bytes_delta: 0,
            incarnations: HashMap::new(),
            clock: clock.clone(),
        })
    }

    /// Applies one operation.
    pub(super) fn apply(&mut self, op: &Op) -> Result<(), redb::Error> {
        match op {
            Op::PutSession { session, record } => {
                let record = SessionRecord {
                    incarnation: session.incarnation,
                    ..record.clone()
                };
                self.sessions
                    .insert(&*session.client, encode_session(&record).as_slice())?;
                self.incarnations
                    .insert(Arc::clone(&session.client), Some(session.incarnation));
                return Ok(());
            }
            Op::PutRetained { message } => {
                self.retained.insert(
                    &*message.topic,
                    encode_message(message, &self.clock).as_slice(),
                )?;
                return Ok(());
            }
            Op::DeleteRetained { topic } => {
                self.retained.remove(&**topic)?;
                return Ok(());
            }
            Op::PutClusterSequence { stream, sequence } => {
                self.cluster
                    .insert(format!("stream:{stream}").as_str(), *sequence)?;
                return Ok(());
            }
            _ => {}
        }
        let Some(session) = op.session() else {
            return Ok(());
        };
        if !self.is_current(session)? {
            return Ok(());
        }
        let client = &*session.client;
        match op {
            Op::DeleteSession { .. } => self.delete_session(client)?,
            Op::PutSubscription {
                filter, options, ..
            } => {
                self.subscriptions.insert(
                    (client, filter.as_str()),
                    encode_subscription(options).as_slice(),
                )?;
            }
            Op::DeleteSubscription { filter, .. } => {
                self.subscriptions.remove((client, filter.as_str()))?;
            }
            Op::Enqueue {
                seq,
                message,
                entry,
                ..
            } => {
                let record = encode_entry(entry, &self.clock);
                if entry.inline.is_some() {
                    self.message_bytes_delta += record.len() as i64;
                } else {
                    let id = entry.message_id;
                    let refs = self.refs.get(id)?.map(|g| g.value());
                    match refs {
                        Some(n) => {
                            self.refs.insert(id, n.saturating_add(1))?;
                        }
                        None => {
                            let body = encode_message(message, &self.clock);
                            self.message_bytes_delta += body.len() as i64;
                            self.messages.insert(id, body.as_slice())?;
                            self.refs.insert(id, 1)?;
                        }
                    }
                }
                self.queue.insert((client, seq.get()), record.as_slice())?;
            }
            Op::UpdateEntry {
                seq,
                state,
                packet_id,
                ..
            } => {
                let current = self
                    .queue
                    .get((client, seq.get()))?
                    .map(|g| decode_entry(g.value(), &self.clock));
                if let Some(Ok(mut entry)) = current {
                    entry.state = *state;
                    entry.packet_id = *packet_id;
                    self.queue.insert(
                        (client, seq.get()),
                        encode_entry(&entry, &self.clock).as_slice(),
                    )?;
                }
            }
            Op::DeleteEntry { seq, .. } => {
                let removed = self
                    .queue
                    .remove((client, seq.get()))?
                    .map(|g| (g.value().len(), entry_message(g.value()).ok()));
                self.forget_entry(removed)?;
            }
            Op::PutIncoming { packet_id, .. } => {
                self.incoming.insert((client, *packet_id), 0)?;
            }
            Op::DeleteIncoming { packet_id, .. } => {
                self.incoming.remove((client, *packet_id))?;
            }
            Op::PutSession { .. }
            | Op::PutRetained { .. }
            | Op::DeleteRetained { .. }
            | Op::PutClusterSequence { .. } => {}
        }
        Ok(())
    }

    /// True if `session` is the incarnation the store holds for its client id.
    fn is_current(&mut self, session: &SessionKey) -> Result<bool, redb::Error> {
        if let Some(known) = self.incarnations.get(&session.client) {
            return Ok(*known == Some(session.incarnation));
        }
        let stored = self
            .sessions
            .get(&*session.client)?
            .and_then(|g| decode_session(g.value()).ok())
            .map(|r| r.incarnation);
        self.incarnations
            .insert(Arc::clone(&session.client), stored);
        Ok(stored == Some(session.incarnation))
    }

    /// Accounts for a removed queue entry (its length and what it refers to): an inline
    /// message leaves with it, a shared one loses a reference.
    fn forget_entry(
        &mut self,
        removed: Option<(usize, Option<(u64, bool)>)>,
    ) -> Result<(), redb::Error> {
        match removed {
            Some((len, Some((_, true)))) => {
                self.message_bytes_delta -= len as i64;
                Ok(())
            }
            Some((_, Some((id, false)))) => self.release_message(id),
            _ => Ok(()),
        }
    }

    fn release_message(&mut self, id: u64) -> Result<(), redb::Error> {
        let refs = self.refs.get(id)?.map(|g| g.value()).unwrap_or(0);
        if refs <= 1 {
            self.refs.remove(id)?;
            if let Some(old) = self.messages.remove(id)? {
                self.message_bytes_delta -= old.value().len() as i64;
            }
        } else {
            self.refs.insert(id, refs - 1)?;
        }
        Ok(())
    }

    fn delete_session(&mut self, client: &str) -> Result<(), redb::Error> {
        self.sessions.remove(client)?;
        self.incarnations.insert(Arc::from(client), None);
        let mut removed = Vec::new();
        for item in self
            .queue
            .extract_from_if((client, 0u64)..=(client, u64::MAX), |_, _| true)?
        {
            let (_, value) = item?;
            removed.push((value.value().len(), entry_message(value.value()).ok()));
        }
        for entry in removed {
            self.forget_entry(Some(entry))?;
        }
        self.incoming
            .retain_in((client, 0u16)..=(client, u16::MAX), |_, _| false)?;
        let mut filters = Vec::new();
        for item in self.subscriptions.range((client, "")..)? {
            let (key, _) = item?;
            let (owner, filter) = key.value();
            if owner != client {
                break;
            }
            filters.push(filter.to_string());
        }
        for filter in filters {
            self.subscriptions.remove((client, filter.as_str()))?;
        }
        Ok(())
    }
}

/// The queue entry of `delivery`, whose message has store id `id`, as queued (not yet sent).
pub(crate) fn delivery_entry(id: MessageId, delivery: &crate::session::Delivery) -> EntryRecord {
    EntryRecord {
        group: delivery.group.clone(),
        ..entry_for(
            id,
            delivery.qos,
            delivery.retain,
            &delivery.subscription_ids,
        )
    }
}

/// An entry record for a message queued with `qos`, `retain` and subscription `ids`.
pub(crate) fn entry_for(
    message_id: MessageId,
    qos: crate::codec::QoS,
    retain: bool,
    ids: &[u32],
) -> EntryRecord {
    EntryRecord {
        message_id: message_id.get(),
        qos,
        retain,
        state: EntryState::Queued,
        packet_id: 0,
        subscription_ids: ids.to_vec(),
        inline: None,
        group: None,
    }
}
