//! The MQTT wire format: a strict decoder and an encoder around one packet model.

mod packet;

pub use packet::*;
