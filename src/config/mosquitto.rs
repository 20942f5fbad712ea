//! Reading a mosquitto.conf: the common subset of its keys maps onto Roost's settings (see the
//! README's table); every other key is reported once, with its line, and ignored. A value
//! that cannot be read is an error naming the file, the line and the key.

use std::net::{IpAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use super::{
    BridgeAddress, BridgeConfig, BridgeProtocol, BridgeTls, BridgeTopic, ConfigError, FileConfig,
    ListenerConfig, ListenerKind, valid_bridge_name,
};

/// A mosquitto.conf read into Roost's keys, with a warning per key it does not map.
#[derive(Debug, Default)]
pub struct MosquittoConf {
    /// The settings, to apply like a TOML file's.
    pub file: FileConfig,
    /// `FILE:LINE: ...` for each key that was ignored or only partly applied.
    pub warnings: Vec<String>,
}

/// True if `text` looks like a mosquitto.conf rather than TOML: the file name ends in `.conf`,
/// or its first setting is `key value` instead of `key = value` or a `[table]`.
pub fn looks_like_mosquitto(text: &str, path: &Path) -> bool {
    if path.extension().is_some_and(|e| e == "conf") {
        return true;
    }
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'));
    first.is_some_and(|l| !l.starts_with('[') && !l.contains('='))
}

/// Where mosquitto listens when a listener names no address.
const ALL_INTERFACES: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

/// One `listener` block (or the default listener, set by `port` and `bind_address`).
#[derive(Debug, Default)]
struct Listener {
    port: Option<u16>,
    bind: Option<IpAddr>,
    websockets: bool,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    require_certificate: bool,
    use_identity_as_username: bool,
    /// Line of its `listener` key (0: the default listener).
    line: usize,
}

impl Listener {
    fn kind(&self) -> ListenerKind {
        match (self.websockets, self.cert_file.is_some()) {
            (false, false) => ListenerKind::Tcp,
            (false, true) => ListenerKind::Tls,
            (true, false) => ListenerKind::Ws,
            (true, true) => ListenerKind::Wss,
        }
    }

    fn to_config(&self) -> ListenerConfig {
        ListenerConfig {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            ca_file: self.ca_file.clone(),
            require_certificate: self.require_certificate,
            use_identity_as_username: self.use_identity_as_username,
            ..ListenerConfig::new(
                self.kind(),
                self.bind.unwrap_or(IpAddr::from([127, 0, 0, 1])),
                self.port.unwrap_or(1883),
            )
        }
    }
}

/// Keys that are recognised and deliberately not used, with why.
const IGNORED: &[(&str, &str)] = &[
    (
        "log_dest",
        "Roost logs to stderr (see log_level and log_format)",
    ),
    ("log_type", "use log_level, e.g. `debug`"),
    ("log_timestamp", "log lines always carry a timestamp"),
    (
        "log_timestamp_format",
        "log lines always carry an RFC 3339 timestamp",
    ),
    (
        "connection_messages",
        "connects and disconnects are always logged",
    ),
    (
        "autosave_interval",
        "every acknowledged change is committed to the store at once",
    ),
    (
        "autosave_on_changes",
        "every acknowledged change is committed to the store at once",
    ),
    (
        "persistence_file",
        "the store is roost.redb in the data directory",
    ),
    ("pid_file", "not written; use the process manager's PID"),
    (
        "user",
        "Roost does not drop privileges; run it as the user it should run as",
    ),
    ("per_listener_settings", "settings are global"),
    (
        "queue_qos0_messages",
        "QoS 0 messages are never kept for absent clients",
    ),
    ("retain_available", "retained messages are always available"),
    ("set_tcp_nodelay", "TCP_NODELAY is always set"),
    ("capath", "use cafile"),
    ("tls_version", "TLS 1.2 and 1.3 are offered"),
    ("ciphers", "rustls chooses its cipher suites"),
    ("ciphers_tls1.3", "rustls chooses its cipher suites"),
    ("socket_domain", "the bind address decides"),
    ("mount_point", "not supported"),
    ("http_dir", "not supported"),
    ("websockets_log_level", "not supported"),
    (
        "max_queued_bytes",
        "use max_queued_bytes in a TOML file (counted differently)",
    ),
    ("message_size_limit", "use max_packet_size"),
    (
        "memory_limit",
        "use the backlog limits (max_queued_bytes, max_queued_memory_bytes)",
    ),
    ("check_retain_source", "not supported"),
    ("upgrade_outgoing_qos", "not supported"),
    ("max_inflight_bytes", "use max_inflight_messages"),
    (
        "allow_zero_length_clientid",
        "zero-length client ids are accepted as the spec says",
    ),
    ("auto_id_prefix", "assigned client ids have their own form"),
    ("clientid_prefixes", "not supported"),
    (
        "persistent_client_expiration",
        "use MQTT 5.0 session expiry",
    ),
    (
        "allow_duplicate_messages",
        "overlapping subscriptions give one copy (MQTT-3.3.5-1)",
    ),
    ("plugin", "plugins are not supported"),
    ("auth_plugin", "plugins are not supported"),
    ("psk_file", "TLS-PSK is not supported"),
    ("psk_hint", "TLS-PSK is not supported"),
    ("crlfile", "certificate revocation lists are not supported"),
    ("dhparamfile", "not used by TLS 1.3"),
    (
        "accept_protocol_versions",
        "3.1, 3.1.1 and 5.0 are all accepted",
    ),
];

/// Bridge keys that are read (see [`State::bridge_line`]): they belong to a `connection`
/// block.
const BRIDGE_KEYS: &[&str] = &[
    "connection",
    "address",
    "addresses",
    "topic",
    "cleansession",
    "local_clientid",
    "remote_clientid",
    "clientid",
    "remote_username",
    "username",
    "remote_password",
    "password",
    "bridge_protocol_version",
    "try_private",
    "restart_timeout",
    "keepalive_interval",
    "bridge_cafile",
    "bridge_certfile",
    "bridge_keyfile",
    "bridge_insecure",
];

/// Bridge keys that are recognised and not used, with why. Any other `bridge_` key is
/// ignored too.
const BRIDGE_IGNORED: &[(&str, &str)] = &[
    ("bridge_capath", "not supported: use bridge_cafile"),
    (
        "bridge_identity",
        "TLS-PSK is not supported: use bridge_cafile",
    ),
    ("bridge_psk", "TLS-PSK is not supported: use bridge_cafile"),
    (
        "local_cleansession",
        "the local session follows cleansession",
    ),
    (
        "notifications",
        "bridge state notifications are not published",
    ),
    (
        "notifications_local_only",
        "bridge state notifications are not published",
    ),
    (
        "notification_topic",
        "bridge state notifications are not published",
    ),
    (
        "start_type",
        "a bridge always starts with the broker and reconnects after a failure (automatic)",
    ),
    (
        "round_robin",
        "not supported: the addresses are tried in turn",
    ),
    (
        "idle_timeout",
        "only for start_type lazy, which is not supported",
    ),
    (
        "threshold",
        "only for start_type lazy, which is not supported",
    ),
    (
        "local_username",
        "the bridge does not log in to this broker",
    ),
    (
        "local_password",
        "the bridge does not log in to this broker",
    ),
    (
        "bridge_attempt_unsubscribe",
        "the bridge does not unsubscribe on the remote broker (as with false)",
    ),
    (
        "bridge_outgoing_retain",
        "the RETAIN flag always crosses the bridge (as with true)",
    ),
    ("bridge_tls_version", "TLS 1.2 and 1.3 are offered"),
    ("bridge_bind_address", "the system picks the local address"),
    ("bridge_alpn", "not supported"),
    ("bridge_require_ocsp", "OCSP is not supported"),
    ("bridge_max_packet_size", "not supported"),
];

/// True for the keys that belong to a `connection` block.
fn is_bridge_key(key: &str) -> bool {
    key.starts_with("bridge_")
        || BRIDGE_KEYS.contains(&key)
        || BRIDGE_IGNORED.iter().any(|(k, _)| *k == key)
}

/// A line of a file, for errors found after it was read.
#[derive(Debug, Clone)]
struct Place {
    path: PathBuf,
    line: usize,
}

impl Place {
    fn error(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Mosquitto {
            path: self.path.clone(),
            line: self.line,
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}

/// The `connection` block being read: the bridge so far, and where the keys that are checked
/// together at its end were set.
#[derive(Debug)]
struct PendingBridge {
    config: BridgeConfig,
    /// The `connection` line.
    at: Place,
    /// The `address` (or `addresses`) line.
    address: Option<Place>,
    cafile: Option<PathBuf>,
    certfile: Option<(PathBuf, Place)>,
    keyfile: Option<(PathBuf, Place)>,
    /// `bridge_insecure true`.
    insecure: Option<Place>,
    /// `bridge_capath`, `bridge_psk` or `bridge_identity`: TLS that Roost cannot set up.
    other_tls: Option<(String, Place)>,
}

impl PendingBridge {
    /// The bridge, once the keys that go together are checked.
    fn finish(self) -> Result<BridgeConfig, ConfigError> {
        let PendingBridge {
            mut config,
            at,
            address,
            cafile,
            certfile,
            keyfile,
            insecure,
            other_tls,
        } = self;
        let name = &config.name;
        if address.is_none() {
            return Err(at.error(
                "connection",
                format!("bridge `{name}` has no `address` line"),
            ));
        }
        if config.topics.is_empty() {
            return Err(at.error("connection", format!("bridge `{name}` has no `topic` line")));
        }
        let Some(ca_file) = cafile else {
            let needs_cafile = "needs bridge_cafile: TLS is on only when bridge_cafile is set";
            if let Some((_, place)) = &certfile {
                return Err(place.error("bridge_certfile", needs_cafile));
            }
            if let Some((_, place)) = &keyfile {
                return Err(place.error("bridge_keyfile", needs_cafile));
            }
            if let Some(place) = &insecure {
                return Err(place.error("bridge_insecure", needs_cafile));
            }
            if let Some((key, place)) = &other_tls {
                return Err(place.error(
                    key,
                    "is not supported, and without bridge_cafile the bridge would connect \
                     without TLS: use bridge_cafile",
                ));
            }
            return Ok(config);
        };
        match (&certfile, &keyfile) {
            (Some((_, place)), None) => {
                return Err(place.error("bridge_certfile", "needs bridge_keyfile too"));
            }
            (None, Some((_, place))) => {
                return Err(place.error("bridge_keyfile", "needs bridge_certfile too"));
            }
            _ => {}
        }
        config.tls = Some(BridgeTls {
            ca_file,
            cert_file: certfile.map(|(path, _)| path),
            key_file: keyfile.map(|(path, _)| path),
            insecure: insecure.is_some(),
        });
        Ok(config)
    }
}

/// An address of `address`/`addresses`: `host[:port]`, port 1883 unless given, as in
/// mosquitto. An IPv6 address goes in brackets (`[::1]:1883`), or without them is followed
/// by its port, which mosquitto then requires (`::1:1883`).
fn bridge_address(word: &str) -> Result<BridgeAddress, String> {
    if !word.starts_with('[')
        && word.matches(':').count() > 1
        && let Some((host, port)) = word.rsplit_once(':')
    {
        return BridgeAddress::parse(&format!("[{host}]:{port}"), 1883).map_err(|_| {
            format!("`{word}`: expected an IPv6 address and a port, e.g. `[::1]:1883`")
        });
    }
    BridgeAddress::parse(word, 1883)
}

/// Reads the mosquitto.conf text of the file `path`, with the `*.conf` files of its
/// `include_dir` (in name order, as mosquitto reads them).
pub fn parse_mosquitto(text: &str, path: &Path) -> Result<MosquittoConf, ConfigError> {
    let mut state = State::default();
    state.read(text, path, 0)?;
    state.finish_bridge()?;
    let mut out = state.out;
    let configured = !state.listeners.is_empty() || state.default.port.is_some();
    if configured && out.file.allow_anonymous.is_none() {
        // mosquitto 2.0: once a listener is configured, anonymous clients are refused unless
        // allow_anonymous says otherwise.
        out.file.allow_anonymous = Some(false);
    }
    place_listeners(&mut out, state.default, state.listeners, path);
    Ok(out)
}

/// What has been read so far, across included files.
#[derive(Debug, Default)]
struct State {
    out: MosquittoConf,
    default: Listener,
    listeners: Vec<Listener>,
    /// The `connection` block being read; bridge keys belong to it until the next
    /// `connection` line (a `listener` line does not end it, as in mosquitto).
    bridge: Option<PendingBridge>,
}

impl State {
    fn read(&mut self, text: &str, path: &Path, depth: usize) -> Result<(), ConfigError> {
        // A byte order mark is not part of the first key.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (key, value) = match trimmed.split_once(char::is_whitespace) {
                Some((k, v)) => (k, v.trim()),
                None => (trimmed, ""),
            };
            if key == "include_dir" {
                // Read where it stands: later lines of this file override what it sets.
                self.include(Path::new(value), path, line, depth)?;
                continue;
            }
            if is_bridge_key(key) {
                self.bridge_line(
                    key,
                    value,
                    &Place {
                        path: path.to_path_buf(),
                        line,
                    },
                )?;
                continue;
            }
            let State {
                out,
                default,
                listeners,
                ..
            } = &mut *self;
            let bad = |reason: &str| ConfigError::Mosquitto {
                path: path.to_path_buf(),
                line,
                key: key.to_string(),
                reason: reason.to_string(),
            };
            let number = |v: &str| v.parse::<i64>().map_err(|_| bad("expected a number"));
            let flag = |v: &str| match v {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(bad("expected true or false")),
            };
            let current = listeners.last_mut().unwrap_or(default);
            let f = &mut out.file;
            match key {
            "listener" => {
                let mut parts = value.split_whitespace();
                let port = parts
                    .next()
                    .and_then(|p| p.parse::<u16>().ok())
                    .ok_or_else(|| bad("expected a port"))?;
                let bind = parts
                    .next()
                    .map(|host| resolve(host).ok_or_else(|| bad("cannot resolve the address")))
                    .transpose()?;
                if parts.next().is_some() {
                    return Err(bad("expected a port and an optional address, nothing more"));
                }
                listeners.push(Listener {
                    port: Some(port),
                    // Like mosquitto: without an address, every interface.
                    bind: bind.or(Some(ALL_INTERFACES)),
                    line,
                    ..Listener::default()
                });
            }
            "port" => {
                default.port = Some(value.parse().map_err(|_| bad("expected a port"))?);
                // Like mosquitto: the default listener binds every interface unless
                // bind_address says otherwise.
                default.bind.get_or_insert(ALL_INTERFACES);
            }
            "bind_address" => {
                default.bind = Some(resolve(value).ok_or_else(|| bad("cannot resolve the address"))?);
            }
            "protocol" => match value {
                "mqtt" => current.websockets = false,
                "websockets" => current.websockets = true,
                _ => return Err(bad("expected mqtt or websockets")),
            },
            "certfile" => current.cert_file = Some(PathBuf::from(value)),
            "keyfile" => current.key_file = Some(PathBuf::from(value)),
            "cafile" => current.ca_file = Some(PathBuf::from(value)),
            "require_certificate" => current.require_certificate = flag(value)?,
            "use_identity_as_username" | "use_subject_as_username" => {
                current.use_identity_as_username = flag(value)?;
                if key == "use_subject_as_username" {
                    out.warnings.push(format!(
                        "{}:{line}: `use_subject_as_username` is read as use_identity_as_username (the Common Name is the username)",
                        path.display()
                    ));
                }
            }
            "allow_anonymous" => f.allow_anonymous = Some(flag(value)?),
            "password_file" => f.password_file = Some(PathBuf::from(value)),
            "acl_file" => f.acl_file = Some(PathBuf::from(value)),
            "max_queued_messages" => match number(value)? {
                n if n <= 0 => out.warnings.push(format!(
                    "{}:{line}: `max_queued_messages {value}` (no limit) is not supported; Roost's default limit applies",
                    path.display()
                )),
                n => f.max_queued_messages = Some(usize::try_from(n).unwrap_or(usize::MAX)),
            },
            "max_inflight_messages" => {
                f.max_inflight_messages = Some(match number(value)? {
                    n if n <= 0 => u16::MAX,
                    n => u16::try_from(n).unwrap_or(u16::MAX),
                });
            }
            "max_packet_size" => {
                let max = match number(value)? {
                    n if n <= 0 => super::MQTT_MAX_PACKET_SIZE,
                    n => u32::try_from(n).unwrap_or(super::MQTT_MAX_PACKET_SIZE),
                };
                f.max_packet_size = Some(max);
                // A WebSocket message must be able to hold the largest packet.
                let ws = f.websocket_max_message_bytes.unwrap_or(2 * 1024 * 1024);
                f.websocket_max_message_bytes = Some(ws.max(max as usize));
            }
            "max_keepalive" => {
                f.max_keepalive = Some(u16::try_from(number(value)?.max(0)).unwrap_or(u16::MAX));
            }
            "max_connections" => {
                f.max_connections = Some(match number(value)? {
                    n if n < 0 => 0,
                    n => usize::try_from(n).unwrap_or(usize::MAX),
                });
            }
            "sys_interval" => f.sys_interval = Some(u64::try_from(number(value)?.max(0)).unwrap_or(0)),
            "persistence" => f.in_memory = Some(!flag(value)?),
            "persistence_location" => f.data_dir = Some(PathBuf::from(value)),
            _ => {
                let why = IGNORED
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map_or("not a key Roost knows", |(_, why)| *why);
                out.warnings.push(format!("{}:{line}: `{key}` ignored: {why}", path.display()));
            }
        }
        }
        Ok(())
    }

    /// Ends the `connection` block being read, if any: its bridge joins the file's.
    fn finish_bridge(&mut self) -> Result<(), ConfigError> {
        if let Some(pending) = self.bridge.take() {
            let bridge = pending.finish()?;
            self.out.file.bridge.push(bridge);
        }
        Ok(())
    }

    /// Reads a bridge key at `at`: `connection NAME` starts a block, the other keys belong to
    /// the block being read. mosquitto's defaults apply to what is not set: MQTT 3.1.1,
    /// `cleansession false`, `try_private true`, `keepalive_interval 60`,
    /// `restart_timeout 5 30`, port 1883.
    fn bridge_line(&mut self, key: &str, value: &str, at: &Place) -> Result<(), ConfigError> {
        let bad = |reason: &str| at.error(key, reason);
        let flag = |v: &str| match v {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(bad("expected true or false")),
        };
        let text = |v: &str| {
            if v.is_empty() {
                Err(bad("expected a value"))
            } else {
                Ok(v.to_string())
            }
        };
        let warn = |out: &mut MosquittoConf, why: &str| {
            out.warnings
                .push(format!("{}:{}: `{key}` {why}", at.path.display(), at.line));
        };
        if key == "connection" {
            self.finish_bridge()?;
            let mut words = value.split_whitespace();
            let name = words.next().ok_or_else(|| bad("expected a name"))?;
            if words.next().is_some() {
                return Err(bad("expected one name, without spaces"));
            }
            if !valid_bridge_name(name) {
                return Err(bad(&format!(
                    "`{name}`: a bridge name may only contain ASCII letters, digits, '_', '.' \
                     and '-'"
                )));
            }
            if self.out.file.bridge.iter().any(|b| b.name == name) {
                return Err(bad(&format!(
                    "a bridge named `{name}` is configured already"
                )));
            }
            let mut config = BridgeConfig::new(name, "", 0, Vec::new());
            config.addresses.clear();
            self.bridge = Some(PendingBridge {
                config,
                at: at.clone(),
                address: None,
                cafile: None,
                certfile: None,
                keyfile: None,
                insecure: None,
                other_tls: None,
            });
            return Ok(());
        }
        let State { out, bridge, .. } = self;
        let Some(b) = bridge else {
            return Err(bad(
                "is a bridge setting: it belongs after a `connection NAME` line",
            ));
        };
        let c = &mut b.config;
        match key {
            "address" | "addresses" => {
                if let Some(first) = &b.address {
                    return Err(bad(&format!(
                        "the addresses of this connection are set already, at line {}; list \
                         them all on one line",
                        first.line
                    )));
                }
                // As in mosquitto, a word starting with `#` starts a comment.
                for word in value.split_whitespace().take_while(|w| !w.starts_with('#')) {
                    c.addresses.push(bridge_address(word).map_err(|e| bad(&e))?);
                }
                if c.addresses.is_empty() {
                    return Err(bad("expected host[:port], one or more"));
                }
                b.address = Some(at.clone());
            }
            "topic" => {
                let topic = BridgeTopic::parse(value).map_err(|e| bad(&e))?;
                topic.check().map_err(|(field, reason)| {
                    bad(&format!("{}: {reason}", field.replace('_', " ")))
                })?;
                c.topics.push(topic);
            }
            "cleansession" => c.clean_session = flag(value)?,
            "try_private" => c.try_private = flag(value)?,
            "local_clientid" => c.local_clientid = Some(text(value)?),
            "remote_clientid" | "clientid" => c.remote_clientid = Some(text(value)?),
            "remote_username" | "username" => c.remote_username = Some(text(value)?),
            "remote_password" | "password" => c.remote_password = Some(text(value)?),
            "bridge_protocol_version" => {
                c.protocol = BridgeProtocol::from_name(value)
                    .ok_or_else(|| bad("expected mqttv31, mqttv311 or mqttv50"))?;
            }
            "keepalive_interval" => {
                let seconds = value
                    .parse::<i64>()
                    .map_err(|_| bad("expected a number of seconds"))?;
                c.keepalive = u16::try_from(seconds.max(5))
                    .map_err(|_| bad("must be at most 65535 seconds"))?;
                if seconds < 5 {
                    warn(out, "below 5 seconds: 5 is used, as in mosquitto");
                }
            }
            "restart_timeout" => {
                let mut seconds = Vec::new();
                for word in value.split_whitespace() {
                    seconds.push(word.parse::<i64>().map_err(|_| {
                        bad("expected one or two numbers of seconds: constant, or base and cap")
                    })?);
                }
                let (base, cap) = match seconds[..] {
                    [base] => (base, None),
                    [base, cap] => (base, Some(cap)),
                    _ => {
                        return Err(bad(
                            "expected one or two numbers of seconds: constant, or base and cap",
                        ));
                    }
                };
                if base < 1 {
                    warn(out, "below 1 second: 1 is used, as in mosquitto");
                }
                let base = u64::try_from(base.max(1)).unwrap_or(1);
                if cap.is_some_and(|cap| cap < base as i64) {
                    return Err(bad("the cap (second number) is below the base (first)"));
                }
                c.restart_base = std::time::Duration::from_secs(base);
                c.restart_cap = cap
                    .map(|cap| std::time::Duration::from_secs(u64::try_from(cap).unwrap_or(base)));
            }
            "bridge_cafile" => b.cafile = Some(PathBuf::from(text(value)?)),
            "bridge_certfile" => b.certfile = Some((PathBuf::from(text(value)?), at.clone())),
            "bridge_keyfile" => b.keyfile = Some((PathBuf::from(text(value)?), at.clone())),
            "bridge_insecure" => b.insecure = flag(value)?.then(|| at.clone()),
            _ => {
                if matches!(key, "bridge_capath" | "bridge_identity" | "bridge_psk") {
                    b.other_tls = Some((key.to_string(), at.clone()));
                }
                let why = BRIDGE_IGNORED
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map_or("a bridge setting Roost does not support", |(_, why)| *why);
                warn(out, &format!("ignored: {why}"));
            }
        }
        if matches!(key, "clientid" | "username" | "password") {
            warn(
                out,
                &format!("is read as remote_{key} (its older name in mosquitto)"),
            );
        }
        Ok(())
    }

    /// Reads the `*.conf` files of `dir` (relative to the directory of `from`), in name order.
    fn include(
        &mut self,
        dir: &Path,
        from: &Path,
        line: usize,
        depth: usize,
    ) -> Result<(), ConfigError> {
        let bad = |reason: String| ConfigError::Mosquitto {
            path: from.to_path_buf(),
            line,
            key: "include_dir".to_string(),
            reason,
        };
        if depth >= 4 {
            return Err(bad("include_dir nested too deep".to_string()));
        }
        let dir = match from.parent() {
            Some(parent) if dir.is_relative() => parent.join(dir),
            _ => dir.to_path_buf(),
        };
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| bad(format!("cannot read {}: {e}", dir.display())))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "conf") && p.is_file())
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| bad(format!("cannot read {}: {e}", file.display())))?;
            self.read(&text, &file, depth + 1)?;
        }
        Ok(())
    }
}

/// Roost has one main plain-TCP listener (`bind`, `port`) and extra ones: the default listener,
/// or else the first plain MQTT `listener`, becomes the main one.
fn place_listeners(
    out: &mut MosquittoConf,
    default: Listener,
    listeners: Vec<Listener>,
    path: &Path,
) {
    let has_default =
        default.port.is_some() || default.bind.is_some() || default.cert_file.is_some();
    let mut rest: Vec<Listener> = Vec::new();
    let mut main: Option<Listener> = None;
    if has_default {
        if default.kind() == ListenerKind::Tcp {
            main = Some(default);
        } else {
            rest.push(default);
        }
    }
    for l in listeners {
        if main.is_none() && l.kind() == ListenerKind::Tcp {
            main = Some(l);
        } else {
            rest.push(l);
        }
    }
    match &main {
        Some(m) => {
            out.file.port = m.port.or(Some(1883));
            out.file.bind = m.bind.or(Some(IpAddr::from([127, 0, 0, 1])));
            if m.ca_file.is_some() || m.require_certificate {
                out.warnings.push(format!(
                    "{}:{}: cafile/require_certificate on a listener without certfile have no effect",
                    path.display(),
                    m.line
                ));
            }
        }
        // Like mosquitto, which listens on localhost:1883 when no listener is configured.
        None if rest.is_empty() => {}
        None => out.warnings.push(format!(
            "{}: no plain MQTT listener; Roost also listens on its default 127.0.0.1:1883",
            path.display()
        )),
    }
    out.file.listener = rest.iter().map(Listener::to_config).collect();
}

/// An address: an IP address, or a host name resolved now (its first address).
pub fn resolve(host: &str) -> Option<IpAddr> {
    if let Ok(ip) = host.parse() {
        return Some(ip);
    }
    (host, 0).to_socket_addrs().ok()?.next().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn read(text: &str) -> MosquittoConf {
        parse_mosquitto(text, Path::new("/etc/mosquitto/mosquitto.conf")).expect("reads")
    }

    #[test]
    fn detects_the_format() {
        let conf = Path::new("/etc/mosquitto/mosquitto.conf");
        let toml = Path::new("roost.toml");
        assert!(looks_like_mosquitto("", conf));
        assert!(looks_like_mosquitto("# c\nlistener 1883\n", toml));
        assert!(!looks_like_mosquitto("# c\nport = 1883\n", toml));
        assert!(!looks_like_mosquitto("[http]\nport = 8080\n", toml));
    }

    #[test]
    fn maps_the_common_keys() {
        let c = read(
            "# a typical file\n\
             per_listener_settings false\n\
             listener 1883 0.0.0.0\n\
             listener 8883\n\
             certfile /etc/mosquitto/certs/server.crt\n\
             keyfile /etc/mosquitto/certs/server.key\n\
             cafile /etc/mosquitto/ca.crt\n\
             require_certificate true\n\
             use_identity_as_username true\n\
             listener 9001\n\
             protocol websockets\n\
             allow_anonymous false\n\
             password_file /etc/mosquitto/passwd\n\
             acl_file /etc/mosquitto/acl\n\
             max_queued_messages 5000\n\
             max_inflight_messages 0\n\
             max_packet_size 65536\n\
             max_keepalive 120\n\
             max_connections -1\n\
             persistence true\n\
             persistence_location /var/lib/mosquitto/\n\
             sys_interval 30\n\
             log_dest syslog\n",
        );
        let f = &c.file;
        assert_eq!(f.port, Some(1883));
        assert_eq!(f.bind, Some(IpAddr::from([0, 0, 0, 0])));
        assert_eq!(f.listener.len(), 2);
        assert_eq!(f.listener[0].kind, ListenerKind::Tls);
        assert_eq!(f.listener[0].port, 8883);
        assert!(f.listener[0].require_certificate && f.listener[0].use_identity_as_username);
        assert_eq!(f.listener[1].kind, ListenerKind::Ws);
        assert_eq!(f.allow_anonymous, Some(false));
        assert_eq!(f.max_queued_messages, Some(5000));
        assert_eq!(f.max_inflight_messages, Some(u16::MAX));
        assert_eq!(f.max_packet_size, Some(65536));
        assert_eq!(f.max_keepalive, Some(120));
        assert_eq!(f.max_connections, Some(0));
        assert_eq!(f.in_memory, Some(false));
        assert_eq!(f.data_dir, Some(PathBuf::from("/var/lib/mosquitto/")));
        assert_eq!(f.sys_interval, Some(30));
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert!(
            c.warnings[0].contains(":2: `per_listener_settings`"),
            "{:?}",
            c.warnings
        );
        assert!(
            c.warnings[1].contains(":23: `log_dest`"),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn the_default_listener_and_unknown_keys() {
        let c = read(
            "port 1884\nbind_address localhost\nfrobnicate yes\nconnection b1\naddress x:1883\ntopic # out 1\n",
        );
        assert_eq!(c.file.port, Some(1884));
        assert_eq!(c.file.bind, Some(IpAddr::from([127, 0, 0, 1])));
        assert!(
            c.warnings[0].contains(":3: `frobnicate` ignored"),
            "{:?}",
            c.warnings
        );
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert_eq!(c.file.bridge.len(), 1);
    }

    /// A bridge of `parse_mosquitto(text)`'s, or its error as text.
    fn bridges(text: &str) -> Result<(Vec<BridgeConfig>, Vec<String>), String> {
        parse_mosquitto(text, Path::new("/etc/mosquitto/m.conf"))
            .map(|c| (c.file.bridge, c.warnings))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn connection_blocks_become_bridges() {
        use crate::config::BridgeDirection::{Both, In, Out};
        let (b, warnings) = bridges(
            "listener 1883\n\
             connection cloud\n\
             address broker.example:8883 [2001:db8::1] 2001:db8::2:1885\n\
             bridge_protocol_version mqttv50\n\
             cleansession true\n\
             remote_clientid edge-1\n\
             local_clientid local-edge-1\n\
             remote_username edge\n\
             remote_password s3cret with spaces\n\
             try_private false\n\
             keepalive_interval 30\n\
             restart_timeout 10 120\n\
             bridge_cafile certs/ca.pem\n\
             bridge_certfile certs/client.pem\n\
             bridge_keyfile certs/client.key\n\
             bridge_insecure true\n\
             topic sensors/# out 1\n\
             topic cmd/+ in\n\
             topic # both 2 edge/ cloud/edge-1/\n\
             topic \"\" in 0 local/state remote/state\n\
             topic logs/# out 0 \"\" remote/\n\
             listener 9001\n\
             protocol websockets\n\
             topic late/# out 1 # still the same connection, as in mosquitto\n\
             connection second\n\
             addresses other.example\n\
             topic a/b\n",
        )
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(b.len(), 2);
        let cloud = &b[0];
        assert_eq!(cloud.name, "cloud");
        let addresses: Vec<String> = cloud.addresses.iter().map(ToString::to_string).collect();
        assert_eq!(
            addresses,
            [
                "broker.example:8883",
                "[2001:db8::1]:1883",
                "[2001:db8::2]:1885"
            ],
            "1883 unless given, TLS or not, as in mosquitto"
        );
        assert_eq!(cloud.protocol, BridgeProtocol::Mqtt5);
        assert!(cloud.clean_session && !cloud.try_private);
        assert_eq!(cloud.remote_clientid.as_deref(), Some("edge-1"));
        assert_eq!(cloud.local_clientid.as_deref(), Some("local-edge-1"));
        assert_eq!(cloud.remote_username.as_deref(), Some("edge"));
        assert_eq!(cloud.remote_password.as_deref(), Some("s3cret with spaces"));
        assert_eq!(cloud.keepalive, 30);
        assert_eq!(cloud.restart_base, Duration::from_secs(10));
        assert_eq!(cloud.restart_cap, Some(Duration::from_secs(120)));
        assert_eq!(
            cloud.tls,
            Some(BridgeTls {
                ca_file: PathBuf::from("certs/ca.pem"),
                cert_file: Some(PathBuf::from("certs/client.pem")),
                key_file: Some(PathBuf::from("certs/client.key")),
                insecure: true,
            })
        );
        let topics: Vec<(&str, _, u8, &str, &str)> = cloud
            .topics
            .iter()
            .map(|t| {
                (
                    t.pattern.as_str(),
                    t.direction,
                    t.qos as u8,
                    t.local_prefix.as_str(),
                    t.remote_prefix.as_str(),
                )
            })
            .collect();
        assert_eq!(
            topics,
            [
                ("sensors/#", Out, 1, "", ""),
                ("cmd/+", In, 0, "", ""),
                ("#", Both, 2, "edge/", "cloud/edge-1/"),
                ("", In, 0, "local/state", "remote/state"),
                ("logs/#", Out, 0, "", "remote/"),
                ("late/#", Out, 1, "", ""),
            ]
        );
        // mosquitto's defaults.
        let second = &b[1];
        let expected = BridgeConfig::new("second", "other.example", 1883, second.topics.clone());
        assert_eq!(*second, expected);
        assert_eq!(second.topics[0].pattern, "a/b");
    }

    #[test]
    fn bridges_reach_the_config_with_paths_relative_to_the_file() {
        let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs");
        let conf = certs.join("bridge.conf");
        let c = parse_mosquitto(
            "connection b\naddress h\ntopic #\nbridge_cafile ca.pem\n",
            &conf,
        )
        .unwrap();
        let mut config = crate::config::Config::default();
        c.file.apply(&mut config, Some(&conf));
        config.validate().expect("valid");
        let tls = config.bridges[0].tls.as_ref().unwrap();
        assert_eq!(tls.ca_file, certs.join("ca.pem"));
    }

    #[test]
    fn bridge_keys_outside_a_connection_are_an_error() {
        for line in [
            "topic a/# out 1",
            "address h:1883",
            "bridge_cafile ca.pem",
            "try_private false",
            "notifications false",
            "bridge_frobnicate 1",
        ] {
            let e = bridges(&format!(
                "listener 1883\n{line}\nconnection b\naddress h\ntopic #\n"
            ))
            .unwrap_err();
            let key = line.split(' ').next().unwrap();
            assert!(
                e.contains(&format!("m.conf:2: `{key}`"))
                    && e.contains("after a `connection NAME`"),
                "{e}"
            );
        }
    }

    #[test]
    fn bridge_keys_roost_does_not_use_are_warned_about_one_by_one() {
        let (b, warnings) = bridges(
            "connection b\n\
             address h\n\
             topic #\n\
             notifications false\n\
             notification_topic x/y\n\
             start_type lazy\n\
             idle_timeout 60\n\
             round_robin true\n\
             local_username u\n\
             bridge_attempt_unsubscribe false\n\
             bridge_outgoing_retain false\n\
             bridge_tls_version tlsv1.2\n\
             bridge_bind_address 10.0.0.1\n\
             bridge_max_packet_size 1000\n\
             bridge_cafile ca.pem\n\
             bridge_capath /etc/ssl/certs\n\
             bridge_some_future_key 1\n\
             clientid old-style\n\
             keepalive_interval 2\n\
             restart_timeout 0\n",
        )
        .unwrap();
        let expected = [
            (4, "notifications", "ignored: bridge state notifications"),
            (
                5,
                "notification_topic",
                "ignored: bridge state notifications",
            ),
            (6, "start_type", "ignored: a bridge always starts"),
            (7, "idle_timeout", "ignored: only for start_type lazy"),
            (8, "round_robin", "ignored: not supported"),
            (9, "local_username", "ignored: the bridge does not log in"),
            (
                10,
                "bridge_attempt_unsubscribe",
                "ignored: the bridge does not unsubscribe",
            ),
            (
                11,
                "bridge_outgoing_retain",
                "ignored: the RETAIN flag always crosses",
            ),
            (12, "bridge_tls_version", "ignored: TLS 1.2 and 1.3"),
            (13, "bridge_bind_address", "ignored: the system picks"),
            (14, "bridge_max_packet_size", "ignored: not supported"),
            (
                16,
                "bridge_capath",
                "ignored: not supported: use bridge_cafile",
            ),
            (
                17,
                "bridge_some_future_key",
                "ignored: a bridge setting Roost does not support",
            ),
            (18, "clientid", "is read as remote_clientid"),
            (19, "keepalive_interval", "5 is used"),
            (20, "restart_timeout", "1 is used"),
        ];
        assert_eq!(warnings.len(), expected.len(), "{warnings:#?}");
        for (warning, (line, key, why)) in warnings.iter().zip(expected) {
            assert!(
                warning.starts_with(&format!("/etc/mosquitto/m.conf:{line}: `{key}` "))
                    && warning.contains(why),
                "{warning}"
            );
        }
        assert_eq!(b[0].remote_clientid.as_deref(), Some("old-style"));
        assert_eq!(b[0].keepalive, 5);
        assert_eq!(b[0].restart_base, Duration::from_secs(1));
        assert_eq!(b[0].restart_cap, None);
    }

    #[test]
    fn bad_bridge_settings_name_the_line() {
        for (text, says) in [
            ("connection\n", "1: `connection`: expected a name"),
            (
                "connection my bridge\n",
                "1: `connection`: expected one name",
            ),
            (
                "connection b/1\n",
                "1: `connection`: `b/1`: a bridge name may only",
            ),
            (
                "connection b\naddress h\ntopic #\nconnection b\n",
                "4: `connection`: a bridge named `b` is configured already",
            ),
            (
                "connection b\ntopic #\n",
                "1: `connection`: bridge `b` has no `address` line",
            ),
            (
                "connection b\naddress h\n",
                "1: `connection`: bridge `b` has no `topic` line",
            ),
            (
                "connection b\naddress\n",
                "2: `address`: expected host[:port]",
            ),
            (
                "connection b\naddress h:x\n",
                "2: `address`: `h:x`: the port must be",
            ),
            (
                "connection b\naddress h\naddresses i\n",
                "3: `addresses`: the addresses of this connection are set already, at line 2",
            ),
            (
                "connection b\ntopic a/# sideways\n",
                "2: `topic`: unknown direction `sideways`",
            ),
            (
                "connection b\ntopic a/# in 3\n",
                "2: `topic`: QoS `3` must be 0, 1 or 2",
            ),
            (
                "connection b\ntopic a/# in 1 l/+ r/\n",
                "2: `topic`: local prefix: `l/+` must be",
            ),
            (
                "connection b\ntopic a/#/b\n",
                "2: `topic`: pattern: `a/#/b` is not a valid Topic Filter",
            ),
            (
                "connection b\ntopic \"\" in 1 l/\n",
                "2: `topic`: remote prefix: must be set when the pattern is empty",
            ),
            (
                "connection b\ncleansession maybe\n",
                "2: `cleansession`: expected true or false",
            ),
            (
                "connection b\nbridge_protocol_version mqttv5\n",
                "2: `bridge_protocol_version`: expected mqttv31, mqttv311 or mqttv50",
            ),
            (
                "connection b\nkeepalive_interval 70000\n",
                "2: `keepalive_interval`: must be at most 65535",
            ),
            (
                "connection b\nrestart_timeout 30 10\n",
                "2: `restart_timeout`: the cap",
            ),
            (
                "connection b\nrestart_timeout 1 2 3\n",
                "2: `restart_timeout`: expected one or two",
            ),
            (
                "connection b\nremote_password\n",
                "2: `remote_password`: expected a value",
            ),
            (
                "connection b\naddress h\ntopic #\nbridge_certfile c.pem\nbridge_keyfile c.key\n",
                "4: `bridge_certfile`: needs bridge_cafile",
            ),
            (
                "connection b\naddress h\ntopic #\nbridge_insecure true\n",
                "4: `bridge_insecure`: needs bridge_cafile",
            ),
            (
                "connection b\naddress h\ntopic #\nbridge_capath /etc/ssl/certs\n",
                "4: `bridge_capath`: is not supported, and without bridge_cafile",
            ),
            (
                "connection b\naddress h\ntopic #\nbridge_psk 0123\nbridge_identity me\n",
                "5: `bridge_identity`: is not supported, and without bridge_cafile",
            ),
            (
                "connection b\naddress h\ntopic #\nbridge_cafile ca.pem\nbridge_certfile c.pem\n",
                "5: `bridge_certfile`: needs bridge_keyfile too",
            ),
        ] {
            let e = bridges(text).expect_err(text);
            assert!(e.contains(&format!("m.conf:{says}")), "{text:?}: {e}");
        }
    }

    #[test]
    fn mosquitto_2_defaults_carry_over() {
        // A listener without an address binds every interface; with a listener configured,
        // anonymous clients are refused unless allowed; 0 means no packet size limit.
        let c = read("\u{feff}listener 1883\nmax_packet_size 0\n");
        assert_eq!(c.file.bind, Some(IpAddr::from([0, 0, 0, 0])));
        assert_eq!(c.file.allow_anonymous, Some(false));
        assert_eq!(
            c.file.max_packet_size,
            Some(super::super::MQTT_MAX_PACKET_SIZE)
        );
        assert!(
            c.file.websocket_max_message_bytes >= Some(super::super::MQTT_MAX_PACKET_SIZE as usize)
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        // Local only mode: no listener, no decision taken.
        assert_eq!(read("persistence true\n").file.allow_anonymous, None);
        let e = parse_mosquitto("listener 1883 0.0.0.0 # public\n", Path::new("m.conf"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("m.conf:1"), "{e}");
    }

    #[test]
    fn include_dir_is_read_where_it_stands() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        std::fs::write(
            dir.path().join("conf.d/a.conf"),
            "max_keepalive 200\nsys_interval 5\n",
        )
        .unwrap();
        let main = dir.path().join("mosquitto.conf");
        let text = "include_dir conf.d\nmax_keepalive 100\n";
        let c = parse_mosquitto(text, &main).unwrap();
        assert_eq!(c.file.max_keepalive, Some(100), "the later line wins");
        assert_eq!(c.file.sys_interval, Some(5));
    }

    #[test]
    fn bad_values_name_the_line_and_key() {
        let e = parse_mosquitto("listener 1883\nmax_keepalive soon\n", Path::new("m.conf"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("m.conf:2") && e.contains("max_keepalive"), "{e}");
        let e = parse_mosquitto("allow_anonymous maybe\n", Path::new("m.conf"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("true or false"), "{e}");
    }
}
