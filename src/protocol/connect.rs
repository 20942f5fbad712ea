//! CONNECT: read it, check it, plan the session it asks for, and once the driver has attached
//! one, answer CONNACK and resend what was in flight when a session resumes.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tracing::{debug, warn};

use crate::auth::Access;
use crate::broker::{AttachRequest, Broker, Pending, SessionHandle, Verdict};
use crate::codec::{
    ConnAck, ConnAckProperties, Connect, DecodeError, Decoder, Packet, ReasonCode, Version,
};
use crate::config::QueueFullPolicy;
use crate::session::NEVER_EXPIRES;

use super::{Close, Connected};

/// A connection that has not been accepted yet: only a CONNECT may come.
#[derive(Debug)]
pub(crate) struct AwaitingConnect {
    broker: Arc<Broker>,
    peer: SocketAddr,
    queue_full: QueueFullPolicy,
    decoder: Decoder,
    out: BytesMut,
    pending: Pending,
    /// The connection is the broker's own (a bridge's local side): no ACL applies.
    trusted: bool,
}

/// What an acceptable CONNECT asks for, before a session is attached.
#[derive(Debug, Clone)]
pub(crate) struct ConnectPlan {
    /// The session to attach (with the client id assigned if the client sent none).
    pub request: AttachRequest,
    /// The client id was assigned by the broker (MQTT 5.0 says so in CONNACK).
    pub assigned: bool,
    /// The keep alive the connection is held to, in seconds (0: none).
    pub keep_alive: u16,
    /// Set when the broker overrides the client's keep alive (MQTT 5.0 Server Keep Alive).
    pub server_keep_alive: Option<u16>,
}

/// The CONNACK code refusing a client whose authentication gave `verdict`, `None` if it was
/// accepted (MQTT-3.1.4-2; 3.1.1 table 3.1, MQTT 5.0 section 3.2.2.2).
pub(crate) fn refusal(verdict: &Verdict, version: Version) -> Option<ReasonCode> {
    let v5 = version == Version::V5;
    Some(match verdict {
        Verdict::Accepted(_) => return None,
        Verdict::BadCredentials if v5 => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        Verdict::BadCredentials => ReasonCode::V3_BAD_USER_NAME_OR_PASSWORD,
        Verdict::NotAuthorized if v5 => ReasonCode::NOT_AUTHORIZED,
        Verdict::NotAuthorized => ReasonCode::V3_NOT_AUTHORIZED,
    })
}

impl AwaitingConnect {
    /// A new connection from `peer`; `queue_full` is its listener's policy for PUBLISH packets
    /// that meet a full queue.
    pub(crate) fn new(broker: Arc<Broker>, peer: SocketAddr, queue_full: QueueFullPolicy) -> Self {
        // Before authentication only a CONNECT of modest size is read (a large one would hold
        // memory for anyone who can open a socket); the full limit applies afterwards.
        let max_packet = broker
            .config
            .max_connect_packet_size
            .min(broker.config.max_packet_size) as usize;
        let persistent = broker.persistent();
        AwaitingConnect {
            broker,
            peer,
            queue_full,
            decoder: Decoder::server(max_packet),
            out: BytesMut::new(),
            pending: Pending::new(persistent),
            trusted: false,
        }
    }

    /// Marks the connection as the broker's own (a bridge's local side): the ACL does not
    /// apply to it.
    pub(crate) fn trust(&mut self) {
        self.trusted = true;
    }

    /// Decodes the first packet, which must be a CONNECT. `Ok(None)`: more bytes are needed.
    /// An unsupported protocol level is answered with CONNACK 0x01 (MQTT-3.1.2-2); anything
    /// else closes without an answer (MQTT-3.1.0-1).
    pub(crate) fn read_connect(
        &mut self,
        input: &mut BytesMut,
    ) -> Result<Option<Box<Connect>>, Close> {
        match self.decoder.decode(input) {
            Ok(Some(Packet::Connect(connect))) => Ok(Some(connect)),
            Ok(Some(_)) => Err(Close::Io),
            Ok(None) => Ok(None),
            Err(DecodeError::UnsupportedProtocol { level }) => {
                debug!(peer = %self.peer, level, "unsupported protocol level");
                let code = ReasonCode::V3_UNACCEPTABLE_PROTOCOL_VERSION.0;
                self.out.extend_from_slice(&[0x20, 0x02, 0x00, code]);
                Err(Close::Refused)
            }
            Err(e @ DecodeError::TooLarge { .. }) => {
                // Over max_connect_packet_size: worth an operator's attention (a client may
                // carry a large will or password), paced like other refusals.
                if let Some(held_back) = self
                    .broker
                    .metrics
                    .connect_log
                    .allow(crate::broker::metrics::LOG_BURST)
                {
                    tracing::info!(peer = %self.peer, error = %e, held_back, "CONNECT over max_connect_packet_size: closed");
                }
                crate::broker::Metrics::inc(&self.broker.metrics.protocol_errors);
                Err(Close::Io)
            }
            Err(e) => {
                debug!(peer = %self.peer, error = %e, "bad CONNECT");
                crate::broker::Metrics::inc(&self.broker.metrics.protocol_errors);
                Err(Close::Io)
            }
        }
    }

    /// Checks what can be checked before authentication and plans the session; `Err` is the
    /// CONNACK code to refuse with.
    pub(crate) fn plan(&self, connect: &Connect) -> Result<ConnectPlan, ReasonCode> {
        let version = connect.version;
        if connect.client_id.is_empty() && version == Version::V311 && !connect.clean_start {
            // MQTT-3.1.3-8: a zero-byte client id needs clean session.
            return Err(ReasonCode::V3_IDENTIFIER_REJECTED);
        }
        if connect.mqtt31 && !(1..=23).contains(&connect.client_id.chars().count()) {
            // MQTT 3.1: a client id is 1 to 23 characters; anything else gets CONNACK 0x02.
            return Err(ReasonCode::V3_IDENTIFIER_REJECTED);
        }
        if !self.trusted && self.broker.bridges.is_local_client_id(&connect.client_id) {
            // A bridge's local Session holds what waits for its remote broker: no client may
            // take it over (and end it, or empty it).
            return Err(match version {
                Version::V5 => ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                Version::V311 => ReasonCode::V3_IDENTIFIER_REJECTED,
            });
        }
        if version == Version::V5 && connect.authentication_method.is_some() {
            // Enhanced authentication is not offered.
            return Err(ReasonCode::BAD_AUTHENTICATION_METHOD);
        }
        // `max_keepalive`: a keep alive over the limit, or none at all, is held to the limit;
        // only MQTT 5.0 can say so (Server Keep Alive, MQTT 5.0 3.2.2.3.14).
        // The broker's own connections (a bridge's local side) send no PINGREQ: no limit.
        let max = if self.trusted {
            0
        } else {
            self.broker.config.max_keepalive
        };
        let over = max != 0 && (connect.keep_alive == 0 || connect.keep_alive > max);
        let (keep_alive, server_keep_alive) = match (over, version) {
            (false, _) => (connect.keep_alive, None),
            (true, Version::V5) => (max, Some(max)),
            (true, Version::V311) => return Err(ReasonCode::V3_IDENTIFIER_REJECTED),
        };
        let assigned = connect.client_id.is_empty();
        let client_id: Arc<str> = if assigned {
            use rand::RngExt;
            Arc::from(format!("roost-{:016x}", rand::rng().random::<u64>()))
        } else {
            Arc::from(connect.client_id.as_str())
        };
        let expiry_interval = match version {
            Version::V311 if connect.clean_start => 0,
            Version::V311 => NEVER_EXPIRES,
            Version::V5 => connect.session_expiry_interval,
        };
        if expiry_interval != 0 && !self.broker.store_healthy() {
            // A durable session cannot be recorded while the store cannot write: refused
            // with a CONNACK (MQTT-3.2.0-1), the client tries again later.
            return Err(match version {
                Version::V5 => ReasonCode::SERVER_UNAVAILABLE,
                Version::V311 => ReasonCode::V3_SERVER_UNAVAILABLE,
            });
        }
        let window = connect
            .receive_maximum
            .min(self.broker.config.max_inflight_messages);
        Ok(ConnectPlan {
            request: AttachRequest {
                client_id,
                clean_start: connect.clean_start,
                expiry_interval,
                version,
                window,
                owner: None,
            },
            assigned,
            keep_alive,
            server_keep_alive,
        })
    }

    /// Where the broker records the store changes of attaching the session (they are
    /// committed before CONNACK goes out).
    pub(crate) fn pending_mut(&mut self) -> &mut Pending {
        &mut self.pending
    }

    /// Answers CONNACK with refusal `code` (MQTT-3.2.2-5); the connection then closes.
    pub(crate) fn refuse(&mut self, connect: &Connect, code: ReasonCode) -> Close {
        let version = connect.version;
        let connack = Packet::ConnAck(ConnAck {
            session_present: false,
            code,
            properties: ConnAckProperties {
                // A Reason String is always allowed on CONNACK (MQTT-3.1.2-29).
                reason_string: (version == Version::V5).then(|| code.to_string()),
                ..Default::default()
            },
        });
        let max = connect.maximum_packet_size;
        super::outgoing::send_within(&connack, version, max, &mut self.out, self.peer);
        Close::Refused
    }

    /// What is ready to be written (a refusal).
    pub(crate) fn output(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    /// Accepts the CONNECT on `session` (attached by the driver; `present` is Session
    /// Present) for the authenticated `username`: answers CONNACK and, for a resumed session,
    /// queues the resend of what was in flight (MQTT-4.4.0-1).
    pub(crate) fn accept(
        self,
        connect: Connect,
        plan: ConnectPlan,
        session: Arc<SessionHandle>,
        present: bool,
        username: Option<String>,
        now: Instant,
    ) -> Connected {
        let version = connect.version;
        let client_id = &plan.request.client_id;
        let config = &self.broker.config;
        let max_packet = config.max_packet_size as usize;
        let access = &self.broker.access;
        let acl = if self.trusted {
            None
        } else {
            access.client_acl(username.as_deref(), client_id)
        };
        let acl_generation = access.generation();
        let mut will = connect.will.map(|mut will| {
            // Kept for the whole connection (and a will delay after it), the CONNECT's read
            // buffer is not.
            will.payload =
                crate::session::kept_payload(std::mem::take(&mut will.payload), usize::MAX);
            crate::session::kept_properties(&mut will.properties);
            Box::new(will)
        });
        if let (Some(acl), Some(w)) = (&acl, &will)
            && !acl.check(&w.topic, Access::Write)
        {
            warn!(
                client_id = &**client_id,
                topic = w.topic.as_str(),
                "will topic denied by ACL: will dropped"
            );
            will = None;
        }
        session.slot.lock().acl = acl.clone();
        let properties = match version {
            Version::V311 => ConnAckProperties::default(),
            Version::V5 => ConnAckProperties {
                receive_maximum: Some(config.receive_maximum),
                maximum_packet_size: Some(config.max_packet_size),
                assigned_client_identifier: plan.assigned.then(|| client_id.to_string()),
                topic_alias_maximum: Some(config.topic_alias_maximum),
                retain_available: Some(true),
                wildcard_subscription_available: Some(true),
                subscription_identifiers_available: Some(true),
                shared_subscription_available: Some(true),
                server_keep_alive: plan.server_keep_alive,
                // MQTT 5.0 4.10: a basis for response topics, when asked for.
                // Only for an id that is one valid topic level: another id would make a
                // topic with wildcards, or one inside another client's topics.
                response_information: (connect.request_response_information
                    && !client_id.contains(['/', '+', '#']))
                .then(|| format!("{}{client_id}/", config.response_topic_prefix)),
                ..Default::default()
            },
        };
        let alias_max = match version {
            Version::V5 => config.topic_alias_maximum,
            Version::V311 => 0,
        };
        let keep_alive = match plan.keep_alive {
            0 => None,
            secs => Some(Duration::from_millis(u64::from(secs) * 1500)),
        };
        // MQTT 3.1's CONNACK has no Session Present flag (its first byte is reserved).
        let present_flag = present && !connect.mqtt31;
        let mut connected = Connected {
            broker: self.broker,
            peer: self.peer,
            session: Arc::clone(&session),
            version,
            will,
            max_packet_out: connect.maximum_packet_size,
            expiry_at_connect: plan.request.expiry_interval,
            keep_alive,
            deadline: keep_alive.map(|k| now + k),
            username,
            acl,
            acl_generation,
            queue_full: self.queue_full,
            problem_information: connect.request_problem_information,
            aliases_in: super::alias::InboundAliases::new(alias_max),
            aliases_out: super::alias::OutboundAliases::new(match version {
                Version::V5 => connect.topic_alias_maximum,
                Version::V311 => 0,
            }),
            bridge: connect.bridge,
            trusted: self.trusted,
            decoder: {
                let mut decoder = self.decoder;
                decoder.set_max_packet_size(max_packet);
                decoder
            },
            out: self.out,
            pending: self.pending,
            acknowledged: false,
            committing: None,
            transmits: Vec::new(),
            more_to_send: false,
            stall: None,
            held: VecDeque::new(),
            held_bytes: 0,
        };
        let _ = connected.send(&Packet::ConnAck(ConnAck {
            session_present: present_flag,
            code: ReasonCode::SUCCESS,
            properties,
        }));
        if present {
            // MQTT-4.4.0-1: unacknowledged PUBLISH (DUP=1) and PUBREL go out again first, in
            // order; the transmit that follows sends them within the client's window.
            session.slot.lock().session.outbound.resend_inflight();
        }
        connected
    }
}
