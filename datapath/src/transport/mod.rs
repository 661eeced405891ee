//! TCP over io_uring: the software transport under the initiator (RFC 7143 section 4: an iSCSI
//! connection is one TCP connection carrying a byte stream of PDUs; framing is the caller's job).
//!
//! Every operation on the data path goes through io_uring: connect, send, receive, the timeouts
//! that bound them, shutdown and close. Only socket creation, `setsockopt`, `getsockopt`, `bind`
//! (when a local address is asked for) and `getsockname` use plain system calls; none of them
//! can block.
//!
//! How a timeout works: each operation is submitted linked to an `IORING_OP_LINK_TIMEOUT`. If the
//! timer fires first the kernel cancels the operation; either way the call waits for both
//! completions before it returns, so the kernel never touches a caller's buffer after the call
//! has returned.
//!
//! Layout:
//! - [`ring`]: the ring itself ([`RingConfig`], flag negotiation with fallback, the
//!   submit-and-reap loop keyed by per-operation tokens so one ring can later carry many
//!   connections of one shard).
//! - [`tcp`]: [`TcpConnection`], one socket driven synchronously through a ring it owns.
//! - [`sockaddr`]: conversion between `std::net::SocketAddr` and the C socket address types.
//! - [`kind`]: [`TransportKind`], which of the data path's three transports (software,
//!   dependent or independent adapter) carries a session.
//!
//! Threading: a ring set up with `SINGLE_ISSUER | DEFER_TASKRUN` may only be entered by the
//! thread that created it (the kernel answers `EEXIST` otherwise), so [`TcpConnection`] is
//! deliberately neither `Send` nor `Sync`: create it on the thread (shard) that drives it.

pub mod kind;
pub mod reach;
pub mod ring;
pub mod sockaddr;
pub mod tcp;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

pub use kind::{TransportKind, UnknownTransport};
pub use ring::{build_ring, BuiltRing, RingConfig, RingFlags, RingSetup};
pub use sockaddr::resolve_target_address;
pub use tcp::{incoming_cpu, TcpConnection};

/// An error of the TCP transport, carrying the operation and the peer fact where one is known.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The peer answered the connection attempt with a reset (nothing listens on that port).
    #[error("connection to {0} refused")]
    ConnectionRefused(SocketAddr),
    /// The operation did not complete within its time bound and was cancelled.
    #[error("{op} timed out after {after:?}")]
    TimedOut {
        /// The operation that ran out of time (`connect`, `send`, `recv`).
        op: &'static str,
        /// The bound the caller gave for the whole call.
        after: Duration,
    },
    /// The peer reset the connection (`ECONNRESET`, `EPIPE`, or `ENOTCONN` after a reset).
    #[error("connection reset by peer")]
    ConnectionReset,
    /// The peer closed its side of the stream before the expected bytes arrived.
    #[error("connection closed by peer")]
    Closed,
    /// No route to the peer (`ENETUNREACH`, `EHOSTUNREACH`).
    #[error("{0} is unreachable")]
    Unreachable(SocketAddr),
    /// Any other operating-system error, with the operation that met it.
    #[error("{op} failed: {source}")]
    Io {
        /// The operation that failed.
        op: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The local address asked for could not be bound before connecting (`EADDRINUSE`: the
    /// port is taken; `EADDRNOTAVAIL`: the address is not this host's).
    #[error("binding local address {local} failed: {source}")]
    Bind {
        /// The local address asked for.
        local: SocketAddr,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The io_uring instance could not be created, even without optional flags.
    #[error("io_uring setup failed: {0}")]
    RingSetup(#[source] io::Error),
    /// An earlier `send_all` or `recv_exact` failed part-way, so the position in the byte
    /// stream is unknown and PDU framing is lost; the connection must be closed (RFC 7143
    /// section 7.1 connection recovery starts from a new connection).
    #[error("stream position lost after an earlier failed {failed_op}; close the connection")]
    StreamBroken {
        /// The operation whose failure left the stream in an unknown position.
        failed_op: &'static str,
    },
    /// This side already shut the connection down with [`TcpConnection::shutdown`].
    #[error("{op} on a connection that was already shut down")]
    AlreadyShutDown {
        /// The operation that was attempted.
        op: &'static str,
    },
}

impl TransportError {
    /// Maps a negative errno from a completion (or a system call) to the transport's error.
    pub(crate) fn from_errno(errno: i32, op: &'static str, peer: SocketAddr) -> Self {
        match errno {
            libc::ECONNREFUSED => TransportError::ConnectionRefused(peer),
            libc::ECONNRESET | libc::EPIPE | libc::ENOTCONN => TransportError::ConnectionReset,
            libc::ENETUNREACH | libc::EHOSTUNREACH => TransportError::Unreachable(peer),
            _ => TransportError::Io {
                op,
                source: io::Error::from_raw_os_error(errno),
            },
        }
    }
}
