//! `iscsi-bench` as a user runs it: on a fresh machine against the embedded target, against
//! tgt with verification, beside fio on the same job file, and with bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use system_tests::{
    describe_output, run_command, workspace_binary, workspace_binary_release, TargetSpec, TempDir,
    Tgt,
};

const RUN_TIMEOUT: Duration = Duration::from_secs(90);

/// The tests of this file run one at a time: one of them compares speeds, and the others
/// would share the two cores with it.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn bench_path() -> PathBuf {
    workspace_binary("bench", "iscsi-bench")
}

fn bench_in(dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(bench_path());
    command.current_dir(dir).args(args);
    run_command(command, RUN_TIMEOUT)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "iscsi-bench failed: {}",
        describe_output(out)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("output is not one JSON document ({e}): {}", stdout(out)))
}

fn job(doc: &Value, index: usize) -> &Value {
    &doc["jobs"][index]
}

fn as_u64(v: &Value, what: &str) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("{what} is not an unsigned integer: {v}"))
}

fn as_f64(v: &Value, what: &str) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"))
}

#[test]
fn runs_against_the_embedded_target_with_no_setup() {
    let _serial = serial();
    let dir = TempDir::new("bench-default").unwrap();
    let out = bench_in(
        dir.path(),
        &[
            "--name=default",
            "--rw=randread",
            "--bs=4k",
            "--iodepth=32",
            "--runtime=2",
            "--size=64m",
            "--output-format=json",
        ],
    );
    let doc = json(&out);
    let read = &job(&doc, 0)["read"];
    let ios = as_u64(&read["total_ios"], "read.total_ios");
    assert!(ios > 1000, "only {ios} reads in 2 s");
    assert!(as_f64(&read["iops"], "read.iops") > 500.0);
    assert_eq!(as_u64(&job(&doc, 0)["error"], "error"), 0);
    // 4 KiB reads: bytes are exactly 4096 per I/O.
    assert_eq!(as_u64(&read["io_bytes"], "io_bytes"), ios * 4096);
    let write = &job(&doc, 0)["write"];
    assert_eq!(as_u64(&write["total_ios"], "write.total_ios"), 0);
    let p99 = as_u64(
        &read["clat_ns"]["percentile"]["99.000000"],
        "clat_ns.percentile.99",
    );
    let max = as_u64(&read["clat_ns"]["max"], "clat_ns.max");
    assert!(p99 > 0 && p99 <= max, "p99 {p99} against max {max}");
}

#[test]
fn human_output_reads_like_fio() {
    let _serial = serial();
    let dir = TempDir::new("bench-human").unwrap();
    let out = bench_in(
        dir.path(),
        &[
            "--name=mixed",
            "--ioengine=null",
            "--rw=randrw",
            "--rwmixread=70",
            "--bs=4k",
            "--size=16m",
            "--number_ios=20000",
        ],
    );
    assert!(out.status.success(), "{}", describe_output(&out));
    let text = stdout(&out);
    for needle in [
        "mixed: (groupid=0, jobs=1)",
        "read: IOPS=",
        "write: IOPS=",
        "clat percentiles",
        "Run status group 0 (all jobs):",
        "READ: bw=",
        "WRITE: bw=",
    ] {
        assert!(text.contains(needle), "no {needle:?} in:\n{text}");
    }
}

/// Item 6: a block changed behind the target's back is caught, named and fails the run.
#[test]
fn verify_catches_a_block_changed_behind_the_targets_back() {
    let _serial = serial();
    system_tests::require_tools!("tgtd", "tgtadm");
    let tgt = Tgt::start(&[TargetSpec::new("iqn.2026-11.test:bench-verify", &[8 << 20])]).unwrap();
    let dir = TempDir::new("bench-verify").unwrap();
    let url = format!(
        "iscsi://{}/{}/{}",
        tgt.portal(),
        "iqn.2026-11.test:bench-verify",
        Tgt::FIRST_DATA_LUN
    );
    let filename = format!("--filename={url}");
    let common = [
        "--name=v",
        filename.as_str(),
        "--bs=4k",
        "--size=1m",
        "--verify=crc32c",
        "--output-format=json",
    ];
    let mut write = common.to_vec();
    write.extend(["--rw=write", "--do_verify=1"]);
    let out = bench_in(dir.path(), &write);
    let doc = json(&out);
    assert_eq!(as_u64(&job(&doc, 0)["write"]["total_ios"], "writes"), 256);

    // Change block 37 in the backing file, as a broken array would.
    let lun = tgt.lun_path(0, 0);
    let mut data = std::fs::read(&lun).unwrap();
    let block = 37 * 4096;
    data[block + 1000] ^= 0xff;
    std::fs::write(&lun, &data).unwrap();

    let mut read = common.to_vec();
    read.push("--rw=read");
    let out = bench_in(dir.path(), &read);
    assert!(
        !out.status.success(),
        "a corrupted block passed verification: {}",
        describe_output(&out)
    );
    let all = format!("{}{}", stdout(&out), stderr(&out));
    // tgt's LUN has 512-byte blocks: byte 37 * 4096 + 1000 is in LBA 297.
    assert!(all.contains("LBA 297"), "the LBA is not named:\n{all}");
    assert!(
        all.contains("expected") && all.contains("found"),
        "the headers are not shown:\n{all}"
    );
}

/// At depth 1 a command and its answer cost the job one kernel entry: the command's send,
/// the receive for its answer and the sleep go in together, the wait asking for two
/// completions (the send's, posted inside the entry, and the answer's), and the answer's
/// header and 4 KiB of data come in one receive. Before, the send went in an entry of its
/// own and the sleep in a second (two per read), and before that an idle receive armed
/// for a header alone and the data's own receive made 4 to 6. A count, not a time: it
/// does not depend on the machine's load.
#[test]
fn a_read_at_depth_one_costs_one_kernel_entry() {
    let _serial = serial();
    system_tests::require_tools!("tgtd", "tgtadm");
    let iqn = "iqn.2026-11.test:bench-depth-one";
    let tgt = Tgt::start(&[TargetSpec::new(iqn, &[8 << 20])]).unwrap();
    let dir = TempDir::new("bench-depth-one").unwrap();
    let url = format!("iscsi://{}/{iqn}/{}", tgt.portal(), Tgt::FIRST_DATA_LUN);
    let filename = format!("--filename={url}");
    let out = bench_in(
        dir.path(),
        &[
            "--name=d1",
            filename.as_str(),
            "--rw=randread",
            "--bs=4k",
            "--iodepth=1",
            "--number_ios=2000",
            "--output-format=json",
        ],
    );
    let doc = json(&out);
    let engine = &job(&doc, 0)["iscsi_bench"]["engine"];
    let ios = as_u64(&engine["ios_completed"], "ios_completed");
    assert!(ios >= 2000, "{engine}");
    let per_io = as_f64(&engine["kernel_entries_per_io"], "kernel_entries_per_io");
    // One per read, and a little for the login and the logout; a slow machine may see an
    // answer's deferred completion taken by one more entry now and then.
    assert!(
        per_io < 1.5,
        "{per_io:.2} kernel entries per read: {engine}"
    );
}

fn write_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Every key path of a JSON tree ("jobs.read.clat_ns.percentile" style, arrays merged).
fn key_paths(v: &Value, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(path.clone());
                key_paths(child, &path, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                key_paths(item, prefix, out);
            }
        }
        _ => {}
    }
}

/// The read plus write IOPS of the first job of a 3-second 70/30 random mix, after checking
/// what either tool must report for it: a runtime of about 3 s per direction, a read share
/// of about 70% of the I/Os, and IOPS that are the I/O count over the runtime.
fn mixed_job_iops(doc: &Value, who: &str) -> f64 {
    let mut total_ios = 0;
    let mut iops = 0.0;
    for dir in ["read", "write"] {
        let stats = &job(doc, 0)[dir];
        let ios = as_u64(&stats["total_ios"], &format!("{who}: {dir} total_ios"));
        let runtime_ms = as_u64(&stats["runtime"], &format!("{who}: {dir} runtime"));
        let dir_iops = as_f64(&stats["iops"], &format!("{who}: {dir} iops"));
        assert!(ios > 0, "{who}: no {dir}s in a 3 s randrw job");
        assert!(
            (2_900..=3_500).contains(&runtime_ms),
            "{who}: {dir} runtime {runtime_ms} ms for runtime=3"
        );
        let expected = ios as f64 * 1000.0 / runtime_ms as f64;
        assert!(
            (dir_iops - expected).abs() <= expected * 0.01 + 1.0,
            "{who}: {dir} iops {dir_iops} but {ios} I/Os in {runtime_ms} ms"
        );
        total_ios += ios;
        iops += dir_iops;
    }
    let reads = as_u64(&job(doc, 0)["read"]["total_ios"], "read total_ios");
    let read_share = reads as f64 / total_ios as f64;
    assert!(
        (0.65..=0.75).contains(&read_share),
        "{who}: reads are {read_share:.3} of {total_ios} I/Os with rwmixread=70"
    );
    iops
}

/// Item 7: one job file on a local file through fio's io_uring engine and through ours.
/// Both tools run optimised builds, back to back. What is asserted is behaviour: both run the job
/// for its time, mix reads and writes 70/30, and report the same JSON; our IOPS follow from
/// our I/O count and runtime. The IOPS of the two are printed, not bounded: speed is
/// `scripts/bench-fio.sh`'s business (its io_uring table), and a CI machine's disk once ran
/// ours at half of fio's in all three rounds where this machine's runs them at parity
/// (0.98-1.07 the next day), which no bound here could tell from a real slowdown.
#[test]
fn one_job_file_through_fio_and_through_ours() {
    let _serial = serial();
    system_tests::require_tools!("fio");
    let dir = TempDir::new("bench-fio").unwrap();
    let data = dir.join("data.bin");
    let jobfile = dir.join("randrw.fio");
    write_file(
        &jobfile,
        &format!(
            "; the same file for both tools: a 70/30 random mix\n\
             [global]\n\
             ioengine=io_uring\n\
             filename={}\n\
             size=256m\n\
             bs=4k\n\
             direct=1\n\
             iodepth=8\n\
             runtime=3\n\
             time_based\n\
             \n\
             [mixed]\n\
             rw=randrw\n\
             rwmixread=70\n",
            data.display()
        ),
    );
    // Lay the file out once so neither tool pays for it inside the run, and wait for it to
    // reach the disk: 256 MiB of writeback behind the first runs once slowed them to a few
    // hundred IOPS, unevenly.
    std::fs::write(&data, vec![0x5a; 256 << 20]).unwrap();
    std::fs::File::open(&data).unwrap().sync_all().unwrap();
    let job_arg = jobfile.to_string_lossy().into_owned();
    let ours_path = workspace_binary_release("bench", "iscsi-bench");
    let run = |program: &Path| {
        let mut command = Command::new(program);
        command
            .current_dir(dir.path())
            .args([job_arg.as_str(), "--output-format=json"]);
        json(&run_command(command, RUN_TIMEOUT))
    };
    let fio_path = system_tests::tool_path("fio").unwrap();
    let fio_doc = run(&fio_path);
    let ours_doc = run(&ours_path);
    let fio_iops = mixed_job_iops(&fio_doc, "fio");
    let our_iops = mixed_job_iops(&ours_doc, "ours");
    eprintln!(
        "randrw 70/30 4k qd8 direct: fio {fio_iops:.0} IOPS, ours {our_iops:.0} IOPS, ratio {:.2}",
        our_iops / fio_iops
    );
    let (mut fio_keys, mut our_keys) = Default::default();
    key_paths(&fio_doc, "", &mut fio_keys);
    key_paths(&ours_doc, "", &mut our_keys);
    let missing: Vec<_> = fio_keys
        .iter()
        .filter(|k| !k.starts_with("disk_util") && !our_keys.contains(*k))
        .collect();
    assert!(missing.is_empty(), "keys fio has and we lack: {missing:?}");
}

#[test]
fn bad_input_is_named_before_any_io() {
    let _serial = serial();
    let dir = TempDir::new("bench-bad").unwrap();
    let bad = dir.join("bad.fio");
    write_file(&bad, "[global]\nbs=4k\n\n[job]\nrw=randread\niodepht=8\n");
    let out = bench_in(dir.path(), &[&bad.to_string_lossy()]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("bad.fio:6"), "no file:line in: {err}");
    assert!(err.contains("iodepht") && err.contains("iodepth"), "{err}");

    let out = bench_in(dir.path(), &["--name=z", "--ioengine=null", "--size=0"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("size"), "{}", stderr(&out));
}

#[test]
fn an_offset_past_the_end_of_the_lun_is_refused_before_any_io() {
    let _serial = serial();
    system_tests::require_tools!("tgtd", "tgtadm");
    let iqn = "iqn.2026-11.test:bench-past";
    let tgt = Tgt::start(&[TargetSpec::new(iqn, &[4 << 20])]).unwrap();
    let dir = TempDir::new("bench-past").unwrap();
    let filename = format!(
        "--filename=iscsi://{}/{iqn}/{}",
        tgt.portal(),
        Tgt::FIRST_DATA_LUN
    );
    let out = bench_in(
        dir.path(),
        &[
            "--name=past",
            filename.as_str(),
            "--rw=write",
            "--bs=4k",
            "--offset=8m",
            "--size=1m",
        ],
    );
    assert!(!out.status.success(), "{}", describe_output(&out));
    assert!(stderr(&out).contains("offset"), "{}", stderr(&out));
    // Refused before any I/O: nothing was written.
    let data = std::fs::read(tgt.lun_path(0, 0)).unwrap();
    assert!(data.iter().all(|&b| b == 0), "the LUN was written");
}

/// Items 3 to 5 together: a paced job with per-interval results in one JSON document,
/// fio-named log files, the HTML report, and the status line when asked for.
#[test]
fn paced_run_with_intervals_logs_report_and_status_line() {
    let _serial = serial();
    let dir = TempDir::new("bench-paced").unwrap();
    let report = dir.join("report");
    let results = dir.join("results.json");
    let report_arg = format!("--report={}", report.display());
    let output_arg = format!("--output={}", results.display());
    let out = bench_in(
        dir.path(),
        &[
            "--name=paced",
            "--ioengine=null",
            "--rw=randread",
            "--bs=4k",
            "--size=16m",
            "--rate_iops=2000",
            "--runtime=3",
            "--time_based",
            "--write_bw_log=paced",
            "--write_lat_log=paced",
            "--interval-results=1s",
            "--eta=always",
            "--output-format=json",
            output_arg.as_str(),
            report_arg.as_str(),
        ],
    );
    assert!(out.status.success(), "{}", describe_output(&out));
    // The status line went to stdout (asked for with --eta=always), the results to the file.
    let status = stdout(&out);
    assert!(status.contains("Jobs: 1"), "no status line in: {status:?}");
    let text = std::fs::read_to_string(&results).unwrap();
    let doc: Value = serde_json::from_str(&text).expect("one JSON document");
    let read = &job(&doc, 0)["read"];
    let iops = as_f64(&read["iops"], "read.iops");
    assert!(
        (1800.0..=2200.0).contains(&iops),
        "rate_iops=2000 gave {iops} IOPS"
    );
    let intervals = job(&doc, 0)["iscsi_bench"]["intervals"]
        .as_array()
        .expect("intervals in the job's extension");
    assert!(
        (2..=4).contains(&intervals.len()),
        "{} intervals in 3 s at 1 s",
        intervals.len()
    );
    for name in ["paced_bw.1.log", "paced_lat.1.log", "paced_clat.1.log"] {
        let log = std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let first = log.lines().next().unwrap_or_default();
        assert_eq!(first.split(',').count(), 5, "{name}: {first:?}");
    }
    let page = std::fs::read_to_string(report.join("index.html")).unwrap();
    for chart in [
        "chart-iops",
        "chart-bandwidth",
        "chart-latency-percentiles",
        "chart-latency-cdf",
    ] {
        assert!(page.contains(chart), "no {chart} chart in the report");
    }
    assert!(
        page.contains("class=\"series\""),
        "the charts have no lines"
    );
}

/// `iscsi-bench copy-offload`: EXTENDED COPY beside a host copy of the same region of a
/// pool volume, reported side by side; both destinations verified against the source.
#[test]
fn copy_offload_copies_a_region_with_extended_copy_beside_a_host_copy() {
    let scratch = TempDir::new("bench-copy-offload").unwrap();
    let pool = scratch.join("pool.img");
    let created = Command::new(system_tests::gateway_binary())
        .args(["pool", "create", pool.to_str().unwrap(), "128M"])
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let spec = system_tests::gateway_process::GatewaySpec::new(&[&format!(
        "pool:{},volume=v,size=32M",
        pool.display()
    )]);
    let gateway = system_tests::GatewayProcess::start(&spec).unwrap();
    let url = format!(
        "iscsi://{}/{}/0",
        gateway.portal(),
        system_tests::gateway_process::GATEWAY_IQN
    );
    let output = bench_in(
        scratch.path(),
        &[
            "copy-offload",
            &format!("--filename={url}"),
            "--size=4M",
            "--offset=1M",
            "--output-format=json",
        ],
    );
    let report = json(&output);
    let copy = &report["copy_offload"];
    assert_eq!(copy["verified"], true, "{report}");
    assert_eq!(copy["source_lba"], 2048);
    for (method, dest) in [("extended_copy", 10240), ("host", 18432)] {
        assert_eq!(copy[method]["bytes"], 4 << 20, "{method}");
        assert_eq!(copy[method]["dest_lba"], dest, "{method}");
        assert!(copy[method]["seconds"].as_f64().unwrap() > 0.0);
    }
    // One EXTENDED COPY and a SYNCHRONIZE CACHE; 4 reads and 4 writes of 1 MiB and one.
    assert_eq!(copy["extended_copy"]["commands"], 2);
    assert_eq!(copy["host"]["commands"], 9);
    // A range past the end is refused before any copy, with the reason.
    let out = Command::new(bench_path())
        .args(["copy-offload", &format!("--filename={url}"), "--size=20M"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("goes past the LUN"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 16: copy offload as jobs of a job file. One file runs an `rw=copy` job by
/// EXTENDED COPY beside one through the host (READ+WRITE) on a pool volume; both are
/// reported side by side (JSON and text) and verified against the source.
#[test]
fn a_job_file_runs_an_extended_copy_job_beside_a_host_copy_job() {
    let scratch = TempDir::new("bench-copy-jobs").unwrap();
    let pool = scratch.join("pool.img");
    let created = Command::new(system_tests::gateway_binary())
        .args(["pool", "create", pool.to_str().unwrap(), "128M"])
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let spec = system_tests::gateway_process::GatewaySpec::new(&[&format!(
        "pool:{},volume=v,size=32M",
        pool.display()
    )]);
    let gateway = system_tests::GatewayProcess::start(&spec).unwrap();
    let url = format!(
        "iscsi://{}/{}/0",
        gateway.portal(),
        system_tests::gateway_process::GATEWAY_IQN
    );
    let file = scratch.join("copy.fio");
    std::fs::write(
        &file,
        format!(
            "[global]\nfilename={url}\nsize=4m\noffset=1m\nbs=1m\niodepth=4\nrw=copy\n\
             [xcopy]\ncopy_method=xcopy\ncopy_dest=8m\n\
             [host]\ncopy_method=host\ncopy_dest=16m\n"
        ),
    )
    .unwrap();
    let output = bench_in(
        scratch.path(),
        &["--output-format=json", file.to_str().unwrap()],
    );
    let report = json(&output);
    let jobs = report["copy_jobs"].as_array().expect("copy_jobs");
    assert_eq!(jobs.len(), 2, "{report}");
    for (job, (name, method, dest_lba, commands)) in jobs
        .iter()
        .zip([("xcopy", "xcopy", 16384, 2), ("host", "host", 32768, 9)])
    {
        assert_eq!(job["jobname"], name, "{report}");
        assert_eq!(job["copy_method"], method);
        assert_eq!(job["source_lba"], 2048);
        assert_eq!(job["dest_lba"], dest_lba);
        assert_eq!(job["bytes"], 4 << 20);
        assert_eq!(job["verified"], true);
        // xcopy: one EXTENDED COPY and a SYNCHRONIZE CACHE; host: 4 reads, 4 writes, one.
        assert_eq!(job["commands"], commands, "{name}");
        assert!(job["seconds"].as_f64().unwrap() > 0.0);
    }
    assert!(report["host_over_xcopy"].as_f64().unwrap() > 0.0);
    let text = stdout(&bench_in(scratch.path(), &[file.to_str().unwrap()]));
    assert!(
        text.contains("xcopy") && text.contains("host copy time / EXTENDED COPY time"),
        "{text}"
    );

    // A copy job beside an I/O-pattern job is refused, naming the other job.
    std::fs::write(
        &file,
        format!("[c]\nfilename={url}\nsize=1m\nrw=copy\n[r]\nfilename={url}\nsize=1m\nrw=read\n"),
    )
    .unwrap();
    let out = bench_in(scratch.path(), &[file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    assert!(
        stderr(&out).contains("job r is not rw=copy"),
        "{}",
        stderr(&out)
    );
}
