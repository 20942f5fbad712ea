//! Durable state in redb, written by one dedicated thread with group commit.
//!
//! Connections hand batches of operations to the store. The writer thread drains everything
//! queued, applies it in one write transaction, commits once (one fdatasync with `fsync`
//! durability), then answers every waiter. Batches grow with load and add no latency when the
//! broker is idle. Ephemeral sessions never produce operations, so a broker with only clean
//! sessions performs no write transactions.

mod apply;
mod guard;
mod load;
pub(crate) mod record;
pub mod repair;
mod tables;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redb::Database;
use tokio::sync::oneshot;
use tracing::{error, info, warn};

#[cfg(test)]
pub(crate) use apply::entry_for;
pub(crate) use apply::{Op, SessionKey, delivery_entry};
pub(crate) use load::Loaded;
pub use record::CorruptRecord;
pub(crate) use record::{EntryState, SessionRecord};

use tables::{META, SCHEMA_VERSION, UPGRADABLE_FROM};

use crate::clock::Clock;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "roost.redb";

/// Page cache of the store unless configured otherwise.
pub const DEFAULT_CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Most operations applied in one transaction; more wait for the next one.
const MAX_BATCH_OPS: usize = 65_536;
/// With buffered durability, the longest a commit stays without an fsync.
const BUFFERED_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// When a commit reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Every commit that an acknowledgement waits on is fsynced before it goes out (commits
    /// nobody waits on ride along with the next fsync, at most a second later).
    Fsync,
    /// Commits are fsynced at most every second: crash-consistent, but a crash may lose the
    /// last moments of acknowledged state.
    Buffered,
}

/// A storage problem. Messages name the database file (or the data directory).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("cannot open store {}: {source}", path.display())]
    CreateDir {
        /// The data directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The database file could not be created or opened.
    #[error("cannot open store {}: {source}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// What redb reported.
        #[source]
        source: redb::DatabaseError,
    },
    /// The writer thread could not be started.
    #[error("cannot start the writer thread of store {}: {source}", path.display())]
    Spawn {
        /// The database file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Reading or preparing the file failed.
    #[error("cannot read store {}: {source}", path.display())]
    Read {
        /// The database file.
        path: PathBuf,
        /// What redb reported.
        #[source]
        source: redb::Error,
    },
    /// The file is damaged: redb found a page it cannot read or whose checksum is wrong.
    #[error(
        "store {} is damaged: {detail}. The broker does not start on a damaged store: run \
         `roost store check --data-dir {}` to see what is readable, then `roost store repair \
         --data-dir {}` to keep every readable record (the damaged file is kept beside it)",
        path.display(), data_dir(path).display(), data_dir(path).display()
    )]
    Damaged {
        /// The database file.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// The store could not write and is being reopened; durable operations are refused
    /// until it can write again.
    #[error("store {} cannot write at the moment (full disk or I/O error); retrying", path.display())]
    Unavailable {
        /// The database file.
        path: PathBuf,
    },
    /// A record holds something this version cannot decode.
    #[error(
        "store {} is corrupt: {source}. `roost store repair --data-dir {}` keeps every \
         readable record",
        path.display(), data_dir(path).display()
    )]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What was wrong with the record.
        #[source]
        source: CorruptRecord,
    },
    /// A queue entry refers to a message the file does not hold.
    #[error("store {} is corrupt: message {id} missing", path.display())]
    MissingMessage {
        /// The database file.
        path: PathBuf,
        /// The id of the missing message.
        id: u64,
    },
    /// The file was written with another schema version.
    #[error(
        "store {} has schema version {found}; this broker reads version {SCHEMA_VERSION}",
        path.display()
    )]
    Schema {
        /// The database file.
        path: PathBuf,
        /// The version found.
        found: u32,
    },
    /// A commit failed. The error is shared by every request of the failed transaction.
    #[error("store {} commit failed: {source}", path.display())]
    Commit {
        /// The database file.
        path: PathBuf,
        /// What redb reported.
        #[source]
        source: Arc<redb::Error>,
    },
    /// The store has shut down.
    #[error("store is closed")]
    Closed,
}

impl StoreError {
    /// A [`StoreError::Read`] for `path`, or [`StoreError::Damaged`] when redb found the
    /// file damaged.
    pub(crate) fn read(path: &Path, source: impl Into<redb::Error>) -> StoreError {
        match source.into() {
            redb::Error::Corrupted(detail) => StoreError::Damaged {
                path: path.to_path_buf(),
                detail,
            },
            source => StoreError::Read {
                path: path.to_path_buf(),
                source,
            },
        }
    }

    /// A [`StoreError::Damaged`] for `path`.
    pub(crate) fn damaged(path: &Path, detail: String) -> StoreError {
        StoreError::Damaged {
            path: path.to_path_buf(),
            detail,
        }
    }

    /// A [`StoreError::Corrupt`] for `path`.
    pub(crate) fn corrupt(path: &Path, source: CorruptRecord) -> StoreError {
        StoreError::Corrupt {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The data directory of the database file `path` (for the commands in error messages).
fn data_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Counters of the writer thread.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Write transactions committed (including empty fsync-only ones in buffered mode).
    pub write_transactions: AtomicU64,
    /// Requests (connection batches) committed.
    pub requests: AtomicU64,
    /// Operations applied.
    pub ops: AtomicU64,
    /// Largest number of requests in one transaction.
    pub max_batch: AtomicU64,
    /// Commits that failed.
    pub failures: AtomicU64,
    /// Bytes of queued messages in the store (the records of the messages table).
    pub message_bytes: AtomicU64,
    /// Write transactions that were synced to the disk (fsync).
    pub synced_transactions: AtomicU64,
    /// Microseconds spent in synced write transactions, fsync included, all together.
    pub synced_micros: AtomicU64,
    /// Set while the store cannot write (after a failed commit, until it is reopened).
    pub failing: AtomicBool,
    /// Times the database was reopened after a failure.
    pub reopens: AtomicU64,
    /// Requests refused without a write because the store was failing.
    pub refused: AtomicU64,
}

/// Distributions of the writer thread's work, for the Prometheus exposition.
#[derive(Debug)]
pub(crate) struct StoreHistograms {
    /// Seconds per write transaction, fsync included when there is one.
    pub commit_seconds: prometheus_client::metrics::histogram::Histogram,
    /// Requests (connection batches) per write transaction.
    pub batch_requests: prometheus_client::metrics::histogram::Histogram,
}

impl Default for StoreHistograms {
    fn default() -> Self {
        use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
        StoreHistograms {
            // 50 µs to about 3 s.
            commit_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            // 1 to 4096 requests.
            batch_requests: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
        }
    }
}

/// A point-in-time copy of [`StoreStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StoreStatsSnapshot {
    /// See [`StoreStats::write_transactions`].
    pub write_transactions: u64,
    /// See [`StoreStats::requests`].
    pub requests: u64,
    /// See [`StoreStats::ops`].
    pub ops: u64,
    /// See [`StoreStats::max_batch`].
    pub max_batch: u64,
    /// See [`StoreStats::failures`].
    pub failures: u64,
    /// See [`StoreStats::message_bytes`].
    pub message_bytes: u64,
    /// See [`StoreStats::synced_transactions`].
    pub synced_transactions: u64,
    /// See [`StoreStats::synced_micros`].
    pub synced_micros: u64,
    /// False while the store cannot write (see [`StoreStats::failing`]).
    pub healthy: bool,
    /// See [`StoreStats::reopens`].
    pub reopens: u64,
    /// See [`StoreStats::refused`].
    pub refused: u64,
}

impl Default for StoreStatsSnapshot {
    fn default() -> Self {
        StoreStatsSnapshot {
            write_transactions: 0,
            requests: 0,
            ops: 0,
            max_batch: 0,
            failures: 0,
            message_bytes: 0,
            synced_transactions: 0,
            synced_micros: 0,
            healthy: true,
            reopens: 0,
            refused: 0,
        }
    }
}

struct Request {
    ops: Vec<Op>,
    done: Option<oneshot::Sender<Result<(), StoreError>>>,
}

/// The open database, shared by the writer thread and the readers. Empty once the store is
/// closed, and while the writer reopens the file after a failure.
type DbSlot = Arc<Mutex<Option<Arc<Database>>>>;

/// Handle to the store and its writer thread.
#[derive(Debug)]
pub(crate) struct Store {
    /// Shared with the writer thread for reads.
    db: DbSlot,
    tx: Mutex<Option<mpsc::Sender<Request>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<StoreStats>,
    /// Distributions of commit time and batch size.
    pub(crate) histograms: Arc<StoreHistograms>,
    path: PathBuf,
    /// The clock of the times in the records (session disconnection, message expiry).
    clock: Clock,
}

/// Opens (creating if needed) the database file; a damaged file is an error, never a panic.
fn open_database(path: &Path, cache_bytes: usize) -> Result<Database, StoreError> {
    database_result(
        path,
        guard::contained(|| Database::builder().set_cache_size(cache_bytes).create(path)),
    )
}

/// The error of a contained redb call on the file at `path`: damage (a corrupted page, or a
/// panic on one) or another failure to open it.
fn database_result<T>(
    path: &Path,
    result: Result<Result<T, redb::DatabaseError>, String>,
) -> Result<T, StoreError> {
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)))) => {
            Err(StoreError::damaged(path, detail))
        }
        Ok(Err(source)) => Err(StoreError::Open {
            path: path.to_path_buf(),
            source,
        }),
        Err(panic) => Err(StoreError::damaged(path, panic)),
    }
}

/// redb's integrity check: every page checksum of the committed state. A file that redb
/// had to repair is reported in the log.
fn verify_pages(db: &mut Database, path: &Path) -> Result<(), StoreError> {
    let started = Instant::now();
    if database_result(path, guard::contained(|| db.check_integrity()))? {
        info!(path = %path.display(), took = ?started.elapsed(), "store pages verified");
    } else {
        warn!(path = %path.display(), "store file needed repair (damaged pages or allocation state) and redb repaired it; `roost store check` shows what it holds");
    }
    Ok(())
}

impl Store {
    /// Opens (creating if needed) `dir/roost.redb`, checks the schema version, removes
    /// sessions that expired while the broker was down, loads the rest, and starts the writer.
    /// Times are read from the system clock.
    #[cfg(test)]
    pub(crate) fn open(dir: &Path, durability: Durability) -> Result<(Store, Loaded), StoreError> {
        Store::open_with(dir, durability, DEFAULT_CACHE_BYTES, true, &Clock::system())
    }

    /// [`Store::open`] with a page cache of `cache_bytes` (redb's own default is 1 GiB), and
    /// `clock` for the times it stores and for deciding which sessions expired while the
    /// broker was down.
    ///
    /// A damaged file ([`StoreError::Damaged`]) is found here rather than later: with
    /// `verify`, every page checksum is checked first (redb's integrity check); reading
    /// everything at startup then walks every table, and a panic of the database engine on a
    /// damaged page is contained and reported as damage.
    pub(crate) fn open_with(
        dir: &Path,
        durability: Durability,
        cache_bytes: usize,
        verify: bool,
        clock: &Clock,
    ) -> Result<(Store, Loaded), StoreError> {
        let path = dir.join(DB_FILE);
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut db = open_database(&path, cache_bytes)?;
        if verify {
            verify_pages(&mut db, &path)?;
        }
        let (loaded, expired) = guard::contained(|| {
            check_schema(&db, &path, clock)?;
            let mut loaded = load::load(&db, &path, clock)?;
            let expired = load::drop_expired(&db, &path, &mut loaded, clock)?;
            Ok::<_, StoreError>((loaded, expired))
        })
        .map_err(|panic| StoreError::damaged(&path, panic))??;
        // The absolute path, so the operator sees which store this is.
        let shown = std::path::absolute(&path).unwrap_or_else(|_| path.clone());
        info!(
            path = %shown.display(),
            sessions = loaded.sessions.len(),
            retained = loaded.retained.len(),
            expired,
            ?durability,
            "store opened"
        );
        let stats = Arc::new(StoreStats::default());
        stats.message_bytes.store(loaded.message_bytes, Relaxed);
        let slot: DbSlot = Arc::new(Mutex::new(Some(Arc::new(db))));
        let (tx, rx) = mpsc::channel();
        let histograms = Arc::new(StoreHistograms::default());
        let writer = Writer {
            slot: Arc::clone(&slot),
            durability,
            stats: Arc::clone(&stats),
            histograms: Arc::clone(&histograms),
            path: path.clone(),
            cache_bytes,
            clock: clock.clone(),
            failure: None,
            reopened: None,
            deferred: Vec::new(),
            unsynced_ops: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name("roost-store".into())
            .spawn(move || writer.run(&rx))
            .map_err(|source| StoreError::Spawn {
                path: path.clone(),
                source,
            })?;
        Ok((
            Store {
                db: slot,
                tx: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
                stats,
                histograms,
                path,
                clock: clock.clone(),
            },
            loaded,
        ))
    }

    /// Applies `ops` and waits until they are committed.
    pub(crate) async fn commit(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.send(Request {
            ops,
            done: Some(done),
        })?;
        wait.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Queues `ops` for commit now (so that they are ordered before anything queued later)
    /// and returns a future that resolves when they are committed.
    pub(crate) fn commit_queued(
        &self,
        ops: Vec<Op>,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + use<> {
        let (done, wait) = oneshot::channel();
        let sent = self.send(Request {
            ops,
            done: Some(done),
        });
        async move {
            sent?;
            wait.await.unwrap_or(Err(StoreError::Closed))
        }
    }

    /// Reads up to `request.max_bytes` of a session's queued (not yet sent) entries, from
    /// `request.from` up to (not including) `request.before`, off the writer thread.
    pub(crate) async fn read_queue(
        &self,
        session: SessionKey,
        request: crate::session::LoadRequest,
    ) -> Result<Vec<crate::session::Delivery>, StoreError> {
        let db = self.database()?;
        let path = self.path.clone();
        let clock = self.clock.clone();
        tokio::task::spawn_blocking(move || {
            guard::contained(|| {
                load::read_queue(
                    &db,
                    &path,
                    &session,
                    (request.from, request.before),
                    request.max_bytes,
                    &clock,
                )
            })
            .map_err(|panic| StoreError::damaged(&path, panic))?
        })
        .await
        .unwrap_or(Err(StoreError::Closed))
    }

    /// The open database, for a read.
    fn database(&self) -> Result<Arc<Database>, StoreError> {
        match &*self.db.lock() {
            Some(db) => Ok(Arc::clone(db)),
            None if self.tx.lock().is_some() => Err(StoreError::Unavailable {
                path: self.path.clone(),
            }),
            None => Err(StoreError::Closed),
        }
    }

    /// Bytes of queued messages in the store, as of the last commit.
    pub(crate) fn queued_bytes(&self) -> u64 {
        self.stats.message_bytes.load(Relaxed)
    }

    /// False while the store cannot write: from a failed commit until the file has been
    /// reopened. Durable work is refused meanwhile (CONNACK 0x88 / 0x03, PUBACK 0x97, a
    /// paused 3.1.1 publisher).
    pub(crate) fn healthy(&self) -> bool {
        !self.stats.failing.load(Relaxed)
    }

    /// Applies `ops` without waiting; a failure is logged by the writer.
    pub(crate) fn submit(&self, ops: Vec<Op>) {
        if ops.is_empty() {
            return;
        }
        if self.send(Request { ops, done: None }).is_err() {
            error!("store closed: durable state change lost");
        }
    }

    fn send(&self, request: Request) -> Result<(), StoreError> {
        match &*self.tx.lock() {
            Some(tx) => tx.send(request).map_err(|_| StoreError::Closed),
            None => Err(StoreError::Closed),
        }
    }

    /// Counters.
    pub(crate) fn stats(&self) -> StoreStatsSnapshot {
        let s = &self.stats;
        StoreStatsSnapshot {
            write_transactions: s.write_transactions.load(Relaxed),
            requests: s.requests.load(Relaxed),
            ops: s.ops.load(Relaxed),
            max_batch: s.max_batch.load(Relaxed),
            failures: s.failures.load(Relaxed),
            message_bytes: s.message_bytes.load(Relaxed),
            synced_transactions: s.synced_transactions.load(Relaxed),
            synced_micros: s.synced_micros.load(Relaxed),
            healthy: !s.failing.load(Relaxed),
            reopens: s.reopens.load(Relaxed),
            refused: s.refused.load(Relaxed),
        }
    }

    /// Commits what is queued, stops the writer and closes the file.
    pub(crate) fn close(&self) {
        self.tx.lock().take();
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
        self.db.lock().take();
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

/// Checks the schema version, creating the tables on a new file. An existing file of the
/// right version is only read, so a broker with nothing durable to do writes nothing.
fn check_schema(db: &Database, path: &Path, clock: &Clock) -> Result<(), StoreError> {
    let corrupt = |e: redb::Error| StoreError::read(path, e);
    let found = {
        let txn = redb::ReadableDatabase::begin_read(db).map_err(|e| corrupt(e.into()))?;
        match txn.open_table(META) {
            Ok(meta) => meta
                .get("schema")
                .map_err(|e| corrupt(e.into()))?
                .map(|v| v.value()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(corrupt(e.into())),
        }
    };
    match found {
        Some(SCHEMA_VERSION) => return Ok(()),
        Some(old) if UPGRADABLE_FROM.contains(&old) => {
            let txn = db.begin_write().map_err(|e| corrupt(e.into()))?;
            txn.open_table(META)
                .map_err(|e| corrupt(e.into()))?
                .insert("schema", SCHEMA_VERSION)
                .map_err(|e| corrupt(e.into()))?;
            apply::Tables::open(&txn, clock).map_err(corrupt)?;
            txn.commit().map_err(|e| corrupt(e.into()))?;
            info!(path = %path.display(), from = old, to = SCHEMA_VERSION, "store schema upgraded");
            return Ok(());
        }
        Some(other) => {
            return Err(StoreError::Schema {
                path: path.to_path_buf(),
                found: other,
            });
        }
        None => {}
    }
    let txn = db.begin_write().map_err(|e| corrupt(e.into()))?;
    {
        let mut meta = txn.open_table(META).map_err(|e| corrupt(e.into()))?;
        meta.insert("schema", SCHEMA_VERSION)
            .map_err(|e| corrupt(e.into()))?;
        apply::Tables::open(&txn, clock).map_err(corrupt)?;
    }
    txn.commit().map_err(|e| corrupt(e.into()))
}

/// Most operations kept for a retry while the store cannot write; beyond that the oldest are
/// given up (logged).
const MAX_DEFERRED_OPS: usize = 1_000_000;
/// First wait before reopening the file after a failure; doubled up to [`MAX_REOPEN_WAIT`].
const FIRST_REOPEN_WAIT: Duration = Duration::from_millis(250);
/// Longest wait between two attempts to reopen the file.
const MAX_REOPEN_WAIT: Duration = Duration::from_secs(8);
/// A failure this soon after a reopen continues the previous backoff (the disk is still
/// full) instead of starting it again.
const RECENT_REOPEN: Duration = Duration::from_secs(30);

/// Where the writer stands after a failed commit.
struct Failure {
    /// When the first commit failed.
    since: Instant,
    /// The next attempt to reopen the file.
    next_attempt: Instant,
    /// The wait after the next failed attempt.
    wait: Duration,
    /// The database that failed, until every reader has let go of it (redb locks the file
    /// for as long as it is open).
    old: Option<Arc<Database>>,
}

/// The writer thread's state.
struct Writer {
    slot: DbSlot,
    durability: Durability,
    stats: Arc<StoreStats>,
    histograms: Arc<StoreHistograms>,
    path: PathBuf,
    cache_bytes: usize,
    clock: Clock,
    /// Set from a failed commit until the file is reopened.
    failure: Option<Failure>,
    /// When the file was last reopened, and the backoff reached then.
    reopened: Option<(Instant, Duration)>,
    /// Operations nobody waits on (deletes of acknowledged entries, disconnection times)
    /// from failed commits, and those committed without an fsync since the last synced
    /// commit (a reopen after a failure goes back to that commit): applied first once the
    /// store can write again, so that the file catches up with what the broker already did.
    deferred: Vec<Op>,
    /// Operations committed without an fsync since the last synced commit.
    unsynced_ops: Vec<Op>,
}

impl Writer {
    /// Group commit until every sender is gone.
    fn run(mut self, rx: &mpsc::Receiver<Request>) {
        // The fsync cadence is about the disk, not protocol time: it stays on the real clock,
        // so a manual broker clock that is never advanced cannot keep commits from reaching
        // the disk.
        let mut last_sync = Instant::now();
        let mut unsynced = false;
        loop {
            let deadline = match &self.failure {
                Some(f) => Some(f.next_attempt.saturating_duration_since(Instant::now())),
                None if unsynced => {
                    Some(BUFFERED_SYNC_INTERVAL.saturating_sub(last_sync.elapsed()))
                }
                None => None,
            };
            let first = match deadline {
                Some(wait) => match rx.recv_timeout(wait) {
                    Ok(r) => Some(r),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        self.finish();
                        return;
                    }
                },
                None => match rx.recv() {
                    Ok(r) => Some(r),
                    Err(_) => return,
                },
            };
            let mut batch: Vec<Request> = first.into_iter().collect();
            let mut ops = batch.first().map_or(0, |r| r.ops.len());
            while ops < MAX_BATCH_OPS {
                match rx.try_recv() {
                    Ok(r) => {
                        ops += r.ops.len();
                        batch.push(r);
                    }
                    Err(_) => break,
                }
            }
            let Some(db) = self.database() else {
                self.refuse(batch);
                continue;
            };
            // A batch nobody waits on (deletes of acknowledged entries, a disconnect time) is
            // committed without an fsync; the next commit someone waits on makes it durable.
            let waited_on = batch.iter().any(|r| r.done.is_some());
            let sync = match self.durability {
                Durability::Fsync => waited_on || last_sync.elapsed() >= BUFFERED_SYNC_INTERVAL,
                Durability::Buffered => last_sync.elapsed() >= BUFFERED_SYNC_INTERVAL,
            };
            if !self.deferred.is_empty() {
                let ops = std::mem::take(&mut self.deferred);
                batch.insert(0, Request { ops, done: None });
            }
            let started = Instant::now();
            let result = guard::contained(|| commit(&db, &batch, sync, &self.stats, &self.clock))
                .unwrap_or_else(|panic| Err(redb::Error::Corrupted(panic)))
                .map_err(Arc::new);
            drop(db);
            let took = started.elapsed();
            if result.is_ok() && !batch.is_empty() {
                self.histograms.commit_seconds.observe(took.as_secs_f64());
                self.histograms.batch_requests.observe(batch.len() as f64);
            }
            if sync && result.is_ok() {
                let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
                self.stats.synced_transactions.fetch_add(1, Relaxed);
                self.stats.synced_micros.fetch_add(micros, Relaxed);
            }
            if sync {
                last_sync = Instant::now();
                unsynced = false;
            } else if !batch.is_empty() {
                unsynced = true;
            }
            let stats = &self.stats;
            stats.requests.fetch_add(batch.len() as u64, Relaxed);
            stats.ops.fetch_add(ops as u64, Relaxed);
            stats.max_batch.fetch_max(batch.len() as u64, Relaxed);
            match &result {
                Ok(()) if sync => self.unsynced_ops.clear(),
                Ok(()) => {
                    for request in &mut batch {
                        self.unsynced_ops.append(&mut request.ops);
                    }
                }
                Err(e) => {
                    stats.failures.fetch_add(1, Relaxed);
                    self.failed(e, &mut batch);
                    unsynced = false;
                }
            }
            for request in batch {
                if let Some(done) = request.done {
                    let _ = done.send(result.clone().map_err(|source| StoreError::Commit {
                        path: self.path.clone(),
                        source,
                    }));
                }
            }
        }
    }

    /// The database to commit to, reopening it first after a failure when its time has
    /// come; `None` while it cannot be used.
    fn database(&mut self) -> Option<Arc<Database>> {
        let Some(failure) = &mut self.failure else {
            return self.slot.lock().clone();
        };
        if Instant::now() < failure.next_attempt {
            return None;
        }
        if let Some(old) = failure.old.take() {
            match Arc::try_unwrap(old) {
                // Closing may fail to write too; the reopen below repairs what it left.
                Ok(old) => drop(old),
                Err(old) => {
                    // A reader still holds it: soon done.
                    failure.old = Some(old);
                    failure.next_attempt = Instant::now() + Duration::from_millis(20);
                    return None;
                }
            }
        }
        let opened = open_database(&self.path, self.cache_bytes).and_then(|db| {
            // Healthy again only once it can write something of size: opening alone needs
            // no room, and the next commit would fail again.
            match guard::contained(|| write_probe(&db)) {
                Ok(Ok(())) => Ok(db),
                Ok(Err(e)) => Err(StoreError::Commit {
                    path: self.path.clone(),
                    source: Arc::new(e),
                }),
                Err(panic) => Err(StoreError::damaged(&self.path, panic)),
            }
        });
        match opened {
            Ok(db) => {
                let failed_for = failure.since.elapsed();
                let db = Arc::new(db);
                *self.slot.lock() = Some(Arc::clone(&db));
                self.reopened = Some((Instant::now(), failure.wait));
                self.failure = None;
                self.stats.reopens.fetch_add(1, Relaxed);
                self.stats.failing.store(false, Relaxed);
                info!(path = %self.path.display(), failed_for = ?failed_for, deferred_ops = self.deferred.len(), "store reopened: durable operations resume");
                Some(db)
            }
            Err(e) => {
                warn!(path = %self.path.display(), error = %e, retry_in = ?failure.wait, "store still cannot be reopened");
                failure.next_attempt = Instant::now() + failure.wait;
                failure.wait = (failure.wait * 2).min(MAX_REOPEN_WAIT);
                None
            }
        }
    }

    /// A commit failed: durable work is refused from now on until the file is reopened (redb
    /// refuses every write after an I/O error until then). What nobody waited on is kept for
    /// the next commit.
    fn failed(&mut self, e: &redb::Error, batch: &mut [Request]) {
        // Oldest first: what was committed without an fsync (the reopen loses it), then what
        // nobody waited on in this batch (the deferred operations were put at its head).
        let mut ops = std::mem::take(&mut self.unsynced_ops);
        for request in batch.iter_mut().filter(|r| r.done.is_none()) {
            ops.append(&mut request.ops);
        }
        ops.append(&mut self.deferred);
        self.deferred = ops;
        self.trim_deferred();
        if self.failure.is_some() {
            return;
        }
        error!(path = %self.path.display(), error = %e, "store commit failed: acknowledgements withheld; durable operations are refused until the store can write again");
        self.stats.failing.store(true, Relaxed);
        let old = self.slot.lock().take();
        let first = match self.reopened {
            // Failing again right after a reopen: the disk has not freed up yet.
            Some((at, wait)) if at.elapsed() < RECENT_REOPEN => wait,
            _ => FIRST_REOPEN_WAIT,
        };
        self.failure = Some(Failure {
            since: Instant::now(),
            next_attempt: Instant::now() + first,
            wait: (first * 2).min(MAX_REOPEN_WAIT),
            old,
        });
    }

    /// Answers the requests of `batch` while the store cannot write: whoever waits is told
    /// (nothing is acknowledged), the rest is kept for later.
    fn refuse(&mut self, batch: Vec<Request>) {
        for mut request in batch {
            match request.done.take() {
                Some(done) => {
                    self.stats.refused.fetch_add(1, Relaxed);
                    let _ = done.send(Err(StoreError::Unavailable {
                        path: self.path.clone(),
                    }));
                }
                None => self.deferred.append(&mut request.ops),
            }
        }
        self.trim_deferred();
    }

    /// Gives up the oldest deferred operations beyond [`MAX_DEFERRED_OPS`] (logged: after a
    /// restart the store may then hold some entries the broker had already settled).
    fn trim_deferred(&mut self) {
        if self.deferred.len() > MAX_DEFERRED_OPS {
            let over = self.deferred.len() - MAX_DEFERRED_OPS;
            self.deferred.drain(..over);
            error!(path = %self.path.display(), dropped_ops = over, "store cannot write: oldest unwaited changes given up");
        }
    }

    /// The last commit before the thread ends (what buffered durability has not synced).
    fn finish(&mut self) {
        if let Some(db) = self.database() {
            let deferred = std::mem::take(&mut self.deferred);
            let batch = [Request {
                ops: deferred,
                done: None,
            }];
            let _ = guard::contained(|| commit(&db, &batch, true, &self.stats, &self.clock));
        }
    }
}

/// Size of the write that shows the store can write again after a failure.
const PROBE_BYTES: usize = 256 * 1024;

/// Writes [`PROBE_BYTES`] and removes them again, both synced.
fn write_probe(db: &Database) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    txn.open_table(tables::PROBE)?
        .insert("space", vec![0u8; PROBE_BYTES].as_slice())?;
    txn.commit()?;
    let txn = db.begin_write()?;
    txn.open_table(tables::PROBE)?.remove("space")?;
    txn.commit()?;
    Ok(())
}

fn commit(
    db: &Database,
    batch: &[Request],
    sync: bool,
    stats: &StoreStats,
    clock: &Clock,
) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    let durability = if sync {
        redb::Durability::Immediate
    } else {
        redb::Durability::None
    };
    txn.set_durability(durability)?;
    let delta = {
        let mut tables = apply::Tables::open(&txn, clock)?;
        for request in batch {
            for op in &request.ops {
                tables.apply(op)?;
            }
        }
        tables.message_bytes_delta
    };
    txn.commit()?;
    stats.write_transactions.fetch_add(1, Relaxed);
    if delta >= 0 {
        stats.message_bytes.fetch_add(delta as u64, Relaxed);
    } else {
        let _ = stats.message_bytes.fetch_update(Relaxed, Relaxed, |v| {
            Some(v.saturating_sub(delta.unsigned_abs()))
        });
    }
    Ok(())
}

/// Reads the number of entries in every table (for tests and diagnostics).
pub fn table_sizes(path: &Path) -> Result<Vec<(&'static str, u64)>, StoreError> {
    use redb::ReadableTableMetadata;
    let fail = |e: redb::Error| StoreError::read(path, e);
    let db = Database::open(path).map_err(|e| fail(e.into()))?;
    let txn = redb::ReadableDatabase::begin_read(&db).map_err(|e| fail(e.into()))?;
    let mut out = Vec::new();
    macro_rules! count {
        ($name:literal, $table:expr) => {
            let t = txn.open_table($table).map_err(|e| fail(e.into()))?;
            out.push(($name, t.len().map_err(|e| fail(e.into()))?));
        };
    }
    count!("sessions", tables::SESSIONS);
    count!("subscriptions", tables::SUBSCRIPTIONS);
    count!("messages", tables::MESSAGES);
    count!("queue", tables::QUEUE);
    count!("incoming_qos2", tables::INCOMING_QOS2);
    count!("retained", tables::RETAINED);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{MessageId, Seq};

    fn mid(n: u64) -> MessageId {
        MessageId::new(n).expect("not 0")
    }

    fn sq(n: u64) -> Seq {
        Seq::new(n).expect("not 0")
    }

    #[test]
    fn new_store_records_the_schema_version_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let (store, loaded) = Store::open(dir.path(), Durability::Fsync).unwrap();
        assert!(loaded.sessions.is_empty());
        store.close();
        drop(store);
        let (_store, _) = Store::open(dir.path(), Durability::Fsync).expect("same version opens");
    }

    #[test]
    fn sessions_dropped_at_startup_leave_no_bytes_counted() {
        use crate::codec::{QoS, Version};
        use crate::session::Message;
        let dir = tempfile::tempdir().unwrap();
        let key = SessionKey {
            client: Arc::from("brief"),
            incarnation: 5,
        };
        {
            let (store, _) = Store::open(dir.path(), Durability::Fsync).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let mut ops = vec![Op::PutSession {
                session: key.clone(),
                // Connected with expiry 0 when the broker stopped: it ends at startup.
                record: SessionRecord {
                    version: Version::V5,
                    expiry_interval: 0,
                    disconnected_at: 0,
                    incarnation: 5,
                    owner: None,
                },
            }];
            for seq in 1..=20u64 {
                let message = Arc::new(Message {
                    id: MessageId::new(seq),
                    topic: Arc::from("t"),
                    payload: bytes::Bytes::from(vec![1u8; 1000]),
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    properties: Default::default(),
                    stream_seq: None,
                    expires_at: None,
                });
                let mut entry = entry_for(mid(seq), QoS::AtLeastOnce, false, &[]);
                if seq % 2 == 0 {
                    entry.inline = Some(Arc::clone(&message));
                }
                ops.push(Op::Enqueue {
                    session: key.clone(),
                    seq: sq(seq),
                    message,
                    entry,
                });
            }
            rt.block_on(store.commit(ops)).unwrap();
            assert!(store.queued_bytes() > 20_000);
        }
        let (store, loaded) = Store::open(dir.path(), Durability::Fsync).unwrap();
        assert!(loaded.sessions.is_empty());
        assert_eq!(store.queued_bytes(), 0, "nothing queued is left");
    }

    #[test]
    fn version_1_store_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META).unwrap().insert("schema", 1).unwrap();
            txn.commit().unwrap();
        }
        let (store, _) = Store::open(dir.path(), Durability::Fsync).expect("version 1 opens");
        store.close();
        drop(store);
        let db = Database::open(&path).unwrap();
        let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
        let version = txn
            .open_table(META)
            .unwrap()
            .get("schema")
            .unwrap()
            .unwrap()
            .value();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn other_schema_version_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META).unwrap().insert("schema", 99).unwrap();
            txn.commit().unwrap();
        }
        let err = Store::open(dir.path(), Durability::Fsync).unwrap_err();
        assert!(
            matches!(&err, StoreError::Schema { path: p, found: 99 } if *p == path),
            "{err:?}"
        );
        assert!(err.to_string().contains("roost.redb"), "{err}");
    }

    #[test]
    fn operations_commit_and_reload() {
        use crate::codec::{QoS, Version};
        use crate::session::{Message, SubOptions};
        let dir = tempfile::tempdir().unwrap();
        let client = SessionKey {
            client: Arc::from("c1"),
            incarnation: 77,
        };
        let message = Arc::new(Message {
            id: MessageId::new(5),
            topic: Arc::from("t"),
            payload: bytes::Bytes::from_static(b"m"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Default::default(),
            stream_seq: None,
            expires_at: None,
        });
        {
            let (store, _) = Store::open(dir.path(), Durability::Fsync).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(store.commit(vec![
                Op::PutSession {
                    session: client.clone(),
                    record: SessionRecord {
                        version: Version::V5,
                        expiry_interval: u32::MAX,
                        disconnected_at: 0,
                        incarnation: 77,
                        owner: None,
                    },
                },
                Op::PutSubscription {
                    session: client.clone(),
                    filter: "t/#".into(),
                    options: SubOptions::with_qos(QoS::AtLeastOnce),
                },
                Op::Enqueue {
                    session: client.clone(),
                    seq: sq(1),
                    message: Arc::clone(&message),
                    entry: entry_for(mid(5), QoS::AtLeastOnce, false, &[]),
                },
                Op::Enqueue {
                    session: client.clone(),
                    seq: sq(2),
                    message: Arc::clone(&message),
                    entry: entry_for(mid(5), QoS::AtLeastOnce, false, &[]),
                },
                Op::UpdateEntry {
                    session: client.clone(),
                    seq: sq(1),
                    state: EntryState::Published,
                    packet_id: 7,
                },
                Op::PutIncoming {
                    session: client.clone(),
                    packet_id: 3,
                },
                Op::DeleteEntry {
                    session: client.clone(),
                    seq: sq(2),
                },
            ]))
            .unwrap();
            assert_eq!(store.stats().write_transactions, 1);
        }
        let (store, loaded) = Store::open(dir.path(), Durability::Fsync).unwrap();
        drop(store);
        assert_eq!(loaded.sessions.len(), 1);
        let s = &loaded.sessions[0];
        assert_eq!(s.subscriptions.len(), 1);
        assert_eq!(s.incoming, vec![3]);
        assert_eq!(s.entries.len(), 1, "the deleted entry is gone");
        assert_eq!(s.entries[0].1.state, EntryState::Published);
        assert_eq!(s.entries[0].1.packet_id, 7);
        assert_eq!(&s.entries[0].2.payload[..], b"m");
        assert_eq!(loaded.max_message_id, 5);
        let sizes = table_sizes(&dir.path().join(DB_FILE)).unwrap();
        assert!(sizes.contains(&("messages", 1)), "stored once: {sizes:?}");
    }

    #[test]
    fn writes_for_an_ended_or_replaced_incarnation_are_skipped() {
        use crate::codec::{QoS, Version};
        use crate::session::Message;
        let dir = tempfile::tempdir().unwrap();
        let key = |incarnation| SessionKey {
            client: Arc::from("c"),
            incarnation,
        };
        let record = SessionRecord {
            version: Version::V311,
            expiry_interval: u32::MAX,
            disconnected_at: 0,
            incarnation: 0,
            owner: None,
        };
        let message = Arc::new(Message {
            id: MessageId::new(9),
            topic: Arc::from("t"),
            payload: bytes::Bytes::from_static(b"late"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Default::default(),
            stream_seq: None,
            expires_at: None,
        });
        {
            let (store, _) = Store::open(dir.path(), Durability::Fsync).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(store.commit(vec![
                Op::PutSession {
                    session: key(1),
                    record: record.clone(),
                },
                // A clean start replaces incarnation 1 with 2...
                Op::DeleteSession { session: key(1) },
                Op::PutSession {
                    session: key(2),
                    record,
                },
                // ...and a publisher's late write for incarnation 1 must not land in 2.
                Op::Enqueue {
                    session: key(1),
                    seq: sq(1),
                    message: Arc::clone(&message),
                    entry: entry_for(mid(9), QoS::AtLeastOnce, false, &[]),
                },
                Op::PutIncoming {
                    session: key(1),
                    packet_id: 4,
                },
            ]))
            .unwrap();
        }
        let (store, loaded) = Store::open(dir.path(), Durability::Fsync).unwrap();
        drop(store);
        assert_eq!(loaded.sessions.len(), 1);
        assert_eq!(loaded.sessions[0].record.incarnation, 2);
        assert!(loaded.sessions[0].entries.is_empty());
        assert!(loaded.sessions[0].incoming.is_empty());
        let sizes = table_sizes(&dir.path().join(DB_FILE)).unwrap();
        assert!(
            sizes.contains(&("messages", 0)),
            "nothing leaked: {sizes:?}"
        );
    }
}
