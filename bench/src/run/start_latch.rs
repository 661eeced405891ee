//! The common start of a gated run (a cluster agent's): every job of the first phase sets
//! up its engine on its own thread (an iSCSI job logs in there), arrives here and waits;
//! the run calls its gate once all have arrived, then opens the latch, so the load starts
//! together and after every login, not staggered by them.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

#[derive(Debug, Default)]
struct State {
    arrived: usize,
    open: bool,
    /// When the jobs start (CLOCK_MONOTONIC, ns; 0: at the opening).
    start_at_ns: u64,
}

/// Arrivals counted, one opening.
#[derive(Debug, Default)]
pub struct StartLatch {
    state: Mutex<State>,
    changed: Condvar,
}

impl StartLatch {
    /// A job is ready: count it, wait until the latch opens, then until the start instant
    /// (each job sleeps to it on its own: no wake-up of one thread by another after it).
    ///
    /// Returns when it started (CLOCK_MONOTONIC ns) and the real-time priority it holds
    /// until the guard drops (see [`crate::cluster::conn::start_at_ns`]).
    pub fn arrive_and_wait(&self) -> (u64, crate::cluster::conn::RealtimeGuard) {
        let Ok(mut state) = self.state.lock() else {
            return crate::cluster::conn::start_at_ns(0);
        };
        state.arrived += 1;
        self.changed.notify_all();
        while !state.open {
            state = match self.changed.wait(state) {
                Ok(state) => state,
                Err(_) => return crate::cluster::conn::start_at_ns(0),
            };
        }
        let start_at_ns = state.start_at_ns;
        drop(state);
        crate::cluster::conn::start_at_ns(start_at_ns)
    }

    /// Waits until `count` jobs arrived; `false` as soon as `give_up` says so (a job
    /// thread ended before arriving, or the run is interrupted).
    pub fn wait_arrived(&self, count: usize, give_up: &dyn Fn() -> bool) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        while state.arrived < count {
            if give_up() {
                return false;
            }
            state = match self.changed.wait_timeout(state, Duration::from_millis(20)) {
                Ok((state, _)) => state,
                Err(_) => return false,
            };
        }
        true
    }

    /// Lets every waiting job go (and any that arrives later) at `start_at_ns`
    /// (CLOCK_MONOTONIC; 0: now).
    pub fn open(&self, start_at_ns: u64) {
        if let Ok(mut state) = self.state.lock() {
            state.open = true;
            state.start_at_ns = start_at_ns;
        }
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn jobs_wait_for_the_opening() {
        let latch = Arc::new(StartLatch::default());
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let latch = Arc::clone(&latch);
                std::thread::spawn(move || latch.arrive_and_wait().0)
            })
            .collect();
        assert!(latch.wait_arrived(3, &|| false));
        let start_at = crate::cluster::conn::now_ns() + 20_000_000;
        latch.open(start_at);
        for thread in threads {
            let _ = thread.join().unwrap();
        }
        assert!(crate::cluster::conn::now_ns() >= start_at);
        assert!(!StartLatch::default().wait_arrived(1, &|| true));
    }
}
