//! roost-client: a `no_std`, no-alloc MQTT 3.1.1 and 5.0 client for microcontrollers.
//!
//! * Transport: anything implementing [`embedded_io_async::Read`] + [`embedded_io_async::Write`]
//!   (embassy-net's `TcpSocket`, embedded-tls, or a host TCP stream through
//!   `embedded-io-adapters`). `ReadReady` is not needed.
//! * Time: the caller provides a [`Clock`] (current time in milliseconds and a way to sleep
//!   until a deadline), so the client runs on any executor and sends PINGREQ by itself while
//!   idle.
//! * Memory: the caller provides a transmit buffer, a receive buffer and a [`SessionStore`]
//!   (for instance a [`RamStore`] over a third buffer). The client itself is a few hundred bytes.
//! * Protocol: MQTT 3.1.1 always; MQTT 5.0 with the `v5` feature; QoS 2 with the `qos2`
//!   feature (both on by default).
//! * TLS 1.3 with the `tls` feature: [`tls::connect`] wraps a transport in embedded-tls and
//!   verifies the server certificate against a CA (module [`tls`] says what is checked).
//!
//! # Cancel safety
//!
//! The client is one object used through `&mut self` (it is not split into halves).
//! [`Client::poll`] is cancel safe: all progress (bytes read, a packet already handled, bytes of
//! an acknowledgement still to write) is kept in the client, never in the future, so dropping a
//! `poll` future (for instance because a `select` chose a sensor reading instead) loses
//! nothing; the next call resumes. A publish may therefore "race" a poll this way:
//!
//! ```
//! # use embassy_futures::select::{Either, select};
//! # use embedded_io_async::{Read, Write};
//! # use roost_client::{Client, Clock, Error, Event, QoS, SessionStore};
//! # fn handle(_: Event<'_>) {}
//! # async fn demo<T: Read + Write, C: Clock, S: SessionStore>(
//! #     client: &mut Client<'_, T, C, S>,
//! #     sensor: impl core::future::Future<Output = [u8; 4]>,
//! # ) -> Result<(), Error> {
//! match select(client.poll(), sensor).await {
//!     Either::First(ev) => handle(ev?),
//!     Either::Second(reading) => {
//!         client.publish("s/t", &reading, QoS::AtLeastOnce, false).await?;
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! A message [`Client::poll`] returns is acknowledged (PUBACK, PUBREC) by the next call on the
//! client, never before it is returned: if the connection fails in between, the server sends a
//! QoS 1 message again, and a QoS 2 message, recorded as received, is acknowledged but not
//! delivered twice.
//!
//! The sending methods ([`Client::publish`], [`Client::subscribe`], ...) are cancel safe in a
//! weaker sense: a dropped future never corrupts the stream (the remaining bytes of a packet
//! are written first by the next call on the client). Whether a dropped send happened is not
//! known: it first finishes writing what an earlier call left (a packet, an acknowledgement),
//! and only then encodes and (for QoS > 0) records its own packet; [`Client::inflight`] tells
//! whether a QoS 1/2 message was recorded. [`Client::connect`] is not cancel safe: a cancelled
//! connect leaves the client disconnected.
//!
//! This relies on the transport's `read`/`write` being cancel safe themselves, which
//! embassy-net and the tokio adapter are.
//!
//! # Errors and reconnecting
//!
//! After any error, [`Client::is_connected`] tells whether the connection is still usable.
//! If not, call [`Client::connect`] with a fresh transport. With a persistent session
//! (`clean_session = false`) unacknowledged QoS 1/2 messages are then resent with DUP set, and
//! PUBREL for QoS 2 messages whose PUBREC arrived.
//!
//! With MQTT 5 the resend obeys the new server's CONNACK: a stored message above its Maximum
//! Packet Size or Maximum QoS is not sent but dropped from the session, counted in
//! [`ConnAck::dropped`] and reported by [`Client::poll`] as [`Error::Rejected`] (reason
//! `0x95` or `0x9B`); messages beyond its Receive Maximum follow, in order, as acknowledgements
//! make room.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod codec;
mod store;
#[cfg(feature = "tls")]
pub mod tls;

#[cfg(feature = "v5")]
pub use client::TopicAliasSlot;
pub use client::{Client, ConnAck, Event, MAX_INBOUND, MAX_INFLIGHT, Message};
pub use store::{RAM_RECORD_OVERHEAD, RamStore, Record, SessionStore, StoreError};

use core::future::Future;

/// Quality of service of a message (shared with the rest of Roost through `roost-wire`).
/// Without the `qos2` feature, [`QoS::ExactlyOnce`] is refused with
/// [`Error::InvalidArgument`] by [`Client::publish`] and [`Client::subscribe`]; a will may
/// still use it, since the server alone delivers the will.
pub use roost_wire::QoS;

/// MQTT protocol version, chosen at connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5.0 (protocol level 5).
    #[cfg(feature = "v5")]
    V5,
}

/// A last-will message the server publishes if the connection drops without DISCONNECT.
#[derive(Debug, Clone, Copy)]
pub struct Will<'a> {
    /// Topic of the will message.
    pub topic: &'a str,
    /// Payload of the will message.
    pub payload: &'a [u8],
    /// QoS of the will message.
    pub qos: QoS,
    /// Whether the will message is retained.
    pub retain: bool,
}

/// Options of a CONNECT. Build with [`ConnectOptions::new`] and adjust the public fields.
#[derive(Debug, Clone, Copy)]
pub struct ConnectOptions<'a> {
    /// Protocol version (default 3.1.1).
    pub protocol: Protocol,
    /// Client identifier. Must be non-empty for a persistent session.
    pub client_id: &'a str,
    /// Keep alive in seconds; 0 disables keepalive (default 60).
    pub keep_alive_secs: u16,
    /// 3.1.1 clean session / 5.0 clean start (default true). With `false`, QoS 1/2 state
    /// survives reconnects (v5 also needs a non-zero [`session_expiry_secs`](Self::session_expiry_secs)).
    pub clean_session: bool,
    /// Optional user name.
    pub username: Option<&'a str>,
    /// Optional password (3.1.1 requires a user name with it).
    pub password: Option<&'a [u8]>,
    /// Optional last will.
    pub will: Option<Will<'a>>,
    /// v5 session expiry interval in seconds (0 = session ends with the connection; not sent).
    #[cfg(feature = "v5")]
    pub session_expiry_secs: u32,
    /// v5 receive maximum sent in CONNECT: how many QoS 1/2 messages the server may have
    /// unacknowledged towards this client. 0 (default) or anything above the client's `IN`
    /// window means `IN` (see [`Client`]).
    #[cfg(feature = "v5")]
    pub receive_maximum: u16,
    /// v5 maximum packet size sent in CONNECT, in bytes. 0 (default) or anything above the
    /// receive buffer means the receive buffer's length; the server drops larger messages for
    /// this client instead of sending them (MQTT-3.1.2-25).
    #[cfg(feature = "v5")]
    pub maximum_packet_size: u32,
    /// v5 user properties sent in CONNECT (name, value), in order. (The Topic Alias Maximum
    /// comes from [`Client::set_inbound_topic_aliases`].)
    #[cfg(feature = "v5")]
    pub user_properties: &'a [(&'a str, &'a str)],
    /// How long to wait for CONNACK, in milliseconds (default 10 000).
    pub connect_timeout_ms: u32,
}

impl<'a> ConnectOptions<'a> {
    /// Default options for `client_id`: MQTT 3.1.1, keepalive 60 s, clean session.
    pub const fn new(client_id: &'a str) -> Self {
        ConnectOptions {
            protocol: Protocol::V311,
            client_id,
            keep_alive_secs: 60,
            clean_session: true,
            username: None,
            password: None,
            will: None,
            #[cfg(feature = "v5")]
            session_expiry_secs: 0,
            #[cfg(feature = "v5")]
            receive_maximum: 0,
            #[cfg(feature = "v5")]
            maximum_packet_size: 0,
            #[cfg(feature = "v5")]
            user_properties: &[],
            connect_timeout_ms: 10_000,
        }
    }
}

/// One topic filter of a SUBSCRIBE.
#[derive(Debug, Clone, Copy)]
pub struct Subscription<'a> {
    /// Topic filter (may contain `+` and `#`).
    pub filter: &'a str,
    /// Maximum QoS the client accepts for this filter.
    pub qos: QoS,
    /// v5: do not receive own publications.
    #[cfg(feature = "v5")]
    pub no_local: bool,
    /// v5: keep the retain flag as published.
    #[cfg(feature = "v5")]
    pub retain_as_published: bool,
    /// v5: 0 = send retained messages, 1 = only for new subscriptions, 2 = never.
    #[cfg(feature = "v5")]
    pub retain_handling: u8,
}

impl<'a> Subscription<'a> {
    /// A subscription to `filter` at `qos` with default v5 options.
    pub const fn new(filter: &'a str, qos: QoS) -> Self {
        Subscription {
            filter,
            qos,
            #[cfg(feature = "v5")]
            no_local: false,
            #[cfg(feature = "v5")]
            retain_as_published: false,
            #[cfg(feature = "v5")]
            retain_handling: 0,
        }
    }

    /// The subscription options byte (MQTT 5.0 section 3.8.3.1; only the QoS in 3.1.1).
    pub(crate) fn options(&self, v5: bool) -> u8 {
        let _ = v5;
        #[cfg(feature = "v5")]
        if v5 {
            use roost_wire::flags::{NO_LOCAL, RETAIN_AS_PUBLISHED, RETAIN_HANDLING_SHIFT};
            let mut options = self.qos as u8 | (self.retain_handling & 3) << RETAIN_HANDLING_SHIFT;
            if self.no_local {
                options |= NO_LOCAL;
            }
            if self.retain_as_published {
                options |= RETAIN_AS_PUBLISHED;
            }
            return options;
        }
        self.qos as u8
    }
}

/// v5 properties of an outgoing PUBLISH, for [`Client::publish_with`]. All optional; build
/// with `PublishProperties::default()` or [`PublishProperties::new`] and set fields.
/// Everything is borrowed, nothing is copied until the packet is encoded.
#[cfg(feature = "v5")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishProperties<'a> {
    /// Payload Format Indicator 1: the payload is UTF-8 text (MQTT 5.0 section 3.3.2.3.2).
    /// The client does not check the payload; the server may.
    pub payload_utf8: bool,
    /// Message Expiry Interval in seconds: the server drops the message for subscribers that
    /// have not received it by then.
    pub message_expiry_secs: Option<u32>,
    /// Content type, e.g. `"application/json"`.
    pub content_type: Option<&'a str>,
    /// Response topic for request/response (no wildcards, MQTT-3.3.2-14).
    pub response_topic: Option<&'a str>,
    /// Correlation data for request/response (at most 65,535 bytes).
    pub correlation_data: Option<&'a [u8]>,
    /// User properties (name, value), in order.
    pub user_properties: &'a [(&'a str, &'a str)],
    /// Topic alias to use for this topic, 1..=65535 (MQTT 5.0 section 3.3.2.3.4). Needs a
    /// table given with [`Client::set_topic_aliases`]. The first PUBLISH with an alias on a
    /// connection carries the topic and the alias; later ones with the same alias and topic
    /// send an empty topic. An alias above the server's Topic Alias Maximum (CONNACK, 0 when
    /// absent) or above the table is not sent at all (MQTT-3.3.2-8): the message goes out
    /// with its full topic. QoS 1/2 messages are kept in the session store with their full
    /// topic and no alias, because aliases do not survive the connection.
    pub topic_alias: Option<u16>,
}

#[cfg(feature = "v5")]
impl<'a> PublishProperties<'a> {
    /// No properties.
    pub const fn new() -> Self {
        PublishProperties {
            payload_utf8: false,
            message_expiry_secs: None,
            content_type: None,
            response_topic: None,
            correlation_data: None,
            user_properties: &[],
            topic_alias: None,
        }
    }

    /// Fields MQTT cannot carry: U+0000 in a string, wildcards or emptiness in the
    /// response topic.
    pub(crate) fn check(&self) -> Result<(), Error> {
        let bad = |s: Option<&str>| s.is_some_and(|s| s.bytes().any(|b| b == 0));
        if bad(self.content_type)
            || bad(self.response_topic)
            || self
                .response_topic
                .is_some_and(|t| t.is_empty() || t.contains(['+', '#']))
        {
            return Err(Error::InvalidArgument);
        }
        codec::check_pairs(self.user_properties)
    }
}

/// v5 properties of a SUBSCRIBE, for [`Client::subscribe_with`].
#[cfg(feature = "v5")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubscribeProperties<'a> {
    /// Subscription Identifier, 1..=268,435,455: the server adds it to every message it
    /// delivers because of these filters (read it with [`Message::subscription_ids`]).
    pub subscription_id: Option<u32>,
    /// User properties (name, value), in order.
    pub user_properties: &'a [(&'a str, &'a str)],
}

/// Errors of the client. After any of them, [`Client::is_connected`] says whether the
/// connection survived; the comments say what is typical. [`Display`](core::fmt::Display)
/// gives a short English message; with the `defmt` feature it is also `defmt::Format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// The transport failed (connection dropped).
    Transport(embedded_io::ErrorKind),
    /// The peer closed the connection (connection dropped).
    ConnectionClosed,
    /// The client is not connected: call [`Client::connect`].
    NotConnected,
    /// No CONNACK or PINGRESP in time (connection dropped).
    Timeout,
    /// Malformed or unexpected packet from the server (connection dropped).
    Protocol,
    /// The server refused the connection with this CONNACK return / reason code.
    Refused(u8),
    /// The server sent DISCONNECT (v5) with this reason code (connection dropped).
    ServerDisconnect(u8),
    /// An outgoing packet does not fit the transmit buffer. Nothing was sent.
    BufferTooSmall,
    /// An outgoing packet exceeds the server's maximum packet size. Nothing was sent.
    PacketTooLarge,
    /// An incoming PUBLISH did not fit the receive buffer: it was skipped (and acknowledged,
    /// so the server does not resend it). `len` is its full size. The connection stays up.
    MessageTooLarge {
        /// Size of the skipped packet in bytes.
        len: usize,
    },
    /// Too many QoS 1/2 messages in flight (client table or server receive maximum).
    /// Poll to process acknowledgements, then retry. Nothing was sent.
    InflightFull,
    /// The session store is full or failed. Nothing was sent.
    StoreFull,
    /// v5: the message `pid` will not be delivered, and is no longer in the session: the
    /// server rejected it with this PUBACK / PUBREC reason code, or, after a reconnect, the
    /// new server's limits ruled it out and the client dropped it without sending it
    /// (`0x95` packet too large: above its Maximum Packet Size; `0x9B` QoS not supported:
    /// above its Maximum QoS; see [`ConnAck::dropped`]). The connection stays up.
    Rejected {
        /// Packet id of the rejected message.
        pid: u16,
        /// Reason code (>= 0x80).
        reason: u8,
    },
    /// Invalid argument (empty topic or filter, wildcard in a publish or will topic, U+0000
    /// in a string, string over 64 KiB, QoS above the server's maximum, QoS 2 without the
    /// `qos2` feature, ...). Nothing was sent.
    InvalidArgument,
}

impl core::fmt::Display for Error {
    /// A short English description, e.g. `server refused the connection (reason 0x87)`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Error::Transport(kind) => write!(f, "transport error ({kind:?})"),
            Error::ConnectionClosed => f.write_str("connection closed by the peer"),
            Error::NotConnected => f.write_str("not connected"),
            Error::Timeout => f.write_str("timed out waiting for the server"),
            Error::Protocol => f.write_str("protocol error: malformed or unexpected packet"),
            Error::Refused(code) => {
                write!(f, "server refused the connection (reason {code:#04x})")
            }
            Error::ServerDisconnect(code) => {
                write!(f, "server sent DISCONNECT (reason {code:#04x})")
            }
            Error::BufferTooSmall => f.write_str("packet does not fit the transmit buffer"),
            Error::PacketTooLarge => f.write_str("packet exceeds the server's maximum packet size"),
            Error::MessageTooLarge { len } => {
                write!(
                    f,
                    "incoming message of {len} bytes skipped: receive buffer too small"
                )
            }
            Error::InflightFull => f.write_str("too many messages in flight"),
            Error::StoreFull => f.write_str("session store full or failed"),
            Error::Rejected { pid, reason } => {
                write!(f, "message {pid} rejected (reason {reason:#04x})")
            }
            Error::InvalidArgument => f.write_str("invalid argument"),
        }
    }
}

impl core::error::Error for Error {}

impl<E: embedded_io::Error> From<E> for Error {
    fn from(e: E) -> Self {
        Error::Transport(e.kind())
    }
}

/// The time source of the client. Times are milliseconds since an arbitrary origin.
///
/// With embassy: `now_ms` returns `Instant::now().as_millis()` and `sleep_until` is
/// `Timer::at(Instant::from_millis(deadline_ms))`. On tokio: an `Instant` origin plus
/// `tokio::time::sleep_until`.
///
/// `&mut C` is a `Clock` too: a program that creates a client per connection (as over TLS)
/// passes `&mut clock` to each [`Client::new`] and keeps the clock.
pub trait Clock {
    /// Current time in milliseconds; must never go backwards.
    fn now_ms(&mut self) -> u64;

    /// Completes at or after `deadline_ms`. Must be cancel safe (it is dropped whenever a
    /// packet arrives first). A clock that cannot sleep may return a future that never
    /// completes; then the caller must cancel [`Client::poll`] itself before keepalive expires.
    fn sleep_until(&mut self, deadline_ms: u64) -> impl Future<Output = ()>;
}

impl<C: Clock + ?Sized> Clock for &mut C {
    fn now_ms(&mut self) -> u64 {
        (**self).now_ms()
    }
    fn sleep_until(&mut self, deadline_ms: u64) -> impl Future<Output = ()> {
        (**self).sleep_until(deadline_ms)
    }
}

/// MQTT 5.0 property identifiers (section 2.2.2.2), to compare with [`Property::id`] or the
/// first field of a [`Property`] from [`Message::properties`] or [`Client::last_properties`].
/// [`Message`] has typed accessors for the common ones ([`Message::content_type`], ...).
#[cfg(feature = "v5")]
pub mod property {
    pub use roost_wire::property::{
        ASSIGNED_CLIENT_IDENTIFIER, AUTHENTICATION_DATA, AUTHENTICATION_METHOD, CONTENT_TYPE,
        CORRELATION_DATA, MAXIMUM_PACKET_SIZE, MAXIMUM_QOS, MESSAGE_EXPIRY_INTERVAL,
        PAYLOAD_FORMAT_INDICATOR, REASON_STRING, RECEIVE_MAXIMUM, REQUEST_PROBLEM_INFORMATION,
        REQUEST_RESPONSE_INFORMATION, RESPONSE_INFORMATION, RESPONSE_TOPIC, RETAIN_AVAILABLE,
        SERVER_KEEP_ALIVE, SERVER_REFERENCE, SESSION_EXPIRY_INTERVAL,
        SHARED_SUBSCRIPTION_AVAILABLE, SUBSCRIPTION_IDENTIFIER, SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        TOPIC_ALIAS, TOPIC_ALIAS_MAXIMUM, USER_PROPERTY, WILDCARD_SUBSCRIPTION_AVAILABLE,
        WILL_DELAY_INTERVAL,
    };
}

/// One v5 property, as yielded by [`Properties`].
#[cfg(feature = "v5")]
pub use roost_wire::property::Property;

/// Iterator over a raw v5 property block (for instance [`Message::properties`]).
#[cfg(feature = "v5")]
#[derive(Debug, Clone)]
pub struct Properties<'a>(roost_wire::property::Properties<'a>);

#[cfg(feature = "v5")]
impl<'a> Properties<'a> {
    /// Iterates over the property block `raw` (without its length prefix).
    pub fn new(raw: &'a [u8]) -> Self {
        Properties(roost_wire::property::Properties::new(raw))
    }

    /// The next property, `Ok(None)` at the end, `Err(Error::Protocol)` if malformed.
    pub fn next_prop(&mut self) -> Result<Option<Property<'a>>, Error> {
        self.0.next_prop().map_err(codec::protocol)
    }
}

#[cfg(feature = "v5")]
impl<'a> Iterator for Properties<'a> {
    type Item = Property<'a>;
    /// Yields properties until the end or the first malformed one.
    fn next(&mut self) -> Option<Property<'a>> {
        self.0.next().and_then(Result::ok)
    }
}

/// Moves `buf[from..end]` to `to` (like `copy_within`) in non-overlapping chunks, so only
/// `memcpy` is needed: `memmove` from compiler-builtins costs about 1.5 KB of flash on
/// Cortex-M, more than this whole function and its callers.
pub(crate) fn move_bytes(buf: &mut [u8], from: usize, end: usize, to: usize) {
    if to < from {
        let step = from - to;
        let (mut dst, mut src) = (to, from);
        while src < end {
            let n = (end - src).min(step);
            let (a, b) = buf.split_at_mut(src);
            a[dst..dst + n].copy_from_slice(&b[..n]);
            dst += n;
            src += n;
        }
    } else if to > from {
        let step = to - from;
        let mut src_end = end;
        while src_end > from {
            let n = (src_end - from).min(step);
            let (a, b) = buf.split_at_mut(src_end);
            b[step - n..step].copy_from_slice(&a[src_end - n..]);
            src_end -= n;
        }
    }
}

/// Races two futures; the first to complete wins and the other is dropped.
pub(crate) async fn select<A: Future, B: Future>(a: A, b: B) -> Result<A::Output, B::Output> {
    use core::task::Poll;
    let mut a = core::pin::pin!(a);
    let mut b = core::pin::pin!(b);
    core::future::poll_fn(|cx| {
        if let Poll::Ready(x) = a.as_mut().poll(cx) {
            return Poll::Ready(Ok(x));
        }
        if let Poll::Ready(y) = b.as_mut().poll(cx) {
            return Poll::Ready(Err(y));
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod move_tests {
    #[test]
    fn move_bytes_matches_copy_within() {
        for len in 0..12 {
            for from in 0..=len {
                for end in from..=len {
                    for to in 0..=len - (end - from) {
                        let mut a: [u8; 12] = core::array::from_fn(|i| i as u8);
                        let mut b = a;
                        a.copy_within(from..end, to);
                        super::move_bytes(&mut b, from, end, to);
                        assert_eq!(a, b, "from {from} end {end} to {to}");
                    }
                }
            }
        }
    }
}

#[cfg(all(test, feature = "v5"))]
mod tests {
    use super::*;

    #[test]
    fn properties_iterate_and_reject_garbage() {
        let raw = [
            0x01, 1, 0x03, 0, 2, b'a', b'b', 0x09, 0, 1, 7, 0x26, 0, 1, b'k', 0, 1, b'v', 0x0b,
            0x80, 0x01, 0x02, 0, 0, 0, 9,
        ];
        let mut it = Properties::new(&raw);
        assert_eq!(it.next(), Some(Property::Byte(1, 1)));
        assert_eq!(it.next(), Some(Property::Str(3, "ab")));
        assert_eq!(it.next(), Some(Property::Bin(9, &[7])));
        assert_eq!(it.next(), Some(Property::Pair("k", "v")));
        assert_eq!(it.next(), Some(Property::VarInt(0x0b, 128)));
        assert_eq!(it.next(), Some(Property::U32(2, 9)));
        assert_eq!(it.next(), None);
        assert_eq!(Properties::new(&[0x7f]).next_prop(), Err(Error::Protocol));
        assert_eq!(
            Properties::new(&[0x21, 0]).next_prop(),
            Err(Error::Protocol)
        );
    }
}
