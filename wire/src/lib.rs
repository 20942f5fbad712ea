//! roost-wire: the MQTT 3.1.1 and 5.0 wire primitives shared by the Roost broker, its load
//! generator and `roost-client`.
//!
//! Everything here works on borrowed bytes: nothing allocates, nothing uses `std`, and
//! malformed input is an error, never a panic.
//!
//! * [`varint`]: variable byte integers (MQTT 5.0 section 1.5.5, MQTT 3.1.1 section 2.2.3).
//! * [`Reader`]: a cursor over a packet body that reads integers, UTF-8 strings and binary
//!   data as borrowed slices (MQTT 5.0 section 1.5).
//! * [`Sink`], [`Writer`] and [`encode_packet`]: two-pass encoding, measuring first and then
//!   writing, so the remaining length is known before the body is written.
//! * [`packet_type`], [`flags`], [`FixedHeader`] and [`check_flags`]: packet types, flag bits,
//!   the fixed header and its reserved-flag rules (MQTT 5.0 section 2.1).
//! * [`property`]: property identifiers and a reader for property blocks (MQTT 5.0
//!   section 2.2.2).
//! * [`ReasonCode`]: reason codes and which packet may carry which (MQTT 5.0 section 2.4).
//! * [`QoS`]: quality of service levels.
//!
//! Statement ids such as MQTT-1.5.4-2 refer to the normative statements of the MQTT 5.0
//! specification unless the 3.1.1 specification is named.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod header;
pub mod property;
mod qos;
mod read;
mod reason;
pub mod varint;
mod write;

pub use error::{DecodeError, EncodeError};
pub use header::{
    FixedHeader, check_flags, connect, first_byte, flags, packet_type, publish_first_byte,
    sent_by_client, sent_by_server,
};
pub use qos::QoS;
pub use read::{Reader, utf8_string};
pub use reason::ReasonCode;
pub use write::{Sink, Writer, encode_packet, packet_len};

// Lengths are handled as `usize`; every value a variable byte integer holds must fit.
const _: () = assert!(usize::BITS >= 32);
