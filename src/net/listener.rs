//! Listeners: TCP, TLS, WebSocket and WebSocket over TLS. Each accepted connection gets
//! TCP_NODELAY, its handshakes (bounded in time), and then the same connection handler.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU8;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::broker::metrics::ListenerEvent;
use crate::broker::{Broker, Metrics};
use crate::config::{Config, ListenerConfig, ListenerKind, QueueFullPolicy};

use super::conn::{self, CertIdentity, Via};
use super::{tls, ws};

/// A bound listener, ready to accept.
pub(crate) struct Listener {
    /// Its configuration.
    pub config: ListenerConfig,
    /// The address it is bound to (the real port when 0 was asked).
    pub local_addr: SocketAddr,
    /// How its connections name it.
    via: Via,
    tcp: TcpListener,
    tls: Option<Arc<ReloadableTls>>,
    /// How its accepted sockets get TCP_NODELAY ([`nodelay`]).
    nodelay: AtomicU8,
}

/// A TLS listener's certificate, key and CA, which SIGHUP reads again: connections accepted
/// afterwards use the new files, established ones keep theirs.
pub(crate) struct ReloadableTls {
    settings: tls::TlsSettings,
    /// The listener, for the log.
    pub name: String,
    acceptor: parking_lot::RwLock<TlsAcceptor>,
}

impl std::fmt::Debug for ReloadableTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadableTls")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ReloadableTls {
    fn new(settings: tls::TlsSettings, name: String) -> Result<ReloadableTls, tls::TlsError> {
        let acceptor = TlsAcceptor::from(tls::server_config(&settings)?);
        Ok(ReloadableTls {
            settings,
            name,
            acceptor: parking_lot::RwLock::new(acceptor),
        })
    }

    /// Reads the files again; on error the previous ones stay in force.
    pub(crate) fn reload(&self) -> Result<(), tls::TlsError> {
        let acceptor = TlsAcceptor::from(tls::server_config(&self.settings)?);
        *self.acceptor.write() = acceptor;
        Ok(())
    }

    fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.read().clone()
    }
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("kind", &self.config.kind)
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

/// Why a listener could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ListenError {
    /// Binding failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The certificate, key or CA file could not be used (the message names it).
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// Why the TLS or WebSocket handshake of an accepted connection failed.
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    /// The TLS handshake failed.
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] io::Error),
    /// The WebSocket handshake failed.
    #[error(transparent)]
    Ws(#[from] ws::WsError),
    /// A TLS listener without its TLS configuration (not reachable: `bind_all` builds it).
    #[error("TLS listener without a TLS configuration")]
    NoTlsConfig,
    /// A plain TCP listener has no handshake.
    #[error("plain TCP has no handshake")]
    NotNeeded,
}

impl Listener {
    /// The TLS settings SIGHUP reloads, if this is a TLS listener.
    pub(crate) fn reloadable_tls(&self) -> Option<Arc<ReloadableTls>> {
        self.tls.clone()
    }
}

/// Connections the kernel may hold for a listener before they are accepted (capped by
/// `net.core.somaxconn`). A burst of connects larger than this has SYNs dropped and retried
/// a second or more later; the default of the standard library and mio is 128.
const LISTEN_BACKLOG: u32 = 4096;

/// How a listener's accepted sockets get TCP_NODELAY (the state in [`Listener::nodelay`]).
/// Linux copies the listening socket's options into each socket it accepts, so there the flag
/// set once on the listener costs no system call per connect; where the first accepted socket
/// shows that it was not copied (other systems, sandboxed network stacks), it is set on each.
mod nodelay {
    /// Not known yet: the first accepted socket is checked.
    pub(super) const UNKNOWN: u8 = 0;
    /// Accepted sockets have it from the listener.
    pub(super) const INHERITED: u8 = 1;
    /// Set on each accepted socket.
    pub(super) const EACH: u8 = 2;
}

/// Readies an accepted socket: TCP_NODELAY, so that small packets (CONNACK, PUBACK) go out
/// at once. `state` is its listener's [`nodelay`] state; one accept loop updates it.
fn prepare(state: &AtomicU8, stream: &TcpStream, peer: SocketAddr) {
    match state.load(Relaxed) {
        nodelay::INHERITED => return,
        nodelay::UNKNOWN => {
            let inherited = stream.nodelay().unwrap_or(false);
            state.store(
                if inherited {
                    nodelay::INHERITED
                } else {
                    nodelay::EACH
                },
                Relaxed,
            );
            if inherited {
                return;
            }
            debug!("accepted sockets do not inherit TCP_NODELAY: set on each");
        }
        _ => {}
    }
    if let Err(e) = stream.set_nodelay(true) {
        debug!(%peer, error = %e, "TCP_NODELAY not set");
    }
}

/// A listening socket on `addr`, with address reuse as `TcpListener::bind` sets it and a
/// backlog of [`LISTEN_BACKLOG`]; with the [`nodelay`] state its accepted sockets start from.
fn listen(addr: SocketAddr) -> io::Result<(TcpListener, u8)> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    let nodelay = match socket.set_nodelay(true) {
        Ok(()) => nodelay::UNKNOWN,
        Err(e) => {
            debug!(%addr, error = %e, "TCP_NODELAY not set on the listener: set on each connection");
            nodelay::EACH
        }
    };
    socket.bind(addr)?;
    Ok((socket.listen(LISTEN_BACKLOG)?, nodelay))
}

/// Binds the main TCP listener (`bind`:`port`) and every configured extra listener.
pub(crate) async fn bind_all(config: &Config) -> Result<Vec<Listener>, ListenError> {
    let main = ListenerConfig::new(ListenerKind::Tcp, config.bind, config.port);
    let mut out = Vec::new();
    for l in std::iter::once(&main).chain(config.listeners.iter()) {
        let tls = if l.kind.is_tls() {
            let settings = tls::TlsSettings {
                cert_file: l.cert_file.clone().unwrap_or_default(),
                key_file: l.key_file.clone().unwrap_or_default(),
                ca_file: l.ca_file.clone(),
                require_certificate: l.require_certificate,
            };
            let name = format!("{} {}:{}", l.kind, l.bind, l.port);
            Some(Arc::new(ReloadableTls::new(settings, name)?))
        } else {
            None
        };
        let addr = SocketAddr::new(l.bind, l.port);
        let bind_error = |source| ListenError::Bind { addr, source };
        let (tcp, nodelay) = listen(addr).map_err(bind_error)?;
        let local_addr = tcp.local_addr().map_err(bind_error)?;
        info!(kind = ?l.kind, %local_addr, "listening");
        out.push(Listener {
            config: l.clone(),
            local_addr,
            via: Via::Listener {
                kind: l.kind,
                addr: conn::listener_addr(local_addr),
            },
            tcp,
            tls,
            nodelay: AtomicU8::new(nodelay),
        });
    }
    Ok(out)
}

/// What an accepted connection holds until it ends, whether in its task or parked: its place
/// in `connections_open` and in its address's count (`max_connections_per_address`), and a
/// place in the listener's tasks (so that shutdown waits for it). Given back when dropped.
pub(crate) struct Admission {
    broker: Arc<Broker>,
    /// The address counted, if addresses are counted.
    address: Option<std::net::IpAddr>,
    /// Counted in `connections_open`.
    open: bool,
    _task: tokio_util::task::task_tracker::TaskTrackerToken,
}

/// Why a connection was not admitted.
enum Refused {
    /// Its address has `max_connections_per_address` connections.
    PerAddress,
    /// `max_connections` connections are open.
    Total,
}

impl Admission {
    /// Takes a place for a connection from `ip` if its address has fewer than `per_address`
    /// connections and fewer than `max` are open in all (0: no limit, and for `per_address`
    /// nothing is counted).
    fn take(
        broker: &Arc<Broker>,
        ip: std::net::IpAddr,
        per_address: usize,
        max: u64,
        tasks: &TaskTracker,
    ) -> Result<Admission, Refused> {
        let address = (per_address > 0).then_some(ip);
        if let Some(ip) = address {
            let mut counts = broker.metrics.per_address.lock();
            let n = counts.entry(ip).or_insert(0);
            if *n >= per_address {
                return Err(Refused::PerAddress);
            }
            *n += 1;
        }
        let admission = Admission {
            broker: Arc::clone(broker),
            address,
            open: false,
            _task: tasks.token(),
        };
        let mut admission = admission;
        admission.open = broker
            .metrics
            .connections_open
            .fetch_update(Relaxed, Relaxed, |n| (max == 0 || n < max).then_some(n + 1))
            .is_ok();
        if !admission.open {
            // Dropped: the address's place is given back.
            return Err(Refused::Total);
        }
        Ok(admission)
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if self.open {
            self.broker.metrics.connections_open.fetch_sub(1, Relaxed);
        }
        if let Some(ip) = self.address.take() {
            let mut counts = self.broker.metrics.per_address.lock();
            if let Some(n) = counts.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&ip);
                }
            }
        }
    }
}

/// Accepts connections until the broker shuts down. Each connection runs in a task tracked by
/// `tasks`, so shutdown can wait for them.
pub(crate) async fn accept_loop(broker: Arc<Broker>, listener: Listener, tasks: TaskTracker) {
    let listener = Arc::new(listener);
    // Out of descriptors, accept fails ten times a second: one line per 10 s says so.
    let accept_log = crate::broker::metrics::LogPace::default();
    loop {
        let accepted = tokio::select! {
            _ = broker.shutdown.cancelled() => return,
            accepted = listener.tcp.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let max = broker.config.max_connections as u64;
                // Counted here, before the task is spawned, so a burst cannot overshoot.
                let per_address = broker.config.max_connections_per_address;
                let ip = crate::auth::peer_key(peer.ip());
                let admission = match Admission::take(&broker, ip, per_address, max, &tasks) {
                    Ok(admission) => admission,
                    Err(refused) => {
                        Metrics::inc(&broker.metrics.connections_refused);
                        broker
                            .metrics
                            .per_listener
                            .count(via(&listener), ListenerEvent::Refused);
                        match refused {
                            Refused::PerAddress => {
                                if let Some(held_back) =
                                    broker.metrics.connect_log.allow(conn::LOG_BURST)
                                {
                                    warn!(%peer, listener = %via(&listener), max = per_address, held_back, "max_connections_per_address reached: connection refused");
                                }
                            }
                            Refused::Total => {
                                if let Some(since_last) = broker.metrics.refusal_log.tick() {
                                    warn!(%peer, listener = %via(&listener), max, refused_since_last_line = since_last, "max_connections reached: connection refused");
                                }
                            }
                        }
                        drop(stream);
                        continue;
                    }
                };
                Metrics::inc(&broker.metrics.connections_accepted);
                broker
                    .metrics
                    .per_listener
                    .count(via(&listener), ListenerEvent::Accepted);
                prepare(&listener.nodelay, &stream, peer);
                tasks.spawn(connection(&broker, &listener, stream, peer, admission));
            }
            Err(e) => {
                // Typically out of file descriptors: back off (in real time) instead of spinning.
                if let Some(failed_since_last_line) = accept_log.tick() {
                    warn!(error = %e, listener = %via(&listener), failed_since_last_line, "accept failed");
                }
                tokio::select! {
                    _ = broker.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
}

/// Counts and logs (paced) a TLS or WebSocket handshake that failed (`error`) or timed out.
fn handshake_failed(
    broker: &Broker,
    listener: &Listener,
    peer: SocketAddr,
    error: Option<&HandshakeError>,
) {
    Metrics::inc(&broker.metrics.handshake_failures);
    let via = via(listener);
    broker
        .metrics
        .per_listener
        .count(via, ListenerEvent::HandshakeFailed);
    if let Some(held_back) = broker.metrics.connect_log.allow(conn::LOG_BURST) {
        match error {
            Some(e) => info!(%peer, listener = %via, error = %e, held_back, "handshake failed"),
            None => info!(%peer, listener = %via, held_back, "handshake timed out"),
        }
    }
}

fn via(listener: &Listener) -> Via {
    listener.via
}

/// The work of one accepted connection. Plain TCP, the common case, is the connection's own
/// future, with nothing around it; TLS and WebSocket handshake state is large and lives on the
/// heap, not in every task.
fn connection(
    broker: &Arc<Broker>,
    listener: &Arc<Listener>,
    stream: TcpStream,
    peer: SocketAddr,
    admission: Admission,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    if listener.config.kind == ListenerKind::Tcp {
        let policy = listener
            .config
            .queue_full
            .unwrap_or(broker.config.queue_full);
        let via = via(listener);
        let plain = conn::serve(
            Arc::clone(broker),
            stream,
            peer,
            via,
            CertIdentity::NotUsed,
            policy,
            Some(admission),
        );
        return futures_util::future::Either::Left(plain);
    }
    let (broker, listener) = (Arc::clone(broker), Arc::clone(listener));
    futures_util::future::Either::Right(Box::pin(async move {
        handshake_then_serve(&broker, &listener, stream, peer, admission).await;
    }))
}

async fn handshake_then_serve(
    broker: &Arc<Broker>,
    listener: &Listener,
    stream: TcpStream,
    peer: SocketAddr,
    admission: Admission,
) {
    // A socket-level guard, not protocol time: on tokio's clock (see `crate::clock`), so a
    // manual broker clock cannot leave a stalled handshake open.
    let limit = broker.config.handshake_timeout;
    // A WebSocket message may carry many MQTT packets (MQTT-6.0.0-2): its own limit.
    let max_message = broker.config.websocket_max_message_bytes;
    let l = &listener.config;
    let outcome = tokio::time::timeout(limit, async {
        match (l.kind, listener.tls.as_ref().map(|t| t.acceptor())) {
            (ListenerKind::Tcp, _) => Err(HandshakeError::NotNeeded),
            (ListenerKind::Ws, _) => Ok(Ready::Ws(Box::new(
                ws::accept(stream, &l.path, max_message).await?,
            ))),
            (ListenerKind::Tls, Some(acceptor)) => {
                let tls = acceptor.accept(stream).await.map_err(HandshakeError::Tls)?;
                let identity = identity_of(l, tls.get_ref().1);
                Ok(Ready::Tls(Box::new(tls), identity))
            }
            (ListenerKind::Wss, Some(acceptor)) => {
                let tls = acceptor.accept(stream).await.map_err(HandshakeError::Tls)?;
                let identity = identity_of(l, tls.get_ref().1);
                let ws = ws::accept(tls, &l.path, max_message).await?;
                Ok(Ready::Wss(Box::new(ws), identity))
            }
            (_, None) => Err(HandshakeError::NoTlsConfig),
        }
    })
    .await;
    let ready = match outcome {
        Ok(Ok(ready)) => ready,
        Ok(Err(e)) => return handshake_failed(broker, listener, peer, Some(&e)),
        Err(_) => return handshake_failed(broker, listener, peer, None),
    };
    let policy = l.queue_full.unwrap_or(broker.config.queue_full);
    let via = via(listener);
    match ready {
        Ready::Ws(s) => {
            let identity = CertIdentity::NotUsed;
            serve(broker, *s, peer, via, identity, policy, admission).await
        }
        Ready::Tls(s, identity) => serve(broker, *s, peer, via, identity, policy, admission).await,
        Ready::Wss(s, identity) => serve(broker, *s, peer, via, identity, policy, admission).await,
    }
}

async fn serve<S: conn::Transport>(
    broker: &Arc<Broker>,
    stream: S,
    peer: SocketAddr,
    via: Via,
    identity: CertIdentity,
    policy: QueueFullPolicy,
    admission: Admission,
) {
    let admission = Some(admission);
    conn::serve(
        Arc::clone(broker),
        stream,
        peer,
        via,
        identity,
        policy,
        admission,
    )
    .await;
}

type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// A connection with its handshakes done.
enum Ready {
    Ws(Box<ws::WsStream<TcpStream>>),
    Tls(Box<TlsStream>, CertIdentity),
    Wss(Box<ws::WsStream<TlsStream>>, CertIdentity),
}

fn identity_of(l: &ListenerConfig, conn: &rustls::ServerConnection) -> CertIdentity {
    if !l.use_identity_as_username {
        return CertIdentity::NotUsed;
    }
    match tls::peer_common_name(conn) {
        Some(name) => CertIdentity::Name(name),
        None => CertIdentity::Missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepts one connection on `listener`.
    async fn accept_one(listener: &TcpListener) -> (TcpStream, SocketAddr) {
        let addr = listener.local_addr().expect("local address");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        drop(client.expect("connect"));
        accepted.expect("accept")
    }

    /// Every accepted connection has TCP_NODELAY, whether it comes from the listener or is
    /// set on the connection; the first accepted socket settles which.
    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        let (listener, start) = listen("127.0.0.1:0".parse().expect("address")).expect("listen");
        let state = AtomicU8::new(start);
        for _ in 0..2 {
            let (stream, peer) = accept_one(&listener).await;
            prepare(&state, &stream, peer);
            assert!(stream.nodelay().expect("TCP_NODELAY readable"));
            assert_ne!(state.load(Relaxed), nodelay::UNKNOWN);
        }
    }

    /// A listener whose sockets do not inherit it: each accepted socket gets TCP_NODELAY.
    #[tokio::test]
    async fn without_inheritance_each_connection_gets_nodelay() {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("address"))
            .expect("bind");
        let listener = socket.listen(16).expect("listen");
        let state = AtomicU8::new(nodelay::UNKNOWN);
        for _ in 0..2 {
            let (stream, peer) = accept_one(&listener).await;
            prepare(&state, &stream, peer);
            assert!(stream.nodelay().expect("TCP_NODELAY readable"));
            assert_eq!(state.load(Relaxed), nodelay::EACH);
        }
    }
}
