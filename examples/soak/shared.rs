//! State every soak task sees: the clock, the ledger, the phase of the run, the counters
//! for progress lines, and the findings.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;

use super::conn::{Conn, ConnError};
use super::ledger::Ledger;
use super::wire::{ConnectSpec, Version};

/// Phases of a run, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// The workload runs and the broker is killed now and then.
    Run,
    /// Publishers send nothing new and finish what they have in flight.
    Finish,
    /// Subscribers collect what is still owed to them.
    Drain,
    /// Everything stops.
    Done,
}

/// Examples kept per kind of finding.
const EXAMPLES: usize = 8;

/// Violations (the run fails) and notes (reported only), by kind.
#[derive(Debug, Default)]
pub struct Findings {
    violations: Mutex<BTreeMap<String, (u64, Vec<String>)>>,
    notes: Mutex<BTreeMap<String, (u64, Vec<String>)>>,
}

fn add(map: &Mutex<BTreeMap<String, (u64, Vec<String>)>>, kind: &str, detail: String) {
    let mut map = map.lock();
    let (n, examples) = map.entry(kind.to_string()).or_default();
    *n += 1;
    if examples.len() < EXAMPLES {
        examples.push(detail);
    }
}

impl Findings {
    /// Records a violation of what the broker promises.
    pub fn violation(&self, kind: &str, detail: String) {
        add(&self.violations, kind, detail);
    }

    /// Records something worth reporting that is not a violation.
    pub fn note(&self, kind: &str, detail: String) {
        add(&self.notes, kind, detail);
    }

    /// Violations by kind: count and examples.
    pub fn violations(&self) -> BTreeMap<String, (u64, Vec<String>)> {
        self.violations.lock().clone()
    }

    /// Notes by kind: count and examples.
    pub fn notes(&self) -> BTreeMap<String, (u64, Vec<String>)> {
        self.notes.lock().clone()
    }
}

/// Counters for progress lines.
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages delivered to subscribers (repeats included).
    pub delivered: AtomicU64,
    /// Reconnects of clients after a lost connection.
    pub reconnects: AtomicU64,
    /// Broker restarts so far.
    pub restarts: AtomicU64,
}

/// What the tasks share.
pub struct Shared {
    start: Instant,
    /// The broker's address (the same across restarts).
    pub addr: SocketAddr,
    /// What was published.
    pub ledger: Ledger,
    /// The phase of the run.
    pub phase: watch::Receiver<Phase>,
    /// Violations and notes.
    pub findings: Findings,
    /// Progress counters.
    pub counters: Counters,
    /// How long a client keeps trying to reconnect before that is a violation.
    pub reconnect_limit: Duration,
}

impl Shared {
    /// A shared state whose clock starts now.
    pub fn new(
        addr: SocketAddr,
        ledger: Ledger,
        phase: watch::Receiver<Phase>,
        reconnect_limit: Duration,
    ) -> Shared {
        Shared {
            start: Instant::now(),
            addr,
            ledger,
            phase,
            findings: Findings::default(),
            counters: Counters::default(),
            reconnect_limit,
        }
    }

    /// The instant the run started.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Milliseconds since the start of the run.
    pub fn now_ms(&self) -> u32 {
        self.start.elapsed().as_millis() as u32
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Connects with retries (the broker may be restarting), backing off from 50 ms to 1 s.
    /// Gives up, with a violation, after [`Shared::reconnect_limit`], or when the run is
    /// done.
    pub async fn connect(&self, version: Version, spec: &ConnectSpec) -> Option<(Conn, bool)> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(50);
        loop {
            match Conn::open(self.addr, version, spec).await {
                Ok(c) => return Some(c),
                Err(e) => {
                    if !e.is_io() {
                        self.findings
                            .note("connect failed", format!("{}: {e}", spec.client_id));
                    }
                    if self.phase() == Phase::Done {
                        return None;
                    }
                    if started.elapsed() > self.reconnect_limit {
                        self.findings.violation(
                            "broker unreachable",
                            format!(
                                "{} could not connect for {:?}: {e}",
                                spec.client_id, self.reconnect_limit
                            ),
                        );
                        return None;
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// Records a lost connection: a note unless a broker restart explains it.
    pub fn connection_lost(&self, who: &str, e: &ConnError) {
        self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
        if !e.is_io() {
            self.findings
                .note("connection ended", format!("{who}: {e}"));
        }
    }
}
