//! Idle plain-TCP connections, kept without a task.
//!
//! Most connections of an IoT broker are idle most of the time: a device that sends a reading
//! a minute, or a PINGREQ every keep alive. A connection with a task of its own holds that
//! task's future and tokio's registration of its socket for its whole life, several times the
//! memory of its MQTT state. So a connection that has been quiet for
//! [`Config::park_after`](crate::Config::park_after), with nothing in progress (no bytes read
//! and not handled, nothing to write, no commit, no paused PUBLISH), leaves its task: its
//! socket moves from tokio's poller to the epoll instance of this module, and what the
//! connection needs to go on (its protocol core, link and admission) waits in one table shared
//! by the process.
//!
//! A parked connection is resumed, in a new task with its socket back with tokio, when:
//! - its socket becomes readable (a packet arrived, or the client closed or reset it);
//! - a delivery is queued for its Session ([`wake`] from the session's marker);
//! - it is kicked: taken over, closed by the admin API ([`wake`] from the link's marker);
//! - its keep alive runs out (the broker's timers, on the broker's clock);
//! - the broker shuts down.
//!
//! Each parked connection has a tag: its place in the table and a generation, so a wake-up
//! meant for a connection that has moved on (resumed, then parked again, or gone) finds
//! nothing and does nothing. Every wake-up takes the entry out of the table under its lock,
//! so a connection is resumed once, however many wake-ups race.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use parking_lot::Mutex;
use slab::Slab;
use tokio::sync::Notify;
use tracing::{error, warn};

use super::conn::Parked;
use crate::broker::Broker;

/// Tag of no parked connection (a session's or link's marker while its connection runs).
pub(crate) const NOT_PARKED: u64 = 0;

/// The process's table of parked connections and the thread that watches their sockets.
struct Lot {
    /// Parked connections, each with the generation of its place ([`Parked::generation`]).
    table: Mutex<Slab<Box<Parked>>>,
    registry: Registry,
}

static LOT: OnceLock<Option<Lot>> = OnceLock::new();
/// Generations of table places: never 0, so no tag is [`NOT_PARKED`].
static GENERATION: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

fn tag_of(key: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | key as u64
}

fn split(tag: u64) -> (usize, u32) {
    ((tag & 0xffff_ffff) as usize, (tag >> 32) as u32)
}

/// The lot, started on first use; `None` if the system refused an epoll instance or a
/// thread (then connections keep their tasks, as if never idle).
fn lot() -> Option<&'static Lot> {
    LOT.get_or_init(|| match start() {
        Ok(lot) => Some(lot),
        Err(e) => {
            error!(error = %e, "idle connections cannot be parked (epoll or thread unavailable): each keeps its task");
            None
        }
    })
    .as_ref()
}

fn start() -> std::io::Result<Lot> {
    let poll = Poll::new()?;
    let registry = poll.registry().try_clone()?;
    std::thread::Builder::new()
        .name("roost-parked".into())
        .spawn(move || watch(poll))?;
    Ok(Lot {
        table: Mutex::new(Slab::new()),
        registry,
    })
}

/// The thread: resumes each connection whose socket becomes readable.
fn watch(mut poll: Poll) {
    let mut events = Events::with_capacity(1024);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            // Not expected of epoll_wait; pause rather than spin.
            error!(error = %e, "waiting on parked connections failed");
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let Some(lot) = LOT.get().and_then(Option::as_ref) else {
            continue;
        };
        for event in &events {
            lot.resume(event.token().0 as u64);
        }
    }
}

impl Lot {
    /// Takes the connection tagged `tag` out of the table and off the watch list, with its
    /// markers cleared and its gauge counted down; `None` if it is no longer there.
    fn take(&self, tag: u64) -> Option<Box<Parked>> {
        let (key, generation) = split(tag);
        let parked = {
            let mut table = self.table.lock();
            match table.get(key) {
                // Generation 0: a readiness event where the token holds only the place.
                Some(p) if p.generation == generation || generation == 0 => table.remove(key),
                _ => return None,
            }
        };
        if let Some(socket) = &parked.socket
            && let Err(e) = self.registry.deregister(&mut SourceFd(&socket.as_raw_fd()))
        {
            warn!(error = %e, "a parked socket could not be taken off the watch list");
        }
        parked.unmark(tag_of(key, parked.generation));
        parked
            .broker()
            .metrics
            .connections_parked
            .fetch_sub(1, Ordering::Relaxed);
        Some(parked)
    }

    /// Takes the connection tagged `tag` out of the table and resumes it in a new task; does
    /// nothing if it is no longer there.
    fn resume(&self, tag: u64) {
        let Some(parked) = self.take(tag) else {
            return;
        };
        match parked.broker().parking.runtime.get().cloned() {
            Some(runtime) => drop(runtime.spawn(super::conn::resume(parked))),
            None => error!("a parked connection has no runtime to resume in: dropped"),
        }
    }

    /// Resumes every connection of `broker` (at shutdown); or, with `drop_only`, drops them
    /// without resuming (the runtime that would run them is gone).
    fn resume_all(&self, broker: &Arc<Broker>, drop_only: bool) {
        let tags: Vec<u64> = {
            let table = self.table.lock();
            table
                .iter()
                .filter(|(_, p)| p.belongs_to(broker))
                .map(|(key, p)| tag_of(key, p.generation))
                .collect()
        };
        for tag in tags {
            if drop_only {
                drop(self.take(tag));
            } else {
                self.resume(tag);
            }
        }
    }
}

/// Resumes the connection tagged `tag` (a session's or link's marker), if it is parked.
pub(crate) fn wake(tag: u64) {
    if tag == NOT_PARKED {
        return;
    }
    if let Some(lot) = LOT.get().and_then(Option::as_ref) {
        lot.resume(tag);
    }
}

/// Parks `parked`, resumed at `deadline` at the latest (on the broker's clock). Gives it back
/// if it cannot be parked (the lot is unavailable, the broker is shutting down, its socket
/// could not be watched).
pub(crate) fn park(mut parked: Box<Parked>, deadline: Option<Instant>) -> Result<(), Box<Parked>> {
    let Some(lot) = lot() else {
        return Err(parked);
    };
    let broker = Arc::clone(parked.broker());
    let Some(fd) = parked.socket.as_ref().map(AsRawFd::as_raw_fd) else {
        return Err(parked);
    };
    if broker.shutdown.is_cancelled() {
        return Err(parked);
    }
    let timers = broker.parking.started(&broker);
    let (session, link) = parked.markers();
    let tag = {
        let mut table = lot.table.lock();
        let entry = table.vacant_entry();
        let generation = GENERATION.fetch_add(1, Ordering::Relaxed).max(1);
        let tag = tag_of(entry.key(), generation);
        // Registered under the lock: a readiness event for this tag waits for the entry.
        if let Err(e) = lot
            .registry
            .register(&mut SourceFd(&fd), token(tag), Interest::READABLE)
        {
            warn!(error = %e, "an idle socket could not be watched: its connection keeps its task");
            return Err(parked);
        }
        parked.generation = generation;
        entry.insert(parked);
        // The markers too, before anyone can take the entry out (resumed by its socket, its
        // deadline): the resumption then always clears them. Set after it, they would point
        // at a connection that has moved on, and a delivery or kick would not find it.
        session.parked.store(tag, Ordering::SeqCst);
        link.set_parked(tag);
        broker
            .metrics
            .connections_parked
            .fetch_add(1, Ordering::Relaxed);
        tag
    };
    if let Some(deadline) = deadline {
        timers.push(deadline, tag);
    }
    // What may have happened before the markers were visible: a delivery (its wake-up is
    // a stored permit), a kick, shutdown.
    use futures_util::FutureExt;
    let woken = session.wake.notified().now_or_never().is_some();
    if woken {
        // The permit is given back: the connection may have been resumed already (by its
        // socket) and be running, and the delivery is then its to send.
        session.wake.notify_one();
    }
    if woken || link.kick_reason().is_some() || broker.shutdown.is_cancelled() {
        lot.resume(tag);
    }
    Ok(())
}

/// The epoll token of `tag`: the tag itself, or where `usize` cannot hold it (32-bit targets)
/// its place alone (generation 0), which [`Lot::resume`] takes for whatever is there.
fn token(tag: u64) -> Token {
    Token(usize::try_from(tag).unwrap_or((tag & 0xffff_ffff) as usize))
}

/// A broker's side of parking: the keep-alive deadlines of its parked connections, on its
/// clock, and their resumption at shutdown.
#[derive(Default)]
pub(crate) struct Parking {
    timers: Arc<Timers>,
    /// The runtime the broker's connections run on (set by the first to park).
    runtime: OnceLock<tokio::runtime::Handle>,
}

#[derive(Default)]
struct Timers {
    /// Deadlines (nanoseconds after `base`) and tags; an entry whose connection was resumed
    /// meanwhile is skipped.
    heap: Mutex<BinaryHeap<Reverse<(u64, u64)>>>,
    /// What deadlines count from: the broker's time when its first connection parked (no
    /// deadline is earlier).
    base: OnceLock<Instant>,
    /// An earlier deadline than the one waited for was added.
    changed: Notify,
}

impl Timers {
    fn to_nanos(&self, at: Instant) -> u64 {
        let base = *self.base.get_or_init(|| at);
        u64::try_from(at.saturating_duration_since(base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Sets the base to `now` unless set.
    fn start_at(&self, now: Instant) {
        self.base.get_or_init(|| now);
    }

    fn push(&self, deadline: Instant, tag: u64) {
        let deadline = self.to_nanos(deadline);
        let mut heap = self.heap.lock();
        let earlier = heap.peek().is_none_or(|Reverse((d, _))| deadline < *d);
        heap.push(Reverse((deadline, tag)));
        // Entries of connections resumed before their deadline stay until it passes: rebuild
        // the heap when they are most of it.
        if heap.len() >= 4096
            && heap.len().is_power_of_two()
            && let Some(lot) = LOT.get().and_then(Option::as_ref)
        {
            let table = lot.table.lock();
            heap.retain(|Reverse((_, tag))| {
                let (key, generation) = split(*tag);
                table.get(key).is_some_and(|p| p.generation == generation)
            });
        }
        drop(heap);
        if earlier {
            self.changed.notify_one();
        }
    }

    /// Takes the tags whose deadline is at or before `now`, and the next deadline.
    fn due(&self, now: Instant) -> (Vec<u64>, Option<Instant>) {
        let Some(base) = self.base.get().copied() else {
            return (Vec::new(), None);
        };
        let now = self.to_nanos(now);
        let mut heap = self.heap.lock();
        let mut due = Vec::new();
        while let Some(Reverse((deadline, tag))) = heap.peek().copied() {
            if deadline > now {
                return (due, Some(base + Duration::from_nanos(deadline)));
            }
            heap.pop();
            due.push(tag);
        }
        (due, None)
    }
}

impl Parking {
    /// The timers, with their task started (in the calling task's runtime) on first use.
    fn started(&self, broker: &Arc<Broker>) -> Arc<Timers> {
        self.timers.start_at(broker.clock.now());
        self.runtime.get_or_init(|| {
            tokio::spawn(run_timers(Arc::downgrade(broker), Arc::clone(&self.timers)));
            tokio::runtime::Handle::current()
        });
        Arc::clone(&self.timers)
    }
}

/// Resumes parked connections at their deadlines, and all of them at shutdown. If the runtime
/// is dropped first, the connections are dropped with it (as their tasks would have been).
async fn run_timers(broker: std::sync::Weak<Broker>, timers: Arc<Timers>) {
    struct DropAll(std::sync::Weak<Broker>);
    impl Drop for DropAll {
        fn drop(&mut self) {
            if let (Some(broker), Some(lot)) =
                (self.0.upgrade(), LOT.get().and_then(Option::as_ref))
            {
                lot.resume_all(&broker, true);
            }
        }
    }
    let guard = DropAll(broker.clone());
    let Some((clock, shutdown)) = broker
        .upgrade()
        .map(|b| (b.clock.clone(), b.shutdown.clone()))
    else {
        return;
    };
    loop {
        let (due, next) = timers.due(clock.now());
        for tag in due {
            wake(tag);
        }
        let changed = timers.changed.notified();
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = changed => {}
            _ = async {
                match next {
                    Some(next) => clock.sleep_until(next).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
    let mut guard = guard;
    guard.0 = std::sync::Weak::new();
    if let (Some(broker), Some(lot)) = (broker.upgrade(), LOT.get().and_then(Option::as_ref)) {
        lot.resume_all(&broker, false);
    }
}

impl std::fmt::Debug for Parking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parking")
            .field("timers", &self.timers.heap.lock().len())
            .finish()
    }
}
