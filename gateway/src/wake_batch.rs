//! Wake-ups held back to the end of a batch: a thread that answers many commands at once
//! (a session thread of the `iscsi:` backend, whose far side answers several commands per
//! receive) posts each answer to its event loop's inbox, and each post used to signal the
//! loop's eventfd: one system call per command, and as many wake-ups of the loop when it
//! runs on the other core and takes the first answer before the next is posted. Inside
//! [`batch`], a signal is recorded instead (once per target) and sent when the batch ends,
//! so the loop wakes once per batch and finds every answer of it.
//!
//! Outside a batch a signal goes at once, so a caller that never opens one keeps today's
//! behaviour. The pending signals are sent also when the batch's closure panics (a drop
//! guard): an answer posted is never left without its wake-up.

use std::cell::RefCell;
use std::sync::Arc;

/// Something a thread can wake (an event loop's eventfd).
pub(crate) trait Signal: Send + Sync {
    fn signal(&self);
}

thread_local! {
    /// The open batch of this thread: the targets to signal at its end, each once.
    static PENDING: RefCell<Option<Vec<Arc<dyn Signal>>>> = const { RefCell::new(None) };
}

/// Signals `target` now, or at the end of this thread's open batch.
pub(crate) fn signal_or_defer(target: &Arc<dyn Signal>) {
    let deferred = PENDING.with(|pending| {
        let mut pending = pending.borrow_mut();
        let Some(list) = pending.as_mut() else {
            return false;
        };
        if !list.iter().any(|held| same_target(held, target)) {
            list.push(Arc::clone(target));
        }
        true
    });
    if !deferred {
        target.signal();
    }
}

/// Runs `work` with signals deferred to its end. A batch inside a batch joins the outer
/// one (its signals go when the outer one ends).
pub(crate) fn batch<R>(work: impl FnOnce() -> R) -> R {
    let opened = PENDING.with(|pending| {
        let mut pending = pending.borrow_mut();
        if pending.is_some() {
            return false;
        }
        *pending = Some(Vec::new());
        true
    });
    // Not `then_some`: its argument is built (and dropped, closing the outer batch) even
    // when the batch is not ours.
    let _close = if opened { Some(CloseBatch) } else { None };
    work()
}

/// Ends the batch it opened: sends what it deferred.
struct CloseBatch;

impl Drop for CloseBatch {
    fn drop(&mut self) {
        let targets = PENDING.with(|pending| pending.borrow_mut().take().unwrap_or_default());
        for target in targets {
            target.signal();
        }
    }
}

fn same_target(a: &Arc<dyn Signal>, b: &Arc<dyn Signal>) -> bool {
    // The data pointers: two `dyn` pointers to one object may carry different vtables.
    std::ptr::eq(Arc::as_ptr(a).cast::<()>(), Arc::as_ptr(b).cast::<()>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Signal for Count {
        fn signal(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn count(target: &Arc<Count>) -> usize {
        target.0.load(Ordering::SeqCst)
    }

    #[test]
    fn outside_a_batch_every_signal_goes_at_once() {
        let loop_a = Arc::new(Count::default());
        let as_signal: Arc<dyn Signal> = loop_a.clone();
        for n in 1..=3 {
            signal_or_defer(&as_signal);
            assert_eq!(count(&loop_a), n);
        }
    }

    #[test]
    fn a_batch_signals_each_target_once_at_its_end_and_nested_batches_join_it() {
        let (loop_a, loop_b) = (Arc::new(Count::default()), Arc::new(Count::default()));
        let (a, b): (Arc<dyn Signal>, Arc<dyn Signal>) = (loop_a.clone(), loop_b.clone());
        batch(|| {
            for _ in 0..5 {
                signal_or_defer(&a);
            }
            batch(|| signal_or_defer(&b));
            assert_eq!((count(&loop_a), count(&loop_b)), (0, 0), "held to the end");
        });
        assert_eq!((count(&loop_a), count(&loop_b)), (1, 1));
        // The batch is closed: the next signal goes at once again.
        signal_or_defer(&a);
        assert_eq!(count(&loop_a), 2);
    }

    #[test]
    fn a_batch_that_panics_still_sends_what_it_deferred() {
        let loop_a = Arc::new(Count::default());
        let a: Arc<dyn Signal> = loop_a.clone();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            batch(|| {
                signal_or_defer(&a);
                panic!("a callback failed");
            })
        }));
        assert!(outcome.is_err());
        assert_eq!(count(&loop_a), 1);
        signal_or_defer(&a);
        assert_eq!(count(&loop_a), 2, "no batch left open by the panic");
    }
}
