//! A session as the broker shares it between the registry, the router and the connection
//! that is attached to it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::session::Session;

/// Why a connection is asked to close from outside its own task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KickReason {
    /// Another connection with the same client id took the session over (v5: 0x8E).
    TakenOver,
    /// The broker is shutting down (v5: 0x8B).
    Shutdown,
    /// An operator disconnected it through the admin API (v5: 0x98, administrative action).
    Admin,
}

/// The link from a session to the connection currently attached to it: one small allocation
/// per connection, since every idle connection holds one.
#[derive(Debug, Clone)]
pub(crate) struct ConnLink {
    /// Unique id of the connection.
    pub id: u64,
    state: Arc<LinkState>,
}

/// What a [`ConnLink`] shares: one waiter list for both of its events, so that a connection
/// (a hundred thousand of them idle) keeps one small allocation for it.
#[derive(Debug, Default)]
struct LinkState {
    /// Why the connection was kicked (0: it was not), and [`GONE`]: the connection has fully
    /// finished (will published, detached).
    flags: AtomicU8,
    /// Woken when either changes.
    notify: Notify,
    /// The connection's tag while it is parked ([`crate::net::park`]), else `NOT_PARKED`.
    parked: AtomicU64,
    /// Who is connected, for the admin API and the connection's own records (set once, when
    /// the CONNECT is accepted).
    client: std::sync::OnceLock<ClientInfo>,
}

/// [`LinkState::flags`] bit: the connection has finished.
const GONE: u8 = 0x80;
/// [`LinkState::flags`] bits: the kick reason.
const REASON: u8 = 0x7f;

impl LinkState {
    /// Waits until `done` holds for the flags. The waiter is registered before the check, so
    /// a change in between is not missed.
    async fn wait(&self, done: impl Fn(u8) -> bool) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(self.flags.load(Ordering::SeqCst)) {
                return;
            }
            notified.await;
        }
    }
}

impl KickReason {
    fn code(self) -> u8 {
        match self {
            KickReason::TakenOver => 1,
            KickReason::Shutdown => 2,
            KickReason::Admin => 3,
        }
    }

    fn from_code(code: u8) -> Option<KickReason> {
        match code {
            1 => Some(KickReason::TakenOver),
            2 => Some(KickReason::Shutdown),
            3 => Some(KickReason::Admin),
            _ => None,
        }
    }
}

impl ConnLink {
    /// A link for a new connection.
    pub(crate) fn new(id: u64) -> ConnLink {
        ConnLink {
            id,
            state: Arc::default(),
        }
    }

    /// Asks the connection to close for `reason` (the first reason given stays).
    pub(crate) fn kick(&self, reason: KickReason) {
        let _ = self
            .state
            .flags
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| {
                (f & REASON == 0).then_some(f | reason.code())
            });
        self.state.notify.notify_waiters();
        crate::net::park::wake(self.state.parked.load(Ordering::SeqCst));
    }

    /// Records who is connected (once; a second call changes nothing).
    pub(crate) fn set_client(&self, info: ClientInfo) {
        let _ = self.state.client.set(info);
    }

    /// Who is connected, once the CONNECT was accepted.
    pub(crate) fn client(&self) -> Option<&ClientInfo> {
        self.state.client.get()
    }

    /// Records that the connection is parked under `tag`: a kick resumes it.
    pub(crate) fn set_parked(&self, tag: u64) {
        self.state.parked.store(tag, Ordering::SeqCst);
    }

    /// Forgets `tag` (the connection was resumed), unless it has parked again since.
    pub(crate) fn clear_parked(&self, tag: u64) {
        let _ = self.state.parked.compare_exchange(
            tag,
            crate::net::park::NOT_PARKED,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    /// Why the connection was kicked, if it was.
    pub(crate) fn kick_reason(&self) -> Option<KickReason> {
        KickReason::from_code(self.state.flags.load(Ordering::SeqCst) & REASON)
    }

    /// Waits until the connection is asked to close.
    pub(crate) async fn kicked(&self) {
        self.state.wait(|f| f & REASON != 0).await;
    }

    /// Says that the connection has fully finished.
    pub(crate) fn set_gone(&self) {
        self.state.flags.fetch_or(GONE, Ordering::SeqCst);
        self.state.notify.notify_waiters();
    }

    /// Waits until the connection has fully finished.
    pub(crate) async fn gone(&self) {
        self.state.wait(|f| f & GONE != 0).await;
    }

    /// Marks the connection finished when dropped, however its task ends.
    pub(crate) fn gone_guard(&self) -> GoneGuard {
        GoneGuard(Some(self.clone()))
    }
}

/// Marks a connection finished when dropped (see [`ConnLink::gone_guard`]).
#[derive(Debug)]
pub(crate) struct GoneGuard(Option<ConnLink>);

impl GoneGuard {
    /// The connection goes on elsewhere (parked): dropping the guard says nothing.
    pub(crate) fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GoneGuard {
    fn drop(&mut self) {
        if let Some(link) = &self.0 {
            link.set_gone();
        }
    }
}

/// One absence of a session's client, as [`Broker::detach`](super::Broker::detach) reports
/// it. The will delay and the session expiry count from `since`, so a timer set up a moment
/// later still ends when it should.
#[derive(Debug, Clone)]
pub(crate) struct Absence {
    /// When the connection was detached, on the broker's clock.
    pub since: Instant,
    /// Cancelled when a connection attaches or the session ends.
    pub token: CancellationToken,
}

/// The mutable part of a shared session, behind its own lock.
#[derive(Debug)]
pub(crate) struct Slot {
    /// The protocol state.
    pub session: Session,
    /// The attached connection, if any.
    pub conn: Option<ConnLink>,
    /// Incremented each time a connection attaches; timers compare it to see a reconnect.
    pub epoch: u64,
    /// True once the session has ended and left the registry.
    pub ended: bool,
    /// Whether the store holds a record of this session.
    pub persisted: bool,
    /// Cancelled when a connection attaches or the session ends: stops the expiry and
    /// will-delay timers of the current absence.
    pub away: Option<CancellationToken>,
    /// ACL rules of the connected client, checked on every delivery (a resumed session may
    /// belong to another user than the one who subscribed).
    pub acl: Option<Arc<crate::auth::ClientAcl>>,
}

/// The connection attached to a session, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct ClientInfo {
    /// Remote address.
    pub peer: std::net::SocketAddr,
    /// The listener, shown as e.g. `tcp 127.0.0.1:1883`.
    #[serde(serialize_with = "serialize_display")]
    pub listener: crate::net::conn::Via,
    /// `3.1`, `3.1.1` or `5.0`.
    pub protocol: ProtocolName,
    /// The authenticated username, if any.
    pub username: Option<Box<str>>,
    /// The keep alive in force, in seconds.
    pub keep_alive: u16,
    /// When it connected, in Unix seconds (until 2106).
    pub connected_at: u32,
    /// The will it left, if any (boxed: most clients leave none).
    pub will: Option<Box<WillInfo>>,
}

/// The MQTT version of a connection, as the admin API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub(crate) enum ProtocolName {
    /// MQTT 3.1 (`MQIsdp`, level 3).
    #[serde(rename = "3.1")]
    V31,
    /// MQTT 3.1.1.
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5.0.
    #[serde(rename = "5.0")]
    V5,
}

/// Serializes a value as its `Display` text.
fn serialize_display<T: std::fmt::Display, S: serde::Serializer>(
    value: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// A connection's will, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct WillInfo {
    /// Topic.
    pub topic: String,
    /// QoS.
    pub qos: u8,
    /// RETAIN flag.
    pub retain: bool,
    /// Will Delay Interval, in seconds (MQTT 5.0).
    pub delay_interval: u32,
    /// Payload size in bytes.
    pub payload_bytes: usize,
}

/// A session shared between tasks. Lock order: never hold `slot` while taking a router lock.
#[derive(Debug)]
pub(crate) struct SessionHandle {
    /// Unique key of this session (client ids can be reused by later sessions).
    pub key: u64,
    /// The client identifier.
    pub client_id: Arc<str>,
    /// The state.
    pub slot: Mutex<Slot>,
    /// Wakes the attached connection when deliveries are queued: use
    /// [`SessionHandle::notify`], which also resumes a parked connection.
    pub wake: Notify,
    /// The tag of the attached connection while it is parked ([`crate::net::park`]).
    pub parked: AtomicU64,
    /// Set when the session ends (see [`SessionHandle::end`]).
    ended: AtomicBool,
    /// Bumped whenever the backlog shrinks; a paused publisher retries once it changes (it
    /// waits on the session's [`RoomShard`]).
    room_seq: AtomicU64,
    /// Publishers paused on this Session: while there are none, a shrinking backlog wakes
    /// nobody (the shard's other Sessions' publishers included).
    room_waiters: AtomicU32,
    /// A connection is attached: a copy of `slot.conn.is_some()`, set under the slot lock,
    /// for readers that only need a hint (the order Shared Subscription members are tried in).
    connected: std::sync::atomic::AtomicBool,
    /// In cluster mode, for a durable Session: it receives QoS 1/2 messages only from the
    /// cluster's stream, in its order, and none at or below this sequence (it had them
    /// before it came to this node). `NOT_FOLLOWING` otherwise.
    stream_floor: AtomicU64,
}

/// [`SessionHandle::stream_floor`] of a Session that does not follow the cluster's stream.
const NOT_FOLLOWING: u64 = u64::MAX;

impl SessionHandle {
    /// How the store names this session: client id and incarnation (the session key).
    pub(crate) fn store_key(&self) -> crate::store::SessionKey {
        crate::store::SessionKey {
            client: Arc::clone(&self.client_id),
            incarnation: self.key,
        }
    }

    /// A new shared session attached to `conn`.
    pub(crate) fn new(
        key: u64,
        client_id: Arc<str>,
        session: Session,
        conn: Option<ConnLink>,
    ) -> Self {
        SessionHandle {
            key,
            client_id,
            slot: Mutex::new(Slot {
                session,
                conn: conn.clone(),
                epoch: 1,
                ended: false,
                persisted: false,
                away: None,
                acl: None,
            }),
            wake: Notify::new(),
            parked: AtomicU64::new(crate::net::park::NOT_PARKED),
            ended: AtomicBool::new(false),
            room_seq: AtomicU64::new(0),
            room_waiters: AtomicU32::new(0),
            connected: std::sync::atomic::AtomicBool::new(conn.is_some()),
            stream_floor: AtomicU64::new(NOT_FOLLOWING),
        }
    }

    /// Whether the Session takes its QoS 1/2 messages from the cluster's stream (see
    /// [`SessionHandle::stream_floor`]).
    pub(crate) fn follows_stream(&self) -> bool {
        self.stream_floor.load(Ordering::Relaxed) != NOT_FOLLOWING
    }

    /// Makes the Session follow the cluster's stream (durable, in cluster mode) from after
    /// `floor`, unless it does already. A Session never stops following: one whose expiry
    /// became 0 ends with its connection anyway, and switching back and forth would lose
    /// or repeat the messages on their way through the stream meanwhile.
    pub(crate) fn start_following(&self, floor: u64) {
        let _ = self.stream_floor.compare_exchange(
            NOT_FOLLOWING,
            floor.min(NOT_FOLLOWING - 1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Skips the stream's messages up to `sequence` for this Session (it had them already).
    pub(crate) fn set_stream_floor(&self, sequence: u64) {
        self.stream_floor
            .store(sequence.min(NOT_FOLLOWING - 1), Ordering::Relaxed);
    }

    /// True if the stream's message `sequence` is for this Session from the stream: it
    /// follows the stream and did not have the message before.
    pub(crate) fn takes_from_stream(&self, sequence: u64) -> bool {
        let floor = self.stream_floor.load(Ordering::Relaxed);
        floor != NOT_FOLLOWING && sequence > floor
    }

    /// Attaches or detaches a connection (call with the slot locked, passing it in).
    pub(crate) fn set_conn(&self, slot: &mut Slot, conn: Option<ConnLink>) {
        self.connected.store(conn.is_some(), Ordering::Relaxed);
        slot.conn = conn;
    }

    /// A hint: whether a connection was attached a moment ago (see `slot.conn` for the truth).
    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// True if messages are in flight to the client or queued for it (it has acknowledgements
    /// to send).
    pub(crate) fn owes_client(&self) -> bool {
        let slot = self.slot.lock();
        slot.session.outbound.inflight() > 0 || slot.session.outbound.queued() > 0
    }

    /// The backlog generation; read under the slot lock when the queue is found full.
    pub(crate) fn room_seq(&self) -> u64 {
        self.room_seq.load(Ordering::SeqCst)
    }

    /// Says that the backlog shrank (call after the slot lock is released).
    pub(crate) fn notify_room(&self) {
        self.room_seq.fetch_add(1, Ordering::SeqCst);
        self.wake_paused();
    }

    /// Wakes the publishers paused on this Session, if it has any. A waiter counts itself
    /// before it reads `room_seq`/`ended`, and the writer changes those before it reads the
    /// count (all SeqCst): either the waiter sees the change or the writer sees the waiter.
    fn wake_paused(&self) {
        if self.room_waiters.load(Ordering::SeqCst) > 0 {
            RoomShard::of(self.key).room.notify_waiters();
        }
    }

    /// Marks the session ended: publishers paused on it stop waiting.
    pub(crate) fn end(&self) {
        self.ended.store(true, Ordering::SeqCst);
        self.wake_paused();
    }

    /// True once the session has ended.
    pub(crate) fn has_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    /// Wakes the attached connection (deliveries were queued), resuming it if it is parked.
    pub(crate) fn notify(&self) {
        self.wake.notify_one();
        crate::net::park::wake(self.parked.load(Ordering::SeqCst));
    }

    /// Forgets the parked connection's `tag` (it was resumed), unless another parked since.
    pub(crate) fn clear_parked(&self, tag: u64) {
        let _ = self.parked.compare_exchange(
            tag,
            crate::net::park::NOT_PARKED,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    /// Waits until the backlog has shrunk since generation `seen`, or the session ended.
    pub(crate) async fn room_since(&self, seen: u64) {
        let shard = RoomShard::of(self.key);
        self.room_waiters.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.room_waiters);
        loop {
            let notified = shard.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.room_seq() != seen || self.has_ended() {
                break;
            }
            notified.await;
        }
    }
}

/// Where publishers paused on full Sessions wait (back-pressure), shared by the Sessions whose
/// keys fall in the same shard instead of a waiter list in every Session: paused publishers
/// are few, idle Sessions are many. Only a Session with paused publishers wakes its shard; a
/// wake-up meant for another Session of the shard is spurious: the waiter sees its own
/// Session's `room_seq` unchanged and waits again.
struct RoomShard {
    room: Notify,
}

/// Shards of [`RoomShard`] (a power of two).
const ROOM_SHARDS: usize = 64;

static ROOM: [RoomShard; ROOM_SHARDS] = [const {
    RoomShard {
        room: Notify::const_new(),
    }
}; ROOM_SHARDS];

impl RoomShard {
    /// The shard of the Session with `key`.
    fn of(key: u64) -> &'static RoomShard {
        // Session keys are random: their low bits spread them.
        &ROOM[(key as usize) & (ROOM_SHARDS - 1)]
    }
}

/// Counts a paused publisher on its Session while it waits.
struct Waiting<'a>(&'a AtomicU32);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
