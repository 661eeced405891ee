//! Where one control call's time goes: parse, apply, journal write, the wait for a group
//! commit, the leader's snapshot of the model, `fdatasync`, the volume pool's own commit
//! (`volume_*` calls; the pool record a leader appends after its sync for `volume_create`
//! with `attach`), publication, the wait for the event loops, answer. Off unless `RUST_LOG` enables DEBUG for `gateway::control::phases`
//! (then one clock reading per phase, and one log line per call with the microseconds
//! of each); `scripts/bench-control-phases.sh` turns those lines into percentiles.
//!
//! Each control client has its own thread (`socket`), so the clock is thread-local: the
//! call's own phases are marked where they happen, with no parameter threaded through.
//! A call led by another call's leader shows its whole settle as `wait`; the leader's
//! line shows the snapshot, sync and publish it made for the group.

use std::cell::RefCell;
use std::time::Instant;

/// The phases of one call, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// The request line decoded into a typed call.
    Parse,
    /// Checked and made on the model (a LUN opened, a target's login node rebuilt).
    Apply,
    /// The journal record encoded and written (`pwrite`, no sync).
    Journal,
    /// Waiting while another call's leader synced and published.
    Wait,
    /// A leader taking the model's version and the event loops' view of it.
    Snapshot,
    /// A leader's `fdatasync` of the journal.
    Sync,
    /// The volume pool's commit of a `volume_*` call (its journal append and sync), or
    /// the pool records a leader appends after its sync.
    Pool,
    /// A leader building the loops' configuration and posting it to their mailboxes.
    Publish,
    /// Waiting until every event loop runs the change (changes that remove something).
    Visible,
    /// After the settle: the answer encoded and written to the client.
    Answer,
}

const PHASES: [Phase; 10] = [
    Phase::Parse,
    Phase::Apply,
    Phase::Journal,
    Phase::Wait,
    Phase::Snapshot,
    Phase::Sync,
    Phase::Pool,
    Phase::Publish,
    Phase::Visible,
    Phase::Answer,
];

struct Clock {
    started: Instant,
    last: Instant,
    spent_ns: [u64; PHASES.len()],
}

thread_local! {
    static CLOCK: RefCell<Option<Clock>> = const { RefCell::new(None) };
}

fn enabled() -> bool {
    tracing::enabled!(target: "gateway::control::phases", tracing::Level::DEBUG)
}

/// A request line arrived: starts the call's clock (when the log wants it).
pub(super) fn start() {
    if !enabled() {
        return;
    }
    let now = Instant::now();
    CLOCK.with(|clock| {
        *clock.borrow_mut() = Some(Clock {
            started: now,
            last: now,
            spent_ns: [0; PHASES.len()],
        })
    });
}

/// Whether this thread's call is being timed.
pub(super) fn running() -> bool {
    CLOCK.with(|clock| clock.borrow().is_some())
}

/// The time since the last mark was spent in `phase`.
pub(super) fn mark(phase: Phase) {
    CLOCK.with(|clock| {
        if let Some(clock) = clock.borrow_mut().as_mut() {
            let now = Instant::now();
            let index = PHASES.iter().position(|p| *p == phase).unwrap_or(0);
            clock.spent_ns[index] += (now - clock.last).as_nanos() as u64;
            clock.last = now;
        }
    });
}

/// The answer is written: logs the call's phases (microseconds) and stops its clock.
pub(super) fn finish(method: &str) {
    mark(Phase::Answer);
    let Some(clock) = CLOCK.with(|clock| clock.borrow_mut().take()) else {
        return;
    };
    let us = |phase: Phase| {
        let index = PHASES.iter().position(|p| *p == phase).unwrap_or(0);
        clock.spent_ns[index] / 1000
    };
    tracing::debug!(
        target: "gateway::control::phases",
        method,
        total_us = clock.started.elapsed().as_micros() as u64,
        parse_us = us(Phase::Parse),
        apply_us = us(Phase::Apply),
        journal_us = us(Phase::Journal),
        wait_us = us(Phase::Wait),
        snapshot_us = us(Phase::Snapshot),
        sync_us = us(Phase::Sync),
        pool_us = us(Phase::Pool),
        publish_us = us(Phase::Publish),
        visible_us = us(Phase::Visible),
        answer_us = us(Phase::Answer),
        "control call phases"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a subscriber asking for DEBUG the clock never starts: marks and finish do
    /// nothing (the cost when off is one `enabled` check per call).
    #[test]
    fn without_debug_logging_no_clock_runs() {
        start();
        mark(Phase::Apply);
        assert!(CLOCK.with(|c| c.borrow().is_none()));
        finish("target_create");
    }

    /// Marks add each interval to its phase; a phase marked twice sums both.
    #[test]
    fn marks_add_up_to_the_total() {
        let now = Instant::now();
        CLOCK.with(|c| {
            *c.borrow_mut() = Some(Clock {
                started: now,
                last: now,
                spent_ns: [0; PHASES.len()],
            })
        });
        std::thread::sleep(std::time::Duration::from_millis(2));
        mark(Phase::Apply);
        std::thread::sleep(std::time::Duration::from_millis(2));
        mark(Phase::Sync);
        mark(Phase::Apply);
        let clock = CLOCK.with(|c| c.borrow_mut().take()).unwrap();
        let sum: u64 = clock.spent_ns.iter().sum();
        assert_eq!(sum, (clock.last - clock.started).as_nanos() as u64);
        assert!(
            clock.spent_ns[1] >= 2_000_000,
            "apply: {:?}",
            clock.spent_ns
        );
        let sync = PHASES.iter().position(|p| *p == Phase::Sync).unwrap();
        assert!(
            clock.spent_ns[sync] >= 2_000_000,
            "sync: {:?}",
            clock.spent_ns
        );
    }
}
