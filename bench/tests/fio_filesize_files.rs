//! fio's `filesize` over several files (`nrfiles` in a `directory`, or a `filename` list of
//! local files) beside fio itself: each job runs through fio (psync) and through
//! iscsi-bench (io_uring) in a scratch directory of its own, and what both did is compared:
//! the files made (names and sizes), the bytes each job moved (JSON `io_bytes`) and, from
//! each tool's `write_iolog`, which file and offset each I/O went to. fio takes each file to
//! have `filesize` (a range: a size drawn per file), lays a shorter one out to it, and the
//! job's `size` defaults to the files' total and is cut to it. Skipped (loudly) where fio
//! is missing, a failure under CI. A list of iSCSI LUNs is run by iscsi-bench alone (fio
//! here has no libiscsi engine): `filesize` is how much of each LUN the job uses.

mod common;

use common::local_jobs::{files_in, logged_ios, run, Io, Who};
use common::{describe, json_of, ScratchDir};

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

/// What one tool did: the files it left, its I/O in order, and its bytes read and written.
#[derive(Debug)]
struct Outcome {
    files: BTreeMap<String, u64>,
    ios: Vec<Io>,
    read_bytes: u64,
    write_bytes: u64,
}

/// `who` runs `options` in a scratch directory of its own (holding the files `before`
/// makes first), logging its I/O.
fn outcome(who: Who, fio: &Path, name: &str, options: &[&str], before: &dyn Fn(&Path)) -> Outcome {
    let dir = ScratchDir::new("fio_filesize_files", &format!("{name}-{who:?}"));
    before(dir.path());
    let log = dir.join("io.log");
    let mut all = options.to_vec();
    let log_option = format!("--write_iolog={}", log.display());
    all.push(&log_option);
    let out = run(who, fio, dir.path(), &all);
    assert!(
        out.status.success(),
        "{who:?} {options:?}: {}",
        describe(&out)
    );
    let doc = json_of(&out);
    let job = &doc["jobs"][0];
    assert_eq!(job["error"], 0, "{who:?} {options:?}: {}", describe(&out));
    let bytes = |direction: &str| {
        job[direction]["io_bytes"]
            .as_u64()
            .unwrap_or_else(|| panic!("{who:?}: no {direction} io_bytes: {}", describe(&out)))
    };
    Outcome {
        files: files_in(dir.path()),
        ios: logged_ios(&log),
        read_bytes: bytes("read"),
        write_bytes: bytes("write"),
    }
}

/// Both tools run `options` (each in a scratch directory of its own, with the files
/// `before` makes): fio's outcome, then ours. `None` (skipped) where fio is missing.
fn both_with(name: &str, options: &[&str], before: &dyn Fn(&Path)) -> Option<(Outcome, Outcome)> {
    let fio = common::fio()?;
    let theirs = outcome(Who::Fio, &fio, name, options, before);
    let ours = outcome(Who::Ours, &fio, name, options, before);
    Some((theirs, ours))
}

fn both(name: &str, options: &[&str]) -> Option<(Outcome, Outcome)> {
    both_with(name, options, &|_| {})
}

/// Bytes of I/O per file.
fn bytes_per_file(ios: &[Io]) -> BTreeMap<String, u64> {
    let mut bytes = BTreeMap::new();
    for (file, _, _, len) in ios {
        *bytes.entry(file.clone()).or_insert(0u64) += len;
    }
    bytes
}

/// Each file's offsets, sorted (random I/O: the same blocks in another order).
fn blocks_per_file(ios: &[Io]) -> BTreeMap<String, Vec<u64>> {
    let mut blocks: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (file, _, offset, _) in ios {
        blocks.entry(file.clone()).or_default().push(*offset);
    }
    blocks
        .values_mut()
        .for_each(|offsets| offsets.sort_unstable());
    blocks
}

const K: u64 = 1024;

#[test]
fn a_fixed_filesize_lays_out_every_file_and_the_job_moves_their_total() {
    for (name, options, files, total) in [
        // The defect's own job, without time_based: 50 files of 16k.
        (
            "nrfiles50",
            &["--nrfiles=50", "--filesize=16k", "--rw=read"][..],
            50,
            50 * 16 * K,
        ),
        (
            "write",
            &["--nrfiles=4", "--filesize=16k", "--rw=write"][..],
            4,
            64 * K,
        ),
        (
            "list",
            &["--filename=a:b:c", "--filesize=32k", "--rw=read"][..],
            3,
            96 * K,
        ),
        // Each file's region starts at offset and ends at filesize.
        (
            "offset",
            &["--nrfiles=3", "--filesize=32k", "--offset=8k", "--rw=write"][..],
            3,
            72 * K,
        ),
        (
            "sequential",
            &[
                "--nrfiles=3",
                "--filesize=16k",
                "--rw=write",
                "--file_service_type=sequential",
            ][..],
            3,
            48 * K,
        ),
    ] {
        let Some((theirs, ours)) = both(name, options) else {
            return;
        };
        assert_eq!(
            theirs.files.len(),
            files,
            "{name}: fio made {:?}",
            theirs.files
        );
        assert_eq!(ours.files, theirs.files, "{name}: the files made");
        assert_eq!(
            theirs.read_bytes + theirs.write_bytes,
            total,
            "{name}: fio's total"
        );
        assert_eq!(
            (ours.read_bytes, ours.write_bytes),
            (theirs.read_bytes, theirs.write_bytes),
            "{name}: bytes read and written"
        );
        // Sequential I/O: the same files and offsets in the same order.
        assert_eq!(ours.ios, theirs.ios, "{name}: the I/O in order");
    }
}

#[test]
fn random_io_covers_every_block_of_every_file_once_as_fio_does() {
    let options = ["--nrfiles=4", "--filesize=64k", "--rw=randwrite"];
    let Some((theirs, ours)) = both("random", &options) else {
        return;
    };
    assert_eq!(ours.files, theirs.files);
    assert_eq!(theirs.write_bytes, 256 * K);
    assert_eq!(ours.write_bytes, theirs.write_bytes);
    // Offsets are random in both (and differ); each file's set of blocks is the same.
    assert_eq!(blocks_per_file(&ours.ios), blocks_per_file(&theirs.ios));
}

#[test]
fn a_size_below_the_files_total_is_shared_out_as_fios_file_service_hands_it_out() {
    for (name, options, total) in [
        // roundrobin: 10 blocks over 4 files: 3, 3, 2, 2.
        (
            "roundrobin",
            &["--nrfiles=4", "--filesize=16k", "--size=40k", "--rw=write"][..],
            40 * K,
        ),
        (
            "roundrobin3",
            &[
                "--nrfiles=4",
                "--filesize=16k",
                "--size=40k",
                "--rw=write",
                "--file_service_type=roundrobin:3",
            ][..],
            40 * K,
        ),
        (
            "sequential",
            &[
                "--nrfiles=4",
                "--filesize=16k",
                "--size=40k",
                "--rw=write",
                "--file_service_type=sequential",
            ][..],
            40 * K,
        ),
        // Fewer blocks than files: the last files get none (but are laid out).
        (
            "few",
            &["--nrfiles=4", "--filesize=16k", "--size=8k", "--rw=read"][..],
            8 * K,
        ),
        // size past the files' total is cut to it.
        (
            "past",
            &["--nrfiles=4", "--filesize=16k", "--size=1m", "--rw=write"][..],
            64 * K,
        ),
    ] {
        let Some((theirs, ours)) = both(name, options) else {
            return;
        };
        assert_eq!(
            theirs.files.values().copied().collect::<Vec<_>>(),
            vec![16 * K; 4],
            "{name}: fio's files"
        );
        assert_eq!(ours.files, theirs.files, "{name}: the files made");
        assert_eq!(
            theirs.read_bytes + theirs.write_bytes,
            total,
            "{name}: fio's total"
        );
        assert_eq!(
            (ours.read_bytes, ours.write_bytes),
            (theirs.read_bytes, theirs.write_bytes),
            "{name}: bytes read and written"
        );
        assert_eq!(ours.ios, theirs.ios, "{name}: the I/O in order");
    }
    // Random offsets: the same bytes per file, in the same order of files.
    let options = [
        "--nrfiles=4",
        "--filesize=16k",
        "--size=40k",
        "--rw=randread",
    ];
    let Some((theirs, ours)) = both("random", &options) else {
        return;
    };
    assert_eq!(theirs.read_bytes, 40 * K);
    assert_eq!(ours.read_bytes, theirs.read_bytes);
    assert_eq!(bytes_per_file(&ours.ios), bytes_per_file(&theirs.ios));
    let order = |ios: &[Io]| -> Vec<String> { ios.iter().map(|io| io.0.clone()).collect() };
    assert_eq!(order(&ours.ios), order(&theirs.ios));
}

/// A filesize range: each file a size drawn in `[low, high)` aligned to the block size, laid
/// out to it and moved whole. fio draws from its own generator (taus88 seeded from
/// `randseed`), iscsi-bench from its own: the sizes are checked against the range, not
/// against fio's.
#[test]
fn a_filesize_range_gives_each_file_a_size_drawn_within_it() {
    let options = ["--nrfiles=8", "--filesize=16k-64k", "--rw=write"];
    let Some((theirs, ours)) = both("range", &options) else {
        return;
    };
    for (who, outcome) in [("fio", &theirs), ("ours", &ours)] {
        assert_eq!(
            outcome.files.keys().collect::<Vec<_>>(),
            theirs.files.keys().collect::<Vec<_>>(),
            "{who}: the files' names"
        );
        for (file, &size) in &outcome.files {
            assert!(
                (16 * K..64 * K).contains(&size) && size % (4 * K) == 0,
                "{who}: {file} is {size} bytes"
            );
        }
        // Every file written whole; the job's total is the files' sum.
        assert_eq!(
            bytes_per_file(&outcome.ios),
            outcome.files,
            "{who}: bytes per file"
        );
        assert_eq!(
            outcome.write_bytes,
            outcome.files.values().sum::<u64>(),
            "{who}: the total"
        );
    }
    // The draws differ from file to file and repeat from run to run (randrepeat).
    let sizes: std::collections::BTreeSet<u64> = ours.files.values().copied().collect();
    assert!(sizes.len() > 1, "one size for all: {:?}", ours.files);
    let fio = common::fio().expect("fio ran above");
    let again = outcome(Who::Ours, &fio, "range-again", &options, &|_| {});
    assert_eq!(again.files, ours.files, "the same sizes again");
}

/// Files already there: one whose size is in the range is used as it is; one longer is kept
/// and used up to a drawn size; one shorter is laid out to a drawn size.
#[test]
fn files_already_there_keep_a_size_in_the_range_as_fio_keeps_it() {
    let before = |dir: &Path| {
        for (name, size) in [("j.0.0", 20 * K), ("j.0.1", 100 * K), ("j.0.2", 8 * K)] {
            std::fs::write(dir.join(name), vec![0u8; size as usize]).expect("make the file");
        }
    };
    let options = ["--nrfiles=3", "--filesize=16k-64k", "--rw=read"];
    let Some((theirs, ours)) = both_with("there", &options, &before) else {
        return;
    };
    for (who, outcome) in [("fio", &theirs), ("ours", &ours)] {
        assert_eq!(outcome.files["j.0.0"], 20 * K, "{who}: kept in the range");
        assert_eq!(
            outcome.files["j.0.1"],
            100 * K,
            "{who}: a longer file is kept"
        );
        let drawn = outcome.files["j.0.2"];
        assert!(
            (16 * K..64 * K).contains(&drawn),
            "{who}: j.0.2 laid out to {drawn}"
        );
        let bytes = bytes_per_file(&outcome.ios);
        assert_eq!(bytes["j.0.0"], 20 * K, "{who}: j.0.0 read whole");
        assert!(
            (16 * K..64 * K).contains(&bytes["j.0.1"]),
            "{who}: j.0.1 read up to a drawn size, {}",
            bytes["j.0.1"]
        );
        assert_eq!(bytes["j.0.2"], drawn, "{who}: j.0.2 read whole");
        assert_eq!(outcome.read_bytes, bytes.values().sum::<u64>(), "{who}");
    }
}

/// The defect's job itself, time-based: refused before; now as fio, 50 files of 16k read
/// for the run's time.
#[test]
fn a_time_based_job_over_fifty_files_of_a_filesize_runs() {
    let Some(fio) = common::fio() else {
        return;
    };
    let options = [
        "--nrfiles=50",
        "--filesize=16k",
        "--rw=randread",
        "--runtime=1",
        "--time_based",
    ];
    let mut made = Vec::new();
    for who in [Who::Fio, Who::Ours] {
        let dir = ScratchDir::new("fio_filesize_files", &format!("timed-{who:?}"));
        let out = run(who, &fio, dir.path(), &options);
        assert!(out.status.success(), "{who:?}: {}", describe(&out));
        let doc = json_of(&out);
        let read = doc["jobs"][0]["read"]["io_bytes"].as_u64().unwrap_or(0);
        assert!(
            read > 50 * 16 * K,
            "{who:?} read {read}: {}",
            describe(&out)
        );
        made.push(files_in(dir.path()));
    }
    assert_eq!(made[0].len(), 50);
    assert_eq!(made[1], made[0]);
}

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_iscsi-bench"))
        .args(args)
        .output()
        .expect("iscsi-bench runs")
}

/// fio's meaning holds for LUNs (fio's libiscsi files are sized as any other): filesize is
/// how much of each LUN the job uses, size defaults to the sum and is cut to it; a
/// filesize past a LUN's end is refused, naming the option and the LUN.
#[test]
fn filesize_over_a_list_of_luns_uses_that_much_of_each() {
    let (_target, urls) = common::two_lun_target();
    let urls = urls.join(":");
    let filename = format!("--filename={urls}");
    for (size, written) in [(None, 2 << 20), (Some("--size=1536k"), 1536 << 10)] {
        let mut args = vec![
            "--name=luns",
            filename.as_str(),
            "--filesize=1m",
            "--rw=write",
            "--bs=4k",
            "--iodepth=4",
            "--output-format=json",
        ];
        args.extend(size);
        let out = bench(&args);
        assert!(out.status.success(), "{size:?}: {}", describe(&out));
        let doc = json_of(&out);
        let job = &doc["jobs"][0];
        assert_eq!(job["error"], 0, "{size:?}: {}", describe(&out));
        assert_eq!(job["write"]["io_bytes"], written, "{size:?}");
    }
    let out = bench(&[
        "--name=past",
        filename.as_str(),
        "--filesize=8m",
        "--rw=read",
        "--bs=4k",
    ]);
    assert!(!out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("filesize") && stderr.contains("past the end of LUN"),
        "{}",
        describe(&out)
    );
}
