//! The control-plane table both models keep: one slot per queue pair, each behind its own
//! lock, so resetting one queue pair never waits on another.

use std::sync::{Mutex, MutexGuard, PoisonError};

use datapath::adapter::AdapterError;

/// Locks slot `index`; a slot whose holder panicked is taken as it is (its state is
/// replaced on the next reset anyway).
pub fn lock<T>(slots: &[Mutex<T>], index: usize) -> Result<MutexGuard<'_, T>, AdapterError> {
    let slot = slots.get(index).ok_or(AdapterError::NoSuchQueuePair {
        index,
        count: slots.len(),
    })?;
    Ok(slot.lock().unwrap_or_else(PoisonError::into_inner))
}
