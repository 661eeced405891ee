//! Faults of a live migration that end it by themselves, through `iscsi-ctl gateway`
//! against the real `iscsi-gateway`, with a verifying `iscsi-bench` (crc32c) writing
//! through the gateway the whole time.
//!
//! - `a_dead_destination_puts_the_lun_back_on_its_source_by_itself`: tgt, the destination,
//!   is killed mid-copy; the migration ends `failed` with its reason, the LUN is a plain
//!   LUN on its source again with no operator command, and the host sees no error; the
//!   reason survives a restart and the LUN can migrate again.
//! - `kill_9_mid_dbt_resumes_from_the_record_and_the_dirty_regions`: a DBT migration
//!   resumed after `kill -9` goes on from its recorded cursor (it does not restart its
//!   copy), copies again the regions written since, and the committed LUN holds every
//!   acknowledged write.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use datapath::client::{Client, ClientConfig};
use datapath::scsi::Cdb;
use datapath::session::Request;
use serde_json::Value;
use system_tests::gateway_ctl::ctl_json;
use system_tests::loopback;
use system_tests::{
    describe_output, free_port, require_tools, workspace_binary, GatewayProcess, TargetSpec,
    TempDir, Tgt,
};

const T: &str = "iqn.2026-12.test:migration-faults";
const LUN_BYTES: u64 = 16 << 20;

struct Gateway {
    process: GatewayProcess,
    socket: PathBuf,
}

fn start(dir: &TempDir, portal: SocketAddr, log: &str) -> Gateway {
    let socket = dir.join("control.sock");
    let state = dir.join("state");
    let args = [
        "--control-socket",
        socket.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--threads",
        "2",
    ];
    let process = GatewayProcess::start_with_args(portal, &args, &dir.join(log))
        .unwrap_or_else(|e| panic!("gateway starts: {e}"));
    Gateway { process, socket }
}

fn status(socket: &Path) -> Value {
    let all = ctl_json(
        socket,
        &["migration", "status", "--target", T, "--lun", "0"],
    );
    all["migrations"][0].clone()
}

fn lun_kind(socket: &Path) -> Value {
    ctl_json(socket, &["target", "list"])["targets"][0]["luns"][0]["kind"].clone()
}

fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "not {what} after {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A verifying random writer through the gateway for `seconds`.
fn spawn_writer(dir: &Path, portal: SocketAddr, seconds: u32) -> Child {
    Command::new(workspace_binary("bench", "iscsi-bench"))
        .current_dir(dir)
        .args([
            "--name=faults",
            "--rw=randwrite",
            "--bs=4k",
            "--iodepth=4",
            "--numjobs=2",
            "--size=4M",
            "--offset_increment=4M",
            "--rate_iops=500",
            "--time_based",
            "--verify=crc32c",
            "--output-format=json",
            "--group_reporting",
        ])
        .arg(format!("--runtime={seconds}"))
        .arg(format!("--filename=iscsi://{portal}/{T}/0"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("iscsi-bench starts")
}

/// Waits for the writer and checks it saw no error and no verify failure.
fn writer_clean(child: Child) {
    let output = child.wait_with_output().expect("iscsi-bench output");
    assert!(output.status.success(), "{}", describe_output(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("verify:"), "verify failure: {stderr}");
    let doc: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("JSON ({e}): {}", describe_output(&output)));
    for job in doc["jobs"].as_array().expect("jobs") {
        assert_eq!(job["error"].as_u64(), Some(0), "{job}");
        assert!(job["write"]["total_ios"].as_u64().unwrap_or(0) > 0, "{job}");
    }
}

#[test]
fn a_dead_destination_puts_the_lun_back_on_its_source_by_itself() {
    if !require_tools(&["tgtd", "tgtadm"]) {
        return;
    }
    let mut tgt = Tgt::start(&[TargetSpec::new(
        "iqn.2026-12.test:faults-dest",
        &[LUN_BYTES],
    )])
    .expect("tgtd");
    let dir = TempDir::new("migration-fail-back").unwrap();
    let portal = loopback(free_port());
    let gateway = start(&dir, portal, "gateway-0.log");
    let socket = gateway.socket.clone();
    let source = format!("file:{}:{LUN_BYTES}", dir.join("lun-0.img").display());
    ctl_json(
        &socket,
        &["target", "create", T, "--lun", &format!("0={source}")],
    );
    let writer = spawn_writer(dir.path(), portal, 6);
    std::thread::sleep(Duration::from_millis(300));
    let to = format!(
        "iscsi://{}/iqn.2026-12.test:faults-dest/{}",
        tgt.portal(),
        tgt.first_data_lun()
    );
    ctl_json(&socket, &["migrate", T, "0", "--to", &to, "--rate", "2M"]);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(status(&socket)["state"], "copying");
    assert_eq!(lun_kind(&socket), "migrating");
    tgt.kill();
    let killed = Instant::now();
    // No operator command: the LUN goes back to a plain file LUN by itself.
    wait_until(Duration::from_secs(10), "back on the source", || {
        lun_kind(&socket) == "file"
    });
    let took = killed.elapsed();
    eprintln!("the LUN was back on its source {took:?} after the destination died");
    // The destination's 400 ms reconnect budget, then the watcher's swap; room for a
    // loaded machine and the polling.
    assert!(
        took < Duration::from_secs(3),
        "back on the source after {took:?}"
    );
    let failed = status(&socket);
    assert_eq!(failed["state"], "failed", "{failed}");
    let reason = failed["error"].as_str().unwrap_or_default().to_string();
    assert!(!reason.is_empty(), "the status says why: {failed}");
    // The durable record says why too.
    let records: Vec<Value> = std::fs::read_dir(dir.join("state").join("migrations"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["phase"], "failed", "{records:?}");
    assert_eq!(records[0]["error"].as_str(), Some(reason.as_str()));
    writer_clean(writer);
    drop(gateway);

    // After a restart: not resumed, still reported, and the LUN migrates again.
    let gateway = start(&dir, portal, "gateway-1.log");
    let socket = gateway.socket.clone();
    assert_eq!(lun_kind(&socket), "file");
    let after = status(&socket);
    assert_eq!(
        (after["state"].as_str(), after["error"].as_str()),
        (Some("failed"), Some(reason.as_str())),
        "{after}"
    );
    let to = format!("ram:{LUN_BYTES}");
    let again = ctl_json(&socket, &["migrate", T, "0", "--to", &to]);
    assert_eq!(again["state"], "copying", "{again}");
    wait_until(Duration::from_secs(30), "ready", || {
        status(&socket)["state"] == "ready"
    });
    let out = ctl_json(&socket, &["migration", "cancel", T, "0"]);
    assert_eq!(out["state"], "cancelled", "{out}");
    drop(gateway);
}

fn host(portal: SocketAddr) -> Client {
    let config = ClientConfig::new(portal, Some(T.into()));
    Client::connect(&config).expect("log in")
}

fn run(client: &mut Client, cdb: Cdb, buffer: Vec<u8>) -> datapath::session::CommandOutcome {
    for _ in 0..4 {
        let outcome = client
            .execute(Request::new(0, cdb.clone(), buffer.clone(), 0))
            .expect("command answered");
        if !datapath::scsi::is_unit_attention(outcome.status, outcome.sense.as_deref()) {
            return outcome;
        }
    }
    panic!("unit attentions without end");
}

fn write(client: &mut Client, lba: u64, data: &[u8]) {
    let cdb = Cdb::write(lba, (data.len() / 512) as u32, 512, false).unwrap();
    let outcome = run(client, cdb, data.to_vec());
    assert_eq!(outcome.status, 0, "WRITE: {:?}", outcome.sense);
}

fn read(client: &mut Client, lba: u64, len: usize) -> Vec<u8> {
    let cdb = Cdb::read(lba, (len / 512) as u32, 512, false).unwrap();
    let outcome = run(client, cdb, vec![0; len]);
    assert_eq!(outcome.status, 0, "READ: {:?}", outcome.sense);
    outcome.buffer
}

#[test]
fn kill_9_mid_dbt_resumes_from_the_record_and_the_dirty_regions() {
    let dir = TempDir::new("migration-dbt-kill").unwrap();
    let portal = loopback(free_port());
    let gateway = start(&dir, portal, "gateway-0.log");
    let socket = gateway.socket.clone();
    let size = 160u64 << 20;
    let source = format!("file:{}:{size}", dir.join("src.img").display());
    let created = ctl_json(
        &socket,
        &["target", "create", T, "--lun", &format!("0={source}")],
    );
    let naa = created["luns"][0]["naa"].clone();
    let mut client = host(portal);
    let before = system_tests::pattern(1 << 20, 5);
    write(&mut client, 0, &before);
    let to = format!("file:{}:{size}", dir.join("dst.img").display());
    let started = ctl_json(
        &socket,
        &[
            "migrate", T, "0", "--to", &to, "--mode", "dbt", "--rate", "40M",
        ],
    );
    assert_eq!(started["mode"], "dbt", "{started}");
    // Past the first progress record (every 64 MiB)...
    wait_until(Duration::from_secs(30), "past 70 MiB", || {
        status(&socket)["cursor_bytes"].as_u64().unwrap_or(0) > 70 << 20
    });
    // ...an acknowledged write where the copy has passed: only the source has it, and
    // only the dirty log knows.
    let behind = system_tests::pattern(1 << 20, 9);
    let behind_lba = (8u64 << 20) / 512;
    write(&mut client, behind_lba, &behind);
    drop(client);
    gateway.process.kill_hard();

    let gateway = start(&dir, portal, "gateway-1.log");
    let socket = gateway.socket.clone();
    let resumed = status(&socket);
    assert_eq!(resumed["mode"], "dbt", "{resumed}");
    assert!(
        resumed["cursor_bytes"].as_u64().unwrap() >= 64 << 20,
        "a DBT migration goes on from its record, it does not copy again from the start: {resumed}"
    );
    let ready = {
        let started = Instant::now();
        loop {
            let s = status(&socket);
            if s["state"] != "copying" {
                break s;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "{s}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert_eq!(ready["state"], "ready", "{ready}");
    // The rest of the first pass and the dirty region, not the whole LUN again.
    let copied = ready["copied_bytes"].as_u64().unwrap();
    assert!(
        copied < size,
        "copied {copied} bytes after the restart, the LUN has {size}: {ready}"
    );
    ctl_json(&socket, &["migration", "complete", T, "0", "--commit"]);
    drop(gateway);

    // On the destination alone: both writes are there.
    let gateway = start(&dir, portal, "gateway-2.log");
    let listed = ctl_json(&gateway.socket, &["target", "list"]);
    assert_eq!(listed["targets"][0]["luns"][0]["backend"], to.as_str());
    assert_eq!(listed["targets"][0]["luns"][0]["naa"], naa);
    let mut client = host(portal);
    assert!(
        read(&mut client, 0, before.len()) == before,
        "the write before the migration"
    );
    assert!(
        read(&mut client, behind_lba, behind.len()) == behind,
        "the write acknowledged behind the copy before kill -9"
    );
    drop(gateway);
}
