//! An Application Message as a NATS message: the payload unchanged, the rest in headers that
//! NATS applications can read and set.
//!
//! | header | value |
//! |---|---|
//! | `Roost-Origin` | the node that published it (absent from NATS applications) |
//! | `Roost-Client` | a QoS 1/2 message's publisher (its client id), when a client published it |
//! | `Roost-Id` | a QoS 0 message's id, unique in the cluster |
//! | `Roost-QoS` | `0`, `1` or `2` |
//! | `Roost-Retain` | `1` if the RETAIN flag was set |
//! | `Roost-Expiry` | seconds left of the Message Expiry Interval |
//! | `Roost-Payload-Format` | Payload Format Indicator, `0` or `1` |
//! | `Roost-Content-Type`, `Roost-Response-Topic` | percent-encoded UTF-8 |
//! | `Roost-Correlation-Data` | base64 |
//! | `Roost-User-Property` | `name=value`, each percent-encoded; once per property, in order |
//! | `Roost-Group` | only in the stream: the message is for one Shared Subscription group (the hash naming its consumers), not for ordinary subscriptions; an ended member's unacknowledged message, written again for the group's members on other nodes |

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

use crate::codec::{PublishProperties, QoS};
use crate::session::Message;

pub(crate) const ORIGIN: &str = "Roost-Origin";
/// The Shared Subscription a message written to the stream again is for (the hash of
/// `$share/...` that names its consumers), and nobody else: an ended member's unacknowledged
/// message, for the group's other members.
pub(crate) const GROUP: &str = "Roost-Group";
/// True if a stream message is for one Shared Subscription only (see [`GROUP`]).
pub(crate) fn group_of(headers: Option<&HeaderMap>) -> Option<&str> {
    headers.and_then(|h| h.get(GROUP)).map(|v| v.as_str())
}
/// The client id of a QoS 1/2 message's publisher (for No Local on its own node).
pub(crate) const CLIENT: &str = "Roost-Client";
/// A QoS 0 message's id, unique in the cluster: a node that receives it on several of its
/// NATS subscriptions routes it once.
pub(crate) const ID: &str = "Roost-Id";
const QOS: &str = "Roost-QoS";
const RETAIN: &str = "Roost-Retain";
const EXPIRY: &str = "Roost-Expiry";
const FORMAT: &str = "Roost-Payload-Format";
const CONTENT_TYPE: &str = "Roost-Content-Type";
const RESPONSE_TOPIC: &str = "Roost-Response-Topic";
const CORRELATION: &str = "Roost-Correlation-Data";
const USER_PROPERTY: &str = "Roost-User-Property";

/// Characters percent-encoded in header values (non-ASCII always is): control characters,
/// `%`, and `=` (which separates a user property's name from its value).
const ENCODED: &AsciiSet = &CONTROLS.add(b'%').add(b'=');

/// The headers of `message` published by node `origin` at `now`.
pub(crate) fn headers(message: &Message, origin: &str, now: Instant) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(ORIGIN, origin);
    h.insert(
        QOS,
        char::from(b'0' + message.qos as u8).to_string().as_str(),
    );
    if message.retain {
        h.insert(RETAIN, "1");
    }
    if let Some(left) = message.remaining_expiry(now) {
        h.insert(EXPIRY, left.to_string().as_str());
    }
    let p = &message.properties;
    if let Some(f) = p.payload_format_indicator {
        h.insert(FORMAT, f.to_string().as_str());
    }
    if let Some(v) = &p.content_type {
        h.insert(CONTENT_TYPE, encode(v).as_str());
    }
    if let Some(v) = &p.response_topic {
        h.insert(RESPONSE_TOPIC, encode(v).as_str());
    }
    if let Some(v) = &p.correlation_data {
        h.insert(CORRELATION, STANDARD.encode(v).as_str());
    }
    for u in &p.user_properties {
        h.append(
            USER_PROPERTY,
            format!("{}={}", encode(&u.0), encode(&u.1)).as_str(),
        );
    }
    h
}

/// True if these are the headers of a Roost node's copy of a QoS 1/2 message on its topic's
/// subject (for NATS applications): Roost nodes take that message from the stream.
pub(crate) fn is_stream_copy(headers: Option<&HeaderMap>) -> bool {
    headers
        .is_some_and(|h| h.get(ORIGIN).is_some() && h.get(QOS).is_some_and(|q| q.as_str() != "0"))
}

/// A message received from NATS, as the parts routing needs.
#[derive(Debug)]
pub(crate) struct Received {
    /// The node that published it, if a Roost node did.
    pub origin: Option<String>,
    /// The message (its store id unset).
    pub message: Arc<Message>,
}

/// Reads a NATS message to topic `topic`, stored `age` ago (its Message Expiry Interval has
/// run that much): QoS `default_qos` when the headers do not say (messages of NATS
/// applications), capped at `max_qos`. `None` if a header is malformed or carries what MQTT
/// forbids (U+0000 in a string, MQTT-1.5.4-2; a response topic that is no Topic Name,
/// MQTT-3.3.2-14).
pub(crate) fn read(
    topic: String,
    headers: Option<&HeaderMap>,
    payload: Bytes,
    default_qos: QoS,
    max_qos: QoS,
    now: Instant,
    age: Duration,
) -> Option<Received> {
    let empty = HeaderMap::new();
    let h = headers.unwrap_or(&empty);
    let get = |name: &str| h.get(name).map(|v| v.as_str());
    let qos = match get(QOS) {
        None => default_qos,
        Some("0") => QoS::AtMostOnce,
        Some("1") => QoS::AtLeastOnce,
        Some("2") => QoS::ExactlyOnce,
        Some(_) => return None,
    };
    let left = match get(EXPIRY) {
        Some(s) => Some(Duration::from_secs(s.parse::<u32>().ok()?.into()).saturating_sub(age)),
        None => None,
    };
    // Already expired when read: expires now (and is not delivered).
    let expires_at = left.map(|left| now + left);
    let mut properties = PublishProperties::default();
    if let Some(s) = get(FORMAT) {
        properties.payload_format_indicator = Some(s.parse::<u8>().ok().filter(|f| *f <= 1)?);
    }
    if let Some(s) = get(CONTENT_TYPE) {
        properties.content_type = Some(decode(s)?);
    }
    if let Some(s) = get(RESPONSE_TOPIC) {
        properties.response_topic = Some(decode(s)?);
    }
    if let Some(s) = get(CORRELATION) {
        properties.correlation_data = Some(Bytes::from(STANDARD.decode(s).ok()?));
    }
    for v in h.get_all(USER_PROPERTY) {
        let (name, value) = v.as_str().split_once('=')?;
        properties
            .user_properties
            .push((decode(name)?, decode(value)?));
    }
    properties.message_expiry_interval =
        left.map(|l| u32::try_from(l.as_secs()).unwrap_or(u32::MAX));
    if properties
        .response_topic
        .as_deref()
        .is_some_and(|t| !crate::topic::valid_topic_name(t))
    {
        return None;
    }
    Some(Received {
        origin: get(ORIGIN).map(str::to_owned),
        message: Arc::new(Message {
            id: None,
            topic: Arc::from(topic),
            payload,
            qos: qos.min(max_qos),
            retain: get(RETAIN) == Some("1"),
            properties,
            stream_seq: None,
            expires_at,
        }),
    })
}

fn encode(s: &str) -> String {
    utf8_percent_encode(s, ENCODED).to_string()
}

/// A percent-encoded string as MQTT may carry it: UTF-8 without U+0000, at most 65,535
/// bytes.
fn decode(s: &str) -> Option<String> {
    let decoded = percent_decode_str(s).decode_utf8().ok()?;
    (!decoded.contains('\0') && decoded.len() <= usize::from(u16::MAX))
        .then(|| decoded.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_property_survives_the_round_trip() {
        let now = Instant::now();
        let message = Message {
            id: None,
            topic: Arc::from("a/b"),
            payload: Bytes::from_static(b"\x00\xffpayload"),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: PublishProperties {
                payload_format_indicator: Some(1),
                message_expiry_interval: Some(60),
                content_type: Some("text/plain; charset=ü%".into()),
                response_topic: Some("reply/°/x y".into()),
                correlation_data: Some(Bytes::from_static(b"\x00\x01\r\n")),
                user_properties: vec![("k=1".into(), "v\r\n2".into()), ("k=1".into(), "".into())],
            },
            stream_seq: None,
            expires_at: Some(now + Duration::from_secs(60)),
        };
        let h = headers(&message, "n1", now);
        let got = read(
            "a/b".into(),
            Some(&h),
            message.payload.clone(),
            QoS::AtMostOnce,
            QoS::ExactlyOnce,
            now,
            Duration::ZERO,
        )
        .expect("readable");
        assert_eq!(got.origin.as_deref(), Some("n1"));
        assert_eq!(*got.message, message);
        // The time a message spent in the stream counts against its expiry.
        let aged = read(
            "a/b".into(),
            Some(&h),
            Bytes::new(),
            QoS::AtMostOnce,
            QoS::ExactlyOnce,
            now,
            Duration::from_secs(45),
        )
        .expect("readable");
        assert_eq!(aged.message.properties.message_expiry_interval, Some(15));
        assert_eq!(aged.message.expires_at, Some(now + Duration::from_secs(15)));
        // Header values carry no line breaks.
        for (_, values) in h.iter() {
            for v in values {
                assert!(!v.as_str().contains(['\r', '\n']), "{v:?}");
            }
        }
    }

    #[test]
    fn a_nats_application_message_takes_the_default_qos_and_malformed_headers_are_refused() {
        let now = Instant::now();
        let got = read(
            "t".into(),
            None,
            Bytes::from_static(b"x"),
            QoS::AtLeastOnce,
            QoS::ExactlyOnce,
            now,
            Duration::ZERO,
        )
        .expect("readable");
        assert_eq!(got.message.qos, QoS::AtLeastOnce);
        assert!(got.origin.is_none());
        let mut h = HeaderMap::new();
        h.insert(QOS, "2");
        let capped = read(
            "t".into(),
            Some(&h),
            Bytes::new(),
            QoS::AtMostOnce,
            QoS::AtMostOnce,
            now,
            Duration::ZERO,
        )
        .expect("readable");
        assert_eq!(capped.message.qos, QoS::AtMostOnce);
        for (name, value) in [
            (QOS, "3"),
            (EXPIRY, "-1"),
            (FORMAT, "2"),
            (CORRELATION, "!!"),
            (CONTENT_TYPE, "a%00b"),
            (USER_PROPERTY, "k=%00"),
            (RESPONSE_TOPIC, "reply/%2B"),
            (RESPONSE_TOPIC, ""),
        ] {
            let mut h = HeaderMap::new();
            h.insert(name, value);
            assert!(
                read(
                    "t".into(),
                    Some(&h),
                    Bytes::new(),
                    QoS::AtMostOnce,
                    QoS::ExactlyOnce,
                    now,
                    Duration::ZERO
                )
                .is_none(),
                "{name}: {value}"
            );
        }
    }
}
