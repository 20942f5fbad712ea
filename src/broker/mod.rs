//! Shared broker state: configuration, the session registry, the router and the metrics.

mod handle;
mod metrics;
mod router;
mod sessions;
mod will;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};

use tokio_util::sync::CancellationToken;

pub use handle::{ConnLink, KickReason, SessionHandle, Slot};
pub use metrics::{Metrics, MetricsSnapshot};
pub use router::{Router, Subscriber, deliver};
pub use sessions::{AttachRequest, Registry};
pub use will::will_message;

use crate::config::Config;
use crate::session::Message;

/// Everything the connections of one broker share.
#[derive(Debug)]
pub struct Broker {
    /// The configuration it was started with.
    pub config: Config,
    /// Sessions by client id.
    pub registry: Registry,
    /// Subscriptions and retained messages.
    pub router: Router,
    /// Counters.
    pub metrics: Metrics,
    /// Cancelled to shut the broker down.
    pub shutdown: CancellationToken,
    me: Weak<Broker>,
    next_connection: AtomicU64,
}

impl Broker {
    /// New shared state for `config`.
    pub fn new(config: Config) -> Arc<Broker> {
        Arc::new_cyclic(|me| Broker {
            config,
            registry: Registry::default(),
            router: Router::default(),
            metrics: Metrics::default(),
            shutdown: CancellationToken::new(),
            me: me.clone(),
            next_connection: AtomicU64::new(1),
        })
    }

    /// A fresh connection id.
    pub fn next_connection_id(&self) -> u64 {
        self.next_connection.fetch_add(1, Relaxed)
    }

    /// Routes a message to its subscribers and updates the retained store if its RETAIN flag
    /// is set. Returns the number of deliveries queued.
    pub fn publish(&self, message: &Arc<Message>, publisher: Option<u64>) -> usize {
        if message.retain {
            self.router.retain(message);
        }
        self.router.route(message, publisher, &self.metrics)
    }
}
