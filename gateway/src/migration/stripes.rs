//! The 64 stripe locks of a migration ([`super::Shared`]): a host write holds the stripes
//! of its regions while it writes both sides, the copy the stripe of the region a piece
//! lies in, DBT's stun all of them.
//!
//! Not `std::sync::Mutex<()>`: an event loop writes a migrating file LUN on its own ring,
//! so it must take stripes without waiting (a stripe someone holds sends the write to the
//! migration's workers instead) and keep them across turns until both legs complete,
//! which a `MutexGuard` (borrowed, tied to its thread) cannot. A stripe here is a flag
//! under a mutex held only to flip it, and a condition variable for the threads that do
//! wait (the copy, the workers, the stun); the set of stripes one holder has is a bit mask,
//! released when the [`HeldStripes`] drops, whichever thread drops it.

use std::sync::{Arc, Condvar, Mutex};

/// Stripes per migration: one bit each in a mask.
pub(super) const STRIPES: usize = 64;

#[derive(Default)]
struct StripeState {
    held: bool,
    /// Threads waiting in [`Stripes::lock`]: an unlock wakes one only when there is one.
    waiters: u32,
}

#[derive(Default)]
struct Stripe {
    state: Mutex<StripeState>,
    freed: Condvar,
}

/// The stripe locks.
pub(super) struct Stripes {
    stripes: Box<[Stripe]>,
}

impl Stripes {
    pub(super) fn new() -> Stripes {
        Stripes {
            stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
        }
    }

    fn state(&self, index: usize) -> std::sync::MutexGuard<'_, StripeState> {
        self.stripes[index]
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for stripe `index` and takes it.
    fn lock(&self, index: usize) {
        let mut state = self.state(index);
        while state.held {
            state.waiters += 1;
            state = self.stripes[index]
                .freed
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
            state.waiters -= 1;
        }
        state.held = true;
    }

    /// Takes stripe `index` if nobody holds it.
    fn try_lock(&self, index: usize) -> bool {
        let mut state = self.state(index);
        !std::mem::replace(&mut state.held, true)
    }

    fn unlock(&self, index: usize) {
        let mut state = self.state(index);
        state.held = false;
        if state.waiters > 0 {
            self.stripes[index].freed.notify_one();
        }
    }

    /// Waits for every stripe in `mask`, in ascending order (so two holders of several
    /// stripes never wait for each other in a cycle).
    pub(super) fn lock_mask(&self, mask: u64) {
        for index in bits(mask) {
            self.lock(index);
        }
    }

    /// Takes every stripe in `mask` or none.
    pub(super) fn try_lock_mask(&self, mask: u64) -> bool {
        let mut taken = 0u64;
        for index in bits(mask) {
            if !self.try_lock(index) {
                self.unlock_mask(taken);
                return false;
            }
            taken |= 1 << index;
        }
        true
    }

    pub(super) fn unlock_mask(&self, mask: u64) {
        for index in bits(mask) {
            self.unlock(index);
        }
    }
}

/// The stripe indices of `mask`, ascending (one step per stripe held, not per stripe).
fn bits(mut mask: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        let index = mask.trailing_zeros() as usize;
        (mask != 0).then(|| {
            mask &= mask - 1;
            index
        })
    })
}

/// The stripe of region `region`, as a mask.
pub(super) fn stripe_of_region(region: u64) -> u64 {
    1 << (region % STRIPES as u64)
}

/// The stripes of the regions `offset..offset+len` touches, as a mask.
pub(super) fn stripes_of(offset: u64, len: u64, region_bytes: u64) -> u64 {
    let first = offset / region_bytes;
    let last = (offset + len.max(1) - 1) / region_bytes;
    if last - first >= STRIPES as u64 {
        return u64::MAX;
    }
    (first..=last).fold(0, |mask, region| mask | stripe_of_region(region))
}

/// Stripes held through a borrowed [`super::Shared`] (a thread that waited for them);
/// released on drop.
pub(crate) struct StripeGuard<'a> {
    stripes: &'a Stripes,
    mask: u64,
}

impl<'a> StripeGuard<'a> {
    pub(super) fn lock(stripes: &'a Stripes, mask: u64) -> StripeGuard<'a> {
        stripes.lock_mask(mask);
        StripeGuard { stripes, mask }
    }
}

impl Drop for StripeGuard<'_> {
    fn drop(&mut self) {
        self.stripes.unlock_mask(self.mask);
    }
}

/// Stripes an event loop took without waiting for a write on its ring, with the
/// migration they belong to: kept across the loop's turns until the write's legs are
/// done, released on drop. Also how that write (or a read from the destination after the
/// switch, holding none) tells the migration its destination failed
/// ([`HeldStripes::destination_failed`]).
pub struct HeldStripes {
    shared: Arc<super::Shared>,
    mask: u64,
}

impl HeldStripes {
    pub(super) fn try_take(shared: &Arc<super::Shared>, mask: u64) -> Option<HeldStripes> {
        shared.stripes.try_lock_mask(mask).then(|| HeldStripes {
            shared: Arc::clone(shared),
            mask,
        })
    }

    /// No stripe: how a read from the destination after the switch tells that it
    /// failed.
    pub(super) fn none(shared: &Arc<super::Shared>) -> HeldStripes {
        HeldStripes {
            shared: Arc::clone(shared),
            mask: 0,
        }
    }

    /// The destination's leg of the write failed: the migration fails, the source alone
    /// serves (the host's command stands on the source's leg).
    pub fn destination_failed(&self, what: String) {
        self.shared.fail(what);
    }
}

impl Drop for HeldStripes {
    fn drop(&mut self) {
        self.shared.stripes.unlock_mask(self.mask);
    }
}

impl std::fmt::Debug for HeldStripes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HeldStripes({:#x})", self.mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[test]
    fn a_held_stripe_refuses_a_try_and_makes_a_lock_wait_until_it_is_released() {
        let stripes = Arc::new(Stripes::new());
        let mask = stripes_of(0, 4096, 1 << 20);
        assert_eq!(mask, 1);
        assert!(stripes.try_lock_mask(mask));
        assert!(!stripes.try_lock_mask(mask | 2), "all or nothing");
        assert!(
            stripes.try_lock_mask(2),
            "the refused try left stripe 1 free"
        );
        let taken = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (stripes, taken) = (Arc::clone(&stripes), Arc::clone(&taken));
            std::thread::spawn(move || {
                let _guard = StripeGuard::lock(&stripes, 3);
                taken.store(true, Ordering::SeqCst);
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!taken.load(Ordering::SeqCst), "the waiter must wait");
        stripes.unlock_mask(1);
        std::thread::sleep(Duration::from_millis(20));
        assert!(!taken.load(Ordering::SeqCst), "stripe 1 is still held");
        stripes.unlock_mask(2);
        waiter.join().unwrap();
        assert!(taken.load(Ordering::SeqCst));
        assert!(stripes.try_lock_mask(3), "the guard released both on drop");
    }

    #[test]
    fn the_stripes_of_a_range_cover_each_region_it_touches() {
        let region = 1 << 20;
        assert_eq!(stripes_of(region - 512, 1024, region), 0b11);
        assert_eq!(
            stripes_of(64 * region, 512, region),
            1,
            "region 64 wraps to stripe 0"
        );
        assert_eq!(stripes_of(0, 65 * region, region), u64::MAX);
        assert_eq!(stripes_of(5 * region, 0, region), 1 << 5);
        assert_eq!(bits(0b1010_0001).collect::<Vec<_>>(), vec![0, 5, 7]);
        assert_eq!(bits(1 << 63).collect::<Vec<_>>(), vec![63]);
        assert_eq!(bits(0).count(), 0);
    }
}
