//! Routing: the subscription trie, the retained messages, and fan-out of a message to the
//! sessions whose subscriptions match it.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use parking_lot::RwLock;

use crate::clock::Clock;
use crate::codec::QoS;
use crate::config::QueueFullPolicy;
use crate::session::{
    CommitGate, Delivery, GateState, Message, Placement, Refused, SubOptions, message_cost,
};
use crate::store::{Op, delivery_entry};
use crate::topic::{RetainedIndex, SubscriptionTrie};

use super::handle::SessionHandle;
use super::metrics::Metrics;
use super::pending::Pending;

/// What routing a message needs to know beyond the message itself.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RouteContext<'a> {
    /// Counters.
    pub metrics: &'a Metrics,
    /// What to do at a full queue.
    pub policy: QueueFullPolicy,
    /// False once the store holds `max_store_bytes` of queued messages: messages for durable
    /// sessions (which must be written to the store) are refused as if their queue were full.
    pub store_has_room: bool,
}

/// The result of routing a message.
#[derive(Debug)]
pub(crate) enum Routed {
    /// Queued for every matching session that had room (or dropped there by the policy).
    /// `matched` counts the sessions whose subscriptions matched and may read the topic.
    Delivered {
        /// Matching sessions.
        matched: usize,
    },
    /// Under the back-pressure policy, a QoS 1/2 delivery did not fit: nothing was queued.
    Full {
        /// The session whose backlog is full.
        session: Arc<SessionHandle>,
        /// Its backlog generation when it was found full (see [`SessionHandle::room_since`]).
        room_seq: u64,
    },
}

/// A subscription as stored in the trie.
#[derive(Debug, Clone)]
pub(crate) struct Subscriber {
    /// The session that subscribed.
    pub session: Arc<SessionHandle>,
    /// Its options.
    pub options: SubOptions,
}

/// One session's share of a message after overlapping subscriptions are merged.
struct Target {
    session: Arc<SessionHandle>,
    qos: QoS,
    retain_as_published: bool,
    subscription_ids: Vec<u32>,
}

/// A retained message, with the gate of the commit that stores it while that is pending.
#[derive(Debug, Clone)]
struct Retained {
    message: Arc<Message>,
    gate: Option<Arc<CommitGate>>,
}

/// Subscriptions and retained messages.
#[derive(Debug, Default)]
pub(crate) struct Router {
    subscriptions: RwLock<SubscriptionTrie<u64, Subscriber>>,
    retained: RwLock<RetainedIndex<Retained>>,
    /// Decides which retained messages have expired.
    clock: Clock,
}

impl Router {
    /// An empty router whose retained messages expire by `clock`.
    pub(crate) fn new(clock: Clock) -> Router {
        Router {
            clock,
            ..Router::default()
        }
    }

    /// Adds or replaces a subscription. Returns true if it replaced one (MQTT-3.8.4-3).
    pub(crate) fn subscribe(
        &self,
        filter: &str,
        session: &Arc<SessionHandle>,
        options: SubOptions,
    ) -> bool {
        let subscriber = Subscriber {
            session: Arc::clone(session),
            options,
        };
        self.subscriptions
            .write()
            .insert(filter, session.key, subscriber)
            .is_some()
    }

    /// Removes a subscription. Returns true if it existed.
    pub(crate) fn unsubscribe(&self, filter: &str, session_key: u64) -> bool {
        self.subscriptions
            .write()
            .remove(filter, &session_key)
            .is_some()
    }

    /// Removes every listed subscription of a session.
    pub(crate) fn unsubscribe_all<'a>(&self, filters: impl Iterator<Item = &'a String>, key: u64) {
        let mut trie = self.subscriptions.write();
        for filter in filters {
            trie.remove(filter, &key);
        }
    }

    /// Number of subscriptions in the trie.
    pub(crate) fn subscription_count(&self) -> usize {
        self.subscriptions.read().len()
    }

    /// Stores, replaces or (with an empty payload) deletes the retained message of a topic
    /// (MQTT-3.3.1-5, MQTT-3.3.1-10, MQTT-3.3.1-11). `gate` is the publisher's pending commit:
    /// deliveries made from it wait for that commit too.
    pub(crate) fn retain(&self, message: &Arc<Message>, gate: Option<Arc<CommitGate>>) {
        let mut retained = self.retained.write();
        if message.payload.is_empty() {
            retained.remove(&message.topic);
        } else {
            let entry = Retained {
                message: Arc::clone(message),
                gate,
            };
            retained.insert(&message.topic, entry);
        }
    }

    /// The retained messages matching `filter`, skipping expired ones, each with the gate of
    /// its commit if that is still pending.
    pub(crate) fn retained_matching(
        &self,
        filter: &str,
    ) -> Vec<(Arc<Message>, Option<Arc<CommitGate>>)> {
        let now = self.clock.now();
        let mut out = Vec::new();
        self.retained.read().for_each_match(filter, |_, r| {
            if !r.message.is_expired(now) {
                let gate = r.gate.clone().filter(|g| g.state() != GateState::Open);
                out.push((Arc::clone(&r.message), gate));
            }
        });
        out
    }

    /// Number of retained messages.
    pub(crate) fn retained_count(&self) -> usize {
        self.retained.read().len()
    }

    /// Queues `message` for every session with a matching subscription and wakes their
    /// connections. A session with several matching subscriptions gets one copy at the highest
    /// granted QoS, carrying every subscription identifier (MQTT-3.3.5-1). `publisher` is the
    /// session key of the sender, for No Local. With a store (`pending` is `Some`), QoS 1/2
    /// deliveries are held until the publisher's batch is committed, and durable sessions'
    /// queue entries are recorded.
    ///
    /// All or nothing: every target's room is reserved first; if a QoS 1/2 delivery does not
    /// fit and the policy is back-pressure, nothing is queued anywhere and [`Routed::Full`]
    /// names the session that is full.
    pub(crate) fn route(
        &self,
        message: &Arc<Message>,
        publisher: Option<u64>,
        ctx: &RouteContext<'_>,
        mut pending: Option<&mut Pending>,
    ) -> Routed {
        let targets = self.targets(message, publisher);
        let persistent = pending.as_ref().is_some_and(|p| p.persistent);
        let metrics = ctx.metrics;
        let cost = message_cost(message);
        let mut matched = 0;
        // Some session is away: its copy may wait for a long time, so a small payload is
        // copied out of the publisher's read buffer instead of pinning all of it.
        let mut away = false;
        let mut admitted: Vec<(Target, QoS, bool)> = Vec::with_capacity(targets.len());
        for target in targets {
            let mut slot = target.session.slot.lock();
            if slot.ended {
                continue;
            }
            if let Some(acl) = &slot.acl
                && !acl.check(&message.topic, crate::auth::Access::Read)
            {
                // Not readable by the client now attached (deny rules, another user, a reload).
                continue;
            }
            matched += 1;
            let online = slot.conn.is_some();
            let qos = message.qos.min(target.qos);
            let storable =
                persistent && slot.persisted && qos != QoS::AtMostOnce && message.id.is_some();
            let admitted_here = if storable && !ctx.store_has_room {
                // A durable session's message must be written to the store, which is full.
                Err(Refused::Full)
            } else {
                slot.session.outbound.reserve(cost, qos, storable, online)
            };
            match admitted_here {
                Ok(()) => {}
                Err(Refused::OfflineQoS0) => {
                    Metrics::inc(&metrics.dropped_qos0_offline);
                    continue;
                }
                Err(Refused::Full) if qos == QoS::AtMostOnce => {
                    // The spec allows dropping QoS 0 (MQTT 4.3.1); counted.
                    Metrics::inc(&metrics.dropped_qos0_queue_full);
                    continue;
                }
                Err(Refused::Full) => match ctx.policy {
                    QueueFullPolicy::Backpressure => {
                        let room_seq = target.session.room_seq();
                        drop(slot);
                        for (t, _, _) in &admitted {
                            t.session.slot.lock().session.outbound.unreserve(cost);
                            // Another publisher may have found it full because of this
                            // reservation.
                            t.session.notify_room();
                        }
                        return Routed::Full {
                            session: target.session,
                            room_seq,
                        };
                    }
                    QueueFullPolicy::DropNew => {
                        slot.session.dropped += 1;
                        drop(slot);
                        Metrics::inc(&metrics.dropped_queue_full);
                        metrics.log_queue_full(&target.session.client_id, 1, 0, 0);
                        continue;
                    }
                    QueueFullPolicy::DropOldest => {
                        let persisted = slot.persisted;
                        let mut room = false;
                        let mut evicted = 0;
                        while let Some(dropped) = slot.session.outbound.evict_oldest() {
                            evicted += 1;
                            if let Some(seq) = dropped.seq
                                && persisted
                                && let Some(p) = pending.as_deref_mut()
                            {
                                p.push_async(Op::DeleteEntry {
                                    session: target.session.store_key(),
                                    seq,
                                });
                            }
                            if slot
                                .session
                                .outbound
                                .reserve(cost, qos, storable, online)
                                .is_ok()
                            {
                                room = true;
                                break;
                            }
                        }
                        let dropped = evicted + u64::from(!room);
                        slot.session.dropped += dropped;
                        metrics.dropped_queue_full.fetch_add(dropped, Relaxed);
                        metrics.log_queue_full(&target.session.client_id, dropped, 0, 0);
                        if !room {
                            continue;
                        }
                    }
                },
            }
            away |= !online;
            drop(slot);
            admitted.push((target, qos, storable));
        }
        let message = &if away {
            message.to_kept()
        } else {
            Arc::clone(message)
        };
        // A message stored for one session only is kept in its queue entry.
        let inline = admitted.iter().filter(|(_, _, storable)| *storable).count() == 1;
        for (target, qos, storable) in admitted {
            let mut delivery = Delivery::new(
                Arc::clone(message),
                qos,
                target.retain_as_published && message.retain,
                target.subscription_ids,
            );
            // Every copy of a QoS 1/2 publish waits for the publisher's commit, even one
            // downgraded to QoS 0: a publisher retrying after a crash must not cause a second.
            if let Some(p) = pending.as_deref_mut()
                && message.qos != QoS::AtMostOnce
            {
                delivery.gate = p.gate();
            }
            let session = &target.session;
            let mut slot = session.slot.lock();
            if slot.ended {
                slot.session.outbound.unreserve(cost);
                continue;
            }
            let online = slot.conn.is_some();
            let persist = storable && slot.persisted;
            let op = if persist && let Some(id) = delivery.message.id {
                let seq = slot.session.take_seq();
                delivery.seq = Some(seq);
                let mut entry = delivery_entry(id, &delivery);
                if inline {
                    entry.inline = Some(Arc::clone(&delivery.message));
                }
                Some(Op::Enqueue {
                    session: session.store_key(),
                    seq,
                    message: Arc::clone(&delivery.message),
                    entry,
                })
            } else {
                None
            };
            let placement = slot.session.outbound.place(delivery, cost, persist, online);
            drop(slot);
            Metrics::inc(&metrics.deliveries_enqueued);
            if placement == Placement::Store {
                Metrics::inc(&metrics.deliveries_stored);
            }
            match pending.as_deref_mut() {
                Some(p) => {
                    if let Some(op) = op {
                        p.push(op);
                    }
                    // Woken once the batch is settled (even if it was offline a moment ago: it
                    // may have reconnected and be waiting on this delivery's gate).
                    p.wake.push(Arc::clone(session));
                }
                None if online => session.wake.notify_one(),
                None => {}
            }
        }
        Routed::Delivered { matched }
    }

    fn targets(&self, message: &Message, publisher: Option<u64>) -> Vec<Target> {
        let mut found: Vec<(u64, Target)> = Vec::new();
        self.subscriptions
            .read()
            .for_each_match(&message.topic, |key, sub| {
                if sub.options.no_local && publisher == Some(*key) {
                    return;
                }
                found.push((
                    *key,
                    Target {
                        session: Arc::clone(&sub.session),
                        qos: sub.options.qos,
                        retain_as_published: sub.options.retain_as_published,
                        subscription_ids: sub.options.subscription_id.into_iter().collect(),
                    },
                ));
            });
        if found.len() > 1 {
            found.sort_unstable_by_key(|(key, _)| *key);
            found.dedup_by(|later, kept| {
                if later.0 != kept.0 {
                    return false;
                }
                kept.1.qos = kept.1.qos.max(later.1.qos);
                kept.1.retain_as_published |= later.1.retain_as_published;
                kept.1
                    .subscription_ids
                    .append(&mut later.1.subscription_ids);
                true
            });
        }
        found.into_iter().map(|(_, target)| target).collect()
    }
}
