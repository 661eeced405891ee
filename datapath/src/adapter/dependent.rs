//! The host side of a dependent adapter: the host [`Session`] (RFC 7143) drives the
//! protocol, the adapter carries its PDUs (framing, CRC32C digests of section 13.1 when it
//! offloads them, TCP) and places Data-In payload (section 11.7) into the command buffers.
//!
//! # Driving it (a shard worker's loop)
//! 1. [`DependentPath::connect`] takes a queue pair, hands the adapter the network
//!    configuration and logs in (blocking, bounded by the login timeout).
//! 2. Per turn: [`DependentPath::submit`] new requests (a full path hands them back),
//!    [`DependentPath::poll`] once (it moves the session's PDUs into the submission ring,
//!    feeds completions into the session, runs its timers and the error policy), then take
//!    every [`DependentPath::poll_completion`]. When there is nothing to do, sleep in
//!    [`DependentPath::wait`] (or on [`DependentPath::notifier`]'s eventfd in the shard's
//!    own ring, with [`DependentPath::next_deadline`] as the timeout).
//!
//! # What the path obeys in [`Capabilities`]
//! - `header_digest` / `data_digest`: when the adapter computes a digest, the host never
//!   does (no CRC32C on the host for it, in either direction); otherwise the host computes
//!   it for every PDU it sends and checks it for every PDU received, placed ones included.
//! - `direct_data_placement`: reads register their buffer with the adapter; without it
//!   Data-In payload comes up in the entry and the session copies it (counted).
//! - `max_pdu_bytes`: the session never declares a MaxRecvDataSegmentLength above it.
//! - `max_io_bytes`: longer requests are refused at submit.
//!
//! # Error policy: reset the queue, fail upward, log in again
//! Any adapter fault ([`AdapterFault`]: a dropped entry, a digest mismatch, an adapter
//! reset, a stalled completion doorbell, a lost connection) leaves the iSCSI connection in
//! an unknown state, and at ERL 0 the only recovery is a new session (section 7). So the
//! path: (1) fails the session, which fails every command in flight, each with
//! [`PathError::Adapter`] naming the fault; (2) resets the adapter's queue pair (its
//! engines joined: from then on it touches no host buffer) and discards the completion
//! ring, whose unannounced entries cannot be trusted; (3) hands the failed commands back
//! with their buffers; (4) connects again and logs in with the same ISID (session
//! reinstatement, section 6.3.5), holding new requests until then. Nothing is retried
//! behind the caller's back: a write whose outcome is unknown is reported failed, never
//! good. After `max_reconnects` failed logins in a row the path fails every request with
//! [`PathError::Unavailable`]. With [`DependentConfig::recover`] off (a multipath
//! sub-path) step (4) is skipped: the path fails, and its owner sends the commands
//! elsewhere.
//!
//! # Async Message event 1
//! With [`DependentConfig::host_moves`] the path only records the request
//! ([`DependentPath::take_logout_request`]): the host logs a new session in on another
//! queue pair first, then retires this one ([`DependentPath::start_retiring`]). Without
//! it the path breaks before it makes ([`DependentPath::leave`]'s policy).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    AdapterError, AdapterFault, Capabilities, ConnectionParams, DependentAdapter,
    DependentCompletion, DependentHostQueue, DependentSubmission, HostRegion, NetworkConfig,
    Notifier, PathCompletion, PathError, PathFailure, PathRejection, PathSubmitError, PduData,
    PduSubmission, ReceivedData, ReceivedPdu,
};
use crate::pdu::{self, Header, Tag};
use crate::session::redirect::{PortalRoute, RouteAttempt};
use crate::session::{
    AsyncEvent, DataDirection, Event, Request, Session, SessionConfig, SessionError, SessionState,
    SubmitRejection, TaskId, TransmitData,
};
use crate::transport::{resolve_target_address, TransportKind};

/// How a [`DependentPath`] runs.
#[derive(Debug, Clone)]
pub struct DependentConfig {
    /// The host session (names, ISID, CHAP, login keys, timeouts).
    pub session: SessionConfig,
    /// What the adapter connects to.
    pub network: NetworkConfig,
    /// Commands in flight at once; also bounds the requests held while the path logs in.
    pub queue_depth: usize,
    /// Completions written beyond the doorbell for this long are a stalled doorbell.
    pub doorbell_stall_timeout: Duration,
    /// Failed logins in a row before the path gives up.
    pub max_reconnects: u32,
    /// Completion entries handled per [`DependentPath::poll`].
    pub max_completions_per_poll: usize,
    /// Log in again after a fault or a target's drop (the single-path policy above).
    /// Off for a multipath sub-path: the path fails instead ([`DependentPath::failure`]),
    /// and the multipath shard sends its commands elsewhere and brings it back itself.
    pub recover: bool,
    /// Leave an Async Message event 1 to the host ([`DependentPath::take_logout_request`]):
    /// the host logs a new session in first and drains this one (make before break).
    /// Off: the path logs out once its commands are done and logs in again (break
    /// before make, for a host with no second queue pair).
    pub host_moves: bool,
}

impl DependentConfig {
    pub fn new(session: SessionConfig, network: NetworkConfig) -> DependentConfig {
        DependentConfig {
            session,
            network,
            queue_depth: 32,
            doorbell_stall_timeout: Duration::from_millis(500),
            max_reconnects: 3,
            max_completions_per_poll: 256,
            recover: true,
            host_moves: false,
        }
    }
}

/// Counters of one dependent path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DependentStats {
    pub ios_submitted: u64,
    pub ios_completed: u64,
    pub ios_failed: u64,
    pub pdus_submitted: u64,
    pub pdus_received: u64,
    /// Data-In payload bytes the adapter placed into command buffers.
    pub bytes_placed: u64,
    /// Header digests the host computed or checked (zero when the adapter offloads them).
    pub host_header_digests: u64,
    /// Data digests the host computed or checked (zero when the adapter offloads them).
    pub host_data_digests: u64,
    pub host_data_digest_bytes: u64,
    pub faults: u64,
    pub queue_resets: u64,
    pub logins: u64,
    /// Completions held until the adapter was done with their buffers.
    pub fenced_completions: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PathState {
    LoggingIn,
    Ready,
    /// The target asked for a logout (Async Message event 1): the session logs out once
    /// its commands are done; new requests are held for the next login.
    Leaving,
    /// Waiting to log in again (after a failed login), not before this instant.
    Retrying(Instant),
    /// Drained after a move: logging out for good (no login follows).
    Retiring,
    Closed,
    Failed(String),
}

/// What keeps a command's buffer lent to the adapter.
#[derive(Debug, Default, Clone, Copy)]
struct Fence {
    /// The last submission entry that named the buffer.
    last_entry: Option<u64>,
    /// A read's placement not yet released by the adapter.
    placement_live: bool,
}

/// A host session carried by a dependent adapter's queue pair. See the module docs.
pub struct DependentPath {
    adapter: Arc<dyn DependentAdapter>,
    index: usize,
    caps: Capabilities,
    queue: DependentHostQueue,
    config: DependentConfig,
    session: Session,
    state: PathState,
    connection_params_sent: bool,
    /// user_data of each command in the session.
    tasks: HashMap<TaskId, u64>,
    /// Placements of reads not yet sent, by task tag.
    placements: HashMap<Tag, HostRegion>,
    fences: HashMap<Tag, Fence>,
    /// Completed commands whose buffers the adapter may still touch (the flag: counted
    /// in the stats already).
    fenced: Vec<(Tag, PathCompletion, bool)>,
    ready: VecDeque<PathCompletion>,
    /// Requests accepted while the path logs in.
    held: VecDeque<Request>,
    /// The fault that failed the current session, if an adapter fault did.
    fault: Option<AdapterFault>,
    needs_reset: bool,
    failed_logins: u32,
    /// Where logins start (the virtual portal, or where a permanent redirect moved it).
    route: PortalRoute,
    /// The login under way: the portals it was sent through.
    attempt: RouteAttempt,
    /// Why the connection is being replaced when no fault replaces it.
    rejoin: Option<Rejoin>,
    stall_since: Option<Instant>,
    /// An Async Message event 1 left to the host (`host_moves`): its Parameter3 (the
    /// seconds to log out within) and Parameter2 (Time2Wait).
    logout_requested: Option<(u16, u16)>,
    /// The Time2Wait of an event 2 or 3 that failed a path which does not recover.
    dropped_time2wait: Option<Duration>,
    stats: DependentStats,
}

/// A connection replaced at the target's request rather than for a fault: nothing counts
/// as a failed login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rejoin {
    /// The login was redirected: log in at the attempt's next portal now.
    Redirected,
    /// The target asked us to leave (Async Message event 1, 2 or 3): log in again from the
    /// route's start once its Time2Wait has passed.
    At(Instant),
}

impl std::fmt::Debug for DependentPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DependentPath")
            .field("index", &self.index)
            .field("state", &self.state)
            .field("tasks", &self.tasks.len())
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

impl DependentPath {
    /// Takes queue pair `index` of `adapter`, connects it to `config.network` and logs in.
    pub fn connect(
        adapter: Arc<dyn DependentAdapter>,
        index: usize,
        config: DependentConfig,
    ) -> Result<DependentPath, AdapterError> {
        let now = Instant::now();
        let mut path = DependentPath::new(adapter, index, config)?;
        path.adapter.connect(index, &path.config.network)?;
        path.stats.logins += 1;
        path.wait_for_login(now)?;
        Ok(path)
    }

    /// The path on queue pair `index`, before its connection.
    fn new(
        adapter: Arc<dyn DependentAdapter>,
        index: usize,
        config: DependentConfig,
    ) -> Result<DependentPath, AdapterError> {
        let info = adapter.info();
        if info.kind != TransportKind::Dependent {
            return Err(AdapterError::Unsupported(
                "PDU queues on an independent adapter",
            ));
        }
        let queue = adapter.take_queue_pair(index)?;
        let now = Instant::now();
        let mut session_config = config.session.clone();
        session_config.offer.max_recv_data_segment_length = session_config
            .offer
            .max_recv_data_segment_length
            .min(info.capabilities.max_pdu_bytes);
        session_config.max_outstanding_commands = config.queue_depth.max(1);
        session_config.max_queued_commands = config.queue_depth.max(1);
        let mut config = config;
        config.session = session_config.clone();
        let route = PortalRoute::new(config.network.portal);
        let path = DependentPath {
            attempt: route.begin(),
            route,
            rejoin: None,
            adapter,
            index,
            caps: info.capabilities,
            queue,
            session: Session::new(session_config, now),
            config,
            state: PathState::LoggingIn,
            connection_params_sent: false,
            tasks: HashMap::new(),
            placements: HashMap::new(),
            fences: HashMap::new(),
            fenced: Vec::new(),
            ready: VecDeque::new(),
            held: VecDeque::new(),
            fault: None,
            needs_reset: false,
            failed_logins: 0,
            stall_since: None,
            logout_requested: None,
            dropped_time2wait: None,
            stats: DependentStats::default(),
        };
        Ok(path)
    }

    /// [`DependentPath::connect`] without waiting for the login: the adapter connects
    /// (blocking, bounded by the connect timeout) and the login goes on in
    /// [`DependentPath::poll`] until [`DependentPath::is_ready`] (or
    /// [`DependentPath::failure`]). A move's new session logs in so while the old one
    /// carries I/O.
    pub fn start(
        adapter: Arc<dyn DependentAdapter>,
        index: usize,
        config: DependentConfig,
    ) -> Result<DependentPath, AdapterError> {
        let mut path = DependentPath::new(adapter, index, config)?;
        path.adapter.connect(index, &path.config.network)?;
        path.stats.logins += 1;
        path.poll(Instant::now());
        Ok(path)
    }

    /// Polls until the first login ends, bounded by the login timeout.
    fn wait_for_login(&mut self, started: Instant) -> Result<(), AdapterError> {
        let deadline = started + self.config.session.login_timeout + Duration::from_secs(1);
        loop {
            let now = Instant::now();
            self.poll(now);
            match &self.state {
                PathState::Ready => return Ok(()),
                // A redirect being followed is still the first login.
                PathState::LoggingIn | PathState::Leaving => {}
                PathState::Retrying(_)
                | PathState::Retiring
                | PathState::Failed(_)
                | PathState::Closed => {
                    return Err(AdapterError::Login {
                        portal: self.attempt.portal(),
                        reason: self.state_text(),
                    })
                }
            }
            if now >= deadline {
                return Err(AdapterError::Login {
                    portal: self.attempt.portal(),
                    reason: "login did not finish in time".into(),
                });
            }
            self.wait(deadline - now);
        }
    }

    fn state_text(&self) -> String {
        match &self.state {
            PathState::LoggingIn => "logging in".into(),
            PathState::Ready => "ready".into(),
            PathState::Leaving => "logging out at the target's request".into(),
            PathState::Retrying(_) => "waiting to log in again".into(),
            PathState::Retiring => "logging out after a move".into(),
            PathState::Closed => "closed".into(),
            PathState::Failed(reason) => reason.clone(),
        }
    }

    /// Accepts a request: into the session when logged in, held while the path logs in
    /// again, refused (handed back) when full, too large, or the path has given up.
    pub fn submit(&mut self, now: Instant, request: Request) -> Result<(), PathSubmitError> {
        let transfer = request.direction.transfer_len();
        let reject = |reason, request| Err(PathSubmitError { reason, request });
        if transfer > self.caps.max_io_bytes {
            let max = self.caps.max_io_bytes;
            return reject(PathRejection::TooLarge { len: transfer, max }, request);
        }
        match &self.state {
            PathState::Failed(reason) => {
                return reject(PathRejection::Unavailable(reason.as_str().into()), request)
            }
            PathState::Closed => {
                return reject(PathRejection::Unavailable("path closed".into()), request)
            }
            _ => {}
        }
        if self.tasks.len() + self.held.len() >= self.config.queue_depth.max(1) {
            return reject(PathRejection::QueueFull, request);
        }
        if self.state != PathState::Ready {
            self.held.push_back(request);
            return Ok(());
        }
        self.submit_to_session(now, request)?;
        self.flush();
        Ok(())
    }

    fn submit_to_session(&mut self, now: Instant, request: Request) -> Result<(), PathSubmitError> {
        let mut command = request;
        let user_data = command.user_data;
        let placement = match command.direction {
            DataDirection::Read { len } if self.caps.direct_data_placement && len > 0 => {
                Some(HostRegion::writable(&mut command.buffer, len as usize))
            }
            _ => None,
        };
        match self.session.submit(now, command) {
            Ok(task) => {
                self.tasks.insert(task, user_data);
                if let Some(region) = placement {
                    self.placements.insert(task.itt(), region);
                }
                self.stats.ios_submitted += 1;
                Ok(())
            }
            Err(refused) => {
                let reason = match refused.reason {
                    SubmitRejection::QueueFull => PathRejection::QueueFull,
                    SubmitRejection::NotLoggedIn => {
                        PathRejection::Unavailable("session not logged in".into())
                    }
                    other => PathRejection::Invalid(other),
                };
                Err(PathSubmitError {
                    reason,
                    request: refused.request,
                })
            }
        }
    }

    /// One turn: completions into the session, timers, the error policy, the session's
    /// PDUs into the submission ring. Returns the completions ready to take.
    pub fn poll(&mut self, now: Instant) -> usize {
        self.reap(now);
        self.check_doorbell_stall(now);
        if let Some(deadline) = self.session.poll_timeout() {
            if now >= deadline {
                self.session.handle_timeout(now);
            }
        }
        self.drain_events();
        if self.needs_reset {
            self.reset_and_reconnect(now);
        }
        if let PathState::Retrying(at) = self.state {
            if now >= at {
                self.reconnect(now);
            }
        }
        if self.state == PathState::Ready {
            // Bounded by queue_depth: held requests count against it.
            while let Some(request) = self.held.pop_front() {
                if let Err(refused) = self.submit_to_session(now, request) {
                    let user_data = refused.request.user_data;
                    let failure = PathFailure {
                        error: PathError::Unavailable(refused.reason.to_string()),
                        buffer: refused.request.buffer,
                    };
                    self.stats.ios_failed += 1;
                    self.ready.push_back(PathCompletion {
                        user_data,
                        result: Err(failure),
                    });
                }
            }
        }
        if let PathState::Failed(reason) = &self.state {
            let reason = reason.clone();
            while let Some(request) = self.held.pop_front() {
                self.stats.ios_failed += 1;
                self.ready.push_back(PathCompletion {
                    user_data: request.user_data,
                    result: Err(PathFailure {
                        error: PathError::Unavailable(reason.clone()),
                        buffer: request.buffer,
                    }),
                });
            }
        }
        self.flush();
        self.release_fences();
        self.ready.len()
    }

    /// The next finished request.
    pub fn poll_completion(&mut self) -> Option<PathCompletion> {
        self.ready.pop_front()
    }

    /// True when completions are ready to take or announced by the adapter.
    pub fn ready_to_poll(&self) -> bool {
        !self.ready.is_empty() || self.queue.completions.announced() > 0
    }

    /// Sleeps until the adapter announces completions, a timer of the path is due, or
    /// `timeout` passes. True when there is something for [`DependentPath::poll`].
    pub fn wait(&mut self, timeout: Duration) -> bool {
        if self.ready_to_poll() {
            return true;
        }
        let now = Instant::now();
        let limit = match self.next_deadline() {
            Some(deadline) => timeout.min(deadline.saturating_duration_since(now)),
            None => timeout,
        };
        self.queue.completions.wait(limit)
    }

    /// When the path next needs a [`DependentPath::poll`] even without completions: the
    /// session's timer, a doorbell-stall check, a login retry.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut deadline = self.session.poll_timeout();
        let mut consider = |t: Instant| deadline = Some(deadline.map_or(t, |d| d.min(t)));
        if let Some(since) = self.stall_since {
            consider(since + self.config.doorbell_stall_timeout);
        } else if self.queue.completions.unannounced() > 0 {
            consider(Instant::now() + self.config.doorbell_stall_timeout / 4);
        }
        if let PathState::Retrying(at) = self.state {
            consider(at);
        }
        if self.needs_reset || !self.fenced.is_empty() {
            consider(Instant::now() + Duration::from_millis(1));
        }
        deadline
    }

    /// The completion ring's wake-up, for a shard that sleeps in its own io_uring.
    pub fn notifier(&self) -> &Arc<Notifier> {
        self.queue.completions.notifier()
    }

    /// Requests accepted and not yet handed back.
    pub fn in_flight(&self) -> usize {
        self.tasks.len() + self.held.len() + self.fenced.len()
    }

    /// True once logged in and not failed.
    pub fn is_ready(&self) -> bool {
        self.state == PathState::Ready
    }

    /// Why the path gave up, if it did.
    pub fn failure(&self) -> Option<&str> {
        match &self.state {
            PathState::Failed(reason) => Some(reason),
            _ => None,
        }
    }

    pub fn capabilities(&self) -> Capabilities {
        self.caps
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    pub fn stats(&self) -> DependentStats {
        self.stats
    }

    /// Where this path's logins start: the portal it was given, or where a permanent
    /// redirect moved it. A move logs its new session in here, so the array places it.
    pub fn route_start(&self) -> std::net::SocketAddr {
        self.route.begin().portal()
    }

    /// The Parameter3 and Parameter2 (seconds to log out within, Time2Wait) of an Async
    /// Message event 1 left to the host ([`DependentConfig::host_moves`]), once.
    pub fn take_logout_request(&mut self) -> Option<(u16, u16)> {
        self.logout_requested.take()
    }

    /// Break before make, when the host cannot make first (no queue pair for a second
    /// session): logs out once the commands in flight are done, holds new requests, and
    /// logs in again from the route's start after `time2wait` seconds.
    pub fn leave(&mut self, now: Instant, time2wait: u16) {
        if self.state != PathState::Ready {
            return;
        }
        self.session.logout(now);
        self.state = PathState::Leaving;
        let at = now + Duration::from_secs(u64::from(time2wait));
        self.rejoin = Some(Rejoin::At(at));
        self.flush();
    }

    /// The adapter queue pair the path drives.
    pub fn queue_pair(&self) -> usize {
        self.index
    }

    /// The Time2Wait of the Async Message event 2 or 3 that failed a path which does not
    /// recover ([`DependentConfig::recover`]), if one did.
    pub fn dropped_time2wait(&self) -> Option<Duration> {
        self.dropped_time2wait
    }

    /// A drained path after a move: logs out for good (no login follows); poll until
    /// [`DependentPath::is_closed`]. Commands still held fail as the session ends.
    pub fn start_retiring(&mut self, now: Instant) {
        if matches!(self.state, PathState::Closed | PathState::Failed(_)) {
            return;
        }
        self.logout_requested = None;
        self.session.logout(now);
        self.state = PathState::Retiring;
        self.flush();
    }

    /// True once logged out (or given up): nothing more comes from it.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, PathState::Closed | PathState::Failed(_))
            || matches!(
                self.session.state(),
                SessionState::Closed | SessionState::Failed
            )
    }

    /// Ends the path now (a multipath shard lost it): the session fails every command it
    /// holds, the adapter's queue pair is reset (from then on it touches no host buffer),
    /// and every command comes back through [`DependentPath::poll_completion`], failed
    /// with its buffer.
    pub fn end(&mut self, now: Instant, reason: &str) {
        if !matches!(
            self.session.state(),
            SessionState::Closed | SessionState::Failed
        ) {
            self.session.handle_connection_lost(now, reason.to_string());
        }
        self.drain_events();
        self.needs_reset = false;
        let _ = self.adapter.reset_queue_pair(self.index);
        self.queue.completions.discard_all();
        self.fences.clear();
        self.placements.clear();
        self.release_fences();
        while let Some(request) = self.held.pop_front() {
            self.stats.ios_failed += 1;
            self.ready.push_back(PathCompletion {
                user_data: request.user_data,
                result: Err(PathFailure {
                    error: PathError::Unavailable(reason.to_string()),
                    buffer: request.buffer,
                }),
            });
        }
        self.state = PathState::Failed(reason.to_string());
    }

    /// Logs out (waiting up to `timeout`) and stops the adapter's queue pair.
    pub fn logout(mut self, timeout: Duration) -> Result<(), AdapterError> {
        let deadline = Instant::now() + timeout;
        self.session.logout(Instant::now());
        loop {
            let now = Instant::now();
            self.flush();
            self.reap(now);
            let mut done = false;
            while let Some(event) = self.session.poll_event() {
                done |= matches!(event, Event::LogoutComplete | Event::ConnectionFailed(_));
            }
            if done
                || matches!(
                    self.session.state(),
                    SessionState::Closed | SessionState::Failed
                )
            {
                break;
            }
            if now >= deadline {
                break;
            }
            self.queue
                .completions
                .wait((deadline - now).min(Duration::from_millis(100)));
        }
        self.state = PathState::Closed;
        self.adapter.reset_queue_pair(self.index)
    }

    fn reap(&mut self, now: Instant) {
        for _ in 0..self.config.max_completions_per_poll.max(1) {
            let Some(completion) = self.queue.completions.poll() else {
                break;
            };
            match completion {
                DependentCompletion::Pdu(received) => self.handle_received(now, received),
                DependentCompletion::Fault(fault) => {
                    self.fail_connection(now, fault);
                    break;
                }
            }
            if self.needs_reset {
                break;
            }
        }
    }

    fn check_doorbell_stall(&mut self, now: Instant) {
        let cq = &self.queue.completions;
        if cq.announced() > 0 || cq.unannounced() == 0 || self.needs_reset {
            self.stall_since = None;
            return;
        }
        let since = *self.stall_since.get_or_insert(now);
        let stalled = now.duration_since(since);
        if stalled >= self.config.doorbell_stall_timeout {
            let fault = AdapterFault::DoorbellStalled {
                doorbell: cq.doorbell(),
                unannounced: cq.unannounced(),
                stalled_ms: stalled.as_millis() as u64,
            };
            self.stall_since = None;
            self.fail_connection(now, fault);
        }
    }

    fn handle_received(&mut self, now: Instant, received: ReceivedPdu) {
        let ReceivedPdu {
            header,
            data,
            header_digest,
            data_digest,
            placement_released,
        } = received;
        self.stats.pdus_received += 1;
        if let Some(tag) = placement_released {
            if let Some(fence) = self.fences.get_mut(&tag) {
                fence.placement_live = false;
            }
        }
        if let Some(fault) = self.check_host_digests(&header, &data, header_digest, data_digest) {
            self.fail_connection(now, fault);
            return;
        }
        let result = match data {
            ReceivedData::Placed { len, .. } => {
                self.stats.bytes_placed += u64::from(len);
                self.session.handle_pdu_placed(now, header, len)
            }
            ReceivedData::Owned(bytes) => self.session.handle_pdu(now, header, &bytes),
            ReceivedData::None => self.session.handle_pdu(now, header, &[]),
        };
        if result.is_err() {
            // The session failed itself and every command with the protocol fault.
            self.needs_reset = true;
        }
    }

    /// Checks the digests the adapter handed up unchecked (it does not offload them).
    fn check_host_digests(
        &mut self,
        header: &Header,
        data: &ReceivedData,
        header_digest: Option<u32>,
        data_digest: Option<u32>,
    ) -> Option<AdapterFault> {
        let tag = header.initiator_task_tag().map(u64::from);
        if let Some(found) = header_digest {
            self.stats.host_header_digests += 1;
            let data_len = match data {
                ReceivedData::None => 0,
                ReceivedData::Owned(bytes) => bytes.len() as u32,
                ReceivedData::Placed { len, .. } => *len,
            };
            if let Ok(expected) = pdu::header_digest_of(header, data_len) {
                if expected != found {
                    return Some(AdapterFault::DigestMismatch {
                        kind: super::DigestKind::Header,
                        opcode: Some(header.opcode()),
                        tag,
                        expected,
                        found,
                        injected: false,
                    });
                }
            }
        }
        if let Some(found) = data_digest {
            let expected = match data {
                ReceivedData::None => return None,
                ReceivedData::Owned(bytes) => {
                    self.stats.host_data_digest_bytes += bytes.len() as u64;
                    pdu::digest::data_digest(bytes)
                }
                ReceivedData::Placed { len, .. } => {
                    // The slice the session expects this Data-In in is where the adapter
                    // placed it; an unexpected Data-In is left to the session to refuse.
                    let slice = self.session.data_in_destination(header, *len)?;
                    self.stats.host_data_digest_bytes += slice.len() as u64;
                    pdu::digest::data_digest(slice)
                }
            };
            self.stats.host_data_digests += 1;
            if expected != found {
                return Some(AdapterFault::DigestMismatch {
                    kind: super::DigestKind::Data,
                    opcode: Some(header.opcode()),
                    tag,
                    expected,
                    found,
                    injected: false,
                });
            }
        }
        None
    }

    /// An adapter fault: the session fails, every command with it; reset follows.
    fn fail_connection(&mut self, now: Instant, fault: AdapterFault) {
        if self.session.state() == SessionState::Closed {
            // Logged out: the target closes the connection, as RFC 7143 section 11.14 says.
            tracing::debug!(queue_pair = self.index, %fault, "connection closed after logout");
        } else {
            tracing::warn!(queue_pair = self.index, %fault, "dependent adapter fault");
        }
        self.stats.faults += 1;
        if self.fault.is_none() {
            self.fault = Some(fault.clone());
        }
        self.session.handle_connection_lost(now, fault.to_string());
        self.needs_reset = true;
    }

    fn drain_events(&mut self) {
        while let Some(event) = self.session.poll_event() {
            match event {
                Event::CommandComplete(task, result) => {
                    self.placements.remove(&task.itt());
                    let Some(user_data) = self.tasks.remove(&task) else {
                        continue;
                    };
                    let result = result.map_err(|failure| PathFailure {
                        error: PathError::from_command(failure.error, self.fault.as_ref()),
                        buffer: failure.buffer,
                    });
                    match &result {
                        Ok(_) => self.stats.ios_completed += 1,
                        Err(_) => self.stats.ios_failed += 1,
                    }
                    self.fenced
                        .push((task.itt(), PathCompletion { user_data, result }, false));
                }
                Event::LoginComplete => {
                    self.state = PathState::Ready;
                    self.failed_logins = 0;
                    let start = self.route.logged_in(&self.attempt);
                    if self.attempt.hops() > 0 {
                        tracing::info!(
                            queue_pair = self.index,
                            route = %self.attempt.chain(),
                            reconnects_start_at = %start,
                            "logged in after redirection"
                        );
                    }
                }
                Event::LoginFailed { reason, .. } => {
                    tracing::warn!(queue_pair = self.index, %reason, "login refused");
                    self.needs_reset = true;
                }
                Event::Redirect { address, kind } => {
                    let followed = resolve_target_address(&address)
                        .and_then(|to| self.attempt.follow(to, kind));
                    match followed {
                        Ok(to) => {
                            tracing::info!(queue_pair = self.index, %address, %to, ?kind, "login redirected");
                            self.rejoin = Some(Rejoin::Redirected);
                        }
                        Err(error) => {
                            tracing::warn!(queue_pair = self.index, %error, "login redirection not followed");
                            self.state = PathState::Failed(format!("login redirection: {error}"));
                        }
                    }
                    self.needs_reset = true;
                }
                Event::ConnectionFailed(error) => {
                    tracing::warn!(queue_pair = self.index, %error, "session failed");
                    if let SessionError::TargetDroppedConnection { time2wait, .. } = error {
                        // Async Message event 2 or 3: back after Time2Wait, not a fault.
                        let at = Instant::now() + Duration::from_secs(u64::from(time2wait));
                        self.rejoin = Some(Rejoin::At(at));
                        self.dropped_time2wait = Some(Duration::from_secs(u64::from(time2wait)));
                    }
                    self.needs_reset = true;
                }
                Event::LogoutComplete => {
                    if self.state == PathState::Retiring {
                        self.state = PathState::Closed;
                    } else if self.state == PathState::Leaving {
                        // Logged out at the target's request: the next login goes through
                        // the route's start (the virtual portal), which places it.
                        self.needs_reset = true;
                    } else {
                        self.state = PathState::Closed;
                    }
                }
                Event::AsyncMessage(message) => {
                    tracing::info!(queue_pair = self.index, ?message, "async message");
                    // One queue pair, so no second connection to log in first: the session
                    // logs out once the commands in flight are done (it holds the Logout
                    // Request until then), new requests wait for the next login.
                    if let AsyncEvent::LogoutRequested {
                        time2wait,
                        within_secs,
                    } = message
                    {
                        if self.config.host_moves {
                            // The host logs a new session in before this one goes.
                            self.logout_requested = Some((within_secs, time2wait));
                        } else if self.state == PathState::Ready {
                            self.session.logout(Instant::now());
                            self.state = PathState::Leaving;
                            let at = Instant::now() + Duration::from_secs(u64::from(time2wait));
                            self.rejoin = Some(Rejoin::At(at));
                        }
                    }
                }
                Event::TargetsDiscovered(_) | Event::Renegotiated(_) => {}
            }
        }
    }

    /// Step (2)-(4) of the error policy.
    fn reset_and_reconnect(&mut self, now: Instant) {
        self.needs_reset = false;
        if !matches!(
            self.session.state(),
            SessionState::Closed | SessionState::Failed
        ) {
            let reason = self
                .fault
                .as_ref()
                .map_or_else(|| "queue pair reset".to_string(), ToString::to_string);
            self.session.handle_connection_lost(now, reason);
        }
        self.drain_events();
        let reset = self.adapter.reset_queue_pair(self.index);
        // Engines joined (or gone): the adapter touches no host buffer any more.
        self.queue.completions.discard_all();
        self.fences.clear();
        self.placements.clear();
        self.stall_since = None;
        self.stats.queue_resets += 1;
        self.release_fences();
        if let Err(error) = reset {
            self.state = PathState::Failed(format!("adapter reset failed: {error}"));
            return;
        }
        if matches!(self.state, PathState::Failed(_)) {
            return;
        }
        match self.rejoin.take() {
            Some(Rejoin::Redirected) => return self.connect_attempt(now),
            // A path retiring after a move (or out already) ends with its connection.
            _ if matches!(self.state, PathState::Retiring | PathState::Closed) => {
                self.state = PathState::Closed;
                return;
            }
            _ if !self.config.recover => {
                let reason = match self.fault.take() {
                    Some(fault) => format!("connection lost: {fault}"),
                    None => "connection lost".to_string(),
                };
                self.state = PathState::Failed(reason);
                return;
            }
            Some(Rejoin::At(at)) => {
                self.fault = None;
                self.state = PathState::Retrying(at);
                return;
            }
            None => {}
        }
        if self.state == PathState::LoggingIn {
            // The login itself failed.
            self.failed_logins += 1;
        }
        self.fault = None;
        if self.failed_logins >= self.config.max_reconnects.max(1) {
            self.state =
                PathState::Failed(format!("{} logins in a row failed", self.failed_logins));
            return;
        }
        if self.failed_logins == 0 {
            self.reconnect(now);
        } else {
            self.state = PathState::Retrying(now + Duration::from_millis(200));
        }
    }

    /// A new login from the route's start: the virtual portal after a temporary redirect,
    /// the new address after a permanent one.
    fn reconnect(&mut self, now: Instant) {
        self.attempt = self.route.begin();
        self.connect_attempt(now);
    }

    /// Connects the adapter to the attempt's current portal and starts a login there.
    fn connect_attempt(&mut self, now: Instant) {
        self.session = Session::new(self.config.session.clone(), now);
        self.connection_params_sent = false;
        self.state = PathState::LoggingIn;
        self.stats.logins += 1;
        self.config.network.portal = self.attempt.portal();
        if let Err(error) = self.adapter.connect(self.index, &self.config.network) {
            tracing::warn!(queue_pair = self.index, %error, "reconnect failed");
            self.failed_logins += 1;
            self.state = if self.failed_logins >= self.config.max_reconnects.max(1) {
                PathState::Failed(format!("reconnect failed: {error}"))
            } else {
                PathState::Retrying(now + Duration::from_millis(200))
            };
        }
    }

    /// Moves the session's PDUs into free submission slots and rings the doorbell.
    fn flush(&mut self) {
        if !matches!(
            self.state,
            PathState::LoggingIn | PathState::Ready | PathState::Leaving | PathState::Retiring
        ) || self.needs_reset
        {
            return;
        }
        let sq = &self.queue.submissions;
        let mut posted = 0u32;
        if !self.connection_params_sent && self.session.state() == SessionState::FullFeature {
            let params = ConnectionParams {
                digests: self.session.digests(),
                max_recv_data_segment_length: self.session.max_recv_data_segment_length(),
            };
            if sq.post(DependentSubmission::SetConnection(params)).is_ok() {
                self.connection_params_sent = true;
                posted += 1;
            }
        }
        while self.queue.submissions.free_slots() > 0 {
            let Some(transmit) = self.session.poll_transmit() else {
                break;
            };
            let (entry, lent_task) = self.build_entry(transmit);
            match self.queue.submissions.post(DependentSubmission::Pdu(entry)) {
                Ok(index) => {
                    posted += 1;
                    self.stats.pdus_submitted += 1;
                    if let Some((tag, placement)) = lent_task {
                        let fence = self.fences.entry(tag).or_default();
                        fence.last_entry = Some(index);
                        fence.placement_live |= placement;
                    }
                }
                Err(_) => {
                    // Only the host posts here and a slot was free: the adapter is gone.
                    let fault = AdapterFault::ConnectionLost(
                        "submission ring refused an entry with free slots".into(),
                    );
                    self.fail_connection(Instant::now(), fault);
                    break;
                }
            }
        }
        if posted > 0 {
            self.queue.submissions.ring_doorbell();
        }
    }

    /// One submission entry for a PDU of the session, digests as the capabilities say.
    /// Also returns the task whose buffer the entry lends (and whether as a placement).
    fn build_entry(
        &mut self,
        transmit: crate::session::Transmit,
    ) -> (PduSubmission, Option<(Tag, bool)>) {
        let digests = self.session.digests();
        let bytes = self.session.transmit_data(&transmit);
        let data_len = bytes.len();
        let region = HostRegion::readable(bytes);
        let data_digest = if digests.data && data_len > 0 && !self.caps.data_digest {
            self.stats.host_data_digests += 1;
            self.stats.host_data_digest_bytes += data_len as u64;
            Some(pdu::digest::data_digest(bytes))
        } else {
            None
        };
        let header_digest = if digests.header && !self.caps.header_digest {
            let value = pdu::header_digest_of(&transmit.header, data_len as u32).ok();
            self.stats.host_header_digests += u64::from(value.is_some());
            value
        } else {
            None
        };
        let crate::session::Transmit { header, data } = transmit;
        let (data, mut lent) = match data {
            TransmitData::None => (PduData::None, None),
            TransmitData::Owned(bytes) => (PduData::Owned(bytes), None),
            TransmitData::CommandBuffer { task, .. } => {
                (PduData::Host(region), Some((task.itt(), false)))
            }
        };
        let placement = match &header {
            Header::ScsiCommand(command) if command.read => {
                let tag = command.initiator_task_tag;
                let placement = self.placements.remove(&tag);
                if placement.is_some() {
                    lent = Some((tag, true));
                }
                placement
            }
            _ => None,
        };
        (
            PduSubmission {
                header,
                data,
                header_digest,
                data_digest,
                placement,
            },
            lent,
        )
    }

    /// Hands back the completions whose buffers the adapter is done with.
    fn release_fences(&mut self) {
        if self.fenced.is_empty() {
            return;
        }
        let retired = self.queue.submissions.retired();
        let mut index = 0;
        while index < self.fenced.len() {
            let tag = self.fenced[index].0;
            let free = self.fences.get(&tag).is_none_or(|fence| {
                !fence.placement_live && fence.last_entry.is_none_or(|last| retired > last)
            });
            if free {
                self.fences.remove(&tag);
                let (_, completion, _) = self.fenced.swap_remove(index);
                self.ready.push_back(completion);
            } else {
                if !self.fenced[index].2 {
                    self.fenced[index].2 = true;
                    self.stats.fenced_completions += 1;
                }
                index += 1;
            }
        }
    }
}

impl Drop for DependentPath {
    /// Stops the adapter's queue pair before the session (and the buffers it lent) goes,
    /// and gives the queue pair back to the adapter for the next path on it.
    fn drop(&mut self) {
        let _ = self.adapter.reset_queue_pair(self.index);
        // A one-entry stand-in: the real queue goes back to the adapter.
        let (stand_in, _) = super::queue_pair(1, 1, Notifier::new(), Notifier::new());
        let host = std::mem::replace(&mut self.queue, stand_in);
        self.adapter.return_queue_pair(self.index, host);
    }
}
