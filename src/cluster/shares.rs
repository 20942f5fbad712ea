//! Shared Subscriptions across the cluster: a group spans the nodes, and each message reaches
//! one member of it in the whole cluster, not one per node (MQTT 5.0 4.8.2).
//!
//! A node with a connected member of group `$share/{name}/{filter}` takes the group's messages
//! through two NATS mechanisms that already hand each message to one taker:
//! - **QoS 1/2**: a durable JetStream consumer of the stream per subject of the filter (two
//!   for `a/#`, whose `a` is a subject of its own), named after a hash of the group. Every
//!   node serving the group pulls from the same consumer, so JetStream gives each message to
//!   one node. The node acknowledges it once a member here has it (committed to the store
//!   for a durable member), or gives it back (NAK) when none can take it, for another node.
//! - **QoS 0**: a NATS queue subscription on the filter's subjects, with a queue group named
//!   after the same hash: NATS gives each message to one subscriber of the group.
//!
//! A node's ordinary reading (its consumer of the stream, its subscriptions) leaves groups out
//! ([`GroupScope::Local`](crate::broker::GroupScope)). A node whose members of a group are all
//! away takes nothing for it: the group's QoS 1/2 messages wait in its consumer for a member to
//! connect on any node (within the stream's limits), and its QoS 0 messages go to nodes with
//! a member connected, or nowhere. A consumer nobody pulls from for the stream's `max_age`
//! (7 days when unlimited) is removed by JetStream.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::consumer::{self, pull};
use async_nats::jetstream::{AckKind, Message as JsMessage};
use futures_util::{FutureExt, StreamExt};
use sha2::Digest;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::broker::{Broker, Pending, Routed};
use crate::config::QueueFullPolicy;

use super::{subject, wire};

/// A node gained (`add`) or lost a member of a Shared Subscription.
#[derive(Debug)]
pub(crate) struct ShareChange {
    /// `$share/{ShareName}/{filter}` as subscribed.
    pub key: String,
    /// Its filter.
    pub filter: String,
    /// Gained (true) or lost.
    pub add: bool,
}

/// Messages pulled in one request, and handled in one store commit at most. Smaller spreads
/// a group's messages more evenly over the nodes; larger takes fewer requests.
const BATCH: usize = 32;
/// How long one pull request waits for messages; how soon a node notices that its members
/// left.
const PULL_EXPIRES: Duration = Duration::from_secs(1);
/// JetStream gives a message to another node when its acknowledgement does not come in this
/// time (the node died).
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Messages of one group handed out and not acknowledged, all nodes together.
const MAX_ACK_PENDING: i64 = 1024;
/// A message no member here could take (full queues) is offered again after this.
const RETRY: Duration = Duration::from_secs(1);
/// A message no member here may take (each one's Session ended, or the ACL denies the topic)
/// is offered again after this, and the node pulls nothing for twice as long after the batch
/// it came in: JetStream hands messages to the oldest waiting pull request (nats-server 2.9),
/// so the offer goes to another node's request, not this node's next one.
const PASS_ON: Duration = PULL_EXPIRES;
/// How many times a message no member may take is offered before it is dropped, as on one
/// node a message no member may read is.
const MAX_OFFERS: i64 = 10;
/// How long a node pulls nothing from a consumer before it makes sure the consumer exists.
const QUIET_CHECK: Duration = Duration::from_secs(5);
/// How often a node whose members are away looks whether one connected.
const PRESENCE_POLL: Duration = Duration::from_millis(200);

/// Follows the node's memberships: serves a group while it has a member here.
pub(super) async fn run(broker: Arc<Broker>, mut changes: mpsc::UnboundedReceiver<ShareChange>) {
    let mut held: HashMap<String, (usize, CancellationToken)> = HashMap::new();
    let shutdown = broker.shutdown.clone();
    loop {
        let change = tokio::select! {
            c = changes.recv() => match c {
                Some(c) => c,
                None => break,
            },
            _ = shutdown.cancelled() => break,
        };
        if change.add {
            let entry = held
                .entry(change.key.clone())
                .or_insert_with(|| (0, shutdown.child_token()));
            entry.0 += 1;
            if entry.0 == 1 {
                let stop = entry.1.clone();
                let group = Group::new(change.key, change.filter);
                tokio::spawn(serve(Arc::clone(&broker), group, stop));
            }
        } else if let Some(entry) = held.get_mut(&change.key) {
            entry.0 = entry.0.saturating_sub(1);
            if entry.0 == 0
                && let Some((_, stop)) = held.remove(&change.key)
            {
                stop.cancel();
            }
        }
    }
}

/// One group as this node serves it.
struct Group {
    /// `$share/{ShareName}/{filter}`.
    key: Arc<str>,
    /// The filter.
    filter: String,
    /// The hash naming its consumers and queue group (the same on every node).
    id: String,
    /// When its first member here subscribed: a consumer created now starts there.
    since: SystemTime,
}

impl Group {
    fn new(key: String, filter: String) -> Group {
        let id = group_id(&key);
        Group {
            key: Arc::from(key),
            filter,
            id,
            since: SystemTime::now(),
        }
    }

    /// True while a member here has a connection.
    fn connected_here(&self, broker: &Broker) -> bool {
        broker.router.group_presence(&self.key) == Some(true)
    }
}

/// The name of group `key` in NATS (its consumers, queue group and given-back messages):
/// 20 hex digits of the SHA-256 of `$share/{ShareName}/{filter}`, the same on every node.
pub(super) fn group_id(key: &str) -> String {
    let digest = sha2::Sha256::digest(key.as_bytes());
    digest[..10].iter().map(|b| format!("{b:02x}")).collect()
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Where a consumer of a group made `now` starts: when the group's first member here
/// subscribed (`since`), but not before the consumer's inactive threshold `idle` ago. A
/// consumer JetStream removed had not been pulled from for `idle`: what it had handed out
/// came before that, and must not come again (with a stream whose `max_age` is unlimited,
/// those messages are still there).
fn start_time(since: SystemTime, now: SystemTime, idle: Duration) -> SystemTime {
    now.checked_sub(idle).map_or(since, |t| t.max(since))
}

/// Serves `group` until `stop`: waits for a member here to be connected, then takes the
/// group's messages until none is.
async fn serve(broker: Arc<Broker>, group: Group, stop: CancellationToken) {
    let mut delay = Duration::from_millis(100);
    loop {
        while !group.connected_here(&broker) {
            tokio::select! {
                _ = tokio::time::sleep(PRESENCE_POLL) => {}
                _ = stop.cancelled() => return,
            }
        }
        match take(&broker, &group, &stop).await {
            Ok(()) => delay = Duration::from_millis(100),
            Err(_) if stop.is_cancelled() => return,
            Err(e) => {
                warn!(group = &*group.key, error = %e, "cluster: serving a Shared Subscription failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => return,
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
        if stop.is_cancelled() {
            return;
        }
    }
}

/// Takes the group's messages while a member here is connected (and not `stop`).
async fn take(broker: &Arc<Broker>, group: &Group, stop: &CancellationToken) -> Result<(), Error> {
    let Some(cluster) = broker.cluster.as_ref() else {
        return Ok(());
    };
    let c = &cluster.config;
    // QoS 0 first: it needs no setup in JetStream.
    let queue = format!("roost_share_{}", group.id);
    let mut subscribers = Vec::new();
    for s in subject::filter_subjects(&c.prefix, &group.filter).map_err(|e| e.to_string())? {
        subscribers.push(
            cluster
                .queue_client()
                .queue_subscribe(s, queue.clone())
                .await?,
        );
    }
    let quit = stop.child_token();
    let qos0 = tokio::spawn(take_qos0(
        Arc::clone(broker),
        Arc::clone(&group.key),
        futures_util::stream::select_all(subscribers),
        quit.clone(),
    ));
    info!(
        group = &*group.key,
        "cluster: serving a Shared Subscription"
    );
    let result = take_stream(broker, group, stop).await;
    quit.cancel();
    // Dropping the subscribers unsubscribes.
    let _ = qos0.await;
    info!(
        group = &*group.key,
        "cluster: no member connected here; the Shared Subscription is served elsewhere"
    );
    result
}

/// Takes the group's QoS 1/2 messages from its consumers (created if missing) while a member
/// here is connected.
async fn take_stream(
    broker: &Arc<Broker>,
    group: &Group,
    stop: &CancellationToken,
) -> Result<(), Error> {
    let Some(cluster) = broker.cluster.as_ref() else {
        return Ok(());
    };
    let c = &cluster.config;
    let stream = cluster.jetstream().get_stream(&c.stream).await?;
    let idle = match c.stream_max_age {
        0 => Duration::from_secs(7 * 24 * 3600),
        secs => Duration::from_secs(secs),
    };
    let mut consumers = Vec::new();
    for (i, filter_subject) in subject::filter_subjects(&c.stream_subject, &group.filter)
        .map_err(|e| e.to_string())?
        .into_iter()
        .enumerate()
    {
        let name = format!("{}_SHARE_{}_{i}", c.stream, group.id);
        let config = pull::Config {
            durable_name: Some(name.clone()),
            description: Some(format!("Roost Shared Subscription {}", group.key)),
            filter_subject,
            // A group new to the cluster starts when its first member subscribed; a known
            // group goes on where it stopped.
            deliver_policy: consumer::DeliverPolicy::ByStartTime {
                start_time: start_time(group.since, SystemTime::now(), idle).into(),
            },
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            max_ack_pending: MAX_ACK_PENDING,
            inactive_threshold: idle,
            ..Default::default()
        };
        // An existing consumer is taken as it is. Nodes whose first members came at the
        // same time race to create it (with different start times): the loser takes the
        // winner's.
        let consumer = match stream.get_consumer(&name).await {
            Ok(consumer) => consumer,
            Err(_) => match stream.create_consumer(config).await {
                Ok(consumer) => consumer,
                Err(e) => stream.get_consumer(&name).await.map_err(|_| e)?,
            },
        };
        consumers.push(consumer);
    }
    // Every loop runs to its end: one dropped while it delivers would leave its deliveries
    // waiting for a commit that never returns (the member's queue stuck behind them). A loop
    // that fails tells the others to stop after their current batch.
    let quit = stop.child_token();
    let pulls = futures_util::future::join_all(consumers.iter().map(|consumer| async {
        let pulled = pull_loop(broker, group, consumer, &quit).await;
        if pulled.is_err() {
            quit.cancel();
        }
        pulled
    }))
    .await;
    pulls.into_iter().collect()
}

/// Routes the group's QoS 0 messages from its queue subscription until `quit`.
async fn take_qos0(
    broker: Arc<Broker>,
    key: Arc<str>,
    mut messages: futures_util::stream::SelectAll<async_nats::Subscriber>,
    quit: CancellationToken,
) {
    let Some(cluster) = broker.cluster.as_ref() else {
        return;
    };
    loop {
        let m = tokio::select! {
            m = messages.next() => match m {
                Some(m) => m,
                None => return,
            },
            _ = quit.cancelled() => return,
        };
        let Some(received) = super::inbound::core_message(&broker, &m, |_| true) else {
            continue;
        };
        cluster.stats.received.fetch_add(1, Relaxed);
        broker.route_to_group(&received.message, &key, QueueFullPolicy::DropNew, None);
    }
}

/// Pulls the group's QoS 1/2 messages from `consumer` while a member here is connected (and
/// not `stop`), a batch per request. Each batch is read to its end (full, or expired at the
/// server), so that no message is left handed to this node unread when it stops: those not
/// routed go back at once. Not to be dropped while it runs (see [`deliver`]).
async fn pull_loop(
    broker: &Arc<Broker>,
    group: &Group,
    consumer: &consumer::Consumer<pull::Config>,
    stop: &CancellationToken,
) -> Result<(), Error> {
    let mut quiet_since = tokio::time::Instant::now();
    while !stop.is_cancelled() && group.connected_here(broker) {
        let mut batch = consumer
            .batch()
            .max_messages(BATCH)
            .expires(PULL_EXPIRES)
            .messages()
            .await?;
        let mut pulled = false;
        let mut passed_on = false;
        while let Some(first) = batch.next().await {
            pulled = true;
            let mut messages = vec![first?];
            while messages.len() < BATCH {
                match batch.next().now_or_never() {
                    Some(Some(m)) => messages.push(m?),
                    _ => break,
                }
            }
            let delivered = deliver(broker, group, &messages).await;
            passed_on |= delivered.passed_on;
            if let Some(wait) = delivered.wait {
                // A member's queue is full: wait (bounded) for room before taking more.
                let _ = tokio::time::timeout(RETRY, wait).await;
            }
        }
        if passed_on {
            tokio::select! {
                _ = tokio::time::sleep(PASS_ON * 2) => {}
                _ = stop.cancelled() => {}
            }
        }
        if pulled {
            quiet_since = tokio::time::Instant::now();
        } else if quiet_since.elapsed() >= QUIET_CHECK {
            // A pull request to a consumer that no longer exists (JetStream removed it, or
            // it was deleted between two requests) gets no answer at all: an error here
            // (not found) makes it again.
            consumer.get_info().await?;
            quiet_since = tokio::time::Instant::now();
        }
    }
    Ok(())
}

/// Routes `messages` to members here, commits, and acknowledges each taken one to JetStream
/// (the others go back, for another node or later). Not cancel-safe: dropped during the
/// commit, its deliveries' gate would never open.
async fn deliver(broker: &Arc<Broker>, group: &Group, messages: &[JsMessage]) -> Delivered {
    // A member whose queue is full is passed over for another member, here or on another
    // node, whatever `queue_full` says: the message goes back to JetStream, which keeps it
    // (within the stream's limits) until a member has room. Dropping it here would lose it
    // while a member elsewhere may have room; nobody waits on it (its publisher was
    // acknowledged once JetStream stored it).
    let policy = QueueFullPolicy::Backpressure;
    let mut pending = Pending::new(broker.persistent());
    let mut taken = Vec::with_capacity(messages.len());
    let mut back = Vec::new();
    let mut passed = Vec::new();
    let mut wait = None;
    for m in messages {
        if !group.connected_here(broker) {
            // Its members here left meanwhile: for a node with a member connected.
            back.push(m);
            continue;
        }
        let sequence = m.info().map(|i| i.stream_sequence).unwrap_or(0);
        if wire::group_of(m.headers.as_ref()).is_some_and(|id| id != group.id) {
            // Given back for another group.
            taken.push(m);
            continue;
        }
        let Some(received) = super::inbound::consumed_message(broker, m, sequence) else {
            taken.push(m);
            continue;
        };
        let message = received.message;
        debug!(
            sequence,
            topic = &*message.topic,
            group = &*group.key,
            "cluster: Shared Subscription message"
        );
        match broker.route_to_group(&message, &group.key, policy, Some(&mut pending)) {
            Routed::Delivered { matched: 0 } if !group.connected_here(broker) => back.push(m),
            Routed::Delivered { matched: 0 } => {
                // No member here may take it: each one's Session ended meanwhile, or the ACL
                // of the client attached denies the topic. It is offered to the other
                // nodes' members; once it was offered `MAX_OFFERS` times it is dropped, as on
                // one node a message no member may read is.
                let offers = m.info().map(|i| i.delivered).unwrap_or(i64::MAX);
                if offers < MAX_OFFERS {
                    passed.push(m);
                } else {
                    debug!(
                        sequence,
                        group = &*group.key,
                        offers,
                        "cluster: no member took the message; dropped"
                    );
                    taken.push(m);
                }
            }
            Routed::Delivered { .. } => taken.push(m),
            Routed::Full {
                session, room_seq, ..
            } => {
                back.push(m);
                if wait.is_none() {
                    wait = Some(async move { session.room_since(room_seq).await }.boxed());
                }
            }
        }
    }
    let ok = pending.ops.is_empty() || broker.commit(std::mem::take(&mut pending.ops)).await;
    pending.release(ok);
    if !ok {
        back.append(&mut taken);
    }
    for m in taken {
        if let Err(e) = m.ack().await {
            warn!(error = %e, "cluster: acknowledging a message to JetStream failed");
        }
    }
    for m in back {
        let _ = m.ack_with(AckKind::Nak(Some(RETRY))).await;
    }
    let passed_on = !passed.is_empty();
    for m in passed {
        let _ = m.ack_with(AckKind::Nak(Some(PASS_ON))).await;
    }
    Delivered { wait, passed_on }
}

/// What [`deliver`] did beside delivering.
struct Delivered {
    /// A wait for room, when a member's queue was full.
    wait: Option<futures_util::future::BoxFuture<'static, ()>>,
    /// Messages no member here may take were given back for other nodes.
    passed_on: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumer_made_again_starts_after_what_it_handed_out() {
        let hour = Duration::from_secs(3600);
        let now = SystemTime::UNIX_EPOCH + hour * 24 * 365;
        let week = hour * 24 * 7;
        // A group new to the cluster: from its first member's subscription.
        assert_eq!(start_time(now - hour, now, week), now - hour);
        // A group served here for a month, whose consumer nobody pulled from for a week:
        // not from a month ago.
        assert_eq!(start_time(now - week * 4, now, week), now - week);
        assert_eq!(
            start_time(SystemTime::UNIX_EPOCH, SystemTime::UNIX_EPOCH, week),
            SystemTime::UNIX_EPOCH
        );
    }
}
