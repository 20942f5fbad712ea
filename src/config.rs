//! Broker configuration: defaults, an optional TOML file, and command-line overrides.
//!
//! Every key of the file is a field of [`FileConfig`]; unknown keys are rejected so a typo is
//! reported instead of silently ignored. Every check of the values is in [`Config::validate`],
//! which [`crate::start`] runs on whatever `Config` it is given. Errors name the key, and the
//! file when the setting came from one.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::clock::Clock;
use crate::store::Durability;

mod bridge;
mod cluster;
mod mosquitto;

pub use bridge::{
    BridgeAddress, BridgeConfig, BridgeDirection, BridgeProtocol, BridgeTls, BridgeTopic,
    valid_bridge_name,
};
pub use cluster::ClusterConfig;
pub use mosquitto::{MosquittoConf, looks_like_mosquitto, parse_mosquitto, resolve};

/// Largest packet size MQTT can express (remaining length of 268,435,455 bytes plus header).
pub const MQTT_MAX_PACKET_SIZE: u32 = 268_435_460;

/// The transport of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    /// MQTT over plain TCP.
    Tcp,
    /// MQTT over TLS.
    Tls,
    /// MQTT over WebSocket.
    Ws,
    /// MQTT over WebSocket over TLS.
    Wss,
}

impl std::fmt::Display for ListenerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ListenerKind::Tcp => "tcp",
            ListenerKind::Tls => "tls",
            ListenerKind::Ws => "ws",
            ListenerKind::Wss => "wss",
        })
    }
}

/// How the binary writes its log lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, message, fields), for log collectors.
    Json,
}

impl ListenerKind {
    /// True for the kinds that need a certificate.
    pub fn is_tls(self) -> bool {
        matches!(self, ListenerKind::Tls | ListenerKind::Wss)
    }
}

/// What happens to a QoS 1/2 message when a session it must be queued for is at a backlog
/// limit. Applies to messages from the clients of a listener.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueFullPolicy {
    /// Nothing is lost: an MQTT 5.0 publisher gets PUBACK/PUBREC 0x97 (quota exceeded) and
    /// the message goes nowhere; an MQTT 3.1.1 publisher's acknowledgement is withheld and its
    /// connection is not read until there is room.
    #[default]
    Backpressure,
    /// The message is acknowledged and not queued for the full session (counted), as
    /// mosquitto does.
    DropNew,
    /// The full session's oldest queued message is dropped to make room (counted), as EMQX
    /// does.
    DropOldest,
}

/// How a message for a Shared Subscription picks one member of the group (MQTT 5.0 4.8.2
/// leaves the choice to the server). Only members with a connection are picked while there are
/// any; a member that cannot take the message (its backlog is full) is passed over for the
/// next one in the same order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SharedSubscriptionStrategy {
    /// Each message to the next member in turn.
    #[default]
    RoundRobin,
    /// Each message to a member picked at random.
    Random,
    /// Every message to the same member for as long as it can take them.
    Sticky,
    /// Messages of one publisher (by client id) to the same member while the group is
    /// unchanged.
    HashClientId,
    /// Messages of one topic to the same member while the group is unchanged.
    HashTopic,
}

/// The HTTP listener (`[http]` in the file): Prometheus `/metrics`, the admin API under
/// `/api/v1/` and the dashboard at `/`. Off unless configured.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to bind; loopback unless set.
    #[serde(default = "loopback")]
    pub bind: IpAddr,
    /// Port; 0 picks a free one.
    #[serde(default = "default_http_port")]
    pub port: u16,
    /// A bearer token that grants access (`Authorization: Bearer TOKEN`).
    pub token: Option<String>,
    /// Users of the password file (`password_file`) that may sign in with HTTP Basic
    /// authentication (the dashboard in a browser does).
    #[serde(default)]
    pub admin_users: Vec<String>,
}

fn default_http_port() -> u16 {
    8080
}

impl HttpConfig {
    /// An HTTP listener on `bind`:`port` without authentication.
    pub fn new(bind: IpAddr, port: u16) -> HttpConfig {
        HttpConfig {
            bind,
            port,
            token: None,
            admin_users: Vec::new(),
        }
    }

    /// True if requests must authenticate.
    pub fn requires_auth(&self) -> bool {
        self.token.is_some() || !self.admin_users.is_empty()
    }

    fn validate(&self, password_file: Option<&Path>) -> Result<(), ConfigError> {
        if self.token.as_deref().is_some_and(|t| t.len() < 16) {
            return Err(ConfigError::invalid(
                "http.token",
                "must be at least 16 characters".to_string(),
            ));
        }
        if !self.admin_users.is_empty() && password_file.is_none() {
            return Err(ConfigError::invalid(
                "http.admin_users",
                "needs password_file (the users sign in with their MQTT password)".to_string(),
            ));
        }
        if !self.bind.is_loopback() && !self.requires_auth() {
            return Err(ConfigError::invalid(
                "http.bind",
                format!(
                    "{} is not a loopback address: set http.token or http.admin_users so that \
                     the admin API is not open to the network",
                    self.bind
                ),
            ));
        }
        Ok(())
    }
}

fn policy_name(p: QueueFullPolicy) -> &'static str {
    match p {
        QueueFullPolicy::Backpressure => "backpressure",
        QueueFullPolicy::DropNew => "drop_new",
        QueueFullPolicy::DropOldest => "drop_oldest",
    }
}

fn strategy_name(s: SharedSubscriptionStrategy) -> &'static str {
    match s {
        SharedSubscriptionStrategy::RoundRobin => "round_robin",
        SharedSubscriptionStrategy::Random => "random",
        SharedSubscriptionStrategy::Sticky => "sticky",
        SharedSubscriptionStrategy::HashClientId => "hash_client_id",
        SharedSubscriptionStrategy::HashTopic => "hash_topic",
    }
}

/// One extra listener (`[[listener]]` in the file).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Transport.
    pub kind: ListenerKind,
    /// Address to bind.
    #[serde(default = "loopback")]
    pub bind: IpAddr,
    /// Port; 0 picks a free one.
    pub port: u16,
    /// Server certificate chain (PEM), for `tls` and `wss`.
    pub cert_file: Option<PathBuf>,
    /// Server private key (PEM), for `tls` and `wss`.
    pub key_file: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates are verified against.
    pub ca_file: Option<PathBuf>,
    /// Refuse clients without a valid certificate (needs `ca_file`).
    #[serde(default)]
    pub require_certificate: bool,
    /// Use the client certificate's Common Name as the username (like mosquitto).
    #[serde(default)]
    pub use_identity_as_username: bool,
    /// HTTP path of `ws` and `wss` listeners.
    #[serde(default = "default_ws_path")]
    pub path: String,
    /// Policy for this listener's publishers at a full queue (default: the global one).
    #[serde(default)]
    pub queue_full: Option<QueueFullPolicy>,
}

fn loopback() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

fn default_ws_path() -> String {
    "/mqtt".to_string()
}

impl ListenerConfig {
    /// A listener of `kind` on `bind:port` with no TLS settings.
    pub fn new(kind: ListenerKind, bind: IpAddr, port: u16) -> ListenerConfig {
        ListenerConfig {
            kind,
            bind,
            port,
            cert_file: None,
            key_file: None,
            ca_file: None,
            require_certificate: false,
            use_identity_as_username: false,
            path: default_ws_path(),
            queue_full: None,
        }
    }

    /// Checks this listener, the `i`-th `[[listener]]`: TLS files present for `tls` and
    /// `wss` (and only there) and readable, client certificate options consistent, a
    /// WebSocket path starting with `/`.
    fn validate(&self, i: usize) -> Result<(), ConfigError> {
        let key = |k: &str| format!("listener[{i}].{k}");
        let kind = format!("{:?}", self.kind).to_lowercase();
        if self.kind.is_tls() {
            for (name, file) in [("cert_file", &self.cert_file), ("key_file", &self.key_file)] {
                match file {
                    Some(path) => readable_file(&key(name), path)?,
                    None => {
                        return Err(ConfigError::invalid(
                            key(name),
                            format!("must be set for a {kind} listener"),
                        ));
                    }
                }
            }
            if let Some(path) = &self.ca_file {
                readable_file(&key("ca_file"), path)?;
            }
        } else {
            for (name, file) in [
                ("cert_file", &self.cert_file),
                ("key_file", &self.key_file),
                ("ca_file", &self.ca_file),
            ] {
                if file.is_some() {
                    return Err(ConfigError::invalid(
                        key(name),
                        format!("only applies to tls and wss listeners, not {kind}"),
                    ));
                }
            }
        }
        if (self.require_certificate || self.use_identity_as_username) && self.ca_file.is_none() {
            return Err(ConfigError::invalid(
                key("ca_file"),
                "must be set with require_certificate or use_identity_as_username",
            ));
        }
        if self.use_identity_as_username && !self.require_certificate {
            return Err(ConfigError::invalid(
                key("use_identity_as_username"),
                "needs require_certificate = true",
            ));
        }
        if matches!(self.kind, ListenerKind::Ws | ListenerKind::Wss) && !self.path.starts_with('/')
        {
            return Err(ConfigError::invalid(key("path"), "must start with '/'"));
        }
        Ok(())
    }
}

/// Checks that `path`, the value of `key`, names a file that can be opened for reading.
fn readable_file(key: &str, path: &Path) -> Result<(), ConfigError> {
    let unreadable = |source| ConfigError::Unreadable {
        file: None,
        key: key.to_string(),
        path: path.to_path_buf(),
        source,
    };
    let metadata = std::fs::File::open(path)
        .and_then(|f| f.metadata())
        .map_err(unreadable)?;
    if !metadata.is_file() {
        return Err(ConfigError::invalid(
            key,
            format!("{} is not a file", path.display()),
        ));
    }
    Ok(())
}

/// The highest `topic_alias_maximum`: each alias holds a topic of up to 64 KiB per connection.
pub const MAX_TOPIC_ALIAS_MAXIMUM: u16 = 1024;

/// The validated settings a broker runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Address the TCP listener binds to.
    pub bind: IpAddr,
    /// TCP port; 0 picks a free port (useful in tests).
    pub port: u16,
    /// Directory for durable state.
    pub data_dir: PathBuf,
    /// Keep everything in memory: no store, nothing survives a restart.
    pub in_memory: bool,
    /// When commits reach the disk.
    pub durability: Durability,
    /// Largest packet accepted from a client, in bytes (whole packet, header included).
    pub max_packet_size: u32,
    /// Largest CONNECT accepted, in bytes: read before the client has authenticated, so kept
    /// small (at most `max_packet_size` applies in any case).
    pub max_connect_packet_size: u32,
    /// Bytes that connections still waiting for their CONNECT may hold in read buffers, all
    /// together; a connection that would go over is closed.
    pub max_pending_connect_bytes: u64,
    /// Most connections from one IP address at once; 0 = no limit.
    pub max_connections_per_address: usize,
    /// A session created by an authenticated user can be resumed, taken over or replaced only
    /// by the same user (others are refused: 3.1.1 CONNACK 0x05, 5.0 0x87). mosquitto has no
    /// such check.
    pub session_owner_check: bool,
    /// Largest WebSocket message (and frame) accepted, in bytes. One message may carry many
    /// MQTT packets (MQTT-6.0.0-2), so this is separate from `max_packet_size`; it must be at
    /// least `max_packet_size`. A WebSocket connection may hold one message this large in
    /// memory while it is read, before it has authenticated too, so keep it modest.
    pub websocket_max_message_bytes: usize,
    /// Most messages in one session's backlog (queued, in flight and in the store).
    pub max_queued_messages: usize,
    /// Most bytes in one session's backlog (topic + payload + 128 per message).
    pub max_queued_bytes: u64,
    /// Most bytes of one session's backlog held in memory; a durable session's further
    /// messages wait in the store, an ephemeral session's queue ends here.
    pub max_queued_memory_bytes: u64,
    /// Most bytes of queued messages in the store, all sessions together; 0 = no limit.
    pub max_store_bytes: u64,
    /// What happens at a full queue (listeners may override it).
    pub queue_full: QueueFullPolicy,
    /// Memory the store may use to cache pages of its file.
    pub store_cache_bytes: usize,
    /// Verify every page checksum of the store file at startup (redb's integrity check):
    /// flipped bits in a record are found before anything is served. Costs a read of the
    /// whole file (about 7 s per GB measured); turn off for very large stores.
    pub store_verify_on_start: bool,
    /// Outbound QoS 1/2 messages in flight per client (further capped by its Receive Maximum).
    pub max_inflight_messages: u16,
    /// Inbound QoS 1/2 messages a client may have unacknowledged (our Receive Maximum).
    pub receive_maximum: u16,
    /// The longest keep alive, in seconds, a client may choose; 0 = no limit (any keep
    /// alive, 0 included). With a limit, a client asking for more, or for 0, is held to the
    /// limit: an MQTT 5.0 client is told so with Server Keep Alive in CONNACK (MQTT 5.0
    /// 3.2.2.3.14); a 3.1.1 client cannot be told, so it is refused with CONNACK 0x02
    /// (as mosquitto does).
    pub max_keepalive: u16,
    /// The Topic Alias Maximum offered to MQTT 5.0 clients in CONNACK: how many topic aliases
    /// each may set (MQTT 5.0 3.2.2.3.8); 0 refuses aliases.
    pub topic_alias_maximum: u16,
    /// Start of the Response Information sent to MQTT 5.0 clients that ask for it (Request
    /// Response Information = 1): the client gets `{prefix}{client id}/` as the basis of its
    /// response topics (MQTT 5.0 4.10).
    pub response_topic_prefix: String,
    /// How each message for a Shared Subscription picks the member of the group it goes to.
    pub shared_subscription_strategy: SharedSubscriptionStrategy,
    /// Seconds between updates of the `$SYS` topics; 0 turns them off.
    pub sys_interval: u64,
    /// The HTTP listener (metrics, admin API, dashboard), if any.
    pub http: Option<HttpConfig>,
    /// Time a client has to send CONNECT after the TCP connection is accepted.
    pub connect_timeout: Duration,
    /// Listeners besides the main TCP one on `bind:port`.
    pub listeners: Vec<ListenerConfig>,
    /// Password file (`user:hash` lines: argon2 PHC or mosquitto `$7$`).
    pub password_file: Option<PathBuf>,
    /// ACL file in mosquitto's syntax; once set, whatever it does not grant is denied.
    pub acl_file: Option<PathBuf>,
    /// Whether clients without a username may connect. Unset: only while every listener is
    /// on a loopback address.
    pub allow_anonymous: Option<bool>,
    /// Most simultaneous connections; 0 = no limit.
    pub max_connections: usize,
    /// Bridges to remote brokers.
    pub bridges: Vec<BridgeConfig>,
    /// Cluster mode through NATS with JetStream, if configured.
    pub cluster: Option<ClusterConfig>,
    /// Time a TLS or WebSocket handshake may take.
    pub handshake_timeout: Duration,
    /// How long a plain-TCP connection must be quiet, with nothing in progress, before it
    /// gives up its task and waits in the table of parked connections (see the README's
    /// "Idle connections"); `None` keeps every connection in its task. Not a file key or
    /// flag: 250 ms unless code sets another (tests park at once to exercise it).
    pub park_after: Option<Duration>,
    /// The clock of every protocol timer (will delay, session and message expiry, login
    /// throttle) and of the times kept in the store. Not a file key or flag: the system clock
    /// unless code sets another, e.g. [`Clock::manual`] in tests.
    pub clock: Clock,
}

impl Config {
    /// Checks every setting: ranges, listener consistency and files that must exist. The
    /// error names the key (its [`ConfigError::file`] is set by the caller when the setting
    /// came from a file). [`crate::start`] calls it first, so a `Config` built in code is
    /// checked like one read from a file.
    ///
    /// `max_queued_memory_bytes` above `max_queued_bytes` is not an error: the memory bound is
    /// capped at the byte bound (see [`Config::queue_limits`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let at_least = |key: &str, value: u64, min: u64| {
            if value < min {
                Err(ConfigError::invalid(key, format!("must be at least {min}")))
            } else {
                Ok(())
            }
        };
        if !(64..=MQTT_MAX_PACKET_SIZE).contains(&self.max_packet_size) {
            return Err(ConfigError::invalid(
                "max_packet_size",
                format!("must be between 64 and {MQTT_MAX_PACKET_SIZE} bytes"),
            ));
        }
        at_least(
            "websocket_max_message_bytes",
            self.websocket_max_message_bytes as u64,
            u64::from(self.max_packet_size),
        )?;
        if self.topic_alias_maximum > MAX_TOPIC_ALIAS_MAXIMUM {
            return Err(ConfigError::invalid(
                "topic_alias_maximum",
                format!("must be at most {MAX_TOPIC_ALIAS_MAXIMUM}"),
            ));
        }
        if self.response_topic_prefix.contains(['+', '#', '\0']) {
            return Err(ConfigError::invalid(
                "response_topic_prefix",
                "must be the start of a topic name: no '+', '#' or NUL".to_string(),
            ));
        }
        if self.sys_interval > 86_400 {
            return Err(ConfigError::invalid(
                "sys_interval",
                "must be at most 86400 seconds (one day); 0 turns $SYS off".to_string(),
            ));
        }
        at_least(
            "max_connect_packet_size",
            u64::from(self.max_connect_packet_size),
            64,
        )?;
        at_least(
            "max_pending_connect_bytes",
            self.max_pending_connect_bytes,
            64 * 1024,
        )?;
        at_least("max_queued_messages", self.max_queued_messages as u64, 1)?;
        at_least("max_queued_bytes", self.max_queued_bytes, 1024)?;
        at_least(
            "max_queued_memory_bytes",
            self.max_queued_memory_bytes,
            1024,
        )?;
        at_least(
            "store_cache_bytes",
            self.store_cache_bytes as u64,
            1024 * 1024,
        )?;
        let inflight = u64::from(self.max_inflight_messages);
        at_least("max_inflight_messages", inflight, 1)?;
        at_least("receive_maximum", u64::from(self.receive_maximum), 1)?;
        for (key, value) in [
            ("connect_timeout", self.connect_timeout),
            ("handshake_timeout", self.handshake_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::invalid(key, "must not be zero"));
            }
        }
        let mut ports = vec![("port".to_string(), self.bind, self.port)];
        for (i, l) in self.listeners.iter().enumerate() {
            l.validate(i)?;
            ports.push((format!("listener[{i}].port"), l.bind, l.port));
        }
        for (i, (key, bind, port)) in ports.iter().enumerate() {
            if *port == 0 {
                continue;
            }
            if let Some((other, ..)) = ports[..i].iter().find(|(_, b, p)| b == bind && p == port) {
                return Err(ConfigError::invalid(
                    key.as_str(),
                    format!("{bind}:{port} is already used by `{other}`"),
                ));
            }
        }
        if let Some(path) = &self.password_file {
            readable_file("password_file", path)?;
        }
        if let Some(path) = &self.acl_file {
            readable_file("acl_file", path)?;
        }
        if let Some(http) = &self.http {
            http.validate(self.password_file.as_deref())?;
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
        }
        for (i, b) in self.bridges.iter().enumerate() {
            b.validate(i)?;
            if let Some(j) = self.bridges[..i].iter().position(|o| o.name == b.name) {
                return Err(ConfigError::invalid(
                    format!("{}.name", b.key_prefix(i)),
                    format!("bridge[{j}] has this name already: each bridge needs its own"),
                ));
            }
            // Two bridges on one local Session would take it from each other for ever.
            let id = b.local_client_id();
            if let Some(j) = self.bridges[..i]
                .iter()
                .position(|o| o.local_client_id() == id)
            {
                return Err(ConfigError::invalid(
                    format!("{}.local_clientid", b.key_prefix(i)),
                    format!(
                        "`{id}` is bridge[{j}]'s local client id too: each bridge needs its own"
                    ),
                ));
            }
        }
        self.someone_can_connect()?;
        Ok(())
    }

    /// Refuses a configuration under which no client could ever connect: a listener on a
    /// network address turns anonymous access off (as in mosquitto 2.0), and without a password
    /// file or certificate identities nobody else can connect either.
    fn someone_can_connect(&self) -> Result<(), ConfigError> {
        let addrs: Vec<IpAddr> = std::iter::once(self.bind)
            .chain(self.listeners.iter().map(|l| l.bind))
            .collect();
        let anonymous = crate::auth::anonymous_allowed(self.allow_anonymous, &addrs);
        let identities = self.listeners.iter().any(|l| l.use_identity_as_username);
        if anonymous || self.password_file.is_some() || identities {
            return Ok(());
        }
        let reason = match self.allow_anonymous {
            Some(false) => "is false and there is no password_file or certificate identity: \
                 no client could connect; set password_file"
                .to_string(),
            _ => {
                let public = addrs
                    .iter()
                    .find(|a| !a.to_canonical().is_loopback())
                    .map_or_else(String::new, ToString::to_string);
                format!(
                    "is not set, and a listener on {public} (not loopback) turns anonymous access \
                     off (as in mosquitto 2.0); without a password_file no client could connect: \
                     set password_file (see `roost passwd`), or allow_anonymous = true to let \
                     anyone on the network in"
                )
            }
        };
        Err(ConfigError::invalid("allow_anonymous", reason))
    }

    /// The settings as `key = value` lines in the TOML file's terms (what `roost check-config`
    /// prints).
    pub fn describe(&self) -> String {
        // Absolute paths: the output may be saved and read from another directory.
        let opt = |p: &Option<PathBuf>| match p {
            Some(p) => format!(
                "{:?}",
                std::path::absolute(p)
                    .unwrap_or_else(|_| p.clone())
                    .display()
                    .to_string()
            ),
            None => "\"\"".to_string(),
        };
        let mut out = format!(
            "bind = \"{}\"\nport = {}\ndata_dir = {:?}\nin_memory = {}\ndurability = \"{}\"\n\
             max_packet_size = {}\nwebsocket_max_message_bytes = {}\nmax_queued_messages = {}\n\
             max_queued_bytes = {}\nmax_queued_memory_bytes = {}\nmax_store_bytes = {}\n\
             queue_full = \"{}\"\nstore_cache_bytes = {}\nstore_verify_on_start = {}\nmax_inflight_messages = {}\n\
             receive_maximum = {}\nmax_keepalive = {}\ntopic_alias_maximum = {}\n\
             response_topic_prefix = {:?}\nshared_subscription_strategy = \"{}\"\n\
             sys_interval = {}\nconnect_timeout = {}\nhandshake_timeout = {}\n\
             max_connections = {}\nmax_connections_per_address = {}\n\
             max_connect_packet_size = {}\nmax_pending_connect_bytes = {}\n\
             session_owner_check = {}\npassword_file = {}\nacl_file = {}\nallow_anonymous = {}\n",
            self.bind,
            self.port,
            self.data_dir.display().to_string(),
            self.in_memory,
            match self.durability {
                Durability::Fsync => "fsync",
                Durability::Buffered => "buffered",
            },
            self.max_packet_size,
            self.websocket_max_message_bytes,
            self.max_queued_messages,
            self.max_queued_bytes,
            self.max_queued_memory_bytes,
            self.max_store_bytes,
            policy_name(self.queue_full),
            self.store_cache_bytes,
            self.store_verify_on_start,
            self.max_inflight_messages,
            self.receive_maximum,
            self.max_keepalive,
            self.topic_alias_maximum,
            self.response_topic_prefix,
            strategy_name(self.shared_subscription_strategy),
            self.sys_interval,
            self.connect_timeout.as_secs(),
            self.handshake_timeout.as_secs(),
            self.max_connections,
            self.max_connections_per_address,
            self.max_connect_packet_size,
            self.max_pending_connect_bytes,
            self.session_owner_check,
            opt(&self.password_file),
            opt(&self.acl_file),
            match self.allow_anonymous {
                Some(v) => v.to_string(),
                None => "\"\"".to_string(),
            },
        );
        // Settings left unset are shown as comments, so that the output reads back as is.
        for key in ["password_file", "acl_file"] {
            out = out.replace(
                &format!("\n{key} = \"\"\n"),
                &format!("\n# {key}: not set\n"),
            );
        }
        out = out.replace(
            "\nallow_anonymous = \"\"\n",
            "\n# allow_anonymous: not set (anonymous clients only while every listener is on loopback)\n",
        );
        for l in &self.listeners {
            out.push_str(&format!(
                "\n[[listener]]\nkind = \"{}\"\nbind = \"{}\"\nport = {}\n",
                l.kind, l.bind, l.port
            ));
            for (key, path) in [
                ("cert_file", &l.cert_file),
                ("key_file", &l.key_file),
                ("ca_file", &l.ca_file),
            ] {
                if path.is_some() {
                    out.push_str(&format!("{key} = {}\n", opt(path)));
                }
            }
            if l.require_certificate {
                out.push_str("require_certificate = true\n");
            }
            if l.use_identity_as_username {
                out.push_str("use_identity_as_username = true\n");
            }
            if l.kind == ListenerKind::Ws || l.kind == ListenerKind::Wss {
                out.push_str(&format!("path = {:?}\n", l.path));
            }
            if let Some(p) = l.queue_full {
                out.push_str(&format!("queue_full = \"{}\"\n", policy_name(p)));
            }
        }
        for b in &self.bridges {
            out.push_str(&describe_bridge(b, &opt));
        }
        if let Some(h) = &self.http {
            out.push_str(&format!(
                "\n[http]\nbind = \"{}\"\nport = {}\ntoken = {}\nadmin_users = {:?}\n",
                h.bind,
                h.port,
                if h.token.is_some() {
                    "\"...\"  # set, not shown"
                } else {
                    "\"\"  # none"
                },
                h.admin_users
            ));
        }
        if let Some(c) = &self.cluster {
            out.push_str(&format!(
                "\n[cluster]\nnats = {:?}\nnode = {:?}\nprefix = {:?}\nstream = {:?}\n\
                 stream_subject = {:?}\nretained_stream = {:?}\nretained_subject = {:?}\n\
                 sessions_bucket = {:?}\nreplicas = {}\nstream_max_age = {}\n\
                 stream_max_bytes = {}\nack_timeout = {}\nmax_shared_groups = {}\n",
                c.nats,
                c.node,
                c.prefix,
                c.stream,
                c.stream_subject,
                c.retained_stream,
                c.retained_subject,
                c.sessions_bucket,
                c.replicas,
                c.stream_max_age,
                c.stream_max_bytes,
                c.ack_timeout,
                c.max_shared_groups,
            ));
            // Secrets are not shown; unset keys are comments, so the table reads back.
            let mut line = |key: &str, value: Option<String>| {
                out.push_str(&match value {
                    Some(v) => format!("{key} = {v}\n"),
                    None => format!("# {key}: not set\n"),
                });
            };
            line("user", c.user.as_ref().map(|u| format!("{u:?}")));
            line(
                "password",
                c.password
                    .as_ref()
                    .map(|_| "\"...\"  # set, not shown".into()),
            );
            line(
                "token",
                c.token.as_ref().map(|_| "\"...\"  # set, not shown".into()),
            );
            line(
                "credentials",
                c.credentials
                    .as_ref()
                    .map(|p| format!("{:?}", p.display().to_string())),
            );
            line(
                "cafile",
                c.cafile
                    .as_ref()
                    .map(|p| format!("{:?}", p.display().to_string())),
            );
        }
        out
    }

    /// The per-session backlog bounds.
    pub fn queue_limits(&self) -> crate::session::QueueLimits {
        crate::session::QueueLimits {
            max_messages: self.max_queued_messages,
            max_bytes: self.max_queued_bytes,
            memory_bytes: self.max_queued_memory_bytes.min(self.max_queued_bytes),
        }
    }
}

/// A bridge as a `[[bridge]]` table (the password is not shown).
fn describe_bridge(b: &BridgeConfig, path: &dyn Fn(&Option<PathBuf>) -> String) -> String {
    let addresses: Vec<String> = b.addresses.iter().map(ToString::to_string).collect();
    let mut out = format!(
        "\n[[bridge]]\nname = {:?}\naddress = {:?}\nprotocol_version = \"{}\"\n\
         cleansession = {}\n",
        b.name,
        addresses,
        b.protocol.name(),
        b.clean_session
    );
    // The client ids always: the defaults depend on the host name.
    for (key, value, given) in [
        (
            "local_clientid",
            b.local_client_id(),
            b.local_clientid.is_some(),
        ),
        (
            "remote_clientid",
            b.remote_client_id(),
            b.remote_clientid.is_some(),
        ),
    ] {
        // A default as a comment, so that the output read back keeps it a default.
        let comment = if given { "" } else { "# " };
        let note = if given { "" } else { "  (the default)" };
        out.push_str(&format!("{comment}{key} = {value:?}{note}\n"));
    }
    if let Some(v) = &b.remote_username {
        out.push_str(&format!("remote_username = {v:?}\n"));
    }
    if b.remote_password.is_some() {
        out.push_str("remote_password = \"...\"  # set, not shown\n");
    }
    let unused = if b.protocol == BridgeProtocol::Mqtt5 {
        "  # MQTT 5.0 has no bridge bit: No Local instead"
    } else {
        ""
    };
    out.push_str(&format!(
        "try_private = {}{unused}\nkeepalive_interval = {}\nmax_inflight = {}\n",
        b.try_private, b.keepalive, b.max_inflight
    ));
    match b.restart_cap {
        Some(cap) => out.push_str(&format!(
            "restart_timeout = [{}, {}]\n",
            b.restart_base.as_secs(),
            cap.as_secs()
        )),
        None => out.push_str(&format!("restart_timeout = {}\n", b.restart_base.as_secs())),
    }
    if let Some(tls) = &b.tls {
        out.push_str(&format!("cafile = {}\n", path(&Some(tls.ca_file.clone()))));
        for (key, file) in [("certfile", &tls.cert_file), ("keyfile", &tls.key_file)] {
            if file.is_some() {
                out.push_str(&format!("{key} = {}\n", path(file)));
            }
        }
        if tls.insecure {
            out.push_str("insecure = true\n");
        }
    }
    let count = match b.topics.len() {
        1 => "1 topic".to_string(),
        n => format!("{n} topics"),
    };
    out.push_str(&format!("topic = [  # {count}\n"));
    for t in &b.topics {
        out.push_str(&format!(
            "  {{ pattern = {:?}, direction = \"{}\", qos = {}, local_prefix = {:?}, \
             remote_prefix = {:?} }},\n",
            t.pattern,
            t.direction.name(),
            t.qos as u8,
            t.local_prefix,
            t.remote_prefix
        ));
    }
    out.push_str("]\n");
    out
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: IpAddr::from([127, 0, 0, 1]),
            port: 1883,
            data_dir: PathBuf::from("roost-data"),
            in_memory: false,
            durability: Durability::Fsync,
            max_packet_size: 1024 * 1024,
            max_connect_packet_size: 64 * 1024,
            max_pending_connect_bytes: 64 * 1024 * 1024,
            max_connections_per_address: 0,
            session_owner_check: true,
            websocket_max_message_bytes: 2 * 1024 * 1024,
            max_queued_messages: 1_000_000,
            max_queued_bytes: 512 * 1024 * 1024,
            max_queued_memory_bytes: 2 * 1024 * 1024,
            max_store_bytes: 4 * 1024 * 1024 * 1024,
            queue_full: QueueFullPolicy::Backpressure,
            store_cache_bytes: crate::store::DEFAULT_CACHE_BYTES,
            store_verify_on_start: true,
            max_inflight_messages: 100,
            receive_maximum: 100,
            max_keepalive: 0,
            topic_alias_maximum: 10,
            response_topic_prefix: "response/".to_string(),
            shared_subscription_strategy: SharedSubscriptionStrategy::RoundRobin,
            sys_interval: 10,
            http: None,
            connect_timeout: Duration::from_secs(10),
            listeners: Vec::new(),
            password_file: None,
            acl_file: None,
            allow_anonymous: None,
            max_connections: 0,
            bridges: Vec::new(),
            cluster: None,
            handshake_timeout: Duration::from_secs(10),
            park_after: Some(Duration::from_millis(250)),
            clock: Clock::system(),
        }
    }
}

/// The keys accepted in the TOML configuration file. All are optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// See [`Config::bind`].
    pub bind: Option<IpAddr>,
    /// See [`Config::port`].
    pub port: Option<u16>,
    /// See [`Config::data_dir`].
    pub data_dir: Option<PathBuf>,
    /// See [`Config::in_memory`].
    pub in_memory: Option<bool>,
    /// See [`Config::durability`]: `"fsync"` or `"buffered"`.
    pub durability: Option<Durability>,
    /// Log filter, e.g. `info` or `roost=debug` (used by the binary).
    pub log_level: Option<String>,
    /// `"text"` (the default) or `"json"` (used by the binary).
    pub log_format: Option<LogFormat>,
    /// See [`Config::max_packet_size`].
    pub max_packet_size: Option<u32>,
    /// See [`Config::websocket_max_message_bytes`].
    pub websocket_max_message_bytes: Option<usize>,
    /// See [`Config::max_connect_packet_size`].
    pub max_connect_packet_size: Option<u32>,
    /// See [`Config::max_pending_connect_bytes`].
    pub max_pending_connect_bytes: Option<u64>,
    /// See [`Config::max_connections_per_address`].
    pub max_connections_per_address: Option<usize>,
    /// See [`Config::session_owner_check`].
    pub session_owner_check: Option<bool>,
    /// See [`Config::max_queued_messages`].
    pub max_queued_messages: Option<usize>,
    /// See [`Config::max_queued_bytes`].
    pub max_queued_bytes: Option<u64>,
    /// See [`Config::max_queued_memory_bytes`].
    pub max_queued_memory_bytes: Option<u64>,
    /// See [`Config::max_store_bytes`].
    pub max_store_bytes: Option<u64>,
    /// See [`Config::queue_full`]: `"backpressure"`, `"drop_new"` or `"drop_oldest"`.
    pub queue_full: Option<QueueFullPolicy>,
    /// See [`Config::store_cache_bytes`].
    pub store_cache_bytes: Option<usize>,
    /// See [`Config::store_verify_on_start`].
    pub store_verify_on_start: Option<bool>,
    /// See [`Config::max_inflight_messages`].
    pub max_inflight_messages: Option<u16>,
    /// See [`Config::receive_maximum`].
    pub receive_maximum: Option<u16>,
    /// See [`Config::max_keepalive`].
    pub max_keepalive: Option<u16>,
    /// See [`Config::topic_alias_maximum`].
    pub topic_alias_maximum: Option<u16>,
    /// See [`Config::response_topic_prefix`].
    pub response_topic_prefix: Option<String>,
    /// See [`Config::shared_subscription_strategy`]: `"round_robin"`, `"random"`, `"sticky"`,
    /// `"hash_client_id"` or `"hash_topic"`.
    pub shared_subscription_strategy: Option<SharedSubscriptionStrategy>,
    /// Seconds; see [`Config::sys_interval`].
    pub sys_interval: Option<u64>,
    /// See [`Config::http`].
    pub http: Option<HttpConfig>,
    /// Seconds; see [`Config::connect_timeout`].
    pub connect_timeout: Option<u64>,
    /// Extra listeners; see [`ListenerConfig`].
    #[serde(default)]
    pub listener: Vec<ListenerConfig>,
    /// See [`Config::password_file`].
    pub password_file: Option<PathBuf>,
    /// See [`Config::acl_file`].
    pub acl_file: Option<PathBuf>,
    /// See [`Config::allow_anonymous`].
    pub allow_anonymous: Option<bool>,
    /// See [`Config::max_connections`].
    pub max_connections: Option<usize>,
    /// Seconds; see [`Config::handshake_timeout`].
    pub handshake_timeout: Option<u64>,
    /// The `[[bridge]]` tables, read into [`BridgeConfig`]s (a mosquitto.conf's `connection`
    /// blocks end up here too). Relative TLS file paths are made relative to the file's
    /// directory by [`FileConfig::apply`], which adds the bridges to [`Config::bridges`].
    #[serde(default, deserialize_with = "bridge::deserialize_bridges")]
    pub bridge: Vec<BridgeConfig>,
    /// See [`Config::cluster`].
    pub cluster: Option<ClusterConfig>,
}

/// A configuration problem, naming the key it concerns and, when the setting came from a
/// file, the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The configuration file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key, or a value of the wrong type (the
    /// message names the key).
    #[error("{}: {}", path.display(), source.to_string().trim_end())]
    Parse {
        /// The configuration file.
        path: PathBuf,
        /// What the TOML parser reported.
        #[source]
        source: toml::de::Error,
    },
    /// A line of a mosquitto.conf has a value that cannot be read.
    #[error("{}:{line}: `{key}`: {reason}", path.display())]
    Mosquitto {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// The key.
        key: String,
        /// What is wrong with the value.
        reason: String,
    },
    /// A value is out of range or does not fit with another setting.
    #[error("{}invalid value for `{key}`: {reason}", file_prefix(file))]
    Invalid {
        /// The file the setting came from, if any.
        file: Option<PathBuf>,
        /// The key, e.g. `receive_maximum` or `listener[0].cert_file`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file named by a key cannot be opened.
    #[error("{}`{key}`: cannot read {}: {source}", file_prefix(file), path.display())]
    Unreadable {
        /// The configuration file the setting came from, if any.
        file: Option<PathBuf>,
        /// The key, e.g. `password_file`.
        key: String,
        /// The path it names.
        path: PathBuf,
        /// Why it cannot be read.
        #[source]
        source: std::io::Error,
    },
}

fn file_prefix(file: &Option<PathBuf>) -> String {
    file.as_ref()
        .map(|f| format!("{}: ", f.display()))
        .unwrap_or_default()
}

impl ConfigError {
    fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: None,
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// The key concerned, if the problem is about one key.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. }
            | ConfigError::Unreadable { key, .. }
            | ConfigError::Mosquitto { key, .. } => Some(key),
            ConfigError::Read { .. } | ConfigError::Parse { .. } => None,
        }
    }

    /// The configuration file concerned, if the setting came from one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            ConfigError::Read { path, .. }
            | ConfigError::Parse { path, .. }
            | ConfigError::Mosquitto { path, .. } => Some(path),
            ConfigError::Invalid { file, .. } | ConfigError::Unreadable { file, .. } => {
                file.as_deref()
            }
        }
    }

    /// The same error, saying that the setting came from `path` (unless it names a file
    /// already).
    pub fn in_file(mut self, path: &Path) -> ConfigError {
        if let ConfigError::Invalid { file, .. } | ConfigError::Unreadable { file, .. } = &mut self
            && file.is_none()
        {
            *file = Some(path.to_path_buf());
        }
        self
    }
}

impl FileConfig {
    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        FileConfig::parse(&text, path)
    }

    /// Reads `path` as TOML, or as a mosquitto.conf when it looks like one (see
    /// [`looks_like_mosquitto`]; `mosquitto` forces it); returns the settings and a warning
    /// for each mosquitto key that was ignored.
    pub fn load_any(
        path: &Path,
        mosquitto: bool,
    ) -> Result<(FileConfig, Vec<String>), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if mosquitto || looks_like_mosquitto(&text, path) {
            let conf = parse_mosquitto(&text, path)?;
            return Ok((conf.file, conf.warnings));
        }
        Ok((FileConfig::parse(&text, path)?, Vec::new()))
    }

    /// Parses the TOML text of the file `path`.
    pub fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Sets the keys that are set in the file on `config`. Relative paths are taken relative
    /// to the directory of `file`. Nothing is checked here: call [`Config::validate`] once
    /// every source of settings is applied, and [`ConfigError::in_file`] to name the file.
    pub fn apply(&self, config: &mut Config, file: Option<&Path>) {
        if let Some(v) = self.bind {
            config.bind = v;
        }
        if let Some(v) = self.port {
            config.port = v;
        }
        if let Some(v) = self.in_memory {
            config.in_memory = v;
        }
        if let Some(v) = self.durability {
            config.durability = v;
        }
        if let Some(v) = self.max_packet_size {
            config.max_packet_size = v;
        }
        if let Some(v) = self.websocket_max_message_bytes {
            config.websocket_max_message_bytes = v;
        }
        if let Some(v) = self.max_queued_messages {
            config.max_queued_messages = v;
        }
        if let Some(v) = self.max_queued_bytes {
            config.max_queued_bytes = v;
        }
        if let Some(v) = self.max_queued_memory_bytes {
            config.max_queued_memory_bytes = v;
        }
        if let Some(v) = self.max_store_bytes {
            config.max_store_bytes = v;
        }
        if let Some(v) = self.queue_full {
            config.queue_full = v;
        }
        if let Some(v) = self.shared_subscription_strategy {
            config.shared_subscription_strategy = v;
        }
        if let Some(v) = self.sys_interval {
            config.sys_interval = v;
        }
        if let Some(v) = self.max_connect_packet_size {
            config.max_connect_packet_size = v;
        }
        if let Some(v) = self.max_pending_connect_bytes {
            config.max_pending_connect_bytes = v;
        }
        if let Some(v) = self.max_connections_per_address {
            config.max_connections_per_address = v;
        }
        if let Some(v) = self.session_owner_check {
            config.session_owner_check = v;
        }
        if let Some(v) = &self.http {
            config.http = Some(v.clone());
        }
        if let Some(v) = self.store_cache_bytes {
            config.store_cache_bytes = v;
        }
        if let Some(v) = self.store_verify_on_start {
            config.store_verify_on_start = v;
        }
        if let Some(v) = self.max_inflight_messages {
            config.max_inflight_messages = v;
        }
        if let Some(v) = self.receive_maximum {
            config.receive_maximum = v;
        }
        if let Some(v) = self.max_keepalive {
            config.max_keepalive = v;
        }
        if let Some(v) = self.topic_alias_maximum {
            config.topic_alias_maximum = v;
        }
        if let Some(v) = &self.response_topic_prefix {
            config.response_topic_prefix = v.clone();
        }
        if let Some(v) = self.connect_timeout {
            config.connect_timeout = Duration::from_secs(v);
        }
        if let Some(v) = self.handshake_timeout {
            config.handshake_timeout = Duration::from_secs(v);
        }
        // Relative paths in the file are relative to the file's directory.
        let base = file.and_then(Path::parent).unwrap_or(Path::new(""));
        let resolve = |p: &PathBuf| base.join(p);
        if let Some(v) = &self.data_dir {
            // Like `--data-dir` and the default: relative to the working directory. (Moving
            // it would leave an existing store behind without a word.)
            config.data_dir = v.clone();
        }
        for l in &self.listener {
            let mut l = l.clone();
            l.cert_file = l.cert_file.as_ref().map(resolve);
            l.key_file = l.key_file.as_ref().map(resolve);
            l.ca_file = l.ca_file.as_ref().map(resolve);
            config.listeners.push(l);
        }
        if let Some(c) = &self.cluster {
            let mut c = c.clone();
            c.credentials = c.credentials.as_ref().map(resolve);
            c.cafile = c.cafile.as_ref().map(resolve);
            config.cluster = Some(c);
        }
        for b in &self.bridge {
            let mut b = b.clone();
            if let Some(tls) = &mut b.tls {
                // An empty ca_file (certfile without cafile) stays empty for validation.
                if !tls.ca_file.as_os_str().is_empty() {
                    tls.ca_file = resolve(&tls.ca_file);
                }
                tls.cert_file = tls.cert_file.as_ref().map(resolve);
                tls.key_file = tls.key_file.as_ref().map(resolve);
            }
            config.bridges.push(b);
        }
        if let Some(v) = &self.password_file {
            config.password_file = Some(resolve(v));
        }
        if let Some(v) = &self.acl_file {
            config.acl_file = Some(resolve(v));
        }
        if let Some(v) = self.allow_anonymous {
            config.allow_anonymous = Some(v);
        }
        if let Some(v) = self.max_connections {
            config.max_connections = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "roost.toml";

    /// Parses `text` as the file `roost.toml`, applies it to the defaults and validates.
    fn parse(text: &str) -> Result<Config, ConfigError> {
        let file = FileConfig::parse(text, Path::new(FILE))?;
        let mut config = Config::default();
        file.apply(&mut config, Some(Path::new(FILE)));
        config.validate().map_err(|e| e.in_file(Path::new(FILE)))?;
        Ok(config)
    }

    /// `certs/` of the repository, as a TOML string value.
    fn cert(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("certs")
            .join(name);
        path.display().to_string()
    }

    /// A `tls` listener on `port` with the development certificate and key.
    fn tls_listener(port: u16) -> ListenerConfig {
        let mut l = ListenerConfig::new(ListenerKind::Tls, IpAddr::from([127, 0, 0, 1]), port);
        l.cert_file = Some(PathBuf::from(cert("server.pem")));
        l.key_file = Some(PathBuf::from(cert("server.key")));
        l
    }

    /// Validates a default `Config` changed by `change`; returns the key of the error.
    fn invalid_key(change: impl FnOnce(&mut Config)) -> String {
        let mut c = Config::default();
        change(&mut c);
        let e = c.validate().expect_err("invalid");
        assert_eq!(e.file(), None, "{e}");
        let key = e.key().expect("names a key").to_string();
        assert!(e.to_string().contains(&format!("`{key}`")), "{e}");
        key
    }

    #[test]
    fn defaults_listen_on_loopback_1883() {
        let c = Config::default();
        assert_eq!(c.bind.to_string(), "127.0.0.1");
        assert_eq!(c.port, 1883);
        assert_eq!(c.max_queued_messages, 1_000_000);
        assert_eq!(c.queue_full, QueueFullPolicy::Backpressure);
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().expect("valid");
    }

    #[test]
    fn file_keys_override_defaults() {
        let c = parse(
            "port = 1999\nbind = \"0.0.0.0\"\nallow_anonymous = true\nmax_packet_size = 4096\n",
        )
        .unwrap();
        assert_eq!(c.port, 1999);
        assert_eq!(c.bind.to_string(), "0.0.0.0");
        assert_eq!(c.max_packet_size, 4096);
    }

    #[test]
    fn a_network_listener_without_any_way_in_is_refused() {
        let e = parse("bind = \"0.0.0.0\"\n").unwrap_err().to_string();
        assert!(
            e.contains("allow_anonymous") && e.contains("password_file"),
            "{e}"
        );
        let e = parse("allow_anonymous = false\n").unwrap_err().to_string();
        assert!(e.contains("no client could connect"), "{e}");
        parse("bind = \"0.0.0.0\"\nallow_anonymous = true\n").expect("anyone may connect");
    }

    #[test]
    fn durability_and_in_memory_keys() {
        let c = parse("durability = \"buffered\"\nin_memory = true\n").unwrap();
        assert_eq!(c.durability, Durability::Buffered);
        assert!(c.in_memory);
        let e = parse("durability = \"sometimes\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("durability") || e.contains("sometimes"), "{e}");
    }

    #[test]
    fn listeners_are_parsed_and_validated() {
        let text = format!(
            "[[listener]]\nkind = \"tls\"\nport = 8883\ncert_file = {:?}\nkey_file = {:?}\n\
             [[listener]]\nkind = \"ws\"\nport = 8080\n",
            cert("server.pem"),
            cert("server.key")
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.listeners.len(), 2);
        assert_eq!(c.listeners[0].kind, ListenerKind::Tls);
        assert_eq!(
            c.listeners[0].cert_file.as_deref(),
            Some(Path::new(&cert("server.pem")))
        );
        assert_eq!(c.listeners[1].path, "/mqtt");
        let e = parse("[[listener]]\nkind = \"tls\"\nport = 8883\n").unwrap_err();
        assert_eq!(e.key(), Some("listener[0].cert_file"), "{e}");
        assert_eq!(e.file(), Some(Path::new(FILE)));
        let text = format!(
            "[[listener]]\nkind = \"tls\"\nport = 1\ncert_file = {:?}\nkey_file = {:?}\n\
             require_certificate = true\n",
            cert("server.pem"),
            cert("server.key")
        );
        let e = parse(&text).unwrap_err();
        assert_eq!(e.key(), Some("listener[0].ca_file"), "{e}");
        let e = parse("[[listener]]\nkind = \"quic\"\nport = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("quic") || e.contains("kind"), "{e}");
    }

    #[test]
    fn relative_paths_are_relative_to_the_file() {
        let file = FileConfig::parse(
            "password_file = \"passwd\"\ndata_dir = \"data\"\n[[listener]]\nkind = \"tls\"\nport = 1\n\
             cert_file = \"s.pem\"\nkey_file = \"/abs/s.key\"\n",
            Path::new("/etc/roost/roost.toml"),
        )
        .unwrap();
        let mut c = Config::default();
        file.apply(&mut c, Some(Path::new("/etc/roost/roost.toml")));
        assert_eq!(
            c.password_file.as_deref(),
            Some(Path::new("/etc/roost/passwd"))
        );
        assert_eq!(
            c.data_dir,
            Path::new("data"),
            "the store is where it always was"
        );
        assert_eq!(
            c.listeners[0].cert_file.as_deref(),
            Some(Path::new("/etc/roost/s.pem"))
        );
        assert_eq!(
            c.listeners[0].key_file.as_deref(),
            Some(Path::new("/abs/s.key"))
        );
    }

    #[test]
    fn shared_subscription_strategies() {
        assert_eq!(
            parse("").unwrap().shared_subscription_strategy,
            SharedSubscriptionStrategy::RoundRobin
        );
        for (name, strategy) in [
            ("round_robin", SharedSubscriptionStrategy::RoundRobin),
            ("random", SharedSubscriptionStrategy::Random),
            ("sticky", SharedSubscriptionStrategy::Sticky),
            ("hash_client_id", SharedSubscriptionStrategy::HashClientId),
            ("hash_topic", SharedSubscriptionStrategy::HashTopic),
        ] {
            let c = parse(&format!("shared_subscription_strategy = \"{name}\"\n")).unwrap();
            assert_eq!(c.shared_subscription_strategy, strategy);
        }
        let e = parse("shared_subscription_strategy = \"fastest\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("shared_subscription_strategy"), "{e}");
    }

    #[test]
    fn queue_limits_and_policies() {
        let c = parse(
            "max_queued_bytes = 65536\nmax_queued_memory_bytes = 4096\nqueue_full = \"drop_oldest\"\n\
             [[listener]]\nkind = \"tcp\"\nport = 1\nqueue_full = \"drop_new\"\n",
        )
        .unwrap();
        assert_eq!(c.queue_limits().max_bytes, 65536);
        assert_eq!(c.queue_limits().memory_bytes, 4096);
        assert_eq!(c.queue_full, QueueFullPolicy::DropOldest);
        assert_eq!(c.listeners[0].queue_full, Some(QueueFullPolicy::DropNew));
        let e = parse("queue_full = \"drop_everything\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("drop_everything") || e.contains("queue_full"),
            "{e}"
        );
        let e = parse("max_queued_memory_bytes = 10\n").unwrap_err();
        assert_eq!(e.key(), Some("max_queued_memory_bytes"), "{e}");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse("prot = 1\n").unwrap_err().to_string();
        assert!(e.contains("prot"), "{e}");
        assert!(e.starts_with(FILE), "{e}");
    }

    #[test]
    fn invalid_value_names_key_and_file() {
        let e = parse("max_queued_messages = 0\n").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("max_queued_messages"), "{text}");
        assert!(text.contains(FILE), "{text}");
    }

    #[test]
    fn wrong_type_is_reported() {
        let e = parse("port = \"abc\"\n").unwrap_err().to_string();
        assert!(e.contains("port"), "{e}");
    }

    #[test]
    fn validate_checks_ranges_of_a_config_built_in_code() {
        assert_eq!(invalid_key(|c| c.receive_maximum = 0), "receive_maximum");
        assert_eq!(
            invalid_key(|c| c.topic_alias_maximum = MAX_TOPIC_ALIAS_MAXIMUM + 1),
            "topic_alias_maximum"
        );
        assert_eq!(
            invalid_key(|c| c.response_topic_prefix = "a/+/".into()),
            "response_topic_prefix"
        );
        assert_eq!(
            invalid_key(|c| c.websocket_max_message_bytes = 1000),
            "websocket_max_message_bytes"
        );
        assert_eq!(
            invalid_key(|c| c.max_inflight_messages = 0),
            "max_inflight_messages"
        );
        assert_eq!(invalid_key(|c| c.max_packet_size = 63), "max_packet_size");
        assert_eq!(
            invalid_key(|c| c.max_packet_size = MQTT_MAX_PACKET_SIZE + 1),
            "max_packet_size"
        );
        assert_eq!(
            invalid_key(|c| c.max_queued_messages = 0),
            "max_queued_messages"
        );
        assert_eq!(
            invalid_key(|c| c.max_queued_bytes = 1023),
            "max_queued_bytes"
        );
        assert_eq!(
            invalid_key(|c| c.max_queued_memory_bytes = 1000),
            "max_queued_memory_bytes"
        );
        assert_eq!(
            invalid_key(|c| c.store_cache_bytes = 4096),
            "store_cache_bytes"
        );
        assert_eq!(
            invalid_key(|c| c.connect_timeout = Duration::ZERO),
            "connect_timeout"
        );
        assert_eq!(
            invalid_key(|c| c.handshake_timeout = Duration::ZERO),
            "handshake_timeout"
        );
    }

    #[test]
    fn validate_accepts_limits_at_their_bounds() {
        let c = Config {
            max_packet_size: 64,
            max_queued_messages: 1,
            max_queued_bytes: 1024,
            max_queued_memory_bytes: 1024,
            store_cache_bytes: 1024 * 1024,
            max_inflight_messages: 1,
            receive_maximum: 1,
            connect_timeout: Duration::from_millis(1),
            handshake_timeout: Duration::from_millis(1),
            ..Config::default()
        };
        c.validate().expect("valid");
        // A memory bound above the byte bound is capped, not refused.
        let c = Config {
            max_queued_bytes: 4096,
            max_queued_memory_bytes: 1 << 20,
            ..Config::default()
        };
        c.validate().expect("valid");
        assert_eq!(c.queue_limits().memory_bytes, 4096);
    }

    #[test]
    fn validate_checks_listeners_built_in_code() {
        let with = |l: ListenerConfig| {
            move |c: &mut Config| {
                c.listeners.push(tls_listener(0));
                c.listeners.push(l);
            }
        };
        Config {
            listeners: vec![tls_listener(0)],
            ..Config::default()
        }
        .validate()
        .expect("valid");
        let mut l = tls_listener(0);
        l.key_file = None;
        assert_eq!(invalid_key(with(l)), "listener[1].key_file");
        let mut l = ListenerConfig::new(ListenerKind::Tcp, IpAddr::from([127, 0, 0, 1]), 0);
        l.ca_file = Some(PathBuf::from(cert("ca.pem")));
        assert_eq!(invalid_key(with(l)), "listener[1].ca_file");
        let mut l = tls_listener(0);
        l.use_identity_as_username = true;
        l.ca_file = Some(PathBuf::from(cert("ca.pem")));
        assert_eq!(invalid_key(with(l)), "listener[1].use_identity_as_username");
        let mut l = ListenerConfig::new(ListenerKind::Ws, IpAddr::from([127, 0, 0, 1]), 0);
        l.path = "mqtt".into();
        assert_eq!(invalid_key(with(l)), "listener[1].path");
    }

    #[test]
    fn validate_refuses_two_listeners_on_one_port() {
        let key = invalid_key(|c| {
            c.port = 1883;
            c.listeners
                .push(ListenerConfig::new(ListenerKind::Ws, c.bind, 1883));
        });
        assert_eq!(key, "listener[0].port");
        // Port 0 picks a free port each time: never a clash.
        let c = Config {
            port: 0,
            listeners: vec![ListenerConfig::new(
                ListenerKind::Ws,
                IpAddr::from([127, 0, 0, 1]),
                0,
            )],
            ..Config::default()
        };
        c.validate().expect("valid");
    }

    #[test]
    fn validate_checks_that_named_files_exist() {
        let mut l = tls_listener(0);
        l.cert_file = Some(PathBuf::from("/nonexistent/server.pem"));
        let c = Config {
            listeners: vec![l],
            ..Config::default()
        };
        let e = c.validate().unwrap_err();
        assert!(matches!(e, ConfigError::Unreadable { .. }), "{e:?}");
        assert_eq!(e.key(), Some("listener[0].cert_file"));
        let text = e.to_string();
        assert!(text.contains("/nonexistent/server.pem"), "{text}");
        assert!(
            std::error::Error::source(&e).is_some(),
            "keeps the I/O error"
        );

        assert_eq!(
            invalid_key(|c| c.password_file = Some("/nonexistent/passwd".into())),
            "password_file"
        );
        assert_eq!(
            invalid_key(|c| c.acl_file = Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")))),
            "acl_file",
            "a directory is not a file"
        );
    }

    /// A `[[bridge]]` table named `name` with `extra` lines, one address and one topic
    /// unless `extra` sets them.
    fn bridge_toml(name: &str, extra: &str) -> String {
        let mut text = format!("[[bridge]]\nname = {name:?}\n{extra}\n");
        if !extra.contains("address") {
            text.push_str("address = \"remote.example\"\n");
        }
        if !extra.contains("topic") {
            text.push_str("topic = [\"sensors/#\"]\n");
        }
        text
    }

    fn topic(
        pattern: &str,
        direction: BridgeDirection,
        qos: u8,
        local: &str,
        remote: &str,
    ) -> BridgeTopic {
        BridgeTopic {
            pattern: pattern.to_string(),
            direction,
            qos: crate::codec::QoS::from_u8(qos).expect("a QoS"),
            local_prefix: local.to_string(),
            remote_prefix: remote.to_string(),
        }
    }

    #[test]
    fn a_bridge_table_gets_mosquittos_defaults() {
        let c = parse(&bridge_toml("b1", "")).unwrap();
        let expected = BridgeConfig::new(
            "b1",
            "remote.example",
            1883,
            vec![topic("sensors/#", BridgeDirection::Out, 0, "", "")],
        );
        assert_eq!(c.bridges, vec![expected]);
        let b = &c.bridges[0];
        assert_eq!(b.protocol, BridgeProtocol::Mqtt311);
        assert!(!b.clean_session && b.try_private);
        assert_eq!((b.keepalive, b.max_inflight), (60, 20));
        assert_eq!(b.restart_base, Duration::from_secs(5));
        assert_eq!(b.restart_cap, Some(Duration::from_secs(30)));
        assert_eq!(b.tls, None);
    }

    #[test]
    fn one_topic_may_be_given_without_an_array() {
        let line = parse(&bridge_toml("b", "topic = \"a/# in 2\"")).unwrap();
        let table = parse(&bridge_toml(
            "b",
            "topic = { pattern = \"a/#\", direction = \"in\", qos = 2 }",
        ))
        .unwrap();
        let expected = vec![topic("a/#", BridgeDirection::In, 2, "", "")];
        assert_eq!(line.bridges[0].topics, expected);
        assert_eq!(table.bridges[0].topics, expected);
    }

    #[test]
    fn every_bridge_key_is_read() {
        let text = bridge_toml(
            "edge-1.site_a",
            &format!(
                "address = [\"a.example:1884\", \"[::1]\", \"10.0.0.1\"]\n\
                 protocol_version = \"mqttv50\"\ncleansession = true\n\
                 local_clientid = \"local-id\"\nremote_clientid = \"remote-id\"\n\
                 remote_username = \"edge\"\nremote_password = \"secret\"\n\
                 try_private = false\nkeepalive_interval = 0\nmax_inflight = 1\n\
                 restart_timeout = 10\ncafile = {:?}\ncertfile = {:?}\nkeyfile = {:?}\n\
                 insecure = true\n",
                cert("ca.pem"),
                cert("client.pem"),
                cert("client.key")
            ),
        );
        let c = parse(&text).unwrap();
        let b = &c.bridges[0];
        assert_eq!(b.name, "edge-1.site_a");
        let addresses: Vec<String> = b.addresses.iter().map(ToString::to_string).collect();
        assert_eq!(
            addresses,
            ["a.example:1884", "[::1]:8883", "10.0.0.1:8883"],
            "8883 by default with TLS"
        );
        assert_eq!(b.protocol, BridgeProtocol::Mqtt5);
        assert!(b.clean_session && !b.try_private);
        assert_eq!(b.local_clientid.as_deref(), Some("local-id"));
        assert_eq!(b.remote_clientid.as_deref(), Some("remote-id"));
        assert_eq!(b.remote_username.as_deref(), Some("edge"));
        assert_eq!(b.remote_password.as_deref(), Some("secret"));
        assert_eq!((b.keepalive, b.max_inflight), (0, 1), "0: no keep alive");
        assert_eq!(b.restart_base, Duration::from_secs(10));
        assert_eq!(b.restart_cap, None, "one number: a constant wait");
        let tls = b.tls.as_ref().expect("TLS");
        assert_eq!(tls.ca_file, Path::new(&cert("ca.pem")));
        assert_eq!(
            tls.cert_file.as_deref(),
            Some(Path::new(&cert("client.pem")))
        );
        assert_eq!(
            tls.key_file.as_deref(),
            Some(Path::new(&cert("client.key")))
        );
        assert!(tls.insecure);
        let c = parse(&bridge_toml("b", "restart_timeout = [2, 60]")).unwrap();
        assert_eq!(c.bridges[0].restart_base, Duration::from_secs(2));
        assert_eq!(c.bridges[0].restart_cap, Some(Duration::from_secs(60)));
    }

    #[test]
    fn topic_lines_and_tables() {
        use BridgeDirection::{Both, In, Out};
        let c = parse(&bridge_toml(
            "b",
            "topic = [\n\
               \"a/#\",\n\
               \"b/+/c in\",\n\
               \"c/# both 2\",\n\
               \"d/# out 1 local/ remote/\",\n\
               \"e/#   IN   1   \\\"\\\"   remote/\",\n\
               \"\\\"\\\" both 2 here/x there/y\",\n\
               \"f/# in 0 local/\",\n\
               \"g/# out 1 # a comment, as in mosquitto\",\n\
               { pattern = \"h/#\" },\n\
               { pattern = \"i/#\", direction = \"both\", qos = 2, local_prefix = \"l/\", remote_prefix = \"r/\" },\n\
               { pattern = \"\", direction = \"in\", qos = 1, local_prefix = \"x/y\", remote_prefix = \"z\" },\n\
             ]",
        ))
        .unwrap();
        assert_eq!(
            c.bridges[0].topics,
            vec![
                topic("a/#", Out, 0, "", ""),
                topic("b/+/c", In, 0, "", ""),
                topic("c/#", Both, 2, "", ""),
                topic("d/#", Out, 1, "local/", "remote/"),
                topic("e/#", In, 1, "", "remote/"),
                topic("", Both, 2, "here/x", "there/y"),
                topic("f/#", In, 0, "local/", ""),
                topic("g/#", Out, 1, "", ""),
                topic("h/#", Out, 0, "", ""),
                topic("i/#", Both, 2, "l/", "r/"),
                topic("", In, 1, "x/y", "z"),
            ]
        );
        assert_eq!(c.bridges[0].topics[3].local_filter(), "local/d/#");
        assert_eq!(c.bridges[0].topics[3].remote_filter(), "remote/d/#");
    }

    #[test]
    fn the_form_of_bridge_values_is_checked_where_it_stands() {
        for (extra, says) in [
            ("topic = [\"a/# sideways\"]", "unknown direction `sideways`"),
            ("topic = [\"a/# out 3\"]", "QoS `3` must be 0, 1 or 2"),
            (
                "topic = [\"a/# out 1 l/ r/ more\"]",
                "`more` is one word too many",
            ),
            ("topic = [\"\"]", "no pattern"),
            (
                "topic = [{ pattern = \"a\", qos = 3 }]",
                "qos 3 must be 0, 1 or 2",
            ),
            (
                "topic = [{ pattern = \"a\", direction = \"up\" }]",
                "unknown direction `up`",
            ),
            ("topic = [{ direction = \"in\" }]", "pattern"),
            ("topic = [{ pattern = \"a\", prefix = \"x\" }]", "prefix"),
            (
                "address = \"host:http\"",
                "the port must be a number from 1 to 65535",
            ),
            (
                "address = \"host:0\"",
                "the port must be a number from 1 to 65535",
            ),
            ("address = \"::1\"", "an IPv6 address goes in brackets"),
            ("address = \"[::1\"", "no ']'"),
            ("address = \"\"", "expected host[:port]"),
            (
                "protocol_version = \"mqttv4\"",
                "unknown protocol_version `mqttv4`",
            ),
            ("restart_timeout = [5]", "expected [base, cap]"),
            ("restart_timeout = [5, 10, 20]", "expected [base, cap]"),
            ("restart_timeout = -1", "must not be negative"),
            ("keepalive = 10", "keepalive"),
        ] {
            let e = parse(&format!("port = 1883\n{}", bridge_toml("b", extra))).expect_err(extra);
            assert!(matches!(e, ConfigError::Parse { .. }), "{extra}: {e:?}");
            let text = e.to_string();
            assert!(text.contains(says), "{extra}: {text}");
            assert!(
                text.starts_with(FILE) && text.contains("line 4"),
                "{extra}: {text}"
            );
        }
    }

    #[test]
    fn bridge_errors_name_their_key() {
        let invalid = |text: &str| {
            let e = parse(text).expect_err(text);
            assert!(matches!(e, ConfigError::Invalid { .. }), "{e:?}");
            assert_eq!(e.file(), Some(Path::new(FILE)));
            e.key().expect("a key").to_string()
        };
        let b = |extra: &str| bridge_toml("b", extra);
        assert_eq!(
            invalid("[[bridge]]\naddress = \"h\"\ntopic = [\"#\"]\n"),
            "bridge[0].name"
        );
        assert_eq!(invalid(&bridge_toml("a b", "")), "bridge[0].name");
        assert_eq!(invalid(&bridge_toml("ä", "")), "bridge[0].name");
        assert_eq!(
            invalid(&format!("{}{}", bridge_toml("b", ""), bridge_toml("b", ""))),
            "bridge.b.name"
        );
        assert_eq!(invalid(&b("address = []")), "bridge.b.address");
        assert_eq!(invalid(&b("topic = []")), "bridge.b.topic");
        assert_eq!(
            invalid(&b("topic = [\"a/#\", \"a/# out 0 l/+/ r/\"]")),
            "bridge.b.topic[1].local_prefix"
        );
        assert_eq!(
            invalid(&b("topic = [\"a/# out 0 l/ r/#\"]")),
            "bridge.b.topic[0].remote_prefix"
        );
        assert_eq!(
            invalid(&b("topic = [\"a/#/b\"]")),
            "bridge.b.topic[0].pattern"
        );
        assert_eq!(invalid(&b("topic = [\"a+\"]")), "bridge.b.topic[0].pattern");
        assert_eq!(
            invalid(&b("topic = [\"\\\"\\\" in\"]")),
            "bridge.b.topic[0].local_prefix"
        );
        assert_eq!(
            invalid(&b("topic = [\"\\\"\\\" in 0 x/y\"]")),
            "bridge.b.topic[0].remote_prefix"
        );
        assert_eq!(
            invalid(&b("topic = [\"# in 0 l r\"]")),
            "bridge.b.topic[0].local_prefix",
            "l#"
        );
        assert_eq!(invalid(&b("max_inflight = 0")), "bridge.b.max_inflight");
        assert_eq!(
            invalid(&b("restart_timeout = 0")),
            "bridge.b.restart_timeout"
        );
        assert_eq!(
            invalid(&b("restart_timeout = [0, 5]")),
            "bridge.b.restart_timeout"
        );
        assert_eq!(
            invalid(&b("restart_timeout = [10, 5]")),
            "bridge.b.restart_timeout"
        );
        assert_eq!(
            invalid(&b("remote_clientid = \"\"")),
            "bridge.b.remote_clientid"
        );
        assert_eq!(
            invalid(&b("local_clientid = \"\"")),
            "bridge.b.local_clientid"
        );
        let certfile = format!("certfile = {:?}", cert("client.pem"));
        let keyfile = format!("keyfile = {:?}", cert("client.key"));
        let cafile = format!("cafile = {:?}", cert("ca.pem"));
        assert_eq!(invalid(&b(&certfile)), "bridge.b.certfile");
        assert_eq!(invalid(&b(&keyfile)), "bridge.b.keyfile");
        assert_eq!(invalid(&b("insecure = true")), "bridge.b.insecure");
        assert_eq!(
            invalid(&b(&format!("{cafile}\n{certfile}"))),
            "bridge.b.keyfile"
        );
        assert_eq!(
            invalid(&b(&format!("{cafile}\n{keyfile}"))),
            "bridge.b.certfile"
        );
        let e = parse(&b("cafile = \"/nonexistent/ca.pem\"")).unwrap_err();
        assert!(matches!(e, ConfigError::Unreadable { .. }), "{e:?}");
        assert_eq!(e.key(), Some("bridge.b.cafile"));
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        // The reason is said too.
        let e = parse(&b(&certfile)).unwrap_err().to_string();
        assert!(e.contains("needs cafile"), "{e}");
        let e = parse(&b("topic = [\"# in 0 l r\"]"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`l#`") && e.contains("ends with '/'"), "{e}");
        // `insecure = false`, the default, needs nothing.
        parse(&b("insecure = false")).expect("valid");
    }

    #[test]
    fn validate_checks_bridges_built_in_code() {
        let bridge = || {
            BridgeConfig::new(
                "b",
                "h",
                1883,
                vec![topic("a/#", BridgeDirection::Out, 1, "", "")],
            )
        };
        let with = |b: BridgeConfig| move |c: &mut Config| c.bridges.push(b);
        Config {
            bridges: vec![bridge()],
            ..Config::default()
        }
        .validate()
        .expect("valid");
        let mut b = bridge();
        b.addresses[0].port = 0;
        assert_eq!(invalid_key(with(b)), "bridge.b.address");
        let mut b = bridge();
        b.name = String::new();
        assert_eq!(invalid_key(with(b)), "bridge[0].name");
        let mut b = bridge();
        b.topics[0].qos = crate::codec::QoS::ExactlyOnce;
        b.topics[0].pattern = "a/#/b".into();
        assert_eq!(invalid_key(with(b)), "bridge.b.topic[0].pattern");
        let mut b = bridge();
        b.remote_username = Some("a\0b".into());
        assert_eq!(invalid_key(with(b)), "bridge.b.remote_username");
        let key = invalid_key(|c| {
            c.bridges.push(bridge());
            let mut other = bridge();
            other.name = "c".into();
            c.bridges.push(other);
            c.bridges.push(bridge());
        });
        assert_eq!(key, "bridge.b.name");
    }

    #[test]
    fn bridge_file_paths_are_relative_to_the_file() {
        let file = FileConfig::parse(
            "[[bridge]]\nname = \"b\"\naddress = \"h\"\ntopic = [\"#\"]\ncafile = \"ca.pem\"\n\
             certfile = \"/abs/c.pem\"\nkeyfile = \"c.key\"\n",
            Path::new("/etc/roost/roost.toml"),
        )
        .unwrap();
        let mut c = Config::default();
        file.apply(&mut c, Some(Path::new("/etc/roost/roost.toml")));
        let tls = c.bridges[0].tls.as_ref().unwrap();
        assert_eq!(tls.ca_file, Path::new("/etc/roost/ca.pem"));
        assert_eq!(tls.cert_file.as_deref(), Some(Path::new("/abs/c.pem")));
        assert_eq!(tls.key_file.as_deref(), Some(Path::new("/etc/roost/c.key")));
    }

    #[test]
    fn describe_lists_bridges_and_reads_back() {
        let text = format!(
            "{}{}",
            bridge_toml(
                "b1",
                &format!(
                    "address = [\"a.example\", \"[::1]:1884\"]\ncafile = {:?}\n\
                     remote_clientid = \"r\"\nrestart_timeout = 7\n\
                     topic = [\"x/# both 1 l/ r/\", {{ pattern = \"with space/+\" }}]",
                    cert("ca.pem")
                )
            ),
            bridge_toml("b2", "remote_password = \"hidden\"")
        );
        let c = parse(&text).unwrap();
        let out = c.describe();
        assert!(
            out.contains(
                "\n[[bridge]]\nname = \"b1\"\naddress = [\"a.example:8883\", \"[::1]:1884\"]\n"
            ),
            "{out}"
        );
        assert!(out.contains("topic = [  # 2 topics\n"), "{out}");
        assert!(out.contains("topic = [  # 1 topic\n"), "{out}");
        assert!(
            out.contains("remote_password = \"...\"  # set, not shown"),
            "{out}"
        );
        assert!(!out.contains("hidden"), "{out}");
        let again = parse(&out).unwrap();
        assert_eq!(again.bridges[0], c.bridges[0]);
        assert_eq!(again.bridges[1].name, "b2");
    }

    #[test]
    fn in_file_names_the_file_once() {
        let e = Config {
            receive_maximum: 0,
            ..Config::default()
        }
        .validate()
        .unwrap_err()
        .in_file(Path::new("a.toml"))
        .in_file(Path::new("b.toml"));
        assert_eq!(e.file(), Some(Path::new("a.toml")));
        assert!(e.to_string().starts_with("a.toml: "), "{e}");
    }
}
