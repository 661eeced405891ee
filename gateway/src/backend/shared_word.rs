//! A 64-bit counter in a small file that every gateway process exporting the same backing
//! file maps (`MAP_SHARED`), so that an event on one process (a LOGICAL UNIT RESET through
//! its port) reaches the nexuses of the others: one LU over several gateway processes is
//! one LU to SAM-5 6.3.3, whose reset establishes a unit attention for every I_T nexus,
//! whichever port it came through.
//!
//! The word is read with one atomic load per command (a cache line that only changes on
//! an event), so the I/O path takes no lock and makes no system call. Each holder keeps the
//! value it has seen; a newer value is taken by exactly one of its threads
//! ([`SharedWord::take_change`]).

use std::fs::OpenOptions;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of the file and of the mapping: one word.
const WORD_BYTES: usize = 8;

/// One shared word (see the module docs).
#[derive(Debug)]
pub struct SharedWord {
    word: NonNull<AtomicU64>,
    seen: AtomicU64,
    path: String,
}

// SAFETY: the mapping is only ever accessed through `AtomicU64`, which is Sync; the
// pointer stays valid until `drop` unmaps it.
unsafe impl Send for SharedWord {}
// SAFETY: as above: every access is an atomic operation.
unsafe impl Sync for SharedWord {}

impl SharedWord {
    /// Maps `path`, made (8 zero bytes) when missing. What it holds now counts as seen.
    pub fn open(path: &str) -> io::Result<SharedWord> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        // Growing to the same length never changes the bytes another process wrote.
        if file.metadata()?.len() < WORD_BYTES as u64 {
            file.set_len(WORD_BYTES as u64)?;
        }
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh shared mapping of the file's first 8 bytes, which exist (the
        // length was checked above); no other Rust object aliases it.
        let mapped = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                WORD_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if mapped == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let word = NonNull::new(mapped.cast::<AtomicU64>())
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        let shared = SharedWord {
            word,
            seen: AtomicU64::new(0),
            path: path.to_string(),
        };
        shared
            .seen
            .store(shared.word().load(Ordering::Acquire), Ordering::Relaxed);
        Ok(shared)
    }

    fn word(&self) -> &AtomicU64 {
        // SAFETY: `word` points into a live, page-aligned mapping of 8 bytes that only
        // atomics touch, in this process and in the others that map it.
        unsafe { self.word.as_ref() }
    }

    /// Where the word lives (for logs).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Replaces the value's low byte with `tag` and advances its generation (the upper
    /// 56 bits), so every other holder sees a change; this holder does not.
    pub fn announce(&self, tag: u8) {
        let mut current = self.word().load(Ordering::Acquire);
        loop {
            let next = ((current >> 8).wrapping_add(1) << 8) | u64::from(tag);
            match self.word().compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.seen.store(next, Ordering::Release);
                    return;
                }
                Err(now) => current = now,
            }
        }
    }

    /// The tag of a change another holder announced since this one last looked, taken
    /// once (by one thread). Several announcements between two looks read as the last.
    pub fn take_change(&self) -> Option<u8> {
        let now = self.word().load(Ordering::Acquire);
        let seen = self.seen.load(Ordering::Relaxed);
        if now == seen {
            return None;
        }
        self.seen
            .compare_exchange(seen, now, Ordering::AcqRel, Ordering::Relaxed)
            .ok()
            .map(|_| now as u8)
    }
}

impl Drop for SharedWord {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`, with its length; nothing uses it after drop.
        unsafe {
            libc::munmap(self.word.as_ptr().cast(), WORD_BYTES);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_announced_by_one_holder_is_taken_once_by_each_other() {
        let dir = std::env::temp_dir().join(format!("shared-word-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lu.resets");
        let path = path.to_str().unwrap();
        let _ = std::fs::remove_file(path);
        let a = SharedWord::open(path).unwrap();
        let b = SharedWord::open(path).unwrap();
        let c = SharedWord::open(path).unwrap();
        assert_eq!(b.take_change(), None, "nothing announced yet");
        a.announce(3);
        assert_eq!(
            a.take_change(),
            None,
            "the announcer has seen its own change"
        );
        assert_eq!(b.take_change(), Some(3));
        assert_eq!(b.take_change(), None, "taken once");
        a.announce(1);
        a.announce(2);
        assert_eq!(c.take_change(), Some(2), "the last of two announcements");
        assert_eq!(b.take_change(), Some(2));
        // A holder opened later starts from what is there.
        let d = SharedWord::open(path).unwrap();
        assert_eq!(d.take_change(), None);
        b.announce(7);
        assert_eq!(a.take_change(), Some(7));
        assert_eq!(d.take_change(), Some(7));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
