//! fio-compatible input: job files and command-line options, parsed into typed
//! [`JobSpec`]s (issue 5, items 1 and 8).
//!
//! The reference is fio 3.33's documented behaviour (`man fio`: "JOB FILE FORMAT",
//! "PARAMETER TYPES", the option entries) checked against the installed fio with
//! `fio --debug=parse --parse-only` and short `ioengine=null` runs. The parts:
//! - [`ini`]: the job-file syntax (sections, comments, `include`, `${ENV}`);
//! - [`value`]: value syntax (units, per-direction lists, ranges, bssplit, ...);
//! - [`options`]: the option table, one row per option (fio's names and aliases,
//!   iscsi-bench's own iSCSI options) with its help and the functions that read and write
//!   its value, and the fio options that are refused as unsupported;
//! - [`build`]: `[global]` scoping, job order, reporting groups, whole-job checks;
//! - [`cli`]: fio's command line and the tool options;
//! - [`render`]: specs back to a job file or a command line (`--showcmd`) through the
//!   table's rows;
//!
//! Where iscsi-bench differs from fio on purpose (all of them refusals of input fio
//! accepts with a surprising meaning or a warning):
//! - `${NAME}` with NAME unset is an error (fio substitutes an empty string);
//! - `1.5g`, `10min`, `4q`, ` 1m` are errors (fio reads 1, 10 us, 4, 1);
//! - `time_based` without `runtime` is an error (fio warns and ignores it);
//! - `rwmixread` and `rwmixwrite` in one section not adding up to 100 is an error (fio
//!   lets the later win); across sections the later one wins, as in fio;
//! - two of `bs`/`bsrange`/`bssplit` setting one direction in one section is an error
//!   (fio lets `bssplit` win); a job's setting overrides `[global]`'s, as in fio;
//! - `thinktime_blocks`, `thinktime_blocks_type`, `thinktime_spin` or `thinktime_iotime`
//!   without `thinktime`, `rate_process=poisson` without a rate,
//!   `verify_backlog`/`verify_fatal`/`do_verify=0` without `verify`, io_uring options on
//!   other engines, iSCSI options on other engines, and `iodepth_batch_*` above `iodepth`
//!   are errors (fio ignores or clamps them);
//! - booleans also take true/false, yes/no, on/off, and a bare name (fio: 1/0 only);
//! - blanks around `=` are ignored (fio keeps them in the value);
//! - `percentile_list` takes up to 256 entries (fio: 20);
//! - fio's `filename=a:b` lists are taken for local files and for iSCSI LUNs of one target
//!   (one login), with `file_service_type` roundrobin, sequential or random (`:N` I/Os per
//!   choice); lists of LUNs on several targets are refused (escape `\:` as fio does);
//! - `nrfiles=0` is refused (fio makes no file and runs nothing), and so are a negative
//!   `openfiles` and an `nrfiles` whose `filename_format` names two files alike;
//! - `unlink_each_loop` with `loops` is refused for several files per job and for a job
//!   that does not write (fio fails its second loop: the file is gone);
//! - a job's `size` is divided evenly between its files (fio gives the first files one block
//!   more when it does not divide);
//! - a job with verify and a read-only pattern is accepted, as in fio: it checks what an
//!   earlier write run left;
//! - `random_generator` is taken with fio's names, but there is one generator: random
//!   offsets differ from fio's whichever is named (their shape is checked against fio's);
//! - `fill_device` on a regular file without `size` is refused (fio fills the file system);
//! - `zonemode=zbd` is refused (no LUN here is a zoned block device; fio emulates zones on
//!   plain files); `zonemode=strided` with an `rw` offset modifier, `percentage_random` or a
//!   skewed `random_distribution` is refused when the job is set up (fio draws the skewed
//!   ones over the whole file, past the zone), and so is a `zonerange` below the block size;
//! - `filesize` past the end of a LUN or block device is refused (fio ends the job at the
//!   device's end); a `filesize` range draws each file's size from our own generator (within
//!   the range, but not fio's sizes), and a `size` below the files' total is shared out as
//!   roundrobin would for `file_service_type=random` too (fio's shares follow its draws);
//! - `--terse-version` other than 3 is refused; `steadystate` is judged per job (fio pools
//!   a reporting group's jobs under `group_reporting`);
//! - `pre_read` with `direct=1` is refused (fio's pre-read buffer is not aligned for
//!   O_DIRECT and its job fails with EIO); `create_on_open` and `file_append` on a job that
//!   reads are refused (fio reads nothing from the new empty file, or lays the file out
//!   anew over what it would append to); `bs_unaligned` with `verify` is refused;
//! - `mem`/`iomem` other than `malloc` is refused (the I/O buffers are heap memory);
//!   `offset_align=0` aligns to the minimum block size, as fio's HOWTO says (fio 3.42
//!   divides by it and dies); `sync_file_range=...:N` needs a number after the colon (fio
//!   reads anything else as 0, never);
//! - `unlink_each_loop` is refused (the engine keeps its file open across loops).
//!
//! `numjobs` is kept in each spec, not expanded (see [`JobSpec`]).

// `JobError` carries its facts inline (place, job, options, reason), which makes it larger
// than clippy likes in a `Result`. Parsing runs once per invocation, off the I/O path, so
// the size costs nothing worth boxing the facts for.
#![allow(clippy::result_large_err)]

pub mod build;
pub mod cli;
pub mod error;
pub mod error_policy;
pub mod file_options;
pub mod ini;
pub mod options;
pub mod render;
pub mod spec;
pub mod value;

use std::path::Path;

pub use cli::{
    help_text, parse_command_line, parse_command_line_with_env, version_text, Action, Eta,
    Invocation, OutputFormats, ToolOptions,
};
pub use error::{JobError, Origin};
pub use render::{render_command_line, render_job_file};
pub use spec::{
    BlockSize, BsSplitEntry, ChapCredentials, ChecksumKind, CopyMethod, CopySpec, DigestChoice,
    Distribution, Engine, IscsiOptions, IscsiUrl, JobSpec, LogName, LogWindowValue, PerDir,
    RateProcess, Region, RwKind, RwMode, SizeSpec, Target, TransportKind, ValueRange, VerifyKind,
    DEFAULT_BLOCK_SIZE_BYTES, DEFAULT_PERCENTILES,
};

/// Parse one job file (and its includes) from disk, reading `${NAME}` from the process
/// environment.
pub fn parse_job_file(path: &Path) -> Result<Vec<JobSpec>, JobError> {
    parse_job_file_with_env(path, &ini::process_env)
}

/// As [`parse_job_file`], with `env` answering `${NAME}`.
pub fn parse_job_file_with_env(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<JobSpec>, JobError> {
    let items = ini::IniReader::new(env).read_file(path)?;
    collect(&items)
}

/// Parse job-file text; `path` names it in errors and anchors `include`.
pub fn parse_job_str(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<JobSpec>, JobError> {
    let items = ini::IniReader::new(env).read_str(path, text)?;
    collect(&items)
}

fn collect(items: &[ini::Item]) -> Result<Vec<JobSpec>, JobError> {
    let mut collector = build::Collector::new(Default::default(), false);
    collector.end_command_line()?;
    collector.begin_file();
    cli::feed_items(&mut collector, items)?;
    collector.end_file()?;
    collector.finish(true)
}
