//! The redb tables and the schema version.

use redb::TableDefinition;

/// Version of the table layout; a file with another version is refused at startup, except
/// the versions listed in [`UPGRADABLE_FROM`].
///
/// 2: a queue entry may carry its message inline (a message queued for one session only).
/// 3: a queue entry may name the Shared Subscription it came through.
pub(super) const SCHEMA_VERSION: u32 = 3;

/// Older versions this one reads as they are; opening one records [`SCHEMA_VERSION`], so the
/// older broker refuses the file with a clear message instead of misreading it.
pub(super) const UPGRADABLE_FROM: &[u32] = &[1, 2];

/// `"schema"` -> [`SCHEMA_VERSION`].
pub(super) const META: TableDefinition<&str, u32> = TableDefinition::new("meta");
/// Client id -> session record.
pub(super) const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// (client id, topic filter) -> subscription options.
pub(super) const SUBSCRIPTIONS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("subscriptions");
/// Message id -> message, stored once however many queues hold it.
pub(super) const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
/// Message id -> number of queue entries referring to it.
pub(super) const MESSAGE_REFS: TableDefinition<u64, u32> = TableDefinition::new("message_refs");
/// (client id, sequence) -> queue entry.
pub(super) const QUEUE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("queue");
/// (client id, packet id) of inbound QoS 2 messages awaiting PUBREL.
pub(super) const INCOMING_QOS2: TableDefinition<(&str, u16), u8> =
    TableDefinition::new("incoming_qos2");
/// Topic -> retained message.
pub(super) const RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");
/// `"stream:{name}"` -> the last sequence of a cluster stream whose messages this node has
/// committed (cluster mode): a message redelivered after a crash is recognised.
pub(super) const CLUSTER: TableDefinition<&str, u64> = TableDefinition::new("cluster");
/// Written and removed when the store is reopened after a failure, to show that it can
/// write again (see `store::Writer`).
pub(super) const PROBE: TableDefinition<&str, &[u8]> = TableDefinition::new("write_probe");
