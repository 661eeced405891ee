//! Job files and command lines through `bench::job`: the fixtures under `tests/jobs/`,
//! fio's scoping and grouping rules, the errors of bad input, and (where fio is installed)
//! fio's own verdict on the same files.

#![allow(clippy::result_large_err)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bench::job::{
    parse_command_line_with_env, parse_job_file_with_env, parse_job_str, render_command_line,
    render_job_file, Action, BlockSize, BsSplitEntry, ChecksumKind, DigestChoice, Distribution,
    Engine, Eta, JobError, JobSpec, LogName, Origin, PerDir, RateProcess, RwKind, SizeSpec, Target,
    TransportKind, ValueRange, VerifyKind,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/jobs")
        .join(name)
}

fn test_env(name: &str) -> Option<String> {
    match name {
        "BENCH_TEST_DEPTH" => Some("4".into()),
        "BENCH_TEST_SIZE" => Some("16m".into()),
        _ => None,
    }
}

fn parse(name: &str) -> Vec<JobSpec> {
    parse_job_file_with_env(&fixture(name), &test_env)
        .unwrap_or_else(|error| panic!("{name}: {error}"))
}

fn parse_text(text: &str) -> Result<Vec<JobSpec>, JobError> {
    parse_job_str(Path::new("t.fio"), text, &test_env)
}

fn cli(args: &[&str]) -> Result<bench::job::Invocation, JobError> {
    parse_command_line_with_env(args.iter().copied(), &test_env)
}

#[test]
fn randread_fixture() {
    let jobs = parse("randread-4k.fio");
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(job.name, "randread-4k");
    assert_eq!(job.engine(), Engine::IoUring);
    assert!(job.direct);
    assert_eq!(job.rw.kind, RwKind::RandRead);
    assert_eq!(job.block_size, PerDir::splat(BlockSize::Fixed(4096)));
    assert_eq!(job.iodepth, 32);
    assert_eq!(job.runtime, Some(Duration::from_secs(30)));
    assert!(job.time_based && job.group_reporting);
    assert_eq!(job.numjobs, 4);
    assert_eq!(job.size, Some(SizeSpec::Bytes(1 << 30)));
    assert_eq!(
        job.filename,
        Some(Target::Path("/tmp/iscsi-bench-fixture.dat".into()))
    );
    assert_eq!(
        job.origin,
        Origin::File {
            path: fixture("randread-4k.fio"),
            line: 13,
            column: None
        }
    );
}

#[test]
fn mixed_fixture() {
    let job = &parse("randrw-70-30.fio")[0];
    assert_eq!(job.rw.kind, RwKind::RandRw);
    assert_eq!(job.rwmixread, 70);
    assert_eq!(job.engine(), Engine::Null);
    assert_eq!(job.size, Some(SizeSpec::Bytes(10 << 30)));
    assert_eq!(job.runtime, Some(Duration::from_secs(120)));
    assert_eq!(job.ramp_time, Duration::from_secs(10));
    assert_eq!(job.percentile_list, vec![50.0, 90.0, 99.0, 99.9, 99.99]);
    assert_eq!(
        job.random_distribution,
        Distribution::Zipf {
            theta: 1.2,
            center: None
        }
    );
    assert_eq!(
        job.rate_iops,
        PerDir {
            read: Some(20000),
            write: Some(10000),
            trim: Some(10000)
        }
    );
    assert_eq!(job.rate_process, RateProcess::Poisson);
}

#[test]
fn libiscsi_fixture_runs_on_the_iscsi_engine() {
    let job = &parse("libiscsi.fio")[0];
    assert_eq!(job.engine(), Engine::Iscsi);
    let Some(Target::Iscsi(url)) = &job.filename else {
        panic!("not an iSCSI target: {:?}", job.filename);
    };
    assert_eq!(url.host, "127.0.0.1");
    assert_eq!(url.port, 3260);
    assert_eq!(url.target_iqn, "iqn.2016-02.com.fio:system:fio");
    assert_eq!(url.lun, 0);
    assert_eq!(job.verify, VerifyKind::Checksum(ChecksumKind::Crc32c));
    assert!(job.verify_fatal);
    assert_eq!(job.block_size.write, BlockSize::Fixed(1 << 20));

    // The unescaped form of the brief's example works too.
    let jobs = parse_text("[j]\nioengine=libiscsi\nfilename=iscsi://127.0.0.1/iqn.x/0\n").unwrap();
    assert!(matches!(&jobs[0].filename, Some(Target::Iscsi(url)) if url.target_iqn == "iqn.x"));
}

#[test]
fn groups_follow_stonewall_and_new_group() {
    let jobs = parse("groups.fio");
    let summary: Vec<(&str, u32)> = jobs.iter().map(|j| (j.name.as_str(), j.group_id)).collect();
    // fio 3.33 numbers these 0, 1, 2, 2.
    assert_eq!(
        summary,
        vec![
            ("prep-write", 0),
            ("verify-read", 1),
            ("seq-mix", 2),
            ("split", 2)
        ]
    );
    let seq_mix = &jobs[2];
    assert_eq!(seq_mix.rwmixread, 70);
    assert_eq!(
        seq_mix.block_size,
        PerDir {
            read: BlockSize::Range(ValueRange {
                min: 4096,
                max: 65536
            }),
            write: BlockSize::Range(ValueRange {
                min: 8192,
                max: 16384
            }),
            trim: BlockSize::Range(ValueRange {
                min: 8192,
                max: 16384
            }),
        }
    );
    let split = &jobs[3];
    assert_eq!(
        split.block_size.write,
        BlockSize::Split(vec![
            BsSplitEntry {
                len_bytes: 4096,
                percent: 50
            },
            BsSplitEntry {
                len_bytes: 1024,
                percent: 25
            },
            BsSplitEntry {
                len_bytes: 32768,
                percent: 25
            },
        ])
    );
    assert_eq!(split.write_lat_log, Some(LogName::JobName));
    assert_eq!(split.write_bw_log, Some(LogName::Prefix("split-bw".into())));
    assert_eq!(split.log_avg_msec, 500);
    assert_eq!(split.cpus_allowed, Some(vec![0, 1, 3]));
    assert_eq!(split.thinktime, Duration::from_micros(500));
    assert_eq!(split.thinktime_blocks, Some(8));
}

#[test]
fn includes_env_and_later_globals() {
    let jobs = parse("with-include.fio");
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0].iodepth, 4);
    assert_eq!(jobs[0].size, Some(SizeSpec::Bytes(16 << 20)));
    assert_eq!(jobs[0].block_size.read, BlockSize::Fixed(16 << 10));
    assert_eq!(jobs[1].block_size.read, BlockSize::Fixed(32 << 10));
    assert_eq!(jobs[1].offset, SizeSpec::Percent(50));
    assert_eq!(jobs[1].engine(), Engine::Null);

    let error = parse_job_file_with_env(&fixture("with-include.fio"), &|_| None).unwrap_err();
    assert!(
        matches!(&error, JobError::UnsetEnv { name, .. } if name == "BENCH_TEST_DEPTH"),
        "{error:?}"
    );
    assert!(error.to_string().contains("common.inc:4:9"), "{error}");
}

#[test]
fn iscsi_options_fixture() {
    let job = &parse("iscsi-options.fio")[0];
    let iscsi = &job.iscsi;
    assert_eq!(iscsi.header_digest, DigestChoice::Crc32c);
    assert_eq!(iscsi.data_digest, DigestChoice::None);
    assert_eq!(iscsi.immediate_data, Some(true));
    assert_eq!(iscsi.initial_r2t, Some(false));
    assert_eq!(iscsi.max_burst_length_bytes, Some(256 << 10));
    assert_eq!(iscsi.first_burst_length_bytes, Some(64 << 10));
    assert_eq!(iscsi.max_recv_data_segment_length_bytes, Some(64 << 10));
    assert_eq!(
        iscsi.chap.as_ref().map(|c| c.username.as_str()),
        Some("alice")
    );
    assert_eq!(
        iscsi.chap.as_ref().map(|c| c.secret.as_str()),
        Some("supersecret12")
    );
    assert_eq!(
        iscsi.mutual_chap.as_ref().map(|c| c.username.as_str()),
        Some("target")
    );
    assert_eq!(
        iscsi.initiator_name.as_deref(),
        Some("iqn.2024-01.test:initiator")
    );
    assert_eq!(iscsi.transport, TransportKind::Software);
    assert_eq!(iscsi.shards, Some(2));
    assert_eq!(job.io_timeout, Some(Duration::from_secs(5)));
    assert_eq!(job.verify, VerifyKind::Checksum(ChecksumKind::Sha256));
    assert!(
        !format!("{:?}", iscsi.chap).contains("supersecret"),
        "secret in Debug output"
    );
}

/// Each bad fixture: the error kind and the `file:line` it must name.
#[test]
fn bad_fixtures_name_file_and_line() {
    type ErrorCheck = fn(&JobError) -> bool;
    let cases: [(&str, &str, ErrorCheck); 8] = [
        ("unknown-option.fio", ":3", |e| {
            matches!(e, JobError::UnknownOption { .. }) && e.to_string().contains("\"iodepth\"")
        }),
        (
            "unsupported-option.fio",
            ":3",
            |e| matches!(e, JobError::Unsupported { option, .. } if option == "write_barrier"),
        ),
        ("bad-section.fio", ":3", |e| {
            matches!(e, JobError::Syntax { .. })
        }),
        ("rate-conflict.fio", ":1", |e| {
            matches!(e, JobError::Conflict { .. })
                && e.to_string().contains("rate (")
                && e.to_string().contains("rate_iops (")
        }),
        ("zero-size.fio", ":2", |e| {
            matches!(e, JobError::ZeroSize { .. })
        }),
        ("time-based-no-runtime.fio", ":1", |e| {
            matches!(e, JobError::Conflict { .. }) && e.to_string().contains("runtime")
        }),
        (
            "bad-unit.fio",
            ":2:4",
            |e| matches!(e, JobError::BadValue { option, .. } if option == "bs"),
        ),
        ("outside-section.fio", ":1", |e| {
            matches!(e, JobError::OutsideSection { .. })
        }),
    ];
    for (name, place, check) in cases {
        let path = fixture(&format!("bad/{name}"));
        let error = parse_job_file_with_env(&path, &test_env)
            .err()
            .unwrap_or_else(|| panic!("{name} parsed"));
        assert!(check(&error), "{name}: {error:?}");
        let text = error.to_string();
        assert!(
            text.starts_with(&format!("{}{place}", path.display())),
            "{name}: {text}"
        );
    }
}

#[test]
fn conflicts_and_checks() {
    let conflict = |text: &str, expect: &str| {
        let error = parse_text(text).unwrap_err();
        assert!(
            error.to_string().contains(expect),
            "{text:?}: {error} (want {expect:?})"
        );
    };
    conflict("[j]\nrwmixread=70\nrwmixwrite=50\n", "rwmixread");
    conflict("[j]\nbsrange=4k-8k\nbssplit=4k/50:8k/50\n", "bsrange");
    conflict("[j]\nthinktime_blocks=4\n", "thinktime");
    conflict("[j]\nrate_process=poisson\n", "rate_process");
    conflict("[j]\niodepth=4\niodepth_batch=8\n", "iodepth_batch_submit");
    conflict("[j]\nrw=trim\nverify=md5\n", "trim-only");
    conflict("[j]\nverify=pattern\n", "verify_pattern");
    conflict("[j]\nverify_fatal=1\n", "verify_fatal needs verify");
    conflict("[j]\nioengine=null\nfixedbufs\n", "io_uring option");
    conflict("[j]\nioengine=null\nheader_digest=crc32c\n", "iSCSI option");
    conflict(
        "[j]\nioengine=io_uring\nfilename=iscsi://h/iqn.x:t/0\n",
        "io_uring engine needs",
    );
    conflict(
        "[j]\nfilename=/tmp/x\nioengine=iscsi\n",
        "iscsi engine needs",
    );
    conflict(
        "[j]\nfirst_burst_length=1m\nmax_burst_length=64k\n",
        "FirstBurstLength",
    );
    conflict("[j]\nchap_username=a\n", "go together");
    conflict(
        "[j]\nmutual_chap_username=a\nmutual_chap_secret=b\n",
        "one-way CHAP",
    );
    conflict("[j]\nbs=8k\nsize=4k\n", "smaller than one block");
    conflict("[j]\nbs=4k\nblockalign=3k\n", "blockalign");
    // A list of local files is taken (fio's filename=a:b); null and mixed lists are not.
    assert_eq!(
        parse_text("[j]\nioengine=io_uring\nfilename=a:b\n").unwrap()[0]
            .more_filenames
            .len(),
        1
    );
    conflict("[j]\nioengine=null\nfilename=null:null\n", "several files");
    conflict(
        "[j]\nioengine=io_uring\nfilename=a:null\n",
        "mixes local files",
    );

    // Overrides across sections are not conflicts.
    let jobs = parse_text(
        "[global]\nrwmixread=70\nbsrange=4k-8k\nrate=1m\n[j]\nrw=randrw\nrwmixwrite=50\nbssplit=4k/100\n\
         rate=0\nrate_iops=100\n",
    )
    .unwrap();
    assert_eq!(jobs[0].rwmixread, 50);
    assert_eq!(
        jobs[0].block_size.read,
        BlockSize::Split(vec![BsSplitEntry {
            len_bytes: 4096,
            percent: 100
        }])
    );
    // A read-only verify job is fine: it checks what an earlier run wrote (as in fio).
    assert!(parse_text("[j]\nrw=read\nverify=crc32c\n").is_ok());
    // A job can rename itself; the section name is only the default.
    assert_eq!(parse_text("[j]\nname=other\n").unwrap()[0].name, "other");
}

#[test]
fn target_size_checks() {
    let job = |text: &str| parse_text(text).unwrap().remove(0);
    let whole = job("[j]\n");
    let region = whole.check_target_size(1 << 20).unwrap();
    assert_eq!((region.offset_bytes, region.len_bytes), (0, 1 << 20));
    assert!(matches!(
        whole.check_target_size(0),
        Err(JobError::ZeroSize { .. })
    ));

    let past = job("[j]\noffset=2m\n");
    let error = past.check_target_size(1 << 20).unwrap_err();
    assert!(matches!(error, JobError::PastEnd { offset_bytes, .. } if offset_bytes == 2 << 20));
    assert!(error.to_string().starts_with("t.fio:1"), "{error}");

    let too_big = job("[j]\noffset=512k\nsize=1m\n");
    assert!(matches!(
        too_big.check_target_size(1 << 20),
        Err(JobError::PastEnd { .. })
    ));
    assert!(too_big.check_target_size(2 << 20).is_ok());

    // Percentages of the target; offsets aligned up to the block size (fio's
    // get_start_offset), sizes down.
    let pct = job("[j]\nbs=4k\noffset=33%\nsize=50%\n");
    let region = pct.check_target_size(1 << 20).unwrap();
    assert_eq!(
        region.offset_bytes,
        (1u64 << 20) * 33 / 100 / 4096 * 4096 + 4096
    );
    assert_eq!(region.len_bytes, 1 << 19);

    let clones = job("[j]\nsize=1m\noffset_increment=1m\nnumjobs=4\n");
    assert_eq!(
        clones.region_for_clone(4 << 20, 3).unwrap().offset_bytes,
        3 << 20
    );
    assert!(clones.region_for_clone(4 << 20, 4).is_err());

    let tiny = job("[j]\nbs=64k\n");
    assert!(matches!(
        tiny.check_target_size(4096),
        Err(JobError::ZeroSize { .. })
    ));
}

#[test]
fn command_line_scoping_like_fio() {
    let files = fixture("randrw-70-30.fio");
    let files = files.to_str().unwrap();
    // Before --name: defaults for every job; after: the job's own. CLI jobs come first.
    let invocation = cli(&[
        "--iodepth=7",
        "--bs",
        "16k",
        files,
        "--name=first",
        "--rw=write",
        "-name=second",
        "--bs=8k",
        "--ioengine=null",
        "--output-format=normal,json+",
        "--eta=never",
        "--status-interval=2",
        "--interval-results",
        "--report=out",
        "--output=res.json",
    ])
    .unwrap();
    assert_eq!(invocation.action, Action::Run);
    let names: Vec<(&str, u32)> = invocation
        .jobs
        .iter()
        .map(|j| (j.name.as_str(), j.group_id))
        .collect();
    assert_eq!(names, vec![("first", 0), ("second", 0), ("mixed", 0)]);
    let [first, second, mixed] = &invocation.jobs[..] else {
        panic!("three jobs expected");
    };
    assert_eq!((first.iodepth, first.rw.kind), (7, RwKind::Write));
    assert_eq!(first.block_size.read, BlockSize::Fixed(16 << 10));
    assert_eq!(second.block_size.read, BlockSize::Fixed(8 << 10));
    assert_eq!(second.rw.kind, RwKind::Read);
    // The file's own settings override the command-line defaults; the rest come through.
    assert_eq!(mixed.iodepth, 16);
    assert_eq!(mixed.block_size.read, BlockSize::Fixed(8 << 10));
    let tool = &invocation.tool;
    assert!(tool.output_formats.normal && tool.output_formats.json_plus);
    assert!(!tool.output_formats.json);
    assert_eq!(tool.eta, Eta::Never);
    assert_eq!(tool.status_interval, Some(Duration::from_secs(2)));
    assert_eq!(tool.interval_results, Some(Duration::from_secs(2)));
    assert_eq!(tool.report_dir, Some(PathBuf::from("out")));
    assert_eq!(tool.output, Some(PathBuf::from("res.json")));

    // Two files: the second starts a new group; the first file's [global] stays in it.
    let invocation = cli(&[fixture("groups.fio").to_str().unwrap(), files]).unwrap();
    let groups: Vec<u32> = invocation.jobs.iter().map(|j| j.group_id).collect();
    assert_eq!(groups, vec![0, 1, 2, 2, 3]);
    assert_eq!(
        invocation.jobs[4].block_size.read,
        BlockSize::Fixed(8 << 10)
    );
}

#[test]
fn command_line_without_name_runs_one_job() {
    let invocation = cli(&["--rw=randread", "--bs=4k", "--iodepth=32", "--runtime=10"]).unwrap();
    assert_eq!(invocation.jobs.len(), 1);
    let job = &invocation.jobs[0];
    assert_eq!(job.name, "iscsi-bench");
    assert_eq!(job.engine(), Engine::Iscsi);
    assert_eq!(job.filename, None);
    assert_eq!(job.iodepth, 32);
    assert!(matches!(cli(&[]), Err(JobError::NoJobs)));
    assert!(matches!(
        cli(&["--output-format=json"]),
        Err(JobError::NoJobs)
    ));
}

#[test]
fn command_line_tool_actions_and_errors() {
    assert_eq!(cli(&["--help"]).unwrap().action, Action::Help);
    assert_eq!(cli(&["--version"]).unwrap().action, Action::Version);
    assert!(bench::job::version_text().starts_with("iscsi-bench-"));
    assert!(bench::job::help_text().contains("--output-format"));
    match cli(&["--cmdhelp=bs"]).unwrap().action {
        Action::CmdHelp(text) => assert!(text.contains("blocksize"), "{text}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        cli(&["--parse-only", "--name=a"]).unwrap().action,
        Action::ParseOnly
    );
    assert_eq!(
        cli(&["--showcmd", "--name=a"]).unwrap().action,
        Action::ShowCmd
    );

    let error = cli(&["--name=a", "--iodpth=4"]).unwrap_err();
    assert!(error.to_string().contains("--iodepth"), "{error}");
    assert!(
        error.to_string().contains("command line argument 2"),
        "{error}"
    );
    let error = cli(&["--outptu=x"]).unwrap_err();
    assert!(error.to_string().contains("--output"), "{error}");
    assert!(matches!(
        cli(&["--debug=io"]),
        Err(JobError::Unsupported { .. })
    ));
    assert!(matches!(
        cli(&["--name=a", "--write_barrier=1"]),
        Err(JobError::Unsupported { .. })
    ));
    assert!(
        cli(&["--output-format=terse", "--name=a"])
            .unwrap()
            .tool
            .output_formats
            .terse
    );
    assert!(matches!(
        cli(&["--terse-version=2"]),
        Err(JobError::BadValue { .. })
    ));
    assert!(matches!(
        cli(&["--eta=sometimes"]),
        Err(JobError::BadValue { .. })
    ));
    assert!(matches!(
        cli(&["--name=a", "--bs"]),
        Err(JobError::MissingValue { .. })
    ));
    assert!(matches!(
        cli(&["--name="]),
        Err(JobError::MissingValue { .. })
    ));
    assert!(matches!(
        cli(&["--readonly", "--name=a", "--rw=write"]),
        Err(JobError::InvalidJob { .. })
    ));
    assert!(matches!(
        cli(&["/nonexistent/job.fio"]),
        Err(JobError::Read { .. })
    ));
    let only = cli(&["--section=split", fixture("groups.fio").to_str().unwrap()]).unwrap();
    assert_eq!(only.jobs.len(), 1);
    assert_eq!(only.jobs[0].name, "split");
    // A section that is not there is named, with the ones that are.
    let groups = fixture("groups.fio");
    let groups = groups.to_str().unwrap();
    for args in [
        vec!["--section=nosuch", groups],
        vec!["--section=split", "--section=nosuch", groups],
    ] {
        let error = cli(&args).expect_err("no section [nosuch]");
        assert!(
            matches!(&error, JobError::NoSuchSection { section, .. } if section == "nosuch"),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "--section=nosuch: no job section [nosuch] (the job sections are: [prep-write], \
             [verify-read], [seq-mix], [split])"
        );
    }
    assert_eq!(
        cli(&["--name=a", "--interval-results=500ms"])
            .unwrap()
            .tool
            .interval_results,
        Some(Duration::from_millis(500))
    );
}

#[test]
fn showcmd_output_parses_back() {
    let jobs = parse("groups.fio");
    let line = render_command_line(&jobs);
    assert!(line.starts_with("iscsi-bench --name=prep-write"), "{line}");
    let args: Vec<&str> = line.split(' ').skip(1).collect();
    assert!(
        args.iter().all(|a| !a.starts_with('\'')),
        "needs a shell to split: {line}"
    );
    let mut again = cli(&args).unwrap().jobs;
    let mut expected = jobs.clone();
    for job in again.iter_mut().chain(expected.iter_mut()) {
        job.origin = Origin::Builtin;
    }
    assert_eq!(again, expected);
}

/// fio is the judge of what a fio job file is: every fixture iscsi-bench accepts as a
/// fio-compatible file must pass `fio --parse-only`, and so must our rendering of it.
#[test]
fn fio_accepts_the_fio_fixtures_and_our_rendering() {
    let fio = Command::new("fio").arg("--version").output();
    if !common::require_tool("fio", fio.is_ok_and(|o| o.status.success())) {
        return;
    }
    let fio_parse = |path: &Path| {
        let output = Command::new("timeout")
            .args(["20", "fio", "--parse-only"])
            .arg(path)
            .env("BENCH_TEST_DEPTH", "4")
            .env("BENCH_TEST_SIZE", "16m")
            .output()
            .expect("run fio");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.success() && stderr.trim().is_empty(), stderr)
    };
    let dir = std::env::temp_dir().join(format!("iscsi-bench-fio-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in [
        "randread-4k.fio",
        "randrw-70-30.fio",
        "libiscsi.fio",
        "groups.fio",
        "with-include.fio",
    ] {
        let (ok, stderr) = fio_parse(&fixture(name));
        assert!(ok, "fio refuses {name}: {stderr}");
        let rendered = dir.join(name);
        std::fs::write(&rendered, render_job_file(&parse(name))).unwrap();
        let (ok, stderr) = fio_parse(&rendered);
        assert!(ok, "fio refuses our rendering of {name}: {stderr}");
    }
    // And where fio refuses a bad file, so do we (both name the option).
    for name in ["unknown-option.fio", "outside-section.fio"] {
        let (ok, _) = fio_parse(&fixture(&format!("bad/{name}")));
        assert!(!ok, "fio accepts bad/{name}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
