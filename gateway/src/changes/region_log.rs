//! A durable record of the coarse regions written since a point (dm-era's rule): one byte
//! per region in a file, set and synced *before the first write* into the region, so after
//! a crash every write since that point lies in a region the file holds. The change
//! tracker keeps one per LUN (1 GiB regions, cleared at each clean start and stop); a DBT
//! migration keeps one for its dirty regions (cleared when it starts, kept until it ends).
//!
//! Steady state costs one atomic load per write: a region once recorded is known in
//! memory (a bit per region), and only the first write into it takes the file's lock.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The region file of one LUN or migration.
#[derive(Debug)]
pub struct RegionLog {
    file: File,
    region_bytes: u64,
    regions: u64,
    /// A bit per region recorded in the file (in memory, rebuilt at open).
    recorded: Box<[AtomicU64]>,
    /// Serializes the first writes into regions (one write and one sync each).
    lock: Mutex<()>,
}

impl RegionLog {
    /// Opens (or creates) the file for `size_bytes` in regions of `region_bytes`; the
    /// regions it already holds are returned as byte extents and count as recorded.
    pub fn open(
        path: &Path,
        size_bytes: u64,
        region_bytes: u64,
    ) -> io::Result<(RegionLog, Vec<(u64, u64)>)> {
        assert!(region_bytes > 0, "a region has bytes");
        let regions = size_bytes.div_ceil(region_bytes);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut bytes = vec![0u8; regions as usize];
        let found = file.read_at(&mut bytes, 0)?;
        file.set_len(regions)?;
        let log = RegionLog {
            file,
            region_bytes,
            regions,
            recorded: (0..regions.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            lock: Mutex::new(()),
        };
        let mut held = Vec::new();
        for (region, _) in bytes[..found].iter().enumerate().filter(|(_, b)| **b != 0) {
            let region = region as u64;
            log.set_bit(region);
            let offset = region * region_bytes;
            held.push((offset, region_bytes.min(size_bytes - offset)));
        }
        Ok((log, held))
    }

    fn bit(&self, region: u64) -> Option<(&AtomicU64, u64)> {
        self.recorded
            .get((region / 64) as usize)
            .map(|word| (word, 1u64 << (region % 64)))
    }

    fn set_bit(&self, region: u64) {
        if let Some((word, mask)) = self.bit(region) {
            word.fetch_or(mask, Ordering::AcqRel);
        }
    }

    fn regions_of(&self, offset: u64, len: u64) -> std::ops::RangeInclusive<u64> {
        let first = offset / self.region_bytes;
        let last = (offset.saturating_add(len.max(1) - 1) / self.region_bytes)
            .min(self.regions.saturating_sub(1));
        first..=last
    }

    /// Whether [`RegionLog::record`] would write and sync the file for this range.
    pub fn needs_record(&self, offset: u64, len: u64) -> bool {
        len > 0
            && self.regions_of(offset, len).any(|region| {
                self.bit(region)
                    .is_some_and(|(word, mask)| word.load(Ordering::Acquire) & mask == 0)
            })
    }

    /// Records the regions of `offset..offset+len` durably, before the write into them.
    pub fn record(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        for region in self.regions_of(offset, len) {
            let Some((word, mask)) = self.bit(region) else {
                continue;
            };
            if word.load(Ordering::Acquire) & mask != 0 {
                continue;
            }
            let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            if word.load(Ordering::Acquire) & mask != 0 {
                continue;
            }
            self.file.write_all_at(&[1], region)?;
            self.file.sync_data()?;
            word.fetch_or(mask, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Forgets every region, durably (only when no write can run).
    pub fn clear(&self) -> io::Result<()> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.file
            .write_all_at(&vec![0u8; self.regions as usize], 0)?;
        self.file.sync_data()?;
        for word in self.recorded.iter() {
            word.store(0, Ordering::Release);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_regions_come_back_after_a_reopen_and_clear_forgets_them() {
        let path = std::env::temp_dir().join(format!("region-log-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let size = 10 * 4096 + 100;
        let (log, held) = RegionLog::open(&path, size, 4096).unwrap();
        assert!(held.is_empty());
        assert!(log.needs_record(4096 * 3 + 10, 5000));
        log.record(4096 * 3 + 10, 5000).unwrap(); // regions 3 and 4
        log.record(size - 1, 1).unwrap(); // the short last region
        assert!(!log.needs_record(4096 * 3, 8192));
        assert!(log.needs_record(0, 1));
        drop(log);
        // A crash: the file holds what was recorded; those regions count as recorded.
        let (log, held) = RegionLog::open(&path, size, 4096).unwrap();
        assert_eq!(
            held,
            vec![(3 * 4096, 4096), (4 * 4096, 4096), (10 * 4096, 100)]
        );
        assert!(!log.needs_record(4096 * 4, 1));
        log.clear().unwrap();
        assert!(log.needs_record(4096 * 4, 1));
        drop(log);
        let (_, held) = RegionLog::open(&path, size, 4096).unwrap();
        assert!(held.is_empty());
        let _ = std::fs::remove_file(&path);
    }

    proptest::proptest! {
        // Every first record is an fdatasync: few cases, few regions, still every shape
        // (short last region, ranges across regions, clears in between).
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Against a model (the set of regions written): a reopened log holds exactly the
        /// regions recorded since the last clear, and needs no record for them.
        #[test]
        fn a_reopened_log_holds_exactly_the_regions_recorded_since_the_last_clear(
            region_bytes in 1000u64..5000,
            size in 1u64..100_000,
            ops in proptest::collection::vec((0u64..120_000, 0u64..8_000, 0u8..12), 0..24),
        ) {
            let path = std::env::temp_dir().join(format!(
                "region-log-prop-{}-{:x}",
                std::process::id(),
                u64::from_le_bytes(datapath::client::random_bytes(8).try_into().unwrap())
            ));
            let (log, _) = RegionLog::open(&path, size, region_bytes).unwrap();
            let regions = size.div_ceil(region_bytes);
            let mut model = std::collections::BTreeSet::new();
            for (offset, len, op) in ops {
                if op == 0 {
                    log.clear().unwrap();
                    model.clear();
                    continue;
                }
                let offset = offset % size;
                let len = len.min(size - offset);
                log.record(offset, len).unwrap();
                if len > 0 {
                    for region in offset / region_bytes..=(offset + len - 1) / region_bytes {
                        model.insert(region.min(regions - 1));
                    }
                }
                proptest::prop_assert!(!log.needs_record(offset, len));
            }
            drop(log);
            let (log, held) = RegionLog::open(&path, size, region_bytes).unwrap();
            let expected: Vec<(u64, u64)> = model
                .iter()
                .map(|r| (r * region_bytes, region_bytes.min(size - r * region_bytes)))
                .collect();
            proptest::prop_assert_eq!(held, expected);
            for region in 0..regions {
                proptest::prop_assert_eq!(
                    log.needs_record(region * region_bytes, 1),
                    !model.contains(&region)
                );
            }
            let _ = std::fs::remove_file(&path);
        }
    }
}
