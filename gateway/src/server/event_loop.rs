//! One event loop thread: an io_uring instance that accepts on every portal and drives its
//! connections with receive and send operations.
//!
//! Ring flags as in `datapath::transport::ring`: `SINGLE_ISSUER | DEFER_TASKRUN` when the
//! kernel grants them (this thread is the only submitter), else a plain ring. The loop
//! always enters the kernel asking for at least one completion, with a timeout that is the
//! nearest session timer, so deferred completion work always runs.
//!
//! Buffer ownership: a connection's receive buffer is lent to the kernel while a receive is
//! in flight and is not touched (beyond the bytes already received) until its completion;
//! its send buffer likewise while a send is in flight, new output collecting in a second
//! buffer meanwhile. A connection is freed only once neither operation is in flight: to
//! close, the loop shuts the socket down, which ends both, then closes the descriptor.
//!
//! File I/O (READ, WRITE, SYNCHRONIZE CACHE on file units, see `file_io`) runs on the same
//! ring. Each operation lives in the loop's own table, not in its connection, and owns its
//! buffer until its last completion: a connection may close while its I/O is in flight,
//! and the completion then finds the connection gone (slot empty or another generation)
//! and drops the result. The loop ends only once no file I/O is in flight, and the units
//! are flushed after every loop has ended.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datapath::sys::EventFd;
use datapath::transport::{RingFlags, RingSetup};
use io_uring::{opcode, squeue, types, IoUring};

use crate::session::{ConnectionParams, TargetError, TargetEvent, TargetSession, TargetState};

use super::blocking::{Cancelled, Inbox, Reply};
use super::connection::{CloseReason, Connection, ConnectionLimits};
use super::file_io::{FileOp, LegId, NotOnRing, Progress};
use super::lun_stats::LoopLunStats;
use super::portals::AsyncRequest;
use super::{
    ConnControl, Deferred, LoopConfig, LoopMessage, LoopStats, PortalListener, SessionKey, Shared,
};
use crate::portal::{PortalLoad, PortalRole};

/// io_uring's largest completion queue.
const MAX_CQ_ENTRIES: u32 = 1 << 16;
/// The longest the loop sleeps without a timer due (it re-checks the shutdown flag).
const MAX_WAIT: Duration = Duration::from_millis(500);
/// How long a closing connection may take to send its last PDUs.
const CLOSE_FLUSH: Duration = Duration::from_secs(2);
/// How long shutdown waits for file I/O a hung backend holds.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long accepting pauses when the process is out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

const KIND_ACCEPT: u64 = 1;
const KIND_RECV: u64 = 2;
const KIND_SEND: u64 = 3;
const KIND_WAKE: u64 = 4;
const KIND_FILE: u64 = 5;
/// Not a ring operation: a job on the blocking pool (for deadlines).
const KIND_BLOCKING: u64 = 6;
/// A migrating LUN's destination leg of a file operation (`KIND_FILE` is its source's).
const KIND_FILE_DESTINATION: u64 = 7;

fn token(kind: u64, slot: usize, generation: u32) -> u64 {
    kind << 56 | ((slot as u64) & 0x00ff_ffff) << 32 | u64::from(generation)
}

fn untoken(user_data: u64) -> (u64, usize, u32) {
    (
        user_data >> 56,
        ((user_data >> 32) & 0x00ff_ffff) as usize,
        user_data as u32,
    )
}

/// Wakes an event loop from another thread (an eventfd the loop keeps a read on).
#[derive(Debug)]
pub(crate) struct Waker {
    fd: EventFd,
    /// Set with a wake-up that asks the loop to look for connections told to close.
    pub(crate) kills_requested: std::sync::atomic::AtomicBool,
    /// The loop may sleep in the kernel: set before it looks at the published epoch and
    /// waits, cleared when the wait returns ([`Waker::wake_if_parked`]).
    parked: std::sync::atomic::AtomicBool,
}

impl Waker {
    pub(crate) fn new() -> io::Result<Waker> {
        Ok(Waker {
            fd: EventFd::new()?,
            kills_requested: std::sync::atomic::AtomicBool::new(false),
            parked: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub(crate) fn wake(&self) {
        self.fd.signal();
    }

    /// Wakes the loop for a configuration published before this call (its epoch stored
    /// with `SeqCst`) only if the loop may be sleeping. A loop that is not parked looks
    /// at the epoch before its next wait ([`EventLoop::park`]), and both sides store
    /// then load with `SeqCst`, so one of them sees the other: a loop busy with I/O is
    /// spared a wake-up (a completion to reap, a read to arm again) per publication.
    pub(crate) fn wake_if_parked(&self) {
        if self.parked.load(Ordering::SeqCst) {
            self.wake();
        }
    }

    /// Reads and resets the eventfd's count: the wake-ups since the last read.
    #[cfg(test)]
    pub(crate) fn take_wakes(&self) -> u64 {
        self.fd.take()
    }
}

impl crate::wake_batch::Signal for Waker {
    fn signal(&self) {
        self.wake();
    }
}

struct Slot {
    fd: RawFd,
    generation: u32,
    conn: Connection,
    control: Arc<ConnControl>,
    session_key: Option<SessionKey>,
    recv_in_flight: bool,
    send_in_flight: bool,
    /// Bytes lent to the kernel by the send in flight (and not yet sent).
    send_buf: Vec<u8>,
    send_pos: usize,
    /// When closing began, to bound the final flush.
    closing_since: Option<Instant>,
    shut_down: bool,
    /// Still logging in: counted against the login-phase limits.
    logging_in: bool,
    /// Whether the slot waits in the loop's list of slots to service this turn.
    queued: bool,
    /// The deadline this slot has in the loop's timer heap, if any.
    timer: Option<Instant>,
    /// What this slot last added to the loop's memory figures ([`LoopStats`]).
    counted_output: u64,
    counted_receive_buffer: u64,
}

/// A command on the blocking pool.
struct BlockingEntry {
    generation: u32,
    conn_index: usize,
    conn_generation: u32,
    command: crate::session::CommandId,
    cancelled: Cancelled,
    /// Answered by its deadline already; the late result is dropped.
    answered: bool,
}

struct EventLoop {
    ring: IoUring,
    shared: Arc<Shared>,
    /// The portals this loop accepts on, by slot (a removed portal's slot is `None`);
    /// an accept's token carries the slot and the portal's id.
    listeners: Vec<Option<PortalListener>>,
    waker: Arc<super::event_loop::Waker>,
    /// The eventfd read's buffer; leaked so it outlives the ring whatever the kernel does
    /// with a read still armed when the ring is torn down.
    wake_buf: &'static mut [u8; 8],
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    next_generation: u32,
    connections: usize,
    stopping: bool,
    /// Required entries (file I/O, the eventfd read) that did not fit in the submission
    /// queue yet, even after a submit. Receives, sends and accepts never wait here: they
    /// are armed on a later turn instead. So the backlog holds at most one entry per file
    /// operation issued (at most [`FILE_OPS_PER_UNIT`] per logical unit) plus one.
    backlog: VecDeque<squeue::Entry>,
    /// File I/O in flight, by token slot, with the generation its token carries.
    file_ops: Vec<Option<(u32, FileOp)>>,
    free_file_ops: Vec<usize>,
    file_ops_in_flight: usize,
    /// File I/O issued per logical unit (by the address of its shared state), and the
    /// operations waiting for room under [`FILE_OPS_PER_UNIT`] (slot, generation).
    unit_file_ops: HashMap<usize, (usize, VecDeque<(usize, u32)>)>,
    /// Commands on the blocking pool, by token slot, and their results' way back.
    blocking_jobs: Vec<Option<BlockingEntry>>,
    free_blocking_jobs: Vec<usize>,
    inbox: Arc<Inbox>,
    /// When each deferred command must be answered, backend or not: (deadline, kind
    /// (`KIND_FILE` or `KIND_BLOCKING`), slot, generation). Stale entries are skipped.
    command_deadlines: BinaryHeap<Reverse<(Instant, u64, usize, u32)>>,
    /// When shutdown began: deferred work still in flight is waited for only so long.
    stopping_since: Option<Instant>,
    stats: Arc<LoopStats>,
    /// Full-size receive buffers, lent to connections while large PDUs arrive.
    rx_pool: Arc<super::rx_buffers::RxBufferPool>,
    /// Slots with something to do this turn (a completion, a due timer, new work): only
    /// these are serviced, so an idle connection costs nothing per turn.
    to_service: Vec<usize>,
    /// Connection deadlines, earliest first: (deadline, slot, generation). Entries go
    /// stale when a slot's deadline moves; a stale entry only causes one early look.
    timers: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    /// Connections still logging in, by source address, and all of them in accept
    /// order (slot, generation; entries of connections that moved on are skipped).
    logins_by_source: HashMap<IpAddr, usize>,
    logins: VecDeque<(usize, u32)>,
    logins_count: usize,
    /// Connections refused or accepts paused, for logging one in a thousand.
    refused: u64,
    /// Listeners whose accept waits for descriptors, and until when.
    paused_accepts: Vec<usize>,
    accepts_resume_at: Option<Instant>,
    /// The configuration this loop runs with, and where new ones arrive.
    config: LoopConfig,
    /// Statistics per unit, written only by this loop.
    lun_stats: LoopLunStats,
}

/// The completion queue for `sq_entries` of submission queue and the limits: room for a
/// completion of every operation that can be in flight at once (a receive and a send per
/// connection, an accept per listener, the eventfd read, file I/O), so the kernel never has
/// to hold completions back, and at least 4x the submission queue (multishot receives
/// end on a full one); io_uring allows 65,536 at most.
fn cq_entries(sq_entries: u32, max_connections: usize, listeners: usize) -> u32 {
    let in_flight = 2 * max_connections + listeners + 1 + FILE_OPS_IN_FLIGHT_ROOM;
    let in_flight = u32::try_from(in_flight).unwrap_or(u32::MAX);
    in_flight
        .max(sq_entries.saturating_mul(4))
        .checked_next_power_of_two()
        .unwrap_or(MAX_CQ_ENTRIES)
        .min(MAX_CQ_ENTRIES)
}

/// Completion queue room kept for file I/O (16 units at [`FILE_OPS_PER_UNIT`] each; more
/// only makes the kernel hold completions until there is room).
const FILE_OPS_IN_FLIGHT_ROOM: usize = 16 * FILE_OPS_PER_UNIT;

fn build_ring(sq_entries: u32, cq_entries: u32) -> io::Result<IoUring> {
    let setup = RingSetup {
        entries: sq_entries,
        cq_entries,
        preferred: RingFlags::SingleIssuer {
            taskrun_flag: false,
            issuer_enables: false,
        },
        coop_taskrun: false,
        iopoll: false,
    };
    Ok(datapath::transport::build_ring(&setup)?.ring)
}

/// io_uring's worker threads for file I/O that cannot be issued without blocking, per
/// ring (the kernel's default is 4 per CPU): with [`FILE_OPS_PER_UNIT`] at most, a few
/// hung units still leave workers to the others.
const IO_WORKERS: u32 = 64;
/// File I/O of one logical unit in flight at once on a ring; more waits in the loop. A
/// unit whose backend hangs holds this many of io_uring's workers and no more.
const FILE_OPS_PER_UNIT: usize = 16;

/// The body of an event loop thread. Reports on `ready` whether the ring came up.
pub(super) fn run(
    shared: Arc<Shared>,
    waker: Arc<Waker>,
    stats: Arc<LoopStats>,
    config: LoopConfig,
    ready: Sender<io::Result<()>>,
) {
    let sq_entries = shared.limits.ring_entries.clamp(1, 1 << 15);
    let listeners: Vec<Option<PortalListener>> =
        config.current.listeners.iter().cloned().map(Some).collect();
    // Room for a few portals added later.
    let cq_entries = cq_entries(
        sq_entries,
        shared.max_connections_per_thread,
        listeners.len() + 16,
    );
    let ring = match build_ring(sq_entries, cq_entries) {
        Ok(ring) => ring,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut workers = [IO_WORKERS, 0];
    if let Err(error) = ring.submitter().register_iowq_max_workers(&mut workers) {
        tracing::debug!(%error, "io_uring worker limit left as the kernel set it");
    }
    let _ = ready.send(Ok(()));
    let inbox = Arc::new(Inbox::new(Arc::clone(&waker)));
    let mut event_loop = EventLoop {
        ring,
        shared,
        listeners,
        waker,
        wake_buf: Box::leak(Box::new([0u8; 8])),
        slots: Vec::new(),
        free: Vec::new(),
        next_generation: 1,
        connections: 0,
        stopping: false,
        backlog: VecDeque::new(),
        file_ops: Vec::new(),
        free_file_ops: Vec::new(),
        file_ops_in_flight: 0,
        unit_file_ops: HashMap::new(),
        blocking_jobs: Vec::new(),
        free_blocking_jobs: Vec::new(),
        inbox,
        command_deadlines: BinaryHeap::new(),
        stopping_since: None,
        stats,
        to_service: Vec::new(),
        rx_pool: Arc::new(super::rx_buffers::RxBufferPool::default()),
        timers: BinaryHeap::new(),
        logins_by_source: HashMap::new(),
        logins: VecDeque::new(),
        logins_count: 0,
        refused: 0,
        paused_accepts: Vec::new(),
        accepts_resume_at: None,
        config,
        lun_stats: LoopLunStats::default(),
    };
    event_loop.run();
}

impl EventLoop {
    fn run(&mut self) {
        for index in 0..self.listeners.len() {
            self.arm_accept(index);
        }
        self.arm_wake();
        loop {
            if self.shared.shutdown.load(Ordering::Acquire) && !self.stopping {
                self.stopping = true;
                self.stopping_since = Some(Instant::now());
                for index in 0..self.slots.len() {
                    if let Some(slot) = self.slots[index].as_mut() {
                        slot.conn.abort(TargetError::Shutdown);
                        self.mark(index);
                    }
                }
            }
            // File I/O in flight still writes into buffers this loop owns, and a write
            // must land before the units are flushed: wait for it, but not forever for
            // a backend that hangs.
            if self.stopping && self.connections == 0 {
                if self.file_ops_in_flight == 0 {
                    break;
                }
                if self
                    .stopping_since
                    .is_some_and(|t| t.elapsed() >= SHUTDOWN_GRACE)
                {
                    self.abandon_file_ops();
                    break;
                }
            }
            self.park();
            let now = Instant::now();
            let wait = if self.to_service.is_empty() {
                self.next_deadline()
                    .map_or(MAX_WAIT, |d| d.saturating_duration_since(now))
                    .min(MAX_WAIT)
            } else {
                // Slots marked while others were serviced: only a look at the ring.
                Duration::ZERO
            };
            if let Err(e) = self.enter(wait) {
                tracing::error!(error = %e, "io_uring_enter failed; event loop stops");
                std::process::abort();
            }
            self.waker.parked.store(false, Ordering::Relaxed);
            let completions: Vec<(u64, i32)> = self
                .ring
                .completion()
                .map(|cqe| (cqe.user_data(), cqe.result()))
                .collect();
            self.take_published_config();
            let now = Instant::now();
            for (user_data, result) in completions {
                self.handle_completion(now, user_data, result);
            }
            self.service(Instant::now());
        }
    }

    fn enter(&mut self, wait: Duration) -> io::Result<()> {
        self.flush_backlog();
        let timespec = types::Timespec::from(wait.max(Duration::from_micros(100)));
        let args = types::SubmitArgs::new().timespec(&timespec);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Queues an entry. When the submission queue is full, what it holds goes to the
    /// kernel and the entry tries again; still full (the kernel took nothing), a
    /// `required` entry waits in the bounded backlog and any other is handed back, for its
    /// caller to arm on a later turn.
    ///
    /// # Safety
    /// The entry's buffers must stay valid and untouched until its completion.
    unsafe fn push(&mut self, entry: squeue::Entry, required: bool) -> Result<(), squeue::Entry> {
        // SAFETY: forwarded to the caller.
        if unsafe { self.ring.submission().push(&entry) }.is_ok() {
            return Ok(());
        }
        let _ = self.ring.submit();
        // SAFETY: forwarded to the caller.
        if unsafe { self.ring.submission().push(&entry) }.is_ok() {
            return Ok(());
        }
        if !required {
            self.stats.arms_deferred.fetch_add(1, Ordering::Relaxed);
            return Err(entry);
        }
        self.backlog.push_back(entry);
        let depth = self.backlog.len() as u64;
        self.stats
            .ring_backlog_high_water
            .fetch_max(depth, Ordering::Relaxed);
        Ok(())
    }

    fn flush_backlog(&mut self) {
        while let Some(entry) = self.backlog.pop_front() {
            // SAFETY: entries in the backlog were pushed by `push`, whose callers vouched
            // for their buffers.
            if unsafe { self.ring.submission().push(&entry) }.is_err() {
                self.backlog.push_front(entry);
                let _ = self.ring.submit();
                if self.ring.submission().is_full() {
                    break;
                }
            }
        }
    }

    fn arm_accept(&mut self, index: usize) {
        let Some(Some(listener)) = self.listeners.get(index) else {
            return;
        };
        let entry = opcode::Accept::new(
            types::Fd(listener.socket.as_raw_fd()),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .flags(libc::SOCK_CLOEXEC)
        .build()
        .user_data(token(KIND_ACCEPT, index, listener.id));
        // SAFETY: no buffers. The kernel holds its own reference to the socket while the
        // accept is in flight, so a portal removed meanwhile (its descriptor shut down
        // and closed) only makes the accept complete with an error.
        if unsafe { self.push(entry, false) }.is_err() {
            // Accepted on a later turn: new connections wait in the listen queue.
            self.paused_accepts.push(index);
            self.accepts_resume_at = Some(Instant::now());
        }
    }

    fn arm_wake(&mut self) {
        let entry = opcode::Read::new(
            types::Fd(self.waker.fd.as_raw_fd()),
            self.wake_buf.as_mut_ptr(),
            8,
        )
        .build()
        .user_data(token(KIND_WAKE, 0, 0));
        // SAFETY: `wake_buf` is leaked, so valid for the life of the process; it is only
        // written by this read.
        let _ = unsafe { self.push(entry, true) };
    }

    /// A generation for a new slot or operation (never 0), so a completion or deadline
    /// of an earlier occupant is told apart.
    fn take_generation(&mut self) -> u32 {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        generation
    }

    fn next_deadline(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse((at, _, _))| *at);
        let command = self.command_deadlines.peek().map(|Reverse((at, ..))| *at);
        [timer, command, self.accepts_resume_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Puts a slot on this turn's service list (once).
    fn mark(&mut self, index: usize) {
        if let Some(slot) = self.slots.get_mut(index).and_then(Option::as_mut) {
            if !slot.queued {
                slot.queued = true;
                self.to_service.push(index);
            }
        }
    }

    /// Marks the slots whose deadline has come.
    fn expire_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, index, generation))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let current = self
                .slots
                .get_mut(index)
                .and_then(Option::as_mut)
                .filter(|s| s.generation == generation && s.timer == Some(at));
            if let Some(slot) = current {
                slot.timer = None;
                self.mark(index);
            }
        }
    }

    /// Files the slot's next deadline (its connection's timers, or the end of its final
    /// flush) unless an earlier one is already filed.
    fn schedule(&mut self, index: usize) {
        let Some(slot) = self.slots.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        let flush_deadline = slot.closing_since.map(|t| t + CLOSE_FLUSH);
        let deadline = match (slot.conn.poll_timeout(), flush_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(at) = deadline {
            if slot.timer.is_none_or(|filed| at < filed) {
                slot.timer = Some(at);
                self.timers.push(Reverse((at, index, slot.generation)));
            }
        }
    }

    fn handle_completion(&mut self, now: Instant, user_data: u64, result: i32) {
        let (kind, index, generation) = untoken(user_data);
        match kind {
            KIND_ACCEPT => {
                let current = self
                    .listeners
                    .get(index)
                    .and_then(Option::as_ref)
                    .is_some_and(|l| l.id == generation);
                // The portal's load (sessions counted there; virtual or real).
                let load = self
                    .listeners
                    .get(index)
                    .and_then(Option::as_ref)
                    .filter(|l| l.id == generation)
                    .map(|l| Arc::clone(&l.load));
                if !current {
                    // A removed portal's last accept: a connection it still took is
                    // served; the portal is not armed again.
                    if result >= 0 {
                        self.accepted(now, result, load);
                    }
                    return;
                }
                if result >= 0 {
                    self.accepted(now, result, load);
                } else if matches!(-result, libc::EMFILE | libc::ENFILE | libc::ENOMEM) {
                    // Out of descriptors: accepting again at once would spin. Pause this
                    // listener a moment; connections closing meanwhile make room.
                    self.refuse_log(&format!(
                        "accept paused for {} ms: {}",
                        ACCEPT_BACKOFF.as_millis(),
                        io::Error::from_raw_os_error(-result)
                    ));
                    self.paused_accepts.push(index);
                    self.accepts_resume_at = Some(now + ACCEPT_BACKOFF);
                    return;
                } else if !matches!(-result, libc::EINTR | libc::ECONNABORTED | libc::EAGAIN) {
                    tracing::warn!(error = %io::Error::from_raw_os_error(-result), "accept failed");
                }
                if !self.stopping {
                    self.arm_accept(index);
                }
            }
            KIND_WAKE => {
                for (token, command, result) in self.inbox.take() {
                    self.blocking_done(token, command, result);
                }
                self.take_new_config();
                if self.waker.kills_requested.swap(false, Ordering::AcqRel) {
                    // Another thread asked a connection to close (reinstatement): rare,
                    // so a look at every slot is fine here.
                    for index in 0..self.slots.len() {
                        if self.slots[index].as_ref().is_some_and(|s| {
                            s.control.kill.load(Ordering::Acquire)
                                || s.control.async_request.load(Ordering::Acquire) != 0
                        }) {
                            self.mark(index);
                        }
                    }
                }
                if !self.stopping {
                    self.arm_wake();
                }
            }
            KIND_FILE => self.file_completion(LegId::Source, index, generation, result),
            KIND_FILE_DESTINATION => {
                self.file_completion(LegId::Destination, index, generation, result)
            }
            KIND_RECV | KIND_SEND => {
                let Some(slot) = self
                    .slots
                    .get_mut(index)
                    .and_then(Option::as_mut)
                    .filter(|s| s.generation == generation)
                else {
                    tracing::warn!(user_data, "completion for a connection no longer here");
                    return;
                };
                if kind == KIND_RECV {
                    slot.recv_in_flight = false;
                    match result {
                        n if n > 0 => slot.conn.handle_received(now, n as usize),
                        0 => slot.conn.handle_eof(),
                        e if matches!(-e, libc::EINTR | libc::EAGAIN) => {}
                        e => {
                            if slot.conn.close_reason().is_none() {
                                tracing::info!(peer = %slot.conn.peer(), error = %io::Error::from_raw_os_error(-e), "receive failed");
                            }
                            slot.conn.handle_eof();
                        }
                    }
                } else {
                    slot.send_in_flight = false;
                    match result {
                        n if n >= 0 => slot.send_pos += n as usize,
                        e if matches!(-e, libc::EINTR | libc::EAGAIN) => {}
                        e => {
                            tracing::info!(peer = %slot.conn.peer(), error = %io::Error::from_raw_os_error(-e), "send failed");
                            slot.send_buf.clear();
                            slot.send_pos = 0;
                            slot.conn.tx.clear();
                            slot.conn.handle_eof();
                        }
                    }
                    slot.conn.fill_output();
                }
                self.mark(index);
            }
            _ => tracing::warn!(user_data, "completion of an unknown kind"),
        }
    }

    fn accepted(&mut self, now: Instant, fd: RawFd, portal: Option<Arc<PortalLoad>>) {
        // SAFETY: the kernel just gave us this descriptor; we own it from here.
        let stream = unsafe { TcpStream::from_raw_fd(fd) };
        let peer = match stream.peer_addr() {
            Ok(peer) => peer,
            Err(error) => {
                tracing::info!(%error, "accepted connection already gone");
                return;
            }
        };
        if self.stopping || self.connections >= self.shared.max_connections_per_thread {
            self.refuse(peer, "at the connection limit");
            return;
        }
        let source = peer.ip();
        let from_source = self.logins_by_source.get(&source).copied().unwrap_or(0);
        if from_source >= self.shared.limits.max_logins_per_source {
            self.refuse(peer, "too many connections logging in from this address");
            return;
        }
        if self.logins_count >= self.shared.limits.max_logins {
            // Make room by closing the connection that has been logging in longest: a
            // flood of silent connections cannot keep a real initiator out.
            self.evict_oldest_login();
        }
        let _ = stream.set_nodelay(true);
        // The portal the host reached (also for a removed portal's last accept).
        let local = stream.local_addr().ok();
        let fd = stream.into_raw_fd();
        let challenge = datapath::client::random_bytes(16);
        let stat_sn_seed = datapath::client::random_bytes(4);
        let params = ConnectionParams {
            tsih: self.shared.allocate_tsih(),
            chap_challenge: challenge,
            initial_stat_sn: u32::from_be_bytes([
                stat_sn_seed[0],
                stat_sn_seed[1],
                stat_sn_seed[2],
                stat_sn_seed[3],
            ]),
            portal_group_tag: self.shared.portal_group_tag,
            via_virtual_portal: portal
                .as_ref()
                .is_some_and(|p| p.role == PortalRole::Virtual),
        };
        let tsih = params.tsih;
        let session =
            TargetSession::new(Arc::clone(&self.config.current.session_config), params, now);
        let limits = ConnectionLimits {
            max_recv_data_segment_length: self
                .config
                .current
                .session_config
                .offer
                .max_recv_data_segment_length,
            stall_timeout: self.shared.stall_timeout,
            max_output_bytes: self.shared.limits.max_output_bytes_per_connection,
            first_pdu_timeout: self.shared.limits.first_pdu_timeout,
        };
        let portal_addr = portal.as_ref().map(|p| p.addr).or(local).unwrap_or(peer);
        let conn = Connection::new(
            session,
            peer,
            Arc::clone(&self.config.current.targets),
            limits,
            now,
        )
        .with_port(portal, Arc::clone(&self.shared.array.alua))
        .with_rx_pool(Arc::clone(&self.rx_pool));
        let generation = self.take_generation();
        let slot = Slot {
            fd,
            generation,
            conn,
            control: Arc::new(ConnControl {
                kill: std::sync::atomic::AtomicBool::new(false),
                dropped: std::sync::atomic::AtomicBool::new(false),
                loop_waker: Arc::clone(&self.waker),
                peer,
                tsih,
                portal: portal_addr,
                async_request: std::sync::atomic::AtomicU64::new(0),
            }),
            session_key: None,
            recv_in_flight: false,
            send_in_flight: false,
            send_buf: Vec::new(),
            send_pos: 0,
            closing_since: None,
            shut_down: false,
            logging_in: true,
            queued: false,
            timer: None,
            counted_output: 0,
            counted_receive_buffer: 0,
        };
        let index = match self.free.pop() {
            Some(index) => {
                self.slots[index] = Some(slot);
                index
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.connections += 1;
        *self.logins_by_source.entry(source).or_insert(0) += 1;
        self.logins.push_back((index, generation));
        self.logins_count += 1;
        self.mark(index);
        tracing::debug!(%peer, "connection accepted");
    }

    /// Closes a new connection at once (dropping the stream closes it). Logged for the
    /// first refusal and every thousandth after, so a flood cannot flood the log too.
    fn refuse(&mut self, peer: std::net::SocketAddr, why: &str) {
        self.refuse_log(&format!("connection from {peer} refused: {why}"));
    }

    fn refuse_log(&mut self, what: &str) {
        self.refused += 1;
        if self.refused % 1000 == 1 {
            tracing::warn!(refused = self.refused, "{what}");
        }
    }

    /// Re-arms the accepts paused for want of descriptors, once their pause is over.
    fn resume_accepts(&mut self, now: Instant) {
        if self.accepts_resume_at.is_some_and(|at| now >= at) {
            self.accepts_resume_at = None;
            for index in std::mem::take(&mut self.paused_accepts) {
                if !self.stopping {
                    self.arm_accept(index);
                }
            }
        }
    }

    fn evict_oldest_login(&mut self) {
        while let Some((index, generation)) = self.logins.pop_front() {
            let Some(slot) = self
                .slots
                .get_mut(index)
                .and_then(Option::as_mut)
                .filter(|s| s.generation == generation && s.logging_in)
            else {
                continue;
            };
            if slot.conn.close_reason().is_some() {
                continue;
            }
            tracing::info!(peer = %slot.conn.peer(), "login-phase connections at their limit: closing the oldest");
            slot.conn.abort(TargetError::LoginTimeout);
            self.left_login(index);
            self.mark(index);
            return;
        }
    }

    /// A connection stopped counting against the login-phase limits (logged in, or
    /// closing).
    fn left_login(&mut self, index: usize) {
        let Some(slot) = self.slots.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        if !slot.logging_in {
            return;
        }
        slot.logging_in = false;
        self.logins_count -= 1;
        let source = slot.conn.peer().ip();
        if let Some(count) = self.logins_by_source.get_mut(&source) {
            *count -= 1;
            if *count == 0 {
                self.logins_by_source.remove(&source);
            }
        }
        // Entries of connections that moved on are skipped when met; drop them once they
        // outnumber the live ones, so the queue stays bounded by the login limit.
        if self.logins.len() > 2 * self.logins_count + 64 {
            let slots = &self.slots;
            self.logins.retain(|(i, g)| {
                slots
                    .get(*i)
                    .and_then(Option::as_ref)
                    .is_some_and(|s| s.generation == *g && s.logging_in)
            });
        }
    }

    /// Takes a configuration published since this loop's own, before the completions just
    /// collected are handled: a PDU that reached us after the control plane published (and
    /// after it answered the call that made the change) then meets the change, although
    /// the call did not wait for this loop (`Controller::publish_visible`). One atomic
    /// load per turn, on a line only the control plane writes (`SeqCst`, which [`park`]
    /// needs, is a plain load on x86).
    ///
    /// [`park`]: EventLoop::park
    fn take_published_config(&mut self) {
        if self.shared.published_epoch.load(Ordering::SeqCst) > self.config.current.epoch {
            self.take_new_config();
        }
    }

    /// Says the loop may sleep, then takes a configuration published meanwhile: a
    /// publisher that found the loop not parked did not wake it
    /// ([`Waker::wake_if_parked`]), so this look stands for the wake-up.
    fn park(&mut self) {
        self.waker.parked.store(true, Ordering::SeqCst);
        self.take_published_config();
    }

    /// Takes the newest configuration the control plane published, if any, at this turn
    /// boundary: every connection moves to it (see [`Connection::apply_config`]), then
    /// the loop says which epoch it runs. Rare, so a look at every slot is fine.
    fn take_new_config(&mut self) {
        let mut newest = None;
        while let Ok(message) = self.config.mailbox.try_recv() {
            match message {
                LoopMessage::Config(snapshot) => newest = Some(snapshot),
                LoopMessage::Stats(reply) => {
                    // Samples still held by connections are counted first.
                    for slot in self.slots.iter_mut().flatten() {
                        slot.conn.drain_samples(&mut self.lun_stats);
                    }
                    let _ = reply.send(self.lun_stats.copy());
                }
            }
        }
        let Some(snapshot) = newest else {
            return;
        };
        self.take_portals(&snapshot);
        if self.lun_stats.retain_due() {
            let attached: std::collections::HashSet<u64> = snapshot
                .targets
                .iter()
                .flat_map(|t| t.luns.iter().map(|info| info.unit_id))
                .collect();
            self.lun_stats.retain(|unit| attached.contains(&unit));
        }
        for index in 0..self.slots.len() {
            if let Some(slot) = self.slots[index].as_mut() {
                slot.conn
                    .apply_config(&snapshot.session_config, &snapshot.targets);
                self.mark(index);
            }
        }
        let epoch = snapshot.epoch;
        let replaced = std::mem::replace(&mut self.config.current, snapshot);
        // Dropped by the control plane (once every holder let go): releasing thousands of
        // targets' pointers is not the loop's work. Sent before the epoch is told, so a
        // waiter that sees the epoch finds it (`Controller::wait_applied` drops them, then
        // an unbind waits for the units it closed to be free). Gone (shutdown): dropped
        // here.
        let _ = self.config.retired.send(replaced);
        self.config.applied_epoch.store(epoch, Ordering::Release);
        // Paired with `Controller::wait_applied`'s count and fence.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.shared.applied_waiters.load(Ordering::Relaxed) > 0 {
            let (lock, condvar) = &self.shared.applied;
            let _guard = lock.lock();
            condvar.notify_all();
        }
    }

    /// Portals added are armed; portals removed are let go (their accept in flight ends
    /// when the control plane shuts the socket down, and is not armed again).
    fn take_portals(&mut self, snapshot: &super::ConfigSnapshot) {
        if Arc::ptr_eq(&snapshot.listeners, &self.config.current.listeners) {
            return;
        }
        for slot in self.listeners.iter_mut() {
            if slot
                .as_ref()
                .is_some_and(|l| !snapshot.listeners.iter().any(|n| n.id == l.id))
            {
                *slot = None;
            }
        }
        for listener in snapshot.listeners.iter() {
            let known = self.listeners.iter().flatten().any(|l| l.id == listener.id);
            if known {
                continue;
            }
            let index = match self.listeners.iter().position(Option::is_none) {
                Some(index) => {
                    self.listeners[index] = Some(listener.clone());
                    index
                }
                None => {
                    self.listeners.push(Some(listener.clone()));
                    self.listeners.len() - 1
                }
            };
            if !self.stopping {
                self.arm_accept(index);
            }
        }
    }

    fn handle_events(&mut self, index: usize, events: Vec<TargetEvent>) {
        for event in events {
            if let TargetEvent::TargetReset { cold: true } = event {
                let Some(slot) = self.slots.get(index).and_then(Option::as_ref) else {
                    continue;
                };
                if let Some((_, _, target)) = &slot.session_key {
                    // RFC 7143 11.5.1: a cold reset ends every session of the target.
                    self.shared.close_target_sessions(target, &slot.control);
                }
                continue;
            }
            if let TargetEvent::LoggedIn {
                initiator_name,
                isid,
                target_name: Some(target),
                ..
            } = event
            {
                let Some(slot) = self.slots.get_mut(index).and_then(Option::as_mut) else {
                    continue;
                };
                let key = (initiator_name, isid, target);
                slot.session_key = Some(key.clone());
                let control = Arc::clone(&slot.control);
                self.shared.register_session(key, control);
            }
        }
    }

    /// Timers that came due, then every slot with something to do.
    fn service(&mut self, now: Instant) {
        self.count_connections();
        self.resume_accepts(now);
        self.expire_commands(now);
        self.expire_timers(now);
        let mut work = std::mem::take(&mut self.to_service);
        for &index in &work {
            if let Some(slot) = self.slots.get_mut(index).and_then(Option::as_mut) {
                slot.queued = false;
            }
        }
        for &index in &work {
            self.service_slot(index, now);
        }
        // Keep the list's allocation (a slot marked again meanwhile is in the new list).
        work.clear();
        if self.to_service.is_empty() {
            self.to_service = work;
        }
    }

    /// Held-back input, new file I/O, kill requests, timers, closing, then the receive
    /// and the send to arm.
    fn service_slot(&mut self, index: usize, now: Instant) {
        let Some(slot) = self.slots.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        if !slot.recv_in_flight {
            slot.conn.resume(now);
        }
        let deferred = slot.conn.take_deferred();
        if !deferred.is_empty() {
            let generation = slot.generation;
            let deadline = now + self.shared.limits.backend_timeout;
            for (command, work) in deferred {
                match work {
                    Deferred::Io(io) => {
                        self.start_file_op(index, generation, command, io, deadline)
                    }
                    Deferred::Blocking(job) => {
                        self.start_blocking(index, generation, command, job, deadline)
                    }
                }
            }
        }
        let Some(slot) = self.slots.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        let request = slot.control.async_request.swap(0, Ordering::AcqRel);
        if let Some(request) = AsyncRequest::decode(request) {
            if slot.conn.session.queue_async_message(
                request.event,
                0,
                request.parameter2,
                request.parameter3,
            ) {
                tracing::info!(
                    peer = %slot.conn.peer(),
                    event = request.event,
                    parameter3 = request.parameter3,
                    "async message sent"
                );
                slot.conn.fill_output();
            }
        }
        if slot.control.kill.swap(false, Ordering::AcqRel) {
            if slot.control.dropped.load(Ordering::Acquire) {
                slot.conn.abort(TargetError::Dropped);
            } else {
                slot.conn.abort(TargetError::Reinstated);
            }
        }
        if slot.conn.poll_timeout().is_some_and(|t| t <= now) {
            slot.conn.handle_timeout(now);
        }
        let events = slot.conn.take_events();
        let login_over = slot.logging_in
            && (slot.conn.session.state() != TargetState::Login
                || slot.conn.close_reason().is_some());
        self.handle_events(index, events);
        if login_over {
            self.left_login(index);
        }
        let Some(slot) = self.slots.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        if slot.conn.close_reason().is_some() {
            if slot.closing_since.is_none() {
                slot.closing_since = Some(now);
            }
            let flushed = !slot.send_in_flight && slot.conn.tx.is_empty();
            let peer_gone = matches!(slot.conn.close_reason(), Some(CloseReason::PeerClosed));
            let overdue = slot.closing_since.is_some_and(|t| now >= t + CLOSE_FLUSH);
            if (flushed || peer_gone || overdue) && !slot.shut_down {
                slot.shut_down = true;
                // SAFETY: a plain system call on a descriptor we own; it makes the
                // operations in flight on it complete.
                unsafe { libc::shutdown(slot.fd, libc::SHUT_RDWR) };
            }
            if slot.shut_down && !slot.recv_in_flight && !slot.send_in_flight {
                self.release(index);
                return;
            }
        }
        slot.conn.drain_samples(&mut self.lun_stats);
        self.arm_send(index);
        self.arm_recv(index);
        self.schedule(index);
        self.count_memory(index);
    }

    /// Brings the loop's memory figures up to date with one slot (`None`: it is gone).
    fn count_memory(&mut self, index: usize) {
        let Some(slot) = self.slots.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        let output = (slot.conn.output_backlog() + slot.send_buf.len()) as u64;
        let receive_buffer = slot.conn.receive_buffer_bytes() as u64;
        let stats = &self.stats;
        adjust(&stats.output_owed_bytes, slot.counted_output, output);
        adjust(
            &stats.receive_buffer_bytes,
            slot.counted_receive_buffer,
            receive_buffer,
        );
        slot.counted_output = output;
        slot.counted_receive_buffer = receive_buffer;
    }

    /// Copies the loop's counts of connections into its stats.
    fn count_connections(&self) {
        let stats = &self.stats;
        stats
            .connections
            .store(self.connections as u64, Ordering::Relaxed);
        stats
            .logging_in
            .store(self.logins_count as u64, Ordering::Relaxed);
        stats.refused.store(self.refused, Ordering::Relaxed);
    }

    fn arm_send(&mut self, index: usize) {
        let Some(slot) = self.slots.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        if slot.shut_down || slot.send_in_flight {
            return;
        }
        if slot.send_pos >= slot.send_buf.len() {
            slot.send_buf.clear();
            slot.send_pos = 0;
            std::mem::swap(&mut slot.send_buf, &mut slot.conn.tx);
            slot.conn.fill_output();
        }
        let Some(pending) = slot.send_buf.get(slot.send_pos..).filter(|b| !b.is_empty()) else {
            return;
        };
        let len = u32::try_from(pending.len()).unwrap_or(u32::MAX);
        let entry = opcode::Send::new(types::Fd(slot.fd), pending.as_ptr(), len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(token(KIND_SEND, index, slot.generation));
        slot.send_in_flight = true;
        // SAFETY: `send_buf` is neither written nor reallocated while the send is in
        // flight (new output goes to `conn.tx`), and the slot is not freed before the
        // completion arrives.
        if unsafe { self.push(entry, false) }.is_err() {
            self.not_armed(index, KIND_SEND);
        }
    }

    /// Arms a receive unless one is in flight or the connection wants no input (closing,
    /// or its output is backed up: the initiator's own TCP window then pushes back).
    fn arm_recv(&mut self, index: usize) {
        let Some(slot) = self.slots.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        if slot.shut_down || slot.recv_in_flight || !slot.conn.wants_input() {
            return;
        }
        let generation = slot.generation;
        let fd = slot.fd;
        let space = slot.conn.recv_space();
        let len = u32::try_from(space.len()).unwrap_or(u32::MAX);
        let entry = opcode::Recv::new(types::Fd(fd), space.as_mut_ptr(), len)
            .build()
            .user_data(token(KIND_RECV, index, generation));
        slot.recv_in_flight = true;
        // SAFETY: the receive space is the unfilled tail of the connection's receive
        // buffer, or the rest of a data segment in a command's write buffer that the
        // connection holds (lent by the session until the PDU is in); neither is
        // reallocated, moved, dropped or read while the receive is in flight (the
        // connection resumes held-back input, grows the buffer and hands placed data to
        // the session only with no receive in flight); the slot is not freed before the
        // completion.
        if unsafe { self.push(entry, false) }.is_err() {
            self.not_armed(index, KIND_RECV);
        }
    }

    /// A receive or send found no room in the submission queue: the slot tries again on
    /// the next turn (after the ring has been entered).
    fn not_armed(&mut self, index: usize, kind: u64) {
        if let Some(slot) = self.slots.get_mut(index).and_then(Option::as_mut) {
            if kind == KIND_RECV {
                slot.recv_in_flight = false;
            } else {
                slot.send_in_flight = false;
            }
        }
        self.mark(index);
    }

    fn start_blocking(
        &mut self,
        conn_index: usize,
        conn_generation: u32,
        command: crate::session::CommandId,
        job: super::BlockingJob,
        deadline: Instant,
    ) {
        let reply = self.register_blocking(conn_index, conn_generation, command, deadline);
        if let Ok(pool) = self.shared.blocking.lock() {
            pool.submit(job, reply);
        }
    }

    /// A command answered through the inbox (a blocking-pool job or queued I/O): its
    /// entry, its deadline, and the way back.
    fn register_blocking(
        &mut self,
        conn_index: usize,
        conn_generation: u32,
        command: crate::session::CommandId,
        deadline: Instant,
    ) -> Reply {
        let index = vacant_slot(&mut self.blocking_jobs, &mut self.free_blocking_jobs);
        let generation = self.take_generation();
        let cancelled = Cancelled::default();
        self.blocking_jobs[index] = Some(BlockingEntry {
            generation,
            conn_index,
            conn_generation,
            command,
            cancelled: Arc::clone(&cancelled),
            answered: false,
        });
        self.command_deadlines
            .push(Reverse((deadline, KIND_BLOCKING, index, generation)));
        Reply {
            inbox: Arc::clone(&self.inbox),
            token: (index, generation),
            command,
            cancelled,
        }
    }

    /// A job of the blocking pool finished.
    fn blocking_done(
        &mut self,
        (index, generation): (usize, u32),
        command: crate::session::CommandId,
        result: crate::session::CommandResult,
    ) {
        let Some(entry) = self
            .blocking_jobs
            .get_mut(index)
            .filter(|e| e.as_ref().is_some_and(|e| e.generation == generation))
            .and_then(Option::take)
        else {
            return;
        };
        self.free_blocking_jobs.push(index);
        if !entry.answered {
            self.deliver(entry.conn_index, entry.conn_generation, command, result);
        }
    }

    /// Answers the deferred commands whose deadline has passed, as the backend did not.
    fn expire_commands(&mut self, now: Instant) {
        while let Some(Reverse((at, kind, index, generation))) =
            self.command_deadlines.peek().copied()
        {
            if at > now {
                break;
            }
            self.command_deadlines.pop();
            let target = match kind {
                KIND_FILE => self
                    .file_ops
                    .get_mut(index)
                    .and_then(Option::as_mut)
                    .filter(|(g, op)| *g == generation && !op.answered)
                    .map(|(_, op)| {
                        op.answered = true;
                        (op.conn_index, op.conn_generation, op.command)
                    }),
                _ => self
                    .blocking_jobs
                    .get_mut(index)
                    .and_then(Option::as_mut)
                    .filter(|e| e.generation == generation && !e.answered)
                    .map(|e| {
                        e.answered = true;
                        e.cancelled.store(true, Ordering::Release);
                        (e.conn_index, e.conn_generation, e.command)
                    }),
            };
            if let Some((conn_index, conn_generation, command)) = target {
                let timed_out = self.stats.commands_timed_out.load(Ordering::Relaxed);
                self.stats
                    .commands_timed_out
                    .store(timed_out + 1, Ordering::Relaxed);
                tracing::warn!(
                    timeout_ms = self.shared.limits.backend_timeout.as_millis(),
                    "backend did not answer a command in time: answered ABORTED COMMAND, \
                     COMMAND TIMEOUT DURING PROCESSING"
                );
                self.deliver(conn_index, conn_generation, command, timed_out_result());
            }
        }
    }

    /// Shutdown with file I/O still in the kernel (a hung backend): its buffers are
    /// leaked, never freed, since the kernel may still write into them.
    fn abandon_file_ops(&mut self) {
        tracing::warn!(
            in_flight = self.file_ops_in_flight,
            "stopping with file I/O a backend never finished; its buffers are left allocated"
        );
        for (_, mut op) in self.file_ops.drain(..).flatten() {
            // The stripes a mirrored write holds are not memory the kernel uses: let them
            // go, so the migration's copy and workers do not wait for them forever.
            op.release_hold();
            std::mem::forget(op);
        }
        self.file_ops_in_flight = 0;
    }

    fn start_file_op(
        &mut self,
        conn_index: usize,
        conn_generation: u32,
        command: crate::session::CommandId,
        io: super::FileIo,
        deadline: Instant,
    ) {
        let op = match FileOp::new(conn_index, conn_generation, command, io) {
            Ok(op) => op,
            Err(NotOnRing::Queue(io)) => {
                let reply = self.register_blocking(conn_index, conn_generation, command, deadline);
                super::queued_io::submit(io, reply);
                return;
            }
            Err(NotOnRing::Finished(command, result)) => {
                self.deliver(conn_index, conn_generation, command, result);
                return;
            }
        };
        let unit = op.unit_key();
        let index = vacant_slot(&mut self.file_ops, &mut self.free_file_ops);
        let generation = self.take_generation();
        self.file_ops[index] = Some((generation, op));
        self.file_ops_in_flight += 1;
        self.command_deadlines
            .push(Reverse((deadline, KIND_FILE, index, generation)));
        let (issued, waiting) = self.unit_file_ops.entry(unit).or_default();
        if *issued < FILE_OPS_PER_UNIT {
            *issued += 1;
            self.issue_file_op(index, generation);
        } else {
            waiting.push_back((index, generation));
        }
    }

    /// Sends an operation's first request to the ring.
    fn issue_file_op(&mut self, index: usize, generation: u32) {
        let Some((_, op)) = self
            .file_ops
            .get_mut(index)
            .and_then(Option::as_mut)
            .filter(|(g, _)| *g == generation)
        else {
            return;
        };
        let first = op.start();
        // Once the source's start finished the operation, it leaves the table below.
        let second = match first {
            Progress::Finished(_) => None,
            _ => op.start_destination(),
        };
        self.file_progress(index, generation, first);
        if let Some(second) = second {
            self.file_progress(index, generation, second);
        }
    }

    /// An operation of `unit` left the ring: the next one waiting for that unit goes, and
    /// waiting ones answered by their deadline meanwhile are dropped unissued (their
    /// initiator was told they failed).
    fn unit_file_op_done(&mut self, unit: usize) {
        loop {
            let Some((issued, waiting)) = self.unit_file_ops.get_mut(&unit) else {
                return;
            };
            let Some((index, generation)) = waiting.pop_front() else {
                *issued -= 1;
                if *issued == 0 {
                    self.unit_file_ops.remove(&unit);
                }
                return;
            };
            let answered = self
                .file_ops
                .get(index)
                .and_then(Option::as_ref)
                .is_some_and(|(g, op)| *g == generation && op.answered);
            if answered {
                if let Some(entry) = self.file_ops.get_mut(index).and_then(Option::take) {
                    drop(entry);
                    self.free_file_ops.push(index);
                    self.file_ops_in_flight -= 1;
                }
                continue;
            }
            self.issue_file_op(index, generation);
            return;
        }
    }

    fn file_completion(&mut self, leg: LegId, index: usize, generation: u32, result: i32) {
        let Some((_, op)) = self
            .file_ops
            .get_mut(index)
            .and_then(Option::as_mut)
            .filter(|(g, _)| *g == generation)
        else {
            tracing::warn!(index, "completion for file I/O no longer here");
            return;
        };
        let progress = op.handle_completion(leg, result);
        self.file_progress(index, generation, progress);
    }

    /// Submits an operation's next request, or delivers its result once it is over.
    fn file_progress(&mut self, index: usize, generation: u32, progress: Progress) {
        match progress {
            Progress::Waiting => {}
            Progress::Submit(leg, entry) => {
                let kind = match leg {
                    LegId::Source => KIND_FILE,
                    LegId::Destination => KIND_FILE_DESTINATION,
                };
                let entry = entry.user_data(token(kind, index, generation));
                // SAFETY: the entry's buffer (if any) is owned by the operation in
                // `file_ops[index]`, which stays there, unmoved in its heap allocation
                // (a `Vec` or an `AlignedBuf` that is never resized), until this request
                // completes: operations leave the table only here below, on the
                // completion that finishes them, which comes only once neither of its
                // legs has a request in the kernel. The descriptor belongs to the backend,
                // which the operation keeps alive through its `Arc<LogicalUnit>`.
                let _ = unsafe { self.push(entry, true) };
            }
            Progress::Finished(outcome) => {
                let Some((_, op)) = self.file_ops.get_mut(index).and_then(Option::take) else {
                    return;
                };
                self.free_file_ops.push(index);
                self.file_ops_in_flight -= 1;
                // Only this thread writes the counter; others only read it.
                let completed = self.stats.file_ios_completed.load(Ordering::Relaxed);
                self.stats
                    .file_ios_completed
                    .store(completed + 1, Ordering::Relaxed);
                let (conn_index, conn_generation, command) =
                    (op.conn_index, op.conn_generation, op.command);
                self.unit_file_op_done(op.unit_key());
                if op.answered {
                    tracing::info!("file I/O finished after its command was answered");
                    return;
                }
                let result = op.finish(outcome);
                self.deliver(conn_index, conn_generation, command, result);
            }
        }
    }

    /// Hands a command's result to its connection, if that connection is still here.
    fn deliver(
        &mut self,
        conn_index: usize,
        conn_generation: u32,
        command: crate::session::CommandId,
        result: crate::session::CommandResult,
    ) {
        let Some(slot) = self
            .slots
            .get_mut(conn_index)
            .and_then(Option::as_mut)
            .filter(|s| s.generation == conn_generation)
        else {
            tracing::debug!("deferred command finished after its connection closed");
            return;
        };
        slot.conn.complete_deferred(command, result);
        self.mark(conn_index);
    }

    fn release(&mut self, index: usize) {
        self.left_login(index);
        let Some(slot) = self.slots[index].take() else {
            return;
        };
        self.free.push(index);
        self.connections -= 1;
        adjust(&self.stats.output_owed_bytes, slot.counted_output, 0);
        adjust(
            &self.stats.receive_buffer_bytes,
            slot.counted_receive_buffer,
            0,
        );
        if let Some(key) = &slot.session_key {
            self.shared.unregister_session(key, &slot.control);
        }
        // SAFETY: no operation is in flight on this descriptor, and we own it.
        unsafe { libc::close(slot.fd) };
        let peer = slot.conn.peer();
        if slot.session_key.is_none() && slot.conn.never_logged_in() {
            // A connection that never logged in: at debug level, so that a flood of
            // them does not flood the log (the refusals and evictions are counted).
            let reason = slot.conn.close_reason().map(ToString::to_string);
            tracing::debug!(%peer, ?reason, "connection closed before login");
            return;
        }
        match slot.conn.close_reason() {
            Some(reason @ (CloseReason::PeerClosed | CloseReason::LoggedOut)) => {
                tracing::info!(%peer, %reason, "connection closed")
            }
            Some(CloseReason::Session(TargetError::Shutdown)) => {
                tracing::info!(%peer, "connection closed for shutdown")
            }
            // The virtual portal's answer: status class 1 is a redirect, not a fault.
            Some(reason @ CloseReason::Session(TargetError::LoginRefused { class: 1, .. })) => {
                tracing::info!(%peer, %reason, "login redirected")
            }
            Some(reason) => tracing::warn!(%peer, %reason, "connection closed on a fault"),
            None => tracing::info!(%peer, "connection closed"),
        }
    }
}

/// The answer to a command whose backend did not answer within
/// [`super::ClientLimits::backend_timeout`].
fn timed_out_result() -> crate::session::CommandResult {
    use crate::disk::sense::{asc, key, Check};
    let result = crate::disk::ScsiResult::check_condition(&Check::new(
        key::ABORTED_COMMAND,
        asc::COMMAND_TIMEOUT_DURING_PROCESSING,
    ));
    crate::session::CommandResult {
        status: result.status,
        sense: result.sense,
        data_in: Vec::new(),
        data_out_wanted: None,
    }
}

/// Moves a loop figure from `before` to `after` (only the loop's thread writes it).
fn adjust(figure: &std::sync::atomic::AtomicU64, before: u64, after: u64) {
    let now = figure.load(Ordering::Relaxed);
    figure.store(now.saturating_sub(before) + after, Ordering::Relaxed);
}

/// A free index of `table` (from `free`, or a new entry at its end), left `None`.
fn vacant_slot<T>(table: &mut Vec<Option<T>>, free: &mut Vec<usize>) -> usize {
    free.pop().unwrap_or_else(|| {
        table.push(None);
        table.len() - 1
    })
}

#[cfg(test)]
mod waker_tests {
    use super::*;

    /// A publication wakes a loop only while it may sleep: a loop between waits looks at
    /// the published epoch itself before its next wait (`EventLoop::park`), so waking it
    /// would only cost it a completion to reap and a read to arm again.
    #[test]
    fn a_publication_wakes_a_parked_loop_and_spares_a_running_one() {
        let waker = Waker::new().unwrap();
        waker.wake_if_parked();
        assert_eq!(waker.take_wakes(), 0, "a running loop is not woken");
        waker.parked.store(true, Ordering::SeqCst);
        waker.wake_if_parked();
        assert_eq!(waker.take_wakes(), 1, "a parked loop is woken");
        waker.parked.store(false, Ordering::SeqCst);
        waker.wake();
        assert_eq!(waker.take_wakes(), 1, "other wake-ups are not gated");
    }
}
