//! Where a pool's bytes live: a file or block device ([`FileStore`]), or in the tests a
//! simulated disk that can lose its unsynced writes ([`SimStore`], a power cut).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};

/// Byte storage with a durability barrier.
pub trait Store: Send + Sync + std::fmt::Debug {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Every write that completed before the call is durable when it returns.
    fn sync(&self) -> io::Result<()>;
    /// Gives the range back (it reads as zeros afterwards, or keeps old bytes where the
    /// store cannot deallocate: the pool never reads a free chunk's bytes as data).
    fn discard(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Makes later writes into the range overwrite blocks the store already holds, so
    /// that a sync after them flushes data only. Writes zeros over holes (which read as
    /// zeros already: the contents do not change) and syncs them; returns the bytes
    /// written. Stores without holes do nothing.
    fn allocate(&self, _offset: u64, _len: u64) -> io::Result<u64> {
        Ok(0)
    }
}

/// A regular file (holes punched on discard) or block device.
#[derive(Debug)]
pub struct FileStore {
    file: File,
    punch_works: AtomicBool,
}

impl FileStore {
    pub fn new(file: File) -> FileStore {
        FileStore {
            file,
            punch_works: AtomicBool::new(true),
        }
    }
}

impl Store for FileStore {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        if !self.punch_works.load(Ordering::Relaxed) {
            return Ok(());
        }
        let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len))
        else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        // SAFETY: fallocate takes a descriptor `self.file` keeps open and plain integers.
        let rc = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset,
                len,
            )
        };
        if rc != 0 {
            // A device or file system without hole punching keeps the space; the chunk is
            // free in the map all the same.
            self.punch_works.store(false, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Holes (and, on ext4 and XFS, unwritten extents, which `SEEK_HOLE` reports as
    /// holes) of a regular file are filled with zeros: an append into one would allocate
    /// a block (or convert an extent), and its `fdatasync` would then wait for a file
    /// system journal commit instead of one data flush. A block device has no holes.
    fn allocate(&self, offset: u64, len: u64) -> io::Result<u64> {
        if !self.file.metadata()?.file_type().is_file() {
            return Ok(0);
        }
        let end = offset.saturating_add(len);
        let zeros = vec![0u8; 1 << 20];
        let mut written = 0u64;
        let mut at = offset;
        while at < end {
            let Some(hole) = seek(&self.file, at, libc::SEEK_HOLE)? else {
                break;
            };
            if hole >= end {
                break;
            }
            // No data after the hole (ENXIO): it runs to the end of the file.
            let stop = seek(&self.file, hole, libc::SEEK_DATA)?
                .unwrap_or(end)
                .min(end);
            let mut from = hole;
            while from < stop {
                let n = (stop - from).min(zeros.len() as u64) as usize;
                self.file.write_all_at(&zeros[..n], from)?;
                from += n as u64;
            }
            written += stop - hole;
            at = stop;
        }
        if written > 0 {
            self.file.sync_data()?;
        }
        Ok(written)
    }
}

/// `lseek(2)` with `SEEK_HOLE`/`SEEK_DATA`: the offset found, or `None` when there is none
/// after `offset` (ENXIO).
fn seek(file: &File, offset: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let offset = libc::off_t::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: lseek takes a descriptor `file` keeps open and plain integers.
    let found = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
    if found < 0 {
        let error = io::Error::last_os_error();
        return match error.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            _ => Err(error),
        };
    }
    Ok(Some(found as u64))
}

#[cfg(test)]
pub use sim::SimStore;

#[cfg(test)]
mod sim {
    use std::collections::{HashMap, HashSet};
    use std::sync::{Arc, Mutex};

    use super::*;

    const SECTOR: u64 = 512;

    #[derive(Debug, Default)]
    struct Disk {
        /// What reads see.
        current: HashMap<u64, [u8; SECTOR as usize]>,
        /// What survives a power cut.
        durable: HashMap<u64, [u8; SECTOR as usize]>,
        dirty: HashSet<u64>,
        /// Syncs asked for, so tests can count the flushes an operation costs.
        syncs: u64,
    }

    /// A disk of 512-byte sectors in memory. A power cut ([`SimStore::power_cut`]) keeps,
    /// for each sector written since the last sync, either its old or its new contents,
    /// chosen at random: unsynced writes may land in any order and any part.
    #[derive(Debug, Clone, Default)]
    pub struct SimStore {
        disk: Arc<Mutex<Disk>>,
    }

    impl SimStore {
        pub fn new() -> SimStore {
            SimStore::default()
        }

        /// How many syncs this disk has seen.
        pub fn syncs(&self) -> u64 {
            self.disk.lock().unwrap().syncs
        }

        /// The disk after a power cut, as a new store (this one stays as it was).
        pub fn power_cut(&self, seed: u64) -> SimStore {
            let disk = self.disk.lock().unwrap();
            let mut state = seed | 1;
            let mut random = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            let mut survived = disk.durable.clone();
            let mut dirty: Vec<u64> = disk.dirty.iter().copied().collect();
            dirty.sort_unstable();
            for sector in dirty {
                if random() % 2 == 0 {
                    match disk.current.get(&sector) {
                        Some(bytes) => survived.insert(sector, *bytes),
                        None => survived.remove(&sector),
                    };
                }
            }
            SimStore {
                disk: Arc::new(Mutex::new(Disk {
                    current: survived.clone(),
                    durable: survived,
                    dirty: HashSet::new(),
                    syncs: 0,
                })),
            }
        }
    }

    impl Store for SimStore {
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            let disk = self.disk.lock().unwrap();
            let mut done = 0usize;
            while done < buf.len() {
                let at = offset + done as u64;
                let within = (at % SECTOR) as usize;
                let n = (SECTOR as usize - within).min(buf.len() - done);
                match disk.current.get(&(at / SECTOR)) {
                    Some(s) => buf[done..done + n].copy_from_slice(&s[within..within + n]),
                    None => buf[done..done + n].fill(0),
                }
                done += n;
            }
            Ok(())
        }

        fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
            let mut disk = self.disk.lock().unwrap();
            let mut done = 0usize;
            while done < data.len() {
                let at = offset + done as u64;
                let within = (at % SECTOR) as usize;
                let n = (SECTOR as usize - within).min(data.len() - done);
                let sector = at / SECTOR;
                disk.current.entry(sector).or_insert([0; SECTOR as usize])[within..within + n]
                    .copy_from_slice(&data[done..done + n]);
                disk.dirty.insert(sector);
                done += n;
            }
            Ok(())
        }

        fn sync(&self) -> io::Result<()> {
            let mut disk = self.disk.lock().unwrap();
            disk.durable = disk.current.clone();
            disk.dirty.clear();
            disk.syncs += 1;
            Ok(())
        }

        fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
            let mut disk = self.disk.lock().unwrap();
            let first = offset.div_ceil(SECTOR);
            let end = (offset + len) / SECTOR;
            for sector in first..end {
                disk.current.remove(&sector);
                disk.dirty.insert(sector);
            }
            Ok(())
        }
    }
}
