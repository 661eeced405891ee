//! The RAM backend: memory allocated lazily in fixed-size chunks.
//!
//! A LUN of any size costs only its chunk table until written: a chunk is allocated on its
//! first write and freed again when an unmap covers all of it. Each chunk has its own
//! lock, so I/O to different chunks from different connections does not contend. A
//! request that spans chunks takes their locks one at a time, in ascending order; the
//! disk layer provides atomicity across chunks where SCSI needs it (COMPARE AND WRITE).

use std::io;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{check_range, Backend};

/// Smallest chunk: small enough that GET LBA STATUS shows unmapped extents at a useful
/// granularity, large enough that the table stays small for LUNs of a few GiB.
const CHUNK_BYTES_MIN: u64 = 64 * 1024;
/// The chunk table never exceeds this many entries; larger LUNs get larger chunks.
const CHUNKS_MAX: u64 = 1 << 20;
/// A retired LUN's memory goes back this much at a time, with [`RELEASE_PAUSE`] between:
/// the allocator's arenas it goes back to are the event loops' too.
const RELEASE_PIECE_BYTES: u64 = 4 << 20;
const RELEASE_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

type Chunk = Option<Box<[u8]>>;

/// Memory-backed storage, allocated on first write.
#[derive(Debug)]
pub struct RamBackend {
    size_bytes: u64,
    chunk_bytes: u64,
    chunks: Vec<RwLock<Chunk>>,
}

impl RamBackend {
    /// A RAM LUN of `size_bytes`; nothing is allocated until written.
    pub fn new(size_bytes: u64) -> RamBackend {
        let mut chunk_bytes = CHUNK_BYTES_MIN;
        while size_bytes.div_ceil(chunk_bytes) > CHUNKS_MAX {
            chunk_bytes *= 2;
        }
        let count = size_bytes.div_ceil(chunk_bytes);
        let chunks = (0..count).map(|_| RwLock::new(None)).collect();
        RamBackend {
            size_bytes,
            chunk_bytes,
            chunks,
        }
    }

    /// How many bytes are allocated right now (for tests and statistics).
    pub fn allocated_bytes(&self) -> u64 {
        self.chunks
            .iter()
            .filter(|chunk| read_lock(chunk).is_some())
            .count() as u64
            * self.chunk_bytes
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
}

fn read_lock(lock: &RwLock<Chunk>) -> RwLockReadGuard<'_, Chunk> {
    // A panic while holding a chunk lock leaves plain bytes behind, never a broken
    // invariant, so a poisoned lock is still safe to use.
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write_lock(lock: &RwLock<Chunk>) -> RwLockWriteGuard<'_, Chunk> {
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
            let chunk = read_lock(self.chunks.get(index).ok_or_else(missing_chunk)?);
            let target = &mut buf[done..done + piece];
            match chunk.as_deref() {
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
            let chunk_len = self.chunk_len(index);
            let mut chunk = write_lock(self.chunks.get(index).ok_or_else(missing_chunk)?);
            let bytes = chunk.get_or_insert_with(|| vec![0u8; chunk_len].into_boxed_slice());
            bytes[within..within + piece].copy_from_slice(&data[done..done + piece]);
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
            let mut chunk = write_lock(self.chunks.get(index).ok_or_else(missing_chunk)?);
            if whole {
                *chunk = None;
            } else if let Some(bytes) = chunk.as_mut() {
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
            let mapped = read_lock(self.chunks.get(index).ok_or_else(missing_chunk)?).is_some();
            match state {
                None => state = Some(mapped),
                Some(previous) if previous != mapped => break,
                Some(_) => {}
            }
            run += piece as u64;
        }
        Ok((state.unwrap_or(true), run))
    }

    fn release_memory(&mut self) {
        let per_piece = (RELEASE_PIECE_BYTES / self.chunk_bytes).max(1) as usize;
        for (index, chunk) in self.chunks.iter_mut().enumerate() {
            let freed = chunk
                .get_mut()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take();
            if freed.is_some() && index % per_piece == per_piece - 1 {
                std::thread::sleep(RELEASE_PAUSE);
            }
        }
    }
}
