//! One task per client connection: read and decode every complete packet, hand each to its
//! handler (one file per packet type), move queued deliveries into one write buffer, and write
//! it with one call.

mod ack;
mod connect;
mod disconnect;
mod outgoing;
mod publish;
mod subscribe;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, sleep_until, timeout};
use tracing::debug;

use crate::auth::{Access, ClientAcl};
use crate::broker::{Broker, ConnLink, KickReason, Metrics, Pending, SessionHandle};
use crate::codec::{DecodeError, Decoder, Packet, ReasonCode, Version, Will};
use crate::config::QueueFullPolicy;
use crate::session::Transmit;

/// Bytes of deliveries gathered into the write buffer before it is written.
const WRITE_BUDGET: usize = 256 * 1024;
/// Smallest read reservation: an idle connection holds little more than this.
const MIN_READ: usize = 512;
/// Largest read reservation, reached when reads keep filling the buffer.
const MAX_READ: usize = 64 * 1024;
/// Time allowed for the last packets (e.g. a v5 DISCONNECT) when a connection closes.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// While a PUBLISH is paused, at most this many packets are read and held behind it...
const MAX_HELD: usize = 256;
/// ...taking at most about this much memory; then reading stops until the pause ends.
const MAX_HELD_BYTES: usize = 1024 * 1024;
/// After the broker closes a connection, how long it reads and discards what the client still
/// sends, so that the last packets it wrote are not destroyed by a reset...
const DRAIN_TIME: Duration = Duration::from_secs(1);
/// ...and how many bytes at most.
const DRAIN_BYTES: usize = 1024 * 1024;
/// A paused PUBLISH is tried again at least this often, whatever woke or did not wake it.
const PAUSE_RETRY: Duration = Duration::from_secs(1);

/// Why a connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// The client sent DISCONNECT; `will` is true for MQTT 5.0 reason 0x04.
    ClientDisconnect {
        /// Publish the will anyway (reason 0x04).
        will: bool,
    },
    /// The peer closed the socket or it failed.
    Io,
    /// The CONNECT was refused with a CONNACK already written.
    Refused,
    /// A malformed packet or a protocol error (MQTT 5.0 reason code).
    Violation {
        /// Reason code for the v5 DISCONNECT.
        reason: ReasonCode,
        /// What went wrong, for the log.
        why: &'static str,
    },
    /// Nothing received within 1.5 times the keep alive (MQTT-3.1.2-24).
    KeepAlive,
    /// Closed from outside: takeover or shutdown.
    Kicked(KickReason),
    /// The store could not commit: nothing of the batch was acknowledged (v5: 0x80).
    StorageFailure,
    /// A paused 3.1.1 connection could not read the acknowledgements its own queue waits for.
    PausedWithAcksUnread,
}

impl Close {
    /// True if the broker, not the client, ends the connection while the client may still
    /// be sending (at shutdown the process is about to close every socket anyway).
    fn server_initiated(self) -> bool {
        !matches!(
            self,
            Close::ClientDisconnect { .. } | Close::Io | Close::Kicked(KickReason::Shutdown)
        )
    }

    /// The v5 DISCONNECT reason to send, if any, and whether the will is published.
    fn outcome(self) -> (Option<ReasonCode>, bool) {
        match self {
            Close::ClientDisconnect { will } => (None, will),
            Close::Io => (None, true),
            Close::Refused => (None, false),
            Close::Violation { reason, .. } => (Some(reason), true),
            Close::KeepAlive => (Some(ReasonCode::KEEP_ALIVE_TIMEOUT), true),
            Close::Kicked(KickReason::TakenOver) => (Some(ReasonCode::SESSION_TAKEN_OVER), true),
            Close::Kicked(KickReason::Shutdown) => (Some(ReasonCode::SERVER_SHUTTING_DOWN), false),
            Close::StorageFailure => (Some(ReasonCode::UNSPECIFIED_ERROR), true),
            Close::PausedWithAcksUnread => (None, true),
        }
    }

    fn from_decode(e: &DecodeError) -> Close {
        let why = match e {
            DecodeError::TooLarge { .. } => "packet too large",
            DecodeError::TopicNameInvalid => "invalid topic name",
            DecodeError::UnsupportedProtocol { .. } => "unexpected CONNECT",
            DecodeError::Protocol(why) | DecodeError::Malformed(why) => why,
        };
        Close::Violation {
            reason: e.reason_code(),
            why,
        }
    }
}

/// About the memory a held (decoded) packet takes, counted against the held bound.
fn held_size(packet: &Packet) -> usize {
    const PACKET: usize = 128;
    const STRING: usize = 64;
    PACKET
        + match packet {
            Packet::Publish(p) => p.payload.len() + p.topic.len() + STRING,
            Packet::Subscribe(s) => s.filters.iter().map(|f| f.filter.len() + STRING).sum(),
            Packet::Unsubscribe(u) => u.filters.iter().map(|f| f.len() + STRING).sum(),
            _ => 0,
        }
}

/// The session side of a connection once CONNECT was accepted.
#[derive(Debug)]
struct Attached {
    session: Arc<SessionHandle>,
    version: Version,
    will: Option<Will>,
    /// The client's Maximum Packet Size (MQTT 5.0).
    max_packet_out: Option<u32>,
    /// Session expiry requested in CONNECT (a DISCONNECT may not raise it from 0).
    expiry_at_connect: u32,
    keep_alive: u16,
    /// The authenticated username (ACLs use it).
    username: Option<String>,
    /// ACL rules, `None` without an ACL file.
    acl: Option<Arc<ClientAcl>>,
    /// Access-control generation the rules were resolved at (a reload bumps it).
    acl_generation: u64,
}

/// What a TLS listener learned from the client certificate, for `use_identity_as_username`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertIdentity {
    /// The listener does not use certificate identities.
    NotUsed,
    /// The verified certificate's Common Name.
    Name(String),
    /// The listener needs one and the certificate has no Common Name.
    Missing,
}

/// A client connection over any byte stream (TCP now; TLS and WebSocket share it).
pub struct Connection<S> {
    broker: Arc<Broker>,
    stream: S,
    peer: SocketAddr,
    rbuf: BytesMut,
    wbuf: BytesMut,
    decoder: Decoder,
    link: ConnLink,
    state: Option<Attached>,
    /// How much to reserve before a read: grows while reads fill the buffer, shrinks when
    /// traffic stops, so idle connections hold little memory.
    read_size: usize,
    /// Scratch list of packets taken from the session under its lock.
    transmits: Vec<Transmit>,
    /// The write budget ran out with deliveries still queued.
    pending_drain: bool,
    /// Durable changes of the packets handled since the last write.
    pending: Pending,
    /// When the keep alive runs out (1.5 x keep alive after the last packet received).
    deadline: Option<Instant>,
    /// A write was cut off mid-packet: nothing more may be written.
    torn: bool,
    /// Certificate identity from the listener.
    identity: CertIdentity,
    /// What a full queue does to this connection's PUBLISH packets.
    queue_full: QueueFullPolicy,
    /// A PUBLISH paused by a full queue (3.1.1 back-pressure).
    stall: Option<publish::Stall>,
    /// Packets read while paused that must wait for the paused PUBLISH, in order.
    held: VecDeque<Packet>,
    /// About the memory `held` takes (see `held_size`).
    held_bytes: usize,
}

/// A byte stream a connection runs over.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {
    /// Resolves when a read may make progress, so that an idle connection need not hold a read
    /// buffer while it waits. Streams that cannot tell (TLS, WebSocket) resolve at once.
    fn readable(&self) -> impl std::future::Future<Output = ()> + Send {
        std::future::ready(())
    }
}

impl Transport for tokio::net::TcpStream {
    async fn readable(&self) {
        // An error shows up in the read that follows.
        let _ = tokio::net::TcpStream::readable(self).await;
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Transport for tokio_rustls::server::TlsStream<S> {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Transport for super::ws::WsStream<S> {}

/// Serves one client connection to completion. `queue_full` is the listener's policy for
/// PUBLISH packets that meet a full queue.
pub async fn serve<S>(
    broker: Arc<Broker>,
    stream: S,
    peer: SocketAddr,
    identity: CertIdentity,
    queue_full: QueueFullPolicy,
) where
    S: Transport,
{
    let link = ConnLink::new(broker.next_connection_id());
    let _gone = link.gone.clone().drop_guard();
    Metrics::inc(&broker.metrics.connections_accepted);
    let max_packet = broker.config.max_packet_size as usize;
    let mut conn = Connection {
        broker: Arc::clone(&broker),
        stream,
        peer,
        rbuf: BytesMut::new(),
        wbuf: BytesMut::new(),
        read_size: MIN_READ,
        decoder: Decoder::server(max_packet),
        link,
        state: None,
        transmits: Vec::new(),
        pending_drain: false,
        pending: Pending::new(broker.persistent()),
        deadline: None,
        torn: false,
        identity,
        queue_full,
        stall: None,
        held: VecDeque::new(),
        held_bytes: 0,
    };
    let close = conn.run().await;
    conn.finish(close).await;
}

impl<S: Transport> Connection<S> {
    async fn run(&mut self) -> Close {
        // The CONNECT phase is boxed: its state is large and short-lived, and would otherwise
        // be part of every connection's task for its whole life.
        let shutdown = self.broker.shutdown.clone();
        let connected = tokio::select! {
            connected = Box::pin(self.connect_phase()) => connected,
            _ = shutdown.cancelled() => Err(Close::Kicked(KickReason::Shutdown)),
        };
        if let Err(close) = connected {
            return close;
        }
        match self.main_loop().await {
            Ok(()) => Close::Io,
            Err(close) => close,
        }
    }

    /// Waits (bounded) for the CONNECT and handles it.
    async fn connect_phase(&mut self) -> Result<(), Close> {
        let limit = self.broker.config.connect_timeout;
        let connect = match timeout(limit, self.read_connect()).await {
            Err(_) => {
                debug!(peer = %self.peer, "no CONNECT in time");
                return Err(Close::Io);
            }
            Ok(result) => result?,
        };
        self.handle_connect(connect).await
    }

    /// Reads until the first packet, which the decoder only accepts if it is a CONNECT.
    async fn read_connect(&mut self) -> Result<Box<crate::codec::Connect>, Close> {
        loop {
            match self.decoder.decode(&mut self.rbuf) {
                Ok(Some(Packet::Connect(connect))) => return Ok(connect),
                Ok(Some(_)) => return Err(Close::Io),
                Ok(None) => {}
                Err(DecodeError::UnsupportedProtocol { level }) => {
                    // MQTT-3.1.2-2: CONNACK 0x01 (unacceptable protocol version), then close.
                    debug!(peer = %self.peer, level, "unsupported protocol level");
                    let code = ReasonCode::V3_UNACCEPTABLE_PROTOCOL_VERSION.0;
                    self.wbuf.extend_from_slice(&[0x20, 0x02, 0x00, code]);
                    return Err(Close::Refused);
                }
                Err(e) => {
                    debug!(peer = %self.peer, error = %e, "bad CONNECT");
                    Metrics::inc(&self.broker.metrics.protocol_errors);
                    return Err(Close::Io);
                }
            }
            self.read_more().await?;
        }
    }

    async fn read_more(&mut self) -> Result<(), Close> {
        let spare = self.prepare_read();
        match self.stream.read_buf(&mut self.rbuf).await {
            Ok(0) | Err(_) => Err(Close::Io),
            Ok(n) => {
                self.adapt_read_size(n, spare);
                Ok(())
            }
        }
    }

    /// Makes room for the next read; returns the room available.
    fn prepare_read(&mut self) -> usize {
        if self.rbuf.capacity() - self.rbuf.len() < self.read_size / 2 {
            self.rbuf.reserve(self.read_size);
        }
        self.rbuf.capacity() - self.rbuf.len()
    }

    /// Grows the read size when a read filled the room it had, shrinks it (and gives the
    /// buffer back) when reads are small and nothing is pending.
    fn adapt_read_size(&mut self, n: usize, spare: usize) {
        if n >= spare {
            self.read_size = (self.read_size * 2).min(MAX_READ);
        } else if n < self.read_size / 8 && self.read_size > MIN_READ {
            self.read_size /= 2;
            if self.rbuf.is_empty() && self.rbuf.capacity() > 2 * self.read_size {
                self.rbuf = BytesMut::new();
            }
        }
    }

    async fn main_loop(&mut self) -> Result<(), Close> {
        let Some(attached) = &self.state else {
            return Err(Close::Io);
        };
        let session = Arc::clone(&attached.session);
        let keep_alive = match attached.keep_alive {
            0 => None,
            secs => Some(Duration::from_millis(u64::from(secs) * 1500)),
        };
        self.deadline = keep_alive.map(|k| Instant::now() + k);
        let link = self.link.clone();
        let shutdown = self.broker.shutdown.clone();
        loop {
            if self.stall.is_some() && self.retry_stalled()? {
                // Keep alive is not held against a client whose reads were paused.
                self.deadline = keep_alive.map(|k| Instant::now() + k);
            }
            if self.process_input()? > 0 {
                self.deadline = keep_alive.map(|k| Instant::now() + k);
            }
            self.refill().await?;
            self.drain();
            self.settle().await?;
            self.flush().await?;
            let pending_drain = self.pending_drain;
            let idle = self.rbuf.is_empty() && self.read_size == MIN_READ;
            if self.rbuf.is_empty() && (idle || self.rbuf.capacity() > 2 * MAX_READ) {
                // A quiet connection holds no read buffer while it waits (and an occasional
                // large packet's buffer is given back).
                self.rbuf = BytesMut::new();
            }
            let paused = self
                .stall
                .as_ref()
                .map(|s| (Arc::clone(&s.session), s.room_seq));
            if paused.is_some() && self.held_full() && session.owes_client() {
                // Paused, and no room to read further, while this client has messages to
                // acknowledge: its acknowledgements cannot be read, and another publisher (or
                // this one) may be paused on its queue in turn. Closed rather than left in a
                // cycle; the client resends what was not acknowledged when it reconnects.
                debug!(client_id = %session.client_id, "paused with acknowledgements unread: closing");
                return Err(Close::PausedWithAcksUnread);
            }
            let reading = paused.is_none() || !self.held_full();
            let deadline = if paused.is_some() {
                None
            } else {
                self.deadline
            };
            tokio::select! {
                biased;
                _ = link.kick.cancelled() => {
                    return Err(Close::Kicked(link.kick_reason().unwrap_or(KickReason::Shutdown)));
                }
                _ = shutdown.cancelled() => return Err(Close::Kicked(KickReason::Shutdown)),
                _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    debug!(client_id = %session.client_id, "keep alive expired");
                    return Err(Close::KeepAlive);
                }
                _ = async {
                    if let Some((full, seen)) = &paused {
                        // The retry timer covers room made where nobody notifies (the store
                        // freeing bytes, a failed commit).
                        let _ = timeout(PAUSE_RETRY, full.room_since(*seen)).await;
                    }
                }, if paused.is_some() => {}
                read = async {
                    if idle {
                        self.stream.readable().await;
                    }
                    let spare = self.prepare_read();
                    (self.stream.read_buf(&mut self.rbuf).await, spare)
                }, if reading => match read {
                    (Ok(n), spare) if n > 0 => self.adapt_read_size(n, spare),
                    _ => return Err(Close::Io),
                },
                _ = session.wake.notified(), if !pending_drain => {}
                _ = std::future::ready(()), if pending_drain => {}
            }
        }
    }

    /// True once a paused connection has read and held as much as it may.
    fn held_full(&self) -> bool {
        self.held.len() >= MAX_HELD || self.held_bytes >= MAX_HELD_BYTES
    }

    /// Reads more of a durable session's backlog from the store once its memory queue runs
    /// low.
    async fn refill(&mut self) -> Result<(), Close> {
        let (Some(attached), Some(store)) = (&self.state, &self.broker.store) else {
            return Ok(());
        };
        let session = Arc::clone(&attached.session);
        let request = session.slot.lock().session.outbound.load_request();
        let Some(request) = request else {
            return Ok(());
        };
        Metrics::inc(&self.broker.metrics.store_reads);
        let read = store.read_queue(session.store_key(), request).await;
        let failed = read.is_err();
        if let Err(e) = &read {
            tracing::error!(client_id = %session.client_id, error = %e, "reading the queue from the store failed");
        }
        let lost = {
            let mut slot = session.slot.lock();
            slot.session.outbound.loaded(request, read.ok());
            slot.session.outbound.take_lost()
        };
        if lost > 0 {
            tracing::error!(client_id = %session.client_id, lost, "queue entries counted in the store were not found there");
        }
        if failed {
            return Err(Close::StorageFailure);
        }
        Ok(())
    }

    /// Decodes and handles every complete packet in the read buffer. Returns how many.
    ///
    /// While a PUBLISH is paused, packets that do not depend on it (acknowledgements, PINGREQ,
    /// DISCONNECT) are handled at once, so a client's own deliveries keep flowing; the others
    /// are held in order behind it, up to a bound.
    fn process_input(&mut self) -> Result<usize, Close> {
        let mut handled = 0;
        while self.stall.is_none() {
            let Some(packet) = self.held.pop_front() else {
                break;
            };
            self.held_bytes = self.held_bytes.saturating_sub(held_size(&packet));
            self.handle(packet)?;
        }
        loop {
            if self.stall.is_some() && self.held_full() {
                return Ok(handled);
            }
            let packet = match self.decoder.decode(&mut self.rbuf) {
                Ok(Some(packet)) => packet,
                Ok(None) => return Ok(handled),
                Err(e) => {
                    debug!(peer = %self.peer, error = %e, "closing on bad packet");
                    return Err(Close::from_decode(&e));
                }
            };
            handled += 1;
            let independent = matches!(
                packet,
                Packet::Ack(_) | Packet::PingReq | Packet::Disconnect(_)
            );
            if (self.stall.is_some() || !self.held.is_empty()) && !independent {
                self.held_bytes += held_size(&packet);
                self.held.push_back(packet);
                continue;
            }
            self.handle(packet)?;
        }
    }

    /// Dispatches one packet to its handler.
    fn handle(&mut self, packet: Packet) -> Result<(), Close> {
        match packet {
            Packet::Publish(p) => self.handle_publish(p),
            Packet::Ack(a) => self.handle_ack(a),
            Packet::Subscribe(s) => self.handle_subscribe(s),
            Packet::Unsubscribe(u) => self.handle_unsubscribe(u),
            Packet::PingReq => self.send(&Packet::PingResp),
            Packet::Disconnect(d) => self.handle_disconnect(d),
            Packet::Auth(_) => Err(Close::Violation {
                reason: ReasonCode::PROTOCOL_ERROR,
                why: "AUTH without an authentication method",
            }),
            Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp => Err(Close::Violation {
                reason: ReasonCode::PROTOCOL_ERROR,
                why: "unexpected packet type",
            }),
        }
    }

    /// Whether the client may publish to (`Write`) or subscribe with (`Read`) `topic`. Picks up
    /// reloaded ACL files.
    pub(super) fn allowed(&mut self, topic: &str, access: Access) -> bool {
        let Some(attached) = &mut self.state else {
            return false;
        };
        let generation = self.broker.access.generation();
        if generation != attached.acl_generation {
            attached.acl = self
                .broker
                .access
                .client_acl(attached.username.as_deref(), &attached.session.client_id);
            attached.acl_generation = generation;
            attached.session.slot.lock().acl = attached.acl.clone();
        }
        attached
            .acl
            .as_ref()
            .is_none_or(|acl| acl.check(topic, access))
    }

    /// Commits the batch's durable changes before anything that depends on them is written,
    /// then releases the deliveries they held. On a store failure nothing of the batch is
    /// acknowledged and the connection closes; the client will retry.
    async fn settle(&mut self) -> Result<(), Close> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let ops = std::mem::take(&mut self.pending.ops);
        let committed = if self.pending.must_wait {
            self.broker.commit(ops).await
        } else {
            self.broker.submit(ops);
            true
        };
        self.pending.must_wait = false;
        self.pending.release(committed);
        let foreign = std::mem::take(&mut self.pending.foreign_gates);
        if !foreign.is_empty() {
            let shutdown = self.broker.shutdown.clone();
            for gate in foreign {
                tokio::select! {
                    _ = gate.settled() => {}
                    _ = shutdown.cancelled() => break,
                }
            }
            if let Some(attached) = &self.state {
                // Deliveries held by those gates can go out now.
                attached.session.wake.notify_one();
            }
        }
        let added = std::mem::take(&mut self.pending.incoming_added);
        if committed {
            return Ok(());
        }
        if let Some(attached) = &self.state {
            let mut slot = attached.session.slot.lock();
            for id in added {
                slot.session.inbound.on_pubrel(id);
            }
        }
        self.wbuf.clear();
        Err(Close::StorageFailure)
    }

    /// Writes the whole write buffer. Gives up if the connection is kicked, the broker shuts
    /// down, or the keep alive runs out while the client is not reading. Each partial write
    /// advances the buffer, so an interrupted flush is known to be torn.
    async fn flush(&mut self) -> Result<(), Close> {
        let link = self.link.clone();
        let shutdown = self.broker.shutdown.clone();
        let total = self.wbuf.len();
        // Keep alive is not enforced against a client whose reads are paused.
        let deadline = if self.stall.is_some() {
            None
        } else {
            self.deadline
        };
        while !self.wbuf.is_empty() {
            let outcome = tokio::select! {
                written = self.stream.write_buf(&mut self.wbuf) => match written {
                    Ok(n) if n > 0 => Ok(()),
                    _ => Err(Close::Io),
                },
                _ = link.kick.cancelled() => {
                    Err(Close::Kicked(link.kick_reason().unwrap_or(KickReason::Shutdown)))
                }
                _ = shutdown.cancelled() => Err(Close::Kicked(KickReason::Shutdown)),
                _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    Err(Close::KeepAlive)
                }
            };
            if let Err(close) = outcome {
                self.torn = self.wbuf.len() != total;
                return Err(close);
            }
        }
        // TLS and WebSocket streams may hold written bytes until flushed.
        let flushed = tokio::select! {
            flushed = self.stream.flush() => flushed.map_err(|_| Close::Io),
            _ = link.kick.cancelled() => {
                Err(Close::Kicked(link.kick_reason().unwrap_or(KickReason::Shutdown)))
            }
            _ = shutdown.cancelled() => Err(Close::Kicked(KickReason::Shutdown)),
        };
        flushed?;
        self.wbuf.clear();
        if self.wbuf.capacity() > 2 * WRITE_BUDGET
            || (self.wbuf.capacity() > MAX_READ && total < MIN_READ)
        {
            // Give back a buffer grown by a burst once traffic is light again.
            self.wbuf = BytesMut::new();
        }
        Ok(())
    }

    /// Ends the connection: settle the store, detach from the session and hand over the will
    /// (so a takeover waiting on this connection can proceed at once), then a last v5
    /// DISCONNECT where due and the socket close.
    async fn finish(&mut self, close: Close) {
        // Acknowledgements already encoded go out only if what they acknowledge is committed.
        let close = match self.settle().await {
            Ok(()) => close,
            Err(failure) => failure,
        };
        let (reason, publish_will) = close.outcome();
        if let Close::Violation { why, reason } = close {
            Metrics::inc(&self.broker.metrics.protocol_errors);
            debug!(peer = %self.peer, %reason, why, "protocol violation");
        }
        if let (Some(reason), Some(Version::V5)) = (reason, self.state.as_ref().map(|a| a.version))
        {
            let _ = self.send(&Packet::Disconnect(crate::codec::Disconnect {
                reason,
                ..Default::default()
            }));
        }
        if let Some(attached) = self.state.take() {
            let away = self.broker.detach(&attached.session, self.link.id);
            if publish_will && let Some(will) = attached.will {
                self.broker.schedule_will(will, &attached.session, away);
            }
            debug!(client_id = %attached.session.client_id, ?close, "connection closed");
        }
        self.link.gone.cancel();
        if !self.wbuf.is_empty() && !self.torn {
            let _ = timeout(CLOSE_GRACE, async {
                self.stream.write_all(&self.wbuf).await?;
                self.stream.flush().await
            })
            .await;
        }
        let _ = timeout(CLOSE_GRACE, self.stream.shutdown()).await;
        if close.server_initiated() {
            // The client may still be sending. Closing with its bytes unread would make the
            // kernel answer with a reset, which can destroy the CONNACK or DISCONNECT just
            // written before the client reads it; read and discard until it closes, briefly.
            let _ = timeout(DRAIN_TIME, async {
                let mut scratch = [0u8; 4096];
                let mut left = DRAIN_BYTES;
                while left > 0 {
                    match self.stream.read(&mut scratch).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => left = left.saturating_sub(n),
                    }
                }
            })
            .await;
        }
    }
}
