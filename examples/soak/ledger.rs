//! What the publishers sent: the payload stamp, and per publisher and sequence number when
//! the message was sent, whether and when it was acknowledged.
//!
//! The checker compares every subscriber's deliveries against this record.

use bytes::Bytes;
use parking_lot::Mutex;

/// Start of every soak payload.
const MAGIC: &[u8; 4] = b"SOAK";
/// Bytes of the stamp: magic, publisher id (u32), sequence number (u64).
pub const STAMP_LEN: usize = 16;

/// Builds a payload of `len` bytes (at least [`STAMP_LEN`]) for `(publisher, seq)`; the bytes
/// after the stamp are a function of the stamp, so corruption is detected.
pub fn payload(publisher: u32, seq: u64, len: usize) -> Bytes {
    let len = len.max(STAMP_LEN);
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&publisher.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend((STAMP_LEN..len).map(|i| filler(publisher, seq, i)));
    Bytes::from(out)
}

fn filler(publisher: u32, seq: u64, i: usize) -> u8 {
    (seq as u8)
        .wrapping_mul(31)
        .wrapping_add(publisher as u8)
        .wrapping_add(i as u8)
}

/// Reads `(publisher, seq)` from a payload made by [`payload`]; `None` if it is not one or
/// its filler bytes are wrong.
pub fn read_stamp(payload: &[u8]) -> Option<(u32, u64)> {
    if payload.len() < STAMP_LEN || &payload[..4] != MAGIC {
        return None;
    }
    let publisher = u32::from_be_bytes(payload[4..8].try_into().ok()?);
    let seq = u64::from_be_bytes(payload[8..16].try_into().ok()?);
    let intact = payload[STAMP_LEN..]
        .iter()
        .enumerate()
        .all(|(k, b)| *b == filler(publisher, seq, STAMP_LEN + k));
    intact.then_some((publisher, seq))
}

/// What became of one sent message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Sent, no final answer (yet).
    Pending,
    /// PUBACK (QoS 1) or PUBCOMP (QoS 2) with a success code.
    Acked,
    /// PUBACK or PUBREC with a failure code (5.0, e.g. 0x97 quota exceeded).
    Refused,
    /// Unacknowledged when a clean-session publisher lost its connection; it may or may not
    /// have been delivered.
    Abandoned,
    /// QoS 0: never acknowledged.
    Fired,
}

/// One sent message.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// Milliseconds since the start of the run when the PUBLISH was handed to the socket.
    pub sent_ms: u32,
    /// Milliseconds since the start when it was acknowledged (valid for [`Fate::Acked`]).
    pub acked_ms: u32,
    /// Its fate.
    pub fate: Fate,
}

/// A publisher as the checker knows it.
#[derive(Debug, Clone)]
pub struct PublisherInfo {
    /// Index in the ledger and in payload stamps.
    pub id: u32,
    /// Client id.
    pub name: String,
    /// QoS of all its messages.
    pub qos: u8,
    /// The one topic it publishes on.
    pub topic: String,
}

/// Every publisher's record, indexed by publisher id and then by sequence number.
pub struct Ledger {
    /// The publishers.
    pub publishers: Vec<PublisherInfo>,
    logs: Vec<Mutex<Vec<Entry>>>,
}

impl Ledger {
    /// An empty ledger for `publishers` (their ids must be their indices).
    pub fn new(publishers: Vec<PublisherInfo>) -> Ledger {
        assert!(
            publishers
                .iter()
                .enumerate()
                .all(|(i, p)| p.id as usize == i)
        );
        let logs = publishers.iter().map(|_| Mutex::new(Vec::new())).collect();
        Ledger { publishers, logs }
    }

    /// Records that `seq` (the next sequence number of `publisher`) was sent at `ms`.
    pub fn sent(&self, publisher: u32, seq: u64, ms: u32) {
        let mut log = self.logs[publisher as usize].lock();
        assert_eq!(log.len() as u64, seq, "sequence numbers are dense");
        let fate = if self.publishers[publisher as usize].qos == 0 {
            Fate::Fired
        } else {
            Fate::Pending
        };
        log.push(Entry {
            sent_ms: ms,
            acked_ms: 0,
            fate,
        });
    }

    /// Records the final answer for a pending message.
    pub fn settle(&self, publisher: u32, seq: u64, fate: Fate, ms: u32) {
        let mut log = self.logs[publisher as usize].lock();
        let e = &mut log[seq as usize];
        debug_assert_eq!(e.fate, Fate::Pending);
        e.fate = fate;
        e.acked_ms = ms;
    }

    /// The sequence numbers of `publisher` sent strictly after `after_ms` and acknowledged
    /// at or before `until_ms`.
    pub fn acked_window(&self, publisher: u32, after_ms: u32, until_ms: u32) -> Vec<u64> {
        let log = self.logs[publisher as usize].lock();
        let start = log.partition_point(|e| e.sent_ms <= after_ms);
        log[start..]
            .iter()
            .enumerate()
            .filter(|(_, e)| e.fate == Fate::Acked && e.acked_ms <= until_ms)
            .map(|(k, _)| (start + k) as u64)
            .collect()
    }

    /// How many acknowledged messages of `publisher` satisfy `pred` (given their sequence
    /// number).
    pub fn count_acked(&self, publisher: u32, mut pred: impl FnMut(u64) -> bool) -> u64 {
        let log = self.logs[publisher as usize].lock();
        log.iter()
            .enumerate()
            .filter(|(seq, e)| e.fate == Fate::Acked && pred(*seq as u64))
            .count() as u64
    }

    /// A copy of one publisher's record.
    pub fn snapshot(&self, publisher: u32) -> Vec<Entry> {
        self.logs[publisher as usize].lock().clone()
    }

    /// Messages sent by `publisher` so far.
    pub fn sent_count(&self, publisher: u32) -> u64 {
        self.logs[publisher as usize].lock().len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_roundtrip_and_corruption() {
        let p = payload(3, 77, 40);
        assert_eq!(p.len(), 40);
        assert_eq!(read_stamp(&p), Some((3, 77)));
        let mut bad = p.to_vec();
        bad[30] ^= 1;
        assert_eq!(read_stamp(&bad), None);
        assert_eq!(read_stamp(b"SOAK"), None);
    }

    #[test]
    fn window_selects_sent_after_and_acked_before() {
        let ledger = Ledger::new(vec![PublisherInfo {
            id: 0,
            name: "p".into(),
            qos: 1,
            topic: "t".into(),
        }]);
        for (seq, ms) in [10, 20, 30, 40].into_iter().enumerate() {
            ledger.sent(0, seq as u64, ms);
        }
        ledger.settle(0, 0, Fate::Acked, 15);
        ledger.settle(0, 1, Fate::Acked, 25);
        ledger.settle(0, 2, Fate::Refused, 35);
        ledger.settle(0, 3, Fate::Acked, 90);
        assert_eq!(ledger.acked_window(0, 10, 50), vec![1]);
        assert_eq!(ledger.acked_window(0, 0, 100), vec![0, 1, 3]);
    }
}
