//! CPU time of an adapter model's own threads, so a benchmark can report adapter CPU per
//! I/O apart from host CPU.
//!
//! Each engine thread reads its own CPU clock (`clock_gettime(CLOCK_THREAD_CPUTIME_ID)`,
//! POSIX) and adds what it used since its last reading into one shared counter: before it
//! rings a completion doorbell (so the host never sees a completion whose CPU is not yet
//! counted) and when it exits. The meter is the sum over every thread the model ran.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The CPU time of all of a model's threads.
#[derive(Debug, Clone, Default)]
pub struct CpuMeter {
    total_ns: Arc<AtomicU64>,
}

impl CpuMeter {
    pub fn new() -> CpuMeter {
        CpuMeter::default()
    }

    /// CPU time charged so far.
    pub fn total(&self) -> Duration {
        Duration::from_nanos(self.total_ns.load(Ordering::Relaxed))
    }

    /// A clock for the calling thread, starting from its CPU time now.
    pub fn thread_clock(&self) -> ThreadClock {
        ThreadClock {
            meter: self.clone(),
            last_ns: thread_cpu_ns(),
        }
    }
}

/// One thread's CPU clock; charges its meter on [`ThreadClock::charge`] and on drop.
/// Use it only on the thread that made it.
#[derive(Debug)]
pub struct ThreadClock {
    meter: CpuMeter,
    last_ns: u64,
}

impl ThreadClock {
    /// Adds the CPU time this thread used since the last charge.
    pub fn charge(&mut self) {
        let now_ns = thread_cpu_ns();
        let used = now_ns.saturating_sub(self.last_ns);
        self.last_ns = now_ns;
        self.meter.total_ns.fetch_add(used, Ordering::Relaxed);
    }
}

impl Drop for ThreadClock {
    fn drop(&mut self) {
        self.charge();
    }
}

/// The calling thread's CPU time in nanoseconds (0 if the clock cannot be read).
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into a live local.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_thread_is_charged_and_an_idle_one_is_not() {
        let meter = CpuMeter::new();
        let busy = meter.clone();
        std::thread::spawn(move || {
            let _clock = busy.thread_clock();
            // Spin until this thread has used 20 ms of CPU (not of wall time: on a loaded
            // machine 30 ms of wall time gave it as little as 6 ms), bounded at 10 s.
            let cpu_started = thread_cpu_ns();
            let started = std::time::Instant::now();
            let mut x = 1u64;
            while thread_cpu_ns().saturating_sub(cpu_started) < 20_000_000
                && started.elapsed() < Duration::from_secs(10)
            {
                for _ in 0..1000 {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                }
            }
            std::hint::black_box(x);
        })
        .join()
        .unwrap();
        let after_busy = meter.total();
        assert!(after_busy >= Duration::from_millis(20), "{after_busy:?}");
        let idle = meter.clone();
        std::thread::spawn(move || {
            let _clock = idle.thread_clock();
            std::thread::sleep(Duration::from_millis(50));
        })
        .join()
        .unwrap();
        let idle_charge = meter.total() - after_busy;
        assert!(idle_charge < Duration::from_millis(10), "{idle_charge:?}");
    }
}
