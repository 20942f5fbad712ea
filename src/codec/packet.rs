//! The packet model shared by the decoder, the encoder and the rest of the broker.
//!
//! One type per MQTT control packet, covering both protocol versions. Fields that exist only in
//! MQTT 5.0 are ignored when a packet is encoded for 3.1.1.

use bytes::Bytes;
pub use roost_wire::QoS;
use roost_wire::ReasonCode;

/// The protocol version a connection is locked to by its CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5.0 (protocol level 5).
    V5,
}

/// A user property: a UTF-8 key/value pair (MQTT 5.0).
pub type UserProperty = (String, String);

/// Application-message properties carried by PUBLISH and by a will (MQTT 5.0).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishProperties {
    /// Payload format indicator (0 = bytes, 1 = UTF-8).
    pub payload_format_indicator: Option<u8>,
    /// Message expiry interval in seconds.
    pub message_expiry_interval: Option<u32>,
    /// Content type.
    pub content_type: Option<String>,
    /// Response topic.
    pub response_topic: Option<String>,
    /// Correlation data.
    pub correlation_data: Option<Bytes>,
    /// User properties, in order.
    pub user_properties: Vec<UserProperty>,
}

impl PublishProperties {
    /// True when no property is set.
    pub fn is_empty(&self) -> bool {
        self == &PublishProperties::default()
    }
}

/// The last will carried by CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Topic the will is published to.
    pub topic: String,
    /// Will payload.
    pub payload: Bytes,
    /// QoS of the will message.
    pub qos: QoS,
    /// Whether the will is retained.
    pub retain: bool,
    /// Will delay interval in seconds (MQTT 5.0; 0 for 3.1.1).
    pub delay_interval: u32,
    /// Message properties of the will (MQTT 5.0).
    pub properties: PublishProperties,
}

/// CONNECT, client to server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol version from the protocol level byte.
    pub version: Version,
    /// Client identifier (may be empty).
    pub client_id: String,
    /// Clean session (3.1.1) / clean start (5.0).
    pub clean_start: bool,
    /// Keep alive in seconds; 0 disables it.
    pub keep_alive: u16,
    /// Last will, if any.
    pub will: Option<Will>,
    /// User name, if the flag is set.
    pub username: Option<String>,
    /// Password, if the flag is set. Binary data is allowed.
    pub password: Option<Bytes>,
    /// Session expiry interval (MQTT 5.0 property; 0 when absent).
    pub session_expiry_interval: u32,
    /// Receive maximum (MQTT 5.0; 65535 when absent).
    pub receive_maximum: u16,
    /// Maximum packet size the client accepts (MQTT 5.0).
    pub maximum_packet_size: Option<u32>,
    /// Topic alias maximum the client accepts (MQTT 5.0; 0 when absent).
    pub topic_alias_maximum: u16,
    /// Request response information (MQTT 5.0).
    pub request_response_information: bool,
    /// Request problem information (MQTT 5.0; true when absent).
    pub request_problem_information: bool,
    /// User properties (MQTT 5.0).
    pub user_properties: Vec<UserProperty>,
    /// Authentication method (MQTT 5.0).
    pub authentication_method: Option<String>,
    /// Authentication data (MQTT 5.0).
    pub authentication_data: Option<Bytes>,
    /// MQTT 3.1 (protocol name "MQIsdp", level 3), which shares 3.1.1's wire format:
    /// `version` is [`Version::V311`].
    pub mqtt31: bool,
    /// The bridge bit of the protocol level was set (a broker connecting as a bridge).
    pub bridge: bool,
}

impl Connect {
    /// A CONNECT for `client_id` with clean start, no keep alive, no will and no credentials,
    /// and the MQTT 5.0 values a client sends when it sets none (Receive Maximum 65535,
    /// Request Problem Information on).
    pub fn new(version: Version, client_id: &str) -> Connect {
        Connect {
            version,
            client_id: client_id.to_string(),
            clean_start: true,
            keep_alive: 0,
            will: None,
            username: None,
            password: None,
            session_expiry_interval: 0,
            receive_maximum: 65535,
            maximum_packet_size: None,
            topic_alias_maximum: 0,
            request_response_information: false,
            request_problem_information: true,
            user_properties: Vec::new(),
            authentication_method: None,
            authentication_data: None,
            mqtt31: false,
            bridge: false,
        }
    }
}

/// Properties the server may put in CONNACK (MQTT 5.0).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnAckProperties {
    /// Session expiry interval the server chose, when it differs from the request.
    pub session_expiry_interval: Option<u32>,
    /// Server receive maximum.
    pub receive_maximum: Option<u16>,
    /// Maximum QoS the server supports (0 or 1; absent means 2).
    pub maximum_qos: Option<u8>,
    /// Retain available (absent means yes).
    pub retain_available: Option<bool>,
    /// Maximum packet size the server accepts.
    pub maximum_packet_size: Option<u32>,
    /// Client identifier assigned by the server.
    pub assigned_client_identifier: Option<String>,
    /// Topic alias maximum the server accepts.
    pub topic_alias_maximum: Option<u16>,
    /// Reason string.
    pub reason_string: Option<String>,
    /// Wildcard subscription available (absent means yes).
    pub wildcard_subscription_available: Option<bool>,
    /// Subscription identifiers available (absent means yes).
    pub subscription_identifiers_available: Option<bool>,
    /// Shared subscription available (absent means yes).
    pub shared_subscription_available: Option<bool>,
    /// Keep alive the server imposes.
    pub server_keep_alive: Option<u16>,
    /// Response Information: the basis of response topics, when the client asked for it.
    pub response_information: Option<String>,
}

/// CONNACK, server to client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Session present flag.
    pub session_present: bool,
    /// 3.1.1 return code or 5.0 reason code, as written on the wire.
    pub code: ReasonCode,
    /// MQTT 5.0 properties (ignored for 3.1.1).
    pub properties: ConnAckProperties,
}

/// PUBLISH, either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// DUP flag.
    pub dup: bool,
    /// QoS level.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic name (may be empty in 5.0 when a topic alias is used).
    pub topic: String,
    /// Packet identifier; 0 for QoS 0.
    pub packet_id: u16,
    /// Application payload.
    pub payload: Bytes,
    /// Message properties (MQTT 5.0).
    pub properties: PublishProperties,
    /// Topic alias (MQTT 5.0).
    pub topic_alias: Option<u16>,
    /// Subscription identifiers (MQTT 5.0, server to client only).
    pub subscription_identifiers: Vec<u32>,
}

/// Which acknowledgement a [`PubAckLike`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckKind {
    /// PUBACK (QoS 1).
    PubAck,
    /// PUBREC (QoS 2, step 1).
    PubRec,
    /// PUBREL (QoS 2, step 2).
    PubRel,
    /// PUBCOMP (QoS 2, step 3).
    PubComp,
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP: a packet id and a reason code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubAckLike {
    /// Which of the four packets this is.
    pub kind: AckKind,
    /// Packet identifier (never 0).
    pub packet_id: u16,
    /// MQTT 5.0 reason code (success; always success for 3.1.1).
    pub reason: ReasonCode,
    /// MQTT 5.0 reason string.
    pub reason_string: Option<String>,
}

impl PubAckLike {
    /// A successful `kind` for `packet_id`, without a Reason String.
    pub fn new(kind: AckKind, packet_id: u16) -> PubAckLike {
        PubAckLike {
            kind,
            packet_id,
            reason: ReasonCode::SUCCESS,
            reason_string: None,
        }
    }
}

/// Retain handling subscription option (MQTT 5.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetainHandling {
    /// Send retained messages at the time of the subscribe.
    OnSubscribe = 0,
    /// Send retained messages only if the subscription did not exist.
    OnNewSubscribe = 1,
    /// Never send retained messages for this subscribe.
    Never = 2,
}

/// One topic filter in SUBSCRIBE with its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeFilter {
    /// The topic filter (validated by the decoder).
    pub filter: String,
    /// Maximum QoS requested.
    pub qos: QoS,
    /// No local (MQTT 5.0).
    pub no_local: bool,
    /// Retain as published (MQTT 5.0).
    pub retain_as_published: bool,
    /// Retain handling (MQTT 5.0).
    pub retain_handling: RetainHandling,
}

/// SUBSCRIBE, client to server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier.
    pub packet_id: u16,
    /// At least one filter.
    pub filters: Vec<SubscribeFilter>,
    /// Subscription identifier (MQTT 5.0).
    pub subscription_identifier: Option<u32>,
    /// User properties (MQTT 5.0).
    pub user_properties: Vec<UserProperty>,
}

impl Subscribe {
    /// A SUBSCRIBE to one `filter` at `qos` with the default options (No Local and Retain As
    /// Published off, retained messages sent on subscribe).
    pub fn single(packet_id: u16, filter: &str, qos: QoS) -> Subscribe {
        Subscribe {
            packet_id,
            filters: vec![SubscribeFilter {
                filter: filter.to_string(),
                qos,
                no_local: false,
                retain_as_published: false,
                retain_handling: RetainHandling::OnSubscribe,
            }],
            subscription_identifier: None,
            user_properties: Vec::new(),
        }
    }
}

/// SUBACK, server to client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet identifier of the SUBSCRIBE.
    pub packet_id: u16,
    /// One code per filter: granted QoS (0..=2) or a failure code (0x80 in 3.1.1, 5.0 codes).
    pub codes: Vec<ReasonCode>,
}

/// UNSUBSCRIBE, client to server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier.
    pub packet_id: u16,
    /// At least one filter.
    pub filters: Vec<String>,
    /// User properties (MQTT 5.0).
    pub user_properties: Vec<UserProperty>,
}

/// UNSUBACK, server to client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet identifier of the UNSUBSCRIBE.
    pub packet_id: u16,
    /// One reason code per filter (MQTT 5.0 only; not written for 3.1.1).
    pub codes: Vec<ReasonCode>,
}

/// DISCONNECT, either direction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Disconnect {
    /// Reason code (MQTT 5.0; success = normal disconnection).
    pub reason: ReasonCode,
    /// Session expiry interval update (MQTT 5.0, client to server).
    pub session_expiry_interval: Option<u32>,
    /// Reason string (MQTT 5.0).
    pub reason_string: Option<String>,
    /// Server reference (MQTT 5.0, server to client).
    pub server_reference: Option<String>,
}

/// AUTH (MQTT 5.0).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Auth {
    /// Reason code (0x00 success, 0x18 continue, 0x19 re-authenticate).
    pub reason: ReasonCode,
    /// Authentication method.
    pub method: Option<String>,
    /// Authentication data.
    pub data: Option<Bytes>,
}

/// Any MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Packet {
    /// CONNECT.
    Connect(Box<Connect>),
    /// CONNACK.
    ConnAck(ConnAck),
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK, PUBREC, PUBREL or PUBCOMP.
    Ack(PubAckLike),
    /// SUBSCRIBE.
    Subscribe(Subscribe),
    /// SUBACK.
    SubAck(SubAck),
    /// UNSUBSCRIBE.
    Unsubscribe(Unsubscribe),
    /// UNSUBACK.
    UnsubAck(UnsubAck),
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// DISCONNECT.
    Disconnect(Disconnect),
    /// AUTH (MQTT 5.0).
    Auth(Auth),
}
