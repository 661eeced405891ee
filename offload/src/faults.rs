//! Fault hooks of the adapter models: a handle a test flips at run time. Each armed fault
//! fires once (a stall lasts until the queue pair is reset) and surfaces to the host as an
//! [`AdapterFault`](datapath::adapter::AdapterFault) that says it was injected.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Debug, Default)]
struct FaultState {
    drop_next_submission: AtomicBool,
    stall_completion_doorbell: AtomicBool,
    corrupt_next_digest: AtomicBool,
    reset_on_next_submission: AtomicBool,
    fired: AtomicU64,
}

/// The fault hooks of one adapter model (clones share them).
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<FaultState>);

impl Faults {
    pub fn new() -> Faults {
        Faults::default()
    }

    /// The adapter takes the next submission entry and does not carry it out.
    pub fn drop_next_submission(&self) {
        self.0.drop_next_submission.store(true, Ordering::SeqCst);
    }

    /// The adapter stops ringing its completion doorbells (it still writes the entries)
    /// until its queue pair is reset.
    pub fn stall_completion_doorbell(&self) {
        self.0
            .stall_completion_doorbell
            .store(true, Ordering::SeqCst);
    }

    /// The next received digest the adapter checks (the data digest of the next PDU with
    /// data, or the header digest when only header digests are on) fails.
    pub fn corrupt_next_digest(&self) {
        self.0.corrupt_next_digest.store(true, Ordering::SeqCst);
    }

    /// The adapter resets itself when it takes its next submission entry.
    pub fn reset_on_next_submission(&self) {
        self.0
            .reset_on_next_submission
            .store(true, Ordering::SeqCst);
    }

    /// Faults fired so far.
    pub fn fired(&self) -> u64 {
        self.0.fired.load(Ordering::SeqCst)
    }

    /// True when any fault is armed and has not fired.
    pub fn armed(&self) -> bool {
        self.0.drop_next_submission.load(Ordering::SeqCst)
            || self.0.corrupt_next_digest.load(Ordering::SeqCst)
            || self.0.reset_on_next_submission.load(Ordering::SeqCst)
    }

    fn take(&self, flag: &AtomicBool) -> bool {
        let fired = flag.swap(false, Ordering::SeqCst);
        if fired {
            self.0.fired.fetch_add(1, Ordering::SeqCst);
        }
        fired
    }

    pub(crate) fn take_drop(&self) -> bool {
        self.take(&self.0.drop_next_submission)
    }

    pub(crate) fn take_reset(&self) -> bool {
        self.take(&self.0.reset_on_next_submission)
    }

    pub(crate) fn take_corrupt_digest(&self) -> bool {
        self.take(&self.0.corrupt_next_digest)
    }

    pub(crate) fn doorbell_stalled(&self) -> bool {
        self.0.stall_completion_doorbell.load(Ordering::SeqCst)
    }

    /// A queue-pair reset ends a stall.
    pub(crate) fn clear_stall(&self) {
        if self
            .0
            .stall_completion_doorbell
            .swap(false, Ordering::SeqCst)
        {
            self.0.fired.fetch_add(1, Ordering::SeqCst);
        }
    }
}
