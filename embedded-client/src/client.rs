//! The client state machine.

use embedded_io_async::{Read, Write};

use roost_wire::{FixedHeader, Reader};

use crate::codec::{
    self, DISCONNECT, Inbound, MAX_QOS, PINGREQ, PUBACK, PUBLISH, SUBACK, UNSUBACK, protocol,
};
#[cfg(feature = "qos2")]
use crate::codec::{PUBCOMP, PUBREC, PUBREL};
use crate::{Clock, ConnectOptions, Error, Protocol, QoS, Record, SessionStore, Subscription};

/// Default outgoing window of [`Client::new`]: packets awaiting acknowledgement (QoS 1/2
/// publishes plus pending SUBSCRIBE/UNSUBSCRIBE). Choose another with
/// [`Client::with_windows`].
pub const MAX_INFLIGHT: usize = 16;
/// Default incoming window of [`Client::new`]: incoming QoS 2 messages awaiting PUBREL (also
/// sent as the v5 receive maximum). Choose another with [`Client::with_windows`].
pub const MAX_INBOUND: usize = 16;
/// Smallest accepted transmit / receive buffer.
const MIN_BUF: usize = 16;

/// One entry of the client's topic alias table (see [`Client::set_topic_aliases`]): which
/// topic an alias stands for on the current connection, as a 64-bit hash of the topic (so the
/// table needs no room for topic strings). Two topics with the same alias number and the same
/// hash would be mixed up; with a 64-bit hash that is negligible for a device's own topics.
#[cfg(feature = "v5")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicAliasSlot(u64);

#[cfg(feature = "v5")]
impl TopicAliasSlot {
    /// An alias not set up on this connection.
    pub const EMPTY: TopicAliasSlot = TopicAliasSlot(0);

    /// The slot value for `topic`: FNV-1a over its bytes, never 0.
    fn of(topic: &str) -> TopicAliasSlot {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in topic.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        TopicAliasSlot(h | 1)
    }
}

/// One outgoing packet id in flight and what it waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Free,
    Puback(u16),
    #[cfg(feature = "qos2")]
    Pubrec(u16),
    #[cfg(feature = "qos2")]
    Pubcomp(u16),
    Suback(u16),
    Unsuback(u16),
    /// v5: a stored message removed at a reconnect without being sent, because the new
    /// server cannot accept it; reported by the next `poll` as `Error::Rejected` with this
    /// reason code, which frees the slot (the packet id stays reserved until then).
    #[cfg(feature = "v5")]
    Dropped(u16, u8),
}

impl Slot {
    fn pid(self) -> Option<u16> {
        match self {
            Slot::Free => None,
            Slot::Puback(p) | Slot::Suback(p) | Slot::Unsuback(p) => Some(p),
            #[cfg(feature = "qos2")]
            Slot::Pubrec(p) | Slot::Pubcomp(p) => Some(p),
            #[cfg(feature = "v5")]
            Slot::Dropped(p, _) => Some(p),
        }
    }

    /// A PUBLISH not yet acknowledged by PUBACK / PUBREC: its record is a `Record::Publish`.
    #[cfg(feature = "v5")]
    fn awaits_first_ack(self) -> bool {
        match self {
            Slot::Puback(_) => true,
            #[cfg(feature = "qos2")]
            Slot::Pubrec(_) => true,
            _ => false,
        }
    }

    fn is_publish(self) -> bool {
        match self {
            Slot::Puback(_) => true,
            #[cfg(feature = "qos2")]
            Slot::Pubrec(_) | Slot::Pubcomp(_) => true,
            _ => false,
        }
    }
}

/// What is left to do with the packet at the front of the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handled {
    /// Nothing pending.
    None,
    /// Handled; return it as an event once the acknowledgement is written (for a PUBLISH:
    /// before its PUBACK / PUBREC, see `Client::deferred`).
    Event,
    /// Handled; nothing to report.
    Quiet,
    /// Handled; report this (non-fatal) error.
    Fail(Error),
}

/// Result of a successful [`Client::connect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ConnAck {
    /// The server resumed an existing session.
    pub session_present: bool,
    /// Number of PUBLISH (with DUP) and PUBREL packets resent from the session. With v5,
    /// stored messages beyond the server's Receive Maximum are not counted here: they are
    /// sent by [`Client::poll`] as acknowledgements make room.
    pub resent: usize,
    /// The client had QoS 1/2 state but the server had no session, so it was discarded.
    pub discarded: bool,
    /// v5: stored QoS 1/2 messages the server of this connection cannot accept (above its
    /// Maximum Packet Size or its Maximum QoS, MQTT-3.2.2-15 and MQTT-3.2.2-11). They were not
    /// sent and are removed from the session; [`Client::poll`] reports each one as
    /// [`Error::Rejected`] with reason `0x95` (packet too large) or `0x9B` (QoS not
    /// supported), before anything else. Always 0 on a 3.1.1 connection.
    pub dropped: usize,
}

/// An application message received from the server, borrowing from the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Payload.
    pub payload: &'a [u8],
    /// QoS the message was delivered with.
    pub qos: QoS,
    /// Retain flag (a retained message sent because of a new subscription).
    pub retain: bool,
    /// DUP flag (QoS 1 messages may be delivered again; QoS 2 duplicates are suppressed).
    pub dup: bool,
    /// Packet id (0 for QoS 0).
    pub pid: u16,
    /// v5 property block, raw; iterate with [`Message::properties`].
    #[cfg(feature = "v5")]
    pub raw_properties: &'a [u8],
}

#[cfg(feature = "v5")]
impl<'a> Message<'a> {
    /// Iterates over the v5 properties in the order they came, as raw identifiers and values
    /// (compare the identifiers with the constants of [`property`](crate::property)). The
    /// accessors below read the common ones. Empty on a 3.1.1 connection.
    pub fn properties(&self) -> crate::Properties<'a> {
        crate::Properties::new(self.raw_properties)
    }

    /// The first property with identifier `id` (a message carries each of these at most
    /// once, MQTT 5.0 section 3.3.2.3; the client checked it on receipt).
    fn property(&self, id: u8) -> Option<crate::Property<'a>> {
        self.properties().find(|p| p.id() == id)
    }

    /// The Content Type (MQTT 5.0 section 3.3.2.3.9), e.g. `"application/json"`.
    pub fn content_type(&self) -> Option<&'a str> {
        match self.property(crate::property::CONTENT_TYPE)? {
            crate::Property::Str(_, s) => Some(s),
            _ => None,
        }
    }

    /// The Response Topic of a request (section 3.3.2.3.5): where to publish the response.
    pub fn response_topic(&self) -> Option<&'a str> {
        match self.property(crate::property::RESPONSE_TOPIC)? {
            crate::Property::Str(_, s) => Some(s),
            _ => None,
        }
    }

    /// The Correlation Data (section 3.3.2.3.6): send it back with the response.
    pub fn correlation_data(&self) -> Option<&'a [u8]> {
        match self.property(crate::property::CORRELATION_DATA)? {
            crate::Property::Bin(_, b) => Some(b),
            _ => None,
        }
    }

    /// The Message Expiry Interval in seconds (section 3.3.2.3.3): what is left of the
    /// lifetime the publisher gave, as the server forwards it.
    pub fn message_expiry_secs(&self) -> Option<u32> {
        match self.property(crate::property::MESSAGE_EXPIRY_INTERVAL)? {
            crate::Property::U32(_, secs) => Some(secs),
            _ => None,
        }
    }

    /// The Payload Format Indicator (section 3.3.2.3.2): `Some(1)` when the publisher says
    /// the payload is UTF-8 text, `Some(0)` for unspecified bytes, `None` when absent (also
    /// unspecified bytes). The client does not check the payload.
    pub fn payload_format(&self) -> Option<u8> {
        match self.property(crate::property::PAYLOAD_FORMAT_INDICATOR)? {
            crate::Property::Byte(_, v) => Some(v),
            _ => None,
        }
    }

    /// `true` when the Payload Format Indicator says the payload is UTF-8 text.
    pub fn payload_utf8(&self) -> bool {
        self.payload_format() == Some(1)
    }

    /// The User Properties (name, value), in the order they came; names may repeat.
    pub fn user_properties(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.properties().filter_map(|p| match p {
            crate::Property::Pair(name, value) => Some((name, value)),
            _ => None,
        })
    }

    /// The Subscription Identifiers of the subscriptions that matched this message
    /// (MQTT 5.0 section 3.3.2.3.8; see [`SubscribeProperties`](crate::SubscribeProperties)).
    pub fn subscription_ids(&self) -> impl Iterator<Item = u32> + 'a {
        self.properties().filter_map(|p| match p {
            crate::Property::VarInt(roost_wire::property::SUBSCRIPTION_IDENTIFIER, id) => Some(id),
            _ => None,
        })
    }
}

/// Something [`Client::poll`] received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// An application message (QoS 2 duplicates never appear). Its PUBACK / PUBREC goes out
    /// with the next call on the client (`poll`, `publish`, ..., `disconnect`), so the server
    /// never takes as delivered a message that was not returned here.
    Message(Message<'a>),
    /// The QoS 1 message with this packet id was acknowledged: delivery complete.
    PubAck(u16),
    /// QoS 2 step one: the server received the message with this id; PUBREL was sent.
    #[cfg(feature = "qos2")]
    PubRec(u16),
    /// QoS 2 complete for this packet id.
    #[cfg(feature = "qos2")]
    PubComp(u16),
    /// A SUBSCRIBE was acknowledged; one return / reason code per filter
    /// (0-2 granted QoS, >= 0x80 failure).
    SubAck {
        /// Packet id returned by [`Client::subscribe`].
        pid: u16,
        /// Return codes, in filter order.
        codes: &'a [u8],
    },
    /// An UNSUBSCRIBE was acknowledged.
    UnsubAck {
        /// Packet id returned by [`Client::unsubscribe`].
        pid: u16,
    },
}

/// An MQTT client over transport `T`, with clock `C` and session store `S`.
///
/// `tx` holds one outgoing packet (the largest PUBLISH you send), `rx` one incoming packet
/// (the largest message you accept; v5 servers are told this size). Both must be at least
/// 16 bytes.
///
/// The windows are compile-time sizes of the client's tables:
/// * `OUT`: outgoing packets awaiting acknowledgement at once (QoS 1/2 publishes plus pending
///   SUBSCRIBE/UNSUBSCRIBE), 1..=65535. A send beyond it fails with [`Error::InflightFull`].
///   Each slot costs 4 bytes of RAM.
/// * `IN`: incoming QoS 2 messages awaiting PUBREL, 1..=65535; with v5 it is also the
///   Receive Maximum sent in CONNECT, so the server never has more than `IN` QoS 1/2 messages
///   unacknowledged towards this client (MQTT-3.3.4-9). Each slot costs 2 bytes of RAM.
///
/// [`Client::new`] uses 16 and 16; [`Client::with_windows`] picks others.
pub struct Client<'b, T, C, S, const OUT: usize = MAX_INFLIGHT, const IN: usize = MAX_INBOUND> {
    io: Option<T>,
    clock: C,
    store: S,
    tx: &'b mut [u8],
    rx: &'b mut [u8],
    /// Bytes of the packet in `tx`, and how many are written.
    tx_len: usize,
    tx_sent: usize,
    /// Bytes received into `rx`; the first `rx_done` belong to a packet already returned.
    rx_len: usize,
    rx_done: usize,
    /// Bytes still to discard of an oversized PUBLISH, its size and its ack.
    rx_skip: usize,
    skip_len: usize,
    skip_ack: Option<(u8, u16)>,
    handled: Handled,
    /// The PUBACK or PUBREC (kind, packet id) of the last message [`Client::poll`] returned,
    /// sent by the next call on the client: a server never counts as delivered a message the
    /// application did not get. Should the connection fail in between, a QoS 1 message comes
    /// again, and a QoS 2 message, already recorded, is acknowledged but not delivered twice.
    deferred: Option<(u8, u16)>,
    connected: bool,
    v5: bool,
    keepalive_ms: u64,
    last_tx: u64,
    ping_sent: Option<u64>,
    next_pid: u16,
    out: [Slot; OUT],
    inb: [u16; IN],
    server_max_packet: u32,
    server_recv_max: u16,
    /// The highest QoS to publish with: the server's maximum, capped at what this build handles.
    max_qos: u8,
    restored: bool,
    /// v5: stored messages not resent yet at this connection's start because the server's
    /// Receive Maximum was reached: the last `unsent` `Record::Publish` records of the store
    /// (resent in order by `poll` as acknowledgements free the server's quota).
    #[cfg(feature = "v5")]
    unsent: usize,
    /// Topic alias table (alias n is entry n - 1) and the server's Topic Alias Maximum.
    #[cfg(feature = "v5")]
    aliases: &'b mut [TopicAliasSlot],
    #[cfg(feature = "v5")]
    server_alias_max: u16,
    /// Topics the server gave aliases to (slots of `in_alias_slot` bytes: a two byte length,
    /// 0 = unset, then the topic), and the Topic Alias Maximum sent in CONNECT.
    #[cfg(feature = "v5")]
    in_aliases: &'b mut [u8],
    #[cfg(feature = "v5")]
    in_alias_slot: usize,
    #[cfg(feature = "v5")]
    in_alias_max: u16,
    /// Length of the last CONNACK, acknowledgement or DISCONNECT at the front of `rx` while it
    /// is still there (0 otherwise): the source of [`Client::reason_string`].
    #[cfg(feature = "v5")]
    last: usize,
}

impl<'b, T, C, S> Client<'b, T, C, S>
where
    T: Read + Write,
    C: Clock,
    S: SessionStore,
{
    /// Creates a disconnected client with the default windows ([`MAX_INFLIGHT`] outgoing,
    /// [`MAX_INBOUND`] incoming). Call [`connect`](Self::connect) next.
    pub fn new(clock: C, store: S, tx: &'b mut [u8], rx: &'b mut [u8]) -> Self {
        Self::with_windows(clock, store, tx, rx)
    }
}

impl<'b, T, C, S, const OUT: usize, const IN: usize> Client<'b, T, C, S, OUT, IN>
where
    T: Read + Write,
    C: Clock,
    S: SessionStore,
{
    /// Creates a disconnected client whose windows are `OUT` outgoing and `IN` incoming
    /// messages (see [`Client`]); both must be 1..=65535 (checked at compile time).
    ///
    /// ```
    /// # use roost_client::{Client, Clock, RamStore};
    /// # fn demo<T: embedded_io_async::Read + embedded_io_async::Write>(
    /// #     clock: impl Clock,
    /// #     store: RamStore<'_>,
    /// # ) {
    /// # let (mut tx, mut rx) = ([0u8; 256], [0u8; 256]);
    /// // At most 4 QoS 1/2 messages (and (un)subscribes) unacknowledged, 2 incoming QoS 2.
    /// let client: Client<T, _, _, 4, 2> = Client::with_windows(clock, store, &mut tx, &mut rx);
    /// # }
    /// ```
    pub fn with_windows(clock: C, store: S, tx: &'b mut [u8], rx: &'b mut [u8]) -> Self {
        const {
            assert!(OUT >= 1 && OUT <= 65535, "OUT must be 1..=65535");
            assert!(IN >= 1 && IN <= 65535, "IN must be 1..=65535");
        }
        Client {
            io: None,
            clock,
            store,
            tx,
            rx,
            tx_len: 0,
            tx_sent: 0,
            rx_len: 0,
            rx_done: 0,
            rx_skip: 0,
            skip_len: 0,
            skip_ack: None,
            handled: Handled::None,
            deferred: None,
            connected: false,
            v5: false,
            keepalive_ms: 0,
            last_tx: 0,
            ping_sent: None,
            next_pid: 0,
            out: [Slot::Free; OUT],
            inb: [0; IN],
            server_max_packet: u32::MAX,
            server_recv_max: u16::MAX,
            max_qos: MAX_QOS,
            restored: false,
            #[cfg(feature = "v5")]
            unsent: 0,
            #[cfg(feature = "v5")]
            aliases: &mut [],
            #[cfg(feature = "v5")]
            server_alias_max: 0,
            #[cfg(feature = "v5")]
            in_aliases: &mut [],
            #[cfg(feature = "v5")]
            in_alias_slot: 2,
            #[cfg(feature = "v5")]
            in_alias_max: 0,
            #[cfg(feature = "v5")]
            last: 0,
        }
    }

    /// v5: lets the server use topic aliases towards this client. `storage` is cut into
    /// slots of `2 + max_topic_len` bytes, one per alias; their number (at most 65,535) is
    /// the Topic Alias Maximum sent in CONNECT from the next [`connect`](Self::connect) on
    /// (none is sent without storage, so servers send no aliases). Messages whose topic
    /// arrives as an alias are returned with the full topic, borrowed from `storage`.
    ///
    /// A server that sets an alias for a topic longer than `max_topic_len` bytes, uses an
    /// alias above the maximum or one it never set is a protocol error ([`Error::Protocol`],
    /// connection closed), so make `max_topic_len` the longest topic the subscriptions can
    /// match. An oversized PUBLISH that is skipped ([`Error::MessageTooLarge`]) does not set
    /// its alias.
    #[cfg(feature = "v5")]
    pub fn set_inbound_topic_aliases(&mut self, storage: &'b mut [u8], max_topic_len: u16) {
        let slot = 2 + usize::from(max_topic_len);
        self.in_alias_max = u16::try_from(storage.len() / slot).unwrap_or(u16::MAX);
        self.in_alias_slot = slot;
        self.in_aliases = storage;
        self.clear_inbound_aliases();
    }

    /// Marks every inbound alias unset.
    #[cfg(feature = "v5")]
    fn clear_inbound_aliases(&mut self) {
        for slot in self.in_aliases.chunks_mut(self.in_alias_slot) {
            slot.fill(0);
        }
    }

    /// The topic inbound alias `alias` stands for.
    #[cfg(feature = "v5")]
    fn inbound_alias(&self, alias: u16) -> Result<&str, Error> {
        let index = usize::from(alias).checked_sub(1).ok_or(Error::Protocol)?;
        let start = index * self.in_alias_slot;
        let slot = self
            .in_aliases
            .get(start..start + self.in_alias_slot)
            .ok_or(Error::Protocol)?;
        let len = usize::from(u16::from_be_bytes([slot[0], slot[1]]));
        match slot.get(2..2 + len) {
            Some(t) if len > 0 => core::str::from_utf8(t).map_err(|_| Error::Protocol),
            _ => Err(Error::Protocol),
        }
    }

    /// Applies the Topic Alias of the PUBLISH at `rx[h..total]`: records the topic it is set
    /// to, or checks that an empty topic's alias is known (MQTT 5.0 section 3.3.2.3.4).
    #[cfg(feature = "v5")]
    fn apply_inbound_alias(&mut self, h: usize, total: usize) -> Result<(), Error> {
        if !self.v5 {
            return Ok(());
        }
        let p = codec::decode_publish(self.rx[0], &self.rx[h..total], true).map_err(protocol)?;
        if p.alias == 0 {
            return Ok(());
        }
        if p.alias > self.in_alias_max {
            // Above the Topic Alias Maximum the client sent: a protocol error.
            return Err(Error::Protocol);
        }
        if p.topic.is_empty() {
            return self.inbound_alias(p.alias).map(|_| ());
        }
        let start = (usize::from(p.alias) - 1) * self.in_alias_slot;
        let slot = self
            .in_aliases
            .get_mut(start..start + self.in_alias_slot)
            .ok_or(Error::Protocol)?;
        let topic = p.topic.as_bytes();
        let (len, rest) = slot.split_at_mut(2);
        rest.get_mut(..topic.len())
            .ok_or(Error::Protocol)?
            .copy_from_slice(topic);
        // A topic is at most 65,535 bytes, and it fits the slot.
        len.copy_from_slice(
            &u16::try_from(topic.len())
                .map_err(|_| Error::Protocol)?
                .to_be_bytes(),
        );
        Ok(())
    }

    /// v5: gives the client a topic alias table; alias `n` (1..=`table.len()`) can then be
    /// used through [`PublishProperties::topic_alias`](crate::PublishProperties::topic_alias).
    /// The table is cleared at every connect, since aliases last one connection. 8 bytes per
    /// alias.
    #[cfg(feature = "v5")]
    pub fn set_topic_aliases(&mut self, table: &'b mut [TopicAliasSlot]) {
        table.fill(TopicAliasSlot::EMPTY);
        self.aliases = table;
    }

    /// v5: the properties of the last CONNACK, PUBACK, PUBREC, PUBCOMP, SUBACK, UNSUBACK or
    /// server DISCONNECT, while it is still in the receive buffer: right after
    /// [`connect`](Self::connect) returned (also with [`Error::Refused`]), after
    /// [`poll`](Self::poll) returned its event or error ([`Error::Rejected`],
    /// [`Error::ServerDisconnect`]), until the next `poll` or `connect`. Empty otherwise, and
    /// always on a 3.1.1 connection.
    #[cfg(feature = "v5")]
    pub fn last_properties(&self) -> crate::Properties<'_> {
        // 3.1.1 packets have none (a SUBACK's return codes are not a property block).
        let last = if self.v5 { self.last } else { 0 };
        let pkt = self.rx.get(..last).unwrap_or(&[]);
        let block = match FixedHeader::parse(pkt) {
            Ok(Some(h)) => h
                .body(pkt)
                .and_then(|body| codec::control_properties(h.byte1 >> 4, body).ok()),
            _ => None,
        };
        crate::Properties::new(block.unwrap_or(&[]))
    }

    /// v5: the Reason String of the last CONNACK, acknowledgement or server DISCONNECT (see
    /// [`last_properties`](Self::last_properties)), if the server sent one. Meant for humans
    /// and logs, not for program logic (MQTT 5.0 section 3.4.2.2.2).
    #[cfg(feature = "v5")]
    pub fn reason_string(&self) -> Option<&str> {
        self.last_properties().find_map(|p| match p {
            crate::Property::Str(roost_wire::property::REASON_STRING, s) => Some(s),
            _ => None,
        })
    }

    /// `true` while the connection is usable. `false` after any fatal error: reconnect.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Marks the client disconnected and hands the transport back (to close or reuse it).
    /// Session state is kept for the next [`connect`](Self::connect).
    pub fn take_transport(&mut self) -> Option<T> {
        self.fail();
        self.io.take()
    }

    /// The session store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Number of outgoing QoS 1/2 messages not yet fully acknowledged, including stored
    /// messages a v5 server's Receive Maximum holds back after a reconnect (not sent yet on
    /// this connection; [`poll`](Self::poll) sends them as acknowledgements make room).
    pub fn inflight(&self) -> usize {
        self.out.iter().filter(|s| s.is_publish()).count()
    }

    /// When the client next needs to act (send PINGREQ or give up waiting for PINGRESP), in
    /// [`Clock`] milliseconds. [`poll`](Self::poll) sleeps until then by itself; this is for
    /// callers that want to schedule around it.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        if self.keepalive_ms == 0 || !self.connected {
            return None;
        }
        Some(self.ping_sent.unwrap_or(self.last_tx) + self.keepalive_ms)
    }

    /// Connects over `io` (an already opened TCP/TLS stream), replacing any previous transport.
    ///
    /// With `clean_session = false` and a session present on the server, unacknowledged QoS 1/2
    /// messages are resent. On the first connect after [`new`](Self::new) with
    /// `clean_session = false`, state saved in the [`SessionStore`] (e.g. in flash before a
    /// reboot) is loaded first. Not cancel safe: a cancelled connect leaves the client
    /// disconnected.
    pub async fn connect(&mut self, io: T, opts: &ConnectOptions<'_>) -> Result<ConnAck, Error> {
        self.fail();
        self.io = Some(io);
        let r = self.connect_inner(opts).await;
        match r {
            Ok(_) => self.connected = true,
            Err(_) => self.fail(),
        }
        r
    }

    /// Publishes `payload` to `topic`. Returns the packet id (0 for QoS 0).
    ///
    /// Does not wait for acknowledgements: those arrive through [`poll`](Self::poll) as
    /// [`Event::PubAck`] / [`Event::PubComp`]. A QoS 1/2 message is stored in the session
    /// store before it is sent, and resent after a reconnect until acknowledged. If this returns
    /// a transport error for a QoS 1/2 message, the message is still in the session and will be
    /// resent after reconnecting; do not publish it again.
    pub async fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
    ) -> Result<u16, Error> {
        self.flush_checked().await?;
        let pid = self.prepare_publish(
            topic,
            payload,
            qos,
            retain,
            #[cfg(feature = "v5")]
            None,
        )?;
        self.flush_checked().await?;
        Ok(pid)
    }

    /// Like [`publish`](Self::publish), with v5 message properties (expiry, content type,
    /// response topic, correlation data, user properties, topic alias). On a 3.1.1
    /// connection the properties are not sent (3.1.1 has none).
    #[cfg(feature = "v5")]
    pub async fn publish_with(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
        props: &crate::PublishProperties<'_>,
    ) -> Result<u16, Error> {
        self.flush_checked().await?;
        let pid = self.prepare_publish(topic, payload, qos, retain, Some(props))?;
        self.flush_checked().await?;
        Ok(pid)
    }

    /// Subscribes to one or more topic filters. Returns the packet id; the result arrives as
    /// [`Event::SubAck`] from [`poll`](Self::poll). The v5 options (no local, retain as
    /// published, retain handling) are in each [`Subscription`].
    pub async fn subscribe(&mut self, subs: &[Subscription<'_>]) -> Result<u16, Error> {
        #[cfg(feature = "v5")]
        return self
            .subscribe_with(subs, &crate::SubscribeProperties::default())
            .await;
        #[cfg(not(feature = "v5"))]
        self.subscribe_inner(subs).await
    }

    /// Like [`subscribe`](Self::subscribe), with v5 properties: a Subscription Identifier
    /// and user properties. On a 3.1.1 connection they are not sent.
    #[cfg(feature = "v5")]
    pub async fn subscribe_with(
        &mut self,
        subs: &[Subscription<'_>],
        props: &crate::SubscribeProperties<'_>,
    ) -> Result<u16, Error> {
        self.subscribe_inner(subs, props).await
    }

    async fn subscribe_inner(
        &mut self,
        subs: &[Subscription<'_>],
        #[cfg(feature = "v5")] props: &crate::SubscribeProperties<'_>,
    ) -> Result<u16, Error> {
        self.flush_checked().await?;
        let (i, pid) = self.alloc_slot()?;
        let n = codec::subscribe(
            self.tx,
            self.v5,
            pid,
            subs,
            #[cfg(feature = "v5")]
            props,
        )?;
        self.check_size(n)?;
        self.out[i] = Slot::Suback(pid);
        self.queue(n);
        self.flush_checked().await?;
        Ok(pid)
    }

    /// Unsubscribes from topic filters. Returns the packet id; the result arrives as
    /// [`Event::UnsubAck`] from [`poll`](Self::poll).
    pub async fn unsubscribe(&mut self, filters: &[&str]) -> Result<u16, Error> {
        self.flush_checked().await?;
        let (i, pid) = self.alloc_slot()?;
        let n = codec::unsubscribe(self.tx, self.v5, pid, filters)?;
        self.check_size(n)?;
        self.out[i] = Slot::Unsuback(pid);
        self.queue(n);
        self.flush_checked().await?;
        Ok(pid)
    }

    /// Sends DISCONNECT (the server then discards the will) and marks the client disconnected.
    /// Session state is kept. Take the transport back with
    /// [`take_transport`](Self::take_transport) to close it.
    pub async fn disconnect(&mut self) -> Result<(), Error> {
        self.flush_checked().await?;
        let n = codec::short(self.tx, DISCONNECT)?;
        self.queue(n);
        let r = self.flush_checked().await;
        self.fail();
        r
    }

    /// Waits for the next event from the server, handling acknowledgements, QoS 2 duplicate
    /// suppression and keepalive (PINGREQ while idle, [`Error::Timeout`] when PINGRESP does not
    /// come) on the way. First writes the acknowledgement of the message returned last.
    ///
    /// After a v5 reconnect it first reports, one per call, the stored messages the new
    /// server cannot take ([`Error::Rejected`] with 0x95 or 0x9B, see
    /// [`ConnAck::dropped`]), and sends the stored messages its Receive Maximum held back,
    /// in order, as acknowledgements make room.
    ///
    /// Cancel safe: dropping the future loses no data; call again to resume.
    pub async fn poll(&mut self) -> Result<Event<'_>, Error> {
        if !self.connected {
            return Err(Error::NotConnected);
        }
        match self.poll_inner().await {
            Err(e) => {
                self.fail();
                Err(e)
            }
            Ok(Err(e)) => Err(e),
            Ok(Ok(())) => self.event(),
        }
    }

    // ---- internals -------------------------------------------------------------------------

    /// Drops the connection state (not the session).
    fn fail(&mut self) {
        self.connected = false;
        self.deferred = None;
        self.tx_len = 0;
        self.tx_sent = 0;
        self.rx_len = 0;
        self.rx_done = 0;
        self.rx_skip = 0;
        self.skip_ack = None;
        self.handled = Handled::None;
        self.ping_sent = None;
    }

    /// Marks `n` encoded bytes at the start of `tx` for sending.
    fn queue(&mut self, n: usize) {
        self.tx_len = n;
        self.tx_sent = 0;
        self.last_tx = self.clock.now_ms();
    }

    /// Writes whatever is pending in `tx`. Progress is kept in `self` (cancel safe).
    async fn flush_tx(&mut self) -> Result<(), Error> {
        if self.tx_len == 0 {
            return Ok(());
        }
        let io = self.io.as_mut().ok_or(Error::NotConnected)?;
        while self.tx_sent < self.tx_len {
            let n = io.write(&self.tx[self.tx_sent..self.tx_len]).await?;
            if n == 0 {
                return Err(Error::ConnectionClosed);
            }
            self.tx_sent += n;
        }
        io.flush().await?;
        self.tx_len = 0;
        self.tx_sent = 0;
        Ok(())
    }

    async fn flush_checked(&mut self) -> Result<(), Error> {
        if !self.connected {
            return Err(Error::NotConnected);
        }
        let mut r = self.flush_tx().await;
        if r.is_ok() && self.queue_deferred()? {
            r = self.flush_tx().await;
        }
        if r.is_err() {
            self.fail();
        }
        r
    }

    /// Queues the deferred acknowledgement, if any, once `tx` is free and the message it
    /// acknowledges has been returned. Says whether it did.
    fn queue_deferred(&mut self) -> Result<bool, Error> {
        if self.tx_len != 0 || self.handled != Handled::None {
            return Ok(false);
        }
        match self.deferred.take() {
            Some((kind, pid)) => {
                self.ack(kind, pid, 0)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Reads more bytes (or discards, while skipping), racing `deadline`.
    /// Returns `Ok(true)` if the deadline passed first.
    async fn read_some(&mut self, deadline: Option<u64>) -> Result<bool, Error> {
        let io = self.io.as_mut().ok_or(Error::NotConnected)?;
        let skip = self.rx_skip > 0;
        let buf = if skip {
            let n = self.rx_skip.min(self.rx.len());
            &mut self.rx[..n]
        } else {
            &mut self.rx[self.rx_len..]
        };
        let r = match deadline {
            Some(d) => crate::select(io.read(buf), self.clock.sleep_until(d)).await,
            None => Ok(io.read(buf).await),
        };
        match r {
            Err(()) => Ok(true),
            Ok(Ok(0)) => Err(Error::ConnectionClosed),
            Ok(Ok(n)) => {
                if skip {
                    self.rx_skip -= n;
                } else {
                    self.rx_len += n;
                }
                Ok(false)
            }
            Ok(Err(e)) => Err(e.into()),
        }
    }

    /// The poll loop. Outer error: fatal. Inner error: reported, connection kept.
    async fn poll_inner(&mut self) -> Result<Result<(), Error>, Error> {
        loop {
            self.flush_tx().await?;
            match core::mem::replace(&mut self.handled, Handled::None) {
                Handled::Event => return Ok(Ok(())),
                Handled::Fail(e) => return Ok(Err(e)),
                Handled::Quiet | Handled::None => {}
            }
            if self.queue_deferred()? {
                continue;
            }
            if self.rx_done > 0 {
                crate::move_bytes(self.rx, self.rx_done, self.rx_len, 0);
                self.rx_len -= self.rx_done;
                self.rx_done = 0;
            }
            #[cfg(feature = "v5")]
            {
                self.last = 0;
                if let Some(e) = self.take_dropped() {
                    return Ok(Err(e));
                }
                if self.resend_next()? {
                    continue;
                }
            }
            // Keepalive.
            if self.keepalive_ms > 0 {
                let now = self.clock.now_ms();
                match self.ping_sent {
                    Some(t) if now >= t + self.keepalive_ms => return Err(Error::Timeout),
                    None if now >= self.last_tx + self.keepalive_ms => {
                        let n = codec::short(self.tx, PINGREQ)?;
                        self.queue(n);
                        self.ping_sent = Some(now);
                        continue;
                    }
                    _ => {}
                }
            }
            if self.rx_skip == 0 {
                let header = FixedHeader::parse(&self.rx[..self.rx_len]).map_err(protocol)?;
                if let Some(header) = header {
                    let (h, total) = (header.header_len, header.packet_len());
                    if total <= self.rx_len {
                        self.handle(h, total)?;
                        continue;
                    }
                    if total > self.rx.len() && self.rx_len == self.rx.len() {
                        self.start_skip(h, total)?;
                        continue;
                    }
                }
            }
            let deadline = self.next_deadline_ms();
            self.read_some(deadline).await?;
            if self.skip_len > 0 && self.rx_skip == 0 {
                self.finish_skip()?;
            }
        }
    }

    /// An incoming packet does not fit `rx`: remember its ack, then discard the rest.
    fn start_skip(&mut self, h: usize, total: usize) -> Result<(), Error> {
        let first = self.rx[0];
        if first >> 4 != PUBLISH {
            return Err(Error::Protocol);
        }
        roost_wire::check_flags(first).map_err(protocol)?;
        let qos = (first >> 1) & 3;
        let mut r = Reader::new(&self.rx[h..]);
        r.binary().map_err(protocol)?;
        self.skip_ack = if qos > 0 {
            Some((qos, r.packet_id().map_err(protocol)?))
        } else {
            None
        };
        self.skip_len = total;
        self.rx_skip = total - self.rx_len;
        self.rx_len = 0;
        Ok(())
    }

    fn finish_skip(&mut self) -> Result<(), Error> {
        let len = self.skip_len;
        self.skip_len = 0;
        if let Some((qos, pid)) = self.skip_ack.take() {
            self.on_publish(qos, pid)?;
        }
        self.handled = Handled::Fail(Error::MessageTooLarge { len });
        Ok(())
    }

    /// Queues an acknowledgement packet.
    fn ack(&mut self, kind: u8, pid: u16, reason: u8) -> Result<(), Error> {
        let reason = if self.v5 { reason } else { 0 };
        let n = codec::ack(self.tx, kind, pid, reason)?;
        self.queue(n);
        Ok(())
    }

    fn find_out(&self, slot: Slot) -> Option<usize> {
        self.out.iter().position(|s| *s == slot)
    }

    /// Handles the complete packet `rx[..total]`; sets `rx_done` and `handled`.
    fn handle(&mut self, h: usize, total: usize) -> Result<(), Error> {
        let pk = codec::decode(self.rx[0], &self.rx[h..total], self.v5).map_err(protocol)?;
        self.rx_done = total;
        #[cfg(feature = "v5")]
        if !matches!(pk, Inbound::Publish { .. }) {
            self.last = total;
        }
        let handled = match pk {
            Inbound::Publish { qos, pid } => {
                #[cfg(feature = "v5")]
                self.apply_inbound_alias(h, total)?;
                self.on_publish(qos, pid)?
            }
            Inbound::Ack {
                kind: PUBACK,
                pid,
                reason,
            } => match self.find_out(Slot::Puback(pid)) {
                Some(i) => {
                    self.out[i] = Slot::Free;
                    self.store.remove(Record::Publish(pid));
                    if reason >= 0x80 {
                        Handled::Fail(Error::Rejected { pid, reason })
                    } else {
                        Handled::Event
                    }
                }
                None => Handled::Quiet,
            },
            #[cfg(feature = "qos2")]
            Inbound::Ack {
                kind: PUBREC,
                pid,
                reason,
            } => {
                if let Some(i) = self.find_out(Slot::Pubrec(pid)) {
                    if reason >= 0x80 {
                        self.out[i] = Slot::Free;
                        self.store.remove(Record::Publish(pid));
                        Handled::Fail(Error::Rejected { pid, reason })
                    } else {
                        self.store
                            .save(Record::Release(pid), &[])
                            .map_err(|_| Error::StoreFull)?;
                        self.out[i] = Slot::Pubcomp(pid);
                        self.ack(PUBREL, pid, 0)?;
                        Handled::Event
                    }
                } else {
                    // A repeated PUBREC (or an unknown id): answer so the server can finish.
                    let known = self.find_out(Slot::Pubcomp(pid)).is_some();
                    self.ack(PUBREL, pid, if known { 0 } else { 0x92 })?;
                    Handled::Quiet
                }
            }
            #[cfg(feature = "qos2")]
            Inbound::Ack {
                kind: PUBCOMP, pid, ..
            } => match self.find_out(Slot::Pubcomp(pid)) {
                Some(i) => {
                    self.out[i] = Slot::Free;
                    self.store.remove(Record::Release(pid));
                    Handled::Event
                }
                None => Handled::Quiet,
            },
            #[cfg(feature = "qos2")]
            Inbound::Ack {
                kind: PUBREL, pid, ..
            } => {
                let reason = match self.inb.iter().position(|&p| p == pid) {
                    Some(i) => {
                        self.inb[i] = 0;
                        self.store.remove(Record::Received(pid));
                        0
                    }
                    None => 0x92,
                };
                self.ack(PUBCOMP, pid, reason)?;
                Handled::Quiet
            }
            Inbound::Ack { .. } => return Err(Error::Protocol),
            Inbound::SubAck { pid } => self.take_slot(Slot::Suback(pid)),
            Inbound::UnsubAck { pid } => self.take_slot(Slot::Unsuback(pid)),
            Inbound::PingResp => {
                self.ping_sent = None;
                Handled::Quiet
            }
            Inbound::Disconnect { reason } => return Err(Error::ServerDisconnect(reason)),
            Inbound::ConnAck { .. } => return Err(Error::Protocol),
        };
        self.handled = handled;
        Ok(())
    }

    fn take_slot(&mut self, slot: Slot) -> Handled {
        match self.find_out(slot) {
            Some(i) => {
                self.out[i] = Slot::Free;
                Handled::Event
            }
            None => Handled::Quiet,
        }
    }

    /// Handles an incoming PUBLISH: says whether to deliver it, and leaves its PUBACK /
    /// PUBREC in `deferred`, to go out after delivery.
    fn on_publish(&mut self, qos: u8, pid: u16) -> Result<Handled, Error> {
        match qos {
            0 => Ok(Handled::Event),
            1 => {
                self.deferred = Some((PUBACK, pid));
                Ok(Handled::Event)
            }
            #[cfg(feature = "qos2")]
            2 => {
                if self.inb.contains(&pid) {
                    self.ack(PUBREC, pid, 0)?;
                    return Ok(Handled::Quiet);
                }
                let i = self
                    .inb
                    .iter()
                    .position(|&p| p == 0)
                    .ok_or(Error::InflightFull)?;
                self.store
                    .save(Record::Received(pid), &[])
                    .map_err(|_| Error::StoreFull)?;
                self.inb[i] = pid;
                self.deferred = Some((PUBREC, pid));
                Ok(Handled::Event)
            }
            _ => Err(Error::Protocol),
        }
    }

    /// Decodes the event for the packet at `rx[..rx_done]` (already validated).
    fn event(&self) -> Result<Event<'_>, Error> {
        let pkt = &self.rx[..self.rx_done];
        let header = FixedHeader::parse(pkt).map_err(protocol)?;
        let (first, body) = match header {
            Some(h) => (h.byte1, h.body(pkt).ok_or(Error::Protocol)?),
            None => return Err(Error::Protocol),
        };
        let kind = first >> 4;
        if kind == PUBLISH {
            let p = codec::decode_publish(first, body, self.v5).map_err(protocol)?;
            #[cfg(feature = "v5")]
            let topic = if p.topic.is_empty() {
                self.inbound_alias(p.alias)?
            } else {
                p.topic
            };
            #[cfg(not(feature = "v5"))]
            let topic = p.topic;
            return Ok(Event::Message(Message {
                topic,
                payload: p.payload,
                qos: p.qos,
                retain: first & roost_wire::flags::RETAIN != 0,
                dup: first & roost_wire::flags::DUP != 0,
                pid: p.pid,
                #[cfg(feature = "v5")]
                raw_properties: p.props,
            }));
        }
        let pid = Reader::new(body).u16().map_err(protocol)?;
        Ok(match kind {
            PUBACK => Event::PubAck(pid),
            #[cfg(feature = "qos2")]
            PUBREC => Event::PubRec(pid),
            #[cfg(feature = "qos2")]
            PUBCOMP => Event::PubComp(pid),
            SUBACK => Event::SubAck {
                pid,
                codes: codec::ack_codes(body, self.v5).map_err(protocol)?,
            },
            UNSUBACK => Event::UnsubAck { pid },
            _ => return Err(Error::Protocol),
        })
    }

    /// A free slot and a packet id not in flight.
    fn alloc_slot(&mut self) -> Result<(usize, u16), Error> {
        let i = self
            .out
            .iter()
            .position(|s| *s == Slot::Free)
            .ok_or(Error::InflightFull)?;
        loop {
            self.next_pid = self.next_pid.wrapping_add(1);
            let pid = self.next_pid;
            if pid != 0 && !self.out.iter().any(|s| s.pid() == Some(pid)) {
                return Ok((i, pid));
            }
        }
    }

    fn check_size(&self, n: usize) -> Result<(), Error> {
        if n as u64 > u64::from(self.server_max_packet) {
            return Err(Error::PacketTooLarge);
        }
        Ok(())
    }

    fn prepare_publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
        #[cfg(feature = "v5")] props: Option<&crate::PublishProperties<'_>>,
    ) -> Result<u16, Error> {
        if qos as u8 > self.max_qos {
            return Err(Error::InvalidArgument);
        }
        let mut slot = None;
        let mut pid = 0;
        if qos != QoS::AtMostOnce {
            if self.inflight() >= usize::from(self.server_recv_max) {
                return Err(Error::InflightFull);
            }
            let (i, p) = self.alloc_slot()?;
            slot = Some(i);
            pid = p;
        }
        // Topic alias: which one, and whether the server knows it for this topic already.
        #[cfg(feature = "v5")]
        let (extra, alias) = match props {
            Some(p) if self.v5 => {
                let alias = self.pick_alias(topic, p.topic_alias);
                let extra = codec::PublishExtra {
                    props: p,
                    alias: alias.map_or(0, |(a, _)| a),
                };
                (Some(extra), alias)
            }
            _ => (None, None),
        };
        // The full form (topic, no alias): what is stored and resent on a later connection,
        // and what goes out when no alias applies.
        let v5 = self.v5;
        let full = |tx: &mut [u8]| {
            codec::publish(
                tx,
                v5,
                topic,
                payload,
                qos,
                retain,
                pid,
                #[cfg(feature = "v5")]
                extra.map(|e| codec::PublishExtra { alias: 0, ..e }),
            )
        };
        #[cfg(feature = "v5")]
        if let (Some(extra), Some((a, known))) = (extra, alias) {
            // The form that goes out: topic and alias, or an empty topic for a known alias.
            // Encoded (and checked) first, so nothing is stored for a packet that cannot go.
            let short = if known { "" } else { topic };
            let aliased = |tx: &mut [u8]| {
                codec::publish(tx, v5, short, payload, qos, retain, pid, Some(extra))
            };
            let mut n = aliased(self.tx)?;
            self.check_size(n)?;
            if let Some(i) = slot {
                let m = full(self.tx)?;
                self.check_size(m)?;
                self.save_publish(i, pid, qos, m)?;
                n = aliased(self.tx)?;
            }
            if let Some(entry) = self.aliases.get_mut(usize::from(a) - 1) {
                *entry = TopicAliasSlot::of(topic);
            }
            self.queue(n);
            return Ok(pid);
        }
        let n = full(self.tx)?;
        self.check_size(n)?;
        if let Some(i) = slot {
            self.save_publish(i, pid, qos, n)?;
        }
        self.queue(n);
        Ok(pid)
    }

    /// Stores the QoS 1/2 PUBLISH in `tx[..n]` and marks slot `i` as waiting for its ack.
    fn save_publish(&mut self, i: usize, pid: u16, qos: QoS, n: usize) -> Result<(), Error> {
        self.store
            .save(Record::Publish(pid), &self.tx[..n])
            .map_err(|_| Error::StoreFull)?;
        self.out[i] = match qos {
            #[cfg(feature = "qos2")]
            QoS::ExactlyOnce => Slot::Pubrec(pid),
            _ => Slot::Puback(pid),
        };
        Ok(())
    }

    /// The topic alias to send for `topic`, if `want` is usable: within the table and the
    /// server's Topic Alias Maximum (MQTT-3.3.2-8). `.1` says whether the server already has
    /// this alias for this topic on this connection.
    #[cfg(feature = "v5")]
    fn pick_alias(&self, topic: &str, want: Option<u16>) -> Option<(u16, bool)> {
        let a = want?;
        if a == 0 || a > self.server_alias_max || topic.is_empty() {
            return None;
        }
        let slot = self.aliases.get(usize::from(a) - 1)?;
        Some((a, *slot == TopicAliasSlot::of(topic)))
    }

    /// v5: the reason the server of this connection cannot take the stored PUBLISH in
    /// `tx[..n]`: larger than its Maximum Packet Size (0x95, MQTT-3.2.2-15) or above its
    /// Maximum QoS (0x9B, MQTT-3.2.2-11).
    #[cfg(feature = "v5")]
    fn unacceptable(&self, n: usize) -> Option<u8> {
        if n as u64 > u64::from(self.server_max_packet) {
            Some(0x95)
        } else if (self.tx[0] >> 1) & 3 > self.max_qos {
            Some(0x9B)
        } else {
            None
        }
    }

    /// v5: the slot of the stored PUBLISH `pid` becomes a dropped message to report.
    #[cfg(feature = "v5")]
    fn mark_dropped(&mut self, pid: u16, reason: u8) {
        if let Some(slot) = self
            .out
            .iter_mut()
            .find(|s| s.awaits_first_ack() && s.pid() == Some(pid))
        {
            *slot = Slot::Dropped(pid, reason);
        }
    }

    /// v5: the first dropped message not reported yet, as the error `poll` returns for it.
    #[cfg(feature = "v5")]
    fn take_dropped(&mut self) -> Option<Error> {
        for slot in self.out.iter_mut() {
            if let Slot::Dropped(pid, reason) = *slot {
                *slot = Slot::Free;
                return Some(Error::Rejected { pid, reason });
            }
        }
        None
    }

    /// v5: queues the next stored message held back at connect by the server's Receive
    /// Maximum, once `tx` is free and the server has room (MQTT-4.9.0-2). Says whether it did.
    #[cfg(feature = "v5")]
    fn resend_next(&mut self) -> Result<bool, Error> {
        if self.unsent == 0 || self.tx_len != 0 {
            return Ok(false);
        }
        // The held-back messages are the last `unsent` stored PUBLISH records.
        let stored = self.out.iter().filter(|s| s.awaits_first_ack()).count();
        self.unsent = self.unsent.min(stored);
        let sent = self.inflight() - self.unsent;
        if self.unsent == 0 || sent >= usize::from(self.server_recv_max) {
            return Ok(false);
        }
        let mut skip = stored - self.unsent;
        let mut index = 0;
        while let Some((rec, n)) = self
            .store
            .load(index, self.tx)
            .map_err(|_| Error::StoreFull)?
        {
            index += 1;
            if !matches!(rec, Record::Publish(_)) {
                continue;
            }
            if skip > 0 {
                skip -= 1;
                continue;
            }
            self.unsent -= 1;
            if n == 0 {
                return Ok(false);
            }
            self.tx[0] |= roost_wire::flags::DUP;
            self.queue(n);
            return Ok(true);
        }
        self.unsent = 0;
        Ok(false)
    }

    fn clear_session(&mut self) {
        self.out = [Slot::Free; OUT];
        self.inb = [0; IN];
        self.store.clear();
    }

    /// Rebuilds the in-flight tables from the store (first persistent connect).
    fn restore(&mut self) -> Result<(), Error> {
        self.out = [Slot::Free; OUT];
        self.inb = [0; IN];
        let mut index = 0;
        while let Some((rec, n)) = self
            .store
            .load(index, self.tx)
            .map_err(|_| Error::StoreFull)?
        {
            index += 1;
            let pid = rec.pid();
            let slot = match rec {
                Record::Received(_) => {
                    let i = self
                        .inb
                        .iter()
                        .position(|&p| p == 0)
                        .ok_or(Error::InflightFull)?;
                    self.inb[i] = pid;
                    continue;
                }
                #[cfg(feature = "qos2")]
                Record::Release(_) => Slot::Pubcomp(pid),
                #[cfg(feature = "qos2")]
                Record::Publish(_) if n > 0 && (self.tx[0] >> 1) & 3 == 2 => Slot::Pubrec(pid),
                Record::Publish(_) => Slot::Puback(pid),
                #[cfg(not(feature = "qos2"))]
                Record::Release(_) => continue,
            };
            let _ = n;
            let i = self
                .out
                .iter()
                .position(|s| *s == Slot::Free)
                .ok_or(Error::InflightFull)?;
            self.out[i] = slot;
            self.next_pid = pid;
        }
        Ok(())
    }

    async fn connect_inner(&mut self, opts: &ConnectOptions<'_>) -> Result<ConnAck, Error> {
        if self.tx.len() < MIN_BUF || self.rx.len() < MIN_BUF {
            return Err(Error::BufferTooSmall);
        }
        self.v5 = match opts.protocol {
            Protocol::V311 => false,
            #[cfg(feature = "v5")]
            Protocol::V5 => true,
        };
        // Pending (un)subscriptions belong to the old connection.
        for s in self.out.iter_mut() {
            if matches!(s, Slot::Suback(_) | Slot::Unsuback(_)) {
                *s = Slot::Free;
            }
        }
        if opts.clean_session {
            self.clear_session();
        } else if !self.restored {
            self.restore()?;
        }
        self.restored = true;
        self.keepalive_ms = u64::from(opts.keep_alive_secs) * 1000;
        #[cfg(feature = "v5")]
        {
            self.unsent = 0;
        }
        self.server_max_packet = u32::MAX;
        self.server_recv_max = u16::MAX;
        self.max_qos = MAX_QOS;
        #[cfg(feature = "v5")]
        {
            self.server_alias_max = 0;
            self.aliases.fill(TopicAliasSlot::EMPTY);
            self.clear_inbound_aliases();
            self.last = 0;
        }

        let fields = codec::ConnectFields {
            v5: self.v5,
            client_id: opts.client_id,
            keep_alive: opts.keep_alive_secs,
            clean: opts.clean_session,
            will: opts.will.as_ref(),
            username: opts.username,
            password: opts.password,
            #[cfg(feature = "v5")]
            session_expiry: opts.session_expiry_secs,
            #[cfg(feature = "v5")]
            receive_max: match opts.receive_maximum {
                0 => IN as u16,
                r => r.min(IN as u16),
            },
            #[cfg(feature = "v5")]
            max_packet: match u32::try_from(self.rx.len()).unwrap_or(u32::MAX) {
                rx if opts.maximum_packet_size == 0 => rx,
                rx => opts.maximum_packet_size.min(rx),
            },
            #[cfg(feature = "v5")]
            user_properties: opts.user_properties,
            #[cfg(feature = "v5")]
            topic_alias_max: self.in_alias_max,
        };
        let n = codec::connect(self.tx, &fields)?;
        self.queue(n);
        self.flush_tx().await?;

        let deadline = self.clock.now_ms() + u64::from(opts.connect_timeout_ms);
        let pk = loop {
            let header = FixedHeader::parse(&self.rx[..self.rx_len]).map_err(protocol)?;
            if let Some(header) = header {
                let (h, total) = (header.header_len, header.packet_len());
                if total > self.rx.len() {
                    return Err(Error::Protocol);
                }
                if total <= self.rx_len {
                    let pk =
                        codec::decode(self.rx[0], &self.rx[h..total], self.v5).map_err(protocol)?;
                    // The next poll drops it; anything after it stays buffered.
                    self.rx_done = total;
                    #[cfg(feature = "v5")]
                    {
                        self.last = total;
                    }
                    break pk;
                }
            }
            if self.read_some(Some(deadline)).await? {
                return Err(Error::Timeout);
            }
        };
        let Inbound::ConnAck {
            session_present,
            code,
            #[cfg(feature = "v5")]
            limits,
        } = pk
        else {
            return Err(Error::Protocol);
        };
        if code != 0 {
            return Err(Error::Refused(code));
        }
        #[cfg(feature = "v5")]
        if self.v5 {
            self.server_max_packet = limits.max_packet;
            self.server_recv_max = limits.receive_max;
            self.max_qos = limits.max_qos.min(MAX_QOS);
            self.server_alias_max = limits.topic_alias_max;
            if let Some(ka) = limits.keep_alive {
                self.keepalive_ms = u64::from(ka) * 1000;
            }
        }
        let mut ack = ConnAck {
            session_present,
            resent: 0,
            discarded: false,
            dropped: 0,
        };
        if !session_present {
            ack.discarded =
                self.out.iter().any(|s| *s != Slot::Free) || self.inb.iter().any(|&p| p != 0);
            self.clear_session();
            return Ok(ack);
        }
        // Resend in the original order. With v5, only what the new server accepts: a stored
        // message above its Maximum Packet Size or Maximum QoS is dropped and reported, and
        // no more PUBLISH packets than its Receive Maximum go out unacknowledged (the rest
        // follow from `poll`).
        #[cfg(feature = "v5")]
        let mut outstanding = 0usize;
        let mut index = 0;
        while let Some((rec, n)) = self
            .store
            .load(index, self.tx)
            .map_err(|_| Error::StoreFull)?
        {
            index += 1;
            match rec {
                Record::Publish(pid) if n > 0 => {
                    #[cfg(feature = "v5")]
                    if let Some(reason) = self.unacceptable(n) {
                        // Removed: the next record moves to this index.
                        index -= 1;
                        self.store.remove(rec);
                        self.mark_dropped(pid, reason);
                        ack.dropped += 1;
                        continue;
                    }
                    #[cfg(feature = "v5")]
                    if outstanding >= usize::from(self.server_recv_max) {
                        self.unsent += 1;
                        continue;
                    }
                    let _ = pid;
                    self.tx[0] |= 0x08;
                    self.queue(n);
                }
                #[cfg(feature = "qos2")]
                Record::Release(pid) => self.ack(PUBREL, pid, 0)?,
                _ => continue,
            }
            #[cfg(feature = "v5")]
            {
                outstanding += 1;
            }
            ack.resent += 1;
            self.flush_tx().await?;
        }
        Ok(ack)
    }
}
