//! The HTTP listener (`[http]`): Prometheus `/metrics`, the admin API under `/api/v1/`
//! and the dashboard at `/`, served by axum. Every route needs the same authentication when
//! any is configured: a bearer token (`http.token`) or HTTP Basic with a user of the password
//! file named in `http.admin_users`.

mod api;
mod metrics;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::broker::{Broker, Verdict};
use crate::config::HttpConfig;

/// How long a verified `Authorization: Basic` header is trusted without checking the password
/// again (the check is deliberately slow, and the dashboard asks every few seconds).
const BASIC_CACHE_TIME: Duration = Duration::from_secs(60);
/// Most verified headers remembered.
const BASIC_CACHE_SIZE: usize = 64;

/// What every request handler shares.
struct App {
    broker: Arc<Broker>,
    http: HttpConfig,
    registry: prometheus_client::registry::Registry,
    /// Recently verified Basic credentials (the header value), when they were checked and
    /// under which generation of the password file.
    verified: Mutex<HashMap<String, (Instant, u64)>>,
    /// One Basic password check at a time: the checks are slow by design and share the
    /// broker's verifiers with MQTT logins, which must not wait behind HTTP guesses.
    checking: tokio::sync::Semaphore,
    /// Paces the lines about refused sign-ins.
    refusals: crate::broker::metrics::LogPace,
}

/// Binds the HTTP listener of `config`.
pub(crate) async fn bind(config: &HttpConfig) -> std::io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::new(config.bind, config.port)).await
}

/// Serves HTTP on `listener` until the broker shuts down.
pub(crate) async fn serve(broker: Arc<Broker>, http: HttpConfig, listener: TcpListener) {
    let shutdown = broker.shutdown.clone();
    let app = Arc::new(App {
        registry: metrics::registry(&broker),
        broker,
        http,
        verified: Mutex::new(HashMap::new()),
        checking: tokio::sync::Semaphore::new(1),
        refusals: Default::default(),
    });
    let router = Router::new()
        .route("/", get(dashboard))
        .route("/metrics", get(prometheus))
        .merge(api::routes())
        .layer(middleware::from_fn_with_state(Arc::clone(&app), authorize))
        .with_state(app);
    accept_loop(listener, router, shutdown).await;
}

/// Most HTTP connections open at once; more are closed at accept.
const MAX_HTTP_CONNECTIONS: usize = 256;
/// Time a client has to send a request's headers (on a new or an idle kept-alive connection).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest life of one HTTP connection; the dashboard simply opens a new one.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);
/// At shutdown, how long requests under way may take before their connections are closed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Accepts HTTP/1 connections (hyper, with a header timeout and a connection cap) until
/// shutdown; each request carries the peer address (for the sign-in throttle).
async fn accept_loop(
    listener: TcpListener,
    router: Router,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HTTP_CONNECTIONS));
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let router = router.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(
                move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(Peer(peer));
                    tower::ServiceExt::oneshot(router.clone(), request.map(axum::body::Body::new))
                },
            );
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = tokio::time::sleep(CONNECTION_LIFETIME) => {}
                _ = shutdown.cancelled() => {}
            }
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, connection).await;
        });
    }
    connections.close();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE * 2, connections.wait()).await;
}

/// The remote address of an HTTP request.
#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);

/// The dashboard: one page, no external assets.
async fn dashboard() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("dashboard.html"),
    )
}

/// `/metrics` in the Prometheus text format.
async fn prometheus(State(app): State<Arc<App>>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::prometheus_text::encode(&mut body, &app.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Lets a request through if no authentication is configured (then only with a loopback
/// `Host`, against DNS rebinding), or if it carries the bearer token or the Basic credentials
/// of an admin user; otherwise 401 (403 for a foreign `Host`).
async fn authorize(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<Peer>().map(|p| p.0);
    if !app.http.requires_auth() {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !local_host(host, &app.http) {
            return (
                StatusCode::FORBIDDEN,
                "this listener answers only to a loopback Host\n",
            )
                .into_response();
        }
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let allowed = match given.as_deref().and_then(|v| v.split_once(' ')) {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            let ok = app
                .http
                .token
                .as_deref()
                .is_some_and(|t| same(t.as_bytes(), token.trim().as_bytes()));
            if !ok {
                refused(&app, peer, None, "wrong bearer token").await;
            }
            ok
        }
        Some((scheme, credentials)) if scheme.eq_ignore_ascii_case("basic") => {
            basic(&app, credentials.trim(), peer).await
        }
        _ => false,
    };
    if allowed {
        return next.run(request).await;
    }
    let challenge = if app.http.admin_users.is_empty() {
        "Bearer"
    } else {
        "Basic realm=\"roost\", charset=\"UTF-8\""
    };
    let mut response = (StatusCode::UNAUTHORIZED, "authentication required\n").into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

/// True if `host` (a `Host` header: name or address, with an optional port) names this
/// machine's loopback or the listener's own address.
fn local_host(host: &str, http: &HttpConfig) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.to_canonical().is_loopback() || ip == http.bind)
}

/// A refused sign-in: logged (paced), and answered after the broker's per-address failure
/// delay, which grows with each failure from the same address.
async fn refused(app: &App, peer: Option<SocketAddr>, username: Option<&str>, why: &str) {
    if let Some(since_last) = app.refusals.tick() {
        let peer = peer.map(|p| p.to_string()).unwrap_or_default();
        info!(%peer, username = username.unwrap_or(""), why, refused_since_last_line = since_last, "HTTP sign-in refused");
    }
    if let Some(peer) = peer {
        tokio::time::sleep(app.broker.access.failure_delay(peer.ip())).await;
    }
}

/// Checks the `Basic` credentials against the password file, for admin users only.
async fn basic(app: &App, credentials: &str, peer: Option<SocketAddr>) -> bool {
    let generation = app.broker.access.generation();
    {
        let verified = app.verified.lock();
        if verified
            .get(credentials)
            .is_some_and(|(at, seen)| at.elapsed() < BASIC_CACHE_TIME && *seen == generation)
        {
            return true;
        }
    }
    let Some(decoded) = base64::engine::general_purpose::STANDARD
        .decode(credentials)
        .ok()
        .and_then(|raw| String::from_utf8(raw).ok())
    else {
        refused(app, peer, None, "malformed credentials").await;
        return false;
    };
    let Some((user, password)) = decoded.split_once(':') else {
        refused(app, peer, None, "malformed credentials").await;
        return false;
    };
    if !app.http.admin_users.iter().any(|u| u == user) {
        refused(app, peer, Some(user), "not an admin user").await;
        return false;
    }
    let verdict = {
        let Ok(_turn) = app.checking.acquire().await else {
            return false;
        };
        app.broker
            .access
            .authenticate(
                None,
                Some(user.to_string()),
                Some(bytes::Bytes::copy_from_slice(password.as_bytes())),
                peer.map(|p| p.ip()),
            )
            .await
    };
    if !matches!(verdict, Verdict::Accepted(Some(_))) {
        refused(app, peer, Some(user), "wrong password").await;
        return false;
    }
    if let Some(peer) = peer {
        app.broker.access.succeeded(peer.ip());
    }
    let mut verified = app.verified.lock();
    verified.retain(|_, (at, seen)| at.elapsed() < BASIC_CACHE_TIME && *seen == generation);
    if verified.len() < BASIC_CACHE_SIZE {
        verified.insert(credentials.to_string(), (Instant::now(), generation));
    }
    true
}

/// Compares two secrets in time that depends only on the length of the one given.
fn same(expected: &[u8], given: &[u8]) -> bool {
    let mut differ = u8::from(expected.len() != given.len());
    for (i, g) in given.iter().enumerate() {
        differ |= expected.get(i).copied().unwrap_or(0) ^ g;
    }
    differ == 0
}
