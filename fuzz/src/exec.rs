//! Running the client's futures without an executor. Nothing in the hostile transport or clock
//! ever wakes a task: a future that returns `Pending` is waiting for input the fuzzer has not
//! given yet, so it is polled again only after the input changed.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// Polls `f`; between polls, `feed` may change the world (deliver bytes, move the clock) and
/// returns `false` when it has nothing more to give, which drops the future unfinished.
pub fn drive<F: Future>(f: F, mut feed: impl FnMut() -> bool) -> Option<F::Output> {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return Some(out);
        }
        if !feed() {
            return None;
        }
    }
}
