//! `iscsi-ctl pr`, `reserve`, `release` and `reset` as an operator runs them, two hosts (two
//! initiator names) against one LU: against tgt (issue 17 item 9: a target this project did
//! not write), and against `iscsi-gateway` as a process with a file LUN, whose APTPL state
//! must survive a `kill -9` and restart.

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use system_tests::gateway_process::{GatewayProcess, GatewaySpec, GATEWAY_IQN};
use system_tests::{require_tools, run_command, workspace_binary, TargetSpec, TempDir, Tgt};

const HOST_A: &str = "iqn.2026-12.invalid.system-tests:host-a";
const HOST_B: &str = "iqn.2026-12.invalid.system-tests:host-b";

fn ctl(host: &str, args: &[&str]) -> Command {
    let mut command = Command::new(workspace_binary("tools", "iscsi-ctl"));
    command.args(["--initiator-name", host]).args(args);
    command.env_remove("RUST_LOG");
    command
}

fn run(host: &str, args: &[&str]) -> Output {
    run_command(ctl(host, args), Duration::from_secs(30))
}

/// Runs and expects success; returns stdout parsed as JSON (commands run with `--json`).
fn json(host: &str, args: &[&str]) -> Value {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let out = run(host, &full);
    assert!(
        out.status.success(),
        "iscsi-ctl {args:?} as {host}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "iscsi-ctl {args:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Runs and expects RESERVATION CONFLICT (exit status 24, as sg_persist's).
fn conflicts(host: &str, args: &[&str]) {
    let out = run(host, args);
    assert_eq!(
        out.status.code(),
        Some(24),
        "iscsi-ctl {args:?} as {host} should conflict: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("RESERVATION CONFLICT"));
}

fn keys(url: &str) -> Vec<String> {
    json(HOST_A, &["pr", url, "--read-keys"])["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}

/// The persistent reservation sequence both targets must agree on.
fn persistent_reservations_between_two_hosts(url: &str) {
    // Leftovers of nothing: start clean.
    assert_eq!(keys(url), Vec::<String>::new());
    let generation = json(HOST_A, &["pr", url, "--read-keys"])["generation"]
        .as_u64()
        .unwrap();
    json(HOST_A, &["pr", url, "--register", "--param-sark", "a1"]);
    json(
        HOST_B,
        &["pr", url, "--register-ignore", "--param-sark", "b2"],
    );
    let mut got = keys(url);
    got.sort();
    assert_eq!(got, ["0xa1", "0xb2"]);
    let after = json(HOST_A, &["pr", url, "--read-keys"])["generation"]
        .as_u64()
        .unwrap();
    assert_eq!(
        after,
        generation + 2,
        "PRgeneration counts the two registrations"
    );
    // Re-registering with the wrong key conflicts.
    conflicts(
        HOST_A,
        &[
            "pr",
            url,
            "--register",
            "--param-rk",
            "99",
            "--param-sark",
            "a3",
        ],
    );
    // A reserves Write Exclusive; B sees it, may read, may not write.
    json(
        HOST_A,
        &[
            "pr",
            url,
            "--reserve",
            "--param-rk",
            "a1",
            "--prout-type",
            "WE",
        ],
    );
    let held = json(HOST_B, &["pr", url, "--read-reservation"]);
    assert_eq!(held["reserved"], true);
    assert_eq!(held["key"], "0xa1");
    assert_eq!(held["type"], 1);
    conflicts(
        HOST_B,
        &[
            "pr",
            url,
            "--reserve",
            "--param-rk",
            "b2",
            "--prout-type",
            "WE",
        ],
    );
    // B preempts A: the reservation becomes B's, Exclusive Access; A's key is gone.
    json(
        HOST_B,
        &[
            "pr",
            url,
            "--preempt",
            "--param-rk",
            "b2",
            "--param-sark",
            "a1",
            "--prout-type",
            "EA",
        ],
    );
    let held = json(HOST_A, &["pr", url, "--read-reservation"]);
    assert_eq!(
        (held["key"].as_str(), held["type"].as_u64()),
        (Some("0xb2"), Some(3))
    );
    assert_eq!(keys(url), ["0xb2"]);
    // A, no longer registered, cannot release or clear.
    conflicts(HOST_A, &["pr", url, "--clear", "--param-rk", "a1"]);
    json(
        HOST_B,
        &[
            "pr",
            url,
            "--release",
            "--param-rk",
            "b2",
            "--prout-type",
            "EA",
        ],
    );
    assert_eq!(
        json(HOST_A, &["pr", url, "--read-reservation"])["reserved"],
        false
    );
    json(HOST_B, &["pr", url, "--clear", "--param-rk", "b2"]);
    assert_eq!(keys(url), Vec::<String>::new());
    let capabilities = json(HOST_A, &["pr", url, "--report-capabilities"]);
    assert!(
        capabilities["types"]
            .as_array()
            .is_some_and(|t| t.len() >= 4),
        "{capabilities}"
    );
}

/// A SCSI-2 reservation held by A (for as long as its session lasts) keeps B out; A's
/// logout releases it. `ten`: the target has RESERVE(10) too (tgt has only the 6-byte
/// commands).
fn scsi2_reservation_lasts_as_long_as_the_session(url: &str, ten: bool) {
    let mut holder: Child = ctl(HOST_A, &["reserve", url, "--hold", "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("iscsi-ctl reserve starts");
    // A prints GOOD once it holds the reservation (then keeps its session for 4 s).
    let mut first_line = String::new();
    let stdout = holder.stdout.take().expect("piped stdout");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut first_line)
        .expect("iscsi-ctl reserve prints");
    assert!(first_line.contains("GOOD"), "A's RESERVE: {first_line:?}");
    // B may neither reserve nor read (SPC-2: READ conflicts with another's reservation).
    conflicts(HOST_B, &["reserve", url]);
    conflicts(HOST_B, &["read", url, "--lba", "0", "--blocks", "1"]);
    if ten {
        conflicts(HOST_B, &["reserve", url, "--ten"]);
    }
    let status = holder.wait().expect("iscsi-ctl reserve ends");
    assert!(status.success());
    // A logged out: B reserves, then releases.
    json(HOST_B, &["reserve", url]);
    json(HOST_B, &["release", url]);
}

/// tgt keys a registration by its session's nexus object, not by the initiator port
/// (name and ISID): a registration made in one session is not found from the next session
/// of the same port, so a multi-step sequence of separate `iscsi-ctl pr` runs cannot work
/// against it (SPC-4 5.12.7 says registrations outlive the nexus). What one run does alone
/// is checked here; the whole sequence runs in one session in the arbiter's tests.
#[test]
fn iscsi_ctl_reservations_against_tgt() {
    require_tools!("tgtd", "tgtadm");
    let tgt = Tgt::start(&[TargetSpec::new(
        "iqn.2026-12.invalid.system-tests:pr",
        &[8 << 20],
    )])
    .expect("tgt starts");
    let url = format!(
        "iscsi://{}/{}/{}",
        tgt.portal(),
        tgt.iqn(0),
        Tgt::FIRST_DATA_LUN
    );
    assert_eq!(keys(&url), Vec::<String>::new());
    json(
        HOST_A,
        &["pr", &url, "--register-ignore", "--param-sark", "a1"],
    );
    json(
        HOST_B,
        &["pr", &url, "--register-ignore", "--param-sark", "b2"],
    );
    let mut got = keys(&url);
    got.sort();
    assert_eq!(got, ["0xa1", "0xb2"]);
    assert_eq!(
        json(HOST_A, &["pr", &url, "--read-reservation"])["reserved"],
        false
    );
    let capabilities = json(HOST_A, &["pr", &url, "--report-capabilities"]);
    assert!(
        capabilities["types"]
            .as_array()
            .is_some_and(|t| !t.is_empty()),
        "{capabilities}"
    );
    // An unknown key cannot reserve, whoever asks.
    conflicts(
        HOST_A,
        &[
            "pr",
            &url,
            "--reserve",
            "--param-rk",
            "99",
            "--prout-type",
            "WE",
        ],
    );
    let reset = json(HOST_A, &["reset", &url, "--lun"]);
    assert_eq!(reset["response"], "function complete");
}

/// SCSI-2 reservations between two hosts against tgt: one session each, as above.
#[test]
fn iscsi_ctl_scsi2_reservations_against_tgt() {
    require_tools!("tgtd", "tgtadm");
    let tgt = Tgt::start(&[TargetSpec::new(
        "iqn.2026-12.invalid.system-tests:r6",
        &[8 << 20],
    )])
    .expect("tgt starts");
    let url = format!(
        "iscsi://{}/{}/{}",
        tgt.portal(),
        tgt.iqn(0),
        Tgt::FIRST_DATA_LUN
    );
    scsi2_reservation_lasts_as_long_as_the_session(&url, false);
}

#[test]
fn iscsi_ctl_reservations_against_the_gateway_and_aptpl_across_kill_9() {
    let dir = TempDir::new("pr-gateway").expect("scratch directory");
    let lun = format!("file:{}:8M", dir.join("lun0.img").display());
    let spec = GatewaySpec::new(&[&lun]).threads(2);
    let gateway = GatewayProcess::start(&spec).expect("iscsi-gateway starts");
    let url = format!("iscsi://{}/{GATEWAY_IQN}/0", gateway.portal());
    persistent_reservations_between_two_hosts(&url);
    scsi2_reservation_lasts_as_long_as_the_session(&url, true);
    // READ FULL STATUS names each registrant's port with its ISID.
    json(
        HOST_A,
        &[
            "pr",
            &url,
            "--register",
            "--param-sark",
            "c3",
            "--param-aptpl",
        ],
    );
    json(
        HOST_A,
        &[
            "pr",
            &url,
            "--reserve",
            "--param-rk",
            "c3",
            "--prout-type",
            "WERO",
        ],
    );
    let status = json(HOST_B, &["pr", &url, "--read-full-status"]);
    let entry = &status["registrations"][0];
    assert!(
        entry["transport_id"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{HOST_A},i,0x")),
        "{status}"
    );
    assert_eq!(entry["holder"], true);
    // Acknowledged with APTPL, then kill -9: the registration and reservation come back.
    gateway.kill_hard();
    let gateway = GatewayProcess::start(&spec).expect("iscsi-gateway restarts");
    let url = format!("iscsi://{}/{GATEWAY_IQN}/0", gateway.portal());
    let held = json(HOST_B, &["pr", &url, "--read-reservation"]);
    assert_eq!(
        (held["key"].as_str(), held["type"].as_u64()),
        (Some("0xc3"), Some(5)),
        "{held}"
    );
    assert_eq!(
        json(HOST_B, &["pr", &url, "--report-capabilities"])["ptpl_a"],
        true
    );
    // A reset leaves a persistent reservation in place (SAM-5 6.3).
    json(HOST_B, &["reset", &url, "--target-warm"]);
    assert_eq!(
        json(HOST_B, &["pr", &url, "--read-reservation"])["reserved"],
        true
    );
    json(HOST_A, &["pr", &url, "--clear", "--param-rk", "c3"]);
    assert_eq!(keys(&url), Vec::<String>::new());
    drop(gateway);
}

/// One `iscsi-ctl --json arbitrate` node: its state lines as they come.
struct Arbiter {
    child: Child,
    lines: std::sync::mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Arbiter {
    fn start(host: &str, url: &str, args: &[&str]) -> Arbiter {
        let mut command = ctl(host, &["--json", "arbitrate", url]);
        command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = command.spawn().expect("iscsi-ctl arbitrate starts");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in
                std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok)
            {
                if let Ok(value) = serde_json::from_str::<Value>(&line) {
                    if tx.send(value).is_err() {
                        break;
                    }
                }
            }
        });
        Arbiter {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (bounded) for the state `state`; returns its line.
    fn wait_state(&mut self, state: &str, limit: Duration) -> Value {
        if let Some(found) = self.seen.iter().find(|v| v["state"] == state) {
            return found.clone();
        }
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(value) => {
                    let hit = value["state"] == state;
                    self.seen.push(value.clone());
                    if hit {
                        return value;
                    }
                }
                Err(_) => panic!("no {state:?} within {limit:?}; saw {:?}", self.seen),
            }
        }
    }

    fn states(&mut self) -> Vec<String> {
        while let Ok(value) = self.lines.try_recv() {
            self.seen.push(value);
        }
        self.seen
            .iter()
            .filter_map(|v| v["state"].as_str().map(str::to_string))
            .collect()
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid; no memory is passed.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }
}

impl Drop for Arbiter {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two PR arbiters (short intervals): the owner stopped, the other preempts it within the
/// missed renewals; resumed, the old owner finds it lost the disk and exits 3.
fn pr_arbiters_take_over_from_a_stopped_owner(url: &str, extra: &[&str]) {
    let mut args = vec!["--mode", "pr", "--renew-interval", "0.2", "--missed", "3"];
    args.extend_from_slice(extra);
    let mut a = Arbiter::start(HOST_A, url, &args);
    a.wait_state("online", Duration::from_secs(10));
    let mut b = Arbiter::start(HOST_B, url, &args);
    b.wait_state("standby", Duration::from_secs(10));
    // Calm: A renews on time, B stays standby.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !b.states().contains(&"online".to_string()),
        "{:?}",
        b.states()
    );
    a.signal(libc::SIGSTOP);
    let stopped = std::time::Instant::now();
    b.wait_state("online", Duration::from_secs(10));
    let takeover = stopped.elapsed();
    assert!(
        takeover < Duration::from_secs(3),
        "takeover took {takeover:?}"
    );
    a.signal(libc::SIGCONT);
    a.wait_state("lost", Duration::from_secs(10));
    let status = a.child.wait().expect("arbiter a ends");
    assert_eq!(status.code(), Some(3), "a node that lost the disk exits 3");
}

#[test]
fn pr_arbiter_takes_over_on_the_gateway() {
    let gateway = GatewayProcess::start(&GatewaySpec::new(&["ram:8M"]).threads(2))
        .expect("iscsi-gateway starts");
    let url = format!("iscsi://{}/{GATEWAY_IQN}/0", gateway.portal());
    pr_arbiters_take_over_from_a_stopped_owner(&url, &["--stamp-lba", "100"]);
}

/// The whole PR sequence in one session per node, which is what tgt needs (see above);
/// tgt has no PREEMPT AND ABORT, so the challenge is a plain PREEMPT.
#[test]
fn pr_arbiter_takes_over_on_tgt() {
    require_tools!("tgtd", "tgtadm");
    let tgt = Tgt::start(&[TargetSpec::new(
        "iqn.2026-12.invalid.system-tests:arb",
        &[8 << 20],
    )])
    .expect("tgt starts");
    let url = format!(
        "iscsi://{}/{}/{}",
        tgt.portal(),
        tgt.iqn(0),
        Tgt::FIRST_DATA_LUN
    );
    pr_arbiters_take_over_from_a_stopped_owner(&url, &["--plain-preempt"]);
}

#[test]
fn scsi2_arbiter_challenges_with_a_lun_reset_and_takes_over() {
    let gateway = GatewayProcess::start(&GatewaySpec::new(&["ram:8M"]).threads(2))
        .expect("iscsi-gateway starts");
    let url = format!("iscsi://{}/{GATEWAY_IQN}/0", gateway.portal());
    let args = [
        "--mode",
        "scsi2",
        "--renew-interval",
        "0.3",
        "--challenge-wait",
        "0.8",
        "--online-after",
        "1.0",
        "--poll-interval",
        "0.1",
        "--stamp-lba",
        "100",
    ];
    let mut a = Arbiter::start(HOST_A, &url, &args);
    a.wait_state("online", Duration::from_secs(10));
    let mut b = Arbiter::start(HOST_B, &url, &args);
    b.wait_state("challenging", Duration::from_secs(10));
    // A defends: B's challenges (LU resets) keep failing while A renews.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !b.states().contains(&"online".to_string()),
        "{:?}",
        b.states()
    );
    assert!(
        !a.states().contains(&"lost".to_string()),
        "{:?}",
        a.states()
    );
    a.signal(libc::SIGSTOP);
    let stopped = std::time::Instant::now();
    b.wait_state("online", Duration::from_secs(10));
    assert!(
        stopped.elapsed() < Duration::from_secs(4),
        "takeover took {:?}",
        stopped.elapsed()
    );
    a.signal(libc::SIGCONT);
    a.wait_state("lost", Duration::from_secs(10));
    assert_eq!(a.child.wait().expect("a ends").code(), Some(3));
}

/// With NOP-In pings every second, a host that stops answering (SIGSTOP) loses its SCSI-2
/// reservation within about two seconds, inside a cluster's 3 s renewal; one that answers
/// (iscsi-ctl services its session while it holds) keeps it.
#[test]
fn a_silent_hosts_scsi2_reservation_ends_with_its_connection() {
    let spec = GatewaySpec::new(&["ram:8M"])
        .threads(2)
        .arg("--nop-interval")
        .arg("1")
        .arg("--nop-timeout")
        .arg("1");
    let gateway = GatewayProcess::start(&spec).expect("iscsi-gateway starts");
    let url = format!("iscsi://{}/{GATEWAY_IQN}/0", gateway.portal());
    let mut holder = KillOnDrop(
        ctl(HOST_A, &["reserve", &url, "--hold", "30"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("iscsi-ctl reserve starts"),
    );
    let mut first_line = String::new();
    let stdout = holder.0.stdout.take().expect("piped stdout");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut first_line)
        .expect("iscsi-ctl reserve prints");
    assert!(first_line.contains("GOOD"), "{first_line:?}");
    // Answering pings: still held after three ping intervals.
    std::thread::sleep(Duration::from_secs(3));
    conflicts(HOST_B, &["reserve", &url]);
    // Silent: the gateway closes the connection, and the reservation goes with it.
    // SAFETY: kill(2) on our own child's pid; no memory is passed.
    unsafe { libc::kill(holder.0.id() as i32, libc::SIGSTOP) };
    let stopped = std::time::Instant::now();
    loop {
        let out = run(HOST_B, &["reserve", &url]);
        if out.status.success() {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(6),
            "still reserved {:?} after the holder went silent",
            stopped.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "reservation free {:?} after the holder went silent",
        stopped.elapsed()
    );
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
