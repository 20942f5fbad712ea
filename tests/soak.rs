//! A one-minute soak of the real `roost` binary (the debug build `cargo test` makes): the
//! workload of `examples/soak` with a `kill -9` and restart about every 20 s, checked for
//! lost acknowledged messages, QoS 2 duplicates, ordering, retained messages and flat
//! memory. `ROOST_SOAK_SECS` and `ROOST_SOAK_SEED` change its length and seed.

#[path = "../examples/soak/soak.rs"]
mod soak;

use std::time::Duration;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_minute_soak_with_kill_9() {
    let seed = env_number("ROOST_SOAK_SEED", 60);
    let secs = env_number("ROOST_SOAK_SECS", 60);
    let mut opts = soak::Options::new(
        env!("CARGO_BIN_EXE_roost").into(),
        Duration::from_secs(secs),
        seed,
    );
    // The debug build is several times slower than the release build.
    opts.rate = 40.0;
    opts.sample_every = Duration::from_secs(2);
    let outcome = soak::run(&opts).await.expect("the soak sets up");
    println!("{}", outcome.report);
    assert!(
        outcome.passed,
        "soak failed (seed {seed}):\n{}",
        outcome.report
    );
}
