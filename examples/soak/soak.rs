//! The soak run: starts the broker, runs the workload for the given time while killing
//! and restarting the broker, then lets every client settle, checks, and reports.
//!
//! Shared by the `soak` example (`main.rs`) and the short run in `tests/soak.rs`.

pub mod broker;
pub mod check;
pub mod conn;
pub mod ledger;
pub mod metrics;
pub mod publisher;
pub mod report;
pub mod retained;
pub mod rss;
pub mod shared;
pub mod subscriber;
pub mod tally;
pub mod wire;
pub mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use broker::Broker;
use shared::{Phase, Shared};

/// How a run is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `roost` binary.
    pub binary: PathBuf,
    /// How long the workload runs.
    pub duration: Duration,
    /// Mean time between `kill -9`s (each interval varies by ±20%).
    pub kill_every: Duration,
    /// Seed of every random choice.
    pub seed: u64,
    /// Messages per second per publisher.
    pub rate: f64,
    /// Unacknowledged messages per QoS 1/2 publisher at most.
    pub window: usize,
    /// Time between RSS samples.
    pub sample_every: Duration,
    /// What counts as flat memory.
    pub criterion: rss::Criterion,
    /// Progress lines on stderr.
    pub progress: bool,
    /// Extra arguments for the broker.
    pub broker_args: Vec<String>,
}

impl Options {
    /// Defaults for a run of `duration`: a kill every three minutes, or three times per
    /// run when that is shorter than nine minutes.
    pub fn new(binary: PathBuf, duration: Duration, seed: u64) -> Options {
        Options {
            binary,
            duration,
            kill_every: (duration / 3).min(Duration::from_secs(180)),
            seed,
            rate: 100.0,
            window: 20,
            sample_every: Duration::from_secs(5),
            criterion: rss::Criterion {
                pct: 20.0,
                margin_kib: 8 << 10,
                warmup_ms: 30_000,
                min_period_ms: 120_000,
            },
            progress: true,
            broker_args: Vec::new(),
        }
    }
}

/// The result of a run.
#[derive(Debug)]
pub struct Outcome {
    /// No violation, memory flat.
    pub passed: bool,
    /// The summary, Markdown.
    pub report: String,
}

/// One `kill -9` and restart.
#[derive(Debug, Clone, Copy)]
pub struct Restart {
    /// When the kill came, ms since the start.
    pub at_ms: u32,
    /// Until the broker listened again, ms.
    pub down_ms: u32,
}

/// Bound on the publishers finishing what they have in flight.
const FINISH_WAIT: Duration = Duration::from_secs(120);
/// Bound on the subscribers collecting what they are owed.
const DRAIN_WAIT: Duration = Duration::from_secs(180);

/// Runs a soak. Errors are setup failures (the broker cannot start, a first subscribe
/// fails); everything after that is in the outcome.
pub async fn run(opts: &Options) -> Result<Outcome, String> {
    let work = tempfile::Builder::new()
        .prefix("roost-soak-")
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))?;
    let data_dir = work.path().join("data");
    let broker = Broker::start(&opts.binary, &data_dir, &opts.broker_args)?;
    let addr = broker.addr;
    let broker = Arc::new(Mutex::new(broker));
    let pub_specs = workload::publishers(opts.rate, opts.window);
    let (phase_tx, phase_rx) = watch::channel(Phase::Run);
    let shared = Arc::new(Shared::new(
        addr,
        ledger::Ledger::new(workload::ledger_view(&pub_specs)),
        phase_rx,
        Duration::from_secs(60),
    ));
    if opts.progress {
        eprintln!(
            "soak: seed {}, broker {} pid {} on {addr}, data in {}, {:?}, kill -9 every ~{:?}",
            opts.seed,
            opts.binary.display(),
            broker.lock().pid(),
            data_dir.display(),
            opts.duration,
            opts.kill_every
        );
    }
    let rng = |k: u64| StdRng::seed_from_u64(opts.seed ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15));

    // Durable subscriptions first, so that they predate every message.
    let mut subscribers: Vec<JoinHandle<subscriber::SubscriberResult>> = Vec::new();
    for (k, spec) in workload::subscribers().into_iter().enumerate() {
        let first = if spec.durable {
            Some(subscriber::setup(&shared, &spec).await?)
        } else {
            None
        };
        subscribers.push(tokio::spawn(subscriber::run(
            Arc::clone(&shared),
            spec,
            first,
            rng(100 + k as u64),
        )));
    }
    let mut publishers = Vec::new();
    for spec in pub_specs.iter().cloned() {
        let r = rng(200 + u64::from(spec.id));
        publishers.push(tokio::spawn(publisher::run(Arc::clone(&shared), spec, r)));
    }
    let check_every = (opts.duration / 8).clamp(Duration::from_secs(10), Duration::from_secs(60));
    let retainer = tokio::spawn(retained::run(
        Arc::clone(&shared),
        16,
        20.0,
        check_every,
        rng(300),
    ));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = tokio::spawn(sample(
        Arc::clone(&shared),
        Arc::clone(&broker),
        Arc::clone(&samples),
        opts.sample_every,
        opts.progress,
    ));
    let restarts = Arc::new(Mutex::new(Vec::new()));
    let chaos = tokio::spawn(chaos(
        Arc::clone(&shared),
        Arc::clone(&broker),
        Arc::clone(&restarts),
        opts.clone(),
        rng(400),
    ));

    tokio::time::sleep(opts.duration).await;
    let run_ms = shared.now_ms();
    let _ = phase_tx.send(Phase::Finish);
    let finish_started = Instant::now();
    let _ = chaos.await;
    let mut publisher_connections = 0;
    for (spec, handle) in pub_specs.iter().zip(publishers) {
        match bounded(handle, finish_started + FINISH_WAIT).await {
            Some(n) => publisher_connections += n,
            None => shared.findings.violation(
                "client did not finish",
                format!(
                    "{} still had messages unacknowledged after {FINISH_WAIT:?}",
                    spec.name
                ),
            ),
        }
    }
    let retain_result = bounded(retainer, finish_started + FINISH_WAIT)
        .await
        .unwrap_or_default();
    let _ = phase_tx.send(Phase::Drain);
    let drain_started = Instant::now();
    let mut results = Vec::new();
    for handle in subscribers {
        match bounded(handle, drain_started + DRAIN_WAIT).await {
            Some(r) => results.push(r),
            None => shared.findings.violation(
                "client did not finish",
                format!("a subscriber was still draining after {DRAIN_WAIT:?}"),
            ),
        }
    }
    let settle_ms = shared.now_ms() - run_ms;
    let _ = phase_tx.send(Phase::Done);
    sampler.abort();
    let _ = sampler.await;
    let end_metrics = final_state(&shared, &broker, &pub_specs, &results).await;

    let stop = {
        let broker = Arc::clone(&broker);
        tokio::task::spawn_blocking(move || broker.lock().stop())
            .await
            .map_err(|e| format!("stop task: {e}"))?
    };
    match &stop {
        Ok(status) if status.success() => {}
        Ok(status) => shared.findings.violation(
            "graceful stop",
            format!("exit status {status} after SIGTERM"),
        ),
        Err(e) => shared.findings.violation("graceful stop", e.clone()),
    }
    let broker = broker.lock();
    let log = broker.log();
    for line in &log.first_errors {
        // The broker logs ERROR only for what an operator must look at (a failed commit, a
        // queue entry counted but not found in the store, ...).
        shared
            .findings
            .violation("broker logged an error", line.clone());
    }
    if !log.panics.is_empty() {
        shared
            .findings
            .violation("broker panicked", log.panics.join("\n"));
    }
    let mut losses = Vec::new();
    for r in &results {
        if r.spec.durable {
            losses.push(check::durable(&shared.ledger, r, &shared.findings));
            if !r.drained {
                shared.findings.note(
                    "drain incomplete",
                    format!("{} stopped waiting for owed messages", r.spec.name),
                );
            }
        } else {
            losses.push(check::Losses::default());
        }
    }
    let samples = samples.lock().clone();
    let verdict = rss::judge(&samples, run_ms, &opts.criterion);
    let restarts = restarts.lock().clone();
    let input = report::Input {
        opts,
        addr,
        run_ms,
        settle_ms,
        publishers: check::publishers(&shared.ledger),
        publisher_connections,
        subscribers: &results,
        losses: &losses,
        retained: &retain_result,
        restarts: &restarts,
        reconnects: shared.counters.reconnects.load(Ordering::Relaxed),
        samples: &samples,
        verdict: &verdict,
        log: &log,
        store_bytes: broker.store_bytes(),
        metrics: &end_metrics,
        violations: shared.findings.violations(),
        notes: shared.findings.notes(),
    };
    let passed = input.violations.is_empty() && verdict.ok;
    Ok(Outcome {
        passed,
        report: report::render(&input, passed),
    })
}

/// Reads the broker's gauges once every client is gone: only the durable sessions and their
/// subscriptions may be left (a clean session, or a subscription of one, that outlives its
/// connection is a leak). Retries for a while, since a closed connection ends its session
/// asynchronously.
async fn final_state(
    shared: &Shared,
    broker: &Mutex<Broker>,
    publishers: &[publisher::PublisherSpec],
    subscribers: &[subscriber::SubscriberResult],
) -> std::collections::BTreeMap<String, f64> {
    let durable_subs = subscribers.iter().filter(|s| s.spec.durable);
    let sessions =
        durable_subs.clone().count() + publishers.iter().filter(|p| p.durable).count() + 1;
    let subscriptions: usize = durable_subs.map(|s| s.spec.filters.len()).sum();
    let expected = [
        ("roost_sessions", sessions as f64),
        ("roost_subscriptions", subscriptions as f64),
    ];
    let http = broker.lock().http;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = tokio::task::spawn_blocking(move || metrics::scrape(http))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
        let m = match got {
            Ok(m) => m,
            Err(e) => {
                shared.findings.violation("metrics unavailable", e);
                return Default::default();
            }
        };
        let off: Vec<String> = expected
            .iter()
            .filter(|(name, want)| m.get(*name) != Some(want))
            .map(|(name, want)| format!("{name} = {:?}, expected {want}", m.get(*name)))
            .collect();
        if off.is_empty() {
            return m;
        }
        if Instant::now() > deadline {
            shared
                .findings
                .violation("state left after the run", off.join("; "));
            return m;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits for a task until `deadline`; aborts it after that.
async fn bounded<T>(mut handle: JoinHandle<T>, deadline: Instant) -> Option<T> {
    match tokio::time::timeout_at(deadline.into(), &mut handle).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(_)) => None,
        Err(_) => {
            handle.abort();
            None
        }
    }
}

/// Kills the broker with SIGKILL about every `kill_every` and restarts it after a short
/// pause, until the workload ends. No kill comes in the last quarter interval of the run.
async fn chaos(
    shared: Arc<Shared>,
    broker: Arc<Mutex<Broker>>,
    restarts: Arc<Mutex<Vec<Restart>>>,
    opts: Options,
    mut rng: StdRng,
) {
    let interval = opts.kill_every.as_secs_f64();
    let last = opts.duration.as_secs_f64() - interval / 4.0;
    let mut at = 0.0;
    loop {
        at += interval * rng.random_range(0.8..1.2);
        if interval <= 0.0 || at >= last {
            return;
        }
        let when = shared.start() + Duration::from_secs_f64(at);
        tokio::time::sleep_until(when.into()).await;
        if shared.phase() != Phase::Run {
            return;
        }
        let pause = Duration::from_millis(rng.random_range(100..1000));
        let broker = Arc::clone(&broker);
        let at_ms = shared.now_ms();
        let outcome = tokio::task::spawn_blocking(move || {
            let mut b = broker.lock();
            b.kill9()?;
            std::thread::sleep(pause);
            b.restart().map(|took| pause + took)
        })
        .await;
        match outcome {
            Ok(Ok(down)) => {
                shared.counters.restarts.fetch_add(1, Ordering::Relaxed);
                restarts.lock().push(Restart {
                    at_ms,
                    down_ms: down.as_millis() as u32,
                });
                if opts.progress {
                    eprintln!(
                        "soak: {:>6.1} s kill -9 and restart ({} ms down)",
                        f64::from(at_ms) / 1000.0,
                        down.as_millis()
                    );
                }
            }
            Ok(Err(e)) => {
                shared.findings.violation("restart failed", e);
                return;
            }
            Err(e) => {
                shared.findings.violation("restart failed", e.to_string());
                return;
            }
        }
    }
}

/// Samples the broker's RSS and store size; notices a broker that died by itself (a crash
/// nobody caused), records it and starts the broker again.
async fn sample(
    shared: Arc<Shared>,
    broker: Arc<Mutex<Broker>>,
    samples: Arc<Mutex<Vec<rss::Sample>>>,
    every: Duration,
    progress: bool,
) {
    let mut ticker = tokio::time::interval(every);
    let mut last_line = Instant::now();
    loop {
        ticker.tick().await;
        // The kill-and-restart holds the lock: skip this sample then.
        let taken = {
            let Some(mut b) = broker.try_lock() else {
                continue;
            };
            match b.exited() {
                Some(status) => Err(status),
                None => Ok(broker::rss_kib(b.pid()).map(|rss| (rss, b.store_bytes()))),
            }
        };
        let (rss_kib, store_bytes) = match taken {
            Ok(Some(v)) => v,
            Ok(None) => continue,
            Err(status) => {
                shared.findings.violation(
                    "broker died",
                    format!("exited by itself with {status} at {} ms", shared.now_ms()),
                );
                let broker = Arc::clone(&broker);
                if let Ok(Err(e)) =
                    tokio::task::spawn_blocking(move || broker.lock().restart()).await
                {
                    shared.findings.violation("restart failed", e);
                }
                continue;
            }
        };
        let s = rss::Sample {
            t_ms: shared.now_ms(),
            period: shared.counters.restarts.load(Ordering::Relaxed),
            rss_kib,
            store_bytes,
            published: (0..shared.ledger.publishers.len() as u32)
                .map(|p| shared.ledger.sent_count(p))
                .sum(),
            delivered: shared.counters.delivered.load(Ordering::Relaxed),
        };
        if progress && last_line.elapsed() >= Duration::from_secs(30) {
            last_line = Instant::now();
            eprintln!(
                "soak: {:>6.1} s RSS {:.1} MiB, store {:.1} MiB, published {}, delivered {}, \
                 reconnects {}, violations {}",
                f64::from(s.t_ms) / 1000.0,
                s.rss_kib as f64 / 1024.0,
                s.store_bytes as f64 / f64::from(1 << 20),
                s.published,
                s.delivered,
                shared.counters.reconnects.load(Ordering::Relaxed),
                shared
                    .findings
                    .violations()
                    .values()
                    .map(|v| v.0)
                    .sum::<u64>()
            );
        }
        samples.lock().push(s);
    }
}
