//! The host side of an independent adapter: SCSI commands go down, status, sense, residual
//! and the caller's buffer come back. The adapter runs login, the session (RFC 7143) and
//! TCP itself, configured through its own interface ([`IndependentConfig`]).
//!
//! # Driving it (a shard worker's loop)
//! 1. [`IndependentPath::connect`] takes a queue pair and configures it (the adapter logs
//!    in before this returns).
//! 2. Per turn: [`IndependentPath::submit`] requests (each goes straight into the
//!    submission ring and rings its doorbell; a full ring hands the request back),
//!    [`IndependentPath::poll`] once, take every [`IndependentPath::poll_completion`];
//!    sleep in [`IndependentPath::wait`] (or on [`IndependentPath::notifier`]'s eventfd
//!    until [`IndependentPath::next_deadline`]) when idle.
//!
//! # Error policy: fail upward; reset the queue on a stalled doorbell
//! Faults the adapter reports itself (a dropped submission entry, a digest mismatch, its
//! own reset) arrive as failed completions of exactly the commands they hit, each naming
//! the fault; the adapter recovers on its own (a new session with its stored
//! configuration). The path hands them up unchanged and retries nothing, so a write whose
//! outcome is unknown is reported failed, never good.
//! A completion doorbell that stalls (entries written beyond it for longer than
//! `doorbell_stall_timeout`) is found by the host: the path resets the queue pair (the
//! adapter's engine is joined and logs in again), discards the completion ring (its
//! unannounced entries cannot be trusted, but their buffers are taken back), and fails every
//! command in flight with [`AdapterFault::DoorbellStalled`].
//! The adapter also posts [`IndependentCompletion::SessionLost`] whenever its session is
//! lost, idle or not ([`IndependentPath::take_session_loss`]): a multipath shard takes the
//! path down on it, so its view of the path is the adapter's.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    AdapterError, AdapterFault, Capabilities, IndependentAdapter, IndependentCompletion,
    IndependentConfig, IndependentHostQueue, LoginReport, Notifier, PathCompletion, PathError,
    PathFailure, PathRejection, PathSubmitError, RingFull, ScsiCompletion, SessionLoss,
};
use crate::session::{CommandError, Request};
use crate::transport::TransportKind;

/// How an [`IndependentPath`] runs.
#[derive(Clone)]
pub struct IndependentPathConfig {
    /// What the adapter's own configuration interface gets.
    pub adapter: IndependentConfig,
    /// Commands in flight at once.
    pub queue_depth: usize,
    /// Completions written beyond the doorbell for this long are a stalled doorbell.
    pub doorbell_stall_timeout: Duration,
    /// Completion entries handled per [`IndependentPath::poll`].
    pub max_completions_per_poll: usize,
}

impl IndependentPathConfig {
    pub fn new(adapter: IndependentConfig) -> IndependentPathConfig {
        IndependentPathConfig {
            queue_depth: adapter.queue_depth.max(1),
            adapter,
            doorbell_stall_timeout: Duration::from_millis(500),
            max_completions_per_poll: 256,
        }
    }
}

/// Counters of one independent path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndependentStats {
    pub ios_submitted: u64,
    pub ios_completed: u64,
    pub ios_failed: u64,
    pub faults: u64,
    pub queue_resets: u64,
    /// Sessions the adapter reported lost ([`IndependentCompletion::SessionLost`]).
    pub sessions_lost: u64,
}

/// SCSI commands carried by an independent adapter's queue pair. See the module docs.
pub struct IndependentPath {
    adapter: Arc<dyn IndependentAdapter>,
    index: usize,
    caps: Capabilities,
    queue: IndependentHostQueue,
    config: IndependentPathConfig,
    login: LoginReport,
    /// user_data of each command in the adapter, by the tag it travels under.
    in_flight: HashMap<u64, u64>,
    next_tag: u64,
    ready: VecDeque<PathCompletion>,
    stall_since: Option<Instant>,
    failed: Option<String>,
    /// The adapter's last lost session, not yet taken ([`IndependentPath::take_session_loss`]).
    session_loss: Option<SessionLoss>,
    stats: IndependentStats,
}

impl std::fmt::Debug for IndependentPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndependentPath")
            .field("index", &self.index)
            .field("in_flight", &self.in_flight.len())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl IndependentPath {
    /// Takes queue pair `index` of `adapter` and configures it (the adapter logs in).
    pub fn connect(
        adapter: Arc<dyn IndependentAdapter>,
        index: usize,
        config: IndependentPathConfig,
    ) -> Result<IndependentPath, AdapterError> {
        let info = adapter.info();
        if info.kind != TransportKind::Independent {
            return Err(AdapterError::Unsupported(
                "SCSI queues on a dependent adapter",
            ));
        }
        let queue = adapter.take_queue_pair(index)?;
        let login = adapter.configure(index, &config.adapter)?;
        Ok(IndependentPath {
            adapter,
            index,
            caps: info.capabilities,
            queue,
            config,
            login,
            in_flight: HashMap::new(),
            next_tag: 1,
            ready: VecDeque::new(),
            stall_since: None,
            failed: None,
            session_loss: None,
            stats: IndependentStats::default(),
        })
    }

    /// Posts a request to the adapter and rings its doorbell; a full ring, a too large
    /// transfer or a failed path hands it back.
    pub fn submit(&mut self, _now: Instant, request: Request) -> Result<(), PathSubmitError> {
        let transfer = request.direction.transfer_len();
        if transfer > self.caps.max_io_bytes {
            let max = self.caps.max_io_bytes;
            return Err(PathSubmitError {
                reason: PathRejection::TooLarge { len: transfer, max },
                request,
            });
        }
        if let Some(reason) = &self.failed {
            return Err(PathSubmitError {
                reason: PathRejection::Unavailable(reason.as_str().into()),
                request,
            });
        }
        if self.in_flight.len() >= self.config.queue_depth.max(1) {
            return Err(PathSubmitError {
                reason: PathRejection::QueueFull,
                request,
            });
        }
        let tag = self.next_tag;
        let user_data = request.user_data;
        // On the adapter's ring the request carries the path's own tag.
        let entry = Request {
            user_data: tag,
            ..request
        };
        match self.queue.submissions.push(entry) {
            Ok(_) => {
                self.next_tag = self.next_tag.wrapping_add(1);
                self.in_flight.insert(tag, user_data);
                self.stats.ios_submitted += 1;
                Ok(())
            }
            Err(RingFull(entry)) => Err(PathSubmitError {
                reason: PathRejection::QueueFull,
                request: Request { user_data, ..entry },
            }),
        }
    }

    /// Reaps announced completions and checks the doorbell. Returns the completions ready.
    pub fn poll(&mut self, now: Instant) -> usize {
        for _ in 0..self.config.max_completions_per_poll.max(1) {
            let Some(completion) = self.queue.completions.poll() else {
                break;
            };
            self.take(completion);
        }
        self.check_doorbell_stall(now);
        self.ready.len()
    }

    /// One completion-ring entry: a command's end, or the adapter's news of a lost session.
    fn take(&mut self, entry: IndependentCompletion) {
        match entry {
            IndependentCompletion::Command(completion) => self.complete(completion),
            IndependentCompletion::SessionLost(loss) => {
                tracing::info!(queue_pair = self.index, fault = %loss.fault, "the adapter lost its session");
                self.stats.sessions_lost += 1;
                self.session_loss = Some(loss);
            }
        }
    }

    /// The adapter's last lost session since this was last asked, if any: a single path
    /// counts it (the adapter logs in again by itself); a multipath shard takes the path
    /// down, so its view of the path is true even when no command was in flight.
    pub fn take_session_loss(&mut self) -> Option<SessionLoss> {
        self.session_loss.take()
    }

    fn complete(&mut self, completion: ScsiCompletion) {
        let ScsiCompletion { tag, result } = completion;
        let Some(user_data) = self.in_flight.remove(&tag) else {
            tracing::warn!(
                queue_pair = self.index,
                tag,
                "completion for an unknown tag"
            );
            return;
        };
        match &result {
            Ok(_) => self.stats.ios_completed += 1,
            Err(failure) => {
                self.stats.ios_failed += 1;
                if matches!(failure.error, PathError::Adapter(_)) {
                    self.stats.faults += 1;
                }
            }
        }
        self.ready.push_back(PathCompletion { user_data, result });
    }

    fn check_doorbell_stall(&mut self, now: Instant) {
        let cq = &self.queue.completions;
        if cq.announced() > 0 || cq.unannounced() == 0 {
            self.stall_since = None;
            return;
        }
        let since = *self.stall_since.get_or_insert(now);
        let stalled = now.duration_since(since);
        if stalled < self.config.doorbell_stall_timeout {
            return;
        }
        let fault = AdapterFault::DoorbellStalled {
            doorbell: cq.doorbell(),
            unannounced: cq.unannounced(),
            stalled_ms: stalled.as_millis() as u64,
        };
        tracing::warn!(queue_pair = self.index, %fault, "resetting the queue pair");
        self.stall_since = None;
        self.stats.faults += 1;
        self.stats.queue_resets += 1;
        let mut buffers: HashMap<u64, Vec<u8>> = HashMap::new();
        let relogin = match self.adapter.reset_queue_pair(self.index) {
            Ok(report) => {
                buffers.extend(report.buffers);
                report.relogin
            }
            Err(error) => Err(error),
        };
        // The engine is joined: what sits in the completion ring is the host's to take back.
        for discarded in self.queue.completions.discard_all() {
            let IndependentCompletion::Command(discarded) = discarded else {
                continue;
            };
            let buffer = match discarded.result {
                Ok(outcome) => outcome.buffer,
                Err(failure) => failure.buffer,
            };
            buffers.insert(discarded.tag, buffer);
        }
        let mut tags: Vec<u64> = self.in_flight.keys().copied().collect();
        tags.sort_unstable();
        for tag in tags {
            let buffer = buffers.remove(&tag).unwrap_or_default();
            self.complete(ScsiCompletion {
                tag,
                result: Err(PathFailure {
                    error: PathError::Adapter(fault.clone()),
                    buffer,
                }),
            });
        }
        match relogin {
            Ok(login) => self.login = login,
            Err(error) => self.failed = Some(format!("after {fault}: {error}")),
        }
    }

    /// The next finished request.
    pub fn poll_completion(&mut self) -> Option<PathCompletion> {
        self.ready.pop_front()
    }

    /// True when completions are ready to take or announced by the adapter.
    pub fn ready_to_poll(&self) -> bool {
        !self.ready.is_empty() || self.queue.completions.announced() > 0
    }

    /// Sleeps until completions are announced, a doorbell check is due, or `timeout`
    /// passes. True when there is something for [`IndependentPath::poll`].
    pub fn wait(&mut self, timeout: Duration) -> bool {
        if self.ready_to_poll() {
            return true;
        }
        let limit = match self.next_deadline() {
            Some(deadline) => timeout.min(deadline.saturating_duration_since(Instant::now())),
            None => timeout,
        };
        self.queue.completions.wait(limit)
    }

    /// When the path next needs a poll without completions (a doorbell-stall check).
    pub fn next_deadline(&self) -> Option<Instant> {
        if let Some(since) = self.stall_since {
            Some(since + self.config.doorbell_stall_timeout)
        } else if !self.in_flight.is_empty() {
            // Completions may be written without a doorbell: look again now and then.
            Some(Instant::now() + self.config.doorbell_stall_timeout / 4)
        } else {
            None
        }
    }

    /// The completion ring's wake-up, for a shard that sleeps in its own io_uring.
    pub fn notifier(&self) -> &Arc<Notifier> {
        self.queue.completions.notifier()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// What the adapter's last login reported.
    pub fn login(&self) -> &LoginReport {
        &self.login
    }

    /// Why the path gave up, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    pub fn capabilities(&self) -> Capabilities {
        self.caps
    }

    pub fn stats(&self) -> IndependentStats {
        self.stats
    }

    /// Ends the path now (a multipath shard lost it): the adapter's engine stops (joined,
    /// no login follows) and hands back the buffers of what it held; those commands come
    /// back through [`IndependentPath::poll_completion`], failed as a lost connection with
    /// their buffers (a multipath shard issues them again on another path), and the ones
    /// the adapter had finished come back finished.
    pub fn end(&mut self, reason: &str) {
        while let Some(completion) = self.queue.completions.poll() {
            self.take(completion);
        }
        let mut buffers: HashMap<u64, Vec<u8>> = match self.adapter.stop_queue_pair(self.index) {
            Ok(buffers) => buffers.into_iter().collect(),
            Err(error) => {
                tracing::warn!(queue_pair = self.index, %error, "stopping the queue pair");
                HashMap::new()
            }
        };
        // The engine is joined: what it wrote without a doorbell is final.
        for written in self.queue.completions.discard_all() {
            self.take(written);
        }
        let mut tags: Vec<u64> = self.in_flight.keys().copied().collect();
        tags.sort_unstable();
        for tag in tags {
            let buffer = buffers.remove(&tag).unwrap_or_default();
            let error = CommandError::ConnectionLost(reason.to_string());
            self.complete(ScsiCompletion {
                tag,
                result: Err(PathFailure {
                    error: PathError::Command(error),
                    buffer,
                }),
            });
        }
        self.failed = Some(reason.to_string());
    }
}

impl Drop for IndependentPath {
    /// Gives the queue pair back to the adapter (its engine stopped) for the next path on
    /// it.
    fn drop(&mut self) {
        // A one-entry stand-in: the real queue goes back to the adapter.
        let (stand_in, _) = super::queue_pair(1, 1, Notifier::new(), Notifier::new());
        let host = std::mem::replace(&mut self.queue, stand_in);
        self.adapter.return_queue_pair(self.index, host);
    }
}
