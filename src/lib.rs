//! Roost: an MQTT 3.1.1 and 5.0 broker.
//!
//! Start a broker with [`start`] and a [`Config`]; the returned [`BrokerHandle`] tells the
//! bound address, exposes metrics, and shuts the broker down.

pub mod auth;
pub mod broker;
pub mod codec;
pub mod config;
pub mod net;
pub mod session;
pub mod store;
pub mod topic;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use tracing::info;

pub use broker::{Broker, MetricsSnapshot};
pub use config::Config;

/// How long shutdown waits for connections to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running broker.
#[derive(Debug)]
pub struct BrokerHandle {
    broker: Arc<Broker>,
    local_addr: SocketAddr,
    tasks: TaskTracker,
    acceptor: JoinHandle<()>,
}

/// Why a broker could not start.
#[derive(Debug)]
pub enum StartError {
    /// The store could not be opened or read (the message names the file).
    Store(store::StoreError),
    /// The listener could not be bound.
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: io::Error,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Store(e) => e.fmt(f),
            StartError::Listen { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
        }
    }
}

impl std::error::Error for StartError {}

/// Opens the store (unless `in_memory`), restores durable state, binds the listener and starts
/// serving. Must be called inside a tokio runtime.
pub async fn start(config: Config) -> Result<BrokerHandle, StartError> {
    let (store, loaded) = if config.in_memory {
        (None, None)
    } else {
        let (store, loaded) =
            store::Store::open(&config.data_dir, config.durability).map_err(StartError::Store)?;
        (Some(store), Some(loaded))
    };
    let addr = SocketAddr::new(config.bind, config.port);
    let listen_err = |source| StartError::Listen { addr, source };
    let listener = net::listener::bind(addr).await.map_err(listen_err)?;
    let local_addr = listener.local_addr().map_err(listen_err)?;
    let broker = Broker::new(config, store);
    if let Some(loaded) = loaded {
        broker.restore(loaded);
    }
    let tasks = TaskTracker::new();
    let acceptor = tokio::spawn(net::listener::accept_loop(
        Arc::clone(&broker),
        listener,
        tasks.clone(),
    ));
    info!(%local_addr, "listening for MQTT over TCP");
    Ok(BrokerHandle {
        broker,
        local_addr,
        tasks,
        acceptor,
    })
}

impl BrokerHandle {
    /// The address the TCP listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The shared broker state.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// A copy of the counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.broker.metrics.snapshot()
    }

    /// The store's counters (all zero when running in memory).
    pub fn store_stats(&self) -> store::StoreStatsSnapshot {
        self.broker
            .store
            .as_ref()
            .map(|s| s.stats())
            .unwrap_or_default()
    }

    /// Stops accepting, closes every connection (v5 clients get DISCONNECT 0x8B) and waits
    /// for them to finish, up to a grace period.
    pub async fn shutdown(self) {
        self.broker.shutdown.cancel();
        let _ = self.acceptor.await;
        self.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close in time");
        }
        let broker = Arc::clone(&self.broker);
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(store) = &broker.store {
                store.close();
            }
        })
        .await;
        info!("broker stopped");
    }
}
