//! How much of a session's backlog may exist, and where it lives.
//!
//! A session's backlog is every message it owes its client: queued in memory, in flight, or
//! (for a durable session with a store) held only in the store. Three bounds apply:
//! - the whole backlog, in messages and in bytes ([`QueueLimits::max_messages`],
//!   [`QueueLimits::max_bytes`]);
//! - the part kept in memory ([`QueueLimits::memory_bytes`]). A durable session's messages
//!   beyond it wait in the store and are read back as the client drains; an ephemeral
//!   session has nowhere else to put them, so for it this is the bound of the whole queue.
//!
//! A message that fits nowhere is refused before anything is queued, so the publisher can be
//! told (MQTT 5.0: 0x97) or slowed (MQTT 3.1.1) instead of being acknowledged and dropped.

use super::message::{Delivery, Message};

/// Bytes counted for a delivery on top of its topic and payload: the queue entry, the shared
/// message header and the bookkeeping around them.
pub(crate) const DELIVERY_OVERHEAD: u64 = 128;

/// The bytes each delivery of a message is counted as.
pub(crate) fn message_cost(message: &Message) -> u64 {
    message.payload.len() as u64 + message.topic.len() as u64 + DELIVERY_OVERHEAD
}

/// The bytes a delivery is counted as.
pub(crate) fn delivery_cost(delivery: &Delivery) -> u64 {
    message_cost(&delivery.message)
}

/// Per-session bounds of the backlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Most messages in the backlog (memory, in flight and store together).
    pub max_messages: usize,
    /// Most bytes in the backlog (memory, in flight and store together).
    pub max_bytes: u64,
    /// Most bytes of the backlog kept in memory.
    pub memory_bytes: u64,
}

impl QueueLimits {
    /// Bounds so large they never apply (tests of other behaviour).
    pub const UNLIMITED: QueueLimits = QueueLimits {
        max_messages: usize::MAX,
        max_bytes: u64::MAX,
        memory_bytes: u64::MAX,
    };
}

/// Where an admitted delivery goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Into the in-memory queue.
    Memory,
    /// Into the store only; read back when the client drains.
    Store,
}

/// A snapshot of one session's backlog, for metrics and introspection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BacklogStats {
    /// Messages in the backlog (queued in memory, in flight, in the store only, reserved).
    pub messages: usize,
    /// Bytes of the backlog.
    pub bytes: u64,
    /// Bytes held in memory (queued and in flight).
    pub memory_bytes: u64,
    /// Messages held only in the store.
    pub stored_messages: usize,
    /// Messages in flight (sent, awaiting acknowledgement).
    pub inflight: usize,
    /// Retained messages still to be sent for recent subscriptions.
    pub retained_pending: usize,
    /// Highest `bytes` ever reached.
    pub peak_bytes: u64,
    /// Highest `memory_bytes` ever reached.
    pub peak_memory_bytes: u64,
}
