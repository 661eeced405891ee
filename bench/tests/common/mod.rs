//! What the bench crate's integration tests share: the tests crate's rule for a missing
//! tool (`system_tests::require_tools!`, which this crate cannot depend on: the tests crate
//! depends on it), skipped loudly on a developer machine, a failure under CI.

pub mod local_jobs;

/// `true` when `present`; otherwise prints a loud `SKIPPED:` notice naming `tool` and
/// returns `false`, or panics when `CI` is set (`true`, `1`, `yes`): `scripts/install-deps.sh`
/// installs the anchors, so a green CI run must mean they were used.
#[allow(dead_code)] // not every test binary needs a tool
pub fn require_tool(tool: &str, present: bool) -> bool {
    if present {
        return true;
    }
    let in_ci = std::env::var("CI")
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
        .unwrap_or(false);
    if in_ci {
        panic!("tool missing under CI: {tool} (run scripts/install-deps.sh)");
    }
    eprintln!(
        "\n!!!!!!!! SKIPPED: {tool} is not installed (install with scripts/install-deps.sh; under CI=true this fails) !!!!!!!!\n"
    );
    false
}

/// A scratch directory under the system's temporary directory, named for the test binary
/// (`prefix`), the process and `name`; emptied first and removed on drop.
#[allow(dead_code)] // not every test binary uses it
pub struct ScratchDir(std::path::PathBuf);

#[allow(dead_code)]
impl ScratchDir {
    pub fn new(prefix: &str, name: &str) -> ScratchDir {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        ScratchDir(dir)
    }

    pub fn join(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A finished process's status and output, for an assertion's message.
#[allow(dead_code)]
pub fn describe(out: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A finished process's standard output as text.
#[allow(dead_code)]
pub fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The first JSON document on a run's standard output: fio and ours may print notes before
/// it (and fio after it), and both print the document from a line that opens with `{`.
#[allow(dead_code)]
pub fn json_of(out: &std::process::Output) -> serde_json::Value {
    let text = stdout(out);
    let start = text
        .find("{\n")
        .or_else(|| text.find('{'))
        .unwrap_or_else(|| panic!("no JSON\n{}", describe(out)));
    serde_json::Deserializer::from_str(&text[start..])
        .into_iter()
        .next()
        .expect("a JSON document")
        .unwrap_or_else(|e| panic!("{e}\n{}", describe(out)))
}

/// The sysfs directory (`/sys/dev/block/MAJ:MIN`, resolved) of the block device holding
/// `path` (glibc's major/minor of its `st_dev`); `None` on tmpfs and other device-less
/// file systems.
#[allow(dead_code)]
pub fn block_device_dir(path: &std::path::Path) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff);
    if major == 0 {
        return None;
    }
    std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()
}

/// Whether `program --version` runs.
#[allow(dead_code)]
pub fn runs(program: &std::path::Path) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `true` when `tool` runs; otherwise as [`require_tool`].
#[allow(dead_code)]
pub fn tool_present(tool: &str) -> bool {
    require_tool(tool, runs(std::path::Path::new(tool)))
}

/// Where fio 3.42, the anchor, is kept: `$FIO_ANCHOR`, else `../shared/anchors/fio` beside
/// the workspace (as the tests crate's `fio_anchor`).
#[allow(dead_code)]
pub fn fio_anchor_path() -> std::path::PathBuf {
    std::env::var_os("FIO_ANCHOR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/anchors/fio")
        })
}

/// fio 3.42, for what Debian's 3.33 gets wrong or lacks; `None` where it is not built.
#[allow(dead_code)]
pub fn fio_anchor() -> Option<std::path::PathBuf> {
    let path = fio_anchor_path();
    runs(&path).then_some(path)
}

/// The fio a comparison runs: the anchor where it is built, else the `fio` on the PATH.
#[allow(dead_code)]
pub fn fio_or_installed() -> std::path::PathBuf {
    fio_anchor().unwrap_or_else(|| std::path::PathBuf::from("fio"))
}

/// [`fio_or_installed`] where it runs; otherwise as [`require_tool`], and `None`.
#[allow(dead_code)]
pub fn fio() -> Option<std::path::PathBuf> {
    let path = fio_or_installed();
    require_tool("fio", runs(&path)).then_some(path)
}

/// A target of our own with two 4 MiB RAM LUNs (0 and 1), for filename lists.
#[allow(dead_code)]
pub fn two_lun_target() -> (gateway::server::RunningTarget, [String; 2]) {
    use gateway::server::{TargetConfig, TargetNodeConfig};
    let iqn = "iqn.2026-11.test:two-luns";
    let node = TargetNodeConfig::new(
        iqn,
        vec![(0, "ram:4M".to_string()), (1, "ram:4M".to_string())],
    );
    let mut config = TargetConfig::new(
        std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)),
        node,
    );
    config.threads = Some(1);
    let target = gateway::server::start(config).expect("target starts");
    let portal = target.addrs()[0];
    // fio's libiscsi spelling: every colon of a URL escaped, URLs separated by a bare one.
    let url = |lun: u32| {
        format!(
            "iscsi\\://127.0.0.1\\:{}/{}/{lun}",
            portal.port(),
            iqn.replace(':', "\\:")
        )
    };
    (target, [url(0), url(1)])
}
