//! The software path of a shard: kernel TCP through the shard's own io_uring (see the
//! module docs of [`crate::shard`]; the loop around it is `run`).
//!
//! A [`Connection`] is event-driven: it keeps at most one receive (and one receive linked
//! behind a placed payload), one send and one doorbell read on its ring, submits whatever
//! a turn queued with a single `io_uring_enter`, and waits in that same call (bounded by
//! the loop's deadline and the session's next timer, passed to the kernel as the wait's
//! own timeout, so no timeout entries ride on the ring). [`TcpPath`] holds one at a time
//! and replaces a lost one by a new login when `ShardConfig::reconnect` says so.
//!
//! The PDUs themselves are the connection driver's ([`crate::conn::Conn`]): every byte
//! received goes to its resumable receiver (which says when a Data-In's payload can be
//! received straight into the command's buffer, and checks trailers and digests), and
//! every send is its send batch. This file is the io_uring glue around it.
//!
//! Memory the kernel touches: the staging buffer (registered with the ring as its fixed
//! buffer, sized from the data segment length the shard declares), the gather list and the
//! driver's send batch are the shard's own and are not moved or changed while an operation
//! on them is in flight; a placed receive writes into, and a send reads from, a command's
//! buffer held by the session. The session hands such a buffer back only inside an event
//! (never drops it), and the connection hands those to the loop only while no receive
//! into, or send from, a caller's buffer is in flight (`Connection::take_finished`); a
//! connection is dropped only after `finish` has let the kernel end every operation. So no
//! buffer the kernel may still use ever leaves the shard.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types};

use super::reconnect::{Recovery, Step};
use super::ring_wake::{RingWake, WakeSource, Watches};
use super::run::{Finished, Path, PathState, Refusal};
use super::tag_map::TagMap;
use super::{failure, Doorbell, ShardConfig, ShardError, ShardInfo, ShardStats};
use crate::adapter::PathFailure;
use crate::conn::{Conn, SEND_BATCH_MAX_PDUS};
use crate::pdu::{self, BHS_LEN};
use crate::scsi::sense::{asc, Sense};
use crate::session::connect::{shard_isid, ClientConfig};
use crate::session::redirect::{PortalRoute, RedirectKind, TargetAddress};
use crate::session::{
    AsyncEvent, CommandError, DataDirection, Event, Request, Session, SessionError, SessionState,
    SubmitRejection, TaskId,
};
use crate::transport::ring::{Completion, EVENT_TOKEN_BASE};
use crate::transport::tcp::advance_iovecs;
use crate::transport::{resolve_target_address, RingConfig, TcpConnection};

/// The longest an idle shard sleeps before it looks at its timers again.
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// The longest sleep on the current connection while a moved one drains (its answers
/// arrive on its own ring, which that sleep does not watch).
const DRAIN_POLL: Duration = Duration::from_micros(200);
/// Room for one header: BHS, the largest AHS we accept, header digest.
const HEADER_SLOT: usize = BHS_LEN + 1024 + 4;
/// The smallest staging buffer (greedy receives of many small PDUs).
const STAGING_MIN: usize = 64 * 1024;
/// Receive coalescing (`ShardConfig::recv_coalesce`): a greedy receive that brings less
/// than this is "small"; after this many small ones in a row, with at least half the
/// queue depth in flight, the next receive waits for a raised low-water mark.
const COALESCE_BELOW_BYTES: usize = 16 * 1024;
const COALESCE_AFTER_SMALL_RECEIVES: u32 = 2;
/// Coalescing waits that met their mark before the receives test the target again without
/// a mark (a target that answers in bursts would otherwise be held in step with the
/// waits). Each wait that is not a test saves the test's wake-ups: tgt at 32 in flight
/// answered about one command per receive in them.
const COALESCE_STREAK_MAX: u32 = 8;
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
/// `IORING_RECVSEND_POLL_FIRST` (Linux 5.19, `include/uapi/linux/io_uring.h`): the receive
/// arms its poll at once instead of first trying to take what the socket holds.
const RECV_POLL_FIRST: u16 = 1;

/// A receive that is to wait for the socket's low-water mark polls first: io_uring's first
/// try of a receive does not wait and takes whatever bytes are there (an answer that came
/// during the turn, the part of a payload already in), whatever the mark.
fn waiting_for_mark(recv: opcode::Recv, wait: bool) -> opcode::Recv {
    recv.ioprio(if wait { RECV_POLL_FIRST } else { 0 })
}
/// A send this long or shorter fits the socket at once on any connection that is not
/// stalled, so it completes inside the kernel entry that submits it.
const SEND_INLINE_MAX_BYTES: usize = 16 * 1024;
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

/// What a request became inside the session.
struct Held {
    /// The shard loop's tag.
    tag: u64,
    large_read: bool,
    /// The least its answer brings (see `Connection::answer_bytes`).
    answer_bytes: u32,
    /// LUN, CDB and direction, kept to send the command again on a new connection
    /// (`ShardConfig::reconnect` on; commands of a work are not sent again).
    resend: Option<Request>,
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

/// A running shard.
struct Connection {
    index: usize,
    config: ShardConfig,
    conn: TcpConnection,
    files: Files,
    /// The session and its framing (`conn`): every received byte goes to its receiver,
    /// every send is its send batch.
    driver: Conn,
    doorbell: Arc<Doorbell>,
    held: TagMap<TaskId, Held>,
    /// Reads in flight at least `zero_copy_min_bytes` long: while any is, headers are
    /// received alone so that their payload can be placed.
    large_reads: usize,

    // Receive side.
    /// The shard's receive buffer: headers and small PDUs land here, and every receive into
    /// it is handed to the driver's receiver whole, so it starts empty. Sized once from the
    /// largest data segment we declare (MaxRecvDataSegmentLength is declarative: our offer
    /// is the negotiated limit), never resized or moved, and registered with the ring as
    /// its fixed buffer 0 when the kernel takes it (`staging_fixed`).
    staging: Vec<u8>,
    /// Receives into the staging buffer are `READ_FIXED` on its registration.
    staging_fixed: bool,
    /// Receives that wait for a raised low-water mark poll first (`waiting_for_mark`);
    /// false once the kernel refused one (before Linux 5.19).
    poll_first: bool,
    recv: RecvOp,
    /// A receive into the staging buffer linked behind the placed one (`IOSQE_IO_LINK`):
    /// the payload's trailer or the next PDU's header, so that a placed Data-In and what
    /// follows it cost one kernel entry. Its length while in flight.
    linked_recv: Option<usize>,
    /// Bytes the linked receive brought, fed to the receiver once the placed payload
    /// ahead of them is (completions are reaped as a batch).
    linked_received: Option<usize>,
    /// Greedy receives in a row that brought less than `COALESCE_BELOW_BYTES` without
    /// waiting for a mark: the target answers one command at a time (receive coalescing).
    small_receives: u32,
    /// Coalescing waits in a row that met half their mark: after `COALESCE_STREAK_MAX`,
    /// receives go without a mark again until they show the target still trickles.
    coalesce_streak: u32,
    /// Coalescing waits in a row that brought less than half their mark (the answers bring
    /// fewer bytes than expected: errors, short reads): each doubles the small receives
    /// needed before the next wait.
    coalesce_misses: u32,
    /// The low-water mark the staging receive in flight was armed with.
    recv_low_water: usize,
    /// Receives armed with a raised low-water mark (`ShardStats::coalesced_receives`).
    coalesced_receives: u64,
    /// The socket's receive low-water mark (`SO_RCVLOWAT`, receive coalescing) and until
    /// when a receive may wait for it.
    low_water: usize,
    low_water_until: Option<Instant>,
    /// Bytes the answers to the commands held are expected to bring at least (a header
    /// each, plus the payload of small reads).
    answer_bytes: u64,

    // Send side: the gather list over the driver's send batch (headers and trailers it
    // encoded, payload lent by the session), untouched until the send completes.
    iovecs: Vec<libc::iovec>,
    msg: Box<libc::msghdr>,
    send_next: usize,
    send_in_flight: bool,
    /// A send queued since the last kernel entry that the socket takes at once (small,
    /// not zero-copy): its completion is posted during the entry that submits it, so a
    /// wait in that entry asks for one completion more (`Connection::wait`).
    send_completes_inline: bool,
    /// Zero-copy send notifications still to come: until then the kernel may read the
    /// sent buffers.
    send_notifs: usize,
    /// Whether the send in flight is a zero-copy one.
    send_zc: bool,

    doorbell_buf: Box<u64>,
    doorbell_armed: bool,
    /// This connection's eventfd, signalled by its ring (`None` if the kernel refused it):
    /// what a multipath shard sleeping on another sub-path's ring watches.
    wake: Option<RingWake>,
    /// Reads of other sub-paths' eventfds, while the multipath shard sleeps on this ring.
    watches: Watches,
    cancels_in_flight: usize,
    socket_shut: bool,

    cqes: Vec<Completion>,
    /// Commands that ended, held back while the kernel may still use a caller's buffer
    /// (`Connection::take_finished`).
    finished: Vec<Finished>,
    kernel_entries_at_login: u64,
    window_closed_since: Option<Instant>,
    window_closed_ns: u64,
    login: Option<Result<(), String>>,
    /// Logged in once: requests are taken (and failed at once if the session has ended).
    serving: bool,
    /// Set when the connection is gone: the reason later requests fail with.
    dead: Option<String>,
    logout_started: bool,
    /// Whether `finish` ran: the kernel touches none of this connection's memory.
    finished_io: bool,
    /// Commands the lost connection held, to send again on the next (see `reconnect`).
    resend: Vec<(u64, Request)>,
    /// A command succeeded on this connection.
    progressed: bool,
    /// After a recovery: answers still to be taken for the UNIT ATTENTION the reset of
    /// the I_T nexus raises, and sent again (one per LUN is what targets report; the queue
    /// depth bounds how many commands can meet it).
    unit_attentions_left: usize,
    /// The login was redirected (status class 1): where to.
    redirected: Option<(TargetAddress, RedirectKind)>,
    /// The target asked for a logout (Async Message event 1) within this many seconds.
    logout_requested: Option<u16>,
    /// The target dropped the connection or session (events 2 and 3): wait this long
    /// before logging in again (its Time2Wait).
    time2wait: Option<Duration>,
    /// Set while this connection drains after a move: the target's Parameter3 deadline.
    drain_deadline: Option<Instant>,
    /// Async Messages received, and those that said REPORTED LUNS DATA HAS CHANGED.
    async_events: u64,
    luns_changed: u64,
}

// SAFETY: the raw pointers a `Connection` keeps (the boxed `msghdr` and its gather list,
// the iovecs over the driver's send batch and the session's command buffers) name heap
// memory that the connection or its session owns; moving the connection to another thread
// moves none of it, and nothing else holds those pointers. Its ring is `SINGLE_ISSUER`:
// only the thread that made it may enter it, which `InlineShard` checks before every call.
unsafe impl Send for Connection {}

type ConnectError = (Option<Box<Connection>>, ShardError);

/// How one connection's login ended.
enum Connected {
    Up(Box<Connection>, Box<ShardInfo>),
    /// The target sent the login elsewhere (the connection is dropped).
    Redirected(TargetAddress, RedirectKind),
}

impl Connection {
    /// Connects and logs in at the start of `route`, following redirects (each hop within
    /// `budget`); on success the route learns where later logins start.
    fn connect_routed(
        setup: &Setup,
        route: &mut PortalRoute,
        isid: pdu::Isid,
        budget: Option<Duration>,
    ) -> Result<(Box<Connection>, ShardInfo), ConnectError> {
        let mut attempt = route.begin();
        loop {
            match Connection::connect(setup, attempt.portal(), isid, budget)? {
                Connected::Up(connection, info) => {
                    let start = route.logged_in(&attempt);
                    if attempt.hops() > 0 {
                        tracing::info!(
                            shard = setup.index,
                            portal = %attempt.portal(),
                            route = %attempt.chain(),
                            reconnects_start_at = %start,
                            "logged in after redirection"
                        );
                    }
                    return Ok((connection, *info));
                }
                Connected::Redirected(address, kind) => {
                    let redirect = |source| {
                        (
                            None,
                            ShardError::Redirect {
                                shard: setup.index,
                                source,
                            },
                        )
                    };
                    let to = resolve_target_address(&address).map_err(redirect)?;
                    tracing::info!(shard = setup.index, from = %attempt.portal(), to = %address, ?kind, "login redirected");
                    attempt.follow(to, kind).map_err(redirect)?;
                }
            }
        }
    }
}

impl Connection {
    /// Connects and logs in. `budget` bounds connect and login together when the shard
    /// recovers a lost connection (the policy's replacement timeout).
    fn connect(
        setup: &Setup,
        portal: SocketAddr,
        isid: pdu::Isid,
        budget: Option<Duration>,
    ) -> Result<Connected, ConnectError> {
        let index = setup.index;
        let mut cc = setup.client_config.clone();
        cc.portal = portal;
        if let Some(budget) = budget {
            cc.connect_timeout = cc.connect_timeout.min(budget);
            cc.login_timeout = cc.login_timeout.min(budget);
        }
        let config = setup.config.clone();
        let core = setup.core;
        let doorbell = Arc::clone(&setup.doorbell);
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
        if let Some(timeout) = config.tcp_user_timeout {
            if let Err(e) = conn.set_user_timeout(timeout) {
                tracing::warn!(shard = index, error = %e, "TCP_USER_TIMEOUT refused");
            }
        }
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
        // Only a multipath sub-path needs one: the signal costs the kernel a little on
        // every completion.
        let wake = match config.multipath.is_some().then(|| {
            RingWake::new()
                .and_then(|wake| conn.ring_mut().register_eventfd(wake.fd()).map(|()| wake))
        }) {
            None => None,
            Some(Ok(wake)) => Some(wake),
            Some(Err(e)) => {
                tracing::warn!(shard = index, error = %e, "io_uring refused an eventfd: multipath polls");
                None
            }
        };
        let session_config = cc.session_config(isid, config.queue_depth, config.queue_depth);
        // Sized once from the largest data segment we declare we accept (the negotiated
        // MaxRecvDataSegmentLength never exceeds our own offer), so one greedy receive can
        // take a whole PDU; it never moves while a receive uses it. Every receive into it
        // goes to the driver's receiver whole (which stages what it cannot place).
        let max_segment = (cc.offer.max_recv_data_segment_length as usize).max(8192);
        let staging_len = (HEADER_SLOT + max_segment + 8).max(STAGING_MIN);
        let ring_flags = conn.ring_flags_description().to_string();
        // SAFETY: msghdr is a plain C struct for which all-zero bytes are a valid value.
        let msg: libc::msghdr = unsafe { std::mem::zeroed() };
        let mut shard = Box::new(Connection {
            index,
            conn,
            files,
            driver: Conn::new(Session::new(session_config, Instant::now())),
            doorbell,
            held: TagMap::with_capacity_and_hasher(config.queue_depth, Default::default()),
            large_reads: 0,
            staging: vec![0; staging_len],
            staging_fixed: false,
            poll_first: true,
            recv: RecvOp::Idle,
            linked_recv: None,
            linked_received: None,
            small_receives: 0,
            coalesce_streak: 0,
            coalesce_misses: 0,
            recv_low_water: 1,
            coalesced_receives: 0,
            low_water: 1,
            low_water_until: None,
            answer_bytes: 0,
            iovecs: Vec::with_capacity(3 * SEND_BATCH_MAX_PDUS),
            msg: Box::new(msg),
            send_next: 0,
            send_in_flight: false,
            send_completes_inline: false,
            send_notifs: 0,
            send_zc: false,
            doorbell_buf: Box::new(0),
            doorbell_armed: false,
            wake,
            watches: Watches::default(),
            cancels_in_flight: 0,
            socket_shut: false,
            cqes: Vec::with_capacity(16),
            finished: Vec::with_capacity(config.queue_depth),
            kernel_entries_at_login: 0,
            window_closed_since: None,
            window_closed_ns: 0,
            login: None,
            serving: false,
            dead: None,
            logout_started: false,
            finished_io: false,
            resend: Vec::new(),
            progressed: false,
            unit_attentions_left: 0,
            redirected: None,
            logout_requested: None,
            time2wait: None,
            drain_deadline: None,
            async_events: 0,
            luns_changed: 0,
            config,
        });
        shard.register_staging();
        let login_failed = |reason: String| ShardError::Login {
            shard: index,
            reason,
        };
        // Bounded by the session's login timer, which fails the login. The outcome is
        // looked at right after the turn that took the answer, before sleeping again: a
        // sleep first would add up to `IDLE_WAIT` to every login (and to every hop of a
        // redirect, and to a move's make-before-break).
        loop {
            let now = Instant::now();
            shard.poll(now);
            match shard.login.take() {
                Some(Ok(())) => {
                    shard.serving = true;
                    shard.kernel_entries_at_login = shard.conn.kernel_entries();
                    super::steer::observe(&mut path_report, &shard.conn);
                    let info = ShardInfo {
                        core: core.map(|c| c.id),
                        isid,
                        tsih: shard.driver.session().tsih(),
                        ring_flags,
                        steering: path_report,
                        registered_buffer_bytes: if shard.staging_fixed {
                            shard.staging.len()
                        } else {
                            0
                        },
                        registered_files: matches!(shard.files, Files::Fixed),
                    };
                    return Ok(Connected::Up(shard, Box::new(info)));
                }
                Some(Err(reason)) => {
                    if let Some((address, kind)) = shard.redirected.take() {
                        // Nothing of this connection is used any more: the next hop is
                        // another connection.
                        return Ok(Connected::Redirected(address, kind));
                    }
                    return Err((Some(shard), login_failed(reason)));
                }
                None => {}
            }
            if let Some(reason) = shard.dead.clone() {
                return Err((Some(shard), login_failed(reason)));
            }
            let now = Instant::now();
            shard.wait(now, shard.timeout(now));
        }
    }

    /// Moves the connection on without blocking: takes what the kernel finished, feeds the
    /// session, runs its timers and collects its events.
    fn poll(&mut self, now: Instant) {
        self.reap(now);
        if self.dead.is_some() {
            self.shut_socket();
        }
        if self.low_water_until.is_some_and(|until| now >= until) {
            // Waited long enough for answers to gather: take what is there.
            self.set_low_water(1, None);
        }
        if self
            .driver
            .session()
            .poll_timeout()
            .is_some_and(|d| d <= now)
        {
            self.driver.session_mut().handle_timeout(now);
        }
        self.collect_events();
        self.track_window(now);
    }

    /// The commands that ended, unless a receive into or a send from a caller's buffer is
    /// in flight (then they wait for it: module docs).
    fn take_finished(&mut self, done: &mut Vec<Finished>) {
        if self.send_busy() || matches!(self.recv, RecvOp::Placed { .. }) {
            return;
        }
        done.append(&mut self.finished);
    }

    /// How long the connection may sleep: until the session's next timer or the end of a
    /// receive coalescing wait.
    fn timeout(&self, now: Instant) -> Duration {
        let mut timeout = IDLE_WAIT;
        for at in [self.driver.session().poll_timeout(), self.low_water_until]
            .into_iter()
            .flatten()
        {
            timeout = timeout.min(
                at.saturating_duration_since(now)
                    .max(Duration::from_micros(1)),
            );
        }
        timeout
    }

    /// Queues the send, the receive and the doorbell read, and enters the kernel once:
    /// without waiting when `timeout` is zero, else asleep until a completion, the
    /// doorbell or the timeout (after polling for answers when one or two commands are in
    /// flight: `completion_spin`). `now` is the caller's reading of the clock.
    fn wait(&mut self, now: Instant, timeout: Duration) {
        self.start_send();
        // Nothing held and nothing being sent on a call that does not sleep: no answer is
        // due, so the receive is not armed yet. The next command's wait arms it knowing
        // what is in flight (a greedy receive then takes a small read's header and data
        // at once) and enters once for both; a sleep arms it too.
        let idle = self.held.is_empty() && !self.send_busy();
        if !(timeout.is_zero() && idle) {
            self.arm_recv(now);
            self.arm_doorbell();
        }
        if timeout.is_zero() {
            self.enter(0, None);
            return;
        }
        // The receive armed just now may wait for a raised low-water mark: the sleep ends
        // when that wait does (the caller's timeout was reckoned before it was armed), so
        // the mark is lowered in time even when no completion comes before.
        let timeout = match self.low_water_until {
            Some(at) => timeout.min(
                at.saturating_duration_since(now)
                    .max(Duration::from_micros(1)),
            ),
            None => timeout,
        };
        if self.completion_spin_pays() {
            // Submit first: the answers being polled for need the send and the receive.
            self.enter(0, None);
            if self.spin_for_completion() {
                self.enter(0, None);
                return;
            }
        }
        // The send this entry submits completes inside it (`send_completes_inline`):
        // waiting for one completion would return at once with it and enter again for the
        // answer. A send that does not complete at once delays the wake-up until it does or
        // until the timeout, never past it.
        let want = 1 + usize::from(self.send_completes_inline);
        self.enter(want, Some(timeout));
    }

    /// Whether to poll for answers before sleeping: one or two commands in flight (at
    /// higher depth answers come in groups and a sleep costs less per I/O), none of the
    /// receive coalescing's waiting, and a spin configured.
    fn completion_spin_pays(&self) -> bool {
        self.serving
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

    /// One `io_uring_enter`. A failure with operations in flight aborts the process:
    /// returning would let the kernel write into buffers that are given back.
    fn enter(&mut self, want: usize, timeout: Option<Duration>) {
        let ring = self.conn.ring_mut();
        if want == 0 && !ring.has_work_for_kernel() {
            return;
        }
        self.send_completes_inline = false;
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

    /// Takes every completion the kernel has posted and feeds the driver's receiver.
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
                token if self.watches.completed(token) => {}
                other => tracing::warn!(shard = self.index, token = other, "unknown completion"),
            }
        }
        self.cqes = cqes;
        // What the linked receive brought follows the placed payload on the wire.
        if let Some(n) = self.linked_received.take() {
            if self.dead.is_none() && self.recv == RecvOp::Idle {
                self.receive_staged(now, n);
            }
        }
    }

    fn on_recv(&mut self, result: i32, now: Instant) {
        let op = std::mem::replace(&mut self.recv, RecvOp::Idle);
        if self.dead.is_some() {
            return;
        }
        if result == -libc::EINVAL && self.poll_first {
            // A kernel older than 5.19 refuses a receive that polls first: nothing was
            // received, so receives stop polling first, coalescing goes off, and the next
            // turn arms the receive again.
            tracing::warn!(
                shard = self.index,
                "poll-first receive refused; receive coalescing off"
            );
            self.poll_first = false;
            self.config.recv_coalesce = Duration::ZERO;
            self.set_low_water(1, None);
            return;
        }
        let n = match self.received_bytes(result) {
            Some(n) => n,
            None => return,
        };
        match op {
            RecvOp::Staging { len } if n <= len => {
                // A wait that met half its mark says nothing of how the target answers
                // (the wait made the receive large), so the streak goes on on the small
                // receives seen before it.
                let mut streak_goes_on = false;
                if self.recv_low_water > 1 {
                    // Less than half the mark came in the time allowed: the answers bring
                    // fewer bytes than expected (errors, short reads), so back off.
                    let met = n.saturating_mul(2) >= self.recv_low_water;
                    self.coalesce_misses = if met {
                        0
                    } else {
                        (self.coalesce_misses + 1).min(COALESCE_MAX_MISSES)
                    };
                    self.coalesce_streak = if met { self.coalesce_streak + 1 } else { 0 };
                    streak_goes_on = met && self.coalesce_streak < COALESCE_STREAK_MAX;
                    if !streak_goes_on {
                        self.coalesce_streak = 0;
                    }
                }
                if !streak_goes_on {
                    self.small_receives = if n < COALESCE_BELOW_BYTES {
                        self.small_receives.saturating_add(1)
                    } else {
                        0
                    };
                }
                self.receive_staged(now, n);
            }
            RecvOp::Placed { len } if n <= len => {
                if let Err(e) = self.driver.handle_placed_received(now, n) {
                    self.lose_connection(e.to_string());
                }
            }
            _ => {
                self.conn.mark_broken("recv");
                self.lose_connection("the kernel reported more bytes than asked for".into());
            }
        }
    }

    /// The byte count of a receive's result; `None` (the connection lost) for an error or
    /// the end of the stream.
    fn received_bytes(&mut self, result: i32) -> Option<usize> {
        if result < 0 {
            let e = std::io::Error::from_raw_os_error(-result);
            self.conn.mark_broken("recv");
            self.lose_connection(format!("receive failed: {e}"));
            return None;
        }
        if result == 0 {
            self.lose_connection("the target closed the connection".into());
            return None;
        }
        Some(result.unsigned_abs() as usize)
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
        let Some(n) = self.received_bytes(result) else {
            return;
        };
        if n > len {
            self.conn.mark_broken("recv");
            self.lose_connection("the kernel reported more bytes than asked for".into());
            return;
        }
        self.linked_received = Some(n);
    }

    /// Hands the first `n` bytes of the staging buffer to the receiver, which delivers
    /// every PDU they complete (and copies a Data-In's payload into its placement).
    fn receive_staged(&mut self, now: Instant, n: usize) {
        if let Err(e) = self.driver.handle_received(now, &self.staging[..n]) {
            self.lose_connection(e.to_string());
        }
    }

    /// Queues the next receive when none is in flight: the rest of a placed payload, or
    /// into the staging buffer (greedy when no large read is in flight, else exactly the
    /// bytes the receiver needs, so that a payload can still be placed).
    fn arm_recv(&mut self, now: Instant) {
        if self.recv != RecvOp::Idle || self.linked_recv.is_some() || self.dead.is_some() {
            return;
        }
        let files = self.files;
        let large_reads = self.large_reads;
        if let Some(spare) = self.driver.placement_spare() {
            let (at, left) = (spare.as_mut_ptr(), spare.len());
            // A large payload wakes the shard once, when all of it is in the socket, not
            // at every segment: the mark is the bytes still to come. Such a receive takes
            // what is there at once without MSG_WAITALL (so a part taken never leaves the
            // mark above what can still arrive) and the shard asks again for the rest.
            // Nothing is linked behind it: a header receive would wait for the mark too.
            let wake_once = left >= PLACED_LOW_WATER_MIN;
            self.set_low_water(if wake_once { left } else { 1 }, None);
            let want = u32::try_from(left).unwrap_or(u32::MAX);
            // Behind it, linked: the trailer if there is one (alone: nothing may wait for
            // the next PDU before this one is delivered), else the next PDU's header.
            // Only while large reads are in flight (headers are taken alone anyway then);
            // otherwise the next receive is a greedy one.
            let link_len = if !wake_once && large_reads > 0 {
                match self.driver.receive_trailer_after_payload() {
                    0 => BHS_LEN,
                    trailer => trailer,
                }
            } else {
                0
            };
            let flags = if wake_once { 0 } else { libc::MSG_WAITALL };
            let wait = wake_once && self.poll_first;
            let placed = on_socket!(files, |fd| waiting_for_mark(
                opcode::Recv::new(fd, at, want).flags(flags),
                wait
            )
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
        let free = self.staging.len();
        // Greedy (many PDUs per receive, small payloads copied) only while commands are in
        // flight and none of them is a large read. With nothing in flight the next PDU
        // may well answer a large read not yet submitted, so only its header is taken.
        let header_only =
            self.large_reads > 0 || self.held.is_empty() || self.driver.receive_in_trailer();
        let len = if header_only {
            self.driver.receive_wanted().clamp(1, free)
        } else {
            free
        };
        let coalesce = !header_only
            && !self.config.recv_coalesce.is_zero()
            && !self.doorbell.stopping.load(Ordering::Relaxed)
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
        if self.recv_low_water > 1 {
            self.coalesced_receives += 1;
        }
        let want = u32::try_from(len).unwrap_or(u32::MAX);
        let flags = if header_only { libc::MSG_WAITALL } else { 0 };
        let entry = self.staging_recv(0, want as usize, flags, TOKEN_RECV);
        // SAFETY: the staging buffer, which is neither read nor moved (it is never
        // resized) until this receive completes.
        if self.push(entry) {
            self.recv = RecvOp::Staging { len: want as usize };
        }
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

    /// The send is over (or never started): the batch and its gather list are emptied.
    fn end_send(&mut self) {
        self.iovecs.clear();
        self.driver.handle_sent();
        self.send_next = 0;
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
        // `READ_FIXED` cannot poll first, so a receive that waits for a mark is a `Recv`.
        let wait = self.low_water > 1 && self.poll_first;
        let entry = if self.staging_fixed && !wait {
            on_socket!(self.files, |fd| opcode::ReadFixed::new(fd, ptr, want, 0)
                .offset(u64::MAX)
                .build())
        } else {
            on_socket!(self.files, |fd| waiting_for_mark(
                opcode::Recv::new(fd, ptr, want).flags(flags),
                wait
            )
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

    /// Queues one send of every PDU the session has waiting (the driver's send batch, up
    /// to `SEND_BATCH_MAX_PDUS`), payload straight from the callers' buffers, when no send
    /// is in flight.
    fn start_send(&mut self) {
        if self.send_busy() || self.dead.is_some() {
            return;
        }
        self.end_send();
        match self.driver.fill_send() {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                self.end_send();
                self.lose_connection(format!("encoding a PDU: {e}"));
                return;
            }
        }
        let mut slices = Vec::with_capacity(3 * SEND_BATCH_MAX_PDUS);
        self.driver.send_slices(&mut slices);
        // Zero-copy only pays when the NIC sends from our pages; below the threshold (and
        // on loopback, which copies anyway) a plain send is cheaper (`ShardConfig`).
        self.send_zc = self
            .config
            .send_zc_min_bytes
            .is_some_and(|min| slices.iter().any(|s| s.len() >= min as usize));
        self.iovecs.extend(slices.iter().map(|buf| libc::iovec {
            // The kernel only reads through this pointer (a send). The batch's headers
            // and trailers and the lent payload stay put until `end_send`.
            iov_base: buf.as_ptr().cast_mut().cast(),
            iov_len: buf.len(),
        }));
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
        let bytes: usize = pending.iter().map(|v| v.iov_len).sum();
        if self.push(entry) {
            self.send_in_flight = true;
            self.send_completes_inline = !self.send_zc && bytes <= SEND_INLINE_MAX_BYTES;
        }
    }

    /// Keeps a read of each of `sources` (other sub-paths' eventfds) on this ring, and
    /// none of any other: a multipath shard sleeping here wakes for their completions.
    /// Returns whether all are watched, and the cancellations queued (`TOKEN_CANCEL`).
    fn watch_rings(&mut self, sources: &[WakeSource]) -> (bool, usize) {
        let mut watches = std::mem::take(&mut self.watches);
        // SAFETY (of each push): a watch read's buffer is boxed in `watches` until its
        // completion is reaped (`Watches::completed`); `finish` cancels and reaps them all
        // before the connection's memory goes.
        let result = watches.update(sources, TOKEN_CANCEL, &mut |entry| self.push(entry));
        self.watches = watches;
        result
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
        if self.finished_io {
            return;
        }
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
        let (_, cancels) = self.watch_rings(&[]);
        self.cancels_in_flight += cancels;
        for _ in 0..QUIESCE_ROUNDS {
            let busy = self.recv != RecvOp::Idle
                || self.linked_recv.is_some()
                || self.send_busy()
                || self.doorbell_armed
                || self.watches.armed()
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
            || self.watches.armed()
        {
            tracing::error!(
                shard = self.index,
                "the kernel did not finish this shard's operations; aborting rather than \
                 freeing memory it may still use"
            );
            std::process::abort();
        }
        self.collect_events();
        let _ = self.conn.shutdown();
        self.finished_io = true;
    }

    /// Whether a lost connection is recovered rather than final: the policy is on, this
    /// connection had logged in, and the pool is not stopping.
    fn recovers(&self) -> bool {
        self.config.reconnect.enabled()
            && self.serving
            && !self.doorbell.stopping.load(Ordering::SeqCst)
    }

    /// Hands one command to the session, or fails it at once.
    fn start(&mut self, now: Instant, tag: u64, mut request: Request, resend: bool) {
        let direction = request.direction;
        let large_read = matches!(direction, DataDirection::Read { len } if len >= self.config.zero_copy_min_bytes);
        let answer_bytes = BHS_LEN as u32
            + match direction {
                DataDirection::Read { len } => len,
                _ => 0,
            };
        // The command without its buffer (which comes back with the answer), kept to send
        // it again.
        let resend = (self.config.reconnect.enabled() && resend).then(|| {
            let buffer = std::mem::take(&mut request.buffer);
            let template = request.clone();
            request.buffer = buffer;
            template
        });
        match self.driver.session_mut().submit(now, request) {
            Ok(task) => {
                self.held.insert(
                    task,
                    Held {
                        tag,
                        large_read,
                        answer_bytes,
                        resend,
                        abort_requested: false,
                    },
                );
                self.answer_bytes += u64::from(answer_bytes);
                if large_read {
                    self.large_reads += 1;
                }
            }
            Err(refused) => {
                let ended =
                    self.dead.is_some() || matches!(refused.reason, SubmitRejection::NotLoggedIn);
                if let Some(mut request) = resend.filter(|_| ended && self.recovers()) {
                    // The connection is being lost: this one waits for the next.
                    request.buffer = refused.request.buffer;
                    self.resend.push((tag, request));
                    return;
                }
                let error = match (&self.dead, refused.reason) {
                    (Some(reason), _) => CommandError::ConnectionLost(reason.clone()),
                    (None, SubmitRejection::NotLoggedIn) => {
                        CommandError::ConnectionLost("the shard's session has ended".into())
                    }
                    (None, reason) => CommandError::Protocol(format!("not submitted: {reason}")),
                };
                self.finished
                    .push((tag, Err(failure(error, refused.request.buffer))));
            }
        }
    }

    /// Sends ABORT TASK for command `tag` if this connection holds it; it is then never
    /// sent again on a new connection.
    fn abort(&mut self, now: Instant, tag: u64) {
        // Bounded by the commands held (the queue depth).
        let task = self
            .held
            .iter_mut()
            .find(|(_, held)| held.tag == tag)
            .map(|(task, held)| {
                held.abort_requested = true;
                *task
            });
        if let Some(task) = task {
            if let Err(refused) = self.driver.session_mut().abort_task(now, task) {
                tracing::debug!(shard = self.index, %refused, "abort not started");
            }
        }
    }

    fn collect_events(&mut self) {
        while let Some(event) = self.driver.session_mut().poll_event() {
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
                        (Err(failure), Some(mut request))
                            if matches!(failure.error, CommandError::ConnectionLost(_))
                                && self.recovers() =>
                        {
                            request.buffer = failure.buffer;
                            self.resend.push((held.tag, request));
                            continue;
                        }
                        // The reinstated session's first answers report the reset our own
                        // recovery caused, instead of carrying out the command (SAM-5
                        // 5.14): sent again, as the SCSI midlayer does (bounded by
                        // `unit_attentions_left`).
                        (Ok(outcome), Some(mut request))
                            if self.unit_attentions_left > 0
                                && is_reset_unit_attention(&outcome) =>
                        {
                            self.unit_attentions_left -= 1;
                            request.buffer = outcome.buffer;
                            self.resend.push((held.tag, request));
                            continue;
                        }
                        (result, _) => result,
                    };
                    if result.is_ok() {
                        self.progressed = true;
                    }
                    self.finished
                        .push((held.tag, result.map_err(PathFailure::from)));
                }
                Event::LoginComplete => self.login = Some(Ok(())),
                Event::LoginFailed { reason, .. } => self.login = Some(Err(reason)),
                Event::Redirect { address, kind } => {
                    self.login = Some(Err(format!("redirected to {address}")));
                    self.redirected = Some((address, kind));
                }
                Event::ConnectionFailed(e) => {
                    tracing::warn!(shard = self.index, error = %e, "shard session failed");
                    if let SessionError::TargetDroppedConnection { time2wait, .. } = e {
                        self.time2wait = Some(Duration::from_secs(u64::from(time2wait)));
                    }
                    if self.dead.is_none() {
                        self.dead = Some(e.to_string());
                    }
                }
                Event::AsyncMessage(m) => {
                    tracing::info!(shard = self.index, event = ?m, "async message");
                    self.async_events += 1;
                    match m {
                        AsyncEvent::LogoutRequested { within_secs, .. } => {
                            self.logout_requested = Some(within_secs);
                        }
                        AsyncEvent::Scsi { sense, .. }
                            if Sense::decode(&sense).is_ok_and(|s| {
                                (s.asc, s.ascq) == asc::REPORTED_LUNS_DATA_HAS_CHANGED
                            }) =>
                        {
                            self.luns_changed += 1;
                        }
                        _ => {}
                    }
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
        self.driver
            .session_mut()
            .handle_connection_lost(Instant::now(), reason.clone());
        self.dead = Some(reason);
        self.collect_events();
    }

    fn track_window(&mut self, now: Instant) {
        let closed = self.driver.session().commands_waiting() > 0;
        match (self.window_closed_since, closed) {
            (None, true) => self.window_closed_since = Some(now),
            (Some(since), false) => {
                self.window_closed_ns += (now - since).as_nanos() as u64;
                self.window_closed_since = None;
            }
            _ => {}
        }
    }

    /// Kernel entries since login.
    fn kernel_entries(&self) -> u64 {
        self.conn
            .kernel_entries()
            .saturating_sub(self.kernel_entries_at_login)
    }

    /// Payload bytes copied in user space (placed payload that a greedy receive took into
    /// the staging buffer, and payload the session could not place).
    fn bytes_copied(&self) -> u64 {
        self.driver.session().stats().bytes_copied
            + self.driver.receive_stats().bytes_copied_to_placement
    }
}

impl Drop for Connection {
    /// The kernel must be done with every buffer before any is freed.
    fn drop(&mut self) {
        self.finish();
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

/// The software path of a shard: one [`TcpPath`], or a [`super::multipath::MultiPath`]
/// over several when `ShardConfig::multipath` says so.
pub(super) fn connect_software(setup: Setup) -> Result<(Box<dyn Path>, ShardInfo), ShardError> {
    if setup.config.multipath.is_some() {
        let (path, info) = super::multipath::MultiPath::connect(setup)?;
        return Ok((Box::new(path), info));
    }
    let (path, info) = TcpPath::connect(setup)?;
    Ok((Box::new(path), info))
}

/// What a software path needs to connect (again).
pub(super) struct Setup {
    pub(super) index: usize,
    pub(super) client_config: ClientConfig,
    pub(super) config: ShardConfig,
    pub(super) core: Option<core_affinity::CoreId>,
    pub(super) doorbell: Arc<Doorbell>,
}

/// Where a software path stands.
enum State {
    /// A connection (logged in, or lost and not recovered: requests then fail at once).
    Up(Box<Connection>),
    /// Lost and being recovered: the next attempt is due at `at`, with `budget` for
    /// connect and login.
    Recovering {
        recovery: Recovery,
        at: Instant,
        budget: Duration,
        reason: String,
    },
}

/// Software TCP through the shard's own io_uring: one [`Connection`] at a time, replaced
/// by a new login when it is lost and `ShardConfig::reconnect` says so (`reconnect`).
pub(super) struct TcpPath {
    setup: Setup,
    /// Where logins start: the given portal, or where a permanent redirect sent us.
    route: PortalRoute,
    /// The ISID of the session: kept across recoveries (the target reinstates the
    /// session), new for a move (the old session lives on while it drains).
    isid: pdu::Isid,
    /// The connection a move (Async Message event 1) left: it completes what it holds,
    /// then logs out, while new commands go to the connection in `state`.
    draining: Option<Box<Connection>>,
    state: State,
    /// Commands to send again on the next connection and requests taken while none was
    /// up, in order, with the loop's tags.
    resend: Vec<(u64, Request)>,
    /// Commands that ended without a connection (aborted while waiting, or given up).
    finished: Vec<Finished>,
    /// Recoveries in a row after which no command succeeded.
    recoveries_without_progress: u32,
    /// Counters of the connections before this one, and the recoveries.
    counted: ShardStats,
}

impl TcpPath {
    /// Connects and logs in the first time.
    pub(super) fn connect(setup: Setup) -> Result<(TcpPath, ShardInfo), ShardError> {
        let mut route = PortalRoute::new(setup.client_config.portal);
        let isid = shard_isid(setup.index);
        let (connection, info) =
            Connection::connect_routed(&setup, &mut route, isid, None).map_err(|(_, e)| e)?;
        let path = TcpPath {
            setup,
            route,
            isid,
            draining: None,
            state: State::Up(connection),
            resend: Vec::new(),
            finished: Vec::new(),
            recoveries_without_progress: 0,
            counted: ShardStats::default(),
        };
        Ok((path, info))
    }

    /// The connection is lost and is to be recovered: take its counters and the commands
    /// to send again, and schedule the first attempt.
    fn start_recovery(&mut self, mut lost: Box<Connection>, now: Instant) -> bool {
        lost.finish();
        let reason = lost.dead.clone().unwrap_or_default();
        tracing::warn!(shard = self.setup.index, %reason, "connection lost; recovering the session");
        self.retire(&lost);
        let time2wait = lost.time2wait;
        if lost.progressed {
            self.recoveries_without_progress = 0;
        }
        // The commands of the lost connection go before the requests taken meanwhile.
        let mut resend = std::mem::take(&mut lost.resend);
        resend.append(&mut self.resend);
        self.resend = resend;
        lost.take_finished(&mut self.finished);
        let recovery = Recovery::new(
            self.setup.config.reconnect,
            now,
            self.recoveries_without_progress,
        );
        self.state = State::Recovering {
            recovery,
            at: now,
            budget: Duration::ZERO,
            reason,
        };
        let going_on = self.next_attempt(now);
        // The target said when it takes this session back (event 2 or 3's Time2Wait).
        if let (Some(wait), State::Recovering { at, budget, .. }) = (time2wait, &mut self.state) {
            let earliest = now + wait;
            if *at < earliest {
                *budget = budget.saturating_sub(earliest - *at);
                *at = earliest;
            }
        }
        going_on
    }

    /// Adds the counters of a connection that ends to the path's.
    fn retire(&mut self, gone: &Connection) {
        self.counted.kernel_entries += gone.kernel_entries();
        self.counted.bytes_copied += gone.bytes_copied();
        self.counted.window_closed_ns += gone.window_closed_ns;
        self.counted.coalesced_receives += gone.coalesced_receives;
        self.counted.async_events += gone.async_events;
        self.counted.luns_changed += gone.luns_changed;
    }

    /// Async Message event 1 on the current connection: make before break. A new session
    /// (new ISID, through the route's start, so an array places it anew) logs in first;
    /// new commands go to it, the old connection completes what it holds and then logs
    /// out, before the target's `within_secs`. If the new login fails the old connection
    /// carries on; the target then drops it and the usual recovery takes over.
    fn start_move(&mut self, now: Instant, within_secs: u16) {
        if self.draining.is_some() {
            // One move at a time: this connection is asked again once the last one is out.
            if let State::Up(connection) = &mut self.state {
                connection.logout_requested = Some(within_secs);
            }
            return;
        }
        let within = Duration::from_secs(u64::from(within_secs.max(1)));
        let isid = shard_isid(self.setup.index);
        match Connection::connect_routed(&self.setup, &mut self.route, isid, Some(within)) {
            Ok((connection, info)) => {
                tracing::info!(
                    shard = self.setup.index,
                    tsih = info.tsih,
                    login_ms = now.elapsed().as_millis() as u64,
                    "moved at the target's request; the old connection drains"
                );
                self.isid = isid;
                self.counted.moves += 1;
                if let State::Up(mut old) =
                    std::mem::replace(&mut self.state, State::Up(connection))
                {
                    old.drain_deadline = Some(now + within);
                    self.draining = Some(old);
                }
            }
            Err((_, e)) => {
                tracing::warn!(shard = self.setup.index, error = %e, "the new connection of a move failed; staying until the target drops this one");
            }
        }
    }

    /// Moves the draining connection on: its answers go out with the others; once it holds
    /// nothing it logs out; at the deadline it is cut, and what it still held is sent again
    /// on the current connection (when the path recovers commands).
    fn drive_draining(&mut self, now: Instant, done: &mut Vec<Finished>) {
        let Some(old) = self.draining.as_mut() else {
            return;
        };
        old.poll(now);
        old.take_finished(done);
        let over = old.dead.is_some()
            || matches!(
                old.driver.session().state(),
                SessionState::Closed | SessionState::Failed
            );
        if !over {
            if old.held.is_empty() && old.resend.is_empty() && !old.logout_started {
                old.logout_started = true;
                old.driver.session_mut().logout(now);
            } else if old.drain_deadline.is_some_and(|d| now >= d) {
                old.lose_connection("did not drain within the target's logout deadline".into());
                old.take_finished(done);
            } else {
                return;
            }
            let closed = matches!(
                old.driver.session().state(),
                SessionState::Closed | SessionState::Failed
            );
            if !closed && old.dead.is_none() {
                return;
            }
        }
        let Some(mut old) = self.draining.take() else {
            return;
        };
        old.finish();
        old.take_finished(done);
        self.retire(&old);
        // Commands the cut connection held go to the current one, ahead of later ones.
        let mut kept = std::mem::take(&mut old.resend);
        kept.append(&mut self.resend);
        self.resend = kept;
        tracing::info!(shard = self.setup.index, "the moved connection is out");
    }

    /// Why the connection was lost, while recovering.
    fn reason(&self) -> String {
        match &self.state {
            State::Recovering { reason, .. } => reason.clone(),
            State::Up(c) => c.dead.clone().unwrap_or_default(),
        }
    }

    /// Schedules the next attempt of the recovery in progress; false when the policy gives
    /// up (every command kept fails).
    fn next_attempt(&mut self, now: Instant) -> bool {
        let State::Recovering {
            recovery,
            at,
            budget,
            reason,
        } = &mut self.state
        else {
            return true;
        };
        match recovery.next(now) {
            Step::Attempt { wait, budget: b } => {
                *at = now + wait;
                *budget = b.max(Duration::from_millis(100));
                true
            }
            Step::GiveUp => {
                let error = format!("{reason} (reconnect gave up)");
                for (tag, request) in self.resend.drain(..) {
                    let failed =
                        failure(CommandError::ConnectionLost(error.clone()), request.buffer);
                    self.finished.push((tag, Err(failed)));
                }
                false
            }
        }
    }

    /// One attempt of the recovery: connect and log in again (blocking, within the
    /// attempt's budget), then send the commands kept, first and in order.
    fn attempt(&mut self, now: Instant) -> bool {
        let State::Recovering {
            recovery, budget, ..
        } = &self.state
        else {
            return true;
        };
        let (lost_at, budget) = (recovery.lost_at(), *budget);
        match Connection::connect_routed(&self.setup, &mut self.route, self.isid, Some(budget)) {
            Ok((connection, info)) => {
                let gap = lost_at.elapsed();
                tracing::info!(
                    shard = self.setup.index,
                    tsih = info.tsih,
                    gap_ms = gap.as_millis() as u64,
                    resent = self.resend.len(),
                    "session recovered"
                );
                let gap_ns = gap.as_nanos().min(u128::from(u64::MAX)) as u64;
                self.recoveries_without_progress += 1;
                self.counted.reconnects += 1;
                self.counted.reconnect_gap_ns_max = self.counted.reconnect_gap_ns_max.max(gap_ns);
                self.counted.reconnect_gap_ns_total += gap_ns;
                self.counted.commands_resent += self.resend.len() as u64;
                let mut connection = connection;
                connection.unit_attentions_left = 2 * self.setup.config.queue_depth;
                self.state = State::Up(connection);
                self.send_kept(now);
                true
            }
            Err((failed, e)) => {
                drop(failed);
                tracing::warn!(shard = self.setup.index, error = %e, "reconnect attempt failed");
                self.next_attempt(Instant::now())
            }
        }
    }

    /// Sends the commands kept for a new connection while it has room (the queue depth
    /// bounds them, as they were held or parked within it).
    fn send_kept(&mut self, now: Instant) {
        let State::Up(connection) = &mut self.state else {
            return;
        };
        let depth = self.setup.config.queue_depth;
        let mut kept = self.resend.drain(..);
        for (tag, request) in kept.by_ref() {
            if connection.held.len() >= depth || connection.dead.is_some() {
                connection.resend.push((tag, request));
                break;
            }
            connection.start(now, tag, request, true);
        }
        connection.resend.extend(kept);
        // What did not fit waits in the path, ahead of new requests.
        self.resend = std::mem::take(&mut connection.resend);
    }
}

impl Path for TcpPath {
    fn held(&self) -> usize {
        let connection = match &self.state {
            State::Up(c) => c.held.len() + c.resend.len(),
            State::Recovering { .. } => 0,
        };
        let draining = self
            .draining
            .as_ref()
            .map_or(0, |c| c.held.len() + c.resend.len());
        connection + draining + self.resend.len()
    }

    fn submit(
        &mut self,
        now: Instant,
        tag: u64,
        request: Request,
        resend: bool,
    ) -> Result<(), Refusal> {
        let recovers = self.setup.config.reconnect.enabled();
        match &mut self.state {
            State::Up(connection) if self.resend.is_empty() || connection.dead.is_some() => {
                connection.start(now, tag, request, resend);
                Ok(())
            }
            // Kept ones go first: this one waits behind them.
            State::Up(_) => {
                self.resend.push((tag, request));
                Ok(())
            }
            State::Recovering { .. } if !resend || !recovers => {
                let error =
                    CommandError::ConnectionLost("the connection is being recovered".into());
                Err(Refusal::Failed(request, error))
            }
            State::Recovering { .. } => {
                self.resend.push((tag, request));
                Ok(())
            }
        }
    }

    fn abort(&mut self, now: Instant, tag: u64) {
        // Not sent yet: it never goes.
        if let Some(at) = self.resend.iter().position(|(t, _)| *t == tag) {
            let (tag, request) = self.resend.remove(at);
            self.finished
                .push((tag, Err(failure(CommandError::Aborted, request.buffer))));
            return;
        }
        if let State::Up(connection) = &mut self.state {
            connection.abort(now, tag);
        }
        if let Some(old) = &mut self.draining {
            old.abort(now, tag);
        }
    }

    fn poll(&mut self, now: Instant, done: &mut Vec<Finished>) -> PathState {
        done.append(&mut self.finished);
        self.drive_draining(now, done);
        if let State::Recovering { at, reason, .. } = &self.state {
            if self.setup.doorbell.stopping.load(Ordering::SeqCst) {
                let reason = format!("{reason}; the shard stopped");
                self.state_gone(&reason, done);
                return PathState::Gone(reason);
            }
            if now < *at {
                return PathState::Serving;
            }
            if !self.attempt(now) {
                done.append(&mut self.finished);
                return PathState::Gone(self.reason());
            }
        }
        let State::Up(connection) = &mut self.state else {
            return PathState::Serving;
        };
        connection.poll(now);
        connection.take_finished(done);
        if connection.dead.is_none() {
            if let Some(within_secs) = connection.logout_requested.take() {
                self.start_move(now, within_secs);
                if !self.resend.is_empty() {
                    self.send_kept(now);
                }
                return PathState::Serving;
            }
        }
        if connection.dead.is_some() && connection.recovers() {
            let placeholder = State::Recovering {
                recovery: Recovery::new(self.setup.config.reconnect, now, 0),
                at: now,
                budget: Duration::ZERO,
                reason: String::new(),
            };
            if let State::Up(lost) = std::mem::replace(&mut self.state, placeholder) {
                let recovering = self.start_recovery(lost, now);
                done.append(&mut self.finished);
                if !recovering {
                    return PathState::Gone(self.reason());
                }
            }
        } else if connection.dead.is_none() {
            // Commands to send again on this connection (a reset UNIT ATTENTION), behind
            // any still kept from the recovery.
            self.resend.append(&mut connection.resend);
            if !self.resend.is_empty() {
                self.send_kept(now);
            }
        }
        PathState::Serving
    }

    fn wait(&mut self, timeout: Duration, _callers_ready: &dyn Fn() -> bool) {
        // While a moved connection drains, both rings are served: the old one's submissions
        // go in without sleeping, and the sleep on the new one is short.
        let timeout = match &mut self.draining {
            Some(old) => {
                old.wait(Instant::now(), Duration::ZERO);
                timeout.min(DRAIN_POLL)
            }
            None => timeout,
        };
        match &mut self.state {
            State::Up(connection) => {
                // One reading for the timeout and the receive's arming.
                let now = Instant::now();
                let timeout = timeout.min(connection.timeout(now));
                connection.wait(now, timeout);
            }
            // No ring while recovering: sleep in short steps, so requests and the stop
            // are seen soon.
            State::Recovering { at, .. } => {
                const STEP: Duration = Duration::from_millis(5);
                let until = at.saturating_duration_since(Instant::now());
                std::thread::sleep(timeout.min(until).min(STEP));
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        match &self.state {
            State::Up(_) => None,
            State::Recovering { at, .. } => Some(*at),
        }
    }

    fn close(&mut self, now: Instant) -> bool {
        if self.draining.is_some() {
            let mut done = Vec::new();
            self.drive_draining(now, &mut done);
            self.finished.append(&mut done);
            if self.draining.is_some() {
                return false;
            }
        }
        let State::Up(connection) = &mut self.state else {
            return true;
        };
        if !connection.logout_started && connection.dead.is_none() {
            connection.logout_started = true;
            connection.driver.session_mut().logout(now);
        }
        let over = matches!(
            connection.driver.session().state(),
            SessionState::Closed | SessionState::Failed
        ) || connection.dead.is_some();
        if over {
            connection.finish();
        }
        over
    }

    fn count(&self, stats: &mut ShardStats) {
        let c = &self.counted;
        stats.kernel_entries = c.kernel_entries;
        stats.bytes_copied = c.bytes_copied;
        stats.window_closed_ns = c.window_closed_ns;
        stats.coalesced_receives = c.coalesced_receives;
        stats.reconnects = c.reconnects;
        stats.reconnect_gap_ns_max = c.reconnect_gap_ns_max;
        stats.reconnect_gap_ns_total = c.reconnect_gap_ns_total;
        stats.commands_resent = c.commands_resent;
        stats.moves = c.moves;
        stats.async_events = c.async_events;
        stats.luns_changed = c.luns_changed;
        let up = match &self.state {
            State::Up(connection) => Some(connection),
            State::Recovering { .. } => None,
        };
        for connection in up.into_iter().chain(self.draining.as_ref()) {
            stats.kernel_entries += connection.kernel_entries();
            stats.bytes_copied += connection.bytes_copied();
            stats.window_closed_ns += connection.window_closed_ns;
            stats.coalesced_receives += connection.coalesced_receives;
            stats.async_events += connection.async_events;
            stats.luns_changed += connection.luns_changed;
        }
    }
}

impl TcpPath {
    /// The connection is gone and not being recovered (a multipath sub-path, whose
    /// recovery is off, then goes down).
    pub(super) fn is_lost(&self) -> bool {
        matches!(&self.state, State::Up(c) if c.dead.is_some())
    }

    /// What another sub-path's ring watches to wake a shard sleeping there for this
    /// path's completions (`ring_wake`); `None` while it recovers or when the kernel
    /// refused the eventfd.
    pub(super) fn wake_source(&self) -> Option<WakeSource> {
        match &self.state {
            State::Up(c) if self.draining.is_none() => c.wake.as_ref().map(RingWake::source),
            _ => None,
        }
    }

    /// Has this path's ring watch `sources` (and nothing else) while the shard sleeps in
    /// it. True when all are watched, so the sleep needs no bound for their sake.
    pub(super) fn watch_rings(&mut self, sources: &[WakeSource]) -> bool {
        match &mut self.state {
            State::Up(c) if self.draining.is_none() => {
                let (all, cancels) = c.watch_rings(sources);
                c.cancels_in_flight += cancels;
                all
            }
            _ => false,
        }
    }

    /// The Time2Wait a target gave when it dropped the lost connection (Async Message
    /// event 2 or 3), if it did.
    pub(super) fn lost_time2wait(&self) -> Option<Duration> {
        match &self.state {
            State::Up(c) => c.time2wait,
            State::Recovering { .. } => None,
        }
    }

    /// Ends a lost path: lets the kernel finish with its buffers and hands back every
    /// command it still had (failed with the loss), buffers included.
    pub(super) fn end_lost(&mut self, done: &mut Vec<Finished>) {
        done.append(&mut self.finished);
        if let Some(mut old) = self.draining.take() {
            old.lose_connection("the path is lost".into());
            old.finish();
            done.append(&mut old.finished);
        }
        if let State::Up(connection) = &mut self.state {
            connection.finish();
            done.append(&mut connection.finished);
        }
        for (tag, request) in self.resend.drain(..) {
            let error = CommandError::ConnectionLost("the path is lost".into());
            done.push((tag, Err(failure(error, request.buffer))));
        }
    }

    /// The path ends while recovering (the pool stops): what it kept fails.
    fn state_gone(&mut self, reason: &str, done: &mut Vec<Finished>) {
        for (tag, request) in self.resend.drain(..) {
            let error = CommandError::ConnectionLost(reason.to_string());
            done.push((tag, Err(failure(error, request.buffer))));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    use io_uring::IoUring;

    use super::*;

    /// Submits one receive of up to 64 KiB on `socket` and waits up to `wait` for it;
    /// its result, or `None` when it did not complete (it is then cancelled and reaped).
    fn receive_within(socket: &TcpStream, poll_first: bool, wait: Duration) -> Option<i32> {
        let mut ring = IoUring::new(4).expect("io_uring");
        let mut buffer = vec![0u8; 64 * 1024];
        let recv = waiting_for_mark(
            opcode::Recv::new(
                types::Fd(socket.as_raw_fd()),
                buffer.as_mut_ptr(),
                buffer.len() as u32,
            ),
            poll_first,
        )
        .build()
        .user_data(1);
        // SAFETY: `buffer` outlives the receive: it is reaped (or cancelled and reaped)
        // below before the buffer is dropped.
        unsafe { ring.submission().push(&recv).expect("room") };
        let timeout = types::Timespec::from(wait);
        let args = types::SubmitArgs::new().timespec(&timeout);
        let _ = ring.submitter().submit_with_args(1, &args);
        if let Some(cqe) = ring.completion().next() {
            return Some(cqe.result());
        }
        let cancel = opcode::AsyncCancel::new(1).build().user_data(2);
        // SAFETY: the cancellation carries no pointers.
        unsafe { ring.submission().push(&cancel).expect("room") };
        ring.submitter().submit_and_wait(2).expect("cancel");
        None
    }

    /// The fact receive coalescing rests on (Linux 6.18): with bytes below the socket's
    /// low-water mark already waiting, a plain io_uring receive takes them at once (its
    /// first try does not wait), while one that polls first waits for the mark.
    #[test]
    fn a_receive_that_polls_first_waits_for_the_low_water_mark() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let mut sender = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
        let (receiver, _) = listener.accept().expect("accept");
        let mark: i32 = 8192;
        // SAFETY: passes a live i32 and its size.
        let rc = unsafe {
            libc::setsockopt(
                receiver.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&mark as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_RCVLOWAT");

        sender.write_all(&[7u8; 100]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            receive_within(&receiver, false, Duration::from_millis(200)),
            Some(100),
            "a plain receive takes the bytes waiting below the mark"
        );

        sender.write_all(&[7u8; 100]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            receive_within(&receiver, true, Duration::from_millis(50)),
            None,
            "a receive that polls first waits for the mark"
        );
        sender.write_all(&[7u8; 8192]).unwrap();
        assert_eq!(
            receive_within(&receiver, true, Duration::from_secs(5)),
            Some(100 + 8192),
            "and takes all once the mark is met"
        );
    }
}
