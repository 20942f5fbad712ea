//! The life of one bridge: connect to the remote broker, then to this one, subscribe on both
//! sides, relay until either connection ends, wait, and start again.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::broker::Broker;
use crate::codec::{
    Connect, Disconnect, Packet, QoS, ReasonCode, RetainHandling, Subscribe, SubscribeFilter,
    Unsubscribe, Version,
};
use crate::config::{BridgeConfig, BridgeProtocol, BridgeTopic};
use crate::session::NEVER_EXPIRES;

use super::link::{self, HIGH_WATER, LinkError, Reader, Writer};
use super::relay::{Relay, Restart};
use super::remote::{self, CONNECT_TIMEOUT};
use super::{BridgeState, BridgeStatus};

/// The in-process buffer between the bridge and its local connection, each way.
const LOCAL_PIPE: usize = 64 * 1024;
/// A link that stayed up this long starts the next backoff from the beginning.
const STABLE: Duration = Duration::from_secs(30);
/// Time allowed for the last packets (DISCONNECT) when a link closes.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// How a link attempt ended.
struct Ended {
    /// Why, for the log and the status.
    reason: String,
    /// The connection to the remote broker was established (CONNACK received).
    connected: bool,
    /// The remote refused the bridge bit, or closed the connection after a CONNECT with it
    /// (which may have been for another reason): try again at once without it.
    private_refused: bool,
}

impl Ended {
    fn before_connack(reason: String) -> Ended {
        Ended {
            reason,
            connected: false,
            private_refused: false,
        }
    }
}

/// Runs the bridge `config` until the broker shuts down.
pub(crate) async fn run(
    broker: Arc<Broker>,
    config: BridgeConfig,
    status: Arc<BridgeStatus>,
    tasks: TaskTracker,
) {
    let tls = match config.tls.as_ref().map(remote::client_config).transpose() {
        Ok(tls) => tls,
        Err(e) => {
            tracing::error!(bridge = config.name.as_str(), error = %e, "bridge TLS settings unusable: bridge stopped");
            *status.last_error.lock() = Some(e.to_string());
            status.set_state(BridgeState::Stopped);
            return;
        }
    };
    let topics: Arc<[BridgeTopic]> = config.topics.clone().into();
    let try_private = config.try_private && config.protocol != BridgeProtocol::Mqtt5;
    let mut private = try_private;
    // The bridge bit was dropped after an attempt with it ended before CONNACK, and no
    // attempt without it has connected since.
    let mut private_doubted = false;
    let mut backoff = Backoff::new(config.restart_base, config.restart_cap);
    let mut address = 0;
    let shutdown = broker.shutdown.clone();
    // Outgoing messages wait in the local Session while the remote cannot be reached, but
    // the Session is made by the first link, after the remote's CONNACK: until then nothing
    // would collect them. A durable bridge without one gets it now, with its subscriptions.
    // (Also when the Session exists but lacks a line added to the configuration since.)
    let wanted: Vec<String> = topics
        .iter()
        .filter(|t| t.direction.outgoing())
        .map(BridgeTopic::local_filter)
        .collect();
    let lacking = match broker.registry.get(&status.local_client_id) {
        None => true,
        Some(s) => {
            let slot = s.slot.lock();
            wanted
                .iter()
                .any(|f| !slot.session.subscriptions.contains_key(f))
        }
    };
    if !config.clean_session && !wanted.is_empty() && lacking {
        let attempt = Attempt {
            broker: &broker,
            config: &config,
            status: &status,
            tasks: &tasks,
            topics: &topics,
            private,
        };
        let opened = tokio::select! {
            opened = attempt.open_local_session() => opened,
            _ = shutdown.cancelled() => Ok(()),
        };
        if let Err(e) = opened {
            warn!(
                bridge = config.name.as_str(),
                error = e.as_str(),
                "cannot create the bridge's local session before the first link"
            );
        }
    }
    loop {
        status.set_state(BridgeState::Connecting);
        let target = &config.addresses[address % config.addresses.len()];
        let started = Instant::now();
        let attempt = Attempt {
            broker: &broker,
            config: &config,
            status: &status,
            tasks: &tasks,
            topics: &topics,
            private,
        };
        *status.remote_addr.lock() = Some(target.to_string());
        // At shutdown a link under way ends itself (with DISCONNECT to both sides); one still
        // connecting is cut off after the grace.
        let ended = tokio::select! {
            ended = attempt.link(target, tls.as_ref()) => ended,
            _ = async {
                shutdown.cancelled().await;
                tokio::time::sleep(CLOSE_GRACE * 3).await;
            } => break,
        };
        if shutdown.is_cancelled() {
            break;
        }
        *status.last_error.lock() = Some(ended.reason.clone());
        if ended.private_refused {
            info!(bridge = config.name.as_str(), remote = %target, reason = ended.reason.as_str(), "no CONNACK after a CONNECT with the bridge bit: trying once without it");
            private = false;
            private_doubted = true;
            continue;
        }
        if private_doubted {
            private_doubted = false;
            if ended.connected {
                info!(bridge = config.name.as_str(), remote = %target, "the remote broker took the bridge without the bridge bit: plain MQTT from now on");
            } else {
                // Not taken without the bit either: what ended the attempt with it (a close,
                // e.g. a full or restarting broker) was not about the bit.
                private = try_private;
            }
        }
        if ended.connected {
            warn!(bridge = config.name.as_str(), remote = %target, reason = ended.reason.as_str(), "bridge link lost");
            if started.elapsed() >= STABLE {
                backoff.reset();
            }
        } else {
            warn!(bridge = config.name.as_str(), remote = %target, reason = ended.reason.as_str(), "bridge cannot connect");
            address += 1;
        }
        status.set_state(BridgeState::Backoff);
        let wait = backoff.next();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    status.set_state(BridgeState::Stopped);
    info!(bridge = config.name.as_str(), "bridge stopped");
}

/// Reconnect waits: `base` each time without a cap; with one, a random wait between `base`
/// and a bound that doubles from `base` up to `cap` (jitter keeps many bridges from
/// reconnecting in step).
struct Backoff {
    base: Duration,
    cap: Option<Duration>,
    attempt: u32,
}

impl Backoff {
    fn new(base: Duration, cap: Option<Duration>) -> Backoff {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }

    fn next(&mut self) -> Duration {
        let Some(cap) = self.cap else {
            return self.base;
        };
        let bound = self
            .base
            .saturating_mul(1 << self.attempt.min(16))
            .min(cap)
            .max(self.base);
        self.attempt = self.attempt.saturating_add(1);
        let spread = (bound - self.base).as_millis() as u64;
        self.base + Duration::from_millis(rand::random_range(0..=spread))
    }
}

/// One attempt at a link.
struct Attempt<'a> {
    broker: &'a Arc<Broker>,
    config: &'a BridgeConfig,
    status: &'a BridgeStatus,
    tasks: &'a TaskTracker,
    topics: &'a Arc<[BridgeTopic]>,
    /// Set the bridge bit.
    private: bool,
}

/// Both connections of an established link.
struct Sides {
    local: (Reader, Writer),
    remote: (Reader, Writer),
}

impl Attempt<'_> {
    /// Connects both sides, subscribes and relays until the link ends.
    async fn link(
        &self,
        target: &crate::config::BridgeAddress,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> Ended {
        let stream = match remote::connect(target, tls).await {
            Ok(stream) => stream,
            Err(e) => return Ended::before_connack(e),
        };
        let version = match self.config.protocol {
            BridgeProtocol::Mqtt5 => Version::V5,
            _ => Version::V311,
        };
        // A 3.1.1 remote cannot be told a limit: anything MQTT can carry is read, and what
        // this broker would not take is refused there (not a reason to end the link, which
        // would bring the same packet again).
        let max_in = match version {
            Version::V5 => self.broker.config.max_packet_size as usize,
            Version::V311 => crate::config::MQTT_MAX_PACKET_SIZE as usize,
        };
        let (mut r_read, mut r_write) = link::split(stream, version, max_in);
        let connack = match self
            .connect_remote(version, &mut r_read, &mut r_write)
            .await
        {
            Ok(connack) => connack,
            Err(ended) => return ended,
        };
        let remote_props = connack.properties;
        r_write.set_max_size(remote_props.maximum_packet_size);
        let window = remote_props
            .receive_maximum
            .unwrap_or(u16::MAX)
            .min(self.config.max_inflight)
            .max(1);
        let keepalive = remote_props
            .server_keep_alive
            .unwrap_or(self.config.keepalive);
        let connected = |reason: String| Ended {
            reason,
            connected: true,
            private_refused: false,
        };
        let local = match self
            .connect_local(window, remote_props.maximum_packet_size)
            .await
        {
            Ok(local) => local,
            Err(reason) => {
                close(&mut r_write).await;
                return connected(reason);
            }
        };
        let mut sides = Sides {
            local,
            remote: (r_read, r_write),
        };
        let mut early = Vec::new();
        if !connack.session_present
            && let Err(reason) = self.forget_remote_ids(&mut sides.local, &mut early).await
        {
            close(&mut sides.remote.1).await;
            close(&mut sides.local.1).await;
            return connected(reason);
        }
        let (local_window, stash) = match self.subscribe(&mut sides, early).await {
            Ok(ready) => ready,
            Err(reason) => {
                close(&mut sides.remote.1).await;
                close(&mut sides.local.1).await;
                return connected(reason);
            }
        };
        self.status.connects.fetch_add(1, Relaxed);
        self.status.set_state(BridgeState::Connected);
        *self.status.last_error.lock() = None;
        info!(
            bridge = self.config.name.as_str(),
            remote = %target,
            remote_client_id = self.status.remote_client_id.as_str(),
            session_present = connack.session_present,
            bridge_bit = self.private,
            "bridge connected"
        );
        let mut relay = Relay::new(Arc::clone(self.topics), version, local_window);
        relay.set_max_packet_sizes(
            remote_props.maximum_packet_size,
            Some(self.broker.config.max_packet_size),
        );
        relay.set_remote_limits(
            match remote_props.maximum_qos {
                Some(0) => QoS::AtMostOnce,
                Some(1) => QoS::AtLeastOnce,
                _ => QoS::ExactlyOnce,
            },
            remote_props.retain_available.unwrap_or(true),
        );
        let reason = self.relay(&mut relay, &mut sides, stash, keepalive).await;
        close(&mut sides.remote.1).await;
        close(&mut sides.local.1).await;
        connected(reason)
    }

    /// Sends CONNECT to the remote broker and waits for its CONNACK.
    async fn connect_remote(
        &self,
        version: Version,
        read: &mut Reader,
        write: &mut Writer,
    ) -> Result<crate::codec::ConnAck, Ended> {
        let config = self.config;
        let mut connect = Connect::new(version, &self.status.remote_client_id);
        connect.clean_start = config.clean_session;
        connect.keep_alive = config.keepalive;
        connect.username = config.remote_username.clone();
        connect.password = config
            .remote_password
            .as_ref()
            .map(|p| bytes::Bytes::copy_from_slice(p.as_bytes()));
        connect.mqtt31 = config.protocol == BridgeProtocol::Mqtt31;
        connect.bridge = self.private;
        connect.session_expiry_interval = if config.clean_session {
            0
        } else {
            NEVER_EXPIRES
        };
        // The remote sends no more unacknowledged messages than this broker accepts from one
        // client, and no packet larger than it accepts.
        connect.receive_maximum = self.broker.config.receive_maximum;
        connect.maximum_packet_size = Some(self.broker.config.max_packet_size);
        let sent = async {
            write.queue(&Packet::Connect(Box::new(connect)))?;
            write.flush().await?;
            read.recv().await
        };
        let refused_private = |reason: String| Ended {
            reason,
            connected: false,
            private_refused: self.private,
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, sent).await {
            Err(_) => Err(Ended::before_connack(format!(
                "no CONNACK from the remote broker in time{}",
                self.tls_hint()
            ))),
            Ok(Err(e @ (LinkError::Closed | LinkError::Io(_)))) if self.private => {
                Err(refused_private(format!(
                    "the remote broker closed the connection before CONNACK ({e}): it may \
                     refuse the bridge bit{}",
                    self.tls_hint()
                )))
            }
            Ok(Err(e @ (LinkError::Closed | LinkError::Io(_)))) => {
                Err(Ended::before_connack(format!(
                    "the remote broker closed the connection before CONNACK ({e}){}",
                    self.tls_hint()
                )))
            }
            Ok(Err(e)) => Err(Ended::before_connack(format!("remote broker: {e}"))),
            Ok(Ok(Packet::ConnAck(c))) if c.code == ReasonCode::SUCCESS => Ok(c),
            Ok(Ok(Packet::ConnAck(c)))
                if self.private && c.code == ReasonCode::V3_UNACCEPTABLE_PROTOCOL_VERSION =>
            {
                Err(refused_private(format!(
                    "CONNACK {}",
                    connack_text(version, c.code)
                )))
            }
            Ok(Ok(Packet::ConnAck(c))) => Err(Ended::before_connack(format!(
                "the remote broker refused the connection: CONNACK {}",
                connack_text(version, c.code)
            ))),
            Ok(Ok(other)) => Err(Ended::before_connack(format!(
                "the remote broker sent {other:?} before CONNACK"
            ))),
        }
    }

    /// For failures before CONNACK on plain TCP: the likeliest mistake.
    fn tls_hint(&self) -> &'static str {
        if self.config.tls.is_none() {
            "; if the remote port expects TLS, set cafile"
        } else {
            ""
        }
    }

    /// Opens the in-process connection to this broker and waits for its CONNACK. The local
    /// Session takes at most `window` unacknowledged messages, and none larger than
    /// `max_packet` (what the remote broker accepts).
    async fn connect_local(
        &self,
        window: u16,
        max_packet: Option<u32>,
    ) -> Result<(Reader, Writer), String> {
        let (ours, theirs) = tokio::io::duplex(LOCAL_PIPE);
        self.tasks.spawn(crate::net::conn::serve_bridge(
            Arc::clone(self.broker),
            theirs,
        ));
        let max_in = self.broker.config.max_packet_size as usize;
        let (mut read, mut write) = link::split(Box::new(ours), Version::V5, max_in);
        let mut connect = Connect::new(Version::V5, &self.status.local_client_id);
        connect.clean_start = self.config.clean_session;
        connect.session_expiry_interval = if self.config.clean_session {
            0
        } else {
            NEVER_EXPIRES
        };
        connect.receive_maximum = window;
        connect.maximum_packet_size = max_packet;
        let sent = async {
            write.queue(&Packet::Connect(Box::new(connect)))?;
            write.flush().await?;
            read.recv().await
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, sent).await {
            Err(_) => Err("no CONNACK from this broker in time".into()),
            Ok(Err(e)) => Err(format!("this broker: {e}")),
            Ok(Ok(Packet::ConnAck(c))) if c.code == ReasonCode::SUCCESS => {
                write.set_max_size(c.properties.maximum_packet_size);
                Ok((read, write))
            }
            Ok(Ok(Packet::ConnAck(c))) => Err(format!(
                "this broker refused the bridge's local connection: {}",
                c.code
            )),
            Ok(Ok(other)) => Err(format!("this broker sent {other:?} before CONNACK")),
        }
    }

    /// Creates the durable local Session with the subscriptions of the outgoing lines (as
    /// [`Attempt::subscribe`] makes them), then leaves it. A message delivered meanwhile is
    /// not acknowledged: the Session sends it again on the next link.
    async fn open_local_session(&self) -> Result<(), String> {
        let (mut read, mut write) = self
            .connect_local(self.config.max_inflight.max(1), None)
            .await?;
        let subscribes = self.local_subscribes(RetainHandling::OnNewSubscribe)?;
        let count = u16::try_from(subscribes.len()).map_err(|_| "too many topic lines")?;
        for subscribe in subscribes {
            write
                .queue(&Packet::Subscribe(subscribe))
                .map_err(|e| format!("this broker: {e}"))?;
        }
        let subscribed = async {
            write.flush().await.map_err(|e| e.to_string())?;
            wait_subacks(&mut read, count, true, &mut Vec::new()).await
        };
        let result = subscribed.await.map_err(|e| format!("this broker: {e}"));
        close(&mut write).await;
        result
    }

    /// One SUBSCRIBE to this broker per outgoing line, its Subscription Identifier (and
    /// Packet Identifier) the line's number, so that each delivery says which line it came
    /// through.
    fn local_subscribes(&self, retain_handling: RetainHandling) -> Result<Vec<Subscribe>, String> {
        let mut subscribes = Vec::new();
        for (i, t) in self.topics.iter().enumerate() {
            if !t.direction.outgoing() {
                continue;
            }
            let id = u16::try_from(i + 1).map_err(|_| "too many topic lines".to_string())?;
            subscribes.push(Subscribe {
                packet_id: id,
                filters: vec![filter(t.local_filter(), t.qos, retain_handling)],
                subscription_identifier: Some(u32::from(id)),
                user_properties: Vec::new(),
            });
        }
        Ok(subscribes)
    }

    /// The remote broker has no Session for the bridge (Session Present 0): the QoS 2
    /// Packet Identifiers it used before, still awaiting PUBREL in the local Session, are
    /// released (MQTT-3.2.2-5 for 5.0: the client discards its state), so that a new message
    /// with one of them is not taken for a resend of the old one and dropped.
    async fn forget_remote_ids(
        &self,
        local: &mut (Reader, Writer),
        stash: &mut Vec<(bool, Packet)>,
    ) -> Result<(), String> {
        let ids = self
            .broker
            .registry
            .get(&self.status.local_client_id)
            .map(|s| s.slot.lock().session.inbound.pending_ids())
            .unwrap_or_default();
        if ids.is_empty() {
            return Ok(());
        }
        info!(
            bridge = self.config.name.as_str(),
            count = ids.len(),
            "the remote broker has a new session: releasing the Packet Identifiers of its earlier one"
        );
        for id in &ids {
            local
                .1
                .queue(&Packet::Ack(crate::codec::PubAckLike::new(
                    crate::codec::AckKind::PubRel,
                    *id,
                )))
                .map_err(|e| format!("this broker: {e}"))?;
        }
        local
            .1
            .flush()
            .await
            .map_err(|e| format!("this broker: {e}"))?;
        let count = u16::try_from(ids.len()).unwrap_or(u16::MAX);
        let completes = |p: &Packet| {
            matches!(p, Packet::Ack(a) if a.kind == crate::codec::AckKind::PubComp
                && ids.contains(&a.packet_id))
        };
        // Deliveries the local Session resends meanwhile are kept for the relay.
        wait_for(&mut local.0, count, true, stash, completes, "PUBCOMP")
            .await
            .map_err(|e| format!("this broker: {e}"))
    }

    /// Subscribes on both sides, local first, and waits for the SUBACKs. Messages that
    /// arrive meanwhile (resent from a session) are kept for the relay. Returns the local
    /// broker's Receive Maximum (from its CONNACK: the default) and the kept packets.
    async fn subscribe(
        &self,
        sides: &mut Sides,
        mut stash: Vec<(bool, Packet)>,
    ) -> Result<(u16, Vec<(bool, Packet)>), String> {
        let retain_handling = if self.config.clean_session {
            RetainHandling::OnSubscribe
        } else {
            RetainHandling::OnNewSubscribe
        };
        // Local: one SUBSCRIBE per outgoing line.
        let mut expected = 0u16;
        for subscribe in self.local_subscribes(retain_handling)? {
            sides
                .local
                .1
                .queue(&Packet::Subscribe(subscribe))
                .map_err(|e| format!("this broker: {e}"))?;
            expected += 1;
        }
        // Lines removed from the configuration since the Session subscribed: their
        // subscriptions go, so that the Session stops collecting their messages.
        let wanted: Vec<String> = self
            .topics
            .iter()
            .filter(|t| t.direction.outgoing())
            .map(BridgeTopic::local_filter)
            .collect();
        let stale: Vec<String> = self
            .broker
            .registry
            .get(&self.status.local_client_id)
            .map(|s| {
                s.slot
                    .lock()
                    .session
                    .subscriptions
                    .keys()
                    .filter(|f| !wanted.contains(f))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if !stale.is_empty() {
            info!(bridge = self.config.name.as_str(), filters = ?stale, "unsubscribing topic lines no longer configured");
            let unsubscribe = Unsubscribe {
                packet_id: expected + 1,
                filters: stale,
                user_properties: Vec::new(),
            };
            sides
                .local
                .1
                .queue(&Packet::Unsubscribe(unsubscribe))
                .map_err(|e| format!("this broker: {e}"))?;
            expected += 1;
        }
        sides
            .local
            .1
            .flush()
            .await
            .map_err(|e| format!("this broker: {e}"))?;
        wait_subacks(&mut sides.local.0, expected, true, &mut stash)
            .await
            .map_err(|e| format!("this broker: {e}"))?;
        // Remote: one SUBSCRIBE with every incoming line.
        let filters: Vec<SubscribeFilter> = self
            .topics
            .iter()
            .filter(|t| t.direction.incoming())
            .map(|t| filter(t.remote_filter(), t.qos, retain_handling))
            .collect();
        if !filters.is_empty() {
            let subscribe = Subscribe {
                packet_id: 1,
                filters,
                subscription_identifier: None,
                user_properties: Vec::new(),
            };
            let remote = &mut sides.remote;
            remote
                .1
                .queue(&Packet::Subscribe(subscribe))
                .map_err(|e| format!("remote broker: {e}"))?;
            remote
                .1
                .flush()
                .await
                .map_err(|e| format!("remote broker: {e}"))?;
            wait_subacks(&mut remote.0, 1, false, &mut stash)
                .await
                .map_err(|e| format!("remote broker: {e}"))?;
        }
        Ok((self.broker.config.receive_maximum, stash))
    }

    /// Relays until either side fails or the broker shuts down; returns why it ended.
    async fn relay(
        &self,
        relay: &mut Relay,
        sides: &mut Sides,
        stash: Vec<(bool, Packet)>,
        keepalive: u16,
    ) -> String {
        for (local, packet) in stash {
            let fed = if local {
                relay.on_local(packet)
            } else {
                relay.on_remote(packet)
            };
            if let Err(Restart(reason)) = fed {
                return reason;
            }
        }
        let keepalive = (keepalive > 0).then(|| Duration::from_secs(u64::from(keepalive)));
        let mut last_write = Instant::now();
        let mut ping_sent: Option<Instant> = None;
        let shutdown = self.broker.shutdown.clone();
        let Sides {
            local: (l_read, l_write),
            remote: (r_read, r_write),
        } = sides;
        loop {
            for p in relay.take_local() {
                if let Err(e) = l_write.queue(&p) {
                    return format!("this broker: {e}");
                }
            }
            for p in relay.take_remote() {
                if let Err(e) = r_write.queue(&p) {
                    return format!("remote broker: {e}");
                }
            }
            let counts = relay.take_counts();
            self.status.forwarded_out.fetch_add(counts.out, Relaxed);
            self.status.forwarded_in.fetch_add(counts.r#in, Relaxed);
            self.status.refused.fetch_add(counts.refused, Relaxed);
            let now = Instant::now();
            if let Some(k) = keepalive {
                if let Some(sent) = ping_sent {
                    if now >= sent + k {
                        return "no answer from the remote broker within the keep alive".into();
                    }
                } else if now >= last_write + k {
                    if let Err(e) = r_write.queue(&Packet::PingReq) {
                        return format!("remote broker: {e}");
                    }
                    ping_sent = Some(now);
                }
            }
            let ping_at = keepalive.map(|k| match ping_sent {
                Some(sent) => sent + k,
                None => last_write + k,
            });
            let timer = [relay.poll_timeout(), ping_at].into_iter().flatten().min();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    return "this broker is shutting down".into();
                }
                written = l_write.write_some(), if l_write.pending() > 0 => {
                    if let Err(e) = written {
                        return format!("this broker: {e}");
                    }
                }
                written = r_write.write_some(), if r_write.pending() > 0 => {
                    if let Err(e) = written {
                        return format!("remote broker: {e}");
                    }
                    last_write = Instant::now();
                }
                packet = l_read.recv(), if r_write.pending() < HIGH_WATER => {
                    if let Err(reason) = feed(relay, l_read, packet, Side::Local) {
                        return reason;
                    }
                }
                packet = r_read.recv(), if l_write.pending() < HIGH_WATER && relay.wants_remote() => {
                    ping_sent = None;
                    if let Err(reason) = feed(relay, r_read, packet, Side::Remote) {
                        return reason;
                    }
                }
                _ = sleep_until(timer) => relay.handle_timeout(Instant::now()),
            }
        }
    }
}

/// Which connection of a link a packet came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Local,
    Remote,
}

/// Hands `first` and every other whole packet already read from `side` to the relay, so that
/// their answers go out in one write; stops early when the relay wants no more from the
/// remote. `Err` is why the link ends.
fn feed(
    relay: &mut Relay,
    read: &mut Reader,
    first: Result<Packet, LinkError>,
    side: Side,
) -> Result<(), String> {
    let name = match side {
        Side::Local => "this broker",
        Side::Remote => "remote broker",
    };
    let mut next = first.map(Some);
    loop {
        let packet = match next {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(()),
            Err(e) => return Err(format!("{name}: {e}")),
        };
        let fed = match side {
            Side::Local => relay.on_local(packet),
            Side::Remote => relay.on_remote(packet),
        };
        fed.map_err(|Restart(reason)| reason)?;
        if side == Side::Remote && !relay.wants_remote() {
            return Ok(());
        }
        next = read.buffered();
    }
}

/// The options of every bridge subscription: No Local (what the bridge publishes is not sent
/// back to it, MQTT-3.8.3-3) and Retain As Published (the RETAIN flag crosses the bridge).
fn filter(topic: String, qos: QoS, retain_handling: RetainHandling) -> SubscribeFilter {
    SubscribeFilter {
        filter: topic,
        qos,
        no_local: true,
        retain_as_published: true,
        retain_handling,
    }
}

/// Reads until `count` SUBACKs and UNSUBACKs have arrived, keeping other packets in `stash`
/// (tagged with `local`). Bounded by [`CONNECT_TIMEOUT`].
async fn wait_subacks(
    read: &mut Reader,
    count: u16,
    local: bool,
    stash: &mut Vec<(bool, Packet)>,
) -> Result<(), String> {
    let answers = |p: &Packet| match p {
        Packet::SubAck(s) => {
            if let Some(code) = s.codes.iter().find(|c| c.0 >= 0x80) {
                warn!(code = %code, local, "a bridge subscription was refused");
            }
            true
        }
        Packet::UnsubAck(_) => true,
        _ => false,
    };
    wait_for(read, count, local, stash, answers, "SUBACK").await
}

/// Reads until `count` packets for which `answers` holds have arrived, keeping the others
/// in `stash` (tagged with `local`); a DISCONNECT ends the wait. Bounded by
/// [`CONNECT_TIMEOUT`]; `what` names the awaited packet in the error.
async fn wait_for(
    read: &mut Reader,
    count: u16,
    local: bool,
    stash: &mut Vec<(bool, Packet)>,
    mut answers: impl FnMut(&Packet) -> bool,
    what: &str,
) -> Result<(), String> {
    let work = async {
        let mut seen = 0;
        while seen < count {
            match read.recv().await.map_err(|e| e.to_string())? {
                Packet::Disconnect(d) => return Err(format!("disconnected ({})", d.reason)),
                p if answers(&p) => seen += 1,
                other => stash.push((local, other)),
            }
        }
        Ok(())
    };
    tokio::time::timeout(CONNECT_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| Err(format!("no {what} in time")))
}

/// Sends DISCONNECT (normal, so the Session stays) and closes, within [`CLOSE_GRACE`].
async fn close(write: &mut Writer) {
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if write
            .queue(&Packet::Disconnect(Disconnect::default()))
            .is_ok()
        {
            let _ = write.flush().await;
        }
        write.shutdown().await;
    })
    .await;
}

/// Sleeps until `at` (for ever without it).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// A CONNACK code with its meaning in `version`.
fn connack_text(version: Version, code: ReasonCode) -> String {
    match (version, code.0) {
        (Version::V5, _) => code.to_string(),
        (_, 1) => "0x01 (unacceptable protocol version)".into(),
        (_, 2) => "0x02 (identifier rejected)".into(),
        (_, 3) => "0x03 (server unavailable)".into(),
        (_, 4) => "0x04 (bad user name or password)".into(),
        (_, 5) => "0x05 (not authorized)".into(),
        (_, c) => format!("0x{c:02X}"),
    }
}
