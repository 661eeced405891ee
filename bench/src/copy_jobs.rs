//! `rw=copy` jobs of a job file (issue 16): each copies its region (`offset`, `size`) of
//! one iSCSI LUN to `copy_dest`, by EXTENDED COPY (`copy_method=xcopy`, the target moves
//! the data) or through this host (`copy_method=host`, READ then WRITE, `iodepth`
//! commands of `bs`), each made durable with SYNCHRONIZE CACHE and timed; the jobs run
//! one after another (as with `stonewall`, so neither slows the other) and are reported
//! side by side. Every copy job first writes a pattern that differs in every block into
//! its source and reads its destination back afterwards (both untimed), so a copy that
//! moved only unwritten space or the wrong data cannot look fast.
//!
//! ```text
//! [global]
//! filename=iscsi://127.0.0.1:3260/iqn.2026-12.example:pool/0
//! size=1g
//! bs=1m
//! iodepth=8
//! rw=copy
//! [xcopy]
//! copy_method=xcopy
//! copy_dest=1g
//! [host]
//! copy_method=host
//! copy_dest=2g
//! ```
//!
//! The same code runs `iscsi-bench copy-offload` ([`crate::copy_offload::run_job`]).

use serde_json::{json, Value};

use crate::copy_offload::{run_job, CopyError, CopyJob, CopyMethod, JobResult};
use crate::job::{BlockSize, JobSpec, SizeSpec, Target};

/// The copy job a spec describes (`None` for a job that is not `rw=copy`).
pub fn copy_job(spec: &JobSpec) -> Result<Option<CopyJob>, CopyError> {
    let Some(copy) = spec.copy() else {
        return Ok(None);
    };
    let usage = |why: &str| CopyError::Usage(format!("job {}: {why}", spec.name));
    let Some(Target::Iscsi(url)) = &spec.filename else {
        return Err(usage("rw=copy needs filename=iscsi://HOST/TARGET/LUN"));
    };
    let Some(SizeSpec::Bytes(size)) = spec.size else {
        return Err(usage("rw=copy needs size= in bytes"));
    };
    let SizeSpec::Bytes(source) = spec.offset else {
        return Err(usage("rw=copy needs offset= in bytes"));
    };
    let bs = match &spec.block_size.read {
        BlockSize::Fixed(bytes) => *bytes,
        _ => return Err(usage("rw=copy takes one block size (bs=)")),
    };
    Ok(Some(CopyJob {
        name: spec.name.clone(),
        url: crate::run::setup::datapath_url(url),
        login: crate::run::setup::login_options(spec),
        method: copy.method,
        source,
        size,
        dest: copy.dest_bytes,
        bs,
        iodepth: spec.iodepth.clamp(1, 1024) as usize,
        prefill: true,
        verify: true,
    }))
}

/// The results of a run of copy jobs, in job order.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyRun {
    pub jobs: Vec<JobResult>,
}

impl CopyRun {
    /// The first host job's time over the first EXTENDED COPY job's, when both ran.
    pub fn host_over_xcopy(&self) -> Option<f64> {
        let first = |method| self.jobs.iter().find(|j| j.method == method);
        let (xcopy, host) = (first(CopyMethod::Xcopy)?, first(CopyMethod::Host)?);
        Some(host.figures.seconds / xcopy.figures.seconds.max(1e-9))
    }

    pub fn to_json(&self) -> Value {
        let jobs: Vec<Value> = self
            .jobs
            .iter()
            .map(|j| {
                json!({
                    "jobname": j.name,
                    "copy_method": j.method.name(),
                    "url": j.url,
                    "block_length": j.block_length,
                    "source_lba": j.source_lba,
                    "dest_lba": j.figures.dest_lba,
                    "blocks": j.blocks,
                    "bytes": j.figures.bytes,
                    "seconds": j.figures.seconds,
                    "mib_per_second": j.figures.mib_per_second(),
                    "commands": j.figures.commands,
                    "verified": j.verified,
                })
            })
            .collect();
        json!({ "copy_jobs": jobs, "host_over_xcopy": self.host_over_xcopy() })
    }

    pub fn to_human(&self) -> String {
        let mut out = format!(
            "{:<16} {:<7} {:>12} {:>12} {:>10} {:>10} {:>10} {:>9}\n",
            "job", "method", "source LBA", "dest LBA", "MiB", "seconds", "MiB/s", "commands"
        );
        for j in &self.jobs {
            out.push_str(&format!(
                "{:<16} {:<7} {:>12} {:>12} {:>10} {:>10.3} {:>10.1} {:>9}{}\n",
                j.name,
                j.method.name(),
                j.source_lba,
                j.figures.dest_lba,
                j.figures.bytes >> 20,
                j.figures.seconds,
                j.figures.mib_per_second(),
                j.figures.commands,
                match j.verified {
                    Some(true) => "  verified",
                    Some(false) => "  MISMATCH",
                    None => "",
                }
            ));
        }
        if let Some(ratio) = self.host_over_xcopy() {
            out.push_str(&format!(
                "host copy time / EXTENDED COPY time: {ratio:.1}x\n"
            ));
        }
        out
    }
}

/// Runs the `rw=copy` jobs in order; a job whose destination differs from its source is
/// an error after the report is made.
pub fn run(specs: &[JobSpec]) -> Result<CopyRun, CopyError> {
    let mut jobs = Vec::new();
    for spec in specs {
        if let Some(job) = copy_job(spec)? {
            jobs.push(job);
        }
    }
    let mut run = CopyRun { jobs: Vec::new() };
    for job in &jobs {
        run.jobs.push(run_job(job)?);
    }
    if let Some(bad) = run.jobs.iter().find(|j| j.verified == Some(false)) {
        return Err(CopyError::Verify(format!(
            "job {}: the destination differs from the source\n{}",
            bad.name,
            run.to_human()
        )));
    }
    Ok(run)
}

/// Runs a job file's copy jobs for `iscsi-bench` and prints the report (JSON with
/// `--output-format=json`): 0 when every copy ran and verified, 1 when one failed, 2 when
/// the file mixes copy jobs with I/O-pattern jobs.
pub fn main(specs: &[JobSpec], json: bool) -> std::process::ExitCode {
    if let Some(other) = specs.iter().find(|s| !s.rw_copy) {
        eprintln!(
            "iscsi-bench: job {} is not rw=copy: a run of rw=copy jobs takes only copy jobs (run the others in another invocation)",
            other.name
        );
        return std::process::ExitCode::from(2);
    }
    let result = run(specs).map(|report| (report.to_json(), report.to_human()));
    crate::copy_offload::print_report(result, json, "iscsi-bench")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The job error as text (the error type is large; tests only read its message).
    fn parse(text: &str) -> Result<Vec<JobSpec>, String> {
        crate::job::parse_job_str(Path::new("copy.fio"), text, &|_| None).map_err(|e| e.to_string())
    }

    const FILE: &str = "[global]\nfilename=iscsi://127.0.0.1:3260/iqn.2026-12.t:x/1\n\
        size=8m\noffset=1m\nbs=256k\niodepth=4\nrw=copy\n\
        [xcopy]\ncopy_method=xcopy\ncopy_dest=16m\n[host]\ncopy_method=host\n";

    #[test]
    fn a_job_file_gives_an_extended_copy_job_beside_a_host_copy_job() {
        let specs = parse(FILE).unwrap();
        let jobs: Vec<CopyJob> = specs
            .iter()
            .map(|s| copy_job(s).unwrap().unwrap())
            .collect();
        assert_eq!(jobs.len(), 2);
        assert_eq!(
            (jobs[0].method, jobs[0].source, jobs[0].size, jobs[0].dest),
            (CopyMethod::Xcopy, 1 << 20, 8 << 20, Some(16 << 20))
        );
        assert_eq!((jobs[1].method, jobs[1].dest), (CopyMethod::Host, None));
        assert_eq!((jobs[1].bs, jobs[1].iodepth), (256 << 10, 4));
        assert_eq!(jobs[1].url.lun, Some(1));
        // --showcmd renders the copy options back.
        let line = crate::job::render_command_line(&specs);
        assert!(
            line.contains("--rw=copy") && line.contains("--copy_method=host"),
            "{line}"
        );
    }

    #[test]
    fn copy_options_are_refused_where_they_mean_nothing() {
        for (text, says) in [
            (
                "[j]\nfilename=iscsi://h/iqn.2026-12.t:x/0\nsize=1m\ncopy_method=host\n",
                "only an rw=copy job copies",
            ),
            ("[j]\nfilename=/tmp/f\nsize=1m\nrw=copy\n", "one iSCSI LUN"),
            (
                "[j]\nfilename=iscsi://h/iqn.2026-12.t:x/0\nrw=copy\n",
                "size=",
            ),
            (
                "[j]\nfilename=iscsi://h/iqn.2026-12.t:x/0\nsize=1m\nrw=copy\ncopy_method=dd\n",
                "xcopy or host",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn the_report_puts_the_jobs_side_by_side_with_their_ratio() {
        let result = |name: &str, method, seconds| JobResult {
            name: name.into(),
            method,
            url: "iscsi://h/iqn.2026-12.t:x/0".into(),
            block_length: 512,
            source_lba: 0,
            blocks: 2048,
            figures: crate::copy_offload::MethodResult {
                name: "m",
                bytes: 1 << 20,
                seconds,
                commands: 3,
                dest_lba: 2048,
            },
            verified: Some(true),
        };
        let run = CopyRun {
            jobs: vec![
                result("x", CopyMethod::Xcopy, 0.5),
                result("h", CopyMethod::Host, 2.0),
            ],
        };
        assert_eq!(run.host_over_xcopy(), Some(4.0));
        let json = run.to_json();
        assert_eq!(json["copy_jobs"][1]["copy_method"], "host");
        assert_eq!(json["host_over_xcopy"], 4.0);
        let text = run.to_human();
        assert!(text.contains("4.0x") && text.lines().count() == 4, "{text}");
    }
}
