//! Routing: the subscription trie, the retained messages, and fan-out of a message to the
//! sessions whose subscriptions match it.

use std::sync::Arc;

use parking_lot::RwLock;
use tracing::warn;

use crate::codec::QoS;
use crate::session::{CommitGate, Delivery, Enqueued, GateState, Message, SubOptions};
use crate::store::{Op, entry_for};
use crate::topic::{RetainedIndex, SubscriptionTrie};

use super::handle::SessionHandle;
use super::metrics::Metrics;
use super::pending::Pending;

/// A subscription as stored in the trie.
#[derive(Debug, Clone)]
pub struct Subscriber {
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
pub struct Router {
    subscriptions: RwLock<SubscriptionTrie<u64, Subscriber>>,
    retained: RwLock<RetainedIndex<Retained>>,
}

impl Router {
    /// Adds or replaces a subscription. Returns true if it replaced one (MQTT-3.8.4-3).
    pub fn subscribe(
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
    pub fn unsubscribe(&self, filter: &str, session_key: u64) -> bool {
        self.subscriptions
            .write()
            .remove(filter, &session_key)
            .is_some()
    }

    /// Removes every listed subscription of a session.
    pub fn unsubscribe_all<'a>(&self, filters: impl Iterator<Item = &'a String>, key: u64) {
        let mut trie = self.subscriptions.write();
        for filter in filters {
            trie.remove(filter, &key);
        }
    }

    /// Number of subscriptions in the trie.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.read().len()
    }

    /// Stores, replaces or (with an empty payload) deletes the retained message of a topic
    /// (MQTT-3.3.1-5, MQTT-3.3.1-10, MQTT-3.3.1-11). `gate` is the publisher's pending commit:
    /// deliveries made from it wait for that commit too.
    pub fn retain(&self, message: &Arc<Message>, gate: Option<Arc<CommitGate>>) {
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
    pub fn retained_matching(&self, filter: &str) -> Vec<(Arc<Message>, Option<Arc<CommitGate>>)> {
        let now = std::time::Instant::now();
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
    pub fn retained_count(&self) -> usize {
        self.retained.read().len()
    }

    /// Queues `message` for every session with a matching subscription and wakes their
    /// connections. A session with several matching subscriptions gets one copy at the highest
    /// granted QoS, carrying every subscription identifier (MQTT-3.3.5-1). `publisher` is the
    /// session key of the sender, for No Local. With a store (`pending` is `Some`), QoS 1/2
    /// deliveries are held until the publisher's batch is committed, and durable sessions'
    /// queue entries are recorded. Returns the number of deliveries queued.
    pub fn route(
        &self,
        message: &Arc<Message>,
        publisher: Option<u64>,
        metrics: &Metrics,
        mut pending: Option<&mut Pending>,
    ) -> usize {
        let targets = self.targets(message, publisher);
        let mut queued = 0;
        for target in targets {
            let mut delivery = Delivery::new(
                Arc::clone(message),
                message.qos.min(target.qos),
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
            if deliver(&target.session, delivery, metrics, pending.as_deref_mut()) {
                queued += 1;
            }
        }
        queued
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

/// Queues one delivery for a session, counts a drop if its queue is full, and wakes its
/// connection (at once, or through `pending` once a gated delivery may go out). For a durable
/// session with a store, records the queue entry in `pending`. Returns true if queued.
pub fn deliver(
    session: &Arc<SessionHandle>,
    mut delivery: Delivery,
    metrics: &Metrics,
    pending: Option<&mut Pending>,
) -> bool {
    let mut slot = session.slot.lock();
    if slot.ended {
        return false;
    }
    if let Some(acl) = &slot.acl
        && !acl.check(&delivery.message.topic, crate::auth::Access::Read)
    {
        // Not readable by the client now attached (deny rules, another user, a reload).
        return false;
    }
    let online = slot.conn.is_some();
    let persist = pending.is_some()
        && slot.persisted
        && delivery.qos != QoS::AtMostOnce
        && delivery.message.id != 0;
    if persist {
        delivery.seq = slot.session.take_seq();
    }
    let op = persist.then(|| Op::Enqueue {
        session: session.store_key(),
        seq: delivery.seq,
        message: Arc::clone(&delivery.message),
        entry: entry_for(
            delivery.message.id,
            delivery.qos,
            delivery.retain,
            &delivery.subscription_ids,
        ),
    });
    match slot.session.outbound.enqueue(delivery, online) {
        Enqueued::Queued => {
            drop(slot);
            Metrics::inc(&metrics.deliveries_enqueued);
            match pending {
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
            true
        }
        Enqueued::QueueFull => {
            slot.session.dropped += 1;
            Metrics::inc(&metrics.dropped_queue_full);
            if !slot.drop_logged {
                slot.drop_logged = true;
                warn!(
                    client_id = %session.client_id,
                    queued = slot.session.outbound.queued(),
                    "session queue full: dropping messages (counted in metrics)"
                );
            }
            false
        }
        Enqueued::OfflineQoS0 => {
            Metrics::inc(&metrics.dropped_qos0_offline);
            false
        }
    }
}
