//! Routing: the subscription trie, the Shared Subscription groups, the retained messages, and
//! fan-out of a message to the sessions whose subscriptions match it.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use parking_lot::RwLock;

use crate::clock::Clock;
use crate::codec::QoS;
use crate::config::{QueueFullPolicy, SharedSubscriptionStrategy};
use crate::session::{CommitGate, Delivery, GateState, Message, Refused, SubOptions, message_cost};
use crate::store::{Op, delivery_entry};
use crate::topic::{self, RetainedIndex, SubscriptionTrie};

use super::handle::SessionHandle;
use super::metrics::Metrics;
use super::pending::Pending;
use super::shared::{Group, Member, SharedSubscriptionInfo, SharedSubscriptions};

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
    /// False while the store cannot write: messages for durable sessions are refused (5.0:
    /// 0x97; 3.1.1: the publisher pauses) whatever the full-queue policy, since dropping them
    /// would follow a success acknowledgement.
    pub store_writable: bool,
    /// How a Shared Subscription group picks its member.
    pub strategy: SharedSubscriptionStrategy,
    /// Which Sessions may receive the message.
    pub audience: Audience,
    /// Which Shared Subscription groups take part.
    pub groups: GroupScope<'a>,
    /// The publisher's Session key when the message came back from the cluster's stream
    /// (for No Local), if that Session is on this node.
    pub publisher: Option<u64>,
}

/// Which Sessions a message is routed to. In cluster mode a durable Session follows the
/// cluster's stream: it receives QoS 1/2 messages only from there, in the stream's order (its
/// position in the stream then says what it had), whichever node published them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Audience {
    /// Every matching Session (a message from the stream: Sessions following it take it
    /// if they did not have it before).
    All,
    /// Sessions that do not follow the stream: a QoS 1/2 message published on this node,
    /// which the others receive from the stream.
    NotFollowing,
    /// Only Sessions that follow the stream: a message this node published, back from the
    /// stream.
    Following,
    /// Only the Session with this key (the stream read again for a Session that moved here).
    Only(u64),
}

impl Audience {
    /// True if `session` may receive `message` as this audience.
    fn admits(self, session: &SessionHandle, message: &Message) -> bool {
        // A message that is not from the stream (QoS 0, `$SYS`) is for every Session.
        let from_stream = |session: &SessionHandle| match message.stream_seq {
            Some(seq) => session.takes_from_stream(seq),
            None => true,
        };
        match self {
            Audience::All => !session.follows_stream() || from_stream(session),
            Audience::NotFollowing => !session.follows_stream(),
            Audience::Following => session.follows_stream() && from_stream(session),
            Audience::Only(key) => session.key == key,
        }
    }

    /// True if Shared Subscription groups take part (they are not stream-ordered).
    fn includes_groups(self) -> bool {
        matches!(self, Audience::All | Audience::NotFollowing)
    }
}

/// Which Shared Subscription groups a message is offered to. In cluster mode a group spans
/// the nodes: each message of a carried topic reaches it through the group's own JetStream
/// consumer and NATS queue group (one node takes it), never through a node's ordinary reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupScope<'a> {
    /// Every matching group (one node alone).
    Every,
    /// In cluster mode: only groups of topics that stay on their node (`$SYS`).
    Local,
    /// Only the group named by this key, and no ordinary subscription: the message came
    /// through that group's consumer or queue group.
    Only(&'a str),
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
        /// For a Shared Subscription, the group's other full members with their generations:
        /// room in any of them lets the message through.
        also: Vec<(Arc<SessionHandle>, u64)>,
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

/// One session's share of a message after overlapping subscriptions are merged, or the member
/// of a group offered a message.
struct Target {
    session: Arc<SessionHandle>,
    qos: QoS,
    retain_as_published: bool,
    subscription_ids: Vec<u32>,
    /// The group, for a member of one.
    group: Option<Arc<Group>>,
}

impl Target {
    fn member(member: &Member, group: &Arc<Group>) -> Target {
        Target {
            session: Arc::clone(&member.session),
            qos: member.options.qos,
            retain_as_published: member.options.retain_as_published,
            subscription_ids: member.options.subscription_id.into_iter().collect(),
            group: Some(Arc::clone(group)),
        }
    }
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
    shared: RwLock<SharedSubscriptions>,
    retained: RwLock<RetainedIndex<Retained>>,
    /// Decides which retained messages have expired.
    clock: Clock,
    /// In cluster mode, told of every Topic Filter gained or lost (NATS subscriptions follow).
    interest: Option<Arc<crate::cluster::Interest>>,
}

impl Router {
    /// An empty router whose retained messages expire by `clock`.
    pub(crate) fn new(clock: Clock, interest: Option<Arc<crate::cluster::Interest>>) -> Router {
        Router {
            clock,
            interest,
            ..Router::default()
        }
    }

    /// Tells the cluster's interest of a filter gained (`add`) or lost.
    fn interest_changed(&self, filter: &str, add: bool) {
        if let Some(interest) = &self.interest {
            interest.change(filter, add);
        }
    }

    /// Adds or replaces a subscription; a Shared Subscription (`$share/...`, already
    /// validated) joins its group. Returns true if it replaced one (MQTT-3.8.4-3).
    pub(crate) fn subscribe(
        &self,
        filter: &str,
        session: &Arc<SessionHandle>,
        options: SubOptions,
    ) -> bool {
        let replaced = match topic::shared(filter) {
            Some(Ok(shared)) => self
                .shared
                .write()
                .subscribe(filter, shared, session, options),
            Some(Err(())) => return false,
            None => {
                let subscriber = Subscriber {
                    session: Arc::clone(session),
                    options,
                };
                self.subscriptions
                    .write()
                    .insert(filter, session.key, subscriber)
                    .is_some()
            }
        };
        if !replaced {
            self.interest_changed(filter, true);
        }
        replaced
    }

    /// Removes a subscription. Returns true if it existed.
    pub(crate) fn unsubscribe(&self, filter: &str, session_key: u64) -> bool {
        let removed = match topic::shared(filter) {
            Some(Ok(shared)) => self.shared.write().unsubscribe(filter, shared, session_key),
            Some(Err(())) => return false,
            None => self
                .subscriptions
                .write()
                .remove(filter, &session_key)
                .is_some(),
        };
        if removed {
            self.interest_changed(filter, false);
        }
        removed
    }

    /// Removes every listed subscription of a session.
    pub(crate) fn unsubscribe_all<'a>(&self, filters: impl Iterator<Item = &'a String>, key: u64) {
        let mut trie = self.subscriptions.write();
        for filter in filters {
            let removed = match topic::shared(filter) {
                Some(Ok(shared)) => self.shared.write().unsubscribe(filter, shared, key),
                Some(Err(())) => false,
                None => trie.remove(filter, &key).is_some(),
            };
            if removed {
                self.interest_changed(filter, false);
            }
        }
    }

    /// Number of subscriptions, memberships of Shared Subscription groups included.
    pub(crate) fn subscription_count(&self) -> usize {
        self.subscriptions.read().len() + self.shared.read().len()
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

    /// Deletes the retained message `m` of its topic if it is still the one retained, calling
    /// `then` (which queues the store's deletion) before any later publish can replace it.
    /// Returns false if another message replaced it meanwhile (which then stays), or its own
    /// commit has not returned yet.
    pub(crate) fn delete_retained_if(&self, m: &Arc<Message>, then: impl FnOnce()) -> bool {
        let mut retained = self.retained.write();
        let mut current = false;
        retained.for_each_match(&m.topic, |topic, r| {
            // Not while the publish that stored it is still being committed: its own store
            // write could land after the deletion.
            let settled = r
                .gate
                .as_ref()
                .is_none_or(|g| g.state() != GateState::Pending);
            current |= topic == &*m.topic && Arc::ptr_eq(&r.message, m) && settled;
        });
        if current {
            retained.remove(&m.topic);
            then();
        }
        current
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

    /// Queues `message` for every session with a matching subscription, and for one member of
    /// every Shared Subscription group whose filter matches, and wakes their connections. A
    /// session with several matching (non-shared) subscriptions gets one copy at the highest
    /// granted QoS, carrying every subscription identifier (MQTT-3.3.5-1); a copy it gets as a
    /// member of a group is separate (MQTT 5.0 4.8.2). `publisher` is the sender's session,
    /// for No Local and the `hash_client_id` strategy. With a store (`pending` is `Some`),
    /// QoS 1/2 deliveries are held until the publisher's batch is committed, and durable
    /// sessions' queue entries are recorded.
    ///
    /// All or nothing: every target's room is reserved first; if a QoS 1/2 delivery does not
    /// fit and the policy is back-pressure, nothing is queued anywhere and [`Routed::Full`]
    /// names the session that is full.
    pub(crate) fn route(
        &self,
        message: &Arc<Message>,
        publisher: Option<&SessionHandle>,
        ctx: &RouteContext<'_>,
        mut pending: Option<&mut Pending>,
    ) -> Routed {
        let publisher_key = publisher.map(|p| p.key).or(ctx.publisher);
        let (targets, groups) = self.targets(message, publisher_key, ctx);
        let persistent = pending.as_ref().is_some_and(|p| p.persistent);
        let admit =
            |target: &Target, presence, apply_policy, pending: &mut Option<&mut Pending>| {
                let ask = Ask {
                    message,
                    ctx,
                    persistent,
                    presence,
                    apply_policy,
                };
                self.admit(target, &ask, pending)
            };
        let mut matched = 0;
        let mut admitted: Vec<(Target, QoS, bool)> = Vec::with_capacity(targets.len());
        let full = |target: Target, room_seq, also, admitted: &[(Target, QoS, bool)]| {
            let cost = message_cost(message);
            for (t, ..) in admitted {
                t.session.slot.lock().session.outbound.unreserve(cost);
                // Another publisher may have found it full because of this reservation.
                t.session.notify_room();
            }
            Routed::Full {
                session: target.session,
                room_seq,
                also,
            }
        };
        for target in targets {
            match admit(&target, Presence::Any, true, &mut pending) {
                Admission::Admitted { qos, storable } => {
                    matched += 1;
                    admitted.push((target, qos, storable));
                }
                Admission::Passed => {}
                Admission::Dropped => matched += 1,
                Admission::Full { room_seq } => {
                    return full(target, room_seq, Vec::new(), &admitted);
                }
            }
        }
        let publisher_id = publisher.map(|p| &*p.client_id);
        for group in groups {
            let choice = group.with_candidates(ctx.strategy, publisher_id, &message.topic, |c| {
                self.choose(c, &group, |t, presence| {
                    admit(t, presence, false, &mut pending)
                })
            });
            let outcome = match choice {
                Choice::Admitted(target, qos, storable) => Some((target, qos, storable)),
                Choice::Full(target, also) => {
                    match admit(&target, Presence::Any, true, &mut pending) {
                        Admission::Admitted { qos, storable } => Some((target, qos, storable)),
                        Admission::Full { room_seq } => {
                            return full(target, room_seq, also, &admitted);
                        }
                        // Its Session ended, or the client attached may no longer read
                        // the topic, since it was found full: no member took it.
                        Admission::Passed => continue,
                        Admission::Dropped => None,
                    }
                }
                Choice::OfflineOnly => {
                    // QoS 0 with no member online: discarded, as for any offline session.
                    Metrics::inc(&ctx.metrics.dropped_qos0_offline);
                    None
                }
                Choice::Nobody => continue,
            };
            matched += 1;
            admitted.extend(outcome);
        }
        // A message stored for one session only is kept in its queue entry.
        let inline = admitted.iter().filter(|(_, _, s)| *s).count() == 1;
        for (target, qos, storable) in admitted {
            let mut delivery = Delivery::new(
                Arc::clone(message),
                qos,
                target.retain_as_published && message.retain,
                target.subscription_ids.clone(),
            );
            delivery.group = target.group.as_ref().map(|g| Arc::clone(&g.key));
            // Every copy of a QoS 1/2 publish waits for the publisher's commit, even one
            // downgraded to QoS 0: a publisher retrying after a crash must not cause a second.
            if let Some(p) = pending.as_deref_mut()
                && message.qos != QoS::AtMostOnce
            {
                delivery.gate = p.gate();
            }
            let placement = Placement { storable, inline };
            self.place(&target, delivery, placement, ctx.metrics, &mut pending);
        }
        Routed::Delivered { matched }
    }

    /// Offers a message to the members of `group` in the order of `candidates`: first to
    /// members with a connection; only when none is connected, to members that are away (a
    /// durable session keeps it until its client is back). `probe` tries one member without
    /// applying the full-queue policy.
    fn choose(
        &self,
        candidates: &[&Member],
        group: &Arc<Group>,
        mut probe: impl FnMut(&Target, Presence) -> Admission,
    ) -> Choice {
        let mut full = None;
        let mut also = Vec::new();
        let mut offline_only = false;
        for presence in [Presence::Online, Presence::Offline] {
            for member in candidates {
                let target = Target::member(member, group);
                match probe(&target, presence) {
                    Admission::Admitted { qos, storable } => {
                        return Choice::Admitted(target, qos, storable);
                    }
                    Admission::Passed => {}
                    Admission::Dropped => offline_only = true,
                    Admission::Full { room_seq } => {
                        if full.is_none() {
                            full = Some(target);
                        } else {
                            also.push((Arc::clone(&target.session), room_seq));
                        }
                    }
                }
            }
            if full.is_some() {
                // A connected member is full: the message waits for it (or the policy
                // decides), not in the queue of a member that is away.
                break;
            }
        }
        match (full, offline_only) {
            (Some(target), _) => Choice::Full(target, also),
            (None, true) => Choice::OfflineOnly,
            (None, false) => Choice::Nobody,
        }
    }

    /// Gives each of `deliveries`, the unacknowledged QoS 1/2 messages of a session that has
    /// ended, to another member of the group it came through (MQTT 5.0 4.8.2), chosen as for
    /// a new message. A member at a backlog limit still takes it: the message was
    /// acknowledged to its publisher and there is no one to slow down. Returns how many found
    /// a member, and in cluster mode the deliveries with no connected member here, for the
    /// group's members on other nodes, each with its index in `deliveries`; the others (their
    /// group has no member left, or they expired) are gone.
    pub(crate) fn redistribute(
        &self,
        deliveries: Vec<Delivery>,
        ctx: &RouteContext<'_>,
        mut pending: Option<&mut Pending>,
    ) -> (usize, Vec<(usize, Delivery)>) {
        let persistent = pending.as_ref().is_some_and(|p| p.persistent);
        let now = self.clock.now();
        let mut moved = 0;
        let mut elsewhere = Vec::new();
        for (i, old) in deliveries.into_iter().enumerate() {
            if old.message.is_expired(now) {
                Metrics::inc(&ctx.metrics.expired);
                continue;
            }
            let group = old
                .group
                .as_deref()
                .and_then(|key| self.shared.read().group(key));
            // In cluster mode the group spans the nodes: a member connected elsewhere is
            // preferred to one away here.
            let spans_nodes =
                ctx.groups == GroupScope::Local && !crate::cluster::is_local(&old.message.topic);
            if spans_nodes && group.as_ref().is_none_or(|g| !g.any_connected()) {
                elsewhere.push((i, old));
                continue;
            }
            let Some(group) = group else {
                continue;
            };
            let message = &old.message;
            let ask = |presence| Ask {
                message,
                ctx,
                persistent,
                presence,
                apply_policy: false,
            };
            let choice = group.with_candidates(ctx.strategy, None, &message.topic, |c| {
                self.choose(c, &group, |t, presence| {
                    self.admit(t, &ask(presence), &mut None)
                })
            });
            let (target, qos, storable) = match choice {
                Choice::Admitted(target, qos, storable) => (target, qos, storable),
                Choice::Full(target, _) => {
                    match self.admit_over_limit(&target, &ask(Presence::Any)) {
                        Some((qos, storable)) => (target, qos, storable),
                        None => continue,
                    }
                }
                Choice::OfflineOnly | Choice::Nobody => continue,
            };
            // The RETAIN flag as this member's subscription asks (MQTT-3.3.1-12).
            let mut delivery = Delivery::new(
                Arc::clone(message),
                qos,
                target.retain_as_published && message.retain,
                target.subscription_ids.clone(),
            );
            delivery.group = Some(Arc::clone(&group.key));
            // The publisher's commit has returned (the caller waited for it); this waits for
            // the commit of the move.
            delivery.gate = pending.as_deref_mut().and_then(Pending::gate);
            let placement = Placement {
                storable,
                inline: true,
            };
            if self.place(&target, delivery, placement, ctx.metrics, &mut pending) {
                group.redistributed();
                moved += 1;
            }
        }
        (moved, elsewhere)
    }

    /// Decides whether `target` takes the message: the ACL, whether the session is connected
    /// (as `ask.presence` requires), the QoS, and its backlog limits with the full-queue
    /// policy (or without: `ask.apply_policy` false only reports it full). An admitted
    /// delivery is reserved until [`Router::place`].
    fn admit(
        &self,
        target: &Target,
        ask: &Ask<'_>,
        pending: &mut Option<&mut Pending>,
    ) -> Admission {
        let Ask {
            message,
            ctx,
            persistent,
            presence,
            apply_policy,
        } = *ask;
        let metrics = ctx.metrics;
        let cost = message_cost(message);
        let mut slot = target.session.slot.lock();
        if slot.ended {
            return Admission::Passed;
        }
        if let Some(acl) = &slot.acl
            && !acl.check(&message.topic, crate::auth::Access::Read)
        {
            // Not readable by the client now attached (deny rules, another user, a reload).
            return Admission::Passed;
        }
        let online = slot.conn.is_some();
        match presence {
            Presence::Online if !online => return Admission::Passed,
            Presence::Offline if online => return Admission::Passed,
            _ => {}
        }
        let qos = message.qos.min(target.qos);
        let storable =
            persistent && slot.persisted && qos != QoS::AtMostOnce && message.id.is_some();
        if storable && !ctx.store_writable {
            return Admission::Full {
                room_seq: target.session.room_seq(),
            };
        }
        let reserved = if storable && !ctx.store_has_room {
            // A durable session's message must be written to the store, which is full.
            Err(Refused::Full)
        } else {
            slot.session.outbound.reserve(cost, qos, storable, online)
        };
        let admitted = Admission::Admitted { qos, storable };
        match reserved {
            Ok(()) => admitted,
            Err(Refused::OfflineQoS0) => {
                if apply_policy {
                    Metrics::inc(&metrics.dropped_qos0_offline);
                }
                Admission::Dropped
            }
            Err(Refused::Full) if !apply_policy => Admission::Full {
                room_seq: target.session.room_seq(),
            },
            Err(Refused::Full) if qos == QoS::AtMostOnce => {
                // The spec allows dropping QoS 0 (MQTT 4.3.1); counted.
                Metrics::inc(&metrics.dropped_qos0_queue_full);
                Admission::Dropped
            }
            Err(Refused::Full) => match ctx.policy {
                QueueFullPolicy::Backpressure => Admission::Full {
                    room_seq: target.session.room_seq(),
                },
                QueueFullPolicy::DropNew => {
                    slot.session.dropped += 1;
                    drop(slot);
                    Metrics::inc(&metrics.dropped_queue_full);
                    metrics.log_queue_full(&target.session.client_id, 1, 0, 0);
                    Admission::Dropped
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
                    if room { admitted } else { Admission::Dropped }
                }
            },
        }
    }

    /// Admits a delivery to `target` beyond its backlog limits (see [`Router::redistribute`]);
    /// `None` if the session has ended or may not read the topic.
    fn admit_over_limit(&self, target: &Target, ask: &Ask<'_>) -> Option<(QoS, bool)> {
        let message = ask.message;
        let mut slot = target.session.slot.lock();
        if slot.ended
            || slot
                .acl
                .as_ref()
                .is_some_and(|acl| !acl.check(&message.topic, crate::auth::Access::Read))
        {
            return None;
        }
        let qos = message.qos.min(target.qos);
        let storable =
            ask.persistent && slot.persisted && qos != QoS::AtMostOnce && message.id.is_some();
        slot.session
            .outbound
            .reserve_over_limit(message_cost(message));
        Some((qos, storable))
    }

    /// Places a reserved delivery in `target`'s queue (recording it in the store if
    /// `placement.storable`) and arranges for its connection to be woken. Returns false if
    /// the session ended meanwhile.
    fn place(
        &self,
        target: &Target,
        mut delivery: Delivery,
        placement: Placement,
        metrics: &Metrics,
        pending: &mut Option<&mut Pending>,
    ) -> bool {
        let cost = message_cost(&delivery.message);
        let session = &target.session;
        let mut slot = session.slot.lock();
        if slot.ended {
            slot.session.outbound.unreserve(cost);
            return false;
        }
        let online = slot.conn.is_some();
        if let Some(seq) = delivery.stream_position() {
            slot.session.stream_seen = slot.session.stream_seen.max(seq);
        }
        let persist = placement.storable && slot.persisted;
        let op = if persist && let Some(id) = delivery.message.id {
            let seq = slot.session.take_seq();
            delivery.seq = Some(seq);
            let mut entry = delivery_entry(id, &delivery);
            if placement.inline {
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
        let placed = slot.session.outbound.place(delivery, cost, persist, online);
        drop(slot);
        if let Some(group) = &target.group {
            group.delivered_to(session);
        }
        Metrics::inc(&metrics.deliveries_enqueued);
        if placed == crate::session::Placement::Store {
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
            None if online => session.notify(),
            None => {}
        }
        true
    }

    /// The sessions whose own subscriptions match (merged per session), and the groups whose
    /// filter matches, as `ctx` admits them.
    fn targets(
        &self,
        message: &Message,
        publisher: Option<u64>,
        ctx: &RouteContext<'_>,
    ) -> (Vec<Target>, Vec<Arc<Group>>) {
        let audience = ctx.audience;
        let mut found: Vec<(u64, Target)> = Vec::new();
        if !matches!(ctx.groups, GroupScope::Only(_)) {
            self.subscriptions
                .read()
                .for_each_match(&message.topic, |key, sub| {
                    if sub.options.no_local && publisher == Some(*key) {
                        return;
                    }
                    if !audience.admits(&sub.session, message) {
                        return;
                    }
                    found.push((
                        *key,
                        Target {
                            session: Arc::clone(&sub.session),
                            qos: sub.options.qos,
                            retain_as_published: sub.options.retain_as_published,
                            subscription_ids: sub.options.subscription_id.into_iter().collect(),
                            group: None,
                        },
                    ));
                });
        }
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
        let mut groups = Vec::new();
        let wanted = |group: &Group| match ctx.groups {
            GroupScope::Every => true,
            GroupScope::Local => crate::cluster::is_local(&message.topic),
            GroupScope::Only(key) => *group.key == *key,
        };
        if audience.includes_groups() {
            self.shared.read().for_each_match(&message.topic, |group| {
                if wanted(group) {
                    groups.push(Arc::clone(group));
                }
            });
        }
        (
            found.into_iter().map(|(_, target)| target).collect(),
            groups,
        )
    }

    /// Whether the group `key` has members here: `Some(true)` if one of them is connected.
    pub(crate) fn group_presence(&self, key: &str) -> Option<bool> {
        let group = self.shared.read().group(key)?;
        Some(group.any_connected())
    }

    /// Every Shared Subscription group with its counters.
    pub(crate) fn shared_info(&self) -> Vec<SharedSubscriptionInfo> {
        self.shared.read().info()
    }
}

/// Which sessions [`Router::admit`] considers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presence {
    /// Any session.
    Any,
    /// Only a session with a connection.
    Online,
    /// Only a session without one.
    Offline,
}

/// What [`Router::admit`] is asked.
#[derive(Clone, Copy)]
struct Ask<'a> {
    message: &'a Arc<Message>,
    ctx: &'a RouteContext<'a>,
    /// The broker has a store.
    persistent: bool,
    presence: Presence,
    /// Apply the full-queue policy (else only report a full queue).
    apply_policy: bool,
}

/// What [`Router::admit`] decided.
#[derive(Debug)]
enum Admission {
    /// Reserved: to be placed at `qos`.
    Admitted {
        qos: QoS,
        /// Written to the store.
        storable: bool,
    },
    /// Not for this session (ended, not readable, or not of the presence asked for).
    Passed,
    /// For this session, and dropped there (counted when the policy was applied).
    Dropped,
    /// A QoS 1/2 delivery that does not fit under back-pressure (or any delivery that does not
    /// fit, when only probing).
    Full {
        /// The session's backlog generation.
        room_seq: u64,
    },
}

/// The member of a group a message goes to.
enum Choice {
    /// This member took it.
    Admitted(Target, QoS, bool),
    /// No member took it; this connected member was the first found full, and these others
    /// (with their backlog generations) were full too.
    Full(Target, Vec<(Arc<SessionHandle>, u64)>),
    /// Members are away and the message is QoS 0.
    OfflineOnly,
    /// No member may receive it.
    Nobody,
}

/// How [`Router::place`] places a delivery.
#[derive(Debug, Clone, Copy)]
struct Placement {
    /// Written to the store if the session is durable.
    storable: bool,
    /// The message goes into the queue entry itself (it is stored for this session only).
    inline: bool,
}
