//! Per-core shards: the fast data path (DESIGN.md, "The path of one I/O").
//!
//! A [`ShardPool`] runs one shard per core. Each shard is a thread, pinned to its core when
//! asked, that owns everything its I/O touches: one io_uring (through its
//! [`TcpConnection`](crate::transport::TcpConnection), `SINGLE_ISSUER | DEFER_TASKRUN` with
//! a logged fallback, its socket and doorbell as registered files, its receive buffer as a
//! registered buffer sized from the MaxRecvDataSegmentLength it declares: see
//! [`ShardInfo`]), one TCP connection and one iSCSI session (RFC 7143, its own ISID, so
//! each shard is a separate I_T nexus, section 4.4.2 / 11.12.5). Shards share no lock on
//! the I/O path: callers reach a shard through its bounded submission queue and hear back
//! through its bounded completion queue.
//!
//! Each shard runs one loop (`run`) over one path interface, whatever carries its commands:
//! software TCP (`tcp`) or an adapter's queue pair (`adapters`). The loop owns the callers'
//! side once (queues, room, works, aborts, posting, wake moderation, idle poll); the path
//! owns its I/O. The software path keeps at most one receive (plus, behind a placed
//! payload, one linked receive of what follows it), one send and one doorbell read on its
//! ring; one turn:
//! 1. reaps every completion the kernel has posted and feeds the connection driver
//!    ([`crate::conn::Conn`]): received bytes go to its resumable receiver, which frames
//!    PDUs and checks digests; a Data-In whose payload has not arrived yet is received
//!    straight into its slice of the caller's buffer ([`Session::data_in_destination`], no
//!    copy), with a receive into the staging buffer linked behind it (its trailer, or the
//!    next PDU's header: one kernel entry per placed Data-In). While no large read is in
//!    flight the shard receives greedily (many small PDUs per receive, their payload
//!    copied and counted in [`ShardStats::bytes_copied`]); otherwise it takes headers
//!    alone so that every large payload can be placed;
//! 2. takes every request waiting in its queue that fits under `queue_depth` and hands it
//!    to the session (as many commands in flight as the session window and the depth
//!    allow);
//! 3. posts the completions of the turn together (never while a receive into or a send
//!    from a caller's buffer is in flight), and wakes a caller asleep in
//!    [`ShardPool::wait_completion`] when its moderation says so
//!    ([`ShardConfig::caller_wake_batch`]);
//! 4. queues one gather send of every PDU the session has waiting (payload straight from
//!    the callers' buffers; zero-copy above [`ShardConfig::send_zc_min_bytes`]) and the
//!    next receive (with a raised socket low-water mark while answers to small reads
//!    trickle in one by one, so that one wake-up takes several:
//!    [`ShardConfig::recv_coalesce`]), and enters the kernel once: without waiting if
//!    requests are queued, else asleep until a completion, the doorbell, the session's next
//!    timer or a due wake-up of the caller (the wait's own timeout: no timeout entries on
//!    the ring). An idle shard first polls its queue for [`ShardConfig::idle_spin`]; one
//!    with one or two commands in flight polls the ring for their answers for
//!    [`ShardConfig::completion_spin`].
//!
//! Work can also run on the shard's own thread ([`ShardPool::run_on_shard`],
//! [`ShardWork`]): in step 3 the shard hands it the completions of its requests and takes
//! the requests it makes straight into the session, with no queue, doorbell or wake-up in
//! between (run to completion, as on an SPDK or Seastar reactor). Measured with
//! `iscsi-perfcmp --mode on-shard|queue` (4 KiB reads, 32 in flight, the embedded null
//! target): 400 to 500K IOPS at 1.8 to 2.2 us of CPU per I/O on the shard, against 230
//! to 285K at 2.6 to 3.2 us through the queue.
//!
//! Callers wake a sleeping shard by writing its doorbell (an eventfd the shard keeps a read
//! on), and only while the shard has announced that it sleeps: a busy shard costs its
//! callers no system call. The socket and the doorbell are registered files of the ring.
//! The other way, a caller sleeps on a futex word that the shard clears and wakes (`waiter`),
//! again only when the caller has announced it.
//!
//! A lost connection fails that shard's commands in flight with
//! [`CommandError::ConnectionLost`]; later requests to that shard fail at once with the same
//! error, and the other shards go on. With [`ShardConfig::reconnect`] on, the shard logs in
//! again instead (session reinstatement, bounded: `reconnect`), sends the commands it held
//! once more and goes on; [`ShardStats::reconnects`] and the gap are counted.
//!
//! A shard can drive an offload adapter's queue pair instead of its own TCP connection
//! ([`ShardConfig::path`], [`ShardPath`]): the same loop, with `adapters` as its path (its
//! error policy and counters are documented there).
//!
//! [`Session::data_in_destination`]: crate::session::Session::data_in_destination

mod adapters;
mod inline;
mod member;
mod multipath;
mod path_list;
mod probe;
mod reconnect;
mod ring_wake;
mod run;
mod steer;
mod tag_map;
mod tcp;
mod waiter;
mod work;

pub use adapters::{planned_cores, queue_pairs_needed, ShardPath, ShardPathInfo};
pub use inline::InlineShard;
pub use multipath::{MultipathConfig, PathPolicy, PathStatus, ALUA_POLL};
pub use path_list::PathList;
pub use probe::{InlineExecutor, ShardCommandError, ShardExecutor};
pub use reconnect::ReconnectPolicy;
pub use tag_map::{TagHasher, TagMap};
pub use work::{ShardWork, WorkStatus, WorkSubmitter, IDLE_POLL as WORK_IDLE_POLL};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender, TrySendError};

use crate::adapter::{AdapterError, Notifier, PathError, PathFailure};
use crate::session::connect::ClientConfig;
use crate::session::{CommandError, CommandOutcome, Request};
use crate::transport::{TransportError, TransportKind};

/// How one shard is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardConfig {
    /// The core the first shard pins to; shard `i` pins to `(core + i) % cores`. `None`
    /// leaves the threads unpinned.
    pub core: Option<usize>,
    /// Most commands a shard holds in its session at once; also the bound of its
    /// submission queue. The completion queue holds twice as many, and a shard takes no
    /// new command while that would overfill it.
    pub queue_depth: usize,
    /// Sessions per shard. Only 1 is supported today.
    pub sessions_per_shard: usize,
    /// Submission queue entries of each shard's ring.
    pub ring_entries: u32,
    /// Reads at least this long are received without a copy (header first, then the
    /// payload straight into the caller's buffer).
    pub zero_copy_min_bytes: u32,
    /// How long an idle shard polls its queue before it sleeps on it (CPU traded for
    /// latency at low queue depth). Zero sleeps at once.
    pub idle_spin: Duration,
    /// How long a shard with one or two commands in flight polls for their answers before
    /// it sleeps in the kernel (reading the ring's shared memory, no system call). At low
    /// depth every answer otherwise costs a wake-up of a sleeping core, which on a virtual
    /// machine is a good part of the round trip. Zero sleeps at once.
    pub completion_spin: Duration,
    /// What carries the commands: software TCP (the default) or queue pair `i` of an
    /// offload adapter for shard `i`.
    pub path: ShardPath,
    /// Ask for a kernel submission-polling thread per shard (`IORING_SETUP_SQPOLL`, which
    /// the kernel does not combine with `DEFER_TASKRUN`). Off by default: the polling
    /// thread costs a core while busy. Measured (`iscsi-perfcmp --sqpoll`, embedded null
    /// target, 2 vCPUs, four alternating rounds): 4 KiB qd32 0.56x the IOPS at 2.7x the CPU
    /// per I/O, 64 KiB qd8 0.44x at 3.5x, 4 KiB qd1 0.45x at 4.5x; on a machine with
    /// fewer cores than busy threads the polling thread only takes time from the others.
    pub sqpoll: bool,
    /// Busy-poll the NIC queue for up to this many microseconds on receive (`SO_BUSY_POLL`
    /// and io_uring's NAPI busy polling, where the kernel allows; never on loopback). 0 is
    /// off.
    pub busy_poll_us: u32,
    /// Send with `IORING_OP_SENDMSG_ZC` when a PDU's payload is at least this long; `None`
    /// never does. Zero-copy sends pin the pages and post a second completion when the NIC
    /// is done with them: that pays only on real NICs and large payloads. On loopback the
    /// kernel copies anyway, so there the threshold is "never" (measured with
    /// `iscsi-perfcmp --pattern seqwrite --send-zc-min-bytes`, see its docs).
    pub send_zc_min_bytes: Option<u32>,
    /// Software path: choose each connection's local port so that its receive hash lands on
    /// the shard's NIC queue (shard `i`, queue `i`), and report in [`ShardInfo::steering`]
    /// whether it held. Interfaces without RSS (loopback, veth) are reported as such.
    pub steer: bool,
    /// How a shard wakes a caller asleep in [`ShardPool::wait_completion`] (completion
    /// moderation, like a NIC's interrupt coalescing): at once when none of its commands
    /// is left in flight; otherwise once this many completions are posted (`None`: the
    /// queue depth) or the oldest of them has waited `caller_wake_delay_max`. Every wake-up
    /// costs the shard a futex wake and the caller a context switch, and a caller woken
    /// per completion refills one slot at a time (one doorbell, one command send each).
    /// Measured (`iscsi-perfcmp`, embedded null target, 64 KiB reads, 8 in flight, eight
    /// alternating rounds): waking at the queue depth instead of at 2 took 0.71x the CPU
    /// per I/O and gave 1.2x the IOPS; 4 KiB reads with 32 in flight gained a little.
    /// `Some(1)` wakes the caller for every batch posted. A caller that polls (or uses
    /// [`ShardPool::completions`] directly) sees each completion as soon as it is posted.
    pub caller_wake_batch: Option<usize>,
    /// The longest a posted completion waits for that wake-up (see `caller_wake_batch`).
    pub caller_wake_delay_max: Duration,
    /// Receive coalescing, the longest a receive waits for answers to gather: when answers
    /// to small reads trickle in (two greedy receives in a row brought under 16 KiB each)
    /// while at least half the queue depth is in flight, the shard sets the socket's
    /// receive low-water mark (`SO_RCVLOWAT`) to half the bytes the answers in flight
    /// bring, so the kernel wakes it once for several answers, and lowers the mark again
    /// after this long. Zero turns it off. Measured (`iscsi-perfcmp`, 4 KiB reads, tgt's
    /// null LUN, whose answers come one by one): at 32 in flight 150 us took 3.3 to 3.7 us
    /// of CPU per I/O against 5.9 to 7.2 with a 40 us bound, at higher IOPS; at 8 in flight
    /// 86 to 93K IOPS against 64 to 76K. A fixed delay before the receive (the earlier
    /// design) cost IOPS at 8 and 16 in flight: the target answers at the pace commands
    /// come, so a timer only slowed both. Large reads (headers taken alone) never wait.
    pub recv_coalesce: Duration,
    /// What a software shard does when its connection is lost: log in again (bounded, see
    /// `reconnect`) or, by default, fail its commands for good.
    pub reconnect: ReconnectPolicy,
    /// One LU over several software paths (`shard::multipath`): each shard logs in to
    /// every portal given. `None`: one path, to the client configuration's portal.
    pub multipath: Option<MultipathConfig>,
    /// `TCP_USER_TIMEOUT` on the path's connections (software, and an adapter's socket
    /// through `session::Liveness`): a link cut silently ends the
    /// connection after this long with data unacknowledged (with NOP-Out pings,
    /// `ClientConfig::nop_interval`/`nop_timeout`, it bounds how long a silent path loss
    /// goes unnoticed). `None`: the kernel's default.
    pub tcp_user_timeout: Option<Duration>,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            core: None,
            queue_depth: 32,
            sessions_per_shard: 1,
            ring_entries: 64,
            zero_copy_min_bytes: 16 * 1024,
            idle_spin: Duration::from_micros(50),
            completion_spin: Duration::from_micros(20),
            path: ShardPath::Software,
            sqpoll: false,
            busy_poll_us: 0,
            send_zc_min_bytes: None,
            steer: true,
            caller_wake_batch: None,
            caller_wake_delay_max: Duration::from_micros(100),
            recv_coalesce: Duration::from_micros(150),
            reconnect: ReconnectPolicy::OFF,
            multipath: None,
            tcp_user_timeout: None,
        }
    }
}

/// The end of one [`Request`] on a shard: the target's answer (any SCSI status), or why the
/// command failed; either way the buffer comes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardCompletion {
    pub user_data: u64,
    /// A failure names its layer: the session's [`CommandError`] inside
    /// [`PathError::Command`], or an adapter's fault ([`PathError::Adapter`]).
    pub result: Result<CommandOutcome, PathFailure>,
}

/// Why a pool could not start or a shard stopped.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("shard {shard}: connecting to {portal}: {source}")]
    Connect {
        shard: usize,
        portal: std::net::SocketAddr,
        source: TransportError,
    },
    #[error("shard {shard}: login failed: {reason}")]
    Login { shard: usize, reason: String },
    /// A login redirect that cannot be followed (a loop, the hop limit, an unresolvable name).
    #[error("shard {shard}: {source}")]
    Redirect {
        shard: usize,
        source: crate::session::redirect::RedirectError,
    },
    #[error("shard {shard}: thread could not start: {source}")]
    Spawn {
        shard: usize,
        source: std::io::Error,
    },
    #[error("shard {shard} stopped before it reported")]
    Vanished { shard: usize },
    #[error("shard {shard}: no completion within {after:?}")]
    TimedOut { shard: usize, after: Duration },
    #[error("invalid shard configuration: {0}")]
    InvalidConfig(&'static str),
    #[error("no shard {index} (the pool has {shards})")]
    NoSuchShard { index: usize, shards: usize },
    #[error("shard {shard}: offload adapter: {source}")]
    Adapter { shard: usize, source: AdapterError },
    /// The connection was lost and recovery gave up (or was off): the shard carries no
    /// command any more.
    #[error("shard {shard}: session lost: {reason}")]
    Lost { shard: usize, reason: String },
    /// An inline shard was driven from a thread other than the one that connected it.
    #[error("shard {shard}: an inline shard is driven from the thread that connected it")]
    WrongThread { shard: usize },
}

impl ShardPath {
    /// Which of the three transports this path is (the adapter it holds aside).
    pub fn kind(&self) -> TransportKind {
        match self {
            ShardPath::Software => TransportKind::Software,
            ShardPath::Dependent(_) => TransportKind::Dependent,
            ShardPath::Independent(_) => TransportKind::Independent,
        }
    }
}

/// Counters of one shard, updated by the shard after each turn of its loop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Commands completed (any status) or failed.
    pub ios: u64,
    pub ios_failed: u64,
    /// Payload bytes read and written.
    pub bytes: u64,
    /// Times the shard's ring entered the kernel.
    pub kernel_entries: u64,
    /// Payload bytes copied in user space (staged receives); 0 when every payload was
    /// placed straight into its buffer.
    pub bytes_copied: u64,
    /// Receives armed with a raised socket low-water mark (`ShardConfig::recv_coalesce`):
    /// each waits for several small answers instead of waking for the first.
    pub coalesced_receives: u64,
    /// Time commands waited in the session for the command window (or the in-flight bound).
    pub window_closed_ns: u64,
    /// Commands the shard holds now, and the most it ever held.
    pub queue_depth: u64,
    pub peak_queue_depth: u64,
    /// Connections re-established after a loss, the longest and the total time from a
    /// loss to the new login, and the commands sent again on a new connection.
    pub reconnects: u64,
    pub reconnect_gap_ns_max: u64,
    pub reconnect_gap_ns_total: u64,
    pub commands_resent: u64,
    /// Moves the target asked for (Async Message event 1), each made before the old
    /// connection was let go.
    pub moves: u64,
    /// Async Messages received, and those that reported REPORTED LUNS DATA HAS CHANGED
    /// (event 0 with 3Fh/0Eh: the caller should run REPORT LUNS).
    pub async_events: u64,
    pub luns_changed: u64,
}

impl ShardStats {
    /// Kernel entries per completed I/O (0 before the first I/O).
    pub fn kernel_entries_per_io(&self) -> f64 {
        if self.ios == 0 {
            0.0
        } else {
            self.kernel_entries as f64 / self.ios as f64
        }
    }

    /// The sum of several shards' counters (depths: summed too).
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a ShardStats>) -> ShardStats {
        all.into_iter()
            .fold(ShardStats::default(), |a, s| ShardStats {
                ios: a.ios + s.ios,
                ios_failed: a.ios_failed + s.ios_failed,
                bytes: a.bytes + s.bytes,
                kernel_entries: a.kernel_entries + s.kernel_entries,
                bytes_copied: a.bytes_copied + s.bytes_copied,
                coalesced_receives: a.coalesced_receives + s.coalesced_receives,
                window_closed_ns: a.window_closed_ns + s.window_closed_ns,
                queue_depth: a.queue_depth + s.queue_depth,
                peak_queue_depth: a.peak_queue_depth + s.peak_queue_depth,
                reconnects: a.reconnects + s.reconnects,
                reconnect_gap_ns_max: a.reconnect_gap_ns_max.max(s.reconnect_gap_ns_max),
                reconnect_gap_ns_total: a.reconnect_gap_ns_total + s.reconnect_gap_ns_total,
                commands_resent: a.commands_resent + s.commands_resent,
                moves: a.moves + s.moves,
                async_events: a.async_events + s.async_events,
                luns_changed: a.luns_changed + s.luns_changed,
            })
    }
}

/// The shard's counters as the caller reads them: written by the shard thread only, with
/// relaxed stores (a snapshot may mix two turns; each counter is exact on its own).
#[derive(Debug, Default)]
struct SharedStats {
    ios: AtomicU64,
    ios_failed: AtomicU64,
    bytes: AtomicU64,
    kernel_entries: AtomicU64,
    bytes_copied: AtomicU64,
    coalesced_receives: AtomicU64,
    window_closed_ns: AtomicU64,
    queue_depth: AtomicU64,
    peak_queue_depth: AtomicU64,
    reconnects: AtomicU64,
    reconnect_gap_ns_max: AtomicU64,
    reconnect_gap_ns_total: AtomicU64,
    commands_resent: AtomicU64,
    moves: AtomicU64,
    async_events: AtomicU64,
    luns_changed: AtomicU64,
    /// The sub-paths of a multipath shard (empty otherwise), refreshed now and then.
    paths: std::sync::Mutex<Vec<PathStatus>>,
}

impl SharedStats {
    fn store(&self, s: &ShardStats) {
        let r = Ordering::Relaxed;
        self.ios.store(s.ios, r);
        self.ios_failed.store(s.ios_failed, r);
        self.bytes.store(s.bytes, r);
        self.kernel_entries.store(s.kernel_entries, r);
        self.bytes_copied.store(s.bytes_copied, r);
        self.coalesced_receives.store(s.coalesced_receives, r);
        self.window_closed_ns.store(s.window_closed_ns, r);
        self.queue_depth.store(s.queue_depth, r);
        self.peak_queue_depth.store(s.peak_queue_depth, r);
        self.reconnects.store(s.reconnects, r);
        self.reconnect_gap_ns_max.store(s.reconnect_gap_ns_max, r);
        self.reconnect_gap_ns_total
            .store(s.reconnect_gap_ns_total, r);
        self.commands_resent.store(s.commands_resent, r);
        self.moves.store(s.moves, r);
        self.async_events.store(s.async_events, r);
        self.luns_changed.store(s.luns_changed, r);
    }

    fn store_paths(&self, paths: Vec<PathStatus>) {
        if paths.is_empty() {
            return;
        }
        if let Ok(mut held) = self.paths.lock() {
            *held = paths;
        }
    }

    fn load_paths(&self) -> Vec<PathStatus> {
        self.paths.lock().map(|p| p.clone()).unwrap_or_default()
    }

    fn load(&self) -> ShardStats {
        let r = Ordering::Relaxed;
        ShardStats {
            ios: self.ios.load(r),
            ios_failed: self.ios_failed.load(r),
            bytes: self.bytes.load(r),
            kernel_entries: self.kernel_entries.load(r),
            bytes_copied: self.bytes_copied.load(r),
            coalesced_receives: self.coalesced_receives.load(r),
            window_closed_ns: self.window_closed_ns.load(r),
            queue_depth: self.queue_depth.load(r),
            peak_queue_depth: self.peak_queue_depth.load(r),
            reconnects: self.reconnects.load(r),
            reconnect_gap_ns_max: self.reconnect_gap_ns_max.load(r),
            reconnect_gap_ns_total: self.reconnect_gap_ns_total.load(r),
            commands_resent: self.commands_resent.load(r),
            moves: self.moves.load(r),
            async_events: self.async_events.load(r),
            luns_changed: self.luns_changed.load(r),
        }
    }
}

/// Works that may wait for a shard busy with another (`ShardPool::run_on_shard`).
const WORKS_WAITING: usize = 4;

/// How a caller wakes a shard that sleeps in the kernel: an eventfd the shard keeps a read
/// on (in its ring), written only while the shard has said it sleeps, so a busy shard costs
/// its callers no system call.
#[derive(Debug)]
pub(crate) struct Doorbell {
    fd: crate::sys::EventFd,
    /// Set by the shard just before it sleeps with room for requests.
    sleeping: std::sync::atomic::AtomicBool,
    /// Set by the pool when it stops: a shard recovering its connection (which reads no
    /// doorbell) gives up at once.
    stopping: std::sync::atomic::AtomicBool,
    /// The other direction: where the caller sleeps until the shard posts completions
    /// ([`ShardPool::wait_completion`]); the shard wakes it after each batch it posts.
    pub(crate) caller: waiter::CallerWaiter,
}

impl Doorbell {
    fn new() -> std::io::Result<Doorbell> {
        Ok(Doorbell {
            fd: crate::sys::EventFd::new()?,
            sleeping: std::sync::atomic::AtomicBool::new(false),
            stopping: std::sync::atomic::AtomicBool::new(false),
            caller: waiter::CallerWaiter::default(),
        })
    }

    pub(crate) fn fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.fd)
    }

    /// Called after queueing a request: wakes the shard if it sleeps.
    fn ring(&self) {
        // Pairs with the shard's store-then-look (see `run::ShardLoop::wait`).
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::AcqRel) {
            self.write();
        }
    }

    /// Wakes the shard whatever it is doing (the stop signal).
    fn ring_always(&self) {
        self.sleeping.store(false, Ordering::Relaxed);
        self.write();
    }

    fn write(&self) {
        self.fd.signal();
    }
}

/// What a shard's thread starts with: pins itself, brings its path up (a software
/// connection or an adapter queue pair), says so, then runs the one loop (`run`).
struct ShardThread {
    setup: tcp::Setup,
    channels: run::Channels,
    shared: Arc<SharedStats>,
    /// Set once an adapter path is up: the eventfd the pool writes when a caller submits.
    wake: Arc<OnceLock<Arc<Notifier>>>,
    /// The queue pairs an adapter path takes.
    adapter_slot: adapters::AdapterSlot,
}

impl ShardThread {
    fn run(self, ready: Sender<Result<ShardInfo, ShardError>>) {
        let ShardThread {
            setup,
            channels,
            shared,
            wake,
            adapter_slot,
        } = self;
        let index = setup.index;
        if let Some(core) = setup.core {
            if !core_affinity::set_for_current(core) {
                tracing::warn!(shard = index, core = core.id, "could not pin the shard");
            }
        }
        let doorbell = Arc::clone(&setup.doorbell);
        let config = setup.config.clone();
        let up: Result<(Box<dyn run::Path>, ShardInfo), ShardError> = match config.path {
            ShardPath::Software => tcp::connect_software(setup),
            // Each sub-path takes its own queue pairs (`multipath`).
            _ if config.multipath.is_some() => multipath::connect(setup),
            _ => adapters::AdapterShardPath::connect(
                adapter_slot,
                &setup.client_config,
                &config,
                setup.core.map(|c| c.id),
            )
            .map(|(path, info)| {
                let _ = wake.set(Arc::clone(path.caller_wake()));
                (Box::new(path) as Box<dyn run::Path>, info)
            }),
        };
        match up {
            Ok((path, info)) => {
                let _ = ready.send(Ok(info));
                run::ShardLoop::new(index, config, path, channels, shared, Arc::clone(&doorbell))
                    .serve();
            }
            Err(e) => {
                let _ = ready.send(Err(e));
            }
        }
        // The completion queue is closed now: a caller asleep in
        // `ShardPool::wait_completion` wakes to find that out.
        doorbell.caller.wake();
    }
}

/// What the caller keeps of one running shard.
struct ShardHandle {
    submit: Option<Sender<Request>>,
    /// Works for the shard's own thread.
    work: Option<Sender<Box<dyn ShardWork>>>,
    /// ABORT TASK requests by `user_data` (software shards only).
    abort: Option<Sender<u64>>,
    doorbell: Arc<Doorbell>,
    completions: Receiver<ShardCompletion>,
    stats: Arc<SharedStats>,
    thread: Option<JoinHandle<()>>,
    /// An adapter shard's eventfd, set once its path is up: a submit wakes it.
    wake: Arc<OnceLock<Arc<Notifier>>>,
}

/// Facts about a shard once its session is logged in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    pub core: Option<usize>,
    pub isid: crate::pdu::Isid,
    pub tsih: u16,
    /// The io_uring setup flags the kernel granted.
    pub ring_flags: String,
    /// How the connection was steered to a NIC receive queue (software path with
    /// `ShardConfig::steer`; `None` otherwise).
    pub steering: Option<crate::steering::PathReport>,
    /// Bytes of the shard's receive buffer registered with its ring (sized from the
    /// MaxRecvDataSegmentLength it declares); 0 when the kernel refused, or on an adapter
    /// path (no ring).
    pub registered_buffer_bytes: usize,
    /// Whether the socket and doorbell are registered files of the ring.
    pub registered_files: bool,
}

/// A set of running shards, each with its own session to the same target.
pub struct ShardPool {
    shards: Vec<ShardHandle>,
    info: Vec<ShardInfo>,
    paths: Vec<ShardPathInfo>,
}

impl std::fmt::Debug for ShardPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardPool")
            .field("shards", &self.info)
            .finish()
    }
}

impl ShardPool {
    /// Starts `shards` shards; each connects to `client_config.portal` and logs in to
    /// `client_config.target_name` with its own ISID. Returns once every shard is logged
    /// in, or with the first shard's error (the shards already started are stopped).
    pub fn start(
        client_config: &ClientConfig,
        shards: usize,
        config: &ShardConfig,
    ) -> Result<ShardPool, ShardError> {
        if shards == 0 {
            return Err(ShardError::InvalidConfig("a pool needs at least one shard"));
        }
        if config.queue_depth == 0 {
            return Err(ShardError::InvalidConfig("queue_depth must be at least 1"));
        }
        if config.sessions_per_shard != 1 {
            return Err(ShardError::InvalidConfig(
                "only one session per shard is supported",
            ));
        }
        if client_config.target_name.is_none() {
            return Err(ShardError::InvalidConfig(
                "shards need a target name (not a discovery session)",
            ));
        }
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        if let Some(adapter) = config.path.adapter_info() {
            if usize::from(adapter.capabilities.queue_pairs) < shards {
                return Err(ShardError::InvalidConfig(
                    "the adapter has fewer queue pairs than the pool has shards",
                ));
            }
        }
        let mut pool = ShardPool {
            shards: Vec::with_capacity(shards),
            info: Vec::with_capacity(shards),
            paths: Vec::with_capacity(shards),
        };
        let mut ready = Vec::with_capacity(shards);
        for index in 0..shards {
            let core = match config.core {
                Some(first) if !cores.is_empty() => {
                    cores.get((first + index) % cores.len()).copied()
                }
                _ => None,
            };
            let (submit_tx, submit_rx) = crossbeam_channel::bounded(config.queue_depth);
            let (work_tx, work_rx) = crossbeam_channel::bounded(WORKS_WAITING);
            let (abort_tx, abort_rx) = crossbeam_channel::bounded(config.queue_depth);
            let (done_tx, done_rx) = crossbeam_channel::bounded(2 * config.queue_depth);
            let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
            let stats = Arc::new(SharedStats::default());
            let doorbell = match Doorbell::new() {
                Ok(d) => Arc::new(d),
                Err(source) => {
                    pool.stop();
                    return Err(ShardError::Spawn {
                        shard: index,
                        source,
                    });
                }
            };
            let wake = Arc::new(OnceLock::new());
            let builder = std::thread::Builder::new().name(format!("iscsi-shard-{index}"));
            let adapter = config.path.adapter_info();
            pool.paths.push(ShardPathInfo {
                transport: config.path.name(),
                queue_pair: adapter.as_ref().map(|_| index),
                core: core.map(|c| c.id),
                capabilities: adapter.as_ref().map(|a| a.capabilities),
                adapter: adapter.map(|a| a.name),
            });
            let thread = ShardThread {
                setup: tcp::Setup {
                    index,
                    client_config: client_config.clone(),
                    config: config.clone(),
                    core,
                    doorbell: Arc::clone(&doorbell),
                },
                channels: run::Channels {
                    submit_rx,
                    work_rx,
                    abort_rx,
                    done_tx,
                },
                shared: Arc::clone(&stats),
                wake: Arc::clone(&wake),
                adapter_slot: adapters::AdapterSlot::of_shard(
                    index,
                    shards,
                    config
                        .path
                        .adapter_info()
                        .map_or(0, |a| usize::from(a.capabilities.queue_pairs)),
                ),
            };
            let thread = builder.spawn(move || thread.run(ready_tx));
            let thread = thread.map_err(|source| ShardError::Spawn {
                shard: index,
                source,
            });
            let thread = match thread {
                Ok(thread) => thread,
                Err(e) => {
                    pool.stop();
                    return Err(e);
                }
            };
            let software = config.path == ShardPath::Software;
            pool.shards.push(ShardHandle {
                submit: Some(submit_tx),
                work: Some(work_tx),
                abort: software.then_some(abort_tx),
                doorbell,
                completions: done_rx,
                stats,
                thread: Some(thread),
                wake,
            });
            ready.push(ready_rx);
        }
        // Logins run in parallel; collect every answer before deciding.
        let answers: Vec<Result<ShardInfo, ShardError>> = ready
            .into_iter()
            .enumerate()
            .map(|(shard, rx)| rx.recv().unwrap_or(Err(ShardError::Vanished { shard })))
            .collect();
        for answer in answers {
            match answer {
                Ok(info) => pool.info.push(info),
                Err(e) => {
                    pool.stop();
                    return Err(e);
                }
            }
        }
        Ok(pool)
    }

    /// How many shards run.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    pub fn info(&self, shard: usize) -> Option<&ShardInfo> {
        self.info.get(shard)
    }

    /// Which path shard `shard` drives, and its adapter queue pair and core.
    pub fn path_info(&self, shard: usize) -> Option<&ShardPathInfo> {
        self.paths.get(shard)
    }

    /// Queues a request on shard `shard` without waiting. A full queue (or a stopped or
    /// unknown shard) hands the request back.
    pub fn submit(&self, shard: usize, request: Request) -> Result<(), Request> {
        let Some(handle) = self.shards.get(shard) else {
            return Err(request);
        };
        let Some(tx) = handle.submit.as_ref() else {
            return Err(request);
        };
        tx.try_send(request).map_err(|e| match e {
            TrySendError::Full(r) | TrySendError::Disconnected(r) => r,
        })?;
        handle.doorbell.ring();
        if let Some(wake) = handle.wake.get() {
            // Costs a system call only when the adapter shard sleeps.
            wake.notify();
        }
        Ok(())
    }

    /// Asks shard `shard` to abort the command submitted with `user_data` (ABORT TASK,
    /// [`crate::session::Session::abort_task`]); its completion then fails with
    /// [`CommandError::Aborted`] once the target confirms, or comes as usual if the answer
    /// won the race. A command the shard no longer holds is ignored. Software shards only;
    /// a full abort queue (more aborts than the queue depth pending) is refused.
    pub fn abort(&self, shard: usize, user_data: u64) -> Result<(), ShardError> {
        let shards = self.shards.len();
        let handle = self.shards.get(shard).ok_or(ShardError::NoSuchShard {
            index: shard,
            shards,
        })?;
        let tx = handle.abort.as_ref().ok_or(ShardError::InvalidConfig(
            "aborts run on software shards only",
        ))?;
        tx.try_send(user_data).map_err(|e| match e {
            TrySendError::Full(_) => ShardError::InvalidConfig("too many aborts pending"),
            TrySendError::Disconnected(_) => ShardError::Vanished { shard },
        })?;
        handle.doorbell.ring();
        Ok(())
    }

    /// Runs `work` on shard `shard`'s own thread, inside its loop (see [`ShardWork`]): its
    /// requests go straight into the shard's session and their completions straight back
    /// to it, with no queue, doorbell or wake-up between. A shard runs one work at a time
    /// (a few more wait their turn); queue callers share the shard's depth with it.
    /// Every path runs it: the loop is the same.
    pub fn run_on_shard(&self, shard: usize, work: Box<dyn ShardWork>) -> Result<(), ShardError> {
        let shards = self.shards.len();
        let handle = self.shards.get(shard).ok_or(ShardError::NoSuchShard {
            index: shard,
            shards,
        })?;
        let tx = handle.work.as_ref().ok_or(ShardError::Vanished { shard })?;
        tx.try_send(work).map_err(|e| match e {
            TrySendError::Full(_) => {
                ShardError::InvalidConfig("too many works already wait for this shard")
            }
            TrySendError::Disconnected(_) => ShardError::Vanished { shard },
        })?;
        handle.doorbell.ring_always();
        if let Some(wake) = handle.wake.get() {
            wake.wake();
        }
        Ok(())
    }

    /// The completions of shard `shard`, in the order the target finished the commands.
    pub fn completions(&self, shard: usize) -> Option<&Receiver<ShardCompletion>> {
        self.shards.get(shard).map(|s| &s.completions)
    }

    /// The next completion of shard `shard`: taken at once if one is waiting, else polled
    /// for up to `spin` (a sleeping caller costs a wake-up per completion, which matters
    /// with one command in flight), else waited for, asleep, up to `timeout`. Cheaper than
    /// a blocking receive on [`ShardPool::completions`], which spins and yields the core
    /// before it sleeps (see `waiter`).
    pub fn wait_completion(
        &self,
        shard: usize,
        spin: Duration,
        timeout: Duration,
    ) -> Result<ShardCompletion, ShardError> {
        let shards = self.shards.len();
        let handle = self.shards.get(shard).ok_or(ShardError::NoSuchShard {
            index: shard,
            shards,
        })?;
        let take = || match handle.completions.try_recv() {
            Ok(done) => Some(Ok(done)),
            Err(crossbeam_channel::TryRecvError::Empty) => None,
            Err(crossbeam_channel::TryRecvError::Disconnected) => {
                Some(Err(ShardError::Vanished { shard }))
            }
        };
        if let Some(answer) = take() {
            return answer;
        }
        let started = std::time::Instant::now();
        if !spin.is_zero() {
            // Bounded by the clock.
            while started.elapsed() < spin {
                if let Some(answer) = take() {
                    return answer;
                }
                std::thread::yield_now();
            }
        }
        let waiter = &handle.doorbell.caller;
        // Bounded by the clock: each round sleeps until woken or the time left.
        loop {
            waiter.announce();
            if let Some(answer) = take() {
                waiter.withdraw();
                return answer;
            }
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                waiter.withdraw();
                return Err(ShardError::TimedOut {
                    shard,
                    after: timeout,
                });
            }
            waiter.sleep(left);
        }
    }

    /// Runs one command on shard `shard` and waits for it. Meant for a caller with nothing
    /// else in flight on that shard: completions of other requests arriving meanwhile are
    /// dropped (with a warning).
    pub fn execute(
        &self,
        shard: usize,
        request: Request,
        timeout: Duration,
    ) -> Result<ShardCompletion, ShardError> {
        let shards = self.shards.len();
        let handle = self.shards.get(shard).ok_or(ShardError::NoSuchShard {
            index: shard,
            shards,
        })?;
        let tx = handle
            .submit
            .as_ref()
            .ok_or(ShardError::Vanished { shard })?;
        let user_data = request.user_data;
        let timed_out = ShardError::TimedOut {
            shard,
            after: timeout,
        };
        tx.send_timeout(request, timeout).map_err(|e| match e {
            SendTimeoutError::Timeout(_) => timed_out,
            SendTimeoutError::Disconnected(_) => ShardError::Vanished { shard },
        })?;
        handle.doorbell.ring();
        if let Some(wake) = handle.wake.get() {
            wake.notify();
        }
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let completion = handle.completions.recv_timeout(left).map_err(|e| match e {
                RecvTimeoutError::Timeout => ShardError::TimedOut {
                    shard,
                    after: timeout,
                },
                RecvTimeoutError::Disconnected => ShardError::Vanished { shard },
            })?;
            if completion.user_data == user_data {
                return Ok(completion);
            }
            tracing::warn!(
                shard,
                user_data = completion.user_data,
                "execute dropped the completion of another request"
            );
        }
    }

    /// The counters of shard `shard`.
    pub fn stats(&self, shard: usize) -> Option<ShardStats> {
        self.shards.get(shard).map(|s| s.stats.load())
    }

    /// Shard `shard`'s sub-paths and their states (multipath; empty otherwise), as the
    /// shard last published them (at most 100 ms old).
    pub fn path_statuses(&self, shard: usize) -> Vec<PathStatus> {
        self.shards
            .get(shard)
            .map(|s| s.stats.load_paths())
            .unwrap_or_default()
    }

    /// Every shard's counters, in shard order.
    pub fn all_stats(&self) -> Vec<ShardStats> {
        self.shards.iter().map(|s| s.stats.load()).collect()
    }

    /// Stops every shard: each finishes the commands it holds, logs out and closes its
    /// connection. Returns the final counters.
    pub fn shutdown(mut self) -> Vec<ShardStats> {
        self.stop();
        self.shards.iter().map(|s| s.stats.load()).collect()
    }

    fn stop(&mut self) {
        // Closing the submission queue is the stop signal.
        for shard in &mut self.shards {
            shard.submit = None;
            shard.work = None;
            shard.abort = None;
            shard.doorbell.stopping.store(true, Ordering::SeqCst);
            shard.doorbell.ring_always();
            // An adapter shard sleeps on its adapter's eventfd instead.
            if let Some(wake) = shard.wake.get() {
                wake.wake();
            }
        }
        for shard in &mut self.shards {
            // Completions not taken by the caller must not block a stopping shard.
            while shard.completions.try_recv().is_ok() {}
            if let Some(thread) = shard.thread.take() {
                // Drain while waiting, so a shard posting its last completions finishes.
                while !thread.is_finished() {
                    while shard.completions.try_recv().is_ok() {}
                    std::thread::sleep(Duration::from_millis(1));
                }
                if thread.join().is_err() {
                    tracing::error!("a shard thread panicked");
                }
            }
        }
    }
}

impl Drop for ShardPool {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A failed command with its buffer handed back.
fn failure(error: CommandError, buffer: Vec<u8>) -> PathFailure {
    PathFailure {
        error: PathError::Command(error),
        buffer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_config(portal: std::net::SocketAddr) -> ClientConfig {
        let mut config = ClientConfig::new(portal, Some("iqn.2026-11.test:t".into()));
        config.connect_timeout = Duration::from_secs(2);
        config
    }

    fn closed_port() -> std::net::SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        addr
    }

    #[test]
    fn invalid_configurations_are_refused_before_any_thread_starts() {
        let cc = client_config(closed_port());
        let config = ShardConfig::default();
        let invalid =
            |r: Result<ShardPool, ShardError>| matches!(r, Err(ShardError::InvalidConfig(_)));
        assert!(invalid(ShardPool::start(&cc, 0, &config)));
        let two_sessions = ShardConfig {
            sessions_per_shard: 2,
            ..ShardConfig::default()
        };
        assert!(invalid(ShardPool::start(&cc, 1, &two_sessions)));
        let no_depth = ShardConfig {
            queue_depth: 0,
            ..ShardConfig::default()
        };
        assert!(invalid(ShardPool::start(&cc, 1, &no_depth)));
        let mut discovery = cc.clone();
        discovery.target_name = None;
        assert!(invalid(ShardPool::start(&discovery, 1, &config)));
    }

    #[test]
    fn a_refused_connection_fails_start_naming_the_shard_and_portal() {
        let portal = closed_port();
        match ShardPool::start(&client_config(portal), 2, &ShardConfig::default()) {
            Err(ShardError::Connect {
                portal: p, source, ..
            }) => {
                assert_eq!(p, portal);
                assert!(
                    matches!(source, TransportError::ConnectionRefused(_)),
                    "{source}"
                );
            }
            other => panic!("expected a connect error, got {other:?}"),
        }
    }

    #[test]
    fn stats_sum_and_entries_per_io() {
        let a = ShardStats {
            ios: 10,
            kernel_entries: 5,
            bytes: 100,
            ..ShardStats::default()
        };
        let b = ShardStats {
            ios: 30,
            kernel_entries: 15,
            bytes_copied: 7,
            ..ShardStats::default()
        };
        let sum = ShardStats::sum(&[a, b]);
        assert_eq!(
            (sum.ios, sum.kernel_entries, sum.bytes, sum.bytes_copied),
            (40, 20, 100, 7)
        );
        assert_eq!(sum.kernel_entries_per_io(), 0.5);
        assert_eq!(ShardStats::default().kernel_entries_per_io(), 0.0);
    }
}
