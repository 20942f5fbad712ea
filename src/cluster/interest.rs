//! This node's NATS subscriptions: one set of subjects per distinct Topic Filter its clients
//! hold, subscribed while any client holds it. Shared Subscriptions go to [`super::shares`].

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::broker::Broker;
use crate::topic::SubscriptionTrie;

use super::shares::ShareChange;
use super::subject;

/// A Topic Filter gained or lost a subscriber on this node.
#[derive(Debug)]
pub(crate) struct InterestChange {
    /// The filter.
    pub filter: String,
    /// Gained (true) or lost.
    pub add: bool,
}

/// The filters this node receives from NATS, and the channel of changes to them.
#[derive(Debug)]
pub(crate) struct Interest {
    prefix: String,
    tx: mpsc::UnboundedSender<InterestChange>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<InterestChange>>>,
    shares: mpsc::UnboundedSender<ShareChange>,
    shares_rx: Mutex<Option<mpsc::UnboundedReceiver<ShareChange>>>,
    /// Members here of each Shared Subscription group (by `$share/...`).
    groups: Mutex<HashMap<String, usize>>,
    /// Held from [`Interest::group_has_room`] until the membership is added (see
    /// [`Interest::joining`]).
    joining: Mutex<()>,
    /// The filters subscribed to now.
    filters: RwLock<SubscriptionTrie<Arc<str>, ()>>,
    /// Ids of the last messages routed that carry one (`Roost-Id`), oldest first.
    seen: Mutex<Seen>,
}

/// The last [`SEEN`] message ids.
#[derive(Debug, Default)]
struct Seen {
    ids: std::collections::HashSet<String>,
    order: std::collections::VecDeque<String>,
}

/// Message ids remembered: a copy arriving on another subscription comes long before this
/// many later messages.
const SEEN: usize = 65_536;

impl Interest {
    pub(super) fn new(prefix: String) -> Interest {
        let (tx, rx) = mpsc::unbounded_channel();
        let (shares, shares_rx) = mpsc::unbounded_channel();
        Interest {
            prefix,
            tx,
            rx: Mutex::new(Some(rx)),
            shares,
            shares_rx: Mutex::new(Some(shares_rx)),
            groups: Mutex::default(),
            joining: Mutex::default(),
            filters: RwLock::new(SubscriptionTrie::default()),
            seen: Mutex::default(),
        }
    }

    pub(super) fn take_receiver(&self) -> Option<mpsc::UnboundedReceiver<InterestChange>> {
        self.rx.lock().take()
    }

    pub(super) fn take_share_receiver(&self) -> Option<mpsc::UnboundedReceiver<ShareChange>> {
        self.shares_rx.lock().take()
    }

    /// A subscription to `filter` (or a membership of the Shared Subscription `filter`) was
    /// added (`add`) or removed on this node.
    pub(crate) fn change(&self, filter: &str, add: bool) {
        let (inner, shared) = match crate::topic::shared(filter) {
            Some(Ok(shared)) => (shared.filter, true),
            Some(Err(())) => return,
            None => (filter, false),
        };
        if super::is_local(inner) || subject::check(inner).is_err() {
            return;
        }
        if shared {
            let mut groups = self.groups.lock();
            if add {
                *groups.entry(filter.to_string()).or_insert(0) += 1;
            } else if let Some(n) = groups.get_mut(filter) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    groups.remove(filter);
                }
            }
            drop(groups);
            let _ = self.shares.send(ShareChange {
                key: filter.to_string(),
                filter: inner.to_string(),
                add,
            });
            return;
        }
        let _ = self.tx.send(InterestChange {
            filter: inner.to_string(),
            add,
        });
    }

    /// Held by a SUBSCRIBE from its [`Interest::group_has_room`] until it has added the
    /// membership: two SUBSCRIBEs to new groups cannot both take the last room.
    pub(crate) fn joining(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.joining.lock()
    }

    /// True if a member may join the Shared Subscription `key` (`$share/...`): the group
    /// has members here already, or fewer than `max` groups have (0: no limit).
    pub(crate) fn group_has_room(&self, key: &str, max: usize) -> bool {
        let groups = self.groups.lock();
        max == 0 || groups.len() < max || groups.contains_key(key)
    }

    /// True the first time a message with id `id` comes (on any of this node's
    /// subscriptions): it is routed then, and its other copies are not.
    pub(super) fn first_copy(&self, id: &str) -> bool {
        let mut seen = self.seen.lock();
        if seen.ids.contains(id) {
            return false;
        }
        if seen.order.len() == SEEN
            && let Some(old) = seen.order.pop_front()
        {
            seen.ids.remove(&old);
        }
        seen.ids.insert(id.to_string());
        seen.order.push_back(id.to_string());
        true
    }

    /// For messages without an id (from NATS applications): true if `filter` is the first
    /// (in byte order) of this node's subscribed filters that
    /// match `topic`: a message matching several of them arrives once per NATS subscription,
    /// and is routed only from the first, so each arrives here once.
    pub(super) fn routes(&self, filter: &str, topic: &str) -> bool {
        let mut first: Option<Arc<str>> = None;
        self.filters.read().for_each_match(topic, |f, ()| {
            if first.as_deref().is_none_or(|cur| **f < *cur) {
                first = Some(Arc::clone(f));
            }
        });
        first.as_deref() == Some(filter)
    }
}

/// Applies interest changes: subscribes to a filter's subjects when its first subscriber
/// comes, unsubscribes when its last goes.
pub(super) async fn run(broker: Arc<Broker>, mut changes: mpsc::UnboundedReceiver<InterestChange>) {
    let Some(cluster) = broker.cluster.as_ref() else {
        return;
    };
    let mut held: HashMap<String, (usize, Vec<JoinHandle<()>>)> = HashMap::new();
    let shutdown = broker.shutdown.clone();
    loop {
        let change = tokio::select! {
            c = changes.recv() => match c {
                Some(c) => c,
                None => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let interest = cluster.interest();
        if change.add {
            let entry = held.entry(change.filter.clone()).or_default();
            entry.0 += 1;
            if entry.0 > 1 {
                continue;
            }
            let filter: Arc<str> = Arc::from(change.filter.as_str());
            let Ok(subjects) = subject::filter_subjects(&interest.prefix, &change.filter) else {
                continue;
            };
            let mut subscribed = true;
            for s in subjects {
                match cluster.client().subscribe(s.clone()).await {
                    Ok(subscriber) => entry.1.push(tokio::spawn(super::inbound::run_subscription(
                        Arc::clone(&broker),
                        Arc::clone(&filter),
                        subscriber,
                    ))),
                    Err(e) => {
                        warn!(subject = %s, error = %e, "cluster: cannot subscribe");
                        subscribed = false;
                    }
                }
            }
            // Only a filter that receives may be the one other filters' messages are routed
            // from (see `routes`): added once its subscriptions are in place.
            if subscribed {
                let _ = cluster.client().flush().await;
                interest
                    .filters
                    .write()
                    .insert(&change.filter, Arc::clone(&filter), ());
            }
        } else if let Some(entry) = held.get_mut(&change.filter) {
            entry.0 = entry.0.saturating_sub(1);
            if entry.0 == 0 {
                // Out of the trie first, so that messages it still receives are routed from
                // the other filters that match them.
                let key: Arc<str> = Arc::from(change.filter.as_str());
                interest.filters.write().remove(&change.filter, &key);
                if let Some((_, tasks)) = held.remove(&change.filter) {
                    for t in tasks {
                        // Dropping the subscriber unsubscribes.
                        t.abort();
                    }
                }
            }
        }
    }
    for (_, (_, tasks)) in held {
        for t in tasks {
            t.abort();
        }
    }
}
