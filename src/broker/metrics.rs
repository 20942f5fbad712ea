//! Broker-wide counters. Every dropped message is counted here.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tracing::warn;

use crate::clock::Clock;
use crate::net::conn::Via;

/// Lines per 10 s about refused or failed connection attempts before the rest are only
/// counted (`held_back` on the next line).
pub(crate) const LOG_BURST: u32 = 50;

/// Shortest time between two log lines about dropped or refused messages.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Counts of drops and refusals since the last log line about them.
#[derive(Debug, Default)]
struct DropLog {
    last: Option<Instant>,
    dropped: u64,
    refused: u64,
    paused: u64,
}

/// Paces a log line about an event that may repeat many times a second: the first event
/// is logged at once, later ones at most once per 10 s (real time), with their count.
#[derive(Debug, Default)]
pub(crate) struct LogPace {
    /// When the last line was written, and the events since.
    state: Mutex<(Option<std::time::Instant>, u64)>,
    /// For [`LogPace::allow`]: start of the window, lines written in it, events not logged.
    burst: Mutex<(Option<std::time::Instant>, u32, u64)>,
}

impl LogPace {
    /// Lets up to `burst` lines through per 10 s (real time) and holds back the rest: `Some(n)`
    /// if this event gets its line, `n` being the events held back before it.
    pub(crate) fn allow(&self, burst: u32) -> Option<u64> {
        let mut state = self.burst.lock();
        let now = std::time::Instant::now();
        if state
            .0
            .is_none_or(|start| now.duration_since(start) >= DROP_LOG_INTERVAL)
        {
            state.0 = Some(now);
            state.1 = 0;
        }
        if state.1 >= burst {
            state.2 += 1;
            return None;
        }
        state.1 += 1;
        Some(std::mem::take(&mut state.2))
    }

    /// Counts one event; `Some(n)` if a line is due now, `n` being the events it covers.
    pub(crate) fn tick(&self) -> Option<u64> {
        let mut state = self.state.lock();
        state.1 += 1;
        let now = std::time::Instant::now();
        if state
            .0
            .is_some_and(|t| now.duration_since(t) < DROP_LOG_INTERVAL)
        {
            return None;
        }
        state.0 = Some(now);
        Some(std::mem::take(&mut state.1))
    }
}

/// Counters per listener, labelled `listener="tcp 127.0.0.1:1883"` in the Prometheus exposition.
/// Keyed by the listener itself (its kind and address, hashed by value): counting an event
/// allocates nothing, and the label's text is written only when the metrics are read.
#[derive(Debug, Default)]
pub(crate) struct PerListener {
    accepted: Family<ListenerLabel, Counter>,
    refused: Family<ListenerLabel, Counter>,
    handshake_failures: Family<ListenerLabel, Counter>,
    connected: Family<ListenerLabel, Gauge>,
}

/// The `listener` label of [`PerListener`]'s families.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ListenerLabel(Via);

impl EncodeLabelSet for ListenerLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("listener", self.0.to_string()).encode(encoder.encode_label())
    }
}

/// What happened on a listener.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ListenerEvent {
    /// A connection was accepted.
    Accepted,
    /// A connection was refused at `max_connections`.
    Refused,
    /// A TLS or WebSocket handshake failed.
    HandshakeFailed,
    /// A client connected (CONNACK sent).
    Connected,
    /// A connected client went away.
    Disconnected,
}

impl PerListener {
    /// Counts `event` on the listener named `listener`.
    pub(crate) fn count(&self, listener: Via, event: ListenerEvent) {
        let labels = ListenerLabel(listener);
        match event {
            ListenerEvent::Accepted => {
                self.accepted.get_or_create(&labels).inc();
            }
            ListenerEvent::Refused => {
                self.refused.get_or_create(&labels).inc();
            }
            ListenerEvent::HandshakeFailed => {
                self.handshake_failures.get_or_create(&labels).inc();
            }
            ListenerEvent::Connected => {
                self.connected.get_or_create(&labels).inc();
            }
            ListenerEvent::Disconnected => {
                self.connected.get_or_create(&labels).dec();
            }
        }
    }

    /// Adds the families to `registry`.
    pub(crate) fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "listener_connections_accepted",
            "TCP connections accepted, per listener",
            self.accepted.clone(),
        );
        registry.register(
            "listener_connections_refused",
            "Connections refused at max_connections, per listener",
            self.refused.clone(),
        );
        registry.register(
            "listener_handshake_failures",
            "TLS or WebSocket handshakes that failed or timed out, per listener",
            self.handshake_failures.clone(),
        );
        registry.register(
            "listener_clients_connected",
            "Clients connected, per listener",
            self.connected.clone(),
        );
    }
}

/// Live counters, updated without locks.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// TCP connections accepted.
    pub connections_accepted: AtomicU64,
    /// Connections open right now (handshaking, awaiting CONNECT, or connected).
    pub connections_open: AtomicU64,
    /// Connected clients parked while idle, without a task ([`crate::net::park`]).
    pub connections_parked: AtomicU64,
    /// Connections closed at once because `max_connections` was reached.
    pub connections_refused: AtomicU64,
    /// PUBLISH packets received from clients.
    pub publish_received: AtomicU64,
    /// Deliveries placed in session queues.
    pub deliveries_enqueued: AtomicU64,
    /// PUBLISH packets written to clients.
    pub publish_sent: AtomicU64,
    /// Messages dropped at a full session queue by the `drop_new` or `drop_oldest` policy.
    pub dropped_queue_full: AtomicU64,
    /// QoS 0 deliveries dropped because the session's queue was at a limit.
    pub dropped_qos0_queue_full: AtomicU64,
    /// QoS 1/2 PUBLISH refused with reason 0x97 (quota exceeded) at a full queue (MQTT 5.0).
    pub rejected_quota_exceeded: AtomicU64,
    /// Times a connection's reads were paused because a queue its PUBLISH goes to was full.
    pub backpressure_pauses: AtomicU64,
    /// Deliveries placed in the store only (beyond a session's memory bound, or while away).
    pub deliveries_stored: AtomicU64,
    /// Reads of stored deliveries back into memory.
    pub store_reads: AtomicU64,
    /// QoS 0 messages not kept for a session without a connection.
    pub dropped_qos0_offline: AtomicU64,
    /// Messages dropped because they exceeded the client's Maximum Packet Size.
    pub dropped_too_large: AtomicU64,
    /// Messages whose Message Expiry Interval passed while queued.
    pub expired: AtomicU64,
    /// Connections closed for a malformed packet or a protocol error.
    pub protocol_errors: AtomicU64,
    /// Will messages published.
    pub wills_published: AtomicU64,
    /// TLS or WebSocket handshakes that failed or timed out.
    pub handshake_failures: AtomicU64,
    /// MQTT packets received from clients, of every type.
    pub packets_received: AtomicU64,
    /// MQTT packets written to clients other than PUBLISH (those are `publish_sent`).
    pub control_packets_sent: AtomicU64,
    /// Bytes read from client connections (after TLS and WebSocket framing).
    pub bytes_received: AtomicU64,
    /// Bytes written to client connections (before TLS and WebSocket framing).
    pub bytes_sent: AtomicU64,
    /// Clients connected right now (CONNACK sent, not yet gone).
    pub clients_connected: AtomicU64,
    /// The most clients connected at once since the broker started.
    pub clients_maximum: AtomicU64,
    /// Sessions that ended because their expiry interval passed.
    pub sessions_expired: AtomicU64,
    /// Bytes held in the read buffers of connections still waiting for their CONNECT.
    pub pending_connect_bytes: AtomicU64,
    /// Connections per remote address, for `max_connections_per_address`.
    pub per_address: Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    /// PUBLISH and SUBSCRIBE filters refused by the ACL (each logged at debug).
    pub acl_denied: AtomicU64,
    /// Paces the log line about connections refused at `max_connections`.
    pub refusal_log: LogPace,
    /// Paces the lines about failed handshakes, missing CONNECTs and refused logins, which
    /// anyone can cause without credentials.
    pub connect_log: LogPace,
    /// Counters per listener.
    pub per_listener: PerListener,
    drop_log: Mutex<DropLog>,
    /// Paces the log lines about full queues.
    clock: Clock,
}

/// A point-in-time copy of the broker's counters, from [`crate::BrokerHandle::metrics`]. Every
/// counter counts up from 0 since the broker started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MetricsSnapshot {
    /// TCP connections accepted.
    pub connections_accepted: u64,
    /// Connections open right now (handshaking, awaiting CONNECT, or connected).
    pub connections_open: u64,
    /// Connected clients parked while idle: quiet plain-TCP connections kept without a task
    /// until a packet, a delivery, a kick or their keep-alive deadline resumes them.
    pub connections_parked: u64,
    /// Connections closed at once because `max_connections` was reached.
    pub connections_refused: u64,
    /// PUBLISH packets received from clients.
    pub publish_received: u64,
    /// Deliveries placed in session queues.
    pub deliveries_enqueued: u64,
    /// PUBLISH packets written to clients.
    pub publish_sent: u64,
    /// Messages dropped at a full session queue by the `drop_new` or `drop_oldest` policy.
    pub dropped_queue_full: u64,
    /// QoS 0 deliveries dropped because the session's queue was at a limit.
    pub dropped_qos0_queue_full: u64,
    /// QoS 1/2 PUBLISH refused with reason 0x97 (quota exceeded) at a full queue (MQTT 5.0).
    pub rejected_quota_exceeded: u64,
    /// Times a connection's reads were paused because a queue its PUBLISH goes to was full.
    pub backpressure_pauses: u64,
    /// Deliveries placed in the store only (beyond a session's memory bound, or while away).
    pub deliveries_stored: u64,
    /// Reads of stored deliveries back into memory.
    pub store_reads: u64,
    /// QoS 0 messages not kept for a session without a connection.
    pub dropped_qos0_offline: u64,
    /// Messages dropped because they exceeded the client's Maximum Packet Size.
    pub dropped_too_large: u64,
    /// Messages whose Message Expiry Interval passed while queued.
    pub expired: u64,
    /// Connections closed for a malformed packet or a protocol error.
    pub protocol_errors: u64,
    /// Will messages published.
    pub wills_published: u64,
    /// TLS or WebSocket handshakes that failed or timed out.
    pub handshake_failures: u64,
    /// MQTT packets received from clients, of every type.
    pub packets_received: u64,
    /// MQTT packets written to clients other than PUBLISH.
    pub control_packets_sent: u64,
    /// Bytes read from client connections.
    pub bytes_received: u64,
    /// Bytes written to client connections.
    pub bytes_sent: u64,
    /// Clients connected right now.
    pub clients_connected: u64,
    /// The most clients connected at once.
    pub clients_maximum: u64,
    /// Sessions that ended because their expiry interval passed.
    pub sessions_expired: u64,
    /// PUBLISH and SUBSCRIBE filters refused by the ACL.
    pub acl_denied: u64,
}

impl Metrics {
    /// Zeroed counters whose log lines are paced by `clock`.
    pub(crate) fn with_clock(clock: Clock) -> Metrics {
        Metrics {
            clock,
            ..Metrics::default()
        }
    }

    /// Adds one to a counter.
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// Logs drops (`dropped`), refusals (`refused`) and pauses (`paused`) at a full queue,
    /// at most once per 10 s, with the broker-wide counts since the previous line and the
    /// client id of the session that was full most recently.
    pub(crate) fn log_queue_full(&self, client_id: &str, dropped: u64, refused: u64, paused: u64) {
        let mut log = self.drop_log.lock();
        log.dropped += dropped;
        log.refused += refused;
        log.paused += paused;
        let now = self.clock.now();
        if log
            .last
            .is_some_and(|t| now.duration_since(t) < DROP_LOG_INTERVAL)
        {
            return;
        }
        log.last = Some(now);
        let (d, r, p) = (log.dropped, log.refused, log.paused);
        log.dropped = 0;
        log.refused = 0;
        log.paused = 0;
        drop(log);
        warn!(
            latest_client_id = client_id,
            dropped = d,
            refused_0x97 = r,
            paused = p,
            "session queues full: counts over all sessions since the last such line (totals in the metrics)"
        );
    }

    /// Reads every counter.
    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            connections_accepted: self.connections_accepted.load(Relaxed),
            connections_open: self.connections_open.load(Relaxed),
            connections_parked: self.connections_parked.load(Relaxed),
            connections_refused: self.connections_refused.load(Relaxed),
            publish_received: self.publish_received.load(Relaxed),
            deliveries_enqueued: self.deliveries_enqueued.load(Relaxed),
            publish_sent: self.publish_sent.load(Relaxed),
            dropped_queue_full: self.dropped_queue_full.load(Relaxed),
            dropped_qos0_queue_full: self.dropped_qos0_queue_full.load(Relaxed),
            rejected_quota_exceeded: self.rejected_quota_exceeded.load(Relaxed),
            backpressure_pauses: self.backpressure_pauses.load(Relaxed),
            deliveries_stored: self.deliveries_stored.load(Relaxed),
            store_reads: self.store_reads.load(Relaxed),
            dropped_qos0_offline: self.dropped_qos0_offline.load(Relaxed),
            dropped_too_large: self.dropped_too_large.load(Relaxed),
            expired: self.expired.load(Relaxed),
            protocol_errors: self.protocol_errors.load(Relaxed),
            wills_published: self.wills_published.load(Relaxed),
            handshake_failures: self.handshake_failures.load(Relaxed),
            packets_received: self.packets_received.load(Relaxed),
            control_packets_sent: self.control_packets_sent.load(Relaxed),
            bytes_received: self.bytes_received.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
            clients_connected: self.clients_connected.load(Relaxed),
            clients_maximum: self.clients_maximum.load(Relaxed),
            sessions_expired: self.sessions_expired.load(Relaxed),
            acl_denied: self.acl_denied.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ListenerKind;

    /// The `listener` label reads as the log lines name the listener, for every kind of
    /// listener, IPv6 addresses and bridges.
    #[test]
    fn listener_labels_read_as_the_listener_is_named() {
        let per_listener = PerListener::default();
        let listener = |kind, addr: &str| Via::Listener {
            kind,
            addr: crate::net::conn::listener_addr(addr.parse().expect("address")),
        };
        let vias = [
            listener(ListenerKind::Tcp, "127.0.0.1:1883"),
            listener(ListenerKind::Tcp, "[::1]:1883"),
            listener(ListenerKind::Tls, "0.0.0.0:8883"),
            listener(ListenerKind::Ws, "127.0.0.1:8080"),
            listener(ListenerKind::Wss, "[::]:8081"),
            Via::Bridge,
        ];
        for via in vias {
            per_listener.count(via, ListenerEvent::Accepted);
            per_listener.count(via, ListenerEvent::Accepted);
            per_listener.count(via, ListenerEvent::Connected);
        }
        per_listener.count(Via::Bridge, ListenerEvent::Disconnected);
        let mut registry = prometheus_client::registry::Registry::with_prefix("roost");
        per_listener.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encoded");
        for name in [
            "tcp 127.0.0.1:1883",
            "tcp [::1]:1883",
            "tls 0.0.0.0:8883",
            "ws 127.0.0.1:8080",
            "wss [::]:8081",
            "bridge",
        ] {
            let accepted =
                format!("roost_listener_connections_accepted_total{{listener=\"{name}\"}} 2\n");
            assert!(
                text.contains(&accepted),
                "{accepted:?} missing from:\n{text}"
            );
        }
        assert!(text.contains("roost_listener_clients_connected{listener=\"wss [::]:8081\"} 1\n"));
        assert!(text.contains("roost_listener_clients_connected{listener=\"bridge\"} 0\n"));
    }
}
