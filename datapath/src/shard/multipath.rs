//! One logical unit over several software paths (issue 14 items 3 and 4): a [`Path`] that
//! owns one [`TcpPath`] per portal, each with its own session (its own ISID) on this
//! shard, so the shard loop stays one loop and no lock is shared across cores.
//!
//! - **Joining**: a sub-path carries I/O only after its INQUIRY VPD 0x83 names the same
//!   logical unit (the same set of logical-unit designators) as the first path's, and
//!   after TEST UNIT READY took the unit attention of its new I_T nexus.
//! - **Policies** ([`PathPolicy`]): failover (the first path up, in the order given),
//!   round-robin (per command), queue-length (the fewest commands held).
//! - **Loss**: a sub-path's connection lost (reset, EOF, a protocol fault, a command
//!   timeout) fails its commands with `ConnectionLost`; they are issued again on another
//!   path, with no error to the caller. A write is not issued again when a later write to
//!   overlapping blocks has already been acknowledged: its data is superseded, and sending
//!   it again would overwrite the acknowledged data (it completes as done, which the
//!   later write's order makes true).
//! - **Rejoin**: a lost sub-path logs in again in the background (the loop's thread, one
//!   attempt when due, backoff doubling from 100 ms to 2 s, and not before the Time2Wait
//!   of an Async Message event 2 or 3 that dropped it) and joins after the same check.
//! - **No path**: commands wait, like multipathd's `no_path_retry`, up to
//!   [`MultipathConfig::no_path_retry`] from the moment the last path went; then they fail
//!   with an error that says so.
//!
//! Each sub-path has its own ring: the loop sleeps on one of them at a time, so with two
//! or more paths up a sleep lasts at most [`MULTI_POLL`] (a shared ring for all of a
//! shard's connections would remove that).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::run::{Finished, Path, PathState, Refusal};
use super::tcp::{Setup, TcpPath};
use super::{failure, ShardConfig, ShardError, ShardInfo, ShardStats};
use crate::adapter::{PathError, PathFailure};
use crate::pdu::TaskAttribute;
use crate::scsi::decode::DeviceIdentification;
use crate::scsi::{sense, Cdb};
use crate::session::connect::ClientConfig;
use crate::session::{CommandError, CommandOutcome, DataDirection, Request};

/// The longest sleep on one sub-path's ring while another may have answers.
pub const MULTI_POLL: Duration = Duration::from_micros(200);
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Bound on the joining check's commands.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// Tags the joining check uses (the loop's own tags are indexes far below).
const CHECK_TAG: u64 = u64::MAX - 1;

/// How commands are spread over the paths that are up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathPolicy {
    /// All I/O on the first path up, in the order the portals were given.
    Failover,
    /// Each command on the next path up.
    RoundRobin,
    /// Each command on the path that holds the fewest.
    QueueLength,
}

impl std::str::FromStr for PathPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<PathPolicy, String> {
        match s {
            "failover" => Ok(PathPolicy::Failover),
            "round-robin" | "round_robin" => Ok(PathPolicy::RoundRobin),
            "queue-length" | "queue_length" => Ok(PathPolicy::QueueLength),
            other => Err(format!(
                "unknown path policy {other:?} (failover, round-robin, queue-length)"
            )),
        }
    }
}

/// Several portals to one logical unit ([`ShardConfig::multipath`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipathConfig {
    /// The portals, each a path (the client configuration's portal is not used).
    pub portals: Vec<SocketAddr>,
    pub policy: PathPolicy,
    /// The LUN whose identity every path must show (VPD 0x83) before it carries I/O.
    pub lun: u64,
    /// How long commands wait when no path is up before they fail.
    pub no_path_retry: Duration,
}

/// Why a path did not join.
#[derive(Debug, thiserror::Error)]
enum JoinError {
    #[error("{0}")]
    Connect(#[from] ShardError),
    #[error("{0}")]
    Check(String),
}

/// One command as issued, kept to issue it again on another path.
struct Issued {
    path: usize,
    lun: u64,
    cdb: Cdb,
    direction: DataDirection,
    attribute: TaskAttribute,
    /// Submission order, for the write-ordering rule.
    seq: u64,
    /// Blocks a write covers (`None`: not a write; `(0, u64::MAX)`: a write we cannot
    /// place, treated as covering everything).
    writes: Option<(u64, u64)>,
    /// A later write to overlapping blocks was acknowledged.
    superseded: bool,
}

struct SubPath {
    portal: SocketAddr,
    path: Option<TcpPath>,
    /// Commands it holds.
    held: usize,
    /// When the next join attempt is due, and the wait after it.
    retry_at: Instant,
    backoff: Duration,
    ios: u64,
    losses: u64,
}

/// Several sub-paths to one LU behind one [`Path`] (see the module docs).
pub(super) struct MultiPath {
    setup: Setup,
    config: MultipathConfig,
    paths: Vec<SubPath>,
    identity: Vec<(u8, Vec<u8>)>,
    issued: HashMap<u64, Issued>,
    /// Commands waiting for a path, in order (new, or to issue again).
    waiting: VecDeque<(u64, Request, Option<u64>)>,
    /// Finished commands not yet handed to the loop.
    finished: Vec<Finished>,
    next_seq: u64,
    rr_next: usize,
    /// Since when no path is up.
    no_path_since: Option<Instant>,
    reissued: u64,
    counted: ShardStats,
}

impl MultiPath {
    /// Connects every portal; at least one must join (the first that does gives the LU's
    /// identity). Portals that fail now are tried again in the background.
    pub(super) fn connect(setup: Setup) -> Result<(MultiPath, ShardInfo), ShardError> {
        let config = setup
            .config
            .multipath
            .clone()
            .ok_or(ShardError::InvalidConfig("no multipath configuration"))?;
        if config.portals.is_empty() {
            return Err(ShardError::InvalidConfig("multipath with no portal"));
        }
        let now = Instant::now();
        let mut multi = MultiPath {
            paths: config
                .portals
                .iter()
                .map(|&portal| SubPath {
                    portal,
                    path: None,
                    held: 0,
                    retry_at: now,
                    backoff: BACKOFF_FIRST,
                    ios: 0,
                    losses: 0,
                })
                .collect(),
            config,
            setup,
            identity: Vec::new(),
            issued: HashMap::new(),
            waiting: VecDeque::new(),
            finished: Vec::new(),
            next_seq: 0,
            rr_next: 0,
            no_path_since: None,
            reissued: 0,
            counted: ShardStats::default(),
        };
        let mut info = None;
        let mut last_error = None;
        for index in 0..multi.paths.len() {
            match multi.join(index) {
                Ok(joined) => {
                    info.get_or_insert(joined);
                }
                Err(e) => {
                    tracing::warn!(shard = multi.setup.index, portal = %multi.paths[index].portal, error = %e, "path did not join");
                    multi.schedule_retry(index, now);
                    last_error = Some(e);
                }
            }
        }
        match info {
            Some(info) => Ok((multi, info)),
            None => Err(match last_error {
                Some(JoinError::Connect(e)) => e,
                Some(JoinError::Check(reason)) => ShardError::Login {
                    shard: multi.setup.index,
                    reason,
                },
                None => ShardError::InvalidConfig("multipath with no portal"),
            }),
        }
    }

    fn sub_setup(&self, portal: SocketAddr) -> Setup {
        let mut client_config: ClientConfig = self.setup.client_config.clone();
        client_config.portal = portal;
        let config = ShardConfig {
            multipath: None,
            // The multipath path reissues and rejoins itself.
            reconnect: super::ReconnectPolicy::OFF,
            ..self.setup.config.clone()
        };
        Setup {
            index: self.setup.index,
            client_config,
            config,
            core: self.setup.core,
            doorbell: Arc::clone(&self.setup.doorbell),
        }
    }

    /// Logs sub-path `index` in and checks it reaches the LU.
    fn join(&mut self, index: usize) -> Result<ShardInfo, JoinError> {
        let portal = self.paths[index].portal;
        let (mut path, info) = TcpPath::connect(self.sub_setup(portal))?;
        let identity = check_path(&mut path, self.config.lun).map_err(JoinError::Check)?;
        if self.identity.is_empty() {
            self.identity = identity;
        } else if identity != self.identity {
            return Err(JoinError::Check(format!(
                "{portal} reaches another logical unit (VPD 0x83 designators differ)"
            )));
        }
        tracing::info!(shard = self.setup.index, %portal, "path joined");
        let sub = &mut self.paths[index];
        sub.path = Some(path);
        sub.held = 0;
        sub.backoff = BACKOFF_FIRST;
        self.no_path_since = None;
        Ok(info)
    }

    fn schedule_retry(&mut self, index: usize, now: Instant) {
        let sub = &mut self.paths[index];
        sub.retry_at = now + sub.backoff;
        sub.backoff = (sub.backoff * 2).min(BACKOFF_MAX);
    }

    fn up(&self) -> impl Iterator<Item = usize> + '_ {
        self.paths
            .iter()
            .enumerate()
            .filter(|(_, p)| p.path.is_some())
            .map(|(i, _)| i)
    }

    /// The path for the next command, by policy.
    fn choose(&mut self) -> Option<usize> {
        match self.config.policy {
            PathPolicy::Failover => self.up().next(),
            PathPolicy::QueueLength => self.up().min_by_key(|&i| self.paths[i].held),
            PathPolicy::RoundRobin => {
                let n = self.paths.len();
                let start = self.rr_next;
                let chosen = (0..n)
                    .map(|k| (start + k) % n)
                    .find(|&i| self.paths[i].path.is_some())?;
                self.rr_next = (chosen + 1) % n;
                Some(chosen)
            }
        }
    }

    /// Issues `request` on a path, or keeps it waiting when none is up.
    fn issue(&mut self, now: Instant, tag: u64, request: Request, seq: Option<u64>) {
        let Some(index) = self.choose() else {
            self.no_path_since.get_or_insert(now);
            self.waiting.push_back((tag, request, seq));
            return;
        };
        let seq = seq.unwrap_or_else(|| {
            self.next_seq += 1;
            self.next_seq
        });
        let writes = write_range(&request);
        let issued = Issued {
            path: index,
            lun: request.lun,
            cdb: request.cdb.clone(),
            direction: request.direction,
            attribute: request.attribute,
            seq,
            writes,
            superseded: false,
        };
        let sub = &mut self.paths[index];
        let Some(path) = sub.path.as_mut() else {
            return;
        };
        match path.submit(now, tag, request, false) {
            Ok(()) => {
                sub.held += 1;
                self.issued.insert(tag, issued);
            }
            Err(Refusal::Full(request)) => self.waiting.push_front((tag, request, Some(seq))),
            Err(Refusal::Failed(request, error)) => {
                // The path is gone under us: try the others.
                tracing::debug!(shard = self.setup.index, %error, "sub-path refused a command");
                self.lose(index, now);
                self.issued.insert(tag, issued);
                self.reissue(now, tag, request.buffer);
            }
        }
    }

    /// A command's path lost it: issue it again elsewhere, unless a later acknowledged
    /// write superseded it.
    fn reissue(&mut self, now: Instant, tag: u64, buffer: Vec<u8>) {
        let Some(issued) = self.issued.remove(&tag) else {
            return;
        };
        if issued.superseded {
            let transferred = match issued.direction {
                DataDirection::Write { len } => len,
                _ => 0,
            };
            let outcome = CommandOutcome {
                status: sense::status::GOOD,
                sense: None,
                residual: crate::session::Residual::None,
                buffer,
                transferred,
            };
            self.finished.push((tag, Ok(outcome)));
            return;
        }
        self.reissued += 1;
        let request = Request {
            lun: issued.lun,
            cdb: issued.cdb,
            direction: issued.direction,
            buffer,
            attribute: issued.attribute,
            user_data: 0,
        };
        // Keep its place in the write order.
        self.next_seq = self.next_seq.max(issued.seq);
        self.issue(now, tag, request, Some(issued.seq));
    }

    /// Sub-path `index` lost its connection: it goes down and is tried again later.
    fn lose(&mut self, index: usize, now: Instant) {
        let sub = &mut self.paths[index];
        if let Some(mut path) = sub.path.take() {
            tracing::warn!(shard = self.setup.index, portal = %sub.portal, "path lost");
            sub.losses += 1;
            let mut done = Vec::new();
            // Take what it still holds (failed with the loss, buffers back).
            path.end_lost(&mut done);
            let mut stats = ShardStats::default();
            path.count(&mut stats);
            self.counted.kernel_entries += stats.kernel_entries;
            self.counted.bytes_copied += stats.bytes_copied;
            self.counted.async_events += stats.async_events;
            self.counted.luns_changed += stats.luns_changed;
            let time2wait = path.lost_time2wait();
            drop(path);
            self.schedule_retry(index, now);
            // A target that dropped the path (event 2 or 3) said when to come back.
            if let Some(wait) = time2wait {
                let sub = &mut self.paths[index];
                sub.retry_at = sub.retry_at.max(now + wait);
            }
            if self.up().next().is_none() {
                self.no_path_since.get_or_insert(now);
            }
            tracing::debug!(
                shard = self.setup.index,
                path = index,
                handed_back = done.len(),
                held = self.issued.len(),
                "path lost; its commands go to another"
            );
            for finished in done {
                self.take_finished(now, finished);
            }
        }
    }

    /// One finished command from a sub-path.
    fn take_finished(&mut self, now: Instant, (tag, result): Finished) {
        let Some(issued) = self.issued.get(&tag) else {
            return;
        };
        let index = issued.path;
        self.paths[index].held = self.paths[index].held.saturating_sub(1);
        match result {
            Err(PathFailure {
                error: PathError::Command(CommandError::ConnectionLost(_)),
                buffer,
            }) => self.reissue(now, tag, buffer),
            result => {
                let Some(issued) = self.issued.remove(&tag) else {
                    return;
                };
                if let (Ok(outcome), Some(range)) = (&result, issued.writes) {
                    if outcome.status == sense::status::GOOD {
                        self.supersede(issued.seq, range);
                    }
                }
                self.paths[index].ios += 1;
                self.finished.push((tag, result));
            }
        }
    }

    /// An acknowledged write (`seq`, `range`): older writes still held to overlapping
    /// blocks must not be sent again after it.
    fn supersede(&mut self, seq: u64, range: (u64, u64)) {
        mark_superseded(self.issued.values_mut(), seq, range);
    }

    /// Joins lost paths that are due (one attempt per turn).
    fn rejoin(&mut self, now: Instant) {
        let due = (0..self.paths.len())
            .find(|&i| self.paths[i].path.is_none() && now >= self.paths[i].retry_at);
        if let Some(index) = due {
            if let Err(e) = self.join(index) {
                tracing::debug!(shard = self.setup.index, portal = %self.paths[index].portal, error = %e, "path did not rejoin");
                self.schedule_retry(index, Instant::now());
            }
        }
    }
}

impl Path for MultiPath {
    fn held(&self) -> usize {
        self.issued.len() + self.waiting.len() + self.finished.len()
    }

    fn submit(
        &mut self,
        now: Instant,
        tag: u64,
        request: Request,
        _resend: bool,
    ) -> Result<(), Refusal> {
        if !self.waiting.is_empty() {
            // Order: what waits goes first.
            self.waiting.push_back((tag, request, None));
            return Ok(());
        }
        self.issue(now, tag, request, None);
        Ok(())
    }

    fn abort(&mut self, now: Instant, tag: u64) {
        if let Some(at) = self.waiting.iter().position(|(t, _, _)| *t == tag) {
            if let Some((tag, request, _)) = self.waiting.remove(at) {
                self.finished
                    .push((tag, Err(failure(CommandError::Aborted, request.buffer))));
            }
            return;
        }
        if let Some(issued) = self.issued.get(&tag) {
            if let Some(path) = self.paths[issued.path].path.as_mut() {
                path.abort(now, tag);
            }
        }
    }

    fn poll(&mut self, now: Instant, done: &mut Vec<Finished>) -> PathState {
        let mut finished = Vec::new();
        let mut lost = Vec::new();
        for (index, sub) in self.paths.iter_mut().enumerate() {
            let Some(path) = sub.path.as_mut() else {
                continue;
            };
            let state = path.poll(now, &mut finished);
            if path.is_lost() || matches!(state, PathState::Gone(_)) {
                lost.push(index);
            }
        }
        for one in finished {
            self.take_finished(now, one);
        }
        for index in lost {
            self.lose(index, now);
        }
        self.rejoin(now);
        // Waiting commands go out while a path is up, in order.
        while self.up().next().is_some() {
            let Some((tag, request, seq)) = self.waiting.pop_front() else {
                break;
            };
            self.issue(now, tag, request, seq);
            if self.waiting.front().is_some_and(|(t, _, _)| *t == tag) {
                break; // the path is full
            }
        }
        if self.up().next().is_some() {
            self.no_path_since = None;
        } else if let Some(since) = self.no_path_since {
            if now.duration_since(since) >= self.config.no_path_retry {
                let reason = format!(
                    "no path to the logical unit for {:?} (no_path_retry)",
                    self.config.no_path_retry
                );
                for (tag, request, _) in self.waiting.drain(..) {
                    let error = CommandError::ConnectionLost(reason.clone());
                    self.finished
                        .push((tag, Err(failure(error, request.buffer))));
                }
            }
        }
        done.append(&mut self.finished);
        PathState::Serving
    }

    fn wait(&mut self, timeout: Duration, callers_ready: &dyn Fn() -> bool) {
        let up: Vec<usize> = self.up().collect();
        let Some((&last, others)) = up.split_last() else {
            // No ring to sleep on: short steps, so rejoins and requests are seen soon.
            std::thread::sleep(timeout.min(Duration::from_millis(5)));
            return;
        };
        for &index in others {
            if let Some(path) = self.paths[index].path.as_mut() {
                path.wait(Duration::ZERO, callers_ready);
            }
        }
        let mut timeout = if others.is_empty() {
            timeout
        } else {
            timeout.min(MULTI_POLL)
        };
        if let Some(next) = self.next_deadline() {
            timeout = timeout.min(next.saturating_duration_since(Instant::now()));
        }
        if let Some(path) = self.paths[last].path.as_mut() {
            path.wait(timeout, callers_ready);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let rejoin = self
            .paths
            .iter()
            .filter(|p| p.path.is_none())
            .map(|p| p.retry_at)
            .min();
        let give_up = self
            .no_path_since
            .filter(|_| !self.waiting.is_empty())
            .map(|since| since + self.config.no_path_retry);
        [rejoin, give_up].into_iter().flatten().min()
    }

    fn close(&mut self, now: Instant) -> bool {
        let mut all = true;
        for sub in &mut self.paths {
            if let Some(path) = sub.path.as_mut() {
                all &= path.close(now);
            }
        }
        all
    }

    fn count(&self, stats: &mut ShardStats) {
        // The loop owns the command counters and depths; the path's own are set here.
        let mut own = self.counted;
        own.commands_resent = self.reissued;
        own.reconnects = self.paths.iter().map(|p| p.losses).sum();
        for sub in &self.paths {
            if let Some(path) = &sub.path {
                let mut one = ShardStats::default();
                path.count(&mut one);
                own.kernel_entries += one.kernel_entries;
                own.bytes_copied += one.bytes_copied;
                own.window_closed_ns += one.window_closed_ns;
                own.coalesced_receives += one.coalesced_receives;
                own.async_events += one.async_events;
                own.luns_changed += one.luns_changed;
                own.moves += one.moves;
            }
        }
        stats.kernel_entries = own.kernel_entries;
        stats.bytes_copied = own.bytes_copied;
        stats.window_closed_ns = own.window_closed_ns;
        stats.coalesced_receives = own.coalesced_receives;
        stats.reconnects = own.reconnects;
        stats.commands_resent = own.commands_resent;
        stats.moves = own.moves;
        stats.async_events = own.async_events;
        stats.luns_changed = own.luns_changed;
    }
}

/// Marks the writes among `held` that were issued before `seq` and overlap `range`.
fn mark_superseded<'a>(
    held: impl Iterator<Item = &'a mut Issued>,
    seq: u64,
    (lba, blocks): (u64, u64),
) {
    for older in held {
        if let Some((l, b)) = older.writes {
            if older.seq < seq && l < lba.saturating_add(blocks) && lba < l.saturating_add(b) {
                older.superseded = true;
            }
        }
    }
}

/// The blocks a write command covers: `Some((lba, blocks))` for WRITE(10/12/16) and
/// `(0, u64::MAX)` for another command that sends data (conservatively everything);
/// `None` for a command that sends none.
fn write_range(request: &Request) -> Option<(u64, u64)> {
    if !matches!(request.direction, DataDirection::Write { .. }) {
        return None;
    }
    let b = request.cdb.as_bytes();
    let be = |bytes: &[u8]| bytes.iter().fold(0u64, |n, &x| (n << 8) | u64::from(x));
    Some(match (b.first(), b.len()) {
        (Some(0x2a), 10..) => (be(&b[2..6]), be(&b[7..9])),
        (Some(0xaa), 12..) => (be(&b[2..6]), be(&b[6..10])),
        (Some(0x8a), 16..) => (be(&b[2..10]), be(&b[10..14])),
        _ => (0, u64::MAX),
    })
}

/// Runs `cdb` on a lone sub-path (nothing else in flight on it) and waits for its answer.
fn execute_alone(
    path: &mut TcpPath,
    lun: u64,
    cdb: Cdb,
    len: usize,
) -> Result<CommandOutcome, String> {
    let request = Request::new(lun, cdb, vec![0; len], 0);
    let now = Instant::now();
    if let Err(refusal) = path.submit(now, CHECK_TAG, request, false) {
        return Err(match refusal {
            Refusal::Full(_) => "the path has no room".to_string(),
            Refusal::Failed(_, error) => error.to_string(),
        });
    }
    let deadline = now + CHECK_TIMEOUT;
    let mut done = Vec::new();
    loop {
        if let PathState::Gone(reason) = path.poll(Instant::now(), &mut done) {
            return Err(reason);
        }
        if let Some(at) = done.iter().position(|(tag, _)| *tag == CHECK_TAG) {
            let (_, result) = done.swap_remove(at);
            return result.map_err(|f| f.error.to_string());
        }
        if Instant::now() >= deadline {
            return Err(format!("no answer within {CHECK_TIMEOUT:?}"));
        }
        path.wait(Duration::from_millis(10), &|| false);
    }
}

/// TEST UNIT READY past the unit attentions of a new nexus, then INQUIRY VPD 0x83: the
/// logical unit's designators (type, bytes), sorted.
fn check_path(path: &mut TcpPath, lun: u64) -> Result<Vec<(u8, Vec<u8>)>, String> {
    for _ in 0..4 {
        let outcome = execute_alone(path, lun, Cdb::test_unit_ready(), 0)?;
        if outcome.status == sense::status::GOOD
            || !sense::is_unit_attention(outcome.status, outcome.sense.as_deref())
        {
            break;
        }
    }
    let outcome = execute_alone(path, lun, Cdb::inquiry_vpd(0x83, 1024), 1024)?;
    if outcome.status != sense::status::GOOD {
        return Err(format!(
            "INQUIRY VPD 0x83 answered status {:#04x}",
            outcome.status
        ));
    }
    let len = (outcome.transferred as usize).min(outcome.buffer.len());
    let page = DeviceIdentification::decode(&outcome.buffer[..len]).map_err(|e| e.to_string())?;
    let mut designators: Vec<(u8, Vec<u8>)> = page
        .logical_unit_designators()
        .map(|d| (d.designator_type, d.designator.clone()))
        .collect();
    if designators.is_empty() {
        return Err("VPD 0x83 names no logical-unit designator".into());
    }
    designators.sort();
    Ok(designators)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_ranges_come_from_the_cdb() {
        let write = |cdb: Cdb| Request::new(0, cdb, vec![0; 4096], 0);
        let w10 = Cdb::write(100, 8, 512, false).unwrap();
        assert_eq!(write_range(&write(w10)), Some((100, 8)));
        let w16 = Cdb::write(1 << 33, 8, 512, false).unwrap();
        assert_eq!(write_range(&write(w16)), Some((1 << 33, 8)));
        let read = Request::new(0, Cdb::read(100, 8, 512, false).unwrap(), vec![0; 4096], 0);
        assert_eq!(write_range(&read), None);
    }

    fn write_at(seq: u64, lba: u64, blocks: u64) -> Issued {
        Issued {
            path: 0,
            lun: 1,
            cdb: Cdb::write(lba, blocks as u32, 512, false).unwrap(),
            direction: DataDirection::Write {
                len: blocks as u32 * 512,
            },
            attribute: TaskAttribute::Simple,
            seq,
            writes: Some((lba, blocks)),
            superseded: false,
        }
    }

    #[test]
    fn only_older_overlapping_writes_are_superseded() {
        let mut held = vec![
            write_at(1, 0, 8),  // older, overlaps: superseded
            write_at(2, 16, 8), // older, after the range: kept
            write_at(3, 7, 1),  // older, overlaps the range's first block
            write_at(9, 4, 8),  // newer than the acknowledged one: kept
            write_at(4, 12, 4), // older, touches the range's end exactly: kept
        ];
        let mut read = write_at(5, 8, 8);
        read.writes = None;
        held.push(read);
        mark_superseded(held.iter_mut(), 6, (7, 5));
        let marked: Vec<bool> = held.iter().map(|i| i.superseded).collect();
        assert_eq!(marked, vec![true, false, true, false, false, false]);
    }

    #[test]
    fn policies_parse() {
        assert_eq!("failover".parse(), Ok(PathPolicy::Failover));
        assert_eq!("round-robin".parse(), Ok(PathPolicy::RoundRobin));
        assert_eq!("queue-length".parse(), Ok(PathPolicy::QueueLength));
        assert!("service-time".parse::<PathPolicy>().is_err());
    }
}
