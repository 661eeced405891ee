//! `--control-priority`: the control plane's threads run in the class asked for, the
//! event loops and the blocking pool keep the normal one, calls that may start I/O
//! threads run on the thread kept at the normal priority, and the verbs work as before
//! (issue 18: a storm of binds beside the I/O only uses what the loops leave).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use system_tests::endpoint_fixture::{bound_lun, settle, EndpointGateway, EndpointSpec};
use system_tests::gateway_binary;

const TARGET: &str = "iqn.2026-12.test:priority";
const HOST: &str = "iqn.2026-12.test:host";

/// SCHED_OTHER, SCHED_BATCH and SCHED_IDLE as /proc shows them (sched(7)).
const SCHED_OTHER: u32 = 0;
const SCHED_BATCH: u32 = 3;
const SCHED_IDLE: u32 = 5;

/// Each thread of the gateway: its name (15 bytes at most), policy and nice value.
fn threads(gateway: &EndpointGateway) -> Vec<(String, u32, i32)> {
    let pid = gateway.process().pid();
    let mut found = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("the gateway runs") {
        let dir = task.expect("a task").path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("stat")),
        ) else {
            continue; // a thread that just ended
        };
        // Fields after the name: state is field 3, nice field 19, policy field 41.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .expect("stat")
            .1
            .split_whitespace()
            .collect();
        found.push((
            comm.trim().to_string(),
            fields[41 - 3].parse().expect("policy"),
            fields[19 - 3].parse().expect("nice"),
        ));
    }
    found
}

/// A control connection kept open (its thread lives as long), after one answered call.
fn open_client(gateway: &EndpointGateway) -> UnixStream {
    let mut stream = UnixStream::connect(&gateway.socket).expect("control socket");
    let line = call(&mut stream, "\"method\":\"binding_list\",\"params\":{}");
    assert!(line.contains("\"bindings\""), "{line}");
    stream
}

/// One JSON-RPC call on `client` (`fields`: the method and params members); its answer line.
fn call(client: &mut UnixStream, fields: &str) -> String {
    send(client, fields);
    read_answer(client)
}

/// Sends a JSON-RPC request (`fields`: the method and params members).
fn send(client: &mut UnixStream, fields: &str) {
    client
        .write_all(format!("{{\"jsonrpc\":\"2.0\",\"id\":1,{fields}}}\n").as_bytes())
        .unwrap();
}

/// The next answer line on `client`.
fn read_answer(client: &UnixStream) -> String {
    let mut line = String::new();
    BufReader::new(client.try_clone().unwrap())
        .read_line(&mut line)
        .unwrap();
    line
}

/// The (policy, nice) of every thread whose name starts with `prefix`; at least one.
fn classes_of(all: &[(String, u32, i32)], prefix: &str) -> Vec<(u32, i32)> {
    let found: Vec<(u32, i32)> = all
        .iter()
        .filter(|(name, _, _)| name.starts_with(prefix))
        .map(|(_, policy, nice)| (*policy, *nice))
        .collect();
    assert!(!found.is_empty(), "no thread {prefix}* in {all:?}");
    found
}

#[test]
fn idle_control_threads_leave_the_loops_normal_and_the_verbs_work() {
    let gateway = EndpointSpec::new(TARGET)
        .volumes(&["v1", "v2"], "4M")
        .plain_lun(1, "ram:1M")
        .control_priority("idle")
        .start();
    gateway.bind(HOST, &["v1", "v2"]);
    let mut client = gateway.session(HOST, None);
    settle(&mut client, bound_lun(0, 1));
    settle(&mut client, bound_lun(0, 2));
    gateway.unbind(HOST, &["v2"]);
    let listed = gateway.ctl(&["bindings", "--host", HOST]);
    assert!(listed.contains("v1") && !listed.contains("v2"), "{listed}");
    // A call that may start I/O threads (here a RAM LUN: none) runs on the normal lane.
    gateway.ctl(&["lun", "attach", TARGET, "2", "ram:1M"]);

    let _held = open_client(&gateway);
    let all = threads(&gateway);
    // Only the calls' workers are lowered: the accept thread and each client's reader
    // keep the normal class (they only read requests and write answers).
    assert!(
        classes_of(&all, "iscsi-control-w")
            .iter()
            .all(|c| *c == (SCHED_IDLE, 0)),
        "{all:?}"
    );
    for (name, policy, nice) in &all {
        if name.starts_with("iscsi-control-w") {
            assert_eq!(*policy, SCHED_IDLE, "{name} in {all:?}");
        } else {
            assert_eq!((*policy, *nice), (SCHED_OTHER, 0), "{name} in {all:?}");
        }
    }
    assert_eq!(classes_of(&all, "iscsi-control-i"), vec![(SCHED_OTHER, 0)]);
    assert!(classes_of(&all, "iscsi-control-c")
        .iter()
        .all(|c| *c == (SCHED_OTHER, 0)));
    assert!(classes_of(&all, "iscsi-target-")
        .iter()
        .all(|c| *c == (SCHED_OTHER, 0)));
}

/// Beside threads that keep every CPU busy at the normal priority, an `idle` worker would
/// wait for them to stop (SCHED_IDLE runs only on CPU time nothing else wants): its call
/// is raised after `RESCUE_AFTER` (10 ms) and answered while they still spin, and the
/// worker goes back to idle. Without the right to raise a thread (not root, no
/// CAP_SYS_NICE) the gateway says so when it starts.
#[test]
fn an_idle_call_starved_by_busy_cpus_is_raised_and_answered() {
    let names: Vec<String> = (0..200).map(|i| format!("v{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let gateway = EndpointSpec::new(TARGET)
        .volumes(&names, "1M")
        .control_priority("idle")
        .start();
    // SAFETY: geteuid has no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        let log = gateway.process().log();
        assert!(log.contains("cannot be raised back"), "{log}");
        return;
    }
    let volumes = serde_json::to_string(&names).unwrap();
    let target_host_pool = format!(
        "\"target\":\"{TARGET}\",\"host\":\"{HOST}\",\"pool\":{}",
        serde_json::to_string(&gateway.pool).unwrap()
    );
    // One connection, opened while the CPUs are free: its worker is the one whose class
    // is read at the end.
    let mut client = open_client(&gateway);
    // The bind starts on the worker while the CPUs are free, then the spinners take them:
    // the reader cannot take over a call its worker started, so only raising the worker
    // answers it before they stop. The unbind is sent while they spin.
    let started = Instant::now();
    send(
        &mut client,
        &format!("\"method\":\"bind\",\"params\":{{\"endpoint\":0,{target_host_pool},\"volumes\":{volumes}}}"),
    );
    std::thread::sleep(Duration::from_millis(1));
    let spinning_for = Duration::from_secs(8);
    let stop = Arc::new(AtomicBool::new(false));
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let spinners: Vec<_> = (0..2 * cpus)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed) && started.elapsed() < spinning_for {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let bound = read_answer(&client);
    let unbound = call(
        &mut client,
        &format!("\"method\":\"unbind\",\"params\":{{{target_host_pool},\"volumes\":{volumes}}}"),
    );
    let took = started.elapsed();
    let all = threads(&gateway);
    stop.store(true, Ordering::Relaxed);
    for spinner in spinners {
        spinner.join().unwrap();
    }
    assert!(
        bound.contains("\"result\"") && unbound.contains("\"result\""),
        "{bound} {unbound}"
    );
    // The spinners stop by themselves after 8 s: a call that waited for them would take
    // about that long.
    assert!(
        took < Duration::from_secs(4),
        "bind and unbind of 200 volumes beside busy CPUs took {took:?}"
    );
    assert!(
        classes_of(&all, "iscsi-control-w")
            .iter()
            .all(|c| c.0 == SCHED_IDLE),
        "{all:?}"
    );
}

#[test]
fn batch_with_a_nice_value_applies_both() {
    let gateway = EndpointSpec::new(TARGET)
        .volumes(&["v1"], "4M")
        .control_priority("batch:10")
        .start();
    gateway.bind(HOST, &["v1"]);
    let _held = open_client(&gateway);
    let all = threads(&gateway);
    assert!(
        classes_of(&all, "iscsi-control-w")
            .iter()
            .all(|c| *c == (SCHED_BATCH, 10)),
        "{all:?}"
    );
    assert!(classes_of(&all, "iscsi-target-")
        .iter()
        .all(|c| *c == (SCHED_OTHER, 0)));
}

#[test]
fn a_bad_class_is_refused_by_name() {
    let output = Command::new(gateway_binary())
        .args([
            "--control-socket",
            "/nonexistent/control.sock",
            "--control-priority",
            "fast",
        ])
        .output()
        .expect("iscsi-gateway runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("fast") && stderr.contains("unknown class"),
        "{stderr}"
    );
}
