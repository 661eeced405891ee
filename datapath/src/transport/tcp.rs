//! One TCP connection driven through io_uring, synchronously: each call submits its operation
//! with a linked timeout, waits in the kernel for the completions, and returns.
//!
//! This is the first slice of the software transport (RFC 7143 section 4 runs iSCSI over one
//! TCP connection per iSCSI connection). Later slices move the ring into a per-core shard that
//! carries many connections, with registered buffers and zero-copy sends; the submit-and-reap
//! core in [`super::ring`] is already keyed by token for that.
//!
//! Stream position: a timed-out or failed `send_all` / `recv_exact` may have moved part of the
//! bytes, so PDU framing is lost. The connection remembers this and refuses later sends and
//! receives with [`TransportError::StreamBroken`]; the caller closes it and, per RFC 7143
//! section 7.1, recovers on a new connection. A timed-out [`TcpConnection::recv`] moves no
//! bytes and leaves the connection usable.

use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types};

use super::ring::{LinkedOutcome, Ring, RingConfig, TIMEOUT_MAX};
use super::sockaddr::RawSockAddr;
use super::TransportError;

/// The most buffers one `send_all` gathers (Linux `UIO_MAXIOV`).
pub const SEND_IOVECS_MAX: usize = 1024;

/// A TCP connection to an iSCSI target, owning its socket and (for now) a small io_uring.
///
/// Not `Send`: with `SINGLE_ISSUER | DEFER_TASKRUN` only the creating thread may enter the
/// ring, so the connection must be created on the thread that drives it.
///
/// ```compile_fail
/// fn assert_send<T: Send>() {}
/// assert_send::<datapath::transport::TcpConnection>();
/// ```
pub struct TcpConnection {
    ring: Ring,
    /// `None` once [`TcpConnection::shutdown`] has closed the socket.
    fd: Option<RawFd>,
    peer: SocketAddr,
    /// The operation whose failure lost the stream position, if any.
    broken_by: Option<&'static str>,
    /// Gather list reused across sends so that a send allocates nothing in steady state.
    /// Empty between calls: the pointers it holds are only meaningful during one call.
    iovecs: Vec<libc::iovec>,
    /// Pins the connection to its creating thread (see the type's documentation).
    _single_issuer: PhantomData<*const ()>,
}

impl std::fmt::Debug for TcpConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpConnection")
            .field("fd", &self.fd)
            .field("peer", &self.peer)
            .field("ring", &self.ring.flags_description())
            .field("broken_by", &self.broken_by)
            .finish()
    }
}

/// The deadline `timeout` from now, with the timeout clamped so the addition cannot overflow.
fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout.min(TIMEOUT_MAX)).unwrap_or(now)
}

impl TcpConnection {
    /// Connects to `addr` (IPv4 or IPv6) within `timeout`, with `TCP_NODELAY` set, on a ring
    /// with the default [`RingConfig`].
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpConnection, TransportError> {
        Self::connect_with_config(addr, timeout, &RingConfig::default())
    }

    /// Connects to `addr` within `timeout` on a ring built from `config`.
    pub fn connect_with_config(
        addr: SocketAddr,
        timeout: Duration,
        config: &RingConfig,
    ) -> Result<TcpConnection, TransportError> {
        Self::connect_from(addr, None, timeout, config)
    }

    /// Connects to `addr` from the local address `local` (when given) within `timeout` on a
    /// ring built from `config`. With `local`, the socket is bound to it before connecting,
    /// with `SO_REUSEADDR` so that a port whose earlier connection lingers in `TIME_WAIT` can
    /// be bound again (the kernel still refuses a 4-tuple that is in use). This is how RSS
    /// steering puts a connection on a chosen receive queue (see [`crate::steering`]).
    /// A port already in use gives [`TransportError::Bind`] (try another port).
    pub fn connect_from(
        addr: SocketAddr,
        local: Option<SocketAddr>,
        timeout: Duration,
        config: &RingConfig,
    ) -> Result<TcpConnection, TransportError> {
        let ring = Ring::new(config)?;
        let raw_addr = RawSockAddr::new(&addr);
        // SAFETY: socket(2) takes no pointers; the result is checked below.
        let fd = unsafe {
            libc::socket(
                raw_addr.family(),
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::IPPROTO_TCP,
            )
        };
        if fd < 0 {
            return Err(TransportError::Io {
                op: "socket",
                source: io::Error::last_os_error(),
            });
        }
        // From here on, Drop closes the socket on every error path.
        let mut connection = TcpConnection {
            ring,
            fd: Some(fd),
            peer: addr,
            broken_by: None,
            iovecs: Vec::new(),
            _single_issuer: PhantomData,
        };
        connection.set_int_option(libc::IPPROTO_TCP, libc::TCP_NODELAY, 1, "set TCP_NODELAY")?;
        if let Some(local) = local {
            connection.bind(local)?;
        }

        let entry = opcode::Connect::new(types::Fd(fd), raw_addr.as_ptr(), raw_addr.len()).build();
        // SAFETY: the entry points at `raw_addr`, which lives on this frame until after the
        // call returns; the call returns only once the kernel has completed the connect.
        let outcome =
            unsafe { connection.ring.run_with_link_timeout(entry, timeout) }.map_err(|source| {
                TransportError::Io {
                    op: "connect",
                    source,
                }
            })?;
        match outcome {
            LinkedOutcome::Completed(0) => Ok(connection),
            LinkedOutcome::Completed(result) if result < 0 => {
                Err(TransportError::from_errno(-result, "connect", addr))
            }
            LinkedOutcome::Completed(unexpected) => Err(TransportError::Io {
                op: "connect",
                source: io::Error::other(format!("unexpected connect result {unexpected}")),
            }),
            LinkedOutcome::TimedOut => Err(TransportError::TimedOut {
                op: "connect",
                after: timeout,
            }),
        }
    }

    /// The setup flags the kernel granted this connection's ring, for diagnostics.
    pub fn ring_flags_description(&self) -> &str {
        self.ring.flags_description()
    }

    /// How many times this connection's ring has entered the kernel (`io_uring_enter`),
    /// so a driver can report kernel entries per I/O.
    pub fn kernel_entries(&self) -> u64 {
        self.ring.kernel_entries()
    }

    /// The ring, for an event loop (the shard) that drives it itself with
    /// [`Ring::push`] / [`Ring::enter`] / [`Ring::reap`]. The loop must have reaped every
    /// completion of its own before it calls any other method of this connection again.
    pub(crate) fn ring_mut(&mut self) -> &mut Ring {
        &mut self.ring
    }

    /// The socket's descriptor while it is open.
    pub(crate) fn raw_fd(&self) -> Option<RawFd> {
        self.fd
    }

    /// Marks the stream position as lost (an event loop's receive or send failed part-way).
    pub(crate) fn mark_broken(&mut self, failed_op: &'static str) {
        self.broken_by.get_or_insert(failed_op);
    }

    /// Asks the kernel to busy-poll the device queue for up to `busy_poll_us` on a
    /// blocking receive (`SO_BUSY_POLL`). Raising it above `net.core.busy_read` needs
    /// `CAP_NET_ADMIN`; it only acts on NICs with NAPI (never on loopback).
    pub fn set_busy_poll(&self, busy_poll_us: u32) -> Result<(), TransportError> {
        let value = libc::c_int::try_from(busy_poll_us).unwrap_or(libc::c_int::MAX);
        self.set_int_option(
            libc::SOL_SOCKET,
            libc::SO_BUSY_POLL,
            value,
            "set SO_BUSY_POLL",
        )
    }

    /// Bounds how long sent data may stay unacknowledged before the kernel drops the
    /// connection (`TCP_USER_TIMEOUT`, RFC 5482): a link cut silently is then a lost
    /// connection after `timeout`, not after the retransmission limit (about 15 minutes).
    pub fn set_user_timeout(&self, timeout: Duration) -> Result<(), TransportError> {
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        self.set_int_option(
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            ms,
            "set TCP_USER_TIMEOUT",
        )
    }

    /// The socket's `TCP_USER_TIMEOUT` (zero: the kernel's default).
    pub fn user_timeout(&self) -> Result<Duration, TransportError> {
        let op = "get TCP_USER_TIMEOUT";
        let fd = self.open_fd(op)?;
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: both pointers refer to live locals, `len` gives the value's size.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_USER_TIMEOUT,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(TransportError::Io {
                op,
                source: io::Error::last_os_error(),
            });
        }
        Ok(Duration::from_millis(u64::try_from(value).unwrap_or(0)))
    }

    /// The address the target was reached at.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The local address of the socket (`getsockname(2)`).
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        let fd = self.open_fd("local_addr")?;
        // SAFETY: sockaddr_storage is plain bytes; all zeroes is a valid value.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: both pointers refer to live locals, and `len` tells the kernel how many
        // bytes of `storage` it may write.
        let rc = unsafe {
            libc::getsockname(
                fd,
                (&mut storage as *mut libc::sockaddr_storage).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(TransportError::Io {
                op: "getsockname",
                source: io::Error::last_os_error(),
            });
        }
        RawSockAddr::from_storage(&storage, len)
            .map(|raw| raw.to_socket_addr())
            .ok_or_else(|| TransportError::Io {
                op: "getsockname",
                source: io::Error::other("socket address of an unexpected family"),
            })
    }

    /// Whether `TCP_NODELAY` is set (it always is after [`TcpConnection::connect`]).
    pub fn nodelay(&self) -> Result<bool, TransportError> {
        let fd = self.open_fd("get TCP_NODELAY")?;
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: both pointers refer to live locals sized as `len` says.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(TransportError::Io {
                op: "get TCP_NODELAY",
                source: io::Error::last_os_error(),
            });
        }
        Ok(value != 0)
    }

    /// Sends every byte of `bufs`, in order, as one gathered stream (`IORING_OP_SENDMSG` with
    /// one iovec per buffer), within `timeout` for the whole call.
    ///
    /// The send asks the kernel to finish the whole gather list (`MSG_WAITALL`), so the
    /// common case is one kernel entry; if it still completes short, the rest is resubmitted.
    /// At most [`SEND_IOVECS_MAX`] non-empty buffers. On any failure the stream position is
    /// lost (see the module documentation).
    pub fn send_all(&mut self, bufs: &[&[u8]], timeout: Duration) -> Result<(), TransportError> {
        const OP: &str = "send";
        let fd = self.stream_fd(OP)?;
        let deadline = deadline_after(timeout);
        self.gather(bufs)?;
        let result = self.send_iovecs(fd, deadline, timeout, 0);
        self.iovecs.clear();
        if result.is_err() {
            self.broken_by = Some(OP);
        }
        result
    }

    /// [`TcpConnection::send_all`] of `bufs` and one [`TcpConnection::recv`] into
    /// `recv_buf` submitted together, so a request and the wait for its answer cost one
    /// kernel entry. The receive does not wait for the send: it takes what arrives within
    /// `recv_timeout`, `Ok(None)` when nothing did (no bytes moved). Send failures are as
    /// for `send_all` (the stream is lost); if the send completes short, the rest is sent
    /// after the receive has completed.
    pub fn send_all_and_recv(
        &mut self,
        bufs: &[&[u8]],
        send_timeout: Duration,
        recv_buf: &mut [u8],
        recv_timeout: Duration,
    ) -> Result<Option<usize>, TransportError> {
        const OP: &str = "send";
        let fd = self.stream_fd(OP)?;
        if recv_buf.is_empty() {
            self.send_all(bufs, send_timeout)?;
            return Ok(Some(0));
        }
        let deadline = deadline_after(send_timeout);
        self.gather(bufs)?;
        if self.iovecs.is_empty() {
            return self
                .recv(recv_buf, recv_timeout)
                .map(Some)
                .or_else(|e| match e {
                    TransportError::TimedOut { .. } => Ok(None),
                    e => Err(e),
                });
        }
        // SAFETY: msghdr is a plain C struct for which all-zero bytes are a valid value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = self.iovecs.as_mut_ptr();
        msg.msg_iovlen = self.iovecs.len() as _;
        let send = opcode::SendMsg::new(types::Fd(fd), &msg)
            .flags((libc::MSG_NOSIGNAL | libc::MSG_WAITALL) as u32)
            .build();
        let recv_len = u32::try_from(recv_buf.len()).unwrap_or(u32::MAX);
        let recv = opcode::Recv::new(types::Fd(fd), recv_buf.as_mut_ptr(), recv_len).build();
        // SAFETY: the send points at `msg` (on this frame), at `self.iovecs` (not touched
        // until the call returns) and through them at the caller's buffers (borrowed for
        // longer than this call); the receive points at `recv_buf`, exclusively borrowed for
        // this call. The call returns only after the kernel has completed or cancelled both.
        let outcome = unsafe {
            self.ring
                .run_pair_with_link_timeouts((send, send_timeout), (recv, recv_timeout))
        };
        let (sent, received) = match outcome {
            Ok(pair) => pair,
            Err(source) => {
                self.iovecs.clear();
                self.broken_by = Some(OP);
                return Err(TransportError::Io { op: OP, source });
            }
        };
        let send_result = match sent {
            LinkedOutcome::TimedOut => Err(TransportError::TimedOut {
                op: OP,
                after: send_timeout,
            }),
            LinkedOutcome::Completed(result) if result < 0 => {
                Err(TransportError::from_errno(-result, OP, self.peer))
            }
            LinkedOutcome::Completed(0) => Err(TransportError::Io {
                op: OP,
                source: io::Error::from(io::ErrorKind::WriteZero),
            }),
            // A short send: finish it.
            LinkedOutcome::Completed(sent) => {
                match advance_iovecs(&mut self.iovecs, 0, sent.unsigned_abs() as usize) {
                    Some(first) => self.send_iovecs(fd, deadline, send_timeout, first),
                    None => Err(TransportError::Io {
                        op: OP,
                        source: io::Error::other("kernel reported more bytes sent than queued"),
                    }),
                }
            }
        };
        self.iovecs.clear();
        if let Err(e) = send_result {
            self.broken_by = Some(OP);
            return Err(e);
        }
        match received {
            LinkedOutcome::TimedOut => Ok(None),
            LinkedOutcome::Completed(result) if result < 0 => {
                Err(TransportError::from_errno(-result, "recv", self.peer))
            }
            LinkedOutcome::Completed(received) if received.unsigned_abs() > recv_len => {
                Err(TransportError::Io {
                    op: "recv",
                    source: io::Error::other("kernel reported more bytes than the buffer holds"),
                })
            }
            LinkedOutcome::Completed(received) => Ok(Some(received.unsigned_abs() as usize)),
        }
    }

    /// Fills `self.iovecs` with the non-empty buffers of `bufs` (at most
    /// [`SEND_IOVECS_MAX`]).
    fn gather(&mut self, bufs: &[&[u8]]) -> Result<(), TransportError> {
        self.iovecs.clear();
        for buf in bufs.iter().filter(|buf| !buf.is_empty()) {
            if self.iovecs.len() == SEND_IOVECS_MAX {
                self.iovecs.clear();
                return Err(TransportError::Io {
                    op: "send",
                    source: io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("more than {SEND_IOVECS_MAX} buffers in one send"),
                    ),
                });
            }
            self.iovecs.push(libc::iovec {
                // The kernel only reads through this pointer (a send); the C type is mutable.
                iov_base: buf.as_ptr().cast_mut().cast(),
                iov_len: buf.len(),
            });
        }
        Ok(())
    }

    /// The resubmission loop of [`TcpConnection::send_all`] over `self.iovecs[first..]`. Each round
    /// either moves at least one byte or ends the call, and the deadline bounds the rounds.
    fn send_iovecs(
        &mut self,
        fd: RawFd,
        deadline: Instant,
        timeout: Duration,
        mut first: usize,
    ) -> Result<(), TransportError> {
        const OP: &str = "send";
        while first < self.iovecs.len() {
            // Once the deadline has passed the kernel timer is zero: a send that can complete
            // at once still does, anything that would wait is cancelled immediately.
            let remaining = deadline.saturating_duration_since(Instant::now());
            let pending = &mut self.iovecs[first..];
            // SAFETY: msghdr is a plain C struct for which all-zero bytes are a valid value
            // (null pointers, zero lengths); the fields we need are set below.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = pending.as_mut_ptr();
            msg.msg_iovlen = pending.len() as _;
            let entry = opcode::SendMsg::new(types::Fd(fd), &msg)
                .flags((libc::MSG_NOSIGNAL | libc::MSG_WAITALL) as u32)
                .build();
            // SAFETY: the entry points at `msg` (on this frame), at the iovecs in
            // `self.iovecs` (not touched until the call returns) and through them at the
            // caller's buffers (borrowed by `send_all` for longer than this call). The call
            // returns only after the kernel has completed or cancelled the send.
            let outcome = unsafe { self.ring.run_with_link_timeout(entry, remaining) }
                .map_err(|source| TransportError::Io { op: OP, source })?;
            let sent = match outcome {
                LinkedOutcome::TimedOut => {
                    return Err(TransportError::TimedOut {
                        op: OP,
                        after: timeout,
                    })
                }
                LinkedOutcome::Completed(result) if result < 0 => {
                    return Err(TransportError::from_errno(-result, OP, self.peer));
                }
                LinkedOutcome::Completed(0) => {
                    return Err(TransportError::Io {
                        op: OP,
                        source: io::Error::from(io::ErrorKind::WriteZero),
                    })
                }
                LinkedOutcome::Completed(sent) => sent.unsigned_abs() as usize,
            };
            first = advance_iovecs(&mut self.iovecs, first, sent).ok_or_else(|| {
                TransportError::Io {
                    op: OP,
                    source: io::Error::other("kernel reported more bytes sent than queued"),
                }
            })?;
        }
        Ok(())
    }

    /// Receives up to `buf.len()` bytes within `timeout`. `Ok(0)` means the peer closed its
    /// side (an empty `buf` also returns `Ok(0)`, without touching the socket). A timeout
    /// moves no bytes: the connection stays usable. A zero timeout takes only bytes already
    /// queued, like a non-blocking read.
    pub fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError> {
        const OP: &str = "recv";
        let fd = self.stream_fd(OP)?;
        if buf.is_empty() {
            return Ok(0);
        }
        match self.recv_once(fd, buf, 0, timeout)? {
            LinkedOutcome::TimedOut => Err(TransportError::TimedOut {
                op: OP,
                after: timeout,
            }),
            LinkedOutcome::Completed(result) if result < 0 => {
                Err(TransportError::from_errno(-result, OP, self.peer))
            }
            LinkedOutcome::Completed(received) => Ok(received.unsigned_abs() as usize),
        }
    }

    /// Fills all of `buf` within `timeout` for the whole call. End of stream before the
    /// buffer is full gives [`TransportError::Closed`]. On any failure the stream position is
    /// lost (see the module documentation).
    pub fn recv_exact(&mut self, buf: &mut [u8], timeout: Duration) -> Result<(), TransportError> {
        const OP: &str = "recv";
        let fd = self.stream_fd(OP)?;
        let deadline = deadline_after(timeout);
        let mut filled = 0;
        // Each round either fills at least one byte or ends the call; the deadline bounds them.
        while filled < buf.len() {
            // Past the deadline the kernel timer is zero: bytes already queued are still
            // taken, a receive that would wait is cancelled immediately.
            let remaining = deadline.saturating_duration_since(Instant::now());
            let rest = &mut buf[filled..];
            let step = match self.recv_once(fd, rest, libc::MSG_WAITALL, remaining) {
                Ok(LinkedOutcome::TimedOut) => Err(TransportError::TimedOut {
                    op: OP,
                    after: timeout,
                }),
                Ok(LinkedOutcome::Completed(0)) => Err(TransportError::Closed),
                Ok(LinkedOutcome::Completed(result)) if result < 0 => {
                    Err(TransportError::from_errno(-result, OP, self.peer))
                }
                Ok(LinkedOutcome::Completed(received)) => Ok(received.unsigned_abs() as usize),
                Err(e) => Err(e),
            };
            match step {
                Ok(received) => filled += received,
                Err(e) => {
                    self.broken_by = Some(OP);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// One `IORING_OP_RECV` into `buf` (non-empty) with a linked timeout. The result, when
    /// non-negative, is at most `buf.len()`.
    fn recv_once(
        &mut self,
        fd: RawFd,
        buf: &mut [u8],
        flags: libc::c_int,
        timeout: Duration,
    ) -> Result<LinkedOutcome, TransportError> {
        // One receive moves at most u32::MAX bytes; callers loop for more.
        let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        let entry = opcode::Recv::new(types::Fd(fd), buf.as_mut_ptr(), len)
            .flags(flags)
            .build();
        // SAFETY: the entry points at `buf`, exclusively borrowed for this whole call, and
        // the call returns only after the kernel has completed or cancelled the receive, so
        // no write into `buf` can happen after the borrow ends.
        let outcome = unsafe { self.ring.run_with_link_timeout(entry, timeout) }
            .map_err(|source| TransportError::Io { op: "recv", source })?;
        match outcome {
            LinkedOutcome::Completed(received) if received > 0 && received.unsigned_abs() > len => {
                Err(TransportError::Io {
                    op: "recv",
                    source: io::Error::other("kernel reported more bytes than the buffer holds"),
                })
            }
            other => Ok(other),
        }
    }

    /// Orderly close: `shutdown(SHUT_WR)` (the peer reads end of stream after everything
    /// sent) and then close, both through io_uring in one kernel entry. Calling it again is a
    /// no-op. Bytes still unread in the receive queue make the kernel answer with a reset
    /// instead of a FIN (TCP's rule, RFC 2525 section 2.17), so read the peer's last PDU first.
    pub fn shutdown(&mut self) -> Result<(), TransportError> {
        let Some(fd) = self.fd.take() else {
            return Ok(());
        };
        let entries = [
            // A hard link runs the close even when the shutdown fails.
            opcode::Shutdown::new(types::Fd(fd), libc::SHUT_WR)
                .build()
                .flags(squeue::Flags::IO_HARDLINK),
            opcode::Close::new(types::Fd(fd)).build(),
        ];
        // SAFETY: shutdown and close carry no pointers.
        match unsafe { self.ring.run_batch(entries) } {
            Ok([shutdown_result, close_result]) => {
                if shutdown_result < 0 {
                    return Err(TransportError::from_errno(
                        -shutdown_result,
                        "shutdown",
                        self.peer,
                    ));
                }
                if close_result < 0 {
                    return Err(TransportError::Io {
                        op: "close",
                        source: io::Error::from_raw_os_error(-close_result),
                    });
                }
                Ok(())
            }
            Err(source) => {
                // Nothing reached the kernel; release the descriptor without the ring.
                close_without_ring(fd);
                Err(TransportError::Io {
                    op: "shutdown",
                    source,
                })
            }
        }
    }

    /// The CPU on which the kernel last processed this socket's incoming packets
    /// (`SO_INCOMING_CPU`), or `None` before any has arrived. Steering compares it with the
    /// CPU the wanted receive queue interrupts on.
    pub fn incoming_cpu(&self) -> Result<Option<u32>, TransportError> {
        let fd = self.open_fd("get SO_INCOMING_CPU")?;
        // SAFETY: `fd` is this connection's open socket, and the borrow ends with this call,
        // before the connection could close it.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        incoming_cpu(borrowed).map_err(|source| TransportError::Io {
            op: "get SO_INCOMING_CPU",
            source,
        })
    }

    /// Binds the socket to `local` (with `SO_REUSEADDR`) before it connects.
    fn bind(&self, local: SocketAddr) -> Result<(), TransportError> {
        let fd = self.open_fd("bind")?;
        if local.is_ipv4() != self.peer.is_ipv4() {
            return Err(TransportError::Bind {
                local,
                source: io::Error::from_raw_os_error(libc::EAFNOSUPPORT),
            });
        }
        self.set_int_option(libc::SOL_SOCKET, libc::SO_REUSEADDR, 1, "set SO_REUSEADDR")?;
        let raw = RawSockAddr::new(&local);
        // SAFETY: the address points at `raw`, a live local of the length passed.
        let rc = unsafe { libc::bind(fd, raw.as_ptr(), raw.len()) };
        if rc != 0 {
            return Err(TransportError::Bind {
                local,
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    fn open_fd(&self, op: &'static str) -> Result<RawFd, TransportError> {
        self.fd.ok_or(TransportError::AlreadyShutDown { op })
    }

    /// The descriptor, if the socket is open and its stream position is known.
    fn stream_fd(&self, op: &'static str) -> Result<RawFd, TransportError> {
        let fd = self.open_fd(op)?;
        match self.broken_by {
            Some(failed_op) => Err(TransportError::StreamBroken { failed_op }),
            None => Ok(fd),
        }
    }

    fn set_int_option(
        &self,
        level: libc::c_int,
        name: libc::c_int,
        value: libc::c_int,
        op: &'static str,
    ) -> Result<(), TransportError> {
        let fd = self.open_fd(op)?;
        set_int_option_fd(fd, level, name, value)
            .map_err(|source| TransportError::Io { op, source })
    }
}

/// `TCP_USER_TIMEOUT` on any TCP socket `fd` (the adapter models' std streams use it; see
/// [`TcpConnection::set_user_timeout`]).
pub fn set_user_timeout_fd(fd: std::os::fd::BorrowedFd<'_>, timeout: Duration) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    set_int_option_fd(
        fd.as_raw_fd(),
        libc::IPPROTO_TCP,
        libc::TCP_USER_TIMEOUT,
        ms,
    )
}

fn set_int_option_fd(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the option value points at a live local of the size passed; a bad `fd`
    // makes the call fail, which is reported.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Drop for TcpConnection {
    /// Closes the socket through the ring (no operation is ever in flight between calls);
    /// falls back to `close(2)` if the ring cannot take the request.
    fn drop(&mut self) {
        let Some(fd) = self.fd.take() else {
            return;
        };
        // SAFETY: close carries no pointers.
        match unsafe {
            self.ring
                .run_batch([opcode::Close::new(types::Fd(fd)).build()])
        } {
            Ok([0]) => {}
            // Linux releases the descriptor even when close reports an error.
            Ok([error]) => tracing::warn!(
                fd,
                error = %io::Error::from_raw_os_error(error.saturating_neg()),
                "close through io_uring failed"
            ),
            Err(error) => {
                tracing::warn!(fd, %error, "io_uring unavailable for close; closing directly");
                close_without_ring(fd);
            }
        }
    }
}

fn close_without_ring(fd: RawFd) {
    // SAFETY: `fd` is a descriptor this connection owns and no longer uses; it is taken out
    // of `self.fd` before this call, so it is closed exactly once.
    unsafe {
        libc::close(fd);
    }
}

/// Consumes `sent` bytes from the gather list starting at index `first`: whole entries are
/// skipped and a partly sent entry is trimmed from the front. Returns the index of the first
/// entry with bytes left (`iovecs.len()` when all are sent), or `None` if `sent` exceeds what
/// the list holds.
pub(crate) fn advance_iovecs(
    iovecs: &mut [libc::iovec],
    mut first: usize,
    mut sent: usize,
) -> Option<usize> {
    while sent > 0 {
        let entry = iovecs.get_mut(first)?;
        if sent >= entry.iov_len {
            sent -= entry.iov_len;
            first += 1;
        } else {
            // Pointer arithmetic only (no dereference): stays inside the buffer because
            // `sent < iov_len`.
            entry.iov_base = entry.iov_base.cast::<u8>().wrapping_add(sent).cast();
            entry.iov_len -= sent;
            sent = 0;
        }
    }
    Some(first)
}

/// `SO_INCOMING_CPU` (`include/uapi/asm-generic/socket.h`; sparc numbers it differently).
#[cfg(not(target_arch = "sparc64"))]
const SO_INCOMING_CPU: libc::c_int = 49;
#[cfg(target_arch = "sparc64")]
const SO_INCOMING_CPU: libc::c_int = 0x0033;

/// The CPU on which the kernel last processed packets received on `socket`
/// (`SO_INCOMING_CPU`), or `None` if none has arrived yet (the kernel answers -1).
pub fn incoming_cpu(socket: std::os::fd::BorrowedFd<'_>) -> io::Result<Option<u32>> {
    let mut value: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: both pointers refer to live locals sized as `len` says; the descriptor is
    // borrowed, so open for the call.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            libc::SOL_SOCKET,
            SO_INCOMING_CPU,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u32::try_from(value).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iovecs_over(bufs: &[&[u8]]) -> Vec<libc::iovec> {
        bufs.iter()
            .map(|buf| libc::iovec {
                iov_base: buf.as_ptr().cast_mut().cast(),
                iov_len: buf.len(),
            })
            .collect()
    }

    #[test]
    fn advance_skips_whole_entries_and_trims_a_partial_one() {
        let a = [1u8; 3];
        let b = [2u8; 5];
        let c = [3u8; 2];
        let mut iovecs = iovecs_over(&[&a, &b, &c]);
        assert_eq!(advance_iovecs(&mut iovecs, 0, 0), Some(0));
        assert_eq!(advance_iovecs(&mut iovecs, 0, 3), Some(1));
        assert_eq!(advance_iovecs(&mut iovecs, 1, 2), Some(1));
        assert_eq!(iovecs[1].iov_len, 3);
        assert_eq!(
            iovecs[1].iov_base.cast::<u8>().cast_const(),
            b[2..].as_ptr()
        );
        assert_eq!(advance_iovecs(&mut iovecs, 1, 4), Some(2));
        assert_eq!(iovecs[2].iov_len, 1);
        assert_eq!(advance_iovecs(&mut iovecs, 2, 1), Some(3));
    }

    #[test]
    fn the_user_timeout_is_set_on_the_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let conn =
            TcpConnection::connect(listener.local_addr().unwrap(), Duration::from_secs(5)).unwrap();
        assert_eq!(conn.user_timeout().unwrap(), Duration::ZERO);
        conn.set_user_timeout(Duration::from_millis(750)).unwrap();
        assert_eq!(conn.user_timeout().unwrap(), Duration::from_millis(750));
    }

    #[test]
    fn advance_past_the_end_is_refused() {
        let a = [0u8; 4];
        let mut iovecs = iovecs_over(&[&a]);
        assert_eq!(advance_iovecs(&mut iovecs, 0, 5), None);
        let mut iovecs = iovecs_over(&[&a]);
        assert_eq!(advance_iovecs(&mut iovecs, 1, 1), None);
    }
}
