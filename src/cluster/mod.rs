//! Cluster mode: several Roost nodes acting as one broker through NATS with JetStream.
//!
//! Nodes never talk to each other; NATS carries everything:
//! - **QoS 0** messages are published on the topic's subject (`{prefix}.a.b`, mapped as
//!   nats-server maps MQTT topics, see [`subject`]); each node subscribes to the subjects of
//!   its clients' Topic Filters, so NATS subject interest is the routing table.
//! - **QoS 1/2** messages go to one replicated JetStream stream; the publisher's PUBACK or
//!   PUBREC waits for JetStream's acknowledgement. Every node reads the stream through one
//!   durable consumer of its own and acknowledges each message to JetStream once its own
//!   store has committed it, so a node that was away catches up. A copy goes to the topic's
//!   subject as well, for NATS applications.
//! - **Retained messages** are a second stream holding the last message of each subject;
//!   every node loads it at start and follows it.
//! - **Session ownership** is a JetStream key-value bucket written with compare-and-set: a
//!   CONNECT claims the client id, and the node that held it closes its connection (5.0:
//!   DISCONNECT 0x8E). Of two racing CONNECTs exactly one claim succeeds; the other is
//!   refused as busy.

pub(crate) mod follow;
mod inbound;
mod interest;
mod owner;
mod retained;
mod shares;
pub(crate) mod subject;
mod wills;
pub(crate) mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use tracing::{debug, info, warn};

use crate::broker::Broker;
use crate::codec::QoS;
use crate::config::ClusterConfig;
use crate::session::Message;

pub(crate) use interest::Interest;
pub(crate) use owner::{ClaimError, Claimed};
pub(crate) use wills::Left as WillLeft;

/// A message accepted here, on its way to the other nodes.
#[derive(Debug, Clone)]
pub(crate) struct Forward {
    /// The message.
    pub message: Arc<Message>,
    /// The client that published it, if any.
    pub publisher: Option<Arc<str>>,
}

/// Why cluster mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No NATS server of `cluster.nats` could be reached.
    #[error("cluster.nats: cannot connect to {urls}: {reason}")]
    Connect {
        /// The servers tried.
        urls: String,
        /// Why.
        reason: String,
    },
    /// Another running node has this node's name.
    #[error(
        "cluster.node: another running node is named `{0}` (its heartbeats go on); give every node its own name"
    )]
    NodeInUse(String),
    /// A stream or the bucket could not be created or read.
    #[error("cluster: JetStream {what} `{name}`: {reason}")]
    JetStream {
        /// `stream` or `bucket`.
        what: &'static str,
        /// Its name.
        name: String,
        /// Why.
        reason: String,
    },
}

/// Counters of the cluster link, for metrics and the admin API.
#[derive(Debug, Default)]
pub(crate) struct ClusterStats {
    /// Connected to a NATS server now.
    pub connected: AtomicBool,
    /// The last JetStream write was confirmed (false from a failed one until one succeeds).
    pub jetstream_writable: AtomicBool,
    /// Messages published to NATS (QoS 0 and QoS 1/2).
    pub published: AtomicU64,
    /// Messages received from other nodes and NATS applications, and routed here.
    pub received: AtomicU64,
    /// Writes JetStream did not confirm (the client's acknowledgement was withheld).
    pub publish_failures: AtomicU64,
    /// Session takeovers by another node.
    pub taken_over: AtomicU64,
}

/// The link of this node to the NATS cluster.
#[derive(Debug)]
pub(crate) struct Cluster {
    /// The settings.
    pub config: ClusterConfig,
    client: async_nats::Client,
    /// The connection of Shared Subscriptions' queue groups, which receives this node's own
    /// messages too.
    queue_client: async_nats::Client,
    js: jetstream::Context,
    owners: kv::Store,
    /// Counters.
    pub stats: Arc<ClusterStats>,
    /// This process's run id (random), in the message ids of its JetStream writes.
    run: u64,
    /// The next write's number in its message id.
    next_write: AtomicU64,
    /// The largest message (payload and headers) the NATS servers take, in bytes.
    max_payload: usize,
    /// The last sequence of the stream whose messages this node's store has committed. The
    /// stream is read in order (a failure starts again from the first message not
    /// acknowledged), so a message JetStream delivers again at or below it (its
    /// acknowledgement lost, or the node crashed before sending it) is known and skipped.
    pub applied: AtomicU64,
    claims: owner::Claims,
    wills: wills::Wills,
    /// Durable Sessions' states (see [`follow`]).
    states: kv::Store,
    state_writes: tokio::sync::mpsc::UnboundedSender<follow::Write>,
    state_writes_rx:
        parking_lot::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<follow::Write>>>,
    /// Sessions to rebuild here, for the task reading the stream.
    adoptions: tokio::sync::mpsc::Sender<follow::Adoption>,
    adoptions_rx: parking_lot::Mutex<Option<tokio::sync::mpsc::Receiver<follow::Adoption>>>,
    interest: Arc<interest::Interest>,
}

impl Cluster {
    /// Connects to NATS and makes sure the streams and the bucket exist.
    pub(crate) async fn connect(config: &ClusterConfig) -> Result<Cluster, ClusterError> {
        let stats = Arc::new(ClusterStats::default());
        let urls = config.nats.join(", ");
        let connect_error = |reason: String| ClusterError::Connect {
            urls: urls.clone(),
            reason,
        };
        let mut addrs = Vec::with_capacity(config.nats.len());
        for url in &config.nats {
            addrs.push(
                url.parse::<async_nats::ServerAddr>()
                    .map_err(|e| connect_error(e.to_string()))?,
            );
        }
        let events = Arc::clone(&stats);
        let mut options = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_secs(config.ack_timeout)))
            .event_callback(move |event| {
                let events = Arc::clone(&events);
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            events.connected.store(true, Relaxed);
                            info!("cluster: connected to NATS");
                        }
                        async_nats::Event::Disconnected => {
                            events.connected.store(false, Relaxed);
                            warn!("cluster: disconnected from NATS, reconnecting");
                        }
                        other => info!(event = %other, "cluster: NATS event"),
                    }
                }
            });
        if let (Some(user), Some(password)) = (&config.user, &config.password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &config.token {
            options = options.token(token.clone());
        }
        if let Some(path) = &config.credentials {
            options = options
                .credentials_file(path)
                .await
                .map_err(|e| connect_error(format!("cluster.credentials: {e}")))?;
        }
        if let Some(path) = &config.cafile {
            options = options
                .add_root_certificates(path.clone())
                .require_tls(true);
        }
        // Shared Subscriptions' queue groups need the node's own messages: they have a
        // connection of their own (the main one never gets its own messages back).
        let queue_options = options
            .clone()
            .name(format!("roost-{}-groups", config.node));
        let options = options.name(format!("roost-{}", config.node)).no_echo();
        // NATS servers started at the same time may not listen yet: tried for a while.
        let deadline = tokio::time::Instant::now() + SETUP_PATIENCE;
        let client = loop {
            match options.clone().connect(addrs.clone()).await {
                Ok(client) => break client,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    warn!(error = %e, "cluster: NATS not reachable yet; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(connect_error(e.to_string())),
            }
        };
        let queue_client = queue_options
            .connect(addrs.clone())
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        stats.connected.store(true, Relaxed);
        stats.jetstream_writable.store(true, Relaxed);
        let js = jetstream::new(client.clone());
        // JetStream may still be electing its leaders (NATS servers started together with
        // the node): the setup is tried again for a while before giving up.
        let deadline = tokio::time::Instant::now() + SETUP_PATIENCE;
        let (owners, will_records, heartbeats, states) = loop {
            match setup(&js, config).await {
                Ok(buckets) => break buckets,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    warn!(error = %e, "cluster: JetStream not ready; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let claim = wills::claim_name(&heartbeats, &config.node, SETUP_PATIENCE).await?;
        let max_payload = client.server_info().max_payload;
        info!(
            max_payload,
            "cluster: NATS takes messages of up to max_payload bytes, headers included; larger MQTT messages are refused"
        );
        let (state_writes, state_writes_rx) = tokio::sync::mpsc::unbounded_channel();
        let (adoptions, adoptions_rx) = tokio::sync::mpsc::channel(64);
        Ok(Cluster {
            states,
            state_writes,
            state_writes_rx: parking_lot::Mutex::new(Some(state_writes_rx)),
            adoptions,
            adoptions_rx: parking_lot::Mutex::new(Some(adoptions_rx)),
            config: config.clone(),
            interest: Arc::new(interest::Interest::new(config.prefix.clone())),
            client,
            queue_client,
            js,
            owners,
            stats,
            applied: AtomicU64::new(0),
            run: {
                use rand::RngExt;
                rand::rng().random::<u64>()
            },
            next_write: AtomicU64::new(0),
            max_payload,
            claims: owner::Claims::default(),
            wills: wills::Wills::new(will_records, heartbeats, claim),
        })
    }

    /// Starts the tasks that bring other nodes' messages, retained messages and takeovers
    /// to `broker`, and waits (bounded) until this node's consumer of the stream exists and
    /// the retained messages are loaded.
    pub(crate) async fn start(broker: &Arc<Broker>) {
        let Some(cluster) = broker.cluster.as_ref() else {
            return;
        };
        let changes = cluster.interest.take_receiver();
        if let Some(changes) = changes {
            tokio::spawn(interest::run(Arc::clone(broker), changes));
        }
        if let Some(changes) = cluster.interest.take_share_receiver() {
            tokio::spawn(shares::run(Arc::clone(broker), changes));
        }
        if let Some(writes) = cluster.state_writes_rx.lock().take() {
            let limit = Duration::from_secs(cluster.config.ack_timeout);
            tokio::spawn(follow::run_writer(cluster.states.clone(), limit, writes));
        }
        let (consumer_tx, consumer_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(inbound::run_stream(Arc::clone(broker), consumer_tx));
        tokio::spawn(owner::watch(Arc::clone(broker)));
        tokio::spawn(owner::drop_moved(Arc::clone(broker)));
        tokio::spawn(wills::run(Arc::clone(broker)));
        let (loaded_tx, loaded_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(retained::follow(Arc::clone(broker), loaded_tx));
        let limit = Duration::from_secs(cluster.config.ack_timeout.max(5) * 2);
        let deadline = tokio::time::Instant::now() + limit;
        if tokio::time::timeout_at(deadline, consumer_rx)
            .await
            .is_err()
        {
            warn!("cluster: the node's consumer of the stream is not ready in time");
        }
        if tokio::time::timeout_at(deadline, loaded_rx).await.is_err() {
            warn!("cluster: retained messages not loaded in time; they arrive as they load");
        }
    }

    /// The NATS client.
    pub(crate) fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The connection for queue subscriptions (see [`shares`]).
    pub(crate) fn queue_client(&self) -> &async_nats::Client {
        &self.queue_client
    }

    /// The JetStream context.
    pub(crate) fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Where a node's Topic Filter interest changes are sent.
    pub(crate) fn interest(&self) -> &Arc<interest::Interest> {
        &self.interest
    }

    /// `Ok` if `topic` has a NATS subject (a message to it can reach the other nodes).
    pub(crate) fn can_carry(&self, topic: &str) -> Result<(), subject::Unmappable> {
        subject::check(topic)
    }

    /// True if a message with a payload of `payload` bytes and MQTT 5.0 properties of
    /// `properties` bytes fits in a NATS message (the servers' `max_payload`, headers
    /// included: percent-encoding may triple the properties).
    pub(crate) fn fits(&self, payload: usize, properties: usize) -> bool {
        payload
            .saturating_add(properties.saturating_mul(3))
            .saturating_add(HEADER_ROOM)
            <= self.max_payload
    }

    /// `Ok` if a Topic Filter can be subscribed to across the cluster.
    pub(crate) fn can_subscribe(&self, filter: &str) -> Result<(), subject::Unmappable> {
        let inner = match crate::topic::shared(filter) {
            Some(Ok(shared)) => shared.filter,
            _ => filter,
        };
        if is_local(inner) {
            return Ok(());
        }
        subject::check(inner)
    }

    /// Publishes messages accepted here to the other nodes, in order: QoS 0 on their
    /// subjects; QoS 1/2 to the stream (and a copy on their subjects); retained ones to the
    /// retained stream too. True once JetStream confirmed every write (within `ack_timeout`).
    pub(crate) async fn forward(&self, messages: &[Forward], now: std::time::Instant) -> bool {
        let c = &self.config;
        // JetStream writes, each with a message id: a write tried again after a failure
        // JetStream actually took is dropped there as a duplicate.
        let mut writes: Vec<(String, async_nats::HeaderMap, bytes::Bytes)> = Vec::new();
        let mut copies = Vec::new();
        for Forward {
            message: m,
            publisher,
        } in messages
        {
            if is_local(&m.topic) {
                continue;
            }
            let Ok(subject) = subject::topic_subject(&c.prefix, &m.topic) else {
                continue;
            };
            let mapped = &subject[c.prefix.len()..];
            let mut headers = wire::headers(m, &c.node, now);
            if let Some(client) = publisher.as_deref().filter(|_| m.qos != QoS::AtMostOnce) {
                // For No Local: this node routes the message from the stream too.
                headers.insert(wire::CLIENT, client);
            }
            let mut stored = |to: String| {
                let mut h = headers.clone();
                let id = self.next_write.fetch_add(1, Relaxed);
                h.insert(
                    "Nats-Msg-Id",
                    format!("{}-{:x}-{id}", c.node, self.run).as_str(),
                );
                writes.push((to, h, m.payload.clone()));
            };
            if m.qos != QoS::AtMostOnce {
                stored(format!("{}{mapped}", c.stream_subject));
            }
            if m.retain {
                stored(format!("{}{mapped}", c.retained_subject));
            }
            if m.qos == QoS::AtMostOnce {
                let mut headers = headers;
                let id = self.next_write.fetch_add(1, Relaxed);
                headers.insert(wire::ID, format!("{}-{:x}-{id}", c.node, self.run).as_str());
                if let Err(e) = self
                    .client
                    .publish_with_headers(subject, headers, m.payload.clone())
                    .await
                {
                    warn!(error = %e, topic = &*m.topic, "cluster: publish failed");
                }
            } else {
                copies.push((subject, headers, m.payload.clone()));
            }
            self.stats.published.fetch_add(1, Relaxed);
        }
        let ok = self.store_all(writes).await;
        self.stats.jetstream_writable.store(ok, Relaxed);
        if ok {
            // NATS applications see a QoS 1/2 message once it is stored.
            for (subject, headers, payload) in copies {
                let _ = self
                    .client
                    .publish_with_headers(subject, headers, payload)
                    .await;
            }
        } else {
            self.stats.publish_failures.fetch_add(1, Relaxed);
        }
        ok
    }

    /// Writes the messages of `deliveries` (of an ended member of a Shared Subscription) to
    /// the stream again, each marked for its group only (see [`shares`]); true once JetStream
    /// confirmed them all.
    pub(crate) async fn give_back(
        &self,
        deliveries: &[(crate::session::Delivery, String)],
        now: std::time::Instant,
    ) -> bool {
        let c = &self.config;
        let mut writes = Vec::with_capacity(deliveries.len());
        for (d, id) in deliveries {
            let (Some(group), m) = (&d.group, &d.message) else {
                continue;
            };
            let Ok(subject) = subject::topic_subject(&c.stream_subject, &m.topic) else {
                continue;
            };
            let mut headers = wire::headers(m, &c.node, now);
            headers.insert(wire::GROUP, shares::group_id(group).as_str());
            headers.insert("Nats-Msg-Id", id.as_str());
            writes.push((subject, headers, m.payload.clone()));
        }
        let count = writes.len();
        let ok = self.store_all(writes).await;
        if ok {
            debug!(
                count,
                "cluster: Shared Subscription messages given back to their groups"
            );
        } else {
            self.stats.publish_failures.fetch_add(1, Relaxed);
        }
        ok
    }

    /// The id of the write giving `delivery` back (see [`Cluster::give_back`]): from the
    /// stored Session `incarnation` and the entry's position in it when there are both (the
    /// same if a restart gives it back again, within the stream's duplicate window), else
    /// unique to this run.
    pub(crate) fn give_back_id(
        &self,
        incarnation: Option<u64>,
        delivery: &crate::session::Delivery,
    ) -> String {
        let node = &self.config.node;
        match (incarnation, delivery.seq) {
            (Some(incarnation), Some(seq)) => format!("{node}-g-{incarnation:x}-{seq}"),
            _ => {
                let id = self.next_write.fetch_add(1, Relaxed);
                format!("{node}-{:x}-{id}", self.run)
            }
        }
    }

    /// Writes to JetStream until each write is confirmed, trying the failed ones again (a
    /// stream without a leader for a moment), for at most `ack_timeout`. True if all were.
    async fn store_all(
        &self,
        mut writes: Vec<(String, async_nats::HeaderMap, bytes::Bytes)>,
    ) -> bool {
        let limit = Duration::from_secs(self.config.ack_timeout);
        let deadline = tokio::time::Instant::now() + limit;
        let mut last_error = String::new();
        while !writes.is_empty() {
            let mut acks = Vec::with_capacity(writes.len());
            let mut failed = Vec::new();
            for (subject, headers, payload) in writes {
                match self
                    .js
                    .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                    .await
                {
                    Ok(ack) => acks.push(((subject, headers, payload), ack)),
                    Err(e) => {
                        last_error = e.to_string();
                        failed.push((subject, headers, payload));
                    }
                }
            }
            let (sent, futures): (Vec<_>, Vec<_>) = acks.into_iter().unzip();
            let results = tokio::time::timeout_at(
                deadline,
                futures_util::future::join_all(
                    futures
                        .into_iter()
                        .map(std::future::IntoFuture::into_future),
                ),
            )
            .await;
            let Ok(results) = results else {
                warn!(
                    timeout_secs = self.config.ack_timeout,
                    "cluster: JetStream did not confirm writes in time"
                );
                return false;
            };
            for (write, result) in sent.into_iter().zip(results) {
                if let Err(e) = result {
                    last_error = e.to_string();
                    failed.push(write);
                }
            }
            writes = failed;
            if writes.is_empty() {
                break;
            }
            if tokio::time::Instant::now() + RETRY_WRITE >= deadline {
                warn!(error = %last_error, unconfirmed = writes.len(), "cluster: JetStream did not confirm writes");
                return false;
            }
            tokio::time::sleep(RETRY_WRITE).await;
        }
        true
    }

    /// Claims `client_id` for a connection of this node (see [`owner`]). Returns the claim
    /// it replaced, if any: its node and revision.
    /// `durable`: the connection asks for a durable Session.
    pub(crate) async fn claim(
        &self,
        client_id: &str,
        conn: u64,
        durable: bool,
    ) -> Result<Claimed, ClaimError> {
        owner::claim(self, client_id, conn, durable).await
    }

    /// True if `node` has sent a heartbeat lately.
    pub(crate) fn node_alive(&self, node: &str) -> bool {
        self.wills.node_alive(node)
    }

    /// After `conn` attached to its session: true if another node claimed the client id
    /// meanwhile (the connection must then close).
    pub(crate) fn lost_claim(&self, client_id: &str, conn: u64) -> bool {
        self.claims.lost(client_id, conn)
    }

    /// Settles the client's earlier wills and records the will of a connection that
    /// attached (see [`wills`]); true if it had one and it was recorded.
    pub(crate) async fn will_connected(
        &self,
        broker: &Arc<Broker>,
        client_id: &str,
        conn: u64,
        will: Option<&crate::codec::Will>,
        session_expiry: u32,
        clean_start: bool,
    ) -> bool {
        wills::connected(
            broker,
            self,
            client_id,
            conn,
            will,
            session_expiry,
            clean_start,
        )
        .await
    }

    /// Marks the recorded will of `conn` as left to the cluster (see [`wills`]).
    pub(crate) async fn will_ended(&self, client_id: &str, conn: u64) -> WillLeft {
        wills::ended(self, client_id, conn).await
    }

    /// Removes the record of `conn`'s will before this node publishes it: false if it was
    /// gone (another node published or cancelled it); true if removed, or if NATS cannot
    /// say (the will is then published here, at the risk of a second copy).
    pub(crate) async fn take_will(&self, client_id: &str, conn: u64) -> bool {
        wills::take(self, client_id, conn).await
    }

    /// True if no connection of this node holds the claim of `client_id`: another node's
    /// CONNECT took it.
    pub(crate) fn taken_elsewhere(&self, client_id: &str) -> bool {
        self.claims.held(client_id).is_none()
    }

    /// Forgets the claim of `conn` when it ends.
    pub(crate) fn release(&self, client_id: &str, conn: u64) {
        self.claims.release(client_id, conn);
    }
}

/// How long a stream message has been in its stream (by its timestamp and the broker's
/// wall clock, in whole seconds; zero if the clocks disagree).
pub(crate) fn stored_for(broker: &Broker, m: &jetstream::Message) -> Duration {
    let Ok(info) = m.info() else {
        return Duration::ZERO;
    };
    let now = broker
        .clock
        .wall()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let published = u64::try_from(info.published.unix_timestamp()).unwrap_or(0);
    Duration::from_secs(now.saturating_sub(published))
}

/// Topics that stay on their node: the broker's own `$SYS` tree.
pub(crate) fn is_local(topic: &str) -> bool {
    topic == "$SYS" || topic.starts_with("$SYS/")
}

/// Bytes kept for the headers Roost itself adds to a NATS message.
const HEADER_ROOM: usize = 1024;

/// Pause before a JetStream write that failed is tried again.
const RETRY_WRITE: Duration = Duration::from_millis(250);

/// How long a starting node keeps trying to set up its streams and buckets.
const SETUP_PATIENCE: Duration = Duration::from_secs(30);

/// Makes sure the streams and buckets exist; returns the buckets (owners, wills,
/// heartbeats, Session states).
async fn setup(
    js: &jetstream::Context,
    config: &ClusterConfig,
) -> Result<(kv::Store, kv::Store, kv::Store, kv::Store), ClusterError> {
    let replicas = config.replicas;
    let max_bytes = match config.stream_max_bytes {
        0 => -1,
        n => i64::try_from(n).unwrap_or(i64::MAX),
    };
    ensure_stream(
        js,
        stream::Config {
            name: config.stream.clone(),
            subjects: vec![format!("{}.>", config.stream_subject)],
            num_replicas: replicas,
            max_age: Duration::from_secs(config.stream_max_age),
            max_bytes,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::Old,
            ..Default::default()
        },
    )
    .await?;
    ensure_stream(
        js,
        stream::Config {
            name: config.retained_stream.clone(),
            subjects: vec![format!("{}.>", config.retained_subject)],
            num_replicas: replicas,
            max_messages_per_subject: 1,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::Old,
            ..Default::default()
        },
    )
    .await?;
    let bucket = &config.sessions_bucket;
    let owners = open_bucket(js, bucket, replicas, None).await?;
    let will_records = open_bucket(js, &format!("{bucket}_WILLS"), replicas, None).await?;
    let heartbeats = open_bucket(
        js,
        &format!("{bucket}_NODES"),
        replicas,
        Some(wills::NODE_TTL),
    )
    .await?;
    let states = open_bucket(js, &format!("{bucket}_STATE"), replicas, None).await?;
    Ok((owners, will_records, heartbeats, states))
}

/// Removes the record of `conn`'s will once this node published or cancelled it.
pub(crate) fn will_done(broker: &Arc<Broker>, client_id: &str, conn: u64) {
    wills::done(broker, client_id, conn);
}

/// Opens a key-value bucket, creating its stream by hand if needed: the key-value helper
/// needs a field that nats-server sends only from 2.10. Entries older than `ttl` expire.
async fn open_bucket(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
    ttl: Option<Duration>,
) -> Result<kv::Store, ClusterError> {
    ensure_stream(
        js,
        stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            num_replicas: replicas,
            max_messages_per_subject: 1,
            max_age: ttl.unwrap_or_default(),
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::New,
            allow_rollup: true,
            deny_delete: true,
            // Reads go to the stream's leader: a replica may not have the last write yet,
            // and a compare-and-set must compare against it.
            allow_direct: false,
            ..Default::default()
        },
    )
    .await?;
    js.get_key_value(bucket)
        .await
        .map_err(|e| ClusterError::JetStream {
            what: "bucket",
            name: bucket.to_string(),
            reason: e.to_string(),
        })
}

async fn ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<(), ClusterError> {
    let name = config.name.clone();
    let failed = |reason: String| ClusterError::JetStream {
        what: "stream",
        name: name.clone(),
        reason,
    };
    match js.get_stream(&name).await {
        Ok(mut existing) => {
            let info = existing.info().await.map_err(|e| failed(e.to_string()))?;
            let have = &info.config;
            if have.subjects != config.subjects {
                return Err(failed(format!(
                    "exists with subjects {:?}, not {:?}",
                    have.subjects, config.subjects
                )));
            }
            if have.num_replicas != config.num_replicas {
                warn!(
                    stream = %name,
                    have = have.num_replicas,
                    configured = config.num_replicas,
                    "cluster: the stream exists with another number of replicas; kept as it is"
                );
            }
            Ok(())
        }
        Err(_) => js
            .create_stream(config)
            .await
            .map(|_| ())
            .map_err(|e| failed(e.to_string())),
    }
}
