//! A blocking client over any path: the convenience layer for `iscsi-ctl` and tests.
//!
//! - Over software TCP ([`Client::connect`]): one sans-IO [`Session`] driven over one
//!   io_uring [`TcpConnection`], the I/O glue around one [`Conn`] (framing, placement and
//!   digests live there) in a simple loop on the calling thread. Payload goes to the
//!   socket straight from the command's buffer, and the payload of a Data-In the session
//!   can place is received straight into the command's buffer. Discovery
//!   ([`Client::discover`]) always runs here.
//! - Over an offload adapter ([`Client::connect_path`]): a one-shard [`ShardPool`] whose
//!   [`ShardConfig::path`] is the adapter, behind the same calls.
//!
//! [`Client::execute_batch`] is the one pipelined loop over either (libiscsi's `sync.c`
//! model: a thin loop over the asynchronous carrier, never a second implementation).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::adapter::PathError;
use crate::conn::{Conn, ConnError};
use crate::pdu;
use crate::scsi::probe::{ScsiAnswer, ScsiExecute};
use crate::scsi::{Cdb, DataDirection as CdbDirection, Lun};
pub use crate::session::connect::{
    default_initiator_name, random_bytes, random_isid, ClientConfig,
};
use crate::session::redirect::{PortalRoute, RedirectKind, TargetAddress};
use crate::session::{
    AsyncEvent, CommandError, CommandOutcome, DiscoveredTarget, Event, Request, Session,
    SessionError, SessionState, SubmitRejection, TaskId, TaskManagementFunction,
    TaskManagementOutcome,
};
use crate::shard::{MultipathConfig, PathStatus, ShardConfig, ShardError, ShardPath, ShardPool};
use crate::text::OperationalParams;
use crate::transport::{resolve_target_address, TcpConnection, TransportError};

/// Why a client call failed. Each variant names the layer and the fact.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("connecting to {portal}: {source}")]
    Connect {
        portal: SocketAddr,
        source: TransportError,
    },
    #[error("connection to {portal}: {source}")]
    Transport {
        portal: SocketAddr,
        source: TransportError,
    },
    #[error("login to {portal} failed: {reason}")]
    LoginFailed {
        portal: SocketAddr,
        status_class: u8,
        status_detail: u8,
        reason: String,
    },
    /// A redirection (status class 1) that cannot be followed: a loop, the hop limit, an
    /// address that does not resolve. `portal` is where the login started.
    #[error("login at {portal}: {source}")]
    Redirect {
        portal: SocketAddr,
        source: crate::session::redirect::RedirectError,
    },
    #[error("malformed PDU from {portal}: {source}")]
    Pdu {
        portal: SocketAddr,
        source: pdu::PduError,
    },
    #[error("session with {portal}: {source}")]
    Session {
        portal: SocketAddr,
        source: SessionError,
    },
    #[error("command failed: {0}")]
    Command(CommandError),
    /// An adapter path failed the command (an adapter fault, which names itself).
    #[error("command failed on the adapter path: {0}")]
    Path(PathError),
    #[error("the session could not accept the command: {0}")]
    Submit(String),
    #[error("the session closed before {0}")]
    Closed(&'static str),
    /// The one-shard pool of an adapter path failed to start, stopped, or did not answer.
    #[error("{path} path: {source}")]
    Shard {
        path: &'static str,
        source: ShardError,
    },
}

/// A logged-in session, driven on the caller's thread, over the path it was opened on.
pub struct Client {
    portal: SocketAddr,
    queue_depth: usize,
    carrier: Carrier,
}

/// What carries the client's commands.
enum Carrier {
    /// The client's own session over kernel TCP.
    Software(Box<Connection>),
    /// One shard driving queue pair 0 of an offload adapter.
    Shard {
        pool: ShardPool,
        path: &'static str,
        command_timeout: Duration,
    },
}

/// The software path: one session on one TCP connection.
struct Connection {
    portal: SocketAddr,
    /// How long a task management function may wait for its answer.
    command_timeout: Duration,
    socket: TcpConnection,
    driver: Conn,
    /// Bytes received before the receiver said where they go.
    rx: Vec<u8>,
    events: VecDeque<Event>,
    /// The commands of the running batch in the session, with their `user_data`.
    tasks: Vec<(TaskId, u64)>,
}

/// How one login attempt ended.
enum Login {
    Complete(Box<Connection>),
    Redirected {
        address: TargetAddress,
        kind: RedirectKind,
    },
}

/// Why a carrier (or [`Client::submit`]) did not take a command.
pub enum Refused {
    /// It has no room now: the command comes back to wait for a completion.
    Full(Request),
    /// It refused the command itself (the command fails alone).
    Failed(ClientError),
}

impl Client {
    /// Connects and logs in to `config.target_name` (or a discovery session when `None`)
    /// over software TCP.
    /// A redirect is followed (up to the hop limit of [`PortalRoute`]); [`Client::portal`]
    /// is then the portal that took the login.
    pub fn connect(config: &ClientConfig) -> Result<Client, ClientError> {
        let connection = Connection::connect(config)?;
        Ok(Client {
            portal: connection.portal,
            queue_depth: config.queue_depth.max(1),
            carrier: Carrier::Software(Box::new(connection)),
        })
    }

    /// Logs in to `config.target_name` over `path`: software TCP as [`Client::connect`],
    /// or an offload adapter (queue pair 0) driven by a one-shard [`ShardPool`].
    pub fn connect_path(config: &ClientConfig, path: ShardPath) -> Result<Client, ClientError> {
        if matches!(path, ShardPath::Software) {
            return Client::connect(config);
        }
        let name = path.name();
        let shard_config = ShardConfig {
            queue_depth: config.queue_depth.max(1),
            path,
            ..ShardConfig::default()
        };
        let pool = ShardPool::start(config, 1, &shard_config)
            .map_err(|source| ClientError::Shard { path: name, source })?;
        Ok(Client {
            portal: config.portal,
            queue_depth: config.queue_depth.max(1),
            carrier: Carrier::Shard {
                pool,
                path: name,
                command_timeout: config.command_timeout,
            },
        })
    }

    /// Logs in to `config.target_name` through every portal of `multipath` (software TCP):
    /// one shard whose paths each reach the same LU, commands spread by the policy and
    /// reissued on another path when one is lost ([`crate::shard::MultipathConfig`]).
    /// [`Client::path_statuses`] tells which path carried what.
    pub fn connect_multipath(
        config: &ClientConfig,
        multipath: MultipathConfig,
    ) -> Result<Client, ClientError> {
        Client::connect_multipath_over(config, multipath, ShardPath::Software)
    }

    /// [`Client::connect_multipath`] with each path carried by `path`: software TCP, or
    /// queue pairs of an adapter (two per path: see
    /// [`queue_pairs_needed`](crate::shard::queue_pairs_needed)).
    pub fn connect_multipath_over(
        config: &ClientConfig,
        multipath: MultipathConfig,
        path: ShardPath,
    ) -> Result<Client, ClientError> {
        let shard_config = ShardConfig {
            queue_depth: config.queue_depth.max(1),
            multipath: Some(multipath),
            path,
            ..ShardConfig::default()
        };
        let pool =
            ShardPool::start(config, 1, &shard_config).map_err(|source| ClientError::Shard {
                path: "multipath",
                source,
            })?;
        Ok(Client {
            portal: config.portal,
            queue_depth: config.queue_depth.max(1),
            carrier: Carrier::Shard {
                pool,
                path: "multipath",
                command_timeout: config.command_timeout,
            },
        })
    }

    /// Each path's state and I/O count on a multipath client ([`Client::connect_multipath`]);
    /// empty otherwise. The shard publishes them a tenth of a second apart, so this waits
    /// (a second at most) until they count every command the client has completed.
    pub fn path_statuses(&self) -> Vec<PathStatus> {
        let Carrier::Shard { pool, .. } = &self.carrier else {
            return Vec::new();
        };
        let completed = pool.stats(0).map_or(0, |stats| stats.ios);
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let statuses = pool.path_statuses(0);
            let counted: u64 = statuses.iter().map(|path| path.ios).sum();
            if counted >= completed || Instant::now() >= deadline {
                return statuses;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Opens a discovery session, asks for SendTargets=All, logs out.
    pub fn discover(config: &ClientConfig) -> Result<Vec<DiscoveredTarget>, ClientError> {
        let mut config = config.clone();
        config.target_name = None;
        let mut connection = Connection::connect(&config)?;
        let portal = connection.portal;
        connection
            .driver
            .session_mut()
            .send_targets(Instant::now())
            .map_err(|source| ClientError::Session { portal, source })?;
        connection.pump_until("the SendTargets response", |e| {
            matches!(e, Event::TargetsDiscovered(_))
        })?;
        let targets = match connection.events.pop_back() {
            Some(Event::TargetsDiscovered(targets)) => targets,
            _ => return Err(ClientError::Closed("the SendTargets response")),
        };
        connection.logout()?;
        Ok(targets)
    }

    /// Every portal SendTargets lists for `config.target_name` (discovery at
    /// `config.portal`), resolved: the paths a multipath shard can use
    /// ([`crate::shard::MultipathConfig::portals`]). An address that does not resolve is
    /// left out with a warning.
    pub fn target_portals(config: &ClientConfig) -> Result<Vec<SocketAddr>, ClientError> {
        let Some(name) = config.target_name.as_deref() else {
            return Err(ClientError::Submit(
                "target_portals needs a target name".to_string(),
            ));
        };
        let mut portals = Vec::new();
        for target in Client::discover(config)? {
            if target.name != name {
                continue;
            }
            for (address, _tag) in &target.addresses {
                match TargetAddress::parse(address).and_then(|a| resolve_target_address(&a)) {
                    Ok(portal) if !portals.contains(&portal) => portals.push(portal),
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%address, %error, "portal left out"),
                }
            }
        }
        Ok(portals)
    }

    pub fn portal(&self) -> SocketAddr {
        self.portal
    }

    /// The Async Messages the target sent since the last call (software path; event 0
    /// carries its sense, e.g. 3Fh/0Eh REPORTED LUNS DATA HAS CHANGED). An adapter path's
    /// shard counts them in its statistics instead.
    pub fn take_async_events(&mut self) -> Vec<AsyncEvent> {
        let Carrier::Software(connection) = &mut self.carrier else {
            return Vec::new();
        };
        let mut taken = Vec::new();
        connection.events.retain(|event| match event {
            Event::AsyncMessage(message) => {
                taken.push(message.clone());
                false
            }
            _ => true,
        });
        taken
    }

    /// `software`, `dependent` or `independent`.
    pub fn path_name(&self) -> &'static str {
        match &self.carrier {
            Carrier::Software(_) => ShardPath::Software.name(),
            Carrier::Shard { path, .. } => path,
        }
    }

    /// The operational parameters both sides agreed on at login (software path only: an
    /// adapter path's session lives on its shard or in the adapter).
    pub fn params(&self) -> Option<&OperationalParams> {
        self.session()?.params()
    }

    /// The session (software path only).
    pub fn session(&self) -> Option<&Session> {
        match &self.carrier {
            Carrier::Software(connection) => Some(connection.driver.session()),
            Carrier::Shard { .. } => None,
        }
    }

    /// The receiver's counters (software path only): payload placed straight from the
    /// socket, payload copied into its placement from the client's own buffer, payload
    /// staged.
    pub fn receive_stats(&self) -> Option<crate::conn::ReceiveStats> {
        match &self.carrier {
            Carrier::Software(connection) => Some(connection.driver.receive_stats()),
            Carrier::Shard { .. } => None,
        }
    }

    /// Runs one SCSI command to completion. The request's buffer is lent to the command:
    /// read data lands in it, write data is sent from it, and it comes back in the outcome.
    pub fn execute(&mut self, request: Request) -> Result<CommandOutcome, ClientError> {
        let mut results = self.execute_batch(vec![request])?;
        results
            .pop()
            .ok_or(ClientError::Closed("the command completed"))?
    }

    /// Runs several commands with up to `queue_depth` in flight; results come back in the
    /// order given (the requests' `user_data` is not read). The outer `Err` means the
    /// connection (or the path's shard) failed; per-command failures are inner errors.
    pub fn execute_batch(
        &mut self,
        commands: Vec<Request>,
    ) -> Result<Vec<Result<CommandOutcome, ClientError>>, ClientError> {
        let total = commands.len();
        let mut results: Vec<Option<Result<CommandOutcome, ClientError>>> =
            (0..total).map(|_| None).collect();
        // Each command's place in the batch travels as its `user_data`.
        let mut pending = commands
            .into_iter()
            .enumerate()
            .map(|(index, request)| Request {
                user_data: index as u64,
                ..request
            });
        let mut next = pending.next();
        let mut done = 0;
        let mut in_flight = 0;
        let mut finished = Vec::with_capacity(self.queue_depth);
        // Bounded: every turn submits a command, fails one, or waits for a completion
        // (itself bounded by the session's timers or the command timeout).
        while done < total {
            while in_flight < self.queue_depth {
                let Some(request) = next.take() else {
                    break;
                };
                let index = request.user_data as usize;
                match self.carrier.submit(request) {
                    Ok(()) => in_flight += 1,
                    Err(Refused::Full(back)) if in_flight > 0 => {
                        next = Some(back);
                        break;
                    }
                    Err(Refused::Full(_)) => {
                        let reason = SubmitRejection::QueueFull.to_string();
                        results[index] = Some(Err(ClientError::Submit(reason)));
                        done += 1;
                    }
                    Err(Refused::Failed(error)) => {
                        results[index] = Some(Err(error));
                        done += 1;
                    }
                }
                next = pending.next();
            }
            if done == total {
                break;
            }
            self.carrier.wait_completions(&mut finished)?;
            for (user_data, result) in finished.drain(..) {
                let Some(slot) = results.get_mut(user_data as usize) else {
                    continue;
                };
                if slot.is_none() {
                    in_flight -= 1;
                    done += 1;
                }
                *slot = Some(result);
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or(Err(ClientError::Closed("the command completed"))))
            .collect())
    }

    /// Hands one command to the session without waiting for it, for callers that keep
    /// several in flight themselves (the gateway's `iscsi:` backend); its `user_data`
    /// comes back with its completion from [`Client::wait_completions`]. A full window
    /// hands the request back ([`Refused::Full`]).
    pub fn submit(&mut self, request: Request) -> Result<(), Refused> {
        self.carrier.submit(request)
    }

    /// Waits for at least one command given to [`Client::submit`] to complete and appends
    /// every completion ready, by `user_data`. `Err` means the connection (or the path's
    /// shard) failed: the commands still in flight will not complete on this client.
    pub fn wait_completions(
        &mut self,
        finished: &mut Vec<(u64, Result<CommandOutcome, ClientError>)>,
    ) -> Result<(), ClientError> {
        self.carrier.wait_completions(finished)
    }

    /// Logs out (software path: reason close the session, then closes the connection) or
    /// stops the path's shard, which logs out.
    /// Sends a task management function (ABORT TASK SET, CLEAR TASK SET, LOGICAL UNIT
    /// RESET for `lun`; TARGET WARM or COLD RESET) and waits for the target's answer.
    /// Software TCP only: an adapter path refuses.
    pub fn task_management(
        &mut self,
        function: TaskManagementFunction,
        lun: u64,
    ) -> Result<TaskManagementOutcome, ClientError> {
        match &mut self.carrier {
            Carrier::Software(connection) => connection.task_management(function, lun),
            Carrier::Shard { path, .. } => Err(ClientError::Submit(format!(
                "task management is not offered on the {path} path"
            ))),
        }
    }

    /// Keeps the session serviced until `until` (answers the target's pings) when the
    /// caller has nothing to send; an adapter path services itself.
    pub fn service_until(&mut self, until: Instant) -> Result<(), ClientError> {
        match &mut self.carrier {
            Carrier::Software(connection) => connection.service_until(until),
            Carrier::Shard { .. } => {
                std::thread::sleep(until.saturating_duration_since(Instant::now()));
                Ok(())
            }
        }
    }

    /// Whether the session is still logged in (a TARGET COLD RESET ends it).
    pub fn logged_in(&self) -> bool {
        match &self.carrier {
            Carrier::Software(connection) => {
                connection.driver.session().state() == SessionState::FullFeature
            }
            Carrier::Shard { .. } => true,
        }
    }

    pub fn logout(self) -> Result<(), ClientError> {
        match self.carrier {
            Carrier::Software(connection) => connection.logout(),
            Carrier::Shard { pool, .. } => {
                pool.shutdown();
                Ok(())
            }
        }
    }
}

/// The LUN probe's commands ([`crate::scsi::probe`]) run on the client.
impl ScsiExecute for Client {
    type Error = ClientError;

    fn execute_scsi(&mut self, lun: u64, cdb: &Cdb) -> Result<ScsiAnswer, ClientError> {
        let buffer = match cdb.direction() {
            CdbDirection::Read(len) => vec![0; len as usize],
            _ => Vec::new(),
        };
        let outcome = self.execute(Request::new(lun, cdb.clone(), buffer, 0))?;
        Ok(ScsiAnswer::new(
            outcome.status,
            outcome.sense,
            outcome.buffer,
            outcome.transferred,
        ))
    }
}

impl Carrier {
    /// Hands one command to the path.
    fn submit(&mut self, request: Request) -> Result<(), Refused> {
        match self {
            Carrier::Software(connection) => connection.submit(request),
            Carrier::Shard { pool, .. } => pool.submit(0, request).map_err(Refused::Full),
        }
    }

    /// Waits for at least one completion and appends every one ready, by `user_data`.
    fn wait_completions(
        &mut self,
        finished: &mut Vec<(u64, Result<CommandOutcome, ClientError>)>,
    ) -> Result<(), ClientError> {
        match self {
            Carrier::Software(connection) => connection.wait_completions(finished),
            Carrier::Shard {
                pool,
                path,
                command_timeout,
            } => {
                let shard_error = |source| ClientError::Shard { path, source };
                let first = pool
                    .wait_completion(0, Duration::ZERO, *command_timeout)
                    .map_err(shard_error)?;
                let mut completion = Some(first);
                // Bounded by the queue depth: no more are in flight.
                while let Some(done) = completion {
                    let result = done.result.map_err(|f| match f.error {
                        PathError::Command(error) => ClientError::Command(error),
                        other => ClientError::Path(other),
                    });
                    finished.push((done.user_data, result));
                    completion = pool.completions(0).and_then(|rx| rx.try_recv().ok());
                }
                Ok(())
            }
        }
    }
}

impl Connection {
    /// Connects and logs in at `config.portal`, following redirects.
    fn connect(config: &ClientConfig) -> Result<Connection, ClientError> {
        let route = PortalRoute::new(config.portal);
        let mut attempt = route.begin();
        loop {
            match Connection::connect_once(config, attempt.portal())? {
                Login::Complete(connection) => return Ok(*connection),
                Login::Redirected { address, kind } => {
                    let redirect = |source| ClientError::Redirect {
                        portal: config.portal,
                        source,
                    };
                    let to = resolve_target_address(&address).map_err(redirect)?;
                    tracing::info!(from = %attempt.portal(), to = %address, ?kind, "login redirected");
                    attempt.follow(to, kind).map_err(redirect)?;
                }
            }
        }
    }

    /// One connection and login at `portal`.
    fn connect_once(config: &ClientConfig, portal: SocketAddr) -> Result<Login, ClientError> {
        let socket = TcpConnection::connect(portal, config.connect_timeout)
            .map_err(|source| ClientError::Connect { portal, source })?;
        let now = Instant::now();
        let depth = config.queue_depth.max(1);
        let isid = config.isid.unwrap_or_else(random_isid);
        let session_config = config.session_config(isid, depth * 2, depth);
        let mut connection = Connection {
            portal,
            command_timeout: config.command_timeout,
            socket,
            driver: Conn::new(Session::new(session_config, now)),
            rx: vec![0; RECV_BUFFER_BYTES],
            events: VecDeque::new(),
            tasks: Vec::with_capacity(depth),
        };
        connection.pump_until("login", |event| {
            matches!(
                event,
                Event::LoginComplete | Event::LoginFailed { .. } | Event::Redirect { .. }
            )
        })?;
        match connection.events.pop_back() {
            Some(Event::LoginComplete) => Ok(Login::Complete(Box::new(connection))),
            Some(Event::LoginFailed {
                status_class,
                status_detail,
                reason,
            }) => Err(ClientError::LoginFailed {
                portal,
                status_class,
                status_detail,
                reason,
            }),
            Some(Event::Redirect { address, kind }) => Ok(Login::Redirected { address, kind }),
            _ => Err(ClientError::Closed("login completed")),
        }
    }

    fn submit(&mut self, request: Request) -> Result<(), Refused> {
        let user_data = request.user_data;
        match self.driver.session_mut().submit(Instant::now(), request) {
            Ok(task) => {
                self.tasks.push((task, user_data));
                Ok(())
            }
            Err(refused) if refused.reason == SubmitRejection::QueueFull => {
                Err(Refused::Full(refused.request))
            }
            Err(refused) => Err(Refused::Failed(ClientError::Submit(refused.to_string()))),
        }
    }

    fn wait_completions(
        &mut self,
        finished: &mut Vec<(u64, Result<CommandOutcome, ClientError>)>,
    ) -> Result<(), ClientError> {
        self.pump_until("the command completed", |e| {
            matches!(e, Event::CommandComplete(..))
        })?;
        while let Some(position) = self
            .events
            .iter()
            .position(|e| matches!(e, Event::CommandComplete(..)))
        {
            let Some(Event::CommandComplete(task, result)) = self.events.remove(position) else {
                continue;
            };
            let Some(slot) = self.tasks.iter().position(|(t, _)| *t == task) else {
                continue;
            };
            let (_, user_data) = self.tasks.swap_remove(slot);
            finished.push((
                user_data,
                result.map_err(|failure| ClientError::Command(failure.error)),
            ));
        }
        Ok(())
    }

    /// Sends `function` and waits for its answer (at most the command timeout).
    fn task_management(
        &mut self,
        function: TaskManagementFunction,
        lun: u64,
    ) -> Result<TaskManagementOutcome, ClientError> {
        let id = self
            .driver
            .session_mut()
            .task_management(Instant::now(), function, Lun::from_u64(lun).to_field())
            .map_err(|e| ClientError::Submit(e.to_string()))?;
        let deadline = Instant::now() + self.command_timeout;
        // Bounded by the deadline.
        loop {
            if let Some(outcome) = self.driver.session_mut().poll_task_management() {
                if outcome.id == id {
                    return Ok(outcome);
                }
            }
            if Instant::now() >= deadline {
                return Err(ClientError::Closed("the task management answer came"));
            }
            self.service_once("the task management answer came", deadline)?;
        }
    }

    /// Keeps the session serviced until `until` (answers the target's NOP-In pings: a host
    /// that only slept would look dead to a target that pings often).
    fn service_until(&mut self, until: Instant) -> Result<(), ClientError> {
        // Bounded by the clock: each round receives for at most the session's next timer.
        while Instant::now() < until {
            self.service_once("the session was serviced", until)?;
        }
        Ok(())
    }

    /// One round: send what is queued, keep the session's events, receive once.
    fn service_once(&mut self, what: &'static str, until: Instant) -> Result<(), ClientError> {
        let portal = self.portal;
        self.flush()?;
        while let Some(event) = self.driver.session_mut().poll_event() {
            if let Event::ConnectionFailed(source) = event {
                let _ = self.socket.shutdown();
                return Err(ClientError::Session { portal, source });
            }
            self.events.push_back(event);
        }
        if matches!(
            self.driver.session().state(),
            SessionState::Closed | SessionState::Failed
        ) {
            return Err(ClientError::Closed(what));
        }
        self.receive_within(until.saturating_duration_since(Instant::now()))
    }

    /// Logs out (reason: close the session) and closes the connection.
    fn logout(mut self) -> Result<(), ClientError> {
        self.driver.session_mut().logout(Instant::now());
        let result = self.pump_until("logout", |e| matches!(e, Event::LogoutComplete));
        let _ = self.socket.shutdown();
        result
    }

    /// Moves bytes between the session and the socket until an event matching `done` is
    /// queued, or the session fails.
    fn pump_until(
        &mut self,
        what: &'static str,
        mut done: impl FnMut(&Event) -> bool,
    ) -> Result<(), ClientError> {
        let portal = self.portal;
        loop {
            let mut finished = false;
            while let Some(event) = self.driver.session_mut().poll_event() {
                if let Event::ConnectionFailed(source) = event {
                    let _ = self.socket.shutdown();
                    return Err(ClientError::Session { portal, source });
                }
                finished |= done(&event);
                self.events.push_back(event);
            }
            if finished {
                // Nothing is left unsent when the caller gets control back.
                return self.flush();
            }
            if matches!(
                self.driver.session().state(),
                SessionState::Closed | SessionState::Failed
            ) {
                self.flush()?;
                return Err(ClientError::Closed(what));
            }
            self.send_and_receive()?;
        }
    }

    /// Sends what the session has queued and receives once, both in one kernel entry
    /// ([`TcpConnection::send_all_and_recv`]) when the bytes go to the client's own buffer
    /// (no payload being placed); else a send, then a receive.
    fn send_and_receive(&mut self) -> Result<(), ClientError> {
        let portal = self.portal;
        let queued = self
            .driver
            .fill_send()
            .map_err(|source| ClientError::Pdu { portal, source })?;
        if queued == 0 || self.driver.placement_spare().is_some() {
            self.flush()?;
            return self.receive_once();
        }
        let now = Instant::now();
        let session = self.driver.session_mut();
        let wait = match session.poll_timeout() {
            Some(deadline) if deadline <= now => {
                session.handle_timeout(now);
                return self.flush();
            }
            Some(deadline) => (deadline - now).min(IDLE_WAIT),
            None => IDLE_WAIT,
        }
        .max(Duration::from_millis(1));
        let mut slices = Vec::with_capacity(queued * 3);
        self.driver.send_slices(&mut slices);
        let result = self
            .socket
            .send_all_and_recv(&slices, SEND_TIMEOUT, &mut self.rx, wait);
        drop(slices);
        self.driver.handle_sent();
        let now = Instant::now();
        let Some(received) = self.received_bytes(now, result)? else {
            return Ok(());
        };
        let result = self.driver.handle_received(now, &self.rx[..received]);
        self.fed(result)
    }

    /// What a receive brought: `Some(bytes)`, or `None` once the session has been told
    /// that the target closed the connection or that the wait ran out (nothing more this
    /// turn). A transport failure ends the connection.
    fn received_bytes(
        &mut self,
        now: Instant,
        received: Result<Option<usize>, TransportError>,
    ) -> Result<Option<usize>, ClientError> {
        let session = self.driver.session_mut();
        match received {
            Ok(Some(0)) => {
                let reason = "the target closed the connection".to_string();
                session.handle_connection_lost(now, reason);
                Ok(None)
            }
            Ok(Some(n)) => Ok(Some(n)),
            Ok(None) => {
                session.handle_timeout(now);
                Ok(None)
            }
            Err(source) => {
                session.handle_connection_lost(now, source.to_string());
                Err(ClientError::Transport {
                    portal: self.portal,
                    source,
                })
            }
        }
    }

    /// The session's verdict on bytes it was fed: a malformed PDU or a session fault
    /// ends the connection.
    fn fed(&mut self, result: Result<(), ConnError>) -> Result<(), ClientError> {
        let portal = self.portal;
        result.map_err(|error| {
            let _ = self.socket.shutdown();
            match error {
                ConnError::Pdu(source) => ClientError::Pdu { portal, source },
                ConnError::Session(source) => ClientError::Session { portal, source },
            }
        })
    }

    /// Sends every PDU the session has queued, payload straight from the command buffers.
    fn flush(&mut self) -> Result<(), ClientError> {
        let portal = self.portal;
        loop {
            let queued = self
                .driver
                .fill_send()
                .map_err(|source| ClientError::Pdu { portal, source })?;
            if queued == 0 {
                return Ok(());
            }
            let mut slices = Vec::with_capacity(queued * 3);
            self.driver.send_slices(&mut slices);
            let result = self.socket.send_all(&slices, SEND_TIMEOUT);
            drop(slices);
            self.driver.handle_sent();
            if let Err(source) = result {
                self.driver
                    .session_mut()
                    .handle_connection_lost(Instant::now(), source.to_string());
                return Err(ClientError::Transport { portal, source });
            }
        }
    }

    /// Waits for bytes until the session's next deadline and hands them to the driver:
    /// straight into a command's buffer while a Data-In payload is being placed, else
    /// through the client's own buffer (or tells the session the deadline passed).
    fn receive_once(&mut self) -> Result<(), ClientError> {
        self.receive_within(IDLE_WAIT)
    }

    /// [`Connection::receive_once`], waiting at most `limit`.
    fn receive_within(&mut self, limit: Duration) -> Result<(), ClientError> {
        let now = Instant::now();
        let session = self.driver.session_mut();
        let wait = match session.poll_timeout() {
            Some(deadline) if deadline <= now => {
                session.handle_timeout(now);
                return Ok(());
            }
            Some(deadline) => (deadline - now).min(limit),
            None => limit,
        }
        .max(Duration::from_millis(1));
        let (received, placed) = match self.driver.placement_spare() {
            Some(spare) => (self.socket.recv(spare, wait), true),
            None => (self.socket.recv(&mut self.rx, wait), false),
        };
        let now = Instant::now();
        let received = match received {
            Err(TransportError::TimedOut { .. }) => Ok(None),
            other => other.map(Some),
        };
        let Some(received) = self.received_bytes(now, received)? else {
            return Ok(());
        };
        let result = if placed {
            self.driver.handle_placed_received(now, received)
        } else {
            self.driver.handle_received(now, &self.rx[..received])
        };
        self.fed(result)
    }
}

/// How long one send may take before the connection counts as dead.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for bytes when the session has no deadline at all.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// Bytes one receive takes when no payload is being placed.
const RECV_BUFFER_BYTES: usize = 64 * 1024;
