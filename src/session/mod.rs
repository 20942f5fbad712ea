//! Per-client MQTT session state, free of I/O: subscriptions, the outbound queue and inflight
//! window, and inbound QoS 2 ids. The network layer drives it; tests drive it directly.

mod inbound;
mod message;
mod outbound;
pub(crate) mod quota;

use std::collections::BTreeMap;

pub(crate) use inbound::{Inbound, Qos2Publish};
pub(crate) use message::{
    CommitGate, Delivery, GateState, Message, MessageId, Seq, kept_payload, kept_properties,
};
pub(crate) use outbound::{
    AckOutcome, Inflight, InflightState, LoadRequest, Outbound, PacketId, Refused, Transmit,
};
pub(crate) use quota::{Placement, QueueLimits, delivery_cost, message_cost};

use crate::codec::{QoS, RetainHandling, Version};

/// Session expiry value meaning "never expires" (MQTT 5.0, and 3.1.1 clean_session=0).
pub(crate) const NEVER_EXPIRES: u32 = u32::MAX;

/// The options a subscription was made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SubOptions {
    /// Granted (maximum) QoS.
    pub qos: QoS,
    /// Do not deliver messages published by this same client (MQTT 5.0).
    pub no_local: bool,
    /// Keep the RETAIN flag of forwarded messages (MQTT 5.0).
    pub retain_as_published: bool,
    /// When to send retained messages (MQTT 5.0).
    pub retain_handling: RetainHandling,
    /// Subscription identifier (MQTT 5.0).
    pub subscription_id: Option<u32>,
}

impl SubOptions {
    /// Options of a plain 3.1.1-style subscription at `qos`.
    #[cfg(test)]
    pub(crate) fn with_qos(qos: QoS) -> SubOptions {
        SubOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::OnSubscribe,
            subscription_id: None,
        }
    }
}

/// Everything the broker remembers about one client between and during connections.
#[derive(Debug)]
pub(crate) struct Session {
    /// Protocol version of the most recent connection.
    pub version: Version,
    /// Session expiry interval in seconds: 0 ends the session with the connection,
    /// [`NEVER_EXPIRES`] keeps it forever.
    pub expiry_interval: u32,
    /// Subscriptions by topic filter.
    pub subscriptions: BTreeMap<String, SubOptions>,
    /// Server-to-client flow.
    pub outbound: Outbound,
    /// Client-to-server QoS 2 flow.
    pub inbound: Inbound,
    /// Messages dropped by the `drop_new`/`drop_oldest` policies, over the session's life.
    pub dropped: u64,
    /// Next position in the persisted queue.
    pub next_seq: Seq,
    /// The authenticated user who created the session, if any (`session_owner_check`).
    pub owner: Option<std::sync::Arc<str>>,
    /// In cluster mode, the highest sequence of the cluster's stream queued for the Session.
    pub stream_seen: u64,
}

impl Session {
    /// A new, empty session.
    pub(crate) fn new(
        version: Version,
        expiry_interval: u32,
        limits: QueueLimits,
        window: u16,
    ) -> Session {
        Session {
            version,
            expiry_interval,
            subscriptions: BTreeMap::new(),
            outbound: Outbound::new(limits, window),
            inbound: Inbound::default(),
            dropped: 0,
            next_seq: Seq::MIN,
            owner: None,
            stream_seen: 0,
        }
    }

    /// Allocates a position in the persisted queue.
    pub(crate) fn take_seq(&mut self) -> Seq {
        let seq = self.next_seq;
        self.next_seq = seq.saturating_add(1);
        seq
    }

    /// True if the session outlives its connection.
    pub(crate) fn is_durable(&self) -> bool {
        self.expiry_interval > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durability_follows_expiry() {
        let l = QueueLimits::UNLIMITED;
        assert!(!Session::new(Version::V311, 0, l, 10).is_durable());
        assert!(Session::new(Version::V311, NEVER_EXPIRES, l, 10).is_durable());
        assert!(Session::new(Version::V5, 30, l, 10).is_durable());
    }
}
