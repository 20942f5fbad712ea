//! CONNECT: validate, attach to a session (new, resumed or taken over), answer CONNACK, and
//! resend what was in flight when a session resumes.

use std::sync::Arc;

use rand::RngExt;
use tracing::{debug, warn};

use crate::broker::{AttachRequest, Verdict};
use crate::codec::{ConnAck, ConnAckProperties, Connect, Packet, ReasonCode, Version};
use crate::session::NEVER_EXPIRES;

use super::{Attached, CertIdentity, Close, Connection, Transport};

impl<S: Transport> Connection<S> {
    /// Handles the CONNECT that opens the connection.
    pub(super) async fn handle_connect(&mut self, connect: Box<Connect>) -> Result<(), Close> {
        let connect = *connect;
        let version = connect.version;
        if connect.client_id.is_empty() && version == Version::V311 && !connect.clean_start {
            return self.refuse(version, ReasonCode::V3_IDENTIFIER_REJECTED);
        }
        if version == Version::V5 && connect.authentication_method.is_some() {
            // Enhanced authentication is not offered.
            return self.refuse(version, ReasonCode::BAD_AUTHENTICATION_METHOD);
        }
        let username = match self.authenticate(&connect).await {
            Ok(username) => username,
            Err(refusal) => return self.refuse(version, refusal),
        };
        let mut will = connect.will;
        let assigned = connect.client_id.is_empty();
        let client_id: Arc<str> = if assigned {
            Arc::from(format!("roost-{:016x}", rand::rng().random::<u64>()))
        } else {
            Arc::from(connect.client_id.as_str())
        };
        let expiry_interval = match version {
            Version::V311 if connect.clean_start => 0,
            Version::V311 => NEVER_EXPIRES,
            Version::V5 => connect.session_expiry_interval,
        };
        let config = &self.broker.config;
        let window = connect.receive_maximum.min(config.max_inflight_messages);
        let request = AttachRequest {
            client_id: Arc::clone(&client_id),
            clean_start: connect.clean_start,
            expiry_interval,
            version,
            window,
        };
        let (session, present) = self
            .broker
            .attach(&request, &self.link, &mut self.pending)
            .await;
        debug!(peer = %self.peer, %client_id, ?version, present, "client connected");
        let access = &self.broker.access;
        let acl = access.client_acl(username.as_deref(), &client_id);
        let acl_generation = access.generation();
        if let (Some(acl), Some(w)) = (&acl, &will)
            && !acl.check(&w.topic, crate::auth::Access::Write)
        {
            warn!(%client_id, topic = %w.topic, "will topic denied by ACL: will dropped");
            will = None;
        }
        session.slot.lock().acl = acl.clone();

        let properties = match version {
            Version::V311 => ConnAckProperties::default(),
            Version::V5 => ConnAckProperties {
                receive_maximum: Some(config.receive_maximum),
                maximum_packet_size: Some(config.max_packet_size),
                assigned_client_identifier: assigned.then(|| client_id.to_string()),
                topic_alias_maximum: Some(0),
                retain_available: Some(true),
                wildcard_subscription_available: Some(true),
                subscription_identifiers_available: Some(true),
                shared_subscription_available: Some(false),
                ..Default::default()
            },
        };
        self.state = Some(Attached {
            session: Arc::clone(&session),
            version,
            will,
            max_packet_out: connect.maximum_packet_size,
            expiry_at_connect: expiry_interval,
            keep_alive: connect.keep_alive,
            username,
            acl,
            acl_generation,
        });
        self.send(&Packet::ConnAck(ConnAck {
            session_present: present,
            code: ReasonCode::SUCCESS,
            properties,
        }))?;
        if present {
            // MQTT-4.4.0-1: unacknowledged PUBLISH (DUP=1) and PUBREL go out again first, in
            // order; the drain that follows sends them within the client's window.
            session.slot.lock().session.outbound.resend_inflight();
        }
        Ok(())
    }

    /// Checks the credentials (or the certificate identity). On refusal, waits the throttle
    /// delay and returns the CONNACK code to send.
    async fn authenticate(&self, connect: &Connect) -> Result<Option<String>, ReasonCode> {
        let v5 = connect.version == Version::V5;
        let identity = match &self.identity {
            CertIdentity::NotUsed => None,
            CertIdentity::Name(name) => Some(name.clone()),
            CertIdentity::Missing => {
                return Err(if v5 {
                    ReasonCode::NOT_AUTHORIZED
                } else {
                    ReasonCode::V3_NOT_AUTHORIZED
                });
            }
        };
        let access = &self.broker.access;
        let verdict = access
            .authenticate(identity, connect.username.clone(), connect.password.clone())
            .await;
        let refusal = match verdict {
            Verdict::Accepted(username) => {
                access.succeeded(self.peer.ip());
                return Ok(username);
            }
            Verdict::BadCredentials if v5 => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            Verdict::BadCredentials => ReasonCode::V3_BAD_USER_NAME_OR_PASSWORD,
            Verdict::NotAuthorized if v5 => ReasonCode::NOT_AUTHORIZED,
            Verdict::NotAuthorized => ReasonCode::V3_NOT_AUTHORIZED,
        };
        let delay = access.failure_delay(self.peer.ip());
        debug!(peer = %self.peer, ?delay, %refusal, "authentication failed");
        tokio::time::sleep(delay).await;
        Err(refusal)
    }

    /// Answers CONNACK with a refusal code and ends the connection (MQTT-3.2.2-5).
    fn refuse(&mut self, version: Version, code: ReasonCode) -> Result<(), Close> {
        debug!(peer = %self.peer, %code, "CONNECT refused");
        let connack = Packet::ConnAck(ConnAck {
            session_present: false,
            code,
            properties: ConnAckProperties::default(),
        });
        let _ = crate::codec::encode(&connack, version, None, &mut self.wbuf);
        Err(Close::Refused)
    }
}
