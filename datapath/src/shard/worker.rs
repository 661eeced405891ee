//! One shard's thread: its connection, its session and its event loop (see the module docs
//! of [`crate::shard`] for what one turn of the loop does).
//!
//! The loop is event-driven: it keeps at most one receive (and one receive linked behind a
//! placed payload), one send and one doorbell read on its ring, submits whatever it queued
//! in a turn with a single `io_uring_enter`, and waits in that same call (bounded by the
//! session's next timer or a due caller wake-up, passed to the kernel as the wait's own
//! timeout, so no timeout entries ride on the ring).
//!
//! Memory the kernel touches: the staging buffer (registered with the ring as its fixed
//! buffer, sized from the data segment length the shard declares) and the send scratch are
//! the shard's own and are never moved or resized while the ring lives; a placed receive writes
//! into, and a send reads from, a command's buffer held by the session. The session hands
//! such a buffer back only inside an event (never drops it), and the shard posts those
//! events to the caller only while no receive into, or send from, a caller's buffer is in
//! flight (`Shard::post`). So no buffer the kernel may still use ever leaves the shard.

use std::os::fd::RawFd;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use io_uring::{opcode, squeue, types};

use super::reconnect::{Recovery, Step};
use super::tag_map::TagMap;
use super::work::{RunningWork, ShardWork, WorkStatus, WorkSubmitter};
use super::{failure, Doorbell, ShardCompletion, ShardConfig, ShardError, ShardInfo};
use super::{ShardStats, SharedStats};
use crate::adapter::PathFailure;
use crate::pdu::{self, digest, Header, Limits, BHS_LEN};
use crate::scsi::Cdb;
use crate::session::connect::{shard_isid, ClientConfig};
use crate::session::{
    CommandError, DataDirection, Event, Request, Session, SessionState, SubmitRejection, TaskId,
    Transmit,
};
use crate::transport::ring::{Completion, EVENT_TOKEN_BASE};
use crate::transport::tcp::advance_iovecs;
use crate::transport::{RingConfig, TcpConnection};

/// The longest an idle shard sleeps before it looks at its timers again.
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// How long a shard whose completion queue is full waits before it looks again (the caller
/// takes completions without ringing the doorbell).
const FULL_WAIT: Duration = Duration::from_millis(1);
/// Room for one encoded header: BHS, the largest AHS we accept, header digest.
const HEADER_SLOT: usize = BHS_LEN + 1024 + 4;
/// PDUs sent in one gather send: each takes up to three buffers (header, data, trailer),
/// under Linux's limit of 1024 per `sendmsg`.
const PDUS_PER_SEND: usize = 256;
/// The smallest staging buffer (greedy receives of many small PDUs).
const STAGING_MIN: usize = 64 * 1024;
/// Receive coalescing (`ShardConfig::recv_coalesce`): a greedy receive that brings less
/// than this is "small"; after this many small ones in a row, with at least half the
/// queue depth in flight, the next receive waits for a raised low-water mark.
const COALESCE_BELOW_BYTES: usize = 16 * 1024;
const COALESCE_AFTER_SMALL_RECEIVES: u32 = 2;
/// Backoff bound: after this many missed waits, 2 << 6 = 128 small receives come between
/// two tries.
const COALESCE_MAX_MISSES: u32 = 6;
/// Placed payloads at least this long are received with the socket's low-water mark at
/// their length (one wake-up for the whole payload). Measured (`iscsi-perfcmp`, 1 MiB reads
/// at 4, tgt's null LUN, three alternating rounds): 153-172 us of CPU per I/O against
/// 177-198 without. At 32 KiB it cost 64 KiB reads more than it saved (2.1-2.9 kernel
/// entries per I/O against 1.4-2.5, 3-20% more CPU): the mark's system calls outweigh the
/// wake-ups of a payload that short.
const PLACED_LOW_WATER_MIN: usize = 256 * 1024;
/// Most commands in flight for which a shard polls for answers (`completion_spin`).
const COMPLETION_SPIN_MAX_HELD: usize = 2;
/// Rounds of waiting for the kernel to finish this shard's operations when it stops.
const QUIESCE_ROUNDS: usize = 500;

/// Tokens of the shard's ring operations: at most one of each kind is in flight.
const TOKEN_RECV: u64 = EVENT_TOKEN_BASE + 1;
const TOKEN_SEND: u64 = EVENT_TOKEN_BASE + 2;
const TOKEN_DOORBELL: u64 = EVENT_TOKEN_BASE + 3;
/// Cancellations and the socket shutdown that ends a lost connection (results unused).
const TOKEN_CANCEL: u64 = EVENT_TOKEN_BASE + 4;
/// A staging receive linked behind a placed one (`Shard::linked_recv`).
const TOKEN_RECV_LINKED: u64 = EVENT_TOKEN_BASE + 5;

/// The queues between a shard and its callers.
pub(super) struct Channels {
    pub(super) submit_rx: Receiver<Request>,
    pub(super) work_rx: Receiver<Box<dyn ShardWork>>,
    /// ABORT TASK requests, by the command's `user_data`.
    pub(super) abort_rx: Receiver<u64>,
    pub(super) done_tx: Sender<ShardCompletion>,
}

/// What the shard thread owns before it has connected.
pub(super) struct Worker {
    index: usize,
    client_config: ClientConfig,
    config: ShardConfig,
    core: Option<core_affinity::CoreId>,
    submit_rx: Receiver<Request>,
    work_rx: Receiver<Box<dyn ShardWork>>,
    abort_rx: Receiver<u64>,
    done_tx: Sender<ShardCompletion>,
    shared: Arc<SharedStats>,
    doorbell: Arc<Doorbell>,
}

impl Worker {
    pub(super) fn new(
        index: usize,
        client_config: ClientConfig,
        config: ShardConfig,
        core: Option<core_affinity::CoreId>,
        channels: Channels,
        shared: Arc<SharedStats>,
        doorbell: Arc<Doorbell>,
    ) -> Worker {
        let Channels {
            submit_rx,
            work_rx,
            abort_rx,
            done_tx,
        } = channels;
        Worker {
            index,
            client_config,
            config,
            core,
            submit_rx,
            work_rx,
            abort_rx,
            done_tx,
            shared,
            doorbell,
        }
    }

    /// The thread body: pin, connect, log in, report, then serve until the queue closes.
    pub(super) fn run(self, ready: Sender<Result<ShardInfo, ShardError>>) {
        if let Some(core) = self.core {
            if !core_affinity::set_for_current(core) {
                tracing::warn!(
                    shard = self.index,
                    core = core.id,
                    "could not pin the shard"
                );
            }
        }
        let doorbell = Arc::clone(&self.doorbell);
        match Shard::connect(&self, None) {
            Ok((shard, info)) => {
                let _ = ready.send(Ok(info));
                let mut carried = Carried::default();
                let mut lost = shard.serve(&mut carried);
                // Bounded: each recovery either gives up (None) or logs in again, and
                // recoveries without progress count against the policy's attempts.
                while let Some(reason) = lost {
                    lost = self.recover(reason, &mut carried);
                }
            }
            Err((shard, e)) => {
                if let Some(mut shard) = shard {
                    shard.finish();
                }
                let _ = ready.send(Err(e));
            }
        }
        // The completion queue is closed now (the shard is dropped): a caller asleep in
        // `ShardPool::wait_completion` wakes to find that out.
        doorbell.caller.wake();
    }
}

/// What a shard hands from a lost connection to the next (see `reconnect`).
#[derive(Default)]
struct Carried {
    /// The counters so far (they go on across connections).
    stats: ShardStats,
    /// Commands to send again, and requests taken while no connection was up, in order.
    resend: Vec<Request>,
    /// Recoveries in a row after which no command succeeded.
    recoveries_without_progress: u32,
}

impl Worker {
    /// Recovers a lost connection (module docs of `reconnect`): waits, connects and logs in
    /// again until the policy's bound; then serves the new connection. Returns the reason
    /// when that one is lost too, `None` when the shard is done (stopped or given up).
    fn recover(&self, reason: String, carried: &mut Carried) -> Option<String> {
        let lost_at = Instant::now();
        let mut recovery = Recovery::new(
            self.config.reconnect,
            lost_at,
            carried.recoveries_without_progress,
        );
        tracing::warn!(shard = self.index, %reason, "connection lost; recovering the session");
        // Bounded by the policy: every step counts an attempt.
        loop {
            let (wait, budget) = match recovery.next(Instant::now()) {
                Step::Attempt { wait, budget } => (wait, budget),
                Step::GiveUp => {
                    self.give_up(&reason, carried);
                    return None;
                }
            };
            if !self.park_requests(wait, carried) {
                self.give_up("the shard stopped", carried);
                return None;
            }
            match Shard::connect(self, Some(budget.max(Duration::from_millis(100)))) {
                Ok((mut shard, info)) => {
                    let gap = recovery.lost_at().elapsed();
                    tracing::info!(
                        shard = self.index,
                        tsih = info.tsih,
                        gap_ms = gap.as_millis() as u64,
                        resent = carried.resend.len(),
                        "session recovered"
                    );
                    carried.recoveries_without_progress += 1;
                    shard.resume(carried, gap);
                    return shard.serve(carried);
                }
                Err((shard, e)) => {
                    if let Some(mut shard) = shard {
                        shard.finish();
                    }
                    tracing::warn!(shard = self.index, error = %e, "reconnect attempt failed");
                }
            }
        }
    }

    /// Waits `wait`, taking requests from the queue meanwhile (up to twice the queue
    /// depth; beyond that callers find the queue full). False when the pool stops.
    fn park_requests(&self, wait: Duration, carried: &mut Carried) -> bool {
        const STEP: Duration = Duration::from_millis(5);
        let until = Instant::now() + wait;
        // Bounded by the clock: each round sleeps a step.
        loop {
            if self.doorbell.stopping.load(Ordering::SeqCst) {
                return false;
            }
            self.abort_parked(carried);
            while carried.resend.len() < 2 * self.config.queue_depth {
                match self.submit_rx.try_recv() {
                    Ok(request) => carried.resend.push(request),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return false,
                }
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            std::thread::sleep(STEP.min(until - now));
        }
    }

    /// Aborts asked for while no connection is up: a command waiting to be sent again is
    /// not sent and fails as aborted.
    fn abort_parked(&self, carried: &mut Carried) {
        while let Ok(user_data) = self.abort_rx.try_recv() {
            let Some(at) = carried.resend.iter().position(|r| r.user_data == user_data) else {
                continue;
            };
            let request = carried.resend.remove(at);
            let completion = ShardCompletion {
                user_data,
                result: Err(failure(CommandError::Aborted, request.buffer)),
            };
            // The queue holds twice the depth; a caller not taking completions loses this
            // one's buffer, not the shard's progress.
            if self.done_tx.try_send(completion).is_ok() {
                self.doorbell.caller.wake();
            }
        }
    }

    /// The recovery is over without a connection: every command held or waiting fails.
    fn give_up(&self, reason: &str, carried: &mut Carried) {
        tracing::error!(shard = self.index, %reason, "giving up on the session");
        let reason = format!("{reason} (reconnect gave up)");
        let mut pending: Vec<Request> = carried.resend.drain(..).collect();
        // What waits in the queue fails too (bounded by the queue's capacity).
        while let Ok(request) = self.submit_rx.try_recv() {
            pending.push(request);
        }
        for request in pending {
            let completion = ShardCompletion {
                user_data: request.user_data,
                result: Err(failure(
                    CommandError::ConnectionLost(reason.clone()),
                    request.buffer,
                )),
            };
            // The caller may not be taking completions (it is stopping): wait a little
            // for room, then drop the rest with the thread.
            if self
                .done_tx
                .send_timeout(completion, Duration::from_secs(1))
                .is_err()
            {
                break;
            }
            self.doorbell.caller.wake();
        }
    }
}

/// What a request became inside the session.
struct Held {
    user_data: u64,
    large_read: bool,
    /// Made by the work running on the shard (its completion goes to the work).
    from_work: bool,
    /// The least its answer brings (see `Shard::answer_bytes`).
    answer_bytes: u32,
    /// LUN, CDB and direction, kept to send the command again on a new connection
    /// (`ShardConfig::reconnect` on; commands of a work are not sent again).
    resend: Option<(u64, Cdb, DataDirection, pdu::TaskAttribute)>,
    /// The caller asked to abort it: it has given up on the command, which is therefore
    /// never sent again on a new connection.
    abort_requested: bool,
}

/// The socket (and the doorbell) as the ring names them: fixed files when the kernel took
/// the registration, plain descriptors otherwise.
#[derive(Clone, Copy)]
enum Files {
    Fixed,
    Plain { socket: RawFd, doorbell: RawFd },
}

/// Builds an entry on the socket, named as `$files` says.
macro_rules! on_socket {
    ($files:expr, |$fd:ident| $build:expr) => {
        match $files {
            Files::Fixed => {
                let $fd = types::Fixed(0);
                $build
            }
            Files::Plain { socket, .. } => {
                let $fd = types::Fd(socket);
                $build
            }
        }
    };
}

/// The receive in flight, if any.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RecvOp {
    Idle,
    /// Into the free end of the staging buffer.
    Staging {
        len: usize,
    },
    /// The payload of a Data-In, straight into its command's buffer.
    Placed {
        len: usize,
    },
}

/// A Data-In payload being received into its command's buffer.
struct Placing {
    header: Header,
    data_len: u32,
    /// The slice `Session::data_in_destination` gave; the command's buffer stays in the
    /// session (or in an unposted event) for as long as this receive is in flight.
    dest: *mut u8,
    len: usize,
    done: usize,
    pad_len: usize,
    digest_len: usize,
}

/// A placed Data-In whose payload is in, waiting for its pad and data digest (which
/// arrive through the staging buffer) before the session hears of it.
struct PlacedTrailer {
    header: Header,
    data_len: u32,
    pad_len: usize,
    digest_len: usize,
    expected_digest: u32,
}

/// A running shard.
struct Shard {
    index: usize,
    config: ShardConfig,
    conn: TcpConnection,
    files: Files,
    session: Session,
    submit_rx: Receiver<Request>,
    work_rx: Receiver<Box<dyn ShardWork>>,
    abort_rx: Receiver<u64>,
    /// The work running on this shard, if any (one at a time; others wait in `work_rx`).
    work: Option<RunningWork>,
    /// The requests the work made in this turn (kept to reuse the allocation).
    work_requests: Vec<Request>,
    done_tx: Sender<ShardCompletion>,
    shared: Arc<SharedStats>,
    doorbell: Arc<Doorbell>,
    held: TagMap<TaskId, Held>,
    /// Reads in flight at least `zero_copy_min_bytes` long: while any is, headers are
    /// received alone so that their payload can be placed.
    large_reads: usize,

    // Receive side.
    /// The shard's receive buffer: headers and small PDUs land here. Sized once from the
    /// largest data segment we declare (MaxRecvDataSegmentLength is declarative: our offer
    /// is the negotiated limit), never resized or moved, and registered with the ring as
    /// its fixed buffer 0 when the kernel takes it (`staging_fixed`).
    staging: Vec<u8>,
    /// Receives into the staging buffer are `READ_FIXED` on its registration.
    staging_fixed: bool,
    staged: std::ops::Range<usize>,
    /// Bytes the parser needs before it can make progress (header-only receives ask for
    /// exactly this many).
    need: usize,
    recv: RecvOp,
    /// A receive into the staging buffer linked behind the placed one (`IOSQE_IO_LINK`):
    /// the payload's trailer or the next PDU's header, so that a placed Data-In and what
    /// follows it cost one kernel entry. Its length while in flight.
    linked_recv: Option<usize>,
    /// Bytes the last staging receive brought, and until when the next greedy receive
    /// waits (receive coalescing).
    small_receives: u32,
    /// Coalescing waits in a row that brought less than half their mark (the answers bring
    /// fewer bytes than expected: errors, short reads): each doubles the small receives
    /// needed before the next wait.
    coalesce_misses: u32,
    /// The low-water mark the staging receive in flight was armed with.
    recv_low_water: usize,
    /// The socket's receive low-water mark (`SO_RCVLOWAT`, receive coalescing) and until
    /// when a receive may wait for it.
    low_water: usize,
    low_water_until: Option<Instant>,
    /// Bytes the answers to the commands held are expected to bring at least (a header
    /// each, plus the payload of small reads).
    answer_bytes: u64,
    placing: Option<Placing>,
    trailer: Option<PlacedTrailer>,

    // Send side: the PDUs of the send in flight, their encoded headers and trailers, and
    // the gather list over them (all untouched until the send completes).
    transmits: Vec<Transmit>,
    headers: Vec<u8>,
    trailers: Vec<[u8; 8]>,
    iovecs: Vec<libc::iovec>,
    msg: Box<libc::msghdr>,
    send_next: usize,
    send_in_flight: bool,
    /// Zero-copy send notifications still to come: until then the kernel may read the
    /// sent buffers.
    send_notifs: usize,
    /// Whether the send in flight is a zero-copy one.
    send_zc: bool,

    doorbell_buf: Box<u64>,
    doorbell_armed: bool,
    cancels_in_flight: usize,
    socket_shut: bool,

    cqes: Vec<Completion>,
    /// Completions waiting to be posted (see `Shard::post`).
    outgoing: Vec<ShardCompletion>,
    /// Completions posted since the caller was last woken, and when the first of them was
    /// (`ShardConfig::caller_wake_batch`).
    unwoken: usize,
    unwoken_since: Option<Instant>,
    stats: ShardStats,
    kernel_entries_at_login: u64,
    staged_copy_bytes: u64,
    window_closed_since: Option<Instant>,
    login: Option<Result<(), String>>,
    /// Logged in once: requests are taken (and failed at once if the session has ended).
    serving: bool,
    /// Set when the connection is gone: the reason later requests fail with.
    dead: Option<String>,
    stopping: bool,
    logout_started: bool,
    /// Commands the lost connection held, to send again on the next (see `reconnect`).
    resend: Vec<Request>,
    /// A command succeeded on this connection.
    progressed: bool,
    /// After a recovery: answers still to be taken for the UNIT ATTENTION the reset of
    /// the I_T nexus raises, and sent again (one per LUN is what targets report; the queue
    /// depth bounds how many commands can meet it).
    unit_attentions_left: usize,
    /// Counters of earlier connections (`publish` adds this connection's to them).
    kernel_entries_base: u64,
    bytes_copied_base: u64,
}

type ConnectError = (Option<Box<Shard>>, ShardError);

impl Shard {
    /// Connects and logs in. `budget` bounds connect and login together when the shard
    /// recovers a lost connection (the policy's replacement timeout).
    fn connect(
        worker: &Worker,
        budget: Option<Duration>,
    ) -> Result<(Box<Shard>, ShardInfo), ConnectError> {
        let index = worker.index;
        let mut cc = worker.client_config.clone();
        if let Some(budget) = budget {
            cc.connect_timeout = cc.connect_timeout.min(budget);
            cc.login_timeout = cc.login_timeout.min(budget);
        }
        let config = worker.config.clone();
        let core = worker.core;
        let submit_rx = worker.submit_rx.clone();
        let work_rx = worker.work_rx.clone();
        let abort_rx = worker.abort_rx.clone();
        let done_tx = worker.done_tx.clone();
        let shared = Arc::clone(&worker.shared);
        let doorbell = Arc::clone(&worker.doorbell);
        let ring = RingConfig {
            entries: config.ring_entries,
            sqpoll: config.sqpoll,
            ..RingConfig::default()
        };
        let (mut conn, mut path_report) =
            super::steer::connect(index, core.map(|c| c.id), &cc, &ring, config.steer).map_err(
                |source| {
                    (
                        None,
                        ShardError::Connect {
                            shard: index,
                            portal: cc.portal,
                            source,
                        },
                    )
                },
            )?;
        if config.busy_poll_us > 0 {
            if let Err(e) = conn.set_busy_poll(config.busy_poll_us) {
                tracing::warn!(shard = index, error = %e, "SO_BUSY_POLL refused");
            }
            if let Err(e) = conn.ring_mut().register_napi_busy_poll(config.busy_poll_us) {
                tracing::warn!(shard = index, error = %e, "io_uring NAPI busy poll refused");
            }
        }
        let socket = conn.raw_fd().unwrap_or(-1);
        let files = match conn.ring_mut().register_files(&[socket, doorbell.fd()]) {
            Ok(()) => Files::Fixed,
            Err(e) => {
                tracing::warn!(shard = index, error = %e, "io_uring refused registered files");
                Files::Plain {
                    socket,
                    doorbell: doorbell.fd(),
                }
            }
        };
        let isid = shard_isid(index);
        let session_config = cc.session_config(isid, config.queue_depth, config.queue_depth);
        // Sized once from the largest data segment we declare we accept (the negotiated
        // MaxRecvDataSegmentLength never exceeds our own offer), so a whole PDU always
        // fits and the buffer never moves while a receive uses it.
        let max_segment = (cc.offer.max_recv_data_segment_length as usize).max(8192);
        let staging_len = (HEADER_SLOT + max_segment + 8).max(STAGING_MIN);
        let ring_flags = conn.ring_flags_description().to_string();
        // SAFETY: msghdr is a plain C struct for which all-zero bytes are a valid value.
        let msg: libc::msghdr = unsafe { std::mem::zeroed() };
        let mut shard = Box::new(Shard {
            index,
            conn,
            files,
            session: Session::new(session_config, Instant::now()),
            submit_rx,
            work_rx,
            abort_rx,
            work: None,
            work_requests: Vec::with_capacity(config.queue_depth),
            done_tx,
            shared,
            doorbell,
            held: TagMap::with_capacity_and_hasher(config.queue_depth, Default::default()),
            large_reads: 0,
            staging: vec![0; staging_len],
            staging_fixed: false,
            staged: 0..0,
            need: BHS_LEN,
            recv: RecvOp::Idle,
            linked_recv: None,
            small_receives: 0,
            coalesce_misses: 0,
            recv_low_water: 1,
            low_water: 1,
            low_water_until: None,
            answer_bytes: 0,
            placing: None,
            trailer: None,
            transmits: Vec::with_capacity(PDUS_PER_SEND),
            headers: vec![0; HEADER_SLOT * PDUS_PER_SEND],
            trailers: Vec::with_capacity(PDUS_PER_SEND),
            iovecs: Vec::with_capacity(3 * PDUS_PER_SEND),
            msg: Box::new(msg),
            send_next: 0,
            send_in_flight: false,
            send_notifs: 0,
            send_zc: false,
            doorbell_buf: Box::new(0),
            doorbell_armed: false,
            cancels_in_flight: 0,
            socket_shut: false,
            cqes: Vec::with_capacity(16),
            outgoing: Vec::with_capacity(config.queue_depth),
            unwoken: 0,
            unwoken_since: None,
            stats: ShardStats::default(),
            kernel_entries_at_login: 0,
            staged_copy_bytes: 0,
            window_closed_since: None,
            login: None,
            serving: false,
            dead: None,
            stopping: false,
            logout_started: false,
            resend: Vec::new(),
            progressed: false,
            unit_attentions_left: 0,
            kernel_entries_base: 0,
            bytes_copied_base: 0,
            config,
        });
        shard.register_staging();
        let login_failed = |reason: String| ShardError::Login {
            shard: index,
            reason,
        };
        // Bounded by the session's login timer, which fails the login.
        loop {
            shard.turn();
            match shard.login.take() {
                Some(Ok(())) => {
                    shard.serving = true;
                    shard.kernel_entries_at_login = shard.conn.kernel_entries();
                    super::steer::observe(&mut path_report, &shard.conn);
                    let info = ShardInfo {
                        core: core.map(|c| c.id),
                        isid,
                        tsih: shard.session.tsih(),
                        ring_flags,
                        steering: path_report,
                        registered_buffer_bytes: if shard.staging_fixed {
                            shard.staging.len()
                        } else {
                            0
                        },
                        registered_files: matches!(shard.files, Files::Fixed),
                    };
                    return Ok((shard, info));
                }
                Some(Err(reason)) => return Err((Some(shard), login_failed(reason))),
                None => {}
            }
            if let Some(reason) = shard.dead.clone() {
                return Err((Some(shard), login_failed(reason)));
            }
        }
    }

    /// The loop of a logged-in shard; returns `None` when the queue is closed and the
    /// session is over, or the reason the connection was lost when it is to be recovered
    /// (`ShardConfig::reconnect`), after handing what goes on to `carried`.
    fn serve(mut self: Box<Self>, carried: &mut Carried) -> Option<String> {
        loop {
            self.turn();
            let over = matches!(
                self.session.state(),
                SessionState::Closed | SessionState::Failed
            ) || self.dead.is_some();
            if self.stopping && self.held.is_empty() && self.outgoing.is_empty() && over {
                break;
            }
            if let Some(reason) = self.dead.clone().filter(|_| self.recovers()) {
                self.finish();
                self.hand_over(carried);
                return Some(reason);
            }
        }
        self.finish();
        None
    }

    /// Whether a lost connection is recovered rather than final.
    fn recovers(&self) -> bool {
        self.config.reconnect.enabled() && !self.stopping && self.serving
    }

    /// Hands the counters and the commands to send again to the next connection (after
    /// `finish`: the kernel no longer touches any of their buffers).
    fn hand_over(&mut self, carried: &mut Carried) {
        self.publish();
        carried.stats = self.stats;
        if self.progressed {
            carried.recoveries_without_progress = 0;
        }
        // The commands of the lost connection go before the requests taken meanwhile.
        let taken_meanwhile = std::mem::take(&mut carried.resend);
        carried.resend = std::mem::take(&mut self.resend);
        carried.resend.extend(taken_meanwhile);
    }

    /// Takes over from a lost connection: its counters, then the commands to send again
    /// (first, in their order: the queue depth bounds them, as they were held or parked
    /// within it).
    fn resume(&mut self, carried: &mut Carried, gap: Duration) {
        let gap_ns = gap.as_nanos().min(u128::from(u64::MAX)) as u64;
        self.stats = carried.stats;
        self.kernel_entries_base = carried.stats.kernel_entries;
        self.bytes_copied_base = carried.stats.bytes_copied;
        self.stats.reconnects += 1;
        self.unit_attentions_left = 2 * self.config.queue_depth;
        self.stats.reconnect_gap_ns_max = self.stats.reconnect_gap_ns_max.max(gap_ns);
        self.stats.reconnect_gap_ns_total += gap_ns;
        let now = Instant::now();
        let resend: Vec<Request> = carried.resend.drain(..).collect();
        self.stats.commands_resent += resend.len() as u64;
        let mut resend = resend.into_iter();
        // Bounded by the list; what does not fit under the depth now waits its turn in
        // `self.resend` for the next turns (see `accept`).
        for request in resend.by_ref() {
            if self.room() == 0 {
                self.resend.push(request);
                break;
            }
            self.start(request, now, false);
        }
        self.resend.extend(resend);
        self.publish();
    }

    /// One turn: take what the kernel finished, feed the session, take new requests, post
    /// completions, queue the next operations and enter the kernel once (waiting there
    /// when there is nothing else to do).
    fn turn(&mut self) {
        let now = Instant::now();
        self.reap(now);
        if self.dead.is_some() {
            self.shut_socket();
        }
        if self.low_water_until.is_some_and(|until| now >= until) {
            // Waited long enough for answers to gather: take what is there.
            self.set_low_water(1, None);
        }
        let logged_in = self.serving;
        if logged_in {
            self.accept(now);
            if self.stopping && self.held.is_empty() && !self.logout_started {
                self.logout_started = true;
                self.session.logout(now);
            }
        }
        if self.session.poll_timeout().is_some_and(|d| d <= now) {
            self.session.handle_timeout(now);
        }
        self.collect_events();
        if logged_in {
            self.run_work(now);
        }
        self.track_window(now);
        self.post();
        self.wake_caller_if_due(now);
        if logged_in && self.idle_spin_pays() && self.spin_for_request(now) {
            // Before anything is armed: the request and the receive for its answer then
            // share this turn's kernel entry.
            self.accept(now);
            self.collect_events();
            self.post();
        }
        self.start_send();
        self.arm_recv(now);
        self.arm_doorbell();
        self.publish();
        self.wait(now, logged_in);
    }

    /// Room for more commands: under `queue_depth`, and never more than fit in the
    /// completion queue (twice that) beside the completions not yet taken, so posting a
    /// completion never blocks.
    fn room(&self) -> usize {
        let depth = self.config.queue_depth;
        let pending = self.held.len() + self.done_tx.len() + self.outgoing.len();
        depth
            .saturating_sub(self.held.len())
            .min((2 * depth).saturating_sub(pending))
    }

    /// Enters the kernel: without waiting when requests are queued and there is room for
    /// them; after a short poll of the queue when idle (`idle_spin`); otherwise asleep
    /// until a completion, the doorbell or the session's next timer.
    fn wait(&mut self, now: Instant, logged_in: bool) {
        let can_take = logged_in && !self.stopping && self.room() > 0;
        if can_take && !self.submit_rx.is_empty() {
            self.enter(0, None);
            return;
        }
        let mut timeout = match self.session.poll_timeout() {
            Some(deadline) => deadline.saturating_duration_since(now).min(IDLE_WAIT),
            None => IDLE_WAIT,
        };
        if let Some(at) = self.work.as_ref().and_then(RunningWork::next_poll) {
            timeout = timeout.min(
                at.saturating_duration_since(now)
                    .max(Duration::from_micros(1)),
            );
        }
        if let Some(until) = self.low_water_until {
            timeout = timeout.min(
                until
                    .saturating_duration_since(now)
                    .max(Duration::from_micros(1)),
            );
        }
        if let Some(since) = self.unwoken_since {
            // Back in time to wake the caller for completions posted but not announced.
            let due = (since + self.config.caller_wake_delay_max).saturating_duration_since(now);
            timeout = timeout.min(due.max(Duration::from_micros(1)));
        }
        if logged_in && !self.stopping && self.room() == 0 && self.held.is_empty() {
            // The caller has not taken its completions yet; it does not ring for that.
            timeout = timeout.min(FULL_WAIT);
        }
        if can_take {
            // Dekker-style hand-off with `Doorbell::ring`: announce the sleep, then look
            // at the queue once more; a caller queues, then looks at the flag.
            self.doorbell.sleeping.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if !self.submit_rx.is_empty() {
                self.doorbell.sleeping.store(false, Ordering::Relaxed);
                self.enter(0, None);
                return;
            }
        }
        if self.completion_spin_pays(logged_in) {
            // Submit first: the answers being polled for need the send and the receive.
            self.enter(0, None);
            if self.spin_for_completion() {
                self.doorbell.sleeping.store(false, Ordering::Relaxed);
                self.enter(0, None);
                return;
            }
        }
        self.enter(1, Some(timeout));
        self.doorbell.sleeping.store(false, Ordering::Relaxed);
    }

    /// Whether to poll for answers before sleeping: one or two commands in flight (at
    /// higher depth answers come in groups and a sleep costs less per I/O), none of the
    /// receive coalescing's waiting, and a spin configured.
    fn completion_spin_pays(&self, logged_in: bool) -> bool {
        logged_in
            && !self.config.completion_spin.is_zero()
            && !self.held.is_empty()
            && self.held.len() <= COMPLETION_SPIN_MAX_HELD
            && self.low_water <= 1
    }

    /// Polls the ring for up to `completion_spin`; true when a completion (or deferred
    /// work that makes one) is there.
    fn spin_for_completion(&mut self) -> bool {
        let until = Instant::now() + self.config.completion_spin;
        // Bounded by the clock: each round either finds work or reads the clock.
        loop {
            if self.conn.ring_mut().completion_pending() {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            // The target may share this core (loopback): let it run.
            std::thread::yield_now();
        }
    }

    /// Whether to poll the queue before arming the receive and sleeping: idle (nothing
    /// held, nothing to send or post), room for requests, and a spin configured.
    fn idle_spin_pays(&self) -> bool {
        !self.config.idle_spin.is_zero()
            && !self.stopping
            && self.held.is_empty()
            && self.outgoing.is_empty()
            && !self.send_busy()
            && self.room() > 0
    }

    /// Polls the queue for up to `idle_spin`: a sleeping shard costs the caller a doorbell
    /// write and the shard a wake-up per request at queue depth 1. True when a request came.
    fn spin_for_request(&self, now: Instant) -> bool {
        let until = now + self.config.idle_spin;
        // Bounded by the clock: each round either finds a request or reads the clock.
        loop {
            if !self.submit_rx.is_empty() {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            std::thread::yield_now();
        }
    }

    /// One `io_uring_enter`. A failure with operations in flight aborts the process:
    /// returning would let the kernel write into buffers that are given back.
    fn enter(&mut self, want: usize, timeout: Option<Duration>) {
        let ring = self.conn.ring_mut();
        if want == 0 && !ring.has_work_for_kernel() {
            return;
        }
        if let Err(e) = ring.enter(want, timeout) {
            if self.recv != RecvOp::Idle || self.linked_recv.is_some() || self.send_busy() {
                tracing::error!(
                    shard = self.index,
                    error = %e,
                    "io_uring_enter failed with operations in flight; aborting rather than \
                     letting the kernel write into buffers given back"
                );
                std::process::abort();
            }
            self.lose_connection(format!("io_uring_enter failed: {e}"));
        }
    }

    /// Takes every completion the kernel has posted and feeds the session.
    fn reap(&mut self, now: Instant) {
        let mut cqes = std::mem::take(&mut self.cqes);
        self.conn.ring_mut().reap(&mut cqes);
        for cqe in cqes.drain(..) {
            match cqe.token {
                TOKEN_RECV => self.on_recv(cqe.result, now),
                TOKEN_RECV_LINKED => self.on_linked_recv(cqe.result),
                TOKEN_SEND => self.on_send(cqe.result, cqe.flags),
                TOKEN_DOORBELL => self.doorbell_armed = false,
                TOKEN_CANCEL => self.cancels_in_flight = self.cancels_in_flight.saturating_sub(1),
                other => tracing::warn!(shard = self.index, token = other, "unknown completion"),
            }
        }
        self.cqes = cqes;
        if self.dead.is_none() && self.placing.is_none() {
            if let Err(reason) = self.process_staged(now) {
                self.lose_connection(reason);
            }
        }
    }

    fn on_recv(&mut self, result: i32, now: Instant) {
        let op = std::mem::replace(&mut self.recv, RecvOp::Idle);
        if self.dead.is_some() {
            return;
        }
        if result < 0 {
            let e = std::io::Error::from_raw_os_error(-result);
            self.conn.mark_broken("recv");
            self.lose_connection(format!("receive failed: {e}"));
            return;
        }
        if result == 0 {
            self.lose_connection("the target closed the connection".into());
            return;
        }
        let n = result.unsigned_abs() as usize;
        match op {
            RecvOp::Staging { len } if n <= len => {
                self.staged.end += n;
                if self.recv_low_water > 1 {
                    // Less than half the mark came in the time allowed: the answers bring
                    // fewer bytes than expected (errors, short reads), so back off.
                    self.coalesce_misses = if n.saturating_mul(2) >= self.recv_low_water {
                        0
                    } else {
                        (self.coalesce_misses + 1).min(COALESCE_MAX_MISSES)
                    };
                }
                self.small_receives = if n < COALESCE_BELOW_BYTES {
                    self.small_receives.saturating_add(1)
                } else {
                    0
                };
            }
            RecvOp::Placed { len } if n <= len => {
                let Some(placing) = self.placing.as_mut() else {
                    return;
                };
                placing.done += n;
                if placing.done == placing.len {
                    self.finish_placed(now);
                }
            }
            _ => {
                self.conn.mark_broken("recv");
                self.lose_connection("the kernel reported more bytes than asked for".into());
            }
        }
    }

    /// The staging receive linked behind a placed one. Cancelled (`ECANCELED`) when the
    /// placed receive came back short: `arm_recv` then asks for the rest of the payload.
    fn on_linked_recv(&mut self, result: i32) {
        let Some(len) = self.linked_recv.take() else {
            return;
        };
        if self.dead.is_some() || result == -libc::ECANCELED {
            return;
        }
        if result < 0 {
            let e = std::io::Error::from_raw_os_error(-result);
            self.conn.mark_broken("recv");
            self.lose_connection(format!("receive failed: {e}"));
            return;
        }
        if result == 0 {
            self.lose_connection("the target closed the connection".into());
            return;
        }
        let n = result.unsigned_abs() as usize;
        if n > len || self.staged.end + n > self.staging.len() {
            self.conn.mark_broken("recv");
            self.lose_connection("the kernel reported more bytes than asked for".into());
            return;
        }
        self.staged.end += n;
    }

    /// A placed payload is complete: deliver it, or wait for its trailer first.
    fn finish_placed(&mut self, now: Instant) {
        let Some(p) = self.placing.take() else {
            return;
        };
        if p.pad_len + p.digest_len == 0 {
            // A fault here has already failed the session and queued its events.
            let _ = self.session.handle_pdu_placed(now, p.header, p.data_len);
            return;
        }
        let expected_digest = if p.digest_len > 0 {
            // SAFETY: the slice the session gave for this Data-In; the receive into it
            // has completed and nothing else writes it while we read.
            let dest = unsafe { std::slice::from_raw_parts(p.dest, p.len) };
            digest::data_digest_append(digest::crc32c(dest), p.len)
        } else {
            0
        };
        self.trailer = Some(PlacedTrailer {
            header: p.header,
            data_len: p.data_len,
            pad_len: p.pad_len,
            digest_len: p.digest_len,
            expected_digest,
        });
    }

    fn on_send(&mut self, result: i32, flags: u32) {
        if io_uring::cqueue::notif(flags) {
            // The kernel is done with a zero-copy send's buffers.
            self.send_notifs = self.send_notifs.saturating_sub(1);
            return;
        }
        self.send_in_flight = false;
        if io_uring::cqueue::more(flags) {
            self.send_notifs += 1;
        }
        if self.dead.is_some() {
            return;
        }
        if result <= 0 {
            let reason = if result == 0 {
                "send made no progress".to_string()
            } else {
                format!(
                    "send failed: {}",
                    std::io::Error::from_raw_os_error(-result)
                )
            };
            self.conn.mark_broken("send");
            self.lose_connection(reason);
            return;
        }
        match advance_iovecs(
            &mut self.iovecs,
            self.send_next,
            result.unsigned_abs() as usize,
        ) {
            // All sent; the next send clears the scratch, once no notification is due.
            Some(next) if next == self.iovecs.len() => self.send_next = next,
            Some(next) => {
                // A short send (signal, memory pressure): send the rest.
                self.send_next = next;
                self.push_send();
            }
            None => {
                self.conn.mark_broken("send");
                self.lose_connection("the kernel reported more bytes sent than queued".into());
            }
        }
    }

    /// Whether the kernel may still read the buffers of the last send.
    fn send_busy(&self) -> bool {
        self.send_in_flight || self.send_notifs > 0
    }

    fn end_send(&mut self) {
        self.iovecs.clear();
        self.trailers.clear();
        self.transmits.clear();
        self.send_next = 0;
    }

    /// Delivers every whole PDU in the staging buffer; stops at a Data-In whose payload can
    /// be placed (and sets up that receive) or when more bytes are needed (`self.need`).
    fn process_staged(&mut self, now: Instant) -> Result<(), String> {
        let digests = self.session.digests();
        let limits = Limits {
            max_data_segment_length: self.session.max_recv_data_segment_length(),
            ..Limits::default()
        };
        // Bounded: each round consumes at least a BHS of staged bytes or returns.
        for _ in 0..self.staging.len() / BHS_LEN + 2 {
            if self.dead.is_some() {
                return Ok(());
            }
            let start = self.staged.start;
            if let Some(t) = &self.trailer {
                let trailer_len = t.pad_len + t.digest_len;
                if self.staged.len() < trailer_len {
                    self.need = trailer_len - self.staged.len();
                    return Ok(());
                }
                if t.digest_len > 0 {
                    let at = start + t.pad_len;
                    let mut wire = [0u8; 4];
                    wire.copy_from_slice(&self.staging[at..at + 4]);
                    if digest::digest_from_wire(wire) != t.expected_digest {
                        return Err("data digest mismatch on Data-In".into());
                    }
                }
                self.consume(trailer_len);
                if let Some(t) = self.trailer.take() {
                    let _ = self.session.handle_pdu_placed(now, t.header, t.data_len);
                }
                continue;
            }
            if self.staged.len() < BHS_LEN {
                self.need = BHS_LEN - self.staged.len();
                return Ok(());
            }
            let frame = pdu::frame(&self.staging[start..start + BHS_LEN], digests, &limits)
                .map_err(|e| format!("malformed PDU: {e}"))?;
            let header_len = frame.header_len();
            let total = frame.total_len();
            if total > self.staging.len() {
                return Err(format!(
                    "a PDU of {total} bytes does not fit the receive buffer of {}",
                    self.staging.len()
                ));
            }
            if self.staged.len() < header_len {
                self.need = header_len - self.staged.len();
                return Ok(());
            }
            let header = parse_header(&self.staging[start..start + header_len], &frame)?;
            let payload_staged = (self.staged.len() - header_len).min(frame.data_len);
            if payload_staged < frame.data_len && matches!(header, Header::DataIn(_)) {
                let data_len = frame.data_len as u32;
                if let Some(dest) = self.session.data_in_destination(&header, data_len) {
                    // The payload goes straight into the command's buffer; what a greedy
                    // receive already took is copied (and counted).
                    let from = start + header_len;
                    dest[..payload_staged]
                        .copy_from_slice(&self.staging[from..from + payload_staged]);
                    self.staged_copy_bytes += payload_staged as u64;
                    let placing = Placing {
                        header,
                        data_len,
                        dest: dest.as_mut_ptr(),
                        len: dest.len(),
                        done: payload_staged,
                        pad_len: frame.pad_len,
                        digest_len: frame.data_digest_len,
                    };
                    self.placing = Some(placing);
                    self.consume(header_len + payload_staged);
                    return Ok(());
                }
            }
            if self.staged.len() < total {
                self.need = total - self.staged.len();
                return Ok(());
            }
            let decoded = pdu::decode_pdu(&self.staging[start..start + total], digests, &limits)
                .map_err(|e| format!("malformed PDU: {e}"))?
                .ok_or("a whole PDU did not decode")?;
            let data = start + decoded.data.start..start + decoded.data.end;
            // A fault here has already failed the session and queued its events.
            let _ = self
                .session
                .handle_pdu(now, decoded.header, &self.staging[data]);
            self.consume(total);
        }
        Ok(())
    }

    fn consume(&mut self, len: usize) {
        self.staged.start += len;
        if self.staged.is_empty() {
            self.staged = 0..0;
        }
    }

    /// Queues the next receive when none is in flight: the rest of a placed payload, or
    /// into the staging buffer (greedy when no large read is in flight, else exactly the
    /// bytes the parser needs, so that a payload can still be placed).
    fn arm_recv(&mut self, now: Instant) {
        if self.recv != RecvOp::Idle || self.linked_recv.is_some() || self.dead.is_some() {
            return;
        }
        let files = self.files;
        if let Some(left) = self.placing.as_ref().map(|p| p.len - p.done) {
            // A large payload wakes the shard once, when all of it is in the socket, not
            // at every segment: the mark is the bytes still to come. Such a receive takes
            // what is there at once without MSG_WAITALL (so a part taken never leaves the
            // mark above what can still arrive) and the shard asks again for the rest.
            // Nothing is linked behind it: a header receive would wait for the mark too.
            let wake_once = left >= PLACED_LOW_WATER_MIN;
            self.set_low_water(if wake_once { left } else { 1 }, None);
            let Some(p) = &self.placing else {
                return;
            };
            let len = p.len - p.done;
            let want = u32::try_from(len).unwrap_or(u32::MAX);
            // Pointer arithmetic within the destination slice (`done < len`).
            let at = p.dest.wrapping_add(p.done);
            // Behind it, linked: the trailer if there is one (alone: nothing may wait for
            // the next PDU before this one is delivered), else the next PDU's header.
            // The staging buffer is empty here (a placement starts only once every staged
            // byte is consumed), so the linked receive writes at its start.
            // Only while large reads are in flight (headers are taken alone anyway then);
            // otherwise the next receive is a greedy one.
            let link_len = if !wake_once && self.staged.is_empty() && self.large_reads > 0 {
                match p.pad_len + p.digest_len {
                    0 => BHS_LEN,
                    trailer => trailer,
                }
            } else {
                0
            };
            let flags = if wake_once { 0 } else { libc::MSG_WAITALL };
            let placed = on_socket!(files, |fd| opcode::Recv::new(fd, at, want)
                .flags(flags)
                .build()
                .user_data(TOKEN_RECV));
            if link_len == 0 {
                // SAFETY: `at..at + want` lies in the command's buffer, which stays in
                // the session or in an unposted event until this receive completes
                // (module docs).
                if self.push(placed) {
                    self.recv = RecvOp::Placed { len: want as usize };
                }
                return;
            }
            self.staged = 0..0;
            let linked = self.staging_recv(0, link_len, libc::MSG_WAITALL, TOKEN_RECV_LINKED);
            let entries = [placed.flags(squeue::Flags::IO_LINK), linked];
            // SAFETY: the placed receive as above; the linked one writes the first
            // `link_len` bytes of the staging buffer, which is neither read nor moved
            // until its completion is reaped (`linked_recv` is set until then, and no
            // other receive is armed meanwhile).
            if self.push_linked(entries) {
                self.recv = RecvOp::Placed { len: want as usize };
                self.linked_recv = Some(link_len);
            }
            return;
        }
        if self.staged.start > 0 {
            let len = self.staged.len();
            self.staging.copy_within(self.staged.clone(), 0);
            self.staged = 0..len;
        }
        let free = self.staging.len() - self.staged.end;
        // Greedy (many PDUs per receive, small payloads copied) only while commands are in
        // flight and none of them is a large read. With nothing in flight the next PDU
        // may well answer a large read not yet submitted, so only its header is taken.
        let header_only = self.large_reads > 0 || self.held.is_empty() || self.trailer.is_some();
        let len = if header_only {
            self.need.clamp(1, free.max(1))
        } else {
            free
        };
        let coalesce = !header_only
            && !self.config.recv_coalesce.is_zero()
            && !self.stopping
            && self.held.len() >= (self.config.queue_depth / 2).max(2)
            && (self.small_receives >= COALESCE_AFTER_SMALL_RECEIVES << self.coalesce_misses
                || self.low_water > 1);
        let low_water = if coalesce {
            // Half the bytes the answers in flight bring (the target keeps the other half
            // of the commands to work on), rounded down to a power of two so that it
            // changes (a system call) seldom.
            let half = (self.answer_bytes / 2).min(free as u64).max(1);
            1usize << half.ilog2()
        } else {
            1
        };
        self.set_low_water(low_water, Some(now + self.config.recv_coalesce));
        self.recv_low_water = self.low_water;
        if len == 0 || len > free {
            self.lose_connection("the receive buffer is full".into());
            return;
        }
        let want = u32::try_from(len).unwrap_or(u32::MAX);
        let flags = if header_only { libc::MSG_WAITALL } else { 0 };
        let entry = self.staging_recv(self.staged.end, want as usize, flags, TOKEN_RECV);
        // SAFETY: the free end of the staging buffer, which is neither read nor moved (it
        // is never resized) until this receive completes.
        if self.push(entry) {
            self.recv = RecvOp::Staging { len: want as usize };
        }
    }

    /// Registers the staging buffer with the ring (its one fixed buffer), so receives into
    /// it skip mapping the user pages at every operation; a refusal (an old kernel, a
    /// locked-memory limit) is logged and receives stay plain.
    fn register_staging(&mut self) {
        let region = libc::iovec {
            iov_base: self.staging.as_mut_ptr().cast(),
            iov_len: self.staging.len(),
        };
        // SAFETY: the staging buffer is never resized or moved, and it is dropped after the
        // ring (`conn` is declared, so dropped, before `staging`).
        match unsafe { self.conn.ring_mut().register_buffers(&[region]) } {
            Ok(()) => self.staging_fixed = true,
            Err(e) => tracing::warn!(
                shard = self.index,
                error = %e,
                "io_uring refused the registered receive buffer; receiving into plain memory"
            ),
        }
    }

    /// A receive of `len` bytes into the staging buffer at `at`: `READ_FIXED` on the
    /// registered buffer (a read on a socket is a receive without flags: a short read
    /// leaves the parser needing more, and the next receive asks for it), else a plain
    /// receive with `flags`.
    fn staging_recv(&mut self, at: usize, len: usize, flags: i32, token: u64) -> squeue::Entry {
        let len = len.min(self.staging.len().saturating_sub(at));
        let want = u32::try_from(len).unwrap_or(u32::MAX);
        // In bounds: `at + len <= staging.len()`.
        let ptr = self.staging[at..].as_mut_ptr();
        let entry = if self.staging_fixed {
            on_socket!(self.files, |fd| opcode::ReadFixed::new(fd, ptr, want, 0)
                .offset(u64::MAX)
                .build())
        } else {
            on_socket!(self.files, |fd| opcode::Recv::new(fd, ptr, want)
                .flags(flags)
                .build())
        };
        entry.user_data(token)
    }

    /// Sets the socket's receive low-water mark: a receive armed while fewer bytes wait
    /// in the socket completes only once this many have come (Linux wakes the reader only
    /// then), so answers that trickle in one by one are taken several per wake-up. The
    /// wait is bounded by `recv_coalesce`: lowering the mark wakes the receive at once
    /// (Linux checks readiness when it is set). A refusal turns coalescing off.
    fn set_low_water(&mut self, bytes: usize, until: Option<Instant>) {
        self.low_water_until = until.filter(|_| bytes > 1);
        if bytes == self.low_water {
            return;
        }
        let Some(fd) = self.conn.raw_fd() else {
            return;
        };
        let value = i32::try_from(bytes).unwrap_or(i32::MAX);
        // SAFETY: passes a live i32 and its size.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&value as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            self.low_water = bytes;
        } else {
            let e = std::io::Error::last_os_error();
            tracing::warn!(shard = self.index, error = %e, "SO_RCVLOWAT refused; receive coalescing off");
            self.config.recv_coalesce = Duration::ZERO;
            self.low_water_until = None;
        }
    }

    /// Queues one send of every PDU the session has waiting (up to `PDUS_PER_SEND`), payload
    /// straight from the callers' buffers, when no send is in flight.
    fn start_send(&mut self) {
        if self.send_busy() || self.dead.is_some() {
            return;
        }
        self.end_send();
        while self.transmits.len() < PDUS_PER_SEND {
            match self.session.poll_transmit() {
                Some(t) => self.transmits.push(t),
                None => break,
            }
        }
        if self.transmits.is_empty() {
            return;
        }
        let digests = self.session.digests();
        // Zero-copy only pays when the NIC sends from our pages; below the threshold (and
        // on loopback, which copies anyway) a plain send is cheaper (`ShardConfig`).
        self.send_zc = self.config.send_zc_min_bytes.is_some_and(|min| {
            self.transmits
                .iter()
                .any(|t| self.session.transmit_data(t).len() >= min as usize)
        });
        for (transmit, slot) in self
            .transmits
            .iter()
            .zip(self.headers.chunks_mut(HEADER_SLOT))
        {
            let data = self.session.transmit_data(transmit);
            let len = match pdu::encode_header(&transmit.header, data.len() as u32, digests, slot) {
                Ok(len) => len,
                Err(e) => {
                    self.end_send();
                    self.lose_connection(format!("encoding a PDU: {e}"));
                    return;
                }
            };
            let (trailer, trailer_len) = pdu::data_trailer(data, digests);
            self.trailers.push(trailer);
            let trailer = self.trailers.last().map_or(&[][..], |t| &t[..trailer_len]);
            for buf in [&slot[..len], data, trailer] {
                if !buf.is_empty() {
                    self.iovecs.push(libc::iovec {
                        // The kernel only reads through this pointer (a send).
                        iov_base: buf.as_ptr().cast_mut().cast(),
                        iov_len: buf.len(),
                    });
                }
            }
        }
        self.push_send();
    }

    /// Queues a `sendmsg` of `iovecs[send_next..]`.
    fn push_send(&mut self) {
        let pending = &mut self.iovecs[self.send_next..];
        self.msg.msg_iov = pending.as_mut_ptr();
        self.msg.msg_iovlen = pending.len() as _;
        let msg: *const libc::msghdr = &*self.msg;
        let files = self.files;
        let flags = (libc::MSG_NOSIGNAL | libc::MSG_WAITALL) as u32;
        let entry = if self.send_zc {
            on_socket!(files, |fd| opcode::SendMsgZc::new(fd, msg)
                .flags(flags)
                .build()
                .user_data(TOKEN_SEND))
        } else {
            on_socket!(files, |fd| opcode::SendMsg::new(fd, msg)
                .flags(flags)
                .build()
                .user_data(TOKEN_SEND))
        };
        // SAFETY: `msg` is boxed and the iovecs, headers and trailers are only touched
        // again after the send completes (and, zero-copy, after its notification); the payload slices are command buffers held by
        // the session, which stay there or in unposted events until then (module docs).
        if self.push(entry) {
            self.send_in_flight = true;
        }
    }

    /// Keeps a read of the doorbell's eventfd on the ring, so a caller can wake a shard
    /// that sleeps in the kernel.
    fn arm_doorbell(&mut self) {
        if self.doorbell_armed {
            return;
        }
        let buf: *mut u8 = (&mut *self.doorbell_buf as *mut u64).cast();
        let entry = match self.files {
            Files::Fixed => opcode::Read::new(types::Fixed(1), buf, 8).build(),
            Files::Plain { doorbell, .. } => opcode::Read::new(types::Fd(doorbell), buf, 8).build(),
        }
        .user_data(TOKEN_DOORBELL);
        // SAFETY: the boxed counter lives as long as the shard, which reaps this read
        // (cancelling it when it stops) before it is dropped.
        if self.push(entry) {
            self.doorbell_armed = true;
        }
    }

    /// Queues two linked entries together, so the link cannot be split between two
    /// submissions. False (and the connection lost) when the queue has no room for both
    /// even after a submission.
    fn push_linked(&mut self, entries: [io_uring::squeue::Entry; 2]) -> bool {
        let ring = self.conn.ring_mut();
        // SAFETY: forwarded from the call site, which states why the memory the entries
        // name outlives their completions.
        let mut pushed = unsafe { ring.push_all(&entries) };
        if pushed.is_err() {
            let _ = ring.enter(0, None);
            // SAFETY: as above.
            pushed = unsafe { ring.push_all(&entries) };
        }
        match pushed {
            Ok(()) => true,
            Err(e) => {
                self.lose_connection(format!("io_uring submission queue: {e}"));
                false
            }
        }
    }

    /// Queues one entry (the caller vouches for its pointers, see each call). False when
    /// the submission queue is full, which cannot happen with at most five entries a turn.
    fn push(&mut self, entry: io_uring::squeue::Entry) -> bool {
        let ring = self.conn.ring_mut();
        // SAFETY: forwarded from the call sites, each of which states why the memory the
        // entry names outlives its completion.
        let pushed = unsafe { ring.push(entry.clone()) };
        let pushed = match pushed {
            Ok(()) => Ok(()),
            Err(_) => {
                // Full: submit what is queued (without waiting) and try once more.
                let _ = ring.enter(0, None);
                // SAFETY: as above.
                unsafe { ring.push(entry) }
            }
        };
        match pushed {
            Ok(()) => true,
            Err(e) => {
                self.lose_connection(format!("io_uring submission queue: {e}"));
                false
            }
        }
    }

    /// After the connection is lost: shuts the socket down so that a receive or send still
    /// in flight completes at once.
    fn shut_socket(&mut self) {
        if self.socket_shut
            || (self.recv == RecvOp::Idle && self.linked_recv.is_none() && !self.send_in_flight)
        {
            return;
        }
        self.socket_shut = true;
        let files = self.files;
        let entry = on_socket!(files, |fd| opcode::Shutdown::new(fd, libc::SHUT_RDWR)
            .build()
            .user_data(TOKEN_CANCEL));
        // SAFETY: a shutdown names no memory.
        let ring = self.conn.ring_mut();
        if unsafe { ring.push(entry) }.is_ok() {
            self.cancels_in_flight += 1;
        }
    }

    /// Ends the shard: lets the kernel finish (or cancels) every operation, posts what is
    /// left, closes the connection.
    fn finish(&mut self) {
        if self.dead.is_none() {
            self.dead = Some("the shard stopped".into());
        }
        self.shut_socket();
        if self.doorbell_armed {
            let entry = opcode::AsyncCancel::new(TOKEN_DOORBELL)
                .build()
                .user_data(TOKEN_CANCEL);
            // SAFETY: a cancellation names no memory.
            if unsafe { self.conn.ring_mut().push(entry) }.is_ok() {
                self.cancels_in_flight += 1;
            }
        }
        for _ in 0..QUIESCE_ROUNDS {
            let busy = self.recv != RecvOp::Idle
                || self.linked_recv.is_some()
                || self.send_busy()
                || self.doorbell_armed
                || self.cancels_in_flight > 0;
            if !busy {
                break;
            }
            let _ = self
                .conn
                .ring_mut()
                .enter(1, Some(Duration::from_millis(10)));
            self.reap(Instant::now());
        }
        if self.recv != RecvOp::Idle
            || self.linked_recv.is_some()
            || self.send_busy()
            || self.doorbell_armed
        {
            tracing::error!(
                shard = self.index,
                "the kernel did not finish this shard's operations; aborting rather than \
                 freeing memory it may still use"
            );
            std::process::abort();
        }
        self.collect_events();
        self.post();
        let _ = self.conn.shutdown();
        self.publish();
    }

    /// Takes requests from the queue while the shard has room.
    fn accept(&mut self, now: Instant) {
        if self.work.is_none() && !self.stopping {
            if let Ok(work) = self.work_rx.try_recv() {
                self.work = Some(RunningWork::new(work));
            }
        }
        self.take_aborts(now);
        if self.dead.is_some() && self.recovers() {
            // Requests wait in the queue for the next connection (`Worker::recover`).
            return;
        }
        // Left over from a recovery: they go first (bounded by the list).
        while self.room() > 0 && !self.resend.is_empty() && self.dead.is_none() {
            let request = self.resend.remove(0);
            self.start(request, now, false);
        }
        // Bounded by the room, which each request taken shrinks.
        while self.room() > 0 {
            match self.submit_rx.try_recv() {
                Ok(request) => self.start(request, now, false),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.stopping = true;
                    return;
                }
            }
        }
    }

    /// Starts the aborts callers asked for (bounded by the abort queue's capacity). A
    /// command the shard no longer holds has completed: nothing to do.
    fn take_aborts(&mut self, now: Instant) {
        while let Ok(user_data) = self.abort_rx.try_recv() {
            // Bounded by the commands held (the queue depth).
            let task = self
                .held
                .iter_mut()
                .find(|(_, held)| held.user_data == user_data && !held.from_work)
                .map(|(task, held)| {
                    held.abort_requested = true;
                    *task
                });
            if let Some(task) = task {
                if let Err(refused) = self.session.abort_task(now, task) {
                    tracing::debug!(shard = self.index, %refused, "abort not started");
                }
            }
        }
    }

    /// Hands one request to the session, or fails it at once.
    fn start(&mut self, request: Request, now: Instant, from_work: bool) {
        let Request {
            lun,
            cdb,
            direction,
            buffer,
            attribute,
            user_data,
        } = request;
        let large_read = matches!(direction, DataDirection::Read { len } if len >= self.config.zero_copy_min_bytes);
        let answer_bytes = BHS_LEN as u32
            + match direction {
                DataDirection::Read { len } => len,
                _ => 0,
            };
        let resend = (self.config.reconnect.enabled() && !from_work)
            .then(|| (lun, cdb.clone(), direction, attribute));
        let command = Request {
            lun,
            cdb,
            direction,
            buffer,
            attribute,
            user_data,
        };
        match self.session.submit(now, command) {
            Ok(task) => {
                self.held.insert(
                    task,
                    Held {
                        user_data,
                        large_read,
                        from_work,
                        answer_bytes,
                        resend,
                        abort_requested: false,
                    },
                );
                self.answer_bytes += u64::from(answer_bytes);
                if from_work {
                    if let Some(work) = self.work.as_mut() {
                        work.in_flight += 1;
                    }
                }
                if large_read {
                    self.large_reads += 1;
                }
                let depth = self.held.len() as u64;
                self.stats.peak_queue_depth = self.stats.peak_queue_depth.max(depth);
            }
            Err(refused) => {
                let ended =
                    self.dead.is_some() || matches!(refused.reason, SubmitRejection::NotLoggedIn);
                if let Some((lun, cdb, direction, attribute)) =
                    resend.filter(|_| ended && self.recovers())
                {
                    // The connection is being lost: this one waits for the next.
                    self.resend.push(Request {
                        lun,
                        cdb,
                        direction,
                        buffer: refused.request.buffer,
                        attribute,
                        user_data,
                    });
                    return;
                }
                let error = match (&self.dead, refused.reason) {
                    (Some(reason), _) => CommandError::ConnectionLost(reason.clone()),
                    (None, SubmitRejection::NotLoggedIn) => {
                        CommandError::ConnectionLost("the shard's session has ended".into())
                    }
                    (None, reason) => CommandError::Protocol(format!("not submitted: {reason}")),
                };
                self.stats.ios += 1;
                self.stats.ios_failed += 1;
                let completion = ShardCompletion {
                    user_data,
                    result: Err(failure(error, refused.request.buffer)),
                };
                match self.work.as_mut() {
                    Some(work) if from_work => work.done.push(completion),
                    _ => self.outgoing.push(completion),
                }
            }
        }
    }

    /// Posts the completions collected so far, unless a receive into or a send from a
    /// caller's buffer is in flight (then they wait for it: module docs). The counters are
    /// published first, so a caller holding a completion sees counters that include it.
    fn post(&mut self) {
        if self.outgoing.is_empty()
            || self.send_busy()
            || matches!(self.recv, RecvOp::Placed { .. })
        {
            return;
        }
        self.publish();
        self.unwoken += self.outgoing.len();
        for completion in self.outgoing.drain(..) {
            // Never blocks: the shard holds no more than the queue's free room.
            let _ = self.done_tx.send(completion);
        }
        let now = Instant::now();
        self.unwoken_since.get_or_insert(now);
        self.wake_caller_if_due(now);
    }

    /// Calls the work running on the shard when it is due: hands it its completions (under
    /// the rule `post` keeps: never while a receive into or a send from a caller's buffer
    /// is in flight) and starts the requests it makes. Drops it once it is over, or at once
    /// (with whatever it still holds) when the pool stops.
    fn run_work(&mut self, now: Instant) {
        let blocked = self.send_busy() || matches!(self.recv, RecvOp::Placed { .. });
        let room = self.room();
        let stopping = self.stopping;
        let Some(work) = self.work.as_mut() else {
            return;
        };
        if stopping || work.panicked {
            work.done.clear();
            if work.in_flight == 0 {
                self.work = None;
            }
            return;
        }
        if blocked || !work.due(now) {
            return;
        }
        let mut requests = std::mem::take(&mut self.work_requests);
        let mut submit = WorkSubmitter::new(room, &mut requests);
        // A work that panics must not take the shard (and the kernel I/O it holds) down.
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            work.work.poll(now, &mut work.done, &mut submit)
        }));
        let status = polled.unwrap_or_else(|_| {
            tracing::error!(
                shard = self.index,
                "the work on this shard panicked: it is dropped once its commands are back"
            );
            work.panicked = true;
            requests.clear();
            WorkStatus::Finished
        });
        // A finished work stays finished.
        if work.status == WorkStatus::Running {
            work.status = status;
        }
        work.done.clear();
        work.polled_at = Some(now);
        for request in requests.drain(..) {
            self.start(request, now, true);
        }
        self.work_requests = requests;
        if self.work.as_ref().is_some_and(RunningWork::over) {
            self.work = None;
        }
    }

    /// Wakes a sleeping caller once enough completions are posted, none of its commands is
    /// left in flight, the oldest posted completion has waited long enough, or the shard
    /// stops (`ShardConfig::caller_wake_batch`).
    fn wake_caller_if_due(&mut self, now: Instant) {
        let Some(since) = self.unwoken_since else {
            return;
        };
        let batch = self
            .config
            .caller_wake_batch
            .unwrap_or(self.config.queue_depth);
        let due = self.unwoken >= batch
            || self.held.is_empty()
            || self.stopping
            || self.dead.is_some()
            || now.saturating_duration_since(since) >= self.config.caller_wake_delay_max;
        if due {
            self.doorbell.caller.wake();
            self.unwoken = 0;
            self.unwoken_since = None;
        }
    }

    fn collect_events(&mut self) {
        while let Some(event) = self.session.poll_event() {
            match event {
                Event::CommandComplete(task, result) => {
                    let Some(held) = self.held.remove(&task) else {
                        continue;
                    };
                    if held.large_read {
                        self.large_reads = self.large_reads.saturating_sub(1);
                    }
                    self.answer_bytes = self
                        .answer_bytes
                        .saturating_sub(u64::from(held.answer_bytes));
                    let resend = held.resend.filter(|_| !held.abort_requested);
                    let result = match (result, resend) {
                        // The connection went down under it: sent again after a new login
                        // (a timed-out command is not: it fails as such).
                        (Err(failure), Some((lun, cdb, direction, attribute)))
                            if matches!(failure.error, CommandError::ConnectionLost(_))
                                && self.recovers() =>
                        {
                            self.resend.push(Request {
                                lun,
                                cdb,
                                direction,
                                buffer: failure.buffer,
                                attribute,
                                user_data: held.user_data,
                            });
                            continue;
                        }
                        // The reinstated session's first answers report the reset our own
                        // recovery caused, instead of carrying out the command (SAM-5
                        // 5.14): sent again, as the SCSI midlayer does (bounded by
                        // `unit_attentions_left`).
                        (Ok(outcome), Some((lun, cdb, direction, attribute)))
                            if self.unit_attentions_left > 0
                                && is_reset_unit_attention(&outcome) =>
                        {
                            self.unit_attentions_left -= 1;
                            self.resend.push(Request {
                                lun,
                                cdb,
                                direction,
                                buffer: outcome.buffer,
                                attribute,
                                user_data: held.user_data,
                            });
                            continue;
                        }
                        (result, _) => result,
                    };
                    self.stats.ios += 1;
                    match &result {
                        Ok(outcome) => {
                            self.progressed = true;
                            self.stats.bytes += u64::from(outcome.transferred);
                        }
                        Err(_) => self.stats.ios_failed += 1,
                    }
                    let completion = ShardCompletion {
                        user_data: held.user_data,
                        result: result.map_err(PathFailure::from),
                    };
                    if held.from_work {
                        // Dropped if the work is gone (the pool is stopping).
                        if let Some(work) = self.work.as_mut() {
                            work.in_flight = work.in_flight.saturating_sub(1);
                            work.done.push(completion);
                        }
                    } else {
                        self.outgoing.push(completion);
                    }
                }
                Event::LoginComplete => self.login = Some(Ok(())),
                Event::LoginFailed { reason, .. } => self.login = Some(Err(reason)),
                Event::Redirect { address, .. } => {
                    self.login = Some(Err(format!("redirected to {address}")))
                }
                Event::ConnectionFailed(e) => {
                    tracing::warn!(shard = self.index, error = %e, "shard session failed");
                    if self.dead.is_none() {
                        self.dead = Some(e.to_string());
                    }
                }
                Event::AsyncMessage(m) => {
                    tracing::info!(shard = self.index, event = ?m, "async message")
                }
                _ => {}
            }
        }
    }

    fn lose_connection(&mut self, reason: String) {
        if self.dead.is_some() {
            return;
        }
        tracing::warn!(shard = self.index, %reason, "shard connection lost");
        self.session
            .handle_connection_lost(Instant::now(), reason.clone());
        self.dead = Some(reason);
        self.placing = None;
        self.trailer = None;
        self.collect_events();
    }

    fn track_window(&mut self, now: Instant) {
        let closed = self.session.commands_waiting() > 0;
        match (self.window_closed_since, closed) {
            (None, true) => self.window_closed_since = Some(now),
            (Some(since), false) => {
                self.stats.window_closed_ns += (now - since).as_nanos() as u64;
                self.window_closed_since = None;
            }
            _ => {}
        }
    }

    fn publish(&mut self) {
        self.stats.kernel_entries = self.kernel_entries_base
            + self
                .conn
                .kernel_entries()
                .saturating_sub(self.kernel_entries_at_login);
        self.stats.bytes_copied =
            self.bytes_copied_base + self.session.stats().bytes_copied + self.staged_copy_bytes;
        self.stats.queue_depth = self.held.len() as u64;
        self.shared.store(&self.stats);
    }
}

/// CHECK CONDITION with UNIT ATTENTION, ASC 0x29 (POWER ON, RESET, OR BUS DEVICE RESET
/// OCCURRED and its qualifiers, I_T NEXUS LOSS among them: SPC-4 annex D): the command was
/// not carried out.
fn is_reset_unit_attention(outcome: &crate::session::CommandOutcome) -> bool {
    const STATUS_CHECK_CONDITION: u8 = 0x02;
    const SENSE_KEY_UNIT_ATTENTION: u8 = 0x06;
    const ASC_POWER_ON_OR_RESET: u8 = 0x29;
    outcome.status == STATUS_CHECK_CONDITION
        && outcome
            .sense
            .as_deref()
            .and_then(|s| crate::scsi::Sense::decode(s).ok())
            .is_some_and(|s| s.key == SENSE_KEY_UNIT_ATTENTION && s.asc == ASC_POWER_ON_OR_RESET)
}

/// Parses a header whose bytes (BHS, AHS, header digest) are all in `bytes`.
fn parse_header(bytes: &[u8], frame: &pdu::Frame) -> Result<Header, String> {
    pdu::decode_header(bytes, frame).map_err(|e| format!("malformed PDU: {e}"))
}
