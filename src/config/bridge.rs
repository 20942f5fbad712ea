//! Bridges: connections from this broker to remote brokers, each forwarding the messages of
//! some topics one way or both ways.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{ConfigError, readable_file};
use crate::codec::QoS;

/// Which way a bridge topic's messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BridgeDirection {
    /// From this broker to the remote one.
    Out,
    /// From the remote broker to this one.
    In,
    /// Both ways.
    Both,
}

impl BridgeDirection {
    /// The direction's name in a `topic` line: `out`, `in` or `both`.
    pub fn name(self) -> &'static str {
        match self {
            BridgeDirection::Out => "out",
            BridgeDirection::In => "in",
            BridgeDirection::Both => "both",
        }
    }

    /// The direction named `name` (`out`, `in` or `both`, in any case, as mosquitto reads
    /// them).
    pub fn from_name(name: &str) -> Option<BridgeDirection> {
        [
            BridgeDirection::Out,
            BridgeDirection::In,
            BridgeDirection::Both,
        ]
        .into_iter()
        .find(|d| d.name().eq_ignore_ascii_case(name))
    }

    /// Messages go from this broker to the remote one.
    pub fn outgoing(self) -> bool {
        matches!(self, BridgeDirection::Out | BridgeDirection::Both)
    }

    /// Messages go from the remote broker to this one.
    pub fn incoming(self) -> bool {
        matches!(self, BridgeDirection::In | BridgeDirection::Both)
    }
}

/// One `topic` line of a bridge (mosquitto's `topic PATTERN [DIRECTION [QOS [LOCAL_PREFIX
/// REMOTE_PREFIX]]]`): the Topic Filter `pattern` is subscribed to as `local_prefix + pattern`
/// on this broker and as `remote_prefix + pattern` on the remote one; a message's topic keeps
/// what follows the prefix and gets the other side's prefix in its place.
///
/// An empty `pattern` with prefixes maps one topic: `local_prefix` to `remote_prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeTopic {
    /// Topic Filter, wildcards allowed, relative to the prefixes.
    pub pattern: String,
    /// Which way messages go.
    pub direction: BridgeDirection,
    /// Highest QoS of the subscription on the side messages come from.
    pub qos: QoS,
    /// Put in front of `pattern` on this broker (no wildcards).
    pub local_prefix: String,
    /// Put in front of `pattern` on the remote broker (no wildcards).
    pub remote_prefix: String,
}

/// How a `topic` line is written: `PATTERN [in|out|both [QOS [LOCAL_PREFIX REMOTE_PREFIX]]]`.
const TOPIC_LINE: &str = "PATTERN [in|out|both [QOS [LOCAL_PREFIX REMOTE_PREFIX]]]";

/// A word of a `topic` line: `""` (two double-quote characters) stands for the empty string.
fn unquote(word: &str) -> &str {
    if word == "\"\"" { "" } else { word }
}

impl BridgeTopic {
    /// The Topic Filter on this broker.
    pub fn local_filter(&self) -> String {
        format!("{}{}", self.local_prefix, self.pattern)
    }

    /// The Topic Filter on the remote broker.
    pub fn remote_filter(&self) -> String {
        format!("{}{}", self.remote_prefix, self.pattern)
    }

    /// Reads a `topic` line as mosquitto.conf writes it, `PATTERN [in|out|both [QOS
    /// [LOCAL_PREFIX REMOTE_PREFIX]]]`, words separated by whitespace. The direction defaults
    /// to `out`, the QoS to 0 and the prefixes to empty; a word `""` is the empty string (an
    /// empty pattern, or no prefix). As in mosquitto, a word starting with `#` after the
    /// direction starts a comment (a prefix cannot contain `#`), and a local prefix may be
    /// given without a remote one.
    ///
    /// Only the form is checked here: see [`BridgeTopic::check`] for the rules on the
    /// pattern and the prefixes.
    pub fn parse(line: &str) -> Result<BridgeTopic, String> {
        let mut words = line.split_whitespace();
        let Some(pattern) = words.next() else {
            return Err(format!("no pattern: expected {TOPIC_LINE}"));
        };
        let mut topic = BridgeTopic {
            pattern: unquote(pattern).to_string(),
            direction: BridgeDirection::Out,
            qos: QoS::AtMostOnce,
            local_prefix: String::new(),
            remote_prefix: String::new(),
        };
        if let Some(word) = words.next() {
            topic.direction = BridgeDirection::from_name(word)
                .ok_or_else(|| format!("unknown direction `{word}`: expected in, out or both"))?;
        }
        // After the direction, the rest of the line is a comment from a word starting with
        // `#`.
        let mut words = words.take_while(|w| !w.starts_with('#'));
        if let Some(word) = words.next() {
            topic.qos = word
                .parse::<u8>()
                .ok()
                .and_then(QoS::from_u8)
                .ok_or_else(|| format!("QoS `{word}` must be 0, 1 or 2"))?;
        }
        if let Some(word) = words.next() {
            topic.local_prefix = unquote(word).to_string();
        }
        if let Some(word) = words.next() {
            topic.remote_prefix = unquote(word).to_string();
        }
        if let Some(word) = words.next() {
            return Err(format!(
                "`{word}` is one word too many: expected {TOPIC_LINE}"
            ));
        }
        Ok(topic)
    }

    /// Checks the rules of mosquitto for a topic line: the prefixes are the start of topic
    /// names (no `+`, `#` or NUL); the pattern is a Topic Filter, or empty when both prefixes
    /// are set, which then map one topic name to another; and each side's filter (prefix +
    /// pattern) is a valid Topic Filter. The error names the field at fault (`pattern`,
    /// `local_prefix` or `remote_prefix`) and says why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        for (field, prefix) in [
            ("local_prefix", &self.local_prefix),
            ("remote_prefix", &self.remote_prefix),
        ] {
            if prefix.contains(['+', '#', '\0']) {
                return Err((
                    field,
                    format!("`{prefix}` must be the start of a topic name: no '+', '#' or NUL"),
                ));
            }
        }
        if self.pattern.is_empty() {
            for (field, prefix) in [
                ("local_prefix", &self.local_prefix),
                ("remote_prefix", &self.remote_prefix),
            ] {
                if prefix.is_empty() {
                    return Err((
                        field,
                        "must be set when the pattern is empty: the two prefixes are then \
                         the topic names mapped onto each other"
                            .to_string(),
                    ));
                }
            }
            return Ok(());
        }
        if !crate::topic::valid_topic_filter(&self.pattern) {
            return Err((
                "pattern",
                format!(
                    "`{}` is not a valid Topic Filter ('+' and '#' only as a whole level, '#' \
                     only last, no NUL)",
                    self.pattern
                ),
            ));
        }
        for (field, prefix, filter) in [
            ("local_prefix", &self.local_prefix, self.local_filter()),
            ("remote_prefix", &self.remote_prefix, self.remote_filter()),
        ] {
            if !crate::topic::valid_topic_filter(&filter) {
                return Err((
                    field,
                    format!(
                        "`{prefix}` followed by the pattern `{}` gives `{filter}`, which is not \
                         a valid Topic Filter (a prefix usually ends with '/')",
                        self.pattern
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The MQTT version a bridge speaks to the remote broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BridgeProtocol {
    /// MQTT 3.1 (`mqttv31`).
    Mqtt31,
    /// MQTT 3.1.1 (`mqttv311`, the default).
    Mqtt311,
    /// MQTT 5.0 (`mqttv50`).
    Mqtt5,
}

impl BridgeProtocol {
    /// The version's name in the configuration: `mqttv31`, `mqttv311` or `mqttv50`.
    pub fn name(self) -> &'static str {
        match self {
            BridgeProtocol::Mqtt31 => "mqttv31",
            BridgeProtocol::Mqtt311 => "mqttv311",
            BridgeProtocol::Mqtt5 => "mqttv50",
        }
    }

    /// The version named `name` (`mqttv31`, `mqttv311` or `mqttv50`).
    pub fn from_name(name: &str) -> Option<BridgeProtocol> {
        [
            BridgeProtocol::Mqtt31,
            BridgeProtocol::Mqtt311,
            BridgeProtocol::Mqtt5,
        ]
        .into_iter()
        .find(|p| p.name() == name)
    }
}

/// TLS towards the remote broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeTls {
    /// PEM file of the CA certificates the remote broker's certificate must chain to. TLS is
    /// on when it is set: an empty path stands for `certfile`, `keyfile` or `insecure` set
    /// without `cafile`, which [`crate::config::Config::validate`] refuses.
    pub ca_file: PathBuf,
    /// PEM client certificate chain, sent when the remote asks for one.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub key_file: Option<PathBuf>,
    /// Do not check that the certificate names the host connected to (the chain is still
    /// verified). For tests and private networks only.
    pub insecure: bool,
}

/// A remote broker's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeAddress {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl BridgeAddress {
    /// Reads `host[:port]`; `default_port` when the port is left out. An IPv6 address goes in
    /// brackets: `[::1]` or `[::1]:1883`.
    pub fn parse(text: &str, default_port: u16) -> Result<BridgeAddress, String> {
        let port = |p: &str| match p.parse::<u16>() {
            Ok(port) if port > 0 => Ok(port),
            _ => Err(format!(
                "`{text}`: the port must be a number from 1 to 65535"
            )),
        };
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, rest) = rest
                .split_once(']')
                .ok_or_else(|| format!("`{text}`: no ']' after the IPv6 address"))?;
            let port = match rest {
                "" => default_port,
                _ => match rest.strip_prefix(':') {
                    Some(p) => port(p)?,
                    None => return Err(format!("`{text}`: expected `[address]:port`")),
                },
            };
            (host, port)
        } else if text.matches(':').count() > 1 {
            return Err(format!(
                "`{text}`: an IPv6 address goes in brackets, e.g. `[::1]:1883`"
            ));
        } else {
            match text.split_once(':') {
                Some((host, p)) => (host, port(p)?),
                None => (text, default_port),
            }
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || "[]/".contains(c)) {
            return Err(format!("`{text}`: expected host[:port]"));
        }
        Ok(BridgeAddress {
            host: host.to_string(),
            port,
        })
    }
}

impl std::fmt::Display for BridgeAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// One bridge: an outgoing client connection to a remote broker and the topics it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    /// Name (mosquitto's `connection`): in logs, metrics, `$SYS` and the default client ids.
    pub name: String,
    /// Remote addresses, tried in turn.
    pub addresses: Vec<BridgeAddress>,
    /// The MQTT version spoken to the remote broker.
    pub protocol: BridgeProtocol,
    /// Clean session / clean start towards the remote broker, and for the local session
    /// that holds outgoing messages. With `false` (the default), messages wait in both
    /// brokers' durable sessions while the link is down.
    pub clean_session: bool,
    /// Client id on this broker; `None`: `local.` + the remote client id.
    pub local_clientid: Option<String>,
    /// Client id on the remote broker; `None`: `<host name>.<name>`.
    pub remote_clientid: Option<String>,
    /// User name on the remote broker.
    pub remote_username: Option<String>,
    /// Password on the remote broker.
    pub remote_password: Option<String>,
    /// Connect with the bridge bit set (3.1 and 3.1.1), so that a remote that knows it does
    /// not send this bridge's messages back; without it (refused), plain 3.1.1 is used.
    pub try_private: bool,
    /// First wait before reconnecting.
    pub restart_base: Duration,
    /// `Some`: waits grow at random (jittered backoff) from `restart_base` up to this cap;
    /// `None`: every wait is `restart_base`.
    pub restart_cap: Option<Duration>,
    /// Keep alive towards the remote broker, in seconds.
    pub keepalive: u16,
    /// TLS, when configured.
    pub tls: Option<BridgeTls>,
    /// The topics carried, at least one.
    pub topics: Vec<BridgeTopic>,
    /// Most outgoing QoS 1/2 messages unacknowledged by the remote at once (further capped
    /// by the remote's Receive Maximum in MQTT 5.0).
    pub max_inflight: u16,
}

impl BridgeConfig {
    /// The client id on the remote broker: `remote_clientid`, or `<host name>.<name>`.
    pub fn remote_client_id(&self) -> String {
        self.remote_clientid
            .clone()
            .unwrap_or_else(|| format!("{}.{}", host_name(), self.name))
    }

    /// The client id of the bridge's Session on this broker: `local_clientid`, or `local.`
    /// and the remote client id.
    pub fn local_client_id(&self) -> String {
        self.local_clientid
            .clone()
            .unwrap_or_else(|| format!("local.{}", self.remote_client_id()))
    }

    /// A bridge named `name` to `host:port` carrying `topics`, with mosquitto's defaults:
    /// MQTT 3.1.1, persistent sessions, `try_private`, keep alive 60 s, reconnect waits from
    /// 5 s to 30 s, 20 messages in flight.
    pub fn new(name: &str, host: &str, port: u16, topics: Vec<BridgeTopic>) -> BridgeConfig {
        BridgeConfig {
            name: name.to_string(),
            addresses: vec![BridgeAddress {
                host: host.to_string(),
                port,
            }],
            protocol: BridgeProtocol::Mqtt311,
            clean_session: false,
            local_clientid: None,
            remote_clientid: None,
            remote_username: None,
            remote_password: None,
            try_private: true,
            restart_base: Duration::from_secs(5),
            restart_cap: Some(Duration::from_secs(30)),
            keepalive: 60,
            tls: None,
            topics,
            max_inflight: 20,
        }
    }
}

/// The longest string MQTT can carry (client ids, user names, passwords).
const MQTT_STRING_MAX: usize = 65_535;

/// True if `name` can name a bridge: at least one character, only ASCII letters, digits, `_`,
/// `.` and `-` (it appears in client ids, logs, metrics and `$SYS` topics).
pub fn valid_bridge_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl BridgeConfig {
    /// How errors name this bridge, the `index`-th: `bridge.NAME`, or `bridge[INDEX]` while
    /// the name is not a valid one.
    pub fn key_prefix(&self, index: usize) -> String {
        if valid_bridge_name(&self.name) {
            format!("bridge.{}", self.name)
        } else {
            format!("bridge[{index}]")
        }
    }

    /// Checks this bridge, the `index`-th: its name, addresses, topics, limits, TLS settings
    /// and that the files named exist. Errors name the key as `bridge.NAME.KEY` (see
    /// [`BridgeConfig::key_prefix`]). That names are unique is checked by
    /// [`super::Config::validate`].
    pub(super) fn validate(&self, index: usize) -> Result<(), ConfigError> {
        let prefix = self.key_prefix(index);
        let key = |k: &str| format!("{prefix}.{k}");
        if self.name.is_empty() {
            return Err(ConfigError::invalid(key("name"), "must be set"));
        }
        if !valid_bridge_name(&self.name) {
            return Err(ConfigError::invalid(
                key("name"),
                format!(
                    "`{}` may only contain ASCII letters, digits, '_', '.' and '-'",
                    self.name
                ),
            ));
        }
        if self.addresses.is_empty() {
            return Err(ConfigError::invalid(
                key("address"),
                "must name at least one remote broker (host:port)",
            ));
        }
        for a in &self.addresses {
            if a.host.is_empty() || a.port == 0 {
                return Err(ConfigError::invalid(
                    key("address"),
                    format!("`{a}` needs a host and a port from 1 to 65535"),
                ));
            }
        }
        for (field, value) in [
            ("local_clientid", &self.local_clientid),
            ("remote_clientid", &self.remote_clientid),
            ("remote_username", &self.remote_username),
        ] {
            match value.as_deref() {
                Some("") if field != "remote_username" => {
                    return Err(ConfigError::invalid(
                        key(field),
                        "must not be empty (leave it out for the default)",
                    ));
                }
                Some(v) if v.len() > MQTT_STRING_MAX || v.contains('\0') => {
                    return Err(ConfigError::invalid(
                        key(field),
                        format!("must be at most {MQTT_STRING_MAX} bytes, without NUL"),
                    ));
                }
                _ => {}
            }
        }
        if self
            .remote_password
            .as_ref()
            .is_some_and(|p| p.len() > MQTT_STRING_MAX)
        {
            return Err(ConfigError::invalid(
                key("remote_password"),
                format!("must be at most {MQTT_STRING_MAX} bytes"),
            ));
        }
        if self.max_inflight == 0 {
            return Err(ConfigError::invalid(
                key("max_inflight"),
                "must be at least 1",
            ));
        }
        if self.restart_base < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                key("restart_timeout"),
                "the wait before reconnecting must be at least 1 second",
            ));
        }
        if let Some(cap) = self.restart_cap
            && cap < self.restart_base
        {
            return Err(ConfigError::invalid(
                key("restart_timeout"),
                format!(
                    "the cap ({} s) must not be below the base ({} s): [base, cap]",
                    cap.as_secs(),
                    self.restart_base.as_secs()
                ),
            ));
        }
        if let Some(tls) = &self.tls {
            self.validate_tls(tls, &key)?;
        }
        if self.topics.is_empty() {
            return Err(ConfigError::invalid(
                key("topic"),
                "must list at least one topic the bridge carries",
            ));
        }
        for (i, topic) in self.topics.iter().enumerate() {
            topic.check().map_err(|(field, reason)| {
                ConfigError::invalid(key(&format!("topic[{i}].{field}")), reason)
            })?;
        }
        Ok(())
    }

    fn validate_tls(
        &self,
        tls: &BridgeTls,
        key: &dyn Fn(&str) -> String,
    ) -> Result<(), ConfigError> {
        if tls.ca_file.as_os_str().is_empty() {
            let given = if tls.cert_file.is_some() {
                "certfile"
            } else if tls.key_file.is_some() {
                "keyfile"
            } else {
                "insecure"
            };
            return Err(ConfigError::invalid(
                key(given),
                "needs cafile: TLS is on only when cafile is set",
            ));
        }
        readable_file(&key("cafile"), &tls.ca_file)?;
        match (&tls.cert_file, &tls.key_file) {
            (Some(cert), Some(private)) => {
                readable_file(&key("certfile"), cert)?;
                readable_file(&key("keyfile"), private)?;
            }
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    key("keyfile"),
                    "must be set with certfile",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    key("certfile"),
                    "must be set with keyfile",
                ));
            }
            (None, None) => {}
        }
        // The files are read as the bridge will read them: PEM, a usable CA, a key that
        // belongs to the certificate. A mistake stops the broker here, not the bridge later.
        if let Err(e) = crate::bridge::tls_client_config(tls) {
            return Err(ConfigError::invalid(key("cafile"), e.to_string()));
        }
        Ok(())
    }
}

/// Reads the `[[bridge]]` tables of the TOML file (the `bridge` key of
/// [`super::FileConfig`]). The form of each value is checked here, so that an error points at
/// its line: addresses, `protocol_version`, `restart_timeout`, topic lines and tables, QoS and
/// direction. Everything else is left to [`super::Config::validate`].
pub(super) fn deserialize_bridges<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<BridgeConfig>, D::Error> {
    let tables = Vec::<FileBridge>::deserialize(d)?;
    Ok(tables.into_iter().map(FileBridge::into_config).collect())
}

/// A `[[bridge]]` table as written in the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBridge {
    #[serde(default)]
    name: String,
    #[serde(default)]
    address: FileAddresses,
    #[serde(default, deserialize_with = "protocol_version")]
    protocol_version: Option<BridgeProtocol>,
    #[serde(default)]
    cleansession: bool,
    local_clientid: Option<String>,
    remote_clientid: Option<String>,
    remote_username: Option<String>,
    remote_password: Option<String>,
    #[serde(default = "default_try_private")]
    try_private: bool,
    #[serde(default = "default_keepalive")]
    keepalive_interval: u16,
    #[serde(default = "default_max_inflight")]
    max_inflight: u16,
    restart_timeout: Option<RestartTimeout>,
    cafile: Option<PathBuf>,
    certfile: Option<PathBuf>,
    keyfile: Option<PathBuf>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    topic: FileTopics,
}

fn default_try_private() -> bool {
    true
}

fn default_keepalive() -> u16 {
    60
}

fn default_max_inflight() -> u16 {
    20
}

impl FileBridge {
    fn into_config(self) -> BridgeConfig {
        let defaults = BridgeConfig::new(&self.name, "", 0, Vec::new());
        // The default port depends on TLS: 8883 with, 1883 without.
        let default_port = if self.cafile.is_some() { 8883 } else { 1883 };
        let addresses = self
            .address
            .0
            .into_iter()
            .map(|mut a| {
                if a.port == 0 {
                    a.port = default_port;
                }
                a
            })
            .collect();
        let (restart_base, restart_cap) = match self.restart_timeout {
            Some(RestartTimeout { base, cap }) => {
                (Duration::from_secs(base), cap.map(Duration::from_secs))
            }
            None => (defaults.restart_base, defaults.restart_cap),
        };
        let tls_keys = self.certfile.is_some() || self.keyfile.is_some() || self.insecure;
        let tls = (self.cafile.is_some() || tls_keys).then(|| BridgeTls {
            // Empty when cafile is missing: refused by validation, naming the key given.
            ca_file: self.cafile.unwrap_or_default(),
            cert_file: self.certfile,
            key_file: self.keyfile,
            insecure: self.insecure,
        });
        BridgeConfig {
            addresses,
            protocol: self.protocol_version.unwrap_or(defaults.protocol),
            clean_session: self.cleansession,
            local_clientid: self.local_clientid,
            remote_clientid: self.remote_clientid,
            remote_username: self.remote_username,
            remote_password: self.remote_password,
            try_private: self.try_private,
            restart_base,
            restart_cap,
            keepalive: self.keepalive_interval,
            tls,
            topics: self.topic.0.into_iter().map(|t| t.0).collect(),
            max_inflight: self.max_inflight,
            ..defaults
        }
    }
}

fn protocol_version<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BridgeProtocol>, D::Error> {
    let name = String::deserialize(d)?;
    BridgeProtocol::from_name(&name).map(Some).ok_or_else(|| {
        de::Error::custom(format!(
            "unknown protocol_version `{name}`: expected mqttv31, mqttv311 or mqttv50"
        ))
    })
}

/// `address`: `"host:port"` or an array of them. A port left out is 0 here, replaced by the
/// default once it is known whether TLS is on.
#[derive(Default)]
struct FileAddresses(Vec<BridgeAddress>);

impl<'de> Deserialize<'de> for FileAddresses {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Addresses;
        impl<'de> Visitor<'de> for Addresses {
            type Value = FileAddresses;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"host:port\" or an array of them")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<FileAddresses, E> {
                let a = BridgeAddress::parse(v, 0).map_err(E::custom)?;
                Ok(FileAddresses(vec![a]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FileAddresses, A::Error> {
                let mut all = Vec::new();
                while let Some(text) = seq.next_element::<String>()? {
                    all.push(BridgeAddress::parse(&text, 0).map_err(de::Error::custom)?);
                }
                Ok(FileAddresses(all))
            }
        }
        d.deserialize_any(Addresses)
    }
}

/// `restart_timeout`: seconds (a constant wait), or `[base, cap]` (waits growing from base
/// to cap).
struct RestartTimeout {
    base: u64,
    cap: Option<u64>,
}

impl<'de> Deserialize<'de> for RestartTimeout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Timeout;
        impl<'de> Visitor<'de> for Timeout {
            type Value = RestartTimeout;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("seconds, or [base, cap] in seconds")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RestartTimeout, E> {
                Ok(RestartTimeout { base: v, cap: None })
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RestartTimeout, E> {
                let v = u64::try_from(v)
                    .map_err(|_| E::custom("restart_timeout must not be negative"))?;
                self.visit_u64(v)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RestartTimeout, A::Error> {
                let two = || de::Error::custom("expected [base, cap]: two numbers of seconds");
                let base = seq.next_element::<u64>()?.ok_or_else(two)?;
                let cap = seq.next_element::<u64>()?.ok_or_else(two)?;
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(two());
                }
                Ok(RestartTimeout {
                    base,
                    cap: Some(cap),
                })
            }
        }
        d.deserialize_any(Timeout)
    }
}

/// `topic`: an array of lines and tables, or a single line or table.
#[derive(Default)]
struct FileTopics(Vec<FileTopic>);

impl<'de> Deserialize<'de> for FileTopics {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Topics;
        impl<'de> Visitor<'de> for Topics {
            type Value = FileTopics;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of topic lines or tables, or one of them")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<FileTopics, E> {
                FileTopic::deserialize(de::value::StrDeserializer::<E>::new(v))
                    .map(|t| FileTopics(vec![t]))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<FileTopics, A::Error> {
                FileTopic::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|t| FileTopics(vec![t]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FileTopics, A::Error> {
                let mut all = Vec::new();
                while let Some(t) = seq.next_element::<FileTopic>()? {
                    all.push(t);
                }
                Ok(FileTopics(all))
            }
        }
        d.deserialize_any(Topics)
    }
}

/// An element of `topic`: a mosquitto-style line (see [`BridgeTopic::parse`]) or a table.
struct FileTopic(BridgeTopic);

/// The table form of a topic.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicTable {
    pattern: String,
    #[serde(default = "default_direction", deserialize_with = "direction")]
    direction: BridgeDirection,
    #[serde(default = "default_qos", deserialize_with = "qos")]
    qos: QoS,
    #[serde(default)]
    local_prefix: String,
    #[serde(default)]
    remote_prefix: String,
}

fn default_direction() -> BridgeDirection {
    BridgeDirection::Out
}

fn default_qos() -> QoS {
    QoS::AtMostOnce
}

fn direction<'de, D: Deserializer<'de>>(d: D) -> Result<BridgeDirection, D::Error> {
    let name = String::deserialize(d)?;
    BridgeDirection::from_name(&name).ok_or_else(|| {
        de::Error::custom(format!(
            "unknown direction `{name}`: expected in, out or both"
        ))
    })
}

fn qos<'de, D: Deserializer<'de>>(d: D) -> Result<QoS, D::Error> {
    let n = i64::deserialize(d)?;
    u8::try_from(n)
        .ok()
        .and_then(QoS::from_u8)
        .ok_or_else(|| de::Error::custom(format!("qos {n} must be 0, 1 or 2")))
}

impl<'de> Deserialize<'de> for FileTopic {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Topic;
        impl<'de> Visitor<'de> for Topic {
            type Value = FileTopic;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "a topic line \"{TOPIC_LINE}\" or a table {{ pattern = ..., direction = ..., \
                     qos = ..., local_prefix = ..., remote_prefix = ... }}"
                )
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<FileTopic, E> {
                BridgeTopic::parse(v)
                    .map(FileTopic)
                    .map_err(|e| E::custom(format!("topic `{v}`: {e}")))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<FileTopic, A::Error> {
                let t = TopicTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(FileTopic(BridgeTopic {
                    pattern: t.pattern,
                    direction: t.direction,
                    qos: t.qos,
                    local_prefix: t.local_prefix,
                    remote_prefix: t.remote_prefix,
                }))
            }
        }
        d.deserialize_any(Topic)
    }
}

/// This machine's name, for default client ids (`localhost` if unknown).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}
