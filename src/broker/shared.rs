//! Shared Subscriptions (MQTT 5.0 4.8.2), the consumer groups of MQTT: every session that
//! subscribes to `$share/{ShareName}/{filter}` joins the group of that exact string, and each
//! message matching the filter goes to one member of the group.
//!
//! This module keeps the groups and decides the order in which members are offered a message
//! ([`Group::candidates`]); the router admits the message to the first that can take it.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use parking_lot::RwLock;

use crate::config::SharedSubscriptionStrategy;
use crate::session::SubOptions;
use crate::topic::{SharedFilter, SubscriptionTrie};

use super::handle::SessionHandle;

/// One session's membership of a group.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    /// The member.
    pub session: Arc<SessionHandle>,
    /// The options it subscribed with.
    pub options: SubOptions,
}

/// The sessions subscribed to one Shared Subscription.
#[derive(Debug)]
pub(crate) struct Group {
    /// `$share/{ShareName}/{filter}` as subscribed: names the group in deliveries and in the
    /// store.
    pub key: Arc<str>,
    /// Members in the order they joined.
    members: RwLock<Vec<Member>>,
    /// Round-robin position.
    turn: AtomicUsize,
    /// Session key of the member the sticky strategy sends to (0: none yet).
    sticky: AtomicU64,
    /// Messages given to a member.
    delivered: AtomicU64,
    /// Unacknowledged messages moved here from a member whose session ended.
    redistributed: AtomicU64,
}

impl Group {
    fn new(key: Arc<str>) -> Group {
        Group {
            key,
            members: RwLock::new(Vec::new()),
            turn: AtomicUsize::new(0),
            sticky: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            redistributed: AtomicU64::new(0),
        }
    }

    /// Calls `f` with the members in the order `strategy` offers them a message of `topic`
    /// from the client `publisher`: those with a connection first, the preferred one leading
    /// and the others following in turn, then those away (in the same manner, for when nobody
    /// is connected). The strategy chooses among the connected members, so that they share
    /// the work evenly whoever is away. The members stay locked for reading meanwhile (`f` may
    /// lock their sessions: the order is group, then session).
    pub(crate) fn with_candidates<R>(
        &self,
        strategy: SharedSubscriptionStrategy,
        publisher: Option<&str>,
        topic: &str,
        f: impl FnOnce(&[&Member]) -> R,
    ) -> R {
        let members = self.members.read();
        let (mut online, mut away): (Vec<&Member>, Vec<&Member>) =
            members.iter().partition(|m| m.session.is_connected());
        let order = if online.is_empty() {
            &mut away
        } else {
            &mut online
        };
        if !order.is_empty() {
            let first = self.first(order, strategy, publisher, topic);
            order.rotate_left(first);
        }
        online.extend(away);
        f(&online)
    }

    /// The position in `members` (not empty) of the member `strategy` prefers.
    fn first(
        &self,
        members: &[&Member],
        strategy: SharedSubscriptionStrategy,
        publisher: Option<&str>,
        topic: &str,
    ) -> usize {
        let n = members.len();
        if n <= 1 && strategy != SharedSubscriptionStrategy::RoundRobin {
            return 0;
        }
        let hash = |s: &str| BuildHasherDefault::<DefaultHasher>::default().hash_one(s);
        let pick = |h: u64| usize::try_from(h % n as u64).unwrap_or(0);
        match strategy {
            SharedSubscriptionStrategy::RoundRobin => self.turn.fetch_add(1, Relaxed) % n,
            SharedSubscriptionStrategy::Random => rand::random_range(0..n),
            SharedSubscriptionStrategy::Sticky => {
                let key = self.sticky.load(Relaxed);
                members
                    .iter()
                    .position(|m| m.session.key == key)
                    .unwrap_or_else(|| rand::random_range(0..n))
            }
            SharedSubscriptionStrategy::HashClientId => publisher.map_or(0, |id| pick(hash(id))),
            SharedSubscriptionStrategy::HashTopic => pick(hash(topic)),
        }
    }

    /// True if a member has a connection.
    pub(crate) fn any_connected(&self) -> bool {
        self.members.read().iter().any(|m| m.session.is_connected())
    }

    /// Records that `session` took a message.
    pub(crate) fn delivered_to(&self, session: &SessionHandle) {
        self.delivered.fetch_add(1, Relaxed);
        self.sticky.store(session.key, Relaxed);
    }

    /// Records that a message moved here from a member whose session ended.
    pub(crate) fn redistributed(&self) {
        self.redistributed.fetch_add(1, Relaxed);
    }

    fn info(&self, shared: SharedFilter<'_>) -> SharedSubscriptionInfo {
        let members = self.members.read();
        SharedSubscriptionInfo {
            share_name: shared.share_name.to_string(),
            filter: shared.filter.to_string(),
            members: members.len(),
            online: members.iter().filter(|m| m.session.is_connected()).count(),
            delivered: self.delivered.load(Relaxed),
            redistributed: self.redistributed.load(Relaxed),
        }
    }
}

/// One Shared Subscription and its counters, from
/// [`crate::BrokerHandle::shared_subscriptions`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SharedSubscriptionInfo {
    /// The ShareName (the group).
    pub share_name: String,
    /// The Topic Filter.
    pub filter: String,
    /// Sessions subscribed.
    pub members: usize,
    /// Of those, sessions with a connection.
    pub online: usize,
    /// Messages given to a member since the group was formed.
    pub delivered: u64,
    /// Unacknowledged QoS 1/2 messages moved to another member because the session holding
    /// them ended.
    pub redistributed: u64,
}

/// Every group, by filter (for routing) and by key.
#[derive(Debug, Default)]
pub(crate) struct SharedSubscriptions {
    trie: SubscriptionTrie<Arc<str>, Arc<Group>>,
    groups: HashMap<Arc<str>, Arc<Group>>,
    /// Memberships, all groups together.
    members: usize,
}

impl SharedSubscriptions {
    /// Adds `session` to the group `key` (whose parts are `shared`), or updates its options.
    /// Returns true if it was a member already.
    pub(crate) fn subscribe(
        &mut self,
        key: &str,
        shared: SharedFilter<'_>,
        session: &Arc<SessionHandle>,
        options: SubOptions,
    ) -> bool {
        let group = match self.groups.get(key) {
            Some(group) => Arc::clone(group),
            None => {
                let key: Arc<str> = Arc::from(key);
                let group = Arc::new(Group::new(Arc::clone(&key)));
                self.trie
                    .insert(shared.filter, Arc::clone(&key), Arc::clone(&group));
                self.groups.insert(key, Arc::clone(&group));
                group
            }
        };
        let mut members = group.members.write();
        if let Some(m) = members.iter_mut().find(|m| m.session.key == session.key) {
            m.options = options;
            return true;
        }
        members.push(Member {
            session: Arc::clone(session),
            options,
        });
        self.members += 1;
        false
    }

    /// Removes session `session_key` from the group `key`; a group left empty is removed.
    /// Returns true if it was a member.
    pub(crate) fn unsubscribe(
        &mut self,
        key: &str,
        shared: SharedFilter<'_>,
        session_key: u64,
    ) -> bool {
        let Some(group) = self.groups.get(key).cloned() else {
            return false;
        };
        let mut members = group.members.write();
        let Some(i) = members.iter().position(|m| m.session.key == session_key) else {
            return false;
        };
        members.remove(i);
        self.members -= 1;
        if members.is_empty() {
            self.groups.remove(key);
            self.trie.remove(shared.filter, &group.key);
        }
        true
    }

    /// The group `key`, if it has members.
    pub(crate) fn group(&self, key: &str) -> Option<Arc<Group>> {
        self.groups.get(key).cloned()
    }

    /// Calls `f` with every group whose filter matches `topic`.
    pub(crate) fn for_each_match(&self, topic: &str, mut f: impl FnMut(&Arc<Group>)) {
        self.trie.for_each_match(topic, |_, group| f(group));
    }

    /// Memberships, all groups together.
    pub(crate) fn len(&self) -> usize {
        self.members
    }

    /// Every group with its counters, ordered by ShareName and filter.
    pub(crate) fn info(&self) -> Vec<SharedSubscriptionInfo> {
        let mut out: Vec<SharedSubscriptionInfo> = self
            .groups
            .iter()
            .filter_map(|(key, group)| Some(group.info(crate::topic::shared(key)?.ok()?)))
            .collect();
        out.sort_by(|a, b| (&a.share_name, &a.filter).cmp(&(&b.share_name, &b.filter)));
        out
    }
}
