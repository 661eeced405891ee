//! One protocol connection over TCP: frames out, frames in with a deadline on every read
//! (so a silent peer is noticed, never waited for), and the monotonic clock both ends use.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::protocol::{self, FrameReader, Message, ProtocolError};

/// Longest single blocking read: deadlines and stop requests are checked this often.
const READ_SLICE: Duration = Duration::from_millis(100);

/// Why a connection gave no message.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("the peer closed the connection")]
    Closed,
    #[error("nothing from the peer for {0:?}")]
    Silent(Duration),
    #[error("stopped")]
    Stopped,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
}

/// A framed connection.
pub struct Conn {
    stream: TcpStream,
    reader: FrameReader,
}

impl Conn {
    /// Wraps a connected stream; frames are bounded by the handshake limit until
    /// [`Conn::authenticated`].
    pub fn new(stream: TcpStream) -> std::io::Result<Conn> {
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            reader: FrameReader::new(protocol::HANDSHAKE_FRAME_MAX_BYTES),
        })
    }

    /// The peer proved itself: frames up to the full limit.
    pub fn authenticated(&mut self) {
        self.reader.set_limit(protocol::FRAME_MAX_BYTES);
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn send(&mut self, message: &Message) -> Result<(), ConnError> {
        self.stream.write_all(&protocol::encode(message))?;
        Ok(())
    }

    /// The next message within `timeout`; `stop` is asked between reads. Messages of a
    /// type we do not know (a newer minor version's) are skipped.
    pub fn recv(
        &mut self,
        timeout: Duration,
        stop: &dyn Fn() -> bool,
    ) -> Result<Message, ConnError> {
        let deadline = Instant::now() + timeout;
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match self.reader.next_message() {
                Ok(Some(message)) => return Ok(message),
                Ok(None) => {}
                Err(ProtocolError::UnknownType(kind)) => {
                    tracing::debug!("skipping a message of unknown type {kind}");
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            if stop() {
                return Err(ConnError::Stopped);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ConnError::Silent(timeout));
            }
            self.stream
                .set_read_timeout(Some((deadline - now).min(READ_SLICE)))?;
            let want = self.reader.wanted().min(buffer.len());
            match self.stream.read(&mut buffer[..want]) {
                Ok(0) => return Err(ConnError::Closed),
                Ok(n) => self.reader.push(&buffer[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// CLOCK_MONOTONIC in ns: the clock the agent reports and the controller probes.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleeps until `deadline_ns` of CLOCK_MONOTONIC (absolute: no drift from a late wake-up
/// of an earlier relative sleep), then spins the last stretch, as the kernel's timer slack
/// may wake us up to 50 us late.
pub fn sleep_until_ns(deadline_ns: u64) {
    const SPIN_NS: u64 = 200_000;
    if deadline_ns > SPIN_NS {
        let wake = deadline_ns - SPIN_NS;
        let ts = libc::timespec {
            tv_sec: (wake / 1_000_000_000) as libc::time_t,
            tv_nsec: (wake % 1_000_000_000) as libc::c_long,
        };
        loop {
            // SAFETY: clock_nanosleep reads the timespec we pass; no remainder is asked
            // for with TIMER_ABSTIME.
            let rc = unsafe {
                libc::clock_nanosleep(
                    libc::CLOCK_MONOTONIC,
                    libc::TIMER_ABSTIME,
                    &ts,
                    std::ptr::null_mut(),
                )
            };
            if rc != libc::EINTR {
                break;
            }
        }
    }
    while now_ns() < deadline_ns {
        std::hint::spin_loop();
    }
}

/// The calling thread's scheduling policy, restored on drop.
pub struct RealtimeGuard {
    restore: Option<(libc::c_int, libc::sched_param)>,
}

impl Drop for RealtimeGuard {
    fn drop(&mut self) {
        if let Some((policy, param)) = self.restore.take() {
            // SAFETY: sets the calling thread's policy back from a param we own.
            unsafe { libc::sched_setscheduler(0, policy, &param) };
        }
    }
}

/// [`sleep_until_ns`] (0: not at all) at real-time priority (SCHED_FIFO 1) when the
/// process may (root or CAP_SYS_NICE); returns the instant it started and a guard that
/// puts the thread's own policy back. On a loaded host the scheduler would otherwise run
/// the waking thread milliseconds late, which is the start skew this exists to remove.
/// The caller drops the guard as soon as its clock has started (the spin lasts at most
/// 200 us, so the real-time stretch is short); without the privilege it is a plain sleep.
pub fn start_at_ns(deadline_ns: u64) -> (u64, RealtimeGuard) {
    // SAFETY: sched_getscheduler/sched_getparam/sched_setscheduler on the calling thread
    // (pid 0) read and write only the sched_param values we own.
    let restore = unsafe {
        let policy = libc::sched_getscheduler(0);
        let mut old = libc::sched_param { sched_priority: 0 };
        let realtime = libc::sched_param { sched_priority: 1 };
        (deadline_ns != 0
            && policy >= 0
            && libc::sched_getparam(0, &mut old) == 0
            && libc::sched_setscheduler(0, libc::SCHED_FIFO, &realtime) == 0)
            .then_some((policy, old))
    };
    let guard = RealtimeGuard { restore };
    if deadline_ns != 0 {
        sleep_until_ns(deadline_ns);
    }
    (now_ns(), guard)
}

/// 32 random bytes in hex, from the kernel.
pub fn random_nonce() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: getrandom writes at most the given length into our buffer.
        let rc = unsafe {
            libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0)
        };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += rc as usize;
    }
    Ok(protocol::hex(&bytes))
}

/// This machine's host name, for the report.
pub fn host_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: gethostname writes at most the buffer's length.
    let rc = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).into_owned()
}
