//! A software model of an independent iSCSI adapter (the kind qla4xxx drives in Linux):
//! the host hands it SCSI commands; it runs the whole initiator itself (TCP, login with
//! CHAP, the session of RFC 7143 at ERL 0), configured through its own interface
//! ([`IndependentConfig`]: portal, names, CHAP, login keys).
//!
//! The initiator is `datapath`'s sans-IO [`Session`], not a copy: a processor thread owns
//! it, takes SCSI commands from the submission ring, writes the PDUs it makes (framed and
//! digested by `datapath::conn`'s send batch), feeds it the PDUs the receive thread decodes
//! (`datapath::conn::PduReceiver`, the same resumable receiver the host paths use, which
//! frames them and checks the digests), and posts each finished command
//! to the completion ring with its status, sense, residual and buffer. The receive thread
//! hands PDUs over through an internal ring whose doorbell wakes the processor like the
//! host's does, so the processor sleeps on one eventfd for both.
//!
//! Payload is copied inside the adapter (socket to receive buffer to command buffer): a
//! model's copies are adapter CPU, counted by its [`CpuMeter`], never host CPU.
//!
//! Faults ([`Faults`]): a dropped entry fails that command alone; an injected reset, a
//! digest mismatch or a lost connection fail every command in flight, each naming the
//! fault, after which the adapter logs in again with its stored configuration. Every lost
//! session is also posted to the host ([`IndependentCompletion::SessionLost`]), in flight
//! or idle, so the host's view of the path stays true while the adapter logs in again.
//!
//! Liveness: the session pings and the socket's `TCP_USER_TIMEOUT` are the host path's
//! ([`IndependentConfig::liveness`]), so a cut link is noticed as on a software path; the
//! connect is non-blocking and watches the stop flag, so the host can stop a queue pair
//! whose login waits on a dead link at once.

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use datapath::adapter::{
    queue_pair, AdapterError, AdapterFault, AdapterInfo, Capabilities, ConnectionParams, Consumer,
    DigestKind, IndependentAdapter, IndependentAdapterQueue, IndependentCompletion,
    IndependentConfig, IndependentHostQueue, LoginReport, Notifier, PathError, PathFailure,
    Producer, ResetReport, ScsiCompletion, SessionLoss,
};
use datapath::conn::{PduReceiver, PduSink, ReceiveError, SendBatch};
use datapath::pdu::{self, digest, Digests, Header, Limits, LoginStage, PduError};
use datapath::session::connect::{random_bytes, random_isid};
use datapath::session::redirect::{PortalRoute, RedirectKind, RouteAttempt, TargetAddress};
use datapath::session::{
    AsyncEvent, CommandError, Event, Request, Session, SessionConfig, SessionError, SessionState,
    TaskId,
};
use datapath::transport::reach::{Reach, ReachProbe};
use datapath::transport::{resolve_target_address, TransportKind};

use crate::cpu::CpuMeter;
use crate::faults::Faults;
use crate::net;
use crate::slots;
use crate::wire::{post_waiting, write_all_vectored};

/// How long an idle processor sleeps before it looks at its stop flag again.
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// PDUs the receive thread may have decoded ahead of the processor.
const RX_RING_ENTRIES: usize = 256;
/// Entries handled per processor turn from each ring.
const MAX_PER_TURN: usize = 256;
/// Pause between logins after the connection failed.
const RELOGIN_BACKOFF: Duration = Duration::from_millis(200);

/// How an [`IndependentModel`] is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndependentModelConfig {
    pub name: String,
    pub queue_pairs: usize,
    pub submission_entries: usize,
    pub completion_entries: usize,
    pub max_pdu_bytes: u32,
    pub max_io_bytes: u32,
}

impl Default for IndependentModelConfig {
    fn default() -> Self {
        IndependentModelConfig {
            name: "model-independent0".into(),
            queue_pairs: 1,
            submission_entries: 256,
            completion_entries: 256,
            max_pdu_bytes: 256 * 1024,
            max_io_bytes: 16 * 1024 * 1024,
        }
    }
}

/// An independent adapter model. See the module docs.
pub struct IndependentModel {
    config: IndependentModelConfig,
    caps: Capabilities,
    faults: Faults,
    cpu: CpuMeter,
    queue_pairs: Vec<Mutex<QueuePairSlot>>,
}

impl std::fmt::Debug for IndependentModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndependentModel")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The control-plane state of one queue pair (never touched by the engine).
struct QueuePairSlot {
    host: Option<IndependentHostQueue>,
    idle: Option<IndependentAdapterQueue>,
    engine: Option<Engine>,
    /// What the configuration interface stored (kept across resets, as in NVRAM).
    config: Option<IndependentConfig>,
    wake: Arc<Notifier>,
}

struct Engine {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<EngineExit>,
}

/// What a stopped engine hands back.
struct EngineExit {
    queue: IndependentAdapterQueue,
    buffers: Vec<(u64, Vec<u8>)>,
}

impl IndependentModel {
    pub fn new(config: IndependentModelConfig) -> Arc<IndependentModel> {
        let caps = Capabilities {
            header_digest: true,
            data_digest: true,
            direct_data_placement: true,
            tcp_offload: true,
            max_pdu_bytes: config.max_pdu_bytes,
            max_io_bytes: config.max_io_bytes,
            queue_pairs: config.queue_pairs.min(u16::MAX as usize) as u16,
        };
        let queue_pairs = (0..config.queue_pairs)
            .map(|_| {
                let wake = Notifier::new();
                let (host, adapter) = queue_pair(
                    config.submission_entries,
                    config.completion_entries,
                    Notifier::new(),
                    wake.clone(),
                );
                Mutex::new(QueuePairSlot {
                    host: Some(host),
                    idle: Some(adapter),
                    engine: None,
                    config: None,
                    wake,
                })
            })
            .collect();
        Arc::new(IndependentModel {
            config,
            caps,
            faults: Faults::new(),
            cpu: CpuMeter::new(),
            queue_pairs,
        })
    }

    /// The fault hooks.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    fn slot(&self, index: usize) -> Result<MutexGuard<'_, QueuePairSlot>, AdapterError> {
        slots::lock(&self.queue_pairs, index)
    }

    /// Stops the engine (joined) and takes back the queue and the buffers it held.
    fn stop_engine(&self, slot: &mut QueuePairSlot) -> Vec<(u64, Vec<u8>)> {
        let Some(engine) = slot.engine.take() else {
            return Vec::new();
        };
        engine.stop.store(true, Ordering::SeqCst);
        slot.wake.wake();
        let buffers = match engine.handle.join() {
            Ok(exit) => {
                slot.idle = Some(exit.queue);
                exit.buffers
            }
            Err(_) => Vec::new(),
        };
        self.faults.clear_stall();
        buffers
    }

    /// Starts the engine with the stored configuration and waits for its first login.
    fn start_engine(
        &self,
        index: usize,
        slot: &mut QueuePairSlot,
    ) -> Result<LoginReport, AdapterError> {
        let config = slot
            .config
            .clone()
            .ok_or(AdapterError::NotConfigured(index))?;
        let queue = slot.idle.take().ok_or(AdapterError::EngineStopped {
            index,
            reason: "the queue pair was lost when an engine panicked".into(),
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let (login_tx, login_rx) = crossbeam_channel::bounded(1);
        let processor = Processor {
            index,
            max_pdu_bytes: self.caps.max_pdu_bytes,
            isid: random_isid(),
            config: config.clone(),
            queue,
            faults: self.faults.clone(),
            cpu: self.cpu.clone(),
            stop: stop.clone(),
            wake: slot.wake.clone(),
            connection: None,
            session: None,
            batch: SendBatch::default(),
            tasks: HashMap::new(),
            resend: VecDeque::new(),
            fault: None,
            relogin_at: None,
            route: PortalRoute::new(config.portal),
            rejoining: false,
            draining: None,
            moving: false,
            joining: None,
        };
        let handle = std::thread::Builder::new()
            .name(format!("indep{index}"))
            .spawn(move || processor.run(login_tx))
            .map_err(|e| AdapterError::EngineStopped {
                index,
                reason: format!("spawning the engine: {e}"),
            })?;
        slot.engine = Some(Engine { stop, handle });
        let wait = config.connect_timeout + config.login_timeout + Duration::from_secs(2);
        let result = login_rx.recv_timeout(wait).unwrap_or_else(|_| {
            Err(AdapterError::Login {
                portal: config.portal,
                reason: "no login result from the engine in time".into(),
            })
        });
        if result.is_err() {
            self.stop_engine(slot);
        }
        result
    }
}

impl IndependentAdapter for IndependentModel {
    fn info(&self) -> AdapterInfo {
        AdapterInfo {
            name: self.config.name.clone(),
            kind: TransportKind::Independent,
            capabilities: self.caps,
        }
    }

    fn cpu_time(&self) -> Duration {
        self.cpu.total()
    }

    fn take_queue_pair(&self, index: usize) -> Result<IndependentHostQueue, AdapterError> {
        self.slot(index)?
            .host
            .take()
            .ok_or(AdapterError::QueuePairTaken(index))
    }

    fn configure(
        &self,
        index: usize,
        config: &IndependentConfig,
    ) -> Result<LoginReport, AdapterError> {
        let mut slot = self.slot(index)?;
        self.stop_engine(&mut slot);
        slot.config = Some(config.clone());
        self.start_engine(index, &mut slot)
    }

    fn reset_queue_pair(&self, index: usize) -> Result<ResetReport, AdapterError> {
        let mut slot = self.slot(index)?;
        let buffers = self.stop_engine(&mut slot);
        let relogin = self.start_engine(index, &mut slot);
        Ok(ResetReport { buffers, relogin })
    }

    fn stop_queue_pair(&self, index: usize) -> Result<Vec<(u64, Vec<u8>)>, AdapterError> {
        let mut slot = self.slot(index)?;
        Ok(self.stop_engine(&mut slot))
    }

    fn return_queue_pair(&self, index: usize, mut host: IndependentHostQueue) {
        let Ok(mut slot) = self.slot(index) else {
            return;
        };
        self.stop_engine(&mut slot);
        host.completions.discard_all();
        slot.host = Some(host);
    }
}

impl Drop for IndependentModel {
    fn drop(&mut self) {
        for index in 0..self.queue_pairs.len() {
            if let Ok(mut slot) = self.slot(index) {
                self.stop_engine(&mut slot);
            }
        }
    }
}

/// What the receive thread hands the processor.
enum RxItem {
    Pdu(Header, Vec<u8>),
    Fault(AdapterFault),
}

/// One TCP connection and its receive thread.
struct Connection {
    stream: TcpStream,
    received: Consumer<RxItem>,
    params: Sender<ConnectionParams>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The processor of one queue pair: owns the session.
struct Processor {
    index: usize,
    max_pdu_bytes: u32,
    isid: pdu::Isid,
    config: IndependentConfig,
    queue: IndependentAdapterQueue,
    faults: Faults,
    cpu: CpuMeter,
    stop: Arc<AtomicBool>,
    wake: Arc<Notifier>,
    connection: Option<Connection>,
    session: Option<Session>,
    /// The session's PDUs framed for one gathered write (`datapath::conn`).
    batch: SendBatch,
    /// The host's tag of each command in the session, and the command to send again.
    tasks: HashMap<TaskId, Sent>,
    /// Commands a moved session still held at the target's Parameter3, to send again on
    /// the current session ahead of the submission ring.
    resend: VecDeque<Request>,
    /// The fault that failed the current session, if one did.
    fault: Option<AdapterFault>,
    /// When to log in again after a failed connection.
    relogin_at: Option<Instant>,
    /// Where logins start: the configured portal, or where a permanent redirect moved it
    /// (`datapath`'s redirect rules, the same the host paths follow).
    route: PortalRoute,
    /// The target asked this connection to go (Async Message event 1, 2 or 3): commands
    /// wait in the submission ring for the next login instead of failing.
    rejoining: bool,
    /// The session an Async Message event 1 moved away from: it completes what it holds
    /// and logs out while new commands go to the session that replaced it.
    draining: Option<Drained>,
    /// The draining session is the one in `connection`, `session` and `tasks` for this
    /// part of the turn (see [`Processor::drive_draining`]).
    moving: bool,
    /// A move's new session connecting and logging in, turn by turn, while the current
    /// one goes on carrying I/O ([`Processor::drive_joining`]).
    joining: Option<Joining>,
}

/// One session's connection, commands and fault: the current one lives in the
/// processor's fields; a draining or joining one is swapped in for its part of a turn.
#[derive(Default)]
struct SessionSlot {
    connection: Option<Connection>,
    session: Option<Session>,
    tasks: HashMap<TaskId, Sent>,
    fault: Option<AdapterFault>,
}

/// A move's new session (make before break): connecting without blocking (a probe the
/// processor looks at each turn), then logging in, one step per turn, following
/// redirects, until it is in (it becomes current and the old one drains), fails or
/// passes its deadline (the old one leaves: break before make).
struct Joining {
    slot: SessionSlot,
    attempt: RouteAttempt,
    isid: pdu::Isid,
    /// The connect under way, to the attempt's portal.
    probe: Option<ReachProbe>,
    local_addr: Option<std::net::SocketAddr>,
    /// In by then, or given up: the earlier of the login timeout and Parameter3.
    deadline: Instant,
    started: Instant,
    within_secs: u16,
    time2wait: u16,
}

/// Where a move's new session is after a step.
enum JoinStep {
    Pending,
    Up(LoginReport),
    Failed(String),
}

/// A command in a session: the host's tag, and the command without its buffer, sent again
/// if a move cuts its session at Parameter3.
struct Sent {
    tag: u64,
    template: Request,
}

impl Sent {
    fn of(request: &Request) -> Sent {
        Sent {
            tag: request.user_data,
            template: Request {
                lun: request.lun,
                cdb: request.cdb.clone(),
                direction: request.direction,
                buffer: Vec::new(),
                attribute: request.attribute,
                user_data: request.user_data,
            },
        }
    }
}

/// A session left by a move (make before break), with its own connection and commands.
struct Drained {
    slot: SessionSlot,
    /// The target's Parameter3: out by then.
    deadline: Instant,
    logging_out: bool,
}

/// How long a moved session's logout may take past the target's deadline.
const RETIRE_GRACE: Duration = Duration::from_secs(2);
/// The longest sleep while a moved session drains (its deadline is watched).
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// How one login at one portal ended.
enum LoginHop {
    Up(LoginReport),
    Redirected(TargetAddress, RedirectKind),
}

impl Processor {
    fn run(mut self, login_result: Sender<Result<LoginReport, AdapterError>>) -> EngineExit {
        let mut clock = self.cpu.thread_clock();
        let first = self.login();
        let logged_in = first.is_ok();
        let _ = login_result.send(first);
        if logged_in {
            while !self.stop.load(Ordering::SeqCst) {
                let now = Instant::now();
                let posted = self.turn(now);
                if posted > 0 {
                    clock.charge();
                    self.announce();
                }
                self.sleep(now);
            }
        }
        clock.charge();
        self.shut_down()
    }

    /// Rings the completion doorbell unless the stall fault holds it.
    fn announce(&self) {
        if !self.faults.doorbell_stalled() {
            self.queue.completions.ring_doorbell();
        }
    }

    fn logged_in(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| s.state() == SessionState::FullFeature)
    }

    /// Sleeps until a ring has work for this thread, a timer is due or a stop comes.
    fn sleep(&self, now: Instant) {
        let mut timeout = IDLE_WAIT;
        if let Some(deadline) = self.session.as_ref().and_then(Session::poll_timeout) {
            timeout = timeout.min(deadline.saturating_duration_since(now));
        }
        if let Some(at) = self.relogin_at {
            timeout = timeout.min(at.saturating_duration_since(now));
        }
        let room = self.tasks.len() < self.config.queue_depth.max(1);
        let logged_in = self.logged_in();
        let submissions = &self.queue.submissions;
        let received = self.connection.as_ref().map(|c| &c.received);
        // A draining session's receive ring wakes the same notifier.
        let drained = self
            .draining
            .as_ref()
            .and_then(|d| d.slot.connection.as_ref())
            .map(|c| &c.received);
        // So is a joining one's; its connect is looked at every DRAIN_POLL.
        let joined = self
            .joining
            .as_ref()
            .and_then(|j| j.slot.connection.as_ref())
            .map(|c| &c.received);
        if self.draining.is_some() || self.joining.is_some() {
            timeout = timeout.min(DRAIN_POLL);
        }
        if logged_in && room && !self.resend.is_empty() {
            return;
        }
        self.wake.wait_until(timeout, || {
            (room && logged_in && submissions.announced() > 0)
                || received.is_some_and(|r| r.announced() > 0)
                || drained.is_some_and(|r| r.announced() > 0)
                || joined.is_some_and(|r| r.announced() > 0)
        });
    }

    /// One turn: submissions, received PDUs, timers, events, transmits. Returns the
    /// completions posted.
    fn turn(&mut self, now: Instant) -> usize {
        self.drive_joining(now);
        self.drive_draining(now) + self.turn_current(now)
    }

    /// Swaps another session's connection, session and commands with the current ones
    /// (twice: in, then back).
    fn swap_session(&mut self, other: &mut SessionSlot) {
        std::mem::swap(&mut self.connection, &mut other.connection);
        std::mem::swap(&mut self.session, &mut other.session);
        std::mem::swap(&mut self.tasks, &mut other.tasks);
        std::mem::swap(&mut self.fault, &mut other.fault);
    }

    /// Async Message event 1, make before break: a new session (new ISID, from the
    /// route's start, so an array places it) connects and logs in on a second connection
    /// while this one goes on carrying I/O ([`Processor::drive_joining`], a step per
    /// turn: the processor never blocks on it); once it is in, new commands go to it, and
    /// the old one drains and logs out before `within_secs`. If the new login fails, the
    /// old session logs out once its commands are done and the adapter logs in again after
    /// Time2Wait (break before make).
    fn start_move(&mut self, within_secs: u16, time2wait: u16) {
        let now = Instant::now();
        if self.draining.is_some() || self.joining.is_some() || self.moving {
            // One move at a time.
            self.leave(time2wait);
            return;
        }
        let within = Duration::from_secs(u64::from(within_secs.max(1)));
        let attempt = self.route.begin();
        match ReachProbe::start(attempt.portal(), self.config.connect_timeout) {
            Ok(probe) => {
                self.joining = Some(Joining {
                    slot: SessionSlot::default(),
                    attempt,
                    isid: random_isid(),
                    probe: Some(probe),
                    local_addr: None,
                    deadline: now + self.config.login_timeout.min(within),
                    started: now,
                    within_secs,
                    time2wait,
                });
            }
            Err(error) => {
                tracing::warn!(queue_pair = self.index, %error, "independent model: the new session of a move did not start; leaving, then logging in again");
                self.leave(time2wait);
            }
        }
    }

    /// One step of a move's new session, if any (see [`Processor::start_move`]).
    fn drive_joining(&mut self, now: Instant) {
        let Some(mut joining) = self.joining.take() else {
            return;
        };
        match self.step_joining(&mut joining, now) {
            JoinStep::Pending => self.joining = Some(joining),
            JoinStep::Up(report) => {
                self.route.logged_in(&joining.attempt);
                let mut old = Drained {
                    slot: SessionSlot::default(),
                    deadline: joining.started
                        + Duration::from_secs(u64::from(joining.within_secs.max(1))),
                    logging_out: false,
                };
                self.swap_session(&mut old.slot);
                self.swap_session(&mut joining.slot);
                self.isid = joining.isid;
                tracing::info!(
                    queue_pair = self.index,
                    tsih = report.tsih,
                    login_ms = joining.started.elapsed().as_millis() as u64,
                    "independent model: moved at the target's request; the old session drains"
                );
                self.draining = Some(old);
            }
            JoinStep::Failed(reason) => {
                tracing::warn!(queue_pair = self.index, %reason, "independent model: the new session of a move failed; leaving, then logging in again");
                let time2wait = joining.time2wait;
                // Dropped: its connection closes, its receive thread is joined.
                drop(joining);
                self.leave(time2wait);
            }
        }
    }

    /// Connects (once the probe says the portal accepted) and logs in, a step at a time,
    /// following redirects (bounded by the route's hop limit and the deadline).
    fn step_joining(&mut self, joining: &mut Joining, now: Instant) -> JoinStep {
        if now >= joining.deadline {
            return JoinStep::Failed("not logged in by its deadline".into());
        }
        if let Some(probe) = &joining.probe {
            let portal = joining.attempt.portal();
            match probe.poll(now) {
                Reach::Pending => return JoinStep::Pending,
                Reach::Unreachable(error) => {
                    return JoinStep::Failed(format!("connecting to {portal}: {error}"))
                }
                Reach::Reachable => {}
            }
            let Some(probe) = joining.probe.take() else {
                return JoinStep::Pending;
            };
            let opened = net::stream_of(probe.into_socket(), self.config.liveness.tcp_user_timeout)
                .map_err(|e| AdapterError::Connect {
                    portal,
                    reason: e.to_string(),
                })
                .and_then(|stream| {
                    self.swap_session(&mut joining.slot);
                    let opened = self.open_login(stream, portal, joining.isid, now);
                    self.swap_session(&mut joining.slot);
                    opened
                });
            match opened {
                Ok(local_addr) => joining.local_addr = Some(local_addr),
                Err(error) => return JoinStep::Failed(error.to_string()),
            }
        }
        self.swap_session(&mut joining.slot);
        let step = self.step_login(now, joining.local_addr);
        self.swap_session(&mut joining.slot);
        match step {
            None => JoinStep::Pending,
            Some(Ok(LoginHop::Up(report))) => JoinStep::Up(report),
            Some(Ok(LoginHop::Redirected(address, kind))) => {
                joining.slot = SessionSlot::default();
                let followed = resolve_target_address(&address)
                    .and_then(|to| joining.attempt.follow(to, kind));
                if let Err(error) = followed {
                    return JoinStep::Failed(format!("login redirection: {error}"));
                }
                match ReachProbe::start(joining.attempt.portal(), self.config.connect_timeout) {
                    Ok(probe) => {
                        joining.probe = Some(probe);
                        JoinStep::Pending
                    }
                    Err(error) => JoinStep::Failed(error.to_string()),
                }
            }
            Some(Err(reason)) => JoinStep::Failed(reason),
        }
    }

    /// Break before make: the session logs out once its commands are done (it holds the
    /// Logout Request until then) and the adapter logs in again after `time2wait`.
    fn leave(&mut self, time2wait: u16) {
        if let Some(session) = &mut self.session {
            session.logout(Instant::now());
        }
        self.rejoin_after(time2wait);
    }

    /// One turn of the draining session, if any: its answers are posted, it logs out once
    /// it holds nothing (or fails what it holds past the deadline), and it goes once out.
    fn drive_draining(&mut self, now: Instant) -> usize {
        let Some(mut drained) = self.draining.take() else {
            return 0;
        };
        self.swap_session(&mut drained.slot);
        self.moving = true;
        self.take_received(now);
        if let Some(session) = &mut self.session {
            if session.poll_timeout().is_some_and(|d| now >= d) {
                session.handle_timeout(now);
            }
        }
        let mut posted = self.handle_events();
        if !drained.logging_out {
            if let Some(session) = &mut self.session {
                if self.tasks.is_empty() {
                    drained.logging_out = true;
                    session.logout(now);
                } else if now >= drained.deadline {
                    drained.logging_out = true;
                    session.handle_connection_lost(
                        now,
                        "did not drain within the target's logout deadline".into(),
                    );
                }
            }
        }
        self.flush(now);
        posted += self.handle_events();
        let over = self
            .session
            .as_ref()
            .is_none_or(|s| matches!(s.state(), SessionState::Closed | SessionState::Failed))
            || now >= drained.deadline + RETIRE_GRACE;
        self.moving = false;
        self.swap_session(&mut drained.slot);
        if over {
            tracing::info!(
                queue_pair = self.index,
                "independent model: the moved session is out"
            );
            // Its connection closes and its receive thread is joined here.
            drop(drained);
        } else {
            self.draining = Some(drained);
        }
        if posted > 0 {
            self.announce();
        }
        posted
    }

    fn turn_current(&mut self, now: Instant) -> usize {
        if self.session.is_none() {
            if self.relogin_at.is_some_and(|at| now >= at) {
                self.relogin_at = None;
                match self.login() {
                    // Submissions wait in the ring for the next turn.
                    Ok(_) => return 0,
                    Err(error) => {
                        tracing::warn!(queue_pair = self.index, %error, "independent model: login again failed");
                        self.relogin_at = Some(now + RELOGIN_BACKOFF);
                        self.rejoining = false;
                    }
                }
            }
            if self.rejoining {
                return 0;
            }
            return self.fail_submissions_while_down();
        }
        let mut posted = self.take_submissions(now);
        self.take_received(now);
        if let Some(session) = &mut self.session {
            if session
                .poll_timeout()
                .is_some_and(|deadline| now >= deadline)
            {
                session.handle_timeout(now);
            }
        }
        posted += self.handle_events();
        // Announce before a send that may block, so the host never sees completions
        // written and unannounced for long (that is what a stalled doorbell looks like).
        if posted > 0 {
            self.announce();
        }
        self.flush(now);
        posted += self.handle_events();
        if self
            .session
            .as_ref()
            .is_some_and(|s| matches!(s.state(), SessionState::Failed | SessionState::Closed))
        {
            // Everything in flight has ended (and been posted); start over, after the
            // Time2Wait the target asked for, if it asked us to go.
            self.connection = None;
            self.session = None;
            self.fault = None;
            self.relogin_at = Some(self.relogin_at.map_or(now, |at| at.max(now)));
        }
        posted
    }

    /// While the adapter is not logged in, commands fail at once with the reason.
    fn fail_submissions_while_down(&mut self) -> usize {
        let mut posted = 0;
        for _ in 0..MAX_PER_TURN {
            let Some(entry) = self.queue.submissions.poll() else {
                break;
            };
            let index = self.queue.submissions.consumed().saturating_sub(1);
            self.queue.submissions.retire_through(index);
            let failure = PathFailure {
                error: PathError::Unavailable("adapter not logged in to its target".into()),
                buffer: entry.buffer,
            };
            posted += usize::from(self.post(entry.user_data, Err(failure)));
        }
        posted
    }

    fn post(
        &mut self,
        tag: u64,
        result: Result<datapath::session::CommandOutcome, PathFailure>,
    ) -> bool {
        self.post_entry(IndependentCompletion::Command(ScsiCompletion {
            tag,
            result,
        }))
    }

    fn post_entry(&mut self, entry: IndependentCompletion) -> bool {
        let faults = self.faults.clone();
        post_waiting(
            &self.queue.completions,
            entry,
            || self.stop.load(Ordering::SeqCst),
            || !faults.doorbell_stalled(),
        )
    }

    /// Tells the host the session is lost (after the commands it failed), whether or not
    /// any were in flight: the adapter logs in again by itself, and without this an idle
    /// host would never see the loss (issue 14: multipath's view of path state).
    fn report_session_lost(&mut self, error: &SessionError) -> usize {
        let fault = self
            .fault
            .clone()
            .unwrap_or_else(|| AdapterFault::ConnectionLost(error.to_string()));
        let time2wait = match error {
            SessionError::TargetDroppedConnection { time2wait, .. } => {
                Some(Duration::from_secs(u64::from(*time2wait)))
            }
            _ => None,
        };
        let loss = SessionLoss { fault, time2wait };
        usize::from(self.post_entry(IndependentCompletion::SessionLost(loss)))
    }

    /// Sends again, ahead of new ones, what a move's cut handed back (bounded: at most a
    /// session's worth).
    fn take_resends(&mut self, now: Instant) -> usize {
        let mut posted = 0;
        while self.tasks.len() < self.config.queue_depth.max(1) && self.logged_in() {
            let (Some(request), Some(session)) = (self.resend.pop_front(), &mut self.session)
            else {
                break;
            };
            let sent = Sent::of(&request);
            match session.submit(now, request) {
                Ok(task) => {
                    self.tasks.insert(task, sent);
                }
                Err(refused) => {
                    let failure = PathFailure {
                        error: PathError::Unavailable(format!(
                            "not sent again after a move: {}",
                            refused.reason
                        )),
                        buffer: refused.request.buffer,
                    };
                    posted += usize::from(self.post(sent.tag, Err(failure)));
                }
            }
        }
        posted
    }

    /// Takes SCSI commands from the host while the session has room.
    fn take_submissions(&mut self, now: Instant) -> usize {
        let mut posted = self.take_resends(now);
        if !self.resend.is_empty() {
            return posted;
        }
        for _ in 0..MAX_PER_TURN {
            if self.tasks.len() >= self.config.queue_depth.max(1) || !self.logged_in() {
                break;
            }
            let Some(entry) = self.queue.submissions.poll() else {
                break;
            };
            let index = self.queue.submissions.consumed().saturating_sub(1);
            // Entries own their buffers: nothing of the host's is lent past this point.
            self.queue.submissions.retire_through(index);
            if self.faults.take_reset() {
                let fault = AdapterFault::Reset { injected: true };
                let failure = PathFailure {
                    error: PathError::Adapter(fault.clone()),
                    buffer: entry.buffer,
                };
                posted += usize::from(self.post(entry.user_data, Err(failure)));
                self.fail_connection(now, fault);
                break;
            }
            if self.faults.take_drop() {
                let fault = AdapterFault::DroppedSubmission {
                    index,
                    tag: Some(entry.user_data),
                    injected: true,
                };
                let failure = PathFailure {
                    error: PathError::Adapter(fault),
                    buffer: entry.buffer,
                };
                posted += usize::from(self.post(entry.user_data, Err(failure)));
                continue;
            }
            let Some(session) = &mut self.session else {
                break;
            };
            // The host's tag travels in `user_data`; the session does not read it.
            let tag = entry.user_data;
            let sent = Sent::of(&entry);
            match session.submit(now, entry) {
                Ok(task) => {
                    self.tasks.insert(task, sent);
                }
                Err(refused) => {
                    let failure = PathFailure {
                        error: PathError::Unavailable(refused.reason.to_string()),
                        buffer: refused.request.buffer,
                    };
                    posted += usize::from(self.post(tag, Err(failure)));
                }
            }
        }
        posted
    }

    /// Feeds the session what the receive thread decoded.
    fn take_received(&mut self, now: Instant) {
        for _ in 0..MAX_PER_TURN {
            let Some(connection) = &mut self.connection else {
                return;
            };
            let Some(item) = connection.received.poll() else {
                return;
            };
            match item {
                RxItem::Pdu(header, data) => {
                    let Some(session) = &mut self.session else {
                        return;
                    };
                    let final_login = is_final_login_response(&header);
                    if session.handle_pdu(now, header, &data).is_err() {
                        return;
                    }
                    if final_login && session.state() == SessionState::FullFeature {
                        let params = ConnectionParams {
                            digests: session.digests(),
                            max_recv_data_segment_length: session.max_recv_data_segment_length(),
                        };
                        let _ = connection.params.send_timeout(params, IDLE_WAIT);
                    }
                }
                RxItem::Fault(fault) => {
                    self.fail_connection(now, fault);
                    return;
                }
            }
        }
    }

    /// An adapter fault: the session fails every command with it.
    fn fail_connection(&mut self, now: Instant, fault: AdapterFault) {
        tracing::warn!(queue_pair = self.index, %fault, "independent model: connection fails");
        if self.fault.is_none() {
            self.fault = Some(fault.clone());
        }
        if let Some(session) = &mut self.session {
            session.handle_connection_lost(now, fault.to_string());
        }
    }

    /// Posts finished commands. Returns how many.
    fn handle_events(&mut self) -> usize {
        let mut posted = 0;
        loop {
            let Some(event) = self.session.as_mut().and_then(Session::poll_event) else {
                return posted;
            };
            match event {
                Event::CommandComplete(task, result) => {
                    let Some(Sent { tag, mut template }) = self.tasks.remove(&task) else {
                        continue;
                    };
                    let result = match result {
                        // A moved session lost it (cut at Parameter3, or its connection
                        // failed while it drained): sent again on the current session,
                        // unless it is a write whose data did not come back.
                        Err(failure)
                            if self.moving
                                && matches!(failure.error, CommandError::ConnectionLost(_))
                                && template.direction.can_send_again(&failure.buffer) =>
                        {
                            template.buffer = failure.buffer;
                            self.resend.push_back(template);
                            continue;
                        }
                        result => result,
                    };
                    let result = result.map_err(|failure| PathFailure {
                        error: PathError::from_command(failure.error, self.fault.as_ref()),
                        buffer: failure.buffer,
                    });
                    posted += usize::from(self.post(tag, result));
                }
                Event::ConnectionFailed(error) => {
                    tracing::warn!(queue_pair = self.index, %error, "independent model: session failed");
                    if self.moving {
                        // The draining session: it ends, the current one goes on.
                        continue;
                    }
                    if let SessionError::TargetDroppedConnection { time2wait, .. } = error {
                        // Async Message event 2 or 3: what was in flight has failed upward;
                        // the next login waits Time2Wait.
                        self.rejoin_after(time2wait);
                    }
                    posted += self.report_session_lost(&error);
                }
                Event::AsyncMessage(message) => {
                    tracing::info!(
                        queue_pair = self.index,
                        ?message,
                        "independent model: async message"
                    );
                    // Make before break (`start_move`); the draining session is not
                    // asked twice.
                    if let AsyncEvent::LogoutRequested {
                        time2wait,
                        within_secs,
                    } = message
                    {
                        if !self.moving {
                            self.start_move(within_secs, time2wait);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Writes every PDU the session has queued, framed and digested by `datapath::conn`'s
    /// send batch, a batch per gathered write.
    fn flush(&mut self, now: Instant) {
        let (Some(session), Some(connection)) = (&mut self.session, &mut self.connection) else {
            return;
        };
        let mut failed = None;
        loop {
            match self.batch.fill(session) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    failed = Some(AdapterFault::Framing(e.to_string()));
                    break;
                }
            }
            let mut slices = Vec::with_capacity(self.batch.len() * 3);
            self.batch.slices(session, &mut slices);
            let result = write_all_vectored(&mut connection.stream, &slices);
            drop(slices);
            self.batch.clear();
            if let Err(e) = result {
                failed = Some(AdapterFault::ConnectionLost(format!("send: {e}")));
                break;
            }
        }
        self.batch.clear();
        if let Some(fault) = failed {
            self.fail_connection(now, fault);
        }
    }

    /// The target asked this connection to go: the next login waits `time2wait` seconds
    /// and commands wait for it.
    fn rejoin_after(&mut self, time2wait: u16) {
        self.rejoining = true;
        self.relogin_at = Some(Instant::now() + Duration::from_secs(u64::from(time2wait)));
    }

    /// Logs in from the route's start, following redirects (RFC 7143 section 11.13.5) as
    /// the host paths do: each hop bounded by the timeouts, loops and the hop limit refused
    /// by name.
    fn login(&mut self) -> Result<LoginReport, AdapterError> {
        let mut attempt = self.route.begin();
        loop {
            let portal = attempt.portal();
            match self.login_at(portal)? {
                LoginHop::Up(report) => {
                    self.route.logged_in(&attempt);
                    self.rejoining = false;
                    if attempt.hops() > 0 {
                        tracing::info!(queue_pair = self.index, route = %attempt.chain(), "independent model: logged in after redirection");
                    }
                    return Ok(report);
                }
                LoginHop::Redirected(address, kind) => {
                    let followed =
                        resolve_target_address(&address).and_then(|to| attempt.follow(to, kind));
                    if let Err(error) = followed {
                        return Err(AdapterError::Login {
                            portal,
                            reason: format!("login redirection: {error}"),
                        });
                    }
                    tracing::info!(queue_pair = self.index, from = %portal, to = %address, ?kind, "independent model: login redirected");
                }
            }
        }
    }

    /// Connects to `portal` and logs in there (bounded by the configured timeouts),
    /// blocking this thread: the first login and a login again after a loss (when there
    /// is no session to carry I/O meanwhile). A move's new session logs in without
    /// blocking instead ([`Processor::drive_joining`]), through the same steps.
    fn login_at(&mut self, portal: std::net::SocketAddr) -> Result<LoginHop, AdapterError> {
        self.connection = None;
        self.session = None;
        self.fault = None;
        // Interruptible: a stop (the host ending this queue pair) must not wait for a
        // SYN a cut link leaves unanswered.
        let stop = Arc::clone(&self.stop);
        let stream = net::connect_interruptible(portal, self.config.connect_timeout, || {
            stop.load(Ordering::SeqCst)
        })
        .and_then(|stream| {
            // The host's liveness settings, handed down: a cut link fails the connection.
            net::set_user_timeout(&stream, self.config.liveness.tcp_user_timeout)?;
            Ok(stream)
        })
        .map_err(|e| AdapterError::Connect {
            portal,
            reason: e.to_string(),
        })?;
        let now = Instant::now();
        let local_addr = self.open_login(stream, portal, self.isid, now)?;
        let deadline = now + self.config.login_timeout;
        loop {
            let now = Instant::now();
            match self.step_login(now, Some(local_addr)) {
                Some(Ok(hop)) => return Ok(hop),
                Some(Err(reason)) => return Err(AdapterError::Login { portal, reason }),
                None => {}
            }
            if now >= deadline || self.stop.load(Ordering::SeqCst) {
                self.connection = None;
                self.session = None;
                return Err(AdapterError::Login {
                    portal,
                    reason: "login did not finish in time".into(),
                });
            }
            self.sleep(now);
        }
    }

    /// Starts a login on `stream` (connected to `portal`) as the current session, with
    /// `isid`: its receive thread and a new session. Returns the local address.
    fn open_login(
        &mut self,
        stream: TcpStream,
        portal: std::net::SocketAddr,
        isid: pdu::Isid,
        now: Instant,
    ) -> Result<std::net::SocketAddr, AdapterError> {
        let local_addr = stream.local_addr().map_err(|e| AdapterError::Connect {
            portal,
            reason: e.to_string(),
        })?;
        self.connection = Some(self.spawn_receiver(stream, portal)?);
        self.fault = None;
        let session_config = SessionConfig {
            initiator_name: self.config.initiator_name.clone(),
            initiator_alias: None,
            target_name: Some(self.config.target_name.clone()),
            // The same ISID each time but a move's: a new login reinstates the old
            // session (6.3.5), a move's new one stands beside it.
            isid,
            tsih: 0,
            cid: 0,
            chap: self.config.chap.clone(),
            offer: {
                let mut offer = self.config.offer.clone();
                offer.max_recv_data_segment_length =
                    offer.max_recv_data_segment_length.min(self.max_pdu_bytes);
                offer
            },
            login_timeout: self.config.login_timeout,
            command_timeout: self.config.command_timeout,
            nop_interval: self.config.liveness.ping_interval,
            nop_timeout: self.config.liveness.ping_timeout,
            logout_timeout: self.config.login_timeout,
            max_queued_commands: self.config.queue_depth.max(1),
            max_outstanding_commands: self.config.queue_depth.max(1),
            chap_challenge: random_bytes(16),
            initial_cmd_sn: 1,
        };
        self.session = Some(Session::new(session_config, now));
        Ok(local_addr)
    }

    /// One step of the current session's login without blocking: sends what it queued,
    /// takes what arrived, runs its timer. `None` while it goes on; the hop's end (in,
    /// redirected) or why it failed (the connection and session then dropped).
    fn step_login(
        &mut self,
        now: Instant,
        local_addr: Option<std::net::SocketAddr>,
    ) -> Option<Result<LoginHop, String>> {
        // Send what the session has queued, including the next login request that an
        // answer just taken made, before waiting for the next answer.
        self.flush(now);
        self.take_received(now);
        if let Some(session) = &mut self.session {
            if session.poll_timeout().is_some_and(|d| now >= d) {
                session.handle_timeout(now);
            }
        }
        self.flush(now);
        while let Some(event) = self.session.as_mut().and_then(Session::poll_event) {
            let failure = match event {
                Event::LoginComplete => {
                    let session = self.session.as_ref();
                    let unspecified = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
                    return Some(Ok(LoginHop::Up(LoginReport {
                        local_addr: local_addr.unwrap_or(unspecified),
                        tsih: session.map_or(0, Session::tsih),
                        digests: session.map_or(Digests::default(), Session::digests),
                    })));
                }
                Event::LoginFailed { reason, .. } => reason,
                Event::ConnectionFailed(error) => error.to_string(),
                Event::Redirect { address, kind } => {
                    self.connection = None;
                    self.session = None;
                    return Some(Ok(LoginHop::Redirected(address, kind)));
                }
                _ => continue,
            };
            self.connection = None;
            self.session = None;
            return Some(Err(failure));
        }
        None
    }

    fn spawn_receiver(
        &self,
        stream: TcpStream,
        portal: std::net::SocketAddr,
    ) -> Result<Connection, AdapterError> {
        let io_error = |e: std::io::Error| AdapterError::Connect {
            portal,
            reason: e.to_string(),
        };
        let reader = stream.try_clone().map_err(io_error)?;
        let (posted, received) = datapath::adapter::ring::ring(RX_RING_ENTRIES, self.wake.clone());
        let (params_tx, params_rx) = crossbeam_channel::bounded(1);
        let stop = Arc::new(AtomicBool::new(false));
        let receiver = RxThread {
            stream: reader,
            posted,
            params: params_rx,
            faults: self.faults.clone(),
            stop: stop.clone(),
            cpu: self.cpu.clone(),
            max_pdu_bytes: self.max_pdu_bytes,
        };
        let thread = std::thread::Builder::new()
            .name(format!("indep{}-rx", self.index))
            .spawn(move || receiver.run())
            .map_err(io_error)?;
        Ok(Connection {
            stream,
            received,
            params: params_tx,
            stop,
            thread: Some(thread),
        })
    }

    /// The engine stops: every command it holds fails, and its buffer goes back.
    fn shut_down(mut self) -> EngineExit {
        let now = Instant::now();
        let mut buffers = Vec::new();
        // A session still draining after a move gives its commands back too.
        if let Some(mut drained) = self.draining.take() {
            self.swap_session(&mut drained.slot);
            self.take_back_buffers(now, &mut buffers);
            self.swap_session(&mut drained.slot);
        }
        self.take_back_buffers(now, &mut buffers);
        for entry in self
            .resend
            .drain(..)
            .chain(self.queue.submissions.discard_all())
        {
            buffers.push((entry.user_data, entry.buffer));
        }
        self.connection = None;
        EngineExit {
            queue: self.queue,
            buffers,
        }
    }

    /// Fails the current session and takes back the buffer of every command it held.
    fn take_back_buffers(&mut self, now: Instant, buffers: &mut Vec<(u64, Vec<u8>)>) {
        if let Some(session) = &mut self.session {
            session.handle_connection_lost(now, "adapter queue pair reset by the host".into());
        }
        while let Some(event) = self.session.as_mut().and_then(Session::poll_event) {
            if let Event::CommandComplete(task, result) = event {
                if let Some(Sent { tag, .. }) = self.tasks.remove(&task) {
                    let buffer = match result {
                        Ok(outcome) => outcome.buffer,
                        Err(failure) => failure.buffer,
                    };
                    buffers.push((tag, buffer));
                }
            }
        }
    }
}

fn is_final_login_response(header: &Header) -> bool {
    matches!(header, Header::LoginResponse(r)
        if r.transit && r.next_stage == LoginStage::FullFeaturePhase && r.status_class == 0)
}

/// The receive thread: reads bytes into a [`PduReceiver`] (framing, limits and digests
/// checked), hands each PDU over.
struct RxThread {
    stream: TcpStream,
    posted: Producer<RxItem>,
    params: Receiver<ConnectionParams>,
    faults: Faults,
    stop: Arc<AtomicBool>,
    cpu: CpuMeter,
    max_pdu_bytes: u32,
}

/// Why the receive thread stops between PDUs.
#[derive(Debug)]
enum RxStop {
    /// The model is stopping (or the processor is gone).
    Stopped,
    /// A fault to report (an injected digest corruption).
    Fault(AdapterFault),
}

/// The receiver's sink: the digests and limits in force, and the hand-over.
struct RxSink<'t> {
    thread: &'t RxThread,
    digests: Digests,
    limits: Limits,
}

impl PduSink for RxSink<'_> {
    type Error = RxStop;

    fn digests(&self) -> Digests {
        self.digests
    }

    fn limits(&self) -> Limits {
        self.limits
    }

    /// The model stages every payload: its processor copies into the host's buffer.
    fn destination(&mut self, _: &Header, _: u32) -> Option<&mut [u8]> {
        None
    }

    fn handle_placed(&mut self, _: Header, _: u32) -> Result<(), RxStop> {
        Ok(())
    }

    fn handle_pdu(&mut self, header: Header, data: &[u8]) -> Result<(), RxStop> {
        if let Some(fault) = self.injected_corruption(&header, data) {
            return Err(RxStop::Fault(fault));
        }
        let final_login = is_final_login_response(&header);
        if !self.thread.hand_over(RxItem::Pdu(header, data.to_vec())) {
            return Err(RxStop::Stopped);
        }
        if final_login {
            // Digests and limits change right here in the stream: the receiver asks for
            // them again at the next PDU.
            let params = self.thread.await_params().ok_or(RxStop::Stopped)?;
            self.digests = params.digests;
            self.limits.max_data_segment_length = params
                .max_recv_data_segment_length
                .min(self.thread.max_pdu_bytes);
        }
        Ok(())
    }
}

impl RxSink<'_> {
    /// The corrupt-digest fault: the data digest of the next PDU that carries one (or its
    /// header digest, when data digests are off) arrives with every bit flipped.
    fn injected_corruption(&self, header: &Header, data: &[u8]) -> Option<AdapterFault> {
        let data_digest = self.digests.data && !data.is_empty();
        let header_digest = !self.digests.data && self.digests.header;
        if !(data_digest || header_digest) || !self.thread.faults.take_corrupt_digest() {
            return None;
        }
        let (kind, expected) = if data_digest {
            (DigestKind::Data, digest::data_digest(data))
        } else {
            let expected = pdu::header_digest_of(header, data.len() as u32).ok()?;
            (DigestKind::Header, expected)
        };
        Some(AdapterFault::DigestMismatch {
            kind,
            opcode: Some(header.opcode()),
            tag: header.initiator_task_tag().map(u64::from),
            expected,
            found: !expected,
            injected: true,
        })
    }
}

impl RxThread {
    fn run(self) {
        let mut clock = self.cpu.thread_clock();
        let mut receiver = PduReceiver::new();
        let mut sink = RxSink {
            thread: &self,
            digests: Digests::default(),
            limits: Limits::login(),
        };
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match (&self.stream).read(&mut buf) {
                Ok(0) => {
                    self.hand_over(RxItem::Fault(AdapterFault::ConnectionLost(
                        "the target closed the connection".into(),
                    )));
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.hand_over(RxItem::Fault(AdapterFault::ConnectionLost(format!(
                        "receive: {e}"
                    ))));
                    return;
                }
            };
            let received = receiver.handle_bytes(&mut sink, &buf[..n]);
            clock.charge();
            match received {
                Ok(()) => {}
                Err(ReceiveError::Sink(RxStop::Stopped)) => return,
                Err(ReceiveError::Sink(RxStop::Fault(fault))) => {
                    self.hand_over(RxItem::Fault(fault));
                    return;
                }
                Err(ReceiveError::Pdu(error)) => {
                    self.hand_over(RxItem::Fault(decode_fault(error)));
                    return;
                }
                Err(other) => {
                    let fault = AdapterFault::Framing(format!("receive: {other:?}"));
                    self.hand_over(RxItem::Fault(fault));
                    return;
                }
            }
        }
    }

    /// The processor's connection parameters after the final Login Response; `None` when
    /// stopping or after 30 s.
    fn await_params(&self) -> Option<ConnectionParams> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && !self.stop.load(Ordering::SeqCst) {
            match self.params.recv_timeout(IDLE_WAIT) {
                Ok(params) => return Some(params),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return None,
            }
        }
        None
    }

    /// Posts to the processor and rings its doorbell; false when stopping.
    fn hand_over(&self, item: RxItem) -> bool {
        let posted = post_waiting(
            &self.posted,
            item,
            || self.stop.load(Ordering::SeqCst),
            || true,
        );
        self.posted.ring_doorbell();
        posted && !self.stop.load(Ordering::SeqCst)
    }
}

/// Names a decoding failure.
fn decode_fault(error: PduError) -> AdapterFault {
    match error {
        PduError::DataDigestMismatch { expected, found } => AdapterFault::DigestMismatch {
            kind: DigestKind::Data,
            opcode: None,
            tag: None,
            expected,
            found,
            injected: false,
        },
        PduError::HeaderDigestMismatch { expected, found } => AdapterFault::DigestMismatch {
            kind: DigestKind::Header,
            opcode: None,
            tag: None,
            expected,
            found,
            injected: false,
        },
        other => AdapterFault::Framing(other.to_string()),
    }
}
