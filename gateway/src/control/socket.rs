//! The control plane's Unix socket: created mode 0600 (only the gateway's user can
//! connect; a peer of another uid is also refused by its credentials, SO_PEERCRED), never
//! over a live socket (a second gateway on the same path is refused), a stale one from a
//! killed gateway removed. One thread per client, at most [`MAX_CLIENTS`] at once; each
//! request line is bounded ([`super::rpc::MAX_REQUEST_BYTES`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::pace;
use super::phases::{self, Phase};
use super::priority::{self, ControlPriority, NormalLane};
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

/// Serves `control` on `listener` from a thread of its own, until the process ends. That
/// thread and the client threads it starts (which inherit it) run at `priority`.
pub fn serve(
    listener: UnixListener,
    control: Arc<Control>,
    priority: ControlPriority,
) -> std::io::Result<()> {
    let clients = Arc::new(AtomicUsize::new(0));
    // Started here, before the accept thread lowers itself: its class is the caller's.
    let lane = match priority {
        ControlPriority::Normal => None,
        _ => Some(NormalLane::start(Arc::clone(&control))?),
    };
    std::thread::Builder::new()
        .name("iscsi-control".into())
        .spawn(move || {
            if let Err(error) = priority.apply_to_current_thread() {
                tracing::warn!(%error, %priority, "control threads keep the normal priority");
            }
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
                let lane = lane.clone();
                let spawned = std::thread::Builder::new()
                    .name("iscsi-control-client".into())
                    .spawn(move || {
                        serve_client(stream, &control, lane.as_ref());
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

/// Reads request lines and answers each until the client closes. With a `lane` (the
/// thread runs lowered), calls that may start I/O threads run on it.
fn serve_client(stream: UnixStream, control: &Control, lane: Option<&NormalLane>) {
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let Ok(mut writer) = stream.try_clone() else {
        return;
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
        phases::start();
        pace::start();
        let mut method = None;
        let response = match rpc::parse_request(&line) {
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
                request.id.map(|id| rpc::encode_response(&id, &outcome))
            }
            Err(refusal) => Some(rpc::encode_response(&refusal.id, &Err(refusal.error))),
        };
        if let Some(response) = response {
            pace::tick();
            if writer.write_all(&response).is_err() {
                return;
            }
        }
        phases::finish(method.as_deref().unwrap_or("(refused)"));
        if !complete {
            return;
        }
    }
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
