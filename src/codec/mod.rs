//! The MQTT wire format: a strict decoder and an encoder around one packet model.
//!
//! Decoding frames packets with mqttbytes 0.6.0 (`check`) and reads the bodies it gets right
//! (3.1.1 PUBLISH, SUBSCRIBE in both versions, 3.1.1 UNSUBSCRIBE) with its `read` functions,
//! always wrapped with our own checks; everything it gets wrong (CONNECT, 5.0 properties,
//! 5.0 PUBLISH, DISCONNECT, AUTH, acks, 5.0 UNSUBSCRIBE) is read by hand. Encoding is all
//! hand-written. See ARCHITECTURE.md, "Codec: mqttbytes 0.6.0 and what we add".
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
mod reason;
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
pub use reason::ReasonCode;
