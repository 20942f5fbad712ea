//! The MQTT wire format: a strict decoder and an encoder around one packet model.
//!
//! The wire primitives (variable byte integers, the fixed header and its flag rules, strings,
//! binary data, property identifiers, reason codes, the two-pass writer) come from
//! `roost-wire`; this module holds the owned packet model on top of them.
//!
//! Decoding frames packets with `roost_wire::FixedHeader` and reads the bodies mqttbytes 0.6.0
//! gets right (3.1.1 PUBLISH, SUBSCRIBE in both versions, 3.1.1 UNSUBSCRIBE) with its `read`
//! functions, always wrapped with our own checks; everything it gets wrong (CONNECT, 5.0
//! properties, 5.0 PUBLISH, DISCONNECT, AUTH, acks, 5.0 UNSUBSCRIBE) is read by hand.
//! Encoding is all our own.
//!
//! One module per packet type holds both its decoder and its encoder.

mod ack;
mod auth;
mod connack;
mod connect;
mod decode;
mod disconnect;
mod encode;
mod error;
mod frame;
mod packet;
mod properties;
mod publish;
mod reader;
mod subscribe;
mod unsubscribe;
mod writer;

#[cfg(test)]
mod tests;

pub use decode::{Decoder, Role};
pub use encode::encode;
pub use error::{DecodeError, EncodeError};
pub use packet::*;
pub use publish::{PublishView, encode_publish, publish_len};
pub use roost_wire::ReasonCode;
