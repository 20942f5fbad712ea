//! Broker-wide counters. Every dropped message is counted here.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Live counters, updated without locks.
#[derive(Debug, Default)]
pub struct Metrics {
    /// TCP connections accepted.
    pub connections_accepted: AtomicU64,
    /// Connections open right now (handshaking, awaiting CONNECT, or connected).
    pub connections_open: AtomicU64,
    /// Connections closed at once because `max_connections` was reached.
    pub connections_refused: AtomicU64,
    /// PUBLISH packets received from clients.
    pub publish_received: AtomicU64,
    /// Deliveries placed in session queues.
    pub deliveries_enqueued: AtomicU64,
    /// PUBLISH packets written to clients.
    pub publish_sent: AtomicU64,
    /// Messages dropped because a session queue was full.
    pub dropped_queue_full: AtomicU64,
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
}

/// A point-in-time copy of [`Metrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// See [`Metrics::connections_accepted`].
    pub connections_accepted: u64,
    /// See [`Metrics::connections_open`].
    pub connections_open: u64,
    /// See [`Metrics::connections_refused`].
    pub connections_refused: u64,
    /// See [`Metrics::publish_received`].
    pub publish_received: u64,
    /// See [`Metrics::deliveries_enqueued`].
    pub deliveries_enqueued: u64,
    /// See [`Metrics::publish_sent`].
    pub publish_sent: u64,
    /// See [`Metrics::dropped_queue_full`].
    pub dropped_queue_full: u64,
    /// See [`Metrics::dropped_qos0_offline`].
    pub dropped_qos0_offline: u64,
    /// See [`Metrics::dropped_too_large`].
    pub dropped_too_large: u64,
    /// See [`Metrics::expired`].
    pub expired: u64,
    /// See [`Metrics::protocol_errors`].
    pub protocol_errors: u64,
    /// See [`Metrics::wills_published`].
    pub wills_published: u64,
}

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            connections_accepted: self.connections_accepted.load(Relaxed),
            connections_open: self.connections_open.load(Relaxed),
            connections_refused: self.connections_refused.load(Relaxed),
            publish_received: self.publish_received.load(Relaxed),
            deliveries_enqueued: self.deliveries_enqueued.load(Relaxed),
            publish_sent: self.publish_sent.load(Relaxed),
            dropped_queue_full: self.dropped_queue_full.load(Relaxed),
            dropped_qos0_offline: self.dropped_qos0_offline.load(Relaxed),
            dropped_too_large: self.dropped_too_large.load(Relaxed),
            expired: self.expired.load(Relaxed),
            protocol_errors: self.protocol_errors.load(Relaxed),
            wills_published: self.wills_published.load(Relaxed),
        }
    }
}
