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
}

/// Ends the operation when dropped: completed when [`Running::complete`] was called,
/// failed otherwise (an error, or a panic). Owns its state, so an operation started with
/// IMMED set runs on a thread of its own, past the command that started it.
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
    pub fn begin(self: &Arc<Self>) -> Result<Running, Check> {
        if self.running.swap(true, Ordering::AcqRel) {
            return Err(self.not_ready());
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
        self.state.running.store(false, Ordering::Release);
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
}
