//! From a parsed [`JobSpec`] to what the other parts take: the engine's configuration and
//! the workload's. Pure mapping, no I/O; every choice fio makes implicitly is written here.

use std::time::Duration;

use datapath::url::IscsiUrl;

use crate::engine::{
    iscsi::MultipathOptions, DigestPreference, EngineConfig, IscsiOptions, IscsiTarget,
    LayoutPolicy, LoginOptions, NullOptions, UringOptions,
};
use crate::io::Direction;
use crate::io::PerDir;
use crate::job::spec::{
    BlockSize, CpusAllowedPolicy, DigestChoice, Engine as EngineKind, IscsiUrl as JobUrl, JobSpec,
    Region, SizeSpec, Target, ThinkTimeBlocksType, VerifyKind as JobVerify, ZoneMode, ZoneSkip,
};
use crate::run::priority::{CmdPrio, ThreadPriority};
use crate::workload::{
    drawn_file_size, BlockSizeSpec, BsSplitEntry, OffsetModifiers, PacingConfig, RateFloor,
    RateFloorConfig, StridedZones, ThinkTime, ThinkTimeTrigger, VerifyConfig, VerifyKind,
    WorkloadConfig,
};

/// Mixed into the job's seed for `cmdprio_percentage`'s draws, so that they do not follow
/// another generator seeded alike.
const CMDPRIO_SEED_SALT: u64 = 0x636d_6470_7269_6f00;

/// The size of the embedded target's LUN when no job says how much it uses.
pub const EMBEDDED_DEFAULT_BYTES: u64 = 1 << 30;

/// Why a job cannot be set up, naming the job and the option.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("job {job}: {option}={value}: {why}")]
    Option {
        job: String,
        option: &'static str,
        value: String,
        why: &'static str,
    },
}

fn is_block_device(path: &std::path::Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

/// The size the embedded target needs for this job: the end of its region (all clones), the
/// largest `filesize`, or `None` when the job takes the whole LUN whatever its size.
pub fn embedded_bytes_needed(spec: &JobSpec) -> Option<u64> {
    if let Some(range) = spec.filesize {
        return Some(range.max);
    }
    let offset = match spec.offset {
        SizeSpec::Bytes(bytes) => bytes,
        SizeSpec::Percent(_) => return None,
    };
    let size = match spec.size? {
        SizeSpec::Bytes(bytes) => bytes,
        SizeSpec::Percent(_) => return None,
    };
    let increment = match spec.offset_increment {
        Some(SizeSpec::Bytes(bytes)) => bytes,
        Some(SizeSpec::Percent(_)) => return None,
        None => 0,
    };
    let clones = u64::from(spec.numjobs.saturating_sub(1));
    Some(
        offset
            .saturating_add(size)
            .saturating_add(increment.saturating_mul(clones)),
    )
}

/// fio's `filesize` (filesetup.c, `setup_files`): the size the job takes its file `file` to
/// have, given the size it has now (`current_bytes`; 0 for a file that does not exist yet).
/// A size within the range is kept; any other gives way to the fixed size, or to one drawn
/// in the range from the job's `seed`. A regular file is laid out to it, and the region
/// reaches from `offset` to it (a longer file or LUN is used only up to there). `None`
/// without `filesize`.
pub fn file_size_bytes(spec: &JobSpec, current_bytes: u64, seed: u64, file: usize) -> Option<u64> {
    let range = spec.filesize?;
    Some(if (range.min..=range.max).contains(&current_bytes) {
        current_bytes
    } else if range.min == range.max {
        range.min
    } else {
        drawn_file_size(
            seed,
            file,
            range.min,
            range.max,
            spec.min_block_size_bytes(),
        )
    })
}

/// fio's `size` over a job's several files with `filesize` (filesetup.c `setup_files`):
/// `size` is cut to the files' total and ends the job once moved, so the files the service
/// reaches first get the I/O. The bytes of each file's region (`region_bytes`, in file
/// order) moved per loop: with `file_service_type=sequential` the files in order, each to
/// its end; otherwise in turns of `switch_after_ios` blocks (the smallest block size), as
/// fio's roundrobin hands them out, a file leaving the turns at its end (a time-based job
/// starts them over once `size` is moved). Whole regions when `size` is at least their
/// total; `None` without `filesize`, without a `size` in bytes, or with an `io_size`.
///
/// `file_service_type=random` is given roundrobin's shares (fio's depend on its draws),
/// and `openfiles` below the number of files is not taken into account.
pub fn filesize_io_shares(spec: &JobSpec, region_bytes: &[u64]) -> Option<Vec<u64>> {
    let Some(SizeSpec::Bytes(size)) = spec.size else {
        return None;
    };
    if spec.filesize.is_none() || spec.io_size.is_some() {
        return None;
    }
    if size
        >= region_bytes
            .iter()
            .fold(0u64, |sum, &len| sum.saturating_add(len))
    {
        return Some(region_bytes.to_vec());
    }
    if spec.file_service.kind == crate::io::FileServiceKind::Sequential {
        let mut left = size;
        return Some(
            region_bytes
                .iter()
                .map(|&len| {
                    let share = len.min(left);
                    left -= share;
                    share
                })
                .collect(),
        );
    }
    let turn = spec
        .min_block_size_bytes()
        .max(1)
        .saturating_mul(u64::from(spec.file_service.switch_after_ios.max(1)));
    // Whole rounds: the most `rounds` turns each file can take with the total at most size.
    let moved = |rounds: u64| -> u64 {
        region_bytes
            .iter()
            .map(|&len| len.min(rounds.saturating_mul(turn)))
            .fold(0u64, u64::saturating_add)
    };
    let (mut low, mut high) = (
        0u64,
        region_bytes.iter().max().map_or(0, |m| m.div_ceil(turn)),
    );
    while low < high {
        let mid = low + (high - low).div_ceil(2);
        if moved(mid) <= size {
            low = mid;
        } else {
            high = mid - 1;
        }
    }
    let rounds_bytes = low.saturating_mul(turn);
    let mut left = size - moved(low);
    // The last round, begun at the first file, ends where size does.
    Some(
        region_bytes
            .iter()
            .map(|&len| {
                let done = len.min(rounds_bytes);
                let more = (len - done).min(turn).min(left);
                left -= more;
                done + more
            })
            .collect(),
    )
}

/// The engine configuration of one clone. `embedded` is the URL of the run's embedded
/// target, for iSCSI jobs that name no target; `seed` is the clone's (`filesize` draws).
pub fn engine_config(
    spec: &JobSpec,
    embedded: Option<&IscsiUrl>,
    seed: u64,
) -> Result<EngineConfig, SetupError> {
    let iodepth = spec.iodepth.max(1) as usize;
    let max_block = max_block_bytes(spec);
    match spec.engine() {
        EngineKind::Null => {
            // Nothing exists behind the null engine: a filesize applies as to a new file.
            let size = match (file_size_bytes(spec, 0, seed, 0), spec.size) {
                (Some(file_bytes), _) => file_bytes,
                (None, Some(SizeSpec::Bytes(bytes))) => {
                    let offset = match spec.offset {
                        SizeSpec::Bytes(offset) => offset,
                        SizeSpec::Percent(_) => 0,
                    };
                    offset.saturating_add(bytes)
                }
                _ => EMBEDDED_DEFAULT_BYTES,
            };
            Ok(EngineConfig::Null(NullOptions::new(size, iodepth)))
        }
        EngineKind::IoUring => {
            let Some(Target::Path(path)) = &spec.filename else {
                return Err(SetupError::Option {
                    job: spec.name.clone(),
                    option: "filename",
                    value: describe_target(spec.filename.as_ref()),
                    why: "a local engine (io_uring, psync, ...) needs a local file or block device",
                });
            };
            if spec.fill_device && spec.size.is_none() && !is_block_device(path) {
                return Err(SetupError::Option {
                    job: spec.name.clone(),
                    option: "fill_device",
                    value: "1".into(),
                    why: "fio would grow this regular file until its file system is full; \
                          iscsi-bench does not: give size= (a block device or LUN is filled \
                          to its end)",
                });
            }
            let mut options = UringOptions::new(path.clone(), iodepth, max_block);
            options.size_bytes = match (spec.offset, spec.size) {
                // A file is laid out to its filesize; a block device keeps its size (the
                // runner holds the filesize to it).
                _ if spec.filesize.is_some() && is_block_device(path) => None,
                _ if spec.filesize.is_some() => {
                    let current = std::fs::metadata(path).map_or(0, |m| m.len());
                    file_size_bytes(spec, current, seed, 0)
                }
                // fio divides size between the job's files (filesetup.c).
                (SizeSpec::Bytes(offset), Some(SizeSpec::Bytes(size))) => {
                    let files = 1 + spec.more_filenames.len() as u64;
                    Some(offset.saturating_add(size / files))
                }
                _ => None,
            };
            // fio lays a file out before it reads from it; a write-only job only extends it.
            options.layout = if spec.does(Direction::Read) || spec.verify != JobVerify::None {
                LayoutPolicy::WriteOut
            } else {
                LayoutPolicy::Extend
            };
            // overwrite: a write job's file is written out too, as for a read job.
            if spec.files.overwrite {
                options.layout = LayoutPolicy::WriteOut;
            }
            options.fallocate = spec.fallocate;
            options.files = file_setup(spec)?;
            options.direct = spec.direct;
            options.fixedbufs = spec.fixedbufs;
            options.registerfiles = spec.registerfiles;
            options.sqthread_poll = spec.sqthread_poll;
            options.sync_call = spec.sync_call;
            options.sqthread_poll_cpu = spec.sqthread_poll_cpu;
            options.hipri = spec.hipri;
            options.nonvectored = match spec.nonvectored {
                -1 => None,
                0 => Some(false),
                _ => Some(true),
            };
            options.uncached = spec.uncached != 0;
            options.nowait = spec.nowait;
            options.force_async = spec.force_async;
            options.ioprio = ThreadPriority::from_options(spec.nice, spec.prioclass, spec.prio)
                .with_hint(spec.priohint)
                .sqe_ioprio();
            options.cmdprio = CmdPrio::new(&spec.cmdprio, seed ^ CMDPRIO_SEED_SALT);
            options.sync_flags = match spec.sync {
                crate::job::spec::SyncMode::None => 0,
                crate::job::spec::SyncMode::Sync => libc::O_SYNC,
                crate::job::spec::SyncMode::Dsync => libc::O_DSYNC,
            };
            options.more_paths = spec
                .more_filenames
                .iter()
                .filter_map(|target| match target {
                    Target::Path(path) => Some(path.clone()),
                    _ => None,
                })
                .collect();
            // fio's filesize over several files: each is taken to have it (a range drawn
            // per file), laid out to it when shorter (a block device keeps its size).
            if spec.filesize.is_some() {
                options.more_size_bytes = options
                    .more_paths
                    .iter()
                    .enumerate()
                    .map(|(index, path)| {
                        if is_block_device(path) {
                            return None;
                        }
                        let current = std::fs::metadata(path).map_or(0, |m| m.len());
                        file_size_bytes(spec, current, seed, index + 1)
                    })
                    .collect();
            }
            Ok(EngineConfig::Uring(options))
        }
        EngineKind::Iscsi => {
            let url = match &spec.filename {
                Some(Target::Iscsi(url)) => datapath_url(url),
                None => embedded.cloned().ok_or(SetupError::Option {
                    job: spec.name.clone(),
                    option: "filename",
                    value: String::new(),
                    why: "no target given and no embedded target running",
                })?,
                Some(other) => {
                    return Err(SetupError::Option {
                        job: spec.name.clone(),
                        option: "filename",
                        value: describe_target(Some(other)),
                        why: "ioengine=iscsi needs an iscsi:// URL (or no filename for the embedded target)",
                    })
                }
            };
            let mut options = IscsiOptions::new(IscsiTarget::Url(url), iodepth);
            options.login = login_options(spec);
            options.shards = spec.iscsi.shards.unwrap_or(1).max(1) as usize;
            options.io_timeout = spec.io_timeout;
            options.reconnect = datapath::shard::ReconnectPolicy::new(
                spec.iscsi
                    .reconnect_max
                    .unwrap_or(crate::engine::iscsi::RECONNECT_ATTEMPTS_DEFAULT),
                spec.iscsi
                    .replacement_timeout
                    .unwrap_or(crate::engine::iscsi::REPLACEMENT_TIMEOUT_DEFAULT),
            );
            options.first_core = spec
                .cpus_allowed
                .as_ref()
                .and_then(|cpus| cpus.first())
                .map(|&cpu| cpu as usize);
            options.transport = spec.iscsi.transport;
            options.hipri = spec.hipri;
            options.multipath = spec.iscsi.paths.clone().map(|paths| MultipathOptions {
                paths,
                policy: spec
                    .iscsi
                    .path_policy
                    .unwrap_or(datapath::shard::PathPolicy::RoundRobin),
                no_path_retry: spec
                    .iscsi
                    .no_path_retry
                    .unwrap_or(MultipathOptions::NO_PATH_RETRY_DEFAULT),
            });
            options.fua = spec.sync != crate::job::spec::SyncMode::None;
            // The job checked that the list names LUNs of this one target.
            options.more_luns = spec
                .more_filenames
                .iter()
                .filter_map(|target| match target {
                    Target::Iscsi(url) => Some(url.lun),
                    _ => None,
                })
                .collect();
            Ok(EngineConfig::Iscsi(Box::new(options)))
        }
    }
}

pub(crate) fn describe_target(target: Option<&Target>) -> String {
    match target {
        None => "(none)".into(),
        Some(Target::Null) => "null".into(),
        Some(Target::Path(path)) => path.display().to_string(),
        Some(Target::Iscsi(url)) => format!(
            "iscsi://{}:{}/{}/{}",
            url.host, url.port, url.target_iqn, url.lun
        ),
    }
}

/// The job parser's URL as the data path's URL type.
pub fn datapath_url(url: &JobUrl) -> IscsiUrl {
    IscsiUrl {
        user: url.user.clone(),
        secret: url.password.clone(),
        host: url.host.clone(),
        port: url.port,
        target: Some(url.target_iqn.clone()),
        lun: Some(url.lun),
        target_user: None,
        target_secret: None,
        header_digest: None,
    }
}

fn digest(choice: DigestChoice) -> DigestPreference {
    match choice {
        DigestChoice::None => DigestPreference::None,
        DigestChoice::Crc32c => DigestPreference::Crc32c,
    }
}

pub fn login_options(spec: &JobSpec) -> LoginOptions {
    let iscsi = &spec.iscsi;
    let chap = iscsi
        .chap
        .as_ref()
        .map(|c| (c.username.clone(), c.secret.clone()));
    LoginOptions {
        initiator_name: iscsi.initiator_name.clone(),
        header_digest: Some(digest(iscsi.header_digest)),
        data_digest: Some(digest(iscsi.data_digest)),
        immediate_data: iscsi.immediate_data,
        initial_r2t: iscsi.initial_r2t,
        max_burst_length: iscsi.max_burst_length_bytes,
        first_burst_length: iscsi.first_burst_length_bytes,
        max_recv_data_segment_length: iscsi.max_recv_data_segment_length_bytes,
        // CHAP in the URL (user%secret@) counts when the job sets none.
        chap: chap.or_else(|| match &spec.filename {
            Some(Target::Iscsi(url)) => url.user.clone().zip(url.password.clone()),
            _ => None,
        }),
        mutual_chap: iscsi
            .mutual_chap
            .as_ref()
            .map(|c| (c.username.clone(), c.secret.clone())),
        connect_timeout: None,
        nop_interval: iscsi.noop_out_interval,
        nop_timeout: iscsi.noop_out_timeout,
    }
}

/// fio's `max_latency` in ns per direction; nothing is checked where `disable_lat` keeps
/// no total latency (fio checks it where it records it).
pub fn max_latency_ns(spec: &JobSpec) -> PerDir<Option<u64>> {
    let limit = |limit: &Option<Duration>| {
        limit
            .filter(|_| !spec.disable_lat)
            .map(|limit| u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX))
    };
    let ml = &spec.max_latency;
    PerDir {
        read: limit(&ml.read),
        write: limit(&ml.write),
        trim: limit(&ml.trim),
    }
}

/// The CPUs job number `job_number` (1-based over the run) may run on: `cpus_allowed`,
/// or with `cpus_allowed_policy=split` its one CPU, the set's `(job_number - 1)`th modulo
/// its size, as fio's `fio_cpus_split` picks by thread number.
pub fn job_cpus(spec: &JobSpec, job_number: u32) -> Option<Vec<u32>> {
    let cpus = spec.cpus_allowed.as_ref()?;
    match spec.cpus_allowed_policy {
        CpusAllowedPolicy::Shared => Some(cpus.clone()),
        CpusAllowedPolicy::Split if cpus.is_empty() => Some(Vec::new()),
        CpusAllowedPolicy::Split => {
            let index = job_number.saturating_sub(1) as usize % cpus.len();
            Some(vec![cpus[index]])
        }
    }
}

/// `rate_min`, `rate_iops_min` and `rate_cycle`, when the job sets a floor.
pub fn rate_floor(spec: &JobSpec) -> Option<RateFloor> {
    let config = RateFloorConfig {
        bytes_per_s: spec.rate_min.clone(),
        iops: spec.rate_iops_min.clone(),
        cycle: spec.rate_cycle,
    };
    config.is_set().then(|| RateFloor::new(config))
}

/// fio's `file_append` (filesetup.c `get_start_offset`): a job on an existing regular file
/// through io_uring starts at its end; `None` where the option is off or has no file to
/// act on (fio appends to regular files only; on a LUN it means nothing).
pub fn appended(spec: &JobSpec) -> Result<Option<JobSpec>, SetupError> {
    if !spec.files.file_append || spec.engine() != EngineKind::IoUring {
        return Ok(None);
    }
    let Some(Target::Path(path)) = &spec.filename else {
        return Ok(None);
    };
    if spec.does(Direction::Read) || spec.verify != JobVerify::None {
        return Err(SetupError::Option {
            job: spec.name.clone(),
            option: "file_append",
            value: "1".into(),
            why: "fio lays the whole file out anew (O_TRUNC) before a job that reads, so \
                  there is nothing to append to: give it to jobs that only write",
        });
    }
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(None);
    };
    if !meta.is_file() {
        return Ok(None);
    }
    let mut moved = spec.clone();
    moved.offset = SizeSpec::Bytes(meta.len());
    moved.offset_increment = None;
    Ok(Some(moved))
}

/// The io_uring engine's part of fio's file options (`job::file_options`).
fn file_setup(spec: &JobSpec) -> Result<crate::engine::file_setup::FileSetup, SetupError> {
    let files = &spec.files;
    // fio's td_write: trims alone neither flush nor count as writes to a mounted device.
    let writes = spec.does(Direction::Write);
    if files.pre_read && spec.direct {
        // fio reads into an unaligned buffer, which O_DIRECT refuses: its job fails (EIO).
        return Err(SetupError::Option {
            job: spec.name.clone(),
            option: "pre_read",
            value: "1".into(),
            why: "pre_read with direct=1 fails in fio (EIO: its pre-read buffer is not \
                  aligned for O_DIRECT); pre-reading past the page cache warms nothing",
        });
    }
    if files.create_on_open && (spec.does(Direction::Read) || spec.verify != JobVerify::None) {
        return Err(SetupError::Option {
            job: spec.name.clone(),
            option: "create_on_open",
            value: "1".into(),
            why: "the file is created empty when opened and is not laid out: fio reads \
                  nothing from it (0-byte reads it counts as done); give it to jobs that \
                  only write",
        });
    }
    Ok(crate::engine::file_setup::FileSetup {
        // fio's option check: pre_read turns invalidate off.
        invalidate: files.invalidate && !files.pre_read,
        advice: files.fadvise_hint.advice(spec.rw.kind.is_random()),
        pre_read_block_bytes: files
            .pre_read
            .then(|| spec.block_size.get(Direction::Read).max_bytes())
            .map(|bytes| bytes.min(u64::from(u32::MAX)) as u32),
        range_offset_bytes: match spec.offset {
            SizeSpec::Bytes(offset) => offset,
            SizeSpec::Percent(_) => 0,
        },
        fsync_on_close: files.fsync_on_close && writes,
        unlink: files.unlink,
        create_fsync: files.create_fsync,
        allow_create: files.allow_file_create,
        create_on_open: files.create_on_open,
        refuse_mounted: writes && !files.allow_mounted_write,
    })
}

/// The largest I/O of the job in any direction it uses.
pub fn max_block_bytes(spec: &JobSpec) -> u32 {
    [Direction::Read, Direction::Write, Direction::Trim]
        .into_iter()
        .filter(|d| spec.does(*d))
        .map(|d| spec.block_size.get(d).max_bytes())
        .max()
        .unwrap_or(4096)
        .min(u64::from(u32::MAX)) as u32
}

fn to_u32(spec: &JobSpec, option: &'static str, value: u64) -> Result<u32, SetupError> {
    u32::try_from(value).map_err(|_| SetupError::Option {
        job: spec.name.clone(),
        option,
        value: value.to_string(),
        why: "larger than 4 GiB",
    })
}

fn block_size_spec(spec: &JobSpec, bs: &BlockSize) -> Result<BlockSizeSpec, SetupError> {
    Ok(match bs {
        BlockSize::Fixed(len) => BlockSizeSpec::Fixed(to_u32(spec, "bs", *len)?),
        BlockSize::Range(range) if spec.bs_unaligned => BlockSizeSpec::RangeUnaligned {
            min_bytes: to_u32(spec, "bsrange", range.min)?,
            max_bytes: to_u32(spec, "bsrange", range.max)?,
        },
        BlockSize::Range(range) => BlockSizeSpec::Range {
            min_bytes: to_u32(spec, "bsrange", range.min)?,
            max_bytes: to_u32(spec, "bsrange", range.max)?,
        },
        BlockSize::Split(entries) => BlockSizeSpec::Split(
            entries
                .iter()
                .map(|e| {
                    Ok(BsSplitEntry {
                        len_bytes: to_u32(spec, "bssplit", e.len_bytes)?,
                        percent: Some(e.percent),
                    })
                })
                .collect::<Result<_, SetupError>>()?,
        ),
    })
}

fn per_direction<T, U>(
    read: T,
    write: T,
    trim: T,
    map: impl Fn(T) -> Result<U, SetupError>,
) -> Result<PerDir<U>, SetupError> {
    Ok(PerDir {
        read: map(read)?,
        write: map(write)?,
        trim: map(trim)?,
    })
}

/// fio's strided zones of a job over `region`, resolved as fio's `fixup_options` (init.c)
/// and `setup_files` (filesetup.c) do: `zonerange` defaults to `zonesize`, a `zoneskip` in
/// zones counts `zonesize`s, and a job with more than one file runs without zones ("strided
/// zone mode only really works with 1 file"). The zones wrap at the region's end; the runner
/// moves that to the target's end (fio's file size) once the target is open.
pub fn strided_zones(spec: &JobSpec, region: Region) -> Option<StridedZones> {
    if spec.zonemode != ZoneMode::Strided || spec.zonesize == 0 || !spec.more_filenames.is_empty() {
        return None;
    }
    Some(StridedZones {
        io_per_zone_bytes: spec.zonesize,
        range_bytes: match spec.zonerange {
            0 => spec.zonesize,
            range => range,
        },
        skip_bytes: match spec.zoneskip {
            ZoneSkip::Bytes(bytes) => bytes,
            ZoneSkip::Zones(zones) => u64::from(zones).saturating_mul(spec.zonesize),
        },
        target_end_bytes: region.offset_bytes.saturating_add(region.len_bytes),
    })
}

/// The workload of a job clone whose seed is `seed` ([`crate::workload::job_seed`]) over
/// `region`, on a target whose logical block is `lba_bytes`.
pub fn workload_config(
    spec: &JobSpec,
    region: Region,
    seed: u64,
    lba_bytes: u32,
) -> Result<WorkloadConfig, SetupError> {
    let bs = &spec.block_size;
    let block_sizes = per_direction(&bs.read, &bs.write, &bs.trim, |b| block_size_spec(spec, b))?;
    let ba = &spec.block_align;
    let block_align_bytes = per_direction(ba.read, ba.write, ba.trim, |a| {
        a.map(|v| to_u32(spec, "blockalign", v)).transpose()
    })?;
    let io_size_bytes = match spec.io_size {
        // fio: with filesize, size "becomes merely the default for io_size", cut to the
        // region (filesetup.c caps it at the files' total).
        None => match (spec.filesize, spec.size) {
            (Some(_), Some(SizeSpec::Bytes(bytes))) => Some(bytes.min(region.len_bytes)),
            _ => None,
        },
        Some(SizeSpec::Bytes(bytes)) => Some(bytes),
        Some(SizeSpec::Percent(pct)) => Some(region.len_bytes / 100 * u64::from(pct)),
    };
    let iotime = Some(spec.thinktime_iotime).filter(|t| !t.is_zero());
    let thinktime = (!spec.thinktime.is_zero()).then(|| ThinkTime {
        pause: spec.thinktime,
        spin: spec.thinktime_spin,
        // fio counts no blocks when thinktime_iotime is given without thinktime_blocks.
        blocks: match (spec.thinktime_blocks, iotime) {
            (Some(blocks), _) => Some(blocks.max(1)),
            (None, Some(_)) => None,
            (None, None) => Some(1),
        },
        trigger: match spec.thinktime_blocks_type {
            ThinkTimeBlocksType::Complete => ThinkTimeTrigger::Complete,
            ThinkTimeBlocksType::Issue => ThinkTimeTrigger::Issue,
        },
        iotime,
        ignore_for_rate: spec.rate_ignore_thinktime,
    });
    let pacing = PacingConfig {
        rate_bytes_per_s: spec.rate.clone(),
        rate_iops: spec.rate_iops.clone(),
        process: spec.rate_process,
        thinktime,
        backlog: spec.rate_backlog,
    };
    let verify = workload_verify_kind(spec.verify).map(|kind| VerifyConfig {
        kind,
        pattern: spec.verify_pattern.clone(),
        fatal: spec.verify_fatal,
        do_verify: spec.do_verify,
        lba_size_bytes: lba_bytes.max(1),
        interval_bytes: spec.verify_interval,
        header_offset: spec.verify_offset,
        // fio's experimental_verify keeps no history, so its backlog checks find nothing
        // to read: every block is read in the verify phase.
        backlog: spec.verify_backlog.filter(|_| !spec.experimental_verify),
        backlog_batch: spec.verify_backlog_batch,
        check_seed: spec.verify_header_seed,
        check_generation: spec.verify_write_sequence,
        ..VerifyConfig::default()
    });
    Ok(WorkloadConfig {
        offset_bytes: region.offset_bytes,
        size_bytes: region.len_bytes,
        rw: spec.rw.kind,
        rwmixread_percent: spec.rwmixread,
        block_sizes,
        block_align_bytes,
        norandommap: spec.norandommap,
        random_distribution: match &spec.random_distribution {
            crate::io::Distribution::Sequence { blocks, .. } => crate::io::Distribution::Sequence {
                blocks: blocks.clone(),
                stride: spec.random_sequence_stride,
            },
            other => other.clone(),
        },
        loops: spec.loops.max(1),
        number_ios: spec.number_ios,
        io_size_bytes,
        time_based: spec.time_based,
        seed,
        pacing,
        verify,
        // The runner adds the other files' regions once their LUNs are open.
        more_files: Vec::new(),
        file_service: spec.file_service,
        open_files: spec.openfiles as usize,
        offsets: OffsetModifiers {
            seq_add_bytes: if spec.rw.kind.is_random() {
                0
            } else {
                spec.rw.offset_modifier.unwrap_or(0)
            },
            random_every: if spec.rw.kind.is_random() {
                spec.rw
                    .offset_modifier
                    .map_or(1, |n| n.clamp(1, i64::from(u32::MAX)) as u32)
            } else {
                1
            },
            sequencer: spec.rw_sequencer,
            percentage_random: spec.percentage_random.clone(),
        },
        strided_zones: strided_zones(spec, region),
    })
}

/// The workload's verify kind for the job's `verify=`; `None` for no verification.
fn workload_verify_kind(kind: JobVerify) -> Option<VerifyKind> {
    match kind {
        JobVerify::None => None,
        JobVerify::Checksum(checksum) => Some(VerifyKind::Checksum(checksum)),
        JobVerify::Pattern => Some(VerifyKind::Pattern),
        JobVerify::Meta => Some(VerifyKind::Meta),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::parse_job_str;

    fn spec(text: &str) -> JobSpec {
        parse_job_str(std::path::Path::new("test.fio"), text, &|_| None)
            .expect("the job parses")
            .remove(0)
    }

    #[test]
    fn size_is_shared_over_files_of_a_filesize_as_fios_service_hands_it_out() {
        const K: u64 = 1024;
        let shares = |options: &str, regions: &[u64]| {
            filesize_io_shares(&spec(&format!("[j]\nbs=4k\n{options}")), regions)
        };
        let four = [16 * K; 4];
        // roundrobin: two whole rounds (32k), then one block each for the first two files.
        assert_eq!(
            shares("filesize=16k\nsize=40k\n", &four),
            Some(vec![12 * K, 12 * K, 8 * K, 8 * K])
        );
        // roundrobin:3 turns of three blocks.
        assert_eq!(
            shares(
                "filesize=16k\nsize=40k\nfile_service_type=roundrobin:3\n",
                &four
            ),
            Some(vec![12 * K, 12 * K, 12 * K, 4 * K])
        );
        // sequential: each file to its end, in order.
        assert_eq!(
            shares(
                "filesize=16k\nsize=40k\nfile_service_type=sequential\n",
                &four
            ),
            Some(vec![16 * K, 16 * K, 8 * K, 0])
        );
        // A short file leaves the turns at its end; the others go on.
        assert_eq!(
            shares("filesize=4k-16k\nsize=20k\n", &[4 * K, 16 * K, 16 * K]),
            Some(vec![4 * K, 8 * K, 8 * K])
        );
        // Fewer blocks than files: the first files only.
        assert_eq!(
            shares("filesize=16k\nsize=8k\n", &four),
            Some(vec![4 * K, 4 * K, 0, 0])
        );
        // size at or past the total: every file whole (fio cuts size to the total).
        assert_eq!(
            shares("filesize=16k\nsize=1m\n", &four),
            Some(four.to_vec())
        );
        assert_eq!(
            shares("filesize=16k\nsize=64k\n", &four),
            Some(four.to_vec())
        );
        // One file: size cut to it.
        assert_eq!(
            shares("filesize=16k\nsize=8k\n", &[16 * K]),
            Some(vec![8 * K])
        );
        // Nothing to share: no filesize, no size in bytes, or an io_size.
        assert_eq!(shares("size=40k\n", &four), None);
        assert_eq!(shares("filesize=16k\n", &four), None);
        assert_eq!(shares("filesize=16k\nsize=50%\n", &four), None);
        assert_eq!(shares("filesize=16k\nsize=40k\nio_size=8k\n", &four), None);
    }

    #[test]
    fn strided_zones_are_resolved_as_fio_fixes_them_up() {
        let region = Region {
            offset_bytes: 1 << 20,
            len_bytes: 4 << 20,
        };
        let zones = |options: &str| {
            strided_zones(&spec(&format!("[j]\nzonemode=strided\n{options}")), region)
        };
        // zonerange defaults to zonesize; zoneskip in zones counts zonesizes; the zones wrap
        // at the region's end until the runner knows the target's.
        assert_eq!(
            zones("zonesize=64k\nzoneskip=3z\n"),
            Some(StridedZones {
                io_per_zone_bytes: 64 << 10,
                range_bytes: 64 << 10,
                skip_bytes: 192 << 10,
                target_end_bytes: 5 << 20,
            })
        );
        let given = zones("zonesize=64k\nzonerange=1m\nzoneskip=2m\n").unwrap();
        assert_eq!((given.range_bytes, given.skip_bytes), (1 << 20, 2 << 20));
        // "Strided zone mode only really works with 1 file": a LUN list runs without zones.
        let luns = "filename=iscsi://127.0.0.1/iqn.2026-12.test:t/0:iscsi://127.0.0.1/iqn.2026-12.test:t/1\n";
        assert_eq!(zones(&format!("zonesize=64k\n{luns}")), None);
        assert_eq!(strided_zones(&spec("[j]\n"), region), None);
    }

    #[test]
    fn hipri_polls_the_iscsi_shard_and_the_io_uring_ring_and_is_refused_by_name_elsewhere() {
        let url = IscsiUrl::parse("iscsi://127.0.0.1:3260/iqn.2026-12.test:t/0").unwrap();
        let plain = spec("[j]\nrw=randread\n");
        let polled = spec("[j]\nrw=randread\nhipri=1\n");
        let hipri = |s: &JobSpec| match engine_config(s, Some(&url), 0) {
            Ok(EngineConfig::Iscsi(options)) => options.hipri,
            other => panic!("expected an iscsi engine, got {other:?}"),
        };
        assert!(!hipri(&plain), "spinning is not a default");
        assert!(hipri(&polled));
        // io_uring: an IOPOLL ring, as fio's io_uring engine makes.
        let file = "[j]\nioengine=io_uring\nfilename=/tmp/x\nsize=1m\nrw=read\nhipri\n";
        match engine_config(&spec(file), None, 0) {
            Ok(EngineConfig::Uring(options)) => assert!(options.hipri),
            other => panic!("expected an io_uring engine, got {other:?}"),
        }
        let file = "[j]\nioengine=null\nsize=1m\nrw=read\nhipri\n";
        match parse_job_str(std::path::Path::new("test.fio"), file, &|_| None) {
            Err(e) => assert!(e.to_string().contains("hipri"), "{e}"),
            Ok(_) => panic!("hipri on the null engine was accepted"),
        }
    }
}
