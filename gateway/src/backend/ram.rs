//! The RAM backend: memory mapped lazily, tracked in fixed-size chunks.
//!
//! A LUN of any size costs only its chunk table until written. Its bytes live in
//! anonymous mappings of the kernel's, never in the allocator's heap: address space is
//! reserved a slab (1 GiB) at a time at the first write into it, pages are given by the
//! kernel at their first write, a chunk an unmap covers whole gives its pages back
//! (`MADV_DONTNEED`), and a LUN that is dropped or retired gives everything back at once
//! (`munmap`). Held in the heap instead (64 KiB boxes), a detached 2 GiB RAM LUN left the
//! gateway's resident size at 2.2 GB (the arenas keep what is freed into them), and freeing
//! it stalled the event loops, which allocate from the same arenas for every command.
//!
//! Each chunk has its own lock, so I/O to different chunks from different connections does
//! not contend. A request that spans chunks takes their locks one at a time, in ascending
//! order; the disk layer provides atomicity across chunks where SCSI needs it (COMPARE AND
//! WRITE).

use std::io;
use std::ptr::NonNull;
use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{check_range, Backend};

/// Smallest chunk: small enough that GET LBA STATUS shows unmapped extents at a useful
/// granularity, large enough that the table stays small for LUNs of a few GiB.
const CHUNK_BYTES_MIN: u64 = 64 * 1024;
/// The chunk table never exceeds this many entries; larger LUNs get larger chunks.
const CHUNKS_MAX: u64 = 1 << 20;
/// Address space is reserved this much at a time (or a chunk, if larger): few mappings
/// (a 4 TiB LUN is 4,096, far below `vm.max_map_count`), and no more commit charged than
/// the slabs written into.
const SLAB_BYTES_MIN: u64 = 1 << 30;

/// One anonymous private mapping, unmapped on drop.
#[derive(Debug)]
struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; who may touch which bytes is
// decided by the chunk locks of the backend that owns it (`RamBackend::bytes`).
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh anonymous mapping at an address the kernel picks; nothing aliases
        // it. NORESERVE: pages are charged when written, not all at once.
        let mapped = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if mapped == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(mapped.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        // Small pages only: with transparent huge pages always on (a common default), a
        // 4 KiB write would take a 2 MiB page, and the memory of a sparsely written LUN
        // would follow its 2 MiB regions, not its 64 KiB chunks. Advice only: a kernel
        // without THP refuses it, which changes nothing.
        // SAFETY: the mapping just made, whole.
        unsafe { libc::madvise(mapped, len, libc::MADV_NOHUGEPAGE) };
        Ok(Mapping { base, len })
    }

    /// Gives the pages of `start..start + len` back to the kernel; they read as zeros.
    /// False when the kernel refused (the caller zeroes the bytes itself).
    fn discard(&self, start: usize, len: usize) -> bool {
        debug_assert!(start + len <= self.len);
        // SAFETY: the range lies in this mapping (chunk ranges are page-aligned: chunks are
        // at least 64 KiB, powers of two; a LUN's last chunk may be shorter, and the kernel
        // rounds its end up within the mapping's last page). The caller holds the chunk's
        // write lock, so no slice of it is alive.
        let rc = unsafe {
            libc::madvise(
                self.base.as_ptr().add(start).cast(),
                len,
                libc::MADV_DONTNEED,
            )
        };
        if rc != 0 {
            tracing::warn!(error = %io::Error::last_os_error(), "madvise(MADV_DONTNEED) failed");
        }
        rc == 0
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once; no slice of it outlives the
        // backend's chunk guards, which borrow the backend and so end before this drop.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// A slab's mapping, made at the first write into it, or the error that refused it.
type Slab = OnceLock<Result<Mapping, i32>>;

/// Memory-backed storage, mapped on first write.
#[derive(Debug)]
pub struct RamBackend {
    size_bytes: u64,
    chunk_bytes: u64,
    slab_bytes: u64,
    /// Per chunk: whether it was written since it was last unmapped (its pages may be
    /// resident); its lock guards its bytes.
    chunks: Vec<RwLock<bool>>,
    slabs: Vec<Slab>,
}

impl RamBackend {
    /// A RAM LUN of `size_bytes`; nothing is mapped until written.
    pub fn new(size_bytes: u64) -> RamBackend {
        let mut chunk_bytes = CHUNK_BYTES_MIN;
        while size_bytes.div_ceil(chunk_bytes) > CHUNKS_MAX {
            chunk_bytes *= 2;
        }
        let slab_bytes = SLAB_BYTES_MIN.max(chunk_bytes);
        let count = size_bytes.div_ceil(chunk_bytes);
        RamBackend {
            size_bytes,
            chunk_bytes,
            slab_bytes,
            chunks: (0..count).map(|_| RwLock::new(false)).collect(),
            slabs: (0..size_bytes.div_ceil(slab_bytes))
                .map(|_| OnceLock::new())
                .collect(),
        }
    }

    /// How many bytes are allocated right now (for tests and statistics).
    pub fn allocated_bytes(&self) -> u64 {
        self.chunks.iter().filter(|chunk| *read_lock(chunk)).count() as u64 * self.chunk_bytes
    }

    /// Splits `offset..offset+len` into (chunk index, offset within chunk, length) pieces.
    fn pieces(&self, offset: u64, len: u64) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        let end = offset + len;
        let mut position = offset;
        std::iter::from_fn(move || {
            if position >= end {
                return None;
            }
            let index = position / self.chunk_bytes;
            let within = position % self.chunk_bytes;
            let piece = (self.chunk_bytes - within).min(end - position);
            position += piece;
            // Indexes are below `chunks.len()` and pieces below `chunk_bytes`, both of
            // which fit in memory, so the conversions cannot truncate.
            Some((index as usize, within as usize, piece as usize))
        })
    }

    fn chunk_len(&self, index: usize) -> usize {
        let start = index as u64 * self.chunk_bytes;
        (self.size_bytes - start).min(self.chunk_bytes) as usize
    }

    fn chunk(&self, index: usize) -> io::Result<&RwLock<bool>> {
        self.chunks.get(index).ok_or_else(missing_chunk)
    }

    /// The slab holding chunk `index` and the chunk's offset in it; `map` makes the slab's
    /// mapping when it has none yet.
    fn slab_of(&self, index: usize, map: bool) -> io::Result<Option<(&Mapping, usize)>> {
        let start = index as u64 * self.chunk_bytes;
        let slab_index = (start / self.slab_bytes) as usize;
        let slab = self.slabs.get(slab_index).ok_or_else(missing_chunk)?;
        let within = (start % self.slab_bytes) as usize;
        let made = if map {
            Some(slab.get_or_init(|| {
                let slab_start = slab_index as u64 * self.slab_bytes;
                let len = (self.size_bytes - slab_start).min(self.slab_bytes) as usize;
                Mapping::new(len).map_err(|e| e.raw_os_error().unwrap_or(libc::ENOMEM))
            }))
        } else {
            slab.get()
        };
        match made {
            None => Ok(None),
            Some(Ok(mapping)) => Ok(Some((mapping, within))),
            Some(Err(errno)) => Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!(
                    "RAM backend: no memory for {} bytes at offset {}: {}",
                    self.slab_bytes,
                    slab_index as u64 * self.slab_bytes,
                    io::Error::from_raw_os_error(*errno)
                ),
            )),
        }
    }

    /// The bytes of chunk `index`, for a caller holding its lock (read for `&`, write for
    /// `&mut`: the guard passed in proves it).
    fn bytes<'a>(
        &'a self,
        index: usize,
        _held: &'a RwLockReadGuard<'_, bool>,
    ) -> io::Result<Option<&'a [u8]>> {
        Ok(self.slab_of(index, false)?.map(|(mapping, within)| {
            // SAFETY: the chunk's range lies in its slab's mapping; the read lock held keeps
            // writers of this chunk out for the slice's life, and chunks do not overlap.
            unsafe {
                std::slice::from_raw_parts(mapping.base.as_ptr().add(within), self.chunk_len(index))
            }
        }))
    }

    fn bytes_mut<'a>(
        &'a self,
        index: usize,
        _held: &'a mut RwLockWriteGuard<'_, bool>,
    ) -> io::Result<&'a mut [u8]> {
        let (mapping, within) = self.slab_of(index, true)?.ok_or_else(missing_chunk)?;
        // SAFETY: the chunk's range lies in its slab's mapping; the write lock held keeps
        // every other user of this chunk out for the slice's life, and chunks do not
        // overlap.
        Ok(unsafe {
            std::slice::from_raw_parts_mut(mapping.base.as_ptr().add(within), self.chunk_len(index))
        })
    }
}

fn read_lock(lock: &RwLock<bool>) -> RwLockReadGuard<'_, bool> {
    // A panic while holding a chunk lock leaves plain bytes behind, never a broken
    // invariant, so a poisoned lock is still safe to use.
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write_lock(lock: &RwLock<bool>) -> RwLockWriteGuard<'_, bool> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn missing_chunk() -> io::Error {
    io::Error::other("RAM backend: chunk index outside the table")
}

impl Backend for RamBackend {
    fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(self.size_bytes, offset, buf.len() as u64)?;
        let mut done = 0;
        for (index, within, piece) in self.pieces(offset, buf.len() as u64) {
            let chunk = read_lock(self.chunk(index)?);
            let target = &mut buf[done..done + piece];
            match self.bytes(index, &chunk)?.filter(|_| *chunk) {
                Some(bytes) => target.copy_from_slice(&bytes[within..within + piece]),
                None => target.fill(0),
            }
            done += piece;
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        check_range(self.size_bytes, offset, data.len() as u64)?;
        let mut done = 0;
        for (index, within, piece) in self.pieces(offset, data.len() as u64) {
            let mut chunk = write_lock(self.chunk(index)?);
            // An unwritten chunk's pages are zeros (never touched, or discarded by the
            // unmap that cleared it), so a part written leaves the rest reading zeros.
            let bytes = self.bytes_mut(index, &mut chunk)?;
            bytes[within..within + piece].copy_from_slice(&data[done..done + piece]);
            *chunk = true;
            done += piece;
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    fn unmap(&self, offset: u64, len: u64) -> io::Result<()> {
        check_range(self.size_bytes, offset, len)?;
        for (index, within, piece) in self.pieces(offset, len) {
            let whole = within == 0 && piece == self.chunk_len(index);
            let mut chunk = write_lock(self.chunk(index)?);
            if !*chunk {
                continue;
            }
            let bytes = self.bytes_mut(index, &mut chunk)?;
            if whole {
                let (mapping, start) = self.slab_of(index, false)?.ok_or_else(missing_chunk)?;
                if !mapping.discard(start, bytes.len()) {
                    bytes.fill(0);
                }
                *chunk = false;
            } else {
                bytes[within..within + piece].fill(0);
            }
        }
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "ram"
    }

    fn thin(&self) -> bool {
        true
    }

    fn mapped_extent(&self, offset: u64, max_len: u64) -> io::Result<(bool, u64)> {
        let len = max_len.min(self.size_bytes.saturating_sub(offset));
        check_range(self.size_bytes, offset, len)?;
        let mut state = None;
        let mut run = 0u64;
        for (index, _, piece) in self.pieces(offset, len) {
            let mapped = *read_lock(self.chunk(index)?);
            match state {
                None => state = Some(mapped),
                Some(previous) if previous != mapped => break,
                Some(_) => {}
            }
            run += piece as u64;
        }
        Ok((state.unwrap_or(true), run))
    }

    fn holds_memory(&self) -> bool {
        true
    }

    fn release_memory(&mut self) {
        // Every mapping goes back to the kernel at once: no allocator lock is taken, so
        // the event loops do not wait for it.
        for slab in &mut self.slabs {
            slab.take();
        }
        for chunk in &mut self.chunks {
            *chunk
                .get_mut()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: u64 = CHUNK_BYTES_MIN;
    const PAGE: usize = 4096;

    /// Pages of chunk `index` the kernel holds in memory (`mincore`).
    fn resident_pages(ram: &RamBackend, index: usize) -> usize {
        let Some((mapping, within)) = ram.slab_of(index, false).unwrap() else {
            return 0;
        };
        let len = ram.chunk_len(index);
        let mut vector = vec![0u8; len.div_ceil(PAGE)];
        // SAFETY: the range lies in the mapping (page-aligned: chunks are 64 KiB); the
        // vector has a byte per page.
        let rc = unsafe {
            libc::mincore(
                mapping.base.as_ptr().add(within).cast(),
                len,
                vector.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0, "mincore: {}", io::Error::last_os_error());
        vector.iter().filter(|&&v| v & 1 == 1).count()
    }

    #[test]
    fn a_chunk_unmapped_whole_leaves_memory_and_reads_zeros_around_a_later_write() {
        let ram = RamBackend::new(4 * CHUNK);
        assert_eq!(
            resident_pages(&ram, 1),
            0,
            "nothing is mapped until written"
        );
        ram.write_at(0, &vec![7u8; 4 * CHUNK as usize]).unwrap();
        assert_eq!(resident_pages(&ram, 1), CHUNK as usize / PAGE);
        ram.unmap(CHUNK, CHUNK).unwrap();
        assert_eq!(
            resident_pages(&ram, 1),
            0,
            "its pages went back to the kernel"
        );
        assert_eq!(resident_pages(&ram, 2), CHUNK as usize / PAGE);
        ram.write_at(CHUNK + 512, &[9u8; 512]).unwrap();
        let mut back = vec![1u8; CHUNK as usize];
        ram.read_at(CHUNK, &mut back).unwrap();
        assert!(back[..512].iter().all(|&b| b == 0));
        assert!(back[512..1024].iter().all(|&b| b == 9));
        assert!(back[1024..].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_lun_shorter_than_a_page_is_written_unmapped_and_released() {
        let mut ram = RamBackend::new(1000);
        ram.write_at(0, &[3u8; 1000]).unwrap();
        ram.unmap(0, 1000).unwrap();
        assert_eq!(ram.allocated_bytes(), 0);
        ram.write_at(10, &[4u8; 10]).unwrap();
        let mut back = [1u8; 1000];
        ram.read_at(0, &mut back).unwrap();
        assert!(back[..10].iter().all(|&b| b == 0));
        assert!(back[10..20].iter().all(|&b| b == 4));
        assert!(back[20..].iter().all(|&b| b == 0));
        ram.release_memory();
        assert!(ram.slabs.iter().all(|slab| slab.get().is_none()));
        ram.read_at(0, &mut back).unwrap();
        assert_eq!(back, [0u8; 1000]);
    }
}
