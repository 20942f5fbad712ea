//! `roost store check` and `roost store repair`: what a damaged store still holds, and a new
//! store made of every record that can be read.
//!
//! Both work on a copy of the file, never on the file itself: opening a redb file may write
//! to it (its own crash recovery), and the damaged file is the evidence to keep. Both refuse
//! to run while a broker holds the file open.
//!
//! Reading is record by record: every table is scanned from its first key forward and from
//! its last key backward, each scan stopping at the first damaged page, so the records on
//! both sides of a damaged region are kept. Every record is decoded as the broker would
//! decode it; what does not decode is left out. The repaired store is then made consistent:
//! queue entries whose session or message was lost are dropped, message reference counts are
//! recounted, messages nobody refers to are dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::record::{
    decode_entry, decode_message, decode_session, decode_subscription, entry_message,
};
use super::tables::{
    INCOMING_QOS2, MESSAGE_REFS, MESSAGES, META, QUEUE, RETAINED, SCHEMA_VERSION, SESSIONS,
    SUBSCRIPTIONS,
};
use super::{DB_FILE, StoreError, guard};
use crate::clock::Clock;

/// What a scan of one table found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableReport {
    /// The table.
    pub name: &'static str,
    /// Records read and decoded.
    pub readable: u64,
    /// Records read that do not decode (left out by a repair).
    pub undecodable: u64,
    /// Records left out by a repair because what they refer to was lost (a queue entry of
    /// a lost session or message, a subscription of a lost session, a message nobody
    /// refers to).
    pub dangling: u64,
    /// Why the scan could not read the whole table (a damaged region: the records inside it
    /// are lost and not counted); `None` if it read to the end.
    pub damage: Option<String>,
}

/// What `roost store check` found.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// The database file.
    pub path: PathBuf,
    /// The result of redb's own integrity check (page checksums), run on a copy.
    pub integrity: Result<(), String>,
    /// One report per table.
    pub tables: Vec<TableReport>,
}

impl CheckReport {
    /// True if nothing is damaged or lost.
    pub fn clean(&self) -> bool {
        self.integrity.is_ok()
            && self
                .tables
                .iter()
                .all(|t| t.damage.is_none() && t.undecodable == 0 && t.dangling == 0)
    }

    /// The report as text, one line per table.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "store {}", self.path.display());
        match &self.integrity {
            Ok(()) => {
                let _ = writeln!(out, "  page checksums: ok");
            }
            Err(e) => {
                let _ = writeln!(out, "  page checksums: FAILED ({e})");
            }
        }
        for t in &self.tables {
            let _ = write!(
                out,
                "  {:<14} {:>9} readable, {} undecodable, {} dangling",
                t.name, t.readable, t.undecodable, t.dangling
            );
            match &t.damage {
                None => out.push('\n'),
                Some(d) => {
                    let _ = writeln!(out, ", DAMAGED: {d}");
                }
            }
        }
        if self.integrity.is_err() {
            out.push_str(
                "  note: records on pages whose checksum failed are kept if they decode; \
                 their payload bytes carry no checksum of their own and may be damaged\n",
            );
        }
        out.push_str(if self.clean() {
            "  verdict: clean\n"
        } else {
            "  verdict: damaged (`roost store repair` keeps every readable record)\n"
        });
        out
    }
}

/// What `roost store repair` did.
#[derive(Debug, Clone)]
pub struct RepairReport {
    /// What was read from the damaged file, table by table (`dangling` counts what the
    /// repair left out for consistency).
    pub check: CheckReport,
    /// Where the damaged file was moved.
    pub damaged_copy: PathBuf,
}

/// Checks the store in `data_dir` without changing it.
pub fn check(data_dir: &Path) -> Result<CheckReport, StoreError> {
    let path = data_dir.join(DB_FILE);
    let work = WorkCopy::new(&path)?;
    let integrity = integrity(&work.path);
    let (report, _) = salvage(&work.path, &path, integrity)?;
    Ok(report)
}

/// Rebuilds the store in `data_dir` from every record that can be read: the damaged file is
/// renamed `roost.redb.damaged-<unix seconds>` and a new `roost.redb` takes its place.
pub fn repair(data_dir: &Path) -> Result<RepairReport, StoreError> {
    let path = data_dir.join(DB_FILE);
    let work = WorkCopy::new(&path)?;
    let integrity = integrity(&work.path);
    let (check, records) = salvage(&work.path, &path, integrity)?;
    drop(work);
    let damaged = check.tables.iter().any(|t| t.damage.is_some());
    if damaged && check.tables.iter().all(|t| t.readable == 0) {
        return Err(StoreError::damaged(
            &path,
            "no record could be read, so the file is left as it is; move it aside to start \
             with an empty store (its sessions and messages are then lost)"
                .to_owned(),
        ));
    }
    let fresh = data_dir.join(format!("{DB_FILE}.repaired"));
    let _ = std::fs::remove_file(&fresh);
    let written = write_store(&fresh, &records).and_then(|()| same_owner_and_mode(&path, &fresh));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&fresh);
        return Err(io_error(&fresh, e));
    }
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let damaged_copy = data_dir.join(format!("{DB_FILE}.damaged-{secs}"));
    std::fs::rename(&path, &damaged_copy).map_err(|e| io_error(&path, e))?;
    std::fs::rename(&fresh, &path).map_err(|e| io_error(&path, e))?;
    if let Ok(dir) = File::open(data_dir) {
        let _ = dir.sync_all();
    }
    Ok(RepairReport {
        check,
        damaged_copy,
    })
}

fn io_error(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::CreateDir {
        path: path.to_path_buf(),
        source,
    }
}

/// Gives `copy` the owner and permissions of `original`, so that the broker's user can
/// open the repaired file as it could the damaged one.
fn same_owner_and_mode(original: &Path, copy: &Path) -> std::io::Result<()> {
    let meta = std::fs::metadata(original)?;
    std::fs::set_permissions(copy, meta.permissions())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::os::unix::fs::chown(copy, Some(meta.uid()), Some(meta.gid()))?;
    }
    Ok(())
}

/// A private copy of the database file, removed when dropped.
struct WorkCopy {
    path: PathBuf,
}

impl WorkCopy {
    /// Copies `path` to the system's temporary directory, after making sure no broker holds
    /// it open (a copy of a file being written is not a consistent picture).
    fn new(path: &Path) -> Result<WorkCopy, StoreError> {
        let file = File::open(path).map_err(|e| io_error(path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Open {
                    path: path.to_path_buf(),
                    source: redb::DatabaseError::DatabaseAlreadyOpen,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_error(path, e)),
        }
        let copy = std::env::temp_dir().join(format!(
            "roost-store-check-{}-{}.redb",
            std::process::id(),
            rand::random::<u32>()
        ));
        // Removed on every path, a failed copy included.
        let work = WorkCopy { path: copy };
        std::fs::copy(path, &work.path).map_err(|e| io_error(&work.path, e))?;
        drop(file);
        Ok(work)
    }
}

impl Drop for WorkCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// redb's integrity check (page checksums) on the copy at `path`, which it may change.
fn integrity(path: &Path) -> Result<(), String> {
    let checked = guard::contained(|| {
        let mut db = Database::create(path).map_err(|e| e.to_string())?;
        match db.check_integrity() {
            Ok(true) => Ok(()),
            Ok(false) => Err(
                "redb repaired the copy: pages were damaged or the last commit \
                              was incomplete"
                    .to_owned(),
            ),
            Err(e) => Err(e.to_string()),
        }
    });
    checked.unwrap_or_else(Err)
}

/// Every readable record, by table, as raw bytes.
#[derive(Debug, Default)]
struct Records {
    sessions: BTreeMap<String, Vec<u8>>,
    subscriptions: BTreeMap<(String, String), Vec<u8>>,
    messages: BTreeMap<u64, Vec<u8>>,
    queue: BTreeMap<(String, u64), Vec<u8>>,
    incoming: BTreeMap<(String, u16), u8>,
    retained: BTreeMap<String, Vec<u8>>,
}

/// Reads every record it can from the copy at `work` (the original being `original`, for
/// the messages), decodes and cross-checks them.
fn salvage(
    work: &Path,
    original: &Path,
    integrity: Result<(), String>,
) -> Result<(CheckReport, Records), StoreError> {
    let db = super::database_result(original, guard::contained(|| Database::create(work)))?;
    let clock = Clock::system();
    let mut records = Records::default();
    let mut tables = Vec::new();

    let (sessions, report) = scan(&db, SESSIONS, "sessions", |k, v| {
        decode_session(v).ok().map(|_| (k.to_owned(), v.to_vec()))
    });
    records.sessions = sessions;
    tables.push(report);

    let (subs, mut sub_report) = scan(&db, SUBSCRIPTIONS, "subscriptions", |(c, f), v| {
        decode_subscription(v)
            .ok()
            .map(|_| ((c.to_owned(), f.to_owned()), v.to_vec()))
    });
    (records.subscriptions, sub_report.dangling) = of_known_sessions(subs, &records.sessions);

    let (messages, mut msg_report) = scan(&db, MESSAGES, "messages", |id, v| {
        decode_message(id, v, &clock).ok().map(|_| (id, v.to_vec()))
    });
    let (queue, mut queue_report) = scan(&db, QUEUE, "queue", |(c, seq), v| {
        decode_entry(v, &clock)
            .ok()
            .map(|_| ((c.to_owned(), seq), v.to_vec()))
    });
    let before = queue.len();
    let mut referenced = BTreeSet::new();
    records.queue = queue
        .into_iter()
        .filter(|((c, _), v)| {
            let Ok((id, inline)) = entry_message(v) else {
                return false;
            };
            let keep = records.sessions.contains_key(c) && (inline || messages.contains_key(&id));
            if keep && !inline {
                referenced.insert(id);
            }
            keep
        })
        .collect();
    queue_report.dangling = (before - records.queue.len()) as u64;
    let before = messages.len();
    records.messages = messages
        .into_iter()
        .filter(|(id, _)| referenced.contains(id))
        .collect();
    msg_report.dangling = (before - records.messages.len()) as u64;

    let (incoming, mut in_report) = scan(&db, INCOMING_QOS2, "incoming_qos2", |(c, id), v| {
        Some(((c.to_owned(), id), v))
    });
    (records.incoming, in_report.dangling) = of_known_sessions(incoming, &records.sessions);

    let (retained, ret_report) = scan(&db, RETAINED, "retained", |topic, v| {
        decode_message(0, v, &clock)
            .ok()
            .map(|_| (topic.to_owned(), v.to_vec()))
    });
    records.retained = retained;

    tables.extend([sub_report, msg_report, queue_report, in_report, ret_report]);
    let report = CheckReport {
        path: original.to_path_buf(),
        integrity,
        tables,
    };
    Ok((report, records))
}

/// The records of `map` (keyed by client id first) whose session is in `sessions`, and how
/// many were left out.
fn of_known_sessions<K: Ord, V>(
    map: BTreeMap<(String, K), V>,
    sessions: &BTreeMap<String, Vec<u8>>,
) -> (BTreeMap<(String, K), V>, u64) {
    let before = map.len();
    let kept: BTreeMap<_, _> = map
        .into_iter()
        .filter(|((client, _), _)| sessions.contains_key(client))
        .collect();
    let dropped = (before - kept.len()) as u64;
    (kept, dropped)
}

/// Reads table `def` forward from its first key and backward from its last, each until the
/// first damaged page; `keep` decodes a record (`None`: undecodable).
fn scan<K, V, KO, VO>(
    db: &Database,
    def: TableDefinition<K, V>,
    name: &'static str,
    keep: impl Fn(K::SelfType<'_>, V::SelfType<'_>) -> Option<(KO, VO)>,
) -> (BTreeMap<KO, VO>, TableReport)
where
    K: redb::Key + 'static,
    V: redb::Value + 'static,
    KO: Ord,
{
    let mut out = BTreeMap::new();
    let mut report = TableReport {
        name,
        ..TableReport::default()
    };
    // Undecodable records met by each scan (both may meet the same ones).
    let mut undecodable = [0u64; 2];
    for backward in [false, true] {
        let scanned = guard::contained(|| -> Result<(), String> {
            let txn = db.begin_read().map_err(|e| e.to_string())?;
            let table = match txn.open_table(def) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            };
            let iter = table.iter().map_err(|e| e.to_string())?;
            let mut step = |item: Result<(redb::AccessGuard<K>, redb::AccessGuard<V>), _>| {
                let (k, v) = item.map_err(|e: redb::StorageError| e.to_string())?;
                match keep(k.value(), v.value()) {
                    Some((ko, vo)) => {
                        out.insert(ko, vo);
                    }
                    None => undecodable[usize::from(backward)] += 1,
                }
                Ok::<(), String>(())
            };
            if backward {
                for item in iter.rev() {
                    step(item)?;
                }
            } else {
                for item in iter {
                    step(item)?;
                }
            }
            Ok(())
        });
        match scanned {
            Ok(Ok(())) if !backward => {
                // Read to the end: nothing for the backward scan to add.
                report.undecodable = undecodable[0];
                report.readable = out.len() as u64;
                return (out, report);
            }
            Ok(Ok(())) => {}
            Ok(Err(e)) | Err(e) => {
                if report.damage.is_none() {
                    report.damage = Some(e);
                }
            }
        }
    }
    report.undecodable = undecodable[0] + undecodable[1];
    report.readable = out.len() as u64;
    (out, report)
}

/// Writes `records` to a new store file at `path` with the current schema and fsyncs it.
fn write_store(path: &Path, records: &Records) -> Result<(), std::io::Error> {
    let fail = |e: String| std::io::Error::other(e);
    let db = Database::create(path).map_err(|e| fail(e.to_string()))?;
    let txn = db.begin_write().map_err(|e| fail(e.to_string()))?;
    {
        let e = |e: redb::Error| fail(e.to_string());
        let mut meta = txn.open_table(META).map_err(|x| e(x.into()))?;
        meta.insert("schema", SCHEMA_VERSION)
            .map_err(|x| e(x.into()))?;
        let mut t = txn.open_table(SESSIONS).map_err(|x| e(x.into()))?;
        for (k, v) in &records.sessions {
            t.insert(k.as_str(), v.as_slice())
                .map_err(|x| e(x.into()))?;
        }
        let mut t = txn.open_table(SUBSCRIPTIONS).map_err(|x| e(x.into()))?;
        for ((c, f), v) in &records.subscriptions {
            t.insert((c.as_str(), f.as_str()), v.as_slice())
                .map_err(|x| e(x.into()))?;
        }
        let mut refs: BTreeMap<u64, u32> = BTreeMap::new();
        let mut t = txn.open_table(QUEUE).map_err(|x| e(x.into()))?;
        for ((c, seq), v) in &records.queue {
            if let Ok((id, false)) = entry_message(v) {
                *refs.entry(id).or_default() += 1;
            }
            t.insert((c.as_str(), *seq), v.as_slice())
                .map_err(|x| e(x.into()))?;
        }
        let mut t = txn.open_table(MESSAGES).map_err(|x| e(x.into()))?;
        for (id, v) in &records.messages {
            t.insert(*id, v.as_slice()).map_err(|x| e(x.into()))?;
        }
        let mut t = txn.open_table(MESSAGE_REFS).map_err(|x| e(x.into()))?;
        for (id, n) in &refs {
            t.insert(*id, *n).map_err(|x| e(x.into()))?;
        }
        let mut t = txn.open_table(INCOMING_QOS2).map_err(|x| e(x.into()))?;
        for ((c, id), v) in &records.incoming {
            t.insert((c.as_str(), *id), *v).map_err(|x| e(x.into()))?;
        }
        let mut t = txn.open_table(RETAINED).map_err(|x| e(x.into()))?;
        for (k, v) in &records.retained {
            t.insert(k.as_str(), v.as_slice())
                .map_err(|x| e(x.into()))?;
        }
    }
    txn.commit().map_err(|e| fail(e.to_string()))?;
    drop(db);
    File::open(path)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::codec::{QoS, Version};
    use crate::session::{Message, MessageId, Seq};
    use crate::store::{Durability, Op, SessionKey, SessionRecord, Store, entry_for};

    /// A store of a few MB: one durable session with `n` queued 2 KB messages, and `n`
    /// retained messages.
    fn make_store(dir: &Path, n: u64) {
        let (store, _) = Store::open(dir, Durability::Fsync).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let key = SessionKey {
            client: Arc::from("device-1"),
            incarnation: 1,
        };
        let mut ops = vec![Op::PutSession {
            session: key.clone(),
            record: SessionRecord {
                version: Version::V311,
                expiry_interval: u32::MAX,
                disconnected_at: 1,
                incarnation: 1,
                owner: None,
            },
        }];
        for i in 1..=n {
            let message = Arc::new(Message {
                id: MessageId::new(i),
                topic: Arc::from(format!("sensors/{i}")),
                payload: bytes::Bytes::from(vec![(i % 251) as u8; 2000]),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: Default::default(),
                stream_seq: None,
                expires_at: None,
            });
            let id = MessageId::new(i).unwrap();
            ops.push(Op::Enqueue {
                session: key.clone(),
                seq: Seq::new(i).unwrap(),
                message: Arc::clone(&message),
                entry: entry_for(id, QoS::AtLeastOnce, false, &[]),
            });
            ops.push(Op::PutRetained { message });
        }
        rt.block_on(store.commit(ops)).unwrap();
        store.close();
    }

    fn damage(path: &Path, at: f64, zero_page: bool) {
        let mut data = std::fs::read(path).unwrap();
        let mid = (data.len() as f64 * at) as usize;
        if zero_page {
            let page = mid / 4096 * 4096;
            data[page..page + 4096].fill(0);
        } else {
            for b in &mut data[mid..mid + 16] {
                *b ^= 0xff;
            }
        }
        std::fs::write(path, data).unwrap();
    }

    #[test]
    fn a_clean_store_checks_clean() {
        let dir = tempfile::tempdir().unwrap();
        make_store(dir.path(), 200);
        let report = check(dir.path()).unwrap();
        assert!(report.clean(), "{}", report.render());
        let queue = report.tables.iter().find(|t| t.name == "queue").unwrap();
        assert_eq!(queue.readable, 200);
    }

    #[test]
    fn a_zeroed_page_is_reported_and_repair_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        make_store(dir.path(), 2000);
        let path = dir.path().join(DB_FILE);
        damage(&path, 0.5, true);
        let err = Store::open(dir.path(), Durability::Fsync).unwrap_err();
        assert!(matches!(err, StoreError::Damaged { .. }), "{err}");
        assert!(err.to_string().contains("roost store repair"), "{err}");
        let report = check(dir.path()).unwrap();
        assert!(!report.clean(), "{}", report.render());
        let repaired = repair(dir.path()).unwrap();
        assert!(repaired.damaged_copy.exists());
        let (store, loaded) = Store::open(dir.path(), Durability::Fsync).unwrap();
        drop(store);
        let queued: usize = loaded
            .sessions
            .iter()
            .map(|s| s.stored.map_or(0, |x| x.1) + s.entries.len())
            .sum();
        let kept = queued + loaded.retained.len();
        assert!(
            kept > 3000,
            "most of 4000 records kept, got {kept}: {}",
            repaired.check.render()
        );
        let after = check(dir.path()).unwrap();
        assert!(after.clean(), "{}", after.render());
    }
}
