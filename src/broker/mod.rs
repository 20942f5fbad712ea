//! Shared broker state: configuration, the session registry, the router and the metrics.

mod access;
mod handle;
pub(crate) mod metrics;
mod pending;
mod restore;
mod router;
mod sessions;
pub(crate) mod shared;
pub(crate) mod sys;
#[cfg(test)]
mod tests;
mod will;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};

use tokio_util::sync::CancellationToken;

pub(crate) use access::{AccessControl, Verdict};
pub(crate) use handle::{
    Absence, ClientInfo, ConnLink, KickReason, ProtocolName, SessionHandle, WillInfo,
};
pub(crate) use metrics::Metrics;
pub(crate) use pending::Pending;
pub(crate) use router::{Audience, GroupScope, RouteContext, Routed, Router};
pub(crate) use sessions::{AttachError, AttachRequest, Registry};
pub(crate) use will::WillDone;

use crate::clock::Clock;
use crate::config::{Config, QueueFullPolicy};
use crate::session::{Message, MessageId};
use crate::store::{Op, Store};

/// Everything the connections of one broker share.
#[derive(Debug)]
pub(crate) struct Broker {
    /// The configuration it was started with.
    pub config: Config,
    /// The clock of every protocol timer and time read (a clone of `config.clock`): use
    /// `clock.now()` instead of `Instant::now()` and `clock.sleep_until()` instead of tokio's
    /// sleeps for anything a client can observe.
    pub clock: Clock,
    /// Sessions by client id.
    pub registry: Registry,
    /// Subscriptions and retained messages.
    pub router: Router,
    /// Counters.
    pub metrics: Metrics,
    /// Cancelled to shut the broker down.
    pub shutdown: CancellationToken,
    /// Durable state; `None` when running in memory only.
    pub store: Option<Store>,
    /// When the broker started, on its clock.
    pub started: std::time::Instant,
    /// Authentication and authorization.
    pub access: AccessControl,
    /// The status of each configured bridge.
    pub bridges: crate::bridge::Bridges,
    /// The link to the other nodes, in cluster mode.
    pub cluster: Option<crate::cluster::Cluster>,
    /// Keep-alive timers of this broker's parked (idle) connections.
    pub parking: crate::net::park::Parking,
    /// Durable sessions are recorded (normally: there is a store).
    persistent: bool,
    me: Weak<Broker>,
    next_connection: AtomicU64,
    next_message_id: AtomicU64,
}

impl Broker {
    /// New shared state for `config`, persisting to `store` if given.
    #[cfg(test)]
    pub(crate) fn new(config: Config, store: Option<Store>, access: AccessControl) -> Arc<Broker> {
        let persistent = store.is_some();
        Broker::build(config, store, persistent, access, None)
    }

    /// As [`Broker::new`], as a node of a cluster.
    pub(crate) fn clustered(
        config: Config,
        store: Option<Store>,
        access: AccessControl,
        cluster: Option<crate::cluster::Cluster>,
    ) -> Arc<Broker> {
        let persistent = store.is_some();
        Broker::build(config, store, persistent, access, cluster)
    }

    /// Shared state without a store that still records durable sessions: the store
    /// operations go to the connections' commits, which a test carries out by hand.
    #[cfg(test)]
    pub(crate) fn recording(config: Config, access: AccessControl) -> Arc<Broker> {
        Broker::build(config, None, true, access, None)
    }

    fn build(
        config: Config,
        store: Option<Store>,
        persistent: bool,
        access: AccessControl,
        cluster: Option<crate::cluster::Cluster>,
    ) -> Arc<Broker> {
        let clock = config.clock.clone();
        let bridges = crate::bridge::Bridges::new(&config.bridges);
        let interest = cluster.as_ref().map(|c| Arc::clone(c.interest()));
        Arc::new_cyclic(|me| Broker {
            persistent,
            access,
            bridges,
            cluster,
            config,
            registry: Registry::default(),
            router: Router::new(clock.clone(), interest),
            metrics: Metrics::with_clock(clock.clone()),
            started: clock.now(),
            clock,
            shutdown: CancellationToken::new(),
            parking: Default::default(),
            store,
            me: me.clone(),
            next_connection: AtomicU64::new(1),
            next_message_id: AtomicU64::new(1),
        })
    }

    /// True if durable state is written to a store.
    pub(crate) fn persistent(&self) -> bool {
        self.persistent
    }

    /// A store id for a message that may be persisted (0 when running in memory).
    pub(crate) fn message_id(&self) -> Option<MessageId> {
        if self.persistent() {
            MessageId::new(self.next_message_id.fetch_add(1, Relaxed))
        } else {
            None
        }
    }

    /// A fresh connection id.
    pub(crate) fn next_connection_id(&self) -> u64 {
        self.next_connection.fetch_add(1, Relaxed)
    }

    /// Routes a message to its subscribers and, if it was accepted, updates the retained
    /// messages if its RETAIN flag is set. Durable changes go to `pending` (which must be given
    /// when there is a store). `policy` says what a full queue does; under back-pressure a
    /// refused message changes nothing, the retained message included. In cluster mode an
    /// accepted message also goes to the other nodes: with the commit of `pending`, whose
    /// acknowledgements then wait for NATS too.
    pub(crate) fn publish(
        &self,
        message: &Arc<Message>,
        publisher: Option<&SessionHandle>,
        policy: QueueFullPolicy,
        mut pending: Option<&mut Pending>,
    ) -> Routed {
        let mut ctx = self.route_context(policy);
        if self.cluster.is_some()
            && message.qos != crate::codec::QoS::AtMostOnce
            && !crate::cluster::is_local(&message.topic)
        {
            // Durable Sessions take it from the cluster's stream, in its order.
            ctx.audience = Audience::NotFollowing;
        }
        let routed = self
            .router
            .route(message, publisher, &ctx, pending.as_deref_mut());
        if !matches!(routed, Routed::Delivered { .. }) {
            return routed;
        }
        if message.retain {
            let gate = pending.as_deref_mut().and_then(|p| p.gate());
            self.router.retain(message, gate);
            if let Some(p) = pending.as_deref_mut().filter(|p| p.persistent) {
                p.push(if message.payload.is_empty() {
                    Op::DeleteRetained {
                        topic: Arc::clone(&message.topic),
                    }
                } else {
                    Op::PutRetained {
                        message: Arc::clone(message),
                    }
                });
            }
        }
        if self.cluster.is_some() && !crate::cluster::is_local(&message.topic) {
            let publisher = publisher.map(|p| Arc::clone(&p.client_id));
            match pending {
                Some(p) => p.forward(message, publisher),
                None => self.forward_detached(vec![crate::cluster::Forward {
                    message: Arc::clone(message),
                    publisher,
                }]),
            }
        }
        routed
    }

    /// Routes a message from another node to this node's sessions only: no retained update
    /// (the retained stream carries those) and no forwarding.
    pub(crate) fn route_only(
        &self,
        message: &Arc<Message>,
        policy: QueueFullPolicy,
        pending: Option<&mut Pending>,
    ) -> Routed {
        self.route_to(message, policy, pending, Audience::All, None)
    }

    /// As [`Broker::route_only`], to `audience` only; `publisher` is the key of the
    /// publisher's Session (for No Local), if it is on this node.
    pub(crate) fn route_to(
        &self,
        message: &Arc<Message>,
        policy: QueueFullPolicy,
        pending: Option<&mut Pending>,
        audience: Audience,
        publisher: Option<u64>,
    ) -> Routed {
        let mut ctx = self.route_context(policy);
        ctx.audience = audience;
        ctx.publisher = publisher;
        self.router.route(message, None, &ctx, pending)
    }

    /// Routes a message that came through the cluster's consumer or queue group of the
    /// Shared Subscription `key` to one member of that group here, and to nobody else.
    pub(crate) fn route_to_group(
        &self,
        message: &Arc<Message>,
        key: &str,
        policy: QueueFullPolicy,
        pending: Option<&mut Pending>,
    ) -> Routed {
        let mut ctx = self.route_context(policy);
        ctx.groups = GroupScope::Only(key);
        self.router.route(message, None, &ctx, pending)
    }

    /// Gives unacknowledged messages of Shared Subscription groups back to the cluster, for
    /// members on other nodes (see [`crate::cluster::Cluster::give_back`]); true once
    /// JetStream stored them (and outside cluster mode, where nothing is given back). Each
    /// goes with the id of its write (see [`Broker::give_back_ids`]): given back again under
    /// the same ids, those JetStream took already are not written twice.
    pub(crate) async fn give_back(
        &self,
        deliveries: &[(crate::session::Delivery, String)],
    ) -> bool {
        match &self.cluster {
            Some(cluster) => cluster.give_back(deliveries, self.clock.now()).await,
            None => true,
        }
    }

    /// Pairs each of `deliveries` (of the ended Session stored as `owner`, if any) with the id
    /// its write to JetStream is to carry whenever it is given back: the same after a restart
    /// for an entry of a stored Session.
    pub(crate) fn give_back_ids(
        &self,
        owner: Option<&crate::store::SessionKey>,
        deliveries: impl IntoIterator<Item = crate::session::Delivery>,
    ) -> Vec<(crate::session::Delivery, String)> {
        deliveries
            .into_iter()
            .map(|d| {
                let id = match &self.cluster {
                    Some(cluster) => cluster.give_back_id(owner.map(|o| o.incarnation), &d),
                    None => String::new(),
                };
                (d, id)
            })
            .collect()
    }

    /// Sends messages to the other nodes without waiting (nobody waits on them: wills).
    fn forward_detached(&self, messages: Vec<crate::cluster::Forward>) {
        if let Some(broker) = self.me.upgrade() {
            tokio::spawn(async move {
                if let Some(cluster) = &broker.cluster {
                    cluster.forward(&messages, broker.clock.now()).await;
                }
            });
        }
    }

    /// Sends the messages of a batch to the other nodes (see [`crate::cluster::Cluster::forward`]);
    /// true outside cluster mode.
    pub(crate) async fn forward(&self, messages: &[crate::cluster::Forward]) -> bool {
        match &self.cluster {
            Some(cluster) if !messages.is_empty() => {
                cluster.forward(messages, self.clock.now()).await
            }
            _ => true,
        }
    }

    /// What routing needs to know, with full-queue policy `policy`.
    pub(crate) fn route_context(&self, policy: QueueFullPolicy) -> RouteContext<'_> {
        RouteContext {
            metrics: &self.metrics,
            policy,
            store_has_room: self.store_has_room(),
            store_writable: self.store_healthy(),
            strategy: self.config.shared_subscription_strategy,
            audience: crate::broker::router::Audience::All,
            groups: if self.cluster.is_some() {
                GroupScope::Local
            } else {
                GroupScope::Every
            },
            publisher: None,
        }
    }

    /// False once the store holds `max_store_bytes` of queued messages.
    pub(crate) fn store_has_room(&self) -> bool {
        let max = self.config.max_store_bytes;
        match &self.store {
            Some(store) if max != 0 => store.queued_bytes() < max,
            _ => true,
        }
    }

    /// False while the store cannot write (after a failed commit, until it is reopened).
    pub(crate) fn store_healthy(&self) -> bool {
        self.store.as_ref().is_none_or(|s| s.healthy())
    }

    /// Publishes a message that no connection waits on (a will): with a store, its durable
    /// changes are committed in the background and its deliveries released afterwards.
    /// Nobody can be slowed or told, so a full queue drops it there (counted).
    pub(crate) fn publish_detached(
        &self,
        message: &Arc<Message>,
        publisher: Option<&SessionHandle>,
    ) {
        let policy = QueueFullPolicy::DropNew;
        let Some(broker) = self.me.upgrade().filter(|b| b.persistent()) else {
            self.publish(message, publisher, policy, None);
            return;
        };
        let mut pending = Pending::new(true);
        self.publish(message, publisher, policy, Some(&mut pending));
        tokio::spawn(async move {
            let forwarded = broker.forward(&std::mem::take(&mut pending.cluster)).await;
            let committed = broker.commit(std::mem::take(&mut pending.ops)).await;
            pending.release(committed && forwarded);
        });
    }

    /// Commits `ops` (if any); false if the store reported a failure.
    pub(crate) async fn commit(&self, ops: Vec<Op>) -> bool {
        match (&self.store, ops.is_empty()) {
            (Some(store), false) => store.commit(ops).await.is_ok(),
            _ => true,
        }
    }

    /// Hands `ops` to the store without waiting.
    pub(crate) fn submit(&self, ops: Vec<Op>) {
        if let Some(store) = &self.store {
            store.submit(ops);
        }
    }
}
