//! Rebuilding sessions, subscriptions, queues and retained messages from the store at startup.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tracing::info;

use crate::session::{Delivery, Inflight, InflightState, NEVER_EXPIRES, PacketId, Seq, Session};
use crate::store::{EntryState, Loaded, record::unix_secs};

use super::Broker;
use super::handle::SessionHandle;

impl Broker {
    /// Loads what the store returned at open. Sessions come back without a connection; those
    /// with a finite expiry get their remaining time.
    pub(crate) fn restore(&self, loaded: Loaded) {
        self.next_message_id
            .store(loaded.max_message_id + 1, Relaxed);
        if let Some(cluster) = &self.cluster
            && let Some(sequence) = loaded.cluster_sequences.get(&cluster.config.stream)
        {
            cluster.applied.store(*sequence, Relaxed);
        }
        let applied = self.cluster.as_ref().map_or(0, |c| c.applied.load(Relaxed));
        for mut message in loaded.retained {
            message.id = self.message_id();
            self.router.retain(&Arc::new(message), None);
        }
        let now = unix_secs(self.clock.wall());
        let started = self.clock.now();
        let sessions = loaded.sessions.len();
        let mut messages = 0;
        for stored in loaded.sessions {
            let remaining = stored.remaining_expiry(now);
            let mut session = Session::new(
                stored.record.version,
                stored.record.expiry_interval,
                self.config.queue_limits(),
                self.config.max_inflight_messages,
            );
            session.next_seq = Seq::MIN.saturating_add(stored.max_seq);
            session.owner = stored.record.owner.clone();
            let stored_only = stored.stored.is_some();
            if let Some((from, count, bytes)) = stored.stored {
                // Not read into memory until the client is back.
                messages += count;
                session.outbound.restore_stored(from, count, bytes);
            }
            // In cluster mode: the stream messages taken from the queue so far.
            let mut first_queued = None;
            let mut sent = 0;
            for (seq, entry, message) in stored.entries {
                messages += 1;
                // A Shared Subscription's message is not part of the position.
                if let Some(s) = message.stream_seq.filter(|_| entry.group.is_none()) {
                    session.stream_seen = session.stream_seen.max(s);
                    match entry.state {
                        EntryState::Queued => first_queued = first_queued.or(Some(s)),
                        _ => sent = sent.max(s),
                    }
                }
                let mut delivery =
                    Delivery::new(message, entry.qos, entry.retain, entry.subscription_ids);
                delivery.seq = Seq::new(seq);
                delivery.group = entry.group;
                let state = match entry.state {
                    EntryState::Queued => None,
                    EntryState::Published => Some(InflightState::Published),
                    EntryState::Released => Some(InflightState::Released),
                };
                match (state, PacketId::new(entry.packet_id)) {
                    (Some(state), Some(packet_id)) => session.outbound.restore_inflight(Inflight {
                        packet_id,
                        delivery,
                        state,
                    }),
                    _ => session.outbound.restore_queued(delivery),
                }
            }
            session.outbound.set_stream_sent(match first_queued {
                Some(first) => first - 1,
                // Everything the node read of the stream was queued here, and sent.
                None if !stored_only => sent.max(applied),
                None => sent,
            });
            if stored.holds_shared {
                session.outbound.mark_shared();
            }
            for packet_id in stored.incoming {
                session.inbound.on_publish_qos2(packet_id);
            }
            let filters = stored.subscriptions;
            for (filter, options) in &filters {
                session.subscriptions.insert(filter.clone(), *options);
            }
            // The stored incarnation stays the session's key, so its later writes apply.
            let handle = Arc::new(SessionHandle::new(
                stored.record.incarnation,
                Arc::from(stored.client_id.as_str()),
                session,
                None,
            ));
            if self.cluster.is_some() && stored.record.expiry_interval != 0 {
                // Its queue holds what the node's store committed; the rest comes.
                handle.start_following(0);
            }
            let away = {
                let mut slot = handle.slot.lock();
                slot.persisted = true;
                self.mark_away(&mut slot)
            };
            for (filter, options) in &filters {
                self.router.subscribe(filter, &handle, *options);
            }
            if let Some(left) = remaining
                && stored.record.expiry_interval != NEVER_EXPIRES
            {
                self.schedule_expiry(&handle, away, started + Duration::from_secs(left));
            }
            self.registry.insert(handle);
        }
        info!(
            sessions,
            messages,
            retained = self.router.retained_count(),
            "durable state restored"
        );
    }

    /// Takes in a durable Session that moved here from another node of the cluster, without
    /// a connection (one attaches next): registered, subscribed, and ended after `expires_in`
    /// unless a client attaches (never, for a Session that never expires). Its store record
    /// is the caller's to write. `None` if the client id has a Session here already.
    pub(crate) fn adopt(
        &self,
        client_id: &str,
        session: Session,
        expires_in: Duration,
    ) -> Option<Arc<SessionHandle>> {
        let expiry = session.expiry_interval;
        let filters: Vec<_> = session
            .subscriptions
            .iter()
            .map(|(f, o)| (f.clone(), *o))
            .collect();
        let handle = Arc::new(SessionHandle::new(
            self.registry.new_key(),
            Arc::from(client_id),
            session,
            None,
        ));
        handle.start_following(0);
        let away = {
            let mut slot = handle.slot.lock();
            slot.persisted = self.persistent();
            self.mark_away(&mut slot)
        };
        if !self.registry.insert_if_absent(&handle) {
            return None;
        }
        for (filter, options) in &filters {
            self.router.subscribe(filter, &handle, *options);
        }
        if expiry != NEVER_EXPIRES {
            self.schedule_expiry(&handle, away, self.clock.now() + expires_in);
        }
        Some(handle)
    }
}
