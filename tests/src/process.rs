//! Processes, tools, ports and scratch directories: the plumbing every peer harness shares.
//!
//! Everything here is bounded: a tool run has a deadline and is killed when it passes, a
//! daemon is stopped with SIGTERM and then SIGKILL after a grace period, and a scratch
//! directory is removed when its owner is dropped.

use std::fs;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;
use std::thread;
use std::time::{Duration, Instant};

/// Directories searched after `$PATH`: the peers' daemons live in `sbin`, which is not on a
/// normal user's `$PATH`.
const SBIN_DIRS: [&str; 3] = ["/usr/sbin", "/sbin", "/usr/local/sbin"];

/// How often bounded waits poll.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// A free TCP port on 127.0.0.1: bind port 0, read what the kernel chose, close.
///
/// Another process may take the port between this call and its use; the peer harnesses retry
/// with a new port when their daemon fails to listen.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .expect("binding 127.0.0.1:0 must work on any machine that runs these tests");
    listener
        .local_addr()
        .expect("a bound socket has a local address")
        .port()
}

/// The full path of an executable named `name`: `$PATH` first, then the `sbin` directories.
/// A name containing `/` is taken as a path.
pub fn tool_path(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let path = PathBuf::from(name);
        return is_executable(&path).then_some(path);
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Whether a tool is installed (see [`tool_path`]).
pub fn tool_available(name: &str) -> bool {
    tool_path(name).is_some()
}

/// Whether we run under CI (`CI=true`, as GitHub, GitLab and our `.ci/run` set it). Under CI a
/// missing peer tool is a failure, never a skip: a green run must mean the peers were tested.
pub fn running_in_ci() -> bool {
    std::env::var("CI")
        .map(|value| matches!(value.to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
        .unwrap_or(false)
}

/// What to do about missing tools; separated from the environment so it can be tested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolVerdict {
    /// Every tool is there: run the test.
    Run,
    /// Tools are missing on a developer machine: skip, loudly.
    Skip(String),
    /// Tools are missing under CI: fail.
    Fail(String),
}

/// Decides [`ToolVerdict`] from the missing tools and whether we are under CI.
pub fn tool_verdict(missing: &[&str], in_ci: bool) -> ToolVerdict {
    if missing.is_empty() {
        return ToolVerdict::Run;
    }
    let list = missing.join(", ");
    if in_ci {
        ToolVerdict::Fail(format!(
            "peer tools missing under CI: {list} (run scripts/install-deps.sh)"
        ))
    } else {
        ToolVerdict::Skip(format!(
            "SKIPPED: peer tools missing: {list} (install with scripts/install-deps.sh; under CI=true this fails)"
        ))
    }
}

/// Returns `true` when every tool is installed. Otherwise prints a loud skip notice and
/// returns `false`, or panics when running under CI. Use through [`require_tools!`](crate::require_tools!).
pub fn require_tools(names: &[&str]) -> bool {
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|name| !tool_available(name))
        .collect();
    match tool_verdict(&missing, running_in_ci()) {
        ToolVerdict::Run => true,
        ToolVerdict::Skip(notice) => {
            eprintln!("\n!!!!!!!! {notice} !!!!!!!!\n");
            false
        }
        ToolVerdict::Fail(reason) => panic!("{reason}"),
    }
}

/// The same rule for a facility that is not a tool (a device node, a privilege, a kernel
/// feature): `true` when `present`; otherwise a loud skip notice and `false`, or a panic
/// under CI. `what` names the facility and how to get it.
pub fn require_facility(what: &str, present: bool) -> bool {
    let missing: &[&str] = if present { &[] } else { &[what] };
    match tool_verdict(missing, running_in_ci()) {
        ToolVerdict::Run => true,
        ToolVerdict::Skip(notice) => {
            eprintln!("\n!!!!!!!! {notice} !!!!!!!!\n");
            false
        }
        ToolVerdict::Fail(reason) => panic!("{reason}"),
    }
}

/// Skips the calling test (returns from it) when a tool is missing on a developer machine;
/// fails it when `CI=true`.
///
/// ```no_run
/// fn talks_to_tgt() {
///     system_tests::require_tools!("tgtd", "tgtadm", "iscsi-ls");
///     // ...
/// }
/// ```
#[macro_export]
macro_rules! require_tools {
    ($($tool:expr),+ $(,)?) => {
        if !$crate::require_tools(&[$($tool),+]) {
            return;
        }
    };
}

/// Runs `cmd args...` with stdin closed, collecting its output; kills it (and anything it
/// started in its process group) when `timeout` passes. A tool that is not installed yields
/// exit status 127 and a message on stderr, as a shell would.
pub fn run_tool(cmd: &str, args: &[&str], timeout: Duration) -> Output {
    let mut command = match tool_path(cmd) {
        Some(path) => Command::new(path),
        None => return not_found(cmd),
    };
    command.args(args);
    run_command(command, timeout)
}

fn not_found(cmd: &str) -> Output {
    Output {
        status: ExitStatus::from_raw(127 << 8),
        stdout: Vec::new(),
        stderr: format!("{cmd}: not found on PATH nor in /usr/sbin, /sbin\n").into_bytes(),
    }
}

/// [`run_tool`] for a prepared [`Command`] (extra environment, working directory).
pub fn run_command(mut command: Command, timeout: Duration) -> Output {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    die_with_parent(&mut command);
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            return Output {
                status: ExitStatus::from_raw(127 << 8),
                stdout: Vec::new(),
                stderr: format!("{program}: cannot start: {error}\n").into_bytes(),
            }
        }
    };
    // Read both pipes on their own threads so a chatty tool cannot block on a full pipe.
    let stdout_reader = child.stdout.take().map(spawn_reader);
    let stderr_reader = child.stderr.take().map(spawn_reader);
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                // The child leads its own process group: kill the group, then reap the child.
                send_signal(-(child.id() as i32), libc::SIGKILL);
                break child.wait().unwrap_or(ExitStatus::from_raw(libc::SIGKILL));
            }
            Ok(None) => thread::sleep(POLL_INTERVAL),
            Err(_) => break child.wait().unwrap_or(ExitStatus::from_raw(libc::SIGKILL)),
        }
    };
    let stdout = stdout_reader.map(join_reader).unwrap_or_default();
    let mut stderr = stderr_reader.map(join_reader).unwrap_or_default();
    if timed_out {
        stderr.extend_from_slice(
            format!("\n[system-tests: {program} killed after {timeout:?}]\n").as_bytes(),
        );
    }
    Output {
        status,
        stdout,
        stderr,
    }
}

fn spawn_reader<R: Read + Send + 'static>(mut pipe: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        // A read error ends the capture; what was read so far is still worth showing.
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

fn join_reader(handle: thread::JoinHandle<Vec<u8>>) -> Vec<u8> {
    handle.join().unwrap_or_default()
}

/// Output of a tool run as one readable string, for error messages.
pub fn describe_output(output: &Output) -> String {
    format!(
        "status {}; stdout: {}; stderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout).trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    )
}

/// Sends `signal` to `pid` (a negative pid names a process group). Errors (the process is
/// already gone) are ignored: every caller follows up with a wait.
pub(crate) fn send_signal(pid: i32, signal: i32) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; the worst it can do
    // is signal the wrong process, which the callers avoid by only naming children they
    // spawned and have not yet reaped (so their pid cannot have been reused).
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Starts a long-running daemon: its own process group, stdin closed, stdout and stderr into
/// `log`, and SIGKILL from the kernel if the thread that started it dies (so a crashed test
/// run leaves no daemon behind; see [`crate::Tgt`] for what that means for callers).
pub(crate) fn spawn_daemon(mut command: Command, log: &Path) -> Result<Child, String> {
    let log_file = fs::File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
    let log_clone = log_file
        .try_clone()
        .map_err(|e| format!("dup log file: {e}"))?;
    command
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_clone)
        .process_group(0);
    die_with_parent(&mut command);
    let program = command.get_program().to_string_lossy().into_owned();
    command
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))
}

/// Has the kernel SIGKILL the child when the thread that spawned it exits, so a test process
/// killed mid-run leaves no daemon or hung tool behind (`iscsi-ls` against istgt would loop
/// forever).
pub(crate) fn die_with_parent(command: &mut Command) {
    let parent_pid = std::process::id() as i32;
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2),
    // getppid(2) and _exit(2), which are async-signal-safe; it allocates nothing and touches no
    // lock.
    unsafe {
        command.pre_exec(move || {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            );
            // The parent may have died before prctl took effect: then nobody would reap us.
            if libc::getppid() != parent_pid {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Stops a child: SIGTERM, up to `grace` for it to exit, then SIGKILL; always reaps it.
pub(crate) fn stop_child(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    send_signal(child.id() as i32, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(POLL_INTERVAL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits until `portal` accepts a TCP connection, the daemon exits, or `timeout` passes.
pub(crate) fn wait_for_portal(
    child: &mut Child,
    portal: SocketAddr,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "daemon exited before listening on {portal}: {status}"
            ));
        }
        if TcpStream::connect_timeout(&portal, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{portal} did not accept connections within {timeout:?}"
            ));
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Waits until `path` exists, the daemon exits, or `timeout` passes.
pub(crate) fn wait_for_path(
    child: &mut Child,
    path: &Path,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if path.exists() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "daemon exited before creating {}: {status}",
                path.display()
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} did not appear within {timeout:?}",
                path.display()
            ));
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// The last lines of a daemon's log, for error messages.
pub(crate) fn log_tail(log: &Path) -> String {
    const TAIL_LINES: usize = 20;
    match fs::read(log) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
        }
        Err(error) => format!("(no log at {}: {error})", log.display()),
    }
}

/// A scratch directory under [`std::env::temp_dir`], unique per process and call
/// (`system-tests-<pid>-<counter>-<tag>`), removed with everything in it on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh directory; `tag` only makes it easier to recognise.
    pub fn new(tag: &str) -> Result<TempDir, String> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        static SWEEP: Once = Once::new();
        SWEEP.call_once(remove_dirs_of_dead_runs);
        let serial = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "system-tests-{}-{serial}-{tag}",
            std::process::id()
        ));
        // A leftover from a crashed run with a recycled pid would hold stale files.
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).map_err(|e| format!("create {}: {e}", path.display()))?;
        Ok(TempDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join<P: AsRef<Path>>(&self, name: P) -> PathBuf {
        self.path.join(name)
    }

    /// Gives up ownership: the directory stays on disk, renamed to `kept-system-tests-…` so
    /// later runs do not sweep it, and its new path is returned.
    pub fn keep(self) -> PathBuf {
        let mut this = std::mem::ManuallyDrop::new(self);
        let path = std::mem::take(&mut this.path);
        let Some(name) = path.file_name() else {
            return path;
        };
        let mut kept_name = std::ffi::OsString::from("kept-");
        kept_name.push(name);
        let kept = path.with_file_name(kept_name);
        match fs::rename(&path, &kept) {
            Ok(()) => kept,
            Err(_) => path,
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Removes `system-tests-<pid>-…` directories whose process is gone: a test run killed
/// with SIGKILL cannot clean up after itself (its daemons die with it, see
/// [`spawn_daemon`], but their directories stay).
fn remove_dirs_of_dead_runs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|name| name.strip_prefix("system-tests-"))
        else {
            continue;
        };
        let Some(Ok(pid)) = rest.split('-').next().map(str::parse::<u32>) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Creates a sparse file of `size_bytes` (no blocks allocated until written).
pub(crate) fn create_sparse_file(path: &Path, size_bytes: u64) -> Result<(), String> {
    let file = fs::File::create(path).map_err(|e| format!("create {}: {e}", path.display()))?;
    file.set_len(size_bytes)
        .map_err(|e| format!("size {} to {size_bytes} bytes: {e}", path.display()))
}

/// Whether a value can be passed through a config file or a command line untouched.
pub(crate) fn is_plain_token(value: &str) -> bool {
    !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\'' | '\\' | '#'))
}

/// The binary `bin` of workspace package `package`, built once per test process (release
/// when the tests themselves are a release build).
pub fn workspace_binary(package: &str, bin: &str) -> PathBuf {
    build_workspace_binary(package, bin, !cfg!(debug_assertions))
}

/// [`workspace_binary`] built with optimisations whatever the tests' profile: for tests that
/// compare the speed of our tool with another.
pub fn workspace_binary_release(package: &str, bin: &str) -> PathBuf {
    build_workspace_binary(package, bin, true)
}

/// fio 3.42 built with its libiscsi engine, the anchor the benchmarks run beside ours:
/// `$FIO_ANCHOR`, else `../shared/anchors/fio` beside the workspace; `None` where it is
/// not there or does not run.
pub fn fio_anchor() -> Option<PathBuf> {
    let path = std::env::var_os("FIO_ANCHOR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/anchors/fio")
        });
    Command::new(&path)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        .then_some(path)
}

fn build_workspace_binary(package: &str, bin: &str, release: bool) -> PathBuf {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let key = format!("{bin}:{release}");
    if let Some(path) = built.get(&key) {
        return path.clone();
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(&workspace)
        .args(["build", "-q", "-p", package, "--bin", bin]);
    if release {
        build.arg("--release");
    }
    let status = build.status().expect("run cargo build");
    assert!(status.success(), "building {bin} failed");
    let target_dir = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace.join("target"));
    let path = target_dir
        .join(if release { "release" } else { "debug" })
        .join(bin);
    built.insert(key, path.clone());
    path
}
