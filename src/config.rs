//! Broker configuration: defaults, an optional TOML file, and command-line overrides.
//!
//! Every key of the file is a field of [`FileConfig`]; unknown keys are rejected so a typo is
//! reported instead of silently ignored. Errors name the file and the key.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::store::Durability;

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

    fn validate(&self, i: usize) -> Result<(), String> {
        let key = |k: &str| format!("listener[{i}].{k}");
        if self.kind.is_tls() && (self.cert_file.is_none() || self.key_file.is_none()) {
            return Err(format!(
                "`{}` and `{}` are required for a {:?} listener",
                key("cert_file"),
                key("key_file"),
                self.kind
            ));
        }
        if !self.kind.is_tls() && (self.cert_file.is_some() || self.ca_file.is_some()) {
            return Err(format!(
                "`{}` only applies to tls and wss listeners",
                key("cert_file/ca_file")
            ));
        }
        if (self.require_certificate || self.use_identity_as_username) && self.ca_file.is_none() {
            return Err(format!(
                "`{}` is required with require_certificate or use_identity_as_username",
                key("ca_file")
            ));
        }
        if self.use_identity_as_username && !self.require_certificate {
            return Err(format!(
                "`{}` needs require_certificate = true",
                key("use_identity_as_username")
            ));
        }
        if matches!(self.kind, ListenerKind::Ws | ListenerKind::Wss) && !self.path.starts_with('/')
        {
            return Err(format!("`{}` must start with '/'", key("path")));
        }
        Ok(())
    }
}

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
    /// Outbound QoS 1/2 messages in flight per client (further capped by its Receive Maximum).
    pub max_inflight_messages: u16,
    /// Inbound QoS 1/2 messages a client may have unacknowledged (our Receive Maximum).
    pub receive_maximum: u16,
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
    /// Time a TLS or WebSocket handshake may take.
    pub handshake_timeout: Duration,
}

impl Config {
    /// The per-session backlog bounds.
    pub fn queue_limits(&self) -> crate::session::QueueLimits {
        crate::session::QueueLimits {
            max_messages: self.max_queued_messages,
            max_bytes: self.max_queued_bytes,
            memory_bytes: self.max_queued_memory_bytes.min(self.max_queued_bytes),
        }
    }
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
            max_queued_messages: 1_000_000,
            max_queued_bytes: 512 * 1024 * 1024,
            max_queued_memory_bytes: 2 * 1024 * 1024,
            max_store_bytes: 4 * 1024 * 1024 * 1024,
            queue_full: QueueFullPolicy::Backpressure,
            store_cache_bytes: crate::store::DEFAULT_CACHE_BYTES,
            max_inflight_messages: 100,
            receive_maximum: 100,
            connect_timeout: Duration::from_secs(10),
            listeners: Vec::new(),
            password_file: None,
            acl_file: None,
            allow_anonymous: None,
            max_connections: 0,
            handshake_timeout: Duration::from_secs(10),
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
    /// See [`Config::max_packet_size`].
    pub max_packet_size: Option<u32>,
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
    /// See [`Config::max_inflight_messages`].
    pub max_inflight_messages: Option<u16>,
    /// See [`Config::receive_maximum`].
    pub receive_maximum: Option<u16>,
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
}

/// A configuration problem, with the file and key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the problem is in, if it came from a file.
    pub file: Option<PathBuf>,
    /// What is wrong, naming the key.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{}: {}", file.display(), self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl FileConfig {
    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let err = |message: String| ConfigError {
            file: Some(path.to_path_buf()),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        toml::from_str(&text).map_err(|e| err(e.to_string().trim_end().to_string()))
    }

    /// Applies the keys that are set on top of `config`, validating each.
    pub fn apply(&self, config: &mut Config, file: Option<&Path>) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| ConfigError {
            file: file.map(Path::to_path_buf),
            message: format!("invalid value for `{key}`: {why}"),
        };
        if let Some(v) = self.bind {
            config.bind = v;
        }
        if let Some(v) = self.port {
            config.port = v;
        }
        if let Some(v) = &self.data_dir {
            config.data_dir = v.clone();
        }
        if let Some(v) = self.in_memory {
            config.in_memory = v;
        }
        if let Some(v) = self.durability {
            config.durability = v;
        }
        if let Some(v) = self.max_packet_size {
            if !(64..=MQTT_MAX_PACKET_SIZE).contains(&v) {
                return Err(bad(
                    "max_packet_size",
                    "must be between 64 and 268435460 bytes",
                ));
            }
            config.max_packet_size = v;
        }
        if let Some(v) = self.max_queued_messages {
            if v == 0 {
                return Err(bad("max_queued_messages", "must be at least 1"));
            }
            config.max_queued_messages = v;
        }
        if let Some(v) = self.max_queued_bytes {
            if v < 1024 {
                return Err(bad("max_queued_bytes", "must be at least 1024"));
            }
            config.max_queued_bytes = v;
        }
        if let Some(v) = self.max_queued_memory_bytes {
            if v < 1024 {
                return Err(bad("max_queued_memory_bytes", "must be at least 1024"));
            }
            config.max_queued_memory_bytes = v;
        }
        if let Some(v) = self.max_store_bytes {
            config.max_store_bytes = v;
        }
        if let Some(v) = self.queue_full {
            config.queue_full = v;
        }
        if let Some(v) = self.store_cache_bytes {
            if v < 1024 * 1024 {
                return Err(bad("store_cache_bytes", "must be at least 1048576"));
            }
            config.store_cache_bytes = v;
        }
        if let Some(v) = self.max_inflight_messages {
            if v == 0 {
                return Err(bad("max_inflight_messages", "must be at least 1"));
            }
            config.max_inflight_messages = v;
        }
        if let Some(v) = self.receive_maximum {
            if v == 0 {
                return Err(bad("receive_maximum", "must be at least 1"));
            }
            config.receive_maximum = v;
        }
        if let Some(v) = self.connect_timeout {
            if v == 0 {
                return Err(bad("connect_timeout", "must be at least 1 second"));
            }
            config.connect_timeout = Duration::from_secs(v);
        }
        if let Some(v) = self.handshake_timeout {
            if v == 0 {
                return Err(bad("handshake_timeout", "must be at least 1 second"));
            }
            config.handshake_timeout = Duration::from_secs(v);
        }
        // Relative paths in the file are relative to the file's directory.
        let base = file.and_then(Path::parent).unwrap_or(Path::new(""));
        let resolve = |p: &PathBuf| base.join(p);
        for (i, l) in self.listener.iter().enumerate() {
            l.validate(i).map_err(|message| ConfigError {
                file: file.map(Path::to_path_buf),
                message,
            })?;
            let mut l = l.clone();
            l.cert_file = l.cert_file.as_ref().map(resolve);
            l.key_file = l.key_file.as_ref().map(resolve);
            l.ca_file = l.ca_file.as_ref().map(resolve);
            config.listeners.push(l);
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError {
            file: None,
            message: e.to_string(),
        })?;
        let mut config = Config::default();
        file.apply(&mut config, Some(Path::new("roost.toml")))?;
        Ok(config)
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
    fn file_keys_override_defaults() {
        let c = parse("port = 1999\nbind = \"0.0.0.0\"\nmax_packet_size = 4096\n").unwrap();
        assert_eq!(c.port, 1999);
        assert_eq!(c.bind.to_string(), "0.0.0.0");
        assert_eq!(c.max_packet_size, 4096);
    }

    #[test]
    fn durability_and_in_memory_keys() {
        let c = parse("durability = \"buffered\"\nin_memory = true\n").unwrap();
        assert_eq!(c.durability, Durability::Buffered);
        assert!(c.in_memory);
        let e = parse("durability = \"sometimes\"\n").unwrap_err();
        assert!(
            e.message.contains("durability") || e.message.contains("sometimes"),
            "{e}"
        );
    }

    #[test]
    fn listeners_are_parsed_and_validated() {
        let c = parse(
            "[[listener]]\nkind = \"tls\"\nport = 8883\ncert_file = \"s.pem\"\nkey_file = \"s.key\"\n\
             [[listener]]\nkind = \"ws\"\nport = 8080\n",
        )
        .unwrap();
        assert_eq!(c.listeners.len(), 2);
        assert_eq!(c.listeners[0].kind, ListenerKind::Tls);
        assert_eq!(
            c.listeners[0].cert_file.as_deref(),
            Some(Path::new("s.pem"))
        );
        assert_eq!(c.listeners[1].path, "/mqtt");
        let e = parse("[[listener]]\nkind = \"tls\"\nport = 8883\n").unwrap_err();
        assert!(e.message.contains("listener[0].cert_file"), "{e}");
        let e = parse(
            "[[listener]]\nkind = \"tls\"\nport = 1\ncert_file = \"a\"\nkey_file = \"b\"\nrequire_certificate = true\n",
        )
        .unwrap_err();
        assert!(e.message.contains("ca_file"), "{e}");
        let e = parse("[[listener]]\nkind = \"quic\"\nport = 1\n").unwrap_err();
        assert!(
            e.message.contains("quic") || e.message.contains("kind"),
            "{e}"
        );
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
        let e = parse("queue_full = \"drop_everything\"\n").unwrap_err();
        assert!(
            e.message.contains("drop_everything") || e.message.contains("queue_full"),
            "{e}"
        );
        let e = parse("max_queued_memory_bytes = 10\n").unwrap_err();
        assert!(e.message.contains("max_queued_memory_bytes"), "{e}");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse("prot = 1\n").unwrap_err();
        assert!(e.message.contains("prot"), "{e}");
    }

    #[test]
    fn invalid_value_names_key_and_file() {
        let e = parse("max_queued_messages = 0\n").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("max_queued_messages"), "{text}");
        assert!(text.contains("roost.toml"), "{text}");
    }

    #[test]
    fn wrong_type_is_reported() {
        let e = parse("port = \"abc\"\n").unwrap_err();
        assert!(e.message.contains("port"), "{e}");
    }
}
