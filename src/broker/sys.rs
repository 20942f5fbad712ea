//! `$SYS` topics: the broker's state as retained messages, refreshed every `sys_interval`
//! seconds. The names and meanings are mosquitto's where mosquitto has the value (its
//! `$SYS/broker/...` tree), so dashboards and scripts written for it keep working; Roost's
//! own values are under `$SYS/broker/roost/`. They are QoS 0 and kept in memory only (never
//! written to the store). Clients read them subject to the ACL like any topic, and a filter
//! starting with a wildcard does not match them (MQTT-4.7.2-1).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::codec::QoS;
use crate::config::QueueFullPolicy;
use crate::session::Message;

use super::Broker;
use super::metrics::MetricsSnapshot;

/// Moving averages of a rate, per minute, over 1, 5 and 15 minutes (mosquitto's `load/`).
#[derive(Debug, Clone, Copy, Default)]
struct Load {
    averages: [f64; 3],
    primed: bool,
}

impl Load {
    const WINDOWS: [(f64, &'static str); 3] = [(60.0, "1min"), (300.0, "5min"), (900.0, "15min")];

    /// Adds `delta` events over `secs` seconds.
    fn update(&mut self, delta: u64, secs: f64) {
        let per_minute = delta as f64 * 60.0 / secs.max(f64::EPSILON);
        for (average, (window, _)) in self.averages.iter_mut().zip(Self::WINDOWS) {
            *average = if self.primed {
                let keep = (-secs / window).exp();
                *average * keep + per_minute * (1.0 - keep)
            } else {
                per_minute
            };
        }
        self.primed = true;
    }
}

/// What the last update saw, to turn counters into rates.
struct Sampler {
    started: Instant,
    last: Option<(Instant, MetricsSnapshot)>,
    loads: [Load; 7],
    /// Synced commits and their microseconds at the last update.
    last_store: (u64, u64),
}

/// Reads one counter from a snapshot.
type Counter = fn(&MetricsSnapshot) -> u64;

/// The counters that have load averages, with their topic under `$SYS/broker/load/`.
const LOADS: [(&str, Counter); 7] = [
    ("messages/received", |m| m.packets_received),
    ("messages/sent", |m| m.control_packets_sent + m.publish_sent),
    ("publish/received", |m| m.publish_received),
    ("publish/sent", |m| m.publish_sent),
    ("bytes/received", |m| m.bytes_received),
    ("bytes/sent", |m| m.bytes_sent),
    ("connections", |m| m.connections_accepted),
];

/// Publishes the `$SYS` topics now and then every `sys_interval` seconds (on the broker's
/// clock) until shutdown.
pub(crate) async fn run(broker: Arc<Broker>) {
    let interval = Duration::from_secs(broker.config.sys_interval);
    if interval.is_zero() {
        return;
    }
    let mut sampler = Sampler {
        started: broker.started,
        last: None,
        loads: [Load::default(); 7],
        last_store: (0, 0),
    };
    let mut next = broker.clock.now();
    loop {
        publish_all(&broker, &mut sampler);
        next += interval;
        tokio::select! {
            _ = broker.clock.sleep_until(next) => {}
            _ = broker.shutdown.cancelled() => return,
        }
    }
}

/// Every `$SYS` topic and its value now.
fn values(broker: &Broker, sampler: &mut Sampler) -> Vec<(String, String)> {
    let now = broker.clock.now();
    let m = broker.metrics.snapshot();
    let sessions = broker.registry.summary();
    let store = broker.store.as_ref().map(|s| s.stats()).unwrap_or_default();
    let retained = broker.router.retained_count();
    let dropped = m.dropped_queue_full + m.dropped_qos0_queue_full + m.dropped_qos0_offline;
    let mut out: Vec<(String, String)> = vec![
        ("version", format!("roost {}", env!("CARGO_PKG_VERSION"))),
        (
            "uptime",
            format!("{} seconds", now.duration_since(sampler.started).as_secs()),
        ),
        ("clients/connected", m.clients_connected.to_string()),
        ("clients/active", m.clients_connected.to_string()),
        ("clients/total", sessions.total.to_string()),
        (
            "clients/disconnected",
            (sessions.total.saturating_sub(sessions.connected)).to_string(),
        ),
        (
            "clients/inactive",
            (sessions.total.saturating_sub(sessions.connected)).to_string(),
        ),
        ("clients/maximum", m.clients_maximum.to_string()),
        ("clients/expired", m.sessions_expired.to_string()),
        ("messages/received", m.packets_received.to_string()),
        (
            "messages/sent",
            (m.control_packets_sent + m.publish_sent).to_string(),
        ),
        (
            "messages/stored",
            (sessions.queued_messages + retained).to_string(),
        ),
        (
            "store/messages/count",
            (sessions.queued_messages + retained).to_string(),
        ),
        ("store/messages/bytes", store.message_bytes.to_string()),
        ("publish/messages/received", m.publish_received.to_string()),
        ("publish/messages/sent", m.publish_sent.to_string()),
        ("publish/messages/dropped", dropped.to_string()),
        ("bytes/received", m.bytes_received.to_string()),
        ("bytes/sent", m.bytes_sent.to_string()),
        (
            "subscriptions/count",
            broker.router.subscription_count().to_string(),
        ),
        ("retained messages/count", retained.to_string()),
        ("roost/dropped/queue_full", m.dropped_queue_full.to_string()),
        (
            "roost/dropped/qos0_queue_full",
            m.dropped_qos0_queue_full.to_string(),
        ),
        (
            "roost/dropped/qos0_offline",
            m.dropped_qos0_offline.to_string(),
        ),
        ("roost/dropped/too_large", m.dropped_too_large.to_string()),
        ("roost/expired", m.expired.to_string()),
        (
            "roost/rejected/quota_exceeded",
            m.rejected_quota_exceeded.to_string(),
        ),
        (
            "roost/backpressure/pauses",
            m.backpressure_pauses.to_string(),
        ),
        (
            "roost/connections/refused",
            m.connections_refused.to_string(),
        ),
        (
            "roost/connections/handshake_failures",
            m.handshake_failures.to_string(),
        ),
        ("roost/protocol_errors", m.protocol_errors.to_string()),
        ("roost/acl_denied", m.acl_denied.to_string()),
        ("roost/store/commits", store.write_transactions.to_string()),
        (
            "roost/store/synced_commits",
            store.synced_transactions.to_string(),
        ),
        ("roost/store/failures", store.failures.to_string()),
        ("roost/store/healthy", u8::from(store.healthy).to_string()),
        ("roost/store/reopens", store.reopens.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let (secs, previous) = match &sampler.last {
        Some((at, previous)) => (now.duration_since(*at).as_secs_f64(), Some(*previous)),
        None => (0.0, None),
    };
    if let Some(previous) = previous.filter(|_| secs > 0.0) {
        for ((topic, count), load) in LOADS.iter().zip(sampler.loads.iter_mut()) {
            load.update(count(&m).saturating_sub(count(&previous)), secs);
            for (average, (_, window)) in load.averages.iter().zip(Load::WINDOWS) {
                out.push((format!("load/{topic}/{window}"), format!("{average:.2}")));
            }
        }
    }
    // The average time of a synced commit (fsync included) since the last update.
    let (commits, micros) = (store.synced_transactions, store.synced_micros);
    let (c0, u0) = sampler.last_store;
    if commits > c0 {
        let ms = micros.saturating_sub(u0) as f64 / (commits - c0) as f64 / 1000.0;
        out.push(("roost/store/commit_latency_ms".into(), format!("{ms:.3}")));
    }
    sampler.last_store = (commits, micros);
    sampler.last = Some((now, m));
    // Each bridge under `$SYS/broker/roost/bridge/<name>/` (mosquitto publishes only
    // `$SYS/broker/connection/<name>/state`, as 1 or 0, which is kept too).
    for b in broker.bridges.all() {
        let info = b.snapshot(broker);
        let connected = info.state == crate::bridge::BridgeState::Connected;
        out.push((
            format!("connection/{}/state", info.remote_client_id),
            u8::from(connected).to_string(),
        ));
        let at = format!("roost/bridge/{}", info.name);
        out.push((format!("{at}/state"), info.state.name().to_string()));
        out.push((format!("{at}/queued"), info.queued.to_string()));
        out.push((
            format!("{at}/forwarded/out"),
            info.forwarded_out.to_string(),
        ));
        out.push((format!("{at}/forwarded/in"), info.forwarded_in.to_string()));
        out.push((format!("{at}/refused"), info.refused.to_string()));
        out.push((format!("{at}/connects"), info.connects.to_string()));
    }
    out
}

/// Publishes every value, retained, as if from no client.
fn publish_all(broker: &Broker, sampler: &mut Sampler) {
    for (topic, value) in values(broker, sampler) {
        let message = Arc::new(Message {
            id: None,
            topic: Arc::from(format!("$SYS/broker/{topic}")),
            payload: Bytes::from(value),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: Default::default(),
            stream_seq: None,
            expires_at: None,
        });
        // Without a pending batch: nothing is written to the store.
        broker.publish(&message, None, QueueFullPolicy::DropNew, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_averages_start_at_the_first_rate_and_follow_it() {
        let mut load = Load::default();
        load.update(100, 10.0);
        assert_eq!(load.averages, [600.0; 3], "per minute");
        load.update(0, 60.0);
        let [one, five, fifteen] = load.averages;
        assert!((one - 600.0 * (-1.0f64).exp()).abs() < 1e-9, "{one}");
        assert!(one < five && five < fifteen, "shorter windows move faster");
    }
}
