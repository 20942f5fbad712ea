//! Will messages: published when a connection ends without a normal DISCONNECT, at once or
//! after the Will Delay Interval (MQTT 5.0), whichever comes first of that delay and the end
//! of the session (MQTT-3.1.2-8).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::debug;

use crate::codec::Will;
use crate::session::{Message, MessageId};

use super::Broker;
use super::handle::{Absence, SessionHandle};
use super::metrics::Metrics;

/// Builds the application message a will stands for, published at `now` (its Message Expiry
/// Interval counts from then).
pub(crate) fn will_message(will: &Will, id: Option<MessageId>, now: Instant) -> Message {
    Message {
        id,
        topic: Arc::from(will.topic.as_str()),
        payload: will.payload.clone(),
        qos: will.qos,
        retain: will.retain,
        properties: will.properties.clone(),
        stream_seq: None,
        expires_at: will
            .properties
            .message_expiry_interval
            .map(|s| now + Duration::from_secs(u64::from(s))),
    }
}

/// Called once a will was published or cancelled.
pub(crate) type WillDone = Box<dyn FnOnce() + Send>;

impl Broker {
    /// Publishes `will` now, as if its client had published it.
    pub(crate) fn publish_will(&self, will: &Will, publisher: Option<&SessionHandle>) {
        let message = Arc::new(will_message(will, self.message_id(), self.clock.now()));
        Metrics::inc(&self.metrics.wills_published);
        debug!(topic = %message.topic, "publishing will");
        self.publish_detached(&message, publisher);
    }

    /// Publishes `will` for a connection that ended abnormally. With a will delay and a
    /// session that lives on (`away` is its absence, from [`Broker::detach`]), waits until the
    /// delay has passed since the disconnection, or the end of the session, and publishes
    /// only if no connection resumed the session meanwhile (MQTT-3.1.3-9, MQTT-3.1.2-8).
    /// Without `away` the session has ended: publish now.
    /// `done` runs once the will was published or cancelled.
    pub(crate) fn schedule_will(
        &self,
        will: Will,
        session: &Arc<SessionHandle>,
        away: Option<Absence>,
        done: Option<WillDone>,
    ) {
        let Absence { since, token: away } = match away {
            Some(away) if will.delay_interval > 0 => away,
            _ => {
                self.publish_will(&will, Some(session));
                if let Some(done) = done {
                    done();
                }
                return;
            }
        };
        let Some(broker) = self.me.upgrade() else {
            return;
        };
        let session = Arc::clone(session);
        let deadline = since + Duration::from_secs(u64::from(will.delay_interval));
        tokio::spawn(async move {
            tokio::select! {
                _ = broker.clock.sleep_until(deadline) => {}
                _ = away.cancelled() => {}
                _ = broker.shutdown.cancelled() => return,
            }
            // `ended` is set under the slot lock before `away` is cancelled, so a cancelled
            // token on a live session means a reconnect.
            let resumed = {
                let slot = session.slot.lock();
                !slot.ended && away.is_cancelled()
            };
            if !resumed {
                broker.publish_will(&will, Some(&session));
            }
            if let Some(done) = done {
                done();
            }
        });
    }
}
