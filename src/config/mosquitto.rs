//! Reading a mosquitto.conf: the common subset of its keys maps onto Roost's settings (see the
//! README's table); every other key is reported once, with its line, and ignored. A value
//! that cannot be read is an error naming the file, the line and the key.

use std::net::{IpAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use super::{ConfigError, FileConfig, ListenerConfig, ListenerKind};

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
    ("connection", "bridges are not supported yet"),
    ("address", "bridges are not supported yet"),
    ("addresses", "bridges are not supported yet"),
    ("topic", "bridges are not supported yet"),
];

/// Reads the mosquitto.conf text of the file `path`, with the `*.conf` files of its
/// `include_dir` (in name order, as mosquitto reads them).
pub fn parse_mosquitto(text: &str, path: &Path) -> Result<MosquittoConf, ConfigError> {
    let mut state = State::default();
    state.read(text, path, 0)?;
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
    bridge_warned: bool,
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
            let State {
                out,
                default,
                listeners,
                bridge_warned,
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
                    .map(|(_, why)| *why);
                let bridge = why == Some("bridges are not supported yet")
                    || key.starts_with("bridge_")
                    || key.starts_with("remote_")
                    || matches!(key, "cleansession" | "local_clientid" | "notifications" | "try_private" | "restart_timeout" | "keepalive_interval" | "start_type" | "round_robin");
                if bridge {
                    if !*bridge_warned {
                        out.warnings.push(format!(
                            "{}:{line}: `{key}`: bridges are not supported yet; every bridge key is ignored",
                            path.display()
                        ));
                        *bridge_warned = true;
                    }
                    continue;
                }
                let why = why.unwrap_or("not a key Roost knows");
                out.warnings.push(format!("{}:{line}: `{key}` ignored: {why}", path.display()));
            }
        }
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
        assert!(
            c.warnings[1].contains("bridges are not supported yet"),
            "{:?}",
            c.warnings
        );
        assert_eq!(
            c.warnings.len(),
            2,
            "one warning for all bridge keys: {:?}",
            c.warnings
        );
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
