//! Application messages as the broker keeps them, and one delivery of a message to a session.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

use bytes::Bytes;

use crate::codec::{PublishProperties, QoS};

/// The store's identifier of a message (never 0).
pub(crate) type MessageId = std::num::NonZeroU64;

/// A position in a session's stored queue (never 0).
pub(crate) type Seq = std::num::NonZeroU64;

/// A published application message, shared by every session it is delivered to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    /// Store identifier; `None` when the message is never persisted (QoS 0, or a broker
    /// running in memory).
    pub id: Option<MessageId>,
    /// Topic name.
    pub topic: Arc<str>,
    /// Payload: its own bytes, or a large slice of the read buffer it arrived in (see
    /// [`kept_payload`]), shared by every session it is delivered to.
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: QoS,
    /// RETAIN flag it was published with.
    pub retain: bool,
    /// MQTT 5.0 message properties, forwarded unaltered.
    pub properties: PublishProperties,
    /// When the message expires (from the Message Expiry Interval), if it does.
    pub expires_at: Option<Instant>,
    /// In cluster mode, the message's sequence in the cluster's stream of QoS 1/2 messages,
    /// once it came from there: a durable Session's position in that stream (see
    /// [`Delivery::stream_position`]), and where a message in flight is read back from when
    /// the Session moves to another node.
    pub stream_seq: Option<u64>,
}

/// A payload smaller than this is always copied out of the read buffer it was decoded from.
/// Measured (BENCHMARKS.md): from 16 KiB up a copy costs nothing visible in throughput; below
/// that it costs an allocation per message, the price of byte limits that hold.
pub(crate) const SHARE_PAYLOAD_FROM: usize = 64 * 1024;

/// A payload fit to be kept beyond the read it arrived in (queued, in flight, retained, held
/// behind a paused PUBLISH): copied out of its read buffer of `buffer` bytes, so that it does
/// not keep the whole buffer alive, unless it is large and at least half of that buffer (then
/// sharing it costs at most as much again as the payload, and saves copying it). Memory
/// bounds in bytes then mean what they say.
pub(crate) fn kept_payload(payload: Bytes, buffer: usize) -> Bytes {
    if payload.len() >= SHARE_PAYLOAD_FROM && payload.len().saturating_mul(2) >= buffer {
        payload
    } else if payload.is_empty() {
        Bytes::new()
    } else {
        Bytes::copy_from_slice(&payload)
    }
}

/// Message properties fit to be kept: the correlation data (the one binary property, a slice of
/// the read buffer when decoded) is copied out.
pub(crate) fn kept_properties(properties: &mut PublishProperties) {
    if let Some(data) = properties.correlation_data.take() {
        properties.correlation_data = Some(Bytes::copy_from_slice(&data));
    }
}

impl Message {
    /// True if the message has a Message Expiry Interval that has passed at `now`.
    pub(crate) fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The remaining expiry interval in whole seconds, as forwarded to a subscriber
    /// (MQTT-3.3.2-6), or `None` if the message does not expire.
    pub(crate) fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|at| {
            let left = at.saturating_duration_since(now).as_secs();
            u32::try_from(left).unwrap_or(u32::MAX).max(1)
        })
    }
}

/// One message on its way to one session, with the per-subscriber delivery parameters.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    /// The shared message.
    pub message: Arc<Message>,
    /// Delivery QoS: the lower of the published QoS and the granted QoS.
    pub qos: QoS,
    /// RETAIN flag to send.
    pub retain: bool,
    /// Subscription identifiers of the matching subscriptions (MQTT 5.0).
    pub subscription_ids: Vec<u32>,
    /// Position in the session's persisted queue, `None` when not persisted.
    pub seq: Option<Seq>,
    /// Held back until the store has committed the publish that produced it.
    pub gate: Option<Arc<CommitGate>>,
    /// The Shared Subscription (`$share/{ShareName}/{filter}`) it was delivered through, if
    /// any: when the session ends unacknowledged, it goes to another member of that group.
    pub group: Option<Arc<str>>,
}

impl PartialEq for Delivery {
    fn eq(&self, other: &Self) -> bool {
        let same_gate = match (&self.gate, &other.gate) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        self.message == other.message
            && self.qos == other.qos
            && self.retain == other.retain
            && self.subscription_ids == other.subscription_ids
            && self.seq == other.seq
            && self.group == other.group
            && same_gate
    }
}

impl Eq for Delivery {}

impl Delivery {
    /// A delivery that is neither persisted nor gated.
    pub(crate) fn new(
        message: Arc<Message>,
        qos: QoS,
        retain: bool,
        subscription_ids: Vec<u32>,
    ) -> Self {
        Delivery {
            message,
            qos,
            retain,
            subscription_ids,
            seq: None,
            gate: None,
            group: None,
        }
    }

    /// The stream sequence that counts in a durable Session's position in the cluster's
    /// stream: that of a message the node's reading of the stream brought, not of one that
    /// came through a Shared Subscription group's own consumer (which is read apart, ahead
    /// of or behind the node's reading).
    pub(crate) fn stream_position(&self) -> Option<u64> {
        self.message.stream_seq.filter(|_| self.group.is_none())
    }
}

/// Whether the store has committed the state a delivery depends on. A delivery must not reach
/// a subscriber before the publisher's state is durable, or a crash could make the publisher's
/// retry a second delivery.
#[derive(Debug, Default)]
pub(crate) struct CommitGate {
    state: AtomicU8,
    resolved: tokio::sync::Notify,
}

/// What a [`CommitGate`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GateState {
    /// The commit has not returned yet.
    Pending,
    /// Committed: the delivery may go out.
    Open,
    /// The commit failed: the delivery must be dropped (the publisher was not acknowledged).
    Failed,
}

impl CommitGate {
    /// The current state.
    pub(crate) fn state(&self) -> GateState {
        match self.state.load(Ordering::Acquire) {
            0 => GateState::Pending,
            1 => GateState::Open,
            _ => GateState::Failed,
        }
    }

    /// Marks the commit done (`ok`) or failed.
    pub(crate) fn resolve(&self, ok: bool) {
        self.state.store(if ok { 1 } else { 2 }, Ordering::Release);
        self.resolved.notify_waiters();
    }

    /// Waits until the commit has returned (either way).
    pub(crate) async fn settled(&self) {
        let notified = self.resolved.notified();
        tokio::pin!(notified);
        // Registered before the check, so a resolve in between is not missed.
        notified.as_mut().enable();
        if self.state() != GateState::Pending {
            return;
        }
        notified.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_payloads_leave_the_read_buffer_behind() {
        let buffer = Bytes::from(vec![1u8; 4 * SHARE_PAYLOAD_FROM]);
        let small = buffer.slice(10..26);
        let kept = kept_payload(small.clone(), buffer.len());
        assert_eq!(kept, small);
        assert_ne!(kept.as_ptr(), small.as_ptr(), "copied out of the buffer");
        // Large, but a small part of its buffer: copied too.
        let quarter = buffer.slice(..SHARE_PAYLOAD_FROM);
        let kept = kept_payload(quarter.clone(), buffer.len());
        assert_eq!(kept, quarter);
        assert_ne!(kept.as_ptr(), quarter.as_ptr());
        // Large and most of its buffer: shared.
        let most = buffer.slice(..2 * SHARE_PAYLOAD_FROM);
        assert_eq!(
            kept_payload(most.clone(), buffer.len()).as_ptr(),
            most.as_ptr(),
            "kept as is"
        );
    }

    #[test]
    fn kept_properties_copy_the_correlation_data() {
        let buffer = Bytes::from(vec![7u8; 1024]);
        let mut properties = PublishProperties {
            correlation_data: Some(buffer.slice(1..5)),
            ..Default::default()
        };
        kept_properties(&mut properties);
        let data = properties.correlation_data.expect("still there");
        assert_eq!(&data[..], &buffer[1..5]);
        assert_ne!(data.as_ptr(), buffer[1..].as_ptr());
    }
}
