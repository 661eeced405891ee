//! The control plane's Unix socket: created mode 0600 (only the gateway's user can
//! connect; a peer of another uid is also refused by its credentials, SO_PEERCRED), never
//! over a live socket (a second gateway on the same path is refused), a stale one from a
//! killed gateway removed. One thread per client, at most [`MAX_CLIENTS`] at once; each
//! request line is bounded ([`super::rpc::MAX_REQUEST_BYTES`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use super::pace;
use super::phases::{self, Phase};
use super::priority::{self, ControlPriority, NormalLane, ThreadClass};
use super::rpc::{self, ErrorCode, Id, RpcError, MAX_REQUEST_BYTES};
use super::{Control, ControlError};

/// Clients served at once; more are answered with an error and closed.
pub const MAX_CLIENTS: usize = 16;
/// A client that sends nothing this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The listening socket; dropping it removes the socket file.
pub struct ControlSocket {
    path: PathBuf,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn socket_error(path: &Path, reason: impl Into<String>) -> ControlError {
    ControlError::Socket {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// Binds `path` (mode 0600), refusing a path that is live or not a socket.
pub fn bind(path: &Path) -> Result<(UnixListener, ControlSocket), ControlError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(socket_error(
                path,
                "exists and is not a socket; not touched",
            ))
        }
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => {
                return Err(socket_error(
                    path,
                    "another gateway is listening on it (stop it, or give another path)",
                ))
            }
            Err(_) => {
                tracing::info!(path = %path.display(), "removing the stale control socket of a gateway that is gone");
                std::fs::remove_file(path)
                    .map_err(|e| socket_error(path, format!("removing the stale socket: {e}")))?;
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(socket_error(path, e.to_string())),
    }
    // The socket is made with mode 0600 from the start (no window in which another
    // user could connect before a chmod): the umask is narrowed around bind(2).
    // SAFETY: umask(2) only swaps the process's file mode mask.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let listener = bound.map_err(|e| socket_error(path, e.to_string()))?;
    Ok((
        listener,
        ControlSocket {
            path: path.to_path_buf(),
        },
    ))
}

/// Serves `control` on `listener` from a thread of its own, until the process ends. The
/// accept thread and each client's reader keep the caller's class; each client's calls
/// run on a worker thread at `priority` (see [`serve_client`]).
pub fn serve(
    listener: UnixListener,
    control: Arc<Control>,
    priority: ControlPriority,
) -> std::io::Result<()> {
    let clients = Arc::new(AtomicUsize::new(0));
    let lowered = match priority {
        ControlPriority::Normal => None,
        _ => {
            let can_raise = priority::can_raise_from(priority);
            if !can_raise {
                tracing::warn!(%priority, "control calls cannot be raised back to the normal priority (no CAP_SYS_NICE): one that waits for the CPU is taken over only before it starts");
            }
            Some(Lowered {
                priority,
                lane: NormalLane::start(Arc::clone(&control))?,
                can_raise,
            })
        }
    };
    std::thread::Builder::new()
        .name("iscsi-control".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let mut stream = match stream {
                    Ok(stream) => stream,
                    Err(error) => {
                        tracing::warn!(%error, "control socket accept failed");
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                };
                if let Err(reason) = check_peer(&stream) {
                    tracing::warn!(reason, "control connection refused");
                    continue;
                }
                if clients.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
                    clients.fetch_sub(1, Ordering::AcqRel);
                    let error = RpcError::new(
                        ErrorCode::Refused,
                        format!("{MAX_CLIENTS} control clients connected already; try again"),
                    );
                    let _ = stream.write_all(&rpc::encode_response(&Id::Null, &Err(error)));
                    continue;
                }
                let control = Arc::clone(&control);
                let count = Arc::clone(&clients);
                let lowered = lowered.clone();
                let spawned = std::thread::Builder::new()
                    .name("iscsi-control-client".into())
                    .spawn(move || {
                        serve_client(stream, control, lowered);
                        count.fetch_sub(1, Ordering::AcqRel);
                    });
                if spawned.is_err() {
                    clients.fetch_sub(1, Ordering::AcqRel);
                }
            }
        })
        .map(|_| ())
}

/// Only our own user (or root) may drive the gateway, whatever the socket's mode became.
fn check_peer(stream: &UnixStream) -> Result<(), String> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, which is that large.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(stream),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(format!(
            "reading the peer's credentials: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: geteuid has no arguments and cannot fail.
    let ours = unsafe { libc::geteuid() };
    if cred.uid != ours && cred.uid != 0 {
        return Err(format!(
            "peer uid {} is not the gateway's ({ours})",
            cred.uid
        ));
    }
    Ok(())
}

/// A control client's calls wait at most this long for a lowered worker. Then a call the
/// worker has not started is run by the reader itself, and one it has started is raised to
/// the reader's class until it is answered (when the process may raise a thread: root or
/// CAP_SYS_NICE). Beside event loops that leave CPU time a call rarely waits this long;
/// beside a load that keeps every CPU busy, `idle` would otherwise starve it for as long
/// as that load lasts (a bind of 200 volumes waited 19.5 s behind 4 busy threads).
pub const RESCUE_AFTER: Duration = Duration::from_millis(10);

/// How calls run when the control threads are lowered (`--control-priority` other than
/// `normal`).
#[derive(Clone)]
struct Lowered {
    priority: ControlPriority,
    /// Runs the calls that may start I/O threads (see `priority`'s module doc).
    lane: NormalLane,
    /// Whether a worker can be raised back (CAP_SYS_NICE).
    can_raise: bool,
}

/// Who runs each request: the number of the last request claimed. The worker claims a
/// request when it starts it, the reader when it takes it over; the first one runs it and
/// the other passes (requests are numbered from 1 and claimed in order).
struct Claims(AtomicU64);

impl Claims {
    fn claim(&self, number: u64) -> bool {
        self.0
            .compare_exchange(number - 1, number, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// A client's thread that runs its calls at the lowered class, one at a time, for the
/// reader that hands them over (see [`serve_client`]).
struct Worker {
    jobs: mpsc::Sender<(u64, Arc<[u8]>)>,
    answers: mpsc::Receiver<Option<Vec<u8>>>,
    claims: Arc<Claims>,
    tid: libc::pid_t,
    /// The reader's class, which a rescued call runs in; `None` when the process may not
    /// raise a thread (no CAP_SYS_NICE).
    raise_to: Option<ThreadClass>,
    lowered: Lowered,
    control: Arc<Control>,
    number: u64,
}

impl Worker {
    fn start(control: &Arc<Control>, lowered: &Lowered) -> std::io::Result<Worker> {
        let claims = Arc::new(Claims(AtomicU64::new(0)));
        let (jobs, job_queue) = mpsc::channel::<(u64, Arc<[u8]>)>();
        let (answer_sender, answers) = mpsc::channel();
        let (tid_sender, tid) = mpsc::channel();
        {
            let control = Arc::clone(control);
            let claims = Arc::clone(&claims);
            let lowered = lowered.clone();
            std::thread::Builder::new()
                .name("iscsi-control-work".into())
                .spawn(move || {
                    let _ = tid_sender.send(priority::current_tid());
                    let priority = lowered.priority;
                    if let Err(error) = priority.apply_to_current_thread() {
                        tracing::warn!(%error, %priority, "a control worker keeps the normal priority");
                    }
                    for (number, line) in job_queue {
                        if claims.claim(number)
                            && answer_sender
                                .send(answer(&line, &control, Some(&lowered.lane)))
                                .is_err()
                        {
                            return;
                        }
                    }
                })?;
        }
        let tid = tid
            .recv()
            .map_err(|_| std::io::Error::other("the control worker ended at its start"))?;
        Ok(Worker {
            jobs,
            answers,
            claims,
            tid,
            raise_to: if lowered.can_raise {
                ThreadClass::of_current().ok()
            } else {
                None
            },
            lowered: lowered.clone(),
            control: Arc::clone(control),
            number: 0,
        })
    }

    /// Runs `request` on the worker and returns its answer (none for a notification);
    /// `None` when the worker is gone (it panicked). A call not answered within
    /// [`RESCUE_AFTER`] is raised or taken over (see [`RESCUE_AFTER`]).
    fn run(&mut self, request: &[u8]) -> Option<Option<Vec<u8>>> {
        self.number += 1;
        let request: Arc<[u8]> = Arc::from(request);
        self.jobs.send((self.number, Arc::clone(&request))).ok()?;
        match self.answers.recv_timeout(RESCUE_AFTER) {
            Ok(response) => return Some(response),
            Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if self.claims.claim(self.number) {
            tracing::debug!("a control call waited {RESCUE_AFTER:?} for its worker to start it; run by its reader");
            return Some(answer(&request, &self.control, Some(&self.lowered.lane)));
        }
        let raised = self
            .raise_to
            .is_some_and(|class| class.set(self.tid).is_ok());
        if raised {
            tracing::debug!(
                "a control call ran {RESCUE_AFTER:?} on its lowered worker; raised until answered"
            );
        }
        let response = self.answers.recv().ok();
        if raised {
            // Lowering back needs no privilege.
            let _ = self.lowered.priority.apply_to(self.tid);
        }
        response
    }
}

/// Reads request lines and answers each until the client closes.
///
/// With a lowered class, the calls run on a [`Worker`] of this client, which lowers
/// itself; this thread keeps the caller's class, reads the requests, writes the answers
/// and sees that no call waits for the CPU longer than [`RESCUE_AFTER`]. Only the
/// worker's CPU time is lowered: the reads and writes here are a few microseconds a call.
/// With `normal`, this thread runs the calls itself.
fn serve_client(stream: UnixStream, control: Arc<Control>, lowered: Option<Lowered>) {
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut worker = match lowered.as_ref().map(|l| Worker::start(&control, l)) {
        None => None,
        Some(Ok(worker)) => Some(worker),
        Some(Err(error)) => {
            tracing::warn!(%error, "cannot start a control worker thread; client closed");
            return;
        }
    };
    // One byte more than a request may be, to tell "too long" from "just fits".
    let mut reader = BufReader::new(stream);
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_REQUEST_BYTES as u64 + 2)
            .read_until(b'\n', &mut line);
        match read {
            Ok(0) => return,
            Ok(_) => {}
            Err(_) => return,
        }
        let complete = line.last() == Some(&b'\n');
        if complete {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        } else if line.len() > MAX_REQUEST_BYTES {
            let error = RpcError::new(
                ErrorCode::InvalidRequest,
                format!("request longer than {MAX_REQUEST_BYTES} bytes; connection closed"),
            );
            let _ = writer.write_all(&rpc::encode_response(&Id::Null, &Err(error)));
            return;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            if complete {
                continue;
            }
            return;
        }
        let response = match worker.as_mut() {
            None => answer(&line, &control, None),
            Some(worker) => match worker.run(&line) {
                Some(response) => response,
                None => return,
            },
        };
        if let Some(response) = response {
            if writer.write_all(&response).is_err() {
                return;
            }
        }
        if !complete {
            return;
        }
    }
}

/// Runs one request line and returns its answer (none for a notification).
fn answer(line: &[u8], control: &Control, lane: Option<&NormalLane>) -> Option<Vec<u8>> {
    phases::start();
    pace::start();
    let mut method = None;
    let response = match rpc::parse_request(line) {
        Ok(request) => {
            method = phases::running().then(|| phase_label(&request.call));
            phases::mark(Phase::Parse);
            pace::tick();
            let outcome = match lane {
                Some(lane) if priority::starts_io_threads(&request.call) => {
                    lane.handle(request.call)
                }
                _ => control.handle(request.call),
            };
            pace::tick();
            request.id.map(|id| rpc::encode_response(&id, &outcome))
        }
        Err(refusal) => Some(rpc::encode_response(&refusal.id, &Err(refusal.error))),
    };
    pace::tick();
    phases::finish(method.as_deref().unwrap_or("(refused)"));
    response
}

/// The name a call's phases are logged under: its method, and `volume_create+attach`
/// for the one-call create and attach (`volume_attach`).
fn phase_label(call: &rpc::Call) -> String {
    let (method, params) = call.to_method_params();
    if method == "volume_create" && params.get("attach").is_some() {
        return "volume_create+attach".into();
    }
    method
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request is claimed once, by whichever of the worker and the reader comes first,
    /// and only in order.
    #[test]
    fn a_request_is_claimed_once_and_in_order() {
        let claims = Claims(AtomicU64::new(0));
        assert!(!claims.claim(2), "request 2 before request 1");
        assert!(claims.claim(1));
        assert!(!claims.claim(1), "request 1 twice");
        assert!(claims.claim(2));
    }
}
