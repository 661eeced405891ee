//! The pool engine: the chunk map of every volume, reference counts, allocation, copy on
//! write, and the commit that makes acknowledged writes durable.
//!
//! Concurrency: the map is split into [`STRIPES`] stripes by `(volume, virtual chunk)`,
//! each behind its own mutex, with its own free list and its own list of changes since
//! the last commit. A read or write locks only the stripe of the chunk it touches, so two
//! cores meet only when they touch chunks of the same stripe; no lock or counter is shared
//! by every I/O. Reference counts are atomics. The commit lock is taken by flushes and
//! volume operations only.
//!
//! Crash consistency (the rules the code keeps):
//! 1. A commit takes each stripe's changes, syncs the data, then appends the changes to
//!    the journal and syncs again: no map entry is durable before the data it points to.
//! 2. A chunk is written in place only when this entry is its only reference, in memory
//!    and on disk: decrements of reference counts (unmap, copy on write, delete) are
//!    applied only after the commit that records them, so a chunk another volume still
//!    maps on disk is never overwritten.
//! 3. A chunk is reused only after the commit that freed it; its stale bytes are never
//!    read, because a new chunk starts with an empty sub-chunk bitmap and unwritten
//!    sub-chunks read as zeros.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::format::{
    self, Bitmap, Checkpoint, Layout, MapRow, Record, Superblock, VolumeRecord, CHUNK_BYTES, FULL,
    SUB_BYTES, SUPERBLOCK_BYTES,
};
use super::store::Store;
use super::PoolError;

/// Stripes of the map: more than the cores of a gateway, so two rarely share one.
pub const STRIPES: usize = 64;
/// Free chunks a stripe takes from the pool's reserve at a time.
const REFILL_CHUNKS: usize = 64;
/// GET LBA STATUS looks at most this many chunks for one answer (the answer stays exact
/// for the length it reports).
const EXTENT_SCAN_CHUNKS: u64 = 1 << 16;

/// One mapped chunk of one volume.
#[derive(Debug, Clone)]
struct Entry {
    pchunk: u32,
    /// `None`: every sub-chunk written (the steady state, no bitmap kept).
    bitmap: Option<Box<Bitmap>>,
}

impl Entry {
    fn bitmap(&self) -> Bitmap {
        self.bitmap.as_deref().copied().unwrap_or(FULL)
    }

    fn valid(&self, sub: usize) -> bool {
        bit(&self.bitmap(), sub)
    }
}

fn bit(bitmap: &Bitmap, sub: usize) -> bool {
    bitmap[sub / 64] & (1 << (sub % 64)) != 0
}

fn set_bits(bitmap: &mut Bitmap, subs: std::ops::Range<usize>, on: bool) {
    for sub in subs {
        if on {
            bitmap[sub / 64] |= 1 << (sub % 64);
        } else {
            bitmap[sub / 64] &= !(1 << (sub % 64));
        }
    }
}

fn boxed(bitmap: Bitmap) -> Option<Box<Bitmap>> {
    (bitmap != FULL).then(|| Box::new(bitmap))
}

type Key = (u32, u32);

#[derive(Debug, Default)]
struct Stripe {
    map: HashMap<Key, Entry>,
    /// Keys changed since the last commit.
    dirty: HashSet<Key>,
    /// Chunks this stripe may hand out: free on disk too.
    free: Vec<u32>,
    /// Reference counts to drop once the commit that records why is durable (rule 2).
    decref: Vec<u32>,
}

/// What only flushes and volume operations touch.
#[derive(Debug)]
struct Control {
    superblock: Superblock,
    /// Next journal byte and batch sequence number.
    journal_at: u64,
    sequence: u64,
    volumes: BTreeMap<u32, VolumeRecord>,
    /// `volumes` by name: a pool of tens of thousands of volumes (bound through protocol
    /// endpoints) finds one without a scan.
    by_name: HashMap<String, u32>,
    next_volume_id: u32,
    /// Volumes exported right now (one LUN each).
    open: HashSet<u32>,
    /// Volumes made by [`Engine::reserve_volume`] whose record is not in the journal yet:
    /// checkpoints leave them out and volume operations refuse them.
    unjournaled: HashSet<u32>,
    /// The next flush syncs even if it finds nothing to drain: a flush failed after
    /// draining dirty keys, or a record was appended without a sync
    /// ([`Engine::journal_reserved`]).
    sync_owed: bool,
}

impl Control {
    /// Adds volume `name` of `size_bytes` to the in-memory tables with the next ID (the
    /// caller journals it); an existing name is refused.
    fn new_volume(&mut self, name: &str, size_bytes: u64) -> Result<VolumeRecord, PoolError> {
        if self.by_name.contains_key(name) {
            return Err(PoolError::VolumeExists(name.to_string()));
        }
        let record = VolumeRecord {
            id: self.next_volume_id,
            size_bytes,
            name: name.to_string(),
        };
        self.next_volume_id += 1;
        self.by_name.insert(record.name.clone(), record.id);
        self.volumes.insert(record.id, record.clone());
        Ok(record)
    }
}

/// A volume as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    pub id: u32,
    pub name: String,
    pub size_bytes: u64,
    /// Bytes of written sub-chunks mapped by this volume (shared ones count in each).
    pub allocated_bytes: u64,
    /// Chunks mapped by this volume.
    pub chunks: u64,
}

/// What [`Engine::check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub volumes: usize,
    /// Map entries.
    pub mapped_entries: u64,
    /// Physical chunks referenced at least once.
    pub used_chunks: u64,
    pub free_chunks: u64,
    pub total_chunks: u64,
    /// Bytes a checkpoint of the present state takes.
    pub metadata_bytes: u64,
    pub problems: Vec<String>,
}

pub struct Engine {
    store: Box<dyn Store>,
    layout: Layout,
    pool_id: u64,
    stripes: Box<[Mutex<Stripe>]>,
    refcounts: Box<[AtomicU32]>,
    reserve: Mutex<Vec<u32>>,
    control: Mutex<Control>,
    /// Flushes that found nothing to sync ([`Engine::flush`]).
    flushes_skipped: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("layout", &self.layout)
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn stripe_of(key: Key) -> usize {
    let mixed = (u64::from(key.0) << 32 | u64::from(key.1)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (mixed >> 58) as usize % STRIPES
}

fn no_space() -> io::Error {
    io::Error::new(
        io::ErrorKind::StorageFull,
        crate::backend::SpaceExhausted("the pool has no free chunk"),
    )
}

fn no_metadata_space() -> io::Error {
    io::Error::new(
        io::ErrorKind::StorageFull,
        crate::backend::SpaceExhausted("the pool's metadata has no room for more shared entries"),
    )
}

impl Engine {
    /// Formats `store` as an empty pool of `chunks` data chunks.
    pub fn format(store: &dyn Store, layout: Layout, pool_id: u64) -> io::Result<()> {
        let checkpoint = Checkpoint {
            next_volume_id: 1,
            ..Checkpoint::default()
        }
        .encode();
        store.write_at(layout.slot_offset(0), &checkpoint)?;
        store.write_at(SUPERBLOCK_BYTES, &[0u8; SUPERBLOCK_BYTES as usize])?;
        store.sync()?;
        let superblock = Superblock {
            layout,
            pool_id,
            generation: 0,
            checkpoint_bytes: checkpoint.len() as u64,
            checkpoint_crc: datapath::pdu::digest::crc32c(&checkpoint),
        };
        store.write_at(0, &superblock.encode())?;
        store.sync()
    }

    /// Loads a pool: the newest checkpoint, then the journal after it.
    pub fn open(store: Box<dyn Store>) -> Result<Engine, PoolError> {
        let mut a = vec![0u8; SUPERBLOCK_BYTES as usize];
        let mut b = vec![0u8; SUPERBLOCK_BYTES as usize];
        store.read_at(0, &mut a)?;
        store.read_at(SUPERBLOCK_BYTES, &mut b)?;
        let superblock = Superblock::pick(&a, &b)?;
        superblock.check_geometry()?;
        let layout = superblock.layout;
        let mut bytes = vec![0u8; superblock.checkpoint_bytes as usize];
        store.read_at(
            layout.slot_offset((superblock.generation % 2) as u8),
            &mut bytes,
        )?;
        if datapath::pdu::digest::crc32c(&bytes) != superblock.checkpoint_crc {
            return Err(format::FormatError::Checkpoint("CRC").into());
        }
        let checkpoint = Checkpoint::decode(&bytes, layout.chunks)?;
        let mut volumes: BTreeMap<u32, VolumeRecord> =
            checkpoint.volumes.into_iter().map(|v| (v.id, v)).collect();
        let mut next_volume_id = checkpoint.next_volume_id;
        // Rows go straight into their stripes: no second copy of the map at open.
        let mut stripes: Vec<Stripe> = (0..STRIPES).map(|_| Stripe::default()).collect();
        for row in checkpoint.rows {
            let key = (row.volume, row.vchunk);
            stripes[stripe_of(key)].map.insert(
                key,
                Entry {
                    pchunk: row.pchunk,
                    bitmap: boxed(row.bitmap),
                },
            );
        }
        // Replay the journal.
        let (mut journal_at, mut sequence) = (0u64, 0u64);
        loop {
            let mut header = vec![0u8; format::BATCH_HEADER_BYTES];
            if journal_at + header.len() as u64 > layout.journal_bytes {
                break;
            }
            store.read_at(layout.journal_offset() + journal_at, &mut header)?;
            let Some(len) = format::batch_body_len(&header, superblock.generation, sequence) else {
                break;
            };
            let total = (format::BATCH_HEADER_BYTES + len).div_ceil(SUPERBLOCK_BYTES as usize)
                * SUPERBLOCK_BYTES as usize;
            if journal_at + total as u64 > layout.journal_bytes {
                break;
            }
            let mut batch = vec![0u8; total];
            store.read_at(layout.journal_offset() + journal_at, &mut batch)?;
            let Some(records) = format::decode_batch(&batch) else {
                break;
            };
            for record in records {
                replay(
                    &mut volumes,
                    &mut next_volume_id,
                    &mut stripes,
                    record,
                    layout.chunks,
                );
            }
            journal_at += total as u64;
            sequence += 1;
        }
        let refcounts: Box<[AtomicU32]> = (0..layout.chunks).map(|_| AtomicU32::new(0)).collect();
        for stripe in &stripes {
            for entry in stripe.map.values() {
                refcounts[entry.pchunk as usize].fetch_add(1, Ordering::Relaxed);
            }
        }
        // Free chunks, the lowest handed out first (keeps a young pool file compact).
        let reserve: Vec<u32> = (0..layout.chunks)
            .rev()
            .filter(|&c| refcounts[c as usize].load(Ordering::Relaxed) == 0)
            .collect();
        Ok(Engine {
            store,
            layout,
            pool_id: superblock.pool_id,
            stripes: stripes.into_iter().map(Mutex::new).collect(),
            refcounts,
            reserve: Mutex::new(reserve),
            control: Mutex::new(Control {
                superblock,
                journal_at,
                sequence,
                by_name: volumes.values().map(|v| (v.name.clone(), v.id)).collect(),
                volumes,
                next_volume_id,
                open: HashSet::new(),
                unjournaled: HashSet::new(),
                sync_owed: false,
            }),
            flushes_skipped: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn pool_id(&self) -> u64 {
        self.pool_id
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Backs the journal's region with blocks of the store (zeros over holes), so that
    /// a batch appended later costs one data flush: `volume_create` and every other
    /// commit append 4 KiB at a new offset until the journal wraps, and in a sparse file
    /// each would allocate a block and wait for a file system journal commit. The bytes
    /// written (zero when already backed).
    pub fn allocate_journal(&self) -> io::Result<u64> {
        self.store
            .allocate(self.layout.journal_offset(), self.layout.journal_bytes)
    }

    // --- the I/O path --------------------------------------------------------------------

    /// Reads `buf.len()` bytes of `volume` at `offset` (the caller checked the range).
    pub fn read(&self, volume: u32, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        for_each_piece(offset, buf.len(), |vchunk, within, range| {
            self.read_piece(volume, vchunk, within, &mut buf[range])
        })
    }

    fn read_piece(&self, volume: u32, vchunk: u32, within: u64, buf: &mut [u8]) -> io::Result<()> {
        let key = (volume, vchunk);
        let stripe = lock(&self.stripes[stripe_of(key)]);
        let Some(entry) = stripe.map.get(&key) else {
            buf.fill(0);
            return Ok(());
        };
        let base = self.layout.chunk_offset(entry.pchunk);
        let bitmap = entry.bitmap();
        // Runs of sub-chunks with the same state: one read per written run.
        let end = within + buf.len() as u64;
        let mut at = within;
        while at < end {
            let valid = bit(&bitmap, (at / SUB_BYTES) as usize);
            let mut run_end = (at / SUB_BYTES + 1) * SUB_BYTES;
            while run_end < end && bit(&bitmap, (run_end / SUB_BYTES) as usize) == valid {
                run_end += SUB_BYTES;
            }
            let run_end = run_end.min(end);
            let slice = &mut buf[(at - within) as usize..(run_end - within) as usize];
            if valid {
                self.store.read_at(base + at, slice)?;
            } else {
                slice.fill(0);
            }
            at = run_end;
        }
        Ok(())
    }

    /// Writes `data` into `volume` at `offset`.
    pub fn write(&self, volume: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        for_each_piece(offset, data.len(), |vchunk, within, range| {
            self.write_piece(volume, vchunk, within, &data[range])
        })
    }

    fn alloc(&self, stripe: &mut Stripe, own: usize) -> io::Result<u32> {
        if stripe.free.is_empty() {
            let mut reserve = lock(&self.reserve);
            let take = reserve.len().min(REFILL_CHUNKS);
            let at = reserve.len() - take;
            stripe.free.extend(reserve.drain(at..).rev());
        }
        if stripe.free.is_empty() {
            // Take half of another stripe's free chunks; `try_lock`, so two stripes doing
            // this at once never wait on each other.
            for (i, other) in self.stripes.iter().enumerate() {
                if i == own {
                    continue;
                }
                if let Ok(mut other) = other.try_lock() {
                    let take = other.free.len().div_ceil(2);
                    let at = other.free.len() - take;
                    stripe.free.extend(other.free.drain(at..));
                    if !stripe.free.is_empty() {
                        break;
                    }
                }
            }
        }
        let chunk = stripe.free.pop().ok_or_else(no_space)?;
        self.refcounts[chunk as usize].store(1, Ordering::SeqCst);
        Ok(chunk)
    }

    fn write_piece(&self, volume: u32, vchunk: u32, within: u64, data: &[u8]) -> io::Result<()> {
        let key = (volume, vchunk);
        let index = stripe_of(key);
        let mut stripe = lock(&self.stripes[index]);
        let old = stripe.map.get(&key).cloned();
        let (source, dest, old_bitmap) = match &old {
            Some(entry) if self.refcounts[entry.pchunk as usize].load(Ordering::SeqCst) == 1 => {
                (Some(entry.pchunk), entry.pchunk, entry.bitmap())
            }
            Some(entry) => (
                Some(entry.pchunk),
                self.alloc(&mut stripe, index)?,
                entry.bitmap(),
            ),
            None => (None, self.alloc(&mut stripe, index)?, [0; 4]),
        };
        let result = self.fill_chunk(source, dest, &old_bitmap, within, data);
        if let Err(error) = result {
            if source != Some(dest) {
                self.refcounts[dest as usize].store(0, Ordering::SeqCst);
                stripe.free.push(dest);
            }
            return Err(error);
        }
        let first = (within / SUB_BYTES) as usize;
        let last = (within + data.len() as u64).div_ceil(SUB_BYTES) as usize;
        let mut bitmap = old_bitmap;
        set_bits(&mut bitmap, first..last, true);
        stripe.map.insert(
            key,
            Entry {
                pchunk: dest,
                bitmap: boxed(bitmap),
            },
        );
        stripe.dirty.insert(key);
        if let Some(source) = source.filter(|&s| s != dest) {
            stripe.decref.push(source);
        }
        Ok(())
    }

    /// Writes `data` at `within` into chunk `dest`, completing partly covered sub-chunks
    /// from `source` (or zeros), and for copy on write (`source != dest`) copying the other
    /// written sub-chunks of `source`.
    fn fill_chunk(
        &self,
        source: Option<u32>,
        dest: u32,
        bitmap: &Bitmap,
        within: u64,
        data: &[u8],
    ) -> io::Result<()> {
        let start = within / SUB_BYTES * SUB_BYTES;
        let end = (within + data.len() as u64).div_ceil(SUB_BYTES) * SUB_BYTES;
        let dest_base = self.layout.chunk_offset(dest);
        if start == within && end == within + data.len() as u64 {
            self.store.write_at(dest_base + start, data)?;
        } else {
            let mut block = vec![0u8; (end - start) as usize];
            for sub_at in [start, end - SUB_BYTES] {
                if let Some(source) = source.filter(|_| bit(bitmap, (sub_at / SUB_BYTES) as usize))
                {
                    let at = (sub_at - start) as usize;
                    self.store.read_at(
                        self.layout.chunk_offset(source) + sub_at,
                        &mut block[at..at + SUB_BYTES as usize],
                    )?;
                }
            }
            let at = (within - start) as usize;
            block[at..at + data.len()].copy_from_slice(data);
            self.store.write_at(dest_base + start, &block)?;
        }
        let Some(source) = source.filter(|&s| s != dest) else {
            return Ok(());
        };
        // Copy on write: the written sub-chunks outside [start, end), in runs.
        let source_base = self.layout.chunk_offset(source);
        let subs = (CHUNK_BYTES / SUB_BYTES) as usize;
        let (skip_from, skip_to) = ((start / SUB_BYTES) as usize, (end / SUB_BYTES) as usize);
        let mut sub = 0;
        let mut buf = Vec::new();
        while sub < subs {
            let copy = |s: usize| bit(bitmap, s) && !(skip_from..skip_to).contains(&s);
            if !copy(sub) {
                sub += 1;
                continue;
            }
            let mut run_end = sub + 1;
            while run_end < subs && copy(run_end) {
                run_end += 1;
            }
            let offset = sub as u64 * SUB_BYTES;
            buf.resize((run_end - sub) * SUB_BYTES as usize, 0);
            self.store.read_at(source_base + offset, &mut buf)?;
            self.store.write_at(dest_base + offset, &buf)?;
            sub = run_end;
        }
        Ok(())
    }

    /// Deallocates `len` bytes of `volume` at `offset`: whole chunks leave the map (their
    /// space returns to the store at the next commit), whole sub-chunks leave the bitmap,
    /// and the rest is written with zeros. Everything reads as zeros afterwards.
    pub fn unmap(&self, volume: u32, offset: u64, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        for_each_piece(offset, len, |vchunk, within, range| {
            self.unmap_piece(volume, vchunk, within, range.len() as u64)
        })
    }

    fn unmap_piece(&self, volume: u32, vchunk: u32, within: u64, len: u64) -> io::Result<()> {
        let key = (volume, vchunk);
        let end = within + len;
        let first_whole = within.div_ceil(SUB_BYTES);
        let end_whole = end / SUB_BYTES;
        // Partly covered sub-chunks that hold data get zeros written.
        let mut edges = Vec::new();
        if first_whole > end_whole {
            edges.push((within, end));
        } else {
            if within < first_whole * SUB_BYTES {
                edges.push((within, first_whole * SUB_BYTES));
            }
            if end_whole * SUB_BYTES < end && end_whole >= first_whole {
                edges.push((end_whole * SUB_BYTES, end));
            }
        }
        for (from, to) in edges {
            let valid = {
                let stripe = lock(&self.stripes[stripe_of(key)]);
                stripe
                    .map
                    .get(&key)
                    .is_some_and(|e| e.valid((from / SUB_BYTES) as usize))
            };
            if valid {
                self.write_piece(volume, vchunk, from, &vec![0u8; (to - from) as usize])?;
            }
        }
        if first_whole >= end_whole {
            return Ok(());
        }
        let mut stripe = lock(&self.stripes[stripe_of(key)]);
        let Some(entry) = stripe.map.get_mut(&key) else {
            return Ok(());
        };
        let mut bitmap = entry.bitmap();
        set_bits(&mut bitmap, first_whole as usize..end_whole as usize, false);
        if bitmap == [0; 4] {
            let pchunk = entry.pchunk;
            stripe.map.remove(&key);
            stripe.decref.push(pchunk);
        } else {
            entry.bitmap = boxed(bitmap);
        }
        stripe.dirty.insert(key);
        Ok(())
    }

    /// Whether the byte at `offset` of `volume` is mapped (written and not unmapped), and
    /// for how many bytes from there (at most `max_len`) the answer holds.
    pub fn mapped_extent(&self, volume: u32, offset: u64, max_len: u64) -> (bool, u64) {
        let mut state = None;
        let mut at = offset;
        let end = offset.saturating_add(max_len);
        let mut chunks_seen = 0;
        while at < end && chunks_seen < EXTENT_SCAN_CHUNKS {
            let vchunk = (at / CHUNK_BYTES) as u32;
            let key = (volume, vchunk);
            let bitmap = lock(&self.stripes[stripe_of(key)])
                .map
                .get(&key)
                .map(Entry::bitmap)
                .unwrap_or([0; 4]);
            let chunk_end = (u64::from(vchunk) + 1) * CHUNK_BYTES;
            while at < end && at < chunk_end {
                let valid = bit(&bitmap, ((at % CHUNK_BYTES) / SUB_BYTES) as usize);
                match state {
                    None => state = Some(valid),
                    Some(s) if s != valid => return (s, at - offset),
                    _ => {}
                }
                at = (at / SUB_BYTES + 1) * SUB_BYTES;
            }
            chunks_seen += 1;
        }
        (state.unwrap_or(false), at.min(end) - offset)
    }

    /// Makes `count` chunks of `dest` from `dest_chunk` share the chunks of `source` from
    /// `source_chunk` (EXTENDED COPY of whole chunks: reference counts, no data moved).
    /// The source entries are all taken (and referenced) before any destination changes,
    /// so overlapping ranges of one volume copy like `memmove`.
    pub fn remap(
        &self,
        source: u32,
        source_chunk: u32,
        dest: u32,
        dest_chunk: u32,
        count: u32,
    ) -> io::Result<()> {
        if self.entries() + u64::from(count) > self.layout.max_entries() {
            return Err(no_metadata_space());
        }
        let mut taken = Vec::with_capacity(count as usize);
        for i in 0..count {
            let from = (source, source_chunk + i);
            let stripe = lock(&self.stripes[stripe_of(from)]);
            let entry = stripe.map.get(&from).cloned();
            if let Some(entry) = &entry {
                // Referenced under the stripe lock: the chunk cannot be freed meanwhile.
                self.refcounts[entry.pchunk as usize].fetch_add(1, Ordering::SeqCst);
            }
            taken.push(entry);
        }
        for (i, entry) in (0..count).zip(taken) {
            let to = (dest, dest_chunk + i);
            let mut stripe = lock(&self.stripes[stripe_of(to)]);
            let old = match entry {
                Some(entry) => stripe.map.insert(to, entry),
                None => stripe.map.remove(&to),
            };
            if let Some(old) = old {
                stripe.decref.push(old.pchunk);
            }
            stripe.dirty.insert(to);
        }
        Ok(())
    }

    /// Map entries right now (each stripe locked in turn: for admission checks, not I/O).
    fn entries(&self) -> u64 {
        self.stripes.iter().map(|s| lock(s).map.len() as u64).sum()
    }

    // --- commits ------------------------------------------------------------------------

    /// Makes every write and unmap that completed before the call durable.
    ///
    /// Every data write and unmap marks its key dirty under its stripe's lock before it
    /// returns, and every commit drains the dirty keys and syncs under the commit lock
    /// this call holds too. So when no stripe has a dirty key or a deferred reference
    /// drop, nothing completed since the last sync that this one would cover, and the
    /// call returns without one: an unbind or a detach of a volume that was only read
    /// (issue 18's storm) costs no `fdatasync` of the pool.
    pub fn flush(&self) -> io::Result<()> {
        let mut control = lock(&self.control);
        let mut records = Vec::new();
        let mut decrefs = Vec::new();
        for (index, stripe) in self.stripes.iter().enumerate() {
            drain(&mut lock(stripe), index, &mut records, &mut decrefs);
        }
        if records.is_empty() && decrefs.is_empty() && !control.sync_owed {
            self.flushes_skipped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        // Until a flush succeeds, the next one syncs whatever it finds: the keys a
        // failed one drained are no longer dirty, but their data may not be durable.
        control.sync_owed = true;
        self.store.sync()?;
        self.append(&mut control, records, decrefs, true)?;
        control.sync_owed = false;
        Ok(())
    }

    /// How many flushes found nothing to make durable and made no sync (for tests and
    /// statistics).
    pub fn flushes_skipped(&self) -> u64 {
        self.flushes_skipped.load(Ordering::Relaxed)
    }

    /// Appends a batch (or writes a checkpoint when the journal is full), then applies the
    /// deferred reference count drops. `sync: false` leaves the batch unsynced (only
    /// [`Engine::journal_reserved`], whose caller's own journal holds the change; a
    /// checkpoint syncs all the same).
    fn append(
        &self,
        control: &mut Control,
        records: Vec<Record>,
        mut decrefs: Vec<(usize, u32)>,
        sync: bool,
    ) -> io::Result<()> {
        if !records.is_empty() {
            let batch =
                format::encode_batch(control.superblock.generation, control.sequence, &records);
            if control.journal_at + batch.len() as u64 <= self.layout.journal_bytes {
                self.store
                    .write_at(self.layout.journal_offset() + control.journal_at, &batch)?;
                if sync {
                    self.store.sync()?;
                }
                control.journal_at += batch.len() as u64;
                control.sequence += 1;
            } else {
                decrefs.extend(self.checkpoint(control)?);
            }
        }
        self.apply_decrefs(decrefs)
    }

    /// Writes the whole state into the other checkpoint slot and starts a new journal.
    fn checkpoint(&self, control: &mut Control) -> io::Result<Vec<(usize, u32)>> {
        let mut decrefs = Vec::new();
        let mut rows = Vec::new();
        {
            let mut guards: Vec<_> = self.stripes.iter().map(lock).collect();
            for (index, stripe) in guards.iter_mut().enumerate() {
                drain(stripe, index, &mut Vec::new(), &mut decrefs);
                rows.extend(stripe.map.iter().map(|(&(volume, vchunk), entry)| MapRow {
                    volume,
                    vchunk,
                    pchunk: entry.pchunk,
                    bitmap: entry.bitmap(),
                }));
            }
        }
        rows.sort_unstable_by_key(|row| (row.volume, row.vchunk));
        let checkpoint = Checkpoint {
            next_volume_id: control.next_volume_id,
            // A reserved volume is durable only once its record is appended (or once the
            // caller's journal holds it): a checkpoint before that must not name it.
            volumes: control
                .volumes
                .values()
                .filter(|v| !control.unjournaled.contains(&v.id))
                .cloned()
                .collect(),
            rows,
        }
        .encode();
        if checkpoint.len() as u64 > self.layout.slot_bytes {
            return Err(io::Error::other("checkpoint larger than its slot"));
        }
        // The map taken above may name data written since the caller's sync.
        self.store.sync()?;
        let generation = control.superblock.generation + 1;
        self.store
            .write_at(self.layout.slot_offset((generation % 2) as u8), &checkpoint)?;
        self.store.sync()?;
        let superblock = Superblock {
            generation,
            checkpoint_bytes: checkpoint.len() as u64,
            checkpoint_crc: datapath::pdu::digest::crc32c(&checkpoint),
            ..control.superblock
        };
        self.store
            .write_at((generation % 2) * SUPERBLOCK_BYTES, &superblock.encode())?;
        self.store.sync()?;
        control.superblock = superblock;
        control.journal_at = 0;
        control.sequence = 0;
        Ok(decrefs)
    }

    /// Drops deferred references; chunks that reach zero are discarded and become free.
    fn apply_decrefs(&self, decrefs: Vec<(usize, u32)>) -> io::Result<()> {
        let mut freed: Vec<(usize, u32)> = Vec::new();
        for (stripe, chunk) in decrefs {
            if self.refcounts[chunk as usize].fetch_sub(1, Ordering::SeqCst) == 1 {
                freed.push((stripe, chunk));
            }
        }
        for &(_, chunk) in &freed {
            self.store
                .discard(self.layout.chunk_offset(chunk), CHUNK_BYTES)?;
        }
        for (stripe, chunk) in freed {
            lock(&self.stripes[stripe]).free.push(chunk);
        }
        Ok(())
    }

    /// Runs a volume operation: every stripe locked, pending changes taken, `operation`
    /// applied to the map, then everything committed before the call returns.
    fn volume_operation<T>(
        &self,
        operation: impl FnOnce(
            &mut Control,
            &mut [MutexGuard<'_, Stripe>],
            &[AtomicU32],
        ) -> Result<(T, Record, Vec<(usize, u32)>), PoolError>,
    ) -> Result<T, PoolError> {
        let mut control = lock(&self.control);
        let mut records = Vec::new();
        let mut decrefs = Vec::new();
        let data_pending;
        let value = {
            let mut guards: Vec<_> = self.stripes.iter().map(lock).collect();
            for (index, stripe) in guards.iter_mut().enumerate() {
                drain(stripe, index, &mut records, &mut decrefs);
            }
            let (value, record, more) = operation(&mut control, &mut guards, &self.refcounts)?;
            // Rule 1 asks for a data sync only before map entries that point at data
            // written since the last commit, i.e. when stripes had changes to drain. A
            // volume record alone (create, grow, delete, a clone of committed chunks)
            // points at nothing unsynced: the journal's own sync is the one flush then.
            data_pending = !records.is_empty();
            records.push(record);
            decrefs.extend(more);
            value
        };
        if data_pending {
            self.store.sync()?;
        }
        self.append(&mut control, records, decrefs, true)?;
        Ok(value)
    }

    /// Makes volume `name` in memory only, exportable at once, with no journal record
    /// and no sync: for a caller whose own journal records the volume (the control
    /// plane's `volume_create` with `attach`: its LUN spec carries the size, so a restart
    /// creates the volume again if the record here was lost). The caller then appends
    /// the record with [`Engine::journal_reserved`] once its journal is synced, before
    /// anything can write to the volume, or drops it with [`Engine::cancel_reserved`].
    /// Until then checkpoints leave the volume out (a crash must not leave a volume that
    /// no journal names) and grow, clone and delete refuse it.
    pub fn reserve_volume(&self, name: &str, size_bytes: u64) -> Result<u32, PoolError> {
        check_volume(name, size_bytes)?;
        let mut control = lock(&self.control);
        let record = control.new_volume(name, size_bytes)?;
        control.unjournaled.insert(record.id);
        Ok(record.id)
    }

    /// Appends the record of reserved volume `id`: synced when `sync`, else only written
    /// (the caller's journal makes the volume durable; the next commit here syncs this
    /// record first, and every commit naming the volume's chunks comes after it, so
    /// replay never meets a chunk of a volume it does not know).
    pub fn journal_reserved(&self, id: u32, sync: bool) -> io::Result<()> {
        let mut control = lock(&self.control);
        if !control.unjournaled.remove(&id) {
            return Ok(());
        }
        let Some(record) = control.volumes.get(&id).cloned() else {
            return Ok(());
        };
        if let Err(error) = self.append(
            &mut control,
            vec![Record::CreateVolume(record)],
            Vec::new(),
            sync,
        ) {
            control.unjournaled.insert(id);
            return Err(error);
        }
        if !sync {
            control.sync_owed = true;
        }
        Ok(())
    }

    /// Forgets reserved volume `id` (its caller's journal did not take it). Does nothing
    /// to a volume already journaled.
    pub fn cancel_reserved(&self, id: u32) {
        let mut control = lock(&self.control);
        if control.unjournaled.remove(&id) {
            control.open.remove(&id);
            if let Some(gone) = control.volumes.remove(&id) {
                control.by_name.remove(&gone.name);
            }
        }
    }

    pub fn create_volume(&self, name: &str, size_bytes: u64) -> Result<u32, PoolError> {
        check_volume(name, size_bytes)?;
        self.volume_operation(|control, _, _| {
            let record = control.new_volume(name, size_bytes)?;
            Ok((record.id, Record::CreateVolume(record), Vec::new()))
        })
    }

    pub fn grow_volume(&self, name: &str, size_bytes: u64) -> Result<(), PoolError> {
        check_volume(name, size_bytes)?;
        self.volume_operation(|control, _, _| {
            let volume = find_journaled(control, name)?;
            if size_bytes < volume.size_bytes {
                return Err(PoolError::Shrink {
                    name: name.to_string(),
                    size_bytes: volume.size_bytes,
                });
            }
            let id = volume.id;
            control.volumes.get_mut(&id).expect("found").size_bytes = size_bytes;
            Ok(((), Record::GrowVolume { id, size_bytes }, Vec::new()))
        })
    }

    /// A new volume `name` sharing every chunk of `source` (a thin clone: reference
    /// counts only).
    pub fn clone_volume(&self, source: &str, name: &str) -> Result<u32, PoolError> {
        check_volume(name, 1)?;
        let max_entries = self.layout.max_entries();
        self.volume_operation(|control, stripes, refcounts| {
            let source = find_journaled(control, source)?.clone();
            if control.by_name.contains_key(name) {
                return Err(PoolError::VolumeExists(name.to_string()));
            }
            let record = VolumeRecord {
                id: control.next_volume_id,
                size_bytes: source.size_bytes,
                name: name.to_string(),
            };
            let entries: u64 = stripes.iter().map(|s| s.map.len() as u64).sum();
            let mut copies = Vec::new();
            for stripe in stripes.iter() {
                for (&(volume, vchunk), entry) in &stripe.map {
                    if volume == source.id {
                        copies.push(((record.id, vchunk), entry.clone()));
                    }
                }
            }
            if entries + copies.len() as u64 > max_entries {
                return Err(PoolError::Io(no_metadata_space()));
            }
            for (key, entry) in copies {
                refcounts[entry.pchunk as usize].fetch_add(1, Ordering::SeqCst);
                stripes[stripe_of(key)].map.insert(key, entry);
            }
            control.next_volume_id += 1;
            control.by_name.insert(record.name.clone(), record.id);
            control.volumes.insert(record.id, record.clone());
            Ok((
                record.id,
                Record::CloneVolume {
                    source: source.id,
                    record,
                },
                Vec::new(),
            ))
        })
    }

    pub fn delete_volume(&self, name: &str) -> Result<(), PoolError> {
        self.volume_operation(|control, stripes, _| {
            let id = find_journaled(control, name)?.id;
            if control.open.contains(&id) {
                return Err(PoolError::VolumeInUse(name.to_string()));
            }
            let mut decrefs = Vec::new();
            for (index, stripe) in stripes.iter_mut().enumerate() {
                stripe.map.retain(|&(volume, _), entry| {
                    if volume == id {
                        decrefs.push((index, entry.pchunk));
                    }
                    volume != id
                });
            }
            if let Some(gone) = control.volumes.remove(&id) {
                control.by_name.remove(&gone.name);
            }
            Ok(((), Record::DeleteVolume { id }, decrefs))
        })
    }

    /// Marks `name` exported; its id and size. One export at a time.
    /// Marks volume `name` open (one export at a time); its id and size.
    pub fn open_volume(&self, name: &str) -> Result<(u32, u64), PoolError> {
        let mut control = lock(&self.control);
        let volume = find(&control, name)?;
        let (id, size_bytes) = (volume.id, volume.size_bytes);
        if !control.open.insert(id) {
            return Err(PoolError::VolumeInUse(name.to_string()));
        }
        Ok((id, size_bytes))
    }

    pub fn close_volume(&self, id: u32) {
        lock(&self.control).open.remove(&id);
    }

    /// The size of volume `id`, if it exists.
    pub fn volume_size(&self, id: u32) -> Option<u64> {
        lock(&self.control).volumes.get(&id).map(|v| v.size_bytes)
    }

    /// The name of volume `id`, if it exists.
    pub fn volume_name(&self, id: u32) -> Option<String> {
        lock(&self.control).volumes.get(&id).map(|v| v.name.clone())
    }

    pub fn volume(&self, name: &str) -> Option<VolumeRecord> {
        let control = lock(&self.control);
        find(&control, name).ok().cloned()
    }

    pub fn list_volumes(&self) -> Vec<VolumeInfo> {
        let control = lock(&self.control);
        let mut infos: BTreeMap<u32, VolumeInfo> = control
            .volumes
            .values()
            .map(|v| {
                (
                    v.id,
                    VolumeInfo {
                        id: v.id,
                        name: v.name.clone(),
                        size_bytes: v.size_bytes,
                        allocated_bytes: 0,
                        chunks: 0,
                    },
                )
            })
            .collect();
        for stripe in self.stripes.iter() {
            for (&(volume, _), entry) in &lock(stripe).map {
                if let Some(info) = infos.get_mut(&volume) {
                    let subs: u32 = entry.bitmap().iter().map(|w| w.count_ones()).sum();
                    info.allocated_bytes += u64::from(subs) * SUB_BYTES;
                    info.chunks += 1;
                }
            }
        }
        infos.into_values().collect()
    }

    /// Verifies the map against the reference counts and the free lists: every count equals
    /// the entries naming the chunk plus the drops still deferred, every chunk is used or
    /// free exactly once, every entry belongs to a volume and lies inside it.
    pub fn check(&self) -> CheckReport {
        let control = lock(&self.control);
        let guards: Vec<_> = self.stripes.iter().map(lock).collect();
        let reserve = lock(&self.reserve);
        let chunks = self.layout.chunks as usize;
        let mut expected = vec![0u32; chunks];
        let mut problems = Vec::new();
        let mut report = CheckReport {
            volumes: control.volumes.len(),
            total_chunks: chunks as u64,
            ..CheckReport::default()
        };
        let mut rows = 0u64;
        let mut partial = 0u64;
        for (index, stripe) in guards.iter().enumerate() {
            for (&(volume, vchunk), entry) in &stripe.map {
                report.mapped_entries += 1;
                rows += 1;
                if stripe_of((volume, vchunk)) != index {
                    problems.push(format!("entry {volume}/{vchunk} in the wrong stripe"));
                }
                match control.volumes.get(&volume) {
                    None => problems.push(format!("entry {volume}/{vchunk}: no such volume")),
                    Some(v) if u64::from(vchunk) * CHUNK_BYTES >= v.size_bytes => {
                        problems.push(format!(
                            "entry {volume}/{vchunk} beyond the volume's {} bytes",
                            v.size_bytes
                        ))
                    }
                    Some(_) => {}
                }
                if entry.bitmap() == [0; 4] {
                    problems.push(format!("entry {volume}/{vchunk} with an empty bitmap"));
                }
                if entry.bitmap.is_some() {
                    partial += 1;
                }
                match expected.get_mut(entry.pchunk as usize) {
                    Some(count) => *count += 1,
                    None => problems.push(format!("entry {volume}/{vchunk} beyond the pool")),
                }
            }
            for &chunk in &stripe.decref {
                if let Some(count) = expected.get_mut(chunk as usize) {
                    *count += 1;
                }
            }
        }
        let mut free = vec![false; chunks];
        let free_lists = guards
            .iter()
            .flat_map(|s| s.free.iter())
            .chain(reserve.iter());
        for &chunk in free_lists {
            match free.get_mut(chunk as usize) {
                Some(seen) if *seen => problems.push(format!("chunk {chunk} free twice")),
                Some(seen) => *seen = true,
                None => problems.push(format!("free chunk {chunk} beyond the pool")),
            }
        }
        for chunk in 0..chunks {
            let count = self.refcounts[chunk].load(Ordering::SeqCst);
            if count != expected[chunk] {
                problems.push(format!(
                    "chunk {chunk}: reference count {count}, {} references",
                    expected[chunk]
                ));
            }
            match (expected[chunk] > 0, free[chunk]) {
                (true, true) => problems.push(format!("chunk {chunk} used and free")),
                (false, false) => problems.push(format!("chunk {chunk} neither used nor free")),
                (true, false) => report.used_chunks += 1,
                (false, true) => report.free_chunks += 1,
            }
        }
        // Checkpoint size: header, volume table, 12 bytes a row, 36 per partial bitmap.
        let volume_bytes: u64 = control
            .volumes
            .values()
            .map(|v| 13 + v.name.len() as u64)
            .sum();
        report.metadata_bytes = 24 + volume_bytes + rows * 12 + partial * 36;
        report.problems = problems;
        report
    }
}

fn check_volume(name: &str, size_bytes: u64) -> Result<(), PoolError> {
    if name.is_empty()
        || name.len() > format::NAME_MAX_BYTES
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(PoolError::BadName(name.chars().take(200).collect()));
    }
    if size_bytes == 0 || size_bytes / CHUNK_BYTES >= u64::from(u32::MAX) {
        return Err(PoolError::BadSize(size_bytes));
    }
    Ok(())
}

fn find<'a>(control: &'a Control, name: &str) -> Result<&'a VolumeRecord, PoolError> {
    control
        .by_name
        .get(name)
        .and_then(|id| control.volumes.get(id))
        .ok_or_else(|| PoolError::NoVolume(name.to_string()))
}

/// Volume `name` once its record is journaled: a reserved one is refused.
fn find_journaled<'a>(control: &'a Control, name: &str) -> Result<&'a VolumeRecord, PoolError> {
    let volume = find(control, name)?;
    if control.unjournaled.contains(&volume.id) {
        return Err(PoolError::VolumeCreating(name.to_string()));
    }
    Ok(volume)
}

/// Takes a stripe's changes as journal records and its deferred drops.
fn drain(
    stripe: &mut Stripe,
    index: usize,
    records: &mut Vec<Record>,
    decrefs: &mut Vec<(usize, u32)>,
) {
    for key in stripe.dirty.drain() {
        records.push(match stripe.map.get(&key) {
            Some(entry) => Record::Map(MapRow {
                volume: key.0,
                vchunk: key.1,
                pchunk: entry.pchunk,
                bitmap: entry.bitmap(),
            }),
            None => Record::Unmap {
                volume: key.0,
                vchunk: key.1,
            },
        });
    }
    decrefs.extend(stripe.decref.drain(..).map(|chunk| (index, chunk)));
}

/// Applies one journal record to the state being loaded. Records that do not fit the
/// state (a damaged or foreign journal) are skipped; `check` reports what is left.
fn replay(
    volumes: &mut BTreeMap<u32, VolumeRecord>,
    next_volume_id: &mut u32,
    stripes: &mut [Stripe],
    record: Record,
    chunks: u32,
) {
    match record {
        Record::Map(row) if row.pchunk < chunks => {
            let key = (row.volume, row.vchunk);
            stripes[stripe_of(key)].map.insert(
                key,
                Entry {
                    pchunk: row.pchunk,
                    bitmap: boxed(row.bitmap),
                },
            );
        }
        Record::Map(_) => {}
        Record::Unmap { volume, vchunk } => {
            let key = (volume, vchunk);
            stripes[stripe_of(key)].map.remove(&key);
        }
        Record::CreateVolume(v) => {
            *next_volume_id = (*next_volume_id).max(v.id + 1);
            volumes.insert(v.id, v);
        }
        Record::GrowVolume { id, size_bytes } => {
            if let Some(v) = volumes.get_mut(&id) {
                v.size_bytes = size_bytes;
            }
        }
        Record::CloneVolume { source, record } => {
            let copies: Vec<(Key, Entry)> = stripes
                .iter()
                .flat_map(|stripe| stripe.map.iter())
                .filter(|((volume, _), _)| *volume == source)
                .map(|(&(_, vchunk), entry)| ((record.id, vchunk), entry.clone()))
                .collect();
            for (key, entry) in copies {
                stripes[stripe_of(key)].map.insert(key, entry);
            }
            *next_volume_id = (*next_volume_id).max(record.id + 1);
            volumes.insert(record.id, record);
        }
        Record::DeleteVolume { id } => {
            for stripe in stripes.iter_mut() {
                stripe.map.retain(|&(volume, _), _| volume != id);
            }
            volumes.remove(&id);
        }
    }
}

/// Splits `[offset, offset + len)` at chunk boundaries: `(vchunk, offset within the chunk,
/// range within the caller's buffer)`.
fn for_each_piece(
    offset: u64,
    len: usize,
    mut each: impl FnMut(u32, u64, std::ops::Range<usize>) -> io::Result<()>,
) -> io::Result<()> {
    let mut done = 0usize;
    while done < len {
        let at = offset + done as u64;
        let vchunk = u32::try_from(at / CHUNK_BYTES)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let within = at % CHUNK_BYTES;
        let n = ((CHUNK_BYTES - within) as usize).min(len - done);
        each(vchunk, within, done..done + n)?;
        done += n;
    }
    Ok(())
}
