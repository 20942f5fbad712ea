//! The process's open-file limit and file descriptor table, set up once before any thread
//! starts.
//!
//! Every connection holds one descriptor, so the soft open-file limit (`ulimit -n`) bounds the
//! connections a broker can hold: it is raised to the hard limit, as far as the process may.
//!
//! Linux grows a process's descriptor table by doubling it whenever a new descriptor does not
//! fit, and in a process with more than one thread each growth waits for an RCU grace period
//! (`expand_fdtable` calls `synchronize_rcu`): about 10-20 ms during which the thread that
//! accepted the connection (a runtime worker, with every connection it serves) is stuck in
//! `accept4`. Measured here: connects that reached the broker as it passed 256, 512, 1024, ...
//! open connections waited 12-20 ms, which was the whole p99 of a connect at 1000/s. While the
//! process has one thread the growth does not wait, so [`prepare`] grows the table once, at
//! start, to the size the broker is expected to need. The table never shrinks; it costs
//! kernel memory (8 bytes per descriptor: 512 KiB for 65,536), not heap.

/// What [`prepare`] did, for the start-up log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdSetup {
    /// The soft open-file limit before.
    pub limit_before: u64,
    /// The soft open-file limit now.
    pub limit: u64,
    /// Descriptors the table was grown to hold (0: left as it was).
    pub table: u64,
}

/// Descriptor table size when `max_connections` is 0 (no limit), capped by the open-file
/// limit: 65,536 descriptors, 512 KiB of kernel memory.
const DEFAULT_TABLE: u64 = 1 << 16;

/// Descriptors besides connections: the store, listeners, epoll, signals, log files.
const HEADROOM: u64 = 256;

/// Raises the soft open-file limit to the hard one and grows the descriptor table to hold
/// `max_connections` (0: no limit, 65,536) plus some headroom, within the limit.
///
/// Call it from `main` before the runtime starts: growing the table is free only while the
/// process has one thread. Failures are not errors (the broker runs as before), so the result
/// only reports what was done.
#[cfg(target_os = "linux")]
pub fn prepare(max_connections: usize) -> FdSetup {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    let before = current.unwrap_or(u64::MAX);
    let mut limit = before;
    if let (Some(soft), Some(hard)) = (current, maximum)
        && soft < hard
        && setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(hard),
                maximum: Some(hard),
            },
        )
        .is_ok()
    {
        limit = hard;
    }
    let want = match max_connections {
        0 => DEFAULT_TABLE,
        n => (n as u64).saturating_add(HEADROOM),
    }
    .min(limit);
    FdSetup {
        limit_before: before,
        limit,
        table: grow_table(want),
    }
}

/// Raises nothing and grows nothing: the table growth this works around is Linux's.
#[cfg(not(target_os = "linux"))]
pub fn prepare(_max_connections: usize) -> FdSetup {
    FdSetup {
        limit_before: 0,
        limit: 0,
        table: 0,
    }
}

/// Makes the descriptor table hold at least `want` descriptors: a duplicate with a number no
/// lower than `want - 1` (F_DUPFD_CLOEXEC), closed at once. Returns `want`, or 0 if the kernel
/// refused.
#[cfg(target_os = "linux")]
fn grow_table(want: u64) -> u64 {
    let Ok(highest) = i32::try_from(want.saturating_sub(1)) else {
        return 0;
    };
    if highest < 64 {
        return 0;
    }
    let Ok(file) = std::fs::File::open("/dev/null") else {
        return 0;
    };
    match rustix::io::fcntl_dupfd_cloexec(&file, highest) {
        Ok(high) => {
            drop(high);
            want
        }
        Err(_) => 0,
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_grown_within_the_limit() {
        // The test harness already runs threads, so this growth may wait for RCU once; it
        // checks only that the table can hold the descriptor asked for.
        let setup = prepare(100);
        assert!(setup.limit >= setup.limit_before);
        assert_eq!(setup.table, (100 + HEADROOM).min(setup.limit));
        let file = std::fs::File::open("/dev/null").unwrap();
        let high = rustix::io::fcntl_dupfd_cloexec(&file, 300).unwrap();
        use std::os::fd::AsRawFd;
        assert!(high.as_raw_fd() >= 300);
    }
}
