//! `iscsi-ctl gateway --socket SOCKET ...`: the control plane's client as the tests that
//! drive a running `iscsi-gateway` use it.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::{run_command, workspace_binary};

/// The longest one control-plane command may take (a loaded machine, a durable commit).
const CTL_TIMEOUT: Duration = Duration::from_secs(60);

/// `iscsi-ctl gateway --socket SOCKET ARGS...`, whatever its exit status.
pub fn ctl(socket: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(workspace_binary("tools", "iscsi-ctl"));
    command
        .arg("gateway")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("RUST_LOG");
    run_command(command, CTL_TIMEOUT)
}

/// [`ctl`] that must succeed; its stdout.
pub fn ctl_ok(socket: &Path, args: &[&str]) -> String {
    let output = ctl(socket, args);
    assert!(
        output.status.success(),
        "iscsi-ctl gateway {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// [`ctl_ok`] with `--json`; the result.
pub fn ctl_json(socket: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ctl_ok(socket, &all)).expect("--json prints JSON")
}
