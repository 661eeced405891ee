//! The typed result of parsing: one [`JobSpec`] per job section (or `--name`), with fio's
//! defaults where the job says nothing.

use std::path::PathBuf;
use std::time::Duration;

use super::error::{JobError, Origin};
use crate::io::Direction;
pub use crate::io::{
    BufferOptions, Distribution, FileService, FileServiceKind, PerDir, RateProcess, RwKind, Zone,
};
pub use crate::workload::{ChecksumKind, RwSequencer};

/// `rw=` with fio's optional `:<nr>` suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RwMode {
    pub kind: RwKind,
    /// fio's offset modifier: for a random pattern, the number of I/Os issued before a new
    /// random offset is drawn (at least 1); for a sequential one, the bytes added after each
    /// I/O (`rw=write:4k` leaves 4 KiB holes, `rw=read:-8k` walks backwards). `None` when
    /// no suffix was given.
    pub offset_modifier: Option<i64>,
}

/// An inclusive range `min-max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueRange<T> {
    pub min: T,
    pub max: T,
}

/// One weighted block size of `bssplit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BsSplitEntry {
    pub len_bytes: u64,
    /// Share of the I/Os of this direction, in percent. The entries of one direction add
    /// up to exactly 100 (blank percentages were filled in evenly, as fio does).
    pub percent: u32,
}

/// How big the I/Os of one direction are: `bs`, `bsrange` or `bssplit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockSize {
    Fixed(u64),
    /// Sizes drawn between min and max, multiples of min (fio without `bs_unaligned`).
    Range(ValueRange<u64>),
    Split(Vec<BsSplitEntry>),
}

impl BlockSize {
    /// The smallest I/O this setting issues.
    pub fn min_bytes(&self) -> u64 {
        match self {
            BlockSize::Fixed(len) => *len,
            BlockSize::Range(range) => range.min,
            BlockSize::Split(entries) => entries
                .iter()
                .filter(|entry| entry.percent > 0)
                .map(|entry| entry.len_bytes)
                .min()
                .unwrap_or(0),
        }
    }

    /// The largest I/O this setting issues.
    pub fn max_bytes(&self) -> u64 {
        match self {
            BlockSize::Fixed(len) => *len,
            BlockSize::Range(range) => range.max,
            BlockSize::Split(entries) => entries
                .iter()
                .filter(|entry| entry.percent > 0)
                .map(|entry| entry.len_bytes)
                .max()
                .unwrap_or(0),
        }
    }
}

/// fio's `zonemode=`, of the modes iscsi-bench runs (`zbd`, zoned block devices, is refused
/// when parsed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ZoneMode {
    /// The target is not zoned (fio's default); `zonerange` and `zoneskip` do nothing.
    #[default]
    None,
    /// I/O is held to one zone at a time (`workload::strided`).
    Strided,
}

/// fio's `zoneskip=`: bytes, or a number of zones (`2z`: twice `zonesize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneSkip {
    Bytes(u64),
    Zones(u32),
}

/// A size given in bytes or as a percentage of something (the target for `size`/`offset`,
/// `size` for `io_size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeSpec {
    Bytes(u64),
    /// 1 to 100.
    Percent(u8),
}

/// `verify=`: the check a written block carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyKind {
    None,
    /// A header with a digest of this kind.
    Checksum(ChecksumKind),
    /// Only `verify_pattern` is checked.
    Pattern,
    /// fio's `meta`: the header alone (offset, generation), no data digest.
    Meta,
}

/// `ioengine=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Our iSCSI data path (`iscsi`, or fio's `libiscsi` so fio job files work unchanged).
    Iscsi,
    /// io_uring on a local file or block device (`io_uring`, or fio's asynchronous
    /// `libaio` and `posixaio`, which issue the same I/O).
    IoUring,
    /// No I/O at all: completes every request at once.
    Null,
}

/// fio's synchronous engines (engines/sync.c): one I/O at a time, carried out by the job's
/// thread with one system call each (fio caps their queue depth at 1). They run on the
/// io_uring engine's files and checks, with these calls instead of the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncCall {
    /// `sync`: `lseek(2)`, then `read(2)`/`write(2)`.
    Sync,
    /// `psync`: `pread(2)`/`pwrite(2)` (fio's default engine on Linux).
    Psync,
    /// `pvsync`: `preadv(2)`/`pwritev(2)`.
    Pvsync,
    /// `pvsync2`: `preadv2(2)`/`pwritev2(2)`, with `RWF_HIPRI` (`hipri`), `RWF_DONTCACHE`
    /// (`uncached`) and `RWF_NOWAIT` (`nowait`) as fio's engine options ask.
    Pvsync2,
}

impl SyncCall {
    pub fn name(self) -> &'static str {
        match self {
            SyncCall::Sync => "sync",
            SyncCall::Psync => "psync",
            SyncCall::Pvsync => "pvsync",
            SyncCall::Pvsync2 => "pvsync2",
        }
    }
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Iscsi => "iscsi",
            Engine::IoUring => "io_uring",
            Engine::Null => "null",
        }
    }
}

/// An `iscsi://` URL as libiscsi (and therefore fio's libiscsi engine) spells it:
/// `iscsi://[user[%password]@]host[:port]/target-iqn/lun`. IPv6 hosts go in brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IscsiUrl {
    pub user: Option<String>,
    pub password: Option<String>,
    /// Without brackets for IPv6.
    pub host: String,
    pub port: u16,
    pub target_iqn: String,
    pub lun: u64,
}

/// What a job's `filename` points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Iscsi(IscsiUrl),
    /// A local file or block device.
    Path(PathBuf),
    /// `filename=null`: nothing (for `ioengine=null`).
    Null,
}

/// How an `rw=copy` job copies (`copy_method=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CopyMethod {
    /// EXTENDED COPY (LID1): the target moves the data.
    #[default]
    Xcopy,
    /// READ then WRITE through this host, `iodepth` commands of `bs` at a time.
    Host,
}

impl CopyMethod {
    pub fn name(self) -> &'static str {
        match self {
            CopyMethod::Xcopy => "xcopy",
            CopyMethod::Host => "host",
        }
    }
}

/// An `rw=copy` job's own settings; the source is the job's `offset` and `size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CopySpec {
    pub method: CopyMethod,
    /// `copy_dest=`: the destination's byte offset; `None`: right after the source.
    pub dest_bytes: Option<u64>,
}

/// `header_digest=` / `data_digest=` (RFC 7143 13.1): what the initiator offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestChoice {
    None,
    Crc32c,
}

/// `transport=`: how the iSCSI engine reaches the target (DESIGN.md, "The path of one I/O"),
/// the data path's one transport kind.
pub use datapath::transport::TransportKind;

/// CHAP credentials (RFC 7143 12.1.3, RFC 1994).
#[derive(Clone, PartialEq, Eq)]
pub struct ChapCredentials {
    pub username: String,
    pub secret: String,
}

impl std::fmt::Debug for ChapCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets stay out of logs.
        f.debug_struct("ChapCredentials")
            .field("username", &self.username)
            .field("secret", &"<hidden>")
            .finish()
    }
}

/// The iSCSI login keys and engine settings a job may set (iscsi-bench's own options; fio
/// has none of these). `None` means "what the engine proposes by default".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IscsiOptions {
    pub header_digest: DigestChoice,
    pub data_digest: DigestChoice,
    pub immediate_data: Option<bool>,
    pub initial_r2t: Option<bool>,
    pub max_burst_length_bytes: Option<u32>,
    pub first_burst_length_bytes: Option<u32>,
    pub max_recv_data_segment_length_bytes: Option<u32>,
    /// One-way CHAP: the target checks us.
    pub chap: Option<ChapCredentials>,
    /// Mutual CHAP: we check the target too (needs `chap`).
    pub mutual_chap: Option<ChapCredentials>,
    /// `initiator_name` (fio's libiscsi engine calls it `initiator`).
    pub initiator_name: Option<String>,
    pub transport: TransportKind,
    /// Shards (one per core) the job's I/O is spread over.
    pub shards: Option<u32>,
    /// `reconnect_max`: log in again after a lost connection at most this many times in a
    /// row (0: never; `None`: the engine's default).
    pub reconnect_max: Option<u32>,
    /// `replacement_timeout`: the longest one recovery (reconnect and login) may take
    /// (open-iscsi's name; `None`: the engine's default).
    pub replacement_timeout: Option<Duration>,
    /// `paths=`: several paths to the LU (multipath); `None`: the URL's portal alone.
    pub paths: Option<PathList>,
    /// `path_policy=` (`None`: round-robin) and `no_path_retry=` (`None`: the engine's
    /// default) of a multipath job.
    pub path_policy: Option<datapath::shard::PathPolicy>,
    pub no_path_retry: Option<Duration>,
    /// `noop_out_interval`, `noop_out_timeout` (open-iscsi's names): NOP-Out pings of a
    /// silent target; `None`: the engine's defaults.
    pub noop_out_interval: Option<Duration>,
    pub noop_out_timeout: Option<Duration>,
}

/// `rate_backlog` when not given: longer than a busy machine's scheduling hiccups (which
/// the rate still makes up for), a tenth of a 1 s reporting interval (so a stall's
/// catching up adds at most a tenth to one interval's rate).
pub const RATE_BACKLOG_DEFAULT: Duration = Duration::from_millis(100);

/// Which portals a multipath job uses (`paths=`): `datapath`'s list, shared with `iscsi-ctl`.
pub use datapath::shard::PathList;

impl Default for IscsiOptions {
    fn default() -> Self {
        IscsiOptions {
            header_digest: DigestChoice::None,
            data_digest: DigestChoice::None,
            immediate_data: None,
            initial_r2t: None,
            max_burst_length_bytes: None,
            first_burst_length_bytes: None,
            max_recv_data_segment_length_bytes: None,
            chap: None,
            mutual_chap: None,
            initiator_name: None,
            transport: TransportKind::Software,
            shards: None,
            reconnect_max: None,
            replacement_timeout: None,
            paths: None,
            path_policy: None,
            no_path_retry: None,
            noop_out_interval: None,
            noop_out_timeout: None,
        }
    }
}

/// fio's I/O replay options (fio HOWTO "I/O replay"). The replay itself is
/// `crate::workload::replay`; the log writer `crate::output::iolog`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IologOptions {
    /// `write_iolog`: every issued I/O goes to this file (fio's iolog version 3, appended).
    pub write: Option<String>,
    /// `read_iolog`: the I/Os come from this log instead of the job's pattern.
    pub read: Option<String>,
    /// `read_iolog_chunked`: accepted; the log is read as it is replayed either way.
    pub chunked: bool,
    /// `replay_no_stall`: ignore the log's timestamps, issue as fast as the depth allows.
    pub no_stall: bool,
    /// `replay_redirect`: every I/O of the log goes to this one file.
    pub redirect: Option<String>,
    /// `replay_scale`: offsets are divided by this (0 or 1: unchanged).
    pub scale: u64,
    /// `replay_align`: offsets are aligned down to this power of 2 (0: unchanged).
    pub align_bytes: u64,
    /// `replay_time_scale`: percent of the log's rate (200 replays twice as fast).
    pub time_scale_percent: u32,
    /// `replay_skip`: kinds of log lines that are not replayed.
    pub skip: ReplaySkip,
}

impl Default for IologOptions {
    /// fio's defaults: no logs, `replay_scale=1`, `replay_time_scale=100`.
    fn default() -> Self {
        IologOptions {
            write: None,
            read: None,
            chunked: false,
            no_stall: false,
            redirect: None,
            scale: 1,
            align_bytes: 0,
            time_scale_percent: 100,
            skip: ReplaySkip::default(),
        }
    }
}

/// fio's `replay_skip`: which kinds of I/O lines a replay leaves out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplaySkip {
    pub read: bool,
    pub write: bool,
    pub trim: bool,
    pub sync: bool,
}

impl ReplaySkip {
    /// fio's syntax: a comma-separated list of `read`, `write`, `trim`, `sync`.
    pub fn parse(text: &str) -> Result<ReplaySkip, String> {
        let mut skip = ReplaySkip::default();
        for kind in text.trim().split(',') {
            match kind {
                "read" => skip.read = true,
                "write" => skip.write = true,
                "trim" => skip.trim = true,
                "sync" => skip.sync = true,
                other => {
                    return Err(format!(
                        "unknown skip type {other:?} (read, write, trim, sync)"
                    ))
                }
            }
        }
        Ok(skip)
    }

    /// The form [`ReplaySkip::parse`] reads; empty when nothing is skipped.
    pub fn render(&self) -> String {
        [
            (self.read, "read"),
            (self.write, "write"),
            (self.trim, "trim"),
            (self.sync, "sync"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| *name)
        .collect::<Vec<_>>()
        .join(",")
    }
}

/// Name of a log file (`write_lat_log` and friends): fio appends `_lat.N.log` etc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogName {
    /// Option given without a value: the job's name is the prefix.
    JobName,
    Prefix(String),
}

/// fio's default `percentile_list`.
pub const DEFAULT_PERCENTILES: [f64; 17] = [
    1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95,
    99.99,
];

/// fio's default block size.
pub const DEFAULT_BLOCK_SIZE_BYTES: u64 = 4096;

/// One job, as parsed. `numjobs` is kept, not expanded: the runner starts `numjobs` clones
/// of this spec, which share its name and group (as fio's clones do); clone `i` starts
/// at `offset + i * offset_increment`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub name: String,
    pub description: Option<String>,
    /// Where the job's section (or `--name`) is.
    pub origin: Origin,
    /// Reporting group: jobs with the same id are reported together under
    /// `group_reporting`, and a new id starts after `stonewall`/`new_group` or with each
    /// job file after the first (as fio numbers `groupid`).
    pub group_id: u32,

    // Target and engine.
    pub filename: Option<Target>,
    /// fio's `directory`: where a relative file name, and the file a local engine makes
    /// when the job names none, live (`JobSpec::place_local_file`).
    pub directory: Option<std::path::PathBuf>,
    /// fio's `filename_format`: the name of that file (`$jobname`, `$jobnum`, `$filenum`,
    /// `$clientuid`; None: fio's `$jobname.$jobnum.$filenum`).
    pub filename_format: Option<String>,
    /// The second and later entries of fio's `:`-separated `filename` list (LUNs of the
    /// first one's target).
    pub more_filenames: Vec<Target>,
    /// `file_service_type`: which file of the list the next I/O goes to.
    pub file_service: FileService,
    /// fio's `nrfiles`: how many files a local job without `filename` makes (named by
    /// `filename_format`, `$filenum` from 0), its `size` divided between them. Ignored when
    /// the job names its files, as fio does.
    pub nrfiles: u32,
    /// fio's `openfiles`: how many of them fio keeps open at once (0: all). Taken and
    /// rendered only: the io_uring engine keeps every file of the job open.
    pub openfiles: u32,
    /// `None`: chosen from the target (see [`JobSpec::engine`]).
    pub ioengine: Option<Engine>,
    /// `ioengine=psync` and the other synchronous engines: [`Engine::IoUring`]'s files
    /// with one system call per I/O.
    pub sync_call: Option<SyncCall>,
    pub direct: bool,
    pub fixedbufs: bool,
    pub registerfiles: bool,
    pub sqthread_poll: bool,
    /// fio's `sqthread_poll_cpu`: the CPU the `sqthread_poll` thread is pinned to.
    pub sqthread_poll_cpu: Option<u32>,
    /// fio's io_uring `nonvectored`: -1 (fio's default) picks `IORING_OP_READ`/`WRITE`
    /// where the kernel has them, 0 uses `READV`/`WRITEV`, any other value the former.
    pub nonvectored: i64,
    /// fio's io_uring `uncached`: non-zero sets `RWF_DONTCACHE` on buffered reads and writes.
    pub uncached: u64,
    /// fio's io_uring `nowait`: `RWF_NOWAIT` on every read and write.
    pub nowait: bool,
    /// fio's io_uring `force_async`: `IOSQE_ASYNC` on every Nth request (0: never).
    pub force_async: u64,
    /// fio's `cmdprio_percentage`, `cmdprio_class`, `cmdprio` and `cmdprio_hint`.
    pub cmdprio: crate::run::priority::CmdPrioOptions,
    /// fio's `hipri`: poll for completions instead of sleeping (the iscsi engine's shard
    /// spins on its ring for the answers of one or two commands in flight; the io_uring
    /// engine's ring is `IORING_SETUP_IOPOLL`).
    pub hipri: bool,
    pub iscsi: IscsiOptions,
    /// Give up on an I/O after this long (iscsi-bench's own option).
    pub io_timeout: Option<Duration>,
    /// fio's `continue_on_error` and `ignore_error`.
    pub error_policy: crate::job::error_policy::ErrorPolicy,

    // Region and amount.
    /// `None`: the whole target from `offset` on. With `filesize`, a size in bytes is the
    /// amount of I/O, not the region (fio: "size becomes merely the default for io_size"),
    /// the job's over all its files (`run::setup::filesize_io_shares`).
    pub size: Option<SizeSpec>,
    /// `filesize`: the size the job takes each of its files to have, a range drawn per file
    /// (`run::setup::file_size_bytes`); the region reaches from `offset` to there.
    pub filesize: Option<ValueRange<u64>>,
    /// `zonemode`, and `zonesize`/`zonerange`/`zoneskip` as given (0: not given, fio's
    /// default); `run::setup::strided_zones` resolves them as fio does.
    pub zonemode: ZoneMode,
    pub zonesize: u64,
    pub zonerange: u64,
    pub zoneskip: ZoneSkip,
    pub offset: SizeSpec,
    pub offset_increment: Option<SizeSpec>,
    /// `offset_align`: what an offset given as a percentage (or moved by a percentage
    /// `offset_increment`) is aligned up to; 0 for the minimum block size.
    pub offset_align: u64,
    /// `bs_unaligned`: a `bsrange` gives any length in it, not only multiples of its
    /// minimum.
    pub bs_unaligned: bool,
    /// `serialize_overlap`: an I/O that overlaps one in flight waits for it (jobs that
    /// write or trim with iodepth above 1, as in fio).
    pub serialize_overlap: bool,
    /// `fill_device`/`fill_fs`.
    pub fill_device: bool,
    pub io_size: Option<SizeSpec>,
    pub number_ios: Option<u64>,
    pub loops: u32,
    /// fio's `kb_base` (1024 or 1000): how `k`/`KiB` were read, and how reports print.
    pub kb_base: u32,

    // Pattern.
    pub rw: RwMode,
    /// `rw=copy`: the job copies its region (`offset`, `size`) to `copy_dest` by
    /// `copy_method` instead of running an I/O pattern (`crate::copy_offload`); see
    /// [`JobSpec::copy`].
    pub rw_copy: bool,
    pub copy_method: Option<CopyMethod>,
    pub copy_dest_bytes: Option<u64>,
    /// Share of reads in a mixed pattern, 0..=100 (`rwmixwrite=N` sets it to 100-N).
    pub rwmixread: u32,
    pub block_size: PerDir<BlockSize>,
    /// `blockalign`/`ba`: `None` aligns to the block size.
    pub block_align: PerDir<Option<u64>>,
    pub random_distribution: Distribution,
    /// `unified_rw_reporting`.
    pub unified_rw_reporting: crate::output::UnifiedRw,
    /// `random_sequence_stride` (fio 3.42), for `random_distribution=sequence`.
    pub random_sequence_stride: bool,
    /// `random_generator` as written (accepted, not used: see the option's help).
    pub random_generator: Option<String>,
    /// `rw_sequencer`.
    pub rw_sequencer: RwSequencer,
    /// `percentage_random` (read,write,trim), 0..=100.
    pub percentage_random: PerDir<u32>,
    pub randrepeat: bool,
    pub randseed: Option<u64>,
    pub norandommap: bool,

    // Depth and batching.
    pub iodepth: u32,
    /// `steadystate`/`ss`; it acts only with `ss_dur` (`steadystate_duration`) above 0.
    pub steadystate: SteadyStateSpec,
    pub ss_dur: Duration,
    pub ss_ramp: Duration,
    /// `ss_interval` (`steadystate_check_interval`), at least 1 s as in fio.
    pub ss_interval: Duration,
    /// `flow` (0: no flow control, up to 1000), `flow_id`, `flow_sleep`.
    pub flow: u32,
    pub flow_id: u32,
    pub flow_sleep: Duration,
    /// `fsync`: a flush after every this many writes (0: none); `end_fsync`: one at the
    /// end; `sync`: open flags for files (`O_SYNC`/`O_DSYNC`; FUA writes on a LUN).
    pub fsync: u32,
    /// `fdatasync`: a data flush after every this many writes (0: none; fsync=N's flush
    /// goes first where both fall due).
    pub fdatasync: u32,
    /// `sync_file_range`: a range flush after every N writes, fdatasync=N's and
    /// fsync=N's first where they fall due.
    pub sync_file_range: Option<super::file_options::SyncFileRange>,
    pub end_fsync: bool,
    /// `end_syncfs`: as `end_fsync`, but one syncfs(2) of each file system the job's files
    /// are on (SYNCHRONIZE CACHE of the whole LUN on iSCSI, as `end_fsync`).
    pub end_syncfs: bool,
    /// `num_range`: ranges per trim (fio's default 1; more only with an engine that
    /// trims several ranges at once, which none here does).
    pub num_range: u32,
    pub sync: SyncMode,
    /// `fallocate`: how a regular file the job lays out or extends is allocated.
    pub fallocate: Fallocate,
    /// fio's file options (`invalidate`, `pre_read`, `unlink`, ...) and `exec_prerun`/
    /// `exec_postrun`.
    pub files: super::file_options::FileOptions,
    /// `io_submit_mode=offload` (taken; see the option's help).
    pub io_submit_offload: bool,
    /// `write_hist_log`, `log_hist_msec` (0: nothing logged, fio's default) and
    /// `log_hist_coarseness` (0..=6).
    pub write_hist_log: Option<LogName>,
    pub log_hist_msec: u64,
    pub log_hist_coarseness: u32,
    /// `dedupe_working_set_percentage` (fio's default 5), read by `dedupe_mode=working_set`
    /// in whichever order the two come.
    pub dedupe_working_set_percentage: u32,
    /// `verify_only`: plan the job's writes without doing them, and check what an earlier
    /// run of the same job wrote.
    pub verify_only: bool,
    /// `verify_state_save` (fio's default on): a write job with verify saves where it
    /// stopped, for a later `verify_only` run.
    pub verify_state_save: bool,
    /// `verify_state_load`: a `verify_only` run checks only what the saved run wrote.
    pub verify_state_load: bool,
    /// `verify_header_seed` and `verify_write_sequence` (fio's default true): false skips
    /// the check of each block header's seed, or of its generation (fio's write sequence
    /// number); the digest is checked all the same.
    pub verify_header_seed: bool,
    pub verify_write_sequence: bool,
    /// `latency_target` (`None`: off), `latency_window` (fio's default 0: each check
    /// judges the I/Os since the last one), `latency_percentile` (100), `latency_run`.
    pub latency_target: Option<Duration>,
    pub latency_window: Duration,
    pub latency_percentile: f64,
    pub latency_run: bool,
    /// `verify_offset` in bytes (0: the header at the start of each interval).
    pub verify_offset: u32,
    /// `verify_interval` in bytes; `None` for the block size.
    pub verify_interval: Option<u32>,
    /// `iodepth_low`; `None` (or 0, fio's "unset") means `iodepth`.
    pub iodepth_low: Option<u32>,
    /// `iodepth_batch_submit`/`iodepth_batch`: I/Os submitted at once (default 1); fio
    /// reads 0 as "the iodepth". Kept as given.
    pub iodepth_batch_submit: u32,
    pub iodepth_batch_complete_min: u32,
    pub iodepth_batch_complete_max: Option<u32>,
    pub numjobs: u32,

    // Time.
    pub runtime: Option<Duration>,
    pub time_based: bool,
    pub ramp_time: Duration,
    /// `ramp_size`: the ramp lasts until the job (with `group_reporting`, its group) has
    /// moved this many bytes, instead of for `ramp_time`.
    pub ramp_size: Option<u64>,
    /// A single value is a range with min == max; each clone draws from the range.
    pub startdelay: ValueRange<Duration>,

    // Pacing.
    /// Bytes per second per direction.
    pub rate: PerDir<Option<u64>>,
    pub rate_iops: PerDir<Option<u64>>,
    pub rate_process: RateProcess,
    /// `rate_min`: bytes per second per direction below which the job fails.
    pub rate_min: PerDir<Option<u64>>,
    /// `rate_iops_min` per direction.
    pub rate_iops_min: PerDir<Option<u64>>,
    /// `rate_cycle`: the window `rate_min`/`rate_iops_min` are averaged over.
    pub rate_cycle: Duration,
    /// `rate_backlog`: how late a paced job may fall behind its schedule and still catch
    /// up; beyond it the schedule moves (a stall is not followed by a burst). `None`:
    /// always catch up, as fio does.
    pub rate_backlog: Option<Duration>,
    pub thinktime: Duration,
    /// `thinktime_blocks` where given (fio's default 1 then, except that
    /// `thinktime_iotime` alone counts no blocks).
    pub thinktime_blocks: Option<u32>,
    /// `thinktime_spin`: the part of each think pause spent busy rather than asleep.
    pub thinktime_spin: Duration,
    /// `thinktime_blocks_type`: whether `thinktime_blocks` counts completions or issues.
    pub thinktime_blocks_type: ThinkTimeBlocksType,
    /// `thinktime_iotime`: think after this much time doing I/O (zero: off).
    pub thinktime_iotime: Duration,
    /// `thinkcycles`: a busy loop of this many iterations after each read or write
    /// (fio's `cycles_spin`), apart from `thinktime`.
    pub thinkcycles: u64,
    /// `rate_ignore_thinktime`: after a pause the rate goes on from where it is instead of
    /// catching up on the I/Os the pause cost.
    pub rate_ignore_thinktime: bool,
    /// `max_latency` per direction: an I/O slower than this ends the job with ETIMEDOUT
    /// (`None`: no limit).
    pub max_latency: PerDir<Option<Duration>>,

    // Verification.
    pub verify: VerifyKind,
    /// The fill pattern; empty when not given.
    pub verify_pattern: Vec<u8>,
    pub verify_fatal: bool,
    /// `verify_dump`: a failed block's bytes, read and expected, go to files.
    pub verify_dump: bool,
    pub do_verify: bool,
    pub verify_backlog: Option<u64>,
    /// `verify_backlog_batch`: blocks read per backlog check; `None`: `verify_backlog`.
    pub verify_backlog_batch: Option<u64>,
    /// `verify_async`: fio's count of verify threads. Verifying on helper threads gives
    /// the same result as inline, so iscsi-bench checks inline and keeps the count only to
    /// render it back.
    pub verify_async: u32,
    /// `verify_async_cpus`: the CPUs fio's verify threads may run on (kept to render back).
    pub verify_async_cpus: Option<Vec<u32>>,
    /// `experimental_verify`: fio re-reads the writes by replaying them from the seed
    /// instead of keeping a history. The blocks checked against what they should hold are
    /// the same, so the result is too; iscsi-bench keeps its history and renders the flag.
    pub experimental_verify: bool,
    /// `verify_shared` (iscsi-bench's own): jobs of the run writing the same target verify
    /// against one shared ledger, so overlapping writers may verify (see
    /// `workload::shared_ledger`).
    pub verify_shared: bool,

    // Buffer contents.
    /// What writes carry when they do not verify (`zero_buffers`, `refill_buffers`,
    /// `scramble_buffers`, `buffer_pattern`, `buffer_compress_*`, `dedupe_percentage`).
    pub buffers: BufferOptions,

    // Reporting and logs.
    pub group_reporting: bool,
    pub stonewall: bool,
    /// `wait_for`: the name of an earlier job; this one starts once every clone of it ended.
    pub wait_for: Option<String>,
    /// `exitall`: when this job ends, end the jobs `exit_what` names.
    pub exitall: bool,
    /// `exit_what`.
    pub exit_what: ExitWhat,
    /// `exitall_on_error`: when this job ends in error, end every job.
    pub exitall_on_error: bool,
    pub new_group: bool,
    pub percentile_list: Vec<f64>,
    pub clat_percentiles: bool,
    pub lat_percentiles: bool,
    pub slat_percentiles: bool,
    /// fio's `disable_lat`, `disable_clat`, `disable_slat`, `disable_bw_measurement`
    /// (all four: `gtod_reduce`): the statistic is not kept, and reported as fio does
    /// then (zeros in JSON, no line in the text).
    pub disable_lat: bool,
    pub disable_clat: bool,
    pub disable_slat: bool,
    pub disable_bw: bool,
    pub write_lat_log: Option<LogName>,
    pub write_bw_log: Option<LogName>,
    pub write_iops_log: Option<LogName>,
    pub log_avg_msec: u64,
    /// `log_unix_epoch`: log times are Unix times in ms, not ms since the job's start.
    pub log_unix_epoch: bool,
    /// `log_offset`: per-I/O log lines carry the I/O's byte offset (fio writes 0 in
    /// averaged and sampled lines).
    pub log_offset: bool,
    /// `log_issue_time`: the clat and slat logs' lines end with the I/O's issue time (ns
    /// after the job's start); needs `write_lat_log` and `log_offset`, as in fio.
    pub log_issue_time: bool,
    /// `log_window_value` (alias `log_max_value`): what a `log_avg_msec` window's line
    /// carries.
    pub log_window_value: LogWindowValue,
    pub cpus_allowed: Option<Vec<u32>>,
    /// fio's options about what is reported and how numbers look (`stats`,
    /// `significant_figures`, `unit_base`, `bwavgtime`, ...).
    pub report: ReportOptions,
    /// `cpus_allowed_policy`: whether clones share `cpus_allowed` or take one CPU each.
    pub cpus_allowed_policy: CpusAllowedPolicy,
    /// `nice`: added to the job thread's nice value, as fio's nice(3) (-20..19; 0 leaves
    /// it as it is).
    pub nice: i32,
    /// `prio` and `prioclass`: the job thread's I/O priority level (0..7) and class (0..3),
    /// where given.
    pub prio: Option<u32>,
    pub prioclass: Option<u32>,
    /// `priohint`: the I/O priority hint (0..1023, fio's IOPRIO_MAX_PRIO_HINT) set with
    /// `prio`/`prioclass`, where given.
    pub priohint: Option<u32>,
    /// `comm`: the job thread's name (prctl PR_SET_NAME, 15 bytes kept), where given.
    pub comm: Option<String>,
    /// fio's I/O replay options (`write_iolog`, `read_iolog`, `replay_*`).
    pub iolog: IologOptions,
    /// The options as the user wrote them, for fio's "global options" and "job options"
    /// in the JSON report. Where an option was written does not change the job, so this
    /// never makes two specs unequal.
    pub given: GivenOptions,
}

/// Options as written: those of the `[global]` scope (and the command line before the first
/// `--name`) the job inherited, and those of its own section, in order.
#[derive(Debug, Clone, Default)]
pub struct GivenOptions {
    pub global: Vec<(String, String)>,
    pub own: Vec<(String, String)>,
}

impl PartialEq for GivenOptions {
    fn eq(&self, _other: &GivenOptions) -> bool {
        true
    }
}

/// The sample period and log window of one rate log kind, fio's rule (init.c, where the
/// bandwidth and IOPS logs are set up): a given `*avgtime` is the period, and the log
/// averages over the shorter of it and `log_avg_msec`; without one, a job that writes
/// the log samples every `log_avg_msec`. fio's per-I/O rate lines (the log without
/// `log_avg_msec`) are not reproduced: such a log gets a line per period.
fn rate_period(avg_time_ms: Option<u64>, logged: bool, log_avg_msec: u64) -> (u64, u64) {
    match avg_time_ms {
        Some(period) => (period, log_avg_msec.min(period)),
        None if logged && log_avg_msec > 0 => (log_avg_msec, log_avg_msec),
        None => (crate::stats::DEFAULT_SAMPLE_INTERVAL_MS, log_avg_msec),
    }
}

impl JobSpec {
    /// The bandwidth samples' period and the bandwidth log's averaging window, in ms.
    pub fn bw_sample_period(&self) -> (u64, u64) {
        rate_period(
            self.report.bwavgtime_ms,
            self.write_bw_log.is_some(),
            self.log_avg_msec,
        )
    }

    /// The IOPS samples' period and the IOPS log's averaging window, in ms.
    pub fn iops_sample_period(&self) -> (u64, u64) {
        rate_period(
            self.report.iopsavgtime_ms,
            self.write_iops_log.is_some(),
            self.log_avg_msec,
        )
    }

    /// What an `rw=copy` job does; `None` for an I/O pattern.
    pub fn copy(&self) -> Option<CopySpec> {
        self.rw_copy.then(|| CopySpec {
            method: self.copy_method.unwrap_or_default(),
            dest_bytes: self.copy_dest_bytes,
        })
    }

    /// A job with fio's defaults.
    pub fn new(name: impl Into<String>) -> JobSpec {
        JobSpec {
            name: name.into(),
            description: None,
            origin: Origin::Builtin,
            group_id: 0,
            filename: None,
            directory: None,
            filename_format: None,
            more_filenames: Vec::new(),
            file_service: FileService::default(),
            nrfiles: 1,
            openfiles: 0,
            ioengine: None,
            sync_call: None,
            direct: false,
            fixedbufs: false,
            registerfiles: false,
            sqthread_poll: false,
            sqthread_poll_cpu: None,
            nonvectored: -1,
            uncached: 0,
            nowait: false,
            force_async: 0,
            cmdprio: Default::default(),
            hipri: false,
            iscsi: IscsiOptions::default(),
            io_timeout: None,
            error_policy: Default::default(),
            size: None,
            filesize: None,
            zonemode: ZoneMode::None,
            zonesize: 0,
            zonerange: 0,
            zoneskip: ZoneSkip::Bytes(0),
            offset: SizeSpec::Bytes(0),
            offset_increment: None,
            offset_align: 0,
            bs_unaligned: false,
            serialize_overlap: false,
            fill_device: false,
            io_size: None,
            number_ios: None,
            loops: 1,
            kb_base: 1024,
            rw: RwMode {
                kind: RwKind::Read,
                offset_modifier: None,
            },
            rw_copy: false,
            copy_method: None,
            copy_dest_bytes: None,
            rwmixread: 50,
            block_size: PerDir::splat(BlockSize::Fixed(DEFAULT_BLOCK_SIZE_BYTES)),
            block_align: PerDir::splat(None),
            random_distribution: Distribution::Random,
            random_generator: None,
            random_sequence_stride: false,
            unified_rw_reporting: crate::output::UnifiedRw::Separate,
            rw_sequencer: RwSequencer::Sequential,
            percentage_random: PerDir::splat(100),
            randrepeat: true,
            randseed: None,
            norandommap: false,
            iodepth: 1,
            iodepth_low: None,
            io_submit_offload: false,
            fsync: 0,
            fdatasync: 0,
            sync_file_range: None,
            end_fsync: false,
            end_syncfs: false,
            num_range: 1,
            sync: SyncMode::None,
            fallocate: Fallocate::Native,
            files: Default::default(),
            verify_interval: None,
            verify_offset: 0,
            latency_target: None,
            latency_window: Duration::ZERO,
            latency_percentile: 100.0,
            latency_run: false,
            verify_only: false,
            verify_state_save: true,
            verify_state_load: false,
            verify_header_seed: true,
            verify_write_sequence: true,
            dedupe_working_set_percentage: 5,
            write_hist_log: None,
            log_hist_msec: 0,
            log_hist_coarseness: 0,
            steadystate: SteadyStateSpec::default(),
            ss_dur: Duration::ZERO,
            ss_ramp: Duration::ZERO,
            ss_interval: Duration::from_secs(1),
            flow: 0,
            flow_id: 0,
            flow_sleep: Duration::ZERO,
            iodepth_batch_submit: 1,
            iodepth_batch_complete_min: 1,
            iodepth_batch_complete_max: None,
            numjobs: 1,
            runtime: None,
            time_based: false,
            ramp_time: Duration::ZERO,
            ramp_size: None,
            startdelay: ValueRange {
                min: Duration::ZERO,
                max: Duration::ZERO,
            },
            rate: PerDir::splat(None),
            rate_iops: PerDir::splat(None),
            rate_process: RateProcess::Linear,
            rate_min: PerDir::splat(None),
            rate_iops_min: PerDir::splat(None),
            rate_cycle: Duration::from_millis(1000),
            rate_backlog: Some(RATE_BACKLOG_DEFAULT),
            thinktime: Duration::ZERO,
            thinktime_blocks: None,
            thinktime_spin: Duration::ZERO,
            thinktime_blocks_type: ThinkTimeBlocksType::Complete,
            thinktime_iotime: Duration::ZERO,
            thinkcycles: 0,
            rate_ignore_thinktime: false,
            max_latency: PerDir::splat(None),
            verify: VerifyKind::None,
            verify_pattern: Vec::new(),
            verify_fatal: false,
            verify_dump: false,
            do_verify: true,
            verify_backlog: None,
            verify_backlog_batch: None,
            verify_async: 0,
            verify_async_cpus: None,
            experimental_verify: false,
            verify_shared: false,
            buffers: BufferOptions::default(),
            group_reporting: false,
            stonewall: false,
            wait_for: None,
            exitall: false,
            exit_what: ExitWhat::Group,
            exitall_on_error: false,
            new_group: false,
            percentile_list: DEFAULT_PERCENTILES.to_vec(),
            clat_percentiles: true,
            lat_percentiles: false,
            slat_percentiles: false,
            disable_lat: false,
            disable_clat: false,
            disable_slat: false,
            disable_bw: false,
            write_lat_log: None,
            write_bw_log: None,
            write_iops_log: None,
            log_avg_msec: 0,
            log_unix_epoch: false,
            log_offset: false,
            log_issue_time: false,
            log_window_value: LogWindowValue::Mean,
            cpus_allowed: None,
            report: ReportOptions::default(),
            cpus_allowed_policy: CpusAllowedPolicy::Shared,
            nice: 0,
            prio: None,
            priohint: None,
            comm: None,
            prioclass: None,
            iolog: IologOptions::default(),
            given: GivenOptions::default(),
        }
    }

    /// The engine the job runs on: the one it names, else `iscsi` for an `iscsi://` target
    /// or no target (the embedded target), `io_uring` for a path, `null` for `null`.
    pub fn engine(&self) -> Engine {
        if let Some(engine) = self.ioengine {
            return engine;
        }
        match self.filename {
            None | Some(Target::Iscsi(_)) => Engine::Iscsi,
            Some(Target::Path(_)) => Engine::IoUring,
            Some(Target::Null) => Engine::Null,
        }
    }

    /// The engine's name as the job gave it, for reports: a synchronous engine's own
    /// name (`psync`), else [`JobSpec::engine`]'s.
    pub fn engine_name(&self) -> &'static str {
        match (self.engine(), self.sync_call) {
            (Engine::IoUring, Some(call)) => call.name(),
            (engine, _) => engine.name(),
        }
    }

    /// fio's file naming for local engines: a relative file name lives in `directory`,
    /// and a job that names `ioengine=io_uring` (or libaio) and no file gets fio's
    /// `JOBNAME.0.0` there (made with the job's size), or `nrfiles` of them
    /// (`JOBNAME.0.0` to `JOBNAME.0.N-1`). Several clones (`numjobs`) would each want files
    /// of their own (`JOBNAME.N.0`): refused, naming the option to give.
    pub fn place_local_file(&mut self) -> Result<(), String> {
        let directory = self.directory.clone().unwrap_or_default();
        if self.filename.is_none() && self.ioengine == Some(Engine::IoUring) {
            let name = self.local_file_name(0, 0);
            if (1..self.numjobs).any(|clone| self.local_file_name(clone, 0) != name) {
                return Err(format!(
                    "numjobs={} with a local engine and no filename: fio would make files \
                     per clone ({}); give filename= or a filename_format without $jobnum \
                     (files the clones share)",
                    self.numjobs,
                    self.local_file_name(1, 0)
                ));
            }
            let names: Vec<String> = (0..self.nrfiles.max(1))
                .map(|file| self.local_file_name(0, file))
                .collect();
            if let Some(again) = (1..names.len()).find(|&i| names[..i].contains(&names[i])) {
                return Err(format!(
                    "nrfiles={} and filename_format={} name file {again} as an earlier one \
                     ({}); put $filenum in filename_format",
                    self.nrfiles,
                    self.filename_format.as_deref().unwrap_or_default(),
                    names[again]
                ));
            }
            let mut targets = names
                .into_iter()
                .map(|name| Target::Path(directory.join(name)));
            self.filename = targets.next();
            self.more_filenames = targets.collect();
            return Ok(());
        }
        for target in std::iter::once(&mut self.filename)
            .flatten()
            .chain(self.more_filenames.iter_mut())
        {
            if let Target::Path(path) = target {
                if path.is_relative() {
                    *path = directory.join(&*path);
                }
            }
        }
        Ok(())
    }

    /// The name fio gives file `file` (from 0, up to `nrfiles`) of `clone` when the job
    /// names none (`make_filename`, init.c): `filename_format` with its keywords replaced,
    /// case-insensitively and in fio's order; `$clientuid` is empty (no `--client`, as fio
    /// run locally).
    pub fn local_file_name(&self, clone: u32, file: u32) -> String {
        let format = self
            .filename_format
            .as_deref()
            .unwrap_or("$jobname.$jobnum.$filenum");
        let clone = clone.to_string();
        let file = file.to_string();
        [
            ("$jobname", self.name.as_str()),
            ("$jobnum", clone.as_str()),
            ("$filenum", file.as_str()),
            ("$clientuid", ""),
        ]
        .into_iter()
        .fold(format.to_string(), |name, (keyword, value)| {
            replace_ignoring_case(&name, keyword, value)
        })
    }

    /// Whether the job issues I/O in this direction.
    pub fn does(&self, direction: Direction) -> bool {
        self.rw.kind.does(direction)
    }

    /// The smallest block size over the directions the job uses.
    pub fn min_block_size_bytes(&self) -> u64 {
        self.block_size
            .each()
            .into_iter()
            .filter(|(direction, _)| self.does(*direction))
            .map(|(_, block_size)| block_size.min_bytes())
            .min()
            .unwrap_or(DEFAULT_BLOCK_SIZE_BYTES)
    }

    /// Check the job against the size of its target (known once the LUN, file or device is
    /// open) and resolve its region for the first clone. Refuses a zero-sized target or
    /// region, an offset at or past the end, and a region that runs past the end; call it
    /// before any I/O starts.
    pub fn check_target_size(&self, target_bytes: u64) -> Result<Region, JobError> {
        self.region_for_clone(target_bytes, 0)
    }

    /// As [`JobSpec::check_target_size`], for clone `clone_index` of `numjobs` (its region
    /// starts `clone_index * offset_increment` further). With `filesize`, `target_bytes` is
    /// the size the job takes the file to have (`run::setup::file_size_bytes`).
    pub fn region_for_clone(
        &self,
        target_bytes: u64,
        clone_index: u32,
    ) -> Result<Region, JobError> {
        let zero = |reason: String| JobError::ZeroSize {
            at: self.origin.clone(),
            job: self.name.clone(),
            reason,
        };
        if target_bytes == 0 {
            return Err(zero("the target is 0 bytes long".into()));
        }
        let align = self.min_block_size_bytes().max(1);
        // A size given as a percentage is aligned down to the minimum block size.
        let resolve = |spec: SizeSpec, of: u64| -> u64 {
            match spec {
                SizeSpec::Bytes(bytes) => bytes,
                SizeSpec::Percent(pct) => {
                    let raw = (u128::from(of) * u128::from(pct) / 100) as u64;
                    raw / align * align
                }
            }
        };
        // fio's get_start_offset: the offset and the clone's increment, either given as
        // a percentage, are added unaligned and the sum aligned up to `offset_align`.
        let raw = |spec: SizeSpec| match spec {
            SizeSpec::Bytes(bytes) => (bytes, false),
            SizeSpec::Percent(pct) => (
                (u128::from(target_bytes) * u128::from(pct) / 100) as u64,
                true,
            ),
        };
        let (offset, offset_pct) = raw(self.offset);
        let (increment, increment_pct) = self.offset_increment.map_or((0, false), raw);
        let past_end = || JobError::PastEnd {
            at: self.origin.clone(),
            job: self.name.clone(),
            offset_bytes: u64::MAX,
            len_bytes: 0,
            target_bytes,
        };
        let mut offset_bytes = offset
            .checked_add(increment.saturating_mul(u64::from(clone_index)))
            .ok_or_else(past_end)?;
        if offset_pct || increment_pct {
            let to = match self.offset_align {
                0 => align,
                bytes => bytes,
            };
            offset_bytes = offset_bytes
                .div_ceil(to)
                .checked_mul(to)
                .ok_or_else(past_end)?;
        }
        if offset_bytes >= target_bytes {
            return Err(JobError::PastEnd {
                at: self.origin.clone(),
                job: self.name.clone(),
                offset_bytes,
                len_bytes: self.size.map_or(0, |spec| resolve(spec, target_bytes)),
                target_bytes,
            });
        }
        let len_bytes = match self.size {
            None => target_bytes - offset_bytes,
            // filesize set: a size in bytes is how much I/O, not where.
            Some(SizeSpec::Bytes(_)) if self.filesize.is_some() => target_bytes - offset_bytes,
            Some(spec) => resolve(spec, target_bytes),
        };
        if len_bytes == 0 {
            return Err(zero(format!(
                "size resolves to 0 bytes of a {target_bytes}-byte target"
            )));
        }
        if offset_bytes
            .checked_add(len_bytes)
            .is_none_or(|end| end > target_bytes)
        {
            return Err(JobError::PastEnd {
                at: self.origin.clone(),
                job: self.name.clone(),
                offset_bytes,
                len_bytes,
                target_bytes,
            });
        }
        if len_bytes < self.min_block_size_bytes() {
            return Err(zero(format!(
                "the region of {len_bytes} bytes holds no block of {} bytes",
                self.min_block_size_bytes()
            )));
        }
        Ok(Region {
            offset_bytes,
            len_bytes,
        })
    }
}

impl JobSpec {
    /// Checks the job's block sizes (`bs`, `bsrange`, `bssplit`), `blockalign` and its
    /// clone's region (`offset`, `size`) against the target's logical block of
    /// `block_bytes` (described by `target` in the error), so that a job whose every I/O
    /// would fail is refused before any I/O starts.
    pub fn check_block_alignment(
        &self,
        region: &Region,
        block_bytes: u32,
        target: &str,
    ) -> Result<(), JobError> {
        let block = u64::from(block_bytes.max(1));
        let misaligned = |option: &'static str, value: u64| JobError::Misaligned {
            at: self.origin.clone(),
            job: self.name.clone(),
            option,
            value,
            block_bytes,
            target: target.to_string(),
        };
        for direction in self.rw.kind.directions() {
            let sizes: Vec<(&'static str, u64)> = match self.block_size.get(*direction) {
                BlockSize::Fixed(len) => vec![("bs", *len)],
                BlockSize::Range(range) => vec![("bsrange", range.min), ("bsrange", range.max)],
                BlockSize::Split(entries) => entries
                    .iter()
                    .filter(|entry| entry.percent > 0)
                    .map(|entry| ("bssplit", entry.len_bytes))
                    .collect(),
            };
            let align = self.block_align.get(*direction).map(|a| ("blockalign", a));
            for (option, value) in sizes.into_iter().chain(align) {
                if !value.is_multiple_of(block) {
                    return Err(misaligned(option, value));
                }
            }
        }
        if !region.offset_bytes.is_multiple_of(block) {
            return Err(misaligned("offset", region.offset_bytes));
        }
        if !region.len_bytes.is_multiple_of(block) {
            return Err(misaligned("size", region.len_bytes));
        }
        Ok(())
    }
}

/// The part of the target one job clone works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub offset_bytes: u64,
    pub len_bytes: u64,
}

/// fio's reporting options that shape the report, not the I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportOptions {
    /// `stats`: with false the job runs but is left out of every report (fio's `stats=0`).
    pub stats: bool,
    /// `disk_util`: fio's disk statistics of local block devices. We keep none (a LUN
    /// over iSCSI has no local disk, as with fio's libiscsi engine), so either value
    /// prints none; kept so that job files round-trip.
    pub disk_util: bool,
    /// `significant_figures` (1..=10): digits of the numbers in the text report.
    pub significant_figures: u32,
    /// `unit_base`: bandwidth in the text report in bytes or in bits.
    pub unit_base: UnitBase,
    /// `per_job_logs`: log file names carry the job number (false: the clones of a job
    /// write one file per log kind).
    pub per_job_logs: bool,
    /// `bwavgtime`/`iopsavgtime` in ms where given: the bandwidth and IOPS sample periods
    /// (unset: 500 ms, or `log_avg_msec` for a job that writes that log, as fio).
    pub bwavgtime_ms: Option<u64>,
    pub iopsavgtime_ms: Option<u64>,
    /// `log_entries`: fio's initial log buffer size; ours grow as needed.
    pub log_entries: u32,
    /// `clocksource`: we always time with the monotonic clock; kept for round trips.
    pub clocksource: Option<ClockSource>,
    /// `gtod_cpu`: fio's time-keeping thread's CPU; we have no such thread.
    pub gtod_cpu: Option<u32>,
}

/// fio's default `significant_figures`.
pub const DEFAULT_SIGNIFICANT_FIGURES: u32 = 4;
/// fio's bounds of `log_entries` (iolog.h `DEF_LOG_ENTRIES`, `MAX_LOG_ENTRIES`).
pub const LOG_ENTRIES_MIN: u32 = 1024;
pub const LOG_ENTRIES_MAX: u32 = 1024 * 1024;

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            stats: true,
            disk_util: true,
            significant_figures: DEFAULT_SIGNIFICANT_FIGURES,
            unit_base: UnitBase::Auto,
            per_job_logs: true,
            bwavgtime_ms: None,
            iopsavgtime_ms: None,
            log_entries: LOG_ENTRIES_MIN,
            clocksource: None,
            gtod_cpu: None,
        }
    }
}

/// fio's `unit_base`: 0 picks per engine (bits only for fio's network engines, so bytes
/// for every engine of ours), 8 bytes, 1 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnitBase {
    #[default]
    Auto,
    Bytes,
    Bits,
}

impl UnitBase {
    /// The value as fio's option takes it.
    pub fn fio_value(self) -> &'static str {
        match self {
            UnitBase::Auto => "0",
            UnitBase::Bytes => "8",
            UnitBase::Bits => "1",
        }
    }

    /// Whether bandwidth is shown in bits.
    pub fn bits(self) -> bool {
        self == UnitBase::Bits
    }
}

/// fio's `clocksource` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockSource {
    Gettimeofday,
    ClockGettime,
    Cpu,
}

impl ClockSource {
    pub fn fio_name(self) -> &'static str {
        match self {
            ClockSource::Gettimeofday => "gettimeofday",
            ClockSource::ClockGettime => "clock_gettime",
            ClockSource::Cpu => "cpu",
        }
    }
}

/// fio's `exit_what`: which jobs `exitall` ends (fio's `fio_terminate_threads`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExitWhat {
    /// The jobs of the ending job's reporting group, running or not yet started.
    #[default]
    Group,
    /// The jobs running now (the current stonewall phase); later phases still run.
    Stonewall,
    /// Every job, running or not yet started.
    All,
}

/// What fio's `steadystate` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SteadyStateMetric {
    #[default]
    Iops,
    Bw,
    /// Mean completion latency (fio 3.42's `lat`, `lat_slope`).
    Lat,
}

/// fio's `steadystate=` criterion: `iops`, `bw`, `lat` (deviation from the mean) or their
/// `_slope`s, with a limit in their unit or in percent of the mean.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SteadyStateSpec {
    pub metric: SteadyStateMetric,
    pub slope: bool,
    /// For `lat` without `%`: nanoseconds.
    pub limit: f64,
    pub percent: bool,
}

impl Default for SteadyStateSpec {
    /// fio's default, `iops_slope:0.01%`.
    fn default() -> Self {
        SteadyStateSpec {
            metric: SteadyStateMetric::Iops,
            slope: true,
            limit: 0.01,
            percent: true,
        }
    }
}

impl SteadyStateSpec {
    /// The criterion's fio name (`iops_slope`, ...).
    pub fn name(&self) -> String {
        let metric = match self.metric {
            SteadyStateMetric::Iops => "iops",
            SteadyStateMetric::Bw => "bw",
            SteadyStateMetric::Lat => "lat",
        };
        format!("{metric}{}", if self.slope { "_slope" } else { "" })
    }
}

/// fio's `sync=`: how writes are made durable as they complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    #[default]
    None,
    /// `sync`/`1`: `O_SYNC` on a file.
    Sync,
    /// `dsync`: `O_DSYNC` on a file.
    Dsync,
}

/// fio's `fallocate=` (filesetup.c `fallocate_file`): how a regular file is allocated when
/// the job creates or extends it, over the job's whole size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallocate {
    /// `none`/`0`: not allocated ahead; the writes allocate.
    None,
    /// `native` (fio's default on Linux): `fallocate(2)`, or nothing where the file
    /// system cannot.
    Native,
    /// `posix`/`1`: `posix_fallocate(3)` (which writes zeros where the file system has no
    /// `fallocate`).
    Posix,
    /// `keep`: `fallocate(2)` with `FALLOC_FL_KEEP_SIZE`.
    Keep,
    /// `truncate`: only `ftruncate(2)`, a sparse file.
    Truncate,
}

impl Fallocate {
    pub fn fio_name(self) -> &'static str {
        match self {
            Fallocate::None => "none",
            Fallocate::Native => "native",
            Fallocate::Posix => "posix",
            Fallocate::Keep => "keep",
            Fallocate::Truncate => "truncate",
        }
    }
}

/// `text` with every ASCII-case-insensitive occurrence of `keyword` replaced by `value`.
fn replace_ignoring_case(text: &str, keyword: &str, value: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let keyword = keyword.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    while let Some(at) = lower[from..].find(&keyword) {
        out.push_str(&text[from..from + at]);
        out.push_str(value);
        from += at + keyword.len();
    }
    out.push_str(&text[from..]);
    out
}

/// fio's `thinktime_blocks_type`: what `thinktime_blocks` counts between pauses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThinkTimeBlocksType {
    /// Completed I/Os (fio's default).
    Complete,
    /// Issued I/Os.
    Issue,
}

/// fio's `cpus_allowed_policy`: how the clones of a job (`numjobs`) use `cpus_allowed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpusAllowedPolicy {
    /// Every clone may run on every CPU of the set.
    Shared,
    /// Clone `n` runs on the set's `n`th CPU (round the set again past its end).
    Split,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_periods_follow_fios_rule() {
        // bwavgtime given: its period; the log averages over the shorter of the two.
        assert_eq!(rate_period(Some(250), true, 1000), (250, 250));
        assert_eq!(rate_period(Some(2000), true, 1000), (2000, 1000));
        // Not given: log_avg_msec for a job with that log, else fio's 500 ms.
        assert_eq!(rate_period(None, true, 1000), (1000, 1000));
        assert_eq!(rate_period(None, false, 1000), (500, 1000));
        assert_eq!(rate_period(None, true, 0), (500, 0));
    }

    fn local_job(nrfiles: u32) -> JobSpec {
        let mut spec = JobSpec::new("j");
        spec.ioengine = Some(Engine::IoUring);
        spec.directory = Some("/d".into());
        spec.nrfiles = nrfiles;
        spec
    }

    fn paths(spec: &JobSpec) -> Vec<String> {
        spec.filename
            .iter()
            .chain(&spec.more_filenames)
            .map(|target| match target {
                Target::Path(path) => path.display().to_string(),
                other => panic!("not a path: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn nrfiles_makes_files_named_by_filename_format() {
        let mut spec = local_job(3);
        spec.place_local_file().unwrap();
        assert_eq!(paths(&spec), ["/d/j.0.0", "/d/j.0.1", "/d/j.0.2"]);
        let mut spec = local_job(2);
        spec.filename_format = Some("f$FILENUM-$jobname".into());
        spec.place_local_file().unwrap();
        assert_eq!(paths(&spec), ["/d/f0-j", "/d/f1-j"]);
    }

    #[test]
    fn nrfiles_without_filenum_in_the_format_is_refused() {
        let mut spec = local_job(2);
        spec.filename_format = Some("$jobname".into());
        let error = spec.place_local_file().unwrap_err();
        assert!(
            error.contains("nrfiles=2") && error.contains("$filenum"),
            "{error}"
        );
    }

    #[test]
    fn nrfiles_is_ignored_when_the_job_names_its_files() {
        let mut spec = local_job(4);
        spec.filename = Some(Target::Path("a".into()));
        spec.more_filenames = vec![Target::Path("/b".into())];
        spec.place_local_file().unwrap();
        assert_eq!(paths(&spec), ["/d/a", "/b"]);
    }
}

/// `log_window_value` (fio 3.42; `log_max_value` in older fio, a bool): the value a
/// `log_avg_msec` window writes. fio says it matters for latency logs: a bandwidth or
/// IOPS window holds one sample, whose mean is its maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogWindowValue {
    /// `avg` or `0`: the window's mean, rounded to nearest.
    #[default]
    Mean,
    /// `max` or `1`: the window's largest value.
    Max,
    /// `both`: the mean, then the maximum in a column of its own (0 in a line that is
    /// not a window's, as fio writes it).
    Both,
}

impl LogWindowValue {
    /// fio's spellings; `None` for anything else (fio refuses `2` too).
    pub fn parse(text: &str) -> Option<LogWindowValue> {
        match text.trim().to_ascii_lowercase().as_str() {
            "avg" | "0" => Some(LogWindowValue::Mean),
            "max" | "1" => Some(LogWindowValue::Max),
            "both" => Some(LogWindowValue::Both),
            _ => None,
        }
    }

    pub fn fio_name(self) -> &'static str {
        match self {
            LogWindowValue::Mean => "avg",
            LogWindowValue::Max => "max",
            LogWindowValue::Both => "both",
        }
    }
}
