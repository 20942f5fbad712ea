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
//!   the fixed header and its reserved-flag rules (MQTT 5.0 section 2.1), and remaining-length
//!   framing of a byte stream.
//! * [`connect`]: the protocol name and levels of CONNECT.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift) for the no-panic sweeps.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// Reads everything a receiver would from `bytes`; must never panic.
    fn read_all(bytes: &[u8]) {
        if let Ok(Some(h)) = FixedHeader::parse(bytes) {
            assert!((2..=5).contains(&h.header_len));
            assert!(h.remaining_len <= varint::MAX as usize);
            let _ = check_flags(h.byte1);
            if let Some(body) = h.body(bytes) {
                assert_eq!(body.len(), h.remaining_len);
            }
        }
        let mut r = Reader::new(bytes);
        while !r.is_empty() {
            let before = r.remaining();
            let step = match before % 7 {
                0 => r.string().map(|_| ()),
                1 => r.binary().map(|_| ()),
                2 => r.varint().map(|_| ()),
                3 => r.packet_id().map(|_| ()),
                4 => r.u32().map(|_| ()),
                5 => r.properties().map(|block| {
                    for p in property::Properties::new(block) {
                        let _ = p.map(|p| p.id());
                    }
                }),
                _ => r.u8().map(|_| ()),
            };
            if step.is_err() && r.remaining() == before {
                r.take(1).expect("one byte is left");
            }
            assert!(r.remaining() < before);
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let mut buf = [0u8; 64];
        for _ in 0..20_000 {
            let len = (rng.next() % 65) as usize;
            for b in buf.iter_mut().take(len) {
                // Bias towards small values, continuation bits and zeros.
                *b = match rng.next() % 4 {
                    0 => 0,
                    1 => 0x80 | (rng.next() as u8 & 0x7F),
                    2 => rng.next() as u8 & 0x0F,
                    _ => rng.next() as u8,
                };
            }
            read_all(&buf[..len]);
        }
    }

    /// What [`encode_packet`] writes, [`FixedHeader`] and [`Reader`] read back.
    #[test]
    fn encode_then_read_back() {
        let mut buf = [0u8; 300];
        for payload_len in [0usize, 1, 100, 123, 124, 250] {
            let payload = [0xA5u8; 250];
            let payload = &payload[..payload_len];
            let byte1 = publish_first_byte(true, QoS::AtLeastOnce, false);
            let n = encode_packet(&mut buf, byte1, |w| {
                w.string("a/b")?;
                w.u16(7)?;
                w.varint(3)?;
                w.u8(property::TOPIC_ALIAS)?;
                w.u16(1)?;
                w.put(payload)
            })
            .unwrap();
            let h = FixedHeader::parse(&buf[..n]).unwrap().unwrap();
            assert_eq!(h.packet_len(), n);
            assert_eq!(check_flags(h.byte1), Ok(()));
            assert_eq!(QoS::from_publish_byte(h.byte1), Some(QoS::AtLeastOnce));
            let mut r = Reader::new(h.body(&buf[..n]).unwrap());
            assert_eq!(r.string(), Ok("a/b"));
            assert_eq!(r.packet_id(), Ok(7));
            let mut props = property::Properties::new(r.properties().unwrap());
            assert_eq!(
                props.next_prop(),
                Ok(Some(property::Property::U16(property::TOPIC_ALIAS, 1)))
            );
            assert_eq!(props.next_prop(), Ok(None));
            assert_eq!(r.rest(), payload);
        }
    }
}
