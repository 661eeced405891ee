//! What the bench crate's integration tests share: the tests crate's rule for a missing
//! tool (`system_tests::require_tools!`, which this crate cannot depend on: the tests crate
//! depends on it), skipped loudly on a developer machine, a failure under CI.

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
