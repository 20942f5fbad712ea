//! SUBSCRIBE and UNSUBSCRIBE: update the session and the trie, answer SUBACK / UNSUBACK, and
//! queue the retained messages a new subscription is owed.

use tracing::{debug, info};

use std::sync::Arc;

use crate::auth::Access;
use crate::codec::{
    Packet, ReasonCode, RetainHandling, SubAck, Subscribe, UnsubAck, Unsubscribe, Version,
};
use crate::session::{Delivery, SubOptions};
use crate::store::Op;
use crate::topic;

use super::{Close, Connected};

/// The longest Shared Subscription filter (`$share/{ShareName}/{filter}`, in bytes) accepted:
/// each message queued through one carries it in the store.
pub(crate) const MAX_SHARED_FILTER_BYTES: usize = 512;

/// The SUBACK code refusing one filter: `v5` for MQTT 5.0, 0x80 for 3.1.1 (which has one
/// failure code).
fn refused(version: Version, v5: ReasonCode) -> ReasonCode {
    match version {
        Version::V5 => v5,
        Version::V311 => ReasonCode::V3_SUBSCRIBE_FAILURE,
    }
}

impl Connected {
    pub(super) fn handle_subscribe(&mut self, subscribe: Subscribe) -> Result<(), Close> {
        let session = std::sync::Arc::clone(&self.session);
        let broker = std::sync::Arc::clone(&self.broker);
        let version = self.version;
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        let mut retained: Vec<Delivery> = Vec::new();
        // Each retained topic once per SUBSCRIBE, however many of its filters match it: at the
        // highest QoS granted, with every subscription identifier (as for routing,
        // MQTT-3.3.5-1).
        let mut retained_at: std::collections::HashMap<Arc<str>, usize> =
            std::collections::HashMap::new();
        for f in subscribe.filters {
            // A Shared Subscription: the ACL is checked against its Topic Filter, and it gets
            // no retained messages (MQTT 5.0 4.8.2).
            let (matched_filter, shared) = match topic::shared(&f.filter) {
                None => (f.filter.as_str(), false),
                Some(Ok(_)) if f.filter.len() > MAX_SHARED_FILTER_BYTES => {
                    // Kept with every message queued through it: bounded.
                    debug!(
                        client_id = &*session.client_id,
                        len = f.filter.len(),
                        "shared subscription filter too long"
                    );
                    codes.push(refused(version, ReasonCode::QUOTA_EXCEEDED));
                    continue;
                }
                Some(Ok(shared)) => (shared.filter, true),
                Some(Err(())) => {
                    // MQTT-4.8.2-1, MQTT-4.8.2-2.
                    debug!(
                        client_id = &*session.client_id,
                        filter = f.filter.as_str(),
                        "invalid shared subscription"
                    );
                    codes.push(refused(version, ReasonCode::TOPIC_FILTER_INVALID));
                    continue;
                }
            };
            if let Some(cluster) = &self.broker.cluster
                && let Err(why) = cluster.can_subscribe(&f.filter)
            {
                debug!(
                    client_id = &*session.client_id,
                    filter = f.filter.as_str(),
                    %why,
                    "SUBSCRIBE refused: the filter has no NATS subject"
                );
                codes.push(refused(version, ReasonCode::TOPIC_FILTER_INVALID));
                continue;
            }
            // Until the membership is added: another SUBSCRIBE must not take the same room.
            let joining = match &broker.cluster {
                Some(cluster) if shared && !crate::cluster::is_local(matched_filter) => {
                    Some(cluster.interest().joining())
                }
                _ => None,
            };
            if let Some(cluster) = &broker.cluster
                && joining.is_some()
                && !cluster
                    .interest()
                    .group_has_room(&f.filter, cluster.config.max_shared_groups)
            {
                // Each group costs the cluster JetStream consumers: bounded.
                info!(
                    client_id = &*session.client_id,
                    filter = f.filter.as_str(),
                    max = cluster.config.max_shared_groups,
                    "SUBSCRIBE refused: this node's clients are members of cluster.max_shared_groups groups already"
                );
                codes.push(refused(version, ReasonCode::QUOTA_EXCEEDED));
                continue;
            }
            if !self.allowed(matched_filter, Access::Read) {
                crate::broker::Metrics::inc(&self.broker.metrics.acl_denied);
                debug!(
                    client_id = &*session.client_id,
                    filter = f.filter.as_str(),
                    "SUBSCRIBE denied by ACL"
                );
                codes.push(refused(version, ReasonCode::NOT_AUTHORIZED));
                continue;
            }
            let options = SubOptions {
                qos: f.qos,
                // No Local on a Shared Subscription is refused by the codec (MQTT-3.8.3-4); a
                // bridge's messages reach its own group's other members.
                no_local: f.no_local || (self.bridge && !shared),
                retain_as_published: f.retain_as_published || self.bridge,
                retain_handling: f.retain_handling,
                subscription_id: subscribe.subscription_identifier,
            };
            let (existed, persisted) = {
                let mut slot = session.slot.lock();
                let existed = slot
                    .session
                    .subscriptions
                    .insert(f.filter.clone(), options)
                    .is_some();
                (existed, slot.persisted)
            };
            self.broker.router.subscribe(&f.filter, &session, options);
            if persisted {
                let p = &mut self.pending;
                p.push(Op::PutSubscription {
                    session: session.store_key(),
                    filter: f.filter.clone(),
                    options,
                });
            }
            codes.push(ReasonCode(f.qos as u8));
            let send_retained = !shared
                && match f.retain_handling {
                    RetainHandling::OnSubscribe => true,
                    RetainHandling::OnNewSubscribe => !existed,
                    RetainHandling::Never => false,
                };
            if send_retained {
                // MQTT-3.3.1-6 / MQTT-3.3.1-8: retained messages go out with RETAIN=1.
                for (message, gate) in self.broker.router.retained_matching(&f.filter) {
                    let qos = message.qos.min(f.qos);
                    if let Some(&i) = retained_at.get(&message.topic) {
                        retained[i].qos = retained[i].qos.max(qos);
                        continue;
                    }
                    retained_at.insert(Arc::clone(&message.topic), retained.len());
                    let ids = options.subscription_id.into_iter().collect();
                    let mut delivery = Delivery::new(message, qos, true, ids);
                    // Not before the publisher's own commit of it returned.
                    if let Some(gate) = &gate {
                        self.pending.foreign_gates.push(Arc::clone(gate));
                    }
                    delivery.gate = gate;
                    retained.push(delivery);
                }
            }
        }
        // In cluster mode the other nodes learn a durable Session's new subscriptions.
        crate::cluster::follow::changed(&self.broker, &session);
        self.send(&Packet::SubAck(SubAck {
            packet_id: subscribe.packet_id,
            codes,
        }))?;
        if !retained.is_empty() {
            // Streamed: sent ahead of the queue as the client's window allows, however many
            // there are, without filling the queue (they are shared with the retained index).
            let mut slot = session.slot.lock();
            if let Some(acl) = slot.acl.clone() {
                retained.retain(|d| acl.check(&d.message.topic, Access::Read));
            }
            for delivery in retained {
                // A topic still waiting from an earlier SUBSCRIBE is merged, not added twice.
                slot.session.outbound.push_retained(delivery);
            }
            drop(slot);
            self.pending.wake.push(Arc::clone(&session));
        }
        Ok(())
    }

    pub(super) fn handle_unsubscribe(&mut self, unsubscribe: Unsubscribe) -> Result<(), Close> {
        let session = std::sync::Arc::clone(&self.session);
        let mut codes = Vec::with_capacity(unsubscribe.filters.len());
        for filter in &unsubscribe.filters {
            let (existed, persisted) = {
                let mut slot = session.slot.lock();
                (
                    slot.session.subscriptions.remove(filter).is_some(),
                    slot.persisted,
                )
            };
            self.broker.router.unsubscribe(filter, session.key);
            if existed && persisted {
                let p = &mut self.pending;
                p.push(Op::DeleteSubscription {
                    session: session.store_key(),
                    filter: filter.clone(),
                });
            }
            codes.push(if existed {
                ReasonCode::SUCCESS
            } else {
                ReasonCode::NO_SUBSCRIPTION_EXISTED
            });
        }
        crate::cluster::follow::changed(&self.broker, &session);
        self.send(&Packet::UnsubAck(UnsubAck {
            packet_id: unsubscribe.packet_id,
            codes,
        }))
    }
}
