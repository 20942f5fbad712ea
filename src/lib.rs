//! Roost: an MQTT 3.1.1 and 5.0 broker.
//!
//! Start a broker with [`start`] and a [`Config`]; the returned [`BrokerHandle`] tells the
//! bound address, exposes metrics, and shuts the broker down.

pub mod broker;
pub mod codec;
pub mod config;
pub mod net;
pub mod session;
pub mod topic;

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

/// Binds the listener and starts serving. Must be called inside a tokio runtime.
pub async fn start(config: Config) -> io::Result<BrokerHandle> {
    let listener = net::listener::bind(SocketAddr::new(config.bind, config.port)).await?;
    let local_addr = listener.local_addr()?;
    let broker = Broker::new(config);
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
        info!("broker stopped");
    }
}
