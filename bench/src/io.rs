//! One I/O as every part of the tool sees it: the workload makes an [`IoUnit`], an engine
//! carries it out and hands it back in an [`IoDone`], the statistics count it.
//!
//! Also the vocabulary of fio's options that the job parser fills and the workload follows
//! as they are ([`PerDir`], [`RwKind`], [`Distribution`], [`RateProcess`]): one type each,
//! so nothing maps one onto a copy of itself.

/// Which way the data goes. Trim carries no data (UNMAP on iSCSI, discard on a device).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Read,
    Write,
    Trim,
}

impl Direction {
    /// fio's name for the direction in its reports ("read", "write", "trim").
    pub fn fio_name(self) -> &'static str {
        match self {
            Direction::Read => "read",
            Direction::Write => "write",
            Direction::Trim => "trim",
        }
    }
}

/// One I/O. The buffer travels with it by value: write data is sent from it, read data
/// lands in it, and it comes back in the completion. For a read its length is `len`; for a
/// trim it is empty.
#[derive(Clone, PartialEq, Eq)]
pub struct IoUnit {
    /// The caller's tag, unique among the I/Os in flight of one job.
    pub id: u64,
    pub direction: Direction,
    /// Which of the job's files (LUNs) it goes to: an index into its `filename` list, 0
    /// for a job with one.
    pub file: u32,
    /// Byte offset in the target (file, device or LUN).
    pub offset: u64,
    /// Bytes moved.
    pub len: u32,
    pub buffer: Vec<u8>,
}

/// The bytes a [`IoUnit::sync_range`] flushes, and how (`SYNC_FILE_RANGE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncRange {
    pub offset: u64,
    pub len: u64,
    pub flags: u32,
}

impl IoUnit {
    /// The offset that marks a flush unit (no real I/O starts there).
    pub const FLUSH_OFFSET: u64 = u64::MAX;
    /// The offset that marks a flush of data only ([`IoUnit::datasync`]).
    pub const DATASYNC_OFFSET: u64 = u64::MAX - 1;
    /// The offset that marks a flush of a range ([`IoUnit::sync_range`]).
    pub const SYNC_RANGE_OFFSET: u64 = u64::MAX - 2;

    /// A flush of file `file`: make every completed write durable (fio's `fsync` and
    /// `end_fsync`; `fsync(2)` on a file, SYNCHRONIZE CACHE on a LUN). It is a write of no
    /// bytes at [`IoUnit::FLUSH_OFFSET`], so it travels through the engines' queues as any
    /// unit; an engine carries it out only when [`crate::engine::Engine::supports_flush`]
    /// says so (the runner sends none to the others).
    pub fn flush(id: u64, file: u32) -> IoUnit {
        IoUnit {
            id,
            direction: Direction::Write,
            file,
            offset: Self::FLUSH_OFFSET,
            len: 0,
            buffer: Vec::new(),
        }
    }

    /// A flush of the data only (fio's `fdatasync`: `fdatasync(2)` on a file; a LUN has
    /// no such distinction and gets SYNCHRONIZE CACHE). A flush unit for every engine.
    pub fn datasync(id: u64, file: u32) -> IoUnit {
        IoUnit {
            offset: Self::DATASYNC_OFFSET,
            ..IoUnit::flush(id, file)
        }
    }

    /// A flush of `range` (fio's `sync_file_range`: `sync_file_range(2)` on a file,
    /// SYNCHRONIZE CACHE of the whole LUN on a LUN). The range travels in the buffer, as
    /// the unit's offset marks it a flush.
    pub fn sync_range(id: u64, file: u32, range: SyncRange) -> IoUnit {
        let mut buffer = Vec::with_capacity(20);
        buffer.extend_from_slice(&range.offset.to_le_bytes());
        buffer.extend_from_slice(&range.len.to_le_bytes());
        buffer.extend_from_slice(&range.flags.to_le_bytes());
        IoUnit {
            offset: Self::SYNC_RANGE_OFFSET,
            buffer,
            ..IoUnit::flush(id, file)
        }
    }

    /// Whether this is a flush unit ([`IoUnit::flush`], [`IoUnit::datasync`] or
    /// [`IoUnit::sync_range`]).
    pub fn is_flush(&self) -> bool {
        self.direction == Direction::Write
            && self.len == 0
            && matches!(
                self.offset,
                Self::FLUSH_OFFSET | Self::DATASYNC_OFFSET | Self::SYNC_RANGE_OFFSET
            )
    }

    /// The range of a [`IoUnit::sync_range`] unit.
    pub fn synced_range(&self) -> Option<SyncRange> {
        if !self.is_flush() || self.offset != Self::SYNC_RANGE_OFFSET {
            return None;
        }
        let b = self.buffer.get(..20)?;
        Some(SyncRange {
            offset: u64::from_le_bytes(b[..8].try_into().ok()?),
            len: u64::from_le_bytes(b[8..16].try_into().ok()?),
            flags: u32::from_le_bytes(b[16..20].try_into().ok()?),
        })
    }

    /// Whether this is a flush of the data only ([`IoUnit::datasync`]).
    pub fn is_datasync(&self) -> bool {
        self.is_flush() && self.offset == Self::DATASYNC_OFFSET
    }
}

impl std::fmt::Debug for IoUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoUnit")
            .field("id", &self.id)
            .field("direction", &self.direction)
            .field("file", &self.file)
            .field("offset", &self.offset)
            .field("len", &self.len)
            .field("buffer_len", &self.buffer.len())
            .finish()
    }
}

/// Why one I/O failed, sorted so the report can count failures by kind.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IoError {
    /// CHECK CONDITION with sense data (SPC-4 4.5): key, ASC, ASCQ.
    #[error("CHECK CONDITION: sense key {key:#x}, ASC/ASCQ {asc:#04x}/{ascq:#04x}")]
    CheckCondition { key: u8, asc: u8, ascq: u8 },
    /// Any other SCSI status that is not GOOD (BUSY, RESERVATION CONFLICT, TASK SET FULL...).
    #[error("SCSI status {0:#04x}")]
    Status(u8),
    /// Fewer bytes moved than asked.
    #[error("short transfer: {done} of {wanted} bytes")]
    Short { wanted: u32, done: u32 },
    /// The per-I/O timeout ran out.
    #[error("no completion within {0:?}")]
    Timeout(std::time::Duration),
    /// The transport or session failed (protocol error, local errno).
    #[error("{0}")]
    Transport(String),
    /// A system call on a local file or device failed (the io_uring engine): its errno is
    /// kept, so `ignore_error` and `error_dump` name what fio's file engines name (EFBIG,
    /// ENOSPC...), not EIO.
    #[error("{detail}")]
    Os { errno: i32, detail: String },
    /// The engine can no longer reach its target: the connection was lost and could not be
    /// re-established (reconnects exhausted or off). Later I/Os would fail the same way.
    #[error("target unreachable: {0}")]
    Disconnected(String),
}

impl IoError {
    /// The errno fio would report for this failure (what `ignore_error` lists name): a
    /// timeout is ETIMEDOUT, an unreachable target ENOTCONN, a local system call its own
    /// errno, every SCSI or transport failure EIO (as fio's libiscsi engine reports a
    /// failed command).
    pub fn errno(&self) -> i32 {
        match self {
            IoError::Os { errno, .. } => *errno,
            IoError::Timeout(_) => libc::ETIMEDOUT,
            IoError::Disconnected(_) => libc::ENOTCONN,
            IoError::CheckCondition { .. }
            | IoError::Status(_)
            | IoError::Short { .. }
            | IoError::Transport(_) => libc::EIO,
        }
    }
}

/// A finished I/O: the unit (buffer handed back) and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoDone {
    pub unit: IoUnit,
    pub result: Result<(), IoError>,
}

/// One value per data direction, in fio's order: read, write, trim (fio's comma lists,
/// `bs=4k,64k`, fill these).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PerDir<T> {
    pub read: T,
    pub write: T,
    pub trim: T,
}

impl<T> PerDir<T> {
    /// The value for one direction.
    pub fn get(&self, direction: Direction) -> &T {
        match direction {
            Direction::Read => &self.read,
            Direction::Write => &self.write,
            Direction::Trim => &self.trim,
        }
    }

    /// The three values, read first.
    pub fn each(&self) -> [(Direction, &T); 3] {
        [
            (Direction::Read, &self.read),
            (Direction::Write, &self.write),
            (Direction::Trim, &self.trim),
        ]
    }

    pub fn get_mut(&mut self, direction: Direction) -> &mut T {
        match direction {
            Direction::Read => &mut self.read,
            Direction::Write => &mut self.write,
            Direction::Trim => &mut self.trim,
        }
    }
}

impl<T: Clone> PerDir<T> {
    /// The same value for all three directions.
    pub fn splat(value: T) -> PerDir<T> {
        PerDir {
            read: value.clone(),
            write: value.clone(),
            trim: value,
        }
    }
}

/// The I/O pattern (fio's `rw=`/`readwrite=`), fio's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RwKind {
    #[default]
    Read,
    Write,
    Trim,
    RandRead,
    RandWrite,
    RandTrim,
    /// `rw` or `readwrite`: sequential mixed reads and writes.
    ReadWrite,
    RandRw,
}

impl RwKind {
    /// fio's spelling, as `rw=` takes it and as fio's reports print it.
    pub fn fio_name(self) -> &'static str {
        match self {
            RwKind::Read => "read",
            RwKind::Write => "write",
            RwKind::Trim => "trim",
            RwKind::RandRead => "randread",
            RwKind::RandWrite => "randwrite",
            RwKind::RandTrim => "randtrim",
            RwKind::ReadWrite => "rw",
            RwKind::RandRw => "randrw",
        }
    }

    pub fn is_random(self) -> bool {
        matches!(
            self,
            RwKind::RandRead | RwKind::RandWrite | RwKind::RandTrim | RwKind::RandRw
        )
    }

    /// The directions the pattern issues I/O in.
    pub fn directions(self) -> &'static [Direction] {
        match self {
            RwKind::Read | RwKind::RandRead => &[Direction::Read],
            RwKind::Write | RwKind::RandWrite => &[Direction::Write],
            RwKind::Trim | RwKind::RandTrim => &[Direction::Trim],
            RwKind::ReadWrite | RwKind::RandRw => &[Direction::Read, Direction::Write],
        }
    }

    /// Whether the pattern issues I/O in this direction.
    pub fn does(self, direction: Direction) -> bool {
        self.directions().contains(&direction)
    }

    /// Reads and writes mixed by `rwmixread`.
    pub fn is_mixed(self) -> bool {
        matches!(self, RwKind::ReadWrite | RwKind::RandRw)
    }
}

/// fio's `random_distribution=`. `center` is fio's optional second value
/// (`zipf:1.2:0.25`), in `[0, 1]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Distribution {
    /// `random`: uniform; with the random map unless `norandommap`.
    #[default]
    Random,
    /// `zipf:theta`; theta > 0 and not 1.
    Zipf { theta: f64, center: Option<f64> },
    /// `pareto:h`; 0 < h < 1.
    Pareto { power: f64, center: Option<f64> },
    /// `normal:deviation`, Gaussian with the deviation a percentage of the region, in
    /// `[0, 100]`.
    Normal {
        deviation_percent: f64,
        center: Option<f64>,
    },
    /// `zoned:a/s:a/s...` (`absolute` false: each zone `s` percent of the region) or
    /// `zoned_abs:a/s:...` (`s` in bytes): `a` percent of a direction's random offsets fall
    /// in the zone, uniformly within it. Zones follow one another from the region's start;
    /// a direction with no zones draws uniformly over the whole region.
    Zoned {
        absolute: bool,
        zones: PerDir<Vec<Zone>>,
    },
    /// fio 3.42's `sequence:b1,b2,...`: the offsets are these block numbers (in units of
    /// the direction's `blockalign`) over and over; with `random_sequence_stride` each
    /// round adds the list's length to them. The job ends at the first block past the
    /// region.
    Sequence { blocks: Vec<u64>, stride: bool },
}

/// One zone of a zoned distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zone {
    /// Share of the direction's random offsets, in percent (a direction's zones add up
    /// to 100).
    pub access_percent: u32,
    /// The zone's length: percent of the region (`zoned`) or bytes (`zoned_abs`).
    pub size: u64,
}

/// fio's `rate_process=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RateProcess {
    /// Fixed gaps between I/Os.
    #[default]
    Linear,
    /// Exponential gaps (a Poisson arrival process), mean 1/IOPS.
    Poisson,
}

/// What write buffers hold (fio(1), "Buffers and memory": `zero_buffers`, `refill_buffers`,
/// `scramble_buffers`, `buffer_pattern`, `buffer_compress_percentage`,
/// `buffer_compress_chunk`, `dedupe_percentage`). [`Default`] is fio's: random data, filled
/// once per buffer and scrambled on each write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferOptions {
    /// Buffers start as zeros instead of random data.
    pub zero_buffers: bool,
    /// Fill the buffer again before every write (fio turns this on itself for
    /// `buffer_compress_percentage` and `dedupe_percentage`).
    pub refill_buffers: bool,
    /// Stamp the offset and the time into every 512 bytes of a reused buffer, so no two
    /// writes are identical blocks (fio's default).
    pub scramble_buffers: bool,
    /// Bytes repeated through the buffer instead of random data; empty when not given.
    pub pattern: Vec<u8>,
    /// Share of each chunk (0..=100) that is compressible (zeros, or the pattern).
    pub compress_percentage: u32,
    /// The chunk `compress_percentage` applies to; 0 is the whole buffer.
    pub compress_chunk_bytes: u32,
    /// Share of write buffers (0..=100) that repeat an earlier buffer exactly.
    pub dedupe_percentage: u32,
    /// `dedupe_mode=working_set` with `dedupe_working_set_percentage`: a repeat copies one
    /// of the first (that percent of the region's blocks) unique buffers, drawn at random,
    /// instead of the last unique one (`repeat`, `None`).
    pub dedupe_working_set_percent: Option<u32>,
    /// `dedupe_global`: the jobs of the run share one working set.
    pub dedupe_global: bool,
}

impl Default for BufferOptions {
    fn default() -> Self {
        BufferOptions {
            zero_buffers: false,
            refill_buffers: false,
            scramble_buffers: true,
            pattern: Vec::new(),
            compress_percentage: 0,
            compress_chunk_bytes: 512,
            dedupe_percentage: 0,
            dedupe_working_set_percent: None,
            dedupe_global: false,
        }
    }
}

/// fio's `file_service_type`: which of a job's files the next I/O goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileServiceKind {
    /// Each file in turn (fio's default).
    #[default]
    RoundRobin,
    /// Finish one file before moving on to the next.
    Sequential,
    /// A file drawn at random.
    Random,
}

/// `file_service_type=kind[:N]`: N I/Os go to a file before the next choice (default 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileService {
    pub kind: FileServiceKind,
    pub switch_after_ios: u32,
}

impl Default for FileService {
    fn default() -> Self {
        FileService {
            kind: FileServiceKind::RoundRobin,
            switch_after_ios: 1,
        }
    }
}
