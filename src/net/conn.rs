//! The task that drives one client connection: it reads from the socket, feeds the bytes and
//! the time to the protocol core ([`crate::protocol`]), carries out what the core asks for
//! (store commits and reads, waits), and writes what it produced, with one write call per
//! batch. Authentication (with its failure throttle) and the wait for a taken-over
//! connection are here, because they wait; every MQTT rule is in the core.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;
use tracing::{debug, info, warn};

use super::listener::Admission;
use crate::broker::metrics::ListenerEvent;
use crate::broker::{Broker, ConnLink, KickReason, Metrics, Verdict};
use crate::clock::Clock;
use crate::codec::Version;
use crate::config::{ListenerKind, QueueFullPolicy};
use crate::protocol::{self, AwaitingConnect, Close, Connected};
use crate::session::NEVER_EXPIRES;

/// Smallest read reservation: an idle connection holds little more than this.
const MIN_READ: usize = 512;
/// Largest read reservation, reached when reads keep filling the buffer.
const MAX_READ: usize = 64 * 1024;
/// Time allowed for the last packets (e.g. a v5 DISCONNECT) when a connection closes.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// After the broker closes a connection, how long it reads and discards what the client still
/// sends, so that the last packets it wrote are not destroyed by a reset...
const DRAIN_TIME: Duration = Duration::from_secs(1);
/// ...and how many bytes at most.
const DRAIN_BYTES: usize = 1024 * 1024;
/// A paused PUBLISH is tried again at least this often, whatever woke or did not wake it.
const PAUSE_RETRY: Duration = Duration::from_secs(1);

/// Where a connection came from, as its log lines name it: a listener (`tcp
/// 127.0.0.1:1883`) or a bridge of this broker (`bridge`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Via {
    /// A listener.
    Listener {
        /// Transport.
        kind: ListenerKind,
        /// The listener's address ([`listener_addr`]: a pointer, so that the admin API's
        /// record of each connection stays small).
        addr: &'static SocketAddr,
    },
    /// The local side of a bridge: an in-process connection, trusted (no password check and
    /// no ACL: the bridge's topic lines are its access control).
    Bridge,
}

/// `addr` as [`Via::Listener`] holds it: one copy per distinct listener address for the life
/// of the process (a few per broker), shared by all connections through it.
pub(crate) fn listener_addr(addr: SocketAddr) -> &'static SocketAddr {
    static ADDRS: std::sync::Mutex<Vec<&'static SocketAddr>> = std::sync::Mutex::new(Vec::new());
    let mut addrs = ADDRS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(known) = addrs.iter().find(|a| ***a == addr) {
        return known;
    }
    let leaked: &'static SocketAddr = Box::leak(Box::new(addr));
    addrs.push(leaked);
    leaked
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Via::Listener { kind, addr } => write!(f, "{kind} {addr}"),
            Via::Bridge => f.write_str("bridge"),
        }
    }
}

/// A Session Expiry Interval as the connect line shows it (`never` or `300s`), written only
/// when the line is.
struct Expiry(u32);

impl std::fmt::Display for Expiry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            NEVER_EXPIRES => f.write_str("never"),
            secs => write!(f, "{secs}s"),
        }
    }
}

/// Bytes a connection still waiting for its CONNECT holds in its read buffer, counted in
/// `pending_connect_bytes` and given back when dropped.
struct PendingBytes {
    broker: Arc<Broker>,
    held: u64,
}

impl PendingBytes {
    /// Records that the buffer now holds `bytes`; false if that takes all such connections
    /// over `max_pending_connect_bytes`.
    fn hold(&mut self, bytes: u64) -> bool {
        let total = &self.broker.metrics.pending_connect_bytes;
        if bytes > self.held {
            let now = total.fetch_add(bytes - self.held, Relaxed) + (bytes - self.held);
            self.held = bytes;
            return now <= self.broker.config.max_pending_connect_bytes;
        }
        total.fetch_sub(self.held - bytes, Relaxed);
        self.held = bytes;
        true
    }
}

impl Drop for PendingBytes {
    fn drop(&mut self) {
        self.broker
            .metrics
            .pending_connect_bytes
            .fetch_sub(self.held, Relaxed);
    }
}

/// The client of a connection once it is connected, for the line its end logs.
struct Attached {
    since: std::time::Instant,
    /// MQTT 5.0: the broker's DISCONNECT carries a reason code.
    v5: bool,
    /// In cluster mode, the revision of this connection's claim of its client id.
    claim: Option<u64>,
}

/// A CONNACK refusal code with its meaning in the client's protocol version (3.1.1's codes 1
/// to 5 mean other things than 5.0's).
fn connack_text(version: Version, code: crate::codec::ReasonCode) -> String {
    let v3 = match (version, code.0) {
        (Version::V5, _) => return code.to_string(),
        (_, 1) => "unacceptable protocol version",
        (_, 2) => "identifier rejected",
        (_, 3) => "server unavailable",
        (_, 4) => "bad user name or password",
        (_, 5) => "not authorized",
        _ => "refused",
    };
    format!("0x{:02X} ({v3})", code.0)
}

pub(crate) use crate::broker::metrics::LOG_BURST;

/// What a TLS listener learned from the client certificate, for `use_identity_as_username`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CertIdentity {
    /// The listener does not use certificate identities.
    NotUsed,
    /// The verified certificate's Common Name.
    Name(String),
    /// The listener needs one and the certificate has no Common Name.
    Missing,
}

/// A byte stream a connection runs over.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Unpin + Send + Sync {
    /// Resolves when a read may make progress, so that an idle connection need not hold a read
    /// buffer while it waits. Streams that cannot tell (TLS, WebSocket) resolve at once.
    fn readable(&self) -> impl std::future::Future<Output = ()> + Send {
        std::future::ready(())
    }

    /// Whether an idle connection over this stream can be parked ([`crate::net::park`]):
    /// only a plain socket, whose readiness the parked table can watch.
    const PARKS: bool = false;

    /// The socket, taken from tokio's poller, for a stream that [`Transport::PARKS`].
    fn into_socket(self) -> std::io::Result<std::net::TcpStream>
    where
        Self: Sized,
    {
        Err(std::io::Error::other("not a plain socket"))
    }
}

impl Transport for tokio::net::TcpStream {
    async fn readable(&self) {
        // An error shows up in the read that follows.
        let _ = tokio::net::TcpStream::readable(self).await;
    }

    const PARKS: bool = true;

    fn into_socket(self) -> std::io::Result<std::net::TcpStream> {
        self.into_std()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + Sync> Transport
    for tokio_rustls::server::TlsStream<S>
{
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + Sync> Transport for super::ws::WsStream<S> {}

/// The in-process stream of a bridge's local side.
impl Transport for tokio::io::DuplexStream {}

/// Where the protocol core of a connection is. Both states are boxed, so that the task of a
/// connection holds a pointer, not the larger of the two.
enum Phase {
    Connecting(Box<AwaitingConnect>),
    Connected(Box<Connected>),
    /// Between the two (or the CONNECT phase was cut short by shutdown).
    Gone,
}

/// An accepted CONNECT, authenticated and attached to its session.
struct Accepted {
    connect: Box<crate::codec::Connect>,
    plan: protocol::ConnectPlan,
    session: Arc<crate::broker::SessionHandle>,
    present: bool,
    username: Option<String>,
    /// In cluster mode, the revision of the connection's claim of its client id.
    claim: Option<u64>,
}

/// The I/O side of one connection.
struct Driver<S> {
    broker: Arc<Broker>,
    stream: S,
    peer: SocketAddr,
    rbuf: BytesMut,
    /// How much to reserve before a read: grows while reads fill the buffer, shrinks when
    /// traffic stops, so idle connections hold little memory.
    read_size: usize,
    link: ConnLink,
    identity: CertIdentity,
    /// A write was cut off mid-packet: nothing more may be written.
    torn: bool,
    /// In cluster mode, the connection's will is recorded for the other nodes.
    will_recorded: bool,
    /// The listener.
    via: Via,
    /// Set once connected.
    attached: Option<Attached>,
    /// Its places in the connection counts (`None` for a bridge's local side).
    admission: Option<Admission>,
    /// False once parking it failed (the parked table is unavailable, or would not watch its
    /// socket): it then keeps its task, rather than trying again at every quiet moment.
    may_park: bool,
}

/// A connection parked while idle ([`crate::net::park`]): what its driver needs to go on,
/// without the task, the read buffer or tokio's registration of the socket.
pub(crate) struct Parked {
    /// The socket (`None` if taking it from tokio failed: the connection then ends).
    pub(super) socket: Option<std::net::TcpStream>,
    /// The generation of its place in the table of parked connections.
    pub(super) generation: u32,
    core: protocol::Resting,
    /// Also holds the client's address and listener ([`ConnLink::client`]).
    link: ConnLink,
    attached: Option<Attached>,
    will_recorded: bool,
    admission: Option<Admission>,
}

impl Parked {
    pub(super) fn broker(&self) -> &Arc<Broker> {
        self.core.broker()
    }

    pub(super) fn belongs_to(&self, broker: &Arc<Broker>) -> bool {
        Arc::ptr_eq(self.core.broker(), broker)
    }

    /// The session and link that must resume the connection when woken.
    pub(super) fn markers(&self) -> (Arc<crate::broker::SessionHandle>, ConnLink) {
        (Arc::clone(self.core.session()), self.link.clone())
    }

    /// Forgets the markers of `tag` (the connection is being resumed).
    pub(super) fn unmark(&self, tag: u64) {
        self.core.session().clear_parked(tag);
        self.link.clear_parked(tag);
    }
}

/// Resumes a parked connection: its socket back with tokio, its loop where it left off.
pub(crate) async fn resume(parked: Box<Parked>) {
    resume_with(parked, true).await;
}

/// [`resume`]; without `may_park`, the connection keeps its task from now on.
async fn resume_with(parked: Box<Parked>, may_park: bool) {
    let Parked {
        socket,
        generation: _,
        core,
        link,
        attached,
        will_recorded,
        admission,
    } = *parked;
    let broker = Arc::clone(core.broker());
    // Set when the CONNECT was accepted, before the connection could park.
    let (peer, via) = link
        .client()
        .map_or((SocketAddr::from(([0, 0, 0, 0], 0)), Via::Bridge), |c| {
            (c.peer, c.listener)
        });
    let phase = Phase::Connected(core.resume(peer));
    let rest = DriverParts {
        broker,
        peer,
        link,
        via,
        attached,
        will_recorded,
        admission,
    };
    match socket.map(tokio::net::TcpStream::from_std) {
        Some(Ok(stream)) => Box::pin(drive(rest.around(stream, may_park), phase)).await,
        failed => {
            if let Some(Err(e)) = failed {
                warn!(error = %e, peer = %peer, "a parked socket could not be resumed: closing its connection");
            }
            // The socket is gone: the connection ends as if the client had closed it.
            let mut driver = rest.around(tokio::io::duplex(1).0, false);
            driver.torn = true;
            let _gone = driver.link.gone_guard();
            Box::pin(driver.finish(phase, Close::Io)).await;
        }
    }
}

/// What a resumed connection's driver is made of, besides its stream.
struct DriverParts {
    broker: Arc<Broker>,
    peer: SocketAddr,
    link: ConnLink,
    via: Via,
    attached: Option<Attached>,
    will_recorded: bool,
    admission: Option<Admission>,
}

impl DriverParts {
    /// The driver around `stream`, with empty buffers.
    fn around<S>(self, stream: S, may_park: bool) -> Driver<S> {
        Driver {
            broker: self.broker,
            stream,
            peer: self.peer,
            rbuf: BytesMut::new(),
            read_size: MIN_READ,
            link: self.link,
            identity: CertIdentity::NotUsed,
            torn: false,
            will_recorded: self.will_recorded,
            via: self.via,
            attached: self.attached,
            admission: self.admission,
            may_park,
        }
    }
}

/// Serves one client connection to completion. `queue_full` is the listener's policy for
/// PUBLISH packets that meet a full queue.
///
/// Not an `async fn`: the future is built around the driver alone, so that it does not also
/// keep the arguments it was made from for the life of the connection.
pub(crate) fn serve<S>(
    broker: Arc<Broker>,
    stream: S,
    peer: SocketAddr,
    via: Via,
    identity: CertIdentity,
    queue_full: QueueFullPolicy,
    admission: Option<Admission>,
) -> impl std::future::Future<Output = ()> + Send
where
    S: Transport,
{
    let link = ConnLink::new(broker.next_connection_id());
    let driver = Driver {
        broker: Arc::clone(&broker),
        stream,
        peer,
        rbuf: BytesMut::new(),
        read_size: MIN_READ,
        link,
        identity,
        torn: false,
        will_recorded: false,
        via,
        attached: None,
        admission,
        may_park: true,
    };
    let phase = Phase::Connecting(Box::new(AwaitingConnect::new(broker, peer, queue_full)));
    drive(driver, phase)
}

/// Serves the local side of a bridge: an in-process connection over `stream`, trusted (see
/// [`Via::Bridge`]), whose publishers meet back-pressure at a full queue.
pub(crate) fn serve_bridge(
    broker: Arc<Broker>,
    stream: tokio::io::DuplexStream,
) -> impl std::future::Future<Output = ()> + Send {
    let peer = SocketAddr::from(([0, 0, 0, 0], 0));
    serve(
        broker,
        stream,
        peer,
        Via::Bridge,
        CertIdentity::NotUsed,
        QueueFullPolicy::Backpressure,
        None,
    )
}

/// Runs a connection from its CONNECT (or from where it was parked) to its end, or until it
/// parks. The driver and the phase are used where they are (arguments of the future), not
/// moved into further locals.
async fn drive<S: Transport>(mut driver: Driver<S>, mut phase: Phase) {
    let mut gone = driver.link.gone_guard();
    match driver.run(&mut phase).await {
        Some(close) => {
            // Boxed like the CONNECT phase: short-lived, and not part of every idle task's
            // future.
            Box::pin(driver.finish(phase, close)).await;
        }
        None => {
            // Parking: the connection goes on without this task.
            gone.disarm();
            let Phase::Connected(core) = phase else {
                unreachable!("only a connected connection parks");
            };
            match core.rest() {
                Ok(resting) => {
                    let deadline = resting.deadline();
                    let parked = Box::new(driver.into_parked(resting));
                    if let Err(parked) = crate::net::park::park(parked, deadline) {
                        // Not parked after all: go on in this task, for good (trying again
                        // at every quiet moment would nest one more resumption in this task
                        // each time, without bound).
                        Box::pin(resume_with(parked, false)).await;
                    }
                }
                // Busy after all (not expected: the loop parks only at rest).
                Err(core) => Box::pin(drive(driver, Phase::Connected(core))).await,
            }
        }
    }
}

impl<S: Transport> Driver<S> {
    /// What the connection keeps while parked. Only called for a connected plain socket
    /// (`S::PARKS`), with an empty read buffer.
    fn into_parked(self, core: protocol::Resting) -> Parked {
        let socket = match self.stream.into_socket() {
            Ok(socket) => Some(socket),
            Err(e) => {
                warn!(error = %e, peer = %self.peer, "an idle socket could not be taken from the runtime: closing its connection");
                None
            }
        };
        Parked {
            socket,
            generation: 0,
            core,
            link: self.link,
            attached: self.attached,
            will_recorded: self.will_recorded,
            admission: self.admission,
        }
    }

    /// Runs the connection: `Some` with why it ended, `None` when it is idle and may park.
    async fn run(&mut self, phase: &mut Phase) -> Option<Close> {
        if let Phase::Connected(core) = phase {
            // Resumed after parking.
            return self.main_loop(core).await.err();
        }
        let Phase::Connecting(awaiting) = phase else {
            return Some(Close::Io);
        };
        // The CONNECT phase is boxed: its state is large and short-lived, and would otherwise
        // be part of every connection's task for its whole life.
        let shutdown = self.broker.shutdown.clone();
        let accepted = tokio::select! {
            accepted = Box::pin(self.connect_phase(awaiting)) => accepted,
            _ = shutdown.cancelled() => Err(Close::Kicked(KickReason::Shutdown)),
        };
        let a = match accepted {
            Ok(accepted) => accepted,
            Err(close) => return Some(close),
        };
        self.log_connected(&a);
        let clean_start = a.connect.clean_start;
        let now = self.broker.clock.now();
        let core = {
            // In a block, so that the boxes of the CONNECT phase are freed at its end, not
            // kept for the life of the connection.
            let Phase::Connecting(awaiting) = std::mem::replace(phase, Phase::Gone) else {
                return Some(Close::Io);
            };

            let Accepted {
                connect,
                plan,
                session,
                present,
                username,
                ..
            } = a;
            awaiting.accept(*connect, plan, session, present, username, now)
        };
        *phase = Phase::Connected(Box::new(core));
        let Phase::Connected(core) = phase else {
            return Some(Close::Io);
        };
        if let Some(cluster) = &self.broker.cluster
            && self.via != Via::Bridge
        {
            // Before the CONNACK goes out: another node can publish the will if this one
            // dies.
            let will = core.will();
            // Boxed: a short wait, kept out of every connection's task.
            self.will_recorded = Box::pin(cluster.will_connected(
                &self.broker,
                &core.session().client_id,
                self.link.id,
                will,
                core.session_expiry(),
                clean_start,
            ))
            .await;
        }
        self.main_loop(core).await.err()
    }

    /// The line of a new connection: who, from where, through which listener, with what.
    fn log_connected(&mut self, a: &Accepted) {
        let c = &a.connect;
        let protocol = match (c.version, c.mqtt31) {
            (_, true) => "3.1",
            (Version::V311, false) => "3.1.1",
            (Version::V5, false) => "5.0",
        };
        let expiry = Expiry(a.plan.request.expiry_interval);
        let username = a
            .username
            .as_deref()
            .or(c.username.as_deref())
            .unwrap_or("");
        self.link.set_client(crate::broker::ClientInfo {
            peer: self.peer,
            listener: self.via,
            protocol: match (c.version, c.mqtt31) {
                (_, true) => crate::broker::ProtocolName::V31,
                (Version::V311, false) => crate::broker::ProtocolName::V311,
                (Version::V5, false) => crate::broker::ProtocolName::V5,
            },
            username: a.username.as_deref().map(Box::from),
            keep_alive: a.plan.keep_alive,
            connected_at: u32::try_from(crate::store::record::unix_secs(self.broker.clock.wall()))
                .unwrap_or(u32::MAX),
            will: c.will.as_ref().map(|w| {
                Box::new(crate::broker::WillInfo {
                    topic: w.topic.clone(),
                    qos: w.qos as u8,
                    retain: w.retain,
                    delay_interval: w.delay_interval,
                    payload_bytes: w.payload.len(),
                })
            }),
        });
        info!(
            client_id = &*a.session.client_id,
            peer = %self.peer,
            listener = %self.via,
            protocol,
            clean_start = c.clean_start,
            session_expiry = %expiry,
            keep_alive = a.plan.keep_alive,
            username,
            session_present = a.present,
            "client connected"
        );
        let metrics = &self.broker.metrics;
        let now = metrics.clients_connected.fetch_add(1, Relaxed) + 1;
        metrics.clients_maximum.fetch_max(now, Relaxed);
        metrics
            .per_listener
            .count(self.via, ListenerEvent::Connected);
        self.attached = Some(Attached {
            since: std::time::Instant::now(),
            v5: c.version == Version::V5,
            claim: a.claim,
        });
    }

    /// Waits (bounded) for the CONNECT, authenticates it and attaches its session.
    async fn connect_phase(&mut self, awaiting: &mut AwaitingConnect) -> Result<Accepted, Close> {
        if self.via == Via::Bridge {
            awaiting.trust();
        }
        let limit = self.broker.config.connect_timeout;
        let connect = match timeout(limit, self.read_connect(awaiting)).await {
            Err(_) => {
                if let Some(held_back) = self.broker.metrics.connect_log.allow(LOG_BURST) {
                    info!(peer = %self.peer, listener = %self.via, held_back, "no CONNECT in time: closed");
                }
                return Err(Close::Io);
            }
            Ok(result) => result?,
        };
        Metrics::inc(&self.broker.metrics.packets_received);
        let plan = awaiting.plan(&connect).map_err(|code| {
            let text = connack_text(connect.version, code);
            if let Some(held_back) = self.broker.metrics.connect_log.allow(LOG_BURST) {
                info!(peer = %self.peer, listener = %self.via, client_id = connect.client_id.as_str(), code = %text, held_back, "CONNECT refused");
            }
            awaiting.refuse(&connect, code)
        })?;
        let username = self.authenticate(&connect).await.map_err(|code| {
            let username = connect.username.as_deref().unwrap_or("");
            let text = connack_text(connect.version, code);
            if let Some(held_back) = self.broker.metrics.connect_log.allow(LOG_BURST) {
                info!(peer = %self.peer, listener = %self.via, client_id = connect.client_id.as_str(), username, code = %text, held_back, "login refused");
            }
            awaiting.refuse(&connect, code)
        })?;
        let mut plan = plan;
        // Only a verified name owns a session: one checked against the password file, or a
        // certificate identity (without a password file a username is only a label).
        let verified = !matches!(self.identity, CertIdentity::NotUsed)
            || (connect.username.is_some() && self.broker.access.files().passwords.is_some());
        plan.request.owner = username.as_deref().filter(|_| verified).map(Arc::from);
        // A client id the broker assigned is unique already: nothing to claim.
        let mut claimed = None;
        if self.via != Via::Bridge
            && !plan.assigned
            && let Some(cluster) = &self.broker.cluster
        {
            // `session_owner_check` across nodes: before the claim takes anything over.
            if self.broker.config.session_owner_check
                && !crate::cluster::follow::owner_allows(
                    &self.broker,
                    &plan.request.client_id,
                    plan.request.owner.as_deref(),
                )
                .await
            {
                let code = protocol::refusal(&Verdict::NotAuthorized, connect.version)
                    .unwrap_or(crate::codec::ReasonCode::NOT_AUTHORIZED);
                let username = username.as_deref().unwrap_or("");
                info!(peer = %self.peer, listener = %self.via, client_id = connect.client_id.as_str(), username, "CONNECT refused: the session belongs to another user (on another node)");
                return Err(awaiting.refuse(&connect, code));
            }
            claimed = self
                .claim(cluster, &connect, &plan.request)
                .await
                .map_err(|code| awaiting.refuse(&connect, code))?;
            let request = &plan.request;
            if let Some(c) = &claimed
                && !request.clean_start
                && request.expiry_interval != 0
                && !crate::cluster::follow::adopt(
                    &self.broker,
                    &request.client_id,
                    c,
                    request.window,
                )
                .await
            {
                // Its Session is on another node and could not be moved here now.
                if let Some(cluster) = &self.broker.cluster {
                    cluster.release(&request.client_id, self.link.id);
                }
                return Err(awaiting.refuse(
                    &connect,
                    match connect.version {
                        Version::V5 => crate::codec::ReasonCode::SERVER_UNAVAILABLE,
                        Version::V311 => crate::codec::ReasonCode::V3_SERVER_UNAVAILABLE,
                    },
                ));
            }
        }
        let attached = self
            .broker
            .attach(&plan.request, &self.link, awaiting.pending_mut())
            .await;
        let (session, present) = match attached {
            Ok(attached) => {
                if claimed.is_some()
                    && let Some(cluster) = &self.broker.cluster
                    && cluster.lost_claim(&plan.request.client_id, self.link.id)
                {
                    // Another node took the client id over while this one attached.
                    self.link.kick(KickReason::TakenOver);
                }
                if let Some(c) = &claimed {
                    crate::cluster::follow::connected(&self.broker, &attached.0, c.revision);
                }
                attached
            }
            Err(crate::broker::AttachError::NotOwner) => {
                if claimed.is_some()
                    && let Some(cluster) = &self.broker.cluster
                {
                    cluster.release(&plan.request.client_id, self.link.id);
                }
                let code = protocol::refusal(&Verdict::NotAuthorized, connect.version)
                    .unwrap_or(crate::codec::ReasonCode::NOT_AUTHORIZED);
                let username = username.as_deref().unwrap_or("");
                info!(peer = %self.peer, listener = %self.via, client_id = connect.client_id.as_str(), username, "CONNECT refused: the session belongs to another user");
                return Err(awaiting.refuse(&connect, code));
            }
        };
        Ok(Accepted {
            connect,
            plan,
            session,
            present,
            username,
            claim: claimed.map(|c| c.revision),
        })
    }

    /// Publishes or schedules the will of the connection that ended (or cancels it). In
    /// cluster mode, where the will was recorded for the other nodes: a will with a delay
    /// is left to the cluster (marked ended, then published by whichever node's sweep finds
    /// it due, unless the client connects again first anywhere); a client taken over by
    /// another node is back, so its delayed will is cancelled; the record goes once the will
    /// is settled here.
    fn hand_over_will(
        &self,
        will: Option<crate::codec::Will>,
        session: &Arc<crate::broker::SessionHandle>,
        away: Option<crate::broker::Absence>,
        close: Close,
    ) {
        let cluster = self.broker.cluster.as_ref().filter(|_| self.will_recorded);
        let Some(cluster) = cluster else {
            if let Some(will) = will {
                self.broker.schedule_will(will, session, away, None);
            }
            return;
        };
        let (broker, conn) = (Arc::clone(&self.broker), self.link.id);
        let client_id = Arc::clone(&session.client_id);
        let done = {
            let (broker, client_id) = (Arc::clone(&broker), Arc::clone(&client_id));
            Box::new(move || crate::cluster::will_done(&broker, &client_id, conn))
                as crate::broker::WillDone
        };
        match will {
            None => done(),
            Some(will) if will.delay_interval > 0 && away.is_some() => {
                if matches!(close, Close::Kicked(KickReason::TakenOver))
                    && cluster.taken_elsewhere(&client_id)
                {
                    done();
                    return;
                }
                let session = Arc::clone(session);
                let resumed = away.as_ref().map(|a| a.token.clone());
                tokio::spawn(async move {
                    let left = match &broker.cluster {
                        Some(c) => c.will_ended(&client_id, conn).await,
                        None => crate::cluster::WillLeft::Failed,
                    };
                    if resumed.is_some_and(|t| t.is_cancelled()) {
                        // The client came back here meanwhile: no will.
                        done();
                    } else if left == crate::cluster::WillLeft::Failed {
                        broker.schedule_will(will, &session, away, Some(done));
                    }
                });
            }
            Some(will) => {
                // Published by whoever removes the record: here, unless another node found
                // this one gone and published it already.
                let session = Arc::clone(session);
                tokio::spawn(async move {
                    let take = match &broker.cluster {
                        Some(c) => c.take_will(&client_id, conn).await,
                        None => true,
                    };
                    if take {
                        broker.schedule_will(will, &session, away, None);
                    }
                });
            }
        }
    }

    /// Claims the client id for this connection across the cluster. Refused as busy if
    /// another node claimed it at the same moment; while NATS cannot confirm the claim, a
    /// durable session is refused as unavailable and an ephemeral one connects on this
    /// node alone. True if the claim was recorded.
    async fn claim(
        &self,
        cluster: &crate::cluster::Cluster,
        connect: &crate::codec::Connect,
        request: &crate::broker::AttachRequest,
    ) -> Result<Option<crate::cluster::Claimed>, crate::codec::ReasonCode> {
        use crate::cluster::ClaimError;
        use crate::codec::ReasonCode;
        let client_id = &*request.client_id;
        let durable = request.expiry_interval != 0;
        match cluster.claim(client_id, self.link.id, durable).await {
            Ok(claimed) => Ok(Some(claimed)),
            Err(ClaimError::Conflict) => {
                info!(peer = %self.peer, client_id, "CONNECT refused: another node claimed the client id at the same moment");
                Err(match connect.version {
                    Version::V5 => ReasonCode::SERVER_BUSY,
                    Version::V311 => ReasonCode::V3_SERVER_UNAVAILABLE,
                })
            }
            Err(ClaimError::Unavailable) if durable => {
                warn!(peer = %self.peer, client_id, "CONNECT refused: the cluster cannot record the session's owner (NATS or JetStream unavailable)");
                Err(match connect.version {
                    Version::V5 => ReasonCode::SERVER_UNAVAILABLE,
                    Version::V311 => ReasonCode::V3_SERVER_UNAVAILABLE,
                })
            }
            Err(ClaimError::Unavailable) => {
                warn!(peer = %self.peer, client_id, "the cluster cannot record the session's owner (NATS or JetStream unavailable): connected on this node alone");
                Ok(None)
            }
        }
    }

    /// Reads until the first packet. The read buffer counts against the bytes all
    /// connections waiting for their CONNECT may hold (`max_pending_connect_bytes`); a
    /// connection that would go over it is closed.
    async fn read_connect(
        &mut self,
        awaiting: &mut AwaitingConnect,
    ) -> Result<Box<crate::codec::Connect>, Close> {
        let mut held = PendingBytes {
            broker: Arc::clone(&self.broker),
            held: 0,
        };
        loop {
            if let Some(connect) = awaiting.read_connect(&mut self.rbuf)? {
                return Ok(connect);
            }
            self.read_more().await?;
            if !held.hold(self.rbuf.capacity() as u64) {
                if let Some(held_back) = self.broker.metrics.connect_log.allow(LOG_BURST) {
                    info!(peer = %self.peer, listener = %self.via, held_back, "connections awaiting CONNECT hold max_pending_connect_bytes: closed");
                }
                return Err(Close::Io);
            }
        }
    }

    /// Checks the credentials (or the certificate identity). On refusal, waits the throttle
    /// delay and returns the CONNACK code to send.
    async fn authenticate(
        &self,
        connect: &crate::codec::Connect,
    ) -> Result<Option<String>, crate::codec::ReasonCode> {
        if self.via == Via::Bridge {
            return Ok(None);
        }
        let identity = match &self.identity {
            CertIdentity::NotUsed => None,
            CertIdentity::Name(name) => Some(name.clone()),
            CertIdentity::Missing => {
                return Err(protocol::refusal(&Verdict::NotAuthorized, connect.version)
                    .unwrap_or(crate::codec::ReasonCode::NOT_AUTHORIZED));
            }
        };
        let access = &self.broker.access;
        // Checks queue behind each other (per address, and for the verifier threads): the
        // wait is bounded like the wait for the CONNECT itself.
        let checked = timeout(
            self.broker.config.connect_timeout,
            access.authenticate(
                identity,
                connect.username.clone(),
                connect.password.clone(),
                Some(self.peer.ip()),
            ),
        )
        .await;
        let Ok(verdict) = checked else {
            if let Some(held_back) = self.broker.metrics.connect_log.allow(LOG_BURST) {
                info!(peer = %self.peer, listener = %self.via, held_back, "password check not reached within connect_timeout: refused as busy");
            }
            return Err(match connect.version {
                Version::V5 => crate::codec::ReasonCode::SERVER_BUSY,
                Version::V311 => crate::codec::ReasonCode::V3_SERVER_UNAVAILABLE,
            });
        };
        let Some(refusal) = protocol::refusal(&verdict, connect.version) else {
            access.succeeded(self.peer.ip());
            return Ok(match verdict {
                Verdict::Accepted(username) => username,
                _ => None,
            });
        };
        let delay = access.failure_delay(self.peer.ip());
        debug!(peer = %self.peer, ?delay, %refusal, "authentication failed");
        // Real time: the delay guards the process against guessing, like a socket timeout,
        // and must pass even on a test clock that nobody moves.
        tokio::time::sleep(delay).await;
        Err(refusal)
    }

    async fn read_more(&mut self) -> Result<(), Close> {
        let spare = self.prepare_read();
        match self.stream.read_buf(&mut self.rbuf).await {
            Ok(0) | Err(_) => Err(Close::Io),
            Ok(n) => {
                self.count_read(n);
                self.adapt_read_size(n, spare);
                Ok(())
            }
        }
    }

    fn count_read(&self, n: usize) {
        self.broker
            .metrics
            .bytes_received
            .fetch_add(n as u64, Relaxed);
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

    /// Serves the connected client: `Err` with why the connection ends, `Ok` once it is idle
    /// and may park.
    async fn main_loop(&mut self, core: &mut Connected) -> Result<(), Close> {
        let session = Arc::clone(core.session());
        let clock = self.broker.clock.clone();
        let link = self.link.clone();
        let shutdown = self.broker.shutdown.clone();
        // What waits on the store or on a slow client is boxed, so that the task of an idle
        // connection (most of them) keeps only the small state of the wait below.
        loop {
            core.handle_input(&mut self.rbuf, clock.now())?;
            if let Some(request) = core.poll_load() {
                Metrics::inc(&self.broker.metrics.store_reads);
                let read = Box::pin(Self::read_backlog(&self.broker, &session, request)).await;
                core.loaded(request, read)?;
            }
            core.poll_transmit(clock.now());
            if let Some(commit) = core.poll_commit() {
                Box::pin(self.commit(core, commit)).await?;
            }
            if core.output().is_some() {
                // Most writes complete at once: tried in place first (a write is cancel safe,
                // and what it wrote is gone from the buffer), boxed only if it has to wait.
                match self.flush(core).now_or_never() {
                    Some(flushed) => flushed?,
                    None => Box::pin(self.flush(core)).await?,
                }
            }
            let more_to_send = core.more_to_send();
            let idle = self.rbuf.is_empty() && self.read_size == MIN_READ;
            if self.rbuf.is_empty() && (idle || self.rbuf.capacity() > 2 * MAX_READ) {
                // A quiet connection holds no read buffer while it waits (and an occasional
                // large packet's buffer is given back).
                self.rbuf = BytesMut::new();
            }
            if core.stuck() {
                debug!(
                    client_id = &*session.client_id,
                    "paused with acknowledgements unread: closing"
                );
                return Err(Close::PausedWithAcksUnread);
            }
            let paused = core.paused_on_any();
            let is_paused = !paused.is_empty();
            let room = is_paused.then(|| {
                // Room in any of them. The retry period (real time, a safety net) covers room
                // made where nobody notifies: the store freeing bytes, a failed commit.
                Box::pin(async move {
                    let waits = paused
                        .iter()
                        .map(|(full, seen)| Box::pin(full.room_since(*seen)));
                    let _ = timeout(PAUSE_RETRY, futures_util::future::select_all(waits)).await;
                })
            });
            let reading = core.wants_read();
            let timer = core.poll_timeout();
            // Parked once quiet for a while with nothing in progress; the sleep is real time (a
            // resource decision, not protocol time) and starts again with every wake-up.
            // Whatever the read size grew to: a resumed connection starts again from the
            // smallest.
            let park_after = self.broker.config.park_after.filter(|_| {
                S::PARKS
                    && self.may_park
                    && self.rbuf.is_empty()
                    && reading
                    && !is_paused
                    && !more_to_send
                    && core.at_rest()
            });
            tokio::select! {
                biased;
                _ = link.kicked() => {
                    return Err(Close::Kicked(link.kick_reason().unwrap_or(KickReason::Shutdown)));
                }
                _ = shutdown.cancelled() => return Err(Close::Kicked(KickReason::Shutdown)),
                _ = sleep_until(&clock, timer), if timer.is_some() => {
                    core.handle_timeout(clock.now())?;
                }
                _ = async {
                    if let Some(room) = room {
                        room.await;
                    }
                }, if is_paused => {}
                read = async {
                    if idle {
                        self.stream.readable().await;
                    }
                    let spare = self.prepare_read();
                    (self.stream.read_buf(&mut self.rbuf).await, spare)
                }, if reading => match read {
                    (Ok(n), spare) if n > 0 => {
                        self.count_read(n);
                        self.adapt_read_size(n, spare);
                    }
                    _ => return Err(Close::Io),
                },
                _ = session.wake.notified(), if !more_to_send => {}
                _ = std::future::ready(()), if more_to_send => {}
                _ = park_sleep(park_after), if park_after.is_some() => return Ok(()),
            }
        }
    }

    /// Reads a window of the session's backlog from the store (`None` on failure, logged).
    async fn read_backlog(
        broker: &Broker,
        session: &crate::broker::SessionHandle,
        request: crate::session::LoadRequest,
    ) -> Option<Vec<crate::session::Delivery>> {
        let store = broker.store.as_ref()?;
        match store.read_queue(session.store_key(), request).await {
            Ok(read) => Some(read),
            Err(e) => {
                tracing::error!(client_id = &*session.client_id, error = %e, "reading the queue from the store failed");
                None
            }
        }
    }

    /// Commits what the core asks for, waits for the other connections' commits its
    /// deliveries depend on, and reports back.
    async fn settle(&mut self, core: &mut Connected) -> Result<(), Close> {
        match core.poll_commit() {
            Some(commit) => self.commit(core, commit).await,
            None => Ok(()),
        }
    }

    /// Carries out `commit` (from [`Connected::poll_commit`]), see [`Driver::settle`].
    async fn commit(
        &mut self,
        core: &mut Connected,
        commit: protocol::Commit,
    ) -> Result<(), Close> {
        // In cluster mode the other nodes' copy comes first: an acknowledgement waits for
        // both, and a message NATS did not confirm is not acknowledged.
        let forwarded = self.broker.forward(&commit.cluster).await;
        let ok = if commit.must_wait {
            // A batch NATS did not take is not committed either: it fails as a whole, as
            // for a store failure.
            let ok = forwarded && self.broker.commit(commit.ops).await;
            if !ok {
                self.broker.submit(commit.redo_on_failure);
            }
            ok
        } else {
            self.broker.submit(commit.ops);
            forwarded
        };
        core.committed(ok)?;
        if !commit.foreign.is_empty() {
            let shutdown = self.broker.shutdown.clone();
            for gate in commit.foreign {
                tokio::select! {
                    _ = gate.settled() => {}
                    _ = shutdown.cancelled() => break,
                }
            }
            // Deliveries held by those gates can go out now.
            core.session().notify();
        }
        Ok(())
    }

    /// Writes what the core produced. Gives up if the connection is kicked, the broker shuts
    /// down, or the keep alive runs out while the client is not reading. Each partial write
    /// advances the buffer, so an interrupted flush is known to be torn.
    async fn flush(&mut self, core: &mut Connected) -> Result<(), Close> {
        let deadline = core.poll_timeout();
        let Some(out) = core.output() else {
            return Ok(());
        };
        let total = out.len();
        self.write_all(out, deadline).await?;
        out.clear();
        if out.capacity() > 2 * protocol::WRITE_BUDGET
            || (out.capacity() > MAX_READ && total < MIN_READ)
        {
            // Give back a buffer grown by a burst once traffic is light again.
            *out = BytesMut::new();
        }
        Ok(())
    }

    async fn write_all(
        &mut self,
        buf: &mut BytesMut,
        deadline: Option<Instant>,
    ) -> Result<(), Close> {
        let link = self.link.clone();
        let shutdown = self.broker.shutdown.clone();
        let clock = self.broker.clock.clone();
        let total = buf.len();
        while !buf.is_empty() {
            let outcome = tokio::select! {
                written = self.stream.write_buf(buf) => match written {
                    Ok(n) if n > 0 => {
                        self.broker.metrics.bytes_sent.fetch_add(n as u64, Relaxed);
                        Ok(())
                    }
                    _ => Err(Close::Io),
                },
                _ = link.kicked() => {
                    Err(Close::Kicked(link.kick_reason().unwrap_or(KickReason::Shutdown)))
                }
                _ = shutdown.cancelled() => Err(Close::Kicked(KickReason::Shutdown)),
                _ = sleep_until(&clock, deadline), if deadline.is_some() => Err(Close::KeepAlive),
            };
            if let Err(close) = outcome {
                self.torn = buf.len() != total;
                return Err(close);
            }
        }
        // TLS and WebSocket streams may hold written bytes until flushed.
        let flushed = tokio::select! {
            flushed = self.stream.flush() => flushed.map_err(|_| Close::Io),
            _ = link.kicked() => {
                Err(Close::Kicked(link.kick_reason().unwrap_or(KickReason::Shutdown)))
            }
            _ = shutdown.cancelled() => Err(Close::Kicked(KickReason::Shutdown)),
        };
        flushed
    }

    /// Ends the connection: settle the store, detach from the session and hand over the will
    /// (so a takeover waiting on this connection can proceed at once), then a last v5
    /// DISCONNECT where due and the socket close.
    async fn finish(&mut self, phase: Phase, close: Close) {
        let mut close = close;
        let mut out = match phase {
            Phase::Connecting(mut awaiting) => std::mem::take(awaiting.output()),
            Phase::Gone => BytesMut::new(),
            Phase::Connected(mut core) => {
                // Output already produced goes out only if what it acknowledges is committed.
                if let Err(failure) = self.settle(&mut core).await {
                    close = close.then(failure);
                }
                let ending = core.end(close);
                if let Close::Violation { .. } = close {
                    Metrics::inc(&self.broker.metrics.protocol_errors);
                }
                if let Some(a) = &self.attached {
                    let metrics = &self.broker.metrics;
                    metrics.clients_connected.fetch_sub(1, Relaxed);
                    metrics
                        .per_listener
                        .count(self.via, ListenerEvent::Disconnected);
                    let reason_code = close.outcome().0.filter(|_| a.v5).map(|c| c.to_string());
                    info!(
                        client_id = &*ending.session.client_id,
                        peer = %self.peer,
                        reason = close.describe(),
                        reason_code = reason_code.as_deref().unwrap_or(""),
                        duration = ?a.since.elapsed(),
                        "client disconnected"
                    );
                }
                let away = self.broker.detach(&ending.session, self.link.id);
                if let Some(cluster) = &self.broker.cluster
                    && away.is_some()
                    && let Some(claim) = self.attached.as_ref().and_then(|a| a.claim)
                {
                    // The Session goes on: its state for whichever node the client comes to.
                    // It moved if another node claimed the client id (a new connection here
                    // holds the claim of this node instead).
                    let moved = cluster.taken_elsewhere(&ending.session.client_id);
                    crate::cluster::follow::left(&self.broker, &ending.session, claim, moved);
                }
                self.hand_over_will(ending.will, &ending.session, away, close);
                if let Some(cluster) = &self.broker.cluster {
                    cluster.release(&ending.session.client_id, self.link.id);
                }
                core.output().map(std::mem::take).unwrap_or_default()
            }
        };
        self.link.set_gone();
        if !out.is_empty() && !self.torn {
            let total = out.len() as u64;
            let written = timeout(CLOSE_GRACE, async {
                self.stream.write_all_buf(&mut out).await?;
                self.stream.flush().await
            })
            .await;
            if matches!(written, Ok(Ok(()))) {
                self.broker.metrics.bytes_sent.fetch_add(total, Relaxed);
            }
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

/// Sleeps for `after` in real time (for ever without it); at least a millisecond, so that a
/// connection resumed because its socket is readable sees that readiness (tokio learns it
/// from its poller) before it could park again.
async fn park_sleep(after: Option<Duration>) {
    match after {
        Some(after) => tokio::time::sleep(after.max(Duration::from_millis(1))).await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `deadline` on the broker's clock (for ever without one).
async fn sleep_until(clock: &Clock, deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => clock.sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle connection holds its parked record (with its protocol state at rest inline) and
    /// its session: each stays small (a hundred thousand idle connections hold a hundred
    /// thousand of each). A busy connection's task future is bounded too.
    #[tokio::test]
    async fn an_idle_connection_holds_little() {
        let config = crate::config::Config::default();
        let access = crate::broker::AccessControl::load(&config).expect("no files");
        let broker = Broker::new(config, None, access);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (stream, peer) = listener.accept().await.expect("accept");
        let via = Via::Listener {
            kind: ListenerKind::Tcp,
            addr: listener_addr(addr),
        };
        let task = serve(
            broker,
            stream,
            peer,
            via,
            CertIdentity::NotUsed,
            QueueFullPolicy::Backpressure,
            None,
        );
        let future = std::mem::size_of_val(&task);
        let core = std::mem::size_of::<Connected>();
        let parked = std::mem::size_of::<Parked>();
        let resting = std::mem::size_of::<protocol::Resting>();
        let session = std::mem::size_of::<crate::broker::SessionHandle>();
        eprintln!(
            "connection future {future} B, core {core} B, parked {parked} B (at rest {resting} B), session {session} B"
        );
        // Debug builds lay futures out less tightly than release builds.
        assert!(future <= 2560, "connection future: {future} bytes");
        assert!(core <= 512, "protocol core: {core} bytes");
        // glibc hands out chunks of the size asked plus 8, rounded up to 16: a parked record
        // of 248 bytes takes 256, and a session of 312 (plus the Arc's 16) takes 336.
        assert!(parked <= 248, "parked connection: {parked} bytes");
        assert!(resting <= 144, "protocol state at rest: {resting} bytes");
        assert!(session <= 312, "session: {session} bytes");
        let link = std::mem::size_of::<std::sync::OnceLock<crate::broker::ClientInfo>>();
        assert!(
            link <= 88,
            "the admin API's record of a connection: {link} bytes"
        );
    }
}
