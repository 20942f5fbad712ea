//! The admin API (JSON under `/api/v1/`): clients and their sessions, kicking a client,
//! subscriptions, retained messages and broker statistics. Lists are paged (`page` from 1,
//! `per_page` up to 1000, default 100).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::broker::{KickReason, SessionHandle};
use crate::session::{Message, NEVER_EXPIRES};
use crate::store::Op;
use crate::topic;

use super::App;

/// How long `DELETE /api/v1/clients/{id}?end_session=true` waits for the connection to go
/// before it ends the session.
const KICK_WAIT: Duration = Duration::from_secs(5);

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/clients", get(clients))
        .route("/api/v1/clients/{client_id}", get(client).delete(kick))
        .route("/api/v1/subscriptions", get(subscriptions))
        .route("/api/v1/retained", get(retained_list))
        .route("/api/v1/bridges", get(bridges))
        .route("/api/v1/cluster", get(cluster))
        .route(
            "/api/v1/retained/{*topic}",
            get(retained_get).delete(retained_delete),
        )
}

/// Paging and filtering of a list.
#[derive(Debug, Deserialize)]
struct ListQuery {
    /// Only items whose client id (or filter, or topic) starts with this.
    prefix: Option<String>,
    /// Page number, from 1.
    page: Option<usize>,
    /// Items per page (1 to 1000, default 100).
    per_page: Option<usize>,
    /// `client_id` (default) or `queued` (deepest backlog first), for clients.
    sort: Option<String>,
    /// Topic Filter of the retained messages to list (default `#`).
    filter: Option<String>,
}

impl ListQuery {
    /// Cuts one page out of `items`, as `{total, page, per_page, <name>: [...]}`; only the
    /// items of the page are rendered.
    fn page<T>(&self, name: &str, items: &[T], render: impl Fn(&T) -> Value) -> Value {
        let per_page = self.per_page.unwrap_or(100).clamp(1, 1000);
        let page = self.page.unwrap_or(1).max(1);
        let total = items.len();
        let start = (page - 1).saturating_mul(per_page).min(total);
        let chosen: Vec<Value> = items[start..].iter().take(per_page).map(render).collect();
        json!({ "total": total, "page": page, "per_page": per_page, name: chosen })
    }

    fn matches(&self, s: &str) -> bool {
        self.prefix.as_deref().is_none_or(|p| s.starts_with(p))
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// `GET /api/v1/stats`: counters, sessions, store and Shared Subscription groups.
async fn stats(State(app): State<Arc<App>>) -> Json<Value> {
    let broker = &app.broker;
    let sessions = broker.registry.summary();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": broker.clock.now().duration_since(broker.started).as_secs(),
        "sessions": {
            "total": sessions.total,
            "connected": sessions.connected,
            "backlog_messages": sessions.queued_messages,
        },
        "subscriptions": broker.router.subscription_count(),
        "retained_messages": broker.router.retained_count(),
        "metrics": broker.metrics.snapshot(),
        "store": broker.store.as_ref().map(|s| s.stats()),
        "shared_subscriptions": broker.router.shared_info(),
    }))
}

/// Every bridge: state, remote address, client ids, queued and forwarded messages, the
/// last error.
async fn bridges(State(app): State<Arc<App>>) -> Json<Value> {
    let broker = &app.broker;
    let list: Vec<_> = broker
        .bridges
        .all()
        .iter()
        .map(|b| b.snapshot(broker))
        .collect();
    Json(json!({ "bridges": list }))
}

/// Cluster mode: this node, its NATS link and what it carried; `{"cluster": null}` when
/// the broker runs alone.
async fn cluster(State(app): State<Arc<App>>) -> Json<Value> {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(cluster) = &app.broker.cluster else {
        return Json(json!({ "cluster": null }));
    };
    let c = &cluster.config;
    let st = &cluster.stats;
    Json(json!({ "cluster": {
        "node": c.node,
        // Without credentials a URL may carry (`nats://user:password@host`).
        "nats": c.nats.iter().map(|u| match (u.find("://"), u.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => format!("{}{}", &u[..scheme + 3], &u[at + 1..]),
            _ => u.clone(),
        }).collect::<Vec<_>>(),
        "connected": st.connected.load(Relaxed),
        "jetstream_writable": st.jetstream_writable.load(Relaxed),
        "prefix": c.prefix,
        "stream": c.stream,
        "retained_stream": c.retained_stream,
        "sessions_bucket": c.sessions_bucket,
        "replicas": c.replicas,
        "published": st.published.load(Relaxed),
        "received": st.received.load(Relaxed),
        "publish_failures": st.publish_failures.load(Relaxed),
        "takeovers": st.taken_over.load(Relaxed),
    }}))
}

/// One line of the client list.
#[derive(Debug, Serialize)]
struct ClientLine {
    client_id: String,
    connected: bool,
    durable: bool,
    connection: Option<crate::broker::ClientInfo>,
    backlog_messages: usize,
    backlog_bytes: u64,
    inflight: usize,
    subscriptions: usize,
}

fn line(handle: &SessionHandle) -> ClientLine {
    let slot = handle.slot.lock();
    let stats = slot.session.outbound.stats();
    ClientLine {
        client_id: handle.client_id.to_string(),
        connected: slot.conn.is_some(),
        durable: slot.session.is_durable(),
        connection: slot.conn.as_ref().and_then(|c| c.client().cloned()),
        backlog_messages: stats.messages,
        backlog_bytes: stats.bytes,
        inflight: stats.inflight,
        subscriptions: slot.session.subscriptions.len(),
    }
}

/// Runs a listing off the async threads: it walks every session or retained message.
async fn blocking(work: impl FnOnce() -> Response + Send + 'static) -> Response {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "listing failed"))
}

/// `GET /api/v1/clients?prefix=&sort=client_id|queued&page=&per_page=`.
async fn clients(State(app): State<Arc<App>>, Query(q): Query<ListQuery>) -> Response {
    let by_queue = match q.sort.as_deref() {
        None | Some("client_id") => false,
        Some("queued") => true,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("sort must be client_id or queued, not {other}"),
            );
        }
    };
    blocking(move || {
        let mut handles: Vec<(usize, Arc<SessionHandle>)> = app
            .broker
            .registry
            .handles()
            .into_iter()
            .filter(|h| q.matches(&h.client_id))
            .map(|h| {
                let backlog = if by_queue {
                    h.slot.lock().session.outbound.backlog_messages()
                } else {
                    0
                };
                (backlog, h)
            })
            .collect();
        if by_queue {
            handles.sort_by(|a, b| (b.0, &a.1.client_id).cmp(&(a.0, &b.1.client_id)));
        } else {
            handles.sort_by(|a, b| a.1.client_id.cmp(&b.1.client_id));
        }
        let page = q.page("clients", &handles, |(_, h)| {
            serde_json::to_value(line(h)).unwrap_or(Value::Null)
        });
        Json(page).into_response()
    })
    .await
}

/// `GET /api/v1/clients/{client_id}`: the session in full.
async fn client(State(app): State<Arc<App>>, Path(client_id): Path<String>) -> Response {
    let Some(handle) = app.broker.registry.get(&client_id) else {
        return error(StatusCode::NOT_FOUND, format!("no session for {client_id}"));
    };
    let slot = handle.slot.lock();
    let session = &slot.session;
    let mut subscriptions: Vec<Value> = session
        .subscriptions
        .iter()
        .map(|(filter, o)| {
            json!({
                "filter": filter,
                "qos": o.qos as u8,
                "no_local": o.no_local,
                "retain_as_published": o.retain_as_published,
                "retain_handling": o.retain_handling as u8,
                "subscription_identifier": o.subscription_id,
            })
        })
        .collect();
    subscriptions.sort_by(|a, b| a["filter"].as_str().cmp(&b["filter"].as_str()));
    let expiry = match session.expiry_interval {
        NEVER_EXPIRES => None,
        secs => Some(secs),
    };
    Json(json!({
        "client_id": handle.client_id.as_ref(),
        "connected": slot.conn.is_some(),
        "durable": session.is_durable(),
        "session_expiry_interval": expiry,
        "connection": slot.conn.as_ref().and_then(|c| c.client()),
        "subscriptions": subscriptions,
        "backlog": session.outbound.stats(),
        "dropped": session.dropped,
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
struct KickQuery {
    /// Also end the session (its subscriptions and queued messages go).
    end_session: Option<bool>,
}

/// `DELETE /api/v1/clients/{client_id}?end_session=true`: disconnects the client (MQTT 5.0:
/// DISCONNECT 0x98, administrative action; its will is published) and, if asked, ends its
/// session.
async fn kick(
    State(app): State<Arc<App>>,
    Path(client_id): Path<String>,
    Query(q): Query<KickQuery>,
) -> Response {
    let broker = &app.broker;
    let Some(handle) = broker.registry.get(&client_id) else {
        return error(StatusCode::NOT_FOUND, format!("no session for {client_id}"));
    };
    let link = handle.slot.lock().conn.clone();
    let disconnected = link.is_some();
    if let Some(link) = link {
        tracing::info!(
            client_id = &*client_id,
            "disconnected through the admin API"
        );
        link.kick(KickReason::Admin);
        let _ = tokio::time::timeout(KICK_WAIT, link.gone()).await;
    }
    let mut ended = false;
    if q.end_session.unwrap_or(false) {
        broker.end_session_if(&handle, |slot| {
            ended = slot.conn.is_none();
            ended
        });
        // An ephemeral session ended with its connection already.
        ended |= handle.has_ended();
        if ended {
            tracing::info!(
                client_id = &*client_id,
                "session ended through the admin API"
            );
        }
    }
    Json(json!({ "disconnected": disconnected, "session_ended": ended })).into_response()
}

/// `GET /api/v1/subscriptions?prefix=` (prefix of the Topic Filter).
async fn subscriptions(State(app): State<Arc<App>>, Query(q): Query<ListQuery>) -> Response {
    blocking(move || {
        let mut all: Vec<(String, Arc<str>, u8)> = Vec::new();
        for handle in app.broker.registry.handles() {
            let slot = handle.slot.lock();
            for (filter, o) in &slot.session.subscriptions {
                if q.matches(filter) {
                    all.push((filter.clone(), Arc::clone(&handle.client_id), o.qos as u8));
                }
            }
        }
        all.sort();
        let page = q.page("subscriptions", &all, |(filter, client_id, qos)| {
            json!({ "client_id": client_id.as_ref(), "filter": filter, "qos": qos })
        });
        Json(page).into_response()
    })
    .await
}

/// `GET /api/v1/retained?filter=sensors/%23`: retained messages matching a Topic Filter.
async fn retained_list(State(app): State<Arc<App>>, Query(q): Query<ListQuery>) -> Response {
    let filter = q.filter.clone().unwrap_or_else(|| "#".to_string());
    if !topic::valid_topic_filter(&filter) {
        return error(StatusCode::BAD_REQUEST, format!("invalid filter {filter}"));
    }
    blocking(move || {
        let mut messages: Vec<Arc<Message>> = app
            .broker
            .router
            .retained_matching(&filter)
            .into_iter()
            .map(|(m, _)| m)
            .collect();
        messages.sort_by(|a, b| a.topic.cmp(&b.topic));
        let page = q.page("retained", &messages, |m| {
            json!({ "topic": m.topic.as_ref(), "qos": m.qos as u8, "payload_bytes": m.payload.len() })
        });
        Json(page).into_response()
    })
    .await
}

/// The retained message of a topic (no wildcards).
fn retained_of(app: &App, topic: &str) -> Result<Arc<Message>, (StatusCode, String)> {
    if !topic::valid_topic_name(topic) {
        return Err((StatusCode::BAD_REQUEST, format!("invalid topic {topic}")));
    }
    app.broker
        .router
        .retained_matching(topic)
        .into_iter()
        .map(|(m, _)| m)
        .find(|m| &*m.topic == topic)
        .ok_or_else(|| {
            (
                StatusCode::NOT_FOUND,
                format!("no retained message on {topic}"),
            )
        })
}

/// `GET /api/v1/retained/{topic}`: the message, its payload as text (if UTF-8) and base64.
async fn retained_get(State(app): State<Arc<App>>, Path(topic): Path<String>) -> Response {
    let m = match retained_of(&app, &topic) {
        Ok(m) => m,
        Err((status, message)) => return error(status, message),
    };
    let now = app.broker.clock.now();
    Json(json!({
        "topic": m.topic.as_ref(),
        "qos": m.qos as u8,
        "payload": std::str::from_utf8(&m.payload).ok(),
        "payload_base64": base64::engine::general_purpose::STANDARD.encode(&m.payload),
        "content_type": m.properties.content_type,
        "message_expiry_interval": m.remaining_expiry(now),
    }))
    .into_response()
}

/// `DELETE /api/v1/retained/{topic}`: removes it (from the store too, before answering).
async fn retained_delete(State(app): State<Arc<App>>, Path(topic): Path<String>) -> Response {
    let m = match retained_of(&app, &topic) {
        Ok(m) => m,
        Err((status, message)) => return error(status, message),
    };
    let broker = &app.broker;
    // Removed from memory and queued for the store under the retained index's lock, so a
    // publish that replaces it right now is ordered after the deletion in both.
    let mut committed = None;
    let deleted = broker.router.delete_retained_if(&m, || {
        if let Some(store) = &broker.store {
            committed = Some(store.commit_queued(vec![Op::DeleteRetained {
                topic: Arc::clone(&m.topic),
            }]));
        }
    });
    if !deleted {
        return error(
            StatusCode::CONFLICT,
            format!("the retained message on {topic} was replaced meanwhile"),
        );
    }
    if let Some(committed) = committed
        && let Err(e) = committed.await
    {
        tracing::error!(topic = topic.as_str(), error = %e, "retained message deleted in memory but not in the store");
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the store could not delete it: {e}"),
        );
    }
    tracing::info!(
        topic = topic.as_str(),
        "retained message deleted through the admin API"
    );
    StatusCode::NO_CONTENT.into_response()
}
