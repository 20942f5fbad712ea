//! The byte layout of what the store keeps: sessions, subscription options, messages and
//! queue entries. Every record starts with a format byte so a layout change is explicit.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::clock::Clock;
use crate::codec::{PublishProperties, QoS, RetainHandling, Version};
use crate::session::{InflightState, Message, SubOptions};

/// Format byte of every record written by this version.
const FORMAT: u8 = 1;

/// A record that could not be decoded: what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CorruptRecord(pub &'static str);

/// A persisted session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionRecord {
    /// Protocol version of the last connection.
    pub version: Version,
    /// Session expiry interval (u32::MAX = never).
    pub expiry_interval: u32,
    /// Unix seconds when the client disconnected; 0 while connected.
    pub disconnected_at: u64,
    /// Unique id of this session incarnation (see [`super::SessionKey`]).
    pub incarnation: u64,
    /// The authenticated user who created the session, if any: only they may resume it or
    /// take it over (`session_owner_check`).
    pub owner: Option<Arc<str>>,
}

/// Where a queued message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryState {
    /// Not sent yet (or a QoS 1 send that was not recorded).
    Queued,
    /// Sent with `packet_id`, awaiting PUBACK/PUBREC.
    Published,
    /// PUBREC received, awaiting PUBCOMP.
    Released,
}

impl From<InflightState> for EntryState {
    fn from(s: InflightState) -> Self {
        match s {
            InflightState::Published => EntryState::Published,
            InflightState::Released => EntryState::Released,
        }
    }
}

/// One message in one session's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntryRecord {
    /// The message, stored once in the messages table.
    pub message_id: u64,
    /// Delivery QoS.
    pub qos: QoS,
    /// RETAIN flag to send.
    pub retain: bool,
    /// Handshake state.
    pub state: EntryState,
    /// Packet id once sent.
    pub packet_id: u16,
    /// Subscription identifiers.
    pub subscription_ids: Vec<u32>,
    /// The message itself, kept in the entry when it was queued for this one session only
    /// (one B-tree write instead of three, and one delete instead of three); otherwise it is
    /// in the messages table under `message_id`.
    pub inline: Option<Arc<Message>>,
    /// The Shared Subscription it was delivered through (see
    /// [`crate::session::Delivery::group`]).
    pub group: Option<Arc<str>>,
}

/// A wall-clock time (from [`Clock::wall`]) in Unix seconds; 0 before 1970.
pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

struct Writer(Vec<u8>);

impl Writer {
    fn new() -> Writer {
        Writer(vec![FORMAT])
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
    }
    fn opt_bytes(&mut self, v: Option<&[u8]>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.bytes(v);
            }
            None => self.u8(0),
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Result<Reader<'a>, CorruptRecord> {
        match data.split_first() {
            Some((&FORMAT, rest)) => Ok(Reader(rest)),
            Some(_) => Err(CorruptRecord("unknown record format")),
            None => Err(CorruptRecord("empty record")),
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], CorruptRecord> {
        if self.0.len() < n {
            return Err(CorruptRecord("record truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, CorruptRecord> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, CorruptRecord> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, CorruptRecord> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, CorruptRecord> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    fn bytes(&mut self) -> Result<&'a [u8], CorruptRecord> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, CorruptRecord> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| CorruptRecord("invalid UTF-8"))
    }
    fn opt_bytes(&mut self) -> Result<Option<&'a [u8]>, CorruptRecord> {
        match self.u8()? {
            0 => Ok(None),
            _ => self.bytes().map(Some),
        }
    }
    fn opt_string(&mut self) -> Result<Option<String>, CorruptRecord> {
        self.opt_bytes()?
            .map(|b| String::from_utf8(b.to_vec()).map_err(|_| CorruptRecord("invalid UTF-8")))
            .transpose()
    }
    fn qos(&mut self) -> Result<QoS, CorruptRecord> {
        QoS::from_u8(self.u8()?).ok_or(CorruptRecord("invalid QoS"))
    }
    fn finish(self) -> Result<(), CorruptRecord> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(CorruptRecord("trailing bytes"))
        }
    }
}

/// Encodes a session record.
pub(crate) fn encode_session(r: &SessionRecord) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(match r.version {
        Version::V311 => 4,
        Version::V5 => 5,
    });
    w.u32(r.expiry_interval);
    w.u64(r.disconnected_at);
    w.u64(r.incarnation);
    // Optional, last: a record written before owners were kept simply ends here.
    if let Some(owner) = &r.owner {
        w.bytes(owner.as_bytes());
    }
    w.0
}

/// Decodes a session record.
pub(crate) fn decode_session(data: &[u8]) -> Result<SessionRecord, CorruptRecord> {
    let mut r = Reader::new(data)?;
    let version = match r.u8()? {
        4 => Version::V311,
        5 => Version::V5,
        _ => return Err(CorruptRecord("invalid protocol version")),
    };
    let expiry_interval = r.u32()?;
    let disconnected_at = r.u64()?;
    let incarnation = r.u64()?;
    let owner = if r.0.is_empty() {
        None
    } else {
        Some(Arc::from(r.string()?))
    };
    let record = SessionRecord {
        version,
        expiry_interval,
        disconnected_at,
        incarnation,
        owner,
    };
    r.finish()?;
    Ok(record)
}

/// Encodes subscription options.
pub(crate) fn encode_subscription(o: &SubOptions) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(o.qos as u8);
    let flags = u8::from(o.no_local) | (u8::from(o.retain_as_published) << 1);
    w.u8(flags | ((o.retain_handling as u8) << 2));
    w.u32(o.subscription_id.unwrap_or(0));
    w.0
}

/// Decodes subscription options.
pub(crate) fn decode_subscription(data: &[u8]) -> Result<SubOptions, CorruptRecord> {
    let mut r = Reader::new(data)?;
    let qos = r.qos()?;
    let flags = r.u8()?;
    let retain_handling = match (flags >> 2) & 0x3 {
        0 => RetainHandling::OnSubscribe,
        1 => RetainHandling::OnNewSubscribe,
        2 => RetainHandling::Never,
        _ => return Err(CorruptRecord("invalid retain handling")),
    };
    let id = r.u32()?;
    r.finish()?;
    Ok(SubOptions {
        qos,
        no_local: flags & 1 != 0,
        retain_as_published: flags & 2 != 0,
        retain_handling,
        subscription_id: (id != 0).then_some(id),
    })
}

/// Encodes a message; its expiry is kept as wall-clock time (of `clock`) so it survives a
/// restart.
pub(crate) fn encode_message(m: &Message, clock: &Clock) -> Vec<u8> {
    let mut w = Writer::new();
    w.bytes(m.topic.as_bytes());
    w.bytes(&m.payload);
    w.u8(m.qos as u8);
    w.u8(u8::from(m.retain));
    let expires_unix_ms = m.expires_at.map_or(0, |at| {
        let left = at.saturating_duration_since(clock.now()).as_millis() as u64;
        unix_millis(clock.wall()) + left.max(1)
    });
    w.u64(expires_unix_ms);
    let p = &m.properties;
    match p.payload_format_indicator {
        Some(v) => {
            w.u8(1);
            w.u8(v);
        }
        None => w.u8(0),
    }
    match p.message_expiry_interval {
        Some(v) => {
            w.u8(1);
            w.u32(v);
        }
        None => w.u8(0),
    }
    w.opt_bytes(p.content_type.as_deref().map(str::as_bytes));
    w.opt_bytes(p.response_topic.as_deref().map(str::as_bytes));
    w.opt_bytes(p.correlation_data.as_deref());
    w.u32(p.user_properties.len() as u32);
    for (k, v) in &p.user_properties {
        w.bytes(k.as_bytes());
        w.bytes(v.as_bytes());
    }
    // Optional, last: records written before cluster mode end here.
    if let Some(seq) = m.stream_seq {
        w.u64(seq);
    }
    w.0
}

/// Decodes a message, giving it store id `id`; its expiry is brought back to `clock`'s
/// monotonic time (an expiry already passed is now).
pub(crate) fn decode_message(
    id: u64,
    data: &[u8],
    clock: &Clock,
) -> Result<Message, CorruptRecord> {
    let mut r = Reader::new(data)?;
    let topic: Arc<str> = Arc::from(r.string()?);
    let payload = Bytes::copy_from_slice(r.bytes()?);
    let qos = r.qos()?;
    let retain = r.u8()? != 0;
    let expires_unix_ms = r.u64()?;
    let payload_format_indicator = match r.u8()? {
        0 => None,
        _ => Some(r.u8()?),
    };
    let message_expiry_interval = match r.u8()? {
        0 => None,
        _ => Some(r.u32()?),
    };
    let content_type = r.opt_string()?;
    let response_topic = r.opt_string()?;
    let correlation_data = r.opt_bytes()?.map(Bytes::copy_from_slice);
    let n = r.u32()? as usize;
    let mut user_properties = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        user_properties.push((r.string()?, r.string()?));
    }
    let stream_seq = if r.0.is_empty() { None } else { Some(r.u64()?) };
    r.finish()?;
    let expires_at = (expires_unix_ms != 0).then(|| {
        let left = expires_unix_ms.saturating_sub(unix_millis(clock.wall()));
        clock.now() + Duration::from_millis(left)
    });
    Ok(Message {
        id: crate::session::MessageId::new(id),
        topic,
        payload,
        qos,
        retain,
        properties: PublishProperties {
            payload_format_indicator,
            message_expiry_interval,
            content_type,
            response_topic,
            correlation_data,
            user_properties,
        },
        stream_seq,
        expires_at,
    })
}

/// Encodes a queue entry (an inline message's expiry as with [`encode_message`]).
pub(crate) fn encode_entry(e: &EntryRecord, clock: &Clock) -> Vec<u8> {
    let mut w = Writer::new();
    w.u64(e.message_id);
    w.u8(e.qos as u8);
    w.u8(u8::from(e.retain));
    w.u8(match e.state {
        EntryState::Queued => 0,
        EntryState::Published => 1,
        EntryState::Released => 2,
    });
    w.u16(e.packet_id);
    w.u32(e.subscription_ids.len() as u32);
    for id in &e.subscription_ids {
        w.u32(*id);
    }
    // Optional tagged sections, each at most once and in this order; a record written before
    // a section existed simply lacks it.
    if let Some(m) = &e.inline {
        w.u8(TAG_INLINE);
        w.bytes(&encode_message(m, clock));
    }
    if let Some(group) = &e.group {
        w.u8(TAG_GROUP);
        w.bytes(group.as_bytes());
    }
    w.0
}

/// Entry section: the message itself (see [`EntryRecord::inline`]).
const TAG_INLINE: u8 = 1;
/// Entry section: the Shared Subscription (see [`EntryRecord::group`]).
const TAG_GROUP: u8 = 2;

/// Whether an encoded queue entry holds its message inline (see [`EntryRecord::inline`]),
/// and the id of the message it refers to. Reads only the head of the record.
pub(crate) fn entry_message(data: &[u8]) -> Result<(u64, bool), CorruptRecord> {
    let mut r = Reader::new(data)?;
    let message_id = r.u64()?;
    r.take(5)?;
    let n = r.u32()? as usize;
    r.take(n.saturating_mul(4))?;
    Ok((message_id, r.0.first() == Some(&TAG_INLINE)))
}

/// Decodes a queue entry (an inline message's expiry as with [`decode_message`]).
pub(crate) fn decode_entry(data: &[u8], clock: &Clock) -> Result<EntryRecord, CorruptRecord> {
    let mut r = Reader::new(data)?;
    let message_id = r.u64()?;
    let qos = r.qos()?;
    let retain = r.u8()? != 0;
    let state = match r.u8()? {
        0 => EntryState::Queued,
        1 => EntryState::Published,
        2 => EntryState::Released,
        _ => return Err(CorruptRecord("invalid entry state")),
    };
    let packet_id = r.u16()?;
    let n = r.u32()? as usize;
    let mut subscription_ids = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        subscription_ids.push(r.u32()?);
    }
    let mut inline = None;
    let mut group = None;
    let mut last = 0;
    while !r.0.is_empty() {
        let tag = r.u8()?;
        if tag <= last {
            return Err(CorruptRecord("entry sections out of order"));
        }
        last = tag;
        match tag {
            TAG_INLINE => inline = Some(Arc::new(decode_message(message_id, r.bytes()?, clock)?)),
            TAG_GROUP => group = Some(Arc::from(r.string()?)),
            _ => return Err(CorruptRecord("unknown entry section")),
        }
    }
    r.finish()?;
    Ok(EntryRecord {
        message_id,
        qos,
        retain,
        state,
        packet_id,
        subscription_ids,
        inline,
        group,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::MessageId;

    fn clock() -> Clock {
        Clock::manual()
    }

    #[test]
    fn entry_roundtrip_with_and_without_inline_message() {
        let message = Message {
            id: MessageId::new(9),
            topic: Arc::from("a/b"),
            payload: Bytes::from_static(b"payload"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Default::default(),
            stream_seq: None,
            expires_at: None,
        };
        let mut e = EntryRecord {
            message_id: 9,
            qos: QoS::AtLeastOnce,
            retain: true,
            state: EntryState::Published,
            packet_id: 12,
            subscription_ids: vec![1, 2],
            inline: None,
            group: None,
        };
        let c = clock();
        let shared = encode_entry(&e, &c);
        assert_eq!(decode_entry(&shared, &c), Ok(e.clone()));
        assert_eq!(entry_message(&shared), Ok((9, false)));
        e.group = Some(Arc::from("$share/g/a/#"));
        let grouped = encode_entry(&e, &c);
        assert_eq!(decode_entry(&grouped, &c), Ok(e.clone()));
        assert_eq!(entry_message(&grouped), Ok((9, false)));
        e.inline = Some(Arc::new(message));
        let inline = encode_entry(&e, &c);
        assert_eq!(decode_entry(&inline, &c), Ok(e.clone()));
        assert_eq!(entry_message(&inline), Ok((9, true)));
        e.group = None;
        let inline = encode_entry(&e, &c);
        assert_eq!(decode_entry(&inline, &c), Ok(e));
        // Sections out of order or unknown are corrupt, not skipped.
        let mut bad = encode_entry(
            &EntryRecord {
                inline: None,
                ..e_group()
            },
            &c,
        );
        bad.extend_from_slice(&[TAG_INLINE, 0, 0, 0, 0]);
        assert!(decode_entry(&bad, &c).is_err());
        let mut unknown = encode_entry(
            &EntryRecord {
                inline: None,
                group: None,
                ..e_group()
            },
            &c,
        );
        unknown.push(9);
        assert!(decode_entry(&unknown, &c).is_err());
    }

    fn e_group() -> EntryRecord {
        EntryRecord {
            message_id: 1,
            qos: QoS::AtLeastOnce,
            retain: false,
            state: EntryState::Queued,
            packet_id: 0,
            subscription_ids: vec![],
            inline: None,
            group: Some(Arc::from("$share/g/t")),
        }
    }

    #[test]
    fn session_roundtrip() {
        let r = SessionRecord {
            version: Version::V5,
            expiry_interval: 3600,
            disconnected_at: 1_700_000_000,
            incarnation: 42,
            owner: None,
        };
        assert_eq!(decode_session(&encode_session(&r)), Ok(r.clone()));
        let owned = SessionRecord {
            owner: Some(Arc::from("alice")),
            ..r
        };
        assert_eq!(decode_session(&encode_session(&owned)), Ok(owned));
    }

    #[test]
    fn subscription_roundtrip() {
        let o = SubOptions {
            qos: QoS::ExactlyOnce,
            no_local: true,
            retain_as_published: true,
            retain_handling: RetainHandling::Never,
            subscription_id: Some(268_435_455),
        };
        assert_eq!(decode_subscription(&encode_subscription(&o)), Ok(o));
        let plain = SubOptions::with_qos(QoS::AtMostOnce);
        assert_eq!(decode_subscription(&encode_subscription(&plain)), Ok(plain));
    }

    #[test]
    fn message_roundtrip_keeps_properties_and_remaining_expiry() {
        let m = Message {
            id: MessageId::new(7),
            topic: Arc::from("a/b/ü"),
            payload: Bytes::from_static(&[0, 1, 2, 255]),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: PublishProperties {
                payload_format_indicator: Some(1),
                message_expiry_interval: Some(60),
                content_type: Some("text/plain".into()),
                response_topic: Some("r/t".into()),
                correlation_data: Some(Bytes::from_static(b"c")),
                user_properties: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
            },
            stream_seq: None,
            expires_at: None,
        };
        let c = clock();
        let m = Message {
            stream_seq: None,
            expires_at: Some(c.now() + Duration::from_secs(60)),
            ..m
        };
        let stored = encode_message(&m, &c);
        c.advance(Duration::from_secs(20));
        let back = decode_message(7, &stored, &c).unwrap();
        assert_eq!(back.topic, m.topic);
        assert_eq!(back.payload, m.payload);
        assert_eq!(back.properties, m.properties);
        assert!(back.retain);
        assert_eq!(back.remaining_expiry(c.now()), Some(40));
        // Read back after its expiry passed (e.g. across a long restart): expired at once.
        c.advance(Duration::from_secs(41));
        let late = decode_message(7, &stored, &c).unwrap();
        assert!(late.is_expired(c.now()));
    }

    #[test]
    fn entry_roundtrip() {
        let e = EntryRecord {
            message_id: 99,
            qos: QoS::ExactlyOnce,
            retain: false,
            state: EntryState::Released,
            packet_id: 65535,
            subscription_ids: vec![1, 2],
            inline: None,
            group: None,
        };
        let c = clock();
        assert_eq!(decode_entry(&encode_entry(&e, &c), &c), Ok(e));
    }

    #[test]
    fn corrupt_records_are_errors_not_panics() {
        let c = clock();
        let good = encode_entry(
            &EntryRecord {
                message_id: 1,
                qos: QoS::AtLeastOnce,
                retain: false,
                state: EntryState::Queued,
                packet_id: 0,
                subscription_ids: vec![3],
                inline: None,
                group: None,
            },
            &c,
        );
        for cut in 0..good.len() {
            assert!(decode_entry(&good[..cut], &c).is_err(), "prefix {cut}");
        }
        let mut wrong_format = good.clone();
        wrong_format[0] = 9;
        assert_eq!(
            decode_entry(&wrong_format, &c),
            Err(CorruptRecord("unknown record format"))
        );
        let mut huge = encode_message(
            &Message {
                id: MessageId::new(1),
                topic: Arc::from("t"),
                payload: Bytes::new(),
                qos: QoS::AtMostOnce,
                retain: false,
                properties: Default::default(),
                stream_seq: None,
                expires_at: None,
            },
            &c,
        );
        let n = huge.len();
        huge[n - 4..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_message(1, &huge, &c).is_err());
    }
}
