//! `iscsi-gateway` as an operator runs it: restarts, signals, its command line and its
//! log, through the binary itself.

use std::net::SocketAddr;
use std::time::Duration;

use std::process::{Command, Output};

use datapath::client::{Client, ClientConfig};
use serde_json::Value;
use system_tests::loopback;
use system_tests::{
    free_port, gateway_binary, run_command, run_tool, workspace_binary, GatewayProcess, TempDir,
};

/// The target name `iscsi-gateway` uses without `--iqn`.
const DEFAULT_IQN: &str = "iqn.2026-11.io.iscsi-uring:target";

#[test]
fn restart_right_after_kill_9_binds_the_same_port() {
    let dir = TempDir::new("gateway-restart").unwrap();
    let portal = loopback(free_port());
    let args = ["--lun", "ram:16M", "--threads", "1"];
    let mut gateway = GatewayProcess::start_with_args(portal, &args, &dir.join("log-0")).unwrap();
    let mut waited_for_old_listener = Vec::new();
    for round in 1..=10 {
        // A logged-in session: killed, the gateway's end of it lingers in FIN_WAIT.
        let mut config = ClientConfig::new(portal, Some(DEFAULT_IQN.into()));
        config.login_timeout = Duration::from_secs(10);
        let client = Client::connect(&config)
            .unwrap_or_else(|e| panic!("login in round {round}: {e}\n{}", gateway.full_log()));
        gateway.kill_hard();
        gateway = GatewayProcess::start_with_args(portal, &args, &dir.join(format!("log-{round}")))
            .unwrap_or_else(|e| panic!("restart {round} of 10 after kill -9: {e}"));
        drop(client);
        let log = gateway.full_log();
        if let Some(at) = log.find("waited_ms=") {
            let digits: String = log[at + 10..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            waited_for_old_listener.push(digits.parse::<u64>().unwrap_or(0));
        }
    }
    eprintln!(
        "restarts that waited for the killed gateway's listener: {} of 10, waits in ms: {:?}",
        waited_for_old_listener.len(),
        waited_for_old_listener
    );
}

/// `iscsi-gateway ARGS...` run to its end (for refusals), with a timeout.
fn gateway_run(args: &[&str]) -> Output {
    let mut command = Command::new(gateway_binary());
    command.args(args);
    run_command(command, Duration::from_secs(20))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The NAA designator of LUN 0, as `iscsi-ctl inquiry --vpd 0x83` decodes it.
fn naa_of(portal: SocketAddr) -> String {
    let ctl = workspace_binary("tools", "iscsi-ctl");
    let url = format!("iscsi://{portal}/{DEFAULT_IQN}/0");
    let out = run_tool(
        &ctl.to_string_lossy(),
        &["--json", "inquiry", "--vpd", "0x83", &url],
        Duration::from_secs(20),
    );
    assert!(out.status.success(), "iscsi-ctl: {}", stderr(&out));
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    page["descriptors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["designator_type"] == "NAA")
        .map(|d| d["value"].as_str().unwrap().to_string())
        .expect("an NAA designator")
}

/// The unit serial number of LUN 0, as libiscsi's `iscsi-inq -e 1 -c 0x80` reports it.
fn serial_by_libiscsi(portal: SocketAddr) -> Option<String> {
    let url = format!("iscsi://{portal}/{DEFAULT_IQN}/0");
    let out = run_tool(
        "iscsi-inq",
        &["-e", "1", "-c", "128", &url],
        Duration::from_secs(20),
    );
    if out.status.code() == Some(127) {
        eprintln!("SKIPPED: iscsi-inq not installed; the serial number is not cross-checked");
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let serial = text
        .lines()
        .find_map(|line| line.strip_prefix("Unit Serial Number:["))
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or_else(|| panic!("no serial number in iscsi-inq's report: {text}"));
    Some(serial.to_string())
}

#[test]
fn two_gateways_with_default_names_report_different_disks() {
    let dir = TempDir::new("gateway-identity").unwrap();
    let args = ["--lun", "ram:16M", "--threads", "1"];
    let a = GatewayProcess::start_with_args(loopback(free_port()), &args, &dir.join("a")).unwrap();
    let b = GatewayProcess::start_with_args(loopback(free_port()), &args, &dir.join("b")).unwrap();
    let (naa_a, naa_b) = (naa_of(a.portal()), naa_of(b.portal()));
    assert!(naa_a.starts_with("naa.3"), "{naa_a}");
    assert_ne!(naa_a, naa_b, "dm-multipath would merge two different disks");
    if let (Some(serial_a), Some(serial_b)) = (
        serial_by_libiscsi(a.portal()),
        serial_by_libiscsi(b.portal()),
    ) {
        assert_ne!(serial_a, serial_b);
    }
}

#[test]
fn a_file_lun_keeps_its_identity_and_is_exported_by_one_gateway_at_a_time() {
    let dir = TempDir::new("gateway-file-identity").unwrap();
    let image = dir.join("disk.img").display().to_string();
    let lun = format!("file:{image}:16M");
    let args = ["--lun", lun.as_str(), "--threads", "1"];
    let portal = loopback(free_port());
    let first = GatewayProcess::start_with_args(portal, &args, &dir.join("first")).unwrap();
    let naa = naa_of(portal);

    // A second gateway on the same file is refused, naming the file and why.
    let other_portal = loopback(free_port()).to_string();
    let out = gateway_run(&["--portal", &other_portal, "--lun", &lun]);
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(message.contains(&image), "{message}");
    assert!(
        message.contains("in use by another LUN or gateway"),
        "{message}"
    );
    assert!(
        !message.contains("listening"),
        "validated before binding: {message}"
    );
    first.kill_hard();

    // Restarted (and this time with the file's size found), the same disk.
    let image_spec = format!("file:{image}");
    let again = GatewayProcess::start_with_args(
        portal,
        &["--lun", &image_spec, "--threads", "1"],
        &dir.join("again"),
    )
    .unwrap();
    assert_eq!(naa_of(again.portal()), naa);
    drop(again);

    // Set by the user, it is what hosts see.
    let given = format!("{lun},naa=3000000000c0ffee,serial=DISK-0");
    let set = GatewayProcess::start_with_args(
        portal,
        &["--lun", &given, "--threads", "1"],
        &dir.join("given"),
    )
    .unwrap();
    assert_eq!(naa_of(set.portal()), "naa.3000000000c0ffee");
    if let Some(serial) = serial_by_libiscsi(set.portal()) {
        assert_eq!(serial, "DISK-0");
    }
}

#[test]
fn sighup_is_logged_and_ignored_and_sigterm_stops_cleanly() {
    let dir = TempDir::new("gateway-signals").unwrap();
    let mut gateway = GatewayProcess::start_with_args(
        loopback(free_port()),
        &["--lun", "ram:16M", "--threads", "1"],
        &dir.join("log"),
    )
    .unwrap();
    gateway.signal(libc::SIGHUP);
    assert_eq!(
        gateway.wait_exit(Duration::from_millis(500)),
        None,
        "SIGHUP killed it"
    );
    naa_of(gateway.portal()); // Still serving.
    assert!(
        gateway.full_log().contains("SIGHUP"),
        "{}",
        gateway.full_log()
    );
    gateway.signal(libc::SIGTERM);
    let status = gateway
        .wait_exit(Duration::from_secs(10))
        .expect("stops on SIGTERM");
    assert!(status.success(), "{status}");
    assert!(
        gateway.full_log().contains("SIGTERM"),
        "{}",
        gateway.full_log()
    );
}

#[test]
fn every_binary_says_its_version() {
    for (package, bin) in [
        ("gateway", "iscsi-gateway"),
        ("tools", "iscsi-ctl"),
        ("bench", "iscsi-bench"),
    ] {
        let path = workspace_binary(package, bin);
        let out = run_tool(
            &path.to_string_lossy(),
            &["--version"],
            Duration::from_secs(10),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{bin} --version: {}", stderr(&out));
        assert!(text.contains(env!("CARGO_PKG_VERSION")), "{bin}: {text}");
    }
}

#[test]
fn a_log_that_is_not_a_terminal_has_no_colour_codes() {
    let dir = TempDir::new("gateway-ansi").unwrap();
    let gateway = GatewayProcess::start_with_args(
        loopback(free_port()),
        &["--lun", "ram:16M", "--threads", "1"],
        &dir.join("log"),
    )
    .unwrap();
    let log = gateway.full_log();
    assert!(log.contains("target ready"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a log file: {log:?}"
    );
}

#[test]
fn invalid_input_is_refused_before_listening_with_what_was_wrong() {
    let dir = TempDir::new("gateway-refusals").unwrap();
    let portal = loopback(free_port()).to_string();
    let existing = dir.join("existing.img");
    std::fs::write(&existing, vec![0u8; 1 << 20]).unwrap();
    let existing_2m = format!("file:{}:2M", existing.display());
    let config = dir.join("big-lun.toml");
    std::fs::write(
        &config,
        format!(
            "portals = [\"{portal}\"]\n[[target]]\niqn = \"iqn.2026-11.test:big\"\n\
             luns = [{{ lun = 99999, backend = \"ram:1M\" }}]\n"
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let cases: [(&[&str], &str); 8] = [
        (
            &["--iqn", "notaniqn", "--lun", "ram:1M"],
            "\"notaniqn\" is not an iSCSI name",
        ),
        (
            &["--iqn", "iqn.2026-11.test:My Disk", "--lun", "ram:1M"],
            "upper case",
        ),
        (
            &["--lun", "ram:1000"],
            "not a multiple of the 512-byte block",
        ),
        (&["--lun", "ram:1024T"], "larger than this machine's"),
        (
            &["--lun", &existing_2m],
            "has 1048576 bytes, the spec asks for 2097152",
        ),
        (
            &["--config", &config],
            "LUN 99999 of iqn.2026-11.test:big: LUN numbers go up to 16383",
        ),
        (
            &[
                "--lun",
                "ram:1M",
                "--chap-user",
                "u",
                "--chap-secret",
                "short",
            ],
            "secret of 5 bytes, at least 12",
        ),
        (
            &[
                "--lun",
                "ram:1M",
                "--allow-initiator",
                "iqn.2026-11.test:Host",
            ],
            "allowed initiator",
        ),
    ];
    for (args, expected) in cases {
        let mut all = vec!["--portal", portal.as_str()];
        all.extend_from_slice(args);
        if args.first() == Some(&"--config") {
            all = args.to_vec();
        }
        let out = gateway_run(&all);
        let message = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?} accepted: {message}");
        assert!(message.contains(expected), "{args:?}: {message}");
        assert!(
            !message.contains("listening"),
            "{args:?} listened first: {message}"
        );
        assert!(!message.contains("panicked"), "{args:?}: {message}");
    }
    assert_eq!(
        std::fs::metadata(&existing).unwrap().len(),
        1 << 20,
        "file untouched"
    );
}
