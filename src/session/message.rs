//! Application messages as the broker keeps them, and one delivery of a message to a session.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::codec::{PublishProperties, QoS};

/// A published application message, shared by every session it is delivered to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic name.
    pub topic: Arc<str>,
    /// Payload, shared without copying.
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: QoS,
    /// RETAIN flag it was published with.
    pub retain: bool,
    /// MQTT 5.0 message properties, forwarded unaltered.
    pub properties: PublishProperties,
    /// When the message expires (from the Message Expiry Interval), if it does.
    pub expires_at: Option<Instant>,
}

impl Message {
    /// True if the message has a Message Expiry Interval that has passed at `now`.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The remaining expiry interval in whole seconds, as forwarded to a subscriber
    /// (MQTT-3.3.2-6), or `None` if the message does not expire.
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|at| {
            let left = at.saturating_duration_since(now).as_secs();
            u32::try_from(left).unwrap_or(u32::MAX).max(1)
        })
    }
}

/// One message on its way to one session, with the per-subscriber delivery parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The shared message.
    pub message: Arc<Message>,
    /// Delivery QoS: the lower of the published QoS and the granted QoS.
    pub qos: QoS,
    /// RETAIN flag to send.
    pub retain: bool,
    /// Subscription identifiers of the matching subscriptions (MQTT 5.0).
    pub subscription_ids: Vec<u32>,
}
