//! Server-to-client message flow: the bounded queue, the inflight window and packet ids.
//!
//! Sans-IO: the caller enqueues deliveries, asks for the next packet to transmit, and feeds
//! acknowledgements back. Nothing here touches a socket or a clock other than the `now` passed in.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::Instant;

use crate::codec::QoS;

use super::message::{CommitGate, Delivery, GateState, Seq};
use super::quota::{BacklogStats, Placement, QueueLimits, delivery_cost};

/// The queue position of a delivery in the store's terms (where 0 is never used).
fn position(delivery: &Delivery) -> u64 {
    delivery.seq.map_or(0, Seq::get)
}

/// A Packet Identifier: never 0 (MQTT-2.3.1-1).
pub(crate) type PacketId = NonZeroU16;

/// State of an outbound QoS 1/2 message that has been sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InflightState {
    /// PUBLISH sent; waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Published,
    /// PUBREC received and PUBREL sent; waiting for PUBCOMP.
    Released,
}

/// An outbound message holding a packet id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Inflight {
    /// Packet identifier in use.
    pub packet_id: PacketId,
    /// What was sent.
    pub delivery: Delivery,
    /// Where the handshake stands.
    pub state: InflightState,
}

/// What the connection must send next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Transmit {
    /// A PUBLISH.
    Publish {
        /// The delivery to encode.
        delivery: Delivery,
        /// Packet identifier, `None` for QoS 0.
        packet_id: Option<PacketId>,
        /// DUP flag: set when this is a resend (MQTT-3.3.1-1).
        dup: bool,
    },
    /// A PUBREL for a message whose PUBREC arrived.
    PubRel {
        /// Packet identifier.
        packet_id: PacketId,
    },
}

/// Why a delivery was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The backlog is at one of its limits.
    Full,
    /// A QoS 0 message for a session with no connection: discarded, as the spec allows.
    OfflineQoS0,
}

/// Outcome of a PUBACK / PUBREC / PUBCOMP from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckOutcome {
    /// The packet id was in flight in the expected state and the step was applied.
    Done {
        /// The delivery's position in the persisted queue, `None` if not persisted.
        seq: Option<Seq>,
    },
    /// No message is in flight with that packet id in that state.
    UnknownPacketId,
}

/// A range of the persisted queue to read back into memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LoadRequest {
    /// First queue position to read.
    pub from: u64,
    /// Positions from here on are not read (their commit has not returned yet).
    pub before: u64,
    /// Stop once this many bytes (as counted by [`delivery_cost`]) are read.
    pub max_bytes: u64,
}

/// The part of a durable session's backlog held only in the store.
#[derive(Debug, Default)]
struct Stored {
    /// Entries in the store and not in memory.
    count: usize,
    /// Their bytes.
    bytes: u64,
    /// Queue position of the first of them.
    from: u64,
    /// Entries whose commit had not returned when they were placed, in order: the store may
    /// not hold them yet, so reads stop before the first still pending.
    unsettled: VecDeque<(u64, Arc<CommitGate>, u64)>,
    /// A read is under way.
    loading: bool,
    /// Queue position of the first entry placed while a read was under way. The read's
    /// snapshot may lack it (its commit may land after the snapshot was taken) yet hold later
    /// ones whose commits landed first, so the read is taken only up to here.
    placed_while_loading: Option<u64>,
    /// Entries counted but not found by the last read (see [`Outbound::take_lost`]).
    lost: usize,
}

/// [`Stored`], allocated while a durable session has any of its backlog in the store only
/// (most sessions never do): reads see an empty one, the first change allocates it, and
/// [`LazyStored::compact`] frees it once it is empty again.
#[derive(Debug, Default)]
struct LazyStored(Option<Box<Stored>>);

static NOTHING_STORED: Stored = Stored {
    count: 0,
    bytes: 0,
    from: 0,
    unsettled: VecDeque::new(),
    loading: false,
    placed_while_loading: None,
    lost: 0,
};

impl std::ops::Deref for LazyStored {
    type Target = Stored;
    fn deref(&self) -> &Stored {
        self.0.as_deref().unwrap_or(&NOTHING_STORED)
    }
}

impl std::ops::DerefMut for LazyStored {
    fn deref_mut(&mut self) -> &mut Stored {
        self.0.get_or_insert_with(Box::default)
    }
}

impl LazyStored {
    /// Frees the state once it holds nothing.
    fn compact(&mut self) {
        if self.0.as_deref().is_some_and(|s| {
            s.count == 0
                && s.unsettled.is_empty()
                && !s.loading
                && s.placed_while_loading.is_none()
                && s.lost == 0
        }) {
            self.0 = None;
        }
    }
}

/// The part of the outbound flow that is empty while nothing is queued, in flight or
/// admitted: an idle session (most of them) holds none of it.
#[derive(Debug, Default)]
struct Flow {
    queue: VecDeque<Delivery>,
    inflight: VecDeque<Inflight>,
    /// Retained messages owed to new subscriptions, sent before the queue as the window allows
    /// (allocated while there are any: a session spends most of its life without).
    retained: Option<Box<OwedRetained>>,
    /// The last `resends` inflight entries still have to be sent again after a reconnect.
    resends: usize,
    /// Bytes of `queue` and of counted `inflight` entries.
    memory_bytes: u64,
    /// Admitted by [`Outbound::reserve`] and not yet placed.
    reserved: (usize, u64),
}

impl Flow {
    fn is_empty(&self) -> bool {
        self.queue.is_empty()
            && self.inflight.is_empty()
            && self.retained.is_none()
            && self.resends == 0
            && self.memory_bytes == 0
            && self.reserved == (0, 0)
    }
}

/// [`Flow`], allocated by the first change: reads of an unallocated one see an empty flow.
#[derive(Debug, Default)]
struct LazyFlow(Option<Box<Flow>>);

static NO_FLOW: Flow = Flow {
    queue: VecDeque::new(),
    inflight: VecDeque::new(),
    retained: None,
    resends: 0,
    memory_bytes: 0,
    reserved: (0, 0),
};

impl std::ops::Deref for LazyFlow {
    type Target = Flow;
    fn deref(&self) -> &Flow {
        self.0.as_deref().unwrap_or(&NO_FLOW)
    }
}

impl std::ops::DerefMut for LazyFlow {
    fn deref_mut(&mut self) -> &mut Flow {
        self.0.get_or_insert_with(Box::default)
    }
}

/// Retained messages owed to new subscriptions.
#[derive(Debug, Default)]
struct OwedRetained {
    /// Their topics, in the order they are sent.
    order: VecDeque<Arc<str>>,
    /// The delivery waiting for each topic in `order` (one per topic).
    waiting: HashMap<Arc<str>, Delivery>,
}

/// The outbound half of a session.
#[derive(Debug)]
pub(crate) struct Outbound {
    /// Queue, inflight and their counts, allocated while there are any.
    flow: LazyFlow,
    limits: QueueLimits,
    /// The inflight window (at least 1).
    window: u16,
    next_id: PacketId,
    stored: LazyStored,
    peak_bytes: u64,
    peak_memory_bytes: u64,
    /// A Shared Subscription's message was placed here at some time (it may be among the
    /// stored-only entries, which are read back when the session ends).
    holds_shared: bool,
    /// In cluster mode, the highest sequence of the cluster's stream taken from the queue to
    /// be sent (or dropped as expired).
    stream_sent: u64,
}

/// Where a Session following the cluster's stream stands in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamPosition {
    /// The sequence of the first stream message still queued in memory, if any.
    pub first_queued: Option<u64>,
    /// Queued messages are held in the store only (not read into memory).
    pub stored_only: bool,
    /// The highest sequence taken from the queue to be sent.
    pub sent: u64,
}

impl Outbound {
    /// An empty flow with backlog limits and an inflight window.
    pub(crate) fn new(limits: QueueLimits, window: u16) -> Outbound {
        Outbound {
            flow: LazyFlow::default(),
            limits,
            window: window.max(1),
            next_id: PacketId::MIN,
            stored: LazyStored::default(),
            peak_bytes: 0,
            peak_memory_bytes: 0,
            holds_shared: false,
            stream_sent: 0,
        }
    }

    /// Frees the flow's state while it holds nothing (an idle session keeps none).
    pub(crate) fn compact(&mut self) {
        if self.flow.0.as_deref().is_some_and(Flow::is_empty) {
            self.flow.0 = None;
        }
        self.stored.compact();
    }

    /// Where the queue stands in the cluster's stream (see [`StreamPosition`]).
    pub(crate) fn stream_position(&self) -> StreamPosition {
        StreamPosition {
            first_queued: self.flow.queue.iter().find_map(Delivery::stream_position),
            stored_only: self.stored.count > 0,
            sent: self.stream_sent,
        }
    }

    /// Sets the highest stream sequence taken from the queue (a Session restored or moved).
    pub(crate) fn set_stream_sent(&mut self, sequence: u64) {
        self.stream_sent = sequence;
    }

    /// The inflight entries, oldest first.
    pub(crate) fn inflight_entries(&self) -> impl Iterator<Item = &Inflight> {
        self.flow.inflight.iter()
    }

    /// True if a Shared Subscription's message was ever placed here (or restored).
    pub(crate) fn holds_shared(&self) -> bool {
        self.holds_shared
    }

    /// Records that the stored-only part of a restored backlog may hold Shared Subscription
    /// messages.
    pub(crate) fn mark_shared(&mut self) {
        self.holds_shared = true;
    }

    /// The commits still pending of deliveries placed in the store only: until they return,
    /// the store may not hold those entries yet.
    pub(crate) fn unsettled_gates(&self) -> Vec<Arc<CommitGate>> {
        self.stored
            .unsettled
            .iter()
            .map(|(_, gate, _)| Arc::clone(gate))
            .filter(|gate| gate.state() == GateState::Pending)
            .collect()
    }

    /// Changes the inflight window, e.g. to a reconnecting client's Receive Maximum.
    pub(crate) fn set_window(&mut self, window: u16) {
        self.window = window.max(1);
    }

    /// Number of queued (not yet sent) deliveries held in memory.
    pub(crate) fn queued(&self) -> usize {
        self.flow.queue.len()
    }

    /// Number of messages holding a packet id.
    pub(crate) fn inflight(&self) -> usize {
        self.flow.inflight.len()
    }

    /// Messages in the backlog: in memory, in flight, in the store only, and reserved.
    pub(crate) fn backlog_messages(&self) -> usize {
        self.flow.queue.len() + self.flow.inflight.len() + self.stored.count + self.flow.reserved.0
    }

    /// Bytes of the backlog.
    pub(crate) fn backlog_bytes(&self) -> u64 {
        self.flow.memory_bytes + self.stored.bytes + self.flow.reserved.1
    }

    /// A snapshot of the backlog.
    pub(crate) fn stats(&self) -> BacklogStats {
        BacklogStats {
            messages: self.backlog_messages(),
            bytes: self.backlog_bytes(),
            memory_bytes: self.flow.memory_bytes,
            stored_messages: self.stored.count,
            inflight: self.flow.inflight.len(),
            retained_pending: self.flow.retained.as_ref().map_or(0, |r| r.order.len()),
            peak_bytes: self.peak_bytes,
            peak_memory_bytes: self.peak_memory_bytes,
        }
    }

    /// Admits a delivery of `cost` bytes, or says why not. `storable` means the delivery can
    /// be written to the store (a QoS 1/2 message for a durable session of a broker with a
    /// store); only such a delivery may go beyond the memory bound. An admitted delivery is
    /// reserved until [`Outbound::place`] or [`Outbound::unreserve`].
    pub(crate) fn reserve(
        &mut self,
        cost: u64,
        qos: QoS,
        storable: bool,
        online: bool,
    ) -> Result<(), Refused> {
        if !online && qos == QoS::AtMostOnce {
            return Err(Refused::OfflineQoS0);
        }
        let messages = self.backlog_messages() + 1;
        let bytes = self.backlog_bytes() + cost;
        // One message is always admitted into an empty backlog, however large: a bound smaller
        // than a message must not refuse it for ever.
        let empty = messages == 1;
        if messages > self.limits.max_messages || (bytes > self.limits.max_bytes && !empty) {
            return Err(Refused::Full);
        }
        let memory = self.flow.memory_bytes + self.flow.reserved.1;
        if !storable
            && (self.stored.count > 0 || (memory + cost > self.limits.memory_bytes && memory > 0))
        {
            return Err(Refused::Full);
        }
        self.flow.reserved.0 += 1;
        self.flow.reserved.1 += cost;
        self.peak_bytes = self.peak_bytes.max(bytes);
        Ok(())
    }

    /// Admits and places a delivery that is never written to the store (reserve, then place).
    #[cfg(test)]
    pub(crate) fn enqueue(
        &mut self,
        delivery: Delivery,
        online: bool,
    ) -> Result<Placement, Refused> {
        let cost = delivery_cost(&delivery);
        self.reserve(cost, delivery.qos, false, online)?;
        Ok(self.place(delivery, cost, false, online))
    }

    /// Reserves room for a delivery whatever the limits say: for a message that was already
    /// acknowledged to its publisher and has nowhere else to go (a Shared Subscription's
    /// message moving from a member whose session ended).
    pub(crate) fn reserve_over_limit(&mut self, cost: u64) {
        self.flow.reserved.0 += 1;
        self.flow.reserved.1 += cost;
        self.peak_bytes = self.peak_bytes.max(self.backlog_bytes());
    }

    /// Gives back a reservation that will not be placed.
    pub(crate) fn unreserve(&mut self, cost: u64) {
        self.flow.reserved.0 = self.flow.reserved.0.saturating_sub(1);
        self.flow.reserved.1 = self.flow.reserved.1.saturating_sub(cost);
    }

    /// Places a reserved delivery: in memory while the memory bound allows and nothing is
    /// waiting in the store (order is kept), otherwise, if `storable`, in the store only (the
    /// caller writes it there). An offline session keeps storable deliveries in the store
    /// only: its memory is not spent on a client that is away.
    pub(crate) fn place(
        &mut self,
        delivery: Delivery,
        cost: u64,
        storable: bool,
        online: bool,
    ) -> Placement {
        self.unreserve(cost);
        self.prune_unsettled();
        self.holds_shared |= delivery.group.is_some();
        let over = self.flow.memory_bytes + cost > self.limits.memory_bytes;
        if storable && (self.stored.count > 0 || over || !online) {
            if self.stored.count == 0 {
                self.stored.from = position(&delivery);
                self.stored.bytes = 0;
            }
            self.stored.count += 1;
            self.stored.bytes += cost;
            if self.stored.loading {
                self.stored
                    .placed_while_loading
                    .get_or_insert(position(&delivery));
            }
            if let Some(gate) = &delivery.gate
                && gate.state() == GateState::Pending
            {
                self.stored
                    .unsettled
                    .push_back((position(&delivery), Arc::clone(gate), cost));
            }
            return Placement::Store;
        }
        self.flow.queue.push_back(delivery);
        self.add_memory(cost);
        Placement::Memory
    }

    fn add_memory(&mut self, cost: u64) {
        self.flow.memory_bytes += cost;
        self.peak_memory_bytes = self.peak_memory_bytes.max(self.flow.memory_bytes);
    }

    fn sub_memory(&mut self, cost: u64) {
        self.flow.memory_bytes = self.flow.memory_bytes.saturating_sub(cost);
    }

    /// Forgets stored-only entries whose commit has returned; one that failed is not in the
    /// store and leaves the backlog.
    fn prune_unsettled(&mut self) {
        while let Some((_, gate, cost)) = self.stored.unsettled.front() {
            match gate.state() {
                GateState::Pending => break,
                GateState::Open => {}
                GateState::Failed => {
                    let cost = *cost;
                    self.stored.count = self.stored.count.saturating_sub(1);
                    self.stored.bytes = self.stored.bytes.saturating_sub(cost);
                }
            }
            self.stored.unsettled.pop_front();
        }
        self.stored.compact();
    }

    /// Drops the oldest queued (not yet sent) message to make room (the `drop_oldest`
    /// policy). Returns it, or `None` if nothing in memory can be dropped. One whose
    /// publisher's commit is still pending is not dropped (its store entry may not exist yet).
    pub(crate) fn evict_oldest(&mut self) -> Option<Delivery> {
        let front = self.flow.queue.front()?;
        if front
            .gate
            .as_ref()
            .is_some_and(|g| g.state() == GateState::Pending)
        {
            return None;
        }
        let delivery = self.flow.queue.pop_front()?;
        self.sub_memory(delivery_cost(&delivery));
        if let Some(seq) = delivery.stream_position() {
            self.stream_sent = self.stream_sent.max(seq);
        }
        Some(delivery)
    }

    /// Adds a retained message owed to a new subscription. A topic already waiting is not
    /// added again (the list never holds more than one entry per retained topic): the waiting
    /// entry takes the newer message, the higher QoS and every subscription identifier. These
    /// are sent before the queue, a window at a time, and are not counted against the backlog
    /// limits (the messages are shared with the retained index). Returns false if merged.
    pub(crate) fn push_retained(&mut self, delivery: Delivery) -> bool {
        let topic = Arc::clone(&delivery.message.topic);
        let owed = self.flow.retained.get_or_insert_with(Default::default);
        if let Some(waiting) = owed.waiting.get_mut(&topic) {
            let qos = waiting.qos.max(delivery.qos);
            let mut ids = std::mem::take(&mut waiting.subscription_ids);
            for id in &delivery.subscription_ids {
                if !ids.contains(id) {
                    ids.push(*id);
                }
            }
            *waiting = Delivery {
                qos,
                subscription_ids: ids,
                ..delivery
            };
            return false;
        }
        owed.order.push_back(Arc::clone(&topic));
        owed.waiting.insert(topic, delivery);
        true
    }

    /// What to read back from the store, if the memory queue has run low and the store holds
    /// more. Marks a read under way until [`Outbound::loaded`].
    pub(crate) fn load_request(&mut self) -> Option<LoadRequest> {
        if self.stored.loading || self.stored.count == 0 {
            return None;
        }
        let budget = self.limits.memory_bytes.min(64 * 1024 * 1024);
        if self.flow.memory_bytes > budget / 2 {
            return None;
        }
        self.prune_unsettled();
        if self.stored.count == 0 {
            return None;
        }
        let before = self
            .stored
            .unsettled
            .front()
            .map_or(u64::MAX, |(seq, _, _)| *seq);
        if before <= self.stored.from {
            return None;
        }
        self.stored.loading = true;
        Some(LoadRequest {
            from: self.stored.from,
            before,
            max_bytes: (budget - self.flow.memory_bytes).max(1),
        })
    }

    /// Takes the deliveries read for `request` into memory, in order. `None` means the read
    /// failed; the range stays in the store.
    pub(crate) fn loaded(&mut self, request: LoadRequest, deliveries: Option<Vec<Delivery>>) {
        self.stored.loading = false;
        let placed = self.stored.placed_while_loading.take();
        let Some(deliveries) = deliveries else {
            return;
        };
        if self.stored.from != request.from || self.stored.count == 0 {
            // The session was cleared while the read was under way.
            return;
        }
        // Entries placed during the read are read again next time, from the first of them.
        let before = placed.map_or(request.before, |p| p.min(request.before));
        let deliveries: Vec<Delivery> = deliveries
            .into_iter()
            .take_while(|d| position(d) < before)
            .collect();
        let read_all = deliveries.is_empty();
        for delivery in deliveries {
            let cost = delivery_cost(&delivery);
            self.stored.from = position(&delivery) + 1;
            self.stored.count = self.stored.count.saturating_sub(1);
            self.stored.bytes = self.stored.bytes.saturating_sub(cost);
            self.flow.queue.push_back(delivery);
            self.add_memory(cost);
        }
        if read_all && before == u64::MAX {
            // Nothing left in the range although entries were counted: the count was off.
            // The caller logs it; start afresh rather than ask again for ever.
            self.stored.lost = self.stored.count;
            self.stored.count = 0;
        }
        if self.stored.count == 0 {
            self.stored.bytes = 0;
            self.stored.unsettled.clear();
        }
        self.stored.compact();
    }

    /// Entries that were counted as in the store but were not found there, since the last
    /// call (should be 0; the caller logs anything else).
    pub(crate) fn take_lost(&mut self) -> usize {
        if self.stored.lost == 0 {
            return 0;
        }
        let lost = std::mem::take(&mut self.stored.lost);
        self.stored.compact();
        lost
    }

    /// Restores the part of a loaded session's queue left in the store.
    pub(crate) fn restore_stored(&mut self, from: u64, count: usize, bytes: u64) {
        self.stored.from = from;
        self.stored.count = count;
        self.stored.bytes = bytes;
        self.stored.compact();
    }

    /// The next PUBLISH to send, if the window allows. Expired messages are skipped
    /// (MQTT-3.3.2-5) and their queue positions (`None`: not stored) pushed to `expired` so
    /// the caller can count them and delete them from the store. A delivery whose commit is pending holds the queue
    /// (order is kept); one whose commit failed is dropped.
    pub(crate) fn next_transmit(
        &mut self,
        now: Instant,
        expired: &mut Vec<Option<Seq>>,
    ) -> Option<Transmit> {
        if self.flow.resends > 0 {
            let sent = self.flow.inflight.len() - self.flow.resends;
            if sent >= usize::from(self.window) {
                return None;
            }
            self.flow.resends -= 1;
            let f = &self.flow.inflight[sent];
            return Some(match f.state {
                InflightState::Published => Transmit::Publish {
                    delivery: f.delivery.clone(),
                    packet_id: Some(f.packet_id),
                    dup: true,
                },
                InflightState::Released => Transmit::PubRel {
                    packet_id: f.packet_id,
                },
            });
        }
        loop {
            let owed = self.flow.retained.as_deref();
            let retained_front = owed.and_then(|r| r.order.front().map(|t| (r, t)));
            let from_retained = retained_front.is_some();
            let front = match retained_front {
                Some((owed, topic)) => owed.waiting.get(topic)?,
                None => self.flow.queue.front()?,
            };
            match front.gate.as_ref().map(|g| g.state()) {
                Some(GateState::Pending) => return None,
                Some(GateState::Failed) => {
                    self.pop(from_retained);
                    continue;
                }
                Some(GateState::Open) | None => {}
            }
            if front.message.is_expired(now) {
                expired.push(front.seq);
                self.pop(from_retained);
                continue;
            }
            if front.qos == QoS::AtMostOnce {
                let delivery = self.pop(from_retained)?;
                return Some(Transmit::Publish {
                    delivery,
                    packet_id: None,
                    dup: false,
                });
            }
            if self.flow.inflight.len() >= usize::from(self.window) {
                return None;
            }
            let packet_id = self.allocate_id()?;
            let delivery = self.pop(from_retained)?;
            // In flight it holds memory until acknowledged.
            self.add_memory(delivery_cost(&delivery));
            self.flow.inflight.push_back(Inflight {
                packet_id,
                delivery: delivery.clone(),
                state: InflightState::Published,
            });
            return Some(Transmit::Publish {
                delivery,
                packet_id: Some(packet_id),
                dup: false,
            });
        }
    }

    /// Takes the front of the retained list or of the queue (leaving the memory count; one
    /// that goes in flight is counted again there).
    fn pop(&mut self, from_retained: bool) -> Option<Delivery> {
        if from_retained {
            let owed = self.flow.retained.as_mut()?;
            let topic = owed.order.pop_front()?;
            let delivery = owed.waiting.remove(&topic);
            if owed.order.is_empty() {
                self.flow.retained = None;
            }
            return delivery;
        }
        let delivery = self.flow.queue.pop_front()?;
        self.sub_memory(delivery_cost(&delivery));
        if let Some(seq) = delivery.stream_position() {
            self.stream_sent = self.stream_sent.max(seq);
        }
        Some(delivery)
    }

    /// Gives a stored queue position to the inflight entry of `packet_id` (a retained message
    /// sent to a durable session is recorded in its queue as it goes out).
    pub(crate) fn set_seq(&mut self, packet_id: PacketId, seq: Seq) {
        if let Some(i) = self.position(packet_id.get()) {
            self.flow.inflight[i].delivery.seq = Some(seq);
        }
    }

    /// After a reconnect: everything in flight is to be sent again, unacknowledged PUBLISH with
    /// DUP=1 and PUBREL for PUBREC'd ids, in the original order (MQTT-4.4.0-1), by
    /// [`Outbound::next_transmit`] and within the client's current window (MQTT-3.3.4-9).
    pub(crate) fn resend_inflight(&mut self) {
        self.flow.resends = self.flow.inflight.len();
    }

    /// PUBACK: completes a QoS 1 delivery.
    pub(crate) fn on_puback(&mut self, packet_id: u16) -> AckOutcome {
        self.complete(packet_id, QoS::AtLeastOnce, InflightState::Published)
    }

    /// PUBREC: moves a QoS 2 delivery to the released state, after which a PUBREL is due.
    /// A PUBREC with a failure reason code (`failed`) ends the delivery instead (MQTT 5.0).
    pub(crate) fn on_pubrec(&mut self, packet_id: u16, failed: bool) -> AckOutcome {
        if failed {
            return self.complete(packet_id, QoS::ExactlyOnce, InflightState::Published);
        }
        match self.position(packet_id) {
            Some(i) if self.flow.inflight[i].delivery.qos == QoS::ExactlyOnce => {
                // A repeated PUBREC for a released id is answered with PUBREL again.
                self.flow.inflight[i].state = InflightState::Released;
                AckOutcome::Done {
                    seq: self.flow.inflight[i].delivery.seq,
                }
            }
            _ => AckOutcome::UnknownPacketId,
        }
    }

    /// PUBCOMP: completes a QoS 2 delivery.
    pub(crate) fn on_pubcomp(&mut self, packet_id: u16) -> AckOutcome {
        self.complete(packet_id, QoS::ExactlyOnce, InflightState::Released)
    }

    /// Forgets an inflight message without an acknowledgement, e.g. one that could not be sent
    /// because it exceeds the client's Maximum Packet Size (MQTT-3.1.2-25).
    /// Returns the persisted queue position of the discarded message, if it was in flight.
    /// `None` if no message was in flight with that id; `Some(None)` if one was, not stored.
    pub(crate) fn discard(&mut self, packet_id: u16) -> Option<Option<Seq>> {
        let i = self.position(packet_id)?;
        self.remove_at(i).map(|f| f.delivery.seq)
    }

    /// Removes an inflight entry, keeping the count of entries still to be resent right.
    fn remove_at(&mut self, i: usize) -> Option<Inflight> {
        if i >= self.flow.inflight.len() - self.flow.resends {
            self.flow.resends -= 1;
        }
        let entry = self.flow.inflight.remove(i)?;
        self.sub_memory(delivery_cost(&entry.delivery));
        Some(entry)
    }

    /// Ends the flow: drops everything, returning how many messages there were, and hands
    /// back the QoS 1/2 deliveries that came through a Shared Subscription and may go to
    /// another member (MQTT 5.0 4.8.2): those not sent yet, and QoS 1 ones sent without a
    /// PUBACK. A QoS 2 message once sent must not go to any other client (MQTT-4.8.2-5).
    /// Deliveries held only in the store are not read: see [`Outbound::stored_range`].
    pub(crate) fn close(&mut self) -> (usize, Vec<Delivery>) {
        let shared = |d: &Delivery| d.group.is_some() && d.qos != QoS::AtMostOnce;
        let unacknowledged: Vec<Delivery> = self
            .flow
            .inflight
            .iter()
            .filter(|f| f.state == InflightState::Published && f.delivery.qos == QoS::AtLeastOnce)
            .map(|f| &f.delivery)
            .chain(&self.flow.queue)
            .filter(|d| shared(d))
            .cloned()
            .collect();
        (self.clear(), unacknowledged)
    }

    /// The part of the backlog held only in the store: first queue position and count.
    pub(crate) fn stored_range(&self) -> Option<(u64, usize)> {
        (self.stored.count > 0).then_some((self.stored.from, self.stored.count))
    }

    /// Drops every queued, inflight and stored-only message, returning how many there were.
    pub(crate) fn clear(&mut self) -> usize {
        let n = self.flow.queue.len() + self.flow.inflight.len() + self.stored.count;
        self.flow.queue.clear();
        self.flow.inflight.clear();
        self.flow.retained = None;
        self.stored = LazyStored::default();
        self.flow.memory_bytes = 0;
        self.flow.resends = 0;
        n
    }

    fn complete(&mut self, packet_id: u16, qos: QoS, state: InflightState) -> AckOutcome {
        match self.position(packet_id) {
            Some(i)
                if self.flow.inflight[i].delivery.qos == qos
                    && self.flow.inflight[i].state == state =>
            {
                match self.remove_at(i) {
                    Some(f) => AckOutcome::Done {
                        seq: f.delivery.seq,
                    },
                    None => AckOutcome::UnknownPacketId,
                }
            }
            _ => AckOutcome::UnknownPacketId,
        }
    }

    /// Acks normally arrive in order, so the front is checked first.
    fn position(&self, packet_id: u16) -> Option<usize> {
        if self.flow.inflight.front().map(|f| f.packet_id.get()) == Some(packet_id) {
            return Some(0);
        }
        self.flow
            .inflight
            .iter()
            .position(|f| f.packet_id.get() == packet_id)
    }

    /// The next packet id not held by an inflight message.
    fn allocate_id(&mut self) -> Option<PacketId> {
        if self.flow.inflight.len() >= usize::from(u16::MAX) {
            return None;
        }
        loop {
            let id = self.next_id;
            self.next_id = id.checked_add(1).unwrap_or(PacketId::MIN);
            if !self.flow.inflight.iter().any(|f| f.packet_id == id) {
                return Some(id);
            }
        }
    }

    /// Restores an inflight entry (used when a session is loaded from storage).
    pub(crate) fn restore_inflight(&mut self, entry: Inflight) {
        self.holds_shared |= entry.delivery.group.is_some();
        self.next_id = entry.packet_id.checked_add(1).unwrap_or(PacketId::MIN);
        self.add_memory(delivery_cost(&entry.delivery));
        self.flow.inflight.push_back(entry);
    }

    /// Restores a queued delivery (used when a session is loaded from storage).
    pub(crate) fn restore_queued(&mut self, delivery: Delivery) {
        self.holds_shared |= delivery.group.is_some();
        self.add_memory(delivery_cost(&delivery));
        self.flow.queue.push_back(delivery);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::session::message::Message;

    fn delivery(qos: QoS) -> Delivery {
        Delivery::new(
            Arc::new(Message {
                id: None,
                topic: Arc::from("t"),
                payload: Bytes::from_static(b"x"),
                qos,
                retain: false,
                properties: Default::default(),
                stream_seq: None,
                expires_at: None,
            }),
            qos,
            false,
            Vec::new(),
        )
    }

    fn limit(max_messages: usize) -> QueueLimits {
        QueueLimits {
            max_messages,
            ..QueueLimits::UNLIMITED
        }
    }

    fn send(o: &mut Outbound) -> Option<Transmit> {
        let mut expired = Vec::new();
        o.next_transmit(Instant::now(), &mut expired)
    }

    const DONE: AckOutcome = AckOutcome::Done { seq: None };

    fn id(n: u16) -> PacketId {
        PacketId::new(n).expect("not 0")
    }

    fn publish_id(t: Option<Transmit>) -> u16 {
        match t {
            Some(Transmit::Publish { packet_id, .. }) => packet_id.map_or(0, PacketId::get),
            other => panic!("expected a publish, got {other:?}"),
        }
    }

    #[test]
    fn qos1_window_limits_inflight_and_puback_frees_it() {
        let mut o = Outbound::new(limit(10), 2);
        for _ in 0..3 {
            assert_eq!(
                o.enqueue(delivery(QoS::AtLeastOnce), true),
                Ok(Placement::Memory)
            );
        }
        assert_eq!(publish_id(send(&mut o)), 1);
        assert_eq!(publish_id(send(&mut o)), 2);
        assert_eq!(send(&mut o), None, "window of 2 is full");
        assert_eq!(o.on_puback(1), DONE);
        assert_eq!(publish_id(send(&mut o)), 3);
        assert_eq!(o.on_puback(1), AckOutcome::UnknownPacketId);
    }

    #[test]
    fn qos2_handshake_pubrec_then_pubcomp() {
        let mut o = Outbound::new(limit(10), 10);
        o.enqueue(delivery(QoS::ExactlyOnce), true).unwrap();
        let id = publish_id(send(&mut o));
        // PUBCOMP before PUBREC is out of order.
        assert_eq!(o.on_pubcomp(id), AckOutcome::UnknownPacketId);
        assert_eq!(o.on_pubrec(id, false), DONE);
        // A PUBACK for a QoS 2 id is wrong.
        assert_eq!(o.on_puback(id), AckOutcome::UnknownPacketId);
        assert_eq!(o.inflight(), 1);
        assert_eq!(o.on_pubcomp(id), DONE);
        assert_eq!(o.inflight(), 0);
    }

    #[test]
    fn failed_pubrec_ends_delivery() {
        let mut o = Outbound::new(limit(10), 10);
        o.enqueue(delivery(QoS::ExactlyOnce), true).unwrap();
        let id = publish_id(send(&mut o));
        assert_eq!(o.on_pubrec(id, true), DONE);
        assert_eq!(o.inflight(), 0);
    }

    #[test]
    fn resend_after_reconnect_sets_dup_and_repeats_pubrel() {
        // MQTT-4.4.0-1: resend unacknowledged PUBLISH (DUP=1) and PUBREL in order.
        let mut o = Outbound::new(limit(10), 10);
        o.enqueue(delivery(QoS::ExactlyOnce), true).unwrap();
        o.enqueue(delivery(QoS::AtLeastOnce), true).unwrap();
        let a = publish_id(send(&mut o));
        let b = publish_id(send(&mut o));
        o.on_pubrec(a, false);
        o.resend_inflight();
        let resend: Vec<_> = std::iter::from_fn(|| send(&mut o)).collect();
        assert_eq!(resend.len(), 2);
        assert_eq!(resend[0], Transmit::PubRel { packet_id: id(a) });
        match &resend[1] {
            Transmit::Publish { packet_id, dup, .. } => {
                assert_eq!(*packet_id, Some(id(b)));
                assert!(*dup);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn resend_after_reconnect_respects_a_smaller_window() {
        // MQTT-3.3.4-9: never more unacknowledged PUBLISH than the client's Receive Maximum.
        let mut o = Outbound::new(limit(10), 3);
        for _ in 0..3 {
            o.enqueue(delivery(QoS::AtLeastOnce), true).unwrap();
            send(&mut o);
        }
        o.enqueue(delivery(QoS::AtLeastOnce), true).unwrap();
        o.set_window(1);
        o.resend_inflight();
        assert_eq!(publish_id(send(&mut o)), 1);
        assert_eq!(send(&mut o), None, "window of 1 is full");
        assert_eq!(o.on_puback(1), DONE);
        assert_eq!(publish_id(send(&mut o)), 2);
        // An ack for an entry not yet resent frees nothing on the wire but drops it.
        assert_eq!(o.on_puback(3), DONE);
        assert_eq!(send(&mut o), None);
        assert_eq!(o.on_puback(2), DONE);
        assert_eq!(publish_id(send(&mut o)), 4, "then new messages");
    }

    #[test]
    fn packet_ids_skip_ids_in_use_and_never_zero() {
        let mut o = Outbound::new(limit(100_000), u16::MAX);
        o.next_id = id(u16::MAX - 1);
        o.enqueue(delivery(QoS::AtLeastOnce), true).unwrap();
        o.enqueue(delivery(QoS::AtLeastOnce), true).unwrap();
        assert_eq!(publish_id(send(&mut o)), u16::MAX - 1);
        assert_eq!(publish_id(send(&mut o)), u16::MAX);
        // Wraps past 0 to 1.
        o.enqueue(delivery(QoS::AtLeastOnce), true).unwrap();
        assert_eq!(publish_id(send(&mut o)), 1);
        // 2 becomes busy out of turn; the allocator skips it.
        o.on_puback(u16::MAX - 1);
        o.next_id = id(u16::MAX);
        o.enqueue(delivery(QoS::AtLeastOnce), true).unwrap();
        o.enqueue(delivery(QoS::AtLeastOnce), true).unwrap();
        assert_eq!(publish_id(send(&mut o)), 2, "MAX and 1 are in flight");
        assert_eq!(publish_id(send(&mut o)), 3);
    }

    #[test]
    fn queue_limit_drops_and_offline_qos0_is_discarded() {
        let mut o = Outbound::new(limit(2), 1);
        assert_eq!(
            o.enqueue(delivery(QoS::AtLeastOnce), false),
            Ok(Placement::Memory)
        );
        assert_eq!(
            o.enqueue(delivery(QoS::AtLeastOnce), false),
            Ok(Placement::Memory)
        );
        assert_eq!(
            o.enqueue(delivery(QoS::AtLeastOnce), false),
            Err(Refused::Full)
        );
        assert_eq!(
            o.enqueue(delivery(QoS::AtMostOnce), false),
            Err(Refused::OfflineQoS0)
        );
    }

    #[test]
    fn qos0_needs_no_packet_id_but_keeps_order() {
        let mut o = Outbound::new(limit(10), 1);
        o.enqueue(delivery(QoS::AtLeastOnce), true).unwrap();
        o.enqueue(delivery(QoS::AtLeastOnce), true).unwrap();
        o.enqueue(delivery(QoS::AtMostOnce), true).unwrap();
        assert_eq!(publish_id(send(&mut o)), 1);
        // The QoS 0 message waits behind the blocked QoS 1 one: order is kept.
        assert_eq!(send(&mut o), None);
        o.on_puback(1);
        assert_eq!(publish_id(send(&mut o)), 2);
        assert_eq!(publish_id(send(&mut o)), 0);
    }

    #[test]
    fn pending_commit_holds_the_queue_and_failed_commit_drops() {
        use crate::session::message::CommitGate;
        let mut o = Outbound::new(limit(10), 10);
        let gate = Arc::new(CommitGate::default());
        let mut d = delivery(QoS::AtLeastOnce);
        d.gate = Some(Arc::clone(&gate));
        o.enqueue(d.clone(), true).unwrap();
        o.enqueue(delivery(QoS::AtMostOnce), true).unwrap();
        assert_eq!(
            send(&mut o),
            None,
            "held until the publisher's state is committed"
        );
        gate.resolve(true);
        assert_eq!(publish_id(send(&mut o)), 1);
        assert_eq!(publish_id(send(&mut o)), 0);

        let failed = Arc::new(CommitGate::default());
        d.gate = Some(Arc::clone(&failed));
        o.enqueue(d, true).unwrap();
        o.enqueue(delivery(QoS::AtMostOnce), true).unwrap();
        failed.resolve(false);
        assert_eq!(publish_id(send(&mut o)), 0, "the failed one is dropped");
    }

    #[test]
    fn expired_messages_are_skipped_and_counted() {
        let mut o = Outbound::new(limit(10), 10);
        let mut d = delivery(QoS::AtLeastOnce);
        let past = Instant::now();
        Arc::get_mut(&mut d.message).unwrap().expires_at = Some(past);
        o.enqueue(d, true).unwrap();
        let mut expired = Vec::new();
        assert_eq!(o.next_transmit(Instant::now(), &mut expired), None);
        assert_eq!(expired, vec![None]);
    }

    fn durable_delivery(qos: QoS, seq: u64, gate: Option<Arc<CommitGate>>) -> Delivery {
        let mut d = delivery(qos);
        d.seq = Seq::new(seq);
        d.gate = gate;
        d
    }

    #[test]
    fn reservation_is_all_or_nothing_and_counts_every_part_of_the_backlog() {
        let mut o = Outbound::new(limit(2), 1);
        let cost = delivery_cost(&delivery(QoS::AtLeastOnce));
        o.reserve(cost, QoS::AtLeastOnce, false, true).unwrap();
        o.reserve(cost, QoS::AtLeastOnce, false, true).unwrap();
        assert_eq!(
            o.reserve(cost, QoS::AtLeastOnce, false, true),
            Err(Refused::Full),
            "reservations count"
        );
        o.unreserve(cost);
        assert_eq!(o.backlog_messages(), 1);
        o.place(delivery(QoS::AtLeastOnce), cost, false, true);
        publish_id(send(&mut o));
        assert_eq!(o.backlog_messages(), 1, "in flight still counts");
        assert_eq!(o.backlog_bytes(), cost);
        assert_eq!(o.on_puback(1), DONE);
        assert_eq!(o.backlog_messages(), 0);
        assert_eq!(o.backlog_bytes(), 0);
    }

    #[test]
    fn memory_bound_spills_storable_deliveries_and_refuses_the_rest() {
        let cost = delivery_cost(&delivery(QoS::AtLeastOnce));
        let mut o = Outbound::new(
            QueueLimits {
                memory_bytes: 2 * cost,
                ..QueueLimits::UNLIMITED
            },
            10,
        );
        for seq in 1..=2 {
            o.reserve(cost, QoS::AtLeastOnce, true, true).unwrap();
            let placed = o.place(
                durable_delivery(QoS::AtLeastOnce, seq, None),
                cost,
                true,
                true,
            );
            assert_eq!(placed, Placement::Memory);
        }
        o.reserve(cost, QoS::AtLeastOnce, true, true).unwrap();
        let placed = o.place(
            durable_delivery(QoS::AtLeastOnce, 3, None),
            cost,
            true,
            true,
        );
        assert_eq!(
            placed,
            Placement::Store,
            "beyond the memory bound: store only"
        );
        // Once something waits in the store, QoS 0 (not storable) cannot jump ahead of it.
        assert_eq!(
            o.reserve(cost, QoS::AtMostOnce, false, true),
            Err(Refused::Full)
        );
        assert_eq!(o.stats().stored_messages, 1);
        assert_eq!(o.stats().memory_bytes, 2 * cost);
        // Memory is full: no read yet. Send both and acknowledge them; then read position 3.
        assert_eq!(o.load_request(), None);
        publish_id(send(&mut o));
        publish_id(send(&mut o));
        o.on_puback(1);
        o.on_puback(2);
        let request = o.load_request().expect("memory ran low");
        assert_eq!((request.from, request.before), (3, u64::MAX));
        assert_eq!(o.load_request(), None, "one read at a time");
        o.loaded(
            request,
            Some(vec![durable_delivery(QoS::AtLeastOnce, 3, None)]),
        );
        assert_eq!(o.stats().stored_messages, 0);
        assert_eq!(publish_id(send(&mut o)), 3);
    }

    #[test]
    fn a_closing_flow_names_its_pending_stored_commits_and_movable_shared_deliveries() {
        let cost = delivery_cost(&delivery(QoS::AtLeastOnce));
        let mut o = Outbound::new(QueueLimits::UNLIMITED, 10);
        assert!(!o.holds_shared());
        let (open, pending) = (
            Arc::new(CommitGate::default()),
            Arc::new(CommitGate::default()),
        );
        for (seq, gate) in [(1, &open), (2, &pending)] {
            o.reserve(cost, QoS::AtLeastOnce, true, false).unwrap();
            let mut d = durable_delivery(QoS::AtLeastOnce, seq, Some(Arc::clone(gate)));
            d.group = Some(Arc::from("$share/g/t"));
            assert_eq!(o.place(d, cost, true, false), Placement::Store);
        }
        open.resolve(true);
        assert!(o.holds_shared());
        let gates = o.unsettled_gates();
        assert_eq!(gates.len(), 1);
        assert!(
            Arc::ptr_eq(&gates[0], &pending),
            "only the commit still pending"
        );
        assert_eq!(o.stored_range(), Some((1, 2)));
        // In memory: a QoS 1 sent and a QoS 2 sent (neither acknowledged), and one queued.
        let mut online = Outbound::new(QueueLimits::UNLIMITED, 2);
        for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce, QoS::ExactlyOnce] {
            let mut d = delivery(qos);
            d.group = Some(Arc::from("$share/g/t"));
            online.enqueue(d, true).unwrap();
        }
        let now = Instant::now();
        let mut expired = Vec::new();
        assert!(online.next_transmit(now, &mut expired).is_some());
        assert!(online.next_transmit(now, &mut expired).is_some());
        let (count, movable) = online.close();
        assert_eq!(count, 3);
        let qos: Vec<QoS> = movable.iter().map(|d| d.qos).collect();
        assert_eq!(
            qos,
            [QoS::AtLeastOnce, QoS::ExactlyOnce],
            "the QoS 1 in flight and the queued QoS 2; not the QoS 2 sent (MQTT-4.8.2-5)"
        );
    }

    #[test]
    fn shared_subscription_messages_are_no_part_of_the_stream_position() {
        let from_stream = |seq: u64, group: Option<&str>| {
            let mut d = delivery(QoS::AtLeastOnce);
            Arc::make_mut(&mut d.message).stream_seq = Some(seq);
            d.group = group.map(Arc::from);
            d
        };
        let mut o = Outbound::new(QueueLimits::UNLIMITED, 1);
        // A group's consumer may be ahead of the node's reading of the stream.
        o.enqueue(from_stream(90, Some("$share/g/t")), true)
            .unwrap();
        o.enqueue(from_stream(5, None), true).unwrap();
        assert_eq!(o.stream_position().first_queued, Some(5));
        assert!(send(&mut o).is_some());
        assert_eq!(o.stream_position().sent, 0, "the group's message sent");
        assert_eq!(o.stream_position().first_queued, Some(5));
    }

    #[test]
    fn reads_stop_before_a_delivery_whose_commit_is_pending() {
        let cost = delivery_cost(&delivery(QoS::AtLeastOnce));
        let mut o = Outbound::new(QueueLimits::UNLIMITED, 10);
        let open = Arc::new(CommitGate::default());
        let pending = Arc::new(CommitGate::default());
        let failed = Arc::new(CommitGate::default());
        // Offline: storable deliveries go to the store only.
        for (seq, gate) in [(5, &open), (6, &pending), (7, &failed)] {
            o.reserve(cost, QoS::AtLeastOnce, true, false).unwrap();
            let d = durable_delivery(QoS::AtLeastOnce, seq, Some(Arc::clone(gate)));
            assert_eq!(o.place(d, cost, true, false), Placement::Store);
        }
        open.resolve(true);
        failed.resolve(false);
        let request = o.load_request().unwrap();
        assert_eq!(
            (request.from, request.before),
            (5, 6),
            "6 may not be in the store yet"
        );
        o.loaded(
            request,
            Some(vec![durable_delivery(QoS::AtLeastOnce, 5, None)]),
        );
        pending.resolve(true);
        let request = o.load_request().unwrap();
        assert_eq!((request.from, request.before), (6, u64::MAX));
        assert_eq!(
            o.stats().stored_messages,
            1,
            "the failed commit left the backlog"
        );
        o.loaded(
            request,
            Some(vec![durable_delivery(QoS::AtLeastOnce, 6, None)]),
        );
        assert_eq!(o.backlog_messages(), 2);
        assert_eq!(o.stats().stored_messages, 0);
    }

    #[test]
    fn a_read_does_not_pass_a_delivery_placed_while_it_was_under_way() {
        let cost = delivery_cost(&delivery(QoS::AtLeastOnce));
        let mut o = Outbound::new(QueueLimits::UNLIMITED, 10);
        o.reserve(cost, QoS::AtLeastOnce, true, false).unwrap();
        let d = durable_delivery(QoS::AtLeastOnce, 1, None);
        assert_eq!(o.place(d, cost, true, false), Placement::Store);
        let request = o.load_request().unwrap();
        assert_eq!((request.from, request.before), (1, u64::MAX));
        // While the read runs, two publishers place 2 and 3; the commit of 3 returns first,
        // and the read's snapshot holds 1 and 3 but not 2.
        let (slow, fast) = (
            Arc::new(CommitGate::default()),
            Arc::new(CommitGate::default()),
        );
        for (seq, gate) in [(2, &slow), (3, &fast)] {
            o.reserve(cost, QoS::AtLeastOnce, true, false).unwrap();
            let d = durable_delivery(QoS::AtLeastOnce, seq, Some(Arc::clone(gate)));
            assert_eq!(o.place(d, cost, true, false), Placement::Store);
        }
        fast.resolve(true);
        o.loaded(
            request,
            Some(vec![
                durable_delivery(QoS::AtLeastOnce, 1, None),
                durable_delivery(QoS::AtLeastOnce, 3, None),
            ]),
        );
        assert_eq!(
            o.stored_range(),
            Some((2, 2)),
            "3 is taken only after 2, which the read could not see"
        );
        slow.resolve(true);
        let request = o.load_request().unwrap();
        assert_eq!((request.from, request.before), (2, u64::MAX));
        o.loaded(
            request,
            Some(vec![
                durable_delivery(QoS::AtLeastOnce, 2, None),
                durable_delivery(QoS::AtLeastOnce, 3, None),
            ]),
        );
        assert_eq!(o.take_lost(), 0);
        assert_eq!(o.stored_range(), None);
        let order: Vec<u64> = (0..3)
            .map(|_| match send(&mut o) {
                Some(Transmit::Publish { delivery, .. }) => position(&delivery),
                other => panic!("expected a publish, got {other:?}"),
            })
            .collect();
        assert_eq!(order, [1, 2, 3], "in queue order");
        assert_eq!(send(&mut o), None, "each once");
    }

    #[test]
    fn retained_deliveries_go_first_and_are_not_limited() {
        let mut o = Outbound::new(limit(1), 10);
        o.enqueue(delivery(QoS::AtLeastOnce), true).unwrap();
        for i in 0..5 {
            let mut d = delivery(QoS::AtMostOnce);
            Arc::get_mut(&mut d.message).unwrap().topic = Arc::from(format!("r/{i}"));
            assert!(o.push_retained(d));
        }
        let mut qos0 = 0;
        while let Some(Transmit::Publish { packet_id, .. }) = send(&mut o) {
            if packet_id.is_none() {
                qos0 += 1;
            } else {
                assert_eq!(qos0, 5, "the queue after the retained messages");
            }
        }
        assert_eq!(qos0, 5);
    }

    #[test]
    fn evict_oldest_frees_the_front_of_the_memory_queue() {
        let mut o = Outbound::new(limit(2), 1);
        o.enqueue(durable_delivery(QoS::AtLeastOnce, 1, None), false)
            .unwrap();
        o.enqueue(durable_delivery(QoS::AtLeastOnce, 2, None), false)
            .unwrap();
        assert_eq!(
            o.enqueue(delivery(QoS::AtLeastOnce), false),
            Err(Refused::Full)
        );
        assert_eq!(o.evict_oldest().and_then(|d| d.seq), Seq::new(1));
        assert!(o.enqueue(delivery(QoS::AtLeastOnce), false).is_ok());
    }

    #[test]
    fn one_message_larger_than_the_bounds_fits_an_empty_backlog() {
        let big = delivery_cost(&delivery(QoS::AtLeastOnce)) * 10;
        let mut o = Outbound::new(
            QueueLimits {
                max_messages: 10,
                max_bytes: big / 2,
                memory_bytes: big / 4,
            },
            10,
        );
        o.reserve(big, QoS::AtLeastOnce, false, true).unwrap();
        assert_eq!(
            o.reserve(1, QoS::AtLeastOnce, false, true),
            Err(Refused::Full)
        );
    }

    #[test]
    fn a_retained_topic_waits_at_most_once() {
        let mut o = Outbound::new(limit(10), 10);
        assert!(o.push_retained(delivery(QoS::AtMostOnce)));
        let mut again = delivery(QoS::AtLeastOnce);
        again.subscription_ids = vec![7];
        assert!(!o.push_retained(again), "same topic");
        assert_eq!(o.stats().retained_pending, 1);
        match send(&mut o) {
            Some(Transmit::Publish { delivery, .. }) => {
                assert_eq!(delivery.qos, QoS::AtLeastOnce, "the higher QoS");
                assert_eq!(delivery.subscription_ids, vec![7]);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            o.push_retained(delivery(QoS::AtMostOnce)),
            "sent, so owed again"
        );
    }
}
