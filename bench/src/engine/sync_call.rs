//! The system calls of fio's synchronous engines (`sync`, `psync`, `pvsync`, `pvsync2`;
//! fio's engines/sync.c), for [`super::UringEngine`] running one of them: each carries out
//! one I/O on the job's thread and returns what an io_uring completion would (the bytes
//! moved, or a negated errno), so the engine finishes both the same way.

use crate::io::{Direction, SyncRange};
use crate::job::spec::SyncCall;

/// The negated errno of the call that just failed.
fn last_error() -> i32 {
    -std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Runs `call` again while a signal interrupts it; its result as an io_uring result.
fn retry_interrupted(mut call: impl FnMut() -> isize) -> i32 {
    loop {
        let rc = call();
        if rc >= 0 {
            // One I/O is at most u32::MAX bytes, but a result must not wrap.
            return i32::try_from(rc).unwrap_or(i32::MAX);
        }
        let error = last_error();
        if error != -libc::EINTR {
            return error;
        }
    }
}

/// Reads or writes `len` bytes at `ptr` from or to `offset` of `fd` with `call`'s system
/// calls; `flags` are `pvsync2`'s `RWF_*` (the others take none).
///
/// # Safety
/// `ptr` must point to `len` bytes the caller owns for the call (readable for a write,
/// writable for a read), and `fd` must be open.
pub(super) unsafe fn transfer(
    call: SyncCall,
    fd: i32,
    direction: Direction,
    ptr: *mut u8,
    len: u32,
    offset: u64,
    flags: i32,
) -> i32 {
    let len = len as usize;
    let Ok(offset) = libc::off_t::try_from(offset) else {
        return -libc::EINVAL;
    };
    let write = direction == Direction::Write;
    let vector = libc::iovec {
        iov_base: ptr.cast(),
        iov_len: len,
    };
    // `sync` moves the file offset first, as fio's does (the file's position is not known
    // to match).
    if call == SyncCall::Sync {
        // SAFETY: lseek only reads its arguments; the caller keeps `fd` open.
        if unsafe { libc::lseek(fd, offset, libc::SEEK_SET) } < 0 {
            return last_error();
        }
    }
    // SAFETY (every arm): the caller guarantees `ptr`/`len` (directly or through
    // `vector`, which lives across the call) for the direction, and that `fd` is open.
    retry_interrupted(|| unsafe {
        match (call, write) {
            (SyncCall::Sync, false) => libc::read(fd, ptr.cast(), len),
            (SyncCall::Sync, true) => libc::write(fd, ptr.cast(), len),
            (SyncCall::Psync, false) => libc::pread(fd, ptr.cast(), len, offset),
            (SyncCall::Psync, true) => libc::pwrite(fd, ptr.cast(), len, offset),
            (SyncCall::Pvsync, false) => libc::preadv(fd, &vector, 1, offset),
            (SyncCall::Pvsync, true) => libc::pwritev(fd, &vector, 1, offset),
            (SyncCall::Pvsync2, false) => libc::preadv2(fd, &vector, 1, offset, flags),
            (SyncCall::Pvsync2, true) => libc::pwritev2(fd, &vector, 1, offset, flags),
        }
    })
}

/// `fsync(2)`, or `fdatasync(2)` with `datasync`.
pub(super) fn flush(fd: i32, datasync: bool) -> i32 {
    // SAFETY: both take only a descriptor.
    retry_interrupted(|| unsafe {
        (if datasync {
            libc::fdatasync(fd)
        } else {
            libc::fsync(fd)
        }) as isize
    })
}

/// `sync_file_range(2)` over `range`.
pub(super) fn sync_range(fd: i32, range: SyncRange) -> i32 {
    let (Ok(offset), Ok(len)) = (
        libc::off64_t::try_from(range.offset),
        libc::off64_t::try_from(range.len),
    ) else {
        return -libc::EINVAL;
    };
    // SAFETY: takes only a descriptor and numbers.
    retry_interrupted(|| unsafe { libc::sync_file_range(fd, offset, len, range.flags) as isize })
}

/// A trim of a regular file: `fallocate(2)` punching a hole, keeping the size (as the ring
/// does; block devices are discarded with an ioctl before this).
pub(super) fn punch_hole(fd: i32, offset: u64, len: u32) -> i32 {
    let Ok(offset) = libc::off_t::try_from(offset) else {
        return -libc::EINVAL;
    };
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: takes only a descriptor and numbers.
    retry_interrupted(|| unsafe {
        libc::fallocate(fd, mode, offset, libc::off_t::from(len)) as isize
    })
}
