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
    /// Messages queued per session beyond the inflight window before new ones are dropped.
    pub max_queued_messages: usize,
    /// Outbound QoS 1/2 messages in flight per client (further capped by its Receive Maximum).
    pub max_inflight_messages: u16,
    /// Inbound QoS 1/2 messages a client may have unacknowledged (our Receive Maximum).
    pub receive_maximum: u16,
    /// Time a client has to send CONNECT after the TCP connection is accepted.
    pub connect_timeout: Duration,
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
            max_queued_messages: 1000,
            max_inflight_messages: 100,
            receive_maximum: 100,
            connect_timeout: Duration::from_secs(10),
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
    /// See [`Config::max_inflight_messages`].
    pub max_inflight_messages: Option<u16>,
    /// See [`Config::receive_maximum`].
    pub receive_maximum: Option<u16>,
    /// Seconds; see [`Config::connect_timeout`].
    pub connect_timeout: Option<u64>,
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
        assert_eq!(c.max_queued_messages, 1000);
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
