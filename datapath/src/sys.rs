//! Two small owners of operating-system resources the data path, the load tool and the
//! gateway each need: an eventfd ([`EventFd`]) and a zeroed heap buffer with a chosen
//! alignment ([`AlignedBuf`], for `O_DIRECT`). One of each, so their `unsafe` is written
//! and reviewed once.

use std::alloc::Layout;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::time::Duration;

/// A non-blocking, close-on-exec eventfd (eventfd(2)): a wake-up counter one thread writes
/// and another reads, polls, or keeps an io_uring read on.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// A new eventfd with its counter at zero.
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd(2) takes no pointers; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor this process owns and nothing else holds.
        Ok(EventFd {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Adds one to the counter, waking a reader. A full counter (EAGAIN) already means
    /// "wake up", so nothing is reported.
    pub fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd we own; an eventfd takes
        // exactly that.
        let _ = unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    /// Reads and resets the counter: the signals since the last read, 0 when none.
    pub fn take(&self) -> u64 {
        let mut count: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64; non-blocking, so an empty counter is
        // EAGAIN and `count` stays 0.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut count as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        if n == std::mem::size_of::<u64>() as isize {
            count
        } else {
            0
        }
    }
}

impl EventFd {
    /// Blocks until the counter is nonzero or `timeout` passes (at least 1 ms, poll(2)'s
    /// granularity); a signal is taken (the counter reset). True when one came.
    pub fn wait(&self, timeout: Duration) -> bool {
        let mut pollfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout_ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd, count 1.
        let n = unsafe { libc::poll(&mut pollfd, 1, timeout_ms) };
        if n <= 0 {
            return false;
        }
        self.take();
        true
    }
}

impl EventFd {
    /// The most eventfds [`EventFd::wait_any`] watches at once.
    pub const WAIT_ANY_MAX: usize = 16;

    /// Blocks until one of `fds` has a nonzero counter or `timeout` passes (at least 1 ms);
    /// the signals that came are taken. True when one came. At most
    /// [`EventFd::WAIT_ANY_MAX`] eventfds (the rest are not watched).
    pub fn wait_any(fds: &[&EventFd], timeout: Duration) -> bool {
        let mut pollfds = [libc::pollfd {
            fd: -1,
            events: libc::POLLIN,
            revents: 0,
        }; EventFd::WAIT_ANY_MAX];
        let count = fds.len().min(pollfds.len());
        for (pollfd, fd) in pollfds.iter_mut().zip(fds) {
            pollfd.fd = fd.as_raw_fd();
        }
        let timeout_ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: `count` valid pollfds in a live array.
        let n = unsafe { libc::poll(pollfds.as_mut_ptr(), count as libc::nfds_t, timeout_ms) };
        if n <= 0 {
            return false;
        }
        // Only the ones that fired: a read each is a system call.
        for (fd, pollfd) in fds[..count].iter().zip(&pollfds) {
            if pollfd.revents != 0 {
                fd.take();
            }
        }
        true
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A zeroed heap buffer of `len` bytes at an address that is a multiple of `align`
/// (rounded up to a power of two): the memory `O_DIRECT` asks for. Owned like a
/// `Vec<u8>`, never resized, so its address can be lent to the kernel.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the buffer is plain owned memory, like a `Vec<u8>`.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only read it (`as_slice`).
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// `len` zero bytes aligned to `align` (rounded up to a power of two); `None` for 0
    /// bytes or a size and alignment the allocator cannot describe. Aborts, as `Vec` does,
    /// when the allocator has no memory.
    pub fn zeroed(len: usize, align: usize) -> Option<AlignedBuf> {
        if len == 0 {
            return None;
        }
        let layout =
            Layout::from_size_align(len, align.max(1).checked_next_power_of_two()?).ok()?;
        // SAFETY: the layout has a non-zero size (checked above).
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout);
        };
        Some(AlignedBuf { ptr, layout })
    }

    pub fn len(&self) -> usize {
        self.layout.size()
    }

    /// Never: a zero-byte buffer is not made.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The alignment the buffer was made with.
    pub fn align(&self) -> usize {
        self.layout.align()
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` points to `layout.size()` initialised (zeroed, then written) bytes
        // owned by `self` for as long as it lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len())
            .field("align", &self.align())
            .finish()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with exactly this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_eventfd_counts_signals_until_taken() {
        let e = EventFd::new().unwrap();
        assert_eq!(e.take(), 0, "non-blocking: nothing signalled");
        e.signal();
        e.signal();
        let mut pollfd = libc::pollfd {
            fd: e.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, count 1.
        assert_eq!(unsafe { libc::poll(&mut pollfd, 1, 0) }, 1, "readable");
        assert_eq!(e.take(), 2);
        assert_eq!(e.take(), 0);
        assert!(!e.wait(Duration::from_millis(1)), "nothing signalled");
        e.signal();
        assert!(e.wait(Duration::from_secs(5)), "a signal ends the wait");
        assert_eq!(e.take(), 0, "the wait took it");
    }

    #[test]
    fn aligned_buffers_are_zeroed_aligned_and_writable() {
        for (len, align) in [(1, 512), (4096, 4096), (100_000, 3000), (7, 0)] {
            let mut b = AlignedBuf::zeroed(len, align).unwrap();
            let want = align.max(1).next_power_of_two();
            assert_eq!(b.align(), want);
            assert_eq!(b.as_ptr() as usize % want, 0, "{len} at {align}");
            assert_eq!(b.len(), len);
            assert!(b.as_slice().iter().all(|&x| x == 0));
            b.as_mut_slice()[len - 1] = 0xa5;
            assert_eq!(b.as_slice()[len - 1], 0xa5);
        }
        assert!(AlignedBuf::zeroed(0, 4096).is_none());
        assert!(AlignedBuf::zeroed(1, usize::MAX).is_none());
    }
}
