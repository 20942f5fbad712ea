//! The TCP listener: accept, set TCP_NODELAY, and spawn one task per connection.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::broker::Broker;

use super::conn;

/// Binds a TCP listener.
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Accepts connections until the broker shuts down. Each connection runs in a task tracked by
/// `tasks`, so shutdown can wait for them.
pub async fn accept_loop(broker: Arc<Broker>, listener: TcpListener, tasks: TaskTracker) {
    loop {
        let accepted = tokio::select! {
            _ = broker.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                if let Err(e) = stream.set_nodelay(true) {
                    debug!(%peer, error = %e, "TCP_NODELAY not set");
                }
                tasks.spawn(conn::serve(Arc::clone(&broker), stream, peer));
            }
            Err(e) => {
                // Typically out of file descriptors: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::select! {
                    _ = broker.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
}
