//! `iscsi-bench` run as a user runs it, for what the load looks like to the target: the
//! bytes written (fio's buffer options), per-direction pacing, block sizes against the LUN,
//! and jobs over several LUNs. Runs are short (1 to 3 s) and go to the embedded target or a
//! temporary file.

mod common;

use common::describe;
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_iscsi-bench"))
        .args(args)
        .output()
        .expect("iscsi-bench runs")
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "iscsi-bench failed: {}",
        describe(out)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", describe(out)))
}

/// A file in a fresh directory under the system's temporary directory, removed on drop.
struct TempFile {
    dir: PathBuf,
    path: PathBuf,
}

impl TempFile {
    fn new(tag: &str) -> TempFile {
        let dir = std::env::temp_dir().join(format!("iscsi-bench-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let path = dir.join("data");
        let _ = std::fs::remove_file(&path);
        TempFile { dir, path }
    }

    fn arg(&self) -> String {
        format!("--filename={}", self.path.display())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes 2 MiB sequentially to a file with `extra` options and returns what landed there.
fn written_bytes(tag: &str, extra: &[&str]) -> Vec<u8> {
    let file = TempFile::new(tag);
    let filename = file.arg();
    let mut args = vec![
        "--name=content",
        filename.as_str(),
        "--ioengine=io_uring",
        "--rw=write",
        "--bs=4k",
        "--size=2m",
        "--iodepth=4",
        "--output-format=json",
    ];
    args.extend_from_slice(extra);
    let out = bench(&args);
    json(&out);
    let data = std::fs::read(&file.path).expect("the written file");
    assert_eq!(data.len(), 2 << 20, "{tag}: file size");
    data
}

/// Bytes inside runs of 32 or more equal bytes: what any compressor removes first, and
/// what random data almost never has. A simple stand-in for a compression ratio.
fn compressible_share(data: &[u8]) -> f64 {
    let mut compressible = 0usize;
    let mut run = 1usize;
    for i in 1..=data.len() {
        if i < data.len() && data[i] == data[i - 1] {
            run += 1;
            continue;
        }
        if run >= 32 {
            compressible += run;
        }
        run = 1;
    }
    compressible as f64 / data.len() as f64
}

/// The share of 4 KiB blocks that repeat an earlier block exactly.
fn duplicate_share(data: &[u8]) -> f64 {
    let blocks: Vec<&[u8]> = data.chunks(4096).collect();
    let unique: HashSet<&[u8]> = blocks.iter().copied().collect();
    1.0 - unique.len() as f64 / blocks.len() as f64
}

#[test]
fn writes_carry_random_unique_data_by_default() {
    let data = written_bytes("default", &[]);
    assert!(
        compressible_share(&data) < 0.01,
        "compressible share {}",
        compressible_share(&data)
    );
    assert_eq!(duplicate_share(&data), 0.0, "repeated blocks");
    let zero_blocks = data
        .chunks(512)
        .filter(|b| b.iter().all(|&x| x == 0))
        .count();
    assert_eq!(zero_blocks, 0);
}

#[test]
fn buffer_compress_percentage_sets_how_much_compresses() {
    let data = written_bytes("compress", &["--buffer_compress_percentage=50"]);
    let share = compressible_share(&data);
    assert!((share - 0.5).abs() < 0.03, "compressible share {share}");
    assert_eq!(duplicate_share(&data), 0.0);
    // One region per block with buffer_compress_chunk=0: still half.
    let data = written_bytes(
        "compress-chunk",
        &[
            "--buffer_compress_percentage=25",
            "--buffer_compress_chunk=0",
        ],
    );
    let share = compressible_share(&data);
    assert!((share - 0.25).abs() < 0.03, "compressible share {share}");
}

#[test]
fn dedupe_percentage_sets_how_many_blocks_repeat() {
    let data = written_bytes("dedupe", &["--dedupe_percentage=50"]);
    let share = duplicate_share(&data);
    // 512 blocks, each a repeat with probability 1/2: the share is 0.5 +- 0.022 (1 sd).
    assert!((share - 0.5).abs() < 0.1, "duplicate share {share}");
    assert!(compressible_share(&data) < 0.01);
}

#[test]
fn zero_buffers_and_buffer_pattern() {
    let data = written_bytes("zero", &["--zero_buffers"]);
    assert!(data.iter().all(|&b| b == 0));
    let data = written_bytes(
        "pattern",
        &["--buffer_pattern=0xdeadbeef", "--scramble_buffers=0"],
    );
    assert!(data.chunks(4).all(|word| word == [0xde, 0xad, 0xbe, 0xef]));
}

#[test]
fn verify_still_writes_its_own_blocks() {
    let file = TempFile::new("verify");
    let filename = file.arg();
    let out = bench(&[
        "--name=verify",
        filename.as_str(),
        "--ioengine=io_uring",
        "--rw=randwrite",
        "--bs=4k",
        "--size=1m",
        "--verify=crc32c",
        "--buffer_compress_percentage=50",
        "--output-format=json",
    ]);
    let doc = json(&out);
    assert_eq!(doc["jobs"][0]["error"], 0, "{}", describe(&out));
}

/// `direct=1` wants aligned memory; the tool's I/O buffers start on a page (as fio's do),
/// so the io_uring engine reads and writes them in place, with no bounce copy, at the
/// block sizes of the benchmark's rows.
#[test]
fn direct_io_moves_every_byte_in_place_without_a_user_space_copy() {
    for bs in ["4k", "128k"] {
        let file = TempFile::new(&format!("direct-{bs}"));
        let filename = file.arg();
        let bs_arg = format!("--bs={bs}");
        let out = bench(&[
            "--name=direct",
            filename.as_str(),
            "--ioengine=io_uring",
            "--direct=1",
            "--rw=randrw",
            bs_arg.as_str(),
            "--size=2m",
            "--iodepth=8",
            "--output-format=json",
        ]);
        if String::from_utf8_lossy(&out.stderr).contains("does not support O_DIRECT") {
            eprintln!("skipped: the temporary directory's file system has no O_DIRECT");
            return;
        }
        let doc = json(&out);
        let engine = &doc["jobs"][0]["iscsi_bench"]["engine"];
        let ios = engine["ios_completed"].as_u64().unwrap_or(0);
        assert!(ios >= 16, "bs={bs}: {engine}");
        assert!(
            engine["kernel_entries"].as_u64().unwrap_or(0) > 0,
            "{engine}"
        );
        assert_eq!(engine["bytes_copied"], 0, "bs={bs}: {engine}");
    }
}

fn direction_iops(doc: &Value, direction: &str) -> f64 {
    doc["jobs"][0][direction]["iops"]
        .as_f64()
        .unwrap_or_else(|| panic!("{direction}.iops missing: {doc}"))
}

#[test]
fn per_direction_rates_pace_each_direction_on_its_own() {
    for rate in ["--rate_iops=2000,500", "--rate=8m,2m"] {
        let out = bench(&[
            "--name=paced",
            "--rw=randrw",
            "--bs=4k",
            "--size=16m",
            "--iodepth=8",
            "--runtime=2",
            "--time_based",
            rate,
            "--output-format=json",
        ]);
        let doc = json(&out);
        let (read, write) = (direction_iops(&doc, "read"), direction_iops(&doc, "write"));
        let (want_read, want_write) = if rate.contains("iops") {
            (2000.0, 500.0)
        } else {
            (2048.0, 512.0)
        };
        // Each direction keeps its own rate: their ratio is what a shared pace would
        // break. A direction never runs ahead of its rate; it may fall a little behind
        // when another process holds the CPU (the tests share a 2-core machine).
        let ratio = (read / write) / (want_read / want_write);
        assert!(
            (ratio - 1.0).abs() < 0.05,
            "{rate}: read {read} / write {write} IOPS, want {want_read} / {want_write}"
        );
        for (got, want, what) in [(read, want_read, "read"), (write, want_write, "write")] {
            assert!(
                got / want < 1.04 && got / want > 0.85,
                "{rate}: {what} {got} IOPS, want {want}"
            );
        }
    }
}

#[test]
fn a_job_below_its_rate_floor_fails_with_fio_words() {
    let out = bench(&[
        "--name=slow",
        "--rw=randread",
        "--bs=4k",
        "--size=16m",
        "--rate_iops=200",
        "--rate_iops_min=500",
        "--runtime=5",
        "--time_based",
        "--output-format=json",
    ]);
    assert!(!out.status.success(), "{}", describe(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON even on failure");
    let text = doc["jobs"][0]["error_text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let all = format!("{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        all.contains("read rate_iops_min=500 not met, got 20"),
        "{}",
        describe(&out)
    );
    // It stopped after the settle period and one cycle, not at the runtime.
    let runtime_ms = doc["jobs"][0]["job_runtime"].as_u64().unwrap_or(u64::MAX);
    assert!(runtime_ms < 4000, "ran {runtime_ms} ms");
}

#[test]
fn a_block_size_the_target_cannot_take_is_refused_before_any_io() {
    // The file's direct-I/O alignment plays the LUN's logical block here (the embedded
    // target's LUN has 512-byte blocks, which every size below divides); the check is the
    // same one, after READ CAPACITY for a LUN.
    let file = TempFile::new("misaligned");
    let filename = file.arg();
    for (option, named) in [
        ("--bs=256", "bs=256"),
        ("--bsrange=512-1792", "bsrange=1792"),
        ("--bssplit=4k/50:256/50", "bssplit=256"),
        ("--offset=100", "offset=100"),
        ("--size=65636", "size=65636"),
    ] {
        let out = bench(&[
            "--name=tiny",
            filename.as_str(),
            "--ioengine=io_uring",
            "--direct=1",
            "--rw=write",
            "--size=64k",
            option,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{option}: {}", describe(&out));
        assert!(
            stderr.contains("job \"tiny\"")
                && stderr.contains(named)
                && stderr.contains("-byte logical block of")
                && stderr.contains("direct-I/O alignment"),
            "{option}: {}",
            describe(&out)
        );
        // Refused at open: nothing was written.
        let written = std::fs::read(&file.path).unwrap_or_default();
        assert!(
            written.iter().all(|&b| b == 0),
            "{option}: data was written"
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!stdout.contains("Run status"), "{option}: the job ran");
    }
}

#[test]
fn block_sizes_are_checked_against_a_4k_lun() {
    use bench::job::spec::Region;
    let job = |args: &[&str]| {
        let mut all = vec!["--name=lun4k"];
        all.extend_from_slice(args);
        bench::job::parse_command_line_with_env(all, &|_| None)
            .expect("parses")
            .jobs
            .remove(0)
    };
    let region = Region {
        offset_bytes: 0,
        len_bytes: 1 << 20,
    };
    let lun = "LUN iscsi://127.0.0.1:3260/iqn.2026-11.test:disk/1";
    let error = job(&["--bs=512"])
        .check_block_alignment(&region, 4096, lun)
        .expect_err("bs=512 on a 4 KiB LUN");
    assert_eq!(
        error.to_string(),
        "command line argument 1: job \"lun4k\": bs=512 is not a multiple of the 4096-byte \
         logical block of LUN iscsi://127.0.0.1:3260/iqn.2026-11.test:disk/1"
    );
    // Reads and writes are checked each: bs=4k,2k fails on the write size.
    let error = job(&["--rw=randrw", "--bs=4k,2k"])
        .check_block_alignment(&region, 4096, lun)
        .expect_err("2 KiB writes");
    assert!(error.to_string().contains("bs=2048"), "{error}");
    // A blockalign below the LUN's block, and a region off the grid.
    assert!(job(&["--bs=8k", "--blockalign=1k", "--rw=randread"])
        .check_block_alignment(&region, 4096, lun)
        .is_err());
    let shifted = Region {
        offset_bytes: 512,
        ..region
    };
    assert!(job(&["--bs=4k"])
        .check_block_alignment(&shifted, 4096, lun)
        .is_err());
    // What fits is accepted.
    assert!(job(&["--bsrange=4k-64k", "--rw=randwrite"])
        .check_block_alignment(&region, 4096, lun)
        .is_ok());
}

#[test]
fn clat_covers_the_round_trip_with_four_jobs_and_says_what_it_measures() {
    let out = bench(&[
        "--name=clat",
        "--rw=randread",
        "--bs=4k",
        "--size=16m",
        "--iodepth=1",
        "--numjobs=4",
        "--runtime=2",
        "--time_based",
        "--output-format=json",
    ]);
    let doc = json(&out);
    for job in doc["jobs"].as_array().expect("jobs") {
        // A 4 KiB read over loopback TCP through the target takes tens of microseconds;
        // clat used to start after the hand-over returned and showed 3 to 5 us when the
        // job thread lost the CPU meanwhile.
        let min = job["read"]["clat_ns"]["min"].as_u64().expect("clat min");
        assert!(min >= 10_000, "clat min {min} ns: {}", describe(&out));
    }
    let latency = &doc["iscsi_bench"]["latency"];
    for name in ["slat", "clat", "lat"] {
        assert!(
            latency[name].is_string(),
            "no definition of {name}: {latency}"
        );
    }
    assert!(latency["clat"]
        .as_str()
        .unwrap_or_default()
        .contains("hand-over to the shard"));
}

#[test]
fn verify_jobs_sharing_blocks_are_refused_before_any_io() {
    let out = bench(&[
        "--name=shared",
        "--rw=randwrite",
        "--bs=4k",
        "--size=4m",
        "--numjobs=4",
        "--verify=crc32c",
    ]);
    assert!(!out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("job \"shared\" (clone 1 of 4) and job \"shared\" (clone 2 of 4)")
            && stderr.contains("offset_increment=4194304"),
        "{}",
        describe(&out)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("Run status"));
    // With their own regions the clones verify cleanly.
    let out = bench(&[
        "--name=own",
        "--rw=randwrite",
        "--bs=4k",
        "--size=4m",
        "--numjobs=4",
        "--offset_increment=4m",
        "--verify=crc32c",
        "--output-format=json",
    ]);
    let doc = json(&out);
    for job in doc["jobs"].as_array().expect("jobs") {
        assert_eq!(job["error"], 0, "{}", describe(&out));
    }
}

#[test]
fn a_filename_list_spreads_a_job_over_several_luns() {
    let (_target, urls) = common::two_lun_target();
    let filename = format!("--filename={}", urls.join(":"));
    for service in ["roundrobin", "sequential", "random"] {
        let service_option = format!("--file_service_type={service}");
        let out = bench(&[
            "--name=luns",
            filename.as_str(),
            service_option.as_str(),
            "--rw=randwrite",
            "--bs=4k",
            "--size=8m",
            "--verify=crc32c",
            "--iodepth=4",
            "--output-format=json",
        ]);
        let doc = json(&out);
        let job = &doc["jobs"][0];
        assert_eq!(job["error"], 0, "{service}: {}", describe(&out));
        // size is divided between the LUNs, as fio divides it between files: 4 MiB each.
        assert_eq!(job["write"]["io_bytes"], 8 << 20, "{service}");
    }
    // What the list wrote to LUN 1 is there: a read of LUN 1 alone checks the headers.
    let lun1 = format!("--filename={}", urls[1]);
    let out = bench(&[
        "--name=lun1",
        lun1.as_str(),
        "--rw=read",
        "--bs=4k",
        "--size=4m",
        "--verify=crc32c",
        "--output-format=json",
    ]);
    let doc = json(&out);
    assert_eq!(doc["jobs"][0]["error"], 0, "{}", describe(&out));
    assert_eq!(doc["jobs"][0]["read"]["io_bytes"], 4 << 20);
}

#[test]
fn filename_lists_the_engine_cannot_serve_are_refused_with_a_reason() {
    let out = bench(&[
        "--name=mixed",
        "--filename=iscsi://127.0.0.1/iqn.2026-11.test:a/0:iscsi://127.0.0.1/iqn.2026-11.test:b/1",
        "--rw=read",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("must be on one target"),
        "{}",
        describe(&out)
    );
    // Local files in one list are served (tests/fio_nrfiles.rs); mixed with null, not.
    let out = bench(&["--name=files", "--filename=/tmp/a:null", "--rw=read"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("mixes local files with other targets"),
        "{}",
        describe(&out)
    );
}
