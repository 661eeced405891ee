//! The gateway's resident memory, sampled while an attack runs. Over a ceiling (several
//! times the budget, so the test has already failed) it stops the attack: an unbounded
//! gateway would otherwise grow by hundreds of MB a second on a machine others share.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::gateway_process::read_memory;

/// How often resident memory is sampled.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(50);

/// A thread sampling one process's `VmRSS`.
pub struct MemoryWatch {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<WatchResult>>,
}

/// What the watch saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchResult {
    /// The largest `VmRSS` sampled, in KiB.
    pub max_rss_kib: u64,
    /// Whether it went over the ceiling (and so stopped the attack).
    pub over_ceiling: bool,
    /// Whether the process was gone at some sample (it died during the attack).
    pub process_gone: bool,
}

impl MemoryWatch {
    /// Samples `pid` every 50 ms for at most `max_time`; sets `stop` once its resident
    /// memory passes `ceiling_kib` or the process is gone.
    pub fn start(
        pid: u32,
        ceiling_kib: u64,
        stop: Arc<AtomicBool>,
        max_time: Duration,
    ) -> MemoryWatch {
        let done = Arc::new(AtomicBool::new(false));
        let done_seen = Arc::clone(&done);
        let thread = thread::spawn(move || {
            let end = Instant::now() + max_time;
            let mut result = WatchResult::default();
            while !done_seen.load(Ordering::Relaxed) && Instant::now() < end {
                match read_memory(pid) {
                    Some(memory) => {
                        result.max_rss_kib = result.max_rss_kib.max(memory.rss_kib);
                        if memory.rss_kib > ceiling_kib {
                            result.over_ceiling = true;
                            stop.store(true, Ordering::Relaxed);
                            break;
                        }
                    }
                    None => {
                        result.process_gone = true;
                        stop.store(true, Ordering::Relaxed);
                        break;
                    }
                }
                thread::sleep(SAMPLE_INTERVAL);
            }
            result
        });
        MemoryWatch {
            done,
            thread: Some(thread),
        }
    }

    /// Ends the sampling and says what it saw.
    pub fn finish(mut self) -> WatchResult {
        self.done.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|thread| thread.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for MemoryWatch {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
