//! A blocking client: one sans-IO [`Session`] driven over one io_uring [`TcpConnection`].
//!
//! This is the convenience layer for `iscsi-ctl` and tests: the I/O glue around one
//! [`Conn`] (framing, placement and digests live there) in a simple loop on the calling
//! thread. Payload goes to the socket straight from the command's buffer, and the payload
//! of a Data-In the session can place is received straight into the command's buffer.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::conn::{Conn, ConnError};
use crate::pdu;
pub use crate::session::connect::{
    default_initiator_name, random_bytes, random_isid, ClientConfig,
};
use crate::session::{
    CommandError, CommandOutcome, DiscoveredTarget, Event, Request, Session, SessionError,
    SessionState, TaskId,
};
use crate::text::OperationalParams;
use crate::transport::{TcpConnection, TransportError};

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
    #[error("login to {portal} redirected to {address}")]
    Redirected { portal: SocketAddr, address: String },
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
    #[error("the session could not accept the command: {0}")]
    Submit(String),
    #[error("the session closed before {0}")]
    Closed(&'static str),
}

/// A logged-in session on one TCP connection, driven on the caller's thread.
pub struct Client {
    portal: SocketAddr,
    socket: TcpConnection,
    driver: Conn,
    /// Bytes received before the receiver said where they go.
    rx: Vec<u8>,
    events: VecDeque<Event>,
    queue_depth: usize,
}

impl Client {
    /// Connects and logs in to `config.target_name` (or a discovery session when `None`).
    pub fn connect(config: &ClientConfig) -> Result<Client, ClientError> {
        let portal = config.portal;
        let socket = TcpConnection::connect(portal, config.connect_timeout)
            .map_err(|source| ClientError::Connect { portal, source })?;
        let now = Instant::now();
        let depth = config.queue_depth.max(1);
        let session_config = config.session_config(random_isid(), depth * 2, depth);
        let mut client = Client {
            portal,
            socket,
            driver: Conn::new(Session::new(session_config, now)),
            rx: vec![0; RECV_BUFFER_BYTES],
            events: VecDeque::new(),
            queue_depth: config.queue_depth.max(1),
        };
        client.pump_until("login", |event| {
            matches!(
                event,
                Event::LoginComplete | Event::LoginFailed { .. } | Event::Redirect { .. }
            )
        })?;
        match client.events.pop_back() {
            Some(Event::LoginComplete) => Ok(client),
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
            Some(Event::Redirect { address, .. }) => {
                Err(ClientError::Redirected { portal, address })
            }
            _ => Err(ClientError::Closed("login completed")),
        }
    }

    /// Opens a discovery session, asks for SendTargets=All, logs out.
    pub fn discover(config: &ClientConfig) -> Result<Vec<DiscoveredTarget>, ClientError> {
        let mut config = config.clone();
        config.target_name = None;
        let mut client = Client::connect(&config)?;
        let portal = client.portal;
        client
            .driver
            .session_mut()
            .send_targets(Instant::now())
            .map_err(|source| ClientError::Session { portal, source })?;
        client.pump_until("the SendTargets response", |e| {
            matches!(e, Event::TargetsDiscovered(_))
        })?;
        let targets = match client.events.pop_back() {
            Some(Event::TargetsDiscovered(targets)) => targets,
            _ => return Err(ClientError::Closed("the SendTargets response")),
        };
        client.logout()?;
        Ok(targets)
    }

    pub fn portal(&self) -> SocketAddr {
        self.portal
    }

    /// The operational parameters both sides agreed on at login.
    pub fn params(&self) -> Option<&OperationalParams> {
        self.driver.session().params()
    }

    pub fn session(&self) -> &Session {
        self.driver.session()
    }

    /// The receiver's counters: payload placed straight from the socket, payload copied
    /// into its placement from the client's own buffer, payload staged.
    pub fn receive_stats(&self) -> crate::conn::ReceiveStats {
        self.driver.receive_stats()
    }

    /// Runs one SCSI command to completion. `buffer` is lent to the command: read data
    /// lands in it, write data is sent from it, and it comes back in the outcome.
    pub fn execute(&mut self, request: Request) -> Result<CommandOutcome, ClientError> {
        let mut results = self.execute_batch(vec![request])?;
        results
            .pop()
            .ok_or(ClientError::Closed("the command completed"))?
    }

    /// Runs several commands with up to `queue_depth` in flight; results come back in the
    /// order given (the requests' `user_data` is not read). The outer `Err` means the
    /// connection failed; per-command failures are inner errors.
    pub fn execute_batch(
        &mut self,
        commands: Vec<Request>,
    ) -> Result<Vec<Result<CommandOutcome, ClientError>>, ClientError> {
        let total = commands.len();
        let mut results: Vec<Option<Result<CommandOutcome, ClientError>>> =
            (0..total).map(|_| None).collect();
        let mut task_index: Vec<(TaskId, usize)> = Vec::with_capacity(self.queue_depth);
        let mut pending = commands.into_iter().enumerate();
        let mut done = 0;
        let mut in_flight = 0;
        while done < total {
            while in_flight < self.queue_depth {
                let Some((index, request)) = pending.next() else {
                    break;
                };
                match self.driver.session_mut().submit(Instant::now(), request) {
                    Ok(task) => {
                        task_index.push((task, index));
                        in_flight += 1;
                    }
                    Err(error) => {
                        results[index] = Some(Err(ClientError::Submit(error.to_string())));
                        done += 1;
                    }
                }
            }
            if done == total {
                break;
            }
            self.pump_until("the command completed", |e| {
                matches!(e, Event::CommandComplete(..))
            })?;
            while let Some(position) = self
                .events
                .iter()
                .position(|e| matches!(e, Event::CommandComplete(..)))
            {
                let Some(Event::CommandComplete(task, result)) = self.events.remove(position)
                else {
                    continue;
                };
                let Some(slot) = task_index.iter().position(|(t, _)| *t == task) else {
                    continue;
                };
                let (_, index) = task_index.swap_remove(slot);
                results[index] =
                    Some(result.map_err(|failure| ClientError::Command(failure.error)));
                in_flight -= 1;
                done += 1;
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or(Err(ClientError::Closed("the command completed"))))
            .collect())
    }

    /// Logs out (reason: close the session) and closes the connection.
    pub fn logout(mut self) -> Result<(), ClientError> {
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
            self.flush()?;
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
                return Ok(());
            }
            if matches!(
                self.driver.session().state(),
                SessionState::Closed | SessionState::Failed
            ) {
                return Err(ClientError::Closed(what));
            }
            self.receive_once()?;
        }
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
        let portal = self.portal;
        let now = Instant::now();
        let session = self.driver.session_mut();
        let wait = match session.poll_timeout() {
            Some(deadline) if deadline <= now => {
                session.handle_timeout(now);
                return Ok(());
            }
            Some(deadline) => deadline - now,
            None => IDLE_WAIT,
        };
        let (received, placed) = match self.driver.placement_spare() {
            Some(spare) => (self.socket.recv(spare, wait), true),
            None => (self.socket.recv(&mut self.rx, wait), false),
        };
        let now = Instant::now();
        let received = match received {
            Ok(0) => {
                let reason = "the target closed the connection".to_string();
                self.driver
                    .session_mut()
                    .handle_connection_lost(now, reason);
                return Ok(());
            }
            Ok(n) => n,
            Err(TransportError::TimedOut { .. }) => {
                self.driver.session_mut().handle_timeout(now);
                return Ok(());
            }
            Err(source) => {
                self.driver
                    .session_mut()
                    .handle_connection_lost(now, source.to_string());
                return Err(ClientError::Transport { portal, source });
            }
        };
        let result = if placed {
            self.driver.handle_placed_received(now, received)
        } else {
            self.driver.handle_received(now, &self.rx[..received])
        };
        result.map_err(|error| {
            let _ = self.socket.shutdown();
            match error {
                ConnError::Pdu(source) => ClientError::Pdu { portal, source },
                ConnError::Session(source) => ClientError::Session { portal, source },
            }
        })
    }
}

/// How long one send may take before the connection counts as dead.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for bytes when the session has no deadline at all.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// Bytes one receive takes when no payload is being placed.
const RECV_BUFFER_BYTES: usize = 64 * 1024;
