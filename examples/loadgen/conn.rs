//! The `conn` scenario: open N idle connections at a rate, hold them, report connect times
//! and how many the broker kept open.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::client::{Conn, ConnectOptions};
use crate::hist::Histogram;
use crate::report::Json;
use crate::{Common, ConnArgs};

/// Runs the scenario and prints the JSON result line.
pub async fn run(common: &Common, args: &ConnArgs) -> Result<(), String> {
    if args.n == 0 {
        return Err("--n must be at least 1".into());
    }
    let version = common.version()?;
    let addr = common.addr()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(common.max_secs);
    let (result_tx, mut result_rx) = mpsc::unbounded_channel::<Result<Duration, String>>();
    let (release_tx, release_rx) = watch::channel(false);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(args.n);
    let keep_alive = u16::try_from(common.max_secs.max(60)).unwrap_or(u16::MAX);
    // Connection starts are paced at --rate; --concurrency bounds unanswered CONNECTs.
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    for i in 0..args.n {
        if args.rate > 0.0 {
            let at = start + Duration::from_secs_f64(i as f64 / args.rate);
            tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        let permit = std::sync::Arc::clone(&gate)
            .acquire_owned()
            .await
            .map_err(|e| format!("semaphore: {e}"))?;
        let o = ConnectOptions {
            addr,
            version,
            client_id: format!("lg-idle-{}-{i}", std::process::id()),
            clean_start: true,
            session_expiry: 0,
            keep_alive,
            timeout: Duration::from_secs(common.connect_timeout),
        };
        let tx = result_tx.clone();
        let mut release = release_rx.clone();
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let conn = Conn::connect(&o).await;
            drop(permit);
            let mut conn = match conn {
                Ok((c, _)) => {
                    let _ = tx.send(Ok(t0.elapsed()));
                    c
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return false;
                }
            };
            // Held until released, unless the broker closes it first.
            tokio::select! {
                _ = conn.closed() => false,
                _ = async { release.wait_for(|r| *r).await.is_ok() } => {
                    conn.disconnect().await;
                    true
                }
            }
        }));
    }
    drop(result_tx);
    let attempted = tasks.len();

    let mut hist = Histogram::default();
    let mut errors = Vec::new();
    let mut done = 0usize;
    let mut last_print = Instant::now();
    while done < attempted {
        match tokio::time::timeout_at(deadline, result_rx.recv()).await {
            Ok(Some(Ok(d))) => hist.record(d.as_nanos() as u64),
            Ok(Some(Err(e))) => errors.push(e),
            Ok(None) | Err(_) => break,
        }
        done += 1;
        if !common.quiet && last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            eprintln!(
                "loadgen: {:5.1}s connected {} failed {} of {}",
                start.elapsed().as_secs_f64(),
                hist.len(),
                errors.len(),
                args.n
            );
        }
    }
    let connect_secs = start.elapsed().as_secs_f64();
    // The bench script samples the broker's memory while this line's connections are held.
    eprintln!(
        "loadgen: holding {} connections for {} s",
        hist.len(),
        args.hold
    );
    let hold_until =
        (tokio::time::Instant::now() + Duration::from_secs_f64(args.hold)).min(deadline);
    tokio::time::sleep_until(hold_until).await;
    let _ = release_tx.send(true);
    let mut held = 0usize;
    for t in tasks {
        if let Ok(Ok(true)) = tokio::time::timeout(Duration::from_secs(5), t).await {
            held += 1;
        }
    }

    let ms = |ns: u64| ns as f64 / 1e6;
    let mut j = Json::new();
    j.str("scenario", "conn")
        .str("label", &common.label)
        .num("n", args.n as f64)
        .num("rate", args.rate)
        .num("hold_secs", args.hold)
        .num("attempted", attempted as f64)
        .num("connected", hist.len() as f64)
        .num("failed", errors.len() as f64)
        .num("held", held as f64)
        .num("connect_phase_secs", connect_secs)
        .num("connect_p50_ms", ms(hist.percentile(50.0)))
        .num("connect_p99_ms", ms(hist.percentile(99.0)))
        .num("connect_max_ms", ms(hist.max()))
        .bool("timed_out", tokio::time::Instant::now() >= deadline);
    let first: Vec<String> = errors.iter().take(5).cloned().collect();
    j.str_list("errors", &first);
    println!("{}", j.finish());
    Ok(())
}
