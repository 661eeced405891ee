//! The job options iscsi-bench knows: fio's names, aliases and meanings (fio 3.33
//! `--cmdhelp`), iscsi-bench's own iSCSI options, and the fio options it refuses.

use std::collections::BTreeMap;
use std::time::Duration;

use super::error::{JobError, Origin, Suggestion, ValueError};
use super::error_policy::ErrorPolicy;
use super::spec::{
    BlockSize, ChapCredentials, DigestChoice, Engine, FileService, FileServiceKind, JobSpec,
    LogName, PerDir, RateProcess, SizeSpec, TransportKind, VerifyKind,
};
use super::value::{self, TimeUnit};
use crate::io::Direction;

/// Whether an option takes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// A boolean: the bare name means true, `=0`/`=1` (and true/false, yes/no) work too.
    Flag,
    /// Needs `=value`.
    Required,
    /// Bare name or `=value` (the log options: bare means "named after the job").
    Optional,
}

/// One option of the table.
#[derive(Debug)]
pub struct OptionDef {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub kind: ValueKind,
    /// The value's form, for `--cmdhelp`.
    pub syntax: &'static str,
    pub default: &'static str,
    pub help: &'static str,
    /// iscsi-bench's own option (fio has no such option).
    pub ours: bool,
}

macro_rules! opt {
    ($name:literal, [$($alias:literal),*], $kind:ident, $syntax:literal, $default:literal, $help:literal) => {
        OptionDef { name: $name, aliases: &[$($alias),*], kind: ValueKind::$kind, syntax: $syntax,
            default: $default, help: $help, ours: false }
    };
    (ours $name:literal, [$($alias:literal),*], $kind:ident, $syntax:literal, $default:literal, $help:literal) => {
        OptionDef { name: $name, aliases: &[$($alias),*], kind: ValueKind::$kind, syntax: $syntax,
            default: $default, help: $help, ours: true }
    };
}

/// Every job option iscsi-bench accepts.
pub static OPTIONS: &[OptionDef] = &[
    opt!(
        "name",
        [],
        Required,
        "str",
        "section name",
        "Name of this job (on the command line, starts a new job)"
    ),
    opt!(
        "description",
        [],
        Required,
        "str",
        "none",
        "Text description of the job"
    ),
    opt!(
        "filename",
        [],
        Required,
        "iscsi://[user[%pass]@]host[:port]/iqn/lun | path | null",
        "embedded target",
        "What the job does I/O to"
    ),
    opt!(
        "file_service_type",
        [],
        Required,
        "roundrobin|sequential|random[:N]",
        "roundrobin",
        "Which file of a filename list the next I/O goes to (N I/Os per choice)"
    ),
    opt!(
        "ioengine",
        [],
        Required,
        "iscsi|libiscsi|io_uring|null",
        "from filename",
        "I/O engine"
    ),
    opt!(
        "direct",
        [],
        Flag,
        "bool",
        "0",
        "Use O_DIRECT on local files and devices"
    ),
    opt!(
        "buffered",
        [],
        Flag,
        "bool",
        "1",
        "Use buffered I/O (the opposite of direct)"
    ),
    opt!(
        "thread",
        [],
        Flag,
        "bool",
        "1",
        "Run jobs as threads (iscsi-bench always does)"
    ),
    opt!(
        "fixedbufs",
        [],
        Flag,
        "bool",
        "0",
        "io_uring: register the I/O buffers"
    ),
    opt!(
        "registerfiles",
        [],
        Flag,
        "bool",
        "0",
        "io_uring: register the file"
    ),
    opt!(
        "sqthread_poll",
        [],
        Flag,
        "bool",
        "0",
        "io_uring: a kernel thread polls the submission queue"
    ),
    opt!(
        "size",
        [],
        Required,
        "int[%]",
        "whole target",
        "Size of the region of the target the job works on"
    ),
    opt!("offset", [], Required, "int[%]", "0", "Start of the region"),
    opt!(
        "offset_increment",
        [],
        Required,
        "int[%]",
        "0",
        "Extra offset per numjobs clone"
    ),
    opt!(
        "io_size",
        ["io_limit"],
        Required,
        "int[%]",
        "size",
        "Bytes of I/O to do (% of size)"
    ),
    opt!(
        "number_ios",
        [],
        Required,
        "int",
        "0 (no limit)",
        "Stop after this many I/Os"
    ),
    opt!(
        "loops",
        [],
        Required,
        "int",
        "1",
        "Repeat the workload this many times"
    ),
    opt!(
        "kb_base",
        [],
        Required,
        "1024|1000",
        "1024",
        "How k/KiB in values are read"
    ),
    opt!(
        "rw",
        ["readwrite"],
        Required,
        "read|write|trim|randread|randwrite|randtrim|rw|readwrite|randrw[:nr]",
        "read",
        "I/O pattern"
    ),
    opt!(
        "rwmixread",
        [],
        Required,
        "int",
        "50",
        "Percentage of reads in a mixed pattern"
    ),
    opt!(
        "rwmixwrite",
        [],
        Required,
        "int",
        "50",
        "Percentage of writes in a mixed pattern"
    ),
    opt!(
        "bs",
        ["blocksize"],
        Required,
        "int[,int][,int]",
        "4096",
        "Block size (read,write,trim)"
    ),
    opt!(
        "bsrange",
        ["blocksize_range"],
        Required,
        "irange[,irange][,irange]",
        "none",
        "Block size range (read,write,trim)"
    ),
    opt!(
        "bssplit",
        [],
        Required,
        "size/pct:size/pct...[,...][,...]",
        "none",
        "Weighted block sizes (read,write,trim)"
    ),
    opt!(
        "blockalign",
        ["ba"],
        Required,
        "int[,int][,int]",
        "block size",
        "Alignment of random offsets"
    ),
    opt!(
        "random_distribution",
        [],
        Required,
        "random|zipf[:t[:c]]|pareto[:p[:c]]|normal[:d[:c]]",
        "random",
        "Distribution of random offsets"
    ),
    opt!(
        "randrepeat",
        [],
        Flag,
        "bool",
        "1",
        "Same random sequence on every run"
    ),
    opt!(
        "randseed",
        [],
        Required,
        "int",
        "none",
        "Seed of the random generators"
    ),
    opt!(
        "norandommap",
        [],
        Flag,
        "bool",
        "0",
        "Random offsets may repeat before all blocks are touched"
    ),
    opt!("iodepth", [], Required, "int", "1", "I/Os in flight"),
    opt!(
        "iodepth_batch_submit",
        ["iodepth_batch"],
        Required,
        "int",
        "1",
        "I/Os submitted at once"
    ),
    opt!(
        "iodepth_batch_complete_min",
        ["iodepth_batch_complete"],
        Required,
        "int",
        "1",
        "Fewest completions reaped at once"
    ),
    opt!(
        "iodepth_batch_complete_max",
        [],
        Required,
        "int",
        "iodepth",
        "Most completions reaped at once"
    ),
    opt!("numjobs", [], Required, "int", "1", "Clones of this job"),
    opt!(
        "runtime",
        ["timeout"],
        Required,
        "time (s)",
        "none",
        "Stop after this long"
    ),
    opt!(
        "time_based",
        [],
        Flag,
        "bool",
        "0",
        "Run for runtime even when the region is done"
    ),
    opt!(
        "ramp_time",
        [],
        Required,
        "time (s)",
        "0",
        "Run this long before measuring"
    ),
    opt!(
        "startdelay",
        [],
        Required,
        "time (s) or range",
        "0",
        "Wait this long before starting"
    ),
    opt!(
        "rate",
        [],
        Required,
        "int[,int][,int] (bytes/s)",
        "none",
        "Bandwidth cap (read,write,trim)"
    ),
    opt!(
        "rate_iops",
        [],
        Required,
        "int[,int][,int]",
        "none",
        "IOPS cap (read,write,trim)"
    ),
    opt!(
        "rate_process",
        [],
        Required,
        "linear|poisson",
        "linear",
        "How rated I/Os are spaced"
    ),
    opt!(
        "rate_min",
        ["ratemin"],
        Required,
        "int[,int][,int] (bytes/s)",
        "none",
        "Fail the job below this bandwidth (read,write,trim)"
    ),
    opt!(
        "rate_iops_min",
        [],
        Required,
        "int[,int][,int]",
        "none",
        "Fail the job below this IOPS (read,write,trim)"
    ),
    opt!(
        "rate_cycle",
        ["ratecycle"],
        Required,
        "time (ms)",
        "1000",
        "Window rate_min and rate_iops_min are averaged over"
    ),
    opt!(
        "thinktime",
        [],
        Required,
        "time (us)",
        "0",
        "Pause after I/Os"
    ),
    opt!(
        "thinktime_blocks",
        [],
        Required,
        "int",
        "1",
        "I/Os between pauses"
    ),
    opt!(
        "verify",
        [],
        Required,
        "crc32c|md5|sha256|pattern|0",
        "0",
        "Check written data"
    ),
    opt!(
        "verify_pattern",
        [],
        Required,
        "0xhex | decimal | \"string\"",
        "none",
        "Fill pattern (sets verify=pattern if verify is off)"
    ),
    opt!(
        "verify_fatal",
        [],
        Flag,
        "bool",
        "0",
        "Stop at the first verify failure"
    ),
    opt!(
        "do_verify",
        [],
        Flag,
        "bool",
        "1",
        "Run the verify phase after writing"
    ),
    opt!(
        "verify_backlog",
        [],
        Required,
        "int",
        "none",
        "Verify after this many blocks are written"
    ),
    opt!(
        "zero_buffers",
        [],
        Flag,
        "bool",
        "0",
        "Write buffers start as zeros instead of random data"
    ),
    opt!(
        "refill_buffers",
        [],
        Flag,
        "bool",
        "0",
        "Fill write buffers again before every write"
    ),
    opt!(
        "scramble_buffers",
        [],
        Flag,
        "bool",
        "1",
        "Stamp offset and time into reused write buffers (defeats naive dedupe)"
    ),
    opt!(
        "buffer_pattern",
        [],
        Required,
        "0xhex | decimal | \"string\"",
        "none",
        "Fill write buffers with this pattern"
    ),
    opt!(
        "buffer_compress_percentage",
        [],
        Required,
        "int (0..100)",
        "0",
        "Make write data compressible to this percentage"
    ),
    opt!(
        "buffer_compress_chunk",
        [],
        Required,
        "int (bytes)",
        "512",
        "Size of the random/compressible regions (0: the whole buffer)"
    ),
    opt!(
        "dedupe_percentage",
        [],
        Required,
        "int (0..100)",
        "0",
        "Share of write buffers that repeat an earlier one"
    ),
    opt!(
        "group_reporting",
        [],
        Flag,
        "bool",
        "0",
        "Report per group instead of per job"
    ),
    opt!(
        "stonewall",
        ["wait_for_previous"],
        Flag,
        "bool",
        "0",
        "Wait for the jobs before; start a new group"
    ),
    opt!(
        "new_group",
        [],
        Flag,
        "bool",
        "0",
        "Start a new reporting group"
    ),
    opt!(
        "percentile_list",
        [],
        Required,
        "float:float...",
        "1:5:10:20:30:40:50:60:70:80:90:95:99:99.5:99.9:99.95:99.99",
        "Latency percentiles to report"
    ),
    opt!(
        "clat_percentiles",
        [],
        Flag,
        "bool",
        "1",
        "Report completion latency percentiles"
    ),
    opt!(
        "lat_percentiles",
        [],
        Flag,
        "bool",
        "0",
        "Report total latency percentiles"
    ),
    opt!(
        "slat_percentiles",
        [],
        Flag,
        "bool",
        "0",
        "Report submission latency percentiles"
    ),
    opt!(
        "write_lat_log",
        [],
        Optional,
        "[prefix]",
        "none",
        "Write latency logs"
    ),
    opt!(
        "write_bw_log",
        [],
        Optional,
        "[prefix]",
        "none",
        "Write bandwidth logs"
    ),
    opt!(
        "write_iops_log",
        [],
        Optional,
        "[prefix]",
        "none",
        "Write IOPS logs"
    ),
    opt!(
        "log_avg_msec",
        [],
        Required,
        "int (ms)",
        "0",
        "Average log entries over this period"
    ),
    opt!(
        "cpus_allowed",
        [],
        Required,
        "cpu[-cpu][,...]",
        "all",
        "CPUs the job may run on"
    ),
    opt!(ours "header_digest", [], Required, "none|crc32c", "none", "iSCSI HeaderDigest to offer"),
    opt!(ours "data_digest", [], Required, "none|crc32c", "none", "iSCSI DataDigest to offer"),
    opt!(ours "immediate_data", [], Flag, "bool", "target's", "iSCSI ImmediateData to offer"),
    opt!(ours "initial_r2t", [], Flag, "bool", "target's", "iSCSI InitialR2T to offer"),
    opt!(ours "max_burst_length", [], Required, "int (512..16M-1)", "262144", "iSCSI MaxBurstLength to offer"),
    opt!(ours "first_burst_length", [], Required, "int (512..16M-1)", "65536", "iSCSI FirstBurstLength to offer"),
    opt!(ours "max_recv_data_segment_length", [], Required, "int (512..16M-1)", "8192", "iSCSI MaxRecvDataSegmentLength to declare"),
    opt!(ours "chap_username", [], Required, "str", "none", "CHAP user name (target authenticates us)"),
    opt!(ours "chap_secret", [], Required, "str", "none", "CHAP secret (or $LIBISCSI_CHAP_PASSWORD, which ps does not show)"),
    opt!(ours "mutual_chap_username", [], Required, "str", "none", "Mutual CHAP: the target's user name"),
    opt!(ours "mutual_chap_secret", [], Required, "str", "none", "Mutual CHAP: the target's secret (or $LIBISCSI_CHAP_TARGET_PASSWORD)"),
    opt!(ours "initiator_name", ["initiator"], Required, "iqn", "built-in", "iSCSI InitiatorName"),
    opt!(ours "transport", [], Required, "software|dependent|independent", "software", "How the iSCSI engine reaches the target"),
    opt!(ours "shards", [], Required, "int", "1 per core", "Shards (cores) the iSCSI engine uses"),
    opt!(ours "io_timeout", [], Required, "time (s)", "none", "Fail an I/O that takes longer than this"),
    opt!(ours "reconnect_max", [], Required, "int", "5", "iSCSI: log in again after a lost connection at most this many times in a row (0: never)"),
    opt!(ours "replacement_timeout", [], Required, "time (s)", "30", "iSCSI: the longest one reconnect may take before its I/O fails"),
    opt!(
        "continue_on_error",
        [],
        Required,
        "none|read|write|io|verify|all",
        "none",
        "Continue after non-fatal errors of these types"
    ),
    opt!(
        "ignore_error",
        [],
        Required,
        "READ_ERRS,WRITE_ERRS,VERIFY_ERRS",
        "EIO:EILSEQ",
        "Errors (':'-separated names or numbers) continue_on_error treats as non-fatal, per type"
    ),
];

/// fio options iscsi-bench refuses as "not supported" (fio 3.33 `--cmdhelp=all` and the
/// common engine options, minus what iscsi-bench implements).
pub static UNSUPPORTED: &[&str] = &[
    "wait_for",
    "lockfile",
    "directory",
    "filename_format",
    "unique_filename",
    "opendir",
    "bs_unaligned",
    "blocksize_unaligned",
    "bs_is_seq_rand",
    "rw_sequencer",
    "iodepth_low",
    "serialize_overlap",
    "io_submit_mode",
    "fill_device",
    "filesize",
    "file_append",
    "offset_align",
    "random_generator",
    "percentage_random",
    "allrandrepeat",
    "nrfiles",
    "openfiles",
    "fallocate",
    "fadvise_hint",
    "fsync",
    "fdatasync",
    "write_barrier",
    "sync_file_range",
    "atomic",
    "overwrite",
    "verify_only",
    "clocksource",
    "mem",
    "iomem",
    "verify_interval",
    "verify_offset",
    "verify_dump",
    "verify_async",
    "verify_backlog_batch",
    "experimental_verify",
    "verify_state_load",
    "verify_state_save",
    "trim_percentage",
    "trim_verify_zero",
    "trim_backlog",
    "trim_backlog_batch",
    "write_iolog",
    "read_iolog",
    "read_iolog_chunked",
    "replay_no_stall",
    "replay_redirect",
    "replay_scale",
    "replay_align",
    "replay_time_scale",
    "replay_skip",
    "merge_blktrace_file",
    "merge_blktrace_scalars",
    "merge_blktrace_iters",
    "exec_prerun",
    "exec_postrun",
    "ioscheduler",
    "zonemode",
    "zonesize",
    "zonecapacity",
    "zonerange",
    "zoneskip",
    "read_beyond_wp",
    "max_open_zones",
    "job_max_open_zones",
    "ignore_zone_limits",
    "zone_reset_threshold",
    "zone_reset_frequency",
    "lockmem",
    "nice",
    "prio",
    "prioclass",
    "thinktime_spin",
    "thinktime_blocks_type",
    "thinktime_iotime",
    "rate_ignore_thinktime",
    "max_latency",
    "latency_target",
    "latency_window",
    "latency_percentile",
    "latency_run",
    "invalidate",
    "sync",
    "write_hint",
    "create_serialize",
    "create_fsync",
    "create_on_open",
    "create_only",
    "allow_file_create",
    "allow_mounted_write",
    "pre_read",
    "cpumask",
    "cpus_allowed_policy",
    "numa_cpu_nodes",
    "numa_mem_policy",
    "end_fsync",
    "fsync_on_close",
    "unlink",
    "unlink_each_loop",
    "exitall",
    "exit_what",
    "exitall_on_error",
    "per_job_logs",
    "bwavgtime",
    "iopsavgtime",
    "log_entries",
    "log_hist_msec",
    "log_hist_coarseness",
    "write_hist_log",
    "log_max_value",
    "log_offset",
    "log_prio",
    "log_compression",
    "log_compression_cpus",
    "log_store_compressed",
    "log_unix_epoch",
    "log_alternate_epoch",
    "log_alternate_epoch_clock_id",
    "block_error_percentiles",
    "stats",
    "dedupe_mode",
    "dedupe_working_set_percentage",
    "dedupe_global",
    "significant_figures",
    "disk_util",
    "gtod_reduce",
    "disable_lat",
    "disable_clat",
    "disable_slat",
    "disable_bw_measurement",
    "gtod_cpu",
    "unified_rw_reporting",
    "error_dump",
    "profile",
    "cgroup",
    "cgroup_nodelete",
    "cgroup_weight",
    "uid",
    "gid",
    "unit_base",
    "hugepage-size",
    "flow_id",
    "flow",
    "flow_sleep",
    "steadystate",
    "ss",
    "steadystate_duration",
    "ss_dur",
    "steadystate_ramp_time",
    "ss_ramp",
    "hipri",
    "cmdprio_percentage",
    "cmdprio_class",
    "cmdprio",
    "cmdprio_bssplit",
    "nonvectored",
    "uncached",
    "nowait",
    "force_async",
    "userspace_reap",
    "sg_write_mode",
    "readfua",
    "writefua",
];

/// Find an option by name or alias.
pub fn lookup(name: &str) -> Option<&'static OptionDef> {
    OPTIONS
        .iter()
        .find(|def| def.name == name || def.aliases.contains(&name))
}

/// Levenshtein distance, bounded by the short inputs it gets (option names).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            let insert = current[j] + 1;
            let delete = previous[j + 1] + 1;
            current.push(substitute.min(insert).min(delete));
        }
        previous = current;
    }
    previous[b.len()]
}

/// The known option name nearest to `name`, if one is near enough to be a typo.
pub fn suggest(name: &str, candidates: impl Iterator<Item = &'static str>) -> Option<String> {
    if name.len() > 64 {
        return None;
    }
    let limit = (name.len() / 3).clamp(1, 3);
    candidates
        .map(|candidate| (edit_distance(name, candidate), candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min()
        .map(|(_, candidate)| candidate.to_string())
}

/// All option names and aliases.
pub fn all_names() -> impl Iterator<Item = &'static str> {
    OPTIONS
        .iter()
        .flat_map(|def| std::iter::once(def.name).chain(def.aliases.iter().copied()))
}

/// The error for an option name that is not in the table.
pub fn unknown_option(name: &str, at: &Origin) -> JobError {
    if UNSUPPORTED.contains(&name) {
        JobError::Unsupported {
            at: at.clone(),
            option: name.to_string(),
        }
    } else {
        JobError::UnknownOption {
            at: at.clone(),
            option: name.to_string(),
            suggestion: Suggestion(suggest(name, all_names())),
        }
    }
}

/// Where a setting was made: the place and the section (a counter) it was made in.
#[derive(Debug, Clone, PartialEq)]
pub struct SetAt {
    pub at: Origin,
    pub section: u32,
}

/// A job (or the global defaults) being built: the spec and where each option was set.
#[derive(Debug, Clone)]
pub struct Scope {
    pub spec: JobSpec,
    /// Canonical option name to where it was last set.
    pub set_at: BTreeMap<&'static str, SetAt>,
    /// Which option set each direction's block size last.
    pub block_size_by: PerDir<Option<(&'static str, SetAt)>>,
    /// Which of rwmixread/rwmixwrite was given last.
    pub rwmix_by: Option<(&'static str, SetAt)>,
    /// The section being read.
    pub section: u32,
}

impl Scope {
    pub fn new(spec: JobSpec) -> Scope {
        Scope {
            spec,
            set_at: BTreeMap::new(),
            block_size_by: PerDir::default(),
            rwmix_by: None,
            section: 0,
        }
    }

    /// Where `name` was set, for messages.
    pub fn where_set(&self, name: &str) -> String {
        match self.set_at.get(name) {
            Some(set) => format!("{name} ({})", set.at),
            None => name.to_string(),
        }
    }

    /// Apply one option. `key` is what the user wrote (an alias, perhaps).
    pub fn apply(&mut self, key: &str, value: Option<&str>, at: &Origin) -> Result<(), JobError> {
        let def = lookup(key).ok_or_else(|| unknown_option(key, at))?;
        let text = match (def.kind, value) {
            (ValueKind::Required, None) => {
                return Err(JobError::MissingValue {
                    at: at.clone(),
                    option: key.to_string(),
                })
            }
            (ValueKind::Required, Some(text)) if text.trim().is_empty() => {
                return Err(JobError::MissingValue {
                    at: at.clone(),
                    option: key.to_string(),
                })
            }
            (_, Some(text)) => Some(text.trim()),
            (_, None) => None,
        };
        let bad = |error: ValueError| error.into_job_error(at, key, text.unwrap_or(""));
        let flag = || -> Result<bool, JobError> {
            text.map(value::parse_bool)
                .transpose()
                .map_err(bad)
                .map(|v| v.unwrap_or(true))
        };
        let required = || text.unwrap_or("");
        let kb_base = self.spec.kb_base;
        let set_here = SetAt {
            at: at.clone(),
            section: self.section,
        };
        let spec = &mut self.spec;
        match def.name {
            "name" => spec.name = required().to_string(),
            "description" => spec.description = Some(required().to_string()),
            "filename" => {
                let mut targets = value::parse_targets(required()).map_err(bad)?.into_iter();
                spec.filename = targets.next();
                spec.more_filenames = targets.collect();
            }
            "file_service_type" => {
                spec.file_service = parse_file_service(required()).map_err(bad)?
            }
            "ioengine" => spec.ioengine = Some(parse_engine(required()).map_err(bad)?),
            "direct" => spec.direct = flag()?,
            "buffered" => spec.direct = !flag()?,
            "thread" => {
                if !flag()? {
                    return Err(bad(ValueError::new(
                        "iscsi-bench always runs jobs as threads; thread=0 (processes) is not supported",
                    )));
                }
            }
            "fixedbufs" => spec.fixedbufs = flag()?,
            "registerfiles" => spec.registerfiles = flag()?,
            "sqthread_poll" => spec.sqthread_poll = flag()?,
            "size" => {
                let size = value::parse_size_or_percent(required(), kb_base).map_err(bad)?;
                if size == SizeSpec::Bytes(0) {
                    return Err(JobError::ZeroSize {
                        at: at.clone(),
                        job: spec.name.clone(),
                        reason:
                            "size=0 leaves nothing to do (leave size out to use the whole target)"
                                .into(),
                    });
                }
                spec.size = Some(size);
            }
            "offset" => {
                spec.offset = value::parse_size_or_percent(required(), kb_base).map_err(bad)?
            }
            "offset_increment" => {
                spec.offset_increment =
                    Some(value::parse_size_or_percent(required(), kb_base).map_err(bad)?)
            }
            "io_size" => {
                let size = value::parse_size_or_percent(required(), kb_base).map_err(bad)?;
                if size == SizeSpec::Bytes(0) {
                    return Err(JobError::ZeroSize {
                        at: at.clone(),
                        job: spec.name.clone(),
                        reason: "io_size=0 leaves nothing to do".into(),
                    });
                }
                spec.io_size = Some(size);
            }
            "number_ios" => {
                let count = value::parse_u64(required()).map_err(bad)?;
                spec.number_ios = (count > 0).then_some(count);
            }
            "loops" => {
                spec.loops =
                    value::parse_u64_in(required(), 1, u64::from(u32::MAX)).map_err(bad)? as u32
            }
            "kb_base" => {
                spec.kb_base = match required() {
                    "1024" => 1024,
                    "1000" => 1000,
                    _ => return Err(bad(ValueError::new("kb_base is 1024 or 1000"))),
                }
            }
            "rw" => spec.rw = value::parse_rw(required(), kb_base).map_err(bad)?,
            "rwmixread" | "rwmixwrite" => {
                let percent = value::parse_u64_in(required(), 0, 100).map_err(bad)? as u32;
                let read_percent = if def.name == "rwmixread" {
                    percent
                } else {
                    100 - percent
                };
                // fio lets the later of the two win; given in one section and not adding up
                // to 100, one of them would be ignored, so that is refused.
                if let Some((other, other_at)) = &self.rwmix_by {
                    if *other != def.name
                        && other_at.section == self.section
                        && spec.rwmixread != read_percent
                    {
                        return Err(JobError::Conflict {
                            at: at.clone(),
                            job: spec.name.clone(),
                            first: format!("{other} ({})", other_at.at),
                            second: format!("{}={percent}", def.name),
                            reason: "rwmixread and rwmixwrite must add up to 100".into(),
                        });
                    }
                }
                spec.rwmixread = read_percent;
                self.rwmix_by = Some((def.name, set_here.clone()));
            }
            "bs" | "bsrange" | "bssplit" => {
                let before = spec.block_size.clone();
                let parsed = match def.name {
                    "bs" => value::parse_per_dir(required(), &before, |part| {
                        let len = value::parse_size(part, kb_base)?;
                        if len == 0 {
                            return Err(ValueError::new("a block size of 0"));
                        }
                        Ok(BlockSize::Fixed(len))
                    }),
                    "bsrange" => value::parse_per_dir(required(), &before, |part| {
                        let range = value::parse_range(part, |p| value::parse_size(p, kb_base))?;
                        if range.min == 0 {
                            return Err(ValueError::new("a block size of 0"));
                        }
                        Ok(BlockSize::Range(range))
                    }),
                    _ => value::parse_per_dir(required(), &before, |part| {
                        value::parse_bssplit(part, kb_base).map(BlockSize::Split)
                    }),
                }
                .map_err(bad)?;
                for direction in [Direction::Read, Direction::Write, Direction::Trim] {
                    if !text_sets_direction(required(), direction) {
                        continue;
                    }
                    if let Some((other, other_at)) = self.block_size_by.get(direction) {
                        if *other != def.name && other_at.section == self.section {
                            return Err(JobError::Conflict {
                                at: at.clone(),
                                job: spec.name.clone(),
                                first: format!("{other} ({})", other_at.at),
                                second: def.name.to_string(),
                                reason: format!(
                                    "both set the {} block size; give one of them",
                                    direction.fio_name()
                                ),
                            });
                        }
                    }
                    *self.block_size_by.get_mut(direction) = Some((def.name, set_here.clone()));
                }
                spec.block_size = parsed;
            }
            "blockalign" => {
                spec.block_align = value::parse_per_dir(required(), &spec.block_align, |part| {
                    let align = value::parse_size(part, kb_base)?;
                    Ok((align > 0).then_some(align))
                })
                .map_err(bad)?
            }
            "random_distribution" => {
                spec.random_distribution = value::parse_distribution(required()).map_err(bad)?
            }
            "randrepeat" => spec.randrepeat = flag()?,
            "randseed" => spec.randseed = Some(value::parse_u64(required()).map_err(bad)?),
            "norandommap" => spec.norandommap = flag()?,
            "iodepth" => spec.iodepth = parse_count(required(), 1).map_err(bad)?,
            "iodepth_batch_submit" => {
                spec.iodepth_batch_submit = parse_count(required(), 0).map_err(bad)?
            }
            "iodepth_batch_complete_min" => {
                spec.iodepth_batch_complete_min = parse_count(required(), 0).map_err(bad)?
            }
            "iodepth_batch_complete_max" => {
                spec.iodepth_batch_complete_max = Some(parse_count(required(), 1).map_err(bad)?)
            }
            "numjobs" => spec.numjobs = parse_count(required(), 1).map_err(bad)?,
            "runtime" => {
                let runtime = value::parse_time(required(), TimeUnit::Seconds).map_err(bad)?;
                // fio: runtime=0 means no limit.
                spec.runtime = (!runtime.is_zero()).then_some(runtime);
            }
            "time_based" => spec.time_based = flag()?,
            "ramp_time" => {
                spec.ramp_time = value::parse_time(required(), TimeUnit::Seconds).map_err(bad)?
            }
            "startdelay" => {
                spec.startdelay =
                    value::parse_range(required(), |p| value::parse_time(p, TimeUnit::Seconds))
                        .map_err(bad)?
            }
            "rate" | "rate_iops" | "rate_min" | "rate_iops_min" => {
                let in_bytes = matches!(def.name, "rate" | "rate_min");
                let parse_rate = |part: &str| -> Result<Option<u64>, ValueError> {
                    let rate = if in_bytes {
                        value::parse_size(part, kb_base)?
                    } else {
                        value::parse_u64(part)?
                    };
                    // fio: 0 means no cap (or no floor).
                    Ok((rate > 0).then_some(rate))
                };
                let target = match def.name {
                    "rate" => &mut spec.rate,
                    "rate_iops" => &mut spec.rate_iops,
                    "rate_min" => &mut spec.rate_min,
                    _ => &mut spec.rate_iops_min,
                };
                *target = value::parse_per_dir(required(), target, parse_rate).map_err(bad)?;
            }
            "rate_cycle" => {
                spec.rate_cycle =
                    value::parse_time(required(), TimeUnit::Milliseconds).map_err(bad)?
            }
            "rate_process" => {
                spec.rate_process = match required() {
                    "linear" => RateProcess::Linear,
                    "poisson" => RateProcess::Poisson,
                    _ => return Err(bad(ValueError::new("expected linear or poisson"))),
                }
            }
            "thinktime" => {
                spec.thinktime =
                    value::parse_time(required(), TimeUnit::Microseconds).map_err(bad)?
            }
            "thinktime_blocks" => {
                spec.thinktime_blocks = parse_count(required(), 1).map_err(bad)?
            }
            "verify" => spec.verify = value::parse_verify_kind(required()).map_err(bad)?,
            "verify_pattern" => {
                spec.verify_pattern = value::parse_verify_pattern(required()).map_err(bad)?;
                // As in fio: a pattern with verification off turns on pattern checks.
                if spec.verify == VerifyKind::None {
                    spec.verify = VerifyKind::Pattern;
                }
            }
            "verify_fatal" => spec.verify_fatal = flag()?,
            "do_verify" => spec.do_verify = flag()?,
            "verify_backlog" => {
                let backlog = value::parse_u64(required()).map_err(bad)?;
                spec.verify_backlog = (backlog > 0).then_some(backlog);
            }
            "zero_buffers" => spec.buffers.zero_buffers = flag()?,
            "refill_buffers" => spec.buffers.refill_buffers = flag()?,
            "scramble_buffers" => spec.buffers.scramble_buffers = flag()?,
            "buffer_pattern" => {
                spec.buffers.pattern = value::parse_verify_pattern(required()).map_err(bad)?
            }
            "buffer_compress_percentage" => {
                spec.buffers.compress_percentage =
                    value::parse_u64_in(required(), 0, 100).map_err(bad)? as u32
            }
            "buffer_compress_chunk" => {
                spec.buffers.compress_chunk_bytes = value::parse_size(required(), kb_base)
                    .map_err(bad)
                    .and_then(|bytes| {
                        u32::try_from(bytes).map_err(|_| bad(ValueError::new("larger than 4 GiB")))
                    })?
            }
            "dedupe_percentage" => {
                spec.buffers.dedupe_percentage =
                    value::parse_u64_in(required(), 0, 100).map_err(bad)? as u32
            }
            "group_reporting" => spec.group_reporting = flag()?,
            "stonewall" => spec.stonewall = flag()?,
            "new_group" => spec.new_group = flag()?,
            "percentile_list" => {
                spec.percentile_list = value::parse_percentile_list(required()).map_err(bad)?
            }
            "clat_percentiles" => spec.clat_percentiles = flag()?,
            "lat_percentiles" => spec.lat_percentiles = flag()?,
            "slat_percentiles" => spec.slat_percentiles = flag()?,
            "write_lat_log" | "write_bw_log" | "write_iops_log" => {
                let log = match text {
                    None | Some("") => LogName::JobName,
                    Some(prefix) => LogName::Prefix(prefix.to_string()),
                };
                match def.name {
                    "write_lat_log" => spec.write_lat_log = Some(log),
                    "write_bw_log" => spec.write_bw_log = Some(log),
                    _ => spec.write_iops_log = Some(log),
                }
            }
            "log_avg_msec" => spec.log_avg_msec = value::parse_u64(required()).map_err(bad)?,
            "cpus_allowed" => {
                spec.cpus_allowed = Some(value::parse_cpu_list(required()).map_err(bad)?)
            }
            "header_digest" => spec.iscsi.header_digest = parse_digest(required()).map_err(bad)?,
            "data_digest" => spec.iscsi.data_digest = parse_digest(required()).map_err(bad)?,
            "immediate_data" => spec.iscsi.immediate_data = Some(flag()?),
            "initial_r2t" => spec.iscsi.initial_r2t = Some(flag()?),
            "max_burst_length" => {
                spec.iscsi.max_burst_length_bytes =
                    Some(parse_iscsi_length(required(), kb_base).map_err(bad)?)
            }
            "first_burst_length" => {
                spec.iscsi.first_burst_length_bytes =
                    Some(parse_iscsi_length(required(), kb_base).map_err(bad)?)
            }
            "max_recv_data_segment_length" => {
                spec.iscsi.max_recv_data_segment_length_bytes =
                    Some(parse_iscsi_length(required(), kb_base).map_err(bad)?)
            }
            "chap_username" | "chap_secret" | "mutual_chap_username" | "mutual_chap_secret" => {
                let mutual = def.name.starts_with("mutual");
                let slot = if mutual {
                    &mut spec.iscsi.mutual_chap
                } else {
                    &mut spec.iscsi.chap
                };
                let credentials = slot.get_or_insert_with(|| ChapCredentials {
                    username: String::new(),
                    secret: String::new(),
                });
                if def.name.ends_with("username") {
                    credentials.username = required().to_string();
                } else {
                    credentials.secret = required().to_string();
                }
            }
            "initiator_name" => spec.iscsi.initiator_name = Some(required().to_string()),
            "transport" => {
                spec.iscsi.transport = match required() {
                    "software" => TransportKind::Software,
                    "dependent" => TransportKind::Dependent,
                    "independent" => TransportKind::Independent,
                    _ => {
                        return Err(bad(ValueError::new(
                            "expected software, dependent or independent",
                        )))
                    }
                }
            }
            "shards" => spec.iscsi.shards = Some(parse_count(required(), 1).map_err(bad)?),
            "io_timeout" => {
                let timeout = value::parse_time(required(), TimeUnit::Seconds).map_err(bad)?;
                spec.io_timeout = (timeout > Duration::ZERO).then_some(timeout);
            }
            "reconnect_max" => {
                spec.iscsi.reconnect_max = Some(parse_count(required(), 0).map_err(bad)?)
            }
            "replacement_timeout" => {
                let timeout = value::parse_time(required(), TimeUnit::Seconds).map_err(bad)?;
                if timeout.is_zero() {
                    return Err(bad(ValueError::new("must be greater than 0")));
                }
                spec.iscsi.replacement_timeout = Some(timeout);
            }
            "continue_on_error" => {
                spec.error_policy.continue_on = ErrorPolicy::parse_continue_on_error(required())
                    .map_err(|e| bad(ValueError::new(e)))?
            }
            "ignore_error" => {
                spec.error_policy.ignore = ErrorPolicy::parse_ignore_error(required())
                    .map_err(|e| bad(ValueError::new(e)))?
            }
            other => {
                // The table and this match are kept in step by a test; reaching here is a
                // programmer error, reported rather than ignored.
                return Err(JobError::Unsupported {
                    at: at.clone(),
                    option: other.to_string(),
                });
            }
        }
        self.set_at.insert(def.name, set_here);
        Ok(())
    }
}

/// Whether a per-direction list names `direction` explicitly or by carrying over.
fn text_sets_direction(text: &str, direction: Direction) -> bool {
    let parts: Vec<&str> = text.split(',').collect();
    let index = match direction {
        Direction::Read => 0,
        Direction::Write => 1,
        Direction::Trim => 2,
    };
    match parts.get(index) {
        Some(part) => !part.trim().is_empty(),
        None => parts.last().is_some_and(|last| !last.trim().is_empty()),
    }
}

fn parse_count(text: &str, min: u64) -> Result<u32, ValueError> {
    value::parse_u64_in(text, min, u64::from(u32::MAX)).map(|count| count as u32)
}

fn parse_file_service(text: &str) -> Result<FileService, ValueError> {
    let (kind, count) = match text.split_once(':') {
        Some((kind, count)) => (kind, Some(count)),
        None => (text, None),
    };
    let kind = match kind {
        "roundrobin" => FileServiceKind::RoundRobin,
        "sequential" => FileServiceKind::Sequential,
        "random" => FileServiceKind::Random,
        "zipf" | "pareto" | "normal" | "gauss" => {
            return Err(ValueError::new(format!(
                "file_service_type={kind} is not supported (roundrobin, sequential, random)"
            )))
        }
        _ => return Err(ValueError::new("expected roundrobin, sequential or random")),
    };
    let switch_after_ios = match count {
        None => 1,
        Some(count) => parse_count(count, 1)?,
    };
    Ok(FileService {
        kind,
        switch_after_ios,
    })
}

fn parse_engine(text: &str) -> Result<Engine, ValueError> {
    match text {
        "iscsi" | "libiscsi" => Ok(Engine::Iscsi),
        "io_uring" => Ok(Engine::IoUring),
        "null" => Ok(Engine::Null),
        "psync" | "sync" | "vsync" | "pvsync" | "pvsync2" | "libaio" | "posixaio" | "mmap"
        | "sg" | "io_uring_cmd" | "splice" | "net" | "netsplice" | "rbd" | "rados" | "nbd"
        | "rdma" | "falloc" | "cpuio" | "dev-dax" | "libpmem" | "http" | "nfs" | "spdk"
        | "windowsaio" | "solarisaio" | "exec" | "filecreate" | "filestat" | "filedelete" => {
            Err(ValueError::new(format!(
                "fio's {text} engine is not supported by iscsi-bench \
                 (iscsi, libiscsi, io_uring, null; io_uring replaces the local-file engines)"
            )))
        }
        _ => Err(ValueError::new(
            "unknown engine (iscsi, libiscsi, io_uring, null)",
        )),
    }
}

fn parse_digest(text: &str) -> Result<DigestChoice, ValueError> {
    match text.to_ascii_lowercase().as_str() {
        "none" => Ok(DigestChoice::None),
        "crc32c" => Ok(DigestChoice::Crc32c),
        _ => Err(ValueError::new("expected none or crc32c")),
    }
}

/// iSCSI length keys: 512 to 2^24-1 bytes (RFC 7143 13.12-13.14).
fn parse_iscsi_length(text: &str, kb_base: u32) -> Result<u32, ValueError> {
    let len = value::parse_size(text, kb_base)?;
    if !(512..=0xFF_FFFF).contains(&len) {
        return Err(ValueError::new(
            "must be between 512 and 16777215 bytes (RFC 7143)",
        ));
    }
    Ok(len as u32)
}

/// `--cmdhelp` text for one option, or for `all`.
pub fn cmdhelp(name: &str) -> Result<String, JobError> {
    if name == "all" {
        let mut out = String::new();
        for def in OPTIONS {
            let mark = if def.ours { " [iscsi-bench]" } else { "" };
            out.push_str(&format!("{:<30}: {}{mark}\n", def.name, def.help));
        }
        return Ok(out);
    }
    let at = Origin::Builtin;
    let def = lookup(name).ok_or_else(|| unknown_option(name, &at))?;
    let mut out = format!("{:>20}: {}\n", def.name, def.help);
    if !def.aliases.is_empty() {
        out.push_str(&format!("{:>20}: {}\n", "alias", def.aliases.join(", ")));
    }
    let kind = match def.kind {
        ValueKind::Flag => "empty or boolean value",
        ValueKind::Required => "value required",
        ValueKind::Optional => "empty or a value",
    };
    out.push_str(&format!("{:>20}: {} ({kind})\n", "type", def.syntax));
    out.push_str(&format!("{:>20}: {}\n", "default", def.default));
    if def.ours {
        out.push_str(&format!(
            "{:>20}: iscsi-bench's own option (not in fio)\n",
            "note"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(scope: &mut Scope, key: &str, value: Option<&str>) -> Result<(), JobError> {
        scope.apply(key, value, &Origin::CommandLine { arg_index: 1 })
    }

    #[test]
    fn every_table_entry_is_handled() {
        // Each option in the table must reach its own arm, never the fallback.
        for def in OPTIONS {
            let mut scope = Scope::new(JobSpec::new("t"));
            let sample = match def.kind {
                ValueKind::Flag => None,
                ValueKind::Optional => None,
                ValueKind::Required => Some(sample_value(def.name)),
            };
            if let Err(JobError::Unsupported { option, .. }) = apply(&mut scope, def.name, sample) {
                panic!("{option} falls through");
            }
        }
    }

    fn sample_value(name: &str) -> &'static str {
        match name {
            "filename" => "/tmp/x",
            "ioengine" => "null",
            "kb_base" => "1024",
            "rw" => "randrw",
            "random_distribution" => "zipf:1.2",
            "verify" => "md5",
            "verify_pattern" => "0xff",
            "rate_process" => "poisson",
            "header_digest" | "data_digest" => "crc32c",
            "transport" => "software",
            "percentile_list" => "50:99",
            "cpus_allowed" => "0",
            "bssplit" => "4k/100",
            "max_burst_length" | "first_burst_length" | "max_recv_data_segment_length" => "8k",
            _ => "8",
        }
    }

    #[test]
    fn no_name_is_both_supported_and_unsupported() {
        for name in all_names() {
            assert!(!UNSUPPORTED.contains(&name), "{name} is in both lists");
        }
    }

    #[test]
    fn unknown_options_suggest_the_nearest() {
        let error = unknown_option("iodpeth", &Origin::Builtin);
        assert!(
            matches!(&error, JobError::UnknownOption { suggestion: Suggestion(Some(s)), .. } if s == "iodepth"),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("did you mean \"iodepth\""),
            "{error}"
        );
        let far = unknown_option("completely_unrelated", &Origin::Builtin);
        assert!(matches!(
            far,
            JobError::UnknownOption {
                suggestion: Suggestion(None),
                ..
            }
        ));
        let fsync = unknown_option("fsync", &Origin::Builtin);
        assert!(matches!(fsync, JobError::Unsupported { .. }));
        assert!(fsync.to_string().contains("does not support"), "{fsync}");
    }

    #[test]
    fn aliases_reach_the_same_field() {
        let mut scope = Scope::new(JobSpec::new("t"));
        apply(&mut scope, "readwrite", Some("randwrite")).unwrap();
        apply(&mut scope, "io_limit", Some("1m")).unwrap();
        apply(&mut scope, "ba", Some("8k")).unwrap();
        apply(&mut scope, "iodepth_batch", Some("4")).unwrap();
        apply(&mut scope, "wait_for_previous", None).unwrap();
        apply(&mut scope, "initiator", Some("iqn.x")).unwrap();
        apply(&mut scope, "timeout", Some("3")).unwrap();
        apply(&mut scope, "ioengine", Some("libiscsi")).unwrap();
        let spec = &scope.spec;
        assert_eq!(spec.rw.kind, super::super::spec::RwKind::RandWrite);
        assert_eq!(spec.io_size, Some(SizeSpec::Bytes(1 << 20)));
        assert_eq!(spec.block_align, PerDir::splat(Some(8192)));
        assert_eq!(spec.iodepth_batch_submit, 4);
        assert!(spec.stonewall);
        assert_eq!(spec.iscsi.initiator_name.as_deref(), Some("iqn.x"));
        assert_eq!(spec.runtime, Some(Duration::from_secs(3)));
        assert_eq!(spec.ioengine, Some(Engine::Iscsi));
    }

    #[test]
    fn values_and_flags() {
        let mut scope = Scope::new(JobSpec::new("t"));
        assert!(matches!(
            apply(&mut scope, "bs", None),
            Err(JobError::MissingValue { .. })
        ));
        assert!(matches!(
            apply(&mut scope, "bs", Some(" ")),
            Err(JobError::MissingValue { .. })
        ));
        assert!(matches!(
            apply(&mut scope, "bs", Some("0")),
            Err(JobError::BadValue { .. })
        ));
        assert!(matches!(
            apply(&mut scope, "size", Some("0")),
            Err(JobError::ZeroSize { .. })
        ));
        assert!(matches!(
            apply(&mut scope, "iodepth", Some("0")),
            Err(JobError::BadValue { .. })
        ));
        assert!(matches!(
            apply(&mut scope, "time_based", Some("maybe")),
            Err(JobError::BadValue { .. })
        ));
        assert!(matches!(
            apply(&mut scope, "ioengine", Some("libaio")),
            Err(JobError::BadValue { .. })
        ));
        assert!(matches!(
            apply(&mut scope, "thread", Some("0")),
            Err(JobError::BadValue { .. })
        ));
        apply(&mut scope, "time_based", None).unwrap();
        assert!(scope.spec.time_based);
        apply(&mut scope, "time_based", Some("0")).unwrap();
        assert!(!scope.spec.time_based);
        apply(&mut scope, "buffered", Some("0")).unwrap();
        assert!(scope.spec.direct);
        apply(&mut scope, "rwmixwrite", Some("30")).unwrap();
        assert_eq!(scope.spec.rwmixread, 70);
        apply(&mut scope, "rate", Some("10m,5m")).unwrap();
        assert_eq!(
            scope.spec.rate,
            PerDir {
                read: Some(10 << 20),
                write: Some(5 << 20),
                trim: Some(5 << 20)
            }
        );
        apply(&mut scope, "rate", Some("0,,")).unwrap();
        assert_eq!(scope.spec.rate.read, None);
        apply(&mut scope, "write_lat_log", None).unwrap();
        assert_eq!(scope.spec.write_lat_log, Some(LogName::JobName));
        apply(&mut scope, "write_bw_log", Some("run1")).unwrap();
        assert_eq!(
            scope.spec.write_bw_log,
            Some(LogName::Prefix("run1".into()))
        );
        apply(&mut scope, "verify_pattern", Some("0xab")).unwrap();
        assert_eq!(scope.spec.verify, VerifyKind::Pattern);
        apply(&mut scope, "kb_base", Some("1000")).unwrap();
        apply(&mut scope, "bs", Some("4k")).unwrap();
        assert_eq!(scope.spec.block_size.read, BlockSize::Fixed(4000));
        assert!(matches!(
            apply(&mut scope, "max_burst_length", Some("100")),
            Err(JobError::BadValue { .. })
        ));
    }

    #[test]
    fn conflicts_within_one_section() {
        let mut scope = Scope::new(JobSpec::new("t"));
        apply(&mut scope, "rwmixread", Some("70")).unwrap();
        let error = apply(&mut scope, "rwmixwrite", Some("50")).unwrap_err();
        assert!(matches!(error, JobError::Conflict { .. }), "{error:?}");
        assert!(error.to_string().contains("rwmixread"), "{error}");
        // Consistent values are fine.
        apply(&mut scope, "rwmixwrite", Some("30")).unwrap();

        let mut scope = Scope::new(JobSpec::new("t"));
        apply(&mut scope, "bsrange", Some("4k-8k")).unwrap();
        let error = apply(&mut scope, "bssplit", Some("4k/50:8k/50")).unwrap_err();
        assert!(
            error.to_string().contains("bsrange") && error.to_string().contains("bssplit"),
            "{error}"
        );

        // Different directions do not conflict; a later section overrides an earlier one.
        let mut scope = Scope::new(JobSpec::new("t"));
        apply(&mut scope, "bsrange", Some("4k-8k,,")).unwrap();
        apply(&mut scope, "bssplit", Some(",4k/50:8k/50,")).unwrap();
        scope.section += 1;
        apply(&mut scope, "bs", Some("16k")).unwrap();
        assert_eq!(
            scope.spec.block_size,
            PerDir::splat(BlockSize::Fixed(16384))
        );
    }

    #[test]
    fn cmdhelp_text() {
        let text = cmdhelp("rw").unwrap();
        assert!(
            text.contains("readwrite") && text.contains("read"),
            "{text}"
        );
        assert!(cmdhelp("all").unwrap().contains("header_digest"));
        assert!(matches!(
            cmdhelp("fsync"),
            Err(JobError::Unsupported { .. })
        ));
        assert!(matches!(
            cmdhelp("bsx"),
            Err(JobError::UnknownOption { .. })
        ));
    }

    #[test]
    fn error_handling_and_recovery_options() {
        let mut scope = Scope::new(JobSpec::new("t"));
        apply(&mut scope, "continue_on_error", Some("io")).unwrap();
        apply(&mut scope, "ignore_error", Some("EIO:ETIMEDOUT,110")).unwrap();
        apply(&mut scope, "reconnect_max", Some("3")).unwrap();
        apply(&mut scope, "replacement_timeout", Some("5")).unwrap();
        let spec = &scope.spec;
        assert_eq!(spec.error_policy.continue_on, [true, true, false]);
        assert_eq!(spec.error_policy.ignore[1], Some(vec![110]));
        assert_eq!(spec.iscsi.reconnect_max, Some(3));
        assert_eq!(spec.iscsi.replacement_timeout, Some(Duration::from_secs(5)));
        for (option, bad) in [
            ("continue_on_error", "sometimes"),
            ("ignore_error", "ENOPE"),
            ("reconnect_max", "-1"),
            ("replacement_timeout", "0"),
        ] {
            let error = apply(&mut scope, option, Some(bad))
                .unwrap_err()
                .to_string();
            assert!(error.contains(option), "{option}={bad}: {error}");
        }
    }
}
