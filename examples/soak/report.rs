//! The soak summary, as Markdown: the run, publishers, subscribers, retained messages,
//! broker restarts and log, memory over time, findings and the verdict.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;

use super::Options;
use super::Restart;
use super::broker::LogSummary;
use super::check::{Losses, PublisherCount};
use super::retained::RetainResult;
use super::rss::{self, Sample, Verdict};
use super::subscriber::SubscriberResult;

/// Everything the report shows.
pub struct Input<'a> {
    /// The options of the run.
    pub opts: &'a Options,
    /// The broker's address.
    pub addr: SocketAddr,
    /// How long the workload ran, ms.
    pub run_ms: u32,
    /// How long finishing and draining took, ms.
    pub settle_ms: u32,
    /// Per publisher.
    pub publishers: Vec<PublisherCount>,
    /// Connections the publishers made.
    pub publisher_connections: u64,
    /// Per subscriber.
    pub subscribers: &'a [SubscriberResult],
    /// Per subscriber (same order); zero for clean ones.
    pub losses: &'a [Losses],
    /// The retained churn.
    pub retained: &'a RetainResult,
    /// The kills.
    pub restarts: &'a [Restart],
    /// Connections lost and made again, all clients.
    pub reconnects: u64,
    /// RSS samples.
    pub samples: &'a [Sample],
    /// The memory verdict.
    pub verdict: &'a Verdict,
    /// The broker's log.
    pub log: &'a LogSummary,
    /// Store file size at the end.
    pub store_bytes: u64,
    /// The broker's metrics at the end (counters of the last process only).
    pub metrics: &'a BTreeMap<String, f64>,
    /// Violations by kind.
    pub violations: BTreeMap<String, (u64, Vec<String>)>,
    /// Notes by kind.
    pub notes: BTreeMap<String, (u64, Vec<String>)>,
}

/// Renders the report.
pub fn render(i: &Input<'_>, passed: bool) -> String {
    let mut out = String::new();
    let o = i.opts;
    let _ = writeln!(out, "## Soak summary\n");
    let _ = writeln!(
        out,
        "seed {} | workload {:.0} s, then {:.1} s to settle | broker {} on {} | \
         {} msg/s per publisher, window {} | kill -9 every ~{} s\n",
        o.seed,
        f64::from(i.run_ms) / 1000.0,
        f64::from(i.settle_ms) / 1000.0,
        o.binary.display(),
        i.addr,
        o.rate,
        o.window,
        o.kill_every.as_secs()
    );
    publishers(&mut out, i);
    subscribers(&mut out, i);
    let r = i.retained;
    let _ = writeln!(
        out,
        "Retained (16 topics, QoS 1): {} set, {} overwritten, {} deleted; {} checks against \
         the model, {} cut short by a kill.\n",
        r.sets, r.overwrites, r.deletes, r.checks, r.checks_void
    );
    let kills = if i.restarts.is_empty() {
        "no kill -9".to_string()
    } else {
        format!(
            "{} kill -9 + restart (at {} s; down {} ms at most)",
            i.restarts.len(),
            i.restarts
                .iter()
                .map(|r| (r.at_ms / 1000).to_string())
                .collect::<Vec<_>>()
                .join(", "),
            i.restarts.iter().map(|r| r.down_ms).max().unwrap_or(0)
        )
    };
    let _ = writeln!(
        out,
        "Broker: {kills}, {} client reconnects after lost connections, {} publisher \
         connections. Log: {} WARN, {} ERROR lines, {} panics. Store file at the end: {:.1} \
         MiB.\n",
        i.reconnects,
        i.publisher_connections,
        i.log.warnings,
        i.log.errors,
        i.log.panics.len(),
        i.store_bytes as f64 / f64::from(1 << 20)
    );
    for line in &i.log.first_errors {
        let _ = writeln!(out, "    {line}");
    }
    let m = |name: &str| {
        i.metrics
            .get(name)
            .map_or("?".to_string(), |v| v.to_string())
    };
    let _ = writeln!(
        out,
        "Broker metrics after the run (counters since the last restart): sessions {}, \
         subscriptions {}, backlog messages {}, retained messages {} ($SYS included), \
         deliveries placed in the store only {}, store reads {}, store commits {}, refused \
         0x97 {}, publisher pauses {}, dropped (queue full / QoS 0 / QoS 0 offline) {} / {} / \
         {}.\n",
        m("roost_sessions"),
        m("roost_subscriptions"),
        m("roost_backlog_messages"),
        m("roost_retained_messages"),
        m("roost_deliveries_stored_total"),
        m("roost_store_reads_total"),
        m("roost_store_commits_total"),
        m("roost_rejected_quota_exceeded_total"),
        m("roost_backpressure_pauses_total"),
        m("roost_dropped_queue_full_total"),
        m("roost_dropped_qos0_queue_full_total"),
        m("roost_dropped_qos0_offline_total"),
    );
    let _ = writeln!(out, "### Broker RSS\n");
    out.push_str(&rss::table(i.samples, 30));
    let c = &o.criterion;
    let _ = writeln!(
        out,
        "\nFlat means: at most {}% + {} MiB above the reference peak; process lifetimes \
         shorter than {} s are not compared within themselves, and their first {} s are \
         warm-up.\n",
        c.pct,
        c.margin_kib / 1024,
        c.min_period_ms / 1000,
        c.warmup_ms / 1000
    );
    for line in &i.verdict.lines {
        let _ = writeln!(out, "- {line}");
    }
    findings(&mut out, "Notes", &i.notes);
    findings(&mut out, "Violations", &i.violations);
    let _ = writeln!(
        out,
        "\n**Verdict: {}** (seed {})",
        if passed { "PASS" } else { "FAIL" },
        o.seed
    );
    out
}

fn publishers(out: &mut String, i: &Input<'_>) {
    let _ = writeln!(
        out,
        "| publisher | QoS | sent | acknowledged | refused | abandoned | pending |\n|---|---|---|---|---|---|---|"
    );
    let mut by_qos = [[0u64; 2]; 3];
    for p in &i.publishers {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            p.name, p.qos, p.sent, p.acked, p.refused, p.abandoned, p.pending
        );
        by_qos[usize::from(p.qos)][0] += p.sent;
        by_qos[usize::from(p.qos)][1] += p.acked;
    }
    let _ = writeln!(
        out,
        "\nPublished: QoS 0 {}, QoS 1 {} ({} acknowledged), QoS 2 {} ({} acknowledged).\n",
        by_qos[0][0], by_qos[1][0], by_qos[1][1], by_qos[2][0], by_qos[2][1]
    );
}

fn subscribers(out: &mut String, i: &Input<'_>) {
    let _ = writeln!(
        out,
        "| subscriber | filters (granted) | connections | received QoS 0/1/2 (DUP=1) | distinct | \
         repeats QoS 1 | repeats QoS 2 | out of order | owed | lost | in flight at a kill, \
         received | windows checked / cut by a kill (messages asserted) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let mut lost = 0;
    let mut dup = [0u64; 3];
    for (s, l) in i.subscribers.iter().zip(i.losses) {
        let t = &s.tally;
        let d = t.dups();
        for q in 0..3 {
            dup[q] += d[q];
        }
        lost += l.lost;
        let filters: Vec<String> = s
            .spec
            .filters
            .iter()
            .zip(s.granted.iter())
            .map(|((f, _), g)| format!("{f} ({g})"))
            .collect();
        let (owed, lost, windows) = if s.spec.durable {
            (l.owed.to_string(), l.lost.to_string(), "-".to_string())
        } else {
            (
                "-".into(),
                "-".into(),
                format!("{} / {} ({})", s.windows.0, s.windows.1, s.windows.2),
            )
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {}/{}/{} ({}) | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.spec.name,
            filters.join(", "),
            s.connections,
            t.deliveries[0],
            t.deliveries[1],
            t.deliveries[2],
            s.dup_flag,
            t.distinct(),
            d[1],
            d[2],
            t.out_of_order(),
            owed,
            lost,
            if s.spec.durable {
                l.unacked_received.to_string()
            } else {
                "-".into()
            },
            windows
        );
    }
    let _ = writeln!(
        out,
        "\nLost acknowledged messages: {lost}. Repeated deliveries: QoS 0 {}, QoS 1 {} \
         (allowed), QoS 2 {}.\n",
        dup[0], dup[1], dup[2]
    );
}

fn findings(out: &mut String, title: &str, map: &BTreeMap<String, (u64, Vec<String>)>) {
    let _ = writeln!(out, "\n### {title}\n");
    if map.is_empty() {
        let _ = writeln!(out, "none");
        return;
    }
    for (kind, (n, examples)) in map {
        let _ = writeln!(out, "- {kind}: {n}");
        for e in examples {
            let _ = writeln!(out, "  - {e}");
        }
    }
}
