//! From sections and options to job specs: fio's scoping of `[global]`, job order,
//! reporting groups, and the checks of a whole job.
//!
//! Scoping, as fio 3.33 does it (checked by running it):
//! - command-line options before the first `--name` are defaults for every job, from the
//!   command line and from job files; a job file's own options override them;
//! - a `[global]` section sets defaults for the jobs below it in the same file; a later
//!   `[global]` adds to them; the next job file starts again from the command-line
//!   defaults;
//! - command-line jobs come first, then the jobs of each file in order;
//! - a job starts a new reporting group when it has `stonewall` or `new_group` and the
//!   current group has jobs; the first job of every job file after the first does too.

use std::collections::BTreeSet;

use super::error::{JobError, Origin};
use super::options::{Category, Scope, OPTIONS};
use super::spec::{Engine, JobSpec, RateProcess, SizeSpec, SyncCall, Target, VerifyKind, ZoneMode};
use crate::io::Direction;

/// The name of the job made from command-line options when no `--name` and no job file is
/// given (fio needs `--name`; `iscsi-bench --rw=randread` works without).
pub const IMPLICIT_JOB_NAME: &str = "iscsi-bench";

/// Collects sections and options from the command line and job files, in order.
pub struct Collector {
    /// Defaults from the command line.
    base: Scope,
    /// Defaults of the file being read.
    global: Scope,
    /// The job being read, if any (None: reading the global scope, or nothing yet).
    current: Option<Scope>,
    /// Whether an option before any section is allowed (on the command line it is).
    in_section: bool,
    section_counter: u32,
    jobs: Vec<JobSpec>,
    group_id: u32,
    group_has_jobs: bool,
    files_done: usize,
    first_job_of_file: bool,
    /// `--section` names: only these job sections run (empty: all). fio matches the
    /// section's name, not a `name=` given inside it.
    sections: BTreeSet<String>,
    section_name: String,
    /// Every job section met, in order, to name the choices when `--section` matches none.
    job_sections: Vec<String>,
    readonly: bool,
}

impl Collector {
    pub fn new(sections: BTreeSet<String>, readonly: bool) -> Collector {
        Collector {
            base: Scope::new(JobSpec::new(IMPLICIT_JOB_NAME)),
            global: Scope::new(JobSpec::new(IMPLICIT_JOB_NAME)),
            current: None,
            in_section: true,
            section_counter: 0,
            jobs: Vec::new(),
            group_id: 0,
            group_has_jobs: false,
            files_done: 0,
            first_job_of_file: true,
            sections,
            section_name: String::new(),
            job_sections: Vec::new(),
            readonly,
        }
    }

    fn next_section(&mut self) -> u32 {
        self.section_counter += 1;
        self.section_counter
    }

    /// Start a section (`[name]` or `--name=name`). `skip` is set for sections that
    /// `--section` leaves out; their options are then not applied.
    pub fn begin_section(&mut self, name: &str, at: &Origin) -> Result<(), JobError> {
        self.finish_job()?;
        self.in_section = true;
        let section = self.next_section();
        self.section_name = name.to_string();
        if name == "global" {
            self.global.section = section;
            return Ok(());
        }
        if !self.job_sections.iter().any(|known| known == name) {
            self.job_sections.push(name.to_string());
        }
        let mut scope = self.global.clone();
        scope.section = section;
        scope.spec.name = name.to_string();
        scope.spec.origin = at.clone();
        self.current = Some(scope);
        Ok(())
    }

    fn skipping(&self) -> bool {
        match &self.current {
            Some(_) => !self.sections.is_empty() && !self.sections.contains(&self.section_name),
            None => false,
        }
    }

    /// Apply one option to the current job, or to the defaults.
    pub fn option(&mut self, key: &str, value: Option<&str>, at: &Origin) -> Result<(), JobError> {
        if !self.in_section {
            return Err(JobError::OutsideSection {
                at: at.clone(),
                option: key.to_string(),
            });
        }
        if self.skipping() {
            return Ok(());
        }
        let written = (key.to_string(), value.unwrap_or_default().to_string());
        match &mut self.current {
            Some(scope) => {
                scope.apply(key, value, at)?;
                scope.spec.given.own.push(written);
            }
            None => {
                self.global.apply(key, value, at)?;
                self.global.spec.given.global.push(written);
            }
        }
        Ok(())
    }

    /// End the command line: its defaults become the base of every job file.
    pub fn end_command_line(&mut self) -> Result<(), JobError> {
        self.finish_job()?;
        self.base = self.global.clone();
        Ok(())
    }

    /// Start a job file: defaults from the command line, and no section yet.
    pub fn begin_file(&mut self) {
        self.global = self.base.clone();
        self.in_section = false;
        self.first_job_of_file = true;
    }

    /// End a job file.
    pub fn end_file(&mut self) -> Result<(), JobError> {
        self.finish_job()?;
        self.files_done += 1;
        Ok(())
    }

    /// All jobs, in order. With no job at all but command-line defaults given, one job
    /// named [`IMPLICIT_JOB_NAME`] runs with them.
    pub fn finish(mut self, any_files: bool) -> Result<Vec<JobSpec>, JobError> {
        self.finish_job()?;
        // A --section that matches nothing is a typo, not a wish to run less.
        if let Some(missing) = self
            .sections
            .iter()
            .find(|s| !self.job_sections.contains(s))
        {
            return Err(JobError::NoSuchSection {
                section: missing.clone(),
                known: self.job_sections.clone(),
            });
        }
        if self.jobs.is_empty() && !any_files && !self.base.set_at.is_empty() {
            let mut scope = self.base.clone();
            scope.spec.name = IMPLICIT_JOB_NAME.to_string();
            scope.spec.origin = Origin::CommandLine { arg_index: 0 };
            self.current = Some(scope);
            self.first_job_of_file = false;
            self.finish_job()?;
        }
        if self.jobs.is_empty() {
            return Err(JobError::NoJobs);
        }
        // fio (steadystate.c): "steadystate options must be consistent within reporting
        // groups".
        for (index, job) in self.jobs.iter().enumerate() {
            let ss = |j: &JobSpec| (j.ss_dur, j.ss_ramp, j.ss_interval, j.steadystate);
            if let Some(other) = self.jobs[..index]
                .iter()
                .find(|o| o.group_id == job.group_id && ss(o) != ss(job))
            {
                return Err(JobError::InvalidJob {
                    at: job.origin.clone(),
                    job: job.name.clone(),
                    reason: format!(
                        "its steadystate options differ from those of job {:?} in its \
                         reporting group (fio: steadystate options must be consistent within \
                         reporting groups; set them in [global] or start a new_group)",
                        other.name
                    ),
                });
            }
        }
        // fio (time.c): "job rejected: inconsistent ramp_size within reporting group",
        // checked for a job with a ramp against the jobs before it.
        for (index, job) in self.jobs.iter().enumerate() {
            if job.ramp_size.is_none() && job.ramp_time.is_zero() {
                continue;
            }
            if let Some(other) = self.jobs[..index]
                .iter()
                .find(|o| o.group_id == job.group_id && o.ramp_size != job.ramp_size)
            {
                return Err(JobError::InvalidJob {
                    at: job.origin.clone(),
                    job: job.name.clone(),
                    reason: format!(
                        "its ramp_size differs from that of job {:?} in its reporting group \
                         (fio: inconsistent ramp_size within reporting group; set it in \
                         [global] or start a new_group)",
                        other.name
                    ),
                });
            }
        }
        Ok(self.jobs)
    }

    fn finish_job(&mut self) -> Result<(), JobError> {
        let skipping = self.skipping();
        let Some(scope) = self.current.take() else {
            return Ok(());
        };
        if skipping {
            return Ok(());
        }
        let mut scope = scope;
        if let Err(reason) = scope.spec.place_local_file() {
            return Err(JobError::InvalidJob {
                at: scope.spec.origin.clone(),
                job: scope.spec.name.clone(),
                reason,
            });
        }
        validate(&scope, self.readonly)?;
        if let Err(reason) = check_wait_for(&scope.spec, &self.jobs) {
            return Err(JobError::InvalidJob {
                at: scope.spec.origin.clone(),
                job: scope.spec.name.clone(),
                reason,
            });
        }
        let mut spec = scope.spec;
        let file_boundary = self.first_job_of_file && self.files_done > 0;
        if (spec.stonewall || spec.new_group || file_boundary) && self.group_has_jobs {
            self.group_id += 1;
        }
        spec.group_id = self.group_id;
        self.group_has_jobs = true;
        self.first_job_of_file = false;
        self.jobs.push(spec);
        Ok(())
    }
}

/// fio's `wait_for_ok` (init.c): the waitee is a job defined before this one (no forward
/// references), not the job itself, and the only earlier job of that name.
fn check_wait_for(spec: &JobSpec, earlier: &[JobSpec]) -> Result<(), String> {
    let Some(waitee) = spec.wait_for.as_deref() else {
        return Ok(());
    };
    if waitee == spec.name {
        return Err(format!(
            "wait_for={waitee}: a job cannot wait for itself (fio refuses it)"
        ));
    }
    match earlier.iter().filter(|job| job.name == waitee).count() {
        0 => Err(format!(
            "wait_for={waitee}: waitee job {waitee} unknown (fio refuses it: the waitee must \
             be a job defined before this one)"
        )),
        1 => Ok(()),
        _ => Err(format!(
            "wait_for={waitee}: multiple waitees {waitee} found (fio refuses it: give the \
             waitee a unique name)"
        )),
    }
}

/// The checks of a whole job (`man fio` where fio checks the same; iscsi-bench is stricter
/// where fio warns and carries on).
pub fn validate(scope: &Scope, readonly: bool) -> Result<(), JobError> {
    let spec = &scope.spec;
    let at = spec.origin.clone();
    let job = spec.name.clone();
    let conflict = |first: &str, second: &str, reason: &str| JobError::Conflict {
        at: at.clone(),
        job: job.clone(),
        first: scope.where_set(first),
        second: scope.where_set(second),
        reason: reason.to_string(),
    };
    let invalid = |reason: String| JobError::InvalidJob {
        at: at.clone(),
        job: job.clone(),
        reason,
    };
    let set = |name: &str| scope.set_at.contains_key(name);

    // fio warns "time_based requires a runtime/timeout setting" and runs until the region
    // is done; here that is an error.
    if spec.time_based && spec.runtime.is_none() {
        return Err(conflict(
            "time_based",
            "runtime",
            "time_based needs a runtime",
        ));
    }
    // fio: "rate and rate_iops are mutually exclusive".
    for direction in [Direction::Read, Direction::Write, Direction::Trim] {
        if spec.rate.get(direction).is_some() && spec.rate_iops.get(direction).is_some() {
            return Err(conflict(
                "rate",
                "rate_iops",
                &format!("both cap the {} direction; give one", direction.fio_name()),
            ));
        }
    }
    if set("rate_process")
        && spec.rate_process == RateProcess::Poisson
        && spec.rate.each().iter().all(|(_, r)| r.is_none())
        && spec.rate_iops.each().iter().all(|(_, r)| r.is_none())
    {
        return Err(conflict(
            "rate_process",
            "rate",
            "rate_process=poisson needs rate or rate_iops",
        ));
    }
    // fio (init.c): the issue time is a column of the latency logs' lines with offsets.
    if spec.log_issue_time && spec.write_lat_log.is_none() {
        return Err(conflict(
            "log_issue_time",
            "write_lat_log",
            "log_issue_time option requires write_lat_log and log_offset options",
        ));
    }
    if spec.log_issue_time && !spec.log_offset {
        return Err(conflict(
            "log_issue_time",
            "log_offset",
            "log_issue_time option requires write_lat_log and log_offset options",
        ));
    }
    // fio (time.c): "job rejected: cannot specify both ramp_time and ramp_size".
    if spec.ramp_size.is_some() && !spec.ramp_time.is_zero() {
        return Err(conflict(
            "ramp_size",
            "ramp_time",
            "cannot specify both ramp_time and ramp_size",
        ));
    }
    // fio (init.c): several ranges per trim only where the engine trims several at once
    // (fio's io_uring_cmd); no engine here does.
    if spec.num_range > 1 && spec.does(Direction::Trim) {
        let reason = if spec.does(Direction::Write) {
            "trimwrite cannot be used with multiple ranges".to_string()
        } else {
            format!(
                "can't use multiple ranges with IO engine {} (as fio: only its io_uring_cmd \
                 trims several ranges in one command)",
                spec.engine().name()
            )
        };
        return Err(conflict("num_range", "rw", &reason));
    }
    for child in [
        "thinktime_blocks",
        "thinktime_blocks_type",
        "thinktime_spin",
        "thinktime_iotime",
    ] {
        if set(child) && spec.thinktime.is_zero() {
            return Err(conflict(
                child,
                "thinktime",
                &format!("{child} does nothing without thinktime"),
            ));
        }
    }
    if spec.iodepth_batch_submit > spec.iodepth {
        return Err(conflict(
            "iodepth_batch_submit",
            "iodepth",
            "cannot submit more at once than the iodepth",
        ));
    }
    if spec.iodepth_batch_complete_min > spec.iodepth {
        return Err(conflict(
            "iodepth_batch_complete_min",
            "iodepth",
            "cannot wait for more completions than the iodepth",
        ));
    }
    if let Some(max) = spec.iodepth_batch_complete_max {
        if max < spec.iodepth_batch_complete_min {
            return Err(conflict(
                "iodepth_batch_complete_max",
                "iodepth_batch_complete_min",
                "the maximum is below the minimum",
            ));
        }
    }

    // rw=copy (issue 16): a copy of the job's region on an iSCSI LUN.
    for option in ["copy_method", "copy_dest"] {
        if set(option) && !spec.rw_copy {
            return Err(conflict(option, "rw", "only an rw=copy job copies"));
        }
    }
    if spec.rw_copy {
        if !matches!(spec.filename, Some(super::spec::Target::Iscsi(_)))
            || !spec.more_filenames.is_empty()
        {
            return Err(conflict(
                "rw",
                "filename",
                "rw=copy copies within one iSCSI LUN: give one filename=iscsi://HOST/TARGET/LUN",
            ));
        }
        if !matches!(spec.size, Some(super::spec::SizeSpec::Bytes(_))) {
            return Err(conflict("rw", "size", "rw=copy needs size= in bytes"));
        }
        if matches!(spec.offset, super::spec::SizeSpec::Percent(_)) {
            return Err(conflict("rw", "offset", "rw=copy needs offset= in bytes"));
        }
    }

    // unlink_each_loop: fio unlinks the files after each loop but the last and creates
    // them again as the next opens them; that needs files, and a job that writes.
    if spec.files.unlink_each_loop && spec.loops > 1 {
        if spec.engine() != Engine::IoUring {
            return Err(conflict(
                "unlink_each_loop",
                "ioengine",
                "unlink_each_loop needs local files (ioengine=io_uring)",
            ));
        }
        if !spec.more_filenames.is_empty() {
            return Err(conflict(
                "unlink_each_loop",
                "nrfiles",
                "unlink_each_loop is supported for one file per job (the loops of several \
                 files do not end together here)",
            ));
        }
        if !spec.does(Direction::Write) {
            return Err(conflict(
                "unlink_each_loop",
                "rw",
                "with loops, a job that does not write cannot open its unlinked file again \
                 (fio fails the second loop with ENOENT)",
            ));
        }
    }
    // Zones and file sizes (fio's fixup_options and setup_files).
    match (spec.zonemode, spec.zonesize) {
        (ZoneMode::Strided, 0) => {
            return Err(conflict(
                "zonemode",
                "zonesize",
                "zonemode=strided needs zonesize (fio: --zonesize must be specified when \
                 using --zonemode=strided)",
            ))
        }
        (ZoneMode::None, 1..) => {
            return Err(conflict(
                "zonesize",
                "zonemode",
                "zonesize needs zonemode=strided (fio: --zonemode=none and --zonesize are not \
                 compatible, and none is the default)",
            ))
        }
        _ => {}
    }
    // filesize with several files (nrfiles, or a filename list of local files or LUNs) is
    // fio's: each file is taken to have it, and size defaults to their sum.
    if spec.filesize.is_some() && spec.rw_copy {
        return Err(conflict(
            "filesize",
            "rw",
            "an rw=copy job copies offset and size; filesize does not apply",
        ));
    }

    // Verification.
    if spec.verify != VerifyKind::None {
        if !spec.does(Direction::Read) && !spec.does(Direction::Write) {
            return Err(conflict(
                "verify",
                "rw",
                "a trim-only job has no data to verify",
            ));
        }
        if spec.verify == VerifyKind::Pattern && spec.verify_pattern.is_empty() {
            return Err(conflict(
                "verify",
                "verify_pattern",
                "verify=pattern needs verify_pattern",
            ));
        }
        // A read-only job with verify checks what an earlier run (or an earlier job) wrote,
        // as fio does; nothing to refuse here.
    }
    // Verify blocks are cut at the verify interval; a length of any byte count leaves a
    // remainder no header describes (fio lets the job run and fail its verify).
    if spec.bs_unaligned && spec.verify != VerifyKind::None {
        return Err(conflict(
            "bs_unaligned",
            "verify",
            "verify needs block sizes that are multiples of its interval; bs_unaligned gives \
             any length",
        ));
    }
    if set("verify_backlog") && spec.verify == VerifyKind::None {
        return Err(conflict(
            "verify_backlog",
            "verify",
            "verify_backlog needs verify",
        ));
    }
    if spec.verify_shared {
        check_verify_shared(spec, &conflict)?;
    }
    if spec.verify_state_load {
        // fio would also load it for a job that writes again, and then verify a prefix of
        // the new writes; that checks nothing the run did not just write itself.
        let why = if spec.verify == VerifyKind::None {
            Some((
                "verify",
                "verify_state_load needs verify (the kind the saved run wrote)",
            ))
        } else if !spec.verify_only {
            Some((
                "verify_only",
                "verify_state_load checks what an earlier run wrote: it needs verify_only=1",
            ))
        } else if !spec.does(crate::io::Direction::Write) {
            Some(("rw", "verify_state_load replays a write job: rw must write"))
        } else {
            None
        };
        if let Some((other, reason)) = why {
            return Err(conflict("verify_state_load", other, reason));
        }
    }
    for (option, value) in [
        ("verify_fatal", spec.verify_fatal),
        ("do_verify", !spec.do_verify),
    ] {
        if set(option) && value && spec.verify == VerifyKind::None {
            return Err(conflict(
                option,
                "verify",
                &format!("{option} needs verify"),
            ));
        }
    }

    // Engine and target.
    let engine = spec.engine();
    // The engine's own options (the table's io_uring and iSCSI categories): an io_uring
    // option turned on, or an iSCSI option given, on another engine.
    let foreign = OPTIONS.iter().find(|def| match def.category {
        // fio's synchronous engines take none of the io_uring engine's options, but for
        // pvsync2's own `uncached` and `nowait`.
        Category::IoUring => {
            let pvsync2_own = spec.sync_call == Some(SyncCall::Pvsync2)
                && matches!(def.name, "uncached" | "nowait");
            (engine != Engine::IoUring || (spec.sync_call.is_some() && !pvsync2_own))
                && def.rendered(spec).is_some()
        }
        Category::Iscsi => engine != Engine::Iscsi && set(def.name),
        _ => false,
    });
    if let Some(def) = foreign {
        let kind = match def.category {
            Category::IoUring => "an io_uring",
            _ => "an iSCSI",
        };
        return Err(conflict(
            def.name,
            "ioengine",
            &format!(
                "{} is {kind} option; the job uses ioengine={}",
                def.name,
                spec.engine_name()
            ),
        ));
    }
    if let Some(why) = spec.cmdprio.conflict() {
        return Err(conflict("cmdprio_bssplit", "cmdprio_percentage", why));
    }
    // hipri: fio's io_uring engine's (IOPOLL), pvsync2's (RWF_HIPRI) and the iscsi
    // engine's (a polling shard).
    if let Some(call) = spec
        .sync_call
        .filter(|&call| spec.hipri && call != SyncCall::Pvsync2)
    {
        return Err(conflict(
            "hipri",
            "ioengine",
            &format!(
                "hipri is an option of the io_uring, pvsync2 and iscsi engines; the job uses \
                 ioengine={}",
                call.name()
            ),
        ));
    }
    if engine == Engine::Null && spec.hipri {
        return Err(conflict(
            "hipri",
            "ioengine",
            "hipri polls the io_uring or iscsi engine's completions; ioengine=null has none",
        ));
    }
    match (engine, &spec.filename) {
        (Engine::Iscsi, Some(Target::Path(_) | Target::Null)) => {
            return Err(conflict(
                "ioengine",
                "filename",
                "the iscsi engine needs an iscsi:// filename, or none for the embedded target",
            ))
        }
        (Engine::IoUring, None | Some(Target::Iscsi(_) | Target::Null)) => {
            return Err(conflict(
                "ioengine",
                "filename",
                "the io_uring engine needs the path of a local file or block device",
            ))
        }
        _ => {}
    }
    // A filename list: local files (the io_uring engine opens each), or LUNs of one target
    // reached through one session (fio's libiscsi engine opens one per file; several
    // targets in one job are not supported yet).
    'list: {
        let (Some(first), false) = (&spec.filename, spec.more_filenames.is_empty()) else {
            break 'list;
        };
        let first = match first {
            Target::Iscsi(first) => first,
            // Local files (a list, or nrfiles): the io_uring engine opens each.
            Target::Path(_) => {
                if spec
                    .more_filenames
                    .iter()
                    .any(|other| !matches!(other, Target::Path(_)))
                {
                    return Err(invalid(
                        "a filename list mixes local files with other targets".into(),
                    ));
                }
                break 'list;
            }
            Target::Null => {
                return Err(invalid(
                    "several files in one job (a ':'-separated filename list) are supported \
                     for local files and for iSCSI LUNs of one target, not for null"
                        .into(),
                ))
            }
        };
        let mut luns = vec![first.lun];
        for other in &spec.more_filenames {
            let Target::Iscsi(other) = other else {
                return Err(invalid(
                    "a filename list mixes iscsi:// URLs with other targets".into(),
                ));
            };
            let same_target = (
                &other.host,
                other.port,
                &other.target_iqn,
                &other.user,
                &other.password,
            ) == (
                &first.host,
                first.port,
                &first.target_iqn,
                &first.user,
                &first.password,
            );
            if !same_target {
                return Err(invalid(format!(
                    "the LUNs of a filename list must be on one target (one login): \
                     iscsi://{}:{}/{} and iscsi://{}:{}/{} differ",
                    first.host,
                    first.port,
                    first.target_iqn,
                    other.host,
                    other.port,
                    other.target_iqn
                )));
            }
            if luns.contains(&other.lun) {
                return Err(invalid(format!(
                    "LUN {} appears twice in the filename list",
                    other.lun
                )));
            }
            luns.push(other.lun);
        }
    }
    if let (Some(Target::Iscsi(url)), Some(_)) = (&spec.filename, &spec.iscsi.chap) {
        if url.user.is_some() {
            return Err(conflict(
                "filename",
                "chap_username",
                "CHAP credentials are given both in the URL and as options",
            ));
        }
    }
    for (label, chap) in [
        ("chap", &spec.iscsi.chap),
        ("mutual_chap", &spec.iscsi.mutual_chap),
    ] {
        if let Some(credentials) = chap {
            if credentials.username.is_empty() || credentials.secret.is_empty() {
                return Err(invalid(format!(
                    "{label}_username and {label}_secret go together"
                )));
            }
        }
    }
    if spec.iscsi.mutual_chap.is_some() && spec.iscsi.chap.is_none() {
        let url_chap = matches!(&spec.filename, Some(Target::Iscsi(url)) if url.user.is_some());
        if !url_chap {
            return Err(invalid(
                "mutual CHAP needs one-way CHAP too (chap_username, chap_secret)".into(),
            ));
        }
    }
    if let (Some(first), Some(max)) = (
        spec.iscsi.first_burst_length_bytes,
        spec.iscsi.max_burst_length_bytes,
    ) {
        if first > max {
            return Err(conflict(
                "first_burst_length",
                "max_burst_length",
                "FirstBurstLength may not exceed MaxBurstLength (RFC 7143 13.14)",
            ));
        }
    }

    // Block sizes.
    for (direction, block_size) in spec.block_size.each() {
        if !spec.does(direction) {
            continue;
        }
        if let Some(align) = spec.block_align.get(direction) {
            if block_size.min_bytes() % align != 0 && align % block_size.min_bytes() != 0 {
                return Err(conflict(
                    "blockalign",
                    "bs",
                    &format!(
                        "{} blocks of {} bytes and an alignment of {align} do not fit",
                        direction.fio_name(),
                        block_size.min_bytes()
                    ),
                ));
            }
        }
    }
    if readonly && (spec.does(Direction::Write) || spec.does(Direction::Trim)) {
        return Err(invalid(format!(
            "rw={} writes or trims, and --readonly is given",
            spec.rw.kind.fio_name()
        )));
    }
    if let Some(SizeSpec::Bytes(size)) = spec.size {
        if size < spec.min_block_size_bytes() {
            return Err(JobError::ZeroSize {
                at,
                job,
                reason: format!(
                    "size={size} is smaller than one block of {} bytes",
                    spec.min_block_size_bytes()
                ),
            });
        }
    }
    Ok(())
}

/// `verify_shared` works only where a read proves which write it holds: a header with a
/// digest, blocks written whole, one target per job.
fn check_verify_shared(
    spec: &JobSpec,
    conflict: &dyn Fn(&str, &str, &str) -> JobError,
) -> Result<(), JobError> {
    match spec.verify {
        VerifyKind::Checksum(_) => {}
        VerifyKind::None => {
            return Err(conflict(
                "verify_shared",
                "verify",
                "verify_shared needs a checksum (verify=crc32c, md5, sha256, crc64, ...)",
            ))
        }
        VerifyKind::Pattern | VerifyKind::Meta => {
            return Err(conflict(
                "verify_shared",
                "verify",
                "verify_shared needs a header with a digest (verify=crc32c, md5, sha256, \
                 crc64, ...): with pattern or meta a read cannot prove which write (or whether \
                 a whole one) it holds",
            ))
        }
    }
    if spec.verify_only {
        return Err(conflict(
            "verify_shared",
            "verify_only",
            "verify_shared judges reads against the writes of this run; verify_only makes none",
        ));
    }
    if !spec.more_filenames.is_empty() {
        return Err(conflict(
            "verify_shared",
            "filename",
            "verify_shared judges one target per job: give the job one file (LUN)",
        ));
    }
    Ok(())
}
