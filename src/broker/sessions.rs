//! The session registry: attach a connection to a session (new, resumed or taken over),
//! detach it, and end sessions when they expire.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use parking_lot::Mutex;
use tracing::{debug, info, warn};

use crate::codec::Version;
use crate::session::{NEVER_EXPIRES, Session};
use crate::store::{Op, SessionRecord, record::unix_now};

use super::Broker;
use super::handle::{ConnLink, KickReason, SessionHandle, Slot};
use super::pending::Pending;

/// How long a takeover waits for the previous connection to finish before forcing it off.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// What a connecting client asks for.
#[derive(Debug, Clone)]
pub struct AttachRequest {
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
}

/// Client id to session.
#[derive(Debug, Default)]
pub struct Registry {
    sessions: Mutex<HashMap<Arc<str>, Arc<SessionHandle>>>,
    next_key: AtomicU64,
}

impl Registry {
    /// The session of a client id, if one exists.
    pub fn get(&self, client_id: &str) -> Option<Arc<SessionHandle>> {
        self.sessions.lock().get(client_id).cloned()
    }

    /// Number of sessions (connected or not).
    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    /// True if there are no sessions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every session, for shutdown.
    pub fn all(&self) -> Vec<Arc<SessionHandle>> {
        self.sessions.lock().values().cloned().collect()
    }

    /// Adds a session restored from the store.
    pub(super) fn insert(&self, handle: Arc<SessionHandle>) {
        self.sessions
            .lock()
            .insert(Arc::clone(&handle.client_id), handle);
    }

    pub(super) fn new_key(&self) -> u64 {
        self.next_key.fetch_add(1, Relaxed) + 1
    }
}

impl Broker {
    /// Attaches connection `link` to the session of `req.client_id`, taking over a connection
    /// already attached (MQTT-3.1.4-3). Returns the session and the Session Present flag; the
    /// store changes to commit before CONNACK go to `pending`.
    pub async fn attach(
        &self,
        req: &AttachRequest,
        link: &ConnLink,
        pending: &mut Pending,
    ) -> (Arc<SessionHandle>, bool) {
        loop {
            if let Some(existing) = self.registry.get(&req.client_id) {
                let current = existing.slot.lock().conn.clone();
                if let Some(old) = current {
                    info!(client_id = %req.client_id, "session taken over by a new connection");
                    old.kick(KickReason::TakenOver);
                    if tokio::time::timeout(TAKEOVER_WAIT, old.gone.cancelled())
                        .await
                        .is_err()
                    {
                        warn!(client_id = %req.client_id, "previous connection did not finish; detaching it");
                        self.detach(&existing, old.id);
                    }
                    continue;
                }
            }
            if let Some(attached) = self.try_attach(req, link, pending) {
                return attached;
            }
        }
    }

    /// One attempt under the registry lock; `None` if another connection got there first.
    fn try_attach(
        &self,
        req: &AttachRequest,
        link: &ConnLink,
        pending: &mut Pending,
    ) -> Option<(Arc<SessionHandle>, bool)> {
        let mut sessions = self.registry.sessions.lock();
        if let Some(existing) = sessions.get(&req.client_id).cloned() {
            let mut slot = existing.slot.lock();
            if slot.conn.is_some() {
                return None;
            }
            if !req.clean_start {
                slot.conn = Some(link.clone());
                slot.epoch += 1;
                slot.drop_logged = false;
                slot.session.version = req.version;
                slot.session.expiry_interval = req.expiry_interval;
                slot.session.outbound.set_window(req.window);
                self.record_session(&req.client_id, &mut slot, pending);
                drop(slot);
                return Some((existing, true));
            }
            // Clean start: the old session ends here (MQTT-3.1.2-4).
            slot.ended = true;
            if slot.persisted {
                pending.push(Op::DeleteSession {
                    client: Arc::clone(&req.client_id),
                });
            }
            let filters: Vec<String> = slot.session.subscriptions.keys().cloned().collect();
            drop(slot);
            existing.ended.cancel();
            sessions.remove(&req.client_id);
            self.router.unsubscribe_all(filters.iter(), existing.key);
        }
        let session = Session::new(
            req.version,
            req.expiry_interval,
            self.config.max_queued_messages,
            req.window,
        );
        let handle = Arc::new(SessionHandle::new(
            self.registry.new_key(),
            Arc::clone(&req.client_id),
            session,
            Some(link.clone()),
        ));
        self.record_session(&req.client_id, &mut handle.slot.lock(), pending);
        sessions.insert(Arc::clone(&req.client_id), Arc::clone(&handle));
        Some((handle, false))
    }

    /// Records a connected session in the store if it is durable, or removes its record if it
    /// stopped being durable.
    fn record_session(&self, client_id: &Arc<str>, slot: &mut Slot, pending: &mut Pending) {
        if !self.persistent() {
            return;
        }
        if slot.session.is_durable() {
            pending.push(Op::PutSession {
                client: Arc::clone(client_id),
                record: SessionRecord {
                    version: slot.session.version,
                    expiry_interval: slot.session.expiry_interval,
                    disconnected_at: 0,
                },
            });
            slot.persisted = true;
        } else if slot.persisted {
            pending.push(Op::DeleteSession {
                client: Arc::clone(client_id),
            });
            slot.persisted = false;
        }
    }

    /// Detaches connection `conn_id` from its session. An ephemeral session ends now; a
    /// durable one with a finite expiry gets a timer. Returns false if the connection was no
    /// longer attached (it was taken over).
    pub fn detach(self: &Broker, handle: &Arc<SessionHandle>, conn_id: u64) -> bool {
        let mut slot = handle.slot.lock();
        if slot.conn.as_ref().map(|c| c.id) != Some(conn_id) {
            return false;
        }
        slot.conn = None;
        let expiry = slot.session.expiry_interval;
        let epoch = slot.epoch;
        if expiry > 0 && self.persistent() {
            self.submit(vec![Op::PutSession {
                client: Arc::clone(&handle.client_id),
                record: SessionRecord {
                    version: slot.session.version,
                    expiry_interval: expiry,
                    disconnected_at: unix_now(),
                },
            }]);
            slot.persisted = true;
        }
        drop(slot);
        if expiry == 0 {
            self.end_session(handle);
        } else if expiry != NEVER_EXPIRES {
            self.schedule_expiry(handle, epoch, Duration::from_secs(u64::from(expiry)));
        }
        true
    }

    /// Removes a session from the registry and its subscriptions from the router.
    pub fn end_session(&self, handle: &Arc<SessionHandle>) {
        let mut sessions = self.registry.sessions.lock();
        let mut slot = handle.slot.lock();
        if slot.ended {
            return;
        }
        slot.ended = true;
        let filters: Vec<String> = slot.session.subscriptions.keys().cloned().collect();
        let discarded = slot.session.outbound.clear();
        if slot.persisted {
            slot.persisted = false;
            self.submit(vec![Op::DeleteSession {
                client: Arc::clone(&handle.client_id),
            }]);
        }
        drop(slot);
        if sessions
            .get(&handle.client_id)
            .is_some_and(|h| Arc::ptr_eq(h, handle))
        {
            sessions.remove(&handle.client_id);
        }
        drop(sessions);
        handle.ended.cancel();
        self.router.unsubscribe_all(filters.iter(), handle.key);
        debug!(client_id = %handle.client_id, discarded, "session ended");
    }

    /// Ends the session after `after` unless a connection attaches in the meantime.
    pub(super) fn schedule_expiry(&self, handle: &Arc<SessionHandle>, epoch: u64, after: Duration) {
        let Some(broker) = self.me.upgrade() else {
            return;
        };
        let handle = Arc::clone(handle);
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(after) => {}
                _ = handle.ended.cancelled() => return,
                _ = broker.shutdown.cancelled() => return,
            }
            let expired = {
                let slot = handle.slot.lock();
                slot.conn.is_none() && slot.epoch == epoch && !slot.ended
            };
            if expired {
                info!(client_id = %handle.client_id, "session expired");
                broker.end_session(&handle);
            }
        });
    }
}
