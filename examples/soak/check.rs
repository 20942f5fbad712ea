//! The final check: every acknowledged QoS 1/2 message against every durable subscriber's
//! deliveries, and the counts for the report.

use super::ledger::{Fate, Ledger};
use super::shared::Findings;
use super::subscriber::{SubscriberResult, effective_qos};

/// One publisher's counts.
#[derive(Debug, Clone)]
pub struct PublisherCount {
    /// Client id.
    pub name: String,
    /// QoS.
    pub qos: u8,
    /// Messages sent.
    pub sent: u64,
    /// Acknowledged (PUBACK / PUBCOMP with success).
    pub acked: u64,
    /// Refused by a failure code.
    pub refused: u64,
    /// Given up by a clean-session publisher.
    pub abandoned: u64,
    /// Still pending at the end (a publisher that did not finish).
    pub pending: u64,
}

/// One durable subscriber's losses.
#[derive(Debug, Clone, Default)]
pub struct Losses {
    /// Acknowledged messages owed to it.
    pub owed: u64,
    /// Owed and never received.
    pub lost: u64,
    /// Received although never acknowledged to their publisher (in flight at a kill).
    pub unacked_received: u64,
}

/// Counts per publisher.
pub fn publishers(ledger: &Ledger) -> Vec<PublisherCount> {
    ledger
        .publishers
        .iter()
        .map(|p| {
            let log = ledger.snapshot(p.id);
            let count = |f: Fate| log.iter().filter(|e| e.fate == f).count() as u64;
            PublisherCount {
                name: p.name.clone(),
                qos: p.qos,
                sent: log.len() as u64,
                acked: count(Fate::Acked),
                refused: count(Fate::Refused),
                abandoned: count(Fate::Abandoned),
                pending: count(Fate::Pending),
            }
        })
        .collect()
}

/// Checks a durable subscriber: all its subscriptions existed before the first message,
/// so every acknowledged QoS 1/2 message on a topic it gets at QoS 1 or 2 must have arrived.
pub fn durable(ledger: &Ledger, sub: &SubscriberResult, findings: &Findings) -> Losses {
    let mut losses = Losses::default();
    for p in &ledger.publishers {
        if p.qos == 0 || effective_qos(&sub.spec.filters, &sub.granted, &p.topic) == 0 {
            continue;
        }
        let stream = &sub.tally.streams[p.id as usize];
        let mut examples = Vec::new();
        let mut lost_here = 0;
        for (seq, e) in ledger.snapshot(p.id).iter().enumerate() {
            let seq = seq as u64;
            match e.fate {
                Fate::Acked => {
                    losses.owed += 1;
                    if !stream.has(seq) {
                        lost_here += 1;
                        if examples.len() < 5 {
                            examples.push(format!("#{seq} (acked at {} ms)", e.acked_ms));
                        }
                    }
                }
                _ if stream.has(seq) => losses.unacked_received += 1,
                _ => {}
            }
        }
        if lost_here > 0 {
            findings.violation(
                "acknowledged message lost (durable subscriber)",
                format!(
                    "{}: {lost_here} of {}'s acknowledged messages never arrived, e.g. {}",
                    sub.spec.name,
                    p.name,
                    examples.join(", ")
                ),
            );
        }
        losses.lost += lost_here;
    }
    losses
}
