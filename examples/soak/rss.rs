//! The broker's memory over the run: samples, the table printed in the report, and the
//! flatness verdict.
//!
//! Two comparisons, because a restart resets the process and with it any leak:
//!
//! - **Across the run**: the highest RSS of the last quarter may exceed the highest RSS of
//!   the second quarter by at most the margin. The workload is the same throughout and each
//!   quarter holds whole restart periods in a long run, so their peaks compare like with
//!   like; the first quarter is left out as warm-up. State that piles up in the store and is
//!   loaded on every start (sessions, queues, retained messages that should have gone) shows
//!   here.
//! - **Within each process lifetime** long enough to judge: after a warm-up, the highest
//!   RSS of its second half may exceed that of its first half by at most the margin. A leak
//!   per message or per connection shows here even when restarts come every few minutes.
//!
//! The margin is a percentage plus a constant: allocator arenas and fragmentation move RSS
//! by some percent, and bursts of queued deliveries by a few MiB, without any leak.

/// One sample.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Milliseconds since the start of the run.
    pub t_ms: u32,
    /// Which broker process (0 = the first, 1 after the first restart, ...).
    pub period: u64,
    /// VmRSS in KiB.
    pub rss_kib: u64,
    /// Size of the store file in bytes.
    pub store_bytes: u64,
    /// Messages published so far.
    pub published: u64,
    /// Deliveries so far.
    pub delivered: u64,
}

/// What counts as flat.
#[derive(Debug, Clone, Copy)]
pub struct Criterion {
    /// Allowed growth in percent.
    pub pct: f64,
    /// Allowed growth on top of the percentage, KiB.
    pub margin_kib: u64,
    /// Start of a process lifetime left out of the within-lifetime comparison, ms.
    pub warmup_ms: u32,
    /// Shortest lifetime compared within itself (after warm-up), ms.
    pub min_period_ms: u32,
}

impl Criterion {
    fn limit(&self, base_kib: u64) -> u64 {
        (base_kib as f64 * (1.0 + self.pct / 100.0)) as u64 + self.margin_kib
    }
}

/// The verdict with one line per comparison.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// True when every comparison passed.
    pub ok: bool,
    /// What was compared.
    pub lines: Vec<String>,
}

fn max_rss(samples: impl Iterator<Item = Sample>) -> Option<u64> {
    samples.map(|s| s.rss_kib).max()
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Judges the samples of a run that lasted `duration_ms` (the workload part).
pub fn judge(samples: &[Sample], duration_ms: u32, c: &Criterion) -> Verdict {
    let mut ok = true;
    let mut lines = Vec::new();
    let within = |lo: u32, hi: u32| {
        samples
            .iter()
            .copied()
            .filter(move |s| s.t_ms >= lo && s.t_ms < hi)
    };
    let q = duration_ms / 4;
    match (
        max_rss(within(q, 2 * q)),
        max_rss(within(3 * q, duration_ms + 1)),
    ) {
        (Some(second), Some(last)) => {
            let limit = c.limit(second);
            let pass = last <= limit;
            ok &= pass;
            lines.push(format!(
                "across the run: peak of the last quarter {} vs second quarter {} (limit {}): {}",
                mib(last),
                mib(second),
                mib(limit),
                if pass { "flat" } else { "GROWING" }
            ));
        }
        _ => lines.push("across the run: too few samples to compare".into()),
    }
    let periods: std::collections::BTreeSet<u64> = samples.iter().map(|s| s.period).collect();
    for period in periods {
        let ps: Vec<Sample> = samples
            .iter()
            .copied()
            .filter(|s| s.period == period)
            .collect();
        let (first, last) = (ps[0].t_ms, ps[ps.len() - 1].t_ms);
        if last - first < c.min_period_ms {
            continue;
        }
        let from = first + c.warmup_ms;
        let mid = from + (last - from) / 2;
        let a = max_rss(
            ps.iter()
                .copied()
                .filter(|s| s.t_ms >= from && s.t_ms < mid),
        );
        let b = max_rss(ps.iter().copied().filter(|s| s.t_ms >= mid));
        if let (Some(a), Some(b)) = (a, b) {
            let limit = c.limit(a);
            let pass = b <= limit;
            ok &= pass;
            lines.push(format!(
                "process {period} ({}-{} s): peak of second half {} vs first half {} (limit {}): {}",
                first / 1000,
                last / 1000,
                mib(b),
                mib(a),
                mib(limit),
                if pass { "flat" } else { "GROWING" }
            ));
        }
    }
    Verdict { ok, lines }
}

/// The samples as a table of at most about `rows` rows (each row the peak of its samples).
pub fn table(samples: &[Sample], rows: usize) -> String {
    let mut out = String::from(
        "| elapsed | RSS peak | RSS low | process | store file | published | delivered |\n\
         |---|---|---|---|---|---|---|\n",
    );
    if samples.is_empty() {
        return out;
    }
    let per_row = samples.len().div_ceil(rows.max(1));
    for chunk in samples.chunks(per_row) {
        let last = chunk[chunk.len() - 1];
        let hi = chunk.iter().map(|s| s.rss_kib).max().unwrap_or(0);
        let lo = chunk.iter().map(|s| s.rss_kib).min().unwrap_or(0);
        let first_period = chunk[0].period;
        let process = if first_period == last.period {
            format!("{}", last.period)
        } else {
            format!("{}-{} (restart)", first_period, last.period)
        };
        out.push_str(&format!(
            "| {} s | {} | {} | {} | {:.1} MiB | {} | {} |\n",
            last.t_ms / 1000,
            mib(hi),
            mib(lo),
            process,
            last.store_bytes as f64 / (1 << 20) as f64,
            last.published,
            last.delivered
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t_s: u32, period: u64, rss_mib: u64) -> Sample {
        Sample {
            t_ms: t_s * 1000,
            period,
            rss_kib: rss_mib * 1024,
            store_bytes: 0,
            published: 0,
            delivered: 0,
        }
    }

    const C: Criterion = Criterion {
        pct: 20.0,
        margin_kib: 4096,
        warmup_ms: 10_000,
        min_period_ms: 60_000,
    };

    #[test]
    fn flat_run_with_restarts_passes() {
        let samples: Vec<Sample> = (0..400)
            .map(|t| s(t, u64::from(t / 100), 20 + u64::from(t % 100) / 50))
            .collect();
        let v = judge(&samples, 400_000, &C);
        assert!(v.ok, "{:?}", v.lines);
        assert_eq!(v.lines.len(), 5, "{:?}", v.lines);
    }

    #[test]
    fn growth_within_a_process_fails() {
        let samples: Vec<Sample> = (0..400)
            .map(|t| s(t, u64::from(t / 100), 20 + u64::from(t % 100) / 2))
            .collect();
        assert!(!judge(&samples, 400_000, &C).ok);
    }

    #[test]
    fn growth_across_restarts_fails() {
        let samples: Vec<Sample> = (0..400)
            .map(|t| s(t, u64::from(t / 20), 20 + u64::from(t / 20) * 3))
            .collect();
        assert!(!judge(&samples, 400_000, &C).ok);
    }
}
