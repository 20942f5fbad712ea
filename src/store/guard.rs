//! Containment of redb panics.
//!
//! redb trusts the pages it reads: a damaged page (flipped bytes, a zeroed block) can make it
//! panic deep inside its B-tree code instead of returning an error. Every call into redb that
//! reads the file runs through [`contained`], which turns such a panic into an error message,
//! so a damaged file is reported (naming the file and what to do) instead of crashing the
//! broker. The panic hook stays quiet for panics contained this way; every other panic is
//! reported by the hook that was installed before.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

thread_local! {
    /// Set while this thread runs a [`contained`] call.
    static CONTAINING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`; a panic inside it comes back as `Err` with the panic's message.
///
/// Whatever `f` touched is dropped by the unwinding; callers treat the database it used as
/// suspect (the writer reopens it, startup and the repair tool report the damage).
pub(crate) fn contained<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_quiet_hook();
    let was = CONTAINING.with(|c| c.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    CONTAINING.with(|c| c.set(was));
    result.map_err(|payload| {
        let text = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        format!("the database engine failed on a damaged page ({text})")
    })
}

/// Installs, once per process, a panic hook that stays silent inside [`contained`] and
/// defers to the previous hook everywhere else.
fn install_quiet_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CONTAINING.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_with_its_message() {
        let r: Result<(), String> = contained(|| panic!("page 7 is not a leaf"));
        let e = r.unwrap_err();
        assert!(e.contains("page 7 is not a leaf"), "{e}");
        assert_eq!(contained(|| 5), Ok(5));
    }
}
