//! Roost: an MQTT 3.1.1 and 5.0 broker.
//!
//! Start a broker with [`start`] and a [`Config`]; the returned [`BrokerHandle`] tells the
//! bound addresses, exposes metrics and introspection (sessions, subscriptions, retained
//! messages, the store), and shuts the broker down.
//!
//! Public modules: [`config`] (every setting), [`codec`] (the MQTT packet model and its
//! encoder/decoder, for test clients and tools), [`clock`] (the injected clock), [`auth`]
//! (password files and the `passwd` command) and [`store`] (the file name, durability modes,
//! errors and a table census for tests). Everything else is internal.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), roost::StartError> {
//! let config = roost::Config {
//!     port: 0,          // any free port on 127.0.0.1
//!     in_memory: true,  // no store
//!     ..roost::Config::default()
//! };
//! let broker = roost::start(config).await?;
//! println!("listening on {}", broker.local_addr());
//! assert_eq!(broker.metrics().connections_open, 0);
//! broker.shutdown().await;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod auth;
pub(crate) mod bridge;
pub(crate) mod broker;
pub mod clock;
pub(crate) mod cluster;
pub mod codec;
pub mod config;
pub mod ctl;
pub(crate) mod http;
pub(crate) mod net;
pub(crate) mod protocol;
pub(crate) mod session;
pub mod store;
pub(crate) mod topic;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use tracing::info;

pub use bridge::{BridgeInfo, BridgeState};
use broker::Broker;
pub use broker::metrics::MetricsSnapshot;
pub use broker::shared::SharedSubscriptionInfo;
pub use clock::Clock;
pub use cluster::ClusterError;
pub use config::Config;
pub use net::fds;
pub use session::quota::BacklogStats;
pub use store::{StoreError, StoreStatsSnapshot};

/// One session as [`BrokerHandle::session_info`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionInfo {
    /// A connection is attached.
    pub connected: bool,
    /// The session outlives its connection.
    pub durable: bool,
    /// Its backlog: messages and bytes queued, in memory, in the store only, in flight, and
    /// the highest bytes ever reached.
    pub backlog: BacklogStats,
    /// Messages dropped for it by the `drop_new` / `drop_oldest` policies.
    pub dropped: u64,
}

/// How long shutdown waits for connections to close (real time, not the broker's clock).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running broker.
#[derive(Debug)]
pub struct BrokerHandle {
    broker: Arc<Broker>,
    local_addr: SocketAddr,
    addrs: Vec<(config::ListenerKind, SocketAddr)>,
    http_addr: Option<SocketAddr>,
    tls: Vec<Arc<net::listener::ReloadableTls>>,
    tasks: TaskTracker,
    acceptors: Vec<JoinHandle<()>>,
}

/// Why a broker could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is invalid (the message names the key); see [`Config::validate`].
    #[error("configuration error: {0}")]
    Config(#[from] config::ConfigError),
    /// The store could not be opened or read (the message names the file).
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The password or ACL file could not be read (the message names the file).
    #[error("password_file/acl_file: {0}")]
    Auth(#[from] auth::AuthError),
    /// A TLS certificate or key could not be loaded (the message names the file).
    #[error(transparent)]
    Tls(#[from] net::tls::TlsError),
    /// Cluster mode could not start (NATS unreachable, a stream that cannot be created).
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Checks the configuration ([`Config::validate`]), opens the store (unless `in_memory`),
/// restores durable state, binds the listeners and starts serving. Must be called inside a
/// tokio runtime.
pub async fn start(config: Config) -> Result<BrokerHandle, StartError> {
    config.validate()?;
    let access = broker::AccessControl::load(&config)?;
    let (store, loaded) = if config.in_memory {
        (None, None)
    } else {
        let (store, loaded) = store::Store::open_with(
            &config.data_dir,
            config.durability,
            config.store_cache_bytes,
            config.store_verify_on_start,
            &config.clock,
        )?;
        (Some(store), Some(loaded))
    };
    let cluster = match &config.cluster {
        Some(c) => {
            let cluster = cluster::Cluster::connect(c).await?;
            info!(node = %c.node, nats = %c.nats.join(", "), "cluster mode");
            Some(cluster)
        }
        None => None,
    };
    let listeners = net::listener::bind_all(&config)
        .await
        .map_err(|e| match e {
            net::listener::ListenError::Bind { addr, source } => {
                StartError::Listen { addr, source }
            }
            net::listener::ListenError::Tls(e) => StartError::Tls(e),
        })?;
    let tls: Vec<_> = listeners
        .iter()
        .filter_map(net::listener::Listener::reloadable_tls)
        .collect();
    let addrs: Vec<(config::ListenerKind, SocketAddr)> = listeners
        .iter()
        .map(|l| (l.config.kind, l.local_addr))
        .collect();
    let http = match &config.http {
        Some(h) => {
            let addr = SocketAddr::new(h.bind, h.port);
            let listener = http::bind(h)
                .await
                .map_err(|source| StartError::Listen { addr, source })?;
            let local = listener
                .local_addr()
                .map_err(|source| StartError::Listen { addr, source })?;
            info!(kind = "http", local_addr = %local, "listening");
            Some((h.clone(), listener, local))
        }
        None => None,
    };
    let local_addr = addrs[0].1;
    let mut listening: Vec<String> = addrs.iter().map(|(k, a)| format!("{k} {a}")).collect();
    if let Some((_, _, a)) = &http {
        listening.push(format!("http {a}"));
    }
    let store_at = if config.in_memory {
        "in memory (nothing survives a restart)".to_string()
    } else {
        config.data_dir.join(store::DB_FILE).display().to_string()
    };
    info!(
        version = env!("CARGO_PKG_VERSION"),
        listeners = %listening.join(", "),
        store = %store_at,
        "roost started"
    );
    let broker = Broker::clustered(config, store, access, cluster);
    if let Some(loaded) = loaded {
        broker.restore(loaded);
    }
    cluster::Cluster::start(&broker).await;
    tokio::spawn(broker::sys::run(Arc::clone(&broker)));
    let tasks = TaskTracker::new();
    bridge::start(&broker, &tasks);
    let http_addr = http.as_ref().map(|(_, _, a)| *a);
    let http_task = http.map(|(config, listener, _)| {
        tokio::spawn(http::serve(Arc::clone(&broker), config, listener))
    });
    let acceptors = listeners
        .into_iter()
        .map(|l| {
            tokio::spawn(net::listener::accept_loop(
                Arc::clone(&broker),
                l,
                tasks.clone(),
            ))
        })
        .chain(http_task)
        .collect();
    Ok(BrokerHandle {
        broker,
        local_addr,
        addrs,
        http_addr,
        tls,
        tasks,
        acceptors,
    })
}

impl BrokerHandle {
    /// The address of the HTTP listener (metrics, admin API, dashboard), if configured.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The address the TCP listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Every listener's kind and bound address, the main TCP listener first.
    pub fn listener_addrs(&self) -> &[(config::ListenerKind, SocketAddr)] {
        &self.addrs
    }

    /// The bound address of the first listener of `kind`.
    pub fn addr_of(&self, kind: config::ListenerKind) -> Option<SocketAddr> {
        self.addrs.iter().find(|(k, _)| *k == kind).map(|(_, a)| *a)
    }

    /// Re-reads the password and ACL files; on error the previous ones stay in force.
    pub fn reload_auth(&self) -> Result<(), auth::AuthError> {
        self.broker.access.reload()
    }

    /// Reads the certificate, key and CA files of every TLS listener again (certificate
    /// rotation): connections accepted afterwards use the new ones, established connections
    /// keep theirs. A listener whose files cannot be used keeps its previous ones; the first
    /// such error is returned after every listener was tried. Returns how many were reloaded.
    pub fn reload_tls(&self) -> Result<usize, net::tls::TlsError> {
        let mut first_error = None;
        let mut reloaded = 0;
        for t in &self.tls {
            match t.reload() {
                Ok(()) => {
                    reloaded += 1;
                    info!(listener = %t.name, "TLS certificate and key reloaded");
                }
                Err(e) => {
                    tracing::warn!(listener = %t.name, error = %e, "TLS reload failed; keeping the previous certificate");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(reloaded),
        }
    }

    /// How many subscriptions (Topic Filters, over all sessions, each membership of a Shared
    /// Subscription group included) the broker holds.
    pub fn subscription_count(&self) -> usize {
        self.broker.router.subscription_count()
    }

    /// Every Shared Subscription group (`$share/{ShareName}/{filter}` with at least one
    /// member), ordered by ShareName and filter, with its members and counters.
    pub fn shared_subscriptions(&self) -> Vec<SharedSubscriptionInfo> {
        self.broker.router.shared_info()
    }

    /// How many retained messages the broker holds.
    pub fn retained_count(&self) -> usize {
        self.broker.router.retained_count()
    }

    /// Every configured bridge: its link's state, queued and forwarded messages.
    pub fn bridges(&self) -> Vec<BridgeInfo> {
        self.broker
            .bridges
            .all()
            .iter()
            .map(|b| b.snapshot(&self.broker))
            .collect()
    }

    /// A copy of the counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.broker.metrics.snapshot()
    }

    /// What the broker holds for one client id: connected or not, durable or not, and its
    /// backlog. `None` if there is no such session.
    pub fn session_info(&self, client_id: &str) -> Option<SessionInfo> {
        let handle = self.broker.registry.get(client_id)?;
        let slot = handle.slot.lock();
        Some(SessionInfo {
            connected: slot.conn.is_some(),
            durable: slot.session.is_durable(),
            backlog: slot.session.outbound.stats(),
            dropped: slot.session.dropped,
        })
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
        for acceptor in self.acceptors {
            let _ = acceptor.await;
        }
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
