//! One sleep for a multipath shard's rings. Each sub-path's connection has its own
//! io_uring; the loop can sleep in only one of them. So each connection registers an
//! eventfd with its ring (`IORING_REGISTER_EVENTFD`: the kernel signals it whenever the
//! ring gets completion work, deferred task work included), and the connection the loop
//! sleeps in keeps a read of every other connection's eventfd on its own ring
//! ([`Watches`]). A completion on any sub-path then ends the one sleep, where the loop
//! used to wake every [`super::multipath::MULTI_POLL`] to look at the others.
//!
//! An eventfd read completing is itself completion work on the sleeping ring, which
//! signals that ring's own eventfd: harmless, since a ring never watches its own.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use io_uring::{opcode, squeue, types};

use crate::sys::EventFd;
use crate::transport::ring::EVENT_TOKEN_BASE;

/// Tokens of watch reads: this base plus the watched source's id (ids stay below 2^32).
const TOKEN_WATCH_BASE: u64 = EVENT_TOKEN_BASE + (1 << 32);
const TOKEN_WATCH_END: u64 = TOKEN_WATCH_BASE + (1 << 32);

/// Ids of wake sources: a connection's eventfd number may be reused by the next one, its id
/// never is, so a read armed on a closed connection's eventfd is told from a live one.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A connection's eventfd, registered with its ring.
pub(super) struct RingWake {
    fd: EventFd,
    id: u64,
}

/// What another ring watches: the eventfd and its connection's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct WakeSource {
    fd: RawFd,
    id: u64,
}

impl RingWake {
    pub(super) fn new() -> std::io::Result<RingWake> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed) % (1 << 32);
        Ok(RingWake {
            fd: EventFd::new()?,
            id,
        })
    }

    /// The eventfd to register with the ring.
    pub(super) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub(super) fn source(&self) -> WakeSource {
        WakeSource {
            fd: self.fd(),
            id: self.id,
        }
    }
}

/// The reads a sleeping connection keeps on other connections' eventfds.
#[derive(Default)]
pub(super) struct Watches {
    list: Vec<Watch>,
}

struct Watch {
    source: WakeSource,
    /// Where the read puts the counter: boxed, so it stays put until the read completes.
    buf: Box<u64>,
    cancelling: bool,
}

impl Watches {
    /// Keeps a read armed on each of `wanted` and cancels reads on sources no longer
    /// wanted (each cancellation's own completion carries `cancel_token`). `push` queues
    /// an entry on the ring (false: it did not). Returns whether every wanted source is
    /// watched, and the cancellations queued.
    pub(super) fn update(
        &mut self,
        wanted: &[WakeSource],
        cancel_token: u64,
        push: &mut dyn FnMut(squeue::Entry) -> bool,
    ) -> (bool, usize) {
        let mut cancels = 0;
        for watch in &mut self.list {
            if !watch.cancelling && !wanted.contains(&watch.source) {
                let entry = opcode::AsyncCancel::new(token(watch.source.id))
                    .build()
                    .user_data(cancel_token);
                if push(entry) {
                    watch.cancelling = true;
                    cancels += 1;
                }
            }
        }
        let mut all = true;
        for source in wanted {
            if self.list.iter().any(|w| w.source == *source) {
                continue;
            }
            let mut buf = Box::new(0u64);
            let entry = opcode::Read::new(types::Fd(source.fd), (&mut *buf as *mut u64).cast(), 8)
                .build()
                .user_data(token(source.id));
            // The read names `buf`, which lives in the list until the read's completion
            // (or its cancellation's) is reaped: `Watches::completed`.
            if push(entry) {
                self.list.push(Watch {
                    source: *source,
                    buf,
                    cancelling: false,
                });
            } else {
                all = false;
            }
        }
        (all, cancels)
    }

    /// Takes a completion if it is a watch read's (done, failed or cancelled): its buffer
    /// is the kernel's no more. False for any other token.
    pub(super) fn completed(&mut self, user_data: u64) -> bool {
        if !(TOKEN_WATCH_BASE..TOKEN_WATCH_END).contains(&user_data) {
            return false;
        }
        let id = user_data - TOKEN_WATCH_BASE;
        if let Some(at) = self.list.iter().position(|w| w.source.id == id) {
            let watch = self.list.swap_remove(at);
            drop(watch.buf);
        }
        true
    }

    /// Reads still armed (the kernel may write into their buffers).
    pub(super) fn armed(&self) -> bool {
        !self.list.is_empty()
    }
}

fn token(id: u64) -> u64 {
    TOKEN_WATCH_BASE + id
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANCEL: u64 = EVENT_TOKEN_BASE + 4;

    fn source(id: u64) -> WakeSource {
        WakeSource {
            fd: 100 + id as RawFd,
            id,
        }
    }

    #[test]
    fn arms_each_source_once_and_cancels_what_is_no_longer_wanted() {
        let mut watches = Watches::default();
        let mut pushed = Vec::new();
        let mut push = |e: squeue::Entry| {
            pushed.push(e.get_user_data());
            true
        };
        assert_eq!(
            watches.update(&[source(1), source(2)], CANCEL, &mut push),
            (true, 0)
        );
        assert_eq!(
            watches.update(&[source(1), source(2)], CANCEL, &mut push),
            (true, 0)
        );
        // Source 2's connection went; the next one got the same eventfd number, not the id.
        let next = WakeSource { fd: 102, id: 3 };
        assert_eq!(
            watches.update(&[source(1), next], CANCEL, &mut push),
            (true, 1)
        );
        assert_eq!(pushed.iter().filter(|t| **t == token(2)).count(), 1);
        assert_eq!(pushed.iter().filter(|t| **t == token(3)).count(), 1);
        assert_eq!(pushed.iter().filter(|t| **t == token(1)).count(), 1);
        assert_eq!(pushed.iter().filter(|t| **t == CANCEL).count(), 1);
        // The cancelled read completes: its buffer is released; other tokens are not ours.
        assert!(watches.completed(token(2)));
        assert!(!watches.completed(EVENT_TOKEN_BASE + 3));
        assert!(watches.armed());
        assert!(watches.completed(token(1)));
        assert!(watches.completed(token(3)));
        assert!(!watches.armed());
        assert_eq!(source(3).fd, 103);
    }

    #[test]
    fn a_refused_push_says_not_everything_is_watched() {
        let mut watches = Watches::default();
        let mut refuse = |_: squeue::Entry| false;
        assert_eq!(
            watches.update(&[source(7)], CANCEL, &mut refuse),
            (false, 0)
        );
        assert!(!watches.armed());
    }
}
