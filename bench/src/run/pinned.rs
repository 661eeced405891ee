//! fio's `lockmem` (memory.c `fio_pin_memory`): the job holds this many bytes of anonymous
//! memory locked with `mlock(2)` while it runs, so the rest of the system has that much
//! less to cache with: a way to run as if on a machine with less memory. As in fio, no
//! more than the physical memory less 128 MiB is locked.

use std::io;

/// Headroom fio leaves unlocked.
const UNLOCKED_MIN_BYTES: u64 = 128 << 20;

/// Locked memory, unlocked and unmapped on drop.
#[derive(Debug)]
pub struct PinnedMemory {
    addr: *mut libc::c_void,
    len: usize,
}

impl PinnedMemory {
    /// Maps and locks `bytes` (capped as fio caps it).
    pub fn lock(bytes: u64) -> io::Result<PinnedMemory> {
        let len = usize::try_from(capped(bytes, physical_memory_bytes()))
            .map_err(|_| io::Error::from_raw_os_error(libc::ENOMEM))?;
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `addr..addr+len` is the mapping just made.
        if unsafe { libc::mlock(addr, len) } != 0 {
            let error = io::Error::last_os_error();
            // SAFETY: as above; it is not used after this.
            unsafe { libc::munmap(addr, len) };
            return Err(error);
        }
        Ok(PinnedMemory { addr, len })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }
}

impl Drop for PinnedMemory {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `lock`, unmapped only here.
        unsafe {
            libc::munlock(self.addr, self.len);
            libc::munmap(self.addr, self.len);
        }
    }
}

// SAFETY: the mapping is owned memory no one reads or writes; only drop touches it.
unsafe impl Send for PinnedMemory {}

fn physical_memory_bytes() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    u64::try_from(pages)
        .unwrap_or(0)
        .saturating_mul(u64::try_from(page).unwrap_or(0))
}

/// `bytes`, or the physical memory less 128 MiB where that is less (fio's limit; a
/// machine whose size is unknown gets what was asked).
fn capped(bytes: u64, physical: u64) -> u64 {
    if physical > 0 && bytes.saturating_add(UNLOCKED_MIN_BYTES) > physical {
        physical.saturating_sub(UNLOCKED_MIN_BYTES)
    } else {
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_the_physical_memory_less_128_mib_is_locked() {
        assert_eq!(capped(1 << 20, 1 << 30), 1 << 20);
        assert_eq!(capped(1 << 30, 1 << 30), (1 << 30) - (128 << 20));
        assert_eq!(capped(1 << 20, 0), 1 << 20);
    }

    #[test]
    fn a_small_lock_holds_and_lets_go() {
        let pinned = PinnedMemory::lock(64 << 10).unwrap();
        assert_eq!(pinned.len(), 64 << 10);
    }
}
