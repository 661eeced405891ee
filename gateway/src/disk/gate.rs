//! The write gate of a logical unit: COMPARE AND WRITE and ORWRITE (SBC-4 5.3, 5.17) run
//! their read-modify-write with no other write interleaved, while ordinary writes on
//! different cores share no lock and no counter.
//!
//! Algorithm: a distributed reader-writer gate, like the "big-reader" locks of the Linux
//! kernel (brlock) and per-CPU reader counts of `percpu_rw_semaphore`. Each thread counts
//! the ordinary writes it has in progress in its own cache line (one of [`SHARDS`], picked
//! once per thread). The exclusive side, taken rarely, raises a flag and then waits for
//! every shard to drain. An ordinary write announces itself in its shard and then looks at
//! the flag; the exclusive side raises the flag and then looks at the shards. Both use
//! sequentially consistent operations, so at least one of them sees the other (Dekker's
//! argument): a write that sees the flag withdraws and waits for the holder, and the holder
//! waits for writes that got in first. On the ordinary path the flag's cache line is only
//! read, so it stays shared by every core instead of bouncing between them.
//!
//! The shards are allocated at the first write (or the first exclusive entry), not with
//! the unit: a gateway with 65,536 bound volumes, most never written, would otherwise hold
//! 4 KiB of counters for each. Until then no write can be in progress, so there is nothing
//! to count or wait for.
//!
//! Writes a ring carries (planned by the server, finished on another turn) hold a
//! [`RingTicket`] instead of a guard: the exclusive side does not wait for them (the thread
//! running it may be the one that would complete them) but sees that some are in flight.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// Per-thread counters: more than the event loops and blocking threads of a gateway, so
/// that threads rarely share one (sharing is still correct, only slower).
const SHARDS: usize = 32;

/// One thread's counts, alone in its cache line (128 bytes: adjacent-line prefetch).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    /// Ordinary writes in progress.
    writing: AtomicUsize,
    /// Ring writes in flight.
    on_ring: AtomicUsize,
}

/// The gate (see the module documentation).
#[derive(Debug)]
pub(super) struct WriteGate {
    /// Raised while an exclusive holder runs or waits for writes to drain.
    exclusive: AtomicBool,
    /// Held by the exclusive holder: orders holders, and parks writes that find the flag up.
    holder: Mutex<()>,
    /// Allocated by the first entry of either kind (see the module documentation).
    shards: OnceLock<Box<[Shard]>>,
}

/// The shard of the calling thread.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|index| *index)
}

fn lock(mutex: &Mutex<()>) -> MutexGuard<'_, ()> {
    // The mutex guards no data, so a poisoned one still works.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl WriteGate {
    pub(super) fn new() -> WriteGate {
        WriteGate {
            exclusive: AtomicBool::new(false),
            holder: Mutex::new(()),
            shards: OnceLock::new(),
        }
    }

    /// The shards, allocated on the first call.
    fn shards(&self) -> &[Shard] {
        self.shards
            .get_or_init(|| (0..SHARDS).map(|_| Shard::default()).collect())
    }

    /// Whether the shards exist yet (no write has ever entered when they do not).
    #[cfg(test)]
    pub(super) fn allocated(&self) -> bool {
        self.shards.get().is_some()
    }

    /// Enters as an ordinary write: waits only while an exclusive holder runs.
    pub(super) fn shared(&self) -> SharedGuard<'_> {
        let writing = &self.shards()[shard_index()].writing;
        loop {
            writing.fetch_add(1, Ordering::SeqCst);
            if !self.exclusive.load(Ordering::SeqCst) {
                return SharedGuard { writing };
            }
            writing.fetch_sub(1, Ordering::SeqCst);
            // Parked until the holder is done (it holds `holder` throughout).
            drop(lock(&self.holder));
        }
    }

    /// Enters alone: no ordinary write is in progress until the guard drops.
    pub(super) fn exclusive(&self) -> ExclusiveGuard<'_> {
        let holder = lock(&self.holder);
        self.exclusive.store(true, Ordering::SeqCst);
        // Writes that got in before the flag rose finish (each is one backend call). The
        // shards are made here too if no write ever came, so a write racing with this
        // one counts in the same lines this loop reads.
        while self
            .shards()
            .iter()
            .any(|s| s.writing.load(Ordering::SeqCst) > 0)
        {
            std::thread::yield_now();
        }
        ExclusiveGuard {
            gate: self,
            _holder: holder,
        }
    }

    /// Whether a ring write holds a [`RingTicket`] (read under the exclusive guard).
    pub(super) fn ring_writes_in_flight(&self) -> bool {
        // No shards: no write was ever planned, so none is on a ring.
        self.shards
            .get()
            .is_some_and(|shards| shards.iter().any(|s| s.on_ring.load(Ordering::SeqCst) > 0))
    }
}

/// An ordinary write in progress.
#[derive(Debug)]
pub(super) struct SharedGuard<'a> {
    writing: &'a AtomicUsize,
}

impl Drop for SharedGuard<'_> {
    fn drop(&mut self) {
        self.writing.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The exclusive holder.
#[derive(Debug)]
pub(super) struct ExclusiveGuard<'a> {
    gate: &'a WriteGate,
    _holder: MutexGuard<'a, ()>,
}

impl Drop for ExclusiveGuard<'_> {
    fn drop(&mut self) {
        // Before the mutex is released (fields drop after this), so parked writes retry
        // with the flag down.
        self.gate.exclusive.store(false, Ordering::SeqCst);
    }
}

/// One ring write in flight, counted in the shard of the thread that planned it.
#[derive(Debug)]
pub(super) struct RingTicket {
    gate: Arc<WriteGate>,
    shard: usize,
}

impl RingTicket {
    /// Counts a ring write. Taken under a [`SharedGuard`], so the exclusive side either
    /// sees it or ran wholly before it.
    pub(super) fn new(gate: &Arc<WriteGate>, _entered: &SharedGuard<'_>) -> RingTicket {
        let shard = shard_index();
        gate.shards()[shard].on_ring.fetch_add(1, Ordering::SeqCst);
        RingTicket {
            gate: Arc::clone(gate),
            shard,
        }
    }
}

impl Drop for RingTicket {
    fn drop(&mut self) {
        self.gate.shards()[self.shard]
            .on_ring
            .fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exclusive_side_never_overlaps_an_ordinary_write() {
        let gate = Arc::new(WriteGate::new());
        let inside = Arc::new(AtomicUsize::new(0));
        let overlaps = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..6)
            .map(|t| {
                let (gate, inside, overlaps) = (
                    Arc::clone(&gate),
                    Arc::clone(&inside),
                    Arc::clone(&overlaps),
                );
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        if t == 0 && i % 50 == 0 {
                            let _alone = gate.exclusive();
                            if inside.load(Ordering::SeqCst) != 0 {
                                overlaps.fetch_add(1, Ordering::SeqCst);
                            }
                            inside.fetch_add(1 << 20, Ordering::SeqCst);
                            std::hint::spin_loop();
                            inside.fetch_sub(1 << 20, Ordering::SeqCst);
                        } else {
                            let _write = gate.shared();
                            if inside.fetch_add(1, Ordering::SeqCst) >= 1 << 20 {
                                overlaps.fetch_add(1, Ordering::SeqCst);
                            }
                            inside.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(overlaps.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_gate_never_entered_holds_no_shards() {
        let gate = Arc::new(WriteGate::new());
        assert!(!gate.allocated());
        assert!(!gate.ring_writes_in_flight());
        assert!(!gate.allocated(), "a look does not allocate");
        drop(gate.shared());
        assert!(gate.allocated());
        let other = WriteGate::new();
        drop(other.exclusive());
        assert!(other.allocated());
    }

    #[test]
    fn ring_tickets_are_seen_by_the_exclusive_side_until_dropped() {
        let gate = Arc::new(WriteGate::new());
        let ticket = {
            let entered = gate.shared();
            RingTicket::new(&gate, &entered)
        };
        let seen = std::thread::scope(|s| {
            s.spawn(|| gate.exclusive().gate.ring_writes_in_flight())
                .join()
                .unwrap()
        });
        assert!(seen);
        drop(ticket);
        assert!(!gate.exclusive().gate.ring_writes_in_flight());
    }
}
