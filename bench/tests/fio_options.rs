//! fio's options beside fio itself (issue 13, item 4): each job here runs (or parses) the
//! same text through fio's `null` engine and through iscsi-bench's library, and compares
//! what both do: offsets issued (fio's `write_iolog` against our workload's plan), counts,
//! and acceptance. Skipped (loudly) where fio is missing, a failure under CI.

#![allow(clippy::result_large_err)]

mod common;

use common::ScratchDir;

use std::path::{Path, PathBuf};
use std::process::Command;

use bench::job::{parse_job_str, JobSpec};

fn parse(text: &str) -> Vec<JobSpec> {
    parse_job_str(Path::new("t.fio"), text, &|_| None).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// fio's verdict on a job file (`--parse-only`, at most 20 s): accepted with nothing on
/// stderr.
fn fio_accepts(dir: &ScratchDir, text: &str) -> Result<(), String> {
    let path = dir.join("job.fio");
    std::fs::write(&path, text).unwrap();
    let out = fio_command()
        .args(["--parse-only"])
        .arg(&path)
        .output()
        .expect("run fio");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() && stderr.trim().is_empty() {
        Ok(())
    } else {
        Err(stderr)
    }
}

/// Every alias fio 3.42's options.c names for an option iscsi-bench supports, with the
/// option it stands for: fio takes both spellings, and so do we, to the same spec.
#[test]
fn fio_aliases_mean_their_options() {
    let pairs = [
        ("readwrite=randread", "rw=randread"),
        ("iodepth_batch_submit=2", "iodepth_batch=2"),
        ("iodepth_batch_complete=2", "iodepth_batch_complete_min=2"),
        ("io_limit=1m", "io_size=1m"),
        ("fileoffset=64k", "offset=64k"),
        ("blocksize=8k", "bs=8k"),
        ("blockalign=8k", "ba=8k"),
        ("blocksize_range=4k-8k", "bsrange=4k-8k"),
        ("allrandrepeat=0", "randrepeat=0"),
        ("timeout=2", "runtime=2"),
        ("ratemin=1m", "rate_min=1m"),
        ("ratecycle=500", "rate_cycle=500"),
        ("wait_for_previous=1", "stonewall=1"),
    ];
    let fio = common::tool_present("fio");
    let dir = ScratchDir::new("fio-options", "aliases");
    let base = "[j]\nioengine=null\nsize=4m\niodepth=4\n";
    for (alias, name) in pairs {
        let ours_alias = parse(&format!("{base}{alias}\n"));
        let ours_name = parse(&format!("{base}{name}\n"));
        assert_eq!(ours_alias, ours_name, "{alias} is not {name}");
        assert_ne!(ours_alias, parse(base), "{alias} changed nothing");
        if fio {
            fio_accepts(&dir, &format!("{base}{alias}\n"))
                .unwrap_or_else(|e| panic!("fio refuses {alias}: {e}"));
        }
    }
    // `threads` is the tiobench profile's option, which fio registers as a job option and
    // reads only under profile=tiobench: taken, no effect, as in fio.
    assert_eq!(parse(&format!("{base}threads=4\n")), parse(base));
    if fio {
        fio_accepts(&dir, &format!("{base}threads=4\n")).unwrap();
    }
}

/// fio's libiscsi syntax (colons escaped) names the same LUN as the plain URL.
#[test]
fn escaped_iscsi_filename_is_the_plain_url() {
    let escaped = parse("[j]\nioengine=libiscsi\nfilename=iscsi\\://127.0.0.1\\:3260/iqn.2016-02.com.fio\\:system\\:fio/1\n");
    let plain = parse("[j]\nioengine=libiscsi\nfilename=iscsi://127.0.0.1:3260/iqn.2016-02.com.fio:system:fio/1\n");
    assert_eq!(escaped, plain);
    assert!(format!("{:?}", escaped[0].filename).contains("iqn.2016-02.com.fio:system:fio"));
}

/// One I/O: direction letter (r, w, t), offset, length.
type Io = (char, u64, u64);

/// What fio issues for `job` (one `[j]` section, `ioengine=null`), from its `write_iolog`.
fn fio_ios(dir: &ScratchDir, job: &str) -> Vec<Io> {
    fio_ios_with(Path::new("fio"), dir, job)
}

fn fio_ios_with(fio: &Path, dir: &ScratchDir, job: &str) -> Vec<Io> {
    let log = dir.join("iolog");
    let _ = std::fs::remove_file(&log);
    let path = dir.join("ios.fio");
    std::fs::write(&path, format!("{job}write_iolog={}\n", log.display())).unwrap();
    let out = Command::new("timeout")
        .arg("20")
        .arg(fio)
        .arg("--output=/dev/null")
        .arg(&path)
        .output()
        .expect("run fio");
    assert!(
        out.status.success(),
        "fio: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&log).expect("fio's iolog");
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // fio 3.x iolog v3: time file action offset length
            match fields.as_slice() {
                [_, _, action @ ("read" | "write" | "trim"), offset, len] => Some((
                    action.chars().next().unwrap(),
                    offset.parse().unwrap(),
                    len.parse().unwrap(),
                )),
                _ => None,
            }
        })
        .collect()
}

/// What iscsi-bench's workload issues for the same job (its plan, I/O by I/O; at most
/// 100,000 I/Os), on a target as long as fio's null engine makes it: `filesize`, else the
/// end of the region.
fn our_ios(job: &str) -> Vec<Io> {
    our_ios_on(job, None)
}

/// [`our_ios`] on a target of `target_bytes` (`None`: as fio's null engine sizes it), set up
/// as the runner sets a job up: the region checked against the target, zones wrapping at
/// its end.
fn our_ios_on(job: &str, target_bytes: Option<u64>) -> Vec<Io> {
    use bench::job::SizeSpec;
    use bench::run::setup;
    use bench::workload::{Next, Workload};
    let spec = parse(job).remove(0);
    let seed = bench::workload::job_seed(spec.randseed, spec.randrepeat, 1, 0);
    let region_end = match (spec.offset, spec.size) {
        (SizeSpec::Bytes(offset), Some(SizeSpec::Bytes(size))) => Some(offset + size),
        _ => None,
    };
    let target_bytes = target_bytes
        .or_else(|| setup::file_size_bytes(&spec, 0, seed, 0))
        .or(region_end)
        .expect("the test jobs give offset and size in bytes, or filesize");
    let used_bytes = setup::file_size_bytes(&spec, target_bytes, seed, 0).unwrap_or(target_bytes);
    let region = spec.check_target_size(used_bytes).unwrap();
    let mut config = setup::workload_config(&spec, region, seed, 512).unwrap();
    if let Some(zones) = config.strided_zones.as_mut() {
        zones.target_end_bytes = target_bytes;
    }
    let mut workload = Workload::new(config).unwrap();
    let mut ios = Vec::new();
    for _ in 0..100_000 {
        match workload.next(std::time::Duration::ZERO) {
            Next::Io(io) => {
                let letter = match io.direction {
                    bench::io::Direction::Read => 'r',
                    bench::io::Direction::Write => 'w',
                    bench::io::Direction::Trim => 't',
                };
                ios.push((letter, io.offset, u64::from(io.len)));
            }
            Next::WaitForCompletions => workload.on_complete(std::time::Duration::ZERO),
            Next::VerifyPhase => {}
            Next::VerifyBacklog => {
                workload.take_backlog();
            }
            // A pause after the last I/O: nothing is left to issue.
            Next::Pause(_) | Next::Done => return ios,
        }
    }
    panic!("the job did not end within 100,000 I/Os");
}

fn kib(ios: &[Io]) -> String {
    ios.iter()
        .map(|(d, o, _)| format!("{d}{}", o / 1024))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `rw=read:8k` (holes), `rw=read:-8k` (backwards), `rw=write:8k` over two loops,
/// `percentage_random=0` (all sequential): fio's offsets, one for one.
#[test]
fn sequential_offset_modifiers_issue_fios_offsets() {
    if !common::tool_present("fio") {
        return;
    }
    let dir = ScratchDir::new("fio-options", "seq-modifiers");
    for extra in [
        "rw=read:8k\n",
        "rw=read:-8k\n",
        "rw=write:8k\nloops=2\n",
        "rw=read:-4k\nbs=8k\n",
        "rw=randread\npercentage_random=0\n",
        "rw=randwrite\npercentage_random=0,0\n",
    ] {
        let job = format!("[j]\nioengine=null\noffset=0\nsize=64k\nbs=4k\n{extra}");
        let fio = fio_ios(&dir, &job);
        let ours = our_ios(&job);
        assert!(!fio.is_empty());
        assert_eq!(kib(&ours), kib(&fio), "{extra}");
    }
}

/// `rw=randread:4`: a random offset every 4 I/Os, the 3 between continuing sequentially
/// (`rw_sequencer=sequential`) or repeating it (`identical`). Random offsets differ (fio's
/// generator is not ours), so the shape is compared: the same count, and in both every
/// I/O that is not a group's first follows the rule.
#[test]
fn random_offset_groups_follow_rw_sequencer_as_in_fio() {
    if !common::tool_present("fio") {
        return;
    }
    let dir = ScratchDir::new("fio-options", "rand-groups");
    let size = 256 * 1024;
    for (sequencer, identical) in [("sequential", false), ("identical", true)] {
        let job = format!(
            "[j]\nioengine=null\noffset=0\nsize={size}\nbs=4k\nrw=randread:4\nrw_sequencer={sequencer}\n"
        );
        let fio = fio_ios(&dir, &job);
        let ours = our_ios(&job);
        assert_eq!(ours.len(), fio.len(), "{sequencer}");
        for (who, ios) in [("fio", &fio), ("ours", &ours)] {
            let mut follows = 0;
            for (index, io) in ios.iter().enumerate().skip(1) {
                if index % 4 == 0 {
                    continue;
                }
                let before = ios[index - 1];
                let expected = if identical {
                    before.1
                } else {
                    before.1 + before.2
                };
                // At the region's end a sequential follower is random (both tools).
                if io.1 == expected {
                    follows += 1;
                } else {
                    assert!(
                        !identical && expected + io.2 > size,
                        "{who} {sequencer}: {}",
                        kib(ios)
                    );
                }
            }
            assert!(follows >= ios.len() / 2, "{who} {sequencer}: {}", kib(ios));
        }
        // And random starts do vary.
        let starts: std::collections::BTreeSet<u64> =
            ours.iter().step_by(4).map(|io| io.1).collect();
        assert!(starts.len() > 4, "{}", kib(&ours));
    }
}

/// `percentage_random=25`: about a quarter of offsets random, the rest continuing where the
/// last I/O ended, in fio and in ours (1,024 I/Os; bounds far wider than the noise).
#[test]
fn percentage_random_mixes_like_fio() {
    if !common::tool_present("fio") {
        return;
    }
    let dir = ScratchDir::new("fio-options", "pct-random");
    let job = "[j]\nioengine=null\noffset=0\nsize=4m\nbs=4k\nrw=randread\npercentage_random=25\n";
    let share_sequential = |ios: &[Io]| {
        let follows = ios.windows(2).filter(|w| w[1].1 == w[0].1 + w[0].2).count();
        follows as f64 / (ios.len() - 1) as f64
    };
    let fio = share_sequential(&fio_ios(&dir, job));
    let ours = share_sequential(&our_ios(job));
    assert!((0.65..0.85).contains(&fio), "fio {fio}");
    assert!((0.65..0.85).contains(&ours), "ours {ours}");
}

/// Share of each job's I/Os (per direction letter) whose offset falls in `[start, end)`.
fn share_in(ios: &[Io], direction: char, start: u64, end: u64) -> f64 {
    let of_direction: Vec<&Io> = ios.iter().filter(|io| io.0 == direction).collect();
    let inside = of_direction
        .iter()
        .filter(|io| io.1 >= start && io.1 < end)
        .count();
    inside as f64 / of_direction.len().max(1) as f64
}

/// `random_distribution=zoned` and `zoned_abs`, one list for all directions and one per
/// direction: the share of I/Os in each zone, fio's and ours, both near the asked share
/// (2,048 I/Os, 4 MiB; the bounds are several standard deviations wide).
#[test]
fn zoned_distributions_put_io_where_fio_does() {
    if !common::tool_present("fio") {
        return;
    }
    let dir = ScratchDir::new("fio-options", "zoned");
    let mib = 1024 * 1024;
    let base = "[j]\nioengine=null\noffset=0\nsize=4m\nio_size=8m\nbs=4k\n";
    // (options, [(direction, zone start, zone end, expected share)])
    type Zones<'a> = &'a [(char, u64, u64, f64)];
    let cases: [(&str, Zones<'_>); 4] = [
        (
            "rw=randread\nrandom_distribution=zoned:60/10:30/20:10/70\n",
            &[
                ('r', 0, 4 * mib / 10, 0.60),
                ('r', 4 * mib / 10, 12 * mib / 10, 0.30),
            ],
        ),
        (
            "rw=randread\nrandom_distribution=zoned_abs:70/1m:30/3m\n",
            &[('r', 0, mib, 0.70), ('r', mib, 4 * mib, 0.30)],
        ),
        (
            "rw=randrw\nrandom_distribution=zoned:90/25:10/75,20/50:80/50\n",
            &[('r', 0, mib, 0.90), ('w', 0, 2 * mib, 0.20)],
        ),
        // fio's examples/rand-zones.fio: the last zone's size is blank (the 75% left).
        (
            "rw=randread\nrandom_distribution=zoned:50/5:20/20:30/\n",
            &[
                ('r', 0, 4 * mib / 20, 0.50),
                ('r', 4 * mib / 20, 4 * mib / 4, 0.20),
                ('r', 4 * mib / 4, 4 * mib, 0.30),
            ],
        ),
    ];
    for (extra, zones) in cases {
        let job = format!("{base}{extra}");
        // fio 3.33 refuses per-direction zone lists (a bug fixed by 3.42).
        let fio = if extra.contains(',') {
            let Some(anchor) = common::fio_anchor() else {
                eprintln!("SKIPPED: per-direction zones need fio 3.42 ($FIO_ANCHOR)");
                continue;
            };
            fio_ios_with(&anchor, &dir, &job)
        } else {
            fio_ios(&dir, &job)
        };
        let ours = our_ios(&job);
        assert_eq!(ours.len(), fio.len(), "{extra}");
        for &(direction, start, end, share) in zones {
            for (who, ios) in [("fio", &fio), ("ours", &ours)] {
                let got = share_in(ios, direction, start, end);
                assert!(
                    (got - share).abs() < 0.06,
                    "{who} {extra}: {direction} in [{start}, {end}): {got}, expected {share}"
                );
            }
        }
    }
    // A zone list that does not add up is refused by both.
    let bad = format!("{base}rw=randread\nrandom_distribution=zoned:60/10:30/20\n");
    assert!(fio_accepts(&dir, &bad).is_err());
    assert!(parse_job_str(Path::new("t.fio"), &bad, &|_| None).is_err());
}

/// `random_generator`: fio's three names are taken (our generator is one: the offsets
/// differ from fio's whichever is named); anything else is refused by both.
#[test]
fn random_generator_names_are_fios() {
    let fio = common::tool_present("fio");
    let dir = ScratchDir::new("fio-options", "randgen");
    for name in ["tausworthe", "lfsr", "tausworthe64"] {
        let job = format!("[j]\nioengine=null\nsize=1m\nrw=randread\nrandom_generator={name}\n");
        parse(&job);
        if fio {
            fio_accepts(&dir, &job).unwrap();
        }
    }
    let bad = "[j]\nioengine=null\nsize=1m\nrandom_generator=mt19937\n";
    assert!(parse_job_str(Path::new("t.fio"), bad, &|_| None).is_err());
    if fio {
        assert!(fio_accepts(&dir, bad).is_err());
    }
}

/// `fio`, bounded to 20 s; the caller adds the arguments.
fn fio_command() -> Command {
    let mut command = Command::new("timeout");
    command.args(["20", "fio"]);
    command
}

/// Runs iscsi-bench with `args` (at most 30 s); its stdout.
fn bench_run(args: &[&str]) -> std::process::Output {
    Command::new("timeout")
        .arg("30")
        .arg(env!("CARGO_BIN_EXE_iscsi-bench"))
        .args(args)
        .output()
        .expect("run iscsi-bench")
}

/// The run failed, and its error names `word`.
fn assert_refused_naming(out: &std::process::Output, word: &str) {
    assert!(!out.status.success(), "not refused: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(word),
        "the refusal does not name {word:?}: {out:?}"
    );
}

fn json_after_notes(text: &str) -> serde_json::Value {
    let start = text
        .find('{')
        .unwrap_or_else(|| panic!("no JSON in {text}"));
    serde_json::from_str(&text[start..]).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// `unified_rw_reporting`: the job's JSON keys in fio's order (`mixed` alone, or after
/// read/write/trim/sync), the mixed entry the sum of the directions, and the text report's
/// `mixed:` block, for fio and for us on the same null-engine job.
#[test]
fn unified_rw_reporting_has_fios_shape() {
    let fio = common::tool_present("fio");
    let args = |mode: &str| {
        vec![
            "--name=j".to_string(),
            "--ioengine=null".into(),
            "--rw=randrw".into(),
            "--size=1m".into(),
            format!("--unified_rw_reporting={mode}"),
        ]
    };
    let keys = |job: &serde_json::Value| -> Vec<String> {
        let wanted = ["read", "write", "trim", "sync", "mixed"];
        job.as_object()
            .unwrap()
            .keys()
            .filter(|k| wanted.contains(&k.as_str()))
            .cloned()
            .collect()
    };
    for mode in ["none", "mixed", "both", "1"] {
        let mut ours_args = args(mode);
        ours_args.push("--output-format=json".into());
        let ours_args: Vec<&str> = ours_args.iter().map(String::as_str).collect();
        let out = bench_run(&ours_args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ours = json_after_notes(&String::from_utf8_lossy(&out.stdout));
        let job = &ours["jobs"][0];
        if mode != "none" {
            let mixed = &job["mixed"];
            assert_eq!(mixed["total_ios"], 256, "{mode}: {mixed}");
            assert_eq!(mixed["io_bytes"], 1 << 20, "{mode}");
        }
        if fio {
            let mut fio_args = args(mode);
            fio_args.push("--output-format=json".into());
            let out = fio_command().args(&fio_args).output().unwrap();
            let theirs = json_after_notes(&String::from_utf8_lossy(&out.stdout));
            assert_eq!(keys(job), keys(&theirs["jobs"][0]), "{mode}");
        }
    }
    // The text report: fio's "mixed:" line in place of (or after) the directions.
    let text = |mode: &str| {
        let a = args(mode);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        String::from_utf8_lossy(&bench_run(&a).stdout).into_owned()
    };
    let mixed = text("mixed");
    assert!(mixed.contains("  mixed: IOPS="), "{mixed}");
    assert!(!mixed.contains("  read: IOPS="), "{mixed}");
    // The group lines: fio's "  MIXED:" alone, or after READ and WRITE.
    assert!(
        mixed.contains("\n  MIXED: bw=") && !mixed.contains("   READ: bw="),
        "{mixed}"
    );
    let both = text("both");
    let (read_at, mixed_at) = (
        both.find("  read: IOPS=").unwrap(),
        both.find("  mixed: IOPS=").unwrap(),
    );
    assert!(read_at < mixed_at, "{both}");
    let (group_read, group_mixed) = (
        both.find("   READ: bw=").unwrap(),
        both.find("  MIXED: bw=").unwrap(),
    );
    assert!(group_read < group_mixed, "{both}");
}

/// `fill_device` (alias `fill_fs`): on a target with an end (fio's null engine with a size,
/// a LUN) it writes to that end, the same count as fio; a regular file with no size, which
/// fio would grow until its file system is full, is refused before any I/O.
#[test]
fn fill_device_writes_to_the_end() {
    let job = "[j]\nioengine=null\noffset=0\nsize=1m\nbs=4k\nrw=write\nfill_device=1\n";
    let ours = our_ios(job);
    assert_eq!(ours.len(), 256);
    assert_eq!(parse(job), parse(&job.replace("fill_device", "fill_fs")));
    if common::tool_present("fio") {
        let dir = ScratchDir::new("fio-options", "fill");
        assert_eq!(kib(&fio_ios(&dir, job)), kib(&ours));
    }
    let dir = ScratchDir::new("fio-options", "fill-file");
    let file = dir.join("f");
    std::fs::write(&file, vec![0u8; 64 * 1024]).unwrap();
    let filename = format!("--filename={}", file.display());
    let out = bench_run(&[
        "--name=j",
        "--ioengine=io_uring",
        &filename,
        "--rw=write",
        "--fill_device=1",
    ]);
    assert_refused_naming(&out, "fill_device");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 64 * 1024);
}

/// `iodepth_low`: a full queue drains to the low mark before it is filled again, so fewer
/// submissions see the full depth (fio's "IO depths"). fio's null engine completes each
/// I/O as it is queued (its depth is always 1), so fio cannot run the same comparison:
/// here fio's verdict on the option, and our depth histogram with and without it.
#[test]
fn iodepth_low_drains_a_full_queue() {
    let level_8 = |low: &str| -> f64 {
        let out = bench_run(&[
            "--name=j",
            "--ioengine=null",
            "--rw=randread",
            "--size=4m",
            "--iodepth=8",
            &format!("--iodepth_low={low}"),
            "--output-format=json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc = json_after_notes(&String::from_utf8_lossy(&out.stdout));
        doc["jobs"][0]["iodepth_level"]["8"].as_f64().unwrap()
    };
    let full = level_8("8");
    let low = level_8("1");
    assert!(full > 90.0, "without iodepth_low: {full}% at depth 5-8");
    assert!(low < 70.0, "iodepth_low=1: {low}% at depth 5-8");
    if common::tool_present("fio") {
        let dir = ScratchDir::new("fio-options", "iodepth-low");
        fio_accepts(
            &dir,
            "[j]\nioengine=null\nsize=1m\niodepth=8\niodepth_low=1\n",
        )
        .unwrap();
    }
}

/// `exitall` with each `exit_what`, and `exitall_on_error`: the same job file through fio
/// and through ours; per job, whether it did I/O, and that the long job `b` was cut short
/// (it asks for 3 s). One run of each tool per case, each well under 3 s. Job `a` lasts
/// about 0.5 s (1,024 I/Os at 2,000 a second), so that `b` has started its I/O before `a`
/// ends it even on a loaded machine (at 128 ms `b` sometimes had not, under load 8).
#[test]
fn exitall_ends_the_jobs_fio_ends() {
    let fio = common::tool_present("fio");
    let dir = ScratchDir::new("fio-options", "exitall");
    let jobs = |ending: &str| {
        format!(
            "[a]\nioengine=null\nsize=4m\nrate_iops=2000\n{ending}\n\
             [b]\nioengine=null\nsize=1g\ntime_based\nruntime=3\n\
             [c]\nstonewall\nioengine=null\nsize=1m\n\
             [d]\nnew_group\nioengine=null\nsize=1m\n"
        )
    };
    // (ending of job a, which of a, b, c, d do I/O)
    let cases = [
        ("exitall=1", [true, true, true, true]),
        ("exitall=1\nexit_what=stonewall", [true, true, true, true]),
        ("exitall=1\nexit_what=all", [true, true, false, false]),
    ];
    let summary = |doc: &serde_json::Value| -> Vec<(String, bool, u64)> {
        doc["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| {
                let ios = j["read"]["total_ios"].as_u64().unwrap();
                let runtime = j["read"]["runtime"].as_u64().unwrap();
                (j["jobname"].as_str().unwrap().to_string(), ios > 0, runtime)
            })
            .collect()
    };
    for (ending, did_io) in cases {
        let path = dir.join("exitall.fio");
        std::fs::write(&path, jobs(ending)).unwrap();
        let path_arg = path.to_str().unwrap();
        let started = std::time::Instant::now();
        let out = bench_run(&["--output-format=json", path_arg]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            started.elapsed() < std::time::Duration::from_millis(2500),
            "{ending}"
        );
        let ours = summary(&json_after_notes(&String::from_utf8_lossy(&out.stdout)));
        let names: Vec<&str> = ours.iter().map(|j| j.0.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "d"], "{ending}");
        let ours_io: Vec<bool> = ours.iter().map(|j| j.1).collect();
        assert_eq!(ours_io, did_io, "ours, {ending}");
        assert!(ours[1].2 < 2000, "ours: b ran {} ms, {ending}", ours[1].2);
        if fio {
            let out = fio_command()
                .args(["--output-format=json", path_arg])
                .output()
                .unwrap();
            let theirs = summary(&json_after_notes(&String::from_utf8_lossy(&out.stdout)));
            let theirs_io: Vec<bool> = theirs.iter().map(|j| j.1).collect();
            assert_eq!(theirs_io, did_io, "fio, {ending}");
            assert!(
                theirs[1].2 < 2000,
                "fio: b ran {} ms, {ending}",
                theirs[1].2
            );
        }
    }
}

/// `flow`/`flow_id`: two jobs of one flow, weights 3 and 1, run for 1 s side by side; their
/// I/O counts keep about 3:1 in fio and in ours; a job in another flow_id is not held.
#[test]
fn flow_weights_share_io_as_in_fio() {
    let fio = common::tool_present("fio");
    let dir = ScratchDir::new("fio-options", "flow");
    let path = dir.join("flow.fio");
    std::fs::write(
        &path,
        "[global]\nioengine=null\nsize=1g\ntime_based\nruntime=1\n\
         [a]\nflow_id=1\nflow=3\n[b]\nflow_id=1\nflow=1\nflow_sleep=50\n",
    )
    .unwrap();
    let path_arg = path.to_str().unwrap();
    let ratio = |text: &str| {
        let doc = json_after_notes(text);
        let ios: Vec<f64> = doc["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["read"]["total_ios"].as_f64().unwrap())
            .collect();
        ios[0] / ios[1]
    };
    // Without flow control the two would run about 1:1; a job running alone for a moment
    // at its start or end (threads start one after the other, on a loaded machine too)
    // moves the ratio (by a lot on a loaded 2-core machine with a debug build: 2.07 was
    // seen; 1.27-1.63 with the load average at 5), in fio as in ours; 1:1 in every run
    // would mean no flow control. Up to three runs, as for fio below.
    let mut ours = Vec::new();
    for _ in 0..3 {
        let out = bench_run(&["--output-format=json", path_arg]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        ours.push(ratio(&String::from_utf8_lossy(&out.stdout)));
        if (1.8..4.5).contains(ours.last().unwrap()) {
            break;
        }
    }
    assert!(
        ours.iter().any(|r| (1.8..4.5).contains(r)),
        "ours a:b = {ours:?}"
    );
    if fio {
        // fio is the yardstick here, not the subject: it only has to show flow control at
        // all (1.60 was seen from it while the machine compiled, and once, with the load
        // average at 7, a ratio outside this range): up to three runs.
        let mut seen = Vec::new();
        for _ in 0..3 {
            let out = fio_command()
                .args(["--output-format=json", path_arg])
                .output()
                .unwrap();
            let theirs = ratio(&String::from_utf8_lossy(&out.stdout));
            seen.push(theirs);
            if (1.3..6.0).contains(&theirs) {
                break;
            }
        }
        assert!(
            seen.iter().any(|r| (1.3..6.0).contains(r)),
            "fio a:b = {seen:?}"
        );
    }
}

/// The `steadystate` object's keys, recursively (shape, not numbers).
fn shape(value: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(object) = value.as_object() {
        for (key, inner) in object {
            out.push(key.clone());
            out.extend(shape(inner).into_iter().map(|k| format!("{key}.{k}")));
        }
    }
    out
}

/// `steadystate`/`ss` with `ss_dur`: a job paced at a flat 5000 IOPS reaches `iops:5%`
/// over 2 s and ends long before its 10 s runtime, in fio and in ours; one whose criterion
/// cannot hold (`iops_slope:0%`) runs its runtime out. fio's JSON `steadystate` object:
/// the same keys, `attained`, `duration` and a sample per second of the window.
#[test]
fn steadystate_ends_a_steady_job_as_fio_does() {
    let fio = common::tool_present("fio");
    let job = |criterion: &str, runtime: u32| {
        vec![
            "--name=j".to_string(),
            "--ioengine=null".into(),
            "--size=1g".into(),
            "--time_based".into(),
            format!("--runtime={runtime}"),
            "--rate_iops=5000".into(),
            format!("--ss={criterion}"),
            "--ss_dur=2".into(),
            "--output-format=json".into(),
        ]
    };
    // Both cases and both tools at once (each takes 2-3 s of wall time).
    let cases = [("iops:5%", 10, 1), ("iops_slope:0%", 3, 0)];
    let results: Vec<(serde_json::Value, Option<serde_json::Value>)> =
        std::thread::scope(|scope| {
            let handles: Vec<_> = cases
                .iter()
                .map(|&(criterion, runtime, _)| {
                    let args = job(criterion, runtime);
                    let theirs = fio.then(|| {
                        let args = args.clone();
                        scope.spawn(move || {
                            let out = fio_command().args(&args).output().unwrap();
                            json_after_notes(&String::from_utf8_lossy(&out.stdout))["jobs"][0]
                                .clone()
                        })
                    });
                    let ours = scope.spawn(move || {
                        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
                        let out = bench_run(&arg_refs);
                        assert!(
                            out.status.success(),
                            "{}",
                            String::from_utf8_lossy(&out.stderr)
                        );
                        json_after_notes(&String::from_utf8_lossy(&out.stdout))["jobs"][0].clone()
                    });
                    (ours, theirs)
                })
                .collect();
            handles
                .into_iter()
                .map(|(ours, theirs)| (ours.join().unwrap(), theirs.map(|t| t.join().unwrap())))
                .collect()
        });
    for ((criterion, _, attained), (ours, theirs)) in cases.iter().zip(results) {
        let ss = &ours["steadystate"];
        assert_eq!(ss["attained"], *attained, "ours {criterion}: {ss}");
        assert_eq!(ss["duration"], 2);
        assert_eq!(ss["data"]["iops"].as_array().unwrap().len(), 2, "{ss}");
        let runtime_ms = ours["read"]["runtime"].as_u64().unwrap();
        if *attained == 1 {
            assert!(runtime_ms < 4000, "ours ran {runtime_ms} ms");
            assert!(
                (3000..6500).contains(&ss["data"]["iops_mean"].as_u64().unwrap()),
                "{ss}"
            );
        } else {
            assert!(runtime_ms >= 2900, "ours ran {runtime_ms} ms");
        }
        if let Some(theirs) = theirs {
            assert_eq!(
                theirs["steadystate"]["attained"], *attained,
                "fio {criterion}"
            );
            assert_eq!(shape(&theirs["steadystate"]), shape(ss), "{criterion}");
            assert_eq!(theirs["steadystate"]["ss"], ss["ss"]);
        }
    }
}

fn job_counts(text: &str) -> (i64, u64, u64) {
    let doc = json_after_notes(text);
    let job = &doc["jobs"][0];
    (
        job["error"].as_i64().unwrap(),
        job["read"]["total_ios"].as_u64().unwrap(),
        job["write"]["total_ios"].as_u64().unwrap(),
    )
}

/// `verify_interval`: a random-write job with 16 KiB blocks and a header every 4 KiB
/// writes, reads back and checks the same counts as fio on a file (fio through psync,
/// ours through io_uring), without error. `io_submit_mode=offload` issues what inline does.
#[test]
fn verify_interval_and_offload_do_what_fio_does() {
    let fio = common::tool_present("fio");
    let dir = ScratchDir::new("fio-options", "verify-interval");
    let file = dir.join("data");
    let common = [
        format!("--filename={}", file.display()),
        "--size=1m".into(),
        "--bs=16k".into(),
        "--rw=randwrite".into(),
        "--verify=crc32c".into(),
        "--verify_interval=4k".into(),
        "--output-format=json".into(),
    ];
    let mut ours_args = vec!["--name=j".to_string(), "--ioengine=io_uring".into()];
    ours_args.extend(common.iter().cloned());
    let arg_refs: Vec<&str> = ours_args.iter().map(String::as_str).collect();
    let ours = job_counts(&String::from_utf8_lossy(&bench_run(&arg_refs).stdout));
    assert_eq!(ours, (0, 64, 64));
    if fio {
        let _ = std::fs::remove_file(&file);
        let out = fio_command()
            .args(["--name=j", "--ioengine=psync"])
            .args(&common)
            .output()
            .unwrap();
        assert_eq!(job_counts(&String::from_utf8_lossy(&out.stdout)), ours);
    }
    let null = |mode: &str| {
        let args = [
            "--name=j",
            "--ioengine=null",
            "--size=1m",
            "--rw=randread",
            "--iodepth=4",
            &format!("--io_submit_mode={mode}"),
            "--output-format=json",
        ];
        job_counts(&String::from_utf8_lossy(&bench_run(&args).stdout))
    };
    assert_eq!(null("offload"), null("inline"));
    if fio {
        fio_accepts(
            &dir,
            "[j]\nioengine=null\nsize=1m\nio_submit_mode=offload\n",
        )
        .unwrap();
    }
}

/// `--minimal` (fio's terse v3): one line per job with fio's 121 fields (80 under
/// `unified_rw_reporting=mixed`), in fio's places: the version, name, group and error at
/// the head, the KiB and I/O counts of each direction where fio has them, the percentile
/// fields as `p%=value`, the CPU and depth percentages with their `%`.
#[test]
fn minimal_is_fios_terse_v3_field_for_field() {
    let fio = common::tool_present("fio");
    for extra in [
        &["--rw=randrw"][..],
        &["--rw=randrw", "--unified_rw_reporting=mixed"],
        &["--rw=write", "--description=a b"],
    ] {
        let mut args = vec!["--name=j", "--ioengine=null", "--size=1m", "--minimal"];
        args.extend_from_slice(extra);
        let out = bench_run(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ours = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(ours.lines().count(), 1, "{ours}");
        let ours: Vec<String> = ours.trim_end().split(';').map(str::to_string).collect();
        assert_eq!(&ours[..5], ["3", "fio-3.33", "j", "0", "0"]);
        if fio {
            let out = fio_command().args(&args).output().unwrap();
            let theirs: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .trim_end()
                .split(';')
                .map(str::to_string)
                .collect();
            assert_eq!(ours.len(), theirs.len(), "{extra:?}");
            for (index, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                // The same kind of field in each place: percentile, percentage or number.
                let kind = |f: &str| (f.contains("%="), f.ends_with('%'), f.contains('.'));
                assert_eq!(
                    kind(a),
                    kind(b),
                    "field {index}: ours {a}, fio {b} ({extra:?})"
                );
            }
            // Counts that do not depend on timing are equal: KiB of each direction in
            // total, and the total of the mixed block.
            let kib = |f: &[String]| -> u64 {
                if extra.contains(&"--unified_rw_reporting=mixed") {
                    f[5].parse().unwrap()
                } else {
                    f[5].parse::<u64>().unwrap() + f[46].parse::<u64>().unwrap()
                }
            };
            assert_eq!(kib(&ours), kib(&theirs), "{extra:?}");
            assert_eq!(ours.last(), theirs.last(), "{extra:?}");
        }
    }
}

/// `fsync=4` and `end_fsync`: 256 writes bring 63 counted flushes in fio's "sync" entry
/// (none after the last write, and end_fsync's flush is not counted), on fio's null engine
/// and a file (psync) and on ours (null, io_uring with fsync(2)); the `lat_ns` keys are
/// fio's. `sync=1` (O_SYNC) runs on a file in both. The iscsi engine sends SYNCHRONIZE
/// CACHE for each flush and FUA writes for `sync=1`, counted the same way.
#[test]
fn fsync_counts_flushes_as_fio_does() {
    let fio = common::tool_present("fio");
    let dir = ScratchDir::new("fio-options", "fsync");
    let file = dir.join("data");
    let filename = format!("--filename={}", file.display());
    let sync_of = |text: &str| {
        let doc = json_after_notes(text);
        let job = &doc["jobs"][0];
        let keys: Vec<String> = job["sync"]["lat_ns"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        (
            job["error"].as_i64().unwrap(),
            job["sync"]["total_ios"].as_u64().unwrap(),
            job["write"]["total_ios"].as_u64().unwrap(),
            keys,
        )
    };
    let common = [
        "--name=j",
        "--size=1m",
        "--bs=4k",
        "--rw=write",
        "--fsync=4",
        "--end_fsync=1",
        "--output-format=json",
    ];
    for (ours_engine, fio_engine, file_arg) in [
        ("--ioengine=null", "--ioengine=null", None),
        (
            "--ioengine=io_uring",
            "--ioengine=psync",
            Some(filename.as_str()),
        ),
    ] {
        let mut args: Vec<&str> = common.to_vec();
        args.extend(file_arg);
        let mut ours_args = args.clone();
        ours_args.push(ours_engine);
        let _ = std::fs::remove_file(&file);
        let out = bench_run(&ours_args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ours = sync_of(&String::from_utf8_lossy(&out.stdout));
        assert_eq!((ours.0, ours.1, ours.2), (0, 63, 256), "{ours_engine}");
        if fio {
            let _ = std::fs::remove_file(&file);
            let out = fio_command().args(&args).arg(fio_engine).output().unwrap();
            assert_eq!(
                sync_of(&String::from_utf8_lossy(&out.stdout)),
                ours,
                "{fio_engine}"
            );
        }
    }
    let _ = std::fs::remove_file(&file);
    let out = bench_run(&[
        "--name=j",
        "--ioengine=io_uring",
        &filename,
        "--size=256k",
        "--rw=write",
        "--sync=1",
        "--output-format=json",
    ]);
    assert_eq!(
        job_counts(&String::from_utf8_lossy(&out.stdout)),
        (0, 0, 64)
    );
    // The iscsi engine (its embedded target): the flushes are SYNCHRONIZE CACHE, counted as
    // fio counts them; sync=1 writes carry FUA and complete.
    let mut args: Vec<&str> = common.to_vec();
    args.push("--ioengine=iscsi");
    let out = bench_run(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let iscsi = sync_of(&String::from_utf8_lossy(&out.stdout));
    assert_eq!((iscsi.0, iscsi.1, iscsi.2), (0, 63, 256), "iscsi");
    let out = bench_run(&[
        "--name=j",
        "--ioengine=iscsi",
        "--size=256k",
        "--rw=write",
        "--sync=1",
        "--output-format=json",
    ]);
    assert_eq!(
        job_counts(&String::from_utf8_lossy(&out.stdout)),
        (0, 0, 64)
    );
}

/// `verify_only`: a write job with verify, run again with `verify_only=1`, writes nothing
/// and checks what the first run wrote: fio (psync) and ours (io_uring), each on its own
/// file (the header formats differ), count 64 writes done without I/O and 64 checked
/// reads; after four bytes of a block are overwritten, both end with EILSEQ (84). fio stops
/// at the first bad block; ours checks the rest and reports the count.
#[test]
fn verify_only_checks_an_earlier_run() {
    let fio = common::tool_present("fio");
    let dir = ScratchDir::new("fio-options", "verify-only");
    let run = |tool: &str, file: &Path, extra: &[&str]| -> (i64, u64, u64) {
        let filename = format!("--filename={}", file.display());
        let mut args = vec![
            "--name=j",
            &filename,
            "--size=256k",
            "--bs=4k",
            "--rw=write",
            "--verify=crc32c",
            "--output-format=json",
        ];
        args.extend_from_slice(extra);
        let out = if tool == "fio" {
            fio_command()
                .arg("--ioengine=psync")
                .args(&args)
                .output()
                .unwrap()
        } else {
            let mut ours = vec!["--ioengine=io_uring"];
            ours.extend(args);
            bench_run(&ours)
        };
        job_counts(&String::from_utf8_lossy(&out.stdout))
    };
    let tools: &[&str] = if fio { &["ours", "fio"] } else { &["ours"] };
    let mut results = Vec::new();
    for tool in tools {
        let file = dir.join(&format!("data-{tool}"));
        assert_eq!(
            run(tool, &file, &[]),
            (0, 64, 64),
            "{tool}: the writing run"
        );
        let clean = run(tool, &file, &["--verify_only=1"]);
        assert_eq!(
            clean,
            (0, 64, 64),
            "{tool}: verify_only on the written file"
        );
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[70_000..70_004].copy_from_slice(b"XXXX");
        std::fs::write(&file, bytes).unwrap();
        let bad = run(tool, &file, &["--verify_only=1"]);
        assert_eq!(
            (bad.0, bad.2),
            (84, 64),
            "{tool}: verify_only after corruption"
        );
        results.push(bad.1);
    }
    if let [ours, theirs] = results[..] {
        assert!(ours >= theirs, "ours read {ours}, fio {theirs}");
    }
}

/// Of a file's 4 KiB blocks: the share that repeat an earlier block, and of those the share
/// whose first copy lies in the first quarter of the file.
fn dedupe_shape(path: &Path) -> (f64, f64) {
    let data = std::fs::read(path).unwrap();
    let mut first: std::collections::HashMap<&[u8], usize> = std::collections::HashMap::new();
    let (mut repeats, mut early) = (0usize, 0usize);
    let blocks: Vec<&[u8]> = data.chunks(4096).collect();
    for (index, block) in blocks.iter().enumerate() {
        match first.get(block) {
            Some(&at) => {
                repeats += 1;
                early += usize::from(at < blocks.len() / 4);
            }
            None => {
                first.insert(block, index);
            }
        }
    }
    (
        repeats as f64 / blocks.len() as f64,
        early as f64 / repeats.max(1) as f64,
    )
}

/// `dedupe_mode`: with `dedupe_percentage=50`, half of the blocks repeat an earlier one in
/// both modes, in fio (psync) and in ours (io_uring); `repeat` copies the last unique block
/// (copies spread over the file), `working_set` one of the first 10% of unique blocks
/// (copies of blocks from the file's start).
#[test]
fn dedupe_mode_repeats_as_fio_does() {
    let fio = common::tool_present("fio");
    let dir = ScratchDir::new("fio-options", "dedupe");
    for (mode, early_low, early_high) in [("repeat", 0.0, 0.5), ("working_set", 0.9, 1.01)] {
        let mut shapes = Vec::new();
        for tool in if fio {
            &["ours", "fio"][..]
        } else {
            &["ours"][..]
        } {
            let file = dir.join(&format!("{mode}-{tool}"));
            let filename = format!("--filename={}", file.display());
            let args = [
                "--name=j",
                filename.as_str(),
                "--size=4m",
                "--bs=4k",
                "--rw=write",
                "--dedupe_percentage=50",
                &format!("--dedupe_mode={mode}"),
                "--dedupe_working_set_percentage=10",
            ];
            if *tool == "fio" {
                let out = fio_command()
                    .arg("--ioengine=psync")
                    .args(args)
                    .output()
                    .unwrap();
                assert!(out.status.success());
            } else {
                let mut ours = vec!["--ioengine=io_uring"];
                ours.extend(args);
                assert!(bench_run(&ours).status.success());
            }
            shapes.push((tool, dedupe_shape(&file)));
        }
        for (tool, (share, early)) in shapes {
            assert!(
                (0.42..0.58).contains(&share),
                "{tool} {mode}: {share} repeats"
            );
            assert!(
                (early_low..early_high).contains(&early),
                "{tool} {mode}: {early} early"
            );
        }
    }
    let global = "[j]\nioengine=null\nsize=1m\ndedupe_percentage=10\ndedupe_mode=working_set\ndedupe_global=1\n";
    assert!(parse(global)[0].buffers.dedupe_global);
    if fio {
        fio_accepts(&dir, global).unwrap();
    }
}

/// `write_hist_log` with `log_hist_msec=250` (and `log_hist_coarseness`): a 1 s job at
/// 2000 IOPS writes fio's file name, a line per closed window (3: the open last one is not
/// written) of `time, 0, 4096,` and fio's 1856 bins (232 at coarseness 3), each line
/// counting about 500 completions (fewer when a loaded machine slows the job), in fio and
/// in ours.
#[test]
fn hist_log_has_fios_lines() {
    let fio = common::tool_present("fio");
    let dir = ScratchDir::new("fio-options", "hist");
    for coarseness in [0u32, 3] {
        let mut summaries = Vec::new();
        for tool in if fio {
            &["ours", "fio"][..]
        } else {
            &["ours"][..]
        } {
            let prefix = dir.join(&format!("{tool}-{coarseness}"));
            let args = [
                "--name=h".to_string(),
                "--ioengine=null".into(),
                "--size=1g".into(),
                "--time_based".into(),
                "--runtime=1".into(),
                "--rate_iops=2000".into(),
                format!("--write_hist_log={}", prefix.display()),
                "--log_hist_msec=250".into(),
                format!("--log_hist_coarseness={coarseness}"),
            ];
            if *tool == "fio" {
                let out = fio_command().args(&args).output().unwrap();
                assert!(out.status.success());
            } else {
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                assert!(bench_run(&refs).status.success());
            }
            let text = std::fs::read_to_string(format!("{}_clat_hist.1.log", prefix.display()))
                .unwrap_or_else(|e| panic!("{tool}: {e}"));
            let lines: Vec<(usize, u64, String)> = text
                .lines()
                .map(|line| {
                    let fields: Vec<&str> = line.split(", ").collect();
                    let sum = fields[3..].iter().map(|f| f.parse::<u64>().unwrap()).sum();
                    (fields.len(), sum, fields[1..3].join(","))
                })
                .collect();
            summaries.push((tool, lines));
        }
        for (tool, lines) in summaries {
            assert!((3..=4).contains(&lines.len()), "{tool}: {lines:?}");
            for (fields, sum, head) in lines {
                assert_eq!(fields, 3 + (1856 >> coarseness), "{tool}");
                assert_eq!(head, "0,4096", "{tool}");
                assert!(
                    (100..800).contains(&sum),
                    "{tool}: {sum} completions in a window"
                );
            }
        }
    }
}

/// `verify=meta`: the header alone is checked. A write job with verify writes and checks
/// 64 blocks in fio (psync) and ours (io_uring); run again with `verify_only`, a block
/// whose data (past the header) was overwritten still passes in both, and one whose header
/// was overwritten fails in both with EILSEQ.
#[test]
fn verify_meta_checks_headers_as_fio_does() {
    let fio = common::tool_present("fio");
    let dir = ScratchDir::new("fio-options", "verify-meta");
    let run = |tool: &str, file: &Path, extra: &[&str]| -> (i64, u64, u64) {
        let filename = format!("--filename={}", file.display());
        let mut args = vec![
            "--name=j",
            &filename,
            "--size=256k",
            "--bs=4k",
            "--rw=write",
            "--verify=meta",
            "--output-format=json",
        ];
        args.extend_from_slice(extra);
        let out = if tool == "fio" {
            fio_command()
                .arg("--ioengine=psync")
                .args(&args)
                .output()
                .unwrap()
        } else {
            let mut ours = vec!["--ioengine=io_uring"];
            ours.extend(args);
            bench_run(&ours)
        };
        job_counts(&String::from_utf8_lossy(&out.stdout))
    };
    for tool in if fio {
        &["ours", "fio"][..]
    } else {
        &["ours"][..]
    } {
        let file = dir.join(&format!("data-{tool}"));
        assert_eq!(run(tool, &file, &[]), (0, 64, 64), "{tool}");
        let mut bytes = std::fs::read(&file).unwrap();
        // Block 2's data, well past any header.
        bytes[2 * 4096 + 2048..2 * 4096 + 2052].copy_from_slice(b"XXXX");
        std::fs::write(&file, &bytes).unwrap();
        assert_eq!(
            run(tool, &file, &["--verify_only=1"]).0,
            0,
            "{tool}: data is not checked"
        );
        // Block 5's header (its first bytes).
        bytes[5 * 4096..5 * 4096 + 4].copy_from_slice(b"XXXX");
        std::fs::write(&file, &bytes).unwrap();
        assert_eq!(
            run(tool, &file, &["--verify_only=1"]).0,
            84,
            "{tool}: a bad header"
        );
    }
}

/// `verify_offset=1024` with `verify=meta`: the header sits 1 KiB into each block. Run
/// again with `verify_only`, a block whose first bytes were overwritten passes (they are
/// data now) and one overwritten at 1 KiB fails with EILSEQ, in fio (psync) and in ours.
#[test]
fn verify_offset_moves_the_header_as_fio_does() {
    let fio = common::tool_present("fio");
    let dir = ScratchDir::new("fio-options", "verify-offset");
    let run = |tool: &str, file: &Path, extra: &[&str]| -> (i64, u64, u64) {
        let filename = format!("--filename={}", file.display());
        let mut args = vec![
            "--name=j",
            &filename,
            "--size=64k",
            "--bs=4k",
            "--rw=write",
            "--verify=meta",
            "--verify_offset=1024",
            "--output-format=json",
        ];
        args.extend_from_slice(extra);
        let out = if tool == "fio" {
            fio_command()
                .arg("--ioengine=psync")
                .args(&args)
                .output()
                .unwrap()
        } else {
            let mut ours = vec!["--ioengine=io_uring"];
            ours.extend(args);
            bench_run(&ours)
        };
        job_counts(&String::from_utf8_lossy(&out.stdout))
    };
    for tool in if fio {
        &["ours", "fio"][..]
    } else {
        &["ours"][..]
    } {
        let file = dir.join(&format!("data-{tool}"));
        assert_eq!(run(tool, &file, &[]), (0, 16, 16), "{tool}");
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[3 * 4096..3 * 4096 + 4].copy_from_slice(b"XXXX");
        std::fs::write(&file, &bytes).unwrap();
        assert_eq!(
            run(tool, &file, &["--verify_only=1"]).0,
            0,
            "{tool}: block start is data"
        );
        bytes[6 * 4096 + 1024..6 * 4096 + 1028].copy_from_slice(b"XXXX");
        std::fs::write(&file, &bytes).unwrap();
        assert_eq!(
            run(tool, &file, &["--verify_only=1"]).0,
            84,
            "{tool}: the moved header"
        );
    }
}

/// fio refuses steadystate options that differ within one reporting group; so do we.
#[test]
fn steadystate_options_agree_within_a_group() {
    let bad = "[a]\nioengine=null\nsize=1m\nss=iops:5%\nss_dur=2\n[b]\nioengine=null\nsize=1m\n";
    assert!(parse_job_str(Path::new("t.fio"), bad, &|_| None).is_err());
    let good = "[a]\nioengine=null\nsize=1m\nss=iops:5%\nss_dur=2\n[b]\nnew_group\nioengine=null\nsize=1m\n";
    assert_eq!(parse(good).len(), 2);
    if common::tool_present("fio") {
        let dir = ScratchDir::new("fio-options", "ss-groups");
        let path = dir.join("bad.fio");
        std::fs::write(&path, bad).unwrap();
        let out = fio_command().arg(&path).output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success());
        assert!(
            said.contains("consistent within reporting groups"),
            "{said}"
        );
    }
}

/// `latency_target` with `latency_window`: on the null engine every I/O meets a 500 ms
/// target, so the depth doubles each 100 ms window to the iodepth (8); then the job drains,
/// resets its results and runs one final window, which is what it reports: depth 8 and
/// about 100 ms, in fio and in ours, with fio's `latency_target`/`latency_window` JSON
/// fields. With `latency_run` the job runs its whole runtime instead.
#[test]
fn latency_target_finds_the_depth_as_fio_does() {
    let fio = common::tool_present("fio");
    let summary = |text: &str| {
        let start = text.find('{').unwrap();
        let mut stream =
            serde_json::Deserializer::from_str(&text[start..]).into_iter::<serde_json::Value>();
        let doc = stream.next().unwrap().unwrap();
        let job = doc["jobs"][0].clone();
        (
            job["latency_depth"].as_u64().unwrap(),
            job["latency_target"].as_u64().unwrap(),
            job["latency_window"].as_u64().unwrap(),
            job["read"]["runtime"].as_u64().unwrap(),
        )
    };
    for (run, runtime_range) in [("0", 60..300u64), ("1", 900..1200)] {
        let args = [
            "--name=j",
            "--ioengine=null",
            "--size=1g",
            "--time_based",
            "--runtime=1",
            "--iodepth=8",
            // Far above any null-engine latency, even on a loaded machine with a debug
            // build (where 10 ms stalls happen): every window succeeds in both tools.
            "--latency_target=500ms",
            "--latency_window=100ms",
            &format!("--latency_run={run}"),
            "--output-format=json",
        ];
        let ours = summary(&String::from_utf8_lossy(&bench_run(&args).stdout));
        assert_eq!(
            (ours.0, ours.1, ours.2),
            (8, 500_000_000, 100_000),
            "ours latency_run={run}"
        );
        assert!(
            runtime_range.contains(&ours.3),
            "ours latency_run={run}: {} ms",
            ours.3
        );
        if fio {
            let out = fio_command().args(args).output().unwrap();
            let theirs = summary(&String::from_utf8_lossy(&out.stdout));
            assert_eq!(
                (theirs.0, theirs.1, theirs.2),
                (ours.0, ours.1, ours.2),
                "fio latency_run={run}"
            );
            assert!(
                runtime_range.contains(&theirs.3),
                "fio latency_run={run}: {} ms",
                theirs.3
            );
        }
    }
}

/// `exitall_on_error`: a job that fails (verify_only over a file of zeros: EILSEQ) ends the
/// run's other jobs, so a 3 s job stops at once, in fio (psync) and in ours (io_uring).
#[test]
fn exitall_on_error_ends_the_other_jobs() {
    let fio = common::tool_present("fio");
    let dir = ScratchDir::new("fio-options", "exitall-on-error");
    for tool in if fio {
        &["ours", "fio"][..]
    } else {
        &["ours"][..]
    } {
        let file = dir.join(&format!("zeros-{tool}"));
        std::fs::write(&file, vec![0u8; 64 * 1024]).unwrap();
        let engine = if *tool == "fio" { "psync" } else { "io_uring" };
        let path = dir.join(&format!("{tool}.fio"));
        std::fs::write(
            &path,
            format!(
                "[bad]\nioengine={engine}\nfilename={}\nsize=64k\nrw=write\nverify=crc32c\n\
                 verify_only=1\nexitall_on_error=1\n\
                 [long]\nioengine=null\nsize=1g\ntime_based\nruntime=3\n",
                file.display()
            ),
        )
        .unwrap();
        let path_arg = path.to_str().unwrap();
        let out = if *tool == "fio" {
            fio_command()
                .args(["--output-format=json", path_arg])
                .output()
                .unwrap()
        } else {
            bench_run(&["--output-format=json", path_arg])
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let start = text.find('{').unwrap();
        let doc: serde_json::Value = serde_json::Deserializer::from_str(&text[start..])
            .into_iter()
            .next()
            .unwrap()
            .unwrap();
        let jobs = doc["jobs"].as_array().unwrap();
        assert_eq!(jobs[0]["error"], 84, "{tool}: the failing job");
        let long_ms = jobs[1]["read"]["runtime"].as_u64().unwrap();
        assert!(long_ms < 1500, "{tool}: the 3 s job ran {long_ms} ms");
    }
}

/// fio 3.42's `random_distribution=sequence:3,0,2` (with and without
/// `random_sequence_stride`): the offsets are that block list over and over (or strided
/// by its length each round) until a block falls past the region: fio 3.42's iolog and our
/// plan, one for one. Debian's fio 3.33 does not know it: skipped without the anchor.
#[test]
fn sequence_distribution_issues_fios_offsets() {
    let Some(anchor) = common::fio_anchor() else {
        eprintln!("SKIPPED: random_distribution=sequence needs fio 3.42 ($FIO_ANCHOR)");
        return;
    };
    let dir = ScratchDir::new("fio-options", "sequence");
    for extra in ["", "random_sequence_stride=1\n"] {
        let job = format!(
            "[j]\nioengine=null\noffset=0\nsize=64k\nbs=4k\nrw=randread\n\
             random_distribution=sequence:3,0,2\n{extra}"
        );
        let theirs = fio_ios_with(&anchor, &dir, &job);
        let ours = our_ios(&job);
        assert!(!theirs.is_empty());
        assert_eq!(kib(&ours), kib(&theirs), "{extra}");
    }
}

/// `verify_backlog`: the job reads back what it wrote every N writes, while it writes
/// (reads in the intervals before the end), and each block is read back once in all, as
/// fio counts it, the final verify phase skipping what a backlog check already read.
#[test]
fn verify_backlog_checks_while_writing_and_reads_each_block_once() {
    let fio = common::tool_present("fio");
    let dir = ScratchDir::new("fio-options", "verify-backlog");
    let file = dir.join("data");
    for (rw, extra) in [("randwrite", "--loops=1"), ("write", "--loops=2")] {
        let common = [
            format!("--filename={}", file.display()),
            "--size=1m".into(),
            "--bs=4k".into(),
            format!("--rw={rw}"),
            extra.into(),
            "--verify=crc32c".into(),
            "--verify_backlog=16".into(),
            "--output-format=json".into(),
        ];
        let _ = std::fs::remove_file(&file);
        let mut args = vec!["--name=j".to_string(), "--ioengine=io_uring".into()];
        args.extend(common.iter().cloned());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let ours = job_counts(&String::from_utf8_lossy(&bench_run(&refs).stdout));
        let writes = if rw == "write" { 512 } else { 256 };
        assert_eq!(ours, (0, writes, writes), "{rw}");
        if fio {
            let _ = std::fs::remove_file(&file);
            let out = fio_command()
                .args(["--name=j", "--ioengine=psync"])
                .args(&common)
                .output()
                .unwrap();
            assert_eq!(
                job_counts(&String::from_utf8_lossy(&out.stdout)),
                ours,
                "{rw}"
            );
        }
    }
    // Paced so that the writes span several intervals: reads come before the last one.
    let _ = std::fs::remove_file(&file);
    let file_arg = format!("--filename={}", file.display());
    let out = bench_run(&[
        "--name=j",
        "--ioengine=io_uring",
        &file_arg,
        "--size=512k",
        "--bs=4k",
        "--rw=write",
        "--rate_iops=200",
        "--verify=crc32c",
        "--verify_backlog=16",
        "--interval-results=100ms",
        "--output-format=json",
    ]);
    let doc = json_after_notes(&String::from_utf8_lossy(&out.stdout));
    let intervals = doc["jobs"][0]["iscsi_bench"]["intervals"]
        .as_array()
        .expect("intervals")
        .clone();
    let reads_before_last: u64 = intervals[..intervals.len() - 1]
        .iter()
        .map(|i| i["read"]["total_ios"].as_u64().unwrap_or(0))
        .sum();
    assert!(
        reads_before_last >= 64,
        "backlog reads come while writing: {intervals:?}"
    );
}

/// `verify_dump`: a block corrupted behind the job's back is dumped as read to
/// `<file>.<offset>.received` in the working directory, the name fio gives it.
#[test]
fn verify_dump_writes_the_bad_block_where_fio_does() {
    let fio = common::tool_present("fio");
    let dir = ScratchDir::new("fio-options", "verify-dump");
    let file = dir.join("data");
    let file_arg = format!("--filename={}", file.display());
    let write = [
        "--name=w",
        "--ioengine=io_uring",
        &file_arg,
        "--size=256k",
        "--bs=4k",
        "--rw=write",
        "--verify=crc32c",
        "--do_verify=0",
    ];
    assert!(bench_run(&write).status.success());
    // Flip a byte in the block at 40 KiB.
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[40 * 1024 + 100] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let read = |program: &Path, engine: &str| {
        Command::new("timeout")
            .arg("30")
            .arg(program)
            .current_dir(dir.path())
            .args([
                "--name=r",
                engine,
                &file_arg,
                "--size=256k",
                "--bs=4k",
                "--rw=read",
            ])
            .args(["--verify=crc32c", "--verify_dump=1"])
            .output()
            .expect("run")
    };
    let out = read(
        Path::new(env!("CARGO_BIN_EXE_iscsi-bench")),
        "--ioengine=io_uring",
    );
    assert!(!out.status.success(), "the corruption is found");
    let dumped = dir.join(&format!("data.{}.received", 40 * 1024));
    let received = std::fs::read(&dumped).unwrap_or_else(|e| {
        panic!(
            "{}: {e}\n{}",
            dumped.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(received, bytes[40 * 1024..44 * 1024].to_vec());
    std::fs::remove_file(&dumped).unwrap();
    if fio {
        // fio reads its own headers only: it writes the file and meets the same flip.
        let out = Command::new("timeout")
            .args(["30", "fio", "--ioengine=psync"])
            .args(&write[..1])
            .args(&write[2..])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[40 * 1024 + 100] ^= 0xff;
        std::fs::write(&file, &bytes).unwrap();
        let out = read(Path::new("fio"), "--ioengine=psync");
        assert!(!out.status.success());
        assert!(
            dumped.exists(),
            "fio names the dump as we do: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `verify_state_save` / `verify_state_load`: a random-write job stopped by its runtime
/// leaves `local-w-0-verify.state` in the working directory; a `verify_only` run of the
/// same job with the state checks exactly the blocks written (as many reads as the writing
/// run's writes, no error), and without it checks the whole plan and finds the blocks never
/// written. fio (psync) and ours (io_uring) on a file, each in its own directory.
#[test]
fn verify_state_load_checks_what_the_stopped_run_wrote_as_fio_does() {
    let fio = common::tool_present("fio");
    let tools: &[&str] = if fio { &["ours", "fio"] } else { &["ours"] };
    for tool in tools {
        let dir = ScratchDir::new("fio-options", &format!("verify-state-{tool}"));
        let run = |extra: &[&str]| -> (i64, u64, u64) {
            let mut args = vec![
                "--name=w",
                "--filename=data",
                "--size=4m",
                "--bs=4k",
                "--rw=randwrite",
                "--verify=crc32c",
                "--output-format=json",
            ];
            args.extend_from_slice(extra);
            let mut command = Command::new("timeout");
            command.arg("30").current_dir(dir.path());
            if *tool == "fio" {
                command.args(["fio", "--ioengine=psync"]);
            } else {
                command.args([env!("CARGO_BIN_EXE_iscsi-bench"), "--ioengine=io_uring"]);
            }
            let out = command.args(&args).output().expect("run the tool");
            job_counts(&String::from_utf8_lossy(&out.stdout))
        };
        // About 500 of the 1,024 blocks, then the runtime ends the job.
        let (error, _, written) = run(&["--do_verify=0", "--rate_iops=500", "--runtime=1"]);
        assert_eq!(error, 0, "{tool}: the writing run");
        assert!(
            (100..1024).contains(&written),
            "{tool}: the writing run stopped early ({written} writes)"
        );
        assert!(
            dir.join("local-w-0-verify.state").exists(),
            "{tool}: the state file is saved in the working directory"
        );
        let (error, read, _) = run(&["--verify_only=1", "--verify_state_load=1"]);
        assert_eq!(
            (error, read),
            (0, written),
            "{tool}: verify_only with the state reads back each block written, once"
        );
        let (error, _, _) = run(&["--verify_only=1"]);
        assert_eq!(
            error, 84,
            "{tool}: verify_only without the state finds the blocks never written"
        );
    }
}

/// What fio refuses or we refuse for a good reason, by name: `verify_state_load` needs a
/// `verify_only` write job with verify, and a missing or foreign state file is named.
#[test]
fn verify_state_load_names_what_is_missing() {
    let dir = ScratchDir::new("fio-options", "verify-state-bad");
    // The job, with `extra` options, in the scratch directory (where the state file goes).
    let job = |extra: &[&str]| -> std::process::Output {
        Command::new("timeout")
            .arg("30")
            .arg(env!("CARGO_BIN_EXE_iscsi-bench"))
            .current_dir(dir.path())
            .args([
                "--name=w",
                "--filename=data",
                "--size=1m",
                "--bs=4k",
                "--rw=randwrite",
                "--ioengine=io_uring",
            ])
            .args(extra)
            .output()
            .expect("run iscsi-bench")
    };
    let refused = |extra: &[&str]| -> String {
        let out = job(extra);
        assert!(!out.status.success(), "{extra:?} must be refused");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let text = refused(&["--verify=crc32c", "--verify_state_load=1"]);
    assert!(text.contains("needs verify_only=1"), "{text}");
    let text = refused(&["--verify_only=1", "--verify_state_load=1"]);
    assert!(text.contains("verify_state_load needs verify"), "{text}");
    let loaded = [
        "--verify=crc32c",
        "--verify_only=1",
        "--verify_state_load=1",
    ];
    let text = refused(&loaded);
    assert!(
        text.contains("local-w-0-verify.state") && text.contains("no such file"),
        "{text}"
    );
    // A state saved by another job shape (another seed) is refused, naming the seed.
    std::fs::write(dir.join("data"), vec![0u8; 1 << 20]).unwrap();
    let out = job(&["--verify=crc32c", "--number_ios=10", "--randseed=1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = refused(&[loaded.as_slice(), &["--randseed=2"]].concat());
    assert!(
        text.contains("planned other I/O") && text.contains("seed"),
        "{text}"
    );
}

/// fio's asynchronous local-file engines (`libaio`, `posixaio`) run on io_uring: a job file
/// shaped like fio's examples/fio-rand-read.fio does the same reads on fio and on ours.
#[test]
fn libaio_job_files_run_on_io_uring_as_on_fio() {
    let dir = ScratchDir::new("fio-options", "libaio");
    let file = dir.join("data");
    std::fs::write(&file, vec![0u8; 1 << 20]).unwrap();
    let job_path = dir.join("rand-read.fio");
    for engine in ["libaio", "posixaio"] {
        std::fs::write(
            &job_path,
            format!(
                "[global]\nname=fio-rand-read\nfilename={}\nrw=randread\nbs=4k\ndirect=1\n\
                 size=1m\n\n[file1]\nioengine={engine}\niodepth=16\n",
                file.display()
            ),
        )
        .unwrap();
        let job = job_path.display().to_string();
        let ours = bench_run(&[&job, "--output-format=json"]);
        assert!(ours.status.success(), "{engine}: {ours:?}");
        let ours = json_after_notes(&String::from_utf8_lossy(&ours.stdout));
        assert_eq!(
            ours["jobs"][0]["read"]["total_ios"], 256,
            "{engine}: {ours}"
        );
        if common::tool_present("fio") {
            let fio = fio_command()
                .args(["--output-format=json", &job])
                .output()
                .expect("run fio");
            assert!(fio.status.success(), "fio {engine}: {fio:?}");
            let fio = json_after_notes(&String::from_utf8_lossy(&fio.stdout));
            assert_eq!(
                fio["jobs"][0]["read"]["total_ios"], 256,
                "fio {engine}: {fio}"
            );
        }
    }
    // vsync (contiguous I/Os gathered into one readv) stays refused by name; the other
    // synchronous engines run (tests/fio_sync_engines.rs).
    std::fs::write(
        &job_path,
        format!(
            "[j]\nfilename={}\nioengine=vsync\nrw=read\nsize=64k\n",
            file.display()
        ),
    )
    .unwrap();
    let out = bench_run(&[&job_path.display().to_string()]);
    assert_refused_naming(&out, "vsync");
}

/// `gtod_reduce` and the `disable_*` options: the statistic is not kept, and both tools
/// report it as fio does then (N = 0, no percentiles, no bandwidth samples), while the
/// I/O counts and the job's rate stay.
#[test]
fn gtod_reduce_and_disable_options_drop_what_fio_drops() {
    let fio = common::tool_present("fio");
    let base = [
        "--name=j",
        "--ioengine=null",
        "--size=64m",
        "--bs=4k",
        "--rw=randread",
        "--output-format=json",
    ];
    let cases: [(&str, [bool; 4]); 3] = [
        ("--gtod_reduce=1", [false, false, false, false]),
        ("--disable_clat=1", [true, false, true, true]),
        ("--disable_bw_measurement=1", [true, true, true, false]),
    ];
    for (option, [slat, clat, lat, bandwidth]) in cases {
        let mut args = base.to_vec();
        args.push(option);
        let mut docs = vec![("ours", {
            let out = bench_run(&args);
            assert!(out.status.success(), "{option}: {out:?}");
            json_after_notes(&String::from_utf8_lossy(&out.stdout))
        })];
        if fio {
            let out = fio_command().args(&args).output().expect("run fio");
            assert!(out.status.success(), "fio {option}: {out:?}");
            docs.push((
                "fio",
                json_after_notes(&String::from_utf8_lossy(&out.stdout)),
            ));
        }
        for (who, doc) in docs {
            let read = &doc["jobs"][0]["read"];
            assert_eq!(read["total_ios"], 16384, "{who} {option}");
            assert!(
                read["iops"].as_f64().unwrap() > 0.0,
                "{who} {option}: {read}"
            );
            for (key, kept) in [("slat_ns", slat), ("clat_ns", clat), ("lat_ns", lat)] {
                let n = read[key]["N"].as_u64().unwrap();
                // fio keeps no submission latency for a synchronous engine (null): only
                // a dropped one is compared there.
                if key != "slat_ns" || !kept {
                    assert_eq!(n > 0, kept, "{who} {option}: {key} N = {n}");
                }
                if !kept {
                    assert!(
                        read[key].get("percentile").is_none(),
                        "{who} {option}: {key}"
                    );
                }
            }
            // A 64 MiB null job may end before the first 500 ms sample: only a dropped
            // measurement is checked.
            if !bandwidth {
                assert_eq!(read["bw_samples"], 0, "{who} {option}");
                assert_eq!(read["iops_samples"], 0, "{who} {option}");
            }
        }
    }
}

/// A local-engine job without a `filename` does its I/O to fio's `JOBNAME.0.0`, made with
/// the job's size in `directory` (or the current one), as fio does; a relative `filename`
/// lives in `directory` too.
#[test]
fn a_local_job_without_a_filename_uses_fios_file_in_directory() {
    let fio = common::tool_present("fio");
    for who in if fio {
        &["ours", "fio"][..]
    } else {
        &["ours"][..]
    } {
        let dir = ScratchDir::new("fio-options", &format!("directory-{who}"));
        let job = dir.join("job.fio");
        std::fs::write(
            &job,
            format!(
                "[global]\ndirectory={}\nioengine=libaio\nrw=read\nbs=4k\nsize=256k\n\
                 [made]\n[named]\nfilename=given\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let job = job.display().to_string();
        let out = if *who == "fio" {
            fio_command()
                .args(["--output-format=json", &job])
                .output()
                .expect("run fio")
        } else {
            bench_run(&["--output-format=json", &job])
        };
        assert!(out.status.success(), "{who}: {out:?}");
        let doc = json_after_notes(&String::from_utf8_lossy(&out.stdout));
        for index in 0..2 {
            assert_eq!(doc["jobs"][index]["read"]["total_ios"], 64, "{who}: {doc}");
        }
        for name in ["made.0.0", "given"] {
            let len = std::fs::metadata(dir.join(name)).map(|m| m.len());
            assert_eq!(len.ok(), Some(256 * 1024), "{who}: {name}");
        }
    }
    // Several clones would each want a file of their own: refused, naming what to give.
    let out = bench_run(&[
        "--name=clones",
        "--ioengine=io_uring",
        "--numjobs=2",
        "--size=64k",
        "--directory=/tmp",
    ]);
    assert_refused_naming(&out, "filename=");
}

/// A direction's runtime is rounded up to whole milliseconds, as in fio, so a job shorter
/// than one has a rate and its report line (it had 0 ms, no IOPS and no `read:` line).
#[test]
fn a_job_shorter_than_a_millisecond_still_has_a_rate() {
    let args = [
        "--name=j",
        "--ioengine=null",
        "--size=256k",
        "--bs=4k",
        "--rw=randread",
    ];
    let run = |who: &str, format: &str| {
        let mut all = args.to_vec();
        all.push(format);
        let out = if who == "fio" {
            fio_command().args(all).output().expect("run fio")
        } else {
            bench_run(&all)
        };
        assert!(out.status.success(), "{who}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for who in if common::tool_present("fio") {
        &["ours", "fio"][..]
    } else {
        &["ours"][..]
    } {
        let doc = json_after_notes(&run(who, "--output-format=json"));
        let read = &doc["jobs"][0]["read"];
        assert!(read["runtime"].as_u64().unwrap() >= 1, "{who}: {read}");
        assert!(read["iops"].as_f64().unwrap() > 0.0, "{who}: {read}");
        let text = run(who, "--output-format=normal");
        assert!(text.contains("  read: IOPS="), "{who}: {text}");
    }
}

/// `zonemode=none` is fio's default (the target is not zoned) and runs the same job as
/// without it, in fio and in ours; `zbd` (zoned block devices) is refused by name.
#[test]
fn zonemode_none_runs_and_zbd_is_refused_by_name() {
    let job = [
        "--name=z",
        "--ioengine=null",
        "--rw=randread",
        "--bs=4k",
        "--size=1m",
    ];
    let plain = bench_run(&[&job[..], &["--output-format=json"]].concat());
    assert!(plain.status.success(), "{plain:?}");
    let none = bench_run(&[&job[..], &["--zonemode=none", "--output-format=json"]].concat());
    assert!(none.status.success(), "{none:?}");
    let ios = |out: &std::process::Output| {
        json_after_notes(&String::from_utf8_lossy(&out.stdout))["jobs"][0]["read"]["total_ios"]
            .clone()
    };
    assert_eq!(ios(&none), 256);
    assert_eq!(ios(&none), ios(&plain));
    if common::tool_present("fio") {
        let fio = fio_command()
            .args(job)
            .args(["--zonemode=none", "--output-format=json"])
            .output()
            .expect("run fio");
        assert!(fio.status.success(), "fio: {fio:?}");
        assert_eq!(ios(&fio), 256);
    }
    let out = bench_run(&[&job[..], &["--zonemode=zbd"]].concat());
    assert_refused_naming(&out, "zoned block device");
}

/// `zonemode=strided` with sequential I/O: fio's offsets, one for one. fio's null engine
/// ends the target where the region ends, so the zones wrap there. Zones of `zonesize` bytes
/// `zoneskip` apart are walked again and again until `size` bytes were issued (the skipped
/// bytes count for nothing); a start offset; `zonesize` above `zonerange` (the zone read
/// again) and below it (a part of each zone); `zoneskip` in zones; writes over two loops
/// (each starts at the first zone); `io_size` above `size`; and a zone that runs past the
/// target's end, which ends the job with bytes left.
#[test]
fn strided_zones_issue_fios_sequential_offsets() {
    if !common::tool_present("fio") {
        return;
    }
    let dir = ScratchDir::new("fio-options", "strided-seq");
    for extra in [
        "size=1m\nbs=16k\nzonesize=64k\nzoneskip=192k\n",
        "offset=64k\nsize=960k\nbs=16k\nzonesize=64k\nzoneskip=256k\n",
        "size=512k\nbs=16k\nzonesize=96k\nzonerange=64k\nzoneskip=64k\n",
        "size=512k\nbs=16k\nzonesize=32k\nzonerange=128k\nzoneskip=64k\n",
        "size=512k\nbs=16k\nzonesize=64k\nzoneskip=3z\n",
        "size=512k\nbs=16k\nrw=write\nloops=2\nzonesize=64k\nzoneskip=64k\n",
        "size=512k\nbs=16k\nio_size=768k\nzonesize=64k\nzoneskip=64k\n",
        "size=448k\nbs=64k\nzonesize=128k\nzoneskip=64k\n",
    ] {
        let job = format!("[j]\nioengine=null\nzonemode=strided\n{extra}");
        let fio = fio_ios(&dir, &job);
        let ours = our_ios(&job);
        assert!(!fio.is_empty());
        assert_eq!(kib(&ours), kib(&fio), "{extra}");
    }
    // The last job ran out of target: 5 I/Os of 64 KiB where size asks for 7.
    let short =
        "[j]\nioengine=null\nzonemode=strided\nsize=448k\nbs=64k\nzonesize=128k\nzoneskip=64k\n";
    assert_eq!(our_ios(short).len(), 5);
}

/// fio's zones wrap at the end of the file, not of the region: on a 1 MiB file (fio through
/// libaio with `write_iolog`, ours planned on a target of the file's size), I/O by I/O:
/// zones past a 256 KiB region's end; a 512 KiB region whose zones wrap at the file's end;
/// `io_size` above `size`, issued in rounds of `size` bytes that each start at the first
/// zone; sequential writes of an `io_size` above `size`, which fio 3.42 issues in one round
/// where each zone past the region's end is written at its start only (fio's sequential
/// rewind past `size`; Debian's 3.33 still cuts rounds of `size`: checked against the
/// anchor only); and a time-based job, which rewinds the same way (fio's first 24 I/Os
/// against ours with `number_ios=24`).
#[test]
fn strided_zones_run_to_the_end_of_the_file_as_fios_do() {
    if !common::tool_present("fio") {
        return;
    }
    let dir = ScratchDir::new("fio-options", "strided-file");
    let file = dir.join("target");
    std::fs::File::create(&file)
        .and_then(|f| f.set_len(1 << 20))
        .unwrap();
    let fio = PathBuf::from("fio");
    let anchor = common::fio_anchor();
    for (tool, extra, ours_extra) in [
        (Some(&fio), "size=256k\nzonesize=32k\nzoneskip=96k\n", ""),
        (Some(&fio), "size=512k\nzonesize=64k\nzoneskip=192k\n", ""),
        (
            Some(&fio),
            "size=64k\nio_size=256k\nzonesize=16k\nzoneskip=48k\n",
            "",
        ),
        (
            anchor.as_ref(),
            "rw=write\nsize=64k\nio_size=256k\nzonesize=32k\nzoneskip=32k\n",
            "",
        ),
        (
            Some(&fio),
            "size=64k\nzonesize=32k\nzoneskip=32k\ntime_based\nruntime=1\nrate_iops=100\n",
            "number_ios=24\n",
        ),
    ] {
        let Some(tool) = tool else {
            eprintln!("no fio 3.42 anchor: skipping {extra:?}");
            continue;
        };
        let job = format!(
            "[j]\nioengine=libaio\nfilename={}\nbs=16k\nrw=read\nzonemode=strided\n{extra}",
            file.display()
        );
        let fio = fio_ios_with(tool, &dir, &job);
        let ours = our_ios_on(&format!("{job}{ours_extra}"), Some(1 << 20));
        assert!(ours.len() <= fio.len(), "{extra}");
        assert_eq!(kib(&ours), kib(&fio[..ours.len()]), "{extra}");
        if ours_extra.is_empty() {
            assert_eq!(ours.len(), fio.len(), "{extra}");
        }
    }
}

/// Random reads in strided zones. fio's random generator is not ours, so the offsets are
/// compared through what follows from the bytes issued alone: the zone of each I/O (fio's,
/// one for one); within a zone, offsets on the block grid; with the random map, each visit
/// of `zonerange` bytes reads a block at most once (a visit of `zonerange` reads every
/// one), in fio's and in ours.
#[test]
fn strided_zones_hold_random_reads_as_fios_do() {
    if !common::tool_present("fio") {
        return;
    }
    let dir = ScratchDir::new("fio-options", "strided-rand");
    let bs = 16u64 << 10;
    for (extra, range, skip, map) in [
        ("size=1m\nzonesize=64k\nzoneskip=192k\n", 64, 192, true),
        (
            "size=512k\nzonesize=128k\nzonerange=64k\nzoneskip=64k\n",
            64,
            64,
            true,
        ),
        (
            "size=512k\nzonesize=32k\nzonerange=128k\nzoneskip=64k\n",
            128,
            64,
            true,
        ),
        (
            "size=512k\nnorandommap\nzonesize=64k\nzoneskip=64k\n",
            64,
            64,
            false,
        ),
    ] {
        let (range, stride) = (range << 10, (range + skip) << 10);
        let job = format!("[j]\nioengine=null\nbs=16k\nrw=randread\nzonemode=strided\n{extra}");
        let fio = fio_ios(&dir, &job);
        let ours = our_ios(&job);
        let zones = |ios: &[Io]| ios.iter().map(|io| io.1 / stride).collect::<Vec<_>>();
        assert_eq!(zones(&ours), zones(&fio), "{extra}");
        for (who, ios) in [("fio", &fio), ("ours", &ours)] {
            for io in ios.iter() {
                assert!(
                    io.1 % stride + io.2 <= range && io.1 % bs == 0,
                    "{who} {extra}: {io:?}"
                );
            }
            if map {
                for visit in map_visits(ios, stride, range) {
                    let blocks: std::collections::BTreeSet<u64> = visit.iter().copied().collect();
                    assert_eq!(blocks.len(), visit.len(), "{who} {extra}: {visit:?}");
                }
            }
        }
    }
}

/// The offsets of `ios` cut where fio's random map of a strided zone starts over: at each
/// new zone and after every `range` bytes in one.
fn map_visits(ios: &[Io], stride: u64, range: u64) -> Vec<Vec<u64>> {
    let mut visits: Vec<Vec<u64>> = Vec::new();
    let mut zone = u64::MAX;
    let mut bytes = 0;
    for io in ios {
        if io.1 / stride != zone || bytes == range {
            visits.push(Vec::new());
            zone = io.1 / stride;
            bytes = 0;
        }
        visits.last_mut().unwrap().push(io.1);
        bytes += io.2;
    }
    visits
}

/// fio refuses, when it runs the job, `zonemode=strided` without `zonesize` and `zonesize`
/// without `zonemode=strided` (none is the default); so do we, when we parse it (fio's
/// `--parse-only` does not look). `zonemode=zbd` drives zoned block devices (fio runs it
/// here too, emulating zones on the null engine): refused here by name, as no LUN is one.
/// `zoneskip=2z` is taken by both.
#[test]
fn zone_options_are_refused_where_fio_refuses_them() {
    let fio = common::tool_present("fio");
    let base = "[j]\nioengine=null\nsize=1m\nrw=read\n";
    for (extra, ours_word, fio_refuses) in [
        ("zonemode=strided\n", Some("zonesize"), true),
        ("zonesize=64k\n", Some("zonemode=strided"), true),
        (
            "zonemode=none\nzonesize=64k\n",
            Some("zonemode=strided"),
            true,
        ),
        (
            "zonemode=zbd\nzonesize=64k\n",
            Some("zoned block device"),
            false,
        ),
        ("zonemode=strided\nzonesize=64k\nzoneskip=2z\n", None, false),
    ] {
        let text = format!("{base}{extra}");
        match (
            parse_job_str(Path::new("t.fio"), &text, &|_| None),
            ours_word,
        ) {
            (Err(error), Some(word)) => assert!(error.to_string().contains(word), "{error}"),
            (Ok(_), None) => {}
            (verdict, _) => panic!("{extra}: {verdict:?}"),
        }
        if fio {
            let ran = fio_command()
                .arg("--output=/dev/null")
                .arg("--name=j")
                .args(text.lines().skip(1).map(|line| format!("--{line}")))
                .output()
                .expect("run fio");
            assert_eq!(!ran.status.success(), fio_refuses, "fio, {extra}: {ran:?}");
        }
    }
}

/// `filesize` on fio's null engine (nothing exists there, so the file is taken to be
/// `filesize` long): the region reaches from `offset` to it, and `size` becomes the amount of
/// I/O, capped at the region. fio's offsets, one for one, for sequential jobs; for random
/// ones the count and that the offsets spread over the whole file, not `size`.
#[test]
fn filesize_sets_the_file_fio_works_on() {
    if !common::tool_present("fio") {
        return;
    }
    let dir = ScratchDir::new("fio-options", "filesize-null");
    for extra in [
        "filesize=256k\n",
        "filesize=256k\nsize=64k\n",
        "filesize=256k\nsize=1m\n",
        "offset=64k\nfilesize=256k\n",
        "filesize=256k\nsize=64k\nio_size=128k\n",
    ] {
        let job = format!("[j]\nioengine=null\nbs=4k\nrw=read\n{extra}");
        let fio = fio_ios(&dir, &job);
        assert!(!fio.is_empty());
        assert_eq!(kib(&our_ios(&job)), kib(&fio), "{extra}");
    }
    let job = "[j]\nioengine=null\nbs=4k\nrw=randread\nfilesize=256k\nsize=64k\n";
    for (who, ios) in [("fio", fio_ios(&dir, job)), ("ours", our_ios(job))] {
        assert_eq!(ios.len(), 16, "{who}");
        assert!(
            ios.iter().all(|io| io.1 + io.2 <= 256 << 10),
            "{who}: {}",
            kib(&ios)
        );
        assert!(
            ios.iter().any(|io| io.1 >= 64 << 10),
            "{who}: {}",
            kib(&ios)
        );
    }
}

/// `filesize=128k-512k` on fio's null engine: the file is taken to be a size drawn in the
/// range, a whole number of blocks, and the job reads it once, in fio and in ours (fio's
/// draw is not ours: each is checked against the range); other seeds draw other sizes.
#[test]
fn filesize_range_draws_a_size_in_it_as_fio_does() {
    let job = |seed: u32| {
        format!("[j]\nioengine=null\nbs=4k\nrw=read\nfilesize=128k-512k\nrandseed={seed}\n")
    };
    let read = |ios: &[Io]| ios.iter().map(|io| io.2).sum::<u64>();
    let mut drawn = std::collections::BTreeSet::new();
    for seed in 1..=8 {
        let bytes = read(&our_ios(&job(seed)));
        assert!(
            (128 << 10..512 << 10).contains(&bytes) && bytes % 4096 == 0,
            "{bytes}"
        );
        drawn.insert(bytes);
    }
    assert!(drawn.len() > 4, "{drawn:?}");
    if common::tool_present("fio") {
        let dir = ScratchDir::new("fio-options", "filesize-range");
        for seed in 1..=2 {
            let bytes = read(&fio_ios(&dir, &job(seed)));
            assert!(
                (128 << 10..512 << 10).contains(&bytes) && bytes % 4096 == 0,
                "{bytes}"
            );
        }
    }
}

/// `filesize` on real files, fio (psync) beside ours (io_uring), each on its own copy: a
/// file longer than `filesize` is read only up to it and keeps its length; a file whose
/// length lies within a `filesize` range is read whole; a missing file is laid out to
/// `filesize` and written. The I/O counts (JSON) and the files' lengths after agree.
#[test]
fn filesize_on_existing_files_does_what_fio_does() {
    if !common::tool_present("fio") {
        return;
    }
    let dir = ScratchDir::new("fio-options", "filesize-files");
    for (existing, extra, ios) in [
        (Some(1u64 << 20), "rw=read\nfilesize=256k\n", 64u64),
        (Some(300 << 10), "rw=read\nfilesize=256k-512k\n", 75),
        (None, "rw=write\nfilesize=256k\n", 64),
    ] {
        let mut lengths = Vec::new();
        for who in ["fio", "ours"] {
            let file = dir.join(who);
            let _ = std::fs::remove_file(&file);
            if let Some(len) = existing {
                std::fs::File::create(&file)
                    .and_then(|f| f.set_len(len))
                    .unwrap();
            }
            let engine = if who == "fio" { "psync" } else { "io_uring" };
            let args = [
                "--name=j".to_string(),
                format!("--filename={}", file.display()),
                format!("--ioengine={engine}"),
                "--bs=4k".to_string(),
                "--output-format=json".to_string(),
            ];
            let options = extra.lines().map(|line| format!("--{line}"));
            let args: Vec<String> = args.into_iter().chain(options).collect();
            let out = if who == "fio" {
                fio_command().args(&args).output().expect("run fio")
            } else {
                bench_run(&args.iter().map(String::as_str).collect::<Vec<_>>())
            };
            assert!(out.status.success(), "{who} {extra}: {out:?}");
            let doc = json_after_notes(&String::from_utf8_lossy(&out.stdout));
            let job = &doc["jobs"][0];
            let done = job["read"]["total_ios"].as_u64().unwrap()
                + job["write"]["total_ios"].as_u64().unwrap();
            assert_eq!(done, ios, "{who} {extra}");
            lengths.push(std::fs::metadata(&file).unwrap().len());
        }
        assert_eq!(lengths[0], lengths[1], "{extra}");
        assert_eq!(lengths[0], existing.unwrap_or(256 << 10), "{extra}");
    }
}

/// `fallocate`: a write-only job that writes 64 KiB of a new 1 MiB file leaves the whole
/// MiB allocated with `native` (fio's default), `posix` and `keep`, and only what it wrote
/// with `none`, `0` and `truncate`, in fio (psync) and in ours (io_uring) alike.
#[test]
fn fallocate_allocates_the_file_as_fio_does() {
    use std::os::unix::fs::MetadataExt;
    let fio = common::tool_present("fio");
    let dir = ScratchDir::new("fio-options", "fallocate");
    for (mode, whole) in [
        (None, true),
        (Some("native"), true),
        (Some("posix"), true),
        (Some("1"), true),
        (Some("keep"), true),
        (Some("none"), false),
        (Some("0"), false),
        (Some("truncate"), false),
    ] {
        for who in if fio {
            &["fio", "ours"][..]
        } else {
            &["ours"][..]
        } {
            let file = dir.join(who);
            let _ = std::fs::remove_file(&file);
            let engine = if *who == "fio" { "psync" } else { "io_uring" };
            let mut args = vec![
                "--name=j".to_string(),
                format!("--filename={}", file.display()),
                format!("--ioengine={engine}"),
                "--rw=write".to_string(),
                "--bs=4k".to_string(),
                "--size=1m".to_string(),
                "--io_size=64k".to_string(),
                "--output-format=json".to_string(),
            ];
            args.extend(mode.map(|m| format!("--fallocate={m}")));
            let out = if *who == "fio" {
                fio_command().args(&args).output().expect("run fio")
            } else {
                bench_run(&args.iter().map(String::as_str).collect::<Vec<_>>())
            };
            assert!(out.status.success(), "{who} {mode:?}: {out:?}");
            let allocated = std::fs::metadata(&file).unwrap().blocks() * 512;
            if whole {
                assert!(
                    allocated >= 1 << 20,
                    "{who} {mode:?}: {allocated} bytes allocated"
                );
            } else {
                assert!(
                    allocated < 512 << 10,
                    "{who} {mode:?}: {allocated} bytes allocated"
                );
            }
        }
    }
}

/// `wait_for`: of three jobs, `c` waits for `a` (two clones, both of which it waits for)
/// while `b` runs beside `a`. In ours (`start_ms` on the run's time axis) and in fio 3.42
/// (`job_start`, ms of the epoch; 3.33 has no per-job start) `c` starts once both clones of
/// `a` ended and `b` starts with `a`. A waitee that is no earlier job is refused by both.
#[test]
fn wait_for_starts_a_job_after_its_waitee_as_fio_does() {
    let dir = ScratchDir::new("fio-options", "wait-for");
    let path = dir.join("waitfor.fio");
    std::fs::write(
        &path,
        "[global]\nioengine=null\nsize=1g\ntime_based\nruntime=1\n\
         [a]\nnumjobs=2\n[b]\n[c]\nwait_for=a\ntime_based=0\nsize=1m\n",
    )
    .unwrap();
    let path_arg = path.to_str().unwrap();
    let out = bench_run(&["--output-format=json", "--json-histograms", path_arg]);
    assert!(out.status.success(), "{out:?}");
    let doc = json_after_notes(&String::from_utf8_lossy(&out.stdout));
    let ours = job_spans(&doc, |job| {
        job["iscsi_bench"]["portable"]["start_ms"].as_u64()
    });
    assert_waits_for_a(&ours, "ours");
    if let Some(anchor) = common::fio_anchor() {
        let out = Command::new(&anchor)
            .args(["--output-format=json", path_arg])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let doc = json_after_notes(&String::from_utf8_lossy(&out.stdout));
        let theirs = job_spans(&doc, |job| job["job_start"].as_u64());
        assert_waits_for_a(&theirs, "fio");
    }

    let fio = common::tool_present("fio");
    for (name, jobs) in [
        (
            "unknown",
            "[a]\nioengine=null\nsize=1m\n[c]\nwait_for=zz\nioengine=null\nsize=1m\n",
        ),
        (
            "later",
            "[c]\nwait_for=zz\nioengine=null\nsize=1m\n[zz]\nioengine=null\nsize=1m\n",
        ),
    ] {
        let path = dir.join(&format!("{name}.fio"));
        std::fs::write(&path, jobs).unwrap();
        let out = bench_run(&[path.to_str().unwrap()]);
        assert_refused_naming(&out, "wait_for=zz: waitee job zz unknown");
        if fio {
            let out = fio_command().arg(&path).output().unwrap();
            assert_refused_naming(&out, "waitee job zz unknown");
        }
    }
}

/// Each job's (name, start, end) in ms, its start read by `start` and its end that plus its
/// read runtime.
fn job_spans(
    doc: &serde_json::Value,
    start: impl Fn(&serde_json::Value) -> Option<u64>,
) -> Vec<(String, u64, u64)> {
    doc["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| {
            let begin = start(job).unwrap_or_else(|| panic!("no start in {job}"));
            let runtime = job["read"]["runtime"].as_u64().unwrap();
            (
                job["jobname"].as_str().unwrap().to_string(),
                begin,
                begin + runtime,
            )
        })
        .collect()
}

/// `c` started after both clones of `a` ended (a few ms of rounding allowed); `b` started
/// with `a`, long before.
fn assert_waits_for_a(spans: &[(String, u64, u64)], who: &str) {
    let names: Vec<&str> = spans.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(names, ["a", "a", "b", "c"], "{who}");
    let a_end = spans[0].2.max(spans[1].2);
    let (b_start, c_start) = (spans[2].1, spans[3].1);
    assert!(
        c_start + 5 >= a_end,
        "{who}: c started at {c_start}, a ended at {a_end}: {spans:?}"
    );
    assert!(
        b_start < spans[0].1 + 500,
        "{who}: b did not run beside a: {spans:?}"
    );
    assert!(c_start > b_start + 800, "{who}: c did not wait: {spans:?}");
}

/// `filename_format`: a local job without `filename` makes its file in `directory` under the
/// name fio gives it (keywords in any case, `$clientuid` empty when run locally; clones of a
/// format without `$jobnum` share one file): the same files from fio and from ours.
#[test]
fn filename_format_names_the_files_fio_names() {
    let fio = common::tool_present("fio");
    let made = |who: &str| -> Vec<String> {
        let dir = ScratchDir::new("fio-options", &format!("filename-format-{who}"));
        let job = dir.join("job.fio");
        std::fs::write(
            &job,
            format!(
                "[global]\ndirectory={}\nioengine=libaio\nrw=read\nbs=4k\nsize=16k\n\
                 [fmt]\nfilename_format=f.$jobname.$JOBNUM.$filenum-$clientuid.dat\n\
                 [shared]\nnumjobs=2\nfilename_format=shared.$JobName\n[plain]\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let job = job.display().to_string();
        let out = if who == "fio" {
            fio_command().arg(&job).output().expect("run fio")
        } else {
            bench_run(&[&job])
        };
        assert!(out.status.success(), "{who}: {out:?}");
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name != "job.fio")
            .collect();
        names.sort();
        names
    };
    let ours = made("ours");
    assert_eq!(ours, ["f.fmt.0.0-.dat", "plain.0.0", "shared.shared"]);
    if fio {
        assert_eq!(made("fio"), ours);
    }
}

/// One log file's lines split at fio's `", "`.
fn log_lines(path: &Path) -> Vec<Vec<u64>> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|line| line.split(", ").map(|f| f.parse().unwrap()).collect())
        .collect()
}

/// `log_offset`: the job through fio's null engine and through ours (the embedded target),
/// each writing its latency logs with offsets. Every line has fio's six columns (time,
/// value, direction, block size, offset, priority); a sequential job logs exactly fio's
/// offsets, a random one each block of the region once; averaged lines (`log_avg_msec`,
/// latency and bandwidth) carry block size and offset 0 in both, as fio's windows do.
#[test]
fn log_offset_logs_each_ios_offset_as_fio_does() {
    let fio = common::tool_present("fio");
    let dir = ScratchDir::new("fio-options", "log-offset");
    let region: Vec<u64> = (4..20).map(|block| block * 4096).collect();
    for (rw, avg_msec) in [("read", 0), ("randread", 0), ("read", 1000)] {
        let mut offsets_by_tool = Vec::new();
        for tool in if fio {
            &["ours", "fio"][..]
        } else {
            &["ours"][..]
        } {
            let prefix = dir.join(&format!("{tool}-{rw}-{avg_msec}"));
            let mut args = vec![
                "--name=j".to_string(),
                format!("--rw={rw}"),
                "--bs=4k".into(),
                "--offset=16k".into(),
                "--size=64k".into(),
                "--log_offset=1".into(),
                format!("--write_lat_log={}", prefix.display()),
                format!("--write_bw_log={}", prefix.display()),
                format!("--log_avg_msec={avg_msec}"),
            ];
            let out = if *tool == "fio" {
                args.push("--ioengine=null".into());
                fio_command().args(&args).output().expect("run fio")
            } else {
                bench_run(&args.iter().map(String::as_str).collect::<Vec<_>>())
            };
            assert!(out.status.success(), "{tool} {rw}: {out:?}");
            let log = |kind: &str| {
                log_lines(&PathBuf::from(format!("{}_{kind}.1.log", prefix.display())))
            };
            let lat = log("clat");
            for fields in lat.iter().chain(&log("bw")) {
                assert_eq!(fields.len(), 6, "{tool} {rw}: {fields:?}");
            }
            if avg_msec > 0 {
                for fields in lat.iter().chain(&log("bw")) {
                    assert_eq!(fields[3..5], [0, 0], "{tool} {rw}: {fields:?}");
                }
                continue;
            }
            for fields in &lat {
                assert_eq!(fields[3], 4096, "{tool} {rw}: {fields:?}");
            }
            offsets_by_tool.push(lat.iter().map(|fields| fields[4]).collect::<Vec<_>>());
        }
        for offsets in &offsets_by_tool {
            let mut sorted = offsets.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, region, "{rw}: {offsets:?}");
            if rw == "read" {
                assert_eq!(offsets, &region, "{rw}: in fio's order");
            }
        }
    }
}

/// `command` with writes at or past `limit_kib` failing with EFBIG (RLIMIT_FSIZE, SIGXFSZ
/// ignored so the write fails instead of killing the process): an I/O error any Linux
/// produces on a regular file, for fio and for us alike.
fn with_file_size_limit(limit_kib: u64, program: &Path, args: &[String]) -> Command {
    let mut command = Command::new("timeout");
    command
        .args(["20", "bash", "-c"])
        .arg(format!("trap '' XFSZ; ulimit -f {limit_kib}; exec \"$@\""))
        .arg("limited")
        .arg(program)
        .args(args);
    command
}

/// The failed I/Os a run printed in fio's shape: (program, direction, offset, length).
fn dumped_errors(stderr: &[u8]) -> Vec<(String, String, u64, u64)> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter_map(|line| {
            let (program, rest) = line.split_once(": io_u error on file ")?;
            let (_, io) = rest.rsplit_once(": ")?;
            let (direction, io) = io.split_once(" offset=")?;
            let (offset, len) = io.split_once(", buflen=")?;
            Some((
                program.to_string(),
                direction.to_string(),
                offset.parse().ok()?,
                len.parse().ok()?,
            ))
        })
        .collect()
}

/// `error_dump`: writes past 32 KiB of a 64 KiB file fail (EFBIG, see
/// [`with_file_size_limit`]) for fio (psync) and for ours (io_uring). Under
/// `continue_on_error`, with the errors made non-fatal, `error_dump=1` prints one line per
/// failed I/O in fio's shape, the same I/Os fio prints, and `error_dump=0` (fio's default)
/// none; a fatal error is printed whatever `error_dump` says, as fio does.
#[test]
fn error_dump_prints_each_failed_io_as_fio_does() {
    let fio = common::tool_present("fio");
    let dir = ScratchDir::new("fio-options", "error-dump");
    // EFBIG (27): both tools report the file system's errno.
    let non_fatal = ["--continue_on_error=write", "--ignore_error=,EFBIG"];
    // fio's `ignore_error` also continues on the types it lists, until a later
    // `continue_on_error` sets them anew.
    let ignore_alone = ["--ignore_error=,EFBIG"];
    let ignore_then_none = ["--ignore_error=,EFBIG", "--continue_on_error=none"];
    let cases: [(&[&str], &str, Vec<u64>); 5] = [
        (&non_fatal, "--error_dump=1", vec![32768, 49152]),
        (&non_fatal, "--error_dump=0", vec![]),
        (&[], "--error_dump=0", vec![32768]),
        (&ignore_alone, "--error_dump=1", vec![32768, 49152]),
        (&ignore_then_none, "--error_dump=0", vec![32768]),
    ];
    for (policy, dump, offsets) in cases {
        for tool in if fio {
            &["ours", "fio"][..]
        } else {
            &["ours"][..]
        } {
            let file = dir.join(tool);
            std::fs::File::create(&file)
                .and_then(|f| f.set_len(64 << 10))
                .unwrap();
            let (program, engine) = if *tool == "fio" {
                (PathBuf::from("fio"), "psync")
            } else {
                (PathBuf::from(env!("CARGO_BIN_EXE_iscsi-bench")), "io_uring")
            };
            let args = [
                "--name=j".to_string(),
                format!("--filename={}", file.display()),
                format!("--ioengine={engine}"),
                "--rw=write".into(),
                "--bs=16k".into(),
                "--size=64k".into(),
                dump.into(),
                "--output-format=terse".into(),
            ];
            let args: Vec<String> = args
                .into_iter()
                .chain(policy.iter().map(|a| a.to_string()))
                .collect();
            let out = with_file_size_limit(32, &program, &args)
                .output()
                .expect("run the job");
            let expected: Vec<_> = offsets
                .iter()
                .map(|&offset| {
                    let program = if *tool == "fio" { "fio" } else { "iscsi-bench" };
                    (program.to_string(), "write".to_string(), offset, 16384)
                })
                .collect();
            assert_eq!(
                dumped_errors(&out.stderr),
                expected,
                "{tool} {policy:?} {dump}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
