//! What one connection's batch of packets changed in durable state, and the deliveries held
//! back until that change is committed.

use std::sync::Arc;

use crate::session::CommitGate;
use crate::store::Op;

use super::handle::SessionHandle;

/// Store operations, gated deliveries and sessions to wake, gathered while a batch of packets
/// is handled. The connection commits the operations, then opens the gate and wakes the
/// sessions (once per batch, so subscribers take many messages per wake-up), then writes its
/// acknowledgements.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// Whether the broker has a store: only then are deliveries gated.
    pub persistent: bool,
    /// Operations to commit, in order.
    pub ops: Vec<Op>,
    /// True if something about to be written (an acknowledgement, a PUBREL, a PUBLISH with a
    /// recorded packet id) depends on `ops` being committed first.
    pub must_wait: bool,
    /// Gate shared by the deliveries this batch produced.
    pub gate: Option<Arc<CommitGate>>,
    /// Sessions holding gated deliveries, to wake once the gate opens.
    pub wake: Vec<Arc<SessionHandle>>,
    /// Inbound QoS 2 ids recorded in this batch, forgotten again if the commit fails.
    pub incoming_added: Vec<u16>,
    /// Other connections' pending commits that deliveries queued here depend on (retained
    /// messages sent on subscribe): the batch's output waits for them too.
    pub foreign_gates: Vec<Arc<CommitGate>>,
    /// Copies of operations recording what memory has already done (see
    /// [`Pending::push_done_in_memory`]): handed to the store again if the commit fails.
    pub redo_on_failure: Vec<Op>,
    /// Messages to send to the other nodes of a cluster with this batch's commit.
    pub cluster: Vec<crate::cluster::Forward>,
}

impl Pending {
    /// An empty batch; `persistent` says whether the broker has a store.
    pub(crate) fn new(persistent: bool) -> Pending {
        Pending {
            persistent,
            ..Default::default()
        }
    }

    /// Adds an operation that must be committed before the batch's output is written.
    pub(crate) fn push(&mut self, op: Op) {
        self.ops.push(op);
        self.must_wait = true;
    }

    /// Adds an operation the output waits for that records a change memory has already made
    /// (a subscriber's PUBREC: the delivery is released). Memory is not rolled back if the
    /// commit fails, so the operation is then handed to the store again, without waiting,
    /// for the store to catch up once it can write.
    pub(crate) fn push_done_in_memory(&mut self, op: Op) {
        self.redo_on_failure.push(op.clone());
        self.push(op);
    }

    /// Adds an operation nothing waits for (e.g. deleting an acknowledged entry).
    pub(crate) fn push_async(&mut self, op: Op) {
        self.ops.push(op);
    }

    /// Adds a message to send to the other nodes with the commit; the output waits for
    /// NATS if the message needs JetStream (QoS 1/2 or retained).
    /// `publisher` is the client that published it, if any (for No Local).
    pub(crate) fn forward(
        &mut self,
        message: &Arc<crate::session::Message>,
        publisher: Option<Arc<str>>,
    ) {
        if message.qos != crate::codec::QoS::AtMostOnce || message.retain {
            self.must_wait = true;
        }
        self.cluster.push(crate::cluster::Forward {
            message: Arc::clone(message),
            publisher,
        });
    }

    /// The gate for deliveries of this batch (`None` without a store: nothing to wait for).
    pub(crate) fn gate(&mut self) -> Option<Arc<CommitGate>> {
        if !self.persistent {
            return None;
        }
        Some(Arc::clone(self.gate.get_or_insert_with(Default::default)))
    }

    /// True if nothing was gathered.
    pub(crate) fn is_empty(&self) -> bool {
        self.ops.is_empty()
            && self.cluster.is_empty()
            && self.gate.is_none()
            && self.wake.is_empty()
            && self.foreign_gates.is_empty()
    }

    /// Opens (or fails) the gate and wakes the sessions holding its deliveries.
    pub(crate) fn release(&mut self, committed: bool) {
        if let Some(gate) = self.gate.take() {
            gate.resolve(committed);
        }
        self.wake.sort_unstable_by_key(|s| s.key);
        self.wake.dedup_by_key(|s| s.key);
        for session in self.wake.drain(..) {
            session.notify();
        }
    }
}
