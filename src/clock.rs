//! The broker's one source of time.
//!
//! Every protocol timer of the broker (will delay, session expiry, message expiry, the
//! failed-login delay) and every time it persists (disconnection times, message expiry in the
//! store) is read from a [`Clock`]. In production it is [`Clock::system`]: `now()` is
//! [`Instant::now`], `wall()` is [`SystemTime::now`] and sleeps are tokio timers. Tests use
//! [`Clock::manual`], which stands still until [`Clock::advance`] moves it, so a test of a
//! one-hour session expiry takes no time and does not depend on the machine's load.
//!
//! A few timers are deliberately not on this clock because they guard the process rather than
//! measure protocol time: the store's fsync cadence, the shutdown grace period, the takeover
//! wait and socket-level timeouts. A manual clock that is never advanced must not be able to
//! hang those.
//!
//! The clock is part of [`Config`](crate::Config) (`config.clock`); the broker keeps it and
//! every timer of the broker reads it.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

/// A source of time, cheap to clone: clones share the same time.
///
/// Two clocks are equal if both are the system clock, or if they are clones of the same
/// manual clock.
#[derive(Clone, Default)]
pub struct Clock {
    inner: Inner,
}

#[derive(Clone, Default)]
enum Inner {
    /// Real time.
    #[default]
    System,
    /// Time that moves only when advanced.
    Manual(Arc<Manual>),
}

/// The state of a manual clock: where it started and how far it has been advanced. Sleepers
/// subscribe to `elapsed` and wake when it changes.
struct Manual {
    start: Instant,
    start_wall: SystemTime,
    elapsed: watch::Sender<Duration>,
}

impl Clock {
    /// The real clock: tokio timers, [`Instant::now`] and [`SystemTime::now`]. The default.
    pub fn system() -> Clock {
        Clock {
            inner: Inner::System,
        }
    }

    /// A clock for tests that stands still until [`Clock::advance`] moves it. It starts at the
    /// real `Instant` and wall time of its creation; both then move only by what is advanced.
    pub fn manual() -> Clock {
        Clock {
            inner: Inner::Manual(Arc::new(Manual {
                start: Instant::now(),
                start_wall: SystemTime::now(),
                elapsed: watch::Sender::new(Duration::ZERO),
            })),
        }
    }

    /// True for a clock made by [`Clock::manual`].
    pub fn is_manual(&self) -> bool {
        matches!(self.inner, Inner::Manual(_))
    }

    /// The current monotonic time, for deadlines and expiry.
    pub fn now(&self) -> Instant {
        match &self.inner {
            // tokio's clock, so that an embedder's tests with tokio's paused time see the same
            // time as the timers (`tokio::time::sleep_until`) that wait on it.
            Inner::System => tokio::time::Instant::now().into_std(),
            Inner::Manual(m) => m.start + *m.elapsed.borrow(),
        }
    }

    /// The current wall-clock time, for times that are persisted and must mean the same after
    /// a restart (a session's disconnection time, a stored message's expiry). A manual clock's
    /// wall time moves together with [`Clock::now`].
    pub fn wall(&self) -> SystemTime {
        match &self.inner {
            Inner::System => SystemTime::now(),
            Inner::Manual(m) => m.start_wall + *m.elapsed.borrow(),
        }
    }

    /// Waits until [`Clock::now`] reaches `deadline`. On the system clock this is a tokio
    /// timer; on a manual clock it returns once [`Clock::advance`] has moved the clock to or
    /// past `deadline` (at once if it is there already).
    pub async fn sleep_until(&self, deadline: Instant) {
        match &self.inner {
            Inner::System => tokio::time::sleep_until(deadline.into()).await,
            Inner::Manual(m) => {
                let mut elapsed = m.elapsed.subscribe();
                loop {
                    let now = m.start + *elapsed.borrow_and_update();
                    if now >= deadline {
                        return;
                    }
                    if elapsed.changed().await.is_err() {
                        // The sender lives as long as `m`, which `self` holds: unreachable,
                        // but waiting forever is the right answer for a clock that stopped.
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }

    /// Waits for `duration` of this clock's time, counted from the call (not from the first
    /// poll of the returned future).
    pub fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send + '_ {
        self.sleep_until(self.now() + duration)
    }

    /// Moves a manual clock forward by `by` and wakes the sleeps whose deadline it reaches.
    ///
    /// # Panics
    ///
    /// On the system clock: real time cannot be moved, and a test that tries has a bug.
    pub fn advance(&self, by: Duration) {
        match &self.inner {
            Inner::System => panic!("Clock::advance called on the system clock"),
            Inner::Manual(m) => m.elapsed.send_modify(|elapsed| *elapsed += by),
        }
    }
}

impl PartialEq for Clock {
    fn eq(&self, other: &Clock) -> bool {
        match (&self.inner, &other.inner) {
            (Inner::System, Inner::System) => true,
            (Inner::Manual(a), Inner::Manual(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for Clock {}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::System => f.write_str("Clock::System"),
            Inner::Manual(m) => f
                .debug_struct("Clock::Manual")
                .field("elapsed", &*m.elapsed.borrow())
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    /// Polls `f` once without a runtime timer being involved.
    fn ready<F: Future>(f: std::pin::Pin<&mut F>) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        matches!(f.poll(&mut cx), Poll::Ready(_))
    }

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let clock = Clock::manual();
        let (t0, w0) = (clock.now(), clock.wall());
        assert_eq!(clock.now(), t0);
        clock.advance(Duration::from_secs(90));
        assert_eq!(clock.now() - t0, Duration::from_secs(90));
        assert_eq!(
            clock.wall().duration_since(w0).unwrap(),
            Duration::from_secs(90)
        );
        let copy = clock.clone();
        copy.advance(Duration::from_secs(10));
        assert_eq!(
            clock.now() - t0,
            Duration::from_secs(100),
            "clones share time"
        );
    }

    #[test]
    fn manual_sleep_ends_when_the_deadline_is_reached() {
        let clock = Clock::manual();
        let mut sleep = pin!(clock.sleep(Duration::from_secs(5)));
        assert!(!ready(sleep.as_mut()));
        clock.advance(Duration::from_secs(4));
        assert!(!ready(sleep.as_mut()), "one second short");
        clock.advance(Duration::from_secs(1));
        assert!(ready(sleep.as_mut()));
        // A deadline already passed returns at once.
        let past = clock.now() - Duration::from_secs(1);
        assert!(ready(pin!(clock.sleep_until(past)).as_mut()));
    }

    #[tokio::test]
    async fn manual_sleep_wakes_a_waiting_task() {
        let clock = Clock::manual();
        let deadline = clock.now() + Duration::from_secs(3600);
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep_until(deadline).await }
        });
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_secs(3600));
        tokio::time::timeout(Duration::from_secs(10), sleeper)
            .await
            .expect("woken by advance")
            .expect("no panic");
    }

    #[test]
    fn equality_is_identity_of_the_time_source() {
        assert_eq!(Clock::system(), Clock::default());
        let manual = Clock::manual();
        assert_eq!(manual, manual.clone());
        assert_ne!(manual, Clock::manual());
        assert_ne!(manual, Clock::system());
        assert!(manual.is_manual() && !Clock::system().is_manual());
    }

    #[tokio::test]
    async fn system_clock_sleeps_on_tokio_time() {
        let clock = Clock::system();
        let start = clock.now();
        clock.sleep(Duration::from_millis(1)).await;
        assert!(clock.now() > start);
    }
}
