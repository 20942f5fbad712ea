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
    /// Recently verified Basic credentials (the header value) and when they were checked.
    verified: Mutex<HashMap<String, Instant>>,
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
    });
    let router = Router::new()
        .route("/", get(dashboard))
        .route("/metrics", get(prometheus))
        .merge(api::routes())
        .layer(middleware::from_fn_with_state(Arc::clone(&app), authorize))
        .with_state(app);
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = served {
        warn!(error = %e, "HTTP listener stopped");
    }
}

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

/// Lets a request through if no authentication is configured, or if it carries the bearer
/// token or the Basic credentials of an admin user; otherwise 401.
async fn authorize(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    if !app.http.requires_auth() {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let allowed = match given.as_deref() {
        Some(value) => match value.split_once(' ') {
            Some(("Bearer", token)) => app
                .http
                .token
                .as_deref()
                .is_some_and(|t| same(t.as_bytes(), token.as_bytes())),
            Some(("Basic", _)) => basic(&app, value).await,
            _ => false,
        },
        None => false,
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

/// Checks `Authorization: Basic ...` against the password file, for admin users only.
async fn basic(app: &App, value: &str) -> bool {
    {
        let verified = app.verified.lock();
        if verified
            .get(value)
            .is_some_and(|at| at.elapsed() < BASIC_CACHE_TIME)
        {
            return true;
        }
    }
    let Some(decoded) = value
        .strip_prefix("Basic ")
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
    else {
        return false;
    };
    let Some((user, password)) = decoded.split_once(':') else {
        return false;
    };
    if !app.http.admin_users.iter().any(|u| u == user) {
        info!(username = user, "HTTP sign-in refused: not an admin user");
        return false;
    }
    let verdict = app
        .broker
        .access
        .authenticate(
            None,
            Some(user.to_string()),
            Some(bytes::Bytes::copy_from_slice(password.as_bytes())),
        )
        .await;
    if !matches!(verdict, Verdict::Accepted(Some(_))) {
        info!(username = user, "HTTP sign-in refused: bad password");
        return false;
    }
    let mut verified = app.verified.lock();
    verified.retain(|_, at| at.elapsed() < BASIC_CACHE_TIME);
    if verified.len() < BASIC_CACHE_SIZE {
        verified.insert(value.to_string(), Instant::now());
    }
    true
}

/// Compares two secrets in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
