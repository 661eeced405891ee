//! The fence between commands admitted under one reservation epoch and a change that must
//! not return before they are done (PREEMPT AND ABORT: "none of the victim's commands
//! writes afterwards").
//!
//! Algorithm: epoch-parity counting as in sleepable RCU (SRCU). Each thread counts the
//! commands it admitted in its own cache line (one of [`SHARDS`]), in the counter of the
//! epoch's parity. An entrant increments its counter and then re-reads the epoch; the
//! updater advances the epoch and then waits for the old parity's counters to drain. Both
//! use sequentially consistent operations, so either the updater sees the entrant's count
//! or the entrant sees the new epoch and retries (Dekker's argument, as in `disk::gate`).
//! The entrant's path writes only its own line and reads the epoch's, which stays shared.
//!
//! The counters (32 lines of 128 bytes) are allocated at the first command admitted, not
//! with the unit: 65,536 bound volumes that see no I/O would otherwise hold 8 KiB of them
//! each. Before that nothing was admitted, so a drain has nothing to wait for; a drain
//! allocates them too, so an entrant racing with it counts where the drain looks.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Per-thread counters; threads beyond this share, which is correct, only slower.
const SHARDS: usize = 32;

#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    admitted: [AtomicUsize; 2],
}

#[derive(Debug)]
pub(super) struct Fence {
    epoch: AtomicU64,
    /// Allocated by the first [`Fence::enter`] or [`Fence::drain`].
    shards: OnceLock<Box<[Shard]>>,
}

fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|index| *index)
}

/// A command admitted under an epoch; dropping it (or [`Fence::leave`]) ends it.
#[derive(Debug)]
pub(super) struct Ticket {
    pub(super) epoch: u64,
    pub(super) shard: usize,
}

impl Fence {
    pub(super) fn new() -> Fence {
        // Each fence starts its epochs in a range of its own, so a connection's cached view
        // of one unit can never match a later unit put under the same LUN number.
        static NEXT_BASE: AtomicU64 = AtomicU64::new(0);
        Fence {
            epoch: AtomicU64::new(NEXT_BASE.fetch_add(1 << 32, Ordering::Relaxed)),
            shards: OnceLock::new(),
        }
    }

    /// The counters, allocated on the first call.
    fn shards(&self) -> &[Shard] {
        self.shards
            .get_or_init(|| (0..SHARDS).map(|_| Shard::default()).collect())
    }

    /// Whether the counters exist yet (for tests of the memory a unit holds).
    #[cfg(test)]
    pub(super) fn allocated(&self) -> bool {
        self.shards.get().is_some()
    }

    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Admits a command under the current epoch.
    pub(super) fn enter(&self) -> Ticket {
        let shard = shard_index();
        let shards = self.shards();
        loop {
            let epoch = self.epoch.load(Ordering::SeqCst);
            let counter = &shards[shard].admitted[(epoch & 1) as usize];
            counter.fetch_add(1, Ordering::SeqCst);
            if self.epoch.load(Ordering::SeqCst) == epoch {
                return Ticket { epoch, shard };
            }
            counter.fetch_sub(1, Ordering::SeqCst);
        }
    }

    pub(super) fn leave(&self, ticket: &Ticket) {
        self.shards()[ticket.shard].admitted[(ticket.epoch & 1) as usize]
            .fetch_sub(1, Ordering::SeqCst);
    }

    /// Starts a new epoch (called with the state's mutex held); returns the old one.
    pub(super) fn advance(&self) -> u64 {
        self.epoch.fetch_add(1, Ordering::SeqCst)
    }

    /// Waits until no command admitted under `old`'s parity is left, at most `limit`.
    /// Commands admitted later under the same parity (two epochs on) are waited for too,
    /// which only lengthens the wait. Returns whether they drained.
    pub(super) fn drain(&self, old: u64, limit: Duration) -> bool {
        let parity = (old & 1) as usize;
        let started = Instant::now();
        let mut spins = 0u32;
        let shards = self.shards();
        while shards
            .iter()
            .any(|s| s.admitted[parity].load(Ordering::SeqCst) > 0)
        {
            if started.elapsed() > limit {
                return false;
            }
            spins += 1;
            if spins < 64 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        true
    }
}

/// A ticket that outlives the call that admitted its command (file I/O on a ring, a job on
/// the blocking pool): it holds its unit so the fence stays alive.
pub struct OwnedTicket {
    pub(super) unit: std::sync::Arc<crate::disk::LogicalUnit>,
    pub(super) ticket: Ticket,
}

impl std::fmt::Debug for OwnedTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedTicket")
            .field("epoch", &self.ticket.epoch)
            .finish()
    }
}

impl Drop for OwnedTicket {
    fn drop(&mut self) {
        self.unit.reservations().fence().leave(&self.ticket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[test]
    fn a_drain_waits_for_every_command_of_the_old_epoch_and_no_newer_one_is_missed() {
        let fence = Arc::new(Fence::new());
        let first = fence.epoch();
        let stop = Arc::new(AtomicBool::new(false));
        // Each worker records the epoch it was admitted under while inside.
        let inside_old = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let (fence, stop, inside_old) = (
                    Arc::clone(&fence),
                    Arc::clone(&stop),
                    Arc::clone(&inside_old),
                );
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let ticket = fence.enter();
                        if ticket.epoch == first {
                            inside_old.fetch_add(1, Ordering::SeqCst);
                            std::hint::spin_loop();
                            inside_old.fetch_sub(1, Ordering::SeqCst);
                        }
                        fence.leave(&ticket);
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        let old = fence.advance();
        assert!(fence.drain(old, Duration::from_secs(10)));
        // After the drain nothing admitted under the first epoch is inside, and nothing new
        // can be.
        assert_eq!(inside_old.load(Ordering::SeqCst), 0);
        stop.store(true, Ordering::Relaxed);
        for worker in workers {
            worker.join().unwrap();
        }
    }

    #[test]
    fn a_fence_allocates_its_counters_at_the_first_command() {
        let fence = Fence::new();
        assert!(!fence.allocated());
        let ticket = fence.enter();
        assert!(fence.allocated());
        fence.leave(&ticket);
        let idle = Fence::new();
        let old = idle.advance();
        assert!(idle.drain(old, Duration::from_millis(20)));
    }

    #[test]
    fn a_drain_gives_up_at_its_limit_while_a_command_stays() {
        let fence = Fence::new();
        let ticket = fence.enter();
        let old = fence.advance();
        assert!(!fence.drain(old, Duration::from_millis(20)));
        fence.leave(&ticket);
        assert!(fence.drain(old, Duration::from_millis(20)));
    }
}
