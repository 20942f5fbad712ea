//! No input makes the decoder panic: every prefix of every valid packet, mutated packets and
//! random bytes, through every decoder state. Deterministic (xorshift), no rand crate.

use super::roundtrip::{client_packets, encoded, server_packets};
use super::*;

/// xorshift64*: tiny deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Every decoder state a connection can be in.
fn decoders() -> Vec<Decoder> {
    vec![
        Decoder::server(MAX),
        server(Version::V311),
        server(Version::V5),
        Decoder::client(Version::V311, MAX),
        Decoder::client(Version::V5, MAX),
        Decoder::client(Version::V5, 16),
    ]
}

/// Decodes until more bytes are needed or an error: must not panic, must make progress.
fn drain(mut d: Decoder, bytes: &[u8]) {
    let mut buf = BytesMut::from(bytes);
    while let Ok(Some(_)) = d.decode(&mut buf) {}
}

fn valid_encodings() -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    for v in VERSIONS {
        all.extend(client_packets(v).iter().map(|p| encoded(p, v)));
        all.extend(server_packets(v).iter().map(|p| encoded(p, v)));
    }
    all
}

#[test]
fn every_prefix_of_every_packet_needs_more_or_fails_cleanly() {
    for bytes in valid_encodings() {
        for n in 0..bytes.len() {
            for mut d in decoders() {
                let mut buf = BytesMut::from(&bytes[..n]);
                match d.decode(&mut buf) {
                    Ok(None) => assert_eq!(buf.len(), n, "consumed on need-more"),
                    Ok(Some(p)) => panic!("decoded {p:?} from a strict prefix"),
                    Err(DecodeError::TooLarge { .. }) => {}
                    // The header alone can already show a wrong packet type for the state.
                    Err(_) => {}
                }
            }
        }
    }
}

#[test]
fn mutated_packets_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let valid = valid_encodings();
    for _ in 0..20_000 {
        let mut bytes = valid[rng.below(valid.len())].clone();
        for _ in 0..=rng.below(4) {
            let i = rng.below(bytes.len());
            match rng.below(3) {
                0 => bytes[i] = rng.next() as u8,
                1 => bytes[i] ^= 1 << rng.below(8),
                _ => bytes.truncate(i.max(1)),
            }
        }
        for d in decoders() {
            drain(d, &bytes);
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0xDEAD_BEEF_CAFE_F00D);
    for _ in 0..20_000 {
        let len = rng.below(96);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Keep the remaining length plausible half of the time, so bodies get parsed.
        if len >= 2 && rng.below(2) == 0 {
            bytes[1] = (len - 2).min(127) as u8;
        }
        for d in decoders() {
            drain(d, &bytes);
        }
    }
}
