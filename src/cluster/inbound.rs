//! Messages from other nodes and NATS applications, routed to this node's sessions.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use async_nats::jetstream::consumer::{self, pull};
use futures_util::{FutureExt, StreamExt};
use tracing::{debug, info, warn};

use crate::broker::{Audience, Broker, Pending, Routed};
use crate::codec::QoS;
use crate::config::QueueFullPolicy;
use crate::store::Op;

use super::{subject, wire};

/// Messages of the stream handled in one batch (one store commit).
const BATCH: usize = 256;
/// JetStream redelivers a message not acknowledged within this time.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Unacknowledged messages JetStream hands this node at most.
const MAX_ACK_PENDING: i64 = 4096;

/// Routes QoS 0 messages arriving on the NATS subscription of `filter`.
pub(super) async fn run_subscription(
    broker: Arc<Broker>,
    filter: Arc<str>,
    mut subscriber: async_nats::Subscriber,
) {
    let Some(cluster) = broker.cluster.as_ref() else {
        return;
    };
    while let Some(m) = subscriber.next().await {
        // Once per node, however many of its subscriptions match: by the message's id, or
        // for NATS applications' messages (which have none) by the first matching filter.
        let once = |topic: &str| match m.headers.as_ref().and_then(|h| h.get(wire::ID)) {
            Some(id) => cluster.interest().first_copy(id.as_str()),
            None => cluster.interest().routes(&filter, topic),
        };
        let Some(received) = core_message(&broker, &m, once) else {
            continue;
        };
        cluster.stats.received.fetch_add(1, Relaxed);
        broker.route_only(&received.message, QueueFullPolicy::DropNew, None);
    }
}

/// The QoS 0 Application Message of a message on a topic's subject, if it is one and `take`
/// (given its topic) agrees: `None` for a Roost node's copy of a QoS 1/2 message (that
/// comes through the stream), a subject that is no Topic Name, or malformed headers.
pub(super) fn core_message(
    broker: &Broker,
    m: &async_nats::Message,
    take: impl FnOnce(&str) -> bool,
) -> Option<wire::Received> {
    let cluster = broker.cluster.as_ref()?;
    if wire::is_stream_copy(m.headers.as_ref()) {
        return None;
    }
    let topic = subject::subject_topic(&cluster.config.prefix, &m.subject)
        .filter(|t| crate::topic::valid_topic_name(t))?;
    if !take(&topic) {
        return None;
    }
    let received = wire::read(
        topic,
        m.headers.as_ref(),
        m.payload.clone(),
        QoS::AtMostOnce,
        QoS::AtMostOnce,
        broker.clock.now(),
        Duration::ZERO,
    );
    if received.is_none() {
        debug!(subject = %m.subject, "cluster: message with malformed headers ignored");
    }
    received
}

/// Reads the stream of QoS 1/2 messages through this node's durable consumer, for ever
/// (reconnecting after failures). `ready` is told once the consumer exists: a new node's
/// consumer starts at the end of the stream, so it must exist before clients subscribe.
pub(super) async fn run_stream(broker: Arc<Broker>, ready: tokio::sync::oneshot::Sender<()>) {
    let shutdown = broker.shutdown.clone();
    let mut ready = Some(ready);
    let mut delay = Duration::from_millis(100);
    let Some(mut adoptions) = broker
        .cluster
        .as_ref()
        .and_then(|c| c.adoptions_rx.lock().take())
    else {
        return;
    };
    loop {
        let result = tokio::select! {
            r = consume(&broker, &mut ready, &mut adoptions) => r,
            _ = shutdown.cancelled() => return,
        };
        if let Err(e) = result {
            warn!(error = %e, "cluster: reading the stream failed; retrying");
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn consume(
    broker: &Arc<Broker>,
    ready: &mut Option<tokio::sync::oneshot::Sender<()>>,
    adoptions: &mut tokio::sync::mpsc::Receiver<super::follow::Adoption>,
) -> Result<(), Error> {
    let Some(cluster) = broker.cluster.as_ref() else {
        return Ok(());
    };
    let c = &cluster.config;
    let stream = cluster.jetstream().get_stream(&c.stream).await?;
    let config = pull::Config {
        durable_name: Some(c.node.clone()),
        description: Some(format!("Roost node {}", c.node)),
        filter_subject: format!("{}.>", c.stream_subject),
        // A new node starts from now; a known node goes on where it stopped.
        deliver_policy: consumer::DeliverPolicy::New,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        max_ack_pending: MAX_ACK_PENDING,
        ..Default::default()
    };
    let mut consumer = stream
        .get_or_create_consumer(&c.node, config.clone())
        .await?;
    // Messages handed to an earlier run and not acknowledged would come again only after
    // `ack_wait`, behind later ones: start again from the first one not acknowledged, so
    // that the stream is read in order.
    let info = consumer.info().await?.clone();
    if info.num_ack_pending > 0 {
        stream.delete_consumer(&c.node).await?;
        consumer = stream
            .create_consumer(pull::Config {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: info.ack_floor.stream_sequence + 1,
                },
                ..config
            })
            .await?;
    }
    // What this node's consumer acknowledged was committed here (or, for a new consumer,
    // came before this node existed): a Session moving here reads the stream up to there.
    let floor = consumer.info().await?.ack_floor.stream_sequence;
    cluster.applied.fetch_max(floor, Relaxed);
    if let Some(ready) = ready.take() {
        let _ = ready.send(());
    }
    let mut messages = consumer.messages().await?;
    info!(consumer = %c.node, stream = %c.stream, "cluster: reading the stream");
    loop {
        // Between batches, where this node's position in the stream is exact: Sessions that
        // moved here are rebuilt.
        let next = tokio::select! {
            biased;
            Some(adoption) = adoptions.recv() => {
                super::follow::adopt_here(broker, &stream, adoption).await;
                continue;
            }
            next = messages.next() => next,
        };
        let Some(first) = next else {
            return Err("the consumer's message stream ended".into());
        };
        let mut batch = vec![first?];
        while batch.len() < BATCH {
            match messages.next().now_or_never() {
                Some(Some(Ok(m))) => batch.push(m),
                Some(Some(Err(e))) => return Err(e.into()),
                Some(None) => break,
                None => break,
            }
        }
        if !deliver_batch(broker, &batch).await {
            // Not committed: JetStream delivers them again at once.
            for m in &batch {
                let _ = m.ack_with(async_nats::jetstream::AckKind::Nak(None)).await;
            }
            return Err("the store could not commit messages of the stream".into());
        }
        for m in &batch {
            if let Err(e) = m.ack().await {
                warn!(error = %e, "cluster: acknowledging a message to JetStream failed");
            }
        }
    }
}

/// Routes a batch of the stream's messages here, and returns once their durable changes are
/// committed: true, or false if the store failed (the messages must then come again).
async fn deliver_batch(broker: &Arc<Broker>, batch: &[async_nats::jetstream::Message]) -> bool {
    let Some(cluster) = broker.cluster.as_ref() else {
        return false;
    };
    let c = &cluster.config;
    let policy = broker.config.queue_full;
    let mut pending = Pending::new(broker.persistent());
    let applied = cluster.applied.load(Relaxed);
    let mut last = applied;
    for m in batch {
        let sequence = m.info().map(|i| i.stream_sequence).unwrap_or(0);
        if sequence <= applied {
            // Committed here before, its acknowledgement lost (or the node crashed first).
            continue;
        }
        last = last.max(sequence);
        if wire::group_of(m.headers.as_ref()).is_some() {
            // For one Shared Subscription group, whose consumer brings it.
            continue;
        }
        let Some(received) = consumed_message(broker, m, sequence) else {
            continue;
        };
        // For No Local: its publisher, if that client's Session is here now.
        let publisher = m
            .headers
            .as_ref()
            .and_then(|h| h.get(wire::CLIENT))
            .and_then(|client| broker.registry.get(client.as_str()))
            .map(|s| s.key);
        let audience = if received.origin.as_deref() == Some(c.node.as_str()) {
            // Routed here when it was published, except to the Sessions that follow the
            // stream: they take it now, in the stream's order.
            Audience::Following
        } else {
            cluster.stats.received.fetch_add(1, Relaxed);
            Audience::All
        };
        let message = received.message;
        // At a full queue under back-pressure the stream waits: its messages were
        // acknowledged to their publishers and cannot be dropped.
        loop {
            match broker.route_to(&message, policy, Some(&mut pending), audience, publisher) {
                Routed::Delivered { .. } => break,
                Routed::Full {
                    session, room_seq, ..
                } => {
                    let shutdown = broker.shutdown.clone();
                    tokio::select! {
                        _ = tokio::time::timeout(Duration::from_secs(1), session.room_since(room_seq)) => {}
                        _ = shutdown.cancelled() => return false,
                    }
                }
            }
        }
    }
    if last == applied {
        return true;
    }
    if !pending.ops.is_empty() {
        // With the deliveries it made: a redelivery after a crash is then recognised.
        pending.push(Op::PutClusterSequence {
            stream: Arc::from(c.stream.as_str()),
            sequence: last,
        });
    }
    let ok = broker.commit(std::mem::take(&mut pending.ops)).await;
    pending.release(ok);
    if ok {
        cluster.applied.fetch_max(last, Relaxed);
    }
    ok
}

/// The Application Message of a message a consumer handed out (its stream sequence
/// `sequence`), or `None` (logged) if it is not an MQTT message.
pub(super) fn consumed_message(
    broker: &Broker,
    m: &async_nats::jetstream::Message,
    sequence: u64,
) -> Option<wire::Received> {
    let received = stream_message(
        broker,
        &m.subject,
        m.headers.as_ref(),
        m.payload.clone(),
        sequence,
        super::stored_for(broker, m),
    );
    if received.is_none() {
        debug!(subject = %m.subject, "cluster: stream message that is not an MQTT message ignored");
    }
    received
}

/// The Application Message of the stream's message `sequence` (to `subject`, stored `age`
/// ago), with its stream sequence and a store id; `None` if it is not an MQTT message.
pub(super) fn stream_message(
    broker: &Broker,
    subject: &str,
    headers: Option<&async_nats::HeaderMap>,
    payload: bytes::Bytes,
    sequence: u64,
    age: Duration,
) -> Option<wire::Received> {
    let cluster = broker.cluster.as_ref()?;
    let topic = subject::subject_topic(&cluster.config.stream_subject, subject)
        .filter(|t| crate::topic::valid_topic_name(t))?;
    let mut received = wire::read(
        topic,
        headers,
        payload,
        QoS::AtLeastOnce,
        QoS::ExactlyOnce,
        broker.clock.now(),
        age,
    )?;
    let m = Arc::make_mut(&mut received.message);
    m.stream_seq = Some(sequence);
    m.id = broker.message_id();
    Some(received)
}
