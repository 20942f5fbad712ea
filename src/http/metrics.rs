//! `/metrics`: the broker's counters and gauges in the Prometheus text format (prometheus-client),
//! read at scrape time from the same counters `$SYS` and the admin API use, plus the store's
//! histograms of commit time and batch size.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::broker::Broker;

/// The registry served at `/metrics`.
pub(crate) fn registry(broker: &Arc<Broker>) -> Registry {
    let mut registry = Registry::with_prefix("roost");
    registry.register_collector(Box::new(BrokerCollector {
        broker: Arc::downgrade(broker),
    }));
    if let Some(store) = &broker.store {
        let h = &store.histograms;
        registry.register(
            "store_commit_seconds",
            "Time of one store write transaction, fsync included when there is one",
            h.commit_seconds.clone(),
        );
        registry.register(
            "store_commit_batch_requests",
            "Connection batches committed in one store write transaction",
            h.batch_requests.clone(),
        );
    }
    broker.metrics.per_listener.register(&mut registry);
    registry
}

/// Reads every counter at scrape time.
#[derive(Debug)]
struct BrokerCollector {
    broker: Weak<Broker>,
}

/// One value: name (without the `roost_` prefix and, for counters, the `_total` suffix),
/// help text, and the value.
type Value = (&'static str, &'static str, u64);

impl Collector for BrokerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(broker) = self.broker.upgrade() else {
            return Ok(());
        };
        let m = broker.metrics.snapshot();
        let s = broker.store.as_ref().map(|s| s.stats()).unwrap_or_default();
        let counters: [Value; 28] = [
            (
                "connections_accepted",
                "TCP connections accepted",
                m.connections_accepted,
            ),
            (
                "connections_refused",
                "Connections refused at max_connections",
                m.connections_refused,
            ),
            (
                "handshake_failures",
                "TLS or WebSocket handshakes that failed or timed out",
                m.handshake_failures,
            ),
            (
                "packets_received",
                "MQTT packets received, of every type",
                m.packets_received,
            ),
            (
                "packets_sent",
                "MQTT packets sent, of every type",
                m.control_packets_sent + m.publish_sent,
            ),
            (
                "publish_received",
                "PUBLISH packets received",
                m.publish_received,
            ),
            ("publish_sent", "PUBLISH packets sent", m.publish_sent),
            (
                "bytes_received",
                "Bytes read from client connections",
                m.bytes_received,
            ),
            (
                "bytes_sent",
                "Bytes written to client connections",
                m.bytes_sent,
            ),
            (
                "deliveries_enqueued",
                "Deliveries placed in session queues",
                m.deliveries_enqueued,
            ),
            (
                "deliveries_stored",
                "Deliveries placed in the store only",
                m.deliveries_stored,
            ),
            (
                "store_reads",
                "Windows of stored backlog read back into memory",
                m.store_reads,
            ),
            (
                "dropped_queue_full",
                "Messages dropped at a full queue by drop_new or drop_oldest",
                m.dropped_queue_full,
            ),
            (
                "dropped_qos0_queue_full",
                "QoS 0 deliveries dropped at a full queue",
                m.dropped_qos0_queue_full,
            ),
            (
                "dropped_qos0_offline",
                "QoS 0 messages not kept for an absent client",
                m.dropped_qos0_offline,
            ),
            (
                "dropped_too_large",
                "Messages over the client's Maximum Packet Size",
                m.dropped_too_large,
            ),
            (
                "expired",
                "Messages whose Message Expiry Interval passed while queued",
                m.expired,
            ),
            (
                "rejected_quota_exceeded",
                "QoS 1/2 PUBLISH refused with 0x97 at a full queue",
                m.rejected_quota_exceeded,
            ),
            (
                "backpressure_pauses",
                "Times a 3.1.1 publisher was paused at a full queue",
                m.backpressure_pauses,
            ),
            (
                "protocol_errors",
                "Connections closed for a malformed packet or protocol error",
                m.protocol_errors,
            ),
            (
                "acl_denied",
                "PUBLISH and SUBSCRIBE filters refused by the ACL",
                m.acl_denied,
            ),
            (
                "wills_published",
                "Will messages published",
                m.wills_published,
            ),
            (
                "sessions_expired",
                "Sessions ended by their expiry interval",
                m.sessions_expired,
            ),
            (
                "store_commits",
                "Store write transactions",
                s.write_transactions,
            ),
            (
                "store_synced_commits",
                "Store write transactions synced to disk",
                s.synced_transactions,
            ),
            ("store_failures", "Store commits that failed", s.failures),
            (
                "store_reopens",
                "Times the store file was reopened after a failed commit",
                s.reopens,
            ),
            (
                "store_refused",
                "Store requests refused without a write while the store could not write",
                s.refused,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        let sessions = broker.registry.summary();
        let gauges: [Value; 10] = [
            (
                "connections_open",
                "Connections open (handshaking, awaiting CONNECT or connected)",
                m.connections_open,
            ),
            (
                "connections_parked",
                "Idle plain-TCP connections parked without a task",
                m.connections_parked,
            ),
            (
                "clients_connected",
                "Clients connected",
                m.clients_connected,
            ),
            (
                "clients_maximum",
                "The most clients connected at once since start",
                m.clients_maximum,
            ),
            (
                "sessions",
                "Sessions, connected or not",
                sessions.total as u64,
            ),
            (
                "backlog_messages",
                "Messages in session backlogs (queued, in flight, stored)",
                sessions.queued_messages as u64,
            ),
            (
                "subscriptions",
                "Subscriptions, Shared Subscription memberships included",
                broker.router.subscription_count() as u64,
            ),
            (
                "retained_messages",
                "Retained messages",
                broker.router.retained_count() as u64,
            ),
            (
                "store_message_bytes",
                "Bytes of queued messages in the store",
                s.message_bytes,
            ),
            (
                "store_healthy",
                "1 while the store can write, 0 from a failed commit until it is reopened",
                u64::from(s.healthy),
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        encode_groups(&broker, &mut encoder)?;
        encode_bridges(&broker, &mut encoder)?;
        encode_cluster(&broker, &mut encoder)
    }
}

/// In cluster mode: the link to NATS, and the messages it carried.
fn encode_cluster(broker: &Broker, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let Some(cluster) = &broker.cluster else {
        return Ok(());
    };
    let st = &cluster.stats;
    let connected = ConstGauge::new(i64::from(st.connected.load(Relaxed)));
    connected.encode(encoder.encode_descriptor(
        "cluster_connected",
        "1 while the node is connected to a NATS server",
        None,
        connected.metric_type(),
    )?)?;
    let writable = ConstGauge::new(i64::from(st.jetstream_writable.load(Relaxed)));
    writable.encode(encoder.encode_descriptor(
        "cluster_jetstream_writable",
        "1 while JetStream confirms writes; 0 from a write it did not confirm (no quorum, no \
         leader) until one it does",
        None,
        writable.metric_type(),
    )?)?;
    let counters = [
        (
            "cluster_published",
            "Messages this node sent to the other nodes",
            &st.published,
        ),
        (
            "cluster_received",
            "Messages from other nodes and NATS applications routed here",
            &st.received,
        ),
        (
            "cluster_publish_failures",
            "Batches JetStream did not confirm (their acknowledgements were withheld)",
            &st.publish_failures,
        ),
        (
            "cluster_takeovers",
            "Connections closed because another node took their client id over",
            &st.taken_over,
        ),
    ];
    for (name, help, value) in counters {
        let counter = ConstCounter::new(value.load(Relaxed));
        counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
    }
    Ok(())
}

/// Per bridge, labelled `bridge`: whether its link is up, the messages waiting in its local
/// Session, messages forwarded each way (`direction` = `out` or `in`), refused, connects.
fn encode_bridges(broker: &Broker, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let bridges: Vec<_> = broker
        .bridges
        .all()
        .iter()
        .map(|b| b.snapshot(broker))
        .collect();
    if bridges.is_empty() {
        return Ok(());
    }
    let label = |b: &crate::BridgeInfo| vec![("bridge".to_string(), b.name.clone())];
    let gauges: [Family<crate::BridgeInfo>; 2] = [
        (
            "bridge_connected",
            "1 while the bridge's link to its remote broker is up",
            |b| u64::from(b.state == crate::BridgeState::Connected),
        ),
        (
            "bridge_queued",
            "Outgoing messages waiting in the bridge's local Session",
            |b| b.queued as u64,
        ),
    ];
    encode_families(encoder, MetricType::Gauge, &gauges, &bridges, label)?;
    let mut metric = encoder.encode_descriptor(
        "bridge_forwarded",
        "Messages a bridge delivered (QoS 1/2: acknowledged by the far side)",
        None,
        MetricType::Counter,
    )?;
    for b in &bridges {
        for (direction, value) in [("out", b.forwarded_out), ("in", b.forwarded_in)] {
            let mut labels = label(b);
            labels.push(("direction".to_string(), direction.to_string()));
            ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
        }
    }
    let counters: [Family<crate::BridgeInfo>; 2] = [
        (
            "bridge_refused",
            "Messages a broker refused for good on a bridge (dropped)",
            |b| b.refused,
        ),
        (
            "bridge_connects",
            "Times a bridge connected to its remote broker",
            |b| b.connects,
        ),
    ];
    encode_families(encoder, MetricType::Counter, &counters, &bridges, label)
}

/// One labelled metric family: name, help text, and the value of each item.
type Family<T> = (&'static str, &'static str, fn(&T) -> u64);

/// Encodes each family of `families` (all gauges or all counters) with one series per item,
/// labelled by `labels`.
fn encode_families<T>(
    encoder: &mut DescriptorEncoder,
    kind: MetricType,
    families: &[Family<T>],
    items: &[T],
    labels: impl Fn(&T) -> Vec<(String, String)>,
) -> Result<(), std::fmt::Error> {
    for (name, help, read) in families {
        let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
        for item in items {
            let value = read(item);
            let labels = labels(item);
            let series = metric.encode_family(&labels)?;
            match kind {
                MetricType::Counter => ConstCounter::new(value).encode(series)?,
                _ => ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(series)?,
            }
        }
    }
    Ok(())
}

/// Most Shared Subscription groups given series of their own (by ShareName and filter order).
const MAX_GROUP_SERIES: usize = 200;

/// Per Shared Subscription group, labelled `share` and `filter`: members, members connected,
/// messages given to a member, messages moved from a member whose session ended.
fn encode_groups(broker: &Broker, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let mut groups = broker.router.shared_info();
    if groups.is_empty() {
        return Ok(());
    }
    // Any client can create groups: the series are bounded.
    groups.truncate(MAX_GROUP_SERIES);
    let labels = |g: &crate::SharedSubscriptionInfo| {
        vec![
            ("share".to_string(), g.share_name.clone()),
            ("filter".to_string(), g.filter.clone()),
        ]
    };
    let gauges: [Family<crate::SharedSubscriptionInfo>; 2] = [
        (
            "shared_subscription_members",
            "Sessions in a Shared Subscription group",
            |g| g.members as u64,
        ),
        (
            "shared_subscription_members_connected",
            "Sessions of a group with a connection",
            |g| g.online as u64,
        ),
    ];
    encode_families(encoder, MetricType::Gauge, &gauges, &groups, labels)?;
    let counters: [Family<crate::SharedSubscriptionInfo>; 2] = [
        (
            "shared_subscription_delivered",
            "Messages given to a member of a group",
            |g| g.delivered,
        ),
        (
            "shared_subscription_redistributed",
            "Messages moved to a group's member from one whose session ended",
            |g| g.redistributed,
        ),
    ];
    encode_families(encoder, MetricType::Counter, &counters, &groups, labels)
}
