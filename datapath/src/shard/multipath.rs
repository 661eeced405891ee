//! One logical unit over several paths (issue 14 items 3 and 4): a [`Path`] that owns one
//! sub-path per portal, each with its own session (its own ISID) on this shard, so the
//! shard loop stays one loop and no lock is shared across cores. A sub-path is any
//! [`MemberPath`] (`member`): software TCP or a queue pair of a dependent or independent
//! adapter; everything below is written once for all three.
//!
//! - **Joining**: a sub-path carries I/O only after its INQUIRY VPD 0x83 names the same
//!   logical unit (the same set of logical-unit designators) as the first path's, and
//!   after TEST UNIT READY took the unit attention of its new I_T nexus.
//! - **Policies** ([`PathPolicy`]): failover (the first path up, in the order given),
//!   round-robin (per command), queue-length (the fewest commands held), service-time
//!   (the least expected wait: commands held times the path's recent service time, as
//!   dm-service-time weighs in-flight work by throughput).
//! - **ALUA** (SPC-4 5.15): when VPD 0x83 names the path's target port group, the path
//!   reads REPORT TARGET PORT GROUPS as it joins. Commands go only to paths whose group
//!   serves I/O, to active/optimized ones while any is up (a path whose LU reports no
//!   ALUA counts as optimized). A unit attention 2Ah/06h or a NOT READY for an access
//!   state (04h/0Ah-0Ch) makes the path read the states again (the command, not executed,
//!   is issued again); while no path serves I/O but some are up, the states are read
//!   every [`ALUA_POLL`], so a group that becomes active is found without a command.
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
//! Each software sub-path has its own ring and the loop sleeps on one of them: the others'
//! completions reach that sleep through eventfds the sleeping ring reads (`ring_wake`).
//! Only when a ring cannot watch them does a sleep last at most [`MULTI_POLL`]. Adapter
//! sub-paths have no ring: the loop sleeps in one poll(2) on all their queue pairs'
//! eventfds and its callers' doorbell ([`MultiPath::wait_on_adapters`]).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::adapters::lost_connection;
use super::member::{connect_member, MemberPath};
use super::run::{Finished, Path, PathState, Refusal};
use super::tcp::Setup;
use super::{failure, ShardConfig, ShardError, ShardInfo, ShardStats};
use crate::adapter::{Notifier, PathFailure};
use crate::pdu::TaskAttribute;
use crate::scsi::alua::{self, AccessState, PortGroup};
use crate::scsi::decode::DeviceIdentification;
use crate::scsi::{sense, Cdb, Sense};
use crate::session::connect::ClientConfig;
use crate::session::{CommandError, CommandOutcome, DataDirection, Liveness, Request};
use crate::transport::reach::{Reach, ReachProbe};

/// The longest sleep on one sub-path's ring while another may have answers.
pub const MULTI_POLL: Duration = Duration::from_micros(200);
/// How often a lost path's connect probe is looked at while it is pending.
const PROBE_POLL: Duration = Duration::from_millis(5);
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Bound on the joining check's commands.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// Tags the joining check uses (the loop's own tags are indexes far below).
const CHECK_TAG: u64 = u64::MAX - 1;
/// The tag of a sub-path's REPORT TARGET PORT GROUPS while it serves (one at a time).
const ALUA_TAG: u64 = u64::MAX - 2;
/// How often the access states are read while no path serves I/O.
pub const ALUA_POLL: Duration = Duration::from_millis(200);
/// Allocation length for REPORT TARGET PORT GROUPS: room for many groups and ports.
const RTPG_LENGTH: u32 = 4096;
/// How many times one command is issued again for an access-state answer before that
/// answer goes to the caller (a target that keeps answering so while reporting an active
/// state would otherwise loop).
const ALUA_RETRIES: u8 = 8;

/// How commands are spread over the paths that are up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathPolicy {
    /// All I/O on the first path up, in the order the portals were given.
    Failover,
    /// Each command on the next path up.
    RoundRobin,
    /// Each command on the path that holds the fewest.
    QueueLength,
    /// Each command on the path with the least expected wait: (commands held + 1) times
    /// its recent service time.
    ServiceTime,
}

impl PathPolicy {
    pub fn name(self) -> &'static str {
        match self {
            PathPolicy::Failover => "failover",
            PathPolicy::RoundRobin => "round-robin",
            PathPolicy::QueueLength => "queue-length",
            PathPolicy::ServiceTime => "service-time",
        }
    }
}

impl std::str::FromStr for PathPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<PathPolicy, String> {
        match s {
            "failover" => Ok(PathPolicy::Failover),
            "round-robin" | "round_robin" => Ok(PathPolicy::RoundRobin),
            "queue-length" | "queue_length" => Ok(PathPolicy::QueueLength),
            "service-time" | "service_time" => Ok(PathPolicy::ServiceTime),
            other => Err(format!(
                "unknown path policy {other:?} (failover, round-robin, queue-length, service-time)"
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
    /// How a silent path loss (a cut link: no reset, no FIN) is noticed: a NOP-Out after
    /// the target was silent this long, answered within `ping_timeout`, and the sub-paths'
    /// `TCP_USER_TIMEOUT` (the sum of the two, unless `ShardConfig::tcp_user_timeout` says
    /// otherwise). Sub-second by default, where open-iscsi takes 5 to 15 s.
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
}

impl MultipathConfig {
    pub const PING_INTERVAL_DEFAULT: Duration = Liveness::MULTIPATH.ping_interval;
    pub const PING_TIMEOUT_DEFAULT: Duration = Liveness::MULTIPATH.ping_timeout;
    pub const NO_PATH_RETRY_DEFAULT: Duration = Duration::from_secs(30);

    /// `portals` to `lun`, round-robin, with the default timers.
    pub fn new(portals: Vec<SocketAddr>, lun: u64) -> MultipathConfig {
        MultipathConfig {
            portals,
            policy: PathPolicy::RoundRobin,
            lun,
            no_path_retry: MultipathConfig::NO_PATH_RETRY_DEFAULT,
            ping_interval: MultipathConfig::PING_INTERVAL_DEFAULT,
            ping_timeout: MultipathConfig::PING_TIMEOUT_DEFAULT,
        }
    }
}

/// Why a path did not join.
#[derive(Debug, thiserror::Error)]
enum JoinError {
    #[error("{0}")]
    Connect(#[from] ShardError),
    #[error("{0}")]
    Check(String),
}

/// A command's place when it is issued again: its submission order, and how often an
/// access-state answer sent it back.
#[derive(Debug, Clone, Copy)]
struct Place {
    seq: u64,
    alua_retries: u8,
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
    /// When it was issued on its path (service-time).
    at: Instant,
    /// Times it was issued again for an access-state answer.
    alua_retries: u8,
    /// Blocks a write covers (`None`: not a write; `(0, u64::MAX)`: a write we cannot
    /// place, treated as covering everything).
    writes: Option<(u64, u64)>,
    /// A later write to overlapping blocks was acknowledged.
    superseded: bool,
}

struct SubPath {
    portal: SocketAddr,
    path: Option<Box<dyn MemberPath>>,
    /// Commands it holds.
    held: usize,
    /// When the next join attempt is due, and the wait after it.
    retry_at: Instant,
    backoff: Duration,
    ios: u64,
    losses: u64,
    /// The target port group VPD 0x83 names for this path, and its access state (`None`:
    /// the LU reports no ALUA).
    group: Option<u16>,
    alua: Option<AccessState>,
    /// A REPORT TARGET PORT GROUPS is in flight on it.
    reading_states: bool,
    /// Recent service time (exponentially weighted, 1/8 per completion), nanoseconds.
    service_ns: u64,
    /// A lost path's portal being tried without blocking before it logs in again.
    probe: Option<ReachProbe>,
}

impl SubPath {
    fn serves(&self) -> bool {
        self.path.is_some() && self.alua.is_none_or(AccessState::is_active)
    }

    /// 0 for active/optimized (or no ALUA), 1 for active/non-optimized.
    fn rank(&self) -> u8 {
        u8::from(self.alua == Some(AccessState::ActiveNonOptimized))
    }
}

/// What `iscsi-ctl paths` and `iscsi-bench` report of one sub-path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathStatus {
    pub portal: SocketAddr,
    pub up: bool,
    /// The target port group and its access state, when the LU reports ALUA.
    pub group: Option<u16>,
    pub alua: Option<AccessState>,
    /// Commands it completed, and times its connection was lost.
    pub ios: u64,
    pub losses: u64,
    /// Commands it holds now.
    pub held: usize,
}

/// Several sub-paths to one LU behind one [`Path`] (see the module docs).
pub(super) struct MultiPath {
    setup: Setup,
    config: MultipathConfig,
    paths: Vec<SubPath>,
    identity: Vec<(u8, Vec<u8>)>,
    issued: HashMap<u64, Issued>,
    /// Commands waiting for a path, in order (new, or to issue again).
    waiting: VecDeque<(u64, Request, Option<Place>)>,
    /// Finished commands not yet handed to the loop.
    finished: Vec<Finished>,
    next_seq: u64,
    rr_next: usize,
    /// Since when no path serves I/O.
    no_path_since: Option<Instant>,
    /// When access states were last asked for while no path served (see [`ALUA_POLL`]).
    states_read_at: Option<Instant>,
    reissued: u64,
    /// Sleeps on adapter sub-paths' eventfds (`wait_on_adapters`): each a poll(2).
    sleeps: u64,
    counted: ShardStats,
}

/// A multipath shard's path (see [`MultiPath::connect`]).
pub(super) fn connect(setup: Setup) -> Result<(Box<dyn Path>, ShardInfo), ShardError> {
    let (path, info) = MultiPath::connect(setup)?;
    Ok((Box::new(path), info))
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
                    group: None,
                    alua: None,
                    reading_states: false,
                    service_ns: 0,
                    probe: None,
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
            states_read_at: None,
            reissued: 0,
            sleeps: 0,
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
        // Every sub-path, software or adapter, notices a silent loss the same way: the
        // shard's path kinds take these through the client and shard configurations.
        let liveness = Liveness::pinging(
            self.config.ping_interval,
            self.config.ping_timeout,
            self.setup.config.tcp_user_timeout,
        );
        let mut client_config: ClientConfig = self.setup.client_config.clone();
        client_config.portal = portal;
        client_config.nop_interval = liveness.ping_interval;
        client_config.nop_timeout = liveness.ping_timeout;
        let config = ShardConfig {
            multipath: None,
            // The multipath path reissues and rejoins itself.
            reconnect: super::ReconnectPolicy::OFF,
            tcp_user_timeout: liveness.tcp_user_timeout,
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
        let n = self.paths.len();
        let (mut path, info) = connect_member(self.sub_setup(portal), index, n)?;
        let checked = match check_path(path.as_mut(), self.config.lun) {
            Ok(checked) => checked,
            Err(reason) => {
                // Whatever the check left in it comes back before the path goes.
                path.end_lost(&mut Vec::new());
                return Err(JoinError::Check(reason));
            }
        };
        let identity = checked.identity;
        if self.identity.is_empty() {
            self.identity = identity;
        } else if identity != self.identity {
            path.end_lost(&mut Vec::new());
            return Err(JoinError::Check(format!(
                "{portal} reaches another logical unit (VPD 0x83 designators differ)"
            )));
        }
        tracing::info!(shard = self.setup.index, %portal, group = ?checked.group, alua = ?checked.alua, "path joined");
        let sub = &mut self.paths[index];
        sub.path = Some(path);
        sub.held = 0;
        sub.backoff = BACKOFF_FIRST;
        sub.group = checked.group;
        sub.alua = checked.alua;
        sub.reading_states = false;
        sub.service_ns = 0;
        if let Some(states) = &checked.states {
            self.take_states(index, states);
        }
        if self.serving().next().is_some() {
            self.no_path_since = None;
        }
        Ok(info)
    }

    /// One sleep for sub-paths over adapters (`up`, when every one is): on each one's
    /// queue-pair eventfds and the callers' doorbell at once (`Notifier::wait_any`), until
    /// one has news, a caller submits, or the earliest timer. False (nothing done) when a
    /// sub-path has a ring of its own: the ring sleep (`ring_wake`) covers those.
    fn wait_on_adapters(
        &mut self,
        up: &[usize],
        timeout: Duration,
        callers_ready: &dyn Fn() -> bool,
    ) -> bool {
        let members: Vec<&dyn MemberPath> = up
            .iter()
            .filter_map(|&i| self.paths[i].path.as_deref())
            .collect();
        if members.is_empty() || members.iter().any(|p| p.wake_source().is_some()) {
            return false;
        }
        let mut notifiers = Vec::with_capacity(members.len() * 2);
        for member in &members {
            member.adapter_notifiers(&mut notifiers);
        }
        if notifiers.is_empty() {
            return false;
        }
        let now = Instant::now();
        let mut timeout = timeout;
        if let Some(next) = self.next_deadline() {
            timeout = timeout.min(next.saturating_duration_since(now));
        }
        if notifiers.len() + 1 > crate::sys::EventFd::WAIT_ANY_MAX {
            // More eventfds than one poll watches: the rest are looked at soon.
            timeout = timeout.min(MULTI_POLL);
        }
        let doorbell = &self.setup.doorbell.fd;
        let ready = || callers_ready() || members.iter().any(|p| p.ready_to_poll());
        Notifier::wait_any(&notifiers, &[doorbell], timeout, ready);
        self.sleeps += 1;
        true
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

    /// The paths that carry I/O: up, and their port group serves it.
    fn serving(&self) -> impl Iterator<Item = usize> + '_ {
        self.paths
            .iter()
            .enumerate()
            .filter(|(_, p)| p.serves())
            .map(|(i, _)| i)
    }

    /// The path for the next command: among the serving paths of the best ALUA rank, by
    /// policy.
    fn choose(&mut self) -> Option<usize> {
        let paths = &self.paths;
        let chosen = choose_path(self.config.policy, paths.len(), self.rr_next, |i| {
            let p = &paths[i];
            p.serves().then_some(Candidate {
                rank: p.rank(),
                held: p.held,
                service_ns: p.service_ns,
            })
        })?;
        self.rr_next = (chosen + 1) % self.paths.len();
        Some(chosen)
    }

    /// Asks sub-path `index` for the access states (REPORT TARGET PORT GROUPS), unless it
    /// is already asking.
    fn read_states(&mut self, now: Instant, index: usize) {
        let lun = self.config.lun;
        let sub = &mut self.paths[index];
        let Some(path) = sub.path.as_mut() else {
            return;
        };
        if sub.reading_states || sub.group.is_none() {
            return;
        }
        let cdb = Cdb::report_target_port_groups(RTPG_LENGTH);
        let request = Request::new(lun, cdb, vec![0; RTPG_LENGTH as usize], 0);
        if path.submit(now, ALUA_TAG, request, false).is_ok() {
            sub.reading_states = true;
        }
    }

    /// The answer to a sub-path's REPORT TARGET PORT GROUPS.
    fn took_states(&mut self, index: usize, result: Result<CommandOutcome, PathFailure>) {
        self.paths[index].reading_states = false;
        let states = match result {
            Ok(outcome) if outcome.status == sense::status::GOOD => {
                let len = (outcome.transferred as usize).min(outcome.buffer.len());
                alua::parse_port_groups(&outcome.buffer[..len])
            }
            Ok(outcome) => {
                tracing::debug!(
                    shard = self.setup.index,
                    status = outcome.status,
                    "REPORT TARGET PORT GROUPS refused"
                );
                return;
            }
            Err(failure) => {
                tracing::debug!(shard = self.setup.index, error = %failure.error, "REPORT TARGET PORT GROUPS failed");
                return;
            }
        };
        match states {
            Ok(states) => self.take_states(index, &states),
            Err(e) => {
                tracing::warn!(shard = self.setup.index, error = %e, "REPORT TARGET PORT GROUPS data")
            }
        }
    }

    /// Sets access states from a report read through sub-path `from`: its own group's
    /// always (the port answering knows its own state); another path's only when that
    /// path does not serve now, so a report can bring a standby path back to be tried,
    /// but a port whose view of the others is stale (one process of a several-process
    /// array) never takes a serving path away. A path wrongly thought active learns
    /// otherwise from its first command's NOT READY.
    fn take_states(&mut self, from: usize, states: &[PortGroup]) {
        for (index, sub) in self.paths.iter_mut().enumerate() {
            if index != from && sub.serves() {
                continue;
            }
            let Some(state) = sub.group.and_then(|g| alua::state_of(states, g)) else {
                continue;
            };
            if sub.alua != Some(state) {
                tracing::info!(shard = self.setup.index, portal = %sub.portal, group = ?sub.group, %state, "access state");
                sub.alua = Some(state);
            }
        }
    }
}

impl MultiPath {
    /// The sub-paths' status, in the order the portals were given.
    fn statuses_now(&self) -> Vec<PathStatus> {
        self.paths
            .iter()
            .map(|p| PathStatus {
                portal: p.portal,
                up: p.path.is_some(),
                group: p.group,
                alua: p.alua,
                ios: p.ios,
                losses: p.losses,
                held: p.held,
            })
            .collect()
    }

    /// Issues `request` on a path, or keeps it waiting when none is up.
    fn issue(&mut self, now: Instant, tag: u64, request: Request, place: Option<Place>) {
        let Some(index) = self.choose() else {
            self.no_path_since.get_or_insert(now);
            self.waiting.push_back((tag, request, place));
            return;
        };
        let Place { seq, alua_retries } = place.unwrap_or_else(|| {
            self.next_seq += 1;
            Place {
                seq: self.next_seq,
                alua_retries: 0,
            }
        });
        let writes = write_range(&request);
        let issued = Issued {
            path: index,
            lun: request.lun,
            cdb: request.cdb.clone(),
            direction: request.direction,
            attribute: request.attribute,
            seq,
            at: now,
            alua_retries,
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
            Err(Refusal::Full(request)) => {
                self.waiting
                    .push_front((tag, request, Some(Place { seq, alua_retries })))
            }
            Err(Refusal::Failed(request, error)) => {
                // The path is gone under us: try the others.
                tracing::debug!(shard = self.setup.index, %error, "sub-path refused a command");
                self.lose(index, now);
                self.issued.insert(tag, issued);
                self.reissue(now, tag, request.buffer, false);
            }
        }
    }

    /// A command's path lost it: issue it again elsewhere, unless a later acknowledged
    /// write superseded it.
    fn reissue(&mut self, now: Instant, tag: u64, buffer: Vec<u8>, for_access_state: bool) {
        let Some(issued) = self.issued.remove(&tag) else {
            return;
        };
        if !issued.direction.can_send_again(&buffer) {
            // An adapter that lost the command's buffer: its data cannot go again.
            let error = CommandError::ConnectionLost(
                "the path was lost and its adapter kept the write's data".into(),
            );
            self.finished.push((tag, Err(failure(error, buffer))));
            return;
        }
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
        let place = Place {
            seq: issued.seq,
            alua_retries: issued
                .alua_retries
                .saturating_add(u8::from(for_access_state)),
        };
        self.issue(now, tag, request, Some(place));
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
            if self.serving().next().is_none() {
                self.no_path_since.get_or_insert(now);
            }
            tracing::debug!(
                shard = self.setup.index,
                path = index,
                handed_back = done.len(),
                held = self.issued.len(),
                "path lost; its commands go to another"
            );
            self.paths[index].reading_states = false;
            for finished in done {
                if finished.0 != ALUA_TAG {
                    self.take_finished(now, finished);
                }
            }
        }
    }

    /// One finished command from a sub-path.
    fn take_finished(&mut self, now: Instant, (tag, result): Finished) {
        let Some(issued) = self.issued.get(&tag) else {
            return;
        };
        let index = issued.path;
        let retries = issued.alua_retries;
        let sub = &mut self.paths[index];
        sub.held = sub.held.saturating_sub(1);
        let took = now.saturating_duration_since(issued.at).as_nanos() as u64;
        sub.service_ns = if sub.service_ns == 0 {
            took
        } else {
            sub.service_ns - sub.service_ns / 8 + took / 8
        };
        match result {
            // The path lost its connection (software, or an adapter's): elsewhere.
            Err(PathFailure { error, buffer }) if lost_connection(&error) => {
                self.reissue(now, tag, buffer, false)
            }
            Ok(outcome) if retries < ALUA_RETRIES && access_state_answer(&outcome).is_some() => {
                // Not executed: the port group's state moved. Read the states again and
                // send the command where they say (this path no more, if it answered
                // with the state it is now in).
                if let Some(Some(state)) = access_state_answer(&outcome) {
                    self.paths[index].alua = Some(state);
                }
                self.read_states(now, index);
                self.reissue(now, tag, outcome.buffer, true);
            }
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

    /// While paths are up but none serves I/O (standby, transitioning), reads the access
    /// states every [`ALUA_POLL`] so that a group that becomes active is used.
    fn poll_states(&mut self, now: Instant) {
        if self.serving().next().is_some() {
            self.states_read_at = None;
            return;
        }
        if self
            .states_read_at
            .is_some_and(|at| now.duration_since(at) < ALUA_POLL)
        {
            return;
        }
        self.states_read_at = Some(now);
        let up: Vec<usize> = self.up().collect();
        for index in up {
            self.read_states(now, index);
        }
    }

    /// Brings lost paths back: when one is due, its portal is first tried with a
    /// non-blocking connect, checked each turn; only once the portal accepted does the
    /// path log in (on this thread: quick, the portal answers). A cut link or a dead host
    /// thus never holds the loop (and the other paths' I/O) for a connect timeout.
    fn rejoin(&mut self, now: Instant) {
        let connect_timeout = self.setup.client_config.connect_timeout;
        for index in 0..self.paths.len() {
            let sub = &mut self.paths[index];
            if sub.path.is_some() || now < sub.retry_at {
                continue;
            }
            let reach = match &sub.probe {
                None => match ReachProbe::start(sub.portal, connect_timeout) {
                    Ok(probe) => {
                        sub.probe = Some(probe);
                        continue;
                    }
                    Err(e) => Reach::Unreachable(e),
                },
                Some(probe) => probe.poll(now),
            };
            match reach {
                Reach::Pending => {}
                Reach::Unreachable(e) => {
                    sub.probe = None;
                    tracing::debug!(shard = self.setup.index, portal = %sub.portal, error = %e, "lost path's portal unreachable");
                    self.schedule_retry(index, now);
                }
                Reach::Reachable => {
                    sub.probe = None;
                    if let Err(e) = self.join(index) {
                        tracing::debug!(shard = self.setup.index, portal = %self.paths[index].portal, error = %e, "path did not rejoin");
                        self.schedule_retry(index, Instant::now());
                    }
                    // One login per turn: the others' I/O goes on between them.
                    return;
                }
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
        let mut states = Vec::new();
        for (index, sub) in self.paths.iter_mut().enumerate() {
            let Some(path) = sub.path.as_mut() else {
                continue;
            };
            let before = finished.len();
            let state = path.poll(now, &mut finished);
            if let Some(at) = finished[before..].iter().position(|(t, _)| *t == ALUA_TAG) {
                states.push((index, finished.swap_remove(before + at).1));
            }
            if path.is_lost() || matches!(state, PathState::Gone(_)) {
                lost.push(index);
            }
        }
        for (index, result) in states {
            self.took_states(index, result);
        }
        for one in finished {
            self.take_finished(now, one);
        }
        for index in lost {
            self.lose(index, now);
        }
        self.rejoin(now);
        self.poll_states(now);
        // Waiting commands go out while a path serves, in order.
        while self.serving().next().is_some() {
            let Some((tag, request, place)) = self.waiting.pop_front() else {
                break;
            };
            self.issue(now, tag, request, place);
            if self.waiting.front().is_some_and(|(t, _, _)| *t == tag) {
                break; // the path is full
            }
        }
        if self.serving().next().is_some() {
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
        if !timeout.is_zero() && self.wait_on_adapters(&up, timeout, callers_ready) {
            return;
        }
        let Some((&last, others)) = up.split_last() else {
            // No ring to sleep on: short steps, so rejoins and requests are seen soon.
            std::thread::sleep(timeout.min(Duration::from_millis(5)));
            return;
        };
        let mut sources = Vec::with_capacity(others.len());
        for &index in others {
            if let Some(path) = self.paths[index].path.as_mut() {
                path.wait(Duration::ZERO, callers_ready);
                sources.extend(path.wake_source());
            }
        }
        let mut timeout = timeout;
        if let Some(next) = self.next_deadline() {
            timeout = timeout.min(next.saturating_duration_since(Instant::now()));
        }
        if let Some(path) = self.paths[last].path.as_mut() {
            // One sleep for all: the others' completions signal eventfds this ring reads
            // (`ring_wake`). Without that, short sleeps so the others are looked at.
            let watched = path.watch_rings(&sources) && sources.len() == others.len();
            if !watched {
                timeout = timeout.min(MULTI_POLL);
            }
            path.wait(timeout, callers_ready);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        // Adapter sub-paths have timers of their own (a session's pings, a move's
        // deadlines, a doorbell check) that no ring keeps for them.
        let adapters = self
            .paths
            .iter()
            .filter_map(|p| p.path.as_ref())
            .filter(|p| p.wake_source().is_none())
            .filter_map(|p| p.next_deadline())
            .min();
        // A portal being probed is looked at again shortly, not at once (its connect
        // completes in the kernel; nothing wakes the loop for it).
        let probing = Instant::now() + PROBE_POLL;
        let rejoin = self
            .paths
            .iter()
            .filter(|p| p.path.is_none())
            .map(|p| match p.probe {
                Some(_) => p.retry_at.max(probing),
                None => p.retry_at,
            })
            .min();
        let give_up = self
            .no_path_since
            .filter(|_| !self.waiting.is_empty())
            .map(|since| since + self.config.no_path_retry);
        let states = self.states_read_at.map(|at| at + ALUA_POLL);
        [adapters, rejoin, give_up, states]
            .into_iter()
            .flatten()
            .min()
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

    fn statuses(&self) -> Vec<PathStatus> {
        self.statuses_now()
    }

    fn count(&self, stats: &mut ShardStats) {
        // The loop owns the command counters and depths; the path's own are set here.
        let mut own = self.counted;
        own.commands_resent = self.reissued;
        own.kernel_entries += self.sleeps;
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

/// What the choice of a path looks at in one serving path.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    /// ALUA preference: 0 active/optimized (or no ALUA), 1 active/non-optimized.
    rank: u8,
    held: usize,
    service_ns: u64,
}

/// The path of `n` (`candidate(i)`: `None` when path `i` does not serve) that takes the
/// next command under `policy`: only paths of the best rank are considered; round-robin
/// starts its search at `rr_next`.
fn choose_path(
    policy: PathPolicy,
    n: usize,
    rr_next: usize,
    candidate: impl Fn(usize) -> Option<Candidate>,
) -> Option<usize> {
    let best = (0..n).filter_map(&candidate).map(|c| c.rank).min()?;
    let of_best = (0..n).filter_map(|i| candidate(i).filter(|c| c.rank == best).map(|c| (i, c)));
    match policy {
        PathPolicy::Failover => of_best.map(|(i, _)| i).next(),
        PathPolicy::QueueLength => of_best.min_by_key(|(_, c)| c.held).map(|(i, _)| i),
        PathPolicy::ServiceTime => of_best
            .min_by_key(|(_, c)| (c.held as u64 + 1).saturating_mul(c.service_ns.max(1)))
            .map(|(i, _)| i),
        PathPolicy::RoundRobin => (0..n)
            .map(|k| (rr_next + k) % n)
            .find(|&i| candidate(i).is_some_and(|c| c.rank == best)),
    }
}

/// `Some` when `outcome` is an answer for an access state (ALUA): the command was not
/// executed. Inside, the state the answer puts the path's group in, when it says
/// (NOT READY: standby, unavailable, transitioning; a unit attention 2Ah/06h does not).
fn access_state_answer(outcome: &CommandOutcome) -> Option<Option<AccessState>> {
    if outcome.status != sense::status::CHECK_CONDITION {
        return None;
    }
    let sense = Sense::decode(outcome.sense.as_deref()?).ok()?;
    alua::access_state_sense((sense.asc, sense.ascq))
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
    path: &mut dyn MemberPath,
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

/// What a joining path found.
struct Checked {
    /// The logical unit's designators (type, bytes), sorted.
    identity: Vec<(u8, Vec<u8>)>,
    /// The path's target port group (VPD 0x83), its access state and the whole report.
    group: Option<u16>,
    alua: Option<AccessState>,
    states: Option<Vec<PortGroup>>,
}

/// TEST UNIT READY past the unit attentions of a new nexus, then INQUIRY VPD 0x83 (the
/// LU's identity and the port's group) and, when a group is named, REPORT TARGET PORT
/// GROUPS. A target that names a group but refuses the report is used as if it had no
/// ALUA.
fn check_path(path: &mut dyn MemberPath, lun: u64) -> Result<Checked, String> {
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
    let group = page.target_port_group();
    let states = match group {
        Some(_) => {
            let cdb = Cdb::report_target_port_groups(RTPG_LENGTH);
            let outcome = execute_alone(path, lun, cdb, RTPG_LENGTH as usize)?;
            let len = (outcome.transferred as usize).min(outcome.buffer.len());
            (outcome.status == sense::status::GOOD)
                .then(|| alua::parse_port_groups(&outcome.buffer[..len]).ok())
                .flatten()
        }
        None => None,
    };
    let alua = states
        .as_ref()
        .and_then(|s| group.and_then(|g| alua::state_of(s, g)));
    Ok(Checked {
        identity: designators,
        group: group.filter(|_| alua.is_some()),
        alua,
        states,
    })
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
            at: Instant::now(),
            alua_retries: 0,
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

    fn paths(list: &[Option<(u8, usize, u64)>]) -> impl Fn(usize) -> Option<Candidate> + '_ {
        |i| {
            list[i].map(|(rank, held, service_ns)| Candidate {
                rank,
                held,
                service_ns,
            })
        }
    }

    #[test]
    fn only_the_best_alua_rank_carries_io() {
        // Path 0 down (or standby), 1 non-optimized and idle, 2 and 3 optimized.
        let list = [
            None,
            Some((1, 0, 10)),
            Some((0, 5, 1000)),
            Some((0, 3, 1000)),
        ];
        let choose = |policy, rr| choose_path(policy, 4, rr, paths(&list));
        assert_eq!(choose(PathPolicy::Failover, 0), Some(2));
        assert_eq!(choose(PathPolicy::QueueLength, 0), Some(3));
        assert_eq!(choose(PathPolicy::ServiceTime, 0), Some(3));
        assert_eq!(choose(PathPolicy::RoundRobin, 0), Some(2));
        assert_eq!(choose(PathPolicy::RoundRobin, 3), Some(3));
        assert_eq!(choose(PathPolicy::RoundRobin, 1), Some(2));
        // With the optimized paths gone, the non-optimized one serves.
        let list = [None, Some((1, 9, 10)), None, None];
        for policy in [
            PathPolicy::Failover,
            PathPolicy::RoundRobin,
            PathPolicy::QueueLength,
            PathPolicy::ServiceTime,
        ] {
            assert_eq!(choose_path(policy, 4, 2, paths(&list)), Some(1));
        }
        assert_eq!(
            choose_path(PathPolicy::Failover, 2, 0, paths(&[None, None])),
            None
        );
    }

    #[test]
    fn service_time_weighs_held_commands_by_speed() {
        // A path twice as fast takes commands until it holds about twice as many.
        let list = [Some((0, 4, 100)), Some((0, 1, 200))];
        assert_eq!(
            choose_path(PathPolicy::ServiceTime, 2, 0, paths(&list)),
            Some(1)
        );
        let list = [Some((0, 3, 100)), Some((0, 2, 200))];
        assert_eq!(
            choose_path(PathPolicy::ServiceTime, 2, 0, paths(&list)),
            Some(0)
        );
        // A path not yet timed (0) counts as the fastest.
        let list = [Some((0, 0, 100)), Some((0, 0, 0))];
        assert_eq!(
            choose_path(PathPolicy::ServiceTime, 2, 0, paths(&list)),
            Some(1)
        );
    }

    fn outcome(status: u8, sense: Option<Vec<u8>>) -> CommandOutcome {
        CommandOutcome {
            status,
            sense,
            residual: crate::session::Residual::None,
            buffer: Vec::new(),
            transferred: 0,
        }
    }

    fn fixed_sense(key: u8, asc: u8, ascq: u8) -> Vec<u8> {
        let mut s = vec![0; 18];
        s[0] = 0x70;
        s[2] = key;
        s[7] = 10;
        s[12] = asc;
        s[13] = ascq;
        s
    }

    #[test]
    fn access_state_answers_name_the_new_state() {
        let cc = sense::status::CHECK_CONDITION;
        let standby = outcome(cc, Some(fixed_sense(0x02, 0x04, 0x0b)));
        assert_eq!(
            access_state_answer(&standby),
            Some(Some(AccessState::Standby))
        );
        let moving = outcome(cc, Some(fixed_sense(0x02, 0x04, 0x0a)));
        assert_eq!(
            access_state_answer(&moving),
            Some(Some(AccessState::Transitioning))
        );
        let changed = outcome(cc, Some(fixed_sense(0x06, 0x2a, 0x06)));
        assert_eq!(access_state_answer(&changed), Some(None));
        let other_ua = outcome(cc, Some(fixed_sense(0x06, 0x29, 0x00)));
        assert_eq!(access_state_answer(&other_ua), None);
        assert_eq!(access_state_answer(&outcome(0, None)), None);
        assert_eq!(access_state_answer(&outcome(cc, None)), None);
    }

    #[test]
    fn policies_parse() {
        assert_eq!("failover".parse(), Ok(PathPolicy::Failover));
        assert_eq!("round-robin".parse(), Ok(PathPolicy::RoundRobin));
        assert_eq!("queue-length".parse(), Ok(PathPolicy::QueueLength));
        assert_eq!("service-time".parse(), Ok(PathPolicy::ServiceTime));
        assert!("least-pending".parse::<PathPolicy>().is_err());
        for policy in [
            PathPolicy::Failover,
            PathPolicy::RoundRobin,
            PathPolicy::QueueLength,
            PathPolicy::ServiceTime,
        ] {
            assert_eq!(policy.name().parse(), Ok(policy));
        }
    }
}
