//! Bridges: connections from this broker to remote brokers, each forwarding the messages of
//! some topics one way or both ways.

use std::path::PathBuf;
use std::time::Duration;

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

impl BridgeTopic {
    /// The Topic Filter on this broker.
    pub fn local_filter(&self) -> String {
        format!("{}{}", self.local_prefix, self.pattern)
    }

    /// The Topic Filter on the remote broker.
    pub fn remote_filter(&self) -> String {
        format!("{}{}", self.remote_prefix, self.pattern)
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

/// TLS towards the remote broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeTls {
    /// PEM file of the CA certificates the remote broker's certificate must chain to.
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
