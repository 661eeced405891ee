//! Control calls give the CPU back in short slices, so that a batch beside saturated event
//! loops delays their I/O by tens of microseconds at a time, not by the whole call.
//!
//! An event loop serving reads at full rate never sleeps: it is always runnable, so the
//! scheduler shares its CPU with a control thread by time slices (about a millisecond),
//! and a `bind` or `unbind` of 50 volumes ran its few hundred microseconds in one go
//! while the reads of that loop waited (issue 18: the storm's p99 was 2-3x the same
//! clients' without changes, whatever the control threads' class but `idle`, which then
//! got too little CPU to keep the storm's rate). A control thread now yields
//! (`sched_yield`, which moves its EEVDF deadline one slice on, so a runnable loop goes
//! first) whenever it has run [`SLICE`] since it woke or last yielded: after the parse, per
//! volume of a batch (checked, applied, closed), and before the answer. With no other task runnable the
//! yield returns at once (one system call).
//!
//! Only threads that serve control clients pace themselves ([`start`] marks them); the
//! replay at start-up and the tests do not.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// The longest a control thread runs before it lets a runnable event loop go first.
pub const SLICE: Duration = Duration::from_micros(30);

thread_local! {
    /// When this thread last woke or yielded; `None` on threads that do not pace.
    static SINCE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The thread just woke for a request: its slice starts now.
pub(super) fn start() {
    SINCE.with(|since| since.set(Some(Instant::now())));
}

/// A point where the call may give the CPU back: yields once the thread has run a
/// [`SLICE`] since it woke or last yielded.
pub(super) fn tick() {
    SINCE.with(|since| {
        let Some(at) = since.get() else {
            return;
        };
        let now = Instant::now();
        if now.duration_since(at) >= SLICE {
            std::thread::yield_now();
            since.set(Some(Instant::now()));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread that never started pacing never yields; one that did yields once a slice
    /// has passed, and its slice starts again.
    #[test]
    fn only_a_started_thread_yields_and_its_slice_restarts() {
        std::thread::spawn(|| {
            tick();
            assert!(SINCE.with(Cell::get).is_none());
            start();
            let first = SINCE.with(Cell::get).unwrap();
            tick();
            assert_eq!(SINCE.with(Cell::get), Some(first), "within the slice");
            std::thread::sleep(SLICE * 2);
            tick();
            assert!(SINCE.with(Cell::get).unwrap() > first, "a new slice");
        })
        .join()
        .unwrap();
    }
}
