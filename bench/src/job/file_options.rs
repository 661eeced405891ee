//! fio's file options (filesetup.c, ioengines.c `td_io_open_file`, backend.c): what a job
//! does to its local file before, around and after its I/O, and the commands it runs
//! before and after. They act on the io_uring engine's files; fio's libiscsi engine is
//! "diskless" (no page cache, nothing to lay out or unlink), so on a LUN they are taken
//! and do nothing, as there. `exec_prerun`/`exec_postrun` run for every engine.

/// fio's `fadvise_hint`: the advice given with `posix_fadvise(2)` over the job's range
/// once the file is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FadviseHint {
    /// `0`: no advice.
    None,
    /// `1` (fio's default): `POSIX_FADV_RANDOM` for a random job, `SEQUENTIAL` otherwise.
    ByPattern,
    Random,
    Sequential,
    /// `POSIX_FADV_NOREUSE`.
    NoReuse,
}

impl FadviseHint {
    /// fio's values, in `--cmdhelp`'s order.
    pub const VALUES: &'static str = "0|1|random|sequential|noreuse";

    pub fn parse(text: &str) -> Option<FadviseHint> {
        Some(match text {
            "0" => FadviseHint::None,
            "1" => FadviseHint::ByPattern,
            "random" => FadviseHint::Random,
            "sequential" => FadviseHint::Sequential,
            "noreuse" => FadviseHint::NoReuse,
            _ => return None,
        })
    }

    pub fn fio_name(self) -> &'static str {
        match self {
            FadviseHint::None => "0",
            FadviseHint::ByPattern => "1",
            FadviseHint::Random => "random",
            FadviseHint::Sequential => "sequential",
            FadviseHint::NoReuse => "noreuse",
        }
    }

    /// The `posix_fadvise` advice for a job that is `random` or not; `None` for no call.
    pub fn advice(self, random: bool) -> Option<libc::c_int> {
        match self {
            FadviseHint::None => None,
            FadviseHint::ByPattern if random => Some(libc::POSIX_FADV_RANDOM),
            FadviseHint::ByPattern | FadviseHint::Sequential => Some(libc::POSIX_FADV_SEQUENTIAL),
            FadviseHint::Random => Some(libc::POSIX_FADV_RANDOM),
            FadviseHint::NoReuse => Some(libc::POSIX_FADV_NOREUSE),
        }
    }
}

/// fio's `sync_file_range=flags[:N]`: `sync_file_range(2)` with `flags` over the range
/// written since the last flush, after every `every` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncFileRange {
    /// `SYNC_FILE_RANGE_*` bits.
    pub flags: u32,
    pub every: u32,
}

impl SyncFileRange {
    const NAMES: [(&'static str, u32); 3] = [
        ("wait_before", libc::SYNC_FILE_RANGE_WAIT_BEFORE),
        ("write", libc::SYNC_FILE_RANGE_WRITE),
        ("wait_after", libc::SYNC_FILE_RANGE_WAIT_AFTER),
    ];

    /// `wait_before,write:8`: fio's names joined by commas, then `:N` (1 when absent).
    pub fn parse(text: &str) -> Result<SyncFileRange, String> {
        let (names, every) = match text.split_once(':') {
            Some((names, every)) => {
                let every = every
                    .trim()
                    .parse::<u32>()
                    .map_err(|_| format!("{every:?} after ':' is not a count of writes"))?;
                (names, every)
            }
            None => (text, 1),
        };
        let mut flags = 0;
        for name in names.split(',').map(str::trim) {
            let Some((_, bit)) = Self::NAMES.iter().find(|(known, _)| *known == name) else {
                return Err(format!(
                    "{name:?} is not one of wait_before, write, wait_after"
                ));
            };
            flags |= bit;
        }
        Ok(SyncFileRange { flags, every })
    }

    pub fn render(&self) -> String {
        let names: Vec<&str> = Self::NAMES
            .iter()
            .filter(|(_, bit)| self.flags & bit != 0)
            .map(|(name, _)| *name)
            .collect();
        format!("{}:{}", names.join(","), self.every)
    }
}

/// fio's `hugepage-size` default (`FIO_HUGE_PAGE` on Linux x86-64).
pub const HUGEPAGE_SIZE_DEFAULT_BYTES: u64 = 2 << 20;

/// The options with fio's defaults (the field docs give fio's names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOptions {
    /// `invalidate` (default on): drop the page cache of the job's range when the file is
    /// opened (`POSIX_FADV_DONTNEED`; `BLKFLSBUF` on a block device). `pre_read` turns it
    /// off, as fio's option check does.
    pub invalidate: bool,
    /// `overwrite`: a write job's file is written out before the job, so its writes
    /// overwrite allocated blocks (fio lays out files only for reads otherwise).
    pub overwrite: bool,
    /// `pre_read`: read the job's range once before the job, so it starts in the cache.
    pub pre_read: bool,
    pub fadvise_hint: FadviseHint,
    /// `fsync_on_close`: a job that writes flushes at its end and once more when it closes
    /// the file.
    pub fsync_on_close: bool,
    /// `unlink`: remove a regular file when the job is done.
    pub unlink: bool,
    /// `unlink_each_loop`: with `loops`, remove the job's file after each loop but the
    /// last; the next loop creates it again (empty) as it opens it, as fio does.
    pub unlink_each_loop: bool,
    /// `create_on_open`: the file is not laid out first; it is created when the job
    /// opens it and grows with the writes (a job that reads is refused: fio reads nothing
    /// from the empty file).
    pub create_on_open: bool,
    /// `file_append`: a write job on an existing regular file starts at its end.
    pub file_append: bool,
    /// `create_only`: lay the file out, then end the job without I/O.
    pub create_only: bool,
    /// `create_fsync` (default on): `fsync` a file once it is laid out.
    pub create_fsync: bool,
    /// `create_serialize` (default on): files are laid out one job after another. Ours
    /// always are (every job's file is set up before any job starts), so `0` is taken and
    /// changes nothing.
    pub create_serialize: bool,
    /// `allow_file_create` (default on): a missing file may be created; off, it is an error.
    pub allow_file_create: bool,
    /// `allow_mounted_write`: a job may write to a block device that is mounted.
    pub allow_mounted_write: bool,
    /// `exec_prerun`/`exec_postrun`: shell commands run before and after the job, their
    /// output in `<job>.prerun.txt`/`<job>.postrun.txt`.
    pub exec_prerun: Option<String>,
    pub exec_postrun: Option<String>,
    /// `lockmem`: bytes of memory the job holds locked while it runs (0: none).
    pub lockmem_bytes: u64,
    /// `ioscheduler`: the I/O scheduler the disk under each local file is switched to
    /// before the job's I/O (`run/ioscheduler.rs`); nothing for a LUN, as fio's diskless
    /// engines.
    pub ioscheduler: Option<String>,
    /// `hugepage-size`: taken for job files that name it; it matters only to fio's huge
    /// page buffers (`mem=shmhuge`/`mmaphuge`), which iscsi-bench refuses.
    pub hugepage_size_bytes: u64,
}

impl Default for FileOptions {
    fn default() -> FileOptions {
        FileOptions {
            invalidate: true,
            overwrite: false,
            pre_read: false,
            fadvise_hint: FadviseHint::ByPattern,
            fsync_on_close: false,
            unlink: false,
            unlink_each_loop: false,
            create_on_open: false,
            file_append: false,
            create_only: false,
            create_fsync: true,
            create_serialize: true,
            allow_file_create: true,
            allow_mounted_write: false,
            exec_prerun: None,
            exec_postrun: None,
            lockmem_bytes: 0,
            ioscheduler: None,
            hugepage_size_bytes: HUGEPAGE_SIZE_DEFAULT_BYTES,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_file_range_reads_fios_form() {
        let sfr = SyncFileRange::parse("wait_before,write:8").unwrap();
        assert_eq!(
            sfr.flags,
            libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE
        );
        assert_eq!(sfr.every, 8);
        assert_eq!(SyncFileRange::parse(&sfr.render()), Ok(sfr));
        assert_eq!(SyncFileRange::parse("write").unwrap().every, 1);
        assert!(SyncFileRange::parse("bogus").is_err());
        assert!(SyncFileRange::parse("write:x").is_err());
    }

    #[test]
    fn fadvise_hint_reads_fios_values_and_writes_them_back() {
        for text in FadviseHint::VALUES.split('|') {
            let hint = FadviseHint::parse(text).unwrap();
            assert_eq!(hint.fio_name(), text);
        }
        assert_eq!(FadviseHint::parse("2"), None);
        assert_eq!(FadviseHint::parse("willneed"), None);
    }

    #[test]
    fn the_pattern_hint_follows_the_job() {
        let hint = FadviseHint::ByPattern;
        assert_eq!(hint.advice(true), Some(libc::POSIX_FADV_RANDOM));
        assert_eq!(hint.advice(false), Some(libc::POSIX_FADV_SEQUENTIAL));
        assert_eq!(FadviseHint::None.advice(true), None);
        assert_eq!(
            FadviseHint::NoReuse.advice(false),
            Some(libc::POSIX_FADV_NOREUSE)
        );
    }
}
