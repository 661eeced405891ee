//! fio's I/O logs beside fio itself: `write_iolog` writes what fio writes for the same job
//! (line by line for a sequential job, by format and counts for a random one), and
//! `read_iolog` replays a log as fio replays it (the I/Os, their order and, for a
//! version 3 log, their timing). Skipped (loudly) where fio is missing, a failure under CI.

mod common;

use common::{describe, ScratchDir};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs fio with `args` (at most 60 s).
fn fio(args: &[&str]) -> Output {
    let out = Command::new("timeout")
        .arg("60")
        .arg(common::fio_or_installed())
        .args(args)
        .output()
        .expect("run fio");
    assert!(out.status.success(), "fio {args:?}: {}", describe(&out));
    out
}

/// Runs iscsi-bench with `args` (at most 60 s).
fn ours(args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("60")
        .arg(env!("CARGO_BIN_EXE_iscsi-bench"))
        .args(args)
        .output()
        .expect("run iscsi-bench")
}

fn ours_ok(args: &[&str]) -> Output {
    let out = ours(args);
    assert!(
        out.status.success(),
        "iscsi-bench {args:?}: {}",
        describe(&out)
    );
    out
}

/// One line of a version 3 log after the header.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    time_us: u64,
    file: String,
    action: String,
    /// Offset and length of an I/O line.
    io: Option<(u64, u64)>,
}

/// A version 3 log as fio writes it: the header, then lines of three or five fields, each
/// starting with a time in µs.
fn read_v3(path: &Path) -> Vec<Line> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("fio version 3 iolog"), "{text}");
    lines
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let number = |i: usize| -> u64 {
                fields[i]
                    .parse()
                    .unwrap_or_else(|_| panic!("field {i} of {line:?} is not a number"))
            };
            match fields.len() {
                3 => Line {
                    time_us: number(0),
                    file: fields[1].into(),
                    action: fields[2].into(),
                    io: None,
                },
                5 => Line {
                    time_us: number(0),
                    file: fields[1].into(),
                    action: fields[2].into(),
                    io: Some((number(3), number(4))),
                },
                _ => panic!("not a version 3 line: {line:?}"),
            }
        })
        .collect()
}

/// The lines without their times and file names (the two runs' files may differ).
fn untimed(lines: &[Line]) -> Vec<(String, Option<(u64, u64)>)> {
    lines
        .iter()
        .map(|line| (line.action.clone(), line.io))
        .collect()
}

fn assert_times_rise(lines: &[Line]) {
    for pair in lines.windows(2) {
        assert!(pair[0].time_us <= pair[1].time_us, "{pair:?}");
    }
}

fn count(lines: &[Line], action: &str) -> usize {
    lines.iter().filter(|l| l.action == action).count()
}

/// A sequential job on the null engine: the same lines as fio's, times aside, and the same
/// file name (fio names the null engine's file `<job>.<clone>.<file>`).
#[test]
fn write_iolog_sequential_null_matches_fio_line_by_line() {
    if common::fio().is_none() {
        return;
    }
    let dir = ScratchDir::new("fio-iolog", "seq-null");
    let fio_log = dir.join("fio.log");
    let our_log = dir.join("ours.log");
    let job = [
        "--name=seq",
        "--ioengine=null",
        "--size=256k",
        "--bs=16k",
        "--rw=rw",
    ];
    let arg = |p: &Path| format!("--write_iolog={}", p.display());
    let mut args = job.to_vec();
    let fio_arg = arg(&fio_log);
    args.extend([fio_arg.as_str(), "--output=/dev/null"]);
    fio(&args);
    let mut args = job.to_vec();
    let our_arg = arg(&our_log);
    args.extend([our_arg.as_str(), "--output=/dev/null"]);
    ours_ok(&args);
    let theirs = read_v3(&fio_log);
    let mine = read_v3(&our_log);
    assert_times_rise(&mine);
    assert_eq!(
        mine.iter().map(|l| &l.file).collect::<Vec<_>>(),
        theirs.iter().map(|l| &l.file).collect::<Vec<_>>()
    );
    assert_eq!(mine[0].file, "seq.0.0");
    // rw=rw draws each I/O's direction (each tool its own draw); each direction walks the
    // region on its own from 0, in fio as here.
    for lines in [&mine, &theirs] {
        assert_eq!(
            lines.iter().filter(|l| l.io.is_some()).count(),
            16,
            "{lines:?}"
        );
        for direction in ["read", "write"] {
            let offsets: Vec<u64> = lines
                .iter()
                .filter(|l| l.action == direction)
                .map(|l| l.io.unwrap().0)
                .collect();
            let walk: Vec<u64> = (0..offsets.len() as u64).map(|i| i * 16384).collect();
            assert_eq!(offsets, walk, "{direction}: {lines:?}");
            assert!(lines
                .iter()
                .filter(|l| l.action == direction)
                .all(|l| l.io.unwrap().1 == 16384));
        }
    }
    let actions = |lines: &[Line]| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.io.is_none())
            .map(|l| l.action.clone())
            .collect()
    };
    assert_eq!(actions(&mine), ["add", "open", "close"]);
    assert_eq!(actions(&mine), actions(&theirs));
}

/// A sequential write with `fsync=4` to a file: every line as fio's, sync lines (their
/// offsets: the last write's) included, and the file named by its path.
#[test]
fn write_iolog_file_with_fsync_matches_fio_line_by_line() {
    if common::fio().is_none() {
        return;
    }
    let dir = ScratchDir::new("fio-iolog", "seq-file");
    let run = |tool: &dyn Fn(&[&str]) -> Output, name: &str, engine: &str| -> Vec<Line> {
        let data = dir.join("data");
        let log = dir.join(&format!("{name}.log"));
        let _ = std::fs::remove_file(&data);
        let args = [
            "--name=f".to_string(),
            format!("--ioengine={engine}"),
            format!("--filename={}", data.display()),
            "--size=128k".into(),
            "--bs=8k".into(),
            "--rw=write".into(),
            "--fsync=4".into(),
            format!("--write_iolog={}", log.display()),
            "--output=/dev/null".into(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        tool(&args);
        let lines = read_v3(&log);
        for line in &lines {
            assert_eq!(line.file, data.display().to_string(), "{line:?}");
        }
        lines
    };
    let theirs = run(&|a| fio(a), "fio", "psync");
    let mine = run(&|a| ours_ok(a), "ours", "io_uring");
    assert_times_rise(&mine);
    assert_eq!(untimed(&mine), untimed(&theirs));
    // After writes 4, 8 and 12: the 16th has no I/O after it to carry its sync (fio).
    assert_eq!(count(&mine, "sync"), 3);
}

/// `rw=randrw` with a fixed seed: our generator is not fio's, so the offsets come in
/// another order; the format, the count of I/Os and (with fio's random map, one pass
/// touching each block once) the set of offsets are fio's.
#[test]
fn write_iolog_random_matches_fio_format_and_counts() {
    if common::fio().is_none() {
        return;
    }
    let dir = ScratchDir::new("fio-iolog", "rand");
    let run = |tool: &dyn Fn(&[&str]) -> Output, name: &str| -> Vec<Line> {
        let log = dir.join(&format!("{name}.log"));
        let arg = format!("--write_iolog={}", log.display());
        tool(&[
            "--name=r",
            "--ioengine=null",
            "--size=1m",
            "--bs=4k",
            "--rw=randrw",
            "--randseed=42",
            &arg,
            "--output=/dev/null",
        ]);
        read_v3(&log)
    };
    let theirs = run(&|a| fio(a), "fio");
    let mine = run(&|a| ours_ok(a), "ours");
    let ios = |lines: &[Line]| {
        let mut offsets: Vec<(u64, u64)> = lines.iter().filter_map(|l| l.io).collect();
        offsets.sort_unstable();
        offsets
    };
    assert_eq!(ios(&mine), ios(&theirs));
    assert_eq!(ios(&mine).len(), 256);
    assert_eq!(count(&mine, "read") + count(&mine, "write"), 256);
    assert!(
        count(&mine, "read") > 64 && count(&mine, "write") > 64,
        "{mine:?}"
    );
    assert_eq!(mine.len(), theirs.len());
}

/// fio opens the log for appending: a second run adds a second header and its lines.
#[test]
fn write_iolog_appends_as_fio_does() {
    if common::fio().is_none() {
        return;
    }
    let dir = ScratchDir::new("fio-iolog", "append");
    let run = |tool: &dyn Fn(&[&str]) -> Output, name: &str| -> String {
        let log = dir.join(&format!("{name}.log"));
        let arg = format!("--write_iolog={}", log.display());
        for _ in 0..2 {
            tool(&[
                "--name=a",
                "--ioengine=null",
                "--size=8k",
                "--bs=4k",
                &arg,
                "--output=/dev/null",
            ]);
        }
        std::fs::read_to_string(&log).unwrap()
    };
    let strip = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| {
                l.split_once(' ')
                    .map_or(
                        l,
                        |(t, rest)| if t.parse::<u64>().is_ok() { rest } else { l },
                    )
                    .to_string()
            })
            .collect()
    };
    let theirs = run(&|a| fio(a), "fio");
    let mine = run(&|a| ours_ok(a), "ours");
    assert_eq!(strip(&mine), strip(&theirs));
    assert_eq!(mine.matches("fio version 3 iolog").count(), 2);
}

/// One I/O of a replay as the per-I/O latency log shows it (`write_lat_log` with
/// `log_offset=1`, which fio and iscsi-bench both write): direction (0 read, 1 write,
/// 2 trim), length and offset, in completion order (issue order at iodepth=1).
fn replayed_ios(lat_log: &Path) -> Vec<(u8, u64, u64)> {
    let text =
        std::fs::read_to_string(lat_log).unwrap_or_else(|e| panic!("{}: {e}", lat_log.display()));
    text.lines()
        .map(|line| {
            let fields: Vec<u64> = line
                .split(',')
                .map(|f| f.trim().parse().unwrap_or_else(|_| panic!("{line:?}")))
                .collect();
            (fields[2] as u8, fields[3], fields[4])
        })
        .collect()
}

/// A replay's I/Os ([`replayed_ios`]) and its JSON report.
type Replayed = (Vec<(u8, u64, u64)>, serde_json::Value);

/// Replays `log` with `extra` options in fio and in iscsi-bench (engine `ours_engine` for
/// us, `fio_engine` for fio), both at iodepth=1; each tool's I/Os and JSON report.
fn replay_both(
    dir: &ScratchDir,
    log: &Path,
    fio_engine: &str,
    ours_engine: &str,
    extra: &[&str],
) -> [Replayed; 2] {
    [
        replay_with(&|a| fio(a), dir, "fio", fio_engine, log, extra),
        replay_ours(dir, log, ours_engine, extra),
    ]
}

/// [`replay_both`]'s run of iscsi-bench alone.
fn replay_ours(dir: &ScratchDir, log: &Path, engine: &str, extra: &[&str]) -> Replayed {
    replay_with(&|a| ours_ok(a), dir, "ours", engine, log, extra)
}

/// One tool's replay of `log` at iodepth=1, its per-I/O latency log under `name`.
fn replay_with(
    tool: &dyn Fn(&[&str]) -> Output,
    dir: &ScratchDir,
    name: &str,
    engine: &str,
    log: &Path,
    extra: &[&str],
) -> Replayed {
    let prefix = dir.join(name);
    // A log left by an earlier run must not stand in for this one's.
    for kind in ["lat", "clat", "slat"] {
        let _ = std::fs::remove_file(dir.join(&format!("{name}_{kind}.1.log")));
    }
    let mut args = vec![
        "--name=replay".to_string(),
        format!("--ioengine={engine}"),
        format!("--read_iolog={}", log.display()),
        format!("--write_lat_log={}", prefix.display()),
        "--log_offset=1".into(),
        "--iodepth=1".into(),
        "--output-format=json".into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tool(&args);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{name}: {e}: {}", describe(&out)));
    let ios = replayed_ios(&dir.join(&format!("{name}_lat.1.log")));
    (ios, json)
}

/// Per-direction I/O counts and bytes of a JSON report's first job.
fn totals(json: &serde_json::Value) -> [(u64, u64); 3] {
    let job = &json["jobs"][0];
    ["read", "write", "trim"].map(|d| {
        (
            job[d]["total_ios"].as_u64().unwrap_or(0),
            job[d]["io_bytes"].as_u64().unwrap_or(0),
        )
    })
}

fn runtime_ms(json: &serde_json::Value) -> u64 {
    let job = &json["jobs"][0];
    ["read", "write", "trim"]
        .iter()
        .map(|d| job[*d]["runtime"].as_u64().unwrap_or(0))
        .max()
        .unwrap()
}

/// A log fio wrote of a random mixed job (so offsets in fio's own order), replayed by both
/// on the null engine with `replay_no_stall`: the same I/Os, one for one, in order.
#[test]
fn read_iolog_replays_fios_own_log_as_fio_does() {
    if common::fio().is_none() {
        return;
    }
    let dir = ScratchDir::new("fio-iolog", "replay-fio-log");
    let log = dir.join("trace.log");
    let arg = format!("--write_iolog={}", log.display());
    fio(&[
        "--name=rec",
        "--ioengine=null",
        "--size=1m",
        "--bssplit=4k/50:16k/50",
        "--rw=randrw",
        &arg,
        "--output=/dev/null",
    ]);
    let [(theirs, fio_json), (mine, our_json)] =
        replay_both(&dir, &log, "null", "null", &["--replay_no_stall=1"]);
    assert!(theirs.len() > 50, "{theirs:?}");
    assert_eq!(mine, theirs);
    assert_eq!(totals(&our_json), totals(&fio_json));
}

/// `replay_skip`, `replay_scale` and `replay_align` on a version 2 log, with and without
/// `read_iolog_chunked`: fio's I/Os.
#[test]
fn read_iolog_skip_scale_align_match_fio() {
    if common::fio().is_none() {
        return;
    }
    let dir = ScratchDir::new("fio-iolog", "replay-options");
    let log = dir.join("v2.log");
    let mut text = String::from("fio version 2 iolog\n/dev/traced add\n/dev/traced open\n");
    for i in 0..40u64 {
        let action = ["read", "write", "trim", "read", "write"][i as usize % 5];
        text.push_str(&format!(
            "/dev/traced {action} {} {}\n",
            i * 12_288 + 1000,
            4096 * (1 + i % 3)
        ));
        if i % 10 == 9 {
            text.push_str("/dev/traced sync 0 0\n");
        }
    }
    text.push_str("/dev/traced close\n");
    std::fs::write(&log, text).unwrap();
    for extra in [
        &["--replay_skip=write,trim"][..],
        &["--replay_scale=4", "--replay_align=4096"][..],
        &["--replay_skip=read,sync", "--replay_align=8192"][..],
    ] {
        let [(theirs, fio_json), (mine, our_json)] = replay_both(&dir, &log, "null", "null", extra);
        assert!(!theirs.is_empty(), "{extra:?}");
        assert_eq!(mine, theirs, "{extra:?}");
        assert_eq!(totals(&our_json), totals(&fio_json), "{extra:?}");
        // read_iolog_chunked only changes how the log is read: the same I/Os as fio's
        // whole-log replay. (fio 3.42's own chunked replay stops after its first chunk of
        // ten lines on the null engine: its next chunk is sized by the rate so far.)
        let mut chunked = extra.to_vec();
        chunked.push("--read_iolog_chunked=1");
        let (mine, our_json) = replay_ours(&dir, &log, "null", &chunked);
        assert_eq!(mine, theirs, "{chunked:?}");
        assert_eq!(totals(&our_json), totals(&fio_json), "{chunked:?}");
    }
}

/// A version 3 log's timestamps set the pace: ~600 ms of trace takes ~600 ms in fio and
/// here, half that at `replay_time_scale=200`, and next to nothing with `replay_no_stall`
/// (bounds loose: a busy 2-CPU VM).
#[test]
fn read_iolog_v3_timing_matches_fio() {
    if common::fio().is_none() {
        return;
    }
    let dir = ScratchDir::new("fio-iolog", "replay-timing");
    let log = dir.join("v3.log");
    let mut text = String::from("fio version 3 iolog\n10 f add\n20 f open\n");
    for i in 0..13u64 {
        text.push_str(&format!("{} f write {} 4096\n", 100 + i * 50_000, i * 4096));
    }
    text.push_str("600200 f close\n");
    std::fs::write(&log, text).unwrap();
    let cases: [(&[&str], u64, u64); 3] = [
        (&[], 500, 1_500),
        (&["--replay_time_scale=200"], 250, 900),
        (&["--replay_no_stall=1"], 0, 200),
    ];
    for (extra, low, high) in cases {
        let [(theirs, fio_json), (mine, our_json)] = replay_both(&dir, &log, "null", "null", extra);
        assert_eq!(mine, theirs, "{extra:?}");
        assert_eq!(mine.len(), 13);
        for json in [&fio_json, &our_json] {
            let ms = runtime_ms(json);
            assert!(
                (low..=high).contains(&ms),
                "{extra:?}: runtime {ms} ms, fio {}",
                runtime_ms(&fio_json)
            );
        }
    }
}

/// A log replayed onto a file (fio's psync, our io_uring): with `replay_redirect`, every I/O
/// lands in the file it names; without, in the file the log adds, whatever the job's
/// `filename` (fio drops the job's files for the log's). The same I/Os as fio's, and the
/// job's own file is never made.
#[test]
fn read_iolog_replays_onto_files_as_fio_does() {
    if common::fio().is_none() {
        return;
    }
    let dir = ScratchDir::new("fio-iolog", "replay-file");
    let data = dir.join("data");
    let unused = dir.join("unused");
    let log_of = |name: &str| {
        let mut text = format!("fio version 3 iolog\n0 {name} add\n0 {name} open\n");
        for i in 0..32u64 {
            let action = if i % 3 == 0 { "read" } else { "write" };
            text.push_str(&format!(
                "{} {name} {action} {} 8192\n",
                10 + i,
                (i * 7 % 64) * 8192
            ));
        }
        text.push_str(&format!("50 {name} sync 0 0\n60 {name} close\n"));
        text
    };
    let redirected = dir.join("redirected.log");
    std::fs::write(&redirected, log_of("/dev/sdq-not-here")).unwrap();
    let direct = dir.join("direct.log");
    std::fs::write(&direct, log_of(&data.display().to_string())).unwrap();
    let redirect = format!("--replay_redirect={}", data.display());
    let filename = format!("--filename={}", unused.display());
    for (log, extra) in [
        (&redirected, redirect.as_str()),
        (&direct, filename.as_str()),
    ] {
        std::fs::write(&data, vec![0u8; 1 << 20]).unwrap();
        let [(theirs, fio_json), (mine, our_json)] =
            replay_both(&dir, log, "psync", "io_uring", &[extra]);
        assert_eq!(mine.len(), 32, "{extra}");
        assert_eq!(mine, theirs, "{extra}");
        assert_eq!(totals(&our_json), totals(&fio_json), "{extra}");
        assert_eq!(std::fs::metadata(&data).unwrap().len(), 1 << 20);
        assert!(!unused.exists(), "{extra}");
        assert!(!Path::new("/dev/sdq-not-here").exists());
    }
}

/// A line naming a file the log never added: fio 3.42 crashes on it (signal 11); we
/// refuse the job before any I/O, naming the log and the line.
#[test]
fn read_iolog_unadded_file_is_refused_with_file_and_line() {
    let dir = ScratchDir::new("fio-iolog", "replay-unadded");
    let log = dir.join("bad.log");
    std::fs::write(
        &log,
        "fio version 2 iolog\n/a add\n/a open\n/a write 0 4096\n/b write 4096 4096\n",
    )
    .unwrap();
    let arg = format!("--read_iolog={}", log.display());
    let out = ours(&["--name=u", "--ioengine=null", &arg]);
    assert!(!out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{} line 5", log.display())),
        "{stderr}"
    );
    assert!(stderr.contains("\"/b\""), "{stderr}");
}

/// On the iscsi engine (the embedded target's LUN), an I/O beyond the LUN or not aligned to
/// its logical block is refused before any I/O, naming the log's line; fio refuses a replay with an I/O it cannot do too (an
/// error, here its read past the end of a file).
#[test]
fn read_iolog_beyond_the_lun_is_refused_before_io() {
    let dir = ScratchDir::new("fio-iolog", "replay-lun");
    let log = dir.join("far.log");
    std::fs::write(
        &log,
        "fio version 3 iolog\n0 lun add\n0 lun open\n5 lun write 0 4096\n9 lun read 2097152 4096\n",
    )
    .unwrap();
    let arg = format!("--read_iolog={}", log.display());
    let write_log = dir.join("w.log");
    let lat = format!("--write_lat_log={}", dir.join("l").display());
    let out = ours(&["--name=u", "--size=1m", &arg, &lat]);
    assert!(!out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{} line 5", log.display())),
        "{stderr}"
    );
    assert!(stderr.contains("beyond"), "{stderr}");
    assert!(!dir.join("l_lat.1.log").exists() && !write_log.exists());
    // An I/O the LUN's 512-byte logical block does not divide: refused the same way.
    std::fs::write(
        &log,
        "fio version 2 iolog\nlun add\nlun open\nlun write 0 4096\nlun read 4096 1000\n",
    )
    .unwrap();
    let out = ours(&["--name=u", "--size=1m", &arg, &lat]);
    assert!(!out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{} line 5", log.display())),
        "{stderr}"
    );
    assert!(stderr.contains("logical block"), "{stderr}");
    assert!(!dir.join("l_lat.1.log").exists());
}

/// A blktrace binary trace (fio replays those too): refused by name.
#[test]
fn read_iolog_blktrace_is_refused_by_name() {
    let dir = ScratchDir::new("fio-iolog", "replay-blktrace");
    let log = dir.join("trace.bin");
    let mut bytes = 0x6561_7407u32.to_le_bytes().to_vec();
    bytes.extend([0u8; 44]);
    std::fs::write(&log, bytes).unwrap();
    let arg = format!("--read_iolog={}", log.display());
    let out = ours(&["--name=b", "--ioengine=null", &arg]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("blktrace"),
        "{}",
        describe(&out)
    );
}

/// Our `write_iolog` is a log fio replays: fio's replay of a random mixed job we logged
/// issues our I/Os, in our order (and ours of the same log does too).
#[test]
fn fio_replays_our_write_iolog_io_for_io() {
    if common::fio().is_none() {
        return;
    }
    let dir = ScratchDir::new("fio-iolog", "ours-to-fio");
    let log = dir.join("ours.log");
    let arg = format!("--write_iolog={}", log.display());
    ours_ok(&[
        "--name=rec",
        "--ioengine=null",
        "--size=2m",
        "--bsrange=4k-32k",
        "--rw=randrw",
        "--rwmixread=30",
        &arg,
        "--output=/dev/null",
    ]);
    let logged: Vec<(u8, u64, u64)> = read_v3(&log)
        .iter()
        .filter_map(|line| {
            let direction = match line.action.as_str() {
                "read" => 0,
                "write" => 1,
                "trim" => 2,
                _ => return None,
            };
            line.io.map(|(offset, len)| (direction, len, offset))
        })
        .collect();
    assert!(logged.len() > 50, "{logged:?}");
    let [(theirs, _), (mine, _)] =
        replay_both(&dir, &log, "null", "null", &["--replay_no_stall=1"]);
    assert_eq!(theirs, logged);
    assert_eq!(mine, logged);
}

/// A trace replayed on the iscsi engine (the embedded target's LUN): every read, write,
/// trim and sync of the log reaches the LUN, at the log's offsets and lengths.
#[test]
fn read_iolog_on_the_iscsi_engine_replays_every_line() {
    let dir = ScratchDir::new("fio-iolog", "replay-iscsi");
    let log = dir.join("lun.log");
    std::fs::write(
        &log,
        "fio version 3 iolog\n0 /dev/sdx add\n0 /dev/sdx open\n100 /dev/sdx write 0 4096\n\
         200 /dev/sdx write 65536 8192\n300 /dev/sdx read 8192 4096\n400 /dev/sdx sync 0 0\n\
         500 /dev/sdx trim 0 4096\n600 /dev/sdx read 65536 8192\n700 /dev/sdx close\n",
    )
    .unwrap();
    let arg = format!("--read_iolog={}", log.display());
    let lat = format!("--write_lat_log={}", dir.join("l").display());
    let out = ours_ok(&[
        "--name=i",
        &arg,
        &lat,
        "--log_offset=1",
        "--output-format=json",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(totals(&json), [(2, 12288), (2, 12288), (1, 4096)]);
    assert_eq!(
        json["jobs"][0]["sync"]["total_ios"].as_u64(),
        Some(1),
        "{json}"
    );
    assert_eq!(
        replayed_ios(&dir.join("l_lat.1.log")),
        [
            (1, 4096, 0),
            (1, 8192, 65536),
            (0, 4096, 8192),
            (2, 4096, 0),
            (0, 8192, 65536)
        ]
    );
}

/// `read_iolog=a:b` with `numjobs=2`: as in fio, each clone replays its own log in turn.
#[test]
fn read_iolog_logs_go_to_clones_in_turn_as_in_fio() {
    if common::fio().is_none() {
        return;
    }
    let dir = ScratchDir::new("fio-iolog", "replay-clones");
    let logs: Vec<PathBuf> = (0..2u64)
        .map(|n| {
            let path = dir.join(&format!("clone{n}.log"));
            let mut text = String::from("fio version 2 iolog\nf add\nf open\n");
            for i in 0..(5 + n * 3) {
                text.push_str(&format!("f write {} {}\n", i * 65536, 4096 << n));
            }
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect();
    let arg = format!("--read_iolog={}:{}", logs[0].display(), logs[1].display());
    let run = |tool: &dyn Fn(&[&str]) -> Output, name: &str| -> Vec<Vec<(u8, u64, u64)>> {
        let lat = format!("--write_lat_log={}", dir.join(name).display());
        tool(&[
            "--name=c",
            "--ioengine=null",
            "--numjobs=2",
            &arg,
            &lat,
            "--log_offset=1",
            "--output=/dev/null",
        ]);
        (1..=2)
            .map(|n| replayed_ios(&dir.join(&format!("{name}_lat.{n}.log"))))
            .collect()
    };
    let theirs = run(&|a| fio(a), "fio");
    let mine = run(&|a| ours_ok(a), "ours");
    assert_eq!(theirs[0].len(), 5);
    assert_eq!(theirs[1].len(), 8);
    assert_eq!(mine, theirs);
}

/// `write_iolog` beside `read_iolog`: fio ignores the write log ("read iolog overrides
/// write_iolog") and so do we; the replay runs and no write log appears.
#[test]
fn read_iolog_overrides_write_iolog_as_in_fio() {
    if common::fio().is_none() {
        return;
    }
    let dir = ScratchDir::new("fio-iolog", "override");
    let log = dir.join("in.log");
    std::fs::write(
        &log,
        "fio version 2 iolog\nf add\nf open\nf read 0 4096\nf close\n",
    )
    .unwrap();
    let read = format!("--read_iolog={}", log.display());
    for (name, tool) in [
        ("fio", &(|a: &[&str]| fio(a)) as &dyn Fn(&[&str]) -> Output),
        ("ours", &|a: &[&str]| ours_ok(a)),
    ] {
        let out_log = dir.join(&format!("{name}.out"));
        let write = format!("--write_iolog={}", out_log.display());
        let out = tool(&[
            "--name=o",
            "--ioengine=null",
            &read,
            &write,
            "--output-format=json",
        ]);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{name}: {e}: {}", describe(&out)));
        assert_eq!(totals(&json)[0], (1, 4096), "{name}");
        assert!(!out_log.exists(), "{name} wrote {}", out_log.display());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("overrides write_iolog"),
            "{name}: {}",
            describe(&out)
        );
    }
}

/// fio closes and reopens its files at each loop's end and around each verify phase, and
/// its `write_iolog` shows it: `loops=3` on the null engine, and `loops=2` with verify on
/// a file (writes, then the verify reads), line by line as fio's.
#[test]
fn write_iolog_loops_and_verify_reopen_as_fio_does() {
    if common::fio().is_none() {
        return;
    }
    let dir = ScratchDir::new("fio-iolog", "loops");
    let cases: [(&str, &str, &[&str]); 2] = [
        (
            "null",
            "null",
            &["--size=32k", "--bs=8k", "--rw=write", "--loops=3"],
        ),
        (
            "psync",
            "io_uring",
            &[
                "--size=32k",
                "--bs=8k",
                "--rw=write",
                "--loops=2",
                "--verify=crc32c",
            ],
        ),
    ];
    for (fio_engine, our_engine, job) in cases {
        let run = |tool: &dyn Fn(&[&str]) -> Output, name: &str, engine: &str| -> Vec<Line> {
            let data = dir.join("data");
            let _ = std::fs::remove_file(&data);
            let log = dir.join(&format!("{name}.log"));
            let _ = std::fs::remove_file(&log);
            let mut args = vec![
                "--name=l".to_string(),
                format!("--ioengine={engine}"),
                format!("--write_iolog={}", log.display()),
                "--output=/dev/null".into(),
            ];
            if engine != "null" {
                args.push(format!("--filename={}", data.display()));
            }
            args.extend(job.iter().map(|a| a.to_string()));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            tool(&args);
            read_v3(&log)
        };
        let theirs = run(&|a| fio(a), "fio", fio_engine);
        let mine = run(&|a| ours_ok(a), "ours", our_engine);
        assert_eq!(untimed(&mine), untimed(&theirs), "{job:?}");
        assert!(count(&mine, "open") >= 2, "{job:?}: {mine:?}");
    }
}

/// A log that goes over the same blocks many times moves more bytes than the LUN holds
/// (fio adds them up into its `size`): it replays whole on a LUN that holds what it
/// reaches.
#[test]
fn read_iolog_rewriting_a_small_region_replays_whole_on_a_lun() {
    let dir = ScratchDir::new("fio-iolog", "replay-rewrites");
    let log = dir.join("rewrites.log");
    let mut text = String::from("fio version 2 iolog\nlun add\nlun open\n");
    for i in 0..300u64 {
        text.push_str(&format!("lun write {} 4096\n", (i % 8) * 4096));
    }
    std::fs::write(&log, text).unwrap();
    let arg = format!("--read_iolog={}", log.display());
    let out = ours_ok(&["--name=r", "--size=1m", &arg, "--output-format=json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(totals(&json)[1], (300, 300 * 4096), "{json}");
}
