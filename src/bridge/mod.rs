//! Bridges: this broker as a client of remote brokers, forwarding the messages of configured
//! topics each way without losing what either broker acknowledged.
//!
//! Each bridge has two client connections: one to the remote broker (TCP or TLS, MQTT 3.1,
//! 3.1.1 or 5.0) and one to this broker, in process ([`crate::net::conn::serve_bridge`]),
//! always MQTT 5.0. Outgoing messages reach the bridge through its local Session, durable
//! (in the store) unless `clean_session` is set, which holds them while the remote broker
//! cannot be reached, within the backlog limits. The rules of the link are in [`relay`];
//! [`run`] drives it and reconnects with jittered backoff.

mod link;
mod relay;
mod remote;
mod run;
mod topics;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};

use parking_lot::Mutex;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::config::BridgeConfig;
pub(crate) use remote::client_config as tls_client_config;

/// Where a bridge's link stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BridgeState {
    /// Connecting to the remote broker.
    Connecting,
    /// Both connections are up and messages flow.
    Connected,
    /// Waiting before the next attempt, after a failure.
    Backoff,
    /// The broker is shutting down.
    Stopped,
}

impl BridgeState {
    fn from_u8(v: u8) -> BridgeState {
        match v {
            0 => BridgeState::Connecting,
            1 => BridgeState::Connected,
            2 => BridgeState::Backoff,
            _ => BridgeState::Stopped,
        }
    }

    /// The name used in `$SYS`, metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            BridgeState::Connecting => "connecting",
            BridgeState::Connected => "connected",
            BridgeState::Backoff => "backoff",
            BridgeState::Stopped => "stopped",
        }
    }
}

/// What one bridge has done, shared between its task and the broker's reporting.
#[derive(Debug)]
pub(crate) struct BridgeStatus {
    /// The bridge's name.
    pub name: String,
    /// The client id of its local Session.
    pub local_client_id: String,
    /// The client id on the remote broker.
    pub remote_client_id: String,
    state: AtomicU8,
    /// Messages delivered to the remote broker (QoS 0 sent, QoS 1/2 acknowledged).
    pub forwarded_out: AtomicU64,
    /// Messages delivered to this broker from the remote one.
    pub forwarded_in: AtomicU64,
    /// Messages a broker refused for good (dropped, counted).
    pub refused: AtomicU64,
    /// Successful connections to the remote broker.
    pub connects: AtomicU64,
    /// The remote address of the current or last connection.
    pub remote_addr: Mutex<Option<String>>,
    /// Why the last connection failed or ended.
    pub last_error: Mutex<Option<String>>,
}

impl BridgeStatus {
    fn new(config: &BridgeConfig) -> BridgeStatus {
        let remote_client_id = config.remote_client_id();
        let local_client_id = config.local_client_id();
        BridgeStatus {
            name: config.name.clone(),
            local_client_id,
            remote_client_id,
            state: AtomicU8::new(0),
            forwarded_out: AtomicU64::new(0),
            forwarded_in: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            remote_addr: Mutex::new(None),
            last_error: Mutex::new(None),
        }
    }

    /// Where the link stands.
    pub(crate) fn state(&self) -> BridgeState {
        BridgeState::from_u8(self.state.load(Relaxed))
    }

    fn set_state(&self, state: BridgeState) {
        self.state.store(state as u8, Relaxed);
    }

    /// A snapshot for the admin API and `$SYS`; `queued` is the local Session's backlog.
    pub(crate) fn snapshot(&self, broker: &Broker) -> BridgeInfo {
        let queued = broker
            .registry
            .get(&self.local_client_id)
            .map(|s| s.slot.lock().session.outbound.stats().messages)
            .unwrap_or(0);
        BridgeInfo {
            name: self.name.clone(),
            state: self.state(),
            remote_addr: self.remote_addr.lock().clone(),
            local_client_id: self.local_client_id.clone(),
            remote_client_id: self.remote_client_id.clone(),
            queued,
            forwarded_out: self.forwarded_out.load(Relaxed),
            forwarded_in: self.forwarded_in.load(Relaxed),
            refused: self.refused.load(Relaxed),
            connects: self.connects.load(Relaxed),
            last_error: self.last_error.lock().clone(),
        }
    }
}

/// One bridge as the admin API and [`crate::BrokerHandle::bridges`] report it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BridgeInfo {
    /// The bridge's name.
    pub name: String,
    /// Where its link stands.
    pub state: BridgeState,
    /// The remote address of the current or last connection.
    pub remote_addr: Option<String>,
    /// The client id of its local Session.
    pub local_client_id: String,
    /// The client id on the remote broker.
    pub remote_client_id: String,
    /// Outgoing messages waiting in the local Session (queued, in flight, in the store).
    pub queued: usize,
    /// Messages delivered to the remote broker.
    pub forwarded_out: u64,
    /// Messages delivered to this broker from the remote one.
    pub forwarded_in: u64,
    /// Messages a broker refused for good (e.g. not authorized).
    pub refused: u64,
    /// Successful connections to the remote broker.
    pub connects: u64,
    /// Why the last connection failed or ended.
    pub last_error: Option<String>,
}

/// The bridges of a broker.
#[derive(Debug, Default)]
pub(crate) struct Bridges {
    statuses: Vec<Arc<BridgeStatus>>,
}

impl Bridges {
    /// The status of each configured bridge (nothing runs yet).
    pub(crate) fn new(configs: &[BridgeConfig]) -> Bridges {
        Bridges {
            statuses: configs
                .iter()
                .map(|c| Arc::new(BridgeStatus::new(c)))
                .collect(),
        }
    }

    /// Every bridge's status, in configuration order.
    pub(crate) fn all(&self) -> &[Arc<BridgeStatus>] {
        &self.statuses
    }

    /// Whether `client_id` is the client id of a bridge's local Session (reserved for it).
    pub(crate) fn is_local_client_id(&self, client_id: &str) -> bool {
        self.statuses.iter().any(|s| s.local_client_id == client_id)
    }
}

/// Starts every configured bridge's task on `tasks`.
pub(crate) fn start(broker: &Arc<Broker>, tasks: &TaskTracker) {
    for (config, status) in broker.config.bridges.iter().zip(broker.bridges.all()) {
        tasks.spawn(run::run(
            Arc::clone(broker),
            config.clone(),
            Arc::clone(status),
            tasks.clone(),
        ));
    }
}
