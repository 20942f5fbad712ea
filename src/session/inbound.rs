//! Client-to-server QoS 2 flow: packet ids received and not yet released.

use std::collections::BTreeSet;

/// What to do with an incoming QoS 2 PUBLISH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Qos2Publish {
    /// First time this packet id is seen: deliver the message, then answer PUBREC.
    Deliver,
    /// The id is still awaiting PUBREL: a retransmission. Answer PUBREC, deliver nothing
    /// (MQTT-4.3.3-9 / MQTT-4.3.3-10 method B).
    Duplicate,
}

/// The inbound half of a session.
#[derive(Debug, Default)]
pub(crate) struct Inbound {
    awaiting_rel: BTreeSet<u16>,
}

impl Inbound {
    /// Records a QoS 2 PUBLISH and says whether it is new.
    pub(crate) fn on_publish_qos2(&mut self, packet_id: u16) -> Qos2Publish {
        if self.awaiting_rel.insert(packet_id) {
            Qos2Publish::Deliver
        } else {
            Qos2Publish::Duplicate
        }
    }

    /// Whether a QoS 2 packet id is awaiting PUBREL.
    pub(crate) fn is_pending(&self, packet_id: u16) -> bool {
        self.awaiting_rel.contains(&packet_id)
    }

    /// PUBREL: forgets the id. Returns false if it was not pending (the PUBCOMP is still sent;
    /// MQTT 5.0 uses reason 0x92).
    pub(crate) fn on_pubrel(&mut self, packet_id: u16) -> bool {
        self.awaiting_rel.remove(&packet_id)
    }

    /// The QoS 2 ids awaiting PUBREL.
    pub(crate) fn pending_ids(&self) -> Vec<u16> {
        let mut ids: Vec<u16> = self.awaiting_rel.iter().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Number of QoS 2 ids awaiting PUBREL: they count against our Receive Maximum.
    pub(crate) fn pending(&self) -> usize {
        self.awaiting_rel.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retransmitted_qos2_publish_is_not_delivered_twice() {
        // MQTT-4.3.3-9: until PUBREL, a PUBLISH with the same id is not a new message.
        let mut i = Inbound::default();
        assert_eq!(i.on_publish_qos2(7), Qos2Publish::Deliver);
        assert_eq!(i.on_publish_qos2(7), Qos2Publish::Duplicate);
        assert_eq!(i.pending(), 1);
        assert!(i.on_pubrel(7));
        // After PUBREL the id may be reused for a new message.
        assert_eq!(i.on_publish_qos2(7), Qos2Publish::Deliver);
    }

    #[test]
    fn unknown_pubrel_is_reported() {
        let mut i = Inbound::default();
        assert!(!i.on_pubrel(3));
    }
}
