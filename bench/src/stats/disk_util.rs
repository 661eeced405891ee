//! fio's disk utilization statistics (`disk_util`) for jobs on local files: the block
//! device holding each file, its `/sys/.../stat` counters read at the run's start and end,
//! and the difference, reported once per device ("Disk stats (read/write):", JSON
//! `disk_util`, terse v3's trailing fields).
//!
//! Follows fio's `diskutil.c`: a regular file is on its file system's device (`st_dev`),
//! a block device is itself (`st_rdev`), a file not made yet is on its directory's device;
//! a partition is reported as its disk (when the device's sysfs directory has `../queue`);
//! a device without a sysfs entry (tmpfs, overlay) gives none. Where fio samples the
//! counters every 250 ms on its helper thread, we read them twice (start, end): the sums
//! are the same except across a 32-bit wrap of a tick counter, which is taken as one wrap
//! as fio does. Left out: fio's per-job start (we start every device at the run's start),
//! and the "aggr" figures of a device-mapper/md device's slaves.
//!
//! Parsing and arithmetic ([`parse_stat_line`], [`DiskCounters::since`], [`DiskUtil::util`])
//! are apart from the file system reads ([`DiskWatch`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

/// The counters of one line of a block device's `stat` file (Documentation/block/stat.rst):
/// index 0 read, 1 write. `io_ticks` and `time_in_queue` are in ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskCounters {
    pub ios: [u64; 2],
    pub merges: [u64; 2],
    pub sectors: [u64; 2],
    pub ticks: [u64; 2],
    pub io_ticks: u64,
    pub time_in_queue: u64,
}

/// A `stat` line's counters: fields 1-4 reads (ios, merges, sectors, ticks), 5-8 writes,
/// 9 in flight (skipped), 10 io_ticks, 11 time_in_queue; later fields (discard, flush) are
/// ignored. `None` when fewer than 11 numbers lead the line.
pub fn parse_stat_line(line: &str) -> Option<DiskCounters> {
    let mut fields = line.split_whitespace().map(|f| f.parse::<u64>().ok());
    let mut next = || fields.next().flatten();
    let mut c = DiskCounters::default();
    for dir in 0..2 {
        c.ios[dir] = next()?;
        c.merges[dir] = next()?;
        c.sectors[dir] = next()?;
        c.ticks[dir] = next()?;
    }
    next()?; // in flight
    c.io_ticks = next()?;
    c.time_in_queue = next()?;
    Some(c)
}

/// fio's `safe_32bit_diff`: the kernel prints some tick counters as 32-bit numbers, so a
/// value below the earlier one under 2^32 wrapped once.
fn tick_diff(new: u64, old: u64) -> u64 {
    if old <= new || old >= 1 << 32 {
        new.wrapping_sub(old)
    } else {
        (1u64 << 32) + new - old
    }
}

impl DiskCounters {
    /// What happened between `start` and `self` (fio's `update_io_tick_disk`).
    pub fn since(&self, start: &DiskCounters) -> DiskCounters {
        let plain = |a: u64, b: u64| a.wrapping_sub(b);
        DiskCounters {
            ios: [0, 1].map(|d| plain(self.ios[d], start.ios[d])),
            merges: [0, 1].map(|d| plain(self.merges[d], start.merges[d])),
            sectors: [0, 1].map(|d| plain(self.sectors[d], start.sectors[d])),
            ticks: [0, 1].map(|d| tick_diff(self.ticks[d], start.ticks[d])),
            io_ticks: tick_diff(self.io_ticks, start.io_ticks),
            time_in_queue: tick_diff(self.time_in_queue, start.time_in_queue),
        }
    }
}

/// One device's figures over the run.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskUtil {
    /// The sysfs name (`vda`, `nvme0n1`, `dm-0`).
    pub name: String,
    pub counters: DiskCounters,
    /// How long the device was watched, ms (fio's `msec`).
    pub msec: u64,
}

impl DiskUtil {
    /// fio's util: the device's busy time over the time watched, in %, at most 100
    /// (0 when no time passed).
    pub fn util(&self) -> f64 {
        if self.msec == 0 {
            return 0.0;
        }
        (100.0 * self.counters.io_ticks as f64 / self.msec as f64).min(100.0)
    }
}

/// The device number (major, minor) holding `path` as fio's `get_device_numbers`: a
/// block device's own, a character device or FIFO none, anything else its file system's;
/// a path not there yet its directory's.
fn device_numbers(path: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let dev = match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            let kind = meta.file_type();
            if kind.is_block_device() {
                meta.rdev()
            } else if kind.is_char_device() || kind.is_fifo() {
                return None;
            } else {
                meta.dev()
            }
        }
        Err(_) => {
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
            std::fs::metadata(parent.unwrap_or(Path::new(".")))
                .ok()?
                .dev()
        }
    };
    // glibc's major()/minor() encoding of a dev_t.
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff);
    Some((major as u32, minor as u32))
}

/// The sysfs directory of the disk of device `major:minor` under `sys` (`/sys`): the
/// device's own, or its parent's when it is a partition (the parent has `queue`).
fn sysfs_disk_dir(sys: &Path, major: u32, minor: u32) -> Option<PathBuf> {
    let dir = std::fs::canonicalize(sys.join(format!("dev/block/{major}:{minor}"))).ok()?;
    if dir.join("../queue").exists() {
        let parent = dir.parent()?.to_path_buf();
        return parent.join("queue").exists().then_some(parent);
    }
    dir.join("stat").exists().then_some(dir)
}

/// The sysfs directory of the disk holding `path` (a partition's disk), `None` when no
/// block device holds it (tmpfs, a character device). fio's `du->sysfs_root`, shared by
/// `disk_util` and `ioscheduler`.
pub fn disk_sysfs_dir(path: &Path) -> Option<PathBuf> {
    let (major, minor) = device_numbers(path)?;
    sysfs_disk_dir(Path::new("/sys"), major, minor)
}

fn read_counters(stat: &Path) -> Option<DiskCounters> {
    parse_stat_line(std::fs::read_to_string(stat).ok()?.lines().next()?)
}

struct Watched {
    name: String,
    stat: PathBuf,
    start: DiskCounters,
    since: Instant,
}

/// The devices of a run's local files, with their counters at the start.
#[derive(Default)]
pub struct DiskWatch {
    disks: Vec<Watched>,
}

impl DiskWatch {
    /// Starts watching the disks holding `paths` (each disk once, in first-use order);
    /// paths on no block device are skipped.
    pub fn start<'a>(paths: impl IntoIterator<Item = &'a Path>) -> DiskWatch {
        let mut watch = DiskWatch::default();
        for path in paths {
            let Some(dir) = disk_sysfs_dir(path) else {
                continue;
            };
            let Some(name) = dir.file_name().map(|n| n.to_string_lossy().into_owned()) else {
                continue;
            };
            if watch.disks.iter().any(|d| d.name == name) {
                continue;
            }
            let stat = dir.join("stat");
            let Some(start) = read_counters(&stat) else {
                continue;
            };
            watch.disks.push(Watched {
                name,
                stat,
                start,
                since: Instant::now(),
            });
        }
        watch
    }

    /// Each watched disk's figures since the start (a disk whose counters can no longer be
    /// read is left out).
    pub fn finish(&self) -> Vec<DiskUtil> {
        self.disks
            .iter()
            .filter_map(|disk| {
                let end = read_counters(&disk.stat)?;
                Some(DiskUtil {
                    name: disk.name.clone(),
                    counters: end.since(&disk.start),
                    msec: disk.since.elapsed().as_millis() as u64,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = " 5524177  1807564 1030619714  1727684  2391861   314752 246533536   988292        0   410752  2721311    17384       39  9699488     4715     9137      619";

    #[test]
    fn parses_the_kernel_stat_line() {
        let c = parse_stat_line(LINE).unwrap();
        assert_eq!(c.ios, [5524177, 2391861]);
        assert_eq!(c.merges, [1807564, 314752]);
        assert_eq!(c.sectors, [1030619714, 246533536]);
        assert_eq!(c.ticks, [1727684, 988292]);
        assert_eq!(c.io_ticks, 410752);
        assert_eq!(c.time_in_queue, 2721311);
        // The 11-field layout of older kernels.
        let old = parse_stat_line("1 2 3 4 5 6 7 8 9 10 11\n").unwrap();
        assert_eq!((old.io_ticks, old.time_in_queue), (10, 11));
        assert_eq!(parse_stat_line("1 2 3 4 5 6 7 8 9 10"), None);
        assert_eq!(parse_stat_line("1 2 x 4 5 6 7 8 9 10 11"), None);
        assert_eq!(parse_stat_line(""), None);
    }

    #[test]
    fn differences_take_a_32_bit_tick_wrap_as_fio() {
        let start = parse_stat_line("10 1 80 5 0 0 0 0 0 4294967290 4294967295").unwrap();
        let end = parse_stat_line("30 3 240 9 2 0 16 1 0 6 4").unwrap();
        let d = end.since(&start);
        assert_eq!(d.ios, [20, 2]);
        assert_eq!(d.merges, [2, 0]);
        assert_eq!(d.sectors, [160, 16]);
        assert_eq!(d.ticks, [4, 1]);
        assert_eq!(d.io_ticks, 12);
        assert_eq!(d.time_in_queue, 5);
        // Beyond 32 bits a counter is 64-bit: no wrap assumed.
        assert_eq!(tick_diff(5, 1 << 33), 5u64.wrapping_sub(1 << 33));
    }

    #[test]
    fn util_is_busy_time_over_watched_time_capped() {
        let mut disk = DiskUtil {
            name: "vda".into(),
            counters: DiskCounters {
                io_ticks: 250,
                ..DiskCounters::default()
            },
            msec: 1000,
        };
        assert_eq!(disk.util(), 25.0);
        disk.msec = 100;
        assert_eq!(disk.util(), 100.0);
        disk.msec = 0;
        assert_eq!(disk.util(), 0.0);
    }

    #[test]
    fn device_numbers_decode_as_glibc() {
        // /dev/null is a character device: no disk.
        assert_eq!(device_numbers(Path::new("/dev/null")), None);
        // A file not there yet is on its directory's device.
        let here = device_numbers(Path::new("."));
        assert_eq!(device_numbers(Path::new("./no-such-file-here")), here);
    }
}
