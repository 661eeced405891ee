//! fio's reporting options beside fio itself: `stats`, `disk_util`, `significant_figures`,
//! `unit_base`, `per_job_logs`, `bwavgtime`/`iopsavgtime`, `log_entries`, `clocksource`,
//! `gtod_cpu`, `block_error_percentiles`. Each test runs the same job through fio's `null`
//! engine and ours and compares what can be compared exactly (accepted values, file names,
//! byte counts in the text report, which jobs are reported) or, for timing, within one
//! sample. Skipped (loudly) where fio is missing, a failure under CI.

mod common;

use common::ScratchDir;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `program` with `args` in `dir` (at most 60 s).
fn run_in(dir: &Path, program: &Path, args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("60")
        .arg(program)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run")
}

fn ours() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_iscsi-bench"))
}

/// Writes `text` as `job.fio` in `dir`; its path as an argument.
fn job_file(dir: &ScratchDir, text: &str) -> String {
    let path = dir.join("job.fio");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Whether the program accepts `option` in a null-engine job (`--parse-only`), and its
/// stderr.
fn accepts(program: &Path, dir: &ScratchDir, option: &str) -> (bool, String) {
    let job = job_file(dir, &format!("[j]\nioengine=null\nsize=1m\n{option}\n"));
    let out = run_in(dir.path(), program, &["--parse-only", &job]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (
        out.status.success() && !stderr.contains("failed parsing"),
        stderr,
    )
}

#[test]
fn values_are_checked_as_fio_checks_them() {
    let Some(fio) = common::fio() else { return };
    let dir = ScratchDir::new("fio-report-options", "values");
    let refused_by_both = [
        "log_entries=10",
        "log_entries=2000000",
        "unit_base=2",
        "unit_base=bits",
        "significant_figures=0",
        "significant_figures=11",
        "clocksource=foo",
        "gtod_cpu=abc",
        "stats=2",
        "disk_util=5",
        "per_job_logs=x",
        "bwavgtime=abc",
        "iopsavgtime=abc",
    ];
    for option in refused_by_both {
        let (fio_ok, _) = accepts(&fio, &dir, option);
        assert!(!fio_ok, "fio takes {option}");
        let (ours_ok, error) = accepts(&ours(), &dir, option);
        assert!(!ours_ok, "we take {option}, fio refuses it");
        let name = option.split('=').next().unwrap();
        assert!(
            error.contains(name),
            "{option}: the error names no option: {error}"
        );
    }
    let accepted_by_both = [
        "log_entries=1024",
        "log_entries=1048576",
        "unit_base=0",
        "unit_base=8",
        "unit_base=1",
        "significant_figures=1",
        "significant_figures=10",
        "clocksource=gettimeofday",
        "clocksource=clock_gettime",
        "clocksource=cpu",
        "gtod_cpu=0",
        "stats=0",
        "disk_util=0",
        "per_job_logs=0",
        "bwavgtime=250",
        "iopsavgtime=1000",
        "block_error_percentiles=0",
    ];
    for option in accepted_by_both {
        assert!(accepts(&fio, &dir, option).0, "fio refuses {option}");
        let (ours_ok, error) = accepts(&ours(), &dir, option);
        assert!(ours_ok, "we refuse {option}, fio takes it: {error}");
    }
    // fio takes these; we refuse them, saying why: a trim block histogram we do not keep,
    // and a sample period of 0 (fio then samples at every turn of its helper thread).
    for (option, reason) in [
        ("block_error_percentiles=1", "trim"),
        ("bwavgtime=0", "at least 1 ms"),
    ] {
        assert!(accepts(&fio, &dir, option).0, "fio refuses {option}");
        let (ours_ok, error) = accepts(&ours(), &dir, option);
        assert!(!ours_ok, "we take {option}");
        assert!(error.contains(reason), "{option}: {error}");
    }
}

/// The banner, the direction line's byte count and the group line's `io=` of a job's
/// text report: what `significant_figures` shapes that timing does not.
fn sized_parts(text: &str) -> Vec<String> {
    let mut parts = Vec::new();
    for line in text.lines() {
        if line.contains("rw=read, bs=") {
            parts.push(line.to_string());
        } else if let Some(rest) = line.trim_start().strip_prefix("read: IOPS=") {
            // `...)(<bytes>/<ms>msec)`
            let io = rest.rsplit_once(")(").map(|(_, io)| io).unwrap_or("");
            parts.push(io.split('/').next().unwrap_or("").to_string());
        } else if let Some((_, io)) = line.split_once(", io=") {
            parts.push(io.split(", run=").next().unwrap_or("").to_string());
        }
    }
    parts
}

#[test]
fn significant_figures_shape_the_text_report_as_fios() {
    let Some(fio) = common::fio() else { return };
    let dir = ScratchDir::new("fio-report-options", "sigfigs");
    let mut seen = Vec::new();
    for figures in ["1", "2", "4", "6", "10"] {
        let option = format!("--significant_figures={figures}");
        let args = [
            "--name=j",
            "--ioengine=null",
            "--size=10000k",
            "--bs=12k",
            "--rw=read",
            &option,
        ];
        let theirs = sized_parts(&common::stdout(&run_in(dir.path(), &fio, &args)));
        let mine = sized_parts(&common::stdout(&run_in(dir.path(), &ours(), &args)));
        assert_eq!(theirs.len(), 3, "fio's report: {theirs:?}");
        assert_eq!(mine, theirs, "significant_figures={figures}");
        seen.push(mine);
    }
    seen.dedup();
    assert_eq!(
        seen.len(),
        5,
        "significant_figures changed nothing: {seen:?}"
    );
}

/// The units of the bandwidths in a text report's direction and group lines.
fn rate_units(text: &str) -> Vec<String> {
    let mut units = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        if !(line.starts_with("read: IOPS=") || line.starts_with("READ: bw=")) {
            continue;
        }
        for word in line.split(['=', '(', ')', ',', ' ', '-']) {
            if word.ends_with("/s") {
                let unit: String = word.chars().skip_while(|c| !c.is_alphabetic()).collect();
                // The prefix (Mi, Gi) follows the speed; bits or bytes is the option's.
                units.push(
                    unit.trim_start_matches(['k', 'K', 'M', 'G', 'i'])
                        .to_string(),
                );
            }
        }
        if let Some(bw) = line.split_once("bw (") {
            units.push(bw.1.split(')').next().unwrap_or("").trim().to_string());
        }
    }
    units
}

#[test]
fn unit_base_shows_bandwidth_in_bits_as_fio() {
    let Some(fio) = common::fio() else { return };
    let dir = ScratchDir::new("fio-report-options", "unit-base");
    for base in ["0", "8", "1"] {
        let option = format!("--unit_base={base}");
        let args = [
            "--name=j",
            "--ioengine=null",
            "--size=1g",
            "--bs=4k",
            "--rw=read",
            "--runtime=1",
            "--time_based",
            "--rate_iops=2000",
            &option,
        ];
        let theirs = common::stdout(&run_in(dir.path(), &fio, &args));
        let mine = common::stdout(&run_in(dir.path(), &ours(), &args));
        let units = rate_units(&theirs);
        assert_eq!(units.len(), 8, "fio's units: {units:?}\n{theirs}");
        let expected = if base == "1" { "bit/s" } else { "B/s" };
        assert!(units.iter().all(|u| u == expected), "fio: {units:?}");
        assert_eq!(rate_units(&mine), units, "unit_base={base}\n{mine}");
    }
}

/// The named entries of a JSON report's "jobs" (fio adds blank ones for stats=0 jobs).
fn named_jobs(report: &serde_json::Value) -> Vec<(String, u64)> {
    report["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|job| {
            let name = job["jobname"].as_str().filter(|n| !n.is_empty())?;
            Some((name.to_string(), job["read"]["io_bytes"].as_u64().unwrap()))
        })
        .collect()
}

/// A text report's job headings ("b: (groupid=0, ...") and group lines.
fn text_outline(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            if let Some((name, _)) = line.split_once(": (groupid=") {
                Some(format!("job {name}"))
            } else if line.starts_with("Run status group") {
                Some(line.to_string())
            } else if let Some((_, io)) = line.split_once(", io=") {
                Some(format!("io={}", io.split(", run=").next().unwrap_or("")))
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn stats_0_leaves_the_job_out_of_every_report_as_fio() {
    let Some(fio) = common::fio() else { return };
    let dir = ScratchDir::new("fio-report-options", "stats");
    let job = job_file(
        &dir,
        "[global]\nioengine=null\nbs=4k\nrw=read\n\
         [a]\nsize=1m\nstats=0\n[b]\nsize=2m\n[c]\nstonewall\nsize=1m\nstats=0\n\
         [d]\nnew_group\nsize=3m\ngroup_reporting\n[e]\nsize=1m\nstats=0\ngroup_reporting\n",
    );
    let json_args = [job.as_str(), "--output-format=json"];
    let theirs = named_jobs(&common::json_of(&run_in(dir.path(), &fio, &json_args)));
    let mine_doc = common::json_of(&run_in(dir.path(), &ours(), &json_args));
    assert_eq!(theirs, vec![("b".into(), 2 << 20), ("d".into(), 3 << 20)]);
    assert_eq!(named_jobs(&mine_doc), theirs);
    // fio's blank entries (no name, group -1) are not copied.
    assert_eq!(mine_doc["jobs"].as_array().unwrap().len(), theirs.len());

    let theirs = text_outline(&common::stdout(&run_in(dir.path(), &fio, &[job.as_str()])));
    let mine = text_outline(&common::stdout(&run_in(
        dir.path(),
        &ours(),
        &[job.as_str()],
    )));
    assert_eq!(mine, theirs);
    assert!(theirs.contains(&"Run status group 1 (all jobs):".to_string()));

    let terse_names = |out: &Output| -> Vec<String> {
        common::stdout(out)
            .lines()
            .filter_map(|line| line.split(';').nth(2).filter(|n| !n.is_empty()))
            .map(str::to_string)
            .collect()
    };
    let terse_args = [job.as_str(), "--output-format=terse"];
    assert_eq!(
        terse_names(&run_in(dir.path(), &ours(), &terse_args)),
        terse_names(&run_in(dir.path(), &fio, &terse_args))
    );
}

fn file_names(dir: &Path) -> Vec<(String, usize)> {
    let mut names: Vec<(String, usize)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let lines = std::fs::read_to_string(&path)
                .unwrap_or_default()
                .lines()
                .count();
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                lines,
            )
        })
        .collect();
    names.sort();
    names
}

#[test]
fn per_job_logs_names_the_files_as_fio() {
    let Some(fio) = common::fio() else { return };
    for per_job in ["1", "0"] {
        let mut runs = Vec::new();
        for program in [fio.clone(), ours()] {
            let dir = ScratchDir::new("fio-report-options", &format!("logs-{per_job}"));
            let option = format!("--per_job_logs={per_job}");
            let out = run_in(
                dir.path(),
                &program,
                &[
                    "--name=p",
                    "--ioengine=null",
                    "--size=1m",
                    "--bs=4k",
                    "--rw=read",
                    "--numjobs=2",
                    "--write_lat_log=pl",
                    "--write_bw_log=pl",
                    "--write_iops_log=pl",
                    "--write_hist_log=pl",
                    "--log_hist_msec=100",
                    &option,
                    "--output-format=terse",
                ],
            );
            assert!(out.status.success(), "{}", common::describe(&out));
            // Per-I/O latency logs have one line per I/O: both clones' lines land in the
            // one file with per_job_logs=0. The rate logs' lines are sampled (ours every
            // period, fio's per I/O) and the histogram's timed: names only.
            let names: Vec<(String, Option<usize>)> = file_names(dir.path())
                .into_iter()
                .map(|(name, lines)| {
                    let per_io = ["_lat", "_clat."].iter().any(|k| name.contains(k));
                    (name, per_io.then_some(lines))
                })
                .collect();
            runs.push(names);
        }
        assert_eq!(runs[1], runs[0], "per_job_logs={per_job}");
        let expected_files = if per_job == "1" { 12 } else { 6 };
        assert_eq!(runs[0].len(), expected_files, "fio's files: {:?}", runs[0]);
    }
}

#[test]
fn stats_0_leaves_the_logs_empty_as_fio() {
    let Some(fio) = common::fio() else { return };
    let mut runs = Vec::new();
    for program in [fio.clone(), ours()] {
        let dir = ScratchDir::new("fio-report-options", "stats-logs");
        let out = run_in(
            dir.path(),
            &program,
            &[
                "--name=p",
                "--ioengine=null",
                "--size=1m",
                "--bs=4k",
                "--rw=read",
                "--stats=0",
                "--write_lat_log=a",
                "--write_bw_log=a",
                "--write_iops_log=a",
                "--output-format=terse",
            ],
        );
        assert!(out.status.success(), "{}", common::describe(&out));
        runs.push(file_names(dir.path()));
    }
    assert_eq!(runs[0].len(), 5, "fio's logs: {:?}", runs[0]);
    assert!(
        runs[0].iter().all(|(_, lines)| *lines == 0),
        "{:?}",
        runs[0]
    );
    assert_eq!(runs[1], runs[0]);
}

/// `bw_samples` and `iops_samples` of the read direction of a null job paced at 2000 IOPS.
fn samples(program: &Path, dir: &ScratchDir, extra: &[&str]) -> (u64, u64) {
    let mut args = vec![
        "--name=j",
        "--ioengine=null",
        "--size=1g",
        "--bs=4k",
        "--rw=read",
        "--runtime=3",
        "--time_based",
        "--rate_iops=2000",
        "--output-format=json",
    ];
    args.extend_from_slice(extra);
    let report = common::json_of(&run_in(dir.path(), program, &args));
    let read = &report["jobs"][0]["read"];
    (
        read["bw_samples"].as_u64().unwrap(),
        read["iops_samples"].as_u64().unwrap(),
    )
}

#[test]
fn bwavgtime_and_iopsavgtime_set_the_sample_periods_as_fio() {
    let Some(fio) = common::fio() else { return };
    let dir = ScratchDir::new("fio-report-options", "avgtime");
    let cases: [(&[&str], (u64, u64)); 4] = [
        // 500 ms each: 6 samples in 3 s.
        (&[], (6, 6)),
        (&["--bwavgtime=1000"], (3, 6)),
        // A bandwidth log without bwavgtime samples every log_avg_msec (fio's init.c)...
        (&["--write_bw_log=x", "--log_avg_msec=1000"], (3, 6)),
        // ...a latency log does not change the period.
        (&["--write_lat_log=x", "--log_avg_msec=1000"], (6, 6)),
    ];
    for (extra, expected) in cases {
        let theirs = samples(&fio, &dir, extra);
        let mine = samples(&ours(), &dir, extra);
        // The last period races with the end of the job: one sample either way.
        let near = |a: u64, b: u64| a.abs_diff(b) <= 1;
        assert!(
            near(theirs.0, expected.0) && near(theirs.1, expected.1),
            "fio {extra:?}: {theirs:?}"
        );
        assert!(
            near(mine.0, theirs.0) && near(mine.1, theirs.1),
            "{extra:?}: ours {mine:?}, fio {theirs:?}"
        );
        assert!(
            near(mine.0, expected.0) && near(mine.1, expected.1),
            "{extra:?}: ours {mine:?}"
        );
    }
    // iopsavgtime alone: fio's helper thread then wakes at the IOPS period only (its
    // calc_log_samples keeps the IOPS sample's next time, not the sooner of the two), so
    // its bandwidth sampling drifts; the IOPS samples are the option's.
    let theirs = samples(&fio, &dir, &["--iopsavgtime=1000"]);
    let mine = samples(&ours(), &dir, &["--iopsavgtime=1000"]);
    assert!(theirs.1.abs_diff(3) <= 1, "fio: {theirs:?}");
    assert!(
        mine.1.abs_diff(theirs.1) <= 1 && mine.0.abs_diff(6) <= 1,
        "ours {mine:?}"
    );
}

/// The disks a JSON report lists under "disk_util" (`None`: no such key).
fn disks(report: &serde_json::Value) -> Option<usize> {
    report
        .get("disk_util")
        .map(|d| d.as_array().map_or(usize::MAX, Vec::len))
}

#[test]
fn disk_util_prints_no_disk_stats_as_fio() {
    let Some(fio) = common::fio() else { return };
    let dir = ScratchDir::new("fio-report-options", "disk-util");
    // A diskless engine: no disk lines in the text either way, in fio and ours.
    for value in ["0", "1"] {
        let option = format!("--disk_util={value}");
        let args = [
            "--name=j",
            "--ioengine=null",
            "--size=1m",
            "--bs=4k",
            "--rw=read",
            &option,
        ];
        for program in [fio.clone(), ours()] {
            let text = common::stdout(&run_in(dir.path(), &program, &args));
            assert!(text.contains("READ: bw="), "{program:?}: {text}");
            assert!(
                !text.contains("Disk stats"),
                "{program:?} disk_util={value}"
            );
        }
    }
    // A file: fio lists its disk unless disk_util=0, and then has no "disk_util" key;
    // we list the same disks, and with disk_util=0 no key either.
    let file = dir.join("data");
    let filename = format!("--filename={}", file.display());
    for value in ["1", "0"] {
        let option = format!("--disk_util={value}");
        let run = |program: &Path, engine: &str| {
            let engine = format!("--ioengine={engine}");
            let args = [
                "--name=j",
                engine.as_str(),
                &filename,
                "--size=1m",
                "--bs=4k",
                "--rw=write",
                &option,
            ];
            let text = common::stdout(&run_in(dir.path(), program, &args));
            let mut json_args = args.to_vec();
            json_args.push("--output-format=json");
            (
                text,
                common::json_of(&run_in(dir.path(), program, &json_args)),
            )
        };
        let (fio_text, fio_json) = run(&fio, "psync");
        let (our_text, our_json) = run(&ours(), "io_uring");
        assert_eq!(
            our_text.contains("Disk stats"),
            fio_text.contains("Disk stats"),
            "disk_util={value}: {our_text}\n{fio_text}"
        );
        if value == "0" {
            assert!(!fio_text.contains("Disk stats"), "{fio_text}");
            assert_eq!(disks(&fio_json), None);
            assert_eq!(disks(&our_json), None);
        } else {
            // Where fio finds the file's disk (not on every file system).
            if disks(&fio_json).is_some() {
                assert!(fio_text.contains("Disk stats"), "{fio_text}");
            }
            assert_eq!(disks(&our_json), disks(&fio_json).or(Some(0)));
        }
    }
}

#[test]
fn clock_and_log_buffer_options_run_as_in_fio() {
    let Some(fio) = common::fio() else { return };
    let dir = ScratchDir::new("fio-report-options", "clock");
    let args = [
        "--name=j",
        "--ioengine=null",
        "--size=1m",
        "--bs=4k",
        "--rw=read",
        "--clocksource=gettimeofday",
        "--gtod_cpu=0",
        "--log_entries=4096",
        "--output-format=json",
    ];
    let theirs = named_jobs(&common::json_of(&run_in(dir.path(), &fio, &args)));
    let mine = named_jobs(&common::json_of(&run_in(dir.path(), &ours(), &args)));
    assert_eq!(theirs, vec![("j".into(), 1 << 20)]);
    assert_eq!(mine, theirs);
}
