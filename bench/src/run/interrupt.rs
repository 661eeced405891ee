//! Ctrl-C (SIGINT) and SIGTERM end a run early with its results, as fio's `sig_int` does:
//! the handler only records the signal; the run's watch loop sees it within a turn, asks
//! every job to stop at its next turn, starts no further phase, and the report covers the
//! time run.
//!
//! The handler is installed with `SA_RESETHAND`: a second Ctrl-C finds the default action
//! and ends the process at once, for a run that cannot stop by itself.

use std::sync::atomic::{AtomicI32, Ordering};

/// The signal caught, 0 while none was.
static CAUGHT: AtomicI32 = AtomicI32::new(0);

extern "C" fn record_signal(signal: libc::c_int) {
    // Async-signal-safe: one atomic store, nothing else.
    CAUGHT.store(signal, Ordering::Relaxed);
}

/// Installs the handler for SIGINT and SIGTERM (the binary does, before the run; tests
/// of the library leave their process's signals alone).
pub fn install() -> std::io::Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is valid (empty mask, no flags); the handler is an
        // `extern "C" fn(c_int)` that only stores to an atomic, which is async-signal-safe.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = record_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESETHAND | libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Asks the run to end as `signal` would (a cluster agent whose controller said stop or
/// went away).
pub fn request(signal: i32) {
    CAUGHT.store(signal, Ordering::Relaxed);
}

/// Forgets an earlier request, before an agent's next run.
pub fn reset() {
    CAUGHT.store(0, Ordering::Relaxed);
}

/// The signal that asked the run to end, if one did.
pub fn caught() -> Option<i32> {
    match CAUGHT.load(Ordering::Relaxed) {
        0 => None,
        signal => Some(signal),
    }
}
