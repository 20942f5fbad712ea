//! The failed-authentication throttle, driven with explicit instants.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use crate::auth::{AuthThrottle, ThrottleConfig};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

const MS: fn(u64) -> Duration = Duration::from_millis;

#[test]
fn delay_doubles_and_is_capped() {
    let mut t = AuthThrottle::default();
    let now = Instant::now();
    let peer = ip("192.0.2.1");
    let delays: Vec<Duration> = (0..8)
        .map(|i| t.record_failure(peer, now + Duration::from_secs(i)))
        .collect();
    assert_eq!(
        delays,
        [
            MS(250),
            MS(500),
            MS(1000),
            MS(2000),
            MS(4000),
            MS(5000),
            MS(5000),
            MS(5000)
        ]
    );
    assert_eq!(t.failures(peer, now + Duration::from_secs(8)), 8);
}

#[test]
fn many_failures_do_not_overflow() {
    let mut t = AuthThrottle::default();
    let now = Instant::now();
    let peer = ip("192.0.2.1");
    for _ in 0..100 {
        assert!(t.record_failure(peer, now) <= Duration::from_secs(5));
    }
    assert_eq!(t.record_failure(peer, now), Duration::from_secs(5));
}

#[test]
fn success_resets() {
    let mut t = AuthThrottle::default();
    let now = Instant::now();
    let peer = ip("192.0.2.1");
    t.record_failure(peer, now);
    t.record_failure(peer, now);
    t.record_success(peer);
    assert_eq!(t.failures(peer, now), 0);
    assert!(t.is_empty());
    assert_eq!(t.record_failure(peer, now), MS(250));
}

#[test]
fn quiet_period_resets() {
    let config = ThrottleConfig {
        quiet_period: Duration::from_secs(60),
        ..ThrottleConfig::default()
    };
    let mut t = AuthThrottle::new(config);
    let now = Instant::now();
    let peer = ip("192.0.2.1");
    t.record_failure(peer, now);
    t.record_failure(peer, now + Duration::from_secs(59));
    assert_eq!(
        t.record_failure(peer, now + Duration::from_secs(100)),
        MS(1000)
    );
    // 60 s after the last failure the count starts again.
    assert_eq!(t.failures(peer, now + Duration::from_secs(160)), 0);
    assert_eq!(
        t.record_failure(peer, now + Duration::from_secs(160)),
        MS(250)
    );
}

#[test]
fn peers_are_counted_separately() {
    let mut t = AuthThrottle::default();
    let now = Instant::now();
    t.record_failure(ip("192.0.2.1"), now);
    t.record_failure(ip("192.0.2.1"), now);
    assert_eq!(t.record_failure(ip("192.0.2.2"), now), MS(250));
    assert_eq!(t.len(), 2);
}

#[test]
fn ipv6_is_counted_per_64_and_mapped_ipv4_as_ipv4() {
    let mut t = AuthThrottle::default();
    let now = Instant::now();
    t.record_failure(ip("2001:db8:1:2::1"), now);
    assert_eq!(t.record_failure(ip("2001:db8:1:2:ffff::9"), now), MS(500));
    assert_eq!(t.record_failure(ip("2001:db8:1:3::1"), now), MS(250));
    t.record_failure(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), now);
    let mapped = IpAddr::V6(Ipv4Addr::new(198, 51, 100, 7).to_ipv6_mapped());
    assert_eq!(t.record_failure(mapped, now), MS(500));
    t.record_success(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 7, 7, 7, 7)));
    assert_eq!(t.failures(ip("2001:db8:1:2::1"), now), 0);
}

#[test]
fn bounded_with_oldest_evicted() {
    let config = ThrottleConfig {
        capacity: 3,
        ..ThrottleConfig::default()
    };
    let mut t = AuthThrottle::new(config);
    let now = Instant::now();
    let peers: Vec<IpAddr> = (1..=4).map(|i| ip(&format!("192.0.2.{i}"))).collect();
    t.record_failure(peers[0], now);
    t.record_failure(peers[1], now + MS(1));
    t.record_failure(peers[2], now + MS(2));
    // peers[0] fails again: now peers[1] is the oldest.
    t.record_failure(peers[0], now + MS(3));
    t.record_failure(peers[3], now + MS(4));
    assert_eq!(t.len(), 3);
    let later = now + MS(5);
    assert_eq!(t.failures(peers[1], later), 0, "evicted");
    assert_eq!(t.failures(peers[0], later), 2);
    assert_eq!(t.failures(peers[2], later), 1);
    assert_eq!(t.failures(peers[3], later), 1);
}

#[test]
fn default_capacity_is_ten_thousand() {
    let mut t = AuthThrottle::default();
    let now = Instant::now();
    for i in 0..10_050u32 {
        t.record_failure(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), now);
    }
    assert_eq!(t.len(), 10_000);
}

#[test]
fn prune_forgets_quiet_peers() {
    let mut t = AuthThrottle::default();
    let now = Instant::now();
    t.record_failure(ip("192.0.2.1"), now);
    t.record_failure(ip("192.0.2.2"), now + Duration::from_secs(200));
    t.prune(now + Duration::from_secs(300));
    assert_eq!(t.len(), 1);
    assert_eq!(
        t.failures(ip("192.0.2.2"), now + Duration::from_secs(300)),
        1
    );
    t.prune(now + Duration::from_secs(1000));
    assert!(t.is_empty());
}

#[test]
fn the_delay_earned_so_far_applies_before_the_next_check() {
    let mut t = AuthThrottle::default();
    let peer: IpAddr = "192.0.2.7".parse().unwrap();
    let clean: IpAddr = "192.0.2.8".parse().unwrap();
    let now = Instant::now();
    assert_eq!(
        t.current_delay(peer, now),
        Duration::ZERO,
        "no failures, no wait"
    );
    let after_two = [t.record_failure(peer, now), t.record_failure(peer, now)][1];
    assert_eq!(
        t.current_delay(peer, now),
        after_two,
        "the next attempt waits first"
    );
    assert_eq!(
        t.current_delay(clean, now),
        Duration::ZERO,
        "other addresses do not"
    );
    assert_eq!(
        t.current_delay(peer, now + Duration::from_secs(3600)),
        Duration::ZERO,
        "forgotten after a quiet period"
    );
    t.record_success(peer);
    assert_eq!(t.current_delay(peer, now), Duration::ZERO);
}
