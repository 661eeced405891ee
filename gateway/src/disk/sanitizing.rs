//! A SANITIZE in progress on a logical unit (SBC-4 4.11 "Sanitize operations", 5.30).
//!
//! The sanitize runs on a thread that may wait (the server plans SANITIZE as a blocking
//! command, never on an event loop) and answers when it is done. Meanwhile the unit
//! refuses medium access, and every command but INQUIRY, REPORT LUNS, REQUEST SENSE and
//! REPORT SUPPORTED OPERATION CODES, with NOT READY, LOGICAL UNIT NOT READY, SANITIZE IN
//! PROGRESS (04/1B) and the progress indication in the sense-key specific bytes (0 to
//! 65535 of the medium done); REQUEST SENSE returns the same sense data with GOOD. Task
//! management and a lost connection do not stop it: the operation belongs to the unit,
//! not to the command (libiscsi's `Sanitize.Reset` checks this).
//!
//! `sanitize_rate=SIZE` in the LUN spec caps its pace (bytes per second), as arrays
//! throttle background operations so that they do not starve host I/O; without it, it
//! runs at the backend's speed.
//!
//! An operation writes to the backend it started on (an IMMED one on a thread of its own),
//! so the control plane must not replace or remove that backend meanwhile (a migration
//! would miss the sanitized blocks, a detach would leave a thread writing to a medium no
//! longer exported). A control verb takes a [`Fence`] first: refused while an operation
//! runs (the caller names the sanitize in its error), and while held, a SANITIZE that
//! arrives is refused with NOT READY, OPERATION IN PROGRESS (04/07), which hosts retry.
//! `begin` and `fence` each set their own flag and then look at the other's (both
//! sequentially consistent), so at most one of them wins a race, never both.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::opcodes::op;
use super::sense::{key, Check};

/// LOGICAL UNIT NOT READY, SANITIZE IN PROGRESS.
pub const SANITIZE_IN_PROGRESS: (u8, u8) = (0x04, 0x1b);
/// SANITIZE COMMAND FAILED: what the unit reports after an operation that did not
/// complete, until a SANITIZE completes or EXIT FAILURE MODE (SBC-4 4.11.5).
pub const SANITIZE_COMMAND_FAILED: (u8, u8) = (0x31, 0x03);
/// LOGICAL UNIT NOT READY, OPERATION IN PROGRESS: a SANITIZE refused while the control
/// plane replaces the unit's backend (a [`Fence`] is held).
pub const OPERATION_IN_PROGRESS: (u8, u8) = (0x04, 0x07);

/// The sanitize state of one logical unit.
#[derive(Debug, Default)]
pub struct Sanitizing {
    running: AtomicBool,
    /// Of 65536: how much of the medium is done.
    progress: AtomicU32,
    /// The last operation ended without completing (an I/O error, or a panic).
    failed: AtomicBool,
    /// `sanitize_rate=`: bytes per second at most; `None` runs at full speed.
    pub(super) bytes_per_second: Option<u64>,
    /// The control plane is replacing or removing the unit's backend: no operation starts.
    fenced: AtomicBool,
}

/// Why a [`Fence`] could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceRefused {
    /// An operation runs, this much done (percent, rounded down).
    Running { percent_done: u8 },
    /// Another control verb holds the fence.
    Fenced,
}

/// Keeps SANITIZE from starting on a unit while held (see the module doc); released when
/// dropped, unless [`Fence::keep`] made it permanent.
#[derive(Debug)]
pub struct Fence {
    state: Option<Arc<Sanitizing>>,
}

impl Fence {
    /// Never released: for a unit detached or deleted, which must not start an operation
    /// from a command that was still queued for it.
    pub fn keep(mut self) {
        self.state = None;
    }
}

impl Drop for Fence {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            state.fenced.store(false, Ordering::SeqCst);
        }
    }
}

/// Ends the operation when dropped: completed when [`Running::complete`] was called,
/// failed otherwise (an error, or a panic). Owns its state, so an operation started with
/// IMMED set runs on a thread of its own, past the command that started it.
#[derive(Debug)]
pub struct Running {
    state: Arc<Sanitizing>,
    started: Instant,
    completed: bool,
}

impl Sanitizing {
    /// No operation running; SANITIZE paced at `bytes_per_second` when given.
    pub fn with_rate(bytes_per_second: Option<u64>) -> Sanitizing {
        Sanitizing {
            bytes_per_second,
            ..Default::default()
        }
    }

    /// Starts an operation, or NOT READY (04/1B) when one is running already.
    /// NOT READY, OPERATION IN PROGRESS (04/07) while the control plane holds a [`Fence`].
    pub fn begin(self: &Arc<Self>) -> Result<Running, Check> {
        if self.running.swap(true, Ordering::SeqCst) {
            return Err(self.not_ready());
        }
        if self.fenced.load(Ordering::SeqCst) {
            self.running.store(false, Ordering::SeqCst);
            return Err(Check::new(key::NOT_READY, OPERATION_IN_PROGRESS));
        }
        self.progress.store(0, Ordering::Relaxed);
        Ok(Running {
            state: Arc::clone(self),
            started: Instant::now(),
            completed: false,
        })
    }

    /// The condition a command meets while an operation runs or after one failed, if
    /// either: what REQUEST SENSE reports.
    pub fn condition(&self) -> Option<Check> {
        if self.running.load(Ordering::Acquire) {
            return Some(self.not_ready());
        }
        self.failed
            .load(Ordering::Acquire)
            .then(|| Check::new(key::MEDIUM_ERROR, SANITIZE_COMMAND_FAILED))
    }

    /// NOT READY for `cdb` while an operation runs, unless it is one of the commands
    /// SBC-4 lets through; after a failed one, MEDIUM ERROR, SANITIZE COMMAND FAILED for
    /// every command but those and SANITIZE itself (which may end the failure mode).
    pub fn refuses(&self, cdb: &[u8]) -> Option<Check> {
        let opcode = cdb.first().copied();
        let allowed = matches!(
            opcode,
            Some(op::INQUIRY | op::REPORT_LUNS | op::REQUEST_SENSE | op::MAINTENANCE_IN)
        );
        if self.running.load(Ordering::Acquire) {
            return (!allowed).then(|| self.not_ready());
        }
        if self.failed.load(Ordering::Acquire) && !allowed && opcode != Some(op::SANITIZE) {
            return Some(Check::new(key::MEDIUM_ERROR, SANITIZE_COMMAND_FAILED));
        }
        None
    }

    /// Keeps operations from starting until the fence is dropped; refused while one runs
    /// or another fence is held.
    pub fn fence(self: &Arc<Self>) -> Result<Fence, FenceRefused> {
        if self.fenced.swap(true, Ordering::SeqCst) {
            return Err(FenceRefused::Fenced);
        }
        if self.running.load(Ordering::SeqCst) {
            self.fenced.store(false, Ordering::SeqCst);
            let progress = self.progress.load(Ordering::Relaxed).min(0xffff);
            return Err(FenceRefused::Running {
                percent_done: (progress * 100 / 65536) as u8,
            });
        }
        Ok(Fence {
            state: Some(Arc::clone(self)),
        })
    }

    /// EXIT FAILURE MODE: the unit serves again after a failed operation.
    pub fn exit_failure_mode(&self) {
        self.failed.store(false, Ordering::Release);
    }

    fn not_ready(&self) -> Check {
        let mut check = Check::new(key::NOT_READY, SANITIZE_IN_PROGRESS);
        check.progress = Some(self.progress.load(Ordering::Relaxed).min(0xffff) as u16);
        check
    }
}

impl Running {
    /// Records `done` of `total` bytes and, under a rate cap, waits until that much was
    /// due. The wait is capped per call so that one step never sleeps long.
    pub fn advance(&self, done: u64, total: u64) {
        let fraction = if total == 0 {
            65535
        } else {
            ((u128::from(done) * 65536) / u128::from(total)).min(65535) as u32
        };
        self.state.progress.store(fraction, Ordering::Relaxed);
        if let Some(rate) = self.state.bytes_per_second.filter(|&r| r > 0) {
            let due = Duration::from_secs_f64(done as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                std::thread::sleep(wait.min(Duration::from_secs(1)));
            }
        }
    }

    /// The whole medium is done: the operation ends without failure.
    pub fn complete(mut self) {
        self.completed = true;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.state.progress.store(0, Ordering::Relaxed);
        self.state.failed.store(!self.completed, Ordering::Release);
        self.state.running.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn while_running_medium_access_is_not_ready_with_progress_and_inquiry_passes() {
        let state = Arc::new(Sanitizing::default());
        assert!(state
            .refuses(&[op::TEST_UNIT_READY, 0, 0, 0, 0, 0])
            .is_none());
        let running = state.begin().unwrap();
        running.advance(1 << 20, 4 << 20);
        let check = state
            .refuses(&[op::TEST_UNIT_READY, 0, 0, 0, 0, 0])
            .unwrap();
        assert_eq!(
            (check.key, check.asc),
            (key::NOT_READY, SANITIZE_IN_PROGRESS)
        );
        let sense = check.to_fixed_sense();
        assert_eq!(sense[15], 0x80, "SKSV: the progress indication is valid");
        assert_eq!(
            u16::from_be_bytes([sense[16], sense[17]]),
            16384,
            "a quarter done"
        );
        assert!(state.refuses(&[op::INQUIRY, 0, 0, 0, 36, 0]).is_none());
        assert!(state.refuses(&[op::READ_16; 16]).is_some());
        assert!(state.begin().is_err(), "one operation at a time");
        running.complete();
        assert!(state.condition().is_none());
        assert!(state.refuses(&[op::READ_16; 16]).is_none());
    }

    #[test]
    fn a_rate_cap_stretches_the_operation() {
        let state = Arc::new(Sanitizing::with_rate(Some(10 << 20)));
        let started = Instant::now();
        let running = state.begin().unwrap();
        running.advance(2 << 20, 2 << 20);
        // 2 MiB at 10 MiB/s: about 200 ms; measured from the start, generous bound below.
        assert!(started.elapsed() >= Duration::from_millis(190));
    }

    /// An operation that ends without completing leaves the unit in failure mode: every
    /// command but the few SBC-4 lets through (and SANITIZE) gets MEDIUM ERROR, SANITIZE
    /// COMMAND FAILED, REQUEST SENSE reports it, until EXIT FAILURE MODE or a completed
    /// SANITIZE.
    #[test]
    fn a_failed_operation_leaves_failure_mode_until_exit_or_a_completed_one() {
        let state = Arc::new(Sanitizing::default());
        drop(state.begin().unwrap());
        let check = state
            .refuses(&[op::TEST_UNIT_READY, 0, 0, 0, 0, 0])
            .unwrap();
        assert_eq!(
            (check.key, check.asc),
            (key::MEDIUM_ERROR, SANITIZE_COMMAND_FAILED)
        );
        assert!(state.refuses(&[op::READ_16; 16]).is_some());
        assert!(state.refuses(&[op::INQUIRY, 0, 0, 0, 36, 0]).is_none());
        assert!(state.refuses(&[op::SANITIZE; 10]).is_none());
        assert_eq!(
            state.condition().map(|c| c.asc),
            Some(SANITIZE_COMMAND_FAILED)
        );
        state.exit_failure_mode();
        assert!(state.condition().is_none());
        drop(state.begin().unwrap());
        assert!(state.condition().is_some(), "failed again");
        state.begin().unwrap().complete();
        assert!(state.condition().is_none(), "a completed operation ends it");
    }

    /// A fence is refused while an operation runs (with its progress); while held, no
    /// operation starts (NOT READY, OPERATION IN PROGRESS) and no second fence is given;
    /// dropped, operations start again; kept, never.
    #[test]
    fn a_fence_and_an_operation_exclude_each_other() {
        let state = Arc::new(Sanitizing::default());
        let running = state.begin().unwrap();
        running.advance(1, 4);
        assert_eq!(
            state.fence().unwrap_err(),
            FenceRefused::Running { percent_done: 25 }
        );
        running.complete();
        let fence = state.fence().unwrap();
        assert_eq!(state.fence().unwrap_err(), FenceRefused::Fenced);
        let refused = state.begin().unwrap_err();
        assert_eq!(
            (refused.key, refused.asc),
            (key::NOT_READY, OPERATION_IN_PROGRESS)
        );
        assert!(
            state.condition().is_none(),
            "a refused start leaves nothing running"
        );
        drop(fence);
        state.begin().unwrap().complete();
        state.fence().unwrap().keep();
        assert!(state.begin().is_err(), "a kept fence is never released");
    }

    /// Racing starts and fences: the winners never overlap (each, once it won, counts
    /// itself in, looks a while whether the other is in too, and counts itself out
    /// before it lets go).
    #[test]
    fn racing_starts_and_fences_never_both_win() {
        use std::sync::atomic::AtomicUsize;
        let overlap = |inside: &AtomicUsize| {
            inside.fetch_add(1, Ordering::SeqCst);
            let mut most = 0;
            for _ in 0..2000 {
                most = most.max(inside.load(Ordering::SeqCst));
                std::hint::spin_loop();
            }
            inside.fetch_sub(1, Ordering::SeqCst);
            most
        };
        for _ in 0..300 {
            let state = Arc::new(Sanitizing::default());
            let inside = Arc::new(AtomicUsize::new(0));
            let barrier = Arc::new(std::sync::Barrier::new(2));
            let (s, b, i) = (
                Arc::clone(&state),
                Arc::clone(&barrier),
                Arc::clone(&inside),
            );
            let starter = std::thread::spawn(move || {
                b.wait();
                s.begin().ok().map(|running| {
                    let most = overlap(&i);
                    running.complete();
                    most
                })
            });
            barrier.wait();
            let fenced = state.fence().ok().map(|fence| {
                let most = overlap(&inside);
                drop(fence);
                most
            });
            let started = starter.join().unwrap();
            assert!(
                started.unwrap_or(0) < 2 && fenced.unwrap_or(0) < 2,
                "a SANITIZE ran while the fence was held"
            );
            // Both may lose a race (each saw the other's flag): a refusal, never a mix.
        }
    }
}
