//! Changed-block tracking made durable, and the backend that feeds it.
//!
//! Two files per tracked LUN in a directory (the control plane's state directory):
//! - `NAME.cbt`: a checkpoint of the whole [`ChangeMap`] (temp file, fdatasync, rename,
//!   directory fsync), written at each query (so the generation a query hands out is
//!   durable before it is answered) and when the tracker is dropped at a clean stop;
//! - `NAME.regions`: one byte per coarse region ([`REGION_BYTES`], 1 GiB), set and synced
//!   *before the first write* into the region since the last clean start (dm-era's rule).
//!
//! After a clean stop the checkpoint is exact and the region file is all zeros. After a
//! crash the checkpoint misses the writes since it, but each of them lies in a region the
//! region file holds: those regions are marked changed in full (over-report, never a miss).
//! The region file is cleared only when no write can run: at open (after the merge is
//! checkpointed) and at the clean stop (after the final checkpoint).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::map::{ChangeError, ChangeId, ChangeMap, Changed};
use super::region_log::RegionLog;
use crate::backend::{Backend, PoolVolume, RingFile};

/// The coarse region recorded durably before its first write.
pub const REGION_BYTES: u64 = 1 << 30;

/// The durable changed-block map of one LUN.
#[derive(Debug)]
pub struct ChangeTracker {
    map: ChangeMap,
    /// `None`: memory only (no state directory).
    files: Option<Files>,
    /// Saved at a clean stop already ([`ChangeTracker::close`]).
    closed: std::sync::atomic::AtomicBool,
}

#[derive(Debug)]
struct Files {
    checkpoint: PathBuf,
    /// The regions recorded durably since the last clean start.
    regions: RegionLog,
    /// Serializes the checkpoints.
    lock: Mutex<()>,
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl ChangeTracker {
    /// A tracker kept only in memory (lost at restart).
    pub fn in_memory(size_bytes: u64, chunk_bytes: u64) -> ChangeTracker {
        ChangeTracker {
            map: ChangeMap::new(size_bytes, chunk_bytes, new_epoch()),
            files: None,
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Opens the tracker `name` in `dir`, creating it (a new epoch) when it has no
    /// checkpoint. A LUN of another size than the checkpoint's starts a new epoch.
    pub fn open(
        dir: &Path,
        name: &str,
        size_bytes: u64,
        chunk_bytes: u64,
    ) -> io::Result<ChangeTracker> {
        std::fs::create_dir_all(dir)?;
        let checkpoint = dir.join(format!("{name}.cbt"));
        let regions_path = dir.join(format!("{name}.regions"));
        let map = match std::fs::read(&checkpoint) {
            Ok(bytes) => match ChangeMap::decode(&bytes) {
                Ok(map) if map.size_bytes() == size_bytes => Some(map),
                Ok(_) => {
                    tracing::warn!(name, "change map of another LUN size: a new epoch");
                    None
                }
                Err(reason) => {
                    tracing::warn!(name, reason, "change map unreadable: a new epoch");
                    None
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let fresh = map.is_none();
        let map = map.unwrap_or_else(|| ChangeMap::new(size_bytes, chunk_bytes, new_epoch()));
        let (regions, dirty) = RegionLog::open(&regions_path, size_bytes, REGION_BYTES)?;
        if !fresh {
            // Regions written since the checkpoint, perhaps: changed in full.
            if !dirty.is_empty() {
                tracing::warn!(name, regions = dirty.len(), "change map after an unclean stop: regions recorded since its checkpoint are reported changed in full");
            }
            map.mark_regions(&dirty);
        }
        let tracker = ChangeTracker {
            map,
            files: Some(Files {
                checkpoint,
                regions,
                lock: Mutex::new(()),
            }),
            closed: std::sync::atomic::AtomicBool::new(false),
        };
        tracker.checkpoint()?;
        tracker.clear_regions()?;
        sync_dir(dir)?;
        Ok(tracker)
    }

    pub fn map(&self) -> &ChangeMap {
        &self.map
    }

    /// Before a write of `len` bytes at `offset`: its regions are recorded durably.
    /// Once per region per start; every later call is an atomic load per region.
    pub fn before_write(&self, offset: u64, len: u64) -> io::Result<()> {
        match &self.files {
            Some(files) => files.regions.record(offset, len),
            None => Ok(()),
        }
    }

    /// Whether [`ChangeTracker::before_write`] would have to write and sync the regions
    /// file for `offset..offset+len` (a region not recorded since the start): two atomic
    /// loads at most in the steady state.
    pub fn needs_record(&self, offset: u64, len: u64) -> bool {
        self.files
            .as_ref()
            .is_some_and(|files| files.regions.needs_record(offset, len))
    }

    /// After a write completed: its chunks are changed.
    pub fn after_write(&self, offset: u64, len: u64) {
        self.map.mark(offset, len);
    }

    /// The changes since `since`; the generation handed out is durable first.
    pub fn changed_since(
        &self,
        since: Option<ChangeId>,
    ) -> Result<Result<Changed, ChangeError>, io::Error> {
        let answer = self.map.changed_since(since);
        if answer.is_ok() {
            self.checkpoint()?;
        }
        Ok(answer)
    }

    /// Writes the whole map durably.
    pub fn checkpoint(&self) -> io::Result<()> {
        let Some(files) = &self.files else {
            return Ok(());
        };
        let _guard = files.lock.lock().unwrap_or_else(|p| p.into_inner());
        let temp = files.checkpoint.with_extension("cbt.tmp");
        {
            let file = File::create(&temp)?;
            file.write_all_at(&self.map.encode(), 0)?;
            file.sync_data()?;
        }
        std::fs::rename(&temp, &files.checkpoint)?;
        if let Some(dir) = files.checkpoint.parent() {
            sync_dir(dir)?;
        }
        Ok(())
    }

    /// Clears the region file (only when no write can run: at open, at the clean stop).
    fn clear_regions(&self) -> io::Result<()> {
        match &self.files {
            Some(files) => files.regions.clear(),
            None => Ok(()),
        }
    }
}

impl ChangeTracker {
    /// The clean stop, once no write can come any more (the event loops are stopped): the
    /// exact map is written, then the regions cleared, so the next start answers exactly.
    pub fn close(&self) {
        if self.files.is_none() || self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let done = self.checkpoint().and_then(|()| self.clear_regions());
        if let Err(error) = done {
            tracing::error!(%error, "change map not saved at stop: the next start over-reports");
        }
    }
}

impl Drop for ChangeTracker {
    /// The last user of the LUN is gone, so no write can come: a clean stop.
    fn drop(&mut self) {
        self.close();
    }
}

fn new_epoch() -> u32 {
    let bytes = datapath::client::random_bytes(4);
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]).max(1)
}

/// A backend whose writes and unmaps are tracked. Reads and flushes pass through. Over a
/// file it keeps the file's ring I/O: a write planned on the ring marks the map when it is
/// planned ([`Backend::before_ring_write`]); a write into a region not yet recorded
/// durably goes to the blocking pool instead ([`Backend::write_needs_record`]), where
/// [`Backend::write_at`] records it first.
pub struct Tracked {
    inner: Arc<dyn Backend>,
    tracker: Arc<ChangeTracker>,
}

impl Tracked {
    pub fn new(inner: Arc<dyn Backend>, tracker: Arc<ChangeTracker>) -> Tracked {
        Tracked { inner, tracker }
    }
}

impl Backend for Tracked {
    fn size_bytes(&self) -> u64 {
        self.inner.size_bytes()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.tracker.before_write(offset, data.len() as u64)?;
        self.inner.write_at(offset, data)?;
        self.tracker.after_write(offset, data.len() as u64);
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        self.inner.flush()
    }
    fn unmap(&self, offset: u64, len: u64) -> io::Result<()> {
        self.tracker.before_write(offset, len)?;
        self.inner.unmap(offset, len)?;
        self.tracker.after_write(offset, len);
        Ok(())
    }
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn thin(&self) -> bool {
        self.inner.thin()
    }
    fn mapped_extent(&self, offset: u64, max_len: u64) -> io::Result<(bool, u64)> {
        self.inner.mapped_extent(offset, max_len)
    }
    /// The inner file's: planned reads, writes and flushes stay on the event loop's ring,
    /// the change map marked when a write is planned ([`Backend::before_ring_write`]).
    fn ring_file(&self) -> Option<RingFile<'_>> {
        self.inner.ring_file()
    }
    /// The inner queue (`iscsi:`), like the ring file: the map is marked when a write is
    /// planned.
    fn queued_io(&self) -> Option<&dyn crate::backend::QueuedIo> {
        self.inner.queued_io()
    }
    fn pool_volume(&self) -> Option<&PoolVolume> {
        None
    }
    fn flush_may_block(&self) -> bool {
        self.inner.flush_may_block()
    }
    fn io_may_block(&self) -> bool {
        self.inner.io_may_block()
    }
    fn write_needs_record(&self, offset: u64, len: u64) -> bool {
        self.tracker.needs_record(offset, len) || self.inner.write_needs_record(offset, len)
    }
    fn before_ring_write(&self, offset: u64, len: u64) {
        self.inner.before_ring_write(offset, len);
        self.tracker.after_write(offset, len);
    }
    fn logical_block_bytes(&self) -> Option<u32> {
        self.inner.logical_block_bytes()
    }
    fn change_tracker(&self) -> Option<&Arc<ChangeTracker>> {
        Some(&self.tracker)
    }
    fn release_memory(&mut self) {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.release_memory();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changes::map::DEFAULT_CHUNK_BYTES;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "cbt-{tag}-{}-{:x}",
            std::process::id(),
            u64::from_le_bytes(datapath::client::random_bytes(8).try_into().unwrap())
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_clean_restart_keeps_the_map_exactly_and_a_crash_over_reports_whole_regions() {
        let dir = scratch("restart");
        let size = 3 * REGION_BYTES;
        let tracker = ChangeTracker::open(&dir, "lun", size, DEFAULT_CHUNK_BYTES).unwrap();
        let start = tracker.map().current_id();
        tracker.before_write(4096, 4096).unwrap();
        tracker.after_write(4096, 4096);
        drop(tracker); // clean stop
        let tracker = ChangeTracker::open(&dir, "lun", size, DEFAULT_CHUNK_BYTES).unwrap();
        let answer = tracker.changed_since(Some(start)).unwrap().unwrap();
        assert_eq!(answer.extents, vec![(0, DEFAULT_CHUNK_BYTES)]);
        let after = answer.next;

        // A write into region 2, then a crash (no drop: the checkpoint does not know it).
        tracker.before_write(2 * REGION_BYTES + 8192, 512).unwrap();
        tracker.after_write(2 * REGION_BYTES + 8192, 512);
        std::mem::forget(tracker);
        let tracker = ChangeTracker::open(&dir, "lun", size, DEFAULT_CHUNK_BYTES).unwrap();
        let answer = tracker.changed_since(Some(after)).unwrap().unwrap();
        assert_eq!(answer.extents, vec![(2 * REGION_BYTES, REGION_BYTES)]);
        // The epoch survived both.
        assert_eq!(answer.next.epoch, start.epoch);
        drop(tracker);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
