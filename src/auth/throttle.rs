//! Slowing down password guessing: a growing delay before answering a failed CONNECT.
//!
//! Sans-IO: the caller passes the current [`Instant`] and applies the returned delay itself
//! (the broker reads both from its [`Clock`](crate::Clock) and waits with `clock.sleep` before
//! sending CONNACK with a "bad username or password" code and closing), so the logic is tested
//! without sleeping.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Tuning of an [`AuthThrottle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ThrottleConfig {
    /// The delay after the first failure; it doubles with each further consecutive failure.
    pub base_delay: Duration,
    /// The largest delay ever returned.
    pub max_delay: Duration,
    /// A peer with no failure for this long starts again from zero.
    pub quiet_period: Duration,
    /// The most peers tracked; beyond it the peer whose last failure is oldest is forgotten.
    pub capacity: usize,
}

impl Default for ThrottleConfig {
    /// 250 ms, doubling, capped at 5 s, forgotten after 5 quiet minutes, 10,000 peers.
    fn default() -> Self {
        ThrottleConfig {
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(5),
            quiet_period: Duration::from_secs(300),
            capacity: 10_000,
        }
    }
}

/// Counts consecutive authentication failures per peer and says how long to wait before
/// answering the next failure: `base_delay * 2^(n-1)` for the n-th consecutive failure, at most
/// `max_delay` (defaults: 0.25, 0.5, 1, 2, 4, 5, 5... seconds).
///
/// Peers are IPv4 addresses, and IPv6 /64 prefixes: one IPv6 host usually owns a whole /64, so
/// counting single IPv6 addresses would be useless. IPv4-mapped IPv6 addresses count as IPv4.
/// Memory is bounded by [`ThrottleConfig::capacity`].
///
/// The delay only slows a sequential guesser; it does not stop a distributed one, and the
/// broker should apply it without holding a connection slot it needs for other clients.
#[derive(Clone, Debug)]
pub(crate) struct AuthThrottle {
    config: ThrottleConfig,
    peers: HashMap<IpAddr, Peer>,
    /// Peers ordered by last failure (with a sequence number to break ties), for eviction.
    by_age: BTreeMap<(Instant, u64), IpAddr>,
    next_seq: u64,
}

#[derive(Clone, Copy, Debug)]
struct Peer {
    failures: u32,
    last_failure: Instant,
    seq: u64,
}

impl Default for AuthThrottle {
    fn default() -> Self {
        AuthThrottle::new(ThrottleConfig::default())
    }
}

impl AuthThrottle {
    /// A throttle with the given tuning.
    pub(crate) fn new(config: ThrottleConfig) -> AuthThrottle {
        AuthThrottle {
            config,
            peers: HashMap::new(),
            by_age: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// Records a failed authentication from `peer` at `now` and returns how long to wait
    /// before answering it.
    pub(crate) fn record_failure(&mut self, peer: IpAddr, now: Instant) -> Duration {
        let key = peer_key(peer);
        let failures = match self.peers.remove(&key) {
            Some(old) => {
                self.by_age.remove(&(old.last_failure, old.seq));
                if self.is_quiet(&old, now) {
                    1
                } else {
                    old.failures.saturating_add(1)
                }
            }
            None => {
                self.make_room();
                1
            }
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.peers.insert(
            key,
            Peer {
                failures,
                last_failure: now,
                seq,
            },
        );
        self.by_age.insert((now, seq), key);
        self.delay(failures)
    }

    /// The delay a new attempt from `peer` waits before its password is even checked: the one
    /// its recent failures have earned (zero for an address without failures).
    pub(crate) fn current_delay(&self, peer: IpAddr, now: Instant) -> Duration {
        match self.peers.get(&peer_key(peer)) {
            Some(p) if !self.is_quiet(p, now) => self.delay(p.failures),
            _ => Duration::ZERO,
        }
    }

    /// Records a successful authentication from `peer`: its count starts again from zero.
    pub(crate) fn record_success(&mut self, peer: IpAddr) {
        if let Some(old) = self.peers.remove(&peer_key(peer)) {
            self.by_age.remove(&(old.last_failure, old.seq));
        }
    }

    /// The number of consecutive failures counted for `peer` at `now` (0 after a quiet period).
    #[cfg(test)]
    pub(crate) fn failures(&self, peer: IpAddr, now: Instant) -> u32 {
        match self.peers.get(&peer_key(peer)) {
            Some(p) if !self.is_quiet(p, now) => p.failures,
            _ => 0,
        }
    }

    /// Forgets every peer quiet since before `now - quiet_period`. Optional (the map is
    /// bounded anyway); call it now and then to give the memory back.
    #[cfg(test)]
    pub(crate) fn prune(&mut self, now: Instant) {
        while let Some((&(last, seq), &key)) = self.by_age.first_key_value() {
            if now.saturating_duration_since(last) < self.config.quiet_period {
                break;
            }
            self.by_age.remove(&(last, seq));
            self.peers.remove(&key);
        }
    }

    /// The number of peers tracked.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.peers.len()
    }

    /// True if no peer is tracked.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    fn is_quiet(&self, peer: &Peer, now: Instant) -> bool {
        now.saturating_duration_since(peer.last_failure) >= self.config.quiet_period
    }

    /// Evicts the peers with the oldest failures until there is room for one more.
    fn make_room(&mut self) {
        while self.peers.len() >= self.config.capacity.max(1) {
            let Some(((_, _), key)) = self.by_age.pop_first() else {
                break;
            };
            self.peers.remove(&key);
        }
    }

    fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.config
            .base_delay
            .saturating_mul(1u32 << doublings)
            .min(self.config.max_delay)
    }
}

/// The unit failures (and connections per address) are counted by: the IPv4 address (an
/// IPv4-mapped IPv6 address too), or the IPv6 /64 prefix, which one host usually has whole.
pub(crate) fn peer_key(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
    }
}
