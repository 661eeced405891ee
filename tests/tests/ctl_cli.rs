//! `iscsi-ctl` as a user runs it: protocol logs with `-v` and `RUST_LOG`, `-` for stdin
//! and stdout, CHAP secrets from the environment and files instead of argv.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use gateway::server::{self, RunningTarget, TargetConfig, TargetNodeConfig};
use gateway::session::ChapCredentials;
use system_tests::{free_port, run_command, workspace_binary, GatewayProcess, TempDir};

const IQN: &str = "iqn.2026-11.test:ctl-cli";
const SECRET: &str = "twelve-chars-or-more";

fn target(chap: bool) -> RunningTarget {
    let mut node = TargetNodeConfig::new(IQN, vec![(0, "ram:4M".into())]);
    if chap {
        node.chap = Some(ChapCredentials {
            user: "alice".into(),
            secret: SECRET.as_bytes().to_vec(),
        });
    }
    let mut config = TargetConfig::new("127.0.0.1:0".parse().unwrap(), node);
    config.threads = Some(1);
    server::start(config).expect("target starts")
}

fn url(target: &RunningTarget) -> String {
    format!("iscsi://{}/{IQN}/0", target.addrs()[0])
}

fn ctl_command(args: &[&str]) -> Command {
    let mut command = Command::new(workspace_binary("tools", "iscsi-ctl"));
    command.args(args);
    for name in [
        "RUST_LOG",
        "LIBISCSI_CHAP_USERNAME",
        "LIBISCSI_CHAP_PASSWORD",
        "LIBISCSI_CHAP_TARGET_USERNAME",
        "LIBISCSI_CHAP_TARGET_PASSWORD",
    ] {
        command.env_remove(name);
    }
    command
}

fn run(command: Command) -> Output {
    run_command(command, Duration::from_secs(30))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn verbose_and_rust_log_show_the_login_exchange() {
    let target = target(false);
    let url = url(&target);
    let out = run(ctl_command(&["-vv", "login", &url]));
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    for expected in [
        "login request",
        "AuthMethod=None",
        "login response",
        "HeaderDigest=None",
        "login complete",
    ] {
        assert!(log.contains(expected), "-vv lacks {expected:?}: {log}");
    }
    assert!(!log.contains('\u{1b}'), "colour codes in a pipe: {log:?}");
    let out = run(ctl_command(&["-v", "login", &url]));
    let log = stderr(&out);
    assert!(
        log.contains("login complete") && log.contains("max_burst_length"),
        "{log}"
    );
    assert!(
        !log.contains("login request"),
        "-v shows the outcome only: {log}"
    );
    let mut with_env = ctl_command(&["readcap", &url]);
    with_env.env("RUST_LOG", "debug");
    let log = stderr(&run(with_env));
    assert!(log.contains("login request"), "RUST_LOG=debug: {log}");
}

#[test]
fn a_clean_dependent_transport_readcap_warns_about_nothing() {
    let target = target(false);
    let out = run(ctl_command(&[
        "--transport",
        "dependent",
        "readcap",
        &url(&target),
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("WARN"), "{}", stderr(&out));
}

#[test]
fn dash_means_stdin_for_write_and_stdout_for_read() {
    let target = target(false);
    let url = url(&target);
    let dir = TempDir::new("ctl-dash").unwrap();
    let data: Vec<u8> = (0..8192).map(|i| (i % 253) as u8).collect();
    let mut write = ctl_command(&["write", &url, "--lba", "4", "--in", "-"]);
    write
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = write.spawn().unwrap();
    child.stdin.take().unwrap().write_all(&data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "write --in -: {}", stderr(&out));

    let mut read = ctl_command(&["read", &url, "--lba", "4", "--blocks", "16", "--out", "-"]);
    read.current_dir(dir.path());
    let out = run(read);
    assert!(out.status.success(), "read --out -: {}", stderr(&out));
    assert!(out.stdout == data, "stdout holds exactly the blocks read");
    assert!(!dir.join("-").exists(), "a file named '-' was written");
}

fn logs_in(mut command: Command) -> Result<(), String> {
    command.env_remove("RUST_LOG");
    let out = run(command);
    if out.status.success() {
        Ok(())
    } else {
        Err(stderr(&out))
    }
}

#[test]
fn chap_secrets_come_from_libiscsis_environment_or_a_file() {
    let target = target(true);
    let url = url(&target);
    let dir = TempDir::new("ctl-secrets").unwrap();

    let mut env = ctl_command(&["login", &url]);
    env.env("LIBISCSI_CHAP_USERNAME", "alice")
        .env("LIBISCSI_CHAP_PASSWORD", SECRET);
    logs_in(env).expect("secret from the environment");

    let file = dir.join("secret");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let file = file.display().to_string();
    let from_file = ctl_command(&[
        "login",
        &url,
        "--chap-user",
        "alice",
        "--chap-secret-file",
        &file,
    ]);
    logs_in(from_file).expect("secret from a file");

    let mut wrong = ctl_command(&["login", &url]);
    wrong
        .env("LIBISCSI_CHAP_USERNAME", "alice")
        .env("LIBISCSI_CHAP_PASSWORD", "not-the-secret!");
    let error = logs_in(wrong).unwrap_err();
    assert!(error.contains("authentication failure"), "{error}");

    let mut short = ctl_command(&["login", &url]);
    short
        .env("LIBISCSI_CHAP_USERNAME", "alice")
        .env("LIBISCSI_CHAP_PASSWORD", "short");
    let error = logs_in(short).unwrap_err();
    assert!(
        error.contains("RFC 7143 section 12.1.3 asks for at least 12"),
        "{error}"
    );
}

#[test]
fn the_gateway_takes_its_chap_secret_from_a_file() {
    let dir = TempDir::new("gateway-secret-file").unwrap();
    let file = dir.join("secret");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let file = file.display().to_string();
    let portal = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let args = [
        "--iqn",
        IQN,
        "--lun",
        "ram:4M",
        "--chap-user",
        "alice",
        "--chap-secret-file",
        &file,
    ];
    let gateway = GatewayProcess::start_with_args(portal, &args, &dir.join("log")).unwrap();
    let url = format!("iscsi://{}/{IQN}/0", gateway.portal());
    let mut env = ctl_command(&["login", &url]);
    env.env("LIBISCSI_CHAP_USERNAME", "alice")
        .env("LIBISCSI_CHAP_PASSWORD", SECRET);
    logs_in(env).expect("login with the secret the gateway read from its file");
    assert!(
        !gateway.full_log().contains(SECRET),
        "the secret in the log"
    );
}

#[test]
fn iscsi_bench_takes_the_chap_secret_from_libiscsis_environment() {
    let target = target(true);
    let job = |secret: Option<&str>| {
        let mut command = Command::new(workspace_binary("bench", "iscsi-bench"));
        command.args([
            "--name=r",
            &format!("--filename={}", url(&target)),
            "--rw=read",
            "--bs=4k",
            "--size=64k",
        ]);
        command.env("LIBISCSI_CHAP_USERNAME", "alice");
        match secret {
            Some(secret) => command.env("LIBISCSI_CHAP_PASSWORD", secret),
            None => command.env_remove("LIBISCSI_CHAP_PASSWORD"),
        };
        run(command)
    };
    let out = job(Some(SECRET));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = job(None);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("LIBISCSI_CHAP_PASSWORD"),
        "{}",
        stderr(&out)
    );
}
