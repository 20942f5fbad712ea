//! The MQTT rules of one client connection, as a state machine without I/O.
//!
//! No sockets, no tokio, no clock of its own: the connection task (`crate::net::conn`) feeds
//! it bytes read from the client and the current time, and carries out what it asks for.
//!
//! - **Typestate.** [`AwaitingConnect`] reads the CONNECT and checks it; once the driver has
//!   authenticated the client and attached a session (both may wait: the failure throttle, a
//!   takeover), [`AwaitingConnect::accept`] turns it into a [`Connected`], which handles every
//!   other packet. A refused CONNECT ends with [`AwaitingConnect::refuse`].
//! - **Input.** [`Connected::handle_input`] decodes and handles every complete packet in the
//!   read buffer; [`Connected::loaded`] takes a window of backlog read from the store;
//!   [`Connected::committed`] takes the result of a commit; [`Connected::handle_timeout`]
//!   takes the time when [`Connected::poll_timeout`] said so.
//! - **Output.** [`Connected::poll_load`] asks for backlog to be read;
//!   [`Connected::poll_transmit`] moves deliveries into the output;
//!   [`Connected::poll_commit`] hands out store operations, each batch with the output that
//!   waits on it; [`Connected::output`] gives the bytes to write, and gives none while a
//!   commit is outstanding, so an acknowledgement never leaves before what it acknowledges
//!   is durable; [`Connected::end`] says what ending the connection does (the will, the last
//!   DISCONNECT).
//!
//! One packet type per file: `publish` (PUBLISH in, PUBACK/PUBREC out, the pause of a full
//! queue), `ack` (PUBACK, PUBREC, PUBREL, PUBCOMP in), `subscribe` (SUBSCRIBE, UNSUBSCRIBE),
//! `disconnect`, `outgoing` (deliveries out, encoding), `connect` (CONNECT, CONNACK, resume),
//! and `close` (what each way of ending means for the will and the last DISCONNECT).

mod ack;
mod alias;
mod close;
mod connect;
mod disconnect;
mod outgoing;
mod publish;
mod subscribe;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tracing::debug;

use crate::auth::{Access, ClientAcl};
use crate::broker::{Broker, Pending, SessionHandle};
use crate::codec::{Decoder, Packet, ReasonCode, Version, Will};
use crate::config::QueueFullPolicy;
use crate::session::Delivery;
use crate::session::{CommitGate, LoadRequest, Transmit};
use crate::store::Op;

pub(crate) use close::Close;
pub(crate) use connect::{AwaitingConnect, ConnectPlan, refusal};

/// Bytes of deliveries gathered into the output before it is written.
pub(crate) const WRITE_BUDGET: usize = 256 * 1024;
/// While a PUBLISH is paused, at most this many packets are read and held behind it...
const MAX_HELD: usize = 256;
/// ...taking at most about this much memory; then reading stops until the pause ends.
const MAX_HELD_BYTES: usize = 1024 * 1024;

/// A batch of store operations, and what waits on it.
#[derive(Debug)]
pub(crate) struct Commit {
    /// The operations, in order.
    pub ops: Vec<Op>,
    /// True if output (an acknowledgement, a PUBREL, a PUBLISH with a recorded packet id)
    /// waits on the commit: the driver awaits it. Otherwise it may be submitted without
    /// waiting.
    pub must_wait: bool,
    /// Other connections' commits that deliveries queued here depend on (retained messages
    /// sent on subscribe): the driver waits for them after this commit, then transmits.
    pub foreign: Vec<Arc<CommitGate>>,
    /// What the driver hands to the store again, without waiting, if the commit fails
    /// (changes memory has already made; see [`Pending::push_done_in_memory`]).
    pub redo_on_failure: Vec<Op>,
    /// Messages for the other nodes of a cluster, sent (and, for QoS 1/2, confirmed by
    /// JetStream) before the output is released.
    pub cluster: Vec<crate::cluster::Forward>,
}

/// What ending a connection leaves for the broker to do.
#[derive(Debug)]
pub(crate) struct Ending {
    /// The session the connection was attached to (to detach).
    pub session: Arc<SessionHandle>,
    /// The will to publish (or to schedule, with a will delay), if the way the connection
    /// ended calls for it.
    pub will: Option<Will>,
}

/// A connection whose CONNECT was accepted: every packet after CONNECT.
#[derive(Debug)]
pub(crate) struct Connected {
    broker: Arc<Broker>,
    peer: SocketAddr,
    session: Arc<SessionHandle>,
    version: Version,
    /// Boxed: most clients leave none, and a connection lives long.
    will: Option<Box<Will>>,
    /// The client's Maximum Packet Size (MQTT 5.0).
    max_packet_out: Option<u32>,
    /// Session expiry requested in CONNECT (a DISCONNECT may not raise it from 0).
    expiry_at_connect: u32,
    /// 1.5 times the keep alive, `None` when it is 0 (MQTT-3.1.2-24).
    keep_alive: Option<Duration>,
    /// When the keep alive runs out.
    deadline: Option<Instant>,
    /// The authenticated username (ACLs use it).
    username: Option<String>,
    /// ACL rules, `None` without an ACL file.
    acl: Option<Arc<ClientAcl>>,
    /// Access-control generation the rules were resolved at (a reload bumps it).
    acl_generation: u64,
    /// What a full queue does to this connection's PUBLISH packets.
    queue_full: QueueFullPolicy,
    /// The client accepts Reason Strings and User Properties on acknowledgements (MQTT 5.0
    /// Request Problem Information, MQTT-3.1.2-29).
    problem_information: bool,
    /// Topic aliases the client set (MQTT 5.0).
    aliases_in: alias::InboundAliases,
    /// Topic aliases given to topics sent to the client (MQTT 5.0).
    aliases_out: alias::OutboundAliases,
    /// A broker connected as a bridge (the bridge bit of the protocol level): its
    /// subscriptions are No Local and Retain As Published, so two brokers bridged both ways
    /// do not send messages back and forth.
    bridge: bool,
    /// The broker's own connection (a bridge's local side): no ACL applies.
    trusted: bool,
    decoder: Decoder,
    /// Encoded packets not yet handed to the driver.
    out: BytesMut,
    /// Durable changes of the packets handled since the last commit.
    pending: Pending,
    /// The CONNACK has been let out (or committed): until then a failed commit refuses the
    /// connection with a CONNACK instead of ending it with a DISCONNECT.
    acknowledged: bool,
    /// A commit was handed out and its result has not come back: output is held.
    committing: Option<Vec<u16>>,
    /// Scratch list of packets taken from the session under its lock.
    transmits: Vec<Transmit>,
    /// The write budget ran out with deliveries still queued.
    more_to_send: bool,
    /// A PUBLISH paused by a full queue (3.1.1 back-pressure).
    stall: Option<Box<publish::Stall>>,
    /// Packets read while paused that must wait for the paused PUBLISH, in order.
    held: VecDeque<Packet>,
    /// About the memory `held` takes (see `held_size`).
    held_bytes: usize,
}

/// A connection's protocol state while it is parked (idle, see [`Connected::at_rest`]):
/// [`Connected`] without what only a busy connection holds (the output buffer, the batch of
/// durable changes, scratch lists, a paused PUBLISH), which is empty at rest and made again
/// when the connection resumes. Kept inline in the parked connection's record: about 200
/// bytes instead of 500 in an allocation of their own.
pub(crate) struct Resting {
    broker: Arc<Broker>,
    session: Arc<SessionHandle>,
    version: Version,
    will: Option<Box<Will>>,
    max_packet_out: Option<u32>,
    expiry_at_connect: u32,
    /// [`Connected::keep_alive`] in milliseconds, 0 for none.
    keep_alive_ms: u32,
    deadline: Option<Instant>,
    username: Option<Box<str>>,
    acl: Option<Arc<ClientAcl>>,
    acl_generation: u64,
    queue_full: QueueFullPolicy,
    problem_information: bool,
    aliases_in: alias::InboundAliases,
    aliases_out: alias::OutboundAliases,
    bridge: bool,
    trusted: bool,
    decoder: Decoder,
    acknowledged: bool,
    persistent: bool,
}

impl Resting {
    /// The broker this connection belongs to.
    pub(crate) fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// The session the connection is attached to.
    pub(crate) fn session(&self) -> &Arc<SessionHandle> {
        &self.session
    }

    /// When the keep alive runs out (see [`Connected::poll_timeout`]).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The connection (from `peer`) as it was, with empty buffers.
    pub(crate) fn resume(self, peer: SocketAddr) -> Box<Connected> {
        Box::new(Connected {
            broker: self.broker,
            peer,
            session: self.session,
            version: self.version,
            will: self.will,
            max_packet_out: self.max_packet_out,
            expiry_at_connect: self.expiry_at_connect,
            keep_alive: (self.keep_alive_ms > 0)
                .then(|| Duration::from_millis(u64::from(self.keep_alive_ms))),
            deadline: self.deadline,
            username: self.username.map(String::from),
            acl: self.acl,
            acl_generation: self.acl_generation,
            queue_full: self.queue_full,
            problem_information: self.problem_information,
            aliases_in: self.aliases_in,
            aliases_out: self.aliases_out,
            bridge: self.bridge,
            trusted: self.trusted,
            decoder: self.decoder,
            out: BytesMut::new(),
            pending: Pending::new(self.persistent),
            acknowledged: self.acknowledged,
            committing: None,
            transmits: Vec::new(),
            more_to_send: false,
            stall: None,
            held: VecDeque::new(),
            held_bytes: 0,
        })
    }
}

impl Connected {
    /// What a parked connection keeps; `Err` with the connection itself unless it is
    /// [`Connected::at_rest`] with nothing more to send.
    pub(crate) fn rest(self: Box<Self>) -> Result<Resting, Box<Self>> {
        if !self.at_rest() || self.more_to_send {
            return Err(self);
        }
        self.session.slot.lock().session.outbound.compact();
        let c = *self;
        Ok(Resting {
            broker: c.broker,
            session: c.session,
            version: c.version,
            will: c.will,
            max_packet_out: c.max_packet_out,
            expiry_at_connect: c.expiry_at_connect,
            // At most 1.5 times 65,535 s.
            keep_alive_ms: c
                .keep_alive
                .map_or(0, |k| u32::try_from(k.as_millis()).unwrap_or(u32::MAX)),
            deadline: c.deadline,
            username: c.username.map(String::into_boxed_str),
            acl: c.acl,
            acl_generation: c.acl_generation,
            queue_full: c.queue_full,
            problem_information: c.problem_information,
            aliases_in: c.aliases_in,
            aliases_out: c.aliases_out,
            bridge: c.bridge,
            trusted: c.trusted,
            decoder: c.decoder,
            acknowledged: c.acknowledged,
            persistent: c.pending.persistent,
        })
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

/// Adds the packets read to a counter when dropped.
struct PacketCount<'a>(&'a std::sync::atomic::AtomicU64, u64);

impl Drop for PacketCount<'_> {
    fn drop(&mut self) {
        if self.1 > 0 {
            self.0
                .fetch_add(self.1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Connected {
    /// The session this connection is attached to.
    pub(crate) fn session(&self) -> &Arc<SessionHandle> {
        &self.session
    }

    /// True when nothing is in progress: no commit outstanding or to hand out, nothing
    /// encoded and not written, no paused PUBLISH and no packet held behind one. Only then may
    /// the driver set the connection aside while it is idle (what it keeps is this state).
    pub(crate) fn at_rest(&self) -> bool {
        self.committing.is_none()
            && self.pending.is_empty()
            && self.out.is_empty()
            && self.stall.is_none()
            && self.held.is_empty()
    }

    /// Decodes and handles every complete packet in `input`, and first tries a paused
    /// PUBLISH again. Returns how many packets were read.
    ///
    /// While a PUBLISH is paused, packets that do not depend on it (acknowledgements, PINGREQ,
    /// DISCONNECT) are handled at once, so a client's own deliveries keep flowing; the others
    /// are held in order behind it, up to a bound (then [`Connected::wants_read`] is false).
    pub(crate) fn handle_input(
        &mut self,
        input: &mut BytesMut,
        now: Instant,
    ) -> Result<usize, Close> {
        if self.stall.is_some() && self.retry_stalled()? {
            // Keep alive is not held against a client whose reads were paused.
            self.touch(now);
        }
        let broker = Arc::clone(&self.broker);
        // Counted however this returns (a DISCONNECT or an error ends it early).
        let mut counted = PacketCount(&broker.metrics.packets_received, 0);
        let mut handled = 0;
        // The packets decoded below are slices of this buffer.
        let buffer = input.capacity();
        while self.stall.is_none() {
            let Some(packet) = self.held.pop_front() else {
                break;
            };
            self.held_bytes = self.held_bytes.saturating_sub(held_size(&packet));
            self.handle(packet, now)?;
        }
        loop {
            if self.stall.is_some() && self.held_full() {
                break;
            }
            let packet = match self.decoder.decode(input) {
                Ok(Some(Packet::Publish(mut publish))) => {
                    // Kept beyond this read (queued, retained, held): not as a slice that
                    // keeps the whole read buffer alive.
                    publish::detach_from_buffer(&mut publish, buffer);
                    Packet::Publish(publish)
                }
                Ok(Some(packet)) => packet,
                Ok(None) => break,
                Err(e) => {
                    debug!(peer = %self.peer, error = %e, "closing on bad packet");
                    return Err(Close::from_decode(&e));
                }
            };
            handled += 1;
            counted.1 += 1;
            let independent = matches!(
                packet,
                Packet::Ack(_) | Packet::PingReq | Packet::Disconnect(_)
            );
            if (self.stall.is_some() || !self.held.is_empty()) && !independent {
                self.held_bytes += held_size(&packet);
                self.held.push_back(packet);
                continue;
            }
            self.handle(packet, now)?;
        }
        if handled > 0 {
            self.touch(now);
        }
        Ok(handled)
    }

    /// Handles one decoded packet.
    pub(crate) fn handle(&mut self, packet: Packet, now: Instant) -> Result<(), Close> {
        match packet {
            Packet::Publish(p) => self.handle_publish(p, now),
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

    /// Restarts the keep alive from `now`.
    fn touch(&mut self, now: Instant) {
        self.deadline = self.keep_alive.map(|k| now + k);
    }

    /// True unless a paused connection has read and held as much as it may.
    pub(crate) fn wants_read(&self) -> bool {
        self.stall.is_none() || !self.held_full()
    }

    fn held_full(&self) -> bool {
        self.held.len() >= MAX_HELD || self.held_bytes >= MAX_HELD_BYTES
    }

    /// The session a paused PUBLISH waits on, and the backlog generation it saw: the driver
    /// waits for [`SessionHandle::room_since`] (and, as a safety net for room that nobody
    /// signals, a retry period of its own) and calls [`Connected::handle_input`] again.
    #[cfg(test)]
    pub(crate) fn paused_on(&self) -> Option<(Arc<SessionHandle>, u64)> {
        self.stall
            .as_ref()
            .map(|s| (Arc::clone(&s.session), s.room_seq))
    }

    /// Every session whose room would let a paused PUBLISH through (several for a Shared
    /// Subscription whose connected members are all full), with the generations seen; empty
    /// when not paused.
    pub(crate) fn paused_on_any(&self) -> Vec<(Arc<SessionHandle>, u64)> {
        self.stall.as_ref().map_or_else(Vec::new, |s| {
            std::iter::once((Arc::clone(&s.session), s.room_seq))
                .chain(s.also.iter().cloned())
                .collect()
        })
    }

    /// True when paused with nothing more to read while this client has messages to
    /// acknowledge: its acknowledgements cannot be read, and another publisher (or this one)
    /// may be paused on its queue in turn. The connection closes
    /// ([`Close::PausedWithAcksUnread`]) rather than stay in that cycle; the client resends
    /// what was not acknowledged when it reconnects.
    pub(crate) fn stuck(&self) -> bool {
        self.stall.is_some() && self.held_full() && self.session.owes_client()
    }

    /// When the driver must call [`Connected::handle_timeout`] at the latest: when the keep
    /// alive runs out. A write that waits for the client to read gives up then too. `None`
    /// without keep alive, and while reads are paused (keep alive is not held against a
    /// client whose reads the broker paused).
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.stall.is_some() {
            None
        } else {
            self.deadline
        }
    }

    /// Checks the timers at `now`: nothing received within 1.5 times the keep alive closes the
    /// connection (MQTT-3.1.2-24).
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Result<(), Close> {
        if self.stall.is_some() {
            return Ok(());
        }
        match self.deadline {
            Some(deadline) if now >= deadline => {
                debug!(client_id = &*self.session.client_id, "keep alive expired");
                Err(Close::KeepAlive)
            }
            _ => Ok(()),
        }
    }

    /// True if the write budget ran out with deliveries still queued: call
    /// [`Connected::poll_transmit`] again after writing, without waiting for a wake-up.
    pub(crate) fn more_to_send(&self) -> bool {
        self.more_to_send
    }

    /// A window of the durable backlog to read from the store, once the memory queue runs
    /// low. Answer with [`Connected::loaded`].
    pub(crate) fn poll_load(&mut self) -> Option<LoadRequest> {
        if !self.pending.persistent {
            return None;
        }
        self.session.slot.lock().session.outbound.load_request()
    }

    /// Takes what the store returned for `request` (`None`: the read failed, and the
    /// connection closes).
    pub(crate) fn loaded(
        &mut self,
        request: LoadRequest,
        read: Option<Vec<Delivery>>,
    ) -> Result<(), Close> {
        let failed = read.is_none();
        let lost = {
            let mut slot = self.session.slot.lock();
            slot.session.outbound.loaded(request, read);
            slot.session.outbound.take_lost()
        };
        if lost > 0 {
            tracing::error!(
                client_id = &*self.session.client_id,
                lost,
                "queue entries counted in the store were not found there"
            );
        }
        if failed {
            return Err(Close::StorageFailure);
        }
        Ok(())
    }

    /// The store operations of the packets handled since the last commit, if any. The output
    /// is held until [`Connected::committed`] reports the result.
    pub(crate) fn poll_commit(&mut self) -> Option<Commit> {
        if self.committing.is_some() || self.pending.is_empty() {
            return None;
        }
        let commit = Commit {
            ops: std::mem::take(&mut self.pending.ops),
            must_wait: std::mem::take(&mut self.pending.must_wait),
            foreign: std::mem::take(&mut self.pending.foreign_gates),
            redo_on_failure: std::mem::take(&mut self.pending.redo_on_failure),
            cluster: std::mem::take(&mut self.pending.cluster),
        };
        self.committing = Some(std::mem::take(&mut self.pending.incoming_added));
        Some(commit)
    }

    /// Takes the result of the commit from [`Connected::poll_commit`]: the deliveries it held
    /// are released, and its output may go out. On a failure nothing of the batch is
    /// acknowledged: the output is discarded and the connection closes; the client will retry.
    pub(crate) fn committed(&mut self, ok: bool) -> Result<(), Close> {
        let added = self.committing.take().unwrap_or_default();
        self.pending.release(ok);
        if ok {
            self.acknowledged = true;
            return Ok(());
        }
        let mut slot = self.session.slot.lock();
        for id in added {
            slot.session.inbound.on_pubrel(id);
        }
        drop(slot);
        self.out.clear();
        if !self.acknowledged {
            // The session could not be recorded: the CONNECT is refused, the first packet the
            // client reads being a CONNACK (MQTT-3.2.0-1) that says so (MQTT-3.2.2-6).
            let code = match self.version {
                Version::V5 => ReasonCode::UNSPECIFIED_ERROR,
                Version::V311 => ReasonCode::V3_SERVER_UNAVAILABLE,
            };
            let _ = self.send(&Packet::ConnAck(crate::codec::ConnAck {
                session_present: false,
                code,
                properties: Default::default(),
            }));
            return Err(Close::Refused);
        }
        Err(Close::StorageFailure)
    }

    /// The will of the connection, if it has one (after the ACL check).
    pub(crate) fn will(&self) -> Option<&Will> {
        self.will.as_deref()
    }

    /// The Session Expiry Interval asked for in CONNECT, in seconds.
    pub(crate) fn session_expiry(&self) -> u32 {
        self.expiry_at_connect
    }

    /// The encoded packets ready to be written, `None` while a commit they may depend on is
    /// outstanding (or nothing is ready). The driver writes them and clears the buffer.
    pub(crate) fn output(&mut self) -> Option<&mut BytesMut> {
        if self.committing.is_some() || !self.pending.is_empty() || self.out.is_empty() {
            return None;
        }
        self.acknowledged = true;
        Some(&mut self.out)
    }

    /// Ends the connection for `close`: encodes the MQTT 5.0 DISCONNECT its reason calls for
    /// into the output, and says whether the will goes out. Call after the last commit
    /// returned.
    pub(crate) fn end(&mut self, close: Close) -> Ending {
        let (reason, publish_will) = close.outcome();
        if let (Some(reason), Version::V5) = (reason, self.version) {
            // A Reason String is always allowed on DISCONNECT (MQTT-3.1.2-29).
            let _ = self.send(&Packet::Disconnect(crate::codec::Disconnect {
                reason,
                reason_string: close.explain().map(str::to_owned),
                ..Default::default()
            }));
        }
        debug!(
            client_id = &*self.session.client_id,
            ?close,
            "connection closed"
        );
        Ending {
            session: Arc::clone(&self.session),
            will: if publish_will {
                self.will.take().map(|w| *w)
            } else {
                None
            },
        }
    }

    /// Whether the client may publish to (`Write`) or subscribe with (`Read`) `topic`. Picks up
    /// reloaded ACL files.
    fn allowed(&mut self, topic: &str, access: Access) -> bool {
        // `$SYS` is the broker's own: clients read it (subject to the ACL) but never write it
        // (MQTT 4.7.2: clients should not use `$` topics to exchange messages).
        if access == Access::Write && (topic == "$SYS" || topic.starts_with("$SYS/")) {
            return false;
        }
        let generation = self.broker.access.generation();
        if generation != self.acl_generation && !self.trusted {
            self.acl = self
                .broker
                .access
                .client_acl(self.username.as_deref(), &self.session.client_id);
            self.acl_generation = generation;
            self.session.slot.lock().acl = self.acl.clone();
        }
        self.acl.as_ref().is_none_or(|acl| acl.check(topic, access))
    }
}
