//! The job options iscsi-bench knows: fio's names, aliases and meanings (fio 3.33
//! `--cmdhelp`), iscsi-bench's own iSCSI options, and the fio options it refuses.
//!
//! One row per option, as fio's `options.c` has one `struct fio_option` per option: the row
//! names the option once, with its aliases, value kind, category and help, and carries the
//! two functions that read a value into a [`JobSpec`] and write it back. Parsing
//! ([`Scope::apply`]), rendering ([`super::render`]), `--cmdhelp`, the nearest-name
//! suggestion and the engine checks of [`super::build`] all walk [`OPTIONS`]; its order is
//! the order of `--cmdhelp=all` and of rendered job files.

use std::collections::BTreeMap;
use std::time::Duration;

use super::error::{JobError, Origin, Suggestion, ValueError, Why};
use super::error_policy::ErrorPolicy;
use super::file_options::{FadviseHint, SyncFileRange};
use super::render::{self, changed, changed_flag};
use super::spec;
use super::spec::{
    BlockSize, ChapCredentials, ClockSource, CpusAllowedPolicy, DigestChoice, Engine, ExitWhat,
    Fallocate, FileService, FileServiceKind, IscsiOptions, JobSpec, LogName, LogWindowValue,
    PathList, PerDir, RateProcess, ReplaySkip, RwSequencer, SizeSpec, SteadyStateMetric,
    SteadyStateSpec, SyncCall, SyncMode, ThinkTimeBlocksType, TransportKind, UnitBase, VerifyKind,
    ZoneMode, ZoneSkip,
};
use super::value::{self, TimeUnit};
use crate::io::Direction;
use crate::output::UnifiedRw;

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

/// What an option is about (fio's option categories, cut to iscsi-bench's options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Naming and units of the job.
    Job,
    /// What the job does I/O to, and through which engine.
    Target,
    /// Options of the io_uring engine only.
    IoUring,
    /// The part of the target the job works on, and how much it does.
    Region,
    /// Directions, block sizes and offsets.
    Pattern,
    /// I/Os in flight, batching and clones.
    Depth,
    /// How long the job runs.
    Time,
    /// Pacing and rate floors.
    Rate,
    Verify,
    /// What writes carry.
    Buffers,
    /// Reporting groups, percentiles and log files.
    Reporting,
    /// Options of the iSCSI engine only (login keys, CHAP, transport, shards).
    Iscsi,
    /// Timeouts, reconnection and which errors a job survives.
    Errors,
}

/// Reads one value into the spec (through [`Setting`]).
pub type ApplyFn = fn(&mut Setting<'_>) -> Result<(), JobError>;
/// Writes the spec's value back in a form [`ApplyFn`] reads to the same value, or `None`
/// where the spec has the default (the second argument). An empty string is a bare option.
pub type RenderFn = fn(&JobSpec, &JobSpec) -> Option<String>;

/// One option of the table.
#[derive(Debug)]
pub struct OptionDef {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub kind: ValueKind,
    pub category: Category,
    /// The value's form, for `--cmdhelp`.
    pub syntax: &'static str,
    pub default: &'static str,
    pub help: &'static str,
    /// iscsi-bench's own option (fio has no such option).
    pub ours: bool,
    pub apply: ApplyFn,
    pub render: RenderFn,
}

impl OptionDef {
    /// The value `spec` gives this option where it differs from the defaults.
    pub fn rendered(&self, spec: &JobSpec) -> Option<String> {
        (self.render)(spec, &JobSpec::new(spec.name.clone()))
    }
}

/// One row of [`OPTIONS`]. `apply |s| expr` runs with `s: &mut Setting`; `render |spec, base|
/// expr` gives `Option<String>`, with `base` the default spec.
macro_rules! opt {
    (ours $($row:tt)*) => {
        OptionDef { ours: true, ..opt!($($row)*) }
    };
    // A boolean field of the spec.
    ($name:literal $([$($alias:literal),*])?, $kind:ident, $category:ident, $syntax:literal,
     default $default:literal, $help:literal, flag $($field:ident).+ $(,)?) => {
        opt!($name $([$($alias),*])?, $kind, $category, $syntax, default $default, $help,
            apply |s| s.spec().$($field).+ = s.flag()?,
            render |spec, base| changed_flag(spec.$($field).+, base.$($field).+))
    };
    // A count field of the spec, at least `min`.
    ($name:literal $([$($alias:literal),*])?, $kind:ident, $category:ident, $syntax:literal,
     default $default:literal, $help:literal, count($min:literal) $($field:ident).+ $(,)?) => {
        opt!($name $([$($alias),*])?, $kind, $category, $syntax, default $default, $help,
            apply |s| s.spec().$($field).+ = s.count($min)?,
            render |spec, base| changed(spec.$($field).+, base.$($field).+))
    };
    ($name:literal $([$($alias:literal),*])?, $kind:ident, $category:ident, $syntax:literal,
     default $default:literal, $help:literal,
     apply |$s:ident| $apply:expr,
     render |$spec:ident, $base:ident| $render:expr $(,)?) => {
        OptionDef {
            name: $name,
            aliases: &[$($($alias),*)?],
            kind: ValueKind::$kind,
            category: Category::$category,
            syntax: $syntax,
            default: $default,
            help: $help,
            ours: false,
            apply: |$s: &mut Setting<'_>| -> Result<(), JobError> {
                $apply;
                Ok(())
            },
            render: |$spec: &JobSpec, $base: &JobSpec| -> Option<String> { $render },
        }
    };
}

/// fio's `mem` values other than malloc.
const MEM_TYPES_FIO: &[&str] = &[
    "shm",
    "shmhuge",
    "mmap",
    "mmaphuge",
    "mmapshared",
    "cudamalloc",
];

/// Every job option iscsi-bench accepts.
#[rustfmt::skip]
pub static OPTIONS: &[OptionDef] = &[
    // kb_base first: rendered, it changes how the sizes after it read (sizes are written in
    // bytes anyway).
    opt!("kb_base", Required, Job, "1024|1000", default "1024", "How k/KiB in values are read",
        apply |s| s.spec().kb_base = match s.text() {
            "1024" => 1024,
            "1000" => 1000,
            _ => return s.fail("kb_base is 1024 or 1000"),
        },
        render |spec, base| changed(spec.kb_base, base.kb_base)),
    opt!("name", Required, Job, "str", default "section name",
        "Name of this job (on the command line, starts a new job)",
        apply |s| s.spec().name = s.text().to_string(),
        render |_spec, _base| None),
    opt!("description", Required, Job, "str", default "none", "Text description of the job",
        apply |s| s.spec().description = Some(s.text().to_string()),
        render |spec, _base| spec.description.clone()),
    opt!("filename", Required, Target, "iscsi://[user[%pass]@]host[:port]/iqn/lun | path | null",
        default "embedded target", "What the job does I/O to",
        apply |s| {
            let mut targets = s.parse(value::parse_targets)?.into_iter();
            s.spec().filename = targets.next();
            s.spec().more_filenames = targets.collect();
        },
        render |spec, _base| render::filenames(spec)),
    opt!("directory", Required, Target, "path", default "the current directory",
        "Where relative file names and the files of jobs without one are",
        apply |s| s.spec().directory = Some(std::path::PathBuf::from(s.text())),
        render |spec, _base| spec.directory.as_ref().map(|d| d.display().to_string())),
    opt!("filename_format", Required, Target, "str", default "$jobname.$jobnum.$filenum",
        "Name of the file a local job without filename makes ($jobname, $jobnum, $filenum, \
         $clientuid)",
        apply |s| s.spec().filename_format = Some(s.text().to_string()),
        render |spec, _base| spec.filename_format.clone()),
    opt!("nrfiles" ["nr_files"], Required, Target, "int", default "1",
        "Files a local job without filename makes (named by filename_format), its size \
         divided between them",
        count(1) nrfiles),
    opt!("openfiles", Required, Target, "int", default "nrfiles",
        "How many of the job's files the I/O goes to at once (0: all); a file done makes \
         room for the next. The io_uring engine keeps every file open all the same",
        count(0) openfiles),
    opt!("file_service_type", Required, Target, "roundrobin|sequential|random[:N]",
        default "roundrobin",
        "Which file of a filename list the next I/O goes to (N I/Os per choice)",
        apply |s| s.spec().file_service = s.parse(parse_file_service)?,
        render |spec, base| (spec.file_service != base.file_service)
            .then(|| render::file_service(&spec.file_service))),
    opt!("ioengine", Required, Target, "iscsi|libiscsi|io_uring|libaio|posixaio|psync|sync|pvsync|pvsync2|null", default "from filename",
        "I/O engine",
        apply |s| {
            let (engine, sync_call) = s.parse(parse_engine)?;
            let spec = s.spec();
            spec.ioengine = Some(engine);
            spec.sync_call = sync_call;
        },
        render |spec, _base| spec.ioengine.map(|_| spec.engine_name().to_string())),
    opt!("direct", Flag, Target, "bool", default "0", "Use O_DIRECT on local files and devices",
        flag direct),
    opt!("buffered", Flag, Target, "bool", default "1", "Use buffered I/O (the opposite of direct)",
        apply |s| s.spec().direct = !s.flag()?,
        render |_spec, _base| None),
    opt!("thread", Flag, Job, "bool", default "1", "Run jobs as threads (iscsi-bench always does)",
        apply |s| if !s.flag()? {
            return s.fail(
                "iscsi-bench always runs jobs as threads; thread=0 (processes) is not supported",
            );
        },
        render |_spec, _base| None),
    // fio's zonemode=zbd drives zoned block devices (ZBC/ZNS: write pointers, zone resets,
    // open-zone limits), which no LUN here is: refused by name. Strided zones are plain
    // offsets on any target.
    opt!("zonemode", Required, Region, "none|strided", default "none",
        "none: the target is not zoned; strided: I/O is held to one zone (zonerange bytes) \
         until zonesize bytes were issued there, then moves zonerange+zoneskip on (a job with \
         several files runs without zones, as in fio; zbd, zoned block devices, is refused)",
        apply |s| s.spec().zonemode = match s.text() {
            "none" => ZoneMode::None,
            "strided" => ZoneMode::Strided,
            "zbd" => return s.fail(
                "zonemode=zbd is fio's zoned block device mode (write pointers, zone resets); \
                 iscsi-bench does not drive zoned block devices (zonemode=none or strided)",
            ),
            _ => return s.fail("expected none or strided"),
        },
        render |spec, base| (spec.zonemode != base.zonemode).then(|| match spec.zonemode {
            ZoneMode::None => "none".to_string(),
            ZoneMode::Strided => "strided".to_string(),
        })),
    opt!("zonesize", Required, Region, "int", default "0",
        "zonemode=strided: bytes of I/O in a zone before the next (needs zonemode=strided)",
        apply |s| s.spec().zonesize = s.parse_kb(value::parse_size)?,
        render |spec, base| changed(spec.zonesize, base.zonesize)),
    opt!("zonerange", Required, Region, "int", default "zonesize",
        "zonemode=strided: the length of a zone (a zonesize above it visits the zone again)",
        apply |s| s.spec().zonerange = s.parse_kb(value::parse_size)?,
        render |spec, base| changed(spec.zonerange, base.zonerange)),
    opt!("zoneskip", Required, Region, "int|Nz", default "0",
        "zonemode=strided: bytes (or Nz: zones of zonesize) skipped after each zone",
        apply |s| s.spec().zoneskip = s.parse_kb(value::parse_zone_skip)?,
        render |spec, base| (spec.zoneskip != base.zoneskip).then(|| match spec.zoneskip {
            ZoneSkip::Bytes(bytes) => bytes.to_string(),
            ZoneSkip::Zones(zones) => format!("{zones}z"),
        })),
    // fio registers the options of its built-in tiobench profile as job options, so it
    // takes `threads=` in any job and reads it only under `profile=tiobench` (which
    // iscsi-bench does not run): accepted and without effect here as there.
    opt!("threads", Required, Job, "int", default "none",
        "tiobench profile's thread count (no effect without fio's profile=tiobench)",
        apply |s| { s.parse(value::parse_u64)?; },
        render |_spec, _base| None),
    opt!("fixedbufs", Flag, IoUring, "bool", default "0", "io_uring: register the I/O buffers",
        flag fixedbufs),
    opt!("registerfiles", Flag, IoUring, "bool", default "0", "io_uring: register the file",
        flag registerfiles),
    opt!("sqthread_poll", Flag, IoUring, "bool", default "0",
        "io_uring: a kernel thread polls the submission queue", flag sqthread_poll),
    opt!("sqthread_poll_cpu", Required, IoUring, "int", default "none",
        "io_uring: the CPU the sqthread_poll thread runs on (IORING_SETUP_SQ_AFF; nothing \
         without sqthread_poll)",
        // Checked by the kernel when the ring is made, as in fio (and ignored, as there,
        // without sqthread_poll).
        apply |s| s.spec().sqthread_poll_cpu =
            Some(s.parse(|text| value::parse_u64_in(text, 0, u64::from(u32::MAX)))? as u32),
        render |spec, _base| spec.sqthread_poll_cpu.map(|cpu| cpu.to_string())),
    opt!("nonvectored", Required, IoUring, "int", default "-1",
        "io_uring: 0 issues READV/WRITEV, any other value READ/WRITE (-1: READ/WRITE where \
         the kernel has them)",
        apply |s| s.spec().nonvectored = s.parse(|text| {
            value::parse_i64_in(text, i64::from(i32::MIN), i64::from(i32::MAX))
        })?,
        render |spec, base| changed(spec.nonvectored, base.nonvectored)),
    opt!("uncached", Required, IoUring, "int", default "0",
        "io_uring: non-zero sets RWF_DONTCACHE on buffered reads and writes (their pages \
         leave the page cache; Linux 6.14)",
        apply |s| s.spec().uncached = s.parse(value::parse_u64)?,
        render |spec, base| changed(spec.uncached, base.uncached)),
    opt!("nowait", Flag, IoUring, "bool", default "0",
        "io_uring: RWF_NOWAIT on reads and writes (one that would block fails with EAGAIN; \
         see ignore_error)",
        flag nowait),
    opt!("force_async", Required, IoUring, "int", default "0",
        "io_uring: IOSQE_ASYNC on every Nth request (0: never)",
        apply |s| s.spec().force_async = s.parse(value::parse_u64)?,
        render |spec, base| changed(spec.force_async, base.force_async)),
    opt!("cmdprio_percentage", Required, IoUring, "int[,int] (0..100)", default "0",
        "io_uring: share of reads[,writes] issued with the cmdprio_class/cmdprio/cmdprio_hint \
         priority",
        apply |s| s.spec().cmdprio.percentage = s.parse(|text| {
            value::parse_per_dir(text, &s.scope.spec.cmdprio.percentage, |part| {
                Ok(value::parse_u64_in(part, 0, 100)? as u32)
            })
        })?,
        render |spec, base| (spec.cmdprio.percentage != base.cmdprio.percentage)
            .then(|| render::per_dir(&spec.cmdprio.percentage, |p| Some(p.to_string())))),
    opt!("cmdprio_class", Required, IoUring, "int[,int] (1..3)", default "1 (realtime)",
        "io_uring: the priority class of cmdprio_percentage's I/Os: 1 realtime, 2 best effort, \
         3 idle",
        apply |s| s.spec().cmdprio.class = s.parse(|text| {
            value::parse_per_dir(text, &s.scope.spec.cmdprio.class, |part| {
                Ok(value::parse_u64_in(part, 1, 3)? as u32)
            })
        })?,
        render |spec, base| (spec.cmdprio.class != base.cmdprio.class)
            .then(|| render::per_dir(&spec.cmdprio.class, |p| Some(p.to_string())))),
    opt!("cmdprio", Required, IoUring, "int[,int] (0..7)", default "0",
        "io_uring: the priority level of cmdprio_percentage's I/Os (0 highest)",
        apply |s| s.spec().cmdprio.level = s.parse(|text| {
            value::parse_per_dir(text, &s.scope.spec.cmdprio.level, |part| {
                Ok(value::parse_u64_in(part, 0, 7)? as u32)
            })
        })?,
        render |spec, base| (spec.cmdprio.level != base.cmdprio.level)
            .then(|| render::per_dir(&spec.cmdprio.level, |p| Some(p.to_string())))),
    opt!("cmdprio_hint", Required, IoUring, "int[,int] (0..1023)", default "0",
        "io_uring: the priority hint of cmdprio_percentage's I/Os (0: none)",
        apply |s| s.spec().cmdprio.hint = s.parse(|text| {
            value::parse_per_dir(text, &s.scope.spec.cmdprio.hint, |part| {
                Ok(value::parse_u64_in(part, 0, 1023)? as u32)
            })
        })?,
        render |spec, base| (spec.cmdprio.hint != base.cmdprio.hint)
            .then(|| render::per_dir(&spec.cmdprio.hint, |p| Some(p.to_string())))),
    opt!("cmdprio_bssplit", Required, IoUring, "str[,str]", default "none",
        "io_uring: per I/O length, the share of reads[,writes] issued with a priority: \
         bs/perc[/class/level[/hint]] entries joined by ':' (not with cmdprio_percentage)",
        apply |s| {
            let kb_base = s.kb_base();
            let split = s.parse(|text| {
                crate::run::priority::parse_cmdprio_bssplit(text, |bs| {
                    value::parse_size(bs, kb_base).map_err(|e| e.0)
                })
                .map_err(ValueError::new)
            })?;
            s.spec().cmdprio.bssplit = Some(split);
        },
        render |spec, _base| spec.cmdprio.bssplit.as_ref()
            .map(crate::run::priority::render_cmdprio_bssplit)),
    opt!("hipri", Flag, Target, "bool", default "0",
        "Poll for completions instead of sleeping: the io_uring engine's ring is IOPOLL (only \
         devices with poll queues take polled I/O; elsewhere each I/O fails with EOPNOTSUPP, \
         as in fio); the iscsi engine's shard spins on its ring for the answers of one or two \
         commands in flight (CPU for latency)",
        flag hipri),
    opt!("size", Required, Region, "int[%]", default "whole target",
        "Size of the region of the target the job works on",
        apply |s| s.spec().size = Some(s.nonzero_size(
            "size=0 leaves nothing to do (leave size out to use the whole target)",
        )?),
        render |spec, _base| spec.size.map(render::size)),
    opt!("filesize", Required, Region, "irange", default "size",
        "The size each file is taken to have (a range: drawn per file); the region reaches \
         to it, a regular file is laid out to it, and size= becomes the amount of I/O",
        apply |s| {
            let range = s.parse_kb(|text, kb_base| {
                value::parse_range(text, |part| value::parse_size(part, kb_base))
            })?;
            if range.min == 0 {
                return s.fail("filesize must be at least 1 byte (as in fio)");
            }
            s.spec().filesize = Some(range);
        },
        render |spec, _base| spec.filesize.map(|range| if range.min == range.max {
            range.min.to_string()
        } else {
            format!("{}-{}", range.min, range.max)
        })),
    opt!("offset" ["fileoffset"], Required, Region, "int[%]", default "0", "Start of the region",
        apply |s| s.spec().offset = s.parse_kb(value::parse_size_or_percent)?,
        render |spec, base| (spec.offset != base.offset).then(|| render::size(spec.offset))),
    // fio's HOWTO: 0 means the minimum block size (fio 3.42 itself dies of a division by
    // zero when 0 is given with a percentage offset).
    opt!("offset_align", Required, Region, "int", default "0",
        "A percentage offset is aligned up to this (0: the minimum block size)",
        apply |s| s.spec().offset_align = s.parse_kb(value::parse_size)?,
        render |spec, base| changed(spec.offset_align, base.offset_align)),
    opt!("bs_unaligned" ["blocksize_unaligned"], Flag, Pattern, "bool", default "0",
        "bsrange gives any length in the range, not only multiples of its minimum",
        flag bs_unaligned),
    opt!("serialize_overlap", Flag, Depth, "bool", default "0",
        "An I/O that overlaps one in flight waits for it to complete",
        flag serialize_overlap),
    opt!("offset_increment", Required, Region, "int[%]", default "0",
        "Extra offset per numjobs clone",
        apply |s| s.spec().offset_increment = Some(s.parse_kb(value::parse_size_or_percent)?),
        render |spec, _base| spec.offset_increment.map(render::size)),
    // fio: with no size, write until the device or file system is full (ENOSPC ends the
    // job without error). A LUN, a block device and the null target end where they end, and
    // a job without size already covers them whole; growing a regular file until its file
    // system is full is refused (give size=).
    opt!("fill_device" ["fill_fs"], Flag, Region, "bool", default "0",
        "Write to the end of the target (a LUN or device: its whole length from offset)",
        flag fill_device),
    opt!("io_size" ["io_limit"], Required, Region, "int[%]", default "size",
        "Bytes of I/O to do (% of size)",
        apply |s| s.spec().io_size = Some(s.nonzero_size("io_size=0 leaves nothing to do")?),
        render |spec, _base| spec.io_size.map(render::size)),
    opt!("number_ios", Required, Region, "int", default "0 (no limit)", "Stop after this many I/Os",
        apply |s| s.spec().number_ios = Some(s.parse(value::parse_u64)?).filter(|&n| n > 0),
        render |spec, _base| spec.number_ios.map(|count| count.to_string())),
    opt!("loops", Required, Region, "int", default "1", "Repeat the workload this many times",
        count(1) loops),
    opt!("rw" ["readwrite"], Required, Pattern,
        "read|write|trim|randread|randwrite|randtrim|rw|readwrite|randrw[:nr]|copy",
        default "read",
        "I/O pattern; copy: copy the region to copy_dest (copy_method=xcopy|host)",
        apply |s| if s.text() == "copy" {
            s.spec().rw_copy = true;
        } else {
            s.spec().rw_copy = false;
            s.spec().rw = s.parse_kb(value::parse_rw)?;
        },
        render |spec, base| if spec.rw_copy {
            Some("copy".to_string())
        } else {
            (spec.rw != base.rw).then(|| render::rw(&spec.rw))
        }),
    opt!(ours "copy_method", Required, Pattern, "xcopy|host", default "xcopy",
        "How an rw=copy job copies: EXTENDED COPY (the target moves the data) or READ+WRITE through this host",
        apply |s| {
            let method = match s.text() {
                "xcopy" => super::spec::CopyMethod::Xcopy,
                "host" => super::spec::CopyMethod::Host,
                _ => return s.fail("expected xcopy or host"),
            };
            s.spec().copy_method = Some(method);
        },
        render |spec, base| (spec.copy_method != base.copy_method)
            .then(|| spec.copy_method.unwrap_or_default().name().to_string())),
    opt!(ours "copy_dest", Required, Pattern, "int", default "offset+size",
        "Where an rw=copy job writes its copy (bytes into the same LUN)",
        apply |s| s.spec().copy_dest_bytes = Some(s.parse_kb(value::parse_size)?),
        render |spec, _base| spec.copy_dest_bytes.map(|b| render::size(SizeSpec::Bytes(b)))),
    opt!("rwmixread", Required, Pattern, "int", default "50",
        "Percentage of reads in a mixed pattern",
        apply |s| s.rwmix(|percent| percent)?,
        render |spec, base| changed(spec.rwmixread, base.rwmixread)),
    opt!("rwmixwrite", Required, Pattern, "int", default "50",
        "Percentage of writes in a mixed pattern",
        apply |s| s.rwmix(|percent| 100 - percent)?,
        render |_spec, _base| None),
    opt!("bs" ["blocksize"], Required, Pattern, "int[,int][,int]", default "4096",
        "Block size (read,write,trim)",
        apply |s| s.block_size(|part, kb_base| {
            let len = value::parse_size(part, kb_base)?;
            if len == 0 {
                return Err(ValueError::new("a block size of 0"));
            }
            Ok(BlockSize::Fixed(len))
        })?,
        render |spec, base| render::block_sizes(spec, base, |bs| match bs {
            BlockSize::Fixed(len) => Some(len.to_string()),
            _ => None,
        })),
    opt!("bsrange" ["blocksize_range"], Required, Pattern, "irange[,irange][,irange]",
        default "none", "Block size range (read,write,trim)",
        apply |s| s.block_size(|part, kb_base| {
            let range = value::parse_range(part, |p| value::parse_size(p, kb_base))?;
            if range.min == 0 {
                return Err(ValueError::new("a block size of 0"));
            }
            Ok(BlockSize::Range(range))
        })?,
        render |spec, base| render::block_sizes(spec, base, |bs| match bs {
            BlockSize::Range(range) => Some(format!("{}-{}", range.min, range.max)),
            _ => None,
        })),
    opt!("bssplit", Required, Pattern, "size/pct:size/pct...[,...][,...]", default "none",
        "Weighted block sizes (read,write,trim)",
        apply |s| s.block_size(|part, kb_base| {
            value::parse_bssplit(part, kb_base).map(BlockSize::Split)
        })?,
        render |spec, base| render::block_sizes(spec, base, |bs| match bs {
            BlockSize::Split(entries) => Some(render::bssplit(entries)),
            _ => None,
        })),
    opt!("blockalign" ["ba"], Required, Pattern, "int[,int][,int]", default "block size",
        "Alignment of random offsets",
        apply |s| s.spec().block_align = s.parse_kb(|text, kb_base| {
            value::parse_per_dir(text, &s.scope.spec.block_align, |part| {
                let align = value::parse_size(part, kb_base)?;
                Ok((align > 0).then_some(align))
            })
        })?,
        render |spec, base| (spec.block_align != base.block_align).then(|| {
            render::per_dir(&spec.block_align, |align| Some(align.unwrap_or(0).to_string()))
        })),
    opt!("random_distribution", Required, Pattern,
        "random|zipf[:t[:c]]|pareto[:p[:c]]|normal[:d[:c]]|zoned:a/s%:...|zoned_abs:a/size:...",
        default "random",
        "Distribution of random offsets",
        apply |s| s.spec().random_distribution = s.parse_kb(value::parse_distribution)?,
        render |spec, base| (spec.random_distribution != base.random_distribution)
            .then(|| render::distribution(&spec.random_distribution))),
    opt!("random_sequence_stride", Flag, Pattern, "bool", default "0",
        "random_distribution=sequence: each round adds the list's length to its blocks",
        flag random_sequence_stride),
    opt!("rw_sequencer", Required, Pattern, "sequential|identical", default "sequential",
        "What the I/Os between two random offsets of rw=randread:N do",
        apply |s| s.spec().rw_sequencer = match s.text() {
            "sequential" => RwSequencer::Sequential,
            "identical" => RwSequencer::Identical,
            _ => return s.fail("expected sequential or identical"),
        },
        render |spec, base| (spec.rw_sequencer != base.rw_sequencer).then(|| {
            match spec.rw_sequencer {
                RwSequencer::Sequential => "sequential",
                RwSequencer::Identical => "identical",
            }
            .to_string()
        })),
    opt!("percentage_random", Required, Pattern, "int[,int][,int] (0..100)", default "100",
        "Share of a random pattern's offsets drawn at random; the rest continue sequentially",
        apply |s| s.spec().percentage_random = s.parse(|text| {
            value::parse_per_dir(text, &s.scope.spec.percentage_random, |part| {
                let percent = value::parse_u64(part)?;
                if percent > 100 {
                    return Err(ValueError::new("a percentage is 0 to 100"));
                }
                Ok(percent as u32)
            })
        })?,
        render |spec, base| (spec.percentage_random != base.percentage_random)
            .then(|| render::per_dir(&spec.percentage_random, |p| Some(p.to_string())))),
    // fio picks its generator by name; iscsi-bench has one (SplitMix64 over a keyed
    // permutation, which visits each block once per pass as fio's lfsr does), so the value
    // is checked and kept for rendering, and the offsets differ from fio's whichever is named.
    opt!("random_generator", Required, Pattern, "tausworthe|lfsr|tausworthe64",
        default "tausworthe",
        "fio's random generator (iscsi-bench has one generator: offsets differ from fio's)",
        apply |s| s.spec().random_generator = match s.text() {
            "tausworthe" | "lfsr" | "tausworthe64" => Some(s.text().to_string()),
            _ => return s.fail("expected tausworthe, lfsr or tausworthe64"),
        },
        render |spec, _base| spec.random_generator.clone()),
    opt!("randrepeat" ["allrandrepeat"], Flag, Pattern, "bool", default "1", "Same random sequence on every run",
        flag randrepeat),
    opt!("randseed", Required, Pattern, "int", default "none", "Seed of the random generators",
        apply |s| s.spec().randseed = Some(s.parse(value::parse_u64)?),
        render |spec, _base| spec.randseed.map(|seed| seed.to_string())),
    opt!("norandommap", Flag, Pattern, "bool", default "0",
        "Random offsets may repeat before all blocks are touched", flag norandommap),
    opt!("iodepth", Required, Depth, "int", default "1", "I/Os in flight", count(1) iodepth),
    // fio's offload hands each I/O to a worker thread that submits and reaps it; the I/Os
    // (offsets, sizes, depth) are the same as inline. iscsi-bench's iscsi engine already
    // submits from its shard threads; null and io_uring submit from the job thread in both
    // modes, so offload is taken and the value kept for rendering.
    opt!("fsync", Required, Target, "int", default "0",
        "Flush (fsync; SYNCHRONIZE CACHE on a LUN) after every this many writes",
        count(0) fsync),
    opt!("fdatasync", Required, Target, "int", default "0",
        "Flush the data (fdatasync; SYNCHRONIZE CACHE on a LUN) after every this many writes",
        count(0) fdatasync),
    opt!("sync_file_range", Required, Target, "wait_before,write,wait_after[:int]",
        default "none",
        "sync_file_range(2) of the range written, after every int writes (SYNCHRONIZE CACHE on a LUN)",
        apply |s| s.spec().sync_file_range = Some(match SyncFileRange::parse(s.text()) {
            Ok(sfr) => sfr,
            Err(why) => return s.fail(&why),
        }),
        render |spec, _base| spec.sync_file_range.map(|sfr| sfr.render())),
    opt!("end_fsync", Flag, Target, "bool", default "0",
        "Flush once the job's I/O is done", flag end_fsync),
    opt!("end_syncfs", Flag, Target, "bool", default "0",
        "Once a writing job's I/O is done, syncfs(2) each file system its files are on \
         (SYNCHRONIZE CACHE of the whole LUN on iSCSI, as end_fsync)",
        flag end_syncfs),
    opt!("num_range", Required, Target, "int (1..256)", default "1",
        "Ranges per trim (more than 1 needs an engine that trims several ranges at once, \
         as fio's io_uring_cmd; none here does)",
        apply |s| s.spec().num_range = s.parse(|text| value::parse_u64_in(text, 1, 256))? as u32,
        render |spec, base| changed(spec.num_range, base.num_range)),
    opt!("sync", Required, Target, "none|0|sync|1|dsync", default "none",
        "Durable writes: O_SYNC/O_DSYNC on a file (FUA on a LUN)",
        apply |s| s.spec().sync = match s.text() {
            "none" | "0" => SyncMode::None,
            "sync" | "1" => SyncMode::Sync,
            "dsync" => SyncMode::Dsync,
            _ => return s.fail("expected none, 0, sync, 1 or dsync"),
        },
        render |spec, base| (spec.sync != base.sync).then(|| {
            match spec.sync {
                SyncMode::None => "none",
                SyncMode::Sync => "sync",
                SyncMode::Dsync => "dsync",
            }
            .to_string()
        })),
    opt!("fallocate", Required, Target, "none|0|native|posix|1|keep|truncate", default "native",
        "How a file the job creates or extends is allocated (fallocate, posix_fallocate, ftruncate)",
        apply |s| s.spec().fallocate = match s.text() {
            "none" | "0" => Fallocate::None,
            "native" => Fallocate::Native,
            "posix" | "1" => Fallocate::Posix,
            "keep" => Fallocate::Keep,
            "truncate" => Fallocate::Truncate,
            _ => return s.fail("expected none, 0, native, posix, 1, keep or truncate"),
        },
        render |spec, base| (spec.fallocate != base.fallocate)
            .then(|| spec.fallocate.fio_name().to_string())),
    // fio's file options (see `file_options`): on the io_uring engine's files, with
    // fio's meaning; taken and without effect on a LUN, as fio's diskless libiscsi engine.
    opt!("invalidate", Flag, Target, "bool", default "1",
        "Drop the page cache of the job's range when the file is opened",
        flag files.invalidate),
    opt!("overwrite", Flag, Target, "bool", default "0",
        "A write job's file is written out first, so its writes overwrite allocated blocks",
        flag files.overwrite),
    opt!("pre_read", Flag, Target, "bool", default "0",
        "Read the job's range once before the job (turns invalidate off)",
        flag files.pre_read),
    opt!("fadvise_hint", Required, Target, "0|1|random|sequential|noreuse", default "1",
        "posix_fadvise advice over the job's range (1: random or sequential as the job is)",
        apply |s| s.spec().files.fadvise_hint = match FadviseHint::parse(s.text()) {
            Some(hint) => hint,
            None => return s.fail("expected 0, 1, random, sequential or noreuse"),
        },
        render |spec, base| (spec.files.fadvise_hint != base.files.fadvise_hint)
            .then(|| spec.files.fadvise_hint.fio_name().to_string())),
    opt!("fsync_on_close", Flag, Target, "bool", default "0",
        "A writing job flushes at its end and when it closes the file",
        flag files.fsync_on_close),
    opt!("unlink", Flag, Target, "bool", default "0",
        "Remove the (regular) file when the job is done", flag files.unlink),
    opt!("unlink_each_loop", Flag, Target, "bool", default "0",
        "With loops, remove the (regular) file after each loop; the next loop creates it \
         again (one file per job, io_uring engine)",
        flag files.unlink_each_loop),
    opt!("create_on_open", Flag, Target, "bool", default "0",
        "Create the file when the job opens it, not laid out first (jobs that only write)",
        flag files.create_on_open),
    opt!("file_append", Flag, Target, "bool", default "0",
        "A write job on an existing regular file starts at its end (jobs that only write)",
        flag files.file_append),
    opt!("create_only", Flag, Target, "bool", default "0",
        "Lay the file out and end the job without I/O", flag files.create_only),
    opt!("create_fsync", Flag, Target, "bool", default "1",
        "fsync a file once it is laid out", flag files.create_fsync),
    opt!("create_serialize", Flag, Target, "bool", default "1",
        "Lay files out one job after another (always so here: 0 is taken, no effect)",
        flag files.create_serialize),
    opt!("allow_file_create", Flag, Target, "bool", default "1",
        "A missing file may be created", flag files.allow_file_create),
    opt!("allow_mounted_write", Flag, Target, "bool", default "0",
        "A job may write to a mounted block device", flag files.allow_mounted_write),
    opt!("lockmem", Required, Buffers, "int", default "0",
        "Hold this much memory locked (mlock) while the job runs",
        apply |s| s.spec().files.lockmem_bytes = s.parse_kb(value::parse_size)?,
        render |spec, base| changed(spec.files.lockmem_bytes, base.files.lockmem_bytes)),
    // fio's other buffer types (shm, mmap, huge pages, GPU memory) are refused by value:
    // iscsi-bench's buffers are heap memory, page-aligned (`page_alloc`).
    opt!("mem" ["iomem"], Required, Buffers, "malloc", default "malloc",
        "How I/O buffers are allocated (malloc only)",
        apply |s| match s.text() {
            "malloc" => {}
            other if MEM_TYPES_FIO.contains(&other.split(':').next().unwrap_or(other)) => {
                return s.fail("iscsi-bench's I/O buffers are heap memory: only malloc (fio's \
                               default) is supported");
            }
            _ => return s.fail("expected malloc (fio also has shm, shmhuge, mmap, \
                                mmaphuge, mmapshared, cudamalloc)"),
        },
        render |_spec, _base| None),
    opt!("hugepage-size", Required, Buffers, "int", default "2m",
        "Huge page size for fio's huge page buffers (taken; no effect with mem=malloc)",
        apply |s| s.spec().files.hugepage_size_bytes = s.parse_kb(value::parse_size)?,
        render |spec, base| changed(spec.files.hugepage_size_bytes,
            base.files.hugepage_size_bytes)),
    opt!("exec_prerun", Required, Job, "str", default "none",
        "Shell command run before the job (output in <job>.prerun.txt)",
        apply |s| s.spec().files.exec_prerun = Some(s.text().to_string()),
        render |spec, _base| spec.files.exec_prerun.clone()),
    opt!("ioscheduler", Required, Target, "str", default "none",
        "Switch the disk under each local file to this I/O scheduler before the job",
        apply |s| s.spec().files.ioscheduler = Some(s.text().trim().to_string()),
        render |spec, _base| spec.files.ioscheduler.clone()),
    opt!("exec_postrun", Required, Job, "str", default "none",
        "Shell command run after the job (output in <job>.postrun.txt)",
        apply |s| s.spec().files.exec_postrun = Some(s.text().to_string()),
        render |spec, _base| spec.files.exec_postrun.clone()),
    opt!("io_submit_mode", Required, Depth, "inline|offload", default "inline",
        "Who submits the I/Os (offload: taken, the job thread or the shard submits)",
        apply |s| s.spec().io_submit_offload = match s.text() {
            "inline" => false,
            "offload" => true,
            _ => return s.fail("expected inline or offload"),
        },
        render |spec, base| (spec.io_submit_offload != base.io_submit_offload)
            .then(|| "offload".to_string())),
    opt!("verify_only", Flag, Verify, "bool", default "0",
        "Do not write: check what an earlier run of this job wrote", flag verify_only),
    opt!("verify_state_save", Flag, Verify, "bool", default "1",
        "A write job with verify saves where it stopped in local-<job>-<index>-verify.state \
         (working directory) for a later verify_only run (not saved by verify_only runs)",
        flag verify_state_save),
    opt!("verify_state_load", Flag, Verify, "bool", default "0",
        "With verify_only: check only what the run that saved local-<job>-<index>-verify.state \
         wrote before it stopped",
        flag verify_state_load),
    opt!("verify_header_seed", Flag, Verify, "bool", default "1",
        "Check that each block header carries the job's seed (0: skip; the digest is \
         still checked)",
        flag verify_header_seed),
    opt!("verify_write_sequence", Flag, Verify, "bool", default "1",
        "Check that each block header carries the generation (fio's write sequence number) \
         last written there (0: skip; the digest is still checked)",
        flag verify_write_sequence),
    opt!("verify_offset", Required, Verify, "int (bytes)", default "0",
        "Write the verify header this many bytes into the block (swapped with the data)",
        apply |s| s.spec().verify_offset = {
            let bytes = s.parse_kb(value::parse_size)?;
            if bytes > u64::from(u32::MAX) {
                return s.fail("verify_offset is below 4 GiB");
            }
            bytes as u32
        },
        render |spec, base| changed(spec.verify_offset, base.verify_offset)),
    opt!("verify_interval", Required, Verify, "int (bytes)", default "block size",
        "Write a verify header every this many bytes of a block",
        apply |s| s.spec().verify_interval = {
            let bytes = s.parse_kb(value::parse_size)?;
            if bytes == 0 || bytes > u64::from(u32::MAX) {
                return s.fail("verify_interval is 1 byte to 4 GiB");
            }
            Some(bytes as u32)
        },
        render |spec, _base| spec.verify_interval.map(|bytes| bytes.to_string())),
    opt!("iodepth_low", Required, Depth, "int", default "iodepth",
        "Once the queue is full, let it drain to this many before filling it again",
        apply |s| s.spec().iodepth_low = Some(s.count(0)?).filter(|&low| low > 0),
        render |spec, _base| spec.iodepth_low.map(|low| low.to_string())),
    opt!("iodepth_batch_submit" ["iodepth_batch"], Required, Depth, "int", default "1",
        "I/Os submitted at once", count(0) iodepth_batch_submit),
    opt!("iodepth_batch_complete_min" ["iodepth_batch_complete"], Required, Depth, "int",
        default "1", "Fewest completions reaped at once", count(0) iodepth_batch_complete_min),
    opt!("iodepth_batch_complete_max", Required, Depth, "int", default "iodepth",
        "Most completions reaped at once",
        apply |s| s.spec().iodepth_batch_complete_max = Some(s.count(1)?),
        render |spec, _base| spec.iodepth_batch_complete_max.map(|max| max.to_string())),
    opt!("numjobs", Required, Depth, "int", default "1", "Clones of this job", count(1) numjobs),
    opt!("runtime" ["timeout"], Required, Time, "time (s)", default "none", "Stop after this long",
        // fio: runtime=0 means no limit.
        apply |s| s.spec().runtime = Some(s.time(TimeUnit::Seconds)?).filter(|t| !t.is_zero()),
        render |spec, _base| spec.runtime.map(render::time)),
    opt!("time_based", Flag, Time, "bool", default "0",
        "Run for runtime even when the region is done", flag time_based),
    opt!("ramp_time", Required, Time, "time (s)", default "0", "Run this long before measuring",
        apply |s| s.spec().ramp_time = s.time(TimeUnit::Seconds)?,
        render |spec, base| (spec.ramp_time != base.ramp_time)
            .then(|| render::time(spec.ramp_time))),
    opt!("ramp_size", Required, Time, "int (bytes)", default "none",
        "Move this many bytes (with group_reporting: the group together) before measuring",
        apply |s| s.spec().ramp_size = match s.parse_kb(value::parse_size)? {
            0 => return s.fail("ramp_size is at least 1 byte (fio's minimum)"),
            bytes => Some(bytes),
        },
        render |spec, _base| spec.ramp_size.map(|bytes| bytes.to_string())),
    opt!("startdelay", Required, Time, "time (s) or range", default "0",
        "Wait this long before starting",
        apply |s| s.spec().startdelay = s.parse(|text| {
            value::parse_range(text, |p| value::parse_time(p, TimeUnit::Seconds))
        })?,
        render |spec, base| (spec.startdelay != base.startdelay).then(|| {
            format!("{}-{}", render::time(spec.startdelay.min), render::time(spec.startdelay.max))
        })),
    opt!("rate", Required, Rate, "int[,int][,int] (bytes/s)", default "none",
        "Bandwidth cap (read,write,trim)",
        apply |s| s.rate(true, |spec| &mut spec.rate)?,
        render |spec, base| render::rates(&spec.rate, &base.rate)),
    opt!("rate_iops", Required, Rate, "int[,int][,int]", default "none",
        "IOPS cap (read,write,trim)",
        apply |s| s.rate(false, |spec| &mut spec.rate_iops)?,
        render |spec, base| render::rates(&spec.rate_iops, &base.rate_iops)),
    opt!("rate_process", Required, Rate, "linear|poisson", default "linear",
        "How rated I/Os are spaced",
        apply |s| s.spec().rate_process = match s.text() {
            "linear" => RateProcess::Linear,
            "poisson" => RateProcess::Poisson,
            _ => return s.fail("expected linear or poisson"),
        },
        render |spec, base| (spec.rate_process != base.rate_process).then(|| {
            match spec.rate_process {
                RateProcess::Linear => "linear",
                RateProcess::Poisson => "poisson",
            }
            .to_string()
        })),
    opt!("rate_min" ["ratemin"], Required, Rate, "int[,int][,int] (bytes/s)", default "none",
        "Fail the job below this bandwidth (read,write,trim)",
        apply |s| s.rate(true, |spec| &mut spec.rate_min)?,
        render |spec, base| render::rates(&spec.rate_min, &base.rate_min)),
    opt!("rate_iops_min", Required, Rate, "int[,int][,int]", default "none",
        "Fail the job below this IOPS (read,write,trim)",
        apply |s| s.rate(false, |spec| &mut spec.rate_iops_min)?,
        render |spec, base| render::rates(&spec.rate_iops_min, &base.rate_iops_min)),
    opt!("rate_cycle" ["ratecycle"], Required, Rate, "time (ms)", default "1000",
        "Window rate_min and rate_iops_min are averaged over",
        apply |s| s.spec().rate_cycle = s.time(TimeUnit::Milliseconds)?,
        render |spec, base| (spec.rate_cycle != base.rate_cycle)
            .then(|| format!("{}ms", spec.rate_cycle.as_millis()))),
    opt!(ours "rate_backlog", Required, Rate, "time (ms) | none", default "100",
        "How late a paced job may fall behind its schedule and still catch up; after a longer \
         stall (a lost path) the schedule moves on instead of bursting (none: catch up, as fio)",
        apply |s| s.spec().rate_backlog = match s.text() {
            "none" => None,
            _ => Some(s.time(TimeUnit::Milliseconds)?),
        },
        render |spec, base| (spec.rate_backlog != base.rate_backlog).then(|| {
            spec.rate_backlog.map_or("none".to_string(), |b| format!("{}us", b.as_micros()))
        })),
    opt!("flow", Required, Rate, "int (0..1000)", default "0",
        "Weight of this job in its flow_id's token flow control (0: none)",
        apply |s| s.spec().flow = {
            let weight = s.count(0)?;
            if weight > 1000 {
                return s.fail("flow weights are 0 to 1000 (fio's FLOW_MAX_WEIGHT)");
            }
            weight
        },
        render |spec, base| changed(spec.flow, base.flow)),
    opt!("flow_id", Required, Rate, "int", default "0",
        "Jobs with one flow_id share their I/O by their flow weights", count(0) flow_id),
    opt!("flow_sleep", Required, Rate, "time (us)", default "0",
        "How long a job ahead of its flow weight pauses before asking again",
        apply |s| s.spec().flow_sleep = s.time(TimeUnit::Microseconds)?,
        render |spec, base| (spec.flow_sleep != base.flow_sleep)
            .then(|| render::time(spec.flow_sleep))),
    opt!("thinktime", Required, Rate, "time (us)", default "0", "Pause after I/Os",
        apply |s| s.spec().thinktime = s.time(TimeUnit::Microseconds)?,
        render |spec, base| (spec.thinktime != base.thinktime)
            .then(|| render::time(spec.thinktime))),
    opt!("thinktime_blocks", Required, Rate, "int", default "1", "I/Os between pauses",
        apply |s| s.spec().thinktime_blocks = Some(s.count(1)?),
        render |spec, _base| spec.thinktime_blocks.map(|blocks| blocks.to_string())),
    opt!("thinktime_spin", Required, Rate, "time (us)", default "0",
        "Spend this much of each think pause busy (spinning) before sleeping the rest",
        apply |s| s.spec().thinktime_spin = s.time(TimeUnit::Microseconds)?,
        render |spec, base| (spec.thinktime_spin != base.thinktime_spin)
            .then(|| render::time(spec.thinktime_spin))),
    opt!("thinktime_blocks_type", Required, Rate, "complete|issue", default "complete",
        "Whether thinktime_blocks counts completed or issued I/Os",
        apply |s| s.spec().thinktime_blocks_type = match s.text() {
            "complete" => ThinkTimeBlocksType::Complete,
            "issue" => ThinkTimeBlocksType::Issue,
            _ => return s.fail("expected complete or issue"),
        },
        render |spec, base| (spec.thinktime_blocks_type != base.thinktime_blocks_type).then(|| {
            match spec.thinktime_blocks_type {
                ThinkTimeBlocksType::Complete => "complete",
                ThinkTimeBlocksType::Issue => "issue",
            }
            .to_string()
        })),
    opt!("thinktime_iotime", Required, Rate, "time (s)", default "0",
        "Pause after this much time doing I/O (or after thinktime_blocks, if given, if sooner)",
        apply |s| s.spec().thinktime_iotime = s.time(TimeUnit::Seconds)?,
        render |spec, base| (spec.thinktime_iotime != base.thinktime_iotime)
            .then(|| render::time(spec.thinktime_iotime))),
    opt!("thinkcycles", Required, Rate, "int", default "0",
        "Spin this many loop iterations after each read or write (apart from thinktime)",
        apply |s| s.spec().thinkcycles = s.parse(value::parse_u64)?,
        render |spec, base| changed(spec.thinkcycles, base.thinkcycles)),
    opt!("rate_ignore_thinktime", Flag, Rate, "bool", default "0",
        "After a think pause, go on at the rate instead of catching up on the pause",
        flag rate_ignore_thinktime),
    // verify_pattern before verify: rendered, a pattern alone turns on verify=pattern.
    opt!("verify_pattern", Required, Verify, "0xhex | decimal | \"string\"", default "none",
        "Fill pattern (sets verify=pattern if verify is off)",
        apply |s| {
            s.spec().verify_pattern = s.parse(value::parse_verify_pattern)?;
            // As in fio: a pattern with verification off turns on pattern checks.
            if s.spec().verify == VerifyKind::None {
                s.spec().verify = VerifyKind::Pattern;
            }
        },
        render |spec, _base| (!spec.verify_pattern.is_empty())
            .then(|| render::hex(&spec.verify_pattern))),
    opt!("verify", Required, Verify,
        "md5|crc64|crc32|crc32c|crc16|crc7|sha1|sha256|sha512|sha3-224|sha3-256|sha3-384|\
         sha3-512|xxhash|pattern|meta|0", default "0",
        "Check written data",
        apply |s| s.spec().verify = s.parse(value::parse_verify_kind)?,
        render |spec, _base| render::verify(spec)),
    opt!("verify_fatal", Flag, Verify, "bool", default "0", "Stop at the first verify failure",
        flag verify_fatal),
    opt!("do_verify", Flag, Verify, "bool", default "1", "Run the verify phase after writing",
        flag do_verify),
    opt!("verify_dump", Flag, Verify, "bool", default "0",
        "On a verify failure, write the block read and the block expected to \
         <file>.<offset>.received and .expected in the working directory",
        flag verify_dump),
    opt!("verify_backlog", Required, Verify, "int", default "none",
        "Read back and check every N written blocks while writing (each block once in all)",
        apply |s| s.spec().verify_backlog = Some(s.parse(value::parse_u64)?).filter(|&n| n > 0),
        render |spec, _base| spec.verify_backlog.map(|backlog| backlog.to_string())),
    opt!("verify_backlog_batch", Required, Verify, "int", default "verify_backlog",
        "Blocks each verify_backlog check reads; the others are read by a later check or \
         the verify phase",
        apply |s| s.spec().verify_backlog_batch =
            Some(s.parse(value::parse_u64)?).filter(|&n| n > 0),
        render |spec, _base| spec.verify_backlog_batch.map(|batch| batch.to_string())),
    opt!("experimental_verify", Flag, Verify, "bool", default "0",
        "fio's verify by replaying the writes from the seed; accepted, with the same \
         result (iscsi-bench checks each written block once, at its last write); as in fio, \
         verify_backlog then reads nothing before the verify phase",
        flag experimental_verify),
    opt!("verify_async", Required, Verify, "int", default "0",
        "fio's count of verify threads; accepted, and iscsi-bench verifies inline (the \
         same blocks checked, the same result)",
        apply |s| s.spec().verify_async = match u32::try_from(s.parse(value::parse_u64)?) {
            Ok(threads) => threads,
            Err(_) => return s.fail("more verify threads than fio takes"),
        },
        render |spec, base| changed(spec.verify_async, base.verify_async)),
    opt!("verify_async_cpus", Required, Verify, "cpu[-cpu][,...]", default "all",
        "CPUs fio's verify_async threads may run on; accepted, and iscsi-bench verifies \
         inline",
        apply |s| {
            let cpus = s.parse(value::parse_cpu_list)?;
            let configured = configured_cpus();
            if let Some(cpu) = cpus.iter().find(|&&cpu| configured.is_some_and(|n| cpu >= n)) {
                return s.fail(&format!(
                    "CPU {cpu} is beyond the machine's {} CPUs",
                    configured.unwrap_or(0)
                ));
            }
            s.spec().verify_async_cpus = Some(cpus);
        },
        render |spec, _base| spec.verify_async_cpus.as_ref().map(|cpus| render::joined(cpus, ","))),
    opt!("verify_shared", Flag, Verify, "bool", default "0",
        "Jobs writing the same target verify together: a read must return the last \
         acknowledged write of any sharing job, or one in flight during the read \
         (iscsi-bench's own; needs a checksum: verify=crc32c, md5, sha256, crc64, ...)",
        flag verify_shared),
    opt!("zero_buffers", Flag, Buffers, "bool", default "0",
        "Write buffers start as zeros instead of random data", flag buffers.zero_buffers),
    opt!("refill_buffers", Flag, Buffers, "bool", default "0",
        "Fill write buffers again before every write", flag buffers.refill_buffers),
    opt!("scramble_buffers", Flag, Buffers, "bool", default "1",
        "Stamp offset and time into reused write buffers (defeats naive dedupe)",
        flag buffers.scramble_buffers),
    opt!("buffer_pattern", Required, Buffers, "0xhex | decimal | \"string\"", default "none",
        "Fill write buffers with this pattern",
        apply |s| s.spec().buffers.pattern = s.parse(value::parse_verify_pattern)?,
        render |spec, _base| (!spec.buffers.pattern.is_empty())
            .then(|| render::hex(&spec.buffers.pattern))),
    opt!("buffer_compress_percentage", Required, Buffers, "int (0..100)", default "0",
        "Make write data compressible to this percentage",
        apply |s| s.spec().buffers.compress_percentage = s.percent()?,
        render |spec, base| {
            changed(spec.buffers.compress_percentage, base.buffers.compress_percentage)
        }),
    opt!("buffer_compress_chunk", Required, Buffers, "int (bytes)", default "512",
        "Size of the random/compressible regions (0: the whole buffer)",
        apply |s| {
            let bytes = s.parse_kb(value::parse_size)?;
            s.spec().buffers.compress_chunk_bytes = match u32::try_from(bytes) {
                Ok(bytes) => bytes,
                Err(_) => return s.fail("larger than 4 GiB"),
            };
        },
        render |spec, base| {
            changed(spec.buffers.compress_chunk_bytes, base.buffers.compress_chunk_bytes)
        }),
    opt!("dedupe_percentage", Required, Buffers, "int (0..100)", default "0",
        "Share of write buffers that repeat an earlier one",
        apply |s| s.spec().buffers.dedupe_percentage = s.percent()?,
        render |spec, base| {
            changed(spec.buffers.dedupe_percentage, base.buffers.dedupe_percentage)
        }),
    opt!("dedupe_mode", Required, Buffers, "repeat|working_set", default "repeat",
        "What a deduplicated buffer repeats: the last unique one, or one of a working set",
        apply |s| {
            let working_set = match s.text() {
                "repeat" => false,
                "working_set" => true,
                _ => return s.fail("expected repeat or working_set"),
            };
            let spec = s.spec();
            spec.buffers.dedupe_working_set_percent = working_set
                .then_some(spec.dedupe_working_set_percentage);
        },
        render |spec, _base| spec.buffers.dedupe_working_set_percent
            .map(|_| "working_set".to_string())),
    opt!("dedupe_working_set_percentage", Required, Buffers, "int (0..100)", default "5",
        "Size of dedupe_mode=working_set's set, in percent of the region",
        apply |s| {
            let percent = s.percent()?;
            let spec = s.spec();
            spec.dedupe_working_set_percentage = percent;
            if spec.buffers.dedupe_working_set_percent.is_some() {
                spec.buffers.dedupe_working_set_percent = Some(percent);
            }
        },
        render |spec, base| changed(
            spec.dedupe_working_set_percentage,
            base.dedupe_working_set_percentage
        )),
    opt!("dedupe_global", Flag, Buffers, "bool", default "0",
        "The run's jobs share one dedupe working set", flag buffers.dedupe_global),
    opt!("group_reporting", Flag, Reporting, "bool", default "0",
        "Report per group instead of per job", flag group_reporting),
    opt!("stonewall" ["wait_for_previous"], Flag, Reporting, "bool", default "0",
        "Wait for the jobs before; start a new group", flag stonewall),
    opt!("wait_for", Required, Reporting, "str", default "none",
        "Name of an earlier job this one waits for (every clone of it) before starting",
        apply |s| s.spec().wait_for = Some(s.text().to_string()),
        render |spec, _base| spec.wait_for.clone()),
    opt!("new_group", Flag, Reporting, "bool", default "0", "Start a new reporting group",
        flag new_group),
    opt!("unified_rw_reporting", Required, Reporting, "none|mixed|both|0|1|2", default "none",
        "Report reads, writes and trims apart, summed as \"mixed\", or both",
        apply |s| s.spec().unified_rw_reporting = match s.text() {
            "none" | "0" => UnifiedRw::Separate,
            "mixed" | "1" => UnifiedRw::Mixed,
            "both" | "2" => UnifiedRw::Both,
            _ => return s.fail("expected none, mixed, both, 0, 1 or 2"),
        },
        render |spec, base| (spec.unified_rw_reporting != base.unified_rw_reporting).then(|| {
            match spec.unified_rw_reporting {
                UnifiedRw::Separate => "none",
                UnifiedRw::Mixed => "mixed",
                UnifiedRw::Both => "both",
            }
            .to_string()
        })),
    opt!("steadystate" ["ss"], Required, Time,
        "iops|iops_slope|bw|bw_slope|lat|lat_slope:limit[%]", default "iops_slope:0.01%",
        "Steady-state criterion: the job ends once it holds over ss_dur",
        apply |s| s.spec().steadystate = s.parse(parse_steadystate)?,
        render |spec, base| (spec.steadystate != base.steadystate)
            .then(|| render::steadystate(&spec.steadystate))),
    opt!("steadystate_duration" ["ss_dur"], Required, Time, "time (s)", default "0 (off)",
        "Window over which the steadystate criterion must hold",
        apply |s| s.spec().ss_dur = s.time(TimeUnit::Seconds)?,
        render |spec, base| (spec.ss_dur != base.ss_dur).then(|| render::time(spec.ss_dur))),
    opt!("steadystate_ramp_time" ["ss_ramp"], Required, Time, "time (s)", default "0",
        "Time before steady-state data are collected",
        apply |s| s.spec().ss_ramp = s.time(TimeUnit::Seconds)?,
        render |spec, base| (spec.ss_ramp != base.ss_ramp).then(|| render::time(spec.ss_ramp))),
    opt!("steadystate_check_interval" ["ss_interval"], Required, Time, "time (s)", default "1",
        "How often steady state is checked (at least 1 s)",
        apply |s| s.spec().ss_interval = {
            let interval = s.time(TimeUnit::Seconds)?;
            if interval < Duration::from_secs(1) {
                return s.fail("ss_check_interval must be at least 1s (as in fio)");
            }
            interval
        },
        render |spec, base| (spec.ss_interval != base.ss_interval)
            .then(|| render::time(spec.ss_interval))),
    opt!("latency_target", Required, Depth, "time (us)", default "0 (off)",
        "Find the deepest queue whose latency_percentile of I/Os stays within this",
        apply |s| s.spec().latency_target =
            Some(s.time(TimeUnit::Microseconds)?).filter(|t| !t.is_zero()),
        render |spec, _base| spec.latency_target.map(render::time)),
    opt!("latency_window", Required, Depth, "time (us)", default "0",
        "How long each depth is tried", 
        apply |s| s.spec().latency_window = s.time(TimeUnit::Microseconds)?,
        render |spec, base| (spec.latency_window != base.latency_window)
            .then(|| render::time(spec.latency_window))),
    opt!("latency_percentile", Required, Depth, "float (0..100)", default "100",
        "Share of I/Os that must meet latency_target",
        apply |s| s.spec().latency_percentile = {
            let percent = s.text().trim().trim_end_matches('%').parse::<f64>().ok()
                .filter(|p| (0.0..=100.0).contains(p));
            match percent {
                Some(p) => p,
                None => return s.fail("a percentage, 0 to 100"),
            }
        },
        render |spec, base| (spec.latency_percentile != base.latency_percentile)
            .then(|| spec.latency_percentile.to_string())),
    opt!("latency_run", Flag, Depth, "bool", default "0",
        "Keep adjusting the depth for the whole run instead of stopping once found",
        flag latency_run),
    opt!("max_latency", Required, Depth, "time[,time][,time] (us)", default "0 (off)",
        "End the job with ETIMEDOUT when an I/O takes longer than this (read,write,trim)",
        apply |s| s.spec().max_latency = {
            let current = s.scope.spec.max_latency.clone();
            s.parse(|text| {
                value::parse_per_dir(text, &current, |part| {
                    // fio keeps whole microseconds; 0 is no limit.
                    let limit = value::parse_time(part, TimeUnit::Microseconds)?;
                    let micros = Duration::from_micros(limit.as_micros() as u64);
                    Ok((!micros.is_zero()).then_some(micros))
                })
            })?
        },
        render |spec, base| (spec.max_latency != base.max_latency).then(|| {
            render::per_dir(&spec.max_latency, |limit| {
                Some(limit.map_or("0".to_string(), render::time))
            })
        })),
    opt!("exitall", Flag, Reporting, "bool", default "0",
        "When this job ends, end the jobs exit_what names", flag exitall),
    opt!("exit_what", Required, Reporting, "group|stonewall|all", default "group",
        "Which jobs exitall ends",
        apply |s| s.spec().exit_what = match s.text() {
            "group" => ExitWhat::Group,
            "stonewall" => ExitWhat::Stonewall,
            "all" => ExitWhat::All,
            _ => return s.fail("expected group, stonewall or all"),
        },
        render |spec, base| (spec.exit_what != base.exit_what).then(|| {
            match spec.exit_what {
                ExitWhat::Group => "group",
                ExitWhat::Stonewall => "stonewall",
                ExitWhat::All => "all",
            }
            .to_string()
        })),
    opt!("exitall_on_error", Flag, Reporting, "bool", default "0",
        "When this job ends in error, end every job", flag exitall_on_error),
    opt!("percentile_list", Required, Reporting, "float:float...",
        default "1:5:10:20:30:40:50:60:70:80:90:95:99:99.5:99.9:99.95:99.99",
        "Latency percentiles to report",
        apply |s| s.spec().percentile_list = s.parse(value::parse_percentile_list)?,
        render |spec, base| (spec.percentile_list != base.percentile_list)
            .then(|| render::joined(&spec.percentile_list, ":"))),
    opt!("clat_percentiles", Flag, Reporting, "bool", default "1",
        "Report completion latency percentiles", flag clat_percentiles),
    opt!("lat_percentiles", Flag, Reporting, "bool", default "0",
        "Report total latency percentiles", flag lat_percentiles),
    opt!("slat_percentiles", Flag, Reporting, "bool", default "0",
        "Report submission latency percentiles", flag slat_percentiles),
    opt!("disable_lat", Flag, Reporting, "bool", default "0",
        "Do not measure total latency", flag disable_lat),
    opt!("disable_clat", Flag, Reporting, "bool", default "0",
        "Do not measure completion latency (nor its percentiles)", flag disable_clat),
    opt!("disable_slat", Flag, Reporting, "bool", default "0",
        "Do not measure submission latency", flag disable_slat),
    opt!("disable_bw_measurement" ["disable_bw"], Flag, Reporting, "bool", default "0",
        "Do not sample bandwidth and IOPS", flag disable_bw),
    opt!("gtod_reduce", Flag, Reporting, "bool", default "0",
        "Measure no latency and sample no bandwidth (disable_lat, _clat, _slat, _bw)",
        apply |s| {
            let on = s.flag()?;
            let spec = s.spec();
            spec.disable_lat = on;
            spec.disable_clat = on;
            spec.disable_slat = on;
            spec.disable_bw = on;
        },
        render |_spec, _base| None),
    opt!("write_lat_log", Optional, Reporting, "[prefix]", default "none", "Write latency logs",
        apply |s| s.spec().write_lat_log = Some(s.log_name()),
        render |spec, _base| spec.write_lat_log.as_ref().map(render::log_name)),
    opt!("write_bw_log", Optional, Reporting, "[prefix]", default "none", "Write bandwidth logs",
        apply |s| s.spec().write_bw_log = Some(s.log_name()),
        render |spec, _base| spec.write_bw_log.as_ref().map(render::log_name)),
    opt!("write_iops_log", Optional, Reporting, "[prefix]", default "none", "Write IOPS logs",
        apply |s| s.spec().write_iops_log = Some(s.log_name()),
        render |spec, _base| spec.write_iops_log.as_ref().map(render::log_name)),
    opt!("write_iolog", Required, Reporting, "path", default "none",
        "Append every issued I/O to this file (fio's iolog version 3)",
        apply |s| s.spec().iolog.write = Some(s.text().to_string()),
        render |spec, _base| spec.iolog.write.clone()),
    opt!("read_iolog", Required, Pattern, "path", default "none",
        "Replay the I/Os of this iolog (fio versions 2 and 3) instead of the job's pattern",
        apply |s| s.spec().iolog.read = Some(s.text().to_string()),
        render |spec, _base| spec.iolog.read.clone()),
    opt!("read_iolog_chunked", Flag, Pattern, "bool", default "0",
        "Read the iolog in parts (the replay always reads it as it goes)",
        flag iolog.chunked),
    opt!("replay_no_stall", Flag, Pattern, "bool", default "0",
        "Replay as fast as possible, ignoring the log's timestamps",
        flag iolog.no_stall),
    opt!("replay_redirect", Required, Pattern, "path", default "none",
        "Replay every I/O of the log onto this one file",
        apply |s| s.spec().iolog.redirect = Some(s.text().to_string()),
        render |spec, _base| spec.iolog.redirect.clone()),
    opt!("replay_scale", Required, Pattern, "int", default "1",
        "Divide the log's offsets by this factor",
        apply |s| s.spec().iolog.scale = s.parse(value::parse_u64)?,
        render |spec, base| changed(spec.iolog.scale, base.iolog.scale)),
    opt!("replay_align", Required, Pattern, "int (power of 2)", default "0",
        "Align the log's offsets down to this many bytes",
        apply |s| {
            let align = s.parse_kb(value::parse_size)?;
            if align != 0 && !align.is_power_of_two() {
                return s.fail("must be a power of 2");
            }
            s.spec().iolog.align_bytes = align;
        },
        render |spec, base| changed(spec.iolog.align_bytes, base.iolog.align_bytes)),
    opt!("replay_time_scale", Required, Pattern, "int (percent)", default "100",
        "Replay at this percent of the log's rate (200: twice as fast)",
        apply |s| s.spec().iolog.time_scale_percent = s.count(1)?,
        render |spec, base| changed(spec.iolog.time_scale_percent, base.iolog.time_scale_percent)),
    opt!("replay_skip", Required, Pattern, "read,write,trim,sync", default "none",
        "Kinds of the log's I/Os not to replay",
        apply |s| s.spec().iolog.skip = s.parse(|text| ReplaySkip::parse(text).map_err(ValueError::new))?,
        render |spec, base| (spec.iolog.skip != base.iolog.skip).then(|| spec.iolog.skip.render())),
    opt!("log_avg_msec", Required, Reporting, "int (ms)", default "0",
        "Average log entries over this period",
        apply |s| s.spec().log_avg_msec = s.parse(value::parse_u64)?,
        render |spec, base| changed(spec.log_avg_msec, base.log_avg_msec)),
    opt!("log_unix_epoch", Flag, Reporting, "bool", default "0",
        "Log Unix times (ms) instead of times since the job's start", flag log_unix_epoch),
    opt!("log_window_value" ["log_max_value"], Required, Reporting, "avg|max|both|0|1",
        default "avg",
        "What a log_avg_msec window writes in latency logs: the mean, the maximum, or both \
         (the maximum in a column after the mean)",
        apply |s| s.spec().log_window_value = match LogWindowValue::parse(s.text()) {
            Some(value) => value,
            None => return s.fail("expected avg, max, both, 0 (avg) or 1 (max)"),
        },
        render |spec, base| (spec.log_window_value != base.log_window_value)
            .then(|| spec.log_window_value.fio_name().to_string())),
    opt!("log_offset", Flag, Reporting, "bool", default "0",
        "Include the offset of each I/O in the log lines", flag log_offset),
    opt!("log_issue_time", Flag, Reporting, "bool", default "0",
        "End each clat and slat log line with the I/O's issue time (ns after the job's \
         start); needs write_lat_log and log_offset",
        flag log_issue_time),
    opt!("write_hist_log", Optional, Reporting, "[prefix]", default "none",
        "Write completion-latency histogram logs (every log_hist_msec)",
        apply |s| s.spec().write_hist_log = Some(s.log_name()),
        render |spec, _base| spec.write_hist_log.as_ref().map(render::log_name)),
    opt!("log_hist_msec", Required, Reporting, "int (ms)", default "0",
        "Histogram log window (0: nothing logged, as in fio)",
        apply |s| s.spec().log_hist_msec = s.parse(value::parse_u64)?,
        render |spec, base| changed(spec.log_hist_msec, base.log_hist_msec)),
    opt!("log_hist_coarseness", Required, Reporting, "int (0..6)", default "0",
        "Histogram log bins summed 2^N at a time",
        apply |s| s.spec().log_hist_coarseness = {
            let coarseness = s.count(0)?;
            if coarseness > 6 {
                return s.fail("log_hist_coarseness is 0 to 6");
            }
            coarseness
        },
        render |spec, base| changed(spec.log_hist_coarseness, base.log_hist_coarseness)),
    opt!("per_job_logs", Flag, Reporting, "bool", default "1",
        "Put the job number in log file names (0: the clones of a job share one file per log)",
        flag report.per_job_logs),
    opt!("bwavgtime", Required, Reporting, "int (ms)", default "500",
        "Period of the bandwidth samples (JSON bw_* statistics, bandwidth log)",
        apply |s| s.spec().report.bwavgtime_ms = Some(s.parse(parse_avg_time)?),
        render |spec, _base| spec.report.bwavgtime_ms.map(|ms| ms.to_string())),
    opt!("iopsavgtime", Required, Reporting, "int (ms)", default "500",
        "Period of the IOPS samples (JSON iops_* statistics, IOPS log)",
        apply |s| s.spec().report.iopsavgtime_ms = Some(s.parse(parse_avg_time)?),
        render |spec, _base| spec.report.iopsavgtime_ms.map(|ms| ms.to_string())),
    opt!("log_entries", Required, Reporting, "int (1024..1048576)", default "1024",
        "fio's initial log buffer size; accepted for job files, our logs grow as needed",
        apply |s| s.spec().report.log_entries = s.parse(|text| {
            value::parse_u64_in(
                text,
                u64::from(spec::LOG_ENTRIES_MIN),
                u64::from(spec::LOG_ENTRIES_MAX),
            )
            .map(|entries| entries as u32)
        })?,
        render |spec, base| changed(spec.report.log_entries, base.report.log_entries)),
    opt!("stats", Flag, Reporting, "bool", default "1",
        "Report this job (0: it runs but is left out of every report and its group's totals)",
        flag report.stats),
    opt!("disk_util", Flag, Reporting, "bool", default "1",
        "fio's local disk statistics: none for an iSCSI LUN (as fio's libiscsi engine), \
         so none are printed either way",
        flag report.disk_util),
    opt!("significant_figures", Required, Reporting, "int (1..10)", default "4",
        "Significant figures of the numbers in the normal and terse output",
        apply |s| s.spec().report.significant_figures =
            s.parse(|text| value::parse_u64_in(text, 1, 10))? as u32,
        render |spec, base| changed(
            spec.report.significant_figures,
            base.report.significant_figures
        )),
    opt!("unit_base", Required, Reporting, "0|8|1", default "0",
        "Bandwidth in the normal output in bytes (8; 0 picks bytes for every engine here) or \
         in bits (1)",
        apply |s| s.spec().report.unit_base = match s.text() {
            "0" => UnitBase::Auto,
            "8" => UnitBase::Bytes,
            "1" => UnitBase::Bits,
            _ => return s.fail("expected 0 (auto), 8 (bytes) or 1 (bits)"),
        },
        render |spec, base| (spec.report.unit_base != base.report.unit_base)
            .then(|| spec.report.unit_base.fio_value().to_string())),
    opt!("clocksource", Required, Reporting, "gettimeofday|clock_gettime|cpu",
        default "none (the monotonic clock)",
        "fio's timing source; accepted, but iscsi-bench always times with the monotonic clock",
        apply |s| s.spec().report.clocksource = Some(match s.text() {
            "gettimeofday" => ClockSource::Gettimeofday,
            "clock_gettime" => ClockSource::ClockGettime,
            "cpu" => ClockSource::Cpu,
            _ => return s.fail("expected gettimeofday, clock_gettime or cpu"),
        }),
        render |spec, _base| spec.report.clocksource.map(|c| c.fio_name().to_string())),
    opt!("gtod_cpu", Required, Reporting, "int", default "none",
        "CPU of fio's time-keeping thread; accepted, iscsi-bench has no such thread",
        apply |s| s.spec().report.gtod_cpu = Some(s.count(0)?),
        render |spec, _base| spec.report.gtod_cpu.map(|cpu| cpu.to_string())),
    opt!("block_error_percentiles", Flag, Reporting, "bool", default "0",
        "fio's trim block lifetime histogram; only 0 is accepted",
        // fio keeps a per-block record of trims and trim/write failures for it (and fio
        // 3.42 aborts on an assertion for a trim job with it); we keep no such record.
        apply |s| if s.flag()? {
            return s.fail(
                "block_error_percentiles needs fio's per-block trim error records, which \
                 iscsi-bench does not keep; only block_error_percentiles=0 is supported",
            );
        },
        render |_spec, _base| None),
    opt!("cpus_allowed", Required, Reporting, "cpu[-cpu][,...]", default "all",
        "CPUs the job may run on",
        apply |s| s.spec().cpus_allowed = Some(s.parse(value::parse_cpu_list)?),
        render |spec, _base| spec.cpus_allowed.as_ref().map(|cpus| render::joined(cpus, ","))),
    // cpumask sets what cpus_allowed sets (fio: the later of the two wins), so it renders
    // as cpus_allowed.
    opt!("cpumask", Required, Reporting, "int (bit mask)", default "all",
        "CPUs the job may run on, as a bit mask (bit N: CPU N)",
        apply |s| s.spec().cpus_allowed = Some(s.parse(value::parse_cpu_mask)?),
        render |_spec, _base| None),
    opt!("cpus_allowed_policy", Required, Reporting, "shared|split", default "shared",
        "Clones (numjobs) share cpus_allowed, or each takes one CPU of it in turn",
        apply |s| s.spec().cpus_allowed_policy = match s.text() {
            "shared" => CpusAllowedPolicy::Shared,
            "split" => CpusAllowedPolicy::Split,
            _ => return s.fail("expected shared or split"),
        },
        render |spec, base| (spec.cpus_allowed_policy != base.cpus_allowed_policy).then(|| {
            match spec.cpus_allowed_policy {
                CpusAllowedPolicy::Shared => "shared",
                CpusAllowedPolicy::Split => "split",
            }
            .to_string()
        })),
    opt!("nice", Required, Reporting, "int (-20..19)", default "0",
        "Add this to the job thread's nice value",
        apply |s| s.spec().nice = s.parse(|text| value::parse_i64_in(text, -20, 19))? as i32,
        render |spec, base| changed(spec.nice, base.nice)),
    opt!("prio", Required, Reporting, "int (0..7)", default "none",
        "The job thread's I/O priority level (ioprio_set; an iSCSI target never sees it)",
        apply |s| s.spec().prio = Some(s.parse(|text| value::parse_u64_in(text, 0, 7))? as u32),
        render |spec, _base| spec.prio.map(|prio| prio.to_string())),
    opt!("prioclass", Required, Reporting, "int (0..3)", default "none",
        "The job thread's I/O priority class: 0 none (best effort), 1 realtime, 2 best \
         effort, 3 idle (ioprio_set; an iSCSI target never sees it)",
        apply |s| s.spec().prioclass =
            Some(s.parse(|text| value::parse_u64_in(text, 0, 3))? as u32),
        render |spec, _base| spec.prioclass.map(|class| class.to_string())),
    opt!("priohint", Required, Reporting, "int (0..1023)", default "none",
        "The job thread's I/O priority hint, set with its class and level (ioprio_set; \
         command duration limits of a local disk; an iSCSI target never sees it)",
        apply |s| s.spec().priohint =
            Some(s.parse(|text| value::parse_u64_in(text, 0, 1023))? as u32),
        render |spec, _base| spec.priohint.map(|hint| hint.to_string())),
    opt!("comm", Required, Reporting, "str", default "none",
        "The job thread's name (prctl PR_SET_NAME; the kernel keeps 15 bytes)",
        apply |s| s.spec().comm = Some(s.text().to_string()),
        render |spec, _base| spec.comm.clone()),
    opt!(ours "header_digest", Required, Iscsi, "none|crc32c", default "none",
        "iSCSI HeaderDigest to offer",
        apply |s| s.spec().iscsi.header_digest = s.parse(parse_digest)?,
        render |spec, base| (spec.iscsi.header_digest != base.iscsi.header_digest)
            .then(|| render::digest(spec.iscsi.header_digest))),
    opt!(ours "data_digest", Required, Iscsi, "none|crc32c", default "none",
        "iSCSI DataDigest to offer",
        apply |s| s.spec().iscsi.data_digest = s.parse(parse_digest)?,
        render |spec, base| (spec.iscsi.data_digest != base.iscsi.data_digest)
            .then(|| render::digest(spec.iscsi.data_digest))),
    opt!(ours "immediate_data", Flag, Iscsi, "bool", default "target's",
        "iSCSI ImmediateData to offer",
        apply |s| s.spec().iscsi.immediate_data = Some(s.flag()?),
        render |spec, _base| spec.iscsi.immediate_data.map(render::flag)),
    opt!(ours "initial_r2t", Flag, Iscsi, "bool", default "target's", "iSCSI InitialR2T to offer",
        apply |s| s.spec().iscsi.initial_r2t = Some(s.flag()?),
        render |spec, _base| spec.iscsi.initial_r2t.map(render::flag)),
    opt!(ours "max_burst_length", Required, Iscsi, "int (512..16M-1)", default "262144",
        "iSCSI MaxBurstLength to offer",
        apply |s| s.spec().iscsi.max_burst_length_bytes = Some(s.parse_kb(parse_iscsi_length)?),
        render |spec, _base| spec.iscsi.max_burst_length_bytes.map(|len| len.to_string())),
    opt!(ours "first_burst_length", Required, Iscsi, "int (512..16M-1)", default "65536",
        "iSCSI FirstBurstLength to offer",
        apply |s| s.spec().iscsi.first_burst_length_bytes = Some(s.parse_kb(parse_iscsi_length)?),
        render |spec, _base| spec.iscsi.first_burst_length_bytes.map(|len| len.to_string())),
    opt!(ours "max_recv_data_segment_length", Required, Iscsi, "int (512..16M-1)",
        default "8192", "iSCSI MaxRecvDataSegmentLength to declare",
        apply |s| {
            s.spec().iscsi.max_recv_data_segment_length_bytes =
                Some(s.parse_kb(parse_iscsi_length)?)
        },
        render |spec, _base| {
            spec.iscsi.max_recv_data_segment_length_bytes.map(|len| len.to_string())
        }),
    opt!(ours "chap_username", Required, Iscsi, "str", default "none",
        "CHAP user name (target authenticates us)",
        apply |s| s.chap(|iscsi| &mut iscsi.chap).username = s.text().to_string(),
        render |spec, _base| spec.iscsi.chap.as_ref().map(|chap| chap.username.clone())),
    opt!(ours "chap_secret", Required, Iscsi, "str", default "none",
        "CHAP secret (or $LIBISCSI_CHAP_PASSWORD, which ps does not show)",
        apply |s| s.chap(|iscsi| &mut iscsi.chap).secret = s.text().to_string(),
        render |spec, _base| spec.iscsi.chap.as_ref().map(|chap| chap.secret.clone())),
    opt!(ours "mutual_chap_username", Required, Iscsi, "str", default "none",
        "Mutual CHAP: the target's user name",
        apply |s| s.chap(|iscsi| &mut iscsi.mutual_chap).username = s.text().to_string(),
        render |spec, _base| spec.iscsi.mutual_chap.as_ref().map(|chap| chap.username.clone())),
    opt!(ours "mutual_chap_secret", Required, Iscsi, "str", default "none",
        "Mutual CHAP: the target's secret (or $LIBISCSI_CHAP_TARGET_PASSWORD)",
        apply |s| s.chap(|iscsi| &mut iscsi.mutual_chap).secret = s.text().to_string(),
        render |spec, _base| spec.iscsi.mutual_chap.as_ref().map(|chap| chap.secret.clone())),
    opt!(ours "initiator_name" ["initiator"], Required, Iscsi, "iqn", default "built-in",
        "iSCSI InitiatorName",
        apply |s| s.spec().iscsi.initiator_name = Some(s.text().to_string()),
        render |spec, _base| spec.iscsi.initiator_name.clone()),
    opt!(ours "shards", Required, Iscsi, "int", default "1 per core",
        "Shards (cores) the iSCSI engine uses",
        apply |s| s.spec().iscsi.shards = Some(s.count(1)?),
        render |spec, _base| spec.iscsi.shards.map(|shards| shards.to_string())),
    opt!(ours "transport", Required, Iscsi, "software|dependent|independent", default "software",
        "How the iSCSI engine reaches the target",
        apply |s| s.spec().iscsi.transport = match s.text().parse::<TransportKind>() {
            Ok(kind) => kind,
            Err(_) => return s.fail("expected software, dependent or independent"),
        },
        render |spec, base| (spec.iscsi.transport != base.iscsi.transport)
            .then(|| spec.iscsi.transport.to_string())),
    opt!(ours "io_timeout", Required, Errors, "time (s)", default "none",
        "Fail an I/O that takes longer than this",
        apply |s| s.spec().io_timeout = Some(s.time(TimeUnit::Seconds)?).filter(|t| !t.is_zero()),
        render |spec, _base| spec.io_timeout.map(render::time)),
    opt!(ours "reconnect_max", Required, Errors, "int", default "5",
        "iSCSI: log in again after a lost connection at most this many times in a row (0: never)",
        apply |s| s.spec().iscsi.reconnect_max = Some(s.count(0)?),
        render |spec, _base| spec.iscsi.reconnect_max.map(|max| max.to_string())),
    opt!(ours "replacement_timeout", Required, Errors, "time (s)", default "30",
        "iSCSI: the longest one reconnect may take before its I/O fails",
        apply |s| s.spec().iscsi.replacement_timeout = Some(s.nonzero_time(TimeUnit::Seconds)?),
        render |spec, _base| spec.iscsi.replacement_timeout.map(render::time)),
    opt!(ours "paths", Required, Iscsi, "all | host[:port][,host[:port]]...", default "the URL's portal",
        "iSCSI multipath: log in through each of these portals (all: every portal SendTargets \
         lists) after checking that each reaches the URL's LU; I/O survives losing a path",
        apply |s| s.spec().iscsi.paths = Some(s.parse(parse_paths)?),
        render |spec, _base| spec.iscsi.paths.as_ref().map(ToString::to_string)),
    opt!(ours "path_policy", Required, Iscsi, "round-robin|failover|queue-length|service-time",
        default "round-robin", "iSCSI multipath: which path takes the next command",
        apply |s| s.spec().iscsi.path_policy = Some(s.parse(|text| {
            text.parse::<datapath::shard::PathPolicy>().map_err(ValueError::new)
        })?),
        render |spec, _base| spec.iscsi.path_policy.map(|p| p.name().to_string())),
    opt!(ours "no_path_retry", Required, Errors, "time (s)", default "30",
        "iSCSI multipath: how long commands wait for a path when none is up before they fail",
        apply |s| s.spec().iscsi.no_path_retry = Some(s.time(TimeUnit::Seconds)?),
        render |spec, _base| spec.iscsi.no_path_retry.map(render::time)),
    opt!(ours "noop_out_interval", Required, Errors, "time (ms)", default "10000, 250 with paths=",
        "iSCSI: ping the target with a NOP-Out after it was silent this long (how soon a \
         silently cut link is noticed)",
        apply |s| s.spec().iscsi.noop_out_interval = Some(s.nonzero_time(TimeUnit::Milliseconds)?),
        render |spec, _base| spec.iscsi.noop_out_interval.map(|t| format!("{}ms", t.as_millis()))),
    opt!(ours "noop_out_timeout", Required, Errors, "time (ms)", default "10000, 500 with paths=",
        "iSCSI: a NOP-Out not answered this long ends the connection (another path takes over)",
        apply |s| s.spec().iscsi.noop_out_timeout = Some(s.nonzero_time(TimeUnit::Milliseconds)?),
        render |spec, _base| spec.iscsi.noop_out_timeout.map(|t| format!("{}ms", t.as_millis()))),
    opt!("ignore_error", Required, Errors, "READ_ERRS,WRITE_ERRS,VERIFY_ERRS",
        default "EIO:EILSEQ",
        "Errors (':'-separated names or numbers) continue_on_error treats as non-fatal, per type",
        // As in fio (options.c `str2error`'s caller), a type given a list continues on its
        // errors from here on; a later `continue_on_error` sets the types anew.
        apply |s| {
            let ignore =
                s.parse(|text| ErrorPolicy::parse_ignore_error(text).map_err(ValueError::new))?;
            s.spec().error_policy.ignore_from_now_on(ignore)
        },
        render |spec, base| (spec.error_policy.ignore != base.error_policy.ignore)
            .then(|| render::ignore_error(&spec.error_policy))),
    opt!("continue_on_error", Required, Errors, "none|read|write|io|verify|all", default "none",
        "Continue after non-fatal errors of these types",
        apply |s| {
            s.spec().error_policy.continue_on =
                s.parse(|text| ErrorPolicy::parse_continue_on_error(text).map_err(ValueError::new))?
        },
        // After `ignore_error` in this table, and written whenever that is, so that a job
        // file written from a spec reads back to the same types.
        render |spec, base| (spec.error_policy.continue_on != base.error_policy.continue_on
                || spec.error_policy.ignore != base.error_policy.ignore)
            .then(|| spec.error_policy.continue_on_error_name().map(str::to_string))
            .flatten()),
    opt!("error_dump", Flag, Errors, "bool", default "0",
        "Print every I/O error, also those continue_on_error rides out",
        flag error_policy.dump_non_fatal),
];

/// fio options iscsi-bench refuses as "not supported" (fio 3.42's options, as its
/// options.c has them, with their aliases, and the common engine options, minus what
/// iscsi-bench implements). [`UNSUPPORTED_WHY`] says why, for some.
pub static UNSUPPORTED: &[&str] = &[
    "lockfile",
    "unique_filename",
    "opendir",
    "bs_is_seq_rand",
    "write_barrier",
    "atomic",
    "trim_percentage",
    "trim_verify_zero",
    "trim_backlog",
    "trim_backlog_batch",
    "merge_blktrace_file",
    "merge_blktrace_scalars",
    "merge_blktrace_iters",
    "zonecapacity",
    "read_beyond_wp",
    "max_open_zones",
    "job_max_open_zones",
    "ignore_zone_limits",
    "zone_reset_threshold",
    "zone_reset_frequency",
    "write_hint",
    "numa_cpu_nodes",
    "numa_mem_policy",
    "log_prio",
    "log_compression",
    "log_compression_cpus",
    "log_store_compressed",
    "log_alternate_epoch",
    "log_alternate_epoch_clock_id",
    "profile",
    "cgroup",
    "cgroup_nodelete",
    "cgroup_weight",
    "uid",
    "gid",
    "userspace_reap",
    "sg_write_mode",
    "readfua",
    "writefua",
    "dataplacement",
    "data_placement",
    "fdp",
    "dp_scheme",
    "plid_select",
    "fdp_pli_select",
    "plids",
    "fdp_pli",
    "recover_zbd_write_error",
    "write_zone_remainder",
    "sprandom",
    "spr_num_regions",
    "spr_op",
    "spr_cs",
    "filetype",
    "job_start_clock_id",
    "verify_pattern_interval",
    "verify_policy",
    "iomem_align",
    "mem_align",
    "gpu_dev_id",
    "flow_watermark",
    "rwmixcycle",
    "percentage_sequential",
    "softrandommap",
    "verifysort",
    "verifysort_nr",
];

/// Why some [`UNSUPPORTED`] options are refused, where the name alone does not say.
pub static UNSUPPORTED_WHY: &[(&[&str], &str)] = &[
    (
        &[
            "dataplacement",
            "data_placement",
            "fdp",
            "dp_scheme",
            "plid_select",
            "fdp_pli_select",
            "plids",
            "fdp_pli",
        ],
        "NVMe data placement (FDP, streams) needs fio's NVMe passthrough engines; a LUN over \
         iSCSI or a local file has no placement IDs",
    ),
    (
        &["recover_zbd_write_error", "write_zone_remainder"],
        "iscsi-bench does not drive zoned block devices (zonemode=zbd)",
    ),
    (
        &["sprandom", "spr_num_regions", "spr_op", "spr_cs"],
        "fio's SanDisk pseudo-random preconditioning is not implemented",
    ),
    (
        &["job_start_clock_id"],
        "iscsi-bench's JSON report has no per-job job_start for it to set the clock of",
    ),
    (
        &["verify_pattern_interval"],
        "it restarts verify_pattern's %o (offset) tokens, which iscsi-bench does not support",
    ),
    (
        &["iomem_align", "mem_align"],
        "I/O buffers are page-aligned heap memory (mem=malloc)",
    ),
    (
        &["filetype"],
        "iscsi-bench looks at each file's type itself (the stat(2) that filetype skips)",
    ),
    (
        &["verify_policy"],
        "verify_state_save keeps every completed write (fio's verify_policy=completed); \
         fsynced is not implemented",
    ),
    (
        &["gpu_dev_id"],
        "GPU memory (mem=cudamalloc) is not supported",
    ),
    (
        &[
            "flow_watermark",
            "rwmixcycle",
            "percentage_sequential",
            "softrandommap",
            "verifysort",
            "verifysort_nr",
        ],
        "fio has deprecated it and ignores it",
    ),
];

/// Why `name` is refused, if [`UNSUPPORTED_WHY`] says.
pub fn unsupported_why(name: &str) -> Option<&'static str> {
    UNSUPPORTED_WHY
        .iter()
        .find(|(names, _)| names.contains(&name))
        .map(|(_, why)| *why)
}

/// `bwavgtime`/`iopsavgtime`: a period in ms. fio takes 0 too and then samples at
/// every turn of its helper thread; a period of at least 1 ms is asked for here.
fn parse_avg_time(text: &str) -> Result<u64, ValueError> {
    match value::parse_u64(text)? {
        0 => Err(ValueError::new("the sample period is at least 1 ms")),
        ms => Ok(ms),
    }
}

/// `steadystate=`: `metric[_slope]:limit[%]` (fio's str_steadystate_cb; a `lat` limit
/// without `%` is a time, in ns without a unit... fio reads it as a time string).
fn parse_steadystate(text: &str) -> Result<SteadyStateSpec, ValueError> {
    let (name, limit) = text.trim().split_once(':').ok_or_else(|| {
        ValueError::new("steadystate threshold must be specified in addition to criterion")
    })?;
    let (metric, slope) = match name.trim() {
        "iops" => (SteadyStateMetric::Iops, false),
        "iops_slope" => (SteadyStateMetric::Iops, true),
        "bw" => (SteadyStateMetric::Bw, false),
        "bw_slope" => (SteadyStateMetric::Bw, true),
        "lat" => (SteadyStateMetric::Lat, false),
        "lat_slope" => (SteadyStateMetric::Lat, true),
        _ => {
            return Err(ValueError::new(
                "expected iops, iops_slope, bw, bw_slope, lat or lat_slope",
            ))
        }
    };
    let limit = limit.trim();
    let (number, percent) = match limit.strip_suffix('%') {
        Some(number) => (number.trim(), true),
        None => (limit, false),
    };
    let limit = if metric == SteadyStateMetric::Lat && !percent {
        value::parse_time(number, TimeUnit::Microseconds)?.as_nanos() as f64
    } else {
        number
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| ValueError::new("the steadystate limit is a number"))?
    };
    Ok(SteadyStateSpec {
        metric,
        slope,
        limit,
        percent,
    })
}

/// The CPUs the machine has (fio's bound for a CPU list), `None` when unknown.
fn configured_cpus() -> Option<u32> {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    u32::try_from(n).ok().filter(|&n| n > 0)
}

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
            why: Why(unsupported_why(name)),
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
            (ValueKind::Required, None) => None,
            (ValueKind::Required, Some(text)) if text.trim().is_empty() => None,
            (_, text) => text.map(str::trim),
        };
        if def.kind == ValueKind::Required && text.is_none() {
            return Err(JobError::MissingValue {
                at: at.clone(),
                option: key.to_string(),
            });
        }
        let mut setting = Setting {
            scope: self,
            def,
            key,
            text,
            at,
        };
        (def.apply)(&mut setting)?;
        let set_here = setting.set_here();
        self.set_at.insert(def.name, set_here);
        Ok(())
    }
}

/// One option being applied: the row, what the user wrote, and the scope it goes to. The
/// helpers turn a [`ValueError`] into the [`JobError`] that names the place, the option as
/// written and the value.
pub struct Setting<'a> {
    scope: &'a mut Scope,
    def: &'static OptionDef,
    key: &'a str,
    text: Option<&'a str>,
    at: &'a Origin,
}

impl<'a> Setting<'a> {
    fn spec(&mut self) -> &mut JobSpec {
        &mut self.scope.spec
    }

    /// The value as written (trimmed; empty for a bare option).
    fn text(&self) -> &'a str {
        self.text.unwrap_or("")
    }

    fn kb_base(&self) -> u32 {
        self.scope.spec.kb_base
    }

    fn set_here(&self) -> SetAt {
        SetAt {
            at: self.at.clone(),
            section: self.scope.section,
        }
    }

    fn bad(&self, error: ValueError) -> JobError {
        error.into_job_error(self.at, self.key, self.text())
    }

    fn fail<T>(&self, reason: &str) -> Result<T, JobError> {
        Err(self.bad(ValueError::new(reason)))
    }

    fn parse<T>(&self, parse: impl FnOnce(&str) -> Result<T, ValueError>) -> Result<T, JobError> {
        parse(self.text()).map_err(|error| self.bad(error))
    }

    /// As [`Setting::parse`], for values whose units depend on `kb_base`.
    fn parse_kb<T>(
        &self,
        parse: impl FnOnce(&str, u32) -> Result<T, ValueError>,
    ) -> Result<T, JobError> {
        self.parse(|text| parse(text, self.kb_base()))
    }

    /// A boolean: the bare name is true.
    fn flag(&self) -> Result<bool, JobError> {
        match self.text {
            None => Ok(true),
            Some(_) => self.parse(value::parse_bool),
        }
    }

    /// A count of at least `min` that fits 32 bits.
    fn count(&self, min: u64) -> Result<u32, JobError> {
        self.parse(|text| parse_count(text, min))
    }

    fn percent(&self) -> Result<u32, JobError> {
        self.parse(|text| value::parse_u64_in(text, 0, 100).map(|percent| percent as u32))
    }

    fn time(&self, unit: TimeUnit) -> Result<Duration, JobError> {
        self.parse(|text| value::parse_time(text, unit))
    }

    /// A time that may not be 0.
    fn nonzero_time(&self, unit: TimeUnit) -> Result<Duration, JobError> {
        let time = self.time(unit)?;
        if time.is_zero() {
            return self.fail("must be greater than 0");
        }
        Ok(time)
    }

    /// A size or percentage that may not be 0 bytes (`size`, `io_size`).
    fn nonzero_size(&self, reason: &str) -> Result<SizeSpec, JobError> {
        let size = self.parse_kb(value::parse_size_or_percent)?;
        if size == SizeSpec::Bytes(0) {
            return Err(JobError::ZeroSize {
                at: self.at.clone(),
                job: self.scope.spec.name.clone(),
                reason: reason.into(),
            });
        }
        Ok(size)
    }

    /// A log option: bare (or empty) names the log after the job.
    fn log_name(&self) -> LogName {
        match self.text {
            None | Some("") => LogName::JobName,
            Some(prefix) => LogName::Prefix(prefix.to_string()),
        }
    }

    /// `rwmixread`/`rwmixwrite`; `read_percent` turns the value into the read share.
    fn rwmix(&mut self, read_percent: fn(u32) -> u32) -> Result<(), JobError> {
        let percent = self.parse(|text| value::parse_u64_in(text, 0, 100))? as u32;
        let read = read_percent(percent);
        let name = self.def.name;
        // fio lets the later of the two win; given in one section and not adding up to
        // 100, one of them would be ignored, so that is refused.
        if let Some((other, other_at)) = &self.scope.rwmix_by {
            if *other != name
                && other_at.section == self.scope.section
                && self.scope.spec.rwmixread != read
            {
                return Err(JobError::Conflict {
                    at: self.at.clone(),
                    job: self.scope.spec.name.clone(),
                    first: format!("{other} ({})", other_at.at),
                    second: format!("{name}={percent}"),
                    reason: "rwmixread and rwmixwrite must add up to 100".into(),
                });
            }
        }
        self.scope.spec.rwmixread = read;
        self.scope.rwmix_by = Some((name, self.set_here()));
        Ok(())
    }

    /// `bs`, `bsrange`, `bssplit`: a per-direction list of `parse_one`. Two of them setting
    /// one direction in one section conflict.
    fn block_size(
        &mut self,
        parse_one: impl Fn(&str, u32) -> Result<BlockSize, ValueError>,
    ) -> Result<(), JobError> {
        let parsed = self.parse_kb(|text, kb_base| {
            value::parse_per_dir(text, &self.scope.spec.block_size, |part| {
                parse_one(part, kb_base)
            })
        })?;
        let name = self.def.name;
        for direction in [Direction::Read, Direction::Write, Direction::Trim] {
            if !text_sets_direction(self.text(), direction) {
                continue;
            }
            if let Some((other, other_at)) = self.scope.block_size_by.get(direction) {
                if *other != name && other_at.section == self.scope.section {
                    return Err(JobError::Conflict {
                        at: self.at.clone(),
                        job: self.scope.spec.name.clone(),
                        first: format!("{other} ({})", other_at.at),
                        second: name.to_string(),
                        reason: format!(
                            "both set the {} block size; give one of them",
                            direction.fio_name()
                        ),
                    });
                }
            }
            let set_here = self.set_here();
            *self.scope.block_size_by.get_mut(direction) = Some((name, set_here));
        }
        self.scope.spec.block_size = parsed;
        Ok(())
    }

    /// `rate` and friends: per direction, in bytes or I/Os per second; 0 means no cap (or
    /// no floor), as in fio.
    fn rate(
        &mut self,
        in_bytes: bool,
        field: fn(&mut JobSpec) -> &mut PerDir<Option<u64>>,
    ) -> Result<(), JobError> {
        let kb_base = self.kb_base();
        let current = field(self.spec()).clone();
        let rates = self.parse(|text| {
            value::parse_per_dir(text, &current, |part| {
                let rate = if in_bytes {
                    value::parse_size(part, kb_base)?
                } else {
                    value::parse_u64(part)?
                };
                Ok((rate > 0).then_some(rate))
            })
        })?;
        *field(self.spec()) = rates;
        Ok(())
    }

    /// The credentials one of the CHAP options fills (created empty by the first of them).
    fn chap(
        &mut self,
        slot: fn(&mut IscsiOptions) -> &mut Option<ChapCredentials>,
    ) -> &mut ChapCredentials {
        slot(&mut self.scope.spec.iscsi).get_or_insert_with(|| ChapCredentials {
            username: String::new(),
            secret: String::new(),
        })
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

/// `paths=`: `all`, or portals separated by commas, checked for shape here and resolved
/// when the engine opens ([`PathList`]).
fn parse_paths(text: &str) -> Result<PathList, ValueError> {
    text.parse().map_err(ValueError::new)
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

fn parse_engine(text: &str) -> Result<(Engine, Option<SyncCall>), ValueError> {
    let sync = |call| Ok((Engine::IoUring, Some(call)));
    match text {
        "iscsi" | "libiscsi" => Ok((Engine::Iscsi, None)),
        // fio's asynchronous local-file engines issue what io_uring issues (the same reads
        // and writes, `iodepth` of them in flight, O_DIRECT with `direct`): their job
        // files (fio's examples/fio-rand-read.fio and the like) run on io_uring.
        "io_uring" | "libaio" | "posixaio" => Ok((Engine::IoUring, None)),
        "sync" => sync(SyncCall::Sync),
        "psync" => sync(SyncCall::Psync),
        "pvsync" => sync(SyncCall::Pvsync),
        "pvsync2" => sync(SyncCall::Pvsync2),
        "null" => Ok((Engine::Null, None)),
        // fio's vsync gathers contiguous I/Os into one readv/writev, `iodepth` of them.
        "vsync" => Err(ValueError::new(
            "fio's vsync engine (contiguous I/Os gathered into one readv/writev) is not \
             supported by iscsi-bench; psync, pvsync and pvsync2 are",
        )),
        "mmap" | "sg" | "io_uring_cmd" | "splice" | "net" | "netsplice" | "rbd" | "rados"
        | "nbd" | "rdma" | "falloc" | "cpuio" | "dev-dax" | "libpmem" | "http" | "nfs" | "spdk"
        | "windowsaio" | "solarisaio" | "exec" | "filecreate" | "filestat" | "filedelete" => {
            Err(ValueError::new(format!(
                "fio's {text} engine is not supported by iscsi-bench ({ENGINES}; for a local \
             file, io_uring)"
            )))
        }
        _ => Err(ValueError::new(format!("unknown engine ({ENGINES})"))),
    }
}

/// The engines `ioengine` takes, for its errors.
const ENGINES: &str = "iscsi, libiscsi, io_uring, libaio, posixaio, psync, sync, pvsync, \
                       pvsync2, null";

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
    use super::super::cli::{parse_command_line_with_env, Action};
    use super::*;

    fn apply(scope: &mut Scope, key: &str, value: Option<&str>) -> Result<(), JobError> {
        scope.apply(key, value, &Origin::CommandLine { arg_index: 1 })
    }

    /// Applies `name=value` to a fresh job (a CHAP option with its partner, which the
    /// renderer needs to write a value for).
    fn job_with(name: &str, value: Option<&str>) -> Result<Scope, JobError> {
        let mut scope = Scope::new(JobSpec::new("t"));
        for partner in ["chap_username", "chap_secret"] {
            if name.contains("chap_") && !name.ends_with(partner) {
                let partner = format!("{}{partner}", &name[..name.find("chap_").unwrap()]);
                apply(&mut scope, &partner, Some("partner")).unwrap();
            }
        }
        apply(&mut scope, name, value)?;
        Ok(scope)
    }

    /// The spec the rendered options of `spec` make from the defaults.
    fn parsed_back(spec: &JobSpec) -> JobSpec {
        let mut scope = Scope::new(JobSpec::new(spec.name.clone()));
        for (name, value) in render::spec_options(spec) {
            let value = value.filter(|value| !value.is_empty());
            apply(&mut scope, name, value.as_deref())
                .unwrap_or_else(|e| panic!("{name}={value:?} does not parse back: {e}"));
        }
        scope.spec
    }

    #[test]
    fn every_row_parses_renders_and_round_trips() {
        let default = JobSpec::new("t");
        for def in OPTIONS {
            // The defaults render nothing, so they round-trip as themselves.
            assert_eq!((def.render)(&default, &default), None, "{}", def.name);
            let values: &[Option<&str>] = match def.kind {
                ValueKind::Flag => &[None, Some("0"), Some("1")],
                ValueKind::Optional => &[None, Some("run1")],
                ValueKind::Required => &[Some(sample_value(def.name))],
            };
            for value in values {
                // Each row reads its value (an alias reaches the same row), and what the
                // table renders reads back to the same job.
                let spec = match job_with(def.name, *value) {
                    Ok(scope) => scope.spec,
                    // The values the table refuses among these: processes, and the trim
                    // block histogram (bare or 1).
                    Err(_) if (def.name, *value) == ("thread", Some("0")) => continue,
                    Err(_) if def.name == "block_error_percentiles" && *value != Some("0") => {
                        continue
                    }
                    Err(error) => panic!("{}={value:?}: {error}", def.name),
                };
                assert_eq!(parsed_back(&spec), spec, "{}={value:?}", def.name);
                for alias in def.aliases {
                    assert_eq!(job_with(alias, *value).unwrap().spec, spec, "{alias}");
                }
            }
        }
        assert_eq!(parsed_back(&default), default);
    }

    fn sample_value(name: &str) -> &'static str {
        match name {
            "filename" => "/tmp/x",
            "ioengine" => "null",
            "kb_base" => "1024",
            "rw" => "randrw",
            "copy_method" => "host",
            "rw_sequencer" => "identical",
            "random_generator" => "lfsr",
            "unified_rw_reporting" => "both",
            "exit_what" => "all",
            "io_submit_mode" => "offload",
            "sync" => "dsync",
            "dedupe_mode" => "working_set",
            "log_hist_coarseness" => "3",
            "latency_percentile" => "99.5",
            "verify_interval" => "512",
            "steadystate" | "ss" => "bw:5%",
            "steadystate_check_interval" | "ss_interval" => "2",
            "percentage_random" => "30,40",
            "random_distribution" => "zipf:1.2",
            "verify" => "md5",
            "verify_pattern" => "0xff",
            "rate_process" => "poisson",
            "header_digest" | "data_digest" => "crc32c",
            "transport" => "dependent",
            "file_service_type" => "random:2",
            "continue_on_error" => "io",
            "fallocate" => "truncate",
            "fadvise_hint" => "noreuse",
            "log_window_value" | "log_max_value" => "max",
            "sync_file_range" => "wait_before,write:4",
            "exec_prerun" | "exec_postrun" => "echo hi > x",
            "ignore_error" => "EIO:ETIMEDOUT,110",
            "description" | "initiator_name" | "chap_username" | "chap_secret" => "some text",
            "rate_cycle" => "250ms",
            "paths" => "127.0.0.1:3260,[::1]:3261",
            "path_policy" => "service-time",
            "startdelay" => "1-3",
            "zonemode" => "strided",
            "zoneskip" => "2z",
            "filesize" => "1m-2m",
            "write_iolog" | "read_iolog" | "replay_redirect" => "/tmp/x.iolog",
            "replay_skip" => "write,sync",
            "offset" | "size" => "25%",
            "mem" | "iomem" => "malloc",
            "bsrange" => "4k-16k",
            "percentile_list" => "50:99",
            "cpus_allowed" | "verify_async_cpus" => "0",
            "log_entries" => "4096",
            "clocksource" => "cpu",
            "unit_base" => "1",
            "cpus_allowed_policy" => "split",
            "thinktime_blocks_type" => "issue",
            "prio" | "prioclass" | "cmdprio_class" => "3",
            "sqthread_poll_cpu" => "1",
            "cmdprio" => "5",
            "cmdprio_percentage" => "30,70",
            "cmdprio_bssplit" => "4k/50:8k/20/2/3/1,4k/10",
            "nonvectored" => "-1",
            "nice" => "-5",
            "max_latency" => "10ms,,2s",
            "bssplit" => "4k/100",
            "max_burst_length" | "first_burst_length" | "max_recv_data_segment_length" => "8k",
            _ => "8",
        }
    }

    #[test]
    fn nrfiles_and_openfiles_refuse_what_fio_refuses_naming_the_option() {
        for (name, value) in [("nrfiles", "x"), ("nrfiles", "0"), ("nr_files", "-1")] {
            let Err(error) = job_with(name, Some(value)) else {
                panic!("{name}={value} was taken");
            };
            let error = error.to_string();
            assert!(error.contains(name), "{name}={value}: {error}");
        }
        assert_eq!(job_with("nr_files", Some("4")).unwrap().spec.nrfiles, 4);
        assert_eq!(job_with("openfiles", Some("0")).unwrap().spec.openfiles, 0);
        assert!(job_with("openfiles", Some("x")).is_err());
    }

    #[test]
    fn every_reason_is_for_a_refused_name_and_is_shown() {
        for (names, why) in UNSUPPORTED_WHY {
            for name in *names {
                assert!(
                    UNSUPPORTED.contains(name),
                    "{name} has a reason, not a refusal"
                );
                let error = unknown_option(name, &Origin::Builtin).to_string();
                assert!(
                    error.contains("does not support") && error.ends_with(why),
                    "{error}"
                );
            }
        }
        let plain = unknown_option("lockfile", &Origin::Builtin).to_string();
        assert!(plain.ends_with("does not support"), "{plain}");
    }

    #[test]
    fn io_uring_options_read_fios_values_and_refuse_the_rest_by_name() {
        let spec = |name: &str, value: Option<&str>| job_with(name, value).unwrap().spec;
        let both = |read: u32, write: u32| PerDir {
            read,
            write,
            trim: write,
        };
        assert_eq!(
            spec("cmdprio_percentage", Some("30")).cmdprio.percentage,
            both(30, 30)
        );
        assert_eq!(
            spec("cmdprio_percentage", Some("10,90")).cmdprio.percentage,
            both(10, 90)
        );
        assert_eq!(spec("cmdprio_class", Some("3")).cmdprio.class, both(3, 3));
        assert_eq!(spec("cmdprio", Some("0,7")).cmdprio.level, both(0, 7));
        assert_eq!(
            spec("cmdprio_hint", Some("1023")).cmdprio.hint,
            both(1023, 1023)
        );
        assert_eq!(spec("nonvectored", Some("0")).nonvectored, 0);
        assert_eq!(
            JobSpec::new("t").nonvectored,
            -1,
            "fio's default is -1 (probe)"
        );
        assert_eq!(spec("uncached", Some("1")).uncached, 1);
        assert!(spec("nowait", None).nowait);
        assert_eq!(spec("force_async", Some("4")).force_async, 4);
        assert_eq!(
            spec("sqthread_poll_cpu", Some("0")).sqthread_poll_cpu,
            Some(0)
        );
        assert!(spec("hipri", None).hipri);
        for (name, value) in [
            ("cmdprio_percentage", "101"),
            ("cmdprio_class", "0"),
            ("cmdprio_class", "4"),
            ("cmdprio", "8"),
            ("cmdprio_hint", "1024"),
            ("force_async", "-1"),
            ("sqthread_poll_cpu", "-1"),
            ("nonvectored", "x"),
        ] {
            let Err(error) = job_with(name, Some(value)) else {
                panic!("{name}={value} was taken");
            };
            assert!(error.to_string().contains(name), "{name}={value}: {error}");
        }
        let split = spec("cmdprio_bssplit", Some("4k/50:8k/25/2/3,16k/10")).cmdprio;
        let split = split.bssplit.expect("cmdprio_bssplit");
        assert_eq!((split.read.len(), split.write.len()), (2, 1));
        assert_eq!(
            (split.read[1].bs, split.read[1].priority),
            (8192, Some((2, 3, 0)))
        );
        let Err(error) = job_with("cmdprio_bssplit", Some("4k/70:4k/40")) else {
            panic!("shares above 100 were taken");
        };
        assert!(error.to_string().contains("exceeds 100"), "{error}");
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
        let fsync = unknown_option("write_barrier", &Origin::Builtin);
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
    fn max_latency_is_per_direction_in_whole_microseconds() {
        let us = |n: u64| Some(Duration::from_micros(n));
        let job = |value: &str| {
            job_with("max_latency", Some(value))
                .unwrap()
                .spec
                .max_latency
        };
        // One value for all three, as fio's bs-style lists; the last carries over.
        assert_eq!(job("5ms"), PerDir::splat(us(5000)));
        let split = job("10s,1us");
        assert_eq!(
            (split.read, split.write, split.trim),
            (us(10_000_000), us(1), us(1))
        );
        // An empty slot keeps the direction; 0 is no limit.
        let only_write = job(",1ms,0");
        assert_eq!(
            (only_write.read, only_write.write, only_write.trim),
            (None, us(1000), None)
        );
        assert!(job_with("max_latency", Some("abc")).is_err());
        assert!(job_with("max_latency", Some("1,2,3,4")).is_err());
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
            apply(&mut scope, "ioengine", Some("vsync")),
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
            cmdhelp("write_barrier"),
            Err(JobError::Unsupported { .. })
        ));
        assert!(matches!(
            cmdhelp("bsx"),
            Err(JobError::UnknownOption { .. })
        ));
    }

    #[test]
    fn cmdhelp_lists_every_row_and_shows_each() {
        let cmdhelp = |arg: &str| -> Result<String, JobError> {
            let invocation = parse_command_line_with_env([arg], &|_| None)?;
            match invocation.action {
                Action::CmdHelp(text) => Ok(text),
                other => panic!("{arg}: {other:?}"),
            }
        };
        // Bare, as in fio, it lists all: one line per row, in the table's order.
        let all = cmdhelp("--cmdhelp").unwrap();
        assert_eq!(all, cmdhelp("--cmdhelp=all").unwrap());
        assert_eq!(all.lines().count(), OPTIONS.len());
        for (line, def) in all.lines().zip(OPTIONS) {
            let (name, help) = line.split_once(':').unwrap();
            assert_eq!(name.trim(), def.name);
            assert!(help.contains(def.help), "{line}");
            assert_eq!(help.contains("[iscsi-bench]"), def.ours, "{line}");
        }
        // One option, by its name or an alias: the row's name, help, syntax and default.
        for def in OPTIONS {
            for name in std::iter::once(&def.name).chain(def.aliases) {
                let text = cmdhelp(&format!("--cmdhelp={name}")).unwrap();
                let first = text.lines().next().unwrap();
                assert_eq!(first.split_once(':').unwrap().0.trim(), def.name, "{text}");
                for part in [def.help, def.syntax, def.default] {
                    assert!(text.contains(part), "{name}: {part:?} missing from\n{text}");
                }
            }
        }
        let typo = cmdhelp("--cmdhelp=iodpeth").unwrap_err();
        assert!(
            typo.to_string().contains("did you mean \"iodepth\""),
            "{typo}"
        );
        let unsupported = cmdhelp("--cmdhelp=write_barrier").unwrap_err();
        assert!(matches!(unsupported, JobError::Unsupported { .. }));
    }

    #[test]
    fn zone_and_filesize_values() {
        let mut scope = Scope::new(JobSpec::new("t"));
        apply(&mut scope, "zonemode", Some("strided")).unwrap();
        apply(&mut scope, "zoneskip", Some("3z")).unwrap();
        assert_eq!(scope.spec.zoneskip, ZoneSkip::Zones(3));
        apply(&mut scope, "zoneskip", Some("2g")).unwrap();
        assert_eq!(scope.spec.zoneskip, ZoneSkip::Bytes(2 << 30));
        apply(&mut scope, "filesize", Some("1g")).unwrap();
        let fixed = scope.spec.filesize.unwrap();
        assert_eq!((fixed.min, fixed.max), (1 << 30, 1 << 30));
        assert_eq!(
            lookup("filesize").unwrap().rendered(&scope.spec).unwrap(),
            "1073741824"
        );
        for (option, bad, why) in [
            ("zonemode", "zbd", "zoned block device"),
            ("zonemode", "random", "none or strided"),
            ("zoneskip", "z", "empty value"),
            ("zoneskip", "2Z", "unit"),
            ("filesize", "0", "at least 1"),
            ("filesize", "2m-1m", "minimum"),
        ] {
            let error = apply(&mut scope, option, Some(bad))
                .unwrap_err()
                .to_string();
            assert!(error.contains(why), "{option}={bad}: {error}");
        }
    }

    /// fio's order: `ignore_error` continues on the types it lists, a later
    /// `continue_on_error` sets the types anew, and the rendered options read back alike.
    #[test]
    fn ignore_error_continues_on_its_types_until_continue_on_error_says_otherwise() {
        let mut scope = Scope::new(JobSpec::new("t"));
        apply(&mut scope, "ignore_error", Some(",EFBIG,EILSEQ")).unwrap();
        assert_eq!(scope.spec.error_policy.continue_on, [false, true, true]);
        let rendered = render::spec_options(&scope.spec);
        assert!(!rendered
            .iter()
            .any(|(name, _)| *name == "continue_on_error"));
        apply(&mut scope, "continue_on_error", Some("none")).unwrap();
        assert_eq!(scope.spec.error_policy.continue_on, [false, false, false]);
        let mut again = Scope::new(JobSpec::new("t"));
        for (name, value) in render::spec_options(&scope.spec) {
            apply(&mut again, name, value.as_deref()).unwrap();
        }
        assert_eq!(again.spec.error_policy, scope.spec.error_policy);
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

    #[test]
    fn multipath_options() {
        let mut scope = Scope::new(JobSpec::new("t"));
        apply(
            &mut scope,
            "paths",
            Some("10.0.0.1:3261, host-b,[fd00::1]:3262,[::1]"),
        )
        .unwrap();
        apply(&mut scope, "path_policy", Some("service-time")).unwrap();
        apply(&mut scope, "no_path_retry", Some("5")).unwrap();
        let spec = &scope.spec;
        assert_eq!(
            spec.iscsi.paths,
            Some(PathList::Portals(vec![
                "10.0.0.1:3261".into(),
                "host-b".into(),
                "[fd00::1]:3262".into(),
                "[::1]".into(),
            ]))
        );
        assert_eq!(
            spec.iscsi.path_policy,
            Some(datapath::shard::PathPolicy::ServiceTime)
        );
        assert_eq!(spec.iscsi.no_path_retry, Some(Duration::from_secs(5)));
        apply(&mut scope, "paths", Some("all")).unwrap();
        assert_eq!(scope.spec.iscsi.paths, Some(PathList::All));
        for (bad, why) in [
            ("fd00::1:3260", "brackets"),
            ("[fd00::1:3260", "unclosed"),
            ("host:0", "not 1-65535"),
            ("host:http", "not 1-65535"),
            (":3260", "no host"),
            ("a,,b", "no host"),
        ] {
            let error = apply(&mut scope, "paths", Some(bad))
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("paths") && error.contains(why),
                "paths={bad}: {error}"
            );
        }
        let error = apply(&mut scope, "path_policy", Some("fastest"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("service-time"), "{error}");
    }
}
