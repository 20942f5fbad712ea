//! `[cluster]`: several Roost nodes acting as one broker through NATS with JetStream.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

/// Cluster mode (`[cluster]` in the file): the nodes share Application Messages, retained
/// messages and Session ownership through NATS and JetStream. Off unless configured.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// NATS server URLs (`nats://host:port`), tried in turn; list several servers of the
    /// NATS cluster so that losing one does not cut the node off.
    pub nats: Vec<String>,
    /// This node's name, unique in the cluster: it names the node's JetStream consumer and
    /// marks the messages it published. Letters, digits, `-` and `_`.
    #[serde(default = "default_node")]
    pub node: String,
    /// The NATS subject prefix of MQTT topics: topic `a/b` is subject `{prefix}.a.b`, where
    /// NATS applications can subscribe and publish.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The JetStream stream that holds QoS 1/2 messages.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// The subject prefix of that stream (a message to topic `a/b` is stored under
    /// `{stream_subject}.a.b`).
    #[serde(default = "default_stream_subject")]
    pub stream_subject: String,
    /// The JetStream stream of retained messages (the last message of each topic).
    #[serde(default = "default_retained_stream")]
    pub retained_stream: String,
    /// The subject prefix of the retained stream.
    #[serde(default = "default_retained_subject")]
    pub retained_subject: String,
    /// The JetStream key-value bucket recording which node owns each Session.
    #[serde(default = "default_sessions_bucket")]
    pub sessions_bucket: String,
    /// JetStream replicas of the streams and the bucket (1 to 5; 3 survives the loss of one
    /// NATS server).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// Seconds a QoS 1/2 message stays in the stream (0 = until `stream_max_bytes`).
    #[serde(default = "default_stream_max_age")]
    pub stream_max_age: u64,
    /// Bytes the stream of QoS 1/2 messages may hold; the oldest go first (0 = no limit).
    #[serde(default)]
    pub stream_max_bytes: u64,
    /// Seconds to wait for NATS to confirm a write before the client is refused.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout: u64,
    /// Shared Subscription groups this node's clients may be members of at once: each costs
    /// one or two JetStream consumers (0 = no limit). A SUBSCRIBE to one more is refused
    /// (5.0: 0x97 Quota exceeded; 3.1.1: 0x80).
    #[serde(default = "default_max_shared_groups")]
    pub max_shared_groups: usize,
    /// NATS username (with `password`).
    pub user: Option<String>,
    /// NATS password.
    pub password: Option<String>,
    /// NATS token.
    pub token: Option<String>,
    /// NATS credentials file (JWT and NKey seed).
    pub credentials: Option<PathBuf>,
    /// CA certificate(s) that sign the NATS servers' TLS certificates; set to require TLS.
    pub cafile: Option<PathBuf>,
}

fn default_node() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let name: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "roost".to_string()
    } else {
        name
    }
}

fn default_prefix() -> String {
    "mqtt".to_string()
}
fn default_stream() -> String {
    "ROOST_MESSAGES".to_string()
}
fn default_stream_subject() -> String {
    "roost.messages".to_string()
}
fn default_retained_stream() -> String {
    "ROOST_RETAINED".to_string()
}
fn default_retained_subject() -> String {
    "roost.retained".to_string()
}
fn default_sessions_bucket() -> String {
    "ROOST_SESSIONS".to_string()
}
fn default_replicas() -> usize {
    3
}
fn default_stream_max_age() -> u64 {
    7 * 24 * 3600
}
fn default_max_shared_groups() -> usize {
    1000
}
fn default_ack_timeout() -> u64 {
    5
}

impl ClusterConfig {
    /// Cluster mode with the defaults, on the NATS servers `nats`, as node `node`.
    pub fn new(nats: Vec<String>, node: &str) -> ClusterConfig {
        ClusterConfig {
            nats,
            node: node.to_string(),
            prefix: default_prefix(),
            stream: default_stream(),
            stream_subject: default_stream_subject(),
            retained_stream: default_retained_stream(),
            retained_subject: default_retained_subject(),
            sessions_bucket: default_sessions_bucket(),
            replicas: default_replicas(),
            stream_max_age: default_stream_max_age(),
            stream_max_bytes: 0,
            ack_timeout: default_ack_timeout(),
            max_shared_groups: default_max_shared_groups(),
            user: None,
            password: None,
            token: None,
            credentials: None,
            cafile: None,
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.nats.is_empty() {
            return Err(ConfigError::invalid(
                "cluster.nats",
                "lists no NATS server (e.g. [\"nats://127.0.0.1:4222\"])",
            ));
        }
        for url in &self.nats {
            if url.parse::<async_nats::ServerAddr>().is_err() {
                return Err(ConfigError::invalid(
                    "cluster.nats",
                    format!("`{url}` is not a NATS server URL (nats://host:port)"),
                ));
            }
        }
        check_name("cluster.node", &self.node)?;
        check_name("cluster.stream", &self.stream)?;
        check_name("cluster.retained_stream", &self.retained_stream)?;
        check_name("cluster.sessions_bucket", &self.sessions_bucket)?;
        check_subject("cluster.prefix", &self.prefix)?;
        check_subject("cluster.stream_subject", &self.stream_subject)?;
        check_subject("cluster.retained_subject", &self.retained_subject)?;
        let subjects = [
            ("cluster.prefix", &self.prefix),
            ("cluster.stream_subject", &self.stream_subject),
            ("cluster.retained_subject", &self.retained_subject),
        ];
        for (i, (key, a)) in subjects.iter().enumerate() {
            for (other, b) in &subjects[..i] {
                if overlaps(a, b) {
                    return Err(ConfigError::invalid(
                        *key,
                        format!("`{a}` overlaps `{other}` (`{b}`): each needs its own subjects"),
                    ));
                }
            }
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(ConfigError::invalid(
                "cluster.replicas",
                "must be 1 to 5 (JetStream's limit)",
            ));
        }
        if self.ack_timeout == 0 {
            return Err(ConfigError::invalid(
                "cluster.ack_timeout",
                "must be at least 1 second",
            ));
        }
        if self.user.is_some() != self.password.is_some() {
            return Err(ConfigError::invalid(
                "cluster.user",
                "cluster.user and cluster.password go together",
            ));
        }
        if let Some(path) = &self.credentials {
            super::readable_file("cluster.credentials", path)?;
        }
        if let Some(path) = &self.cafile {
            super::readable_file("cluster.cafile", path)?;
        }
        Ok(())
    }
}

/// The longest subject prefix (`prefix`, `stream_subject`, `retained_subject`).
const MAX_SUBJECT_PREFIX: usize = 256;

/// A stream, bucket or consumer name: JetStream forbids `.`, `*`, `>`, spaces and path
/// separators there.
fn check_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("`{name}` must be 1 to 64 letters, digits, `-` or `_`"),
        ))
    }
}

/// A subject prefix: dot-separated tokens without wildcards or spaces, short enough that a
/// topic's subject under it fits nats-server's protocol line (see
/// [`crate::cluster::subject::MAX_MAPPED`]).
fn check_subject(key: &str, subject: &str) -> Result<(), ConfigError> {
    let ok = !subject.is_empty()
        && subject.len() <= MAX_SUBJECT_PREFIX
        && subject.split('.').all(|t| {
            !t.is_empty()
                && t != "*"
                && t != ">"
                && t.chars()
                    .all(|c| c.is_ascii_graphic() && c != '*' && c != '>')
        });
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!(
                "`{subject}` must be dot-separated NATS subject tokens without wildcards, at most {MAX_SUBJECT_PREFIX} bytes"
            ),
        ))
    }
}

/// True if one prefix's subjects include the other's.
fn overlaps(a: &str, b: &str) -> bool {
    let (a, b) = (format!("{a}."), format!("{b}."));
    a.starts_with(&b) || b.starts_with(&a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(change: impl FnOnce(&mut ClusterConfig)) -> String {
        let mut c = ClusterConfig::new(vec!["nats://127.0.0.1:4222".into()], "n1");
        change(&mut c);
        c.validate()
            .expect_err("invalid")
            .key()
            .expect("a key")
            .to_string()
    }

    #[test]
    fn defaults_are_valid() {
        let c = ClusterConfig::new(vec!["nats://127.0.0.1:4222".into()], "n1");
        c.validate().expect("valid");
        assert!(!default_node().is_empty());
        check_name("k", &default_node()).expect("hostname-derived node name is valid");
    }

    #[test]
    fn every_error_names_its_key() {
        assert_eq!(key_of(|c| c.nats.clear()), "cluster.nats");
        assert_eq!(
            key_of(|c| c.nats = vec!["not a url:x".into()]),
            "cluster.nats"
        );
        assert_eq!(key_of(|c| c.node = "a.b".into()), "cluster.node");
        assert_eq!(key_of(|c| c.stream = "S*".into()), "cluster.stream");
        assert_eq!(key_of(|c| c.prefix = "mqtt.>".into()), "cluster.prefix");
        assert_eq!(key_of(|c| c.prefix = "a..b".into()), "cluster.prefix");
        assert_eq!(
            key_of(|c| c.stream_subject = "mqtt.q".into()),
            "cluster.stream_subject"
        );
        // A topic's subject under a longer prefix could exceed nats-server's protocol line.
        assert_eq!(
            key_of(|c| c.prefix = "p".repeat(MAX_SUBJECT_PREFIX + 1)),
            "cluster.prefix"
        );
        assert_eq!(
            key_of(|c| c.retained_subject = format!("r.{}", "x".repeat(255))),
            "cluster.retained_subject"
        );
        let mut c = ClusterConfig::new(vec!["nats://127.0.0.1:4222".into()], "n1");
        c.prefix = "p".repeat(MAX_SUBJECT_PREFIX);
        c.validate().expect("256 bytes fit");
        assert_eq!(key_of(|c| c.replicas = 0), "cluster.replicas");
        assert_eq!(key_of(|c| c.ack_timeout = 0), "cluster.ack_timeout");
        assert_eq!(key_of(|c| c.user = Some("u".into())), "cluster.user");
    }

    #[test]
    fn prefixes_overlap_only_on_whole_tokens() {
        assert!(overlaps("mqtt", "mqtt.q"));
        assert!(overlaps("a.b", "a.b"));
        assert!(!overlaps("mqtt", "mqttq"));
    }
}
