//! What the application was told about its messages, checked against the client's own count of
//! messages in flight:
//!
//! * every acknowledgement event names a message that is in flight, in the right step (a
//!   PUBACK for a QoS 1 message, PUBREC then PUBCOMP for QoS 2);
//! * the client never forgets an in-flight message without an event or error saying so;
//! * within a connection, a QoS 2 message is delivered once until the client completes it with
//!   PUBCOMP.
//!
//! A message whose `publish` future was dropped or failed after it was stored has an id the
//! application never learned; while such messages exist, events for unknown ids are allowed.

use std::collections::BTreeSet;

use roost_client::{Error, Event, QoS};

/// The application's view of its session.
#[derive(Debug, Default)]
pub struct Ledger {
    /// QoS 1 messages awaiting PUBACK.
    puback: BTreeSet<u16>,
    /// QoS 2 messages awaiting PUBREC.
    pubrec: BTreeSet<u16>,
    /// QoS 2 messages awaiting PUBCOMP.
    pubcomp: BTreeSet<u16>,
    /// Incoming QoS 2 messages delivered and not yet completed on this connection.
    delivered: BTreeSet<u16>,
}

impl Ledger {
    /// `publish` returned `pid` for a message of `qos`.
    pub fn published(&mut self, qos: QoS, pid: u16) {
        let fresh = match qos {
            QoS::AtMostOnce => return,
            QoS::AtLeastOnce => self.puback.insert(pid),
            QoS::ExactlyOnce => self.pubrec.insert(pid),
        };
        assert!(fresh && pid != 0, "packet id {pid} handed out twice");
    }

    /// The client dropped its outgoing session (clean start, or the server had none).
    pub fn session_discarded(&mut self) {
        self.puback.clear();
        self.pubrec.clear();
        self.pubcomp.clear();
        self.delivered.clear();
    }

    /// The connection ended.
    pub fn connection_lost(&mut self) {
        self.delivered.clear();
    }

    /// The client wrote PUBCOMP (success) for `pid`: a new message may reuse the id.
    pub fn completed_incoming(&mut self, pid: u16) {
        self.delivered.remove(&pid);
    }

    /// Messages whose ids the application knows.
    fn known(&self) -> usize {
        self.puback.len() + self.pubrec.len() + self.pubcomp.len()
    }

    /// Checks that the client has at least the messages the application knows in flight.
    pub fn check(&self, inflight: usize) {
        assert!(
            self.known() <= inflight,
            "client has {inflight} messages in flight, the application knows of {self:?}"
        );
    }

    /// `poll` returned `r` while the client had `inflight` messages in flight before.
    pub fn polled(&mut self, r: &Result<Event<'_>, Error>, inflight: usize) {
        let unknown = inflight > self.known();
        match r {
            Ok(Event::PubAck(pid)) => self.step(*pid, Step::PubAck, unknown),
            Ok(Event::PubRec(pid)) => self.step(*pid, Step::PubRec, unknown),
            Ok(Event::PubComp(pid)) => self.step(*pid, Step::PubComp, unknown),
            Err(Error::Rejected { pid, .. }) => self.step(*pid, Step::Rejected, unknown),
            Ok(Event::Message(m)) => {
                assert!(!m.topic.is_empty(), "message without a topic");
                assert_eq!(m.pid == 0, m.qos == QoS::AtMostOnce, "{m:?}");
                if m.qos == QoS::ExactlyOnce {
                    let fresh = self.delivered.insert(m.pid);
                    assert!(fresh, "QoS 2 message {} delivered twice", m.pid);
                }
            }
            Ok(Event::SubAck { codes, .. }) => assert!(!codes.is_empty(), "SUBACK without codes"),
            _ => {}
        }
    }

    fn step(&mut self, pid: u16, step: Step, unknown: bool) {
        let from = match step {
            Step::PubAck => self.puback.remove(&pid),
            Step::PubRec => self.pubrec.remove(&pid),
            Step::PubComp => self.pubcomp.remove(&pid),
            Step::Rejected => self.puback.remove(&pid) || self.pubrec.remove(&pid),
        };
        if !from {
            let elsewhere = [&self.puback, &self.pubrec, &self.pubcomp]
                .iter()
                .any(|s| s.contains(&pid));
            assert!(
                unknown && !elsewhere,
                "{step:?} for packet id {pid}, which is not at that step: {self:?}"
            );
        }
        if step == Step::PubRec {
            self.pubcomp.insert(pid);
        }
    }
}

/// The acknowledgement steps of an outgoing message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    PubAck,
    PubRec,
    PubComp,
    Rejected,
}
