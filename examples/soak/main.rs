//! Soak test of the `roost` binary: a mixed MQTT workload for a long time, with `kill -9`
//! and restarts of the broker, checked for lost acknowledged messages, QoS 2 duplicates,
//! ordering, retained messages, and flat memory.
//!
//! ```text
//! cargo build --release --bin roost --example soak
//! target/release/examples/soak                       # 30 minutes
//! target/release/examples/soak --duration 60s --seed 7
//! ```
//!
//! The broker is started on an ephemeral loopback port with a temporary data directory and
//! killed by its own PID. The summary (Markdown) goes to stdout, progress to stderr; the exit
//! status is 1 on any violation, 2 when the run could not be set up.

#[path = "soak.rs"]
mod soak;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// Soak test of the roost broker: a mixed workload with kill -9 and restarts, checked for
/// acknowledged loss, QoS 2 duplicates, ordering, retained state and flat memory.
#[derive(Debug, Parser)]
struct Cli {
    /// The broker binary.
    #[arg(long, default_value = "target/release/roost")]
    roost: PathBuf,
    /// How long the workload runs: `90s`, `30m`, `1h` or seconds.
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    duration: Duration,
    /// Mean time between kill -9s (default: a third of the run, at most 3 minutes).
    #[arg(long, value_parser = parse_duration)]
    kill_every: Option<Duration>,
    /// Seed of every random choice (default: from the clock; printed either way).
    #[arg(long)]
    seed: Option<u64>,
    /// Messages per second per publisher (7 publishers).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Unacknowledged messages per QoS 1/2 publisher at most.
    #[arg(long, default_value_t = 20)]
    window: usize,
    /// Time between RSS samples.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    sample_every: Duration,
    /// Allowed RSS growth, percent (plus --rss-margin-mib).
    #[arg(long, default_value_t = 20.0)]
    rss_margin_pct: f64,
    /// Allowed RSS growth on top of the percentage, MiB.
    #[arg(long, default_value_t = 8)]
    rss_margin_mib: u64,
    /// An extra argument for the broker (repeatable), e.g. `--broker-arg=--durability=buffered`.
    #[arg(long, allow_hyphen_values = true)]
    broker_arg: Vec<String>,
    /// No progress lines.
    #[arg(short, long)]
    quiet: bool,
}

/// Parses `90s`, `30m`, `1h`, `500ms` or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num.parse().map_err(|_| format!("not a duration: {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit in {s:?} (ms, s, m, h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let seed = cli.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let mut opts = soak::Options::new(cli.roost, cli.duration, seed);
    if let Some(k) = cli.kill_every {
        opts.kill_every = k;
    }
    opts.rate = cli.rate;
    opts.window = cli.window.max(1);
    opts.sample_every = cli.sample_every;
    opts.criterion.pct = cli.rss_margin_pct;
    opts.criterion.margin_kib = cli.rss_margin_mib << 10;
    opts.progress = !cli.quiet;
    opts.broker_args = cli.broker_arg;
    eprintln!("soak: seed {seed}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(soak::run(&opts)) {
        Ok(outcome) => {
            println!("{}", outcome.report);
            if outcome.passed {
                ExitCode::SUCCESS
            } else {
                eprintln!("soak: FAILED (seed {seed})");
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("soak: could not run (seed {seed}): {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("3 days").is_err());
    }
}
