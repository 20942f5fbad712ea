//! The client state machine.

use embedded_io_async::{Read, Write};

use roost_wire::{FixedHeader, Reader};

use crate::codec::{
    self, DISCONNECT, Inbound, MAX_QOS, PINGREQ, PUBACK, PUBLISH, SUBACK, UNSUBACK, protocol,
};
#[cfg(feature = "qos2")]
use crate::codec::{PUBCOMP, PUBREC, PUBREL};
use crate::{Clock, ConnectOptions, Error, Protocol, QoS, Record, SessionStore, Subscription};

/// Maximum number of outgoing packets awaiting acknowledgement (QoS 1/2 publishes plus
/// pending SUBSCRIBE/UNSUBSCRIBE).
pub const MAX_INFLIGHT: usize = 16;
/// Maximum number of incoming QoS 2 messages awaiting PUBREL (also sent as the v5 receive
/// maximum).
pub const MAX_INBOUND: usize = 16;
/// Smallest accepted transmit / receive buffer.
const MIN_BUF: usize = 16;

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
}

impl Slot {
    fn pid(self) -> Option<u16> {
        match self {
            Slot::Free => None,
            Slot::Puback(p) | Slot::Suback(p) | Slot::Unsuback(p) => Some(p),
            #[cfg(feature = "qos2")]
            Slot::Pubrec(p) | Slot::Pubcomp(p) => Some(p),
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
    /// Handled; return it as an event once the acknowledgement is written.
    Event,
    /// A new QoS 2 message, already recorded as received: return it once PUBREC is written.
    /// If the connection fails first, the record is undone so the server's resend of the
    /// PUBLISH is delivered instead of being suppressed as a duplicate.
    #[cfg(feature = "qos2")]
    Deliver2(u16),
    /// Handled; nothing to report.
    Quiet,
    /// Handled; report this (non-fatal) error.
    Fail(Error),
}

/// Result of a successful [`Client::connect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnAck {
    /// The server resumed an existing session.
    pub session_present: bool,
    /// Number of PUBLISH (with DUP) and PUBREL packets resent from the session.
    pub resent: usize,
    /// The client had QoS 1/2 state but the server had no session, so it was discarded.
    pub discarded: bool,
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
    /// Iterates over the v5 properties (content type, response topic, user properties, ...).
    pub fn properties(&self) -> crate::Properties<'a> {
        crate::Properties::new(self.raw_properties)
    }
}

/// Something [`Client::poll`] received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// An application message (already acknowledged; QoS 2 duplicates never appear).
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
pub struct Client<'b, T, C, S> {
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
    connected: bool,
    v5: bool,
    keepalive_ms: u64,
    last_tx: u64,
    ping_sent: Option<u64>,
    next_pid: u16,
    out: [Slot; MAX_INFLIGHT],
    inb: [u16; MAX_INBOUND],
    server_max_packet: u32,
    server_recv_max: u16,
    /// The highest QoS to publish with: the server's maximum, capped at what this build handles.
    max_qos: u8,
    restored: bool,
}

impl<'b, T, C, S> Client<'b, T, C, S>
where
    T: Read + Write,
    C: Clock,
    S: SessionStore,
{
    /// Creates a disconnected client. Call [`connect`](Self::connect) next.
    pub fn new(clock: C, store: S, tx: &'b mut [u8], rx: &'b mut [u8]) -> Self {
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
            connected: false,
            v5: false,
            keepalive_ms: 0,
            last_tx: 0,
            ping_sent: None,
            next_pid: 0,
            out: [Slot::Free; MAX_INFLIGHT],
            inb: [0; MAX_INBOUND],
            server_max_packet: u32::MAX,
            server_recv_max: u16::MAX,
            max_qos: MAX_QOS,
            restored: false,
        }
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

    /// Number of outgoing QoS 1/2 messages not yet fully acknowledged.
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
        let pid = self.prepare_publish(topic, payload, qos, retain)?;
        self.flush_checked().await?;
        Ok(pid)
    }

    /// Subscribes to one or more topic filters. Returns the packet id; the result arrives as
    /// [`Event::SubAck`] from [`poll`](Self::poll).
    pub async fn subscribe(&mut self, subs: &[Subscription<'_>]) -> Result<u16, Error> {
        self.flush_checked().await?;
        let (i, pid) = self.alloc_slot()?;
        let n = codec::subscribe(self.tx, self.v5, pid, subs)?;
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
    /// come) on the way.
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
        #[cfg(feature = "qos2")]
        if let Handled::Deliver2(pid) = self.handled {
            if let Some(i) = self.inb.iter().position(|&p| p == pid) {
                self.inb[i] = 0;
            }
            self.store.remove(Record::Received(pid));
        }
        self.connected = false;
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
        let r = self.flush_tx().await;
        if r.is_err() {
            self.fail();
        }
        r
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
                #[cfg(feature = "qos2")]
                Handled::Deliver2(_) => return Ok(Ok(())),
                Handled::Fail(e) => return Ok(Err(e)),
                Handled::Quiet | Handled::None => {}
            }
            if self.rx_done > 0 {
                crate::move_bytes(self.rx, self.rx_done, self.rx_len, 0);
                self.rx_len -= self.rx_done;
                self.rx_done = 0;
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
        let handled = match pk {
            Inbound::Publish { qos, pid } => self.on_publish(qos, pid)?,
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

    /// Acknowledges an incoming PUBLISH; says whether to deliver it.
    fn on_publish(&mut self, qos: u8, pid: u16) -> Result<Handled, Error> {
        match qos {
            0 => Ok(Handled::Event),
            1 => {
                self.ack(PUBACK, pid, 0)?;
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
                self.ack(PUBREC, pid, 0)?;
                Ok(Handled::Deliver2(pid))
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
            return Ok(Event::Message(Message {
                topic: p.topic,
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
        let n = codec::publish(self.tx, self.v5, topic, payload, qos, retain, pid)?;
        self.check_size(n)?;
        if let Some(i) = slot {
            self.store
                .save(Record::Publish(pid), &self.tx[..n])
                .map_err(|_| Error::StoreFull)?;
            self.out[i] = match qos {
                #[cfg(feature = "qos2")]
                QoS::ExactlyOnce => Slot::Pubrec(pid),
                _ => Slot::Puback(pid),
            };
        }
        self.queue(n);
        Ok(pid)
    }

    fn clear_session(&mut self) {
        self.out = [Slot::Free; MAX_INFLIGHT];
        self.inb = [0; MAX_INBOUND];
        self.store.clear();
    }

    /// Rebuilds the in-flight tables from the store (first persistent connect).
    fn restore(&mut self) -> Result<(), Error> {
        self.out = [Slot::Free; MAX_INFLIGHT];
        self.inb = [0; MAX_INBOUND];
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
        self.server_max_packet = u32::MAX;
        self.server_recv_max = u16::MAX;
        self.max_qos = MAX_QOS;

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
            receive_max: MAX_INBOUND as u16,
            #[cfg(feature = "v5")]
            max_packet: u32::try_from(self.rx.len()).unwrap_or(u32::MAX),
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
            if let Some(ka) = limits.keep_alive {
                self.keepalive_ms = u64::from(ka) * 1000;
            }
        }
        let mut ack = ConnAck {
            session_present,
            resent: 0,
            discarded: false,
        };
        if !session_present {
            ack.discarded =
                self.out.iter().any(|s| *s != Slot::Free) || self.inb.iter().any(|&p| p != 0);
            self.clear_session();
            return Ok(ack);
        }
        // Resend in the original order.
        let mut index = 0;
        while let Some((rec, n)) = self
            .store
            .load(index, self.tx)
            .map_err(|_| Error::StoreFull)?
        {
            index += 1;
            match rec {
                Record::Publish(_) if n > 0 => {
                    self.tx[0] |= 0x08;
                    self.queue(n);
                }
                #[cfg(feature = "qos2")]
                Record::Release(pid) => self.ack(PUBREL, pid, 0)?,
                _ => continue,
            }
            ack.resent += 1;
            self.flush_tx().await?;
        }
        Ok(ack)
    }
}
