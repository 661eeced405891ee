//! The agent (`iscsi-bench --server`): takes one controller at a time, proves it knows
//! the shared token, runs the job it sends with a common start, and sends back its whole
//! results.
//!
//! One connection's life: hello and token check (refused: told why, closed) → `Job` →
//! job files written to a private directory and parsed as this host's command line
//! (errors go back as `Failed`) → every target opened and every job checked
//! ([`crate::run::run_gated`]'s gate) → `Armed` → clock probes answered → `Release` at
//! an instant of this host's clock: sleep to it, `Started` with the actual start → the
//! run, with a `Heartbeat` every `heartbeat_ms` and a watch for `Abort` or the
//! controller's loss (either stops the jobs at their next turn) → `Results`: the JSON
//! document with each job's recorder whole.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::conn::{self, Conn, ConnError};
use super::protocol::{self, JobFile, Message, PROTOCOL};
use crate::output::json::{self, Flavor};

/// How long a controller has to say hello and send the job.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most job files in one job, and their total size.
const MAX_JOB_FILES: usize = 64;
const MAX_JOB_FILES_BYTES: usize = 16 * 1024 * 1024;

/// Serves controllers one after another on `listener`; returns after `runs` runs when
/// given (a launcher's agent serves one), else never.
pub fn serve(listener: TcpListener, token: Vec<u8>, runs: Option<u32>) -> std::io::Result<()> {
    let mut served = 0u32;
    loop {
        let (stream, peer) = listener.accept()?;
        tracing::info!("controller connection from {peer}");
        match handle(stream, &token) {
            Ok(true) => served += 1,
            Ok(false) => {}
            Err(e) => eprintln!("iscsi-bench agent: connection from {peer}: {e}"),
        }
        if runs.is_some_and(|runs| served >= runs) {
            return Ok(());
        }
    }
}

/// One controller's connection; `Ok(true)` when a run took place.
fn handle(stream: TcpStream, token: &[u8]) -> Result<bool, String> {
    let never = || false;
    let mut conn = Conn::new(stream).map_err(|e| e.to_string())?;
    let nonce = conn::random_nonce().map_err(|e| format!("random nonce: {e}"))?;
    conn.send(&protocol::agent_hello(&nonce, &conn::host_name()))
        .map_err(|e| e.to_string())?;
    let hello = conn
        .recv(HANDSHAKE_TIMEOUT, &never)
        .map_err(|e| format!("handshake: {e}"))?;
    let version = match protocol::check_controller_hello(PROTOCOL, &hello, &nonce, token) {
        Ok(version) => version,
        Err(e) => {
            let _ = conn.send(&Message::Refused {
                reason: e.to_string(),
            });
            return Err(format!("refused: {e}"));
        }
    };
    conn.send(&Message::Accepted { version })
        .map_err(|e| e.to_string())?;
    conn.authenticated();
    let job = conn
        .recv(HANDSHAKE_TIMEOUT, &never)
        .map_err(|e| format!("waiting for the job: {e}"))?;
    let Message::Job {
        files,
        args,
        interval_ms,
        release_timeout_ms,
        heartbeat_ms,
        ..
    } = job
    else {
        return Err(format!("expected a job, got a \"{}\" message", job.kind()));
    };
    let dir = match JobDir::write(&files) {
        Ok(dir) => dir,
        Err(e) => {
            let _ = conn.send(&Message::Failed {
                stage: "job files".into(),
                error: e.clone(),
            });
            return Err(e);
        }
    };
    let mut all_args = args;
    all_args.extend(dir.paths.iter().map(|p| p.display().to_string()));
    let invocation = match crate::job::parse_command_line(&all_args) {
        Ok(invocation) if invocation.action == crate::job::Action::Run => invocation,
        Ok(_) => {
            let error = "the arguments ask for no run (help, version, parse-only...)".to_string();
            let _ = conn.send(&Message::Failed {
                stage: "parse".into(),
                error: error.clone(),
            });
            return Err(error);
        }
        Err(e) => {
            let error = dir.rename_in(&e.to_string(), &files);
            let _ = conn.send(&Message::Failed {
                stage: "parse".into(),
                error: error.clone(),
            });
            return Err(error);
        }
    };
    let mut tool = invocation.tool.clone();
    tool.interval_results = Some(Duration::from_millis(interval_ms.max(10)));
    tool.status_interval = None;
    tool.report_dir = None;
    tool.output = None;
    tool.eta = crate::job::Eta::Never;
    tool.json_histograms = true;
    run_armed(
        conn,
        &tool,
        &invocation.jobs,
        Duration::from_millis(release_timeout_ms.max(1000)),
        Duration::from_millis(heartbeat_ms.clamp(50, 60_000)),
    )
    .map(|()| true)
}

/// Runs the jobs behind the gate and sends the results.
fn run_armed(
    conn: Conn,
    tool: &crate::job::ToolOptions,
    jobs: &[crate::job::JobSpec],
    release_timeout: Duration,
    heartbeat: Duration,
) -> Result<(), String> {
    let jobs_count = jobs.iter().map(|j| j.numjobs.max(1)).sum::<u32>();
    let conn = Arc::new(Mutex::new(conn));
    let running = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    crate::run::interrupt::reset();
    let mut watchers: Vec<std::thread::JoinHandle<()>> = Vec::new();
    let mut gate = || -> Result<u64, String> {
        let mut guard = conn
            .lock()
            .map_err(|_| "connection lock poisoned".to_string())?;
        guard
            .send(&Message::Armed { jobs: jobs_count })
            .map_err(|e| e.to_string())?;
        let never = || false;
        let start_at = loop {
            match guard.recv(release_timeout, &never) {
                Ok(Message::ClockProbe { seq }) => guard
                    .send(&Message::ClockReply {
                        seq,
                        agent_ns: conn::now_ns(),
                    })
                    .map_err(|e| e.to_string())?,
                Ok(Message::Release { start_at_ns }) => {
                    tracing::debug!(start_at_ns, now_ns = conn::now_ns(), "released");
                    // The jobs sleep to the instant themselves; this is when they will go.
                    guard
                        .send(&Message::Started {
                            start_ns: start_at_ns.max(conn::now_ns()),
                        })
                        .map_err(|e| e.to_string())?;
                    break start_at_ns;
                }
                Ok(Message::Abort { reason }) => {
                    return Err(format!("the controller aborted before the start: {reason}"))
                }
                Ok(other) => {
                    return Err(format!(
                        "expected a clock probe or the release, got \"{}\"",
                        other.kind()
                    ))
                }
                Err(e) => return Err(format!("waiting for the release: {e}")),
            }
        };
        drop(guard);
        running.store(true, Ordering::Relaxed);
        watchers.push(spawn_watch(Arc::clone(&conn), Arc::clone(&finished)));
        watchers.push(spawn_heartbeat(
            Arc::clone(&conn),
            Arc::clone(&finished),
            heartbeat,
        ));
        Ok(start_at)
    };
    let outcome = crate::run::run_gated(tool, jobs, &mut |_| {}, Some(&mut gate));
    let end_ns = conn::now_ns();
    finished.store(true, Ordering::Relaxed);
    for watcher in watchers {
        let _ = watcher.join();
    }
    let mut guard = conn
        .lock()
        .map_err(|_| "connection lock poisoned".to_string())?;
    match outcome {
        Ok(outcome) => {
            // The host's actual start: its first job's clock, after every job set up.
            let job_start_ns = outcome.job_starts_ns.iter().copied().min().unwrap_or(0);
            tracing::debug!(starts = ?outcome.job_starts_ns, "job clocks started");
            let mut report = outcome.report;
            report.portable = true;
            let document = serde_json::to_value(json::document(&report, Flavor::Json))
                .map_err(|e| e.to_string())?;
            guard
                .send(&Message::Results {
                    document,
                    end_ns,
                    job_start_ns,
                })
                .map_err(|e| format!("sending the results: {e}"))?;
            Ok(())
        }
        Err(e) => {
            let stage = if running.load(Ordering::Relaxed) {
                "run"
            } else {
                "arm"
            };
            let _ = guard.send(&Message::Failed {
                stage: stage.into(),
                error: e.to_string(),
            });
            Err(format!("{stage}: {e}"))
        }
    }
}

/// Watches the controller during the run: `Abort`, or the connection lost, stops the
/// jobs at their next turn (as SIGTERM would), so a lost controller never leaves load
/// running.
fn spawn_watch(conn: Arc<Mutex<Conn>>, finished: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        // The socket's reads happen here only while the run lasts; sends take the lock
        // briefly, so the watch holds it for one short read at a time.
        let stop = || finished.load(Ordering::Relaxed);
        while !stop() {
            let Ok(mut guard) = conn.lock() else { return };
            let got = guard.recv(Duration::from_millis(50), &stop);
            drop(guard);
            match got {
                Ok(Message::Abort { reason }) => {
                    eprintln!("iscsi-bench agent: the controller asked to stop: {reason}");
                    crate::run::interrupt::request(libc::SIGTERM);
                    return;
                }
                Ok(_) | Err(ConnError::Silent(_)) | Err(ConnError::Stopped) => {}
                Err(e) => {
                    eprintln!("iscsi-bench agent: lost the controller ({e}); stopping the jobs");
                    crate::run::interrupt::request(libc::SIGTERM);
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

fn spawn_heartbeat(
    conn: Arc<Mutex<Conn>>,
    finished: Arc<AtomicBool>,
    period: Duration,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut next = std::time::Instant::now() + period;
        while !finished.load(Ordering::Relaxed) {
            if std::time::Instant::now() >= next {
                let Ok(mut guard) = conn.lock() else { return };
                if guard.send(&Message::Heartbeat { ios: 0 }).is_err() {
                    return;
                }
                next += period;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

/// The job files of one run, in a private directory removed afterwards.
struct JobDir {
    dir: PathBuf,
    paths: Vec<PathBuf>,
}

impl JobDir {
    fn write(files: &[JobFile]) -> Result<JobDir, String> {
        if files.len() > MAX_JOB_FILES {
            return Err(format!("more than {MAX_JOB_FILES} job files"));
        }
        if files.iter().map(|f| f.text.len()).sum::<usize>() > MAX_JOB_FILES_BYTES {
            return Err(format!("job files over {MAX_JOB_FILES_BYTES} bytes"));
        }
        static RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "iscsi-bench-agent-{}-{}",
            std::process::id(),
            RUN.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut paths = Vec::new();
        for (i, file) in files.iter().enumerate() {
            // Our own names: the controller's paths mean nothing here.
            let path = dir.join(format!("job{i}.fio"));
            std::fs::write(&path, &file.text).map_err(|e| format!("{}: {e}", path.display()))?;
            paths.push(path);
        }
        Ok(JobDir { dir, paths })
    }

    /// An error's text with our file names replaced by the controller's.
    fn rename_in(&self, text: &str, files: &[JobFile]) -> String {
        let mut text = text.to_string();
        for (path, file) in self.paths.iter().zip(files) {
            text = text.replace(&path.display().to_string(), &file.name);
        }
        text
    }
}

impl Drop for JobDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
