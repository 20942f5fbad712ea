//! What one subscriber received, per publisher: which sequence numbers, how many times, and
//! whether first deliveries came in order.

/// Deliveries from one publisher to one subscriber.
#[derive(Debug, Default, Clone)]
pub struct Stream {
    seen: Vec<u64>,
    /// Distinct sequence numbers received.
    pub distinct: u64,
    /// Repeated deliveries, by the QoS they were delivered at.
    pub dups: [u64; 3],
    /// First deliveries of a sequence number lower than one already received.
    pub out_of_order: u64,
    /// Highest sequence number received so far.
    pub max_seq: Option<u64>,
}

/// How a delivery compares with the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// First time, in order.
    First,
    /// First time, but after a higher sequence number of the same publisher.
    OutOfOrder {
        /// The highest sequence number received before it.
        after: u64,
    },
    /// Received before.
    Repeat,
}

impl Stream {
    /// Whether `seq` was received.
    pub fn has(&self, seq: u64) -> bool {
        let (w, b) = ((seq / 64) as usize, seq % 64);
        self.seen.get(w).is_some_and(|word| word & (1 << b) != 0)
    }

    /// Records a delivery of `seq` at `qos`.
    pub fn record(&mut self, seq: u64, qos: u8) -> Delivery {
        if self.has(seq) {
            self.dups[usize::from(qos.min(2))] += 1;
            return Delivery::Repeat;
        }
        let (w, b) = ((seq / 64) as usize, seq % 64);
        if self.seen.len() <= w {
            self.seen.resize(w + 1, 0);
        }
        self.seen[w] |= 1 << b;
        self.distinct += 1;
        let order = match self.max_seq {
            Some(max) if seq < max => {
                self.out_of_order += 1;
                Delivery::OutOfOrder { after: max }
            }
            _ => Delivery::First,
        };
        self.max_seq = Some(self.max_seq.map_or(seq, |m| m.max(seq)));
        order
    }
}

/// Everything one subscriber received, indexed by publisher id.
#[derive(Debug, Clone)]
pub struct Tally {
    /// One stream per publisher.
    pub streams: Vec<Stream>,
    /// Deliveries by the QoS they arrived at (repeats included).
    pub deliveries: [u64; 3],
}

impl Tally {
    /// An empty tally for `publishers` publishers.
    pub fn new(publishers: usize) -> Tally {
        Tally {
            streams: vec![Stream::default(); publishers],
            deliveries: [0; 3],
        }
    }

    /// Records a delivery.
    pub fn record(&mut self, publisher: u32, seq: u64, qos: u8) -> Delivery {
        self.deliveries[usize::from(qos.min(2))] += 1;
        self.streams[publisher as usize].record(seq, qos)
    }

    /// Distinct messages received from every publisher together.
    pub fn distinct(&self) -> u64 {
        self.streams.iter().map(|s| s.distinct).sum()
    }

    /// Repeats by delivered QoS, every publisher together.
    pub fn dups(&self) -> [u64; 3] {
        let mut d = [0; 3];
        for s in &self.streams {
            for (q, n) in s.dups.iter().enumerate() {
                d[q] += n;
            }
        }
        d
    }

    /// First deliveries out of order, every publisher together.
    pub fn out_of_order(&self) -> u64 {
        self.streams.iter().map(|s| s.out_of_order).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_and_order() {
        let mut s = Stream::default();
        assert_eq!(s.record(0, 1), Delivery::First);
        assert_eq!(s.record(2, 1), Delivery::First);
        assert_eq!(s.record(2, 1), Delivery::Repeat);
        assert_eq!(s.record(1, 2), Delivery::OutOfOrder { after: 2 });
        assert_eq!(s.record(200, 2), Delivery::First);
        assert!(s.has(200) && s.has(1) && !s.has(3));
        assert_eq!((s.distinct, s.dups, s.out_of_order), (4, [0, 1, 0], 1));
    }
}
