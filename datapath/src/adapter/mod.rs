//! The adapter interface shards drive: iSCSI host adapters (HNICs) of the two kinds
//! open-iscsi knows, and the host-side paths that drive them (DESIGN.md, "The path of one
//! I/O"). The adapters themselves live in the `offload` crate; this module never names it.
//!
//! - A **dependent** adapter (bnx2i, qedi, cxgb4i in Linux) takes PDUs from the host's
//!   iSCSI session and carries them: it frames them, computes and checks CRC32C digests
//!   (RFC 7143 section 13.1) when it offloads them, runs TCP, and places Data-In payload
//!   (section 11.7) straight into the host buffer registered for the Initiator Task Tag.
//!   Its network configuration (portal, local address) comes from the host.
//!   [`DependentPath`] owns the host [`Session`](crate::session::Session) and moves PDUs
//!   between it and the adapter's queue pair.
//! - An **independent** adapter (qla4xxx) runs the whole initiator itself, configured
//!   through its own interface (portal, target and initiator names, CHAP, login keys); the
//!   host hands it SCSI commands and gets back status, sense, residual and its buffer.
//!   [`IndependentPath`] submits and reaps those.
//!
//! Host and adapter meet only through queue pairs ([`ring`]): a bounded submission ring
//! and a bounded completion ring with doorbells, no lock shared on the I/O path. Control
//! (connect, configure, reset) goes through the adapter traits, off the I/O path.
//!
//! # Host memory lent to an adapter
//! A dependent adapter reads write payload from, and places Data-In into, the command
//! buffers the host session owns, as a DMA engine would: entries carry a [`HostRegion`]
//! instead of a copy. The host keeps each region alive until the adapter says it is done
//! with it: its submission ring's retired index has passed every entry that named the
//! region, and a read's placement has been released by the response that ended the
//! command ([`ReceivedPdu::placement_released`]), or the adapter's queue pair was reset
//! (its engines joined). Only then does the path hand the buffer back to its caller.
//!
//! # Faults
//! Every fault an adapter reports names itself ([`AdapterFault`]); the paths' error
//! policies are documented on [`DependentPath`] and [`IndependentPath`]. No policy ever
//! reports a failed write as good.

pub mod dependent;
pub mod independent;
pub mod ring;

use std::net::SocketAddr;
use std::ptr::NonNull;
use std::time::Duration;

pub use dependent::{DependentConfig, DependentPath, DependentStats};
pub use independent::{IndependentPath, IndependentPathConfig, IndependentStats};

pub use ring::{queue_pair, AdapterQueue, Consumer, HostQueue, Notifier, Producer, RingFull};

use crate::pdu::{Digests, Header, Opcode, Tag};
use crate::session::{
    ChapConfig, CommandError, CommandFailure, CommandOutcome, Liveness, Request, SubmitRejection,
};
use crate::text::OperationalOffer;
use crate::transport::TransportKind;

/// What an adapter does for the host. The paths obey it: no host CRC32C for a digest the
/// adapter computes, no PDU longer than `max_pdu_bytes`, no I/O longer than `max_io_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Computes and checks HeaderDigest CRC32C.
    pub header_digest: bool,
    /// Computes and checks DataDigest CRC32C.
    pub data_digest: bool,
    /// Places Data-In payload into the host buffer registered for its task tag.
    pub direct_data_placement: bool,
    /// Carries TCP itself.
    pub tcp_offload: bool,
    /// Longest data segment the adapter frames or receives.
    pub max_pdu_bytes: u32,
    /// Longest transfer of one SCSI command.
    pub max_io_bytes: u32,
    /// Queue pairs it has (one per shard).
    pub queue_pairs: u16,
}

/// Who an adapter is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterInfo {
    pub name: String,
    pub kind: TransportKind,
    pub capabilities: Capabilities,
}

/// A fault an adapter reports (or the host detects in it). Each message names the fault.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdapterFault {
    /// The adapter took a submission entry and did not carry it out.
    #[error("adapter dropped submission entry {index} for task {}{}", tag_text(*tag), injected_text(*injected))]
    DroppedSubmission {
        /// The entry's index in the submission ring.
        index: u64,
        /// The Initiator Task Tag (dependent) or caller's tag (independent), if any.
        tag: Option<u64>,
        injected: bool,
    },
    /// A received digest did not match the one computed (RFC 7143 section 13.1; at ERL 0
    /// the connection must be dropped).
    #[error("{kind} digest mismatch on {} for task {}: computed {expected:#010x}, received {found:#010x}{}", opcode_text(*opcode), tag_text(*tag), injected_text(*injected))]
    DigestMismatch {
        kind: DigestKind,
        opcode: Option<Opcode>,
        tag: Option<u64>,
        expected: u32,
        found: u32,
        injected: bool,
    },
    /// The adapter reset itself: its connection and everything in flight are gone.
    #[error("adapter reset{}", injected_text(*injected))]
    Reset { injected: bool },
    /// The host found completions written beyond the completion doorbell for too long.
    #[error("adapter completion doorbell stalled at index {doorbell} with {unannounced} entries written beyond it for {stalled_ms} ms")]
    DoorbellStalled {
        doorbell: u64,
        unannounced: u64,
        stalled_ms: u64,
    },
    /// The adapter's TCP connection failed or the target closed it.
    #[error("adapter connection lost: {0}")]
    ConnectionLost(String),
    /// The adapter received bytes it could not frame as a PDU.
    #[error("adapter framing error: {0}")]
    Framing(String),
}

fn tag_text(tag: Option<u64>) -> String {
    tag.map_or_else(|| "(none)".to_string(), |t| format!("{t:#x}"))
}

fn opcode_text(opcode: Option<Opcode>) -> String {
    opcode.map_or_else(|| "an unknown opcode".to_string(), |o| format!("{o:?}"))
}

fn injected_text(injected: bool) -> &'static str {
    if injected {
        " (injected by adapter fault hook)"
    } else {
        ""
    }
}

/// Which digest a [`AdapterFault::DigestMismatch`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestKind {
    Header,
    Data,
}

impl std::fmt::Display for DigestKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DigestKind::Header => "header",
            DigestKind::Data => "data",
        })
    }
}

/// Why a control call on an adapter failed (off the I/O path).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdapterError {
    #[error("adapter has no queue pair {index} (it has {count})")]
    NoSuchQueuePair { index: usize, count: usize },
    #[error("queue pair {0} is already taken by a host path")]
    QueuePairTaken(usize),
    #[error("queue pair {0} is not configured")]
    NotConfigured(usize),
    #[error("connecting to {portal}: {reason}")]
    Connect { portal: SocketAddr, reason: String },
    #[error("login to {portal} failed: {reason}")]
    Login { portal: SocketAddr, reason: String },
    #[error("adapter engine of queue pair {index} stopped: {reason}")]
    EngineStopped { index: usize, reason: String },
    #[error("the adapter does not support {0}")]
    Unsupported(&'static str),
    #[error("{0}")]
    Fault(AdapterFault),
}

/// Why one I/O on an adapter path failed.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The iSCSI session failed the command (its own cause inside).
    #[error("{0}")]
    Command(CommandError),
    /// An adapter fault failed the command.
    #[error("{0}")]
    Adapter(AdapterFault),
    /// The path could not run the command (not logged in, recovery failed).
    #[error("path unavailable: {0}")]
    Unavailable(String),
}

impl PathError {
    /// The cause of a command the session failed: a lost connection, a protocol error or
    /// a timeout while the adapter has reported `fault` is that fault's doing, and named
    /// as it; any other failure is the session's own.
    pub fn from_command(error: CommandError, fault: Option<&AdapterFault>) -> PathError {
        match (fault, error) {
            (
                Some(fault),
                CommandError::ConnectionLost(_)
                | CommandError::Protocol(_)
                | CommandError::TimedOut,
            ) => PathError::Adapter(fault.clone()),
            (_, error) => PathError::Command(error),
        }
    }
}

/// A failed I/O: the cause and the caller's buffer (empty when an adapter reset lost it).
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct PathFailure {
    pub error: PathError,
    pub buffer: Vec<u8>,
}

/// A command the session failed, as a path reports it.
impl From<CommandFailure> for PathFailure {
    fn from(failure: CommandFailure) -> Self {
        PathFailure {
            error: PathError::Command(failure.error),
            buffer: failure.buffer,
        }
    }
}

impl std::fmt::Debug for PathFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PathFailure")
            .field("error", &self.error)
            .field("buffer_len", &self.buffer.len())
            .finish()
    }
}

/// The end of one [`Request`] on a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathCompletion {
    pub user_data: u64,
    pub result: Result<CommandOutcome, PathFailure>,
}

/// Why a path refused a request (handed back whole).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathRejection {
    #[error("the path's queue is full")]
    QueueFull,
    #[error("transfer of {len} bytes exceeds the adapter's maximum I/O of {max}")]
    TooLarge { len: u32, max: u32 },
    /// The session refused the request itself.
    #[error("invalid request: {0}")]
    Invalid(SubmitRejection),
    /// Why the path cannot carry commands now (boxed: a refusal hands the whole request
    /// back, and the error stays small).
    #[error("path unavailable: {0}")]
    Unavailable(Box<str>),
}

/// A refused request and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("request not accepted: {reason}")]
pub struct PathSubmitError {
    pub reason: PathRejection,
    pub request: Request,
}

/// What a shard worker drives, whichever kind of adapter is behind it: both
/// [`DependentPath`] and [`IndependentPath`] implement it.
///
/// Per turn: `submit` new requests (a refused one comes back in the error), `poll` once,
/// take every `poll_completion`; when idle, `wait` (or sleep on `notifier`'s eventfd in the
/// shard's own io_uring until `next_deadline`).
pub trait AdapterPath {
    /// Accepts a request or hands it back.
    fn submit(&mut self, now: std::time::Instant, request: Request) -> Result<(), PathSubmitError>;
    /// One turn of the path; returns the completions ready to take.
    fn poll(&mut self, now: std::time::Instant) -> usize;
    /// The next finished request.
    fn poll_completion(&mut self) -> Option<PathCompletion>;
    /// Sleeps until there is something to poll or `timeout` passes.
    fn wait(&mut self, timeout: Duration) -> bool;
    /// True when a [`AdapterPath::poll`] would find completions (announced or ready). A
    /// shard that sleeps on [`AdapterPath::notifier`] itself checks this after it said it
    /// sleeps, so no completion doorbell is missed.
    fn ready_to_poll(&self) -> bool;
    /// When the path needs a poll even without completions.
    fn next_deadline(&self) -> Option<std::time::Instant>;
    /// The eventfd the adapter writes when it announces completions to a sleeping host.
    fn notifier(&self) -> &std::sync::Arc<Notifier>;
    /// Requests accepted and not yet handed back.
    fn in_flight(&self) -> usize;
    /// The adapter's kind and what it offloads.
    fn capabilities(&self) -> Capabilities;
}

macro_rules! impl_adapter_path {
    ($path:ty) => {
        impl AdapterPath for $path {
            fn submit(
                &mut self,
                now: std::time::Instant,
                request: Request,
            ) -> Result<(), PathSubmitError> {
                <$path>::submit(self, now, request)
            }
            fn poll(&mut self, now: std::time::Instant) -> usize {
                <$path>::poll(self, now)
            }
            fn poll_completion(&mut self) -> Option<PathCompletion> {
                <$path>::poll_completion(self)
            }
            fn wait(&mut self, timeout: Duration) -> bool {
                <$path>::wait(self, timeout)
            }
            fn ready_to_poll(&self) -> bool {
                <$path>::ready_to_poll(self)
            }
            fn next_deadline(&self) -> Option<std::time::Instant> {
                <$path>::next_deadline(self)
            }
            fn notifier(&self) -> &std::sync::Arc<Notifier> {
                <$path>::notifier(self)
            }
            fn in_flight(&self) -> usize {
                <$path>::in_flight(self)
            }
            fn capabilities(&self) -> Capabilities {
                <$path>::capabilities(self)
            }
        }
    };
}

impl_adapter_path!(DependentPath);
impl_adapter_path!(IndependentPath);

/// A window of host memory an adapter reads (write payload) or writes (Data-In placement)
/// in place, as a DMA engine would. Made only by this module's host paths, from buffers
/// they keep alive until the adapter is done (see the module docs).
#[derive(Debug)]
pub struct HostRegion {
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
}

// SAFETY: a HostRegion is an address and a length; the memory it names stays valid for
// the adapter, on whichever thread, under the contract of `slice` and `slice_mut`.
unsafe impl Send for HostRegion {}

impl HostRegion {
    /// A read-only window over `bytes` (payload to send).
    pub(crate) fn readable(bytes: &[u8]) -> HostRegion {
        HostRegion {
            ptr: NonNull::from(bytes).cast(),
            len: bytes.len(),
            writable: false,
        }
    }

    /// A writable window over the first `len` bytes of `buffer` (where Data-In goes).
    pub(crate) fn writable(buffer: &mut Vec<u8>, len: usize) -> HostRegion {
        let len = len.min(buffer.len());
        HostRegion {
            // Vec's pointer is never null (dangling but aligned when empty).
            ptr: NonNull::new(buffer.as_mut_ptr()).unwrap_or(NonNull::dangling()),
            len,
            writable: true,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// The bytes of the region.
    ///
    /// # Safety
    /// Only between taking the submission entry that carried the region and retiring it
    /// ([`Consumer::retire_through`]) for readable regions, or until the placement is
    /// released ([`ReceivedPdu::placement_released`]) for writable ones; never after the
    /// adapter's queue pair was reset: the host hands the memory back to its owner then.
    pub unsafe fn slice(&self) -> &[u8] {
        // SAFETY: the caller keeps to the contract above, under which the host keeps
        // `len` bytes at `ptr` alive and does not write them.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// `len` bytes at `offset` of a writable region; `None` when that lies outside it or
    /// the region is read-only.
    ///
    /// # Safety
    /// As for [`HostRegion::slice`]; and no two slices of one region may be alive at once.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice_mut(&self, offset: usize, len: usize) -> Option<&mut [u8]> {
        let end = offset.checked_add(len)?;
        if !self.writable || end > self.len {
            return None;
        }
        // SAFETY: in bounds (checked above); the host neither reads nor writes a placed
        // region until the adapter releases it, and the caller holds one slice at a time.
        Some(unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(offset), len) })
    }
}

/// The data segment of a PDU going down to a dependent adapter.
#[derive(Debug)]
pub enum PduData {
    None,
    /// Bytes the session made (login and text keys, NOP echoes).
    Owned(Vec<u8>),
    /// A slice of a command's buffer (immediate data, Data-Out), lent in place.
    Host(HostRegion),
}

impl PduData {
    pub fn len(&self) -> usize {
        match self {
            PduData::None => 0,
            PduData::Owned(bytes) => bytes.len(),
            PduData::Host(region) => region.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One PDU of the host session for a dependent adapter to frame and send.
#[derive(Debug)]
pub struct PduSubmission {
    pub header: Header,
    pub data: PduData,
    /// The header digest when digests are on and the adapter does not compute them
    /// (computed by the host over BHS and AHS).
    pub header_digest: Option<u32>,
    /// The data digest when digests are on, the segment is not empty and the adapter does
    /// not compute them.
    pub data_digest: Option<u32>,
    /// For a SCSI Command that reads: where the Data-In payload of its task tag goes.
    pub placement: Option<HostRegion>,
}

/// Connection parameters of the host session, in force from this point of the stream on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionParams {
    pub digests: Digests,
    /// The longest data segment the host declared it receives.
    pub max_recv_data_segment_length: u32,
}

/// A submission-ring entry of a dependent adapter.
#[derive(Debug)]
pub enum DependentSubmission {
    /// Sent once login completes: the digests and receive limit of full feature phase.
    SetConnection(ConnectionParams),
    Pdu(PduSubmission),
}

/// Where the data segment of a received PDU is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceivedData {
    None,
    /// Copied out of the adapter (PDUs other than placed Data-In).
    Owned(Vec<u8>),
    /// Placed into the host buffer registered for the task: `len` bytes at `offset`.
    Placed {
        offset: u32,
        len: u32,
    },
}

/// A PDU a dependent adapter received and hands up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedPdu {
    pub header: Header,
    pub data: ReceivedData,
    /// The received header digest, when the adapter does not check digests itself.
    pub header_digest: Option<u32>,
    /// The received data digest, when the adapter does not check digests itself.
    pub data_digest: Option<u32>,
    /// The task whose placement this PDU ended: the adapter will not touch its buffer again.
    pub placement_released: Option<Tag>,
}

/// A completion-ring entry of a dependent adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DependentCompletion {
    Pdu(ReceivedPdu),
    Fault(AdapterFault),
}

/// The host's end of a dependent adapter's queue pair.
pub type DependentHostQueue = HostQueue<DependentSubmission, DependentCompletion>;
/// The adapter's end of a dependent adapter's queue pair.
pub type DependentAdapterQueue = AdapterQueue<DependentSubmission, DependentCompletion>;

/// The network configuration a dependent adapter takes from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    pub portal: SocketAddr,
    /// Bind the connection to this local address (and port, when not 0).
    pub local_addr: Option<SocketAddr>,
    pub connect_timeout: Duration,
    /// `TCP_USER_TIMEOUT` on the adapter's socket (the path's [`Liveness`]; the host
    /// session sends the pings): a link cut silently then fails the connection.
    pub tcp_user_timeout: Option<Duration>,
}

/// What a connect established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub local_addr: SocketAddr,
    pub peer_addr: SocketAddr,
}

/// A dependent adapter (its control interface).
pub trait DependentAdapter: Send + Sync {
    fn info(&self) -> AdapterInfo;
    /// CPU time of the adapter's own threads so far.
    fn cpu_time(&self) -> Duration;
    /// Hands out the host end of queue pair `index`, once.
    fn take_queue_pair(&self, index: usize) -> Result<DependentHostQueue, AdapterError>;
    /// Opens queue pair `index`'s TCP connection with the host's network configuration
    /// and starts its engines.
    fn connect(
        &self,
        index: usize,
        network: &NetworkConfig,
    ) -> Result<ConnectionInfo, AdapterError>;
    /// Stops queue pair `index`: closes its connection, joins its engines (from then on it
    /// touches no host memory), discards its submission ring. The host then discards the
    /// completion ring and may connect again.
    fn reset_queue_pair(&self, index: usize) -> Result<(), AdapterError>;
    /// Takes back the host end of queue pair `index` (its engines stopped by a reset), so
    /// a later [`DependentAdapter::take_queue_pair`] hands it out again: a host path that
    /// ends gives its queue pair back, and a multipath shard or a move logs in on it anew.
    /// An adapter that cannot reuse a queue pair drops it (the default).
    fn return_queue_pair(&self, index: usize, host: DependentHostQueue) {
        let _ = (index, host);
    }
}

/// An independent adapter's answer to one submitted [`Request`] (whose `user_data`, on the
/// adapter's ring, is the host path's tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiCompletion {
    pub tag: u64,
    pub result: Result<CommandOutcome, PathFailure>,
}

/// A completion-ring entry of an independent adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndependentCompletion {
    /// One submitted command ended.
    Command(ScsiCompletion),
    /// The adapter's session lost its connection (a reset, an EOF, unanswered pings, a
    /// target's drop): posted when it happens, whether or not commands were in flight,
    /// before the adapter logs in again by itself (as firmware would). The host learns of
    /// a loss on an idle path so, and a multipath shard counts the path lost.
    SessionLost(SessionLoss),
}

/// What an independent adapter reports of a lost session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionLoss {
    /// What failed the connection, named.
    pub fault: AdapterFault,
    /// The Time2Wait the target gave when it dropped the connection (Async Message event
    /// 2 or 3), if it did: the adapter waits it before logging in again, and so does a
    /// host that brings the path back itself.
    pub time2wait: Option<Duration>,
}

/// The host's end of an independent adapter's queue pair.
pub type IndependentHostQueue = HostQueue<Request, IndependentCompletion>;
/// The adapter's end of an independent adapter's queue pair.
pub type IndependentAdapterQueue = AdapterQueue<Request, IndependentCompletion>;

/// What an independent adapter's own configuration interface takes.
/// (No `Debug`: it holds CHAP secrets.)
#[derive(Clone)]
pub struct IndependentConfig {
    pub portal: SocketAddr,
    pub target_name: String,
    pub initiator_name: String,
    pub chap: Option<ChapConfig>,
    /// Login keys to offer.
    pub offer: OperationalOffer,
    pub connect_timeout: Duration,
    pub login_timeout: Duration,
    pub command_timeout: Duration,
    /// Commands the adapter's session keeps in flight.
    pub queue_depth: usize,
    /// How the adapter's session and socket notice a silent loss: the host path's own
    /// settings, handed down ([`Liveness`]).
    pub liveness: Liveness,
}

/// What a login of an independent adapter reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginReport {
    pub local_addr: SocketAddr,
    pub tsih: u16,
    pub digests: Digests,
}

/// An independent adapter (its control interface).
pub trait IndependentAdapter: Send + Sync {
    fn info(&self) -> AdapterInfo;
    /// CPU time of the adapter's own threads so far.
    fn cpu_time(&self) -> Duration;
    /// Hands out the host end of queue pair `index`, once.
    fn take_queue_pair(&self, index: usize) -> Result<IndependentHostQueue, AdapterError>;
    /// Stores queue pair `index`'s configuration, starts its engine and logs in; returns
    /// once logged in (or the login failed).
    fn configure(
        &self,
        index: usize,
        config: &IndependentConfig,
    ) -> Result<LoginReport, AdapterError>;
    /// Stops queue pair `index`'s engine (joined), takes what its submission ring held,
    /// hands back the buffers of every command it held (tag, buffer), then starts the
    /// engine again and logs in with the stored configuration. The restarted engine posts
    /// nothing until new submissions come, so the host discards the completion ring after
    /// this returns.
    fn reset_queue_pair(&self, index: usize) -> Result<ResetReport, AdapterError>;
    /// Stops queue pair `index`'s engine (joined) without logging in again, and hands
    /// back the buffers of every command it held (tag, buffer): a host path that lost its
    /// connection ends so, and its commands go to another path (multipath).
    fn stop_queue_pair(&self, index: usize) -> Result<Vec<(u64, Vec<u8>)>, AdapterError> {
        let _ = index;
        Err(AdapterError::Unsupported("stopping a queue pair"))
    }
    /// Takes back the host end of queue pair `index` (see
    /// [`DependentAdapter::return_queue_pair`]); the default drops it.
    fn return_queue_pair(&self, index: usize, host: IndependentHostQueue) {
        let _ = (index, host);
    }
}

/// What an independent adapter's queue-pair reset hands back.
#[derive(Debug)]
pub struct ResetReport {
    /// (tag, buffer) of every command the adapter held when it stopped.
    pub buffers: Vec<(u64, Vec<u8>)>,
    /// The login with the stored configuration after the restart.
    pub relogin: Result<LoginReport, AdapterError>,
}
