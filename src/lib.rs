//! Roost: an MQTT 3.1.1 and 5.0 broker.

pub mod codec;
pub mod topic;
