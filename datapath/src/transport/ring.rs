//! The io_uring instance under the transport: flag negotiation and the submit-and-reap loop.
//!
//! Flags, in order of preference (facts measured on Linux 6.18, see `STYLE.md`):
//! - default: `SINGLE_ISSUER | DEFER_TASKRUN`. Completion work runs only when this thread
//!   enters the kernel asking for events, so the loop here always enters with
//!   `submit_and_wait` and never merely peeks at the completion queue.
//! - with [`RingConfig::sqpoll`]: `SQPOLL` (which the kernel refuses together with
//!   `DEFER_TASKRUN`).
//! - if the kernel refuses either, a plain ring, with a `tracing::warn!` naming the refusal.
//!
//! The completion queue is sized at four times the submission queue so that a burst of
//! completions (later: multishot receives) cannot overflow it.
//!
//! Every operation carries a token (`user_data`) from a per-ring counter, and the reap loop
//! matches completions by token. Today one ring serves one connection; the token scheme is
//! what lets one shard's ring serve many connections later.

use std::io;
use std::time::Duration;

use io_uring::{opcode, squeue, types, IoUring};

use super::TransportError;

/// Tokens from here up belong to an event loop driving the ring with [`Ring::push`]; the
/// synchronous calls count up from 1 and never reach them.
pub(crate) const EVENT_TOKEN_BASE: u64 = 1 << 63;

/// The longest time bound the ring accepts; longer bounds are clamped to it. One day is far
/// beyond any iSCSI timer and keeps the kernel timespec far from overflow.
pub const TIMEOUT_MAX: Duration = Duration::from_secs(24 * 60 * 60);

/// The fewest submission entries a ring is created with (an operation and its linked timeout
/// must fit at once, with room to spare).
const ENTRIES_MIN: u32 = 4;

/// The most submission entries a ring is created with (the kernel's own limit is 32768).
const ENTRIES_MAX: u32 = 4096;

/// How many times as many completion entries as submission entries the ring gets.
const CQ_PER_SQ: u32 = 4;

/// How long the kernel's `SQPOLL` thread keeps polling after the last submission.
const SQPOLL_IDLE_MS_DEFAULT: u32 = 10;

/// Knobs for the io_uring instance a connection (later: a shard) drives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingConfig {
    /// Submission queue entries; clamped to 4..=4096 (the kernel rounds up to a power of two).
    /// The completion queue gets four times as many.
    pub entries: u32,
    /// Ask for a kernel submission-polling thread (`IORING_SETUP_SQPOLL`) instead of
    /// `SINGLE_ISSUER | DEFER_TASKRUN`. It costs a kernel thread spinning while busy.
    pub sqpoll: bool,
    /// Idle time in milliseconds before the `SQPOLL` thread sleeps; ignored without `sqpoll`.
    pub sqpoll_idle_ms: u32,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            entries: 8,
            sqpoll: false,
            sqpoll_idle_ms: SQPOLL_IDLE_MS_DEFAULT,
        }
    }
}

/// How an operation submitted with a linked timeout ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkedOutcome {
    /// The operation completed with this result (bytes or a negative errno), even if the
    /// timer fired at the same moment: a result that carries data always wins.
    Completed(i32),
    /// The timer fired and the operation was cancelled before it did anything it reports.
    TimedOut,
}

/// One completion as an event loop sees it: the operation's token, its result (bytes or
/// a negative errno) and the completion flags (`IORING_CQE_F_MORE`, `..._F_NOTIF`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Completion {
    pub token: u64,
    pub result: i32,
    pub flags: u32,
}

/// The setup flags an io_uring is asked for first ([`build_ring`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingFlags {
    /// `SINGLE_ISSUER | DEFER_TASKRUN`, with `TASKRUN_FLAG` when `taskrun_flag`: one thread
    /// submits and reaps, and completion work runs only when it enters the kernel. The
    /// issuer is the thread that builds the ring, or, with `issuer_enables`, the ring starts
    /// disabled (`R_DISABLED`) and the issuer is the thread that enables it
    /// (`register_enable_rings`): a ring set up on one thread and driven on another.
    SingleIssuer {
        taskrun_flag: bool,
        issuer_enables: bool,
    },
    /// `SQPOLL`: a kernel thread polls the submission queue, sleeping after `idle_ms`
    /// without work, pinned to `cpu` when given.
    Sqpoll { idle_ms: u32, cpu: Option<u32> },
    /// Nothing more than the plain ring.
    Plain,
}

impl RingFlags {
    fn name(self) -> &'static str {
        match self {
            RingFlags::SingleIssuer { .. } => "single_issuer+defer_taskrun",
            RingFlags::Sqpoll { .. } => "sqpoll",
            RingFlags::Plain => "plain",
        }
    }
}

/// What [`build_ring`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingSetup {
    /// Submission queue entries (the kernel rounds up to a power of two).
    pub entries: u32,
    /// Completion queue entries.
    pub cq_entries: u32,
    /// The flags asked for first.
    pub preferred: RingFlags,
    /// `COOP_TASKRUN` on the plain ring: completions wait for the next kernel entry
    /// instead of interrupting the thread.
    pub coop_taskrun: bool,
    /// `IOPOLL`, on the preferred ring and the plain one alike: completions are polled for
    /// by the thread that enters the ring (polled block I/O; other files fail each I/O).
    pub iopoll: bool,
}

/// A ring [`build_ring`] made, and what the kernel granted.
pub struct BuiltRing {
    pub ring: IoUring,
    /// Whether the preferred flags were granted (always, for [`RingFlags::Plain`]).
    pub preferred_granted: bool,
    /// `single_issuer+defer_taskrun`, `sqpoll`, `plain`, or `plain (refused ...: reason)`.
    pub description: String,
}

/// The one ring builder of the workspace: a ring with `setup.preferred`, or, when the kernel
/// refuses those flags, a plain ring (with a `tracing::warn!` naming the refusal). An error
/// only when the plain ring is refused too.
pub fn build_ring(setup: &RingSetup) -> io::Result<BuiltRing> {
    let name = setup.preferred.name();
    let plain = || {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(setup.cq_entries);
        if setup.coop_taskrun {
            builder.setup_coop_taskrun();
        }
        if setup.iopoll {
            builder.setup_iopoll();
        }
        builder.build(setup.entries)
    };
    let preferred = match setup.preferred {
        RingFlags::Plain => {
            return Ok(BuiltRing {
                ring: plain()?,
                preferred_granted: true,
                description: name.to_string(),
            })
        }
        RingFlags::SingleIssuer {
            taskrun_flag,
            issuer_enables,
        } => {
            let mut builder = IoUring::builder();
            builder
                .setup_single_issuer()
                .setup_defer_taskrun()
                .setup_cqsize(setup.cq_entries);
            if taskrun_flag {
                builder.setup_taskrun_flag();
            }
            if issuer_enables {
                builder.setup_r_disabled();
            }
            if setup.iopoll {
                builder.setup_iopoll();
            }
            builder.build(setup.entries)
        }
        RingFlags::Sqpoll { idle_ms, cpu } => {
            let mut builder = IoUring::builder();
            builder.setup_sqpoll(idle_ms).setup_cqsize(setup.cq_entries);
            if let Some(cpu) = cpu {
                builder.setup_sqpoll_cpu(cpu);
            }
            if setup.iopoll {
                builder.setup_iopoll();
            }
            builder.build(setup.entries)
        }
    };
    match preferred {
        Ok(ring) => Ok(BuiltRing {
            ring,
            preferred_granted: true,
            description: name.to_string(),
        }),
        Err(refusal) => {
            tracing::warn!(
                flags = name,
                error = %refusal,
                "io_uring refused the preferred setup flags; falling back to a plain ring"
            );
            Ok(BuiltRing {
                ring: plain()?,
                preferred_granted: false,
                description: format!("plain (refused {name}: {refusal})"),
            })
        }
    }
}

/// One io_uring instance and the flags it was created with.
pub(crate) struct Ring {
    ring: IoUring,
    flags_description: String,
    next_token: u64,
    /// Set when the ring failed in a way that leaves queued entries unsubmitted; the ring is
    /// never entered again, so those entries can never reach the kernel.
    poisoned: bool,
    /// Times this ring entered the kernel (`io_uring_enter`), for per-I/O cost accounting.
    kernel_entries: u64,
}

impl Ring {
    /// Creates a ring with the preferred flags, falling back to a plain ring if refused.
    pub fn new(config: &RingConfig) -> Result<Ring, TransportError> {
        let entries = config.entries.clamp(ENTRIES_MIN, ENTRIES_MAX);
        let preferred = if config.sqpoll {
            RingFlags::Sqpoll {
                idle_ms: config.sqpoll_idle_ms,
                cpu: None,
            }
        } else {
            // The task-run flag lets an event loop see, without entering the kernel, that
            // deferred completion work is waiting (`Ring::enter` then enters for it).
            RingFlags::SingleIssuer {
                taskrun_flag: true,
                issuer_enables: false,
            }
        };
        let built = build_ring(&RingSetup {
            entries,
            cq_entries: entries * CQ_PER_SQ,
            preferred,
            coop_taskrun: false,
            iopoll: false,
        })
        .map_err(TransportError::RingSetup)?;
        let (ring, flags_description) = (built.ring, built.description);

        Ok(Ring {
            ring,
            flags_description,
            next_token: 1,
            poisoned: false,
            kernel_entries: 0,
        })
    }

    /// The setup flags the kernel granted, for diagnostics: `single_issuer+defer_taskrun`,
    /// `sqpoll`, or `plain (refused ...: reason)`.
    pub fn flags_description(&self) -> &str {
        &self.flags_description
    }

    /// How many times this ring has entered the kernel so far.
    pub fn kernel_entries(&self) -> u64 {
        self.kernel_entries
    }

    fn take_token(&mut self) -> u64 {
        let token = self.next_token;
        // Zero is never used so that a zeroed completion can never match.
        self.next_token = self.next_token.wrapping_add(1).max(1);
        token
    }

    /// Submits `op` linked to a timeout of `timeout` and waits until the kernel is done with
    /// it: both completions are reaped before returning.
    ///
    /// # Safety
    /// Every pointer in `op` (buffers, `msghdr`, iovecs, socket address) must stay valid, and
    /// memory the kernel may write must not be accessed otherwise, until this call returns.
    /// This call returns only after the kernel has posted the operation's completion, with
    /// one exception: it aborts the process if the ring fails unrecoverably while the
    /// operation is in flight, because returning then could let the kernel write freed memory.
    pub unsafe fn run_with_link_timeout(
        &mut self,
        op: squeue::Entry,
        timeout: Duration,
    ) -> io::Result<LinkedOutcome> {
        let timespec = types::Timespec::from(timeout.min(TIMEOUT_MAX));
        let op_token = self.take_token();
        let timeout_token = self.take_token();
        let entries = [
            op.flags(squeue::Flags::IO_LINK).user_data(op_token),
            opcode::LinkTimeout::new(&timespec)
                .build()
                .user_data(timeout_token),
        ];
        // SAFETY: the caller vouches for `op`'s pointers until we return; `timespec` lives on
        // this frame until we return, and we return only after both completions are reaped.
        unsafe { self.push_all(&entries)? };

        // When the timer fires the kernel cancels the operation, which then completes with
        // -ECANCELED; if it was already finishing, its own completion follows. Either way its
        // completion always comes, and nothing here returns before it has.
        let mut results = [(op_token, None), (timeout_token, None)];
        let (op_result, timeout_result) = loop {
            self.enter_and_reap(&mut results)?;
            if let [(_, Some(op_result)), (_, Some(timeout_result))] = results {
                break (op_result, timeout_result);
            }
        };

        Ok(linked_outcome(op_result, timeout_result))
    }

    /// Submits two operations, each linked to its own timeout, in one kernel entry, and
    /// waits until the kernel is done with both (all four completions reaped). The two are
    /// independent: neither waits for the other (a send and a receive on one socket).
    ///
    /// # Safety
    /// As for [`Ring::run_with_link_timeout`], for both operations.
    pub unsafe fn run_pair_with_link_timeouts(
        &mut self,
        first: (squeue::Entry, Duration),
        second: (squeue::Entry, Duration),
    ) -> io::Result<(LinkedOutcome, LinkedOutcome)> {
        let first_timespec = types::Timespec::from(first.1.min(TIMEOUT_MAX));
        let second_timespec = types::Timespec::from(second.1.min(TIMEOUT_MAX));
        let tokens = [(); 4].map(|()| self.take_token());
        let entries = [
            first.0.flags(squeue::Flags::IO_LINK).user_data(tokens[0]),
            opcode::LinkTimeout::new(&first_timespec)
                .build()
                .user_data(tokens[1]),
            second.0.flags(squeue::Flags::IO_LINK).user_data(tokens[2]),
            opcode::LinkTimeout::new(&second_timespec)
                .build()
                .user_data(tokens[3]),
        ];
        // SAFETY: the caller vouches for both operations' pointers until we return; the
        // timespecs live on this frame until we return, and we return only after all four
        // completions are reaped.
        unsafe { self.push_all(&entries)? };
        let mut results = tokens.map(|token| (token, None));
        let [a, at, b, bt] = loop {
            self.enter_and_reap(&mut results)?;
            if let [(_, Some(a)), (_, Some(at)), (_, Some(b)), (_, Some(bt))] = results {
                break [a, at, b, bt];
            }
        };
        Ok((linked_outcome(a, at), linked_outcome(b, bt)))
    }

    /// Submits `entries` as one batch (the caller sets any link flags) and waits for all of
    /// their completions; returns their results in order.
    ///
    /// # Safety
    /// As for [`Ring::run_with_link_timeout`], for every entry.
    pub unsafe fn run_batch<const N: usize>(
        &mut self,
        entries: [squeue::Entry; N],
    ) -> io::Result<[i32; N]> {
        let mut results = [(0u64, None); N];
        let mut tagged = entries;
        for (entry, slot) in tagged.iter_mut().zip(results.iter_mut()) {
            let token = self.take_token();
            entry.set_user_data(token);
            slot.0 = token;
        }
        // SAFETY: the caller vouches for the entries' pointers until we return, and we return
        // only after every completion is reaped.
        unsafe { self.push_all(&tagged)? };
        while results.iter().any(|(_, result)| result.is_none()) {
            self.enter_and_reap(&mut results)?;
        }
        Ok(results.map(|(_, result)| result.unwrap_or(-libc::ECANCELED)))
    }

    /// Event-loop use (the shard): queues one entry, tagged by the caller, without
    /// submitting it. Tokens at or above [`EVENT_TOKEN_BASE`] are the caller's; the
    /// synchronous calls above never use them.
    ///
    /// # Safety
    /// Every pointer in `entry` must stay valid, and memory the kernel may write must not
    /// be accessed otherwise, until the entry's completion has been reaped.
    pub unsafe fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe { self.push_all(std::slice::from_ref(&entry)) }
    }

    /// Event-loop use: whether entering the kernel now would do anything without waiting
    /// (entries queued, deferred completion work pending, completions backed up).
    pub fn has_work_for_kernel(&mut self) -> bool {
        let sq = self.ring.submission();
        !sq.is_empty() || sq.taskrun() || sq.cq_overflow()
    }

    /// Event-loop use: whether a completion is ready to reap, or deferred completion work
    /// waits for an entry to run it. Reads shared memory only (no system call), so a loop
    /// may poll it.
    pub fn completion_pending(&mut self) -> bool {
        if self.ring.submission().taskrun() {
            return true;
        }
        !self.ring.completion().is_empty()
    }

    /// Event-loop use: submits what is queued and waits until at least `want` completions
    /// are ready or `timeout` has passed (the kernel's own timer on the wait, no timeout
    /// entry on the ring). Running out of time, a signal or a busy kernel are not errors:
    /// the caller reaps what there is and decides.
    pub fn enter(&mut self, want: usize, timeout: Option<Duration>) -> io::Result<()> {
        if self.poisoned {
            return Err(io::Error::other(
                "io_uring instance poisoned by an earlier failure",
            ));
        }
        self.kernel_entries += 1;
        let submitter = self.ring.submitter();
        let result = match timeout {
            Some(timeout) if want > 0 => {
                let timespec = types::Timespec::from(timeout.min(TIMEOUT_MAX));
                let args = types::SubmitArgs::new().timespec(&timespec);
                submitter.submit_with_args(want, &args)
            }
            _ => submitter.submit_and_wait(want),
        };
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Event-loop use: moves every ready completion into `out` (appended).
    pub fn reap(&mut self, out: &mut Vec<Completion>) {
        for cqe in self.ring.completion() {
            out.push(Completion {
                token: cqe.user_data(),
                result: cqe.result(),
                flags: cqe.flags(),
            });
        }
    }

    /// Registers memory as the fixed buffers `0..` of this ring: operations then name a
    /// buffer by index and the kernel maps its pages once instead of at every operation.
    ///
    /// # Safety
    /// Every region must stay allocated, and must not move, for as long as this ring lives
    /// (the kernel holds the pages until the ring is dropped).
    pub unsafe fn register_buffers(&mut self, regions: &[libc::iovec]) -> io::Result<()> {
        // SAFETY: the caller keeps the regions alive and in place for the ring's lifetime.
        unsafe { self.ring.submitter().register_buffers(regions) }
    }

    /// Registers `fds` as the fixed files `0..` of this ring (operations then name them by
    /// index and the kernel skips the file lookup on each one).
    pub fn register_files(&mut self, fds: &[std::os::fd::RawFd]) -> io::Result<()> {
        self.ring.submitter().register_files(fds)
    }

    /// Has the kernel signal `fd` (an eventfd) whenever this ring gets completion work,
    /// deferred task work included (`IORING_REGISTER_EVENTFD`).
    pub fn register_eventfd(&mut self, fd: std::os::fd::RawFd) -> io::Result<()> {
        self.ring.submitter().register_eventfd(fd)
    }

    /// Turns on the ring's NAPI busy polling for `busy_poll_us` (Linux 6.9 and later).
    pub fn register_napi_busy_poll(&mut self, busy_poll_us: u32) -> io::Result<()> {
        let mut napi = types::Napi::new()
            .set_busy_poll_timeout(busy_poll_us)
            .set_prefer_busy_poll(true);
        self.ring.submitter().register_napi(&mut napi)
    }

    /// Queues all of `entries` or none of them (event-loop use too: linked entries that
    /// must reach the kernel in one submission).
    ///
    /// # Safety
    /// The entries' pointers must stay valid until their completions are reaped.
    pub(crate) unsafe fn push_all(&mut self, entries: &[squeue::Entry]) -> io::Result<()> {
        if self.poisoned {
            return Err(io::Error::other(
                "io_uring instance poisoned by an earlier failure",
            ));
        }
        let mut sq = self.ring.submission();
        // SAFETY: forwarded to the caller.
        unsafe { sq.push_multiple(entries) }
            .map_err(|_| io::Error::new(io::ErrorKind::WouldBlock, "submission queue full"))
    }

    /// Submits what is queued, waits until every outstanding completion has arrived (so an
    /// operation and its linked timeout normally cost one kernel entry; a signal can end the
    /// wait early, and the caller then enters again), and files every completion
    /// under its token. An error is returned only when nothing of ours is in flight.
    fn enter_and_reap(&mut self, results: &mut [(u64, Option<i32>)]) -> io::Result<()> {
        let queued_before = self.ring.submission().len();
        let outstanding = results.iter().filter(|(_, r)| r.is_none()).count();
        self.kernel_entries += 1;
        match self.ring.submitter().submit_and_wait(outstanding.max(1)) {
            Ok(_) => {}
            // Interrupted by a signal, or the kernel is short of memory or has completions
            // backed up: nothing is lost, enter again (after reaping below).
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY)
                ) => {}
            Err(e) => {
                let nothing_in_flight = results.iter().all(|(_, r)| r.is_none())
                    && queued_before == self.ring.submission().len()
                    && queued_before == results.len();
                if nothing_in_flight {
                    // The entries are still queued and must never be submitted now that the
                    // caller's buffers go out of scope: retire the ring.
                    self.poisoned = true;
                    return Err(e);
                }
                tracing::error!(
                    error = %e,
                    "io_uring_enter failed with operations in flight; aborting rather than \
                     letting the kernel write into freed buffers"
                );
                std::process::abort();
            }
        }
        for cqe in self.ring.completion() {
            let token = cqe.user_data();
            if let Some(slot) = results.iter_mut().find(|(t, _)| *t == token) {
                slot.1 = Some(cqe.result());
            } else {
                // Cannot happen while one connection owns the ring and reaps everything it
                // submits; log rather than lose track of it once rings are shared.
                tracing::warn!(
                    token,
                    result = cqe.result(),
                    "completion for an unknown token"
                );
            }
        }
        Ok(())
    }
}

/// How an operation linked to a timeout ended, from the two completions' results.
fn linked_outcome(op_result: i32, timeout_result: i32) -> LinkedOutcome {
    let cancelled = op_result == -libc::ECANCELED || op_result == -libc::EINTR;
    // A linked timeout completes with -ECANCELED when the operation finished first.
    let timer_fired = timeout_result != -libc::ECANCELED;
    if cancelled && timer_fired {
        LinkedOutcome::TimedOut
    } else {
        LinkedOutcome::Completed(op_result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(preferred: RingFlags) -> RingSetup {
        RingSetup {
            entries: 8,
            cq_entries: 32,
            preferred,
            coop_taskrun: true,
            iopoll: false,
        }
    }

    #[test]
    fn the_ring_builder_grants_or_falls_back_to_a_plain_ring() {
        let plain = build_ring(&setup(RingFlags::Plain)).unwrap();
        assert!(plain.preferred_granted);
        assert_eq!(plain.description, "plain");
        assert_eq!(plain.ring.params().cq_entries(), 32);
        // SQPOLL pinned to a CPU that does not exist: refused, so a plain ring instead.
        let refused = build_ring(&setup(RingFlags::Sqpoll {
            idle_ms: 10,
            cpu: Some(65_000),
        }))
        .unwrap();
        assert!(!refused.preferred_granted);
        assert!(
            refused.description.starts_with("plain (refused sqpoll: "),
            "{}",
            refused.description
        );
        assert!(!refused.ring.params().is_setup_sqpoll());
        // The flags this project's loops ask for: granted on the kernels it runs on, or
        // (an older kernel) a plain ring that says why.
        let single = build_ring(&setup(RingFlags::SingleIssuer {
            taskrun_flag: true,
            issuer_enables: false,
        }))
        .unwrap();
        assert!(
            single.preferred_granted == (single.description == "single_issuer+defer_taskrun"),
            "{}",
            single.description
        );
    }
}
