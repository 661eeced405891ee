//! Queue rings with doorbells: the only meeting point of a host path and an adapter.
//!
//! The model is the one NVMe, virtio and the iSCSI HBAs of open-iscsi share: a bounded ring
//! of entries per direction and a doorbell per ring. The producer writes entries into free
//! slots, then rings the doorbell with the index one past the last entry it publishes ("new
//! entries up to N"); the consumer takes entries only below the doorbell it was given, and
//! its own consumer index tells the producer which slots (and which host memory the entries
//! named) are free again. An entry written but not yet announced is not the consumer's to
//! read: a queue reset discards it.
//!
//! Built from a `crossbeam_channel` bounded array queue (lock-free for `try_send` and
//! `try_recv`) for the slots, atomics for the producer, doorbell and consumer indices, and an
//! eventfd per consuming thread ([`Notifier`], over the workspace's one
//! [`EventFd`](crate::sys::EventFd)) to sleep on. The producer writes the eventfd
//! only when the consumer said it is going to sleep, in the manner of io_uring's
//! `IORING_SQ_NEED_WAKEUP`: a busy consumer costs the producer no system call. A full ring
//! hands the entry back (`Err(RingFull(entry))`), never grows.
//!
//! Waking works on Dekker's pattern with sequentially consistent atomics: the consumer
//! stores "sleeping", then re-reads every doorbell before it sleeps; the producer stores the
//! doorbell, then reads "sleeping". At least one of them sees the other's store.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};

use crate::sys::EventFd;

/// A full ring (or one whose other end is gone) hands the entry back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ring full: entry handed back")]
pub struct RingFull<T>(pub T);

/// The wake-up of one consuming thread: an eventfd and a "going to sleep" flag. Several
/// rings consumed by the same thread share one notifier, so the thread sleeps on all of
/// them at once; a shard can also add [`Notifier::as_raw_fd`] to its io_uring.
#[derive(Debug)]
pub struct Notifier {
    eventfd: EventFd,
    sleeping: AtomicBool,
    wakeups: AtomicU64,
}

impl Notifier {
    /// A new notifier.
    ///
    /// # Panics
    /// When the kernel refuses an eventfd (out of file descriptors): a resource limit of
    /// the process, not input from outside.
    pub fn new() -> Arc<Notifier> {
        let eventfd = EventFd::new().unwrap_or_else(|e| panic!("eventfd: {e}"));
        Arc::new(Notifier {
            eventfd,
            sleeping: AtomicBool::new(false),
            wakeups: AtomicU64::new(0),
        })
    }

    /// Wakes the consumer if it said it sleeps (or is about to).
    pub fn notify(&self) {
        if self.sleeping.swap(false, Ordering::SeqCst) {
            self.wake();
        }
    }

    /// Wakes the consumer unconditionally (control plane: stop, reset).
    pub fn wake(&self) {
        self.wakeups.fetch_add(1, Ordering::Relaxed);
        self.eventfd.signal();
    }

    /// Sleeps until `ready()` holds, a wake-up comes, or `timeout` passes. Returns
    /// `ready()` as last seen. `ready` must read the doorbells this thread consumes.
    pub fn wait_until(&self, timeout: Duration, ready: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if ready() {
                return true;
            }
            self.sleeping.store(true, Ordering::SeqCst);
            if ready() {
                self.sleeping.store(false, Ordering::SeqCst);
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                self.sleeping.store(false, Ordering::SeqCst);
                return false;
            }
            let woken = self.eventfd.wait(deadline - now);
            self.sleeping.store(false, Ordering::SeqCst);
            if woken {
                // One wake-up per call: the caller re-checks its own state (stop flags).
                return ready();
            }
        }
    }

    /// [`Notifier::wait_until`] on two notifiers at once: a shard whose callers wake one
    /// (the queue pair it started on) while its adapter's completions wake another (the
    /// queue pair a move logged in on).
    pub fn wait_until_either(
        &self,
        other: &Notifier,
        timeout: Duration,
        ready: impl Fn() -> bool,
    ) -> bool {
        if std::ptr::eq(self, other) {
            return self.wait_until(timeout, ready);
        }
        let deadline = Instant::now() + timeout;
        let sleeping = |on: bool| {
            self.sleeping.store(on, Ordering::SeqCst);
            other.sleeping.store(on, Ordering::SeqCst);
        };
        if ready() {
            return true;
        }
        sleeping(true);
        if ready() {
            sleeping(false);
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let woken = !left.is_zero()
            && crate::sys::EventFd::wait_any(&[&self.eventfd, &other.eventfd], left);
        sleeping(false);
        woken && ready()
    }

    /// [`Notifier::wait_until`] on many notifiers and eventfds at once: a multipath shard
    /// over adapters sleeps so on every sub-path's queue pairs and its callers' doorbell
    /// (`others`), where it used to wake every 200 µs to look at the sub-paths it did not
    /// sleep on. Returns `(ready() as last seen, every one watched)`: beyond
    /// [`EventFd::WAIT_ANY_MAX`] descriptors the rest are not, and the caller bounds its
    /// sleep instead.
    pub fn wait_any(
        notifiers: &[&Notifier],
        others: &[&crate::sys::EventFd],
        timeout: Duration,
        ready: impl Fn() -> bool,
    ) -> (bool, bool) {
        let mut fds: Vec<&crate::sys::EventFd> = Vec::with_capacity(notifiers.len() + others.len());
        for notifier in notifiers {
            if !fds.iter().any(|fd| std::ptr::eq(*fd, &notifier.eventfd)) {
                fds.push(&notifier.eventfd);
            }
        }
        fds.extend_from_slice(others);
        let all_watched = fds.len() <= crate::sys::EventFd::WAIT_ANY_MAX;
        if ready() {
            return (true, all_watched);
        }
        let sleeping = |on: bool| {
            for notifier in notifiers {
                notifier.sleeping.store(on, Ordering::SeqCst);
            }
        };
        sleeping(true);
        if ready() {
            sleeping(false);
            return (true, all_watched);
        }
        let woken = !timeout.is_zero() && crate::sys::EventFd::wait_any(&fds, timeout);
        sleeping(false);
        (woken && ready(), all_watched)
    }

    /// Times the eventfd was written (system calls spent on waking).
    pub fn wakeups(&self) -> u64 {
        self.wakeups.load(Ordering::Relaxed)
    }
}

impl AsRawFd for Notifier {
    fn as_raw_fd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }
}

/// The indices both ends of one ring share.
#[derive(Debug)]
struct Indices {
    capacity: usize,
    /// Entries written into the ring (announced or not).
    posted: AtomicU64,
    /// The doorbell: entries up to this index are the consumer's.
    doorbell: AtomicU64,
    /// Entries the consumer has taken (its head: slots below it are free).
    consumed: AtomicU64,
    /// Entries the consumer is finished with: host memory they named is free again.
    retired: AtomicU64,
}

/// Creates a ring of `capacity` entries (at least 1) whose consumer sleeps on `consumer`.
pub fn ring<T>(capacity: usize, consumer: Arc<Notifier>) -> (Producer<T>, Consumer<T>) {
    let capacity = capacity.max(1);
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    let indices = Arc::new(Indices {
        capacity,
        posted: AtomicU64::new(0),
        doorbell: AtomicU64::new(0),
        consumed: AtomicU64::new(0),
        retired: AtomicU64::new(0),
    });
    (
        Producer {
            tx,
            indices: indices.clone(),
            notifier: consumer.clone(),
        },
        Consumer {
            rx,
            indices,
            notifier: consumer,
        },
    )
}

/// The writing end of a ring. Cloneable: several engines of one adapter may post
/// completions; each post takes the next index.
#[derive(Debug)]
pub struct Producer<T> {
    tx: Sender<T>,
    indices: Arc<Indices>,
    notifier: Arc<Notifier>,
}

impl<T> Clone for Producer<T> {
    fn clone(&self) -> Self {
        Producer {
            tx: self.tx.clone(),
            indices: self.indices.clone(),
            notifier: self.notifier.clone(),
        }
    }
}

impl<T> Producer<T> {
    /// Writes an entry into a free slot without announcing it; returns its index. A full
    /// ring hands the entry back.
    pub fn post(&self, entry: T) -> Result<u64, RingFull<T>> {
        match self.tx.try_send(entry) {
            Ok(()) => Ok(self.indices.posted.fetch_add(1, Ordering::SeqCst)),
            Err(TrySendError::Full(entry) | TrySendError::Disconnected(entry)) => {
                Err(RingFull(entry))
            }
        }
    }

    /// Announces every entry posted so far ("new entries up to N") and wakes the consumer
    /// if it sleeps. Returns N.
    pub fn ring_doorbell(&self) -> u64 {
        let posted = self.indices.posted.load(Ordering::SeqCst);
        self.indices.doorbell.fetch_max(posted, Ordering::SeqCst);
        self.notifier.notify();
        posted
    }

    /// Posts one entry and rings the doorbell for it.
    pub fn push(&self, entry: T) -> Result<u64, RingFull<T>> {
        let index = self.post(entry)?;
        self.ring_doorbell();
        Ok(index)
    }

    /// Entries the consumer has taken: every slot below this index is free again.
    pub fn consumed(&self) -> u64 {
        self.indices.consumed.load(Ordering::SeqCst)
    }

    /// Entries the consumer is finished with: host memory named by any entry below this
    /// index is the host's again.
    pub fn retired(&self) -> u64 {
        self.indices.retired.load(Ordering::SeqCst)
    }

    /// Entries written so far.
    pub fn posted(&self) -> u64 {
        self.indices.posted.load(Ordering::SeqCst)
    }

    /// The last doorbell rung.
    pub fn doorbell(&self) -> u64 {
        self.indices.doorbell.load(Ordering::SeqCst)
    }

    /// Free slots right now.
    pub fn free_slots(&self) -> usize {
        self.indices.capacity.saturating_sub(self.tx.len())
    }

    pub fn capacity(&self) -> usize {
        self.indices.capacity
    }
}

/// The reading end of a ring.
#[derive(Debug)]
pub struct Consumer<T> {
    rx: Receiver<T>,
    indices: Arc<Indices>,
    notifier: Arc<Notifier>,
}

impl<T> Consumer<T> {
    /// Takes the next announced entry; `None` when every entry below the doorbell is taken
    /// (entries posted beyond it stay where they are).
    pub fn poll(&mut self) -> Option<T> {
        let consumed = self.indices.consumed.load(Ordering::SeqCst);
        if consumed >= self.indices.doorbell.load(Ordering::SeqCst) {
            return None;
        }
        match self.rx.try_recv() {
            Ok(entry) => {
                self.indices.consumed.store(consumed + 1, Ordering::SeqCst);
                Some(entry)
            }
            // The doorbell ran ahead of the entries (a producer bug); nothing to take.
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => None,
        }
    }

    /// Entries announced and not yet taken.
    pub fn announced(&self) -> u64 {
        let consumed = self.indices.consumed.load(Ordering::SeqCst);
        self.indices
            .doorbell
            .load(Ordering::SeqCst)
            .saturating_sub(consumed)
    }

    /// Entries sitting in the ring beyond the doorbell: written, not announced. Non-zero
    /// for long means the producer's doorbell stalled.
    pub fn unannounced(&self) -> u64 {
        let posted = self.indices.posted.load(Ordering::SeqCst);
        posted.saturating_sub(self.indices.doorbell.load(Ordering::SeqCst))
    }

    /// The last doorbell rung.
    pub fn doorbell(&self) -> u64 {
        self.indices.doorbell.load(Ordering::SeqCst)
    }

    /// Entries taken so far.
    pub fn consumed(&self) -> u64 {
        self.indices.consumed.load(Ordering::SeqCst)
    }

    /// Says the consumer is finished with every entry up to and including `index` (sent
    /// its payload, or dropped it): the host may reuse the memory they named.
    pub fn retire_through(&self, index: u64) {
        let taken = self.indices.consumed.load(Ordering::SeqCst);
        self.indices
            .retired
            .fetch_max(index.saturating_add(1).min(taken), Ordering::SeqCst);
    }

    /// Entries retired so far.
    pub fn retired(&self) -> u64 {
        self.indices.retired.load(Ordering::SeqCst)
    }

    /// Sleeps until an entry is announced or `timeout` passes; true if one is.
    pub fn wait(&self, timeout: Duration) -> bool {
        self.notifier.wait_until(timeout, || self.announced() > 0)
    }

    /// The notifier this ring wakes (shared with the other rings its thread consumes).
    pub fn notifier(&self) -> &Arc<Notifier> {
        &self.notifier
    }

    /// Queue reset: takes every entry in the ring, announced or not, and moves all three
    /// indices to the end. Only sound while the producer is stopped (its engine joined),
    /// as in a hardware queue reset.
    pub fn discard_all(&mut self) -> Vec<T> {
        let mut taken = Vec::new();
        // Bounded by the ring's capacity: nothing is posted while the producer is stopped.
        while taken.len() < self.indices.capacity {
            match self.rx.try_recv() {
                Ok(entry) => taken.push(entry),
                Err(_) => break,
            }
        }
        let posted = self.indices.posted.load(Ordering::SeqCst);
        self.indices.doorbell.fetch_max(posted, Ordering::SeqCst);
        self.indices.consumed.store(posted, Ordering::SeqCst);
        self.indices.retired.fetch_max(posted, Ordering::SeqCst);
        taken
    }
}

/// The host's end of one queue pair: it posts submissions and reaps completions.
#[derive(Debug)]
pub struct HostQueue<S, C> {
    pub submissions: Producer<S>,
    pub completions: Consumer<C>,
}

/// The adapter's end of one queue pair: it reaps submissions and posts completions.
#[derive(Debug)]
pub struct AdapterQueue<S, C> {
    pub submissions: Consumer<S>,
    pub completions: Producer<C>,
}

/// A queue pair: a submission ring the adapter's engine sleeps on (`adapter_wake`) and a
/// completion ring the host sleeps on (`host_wake`).
pub fn queue_pair<S, C>(
    submission_entries: usize,
    completion_entries: usize,
    host_wake: Arc<Notifier>,
    adapter_wake: Arc<Notifier>,
) -> (HostQueue<S, C>, AdapterQueue<S, C>) {
    let (sq_tx, sq_rx) = ring(submission_entries, adapter_wake);
    let (cq_tx, cq_rx) = ring(completion_entries, host_wake);
    (
        HostQueue {
            submissions: sq_tx,
            completions: cq_rx,
        },
        AdapterQueue {
            submissions: sq_rx,
            completions: cq_tx,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    #[test]
    fn a_full_ring_hands_the_entry_back() {
        let (tx, mut rx) = ring::<u32>(2, Notifier::new());
        assert_eq!(tx.post(1), Ok(0));
        assert_eq!(tx.post(2), Ok(1));
        assert_eq!(tx.post(3), Err(RingFull(3)));
        assert_eq!(tx.free_slots(), 0);
        tx.ring_doorbell();
        assert_eq!(rx.poll(), Some(1));
        assert_eq!(tx.post(3), Ok(2));
        assert_eq!(tx.consumed(), 1);
    }

    #[test]
    fn entries_are_invisible_until_the_doorbell_names_them() {
        let (tx, mut rx) = ring::<u32>(8, Notifier::new());
        tx.post(10).unwrap();
        tx.post(11).unwrap();
        assert_eq!(rx.poll(), None, "nothing announced yet");
        assert_eq!(rx.unannounced(), 2);
        assert_eq!(tx.ring_doorbell(), 2);
        tx.post(12).unwrap();
        assert_eq!(rx.poll(), Some(10));
        assert_eq!(rx.poll(), Some(11));
        assert_eq!(rx.poll(), None, "12 is beyond the doorbell");
        assert_eq!(rx.unannounced(), 1);
        tx.ring_doorbell();
        assert_eq!(rx.poll(), Some(12));
        assert_eq!(rx.consumed(), 3);
    }

    #[test]
    fn a_sleeping_consumer_wakes_on_the_doorbell() {
        let (tx, rx) = ring::<u32>(4, Notifier::new());
        let waiter = std::thread::spawn(move || {
            let started = Instant::now();
            let ready = rx.wait(Duration::from_secs(10));
            (ready, started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(50));
        tx.push(7).unwrap();
        let (ready, waited) = waiter.join().unwrap();
        assert!(ready);
        assert!(waited < Duration::from_secs(5), "woke after {waited:?}");
    }

    #[test]
    fn a_wait_without_a_doorbell_times_out() {
        let (tx, rx) = ring::<u32>(4, Notifier::new());
        tx.post(1).unwrap();
        let started = Instant::now();
        assert!(!rx.wait(Duration::from_millis(30)));
        assert!(started.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn discard_all_takes_unannounced_entries_and_resets_the_indices() {
        let (tx, mut rx) = ring::<u32>(4, Notifier::new());
        tx.push(1).unwrap();
        tx.post(2).unwrap();
        assert_eq!(rx.discard_all(), vec![1, 2]);
        assert_eq!(rx.announced(), 0);
        assert_eq!(rx.unannounced(), 0);
        assert_eq!(tx.consumed(), 2);
        assert_eq!(tx.retired(), 2);
        tx.push(3).unwrap();
        assert_eq!(rx.poll(), Some(3));
    }

    #[test]
    fn retiring_trails_taking() {
        let (tx, mut rx) = ring::<u32>(4, Notifier::new());
        tx.push(1).unwrap();
        tx.push(2).unwrap();
        assert_eq!(rx.poll(), Some(1));
        rx.retire_through(5);
        assert_eq!(tx.retired(), 1, "nothing past what was taken retires");
        assert_eq!(rx.poll(), Some(2));
        assert_eq!(tx.retired(), 1, "taking does not retire");
        rx.retire_through(1);
        assert_eq!(tx.retired(), 2);
    }

    /// A producer and a sleeping consumer on two threads: every entry arrives, in order,
    /// and no doorbell is missed (each wait is bounded, so a missed wake-up would show as
    /// a stall far longer than the test allows).
    #[test]
    fn entries_cross_threads_in_order_without_lost_wakeups() {
        const COUNT: u32 = 20_000;
        let (tx, mut rx) = ring::<u32>(8, Notifier::new());
        let producer = std::thread::spawn(move || {
            let mut next = 0;
            while next < COUNT {
                match tx.post(next) {
                    Ok(_) => {
                        // Ring every few entries, as a batching producer does.
                        if next % 3 == 0 || next == COUNT - 1 {
                            tx.ring_doorbell();
                        }
                        next += 1;
                    }
                    Err(RingFull(_)) => {
                        tx.ring_doorbell();
                        std::thread::yield_now();
                    }
                }
            }
        });
        let started = Instant::now();
        let mut expected = 0;
        while expected < COUNT {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "stalled at {expected}"
            );
            match rx.poll() {
                Some(value) => {
                    assert_eq!(value, expected);
                    expected += 1;
                }
                None => {
                    rx.wait(Duration::from_secs(5));
                }
            }
        }
        producer.join().unwrap();
        assert_eq!(rx.poll(), None);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Post(u32),
        Ring,
        Poll,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            any::<u32>().prop_map(Op::Post),
            Just(Op::Ring),
            Just(Op::Poll)
        ]
    }

    proptest! {
        /// Against a plain model: the ring holds at most `capacity`, hands back what does
        /// not fit, and gives out exactly the announced entries in order.
        #[test]
        fn ring_matches_its_model(capacity in 1usize..6, ops in proptest::collection::vec(op(), 0..200)) {
            let (tx, mut rx) = ring::<u32>(capacity, Notifier::new());
            let mut model: VecDeque<u32> = VecDeque::new();
            let mut posted = 0u64;
            let mut doorbell = 0u64;
            let mut consumed = 0u64;
            for op in ops {
                match op {
                    Op::Post(v) => {
                        let result = tx.post(v);
                        if model.len() < capacity {
                            prop_assert_eq!(result, Ok(posted));
                            model.push_back(v);
                            posted += 1;
                        } else {
                            prop_assert_eq!(result, Err(RingFull(v)));
                        }
                    }
                    Op::Ring => {
                        prop_assert_eq!(tx.ring_doorbell(), posted);
                        doorbell = posted;
                    }
                    Op::Poll => {
                        let got = rx.poll();
                        if consumed < doorbell {
                            prop_assert_eq!(got, model.pop_front());
                            consumed += 1;
                        } else {
                            prop_assert_eq!(got, None);
                        }
                    }
                }
                prop_assert_eq!(rx.announced(), doorbell - consumed);
                prop_assert_eq!(rx.unannounced(), posted - doorbell);
                prop_assert_eq!(tx.consumed(), consumed);
            }
        }
    }
}
