//! Session state persistence: the [`SessionStore`] trait and the [`RamStore`] implementation.

/// One persisted piece of QoS 1/2 session state.
///
/// Outgoing records are keyed by packet id: saving a [`Record::Release`] for a pid replaces its
/// [`Record::Publish`] *in place*, so the store keeps the original publish order (MQTT requires
/// resending in that order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// An outgoing QoS 1/2 PUBLISH not yet acknowledged (PUBACK / PUBREC). The data is the
    /// encoded packet, resent with the DUP flag after a reconnect.
    Publish(u16),
    /// An outgoing QoS 2 message whose PUBREC arrived: PUBREL is (re)sent until PUBCOMP.
    /// Carries no data.
    Release(u16),
    /// An incoming QoS 2 message already delivered to the application, awaiting PUBREL.
    /// Duplicates with this id are suppressed. Carries no data.
    Received(u16),
}

impl Record {
    /// The packet identifier of the record.
    pub fn pid(self) -> u16 {
        match self {
            Record::Publish(p) | Record::Release(p) | Record::Received(p) => p,
        }
    }

    /// `true` for [`Record::Publish`] and [`Record::Release`].
    pub fn is_outgoing(self) -> bool {
        !matches!(self, Record::Received(_))
    }

    /// `true` when both records share a key (same direction and packet id).
    pub fn same_key(self, other: Record) -> bool {
        self.pid() == other.pid() && self.is_outgoing() == other.is_outgoing()
    }

    fn tag(self) -> u8 {
        match self {
            Record::Publish(_) => 1,
            Record::Release(_) => 2,
            Record::Received(_) => 3,
        }
    }

    fn from_tag(tag: u8, pid: u16) -> Option<Record> {
        match tag {
            1 => Some(Record::Publish(pid)),
            2 => Some(Record::Release(pid)),
            3 => Some(Record::Received(pid)),
            _ => None,
        }
    }
}

/// The store could not complete the request (full, or a storage failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreError;

/// Where the client keeps QoS 1/2 session state, in the spirit of coreMQTT's
/// store / retrieve / clear callbacks.
///
/// The client writes through to the store on every state change, and reads it back
/// (with [`load`](SessionStore::load)) on its first connect with a persistent session (so a
/// flash-backed store carries state across a reboot) and when resending after a reconnect.
pub trait SessionStore {
    /// Saves `record` with `data`, replacing (at the same position) any record with the same key
    /// (see [`Record::same_key`]). On error nothing may have changed.
    fn save(&mut self, record: Record, data: &[u8]) -> Result<(), StoreError>;

    /// Removes the record with the same key as `record`, if any.
    fn remove(&mut self, record: Record);

    /// Copies the `index`-th record (oldest first) into `buf`, returning the record and the data
    /// length, or `Ok(None)` past the last record. `buf` is at least as large as any data saved.
    fn load(&mut self, index: usize, buf: &mut [u8])
    -> Result<Option<(Record, usize)>, StoreError>;

    /// Removes every record.
    fn clear(&mut self);
}

impl<S: SessionStore + ?Sized> SessionStore for &mut S {
    fn save(&mut self, record: Record, data: &[u8]) -> Result<(), StoreError> {
        (**self).save(record, data)
    }
    fn remove(&mut self, record: Record) {
        (**self).remove(record)
    }
    fn load(
        &mut self,
        index: usize,
        buf: &mut [u8],
    ) -> Result<Option<(Record, usize)>, StoreError> {
        (**self).load(index, buf)
    }
    fn clear(&mut self) {
        (**self).clear()
    }
}

/// Bytes of bookkeeping per record in a [`RamStore`] (tag, pid, length).
pub const RAM_RECORD_OVERHEAD: usize = 5;

/// A [`SessionStore`] in a caller-provided RAM buffer.
///
/// Each record takes [`RAM_RECORD_OVERHEAD`] bytes plus its data (the encoded PUBLISH). Size the
/// buffer for the number of QoS 1/2 messages you want in flight; when it is full, `publish`
/// with QoS > 0 fails with [`Error::StoreFull`](crate::Error::StoreFull). An empty buffer is
/// fine for QoS 0 only clients.
#[derive(Debug)]
pub struct RamStore<'a> {
    buf: &'a mut [u8],
    used: usize,
}

impl<'a> RamStore<'a> {
    /// Creates an empty store in `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        RamStore { buf, used: 0 }
    }

    /// Bytes in use.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Number of records stored.
    pub fn len(&self) -> usize {
        let mut n = 0;
        let mut pos = 0;
        while let Some((_, _, next)) = self.entry(pos) {
            n += 1;
            pos = next;
        }
        n
    }

    /// `true` when no record is stored.
    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// Decodes the entry at `pos`: (record, data range start, next entry position).
    fn entry(&self, pos: usize) -> Option<(Record, usize, usize)> {
        if pos >= self.used {
            return None;
        }
        let h = self.buf.get(pos..pos + RAM_RECORD_OVERHEAD)?;
        let pid = u16::from_be_bytes([h[1], h[2]]);
        let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
        let rec = Record::from_tag(h[0], pid)?;
        Some((
            rec,
            pos + RAM_RECORD_OVERHEAD,
            pos + RAM_RECORD_OVERHEAD + len,
        ))
    }

    fn find(&self, key: Record) -> Option<(usize, usize)> {
        let mut pos = 0;
        while let Some((rec, _, next)) = self.entry(pos) {
            if rec.same_key(key) {
                return Some((pos, next));
            }
            pos = next;
        }
        None
    }
}

impl SessionStore for RamStore<'_> {
    fn save(&mut self, record: Record, data: &[u8]) -> Result<(), StoreError> {
        let len = u16::try_from(data.len()).map_err(|_| StoreError)?;
        let need = RAM_RECORD_OVERHEAD + data.len();
        let (pos, old_end) = self.find(record).unwrap_or((self.used, self.used));
        let new_used = self.used - (old_end - pos) + need;
        if new_used > self.buf.len() {
            return Err(StoreError);
        }
        // Move the tail to make exactly `need` bytes at `pos`.
        crate::move_bytes(self.buf, old_end, self.used, pos + need);
        let [p0, p1] = record.pid().to_be_bytes();
        let [l0, l1] = len.to_be_bytes();
        self.buf[pos..pos + RAM_RECORD_OVERHEAD].copy_from_slice(&[record.tag(), p0, p1, l0, l1]);
        self.buf[pos + RAM_RECORD_OVERHEAD..pos + need].copy_from_slice(data);
        self.used = new_used;
        Ok(())
    }

    fn remove(&mut self, record: Record) {
        if let Some((pos, end)) = self.find(record) {
            crate::move_bytes(self.buf, end, self.used, pos);
            self.used -= end - pos;
        }
    }

    fn load(
        &mut self,
        index: usize,
        buf: &mut [u8],
    ) -> Result<Option<(Record, usize)>, StoreError> {
        let mut pos = 0;
        let mut i = 0;
        while let Some((rec, start, next)) = self.entry(pos) {
            if i == index {
                let data = &self.buf[start..next];
                let dst = buf.get_mut(..data.len()).ok_or(StoreError)?;
                dst.copy_from_slice(data);
                return Ok(Some((rec, data.len())));
            }
            i += 1;
            pos = next;
        }
        Ok(None)
    }

    fn clear(&mut self) {
        self.used = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(s: &mut RamStore<'_>) -> ([(Record, usize); 8], usize) {
        let mut out = [(Record::Publish(0), 0); 8];
        let mut tmp = [0u8; 64];
        let mut i = 0;
        while let Some(r) = s.load(i, &mut tmp).unwrap() {
            out[i] = r;
            i += 1;
        }
        (out, i)
    }

    #[test]
    fn keeps_order_and_replaces_in_place() {
        let mut mem = [0u8; 64];
        let mut s = RamStore::new(&mut mem);
        s.save(Record::Publish(1), b"aaaa").unwrap();
        s.save(Record::Publish(2), b"bb").unwrap();
        s.save(Record::Received(1), b"").unwrap();
        s.save(Record::Release(1), b"").unwrap();
        let (r, n) = all(&mut s);
        assert_eq!(n, 3);
        assert_eq!(
            &r[..3],
            &[
                (Record::Release(1), 0),
                (Record::Publish(2), 2),
                (Record::Received(1), 0)
            ]
        );
        s.remove(Record::Publish(1)); // same key as Release(1)
        s.remove(Record::Received(9)); // absent: no-op
        let (r, n) = all(&mut s);
        assert_eq!(n, 2);
        assert_eq!(r[0], (Record::Publish(2), 2));
        let mut tmp = [0u8; 4];
        assert_eq!(s.load(0, &mut tmp), Ok(Some((Record::Publish(2), 2))));
        assert_eq!(&tmp[..2], b"bb");
        assert_eq!(s.len(), 2);
        s.clear();
        assert!(s.is_empty());
    }

    #[test]
    fn full_store_rejects_without_change() {
        let mut mem = [0u8; 16];
        let mut s = RamStore::new(&mut mem);
        s.save(Record::Publish(1), b"12345").unwrap();
        assert_eq!(s.save(Record::Publish(2), b"xy"), Err(StoreError));
        assert_eq!(s.len(), 1);
        // Replacing with a smaller record always fits.
        s.save(Record::Release(1), b"").unwrap();
        assert_eq!(s.used(), RAM_RECORD_OVERHEAD);
        s.save(Record::Publish(2), b"123456").unwrap();
        assert_eq!(s.len(), 2);
        let mut empty: [u8; 0] = [];
        let mut none = RamStore::new(&mut empty);
        assert_eq!(none.save(Record::Publish(1), b""), Err(StoreError));
        assert_eq!(none.load(0, &mut [0u8; 1]), Ok(None));
    }
}
